//! Method: changes. The changes of the incident's service and of everything downstream of it
//! that precede the onset, as evidence; the latest change of the service itself is what
//! runbook predicates (`deploy_within`) and the "a deploy preceded the onset" reason weigh.

use super::{Evidence, EvidenceKind, hhmm, minutes};
use crate::alert::Change;
use crate::time::Millis;

pub(super) fn evidence(c: &Change, onset: Millis, service: Option<&str>) -> Evidence {
    let role = if service.is_some_and(|s| s != c.service) { " (downstream)" } else { "" };
    Evidence {
        kind: EvidenceKind::Change,
        text: format!(
            "{} of {}{role}{}{} at {}, {} before the onset: {}",
            c.kind.as_str(),
            c.service,
            c.version.as_ref().map(|v| format!(" {v}")).unwrap_or_default(),
            c.author.as_ref().map(|a| format!(" by {a}")).unwrap_or_default(),
            hhmm(c.at),
            minutes(onset - c.at),
            c.summary
        ),
        at: Some(c.at),
        spark: None,
    }
}

/// A deploy of `service` at `at`, for the methods' tests.
#[cfg(test)]
pub(super) fn deploy(service: &str, at: Millis) -> Change {
    Change {
        id: "d".into(),
        kind: crate::alert::ChangeKind::Deploy,
        service: service.into(),
        summary: "Deploy v2".into(),
        author: Some("alice".into()),
        version: Some("v2".into()),
        url: None,
        labels: Default::default(),
        at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_says_who_what_and_how_long_before_the_onset() {
        let e = evidence(&deploy("checkout", 0), 13 * 60_000, Some("checkout"));
        assert_eq!(e.text, "deploy of checkout v2 by alice at 00:00 UTC, 13 min before the onset: Deploy v2");
        let e = evidence(&deploy("payments", 0), 13 * 60_000, Some("checkout"));
        assert!(e.text.starts_with("deploy of payments (downstream) v2"), "{}", e.text);
    }
}
