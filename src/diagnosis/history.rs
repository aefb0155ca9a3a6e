//! Method: history. Resolved incidents of the same signature, and whether a runbook's plan
//! resolved them: evidence, and a reason for or against that runbook.

use super::{Evidence, EvidenceKind, Odds, Past, minutes};
use crate::time::from_millis;

pub(super) fn evidence(p: &Past) -> Evidence {
    let took = p.resolved_at.map(|r| format!(", resolved after {}", minutes(r - p.opened_at))).unwrap_or_default();
    Evidence {
        kind: EvidenceKind::History,
        text: format!(
            "similar incident #{} \"{}\" on {}{took}: {}",
            p.incident_id,
            p.title,
            from_millis(p.opened_at).format("%Y-%m-%d %H:%M UTC"),
            p.outcome
        ),
        at: Some(p.opened_at),
        spark: None,
    }
}

/// Weighs `runbook` by the last two past incidents its plan ran for: +0.5 for each it
/// resolved, −0.5 for each it did not. Returns those incidents (their evidence goes with it).
pub(super) fn weigh<'p>(odds: &mut Odds, history: &'p [Past], runbook: &str) -> Vec<&'p Past> {
    let past: Vec<&Past> = history.iter().filter(|p| p.runbook.as_deref() == Some(runbook)).take(2).collect();
    for p in &past {
        if p.verified {
            odds.add(0.5, format!("incident #{} was resolved by this runbook's plan", p.incident_id));
        } else {
            odds.add(-0.5, format!("this runbook's plan did not resolve incident #{}", p.incident_id));
        }
    }
    past
}

#[cfg(test)]
mod tests {
    use super::*;

    fn past(id: i64, runbook: &str, verified: bool) -> Past {
        Past {
            incident_id: id,
            title: "HighErrorRate on checkout".into(),
            opened_at: 0,
            resolved_at: Some(20 * 60_000),
            runbook: Some(runbook.into()),
            verified,
            outcome: "the plan ran".into(),
        }
    }

    #[test]
    fn verified_fixes_count_for_a_runbook_and_failures_against() {
        let history = [past(3, "rb", true), past(2, "other", true), past(1, "rb", false), past(0, "rb", true)];
        let mut odds = Odds::new(0.0, "prior");
        let used = weigh(&mut odds, &history, "rb");
        assert_eq!(used.iter().map(|p| p.incident_id).collect::<Vec<_>>(), [3, 1], "the last two of this runbook");
        assert_eq!(odds.logit, 0.0, "+0.5 and -0.5");
        assert!(evidence(&history[0]).text.contains("resolved after 20 min"));
    }
}
