//! Prometheus-compatible metrics (Prometheus, Thanos, Mimir, VictoriaMetrics) over the HTTP API:
//! `GET /api/v1/query_range`. Bearer or basic auth and extra headers (e.g. `X-Scope-OrgID` for
//! Mimir tenants); responses are bounded in bytes and series; Prometheus' own error JSON
//! (`{"status":"error","errorType":…,"error":…}`) becomes a readable reason.

use super::{MetricQuery, Metrics, Series};
use crate::time::Millis;
use async_trait::async_trait;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

pub use super::http::Auth;
use super::http::Http;

pub struct Prometheus {
    http: Http,
    /// Most series kept from one query.
    pub max_series: usize,
}

#[derive(Deserialize)]
struct Response {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: Vec<Matrix>,
}

#[derive(Deserialize)]
struct Matrix {
    metric: BTreeMap<String, String>,
    values: Vec<(f64, String)>,
}

/// A step that keeps a range query near 250 points, never below 15 s.
pub fn step_for(start: Millis, end: Millis) -> Millis {
    ((end - start) / 250).max(15_000) / 1000 * 1000
}

impl Prometheus {
    /// `base` is the server's root URL, e.g. `http://prometheus:9090` (or Mimir's
    /// `…/prometheus` prefix).
    pub fn new(
        base: &str,
        auth: Auth,
        headers: Vec<(String, String)>,
        timeout: Duration,
    ) -> Result<Prometheus, String> {
        Ok(Prometheus { http: Http::new("Prometheus", base, auth, headers, timeout)?, max_series: 500 })
    }

    /// Largest response body read, in bytes.
    pub fn set_max_bytes(&mut self, n: usize) {
        self.http.max_bytes = n;
    }

    async fn get(&self, path: &str, params: &[(&str, String)]) -> Result<Response, String> {
        let (status, body) = self.http.get(path, params).await?;
        match serde_json::from_slice::<Response>(&body) {
            Ok(r) if r.status == "success" && status.is_success() => Ok(r),
            Ok(r) => Err(format!(
                "HTTP {}: {}: {}",
                status.as_u16(),
                r.error_type.unwrap_or_else(|| "error".into()),
                r.error.unwrap_or_default()
            )),
            Err(e) => Err(format!("HTTP {}: not a Prometheus API response ({e})", status.as_u16())),
        }
    }
}

#[async_trait]
impl Metrics for Prometheus {
    fn name(&self) -> &str {
        "prometheus"
    }

    async fn query_range(&self, q: &MetricQuery) -> Result<Vec<Series>, String> {
        let secs = |ms: Millis| format!("{:.3}", ms as f64 / 1000.0);
        let params = [
            ("query", q.promql.clone()),
            ("start", secs(q.start)),
            ("end", secs(q.end)),
            ("step", secs(q.step.max(1000))),
        ];
        let resp = self.get("api/v1/query_range", &params).await?;
        let data = resp.data.ok_or("a success without data")?;
        if data.result_type != "matrix" {
            return Err(format!("expected a matrix, got {}", data.result_type));
        }
        Ok(data
            .result
            .into_iter()
            .take(self.max_series)
            .map(|m| Series {
                query: q.name.clone(),
                labels: m.metric,
                points: m
                    .values
                    .into_iter()
                    .filter_map(|(t, v)| {
                        v.parse::<f64>().ok().filter(|v| v.is_finite()).map(|v| ((t * 1000.0) as Millis, v))
                    })
                    .collect(),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::step_for;

    #[test]
    fn steps_keep_series_small() {
        assert_eq!(step_for(0, 6 * 3_600_000), 86_000);
        assert_eq!(step_for(0, 600_000), 15_000);
    }
}
