//! Change events from CI/CD: deploys, config changes, feature-flag flips, so medic knows what
//! changed even without a deploy-system integration. Strict; documented in docs/src/http-api.md.
//!
//! ```json
//! {"kind": "deploy", "service": "checkout", "summary": "Deploy v1.4.2",
//!  "author": "alice", "version": "v1.4.2", "at": "2024-05-01T14:20:00Z",
//!  "id": "gh-run-8812", "url": "https://ci.example.com/runs/8812", "labels": {"env": "prod"}}
//! ```
//! `id` makes re-delivery a no-op. Without it, the id is a hash of the content (with `at` if
//! given), so sending the same payload twice stores it once.

use super::{IntakeError, Parsed, from_json, ts};
use crate::alert::{Change, ChangeKind, Labels};
use crate::pipeline::Submission;
use crate::time::Millis;
use serde::Deserialize;
use sha2::{Digest, Sha256};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Payload {
    kind: ChangeKind,
    service: String,
    summary: String,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    author: Option<String>,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    labels: Labels,
    #[serde(default, deserialize_with = "ts::optional")]
    at: Option<Millis>,
}

pub fn parse(body: &[u8], now: Millis) -> Result<Parsed, IntakeError> {
    let mut p: Payload = from_json(body)?;
    // An empty author or version is none: never "by  at".
    p.author = p.author.filter(|a| !a.trim().is_empty());
    p.version = p.version.filter(|v| !v.trim().is_empty());
    let id = p.id.clone().unwrap_or_else(|| {
        let mut h = Sha256::new();
        for part in [
            p.kind.as_str(),
            &p.service,
            &p.summary,
            p.author.as_deref().unwrap_or(""),
            p.version.as_deref().unwrap_or(""),
        ] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        h.update(p.at.map(|t| t.to_string()).unwrap_or_default().as_bytes());
        format!("sha256:{}", hex::encode(&h.finalize()[..12]))
    });
    let change = Change {
        id,
        kind: p.kind,
        service: p.service,
        summary: p.summary,
        author: p.author,
        version: p.version,
        url: p.url,
        labels: p.labels,
        at: p.at.unwrap_or(now),
    };
    change.validate().map_err(IntakeError::Invalid)?;
    Ok(Parsed::Store(Submission { alerts: Vec::new(), changes: vec![change] }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A change whose author or version is empty has none: evidence never reads "by  at".
    #[test]
    fn an_empty_author_is_no_author() {
        let body = br#"{"kind": "deploy", "service": "checkout", "summary": "Deploy", "author": " ", "version": ""}"#;
        let Ok(Parsed::Store(s)) = parse(body, 1_000) else { panic!("parsed") };
        let c = &s.changes[0];
        assert_eq!((c.author.as_deref(), c.version.as_deref()), (None, None));
    }
}
