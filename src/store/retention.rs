//! Retention: resolved incidents (with their alerts, plans, approvals, executions, attempts
//! and chat deliveries), finished chat deliveries, and a prefix of the audit log behind a
//! checkpoint that `medic audit verify` starts from. Runs under the write lock, so every
//! replica may run it (the second finds nothing to do).

use super::*;
use serde::Deserialize;
use std::time::Duration;

/// The `retention` config section. Absent durations keep everything (the default).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Resolved incidents resolved longer ago than this are removed, with their alerts,
    /// plans, approvals, executions, attempts and chat deliveries.
    #[serde(default, with = "humantime_serde::option")]
    pub incidents: Option<Duration>,
    /// Chat deliveries sent or refused longer ago than this (root messages of unresolved
    /// incidents stay: their updates need them).
    #[serde(default, with = "humantime_serde::option")]
    pub outbox: Option<Duration>,
    /// Audit records older than this, behind a checkpoint (the newest record always stays).
    #[serde(default, with = "humantime_serde::option")]
    pub audit: Option<Duration>,
    /// How often retention runs (default 1h).
    #[serde(default, with = "humantime_serde::option")]
    pub every: Option<Duration>,
}

impl Config {
    pub fn every(&self) -> Duration {
        self.every.unwrap_or(Duration::from_secs(3600))
    }

    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (key, d) in [("incidents", self.incidents), ("outbox", self.outbox), ("audit", self.audit)] {
            if d.is_some_and(|d| d < Duration::from_secs(3600)) {
                out.push(format!("retention.{key}: expected at least 1h"));
            }
        }
        if self.every.is_some_and(|d| d < Duration::from_secs(1)) {
            out.push("retention.every: expected at least 1s".into());
        }
        out
    }
}

/// What one run removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Pruned {
    pub incidents: u64,
    pub outbox: u64,
    pub audit: u64,
}

fn before(now: Millis, d: Duration) -> Millis {
    now - d.as_millis() as Millis
}

impl SqlStore {
    pub(super) async fn prune(&self, now: Millis, cfg: &Config) -> Result<Pruned> {
        let mut out = Pruned::default();
        let mut tx = self.begin_write().await?;
        if let Some(d) = cfg.incidents {
            let old = "SELECT id FROM incidents WHERE state = 'resolved' AND resolved_at < $1";
            let plans = format!("SELECT hash FROM plans WHERE incident_id IN ({old})");
            for sql in [
                format!("DELETE FROM approvals WHERE plan_hash IN ({plans})"),
                format!("DELETE FROM executions WHERE plan_hash IN ({plans})"),
                format!("DELETE FROM attempts WHERE plan_hash IN ({plans})"),
                format!("DELETE FROM plans WHERE incident_id IN ({old})"),
                format!("DELETE FROM chat_outbox WHERE incident_id IN ({old})"),
                format!("DELETE FROM alerts WHERE incident_id IN ({old})"),
            ] {
                sqlx::query(&sql).bind(before(now, d)).execute(&mut *tx).await?;
            }
            out.incidents = sqlx::query("DELETE FROM incidents WHERE state = 'resolved' AND resolved_at < $1")
                .bind(before(now, d))
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        if let Some(d) = cfg.outbox {
            out.outbox = sqlx::query(
                "DELETE FROM chat_outbox WHERE state <> 'pending' AND COALESCE(sent_at, due_at) < $1 \
                 AND NOT (op = 'post' AND incident_id IN (SELECT id FROM incidents WHERE state <> 'resolved'))",
            )
            .bind(before(now, d))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        if let Some(d) = cfg.audit {
            let last = sqlx::query(
                "SELECT seq, hash FROM audit_log WHERE at < $1 AND seq < (SELECT MAX(seq) FROM audit_log) \
                 ORDER BY seq DESC LIMIT 1",
            )
            .bind(before(now, d))
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(r) = last {
                let (seq, hash): (i64, String) = (r.try_get("seq")?, r.try_get("hash")?);
                let removed = sqlx::query("DELETE FROM audit_log WHERE seq <= $1").bind(seq).execute(&mut *tx).await?;
                out.audit = removed.rows_affected();
                let total: i64 = sqlx::query("SELECT COALESCE(MAX(removed), 0) AS n FROM audit_checkpoint")
                    .fetch_one(&mut *tx)
                    .await?
                    .try_get("n")?;
                sqlx::query(
                    "INSERT INTO audit_checkpoint (id, seq, hash, removed, at) VALUES (1, $1, $2, $3, $4) \
                     ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, \
                     removed = excluded.removed, at = excluded.at",
                )
                .bind(seq)
                .bind(hash.clone())
                .bind(total + out.audit as i64)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                let entry = AuditEntry {
                    at: now,
                    kind: Kind::AuditPruned,
                    incident_id: None,
                    actor: "medic".into(),
                    data: serde_json::json!({"up_to_seq": seq, "hash": hash, "removed": out.audit}),
                };
                self.append_audit(&mut tx, vec![entry]).await?;
            }
        }
        tx.commit().await?;
        Ok(out)
    }

    pub(super) async fn audit_checkpoint(&self) -> Result<Option<(i64, String)>> {
        let r = sqlx::query("SELECT seq, hash FROM audit_checkpoint WHERE id = 1").fetch_optional(&self.pool).await?;
        r.map(|r| Ok((r.try_get("seq")?, r.try_get("hash")?))).transpose()
    }
}

/// The audit chain as `medic audit verify` checks it: from the checkpoint retention left (or
/// from the first record), every record in order; and the checkpoint attested by the newest
/// `audit_pruned` record in the chain. `Ok(Err(why))` when it is broken.
pub async fn verify_audit(store: &dyn Store) -> Result<std::result::Result<Verified, String>> {
    let checkpoint = store.audit_checkpoint().await?;
    let mut v = match &checkpoint {
        Some((seq, hash)) => audit::Verifier::from_checkpoint(*seq, hash),
        None => audit::Verifier::default(),
    };
    let mut attested: Option<(i64, String)> = None;
    let mut after = checkpoint.as_ref().map(|c| c.0).unwrap_or(0);
    loop {
        let page = store.audit_page(after, 5000).await.context("reading the audit log")?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for r in &page {
            if let Err(broken) = v.check(r) {
                return Ok(Err(broken.to_string()));
            }
            if r.kind == Kind::AuditPruned.as_str() {
                let d: serde_json::Value = serde_json::from_str(&r.data)?;
                attested = Some((d["up_to_seq"].as_i64().unwrap_or(-1), d["hash"].as_str().unwrap_or("").to_string()));
            }
        }
    }
    if let Some((seq, hash)) = &checkpoint
        && attested.as_ref() != Some(&(*seq, hash.clone()))
    {
        return Ok(Err(format!(
            "the checkpoint at record {seq} is not the one the chain's newest audit_pruned record attests \
             ({attested:?}): the checkpoint or the records behind it were altered"
        )));
    }
    let (seq, hash) = v.head();
    Ok(Ok(Verified { checked: v.checked, head: (seq, hash.to_string()), from: checkpoint.map(|c| c.0) }))
}

/// An intact chain: records checked, its head, and the checkpoint it started from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub checked: u64,
    pub head: (i64, String),
    pub from: Option<i64>,
}
