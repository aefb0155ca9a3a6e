//! PagerDuty Events API v2 (`POST {api_url}/v2/enqueue`): a trigger per incident with
//! `dedup_key` = the incident (a second page updates the same PagerDuty incident), resolved
//! when medic's incident resolves. The routing key is a secret reference, added to the body
//! only as it is sent (the outbox stores no credential). 202 is delivered; 400 (an invalid
//! event) is refused for good; 429 and 5xx are retried with backoff.

use super::{Page, Pager, dedup_key};
use crate::chat::outbox::Destination;
use crate::secret::Secret;
use crate::store::{Delivery, OutboxRow};
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::Duration;

/// The `paging.pagerduty` section.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The integration's routing key (an Events API v2 integration on a service).
    pub routing_key: crate::secret::SecretRef,
    #[serde(default = "events_api")]
    pub api_url: String,
}

fn events_api() -> String {
    "https://events.pagerduty.com".into()
}

pub struct PagerDuty {
    url: reqwest::Url,
    routing_key: Secret,
    http: reqwest::Client,
}

impl PagerDuty {
    pub fn new(cfg: &Config, timeout: Duration) -> Result<PagerDuty, String> {
        let url = reqwest::Url::parse(&cfg.api_url)
            .and_then(|u| u.join("/v2/enqueue"))
            .map_err(|e| format!("paging.pagerduty.api_url: {e}"))?;
        let routing_key = cfg.routing_key.resolve().map_err(|e| format!("paging.pagerduty.routing_key: {e}"))?;
        let http = crate::telemetry::http_client_builder().timeout(timeout).build().map_err(|e| e.to_string())?;
        Ok(PagerDuty { url, routing_key, http })
    }
}

/// The Events API v2 trigger for `page`, without the routing key (added as it is sent).
pub fn event(page: &Page) -> Value {
    let mut v = json!({
        "event_action": "trigger",
        "dedup_key": dedup_key(page.incident),
        "payload": {
            "summary": crate::chat::cut(&page.summary, 1024),
            "source": "medic",
            "severity": page.severity,
            "component": page.service,
            "custom_details": page.details,
        },
        "client": "medic",
    });
    if let Some(link) = &page.link {
        v["links"] = json!([{"href": link, "text": format!("medic incident #{}", page.incident)}]);
    }
    v
}

impl Pager for PagerDuty {
    fn trigger(&self, page: &Page) -> Value {
        event(page)
    }

    fn resolve(&self, incident: i64) -> Value {
        json!({"event_action": "resolve", "dedup_key": dedup_key(incident)})
    }
}

#[async_trait::async_trait]
impl Destination for PagerDuty {
    fn name(&self) -> &'static str {
        "pagerduty"
    }

    async fn deliver(&self, row: &OutboxRow) -> Delivery {
        let Ok(mut body) = serde_json::from_str::<Value>(&row.item.body) else {
            return Delivery::Failed { error: "the queued page is not JSON".into() };
        };
        body["routing_key"] = json!(self.routing_key.expose());
        let resp = match self.http.post(self.url.clone()).json(&body).send().await {
            Ok(r) => r,
            Err(e) => {
                return crate::chat::outbox::with_backoff(
                    Delivery::Retry { after_ms: 0, error: format!("PagerDuty unreachable: {}", e.without_url()) },
                    row.attempts,
                );
            }
        };
        let status = resp.status();
        let retry_after = crate::chat::outbox::retry_after(resp.headers());
        let text = resp.text().await.unwrap_or_default();
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        match status.as_u16() {
            200..=299 => Delivery::Sent { result: v["dedup_key"].as_str().map(str::to_string) },
            429 => crate::chat::outbox::with_backoff(
                Delivery::Retry { after_ms: retry_after.unwrap_or(0), error: "PagerDuty: rate limited (429)".into() },
                row.attempts,
            ),
            400 => Delivery::Failed {
                error: format!(
                    "PagerDuty refused the event (400): {} {}",
                    v["message"].as_str().unwrap_or(""),
                    v["errors"]
                ),
            },
            code => crate::chat::outbox::with_backoff(
                Delivery::Retry { after_ms: 0, error: format!("PagerDuty: HTTP {code}") },
                row.attempts,
            ),
        }
    }
}
