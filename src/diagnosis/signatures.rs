//! Method: runbook signatures. A runbook whose label matchers match an alert, and every one of
//! whose evidence predicates holds, is a hypothesis; its confidence adds the reasons the other
//! methods found (its queries show the onset, a change preceded it, a new log pattern, the
//! topology, the history).

use super::topology::Anomaly;
use super::{Evidence, Facts, Hypothesis, Input, Odds, minutes, render, template_context};
use crate::alert::ChangeKind;
use crate::runbook::{Evidence as Predicate, Runbook};
use crate::time::Millis;

/// Whether `e` holds over the facts.
fn holds(f: &Facts, e: &Predicate) -> bool {
    let ctx = f.ctx;
    if let Some(d) = e.deploy_within {
        f.own_changes.iter().any(|c| c.kind == ChangeKind::Deploy && f.onset - c.at <= d.as_millis() as Millis)
    } else if let Some(d) = e.change_within {
        f.own_changes.iter().any(|c| f.onset - c.at <= d.as_millis() as Millis)
    } else if let Some(states) = &e.pod_state {
        ctx.pods.iter().any(|p| states.iter().any(|s| p.reason.as_deref() == Some(s) || &p.phase == s))
    } else if let Some(pat) = &e.log_pattern {
        let re = regex::Regex::new(pat).expect("checked when the runbook loaded");
        f.service_logs.iter().any(|l| l.at >= f.onset - 300_000 && re.is_match(&l.line))
    } else if let Some(m) = &e.metric {
        ctx.series
            .iter()
            .filter(|s| s.query == m.query)
            .any(|s| s.points.last().is_some_and(|p| m.condition.holds(p.1)))
    } else {
        false
    }
}

/// The hypothesis of `rb`, if it matches.
fn hypothesis(f: &Facts, input: &Input, rb: &Runbook) -> Option<Hypothesis> {
    let alert = f.alerts.iter().find(|a| rb.matches_labels(std::iter::once(&a.labels)))?;
    let main = f.main();
    let mut odds = Odds::new(-0.8, format!("alert {} matches {}", alert.name(), rb.id));
    for e in &rb.matches.evidence {
        if !holds(f, e) {
            return None;
        }
        odds.add(0.6, format!("evidence predicate holds: {}", serde_json::to_string(e).unwrap_or_default()));
    }
    let own_queries: Vec<&str> = rb.context.iter().map(|q| q.name.as_str()).collect();
    let (own, golden): (Vec<&Anomaly>, Vec<&Anomaly>) = f
        .hood
        .anomalies
        .iter()
        .filter(|a| main == Some(a.service.as_str()))
        .partition(|a| own_queries.contains(&a.query));
    if !own.is_empty() {
        odds.add(0.6, "its context queries show the onset");
    }
    if let Some(c) = f.latest_change.filter(|c| f.onset - c.at <= 3_600_000) {
        odds.add(
            1.0,
            format!("a {} of {} preceded the onset by {}", c.kind.as_str(), c.service, minutes(f.onset - c.at)),
        );
    }
    if f.log_ev.iter().any(|(new, _)| *new) {
        odds.add(0.4, "a log pattern appeared after the change");
    }
    let downstream = f.downstream_origin.as_deref();
    if let (Some(m), None) = (main, downstream)
        && f.hood.anomalous(m)
        && !f.hood.healthy_callees(m).is_empty()
    {
        odds.add(0.5, format!("{m}'s own dependencies look healthy, so the anomaly starts in {m}"));
    }
    if let Some(o) = downstream {
        odds.add(
            -1.5,
            format!(
                "{o}, downstream of {}, is anomalous with healthy dependencies: the cause is more likely there",
                main.unwrap_or("the service")
            ),
        );
    }
    let past = super::history::weigh(&mut odds, input.history, &rb.id);
    let mut evidence: Vec<Evidence> = own.iter().chain(&golden).map(|a| a.evidence.clone()).collect();
    evidence.extend(main.and_then(|m| f.hood.healthy_evidence(f.ctx, m)));
    evidence.extend(f.change_evidence());
    evidence.extend(f.log_ev.iter().map(|(_, e)| e.clone()));
    evidence.extend(f.pod_ev.iter().cloned());
    evidence.extend(past.iter().map(|p| super::history::evidence(p)));
    evidence.extend(f.alert_ev.iter().cloned());
    evidence.extend(f.context_ev.iter().cloned());
    let tctx = template_context(alert, (input.incident_id, input.title), f.latest_change, &rb.vars);
    Some(Hypothesis {
        statement: render(&rb.hypothesis, &tctx).trim().to_string(),
        confidence: odds.confidence(),
        runbook: Some(rb.id.clone()),
        service: f.service.clone(),
        tier: rb.tier,
        evidence,
        reasons: odds.reasons,
    })
}

/// Every matching runbook's hypothesis.
pub(super) fn hypotheses(f: &Facts, input: &Input) -> Vec<Hypothesis> {
    input.runbooks.iter().filter_map(|rb| hypothesis(f, input, rb)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{AlertStatus, Source};
    use crate::context::Context;

    #[test]
    fn predicates_hold_over_the_facts_and_a_failed_one_drops_the_runbook() {
        let alert = crate::alert::Alert {
            source: Source::Generic,
            fingerprint: "f".into(),
            status: AlertStatus::Firing,
            labels: [
                ("alertname".to_string(), "HighErrorRate".to_string()),
                ("service".to_string(), "checkout".to_string()),
            ]
            .into(),
            annotations: Default::default(),
            starts_at: 40 * 60_000,
            ends_at: None,
            links: Default::default(),
        };
        let deploy = crate::diagnosis::changes::deploy("checkout", 10 * 60_000);
        let ctx = Context { changes: vec![deploy], end: 60 * 60_000, ..Default::default() };
        let alerts = [alert];
        let input = Input {
            incident_id: 1,
            title: "t",
            alerts: &alerts,
            context: &ctx,
            runbooks: &[],
            golden: &[],
            history: &[],
        };
        let facts = Facts::gather(&input);
        let p = |yaml: &str| serde_norway::from_str::<Predicate>(yaml).unwrap();
        assert!(holds(&facts, &p("deploy_within: 1h")), "the deploy was 30 min before the onset");
        assert!(!holds(&facts, &p("deploy_within: 10m")));
        assert!(!holds(&facts, &p("pod_state: [CrashLoopBackOff]")), "no pods");
        let rb = |within: &str| -> Runbook {
            serde_norway::from_str(&format!(
                "id: rb\ntitle: t\ntier: 3\nmatch: {{alerts: ['alertname=\"HighErrorRate\"'], evidence: [{{deploy_within: {within}}}]}}\nhypothesis: h\n"
            ))
            .unwrap()
        };
        let h = hypothesis(&facts, &input, &rb("1h")).expect("the runbook matches");
        assert!(
            h.reasons.iter().any(|r| r.contains("a deploy of checkout preceded the onset by 30 min")),
            "{:?}",
            h.reasons
        );
        assert!(hypothesis(&facts, &input, &rb("10m")).is_none(), "a predicate that fails drops the runbook");
    }
}
