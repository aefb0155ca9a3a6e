//! Discord end to end against a local fake of Discord's REST API that records every call: an
//! alert becomes one message with an embed and buttons; a correctly signed click from a member
//! with an allowed role runs the plan once and the message is edited; replays run nothing more;
//! a member without the role gets an ephemeral refusal; a bad signature or a stale timestamp
//! gets 401; PING gets PONG; Reject opens a modal and its reason is recorded; a 429 is retried
//! after its `retry_after`; progress goes to a thread started on the message.

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
                        axum::Json(json!({"id": id(), "channel_id": c})).into_response()
                    }
                    ("POST", ["channels", _, "messages", m, "threads"]) => {
                        f.threads.lock().unwrap().push(m.to_string());
                        axum::Json(json!({"id": m, "type": 11})).into_response()
                    }
                    ("PATCH", ["channels", _, "messages", m]) => axum::Json(json!({"id": m})).into_response(),
                    ("POST", ["webhooks", _, _]) => axum::Json(json!({"id": id()})).into_response(),
                    ("PATCH", ["webhooks", _, _, "messages", "@original"]) => axum::Json(json!({"id": id()})).into_response(),
                    ("PUT", ["applications", _, "commands"]) => axum::Json(v_body(&f)).into_response(),
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

both_stores!(role_approves_once_others_refused, reject_asks_why, commands_are_registered_and_answered);
