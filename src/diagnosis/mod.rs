//! Diagnosis: from an incident's alerts, its context, the runbooks and similar past incidents to
//! ranked hypotheses. Pure code: no IO, no clock; everything it says is backed by an evidence
//! item a person can check, and every point of confidence has a written reason with its weight.
//!
//! Methods, all explainable:
//! - **anomalies and change points** on each series ([`anomaly::analyse`]): where it left its
//!   baseline, which way, how far in robust σ, and its shape (step, steady climb, spike), with a
//!   daily pattern taken out when the window shows one;
//! - **changes** of the service, and of everything downstream of it, that precede the onset;
//! - **log templates**: lines grouped by an online template miner ([`logs`], Drain-style, one
//!   configuration for every source) and counted; a template first seen after the change is
//!   "new since the change";
//! - **pods** in bad states;
//! - **topology ranking**: an anomalous service none of whose own dependencies is anomalous is a
//!   better root-cause candidate than its callers; the furthest downstream such service becomes a
//!   hypothesis of its own, and runbook hypotheses about its callers lose confidence;
//! - **runbook matching**: label matchers plus every evidence predicate of the runbook;
//! - **history**: past incidents of the same signature, and whether a runbook's plan resolved
//!   them.
//!
//! Confidence is log-odds: a prior plus a weight per reason, through the logistic function, and
//! never above 95%. When nothing matches, the one hypothesis is "no runbook matches" (tier 5,
//! human-led), still with all the evidence.

pub mod anomaly;
mod changes;
mod history;
pub mod logs;
pub mod novelty;
mod patterns;
pub mod rca;
mod signatures;
mod situation;
mod topology;

use crate::alert::{Alert, Change};
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
    /// A past incident like this one, and what resolved it.
    History,
    /// What the traces show: a service's own time, its errors, the calls into it.
    Trace,
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
    /// The service the hypothesis blames.
    #[serde(default)]
    pub service: Option<String>,
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
    /// Services ranked as the root cause across logs, metrics and traces (at most five).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub suspects: Vec<rca::Suspect>,
}

impl Diagnosis {
    pub fn top(&self) -> &Hypothesis {
        &self.hypotheses[0]
    }
}

fn hhmm(t: Millis) -> String {
    from_millis(t).format("%H:%M UTC").to_string()
}

fn minutes(ms: Millis) -> String {
    let m = (ms as f64 / 60_000.0).round() as i64;
    match m {
        0 => "under a minute".into(),
        m if m.abs() >= 120 => format!("{} h", m / 60),
        m => format!("{m} min"),
    }
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

/// Most lines of one kind a diagnosis carries (alerts of the incident, other firing alerts):
/// a storm of 10,000 alerts must not make every recorded diagnosis 10,000 lines long.
pub const EVIDENCE_CAP: usize = 10;

/// `items` with identical lines merged (`×N`), at most [`EVIDENCE_CAP`] of them (the earliest
/// first, as given), and one line counting the rest.
fn capped(items: impl Iterator<Item = Evidence>, what: &str) -> Vec<Evidence> {
    let mut kept: Vec<(Evidence, usize)> = Vec::new();
    let mut rest = 0usize;
    let mut kinds = None;
    for e in items {
        kinds.get_or_insert(e.kind);
        if let Some((_, n)) = kept.iter_mut().find(|(k, _)| k.text == e.text) {
            *n += 1;
        } else if kept.len() < EVIDENCE_CAP {
            kept.push((e, 1));
        } else {
            rest += 1;
        }
    }
    let mut out: Vec<Evidence> = kept
        .into_iter()
        .map(|(mut e, n)| {
            if n > 1 {
                e.text.push_str(&format!(" (×{n})"));
            }
            e
        })
        .collect();
    if let (Some(kind), true) = (kinds, rest > 0) {
        out.push(Evidence { kind, text: format!("… and {rest} more {what}"), at: None, spark: None });
    }
    out
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
    /// Resolved incidents like this one, newest first.
    pub history: &'a [Past],
}

/// A resolved incident of the same signature (group key), and what resolved it; the responder
/// reads these from the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Past {
    pub incident_id: i64,
    pub title: String,
    pub opened_at: Millis,
    pub resolved_at: Option<Millis>,
    /// The runbook whose plan ran, if one did.
    pub runbook: Option<String>,
    /// True when that plan finished and was verified.
    pub verified: bool,
    /// For people: "the plan of rollback-bad-deploy, approved by slack:U1, ran and was verified".
    pub outcome: String,
}

/// Log-odds with their reasons: every reason moves the confidence by a stated weight, so the
/// rank can be read off the reasons (weights in docs/src/runbooks.md, "How diagnosis ranks hypotheses").
struct Odds {
    logit: f64,
    reasons: Vec<String>,
}

impl Odds {
    fn new(prior: f64, why: impl AsRef<str>) -> Odds {
        Odds { logit: prior, reasons: vec![format!("{} (prior {:.0}%)", why.as_ref(), 100.0 * logistic(prior))] }
    }

    fn add(&mut self, weight: f64, why: impl AsRef<str>) {
        self.logit += weight;
        self.reasons.push(format!("{} ({weight:+.1})", why.as_ref()));
    }

    /// Never certain: medic's evidence is always partial.
    fn confidence(&self) -> f64 {
        logistic(self.logit).min(0.95)
    }
}

fn logistic(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// What the methods share, worked out once per diagnosis: the incident's service and onset,
/// the neighbourhood (topology and anomalies), the preceding changes, and the evidence lists
/// every hypothesis carries (log patterns, pods, alerts, what else the stack says).
pub(super) struct Facts<'a> {
    ctx: &'a Context,
    alerts: &'a [Alert],
    service: Option<String>,
    /// The earliest metric onset, else the earliest alert start.
    onset: Millis,
    hood: topology::Neighbourhood<'a>,
    /// The first root candidate, and that candidate when it is not the incident's service.
    origin: Option<String>,
    downstream_origin: Option<String>,
    /// Changes of the service and of everything downstream of it, before the onset.
    preceding: Vec<&'a Change>,
    own_changes: Vec<&'a Change>,
    latest_change: Option<&'a Change>,
    service_logs: Vec<LogLine>,
    log_ev: Vec<(bool, Evidence)>,
    pod_ev: Vec<Evidence>,
    alert_ev: Vec<Evidence>,
    other_alerts: Vec<&'a crate::context::ActiveAlert>,
    context_ev: Vec<Evidence>,
    /// Every service ranked as the root cause ([`rca`]).
    suspects: Vec<rca::Suspect>,
}

impl<'a> Facts<'a> {
    fn gather(input: &Input<'a>) -> Facts<'a> {
        let (alerts, ctx) = (input.alerts, input.context);
        let service = alerts.iter().find_map(|a| a.labels.get("service").cloned());
        let alert_start = alerts.iter().map(|a| a.starts_at).min().unwrap_or(ctx.end);
        let units: BTreeMap<&str, Unit> = input
            .golden
            .iter()
            .map(|g| (g.name.as_str(), g.unit))
            .chain(input.runbooks.iter().flat_map(|r| r.context.iter().map(|q| (q.name.as_str(), q.unit))))
            .collect();
        // A series without a service label is a runbook's own query about the incident's service.
        let main = service.as_deref();
        let hood = topology::neighbourhood(main, ctx, &units, |s| s.labels.get("service").cloned().or(service.clone()));
        let onset = hood.anomalies.iter().map(|a| a.finding.onset).min().unwrap_or(alert_start).min(alert_start);
        let origin = hood.origins().first().map(|o| o.to_string());
        let downstream_origin = origin.clone().filter(|o| Some(o.as_str()) != main);
        let preceding: Vec<&Change> =
            ctx.changes.iter().filter(|c| hood.depth.contains_key(&c.service) && c.at <= onset + 120_000).collect();
        let own_changes: Vec<&Change> =
            preceding.iter().copied().filter(|c| main == Some(c.service.as_str())).collect();
        let latest_change = own_changes.iter().max_by_key(|c| c.at).copied();
        let service_logs: Vec<LogLine> =
            ctx.logs.iter().filter(|l| main.is_none_or(|s| s == l.service)).cloned().collect();
        let log_ev = patterns::evidence(&service_logs, onset, latest_change, (ctx.start, ctx.end));
        let other_alerts: Vec<&crate::context::ActiveAlert> =
            ctx.other_alerts.iter().filter(|o| !alerts.iter().any(|a| a.fingerprint == o.fingerprint)).collect();
        // Across services: split where the incident starts, with past incidents' windows left
        // out of the baselines.
        let split = if ctx.split > ctx.start { ctx.split } else { alert_start };
        let quiet: Vec<(Millis, Millis)> =
            input.history.iter().map(|p| (p.opened_at, p.resolved_at.unwrap_or(p.opened_at + 3_600_000))).collect();
        let signals = rca::Signals {
            units: units.clone(),
            callers_view: input
                .golden
                .iter()
                .filter_map(|g| Some((g.name.as_str(), g.callers_view_of.as_deref()?)))
                .collect(),
        };
        let suspects = rca::rank(ctx, split, &quiet, &signals);
        Facts {
            suspects,
            ctx,
            alerts,
            pod_ev: situation::pods(ctx),
            alert_ev: situation::alerts(alerts),
            context_ev: situation::elsewhere(ctx, &other_alerts),
            other_alerts,
            service,
            onset,
            hood,
            origin,
            downstream_origin,
            preceding,
            own_changes,
            latest_change,
            service_logs,
            log_ev,
        }
    }

    fn main(&self) -> Option<&str> {
        self.service.as_deref()
    }

    /// The preceding changes as evidence.
    fn change_evidence(&self) -> Vec<Evidence> {
        self.preceding.iter().map(|c| changes::evidence(c, self.onset, self.main())).collect()
    }

    /// When no runbook matches: one human-led hypothesis with all the evidence.
    fn nobody_knows(&self, input: &Input) -> Hypothesis {
        let mut evidence: Vec<Evidence> = self.hood.anomalies.iter().map(|a| a.evidence.clone()).collect();
        evidence.extend(self.main().and_then(|m| self.hood.healthy_evidence(self.ctx, m)));
        evidence.extend(self.change_evidence());
        evidence.extend(self.log_ev.iter().map(|(_, e)| e.clone()));
        evidence.extend(self.pod_ev.iter().cloned());
        evidence.extend(input.history.iter().take(3).map(history::evidence));
        evidence.extend(self.alert_ev.iter().cloned());
        evidence.extend(self.context_ev.iter().cloned());
        let statement = match self.main() {
            Some(m) if self.origin.as_deref() == Some(m) && !self.hood.healthy_callees(m).is_empty() => format!(
                "No runbook matches this incident. The anomaly starts in {m} itself (its dependencies look healthy); the evidence below is for a person to judge."
            ),
            _ => "No runbook matches this incident; the evidence below is for a person to judge.".into(),
        };
        Hypothesis {
            statement,
            confidence: 0.0,
            runbook: None,
            service: self.service.clone(),
            tier: 5,
            evidence,
            reasons: vec!["no runbook's matchers and evidence predicates all hold".into()],
        }
    }
}

/// The diagnosis: each method adds its hypotheses over the shared facts; they are ranked by
/// confidence, then tier; "no runbook matches" when none does. Everything is redacted.
pub fn diagnose(input: &Input) -> Diagnosis {
    let facts = Facts::gather(input);
    let mut hypotheses = signatures::hypotheses(&facts, input);
    match rca::hypothesis(&facts) {
        Some(h) => hypotheses.push(h),
        None => hypotheses.extend(topology::downstream(&facts)),
    }
    hypotheses.sort_by(|a, b| {
        b.confidence.total_cmp(&a.confidence).then(a.tier.cmp(&b.tier)).then(a.runbook.cmp(&b.runbook))
    });
    if hypotheses.is_empty() {
        hypotheses.push(facts.nobody_knows(input));
    }
    // Nothing leaves diagnosis unredacted: log lines and change summaries can carry secrets.
    for h in &mut hypotheses {
        h.statement = crate::redact::redact(&h.statement);
        for e in &mut h.evidence {
            e.text = crate::redact::redact(&e.text);
        }
    }
    let suspects = facts.suspects.iter().take(5).cloned().collect();
    Diagnosis {
        service: facts.service,
        onset: facts.onset,
        hypotheses,
        unavailable: input.context.unavailable.clone(),
        suspects,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::ChangeKind;

    fn pts(values: &[f64]) -> Vec<(Millis, f64)> {
        values.iter().enumerate().map(|(i, v)| (i as Millis * 60_000, *v)).collect()
    }

    #[test]
    fn a_ramp_is_dated_from_where_it_starts_not_its_middle() {
        let mut ramp = vec![0.31; 30];
        ramp.extend((1..=30).map(|i| 0.31 + 0.02 * i as f64));
        let f = anomaly::analyse(&pts(&ramp)).unwrap();
        assert!(f.onset <= 32 * 60_000, "onset at the start of the rise, not its middle: {}", f.onset / 60_000);
        assert_eq!(f.peak_at, 59 * 60_000);
        assert_eq!(f.shape, anomaly::Shape::Ramp);
    }

    #[test]
    fn log_templates_mask_variable_parts() {
        assert_eq!(
            logs::tokens("ERROR pool exhausted: waited 5003ms for conn id=4f9a2b3c4d5e6f70").join(" "),
            "ERROR pool exhausted: waited <*> for conn id=<*>"
        );
    }

    fn alert(name: &str, service: &str, starts_at: Millis) -> Alert {
        let labels: crate::alert::Labels =
            [("alertname".to_string(), name.to_string()), ("service".to_string(), service.to_string())].into();
        Alert {
            source: crate::alert::Source::Generic,
            fingerprint: format!("{name}/{service}"),
            status: crate::alert::AlertStatus::Firing,
            labels,
            annotations: Default::default(),
            starts_at,
            ends_at: None,
            links: Default::default(),
        }
    }

    /// An error ratio with a little noise, stepping from 0.5% to `to` at minute `at` (never if
    /// `None`), over an hour at one point a minute.
    fn error_ratio(service: &str, at: Option<usize>, to: f64) -> Series {
        let points = (0..60)
            .map(|i| {
                let base = if at.is_some_and(|a| i >= a) { to } else { 0.005 };
                (i as Millis * 60_000, base + 0.0005 * ((i * 7) % 5) as f64)
            })
            .collect();
        Series { query: "error_ratio".into(), labels: [("service".to_string(), service.to_string())].into(), points }
    }

    fn edge(from: &str, to: &str) -> crate::context::Edge {
        crate::context::Edge { from: from.into(), to: to.into() }
    }

    #[test]
    fn in_a_cascade_the_leaf_with_healthy_dependencies_is_the_suspect() {
        // frontend → checkout → payments → ledger. payments breaks at minute 30, checkout at 31,
        // frontend at 32; ledger stays healthy. The alert fires on frontend.
        let ctx = Context {
            end: 60 * 60_000,
            series: vec![
                error_ratio("frontend", Some(32), 0.20),
                error_ratio("checkout", Some(31), 0.25),
                error_ratio("payments", Some(30), 0.40),
                error_ratio("ledger", None, 0.0),
            ],
            topology: vec![edge("frontend", "checkout"), edge("checkout", "payments"), edge("payments", "ledger")],
            changes: vec![Change {
                id: "d1".into(),
                kind: ChangeKind::Deploy,
                service: "payments".into(),
                summary: "Deploy v7.1.0".into(),
                version: Some("v7.1.0".into()),
                author: Some("erin".into()),
                url: None,
                labels: Default::default(),
                at: 24 * 60_000,
            }],
            ..Default::default()
        };
        let alerts = [alert("HighErrorRate", "frontend", 34 * 60_000)];
        let d = diagnose(&Input {
            incident_id: 1,
            title: "t",
            alerts: &alerts,
            context: &ctx,
            runbooks: &[],
            golden: &[],
            history: &[],
        });
        let top = d.top();
        assert_eq!(top.service.as_deref(), Some("payments"), "{top:#?}");
        assert!(top.statement.contains("frontend → checkout → payments"), "{}", top.statement);
        assert!(top.confidence > 0.8, "deploy before its onset, first to change: {top:#?}");
        let text: Vec<&str> = top.evidence.iter().map(|e| e.text.as_str()).collect();
        assert!(text[0].starts_with("error_ratio of payments rose from 0.006 to 0.402 at 00:30 UTC"), "{text:#?}");
        assert_eq!(text[1], "the dependencies of payments look healthy: no series of ledger (1) left its baseline");
        assert!(text.iter().any(|t| t.starts_with("deploy of payments (downstream) v7.1.0 by erin")), "{text:#?}");
        assert_eq!(d.onset, 30 * 60_000);

        // If the leaf is healthy, the service itself is where the anomaly starts.
        let mut healthy = ctx.clone();
        healthy.series[2] = error_ratio("payments", None, 0.0);
        healthy.series[1] = error_ratio("checkout", None, 0.0);
        let d = diagnose(&Input {
            incident_id: 1,
            title: "t",
            alerts: &alerts,
            context: &healthy,
            runbooks: &[],
            golden: &[],
            history: &[],
        });
        assert_eq!(d.top().service.as_deref(), Some("frontend"));
        assert!(d.top().statement.contains("starts in frontend itself"), "{}", d.top().statement);
    }

    #[test]
    fn a_log_pattern_whose_rate_jumped_at_the_onset_is_evidence() {
        // One retry every 5 minutes is normal; from the onset at minute 30, three a minute.
        let mut logs: Vec<LogLine> = (0..6)
            .map(|i| LogLine {
                at: i * 300_000,
                service: "api".into(),
                line: format!("WARN retrying call id={i} attempt 2"),
            })
            .collect();
        logs.extend((0..90).map(|i| LogLine {
            at: 30 * 60_000 + i * 20_000,
            service: "api".into(),
            line: format!("WARN retrying call id={} attempt 2", 100 + i),
        }));
        logs.extend((0..60).map(|i| LogLine { at: i * 60_000, service: "api".into(), line: "INFO served".into() }));
        let ctx = Context {
            start: 0,
            end: 60 * 60_000,
            series: vec![error_ratio("api", Some(30), 0.2)],
            logs,
            ..Default::default()
        };
        let d = diagnose(&Input {
            incident_id: 1,
            title: "t",
            alerts: &[alert("HighErrorRate", "api", 32 * 60_000)],
            context: &ctx,
            runbooks: &[],
            golden: &[],
            history: &[],
        });
        let logs: Vec<&str> =
            d.top().evidence.iter().filter(|e| e.kind == EvidenceKind::Log).map(|e| e.text.as_str()).collect();
        assert_eq!(
            logs,
            ["log pattern whose rate jumped from 0.2/min to 3.0/min at the onset, 96× from 00:00 UTC: \
              \"WARN retrying call id=<*> attempt <*>\" (e.g. \"WARN retrying call id=0 attempt 2\")"]
        );
    }

    #[test]
    fn similar_past_incidents_are_evidence() {
        let past = Past {
            incident_id: 7,
            title: "HighErrorRate on checkout".into(),
            opened_at: 0,
            resolved_at: Some(23 * 60_000),
            runbook: Some("rollback-bad-deploy".into()),
            verified: true,
            outcome: "the plan of rollback-bad-deploy, approved by slack:U1, ran and was verified".into(),
        };
        let e = history::evidence(&past);
        assert_eq!(e.kind, EvidenceKind::History);
        assert_eq!(
            e.text,
            "similar incident #7 \"HighErrorRate on checkout\" on 1970-01-01 00:00 UTC, resolved after 23 min: \
             the plan of rollback-bad-deploy, approved by slack:U1, ran and was verified"
        );
    }

    #[test]
    fn confidence_is_log_odds_with_stated_weights() {
        let mut o = Odds::new(0.0, "prior");
        o.add(1.0, "a deploy");
        o.add(-0.5, "a doubt");
        assert!((o.confidence() - logistic(0.5)).abs() < 1e-12);
        assert_eq!(o.reasons, ["prior (prior 50%)", "a deploy (+1.0)", "a doubt (-0.5)"]);
        let mut sure = Odds::new(5.0, "p");
        sure.add(5.0, "q");
        assert_eq!(sure.confidence(), 0.95, "never certain");
    }

    #[test]
    fn evidence_lists_are_capped() {
        let ev = |t: String| Evidence { kind: EvidenceKind::Alert, text: t, at: None, spark: None };
        let many = (0..500).map(|i| ev(format!("alert A{i} firing since 10:00")));
        let same = (0..40).map(|_| ev("alert Disk (critical) firing since 10:00".into()));
        let out = capped(same.chain(many), "alerts of this incident");
        assert_eq!(out.len(), EVIDENCE_CAP + 1);
        assert_eq!(out[0].text, "alert Disk (critical) firing since 10:00 (×40)");
        assert_eq!(out[EVIDENCE_CAP].text, "… and 491 more alerts of this incident");
        assert!(capped(std::iter::empty(), "x").is_empty());
    }

    #[test]
    fn evidence_is_redacted() {
        let alert = alert("A", "s", 600_000);
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
            history: &[],
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
