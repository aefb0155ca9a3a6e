//! Grafana Tempo: `GET /api/search` finds the traces through a service in a time range
//! (`tags=service.name=<service>`, `start`/`end` in Unix seconds, `limit`), then
//! `GET /api/traces/{traceID}` reads each one as OTLP JSON (`batches` of resource spans,
//! `scopeSpans` or the older `instrumentationLibrarySpans`). Span and trace ids are kept as
//! Tempo prints them; only their equality matters.

use super::Traces;
use super::http::{Auth, Http};
use super::traces::Span;
use crate::time::Millis;
use async_trait::async_trait;
use futures_util::future::join_all;
use serde::Deserialize;
use serde_json::Value;
use std::time::Duration;

pub struct Tempo {
    http: Http,
}

#[derive(Deserialize)]
struct Search {
    #[serde(default)]
    traces: Vec<Found>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Found {
    #[serde(rename = "traceID")]
    trace_id: String,
}

#[derive(Deserialize)]
struct Trace {
    #[serde(default, alias = "resourceSpans")]
    batches: Vec<Batch>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Batch {
    #[serde(default)]
    resource: Resource,
    #[serde(default, alias = "instrumentationLibrarySpans")]
    scope_spans: Vec<Scope>,
}

#[derive(Deserialize, Default)]
struct Resource {
    #[serde(default)]
    attributes: Vec<Attribute>,
}

#[derive(Deserialize)]
struct Attribute {
    key: String,
    value: Value,
}

#[derive(Deserialize)]
struct Scope {
    #[serde(default)]
    spans: Vec<OtlpSpan>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OtlpSpan {
    trace_id: String,
    span_id: String,
    #[serde(default)]
    parent_span_id: String,
    #[serde(default)]
    name: String,
    start_time_unix_nano: Value,
    end_time_unix_nano: Value,
    #[serde(default)]
    status: Value,
}

/// OTLP JSON prints 64-bit integers as strings; some encoders print numbers.
fn nanos(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| v.as_str()?.parse().ok())
}

/// OTLP status code 2 is an error (`STATUS_CODE_ERROR` in proto-JSON).
fn failed(status: &Value) -> bool {
    match &status["code"] {
        Value::String(s) => s == "STATUS_CODE_ERROR",
        Value::Number(n) => n.as_u64() == Some(2),
        _ => false,
    }
}

impl Tempo {
    pub fn new(base: &str, auth: Auth, headers: Vec<(String, String)>, timeout: Duration) -> Result<Tempo, String> {
        Ok(Tempo { http: Http::new("Tempo", base, auth, headers, timeout)? })
    }

    async fn trace(&self, id: &str) -> Result<Vec<Span>, String> {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(format!(
                "Tempo returned a trace id that is not one: {:?}",
                id.chars().take(40).collect::<String>()
            ));
        }
        let t: Trace = self.http.get_json("Tempo trace", &format!("api/traces/{id}"), &[]).await?;
        let mut out = Vec::new();
        for b in t.batches {
            let service = b
                .resource
                .attributes
                .iter()
                .find(|a| a.key == "service.name")
                .and_then(|a| a.value["stringValue"].as_str())
                .unwrap_or("unknown")
                .to_string();
            for s in b.scope_spans.into_iter().flat_map(|s| s.spans) {
                let (Some(start), Some(end)) = (nanos(&s.start_time_unix_nano), nanos(&s.end_time_unix_nano)) else {
                    continue;
                };
                out.push(Span {
                    trace_id: s.trace_id,
                    span_id: s.span_id,
                    parent: Some(s.parent_span_id).filter(|p| !p.is_empty()),
                    service: service.clone(),
                    operation: s.name,
                    start: (start / 1_000_000) as Millis,
                    duration_us: end.saturating_sub(start) / 1000,
                    error: failed(&s.status),
                });
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl Traces for Tempo {
    fn name(&self) -> &str {
        "tempo"
    }

    async fn spans(&self, service: &str, start: Millis, end: Millis, limit: usize) -> Result<Vec<Span>, String> {
        let secs = |ms: Millis| (ms.div_euclid(1000)).to_string();
        let params = [
            ("tags", format!("service.name={}", logfmt_quote(service))),
            ("start", secs(start)),
            ("end", secs(end + 999)),
            ("limit", limit.to_string()),
        ];
        let found: Search = self.http.get_json("Tempo search", "api/search", &params).await?;
        // At most 16 trace fetches at a time: a search can name hundreds.
        let found: Vec<&Found> = found.traces.iter().take(limit).collect();
        let mut traces = Vec::new();
        for chunk in found.chunks(16) {
            traces.extend(join_all(chunk.iter().map(|t| self.trace(&t.trace_id))).await);
        }
        let mut out = Vec::new();
        for t in traces {
            out.extend(t?);
        }
        Ok(out)
    }
}

/// A logfmt value: quoted (with `"` and `\` escaped) when it is not a bare word.
fn logfmt_quote(v: &str) -> String {
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:/".contains(&b)) {
        v.to_string()
    } else {
        format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_times_and_quoting() {
        assert!(failed(&serde_json::json!({"code": "STATUS_CODE_ERROR"})));
        assert!(failed(&serde_json::json!({"code": 2})));
        assert!(!failed(&serde_json::json!({})));
        assert_eq!(nanos(&serde_json::json!("1674984343504000000")), Some(1674984343504000000));
        assert_eq!(logfmt_quote("ts-route-service"), "ts-route-service");
        assert_eq!(logfmt_quote("a b\"c"), "\"a b\\\"c\"");
    }
}
