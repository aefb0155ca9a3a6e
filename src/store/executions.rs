//! Executions: the one claim of an approved plan, its step events, its lease, and the orphans interrupted.

use super::*;
use crate::autonomy::Event;

impl SqlStore {
    pub(super) async fn claim_execution(&self, approved: &ApprovedPlan, owner: &str, now: Millis) -> Result<bool> {
        let p = approved.plan();
        let mut tx = self.begin_write().await?;
        let inserted = sqlx::query(
            "INSERT INTO executions (plan_hash, incident_id, state, step, owner, started_at, heartbeat_at) \
             VALUES ($1, $2, 'running', 0, $3, $4, $4) ON CONFLICT (plan_hash) DO NOTHING",
        )
        .bind(p.hash.clone())
        .bind(p.incident_id)
        .bind(owner.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if inserted {
            sqlx::query(
                "INSERT INTO attempts (alert_key, plan_hash, at) SELECT key, $1, $2 FROM alerts WHERE incident_id = $3 \
                 ON CONFLICT (alert_key, plan_hash) DO NOTHING",
            )
            .bind(p.hash.clone())
            .bind(now)
            .bind(p.incident_id)
            .execute(&mut *tx)
            .await?;
            let entry = AuditEntry {
                at: now,
                kind: Kind::ExecutionStarted,
                incident_id: Some(p.incident_id),
                actor: "medic".into(),
                data: serde_json::json!({"plan": p.hash, "runbook": p.runbook, "approvers": approved.approvers(), "owner": owner}),
            };
            self.append_audit(&mut tx, vec![entry]).await?;
        }
        tx.commit().await?;
        Ok(inserted)
    }

    pub(super) async fn execution_event(
        &self,
        hash: &str,
        owner: &str,
        step: i64,
        state: ExecState,
        mut entry: AuditEntry,
        grant_after: u32,
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let finished = (state != ExecState::Running).then_some(entry.at);
        let held = sqlx::query(
            "UPDATE executions SET state = $1, step = $2, finished_at = $3, heartbeat_at = $4 WHERE plan_hash = $5 \
             AND owner = $6 AND state = 'running'",
        )
        .bind(state.as_str())
        .bind(step)
        .bind(finished)
        .bind(entry.at)
        .bind(hash.to_string())
        .bind(owner.to_string())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !held {
            // What a replica that lost the execution did is still said, and by whom.
            entry.data["fenced"] = serde_json::json!(true);
            entry.data["owner"] = serde_json::json!(owner);
            self.append_audit(&mut tx, vec![entry]).await?;
            tx.commit().await?;
            return Ok(false);
        }
        let mut entries = Vec::new();
        if state != ExecState::Running
            && let Some(sp) = Self::load_plan(&mut tx, hash).await?
        {
            let p = &sp.plan;
            let event = match state {
                ExecState::Succeeded if entry.data["dry_run"] != true => {
                    let approvers = Self::approvers(&mut tx, hash).await?.into_iter().map(|a| a.0).collect();
                    Some(Event::Verified { incident: p.incident_id, approvers })
                }
                ExecState::RolledBack | ExecState::Failed if entry.data.get("stopped_by").is_none() => {
                    let why = entry.data["reason"].as_str().unwrap_or("the plan failed");
                    Some(Event::Failed {
                        incident: p.incident_id,
                        reason: format!("{}: {why}", state.as_str().replace('_', " ")),
                    })
                }
                _ => None,
            };
            if let Some(event) = event {
                entries.extend(Self::learn_in(&mut tx, p, event, grant_after, entry.at, "medic").await?);
            }
        }
        entries.insert(0, entry);
        self.append_audit(&mut tx, entries).await?;
        tx.commit().await?;
        Ok(true)
    }

    pub(super) async fn execution_heartbeat(
        &self,
        hash: &str,
        owner: &str,
        now: Millis,
        lease: Millis,
    ) -> Result<bool> {
        // No write lock: one row, one statement. `interrupt_running` re-checks the lapse in its
        // own UPDATE, so a renewal and an interruption never both win.
        let renewed = sqlx::query(
            "UPDATE executions SET heartbeat_at = $1 WHERE plan_hash = $2 AND owner = $3 AND state = 'running' \
             AND COALESCE(heartbeat_at, started_at) >= $4",
        )
        .bind(now)
        .bind(hash.to_string())
        .bind(owner.to_string())
        .bind(now - lease)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(renewed == 1)
    }

    pub(super) async fn interrupt_running(
        &self,
        owner: &str,
        own: bool,
        stale_before: Millis,
        now: Millis,
    ) -> Result<Vec<(String, i64)>> {
        // Executions cut off mid-plan, and plans approved longer than a lease ago that no
        // execution ever claimed (the replica that approved them died before it started).
        let orphans = "SELECT plan_hash, incident_id, step, owner FROM executions WHERE state = 'running' \
             AND ((owner = $1 AND $2 = 1) OR (owner <> $1 AND COALESCE(heartbeat_at, started_at) < $3))";
        let unclaimed_where = "FROM plans p WHERE state = 'approved' AND decided_at < {t} \
             AND NOT EXISTS (SELECT 1 FROM executions e WHERE e.plan_hash = p.hash)";
        let unclaimed = format!("SELECT hash AS plan_hash, incident_id {}", unclaimed_where.replace("{t}", "$1"));
        let unclaimed_at_3 = format!("SELECT hash AS plan_hash {}", unclaimed_where.replace("{t}", "$3"));
        // Looked for first, in one round trip, without the write lock: every replica asks
        // every few seconds.
        let any = format!(
            "SELECT plan_hash FROM ({orphans}) AS o UNION ALL SELECT plan_hash FROM ({unclaimed_at_3}) AS u LIMIT 1"
        );
        let any = sqlx::query(&any)
            .bind(owner.to_string())
            .bind(own as i64)
            .bind(stale_before)
            .fetch_optional(&self.pool)
            .await?
            .is_some();
        if !any {
            return Ok(Vec::new());
        }
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query(orphans)
            .bind(owner.to_string())
            .bind(own as i64)
            .bind(stale_before)
            .fetch_all(&mut *tx)
            .await?;
        let mut found = Vec::new();
        for r in &rows {
            let (hash, incident, step, ran_by): (String, i64, i64, String) =
                (r.try_get("plan_hash")?, r.try_get("incident_id")?, r.try_get("step")?, r.try_get("owner")?);
            // The lapse is checked again as the row is written: a renewal that committed since
            // the SELECT keeps the execution with its owner.
            let marked = sqlx::query(
                "UPDATE executions SET state = 'interrupted', finished_at = $1 WHERE plan_hash = $2 \
                 AND state = 'running' AND ((owner = $3 AND $4 = 1) OR (owner <> $3 AND COALESCE(heartbeat_at, started_at) < $5))",
            )
            .bind(now)
            .bind(hash.clone())
            .bind(owner.to_string())
            .bind(own as i64)
            .bind(stale_before)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if marked == 0 {
                continue;
            }
            let data = serde_json::json!({"plan": hash, "step": step, "owner": ran_by,
                "reason": "medic stopped while this plan ran; it is not re-run: a person must check the state of each step"});
            found.push((hash, incident, data));
        }
        for r in sqlx::query(&unclaimed).bind(stale_before).fetch_all(&mut *tx).await? {
            let (hash, incident): (String, i64) = (r.try_get("plan_hash")?, r.try_get("incident_id")?);
            // Claimed as interrupted: a late claim by the approving replica finds it taken.
            sqlx::query(
                "INSERT INTO executions (plan_hash, incident_id, state, step, owner, started_at, heartbeat_at, finished_at) \
                 VALUES ($1, $2, 'interrupted', 0, '', $3, $3, $3) ON CONFLICT (plan_hash) DO NOTHING",
            )
            .bind(hash.clone())
            .bind(incident)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            let data = serde_json::json!({"plan": hash, "step": 0,
                "reason": "the plan was approved, but the replica that was to run it stopped before its first step; it is not run now: a person must decide"});
            found.push((hash, incident, data));
        }
        let mut hashes = Vec::new();
        let mut entries = Vec::new();
        for (hash, incident, data) in found {
            let entry = |kind| AuditEntry {
                at: now,
                kind,
                incident_id: Some(incident),
                actor: "medic".into(),
                data: data.clone(),
            };
            entries.push(entry(Kind::ExecutionInterrupted));
            entries.push(entry(Kind::Escalated));
            if let Some(sp) = Self::load_plan(&mut tx, &hash).await? {
                let event = Event::Failed { incident, reason: "interrupted: medic stopped while it ran".into() };
                // A loss needs no threshold.
                entries.extend(Self::learn_in(&mut tx, &sp.plan, event, u32::MAX, now, "medic").await?);
            }
            hashes.push((hash, incident));
        }
        self.append_audit(&mut tx, entries).await?;
        tx.commit().await?;
        Ok(hashes)
    }
}
