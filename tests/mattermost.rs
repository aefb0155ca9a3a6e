//! Mattermost end to end against a local fake of Mattermost's REST API v4 and WebSocket, speaking
//! the documented formats (`../shared/conformance/mattermost/`: the action request with its
//! `context`, the `update` / `ephemeral_text` answer, the slash command's form and `Token`
//! header), recording every call: an incident posts once and is patched through its states; an
//! Approve by a member of the approving group (a Mattermost group) executes once, by another
//! user is refused privately; a forged, replayed, misplaced or foreign action changes nothing;
//! Reject asks why in a dialog; a question by @mention, in a thread, in a DM, by the Ask dialog
//! and by `/medic` is answered in the thread once, also across a dropped connection and a lost
//! event (resumed as Mattermost's server replays); a refused order reaches its asker alone (by
//! DM: the fake, like Mattermost, lets no plain bot post ephemeral messages); dialogs stay within
//! Mattermost's limits; two replicas post once and hold one WebSocket; hostile label text is
//! escaped; a revoked token stops the WebSocket and shows in `/readyz`.

mod common;

use axum::extract::{Path, State};
use common::{Db, TestApp, poll_until};
use futures_util::{SinkExt, StreamExt};
use medic::config::Config;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

const BOT: &str = "b0t0000000000000000000000a";
const CHANNEL: &str = "c0000000000000000000000001";
const DM: &str = "d0000000000000000000000001";
const SRE_GROUP: &str = "g0000000000000000000000001";
/// In the channel and in the SRE group.
const ALICE: &str = "a1ice000000000000000000001";
/// In the channel, not in the group.
const BOB: &str = "b0b00000000000000000000001";
/// Not in the channel.
const EVE: &str = "e0e00000000000000000000001";
const TEAM: &str = "t0000000000000000000000001";

#[derive(Default)]
struct Fake {
    /// (method, path, body)
    calls: Mutex<Vec<(String, String, Value)>>,
    next: AtomicUsize,
    /// 429s to answer to the next `POST /posts`.
    throttle: AtomicUsize,
    ws: Mutex<WsState>,
    /// Sends to every live WebSocket.
    live: Mutex<Vec<tokio::sync::mpsc::UnboundedSender<Message>>>,
    connects: Mutex<Vec<String>>,
    /// `GET /users/me` answers 401 (a revoked bot token).
    refuse_token: std::sync::atomic::AtomicBool,
    /// Every post created: its id and body.
    created: Mutex<Vec<(String, Value)>>,
}

#[derive(Default)]
struct WsState {
    connection_id: String,
    seq: i64,
    /// Every event sent on the connection, for a resume to replay.
    log: Vec<(i64, Value)>,
}

impl Fake {
    fn calls(&self, method: &str, path_part: &str) -> Vec<(String, Value)> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(m, p, _)| m == method && p.contains(path_part))
            .map(|(_, p, b)| (p.clone(), b.clone()))
            .collect()
    }

    /// The incidents' root posts (no `root_id`, an attachment): their ids and bodies.
    fn roots(&self) -> Vec<(String, Value)> {
        let created = self.created.lock().unwrap();
        created
            .iter()
            .filter(|(_, b)| b["root_id"].is_null() && b["props"]["attachments"].is_array())
            .cloned()
            .collect()
    }

    fn replies_in(&self, root: &str) -> Vec<Value> {
        self.created.lock().unwrap().iter().filter(|(_, b)| b["root_id"] == root).map(|(_, b)| b.clone()).collect()
    }

    /// Sends a `posted` event on the WebSocket (logged for a resume when none is live).
    fn posted(&self, post: Value, channel_type: &str, mentions: &[&str]) {
        self.posted_or_lost(post, channel_type, mentions, true)
    }

    /// A `posted` event numbered and logged, but (`send: false`) lost on the way.
    fn posted_or_lost(&self, post: Value, channel_type: &str, mentions: &[&str], send: bool) {
        let data = json!({"channel_display_name": "incidents", "channel_name": "incidents", "channel_type": channel_type,
                          "post": post.to_string(), "sender_name": "@alice", "team_id": TEAM,
                          "mentions": serde_json::to_string(mentions).unwrap()});
        let mut ws = self.ws.lock().unwrap();
        ws.seq += 1;
        let event =
            json!({"event": "posted", "data": data, "broadcast": {"channel_id": post["channel_id"]}, "seq": ws.seq});
        let seq = ws.seq;
        ws.log.push((seq, event.clone()));
        if send {
            self.live.lock().unwrap().retain(|tx| tx.send(Message::text(event.to_string())).is_ok());
        }
    }

    fn drop_connections(&self) {
        self.live.lock().unwrap().clear();
    }

    fn live(&self) -> usize {
        self.live.lock().unwrap().iter().filter(|t| !t.is_closed()).count()
    }
}

fn id(n: usize) -> String {
    format!("p{n:025}")
}

fn post(id: &str, user: &str, channel: &str, root: &str, message: &str) -> Value {
    json!({"id": id, "create_at": 1_765_130_400_000i64, "update_at": 1_765_130_400_000i64, "edit_at": 0, "delete_at": 0,
           "is_pinned": false, "user_id": user, "channel_id": channel, "root_id": root, "original_id": "",
           "message": message, "type": "", "props": {}, "hashtags": "", "pending_post_id": ""})
}

async fn rest(
    State(f): State<Arc<Fake>>,
    method: axum::http::Method,
    Path(path): Path<String>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    assert_eq!(headers.get("authorization").and_then(|v| v.to_str().ok()), Some("Bearer mm-bot-token"));
    let multipart =
        headers.get("content-type").and_then(|v| v.to_str().ok()).is_some_and(|c| c.starts_with("multipart/"));
    let v: Value =
        if multipart { json!({"multipart": true}) } else { serde_json::from_slice(&body).unwrap_or(Value::Null) };
    f.calls.lock().unwrap().push((method.to_string(), path.clone(), v.clone()));
    let parts: Vec<&str> = path.split('/').collect();
    let not_found = |id: &str, msg: &str| {
        (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"id": id, "message": msg, "detailed_error": "", "request_id": "r", "status_code": 404})),
        )
            .into_response()
    };
    match (method.as_str(), parts.as_slice()) {
        ("GET", ["users", "me"]) if f.refuse_token.load(Ordering::SeqCst) => (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"id": "api.context.session_expired.app_error", "message": "Invalid or expired session, please login again.", "status_code": 401})),
        )
            .into_response(),
        ("GET", ["users", "me"]) => axum::Json(json!({"id": BOT, "username": "medic", "is_bot": true})).into_response(),
        ("POST", ["posts"]) => {
            if f.throttle.load(Ordering::SeqCst) > 0 {
                f.throttle.fetch_sub(1, Ordering::SeqCst);
                return (
                    StatusCode::TOO_MANY_REQUESTS,
                    [("x-ratelimit-reset", "1")],
                    axum::Json(
                        json!({"id": "api.context.rate_limited", "message": "rate limited", "status_code": 429}),
                    ),
                )
                    .into_response();
            }
            let mut p = v.clone();
            let new = id(f.next.fetch_add(1, Ordering::SeqCst));
            f.created.lock().unwrap().push((new.clone(), v.clone()));
            p["id"] = json!(new);
            p["user_id"] = json!(BOT);
            axum::Json(p).into_response()
        }
        ("PUT", ["posts", p, "patch"]) => {
            axum::Json(json!({"id": p, "message": v["message"], "props": v["props"]})).into_response()
        }
        // The bot is no system admin: Mattermost gives `create_post_ephemeral` to them only.
        ("POST", ["posts", "ephemeral"]) => (
            StatusCode::FORBIDDEN,
            axum::Json(json!({"id": "api.context.permissions.app_error", "message": "You do not have the appropriate permissions.", "status_code": 403})),
        )
            .into_response(),
        ("POST", ["channels", "direct"]) => {
            let other = v.as_array().and_then(|a| a.iter().filter_map(Value::as_str).find(|u| *u != BOT)).unwrap_or("");
            axum::Json(json!({"id": format!("dm{}", &other[2..]), "type": "D"})).into_response()
        }
        ("GET", ["channels", c, "members", u]) => {
            if *c == CHANNEL && [ALICE, BOB].contains(u) || *c == DM && *u == ALICE {
                axum::Json(json!({"channel_id": c, "user_id": u, "roles": "channel_user"})).into_response()
            } else {
                not_found(
                    "app.channel.get_member.missing.app_error",
                    "No channel member found for that user ID and channel ID.",
                )
            }
        }
        ("GET", ["groups", g, "members"]) if *g == SRE_GROUP => {
            axum::Json(json!({"members": [{"id": ALICE, "username": "alice"}], "total_member_count": 1}))
                .into_response()
        }
        ("POST", ["actions", "dialogs", "open"]) => match dialog_problem(&v) {
            // Mattermost's server-side limits on a dialog (those its web app mirrors).
            Some(why) => (StatusCode::BAD_REQUEST, axum::Json(json!({"id": "interactive_dialog.invalid", "message": why, "status_code": 400})))
                .into_response(),
            None => axum::Json(json!({})).into_response(),
        },
        ("POST", ["files"]) => {
            axum::Json(json!({"file_infos": [{"id": id(f.next.fetch_add(1, Ordering::SeqCst))}]})).into_response()
        }
        _ => not_found("api.context.404.app_error", "Sorry, we could not find the page."),
    }
}

/// What Mattermost would refuse in a dialog: a title or an element's display name over 24
/// characters, a name over 300, a `text` element longer than 150, a `textarea` longer than 3000,
/// no trigger id or URL.
fn dialog_problem(v: &Value) -> Option<String> {
    let d = &v["dialog"];
    if v["trigger_id"].as_str().unwrap_or("").is_empty() || v["url"].as_str().unwrap_or("").is_empty() {
        return Some("trigger_id and url are required".into());
    }
    if d["title"].as_str().unwrap_or("").chars().count() > 24 {
        return Some("the title is longer than 24 characters".into());
    }
    for e in d["elements"].as_array().into_iter().flatten() {
        let max = match e["type"].as_str() {
            Some("text") => 150,
            Some("textarea") => 3000,
            other => return Some(format!("element type {other:?}")),
        };
        if e["display_name"].as_str().unwrap_or("").chars().count() > 24
            || e["name"].as_str().unwrap_or("").chars().count() > 300
            || e["max_length"].as_u64().unwrap_or(0) > max
        {
            return Some(format!("element {} is out of Mattermost's limits", e["name"]));
        }
    }
    None
}

/// The fake: REST under `/api/v4/`, and `GET /api/v4/websocket` upgraded on the same port
/// (`hello` with the connection id, then events; a reconnect with `connection_id` and
/// `sequence_number` replays what was missed).
async fn fake_mattermost(fake: Arc<Fake>) -> String {
    let app = axum::Router::new().route("/api/v4/{*path}", axum::routing::any(rest)).with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut head = [0u8; 32];
            let n = tcp.peek(&mut head).await.unwrap_or(0);
            if head[..n].starts_with(b"GET /api/v4/websocket") {
                tokio::spawn(websocket(fake.clone(), tcp));
            } else {
                let svc = hyper_util::service::TowerToHyperService::new(app.clone());
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                        .with_upgrades()
                        .await;
                });
            }
        }
    });
    format!("http://{addr}")
}

#[allow(clippy::result_large_err)] // tungstenite's handshake callback returns its own Response.
async fn websocket(fake: Arc<Fake>, tcp: tokio::net::TcpStream) {
    let query = Arc::new(Mutex::new(String::new()));
    let q = query.clone();
    let ws = tokio_tungstenite::accept_hdr_async(
        tcp,
        move |req: &tokio_tungstenite::tungstenite::handshake::server::Request, resp| {
            assert_eq!(req.headers().get("authorization").and_then(|v| v.to_str().ok()), Some("Bearer mm-bot-token"));
            *q.lock().unwrap() = req.uri().query().unwrap_or("").to_string();
            Ok(resp)
        },
    )
    .await
    .unwrap();
    let query = query.lock().unwrap().clone();
    fake.connects.lock().unwrap().push(query.clone());
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Message>();
    let pairs: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    {
        // As Mattermost's server does (`WebConn::writePump`): a resume whose sequence number is
        // still in the buffer replays from it, then says hello; otherwise a new connection id,
        // numbered from 0. Every event, hello included, takes the next number.
        let mut st = fake.ws.lock().unwrap();
        let from: Option<i64> = pairs.get("sequence_number").and_then(|s| s.parse().ok());
        let known = pairs.get("connection_id").is_some_and(|c| *c == st.connection_id && !c.is_empty());
        let resumed = known && from.is_some_and(|n| st.log.iter().any(|(s, _)| *s == n) || n == st.seq + 1);
        if resumed {
            for (_, e) in st.log.iter().filter(|(s, _)| *s >= from.unwrap_or(0)) {
                tx.send(Message::text(e.to_string())).unwrap();
            }
            st.seq += 1;
        } else {
            st.connection_id = format!("conn{}", fake.connects.lock().unwrap().len());
            st.seq = 0;
            st.log.clear();
        }
        let hello = json!({"event": "hello", "data": {"connection_id": st.connection_id, "server_version": "9.11.0"},
                           "broadcast": {"user_id": BOT}, "seq": st.seq});
        let seq = st.seq;
        st.log.push((seq, hello.clone()));
        tx.send(Message::text(hello.to_string())).unwrap();
        // The connection's only sender: dropping it (`drop_connections`) closes the connection.
        fake.live.lock().unwrap().push(tx);
    }
    loop {
        tokio::select! {
            out = rx.recv() => match out {
                Some(m) => if sink.send(m).await.is_err() { return },
                None => { let _ = sink.close().await; return }
            },
            inc = stream.next() => match inc {
                Some(Ok(Message::Ping(p))) => { let _ = sink.send(Message::Pong(p)).await; }
                Some(Ok(_)) => {}
                _ => return,
            },
        }
    }
}

struct Setup {
    app: TestApp,
    fake: Arc<Fake>,
    /// The fake's base URL.
    api: String,
    restarts: Arc<AtomicUsize>,
    _dir: tempfile::TempDir,
}

fn config(dir: &std::path::Path, api: &str, deploy: &str, owner: &str, extra: &str) -> Config {
    let runbooks = common::chat::runbooks(dir, deploy);
    std::fs::write(dir.join("token"), "mm-bot-token").unwrap();
    std::fs::write(dir.join("command"), "mm-command-token").unwrap();
    let yaml = format!(
        "runbooks: {runbooks}\nincidents: {{resolve_grace: 1s}}\n\
         responders:\n  groups:\n    sre: ['mattermost:group:{SRE_GROUP}']\n\
         executor:\n  owner: {owner}\n  http_allowed_hosts: ['{deploy}']\n\
         mattermost:\n  url: {api}\n  bot_token: {{file: {token}}}\n  command_token: {{file: {command}}}\n\
         \x20 callback_url: http://medic.example:8080\n  default_channel: {CHANNEL}\n{extra}",
        runbooks = runbooks.display(),
        token = dir.join("token").display(),
        command = dir.join("command").display(),
    );
    Config::parse(&yaml, "mattermost.yaml").unwrap()
}

async fn setup(db: Db, extra: &str) -> Option<Setup> {
    let fake = Arc::new(Fake::default());
    let api = fake_mattermost(fake.clone()).await;
    let restarts = Arc::new(AtomicUsize::new(0));
    let deploy = common::chat::deploy_api(restarts.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(db, config(dir.path(), &api, &deploy, "replica-a", extra)).await?;
    Some(Setup { app, fake, api, restarts, _dir: dir })
}

impl Setup {
    /// The incident's root post as first posted, and its id, once medic recorded it.
    async fn root(&self) -> (Value, String) {
        let (id, root) = poll_until(20, || async { self.fake.roots().into_iter().next() })
            .await
            .unwrap_or_else(|| panic!("no root post within 20 s: {:#?}", self.fake.calls.lock().unwrap()));
        poll_until(10, || async {
            self.app.store.incident_for_message("mattermost", Some(CHANNEL), &id).await.unwrap()
        })
        .await
        .expect("its delivery recorded");
        (root, id)
    }

    /// Clicks the action `name` of `post` (a body carrying `props.attachments[0].actions`) as
    /// `user`, as Mattermost's server sends it: the documented request with the action's context.
    async fn click(&self, body: &Value, post_id: &str, name: &str, user: &str) -> (u16, Value) {
        let context = action(body, name)["integration"]["context"].clone();
        self.send_action(post_id, user, context).await
    }

    async fn send_action(&self, post_id: &str, user: &str, context: Value) -> (u16, Value) {
        let req = json!({"user_id": user, "user_name": "someone", "post_id": post_id, "channel_id": CHANNEL,
                         "channel_name": "incidents", "team_id": TEAM, "team_name": "ops",
                         "trigger_id": "dHJpZ2dlcg==", "type": "", "data_source": "", "context": context});
        let (status, v) = self.app.post("/mattermost/actions", req.to_string(), &[]).await;
        (status.as_u16(), v)
    }
}

fn action<'a>(body: &'a Value, name: &str) -> &'a Value {
    body["props"]["attachments"][0]["actions"]
        .as_array()
        .unwrap_or_else(|| panic!("no actions in {body:#}"))
        .iter()
        .find(|a| a["id"] == name)
        .unwrap_or_else(|| panic!("no {name} action in {body:#}"))
}

fn action_ids(body: &Value) -> Vec<String> {
    body["props"]["attachments"][0]["actions"]
        .as_array()
        .map(|a| a.iter().map(|x| x["id"].as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

async fn posts_once_is_patched_and_approved_once(db: Db) {
    let Some(s) = setup(db, "").await else { return };
    s.fake.throttle.store(1, Ordering::SeqCst);
    assert_eq!(s.app.post("/v1/alerts/generic", common::chat::alert("firing"), &[]).await.0, 200);
    let (root, root_id) = s.root().await;
    assert_eq!(root["channel_id"], CHANNEL);
    assert!(root["pending_post_id"].as_str().unwrap().starts_with("medic-1-"), "deduplicated by Mattermost: {root:#}");
    assert!(root["message"].as_str().unwrap().contains("Incident #1: ChatTest on checkout"), "{root:#}");
    let attachment = &root["props"]["attachments"][0];
    assert_eq!(attachment["color"], "#e01e5a", "critical is red");
    assert!(attachment["fields"].to_string().contains("checkout needs a restart"), "{attachment:#}");
    assert_eq!(action_ids(&root), ["approve", "reject", "more", "ask"]);
    let approve = action(&root, "approve");
    assert_eq!(approve["integration"]["url"], "http://medic.example:8080/mattermost/actions");
    assert_eq!(approve["integration"]["context"]["action"], "approve");
    // The 429 was waited out, and the post made once.
    assert_eq!(s.fake.roots().len(), 1, "one root post");

    // Bob is in the channel, not in the group: refused privately, nothing runs.
    let (status, v) = s.click(&root, &root_id, "approve", BOB).await;
    assert_eq!(status, 200, "{v}");
    assert!(v["ephemeral_text"].as_str().unwrap().contains("sre"), "{v}");
    assert!(v.get("update").is_none(), "{v}");
    // Eve is not in the channel at all: Mattermost's word on who clicked does not hold.
    assert_eq!(s.click(&root, &root_id, "approve", EVE).await.0, 403);
    // The right context on another post: refused.
    assert_eq!(s.click(&root, &id(999), "approve", ALICE).await.0, 403);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.restarts.load(Ordering::SeqCst), 0);

    // Alice, in the group through Mattermost's group API; the same request replayed twice.
    let (status, v) = s.click(&root, &root_id, "approve", ALICE).await;
    assert_eq!(status, 200, "{v}");
    assert!(v["update"]["message"].as_str().unwrap().contains("Incident #1"), "answered with the updated post: {v}");
    for _ in 0..2 {
        let (status, again) = s.click(&root, &root_id, "approve", ALICE).await;
        assert_eq!(status, 200);
        assert!(again["ephemeral_text"].is_string(), "a replay is told privately it changes nothing: {again}");
    }
    poll_until(15, || async { (s.restarts.load(Ordering::SeqCst) == 1).then_some(()) }).await.expect("the plan ran");
    let verified = poll_until(30, || async {
        s.fake
            .calls("PUT", "/patch")
            .into_iter()
            .rev()
            .find(|(p, b)| p == &format!("posts/{root_id}/patch") && b.to_string().contains("verified"))
    })
    .await
    .unwrap_or_else(|| panic!("no patch saying verified: {:#?}", s.fake.calls("PUT", "")));
    assert_eq!(verified.1["props"]["attachments"][0]["color"], "#2eb886", "green once verified");
    assert_eq!(action_ids(&verified.1), ["ask"], "the plan's buttons gone, Ask stays");
    let thread: Vec<String> = s.fake.replies_in(&root_id).iter().map(|b| b["message"].to_string()).collect();
    assert!(thread.iter().any(|t| t.contains(&format!("approved by mattermost:{ALICE}"))), "{thread:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(s.restarts.load(Ordering::SeqCst), 1, "executed exactly once");

    // Hostile label text: shown, never a link or a mention.
    let hostile = json!({"alerts": [{"name": "Odd", "status": "firing", "labels": {
        "service": "[Log in again](https://evil.example/login) @channel", "severity": "warning"}}]});
    assert_eq!(s.app.post("/v1/alerts/generic", hostile.to_string(), &[]).await.0, 200);
    let (_, odd) =
        poll_until(20, || async { s.fake.roots().into_iter().find(|(_, b)| b.to_string().contains("evil.example")) })
            .await
            .expect("the odd incident posted");
    let text = odd.to_string();
    assert!(!text.contains("[Log in again](") && !text.contains("@channel"), "{odd:#}");
    s.app.stop().await.unwrap();
}

async fn forged_replayed_and_foreign_actions_change_nothing(db: Db) {
    let Some(s) = setup(db, "  action_window: 3s\n").await else { return };
    assert_eq!(s.app.post("/v1/alerts/generic", common::chat::alert("firing"), &[]).await.0, 200);
    let (root, root_id) = s.root().await;
    let context = action(&root, "approve")["integration"]["context"].clone();
    // Forged: another plan, another incident, another action, no signature, a made-up one.
    for (k, v) in
        [("plan", json!("f".repeat(64))), ("incident", json!(2)), ("action", json!("stop")), ("sig", json!("00"))]
    {
        let mut forged = context.clone();
        forged[k] = v;
        let (status, v) = s.send_action(&root_id, ALICE, forged).await;
        assert_eq!(status, 401, "{k}: {v}");
    }
    assert_eq!(s.send_action(&root_id, ALICE, json!({"action": "approve"})).await.0, 401);
    // Mattermost's documented example request: read, and refused (its context is not medic's).
    let (status, v) =
        s.app.post("/mattermost/actions", common::fixture("mattermost/docs-action-request.json"), &[]).await;
    assert_eq!(status.as_u16(), 401, "{v}");
    // Its documented slash command request, with its token as this medic's command token.
    let form = String::from_utf8(common::fixture("mattermost/docs-slash-command.form")).unwrap();
    let form = form.replace("qzgakf1nx3yt9dr4n8585ihbxy", "mm-command-token");
    let headers = [("content-type", "application/x-www-form-urlencoded"), ("authorization", "Token mm-command-token")];
    let (status, v) = s.app.post("/mattermost/command", form, &headers).await;
    assert_eq!((status.as_u16(), v["response_type"].as_str()), (200, Some("in_channel")), "{v}");
    // A request from an address that is not the Mattermost server's: another replica that
    // allows only 10.0.0.0/8.
    let other = tempfile::tempdir().unwrap();
    let deploy = common::chat::deploy_api(s.restarts.clone()).await;
    let b =
        s.app.replica(config(other.path(), &s.api, &deploy, "replica-b", "  allowed_sources: ['10.0.0.0/8']\n")).await;
    let req = json!({"user_id": ALICE, "post_id": root_id, "channel_id": CHANNEL, "team_id": TEAM, "context": context});
    let (status, v) = b.post("/mattermost/actions", req.to_string(), &[]).await;
    assert_eq!(status.as_u16(), 403, "{v}");
    assert!(v["message"].as_str().unwrap().contains("127.0.0.1"), "{v}");
    // Replayed past the window: refused.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (status, v) = s.send_action(&root_id, ALICE, context).await;
    assert_eq!(status, 401, "{v}");
    assert!(v["message"].as_str().unwrap().contains("action_window"), "{v}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.restarts.load(Ordering::SeqCst), 0, "nothing ran");
    b.stop().await.unwrap();
    s.app.stop().await.unwrap();
}

/// Replies in `root`'s thread that are answers (the answer template's last line).
fn answers_in(fake: &Fake, root: &str) -> Vec<String> {
    fake.replies_in(root)
        .into_iter()
        .filter_map(|b| b["message"].as_str().map(str::to_string))
        .filter(|m| m.ends_with("medic_"))
        .collect()
}

async fn questions_are_answered_in_the_thread_once(db: Db) {
    let Some(s) = setup(db, "").await else { return };
    poll_until(10, || async { (s.fake.live() == 1).then_some(()) }).await.expect("the WebSocket connected");
    let (_, ready) = s.app.get("/readyz").await;
    assert_eq!(ready["mattermost_websocket"]["state"], "connected", "{ready:#}");
    assert_eq!(s.app.post("/v1/alerts/generic", common::chat::alert("firing"), &[]).await.0, 200);
    let (root, root_id) = s.root().await;

    // A mention in the incident's thread; a question overheard there; chatter; medic's own
    // post; another bot's; a DM.
    s.fake.posted(post(&id(101), ALICE, CHANNEL, &root_id, "@medic what changed in checkout?"), "O", &[BOT]);
    s.fake.posted(post(&id(102), BOB, CHANNEL, &root_id, "what changed?"), "O", &[]);
    s.fake.posted(post(&id(103), BOB, CHANNEL, &root_id, "lunch anyone?"), "O", &[]);
    s.fake.posted(post(&id(104), BOT, CHANNEL, &root_id, "@medic status"), "O", &[BOT]);
    let mut other_bot = post(&id(105), BOB, CHANNEL, &root_id, "@medic status");
    other_bot["props"] = json!({"from_bot": "true"});
    s.fake.posted(other_bot, "O", &[BOT]);
    s.fake.posted(post(&id(106), ALICE, DM, "", "status"), "D", &[]);
    let answered = poll_until(15, || async { Some(answers_in(&s.fake, &root_id)).filter(|a| a.len() >= 2) })
        .await
        .unwrap_or_else(|| panic!("two answers in the thread: {:#?}", s.fake.replies_in(&root_id)));
    assert!(answered.iter().any(|a| a.replace('\\', "").contains("change(s) to checkout")), "{answered:#?}");
    assert!(answered.iter().all(|a| !a.contains("@channel")), "{answered:#?}");
    poll_until(15, || async { (!answers_in(&s.fake, &id(106)).is_empty()).then_some(()) })
        .await
        .expect("the DM answered in its thread");

    // The connection drops; a question asked meanwhile is replayed on the resume; nothing is
    // answered twice.
    s.fake.drop_connections();
    s.fake.posted(post(&id(107), ALICE, CHANNEL, &root_id, "@medic when did it start?"), "O", &[BOT]);
    poll_until(20, || async { (answers_in(&s.fake, &root_id).len() == 3).then_some(()) }).await.unwrap_or_else(|| {
        panic!("the question asked during the drop answered: {:#?}", s.fake.connects.lock().unwrap())
    });
    let connects = s.fake.connects.lock().unwrap().clone();
    assert_eq!(connects.len(), 2, "{connects:?}");
    assert_eq!(connects[1], "connection_id=conn1&sequence_number=7", "resumed where it stopped");
    // An event lost on the way (its number skipped): medic resumes from it, as Mattermost's
    // clients do, and both questions are answered once.
    s.fake.posted_or_lost(
        post(&id(108), ALICE, CHANNEL, &root_id, "@medic is it still happening?"),
        "O",
        &[BOT],
        false,
    );
    s.fake.posted(post(&id(109), ALICE, CHANNEL, &root_id, "@medic how bad is it?"), "O", &[BOT]);
    poll_until(20, || async { (answers_in(&s.fake, &root_id).len() == 5).then_some(()) })
        .await
        .unwrap_or_else(|| panic!("the lost event replayed: {:#?}", s.fake.connects.lock().unwrap()));
    assert_eq!(s.fake.connects.lock().unwrap()[2], "connection_id=conn1&sequence_number=9", "resumed from the gap");

    // An order from someone outside the control groups: refused privately — a direct message,
    // since the bot may not post ephemeral messages — never in the thread.
    s.fake.posted(post(&id(110), BOB, CHANNEL, &root_id, "@medic pause automation"), "O", &[BOT]);
    let to_bob = format!("dm{}", &BOB[2..]);
    let refusal = poll_until(15, || async {
        s.fake.created.lock().unwrap().iter().find(|(_, b)| b["channel_id"] == to_bob.as_str()).map(|(_, b)| b.clone())
    })
    .await
    .expect("the refusal sent to Bob");
    assert!(refusal["message"].as_str().unwrap().contains("Nothing changed"), "{refusal:#}");
    assert_eq!(answers_in(&s.fake, &root_id).len(), 5, "not in the thread");
    assert!(s.app.store.paused().await.unwrap().is_none(), "nothing paused");

    // `/medic status`: the command's form and `Token` header, as documented.
    let form = |token: &str, trigger: &str| {
        format!(
            "channel_id={CHANNEL}&channel_name=incidents&command=%2Fmedic&response_url=http%3A%2F%2Flocalhost%3A8066%2Fhooks%2Fcommands%2Fi11f&\
             team_domain=ops&team_id={TEAM}&text=status&token={token}&trigger_id={trigger}&user_id={ALICE}&user_name=alice"
        )
    };
    let headers =
        |token: &'static str| [("content-type", "application/x-www-form-urlencoded"), ("authorization", token)];
    let (status, v) = s
        .app
        .post("/mattermost/command", form("mm-command-token", "dHJpZzE%3D"), &headers("Token mm-command-token"))
        .await;
    assert_eq!(status.as_u16(), 200, "{v}");
    assert_eq!(v["response_type"], "in_channel", "{v}");
    assert!(v["text"].as_str().unwrap().contains("#1"), "{v}");
    let (status, again) = s
        .app
        .post("/mattermost/command", form("mm-command-token", "dHJpZzE%3D"), &headers("Token mm-command-token"))
        .await;
    assert_eq!((status.as_u16(), again), (200, json!({})), "the same invocation answered once");
    let (status, _) = s.app.post("/mattermost/command", form("wrong", "dHJpZzI%3D"), &headers("Token wrong")).await;
    assert_eq!(status.as_u16(), 401);

    // The Ask button opens a dialog; its submission is answered in the incident's thread.
    let (status, v) = s.click(&root, &root_id, "ask", ALICE).await;
    assert_eq!((status, v), (200, json!({})));
    let (_, opened) = s.fake.calls("POST", "actions/dialogs/open").pop().expect("a dialog opened");
    assert_eq!(dialog_problem(&opened), None, "a dialog Mattermost accepts: {opened:#}");
    assert_eq!(opened["url"], "http://medic.example:8080/mattermost/dialogs");
    assert_eq!(opened["dialog"]["callback_id"], "ask");
    let submit = |callback: &str, state: &Value, user: &str, submission: Value| {
        json!({"type": "dialog_submission", "callback_id": callback, "state": state, "user_id": user,
               "channel_id": CHANNEL, "team_id": TEAM, "submission": submission, "cancelled": false})
        .to_string()
    };
    let body = submit("ask", &opened["dialog"]["state"], ALICE, json!({"question": "how bad is it?"}));
    let (status, v) = s.app.post("/mattermost/dialogs", body, &[]).await;
    assert_eq!((status.as_u16(), v), (200, json!({})));
    poll_until(15, || async { (answers_in(&s.fake, &root_id).len() == 6).then_some(()) })
        .await
        .expect("the dialog's question answered in the thread");

    // Reject asks why: Bob's reason is refused in the dialog, Alice's recorded.
    assert_eq!(s.click(&root, &root_id, "reject", ALICE).await, (200, json!({})));
    let (_, opened) = s.fake.calls("POST", "actions/dialogs/open").pop().unwrap();
    assert_eq!(dialog_problem(&opened), None, "a dialog Mattermost accepts: {opened:#}");
    assert_eq!(opened["dialog"]["callback_id"], "reject");
    let state = &opened["dialog"]["state"];
    let (status, v) =
        s.app.post("/mattermost/dialogs", submit("reject", state, BOB, json!({"reason": "no"})), &[]).await;
    assert_eq!(status.as_u16(), 200);
    assert!(v["error"].as_str().unwrap().contains("sre"), "{v}");
    // A state for one dialog is not another's.
    let (status, _) =
        s.app.post("/mattermost/dialogs", submit("ask", state, ALICE, json!({"question": "x"})), &[]).await;
    assert_eq!(status.as_u16(), 401);
    let (status, v) = s
        .app
        .post("/mattermost/dialogs", submit("reject", state, ALICE, json!({"reason": "not during the sale"})), &[])
        .await;
    assert_eq!((status.as_u16(), v), (200, json!({})));
    poll_until(15, || async {
        s.fake
            .replies_in(&root_id)
            .iter()
            .any(|b| b["message"].as_str().unwrap_or("").contains("not during the sale"))
            .then_some(())
    })
    .await
    .expect("the rejection and its reason in the thread");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(answers_in(&s.fake, &root_id).len(), 6, "each question answered once, chatter and bots never");
    assert_eq!(answers_in(&s.fake, &id(106)).len(), 1, "the DM once");
    assert_eq!(s.restarts.load(Ordering::SeqCst), 0, "nothing acted on from a question");
    s.app.stop().await.unwrap();
}

/// Two replicas: the incident is posted once; one holds the WebSocket, the other takes it over
/// when the first stops.
async fn two_replicas_post_once_and_hold_one_websocket(db: Db) {
    let Some(s) = setup(db, "").await else { return };
    poll_until(10, || async { (s.fake.live() == 1).then_some(()) }).await.expect("A connected");
    let other = tempfile::tempdir().unwrap();
    let deploy = common::chat::deploy_api(s.restarts.clone()).await;
    let b = s.app.replica(config(other.path(), &s.api, &deploy, "replica-b", "")).await;
    assert_eq!(b.post("/v1/alerts/generic", common::chat::alert("firing"), &[]).await.0, 200);
    s.root().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(s.fake.roots().len(), 1, "posted once by two replicas");
    assert_eq!(s.fake.connects.lock().unwrap().len(), 1, "B stands by");
    let (_, ready) = b.get("/readyz").await;
    assert_eq!(ready["mattermost_websocket"]["state"], "standing_by", "{ready:#}");
    // A's handle owns the database: kept until B is done with it.
    let _db = s.app.stop().await.unwrap();
    poll_until(20, || async { (s.fake.connects.lock().unwrap().len() == 2 && s.fake.live() == 1).then_some(()) })
        .await
        .expect("B took the WebSocket over");
    b.stop().await.unwrap();
}

/// A bot token Mattermost refuses: the WebSocket stops, `/readyz` says why, nothing retries it.
async fn a_refused_token_stops_the_websocket(db: Db) {
    let fake = Arc::new(Fake::default());
    fake.refuse_token.store(true, Ordering::SeqCst);
    let api = fake_mattermost(fake.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let Some(app) = TestApp::spawn(db, config(dir.path(), &api, "127.0.0.1:9", "replica-a", "")).await else { return };
    let ready = poll_until(10, || async {
        let (_, ready) = app.get("/readyz").await;
        (ready["mattermost_websocket"]["state"] == "stopped").then_some(ready)
    })
    .await
    .expect("the WebSocket stopped");
    assert!(ready["mattermost_websocket"]["reason"].as_str().unwrap().contains("bot_token"), "{ready:#}");
    assert!(ready["degraded"].as_array().unwrap().contains(&json!("mattermost")), "{ready:#}");
    assert_eq!(ready["ready"], true, "the rest of medic goes on");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(fake.calls("GET", "users/me").len(), 1, "not retried");
    assert!(fake.connects.lock().unwrap().is_empty());
    app.stop().await.unwrap();
}

both_stores!(
    a_refused_token_stops_the_websocket,
    posts_once_is_patched_and_approved_once,
    forged_replayed_and_foreign_actions_change_nothing,
    questions_are_answered_in_the_thread_once,
    two_replicas_post_once_and_hold_one_websocket
);
