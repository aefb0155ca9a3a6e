//! Discord: the same incident experience as Slack, over Discord's REST API, with interactions
//! and messages arriving over the Gateway ([`gateway`]: `discord.mode: gateway`, no public URL
//! needed, @mentions and thread questions answered) or the HTTP interactions endpoint
//! (`discord.mode: http`, several replicas behind a load balancer, commands and buttons only).
//!
//! - **Out**: `templates/discord/incident.hbs` renders the shared [`IncidentView`] as an embed
//!   (colour by severity and state) and its buttons; the embed is parsed into serenity's
//!   `Embed` model, held to the limits serenity does not check (title and field name 256,
//!   field value 1024, description 4096, 25 fields, 5 buttons per row, label 80, `custom_id`
//!   100; longer text ends "… see thread"), and the message is built with serenity's
//!   `CreateMessage` / `EditMessage`. The outbox delivers it: `POST /channels/{id}/messages`,
//!   then `PATCH` on each change; replies go to a thread started on the message. A 429 waits
//!   its `retry_after`.
//! - **In**: `POST /discord/interactions`, Ed25519-verified (serenity's verifier) plus our own
//!   5-minute window on `X-Signature-Timestamp` (the verifier does not check age). PING →
//!   PONG. A button is decided and stored before the answer (for up to a budget; Discord
//!   allows 3 s); a refusal is the answer, ephemeral (flag 64), or a follow-up past the budget.
//!   Reject opens a modal asking why.
//! - **Questions**: the `/medic` application command (`ask question:…`, `status`, `pause`,
//!   `resume`, `help`), registered at start by bulk overwrite (a restart replaces, never
//!   duplicates), and the "Ask" button on every incident message, which opens a modal. Each is
//!   deferred at once and answered by editing the deferred response
//!   (`PATCH /webhooks/{app}/{token}/messages/@original`) from `templates/discord/answer.hbs`;
//!   `pause` and `resume` are deferred ephemeral, so a refusal is seen only by the asker.

use super::clicks::Clicks;
use super::{IncidentView, MORE, Platform, cut, display};
use crate::alert::Labels;
use crate::approval::{Decision, Groups, Identity};
use crate::secret::Secret;
use crate::store::{Delivery, OutboxRow};
use async_trait::async_trait;
use handlebars::handlebars_helper;
use serde::Deserialize;
use serde_json::{Value, json};
use serenity::builder::{
    CreateActionRow, CreateAllowedMentions, CreateButton, CreateEmbed, CreateInputText, CreateInteractionResponse,
    CreateInteractionResponseFollowup, CreateMessage, CreateModal, EditMessage,
};
use serenity::model::application::{ButtonStyle, InputTextStyle};
use std::sync::Arc;
use std::time::Duration;

pub mod gateway;

/// The `discord` section of the config: the bot, the application whose interactions medic verifies, where incidents go.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub bot_token: crate::secret::SecretRef,
    pub application_id: String,
    /// How Discord reaches medic: `http` (the interactions endpoint, default) or `gateway`.
    #[serde(default)]
    pub mode: Mode,
    /// The application's public key (hex), for the Ed25519 signatures of the HTTP
    /// interactions endpoint: required in `http` mode; in `gateway` mode it turns the endpoint
    /// on beside the gateway. Not a secret.
    #[serde(default)]
    pub public_key: Option<String>,
    #[serde(default)]
    pub gateway: gateway::Config,
    #[serde(default = "discord_api")]
    pub api_url: String,
    /// Where incidents go when no route matches (a channel id).
    pub default_channel: String,
    #[serde(default)]
    pub routes: Vec<crate::chat::Route>,
}

/// How Discord reaches medic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Discord POSTs interactions to `/discord/interactions` (a public HTTPS URL).
    #[default]
    Http,
    /// medic holds a Gateway WebSocket (one replica, by lease): no inbound HTTP needed.
    Gateway,
}

fn discord_api() -> String {
    DEFAULT_API_URL.into()
}

pub const INCIDENT_TEMPLATE: &str = include_str!("../../../templates/discord/incident.hbs");
pub const ANSWER_TEMPLATE: &str = include_str!("../../../templates/discord/answer.hbs");

/// The `/medic` command, as `PUT /applications/{id}/commands` takes it.
pub fn commands() -> Value {
    let incident = json!({"type": 4, "name": "incident", "description": "The incident (default: the newest open one)", "required": false, "min_value": 1});
    json!([{
        "name": "medic", "type": 1, "description": "Ask medic about incidents",
        "options": [
            {"type": 1, "name": "ask", "description": "Ask a question in plain language", "options": [
                {"type": 3, "name": "question", "description": "e.g. what changed before the errors started?", "required": true, "max_length": 500},
                incident]},
            {"type": 1, "name": "status", "description": "Where an incident stands", "options": [incident]},
            {"type": 1, "name": "pause", "description": "Pause all automation (approvals are refused)"},
            {"type": 1, "name": "resume", "description": "Resume automation"},
            {"type": 1, "name": "help", "description": "What medic understands"},
        ],
    }])
}
pub const DEFAULT_API_URL: &str = "https://discord.com";

/// A click being decided (its reply, if any) and the interaction's token for a follow-up.
type Pending = (tokio::task::JoinHandle<Option<String>>, String);

pub struct Discord {
    api: reqwest::Url,
    token: Secret,
    application_id: String,
    verifier: Option<serenity::interactions_endpoint::Verifier>,
    pub mode: Mode,
    gateway: gateway::Config,
    /// The Gateway connection as `/readyz` shows it.
    pub health: gateway::Health,
    default_channel: String,
    routes: Vec<super::Route>,
    http: reqwest::Client,
    templates: handlebars::Handlebars<'static>,
}

handlebars_helper!(hb_colour: |state: Json, severity: Json, decision: Json| {
    Value::from(super::colour(state, severity, decision))
});

/// The registry for Discord templates: the shared helpers, `text` and `colour`.
pub fn templates() -> anyhow::Result<handlebars::Handlebars<'static>> {
    let mut hb = super::templates_with_helpers();
    super::register_json_text(&mut hb);
    hb.register_helper("colour", Box::new(hb_colour));
    hb.register_template_string("incident", INCIDENT_TEMPLATE)?;
    hb.register_template_string("answer", ANSWER_TEMPLATE)?;
    Ok(hb)
}

/// `s` with Discord's markdown neutralised: every character that starts markup (bold, italics,
/// strikethrough, spoilers, code, masked links `[label](url)`, mentions and timestamps `<…>`;
/// headings, quotes and lists at the start of a line) is backslash-escaped, so text from alerts and logs shows as written and
/// never as a disguised link. Discord drops the backslash before any punctuation it escapes.
pub fn escape(s: &str) -> String {
    let anywhere = ['\\', '*', '_', '~', '`', '|', '[', ']', '(', ')', '<'];
    // Headings, subtext (`-#`), quotes and lists start a line.
    super::backslash_escape(s, &anywhere, &['#', '>', '-'])
}

/// `v` with every string in it escaped ([`escape`]): the data a template renders.
fn escaped(v: &Value) -> Value {
    super::escaped_with(v, escape)
}

/// The root message's body for `view`, from the `incident` template. The same body serves the
/// post and its edits; empty components remove the buttons. No text of an incident may ping
/// anyone: mentions are parsed nowhere.
pub fn root_body(templates: &handlebars::Handlebars, view: &IncidentView) -> anyhow::Result<String> {
    let (embed, rows) = build(&templates.render("incident", &escaped(&view.0))?)?;
    Ok(serde_json::to_string(
        &CreateMessage::new().embed(embed).components(rows).allowed_mentions(CreateAllowedMentions::new()),
    )?)
}

/// The rendered template as serenity's builders, within Discord's limits.
pub fn build(rendered: &str) -> anyhow::Result<(CreateEmbed, Vec<CreateActionRow>)> {
    let v: Value = serde_json::from_str(rendered)
        .map_err(|e| anyhow::anyhow!("the Discord template does not render JSON: {e}"))?;
    let mut embed: serenity::model::channel::Embed = serde_json::from_value(v["embed"].clone())
        .map_err(|e| anyhow::anyhow!("the Discord template does not render an embed: {e}"))?;
    embed.title = embed.title.map(|t| cut(&t, 256));
    embed.description = embed.description.map(|d| cut(&d, 4096));
    if embed.fields.len() > 25 {
        embed.fields.truncate(24);
        embed.fields.push(serenity::model::channel::EmbedField::new("…", MORE, false));
    }
    for f in &mut embed.fields {
        f.name = cut(&f.name, 256);
        f.value = cut(&f.value, 1024);
    }
    #[derive(Deserialize)]
    struct Button {
        custom_id: String,
        label: String,
        style: String,
    }
    let buttons: Vec<Button> = serde_json::from_value(v["buttons"].clone())
        .map_err(|e| anyhow::anyhow!("the Discord template's buttons: {e}"))?;
    let mut rows = Vec::new();
    for chunk in buttons.chunks(5).take(5) {
        let row = chunk
            .iter()
            .map(|b| {
                if b.custom_id.chars().count() > 100 {
                    anyhow::bail!("button custom_id longer than 100 characters: {}", b.custom_id);
                }
                let style = match b.style.as_str() {
                    "success" => ButtonStyle::Success,
                    "danger" => ButtonStyle::Danger,
                    "primary" => ButtonStyle::Primary,
                    _ => ButtonStyle::Secondary,
                };
                Ok(CreateButton::new(b.custom_id.clone()).label(cut(&b.label, 80)).style(style))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        rows.push(CreateActionRow::Buttons(row));
    }
    Ok((CreateEmbed::from(embed), rows))
}

/// The roles of the member who interacted (none outside a guild).
fn roles_of(m: Option<&serenity::model::guild::Member>) -> Vec<String> {
    m.map(|m| m.roles.iter().map(|r| r.to_string()).collect()).unwrap_or_default()
}

/// The value of a modal's text input `id`.
fn modal_input(m: &serenity::model::application::ModalInteraction, id: &str) -> Option<String> {
    use serenity::model::application::ActionRowComponent;
    m.data.components.iter().flat_map(|row| row.components.iter()).find_map(|c| match c {
        ActionRowComponent::InputText(t) if t.custom_id == id => t.value.clone(),
        _ => None,
    })
}

/// A button's `custom_id`: `action:incident:plan_hash`.
fn parse_custom_id(v: &str) -> Option<(&str, i64, String)> {
    let mut parts = v.splitn(3, ':');
    let (action, incident, hash) = (parts.next()?, parts.next()?, parts.next()?);
    let valid = super::is_plan_hash(hash);
    Some((action, incident.parse().ok()?, hash.to_string())).filter(|_| valid)
}

impl Discord {
    pub fn new(cfg: &Config, timeout: Duration) -> Result<Discord, String> {
        let mut api = reqwest::Url::parse(&cfg.api_url).map_err(|e| format!("discord.api_url: {e}"))?;
        api.set_path("/api/v10/");
        let verifier = match (&cfg.public_key, cfg.mode) {
            (Some(key), _) => {
                // serenity's verifier panics on a key that is not a valid Ed25519 point: check first.
                let bytes: Option<[u8; 32]> = hex::decode(key).ok().and_then(|b| b.try_into().ok());
                if bytes.is_none_or(|b| ed25519_dalek::VerifyingKey::from_bytes(&b).is_err()) {
                    return Err("discord.public_key: expected the application's public key (64 hex characters)".into());
                }
                Some(serenity::interactions_endpoint::Verifier::new(key))
            }
            (None, Mode::Http) => {
                return Err("discord.public_key: required with `mode: http` (the interactions endpoint verifies \
                            Discord's signatures with it); or set `mode: gateway`"
                    .into());
            }
            (None, Mode::Gateway) => None,
        };
        let token = cfg.bot_token.resolve().map_err(|e| format!("discord.bot_token: {e}"))?;
        let http = crate::telemetry::http_client_builder().timeout(timeout).build().map_err(|e| e.to_string())?;
        Ok(Discord {
            api,
            token,
            application_id: cfg.application_id.clone(),
            verifier,
            mode: cfg.mode,
            gateway: cfg.gateway.clone(),
            health: gateway::Health::default(),
            default_channel: cfg.default_channel.clone(),
            routes: cfg.routes.clone(),
            http,
            templates: templates().map_err(|e| format!("Discord templates: {e}"))?,
        })
    }

    /// Checks the Ed25519 signature and that the timestamp is within 5 minutes of now.
    pub fn verify(&self, headers: &axum::http::HeaderMap, body: &[u8]) -> Result<(), String> {
        let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
        let sig = header("x-signature-ed25519").ok_or("missing X-Signature-Ed25519")?;
        let ts = header("x-signature-timestamp").ok_or("missing X-Signature-Timestamp")?;
        super::fresh(ts, "X-Signature-Timestamp")?;
        let verifier = self
            .verifier
            .as_ref()
            .ok_or("no discord.public_key is configured: this medic takes Discord's interactions over the gateway")?;
        verifier.verify(sig, ts, body).map_err(|()| "signature does not match".to_string())
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: &Value) -> Result<Value, Delivery> {
        self.call_with(method, path, |r| r.json(body)).await
    }

    async fn call_with(
        &self,
        method: reqwest::Method,
        path: &str,
        body: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<Value, Delivery> {
        let url = self.api.join(path).map_err(|e| Delivery::Failed { error: e.to_string() })?;
        // An interaction token in a follow-up's or a callback's path is a credential: errors
        // do not show it.
        let path = match path {
            p if p.starts_with("webhooks/") => "webhooks/(interaction)",
            p if p.starts_with("interactions/") => "interactions/(interaction)/callback",
            p => p,
        };
        let resp = body(self.http.request(method, url).header("authorization", format!("Bot {}", self.token.expose())))
            .send()
            .await
            .map_err(|e| Delivery::Retry { after_ms: 0, error: format!("Discord unreachable: {}", e.without_url()) })?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        // A 429 says how long to wait in its body (seconds, fractional).
        let wait = v["retry_after"].as_f64().map(|secs| ((secs * 1000.0).ceil() as i64).clamp(1, 3_600_000));
        super::outbox::answered(status, wait, path, &v, &text)?;
        Ok(v)
    }

    /// Members of each group for `user` with `roles`: `discord:role:R` entries count the
    /// clicker in when they hold role R.
    pub fn groups(responders: &crate::approval::Responders, user: &str, roles: &[String]) -> Groups {
        let mut g = responders.groups();
        let me = Identity(format!("discord:{user}"));
        for members in g.members.values_mut() {
            let by_role =
                members.iter().any(|m| m.0.strip_prefix("discord:role:").is_some_and(|r| roles.iter().any(|x| x == r)));
            if by_role {
                members.push(me.clone());
            }
        }
        g
    }

    /// Replaces the `/medic` command with this version's (bulk overwrite: idempotent).
    pub async fn register_commands(&self) -> Result<(), String> {
        self.call(reqwest::Method::PUT, &format!("applications/{}/commands", self.application_id), &commands())
            .await
            .map(drop)
            .map_err(|e| format!("{e:?}"))
    }

    /// Answers `text` by editing the deferred response of the interaction whose token is `token`;
    /// once per interaction `id`, however often the signed request arrives, on any replica.
    async fn answer(
        self: Arc<Self>,
        asking: Arc<super::asking::Asking>,
        id: String,
        token: String,
        q: super::asking::Question,
    ) {
        if !asking.once("discord", &format!("interaction:{id}")).await {
            return;
        }
        let answer = asking.ask(&q).await;
        let path = format!("webhooks/{}/{token}/messages/@original", self.application_id);
        if let Err(e) = self.send_answer(reqwest::Method::PATCH, &path, &answer, json!({})).await {
            tracing::warn!(error = %format!("{e:#}"), "could not send an answer on Discord");
        }
    }

    /// Sends `answer`, rendered from the `answer` template, with `extra` fields merged in
    /// (a `message_reference`) and its chart as an attachment shown in the embed.
    async fn send_answer(
        &self,
        method: reqwest::Method,
        path: &str,
        answer: &super::asking::Reply,
        extra: Value,
    ) -> anyhow::Result<()> {
        let (embed, _) = build(&self.templates.render("answer", &escaped(&answer.view))?)?;
        let mut body = json!({"embeds": [embed], "allowed_mentions": {"parse": []}, "content": ""});
        for (k, v) in extra.as_object().into_iter().flatten() {
            body[k] = v.clone();
        }
        let sent = match answer.chart.clone().map(|(_, png)| png) {
            // The chart as an attachment, shown in the embed (`attachment://chart.png`).
            Some(png) => {
                body["embeds"][0]["image"] = json!({"url": "attachment://chart.png"});
                body["attachments"] =
                    json!([{"id": 0, "filename": "chart.png", "description": "the series of the answer"}]);
                let part = reqwest::multipart::Part::bytes(png).file_name("chart.png").mime_str("image/png")?;
                let form =
                    reqwest::multipart::Form::new().text("payload_json", body.to_string()).part("files[0]", part);
                self.call_with(method, path, |r| r.multipart(form)).await
            }
            None => self.call(method, path, &body).await,
        };
        sent.map(drop).map_err(|e| anyhow::anyhow!("{e:?}"))
    }

    /// A question from `user` (with `roles`) in `channel`, answered in the deferred response.
    fn question(
        asking: &super::asking::Asking,
        text: String,
        incident: Option<i64>,
        user: &str,
        roles: &[String],
        channel: &str,
        addressed: bool,
    ) -> super::asking::Question {
        super::asking::Question {
            text,
            incident,
            who: Identity(format!("discord:{user}")),
            via: format!("discord:{channel}"),
            groups: Discord::groups(&asking.responders, user, roles),
            addressed,
        }
    }

    /// A thread line's body: escaped, mentioning no one.
    fn reply_body(text: &str) -> String {
        json!({"content": cut(&escape(text), 2000), "allowed_mentions": {"parse": []}}).to_string()
    }

    /// An ephemeral follow-up to the interaction whose token is `token`.
    async fn followup(&self, token: &str, text: &str) {
        let body = serde_json::to_value(
            CreateInteractionResponseFollowup::new()
                .content(cut(&escape(text), 2000))
                .allowed_mentions(CreateAllowedMentions::new())
                .ephemeral(true),
        )
        .expect("builders serialise");
        if let Err(e) =
            self.call(reqwest::Method::POST, &format!("webhooks/{}/{token}", self.application_id), &body).await
        {
            tracing::warn!(?e, "could not send an ephemeral reply on Discord");
        }
    }

    /// Handles a verified interaction: the JSON to answer with. A click or a rejection is
    /// decided and stored first, for up to `budget` (Discord wants the answer within 3 s), and
    /// its reply, if any, is the answer (ephemeral); past the budget the answer acknowledges
    /// it, and the reply follows when the decision is in. So a replica that dies after
    /// answering has not lost the click. Questions are answered later, as follow-ups.
    pub async fn interaction(
        self: &Arc<Self>,
        body: &[u8],
        clicks: &Arc<Clicks>,
        asking: &Arc<super::asking::Asking>,
        budget: Duration,
    ) -> Result<Value, String> {
        let (answer, pending) = self.interaction_now(body, clicks, asking)?;
        let Some((mut task, token)) = pending else { return Ok(answer) };
        match tokio::time::timeout(budget, &mut task).await {
            Ok(Ok(Some(reply))) => {
                let msg = serenity::builder::CreateInteractionResponseMessage::new()
                    .content(cut(&escape(&reply), 2000))
                    .allowed_mentions(CreateAllowedMentions::new())
                    .ephemeral(true);
                Ok(serde_json::to_value(CreateInteractionResponse::Message(msg)).expect("builders serialise"))
            }
            Ok(_) => Ok(answer),
            Err(_) => {
                let me = self.clone();
                tokio::spawn(async move {
                    if let Ok(Some(reply)) = task.await {
                        me.followup(&token, &reply).await;
                    }
                });
                Ok(answer)
            }
        }
    }

    /// The answer to give at once, and for a click the task deciding it (its reply) with the
    /// interaction's token.
    fn interaction_now(
        self: &Arc<Self>,
        body: &[u8],
        clicks: &Arc<Clicks>,
        asking: &Arc<super::asking::Asking>,
    ) -> Result<(Value, Option<Pending>), String> {
        use serenity::model::application::{CommandDataOptionValue, Interaction};
        let responders = &asking.responders;
        let interaction: Interaction =
            serde_json::from_slice(body).map_err(|e| format!("not a Discord interaction: {e}"))?;
        let defer = |private: bool| {
            let msg = serenity::builder::CreateInteractionResponseMessage::new().ephemeral(private);
            serde_json::to_value(CreateInteractionResponse::Defer(msg)).expect("builders serialise")
        };
        match interaction {
            Interaction::Command(c) if c.data.name == "medic" => {
                let Some(sub) = c.data.options.first() else { return Ok((defer(true), None)) };
                let (mut question, mut incident) = (sub.name.clone(), None);
                if let CommandDataOptionValue::SubCommand(opts) = &sub.value {
                    for o in opts {
                        match (o.name.as_str(), &o.value) {
                            ("question", CommandDataOptionValue::String(s)) => question = s.clone(),
                            ("incident", CommandDataOptionValue::Integer(i)) => incident = Some(*i),
                            _ => {}
                        }
                    }
                }
                let private = matches!(sub.name.as_str(), "pause" | "resume");
                let q = Discord::question(
                    asking,
                    question,
                    incident,
                    &c.user.id.to_string(),
                    &roles_of(c.member.as_deref()),
                    &c.channel_id.to_string(),
                    true,
                );
                tokio::spawn(self.clone().answer(asking.clone(), c.id.to_string(), c.token.clone(), q));
                Ok((defer(private), None))
            }
            // Ticket: the order `open a ticket for this`, through the asking path (its control
            // groups), answered privately.
            Interaction::Component(c) if c.data.custom_id.starts_with("ticket:") => {
                let incident = c.data.custom_id["ticket:".len()..].parse::<i64>().ok();
                let q = Discord::question(
                    asking,
                    super::slack::TICKET_ORDER.into(),
                    incident,
                    &c.user.id.to_string(),
                    &roles_of(c.member.as_ref()),
                    &c.channel_id.to_string(),
                    true,
                );
                tokio::spawn(self.clone().answer(asking.clone(), c.id.to_string(), c.token.clone(), q));
                Ok((defer(true), None))
            }
            Interaction::Component(c) if c.data.custom_id.starts_with("ask:") => {
                let input = CreateInputText::new(InputTextStyle::Short, "Your question", "question")
                    .placeholder("what changed before the errors started?")
                    .max_length(500);
                let modal = CreateModal::new(c.data.custom_id.clone(), "Ask medic")
                    .components(vec![CreateActionRow::InputText(input)]);
                Ok((serde_json::to_value(CreateInteractionResponse::Modal(modal)).expect("builders serialise"), None))
            }
            Interaction::Modal(m) if m.data.custom_id.starts_with("ask:") => {
                let incident = m.data.custom_id["ask:".len()..].parse::<i64>().ok();
                let text = modal_input(&m, "question").unwrap_or_default();
                let q = Discord::question(
                    asking,
                    text,
                    incident,
                    &m.user.id.to_string(),
                    &roles_of(m.member.as_ref()),
                    &m.channel_id.to_string(),
                    true,
                );
                tokio::spawn(self.clone().answer(asking.clone(), m.id.to_string(), m.token.clone(), q));
                Ok((defer(false), None))
            }
            interaction => self.click(interaction, clicks, responders),
        }
    }

    /// Buttons and the Reject modal.
    fn click(
        self: &Arc<Self>,
        interaction: serenity::model::application::Interaction,
        clicks: &Arc<Clicks>,
        responders: &Arc<crate::approval::Responders>,
    ) -> Result<(Value, Option<Pending>), String> {
        use serenity::model::application::Interaction;
        let ack = serde_json::to_value(CreateInteractionResponse::Acknowledge).expect("builders serialise");
        match interaction {
            Interaction::Ping(_) => {
                Ok((serde_json::to_value(CreateInteractionResponse::Pong).expect("builders serialise"), None))
            }
            Interaction::Component(c) => {
                let Some((action, incident, hash)) = parse_custom_id(&c.data.custom_id) else {
                    return Ok((ack, None));
                };
                let user = c.user.id.to_string();
                let roles = roles_of(c.member.as_ref());
                if action == "reject" {
                    let input = CreateInputText::new(InputTextStyle::Paragraph, "Why?", "reason").max_length(2000);
                    let modal = CreateModal::new(format!("reject:{incident}:{hash}"), "Reject the plan")
                        .components(vec![CreateActionRow::InputText(input)]);
                    return Ok((
                        serde_json::to_value(CreateInteractionResponse::Modal(modal)).expect("builders serialise"),
                        None,
                    ));
                }
                let (clicks, responders, channel) = (clicks.clone(), responders.clone(), c.channel_id.to_string());
                let action = action.to_string();
                let task = tokio::spawn(async move {
                    let r = async {
                        match action.as_str() {
                            id @ ("approve" | "stop") => {
                                let decision = if id == "stop" { Decision::Stop } else { Decision::Approve };
                                let groups = Discord::groups(&responders, &user, &roles);
                                let who = Identity(format!("discord:{user}"));
                                clicks
                                    .decide(
                                        incident,
                                        &hash,
                                        who,
                                        decision,
                                        &format!("discord:{channel}"),
                                        None,
                                        &groups,
                                    )
                                    .await
                            }
                            "more" => clicks.more_evidence(incident).await,
                            _ => Ok(None),
                        }
                    };
                    r.await.unwrap_or_else(|e| {
                        tracing::warn!(error = %format!("{e:#}"), "Discord click failed");
                        None
                    })
                });
                Ok((ack, Some((task, c.token.clone()))))
            }
            Interaction::Modal(m) => {
                let Some(("reject", incident, hash)) = parse_custom_id(&m.data.custom_id) else {
                    return Ok((ack, None));
                };
                let reason = modal_input(&m, "reason").map(|r| cut(&r, 2000));
                let user = m.user.id.to_string();
                let roles = roles_of(m.member.as_ref());
                let (clicks, responders) = (clicks.clone(), responders.clone());
                let channel = m.channel_id.to_string();
                let task = tokio::spawn(async move {
                    let groups = Discord::groups(&responders, &user, &roles);
                    let who = Identity(format!("discord:{user}"));
                    clicks
                        .decide(incident, &hash, who, Decision::Reject, &format!("discord:{channel}"), reason, &groups)
                        .await
                        .unwrap_or_else(|e| {
                            tracing::warn!(error = %format!("{e:#}"), "Discord rejection failed");
                            None
                        })
                });
                Ok((ack, Some((task, m.token.clone()))))
            }
            _ => Ok((ack, None)),
        }
    }
}

#[async_trait]
impl Platform for Discord {
    fn channel_for(&self, labels: &Labels) -> String {
        super::route(&self.routes, &self.default_channel, labels)
    }

    fn root(&self, view: &IncidentView, _channel: &str) -> anyhow::Result<String> {
        root_body(&self.templates, view)
    }

    fn reply(&self, _channel: &str, text: &str) -> String {
        Discord::reply_body(text)
    }

    fn channels(&self) -> Vec<String> {
        super::route_channels(&self.routes, &self.default_channel)
    }

    /// `https://discord.com/channels/{guild}/{channel}/{message}`, the guild from `GET /channels/{id}`.
    async fn link(&self, channel: &str, root: &str) -> Option<String> {
        let v = self.call_with(reqwest::Method::GET, &format!("channels/{channel}"), |r| r).await.ok()?;
        let guild = v["guild_id"].as_str()?;
        Some(format!("https://discord.com/channels/{guild}/{channel}/{root}"))
    }

    fn connection(&self) -> Option<(&'static str, Value)> {
        let state = self.health.to_json();
        (!state.is_null()).then_some(("discord_gateway", state))
    }
}

#[async_trait]
impl super::outbox::Destination for Discord {
    fn name(&self) -> &'static str {
        "discord"
    }

    async fn deliver(&self, row: &OutboxRow) -> Delivery {
        let Ok(body) = serde_json::from_str::<Value>(&row.item.body) else {
            return Delivery::Failed { error: "the queued body is not JSON".into() };
        };
        let channel = &row.item.channel;
        let root = row.root.clone().unwrap_or_default();
        let result = match row.item.op.as_str() {
            "post" => {
                // Discord's idempotency: a retried root (an earlier answer lost) returns the
                // message created with the same nonce in the past few minutes, not a second one.
                let mut body = body;
                body["nonce"] = json!(format!("medic-{}", row.item.incident_id));
                body["enforce_nonce"] = json!(true);
                self.call(reqwest::Method::POST, &format!("channels/{channel}/messages"), &body).await
            }
            "update" => {
                // EditMessage has the same fields; build it for the PATCH's shape.
                let mut patch = serde_json::to_value(EditMessage::new()).expect("builders serialise");
                for k in ["embeds", "components"] {
                    patch[k] = body.get(k).cloned().unwrap_or(json!([]));
                }
                patch["allowed_mentions"] = json!({"parse": []});
                self.call(reqwest::Method::PATCH, &format!("channels/{channel}/messages/{root}"), &patch).await
            }
            // A message of its own (the morning summary), in the channel.
            "message" => self.call(reqwest::Method::POST, &format!("channels/{channel}/messages"), &body).await,
            "thread" => {
                // A thread started on a message has the message's id.
                let posted = self.call(reqwest::Method::POST, &format!("channels/{root}/messages"), &body).await;
                match posted {
                    Err(Delivery::Failed { error }) if error.contains("HTTP 404") => {
                        let start = json!({"name": format!("Incident #{}", row.item.incident_id), "auto_archive_duration": 1440});
                        match self
                            .call(reqwest::Method::POST, &format!("channels/{channel}/messages/{root}/threads"), &start)
                            .await
                        {
                            Ok(_) => {
                                self.call(reqwest::Method::POST, &format!("channels/{root}/messages"), &body).await
                            }
                            Err(e) => Err(e),
                        }
                    }
                    other => other,
                }
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

    /// Discord's documented command example, and which fields serenity's strict model needs
    /// beyond it (Discord sends them all today).
    #[test]
    fn the_documented_command_example_parses_with_what_discord_sends_besides() {
        use serenity::model::application::{CommandDataOptionValue, Interaction};
        let path = format!("{}/tests/fixtures/discord/docs-slash-command.json", env!("CARGO_MANIFEST_DIR"));
        let mut v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        // As documented, it lacks fields serenity requires: application_id, version,
        // entitlements, authorizing_integration_owners, attachment_size_limit, member.flags.
        assert!(serde_json::from_value::<Interaction>(v.clone()).is_err());
        v["application_id"] = json!("1219634837219086418");
        v["version"] = json!(1);
        v["entitlements"] = json!([]);
        v["authorizing_integration_owners"] = json!({});
        v["member"]["flags"] = json!(0);
        v["attachment_size_limit"] = json!(10_485_760);
        let Interaction::Command(c) = serde_json::from_value::<Interaction>(v).expect("parses with those fields")
        else {
            panic!("not a command")
        };
        assert_eq!((c.data.name.as_str(), c.token.as_str()), ("cardsearch", "A_UNIQUE_TOKEN"));
        assert!(matches!(&c.data.options[0].value, CommandDataOptionValue::String(s) if s == "The Gitrog Monster"));
    }

    #[test]
    fn the_medic_command_is_valid_for_discord() {
        let c = commands();
        let opts = c[0]["options"].as_array().unwrap();
        let names: Vec<&str> = opts.iter().map(|o| o["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["ask", "status", "pause", "resume", "help"]);
        for o in opts {
            let d = o["description"].as_str().unwrap();
            assert!(!d.is_empty() && d.chars().count() <= 100, "{d}");
        }
    }

    #[test]
    fn an_invalid_public_key_is_an_error_not_a_panic() {
        let with = |key: Option<&str>, mode: Mode| Config {
            bot_token: crate::secret::SecretRef::Env("MEDIC_TEST_DISCORD_TOKEN_SET".into()),
            application_id: "1".into(),
            mode,
            public_key: key.map(String::from),
            gateway: Default::default(),
            api_url: DEFAULT_API_URL.into(),
            default_channel: "2".into(),
            routes: vec![],
        };
        let cfg = |key: &str| with(Some(key), Mode::Http);
        // SAFETY: tests in this module do not read the environment concurrently.
        unsafe { std::env::set_var("MEDIC_TEST_DISCORD_TOKEN_SET", "t") };
        let bad = "7d6c1a3bb0b1a8cb8d2e40d5c6e5f4b3a291807f6e5d4c3b2a1908f7e6d5c4b3";
        assert!(Discord::new(&cfg(bad), Duration::from_secs(1)).err().unwrap().contains("public_key"));
        assert!(Discord::new(&cfg("zz"), Duration::from_secs(1)).is_err());
        let good = hex::encode(ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]).verifying_key().to_bytes());
        assert!(Discord::new(&cfg(&good), Duration::from_secs(1)).is_ok());
        // The key is needed for the HTTP endpoint only.
        let none = Discord::new(&with(None, Mode::Http), Duration::from_secs(1)).err().unwrap();
        assert!(none.contains("required with `mode: http`"), "{none}");
        assert!(Discord::new(&with(None, Mode::Gateway), Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn custom_ids_are_strict() {
        let h = "b".repeat(64);
        assert_eq!(parse_custom_id(&format!("approve:3:{h}")), Some(("approve", 3, h.clone())));
        assert_eq!(parse_custom_id("approve:3:short"), None);
        assert!(format!("approve:{}:{h}", i64::MAX).len() <= 100, "fits Discord's 100 characters");
    }

    #[test]
    fn oversized_embeds_are_cut() {
        let evidence: Vec<Value> = (0..100).map(|i| json!({"text": format!("line {i} {}", "y".repeat(60))})).collect();
        let view = json!({
            "incident": {"id": 7, "title": "T".repeat(400), "state": "open", "severity": "critical"},
            "services": "checkout", "onset": "2026-11-21T10:00:00Z",
            "top": {"statement": "s".repeat(3000), "confidence": 75, "runbook": "r", "tier": 3, "evidence": evidence},
            "plan": null, "no_plan": "none", "paused": null, "decision": null, "buttons": false, "resolved": false,
        });
        let (embed, rows) = build(&templates().unwrap().render("incident", &view).unwrap()).unwrap();
        let v = serde_json::to_value(embed).unwrap();
        assert!(v["title"].as_str().unwrap().chars().count() <= 256);
        assert_eq!(v["color"], 0xe0_1e_5a, "critical is red");
        for f in v["fields"].as_array().unwrap() {
            assert!(f["value"].as_str().unwrap().chars().count() <= 1024, "{f}");
        }
        assert!(v["fields"][1]["value"].as_str().unwrap().ends_with(MORE));
        let ids: Vec<String> = serde_json::to_value(&rows).unwrap()[0]["components"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["custom_id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(ids, ["ask:7"], "no plan buttons when none apply; Ask always");
    }

    /// Text from alerts shows as written: a masked link in a label is no link, other markup is
    /// no markup, and only the template's own markup (the bold state) renders.
    #[test]
    fn alert_text_is_no_markup() {
        let hostile = "[Log in again](https://evil.example/login) **now** ||x|| `code` <@&1>\n# big\n> quote";
        let escaped = escape(hostile);
        assert!(!escaped.contains("[Log in again](") && !escaped.contains("**now**"), "{escaped}");
        assert_eq!(escaped.replace('\\', ""), hostile, "nothing but backslashes added");
        let view = IncidentView(json!({
            "incident": {"id": 7, "title": hostile, "state": "open", "severity": "critical"},
            "services": hostile, "onset": "2026-11-21T10:00:00Z",
            "top": {"statement": hostile, "confidence": 75, "runbook": "r", "tier": 3,
                    "evidence": [{"kind": "log", "text": hostile, "at": null}]},
            "plan": null, "no_plan": hostile, "paused": null, "decision": null, "buttons": false, "resolved": false,
            "can_approve": false, "stop": false, "auto": null,
        }));
        let body = root_body(&templates().unwrap(), &view).unwrap();
        assert!(!body.contains("[Log in again](https"), "{body}");
        assert!(body.contains("**open**"), "the template's own markup stays: {body}");
        let reply: Value = serde_json::from_str(&Discord::reply_body(hostile)).unwrap();
        assert!(!reply["content"].as_str().unwrap().contains("[Log in again](https"), "{reply}");
    }
}
