//! Guardrails (§3), enforced by code, not left to runbooks. Assessed when a click arrives:
//! - **blocks** refuse the approval: automation paused (the kill switch), the attempt budget
//!   for these alerts spent;
//! - **warnings** are shown with the plan: a change freeze, a deploy of the service in progress
//!   (approval-gated plans may still run; only automatic remediation would stop).
//!
//! Dry run is the executor's (`executor::Limits::dry_run`).

use crate::alert::{Change, ChangeKind};
pub use crate::runbook::Budget;
use crate::time::{Millis, rfc3339};
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardrailConfig {
    /// Change freezes: no automatic remediation; approval-gated plans show the warning.
    #[serde(default)]
    pub freezes: Vec<Freeze>,
    /// A deploy of the service this recent means it is "being deployed".
    #[serde(default = "settle", with = "humantime_serde")]
    pub deploy_settle: Duration,
    /// Executions per alert within a period, unless the runbook sets its own.
    #[serde(default)]
    pub attempt_budget: Budget,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Freeze {
    /// RFC 3339.
    pub from: String,
    pub until: String,
    /// Services it covers; empty: all.
    #[serde(default)]
    pub services: Vec<String>,
    pub reason: String,
}

fn settle() -> Duration {
    Duration::from_secs(900)
}

impl Default for GuardrailConfig {
    fn default() -> Self {
        GuardrailConfig { freezes: Vec::new(), deploy_settle: settle(), attempt_budget: Budget::default() }
    }
}

impl GuardrailConfig {
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (i, f) in self.freezes.iter().enumerate() {
            let parse = |s: &str| chrono::DateTime::parse_from_rfc3339(s).map(|t| t.timestamp_millis());
            match (parse(&f.from), parse(&f.until)) {
                (Ok(a), Ok(b)) if a < b => {}
                (Ok(_), Ok(_)) => out.push(format!("guardrails.freezes[{i}]: `until` must be after `from`")),
                _ => out.push(format!("guardrails.freezes[{i}]: expected RFC 3339 times in `from` and `until`")),
            }
        }
        if self.attempt_budget.max == 0 {
            out.push("guardrails.attempt_budget.max: expected at least 1".into());
        }
        out
    }
}

/// What is true right now, as the store and context see it.
pub struct Situation<'a> {
    pub service: Option<&'a str>,
    pub now: Millis,
    /// Who paused automation, and when.
    pub paused: Option<(&'a str, Millis)>,
    pub recent_changes: &'a [Change],
    /// Executions for these alerts within the budget's period.
    pub attempts: u32,
    /// The runbook's own budget, if it sets one.
    pub budget: Option<Budget>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assessment {
    pub blocks: Vec<String>,
    pub warnings: Vec<String>,
}

impl Assessment {
    /// The reason to refuse an approval now, if any.
    pub fn refusal(&self) -> Option<String> {
        (!self.blocks.is_empty()).then(|| self.blocks.join("; "))
    }

    /// The reason automation may not act by itself now: a block, or a warning (a freeze or a
    /// deploy in progress lets a person approve, not medic alone).
    pub fn stops_automation(&self) -> Option<String> {
        self.refusal().or_else(|| self.warnings.first().cloned())
    }
}

pub fn assess(cfg: &GuardrailConfig, s: &Situation) -> Assessment {
    let mut a = Assessment::default();
    if let Some((by, at)) = s.paused {
        a.blocks.push(format!("automation is paused by {by} since {}", rfc3339(at)));
    }
    let budget = s.budget.unwrap_or(cfg.attempt_budget);
    if s.attempts >= budget.max {
        a.blocks.push(format!(
            "the attempt budget is spent: {} execution(s) for these alerts in the last {}; a person must act",
            s.attempts,
            humantime::format_duration(budget.per)
        ));
    }
    for f in &cfg.freezes {
        let parse = |t: &str| chrono::DateTime::parse_from_rfc3339(t).map(|t| t.timestamp_millis()).ok();
        let (Some(from), Some(until)) = (parse(&f.from), parse(&f.until)) else { continue };
        let covers = f.services.is_empty() || s.service.is_some_and(|svc| f.services.iter().any(|x| x == svc));
        if covers && (from..until).contains(&s.now) {
            a.warnings.push(format!("change freeze until {}: {}", f.until, f.reason));
        }
    }
    let settle = cfg.deploy_settle.as_millis() as Millis;
    if let Some(d) = s
        .recent_changes
        .iter()
        .filter(|c| {
            c.kind == ChangeKind::Deploy
                && s.service == Some(c.service.as_str())
                && s.now - c.at < settle
                && c.at <= s.now
        })
        .max_by_key(|c| c.at)
    {
        a.warnings.push(format!(
            "{} is being deployed ({} at {}); a remediation now may collide with it",
            d.service,
            d.version.as_deref().unwrap_or(&d.summary),
            rfc3339(d.at)
        ));
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::Labels;

    const NOW: Millis = 1_800_000_000_000;

    fn situation<'a>(changes: &'a [Change]) -> Situation<'a> {
        Situation {
            service: Some("checkout"),
            now: NOW,
            paused: None,
            recent_changes: changes,
            attempts: 0,
            budget: None,
        }
    }

    #[test]
    fn pause_and_budget_block() {
        let cfg = GuardrailConfig::default();
        let s = Situation { paused: Some(("console:carol", NOW - 60_000)), ..situation(&[]) };
        assert!(assess(&cfg, &s).refusal().unwrap().starts_with("automation is paused by console:carol since"));
        let s = Situation { attempts: 3, ..situation(&[]) };
        assert!(
            assess(&cfg, &s)
                .refusal()
                .unwrap()
                .contains("attempt budget is spent: 3 execution(s) for these alerts in the last 1h")
        );
        let s = Situation {
            attempts: 1,
            budget: Some(Budget { max: 1, per: Duration::from_secs(7200) }),
            ..situation(&[])
        };
        assert!(assess(&cfg, &s).refusal().unwrap().contains("in the last 2h"), "the runbook's own budget wins");
        assert_eq!(assess(&cfg, &situation(&[])), Assessment::default());
    }

    #[test]
    fn freeze_and_deploy_warn() {
        let cfg: GuardrailConfig = serde_norway::from_str(
            "freezes:\n  - {from: '2027-03-15T00:00:00Z', until: '2027-03-16T00:00:00Z', services: [checkout], reason: Black Friday}\n",
        )
        .unwrap();
        let at = |t: &str| chrono::DateTime::parse_from_rfc3339(t).unwrap().timestamp_millis();
        let s = Situation { now: at("2027-03-15T12:00:00Z"), ..situation(&[]) };
        let a = assess(&cfg, &s);
        assert_eq!(a.warnings, ["change freeze until 2027-03-16T00:00:00Z: Black Friday"]);
        assert!(a.blocks.is_empty(), "approval-gated plans may still run; they show the warning");
        let other = Situation { service: Some("search"), ..s };
        assert!(assess(&cfg, &other).warnings.is_empty());

        let deploy = Change {
            id: "d".into(),
            kind: ChangeKind::Deploy,
            service: "checkout".into(),
            summary: "Deploy".into(),
            author: None,
            version: Some("v2.15.0".into()),
            url: None,
            labels: Labels::new(),
            at: NOW - 5 * 60_000,
        };
        let changes = [deploy];
        let a = assess(&cfg, &situation(&changes));
        assert!(a.warnings[0].starts_with("checkout is being deployed (v2.15.0 at"), "{a:?}");
        let later = Situation { now: NOW + 20 * 60_000, ..situation(&changes) };
        assert!(assess(&cfg, &later).warnings.is_empty(), "settled after 15 minutes");
        assert!(
            !GuardrailConfig {
                freezes: vec![Freeze { from: "x".into(), until: "y".into(), services: vec![], reason: "r".into() }],
                ..Default::default()
            }
            .problems()
            .is_empty()
        );
    }
}
