//! Earned autonomy (§2.10), on both stores, through the responder, the store, the auto
//! runner and the executor that `serve` uses: five verified runs under approval grant `auto`;
//! the sixth incident runs without a click after the delay; a failed post-check rolls back and
//! takes `auto` away, so the next incident needs approval; Stop halts a running plan and rolls
//! back; production needs a runbook listed for it; a paused medic runs nothing by itself; the
//! grant and the loss are in the audit chain, which verifies.

mod common;

use async_trait::async_trait;
use common::{Db, fresh_db};
use medic::alert::{Alert, AlertStatus, Labels, Source};
use medic::approval::{Decision, Groups, Identity};
use medic::autonomy::{Config, Environment};
use medic::chat::clicks::Clicks;
use medic::context::{MetricQuery, Metrics, Series};
use medic::scenario::recorded::Recorded;
use medic::store::{self, Store};
use medic::time::{Clock, Millis};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const RUNBOOK: &str = r#"
id: restart-by-webhook
title: Restart through a deploy webhook
tier: 2
autonomy: auto
match: {alerts: ['alertname="HighErrorRate"']}
context: [{name: error_ratio, promql: 'sum(rate(errors{service="{{service}}"}[5m]))', unit: ratio}]
hypothesis: "{{service}} is stuck; a restart clears it"
vars: {api: http://unset}
plan:
  steps:
    - id: restart
      action: {http: {method: POST, url: "{{vars.api}}/restart/{{service}}"}}
      rollback: {http: {method: POST, url: "{{vars.api}}/undo/{{service}}"}}
      post_check: {query: error_ratio, condition: "< 0.02", within: 2s, every: 1s}
    - id: drain
      action: {http: {method: POST, url: "{{vars.api}}/drain/{{service}}"}}
      rollback: {http: {method: POST, url: "{{vars.api}}/undrain/{{service}}"}}
approval: {groups: [sre-oncall]}
"#;

/// Scenario time, advancing with real time.
struct ScenarioClock(Millis, Instant);

impl Clock for ScenarioClock {
    fn now(&self) -> Millis {
        self.0 + self.1.elapsed().as_millis() as Millis
    }
}

/// The error ratio the post-checks read: healthy unless a test breaks it.
struct Gauge(AtomicU64);

#[async_trait]
impl Metrics for Gauge {
    fn name(&self) -> &str {
        "gauge"
    }
    async fn query_range(&self, q: &MetricQuery) -> Result<Vec<Series>, String> {
        let v = f64::from_bits(self.0.load(Ordering::SeqCst));
        Ok(vec![Series { query: q.name.clone(), labels: Labels::new(), points: vec![(q.end, v)] }])
    }
}

struct Setup {
    _db: common::TestDb,
    store: Arc<dyn Store>,
    clock: Arc<ScenarioClock>,
    responder: medic::responder::Responder,
    clicks: Arc<Clicks>,
    gauge: Arc<Gauge>,
    calls: Arc<Mutex<Vec<String>>>,
    /// While set, the restart webhook waits before it answers (time to click Stop).
    hold: Arc<AtomicBool>,
    n: std::sync::atomic::AtomicI64,
}

async fn webhook(calls: Arc<Mutex<Vec<String>>>, hold: Arc<AtomicBool>) -> String {
    let app = axum::Router::new().route(
        "/{op}/{service}",
        axum::routing::post(move |axum::extract::Path((op, service)): axum::extract::Path<(String, String)>| {
            let (calls, hold) = (calls.clone(), hold.clone());
            async move {
                calls.lock().unwrap().push(format!("{op} {service}"));
                while op == "restart" && hold.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                axum::Json(serde_json::json!({"ok": true}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr.to_string()
}

fn world() -> medic::scenario::World {
    let yaml = "name: t\nnow: 2026-11-21T15:00:00Z\nalerts:\n  - labels: {alertname: HighErrorRate, service: checkout}\n    starts: -15m\n\
         series:\n  - {query: error_ratio, labels: {service: checkout}, start: -60m, values: '0.004x35 0.004+0.006x24'}\n";
    serde_norway::from_str::<medic::scenario::Scenario>(yaml).unwrap().world().unwrap()
}

fn policy() -> Config {
    let mut c = Config { delay: Duration::from_secs(1), ..Config::default() };
    c.environments.insert("staging".into(), Environment { runbooks: None });
    c.environments.insert("production".into(), Environment { runbooks: Some(vec!["some-other-runbook".into()]) });
    c
}

async fn setup(db: Db) -> Option<Setup> {
    let db = fresh_db(db).await?;
    let store = store::open(&db.url, 8).await.unwrap();
    let w = world();
    let clock = Arc::new(ScenarioClock(w.now, Instant::now()));
    let (calls, hold) = (Arc::new(Mutex::new(Vec::new())), Arc::new(AtomicBool::new(false)));
    let api = webhook(calls.clone(), hold.clone()).await;
    let mut rb: medic::runbook::Runbook = serde_norway::from_str(RUNBOOK).unwrap();
    assert_eq!(rb.problems(), Vec::<String>::new());
    rb.vars.insert("api".into(), format!("http://{api}"));
    let runbooks = vec![rb];
    let recorded = Arc::new(Recorded::new(w));
    let limits = medic::executor::Limits { allowed_hosts: vec![api], ..Default::default() };
    let gauge = Arc::new(Gauge(AtomicU64::new(0.004f64.to_bits())));
    let notifier = Arc::new(medic::chat::Notifier {
        store: store.clone(),
        platforms: Vec::new(),
        clock: clock.clone(),
        tickets: false,
    });
    let executor = medic::executor::Executor::new(store.clone(), gauge.clone(), clock.clone(), limits.clone(), "t");
    let clicks = Arc::new(Clicks {
        store: store.clone(),
        notifier: notifier.clone(),
        executor: Arc::new(executor),
        runbooks: runbooks.clone(),
        guardrails: Default::default(),
        clock: clock.clone(),
    });
    let responder = medic::responder::Responder {
        store: store.clone(),
        sources: medic::context::Sources::all(recorded, Duration::from_secs(5)),
        runbooks,
        golden: Vec::new(),
        clock: clock.clone(),
        metrics: Default::default(),
        cache: medic::context::Cache::new(Duration::ZERO),
        window: Default::default(),
        notifier: Some(notifier),
        limits,
        autonomy: policy(),
        guardrails: Default::default(),
        digests: Default::default(),
    };
    Some(Setup { _db: db, store, clock, responder, clicks, gauge, calls, hold, n: Default::default() })
}

fn groups() -> Groups {
    Groups {
        members: [("sre-oncall".to_string(), vec![Identity("console:bob".into())])].into(),
        default_approvers: vec![],
    }
}

impl Setup {
    /// A new incident in `env`, diagnosed: its id and current plan.
    async fn incident(&self, env: &str) -> (i64, medic::plan::ProposedPlan) {
        let n = self.n.fetch_add(1, Ordering::SeqCst);
        let labels: Labels = [("alertname", "HighErrorRate"), ("service", "checkout"), ("env", env)]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into();
        let now = self.clock.now();
        let alert = Alert {
            source: Source::Alertmanager,
            fingerprint: format!("f{n}"),
            status: AlertStatus::Firing,
            labels,
            annotations: Labels::new(),
            starts_at: now,
            ends_at: None,
            links: Labels::new(),
        };
        let r = self.store.ingest(&[alert], &[], now, &Default::default()).await.unwrap();
        let id = r.incidents[0].unwrap();
        self.responder.investigate(id).await.unwrap();
        let plan = self.store.plan_status(id).await.unwrap().expect("a plan").plan.plan;
        (id, plan)
    }

    async fn approve(&self, id: i64, hash: &str) {
        let who = Identity("console:bob".into());
        let r = self.clicks.decide(id, hash, who, Decision::Approve, "test", None, &groups()).await.unwrap();
        assert_eq!(r, None, "approved");
    }

    /// Waits for the incident's execution to end; its state.
    async fn outcome(&self, id: i64) -> String {
        common::eventually(20, "the execution to end", || async {
            let st = self.store.plan_status(id).await.unwrap()?;
            st.execution.map(|(s, _)| s).filter(|s| s != "running")
        })
        .await
    }

    async fn resolve(&self, id: i64) {
        let by = Identity("console:carol".into());
        self.store.resolve_by_hand(id, true, &by, "test", self.clock.now()).await.unwrap().unwrap();
    }

    /// Runs the auto runner until the plan of `id` starts (or `secs` pass): whether it did.
    async fn runs_by_itself(&self, id: i64, secs: u64) -> bool {
        common::poll_until(secs, || async {
            self.clicks.run_due().await.unwrap();
            self.store.plan_status(id).await.unwrap().and_then(|s| s.execution)
        })
        .await
        .is_some()
    }

    async fn kinds(&self) -> Vec<String> {
        self.store.audit_page(0, 100_000).await.unwrap().into_iter().map(|r| r.kind).collect()
    }

    async fn chain_verifies(&self) {
        let mut v = medic::audit::Verifier::default();
        for r in self.store.audit_page(0, 1_000_000).await.unwrap() {
            v.check(&r).expect("the audit chain verifies");
        }
    }
}

async fn earned_then_lost(db: Db) {
    let Some(s) = setup(db).await else { return };
    for i in 0..5 {
        let (id, plan) = s.incident("staging").await;
        let auto = plan.auto.clone().expect("an auto ceiling is always explained");
        assert!(!auto.runs_itself, "run {i}: {auto:?}");
        assert_eq!(auto.why, format!("needs approval: {i} of 5 verified runs under approval in a row"));
        assert!(!s.runs_by_itself(id, 2).await, "run {i} needs a click");
        s.approve(id, &plan.hash).await;
        assert_eq!(s.outcome(id).await, "succeeded");
        s.resolve(id).await;
    }
    let record = s.store.autonomy("restart-by-webhook").await.unwrap();
    assert!(record.auto && record.streak == 5 && record.verified == 5, "{record:?}");
    assert_eq!(s.kinds().await.iter().filter(|k| *k == "autonomy_granted").count(), 1);

    // The sixth runs by itself after the delay, with no click.
    let (id, plan) = s.incident("staging").await;
    let auto = plan.auto.clone().unwrap();
    assert!(auto.runs_itself, "{auto:?}");
    assert!(
        auto.why
            .starts_with("running automatically: 5 verified runs under approval in a row (last: #5 by console:bob)"),
        "{}",
        auto.why
    );
    s.clicks.run_due().await.unwrap();
    assert!(s.store.plan_status(id).await.unwrap().unwrap().execution.is_none(), "nothing runs before the delay");
    assert!(s.runs_by_itself(id, 10).await);
    assert_eq!(s.outcome(id).await, "succeeded");
    let st = s.store.plan_status(id).await.unwrap().unwrap();
    assert_eq!(st.approvers, [Identity("medic:auto".into())], "no person clicked");
    s.resolve(id).await;

    // The seventh runs by itself, its post-check fails: rolled back, and `auto` is lost.
    s.gauge.0.store(0.3f64.to_bits(), Ordering::SeqCst);
    let (id, plan) = s.incident("staging").await;
    assert!(plan.auto.unwrap().runs_itself);
    assert!(s.runs_by_itself(id, 10).await);
    assert_eq!(s.outcome(id).await, "rolled_back");
    let record = s.store.autonomy("restart-by-webhook").await.unwrap();
    assert!(!record.auto && record.streak == 0 && record.failed == 1, "{record:?}");
    assert!(record.reason.as_deref().unwrap().contains("post-check failed"), "{record:?}");
    s.resolve(id).await;

    // The eighth needs approval again.
    s.gauge.0.store(0.004f64.to_bits(), Ordering::SeqCst);
    let (id, plan) = s.incident("staging").await;
    assert_eq!(plan.auto.unwrap().why, "needs approval: 0 of 5 verified runs under approval in a row");
    assert!(!s.runs_by_itself(id, 2).await);
    let kinds = s.kinds().await;
    let granted = kinds.iter().position(|k| k == "autonomy_granted").unwrap();
    let lost = kinds.iter().position(|k| k == "autonomy_lost").unwrap();
    assert!(granted < lost);
    s.chain_verifies().await;
    let stats = s.store.runbook_stats(true).await.unwrap();
    let r = stats.iter().find(|r| r.record.runbook == "restart-by-webhook").unwrap();
    assert_eq!(r.last_outcomes.first().map(String::as_str), Some("rolled_back"));
    assert!(r.median_fix_secs.is_some_and(|m| m >= 0.0), "{r:?}");
}

async fn grant(s: &Setup) {
    let rb = medic::store::RunbookRef { id: "restart-by-webhook", autonomy: medic::runbook::Autonomy::Auto, tier: 2 };
    let by = Identity("console:carol".into());
    let said = s.store.set_autonomy(&rb, true, &by, "cli", s.clock.now()).await.unwrap();
    assert_eq!(said, Ok("restart-by-webhook is now at `auto`".into()));
}

async fn stop_halts_and_rolls_back(db: Db) {
    let Some(s) = setup(db).await else { return };
    grant(&s).await;
    let (id, plan) = s.incident("staging").await;
    assert_eq!(plan.auto.as_ref().unwrap().why, "running automatically: granted by console:carol");
    s.hold.store(true, Ordering::SeqCst);
    assert!(s.runs_by_itself(id, 10).await);
    common::eventually(10, "the restart call", || async {
        s.calls.lock().unwrap().contains(&"restart checkout".to_string()).then_some(())
    })
    .await;
    let bob = Identity("console:bob".into());
    let mallory = Identity("console:mallory".into());
    let r = s.clicks.decide(id, &plan.hash, mallory, Decision::Stop, "test", None, &groups()).await.unwrap();
    assert!(r.unwrap().contains("you are not in sre-oncall"), "only the plan's groups may stop it");
    assert_eq!(s.clicks.decide(id, &plan.hash, bob, Decision::Stop, "test", None, &groups()).await.unwrap(), None);
    s.hold.store(false, Ordering::SeqCst);
    assert_eq!(s.outcome(id).await, "rolled_back");
    assert_eq!(*s.calls.lock().unwrap(), ["restart checkout", "undo checkout"], "drain never ran");
    let record = s.store.autonomy("restart-by-webhook").await.unwrap();
    assert!(!record.auto, "{record:?}");
    let kinds = s.kinds().await;
    assert!(kinds.contains(&"stop_requested".to_string()) && kinds.contains(&"autonomy_lost".to_string()), "{kinds:?}");
    let records = s.store.audit_for_incident(id).await.unwrap();
    let esc = records.iter().rev().find(|r| r.kind == "escalated").unwrap();
    assert!(esc.data.contains("stopped by console:bob before step 2 of 2"), "{}", esc.data);
    s.chain_verifies().await;
}

async fn production_and_pause_need_a_person(db: Db) {
    let Some(s) = setup(db).await else { return };
    grant(&s).await;
    // Production lists another runbook only.
    let (id, plan) = s.incident("production").await;
    let auto = plan.auto.unwrap();
    assert!(!auto.runs_itself);
    assert_eq!(auto.why, "needs approval: in env=production only some-other-runbook may run automatically");
    assert!(!s.runs_by_itself(id, 2).await);
    s.resolve(id).await;
    // Paused before the plan is proposed: it needs approval.
    let carol = Identity("console:carol".into());
    s.store.set_paused(&carol, "test", true, s.clock.now()).await.unwrap();
    let (id, plan) = s.incident("staging").await;
    let auto = plan.auto.unwrap();
    assert!(!auto.runs_itself && auto.why.contains("paused"), "{auto:?}");
    s.resolve(id).await;
    // Paused during the delay: the runner declines it, and nothing runs.
    s.store.set_paused(&carol, "test", false, s.clock.now()).await.unwrap();
    let (id, plan) = s.incident("staging").await;
    assert!(plan.auto.unwrap().runs_itself);
    let view = medic::chat::view_for(s.store.as_ref(), id).await.unwrap().unwrap().0;
    assert_eq!((view["stop"].as_bool(), view["auto"]["runs_itself"].as_bool()), (Some(true), Some(true)), "{view:#}");
    assert!(view["auto"]["runs_at"].is_string(), "the message says when it starts");
    s.store.set_paused(&carol, "test", true, s.clock.now()).await.unwrap();
    assert!(!s.runs_by_itself(id, 3).await);
    let view = medic::chat::view_for(s.store.as_ref(), id).await.unwrap().unwrap().0;
    assert_eq!(view["stop"], false, "declined: nothing to stop");
    assert!(view["auto"]["why"].as_str().unwrap().contains("needs approval"), "{view:#}");
    assert!(view["auto"]["runs_at"].is_null());
    let records = s.store.audit_for_incident(id).await.unwrap();
    let declined = records.iter().find(|r| r.kind == "auto_run_declined").expect("declined");
    assert!(declined.data.contains("paused"), "{}", declined.data);
    assert!(s.calls.lock().unwrap().is_empty(), "nothing ran");
    // Reject during the delay also prevents it, and takes `auto` away.
    s.store.set_paused(&carol, "test", false, s.clock.now()).await.unwrap();
    s.resolve(id).await;
    let (id, plan) = s.incident("staging").await;
    assert!(plan.auto.unwrap().runs_itself);
    let bob = Identity("console:bob".into());
    let why = Some("not now".to_string());
    assert_eq!(s.clicks.decide(id, &plan.hash, bob, Decision::Reject, "test", why, &groups()).await.unwrap(), None);
    assert!(!s.runs_by_itself(id, 3).await);
    assert!(!s.store.autonomy("restart-by-webhook").await.unwrap().auto);
    // Shadow record: three incidents people closed by hand, whose plan never ran.
    let stats = s.store.runbook_stats(true).await.unwrap();
    let r = stats.iter().find(|r| r.record.runbook == "restart-by-webhook").unwrap();
    assert_eq!((r.shadow_incidents, r.shadow_resolved_alone), (3, 0), "{r:?}");
    s.chain_verifies().await;
}

both_stores!(earned_then_lost, stop_halts_and_rolls_back, production_and_pause_need_a_person);
