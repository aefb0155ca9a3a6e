//! Mattermost (server 9 and later): the same incident experience as Slack and Discord, over
//! Mattermost's REST API v4, its interactive message buttons and dialogs, a `/medic` slash
//! command, and its WebSocket ([`websocket`]) for @mentions and thread replies.
//!
//! - **Out**: `templates/mattermost/incident.hbs` renders the shared [`IncidentView`] as a
//!   Markdown line and one message attachment (colour by severity and state, fields for the
//!   hypothesis, evidence and plan) with its buttons. Every text from alerts is escaped for
//!   Mattermost's Markdown first ([`escape`]: no mention, no disguised link, no markup). The
//!   outbox delivers it: `POST /api/v4/posts`, then `PUT /api/v4/posts/{id}/patch` on each
//!   change; details and progress are replies in its thread (`root_id`); a chart is a file
//!   upload. A 429 waits for its `Retry-After` (or `X-Ratelimit-Reset`).
//! - **Buttons** ([`inbound`]): each action's integration URL is medic's
//!   (`{callback_url}/mattermost/actions`) and its `context` is signed by medic (an HMAC of the
//!   action, incident, plan and a timestamp): Mattermost does not sign what it sends, so medic
//!   accepts only actions it made, within `action_window`, from the Mattermost server's
//!   addresses, on the incident's own post, by a member of the post's channel.
//! - **Questions**: the `/medic` slash command (its token checked), the Ask button (a dialog),
//!   and over the WebSocket @mentions, DMs and questions in an incident's thread — each
//!   answered once, in the thread, never acted on unless addressed.

use super::{IncidentView, Platform, cut, display};
use crate::alert::Labels;
use crate::approval::{Groups, Identity};
use crate::secret::Secret;
use crate::store::{Delivery, OutboxRow};
use async_trait::async_trait;
use handlebars::handlebars_helper;
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::Duration;

pub mod inbound;
pub mod websocket;

/// The `mattermost` section of the config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The Mattermost server, e.g. `https://chat.example.com` (REST under `/api/v4`, the
    /// WebSocket at `/api/v4/websocket`).
    pub url: String,
    /// The bot account's access token.
    pub bot_token: crate::secret::SecretRef,
    /// Where Mattermost reaches medic (its base URL as Mattermost sees it): buttons post to
    /// `{callback_url}/mattermost/actions`, dialogs to `{callback_url}/mattermost/dialogs`.
    pub callback_url: String,
    /// The `/medic` slash command's token (Integrations → Slash Commands); without it the
    /// command endpoint refuses every request.
    #[serde(default)]
    pub command_token: Option<crate::secret::SecretRef>,
    /// The key that signs the buttons' context (the same on every replica). Default: derived
    /// from the bot token, so rotating the token retires the buttons of posts not updated since.
    #[serde(default)]
    pub action_secret: Option<crate::secret::SecretRef>,
    /// How long a button works after its post was last rendered (each change renders it anew).
    #[serde(default = "one_day", with = "humantime_serde")]
    pub action_window: Duration,
    /// The addresses (IPs or CIDRs) buttons, dialogs and the command may come from. Default: the
    /// addresses `url`'s host resolves to (looked up again every 5 minutes).
    #[serde(default)]
    pub allowed_sources: Vec<String>,
    /// Hold the WebSocket (one replica, by lease) for @mentions, DMs and thread questions.
    #[serde(default = "yes")]
    pub websocket: bool,
    /// Where incidents go when no route matches (a channel id).
    pub default_channel: String,
    #[serde(default)]
    pub routes: Vec<crate::chat::Route>,
    /// How long a Mattermost group's members (`mattermost:group:…` in responders) are cached.
    #[serde(default = "one_minute", with = "humantime_serde")]
    pub group_ttl: Duration,
}

fn one_day() -> Duration {
    Duration::from_secs(24 * 3600)
}

fn one_minute() -> Duration {
    Duration::from_secs(60)
}

fn yes() -> bool {
    true
}

pub const INCIDENT_TEMPLATE: &str = include_str!("../../../templates/mattermost/incident.hbs");
pub const ANSWER_TEMPLATE: &str = include_str!("../../../templates/mattermost/answer.hbs");

/// Mattermost's limit on a post's message (runes).
pub const MAX_MESSAGE: usize = 16_383;

handlebars_helper!(hb_colour: |state: Json, severity: Json, decision: Json| {
    // A JSON string, as the template writes it unquoted.
    Value::String(format!("\"#{:06x}\"", super::colour(state, severity, decision)))
});

/// The registry for Mattermost templates: the shared helpers, `text` and `colour`.
pub fn templates() -> anyhow::Result<handlebars::Handlebars<'static>> {
    let mut hb = super::templates_with_helpers();
    super::register_json_text(&mut hb);
    hb.register_helper("colour", Box::new(hb_colour));
    hb.register_template_string("incident", INCIDENT_TEMPLATE)?;
    hb.register_template_string("answer", ANSWER_TEMPLATE)?;
    Ok(hb)
}

/// `s` shown as written in Mattermost's Markdown: every character that starts markup
/// (emphasis, code, strikethrough, tables, links `[label](url)` and `<url>`, images) is
/// backslash-escaped, as are headings, quotes and lists at the start of a line; and an `@`
/// is followed by a zero-width space, so `@channel`, `@here`, `@all` and `@someone` in an alert
/// notify no one (Mattermost finds mentions in the raw text, where a backslash would not stop it).
pub fn escape(s: &str) -> String {
    let anywhere = ['\\', '*', '_', '~', '`', '|', '[', ']', '(', ')', '<', '>', '!', '$'];
    super::backslash_escape(s, &anywhere, &['#', '-', '+', '=']).replace('@', "@\u{200B}")
}

/// `v` with every string in it escaped ([`escape`]): what a template renders.
fn escaped(v: &Value) -> Value {
    super::escaped_with(v, escape)
}

/// A button as the template names it; the adapter adds its integration.
#[derive(Deserialize)]
struct Button {
    id: String,
    name: String,
    style: String,
}

/// The incident's post for `view` in `channel`: `{channel_id, message, props: {attachments}}`,
/// each button's integration pointing at `actions_url` with a context `sign` makes for it
/// (action, incident, plan hash). The same body serves the post and its patches.
pub fn root_body(
    templates: &handlebars::Handlebars,
    view: &IncidentView,
    channel: &str,
    actions_url: &str,
    sign: impl Fn(&str, i64, &str) -> Value,
) -> anyhow::Result<String> {
    let rendered = templates.render("incident", &escaped(&view.0))?;
    let v: Value = serde_json::from_str(&rendered)
        .map_err(|e| anyhow::anyhow!("the Mattermost template does not render JSON: {e}"))?;
    let buttons: Vec<Button> = serde_json::from_value(v["actions"].clone())
        .map_err(|e| anyhow::anyhow!("the Mattermost template's actions: {e}"))?;
    let incident = view.0["incident"]["id"].as_i64().unwrap_or_default();
    let plan = view.0["plan"]["hash"].as_str().unwrap_or_default();
    let actions: Vec<Value> = buttons
        .iter()
        .map(|b| {
            if b.id.is_empty() || !b.id.chars().all(|c| c.is_ascii_alphanumeric()) {
                anyhow::bail!("a Mattermost action id must be letters and digits: {:?}", b.id);
            }
            Ok(json!({"id": b.id, "type": "button", "name": cut(&b.name, 40), "style": b.style,
                      "integration": {"url": actions_url, "context": sign(&b.id, incident, plan)}}))
        })
        .collect::<anyhow::Result<_>>()?;
    let mut attachment = v["attachment"].clone();
    if !attachment.is_object() {
        anyhow::bail!("the Mattermost template renders no attachment");
    }
    attachment["actions"] = Value::Array(actions);
    Ok(json!({
        "channel_id": channel,
        "message": cut(v["message"].as_str().unwrap_or_default(), MAX_MESSAGE),
        "props": {"attachments": [attachment]},
    })
    .to_string())
}

pub struct Mattermost {
    /// `{url}/api/v4/`.
    api: reqwest::Url,
    /// The server's base URL, for the WebSocket and the default allowed sources.
    pub url: reqwest::Url,
    token: Secret,
    command_token: Option<Secret>,
    /// The key of the buttons' context HMAC.
    action_key: Secret,
    pub action_window: Duration,
    callback: String,
    allowed: inbound::Sources,
    pub websocket: bool,
    /// The WebSocket connection as `/readyz` shows it.
    pub health: websocket::Health,
    default_channel: String,
    routes: Vec<super::Route>,
    groups: super::GroupCache,
    /// The bot's own user id and username (`GET /users/me`), once known.
    me: tokio::sync::OnceCell<(String, String)>,
    http: reqwest::Client,
    templates: handlebars::Handlebars<'static>,
}

impl Mattermost {
    pub fn new(cfg: &Config, timeout: Duration) -> Result<Mattermost, String> {
        let url = reqwest::Url::parse(&cfg.url).map_err(|e| format!("mattermost.url: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(format!("mattermost.url: {:?} is not an http(s) URL with a host", cfg.url));
        }
        let base = url.as_str().trim_end_matches('/');
        let api = reqwest::Url::parse(&format!("{base}/api/v4/")).map_err(|e| format!("mattermost.url: {e}"))?;
        let callback = cfg.callback_url.trim_end_matches('/').to_string();
        if let Some(e) = crate::config::http_url("mattermost.callback_url", &callback) {
            return Err(e);
        }
        let token = cfg.bot_token.resolve().map_err(|e| format!("mattermost.bot_token: {e}"))?;
        let command_token = cfg
            .command_token
            .as_ref()
            .map(|t| t.resolve().map_err(|e| format!("mattermost.command_token: {e}")))
            .transpose()?;
        let action_key = match &cfg.action_secret {
            Some(s) => s.resolve().map_err(|e| format!("mattermost.action_secret: {e}"))?,
            None => Secret::new(hex::encode(inbound::mac(token.expose().as_bytes(), b"medic mattermost actions v1"))),
        };
        if cfg.action_window.is_zero() {
            return Err("mattermost.action_window: must be longer than zero".into());
        }
        let allowed = inbound::Sources::new(&cfg.allowed_sources, &url)?;
        let http = crate::telemetry::http_client_builder().timeout(timeout).build().map_err(|e| e.to_string())?;
        Ok(Mattermost {
            api,
            url,
            token,
            command_token,
            action_key,
            action_window: cfg.action_window,
            callback,
            allowed,
            websocket: cfg.websocket,
            health: websocket::Health::default(),
            default_channel: cfg.default_channel.clone(),
            routes: cfg.routes.clone(),
            groups: super::GroupCache::new(cfg.group_ttl),
            me: tokio::sync::OnceCell::new(),
            http,
            templates: templates().map_err(|e| format!("Mattermost templates: {e}"))?,
        })
    }

    /// Where buttons send their actions.
    fn actions_url(&self) -> String {
        format!("{}/mattermost/actions", self.callback)
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Result<Value, Delivery> {
        self.call_with(method, path, |r| match body {
            Some(b) => r.json(b),
            None => r,
        })
        .await
    }

    /// One REST call: a 429 waits for its `Retry-After`; an outage, a 5xx and refused
    /// credentials are retried with backoff (never a reason to drop a message); another 4xx is
    /// refused for good, with Mattermost's `message`.
    async fn call_with(
        &self,
        method: reqwest::Method,
        path: &str,
        body: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<Value, Delivery> {
        let url = self.api.join(path).map_err(|e| Delivery::Failed { error: e.to_string() })?;
        let resp = body(self.http.request(method, url).bearer_auth(self.token.expose())).send().await.map_err(|e| {
            Delivery::Retry { after_ms: 0, error: format!("Mattermost unreachable: {}", e.without_url()) }
        })?;
        let status = resp.status();
        let wait = super::outbox::retry_after(resp.headers()).or_else(|| {
            let reset = resp.headers().get("x-ratelimit-reset")?.to_str().ok()?.parse::<i64>().ok()?;
            Some(reset.saturating_mul(1000).clamp(1, 3_600_000))
        });
        let text = resp.text().await.unwrap_or_default();
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let path = path.split('?').next().unwrap_or(path);
        super::outbox::answered(status, wait, path, &v, &text)?;
        Ok(v)
    }

    /// The bot's user id and username (`GET /users/me`, asked once).
    pub async fn me(&self) -> Result<&(String, String), String> {
        self.me
            .get_or_try_init(|| async {
                let v = self.call(reqwest::Method::GET, "users/me", None).await.map_err(|e| format!("{e:?}"))?;
                match (v["id"].as_str(), v["username"].as_str()) {
                    (Some(id), Some(name)) => Ok((id.to_string(), name.to_string())),
                    _ => Err("GET /users/me answered no id and username".to_string()),
                }
            })
            .await
    }

    /// Members (`mattermost:USER_ID`) of each responders' group, with `mattermost:group:G`
    /// entries expanded through `GET /groups/{G}/members` (cached for `group_ttl`).
    pub async fn groups(&self, responders: &crate::approval::Responders) -> Groups {
        self.groups.expand(responders, "mattermost", |id| self.group_members(id)).await
    }

    /// A group's member ids, page by page; `None` when Mattermost does not answer.
    async fn group_members(&self, id: String) -> Option<Vec<String>> {
        let mut users = Vec::new();
        for page in 0..50 {
            let path = format!("groups/{id}/members?page={page}&per_page=200");
            match self.call(reqwest::Method::GET, &path, None).await {
                Ok(v) => {
                    let members = v["members"].as_array().cloned().unwrap_or_default();
                    users.extend(members.iter().filter_map(|u| u["id"].as_str().map(str::to_string)));
                    if members.len() < 200 {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(group = id, ?e, "cannot list a Mattermost group; its members cannot approve now");
                    return None;
                }
            }
        }
        Some(users)
    }

    /// Whether `user` is a member of `channel` (`GET /channels/{c}/members/{u}`): a click's
    /// `user_id` is Mattermost's word, checked against the channel of the post it names.
    async fn in_channel(&self, channel: &str, user: &str) -> Result<bool, String> {
        if !is_id(channel) || !is_id(user) {
            return Ok(false);
        }
        match self.call(reqwest::Method::GET, &format!("channels/{channel}/members/{user}"), None).await {
            Ok(v) => Ok(v["user_id"] == user),
            Err(Delivery::Failed { error }) if error.contains("HTTP 404") => Ok(false),
            Err(e) => Err(format!("{e:?}")),
        }
    }

    /// A question from `user` in `channel`.
    async fn question(
        &self,
        asking: &super::asking::Asking,
        text: &str,
        incident: Option<i64>,
        user: &str,
        channel: &str,
        addressed: bool,
    ) -> super::asking::Question {
        super::asking::Question {
            text: text.to_string(),
            incident,
            who: Identity(format!("mattermost:{user}")),
            via: format!("mattermost:{channel}"),
            groups: self.groups(&asking.responders).await,
            addressed,
        }
    }

    /// Posts `answer` in `channel`, in the thread `root` when given; only to `user` (an
    /// ephemeral post) when it is private. A chart is uploaded and attached.
    pub async fn answer(&self, channel: &str, root: Option<&str>, user: &str, answer: &super::asking::Reply) {
        let sent = async {
            let mut post = json!({"channel_id": channel, "message": self.answer_message(answer)?});
            if let Some(root) = root {
                post["root_id"] = json!(root);
            }
            if answer.private {
                return self.ephemeral_post(user, post).await;
            }
            if let Some((title, png)) = answer.chart.clone() {
                match self.upload(channel, &title, png).await {
                    Ok(id) => post["file_ids"] = json!([id]),
                    Err(e) => tracing::warn!(error = %e, "could not upload a chart to Mattermost"),
                }
            }
            self.call(reqwest::Method::POST, "posts", Some(&post)).await.map(drop).map_err(|e| anyhow::anyhow!("{e:?}"))
        };
        if let Err(e) = sent.await {
            tracing::warn!(error = %format!("{e:#}"), "could not post an answer on Mattermost");
        }
    }

    /// The Markdown of `answer`, from the `answer` template.
    pub fn answer_message(&self, answer: &super::asking::Reply) -> anyhow::Result<String> {
        let v: Value = serde_json::from_str(&self.templates.render("answer", &escaped(&answer.view))?)?;
        Ok(cut(v["message"].as_str().unwrap_or_default(), MAX_MESSAGE))
    }

    /// `text` shown only to `user` in `channel` (in `root`'s thread when given).
    pub async fn ephemeral(&self, channel: &str, root: Option<&str>, user: &str, text: &str) {
        let mut post = json!({"channel_id": channel, "message": cut(&escape(text), 4000)});
        if let Some(root) = root {
            post["root_id"] = json!(root);
        }
        if let Err(e) = self.ephemeral_post(user, post).await {
            tracing::warn!(error = %format!("{e:#}"), "could not send an ephemeral message on Mattermost");
        }
    }

    /// An ephemeral post for `user`; where the bot may not make one (Mattermost gives
    /// `create_post_ephemeral` only to system admins unless granted), a direct message instead.
    async fn ephemeral_post(&self, user: &str, post: Value) -> anyhow::Result<()> {
        let body = json!({"user_id": user, "post": post});
        match self.call(reqwest::Method::POST, "posts/ephemeral", Some(&body)).await {
            Ok(_) => Ok(()),
            Err(Delivery::Retry { error, .. }) if error.contains("HTTP 403") => {
                let me = self.me().await.map_err(anyhow::Error::msg)?.0.clone();
                let dm = self
                    .call(reqwest::Method::POST, "channels/direct", Some(&json!([me, user])))
                    .await
                    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
                let message = json!({"channel_id": dm["id"], "message": post["message"]});
                self.call(reqwest::Method::POST, "posts", Some(&message))
                    .await
                    .map(drop)
                    .map_err(|e| anyhow::anyhow!("{e:?}"))
            }
            Err(e) => Err(anyhow::anyhow!("{e:?}")),
        }
    }

    /// Uploads a PNG to `channel` (`POST /files`); its file id.
    async fn upload(&self, channel: &str, title: &str, png: Vec<u8>) -> anyhow::Result<String> {
        let name = format!("{}.png", title.chars().filter(|c| c.is_ascii_alphanumeric()).take(40).collect::<String>());
        let part = reqwest::multipart::Part::bytes(png).file_name(name).mime_str("image/png")?;
        let form = reqwest::multipart::Form::new().text("channel_id", channel.to_string()).part("files", part);
        let v = self
            .call_with(reqwest::Method::POST, "files", |r| r.multipart(form))
            .await
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        v["file_infos"][0]["id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow::anyhow!("POST /files gave no file id"))
    }

    /// The root post of `incident` in `channel`, if medic posted one.
    async fn root_of(&self, store: &dyn crate::store::Store, incident: i64, channel: &str) -> Option<String> {
        let sent = store.outbox_sent("mattermost", "post", 500).await.ok()?;
        for (_, id, post) in sent.into_iter().filter(|(_, i, _)| *i == incident) {
            if store.incident_for_message("mattermost", Some(channel), &post).await.ok()? == Some(id) {
                return Some(post);
            }
        }
        None
    }
}

/// Whether `s` has the shape of a Mattermost id (26 lowercase letters and digits): an id from a
/// request goes into a REST path only then.
pub fn is_id(s: &str) -> bool {
    s.len() == 26 && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
}

#[async_trait]
impl Platform for Mattermost {
    fn channel_for(&self, labels: &Labels) -> String {
        super::route(&self.routes, &self.default_channel, labels)
    }

    fn root(&self, view: &IncidentView, channel: &str) -> anyhow::Result<String> {
        let now = chrono::Utc::now().timestamp();
        root_body(&self.templates, view, channel, &self.actions_url(), |action, incident, plan| {
            inbound::Signed::new(action, incident, plan, now).sealed(&self.action_key)
        })
    }

    fn reply(&self, channel: &str, text: &str) -> String {
        json!({"channel_id": channel, "message": cut(&escape(text), MAX_MESSAGE)}).to_string()
    }

    fn channels(&self) -> Vec<String> {
        super::route_channels(&self.routes, &self.default_channel)
    }

    /// `{url}/_redirect/pl/{post}`: Mattermost's permalink that finds the post's team.
    async fn link(&self, _channel: &str, root: &str) -> Option<String> {
        Some(format!("{}/_redirect/pl/{root}", self.url.as_str().trim_end_matches('/')))
    }

    fn connection(&self) -> Option<(&'static str, Value)> {
        let state = self.health.to_json();
        (!state.is_null()).then_some(("mattermost_websocket", state))
    }
}

#[async_trait]
impl super::outbox::Destination for Mattermost {
    fn name(&self) -> &'static str {
        "mattermost"
    }

    async fn deliver(&self, row: &OutboxRow) -> Delivery {
        let Ok(mut body) = serde_json::from_str::<Value>(&row.item.body) else {
            return Delivery::Failed { error: "the queued body is not JSON".into() };
        };
        let root = row.root.clone().unwrap_or_default();
        let result = match row.item.op.as_str() {
            // The incident's post: a retry within 30 s of an attempt whose answer was lost gets
            // the post Mattermost already made (its `pending_post_id` deduplication).
            "post" => {
                body["pending_post_id"] = json!(format!("medic-{}-{}", row.item.incident_id, row.id));
                self.call(reqwest::Method::POST, "posts", Some(&body)).await
            }
            // A message of its own (the morning summary).
            "message" => self.call(reqwest::Method::POST, "posts", Some(&body)).await,
            "update" => {
                let patch = json!({"message": body["message"], "props": body["props"]});
                self.call(reqwest::Method::PUT, &format!("posts/{root}/patch"), Some(&patch)).await
            }
            "thread" => {
                body["root_id"] = json!(root);
                self.call(reqwest::Method::POST, "posts", Some(&body)).await
            }
            other => return Delivery::Failed { error: format!("unknown op {other}") },
        };
        match result {
            Ok(v) => Delivery::Sent { result: (row.item.op == "post").then(|| display(&v["id"])) },
            Err(failed) => super::outbox::with_backoff(failed, row.attempts),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alert_text_is_no_markup_and_mentions_no_one() {
        let hostile = "[Log in again](https://evil.example/login) **now** @channel @here @alice ~town `x` <https://a>\n# big\n> quote\n- item";
        let e = escape(hostile);
        assert!(!e.contains("[Log in again](") && !e.contains("**now**"), "{e}");
        for m in ["@channel", "@here", "@alice"] {
            assert!(!e.contains(m), "{m} in {e}");
        }
        assert_eq!(e.replace(['\\', '\u{200B}'], ""), hostile, "nothing but escapes added");
    }

    #[test]
    fn ids_are_strict() {
        assert!(is_id("rd49ehbqyjytddasoownkuqrxe"));
        assert!(!is_id("rd49ehbqyjytddasoownkuqrx/"));
        assert!(!is_id("../users/me"));
    }
}
