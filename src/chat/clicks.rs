//! What a click on Approve / Reject / More evidence does, whatever platform it came from. The
//! adapters verify the request, say who clicked (`platform:user`) and which groups that person
//! is in; this module applies the approval policy through the store (exactly once), starts the
//! executor for the click that completed an approval, and queues the chat updates. A refusal
//! is returned for the adapter to show privately to the clicker.

use super::Notifier;
use crate::approval::{Click, Decision, Groups, Identity, Verdict};
use crate::executor::{Executor, Outcome};
use crate::runbook::Runbook;
use crate::store::Store;
use crate::time::Clock;
use std::sync::Arc;

pub struct Clicks {
    pub store: Arc<dyn Store>,
    pub notifier: Arc<Notifier>,
    pub executor: Arc<Executor>,
    pub runbooks: Vec<Runbook>,
    pub guardrails: crate::guardrails::GuardrailConfig,
    pub clock: Arc<dyn Clock>,
}

/// What the adapter tells the clicker, privately; `None` when the message update says it all.
pub type Reply = Option<String>;

impl Clicks {
    /// A decision on plan `hash` of incident `incident_id` by `who` (member of `groups`).
    #[allow(clippy::too_many_arguments)]
    pub async fn decide(
        self: &Arc<Self>,
        incident_id: i64,
        hash: &str,
        who: Identity,
        decision: Decision,
        via: &str,
        reason: Option<String>,
        groups: &Groups,
    ) -> anyhow::Result<Reply> {
        let now = self.clock.now();
        let Some(stored) = self.store.plan(hash).await? else {
            return Ok(Some(format!("there is no plan {}", &hash[..12.min(hash.len())])));
        };
        if stored.plan.incident_id != incident_id {
            return Ok(Some("this button does not belong to that incident's plan".into()));
        }
        let (guardrail, warnings) = if decision == Decision::Approve {
            let a = self.guardrails(incident_id, &stored.plan.runbook, now).await?;
            (a.refusal(), a.warnings)
        } else {
            (None, Vec::new())
        };
        let click = Click { who: who.clone(), decision, via: via.to_string(), at: now, reason: reason.clone() };
        let (verdict, approved) = self.store.decide(hash, &click, groups, guardrail).await?;
        // The warnings an approver clicked through, in the thread: only for an approval that
        // counted (a refused click, anyone's, says nothing in public).
        if matches!(verdict, Verdict::Recorded { .. } | Verdict::Approved { .. }) {
            for w in &warnings {
                self.notifier.thread(incident_id, &format!("warning: {w}")).await?;
            }
        }
        let reply = match verdict {
            Verdict::Refused { reason } => return Ok(Some(reason)),
            Verdict::AlreadyCounted { .. } => return Ok(Some("your approval is already counted".into())),
            Verdict::Recorded { approvals, needed } => {
                self.notifier.thread(incident_id, &format!("{} approved ({approvals} of {needed})", who.0)).await?;
                None
            }
            Verdict::Rejected => {
                let why = reason.map(|r| format!(": {r}")).unwrap_or_default();
                let what = if decision == Decision::Stop { "stopped before it started" } else { "rejected" };
                self.notifier.thread(incident_id, &format!("plan {what} by {}{why}; nothing runs", who.0)).await?;
                None
            }
            Verdict::StopRequested => {
                self.notifier
                    .thread(
                        incident_id,
                        &format!("{} stopped the plan: it halts before its next step and rolls back what ran", who.0),
                    )
                    .await?;
                None
            }
            Verdict::Approved { approvers } => {
                let names: Vec<&str> = approvers.iter().map(|a| a.0.as_str()).collect();
                self.notifier
                    .thread(incident_id, &format!("plan {} approved by {}", &hash[..12], names.join(", ")))
                    .await?;
                None
            }
        };
        self.notifier.incident_changed(incident_id).await?;
        if let Some(approved) = approved {
            self.start(incident_id, approved);
        }
        Ok(reply)
    }

    /// The guardrails for incident `incident_id` and a plan of `runbook` now.
    async fn guardrails(
        &self,
        incident_id: i64,
        runbook: &str,
        now: crate::time::Millis,
    ) -> anyhow::Result<crate::guardrails::Assessment> {
        let service = self
            .store
            .incident(incident_id)
            .await?
            .and_then(|(_, alerts)| alerts.iter().find_map(|a| a.alert.labels.get("service").cloned()));
        let store = self.store.as_ref();
        crate::store::guardrails_for(
            store,
            &self.guardrails,
            &self.runbooks,
            incident_id,
            runbook,
            service.as_deref(),
            now,
        )
        .await
    }

    /// Starts the plans that run by themselves whose delay has passed, each exactly once (any
    /// replica may call this). A plan is declined, and waits for a person, when its runbook
    /// lost `auto` meanwhile or a guardrail blocks or warns (a freeze or a deploy stops
    /// automation; a person may still approve).
    pub async fn run_due(self: &Arc<Self>) -> anyhow::Result<()> {
        let now = self.clock.now();
        for (hash, incident_id) in self.store.due_auto_plans(now).await? {
            let Some(stored) = self.store.plan(&hash).await? else { continue };
            let a = self.guardrails(incident_id, &stored.plan.runbook, now).await?;
            let guardrail = a.stops_automation();
            let (verdict, approved) = self.store.auto_approve(&hash, guardrail, now).await?;
            match (verdict, approved) {
                (_, Some(approved)) => {
                    let why = stored.plan.auto.as_ref().map(|a| a.why.as_str()).unwrap_or("running automatically");
                    self.notifier.thread(incident_id, &format!("plan {} started: {why}", &hash[..12])).await?;
                    self.notifier.incident_changed(incident_id).await?;
                    self.start(incident_id, approved);
                }
                (Verdict::Refused { reason }, None) => {
                    let text = format!("not running plan {} automatically: {reason}; it needs approval", &hash[..12]);
                    self.notifier.thread(incident_id, &text).await?;
                    self.notifier.incident_changed(incident_id).await?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Runs the approved plan in the background.
    fn start(self: &Arc<Self>, incident_id: i64, approved: crate::approval::ApprovedPlan) {
        let me = self.clone();
        tokio::spawn(async move {
            if let Err(e) = me.execute(incident_id, approved).await {
                tracing::error!(incident = incident_id, error = %format!("{e:#}"), "execution failed to run");
            }
        });
    }

    /// Runs the plan; each step's result reaches the thread as the step ends (the executor's
    /// progress callback), and the outcome after the last.
    async fn execute(&self, incident_id: i64, approved: crate::approval::ApprovedPlan) -> anyhow::Result<()> {
        let outcome = self.executor.execute(approved).await?;
        let last = match outcome {
            Outcome::Succeeded => "verified: every post-check passed".to_string(),
            Outcome::RolledBack { step, reason } => format!("rolled back after {step}: {reason}"),
            Outcome::AlreadyClaimed => "already executed".to_string(),
            Outcome::Fenced { step } => format!("stopped before {step}: another replica took the execution over"),
        };
        self.notifier.thread(incident_id, &last).await?;
        self.notifier.incident_changed(incident_id).await.map(drop)
    }

    /// Every hypothesis' evidence and what could not be seen, for the thread.
    /// Posts every hypothesis with its evidence in the thread, at most once a minute per
    /// incident (whoever clicks, on whichever replica); a click within the minute is told so.
    pub async fn more_evidence(&self, incident_id: i64) -> anyhow::Result<Reply> {
        let Some((_, d)) = super::latest_diagnosis(self.store.as_ref(), incident_id).await? else { return Ok(None) };
        if !self.store.within_rate("more-evidence", &incident_id.to_string(), 1, self.clock.now()).await? {
            return Ok(Some("the evidence was posted in the thread within the last minute".into()));
        }
        self.notifier.thread(incident_id, &super::more_evidence(&d)).await?;
        Ok(None)
    }
}
