//! What the HTTP-based context backends share: auth, extra headers (tenants), a timeout, and
//! bounded reads of the response body.

use crate::secret::Secret;
use std::time::Duration;

/// Whether an `x-ratelimit-remaining` header says the quota is spent (GitHub answers 403 then).
fn resp_headers_say_exhausted(remaining: &Option<reqwest::header::HeaderValue>) -> bool {
    remaining.as_ref().is_some_and(|v| v.as_bytes() == b"0")
}

pub enum Auth {
    None,
    Bearer(Secret),
    Basic { user: String, password: Secret },
}

pub struct Http {
    base: reqwest::Url,
    client: reqwest::Client,
    auth: Auth,
    headers: Vec<(String, String)>,
    /// Largest response body read, in bytes.
    pub max_bytes: usize,
}

impl Http {
    /// `base` is the server's root URL; paths are joined to it.
    pub fn new(
        what: &str,
        base: &str,
        auth: Auth,
        headers: Vec<(String, String)>,
        timeout: Duration,
    ) -> Result<Http, String> {
        let mut base = reqwest::Url::parse(base).map_err(|e| format!("invalid {what} URL {base:?}: {e}"))?;
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let client = crate::telemetry::http_client_builder().timeout(timeout).build().map_err(|e| e.to_string())?;
        Ok(Http { base, client, auth, headers, max_bytes: 8 << 20 })
    }

    /// GETs `path?params`; the status and the body, read up to `max_bytes`.
    pub async fn get(&self, path: &str, params: &[(&str, String)]) -> Result<(reqwest::StatusCode, Vec<u8>), String> {
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
        let rate_limited = resp.headers().get("x-ratelimit-remaining").cloned();
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| {
            if e.is_timeout() { "timed out".to_string() } else { format!("reading the response: {}", e.without_url()) }
        })? {
            if body.len() + chunk.len() > self.max_bytes {
                return Err(format!("response larger than {} bytes; narrow the query", self.max_bytes));
            }
            body.extend_from_slice(&chunk);
        }
        let out_of_quota = resp_headers_say_exhausted(&rate_limited);
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS
            || (status == reqwest::StatusCode::FORBIDDEN && out_of_quota)
        {
            return Err(format!("HTTP {}: rate limited; try again later", status.as_u16()));
        }
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(format!("HTTP {}: credentials refused", status.as_u16()));
        }
        Ok((status, body))
    }

    /// GETs JSON: a non-2xx status is an error carrying the start of the body; so is a body
    /// that is not the expected shape.
    pub async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        path: &str,
        params: &[(&str, String)],
    ) -> Result<T, String> {
        let (status, body) = self.get(path, params).await?;
        if !status.is_success() {
            let text: String = String::from_utf8_lossy(&body).trim().chars().take(300).collect();
            return Err(format!("HTTP {}: {text}", status.as_u16()));
        }
        serde_json::from_slice(&body).map_err(|e| format!("not a {what} response ({e})"))
    }
}
