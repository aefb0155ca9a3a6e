//! Method: the situation around the incident. Pods in bad states, the incident's own alerts,
//! and what else the stack says: other firing alerts on these services or their dependencies,
//! silences, and the sources that could not answer. Evidence only; no reason of its own.

use super::{Evidence, EvidenceKind, capped, hhmm};
use crate::alert::Alert;
use crate::context::{ActiveAlert, Context, Pod};

pub(super) fn bad(p: &Pod) -> bool {
    p.reason.is_some() || p.restarts > 3 || p.phase != "Running"
}

/// Pods in bad states: waiting with a reason, restarting, not running.
pub(super) fn pods(ctx: &Context) -> Vec<Evidence> {
    ctx.pods.iter().filter(|p| bad(p)).map(pod).collect()
}

/// One pod as evidence.
pub(super) fn pod(p: &Pod) -> Evidence {
    Evidence {
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
    }
}

/// The incident's own alerts, capped.
pub(super) fn alerts(alerts: &[Alert]) -> Vec<Evidence> {
    capped(
        alerts.iter().map(|a| Evidence {
            kind: EvidenceKind::Alert,
            text: format!(
                "alert {}{} firing since {}",
                a.name(),
                a.labels.get("severity").map(|s| format!(" ({s})")).unwrap_or_default(),
                hhmm(a.starts_at)
            ),
            at: Some(a.starts_at),
            spark: None,
        }),
        "alerts of this incident",
    )
}

/// Other firing alerts (capped), silences, and the sources that could not answer.
pub(super) fn elsewhere(ctx: &Context, others: &[&ActiveAlert]) -> Vec<Evidence> {
    let mut out = capped(
        others.iter().map(|a| {
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
        }),
        "other firing alerts",
    );
    out.extend(ctx.silences.iter().map(|s| Evidence {
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
    out.extend(ctx.unavailable.iter().map(|u| Evidence {
        kind: EvidenceKind::Unavailable,
        text: format!("unavailable: {u}"),
        at: None,
        spark: None,
    }));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pods_in_bad_states_and_every_source_that_failed() {
        let pod = |name: &str, phase: &str, restarts: u32, reason: Option<&str>| Pod {
            name: name.into(),
            service: "checkout".into(),
            phase: phase.into(),
            restarts,
            reason: reason.map(str::to_string),
            last_termination: None,
            events: Vec::new(),
        };
        let ctx = Context {
            pods: vec![pod("ok-1", "Running", 0, None), pod("bad-1", "Running", 7, Some("CrashLoopBackOff"))],
            unavailable: vec!["logs: loki timed out after 5s".into()],
            ..Default::default()
        };
        let p = pods(&ctx);
        assert_eq!(p.len(), 1);
        assert!(p[0].text.starts_with("pod bad-1 is CrashLoopBackOff (7 restarts)"), "{}", p[0].text);
        assert_eq!(elsewhere(&ctx, &[])[0].text, "unavailable: logs: loki timed out after 5s");
    }
}
