//! The `context` section of the config: the observability backends medic reads, how to reach
//! and authenticate to each, and how long gathering may take.

use crate::secret::{SecretRef, Value};
use serde::Deserialize;
use std::path::PathBuf;

/// The observability backends medic reads, and how long it may take.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Each call's deadline.
    #[serde(default = "five_seconds", with = "humantime_serde")]
    pub timeout: std::time::Duration,
    /// The whole gathering's deadline.
    #[serde(default = "ten_seconds", with = "humantime_serde")]
    pub budget: std::time::Duration,
    /// How far before the first alert's start metrics and logs are read.
    #[serde(default = "two_hours", with = "humantime_serde")]
    pub look_back: std::time::Duration,
    /// How far before the first alert's start logs and traces are read (their baseline).
    #[serde(default = "one_hour", with = "humantime_serde")]
    pub logs_look_back: std::time::Duration,
    /// How far back changes are looked for.
    #[serde(default = "one_day", with = "humantime_serde")]
    pub changes_look_back: std::time::Duration,
    /// How long one incident's context is reused while alerts keep joining it.
    #[serde(default = "one_minute", with = "humantime_serde")]
    pub cache_ttl: std::time::Duration,
    /// While an incident keeps growing, it is diagnosed again at most this often, and only when
    /// what diagnosis reads changed (a new alert name or service, a resolve, a re-fire).
    #[serde(default = "thirty_seconds", with = "humantime_serde")]
    pub rediagnose_every: std::time::Duration,
    #[serde(default)]
    pub prometheus: Option<PrometheusConfig>,
    #[serde(default)]
    pub loki: Option<LokiConfig>,
    #[serde(default)]
    pub alertmanager: Option<HttpBackend>,
    #[serde(default)]
    pub kubernetes: Option<crate::context::kubernetes::KubernetesConfig>,
    #[serde(default)]
    pub github: Option<GitHubConfig>,
    /// A trace backend (Tempo or Jaeger).
    #[serde(default)]
    pub traces: Option<crate::context::traces::Config>,
    #[serde(default)]
    pub topology: TopologyConfig,
}

fn five_seconds() -> std::time::Duration {
    std::time::Duration::from_secs(5)
}
fn ten_seconds() -> std::time::Duration {
    std::time::Duration::from_secs(10)
}
fn thirty_seconds() -> std::time::Duration {
    std::time::Duration::from_secs(30)
}
fn one_minute() -> std::time::Duration {
    std::time::Duration::from_secs(60)
}
fn one_hour() -> std::time::Duration {
    std::time::Duration::from_secs(3600)
}
fn two_hours() -> std::time::Duration {
    std::time::Duration::from_secs(2 * 3600)
}
fn one_day() -> std::time::Duration {
    std::time::Duration::from_secs(24 * 3600)
}

impl Default for Config {
    fn default() -> Self {
        Config {
            timeout: five_seconds(),
            budget: ten_seconds(),
            look_back: two_hours(),
            logs_look_back: one_hour(),
            changes_look_back: one_day(),
            cache_ttl: one_minute(),
            rediagnose_every: thirty_seconds(),
            prometheus: None,
            loki: None,
            alertmanager: None,
            kubernetes: None,
            github: None,
            traces: None,
            topology: TopologyConfig::default(),
        }
    }
}

/// Where an HTTP backend is and how to authenticate to it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpBackend {
    pub url: String,
    #[serde(default)]
    pub auth: Option<BackendAuth>,
    /// Extra request headers, e.g. `X-Scope-OrgID: tenant-1` (a value may be a secret reference).
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendAuth {
    #[serde(default)]
    pub bearer: Option<SecretRef>,
    #[serde(default)]
    pub basic: Option<BasicAuth>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub user: String,
    pub password: SecretRef,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusConfig {
    #[serde(flatten)]
    pub http: HttpBackend,
    /// Replaces the default golden signals (docs/src/context.md).
    #[serde(default)]
    pub golden_signals: Option<Vec<crate::context::Golden>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LokiConfig {
    #[serde(flatten)]
    pub http: HttpBackend,
    /// LogQL with `{{service}}` (default: the service's error-like lines).
    #[serde(default)]
    pub query: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitHubConfig {
    /// `https://api.github.com`, or `https://HOST/api/v3` for GitHub Enterprise Server.
    #[serde(default = "github_api")]
    pub url: String,
    #[serde(default)]
    pub token: Option<SecretRef>,
    pub repos: Vec<crate::context::github::Repo>,
}

fn github_api() -> String {
    "https://api.github.com".into()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologyConfig {
    /// A YAML map from each service to the services it calls.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// Read edges from service-graph metrics in Prometheus: `tempo` or `istio`.
    #[serde(default)]
    pub service_graph: Option<crate::context::topology::ServiceGraphKind>,
}

impl HttpBackend {
    /// The auth and headers with their secrets resolved.
    pub fn resolve(&self, what: &str) -> Result<(crate::context::http::Auth, Vec<(String, String)>), String> {
        use crate::context::http::Auth;
        let auth = match &self.auth {
            None => Auth::None,
            Some(BackendAuth { bearer: Some(b), basic: None }) => {
                Auth::Bearer(b.resolve().map_err(|e| format!("{what}.auth.bearer: {e}"))?)
            }
            Some(BackendAuth { bearer: None, basic: Some(b) }) => Auth::Basic {
                user: b.user.clone(),
                password: b.password.resolve().map_err(|e| format!("{what}.auth.basic.password: {e}"))?,
            },
            Some(_) => return Err(format!("{what}.auth: expected exactly one of `bearer` or `basic`")),
        };
        let mut headers = Vec::new();
        for (k, v) in &self.headers {
            headers.push((k.clone(), v.resolve().map_err(|e| format!("{what}.headers.{k}: {e}"))?));
        }
        Ok((auth, headers))
    }
}

impl Config {
    pub(crate) fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.timeout.is_zero() || self.budget < self.timeout {
            out.push("context: expected 0 < timeout <= budget".into());
        }
        let backends: [(&str, Option<&HttpBackend>); 4] = [
            ("context.prometheus", self.prometheus.as_ref().map(|p| &p.http)),
            ("context.loki", self.loki.as_ref().map(|l| &l.http)),
            ("context.alertmanager", self.alertmanager.as_ref()),
            ("context.traces", self.traces.as_ref().map(|t| &t.http)),
        ];
        for (what, b) in backends {
            let Some(b) = b else { continue };
            out.extend(crate::config::http_url(&format!("{what}.url"), &b.url));
            if let Err(e) = b.resolve(what) {
                out.push(e);
            }
        }
        if let Some(g) = self.prometheus.as_ref().and_then(|p| p.golden_signals.as_ref()) {
            for s in g {
                if let Err(e) = handlebars::Template::compile(&s.promql) {
                    out.push(format!("context.prometheus.golden_signals.{}: {}", s.name, e.reason()));
                }
            }
        }
        if let Some(gh) = &self.github
            && let Some(Err(e)) = gh.token.as_ref().map(SecretRef::resolve)
        {
            out.push(format!("context.github.token: {e}"));
        }
        if let Some(f) = &self.topology.file {
            match std::fs::read_to_string(f) {
                Ok(text) => {
                    if let Err(e) = crate::context::topology::FileTopology::parse(&text) {
                        out.push(format!("context.topology.file: {}: {e}", f.display()));
                    }
                }
                Err(e) => out.push(format!("context.topology.file: cannot read {}: {}", f.display(), e.kind())),
            }
        }
        if let Some(k) = &self.kubernetes
            && let Some(sel) = &k.selector
            && !sel.contains("{{service}}")
        {
            out.push(format!("context.kubernetes.selector: {sel:?} does not mention {{{{service}}}}"));
        }
        if self.traces.as_ref().is_some_and(|t| t.limit == 0 || t.limit > 5000) {
            out.push("context.traces.limit: expected 1 to 5000 traces".into());
        }
        if self.topology.service_graph.is_some() && self.prometheus.is_none() {
            out.push("context.topology.service_graph: needs context.prometheus".into());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn context_section_is_strict() {
        let ok = "context:\n  prometheus:\n    url: http://p:9090\n    headers: {X-Scope-OrgID: t1}\n    golden_signals: [{name: up, promql: 'up{job=\"{{service}}\"}'}]\n";
        let c = Config::parse(ok, "m.yaml").unwrap();
        assert_eq!(c.context.prometheus.unwrap().golden_signals.unwrap()[0].name, "up");
        for bad in [
            "context:\n  prometheus:\n    url: http://p:9090\n    golden_signal: []\n",
            "context:\n  alertmanager:\n    url: http://a:9093\n    golden_signals: []\n",
            "context:\n  loki:\n    url: http://l:3100\n    auth: {bearer: {env: X}, token: y}\n",
        ] {
            let err = Config::parse(bad, "m.yaml").unwrap_err().to_string();
            assert!(err.contains("unknown field"), "{bad}: {err}");
        }
    }
}
