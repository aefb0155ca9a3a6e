//! `http` actions: one request to an allow-listed host, exactly as approved (the AWX, Rundeck,
//! Argo Workflows or in-house webhook a runbook names).

use super::MAX_OUTPUT;
use crate::redact::redact;
use crate::runbook::HttpMethod;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

pub struct Request<'a> {
    pub method: HttpMethod,
    pub url: &'a str,
    pub headers: &'a BTreeMap<String, String>,
    pub body: Option<&'a Value>,
    pub expect_status: &'a [u16],
    pub timeout_secs: u64,
}

/// Credentials by host (`host` or `host:port`), from the config's secret references.
pub type HostHeaders = BTreeMap<String, Vec<(String, crate::secret::Secret)>>;

/// Sends `r` if its host is on the allow-list, with that host's configured credentials; the
/// answer's status and (redacted) body.
pub async fn call(
    http: &reqwest::Client,
    limits: &super::Limits,
    r: Request<'_>,
    summary: &str,
) -> Result<String, String> {
    let url = r.url;
    let parsed = reqwest::Url::parse(url).map_err(|e| redact(&format!("invalid URL {url}: {e}")))?;
    // The URL called is exactly the one approved: plans hold normalised URLs
    // (`render::url`), so one that normalises differently was not built by medic.
    if parsed.as_str() != url {
        return Err(redact(&format!("{url} is not in normal form (it would call {parsed})")));
    }
    let host = parsed.host_str().unwrap_or_default().to_string();
    let with_port = parsed.port().map(|p| format!("{host}:{p}")).unwrap_or_else(|| host.to_string());
    if !limits.allowed_hosts.iter().any(|h| *h == host || *h == with_port) {
        return Err(format!("{with_port} is not on the executor's allow-list of HTTP hosts"));
    }
    let m = match r.method {
        HttpMethod::Get => reqwest::Method::GET,
        HttpMethod::Post => reqwest::Method::POST,
        HttpMethod::Put => reqwest::Method::PUT,
        HttpMethod::Patch => reqwest::Method::PATCH,
        HttpMethod::Delete => reqwest::Method::DELETE,
    };
    let mut req = http.request(m, parsed).timeout(Duration::from_secs(r.timeout_secs));
    for (k, v) in r.headers {
        req = req.header(k, v);
    }
    let credentials = limits.host_headers.get(&with_port).or_else(|| limits.host_headers.get(&host));
    for (k, v) in credentials.into_iter().flatten() {
        let mut value = reqwest::header::HeaderValue::from_str(v.expose())
            .map_err(|_| format!("executor.http_headers.{with_port}.{k}: not a valid header value"))?;
        value.set_sensitive(true);
        req = req.header(k, value);
    }
    if let Some(b) = r.body {
        req = req.json(b);
    }
    let resp = req.send().await.map_err(|e| redact(&format!("{summary}: {e}")))?;
    let status = resp.status().as_u16();
    let text = crate::redact::redact_cut(&resp.text().await.unwrap_or_default(), MAX_OUTPUT);
    let ok = if r.expect_status.is_empty() { (200..300).contains(&status) } else { r.expect_status.contains(&status) };
    let summary = format!("HTTP {status}: {}", text.trim());
    if ok { Ok(summary) } else { Err(format!("unexpected {summary}")) }
}
