//! The `intake` section of the config: the body limit, and per source whether it is enabled
//! and how its senders authenticate.

use crate::secret::SecretRef;
use serde::Deserialize;

/// The `intake` section.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
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

impl Default for Config {
    fn default() -> Self {
        Config {
            max_body_bytes: default_max_body(),
            alertmanager: SourceConfig::default(),
            grafana: SourceConfig::default(),
            generic: SourceConfig::default(),
            pagerduty: SourceConfig::default(),
            changes: SourceConfig::default(),
        }
    }
}

impl Config {
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
