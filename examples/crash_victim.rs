//! Test helper for `tests/crash.rs` (not a tool): runs a two-step plan whose second step waits
//! two minutes, so the test can kill this process between steps.
//!
//! `crash_victim DATABASE_URL OWNER`

use medic::approval::{Click, Decision, Groups, Identity};
use medic::context::{MetricQuery, Metrics, Series};
use medic::executor::{Executor, Limits};
use medic::time::{Clock, SystemClock};
use std::sync::Arc;

struct NoMetrics;

#[async_trait::async_trait]
impl Metrics for NoMetrics {
    fn name(&self) -> &str {
        "none"
    }
    async fn query_range(&self, _: &MetricQuery) -> Result<Vec<Series>, String> {
        Ok(Vec::new())
    }
}

const RUNBOOK: &str = r#"
id: crash-victim
title: A plan that takes a while
tier: 1
match: {alerts: ['alertname="Slow"']}
hypothesis: slow
plan:
  steps:
    - {id: prepare, action: {wait: 1s}}
    - {id: long-wait, action: {wait: 120s}}
approval: {groups: [sre-oncall]}
"#;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (url, owner) = (args.next().expect("DATABASE_URL"), args.next().expect("OWNER"));
    let store = medic::store::open(&url, 4).await?;
    let now = SystemClock.now();
    let labels = [("alertname".to_string(), "Slow".to_string())].into();
    let alert = medic::alert::Alert {
        source: medic::alert::Source::Generic,
        fingerprint: "slow".into(),
        status: medic::alert::AlertStatus::Firing,
        labels,
        annotations: Default::default(),
        starts_at: now,
        ends_at: None,
        links: Default::default(),
    };
    let incident = store.ingest(&[alert], &[], now, &Default::default()).await?.incidents[0].expect("an incident");
    let rb: medic::runbook::Runbook = serde_norway::from_str(RUNBOOK)?;
    let plan = medic::plan::build(&rb, &serde_json::json!({}), incident).map_err(anyhow::Error::msg)?;
    store.propose(&plan, &Identity("medic".into()), now).await?;
    let who = Identity("console:tester".into());
    let groups = Groups { members: [("sre-oncall".to_string(), vec![who.clone()])].into(), default_approvers: vec![] };
    let click = Click { who, decision: Decision::Approve, via: "console".into(), at: now, reason: None };
    let approved = store.decide(&plan.hash, &click, &groups, None).await?.1.expect("approved");
    let executor = Executor::new(store, Arc::new(NoMetrics), Arc::new(SystemClock), Limits::default(), owner);
    executor.execute(approved).await?;
    Ok(())
}
