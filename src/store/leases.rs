//! Named leases among replicas: one holder at a time, renewed by it, taken over by another
//! replica once it lapses.

use super::*;

impl SqlStore {
    pub(super) async fn lease(&self, name: &str, holder: &str, now: Millis, ttl: Millis) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let current = sqlx::query("SELECT holder, expires_at FROM leases WHERE name = $1")
            .bind(name.to_string())
            .fetch_optional(&mut *tx)
            .await?;
        let free = match &current {
            None => true,
            Some(r) => r.try_get::<String, _>("holder")? == holder || r.try_get::<i64, _>("expires_at")? <= now,
        };
        if free {
            sqlx::query(
                "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at",
            )
            .bind(name.to_string())
            .bind(holder.to_string())
            .bind(now + ttl)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(free)
    }

    pub(super) async fn release(&self, name: &str, holder: &str) -> Result<()> {
        sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
            .bind(name.to_string())
            .bind(holder.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
