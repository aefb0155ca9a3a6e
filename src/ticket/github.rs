//! GitHub Issues: `POST {api_url}/repos/{owner}/{repo}/issues` with a token (a fine-grained
//! token with Issues: write on the repository), `201 Created` with the issue's `html_url`.

use super::{Ticket, Tracker};
use crate::chat::outbox::Destination;
use crate::secret::Secret;
use crate::store::{Delivery, OutboxRow};
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::Duration;

/// The `tickets.github` section.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `owner/name`.
    pub repository: String,
    pub token: crate::secret::SecretRef,
    #[serde(default)]
    pub labels: Vec<String>,
    #[serde(default = "api")]
    pub api_url: String,
}

fn api() -> String {
    "https://api.github.com".into()
}

pub struct GitHub {
    url: reqwest::Url,
    token: Secret,
    labels: Vec<String>,
    http: reqwest::Client,
}

impl GitHub {
    pub fn new(cfg: &Config, timeout: Duration) -> Result<GitHub, String> {
        let repo = &cfg.repository;
        if repo.split('/').count() != 2 || repo.split('/').any(|p| p.is_empty()) {
            return Err(format!("tickets.github.repository: expected owner/name, got {repo:?}"));
        }
        let url = reqwest::Url::parse(&cfg.api_url)
            .and_then(|u| u.join(&format!("/repos/{repo}/issues")))
            .map_err(|e| format!("tickets.github.api_url: {e}"))?;
        let token = cfg.token.resolve().map_err(|e| format!("tickets.github.token: {e}"))?;
        let http = crate::telemetry::http_client_builder().timeout(timeout).build().map_err(|e| e.to_string())?;
        Ok(GitHub { url, token, labels: cfg.labels.clone(), http })
    }
}

impl Tracker for GitHub {
    fn create(&self, t: &Ticket) -> Value {
        // GitHub's limit on an issue body is 65,536 characters.
        json!({"title": crate::chat::cut(&t.title, 256), "body": crate::chat::cut(&t.body, 65_000), "labels": self.labels})
    }
}

#[async_trait::async_trait]
impl Destination for GitHub {
    fn name(&self) -> &'static str {
        "github"
    }

    async fn deliver(&self, row: &OutboxRow) -> Delivery {
        let req = self
            .http
            .post(self.url.clone())
            .bearer_auth(self.token.expose())
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28")
            .header("content-type", "application/json")
            .body(row.item.body.clone());
        super::outcome(req.send().await, "GitHub", |v| v["html_url"].as_str().map(str::to_string), row.attempts).await
    }
}
