//! Context: what the observability stack says about an incident's services around its onset.
//!
//! Each kind of source sits behind its own small trait ([`Metrics`], [`Logs`], [`Changes`],
//! [`Pods`], [`Topology`]); a real backend (Prometheus, Loki, Kubernetes…) implements the ones
//! it can answer, and [`recorded::Recorded`] implements them all from a scenario file, for tests,
//! `medic test`, replays and the demo. [`gather`] fans out to every configured source in
//! parallel, each call with its own timeout; a source that fails or is slow becomes a line in
//! [`Context::unavailable`] ("metrics: recorded timed out after 5s"), never a missing diagnosis.

pub mod http;
pub mod loki;
pub mod prometheus;
pub mod recorded;

use crate::alert::{Change, Labels};
use crate::time::Millis;
use async_trait::async_trait;
use futures_util::future::join_all;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// One time series: the context query it answers, its labels and its samples.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Series {
    pub query: String,
    pub labels: Labels,
    pub points: Vec<(Millis, f64)>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogLine {
    pub at: Millis,
    pub service: String,
    pub line: String,
}

/// A pod as Kubernetes reports it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Pod {
    pub name: String,
    pub service: String,
    #[serde(default = "running")]
    pub phase: String,
    /// Why the container is not running: `CrashLoopBackOff`, `OOMKilled`, …
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub restarts: u32,
}

fn running() -> String {
    "Running".into()
}

/// `from` calls `to`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Edge {
    pub from: String,
    pub to: String,
}

/// A metrics question: the context query's name, its rendered PromQL, and the range.
#[derive(Debug, Clone)]
pub struct MetricQuery {
    pub name: String,
    pub promql: String,
    pub start: Millis,
    pub end: Millis,
    pub step: Millis,
}

#[async_trait]
pub trait Metrics: Send + Sync {
    fn name(&self) -> &str;
    async fn query_range(&self, q: &MetricQuery) -> Result<Vec<Series>, String>;
}

#[async_trait]
pub trait Logs: Send + Sync {
    fn name(&self) -> &str;
    /// Log lines of `service` in `[start, end]`, oldest first, at most `limit`.
    async fn lines(&self, service: &str, start: Millis, end: Millis, limit: usize) -> Result<Vec<LogLine>, String>;
}

#[async_trait]
pub trait Changes: Send + Sync {
    fn name(&self) -> &str;
    async fn changes(&self, service: &str, start: Millis, end: Millis) -> Result<Vec<Change>, String>;
}

#[async_trait]
pub trait Pods: Send + Sync {
    fn name(&self) -> &str;
    async fn pods(&self, service: &str) -> Result<Vec<Pod>, String>;
}

#[async_trait]
pub trait Topology: Send + Sync {
    fn name(&self) -> &str;
    async fn edges(&self) -> Result<Vec<Edge>, String>;
}

/// The configured sources; any may be absent.
#[derive(Clone, Default)]
pub struct Sources {
    pub metrics: Option<Arc<dyn Metrics>>,
    pub logs: Option<Arc<dyn Logs>>,
    pub changes: Option<Arc<dyn Changes>>,
    pub pods: Option<Arc<dyn Pods>>,
    pub topology: Option<Arc<dyn Topology>>,
    /// Each call's deadline.
    pub timeout: Duration,
}

impl Sources {
    /// Every source served by one backend (the recorded one, typically).
    pub fn all<B: Metrics + Logs + Changes + Pods + Topology + 'static>(b: Arc<B>, timeout: Duration) -> Sources {
        Sources {
            metrics: Some(b.clone()),
            logs: Some(b.clone()),
            changes: Some(b.clone()),
            pods: Some(b.clone()),
            topology: Some(b),
            timeout,
        }
    }
}

/// What to gather: the services, the window, and the metric queries to run.
#[derive(Debug, Clone)]
pub struct Request {
    pub services: Vec<String>,
    pub start: Millis,
    pub end: Millis,
    /// Changes are looked for further back than metrics: a deploy hours before the onset
    /// still explains it.
    pub changes_start: Millis,
    pub queries: Vec<MetricQuery>,
}

/// Everything gathered for one incident.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Context {
    pub start: Millis,
    pub end: Millis,
    pub series: Vec<Series>,
    pub logs: Vec<LogLine>,
    pub changes: Vec<Change>,
    pub pods: Vec<Pod>,
    pub topology: Vec<Edge>,
    /// Sources that failed or timed out, worded for people.
    pub unavailable: Vec<String>,
}

async fn bounded<T>(
    what: &str,
    source: &str,
    timeout: Duration,
    f: impl Future<Output = Result<T, String>>,
) -> Result<T, String> {
    match tokio::time::timeout(timeout, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {source} failed: {e}")),
        Err(_) => Err(format!("{what}: {source} timed out after {}", humantime::format_duration(timeout))),
    }
}

/// Asks every source at once, and every service of each at once; each answer or failure lands
/// in the returned context.
pub async fn gather(sources: &Sources, req: &Request) -> Context {
    let t = sources.timeout;
    let metrics = async {
        match &sources.metrics {
            Some(m) => join_all(req.queries.iter().map(|q| bounded("metrics", m.name(), t, m.query_range(q)))).await,
            None => Vec::new(),
        }
    };
    let logs = async {
        match &sources.logs {
            Some(l) => {
                join_all(
                    req.services.iter().map(|s| bounded("logs", l.name(), t, l.lines(s, req.start, req.end, 5000))),
                )
                .await
            }
            None => Vec::new(),
        }
    };
    let changes = async {
        match &sources.changes {
            Some(c) => {
                join_all(
                    req.services
                        .iter()
                        .map(|s| bounded("changes", c.name(), t, c.changes(s, req.changes_start, req.end))),
                )
                .await
            }
            None => Vec::new(),
        }
    };
    let pods = async {
        match &sources.pods {
            Some(p) => join_all(req.services.iter().map(|s| bounded("pods", p.name(), t, p.pods(s)))).await,
            None => Vec::new(),
        }
    };
    let topology = async {
        match &sources.topology {
            Some(g) => vec![bounded("topology", g.name(), t, g.edges()).await],
            None => Vec::new(),
        }
    };
    let (metrics, logs, changes, pods, topology) = tokio::join!(metrics, logs, changes, pods, topology);

    let mut unavailable: Vec<String> = Vec::new();
    let series = collect_into(&mut unavailable, metrics);
    Context {
        start: req.start,
        end: req.end,
        series,
        logs: collect_into(&mut unavailable, logs),
        changes: collect_into(&mut unavailable, changes),
        pods: collect_into(&mut unavailable, pods),
        topology: collect_into(&mut unavailable, topology),
        unavailable,
    }
}

/// Successful results concatenated; distinct failures appended to `unavailable`.
fn collect_into<T>(unavailable: &mut Vec<String>, results: Vec<Result<Vec<T>, String>>) -> Vec<T> {
    let mut items = Vec::new();
    for r in results {
        match r {
            Ok(v) => items.extend(v),
            Err(e) if !unavailable.contains(&e) => unavailable.push(e),
            Err(_) => {}
        }
    }
    items
}
