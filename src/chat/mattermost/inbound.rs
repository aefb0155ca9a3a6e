//! What Mattermost sends medic: button actions (`POST /mattermost/actions`), dialog submissions
//! (`POST /mattermost/dialogs`: Reject's reason, Ask's question) and the `/medic` slash command
//! (`POST /mattermost/command`).
//!
//! Mattermost signs none of these, so each is trusted only as far as Mattermost allows:
//! - it must come from the Mattermost server's addresses (`mattermost.allowed_sources`, by
//!   default what `mattermost.url`'s host resolves to);
//! - a button's `context` and a dialog's `state` are medic's own, sealed with an HMAC of the
//!   action, incident, plan and the time medic rendered it ([`Signed`]); Mattermost keeps a
//!   button's context on the server (users never see it), so only actions medic made are
//!   accepted, and one older than `mattermost.action_window` is refused;
//! - a click's `post_id` must be the incident's own post in the `channel_id` it names, and its
//!   `user_id` (Mattermost's word) a member of that channel, asked of Mattermost's API;
//! - the slash command carries the command's token (`Authorization: Token …`, or the `token`
//!   field), compared in constant time.

use super::{Mattermost, is_id};
use crate::approval::{Decision, Identity};
use crate::chat::asking::Asking;
use crate::chat::clicks::Clicks;
use crate::secret::Secret;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router, routing::post};
use hmac::{KeyInit, Mac};
use serde::Deserialize;
use serde_json::{Value, json};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// HMAC-SHA256 of `msg` under `key`.
pub fn mac(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(msg);
    m.finalize().into_bytes().to_vec()
}

/// What a button or dialog medic made stands for, and when medic made it (Unix seconds).
#[derive(Debug, Clone, PartialEq)]
pub struct Signed {
    pub action: String,
    pub incident: i64,
    /// The plan's hash; empty for actions about the incident (Ask, Ticket).
    pub plan: String,
    pub at: i64,
}

impl Signed {
    pub fn new(action: &str, incident: i64, plan: &str, at: i64) -> Signed {
        Signed { action: action.into(), incident, plan: plan.into(), at }
    }

    fn message(&self) -> String {
        format!("medic mattermost v1\n{}\n{}\n{}\n{}", self.action, self.incident, self.plan, self.at)
    }

    /// The context medic gives Mattermost: the fields and their HMAC under `key`.
    pub fn sealed(&self, key: &Secret) -> Value {
        let sig = hex::encode(mac(key.expose().as_bytes(), self.message().as_bytes()));
        json!({"action": self.action, "incident": self.incident, "plan": self.plan, "at": self.at, "sig": sig})
    }

    /// The context as sent back, if medic sealed it with `key` no more than `window` before
    /// `now` (and not from the future, past 5 minutes of clock skew).
    pub fn open(v: &Value, key: &Secret, window: Duration, now: i64) -> Result<Signed, String> {
        let (Some(action), Some(incident), Some(plan), Some(at), Some(sig)) =
            (v["action"].as_str(), v["incident"].as_i64(), v["plan"].as_str(), v["at"].as_i64(), v["sig"].as_str())
        else {
            return Err("the action's context is not one medic made (fields missing)".into());
        };
        let signed = Signed::new(action, incident, plan, at);
        let sig = hex::decode(sig).map_err(|_| "the action's signature is not hex".to_string())?;
        let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.expose().as_bytes()).expect("any key length");
        m.update(signed.message().as_bytes());
        m.verify_slice(&sig).map_err(|_| "the action's signature does not match: medic did not make it".to_string())?;
        let age = now.saturating_sub(at);
        if age > window.as_secs() as i64 {
            return Err(format!(
                "the button is {age}s old, past mattermost.action_window ({}s): use the buttons of the incident's current post",
                window.as_secs()
            ));
        }
        if age < -300 {
            return Err("the action's timestamp is in the future".into());
        }
        Ok(signed)
    }
}

/// The addresses requests from Mattermost may come from.
pub struct Sources {
    fixed: Vec<ipnet::IpNet>,
    /// Without `allowed_sources`: the server's host and port, resolved at most every 5 minutes.
    host: Option<(String, u16)>,
    resolved: Mutex<Option<(Instant, Vec<IpAddr>)>>,
}

const RESOLVE_EVERY: Duration = Duration::from_secs(300);

impl Sources {
    pub fn new(allowed: &[String], url: &reqwest::Url) -> Result<Sources, String> {
        let fixed = allowed
            .iter()
            .map(|s| {
                s.parse::<ipnet::IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| format!("mattermost.allowed_sources: {s:?} is not an IP address or a CIDR block"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let host = match (fixed.is_empty(), url.host_str(), url.port_or_known_default()) {
            (true, Some(h), Some(p)) => Some((h.trim_matches(['[', ']']).to_string(), p)),
            _ => None,
        };
        Ok(Sources { fixed, host, resolved: Mutex::new(None) })
    }

    /// Whether a request from `ip` may be Mattermost's.
    pub async fn allows(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        let Some((host, port)) = &self.host else { return self.fixed.iter().any(|n| n.contains(&ip)) };
        let cached = self.resolved.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let addrs = match cached {
            Some((at, addrs)) if at.elapsed() < RESOLVE_EVERY => addrs,
            _ => match tokio::net::lookup_host((host.as_str(), *port)).await {
                Ok(found) => {
                    let addrs: Vec<IpAddr> = found.map(|a| a.ip()).collect();
                    *self.resolved.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), addrs.clone()));
                    addrs
                }
                Err(e) => {
                    tracing::warn!(host, error = %e, "cannot resolve the Mattermost server's address; its requests are refused");
                    cached.map(|(_, a)| a).unwrap_or_default()
                }
            },
        };
        addrs.contains(&ip)
    }
}

/// What the routes share.
struct Inbound {
    mm: Arc<Mattermost>,
    clicks: Arc<Clicks>,
    asking: Arc<Asking>,
    max_body: usize,
}

/// The routes Mattermost calls, for the server to merge.
pub fn routes<S: Clone + Send + Sync + 'static>(
    mm: Arc<Mattermost>,
    clicks: Arc<Clicks>,
    asking: Arc<Asking>,
    max_body: usize,
) -> Router<S> {
    Router::new()
        .route("/mattermost/actions", post(action))
        .route("/mattermost/dialogs", post(dialog))
        .route("/mattermost/command", post(command))
        .with_state(Arc::new(Inbound { mm, clicks, asking, max_body }))
}

fn refuse(status: StatusCode, error: &str, message: String) -> Response {
    tracing::info!(platform = "mattermost", %status, reason = %message, "request refused");
    (status, Json(json!({"error": error, "message": message}))).into_response()
}

/// What Mattermost shows the clicker only: a line under the post.
fn ephemeral(text: &str) -> Response {
    Json(json!({"ephemeral_text": crate::chat::cut(&super::escape(text), 4000), "skip_slack_parsing": true}))
        .into_response()
}

impl Inbound {
    /// The body of a request from the Mattermost server's addresses, within the size limit.
    async fn admit(&self, req: Request) -> Result<axum::body::Bytes, Response> {
        let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        match peer {
            Some(ip) if self.mm.allowed.allows(ip).await => {}
            Some(ip) => {
                return Err(refuse(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    format!("{ip} is not the Mattermost server's address (mattermost.allowed_sources)"),
                ));
            }
            None => return Err(refuse(StatusCode::FORBIDDEN, "forbidden", "the request's address is unknown".into())),
        }
        axum::body::to_bytes(req.into_body(), self.max_body).await.map_err(|_| {
            refuse(StatusCode::PAYLOAD_TOO_LARGE, "too_large", format!("body larger than {} bytes", self.max_body))
        })
    }

    /// A JSON request's body as `T` (`what` names it in the error), once admitted.
    async fn json<T: serde::de::DeserializeOwned>(&self, req: Request, what: &str) -> Result<T, Response> {
        let body = self.admit(req).await?;
        serde_json::from_slice(&body)
            .map_err(|e| refuse(StatusCode::BAD_REQUEST, "invalid", format!("not a Mattermost {what}: {e}")))
    }

    /// The context medic sealed, or why it is refused.
    fn open(&self, context: &Value) -> Result<Signed, String> {
        Signed::open(context, &self.mm.action_key, self.mm.action_window, chrono::Utc::now().timestamp())
    }

    /// `user` must be a member of `channel`, by Mattermost's API.
    async fn member(&self, channel: &str, user: &str) -> Result<(), Response> {
        match self.mm.in_channel(channel, user).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(refuse(
                StatusCode::FORBIDDEN,
                "forbidden",
                "the user is not a member of the channel the action names".into(),
            )),
            Err(e) => Err(refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("cannot ask Mattermost who the user is: {e}"),
            )),
        }
    }

    /// Opens an interactive dialog (`POST /actions/dialogs/open`) whose submission comes back
    /// to `/mattermost/dialogs` with `state`.
    async fn open_dialog(&self, trigger: &str, dialog: Value) {
        let body =
            json!({"trigger_id": trigger, "url": format!("{}/mattermost/dialogs", self.mm.callback), "dialog": dialog});
        if let Err(e) = self.mm.call(reqwest::Method::POST, "actions/dialogs/open", Some(&body)).await {
            tracing::warn!(?e, "could not open a Mattermost dialog");
        }
    }

    /// Decides a click by `user` in `channel` within the budget; past it, the refusal (if
    /// any) follows as an ephemeral post once it is in.
    async fn decide(
        self: &Arc<Self>,
        user: &str,
        channel: &str,
        s: &Signed,
        decision: Decision,
        reason: Option<String>,
    ) -> Decided {
        let (me, user, channel, plan) = (self.clone(), user.to_string(), channel.to_string(), s.plan.clone());
        let incident = s.incident;
        let (u, c) = (user.clone(), channel.clone());
        let mut task = tokio::spawn(async move {
            let groups = me.mm.groups(&me.asking.responders).await;
            let who = Identity(format!("mattermost:{u}"));
            me.clicks.decide(incident, &plan, who, decision, &format!("mattermost:{c}"), reason, &groups).await
        });
        match tokio::time::timeout(crate::chat::ACK_BUDGET, &mut task).await {
            Ok(Ok(Ok(Some(reply)))) => Decided::Refused(reply),
            Ok(Ok(Ok(None))) => Decided::Done,
            Ok(Ok(Err(e))) => {
                tracing::warn!(error = %format!("{e:#}"), "a Mattermost click failed");
                Decided::Failed
            }
            Ok(Err(_)) => Decided::Failed,
            Err(_) => {
                let mm = self.mm.clone();
                tokio::spawn(async move {
                    if let Ok(Ok(Some(reply))) = task.await {
                        mm.ephemeral(&channel, None, &user, &reply).await;
                    }
                });
                Decided::Pending
            }
        }
    }

    /// A click's answer: its refusal, or the incident's post as it stands now.
    async fn answer_click(&self, decided: Decided, incident: i64, channel: &str) -> Response {
        match decided {
            Decided::Refused(reply) => ephemeral(&reply),
            Decided::Done => self.updated(incident, channel).await,
            Decided::Pending => Json(json!({})).into_response(),
            Decided::Failed => {
                Json(json!({"error": {"message": "medic could not record the click; try again"}})).into_response()
            }
        }
    }

    /// The incident's post as it stands now, as the answer's `update`.
    async fn updated(&self, incident: i64, channel: &str) -> Response {
        let root = match crate::chat::view_for(self.clicks.store.as_ref(), incident).await {
            Ok(Some(mut view)) => {
                view.0["ticket"] = json!(self.clicks.notifier.tickets);
                crate::chat::Platform::root(self.mm.as_ref(), &view, channel).ok()
            }
            _ => None,
        };
        match root.and_then(|b| serde_json::from_str::<Value>(&b).ok()) {
            Some(b) => Json(json!({"update": {"message": b["message"], "props": b["props"]}})).into_response(),
            None => Json(json!({})).into_response(),
        }
    }
}

/// How a click was decided within the budget.
enum Decided {
    /// Refused, and why (for the clicker only).
    Refused(String),
    Done,
    /// Still being decided.
    Pending,
    Failed,
}

/// A button's request, as Mattermost sends it.
#[derive(Debug, Deserialize)]
struct ActionRequest {
    user_id: String,
    post_id: String,
    channel_id: String,
    #[serde(default)]
    trigger_id: String,
    #[serde(default)]
    context: Value,
}

async fn action(State(s): State<Arc<Inbound>>, req: Request) -> Response {
    let r: ActionRequest = match s.json(req, "action request").await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let signed = match s.open(&r.context) {
        Ok(x) => x,
        Err(e) => return refuse(StatusCode::UNAUTHORIZED, "unauthorized", e),
    };
    // The post must be the incident's own, in the channel the request names.
    match s.clicks.store.incident_for_message("mattermost", Some(&r.channel_id), &r.post_id).await {
        Ok(Some(i)) if i == signed.incident => {}
        Ok(_) => {
            return refuse(
                StatusCode::FORBIDDEN,
                "forbidden",
                "the action does not belong to the post it names".into(),
            );
        }
        Err(e) => return refuse(StatusCode::SERVICE_UNAVAILABLE, "unavailable", format!("store: {e:#}")),
    }
    if let Err(resp) = s.member(&r.channel_id, &r.user_id).await {
        return resp;
    }
    let now = chrono::Utc::now().timestamp();
    let key = &s.mm.action_key;
    match signed.action.as_str() {
        "approve" | "stop" => {
            let decision = if signed.action == "stop" { Decision::Stop } else { Decision::Approve };
            let decided = s.decide(&r.user_id, &r.channel_id, &signed, decision, None).await;
            s.answer_click(decided, signed.incident, &r.channel_id).await
        }
        "reject" => {
            let state = Signed::new("reject", signed.incident, &signed.plan, now).sealed(key);
            s.open_dialog(&r.trigger_id, json!({
                "callback_id": "reject", "title": "Reject the plan", "submit_label": "Reject", "state": state.to_string(),
                "elements": [{"display_name": "Why?", "name": "reason", "type": "textarea", "max_length": 2000, "optional": true}],
            }))
            .await;
            Json(json!({})).into_response()
        }
        "ask" => {
            let state = Signed::new("ask", signed.incident, "", now).sealed(key);
            s.open_dialog(&r.trigger_id, json!({
                "callback_id": "ask", "title": "Ask medic", "submit_label": "Ask", "state": state.to_string(),
                // A `text` element holds at most 150 characters on Mattermost; a question may be longer.
                "elements": [{"display_name": "Your question", "name": "question", "type": "textarea", "max_length": 500,
                              "placeholder": "what changed before the errors started?"}],
            }))
            .await;
            Json(json!({})).into_response()
        }
        "more" => match s.clicks.more_evidence(signed.incident).await {
            Ok(Some(reply)) => ephemeral(&reply),
            Ok(None) => Json(json!({})).into_response(),
            Err(e) => refuse(StatusCode::SERVICE_UNAVAILABLE, "unavailable", format!("{e:#}")),
        },
        // Ticket: the order `open a ticket for this`, through the asking path, answered privately.
        "ticket" => {
            let q =
                s.mm.question(
                    &s.asking,
                    crate::chat::slack::TICKET_ORDER,
                    Some(signed.incident),
                    &r.user_id,
                    &r.channel_id,
                    true,
                )
                .await;
            let reply = s.asking.ask(&q).await;
            ephemeral(&crate::chat::display(&reply.view["headline"]))
        }
        other => refuse(StatusCode::BAD_REQUEST, "invalid", format!("unknown action {other:?}")),
    }
}

/// A dialog's submission, as Mattermost sends it.
#[derive(Debug, Deserialize)]
struct Submission {
    callback_id: String,
    state: String,
    user_id: String,
    channel_id: String,
    #[serde(default)]
    submission: serde_json::Map<String, Value>,
    #[serde(default)]
    cancelled: bool,
}

async fn dialog(State(s): State<Arc<Inbound>>, req: Request) -> Response {
    let d: Submission = match s.json(req, "dialog submission").await {
        Ok(d) => d,
        Err(resp) => return resp,
    };
    let state: Value = serde_json::from_str(&d.state).unwrap_or(Value::Null);
    let signed = match s.open(&state) {
        Ok(x) if x.action == d.callback_id => x,
        Ok(_) => {
            return refuse(StatusCode::UNAUTHORIZED, "unauthorized", "the dialog's state is for another dialog".into());
        }
        Err(e) => return refuse(StatusCode::UNAUTHORIZED, "unauthorized", e),
    };
    if d.cancelled {
        return Json(json!({})).into_response();
    }
    if let Err(resp) = s.member(&d.channel_id, &d.user_id).await {
        return resp;
    }
    let field = |k: &str| d.submission.get(k).and_then(Value::as_str).map(|t| crate::chat::cut(t, 2000));
    match signed.action.as_str() {
        "reject" => {
            let reason = field("reason").filter(|t| !t.trim().is_empty());
            match s.decide(&d.user_id, &d.channel_id, &signed, Decision::Reject, reason).await {
                // A dialog shows a refusal as its `error`, and stays open.
                Decided::Refused(text) => Json(json!({"error": text})).into_response(),
                Decided::Failed => {
                    Json(json!({"error": "medic could not record the rejection; try again"})).into_response()
                }
                Decided::Done | Decided::Pending => Json(json!({})).into_response(),
            }
        }
        "ask" => {
            let text = field("question").unwrap_or_default();
            let (s, channel, user, incident) = (s.clone(), d.channel_id.clone(), d.user_id.clone(), signed.incident);
            tokio::spawn(async move {
                let q = s.mm.question(&s.asking, &text, Some(incident), &user, &channel, true).await;
                let reply = s.asking.ask(&q).await;
                let root = s.mm.root_of(s.clicks.store.as_ref(), incident, &channel).await;
                s.mm.answer(&channel, root.as_deref(), &user, &reply).await;
            });
            Json(json!({})).into_response()
        }
        other => refuse(StatusCode::BAD_REQUEST, "invalid", format!("unknown dialog {other:?}")),
    }
}

/// `/medic …`: answered in the command's response, which Mattermost posts where the command was
/// run (in its thread when run in one); a private answer (a refused order) only to the asker.
async fn command(State(s): State<Arc<Inbound>>, req: Request) -> Response {
    let header = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Token "))
        .map(str::to_string);
    let body = match s.admit(req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let form: std::collections::HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let Some(expected) = &s.mm.command_token else {
        return refuse(StatusCode::UNAUTHORIZED, "unauthorized", "no mattermost.command_token is configured".into());
    };
    let given = header.or_else(|| form.get("token").cloned()).unwrap_or_default();
    if !expected.ct_eq(given.as_bytes()) {
        return refuse(StatusCode::UNAUTHORIZED, "unauthorized", "the command's token does not match".into());
    }
    let (Some(channel), Some(user)) = (form.get("channel_id"), form.get("user_id")) else {
        return refuse(StatusCode::BAD_REQUEST, "invalid", "expected the form fields user_id and channel_id".into());
    };
    if !is_id(channel) || !is_id(user) {
        return refuse(StatusCode::BAD_REQUEST, "invalid", "user_id and channel_id are not Mattermost ids".into());
    }
    // Mattermost retries nothing, but a replayed request (within its token's life) answers once.
    if let Some(trigger) = form.get("trigger_id")
        && !s.asking.once("mattermost", &format!("command:{trigger}")).await
    {
        return Json(json!({})).into_response();
    }
    let text = form.get("text").map(String::as_str).unwrap_or("").trim();
    let text = text.strip_prefix("ask ").unwrap_or(text);
    let q = s.mm.question(&s.asking, text, None, user, channel, true).await;
    let reply = s.asking.ask(&q).await;
    let message = s.mm.answer_message(&reply).unwrap_or_else(|e| {
        tracing::warn!(error = %format!("{e:#}"), "the Mattermost answer template failed");
        super::escape(&crate::chat::display(&reply.view["headline"]))
    });
    let kind = if reply.private { "ephemeral" } else { "in_channel" };
    Json(json!({"response_type": kind, "text": message, "skip_slack_parsing": true})).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_medic_sealed_opens_within_the_window() {
        let key = Secret::new("k");
        let now = 1_800_000_000;
        let h = "a".repeat(64);
        let sealed = Signed::new("approve", 3, &h, now).sealed(&key);
        let day = Duration::from_secs(86_400);
        assert_eq!(Signed::open(&sealed, &key, day, now + 60).unwrap(), Signed::new("approve", 3, &h, now));
        // Another key, another action, another incident, another plan: refused.
        assert!(Signed::open(&sealed, &Secret::new("other"), day, now).is_err());
        for (k, v) in [("action", json!("stop")), ("incident", json!(4)), ("plan", json!("b".repeat(64)))] {
            let mut forged = sealed.clone();
            forged[k] = v;
            assert!(Signed::open(&forged, &key, day, now).unwrap_err().contains("does not match"), "{k}");
        }
        // A replay past the window; a context from the future.
        assert!(Signed::open(&sealed, &key, day, now + 86_401).unwrap_err().contains("action_window"));
        let ahead = Signed::new("approve", 3, &h, now + 3600).sealed(&key);
        assert!(Signed::open(&ahead, &key, day, now).is_err());
        assert!(Signed::open(&json!({"action": "approve"}), &key, day, now).is_err());
    }

    fn fixture(name: &str) -> String {
        let path = format!("{}/tests/fixtures/mattermost/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(path).unwrap()
    }

    /// Mattermost's documented requests read as medic reads them: the action request's ids pass
    /// the id check, and its context, not one medic sealed, is refused; the slash command's form
    /// gives the fields `/medic` needs.
    #[test]
    fn the_documented_requests_read_as_medic_reads_them() {
        let r: ActionRequest = serde_json::from_str(&fixture("docs-action-request.json")).unwrap();
        assert!(is_id(&r.user_id) && is_id(&r.post_id) && is_id(&r.channel_id), "{r:?}");
        assert_eq!(r.trigger_id, "", "absent in the example: optional");
        let e = Signed::open(&r.context, &Secret::new("k"), Duration::from_secs(60), 0).unwrap_err();
        assert!(e.contains("not one medic made"), "{e}");
        let form: std::collections::HashMap<String, String> =
            url::form_urlencoded::parse(fixture("docs-slash-command.form").as_bytes()).into_owned().collect();
        assert!(is_id(&form["user_id"]) && is_id(&form["channel_id"]));
        assert_eq!((form["text"].as_str(), form["token"].as_str()), ("toronto week", "qzgakf1nx3yt9dr4n8585ihbxy"));
        assert!(form["trigger_id"].len() > 20);
    }

    #[tokio::test]
    async fn sources_are_the_servers_addresses_or_the_configured_blocks() {
        let url = reqwest::Url::parse("http://127.0.0.1:8065").unwrap();
        let by_host = Sources::new(&[], &url).unwrap();
        assert!(by_host.allows("127.0.0.1".parse().unwrap()).await);
        assert!(by_host.allows("::ffff:127.0.0.1".parse().unwrap()).await, "IPv4-mapped");
        assert!(!by_host.allows("10.1.2.3".parse().unwrap()).await);
        let fixed = Sources::new(&["10.0.0.0/8".into(), "192.168.1.5".into()], &url).unwrap();
        assert!(fixed.allows("10.1.2.3".parse().unwrap()).await);
        assert!(fixed.allows("192.168.1.5".parse().unwrap()).await);
        assert!(!fixed.allows("127.0.0.1".parse().unwrap()).await, "the configured blocks replace the host's");
        assert!(Sources::new(&["10.0.0.0/33".into()], &url).is_err());
    }
}
