//! Slack end to end against a local fake of Slack's Web API that records every call: an alert
//! becomes one `chat.postMessage` with Block Kit and the buttons; a signed click from an
//! authorized user (directly, or through a Slack user group) runs the plan once and updates the
//! message; repeats and re-deliveries run nothing more; a stranger gets an ephemeral refusal; a
//! bad signature or a stale timestamp gets 401; a 429 is retried after `Retry-After`; Reject
//! asks for a reason in a modal; Socket Mode receives a click and acknowledges the envelope once
//! the click is stored.

mod common;

use axum::extract::{Path, State};
use common::{Db, TestApp, poll_until};
use hmac::{KeyInit, Mac};
use medic::config::Config;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const OLD_SECRET: &str = "0ld-signing-secret-still-accepted";

#[derive(Default)]
struct Fake {
    calls: Mutex<Vec<(String, Value, Instant)>>,
    /// 429s still to answer on chat.postMessage.
    throttle: AtomicUsize,
    /// `invalid_auth` answers still to give on chat.postMessage (a revoked or mistyped token).
    refuse_auth: AtomicUsize,
    /// Socket Mode: the WebSocket URL apps.connections.open hands out.
    ws_url: Mutex<String>,
    /// chat.postMessage answers still to lose: the message is posted, the answer is a 502
    /// (as when medic's replica dies after Slack took the message).
    lose_answer: AtomicUsize,
}

impl Fake {
    fn calls(&self, method: &str) -> Vec<Value> {
        self.calls.lock().unwrap().iter().filter(|(m, _, _)| m == method).map(|(_, b, _)| b.clone()).collect()
    }
}

async fn fake_slack(fake: Arc<Fake>) -> String {
    let app = axum::Router::new()
        .route(
            "/api/{method}",
            axum::routing::post(
                |State(f): State<Arc<Fake>>,
                 Path(method): Path<String>,
                 headers: axum::http::HeaderMap,
                 body: String| async move {
                    use axum::response::IntoResponse;
                    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                    let form = headers.get("content-type").is_some_and(|c| c == "application/x-www-form-urlencoded");
                    let v: Value = if form {
                        let pairs = url::form_urlencoded::parse(body.as_bytes());
                        Value::Object(pairs.map(|(k, v)| (k.into_owned(), json!(v))).collect())
                    } else {
                        serde_json::from_str(&body).unwrap_or(Value::Null)
                    };
                    f.calls.lock().unwrap().push((method.clone(), v.clone(), Instant::now()));
                    if method == "apps.connections.open" {
                        assert_eq!(auth, "Bearer xapp-test");
                        return axum::Json(json!({"ok": true, "url": *f.ws_url.lock().unwrap()})).into_response();
                    }
                    assert_eq!(auth, "Bearer xoxb-test", "the bot token on every Web API call");
                    if method == "chat.postMessage" && f.throttle.load(Ordering::SeqCst) > 0 {
                        f.throttle.fetch_sub(1, Ordering::SeqCst);
                        return (
                            axum::http::StatusCode::TOO_MANY_REQUESTS,
                            [("retry-after", "1")],
                            axum::Json(json!({"ok": false, "error": "ratelimited"})),
                        )
                            .into_response();
                    }
                    if method == "chat.postMessage" && f.refuse_auth.load(Ordering::SeqCst) > 0 {
                        f.refuse_auth.fetch_sub(1, Ordering::SeqCst);
                        return axum::Json(json!({"ok": false, "error": "invalid_auth"})).into_response();
                    }
                    let answer = match method.as_str() {
                        "chat.postMessage" => {
                            let mut calls = f.calls.lock().unwrap();
                            let ts = format!("1700000000.{:06}", calls.len());
                            // Recorded with the call, so a test can reply in its thread.
                            calls.last_mut().unwrap().1["__ts"] = json!(ts);
                            if f.lose_answer.load(Ordering::SeqCst) > 0 {
                                f.lose_answer.fetch_sub(1, Ordering::SeqCst);
                                return (axum::http::StatusCode::BAD_GATEWAY, "lost").into_response();
                            }
                            json!({"ok": true, "channel": v["channel"], "ts": ts})
                        }
                        "conversations.history" => {
                            assert_eq!(v["include_all_metadata"], "true", "{v}");
                            let calls = f.calls.lock().unwrap();
                            let messages: Vec<Value> = calls
                                .iter()
                                .filter(|(m, b, _)| m == "chat.postMessage" && b["channel"] == v["channel"])
                                .map(|(_, b, _)| json!({"type": "message", "ts": b["__ts"], "text": b["text"], "metadata": b["metadata"]}))
                                .rev()
                                .collect();
                            json!({"ok": true, "messages": messages, "has_more": false})
                        }
                        "usergroups.users.list" => json!({"ok": true, "users": ["U0GROUPIE"]}),
                        "files.getUploadURLExternal" => {
                            let host = headers.get("host").unwrap().to_str().unwrap();
                            json!({"ok": true, "file_id": "F0CHART", "upload_url": format!("http://{host}/upload/F0CHART")})
                        }
                        _ => json!({"ok": true}),
                    };
                    axum::Json(answer).into_response()
                },
            ),
        )
        .route(
            "/upload/{id}",
            axum::routing::post(
                |State(f): State<Arc<Fake>>, Path(id): Path<String>, headers: axum::http::HeaderMap, body: axum::body::Bytes| async move {
                    assert!(headers.get("authorization").is_none(), "the upload URL is not given the token");
                    let png = body.starts_with(b"\x89PNG\r\n\x1a\n");
                    let call = json!({"id": id, "bytes": body.len(), "png": png});
                    f.calls.lock().unwrap().push(("upload".into(), call, Instant::now()));
                    "OK"
                },
            ),
        )
        .with_state(fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/api")
}

struct Setup {
    app: TestApp,
    fake: Arc<Fake>,
    restarts: Arc<AtomicUsize>,
    _dir: tempfile::TempDir,
}

async fn setup(db: Db, extra: &str, throttle: usize, ws: Option<String>) -> Option<Setup> {
    let fake = Arc::new(Fake::default());
    fake.throttle.store(throttle, Ordering::SeqCst);
    if let Some(u) = ws {
        *fake.ws_url.lock().unwrap() = u;
    }
    let api = fake_slack(fake.clone()).await;
    let restarts = Arc::new(AtomicUsize::new(0));
    let deploy = common::chat::deploy_api(restarts.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let runbooks = common::chat::runbooks(d, &deploy);
    for (f, v) in [("bot", "xoxb-test"), ("signing", SECRET), ("old", OLD_SECRET), ("app", "xapp-test")] {
        std::fs::write(d.join(f), v).unwrap();
    }
    let yaml = format!(
        "runbooks: {runbooks}\n\
         incidents: {{resolve_grace: 1s}}\n\
         responders:\n  groups:\n    sre: [slack:U0ALLOWED, slack:group:S0ONCALL]\n\
         executor:\n  http_allowed_hosts: ['{deploy}']\n  lease: 2s\n\
         slack:\n  bot_token: {{file: {bot}}}\n  signing_secret: [{{file: {signing}}}, {{file: {old}}}]\n\
         \x20 api_url: {api}\n  default_channel: C0INCIDENT\n\
         \x20 routes: [{{labels: {{team: payments}}, channel: C0PAYMENTS}}]\n{extra}",
        runbooks = runbooks.display(),
        bot = d.join("bot").display(),
        signing = d.join("signing").display(),
        old = d.join("old").display(),
        extra = extra.replace("APP", &d.join("app").display().to_string()),
    );
    let cfg = Config::parse(&yaml, "slack.yaml").unwrap();
    let app = TestApp::spawn(db, cfg).await?;
    Some(Setup { app, fake, restarts, _dir: dir })
}

fn sign(secret: &str, ts: i64, body: &str) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("v0:{ts}:{body}").as_bytes());
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

fn payload(fixture: &str, user: &str, pairs: &[(&str, &str)]) -> String {
    let mut text = String::from_utf8(common::fixture(&format!("slack/{fixture}"))).unwrap().replace("USER_ID", user);
    for (k, v) in pairs {
        text = text.replace(k, v);
    }
    text
}

impl Setup {
    async fn alert(&self) {
        let (s, v) = self.app.post("/v1/alerts/generic", common::chat::alert("firing"), &[]).await;
        assert_eq!(s, 200, "{v}");
    }

    /// The root message, once posted.
    async fn root(&self) -> Value {
        poll_until(20, || async { self.fake.calls("chat.postMessage").into_iter().find(|c| c["blocks"].is_array()) })
            .await
            .expect("a root message within 20 s")
    }

    /// POSTs an interaction, signed with `secret` at `ts` (default: now).
    async fn click(&self, payload: &str, secret: &str, ts: Option<i64>) -> reqwest::StatusCode {
        let body = format!("payload={}", url::form_urlencoded::byte_serialize(payload.as_bytes()).collect::<String>());
        let ts = ts.unwrap_or_else(|| chrono::Utc::now().timestamp());
        let sig = sign(secret, ts, &body);
        let ts = ts.to_string();
        let headers = [
            ("content-type", "application/x-www-form-urlencoded"),
            ("x-slack-request-timestamp", ts.as_str()),
            ("x-slack-signature", sig.as_str()),
        ];
        self.app.post("/slack/interactions", body, &headers).await.0
    }
}

impl Setup {
    /// POSTs a signed Events API payload; `retry` adds `X-Slack-Retry-Num`.
    async fn event(&self, payload: &Value, retry: Option<&str>) -> reqwest::StatusCode {
        let body = payload.to_string();
        let ts = chrono::Utc::now().timestamp();
        let sig = sign(SECRET, ts, &body);
        let ts = ts.to_string();
        let mut headers = vec![
            ("content-type", "application/json"),
            ("x-slack-request-timestamp", ts.as_str()),
            ("x-slack-signature", sig.as_str()),
        ];
        if let Some(n) = retry {
            headers.push(("x-slack-retry-num", n));
        }
        self.app.post("/slack/events", body, &headers).await.0
    }

    /// POSTs a signed `/medic` slash command.
    async fn command(&self, user: &str, text: &str) -> reqwest::StatusCode {
        static TRIGGER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = TRIGGER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.command_as(user, text, &format!("13345224609.738474920.{n}")).await
    }

    /// `/medic text` as Slack sends it, with the invocation's `trigger_id`.
    async fn command_as(&self, user: &str, text: &str, trigger: &str) -> reqwest::StatusCode {
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs([
                ("command", "/medic"),
                ("text", text),
                ("user_id", user),
                ("channel_id", "C0INCIDENT"),
                ("team_id", "T1"),
                ("trigger_id", trigger),
            ])
            .finish();
        let ts = chrono::Utc::now().timestamp();
        let sig = sign(SECRET, ts, &body);
        let ts = ts.to_string();
        let headers = [
            ("content-type", "application/x-www-form-urlencoded"),
            ("x-slack-request-timestamp", ts.as_str()),
            ("x-slack-signature", sig.as_str()),
        ];
        self.app.post("/slack/commands", body, &headers).await.0
    }

    /// Messages posted in the thread of `root`.
    fn replies(&self, root: &str) -> Vec<Value> {
        self.fake.calls("chat.postMessage").into_iter().filter(|c| c["thread_ts"] == root).collect()
    }
}

fn event(id: &str, kind: &str, user: &str, text: &str, thread: &str) -> Value {
    json!({
        "token": "x", "team_id": "T1", "api_app_id": "A1", "type": "event_callback", "event_id": id, "event_time": 1,
        "authorizations": [{"team_id": "T1", "user_id": "UMEDIC", "is_bot": true}],
        "event": {"type": kind, "user": user, "text": text, "channel": "C0INCIDENT", "channel_type": "channel",
                  "ts": format!("1700000100.{id}"), "thread_ts": thread, "event_ts": "1700000100.1"},
    })
}

/// A mention in the incident's thread gets one threaded answer, even when Slack retries it;
/// the `message` copy of the mention, medic's own messages and chatter it does not understand
/// get none; a question overheard in the thread is answered.
async fn questions_in_the_thread_are_answered_once(db: Db) {
    let prometheus = format!("context:\n  prometheus: {{url: '{}'}}\n", common::chat::prometheus().await);
    let Some(s) = setup(db, &prometheus, 0, None).await else { return };
    s.alert().await;
    let root = s.root().await;
    let ts = root["__ts"].as_str().unwrap().to_string();
    let before = s.replies(&ts).len();
    let mention = event("101", "app_mention", "U0ALLOWED", "<@UMEDIC> what changed?", &ts);
    assert_eq!(s.event(&mention, None).await, 200);
    assert_eq!(s.event(&mention, Some("1")).await, 200, "Slack's retry is acknowledged");
    assert_eq!(s.event(&event("102", "message", "U0ALLOWED", "<@UMEDIC> what changed?", &ts), None).await, 200);
    assert_eq!(s.event(&event("103", "message", "UMEDIC", "status", &ts), None).await, 200);
    assert_eq!(s.event(&event("104", "message", "U0ALLOWED", "lunch anyone?", &ts), None).await, 200);
    let answers = poll_until(10, || async {
        let r = s.replies(&ts);
        r.iter().any(|c| c.to_string().contains("change(s) to checkout")).then_some(r)
    })
    .await
    .expect("an answer in the thread");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let answers_now: Vec<Value> =
        s.replies(&ts).into_iter().filter(|c| c["blocks"].to_string().contains("· medic")).collect();
    assert_eq!(answers_now.len(), 1, "one answer, whatever the retries: {answers:#?}");
    assert_eq!(s.replies(&ts).len(), before + 1, "nothing else was said in the thread");
    assert!(answers_now[0]["blocks"].to_string().contains("Evidence: changes of checkout"), "{:#}", answers_now[0]);

    // Overheard in the thread, a question medic understands is answered too.
    assert_eq!(s.event(&event("105", "message", "U0ALLOWED", "what's the status?", &ts), None).await, 200);
    poll_until(10, || async { s.replies(&ts).into_iter().find(|c| c.to_string().contains("Incident #1: ChatTest")) })
        .await
        .expect("a status answer");
    // A metric question: the answer, then its chart uploaded into the thread.
    let graph = event("107", "app_mention", "U0ALLOWED", "<@UMEDIC> graph checkout error rate", &ts);
    assert_eq!(s.event(&graph, None).await, 200);
    let upload =
        poll_until(10, || async { s.fake.calls("upload").into_iter().next() }).await.expect("a chart uploaded");
    assert_eq!(upload["png"], true, "{upload}");
    let asked = &s.fake.calls("files.getUploadURLExternal")[0];
    assert_eq!(asked["length"], upload["bytes"].to_string(), "{asked}");
    let done = poll_until(10, || async { s.fake.calls("files.completeUploadExternal").into_iter().next() })
        .await
        .expect("the upload completed");
    assert_eq!((done["channel_id"].as_str(), done["thread_ts"].as_str()), (Some("C0INCIDENT"), Some(ts.as_str())));
    assert_eq!(done["files"][0]["id"], "F0CHART");
    // Forged: refused, never answered.
    let body = event("106", "app_mention", "U0ALLOWED", "<@UMEDIC> status", &ts).to_string();
    let t = chrono::Utc::now().timestamp().to_string();
    let h = [("x-slack-request-timestamp", t.as_str()), ("x-slack-signature", "v0=00")];
    assert_eq!(s.app.post("/slack/events", body, &h).await.0, 401);
    s.app.stop().await.unwrap();
}

/// `/medic pause` from a stranger is refused privately and changes nothing; from a member of
/// the control group it pauses, is audited with where, and every incident message shows it.
async fn pause_from_chat_needs_the_control_group(db: Db) {
    let Some(s) = setup(db, "ask: {control_groups: [sre]}\n", 0, None).await else { return };
    s.alert().await;
    let root = s.root().await;
    let ts = root["__ts"].as_str().unwrap().to_string();
    // A member of the control group, in the incident's thread, not addressing medic: neither a
    // question nor an order overheard changes anything; addressed, a question does not either.
    let audited = s.app.store.audit_page(0, 1000).await.unwrap().len();
    for (id, kind, text) in [
        ("201", "message", "should we pause automation?"),
        ("202", "message", "pause automation"),
        ("203", "message", "did someone resolve this?"),
        ("204", "app_mention", "<@UMEDIC> should we pause automation?"),
        ("205", "app_mention", "<@UMEDIC> checkout cannot resolve postgres.shop.svc"),
    ] {
        assert_eq!(s.event(&event(id, kind, "U0ALLOWED", text, &ts), None).await, 200);
    }
    let said = poll_until(10, || async {
        s.replies(&ts).into_iter().find(|c| c.to_string().contains("reads as a question, so nothing was done"))
    })
    .await;
    assert!(said.is_some(), "the addressed question is answered, saying why nothing was done");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(s.app.store.paused().await.unwrap().is_none(), "nothing paused");
    let audit = s.app.store.audit_page(0, 1000).await.unwrap();
    assert!(
        audit[audited..].iter().all(|r| r.kind == "diagnosed"),
        "nothing changed: {:?}",
        audit[audited..].iter().map(|r| &r.kind).collect::<Vec<_>>()
    );
    assert_eq!(s.command("U0STRANGER", "pause").await, 200);
    let eph =
        poll_until(10, || async { s.fake.calls("chat.postEphemeral").into_iter().find(|c| c["user"] == "U0STRANGER") })
            .await
            .expect("a private refusal");
    assert!(eph.to_string().contains("Only members of sre may pause"), "{eph:#}");
    assert!(s.app.store.paused().await.unwrap().is_none(), "nothing changed");
    assert_eq!(s.command("U0ALLOWED", "pause automation").await, 200);
    poll_until(10, || async { s.app.store.paused().await.unwrap() }).await.expect("paused");
    let shown = poll_until(10, || async {
        s.fake
            .calls("chat.update")
            .into_iter()
            .find(|u| u.to_string().contains("Automation is paused by slack:U0ALLOWED"))
    })
    .await;
    assert!(shown.is_some(), "the incident's message shows the pause: {:#?}", s.fake.calls("chat.update"));
    let audit = s.app.store.audit_page(0, 1000).await.unwrap();
    let rec = audit.iter().find(|r| r.kind == "automation_paused").expect("audited");
    assert_eq!(rec.actor, "slack:U0ALLOWED");
    assert!(rec.data.contains("slack:C0INCIDENT"), "where: {}", rec.data);

    // Granting and revoking a runbook's autonomy: the same group; the grant stays within policy.
    assert_eq!(s.command("U0STRANGER", "revoke autonomy").await, 200);
    poll_until(10, || async {
        s.fake.calls("chat.postEphemeral").into_iter().find(|c| c.to_string().contains("may revoke autonomy"))
    })
    .await
    .expect("a private refusal to revoke");
    assert_eq!(s.command("U0ALLOWED", "grant autonomy to restart-on-chat-test").await, 200);
    poll_until(10, || async {
        s.fake.calls("chat.postEphemeral").into_iter().find(|c| c.to_string().contains("declares `autonomy: approve`"))
    })
    .await
    .expect("a grant beyond the runbook's ceiling is refused");
    assert_eq!(s.command("U0ALLOWED", "revoke autonomy of restart-on-chat-test").await, 200);
    let revoked = poll_until(10, || async {
        let audit = s.app.store.audit_page(0, 1000).await.unwrap();
        audit.into_iter().find(|r| r.kind == "autonomy_lost")
    })
    .await
    .expect("the revocation is audited");
    assert_eq!(revoked.actor, "slack:U0ALLOWED");
    assert!(revoked.data.contains("restart-on-chat-test"), "{}", revoked.data);

    // Resolving and reopening by hand: the same group, audited with who and where.
    let state = || async { s.app.store.incident(1).await.unwrap().unwrap().0.state.as_str().to_string() };
    assert_eq!(s.command("U0STRANGER", "resolve #1").await, 200);
    poll_until(10, || async {
        s.fake.calls("chat.postEphemeral").into_iter().find(|c| c.to_string().contains("may resolve incidents"))
    })
    .await
    .expect("a private refusal to resolve");
    assert_eq!(state().await, "open");
    assert_eq!(s.command("U0ALLOWED", "resolve incident 1").await, 200);
    poll_until(10, || async { (state().await == "resolved").then_some(()) }).await.expect("resolved by hand");
    assert_eq!(s.command("U0ALLOWED", "resolve #1").await, 200);
    poll_until(10, || async {
        s.fake.calls("chat.postEphemeral").into_iter().find(|c| c.to_string().contains("already resolved"))
    })
    .await
    .expect("resolving twice is refused, saying why");
    assert_eq!(s.command("U0ALLOWED", "reopen #1").await, 200);
    poll_until(10, || async { (state().await == "open").then_some(()) }).await.expect("reopened by hand");
    let audit = s.app.store.audit_for_incident(1).await.unwrap();
    let by_hand: Vec<_> = audit.iter().filter(|r| r.data.contains("by hand")).collect();
    assert_eq!(by_hand.len(), 2, "{by_hand:?}");
    assert!(by_hand.iter().all(|r| r.actor == "slack:U0ALLOWED" && r.data.contains("slack:C0INCIDENT")));
    let verified = medic::cli::verify(s.app.store.as_ref(), None).await.unwrap();
    assert_eq!(verified, std::process::ExitCode::SUCCESS, "the audit chain verifies");
    s.app.stop().await.unwrap();
}

fn button(root: &Value, action: &str) -> String {
    root["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["type"] == "actions")
        .flat_map(|b| b["elements"].as_array().unwrap().clone())
        .find(|e| e["action_id"] == action)
        .unwrap_or_else(|| panic!("no {action} button in {root:#}"))["value"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn approve_once_refuse_strangers(db: Db) {
    let freeze = "guardrails:\n  freezes: [{from: '2020-01-01T00:00:00Z', until: '2100-01-01T00:00:00Z', reason: a test freeze}]\n";
    let Some(s) = setup(db, freeze, 0, None).await else { return };
    s.alert().await;
    let root = s.root().await;
    assert_eq!(root["channel"], "C0INCIDENT");
    let text = root.to_string();
    assert!(text.contains("Incident #1: ChatTest on checkout"), "{root:#}");
    assert!(text.contains("severity *critical*") && text.contains("services checkout"), "{root:#}");
    assert!(text.contains("checkout needs a restart") && text.contains("1. POST http://"), "{root:#}");
    let value = button(&root, "approve");
    assert!(button(&root, "reject") == value && button(&root, "more_evidence") == value);
    let approve =
        root["blocks"].as_array().unwrap().iter().find(|b| b["type"] == "actions").unwrap()["elements"][0].clone();
    assert!(
        approve["confirm"]["text"]["text"].as_str().unwrap().contains("POST http://"),
        "the confirm dialog names what runs: {approve}"
    );
    assert_eq!(s.fake.calls("chat.postMessage").len(), 1, "one root message, no duplicates");

    // Forged, stale, or from a stranger: nothing runs.
    let approve_by =
        |user: &str| payload("block_actions.json", user, &[("ACTION_ID", "approve"), ("BUTTON_VALUE", &value)]);
    assert_eq!(s.click(&approve_by("U0ALLOWED"), "not-the-secret", None).await, 401);
    let stale = chrono::Utc::now().timestamp() - 301;
    assert_eq!(s.click(&approve_by("U0ALLOWED"), SECRET, Some(stale)).await, 401);
    assert_eq!(s.click(&approve_by("U0STRANGER"), SECRET, None).await, 200);
    let eph = poll_until(10, || async { s.fake.calls("chat.postEphemeral").first().cloned() })
        .await
        .expect("an ephemeral refusal");
    assert_eq!((eph["user"].as_str(), eph["channel"].as_str()), (Some("U0STRANGER"), Some("C0INCIDENT")));
    assert!(eph["text"].as_str().unwrap().contains("sre"), "the refusal says which group may approve: {eph}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.restarts.load(Ordering::SeqCst), 0);
    let warnings =
        || s.fake.calls("chat.postMessage").into_iter().filter(|c| c.to_string().contains("a test freeze")).count();
    assert_eq!(warnings(), 0, "a refused click says nothing in the thread");

    // The allowed user, signed with the older secret (rotation), clicks twice; Slack retries once.
    let ok = approve_by("U0ALLOWED");
    assert_eq!(s.click(&ok, OLD_SECRET, None).await, 200);
    // Slack hears 200 once the approval is stored.
    let status = s.app.store.plan_status(1).await.unwrap().expect("a plan");
    assert_eq!(status.plan.state, medic::approval::PlanState::Approved, "the approval is stored before the answer");
    for _ in 0..2 {
        assert_eq!(s.click(&ok, OLD_SECRET, None).await, 200);
    }
    poll_until(15, || async { (s.restarts.load(Ordering::SeqCst) == 1).then_some(()) }).await.expect("the plan ran");
    let updated = poll_until(15, || async {
        s.fake.calls("chat.update").into_iter().rev().find(|u| u.to_string().contains("verified"))
    })
    .await
    .unwrap_or_else(|| panic!("no update saying verified: {:#?}", s.fake.calls("chat.update")));
    assert!(!updated.to_string().contains("\"action_id\":\"approve\""), "the buttons are gone: {updated:#}");
    assert!(updated.to_string().contains("slack:U0ALLOWED"), "{updated:#}");
    let threads: Vec<String> = s
        .fake
        .calls("chat.postMessage")
        .iter()
        .filter(|c| c["thread_ts"].is_string())
        .map(|c| c["text"].to_string())
        .collect();
    assert!(threads.iter().any(|t| t.contains("approved by slack:U0ALLOWED")), "{threads:?}");
    assert!(threads.iter().any(|t| t.contains("step succeeded")), "{threads:?}");
    assert_eq!(warnings(), 1, "the freeze is said once, for the approval that counted: {threads:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(s.restarts.load(Ordering::SeqCst), 1, "executed exactly once");

    // The alert resolves: so do the incident and its message.
    assert_eq!(s.app.post("/v1/alerts/generic", common::chat::alert("resolved"), &[]).await.0, 200);
    poll_until(20, || async {
        s.fake.calls("chat.update").into_iter().rev().find(|u| u.to_string().contains("incident resolved"))
    })
    .await
    .unwrap_or_else(|| panic!("no update saying resolved: {:#?}", s.fake.calls("chat.update").last()));

    // It fires again: the new incident's diagnosis recalls the first and what resolved it.
    assert_eq!(s.app.post("/v1/alerts/generic", common::chat::alert("firing"), &[]).await.0, 200);
    let recalled = poll_until(20, || async {
        let audit = s.app.store.audit_page(0, 1_000_000).await.unwrap();
        audit
            .into_iter()
            .rev()
            .find(|r| r.kind == "diagnosed" && r.incident_id != Some(1) && r.data.contains("similar incident #1"))
    })
    .await
    .expect("a diagnosis of the second incident that recalls the first");
    assert!(
        recalled.data.contains("the plan of restart-on-chat-test, approved by slack:U0ALLOWED, ran and was verified"),
        "{}",
        recalled.data
    );
    assert!(recalled.data.contains("incident #1 was resolved by this runbook's plan (+0.5)"), "{}", recalled.data);
    s.app.stop().await.unwrap();
}

async fn user_group_member_rejects_with_a_reason(db: Db) {
    let Some(s) = setup(db, "", 0, None).await else { return };
    s.alert().await;
    let value = button(&s.root().await, "reject");
    assert_eq!(
        s.click(
            &payload("block_actions.json", "U0GROUPIE", &[("ACTION_ID", "reject"), ("BUTTON_VALUE", &value)]),
            SECRET,
            None
        )
        .await,
        200
    );
    let modal =
        poll_until(10, || async { s.fake.calls("views.open").first().cloned() }).await.expect("a reason dialog");
    let meta = modal["view"]["private_metadata"].as_str().unwrap().to_string();
    let submit = payload(
        "view_submission.json",
        "U0GROUPIE",
        &[
            ("PRIVATE_METADATA", &meta),
            ("REASON", "the deploy is being rolled back by hand <!channel> <https://evil.example/login|Click>"),
        ],
    );
    assert_eq!(s.click(&submit, SECRET, None).await, 200);
    let said = poll_until(10, || async {
        s.fake
            .calls("chat.postMessage")
            .into_iter()
            .find(|c| c["text"].as_str().is_some_and(|t| t.contains("rejected by slack:U0GROUPIE")))
    })
    .await
    .expect("the rejection in the thread");
    let said = said["text"].as_str().unwrap();
    assert!(said.contains("rolled back by hand"), "{said}");
    assert!(
        said.contains("&lt;!channel&gt; &lt;https://evil.example/login|Click&gt;") && !said.contains('<'),
        "chat text is shown, never a mention or a disguised link: {said}"
    );
    assert!(s.fake.calls("usergroups.users.list").iter().any(|c| c["usergroup"] == "S0ONCALL"));
    assert_eq!(s.restarts.load(Ordering::SeqCst), 0);
    s.app.stop().await.unwrap();
}

/// A root message Slack took whose answer was lost (the replica died, or the connection broke)
/// is found by its metadata on the retry, and not posted twice; updates go to it.
async fn a_lost_answer_does_not_post_a_second_root(db: Db) {
    let Some(s) = setup(db, "", 0, None).await else { return };
    s.fake.lose_answer.store(1, Ordering::SeqCst);
    s.alert().await;
    let root = s.root().await;
    assert_eq!(root["metadata"], json!({"event_type": "medic_incident", "event_payload": {"incident_id": 1}}));
    poll_until(20, || async { (!s.fake.calls("conversations.history").is_empty()).then_some(()) })
        .await
        .expect("the retry looks for the root it may have posted");
    let value = button(&root, "approve");
    assert_eq!(
        s.click(
            &payload("block_actions.json", "U0ALLOWED", &[("ACTION_ID", "approve"), ("BUTTON_VALUE", &value)]),
            SECRET,
            None
        )
        .await,
        200
    );
    let update = poll_until(20, || async { s.fake.calls("chat.update").into_iter().next() }).await.expect("an update");
    assert_eq!(update["ts"], root["__ts"], "the update edits the root Slack took");
    let roots = s.fake.calls("chat.postMessage").into_iter().filter(|c| c["blocks"].is_array()).count();
    assert_eq!(roots, 1, "one root message");
    s.app.stop().await.unwrap();
}

async fn rate_limited_then_delivered(db: Db) {
    let Some(s) = setup(db, "", 1, None).await else { return };
    s.alert().await;
    let root = s.root().await;
    poll_until(20, || async { (s.fake.calls("chat.postMessage").len() >= 2).then_some(()) })
        .await
        .expect("the message again after the 429");
    let calls = s.fake.calls.lock().unwrap().clone();
    let posts: Vec<&Instant> = calls.iter().filter(|(m, _, _)| m == "chat.postMessage").map(|(_, _, t)| t).collect();
    assert!(posts.len() >= 2, "a 429, then the message");
    assert!(posts[1].duration_since(*posts[0]) >= Duration::from_millis(900), "waited for Retry-After");
    assert!(root["blocks"].is_array());
    // The URL verification challenge of the Events API.
    let body = json!({"token": "x", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P", "type": "url_verification"}).to_string();
    let ts = chrono::Utc::now().timestamp();
    let sig = sign(SECRET, ts, &body);
    let ts = ts.to_string();
    let (status, v) =
        s.app.post("/slack/events", body, &[("x-slack-request-timestamp", &ts), ("x-slack-signature", &sig)]).await;
    assert_eq!(
        (status.as_u16(), v["challenge"].as_str()),
        (200, Some("3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"))
    );
    // The same signed slash command delivered four times is answered once.
    let answered = || {
        s.fake.calls("chat.postMessage").into_iter().filter(|c| c.to_string().contains("Incident #1: ChatTest")).count()
    };
    let before = answered();
    for _ in 0..4 {
        assert_eq!(s.command_as("U0ALLOWED", "status", "13345224609.738474920.dup").await, 200);
    }
    poll_until(10, || async { (answered() > before).then_some(()) }).await.expect("answered");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(answered(), before + 1, "one answer for one invocation");
    s.app.stop().await.unwrap();
}

/// A label that tries to ping the channel and disguise a link reaches the thread escaped
/// through "More evidence" (issue 12, item 3).
async fn more_evidence_escapes_hostile_labels(db: Db) {
    let Some(s) = setup(db, "", 0, None).await else { return };
    let hostile = "<!channel> <https://evil.example/login|Click>";
    let body = json!({"alerts": [{"name": "ChatTest", "status": "firing",
        "labels": {"service": hostile, "severity": "critical"}}]});
    assert_eq!(s.app.post("/v1/alerts/generic", body.to_string(), &[]).await.0, 200);
    let root = s.root().await;
    assert!(!root.to_string().contains("<!channel>"), "{root:#}");
    let value = button(&root, "more_evidence");
    let more = payload("block_actions.json", "U0ALLOWED", &[("ACTION_ID", "more_evidence"), ("BUTTON_VALUE", &value)]);
    assert_eq!(s.click(&more, SECRET, None).await, 200);
    let thread = poll_until(10, || async {
        s.fake.calls("chat.postMessage").into_iter().find(|c| c["thread_ts"].is_string() && c["text"].is_string())
    })
    .await
    .expect("the evidence in the thread");
    let text = thread["text"].as_str().unwrap();
    assert!(text.contains("&lt;!channel&gt;"), "{text}");
    assert!(!text.contains("<!channel>") && !text.contains("<https://"), "{text}");
    // Clicked again within the minute, by anyone: no second post, a private word instead.
    let again =
        payload("block_actions.json", "U0STRANGER", &[("ACTION_ID", "more_evidence"), ("BUTTON_VALUE", &value)]);
    assert_eq!(s.click(&again, SECRET, None).await, 200);
    poll_until(10, || async {
        s.fake.calls("chat.postEphemeral").into_iter().find(|c| c.to_string().contains("within the last minute"))
    })
    .await
    .expect("told the evidence was just posted");
    let posts =
        s.fake.calls("chat.postMessage").into_iter().filter(|c| c["thread_ts"].is_string() && c["text"].is_string());
    assert_eq!(posts.count(), 1, "the evidence once");
    s.app.stop().await.unwrap();
}

/// Slack refuses the token (`invalid_auth`): the root message is not dropped but retried with
/// backoff, `/readyz` and `/metrics` show the failing deliveries meanwhile, and the message is
/// posted once Slack takes the token again (issue 12, item 7).
async fn refused_credentials_are_an_outage_not_a_drop(db: Db) {
    let Some(s) = setup(db, "", 0, None).await else { return };
    s.fake.refuse_auth.store(3, Ordering::SeqCst);
    s.alert().await;
    let ready = poll_until(10, || async {
        let (_, v) = s.app.get("/readyz").await;
        (v["chat"][0]["failing"].as_i64() >= Some(1)).then_some(v)
    })
    .await
    .expect("/readyz shows the failing delivery");
    assert_eq!(ready["ready"], true, "a chat outage does not take intake out of the load balancer: {ready}");
    assert_eq!(ready["degraded"], json!(["slack"]), "{ready}");
    assert!(ready["chat"][0]["last_error"].as_str().unwrap().contains("invalid_auth"), "{ready}");
    let (_, metrics) = s.app.get("/metrics").await;
    assert!(
        metrics.as_str().unwrap().contains("medic_chat_deliveries{platform=\"slack\",state=\"failing\"} 1"),
        "{metrics}"
    );
    let posts = poll_until(20, || async {
        let posts: Vec<Value> =
            s.fake.calls("chat.postMessage").into_iter().filter(|c| c["blocks"].is_array()).collect();
        (posts.len() == 4).then_some(posts)
    })
    .await
    .expect("the root message posted after three refusals");
    assert!(posts.iter().all(|p| p["blocks"] == posts[0]["blocks"]), "the same message, retried");
    // The fake answered the fourth post; the outbox records it a moment later.
    let v = poll_until(5, || async {
        let (_, v) = s.app.get("/readyz").await;
        v["chat"].as_array().unwrap().iter().all(|p| p["failing"] == 0).then_some(v)
    })
    .await
    .expect("/readyz shows the outage over");
    assert_eq!(v["degraded"], json!([]), "{v}");
    s.app.stop().await.unwrap();
}

/// A plan whose replica died for good mid-run (another pod name, its lease lapsed) is marked
/// interrupted by this replica, and chat shows it: the message and a thread line saying a
/// person must take over (issue 12, item 8). Nothing is re-run.
async fn an_orphaned_plan_is_shown_interrupted(db: Db) {
    let Some(s) = setup(db, "", 0, None).await else { return };
    s.alert().await;
    s.root().await;
    let stored = s.app.store.plan_status(1).await.unwrap().expect("a proposed plan").plan;
    let click = medic::approval::Click {
        who: medic::approval::Identity("slack:U0ALLOWED".into()),
        decision: medic::approval::Decision::Approve,
        via: "slack".into(),
        at: chrono::Utc::now().timestamp_millis(),
        reason: None,
    };
    let groups = medic::approval::Groups {
        members: [("sre".to_string(), vec![click.who.clone()])].into(),
        default_approvers: vec![],
    };
    let approved = s.app.store.decide(&stored.plan.hash, &click, &groups, None).await.unwrap().1.expect("approved");
    // Claimed 10 s ago by a pod that is gone; its heartbeat stopped then (the lease is 2 s).
    let then = chrono::Utc::now().timestamp_millis() - 10_000;
    assert!(s.app.store.claim_execution(&approved, "medic-5d8f-gone", then).await.unwrap());
    let line = poll_until(10, || async {
        s.fake
            .calls("chat.postMessage")
            .into_iter()
            .find(|c| c["text"].as_str().is_some_and(|t| t.contains("was interrupted")))
    })
    .await
    .expect("a thread line about the interrupted plan");
    assert!(line["thread_ts"].is_string() && line["text"].as_str().unwrap().contains("not re-run"), "{line}");
    poll_until(10, || async {
        s.fake.calls("chat.update").into_iter().rev().find(|u| u.to_string().contains("interrupted"))
    })
    .await
    .expect("the message says the plan was interrupted");
    let status = s.app.store.plan_status(1).await.unwrap().unwrap();
    assert_eq!(status.execution.map(|e| e.0).as_deref(), Some("interrupted"));
    assert_eq!(s.restarts.load(Ordering::SeqCst), 0, "never re-run");
    s.app.stop().await.unwrap();
}

/// Each step's result reaches the thread when the step ends, while later steps still run
/// (issue 12, item 8).
async fn step_results_reach_the_thread_as_each_step_ends(db: Db) {
    let Some(s) = setup(db, "", 0, None).await else { return };
    let body = json!({"alerts": [{"name": "ChatTestSlow", "status": "firing", "labels": {"service": "checkout"}}]});
    assert_eq!(s.app.post("/v1/alerts/generic", body.to_string(), &[]).await.0, 200);
    let value = button(&s.root().await, "approve");
    let ok = payload("block_actions.json", "U0ALLOWED", &[("ACTION_ID", "approve"), ("BUTTON_VALUE", &value)]);
    assert_eq!(s.click(&ok, SECRET, None).await, 200);
    let thread = |s: &Setup| -> Vec<String> {
        s.fake
            .calls("chat.postMessage")
            .iter()
            .filter(|c| c["thread_ts"].is_string())
            .filter_map(|c| c["text"].as_str().map(str::to_string))
            .collect()
    };
    let first = poll_until(10, || async { thread(&s).into_iter().find(|t| t.contains("step succeeded")) })
        .await
        .expect("the first step's result");
    assert!(first.contains("restart"), "{first}");
    assert!(
        !thread(&s).iter().any(|t| t.contains("verified")),
        "the first step is shown while the second (a 3 s wait) still runs: {:?}",
        thread(&s)
    );
    poll_until(10, || async { thread(&s).into_iter().find(|t| t.contains("verified")) })
        .await
        .expect("the outcome after the last step");
    s.app.stop().await.unwrap();
}

/// "open a ticket": only an order addressed to medic by the control group opens one (on a fake
/// of GitHub's create-issue answer), once per incident; audited; linked in the thread.
async fn a_ticket_is_opened_on_order_once(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let (issues, extra) = common::chat::github_tickets(dir.path()).await;
    let Some(s) = setup(db, &extra, 0, None).await else { return };
    s.alert().await;
    let root = s.root().await;
    let ts = root["__ts"].as_str().unwrap().to_string();
    // A question, and an order overheard: nothing opened.
    assert_eq!(
        s.event(&event("301", "app_mention", "U0ALLOWED", "<@UMEDIC> should we open a ticket?", &ts), None).await,
        200
    );
    assert_eq!(s.event(&event("302", "message", "U0ALLOWED", "open a ticket for this", &ts), None).await, 200);
    // An order from someone outside the control group, and their click on the Ticket button
    // (the same order): refused privately.
    assert_eq!(
        s.event(&event("303", "app_mention", "U0STRANGER", "<@UMEDIC> open a ticket for this", &ts), None).await,
        200
    );
    let value = button(&root, "ticket");
    assert_eq!(value, "1");
    let click = payload("block_actions.json", "U0STRANGER", &[("ACTION_ID", "ticket"), ("BUTTON_VALUE", &value)]);
    assert_eq!(s.click(&click, SECRET, None).await, 200);
    poll_until(10, || async {
        let refusals = s
            .fake
            .calls("chat.postEphemeral")
            .into_iter()
            .filter(|c| c.to_string().contains("may open tickets"))
            .count();
        (refusals >= 2).then_some(())
    })
    .await
    .expect("a private refusal for the order and for the click");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(issues.lock().unwrap().is_empty(), "nothing opened yet");
    // The order, addressed, by the control group: one issue, linked in the thread; again: none.
    assert_eq!(
        s.event(&event("304", "app_mention", "U0ALLOWED", "<@UMEDIC> open a ticket for this", &ts), None).await,
        200
    );
    let link = poll_until(20, || async {
        s.replies(&ts).into_iter().find(|c| c.to_string().contains("github.com/acme/shop/issues/1"))
    })
    .await;
    assert!(link.is_some(), "the issue linked in the thread: {:#?}", s.replies(&ts));
    let issue = issues.lock().unwrap()[0].clone();
    assert!(issue["title"].as_str().unwrap().starts_with("medic incident #1 on checkout"), "{issue:#}");
    assert!(issue["body"].as_str().unwrap().contains("asked for by slack:U0ALLOWED"), "{issue:#}");
    assert_eq!(
        s.event(&event("305", "app_mention", "U0ALLOWED", "<@UMEDIC> open a ticket for this", &ts), None).await,
        200
    );
    poll_until(10, || async { s.replies(&ts).into_iter().find(|c| c.to_string().contains("already has a ticket")) })
        .await
        .expect("said once opened");
    assert_eq!(issues.lock().unwrap().len(), 1, "one ticket per incident");
    let audit = s.app.store.audit_page(0, 1000).await.unwrap();
    let rec = audit.iter().find(|r| r.kind == "ticket_requested").expect("audited");
    assert_eq!(rec.actor, "slack:U0ALLOWED");
    s.app.stop().await.unwrap();
}

both_stores!(
    a_ticket_is_opened_on_order_once,
    an_orphaned_plan_is_shown_interrupted,
    step_results_reach_the_thread_as_each_step_ends,
    approve_once_refuse_strangers,
    user_group_member_rejects_with_a_reason,
    rate_limited_then_delivered,
    a_lost_answer_does_not_post_a_second_root,
    more_evidence_escapes_hostile_labels,
    refused_credentials_are_an_outage_not_a_drop,
    questions_in_the_thread_are_answered_once,
    pause_from_chat_needs_the_control_group,
);

/// Socket Mode: apps.connections.open hands out a ws:// URL on this test's server, which sends
/// an interactive envelope with a click and expects its acknowledgement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_mode_receives_a_click_and_acks() {
    use futures_util::{SinkExt, StreamExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ws_url = format!("ws://{}/link", listener.local_addr().unwrap());
    let (tx_payload, rx_payload) = tokio::sync::oneshot::channel::<String>();
    let (tx_ack, rx_ack) = tokio::sync::oneshot::channel::<Value>();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        let hello = json!({"type": "hello", "num_connections": 1, "connection_info": {"app_id": "A0KRD7HC3"}});
        ws.send(tokio_tungstenite::tungstenite::Message::Text(hello.to_string().into())).await.unwrap();
        let payload: Value = serde_json::from_str(&rx_payload.await.unwrap()).unwrap();
        let env = json!({"envelope_id": "57d6a792-4d35-4d0b-b6aa-3361493e1caf", "type": "interactive", "accepts_response_payload": false, "payload": payload});
        ws.send(tokio_tungstenite::tungstenite::Message::Text(env.to_string().into())).await.unwrap();
        while let Some(Ok(m)) = ws.next().await {
            if let tokio_tungstenite::tungstenite::Message::Text(t) = m {
                let _ = tx_ack.send(serde_json::from_str(t.as_str()).unwrap());
                break;
            }
        }
        // Keep the connection open until the test ends.
        while ws.next().await.is_some() {}
    });
    let Some(s) = setup(Db::Sqlite, "  app_token: {file: APP}\n", 0, Some(ws_url)).await else { return };
    s.alert().await;
    let value = button(&s.root().await, "approve");
    tx_payload
        .send(payload("block_actions.json", "U0ALLOWED", &[("ACTION_ID", "approve"), ("BUTTON_VALUE", &value)]))
        .unwrap();
    let ack = tokio::time::timeout(Duration::from_secs(10), rx_ack).await.expect("an ack within 10 s").unwrap();
    assert_eq!(ack, json!({"envelope_id": "57d6a792-4d35-4d0b-b6aa-3361493e1caf"}));
    // The envelope is acknowledged once the click is stored, not before.
    let status = s.app.store.plan_status(1).await.unwrap().expect("a plan");
    assert_eq!(status.plan.state, medic::approval::PlanState::Approved, "the approval is stored before the ack");
    poll_until(15, || async { (s.restarts.load(Ordering::SeqCst) == 1).then_some(()) })
        .await
        .expect("the click ran the plan");
    // This replica holds the Socket Mode lease while connected, and gives it up as it stops,
    // so a standing-by replica connects at once.
    let now = medic::time::Clock::now(&medic::time::SystemClock);
    let ttl = medic::chat::lease::TTL.as_millis() as i64;
    let lease = medic::chat::slack::SOCKET_LEASE;
    assert!(!s.app.store.lease(lease, "another-replica", now, ttl).await.unwrap(), "held");
    let db = s.app.stop().await.unwrap();
    let store = medic::store::open(&db.url, 2).await.unwrap();
    assert!(store.lease(lease, "another-replica", now, ttl).await.unwrap(), "released");
}
