//! A generic page webhook: `POST {url}` with a documented JSON body (see `docs/src/paging.md`),
//! for Grafana IRM, incident.io, Squadcast and in-house tools. With a secret, each request is
//! signed: `X-Medic-Timestamp: <unix seconds>` and `X-Medic-Signature: sha256=<hex>`, the
//! HMAC-SHA256 of `<timestamp>.<body>` with the secret (the scheme Slack and Stripe use), so the
//! receiver can check both who sent it and that it is fresh.

use super::{Page, Pager, dedup_key};
use crate::chat::outbox::Destination;
use crate::secret::Secret;
use crate::store::{Delivery, OutboxRow};
use hmac::{KeyInit, Mac};
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::Duration;

/// The `paging.webhook` section.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub url: String,
    /// Signs each request (HMAC-SHA256); none: unsigned.
    #[serde(default)]
    pub secret: Option<crate::secret::SecretRef>,
}

pub struct Webhook {
    url: reqwest::Url,
    secret: Option<Secret>,
    http: reqwest::Client,
}

/// The body's version: a receiver can tell what it parses.
pub const VERSION: u32 = 1;

impl Webhook {
    pub fn new(cfg: &Config, timeout: Duration) -> Result<Webhook, String> {
        let url = reqwest::Url::parse(&cfg.url).map_err(|e| format!("paging.webhook.url: {e}"))?;
        let secret =
            cfg.secret.as_ref().map(|s| s.resolve()).transpose().map_err(|e| format!("paging.webhook.secret: {e}"))?;
        let http = crate::telemetry::http_client_builder().timeout(timeout).build().map_err(|e| e.to_string())?;
        Ok(Webhook { url, secret, http })
    }
}

/// `sha256=<hex>` of `<timestamp>.<body>` under `secret`.
pub fn signature(secret: &[u8], timestamp: i64, body: &str) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(format!("{timestamp}.{body}").as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

impl Pager for Webhook {
    fn trigger(&self, page: &Page) -> Value {
        json!({
            "version": VERSION, "event": "trigger", "dedup_key": dedup_key(page.incident),
            "incident": page.incident, "summary": page.summary, "severity": page.severity,
            "service": page.service, "details": page.details, "link": page.link,
        })
    }

    fn resolve(&self, incident: i64) -> Value {
        json!({"version": VERSION, "event": "resolve", "dedup_key": dedup_key(incident), "incident": incident})
    }
}

#[async_trait::async_trait]
impl Destination for Webhook {
    fn name(&self) -> &'static str {
        "webhook"
    }

    async fn deliver(&self, row: &OutboxRow) -> Delivery {
        let body = row.item.body.clone();
        let mut req = self.http.post(self.url.clone()).header("content-type", "application/json");
        if let Some(secret) = &self.secret {
            let ts = chrono::Utc::now().timestamp();
            req = req
                .header("x-medic-timestamp", ts.to_string())
                .header("x-medic-signature", signature(secret.expose().as_bytes(), ts, &body));
        }
        let retry =
            |error: String| crate::chat::outbox::with_backoff(Delivery::Retry { after_ms: 0, error }, row.attempts);
        match req.body(body).send().await {
            Err(e) => retry(format!("the page webhook is unreachable: {}", e.without_url())),
            Ok(r) if r.status().is_success() => Delivery::Sent { result: None },
            Ok(r) if r.status().as_u16() == 429 || r.status().is_server_error() => {
                match crate::chat::outbox::retry_after(r.headers()) {
                    Some(after_ms) => {
                        Delivery::Retry { after_ms, error: format!("page webhook: HTTP {}", r.status().as_u16()) }
                    }
                    None => retry(format!("page webhook: HTTP {}", r.status().as_u16())),
                }
            }
            Ok(r) => {
                Delivery::Failed { error: format!("the page webhook refused the page: HTTP {}", r.status().as_u16()) }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Computed independently: printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac s3cret
        assert_eq!(
            super::signature(b"s3cret", 1_700_000_000, r#"{"a":1}"#),
            "sha256=1698a50bc74d1ff1db85c4e0a5297c2ad9fdba245d5737cdb789e4cc6e098940"
        );
    }
}
