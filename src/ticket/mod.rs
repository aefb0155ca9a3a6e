//! Tickets: the record of what medic did reaches where teams track work — "rolled the service
//! back … and opened a ticket with the full evidence chain attached". Each tracker is a module
//! behind the small [`Tracker`] trait, delivered through the durable outbox (op `ticket`):
//! `github` (GitHub Issues, REST) and `jira` (Jira Cloud and Data Center, REST v2).
//!
//! By policy (`tickets.when`), [`crate::page::watch`] queues one ticket per incident and tracker:
//! when a plan fails and is escalated, and when an incident that a plan ran for by itself
//! resolves. The ticket carries the incident's story and evidence — the audit export's Markdown
//! (`medic audit export`), redacted — and, once created, is linked from the incident's thread.

pub mod github;
pub mod jira;

use crate::chat::outbox::Destination;
use crate::store::{Delivery, Store};
use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// The `tickets` section of the config.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub github: Option<github::Config>,
    #[serde(default)]
    pub jira: Option<jira::Config>,
    #[serde(default)]
    pub when: When,
}

/// Which incidents get a ticket.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct When {
    /// A plan failed (rolled back, stopped, interrupted) and was escalated.
    #[serde(default = "yes")]
    pub failed_plan: bool,
    /// medic resolved the incident by itself (a plan ran without a person's approval).
    #[serde(default = "yes")]
    pub resolved_by_itself: bool,
}

fn yes() -> bool {
    true
}

impl Default for When {
    fn default() -> Self {
        When { failed_plan: true, resolved_by_itself: true }
    }
}

impl Config {
    pub fn trackers(&self, timeout: Duration) -> Result<Vec<Arc<dyn Tracker>>, String> {
        let mut out: Vec<Arc<dyn Tracker>> = Vec::new();
        if let Some(c) = &self.github {
            out.push(Arc::new(github::GitHub::new(c, timeout)?));
        }
        if let Some(c) = &self.jira {
            out.push(Arc::new(jira::Jira::new(c, timeout)?));
        }
        Ok(out)
    }
}

/// A ticket as every tracker words it.
#[derive(Debug, Clone, PartialEq)]
pub struct Ticket {
    pub incident: i64,
    pub title: String,
    /// Markdown: why, then the incident's timeline with its evidence.
    pub body: String,
    pub service: String,
}

/// The ticket for incident `id`, opened because `why`: its title, and its story and evidence
/// (the audit export's Markdown), redacted.
pub async fn for_incident(store: &dyn Store, id: i64, why: &str) -> anyhow::Result<Option<Ticket>> {
    let Some((incident, alerts)) = store.incident(id).await? else { return Ok(None) };
    let records = store.audit_for_incident(id).await?;
    let summary = incident.to_json();
    let service = incident.service(&alerts.first().map(|a| a.alert.labels.clone()).unwrap_or_default());
    let body = format!("medic opened this ticket: {why}.\n\n{}\n", crate::audit::timeline_markdown(&summary, &records));
    Ok(Some(Ticket {
        incident: id,
        title: format!("medic incident #{id} on {service}: {}", incident.title),
        body: crate::redact::redact(&body),
        service,
    }))
}

/// Queues a ticket for incident `id` on every tracker that has none for it yet (once per
/// incident and tracker, across replicas); the trackers that got one.
pub async fn open(
    store: &dyn Store,
    trackers: &[Arc<dyn Tracker>],
    id: i64,
    why: &str,
    now: crate::time::Millis,
) -> anyhow::Result<Vec<&'static str>> {
    let mut opened = Vec::new();
    for t in trackers {
        // The outbox keeps every ticket queued; the delivery record (a day) settles a race.
        if store.outbox_has(t.name(), id, "ticket").await?
            || !store.first_delivery("ticket", &format!("{}:{id}", t.name()), now).await?
        {
            continue;
        }
        let Some(ticket) = for_incident(store, id, why).await? else { continue };
        crate::chat::outbox::push(store, t.as_ref() as &dyn Destination, id, "ticket", &t.create(&ticket), now).await?;
        opened.push(t.name());
    }
    Ok(opened)
}

/// Where tickets go: the request body for a new ticket; the outbox delivers it and records the
/// ticket's address (`Delivery::Sent { result }`), which the thread then links.
pub trait Tracker: Destination {
    fn create(&self, t: &Ticket) -> Value;
}

/// A tracker's answer to a create: 2xx is the ticket (its address from `address`); 429 and
/// 5xx are retried (after `Retry-After` when given); 401/403 are an outage of ours, retried
/// with backoff until a person fixes the credentials; any other status is refused for good.
async fn outcome(
    sent: reqwest::Result<reqwest::Response>,
    who: &str,
    address: impl Fn(&Value) -> Option<String>,
    attempts: i64,
) -> Delivery {
    let retry = |after_ms, error| crate::chat::outbox::with_backoff(Delivery::Retry { after_ms, error }, attempts);
    let resp = match sent {
        Ok(r) => r,
        Err(e) => return retry(0, format!("{who} unreachable: {}", e.without_url())),
    };
    let status = resp.status().as_u16();
    let after = crate::chat::outbox::retry_after(resp.headers()).unwrap_or(0);
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    match status {
        200..=299 => Delivery::Sent { result: address(&v) },
        429 | 500..=599 => retry(after, format!("{who}: HTTP {status}")),
        401 | 403 => retry(0, format!("{who}: HTTP {status} (credentials or permissions refused)")),
        _ => Delivery::Failed {
            error: format!(
                "{who} refused the ticket: HTTP {status}: {}",
                crate::chat::cut(
                    &v["message"].as_str().map(str::to_string).unwrap_or_else(|| v["errors"].to_string()),
                    300
                )
            ),
        },
    }
}
