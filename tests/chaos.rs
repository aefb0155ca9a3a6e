//! Chaos, on PostgreSQL: three `medic serve` processes on one database behind a loopback TCP
//! load balancer written here, against a fake of Slack's Web API. An alert storm and
//! duplicated approval clicks arrive while a random replica is killed with SIGKILL every few
//! seconds and started again. Afterwards: every acknowledged alert is stored; every approved
//! plan ran exactly once, or is marked interrupted and escalated; one root message per
//! incident; the audit chain verifies. The counts are printed. Bounded to about a minute.

mod common;

use common::{Db, fresh_db};
use hmac::{KeyInit, Mac};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const SERVICES: usize = 12;
const ALERTS: usize = 12_000;
const BATCH: usize = 10;
const SENDERS: usize = 6;

/// Slack's Web API, enough for medic: root messages get a `ts`; every call is recorded.
async fn slack(posts: Arc<Mutex<Vec<Value>>>) -> String {
    let app = axum::Router::new().route(
        "/api/{method}",
        axum::routing::post(move |axum::extract::Path(method): axum::extract::Path<String>, body: String| {
            let posts = posts.clone();
            async move {
                let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                if method == "chat.postMessage" {
                    let mut p = posts.lock().unwrap();
                    let ts = format!("1700000000.{:06}", p.len());
                    p.push(json!({"ts": ts, "body": v}));
                    return axum::Json(json!({"ok": true, "channel": "C0INCIDENT", "ts": ts}));
                }
                axum::Json(json!({"ok": true}))
            }
        }),
    );
    serve(app).await
}

/// The deploy API the runbook calls: restarts per service.
async fn deploy(calls: Arc<Mutex<HashMap<String, usize>>>) -> String {
    let app = axum::Router::new().route(
        "/v1/services/{service}/restart",
        axum::routing::post(move |axum::extract::Path(service): axum::extract::Path<String>| {
            *calls.lock().unwrap().entry(service).or_default() += 1;
            async { axum::Json(json!({"status": "done"})) }
        }),
    );
    serve(app).await
}

async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr.to_string()
}

/// A TCP load balancer: each connection goes to the next backend that accepts it.
async fn balancer(ports: Vec<u16>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let next = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else { continue };
            let (ports, next) = (ports.clone(), next.clone());
            tokio::spawn(async move {
                let start = next.fetch_add(1, Ordering::Relaxed);
                for k in 0..ports.len() {
                    let port = ports[(start + k) % ports.len()];
                    if let Ok(mut out) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                        return;
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

struct Replica {
    cfg: PathBuf,
    log: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Replica {
    fn start(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_medic"))
            .args(["serve", "--config"])
            .arg(&self.cfg)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill(); // SIGKILL
            let _ = c.wait();
        }
    }
}

fn config(dir: &Path, i: usize, port: u16, db: &str, api: &str, deploy: &str, runbooks: &Path) -> PathBuf {
    let secret = dir.join("signing");
    let bot = dir.join("bot");
    let yaml = format!(
        "listen: 127.0.0.1:{port}\n\
         database: {{url: '{db}', max_connections: 6}}\n\
         runbooks: {runbooks}\n\
         responders:\n  groups:\n    sre: [slack:U0ALLOWED]\n\
         executor:\n  http_allowed_hosts: ['{deploy}']\n  lease: 2s\n  owner: replica-{i}\n\
         slack:\n  bot_token: {{file: {bot}}}\n  signing_secret: [{{file: {secret}}}]\n  api_url: {api}\n  default_channel: C0INCIDENT\n",
        runbooks = runbooks.display(),
        bot = bot.display(),
        secret = secret.display(),
    );
    let path = dir.join(format!("replica-{i}.yaml"));
    std::fs::write(&path, yaml).unwrap();
    path
}

fn signed_click(value: &str) -> (String, String, String) {
    let payload = String::from_utf8(common::fixture("slack/block_actions.json"))
        .unwrap()
        .replace("USER_ID", "U0ALLOWED")
        .replace("ACTION_ID", "approve")
        .replace("BUTTON_VALUE", value);
    let body = format!("payload={}", url::form_urlencoded::byte_serialize(payload.as_bytes()).collect::<String>());
    let ts = chrono::Utc::now().timestamp().to_string();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("v0:{ts}:{body}").as_bytes());
    (body, ts, format!("v0={}", hex::encode(mac.finalize().into_bytes())))
}

/// The approve button's value (`incident:hash`) of a root message.
fn approve_value(root: &Value) -> Option<String> {
    root["body"]["blocks"]
        .as_array()?
        .iter()
        .filter(|b| b["type"] == "actions")
        .flat_map(|b| b["elements"].as_array().cloned().unwrap_or_default())
        .find(|e| e["action_id"] == "approve")?["value"]
        .as_str()
        .map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_survive_sigkill_under_a_storm() {
    let Some(db) = fresh_db(Db::Postgres).await else { return };
    // The schema first, so the replicas do not race to migrate it.
    medic::store::open(&db.url, 2).await.unwrap().close().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("signing"), SECRET).unwrap();
    std::fs::write(dir.path().join("bot"), "xoxb-test").unwrap();
    let posts = Arc::new(Mutex::new(Vec::new()));
    let api = format!("http://{}/api", slack(posts.clone()).await);
    let calls = Arc::new(Mutex::new(HashMap::new()));
    let deploy_addr = deploy(calls.clone()).await;
    let runbooks = common::chat::runbooks(dir.path(), &deploy_addr);
    let mut replicas: Vec<Replica> = (0..3)
        .map(|i| {
            let port = common::stack::free_port();
            let cfg = config(dir.path(), i, port, &db.url, &api, &deploy_addr, &runbooks);
            Replica { cfg, log: dir.path().join(format!("replica-{i}.log")), port, child: None }
        })
        .collect();
    for r in &mut replicas {
        r.start();
    }
    for r in &replicas {
        assert!(common::stack::ready(&format!("http://127.0.0.1:{}/readyz", r.port), 30).await, "replica up");
    }
    let lb = balancer(replicas.iter().map(|r| r.port).collect()).await;
    let http = medic::telemetry::http_client_builder().timeout(Duration::from_secs(10)).build().unwrap();
    let started = Instant::now();

    // The storm: SENDERS senders, BATCH alerts per request, each retried until acknowledged.
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let next = Arc::new(AtomicUsize::new(0));
    let retries = Arc::new(AtomicUsize::new(0));
    let mut senders = Vec::new();
    for _ in 0..SENDERS {
        let (http, lb, acked, next, retries) = (http.clone(), lb.clone(), acked.clone(), next.clone(), retries.clone());
        senders.push(tokio::spawn(async move {
            loop {
                let first = next.fetch_add(BATCH, Ordering::SeqCst);
                if first >= ALERTS {
                    return;
                }
                // Services open one after another through the storm, so incidents, clicks and
                // executions happen while replicas die; every other one has the slow plan
                // (a restart, then 3 s), which a kill can cut in the middle.
                let alerts: Vec<Value> = (first..first + BATCH)
                    .map(|n| {
                        let svc = n * SERVICES / ALERTS;
                        let name = if svc % 2 == 1 { "ChatTestSlow" } else { "ChatTest" };
                        json!({"name": name, "status": "firing",
                               "labels": {"service": format!("svc-{svc}"), "n": n.to_string()}})
                    })
                    .collect();
                let body = json!({"alerts": alerts}).to_string();
                for _ in 0..200 {
                    let r = http
                        .post(format!("{lb}/v1/alerts/generic"))
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await;
                    if r.is_ok_and(|r| r.status().is_success()) {
                        acked.lock().unwrap().extend(first..first + BATCH);
                        // Paced to last through the chaos (about 500 alerts/s).
                        tokio::time::sleep(Duration::from_millis(120)).await;
                        break;
                    }
                    retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }));
    }

    // Clicks: three concurrent approvals of every plan shown, through the balancer. As a
    // person would, a responder clicks again when the plan is still proposed 5 s after the
    // click (a replica killed while deciding has not answered, or answered past Slack's budget).
    let store = medic::store::open(&db.url, 2).await.unwrap();
    let clicking = Arc::new(AtomicBool::new(true));
    let reclicks = Arc::new(AtomicUsize::new(0));
    let clicker = {
        let (http, lb, posts, clicking, reclicks, store) =
            (http.clone(), lb.clone(), posts.clone(), clicking.clone(), reclicks.clone(), store.clone());
        tokio::spawn(async move {
            let mut clicked: HashMap<String, Instant> = HashMap::new();
            while clicking.load(Ordering::SeqCst) {
                let values: Vec<String> = posts.lock().unwrap().iter().filter_map(approve_value).collect();
                for v in values {
                    if let Some(at) = clicked.get(&v) {
                        if at.elapsed() < Duration::from_secs(5) {
                            continue;
                        }
                        let incident: i64 = v.split(':').next().and_then(|i| i.parse().ok()).unwrap_or_default();
                        let proposed = matches!(store.plan_status(incident).await, Ok(Some(s))
                            if s.plan.state == medic::approval::PlanState::Proposed);
                        if !proposed {
                            continue;
                        }
                        reclicks.fetch_add(1, Ordering::Relaxed);
                    }
                    clicked.insert(v.clone(), Instant::now());
                    for _ in 0..3 {
                        let (http, lb, v) = (http.clone(), lb.clone(), v.clone());
                        tokio::spawn(async move {
                            for _ in 0..50 {
                                let (body, ts, sig) = signed_click(&v);
                                let r = http
                                    .post(format!("{lb}/slack/interactions"))
                                    .header("content-type", "application/x-www-form-urlencoded")
                                    .header("x-slack-request-timestamp", ts)
                                    .header("x-slack-signature", sig)
                                    .body(body)
                                    .send()
                                    .await;
                                if r.is_ok_and(|r| r.status().is_success()) {
                                    return;
                                }
                                tokio::time::sleep(Duration::from_millis(200)).await;
                            }
                        });
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    // Chaos: every 2.5 s a replica is killed with SIGKILL and started again 1 s later.
    // The victims are random; the seed is printed, so a failing run can be replayed.
    let seed = std::env::var("MEDIC_CHAOS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos() as u64
    });
    println!("chaos: seed {seed} (MEDIC_CHAOS_SEED replays it)");
    let mut rng = seed;
    let mut kills = 0;
    while started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let victim = (rng >> 33) as usize % 3;
        replicas[victim].kill();
        kills += 1;
        tokio::time::sleep(Duration::from_secs(1)).await;
        replicas[victim].start();
    }
    for s in senders {
        s.await.unwrap();
    }
    for r in &replicas {
        assert!(common::stack::ready(&format!("http://127.0.0.1:{}/readyz", r.port), 30).await, "replica back");
    }
    // Every incident gets its root message and its clicks; then the executions settle (a lease
    // is 2 s; the sweep runs every 0.5 s).
    let settled = common::poll_until(40, || async {
        let incidents =
            store.incidents(&medic::store::IncidentFilter { limit: 1000, ..Default::default() }).await.ok()?;
        let shown = posts.lock().unwrap().iter().filter_map(approve_value).count();
        let mut open_plans = 0;
        for i in &incidents {
            if let Some(s) = store.plan_status(i.id).await.ok()? {
                let running = s.execution.as_ref().is_some_and(|(st, _)| st == "running");
                let waiting = s.plan.state == medic::approval::PlanState::Approved && s.execution.is_none();
                if running || waiting || s.plan.state == medic::approval::PlanState::Proposed {
                    open_plans += 1;
                }
            }
        }
        (shown >= incidents.len() && open_plans == 0).then_some(incidents.len())
    })
    .await;
    clicking.store(false, Ordering::SeqCst);
    clicker.await.unwrap();
    let logs: String = replicas.iter().map(|r| std::fs::read_to_string(&r.log).unwrap_or_default()).collect();
    let Some(n_incidents) = settled else {
        let mut open = Vec::new();
        let incidents = store.incidents(&medic::store::IncidentFilter { limit: 1000, ..Default::default() }).await;
        for i in incidents.unwrap_or_default() {
            let s = store.plan_status(i.id).await.ok().flatten();
            open.push(format!("{}: {:?}", i.id, s.map(|s| (s.plan.state, s.execution))));
        }
        let shown = posts.lock().unwrap().iter().filter_map(approve_value).count();
        panic!(
            "did not settle within 40 s; {shown} plans shown; plans: {open:?}; replica logs:\n{}",
            &logs[logs.len().saturating_sub(4000)..]
        )
    };

    // 1. Every acknowledged alert is stored.
    let acked = acked.lock().unwrap().clone();
    let mut stored = 0usize;
    let incidents = store.incidents(&medic::store::IncidentFilter { limit: 1000, ..Default::default() }).await.unwrap();
    for i in &incidents {
        stored += i.n_alerts as usize;
    }
    assert_eq!(acked.len(), ALERTS, "every batch was acknowledged in the end");
    assert_eq!(stored, acked.len(), "every acknowledged alert is stored, once");
    // 2. Every approved plan ran exactly once, or is interrupted and escalated.
    let calls = calls.lock().unwrap().clone();
    let (mut succeeded, mut interrupted) = (0, 0);
    for i in &incidents {
        let s = store.plan_status(i.id).await.unwrap().expect("a plan per incident");
        assert_eq!(s.plan.state, medic::approval::PlanState::Approved, "incident {}: {:?}", i.id, s.plan.state);
        let service = i.title.split(" on ").nth(1).unwrap_or_default().to_string();
        let ran = calls.get(&service).copied().unwrap_or(0);
        match s.execution.as_ref().map(|(st, _)| st.as_str()) {
            Some("succeeded") => {
                succeeded += 1;
                assert_eq!(ran, 1, "incident {} ({service}): ran {ran} times", i.id);
            }
            Some("interrupted") => {
                interrupted += 1;
                assert!(ran <= 1, "incident {} ({service}): an interrupted plan ran {ran} times", i.id);
                let audit = store.audit_for_incident(i.id).await.unwrap();
                assert!(audit.iter().any(|r| r.kind == "escalated"), "incident {}: escalated", i.id);
            }
            other => panic!("incident {}: execution {other:?}", i.id),
        }
    }
    // 3. One root message per incident.
    let mut roots: BTreeMap<String, usize> = BTreeMap::new();
    for p in posts.lock().unwrap().iter().filter(|p| p["body"]["blocks"].is_array()) {
        let text = p["body"]["text"].as_str().unwrap_or_default();
        let id = text.split(':').next().unwrap_or_default().to_string();
        *roots.entry(id).or_default() += 1;
    }
    let duplicated: Vec<_> = roots.iter().filter(|(_, n)| **n > 1).collect();
    // 4. The audit chain verifies.
    let chain = medic::store::verify_audit(store.as_ref()).await.unwrap();
    println!(
        "chaos: {kills} SIGKILLs in {:.0} s; {} alerts acknowledged ({} retried requests), {stored} stored; \
         {n_incidents} incidents, {} root messages; plans: {succeeded} ran once, {interrupted} interrupted and escalated, \
         {} clicks repeated; audit chain: {:?}",
        started.elapsed().as_secs_f64(),
        acked.len(),
        retries.load(Ordering::Relaxed),
        roots.values().sum::<usize>(),
        reclicks.load(Ordering::Relaxed),
        chain.as_ref().map(|v| v.checked)
    );
    assert_eq!(n_incidents, SERVICES, "one incident per service");
    assert!(duplicated.is_empty(), "root messages posted more than once: {duplicated:?}");
    assert_eq!(roots.len(), SERVICES);
    assert!(chain.is_ok(), "{chain:?}");
    for r in &mut replicas {
        r.kill();
    }
    store.close().await;
}
