//! Context: what the observability stack says about an incident's services around its onset.
//!
//! Each kind of source sits behind its own small trait ([`Metrics`], [`Logs`], [`Changes`],
//! [`Pods`], [`Topology`], [`Alerts`]); a real backend implements the ones it can answer —
//! [`prometheus`] (metrics, and topology from service-graph metrics), [`loki`] (logs),
//! [`alertmanager`] (other active alerts, silences), [`kubernetes`] (pods, rollout history),
//! [`github`] (deployments and releases), [`topology`] (a dependency file), the store (changes
//! received on `/v1/changes`) — and `scenario::recorded::Recorded` implements them all from a scenario
//! file, for tests, `medic test`, replays and the demo.
//!
//! [`gather`] asks the topology first (what the incident's services depend on, directly or
//! through others, widens the question), then every other source and every service at once;
//! each call has its own timeout and all of them share one overall budget. A source that fails
//! or is slow becomes a line in [`Context::unavailable`] ("metrics: prometheus timed out after
//! 5s"), never a missing diagnosis; every call is recorded with its duration in
//! [`Context::queries`] (the audit's `diagnosed` record and `/metrics` show them). [`Cache`]
//! keeps one incident's context for a short while, so a burst of alerts joining an incident does
//! not query everything again.

pub mod alertmanager;
pub mod config;
pub mod github;
pub mod http;
pub mod jaeger;
pub mod kubernetes;
pub mod loki;
pub mod prometheus;
pub mod tempo;
pub mod topology;
pub mod traces;

pub use config::Config;
pub use traces::Span;

use crate::alert::{Change, Labels};
use crate::time::Millis;
use async_trait::async_trait;
use futures_util::future::join_all;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    /// How the last run of a container ended: "OOMKilled (exit 137) at 14:02".
    #[serde(default)]
    pub last_termination: Option<String>,
    /// Recent warning events about the pod, newest last: "BackOff: Back-off restarting…".
    #[serde(default)]
    pub events: Vec<String>,
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
    /// The service a golden signal was rendered for (`None` for a runbook's own query).
    pub service: Option<String>,
}

/// An alert active in Alertmanager (firing, possibly silenced or inhibited).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActiveAlert {
    pub fingerprint: String,
    pub labels: Labels,
    /// `active`, `suppressed` (silenced or inhibited) or `unprocessed`.
    pub state: String,
    pub starts_at: Millis,
    pub summary: Option<String>,
}

impl ActiveAlert {
    pub fn name(&self) -> &str {
        self.labels.get("alertname").map(String::as_str).unwrap_or("(unnamed)")
    }
}

/// An active silence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Silence {
    pub id: String,
    /// Its matchers as written in PromQL: `service="checkout"`, `alertname=~"Disk.*"`.
    pub matchers: Vec<String>,
    /// The label values it matches by equality, and the regexes it matches by, per label.
    #[serde(skip)]
    pub matches: Vec<(String, String, bool)>,
    pub created_by: String,
    pub comment: String,
    pub ends_at: Millis,
}

impl Silence {
    /// Whether the silence names `service` in a `service` matcher (equal or regex).
    pub fn concerns(&self, service: &str) -> bool {
        self.matches.iter().any(|(name, value, is_regex)| {
            name == "service"
                && if *is_regex {
                    regex::Regex::new(&format!("^(?:{value})$")).is_ok_and(|r| r.is_match(service))
                } else {
                    value == service
                }
        })
    }
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

#[async_trait]
pub trait Traces: Send + Sync {
    fn name(&self) -> &str;
    /// The spans of at most `limit` traces through `service` that started in `[start, end]`,
    /// every span of each (across services).
    async fn spans(&self, service: &str, start: Millis, end: Millis, limit: usize) -> Result<Vec<Span>, String>;
}

#[async_trait]
pub trait Alerts: Send + Sync {
    fn name(&self) -> &str;
    /// Every active alert (filtered to the incident's services by [`gather`]).
    async fn active(&self) -> Result<Vec<ActiveAlert>, String>;
    /// Every active silence.
    async fn silences(&self) -> Result<Vec<Silence>, String>;
}

/// The configured sources; any may be absent. Several change and topology sources merge.
#[derive(Clone)]
pub struct Sources {
    pub metrics: Option<Arc<dyn Metrics>>,
    pub logs: Option<Arc<dyn Logs>>,
    pub changes: Vec<Arc<dyn Changes>>,
    pub pods: Option<Arc<dyn Pods>>,
    pub topology: Vec<Arc<dyn Topology>>,
    pub alerts: Option<Arc<dyn Alerts>>,
    pub traces: Option<Arc<dyn Traces>>,
    /// Most traces read per question.
    pub trace_limit: usize,
    /// Each call's deadline.
    pub timeout: Duration,
    /// The whole gathering's deadline: calls still running then are cut off.
    pub budget: Duration,
}

impl Default for Sources {
    fn default() -> Self {
        Sources {
            metrics: None,
            logs: None,
            changes: Vec::new(),
            pods: None,
            topology: Vec::new(),
            alerts: None,
            traces: None,
            trace_limit: 200,
            timeout: Duration::from_secs(5),
            budget: Duration::from_secs(10),
        }
    }
}

impl Sources {
    /// Every source served by one backend (the recorded one, typically).
    pub fn all<B: Metrics + Logs + Traces + Changes + Pods + Topology + 'static>(
        b: Arc<B>,
        timeout: Duration,
    ) -> Sources {
        Sources {
            metrics: Some(b.clone()),
            logs: Some(b.clone()),
            changes: vec![b.clone()],
            pods: Some(b.clone()),
            topology: vec![b.clone()],
            alerts: None,
            traces: Some(b.clone()),
            trace_limit: 200,
            timeout,
            budget: timeout * 2,
        }
    }
}

/// A PromQL template run for every service of the incident and its dependencies.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Golden {
    pub name: String,
    /// PromQL with `{{service}}` (quoted for a PromQL string).
    pub promql: String,
    #[serde(default)]
    pub unit: crate::runbook::Unit,
    /// This signal is another golden signal (named here) as the service's callers see it: the
    /// latency of calls into the service measured on the client side (Istio's
    /// `reporter="source"`, the service graph's `…_client_seconds`), where the named one is
    /// measured by the service itself. Their gap is time on the network into the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callers_view_of: Option<String>,
}

/// What to gather: the services, the window, and the metric queries to run.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub services: Vec<String>,
    pub start: Millis,
    pub end: Millis,
    /// Where the incident starts (the first alert's start): logs and traces are read before
    /// it (from `logs_start`, the baseline) and after it separately, so a chatty baseline
    /// never crowds out the incident's own lines. At or before `logs_start`: one range.
    pub split: Millis,
    /// Logs and traces are read from here (they are heavier than metrics).
    pub logs_start: Millis,
    /// Changes are looked for further back than metrics: a deploy hours before the onset
    /// still explains it.
    pub changes_start: Millis,
    /// Already rendered (the runbooks' own queries).
    pub queries: Vec<MetricQuery>,
    /// Rendered for each service and each dependency.
    pub golden: Vec<Golden>,
}

/// One call to a source, for the audit and `/metrics`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueryRecord {
    /// `metrics`, `logs`, `traces`, `changes`, `pods`, `topology`, `alerts`, `silences`.
    pub kind: &'static str,
    /// The backend's name.
    pub source: String,
    /// What was asked: the query's name, the service.
    pub what: String,
    pub ms: u64,
    /// Why it failed, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Everything gathered for one incident.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Context {
    pub start: Millis,
    pub end: Millis,
    pub series: Vec<Series>,
    /// Log lines of the incident's services and their dependencies, oldest first per service.
    pub logs: Vec<LogLine>,
    /// Spans of traces through the incident's services (each span once).
    pub spans: Vec<Span>,
    /// Where the baseline ends and the incident begins (see [`Request::split`]).
    pub split: Millis,
    /// One timeline, oldest first, from every change source (duplicates by id dropped).
    pub changes: Vec<Change>,
    pub pods: Vec<Pod>,
    pub topology: Vec<Edge>,
    /// What the incident's services depend on in the topology, directly or not, nearest first
    /// (at most [`DOWNSTREAM_LIMIT`]).
    pub dependencies: Vec<String>,
    /// Active alerts on the incident's services and their dependencies (the incident's own
    /// alerts among them; the diagnosis leaves those out).
    pub other_alerts: Vec<ActiveAlert>,
    /// Active silences that name one of those services.
    pub silences: Vec<Silence>,
    /// Sources that failed or timed out, worded for people.
    pub unavailable: Vec<String>,
    pub queries: Vec<QueryRecord>,
}

/// One call, bounded by its own timeout and by the overall deadline, and recorded.
async fn bounded<T>(
    kind: &'static str,
    source: &str,
    what: String,
    timeout: Duration,
    deadline: Instant,
    f: impl Future<Output = Result<T, String>>,
) -> (Result<T, String>, QueryRecord) {
    let started = Instant::now();
    let left = deadline.saturating_duration_since(started);
    let result = match tokio::time::timeout(timeout.min(left), f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{kind}: {source} failed: {e}")),
        Err(_) if left < timeout => Err(format!("{kind}: {source} cut off by the gathering budget")),
        Err(_) => Err(format!("{kind}: {source} timed out after {}", humantime::format_duration(timeout))),
    };
    let record = QueryRecord {
        kind,
        source: source.to_string(),
        what,
        ms: started.elapsed().as_millis() as u64,
        error: result.as_ref().err().cloned(),
    };
    (result, record)
}

/// The sources and golden signals a config names, plus the changes medic received itself.
pub async fn from_config(cfg: &Config, received: Arc<dyn Changes>) -> Result<(Sources, Vec<Golden>), String> {
    let t = cfg.timeout;
    let mut s = Sources { timeout: t, budget: cfg.budget, changes: vec![received], ..Default::default() };
    let mut golden = Vec::new();
    let mut prom = None;
    if let Some(p) = &cfg.prometheus {
        let (auth, headers) = p.http.resolve("context.prometheus")?;
        let backend = Arc::new(prometheus::Prometheus::new(&p.http.url, auth, headers, t)?);
        golden = p.golden_signals.clone().unwrap_or_else(prometheus::default_golden);
        s.metrics = Some(backend.clone());
        prom = Some(backend);
    }
    if let Some(l) = &cfg.loki {
        let (auth, headers) = l.http.resolve("context.loki")?;
        s.logs = Some(Arc::new(loki::Loki::new(&l.http.url, auth, headers, t, l.query.clone())?));
    }
    if let Some(a) = &cfg.alertmanager {
        let (auth, headers) = a.resolve("context.alertmanager")?;
        s.alerts = Some(Arc::new(alertmanager::Alertmanager::new(&a.url, auth, headers, t)?));
    }
    if let Some(k) = &cfg.kubernetes {
        let kube =
            Arc::new(kubernetes::Kubernetes::connect(k, t).await.map_err(|e| format!("context.kubernetes: {e}"))?);
        s.pods = Some(kube.clone());
        s.changes.push(kube);
    }
    if let Some(g) = &cfg.github {
        let token =
            g.token.as_ref().map(|t| t.resolve()).transpose().map_err(|e| format!("context.github.token: {e}"))?;
        s.changes.push(Arc::new(github::GitHub::new(&g.url, token, g.repos.clone(), t)?));
    }
    if let Some(tr) = &cfg.traces {
        let (auth, headers) = tr.http.resolve("context.traces")?;
        s.traces = Some(match tr.kind {
            traces::Kind::Tempo => Arc::new(tempo::Tempo::new(&tr.http.url, auth, headers, t)?) as Arc<dyn Traces>,
            traces::Kind::Jaeger => Arc::new(jaeger::Jaeger::new(&tr.http.url, auth, headers, t)?),
        });
        s.trace_limit = tr.limit;
    }
    if let Some(f) = &cfg.topology.file {
        s.topology.push(Arc::new(topology::FileTopology::new(f)));
    }
    if let Some(kind) = cfg.topology.service_graph {
        let p = prom.ok_or("context.topology.service_graph needs context.prometheus")?;
        s.topology.push(Arc::new(topology::ServiceGraph::new(p, kind)));
    }
    Ok((s, golden))
}

/// Most services below the incident's that are gathered (nearest first): enough for the
/// 40-odd services behind one gateway.
pub const DOWNSTREAM_LIMIT: usize = 60;

/// The services `services` depend on, directly or through others, nearest first (breadth
/// first), at most [`DOWNSTREAM_LIMIT`]: a cascade's origin is often two hops down.
pub fn downstream(edges: &[Edge], services: &[String]) -> Vec<String> {
    let mut seen: BTreeSet<&str> = services.iter().map(String::as_str).collect();
    let mut out: Vec<String> = Vec::new();
    let mut frontier: Vec<&str> = services.iter().map(String::as_str).collect();
    while !frontier.is_empty() && out.len() < DOWNSTREAM_LIMIT {
        let mut next = Vec::new();
        for e in edges.iter().filter(|e| frontier.contains(&e.from.as_str())) {
            if out.len() < DOWNSTREAM_LIMIT && seen.insert(e.to.as_str()) {
                out.push(e.to.clone());
                next.push(e.to.as_str());
            }
        }
        frontier = next;
    }
    out
}

/// Asks every source at once, and every service of each at once; each answer or failure lands
/// in the returned context.
pub async fn gather(sources: &Sources, req: &Request) -> Context {
    let deadline = Instant::now() + sources.budget;
    let t = sources.timeout;
    let mut out = Outcomes::default();

    // The topology and the traces first: dependencies widen the metrics, logs and alerts asked
    // for, and a dependency seen in a trace is a dependency.
    let topology = join_all(
        sources.topology.iter().map(|g| bounded("topology", g.name(), "edges".into(), t, deadline, g.edges())),
    );
    let ranges = ranges(req);
    let traced = async {
        match &sources.traces {
            Some(tr) => {
                join_all(req.services.iter().flat_map(|s| {
                    ranges.iter().map(move |(a, b)| {
                        bounded("traces", tr.name(), s.clone(), t, deadline, tr.spans(s, *a, *b, sources.trace_limit))
                    })
                }))
                .await
            }
            None => Vec::new(),
        }
    };
    let (topology, traced) = tokio::join!(topology, traced);
    let mut edges = out.collect(topology);
    let mut spans = out.collect(traced);
    let mut seen_spans = std::collections::HashSet::new();
    spans.retain(|s| seen_spans.insert((s.trace_id.clone(), s.span_id.clone())));
    edges.extend(traces::edges(&spans));
    edges.sort_by(|a, b| (&a.from, &a.to).cmp(&(&b.from, &b.to)));
    edges.dedup();
    let dependencies = downstream(&edges, &req.services);
    let everyone: Vec<&String> = req.services.iter().chain(&dependencies).collect();

    // The runbooks' queries as given, then each golden signal for each service (the service
    // goes with it, to label its series).
    let step = prometheus::step_for(req.start, req.end);
    let mut asks: Vec<(MetricQuery, Option<&String>)> = req.queries.iter().map(|q| (q.clone(), None)).collect();
    for s in &everyone {
        for g in &req.golden {
            match crate::render::query(&g.promql, &serde_json::json!({"service": s}), false) {
                Ok(promql) => asks.push((
                    MetricQuery {
                        name: g.name.clone(),
                        promql,
                        start: req.start,
                        end: req.end,
                        step,
                        service: Some(s.to_string()),
                    },
                    Some(*s),
                )),
                Err(e) => tracing::warn!(signal = %g.name, error = %e, "golden signal not queried"),
            }
        }
    }

    let metrics = async {
        match &sources.metrics {
            Some(m) => {
                join_all(asks.iter().map(|(q, svc)| {
                    let what = match svc {
                        Some(s) => format!("{} of {s}", q.name),
                        None => q.name.clone(),
                    };
                    bounded("metrics", m.name(), what, t, deadline, m.query_range(q))
                }))
                .await
            }
            None => Vec::new(),
        }
    };
    let logs = async {
        match &sources.logs {
            Some(l) => {
                join_all(everyone.iter().flat_map(|s| {
                    ranges.iter().map(move |(a, b)| {
                        bounded("logs", l.name(), s.to_string(), t, deadline, l.lines(s, *a, *b, 5000))
                    })
                }))
                .await
            }
            None => Vec::new(),
        }
    };
    let changes = async {
        join_all(sources.changes.iter().flat_map(|c| {
            everyone.iter().map(move |s| {
                bounded("changes", c.name(), s.to_string(), t, deadline, c.changes(s, req.changes_start, req.end))
            })
        }))
        .await
    };
    let pods = async {
        match &sources.pods {
            Some(p) => {
                join_all(req.services.iter().map(|s| bounded("pods", p.name(), s.clone(), t, deadline, p.pods(s))))
                    .await
            }
            None => Vec::new(),
        }
    };
    let alerts = async {
        match &sources.alerts {
            Some(a) => {
                let active = bounded("alerts", a.name(), "active alerts".into(), t, deadline, a.active());
                let silences = bounded("silences", a.name(), "silences".into(), t, deadline, a.silences());
                let (active, silences) = tokio::join!(active, silences);
                (vec![active], vec![silences])
            }
            None => (Vec::new(), Vec::new()),
        }
    };
    let (metrics, logs, changes, pods, (active, silences)) = tokio::join!(metrics, logs, changes, pods, alerts);

    // Golden-signal series carry the service they were asked for.
    let mut series = Vec::new();
    for ((result, record), (_, svc)) in metrics.into_iter().zip(&asks) {
        let mut got = out.collect(vec![(result, record)]);
        if let Some(s) = svc {
            for x in &mut got {
                x.labels.entry("service".into()).or_insert_with(|| s.to_string());
            }
        }
        series.extend(got);
    }
    let mut changes = out.collect(changes);
    changes.sort_by(|a, b| a.at.cmp(&b.at).then(a.id.cmp(&b.id)));
    let mut seen = BTreeSet::new();
    changes.retain(|c| seen.insert(c.id.clone()));
    let wanted: BTreeSet<&str> = everyone.iter().map(|s| s.as_str()).collect();
    let other_alerts = out
        .collect(active)
        .into_iter()
        .filter(|a| a.labels.get("service").is_some_and(|s| wanted.contains(s.as_str())))
        .collect();
    let silences = out.collect(silences).into_iter().filter(|s| wanted.iter().any(|w| s.concerns(w))).collect();
    Context {
        start: req.start,
        end: req.end,
        series,
        logs: out.collect(logs),
        spans,
        split: req.split.max(req.logs_start),
        changes,
        pods: out.collect(pods),
        topology: edges,
        dependencies,
        other_alerts,
        silences,
        unavailable: out.unavailable,
        queries: out.queries,
    }
}

/// The ranges logs and traces are read in: the baseline before the split and the incident
/// after it, or one range when there is no split.
fn ranges(req: &Request) -> Vec<(Millis, Millis)> {
    let from = if req.logs_start > 0 { req.logs_start.max(req.start) } else { req.start };
    if req.split > from && req.split < req.end {
        vec![(from, req.split - 1), (req.split, req.end)]
    } else {
        vec![(from, req.end)]
    }
}

#[derive(Default)]
struct Outcomes {
    unavailable: Vec<String>,
    queries: Vec<QueryRecord>,
}

impl Outcomes {
    /// Successful results concatenated; distinct failures noted once; every call recorded.
    fn collect<T>(&mut self, results: Vec<(Result<Vec<T>, String>, QueryRecord)>) -> Vec<T> {
        let mut items = Vec::new();
        for (r, record) in results {
            self.queries.push(record);
            match r {
                Ok(v) => items.extend(v),
                Err(e) if !self.unavailable.contains(&e) => self.unavailable.push(e),
                Err(_) => {}
            }
        }
        items
    }
}

/// One incident's context, kept for `ttl` so that alerts joining an incident in a burst do not
/// each query every backend again. A new request (other services, other queries) misses.
pub struct Cache {
    ttl: Duration,
    entries: Mutex<HashMap<i64, Cached>>,
}

/// When it was gathered, for which request, and what.
type Cached = (Instant, String, Arc<Context>);

impl Cache {
    pub fn new(ttl: Duration) -> Cache {
        Cache { ttl, entries: Mutex::new(HashMap::new()) }
    }

    /// The cached context of `incident` for this request, or a fresh one; and whether it was cached.
    pub async fn gather(&self, incident: i64, sources: &Sources, req: &Request) -> (Arc<Context>, bool) {
        let key = format!(
            "{:?}|{:?}|{:?}|{}",
            req.services,
            req.queries.iter().map(|q| &q.promql).collect::<Vec<_>>(),
            req.golden,
            req.start
        );
        {
            let mut entries = self.entries.lock().unwrap();
            entries.retain(|_, (at, _, _)| at.elapsed() < self.ttl);
            if let Some((_, k, ctx)) = entries.get(&incident)
                && *k == key
            {
                return (ctx.clone(), true);
            }
        }
        let ctx = Arc::new(gather(sources, req).await);
        self.entries.lock().unwrap().insert(incident, (Instant::now(), key, ctx.clone()));
        (ctx, false)
    }
}
