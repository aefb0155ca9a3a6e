//! PagerDuty v3 webhooks (webhook subscriptions, `X-PagerDuty-Signature: v1=<hex HMAC-SHA256>`).
//!
//! Incident events carry alert state: `incident.triggered` and `incident.reopened` fire,
//! `incident.resolved` resolves. Other event types (acknowledged, annotated, priority updated…)
//! are answered 202 and not stored. The alert's fingerprint is the PagerDuty incident id.

use super::{IntakeError, Parsed, from_json, ts, validated};
use crate::alert::{Alert, AlertStatus, Labels, Source};
use crate::time::Millis;
use serde::Deserialize;

#[derive(Deserialize)]
struct Payload {
    event: Event,
}

#[derive(Deserialize)]
struct Event {
    event_type: String,
    resource_type: String,
    #[serde(deserialize_with = "ts::required")]
    occurred_at: Millis,
    data: Incident,
}

#[derive(Deserialize)]
struct Incident {
    id: String,
    #[serde(default)]
    html_url: Option<String>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    number: Option<u64>,
    #[serde(default, deserialize_with = "ts::optional")]
    created_at: Option<Millis>,
    #[serde(default)]
    urgency: Option<String>,
    #[serde(default)]
    service: Option<Reference>,
    #[serde(default)]
    priority: Option<Reference>,
}

#[derive(Deserialize)]
struct Reference {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    summary: Option<String>,
}

pub fn parse(body: &[u8]) -> Result<Parsed, IntakeError> {
    let p: Payload = from_json(body)?;
    let e = p.event;
    if e.resource_type != "incident" {
        return Ok(Parsed::Ignore(format!("resource type {:?} carries no alert state", e.resource_type)));
    }
    let status = match e.event_type.as_str() {
        "incident.triggered" | "incident.reopened" => AlertStatus::Firing,
        "incident.resolved" => AlertStatus::Resolved,
        other => return Ok(Parsed::Ignore(format!("event type {other:?} carries no alert state"))),
    };
    let d = e.data;
    let created = d.created_at.unwrap_or(e.occurred_at);
    // A reopen starts a new occurrence; triggered and resolved refer to the original one, so a
    // late re-delivery of `triggered` after `resolved` is recognised as stale.
    let starts_at = if e.event_type == "incident.reopened" { e.occurred_at } else { created };
    let title = d.title.clone().unwrap_or_else(|| format!("PagerDuty incident {}", d.id));
    let mut labels = Labels::new();
    labels.insert("alertname".into(), title.chars().take(200).collect());
    labels.insert("pagerduty_incident".into(), d.id.clone());
    if let Some(s) = &d.service {
        if let Some(name) = &s.summary {
            labels.insert("service".into(), name.clone());
        }
        if let Some(id) = &s.id {
            labels.insert("pagerduty_service".into(), id.clone());
        }
    }
    if let Some(u) = d.urgency {
        labels.insert("urgency".into(), u);
    }
    if let Some(p) = d.priority.and_then(|p| p.summary) {
        labels.insert("priority".into(), p);
    }
    let mut annotations = Labels::new();
    annotations.insert("summary".into(), title);
    if let Some(n) = d.number {
        annotations.insert("pagerduty_number".into(), n.to_string());
    }
    let links = d.html_url.map(|u| [("source".to_string(), u)].into()).unwrap_or_default();
    validated(vec![Alert {
        source: Source::Pagerduty,
        fingerprint: d.id,
        status,
        labels,
        annotations,
        starts_at,
        ends_at: (status == AlertStatus::Resolved).then_some(e.occurred_at),
        links,
    }])
    .map_err(|e| match e {
        IntakeError::Invalid(mut f) => {
            f.field = f.field.replacen("alerts[0]", "event.data", 1);
            IntakeError::Invalid(f)
        }
        other => other,
    })
}
