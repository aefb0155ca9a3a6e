//! The HTTP server: intake routes, the read-only incident API, health, readiness and metrics.
//!
//! [`run`] takes the listener and a `shutdown` future from its caller (the CLI passes Ctrl-C /
//! SIGTERM, tests pass a channel). On shutdown it stops accepting, lets in-flight requests
//! finish (each waits for its commit), then drains the writer. The caller owns (and closes) the store.

use crate::config::Config;
use crate::intake::{Intake, Route};
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::responder::Triggers;
use crate::store::Store;
use crate::time::Clock;
use anyhow::{Context, Result};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

pub struct App {
    pub store: Arc<dyn Store>,
    pub intake: Intake,
    pub metrics: Arc<Metrics>,
}

/// How often the writer checks for incidents whose grace period has passed.
pub const TICK: Duration = Duration::from_secs(1);

/// Serves until `shutdown` completes, then drains and closes everything.
pub async fn run(
    listener: TcpListener,
    config: &Config,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let addr = listener.local_addr()?;
    if let Some(problem) = config.open_sources_problem(addr) {
        anyhow::bail!("{problem}");
    }
    // Plans cut off by a crash of this replica are marked interrupted and escalated first.
    let owner = crate::executor::owner(config.executor.owner.as_deref());
    crate::executor::recover(store.as_ref(), &owner, clock.now()).await.context("recovering interrupted plans")?;
    let metrics = Arc::new(Metrics::default());
    let policy = Arc::new(config.incidents.clone());
    let received = Arc::new(crate::store::StoredChanges(store.clone()));
    let (sources, golden) = crate::context::from_config(&config.context, received).await.map_err(anyhow::Error::msg)?;
    let topology = tokio::spawn(refresh_topology(sources.clone(), policy.topology.clone()));
    let (responder, triggers) =
        start_responder(config, sources, golden, store.clone(), clock.clone(), metrics.clone())?;
    let (pipeline, writer) = Pipeline::start(store.clone(), policy, clock.clone(), metrics.clone(), TICK);
    let intake =
        Intake::new(&config.intake, pipeline, metrics.clone(), clock, triggers.clone()).map_err(anyhow::Error::msg)?;
    let app = Arc::new(App { store: store.clone(), intake, metrics });
    tracing::info!(%addr, store = store.backend(), "medic listening");
    axum::serve(listener, router(app)).with_graceful_shutdown(shutdown).await.context("server failed")?;
    tracing::info!("stopped accepting; draining the writer and the responder");
    writer.await.context("writer task panicked")?;
    triggers.close();
    responder.await.context("responder task panicked")?;
    topology.abort();
    tracing::info!("shutdown complete");
    Ok(())
}

/// How often the dependency graph used for grouping is read again.
pub const TOPOLOGY_REFRESH: Duration = Duration::from_secs(60);

/// Keeps the grouping policy's dependency graph current from the topology sources. A failed
/// read keeps the previous graph (and is logged).
async fn refresh_topology(sources: crate::context::Sources, graph: crate::incident::Graph) {
    if sources.topology.is_empty() {
        return;
    }
    loop {
        let mut edges = Vec::new();
        let mut failed = false;
        for t in &sources.topology {
            match tokio::time::timeout(sources.timeout, t.edges()).await {
                Ok(Ok(e)) => edges.extend(e),
                Ok(Err(e)) => {
                    failed = true;
                    tracing::warn!(source = t.name(), error = %e, "topology unavailable; grouping keeps the last graph");
                }
                Err(_) => {
                    failed = true;
                    tracing::warn!(source = t.name(), "topology timed out; grouping keeps the last graph");
                }
            }
        }
        if !failed {
            graph.set(edges.iter().map(|e| (e.from.as_str(), e.to.as_str())));
        }
        tokio::time::sleep(TOPOLOGY_REFRESH).await;
    }
}

/// Starts the responder task with the given context sources and the config's runbooks;
/// returns it and the triggers intake uses to say "this incident opened or grew".
pub fn start_responder(
    config: &Config,
    sources: crate::context::Sources,
    golden: Vec<crate::context::Golden>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
) -> Result<(tokio::task::JoinHandle<()>, Arc<Triggers>)> {
    let runbooks = match &config.runbooks {
        Some(dir) => crate::runbook::load_dir(dir)
            .map_err(|errors| anyhow::anyhow!("invalid runbooks:\n  - {}", errors.join("\n  - ")))?,
        None => Vec::new(),
    };
    tracing::info!(runbooks = runbooks.len(), golden_signals = golden.len(), "responder ready");
    let responder = crate::responder::Responder {
        store,
        sources,
        runbooks,
        golden,
        clock,
        metrics,
        cache: crate::context::Cache::new(config.context.cache_ttl),
        window: crate::responder::Window {
            look_back: config.context.look_back,
            changes_look_back: config.context.changes_look_back,
        },
    };
    let triggers = Arc::new(Triggers::default());
    Ok((tokio::spawn(Arc::new(responder).run(triggers.clone())), triggers))
}

pub fn router(app: Arc<App>) -> Router {
    let mut r = Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/incidents", get(crate::api::list))
        .route("/v1/incidents/{id}", get(crate::api::detail));
    for route in Route::ALL {
        r = r.route(
            route.path(),
            post(move |State(app): State<Arc<App>>, headers: HeaderMap, req: Request| async move {
                app.intake.receive(route, headers, req.into_body()).await
            }),
        );
    }
    r.fallback(|| async { (StatusCode::NOT_FOUND, Json(json!({"error": "not_found", "message": "no such route"}))) })
        .layer(middleware::from_fn_with_state(app.clone(), track_latency))
        .with_state(app)
}

async fn track_latency(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let route =
        req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_else(|| "unmatched".into());
    let started = Instant::now();
    let resp = next.run(req).await;
    app.metrics.observe_request(&route, resp.status().as_u16(), started.elapsed());
    resp
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    match app.store.ready().await {
        Ok(()) => Json(json!({"ready": true, "store": app.store.backend()})).into_response(),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "not ready");
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"ready": false, "store": app.store.backend(), "reason": "store unreachable or migrations not applied"})))
                .into_response()
        }
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let (open, resolving) = app.store.unresolved_counts().await.unwrap_or((-1, -1));
    ([("content-type", "text/plain; version=0.0.4")], app.metrics.render(open, resolving)).into_response()
}
