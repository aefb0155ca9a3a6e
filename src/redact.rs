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
        // A key block cut before its end (a truncated log line or output): to the end.
        (r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*", "[REDACTED PRIVATE KEY]"),
        // Slack incoming webhooks and Discord webhooks: the URL is the credential.
        (r"https://hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9/_-]+", "https://hooks.slack.com/[REDACTED]"),
        (
            r"https://(?:\w+\.)?discord(?:app)?\.com/api/webhooks/[0-9]+/[A-Za-z0-9_-]+",
            "https://discord.com/api/webhooks/[REDACTED]",
        ),
        // Command-line flags: `--password X`, `--token=X`, `-p X` / `-pX` (mysql style).
        (
            r"(?i)(--?[a-z0-9_-]*(?:password|passwd|secret|token|api[_-]?key|access[_-]?key|credentials?)(?:\s+|=))([^\s\x22',;&-][^\s\x22',;&]*)",
            "$1[REDACTED]",
        ),
        // `-p X`, where X is not a path, a port or another flag (`mkdir -p /x`, `ssh -p 22`),
        // and mysql's `-u U -pX`.
        (r"(\s-p\s+)([^\s\x22',;&/.~0-9-][^\s\x22',;&]*)", "$1[REDACTED]"),
        (r"(\s-u\s*\S+\s+-p)([^\s\x22',;&]+)", "$1[REDACTED]"),
        // JSON-escaped JSON inside a string: `\"api_key\":\"…\"`.
        (
            r#"(?i)(\\"[a-z0-9_.-]*(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|credentials?)[a-z0-9_.-]*\\"\s*:\s*\\")((?:[^"\\]|\\[^"])+)"#,
            "$1[REDACTED]",
        ),
        // Also URL- or form-encoded (`Bearer%20…`, `Bearer+…`), as a query string carries it.
        (r"(?i)\b(bearer|basic)(?:\s+|%20|\+)[A-Za-z0-9._~+/=%-]{8,}", "$1 [REDACTED]"),
        (r"(?i)(://[^/\s:@]+:)[^@/\s]+@", "${1}[REDACTED]@"),
        (
            r#"(?i)\b([a-z0-9_.-]*(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|credentials?)[a-z0-9_.-]*)(\s*[=:]\s*|"\s*:\s*")([^\s"',;&]+)"#,
            "$1$2[REDACTED]",
        ),
        // Short names that are whole words only (`pw=…`, `db_pass: …`), so `bypass=` is not one.
        (r"(?i)\b((?:[a-z0-9_.-]*[_.-])?(?:pw|pass))(\s*[=:]\s*)([^\s\x22',;&]+)", "$1$2[REDACTED]"),
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

/// All the patterns at once: most text (every label of every alert at intake) holds no
/// secret, and one pass over it says so.
static ANY: LazyLock<regex::RegexSet> = LazyLock::new(|| {
    regex::RegexSet::new(RULES.iter().map(|(re, _)| re.as_str())).expect("redaction patterns are valid")
});

/// `text` with every secret-looking part replaced.
pub fn redact(text: &str) -> String {
    if !ANY.is_match(text) {
        return text.to_string();
    }
    let mut out = std::borrow::Cow::Borrowed(text);
    for (re, with) in RULES.iter() {
        // A rule that does not match leaves the text as it is, without a copy.
        if let std::borrow::Cow::Owned(replaced) = re.replace_all(&out, *with) {
            out = std::borrow::Cow::Owned(replaced);
        }
    }
    out.into_owned()
}

/// Whether a field or label *named* `key` holds a secret (`password`, `db_token`, `API-Key` …):
/// its value is hidden whole, whatever it looks like.
pub fn is_secret_name(key: &str) -> bool {
    static NAME: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"(?i)(password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|credentials?|dsn|authorization|cookie|(?:^|[_.-])(?:pw|pass|passphrase)(?:$|[_.-]))")
            .expect("a valid pattern")
    });
    NAME.is_match(key)
}

/// Redacts a map of labels or annotations in place: values under a secret name entirely, the
/// rest by pattern.
pub fn redact_map(map: &mut std::collections::BTreeMap<String, String>) {
    for (k, v) in map.iter_mut() {
        if is_secret_name(k) {
            *v = MASK.to_string();
        } else {
            *v = redact(v);
        }
    }
}

/// Redacts, then cuts to at most `max` bytes (on a character boundary) ending with `…`: a cut
/// first could split a secret past what the patterns recognise.
pub fn redact_cut(text: &str, max: usize) -> String {
    let mut out = redact(text);
    if out.len() > max {
        let mut end = max;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        out.push('…');
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
    use super::{redact, redact_cut, redact_json, redact_map};

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
            ("mysqldump --password s3cretpass db", "s3cretpass"),
            ("mysql -u root -p hunter22 -h db", "hunter22"),
            ("mysql -u root -phunter22 -h db", "hunter22"),
            ("curl --token=abcdef0123 https://x", "abcdef0123"),
            (
                "posting to https://hooks.slack.com/services/T000/B000/XXXXXXXXXXXXXXXXXXXXXXXX",
                "XXXXXXXXXXXXXXXXXXXXXXXX",
            ),
            ("hook https://discord.com/api/webhooks/123456/abcDEF_ghi-jkl", "abcDEF_ghi-jkl"),
            (r#"{"msg": "{\"api_key\":\"k3y-v4lue\",\"n\":1}"}"#, "k3y-v4lue"),
            ("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC", "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC"),
            ("GET /cb?auth=Bearer%20abcdefghijklmnop123 200", "abcdefghijklmnop123"),
            ("form auth=Bearer+abcdefghijklmnop123", "abcdefghijklmnop123"),
            ("login with pw=hunter2x", "hunter2x"),
            ("db_pass: s3cr3tv4lue", "s3cr3tv4lue"),
        ];
        for (input, secret) in cases {
            let out = redact(input);
            assert!(!out.contains(secret), "{input:?} -> {out:?}");
            assert!(out.contains("REDACTED"), "{input:?} -> {out:?}");
        }
    }

    #[test]
    fn leaves_ordinary_text_alone() {
        for s in [
            "removed 1432 files, freed 3.2 GiB",
            "pool exhausted: waited 5003ms",
            "GET /v1/tokens/list 200",
            "cleanup --path /var/log -v",
            "ls -p /tmp",
            "ssh -p 2222 host",
            "bypass=true compass: north",
        ] {
            assert_eq!(redact(s), s);
        }
    }

    #[test]
    fn maps_hide_values_under_secret_names() {
        let mut m: std::collections::BTreeMap<String, String> = [
            ("service", "db"),
            ("db_password", "plain"),
            ("note", "dsn postgres://a:b1234@h/x"),
            ("API-Key", "k"),
            ("pw", "p"),
            ("compass", "n"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        redact_map(&mut m);
        assert_eq!(m["service"], "db");
        assert_eq!(m["db_password"], "[REDACTED]");
        assert_eq!(m["API-Key"], "[REDACTED]");
        assert_eq!((m["pw"].as_str(), m["compass"].as_str()), ("[REDACTED]", "n"));
        assert_eq!(m["note"], "dsn postgres://a:[REDACTED]@h/x");
    }

    #[test]
    fn redaction_runs_before_the_cut() {
        let key = format!("-----BEGIN RSA PRIVATE KEY-----\n{}\n-----END RSA PRIVATE KEY-----", "QUJD".repeat(800));
        let line = format!("loaded key {key} ok");
        let cut = redact_cut(&line, 2048);
        assert!(!cut.contains("QUJD"), "{cut}");
        // And a line already cut mid-key by someone else still hides the rest.
        assert!(!redact(&line[..1500]).contains("QUJD"));
    }
}
