//! medic's own alert format, for anything without a native integration (CI, cron, custom
//! checks). Strict: unknown fields are errors. Documented in docs/src/http-api.md ("Generic alerts").
//!
//! ```json
//! {"alerts": [{"name": "BackupFailed", "status": "firing",
//!              "labels": {"service": "billing", "severity": "critical"},
//!              "annotations": {"summary": "nightly backup failed"},
//!              "starts_at": "2024-05-01T02:00:00Z", "fingerprint": "backup-billing",
//!              "url": "https://ci.example.com/jobs/123"}]}
//! ```

use super::{IntakeError, Parsed, from_json, ts, validated};
use crate::alert::{Alert, AlertStatus, Labels, START_UNKNOWN, Source, fingerprint_of};
use crate::time::Millis;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Payload {
    alerts: Vec<WireAlert>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireAlert {
    name: String,
    status: AlertStatus,
    #[serde(default)]
    labels: Labels,
    #[serde(default)]
    annotations: Labels,
    #[serde(default, deserialize_with = "ts::optional")]
    starts_at: Option<Millis>,
    #[serde(default, deserialize_with = "ts::optional")]
    ends_at: Option<Millis>,
    #[serde(default)]
    fingerprint: Option<String>,
    #[serde(default)]
    url: Option<String>,
}

pub fn parse(body: &[u8], now: Millis) -> Result<Parsed, IntakeError> {
    let p: Payload = from_json(body)?;
    let mut alerts = Vec::with_capacity(p.alerts.len());
    for (i, w) in p.alerts.into_iter().enumerate() {
        let mut labels = w.labels;
        match labels.get("alertname") {
            Some(existing) if existing != &w.name => {
                return Err(IntakeError::invalid(
                    format!("alerts[{i}].labels.alertname"),
                    "expected to equal `name` or be absent",
                ));
            }
            _ => labels.insert("alertname".to_string(), w.name),
        };
        let fingerprint = w.fingerprint.unwrap_or_else(|| fingerprint_of(&labels));
        let ends_at = match w.status {
            AlertStatus::Resolved => Some(w.ends_at.unwrap_or(now)),
            AlertStatus::Firing => None,
        };
        alerts.push(Alert {
            source: Source::Generic,
            fingerprint,
            status: w.status,
            labels,
            annotations: w.annotations,
            // Without starts_at, a firing alert is "the same" until it resolves: re-sending it
            // changes nothing, which is what a periodic check wants.
            starts_at: w.starts_at.unwrap_or(START_UNKNOWN),
            ends_at,
            links: w.url.map(|u| [("source".to_string(), u)].into()).unwrap_or_default(),
        });
    }
    validated(alerts)
}
