//! Plans and approvals: proposals, the exactly-once decision on a click, chat's view of a plan, the kill switch and attempt budgets.

use super::*;

impl SqlStore {
    pub(super) async fn plan_status(&self, incident_id: i64) -> Result<Option<PlanStatus>> {
        let mut tx = self.pool.begin().await?;
        let latest = sqlx::query(
            "SELECT hash, auto_at FROM plans WHERE incident_id = $1 ORDER BY proposed_at DESC, hash LIMIT 1",
        )
        .bind(incident_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(latest) = latest else {
            tx.commit().await?;
            return Ok(None);
        };
        let (hash, auto_at): (String, Option<Millis>) = (latest.try_get("hash")?, latest.try_get("auto_at")?);
        let Some(plan) = Self::load_plan(&mut tx, &hash).await? else {
            tx.commit().await?;
            return Ok(None);
        };
        let approvers = Self::approvers(&mut tx, &hash).await?;
        let execution = sqlx::query("SELECT state, step FROM executions WHERE plan_hash = $1")
            .bind(hash)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| Ok::<_, sqlx::Error>((r.try_get("state")?, r.try_get("step")?)))
            .transpose()?;
        tx.commit().await?;
        Ok(Some(PlanStatus { plan, approvers, execution, auto_at }))
    }

    pub(super) async fn propose(&self, plan: &ProposedPlan, requested_by: &Identity, now: Millis) -> Result<()> {
        let mut tx = self.begin_write().await?;
        if Self::load_plan(&mut tx, &plan.hash).await?.is_some() {
            tx.commit().await?;
            return Ok(());
        }
        let current = Self::text_for(&mut tx, Self::CURRENT_PLAN, "hash", plan.incident_id).await?;
        let mut entries = Vec::new();
        if let Some(old) = current {
            sqlx::query("UPDATE plans SET state = 'superseded', decided_at = $1 WHERE hash = $2")
                .bind(now)
                .bind(old.clone())
                .execute(&mut *tx)
                .await?;
            entries.push(AuditEntry {
                at: now,
                kind: Kind::PlanSuperseded,
                incident_id: Some(plan.incident_id),
                actor: "medic".into(),
                data: serde_json::json!({"plan": old, "by": plan.hash}),
            });
        }
        let expires_at = now + (plan.approval.expires_after_secs as i64) * 1000;
        let auto_at = plan.auto.as_ref().filter(|a| a.runs_itself).map(|a| now + a.delay_secs as i64 * 1000);
        sqlx::query(
            "INSERT INTO plans (hash, incident_id, runbook, body, state, requested_by, proposed_at, expires_at, auto_at) \
             VALUES ($1, $2, $3, $4, 'proposed', $5, $6, $7, $8)",
        )
        .bind(plan.hash.clone())
        .bind(plan.incident_id)
        .bind(plan.runbook.clone())
        .bind(serde_json::to_string(plan)?)
        .bind(requested_by.0.clone())
        .bind(now)
        .bind(expires_at)
        .bind(auto_at)
        .execute(&mut *tx)
        .await?;
        entries.push(AuditEntry {
            at: now,
            kind: Kind::PlanProposed,
            incident_id: Some(plan.incident_id),
            actor: requested_by.0.clone(),
            data: serde_json::json!({
                "plan": plan.hash, "runbook": plan.runbook, "tier": plan.tier,
                "steps": plan.steps.iter().map(|s| crate::redact::redact(&format!("{}: {}", s.id, s.action.summary()))).collect::<Vec<_>>(),
                "expires_at": crate::time::rfc3339(expires_at),
                "auto": plan.auto.as_ref().map(|a| &a.why),
                "runs_at": auto_at.map(crate::time::rfc3339),
            }),
        });
        self.append_audit(&mut tx, entries).await?;
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn plan(&self, hash: &str) -> Result<Option<StoredPlan>> {
        let mut tx = self.pool.begin().await?;
        let p = Self::load_plan(&mut tx, hash).await?;
        tx.commit().await?;
        Ok(p)
    }

    pub(super) async fn decide(
        &self,
        hash: &str,
        click: &Click,
        groups: &Groups,
        guardrail: Option<String>,
    ) -> Result<(Verdict, Option<ApprovedPlan>)> {
        let mut tx = self.begin_write().await?;
        let Some(sp) = Self::load_plan(&mut tx, hash).await? else {
            tx.commit().await?;
            let short = &hash[..12.min(hash.len())];
            return Ok((Verdict::Refused { reason: format!("there is no plan {short}") }, None));
        };
        let incident = sp.plan.incident_id;
        let (incident_open, current) = Self::plan_facts(&mut tx, incident).await?;
        let running = sqlx::query("SELECT 1 FROM executions WHERE plan_hash = $1 AND state = 'running'")
            .bind(hash.to_string())
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        let approvers = Self::approvers(&mut tx, hash).await?;
        let facts = Facts {
            plan: &sp,
            incident_open,
            superseded_by: current.as_deref().filter(|h| *h != hash),
            approvers: &approvers,
            guardrail,
            running,
        };
        let verdict = approval::decide(&facts, groups, &click.who, click.decision, click.at);
        let record = |kind: Kind, data: serde_json::Value| AuditEntry {
            at: click.at,
            kind,
            incident_id: Some(incident),
            actor: click.who.0.clone(),
            data,
        };
        let mut approved = None;
        match &verdict {
            Verdict::Recorded { .. } | Verdict::Approved { .. } => {
                Self::record_approval(&mut tx, hash, &click.who.0, &click.via, click.at).await?;
                let mut entries =
                    vec![record(Kind::ApprovalRecorded, serde_json::json!({"plan": hash, "via": click.via}))];
                if let Verdict::Approved { approvers } = &verdict {
                    Self::mark_approved(&mut tx, hash, click.at).await?;
                    entries.push(record(
                        Kind::PlanApproved,
                        serde_json::json!({"plan": hash, "approvers": approvers, "runbook": sp.plan.runbook}),
                    ));
                    approved = Some(approval::approved(sp.plan.clone(), approvers.clone(), click.at));
                }
                self.append_audit(&mut tx, entries).await?;
            }
            Verdict::Rejected => {
                sqlx::query(
                    "UPDATE plans SET state = 'rejected', decided_at = $1, auto_at = NULL WHERE hash = $2 AND state = 'proposed'",
                )
                .bind(click.at)
                .bind(hash.to_string())
                .execute(&mut *tx)
                .await?;
                let mut entries = vec![record(
                    Kind::PlanRejected,
                    serde_json::json!({"plan": hash, "via": click.via, "stopped": click.decision == Decision::Stop,
                                       "reason": click.reason.as_deref().map(crate::redact::redact)}),
                )];
                entries.extend(self.stopped(&mut tx, &sp.plan, click).await?);
                self.append_audit(&mut tx, entries).await?;
            }
            Verdict::StopRequested => {
                sqlx::query("UPDATE executions SET stop_by = $1 WHERE plan_hash = $2 AND state = 'running'")
                    .bind(click.who.0.clone())
                    .bind(hash.to_string())
                    .execute(&mut *tx)
                    .await?;
                let mut entries =
                    vec![record(Kind::StopRequested, serde_json::json!({"plan": hash, "via": click.via}))];
                entries.extend(self.stopped(&mut tx, &sp.plan, click).await?);
                self.append_audit(&mut tx, entries).await?;
            }
            Verdict::Refused { reason } => {
                tracing::info!(plan = %hash, who = %click.who, via = %click.via, reason = %reason, "approval refused");
            }
            Verdict::AlreadyCounted { .. } => {}
        }
        tx.commit().await?;
        Ok((verdict, approved))
    }

    /// Who approved plan `hash`, in the order they did.
    pub(super) async fn approvers(tx: &mut Tx, hash: &str) -> Result<Vec<Identity>> {
        sqlx::query("SELECT approver FROM approvals WHERE plan_hash = $1 ORDER BY at, approver")
            .bind(hash.to_string())
            .fetch_all(&mut **tx)
            .await?
            .iter()
            .map(|r| Ok(Identity(r.try_get("approver")?)))
            .collect()
    }

    pub(super) async fn record_approval(tx: &mut Tx, hash: &str, who: &str, via: &str, at: Millis) -> Result<()> {
        sqlx::query("INSERT INTO approvals (plan_hash, approver, at, via) VALUES ($1, $2, $3, $4)")
            .bind(hash.to_string())
            .bind(who.to_string())
            .bind(at)
            .bind(via.to_string())
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Moves plan `hash` from proposed to approved (no longer waiting to start by itself).
    pub(super) async fn mark_approved(tx: &mut Tx, hash: &str, at: Millis) -> Result<()> {
        let moved = sqlx::query(
            "UPDATE plans SET state = 'approved', decided_at = $1, auto_at = NULL WHERE hash = $2 AND state = 'proposed'",
        )
        .bind(at)
        .bind(hash.to_string())
        .execute(&mut **tx)
        .await?
        .rows_affected();
        if moved != 1 {
            bail!("plan {hash} left the proposed state under the write lock");
        }
        Ok(())
    }

    /// A person rejected or stopped a plan that runs by itself: its runbook loses `auto`.
    async fn stopped(&self, tx: &mut Tx, plan: &ProposedPlan, click: &Click) -> Result<Option<AuditEntry>> {
        if !plan.auto.as_ref().is_some_and(|a| a.runs_itself) {
            return Ok(None);
        }
        let event = crate::autonomy::Event::Stopped { incident: plan.incident_id, by: click.who.0.clone() };
        Self::learn_in(tx, plan, event, u32::MAX, click.at, &click.who.0).await
    }

    pub(super) async fn set_paused(&self, by: &Identity, via: &str, paused: bool, now: Millis) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let was =
            sqlx::query("SELECT set_by FROM settings WHERE key = 'paused'").fetch_optional(&mut *tx).await?.is_some();
        if was != paused {
            if paused {
                sqlx::query("INSERT INTO settings (key, value, set_by, set_at) VALUES ('paused', 'true', $1, $2)")
                    .bind(by.0.clone())
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
            } else {
                sqlx::query("DELETE FROM settings WHERE key = 'paused'").execute(&mut *tx).await?;
            }
            let kind = if paused { Kind::AutomationPaused } else { Kind::AutomationResumed };
            let entry = AuditEntry {
                at: now,
                kind,
                incident_id: None,
                actor: by.0.clone(),
                data: serde_json::json!({"via": via}),
            };
            self.append_audit(&mut tx, vec![entry]).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn paused(&self) -> Result<Option<(String, Millis)>> {
        let r =
            sqlx::query("SELECT set_by, set_at FROM settings WHERE key = 'paused'").fetch_optional(&self.pool).await?;
        r.map(|r| Ok((r.try_get("set_by")?, r.try_get("set_at")?))).transpose()
    }

    pub(super) async fn attempts(&self, incident_id: i64, since: Millis) -> Result<u32> {
        let n: i64 = sqlx::query(
            "SELECT COUNT(DISTINCT plan_hash) AS n FROM attempts \
             WHERE at >= $1 AND alert_key IN (SELECT key FROM alerts WHERE incident_id = $2)",
        )
        .bind(since)
        .bind(incident_id)
        .fetch_one(&self.pool)
        .await?
        .try_get("n")?;
        Ok(n as u32)
    }
}
