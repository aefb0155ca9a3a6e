//! The one YAML config file. Strict: every struct denies unknown keys, and the parser's error
//! names the key with its line and column. Secrets are only ever references, `{env: NAME}` or
//! `{file: PATH}`, resolved at start into [`Secret`]s that never print.
//!
//! Every key is documented in README.md ("Configuration reference"); the reference config is
//! `examples/medic.yaml`, which a test loads.

use crate::incident::Policy;
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use subtle::ConstantTimeEq;

pub const DEFAULT_DATABASE_URL: &str = "sqlite://medic.db";

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
    pub intake: IntakeConfig,
    #[serde(default)]
    pub incidents: Policy,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub responders: Responders,
    #[serde(default)]
    pub executor: ExecutorConfig,
    #[serde(default)]
    pub guardrails: crate::guardrails::GuardrailConfig,
    /// The runbooks directory `serve` loads (default: ./runbooks when it exists).
    #[serde(default)]
    pub runbooks: Option<PathBuf>,
    #[serde(default)]
    pub context: ContextConfig,
    #[serde(default)]
    pub slack: Option<SlackConfig>,
    #[serde(default)]
    pub discord: Option<DiscordConfig>,
}

/// Discord: the bot, the application whose interactions medic verifies, where incidents go.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscordConfig {
    pub bot_token: SecretRef,
    pub application_id: String,
    /// The application's public key (hex), for the Ed25519 signatures. Not a secret.
    pub public_key: String,
    #[serde(default = "discord_api")]
    pub api_url: String,
    /// Where incidents go when no route matches (a channel id).
    pub default_channel: String,
    #[serde(default)]
    pub routes: Vec<crate::chat::Route>,
}

fn discord_api() -> String {
    crate::chat::discord::DEFAULT_API_URL.into()
}

/// Slack: the bot's token, the signing secrets of its requests, where incidents go.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    /// The bot token (`xoxb-…`).
    pub bot_token: SecretRef,
    /// One or two (while rotating) signing secrets.
    pub signing_secret: Vec<SecretRef>,
    /// An app-level token (`xapp-…`) turns on Socket Mode (no inbound HTTP needed).
    #[serde(default)]
    pub app_token: Option<SecretRef>,
    #[serde(default = "slack_api")]
    pub api_url: String,
    /// Where incidents go when no route matches (a channel id, `C…`).
    pub default_channel: String,
    /// The first route whose labels the incident's first alert all carries picks the channel.
    #[serde(default)]
    pub routes: Vec<crate::chat::Route>,
    /// How long a user group's members (`slack:group:S…` in responders) are cached.
    #[serde(default = "one_minute", with = "humantime_serde")]
    pub usergroup_ttl: std::time::Duration,
}

fn slack_api() -> String {
    crate::chat::slack::DEFAULT_API_URL.into()
}

/// The observability backends medic reads, and how long it may take.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContextConfig {
    /// Each call's deadline.
    #[serde(default = "five_seconds", with = "humantime_serde")]
    pub timeout: std::time::Duration,
    /// The whole gathering's deadline.
    #[serde(default = "ten_seconds", with = "humantime_serde")]
    pub budget: std::time::Duration,
    /// How far before the first alert's start metrics and logs are read.
    #[serde(default = "two_hours", with = "humantime_serde")]
    pub look_back: std::time::Duration,
    /// How far back changes are looked for.
    #[serde(default = "one_day", with = "humantime_serde")]
    pub changes_look_back: std::time::Duration,
    /// How long one incident's context is reused while alerts keep joining it.
    #[serde(default = "one_minute", with = "humantime_serde")]
    pub cache_ttl: std::time::Duration,
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
    #[serde(default)]
    pub topology: TopologyConfig,
}

fn five_seconds() -> std::time::Duration {
    std::time::Duration::from_secs(5)
}
fn ten_seconds() -> std::time::Duration {
    std::time::Duration::from_secs(10)
}
fn one_minute() -> std::time::Duration {
    std::time::Duration::from_secs(60)
}
fn two_hours() -> std::time::Duration {
    std::time::Duration::from_secs(2 * 3600)
}
fn one_day() -> std::time::Duration {
    std::time::Duration::from_secs(24 * 3600)
}

impl Default for ContextConfig {
    fn default() -> Self {
        ContextConfig {
            timeout: five_seconds(),
            budget: ten_seconds(),
            look_back: two_hours(),
            changes_look_back: one_day(),
            cache_ttl: one_minute(),
            prometheus: None,
            loki: None,
            alertmanager: None,
            kubernetes: None,
            github: None,
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
    /// Replaces the default golden signals (README: "Context backends").
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

/// Who may approve: groups of identities (`platform:id`, e.g. `slack:U024BE7LH`,
/// `console:alice`), named by runbooks' `approval.groups`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Responders {
    #[serde(default)]
    pub groups: std::collections::BTreeMap<String, Vec<String>>,
    /// Groups that may approve plans of runbooks that name none.
    #[serde(default)]
    pub default_approvers: Vec<String>,
}

impl Responders {
    pub fn groups(&self) -> crate::approval::Groups {
        use crate::approval::Identity;
        crate::approval::Groups {
            members: self.groups.iter().map(|(g, m)| (g.clone(), m.iter().cloned().map(Identity).collect())).collect(),
            default_approvers: self.default_approvers.clone(),
        }
    }
}

/// Where plans' actions may reach.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutorConfig {
    /// Hosts (`host` or `host:port`) that `http` actions may call.
    #[serde(default)]
    pub http_allowed_hosts: Vec<String>,
    /// The only directory `script` actions run from.
    #[serde(default)]
    pub scripts_dir: Option<PathBuf>,
    /// Propose and "execute" plans as a log only.
    #[serde(default)]
    pub dry_run: bool,
    /// This replica's name in the executions table; keep it stable across restarts so an
    /// interrupted plan is found (default: the host name).
    #[serde(default)]
    pub owner: Option<String>,
    /// How long a running execution's heartbeat holds it (default 60s, renewed every quarter
    /// of it): past it, its replica is taken to be gone, and any replica marks the execution
    /// interrupted and escalates it.
    #[serde(default, with = "humantime_serde")]
    pub lease: Option<std::time::Duration>,
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
            intake: IntakeConfig::default(),
            incidents: Policy::default(),
            log: LogConfig::default(),
            responders: Responders::default(),
            executor: ExecutorConfig::default(),
            guardrails: Default::default(),
            runbooks: None,
            context: ContextConfig::default(),
            slack: None,
            discord: None,
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntakeConfig {
    /// Largest request body accepted, in bytes; larger bodies get 413.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    #[serde(default)]
    pub alertmanager: SourceConfig,
    #[serde(default)]
    pub grafana: SourceConfig,
    #[serde(default)]
    pub generic: SourceConfig,
    #[serde(default)]
    pub pagerduty: SourceConfig,
    #[serde(default)]
    pub changes: SourceConfig,
}

fn default_max_body() -> usize {
    1 << 20
}

impl Default for IntakeConfig {
    fn default() -> Self {
        IntakeConfig {
            max_body_bytes: default_max_body(),
            alertmanager: SourceConfig::default(),
            grafana: SourceConfig::default(),
            generic: SourceConfig::default(),
            pagerduty: SourceConfig::default(),
            changes: SourceConfig::default(),
        }
    }
}

impl IntakeConfig {
    pub fn sources(&self) -> [(&'static str, &SourceConfig); 5] {
        [
            ("alertmanager", &self.alertmanager),
            ("grafana", &self.grafana),
            ("generic", &self.generic),
            ("pagerduty", &self.pagerduty),
            ("changes", &self.changes),
        ]
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// A disabled source answers 404.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// How senders prove who they are. Required unless medic listens on loopback only.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
}

fn yes() -> bool {
    true
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig { enabled: true, auth: None }
    }
}

/// How a source's senders prove who they are: exactly one of `bearer` or `hmac`, each with one
/// or two secrets (two while rotating: the new one and the old one).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// `Authorization: Bearer <secret>`.
    #[serde(default)]
    pub bearer: Option<Vec<SecretRef>>,
    /// HMAC-SHA256 of the raw body: `X-PagerDuty-Signature: v1=<hex>` for PagerDuty,
    /// `X-Medic-Signature: sha256=<hex>` for every other source.
    #[serde(default)]
    pub hmac: Option<Vec<SecretRef>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthScheme {
    Bearer,
    Hmac,
}

impl AuthConfig {
    /// The scheme and its secrets, or what is wrong with the section.
    pub fn scheme(&self) -> Result<(AuthScheme, &[SecretRef]), String> {
        let (scheme, secrets) = match (&self.bearer, &self.hmac) {
            (Some(s), None) => (AuthScheme::Bearer, s),
            (None, Some(s)) => (AuthScheme::Hmac, s),
            _ => return Err("expected exactly one of `bearer` or `hmac`".into()),
        };
        if !(1..=2).contains(&secrets.len()) {
            return Err(format!("expected one or two secrets (new and old while rotating), got {}", secrets.len()));
        }
        Ok((scheme, secrets))
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    #[serde(default)]
    pub format: LogFormat,
    /// A tracing filter such as `info` or `medic=debug,info`; `RUST_LOG` overrides it.
    #[serde(default)]
    pub level: Option<String>,
}

#[derive(Debug, Default, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Where a secret lives. Never the secret itself.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretRef {
    Env(String),
    File(PathBuf),
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env(n) => write!(f, "{{env: {n}}}"),
            SecretRef::File(p) => write!(f, "{{file: {}}}", p.display()),
        }
    }
}

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SecretRefVisitor)
    }
}

struct SecretRefVisitor;

const INLINE_SECRET: &str = "inline secrets are not accepted: write {env: NAME} or {file: PATH}";

impl<'de> Visitor<'de> for SecretRefVisitor {
    type Value = SecretRef;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a secret reference, {env: NAME} or {file: PATH}")
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<SecretRef, E> {
        Err(E::custom(INLINE_SECRET))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<SecretRef, A::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            env: Option<String>,
            file: Option<PathBuf>,
        }
        let raw = Raw::deserialize(de::value::MapAccessDeserializer::new(map))?;
        match (raw.env, raw.file) {
            (Some(n), None) if !n.is_empty() => Ok(SecretRef::Env(n)),
            (None, Some(p)) => Ok(SecretRef::File(p)),
            _ => Err(de::Error::custom("expected exactly one of `env: NAME` or `file: PATH`")),
        }
    }
}

impl SecretRef {
    /// Reads the secret. Errors name the variable or file, never a value.
    pub fn resolve(&self) -> Result<Secret, String> {
        let raw = match self {
            SecretRef::Env(name) => {
                std::env::var(name).map_err(|_| format!("environment variable {name} is not set"))?
            }
            SecretRef::File(path) => std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read secret file {}: {}", path.display(), e.kind()))?,
        };
        let value = raw.trim_end_matches(['\n', '\r']).to_string();
        if value.is_empty() {
            return Err(format!("secret {self:?} is empty"));
        }
        Ok(Secret(value))
    }
}

/// A resolved secret. No `Display`; `Debug` is redacted; comparison is constant-time.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// A secret from a value the program already holds (tests, other secret stores).
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn ct_eq(&self, candidate: &[u8]) -> bool {
        // Hash both sides so the comparison does not leak the secret's length.
        use sha2::{Digest, Sha256};
        let a = Sha256::digest(self.0.as_bytes());
        let b = Sha256::digest(candidate);
        a.as_slice().ct_eq(b.as_slice()).into()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// A string that may be given inline or, when it holds a secret, by reference.
#[derive(Debug, Clone)]
pub enum Value {
    Plain(String),
    Secret(SecretRef),
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Value;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, {env: NAME} or {file: PATH}")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Value, E> {
                Ok(Value::Plain(s.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Value, A::Error> {
                SecretRefVisitor.visit_map(map).map(Value::Secret)
            }
        }
        d.deserialize_any(V)
    }
}

impl Value {
    pub fn resolve(&self) -> Result<String, String> {
        match self {
            Value::Plain(s) => Ok(s.clone()),
            Value::Secret(r) => r.resolve().map(|s| s.expose().to_string()),
        }
    }
}

/// A database URL with its password replaced by `****`, for logs and errors.
pub fn mask_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            let masked = if userinfo.contains(':') { format!("{user}:****") } else { user.to_string() };
            format!("{scheme}://{masked}@{host}{tail}")
        }
        None => url.to_string(),
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

/// After the first parse error `first` (with its line and column): each unknown key is taken
/// out of the document and the rest parsed again, so that every unknown key is reported in one
/// run. Returns the problems (the first one first) and the config, if the rest parses.
fn unknown_keys(text: &str, first: String) -> (Vec<String>, Option<Config>) {
    static UNKNOWN: std::sync::LazyLock<regex::Regex> =
        std::sync::LazyLock::new(|| regex::Regex::new(r"unknown field `([^`]+)`").expect("a valid pattern"));
    let mut problems = vec![first.clone()];
    let Ok(mut tree) = serde_norway::from_str::<serde_norway::Value>(text) else { return (problems, None) };
    for round in 0..64 {
        let err = match serde_path_to_error::deserialize::<_, Config>(tree.clone()) {
            Ok(config) => return (problems, Some(config)),
            Err(e) => e,
        };
        let message = err.inner().to_string();
        let Some(key) = UNKNOWN.captures(&message).map(|c| c[1].to_string()) else {
            if round > 0 {
                problems.push(format!("{}: {message}", err.path()));
            }
            return (problems, None);
        };
        let mut at: Vec<String> = err
            .path()
            .iter()
            .filter_map(|s| match s {
                serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                _ => None,
            })
            .collect();
        if at.last() == Some(&key) {
            at.pop();
        }
        if round > 0 || !first.contains(&format!("unknown field `{key}`")) {
            let mut full = at.clone();
            full.push(key.clone());
            let location = locate(text, &full).map(|(l, c)| format!(" at line {l} column {c}")).unwrap_or_default();
            let parent = if at.is_empty() { String::new() } else { format!("{}: ", at.join(".")) };
            problems.push(format!("{parent}{message}{location}"));
        }
        let mut node = &mut tree;
        for k in &at {
            match node.get_mut(k.as_str()) {
                Some(n) => node = n,
                None => return (problems, None),
            }
        }
        if node.as_mapping_mut().and_then(|m| m.remove(key.as_str())).is_none() {
            return (problems, None);
        }
    }
    (problems, None)
}

/// The line and column (1-based) of the block-style key at `path` in `text`, if it can be found.
fn locate(text: &str, path: &[String]) -> Option<(usize, usize)> {
    let mut from = 0;
    let mut indent: Option<usize> = None;
    let mut found = None;
    for key in path {
        let (i, col) = text.lines().enumerate().skip(from).find_map(|(i, line)| {
            let trimmed = line.trim_start();
            let col = line.len() - trimmed.len();
            let bare = trimmed.strip_prefix("- ").unwrap_or(trimmed);
            let deeper = indent.is_none_or(|d| col > d);
            (deeper && bare.strip_prefix(key.as_str()).is_some_and(|r| r.trim_start().starts_with(':')))
                .then_some((i, col))
        })?;
        from = i + 1;
        indent = Some(col);
        found = Some((i + 1, col + 1));
    }
    found
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
        let (mut problems, config) = unknown_keys(text, first.clone());
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
        if let Some(d) = &self.executor.scripts_dir
            && !d.is_dir()
        {
            out.push(format!("executor.scripts_dir: {} is not a directory", d.display()));
        }
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
        if let Some(d) = &self.discord {
            if let Err(e) = crate::chat::discord::Discord::new(d, std::time::Duration::from_secs(5)) {
                out.push(e);
            }
            if d.default_channel.trim().is_empty() || d.application_id.trim().is_empty() {
                out.push("discord: default_channel and application_id are required".into());
            }
        }
        if let Some(s) = &self.slack {
            if s.signing_secret.is_empty() || s.signing_secret.len() > 2 {
                out.push("slack.signing_secret: expected one or two secrets".into());
            }
            if s.default_channel.trim().is_empty() {
                out.push("slack.default_channel: expected a channel id".into());
            }
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

    /// Unauthenticated intake is allowed only while bound to loopback.
    pub fn open_sources_problem(&self, listen: SocketAddr) -> Option<String> {
        if listen.ip().is_loopback() {
            return None;
        }
        let open: Vec<&str> =
            self.intake.sources().into_iter().filter(|(_, s)| s.enabled && s.auth.is_none()).map(|(n, _)| n).collect();
        (!open.is_empty()).then(|| {
            format!(
                "listen {listen} is not loopback, so every enabled intake source needs `auth`; missing for: {}",
                open.join(", ")
            )
        })
    }

    /// The store URL: the override if given, else the config's, else the embedded default.
    pub fn database_url(&self, overridden: Option<&str>) -> Result<String, String> {
        if let Some(u) = overridden {
            return Ok(u.to_string());
        }
        match &self.database.url {
            Some(v) => v.resolve(),
            None => Ok(DEFAULT_DATABASE_URL.to_string()),
        }
    }
}

impl ContextConfig {
    fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.timeout.is_zero() || self.budget < self.timeout {
            out.push("context: expected 0 < timeout <= budget".into());
        }
        let backends: [(&str, Option<&HttpBackend>); 3] = [
            ("context.prometheus", self.prometheus.as_ref().map(|p| &p.http)),
            ("context.loki", self.loki.as_ref().map(|l| &l.http)),
            ("context.alertmanager", self.alertmanager.as_ref()),
        ];
        for (what, b) in backends {
            let Some(b) = b else { continue };
            if let Err(e) = reqwest::Url::parse(&b.url) {
                out.push(format!("{what}.url: {e}"));
            }
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
        if self.topology.service_graph.is_some() && self.prometheus.is_none() {
            out.push("context.topology.service_graph: needs context.prometheus".into());
        }
        out
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

    #[test]
    fn secret_debug_is_redacted_and_compare_works() {
        let s = Secret("tok-123".into());
        assert_eq!(format!("{s:?}"), "Secret([redacted])");
        assert!(s.ct_eq(b"tok-123"));
        assert!(!s.ct_eq(b"tok-124"));
        assert!(!s.ct_eq(b""));
    }

    #[test]
    fn masks_passwords_in_urls() {
        assert_eq!(mask_url("postgres://u:pw@h:5432/db?x=1"), "postgres://u:****@h:5432/db?x=1");
        assert_eq!(mask_url("sqlite://medic.db"), "sqlite://medic.db");
        assert_eq!(mask_url("postgres://u@h/db"), "postgres://u@h/db");
    }
}
#[cfg(test)]
mod context_tests {
    use super::*;

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
