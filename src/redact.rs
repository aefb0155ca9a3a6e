//! Redaction (§3): secrets are scrubbed from anything medic records or posts — script output,
//! HTTP responses, evidence. Patterns for the common shapes: `password=…`-style assignments,
//! bearer tokens, credentials in URLs, private key blocks, JWTs, and the well-known token
//! formats of AWS, GitHub, Slack and Google.

use regex::Regex;
use std::sync::LazyLock;

const MASK: &str = "[REDACTED]";

static RULES: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    [
        (r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----", "[REDACTED PRIVATE KEY]"),
        (r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}", "$1 [REDACTED]"),
        (r"(?i)(://[^/\s:@]+:)[^@/\s]+@", "${1}[REDACTED]@"),
        (
            r#"(?i)\b([a-z0-9_.-]*(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|credentials?)[a-z0-9_.-]*)(\s*[=:]\s*|"\s*:\s*")([^\s"',;&]+)"#,
            "$1$2[REDACTED]",
        ),
        (r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}", MASK),
        (r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b", MASK),
        (r"\bgh[pousr]_[A-Za-z0-9]{30,}\b", MASK),
        (r"\bxox[abposr]-[A-Za-z0-9-]{10,}", MASK),
        (r"\bAIza[0-9A-Za-z_-]{35}\b", MASK),
    ]
    .into_iter()
    .map(|(re, with)| (Regex::new(re).expect("redaction patterns are valid"), with))
    .collect()
});

/// `text` with every secret-looking part replaced.
pub fn redact(text: &str) -> String {
    let mut out = text.to_string();
    for (re, with) in RULES.iter() {
        out = re.replace_all(&out, *with).into_owned();
    }
    out
}

/// Redacts every string inside a JSON value, in place.
pub fn redact_json(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::String(s) => *s = redact(s),
        serde_json::Value::Array(a) => a.iter_mut().for_each(redact_json),
        serde_json::Value::Object(m) => m.values_mut().for_each(redact_json),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::{redact, redact_json};

    #[test]
    fn redacts_inside_json() {
        let mut v = serde_json::json!({"action": "POST https://u:pw123456@h/x", "n": 1, "list": ["token=abcdef123"]});
        redact_json(&mut v);
        assert_eq!(
            v,
            serde_json::json!({"action": "POST https://u:[REDACTED]@h/x", "n": 1, "list": ["token=[REDACTED]"]})
        );
    }

    #[test]
    fn scrubs_the_common_shapes() {
        let cases = [
            ("connecting with password=hunter2 to db", "hunter2"),
            ("DB_PASSWORD: s3cr3t!", "s3cr3t!"),
            (r#"{"api_key": "abcd1234efgh"}"#, "abcd1234efgh"),
            ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlMTIz", "eyJhbGciOiJIUzI1NiJ9"),
            ("postgres://app:pa55w0rd@db:5432/x", "pa55w0rd"),
            ("key AKIAIOSFODNN7EXAMPLE used", "AKIAIOSFODNN7EXAMPLE"),
            ("token ghp_abcdefghijklmnopqrstuvwxyz0123456789 leaked", "ghp_abcdefghijklmnopqrstuvwxyz0123456789"),
            ("slack xoxb-1234567890-abcdefghij", "xoxb-1234567890-abcdefghij"),
            ("-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----", "MIIEow"),
            ("export GITHUB_TOKEN=abc123def456", "abc123def456"),
        ];
        for (input, secret) in cases {
            let out = redact(input);
            assert!(!out.contains(secret), "{input:?} -> {out:?}");
            assert!(out.contains("REDACTED"), "{input:?} -> {out:?}");
        }
    }

    #[test]
    fn leaves_ordinary_text_alone() {
        for s in ["removed 1432 files, freed 3.2 GiB", "pool exhausted: waited 5003ms", "GET /v1/tokens/list 200"] {
            assert_eq!(redact(s), s);
        }
    }
}
