//! The delivery worker shared by every platform: claims due deliveries from the store's outbox,
//! hands each to its platform, and records the outcome. A 429 is retried after its
//! `Retry-After`; an outage — including refused credentials — backs off (1 s, 2 s, 4 s … up to
//! about 4 min); nothing is dropped, and a root message is never given up. `/readyz` and
//! `/metrics` show what is waiting and the newest error ([`crate::store::Store::outbox_health`]). Claims
//! are leased, so several replicas deliver each message once.

use crate::store::{Delivery, OutboxRow, Store};
use crate::time::{Clock, Millis};
use std::sync::Arc;
use std::time::Duration;

/// How long a claimed delivery is reserved for this replica.
const LEASE: Millis = 30_000;

/// Attempts after which a delivery still retrying is logged as an error, not a delay.
const FAILING_AFTER: i64 = 3;

/// Backoff after the `attempts`-th failed attempt of a delivery.
pub fn backoff(attempts: i64) -> Millis {
    1000 * (1i64 << attempts.clamp(1, 9).saturating_sub(1)).min(300)
}

/// A failed delivery as the outbox records it: a retry with no delay of its own (an outage,
/// not a 429) backs off by the attempts made.
pub fn with_backoff(failed: Delivery, attempts: i64) -> Delivery {
    match failed {
        Delivery::Retry { after_ms: 0, error } => Delivery::Retry { after_ms: backoff(attempts), error },
        other => other,
    }
}

/// A response's `Retry-After` (seconds) in milliseconds, within 1 ms – 1 h.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Millis> {
    let secs = headers.get("retry-after")?.to_str().ok()?.parse::<i64>().ok()?;
    Some((secs.saturating_mul(1000)).clamp(1, 3_600_000))
}

/// A chat API's answer to the call `path` as the outbox reads it: `Ok` for 2xx; a 429 retried
/// after `wait` (1 s when the API gave none); a 5xx retried with backoff; refused credentials
/// (401/403) too — an outage of ours until a person fixes them, never a reason to drop a
/// message; any other status refused for good, with the API's `message` (else the start of its
/// body, `text`).
pub fn answered(
    status: reqwest::StatusCode,
    wait: Option<Millis>,
    path: &str,
    v: &serde_json::Value,
    text: &str,
) -> Result<(), Delivery> {
    let code = status.as_u16();
    match code {
        _ if status.is_success() => Ok(()),
        429 => Err(Delivery::Retry { after_ms: wait.unwrap_or(1000), error: format!("{path}: rate limited") }),
        500..=599 => Err(Delivery::Retry { after_ms: 0, error: format!("{path}: HTTP {code}") }),
        401 | 403 => Err(Delivery::Retry {
            after_ms: 0,
            error: format!("{path}: HTTP {code} (credentials or permissions refused)"),
        }),
        _ => {
            let msg = v["message"].as_str().map(str::to_string).unwrap_or_else(|| text.chars().take(200).collect());
            Err(Delivery::Failed { error: format!("{path}: HTTP {code}: {msg}") })
        }
    }
}

/// Where the outbox delivers: a chat platform (`chat::Platform`) or a pager (`page::Pager`).
#[async_trait::async_trait]
pub trait Destination: Send + Sync {
    /// `slack`, `discord`, `pagerduty`…: the outbox's key and, for chat, the identities' prefix.
    fn name(&self) -> &'static str;
    /// Sends one claimed delivery.
    async fn deliver(&self, row: &OutboxRow) -> Delivery;
}

/// Queues `body` (redacted) for `op` of incident `id` on `to`.
pub async fn push(
    store: &dyn Store,
    to: &dyn Destination,
    id: i64,
    op: &str,
    body: &serde_json::Value,
    now: Millis,
) -> anyhow::Result<()> {
    let item = crate::store::OutboxItem {
        platform: to.name().into(),
        incident_id: id,
        op: op.into(),
        channel: String::new(),
        target: None,
        body: crate::redact::redact(&body.to_string()),
    };
    store.outbox_push(&item, now).await
}

/// Delivers `platform`'s messages until `stop` resolves.
pub async fn run(
    store: Arc<dyn Store>,
    platform: Arc<dyn Destination>,
    clock: Arc<dyn Clock>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let rows = match store.outbox_claim(platform.name(), clock.now(), LEASE, 20).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(platform = platform.name(), error = %format!("{e:#}"), "outbox unavailable");
                Vec::new()
            }
        };
        let idle = rows.is_empty();
        for row in rows {
            let outcome = match platform.deliver(&row).await {
                // An incident's root message is never given up: its updates and thread wait on
                // it, and people must learn of the incident once the platform takes it.
                Delivery::Failed { error } if row.item.op == "post" => {
                    Delivery::Retry { after_ms: backoff(row.attempts), error }
                }
                other => other,
            };
            match &outcome {
                Delivery::Sent { .. } => {}
                Delivery::Retry { after_ms, error } if row.attempts >= FAILING_AFTER => tracing::error!(
                    platform = platform.name(), incident = row.item.incident_id, op = %row.item.op,
                    attempts = row.attempts, retry_in_ms = after_ms, %error, "chat delivery failing; retrying"
                ),
                Delivery::Retry { after_ms, error } => tracing::warn!(
                    platform = platform.name(), incident = row.item.incident_id, op = %row.item.op,
                    retry_in_ms = after_ms, %error, "chat delivery delayed"
                ),
                Delivery::Failed { error } => tracing::error!(
                    platform = platform.name(), incident = row.item.incident_id, op = %row.item.op,
                    %error, "chat delivery refused"
                ),
            }
            if let Err(e) = store.outbox_finish(row.id, &outcome, clock.now()).await {
                tracing::warn!(error = %format!("{e:#}"), "could not record a chat delivery; it will be retried");
            }
        }
        let pause = if idle { Duration::from_millis(200) } else { Duration::from_millis(10) };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(super::backoff(1), 1000);
        assert_eq!(super::backoff(3), 4000);
        assert_eq!(super::backoff(50), 256_000);
    }
}
