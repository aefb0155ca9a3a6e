//! The one YAML config file. Strict: every struct denies unknown keys, and the parser's error
//! names the key with its line and column. Secrets are only ever references, `{env: NAME}` or
//! `{file: PATH}`, resolved at start into [`crate::secret::Secret`]s that never print.
//!
//! Every key is documented in docs/src/configuration.md; the reference config is
//! `examples/medic.yaml`, which a test loads.

use crate::incident::Policy;
use crate::secret::Value;
pub use crate::secret::mask_url;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub const DEFAULT_DATABASE_URL: &str = "sqlite://medic.db";
/// The environment variable a package (the image, the systemd unit) sets its default store in.
pub const DEFAULT_DATABASE_URL_ENV: &str = "MEDIC_DEFAULT_DATABASE_URL";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP server binds.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Connection limits and timeouts of the HTTP server.
    #[serde(default)]
    pub http: crate::serve::Config,
    #[serde(default)]
    pub database: DatabaseConfig,
    #[serde(default)]
    pub intake: crate::intake::Config,
    #[serde(default)]
    pub incidents: Policy,
    #[serde(default)]
    pub log: crate::telemetry::Config,
    #[serde(default)]
    pub responders: crate::approval::Responders,
    #[serde(default)]
    pub executor: crate::executor::Config,
    #[serde(default)]
    pub guardrails: crate::guardrails::GuardrailConfig,
    /// Earned autonomy: when a runbook's plans may run by themselves.
    #[serde(default)]
    pub autonomy: crate::autonomy::Config,
    /// How long resolved incidents, chat deliveries and audit records are kept.
    #[serde(default)]
    pub retention: crate::store::retention::Config,
    /// The runbooks directory `serve` loads (default: ./runbooks when it exists).
    #[serde(default)]
    pub runbooks: Option<PathBuf>,
    #[serde(default)]
    pub context: crate::context::Config,
    #[serde(default)]
    pub api: crate::api::auth::Config,
    #[serde(default)]
    pub ask: crate::ask::Config,
    #[serde(default)]
    pub slack: Option<crate::chat::slack::Config>,
    #[serde(default)]
    pub discord: Option<crate::chat::discord::Config>,
    #[serde(default)]
    pub mattermost: Option<crate::chat::mattermost::Config>,
    /// Where medic pages a person when it cannot help (`page`).
    #[serde(default)]
    pub paging: crate::page::Config,
    /// Where medic opens tickets (`ticket`).
    #[serde(default)]
    pub tickets: crate::ticket::Config,
    /// The morning summary in every incident channel (`chat::summary`); none by default.
    #[serde(default)]
    pub summary: Option<crate::chat::summary::Config>,
}

fn default_listen() -> SocketAddr {
    ([127, 0, 0, 1], 8080).into()
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: default_listen(),
            http: Default::default(),
            database: DatabaseConfig::default(),
            intake: Default::default(),
            incidents: Policy::default(),
            log: Default::default(),
            responders: Default::default(),
            executor: Default::default(),
            guardrails: Default::default(),
            autonomy: Default::default(),
            retention: Default::default(),
            runbooks: None,
            context: Default::default(),
            api: Default::default(),
            ask: Default::default(),
            slack: None,
            discord: None,
            mattermost: None,
            paging: Default::default(),
            tickets: Default::default(),
            summary: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://PATH` or `postgres://…`; a plain string or a secret reference (a PostgreSQL
    /// URL usually holds a password). `MEDIC_DATABASE_URL` / `--database-url` override it.
    #[serde(default)]
    pub url: Option<Value>,
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
}

fn default_max_connections() -> u32 {
    8
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig { url: None, max_connections: default_max_connections() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {message}")]
    Read { path: String, message: String },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: invalid configuration:\n  - {}", .problems.join("\n  - "))]
    Invalid { path: String, problems: Vec<String> },
}

/// What is wrong with `url` as the address of an HTTP service (`what` names the key): it must
/// be an absolute http(s) URL with a host (`prometheus:9090` parses as a URL of the scheme
/// "prometheus", and was accepted).
pub fn http_url(what: &str, url: &str) -> Option<String> {
    match reqwest::Url::parse(url) {
        Err(e) => Some(format!("{what}: {url:?} is not a URL: {e}")),
        Ok(u) if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none_or(str::is_empty) => {
            Some(format!("{what}: {url:?} is not an http(s) URL with a host (e.g. http://prometheus:9090)"))
        }
        Ok(_) => None,
    }
}

/// What is wrong with `id` as a Slack conversation id (`C…`, `G…` or `D…`, then capitals and
/// digits): a channel's name ("#incidents") is not one, and the API refuses it at the first post.
pub fn slack_channel_id(what: &str, id: &str) -> Option<String> {
    let valid = id.len() >= 9
        && id.starts_with(['C', 'G', 'D'])
        && id.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
    (!valid).then(|| {
        format!("{what}: {id:?} is not a Slack channel id (C…, as the channel's details show it; a name is not one)")
    })
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.display().to_string(),
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and validates `text`, reporting every problem in one run: each unknown key
    /// (with its line and column), then, once the rest parses, every invalid value.
    pub fn parse(text: &str, path: &str) -> Result<Config, ConfigError> {
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        let first = match serde_norway::from_str::<Config>(text) {
            Ok(config) => {
                let problems = config.problems();
                return if problems.is_empty() {
                    Ok(config)
                } else {
                    Err(ConfigError::Invalid { path: path.to_string(), problems })
                };
            }
            Err(e) => e.to_string(),
        };
        let (mut problems, config) = crate::strict::unknown_keys::<Config>(text, first.clone());
        match config {
            Some(c) => problems.extend(c.problems()),
            None if problems.len() == 1 => {
                return Err(ConfigError::Parse { path: path.to_string(), message: first });
            }
            None => {}
        }
        Err(ConfigError::Invalid { path: path.to_string(), problems })
    }

    /// Everything wrong with a syntactically valid config: values out of range, secrets that do
    /// not resolve, sources left open on a non-loopback address.
    pub fn problems(&self) -> Vec<String> {
        let mut out = self.incidents.problems();
        out.extend(self.guardrails.problems());
        out.extend(self.autonomy.problems(None));
        out.extend(self.retention.problems());
        for g in &self.responders.default_approvers {
            if !self.responders.groups.contains_key(g) {
                out.push(format!("responders.default_approvers: no group named {g:?} in responders.groups"));
            }
        }
        for (g, members) in &self.responders.groups {
            if let Some(m) = members.iter().find(|m| !m.contains(':')) {
                out.push(format!(
                    "responders.groups.{g}: {m:?} should be platform:id (e.g. slack:U024BE7LH, console:alice)"
                ));
            }
        }
        out.extend(self.executor.problems());
        if self.intake.max_body_bytes < 1024 {
            out.push("intake.max_body_bytes: expected at least 1024".into());
        }
        if self.database.max_connections < 2 {
            out.push("database.max_connections: expected at least 2".into());
        }
        if let Some(Value::Secret(r)) = &self.database.url
            && let Err(e) = r.resolve()
        {
            out.push(format!("database.url: {e}"));
        }
        for (name, src) in self.intake.sources() {
            let Some(auth) = &src.auth else { continue };
            match auth.scheme() {
                Err(e) => out.push(format!("intake.{name}.auth: {e}")),
                Ok((_, secrets)) => {
                    for (i, s) in secrets.iter().enumerate() {
                        if let Err(e) = s.resolve() {
                            out.push(format!("intake.{name}.auth[{i}]: {e}"));
                        }
                    }
                }
            }
        }
        out.extend(self.context.problems());
        if let Err(e) = self.api.tokens() {
            out.push(e);
        }
        if let Err(e) = self.ask.offset() {
            out.push(e);
        }
        if let Some(Err(e)) = self.ask.llm.as_ref().map(crate::ask::llm::Llm::new) {
            out.push(e);
        }
        if let Some(d) = &self.discord {
            if let Err(e) = crate::chat::discord::Discord::new(d, std::time::Duration::from_secs(5)) {
                out.push(e);
            }
            if d.default_channel.trim().is_empty() || d.application_id.trim().is_empty() {
                out.push("discord: default_channel and application_id are required".into());
            }
            out.extend(http_url("discord.api_url", &d.api_url));
        }
        if let Some(m) = &self.mattermost {
            if let Err(e) = crate::chat::mattermost::Mattermost::new(m, std::time::Duration::from_secs(5)) {
                out.push(e);
            }
            if m.default_channel.trim().is_empty() {
                out.push("mattermost: default_channel is required (a channel id)".into());
            }
        }
        if let Some(s) = &self.slack {
            if s.signing_secret.is_empty() || s.signing_secret.len() > 2 {
                out.push("slack.signing_secret: expected one or two secrets".into());
            }
            out.extend(slack_channel_id("slack.default_channel", &s.default_channel));
            for (i, r) in s.routes.iter().enumerate() {
                out.extend(slack_channel_id(&format!("slack.routes[{i}].channel"), &r.channel));
            }
            out.extend(http_url("slack.api_url", &s.api_url));
            if let Err(e) = crate::chat::slack::Slack::new(s, std::time::Duration::from_secs(5)) {
                out.push(e);
            }
        }
        if let Some(d) = &self.runbooks
            && !d.is_dir()
        {
            out.push(format!("runbooks: {} is not a directory", d.display()));
        }
        out.extend(self.http.problems());
        out.extend(self.open_sources_problem(self.listen));
        out
    }

    /// The runbooks directory: the configured one, else ./runbooks when it exists.
    pub fn runbooks_dir(&self) -> Option<PathBuf> {
        self.runbooks.clone().or_else(|| Some(PathBuf::from("runbooks")).filter(|d| d.is_dir()))
    }

    /// Where the config and its runbooks disagree: an approval group the responders do not
    /// define, an autonomy policy that does not fit. `medic check` reports these and `serve`
    /// refuses to start with them.
    pub fn runbook_problems(&self, runbooks: &[crate::runbook::Runbook]) -> Vec<String> {
        runbooks
            .iter()
            .flat_map(|rb| rb.approval.groups.iter().map(move |g| (rb, g)))
            .filter(|(_, g)| !self.responders.groups.contains_key(*g))
            .map(|(rb, g)| format!("{}: approval.groups names {g:?}, which is not in responders.groups", rb.id))
            .chain(self.autonomy.problems(Some(runbooks)))
            .collect()
    }

    /// Whether any chat platform is configured (Slack, Discord, Mattermost).
    pub fn has_chat(&self) -> bool {
        self.slack.is_some() || self.discord.is_some() || self.mattermost.is_some()
    }

    /// Unauthenticated intake is allowed only while bound to loopback.
    pub fn open_sources_problem(&self, listen: SocketAddr) -> Option<String> {
        if listen.ip().is_loopback() {
            return None;
        }
        let mut open: Vec<&str> =
            self.intake.sources().into_iter().filter(|(_, s)| s.enabled && s.auth.is_none()).map(|(n, _)| n).collect();
        if self.api.bearer.is_empty() {
            open.push("api (the incident API and /v1/ask: api.bearer)");
        }
        (!open.is_empty()).then(|| {
            format!(
                "listen {listen} is not loopback, so every enabled intake source needs `auth` and the API `api.bearer`; missing for: {}",
                open.join(", ")
            )
        })
    }

    /// The store URL: the override if given, else the config's, else the embedded default.
    pub fn database_url(&self, overridden: Option<&str>) -> Result<String, String> {
        self.store(overridden).map(|(url, _)| url)
    }

    /// The store URL and which source set it, in this order of precedence:
    /// 1. `--database-url` or `MEDIC_DATABASE_URL` (an explicit override, for one command);
    /// 2. the config's `database.url`;
    /// 3. `MEDIC_DEFAULT_DATABASE_URL`, the default a package sets (the image, the systemd unit),
    ///    which a configured `database.url` always wins over;
    /// 4. `sqlite://medic.db` in the working directory.
    pub fn store(&self, overridden: Option<&str>) -> Result<(String, &'static str), String> {
        if let Some(u) = overridden {
            let source = match self.database.url.is_some() {
                true => "--database-url or MEDIC_DATABASE_URL, which overrides the config's database.url",
                false => "--database-url or MEDIC_DATABASE_URL",
            };
            return Ok((u.to_string(), source));
        }
        if let Some(v) = &self.database.url {
            return v.resolve().map(|u| (u, "the config's database.url"));
        }
        match std::env::var(DEFAULT_DATABASE_URL_ENV) {
            Ok(u) if !u.is_empty() => Ok((u, "MEDIC_DEFAULT_DATABASE_URL (the package's default)")),
            _ => Ok((DEFAULT_DATABASE_URL.to_string(), "the built-in default")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let err = Config::parse("listen: 127.0.0.1:9000\nincidents:\n  grace: 5m\n", "m.yaml").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("unknown field `grace`"), "{msg}");
        assert!(msg.contains("line 3"), "{msg}");
    }

    #[test]
    fn every_problem_is_reported_in_one_run() {
        let text = "incidents:\n  group_windw: 1h\nexecutor:\n  dry_rn: true\nbogus: 1\n\
                    database: {url: {env: MEDIC_TEST_SURELY_UNSET_VAR}}\n";
        let msg = Config::parse(text, "m.yaml").unwrap_err().to_string();
        assert!(msg.contains("unknown field `group_windw`") && msg.contains("line 2"), "{msg}");
        assert!(msg.contains("executor: unknown field `dry_rn`") && msg.contains("line 4 column 3"), "{msg}");
        assert!(msg.contains("unknown field `bogus`") && msg.contains("line 5 column 1"), "{msg}");
        assert!(msg.contains("MEDIC_TEST_SURELY_UNSET_VAR is not set"), "and the invalid values: {msg}");
        assert!(
            msg.find("group_windw").unwrap() < msg.find("MEDIC_TEST_SURELY_UNSET_VAR").unwrap(),
            "unknown keys first: {msg}"
        );
    }

    #[test]
    fn inline_secret_is_refused() {
        let err = Config::parse("intake:\n  generic:\n    auth:\n      bearer: [hunter2]\n", "m.yaml").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("inline secrets are not accepted"), "{msg}");
        assert!(!msg.contains("hunter2"), "{msg}");
    }

    #[test]
    fn open_source_on_public_address_is_refused() {
        let err = Config::parse("listen: 0.0.0.0:8080\n", "m.yaml").unwrap_err().to_string();
        assert!(err.contains("missing for: alertmanager, grafana, generic, pagerduty, changes"), "{err}");
    }

    #[test]
    fn missing_env_secret_names_the_variable() {
        let err =
            Config::parse("intake:\n  generic:\n    auth:\n      bearer: [{env: MEDIC_TEST_UNSET_VAR}]\n", "m.yaml")
                .unwrap_err()
                .to_string();
        assert!(err.contains("intake.generic.auth[0]: environment variable MEDIC_TEST_UNSET_VAR is not set"), "{err}");
    }
}
