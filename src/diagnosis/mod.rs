//! Diagnosis v1: from an incident's alerts, its context and the runbooks to ranked hypotheses.
//! Pure code: no IO, no clock; everything it says is backed by an evidence item a person can
//! check, and every point of confidence has a written reason.
//!
//! Methods, all explainable:
//! - **onset detection** on each series: the split that best separates a stable baseline from
//!   what follows (a mean shift), walked back to where the series first left its baseline band;
//! - **changes** of the incident's service that precede the onset;
//! - **log templates**: lines grouped by an online template miner ([`logs`], Drain-style, one
//!   configuration for every source) and counted; a template first seen after the change is
//!   "new since the change";
//! - **pods** in bad states;
//! - **runbook matching**: label matchers plus every evidence predicate of the runbook.
//!
//! When no runbook matches, the one hypothesis is "no runbook matches" (tier 5, human-led),
//! still with all the evidence.

pub mod anomaly;
pub mod logs;

use crate::alert::{Alert, Change, ChangeKind};
use crate::context::{Context, LogLine, Series};
use crate::runbook::{Runbook, Unit};
use crate::time::{Millis, from_millis};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EvidenceKind {
    Metric,
    Change,
    Log,
    Pod,
    Alert,
    /// A silence that covers one of the incident's services.
    Silence,
    /// A source that could not answer: what the diagnosis could not see.
    Unavailable,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    pub kind: EvidenceKind,
    /// One line for people: "error_ratio of checkout rose from 0.4% to 12.3% …".
    pub text: String,
    pub at: Option<Millis>,
    /// The series as a text sparkline (`▁▁▂▅▇`), for metric evidence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spark: Option<String>,
}

/// `points` as a text sparkline of at most `width` characters (each the mean of its bucket).
pub fn sparkline(points: &[(Millis, f64)], width: usize) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    if points.is_empty() || width == 0 {
        return String::new();
    }
    let per = points.len().div_ceil(width);
    let means: Vec<f64> = points.chunks(per).map(|c| c.iter().map(|p| p.1).sum::<f64>() / c.len() as f64).collect();
    let (lo, hi) = means.iter().fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    means
        .iter()
        .map(|v| if hi > lo { BARS[(((v - lo) / (hi - lo)) * 7.0).round() as usize] } else { BARS[0] })
        .collect()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hypothesis {
    pub statement: String,
    /// 0–1.
    pub confidence: f64,
    pub runbook: Option<String>,
    pub tier: u8,
    pub evidence: Vec<Evidence>,
    /// What the confidence is made of.
    pub reasons: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Diagnosis {
    pub service: Option<String>,
    pub onset: Millis,
    /// Ranked, best first; never empty.
    pub hypotheses: Vec<Hypothesis>,
    /// Sources that could not answer.
    pub unavailable: Vec<String>,
}

impl Diagnosis {
    pub fn top(&self) -> &Hypothesis {
        &self.hypotheses[0]
    }
}

/// Where a series left its baseline, and how far it went.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Onset {
    pub at: Millis,
    pub before: f64,
    pub peak: f64,
    pub peak_at: Millis,
}

/// Finds the onset of the largest sustained shift in `points`, if there is a clear one.
pub fn onset(points: &[(Millis, f64)]) -> Option<Onset> {
    let n = points.len();
    if n < 8 {
        return None;
    }
    let v: Vec<f64> = points.iter().map(|p| p.1).collect();
    let mut prefix = vec![0.0; n + 1];
    for i in 0..n {
        prefix[i + 1] = prefix[i] + v[i];
    }
    let mean = |a: usize, b: usize| (prefix[b] - prefix[a]) / (b - a) as f64;
    // The split maximising the weighted mean difference (a t-statistic without the variance).
    let (k, _) = (3..=n - 3)
        .map(|k| (k, (mean(k, n) - mean(0, k)).abs() * ((k * (n - k)) as f64 / n as f64).sqrt()))
        .max_by(|a, b| a.1.total_cmp(&b.1))?;
    // The baseline from the first half of the segment before the split (robust: median and
    // MAD), so the first part of a slow rise does not widen the band it is measured against.
    let head = &v[..(k / 2).max(3)];
    let before = median(head);
    let sd = 1.4826 * median(&head.iter().map(|x| (x - before).abs()).collect::<Vec<_>>());
    let after = mean(k, n);
    let band = (3.0 * sd).max(0.05 * before.abs()).max(1e-9);
    if (after - before).abs() < (4.0 * sd).max(0.10 * before.abs()).max(1e-9) {
        return None;
    }
    let up = after > before;
    let outside = |x: f64| if up { x > before + band } else { x < before - band };
    // Walk back from the split to where the series first left the band for good.
    let mut start = k;
    while start > 0 && outside(v[start - 1]) {
        start -= 1;
    }
    while start < n && !outside(v[start]) {
        start += 1;
    }
    if start >= n {
        return None;
    }
    let (peak_i, peak) = v[start..]
        .iter()
        .enumerate()
        .map(|(i, x)| (start + i, *x))
        .max_by(|a, b| if up { a.1.total_cmp(&b.1) } else { b.1.total_cmp(&a.1) })?;
    Some(Onset { at: points[start].0, before, peak, peak_at: points[peak_i].0 })
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len().is_multiple_of(2) { (v[m - 1] + v[m]) / 2.0 } else { v[m] }
}

fn hhmm(t: Millis) -> String {
    from_millis(t).format("%H:%M UTC").to_string()
}

fn minutes(ms: Millis) -> String {
    let m = (ms as f64 / 60_000.0).round() as i64;
    if m.abs() >= 120 { format!("{} h", m / 60) } else { format!("{m} min") }
}

pub fn format_value(x: f64, unit: Unit) -> String {
    match unit {
        Unit::Ratio => format!("{:.1}%", x * 100.0),
        Unit::Bytes => {
            let mib = x / (1024.0 * 1024.0);
            if mib >= 1024.0 { format!("{:.2} GiB", mib / 1024.0) } else { format!("{mib:.0} MiB") }
        }
        Unit::Seconds if x < 1.0 => format!("{:.0} ms", x * 1000.0),
        Unit::Seconds => format!("{x:.2} s"),
        Unit::Number if x.fract() == 0.0 && x.abs() < 1e15 => format!("{x:.0}"),
        Unit::Number if x.abs() >= 100.0 => format!("{x:.0}"),
        // Three significant digits, without trailing zeros: 10.6, 0.0123.
        Unit::Number => {
            let decimals = (2 - x.abs().log10().floor() as i32).clamp(0, 6) as usize;
            let s = format!("{x:.decimals$}");
            if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s }
        }
    }
}

fn series_name(s: &Series) -> String {
    let labels: Vec<String> =
        s.labels.iter().filter(|(k, _)| *k != "service" && *k != "__name__").map(|(k, v)| format!("{k}={v}")).collect();
    let of = s.labels.get("service").map(|svc| format!(" of {svc}")).unwrap_or_default();
    if labels.is_empty() { format!("{}{of}", s.query) } else { format!("{}{of} ({})", s.query, labels.join(", ")) }
}

struct LogPattern {
    template: String,
    count: usize,
    first_at: Millis,
    example: String,
}

/// The lines grouped by the template miner ([`logs::Miner`]), most frequent first.
fn log_patterns(lines: &[LogLine]) -> Vec<LogPattern> {
    let mut miner = logs::Miner::new(logs::Config::default());
    let mut by: BTreeMap<usize, LogPattern> = BTreeMap::new();
    for l in lines {
        let g = miner.add(&l.line);
        by.entry(g)
            .and_modify(|p| {
                p.count += 1;
                p.first_at = p.first_at.min(l.at);
            })
            .or_insert(LogPattern { template: String::new(), count: 1, first_at: l.at, example: l.line.clone() });
    }
    let mut v: Vec<LogPattern> = by
        .into_iter()
        .map(|(g, mut p)| {
            p.template = miner.template(g);
            p
        })
        .collect();
    v.sort_by(|a, b| b.count.cmp(&a.count).then(a.first_at.cmp(&b.first_at)));
    v
}

/// The values templates see: the incident's main labels, the correlated change, the runbook's
/// vars. (The plan builder uses the same context.)
pub fn template_context(
    alert: &Alert,
    incident: (i64, &str),
    change: Option<&Change>,
    vars: &BTreeMap<String, String>,
) -> Value {
    let label = |k: &str| alert.labels.get(k).cloned().unwrap_or_default();
    json!({
        "service": label("service"),
        "namespace": label("namespace"),
        "alertname": label("alertname"),
        "labels": alert.labels,
        "incident": {"id": incident.0, "title": incident.1},
        "change": change.map(|c| json!({
            "kind": c.kind.as_str(), "summary": c.summary, "version": c.version, "author": c.author,
            "at": hhmm(c.at),
        })),
        "vars": vars,
    })
}

/// Renders a statement for people; a missing value renders as empty (plans render strictly).
pub fn render(template: &str, ctx: &Value) -> String {
    let hb = crate::plan::handlebars(false);
    hb.render_template(template, ctx).unwrap_or_else(|e| format!("{template} (could not render: {})", e.reason()))
}

/// The input of one diagnosis.
pub struct Input<'a> {
    pub incident_id: i64,
    pub title: &'a str,
    /// The incident's firing alerts.
    pub alerts: &'a [Alert],
    pub context: &'a Context,
    pub runbooks: &'a [Runbook],
    /// The golden-signal queries gathered (for their units).
    pub golden: &'a [crate::context::Golden],
}

pub fn diagnose(input: &Input) -> Diagnosis {
    let alerts = input.alerts;
    let ctx = input.context;
    let service = alerts.iter().find_map(|a| a.labels.get("service").cloned());
    // The onset: the earliest metric onset, else the earliest alert start.
    let alert_start = alerts.iter().map(|a| a.starts_at).min().unwrap_or(ctx.end);
    let units: BTreeMap<&str, Unit> = input
        .golden
        .iter()
        .map(|g| (g.name.as_str(), g.unit))
        .chain(input.runbooks.iter().flat_map(|r| r.context.iter().map(|q| (q.name.as_str(), q.unit))))
        .collect();
    let onsets: Vec<(&Series, Onset)> = ctx.series.iter().filter_map(|s| onset(&s.points).map(|o| (s, o))).collect();
    let onset_at = onsets.iter().map(|(_, o)| o.at).min().unwrap_or(alert_start).min(alert_start);

    let mut metric_ev = Vec::new();
    for (s, o) in &onsets {
        let unit = units.get(s.query.as_str()).copied().unwrap_or_default();
        let verb = if o.peak > o.before { "rose" } else { "fell" };
        metric_ev.push((
            s.query.clone(),
            Evidence {
                kind: EvidenceKind::Metric,
                text: format!(
                    "{} {verb} from {} to {} over {}, starting {}",
                    series_name(s),
                    format_value(o.before, unit),
                    format_value(o.peak, unit),
                    minutes(o.peak_at - o.at),
                    hhmm(o.at)
                ),
                at: Some(o.at),
                spark: Some(sparkline(&s.points, 20)),
            },
        ));
    }
    let preceding: Vec<&Change> = ctx
        .changes
        .iter()
        .filter(|c| service.as_deref() == Some(c.service.as_str()) && c.at <= onset_at + 120_000)
        .collect();
    let latest_change = preceding.iter().max_by_key(|c| c.at).copied();
    let change_ev: Vec<Evidence> = preceding
        .iter()
        .map(|c| Evidence {
            kind: EvidenceKind::Change,
            text: format!(
                "{} of {}{}{} at {}, {} before the onset: {}",
                c.kind.as_str(),
                c.service,
                c.version.as_ref().map(|v| format!(" {v}")).unwrap_or_default(),
                c.author.as_ref().map(|a| format!(" by {a}")).unwrap_or_default(),
                hhmm(c.at),
                minutes(onset_at - c.at),
                c.summary
            ),
            at: Some(c.at),
            spark: None,
        })
        .collect();
    let service_logs: Vec<LogLine> =
        ctx.logs.iter().filter(|l| service.as_deref().is_none_or(|s| s == l.service)).cloned().collect();
    // Patterns worth a responder's eye: new since the change, or error-like; new ones first.
    let error_like =
        regex::Regex::new(r"(?i)error|exception|fail|panic|fatal|timeout|timed out|refused|exhausted|killed|denied")
            .expect("a valid regex");
    let is_new = |p: &LogPattern| latest_change.is_some_and(|c| p.first_at >= c.at);
    let mut patterns: Vec<LogPattern> =
        log_patterns(&service_logs).into_iter().filter(|p| is_new(p) || error_like.is_match(&p.template)).collect();
    patterns.sort_by_key(|p| !is_new(p));
    let log_ev: Vec<(bool, Evidence)> = patterns
        .iter()
        .take(3)
        .map(|p| {
            let new = is_new(p);
            let since = if new { "new since the change" } else { "seen" };
            (
                new,
                Evidence {
                    kind: EvidenceKind::Log,
                    text: format!(
                        "log pattern {since}, {}× from {}: \"{}\" (e.g. \"{}\")",
                        p.count,
                        hhmm(p.first_at),
                        p.template,
                        p.example
                    ),
                    at: Some(p.first_at),
                    spark: None,
                },
            )
        })
        .collect();
    let bad_pod = |p: &crate::context::Pod| p.reason.is_some() || p.restarts > 3 || p.phase != "Running";
    let pod_ev: Vec<Evidence> = ctx
        .pods
        .iter()
        .filter(|p| bad_pod(p))
        .map(|p| Evidence {
            kind: EvidenceKind::Pod,
            text: format!(
                "pod {} is {} ({} restarts){}{}",
                p.name,
                p.reason.clone().unwrap_or_else(|| p.phase.clone()),
                p.restarts,
                p.last_termination.as_ref().map(|t| format!("; last run ended {t}")).unwrap_or_default(),
                p.events.last().map(|e| format!("; latest event {e}")).unwrap_or_default(),
            ),
            at: None,
            spark: None,
        })
        .collect();
    let alert_ev: Vec<Evidence> = alerts
        .iter()
        .map(|a| Evidence {
            kind: EvidenceKind::Alert,
            text: format!(
                "alert {}{} firing since {}",
                a.name(),
                a.labels.get("severity").map(|s| format!(" ({s})")).unwrap_or_default(),
                hhmm(a.starts_at)
            ),
            at: Some(a.starts_at),
            spark: None,
        })
        .collect();
    // What else the stack says: other alerts on these services or their dependencies, silences,
    // and the sources that could not answer.
    let mut context_ev: Vec<Evidence> = ctx
        .other_alerts
        .iter()
        .filter(|o| !alerts.iter().any(|a| a.fingerprint == o.fingerprint))
        .map(|a| {
            let svc = a.labels.get("service").map(String::as_str).unwrap_or("?");
            let role = if ctx.dependencies.iter().any(|d| d == svc) { " (a dependency)" } else { "" };
            Evidence {
                kind: EvidenceKind::Alert,
                text: format!(
                    "also firing in Alertmanager: {} on {svc}{role} since {}{}{}",
                    a.name(),
                    hhmm(a.starts_at),
                    if a.state == "suppressed" { ", silenced or inhibited" } else { "" },
                    a.summary.as_ref().map(|s| format!(": {s}")).unwrap_or_default()
                ),
                at: Some(a.starts_at),
                spark: None,
            }
        })
        .collect();
    context_ev.extend(ctx.silences.iter().map(|s| Evidence {
        kind: EvidenceKind::Silence,
        text: format!(
            "silence {} by {} until {} ({}): {}",
            s.id.chars().take(8).collect::<String>(),
            s.created_by,
            hhmm(s.ends_at),
            s.matchers.join(", "),
            s.comment
        ),
        at: None,
        spark: None,
    }));
    context_ev.extend(ctx.unavailable.iter().map(|u| Evidence {
        kind: EvidenceKind::Unavailable,
        text: format!("unavailable: {u}"),
        at: None,
        spark: None,
    }));

    let mut hypotheses = Vec::new();
    for rb in input.runbooks {
        let Some(alert) = alerts.iter().find(|a| rb.matches_labels(std::iter::once(&a.labels))) else { continue };
        let mut reasons = vec![format!("alert {} matches {}", alert.name(), rb.id)];
        let mut confidence: f64 = 0.3;
        let mut evidence = Vec::new();
        let mut holds_all = true;
        for e in &rb.matches.evidence {
            let held = if let Some(d) = e.deploy_within {
                preceding.iter().any(|c| c.kind == ChangeKind::Deploy && onset_at - c.at <= d.as_millis() as Millis)
            } else if let Some(d) = e.change_within {
                preceding.iter().any(|c| onset_at - c.at <= d.as_millis() as Millis)
            } else if let Some(states) = &e.pod_state {
                ctx.pods.iter().any(|p| states.iter().any(|s| p.reason.as_deref() == Some(s) || &p.phase == s))
            } else if let Some(pat) = &e.log_pattern {
                let re = regex::Regex::new(pat).expect("checked when the runbook loaded");
                service_logs.iter().any(|l| l.at >= onset_at - 300_000 && re.is_match(&l.line))
            } else if let Some(m) = &e.metric {
                ctx.series
                    .iter()
                    .filter(|s| s.query == m.query)
                    .any(|s| s.points.last().is_some_and(|p| m.condition.holds(p.1)))
            } else {
                false
            };
            if !held {
                holds_all = false;
                break;
            }
            confidence += 0.15;
            reasons.push(format!("evidence predicate holds: {}", serde_json::to_string(e).unwrap_or_default()));
        }
        if !holds_all {
            continue;
        }
        let own_queries: Vec<&str> = rb.context.iter().map(|q| q.name.as_str()).collect();
        let own_metric: Vec<Evidence> =
            metric_ev.iter().filter(|(q, _)| own_queries.contains(&q.as_str())).map(|(_, e)| e.clone()).collect();
        if !own_metric.is_empty() {
            confidence += 0.15;
            reasons.push("its context queries show the onset".into());
        }
        if latest_change.is_some_and(|c| onset_at - c.at <= 3_600_000) {
            confidence += 0.1;
            reasons.push("a change of the service preceded the onset by less than an hour".into());
        }
        if log_ev.iter().any(|(new, _)| *new) {
            confidence += 0.05;
            reasons.push("a log pattern appeared after the change".into());
        }
        evidence.extend(own_metric);
        evidence.extend(change_ev.iter().cloned());
        evidence.extend(log_ev.iter().map(|(_, e)| e.clone()));
        evidence.extend(pod_ev.iter().cloned());
        evidence.extend(alert_ev.iter().cloned());
        evidence.extend(context_ev.iter().cloned());
        let tctx = template_context(alert, (input.incident_id, input.title), latest_change, &rb.vars);
        hypotheses.push(Hypothesis {
            statement: render(&rb.hypothesis, &tctx).trim().to_string(),
            confidence: confidence.min(0.95),
            runbook: Some(rb.id.clone()),
            tier: rb.tier,
            evidence,
            reasons,
        });
    }
    hypotheses.sort_by(|a, b| {
        b.confidence.total_cmp(&a.confidence).then(a.tier.cmp(&b.tier)).then(a.runbook.cmp(&b.runbook))
    });
    if hypotheses.is_empty() {
        let mut evidence: Vec<Evidence> = metric_ev.into_iter().map(|(_, e)| e).collect();
        evidence.extend(change_ev);
        evidence.extend(log_ev.into_iter().map(|(_, e)| e));
        evidence.extend(pod_ev);
        evidence.extend(alert_ev);
        evidence.extend(context_ev);
        hypotheses.push(Hypothesis {
            statement: "No runbook matches this incident; the evidence below is for a person to judge.".into(),
            confidence: 0.0,
            runbook: None,
            tier: 5,
            evidence,
            reasons: vec!["no runbook's matchers and evidence predicates all hold".into()],
        });
    }
    // Nothing leaves diagnosis unredacted: log lines and change summaries can carry secrets.
    for h in &mut hypotheses {
        h.statement = crate::redact::redact(&h.statement);
        for e in &mut h.evidence {
            e.text = crate::redact::redact(&e.text);
        }
    }
    Diagnosis { service, onset: onset_at, hypotheses, unavailable: ctx.unavailable.clone() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pts(values: &[f64]) -> Vec<(Millis, f64)> {
        values.iter().enumerate().map(|(i, v)| (i as Millis * 60_000, *v)).collect()
    }

    #[test]
    fn finds_a_step_and_the_start_of_a_ramp() {
        let mut step = vec![0.31; 30];
        step.extend(vec![0.97; 20]);
        let o = onset(&pts(&step)).unwrap();
        assert_eq!(o.at, 30 * 60_000);
        assert!((o.before - 0.31).abs() < 1e-9 && o.peak == 0.97, "{o:?}");

        let mut ramp = vec![0.31; 30];
        ramp.extend((1..=30).map(|i| 0.31 + 0.02 * i as f64));
        let o = onset(&pts(&ramp)).unwrap();
        assert!(o.at <= 32 * 60_000, "onset at the start of the rise, not its middle: {}", o.at / 60_000);
        assert_eq!(o.peak_at, 59 * 60_000);
    }

    #[test]
    fn no_onset_in_noise_or_flat_series() {
        assert_eq!(onset(&pts(&[1.0; 40])), None);
        let noise: Vec<f64> = (0..60).map(|i| 100.0 + ((i * 7919) % 13) as f64 - 6.0).collect();
        assert_eq!(onset(&pts(&noise)), None);
        assert_eq!(onset(&pts(&[1.0, 5.0, 9.0])), None, "too short to judge");
    }

    #[test]
    fn log_templates_mask_variable_parts() {
        assert_eq!(
            logs::tokens("ERROR pool exhausted: waited 5003ms for conn id=4f9a2b3c4d5e6f70").join(" "),
            "ERROR pool exhausted: waited <*> for conn <*>"
        );
    }

    #[test]
    fn evidence_is_redacted() {
        let labels: crate::alert::Labels =
            [("alertname".to_string(), "A".to_string()), ("service".to_string(), "s".to_string())].into();
        let alert = Alert {
            source: crate::alert::Source::Generic,
            fingerprint: "f".into(),
            status: crate::alert::AlertStatus::Firing,
            labels,
            annotations: Default::default(),
            starts_at: 600_000,
            ends_at: None,
            links: Default::default(),
        };
        let ctx = Context {
            logs: vec![LogLine {
                at: 700_000,
                service: "s".into(),
                line: "ERROR connect failed: postgres://app:hunter2@db/x".into(),
            }],
            ..Default::default()
        };
        let d = diagnose(&Input {
            incident_id: 1,
            title: "t",
            alerts: &[alert],
            context: &ctx,
            runbooks: &[],
            golden: &[],
        });
        let text: String = d.top().evidence.iter().map(|e| e.text.clone()).collect();
        assert!(text.contains("ERROR connect failed") && !text.contains("hunter2"), "{text}");
    }

    #[test]
    fn formats_units() {
        assert_eq!(format_value(0.123, Unit::Ratio), "12.3%");
        assert_eq!(format_value(0.25, Unit::Seconds), "250 ms");
        assert_eq!(format_value(3.0 * 1024.0 * 1024.0 * 1024.0, Unit::Bytes), "3.00 GiB");
        assert_eq!(format_value(42.0, Unit::Number), "42");
        assert_eq!(format_value(10.6, Unit::Number), "10.6");
        assert_eq!(format_value(0.012345, Unit::Number), "0.0123");
        assert_eq!(format_value(1234.56, Unit::Number), "1235");
    }
}
