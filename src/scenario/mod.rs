//! Scenarios: one YAML file describing a world — alerts, metric series (in promtool's expanding
//! notation), log lines, changes, pods, topology — plus what the world looks like after the
//! plan's action, and the outcome expected of medic. The recorded context backend serves it
//! (`scenario::recorded`); `medic test` and `medic replay` run it.
//!
//! Times are relative to `now` (`-30m`, `+2m`, `0`) or absolute RFC 3339. `nezha: DIR` takes
//! the metrics, logs, traces and pods from a directory of recorded Nezha-format data instead
//! (`scenario::nezha`), for any window of it.
//!
//! ```yaml
//! name: checkout pool leak after a deploy
//! now: 2026-11-21T15:00:00Z
//! alerts:
//!   - labels: {alertname: HighErrorRate, service: checkout, severity: critical}
//!     starts: -20m
//! series:
//!   - query: error_ratio
//!     labels: {service: checkout}
//!     start: -60m
//!     interval: 1m
//!     values: "0.004x30 0.004+0.01x30"
//! changes:
//!   - {kind: deploy, service: checkout, summary: Deploy v2.14.0, version: v2.14.0, author: alice, at: -32m}
//! after:
//!   series:
//!     - {query: error_ratio, labels: {service: checkout}, start: 0, interval: 1m, values: "0.004x30"}
//! expect:
//!   runbook: rollback-bad-deploy
//!   plan_steps: [roll-back]
//!   verification: passed
//! ```

pub mod cluster;
pub mod nezha;
pub mod recorded;
pub mod run;
pub mod series;

use crate::alert::{Alert, AlertStatus, Change, ChangeKind, Labels, Source};
use crate::context::{Edge, LogLine, Pod, Series};
use crate::time::Millis;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The moment the scenario is evaluated at (RFC 3339).
    pub now: String,
    pub alerts: Vec<ScenarioAlert>,
    #[serde(default)]
    pub series: Vec<ScenarioSeries>,
    #[serde(default)]
    pub logs: Vec<ScenarioLog>,
    /// Traces through a call chain, one every `every` (see [`ScenarioTraces`]).
    #[serde(default)]
    pub traces: Vec<ScenarioTraces>,
    #[serde(default)]
    pub changes: Vec<ScenarioChange>,
    #[serde(default)]
    pub pods: Vec<Pod>,
    #[serde(default)]
    pub topology: Vec<Edge>,
    /// A directory of Nezha-format data (per-pod metric CSVs, log and span CSVs by minute;
    /// see [`nezha`]), relative to the scenario file: it serves the metrics (its golden
    /// signals), logs, traces and pods, for any window, in place of `series`, `logs`, `traces`
    /// and `pods`.
    #[serde(default)]
    pub nezha: Option<PathBuf>,
    /// The workloads a plan's Kubernetes actions touch, served by a local API server
    /// ([`cluster::LocalCluster`]) with `pods` as their pods.
    #[serde(default)]
    pub kubernetes: Vec<cluster::Workload>,
    /// What medic may change on that cluster.
    #[serde(default)]
    pub policy: cluster::Policy,
    /// The world once the plan's first action has run.
    #[serde(default)]
    pub after: Option<After>,
    /// The runbook's record and the autonomy policy, to test when its plan runs by itself.
    #[serde(default)]
    pub autonomy: Option<Autonomy>,
    #[serde(default)]
    pub expect: Option<Expect>,
}

/// `autonomy:` — what the plan's runbook has done before and the policy it is judged by.
///
/// ```yaml
/// autonomy:
///   history: [verified, verified, failed, verified, verified, verified, verified, verified]
///   environments: {staging: {}, production: {runbooks: [rollback-bad-deploy]}}
/// expect:
///   autonomy: auto            # or approve
///   autonomy_reason: "5 verified runs"
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Autonomy {
    /// The runbook's past executions, oldest first: `verified`, `failed` (a failed post-check,
    /// a rollback, an interruption), `stopped` (a person stopped or rejected an automatic run),
    /// `granted` or `revoked` (by a person).
    #[serde(default)]
    pub history: Vec<String>,
    /// The `autonomy` config section (default: medic's defaults, which allow no environment).
    #[serde(default)]
    pub policy: crate::autonomy::Config,
    /// Automation is paused (the kill switch).
    #[serde(default)]
    pub paused: bool,
}

impl Autonomy {
    /// The runbook's record after its history; `may_auto`: its ceiling and tier allow `auto`.
    pub fn record(&self, runbook: &str, may_auto: bool) -> Result<crate::autonomy::Record, String> {
        use crate::autonomy::Event;
        let mut r = crate::autonomy::Record { runbook: runbook.into(), ..Default::default() };
        for (i, h) in self.history.iter().enumerate() {
            let incident = i as i64 + 1;
            let by = "scenario:person".to_string();
            let event = match h.as_str() {
                "verified" => Event::Verified { incident, approvers: vec![by] },
                "failed" => Event::Failed { incident, reason: "failed".into() },
                "stopped" => Event::Stopped { incident, by },
                "granted" => Event::Granted { by },
                "revoked" => Event::Revoked { by },
                other => {
                    return Err(format!(
                        "autonomy.history[{i}]: expected verified, failed, stopped, granted or revoked, got {other:?}"
                    ));
                }
            };
            crate::autonomy::learn(&mut r, &event, self.policy.grant_after, may_auto);
        }
        Ok(r)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioAlert {
    pub labels: Labels,
    #[serde(default)]
    pub annotations: Labels,
    pub starts: String,
    #[serde(default)]
    pub fingerprint: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioSeries {
    /// The context query this series answers (a runbook's `context[].name`).
    pub query: String,
    #[serde(default)]
    pub labels: Labels,
    /// Time of the first value.
    pub start: String,
    #[serde(default = "minute", with = "humantime_serde")]
    pub interval: Duration,
    /// promtool expanding notation, e.g. `0.31x30 0.31+0.02x30`.
    pub values: String,
    /// The series' unit (`ratio`, `seconds`, `bytes`, `number`): a series with a `service`
    /// label and a unit is a golden signal, read for every service of the incident.
    #[serde(default)]
    pub unit: Option<crate::runbook::Unit>,
}

/// `traces:` — one trace every `every` from `start` through `chain` (caller first), each
/// service's own time per trace in milliseconds and its failures (1) in promtool notation:
///
/// ```yaml
/// traces:
///   - chain: [frontend, checkout, payments]
///     start: -40m
///     every: 30s
///     own_ms: {frontend: "3x79", payments: "2x39 400x40"}   # others: 1 ms
///     errors: {payments: "0x59 1x20"}
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioTraces {
    pub chain: Vec<String>,
    pub start: String,
    #[serde(default = "thirty_seconds", with = "humantime_serde")]
    pub every: Duration,
    pub own_ms: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub errors: std::collections::BTreeMap<String, String>,
}

impl ScenarioTraces {
    /// The spans, trace ids prefixed with `id`.
    fn spans(&self, id: usize, now: Millis) -> Result<Vec<crate::context::Span>, String> {
        let at = format!("traces[{id}]");
        if self.chain.is_empty() {
            return Err(format!("{at}.chain: expected at least one service"));
        }
        let start = resolve_time(&self.start, now).map_err(|e| format!("{at}.start: {e}"))?;
        let expand = |what: &str, m: &std::collections::BTreeMap<String, String>| {
            m.iter()
                .map(|(svc, v)| {
                    if !self.chain.contains(svc) {
                        return Err(format!("{at}.{what}.{svc}: not in the chain"));
                    }
                    let values = series::expand(v).map_err(|e| format!("{at}.{what}.{svc}: {e}"))?;
                    Ok((svc.clone(), values.into_iter().map(|x| x.unwrap_or(0.0)).collect::<Vec<f64>>()))
                })
                .collect::<Result<std::collections::BTreeMap<String, Vec<f64>>, String>>()
        };
        let (own, errors) = (expand("own_ms", &self.own_ms)?, expand("errors", &self.errors)?);
        let n = own.values().map(Vec::len).max().ok_or(format!("{at}.own_ms: expected at least one service"))?;
        let pick = |v: Option<&Vec<f64>>, k: usize, default: f64| {
            v.and_then(|v| v.get(k).or(v.last())).copied().unwrap_or(default)
        };
        let mut out = Vec::new();
        for k in 0..n {
            let t = start + k as Millis * self.every.as_millis() as Millis;
            let trace = format!("{id}-{k}");
            // Nested calls: each span lasts its own time plus its callee's.
            let mut total = 0u64;
            let mut spans: Vec<crate::context::Span> = Vec::new();
            for (hop, svc) in self.chain.iter().enumerate().rev() {
                total += (pick(own.get(svc), k, 1.0) * 1000.0).max(0.0) as u64;
                spans.push(crate::context::Span {
                    trace_id: trace.clone(),
                    span_id: format!("s{hop}"),
                    parent: (hop > 0).then(|| format!("s{}", hop - 1)),
                    service: svc.clone(),
                    operation: format!("GET /{svc}"),
                    start: t + hop as Millis,
                    duration_us: total,
                    error: pick(errors.get(svc), k, 0.0) != 0.0,
                });
            }
            out.extend(spans.into_iter().rev());
        }
        Ok(out)
    }
}

fn minute() -> Duration {
    Duration::from_secs(60)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioLog {
    pub service: String,
    pub at: String,
    pub line: String,
    /// The line repeats this many times...
    #[serde(default = "once")]
    pub repeat: u32,
    /// ...this far apart.
    #[serde(default = "thirty_seconds", with = "humantime_serde")]
    pub every: Duration,
}

fn once() -> u32 {
    1
}
fn thirty_seconds() -> Duration {
    Duration::from_secs(30)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioChange {
    pub kind: ChangeKind,
    pub service: String,
    pub summary: String,
    pub at: String,
    #[serde(default)]
    pub author: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct After {
    /// Series that replace those with the same query and labels from the action on; their
    /// `start` is relative to the moment of the action.
    #[serde(default)]
    pub series: Vec<ScenarioSeries>,
    /// Pods as they are after the action.
    #[serde(default)]
    pub pods: Option<Vec<Pod>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The runbook of the top hypothesis, or `none` when no runbook should match.
    #[serde(default)]
    pub runbook: Option<String>,
    #[serde(default)]
    pub plan_steps: Option<Vec<String>>,
    /// The service the top hypothesis blames (topology ranking).
    #[serde(default)]
    pub suspect: Option<String>,
    /// `passed` or `failed` (the post-check, and so whether the plan is rolled back).
    #[serde(default)]
    pub verification: Option<String>,
    /// Text of the reason a step of the plan is refused when it is proposed (a Kubernetes
    /// precondition: a paused Deployment, a namespace medic may not change, a scale limit…).
    #[serde(default)]
    pub refused: Option<String>,
    /// `auto` (the plan runs by itself) or `approve` (it waits for a person).
    #[serde(default)]
    pub autonomy: Option<String>,
    /// Text of the reason shown with the plan's autonomy.
    #[serde(default)]
    pub autonomy_reason: Option<String>,
}

/// A scenario with its times resolved and its series expanded: the world as data.
#[derive(Debug, Clone)]
pub struct World {
    pub name: String,
    pub now: Millis,
    pub alerts: Vec<Alert>,
    pub series: Vec<Series>,
    /// The golden signals the series stand for (series with a unit and a service).
    pub golden: Vec<crate::context::Golden>,
    pub logs: Vec<LogLine>,
    pub spans: Vec<crate::context::Span>,
    pub changes: Vec<Change>,
    pub pods: Vec<Pod>,
    pub topology: Vec<Edge>,
    /// Recorded data that serves metrics, logs, traces and pods (`nezha:`), resolved.
    pub nezha: Option<PathBuf>,
    pub kubernetes: Vec<cluster::Workload>,
    pub policy: cluster::Policy,
    /// Series of the world after the action, with times relative to the action (0 = the action).
    pub after_series: Vec<Series>,
    pub after_pods: Option<Vec<Pod>>,
    pub autonomy: Autonomy,
    pub expect: Expect,
}

/// `-30m`, `+2m`, `0` (relative to `now`) or an RFC 3339 time.
pub fn resolve_time(text: &str, now: Millis) -> Result<Millis, String> {
    let t = text.trim();
    if t == "0" {
        return Ok(now);
    }
    let (sign, rest) = match t.as_bytes().first() {
        Some(b'-') => (-1, &t[1..]),
        Some(b'+') => (1, &t[1..]),
        _ => {
            return chrono::DateTime::parse_from_rfc3339(t)
                .map(|d| d.timestamp_millis())
                .map_err(|_| format!("{text:?}: expected -DURATION, +DURATION, 0 or an RFC 3339 time"));
        }
    };
    let d = humantime::parse_duration(rest).map_err(|e| format!("{text:?}: {e}"))?;
    Ok(now + sign * d.as_millis() as Millis)
}

fn expand_series(s: &ScenarioSeries, base: Millis, at: &str) -> Result<Series, String> {
    let start = resolve_time(&s.start, base).map_err(|e| format!("{at}.start: {e}"))?;
    let values = series::expand(&s.values).map_err(|e| format!("{at}.values: {e}"))?;
    if s.interval.is_zero() {
        return Err(format!("{at}.interval: expected more than 0"));
    }
    let step = s.interval.as_millis() as Millis;
    let points =
        values.into_iter().enumerate().filter_map(|(i, v)| v.map(|v| (start + i as Millis * step, v))).collect();
    Ok(Series { query: s.query.clone(), labels: s.labels.clone(), points })
}

impl Scenario {
    pub fn load(path: &Path) -> Result<Scenario, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        let mut s: Scenario = serde_norway::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if let (Some(dir), Some(base)) = (&mut s.nezha, path.parent()) {
            *dir = base.join(&*dir);
        }
        Ok(s)
    }

    /// Resolves times and expands series; errors name the field.
    pub fn world(&self) -> Result<World, String> {
        let now = resolve_time(&self.now, 0).map_err(|e| format!("now: {e}"))?;
        let mut alerts = Vec::new();
        for (i, a) in self.alerts.iter().enumerate() {
            let starts_at = resolve_time(&a.starts, now).map_err(|e| format!("alerts[{i}].starts: {e}"))?;
            let alert = Alert {
                source: Source::Alertmanager,
                fingerprint: a.fingerprint.clone().unwrap_or_else(|| crate::alert::fingerprint_of(&a.labels)),
                status: AlertStatus::Firing,
                labels: a.labels.clone(),
                annotations: a.annotations.clone(),
                starts_at,
                ends_at: None,
                links: Labels::new(),
            };
            alert.validate(&format!("alerts[{i}]")).map_err(|e| e.to_string())?;
            alerts.push(alert);
        }
        if alerts.is_empty() {
            return Err("alerts: expected at least one alert".into());
        }
        let series = self
            .series
            .iter()
            .enumerate()
            .map(|(i, s)| expand_series(s, now, &format!("series[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let mut logs = Vec::new();
        for (i, l) in self.logs.iter().enumerate() {
            let at = resolve_time(&l.at, now).map_err(|e| format!("logs[{i}].at: {e}"))?;
            let every = l.every.as_millis() as Millis;
            logs.extend((0..l.repeat).map(|k| LogLine {
                at: at + k as Millis * every,
                service: l.service.clone(),
                line: l.line.clone(),
            }));
        }
        logs.sort_by_key(|l| l.at);
        let mut spans = Vec::new();
        for (i, t) in self.traces.iter().enumerate() {
            spans.extend(t.spans(i, now)?);
        }
        let mut golden: Vec<crate::context::Golden> = Vec::new();
        for s in self.series.iter().filter(|s| s.labels.contains_key("service")) {
            if let Some(unit) = s.unit
                && !golden.iter().any(|g| g.name == s.query)
            {
                golden.push(crate::context::Golden {
                    name: s.query.clone(),
                    promql: s.query.clone(),
                    unit,
                    callers_view_of: None,
                });
            }
        }
        if self.nezha.is_some() {
            golden.extend(
                nezha::golden().into_iter().filter(|g| !golden.iter().any(|h| h.name == g.name)).collect::<Vec<_>>(),
            );
        }
        let mut changes = Vec::new();
        for (i, c) in self.changes.iter().enumerate() {
            let at = resolve_time(&c.at, now).map_err(|e| format!("changes[{i}].at: {e}"))?;
            changes.push(Change {
                id: format!("scenario-{i}"),
                kind: c.kind,
                service: c.service.clone(),
                summary: c.summary.clone(),
                author: c.author.clone(),
                version: c.version.clone(),
                url: None,
                labels: Labels::new(),
                at,
            });
        }
        let after = self.after.clone().unwrap_or_default();
        let after_series = after
            .series
            .iter()
            .enumerate()
            .map(|(i, s)| expand_series(s, 0, &format!("after.series[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let expect = self.expect.clone().unwrap_or_default();
        if let Some(v) = &expect.verification
            && v != "passed"
            && v != "failed"
        {
            return Err(format!("expect.verification: expected passed or failed, got {v:?}"));
        }
        if let Some(v) = &expect.autonomy
            && v != "auto"
            && v != "approve"
        {
            return Err(format!("expect.autonomy: expected auto or approve, got {v:?}"));
        }
        let autonomy = self.autonomy.clone().unwrap_or_default();
        autonomy.record("", false)?;
        Ok(World {
            name: self.name.clone(),
            now,
            alerts,
            series,
            golden,
            logs,
            spans,
            changes,
            pods: self.pods.clone(),
            topology: self.topology.clone(),
            nezha: self.nezha.clone(),
            kubernetes: self.kubernetes.clone(),
            policy: self.policy.clone(),
            after_series,
            after_pods: after.pods,
            autonomy,
            expect,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2026-11-21T15:00:00Z";

    #[test]
    fn times_resolve_relative_to_now() {
        let now = resolve_time(NOW, 0).unwrap();
        assert_eq!(resolve_time("-30m", now).unwrap(), now - 30 * 60_000);
        assert_eq!(resolve_time("+1h 30m", now).unwrap(), now + 90 * 60_000);
        assert_eq!(resolve_time("0", now).unwrap(), now);
        assert!(resolve_time("yesterday", now).unwrap_err().contains("expected -DURATION"));
    }

    #[test]
    fn a_world_from_yaml() {
        let yaml = format!(
            "name: t\nnow: {NOW}\nalerts:\n  - labels: {{alertname: A, service: s}}\n    starts: -5m\n\
             series:\n  - {{query: q, labels: {{service: s}}, start: -3m, interval: 1m, values: '1 _ 3'}}\n\
             logs:\n  - {{service: s, at: -2m, line: boom, repeat: 3, every: 10s}}\n\
             after:\n  series:\n    - {{query: q, start: 0, values: '0x2'}}\n"
        );
        let w: Scenario = serde_norway::from_str(&yaml).unwrap();
        let w = w.world().unwrap();
        let now = resolve_time(NOW, 0).unwrap();
        assert_eq!(w.alerts[0].starts_at, now - 300_000);
        assert_eq!(w.series[0].points, vec![(now - 180_000, 1.0), (now - 60_000, 3.0)]);
        assert_eq!(w.logs.len(), 3);
        assert_eq!(w.logs[2].at, now - 120_000 + 20_000);
        assert_eq!(w.after_series[0].points.len(), 3);
    }

    #[test]
    fn errors_name_the_field() {
        let yaml = format!(
            "name: t\nnow: {NOW}\nalerts:\n  - labels: {{alertname: A}}\n    starts: -5m\nseries:\n  - {{query: q, start: -1m, values: '1+x'}}\n"
        );
        let s: Scenario = serde_norway::from_str(&yaml).unwrap();
        let e = s.world().unwrap_err();
        assert!(e.starts_with("series[0].values:"), "{e}");
    }
}
