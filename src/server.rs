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
use crate::time::{Clock, Millis};
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
    /// Answers questions (`/v1/ask`, chat).
    pub asker: Arc<crate::ask::answer::Asker>,
    /// `api.bearer`, resolved.
    pub api_tokens: Arc<Vec<crate::secret::Secret>>,
    pub intake: Intake,
    pub metrics: Arc<Metrics>,
    pub chat: ChatApp,
    pub clock: Arc<dyn Clock>,
    /// `autonomy.grant_after`, shown with each runbook's streak.
    pub grant_after: u32,
}

/// What the chat routes need.
pub struct ChatApp {
    pub slack: Option<Arc<crate::chat::slack::Slack>>,
    pub discord: Option<Arc<crate::chat::discord::Discord>>,
    pub clicks: Arc<crate::chat::clicks::Clicks>,
    pub responders: Arc<crate::approval::Responders>,
    /// Questions asked in chat.
    pub asking: Arc<crate::chat::asking::Asking>,
    pub max_body: usize,
    /// Every platform, for the connections `/readyz` shows.
    pub platforms: Vec<Arc<dyn crate::chat::Platform>>,
    /// Routes a platform serves itself (Mattermost's).
    pub routes: Option<Router<Arc<App>>>,
}

/// Fails every post-check that needs metrics when no metrics backend is configured.
struct NoMetrics;

#[async_trait::async_trait]
impl crate::context::Metrics for NoMetrics {
    fn name(&self) -> &str {
        "none"
    }
    async fn query_range(&self, _: &crate::context::MetricQuery) -> Result<Vec<crate::context::Series>, String> {
        Err("no metrics backend is configured (context.prometheus)".into())
    }
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
    run_with(listener, config, store, clock, shutdown, Parts::default()).await
}

/// What a caller supplies beside the config: `medic demo` runs this same server with the
/// recorded context backend and the console as a chat platform, and clicks from the terminal.
#[derive(Default)]
pub struct Parts {
    /// Context sources and golden signals instead of those the config names.
    pub sources: Option<(crate::context::Sources, Vec<crate::context::Golden>)>,
    /// Chat platforms besides Slack and Discord (the console).
    pub platforms: Vec<Arc<dyn crate::chat::Platform>>,
    /// Receives the click handler once it is built, for a platform whose clicks do not come
    /// over HTTP (the terminal).
    pub clicks: Option<tokio::sync::oneshot::Sender<Arc<crate::chat::clicks::Clicks>>>,
}

/// [`run`], with `parts`.
pub async fn run_with(
    listener: TcpListener,
    config: &Config,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    parts: Parts,
) -> Result<()> {
    let addr = listener.local_addr()?;
    if let Some(problem) = config.open_sources_problem(addr) {
        anyhow::bail!("{problem}");
    }
    // Plans cut off by a crash of this replica (or whose replica's lease lapsed) are marked
    // interrupted and escalated first; chat shows them once it is up.
    let owner = crate::executor::owner(config.executor.owner.as_deref());
    let lease = config.executor.lease.unwrap_or(crate::executor::LEASE);
    let interrupted = crate::executor::recover(store.as_ref(), &owner, true, lease, clock.now())
        .await
        .context("recovering interrupted plans")?;
    let metrics = Arc::new(Metrics::default());
    let policy = Arc::new(config.incidents.clone());
    let received = Arc::new(crate::store::StoredChanges(store.clone()));
    let (sources, golden) = match parts.sources {
        Some(given) => given,
        None => crate::context::from_config(&config.context, received).await.map_err(anyhow::Error::msg)?,
    };
    let topology = tokio::spawn(refresh_topology(sources.clone(), policy.topology.clone()));
    let runbooks = match &config.runbooks {
        Some(dir) => crate::runbook::load(dir)?,
        None => Vec::new(),
    };
    // What `medic check` refuses, `serve` refuses too.
    let wrong = config.runbook_problems(&runbooks);
    if !wrong.is_empty() {
        anyhow::bail!("runbooks and config disagree (see `medic check`):\n  - {}", wrong.join("\n  - "));
    }
    if config.runbooks.is_none() {
        tracing::warn!(
            "no runbooks directory (`runbooks:` in the config, or ./runbooks): medic diagnoses incidents but \
             proposes no plan"
        );
    }
    if !config.has_chat() {
        tracing::warn!(
            "no chat platform is configured (slack, discord, mattermost): incidents and plans are shown nowhere but the API, \
             and nobody can approve a plan"
        );
    }
    // Chat: the platforms, their delivery workers, and what a click does.
    let (stop_chat, chat_stopped) = tokio::sync::watch::channel(false);
    let mut chat_tasks = Vec::new();
    let timeout = config.context.timeout;
    let slack = config.slack.as_ref().map(|c| crate::chat::slack::Slack::new(c, timeout).map(Arc::new));
    let slack = slack.transpose().map_err(anyhow::Error::msg)?;
    let discord = config.discord.as_ref().map(|c| crate::chat::discord::Discord::new(c, timeout).map(Arc::new));
    let discord = discord.transpose().map_err(anyhow::Error::msg)?;
    let mattermost =
        config.mattermost.as_ref().map(|c| crate::chat::mattermost::Mattermost::new(c, timeout).map(Arc::new));
    let mattermost = mattermost.transpose().map_err(anyhow::Error::msg)?;
    let platforms: Vec<Arc<dyn crate::chat::Platform>> = slack
        .iter()
        .map(|s| s.clone() as _)
        .chain(discord.iter().map(|d| d.clone() as _))
        .chain(mattermost.iter().map(|m| m.clone() as _))
        .chain(parts.platforms)
        .collect();
    let trackers = config.tickets.trackers(timeout).map_err(anyhow::Error::msg)?;
    let notifier = Arc::new(crate::chat::Notifier {
        store: store.clone(),
        platforms: platforms.clone(),
        clock: clock.clone(),
        tickets: !trackers.is_empty(),
    });
    for p in &platforms {
        chat_tasks.push(tokio::spawn(crate::chat::outbox::run(
            store.clone(),
            p.clone(),
            clock.clone(),
            chat_stopped.clone(),
        )));
    }
    // Pages and tickets: the same outbox, their own destinations; every replica reads the
    // audit log for them (`page::watch`, started below once the notifier is known).
    let pagers = config.paging.pagers(timeout).map_err(anyhow::Error::msg)?;
    let destinations = pagers.iter().map(|p| p.clone() as Arc<dyn crate::chat::outbox::Destination>);
    for d in destinations.chain(trackers.iter().map(|t| t.clone() as _)) {
        chat_tasks.push(tokio::spawn(crate::chat::outbox::run(store.clone(), d, clock.clone(), chat_stopped.clone())));
    }
    chat_tasks.push(tokio::spawn(crate::page::watch(
        crate::page::Watcher {
            store: store.clone(),
            pagers,
            trackers: trackers.clone(),
            when: config.paging.when.clone(),
            routes: config.paging.routes.clone(),
            tickets: config.tickets.when.clone(),
            external_url: config.paging.external_url.clone(),
            runbooks: runbooks.clone(),
            guardrails: config.guardrails.clone(),
            notifier: (!platforms.is_empty()).then(|| notifier.clone()),
            clock: clock.clone(),
            degraded_paged: Default::default(),
            degraded_day: Default::default(),
            linked: Default::default(),
        },
        chat_stopped.clone(),
    )));
    if let Some(cfg) = &config.summary {
        cfg.parse().map_err(anyhow::Error::msg)?;
        chat_tasks.push(tokio::spawn(crate::chat::summary::run(
            cfg.clone(),
            store.clone(),
            platforms.clone(),
            clock.clone(),
            chat_stopped.clone(),
        )));
    }
    let mut limits = crate::executor::Limits {
        allowed_hosts: config.executor.http_allowed_hosts.clone(),
        scripts_dir: config.executor.scripts_dir.clone(),
        dry_run: config.executor.dry_run,
        ..Default::default()
    };
    limits.connect(&config.executor, config.context.timeout).await.map_err(anyhow::Error::msg)?;
    let mut executor = crate::executor::Executor::new(
        store.clone(),
        sources.metrics.clone().unwrap_or_else(|| Arc::new(NoMetrics)),
        clock.clone(),
        limits.clone(),
        owner,
    );
    executor.lease = lease;
    executor.grant_after = config.autonomy.grant_after;
    if !platforms.is_empty() {
        let n = notifier.clone();
        executor.on_progress = Some(Arc::new(move |entry| {
            let n = n.clone();
            Box::pin(async move {
                if let Err(e) = n.progress(&entry).await {
                    let id = entry.incident_id;
                    tracing::warn!(incident = id, error = %format!("{e:#}"), "could not queue a progress update");
                }
            })
        }));
        chat_tasks.push(tokio::spawn(crate::chat::watch_resolved(
            notifier.clone(),
            clock.clone(),
            chat_stopped.clone(),
        )));
    }
    let executor = Arc::new(executor);
    notifier.interrupted(&interrupted).await;
    chat_tasks.push(tokio::spawn(sweep_orphans(
        store.clone(),
        notifier.clone(),
        executor.owner.clone(),
        lease,
        clock.clone(),
        chat_stopped.clone(),
    )));
    let clicks = Arc::new(crate::chat::clicks::Clicks {
        store: store.clone(),
        notifier: notifier.clone(),
        executor,
        runbooks: runbooks.clone(),
        guardrails: config.guardrails.clone(),
        clock: clock.clone(),
    });
    if let Some(tx) = parts.clicks {
        let _ = tx.send(clicks.clone());
    }
    chat_tasks.push(tokio::spawn(run_auto_plans(clicks.clone(), chat_stopped.clone())));
    chat_tasks.push(tokio::spawn(retain(store.clone(), config.retention.clone(), clock.clone(), chat_stopped.clone())));
    let responders = Arc::new(config.responders.clone());
    let asker = Arc::new(crate::ask::answer::Asker {
        store: store.clone(),
        sources: sources.clone(),
        golden: golden.clone(),
        runbooks: runbooks.clone(),
        clock: clock.clone(),
        window: (&config.context).into(),
        config: config.ask.clone(),
        offset: config.ask.offset().map_err(anyhow::Error::msg)?,
        notifier: (!platforms.is_empty()).then(|| notifier.clone()),
        llm: config
            .ask
            .llm
            .as_ref()
            .map(crate::ask::llm::Llm::new)
            .transpose()
            .map_err(anyhow::Error::msg)?
            .map(Arc::new),
        recent: Default::default(),
        trackers,
    });
    let api_tokens = Arc::new(config.api.tokens().map_err(anyhow::Error::msg)?);
    let asking =
        Arc::new(crate::chat::asking::Asking::new(asker.clone(), responders.clone(), store.clone(), clock.clone()));
    if let Some(slack) = slack.as_ref().filter(|s| s.app_token.is_some()) {
        chat_tasks.push(tokio::spawn(crate::chat::slack::socket_mode(
            slack.clone(),
            clicks.clone(),
            asking.clone(),
            chat_stopped.clone(),
        )));
    }
    if let Some(d) = &discord {
        chat_tasks.push(tokio::spawn(register_discord_commands(d.clone(), chat_stopped.clone())));
        if d.mode == crate::chat::discord::Mode::Gateway {
            chat_tasks.push(tokio::spawn(crate::chat::discord::gateway::run(
                d.clone(),
                clicks.clone(),
                asking.clone(),
                chat_stopped.clone(),
            )));
        }
    }
    // Mattermost's routes are its own (`chat::mattermost::inbound`), merged into the router.
    let mattermost_routes = mattermost.as_ref().map(|m| {
        crate::chat::mattermost::inbound::routes(
            m.clone(),
            clicks.clone(),
            asking.clone(),
            config.intake.max_body_bytes,
        )
    });
    if let Some(m) = mattermost.as_ref().filter(|m| m.websocket) {
        chat_tasks.push(tokio::spawn(crate::chat::mattermost::websocket::run(
            m.clone(),
            asking.clone(),
            clicks.executor.owner.clone(),
            chat_stopped.clone(),
        )));
    }
    let chat = ChatApp {
        slack,
        discord,
        clicks,
        responders,
        asking,
        max_body: config.intake.max_body_bytes,
        platforms: platforms.clone(),
        routes: mattermost_routes,
    };
    tracing::info!(runbooks = runbooks.len(), golden_signals = golden.len(), "responder ready");
    let responder = crate::responder::Responder {
        store: store.clone(),
        sources,
        runbooks,
        golden,
        clock: clock.clone(),
        metrics: metrics.clone(),
        notifier: (!platforms.is_empty()).then_some(notifier),
        limits,
        autonomy: config.autonomy.clone(),
        guardrails: config.guardrails.clone(),
        digests: Default::default(),
        cache: crate::context::Cache::new(config.context.cache_ttl),
        window: (&config.context).into(),
    };
    let triggers = Arc::new(Triggers::new(config.context.rediagnose_every));
    let responder = tokio::spawn(Arc::new(responder).run(triggers.clone()));
    let (pipeline, writer) = Pipeline::start(store.clone(), policy, clock.clone(), metrics.clone(), TICK);
    let intake = Intake::new(&config.intake, pipeline, metrics.clone(), clock.clone(), triggers.clone())
        .map_err(anyhow::Error::msg)?;
    let grant_after = config.autonomy.grant_after;
    let app = Arc::new(App { store: store.clone(), asker, api_tokens, intake, metrics, chat, clock, grant_after });
    tracing::info!(%addr, store = store.backend(), "medic listening");
    crate::serve::serve(listener, router(app), &config.http, shutdown).await.context("server failed")?;
    tracing::info!("stopped accepting; draining the writer and the responder");
    writer.await.context("writer task panicked")?;
    triggers.close();
    responder.await.context("responder task panicked")?;
    topology.abort();
    let _ = stop_chat.send(true);
    for t in chat_tasks {
        t.await.context("chat task panicked")?;
    }
    tracing::info!("shutdown complete");
    Ok(())
}

/// Registers the `/medic` command on Discord, retrying with backoff until it succeeds or
/// medic stops (a bulk overwrite: every replica may do it, the result is the same).
async fn register_discord_commands(
    discord: Arc<crate::chat::discord::Discord>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    for attempt in 1i64.. {
        match discord.register_commands().await {
            Ok(()) => return tracing::info!("Discord /medic command registered"),
            Err(e) => tracing::warn!(error = %e, attempt, "could not register the Discord /medic command"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(crate::chat::outbox::backoff(attempt) as u64)) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Every replica looks for executions whose replica is gone (their lease lapsed), marks them
/// interrupted, escalates, and shows it in chat. Idempotent across replicas: the store marks
/// each one once, under the write lock.
async fn sweep_orphans(
    store: Arc<dyn Store>,
    notifier: Arc<crate::chat::Notifier>,
    owner: String,
    lease: Duration,
    clock: Arc<dyn Clock>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(lease / 4) => {}
            _ = stop.changed() => return,
        }
        match crate::executor::recover(store.as_ref(), &owner, false, lease, clock.now()).await {
            Ok(orphans) => notifier.interrupted(&orphans).await,
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "could not look for orphaned executions"),
        }
    }
}

/// Every second, starts the plans that run by themselves whose delay has passed. Safe on every
/// replica: the store approves each one once, under the write lock, and an execution is claimed
/// once.
async fn run_auto_plans(clicks: Arc<crate::chat::clicks::Clicks>, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => return,
        }
        if let Err(e) = clicks.run_due().await {
            tracing::warn!(error = %format!("{e:#}"), "could not start the plans that run by themselves");
        }
    }
}

/// Runs retention every `retention.every`, when any is configured. Safe on every replica: it
/// runs under the write lock, and a second run finds nothing left to remove.
async fn retain(
    store: Arc<dyn Store>,
    cfg: crate::store::retention::Config,
    clock: Arc<dyn Clock>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    if cfg.incidents.is_none() && cfg.outbox.is_none() && cfg.audit.is_none() {
        return;
    }
    loop {
        match store.prune(clock.now(), &cfg).await {
            Ok(p) if p == Default::default() => {}
            Ok(p) => tracing::info!(
                incidents = p.incidents,
                outbox = p.outbox,
                audit = p.audit,
                "retention removed old records"
            ),
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "retention failed; will retry"),
        }
        tokio::select! {
            _ = tokio::time::sleep(cfg.every()) => {}
            _ = stop.changed() => return,
        }
    }
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

pub fn router(app: Arc<App>) -> Router {
    let api = Router::new()
        .route("/v1/incidents", get(crate::api::list))
        .route("/v1/incidents/{id}", get(crate::api::detail))
        .route("/v1/ask", post(crate::api::ask))
        .route("/v1/runbooks", get(crate::api::runbooks))
        .layer(middleware::from_fn_with_state(app.api_tokens.clone(), crate::api::auth::authenticate));
    let mut r = Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(api)
        .route("/slack/interactions", post(slack_interactions))
        .route("/slack/events", post(slack_events))
        .route("/slack/commands", post(slack_commands))
        .route("/discord/interactions", post(discord_interactions));
    if let Some(routes) = app.chat.routes.clone() {
        r = r.merge(routes);
    }
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

/// Deliveries refused for good within this window show in `/readyz` and `/metrics`.
const CHAT_FAILED_WINDOW: Millis = 24 * 3600 * 1000;

async fn readyz(State(app): State<Arc<App>>) -> Response {
    match app.store.ready().await {
        Ok(()) => {
            // A chat outage does not make the replica unready (intake must go on), but it shows.
            let chat = app.store.outbox_health(app.clock.now() - CHAT_FAILED_WINDOW).await.unwrap_or_default();
            let mut degraded: Vec<&str> =
                chat.iter().filter(|h| h.failing > 0 || h.failed > 0).map(|h| h.platform.as_str()).collect();
            let mut ready = json!({"ready": true, "store": app.store.backend(), "chat": chat});
            for p in &app.chat.platforms {
                let Some((key, state)) = p.connection() else { continue };
                // A connection that stopped for good (a bad token, disallowed intents) shows here.
                if state["state"] == "stopped" && !degraded.contains(&p.name()) {
                    degraded.push(p.name());
                }
                ready[key] = state;
            }
            ready["degraded"] = json!(degraded);
            Json(ready).into_response()
        }
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "not ready");
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"ready": false, "store": app.store.backend(), "reason": "store unreachable or migrations not applied"})))
                .into_response()
        }
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let (open, resolving) = app.store.unresolved_counts().await.unwrap_or((-1, -1));
    let chat = app.store.outbox_health(app.clock.now() - CHAT_FAILED_WINDOW).await.unwrap_or_default();
    let gauges: Vec<(&str, &str, i64)> = chat
        .iter()
        .flat_map(|h| {
            [("pending", h.pending), ("failing", h.failing), ("failed", h.failed)]
                .map(|(state, n)| (h.platform.as_str(), state, n))
        })
        .collect();
    let runbooks = app.store.runbook_stats(false).await.unwrap_or_default();
    let text = app.metrics.render(open, resolving, &gauges, &runbooks);
    ([("content-type", "text/plain; version=0.0.4")], text).into_response()
}

fn refuse(status: StatusCode, error: &str, message: String) -> Response {
    (status, Json(json!({"error": error, "message": message}))).into_response()
}

/// A chat request's body, read within the limit and verified by `verify`; or the answer
/// refusing it.
async fn chat_request(
    chat: &ChatApp,
    configured: bool,
    platform: &str,
    verify: impl FnOnce(&[u8]) -> Result<(), String>,
    req: Request,
) -> Result<Vec<u8>, Response> {
    if !configured {
        return Err(refuse(StatusCode::NOT_FOUND, "not_found", format!("{platform} is not configured")));
    }
    let body = axum::body::to_bytes(req.into_body(), chat.max_body).await.map_err(|_| {
        refuse(StatusCode::PAYLOAD_TOO_LARGE, "too_large", format!("body larger than {} bytes", chat.max_body))
    })?;
    if let Err(why) = verify(&body) {
        tracing::info!(platform, reason = %why, "chat request refused");
        return Err(refuse(StatusCode::UNAUTHORIZED, "unauthorized", why));
    }
    Ok(body.to_vec())
}

async fn slack_request(
    app: &App,
    headers: &HeaderMap,
    req: Request,
) -> Result<(Arc<crate::chat::slack::Slack>, Vec<u8>), Response> {
    let slack = app.chat.slack.clone();
    let verify = |body: &[u8]| slack.as_ref().map_or(Ok(()), |s| s.verify(headers, body));
    let body = chat_request(&app.chat, app.chat.slack.is_some(), "Slack", verify, req).await?;
    Ok((slack.expect("checked by chat_request"), body))
}

/// `POST /discord/interactions`: PING, button clicks and modal submissions; a click is answered
/// once it is decided and stored, or after `chat::ACK_BUDGET`.
async fn discord_interactions(State(app): State<Arc<App>>, headers: HeaderMap, req: Request) -> Response {
    let discord = app.chat.discord.clone();
    let verify = |body: &[u8]| discord.as_ref().map_or(Ok(()), |d| d.verify(&headers, body));
    let body = match chat_request(&app.chat, app.chat.discord.is_some(), "Discord", verify, req).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let discord = discord.expect("checked by chat_request");
    match discord.interaction(&body, &app.chat.clicks, &app.chat.asking, crate::chat::ACK_BUDGET).await {
        Ok(answer) => Json(answer).into_response(),
        Err(e) => refuse(StatusCode::BAD_REQUEST, "invalid", e),
    }
}

/// `POST /slack/interactions`: button clicks and modal submissions (`payload=<json>`, form
/// encoded). Answered once the click is decided and stored, or after `chat::ACK_BUDGET`,
/// whichever is first: a replica that dies after answering has not lost the click (with an
/// answer sent first, a kill between the answer and the store lost it, and Slack never
/// resends a click).
async fn slack_interactions(State(app): State<Arc<App>>, headers: HeaderMap, req: Request) -> Response {
    let (slack, body) = match slack_request(&app, &headers, req).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let Some(payload) = url::form_urlencoded::parse(&body).find(|(k, _)| k == "payload").map(|(_, v)| v.into_owned())
    else {
        return refuse(StatusCode::BAD_REQUEST, "invalid", "expected a form field `payload`".into());
    };
    let payload: serde_json::Value = match serde_json::from_str(&payload) {
        Ok(v) => v,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, "invalid", format!("payload is not JSON: {e}")),
    };
    let (clicks, asking) = (app.chat.clicks.clone(), app.chat.asking.clone());
    let handling = tokio::spawn(async move {
        if let Err(e) = slack.interaction(&payload, &clicks, &asking).await {
            tracing::warn!(error = %format!("{e:#}"), "Slack interaction failed");
        }
    });
    let _ = tokio::time::timeout(crate::chat::ACK_BUDGET, handling).await;
    StatusCode::OK.into_response()
}

/// `POST /slack/commands`: the `/medic` slash command (form encoded), acknowledged at once;
/// the answer follows as a message.
async fn slack_commands(State(app): State<Arc<App>>, headers: HeaderMap, req: Request) -> Response {
    let (slack, body) = match slack_request(&app, &headers, req).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let form: std::collections::HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    if !form.contains_key("user_id") || !form.contains_key("channel_id") {
        return refuse(StatusCode::BAD_REQUEST, "invalid", "expected the form fields user_id and channel_id".into());
    }
    let asking = app.chat.asking.clone();
    tokio::spawn(async move { slack.command(&form, &asking).await });
    StatusCode::OK.into_response()
}

/// `POST /slack/events`: the Events API — the URL verification challenge, and questions
/// (handled after the acknowledgement; Slack wants one within 3 s).
async fn slack_events(State(app): State<Arc<App>>, headers: HeaderMap, req: Request) -> Response {
    let (slack, body) = match slack_request(&app, &headers, req).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let v: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, "invalid", format!("body is not JSON: {e}")),
    };
    if v["type"] == "url_verification" {
        return Json(json!({"challenge": v["challenge"]})).into_response();
    }
    let asking = app.chat.asking.clone();
    tokio::spawn(async move {
        if let Err(e) = slack.event(&v, &asking).await {
            tracing::warn!(error = %format!("{e:#}"), "Slack event failed");
        }
    });
    StatusCode::OK.into_response()
}
