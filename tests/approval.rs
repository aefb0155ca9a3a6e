//! Approval through the store, on both backends: refusals change nothing, a newer plan
//! supersedes the old one, distinct approvers are counted, and 50 concurrent approve requests
//! spread over two replicas complete the approval exactly once.

mod common;

use common::{Db, fresh_db};
use medic::alert::{Alert, AlertStatus, Labels, Source};
use medic::approval::{Click, Decision, Groups, Identity, PlanState, Verdict};
use medic::audit::Verifier;
use medic::incident::Policy;
use medic::plan::ProposedPlan;
use medic::store::{self, Store};
use serde_json::json;
use std::sync::Arc;

const T0: i64 = 1_800_000_000_000;

fn who(n: &str) -> Identity {
    Identity(format!("console:{n}"))
}

fn groups() -> Groups {
    Groups {
        members: [("sre-oncall".to_string(), ["alice", "bob", "carol", "dave"].map(who).to_vec())].into(),
        default_approvers: Vec::new(),
    }
}

fn click(n: &str, decision: Decision, at: i64) -> Click {
    Click { who: who(n), decision, via: "console".into(), at, reason: None }
}

fn plan(version: &str, min_approvers: u32) -> ProposedPlan {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("runbooks");
    let mut rb = medic::runbook::load_dir(&dir).unwrap().into_iter().find(|r| r.id == "rollback-bad-deploy").unwrap();
    rb.approval.min_approvers = min_approvers;
    // Plans of different versions differ (here, by the namespace they act in).
    let namespace = format!("shop-{}", version.replace(|c: char| !c.is_ascii_alphanumeric(), "-"));
    let ctx = json!({"service": "checkout", "labels": {"namespace": namespace}, "incident": {"id": 1, "title": "t"}, "vars": rb.vars});
    medic::plan::build(&rb, &ctx, 1).unwrap()
}

async fn setup(db: Db) -> Option<(common::TestDb, Arc<dyn Store>)> {
    let db = fresh_db(db).await?;
    let s = store::open(&db.url, 8).await.unwrap();
    let labels: Labels =
        [("alertname".to_string(), "HighErrorRate".to_string()), ("service".to_string(), "checkout".to_string())]
            .into();
    let alert = Alert {
        source: Source::Alertmanager,
        fingerprint: "f1".into(),
        status: AlertStatus::Firing,
        labels,
        annotations: Labels::new(),
        starts_at: T0,
        ends_at: None,
        links: Labels::new(),
    };
    s.ingest(&[alert], &[], T0, &Policy::default()).await.unwrap();
    Some((db, s))
}

fn refusal(v: &Verdict) -> &str {
    match v {
        Verdict::Refused { reason } => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn refusals_supersession_and_counting(db: Db) {
    let Some((_db, s)) = setup(db).await else { return };
    let g = groups();
    let first = plan("v2.14.0", 2);
    s.propose(&first, &who("alice"), T0).await.unwrap();
    s.propose(&first, &who("alice"), T0 + 1).await.unwrap(); // idempotent
    let audit_before = s.audit_page(0, 1000).await.unwrap().len();

    let (v, a) = s.decide(&first.hash, &click("mallory", Decision::Approve, T0 + 10), &g, None).await.unwrap();
    assert!(refusal(&v).contains("you are not in sre-oncall") && a.is_none());
    let (v, _) = s.decide(&first.hash, &click("alice", Decision::Approve, T0 + 10), &g, None).await.unwrap();
    assert!(refusal(&v).contains("you asked for plan"));
    let (v, _) = s
        .decide(&first.hash, &click("bob", Decision::Approve, T0 + 10), &g, Some("automation is paused".into()))
        .await
        .unwrap();
    assert_eq!(refusal(&v), "not now: automation is paused");
    let (v, _) = s.decide(&first.hash, &click("bob", Decision::Approve, T0 + 31 * 60_000), &g, None).await.unwrap();
    assert!(refusal(&v).contains("expired at"));
    let (v, _) = s.decide("0123456789abcdef", &click("bob", Decision::Approve, T0), &g, None).await.unwrap();
    assert_eq!(refusal(&v), "there is no plan 0123456789ab");
    assert_eq!(s.audit_page(0, 1000).await.unwrap().len(), audit_before, "refusals change nothing");

    // Two approvers needed: the same person twice counts once.
    let (v, a) = s.decide(&first.hash, &click("bob", Decision::Approve, T0 + 20), &g, None).await.unwrap();
    assert_eq!((v, a.is_none()), (Verdict::Recorded { approvals: 1, needed: 2 }, true));
    let (v, _) = s.decide(&first.hash, &click("bob", Decision::Approve, T0 + 21), &g, None).await.unwrap();
    assert_eq!(v, Verdict::AlreadyCounted { state: PlanState::Proposed });

    // A new plan for the incident supersedes the first: approving the old one is refused.
    let second = plan("v2.14.1", 2);
    s.propose(&second, &who("alice"), T0 + 30).await.unwrap();
    assert_eq!(s.plan(&first.hash).await.unwrap().unwrap().state, PlanState::Superseded);
    let (v, _) = s.decide(&first.hash, &click("carol", Decision::Approve, T0 + 40), &g, None).await.unwrap();
    assert!(refusal(&v).contains("already superseded"), "{v:?}");

    let (v, _) = s.decide(&second.hash, &click("bob", Decision::Approve, T0 + 50), &g, None).await.unwrap();
    assert_eq!(v, Verdict::Recorded { approvals: 1, needed: 2 });
    let (v, approved) = s.decide(&second.hash, &click("carol", Decision::Approve, T0 + 60), &g, None).await.unwrap();
    assert_eq!(v, Verdict::Approved { approvers: vec![who("bob"), who("carol")] });
    let approved = approved.expect("the completing click gets the approved plan");
    assert_eq!(approved.plan().hash, second.hash);
    assert_eq!(s.plan(&second.hash).await.unwrap().unwrap().state, PlanState::Approved);
    let (v, _) = s.decide(&second.hash, &click("dave", Decision::Reject, T0 + 70), &g, None).await.unwrap();
    assert!(refusal(&v).contains("already approved"));

    let kinds: Vec<String> = s.audit_for_incident(1).await.unwrap().into_iter().map(|r| r.kind).collect();
    let tail: Vec<&str> =
        kinds.iter().map(String::as_str).filter(|k| k.starts_with("plan_") || k.starts_with("approval_")).collect();
    assert_eq!(
        tail,
        [
            "plan_proposed",
            "approval_recorded",
            "plan_superseded",
            "plan_proposed",
            "approval_recorded",
            "approval_recorded",
            "plan_approved"
        ]
    );
    s.close().await;
}

async fn rejection(db: Db) {
    let Some((_db, s)) = setup(db).await else { return };
    let p = plan("v2.14.0", 1);
    s.propose(&p, &who("alice"), T0).await.unwrap();
    let (v, a) = s.decide(&p.hash, &click("bob", Decision::Reject, T0 + 1), &groups(), None).await.unwrap();
    assert_eq!((v, a.is_none()), (Verdict::Rejected, true));
    let (v, _) = s.decide(&p.hash, &click("carol", Decision::Approve, T0 + 2), &groups(), None).await.unwrap();
    assert!(refusal(&v).contains("already rejected"));
    s.close().await;
}

async fn fifty_concurrent_approvals_approve_once(db: Db) {
    let Some((db, a)) = setup(db).await else { return };
    let b = store::open(&db.url, 8).await.unwrap(); // a second replica
    let p = plan("v2.14.0", 1);
    a.propose(&p, &who("alice"), T0).await.unwrap();
    let g = Arc::new(groups());
    let mut tasks = Vec::new();
    for i in 0..50 {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        let (g, hash) = (g.clone(), p.hash.clone());
        let name = ["bob", "carol", "dave"][i % 3];
        tasks.push(tokio::spawn(async move {
            s.decide(&hash, &click(name, Decision::Approve, T0 + 1 + i as i64), &g, None).await.unwrap()
        }));
    }
    let mut executions = 0;
    let mut approved = 0;
    for t in tasks {
        let (v, plan) = t.await.unwrap();
        executions += plan.is_some() as usize;
        match v {
            Verdict::Approved { .. } => approved += 1,
            Verdict::AlreadyCounted { state: PlanState::Approved } => {}
            other => panic!("unexpected verdict {other:?}"),
        }
    }
    assert_eq!((approved, executions), (1, 1), "exactly one click completes the approval and gets the plan to execute");
    let records = a.audit_page(0, 10_000).await.unwrap();
    assert_eq!(records.iter().filter(|r| r.kind == "plan_approved").count(), 1);
    let mut v = Verifier::default();
    records.iter().for_each(|r| v.check(r).unwrap());
    a.close().await;
    b.close().await;
}

both_stores!(refusals_supersession_and_counting, rejection, fifty_concurrent_approvals_approve_once);
