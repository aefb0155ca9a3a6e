//! End to end with the real thing: Prometheus scrapes a fault gauge served by this test, a rule
//! fires, Alertmanager delivers its webhook (with a bearer token) to a medic started here; the
//! alert becomes an incident. Clearing the fault resolves the alert, and the incident resolves.
//!
//! Needs `prometheus` and `prometheus-alertmanager` (Debian packages) on PATH: under `CI=true`
//! their absence fails the test, elsewhere it is skipped with the reason.

mod common;

use common::stack::{self, Target};
use common::{Db, TestApp, poll_until};
use medic::config::Config;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_alertmanager_medic() {
    if let Some(why) = stack::missing(&["prometheus", "prometheus-alertmanager"]) {
        common::unavailable(&why);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("token"), "e2e-token\n").unwrap();
    let cfg = Config::parse(
        &format!(
            "incidents: {{resolve_grace: 1s}}\nintake:\n  alertmanager:\n    auth: {{bearer: [{{file: {}}}]}}\n",
            d.join("token").display()
        ),
        "e2e.yaml",
    )
    .unwrap();
    let app = TestApp::spawn(Db::Sqlite, cfg).await.expect("sqlite is always available");

    let target = Target::default();
    target.set("medic_e2e_fault{service=\"checkout\"}", 1.0);
    let target_port = target.serve().await;
    let (prom_port, am_port) = (stack::free_port(), stack::free_port());
    let _am = stack::alertmanager(d, am_port, &format!("{}/v1/alerts/alertmanager", app.base), "e2e-token");
    let rules = "groups:\n- name: e2e\n  interval: 1s\n  rules:\n  - alert: CheckoutErrors\n    expr: medic_e2e_fault > 0\n    labels: {severity: critical}\n    annotations: {summary: \"checkout is failing\"}\n";
    let _prom = stack::prometheus(d, prom_port, "prom-data", target_port, am_port, rules);
    let logs = || stack::logs(d, &["prometheus", "prometheus-alertmanager"]);
    let open = |state: &'static str| {
        let app = &app;
        async move {
            let (_, v) = app.get(&format!("/v1/incidents?state={state}")).await;
            v["incidents"].as_array().and_then(|l| l.first().cloned())
        }
    };
    let incident: Value =
        poll_until(60, || open("open")).await.unwrap_or_else(|| panic!("no incident within 60s\n{}", logs()));
    assert_eq!(incident["group_key"], "service=checkout");
    assert_eq!(incident["title"], "CheckoutErrors on checkout");
    assert_eq!(incident["severity"], "critical");

    // The metrics backend reads the same series back from the real Prometheus.
    let prom = medic::context::prometheus::Prometheus::new(
        &format!("http://127.0.0.1:{prom_port}"),
        medic::context::prometheus::Auth::None,
        vec![],
        std::time::Duration::from_secs(5),
    )
    .unwrap();
    let now = medic::time::Clock::now(&medic::time::SystemClock);
    let q = medic::context::MetricQuery {
        name: "fault".into(),
        promql: "medic_e2e_fault".into(),
        start: now - 120_000,
        end: now,
        step: 1_000,
        service: None,
    };
    let series = medic::context::Metrics::query_range(&prom, &q).await.expect("real Prometheus answers");
    assert_eq!(series.len(), 1, "{series:?}");
    assert_eq!(series[0].labels["service"], "checkout");
    assert!(series[0].points.iter().any(|p| p.1 == 1.0), "{series:?}");

    target.set("medic_e2e_fault{service=\"checkout\"}", 0.0);
    let id = incident["id"].as_i64().unwrap();
    let resolved = poll_until(90, || {
        let app = &app;
        async move {
            let (_, v) = app.get(&format!("/v1/incidents/{id}")).await;
            (v["state"] == "resolved").then_some(v)
        }
    })
    .await
    .unwrap_or_else(|| panic!("incident {id} did not resolve within 90s\n{}", logs()));
    let kinds: Vec<&str> = resolved["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .filter(|k| *k != "diagnosed")
        .collect();
    assert_eq!(kinds.first(), Some(&"incident_opened"));
    assert!(kinds.contains(&"alert_received") && kinds.contains(&"alert_resolved"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"incident_resolved"));
    assert_eq!(resolved["alerts"][0]["source"], "alertmanager");
    assert_eq!(resolved["alerts"][0]["labels"]["job"], "e2e");

    let mut v = medic::audit::Verifier::default();
    for r in app.store.audit_page(0, 10_000).await.unwrap() {
        v.check(&r).expect("audit chain intact");
    }
    app.stop().await.unwrap();
}
