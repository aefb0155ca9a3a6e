//! Loki logs: `GET /loki/api/v1/query_range` with a LogQL template per service (default: the
//! service's error-like lines), streams merged in time order, capped in lines and in bytes per
//! line. Auth and tenants (`X-Scope-OrgID`) as for every HTTP backend.

use super::http::{Auth, Http};
use super::{LogLine, Logs};
use crate::time::Millis;
use async_trait::async_trait;
use serde::Deserialize;
use std::time::Duration;

/// The LogQL medic runs by default for a service's logs.
pub const DEFAULT_TEMPLATE: &str =
    r#"{service="{{service}}"} |~ "(?i)(error|exception|panic|fatal|timed? ?out|refused)""#;

pub struct Loki {
    http: Http,
    template: String,
    /// Longer lines are cut (with "…").
    pub max_line_bytes: usize,
}

#[derive(Deserialize)]
struct Response {
    status: String,
    data: Data,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: Vec<Stream>,
}

#[derive(Deserialize)]
struct Stream {
    values: Vec<(String, String)>,
}

impl Loki {
    /// `template` is LogQL with `{{service}}`; `None` uses [`DEFAULT_TEMPLATE`].
    pub fn new(
        base: &str,
        auth: Auth,
        headers: Vec<(String, String)>,
        timeout: Duration,
        template: Option<String>,
    ) -> Result<Loki, String> {
        let template = template.unwrap_or_else(|| DEFAULT_TEMPLATE.to_string());
        handlebars::Template::compile(&template).map_err(|e| format!("Loki query template: {}", e.reason()))?;
        Ok(Loki { http: Http::new("Loki", base, auth, headers, timeout)?, template, max_line_bytes: 2048 })
    }

    /// The LogQL run for `service`.
    pub fn query_for(&self, service: &str) -> Result<String, String> {
        crate::render::query(&self.template, &serde_json::json!({"service": service}), true)
            .map_err(|e| format!("Loki query template: {e}"))
    }
}

#[async_trait]
impl Logs for Loki {
    fn name(&self) -> &str {
        "loki"
    }

    async fn lines(&self, service: &str, start: Millis, end: Millis, limit: usize) -> Result<Vec<LogLine>, String> {
        let ns = |ms: Millis| (ms as i128 * 1_000_000).to_string();
        let params = [
            ("query", self.query_for(service)?),
            ("start", ns(start)),
            ("end", ns(end)),
            ("limit", limit.to_string()),
            ("direction", "forward".to_string()),
        ];
        let r: Response = self.http.get_json("Loki", "loki/api/v1/query_range", &params).await?;
        if r.status != "success" || r.data.result_type != "streams" {
            return Err(format!("expected streams, got {} {}", r.status, r.data.result_type));
        }
        let mut lines: Vec<LogLine> = r
            .data
            .result
            .into_iter()
            .flat_map(|s| s.values)
            .filter_map(|(t, line)| {
                let at = (t.parse::<i128>().ok()? / 1_000_000) as Millis;
                // Redacted before the cut: a cut could leave a secret the patterns no longer see.
                Some(LogLine {
                    at,
                    service: service.to_string(),
                    line: crate::redact::redact_cut(&line, self.max_line_bytes),
                })
            })
            .collect();
        lines.sort_by_key(|l| l.at);
        lines.truncate(limit);
        Ok(lines)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_are_quoted_into_logql() {
        let l = Loki::new(
            "http://loki:3100",
            Auth::None,
            vec![],
            Duration::from_secs(1),
            Some(r#"{app="{{service}}"}"#.into()),
        )
        .unwrap();
        assert_eq!(l.query_for(r#"we"ird\"#).unwrap(), r#"{app="we\"ird\\"}"#);
        assert!(
            Loki::new("http://loki:3100", Auth::None, vec![], Duration::from_secs(1), Some("{{#if}}".into())).is_err()
        );
    }
}
