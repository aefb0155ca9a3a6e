//! Pages against fakes speaking PagerDuty's Events API v2 (202 with `dedup_key`, 400 with
//! `errors`, 429) and a webhook receiver checking the HMAC signature: an escalation pages once
//! on each destination across two replicas (PagerDuty after a 429 storm: delayed, not lost),
//! and the page is resolved when the incident resolves; an event PagerDuty refuses shows in
//! `/readyz`. A plan left waiting for approval and an incident no runbook matches page too.
//! Tickets against fakes of GitHub's and Jira's create-issue answers: a failed plan opens one
//! ticket on each (across two replicas) with the incident's timeline, linked in its Slack
//! thread.

mod common;

use axum::extract::State;
use common::{Db, TestApp, poll_until};
use medic::audit::{AuditEntry, Kind};
use medic::config::Config;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct Fakes {
    pagerduty: Mutex<Vec<Value>>,
    /// Answer this many PagerDuty events with 429 first.
    throttle: AtomicUsize,
    /// Answer every PagerDuty event with 400.
    invalid: std::sync::atomic::AtomicBool,
    webhook: Mutex<Vec<Value>>,
    /// Webhook deliveries whose signature did not verify.
    forged: AtomicUsize,
    github: Mutex<Vec<Value>>,
    jira: Mutex<Vec<Value>>,
    slack: Mutex<Vec<Value>>,
    /// Slack answers every call with an error (an outage of medic's chat).
    slack_down: std::sync::atomic::AtomicBool,
}

async fn serve(f: Arc<Fakes>) -> String {
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    let app = axum::Router::new()
        .route(
            "/v2/enqueue",
            axum::routing::post(|State(f): State<Arc<Fakes>>, body: axum::body::Bytes| async move {
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                if f.throttle.load(Ordering::SeqCst) > 0 {
                    f.throttle.fetch_sub(1, Ordering::SeqCst);
                    return (StatusCode::TOO_MANY_REQUESTS, axum::Json(json!({"status": "throttle event", "message": "Requests for this service are arriving too quickly.  Please retry later."}))).into_response();
                }
                if f.invalid.load(Ordering::SeqCst) {
                    return (StatusCode::BAD_REQUEST, axum::Json(json!({"status": "invalid event", "message": "Event object is invalid", "errors": ["'payload.summary' is missing or blank"]}))).into_response();
                }
                let key = v["dedup_key"].clone();
                f.pagerduty.lock().unwrap().push(v);
                (StatusCode::ACCEPTED, axum::Json(json!({"status": "success", "message": "Event processed", "dedup_key": key}))).into_response()
            }),
        )
        .route(
            "/hook",
            axum::routing::post(|State(f): State<Arc<Fakes>>, headers: HeaderMap, body: String| async move {
                let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                let ts: i64 = h("x-medic-timestamp").parse().unwrap_or(0);
                let fresh = (chrono::Utc::now().timestamp() - ts).abs() < 300;
                if !fresh || medic::page::webhook::signature(b"hook-secret", ts, &body) != h("x-medic-signature") {
                    f.forged.fetch_add(1, Ordering::SeqCst);
                }
                f.webhook.lock().unwrap().push(serde_json::from_str(&body).unwrap_or(Value::Null));
                StatusCode::NO_CONTENT
            }),
        )
        .route(
            "/repos/acme/shop/issues",
            axum::routing::post(|State(f): State<Arc<Fakes>>, headers: HeaderMap, body: axum::body::Bytes| async move {
                assert_eq!(headers.get("authorization").and_then(|v| v.to_str().ok()), Some("Bearer gh-token"));
                let n = {
                    let mut g = f.github.lock().unwrap();
                    g.push(serde_json::from_slice(&body).unwrap());
                    g.len()
                };
                (StatusCode::CREATED, axum::Json(json!({"id": 1000 + n, "number": n,
                    "html_url": format!("https://github.com/acme/shop/issues/{n}"), "state": "open"})))
            }),
        )
        .route(
            "/rest/api/2/issue",
            axum::routing::post(|State(f): State<Arc<Fakes>>, headers: HeaderMap, body: axum::body::Bytes| async move {
                // Basic base64("oncall@example.com:jira-token")
                assert_eq!(
                    headers.get("authorization").and_then(|v| v.to_str().ok()),
                    Some("Basic b25jYWxsQGV4YW1wbGUuY29tOmppcmEtdG9rZW4=")
                );
                let n = {
                    let mut j = f.jira.lock().unwrap();
                    j.push(serde_json::from_slice(&body).unwrap());
                    j.len()
                };
                (StatusCode::CREATED, axum::Json(json!({"id": format!("{}", 10000 + n), "key": format!("OPS-{n}"),
                    "self": format!("https://example.atlassian.net/rest/api/2/issue/{}", 10000 + n)})))
            }),
        )
        .route(
            "/slack/{method}",
            axum::routing::post(|State(f): State<Arc<Fakes>>, body: axum::body::Bytes| async move {
                if f.slack_down.load(Ordering::SeqCst) {
                    return (StatusCode::SERVICE_UNAVAILABLE, "upstream connect error").into_response();
                }
                f.slack.lock().unwrap().push(serde_json::from_slice(&body).unwrap_or(Value::Null));
                axum::Json(json!({"ok": true, "channel": "C0INCIDENT", "ts": "1700000000.000100"})).into_response()
            }),
        )
        .with_state(f);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn config(base: &str, dir: &std::path::Path, owner: &str) -> Config {
    std::fs::write(dir.join("routing"), "R0UT1NGKEY0000000000000000000000").unwrap();
    std::fs::write(dir.join("hook"), "hook-secret").unwrap();
    let yaml = format!(
        "incidents: {{resolve_grace: 1s}}\nexecutor: {{owner: {owner}}}\n\
         paging:\n  when: {{no_runbook: never}}\n  external_url: https://medic.example.com\n  pagerduty: {{routing_key: {{file: {r}}}, api_url: '{base}'}}\n\
         \x20 webhook: {{url: '{base}/hook', secret: {{file: {h}}}}}\n",
        r = dir.join("routing").display(),
        h = dir.join("hook").display(),
    );
    Config::parse(&yaml, "paging.yaml").unwrap()
}

fn alert(status: &str) -> String {
    json!({"alerts": [{"name": "CheckoutDown", "status": status, "labels": {"service": "checkout", "severity": "critical"}}]})
        .to_string()
}

/// What the executor records when a plan fails and is rolled back.
fn escalation(id: i64) -> AuditEntry {
    AuditEntry {
        at: medic::time::Clock::now(&medic::time::SystemClock),
        kind: Kind::Escalated,
        incident_id: Some(id),
        actor: "executor".into(),
        data: json!({"plan": "5f1c0ffee5f1c0ffee", "failed_step": "restart", "reason": "HTTP 500 from the deploy API",
                     "message": "rolled back; a person must take over"}),
    }
}

async fn an_escalation_pages_once_and_resolves_with_the_incident(db: Db) {
    let fakes = Arc::new(Fakes::default());
    fakes.throttle.store(3, Ordering::SeqCst);
    let base = serve(fakes.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let Some(a) = TestApp::spawn(db, config(&base, dir.path(), "replica-a")).await else { return };
    let b = a.replica(config(&base, dir.path(), "replica-b")).await;
    assert_eq!(a.post("/v1/alerts/generic", alert("firing"), &[]).await.0, 200);
    poll_until(10, || async { a.store.incident(1).await.unwrap() }).await.expect("the incident");
    // Both replicas' watchers have read the log's head before the escalation is recorded.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    a.store.record(vec![escalation(1)]).await.unwrap();

    let triggered = poll_until(30, || async { fakes.pagerduty.lock().unwrap().first().cloned() })
        .await
        .expect("PagerDuty paged after the 429s");
    assert_eq!(fakes.throttle.load(Ordering::SeqCst), 0, "three 429s, then delivered");
    assert_eq!(triggered["event_action"], "trigger");
    assert_eq!(triggered["routing_key"], "R0UT1NGKEY0000000000000000000000");
    assert_eq!(triggered["dedup_key"], "medic-incident-1");
    assert_eq!(triggered["payload"]["severity"], "critical");
    assert_eq!(triggered["payload"]["component"], "checkout");
    assert_eq!(triggered["payload"]["source"], "medic");
    let summary = triggered["payload"]["summary"].as_str().unwrap();
    assert!(summary.contains("failed at step restart") && summary.contains("HTTP 500"), "{summary}");
    assert_eq!(triggered["links"][0]["href"], "https://medic.example.com/v1/incidents/1");
    let hooked =
        poll_until(10, || async { fakes.webhook.lock().unwrap().first().cloned() }).await.expect("the webhook");
    assert_eq!((hooked["version"].as_u64(), hooked["event"].as_str()), (Some(1), Some("trigger")), "{hooked}");
    assert_eq!(hooked["dedup_key"], "medic-incident-1");

    // The incident resolves: the page resolves, once.
    assert_eq!(a.post("/v1/alerts/generic", alert("resolved"), &[]).await.0, 200);
    poll_until(30, || async {
        fakes.pagerduty.lock().unwrap().iter().find(|e| e["event_action"] == "resolve").cloned()
    })
    .await
    .expect("the page resolved");
    poll_until(10, || async { fakes.webhook.lock().unwrap().iter().find(|e| e["event"] == "resolve").cloned() })
        .await
        .expect("the webhook's resolve");
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let pd = fakes.pagerduty.lock().unwrap().clone();
    let actions: Vec<&str> = pd.iter().filter_map(|e| e["event_action"].as_str()).collect();
    assert_eq!(actions, ["trigger", "resolve"], "paged once across two replicas, resolved once");
    let hooks: Vec<&str> = fakes
        .webhook
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| e["event"].as_str())
        .map(|s| if s == "trigger" { "trigger" } else { "resolve" })
        .collect();
    assert_eq!(hooks, ["trigger", "resolve"]);
    assert_eq!(fakes.forged.load(Ordering::SeqCst), 0, "every webhook delivery signed");
    // No credential in what the outbox stored.
    let (_, ready) = a.get("/readyz").await;
    assert_eq!(ready["degraded"], json!([]), "{ready:#}");
    b.stop().await.unwrap();
    a.stop().await.unwrap();
}

async fn a_refused_page_shows_in_readyz(db: Db) {
    let fakes = Arc::new(Fakes::default());
    fakes.invalid.store(true, Ordering::SeqCst);
    let base = serve(fakes.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let Some(a) = TestApp::spawn(db, config(&base, dir.path(), "replica-a")).await else { return };
    assert_eq!(a.post("/v1/alerts/generic", alert("firing"), &[]).await.0, 200);
    poll_until(10, || async { a.store.incident(1).await.unwrap() }).await.expect("the incident");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    a.store.record(vec![escalation(1)]).await.unwrap();
    let ready = poll_until(20, || async {
        let (_, ready) = a.get("/readyz").await;
        ready["degraded"].as_array().unwrap().contains(&json!("pagerduty")).then_some(ready)
    })
    .await
    .expect("the refused page shows");
    assert_eq!(ready["ready"], true, "{ready:#}");
    assert!(ready.to_string().contains("Event object is invalid"), "the reason: {ready:#}");
    assert!(!ready.to_string().contains("R0UT1NGKEY"), "{ready:#}");
    a.stop().await.unwrap();
}

/// Tickets on GitHub and Jira, and Slack to link them in.
fn ticket_config(base: &str, dir: &std::path::Path, owner: &str) -> Config {
    for (f, v) in [("gh", "gh-token"), ("jira", "jira-token"), ("bot", "xoxb-1"), ("signing", "s")] {
        std::fs::write(dir.join(f), v).unwrap();
    }
    let yaml = format!(
        "incidents: {{resolve_grace: 1s}}\nexecutor: {{owner: {owner}}}\n\
         tickets:\n  github: {{repository: acme/shop, token: {{file: {gh}}}, labels: [incident], api_url: '{base}'}}\n\
         \x20 jira: {{url: '{base}', project: OPS, email: oncall@example.com, token: {{file: {jira}}}}}\n\
         slack:\n  bot_token: {{file: {bot}}}\n  signing_secret: [{{file: {signing}}}]\n  api_url: '{base}/slack/'\n  default_channel: C0INCIDENT\n",
        gh = dir.join("gh").display(),
        jira = dir.join("jira").display(),
        bot = dir.join("bot").display(),
        signing = dir.join("signing").display(),
    );
    Config::parse(&yaml, "tickets.yaml").unwrap()
}

async fn a_failed_plan_opens_one_ticket_linked_in_its_thread(db: Db) {
    let fakes = Arc::new(Fakes::default());
    let base = serve(fakes.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let Some(a) = TestApp::spawn(db, ticket_config(&base, dir.path(), "replica-a")).await else { return };
    let b = a.replica(ticket_config(&base, dir.path(), "replica-b")).await;
    assert_eq!(a.post("/v1/alerts/generic", alert("firing"), &[]).await.0, 200);
    // The incident's message is up (its thread is where the ticket is linked).
    poll_until(20, || async { fakes.slack.lock().unwrap().iter().find(|c| c["blocks"].is_array()).cloned() })
        .await
        .expect("the incident posted to Slack");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    a.store.record(vec![escalation(1)]).await.unwrap();
    let issue =
        poll_until(20, || async { fakes.github.lock().unwrap().first().cloned() }).await.expect("a GitHub issue");
    assert!(issue["title"].as_str().unwrap().starts_with("medic incident #1 on checkout"), "{issue:#}");
    assert_eq!(issue["labels"], json!(["incident"]));
    let body = issue["body"].as_str().unwrap();
    assert!(body.contains("a plan failed and a person must take over"), "{body}");
    assert!(
        body.contains("## Timeline") && body.contains("| escalated |") && body.contains("| incident_opened |"),
        "the timeline: {body}"
    );
    let jira = poll_until(20, || async { fakes.jira.lock().unwrap().first().cloned() }).await.expect("a Jira issue");
    assert_eq!(jira["fields"]["project"]["key"], "OPS");
    assert_eq!(jira["fields"]["issuetype"]["name"], "Task");
    let linked = |what: &'static str| {
        let fakes = fakes.clone();
        async move {
            poll_until(20, || async {
                fakes
                    .slack
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|c| c["text"].as_str().is_some_and(|t| t.contains(what)))
                    .cloned()
            })
            .await
        }
    };
    let line = linked("github.com/acme/shop/issues/1").await.expect("the GitHub issue linked in the thread");
    assert_eq!(line["thread_ts"], "1700000000.000100", "{line:#}");
    let jira_line = poll_until(20, || async {
        let want = format!("{base}/browse/OPS-1");
        fakes.slack.lock().unwrap().iter().find(|c| c["text"].as_str().is_some_and(|t| t.contains(&want))).cloned()
    })
    .await;
    assert!(jira_line.is_some(), "the Jira issue linked: {:#?}", fakes.slack.lock().unwrap());
    // A second escalation of the same incident opens no second ticket.
    a.store.record(vec![escalation(1)]).await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!((fakes.github.lock().unwrap().len(), fakes.jira.lock().unwrap().len()), (1, 1), "one ticket each");
    b.stop().await.unwrap();
    a.stop().await.unwrap();
}

/// A plan waiting for approval past `approval_waiting` pages; so does an incident at severity
/// critical that no runbook matches, unless a route's rules say otherwise.
async fn waiting_plans_and_incidents_without_a_runbook_page(db: Db) {
    let fakes = Arc::new(Fakes::default());
    let base = serve(fakes.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let restarts = Arc::new(AtomicUsize::new(0));
    let deploy = common::chat::deploy_api(restarts).await;
    let runbooks = common::chat::runbooks(dir.path(), &deploy);
    std::fs::write(dir.path().join("routing"), "R0UT1NGKEY0000000000000000000000").unwrap();
    let yaml = format!(
        "runbooks: {runbooks}\nresponders:\n  groups:\n    sre: [slack:U0ALLOWED]\n\
         executor:\n  http_allowed_hosts: ['{deploy}']\n\
         paging:\n  when: {{approval_waiting: 2s}}\n  routes: [{{labels: {{service: cache}}, when: {{no_runbook: never}}}}]\n\
         \x20 pagerduty: {{routing_key: {{file: {r}}}, api_url: '{base}'}}\n",
        runbooks = runbooks.display(),
        r = dir.path().join("routing").display(),
    );
    let Some(a) = TestApp::spawn(db, Config::parse(&yaml, "paging.yaml").unwrap()).await else { return };
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(a.post("/v1/alerts/generic", common::chat::alert("firing"), &[]).await.0, 200);
    let disk = json!({"alerts": [{"name": "DiskFull", "status": "firing", "labels": {"service": "db", "severity": "critical"}}]});
    assert_eq!(a.post("/v1/alerts/generic", disk.to_string(), &[]).await.0, 200);
    // A route turns the no-runbook page off for the cache.
    let cache = json!({"alerts": [{"name": "CacheDown", "status": "firing", "labels": {"service": "cache", "severity": "critical"}}]});
    assert_eq!(a.post("/v1/alerts/generic", cache.to_string(), &[]).await.0, 200);
    let summary = |what: &'static str| {
        let fakes = fakes.clone();
        async move {
            // Waiting plans are looked at every 30 s.
            poll_until(70, || async {
                fakes
                    .pagerduty
                    .lock()
                    .unwrap()
                    .iter()
                    .find_map(|e| e["payload"]["summary"].as_str().filter(|s| s.contains(what)).map(str::to_string))
            })
            .await
        }
    };
    let waiting = summary("for a person's approval").await.expect("the plan left waiting pages");
    assert!(waiting.contains("on checkout"), "{waiting}");
    let none = summary("no runbook matches").await.expect("the incident no runbook matches pages");
    assert!(none.contains("on db"), "{none}");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(fakes.pagerduty.lock().unwrap().len(), 2, "each paged once: {:#?}", fakes.pagerduty.lock().unwrap());
    a.stop().await.unwrap();
}

/// The morning summary, due now: one message per channel, across two replicas, listing the
/// night's incidents with what waits for a person.
async fn the_morning_summary_lists_the_night_once(db: Db) {
    let fakes = Arc::new(Fakes::default());
    let base = serve(fakes.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let now = chrono::Utc::now();
    let at = now.format("%H:%M").to_string();
    let config = |owner: &str, summary: bool| {
        let mut c = ticket_config(&base, dir.path(), owner);
        c.tickets = Default::default();
        c.summary = summary.then(|| medic::chat::summary::Config { at: at.clone(), timezone: "UTC".into() });
        c
    };
    // The summary is due from the moment a replica with it starts: the night's incident first.
    let Some(a) = TestApp::spawn(db, config("replica-a", false)).await else { return };
    assert_eq!(a.post("/v1/alerts/generic", alert("firing"), &[]).await.0, 200);
    poll_until(10, || async { a.store.incident(1).await.unwrap() }).await.expect("the incident");
    // Two replicas with the summary: one of them queues it.
    let b = a.replica(config("replica-b", true)).await;
    let c = a.replica(config("replica-c", true)).await;
    let summary = poll_until(40, || async {
        fakes
            .slack
            .lock()
            .unwrap()
            .iter()
            .find(|c| {
                c["text"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("medic&#39;s summary") || t.starts_with("medic's summary"))
            })
            .cloned()
    })
    .await;
    let summary = summary.unwrap_or_else(|| panic!("a summary: {:#?}", fakes.slack.lock().unwrap()));
    let text = summary["text"].as_str().unwrap();
    assert_eq!(summary["channel"], "C0INCIDENT");
    assert!(summary["thread_ts"].is_null(), "a message of its own: {summary:#}");
    assert!(text.contains("#1 CheckoutDown on checkout"), "{text}");
    assert!(text.contains("no runbook matched"), "{text}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let n = fakes
        .slack
        .lock()
        .unwrap()
        .iter()
        .filter(|c| c["text"].as_str().is_some_and(|t| t.contains("summary,")))
        .count();
    assert_eq!(n, 1, "one summary");
    c.stop().await.unwrap();
    b.stop().await.unwrap();
    a.stop().await.unwrap();
}

/// Chat deliveries failing page once ("medic is degraded"), resolved when they flow again.
async fn failing_chat_deliveries_page_and_resolve(db: Db) {
    let fakes = Arc::new(Fakes::default());
    fakes.slack_down.store(true, Ordering::SeqCst);
    let base = serve(fakes.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = ticket_config(&base, dir.path(), "replica-a");
    config.tickets = Default::default();
    std::fs::write(dir.path().join("routing"), "R0UT1NGKEY0000000000000000000000").unwrap();
    let paging = format!(
        "when: {{no_runbook: never}}\npagerduty: {{routing_key: {{file: {}}}, api_url: '{base}'}}\n",
        dir.path().join("routing").display()
    );
    config.paging = serde_norway::from_str(&paging).unwrap();
    let Some(a) = TestApp::spawn(db, config).await else { return };
    for name in ["CheckoutDown", "CartDown", "SearchDown"] {
        let body = json!({"alerts": [{"name": name, "status": "firing", "labels": {"service": name.to_lowercase(), "severity": "critical"}}]});
        assert_eq!(a.post("/v1/alerts/generic", body.to_string(), &[]).await.0, 200);
    }
    let page = poll_until(40, || async {
        fakes.pagerduty.lock().unwrap().iter().find(|e| e["event_action"] == "trigger").cloned()
    })
    .await
    .expect("medic pages that its chat deliveries fail");
    assert_eq!(page["dedup_key"], "medic-degraded");
    let summary = page["payload"]["summary"].as_str().unwrap();
    assert!(summary.starts_with("medic cannot deliver to slack") && summary.contains("HTTP 503"), "{summary}");
    fakes.slack_down.store(false, Ordering::SeqCst);
    poll_until(60, || async {
        fakes.pagerduty.lock().unwrap().iter().find(|e| e["event_action"] == "resolve").cloned()
    })
    .await
    .expect("resolved once the messages are delivered");
    let (_, ready) = a.get("/readyz").await;
    assert_eq!(ready["degraded"], json!([]), "{ready:#}");
    let triggers = fakes.pagerduty.lock().unwrap().iter().filter(|e| e["event_action"] == "trigger").count();
    assert_eq!(triggers, 1, "paged once");
    a.stop().await.unwrap();
}

both_stores!(
    failing_chat_deliveries_page_and_resolve,
    the_morning_summary_lists_the_night_once,
    an_escalation_pages_once_and_resolves_with_the_incident,
    a_refused_page_shows_in_readyz,
    a_failed_plan_opens_one_ticket_linked_in_its_thread,
    waiting_plans_and_incidents_without_a_runbook_page
);
