//! The API's authentication: its config section and the middleware that checks it. A leaf
//! (it imports only `secret` and intake's bearer check), so `config` can compose its section
//! without reaching the server.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// The `api` section of the config.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Accepted bearer tokens (`{env: …}` / `{file: …}`); two while rotating.
    #[serde(default)]
    pub bearer: Vec<crate::secret::SecretRef>,
}

impl Config {
    /// The tokens, resolved; the error names the one that failed.
    pub fn tokens(&self) -> Result<Vec<crate::secret::Secret>, String> {
        self.bearer.iter().enumerate().map(|(i, s)| s.resolve().map_err(|e| format!("api.bearer[{i}]: {e}"))).collect()
    }
}

/// Refuses a request without an accepted bearer token, when tokens are configured.
pub async fn authenticate(
    State(tokens): State<Arc<Vec<crate::secret::Secret>>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if !tokens.is_empty()
        && let Err(why) = crate::intake::bearer(&tokens, req.headers())
    {
        return (StatusCode::UNAUTHORIZED, Json(serde_json::json!({"error": "unauthorized", "message": why})))
            .into_response();
    }
    next.run(req).await
}
