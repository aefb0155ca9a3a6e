//! Jira: `POST {url}/rest/api/2/issue` (Cloud and Data Center both serve v2, whose
//! `description` is wiki text), `201 Created` with the issue's `key`; the ticket's address is
//! `{url}/browse/{key}`. Cloud authenticates with an account's email and an API token (Basic),
//! Data Center with a personal access token (Bearer).

use super::{Ticket, Tracker};
use crate::chat::outbox::Destination;
use crate::secret::Secret;
use crate::store::{Delivery, OutboxRow};
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::Duration;

/// The `tickets.jira` section.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `https://example.atlassian.net` or the Data Center's base URL.
    pub url: String,
    pub project: String,
    #[serde(default = "task")]
    pub issue_type: String,
    /// Cloud: the account's email, with `token` an API token (Basic). Without it, `token` is a
    /// Data Center personal access token (Bearer).
    #[serde(default)]
    pub email: Option<String>,
    pub token: crate::secret::SecretRef,
    #[serde(default)]
    pub labels: Vec<String>,
}

fn task() -> String {
    "Task".into()
}

pub struct Jira {
    base: reqwest::Url,
    create: reqwest::Url,
    project: String,
    issue_type: String,
    email: Option<String>,
    token: Secret,
    labels: Vec<String>,
    http: reqwest::Client,
}

impl Jira {
    pub fn new(cfg: &Config, timeout: Duration) -> Result<Jira, String> {
        let mut base = reqwest::Url::parse(&cfg.url).map_err(|e| format!("tickets.jira.url: {e}"))?;
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let create = base.join("rest/api/2/issue").map_err(|e| format!("tickets.jira.url: {e}"))?;
        let token = cfg.token.resolve().map_err(|e| format!("tickets.jira.token: {e}"))?;
        let http = crate::telemetry::http_client_builder().timeout(timeout).build().map_err(|e| e.to_string())?;
        Ok(Jira {
            base,
            create,
            project: cfg.project.clone(),
            issue_type: cfg.issue_type.clone(),
            email: cfg.email.clone(),
            token,
            labels: cfg.labels.clone(),
            http,
        })
    }
}

impl Tracker for Jira {
    fn create(&self, t: &Ticket) -> Value {
        // Markdown reads well enough as wiki text; Jira's field limit is 32,767 characters.
        json!({"fields": {
            "project": {"key": self.project},
            "summary": crate::chat::cut(&t.title.replace('\n', " "), 255),
            "description": crate::chat::cut(&t.body, 32_000),
            "issuetype": {"name": self.issue_type},
            "labels": self.labels,
        }})
    }
}

#[async_trait::async_trait]
impl Destination for Jira {
    fn name(&self) -> &'static str {
        "jira"
    }

    async fn deliver(&self, row: &OutboxRow) -> Delivery {
        let req = self.http.post(self.create.clone()).header("content-type", "application/json");
        let req = match &self.email {
            Some(email) => req.basic_auth(email, Some(self.token.expose())),
            None => req.bearer_auth(self.token.expose()),
        };
        let base = self.base.clone();
        super::outcome(
            req.body(row.item.body.clone()).send().await,
            "Jira",
            |v| v["key"].as_str().and_then(|k| base.join(&format!("browse/{k}")).ok()).map(|u| u.to_string()),
            row.attempts,
        )
        .await
    }
}
