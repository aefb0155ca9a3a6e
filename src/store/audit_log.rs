//! The audit log: pages for `verify`, an incident's timeline, and records with no other state change.

use super::*;

impl SqlStore {
    pub(super) async fn audit_page(&self, after: i64, limit: i64) -> Result<Vec<AuditRecord>> {
        let rows = sqlx::query(&format!("SELECT {AUDIT_COLS} FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2"))
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(audit_from).collect()
    }

    pub(super) async fn audit_head(&self) -> Result<i64> {
        let r = sqlx::query("SELECT CAST(COALESCE(MAX(seq), 0) AS BIGINT) AS head FROM audit_log")
            .fetch_one(&self.pool)
            .await?;
        Ok(r.try_get("head")?)
    }

    pub(super) async fn audit_for_incident(&self, id: i64) -> Result<Vec<AuditRecord>> {
        let rows = sqlx::query(&format!("SELECT {AUDIT_COLS} FROM audit_log WHERE incident_id = $1 ORDER BY seq"))
            .bind(id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(audit_from).collect()
    }

    pub(super) async fn record(&self, entries: Vec<AuditEntry>) -> Result<()> {
        let mut tx = self.begin_write().await?;
        self.append_audit(&mut tx, entries).await?;
        tx.commit().await?;
        Ok(())
    }
}

pub(super) fn audit_args(r: AuditRecord) -> Vec<Arg> {
    vec![
        Arg::Int(r.seq),
        Arg::Int(r.at),
        Arg::Text(r.kind),
        Arg::OptInt(r.incident_id),
        Arg::Text(r.actor),
        Arg::Text(r.data),
        Arg::Text(r.prev_hash),
        Arg::Text(r.hash),
    ]
}

pub(super) fn audit_from(r: &AnyRow) -> Result<AuditRecord> {
    Ok(AuditRecord {
        seq: r.try_get("seq")?,
        at: r.try_get("at")?,
        kind: r.try_get("kind")?,
        incident_id: r.try_get("incident_id")?,
        actor: r.try_get("actor")?,
        data: r.try_get("data")?,
        prev_hash: r.try_get("prev_hash")?,
        hash: r.try_get("hash")?,
    })
}
