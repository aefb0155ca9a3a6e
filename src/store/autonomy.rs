//! Earned autonomy: each runbook's record and level (changed in the transaction that records
//! what changed it), plans that run by themselves once their delay has passed, Stop, and the
//! per-runbook figures `medic runbooks` and `/v1/runbooks` show.

use super::*;
use crate::autonomy::{self as auto, Event, Record};

/// A runbook's record with its figures from the executions and the shadow record.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct RunbookStats {
    #[serde(flatten)]
    pub record: Record,
    /// Median time from the incident's first alert to the verified end of its plan, seconds.
    pub median_fix_secs: Option<f64>,
    /// The newest executions' outcomes, newest first (`succeeded`, `rolled_back`, …).
    pub last_outcomes: Vec<String>,
    /// Shadow mode: resolved incidents whose plan from this runbook was never executed
    /// (people handled them), and how many of those resolved without a person closing them.
    pub shadow_incidents: u32,
    pub shadow_resolved_alone: u32,
}

const RECORD_COLS: &str = "runbook, auto, streak, verified, failed, last_incident, last_by, reason, changed_at";

impl SqlStore {
    async fn load_record(ex: impl sqlx::Executor<'_, Database = Any>, runbook: &str) -> Result<Record> {
        let row = sqlx::query(&format!("SELECT {RECORD_COLS} FROM runbook_autonomy WHERE runbook = $1"))
            .bind(runbook.to_string())
            .fetch_optional(ex)
            .await?;
        Ok(match row {
            Some(r) => record_of(&r)?,
            None => Record { runbook: runbook.to_string(), ..Record::default() },
        })
    }

    /// Applies `event` to the plan's runbook record inside `tx`; the audit entry when its level
    /// changed.
    pub(super) async fn learn_in(
        tx: &mut Tx,
        plan: &ProposedPlan,
        event: Event,
        grant_after: u32,
        at: Millis,
        actor: &str,
    ) -> Result<Option<AuditEntry>> {
        let may = auto::may_grant(plan.autonomy, plan.tier).is_ok();
        let mut r = Self::load_record(&mut **tx, &plan.runbook).await?;
        let change = auto::learn(&mut r, &event, grant_after, may);
        Self::save_record(tx, &r, at).await?;
        Ok(change.map(|c| change_entry(&plan.runbook, c, Some(plan.incident_id), at, actor, None)))
    }

    async fn save_record(tx: &mut Tx, r: &Record, at: Millis) -> Result<()> {
        let sql = format!(
            "INSERT INTO runbook_autonomy ({RECORD_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) {}",
            Self::upsert_clause("runbook", RECORD_COLS)
        );
        sqlx::query(&sql)
            .bind(r.runbook.clone())
            .bind(r.auto as i64)
            .bind(r.streak as i64)
            .bind(r.verified as i64)
            .bind(r.failed as i64)
            .bind(r.last_incident)
            .bind(r.last_by.clone())
            .bind(r.reason.clone())
            .bind(at)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    pub(super) async fn autonomy(&self, runbook: &str) -> Result<Record> {
        Self::load_record(&self.pool, runbook).await
    }

    pub(super) async fn set_autonomy(
        &self,
        runbook: &RunbookRef<'_>,
        grant: bool,
        by: &Identity,
        via: &str,
        now: Millis,
    ) -> Result<std::result::Result<String, String>> {
        if grant && let Err(why) = auto::may_grant(runbook.autonomy, runbook.tier) {
            return Ok(Err(format!("{} cannot run by itself: {why}", runbook.id)));
        }
        let mut tx = self.begin_write().await?;
        let mut r = Self::load_record(&mut *tx, runbook.id).await?;
        let event = if grant { Event::Granted { by: by.0.clone() } } else { Event::Revoked { by: by.0.clone() } };
        let change = auto::learn(&mut r, &event, u32::MAX, true);
        let said = match change {
            Some(c) => {
                Self::save_record(&mut tx, &r, now).await?;
                let entry = change_entry(runbook.id, c, None, now, &by.0, Some(via));
                self.append_audit(&mut tx, vec![entry]).await?;
                Ok(format!("{} is now at `{}`", runbook.id, if grant { "auto" } else { "approve" }))
            }
            None if grant => Err(format!("{} already runs by itself where policy allows", runbook.id)),
            None => {
                // Revoking at `approve` still resets the streak: a person wants it earned again.
                Self::save_record(&mut tx, &r, now).await?;
                let c =
                    auto::Change { granted: false, reason: format!("revoked by {}; the streak starts again", by.0) };
                self.append_audit(&mut tx, vec![change_entry(runbook.id, c, None, now, &by.0, Some(via))]).await?;
                Ok(format!("{} stays at `approve`; its streak starts again from 0", runbook.id))
            }
        };
        tx.commit().await?;
        Ok(said)
    }

    pub(super) async fn due_auto_plans(&self, now: Millis) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT hash, incident_id FROM plans WHERE state = 'proposed' AND auto_at IS NOT NULL AND auto_at <= $1 \
             ORDER BY auto_at",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok((r.try_get("hash")?, r.try_get("incident_id")?))).collect()
    }

    /// Approves a plan that runs by itself, exactly once, under the write lock; a refusal
    /// clears its `auto_at` (it now waits for a person) and is audited.
    pub(super) async fn auto_approve(
        &self,
        hash: &str,
        guardrail: Option<String>,
        now: Millis,
    ) -> Result<(Verdict, Option<ApprovedPlan>)> {
        let mut tx = self.begin_write().await?;
        let Some(sp) = Self::load_plan(&mut tx, hash).await? else {
            tx.commit().await?;
            return Ok((Verdict::Refused { reason: "no such plan".into() }, None));
        };
        let incident = sp.plan.incident_id;
        let (facts_state, current) = Self::plan_facts(&mut tx, incident).await?;
        let record = Self::load_record(&mut *tx, &sp.plan.runbook).await?;
        let facts = Facts {
            plan: &sp,
            incident_open: facts_state,
            superseded_by: current.as_deref().filter(|h| *h != hash),
            approvers: &[],
            guardrail,
            running: false,
        };
        let verdict = approval::decide_auto(&facts, record.auto, now);
        let entry = |kind: Kind, data: serde_json::Value| AuditEntry {
            at: now,
            kind,
            incident_id: Some(incident),
            actor: approval::AUTO.into(),
            data,
        };
        let mut approved = None;
        match &verdict {
            Verdict::Approved { approvers } => {
                Self::record_approval(&mut tx, hash, approval::AUTO, "auto", now).await?;
                Self::mark_approved(&mut tx, hash, now).await?;
                let why = sp.plan.auto.as_ref().map(|a| a.why.clone());
                self.append_audit(
                    &mut tx,
                    vec![entry(
                        Kind::PlanApproved,
                        serde_json::json!({"plan": hash, "approvers": approvers, "runbook": sp.plan.runbook, "auto": why}),
                    )],
                )
                .await?;
                approved = Some(approval::approved(sp.plan.clone(), approvers.clone(), now));
            }
            Verdict::Refused { reason } => {
                sqlx::query("UPDATE plans SET auto_at = NULL WHERE hash = $1")
                    .bind(hash.to_string())
                    .execute(&mut *tx)
                    .await?;
                self.append_audit(
                    &mut tx,
                    vec![entry(Kind::AutoRunDeclined, serde_json::json!({"plan": hash, "reason": reason}))],
                )
                .await?;
            }
            _ => {}
        }
        tx.commit().await?;
        Ok((verdict, approved))
    }

    /// Whether incident `id` is open, and its current proposed plan.
    pub(super) async fn plan_facts(tx: &mut Tx, incident: i64) -> Result<(bool, Option<String>)> {
        let state = Self::text_for(tx, "SELECT state FROM incidents WHERE id = $1", "state", incident).await?;
        let current = Self::text_for(tx, Self::CURRENT_PLAN, "hash", incident).await?;
        Ok((state.as_deref().is_some_and(|s| s != "resolved"), current))
    }

    pub(super) async fn stop_requested(&self, hash: &str) -> Result<Option<String>> {
        let r = sqlx::query("SELECT stop_by FROM executions WHERE plan_hash = $1")
            .bind(hash.to_string())
            .fetch_optional(&self.pool)
            .await?;
        Ok(r.map(|r| r.try_get::<Option<String>, _>("stop_by")).transpose()?.flatten())
    }

    pub(super) async fn runbook_stats(&self, shadow: bool) -> Result<Vec<RunbookStats>> {
        let mut out: BTreeMap<String, RunbookStats> = BTreeMap::new();
        let rows = sqlx::query(&format!("SELECT {RECORD_COLS} FROM runbook_autonomy")).fetch_all(&self.pool).await?;
        for r in &rows {
            let record = record_of(r)?;
            out.insert(record.runbook.clone(), RunbookStats { record, ..Default::default() });
        }
        // Executions, newest first: outcomes and times to a verified fix.
        let rows = sqlx::query(
            "SELECT p.runbook, e.state, e.finished_at, i.opened_at FROM executions e \
             JOIN plans p ON p.hash = e.plan_hash JOIN incidents i ON i.id = e.incident_id \
             ORDER BY e.started_at DESC LIMIT 5000",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut fixes: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for r in &rows {
            let rb: String = r.try_get("runbook")?;
            let state: String = r.try_get("state")?;
            let s = stats_of(&mut out, &rb);
            if s.last_outcomes.len() < 5 {
                s.last_outcomes.push(state.clone());
            }
            let finished: Option<i64> = r.try_get("finished_at")?;
            if let (true, Some(f)) = (state == "succeeded", finished) {
                let opened: i64 = r.try_get("opened_at")?;
                fixes.entry(rb).or_default().push((f - opened) as f64 / 1000.0);
            }
        }
        for (rb, mut v) in fixes {
            v.sort_by(f64::total_cmp);
            let m = v.len() / 2;
            let median = if v.len() % 2 == 1 { v[m] } else { (v[m - 1] + v[m]) / 2.0 };
            if let Some(s) = out.get_mut(&rb) {
                s.median_fix_secs = Some(median);
            }
        }
        if !shadow {
            return Ok(out.into_values().collect());
        }
        // Shadow: resolved incidents with a plan and no execution; resolved alone unless a
        // person resolved it by hand.
        let rows = sqlx::query(
            "SELECT p.runbook, COUNT(DISTINCT i.id) AS n, \
             COUNT(DISTINCT CASE WHEN NOT EXISTS (SELECT 1 FROM audit_log a WHERE a.incident_id = i.id \
               AND a.kind = 'incident_resolved' AND a.actor <> 'medic') THEN i.id END) AS alone \
             FROM incidents i JOIN plans p ON p.incident_id = i.id \
             WHERE i.state = 'resolved' AND NOT EXISTS (SELECT 1 FROM executions e WHERE e.incident_id = i.id) \
             GROUP BY p.runbook",
        )
        .fetch_all(&self.pool)
        .await?;
        for r in &rows {
            let rb: String = r.try_get("runbook")?;
            let s = stats_of(&mut out, &rb);
            s.shadow_incidents = r.try_get::<i64, _>("n")? as u32;
            s.shadow_resolved_alone = r.try_get::<i64, _>("alone")? as u32;
        }
        Ok(out.into_values().collect())
    }
}

fn stats_of<'a>(out: &'a mut BTreeMap<String, RunbookStats>, rb: &str) -> &'a mut RunbookStats {
    out.entry(rb.to_string()).or_insert_with(|| RunbookStats {
        record: Record { runbook: rb.to_string(), ..Record::default() },
        ..Default::default()
    })
}

/// What a person grants or revokes: a runbook's id, declared ceiling and tier.
pub struct RunbookRef<'a> {
    pub id: &'a str,
    pub autonomy: crate::runbook::Autonomy,
    pub tier: u8,
}

fn record_of(r: &AnyRow) -> Result<Record> {
    Ok(Record {
        runbook: r.try_get("runbook")?,
        auto: r.try_get::<i64, _>("auto")? != 0,
        streak: r.try_get::<i64, _>("streak")? as u32,
        verified: r.try_get::<i64, _>("verified")? as u32,
        failed: r.try_get::<i64, _>("failed")? as u32,
        last_incident: r.try_get("last_incident")?,
        last_by: r.try_get("last_by")?,
        reason: r.try_get("reason")?,
    })
}

fn change_entry(
    runbook: &str,
    c: auto::Change,
    incident: Option<i64>,
    at: Millis,
    actor: &str,
    via: Option<&str>,
) -> AuditEntry {
    AuditEntry {
        at,
        kind: if c.granted { Kind::AutonomyGranted } else { Kind::AutonomyLost },
        incident_id: incident,
        actor: actor.to_string(),
        data: serde_json::json!({"runbook": runbook, "level": if c.granted { "auto" } else { "approve" },
                                 "reason": crate::redact::redact(&c.reason), "via": via}),
    }
}
