//! Approval (§2.7): whether a click on Approve or Reject may change a plan, decided by pure
//! rules over what the store holds. Anything refused gets a reason worded for the person who
//! clicked, and changes nothing. The store applies an accepted decision exactly once: the
//! approval row is keyed by (plan, approver) and the state moves with a conditional update
//! inside the write lock, so double clicks, retried deliveries and two replicas cannot approve
//! twice.
//!
//! [`ApprovedPlan`] can only be built here, from a plan whose approval just completed: the
//! executor accepts nothing else.

use crate::plan::ProposedPlan;
use crate::time::{Millis, rfc3339};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Who clicked: `platform:id`, e.g. `console:alice`, `slack:U024BE7LH`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Identity(pub String);

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Approve,
    Reject,
    /// Stop a plan that runs by itself: before it starts (like Reject), or while it runs (it
    /// halts before the next step and rolls back what ran).
    Stop,
}

/// One click on Approve or Reject.
#[derive(Debug, Clone)]
pub struct Click {
    pub who: Identity,
    pub decision: Decision,
    /// Where it came from: `console`, `slack:#incidents`, …
    pub via: String,
    pub at: Millis,
    /// Why, for a rejection (audited; redacted).
    pub reason: Option<String>,
}

/// A plan as the store keeps it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredPlan {
    pub plan: ProposedPlan,
    pub state: PlanState,
    pub requested_by: Identity,
    pub proposed_at: Millis,
    pub expires_at: Millis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanState {
    Proposed,
    Approved,
    Rejected,
    Superseded,
}

impl PlanState {
    pub fn as_str(self) -> &'static str {
        match self {
            PlanState::Proposed => "proposed",
            PlanState::Approved => "approved",
            PlanState::Rejected => "rejected",
            PlanState::Superseded => "superseded",
        }
    }

    pub fn parse(s: &str) -> Option<PlanState> {
        [PlanState::Proposed, PlanState::Approved, PlanState::Rejected, PlanState::Superseded]
            .into_iter()
            .find(|p| p.as_str() == s)
    }
}

/// Responder groups from the config: group name → members.
#[derive(Debug, Clone, Default)]
pub struct Groups {
    pub members: BTreeMap<String, Vec<Identity>>,
    /// Groups that may approve when a runbook names none.
    pub default_approvers: Vec<String>,
}

impl Groups {
    fn allowed(&self, plan: &ProposedPlan) -> Vec<String> {
        if plan.approval.groups.is_empty() { self.default_approvers.clone() } else { plan.approval.groups.clone() }
    }

    fn is_member(&self, who: &Identity, groups: &[String]) -> bool {
        groups.iter().any(|g| self.members.get(g).is_some_and(|m| m.contains(who)))
    }
}

/// Everything the rules look at, read in the same transaction that will apply the outcome.
pub struct Facts<'a> {
    pub plan: &'a StoredPlan,
    /// Whether the plan's incident is still unresolved.
    pub incident_open: bool,
    /// The incident's current proposed plan, if it is not this one.
    pub superseded_by: Option<&'a str>,
    /// People who already approved this plan.
    pub approvers: &'a [Identity],
    /// Why automation may not act now (pause, freeze, deploy in progress, budget), if so.
    pub guardrail: Option<String>,
    /// Whether the plan's execution is running now.
    pub running: bool,
}

/// What a click does.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Verdict {
    /// Nothing changes; the reason goes back privately to the person who clicked.
    Refused {
        reason: String,
    },
    /// The approval counts, but more are needed.
    Recorded {
        approvals: u32,
        needed: u32,
    },
    /// This click completed the approval.
    Approved {
        approvers: Vec<Identity>,
    },
    Rejected,
    /// A running automatic plan will halt before its next step and roll back.
    StopRequested,
    /// A repeat of a click already counted (double click, retried delivery): nothing changes.
    AlreadyCounted {
        state: PlanState,
    },
}

fn refused(reason: impl Into<String>) -> Verdict {
    Verdict::Refused { reason: reason.into() }
}

/// The rules of §2.7, in the order a person would want to hear them.
pub fn decide(facts: &Facts, groups: &Groups, who: &Identity, decision: Decision, now: Millis) -> Verdict {
    let sp = facts.plan;
    let p = &sp.plan;
    let short = &p.hash[..12.min(p.hash.len())];
    if !p.is_intact() {
        return refused(format!("plan {short} does not match its content hash; it was altered after it was proposed"));
    }
    if facts.approvers.contains(who) && decision == Decision::Approve {
        return Verdict::AlreadyCounted { state: sp.state };
    }
    let runs_itself = p.auto.as_ref().is_some_and(|a| a.runs_itself);
    if decision == Decision::Stop {
        if !runs_itself {
            return refused(format!("plan {short} does not run by itself; Reject it instead"));
        }
        if sp.state == PlanState::Approved {
            if !groups.is_member(who, &groups.allowed(p)) {
                return refused(format!(
                    "you are not in {}, who may stop plans of {}",
                    groups.allowed(p).join(" or "),
                    p.runbook
                ));
            }
            return if facts.running {
                Verdict::StopRequested
            } else {
                refused(format!("plan {short} is not running any more; nothing to stop"))
            };
        }
    }
    match sp.state {
        PlanState::Proposed => {}
        PlanState::Approved if decision == Decision::Approve => return Verdict::AlreadyCounted { state: sp.state },
        PlanState::Rejected if decision == Decision::Reject => return Verdict::AlreadyCounted { state: sp.state },
        other => return refused(format!("plan {short} is already {}; nothing to decide", other.as_str())),
    }
    if let Some(v) = stale(facts, now) {
        return v;
    }
    let allowed = groups.allowed(p);
    if !groups.is_member(who, &allowed) {
        let verb = match decision {
            Decision::Approve => "approve",
            Decision::Reject => "reject",
            Decision::Stop => "stop",
        };
        return refused(if allowed.is_empty() {
            format!(
                "no responder group may {verb} plans of {}: configure `approval.groups` or `responders.default_approvers`",
                p.runbook
            )
        } else {
            format!("you are not in {}, which may {verb} tier-{} plans of {}", allowed.join(" or "), p.tier, p.runbook)
        });
    }
    if decision != Decision::Approve {
        return Verdict::Rejected;
    }
    if p.autonomy == crate::runbook::Autonomy::Suggest {
        return refused(format!("{} only suggests its plan; it cannot be executed from medic", p.runbook));
    }
    if who == &sp.requested_by && !p.approval.self_approval {
        return refused(format!(
            "you asked for plan {short}, and {} does not allow approving your own plan",
            p.runbook
        ));
    }
    if let Some(why) = &facts.guardrail {
        return refused(format!("not now: {why}"));
    }
    let mut approvers = facts.approvers.to_vec();
    approvers.push(who.clone());
    let n = approvers.len() as u32;
    if n >= p.approval.min_approvers {
        Verdict::Approved { approvers }
    } else {
        Verdict::Recorded { approvals: n, needed: p.approval.min_approvers }
    }
}

/// Who approves a plan that runs by itself (audited as its approver).
pub const AUTO: &str = "medic:auto";

/// Whether a plan that runs by itself may start now, at the end of its delay: the rules of
/// [`decide`] that do not depend on a person (intact, still proposed and current, incident
/// open, not expired), plus the runbook still holding `auto` (`granted`) and no guardrail.
pub fn decide_auto(facts: &Facts, granted: bool, now: Millis) -> Verdict {
    let p = &facts.plan.plan;
    let short = &p.hash[..12.min(p.hash.len())];
    if !p.is_intact() {
        return refused(format!("plan {short} does not match its content hash"));
    }
    if facts.plan.state != PlanState::Proposed {
        return refused(format!("plan {short} is already {}", facts.plan.state.as_str()));
    }
    if let Some(v) = stale(facts, now) {
        return v;
    }
    if !p.auto.as_ref().is_some_and(|a| a.runs_itself) {
        return refused(format!("plan {short} does not run by itself"));
    }
    if !granted {
        return refused(format!("{} lost its automatic level since the plan was proposed", p.runbook));
    }
    if let Some(why) = &facts.guardrail {
        return refused(format!("not now: {why}"));
    }
    Verdict::Approved { approvers: vec![Identity(AUTO.into())] }
}

/// Why a proposed plan can no longer be decided: replaced, incident resolved, expired.
fn stale(facts: &Facts, now: Millis) -> Option<Verdict> {
    let (sp, p) = (facts.plan, &facts.plan.plan);
    let short = &p.hash[..12.min(p.hash.len())];
    if let Some(newer) = facts.superseded_by {
        return Some(refused(format!(
            "plan {short} is no longer current: plan {} replaced it",
            &newer[..12.min(newer.len())]
        )));
    }
    if !facts.incident_open {
        return Some(refused(format!("incident {} is resolved; its plan can no longer run", p.incident_id)));
    }
    if now >= sp.expires_at {
        return Some(refused(format!("plan {short} expired at {}; ask for a new plan", rfc3339(sp.expires_at))));
    }
    None
}

/// A plan whose approval completed. Only this module builds one (`approved`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApprovedPlan {
    plan: ProposedPlan,
    approvers: Vec<Identity>,
    approved_at: Millis,
}

impl ApprovedPlan {
    pub fn plan(&self) -> &ProposedPlan {
        &self.plan
    }
    pub fn approvers(&self) -> &[Identity] {
        &self.approvers
    }
    pub fn approved_at(&self) -> Millis {
        self.approved_at
    }
}

/// The approved plan, for the store to hand to the executor once the transition committed.
pub(crate) fn approved(plan: ProposedPlan, approvers: Vec<Identity>, at: Millis) -> ApprovedPlan {
    ApprovedPlan { plan, approvers, approved_at: at }
}

/// Who may approve: groups of identities (`platform:id`, e.g. `slack:U024BE7LH`,
/// `console:alice`), named by runbooks' `approval.groups`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Responders {
    #[serde(default)]
    pub groups: std::collections::BTreeMap<String, Vec<String>>,
    /// Groups that may approve plans of runbooks that name none.
    #[serde(default)]
    pub default_approvers: Vec<String>,
}

impl Responders {
    pub fn groups(&self) -> crate::approval::Groups {
        Groups {
            members: self.groups.iter().map(|(g, m)| (g.clone(), m.iter().cloned().map(Identity).collect())).collect(),
            default_approvers: self.default_approvers.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{ApprovalRule, ProposedPlan};
    use crate::runbook::Autonomy;

    const NOW: Millis = 1_000_000;

    fn plan(min: u32, self_ok: bool) -> StoredPlan {
        let mut p = ProposedPlan {
            runbook: "rollback-bad-deploy".into(),
            tier: 3,
            incident_id: 4,
            steps: Vec::new(),
            expected_impact: String::new(),
            approval: ApprovalRule {
                groups: vec!["sre-oncall".into()],
                min_approvers: min,
                self_approval: self_ok,
                expires_after_secs: 1800,
            },
            autonomy: Autonomy::Approve,
            dry_run: false,
            auto: None,
            hash: String::new(),
        };
        p.hash = p.content_hash();
        StoredPlan {
            plan: p,
            state: PlanState::Proposed,
            requested_by: id("alice"),
            proposed_at: NOW - 1,
            expires_at: NOW + 60_000,
        }
    }

    fn id(n: &str) -> Identity {
        Identity(format!("console:{n}"))
    }

    fn groups() -> Groups {
        Groups {
            members: [("sre-oncall".to_string(), vec![id("alice"), id("bob"), id("carol")])].into(),
            default_approvers: Vec::new(),
        }
    }

    fn facts(p: &StoredPlan) -> Facts<'_> {
        Facts { plan: p, incident_open: true, superseded_by: None, approvers: &[], guardrail: None, running: false }
    }

    fn reason(v: Verdict) -> String {
        match v {
            Verdict::Refused { reason } => reason,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn every_refusal_has_a_reason_a_person_understands() {
        let p = plan(1, false);
        let g = groups();
        let bob = id("bob");
        assert!(
            reason(decide(&facts(&p), &g, &id("mallory"), Decision::Approve, NOW))
                .contains("you are not in sre-oncall, which may approve tier-3 plans of rollback-bad-deploy")
        );
        assert!(reason(decide(&facts(&p), &g, &id("alice"), Decision::Approve, NOW)).contains("you asked for plan"));
        assert!(reason(decide(&facts(&p), &g, &bob, Decision::Approve, NOW + 60_000)).contains("expired at"));
        let closed = Facts { incident_open: false, ..facts(&p) };
        assert!(reason(decide(&closed, &g, &bob, Decision::Approve, NOW)).contains("incident 4 is resolved"));
        let newer = "f".repeat(64);
        let old = Facts { superseded_by: Some(&newer), ..facts(&p) };
        assert!(
            reason(decide(&old, &g, &bob, Decision::Approve, NOW))
                .contains("no longer current: plan ffffffffffff replaced it")
        );
        let paused = Facts { guardrail: Some("automation is paused by console:carol".into()), ..facts(&p) };
        assert_eq!(
            reason(decide(&paused, &g, &bob, Decision::Approve, NOW)),
            "not now: automation is paused by console:carol"
        );
        let mut altered = p.clone();
        altered.plan.steps.push(crate::plan::PlanStep {
            id: "extra".into(),
            action: crate::plan::PlanAction::Wait { secs: 1 },
            precondition: None,
            post_check: None,
            rollback: None,
            irreversible: None,
            touches: None,
            refused: None,
        });
        assert!(
            reason(decide(&facts(&altered), &g, &bob, Decision::Approve, NOW))
                .contains("altered after it was proposed")
        );
        let mut suggest = plan(1, false);
        suggest.plan.autonomy = Autonomy::Suggest;
        suggest.plan.hash = suggest.plan.content_hash();
        assert!(reason(decide(&facts(&suggest), &g, &bob, Decision::Approve, NOW)).contains("only suggests"));
        let mut done = p.clone();
        done.state = PlanState::Rejected;
        assert!(reason(decide(&facts(&done), &g, &bob, Decision::Approve, NOW)).contains("already rejected"));
        let nobody = Groups::default();
        assert!(
            reason(decide(&facts(&p), &nobody, &bob, Decision::Approve, NOW)).contains("you are not in sre-oncall")
        );
    }

    #[test]
    fn counts_distinct_approvers() {
        let p = plan(2, false);
        let g = groups();
        assert_eq!(
            decide(&facts(&p), &g, &id("bob"), Decision::Approve, NOW),
            Verdict::Recorded { approvals: 1, needed: 2 }
        );
        let one = [id("bob")];
        let f = Facts { approvers: &one, ..facts(&p) };
        assert_eq!(
            decide(&f, &g, &id("bob"), Decision::Approve, NOW),
            Verdict::AlreadyCounted { state: PlanState::Proposed }
        );
        assert_eq!(
            decide(&f, &g, &id("carol"), Decision::Approve, NOW),
            Verdict::Approved { approvers: vec![id("bob"), id("carol")] }
        );
        assert_eq!(decide(&facts(&p), &g, &id("carol"), Decision::Reject, NOW), Verdict::Rejected);
    }

    #[test]
    fn a_plan_that_runs_by_itself_starts_only_while_everything_still_holds() {
        let mut p = plan(1, false);
        let auto = |p: &StoredPlan, granted, guardrail: Option<&str>| {
            let f = Facts { guardrail: guardrail.map(str::to_string), ..facts(p) };
            decide_auto(&f, granted, NOW)
        };
        assert!(reason(auto(&p, true, None)).contains("does not run by itself"));
        assert!(reason(decide(&facts(&p), &groups(), &id("bob"), Decision::Stop, NOW)).contains("Reject it instead"));
        p.plan.auto = Some(crate::autonomy::AutoNote { runs_itself: true, why: "earned".into(), delay_secs: 60 });
        p.plan.hash = p.plan.content_hash();
        assert_eq!(auto(&p, true, None), Verdict::Approved { approvers: vec![Identity(AUTO.into())] });
        assert!(reason(auto(&p, false, None)).contains("lost its automatic level"));
        assert_eq!(reason(auto(&p, true, Some("automation is paused"))), "not now: automation is paused");
        // Stop before it starts is a rejection; while it runs, a stop request; from a stranger, nothing.
        assert_eq!(decide(&facts(&p), &groups(), &id("bob"), Decision::Stop, NOW), Verdict::Rejected);
        let mut running = p.clone();
        running.state = PlanState::Approved;
        let f = Facts { running: true, ..facts(&running) };
        assert_eq!(decide(&f, &groups(), &id("bob"), Decision::Stop, NOW), Verdict::StopRequested);
        assert!(
            reason(decide(&f, &groups(), &id("mallory"), Decision::Stop, NOW)).contains("you are not in sre-oncall")
        );
        assert!(reason(decide(&facts(&running), &groups(), &id("bob"), Decision::Stop, NOW)).contains("not running"));
        running.state = PlanState::Proposed;
        running.expires_at = NOW;
        assert!(reason(auto(&running, true, None)).contains("expired"));
    }

    #[test]
    fn self_approval_when_the_runbook_allows_it() {
        let p = plan(1, true);
        assert!(matches!(
            decide(&facts(&p), &groups(), &id("alice"), Decision::Approve, NOW),
            Verdict::Approved { .. }
        ));
    }
}
