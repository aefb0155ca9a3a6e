//! Method: topology and metrics. Every gathered series is analysed ([`super::anomaly`]); the
//! topology says which anomalous services have only healthy dependencies (root candidates). The
//! furthest downstream candidate below the incident's service becomes a hypothesis of its own.

use super::anomaly::{self, Finding};
use super::{Evidence, EvidenceKind, Facts, Hypothesis, Odds, hhmm, minutes, series_name, sparkline};
use crate::alert::Change;
use crate::context::{Context, Series};
use crate::runbook::Unit;
use crate::time::Millis;
use std::collections::{BTreeMap, BTreeSet};

/// One series that left its baseline, with the service it belongs to.
pub(super) struct Anomaly<'a> {
    pub query: &'a str,
    pub service: String,
    pub finding: Finding,
    pub evidence: Evidence,
}

/// The services around the incident, as the topology and the series show them.
pub(super) struct Neighbourhood<'a> {
    /// Hops downstream from the incident's service (0 for itself), and the service before it.
    pub depth: BTreeMap<String, (usize, Option<String>)>,
    /// Services with at least one series gathered.
    observed: BTreeSet<String>,
    pub anomalies: Vec<Anomaly<'a>>,
    edges: &'a [crate::context::Edge],
}

impl Neighbourhood<'_> {
    pub(super) fn anomalous(&self, s: &str) -> bool {
        self.anomalies.iter().any(|a| a.service == s)
    }

    pub(super) fn first_onset(&self, s: &str) -> Option<Millis> {
        self.anomalies.iter().filter(|a| a.service == s).map(|a| a.finding.onset).min()
    }

    fn callees<'s>(&'s self, s: &'s str) -> impl Iterator<Item = &'s str> + 's {
        self.edges.iter().filter(move |e| e.from == s).map(|e| e.to.as_str())
    }

    /// The observed dependencies of `s` that show no anomaly.
    pub(super) fn healthy_callees<'s>(&'s self, s: &'s str) -> Vec<&'s str> {
        self.callees(s).filter(|c| self.observed.contains(*c) && !self.anomalous(c)).collect()
    }

    /// Topology ranking: the anomalous services none of whose dependencies is anomalous, the
    /// furthest downstream first, then the earliest to change.
    pub(super) fn origins(&self) -> Vec<&str> {
        let mut v: Vec<(&str, usize, Millis)> = self
            .depth
            .iter()
            .filter(|(s, _)| self.anomalous(s) && !self.callees(s).any(|c| self.anomalous(c)))
            .map(|(s, (d, _))| (s.as_str(), *d, self.first_onset(s).unwrap_or(Millis::MAX)))
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.2.cmp(&b.2)));
        v.into_iter().map(|(s, _, _)| s).collect()
    }

    /// "checkout → payments → ledger": the way from the incident's service down to `s`.
    pub(super) fn path_to(&self, s: &str) -> String {
        let mut way = vec![s.to_string()];
        while let Some((_, Some(prev))) = self.depth.get(way.last().expect("never empty")) {
            way.push(prev.clone());
        }
        way.reverse();
        way.join(" → ")
    }
}

pub(super) fn neighbourhood<'a>(
    service: Option<&str>,
    ctx: &'a Context,
    units: &BTreeMap<&str, Unit>,
    series_owner: impl Fn(&Series) -> Option<String>,
) -> Neighbourhood<'a> {
    let mut depth: BTreeMap<String, (usize, Option<String>)> = BTreeMap::new();
    if let Some(s) = service {
        depth.insert(s.to_string(), (0, None));
        let mut frontier = vec![s.to_string()];
        while let Some(next) = (!frontier.is_empty()).then(|| std::mem::take(&mut frontier)) {
            for from in next {
                let d = depth[&from].0 + 1;
                for e in ctx.topology.iter().filter(|e| e.from == from) {
                    if !depth.contains_key(&e.to) {
                        depth.insert(e.to.clone(), (d, Some(from.clone())));
                        frontier.push(e.to.clone());
                    }
                }
            }
        }
    }
    let observed = ctx.series.iter().filter_map(&series_owner).collect();
    let anomalies = ctx
        .series
        .iter()
        .filter_map(|s| {
            let finding = anomaly::analyse(&s.points)?;
            let unit = units.get(s.query.as_str()).copied().unwrap_or_default();
            Some(Anomaly {
                query: s.query.as_str(),
                service: series_owner(s)?,
                evidence: Evidence {
                    kind: EvidenceKind::Metric,
                    text: anomaly::explain(&finding, &series_name(s), unit),
                    at: Some(finding.onset),
                    spark: Some(sparkline(&s.points, 20)),
                },
                finding,
            })
        })
        .collect();
    Neighbourhood { depth, observed, anomalies, edges: &ctx.topology }
}

impl Neighbourhood<'_> {
    /// The metric evidence of `s`.
    pub(super) fn metric_of(&self, s: &str) -> Vec<Evidence> {
        self.anomalies.iter().filter(|a| a.service == s).map(|a| a.evidence.clone()).collect()
    }

    /// "the dependencies of checkout look healthy: no series of payments (1) or ledger (2) left
    /// its baseline": what that reason rests on.
    pub(super) fn healthy_evidence(&self, ctx: &Context, s: &str) -> Option<Evidence> {
        let healthy = self.healthy_callees(s);
        (!healthy.is_empty()).then(|| {
            let mut names: Vec<String> = healthy
                .iter()
                .map(|c| {
                    let n = ctx.series.iter().filter(|x| x.labels.get("service").is_some_and(|v| v == c)).count();
                    format!("{c} ({n})")
                })
                .collect();
            let last = names.pop().unwrap_or_default();
            let list = if names.is_empty() { last } else { format!("{} or {last}", names.join(", ")) };
            Evidence {
                kind: EvidenceKind::Metric,
                text: format!("the dependencies of {s} look healthy: no series of {list} left its baseline"),
                at: None,
                spark: None,
            }
        })
    }
}

/// The hypothesis that the cause is downstream: an anomalous service below the incident's, none
/// of whose dependencies is anomalous.
pub(super) fn downstream(f: &Facts) -> Option<Hypothesis> {
    let (m, o) = (f.main()?, f.downstream_origin.as_deref()?);
    let hood = &f.hood;
    let path = hood.path_to(o);
    let mut odds = Odds::new(0.0, format!("{o} is anomalous downstream of {m} ({path}) and nothing it depends on is"));
    let (o_at, m_at) = (hood.first_onset(o), hood.first_onset(m));
    match (o_at, m_at) {
        (Some(a), Some(b)) if a <= b + 60_000 => {
            odds.add(0.5, format!("{o} left its baseline at {}, no later than {m} ({})", hhmm(a), hhmm(b)))
        }
        (Some(a), Some(b)) => odds.add(-0.5, format!("{o} left its baseline at {}, after {m} ({})", hhmm(a), hhmm(b))),
        (Some(_), None) => odds.add(0.3, format!("{m}'s own series show no change; its alert may be the symptom")),
        _ => {}
    }
    let o_changes: Vec<&Change> = f.preceding.iter().copied().filter(|c| c.service == o).collect();
    if let Some(c) = o_changes.iter().max_by_key(|c| c.at).filter(|c| o_at.is_some_and(|a| a - c.at <= 3_600_000)) {
        odds.add(
            1.0,
            format!("a {} of {o} preceded its anomaly by {}", c.kind.as_str(), minutes(o_at.unwrap_or(f.onset) - c.at)),
        );
    }
    if f.other_alerts.iter().any(|a| a.labels.get("service").is_some_and(|s| s == o)) {
        odds.add(0.4, format!("Alertmanager has alerts firing on {o}"));
    }
    let mut evidence = hood.metric_of(o);
    evidence.extend(hood.healthy_evidence(f.ctx, o));
    let between: Vec<String> = path.split(" → ").map(str::to_string).filter(|s| s != o).collect();
    for s in between.iter().rev() {
        evidence.extend(hood.metric_of(s));
    }
    evidence.extend(o_changes.iter().map(|c| super::changes::evidence(c, f.onset, f.main())));
    evidence.extend(f.alert_ev.iter().cloned());
    evidence.extend(f.context_ev.iter().cloned());
    let first = o_at.is_some_and(|a| m_at.is_none_or(|b| a <= b + 60_000));
    let (when, likely) = if first { ("first", "") } else { ("too", "likely ") };
    Some(Hypothesis {
        statement: format!(
            "The cause is likely in {o}, which {m} depends on ({path}): {o} went wrong {when} and everything it depends on looks healthy, so {m}'s alert is {likely}a symptom."
        ),
        confidence: odds.confidence(),
        runbook: None,
        service: Some(o.to_string()),
        tier: 5,
        evidence,
        reasons: odds.reasons,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::Edge;

    #[test]
    fn the_way_down_and_the_root_candidates() {
        let edges = vec![
            Edge { from: "frontend".into(), to: "checkout".into() },
            Edge { from: "checkout".into(), to: "payments".into() },
        ];
        let flat: Vec<(Millis, f64)> = (0..60).map(|i| (i * 60_000, 1.0 + 0.01 * (i % 3) as f64)).collect();
        let mut step = flat.clone();
        for p in step.iter_mut().skip(40) {
            p.1 += 50.0;
        }
        let series = |svc: &str, points: &Vec<(Millis, f64)>| Series {
            query: "errors".into(),
            labels: [("service".to_string(), svc.to_string())].into(),
            points: points.clone(),
        };
        let ctx = Context {
            series: vec![series("frontend", &step), series("checkout", &step), series("payments", &step)],
            topology: edges,
            ..Default::default()
        };
        let hood = neighbourhood(Some("frontend"), &ctx, &BTreeMap::new(), |s| s.labels.get("service").cloned());
        assert_eq!(hood.path_to("payments"), "frontend → checkout → payments");
        assert_eq!(hood.origins(), ["payments"], "the anomalous leaf is the one root candidate");
        assert!(hood.healthy_evidence(&ctx, "payments").is_none(), "it has no observed dependencies");
    }
}
