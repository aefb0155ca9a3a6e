//! Prometheus-compatible metrics (Prometheus, Thanos, Mimir, VictoriaMetrics) over the HTTP API:
//! `GET /api/v1/query_range`. Bearer or basic auth and extra headers (e.g. `X-Scope-OrgID` for
//! Mimir tenants); responses are bounded in bytes and series; Prometheus' own error JSON
//! (`{"status":"error","errorType":…,"error":…}`) becomes a readable reason.

use super::{MetricQuery, Metrics, Series};
use crate::config::Secret;
use crate::time::Millis;
use async_trait::async_trait;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

pub enum Auth {
    None,
    Bearer(Secret),
    Basic { user: String, password: Secret },
}

pub struct Prometheus {
    base: reqwest::Url,
    client: reqwest::Client,
    auth: Auth,
    headers: Vec<(String, String)>,
    /// Largest response body read, in bytes.
    pub max_bytes: usize,
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
        let mut base = reqwest::Url::parse(base).map_err(|e| format!("invalid Prometheus URL {base:?}: {e}"))?;
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let client = reqwest::Client::builder().timeout(timeout).build().map_err(|e| e.to_string())?;
        Ok(Prometheus { base, client, auth, headers, max_bytes: 8 << 20, max_series: 500 })
    }

    async fn get(&self, path: &str, params: &[(&str, String)]) -> Result<Response, String> {
        let mut url = self.base.join(path).map_err(|e| e.to_string())?;
        url.query_pairs_mut().extend_pairs(params.iter().map(|(k, v)| (*k, v.as_str())));
        let mut req = self.client.get(url);
        req = match &self.auth {
            Auth::None => req,
            Auth::Bearer(t) => req.bearer_auth(t.expose()),
            Auth::Basic { user, password } => req.basic_auth(user, Some(password.expose())),
        };
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        let mut resp = req.send().await.map_err(|e| {
            if e.is_timeout() { "timed out".to_string() } else { format!("unreachable: {}", e.without_url()) }
        })?;
        let status = resp.status();
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| format!("reading the response: {}", e.without_url()))? {
            if body.len() + chunk.len() > self.max_bytes {
                return Err(format!("response larger than {} bytes; narrow the query", self.max_bytes));
            }
            body.extend_from_slice(&chunk);
        }
        let parsed: Result<Response, _> = serde_json::from_slice(&body);
        match parsed {
            Ok(r) if r.status == "success" && status.is_success() => Ok(r),
            Ok(r) => Err(format!(
                "HTTP {}: {}: {}",
                status.as_u16(),
                r.error_type.unwrap_or_else(|| "error".into()),
                r.error.unwrap_or_default()
            )),
            Err(_) if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN => {
                Err(format!("HTTP {}: credentials refused", status.as_u16()))
            }
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
