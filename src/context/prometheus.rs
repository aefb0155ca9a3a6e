//! Prometheus-compatible metrics (Prometheus, Thanos, Mimir, VictoriaMetrics) over the HTTP API:
//! `GET /api/v1/query_range`. Bearer or basic auth and extra headers (e.g. `X-Scope-OrgID` for
//! Mimir tenants); responses are bounded in bytes and series; Prometheus' own error JSON
//! (`{"status":"error","errorType":…,"error":…}`) becomes a readable reason.

use super::{Golden, MetricQuery, Metrics, Series};
use crate::alert::Labels;
use crate::runbook::Unit;
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

/// A matrix series (`values`) or a vector sample (`value`).
#[derive(Deserialize)]
struct Matrix {
    metric: BTreeMap<String, String>,
    #[serde(default)]
    values: Vec<(f64, String)>,
}

/// The golden signals medic asks for every service of an incident (and each dependency) when
/// the config names none. They follow the most common conventions: `http_requests_total` and
/// `http_request_duration_seconds_bucket` with a `service` label and a `code` label (client
/// libraries, most exporters), cAdvisor's `container_*` metrics with a `container` label, and
/// kube-state-metrics' restart counter. A query that matches no series costs one round trip
/// and shows nothing.
pub fn default_golden() -> Vec<Golden> {
    let g = |name: &str, unit: Unit, promql: &str| Golden {
        name: name.into(),
        promql: promql.into(),
        unit,
        callers_view_of: None,
    };
    vec![
        g("request_rate", Unit::Number, r#"sum(rate(http_requests_total{service="{{service}}"}[5m]))"#),
        g(
            "error_ratio",
            Unit::Ratio,
            r#"sum(rate(http_requests_total{service="{{service}}",code=~"5.."}[5m])) / sum(rate(http_requests_total{service="{{service}}"}[5m]))"#,
        ),
        g(
            "latency_p99",
            Unit::Seconds,
            r#"histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{service="{{service}}"}[5m])))"#,
        ),
        g(
            "latency_p50",
            Unit::Seconds,
            r#"histogram_quantile(0.5, sum by (le) (rate(http_request_duration_seconds_bucket{service="{{service}}"}[5m])))"#,
        ),
        g("cpu_cores", Unit::Number, r#"sum(rate(container_cpu_usage_seconds_total{container="{{service}}"}[5m]))"#),
        g(
            "cpu_throttled_ratio",
            Unit::Ratio,
            r#"sum(rate(container_cpu_cfs_throttled_periods_total{container="{{service}}"}[5m])) / sum(rate(container_cpu_cfs_periods_total{container="{{service}}"}[5m]))"#,
        ),
        g("memory_working_set", Unit::Bytes, r#"sum(container_memory_working_set_bytes{container="{{service}}"})"#),
        g(
            "restarts",
            Unit::Number,
            r#"sum(increase(kube_pod_container_status_restarts_total{container="{{service}}"}[10m]))"#,
        ),
        // The service graph (Tempo's metrics generator, Grafana Alloy): the same calls into the
        // service timed by the server and by its clients; the gap is the network into it.
        g(
            "latency_p50_served",
            Unit::Seconds,
            r#"histogram_quantile(0.5, sum by (le) (rate(traces_service_graph_request_server_seconds_bucket{server="{{service}}"}[5m])))"#,
        ),
        Golden {
            callers_view_of: Some("latency_p50_served".into()),
            ..g(
                "latency_p50_by_callers",
                Unit::Seconds,
                r#"histogram_quantile(0.5, sum by (le) (rate(traces_service_graph_request_client_seconds_bucket{server="{{service}}"}[5m])))"#,
            )
        },
    ]
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

    /// The label sets of an instant vector query's samples (topology from service graphs).
    pub async fn query_instant(&self, promql: &str) -> Result<Vec<Labels>, String> {
        let resp = self.get("api/v1/query", &[("query", promql.to_string())]).await?;
        let data = resp.data.ok_or("a success without data")?;
        if data.result_type != "vector" {
            return Err(format!("expected a vector, got {}", data.result_type));
        }
        Ok(data.result.into_iter().take(self.max_series * 10).map(|m| m.metric).collect())
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
