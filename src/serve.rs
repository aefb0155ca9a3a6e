//! The HTTP accept loop, hardened for an endpoint anyone on the network can reach: at most
//! `max_connections` connections at once (past that, new ones wait in the kernel's backlog
//! instead of exhausting file descriptors), request headers within `header_read_timeout`
//! (an idle or half-sent connection is closed, keep-alive ones between requests too), each
//! request answered within `request_timeout` (slow bodies included), and accept errors —
//! `EMFILE` above all — never stop the loop. Graceful shutdown lets requests in flight finish.

use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::IntoResponse;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Deserialize;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// The `http` section of the config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Connections served at once; more wait to be accepted. Keep it below the process's
    /// open-file limit (`ulimit -n`), which the store's pool and outgoing calls share.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// A connection that has not sent a whole request head within this closes.
    #[serde(default = "default_header_read_timeout", with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A request not answered within this gets a 503 (its body must arrive within it too).
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
}

fn default_max_connections() -> usize {
    512
}

fn default_header_read_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_connections: default_max_connections(),
            header_read_timeout: default_header_read_timeout(),
            request_timeout: default_request_timeout(),
        }
    }
}

impl Config {
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.max_connections == 0 {
            out.push("http.max_connections: must be at least 1".into());
        }
        if self.header_read_timeout.is_zero() || self.request_timeout.is_zero() {
            out.push("http: timeouts must be longer than zero".into());
        }
        out
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then waits for the connections'
/// requests in flight to finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    cfg: &Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limit = cfg.request_timeout;
    let app = app.layer(axum::middleware::from_fn(move |req: Request, next: Next| async move {
        match tokio::time::timeout(limit, next.run(req)).await {
            Ok(resp) => resp,
            Err(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(serde_json::json!({"error": "timeout",
                    "message": format!("the request was not complete within {}s", limit.as_secs())})),
            )
                .into_response(),
        }
    }));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(cfg.header_read_timeout);
    let slots = Arc::new(Semaphore::new(cfg.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            _ = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_error(&e).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        // The peer's address as axum's `ConnectInfo`, for routes that check where a request
        // comes from (Mattermost's, which are not signed).
        // hyper calls a service by `&self`: the router is cloned per request (an `Arc`), as
        // `TowerToHyperService` did before.
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
            tower::Service::call(&mut app.clone(), req)
        });
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            // A connection closed by its peer or a timeout is not worth a log line.
            let _ = conn.await;
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// A failed accept: a connection that went away before it was taken is nothing; anything else
/// (`EMFILE`, `ENFILE`, `ENOBUFS`) is logged and retried shortly — the loop never stops, and
/// connections that close free descriptors for the next accept.
async fn accept_error(e: &std::io::Error) {
    use std::io::ErrorKind::*;
    if matches!(e.kind(), ConnectionAborted | ConnectionReset | ConnectionRefused) {
        return;
    }
    tracing::error!(error = %e, "accept failed (out of file descriptors?); retrying");
    tokio::time::sleep(Duration::from_millis(50)).await;
}
