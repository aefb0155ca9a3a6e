//! Intake: HTTP webhooks in, validated [`Submission`]s out. One module per source; this module
//! holds what they share: the order of checks, authentication, size limits and error replies.
//!
//! Every request goes through the same gate, in this order, and stops at the first failure:
//! 1. source enabled (else 404),
//! 2. bearer token when the source uses one (else 401; checked before the body is read),
//! 3. `Content-Type: application/json` (else 415),
//! 4. body within `intake.max_body_bytes` (else 413),
//! 5. HMAC signature over the raw body when the source uses one (else 401),
//! 6. parse and validate (else 400 naming the field and what was expected),
//! 7. commit through the [`Pipeline`] (else 503), then 200.
//!
//! Nothing is stored unless every alert of the request passed 6; the commit is all or nothing.

pub mod alertmanager;
pub mod changes;
pub mod config;
pub mod generic;
pub mod grafana;
pub mod pagerduty;

use crate::incident::Outcome;
use crate::metrics::Metrics;
use crate::pipeline::{Pipeline, Submission};
use crate::redact;
use crate::secret::Secret;
use crate::time::{Clock, Millis};
use axum::Json;
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
pub use config::{AuthConfig, AuthScheme, Config};
use hmac::{Hmac, KeyInit, Mac};
use serde::de::DeserializeOwned;
use serde_json::json;
use sha2::Sha256;
use std::sync::Arc;
use subtle::ConstantTimeEq;

pub use crate::alert::FieldError;

/// The intake routes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    Alertmanager,
    Grafana,
    Generic,
    Pagerduty,
    Changes,
}

impl Route {
    pub const ALL: [Route; 5] = [Route::Alertmanager, Route::Grafana, Route::Generic, Route::Pagerduty, Route::Changes];

    pub fn name(self) -> &'static str {
        match self {
            Route::Alertmanager => "alertmanager",
            Route::Grafana => "grafana",
            Route::Generic => "generic",
            Route::Pagerduty => "pagerduty",
            Route::Changes => "changes",
        }
    }

    pub fn path(self) -> &'static str {
        match self {
            Route::Alertmanager => "/v1/alerts/alertmanager",
            Route::Grafana => "/v1/alerts/grafana",
            Route::Generic => "/v1/alerts/generic",
            Route::Pagerduty => "/v1/alerts/pagerduty",
            Route::Changes => "/v1/changes",
        }
    }

    /// Parses a body that passed the gate. What is kept is redacted here, before anything is
    /// stored, audited, exported or shown (fingerprints were computed from the sender's values).
    fn parse(self, body: &[u8], now: Millis) -> Result<Parsed, IntakeError> {
        let mut parsed = match self {
            Route::Alertmanager => alertmanager::parse(body),
            Route::Grafana => grafana::parse(body),
            Route::Generic => generic::parse(body, now),
            Route::Pagerduty => pagerduty::parse(body),
            Route::Changes => changes::parse(body, now),
        }?;
        if let Parsed::Store(sub) = &mut parsed {
            for a in &mut sub.alerts {
                for map in [&mut a.labels, &mut a.annotations, &mut a.links] {
                    redact::redact_map(map);
                }
            }
            for c in &mut sub.changes {
                redact::redact_map(&mut c.labels);
                for text in
                    [Some(&mut c.summary), c.url.as_mut(), c.author.as_mut(), c.version.as_mut()].into_iter().flatten()
                {
                    *text = redact::redact(text);
                }
            }
        }
        Ok(parsed)
    }

    /// Header carrying the HMAC signature, and how to read the signatures out of it.
    fn signatures(self, headers: &HeaderMap) -> Option<Vec<Vec<u8>>> {
        let (name, prefix) = match self {
            Route::Pagerduty => ("x-pagerduty-signature", "v1="),
            _ => ("x-medic-signature", "sha256="),
        };
        let value = headers.get(name)?.to_str().ok()?;
        Some(
            value
                .split(',')
                .filter_map(|s| s.trim().strip_prefix(prefix))
                .filter_map(|h| hex::decode(h).ok())
                .collect(),
        )
    }
}

/// What a source module makes of a body.
pub enum Parsed {
    Store(Submission),
    /// A well-formed event that carries no alert state (e.g. a PagerDuty acknowledgement).
    Ignore(String),
}

/// Why a request was refused. The reply names the problem; it never echoes a secret.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error("source disabled")]
    Disabled,
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("expected Content-Type: application/json, got {0}")]
    UnsupportedMediaType(String),
    #[error("body larger than {0} bytes")]
    TooLarge(usize),
    #[error("{0}")]
    Invalid(FieldError),
    #[error("{0}")]
    Unavailable(String),
}

impl IntakeError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        IntakeError::Invalid(FieldError::new(field, message))
    }

    /// The metric label for this outcome.
    fn result(&self) -> &'static str {
        match self {
            IntakeError::Disabled => "disabled",
            IntakeError::Unauthorized(_) => "unauthorized",
            IntakeError::UnsupportedMediaType(_) => "unsupported_media_type",
            IntakeError::TooLarge(_) => "too_large",
            IntakeError::Invalid(_) => "invalid",
            IntakeError::Unavailable(_) => "unavailable",
        }
    }
}

impl IntoResponse for IntakeError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            IntakeError::Disabled => (StatusCode::NOT_FOUND, "source_disabled"),
            IntakeError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            IntakeError::UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            IntakeError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            IntakeError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_payload"),
            IntakeError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        };
        let body = match &self {
            IntakeError::Invalid(f) => json!({"error": code, "field": f.field, "message": f.message}),
            other => json!({"error": code, "message": other.to_string()}),
        };
        let mut resp = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

/// Resolved authentication for one source.
#[derive(Debug, Clone)]
pub enum Auth {
    None,
    Bearer(Vec<Secret>),
    Hmac(Vec<Secret>),
}

impl Auth {
    pub fn resolve(cfg: Option<&AuthConfig>) -> Result<Auth, String> {
        let Some(cfg) = cfg else { return Ok(Auth::None) };
        let (scheme, refs) = cfg.scheme()?;
        let secrets = refs.iter().map(|r| r.resolve()).collect::<Result<Vec<_>, _>>()?;
        Ok(match scheme {
            AuthScheme::Bearer => Auth::Bearer(secrets),
            AuthScheme::Hmac => Auth::Hmac(secrets),
        })
    }
}

fn check_bearer(secrets: &[Secret], headers: &HeaderMap) -> Result<(), IntakeError> {
    bearer(secrets, headers).map_err(IntakeError::Unauthorized)
}

/// Whether `headers` carry `Authorization: Bearer` with one of `secrets` (intake and the API).
pub fn bearer(secrets: &[Secret], headers: &HeaderMap) -> Result<(), &'static str> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .ok_or("missing Authorization: Bearer token")?;
    // Compare against every secret, without stopping early, so timing says nothing about which.
    let ok = secrets.iter().fold(false, |acc, s| acc | s.ct_eq(token.trim().as_bytes()));
    if ok { Ok(()) } else { Err("bearer token not accepted") }
}

fn check_hmac(route: Route, secrets: &[Secret], headers: &HeaderMap, body: &[u8]) -> Result<(), IntakeError> {
    let missing = match route {
        Route::Pagerduty => "missing or malformed X-PagerDuty-Signature header (expected v1=<hex>)",
        _ => "missing or malformed X-Medic-Signature header (expected sha256=<hex>)",
    };
    let given = route.signatures(headers).filter(|s| !s.is_empty()).ok_or(IntakeError::Unauthorized(missing))?;
    let mut ok = false;
    for secret in secrets {
        let mut mac =
            <Hmac<Sha256> as KeyInit>::new_from_slice(secret.expose().as_bytes()).expect("HMAC takes any key length");
        mac.update(body);
        let expected = mac.finalize().into_bytes();
        for sig in &given {
            ok |= bool::from(expected.as_slice().ct_eq(sig.as_slice()));
        }
    }
    if ok { Ok(()) } else { Err(IntakeError::Unauthorized("signature does not match the body")) }
}

/// The signature medic expects in `X-Medic-Signature` (for senders and tests).
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Everything the intake handlers need, built once from the config.
pub struct Intake {
    pub max_body: usize,
    sources: [(bool, Auth); 5],
    pub pipeline: Pipeline,
    pub metrics: Arc<Metrics>,
    pub clock: Arc<dyn Clock>,
    /// Incidents an alert opened or joined, for the responder.
    pub triggers: Arc<crate::responder::Triggers>,
}

impl Intake {
    pub fn new(
        cfg: &Config,
        pipeline: Pipeline,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
        triggers: Arc<crate::responder::Triggers>,
    ) -> Result<Intake, String> {
        let mut sources = Vec::new();
        for (name, src) in cfg.sources() {
            let auth = Auth::resolve(src.auth.as_ref()).map_err(|e| format!("intake.{name}.auth: {e}"))?;
            sources.push((src.enabled, auth));
        }
        let sources = sources.try_into().map_err(|_| "five intake sources".to_string())?;
        Ok(Intake { max_body: cfg.max_body_bytes, sources, pipeline, metrics, clock, triggers })
    }

    fn source(&self, route: Route) -> &(bool, Auth) {
        &self.sources[Route::ALL.iter().position(|r| *r == route).expect("every route is in ALL")]
    }

    /// Handles one intake request end to end.
    pub async fn receive(&self, route: Route, headers: HeaderMap, body: Body) -> Response {
        let result = self.gate(route, &headers, body).await;
        let outcome = match &result {
            Ok(_) => "stored",
            Err(e) => e.result(),
        };
        self.metrics.intake_request(route.name(), outcome);
        match result {
            Ok(resp) => resp,
            Err(e) => {
                if !matches!(e, IntakeError::Unavailable(_)) {
                    tracing::info!(source = route.name(), error = %e, "intake request refused");
                }
                e.into_response()
            }
        }
    }

    async fn gate(&self, route: Route, headers: &HeaderMap, body: Body) -> Result<Response, IntakeError> {
        let (enabled, auth) = self.source(route);
        if !enabled {
            return Err(IntakeError::Disabled);
        }
        if let Auth::Bearer(secrets) = auth {
            check_bearer(secrets, headers)?;
        }
        check_json_content_type(headers)?;
        let body = read_body(headers, body, self.max_body).await?;
        if let Auth::Hmac(secrets) = auth {
            check_hmac(route, secrets, headers, &body)?;
        }
        let sub = match route.parse(&body, self.clock.now())? {
            Parsed::Store(sub) => sub,
            Parsed::Ignore(why) => {
                return Ok((StatusCode::ACCEPTED, Json(json!({"stored": false, "ignored": why}))).into_response());
            }
        };
        let n_alerts = sub.alerts.len();
        let res = self.pipeline.submit(sub).await.map_err(IntakeError::Unavailable)?;
        let body = if route == Route::Changes {
            json!({"stored": true, "changes": res.changes_new.len(), "new": res.changes_new.iter().filter(|n| **n).count()})
        } else {
            // One pass: the reply's counts and the metrics (every alert came from this route).
            let mut counts = [0u64; 4];
            for o in &res.outcomes {
                counts[*o as usize] += 1;
            }
            let by_outcome = Outcome::ALL.map(|o| (o.as_str(), counts[o as usize]));
            self.metrics.alerts(route.name(), &by_outcome);
            let mut incidents: Vec<i64> = res.incidents.iter().flatten().copied().collect();
            incidents.sort_unstable();
            incidents.dedup();
            // An alert opened, joined, re-fired in or resolved out of an incident: the responder
            // looks again (an incident with nothing firing is left alone).
            // A resolve or a re-fire (Updated) is always worth a look; new alerts, when they
            // bring a new alert name or service (the responder compares).
            let mut grown: std::collections::BTreeMap<i64, bool> = Default::default();
            for (o, i) in res.outcomes.iter().zip(&res.incidents) {
                if let (Outcome::New | Outcome::Updated, Some(i)) = (o, i) {
                    *grown.entry(*i).or_default() |= *o == Outcome::Updated;
                }
            }
            for (id, significant) in grown {
                self.triggers.push(id, significant);
            }
            let mut body = json!({"stored": true, "alerts": n_alerts, "incidents": incidents});
            for (name, n) in by_outcome {
                body[name] = json!(n);
            }
            body
        };
        Ok((StatusCode::OK, Json(body)).into_response())
    }
}

fn check_json_content_type(headers: &HeaderMap) -> Result<(), IntakeError> {
    let ct = headers.get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap_or("(not text)")).unwrap_or("(none)");
    let mime = ct.split(';').next().unwrap_or("").trim();
    if mime.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(IntakeError::UnsupportedMediaType(ct.chars().take(100).collect()))
    }
}

async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Vec<u8>, IntakeError> {
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(IntakeError::TooLarge(limit));
    }
    match axum::body::to_bytes(body, limit).await {
        Ok(b) => Ok(b.to_vec()),
        Err(e) => {
            let mut src: Option<&dyn std::error::Error> = Some(&e);
            while let Some(s) = src {
                if s.is::<http_body_util::LengthLimitError>() {
                    return Err(IntakeError::TooLarge(limit));
                }
                src = s.source();
            }
            Err(IntakeError::invalid("(body)", format!("could not read the request body: {e}")))
        }
    }
}

/// Deserialises JSON, naming the path of the first field that does not fit.
pub fn from_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, IntakeError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        // serde reports a missing field at its parent; name the field itself.
        let missing = message.strip_prefix("missing field `").and_then(|m| m.split('`').next());
        let field = match (path.as_str(), missing) {
            (".", Some(m)) => m.to_string(),
            (".", None) => "(body)".to_string(),
            (p, Some(m)) => format!("{p}.{m}"),
            (p, None) => p.to_string(),
        };
        IntakeError::invalid(field, message)
    })
}

/// Serde helpers for the timestamps senders write.
pub mod ts {
    use crate::time::Millis;
    use serde::{Deserialize, Deserializer, de::Error};

    pub fn parse(s: &str) -> Result<Millis, String> {
        chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| t.timestamp_millis())
            .map_err(|_| format!("expected an RFC 3339 timestamp such as 2024-05-01T14:23:00Z, got {s:?}"))
    }

    pub fn required<'de, D: Deserializer<'de>>(d: D) -> Result<Millis, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).map_err(D::Error::custom)
    }

    /// Absent, null, empty, or Go's zero time (`0001-01-01T00:00:00Z`) all mean "not set".
    pub fn optional<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Millis>, D::Error> {
        let s = Option::<String>::deserialize(d)?;
        match s.as_deref() {
            None | Some("") => Ok(None),
            Some(s) => {
                let t = parse(s).map_err(D::Error::custom)?;
                Ok((t > 0).then_some(t))
            }
        }
    }
}

/// Validates every alert of a submission, naming `alerts[i]` in the error.
pub fn validated(alerts: Vec<crate::alert::Alert>) -> Result<Parsed, IntakeError> {
    if alerts.is_empty() {
        return Err(IntakeError::invalid("alerts", "expected at least one alert"));
    }
    for (i, a) in alerts.iter().enumerate() {
        a.validate(&format!("alerts[{i}]")).map_err(IntakeError::Invalid)?;
    }
    Ok(Parsed::Store(Submission { alerts, changes: Vec::new() }))
}
