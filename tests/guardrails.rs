//! Guardrails through the store, on both backends: the kill switch refuses approvals until
//! resumed (both audited), and the attempt budget counts executions per alert across incidents.

mod common;

use common::{Db, fresh_db};
use medic::alert::{Alert, AlertStatus, Labels, Source};
use medic::approval::{Click, Decision, Groups, Identity, Verdict};
use medic::guardrails::GuardrailConfig;
use medic::incident::Policy;
use medic::store::{self, Store};
use serde_json::json;
use std::sync::Arc;

const T0: i64 = 1_800_000_000_000;
const MIN: i64 = 60_000;

fn alert(status: AlertStatus, starts: i64) -> Alert {
    let labels: Labels =
        [("alertname".to_string(), "HighErrorRate".to_string()), ("service".to_string(), "checkout".to_string())]
            .into();
    Alert {
        source: Source::Alertmanager,
        fingerprint: "f1".into(),
        status,
        labels,
        annotations: Labels::new(),
        starts_at: starts,
        ends_at: (status == AlertStatus::Resolved).then_some(starts + 1),
        links: Labels::new(),
    }
}

fn plan(incident: i64, version: &str) -> medic::plan::ProposedPlan {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("runbooks");
    let rb = medic::runbook::load_dir(&dir).unwrap().into_iter().find(|r| r.id == "rollback-bad-deploy").unwrap();
    // Plans of different versions differ (here, by the namespace they act in).
    let namespace = format!("shop-{}", version.replace(|c: char| !c.is_ascii_alphanumeric(), "-"));
    let ctx = json!({"service": "checkout", "labels": {"namespace": namespace}, "incident": {"id": incident, "title": "t"}, "vars": rb.vars});
    medic::plan::build(&rb, &ctx, incident).unwrap()
}

fn groups() -> Groups {
    Groups {
        members: [("sre-oncall".to_string(), vec![Identity("console:bob".into())])].into(),
        default_approvers: vec![],
    }
}

/// The refusal the guardrails give now, as the demo computes it.
async fn guardrail(s: &dyn Store, incident: i64, now: i64) -> Option<String> {
    store::guardrails_now(s, &GuardrailConfig::default(), incident, Some("checkout"), &[], None, now)
        .await
        .unwrap()
        .refusal()
}

async fn pause_blocks_until_resumed(db: Db) {
    let Some(db) = fresh_db(db).await else { return };
    let s = store::open(&db.url, 4).await.unwrap();
    s.ingest(&[alert(AlertStatus::Firing, T0)], &[], T0, &Policy::default()).await.unwrap();
    let p = plan(1, "v1");
    s.propose(&p, &Identity("medic".into()), T0).await.unwrap();
    let carol = Identity("console:carol".into());
    s.set_paused(&carol, "cli", true, T0 + 1).await.unwrap();
    s.set_paused(&carol, "cli", true, T0 + 2).await.unwrap(); // idempotent
    let click = Click {
        who: Identity("console:bob".into()),
        decision: Decision::Approve,
        via: "console".into(),
        at: T0 + 3,
        reason: None,
    };
    let (v, a) = s.decide(&p.hash, &click, &groups(), guardrail(&*s, 1, T0 + 3).await).await.unwrap();
    match v {
        Verdict::Refused { reason } => {
            assert!(reason.starts_with("not now: automation is paused by console:carol since"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert!(a.is_none());
    s.set_paused(&carol, "cli", false, T0 + 4).await.unwrap();
    let (v, a) = s.decide(&p.hash, &click, &groups(), guardrail(&*s, 1, T0 + 5).await).await.unwrap();
    assert!(matches!(v, Verdict::Approved { .. }) && a.is_some(), "{v:?}");
    let kinds: Vec<String> = s.audit_page(0, 100).await.unwrap().into_iter().map(|r| r.kind).collect();
    assert_eq!(kinds.iter().filter(|k| *k == "automation_paused").count(), 1);
    assert_eq!(kinds.iter().filter(|k| *k == "automation_resumed").count(), 1);
    s.close().await;
}

async fn attempt_budget_counts_per_alert_across_incidents(db: Db) {
    let Some(db) = fresh_db(db).await else { return };
    let s: Arc<dyn Store> = store::open(&db.url, 4).await.unwrap();
    let p = Policy::default();
    let g = groups();
    // The same alert fires, gets a plan executed, resolves — three times, three incidents.
    for (i, version) in ["v1", "v2", "v3"].into_iter().enumerate() {
        let t = T0 + i as i64 * 10 * MIN;
        let r = s.ingest(&[alert(AlertStatus::Firing, t)], &[], t, &p).await.unwrap();
        let incident = r.incidents[0].unwrap();
        assert_eq!(guardrail(&*s, incident, t).await, None, "attempt {} is within budget", i + 1);
        let plan = plan(incident, version);
        s.propose(&plan, &Identity("medic".into()), t).await.unwrap();
        let click = Click {
            who: Identity("console:bob".into()),
            decision: Decision::Approve,
            via: "console".into(),
            at: t + 1,
            reason: None,
        };
        let approved = s.decide(&plan.hash, &click, &g, None).await.unwrap().1.unwrap();
        assert!(s.claim_execution(&approved, "medic-test", t + 2).await.unwrap());
        s.ingest(&[alert(AlertStatus::Resolved, t)], &[], t + 3 * MIN, &p).await.unwrap();
        s.tick(t + 9 * MIN, &p).await.unwrap();
    }
    let t = T0 + 35 * MIN;
    let r = s.ingest(&[alert(AlertStatus::Firing, t)], &[], t, &p).await.unwrap();
    let incident = r.incidents[0].unwrap();
    assert_eq!(incident, 4, "a fourth incident");
    let refusal = guardrail(&*s, incident, t).await.expect("the budget is spent");
    assert!(refusal.contains("attempt budget is spent: 3 execution(s) for these alerts in the last 1h"), "{refusal}");
    assert_eq!(guardrail(&*s, incident, T0 + 75 * MIN).await, None, "an hour later the budget is back");
    s.close().await;
}

both_stores!(pause_blocks_until_resumed, attempt_budget_counts_per_alert_across_incidents);
