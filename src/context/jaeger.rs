//! Jaeger query service: `GET /api/traces?service=&start=&end=&limit=` (times in Unix
//! microseconds) answers the traces through a service with all their spans; a span's service
//! is its process's `serviceName`, its parent the `CHILD_OF` reference, and it failed when it
//! carries the tag `error=true`.

use super::Traces;
use super::http::{Auth, Http};
use super::traces::Span;
use crate::time::Millis;
use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;

pub struct Jaeger {
    http: Http,
}

#[derive(Deserialize)]
struct Response {
    #[serde(default)]
    data: Vec<Trace>,
}

#[derive(Deserialize)]
struct Trace {
    #[serde(default)]
    spans: Vec<JaegerSpan>,
    #[serde(default)]
    processes: HashMap<String, Process>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JaegerSpan {
    #[serde(rename = "traceID")]
    trace_id: String,
    #[serde(rename = "spanID")]
    span_id: String,
    #[serde(default)]
    operation_name: String,
    #[serde(default)]
    references: Vec<Reference>,
    start_time: i64,
    duration: u64,
    #[serde(default)]
    tags: Vec<Tag>,
    #[serde(rename = "processID", default)]
    process_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Reference {
    ref_type: String,
    #[serde(rename = "spanID")]
    span_id: String,
}

#[derive(Deserialize)]
struct Tag {
    key: String,
    #[serde(default)]
    value: Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Process {
    service_name: String,
}

impl Jaeger {
    pub fn new(base: &str, auth: Auth, headers: Vec<(String, String)>, timeout: Duration) -> Result<Jaeger, String> {
        Ok(Jaeger { http: Http::new("Jaeger", base, auth, headers, timeout)? })
    }
}

#[async_trait]
impl Traces for Jaeger {
    fn name(&self) -> &str {
        "jaeger"
    }

    async fn spans(&self, service: &str, start: Millis, end: Millis, limit: usize) -> Result<Vec<Span>, String> {
        let us = |ms: Millis| (ms as i128 * 1000).to_string();
        let params =
            [("service", service.to_string()), ("start", us(start)), ("end", us(end)), ("limit", limit.to_string())];
        let r: Response = self.http.get_json("Jaeger", "api/traces", &params).await?;
        let mut out = Vec::new();
        for t in r.data.into_iter().take(limit) {
            for s in t.spans {
                let service =
                    t.processes.get(&s.process_id).map(|p| p.service_name.clone()).unwrap_or_else(|| "unknown".into());
                out.push(Span {
                    parent: s.references.iter().find(|r| r.ref_type == "CHILD_OF").map(|r| r.span_id.clone()),
                    error: s.tags.iter().any(|t| t.key == "error" && (t.value == true || t.value == "true")),
                    trace_id: s.trace_id,
                    span_id: s.span_id,
                    service,
                    operation: s.operation_name,
                    start: s.start_time.div_euclid(1000),
                    duration_us: s.duration,
                });
            }
        }
        Ok(out)
    }
}
