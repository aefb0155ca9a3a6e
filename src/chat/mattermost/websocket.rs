//! Mattermost's WebSocket (`mattermost.websocket`, on by default): one connection held by one
//! replica (a lease in the store, as Slack Socket Mode and Discord's Gateway), over which
//! @mentions, DMs and questions in an incident's thread reach medic.
//!
//! The protocol as Mattermost's server and web app speak it: `GET {url}/api/v4/websocket` with
//! the bot token as `Authorization: Bearer`; the server's `hello` event names the connection
//! (`connection_id`); every event carries a `seq` one above the last. A dropped connection, or
//! a gap in the numbers, reconnects with `connection_id` and `sequence_number` (the next `seq`
//! expected), so the server replays from its buffer what was missed, then says `hello` again;
//! a `hello` with another connection id means it could not, and says so in the log. (As
//! Mattermost's server, `WebConn::writePump`, and its web client do.) medic pings every 30 s and reconnects when nothing
//! arrived for 75 s. A bot token Mattermost refuses (`GET /users/me` → 401) stops the
//! connection for good: the log and `/readyz` say why, and the rest of medic goes on.
//!
//! Over it, `posted` events: a post that mentions medic, is in a DM with it, or is a reply in an
//! incident's thread understood as a question (the rules of Slack and Discord: answered, never
//! acted on unless addressed). medic's own posts and other bots' are ignored; each post is
//! answered once, whichever replica sees it (its id recorded in the store).

use super::Mattermost;
use crate::chat::asking::Asking;
use crate::chat::lease::{Ended, State};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

pub use crate::chat::lease::Health;

/// The lease that says which replica holds the WebSocket.
pub const LEASE: &str = "mattermost-websocket";
/// The largest frame medic reads; a larger one ends the connection (and it reconnects).
pub const MAX_FRAME: usize = 8 << 20;
const PING_EVERY: Duration = Duration::from_secs(30);
const SILENT_FOR: Duration = Duration::from_secs(75);

/// How a connection ended.
enum End {
    /// Reconnect (resuming where possible).
    Again(String),
    /// Do not retry.
    Fatal(String),
}

/// What one replica runs: hold the lease, connect, reconnect until `stop`.
pub async fn run(
    mm: Arc<Mattermost>,
    asking: Arc<Asking>,
    owner: String,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let lease =
        crate::chat::lease::Lease { name: LEASE, me: owner, store: asking.store.clone(), clock: asking.clock.clone() };
    let health = mm.clone();
    let mut client = Client { mm, asking, resume: None, failures: 0 };
    lease.hold("Mattermost WebSocket", &health.health, &mut client, &mut stop).await;
}

#[async_trait::async_trait]
impl crate::chat::lease::Connection for Client {
    async fn connect(&mut self) -> Ended {
        match self.connect_once().await {
            End::Fatal(why) => Ended::Fatal(why),
            End::Again(why) => Ended::Again { why, wait: crate::chat::lease::reconnect_wait(self.failures) },
        }
    }
}

struct Client {
    mm: Arc<Mattermost>,
    asking: Arc<Asking>,
    /// The connection id and the next sequence number expected, to resume.
    resume: Option<(String, i64)>,
    /// Connections in a row that failed before `hello`: the backoff.
    failures: i64,
}

impl Client {
    fn url(&self) -> Result<reqwest::Url, String> {
        let mut url = self.mm.url.clone();
        let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
        url.set_scheme(scheme).map_err(|()| "cannot make a WebSocket URL of mattermost.url".to_string())?;
        let path = format!("{}/api/v4/websocket", url.path().trim_end_matches('/'));
        url.set_path(&path);
        if let Some((id, seq)) = &self.resume {
            url.query_pairs_mut().append_pair("connection_id", id).append_pair("sequence_number", &seq.to_string());
        }
        Ok(url)
    }

    async fn connect_once(&mut self) -> End {
        // Who medic is (its mentions, its own posts); a refused token stops here.
        let me = match self.mm.me().await {
            Ok(me) => me.clone(),
            Err(e) if e.contains("HTTP 401") => {
                return End::Fatal(format!(
                    "Mattermost refused the bot token ({e}): mattermost.bot_token is wrong or was revoked; not retried"
                ));
            }
            Err(e) => {
                self.failures += 1;
                return End::Again(format!("GET /users/me: {e}"));
            }
        };
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let url = match self.url() {
            Ok(u) => u,
            Err(e) => return End::Fatal(e),
        };
        let mut request = match url.as_str().into_client_request() {
            Ok(r) => r,
            Err(e) => return End::Fatal(format!("the WebSocket URL: {e}")),
        };
        let bearer = format!("Bearer {}", self.mm.token.expose());
        match bearer.parse() {
            Ok(v) => request.headers_mut().insert("authorization", v),
            Err(_) => return End::Fatal("mattermost.bot_token is not a valid header value".into()),
        };
        let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .max_message_size(Some(MAX_FRAME))
            .max_frame_size(Some(MAX_FRAME));
        let mut ws = match tokio_tungstenite::connect_async_with_config(request, Some(config), false).await {
            Ok((ws, _)) => ws,
            Err(e) => {
                self.failures += 1;
                return End::Again(format!("cannot connect to the WebSocket: {e}"));
            }
        };
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.tick().await;
        let mut heard = Instant::now();
        loop {
            let frame = tokio::select! {
                f = ws.next() => f,
                _ = ping.tick() => {
                    if heard.elapsed() > SILENT_FOR {
                        return End::Again(format!("nothing from Mattermost for {}s", SILENT_FOR.as_secs()));
                    }
                    if let Err(e) = ws.send(Message::Ping(Default::default())).await {
                        return End::Again(format!("cannot ping: {e}"));
                    }
                    continue;
                }
            };
            heard = Instant::now();
            let text = match frame {
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(Message::Close(frame))) => {
                    return End::Again(format!("Mattermost closed the WebSocket: {frame:?}"));
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return End::Again(format!("the WebSocket failed: {e}")),
                None => return End::Again("the WebSocket ended".into()),
            };
            let Ok(event) = serde_json::from_str::<Value>(text.as_str()) else { continue };
            let seq = event["seq"].as_i64();
            if event["event"] == "hello" {
                let id = event["data"]["connection_id"].as_str().unwrap_or_default().to_string();
                if self.resume.as_ref().is_some_and(|(known, _)| *known != id) {
                    // The server could not resume (restarted, or medic was away too long): what
                    // was posted meanwhile is not replayed.
                    tracing::warn!(
                        "Mattermost started a new WebSocket session: posts made while medic was disconnected are not replayed"
                    );
                }
                self.resume = Some((id, seq.unwrap_or(0) + 1));
                self.failures = 0;
                self.mm.health.set(State::Connected);
                tracing::info!("Mattermost WebSocket connected");
                continue;
            }
            // Every event is numbered; a gap means some were not delivered: reconnect, and the
            // server replays from the first one missed (as Mattermost's own clients do).
            if let (Some(seq), Some((_, next))) = (seq, &mut self.resume) {
                if seq > *next {
                    return End::Again(format!("WebSocket events {next} to {} were missed; resuming", seq - 1));
                }
                *next = seq + 1;
            }
            if event["event"] == "posted" {
                let (mm, asking, me) = (self.mm.clone(), self.asking.clone(), me.clone());
                tokio::spawn(async move {
                    if let Err(e) = posted(&mm, &asking, &me, &event["data"]).await {
                        tracing::warn!(error = %format!("{e:#}"), "a Mattermost post could not be answered");
                    }
                });
            }
        }
    }
}

/// A `posted` event's data: answers the post when it asks medic something.
async fn posted(mm: &Mattermost, asking: &Asking, me: &(String, String), data: &Value) -> anyhow::Result<()> {
    let post: Value = serde_json::from_str(data["post"].as_str().unwrap_or("null"))?;
    let (Some(id), Some(user), Some(channel)) =
        (post["id"].as_str(), post["user_id"].as_str(), post["channel_id"].as_str())
    else {
        return Ok(());
    };
    // medic's own posts, other bots' and system messages are never answered.
    let from_bot = post["props"]["from_bot"] == "true" || post["props"]["from_webhook"] == "true";
    if user == me.0 || from_bot || !post["type"].as_str().unwrap_or("").is_empty() {
        return Ok(());
    }
    let mentions: Vec<String> = serde_json::from_str(data["mentions"].as_str().unwrap_or("[]")).unwrap_or_default();
    let addressed = mentions.contains(&me.0) || data["channel_type"] == "D";
    let message = post["message"].as_str().unwrap_or("");
    let text = message.replace(&format!("@{}", me.1), " ").split_whitespace().collect::<Vec<_>>().join(" ");
    let root = post["root_id"].as_str().filter(|r| !r.is_empty());
    // Overheard: only a question medic understands, only in an incident's thread.
    if !addressed && !asking.understood(&text) {
        return Ok(());
    }
    let incident = match root {
        Some(r) => asking.store.incident_for_message("mattermost", Some(channel), r).await?,
        None => None,
    };
    if !addressed && incident.is_none() {
        return Ok(());
    }
    if !asking.first("mattermost", &format!("post:{id}")).await? {
        return Ok(());
    }
    let q = mm.question(asking, &text, incident, user, channel, addressed).await;
    let reply = asking.ask(&q).await;
    mm.answer(channel, Some(root.unwrap_or(id)), user, &reply).await;
    Ok(())
}
