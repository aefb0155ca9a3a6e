//! Alertmanager API v2: the alerts active right now (`GET /api/v2/alerts`) and the silences
//! (`GET /api/v2/silences`). [`super::gather`] keeps those about the incident's services and
//! their dependencies; the diagnosis shows them ("also firing: …", "silenced by …").

use super::http::{Auth, Http};
use super::{ActiveAlert, Alerts, Silence};
use crate::alert::Labels;
use crate::time::to_millis;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use std::time::Duration;

pub struct Alertmanager {
    http: Http,
    /// Most alerts kept from one answer.
    pub max_alerts: usize,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GettableAlert {
    fingerprint: String,
    labels: Labels,
    #[serde(default)]
    annotations: Labels,
    starts_at: DateTime<Utc>,
    status: AlertStatus,
}

#[derive(Deserialize)]
struct AlertStatus {
    state: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GettableSilence {
    id: String,
    status: SilenceStatus,
    matchers: Vec<Matcher>,
    #[serde(default)]
    created_by: String,
    #[serde(default)]
    comment: String,
    ends_at: DateTime<Utc>,
}

#[derive(Deserialize)]
struct SilenceStatus {
    state: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Matcher {
    name: String,
    value: String,
    is_regex: bool,
    /// Absent before Alertmanager 0.22: equality.
    #[serde(default = "yes")]
    is_equal: bool,
}

fn yes() -> bool {
    true
}

impl Alertmanager {
    /// `base` is Alertmanager's root URL, e.g. `http://alertmanager:9093`.
    pub fn new(base: &str, auth: Auth, headers: Vec<(String, String)>, timeout: Duration) -> Result<Self, String> {
        Ok(Alertmanager { http: Http::new("Alertmanager", base, auth, headers, timeout)?, max_alerts: 1000 })
    }
}

#[async_trait]
impl Alerts for Alertmanager {
    fn name(&self) -> &str {
        "alertmanager"
    }

    async fn active(&self) -> Result<Vec<ActiveAlert>, String> {
        let params = [("active", "true".to_string()), ("silenced", "true".into()), ("inhibited", "true".into())];
        let alerts: Vec<GettableAlert> = self.http.get_json("Alertmanager", "api/v2/alerts", &params).await?;
        Ok(alerts
            .into_iter()
            .take(self.max_alerts)
            .map(|a| ActiveAlert {
                fingerprint: a.fingerprint,
                summary: a.annotations.get("summary").cloned(),
                labels: a.labels,
                state: a.status.state,
                starts_at: to_millis(a.starts_at),
            })
            .collect())
    }

    async fn silences(&self) -> Result<Vec<Silence>, String> {
        let all: Vec<GettableSilence> = self.http.get_json("Alertmanager", "api/v2/silences", &[]).await?;
        Ok(all
            .into_iter()
            .filter(|s| s.status.state == "active")
            .map(|s| Silence {
                id: s.id,
                matchers: s
                    .matchers
                    .iter()
                    .map(|m| {
                        let op = match (m.is_equal, m.is_regex) {
                            (true, false) => "=",
                            (false, false) => "!=",
                            (true, true) => "=~",
                            (false, true) => "!~",
                        };
                        format!("{}{op}{:?}", m.name, m.value)
                    })
                    .collect(),
                // Negative matchers do not name a service the silence is about.
                matches: s.matchers.into_iter().filter(|m| m.is_equal).map(|m| (m.name, m.value, m.is_regex)).collect(),
                created_by: s.created_by,
                comment: s.comment,
                ends_at: to_millis(s.ends_at),
            })
            .collect())
    }
}
