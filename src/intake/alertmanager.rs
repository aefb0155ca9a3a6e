//! Prometheus Alertmanager webhook, payload version 4 (`webhook_configs`).
//! Grafana's unified alerting webhook uses the same shape and is parsed here too (see `grafana`).
//!
//! Fields senders add in later versions are ignored; the fields medic relies on are required and
//! checked: `version`, `status`, `alerts[]` with `status`, `labels`, `startsAt`.

use super::{IntakeError, Parsed, from_json, ts, validated};
use crate::alert::{Alert, AlertStatus, Labels, Source, fingerprint_of};
use crate::time::Millis;
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Payload {
    version: String,
    #[allow(dead_code)]
    status: AlertStatus,
    #[serde(default)]
    truncated_alerts: u64,
    #[serde(default)]
    group_key: String,
    #[serde(rename = "externalURL", default)]
    external_url: String,
    alerts: Vec<WireAlert>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireAlert {
    status: AlertStatus,
    labels: Labels,
    #[serde(default)]
    annotations: Labels,
    #[serde(deserialize_with = "ts::required")]
    starts_at: Millis,
    #[serde(default, deserialize_with = "ts::optional")]
    ends_at: Option<Millis>,
    #[serde(rename = "generatorURL", default)]
    generator_url: String,
    #[serde(default)]
    fingerprint: Option<String>,
    // Grafana's additions.
    #[serde(rename = "dashboardURL", default)]
    dashboard_url: String,
    #[serde(rename = "panelURL", default)]
    panel_url: String,
    #[serde(rename = "silenceURL", default)]
    silence_url: String,
    #[serde(default)]
    values: Option<BTreeMap<String, serde_json::Value>>,
}

pub fn parse(body: &[u8]) -> Result<Parsed, IntakeError> {
    parse_shaped(body, Source::Alertmanager, "4")
}

/// Parses an Alertmanager-shaped payload for `source`, requiring `version`.
pub(super) fn parse_shaped(body: &[u8], source: Source, version: &str) -> Result<Parsed, IntakeError> {
    let p: Payload = from_json(body)?;
    if p.version != version {
        return Err(IntakeError::invalid("version", format!("expected \"{version}\", got {:?}", p.version)));
    }
    if p.truncated_alerts > 0 {
        // The sender dropped alerts to fit max_alerts; we store what came and say so.
        tracing::warn!(source = %source, group_key = %p.group_key, truncated = p.truncated_alerts, "sender truncated alerts in this notification");
    }
    let alerts = p
        .alerts
        .into_iter()
        .map(|w| {
            let mut links = Labels::new();
            for (k, v) in [
                ("generator", w.generator_url),
                ("dashboard", w.dashboard_url),
                ("panel", w.panel_url),
                ("silence", w.silence_url),
                ("source", p.external_url.clone()),
            ] {
                if !v.is_empty() {
                    links.insert(k.to_string(), v);
                }
            }
            let mut annotations = w.annotations;
            if let Some(values) = w.values.filter(|v| !v.is_empty()) {
                let text = values.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ");
                annotations.entry("values".to_string()).or_insert(text);
            }
            Alert {
                source,
                fingerprint: w.fingerprint.filter(|f| !f.is_empty()).unwrap_or_else(|| fingerprint_of(&w.labels)),
                status: w.status,
                labels: w.labels,
                annotations,
                starts_at: w.starts_at,
                ends_at: if w.status == AlertStatus::Resolved { w.ends_at } else { None },
                links,
            }
        })
        .collect();
    validated(alerts)
}
