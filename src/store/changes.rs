//! Change events received on `/v1/changes`.

use super::*;

impl SqlStore {
    pub(super) async fn changes(&self, service: &str, start: Millis, end: Millis) -> Result<Vec<Change>> {
        let rows = sqlx::query(
            "SELECT id, kind, service, summary, author, version, url, labels, at FROM changes \
             WHERE service = $1 AND at >= $2 AND at <= $3 ORDER BY at, id LIMIT 500",
        )
        .bind(service.to_string())
        .bind(start)
        .bind(end)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(change_from).collect()
    }
}

pub(super) fn change_args(c: &Change, now: Millis) -> Vec<Arg> {
    vec![
        Arg::Text(c.id.clone()),
        Arg::Text(c.kind.as_str().into()),
        Arg::Text(c.service.clone()),
        Arg::Text(c.summary.clone()),
        Arg::OptText(c.author.clone()),
        Arg::OptText(c.version.clone()),
        Arg::OptText(c.url.clone()),
        Arg::Text(json_text(&c.labels)),
        Arg::Int(c.at),
        Arg::Int(now),
    ]
}

pub(super) fn change_from(r: &AnyRow) -> Result<Change> {
    let kind: String = r.try_get("kind")?;
    let labels: String = r.try_get("labels")?;
    Ok(Change {
        id: r.try_get("id")?,
        kind: serde_json::from_value(serde_json::Value::String(kind.clone()))
            .map_err(|_| anyhow!("unknown change kind {kind:?}"))?,
        service: r.try_get("service")?,
        summary: r.try_get("summary")?,
        author: r.try_get("author")?,
        version: r.try_get("version")?,
        url: r.try_get("url")?,
        labels: serde_json::from_str(&labels).context("changes.labels is not a JSON string map")?,
        at: r.try_get("at")?,
    })
}

/// The changes medic received on `/v1/changes`, as a context source.
pub struct StoredChanges(pub Arc<dyn Store>);

#[async_trait::async_trait]
impl crate::context::Changes for StoredChanges {
    fn name(&self) -> &str {
        "medic"
    }

    async fn changes(&self, service: &str, start: Millis, end: Millis) -> std::result::Result<Vec<Change>, String> {
        self.0.changes(service, start, end).await.map_err(|e| format!("{e:#}"))
    }
}
