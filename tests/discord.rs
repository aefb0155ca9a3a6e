//! Discord end to end against a local fake of Discord's REST API that records every call: an
//! alert becomes one message with an embed and buttons; a correctly signed click from a member
//! with an allowed role runs the plan once and the message is edited; replays run nothing more;
//! a member without the role gets an ephemeral refusal; a bad signature or a stale timestamp
//! gets 401; PING gets PONG; Reject opens a modal and its reason is recorded; a 429 is retried
//! after its `retry_after`; progress goes to a thread started on the message.
//!
//! The Gateway (`discord.mode: gateway`) against a fake gateway speaking the documented
//! opcodes (HELLO, IDENTIFY, READY, heartbeats and their ACKs, RESUME, RESUMED, close codes) on
//! a loopback WebSocket, found through the fake REST API's `GET /gateway/bot`: a mention in an
//! incident's thread is answered once, a DM is answered, chatter is not; a click arriving as
//! `INTERACTION_CREATE` approves exactly once; a dropped connection resumes and answers nothing
//! twice; of two replicas one holds the connection and the other takes over when it stops;
//! close code 4004 is reported in `/readyz`, not retried.

mod common;

use axum::extract::{Path, State};
use common::{Db, TestApp, poll_until};
use ed25519_dalek::{Signer, SigningKey};
use medic::config::Config;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ROLE_SRE: &str = "41771983423143936";
const ROLE_OTHER: &str = "41771983423143999";
const MEMBER: &str = "80351110224678912";

#[derive(Default)]
struct Fake {
    calls: Mutex<Vec<(String, String, Value, Instant)>>,
    throttle: AtomicUsize,
    threads: Mutex<Vec<String>>,
    next: AtomicUsize,
    /// What `GET /gateway/bot` hands out.
    gateway: Mutex<String>,
    /// The ids of the messages created in the incidents' channel, in order.
    created: Mutex<Vec<String>>,
}

impl Fake {
    fn calls(&self, method: &str, path_part: &str) -> Vec<(String, Value)> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(m, p, _, _)| m == method && p.contains(path_part))
            .map(|(_, p, b, _)| (p.clone(), b.clone()))
            .collect()
    }
}

/// A multipart body as the fake records it: its `payload_json`, and each file part's name and
/// whether it is a PNG.
fn multipart_json(body: &[u8]) -> Value {
    let text = String::from_utf8_lossy(body);
    let payload = text
        .split("name=\"payload_json\"")
        .nth(1)
        .and_then(|rest| rest.split("\r\n\r\n").nth(1))
        .and_then(|p| p.split("\r\n--").next())
        .and_then(|p| serde_json::from_str::<Value>(p).ok())
        .unwrap_or(Value::Null);
    let png = body.windows(8).any(|w| w == b"\x89PNG\r\n\x1a\n");
    json!({"payload_json": payload, "file": text.contains("name=\"files[0]\"; filename=\"chart.png\""), "png": png})
}

/// The commands as registered (the last PUT's body).
fn v_body(f: &Fake) -> Value {
    f.calls.lock().unwrap().last().map(|c| c.2.clone()).unwrap_or(Value::Null)
}

async fn fake_discord(fake: Arc<Fake>) -> String {
    use axum::http::{Method, StatusCode};
    use axum::response::IntoResponse;
    let app = axum::Router::new()
        .route(
            "/api/v10/{*path}",
            axum::routing::any(|State(f): State<Arc<Fake>>, method: Method, Path(path): Path<String>, headers: axum::http::HeaderMap, body: axum::body::Bytes| async move {
                assert_eq!(headers.get("authorization").and_then(|v| v.to_str().ok()), Some("Bot discord-bot-token"));
                let multipart = headers.get("content-type").and_then(|v| v.to_str().ok()).is_some_and(|c| c.starts_with("multipart/form-data"));
                let v: Value = if multipart { multipart_json(&body) } else { serde_json::from_slice(&body).unwrap_or(Value::Null) };
                f.calls.lock().unwrap().push((method.to_string(), path.clone(), v, Instant::now()));
                let parts: Vec<&str> = path.split('/').collect();
                let id = || format!("13100000000000{:05}", f.next.fetch_add(1, Ordering::SeqCst));
                match (method.as_str(), parts.as_slice()) {
                    ("POST", ["channels", c, "messages"]) => {
                        if f.throttle.load(Ordering::SeqCst) > 0 {
                            f.throttle.fetch_sub(1, Ordering::SeqCst);
                            return (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")],
                                    axum::Json(json!({"message": "You are being rate limited.", "retry_after": 1.0, "global": false}))).into_response();
                        }
                        let is_thread_of_message = f.calls.lock().unwrap().iter().any(|(m, p, _, _)| m == "POST" && p == &format!("channels/{}", c)) ;
                        let known_channel = *c == "1193522112795029544" || f.threads.lock().unwrap().contains(&c.to_string());
                        if !known_channel && !is_thread_of_message {
                            return (StatusCode::NOT_FOUND, axum::Json(json!({"message": "Unknown Channel", "code": 10003}))).into_response();
                        }
                        let id = id();
                        if *c == "1193522112795029544" {
                            f.created.lock().unwrap().push(id.clone());
                        }
                        axum::Json(json!({"id": id, "channel_id": c})).into_response()
                    }
                    ("POST", ["channels", _, "messages", m, "threads"]) => {
                        f.threads.lock().unwrap().push(m.to_string());
                        axum::Json(json!({"id": m, "type": 11})).into_response()
                    }
                    ("PATCH", ["channels", _, "messages", m]) => axum::Json(json!({"id": m})).into_response(),
                    ("POST", ["webhooks", _, _]) => axum::Json(json!({"id": id()})).into_response(),
                    ("PATCH", ["webhooks", _, _, "messages", "@original"]) => axum::Json(json!({"id": id()})).into_response(),
                    ("PUT", ["applications", _, "commands"]) => axum::Json(v_body(&f)).into_response(),
                    ("GET", ["gateway", "bot"]) => axum::Json(json!({
                        "url": f.gateway.lock().unwrap().clone(), "shards": 1,
                        "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 14400000, "max_concurrency": 1}
                    })).into_response(),
                    // Discord answers an interaction callback with 204 No Content.
                    ("POST", ["interactions", _, _, "callback"]) => StatusCode::NO_CONTENT.into_response(),
                    _ => (StatusCode::NOT_FOUND, axum::Json(json!({"message": "404: Not Found", "code": 0}))).into_response(),
                }
            }),
        )
        .with_state(fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

struct Setup {
    app: TestApp,
    fake: Arc<Fake>,
    key: SigningKey,
    restarts: Arc<AtomicUsize>,
    _dir: tempfile::TempDir,
}

async fn setup(db: Db, throttle: usize) -> Option<Setup> {
    setup_with(db, throttle, "").await
}

async fn setup_with(db: Db, throttle: usize, extra: &str) -> Option<Setup> {
    let fake = Arc::new(Fake::default());
    fake.throttle.store(throttle, Ordering::SeqCst);
    let api = fake_discord(fake.clone()).await;
    let restarts = Arc::new(AtomicUsize::new(0));
    let deploy = common::chat::deploy_api(restarts.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let runbooks = common::chat::runbooks(dir.path(), &deploy);
    std::fs::write(dir.path().join("token"), "discord-bot-token").unwrap();
    let key = SigningKey::from_bytes(&[7u8; 32]);
    let yaml = format!(
        "runbooks: {runbooks}\nincidents: {{resolve_grace: 1s}}\n\
         responders:\n  groups:\n    sre: ['discord:role:{ROLE_SRE}']\n\
         executor:\n  http_allowed_hosts: ['{deploy}']\n\
         discord:\n  bot_token: {{file: {token}}}\n  application_id: '1219634837219086418'\n\
         \x20 public_key: {public}\n  api_url: {api}\n  default_channel: '1193522112795029544'\n{extra}",
        runbooks = runbooks.display(),
        token = dir.path().join("token").display(),
        public = hex::encode(key.verifying_key().to_bytes()),
    );
    let app = TestApp::spawn(db, Config::parse(&yaml, "discord.yaml").unwrap()).await?;
    Some(Setup { app, fake, key, restarts, _dir: dir })
}

/// A fixture as one interaction: its own interaction id (as every delivery Discord makes).
fn fixture(name: &str, user: &str, role: &str, custom_id: &str, reason: &str) -> String {
    static ID: AtomicUsize = AtomicUsize::new(0);
    let id = format!("\"id\": \"{}\"", 1310354170996129833 + ID.fetch_add(1, Ordering::SeqCst) as u64);
    String::from_utf8(common::fixture(&format!("discord/{name}")))
        .unwrap()
        .replace("\"id\": \"1310354170996129833\"", &id)
        .replace("USER_ID", user)
        .replace("ROLE_ID", role)
        .replace("CUSTOM_ID", custom_id)
        .replace("REASON", reason)
}

impl Setup {
    /// POSTs an interaction signed with `key` at `ts` (default: now).
    async fn send(&self, body: &str, key: &SigningKey, ts: Option<i64>) -> (reqwest::StatusCode, Value) {
        let ts = ts.unwrap_or_else(|| chrono::Utc::now().timestamp()).to_string();
        let sig = hex::encode(key.sign(format!("{ts}{body}").as_bytes()).to_bytes());
        let headers = [("x-signature-ed25519", sig.as_str()), ("x-signature-timestamp", ts.as_str())];
        self.app.post("/discord/interactions", body.to_string(), &headers).await
    }

    async fn root(&self) -> Value {
        poll_until(20, || async {
            self.fake
                .calls("POST", "channels/1193522112795029544/messages")
                .into_iter()
                .map(|(_, b)| b)
                .find(|b| b["embeds"].is_array())
        })
        .await
        .expect("a root message within 20 s")
    }
}

fn custom_id(root: &Value, prefix: &str) -> String {
    root["components"][0]["components"]
        .as_array()
        .unwrap_or_else(|| panic!("no buttons in {root:#}"))
        .iter()
        .filter_map(|b| b["custom_id"].as_str())
        .find(|c| c.starts_with(prefix))
        .unwrap()
        .to_string()
}

/// Whether a message body sets `allowed_mentions` so that nothing in it pings anyone.
fn mentions_none(body: &Value) -> bool {
    let m = &body["allowed_mentions"];
    let empty = |k: &str| m[k].is_null() || m[k] == json!([]);
    m["parse"] == json!([]) && empty("users") && empty("roles")
}

async fn role_approves_once_others_refused(db: Db) {
    let Some(s) = setup(db, 0).await else { return };
    // PING → PONG, signed; unsigned and stale requests are refused.
    let ping = fixture("ping.json", MEMBER, ROLE_SRE, "", "");
    let (status, pong) = s.send(&ping, &s.key, None).await;
    assert_eq!((status.as_u16(), pong["type"].as_u64()), (200, Some(1)), "PONG: {pong}");
    let intruder = SigningKey::from_bytes(&[9u8; 32]);
    assert_eq!(s.send(&ping, &intruder, None).await.0, 401);
    assert_eq!(s.send(&ping, &s.key, Some(chrono::Utc::now().timestamp() - 301)).await.0, 401);

    assert_eq!(s.app.post("/v1/alerts/generic", common::chat::alert("firing"), &[]).await.0, 200);
    let root = s.root().await;
    assert_eq!((root["nonce"].as_str(), root["enforce_nonce"].as_bool()), (Some("medic-1"), Some(true)), "posted once");
    let embed = &root["embeds"][0];
    assert_eq!(embed["title"], "Incident #1: ChatTest on checkout");
    assert_eq!(embed["color"], 0xe0_1e_5a, "critical is red");
    assert!(embed["fields"].to_string().contains("checkout needs a restart"), "{embed:#}");
    let approve = custom_id(&root, "approve:");
    assert!(approve.len() <= 100);
    let posts = s.fake.calls("POST", "channels/1193522112795029544/messages").len();
    assert_eq!(posts, 1, "one root message");
    assert!(mentions_none(&root), "no text of an incident pings anyone: {root:#}");

    // A member without the role: the answer is an ephemeral refusal (decided before Discord is
    // answered), nothing runs.
    let (status, v) =
        s.send(&fixture("component.json", "80351110224670000", ROLE_OTHER, &approve, ""), &s.key, None).await;
    assert_eq!((status.as_u16(), v["type"].as_u64()), (200, Some(4)), "answered with the reply: {v}");
    let reply = &v["data"];
    assert_eq!(reply["flags"], 64, "ephemeral: {v}");
    assert!(mentions_none(reply), "{v}");
    assert!(reply["content"].as_str().unwrap().contains("sre"), "{v}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.restarts.load(Ordering::SeqCst), 0);

    // The member with the role; the same delivery replayed twice.
    let ok = fixture("component.json", MEMBER, ROLE_SRE, &approve, "");
    for _ in 0..3 {
        assert_eq!(s.send(&ok, &s.key, None).await.0, 200);
    }
    poll_until(15, || async { (s.restarts.load(Ordering::SeqCst) == 1).then_some(()) }).await.expect("the plan ran");
    // 30 s: on a loaded CI machine one edit may time out and be retried after the outbox's
    // backoff (1 s, 2 s, 4 s, 8 s), which alone is 15 s.
    let edited = poll_until(30, || async {
        s.fake
            .calls("PATCH", "messages/")
            .into_iter()
            .map(|(_, b)| b)
            .rev()
            .find(|b| b.to_string().contains("verified"))
    })
    .await
    .unwrap_or_else(|| panic!("no edit saying verified: {:#?}", s.fake.calls("PATCH", "")));
    let left: Vec<&str> = edited["components"][0]["components"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["custom_id"].as_str())
        .collect();
    assert_eq!(left, ["ask:1"], "the plan's buttons removed, Ask stays: {edited:#}");
    assert!(mentions_none(&edited), "{edited:#}");
    assert_eq!(edited["embeds"][0]["color"], 0x2e_b8_86, "green once verified");
    assert!(!s.fake.threads.lock().unwrap().is_empty(), "a thread was started on the message");
    let thread_lines: Vec<String> = s
        .fake
        .calls("POST", "messages")
        .into_iter()
        .filter(|(p, _)| !p.contains("1193522112795029544"))
        .map(|(_, b)| b["content"].to_string())
        .collect();
    assert!(thread_lines.iter().any(|t| t.contains(&format!("approved by discord:{MEMBER}"))), "{thread_lines:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(s.restarts.load(Ordering::SeqCst), 1, "executed exactly once");
    s.app.stop().await.unwrap();
}

async fn reject_asks_why(db: Db) {
    let Some(s) = setup(db, 1).await else { return };
    assert_eq!(s.app.post("/v1/alerts/generic", common::chat::alert("firing"), &[]).await.0, 200);
    let root = s.root().await;
    poll_until(20, || async {
        (s.fake.calls("POST", "channels/1193522112795029544/messages").len() >= 2).then_some(())
    })
    .await
    .expect("the message again after the 429");
    {
        let calls = s.fake.calls.lock().unwrap();
        let posts: Vec<&Instant> = calls
            .iter()
            .filter(|(m, p, _, _)| m == "POST" && p.ends_with("1193522112795029544/messages"))
            .map(|(_, _, _, t)| t)
            .collect();
        assert!(
            posts.len() >= 2 && posts[1].duration_since(*posts[0]) >= Duration::from_millis(900),
            "a 429, then after retry_after"
        );
    }
    let reject = custom_id(&root, "reject:");
    let (status, modal) = s.send(&fixture("component.json", MEMBER, ROLE_SRE, &reject, ""), &s.key, None).await;
    assert_eq!((status.as_u16(), modal["type"].as_u64()), (200, Some(9)), "a modal: {modal}");
    let modal_id = modal["data"]["custom_id"].as_str().unwrap().to_string();
    let submit = fixture("modal_submit.json", MEMBER, ROLE_SRE, &modal_id, "the owner is already rolling back");
    assert_eq!(s.send(&submit, &s.key, None).await.0, 200);
    poll_until(10, || async {
        s.fake.calls("POST", "messages").into_iter().find(|(_, b)| {
            b["content"]
                .as_str()
                .is_some_and(|t| t.contains("rejected by discord:") && t.contains("already rolling back"))
        })
    })
    .await
    .expect("the rejection and its reason in the thread");
    assert_eq!(s.restarts.load(Ordering::SeqCst), 0);

    // An incident no runbook matches reaches Discord too (its template failed without a plan,
    // silently), and `/readyz` shows no failed delivery.
    let disk = serde_json::json!({"alerts": [{"name": "DiskFull", "status": "firing",
        "labels": {"service": "db", "severity": "critical", "instance": "db-1"}}]});
    assert_eq!(s.app.post("/v1/alerts/generic", disk.to_string(), &[]).await.0, 200);
    let posted = poll_until(20, || async {
        s.fake
            .calls("POST", "channels/1193522112795029544/messages")
            .into_iter()
            .map(|(_, b)| b)
            .find(|b| b["embeds"][0]["title"].as_str().is_some_and(|t| t.contains("DiskFull")))
    })
    .await
    .expect("the incident with no plan is posted");
    assert!(posted["embeds"][0]["fields"].to_string().contains("No plan"), "{posted:#}");
    let (_, ready) = s.app.get("/readyz").await;
    assert_eq!(ready["degraded"], serde_json::json!([]), "{ready:#}");
    s.app.stop().await.unwrap();
}

/// `/medic` is registered at start by bulk overwrite; `/medic ask` is deferred at once and
/// answered by editing the deferred response; the Ask button opens a modal whose question is
/// answered the same way; `/medic pause` from a member without the role is deferred
/// ephemeral and refused.
async fn commands_are_registered_and_answered(db: Db) {
    let prometheus = format!("context:\n  prometheus: {{url: '{}'}}\n", common::chat::prometheus().await);
    let Some(s) = setup_with(db, 0, &prometheus).await else { return };
    let (_, registered) = poll_until(10, || async {
        s.fake.calls("PUT", "applications/1219634837219086418/commands").into_iter().next()
    })
    .await
    .expect("the commands are registered at start");
    assert_eq!(registered[0]["name"], "medic");
    assert_eq!(registered[0]["options"][0]["name"], "ask");
    assert_eq!(s.app.post("/v1/alerts/generic", common::chat::alert("firing"), &[]).await.0, 200);
    let root = s.root().await;
    let answers = || s.fake.calls("PATCH", "webhooks/1219634837219086418/");
    let command = |user: &str, sub: &str, q: &str| {
        fixture("command.json", user, ROLE_SRE, "", "").replace("\"SUB\"", &format!("{sub:?}")).replace("QUESTION", q)
    };
    let (status, v) = s.send(&command(MEMBER, "ask", "what changed in checkout?"), &s.key, None).await;
    assert_eq!((status.as_u16(), v["type"].as_u64()), (200, Some(5)), "deferred: {v}");
    let (path, answer) = poll_until(10, || async { answers().into_iter().next() }).await.expect("the answer");
    // The same signed interaction delivered three more times is answered once.
    let once = command(MEMBER, "ask", "what changed in checkout?");
    for _ in 0..3 {
        assert_eq!(s.send(&once, &s.key, None).await.0.as_u16(), 200);
    }
    poll_until(10, || async { (answers().len() >= 2).then_some(()) }).await.expect("answered");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(answers().len(), 2, "one answer per interaction");
    assert!(path.ends_with("/messages/@original"), "{path}");
    // As Discord shows it: the backslashes that neutralise markdown in values are not shown.
    assert!(answer["embeds"][0].to_string().replace("\\\\", "").contains("change(s) to checkout"), "{answer:#}");
    assert!(mentions_none(&answer), "{answer}");

    // A metric answer carries its chart: a PNG attached and shown in the embed.
    let (_, v) = s.send(&command(MEMBER, "ask", "show checkout error rate for the last hour"), &s.key, None).await;
    assert_eq!(v["type"].as_u64(), Some(5));
    let (_, charted) = poll_until(10, || async { answers().into_iter().find(|(_, b)| b["file"] == true) })
        .await
        .unwrap_or_else(|| panic!("an answer with a chart: {:#?}", answers()));
    assert_eq!(charted["png"], true, "{charted}");
    let payload = &charted["payload_json"];
    assert_eq!(payload["embeds"][0]["image"]["url"], "attachment://chart.png", "{payload:#}");
    assert!(payload["embeds"][0]["title"].as_str().unwrap().replace('\\', "").contains("error_ratio of checkout"));

    let ask = custom_id(&root, "ask:");
    let (_, modal) = s.send(&fixture("component.json", MEMBER, ROLE_SRE, &ask, ""), &s.key, None).await;
    assert_eq!((modal["type"].as_u64(), modal["data"]["custom_id"].as_str()), (Some(9), Some(ask.as_str())), "{modal}");
    let submit = fixture("modal_submit.json", MEMBER, ROLE_SRE, &ask, "status").replace("\"reason\"", "\"question\"");
    let (status, v) = s.send(&submit, &s.key, None).await;
    assert_eq!((status.as_u16(), v["type"].as_u64()), (200, Some(5)), "{v}");
    poll_until(10, || async { answers().into_iter().find(|(_, b)| b.to_string().contains("Incident #1: ChatTest")) })
        .await
        .expect("the modal's question answered");

    let (_, v) = s.send(&command("80351110224670000", "pause", "pause"), &s.key, None).await;
    assert_eq!((v["type"].as_u64(), v["data"]["flags"].as_u64()), (Some(5), Some(64)), "ephemeral: {v}");
    poll_until(10, || async { answers().into_iter().find(|(_, b)| b.to_string().contains("Only members of")) })
        .await
        .expect("a refusal");
    assert!(s.app.store.paused().await.unwrap().is_none());
    s.app.stop().await.unwrap();
}

/// The Ticket button (shown when a tracker is configured) is the order `open a ticket for this`:
/// for the control group only, once per incident, answered privately.
async fn the_ticket_button_opens_one_ticket(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let (issues, extra) = common::chat::github_tickets(dir.path()).await;
    let Some(s) = setup_with(db, 0, &extra).await else { return };
    assert_eq!(s.app.post("/v1/alerts/generic", common::chat::alert("firing"), &[]).await.0, 200);
    let root = s.root().await;
    let ticket = custom_id(&root, "ticket:");
    assert_eq!(ticket, "ticket:1");
    let answers = || s.fake.calls("PATCH", "webhooks/1219634837219086418/");
    let said = |what: &'static str| async move {
        poll_until(10, || async { answers().into_iter().find(|(_, b)| b.to_string().contains(what)) }).await
    };
    // Outside the control group: refused privately, nothing opened.
    let (_, v) = s.send(&fixture("component.json", "80351110224670000", ROLE_OTHER, &ticket, ""), &s.key, None).await;
    assert_eq!((v["type"].as_u64(), v["data"]["flags"].as_u64()), (Some(5), Some(64)), "deferred, private: {v}");
    said("may open tickets").await.expect("a refusal");
    // The control group: one ticket; clicked again: none more.
    s.send(&fixture("component.json", MEMBER, ROLE_SRE, &ticket, ""), &s.key, None).await;
    said("Opening a ticket for incident #1 on github").await.expect("opened");
    s.send(&fixture("component.json", MEMBER, ROLE_SRE, &ticket, ""), &s.key, None).await;
    said("already has a ticket").await.expect("once");
    poll_until(10, || async { (issues.lock().unwrap().len() == 1).then_some(()) }).await.expect("the issue");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(issues.lock().unwrap().len(), 1, "one ticket per incident");
    s.app.stop().await.unwrap();
}

both_stores!(
    role_approves_once_others_refused,
    reject_asks_why,
    commands_are_registered_and_answered,
    the_ticket_button_opens_one_ticket
);

// ---- The Gateway -------------------------------------------------------------------------

/// The bot user's id (READY's `user.id`; mentions name it).
const BOT: &str = "1219634837219086418";
const GUILD: &str = "1193522112312623194";
const DM_CHANNEL: &str = "1200000000000000077";

/// A fake Discord Gateway: one session, `session-1`, the documented handshake and replay.
#[derive(Default)]
struct FakeGateway {
    identifies: AtomicUsize,
    resumes: AtomicUsize,
    heartbeats: AtomicUsize,
    /// A close code to answer IDENTIFY with (4004, 4014…).
    refuse: Mutex<Option<u16>>,
    intents: Mutex<Vec<u64>>,
    /// Every dispatch sent, with its sequence number, for a RESUME's replay.
    events: Mutex<Vec<Value>>,
    seq: AtomicUsize,
    /// The live connections: `Some(frame)` to send, `None` to drop the TCP connection.
    live: Mutex<Vec<tokio::sync::mpsc::UnboundedSender<Option<Value>>>>,
    resume_url: Mutex<String>,
}

impl FakeGateway {
    async fn serve(self: Arc<Self>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}", listener.local_addr().unwrap());
        *self.resume_url.lock().unwrap() = format!("{url}/resume");
        let me = self.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(me.clone().connection(tcp));
            }
        });
        url
    }

    async fn connection(self: Arc<Self>, tcp: tokio::net::TcpStream) {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        use tokio_tungstenite::tungstenite::protocol::{CloseFrame, frame::coding::CloseCode};
        // tungstenite's callback type is its own (a large error variant).
        #[allow(clippy::result_large_err)]
        let check = |req: &tokio_tungstenite::tungstenite::handshake::server::Request, resp| {
            let q = req.uri().query().unwrap_or("");
            assert!(q.contains("v=10") && q.contains("encoding=json"), "connect with ?v=10&encoding=json: {q}");
            Ok(resp)
        };
        let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, check).await else { return };
        let text = |v: Value| Message::Text(v.to_string().into());
        ws.send(text(json!({"op": 10, "d": {"heartbeat_interval": 500}, "s": null, "t": null}))).await.unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Option<Value>>();
        loop {
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(Some(v)) => { if ws.send(text(v)).await.is_err() { return } }
                    _ => return, // dropped without a close frame
                },
                msg = ws.next() => {
                    let Some(Ok(Message::Text(t))) = msg else { return };
                    let v: Value = serde_json::from_str(t.as_str()).expect("the client sends JSON");
                    match v["op"].as_u64() {
                        Some(2) => {
                            self.identifies.fetch_add(1, Ordering::SeqCst);
                            self.intents.lock().unwrap().push(v["d"]["intents"].as_u64().unwrap());
                            let refuse = *self.refuse.lock().unwrap();
                            let code = if v["d"]["token"] != "discord-bot-token" { Some(4004) } else { refuse };
                            if let Some(code) = code {
                                let frame = CloseFrame { code: CloseCode::from(code), reason: "Authentication failed.".into() };
                                let _ = ws.close(Some(frame)).await;
                                return;
                            }
                            let s = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
                            let ready = json!({"op": 0, "s": s, "t": "READY", "d": {
                                "v": 10, "user": {"id": BOT, "username": "medic", "bot": true, "discriminator": "0"},
                                "guilds": [{"id": GUILD, "unavailable": true}], "session_id": "session-1",
                                "resume_gateway_url": self.resume_url.lock().unwrap().clone(), "application": {"id": BOT, "flags": 0}}});
                            ws.send(text(ready)).await.unwrap();
                            self.live.lock().unwrap().push(tx.clone());
                        }
                        Some(6) => {
                            self.resumes.fetch_add(1, Ordering::SeqCst);
                            assert_eq!(v["d"]["session_id"], "session-1", "{v}");
                            assert_eq!(v["d"]["token"], "discord-bot-token");
                            let after = v["d"]["seq"].as_u64().unwrap_or(0);
                            let missed: Vec<Value> = self.events.lock().unwrap().iter()
                                .filter(|e| e["s"].as_u64().unwrap() > after).cloned().collect();
                            for e in missed {
                                ws.send(text(e)).await.unwrap();
                            }
                            let s = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
                            ws.send(text(json!({"op": 0, "s": s, "t": "RESUMED", "d": {}}))).await.unwrap();
                            self.live.lock().unwrap().push(tx.clone());
                        }
                        Some(1) => {
                            self.heartbeats.fetch_add(1, Ordering::SeqCst);
                            ws.send(text(json!({"op": 11}))).await.unwrap();
                        }
                        other => panic!("an opcode the client should not send: {other:?} in {v}"),
                    }
                }
            }
        }
    }

    /// Sends a dispatch to every live connection (none live: it waits for a RESUME's replay).
    fn dispatch(&self, t: &str, d: Value) {
        let s = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        let e = json!({"op": 0, "s": s, "t": t, "d": d});
        self.events.lock().unwrap().push(e.clone());
        self.live.lock().unwrap().retain(|tx| tx.send(Some(e.clone())).is_ok());
    }

    fn drop_connections(&self) {
        for tx in self.live.lock().unwrap().drain(..) {
            let _ = tx.send(None);
        }
    }

    fn live(&self) -> usize {
        self.live.lock().unwrap().retain(|tx| !tx.is_closed());
        self.live.lock().unwrap().len()
    }
}

/// A replica in gateway mode (no public key: no HTTP endpoint) named `owner`, on `db`.
struct Replica {
    app: TestApp,
    _dir: tempfile::TempDir,
}

async fn gateway_replica(
    db: Option<&TestApp>,
    kind: Db,
    api: &str,
    owner: &str,
    restarts: &Arc<AtomicUsize>,
) -> Option<Replica> {
    let deploy = common::chat::deploy_api(restarts.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let runbooks = common::chat::runbooks(dir.path(), &deploy);
    std::fs::write(dir.path().join("token"), "discord-bot-token").unwrap();
    let yaml = format!(
        "runbooks: {runbooks}\nincidents: {{resolve_grace: 1s}}\n\
         responders:\n  groups:\n    sre: ['discord:role:{ROLE_SRE}']\n\
         executor:\n  owner: {owner}\n  http_allowed_hosts: ['{deploy}']\n\
         discord:\n  bot_token: {{file: {token}}}\n  application_id: '1219634837219086418'\n\
         \x20 mode: gateway\n  api_url: {api}\n  default_channel: '1193522112795029544'\n",
        runbooks = runbooks.display(),
        token = dir.path().join("token").display(),
    );
    let config = Config::parse(&yaml, "discord.yaml").unwrap();
    let app = match db {
        Some(first) => first.replica(config).await,
        None => TestApp::spawn(kind, config).await?,
    };
    Some(Replica { app, _dir: dir })
}

/// A message in `channel` by `user`, as `MESSAGE_CREATE` carries it; `guild: false` for a DM.
fn message(id: &str, channel: &str, user: &str, content: &str, mentions_bot: bool, guild: bool) -> Value {
    let author = json!({"id": user, "username": "alice", "discriminator": "0", "global_name": "Alice", "avatar": null});
    let mut m = json!({
        "id": id, "channel_id": channel, "author": author, "content": content,
        "timestamp": "2026-12-07T18:00:00.000000+00:00", "edited_timestamp": null, "tts": false,
        "mention_everyone": false, "mention_roles": [], "attachments": [], "embeds": [], "pinned": false, "type": 0,
        "mentions": if mentions_bot { json!([{"id": BOT, "username": "medic", "bot": true, "discriminator": "0"}]) } else { json!([]) },
    });
    if guild {
        m["guild_id"] = json!(GUILD);
        m["member"] = json!({"roles": [ROLE_SRE], "joined_at": "2024-01-08T12:37:51.553000+00:00", "deaf": false, "mute": false, "flags": 0});
    }
    m
}

/// Answers to message `id`: medic's replies that reference it.
fn replies_to(fake: &Fake, id: &str) -> Vec<(String, Value)> {
    fake.calls("POST", "/messages")
        .into_iter()
        .filter(|(_, b)| {
            b["message_reference"]["message_id"] == id || b["payload_json"]["message_reference"]["message_id"] == id
        })
        .collect()
}

async fn gateway_answers_mentions_dms_and_clicks_once(db: Db) {
    let fake = Arc::new(Fake::default());
    let gateway = Arc::new(FakeGateway::default());
    *fake.gateway.lock().unwrap() = gateway.clone().serve().await;
    fake.threads.lock().unwrap().push(DM_CHANNEL.into());
    let api = fake_discord(fake.clone()).await;
    let restarts = Arc::new(AtomicUsize::new(0));
    let Some(r) = gateway_replica(None, db, &api, "replica-a", &restarts).await else { return };
    poll_until(10, || async { (gateway.live() == 1).then_some(()) }).await.expect("connected");
    assert_eq!(*gateway.intents.lock().unwrap(), [1 + (1 << 9) + (1 << 12) + (1 << 15)], "the intents asked for");
    let (_, ready) = r.app.get("/readyz").await;
    assert_eq!(ready["discord_gateway"]["state"], "connected", "{ready:#}");
    // The HTTP endpoint is off without a public key.
    assert_eq!(r.app.post("/discord/interactions", "{}", &[]).await.0.as_u16(), 401);

    assert_eq!(r.app.post("/v1/alerts/generic", common::chat::alert("firing"), &[]).await.0, 200);
    // A thread started on a message has the message's id.
    let thread = poll_until(20, || async { fake.created.lock().unwrap().first().cloned() })
        .await
        .expect("the incident's message");
    poll_until(10, || async { r.app.store.incident_for_message("discord", None, &thread).await.unwrap() })
        .await
        .expect("its delivery recorded");
    fake.threads.lock().unwrap().push(thread.clone());

    // A mention in the incident's thread: answered once, in reply, mentioning no one.
    gateway.dispatch(
        "MESSAGE_CREATE",
        message("1400000000000000001", &thread, MEMBER, &format!("<@{BOT}> what changed in checkout?"), true, true),
    );
    let (path, answer) = poll_until(15, || async { replies_to(&fake, "1400000000000000001").into_iter().next() })
        .await
        .expect("the mention answered");
    assert_eq!(path, format!("channels/{thread}/messages"));
    assert!(answer.to_string().replace("\\\\", "").contains("change(s) to checkout"), "{answer:#}");
    assert!(mentions_none(&answer) && answer["allowed_mentions"]["replied_user"] == false, "{answer:#}");
    // Overheard in the thread: a question medic understands is answered; chatter is not.
    gateway.dispatch("MESSAGE_CREATE", message("1400000000000000002", &thread, MEMBER, "what changed?", false, true));
    gateway.dispatch("MESSAGE_CREATE", message("1400000000000000003", &thread, MEMBER, "lunch anyone?", false, true));
    // medic's own message and another bot's are never answered.
    let mut own = message("1400000000000000004", &thread, BOT, &format!("<@{BOT}> status"), true, true);
    own["author"]["bot"] = json!(true);
    gateway.dispatch("MESSAGE_CREATE", own);
    // A DM.
    gateway.dispatch("MESSAGE_CREATE", message("1400000000000000005", DM_CHANNEL, MEMBER, "status", false, false));
    poll_until(15, || async { (!replies_to(&fake, "1400000000000000002").is_empty()).then_some(()) })
        .await
        .expect("the overheard question answered");
    let (dm_path, _) = poll_until(15, || async { replies_to(&fake, "1400000000000000005").into_iter().next() })
        .await
        .expect("the DM answered");
    assert_eq!(dm_path, format!("channels/{DM_CHANNEL}/messages"));

    // The connection drops; a message sent meanwhile arrives with the RESUME's replay; nothing
    // is answered twice.
    gateway.drop_connections();
    gateway.dispatch(
        "MESSAGE_CREATE",
        message("1400000000000000006", &thread, MEMBER, &format!("<@{BOT}> why?"), true, true),
    );
    poll_until(15, || async { (!replies_to(&fake, "1400000000000000006").is_empty()).then_some(()) })
        .await
        .expect("the message sent during the drop, answered after the resume");
    assert_eq!(
        (gateway.identifies.load(Ordering::SeqCst), gateway.resumes.load(Ordering::SeqCst)),
        (1, 1),
        "resumed, not identified again"
    );

    // A click as INTERACTION_CREATE, delivered twice: the plan runs once, one callback.
    let roots = fake.calls("POST", "channels/1193522112795029544/messages");
    let approve = custom_id(&roots.iter().find(|(_, b)| b["embeds"].is_array()).unwrap().1, "approve:");
    let click: Value = serde_json::from_str(&fixture("component.json", MEMBER, ROLE_SRE, &approve, "")).unwrap();
    gateway.dispatch("INTERACTION_CREATE", click.clone());
    gateway.dispatch("INTERACTION_CREATE", click.clone());
    poll_until(15, || async { (restarts.load(Ordering::SeqCst) == 1).then_some(()) })
        .await
        .expect("the click ran the plan");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(restarts.load(Ordering::SeqCst), 1, "executed exactly once");
    let callbacks = fake.calls("POST", "interactions/");
    assert_eq!(callbacks.len(), 1, "{callbacks:?}");
    assert_eq!(
        callbacks[0].0,
        format!("interactions/{}/{}/callback", click["id"].as_str().unwrap(), click["token"].as_str().unwrap())
    );
    for id in ["1400000000000000001", "1400000000000000002", "1400000000000000005", "1400000000000000006"] {
        assert_eq!(replies_to(&fake, id).len(), 1, "{id} answered once");
    }
    for id in ["1400000000000000003", "1400000000000000004"] {
        assert!(replies_to(&fake, id).is_empty(), "{id} not answered");
    }
    assert!(gateway.heartbeats.load(Ordering::SeqCst) >= 1, "heartbeats");
    r.app.stop().await.unwrap();
}

/// Two replicas: one holds the gateway; when it stops, the other connects.
async fn one_replica_holds_the_gateway_and_another_takes_over(db: Db) {
    let fake = Arc::new(Fake::default());
    let gateway = Arc::new(FakeGateway::default());
    *fake.gateway.lock().unwrap() = gateway.clone().serve().await;
    let api = fake_discord(fake.clone()).await;
    let restarts = Arc::new(AtomicUsize::new(0));
    let Some(a) = gateway_replica(None, db, &api, "replica-a", &restarts).await else { return };
    poll_until(10, || async { (gateway.live() == 1).then_some(()) }).await.expect("A connected");
    let b = gateway_replica(Some(&a.app), db, &api, "replica-b", &restarts).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(gateway.identifies.load(Ordering::SeqCst), 1, "B stands by");
    let (_, ready) = b.app.get("/readyz").await;
    assert_eq!(ready["discord_gateway"]["state"], "standing_by", "{ready:#}");
    // A's handle owns the database: kept until B is done with it.
    let _db = a.app.stop().await.unwrap();
    poll_until(20, || async { (gateway.identifies.load(Ordering::SeqCst) == 2 && gateway.live() == 1).then_some(()) })
        .await
        .expect("B took the connection over");
    gateway.dispatch("MESSAGE_CREATE", message("1400000000000000010", DM_CHANNEL, MEMBER, "help", false, false));
    fake.threads.lock().unwrap().push(DM_CHANNEL.into());
    poll_until(15, || async { (!replies_to(&fake, "1400000000000000010").is_empty()).then_some(()) })
        .await
        .expect("B answers");
    b.app.stop().await.unwrap();
}

/// Close code 4004 (authentication failed): reported in `/readyz` and the log, not retried;
/// the rest of medic goes on.
async fn authentication_failed_is_reported_not_retried(db: Db) {
    let fake = Arc::new(Fake::default());
    let gateway = Arc::new(FakeGateway::default());
    *gateway.refuse.lock().unwrap() = Some(4004);
    *fake.gateway.lock().unwrap() = gateway.clone().serve().await;
    let api = fake_discord(fake.clone()).await;
    let restarts = Arc::new(AtomicUsize::new(0));
    let Some(r) = gateway_replica(None, db, &api, "replica-a", &restarts).await else { return };
    let ready = poll_until(10, || async {
        let (_, ready) = r.app.get("/readyz").await;
        (ready["discord_gateway"]["state"] == "stopped").then_some(ready)
    })
    .await
    .expect("the gateway stopped");
    assert!(ready["discord_gateway"]["reason"].as_str().unwrap().contains("4004"), "{ready:#}");
    assert_eq!(ready["ready"], true);
    assert!(ready["degraded"].as_array().unwrap().contains(&json!("discord")), "{ready:#}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(gateway.identifies.load(Ordering::SeqCst), 1, "not retried");
    // The rest of medic goes on: an alert still reaches Discord over REST.
    assert_eq!(r.app.post("/v1/alerts/generic", common::chat::alert("firing"), &[]).await.0, 200);
    poll_until(20, || async { fake.calls("POST", "channels/1193522112795029544/messages").into_iter().next() })
        .await
        .expect("posted over REST");
    r.app.stop().await.unwrap();
}

both_stores!(
    gateway_answers_mentions_dms_and_clicks_once,
    one_replica_holds_the_gateway_and_another_takes_over,
    authentication_failed_is_reported_not_retried
);
