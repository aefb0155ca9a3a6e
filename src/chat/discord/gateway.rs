//! Discord's Gateway (`discord.mode: gateway`): one WebSocket to Discord, held by one replica
//! (a lease in the store, as Slack Socket Mode), so a self-hosted medic needs no public URL and
//! people can @mention it in an incident's thread.
//!
//! The protocol as Discord documents it (`../shared/conformance/discord/api-docs/gateway.mdx`):
//! `GET /gateway/bot` on the configured `api_url` for the URL and the session start limit;
//! `?v=10&encoding=json`; HELLO → IDENTIFY (intents below) → READY, whose `session_id` and
//! `resume_gateway_url` are kept; a heartbeat every `heartbeat_interval` (the first after a
//! random part of it) with the last sequence number, and one at once when Discord asks (op 1);
//! no ACK between two heartbeats is a zombied connection, closed with 4000 and resumed. Reconnect
//! (op 7), a drop or a resumable close code → RESUME on `resume_gateway_url` (Discord replays what
//! was missed); Invalid Session (op 9) → resume if `d` is true, else identify anew after 1–5 s.
//! At most one IDENTIFY per 5 s and none while the day's session starts are spent; at most 120
//! sends a minute. Close codes that retrying cannot mend (4004 authentication failed, 4010–4014:
//! shard, version, invalid or disallowed intents) stop the gateway: the log and `/readyz` say
//! why and what to do, and the rest of medic goes on.
//!
//! Over it: `MESSAGE_CREATE` that mentions medic, replies to it, is a DM, or is in an
//! incident's thread and is understood as a question (the same rules as Slack: answered, never
//! acted on unless addressed); `INTERACTION_CREATE` (buttons, modals, `/medic`), answered over
//! REST with the response the HTTP endpoint would have given. Each message and interaction is
//! handled once, whichever replica sees it (its id recorded in the store, like Slack's
//! `event_id`), so a replay after a resume answers nothing twice.
//!
//! Why not serenity's gateway: its `gateway` feature brings its own HTTP client (reqwest 0.12)
//! and TLS stack (rustls 0.22), beside medic's one reqwest and one rustls provider, and owns
//! the connection's lifecycle, where medic needs a lease across replicas and one store-backed
//! record of what was answered. This client uses tokio-tungstenite (as Slack Socket Mode does)
//! and serenity's models for what arrives.

use super::Discord;
use crate::chat::asking::Asking;
use crate::chat::clicks::Clicks;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// The lease that says which replica holds the Gateway connection.
pub const LEASE: &str = "discord-gateway";

/// Intents: `GUILDS`, `GUILD_MESSAGES`, `DIRECT_MESSAGES`; `MESSAGE_CONTENT` (privileged) when
/// configured.
pub const GUILDS: u64 = 1;
pub const GUILD_MESSAGES: u64 = 1 << 9;
pub const DIRECT_MESSAGES: u64 = 1 << 12;
pub const MESSAGE_CONTENT: u64 = 1 << 15;

/// The largest frame medic reads; a larger one ends the connection (and it resumes).
pub const MAX_FRAME: usize = 8 << 20;
/// Discord's limit on what a client sends: 120 events per connection per minute.
const SENDS_PER_MINUTE: usize = 120;
/// One IDENTIFY per 5 s (`max_concurrency` 1, one shard).
const IDENTIFY_EVERY: Duration = Duration::from_secs(5);

/// The `discord.gateway` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Ask for the privileged `MESSAGE_CONTENT` intent (enable it in the Developer Portal: the
    /// application → Bot → Privileged Gateway Intents → Message Content Intent). Without it,
    /// Discord still gives medic the text of messages that mention it, reply to it, or are DMs;
    /// questions overheard in a thread without a mention are not seen.
    #[serde(default = "yes")]
    pub message_content: bool,
}

fn yes() -> bool {
    true
}

impl Default for Config {
    fn default() -> Self {
        Config { message_content: true }
    }
}

impl Config {
    pub fn intents(&self) -> u64 {
        GUILDS | GUILD_MESSAGES | DIRECT_MESSAGES | if self.message_content { MESSAGE_CONTENT } else { 0 }
    }
}

use crate::chat::lease::Ended;
pub use crate::chat::lease::{Health, State};

/// How a connection ended, and what to do next.
#[derive(Debug, PartialEq)]
pub enum End {
    /// Reconnect on `resume_gateway_url` and RESUME.
    Resume(String),
    /// Start a new session: the gateway URL, IDENTIFY.
    Identify(String),
    /// Do not retry.
    Fatal(String),
}

/// What a close code asks for, as Discord documents them.
pub fn after_close(code: u16, reason: &str) -> End {
    let said = if reason.is_empty() { String::new() } else { format!(": {reason}") };
    match code {
        4004 => End::Fatal(format!(
            "Discord closed the gateway with 4004 (authentication failed{said}): discord.bot_token is wrong or was reset; not retried"
        )),
        4010 | 4011 => End::Fatal(format!(
            "Discord closed the gateway with {code} (sharding{said}): medic runs one shard; not retried"
        )),
        4012 => End::Fatal(format!("Discord closed the gateway with 4012 (invalid API version{said}); not retried")),
        4013 => End::Fatal(format!("Discord closed the gateway with 4013 (invalid intents{said}); not retried")),
        4014 => End::Fatal(format!(
            "Discord closed the gateway with 4014 (disallowed intents{said}): enable the Message Content Intent for the application \
             (Developer Portal → the application → Bot → Privileged Gateway Intents), or set discord.gateway.message_content: false \
             (mentions, replies and DMs still reach medic); not retried"
        )),
        4007 | 4009 => End::Identify(format!("Discord closed the gateway with {code}{said}: a new session")),
        // 1000/1001 end the session on Discord's side too.
        1000 | 1001 => End::Identify(format!("Discord closed the gateway ({code}{said})")),
        _ => End::Resume(format!("Discord closed the gateway with {code}{said}")),
    }
}

/// What a READY gave: enough to resume.
#[derive(Debug, Clone)]
struct Session {
    id: String,
    resume_url: String,
    seq: Option<u64>,
}

/// The client's side of Discord's send limit: waits while 120 were sent in the last minute.
#[derive(Default)]
struct Sends(VecDeque<Instant>);

impl Sends {
    async fn wait(&mut self) {
        let minute = Duration::from_secs(60);
        while self.0.front().is_some_and(|t| t.elapsed() >= minute) {
            self.0.pop_front();
        }
        if self.0.len() >= SENDS_PER_MINUTE
            && let Some(first) = self.0.front()
        {
            tokio::time::sleep(minute.saturating_sub(first.elapsed())).await;
            self.0.pop_front();
        }
        self.0.push_back(Instant::now());
    }
}

/// A value in `[0, 1)` that differs from call to call (for the first heartbeat's jitter and
/// the wait after an invalid session): no cryptography needed.
fn jitter() -> f64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
    f64::from(nanos % 1_000_000) / 1_000_000.0
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// What one replica runs: hold the lease, connect, resume or identify again until `stop`.
pub async fn run(
    discord: Arc<Discord>,
    clicks: Arc<Clicks>,
    asking: Arc<Asking>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let lease = crate::chat::lease::Lease {
        name: LEASE,
        me: clicks.executor.owner.clone(),
        store: clicks.store.clone(),
        clock: clicks.clock.clone(),
    };
    let health = discord.clone();
    let mut client = Client { discord, clicks, asking, session: None, last_identify: None, failures: 0 };
    lease.hold("Discord gateway connection", &health.health, &mut client, &mut stop).await;
}

#[async_trait::async_trait]
impl crate::chat::lease::Connection for Client {
    async fn connect(&mut self) -> Ended {
        let why = match self.connect_once().await {
            End::Fatal(why) => return Ended::Fatal(why),
            End::Resume(why) if self.session.is_some() => format!("{why}; resuming"),
            End::Resume(why) => why,
            End::Identify(why) => {
                self.session = None;
                format!("{why}; the session ended")
            }
        };
        Ended::Again { why, wait: crate::chat::lease::reconnect_wait(self.failures) }
    }
}

struct Client {
    discord: Arc<Discord>,
    clicks: Arc<Clicks>,
    asking: Arc<Asking>,
    session: Option<Session>,
    last_identify: Option<Instant>,
    /// Connections in a row that failed before READY/RESUMED: the backoff.
    failures: i64,
}

impl Client {
    /// `GET /gateway/bot`: the URL to connect to, after waiting out a spent session start limit.
    async fn gateway_url(&self) -> Result<String, End> {
        let v = self.discord.call_with(reqwest::Method::GET, "gateway/bot", |r| r).await.map_err(|e| match e {
            // The REST client retries refused credentials (an outage of ours); here a 401 is
            // the same answer as close code 4004.
            crate::store::Delivery::Retry { error, .. } | crate::store::Delivery::Failed { error }
                if error.contains("HTTP 401") =>
            {
                End::Fatal(format!(
                    "GET /gateway/bot was refused ({error}): discord.bot_token is wrong or was reset; not retried"
                ))
            }
            e => End::Identify(format!("GET /gateway/bot: {e:?}")),
        })?;
        let url = v["url"].as_str().ok_or_else(|| End::Identify("GET /gateway/bot: no url".into()))?;
        let limit = &v["session_start_limit"];
        if limit["remaining"].as_u64() == Some(0) {
            let ms = limit["reset_after"].as_u64().unwrap_or(60_000).min(24 * 3600 * 1000);
            tracing::warn!(reset_after_ms = ms, "Discord's session start limit is spent; waiting for it to reset");
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        Ok(url.to_string())
    }

    /// One connection, from the WebSocket's opening to its end.
    async fn connect_once(&mut self) -> End {
        let resuming = self.session.clone();
        let base = match &resuming {
            Some(s) => s.resume_url.clone(),
            None => match self.gateway_url().await {
                Ok(u) => u,
                Err(end) => {
                    self.failures += 1;
                    return end;
                }
            },
        };
        // `wss://gateway.discord.gg/?v=10&encoding=json`, as documented (a URL with no path
        // gets `/`).
        let mut url = match reqwest::Url::parse(&base) {
            Ok(u) if matches!(u.scheme(), "ws" | "wss") => u,
            _ => {
                self.session = None;
                self.failures += 1;
                return End::Identify(format!("not a WebSocket URL for the gateway: {base:?}"));
            }
        };
        url.query_pairs_mut().append_pair("v", "10").append_pair("encoding", "json");
        let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .max_message_size(Some(MAX_FRAME))
            .max_frame_size(Some(MAX_FRAME));
        let mut ws = match tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config), false).await {
            Ok((ws, _)) => ws,
            Err(e) => {
                self.failures += 1;
                // A resume that cannot reconnect starts over from the gateway URL, as documented.
                if resuming.is_some() {
                    self.session = None;
                    return End::Identify(format!("cannot reconnect to resume: {e}"));
                }
                return End::Resume(format!("cannot connect to the gateway: {e}"));
            }
        };
        let end = self.session_on(&mut ws, resuming).await;
        if !matches!(end, End::Fatal(_)) {
            // Any code but 1000/1001 keeps the session resumable.
            let _ = ws.close(Some(CloseFrame { code: CloseCode::Library(4000), reason: "reconnecting".into() })).await;
        }
        end
    }

    async fn session_on(&mut self, ws: &mut Ws, resuming: Option<Session>) -> End {
        let mut sends = Sends::default();
        // HELLO first.
        let hello = match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => serde_json::from_str::<Value>(t.as_str()).ok(),
            Ok(Some(Ok(Message::Close(frame)))) => {
                self.failures += 1;
                return closed(frame);
            }
            _ => None,
        };
        let Some(interval) = hello.filter(|h| h["op"] == 10).and_then(|h| h["d"]["heartbeat_interval"].as_u64()) else {
            self.failures += 1;
            return End::Resume("the gateway did not say HELLO".into());
        };
        let interval = Duration::from_millis(interval.max(1000));
        let token = self.discord.token.expose().to_string();
        let first = match &resuming {
            Some(s) => json!({"op": 6, "d": {"token": token, "session_id": s.id, "seq": s.seq}}),
            None => {
                if let Some(t) = self.last_identify {
                    tokio::time::sleep(IDENTIFY_EVERY.saturating_sub(t.elapsed())).await;
                }
                self.last_identify = Some(Instant::now());
                json!({"op": 2, "d": {
                    "token": token,
                    "intents": self.discord.gateway.intents(),
                    "properties": {"os": std::env::consts::OS, "browser": "medic", "device": "medic"},
                }})
            }
        };
        if let Err(e) = send(ws, &mut sends, &first).await {
            self.failures += 1;
            return End::Resume(e);
        }
        let mut seq = resuming.as_ref().and_then(|s| s.seq);
        let mut me = self.discord.application_id.clone();
        let mut acked = true;
        let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + interval.mul_f64(jitter()), interval);
        loop {
            let frame = tokio::select! {
                _ = beat.tick() => {
                    if !acked {
                        return End::Resume("no heartbeat ACK since the last heartbeat (a zombied connection)".into());
                    }
                    acked = false;
                    if let Err(e) = send(ws, &mut sends, &json!({"op": 1, "d": seq})).await {
                        return End::Resume(e);
                    }
                    continue;
                }
                frame = ws.next() => frame,
            };
            let text = match frame {
                None => return End::Resume("the connection closed without a close frame".into()),
                Some(Err(e)) => return End::Resume(format!("the connection failed: {e}")),
                Some(Ok(Message::Close(frame))) => return closed(frame),
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(Message::Binary(b))) => {
                    tracing::warn!(
                        bytes = b.len(),
                        "a binary gateway frame (medic asks for JSON, uncompressed); ignored"
                    );
                    continue;
                }
                Some(Ok(_)) => continue,
            };
            let Ok(payload) = serde_json::from_str::<Value>(text.as_str()) else {
                tracing::warn!(bytes = text.len(), "a gateway frame that is not JSON; ignored");
                continue;
            };
            match payload["op"].as_u64() {
                Some(0) => {
                    if let Some(s) = payload["s"].as_u64() {
                        seq = Some(s);
                        if let Some(session) = &mut self.session {
                            session.seq = seq;
                        }
                    }
                    let d = &payload["d"];
                    match payload["t"].as_str() {
                        Some("READY") => {
                            let (Some(id), Some(url)) = (d["session_id"].as_str(), d["resume_gateway_url"].as_str())
                            else {
                                return End::Identify("a READY without session_id or resume_gateway_url".into());
                            };
                            self.session = Some(Session { id: id.into(), resume_url: url.into(), seq });
                            if let Some(user) = d["user"]["id"].as_str() {
                                me = user.to_string();
                            }
                            self.connected("ready");
                        }
                        Some("RESUMED") => self.connected("resumed"),
                        Some("MESSAGE_CREATE") => {
                            let (discord, asking, d, me) =
                                (self.discord.clone(), self.asking.clone(), d.clone(), me.clone());
                            tokio::spawn(async move {
                                if let Err(e) = discord.message(&asking, &me, &d).await {
                                    tracing::warn!(error = %format!("{e:#}"), "a Discord message could not be answered");
                                }
                            });
                        }
                        Some("INTERACTION_CREATE") => {
                            let (discord, clicks, asking, d) =
                                (self.discord.clone(), self.clicks.clone(), self.asking.clone(), d.clone());
                            tokio::spawn(async move {
                                if let Err(e) = discord.gateway_interaction(&clicks, &asking, &d).await {
                                    tracing::warn!(error = %format!("{e:#}"), "a Discord interaction failed");
                                }
                            });
                        }
                        _ => {}
                    }
                }
                Some(1) => {
                    if let Err(e) = send(ws, &mut sends, &json!({"op": 1, "d": seq})).await {
                        return End::Resume(e);
                    }
                }
                Some(7) => return End::Resume("Discord asked to reconnect (op 7)".into()),
                Some(9) => {
                    let resumable = payload["d"] == true && self.session.is_some();
                    tokio::time::sleep(Duration::from_millis(1000 + (jitter() * 4000.0) as u64)).await;
                    return if resumable {
                        End::Resume("an invalid session that may be resumed (op 9)".into())
                    } else {
                        End::Identify("an invalid session (op 9)".into())
                    };
                }
                Some(11) => acked = true,
                Some(10) => {}
                op => tracing::debug!(?op, "an unknown gateway opcode; ignored"),
            }
        }
    }

    fn connected(&mut self, how: &str) {
        self.failures = 0;
        self.discord.health.set(State::Connected);
        tracing::info!(how, "Discord gateway connected");
    }
}

fn closed(frame: Option<CloseFrame>) -> End {
    match frame {
        Some(f) => after_close(u16::from(f.code), f.reason.as_str()),
        None => End::Resume("Discord closed the gateway without a code".into()),
    }
}

async fn send(ws: &mut Ws, sends: &mut Sends, v: &Value) -> Result<(), String> {
    sends.wait().await;
    ws.send(Message::Text(v.to_string().into())).await.map_err(|e| format!("cannot send to the gateway: {e}"))
}

impl Discord {
    /// A `MESSAGE_CREATE` (`d`) seen on the gateway by the bot user `me`: answered once, in
    /// reply, when it mentions medic, replies to it, is a DM, or — overheard in an incident's
    /// thread — is a question medic understands (answered, never acted on).
    pub async fn message(&self, asking: &Asking, me: &str, d: &Value) -> anyhow::Result<()> {
        let author = &d["author"];
        if author["bot"] == true || author["id"] == me || d["webhook_id"].is_string() {
            return Ok(());
        }
        let (Some(id), Some(channel), Some(user)) = (d["id"].as_str(), d["channel_id"].as_str(), author["id"].as_str())
        else {
            anyhow::bail!("a MESSAGE_CREATE without id, channel_id or author.id");
        };
        let text = d["content"].as_str().unwrap_or("");
        let dm = d["guild_id"].is_null();
        let mentioned = d["mentions"].as_array().into_iter().flatten().any(|m| m["id"] == me);
        let replied = d["referenced_message"]["author"]["id"] == me;
        let addressed = dm || mentioned || replied;
        // Overheard: only a question medic understands (no IO), only in an incident's thread.
        if !addressed && !asking.understood(text) {
            return Ok(());
        }
        // A thread started on a message has the message's id: the incident's root.
        let incident = if dm { None } else { asking.store.incident_for_message("discord", None, channel).await? };
        if !addressed && incident.is_none() {
            return Ok(());
        }
        if !asking.first("discord", &format!("message:{id}")).await? {
            return Ok(());
        }
        let roles: Vec<String> = d["member"]["roles"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r.as_str().map(String::from))
            .collect();
        let q = Discord::question(asking, text.to_string(), incident, user, &roles, channel, addressed);
        let answer = asking.ask(&q).await;
        let reply = json!({
            "message_reference": {"message_id": id, "channel_id": channel, "fail_if_not_exists": false},
            "allowed_mentions": {"parse": [], "replied_user": false},
        });
        self.send_answer(reqwest::Method::POST, &format!("channels/{channel}/messages"), &answer, reply).await
    }

    /// An `INTERACTION_CREATE` (`d`): the response the HTTP endpoint would give, sent to
    /// `POST /interactions/{id}/{token}/callback`; once per interaction id.
    pub async fn gateway_interaction(
        self: &Arc<Self>,
        clicks: &Arc<Clicks>,
        asking: &Arc<Asking>,
        d: &Value,
    ) -> anyhow::Result<()> {
        let (Some(id), Some(token)) = (d["id"].as_str(), d["token"].as_str()) else {
            anyhow::bail!("an INTERACTION_CREATE without id or token");
        };
        if !asking.first("discord", &format!("gateway-interaction:{id}")).await? {
            return Ok(());
        }
        let body = serde_json::to_vec(d)?;
        let response =
            self.interaction(&body, clicks, asking, crate::chat::ACK_BUDGET).await.map_err(anyhow::Error::msg)?;
        self.call(reqwest::Method::POST, &format!("interactions/{id}/{token}/callback"), &response)
            .await
            .map(drop)
            .map_err(|e| anyhow::anyhow!("{e:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_that_retrying_cannot_mend_are_fatal() {
        for code in [4004, 4010, 4011, 4012, 4013, 4014] {
            assert!(matches!(after_close(code, ""), End::Fatal(_)), "{code}");
        }
        for code in [4000, 4001, 4002, 4003, 4005, 4008, 1006] {
            assert!(matches!(after_close(code, ""), End::Resume(_)), "{code}");
        }
        for code in [4007, 4009, 1000] {
            assert!(matches!(after_close(code, ""), End::Identify(_)), "{code}");
        }
        let End::Fatal(why) = after_close(4014, "Disallowed intent(s).") else { unreachable!() };
        assert!(why.contains("Message Content Intent") && why.contains("message_content: false"), "{why}");
    }

    #[test]
    fn intents_are_the_documented_bits() {
        // GUILDS (1 << 0), GUILD_MESSAGES (1 << 9), DIRECT_MESSAGES (1 << 12), MESSAGE_CONTENT (1 << 15).
        assert_eq!(Config::default().intents(), 1 + 512 + 4096 + 32768);
        assert_eq!(Config { message_content: false }.intents(), 1 + 512 + 4096);
    }
}
