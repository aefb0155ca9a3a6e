//! Traces: spans as every trace backend reports them ([`Span`]), and what medic reads from
//! them, as pure functions: who calls whom ([`edges`]: a dependency seen in a trace is a
//! dependency), per-edge call counts, error ratios and latency ([`edge_stats`]), and the time a
//! span spent in its own service rather than waiting for its children ([`exclusive`]). The
//! backends are [`super::tempo`] and [`super::jaeger`]; `scenario::nezha` serves recorded
//! spans. The section `context.traces` ([`Config`]) names one backend.

use super::Edge;
use super::config::HttpBackend;
use crate::time::Millis;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// One span: which service did what, when, for how long, and whether it failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Span {
    pub trace_id: String,
    pub span_id: String,
    /// The parent span's id; `None` for a trace's root.
    #[serde(default)]
    pub parent: Option<String>,
    pub service: String,
    pub operation: String,
    pub start: Millis,
    /// Microseconds.
    pub duration_us: u64,
    /// The span's status says it failed (OpenTelemetry `STATUS_CODE_ERROR`, Jaeger `error=true`).
    #[serde(default)]
    pub error: bool,
}

/// `context.traces`: one trace backend.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `tempo` (`/api/search`, `/api/traces/{id}`) or `jaeger` (`/api/traces`).
    pub kind: Kind,
    #[serde(flatten)]
    pub http: HttpBackend,
    /// Most traces read per question (Tempo fetches each one: keep it modest).
    #[serde(default = "default_limit")]
    pub limit: usize,
}

fn default_limit() -> usize {
    200
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Tempo,
    Jaeger,
}

/// Each span by its trace and span id, to find a span's parent.
fn index(spans: &[Span]) -> HashMap<(&str, &str), &Span> {
    spans.iter().map(|s| ((s.trace_id.as_str(), s.span_id.as_str()), s)).collect()
}

/// The caller → callee pairs of `spans` (a span whose parent belongs to another service),
/// each once, sorted.
pub fn edges(spans: &[Span]) -> Vec<Edge> {
    let by_id = index(spans);
    let mut out: Vec<Edge> = spans
        .iter()
        .filter_map(|s| {
            let p = by_id.get(&(s.trace_id.as_str(), s.parent.as_deref()?))?;
            (p.service != s.service).then(|| Edge { from: p.service.clone(), to: s.service.clone() })
        })
        .collect();
    out.sort_by(|a, b| (&a.from, &a.to).cmp(&(&b.from, &b.to)));
    out.dedup();
    out
}

/// Calls from one service to another in a time range.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeStats {
    pub from: String,
    pub to: String,
    pub calls: usize,
    pub errors: usize,
    /// Latency of the callee's spans, microseconds.
    pub p50_us: u64,
    pub p90_us: u64,
}

impl EdgeStats {
    pub fn error_ratio(&self) -> f64 {
        if self.calls == 0 { 0.0 } else { self.errors as f64 / self.calls as f64 }
    }
}

/// Per edge, the calls whose callee span started in `[from, to)`: how many, how many failed,
/// and their latency.
pub fn edge_stats(spans: &[Span], from: Millis, to: Millis) -> Vec<EdgeStats> {
    let by_id = index(spans);
    let mut per: BTreeMap<(&str, &str), (usize, Vec<u64>)> = BTreeMap::new();
    for s in spans.iter().filter(|s| s.start >= from && s.start < to) {
        let Some(p) = s.parent.as_deref().and_then(|p| by_id.get(&(s.trace_id.as_str(), p))) else { continue };
        if p.service == s.service {
            continue;
        }
        let e = per.entry((p.service.as_str(), s.service.as_str())).or_default();
        e.0 += usize::from(s.error);
        e.1.push(s.duration_us);
    }
    per.into_iter()
        .map(|((f, t), (errors, mut d))| {
            d.sort_unstable();
            EdgeStats {
                from: f.to_string(),
                to: t.to_string(),
                calls: d.len(),
                errors,
                p50_us: quantile(&d, 0.5),
                p90_us: quantile(&d, 0.9),
            }
        })
        .collect()
}

/// The `q` quantile of sorted values (0 when empty).
pub fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Each span's own time in microseconds: its duration less the time its children took (never
/// below zero), in the order of `spans`. A slow service shows here; its callers, which only
/// wait for it, do not.
pub fn exclusive(spans: &[Span]) -> Vec<u64> {
    let mut children: HashMap<(&str, &str), u64> = HashMap::new();
    for s in spans {
        if let Some(p) = s.parent.as_deref() {
            *children.entry((s.trace_id.as_str(), p)).or_default() += s.duration_us;
        }
    }
    spans
        .iter()
        .map(|s| {
            s.duration_us.saturating_sub(children.get(&(s.trace_id.as_str(), s.span_id.as_str())).copied().unwrap_or(0))
        })
        .collect()
}

#[cfg(test)]
pub(crate) fn span(trace: &str, id: &str, parent: Option<&str>, service: &str, start: Millis, us: u64) -> Span {
    Span {
        trace_id: trace.into(),
        span_id: id.into(),
        parent: parent.map(str::to_string),
        service: service.into(),
        operation: "GET /".into(),
        start,
        duration_us: us,
        error: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edges_stats_and_own_time() {
        let mut spans = vec![
            span("t1", "a", None, "frontend", 0, 900),
            span("t1", "b", Some("a"), "frontend", 0, 850),
            span("t1", "c", Some("b"), "checkout", 1, 800),
            span("t1", "d", Some("c"), "payments", 2, 700),
            span("t2", "a", None, "frontend", 10, 100),
            span("t2", "c", Some("a"), "checkout", 11, 90),
        ];
        spans[3].error = true;
        assert_eq!(
            edges(&spans),
            [
                Edge { from: "checkout".into(), to: "payments".into() },
                Edge { from: "frontend".into(), to: "checkout".into() }
            ]
        );
        let st = edge_stats(&spans, 0, 100);
        assert_eq!((st[0].from.as_str(), st[0].calls, st[0].errors, st[0].p50_us), ("checkout", 1, 1, 700));
        assert_eq!((st[1].to.as_str(), st[1].calls, st[1].p90_us), ("checkout", 2, 800));
        assert_eq!(st[0].error_ratio(), 1.0);
        assert_eq!(exclusive(&spans), [50, 50, 100, 700, 10, 90], "a span's own time excludes its children's");
        assert!(edge_stats(&spans, 5, 100).iter().all(|e| e.calls <= 1), "only spans that started in the range");
    }
}
