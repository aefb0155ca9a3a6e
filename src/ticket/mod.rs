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

/// Where tickets go: the request body for a new ticket; the outbox delivers it and records the
/// ticket's address (`Delivery::Sent { result }`), which the thread then links.
pub trait Tracker: Destination {
    fn create(&self, t: &Ticket) -> Value;
}
