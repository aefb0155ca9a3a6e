//! Slack: incidents as Block Kit messages, decisions by button, over the real Web API.
//!
//! - **Out**: the root message is rendered from `templates/slack/incident.hbs` (the shared
//!   [`IncidentView`]), parsed into slack-morphism's `SlackBlock`s (a template error is caught
//!   before Slack sees it), held to Slack's limits (50 blocks, 3000 characters per text, 150
//!   per header, 2000 per button value; longer text ends "… see thread"), and delivered by the
//!   outbox: `chat.postMessage`, then `chat.update` on each change, replies in the thread. A 429
//!   waits its `Retry-After`.
//! - **In**: `POST /slack/interactions` and `POST /slack/events`, each signed (HMAC-SHA256 over
//!   `v0:{timestamp}:{body}` with one of two signing secrets, within 5 minutes), or Socket Mode
//!   (`apps.connections.open`, a WebSocket, each envelope acknowledged) for clusters without
//!   ingress. Clicks go through [`super::clicks`]; refusals come back as an ephemeral message.
//! - **Questions**: `app_mention`, a message in an incident's thread, a direct message (Events
//!   API or Socket Mode) and the `/medic` slash command (`POST /slack/commands`) go to
//!   [`super::asking`]; the answer, rendered from `templates/slack/answer.hbs`, is posted in the
//!   thread it was asked in (a refusal only to the asker). medic's own messages, edits and
//!   retried deliveries (the same `event_id`) are never answered.

use super::clicks::Clicks;
use super::{IncidentView, Platform};
use crate::alert::Labels;
use crate::approval::{Decision, Groups, Identity};
use crate::secret::Secret;
use crate::store::{Delivery, OutboxRow};
use async_trait::async_trait;
use handlebars::handlebars_helper;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

pub const INCIDENT_TEMPLATE: &str = include_str!("../../templates/slack/incident.hbs");
pub const ANSWER_TEMPLATE: &str = include_str!("../../templates/slack/answer.hbs");
pub const DEFAULT_API_URL: &str = "https://slack.com/api";
const MAX_BLOCKS: usize = 50;

pub struct Slack {
    api: reqwest::Url,
    token: Secret,
    signing: Vec<Secret>,
    pub app_token: Option<Secret>,
    default_channel: String,
    routes: Vec<super::Route>,
    http: reqwest::Client,
    templates: handlebars::Handlebars<'static>,
    usergroups: super::GroupCache,
}

use super::{MORE, cut, display};

/// The `slack` section of the config: the bot's token, the signing secrets of its requests, where incidents go.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The bot token (`xoxb-…`).
    pub bot_token: crate::secret::SecretRef,
    /// One or two (while rotating) signing secrets.
    pub signing_secret: Vec<crate::secret::SecretRef>,
    /// An app-level token (`xapp-…`) turns on Socket Mode (no inbound HTTP needed).
    #[serde(default)]
    pub app_token: Option<crate::secret::SecretRef>,
    #[serde(default = "slack_api")]
    pub api_url: String,
    /// Where incidents go when no route matches (a channel id, `C…`).
    pub default_channel: String,
    /// The first route whose labels the incident's first alert all carries picks the channel.
    #[serde(default)]
    pub routes: Vec<crate::chat::Route>,
    /// How long a user group's members (`slack:group:S…` in responders) are cached.
    #[serde(default = "one_minute", with = "humantime_serde")]
    pub usergroup_ttl: std::time::Duration,
}

fn slack_api() -> String {
    DEFAULT_API_URL.into()
}

fn one_minute() -> std::time::Duration {
    std::time::Duration::from_secs(60)
}

/// Text for Slack: `&`, `<` and `>` escaped, so `<!channel>`, `<@U…>` and `<url|label>` in a
/// label, a log line or a reason are shown, never acted on or turned into a disguised link.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

handlebars_helper!(hb_text: |v: Json, max: u64| {
    Value::String(serde_json::to_string(&cut(&escape(&display(v)), max as usize)).expect("a string serialises"))
});
/// The registry for Slack templates: strict, no HTML escaping, the JSON-safe helpers.
pub fn templates() -> anyhow::Result<handlebars::Handlebars<'static>> {
    let mut hb = super::templates_with_helpers();
    hb.register_helper("text", Box::new(hb_text));
    hb.register_template_string("incident", INCIDENT_TEMPLATE)?;
    hb.register_template_string("answer", ANSWER_TEMPLATE)?;
    Ok(hb)
}

/// Holds rendered blocks to Slack's block count, and checks them against slack-morphism's
/// Block Kit types (a block it can only keep as `Unknown` is an error).
pub fn checked_blocks(mut blocks: Vec<Value>) -> anyhow::Result<Vec<Value>> {
    if blocks.len() > MAX_BLOCKS {
        blocks.truncate(MAX_BLOCKS - 1);
        blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": MORE}]}));
    }
    let typed: Vec<slack_morphism::prelude::SlackBlock> = serde_json::from_value(Value::Array(blocks))
        .map_err(|e| anyhow::anyhow!("the Slack template does not render valid Block Kit: {e}"))?;
    // slack-morphism keeps a block it cannot type as `Unknown` rather than failing: refuse it.
    if let Some(i) = typed.iter().position(|b| matches!(b, slack_morphism::prelude::SlackBlock::Unknown(_))) {
        anyhow::bail!("the Slack template renders block {i}, which is not valid Block Kit");
    }
    Ok(typed.iter().map(|b| serde_json::to_value(b).expect("blocks serialise")).collect())
}

impl Slack {
    pub fn new(cfg: &Config, timeout: Duration) -> Result<Slack, String> {
        let mut api = reqwest::Url::parse(&cfg.api_url).map_err(|e| format!("slack.api_url: {e}"))?;
        if !api.path().ends_with('/') {
            api.set_path(&format!("{}/", api.path()));
        }
        let token = cfg.bot_token.resolve().map_err(|e| format!("slack.bot_token: {e}"))?;
        let signing = cfg
            .signing_secret
            .iter()
            .map(|s| s.resolve().map_err(|e| format!("slack.signing_secret: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let app_token =
            cfg.app_token.as_ref().map(|t| t.resolve().map_err(|e| format!("slack.app_token: {e}"))).transpose()?;
        let http = crate::telemetry::http_client_builder().timeout(timeout).build().map_err(|e| e.to_string())?;
        Ok(Slack {
            api,
            token,
            signing,
            app_token,
            default_channel: cfg.default_channel.clone(),
            routes: cfg.routes.clone(),
            http,
            templates: templates().map_err(|e| format!("Slack templates: {e}"))?,
            usergroups: super::GroupCache::new(cfg.usergroup_ttl),
        })
    }

    /// Checks Slack's request signature with each accepted signing secret. The error names the
    /// problem, never a secret.
    pub fn verify(&self, headers: &axum::http::HeaderMap, body: &[u8]) -> Result<(), String> {
        self.verify_at(headers, body, chrono::Utc::now().timestamp())
    }

    /// [`Slack::verify`] at `now` (Unix seconds).
    pub fn verify_at(&self, headers: &axum::http::HeaderMap, body: &[u8], now: i64) -> Result<(), String> {
        let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
        let sig = header("x-slack-signature").ok_or("missing X-Slack-Signature")?;
        let ts = header("x-slack-request-timestamp").ok_or("missing X-Slack-Request-Timestamp")?;
        super::fresh_at(ts, "X-Slack-Request-Timestamp", now)?;
        let body = std::str::from_utf8(body).map_err(|_| "body is not UTF-8")?;
        // HMAC-SHA256 over `v0:{ts}:{body}`, compared in constant time with every accepted secret.
        let ok = self.signing.iter().fold(false, |acc, s| {
            use hmac::{KeyInit, Mac};
            let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(s.expose().as_bytes()).expect("any key length");
            mac.update(format!("v0:{ts}:{body}").as_bytes());
            let expected = format!("v0={}", hex::encode(mac.finalize().into_bytes()));
            acc | bool::from(subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), sig.as_bytes()))
        });
        if ok { Ok(()) } else { Err("signature does not match".into()) }
    }

    /// Calls a Web API method with a JSON body; the parsed answer, or the delivery outcome.
    async fn call(&self, method: &str, body: &Value) -> Result<Value, Delivery> {
        let req = |r: reqwest::RequestBuilder| {
            r.header("content-type", "application/json; charset=utf-8").body(body.to_string())
        };
        self.call_with(method, req).await
    }

    /// The `ts` of incident `incident`'s root message in `channel`, if one was posted among
    /// the channel's latest 200 messages (`conversations.history` with their metadata).
    async fn posted_root(&self, channel: &str, incident: i64) -> Option<String> {
        let form = [("channel", channel), ("limit", "200"), ("include_all_metadata", "true")];
        let v = self.call_form("conversations.history", &form).await.ok()?;
        let want = root_metadata(incident);
        let found = v["messages"].as_array()?.iter().find(|m| {
            m["metadata"]["event_type"] == want["event_type"]
                && m["metadata"]["event_payload"]["incident_id"] == want["event_payload"]["incident_id"]
        })?;
        let ts = found["ts"].as_str()?.to_string();
        tracing::info!(incident, %ts, "the root message was already posted by an attempt that did not record it");
        Some(ts)
    }

    /// Calls a Web API method that takes form arguments (`files.getUploadURLExternal`).
    async fn call_form(&self, method: &str, form: &[(&str, &str)]) -> Result<Value, Delivery> {
        let body: String = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
        let req = |r: reqwest::RequestBuilder| r.header("content-type", "application/x-www-form-urlencoded").body(body);
        self.call_with(method, req).await
    }

    /// Uploads a PNG into `channel` (in `thread`): Slack's external upload flow —
    /// `files.getUploadURLExternal`, the bytes to the URL it gives, `files.completeUploadExternal`.
    pub async fn upload(&self, channel: &str, thread: Option<&str>, title: &str, png: Vec<u8>) -> Result<(), Delivery> {
        let len = png.len().to_string();
        let v = self.call_form("files.getUploadURLExternal", &[("filename", "chart.png"), ("length", &len)]).await?;
        let (Some(url), Some(id)) = (v["upload_url"].as_str(), v["file_id"].as_str()) else {
            return Err(Delivery::Failed { error: "files.getUploadURLExternal: no upload_url or file_id".into() });
        };
        let sent = self.http.post(url).header("content-type", "image/png").body(png).send().await;
        match sent {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => return Err(Delivery::Failed { error: format!("chart upload: HTTP {}", r.status().as_u16()) }),
            Err(e) => return Err(Delivery::Failed { error: format!("chart upload: {}", e.without_url()) }),
        }
        let mut done = json!({"files": [{"id": id, "title": title}], "channel_id": channel});
        if let Some(t) = thread {
            done["thread_ts"] = json!(t);
        }
        self.call("files.completeUploadExternal", &done).await.map(drop)
    }

    async fn call_with(
        &self,
        method: &str,
        body: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<Value, Delivery> {
        let url = self.api.join(method).map_err(|e| Delivery::Failed { error: e.to_string() })?;
        let resp = body(self.http.post(url).bearer_auth(self.token.expose()))
            .send()
            .await
            .map_err(|e| Delivery::Retry { after_ms: 0, error: format!("Slack unreachable: {}", e.without_url()) })?;
        let status = resp.status();
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            let after = super::outbox::retry_after(resp.headers()).unwrap_or(1000);
            return Err(Delivery::Retry {
                after_ms: after.clamp(1000, 3_600_000),
                error: format!("{method}: rate limited"),
            });
        }
        if status.is_server_error() {
            return Err(Delivery::Retry { after_ms: 0, error: format!("{method}: HTTP {}", status.as_u16()) });
        }
        let v: Value =
            resp.json().await.map_err(|e| Delivery::Retry { after_ms: 0, error: format!("{method}: {e}") })?;
        if v["ok"] == true {
            Ok(v)
        } else {
            let error = format!("{method}: {}", display(&v["error"]));
            Err(match v["error"].as_str() {
                Some("ratelimited") => Delivery::Retry { after_ms: 1000, error },
                Some("internal_error" | "fatal_error" | "service_unavailable" | "request_timeout") => {
                    Delivery::Retry { after_ms: 0, error }
                }
                // The app's token or its installation is refused: an outage of ours until a
                // person fixes it, never a reason to drop the message.
                Some(
                    "invalid_auth" | "not_authed" | "account_inactive" | "token_revoked" | "token_expired"
                    | "no_permission" | "missing_scope" | "not_in_channel" | "channel_not_found" | "ekm_access_denied",
                ) => Delivery::Retry { after_ms: 0, error: format!("{error} (credentials or installation refused)") },
                _ => Delivery::Failed { error },
            })
        }
    }

    /// A private message to `user` in `channel` (sent at once: it answers a click).
    pub async fn ephemeral(&self, channel: &str, user: &str, text: &str) {
        let body = json!({"channel": channel, "user": user, "text": cut(&escape(text), 3000)});
        if let Err(e) = self.call("chat.postEphemeral", &body).await {
            tracing::warn!(?e, "could not send an ephemeral reply");
        }
    }

    /// Members (`slack:U…`) of each group, with `slack:group:S…` entries expanded through
    /// `usergroups.users.list` (cached for `slack.usergroup_ttl`).
    pub async fn groups(&self, responders: &crate::approval::Responders) -> Groups {
        self.usergroups
            .expand(responders, "slack", |id| async move {
                match self.call("usergroups.users.list", &json!({"usergroup": id})).await {
                    Ok(v) => Some(
                        v["users"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|u| u.as_str().map(str::to_string))
                            .collect(),
                    ),
                    Err(e) => {
                        tracing::warn!(
                            usergroup = id,
                            ?e,
                            "cannot list a Slack user group; its members cannot approve now"
                        );
                        None
                    }
                }
            })
            .await
    }

    /// Opens the reject modal, asking for the reason.
    async fn reject_modal(&self, trigger: &str, incident: i64, hash: &str, channel: &str) {
        let view = json!({
            "type": "modal", "callback_id": "medic_reject", "private_metadata": format!("{incident}:{hash}:{channel}"),
            "title": {"type": "plain_text", "text": "Reject the plan"},
            "submit": {"type": "plain_text", "text": "Reject"}, "close": {"type": "plain_text", "text": "Cancel"},
            "blocks": [{"type": "input", "block_id": "reason", "label": {"type": "plain_text", "text": "Why?"},
                        "element": {"type": "plain_text_input", "action_id": "reason", "multiline": true, "max_length": 2000}}],
        });
        if let Err(e) = self.call("views.open", &json!({"trigger_id": trigger, "view": view})).await {
            tracing::warn!(?e, "could not open the reject dialog");
        }
    }

    /// Posts `answer` in `channel` (in `thread`), or only to `user` when it is private.
    pub async fn answer(&self, channel: &str, thread: Option<&str>, user: &str, answer: &super::asking::Reply) {
        let body = async {
            let rendered = self.templates.render("answer", &answer.view)?;
            let mut msg: Value = serde_json::from_str(&rendered)?;
            let blocks = msg["blocks"].as_array().cloned().unwrap_or_default();
            msg["blocks"] = Value::Array(checked_blocks(blocks)?);
            msg["channel"] = json!(channel);
            if let Some(t) = thread {
                msg["thread_ts"] = json!(t);
            }
            if answer.private {
                msg["user"] = json!(user);
            }
            Ok::<Value, anyhow::Error>(msg)
        };
        let msg = match body.await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "the Slack answer template failed");
                return;
            }
        };
        let method = if answer.private { "chat.postEphemeral" } else { "chat.postMessage" };
        if let Err(e) = self.call(method, &msg).await {
            tracing::warn!(?e, "could not post an answer");
            return;
        }
        if let Some((title, png)) = answer.chart.clone()
            && let Err(e) = self.upload(channel, thread, &title, png).await
        {
            tracing::warn!(?e, "could not upload a chart");
        }
    }

    /// Handles one verified Events API payload (HTTP or Socket Mode): a question is answered
    /// once, in its thread.
    pub async fn event(&self, payload: &Value, asking: &super::asking::Asking) -> anyhow::Result<()> {
        let Some(q) = asked(payload) else { return Ok(()) };
        // Overheard in a thread: only a question medic understands (no IO), only in an
        // incident's thread (a read). Chatter never reaches the write below.
        if !q.addressed && !asking.understood(&q.text) {
            return Ok(());
        }
        let incident = match &q.root {
            Some(root) => asking.store.incident_for_message("slack", Some(&q.channel), root).await?,
            None => None,
        };
        if !q.addressed && incident.is_none() {
            return Ok(());
        }
        if let Some(id) = payload["event_id"].as_str()
            && !asking.first("slack", id).await?
        {
            return Ok(());
        }
        let question = self.question(asking, &q.channel, &q.user, &q.text, incident, q.addressed).await;
        self.reply(asking, &q.channel, q.thread.as_deref(), &q.user, &question).await;
        Ok(())
    }

    /// Handles a verified `/medic` slash command (form fields): `/medic status`, `/medic ask
    /// what changed?`, `/medic pause`.
    /// A command Slack delivers twice (a retry, a replay within the signature's window) is
    /// answered once: its `trigger_id` is unique to one invocation.
    pub async fn command(&self, form: &HashMap<String, String>, asking: &super::asking::Asking) {
        let (Some(channel), Some(user)) = (form.get("channel_id"), form.get("user_id")) else { return };
        if let Some(trigger) = form.get("trigger_id")
            && !asking.once("slack", &format!("command:{trigger}")).await
        {
            return;
        }
        let text = form.get("text").map(String::as_str).unwrap_or("");
        let text = text.strip_prefix("ask ").unwrap_or(text);
        let question = self.question(asking, channel, user, text, None, true).await;
        self.reply(asking, channel, None, user, &question).await;
    }

    async fn question(
        &self,
        asking: &super::asking::Asking,
        channel: &str,
        user: &str,
        text: &str,
        incident: Option<i64>,
        addressed: bool,
    ) -> super::asking::Question {
        super::asking::Question {
            text: text.to_string(),
            incident,
            who: Identity(format!("slack:{user}")),
            via: format!("slack:{channel}"),
            groups: self.groups(&asking.responders).await,
            addressed,
        }
    }

    async fn reply(
        &self,
        asking: &super::asking::Asking,
        channel: &str,
        thread: Option<&str>,
        user: &str,
        q: &super::asking::Question,
    ) {
        let answer = asking.ask(q).await;
        self.answer(channel, thread, user, &answer).await;
    }

    /// Handles one verified interaction payload (from HTTP or Socket Mode).
    pub async fn interaction(
        &self,
        payload: &Value,
        clicks: &Arc<Clicks>,
        asking: &super::asking::Asking,
    ) -> anyhow::Result<()> {
        use slack_morphism::prelude::SlackInteractionEvent;
        let responders = asking.responders.as_ref();
        let event: SlackInteractionEvent = serde_json::from_value(payload.clone())
            .map_err(|e| anyhow::anyhow!("not a Slack interaction payload: {e}"))?;
        match event {
            SlackInteractionEvent::BlockActions(ev) => {
                let Some(user) = ev.user.as_ref().map(|u| u.id.to_string()) else { return Ok(()) };
                let channel =
                    ev.channel.as_ref().map(|c| c.id.to_string()).unwrap_or_else(|| self.default_channel.clone());
                for action in ev.actions.unwrap_or_default() {
                    // Ticket: the order `open a ticket for this`, through the asking path.
                    if action.action_id.to_string() == "ticket" {
                        let Some(incident) = action.value.as_deref().and_then(|v| v.parse::<i64>().ok()) else {
                            continue;
                        };
                        let q = self.question(asking, &channel, &user, TICKET_ORDER, Some(incident), true).await;
                        let reply = asking.ask(&q).await;
                        self.ephemeral(&channel, &user, &display(&reply.view["headline"])).await;
                        continue;
                    }
                    let Some((incident, hash)) = action.value.as_deref().and_then(parse_value) else { continue };
                    let who = Identity(format!("slack:{user}"));
                    let via = format!("slack:{channel}");
                    let reply = match action.action_id.to_string().as_str() {
                        id @ ("approve" | "stop") => {
                            let decision = if id == "stop" { Decision::Stop } else { Decision::Approve };
                            let groups = self.groups(responders).await;
                            clicks.decide(incident, &hash, who, decision, &via, None, &groups).await?
                        }
                        "reject" => {
                            self.reject_modal(ev.trigger_id.as_ref(), incident, &hash, &channel).await;
                            None
                        }
                        "more_evidence" => clicks.more_evidence(incident).await?,
                        _ => None,
                    };
                    if let Some(r) = reply {
                        self.ephemeral(&channel, &user, &r).await;
                    }
                }
            }
            SlackInteractionEvent::ViewSubmission(ev) => {
                let view = serde_json::to_value(&ev.view)?;
                if view["view"]["callback_id"] != "medic_reject" && view["callback_id"] != "medic_reject" {
                    return Ok(());
                }
                let meta =
                    view["view"]["private_metadata"].as_str().or(view["private_metadata"].as_str()).unwrap_or("");
                let mut parts = meta.splitn(3, ':');
                let (Some(incident), Some(hash), Some(channel)) = (parts.next(), parts.next(), parts.next()) else {
                    return Ok(());
                };
                let Ok(incident) = incident.parse::<i64>() else { return Ok(()) };
                let state = &payload["view"]["state"]["values"]["reason"]["reason"]["value"];
                let reason = state.as_str().map(|s| cut(s, 2000));
                let user = ev.user.id.to_string();
                let groups = self.groups(responders).await;
                let who = Identity(format!("slack:{user}"));
                if let Some(r) = clicks
                    .decide(incident, hash, who, Decision::Reject, &format!("slack:{channel}"), reason, &groups)
                    .await?
                {
                    self.ephemeral(channel, &user, &r).await;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// A question found in an Events API payload: where, by whom, what, and in which thread.
#[derive(Debug, Clone, PartialEq)]
pub struct Asked {
    pub channel: String,
    pub user: String,
    pub text: String,
    /// The thread to answer in: the thread asked in, else the message itself (none in a DM).
    pub thread: Option<String>,
    /// The thread's root when the message was in a thread (to find its incident).
    pub root: Option<String>,
    /// Whether medic was addressed (a mention or a DM) rather than overheard in a thread.
    pub addressed: bool,
}

/// The question an `event_callback` carries, if it is one medic should consider: an
/// `app_mention`, a direct message, or a message in a thread. medic's own messages and bots',
/// edits and other subtypes, and messages that mention medic (their `app_mention` is the one
/// answered) are not.
pub fn asked(payload: &Value) -> Option<Asked> {
    if payload["type"] != "event_callback" {
        return None;
    }
    let ev = &payload["event"];
    let bot = payload["authorizations"][0]["user_id"].as_str();
    let set = |k: &str| ev[k].as_str().is_some_and(|s| !s.is_empty());
    if set("bot_id") || set("subtype") || (bot.is_some() && ev["user"].as_str() == bot) {
        return None;
    }
    let (channel, user, text, ts) =
        (ev["channel"].as_str()?, ev["user"].as_str()?, ev["text"].as_str()?, ev["ts"].as_str()?);
    let root = ev["thread_ts"].as_str().filter(|t| !t.is_empty() && *t != ts).map(str::to_string);
    let dm = ev["channel_type"] == "im";
    let (addressed, thread) = match ev["type"].as_str()? {
        "app_mention" => (true, Some(root.clone().unwrap_or_else(|| ts.to_string()))),
        "message" if dm => (true, root.clone()),
        // A mention arrives as `app_mention` too; only that one is answered.
        "message" if bot.is_some_and(|b| text.contains(&format!("<@{b}>"))) => return None,
        "message" if root.is_some() => (false, root.clone()),
        _ => return None,
    };
    Some(Asked { channel: channel.into(), user: user.into(), text: text.into(), thread, root, addressed })
}

/// The root message's `chat.postMessage` body for `view`, from the `incident` template.
pub fn root_body(templates: &handlebars::Handlebars, view: &IncidentView, channel: &str) -> anyhow::Result<String> {
    let rendered = templates.render("incident", &view.0)?;
    let mut msg: Value =
        serde_json::from_str(&rendered).map_err(|e| anyhow::anyhow!("the Slack template does not render JSON: {e}"))?;
    let blocks = msg["blocks"].as_array().cloned().unwrap_or_default();
    msg["blocks"] = Value::Array(checked_blocks(blocks)?);
    msg["channel"] = json!(channel);
    Ok(msg.to_string())
}

/// A button value `incident:plan_hash`.
fn parse_value(v: &str) -> Option<(i64, String)> {
    let (i, h) = v.split_once(':')?;
    let valid = super::is_plan_hash(h);
    Some((i.parse().ok()?, h.to_string())).filter(|_| valid)
}

#[async_trait]
impl Platform for Slack {
    fn channel_for(&self, labels: &Labels) -> String {
        super::route(&self.routes, &self.default_channel, labels)
    }

    fn root(&self, view: &IncidentView, channel: &str) -> anyhow::Result<String> {
        root_body(&self.templates, view, channel)
    }

    fn reply(&self, channel: &str, text: &str) -> String {
        json!({"channel": channel, "text": cut(&escape(text), 3000)}).to_string()
    }

    fn channels(&self) -> Vec<String> {
        super::route_channels(&self.routes, &self.default_channel)
    }

    /// `chat.getPermalink`: the workspace's own link to the message.
    async fn link(&self, channel: &str, root: &str) -> Option<String> {
        let v = self.call_form("chat.getPermalink", &[("channel", channel), ("message_ts", root)]).await.ok()?;
        v["permalink"].as_str().map(str::to_string)
    }
}

#[async_trait]
impl super::outbox::Destination for Slack {
    fn name(&self) -> &'static str {
        "slack"
    }

    async fn deliver(&self, row: &OutboxRow) -> Delivery {
        let Ok(mut body) = serde_json::from_str::<Value>(&row.item.body) else {
            return Delivery::Failed { error: "the queued body is not JSON".into() };
        };
        let method = match row.item.op.as_str() {
            "post" => {
                // An earlier attempt may have reached Slack before its replica died: look for
                // it (by the metadata every root carries) rather than post a second root.
                if row.attempts > 1
                    && let Some(ts) = self.posted_root(&row.item.channel, row.item.incident_id).await
                {
                    return Delivery::Sent { result: Some(ts) };
                }
                body["metadata"] = root_metadata(row.item.incident_id);
                "chat.postMessage"
            }
            "update" => {
                body["ts"] = json!(row.root);
                "chat.update"
            }
            "thread" => {
                body["thread_ts"] = json!(row.root);
                "chat.postMessage"
            }
            // A message of its own (the morning summary), in the channel.
            "message" => "chat.postMessage",
            other => return Delivery::Failed { error: format!("unknown op {other}") },
        };
        match self.call(method, &body).await {
            Ok(v) => Delivery::Sent { result: (row.item.op == "post").then(|| display(&v["ts"])) },
            Err(failed) => super::outbox::with_backoff(failed, row.attempts),
        }
    }
}

/// Slack message metadata on each root message: which incident it shows, so a retried post
/// can find an earlier one that reached Slack (Slack has no idempotency key).
fn root_metadata(incident: i64) -> Value {
    json!({"event_type": "medic_incident", "event_payload": {"incident_id": incident}})
}

/// What the Ticket button asks (the same order a person may type).
pub const TICKET_ORDER: &str = "open a ticket for this incident";

/// The lease that says which replica holds the Socket Mode connection.
pub const SOCKET_LEASE: &str = "slack-socket-mode";

/// Socket Mode: connects with the app token, acknowledges each envelope (a click once it is
/// stored, or after [`super::ACK_BUDGET`]; the rest at once), and handles interactive
/// payloads like HTTP ones. Reconnects (with backoff) when Slack asks or the
/// connection drops, until `stop`. Only the replica holding [`SOCKET_LEASE`] connects; the
/// others stand by and take over once it lapses ([`super::lease`]).
pub async fn socket_mode(
    slack: Arc<Slack>,
    clicks: Arc<Clicks>,
    asking: Arc<super::asking::Asking>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    use futures_util::{SinkExt, StreamExt};
    let Some(app_token) = slack.app_token.clone() else { return };
    let lease = super::lease::Lease {
        name: SOCKET_LEASE,
        me: clicks.executor.owner.clone(),
        store: clicks.store.clone(),
        clock: clicks.clock.clone(),
    };
    let mut failures = 0i64;
    loop {
        if !lease.acquire("Slack Socket Mode connection", &mut stop).await {
            return;
        }
        let url = async {
            let resp = slack
                .http
                .post(slack.api.join("apps.connections.open").map_err(|e| e.to_string())?)
                .bearer_auth(app_token.expose())
                .send()
                .await
                .map_err(|e| e.without_url().to_string())?;
            let v: Value = resp.json().await.map_err(|e| e.to_string())?;
            v["url"]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("apps.connections.open: {}", display(&v["error"])))
        };
        let session = async {
            let url = url.await?;
            let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str()).await.map_err(|e| e.to_string())?;
            tracing::info!("Slack Socket Mode connected");
            // Acknowledgements of clicks, sent once each is stored (or after the budget).
            let (acks, mut acked) = tokio::sync::mpsc::unbounded_channel::<String>();
            loop {
                let msg = tokio::select! {
                    Some(ack) = acked.recv() => {
                        ws.send(tokio_tungstenite::tungstenite::Message::Text(ack.into()))
                            .await
                            .map_err(|e| e.to_string())?;
                        continue;
                    }
                    msg = ws.next() => msg,
                };
                let Some(msg) = msg else { break };
                let msg = msg.map_err(|e| e.to_string())?;
                let tokio_tungstenite::tungstenite::Message::Text(text) = msg else { continue };
                let Ok(env) = serde_json::from_str::<Value>(text.as_str()) else { continue };
                let ack = env["envelope_id"].as_str().map(|id| json!({"envelope_id": id}).to_string());
                let interactive = env["type"] == "interactive";
                if let (Some(ack), false) = (&ack, interactive) {
                    ws.send(tokio_tungstenite::tungstenite::Message::Text(ack.clone().into()))
                        .await
                        .map_err(|e| e.to_string())?;
                }
                match env["type"].as_str() {
                    Some("interactive") => {
                        let (slack, clicks, asking, payload) =
                            (slack.clone(), clicks.clone(), asking.clone(), env["payload"].clone());
                        let handling = tokio::spawn(async move {
                            if let Err(e) = slack.interaction(&payload, &clicks, &asking).await {
                                tracing::warn!(error = %format!("{e:#}"), "Slack interaction failed");
                            }
                        });
                        // As over HTTP: the click is stored before Slack hears the answer.
                        let acks = acks.clone();
                        tokio::spawn(async move {
                            let _ = tokio::time::timeout(super::ACK_BUDGET, handling).await;
                            if let Some(ack) = ack {
                                let _ = acks.send(ack);
                            }
                        });
                    }
                    Some("events_api") => {
                        let (slack, asking, payload) = (slack.clone(), asking.clone(), env["payload"].clone());
                        tokio::spawn(async move {
                            if let Err(e) = slack.event(&payload, &asking).await {
                                tracing::warn!(error = %format!("{e:#}"), "Slack event failed");
                            }
                        });
                    }
                    Some("slash_commands") => {
                        let form: HashMap<String, String> = env["payload"]
                            .as_object()
                            .into_iter()
                            .flatten()
                            .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                            .collect();
                        let (slack, asking) = (slack.clone(), asking.clone());
                        tokio::spawn(async move { slack.command(&form, &asking).await });
                    }
                    Some("disconnect") => return Ok::<(), String>(()),
                    _ => {}
                }
            }
            Ok(())
        };
        tokio::select! {
            r = session => match r {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = %e, "Slack Socket Mode connection failed");
                }
            },
            why = lease.keep() => tracing::warn!(reason = why, "Slack Socket Mode connection closed"),
            _ = stop.changed() => return lease.release().await,
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(if failures == 0 { 1000 } else { super::outbox::backoff(failures) as u64 })) => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_with_a_pointer_to_the_thread() {
        assert_eq!(cut("short", 10), "short");
        let long = "x".repeat(4000);
        let c = cut(&long, 3000);
        assert!(c.chars().count() <= 3000 && c.ends_with(MORE));
    }

    #[test]
    fn oversized_content_is_cut_and_still_valid_block_kit() {
        let evidence: Vec<Value> = (0..200)
            .map(|i| json!({"kind": "log", "text": format!("line {i} <b>&</b> {}", "x".repeat(80)), "at": null}))
            .collect();
        let view = json!({
            "incident": {"id": 7, "title": "T".repeat(400), "state": "open", "severity": "critical"},
            "service": "checkout", "services": "checkout", "onset": "2026-11-21T10:00:00Z",
            "top": {"statement": "s".repeat(5000), "confidence": 75, "runbook": "r", "tier": 3, "evidence": evidence},
            "unavailable": [], "plan": null, "no_plan": "none", "paused": null, "decision": null,
            "buttons": false, "resolved": false,
        });
        let rendered = templates().unwrap().render("incident", &view).unwrap();
        let msg: Value = serde_json::from_str(&rendered).unwrap();
        let blocks = checked_blocks(msg["blocks"].as_array().unwrap().clone()).unwrap();
        let texts: Vec<String> = blocks.iter().filter_map(|b| b["text"]["text"].as_str().map(str::to_string)).collect();
        assert!(texts.iter().all(|t| t.chars().count() <= 3000), "every text within Slack's limit");
        assert!(texts[0].chars().count() <= 150 && texts[0].ends_with(MORE), "the header: {}", texts[0]);
        let ev = texts.iter().find(|t| t.starts_with("*Evidence*")).unwrap();
        assert!(ev.ends_with(MORE) && ev.contains("&lt;b&gt;&amp;&lt;/b&gt;"), "cut, and escaped for Slack");
        let many: Vec<Value> = (0..80).map(|_| json!({"type": "divider"})).collect();
        let kept = checked_blocks(many).unwrap();
        assert_eq!(kept.len(), 50);
        assert_eq!(kept[49]["elements"][0]["text"], MORE);
        assert!(checked_blocks(vec![json!({"type": "section", "text": 5})]).is_err(), "not Block Kit");
    }

    /// A plan that runs by itself says why and when, and offers Stop (with a confirm); a plan
    /// that only suggests offers no Approve.
    #[test]
    fn an_automatic_plan_shows_why_and_a_stop_button() {
        let h = "a".repeat(64);
        let mut view = json!({
            "incident": {"id": 7, "title": "T", "state": "open", "severity": "critical"},
            "service": "checkout", "services": "checkout", "onset": "2026-11-21T10:00:00Z",
            "top": {"statement": "s", "confidence": 75, "runbook": "r", "tier": 2, "evidence": []},
            "unavailable": [], "no_plan": "", "paused": null, "decision": null, "resolved": false,
            "plan": {"short_hash": &h[..12], "hash": h, "expected_impact": "", "steps": [], "min_approvers": 1,
                     "groups": "sre", "expires": null},
            "buttons": true, "can_approve": true, "stop": true,
            "auto": {"runs_itself": true, "why": "running automatically: 5 verified runs under approval in a row",
                     "runs_at": "2026-11-21T10:01:00Z"},
        });
        let render = |v: &Value| -> Vec<Value> {
            let msg: Value = serde_json::from_str(&templates().unwrap().render("incident", v).unwrap()).unwrap();
            checked_blocks(msg["blocks"].as_array().unwrap().clone()).unwrap()
        };
        let blocks = render(&view);
        let text = serde_json::to_string(&blocks).unwrap();
        assert!(
            text.contains(
                "running automatically: 5 verified runs under approval in a row; first step at 2026-11-21T10:01:00Z"
            ),
            "{text}"
        );
        let ids: Vec<&str> = blocks
            .iter()
            .flat_map(|b| b["elements"].as_array().into_iter().flatten())
            .filter_map(|e| e["action_id"].as_str())
            .collect();
        assert_eq!(ids, ["stop", "approve", "reject", "more_evidence"]);
        view["can_approve"] = json!(false);
        view["stop"] = json!(false);
        view["auto"] = Value::Null;
        let blocks = render(&view);
        let ids: Vec<&str> = blocks
            .iter()
            .flat_map(|b| b["elements"].as_array().into_iter().flatten())
            .filter_map(|e| e["action_id"].as_str())
            .collect();
        assert_eq!(ids, ["reject", "more_evidence"], "a suggest-only plan has no Approve");
    }

    fn slack() -> Slack {
        let dir = std::env::temp_dir();
        let path = dir.join(format!("medic-slack-secret-{}", std::process::id()));
        std::fs::write(&path, "8f742231b10e8888abcd99yyyzzz85a5").unwrap();
        let yaml = format!(
            "bot_token: {{file: {p}}}\nsigning_secret: [{{file: {p}}}]\ndefault_channel: C1\n",
            p = path.display()
        );
        let cfg: Config = serde_norway::from_str(&yaml).unwrap();
        let s = Slack::new(&cfg, Duration::from_secs(1)).unwrap();
        let _ = std::fs::remove_file(path);
        s
    }

    /// Slack's documented signing example (../shared/conformance/README.md): accepted as is,
    /// refused with any byte changed or once it is stale.
    #[test]
    fn the_documented_signing_example_verifies() {
        let body = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        let mut h = axum::http::HeaderMap::new();
        h.insert("x-slack-request-timestamp", "1531420618".parse().unwrap());
        h.insert(
            "x-slack-signature",
            "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503".parse().unwrap(),
        );
        let s = slack();
        assert_eq!(s.verify_at(&h, body.as_bytes(), 1_531_420_620), Ok(()));
        assert!(s.verify_at(&h, body.replace("roadrunner", "roadrunnes").as_bytes(), 1_531_420_620).is_err());
        assert!(s.verify_at(&h, body.as_bytes(), 1_531_420_618 + 301).unwrap_err().contains("5 minutes"));
        // The slash command it signs parses into the fields `/medic` reads.
        let form: HashMap<String, String> = url::form_urlencoded::parse(body.as_bytes()).into_owned().collect();
        assert_eq!((form["user_id"].as_str(), form["channel_id"].as_str()), ("U2CERLKJA", "G8PSS9T3V"));
    }

    fn sample(name: &str, fill: &[(&str, &str)]) -> Value {
        let path = format!("{}/tests/fixtures/slack/java-slack-sdk/{name}", env!("CARGO_MANIFEST_DIR"));
        let mut v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        v["type"] = json!("event_callback");
        v["authorizations"][0]["user_id"] = json!("UMEDIC");
        for (k, x) in fill {
            v["event"][*k] = json!(x);
        }
        v
    }

    /// Slack's Java SDK samples (every field Slack may send): a mention and a thread message
    /// are questions; a bot's message and an edit are not; the slash command's fields parse.
    #[test]
    fn payloads_written_elsewhere_are_read() {
        let fill = [("user", "U1"), ("channel", "C1"), ("text", "<@UMEDIC> what changed?"), ("ts", "2.0")];
        let q = asked(&sample("AppMentionPayload.json", &fill)).expect("a mention is a question");
        assert_eq!((q.channel.as_str(), q.thread.as_deref(), q.addressed), ("C1", Some("2.0"), true));
        let in_thread =
            [("user", "U1"), ("channel", "C1"), ("text", "what changed?"), ("ts", "2.0"), ("thread_ts", "1.0")];
        let q = asked(&sample("MessagePayload.json", &in_thread)).expect("a thread message is considered");
        assert_eq!((q.root.as_deref(), q.addressed), (Some("1.0"), false));
        let mut mention = in_thread.to_vec();
        mention[2] = ("text", "<@UMEDIC> status");
        assert_eq!(asked(&sample("MessagePayload.json", &mention)), None, "the app_mention of it is answered");
        let mut own = in_thread.to_vec();
        own[0] = ("user", "UMEDIC");
        assert_eq!(asked(&sample("MessagePayload.json", &own)), None, "medic's own message");
        assert_eq!(asked(&sample("MessageBotPayload.json", &in_thread)), None, "a bot's message");
        assert_eq!(asked(&sample("MessageChangedPayload.json", &in_thread)), None, "an edit");
        let path =
            format!("{}/tests/fixtures/slack/java-slack-sdk/SlashCommandPayload.json", env!("CARGO_MANIFEST_DIR"));
        let cmd: HashMap<String, Value> = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert!(cmd.contains_key("user_id") && cmd.contains_key("channel_id") && cmd.contains_key("text"));
    }

    #[test]
    fn button_values_are_strict() {
        let h = "a".repeat(64);
        assert_eq!(parse_value(&format!("7:{h}")), Some((7, h.clone())));
        assert_eq!(parse_value("7:zz"), None);
        assert_eq!(parse_value(&format!("x:{h}")), None);
    }
}
