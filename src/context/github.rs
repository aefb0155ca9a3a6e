//! GitHub: the deployments (`GET /repos/{repo}/deployments`) and releases
//! (`GET /repos/{repo}/releases`) of the repositories configured for a service, as change
//! events. A token (fine-grained, read-only "Deployments" and "Contents") is optional for public
//! repositories; rate limiting is reported as such.

use super::Changes;
use super::http::{Auth, Http};
use crate::alert::{Change, ChangeKind};
use crate::time::{Millis, to_millis};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use std::time::Duration;

/// A repository and the service it deploys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Repo {
    /// `owner/name`.
    pub repo: String,
    pub service: String,
    /// Only deployments to this environment (default: every environment).
    #[serde(default)]
    pub environment: Option<String>,
}

pub struct GitHub {
    http: Http,
    repos: Vec<Repo>,
}

#[derive(Deserialize)]
struct User {
    login: String,
}

#[derive(Deserialize)]
struct Deployment {
    id: u64,
    sha: String,
    #[serde(rename = "ref")]
    git_ref: String,
    environment: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    creator: Option<User>,
    created_at: DateTime<Utc>,
    #[serde(default)]
    url: Option<String>,
}

#[derive(Deserialize)]
struct Release {
    id: u64,
    tag_name: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    html_url: Option<String>,
    #[serde(default)]
    author: Option<User>,
    #[serde(default)]
    published_at: Option<DateTime<Utc>>,
    #[serde(default)]
    draft: bool,
}

impl GitHub {
    /// `base` is the REST API root: `https://api.github.com`, or `https://HOST/api/v3` for
    /// GitHub Enterprise Server.
    pub fn new(
        base: &str,
        token: Option<crate::secret::Secret>,
        repos: Vec<Repo>,
        timeout: Duration,
    ) -> Result<Self, String> {
        let headers = vec![
            ("accept".to_string(), "application/vnd.github+json".to_string()),
            ("x-github-api-version".to_string(), "2022-11-28".to_string()),
            ("user-agent".to_string(), concat!("medic/", env!("CARGO_PKG_VERSION")).to_string()),
        ];
        let auth = token.map(Auth::Bearer).unwrap_or(Auth::None);
        for r in &repos {
            if r.repo.split('/').count() != 2 || r.repo.split('/').any(|p| p.is_empty()) {
                return Err(format!("github repository {:?} is not owner/name", r.repo));
            }
        }
        Ok(GitHub { http: Http::new("GitHub", base, auth, headers, timeout)?, repos })
    }

    async fn of_repo(&self, r: &Repo, start: Millis, end: Millis) -> Result<Vec<Change>, String> {
        let mut params = vec![("per_page", "50".to_string())];
        if let Some(env) = &r.environment {
            params.push(("environment", env.clone()));
        }
        let (deployments_path, releases_path) =
            (format!("repos/{}/deployments", r.repo), format!("repos/{}/releases", r.repo));
        let per_page = [("per_page", "30".to_string())];
        let deployments = self.http.get_json::<Vec<Deployment>>("GitHub", &deployments_path, &params);
        let releases = self.http.get_json::<Vec<Release>>("GitHub", &releases_path, &per_page);
        let (deployments, releases) = tokio::join!(deployments, releases);
        let mut out: Vec<Change> = deployments?
            .into_iter()
            .map(|d| {
                let short = d.sha.chars().take(7).collect::<String>();
                Change {
                    id: format!("github-deployment-{}", d.id),
                    kind: ChangeKind::Deploy,
                    service: r.service.clone(),
                    summary: format!(
                        "GitHub deployment of {} ({short}) to {}{}",
                        d.git_ref,
                        d.environment,
                        d.description.filter(|s| !s.is_empty()).map(|s| format!(": {s}")).unwrap_or_default()
                    ),
                    author: d.creator.map(|u| u.login),
                    version: Some(if d.git_ref == d.sha { short } else { d.git_ref }),
                    url: d.url,
                    labels: [("repository".to_string(), r.repo.clone())].into(),
                    at: to_millis(d.created_at),
                }
            })
            .collect();
        out.extend(releases?.into_iter().filter(|rel| !rel.draft).filter_map(|rel| {
            Some(Change {
                id: format!("github-release-{}", rel.id),
                kind: ChangeKind::Release,
                service: r.service.clone(),
                summary: format!(
                    "release {} of {} published{}",
                    rel.tag_name,
                    r.repo,
                    rel.name
                        .filter(|n| !n.is_empty() && *n != rel.tag_name)
                        .map(|n| format!(": {n}"))
                        .unwrap_or_default()
                ),
                author: rel.author.map(|u| u.login),
                version: Some(rel.tag_name),
                url: rel.html_url,
                labels: [("repository".to_string(), r.repo.clone())].into(),
                at: to_millis(rel.published_at?),
            })
        }));
        out.retain(|c| c.at >= start && c.at <= end);
        Ok(out)
    }
}

#[async_trait]
impl Changes for GitHub {
    fn name(&self) -> &str {
        "github"
    }

    async fn changes(&self, service: &str, start: Millis, end: Millis) -> Result<Vec<Change>, String> {
        let mine: Vec<&Repo> = self.repos.iter().filter(|r| r.service == service).collect();
        let results = futures_util::future::join_all(mine.iter().map(|r| self.of_repo(r, start, end))).await;
        let mut out = Vec::new();
        for (r, res) in mine.iter().zip(results) {
            out.extend(res.map_err(|e| format!("{}: {e}", r.repo))?);
        }
        Ok(out)
    }
}
