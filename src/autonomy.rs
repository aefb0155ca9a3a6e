//! Earned autonomy (§2.10, §3): whether a runbook's plan may run by itself, and how a runbook
//! earns and loses that. Pure: the store keeps each runbook's [`Record`] and applies [`learn`]
//! in the transaction that records the outcome; the responder asks [`assess`] before it
//! proposes a plan; the auto runner asks again (through the store, under the write lock)
//! before it runs one.
//!
//! A runbook declares its ceiling (`autonomy: suggest | approve | auto`). `auto` is *granted*
//! only when all hold: tier ≤ 3; the ceiling is `auto`; the runbook's last `grant_after`
//! executions were verified (none rolled back, failed or interrupted) or a person granted it;
//! the environment policy allows it for the incident's environment; no guardrail blocks or
//! warns. Any failed post-check, rollback, interruption, Stop, or Reject of an automatic plan
//! drops it back to `approve` and resets the streak.

use crate::plan::ProposedPlan;
use crate::runbook::Autonomy;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Highest tier whose plans may ever run by themselves.
pub const MAX_AUTO_TIER: u8 = 3;

/// The `autonomy` config section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Verified runs under approval in a row that grant `auto` (default 5).
    pub grant_after: u32,
    /// Wait before an automatic plan's first step, during which Stop or Reject prevent it.
    #[serde(with = "humantime_serde")]
    pub delay: Duration,
    /// The alert label naming the environment (default `env`).
    pub environment_label: String,
    /// Environments where plans may run by themselves. Not listed: never.
    pub environments: BTreeMap<String, Environment>,
}

/// Where `auto` is allowed: every runbook (no `runbooks` key), or only those listed.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Environment {
    pub runbooks: Option<Vec<String>>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            grant_after: 5,
            delay: Duration::from_secs(60),
            environment_label: "env".into(),
            environments: BTreeMap::new(),
        }
    }
}

impl Config {
    /// Problems a person must fix; with the runbooks loaded, also a runbook named for `auto`
    /// that does not exist or can never run by itself.
    pub fn problems(&self, runbooks: Option<&[crate::runbook::Runbook]>) -> Vec<String> {
        let mut out = Vec::new();
        if self.grant_after == 0 {
            out.push("autonomy.grant_after: expected at least 1".into());
        }
        let Some(runbooks) = runbooks else { return out };
        for (env, rule) in &self.environments {
            for id in rule.runbooks.iter().flatten() {
                match runbooks.iter().find(|r| &r.id == id) {
                    None => out.push(format!("autonomy.environments.{env}.runbooks: no runbook {id}")),
                    Some(r) if r.autonomy != Autonomy::Auto => out.push(format!(
                        "autonomy.environments.{env}.runbooks: {id} declares `autonomy: {}`, not auto; it never runs by itself",
                        r.autonomy.as_str()
                    )),
                    Some(_) => {}
                }
            }
        }
        out
    }

    /// Why the policy does not allow `runbook` to run by itself in `env`, if it does not.
    fn refuses(&self, env: Option<&str>, runbook: &str) -> Option<String> {
        let label = &self.environment_label;
        let Some(env) = env else {
            return Some(format!(
                "the incident has no `{label}` label, and auto runs only where policy names the environment"
            ));
        };
        match self.environments.get(env) {
            None => Some(format!("policy does not allow automatic runs in {label}={env}")),
            Some(Environment { runbooks: Some(list) }) if !list.iter().any(|r| r == runbook) => {
                Some(format!("in {label}={env} only {} may run automatically", list.join(", ")))
            }
            Some(_) => None,
        }
    }
}

/// A runbook's earned level and its record, as the store keeps it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub runbook: String,
    /// `auto` once earned or granted (subject to policy per incident), else `approve`.
    pub auto: bool,
    /// Verified executions in a row since the last failure, revocation or rejection.
    pub streak: u32,
    pub verified: u32,
    pub failed: u32,
    /// The last verified run: its incident and who approved it.
    pub last_incident: Option<i64>,
    pub last_by: Option<String>,
    /// Why the level last changed.
    pub reason: Option<String>,
}

/// Something that happened to one of the runbook's plans.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// An execution whose every step and post-check passed (not a dry run).
    Verified {
        incident: i64,
        approvers: Vec<String>,
    },
    /// A failed post-check or step, a rollback, a failed rollback, an interruption.
    Failed {
        incident: i64,
        reason: String,
    },
    /// A person rejected or stopped an automatic plan.
    Stopped {
        incident: i64,
        by: String,
    },
    /// A person revoked or granted the level (within policy: see [`may_grant`]).
    Revoked {
        by: String,
    },
    Granted {
        by: String,
    },
}

/// What changed in the level, for the audit: granted (true) or lost (false), and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub granted: bool,
    pub reason: String,
}

/// Applies `event` to `record`. `may_auto`: the runbook declares `auto` and its tier allows it.
pub fn learn(record: &mut Record, event: &Event, grant_after: u32, may_auto: bool) -> Option<Change> {
    let was = record.auto;
    let reason = match event {
        Event::Verified { incident, approvers } => {
            record.verified += 1;
            record.streak += 1;
            record.last_incident = Some(*incident);
            record.last_by = Some(approvers.join(", "));
            if was || !may_auto || record.streak < grant_after {
                return None;
            }
            record.auto = true;
            format!(
                "{} verified runs under approval in a row (last: #{incident} by {})",
                record.streak,
                approvers.join(", ")
            )
        }
        Event::Failed { incident, reason } => {
            record.failed += 1;
            record.streak = 0;
            record.auto = false;
            format!("incident #{incident}: {reason}")
        }
        Event::Stopped { incident, by } => {
            record.streak = 0;
            record.auto = false;
            format!("{by} stopped or rejected the automatic plan of incident #{incident}")
        }
        Event::Revoked { by } => {
            record.streak = 0;
            record.auto = false;
            format!("revoked by {by}")
        }
        Event::Granted { by } => {
            record.auto = true;
            format!("granted by {by}")
        }
    };
    if record.auto == was {
        return None;
    }
    record.reason = Some(reason.clone());
    Some(Change { granted: record.auto, reason })
}

/// Whether a person may grant `auto` to a runbook: it declares `auto` and its tier allows it.
pub fn may_grant(ceiling: Autonomy, tier: u8) -> Result<(), String> {
    if ceiling != Autonomy::Auto {
        return Err(format!(
            "it declares `autonomy: {}`; only runbooks that declare auto can earn it",
            ceiling.as_str()
        ));
    }
    if tier > MAX_AUTO_TIER {
        return Err(format!("it is tier {tier}; only tiers 1–{MAX_AUTO_TIER} may run by themselves"));
    }
    Ok(())
}

/// Whether a plan runs by itself, and why (shown on the plan either way).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoNote {
    /// True: it runs after `delay_secs` unless someone stops or rejects it.
    pub runs_itself: bool,
    pub why: String,
    pub delay_secs: u64,
}

/// Whether `plan` (of a runbook whose ceiling is `auto`) runs by itself for an incident in
/// `env`. `record`: the runbook's record; `guardrail`: why automation may not act now (pause,
/// freeze, deploy in progress, budget), if so.
pub fn assess(
    cfg: &Config,
    plan: &ProposedPlan,
    record: &Record,
    env: Option<&str>,
    guardrail: Option<&str>,
) -> Option<AutoNote> {
    if plan.autonomy != Autonomy::Auto {
        return None;
    }
    let note = |runs_itself: bool, why: String| Some(AutoNote { runs_itself, why, delay_secs: cfg.delay.as_secs() });
    if let Err(why) = may_grant(plan.autonomy, plan.tier) {
        return note(false, format!("needs approval: {why}"));
    }
    if !record.auto {
        return note(
            false,
            format!("needs approval: {} of {} verified runs under approval in a row", record.streak, cfg.grant_after),
        );
    }
    if plan.dry_run {
        return note(false, "needs approval: the runbook is in dry-run mode".into());
    }
    if let Some(step) = plan.steps.iter().find(|s| s.refused.is_some()) {
        return note(false, format!("needs approval: step {} would be refused now", step.id));
    }
    let mut workloads: Vec<String> = plan
        .steps
        .iter()
        .filter_map(|s| match &s.action {
            crate::plan::PlanAction::Kubernetes(k) => Some(k.target.to_string()),
            _ => None,
        })
        .collect();
    workloads.sort();
    workloads.dedup();
    if workloads.len() > 1 {
        return note(
            false,
            format!("needs approval: the plan changes {} workloads ({})", workloads.len(), workloads.join(", ")),
        );
    }
    if let Some(why) = cfg.refuses(env, &plan.runbook) {
        return note(false, format!("needs approval: {why}"));
    }
    if let Some(why) = guardrail {
        return note(false, format!("needs approval: {why}"));
    }
    let earned = match (&record.reason, record.last_incident, record.last_by.as_deref()) {
        (Some(r), _, _) if r.starts_with("granted by") => r.clone(),
        (_, Some(last), Some(crate::approval::AUTO)) => {
            format!("{} verified runs in a row (last: #{last}, which ran by itself)", record.streak)
        }
        (_, Some(last), by) => {
            format!("{} verified runs under approval in a row (last: #{last} by {})", record.streak, by.unwrap_or("?"))
        }
        _ => record.reason.clone().unwrap_or_default(),
    };
    note(true, format!("running automatically: {earned}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::ApprovalRule;

    fn plan(autonomy: Autonomy, tier: u8) -> ProposedPlan {
        ProposedPlan {
            runbook: "restart-crashlooping".into(),
            tier,
            incident_id: 9,
            steps: Vec::new(),
            expected_impact: String::new(),
            approval: ApprovalRule { groups: vec![], min_approvers: 1, self_approval: false, expires_after_secs: 60 },
            autonomy,
            dry_run: false,
            auto: None,
            hash: String::new(),
        }
    }

    fn cfg() -> Config {
        let mut c = Config::default();
        c.environments.insert("staging".into(), Environment { runbooks: None });
        c.environments.insert("production".into(), Environment { runbooks: Some(vec!["rollback-bad-deploy".into()]) });
        c
    }

    fn verified(r: &mut Record, n: u32) -> Option<Change> {
        let mut last = None;
        for i in 0..n {
            last = learn(r, &Event::Verified { incident: 100 + i as i64, approvers: vec!["slack:U1".into()] }, 5, true);
        }
        last
    }

    #[test]
    fn five_verified_runs_grant_and_one_failure_takes_it_away() {
        let mut r = Record::default();
        assert_eq!(verified(&mut r, 4), None);
        assert!(!r.auto);
        let granted = verified(&mut r, 1).expect("the fifth grants");
        assert!(granted.granted);
        assert_eq!(granted.reason, "5 verified runs under approval in a row (last: #100 by slack:U1)");
        assert_eq!(verified(&mut r, 1), None, "already granted: no second grant");
        let lost = learn(&mut r, &Event::Failed { incident: 7, reason: "post-check failed".into() }, 5, true).unwrap();
        assert!(!lost.granted && lost.reason.contains("post-check failed"));
        assert_eq!((r.auto, r.streak, r.verified, r.failed), (false, 0, 6, 1));
        // A failure while not granted changes counts, not the level.
        assert_eq!(learn(&mut r, &Event::Failed { incident: 8, reason: "x".into() }, 5, true), None);
    }

    #[test]
    fn a_runbook_that_may_not_run_by_itself_never_earns_it() {
        let mut r = Record::default();
        for i in 0..10 {
            assert_eq!(learn(&mut r, &Event::Verified { incident: i, approvers: vec![] }, 5, false), None);
        }
        assert!(!r.auto && r.streak == 10);
        assert!(may_grant(Autonomy::Approve, 2).unwrap_err().contains("declares `autonomy: approve`"));
        assert!(may_grant(Autonomy::Auto, 4).unwrap_err().contains("tier 4"));
        assert!(may_grant(Autonomy::Auto, 3).is_ok());
    }

    #[test]
    fn policy_and_guardrails_decide_each_incident() {
        let c = cfg();
        let mut r = Record::default();
        verified(&mut r, 5);
        let p = plan(Autonomy::Auto, 2);
        let runs = assess(&c, &p, &r, Some("staging"), None).unwrap();
        assert!(runs.runs_itself, "{runs:?}");
        assert!(runs.why.starts_with("running automatically: 5 verified runs"), "{}", runs.why);
        let prod = assess(&c, &p, &r, Some("production"), None).unwrap();
        assert!(!prod.runs_itself);
        assert!(prod.why.contains("in env=production only rollback-bad-deploy may run automatically"), "{}", prod.why);
        assert!(assess(&c, &p, &r, None, None).unwrap().why.contains("no `env` label"));
        assert!(
            assess(&c, &p, &r, Some("dev"), None).unwrap().why.contains("does not allow automatic runs in env=dev")
        );
        let paused = assess(&c, &p, &r, Some("staging"), Some("automation is paused by x")).unwrap();
        assert!(!paused.runs_itself && paused.why.ends_with("automation is paused by x"));
        assert_eq!(assess(&c, &plan(Autonomy::Approve, 2), &r, Some("staging"), None), None);
        let young = assess(&c, &p, &Record::default(), Some("staging"), None).unwrap();
        assert_eq!(young.why, "needs approval: 0 of 5 verified runs under approval in a row");
    }

    #[test]
    fn a_plan_that_changes_two_workloads_needs_a_person() {
        use crate::plan::{KubeOp, KubeVerb, PlanAction, PlanStep, Target};
        use crate::runbook::actions::WorkloadKind;
        let step = |name: &str| PlanStep {
            id: name.into(),
            action: PlanAction::Kubernetes(KubeOp {
                target: Target { kind: WorkloadKind::Deployment, namespace: "shop".into(), name: name.into() },
                verb: KubeVerb::RolloutRestart,
                seen: None,
                restore: false,
            }),
            precondition: None,
            post_check: None,
            rollback: None,
            irreversible: None,
            touches: None,
            refused: None,
        };
        let mut r = Record::default();
        verified(&mut r, 5);
        let mut p = plan(Autonomy::Auto, 2);
        p.steps = vec![step("checkout"), step("checkout")];
        assert!(assess(&cfg(), &p, &r, Some("staging"), None).unwrap().runs_itself, "one workload, two steps");
        p.steps.push(step("payments"));
        let why = assess(&cfg(), &p, &r, Some("staging"), None).unwrap().why;
        assert_eq!(
            why,
            "needs approval: the plan changes 2 workloads (deployment/checkout -n shop, deployment/payments -n shop)"
        );
    }

    #[test]
    fn a_person_grants_within_policy_and_revokes() {
        let mut r = Record::default();
        let g = learn(&mut r, &Event::Granted { by: "console:carol".into() }, 5, true).unwrap();
        assert!(g.granted && r.auto);
        let c = cfg();
        let why = assess(&c, &plan(Autonomy::Auto, 1), &r, Some("staging"), None).unwrap().why;
        assert_eq!(why, "running automatically: granted by console:carol");
        let l = learn(&mut r, &Event::Revoked { by: "console:carol".into() }, 5, true).unwrap();
        assert!(!l.granted && l.reason == "revoked by console:carol");
        let s = learn(&mut r, &Event::Stopped { incident: 3, by: "slack:U2".into() }, 5, true);
        assert_eq!(s, None, "already at approve");
    }
}
