//! The normalised forms every intake source produces: [`Alert`] and [`Change`].
//!
//! Values of these types have passed [`Alert::validate`] / [`Change::validate`]: bounded sizes,
//! no control characters where they would end up in keys, timestamps in order.

use crate::time::Millis;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;

pub type Labels = BTreeMap<String, String>;

pub const MAX_LABELS: usize = 64;
pub const MAX_LABEL_NAME: usize = 128;
pub const MAX_LABEL_VALUE: usize = 4096;
pub const MAX_ANNOTATION_VALUE: usize = 16 * 1024;
pub const MAX_FINGERPRINT: usize = 256;
pub const MAX_URL: usize = 2048;

/// `starts_at` of an alert whose sender did not say when it started (generic format). Correlation
/// replaces it: with the stored start for a known alert, else with the time it was received.
pub const START_UNKNOWN: Millis = Millis::MIN;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Alertmanager,
    Grafana,
    Generic,
    Pagerduty,
}

impl Source {
    pub const ALL: [Source; 4] = [Source::Alertmanager, Source::Grafana, Source::Generic, Source::Pagerduty];

    pub fn as_str(self) -> &'static str {
        match self {
            Source::Alertmanager => "alertmanager",
            Source::Grafana => "grafana",
            Source::Generic => "generic",
            Source::Pagerduty => "pagerduty",
        }
    }

    pub fn parse(s: &str) -> Option<Source> {
        Source::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

impl AlertStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Firing => "firing",
            AlertStatus::Resolved => "resolved",
        }
    }

    pub fn parse(s: &str) -> Option<AlertStatus> {
        match s {
            "firing" => Some(AlertStatus::Firing),
            "resolved" => Some(AlertStatus::Resolved),
            _ => None,
        }
    }
}

/// One alert, whatever sent it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub source: Source,
    /// Identity of the alert within its source (Alertmanager's fingerprint, PagerDuty's
    /// incident id, or a hash of the labels for the generic format).
    pub fingerprint: String,
    pub status: AlertStatus,
    pub labels: Labels,
    pub annotations: Labels,
    pub starts_at: Millis,
    pub ends_at: Option<Millis>,
    /// Links back to the sender: `generator`, `dashboard`, `panel`, `silence`, `source`.
    pub links: Labels,
}

/// A field that failed validation, with what was expected. Becomes a 400 at the edge.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

impl Alert {
    /// The store's identity of this alert: the same fingerprint from two sources are two alerts.
    pub fn key(&self) -> String {
        format!("{}/{}", self.source, self.fingerprint)
    }

    pub fn name(&self) -> &str {
        self.labels.get("alertname").map(String::as_str).unwrap_or("unnamed alert")
    }

    /// Checks the bounds every source must respect. `at` is the JSON path of this alert in the
    /// request (e.g. `alerts[3]`) so the error names the field the sender wrote.
    pub fn validate(&self, at: &str) -> Result<(), FieldError> {
        if let Some(m) = key_text_problem(&self.fingerprint, MAX_FINGERPRINT) {
            return Err(FieldError::new(format!("{at}.fingerprint"), m));
        }
        let nest = |e: FieldError| FieldError::new(format!("{at}.{}", e.field), e.message);
        check_labels("labels", &self.labels, MAX_LABEL_VALUE, true).map_err(nest)?;
        check_labels("annotations", &self.annotations, MAX_ANNOTATION_VALUE, false).map_err(nest)?;
        check_labels("links", &self.links, MAX_URL, true).map_err(nest)?;
        if let Some(end) = self.ends_at
            && end < self.starts_at
            && self.status == AlertStatus::Resolved
        {
            return Err(FieldError::new(format!("{at}.endsAt"), "expected a time not before startsAt"));
        }
        Ok(())
    }
}

/// A stable fingerprint for senders that do not give one: a hash of the sorted labels.
pub fn fingerprint_of(labels: &Labels) -> String {
    let mut h = Sha256::new();
    for (k, v) in labels {
        h.update(k.as_bytes());
        h.update([0]);
        h.update(v.as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..8])
}

/// What is wrong with a string used as a key, if anything. (Field names are only built on
/// failure: validation runs for every label of every alert.)
fn key_text_problem(s: &str, max: usize) -> Option<String> {
    if s.is_empty() {
        Some("expected a non-empty string".into())
    } else if s.len() > max {
        Some(format!("expected at most {max} bytes, got {}", s.len()))
    } else if s.chars().any(char::is_control) {
        Some("expected no control characters".into())
    } else {
        None
    }
}

fn check_key_text(field: &str, s: &str, max: usize) -> Result<(), FieldError> {
    key_text_problem(s, max).map_or(Ok(()), |m| Err(FieldError::new(field, m)))
}

fn check_labels(field: &str, labels: &Labels, max_value: usize, strict_values: bool) -> Result<(), FieldError> {
    if labels.len() > MAX_LABELS {
        return Err(FieldError::new(field, format!("expected at most {MAX_LABELS} entries, got {}", labels.len())));
    }
    for (k, v) in labels {
        if let Some(m) = key_text_problem(k, MAX_LABEL_NAME) {
            return Err(FieldError::new(field, format!("key {k:?}: {m}")));
        }
        let problem = if v.len() > max_value {
            Some(format!("expected at most {max_value} bytes, got {}", v.len()))
        } else if if strict_values { v.chars().any(char::is_control) } else { v.contains('\0') } {
            Some("expected no control characters".to_string())
        } else {
            None
        };
        if let Some(m) = problem {
            return Err(FieldError::new(format!("{field}.{k}"), m));
        }
    }
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Deploy,
    Config,
    Flag,
    /// A release was published (GitHub releases); a deploy may or may not follow.
    Release,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Deploy => "deploy",
            ChangeKind::Config => "config",
            ChangeKind::Flag => "flag",
            ChangeKind::Release => "release",
        }
    }
}

/// Something that changed in production: a deploy, a config change, a feature-flag flip.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// The sender's id for this change, or a hash of its content; re-delivery is a no-op.
    pub id: String,
    pub kind: ChangeKind,
    pub service: String,
    pub summary: String,
    pub author: Option<String>,
    pub version: Option<String>,
    pub url: Option<String>,
    pub labels: Labels,
    pub at: Millis,
}

impl Change {
    pub fn validate(&self) -> Result<(), FieldError> {
        check_key_text("id", &self.id, MAX_FINGERPRINT)?;
        check_key_text("service", &self.service, MAX_LABEL_VALUE)?;
        if self.summary.trim().is_empty() {
            return Err(FieldError::new("summary", "expected a non-empty string"));
        }
        if self.summary.len() > MAX_ANNOTATION_VALUE || self.summary.contains('\0') {
            return Err(FieldError::new("summary", format!("expected at most {MAX_ANNOTATION_VALUE} bytes of text")));
        }
        for (name, v, max) in [
            ("author", &self.author, MAX_LABEL_VALUE),
            ("version", &self.version, MAX_LABEL_VALUE),
            ("url", &self.url, MAX_URL),
        ] {
            if let Some(v) = v {
                check_key_text(name, v, max)?;
            }
        }
        check_labels("labels", &self.labels, MAX_LABEL_VALUE, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert() -> Alert {
        Alert {
            source: Source::Generic,
            fingerprint: "abc".into(),
            status: AlertStatus::Firing,
            labels: [("alertname".to_string(), "X".to_string())].into(),
            annotations: Labels::new(),
            starts_at: 1000,
            ends_at: None,
            links: Labels::new(),
        }
    }

    #[test]
    fn validation_names_the_field() {
        let mut a = alert();
        a.labels.insert("service".into(), "a\0b".into());
        let e = a.validate("alerts[2]").unwrap_err();
        assert_eq!(e.field, "alerts[2].labels.service");

        let mut a = alert();
        a.fingerprint = String::new();
        assert_eq!(a.validate("alerts[0]").unwrap_err().field, "alerts[0].fingerprint");

        let mut a = alert();
        a.status = AlertStatus::Resolved;
        a.ends_at = Some(10);
        assert_eq!(a.validate("alerts[0]").unwrap_err().field, "alerts[0].endsAt");
        assert!(alert().validate("alerts[0]").is_ok());
    }

    #[test]
    fn fingerprint_depends_on_every_label() {
        let a: Labels = [("a".to_string(), "1".to_string())].into();
        let b: Labels = [("a".to_string(), "2".to_string())].into();
        assert_ne!(fingerprint_of(&a), fingerprint_of(&b));
        assert_eq!(fingerprint_of(&a), fingerprint_of(&a.clone()));
    }
}
