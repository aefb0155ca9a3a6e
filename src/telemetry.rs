//! One tracing subscriber for the process: text for people, JSON for log pipelines.
//! Fields are key/value pairs; secrets are never recorded (see `secret::Secret`).

use serde::Deserialize;
use tracing_subscriber::EnvFilter;

pub fn init(format: LogFormat, level: Option<&str>) {
    // Colours only for a person at a terminal: a log file or pipeline gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter(level)).with_writer(std::io::stderr).with_ansi(ansi);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// `RUST_LOG`, else `level`, else info; whatever they say, handlebars logs at warn at most:
/// at debug it prints every template parameter, label and annotation values included.
pub fn filter(level: Option<&str>) -> EnvFilter {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level.unwrap_or("info")));
    filter.add_directive("handlebars=warn".parse().expect("a valid directive"))
}

/// Makes ring the process' rustls provider. Idempotent; called by `main` and by every TLS
/// client's constructor, so library users and tests need not remember it.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A reqwest client builder, with the crypto provider installed first (building a client
/// without one panics).
pub fn http_client_builder() -> reqwest::ClientBuilder {
    install_crypto();
    reqwest::Client::builder()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
/// The `log` section of the config.
pub struct Config {
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
