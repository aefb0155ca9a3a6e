//! The executor's generic actions (a deploy webhook, scripts) against a recorded world, on both stores: a verified
//! success; a failed post-check that rolls back and escalates; the HTTP allow-list; a crash
//! mid-plan that leaves the plan interrupted and escalated, never re-run; redacted script output.

mod common;

use common::{Db, fresh_db};
use medic::alert::{Alert, AlertStatus, Labels, Source};
use medic::approval::ApprovedPlan;
use medic::executor::{Executor, Limits, Outcome};
use medic::incident::Policy;
use medic::scenario::recorded::Recorded;
use medic::store::{self, Store};
use medic::time::{Clock, Millis};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Scenario time: the world's `now`, advancing with real time.
struct ScenarioClock(Millis, Instant);

impl Clock for ScenarioClock {
    fn now(&self) -> Millis {
        self.0 + self.1.elapsed().as_millis() as Millis
    }
}

fn world(after: &str) -> medic::scenario::World {
    let yaml = format!(
        "name: t\nnow: 2026-11-21T15:00:00Z\nalerts:\n  - labels: {{alertname: HighErrorRate, service: checkout, severity: critical}}\n    starts: -15m\n\
         series:\n  - {{query: error_ratio, labels: {{service: checkout}}, start: -60m, values: '0.004x35 0.004+0.006x24'}}\n\
         after:\n  series:\n    - {{query: error_ratio, labels: {{service: checkout}}, start: 0, values: '{after}'}}\n"
    );
    serde_norway::from_str::<medic::scenario::Scenario>(&yaml).unwrap().world().unwrap()
}

/// A deploy API: records every call; `rollback` switches the world to its "after" state.
async fn deploy_api(
    recorded: Arc<Recorded>,
    clock: Arc<ScenarioClock>,
    calls: Arc<Mutex<Vec<String>>>,
    broken_rollout: Arc<std::sync::atomic::AtomicBool>,
) -> String {
    let app = axum::Router::new().route(
        "/v1/services/{service}/{op}",
        axum::routing::post(move |axum::extract::Path((service, op)): axum::extract::Path<(String, String)>| {
            let (recorded, clock, calls, broken) =
                (recorded.clone(), clock.clone(), calls.clone(), broken_rollout.clone());
            async move {
                calls.lock().unwrap().push(format!("{op} {service}"));
                if op == "rollout" && broken.load(std::sync::atomic::Ordering::SeqCst) {
                    return (
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                        axum::Json(json!({"error": "deploy system down"})),
                    );
                }
                if op == "rollback" {
                    recorded.act(clock.now());
                }
                (axum::http::StatusCode::OK, axum::Json(json!({"ok": true, "token": "Bearer abcdefghijklmnop"})))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr.to_string()
}

struct Setup {
    _db: common::TestDb,
    store: Arc<dyn Store>,
    recorded: Arc<Recorded>,
    clock: Arc<ScenarioClock>,
    calls: Arc<Mutex<Vec<String>>>,
    broken_rollout: Arc<std::sync::atomic::AtomicBool>,
    api: String,
}

async fn setup(db: Db, after: &str) -> Option<Setup> {
    let db = fresh_db(db).await?;
    let store = store::open(&db.url, 8).await.unwrap();
    let w = world(after);
    let clock = Arc::new(ScenarioClock(w.now, Instant::now()));
    let labels: Labels =
        [("alertname".to_string(), "HighErrorRate".to_string()), ("service".to_string(), "checkout".to_string())]
            .into();
    let alert = Alert {
        source: Source::Alertmanager,
        fingerprint: "f".into(),
        status: AlertStatus::Firing,
        labels,
        annotations: Labels::new(),
        starts_at: w.now,
        ends_at: None,
        links: Labels::new(),
    };
    store.ingest(&[alert], &[], w.now, &Policy::default()).await.unwrap();
    let recorded = Arc::new(Recorded::new(w));
    let calls = Arc::new(Mutex::new(Vec::new()));
    let broken_rollout = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let api = deploy_api(recorded.clone(), clock.clone(), calls.clone(), broken_rollout.clone()).await;
    Some(Setup { _db: db, store, recorded, clock, calls, broken_rollout, api })
}

/// Proposes and approves the rollback plan with a short post-check deadline.
async fn approved(s: &Setup, api: &str) -> ApprovedPlan {
    approved_with(s, api, false).await
}

/// A runbook that acts through a deploy webhook (as AWX, Rundeck or Argo Workflows take one):
/// `rollback` to fix, `rollout` of the version it replaced to undo.
const WEBHOOK_RUNBOOK: &str = r#"
id: rollback-by-webhook
title: Roll back through a deploy webhook
tier: 3
match: {alerts: ['alertname="HighErrorRate"']}
context: [{name: error_ratio, promql: 'sum(rate(errors{service="{{service}}"}[5m]))', unit: ratio}]
hypothesis: "{{service}} regressed"
vars: {deploy_api: http://unset}
plan:
  steps:
    - id: roll-back
      action: {http: {method: POST, url: "{{vars.deploy_api}}/v1/services/{{service}}/rollback", body: {reason: "medic incident {{incident.id}}"}}}
      rollback: {http: {method: POST, url: "{{vars.deploy_api}}/v1/services/{{service}}/rollout", body: {version: "{{change.version}}"}}}
      post_check: {query: error_ratio, condition: "< 0.02", within: 2s, every: 1s}
approval: {groups: [sre-oncall]}
"#;

async fn approved_with(s: &Setup, api: &str, dry_run: bool) -> ApprovedPlan {
    let mut rb: medic::runbook::Runbook = serde_norway::from_str(WEBHOOK_RUNBOOK).unwrap();
    assert_eq!(rb.problems(), Vec::<String>::new());
    rb.vars.insert("deploy_api".into(), format!("http://{api}"));
    rb.dry_run = dry_run;
    let ctx = json!({"service": "checkout", "incident": {"id": 1, "title": "t"}, "change": {"version": "v2.14.0"}, "vars": rb.vars});
    let plan = medic::plan::build(&rb, &ctx, 1).unwrap();
    approve(s, &plan, "console:alice").await
}

async fn approve(s: &Setup, plan: &medic::plan::ProposedPlan, requester: &str) -> ApprovedPlan {
    common::approve_as_bob(s.store.as_ref(), plan, requester, s.clock.now()).await
}

fn executor(s: &Setup, limits: Limits) -> Executor {
    Executor::new(s.store.clone(), s.recorded.clone(), s.clock.clone(), limits, "medic-test")
}

fn limits(s: &Setup) -> Limits {
    Limits { allowed_hosts: vec![s.api.clone()], ..Default::default() }
}

async fn kinds(s: &Setup) -> Vec<String> {
    s.store.audit_for_incident(1).await.unwrap().into_iter().map(|r| r.kind).collect()
}

async fn verified_success(db: Db) {
    let Some(s) = setup(db, "0.004x30").await else { return };
    let plan = approved(&s, &s.api).await;
    let out = executor(&s, limits(&s)).execute(plan.clone()).await.unwrap();
    assert_eq!(out, Outcome::Succeeded);
    assert_eq!(*s.calls.lock().unwrap(), ["rollback checkout"]);
    let k = kinds(&s).await;
    assert!(
        k.ends_with(&["plan_approved", "execution_started", "step_succeeded", "execution_finished"].map(String::from)),
        "{k:?}"
    );
    let records = s.store.audit_for_incident(1).await.unwrap();
    let step = records.iter().find(|r| r.kind == "step_succeeded").unwrap();
    assert!(step.data.contains("error_ratio = 0.004 (< 0.02)"), "{}", step.data);
    assert!(step.data.contains("[REDACTED]") && !step.data.contains("abcdefghijklmnop"), "{}", step.data);
    assert_eq!(executor(&s, limits(&s)).execute(plan).await.unwrap(), Outcome::AlreadyClaimed, "a plan runs once");
}

async fn failed_post_check_rolls_back(db: Db) {
    let Some(s) = setup(db, "0.2x30").await else { return };
    let plan = approved(&s, &s.api).await;
    let out = executor(&s, limits(&s)).execute(plan).await.unwrap();
    let Outcome::RolledBack { step, reason } = out else { panic!("{out:?}") };
    assert_eq!(step, "roll-back");
    assert!(reason.contains("post-check failed: error_ratio = 0.2, not < 0.02 within 2s"), "{reason}");
    assert_eq!(*s.calls.lock().unwrap(), ["rollback checkout", "rollout checkout"], "the rollback of the step ran");
    let k = kinds(&s).await;
    assert!(
        k.ends_with(&["execution_started", "step_failed", "step_rolled_back", "escalated"].map(String::from)),
        "{k:?}"
    );
}

async fn failed_rollback_is_a_failure(db: Db) {
    let Some(s) = setup(db, "0.2x30").await else { return };
    s.broken_rollout.store(true, std::sync::atomic::Ordering::SeqCst);
    let plan = approved(&s, &s.api).await;
    assert!(matches!(executor(&s, limits(&s)).execute(plan).await.unwrap(), Outcome::RolledBack { .. }));
    let records = s.store.audit_for_incident(1).await.unwrap();
    let rb = records.iter().find(|r| r.kind == "step_rolled_back").unwrap();
    assert!(rb.data.contains("\"result\":\"failed\"") && rb.data.contains("HTTP 500"), "{}", rb.data);
    let esc = records.iter().find(|r| r.kind == "escalated").unwrap();
    assert!(esc.data.contains("a rollback failed too"), "{}", esc.data);
    let raw = common::raw_pool(&s._db).await;
    let state: String = sqlx::query_scalar("SELECT state FROM executions").fetch_one(&raw).await.unwrap();
    assert_eq!(state, "failed");
    raw.close().await;
}

async fn allow_list_is_enforced(db: Db) {
    let Some(s) = setup(db, "0.004x30").await else { return };
    let plan = approved(&s, &s.api).await;
    let out = executor(&s, Limits { allowed_hosts: vec!["deploy-api.internal".into()], ..Default::default() })
        .execute(plan)
        .await
        .unwrap();
    let Outcome::RolledBack { reason, .. } = out else { panic!("{out:?}") };
    assert!(reason.contains("is not on the executor's allow-list of HTTP hosts"), "{reason}");
    assert!(s.calls.lock().unwrap().is_empty(), "nothing was called");
}

async fn crash_mid_plan_is_interrupted_not_rerun(db: Db) {
    let Some(s) = setup(db, "0.004x30").await else { return };
    let plan = approved(&s, &s.api).await;
    // A process claims the plan, runs its first step, and dies before finishing.
    assert!(s.store.claim_execution(&plan, "medic-test", s.clock.now()).await.unwrap());
    let entry = medic::audit::AuditEntry {
        at: s.clock.now(),
        kind: medic::audit::Kind::StepSucceeded,
        incident_id: Some(1),
        actor: "medic".into(),
        data: json!({"step": "roll-back"}),
    };
    let held = s.store.execution_event(&plan.plan().hash, "medic-test", 0, medic::store::ExecState::Running, entry, 5);
    assert!(held.await.unwrap());
    // The restarted process recovers: the plan is interrupted and escalated, never re-run.
    let ex = executor(&s, limits(&s));
    let recover = || medic::executor::recover(s.store.as_ref(), &ex.owner, true, ex.lease, s.clock.now());
    assert_eq!(recover().await.unwrap(), [(plan.plan().hash.clone(), 1)]);
    assert!(recover().await.unwrap().is_empty(), "recovery is idempotent");
    assert_eq!(ex.execute(plan).await.unwrap(), Outcome::AlreadyClaimed);
    assert!(s.calls.lock().unwrap().is_empty());
    let k = kinds(&s).await;
    assert!(
        k.ends_with(&["execution_started", "step_succeeded", "execution_interrupted", "escalated"].map(String::from)),
        "{k:?}"
    );
    // The interruption counts against the runbook: its streak restarts.
    let record = s.store.autonomy("rollback-by-webhook").await.unwrap();
    assert_eq!((record.failed, record.streak), (1, 0), "{record:?}");
}

async fn an_execution_whose_replica_is_gone_is_interrupted_by_another(db: Db) {
    let Some(s) = setup(db, "0.004x30").await else { return };
    let plan = approved(&s, &s.api).await;
    let hash = plan.plan().hash.clone();
    let lease = medic::executor::LEASE.as_millis() as Millis;
    // A replica named after its pod claims the plan and dies for good: its name never returns.
    let t0 = s.clock.now();
    assert!(s.store.claim_execution(&plan, "medic-7f9c-pod", t0).await.unwrap());
    let lease_d = medic::executor::LEASE;
    let sweep = |at: Millis| medic::executor::recover(s.store.as_ref(), "medic-other-pod", false, lease_d, at);
    assert!(sweep(t0 + lease - 1000).await.unwrap().is_empty(), "a live lease is left alone");
    // A heartbeat renews it.
    assert!(s.store.execution_heartbeat(&hash, "medic-7f9c-pod", t0 + lease - 1000, lease).await.unwrap());
    assert!(!s.store.execution_heartbeat(&hash, "medic-other-pod", t0 + lease, lease).await.unwrap(), "not its own");
    assert!(sweep(t0 + lease + 1000).await.unwrap().is_empty(), "a renewed lease is left alone");
    // Its own sweep never takes its own running plans (only its restart does).
    let own = medic::executor::recover(s.store.as_ref(), "medic-7f9c-pod", false, lease_d, t0 + 3 * lease);
    assert!(own.await.unwrap().is_empty());
    // Past the lease, another replica marks it interrupted and escalates, once.
    assert_eq!(sweep(t0 + 3 * lease).await.unwrap(), [(hash.clone(), 1)]);
    assert!(sweep(t0 + 4 * lease).await.unwrap().is_empty());
    let status = s.store.plan_status(1).await.unwrap().unwrap();
    assert_eq!(status.execution.map(|e| e.0).as_deref(), Some("interrupted"));
    let k = kinds(&s).await;
    assert!(k.ends_with(&["execution_interrupted", "escalated"].map(String::from)), "{k:?}");
    assert_eq!(executor(&s, limits(&s)).execute(plan).await.unwrap(), Outcome::AlreadyClaimed, "never re-run");
    assert!(s.calls.lock().unwrap().is_empty());
    // The replica comes back (SIGCONT): its lease is gone, whatever its clock says.
    assert!(!s.store.execution_heartbeat(&hash, "medic-7f9c-pod", t0 + 4 * lease, lease).await.unwrap());
}

/// A replica paused past its lease (SIGSTOP) while another marked its execution interrupted
/// and escalated it: resumed, it does not run the next step. It stops before it, says so in the
/// audit with its name, and the execution stays interrupted (chat never says "verified").
async fn a_replica_that_lost_its_lease_stops_before_the_next_step(db: Db) {
    let Some(s) = setup(db, "0.004x30").await else { return };
    let mut rb: medic::runbook::Runbook = serde_norway::from_str(&WEBHOOK_RUNBOOK.replace(
        "approval:",
        "    - id: roll-out\n      action: {http: {method: POST, url: \"{{vars.deploy_api}}/v1/services/{{service}}/rollout\"}}\n      \
         irreversible: a test step\napproval:",
    ))
    .unwrap();
    rb.vars.insert("deploy_api".into(), format!("http://{}", s.api));
    let ctx = json!({"service": "checkout", "incident": {"id": 1, "title": "t"}, "change": {"version": "v2"}, "vars": rb.vars});
    let plan = approve(&s, &medic::plan::build(&rb, &ctx, 1).unwrap(), "console:alice").await;
    let hash = plan.plan().hash.clone();
    let mut ex = executor(&s, limits(&s));
    // The pause, as the other replica sees it: after step 1, this replica's lease lapses and
    // the other marks the execution interrupted.
    let (store, clock, lease) = (s.store.clone(), s.clock.clone(), ex.lease);
    ex.on_progress = Some(Arc::new(move |entry| {
        let (store, clock) = (store.clone(), clock.clone());
        Box::pin(async move {
            if entry.kind == medic::audit::Kind::StepSucceeded {
                let later = clock.now() + 3 * lease.as_millis() as Millis;
                let swept = medic::executor::recover(store.as_ref(), "medic-other-pod", false, lease, later).await;
                assert_eq!(swept.unwrap().len(), 1, "the other replica interrupts it");
            }
        })
    }));
    let out = ex.execute(plan).await.unwrap();
    assert_eq!(out, Outcome::Fenced { step: "step 2 (roll-out)".into() });
    assert_eq!(*s.calls.lock().unwrap(), ["rollback checkout"], "step 2 never ran");
    let status = s.store.plan_status(1).await.unwrap().unwrap();
    assert_eq!(status.execution.map(|e| e.0).as_deref(), Some("interrupted"));
    let audit = s.store.audit_for_incident(1).await.unwrap();
    let k: Vec<&str> = audit.iter().map(|r| r.kind.as_str()).collect();
    assert!(k.ends_with(&["step_succeeded", "execution_interrupted", "escalated", "execution_fenced"]), "{k:?}");
    let fenced = audit.last().unwrap();
    assert!(
        fenced.data.contains("\"owner\":\"medic-test\"") && fenced.data.contains("\"fenced\":true"),
        "{}",
        fenced.data
    );
    assert!(fenced.data.contains("stopped before step 2 (roll-out)"), "{}", fenced.data);
    assert_eq!(s.store.autonomy("rollback-by-webhook").await.unwrap().verified, 0, "{hash}");
}

/// A plan approved on a replica that died before claiming it: past a lease, any replica marks
/// it interrupted and escalates it; it never runs late.
async fn an_approved_plan_nobody_started_is_interrupted(db: Db) {
    let Some(s) = setup(db, "0.004x30").await else { return };
    let plan = approved(&s, &s.api).await;
    let lease_d = medic::executor::LEASE;
    let t0 = s.clock.now();
    let sweep = |at: Millis| medic::executor::recover(s.store.as_ref(), "medic-other-pod", false, lease_d, at);
    assert!(sweep(t0 + 1000).await.unwrap().is_empty(), "its replica may still be starting it");
    assert_eq!(sweep(t0 + 2 * lease_d.as_millis() as Millis).await.unwrap(), [(plan.plan().hash.clone(), 1)]);
    let k = kinds(&s).await;
    assert!(k.ends_with(&["execution_interrupted", "escalated"].map(String::from)), "{k:?}");
    assert_eq!(executor(&s, limits(&s)).execute(plan).await.unwrap(), Outcome::AlreadyClaimed, "never run late");
    assert!(s.calls.lock().unwrap().is_empty());
}

async fn script_output_is_redacted(db: Db) {
    let Some(s) = setup(db, "0.004x30").await else { return };
    let scripts = tempfile::tempdir().unwrap();
    let script = scripts.path().join("cleanup-disk");
    std::fs::write(&script, "#!/bin/sh\necho \"cleaned $4; connecting with password=hunter2\"\n").unwrap();
    std::process::Command::new("chmod").args(["+x", script.to_str().unwrap()]).status().unwrap();
    let yaml = r#"
id: t
title: t
tier: 3
match: {alerts: ['alertname="HighErrorRate"']}
hypothesis: h
plan:
  steps:
    - id: clean
      action: {script: {argv: [cleanup-disk, --host, x, --path, "/var; rm -rf /"], timeout: 5s}}
      irreversible: test
approval: {groups: [sre-oncall]}
"#;
    let rb: medic::runbook::Runbook = serde_norway::from_str(yaml).unwrap();
    let plan = medic::plan::build(&rb, &json!({}), 1).unwrap();
    let approved = approve(&s, &plan, "medic").await;
    let lim = Limits { scripts_dir: Some(scripts.path().to_path_buf()), ..Default::default() };
    assert_eq!(executor(&s, lim).execute(approved).await.unwrap(), Outcome::Succeeded);
    let rec = s.store.audit_for_incident(1).await.unwrap().into_iter().find(|r| r.kind == "step_succeeded").unwrap();
    assert!(rec.data.contains("cleaned /var; rm -rf /"), "arguments reach the script verbatim, no shell: {}", rec.data);
    assert!(rec.data.contains("password=[REDACTED]") && !rec.data.contains("hunter2"), "{}", rec.data);
}

async fn dry_run_runbook_logs_only(db: Db) {
    let Some(s) = setup(db, "0.2x30").await else { return };
    let plan = approved_with(&s, &s.api, true).await;
    assert!(plan.plan().dry_run);
    assert_eq!(executor(&s, limits(&s)).execute(plan).await.unwrap(), Outcome::Succeeded);
    assert!(s.calls.lock().unwrap().is_empty(), "nothing was called");
    let rec = s.store.audit_for_incident(1).await.unwrap().into_iter().find(|r| r.kind == "step_succeeded").unwrap();
    assert!(
        rec.data.contains("dry run: would POST http://")
            && rec.data.contains("dry run: would check error_ratio < 0.02"),
        "{}",
        rec.data
    );
}

both_stores!(
    failed_rollback_is_a_failure,
    dry_run_runbook_logs_only,
    verified_success,
    failed_post_check_rolls_back,
    allow_list_is_enforced,
    crash_mid_plan_is_interrupted_not_rerun,
    an_execution_whose_replica_is_gone_is_interrupted_by_another,
    a_replica_that_lost_its_lease_stops_before_the_next_step,
    an_approved_plan_nobody_started_is_interrupted,
    script_output_is_redacted,
);
