//! The chat outbox: queueing (merging updates), claiming due deliveries under a lease, outcomes, and health.

use super::*;

impl SqlStore {
    pub(super) async fn outbox_push(&self, item: &OutboxItem, now: Millis) -> Result<()> {
        let mut tx = self.begin_write().await?;
        // A second root post of one incident is an update of the first (unless the first
        // failed for good: then there is no message to update, and this one is the root).
        let mut op = item.op.clone();
        if op == "post"
            && sqlx::query(
                "SELECT id FROM chat_outbox WHERE platform = $1 AND incident_id = $2 AND op = 'post' \
                 AND state <> 'failed'",
            )
            .bind(item.platform.clone())
            .bind(item.incident_id)
            .fetch_optional(&mut *tx)
            .await?
            .is_some()
        {
            op = "update".into();
        }
        let replaced = if op == "update" {
            sqlx::query(
                "UPDATE chat_outbox SET body = $1 WHERE platform = $2 AND incident_id = $3 AND op = 'update' \
                 AND state = 'pending'",
            )
            .bind(item.body.clone())
            .bind(item.platform.clone())
            .bind(item.incident_id)
            .execute(&mut *tx)
            .await?
            .rows_affected()
        } else {
            0
        };
        if replaced == 0 {
            sqlx::query(
                "INSERT INTO chat_outbox (platform, incident_id, op, channel, target, body, state, due_at, attempts) \
                 VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, 0)",
            )
            .bind(item.platform.clone())
            .bind(item.incident_id)
            .bind(op)
            .bind(item.channel.clone())
            .bind(item.target.clone())
            .bind(item.body.clone())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn outbox_refused(&self, item: &OutboxItem, error: &str, now: Millis) -> Result<()> {
        // A failed root does not turn the next post into an update (see `outbox_push`).
        sqlx::query(
            "INSERT INTO chat_outbox (platform, incident_id, op, channel, target, body, state, due_at, attempts, \
             sent_at, last_error) VALUES ($1, $2, $3, $4, NULL, '', 'failed', $5, 0, $5, $6)",
        )
        .bind(item.platform.clone())
        .bind(item.incident_id)
        .bind(item.op.clone())
        .bind(item.channel.clone())
        .bind(now)
        .bind(error.to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(super) async fn outbox_claim(
        &self,
        platform: &str,
        now: Millis,
        lease: Millis,
        limit: i64,
    ) -> Result<Vec<OutboxRow>> {
        // The worker asks several times a second; the write lock (which intake commits wait
        // for) is taken only when something is due.
        let due = sqlx::query(
            "SELECT id FROM chat_outbox WHERE platform = $1 AND state = 'pending' AND due_at <= $2 LIMIT 1",
        )
        .bind(platform.to_string())
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        if due.is_none() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query(
            "SELECT id, incident_id, op, channel, target, body, attempts FROM chat_outbox \
             WHERE platform = $1 AND state = 'pending' AND due_at <= $2 ORDER BY id LIMIT $3",
        )
        .bind(platform.to_string())
        .bind(now)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        let mut out = Vec::new();
        for r in rows {
            let (id, incident_id, op): (i64, i64, String) =
                (r.try_get("id")?, r.try_get("incident_id")?, r.try_get("op")?);
            // The root message and when it, or an update of it, was last sent.
            let sent = sqlx::query(
                "SELECT op, result, sent_at FROM chat_outbox WHERE platform = $1 AND incident_id = $2 \
                 AND op IN ('post', 'update') AND state = 'sent' ORDER BY sent_at DESC, id DESC",
            )
            .bind(platform.to_string())
            .bind(incident_id)
            .fetch_all(&mut *tx)
            .await?;
            let root: Option<String> = sent
                .iter()
                .find(|s| s.try_get::<String, _>("op").is_ok_and(|o| o == "post"))
                .map(|s| s.try_get("result"))
                .transpose()?
                .flatten();
            let last_sent: Option<Millis> = sent.first().map(|s| s.try_get("sent_at")).transpose()?.flatten();
            if op == "post" && root.is_some() {
                // Already posted (a second post for one incident would be a duplicate message).
                sqlx::query("UPDATE chat_outbox SET state = 'sent', last_error = 'duplicate post' WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                continue;
            }
            let blocked = matches!(op.as_str(), "update" | "thread") && root.is_none();
            if blocked {
                continue;
            }
            if op == "update"
                && let Some(t) = last_sent
                && now - t < 1000
            {
                sqlx::query("UPDATE chat_outbox SET due_at = $1 WHERE id = $2")
                    .bind(t + 1000)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                continue;
            }
            sqlx::query("UPDATE chat_outbox SET due_at = $1, attempts = attempts + 1 WHERE id = $2")
                .bind(now + lease)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            out.push(OutboxRow {
                id,
                item: OutboxItem {
                    platform: platform.to_string(),
                    incident_id,
                    op,
                    channel: r.try_get("channel")?,
                    target: r.try_get("target")?,
                    body: r.try_get("body")?,
                },
                attempts: r.try_get::<i64, _>("attempts")? + 1,
                root,
            });
        }
        tx.commit().await?;
        Ok(out)
    }

    pub(super) async fn outbox_finish(&self, id: i64, outcome: &Delivery, now: Millis) -> Result<()> {
        let q = match outcome {
            Delivery::Sent { result } => sqlx::query(
                "UPDATE chat_outbox SET state = 'sent', sent_at = $1, result = $2, last_error = NULL WHERE id = $3",
            )
            .bind(now)
            .bind(result.clone()),
            Delivery::Retry { after_ms, error } => {
                sqlx::query("UPDATE chat_outbox SET due_at = $1, last_error = $2 WHERE id = $3")
                    .bind(now + after_ms)
                    .bind(error.clone())
            }
            Delivery::Failed { error } => {
                sqlx::query("UPDATE chat_outbox SET state = 'failed', sent_at = $1, last_error = $2 WHERE id = $3")
                    .bind(now)
                    .bind(error.clone())
            }
        };
        q.bind(id).execute(&self.pool).await?;
        Ok(())
    }

    pub(super) async fn first_delivery(&self, platform: &str, event: &str, now: Millis) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM chat_events WHERE seen_at < $1")
            .bind(now - 24 * 3600 * 1000)
            .execute(&mut *tx)
            .await?;
        let inserted = sqlx::query(
            "INSERT INTO chat_events (platform, event_id, seen_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(platform.to_string())
        .bind(event.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(inserted == 1)
    }

    pub(super) async fn within_rate(&self, kind: &str, who: &str, per_minute: u32, now: Millis) -> Result<bool> {
        // One key per person and kind (in `platform`), one row per counted act.
        let key = format!("rate:{kind}:{who}");
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM chat_events WHERE platform = $1 AND seen_at <= $2")
            .bind(key.clone())
            .bind(now - 60_000)
            .execute(&mut *tx)
            .await?;
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM chat_events WHERE platform = $1")
            .bind(key.clone())
            .fetch_one(&mut *tx)
            .await?;
        let allowed = n < i64::from(per_minute);
        if allowed {
            sqlx::query("INSERT INTO chat_events (platform, event_id, seen_at) VALUES ($1, $2, $3)")
                .bind(key)
                .bind(format!("{now}-{n}"))
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(allowed)
    }

    pub(super) async fn incident_for_message(
        &self,
        platform: &str,
        channel: Option<&str>,
        message: &str,
    ) -> Result<Option<i64>> {
        let sql = match channel {
            Some(_) => {
                "SELECT incident_id FROM chat_outbox WHERE platform = $1 AND result = $2 AND channel = $3 \
                 AND op = 'post' AND state = 'sent' LIMIT 1"
            }
            None => {
                "SELECT incident_id FROM chat_outbox WHERE platform = $1 AND result = $2 \
                 AND op = 'post' AND state = 'sent' LIMIT 1"
            }
        };
        let mut q = sqlx::query(sql).bind(platform.to_string()).bind(message.to_string());
        if let Some(c) = channel {
            q = q.bind(c.to_string());
        }
        let r = q.fetch_optional(&self.pool).await?;
        r.map(|r| r.try_get("incident_id")).transpose().map_err(Into::into)
    }

    pub(super) async fn outbox_has(&self, platform: &str, incident: i64, op: &str) -> Result<bool> {
        let r = sqlx::query("SELECT id FROM chat_outbox WHERE platform = $1 AND incident_id = $2 AND op = $3 LIMIT 1")
            .bind(platform.to_string())
            .bind(incident)
            .bind(op.to_string())
            .fetch_optional(&self.pool)
            .await?;
        Ok(r.is_some())
    }

    pub(super) async fn outbox_sent(&self, platform: &str, op: &str, limit: i64) -> Result<Vec<(i64, i64, String)>> {
        let rows = sqlx::query(
            "SELECT id, incident_id, result FROM chat_outbox WHERE platform = $1 AND op = $2 AND state = 'sent' \
             AND result IS NOT NULL ORDER BY id DESC LIMIT $3",
        )
        .bind(platform.to_string())
        .bind(op.to_string())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok((r.try_get("id")?, r.try_get("incident_id")?, r.try_get("result")?))).collect()
    }

    pub(super) async fn outbox_health(&self, since: Millis) -> Result<Vec<OutboxHealth>> {
        let rows = sqlx::query(
            "SELECT platform, state, CAST(CASE WHEN last_error IS NULL THEN 0 ELSE 1 END AS BIGINT) AS erred, \
             COUNT(*) AS n, MAX(id) AS newest \
             FROM chat_outbox WHERE state = 'pending' OR (state = 'failed' AND sent_at >= $1) \
             GROUP BY platform, state, erred",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        let mut out: Vec<OutboxHealth> = Vec::new();
        let mut newest_error: BTreeMap<String, i64> = BTreeMap::new();
        for r in rows {
            let (platform, state): (String, String) = (r.try_get("platform")?, r.try_get("state")?);
            let (erred, n, newest): (i64, i64, i64) = (r.try_get("erred")?, r.try_get("n")?, r.try_get("newest")?);
            let erred = erred == 1;
            let i = match out.iter().position(|h| h.platform == platform) {
                Some(i) => i,
                None => {
                    out.push(OutboxHealth { platform: platform.clone(), ..Default::default() });
                    out.len() - 1
                }
            };
            let h = &mut out[i];
            match state.as_str() {
                "pending" => {
                    h.pending += n;
                    if erred {
                        h.failing += n;
                    }
                }
                _ => h.failed += n,
            }
            if erred {
                let e = newest_error.entry(platform).or_insert(newest);
                *e = (*e).max(newest);
            }
        }
        for h in &mut out {
            if let Some(id) = newest_error.get(&h.platform) {
                h.last_error = sqlx::query("SELECT last_error FROM chat_outbox WHERE id = $1")
                    .bind(*id)
                    .fetch_one(&self.pool)
                    .await?
                    .try_get("last_error")?;
            }
        }
        out.sort_by(|a, b| a.platform.cmp(&b.platform));
        Ok(out)
    }
}
