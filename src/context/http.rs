//! What the HTTP-based context backends share: auth, extra headers (tenants), a timeout, and
//! bounded reads of the response body.

use crate::config::Secret;
use std::time::Duration;

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
        let client = reqwest::Client::builder().timeout(timeout).build().map_err(|e| e.to_string())?;
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
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| {
            if e.is_timeout() { "timed out".to_string() } else { format!("reading the response: {}", e.without_url()) }
        })? {
            if body.len() + chunk.len() > self.max_bytes {
                return Err(format!("response larger than {} bytes; narrow the query", self.max_bytes));
            }
            body.extend_from_slice(&chunk);
        }
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(format!("HTTP {}: credentials refused", status.as_u16()));
        }
        Ok((status, body))
    }
}
