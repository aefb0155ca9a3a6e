//! End to end with real context: Prometheus (with two and a half hours of history backfilled by
//! promtool, then live scrapes of a target this test controls) fires a rule, Alertmanager posts
//! to medic, and medic's responder reads the onset and magnitude back from the real Prometheus,
//! the other active alerts and silences from the real Alertmanager, and the dependency from a
//! topology file. Then Prometheus is stopped: the next diagnosis still comes, and says that
//! Prometheus is unavailable.
//!
//! Needs `prometheus`, `promtool` and `prometheus-alertmanager` (Debian packages): under
//! `CI=true` their absence fails the test, elsewhere it is skipped with the reason.

mod common;

use common::stack::{self, Target};
use common::{Db, TestApp, poll_until};
use medic::config::Config;
use serde_json::{Value, json};

const RATIO: &str = "medic_e2e_error_ratio{service=\"checkout\"}";
const SATURATION: &str = "medic_e2e_saturation{service=\"postgres\"}";

/// The series as Prometheus stores a scrape of the target: with `instance` and `job`.
fn scraped(series: &str, port: u16) -> String {
    series.replace('{', &format!("{{instance=\"127.0.0.1:{port}\",job=\"e2e\","))
}

fn evidence(diagnosis: &Value) -> Vec<(String, Option<i64>)> {
    diagnosis["diagnosis"]["hypotheses"][0]["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["text"].as_str().unwrap().to_string(), e["at"].as_i64()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diagnosis_from_real_prometheus_and_alertmanager() {
    if let Some(why) = stack::missing(&["prometheus", "promtool", "prometheus-alertmanager"]) {
        common::unavailable(&why);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // History: checkout's error ratio sat near 1% and jumped to 35% ten minutes ago; postgres
    // saturated twelve minutes ago.
    let now = chrono::Utc::now().timestamp() as f64;
    let onset = now - 600.0;
    let mut ratio = Vec::new();
    let mut saturation = Vec::new();
    let mut t = now - 9000.0;
    while t < now - 20.0 {
        let wobble = ((t as i64 / 15) % 7) as f64 * 0.0005;
        ratio.push((t, if t < onset { 0.0085 + wobble } else { 0.35 }));
        saturation.push((t, if t < now - 720.0 { 0.5 } else { 0.97 }));
        t += 15.0;
    }
    let target = Target::default();
    target.set(RATIO, 0.35);
    target.set(SATURATION, 0.97);
    let target_port = target.serve().await;
    stack::backfill(
        d,
        "prom-data",
        &[(scraped(RATIO, target_port), ratio), (scraped(SATURATION, target_port), saturation)],
    );

    let (prom_port, am_port) = (stack::free_port(), stack::free_port());
    std::fs::write(d.join("token"), "e2e-token\n").unwrap();
    std::fs::write(d.join("topology.yaml"), "checkout: [postgres]\n").unwrap();
    let cfg = Config::parse(
        &format!(
            "intake:\n  alertmanager:\n    auth: {{bearer: [{{file: {token}}}]}}\n\
             context:\n  timeout: 2s\n  budget: 4s\n  cache_ttl: 0s\n  rediagnose_every: 1s\n\
             \x20 prometheus:\n    url: http://127.0.0.1:{prom_port}\n    golden_signals:\n\
             \x20   - {{name: error_ratio, unit: ratio, promql: 'max(medic_e2e_error_ratio{{service=\"{{{{service}}}}\"}})'}}\n\
             \x20 alertmanager: {{url: 'http://127.0.0.1:{am_port}'}}\n\
             \x20 topology: {{file: {topology}}}\n",
            token = d.join("token").display(),
            topology = d.join("topology.yaml").display(),
        ),
        "e2e.yaml",
    )
    .unwrap();
    let app = TestApp::spawn(Db::Sqlite, cfg).await.expect("sqlite is always available");
    let _am = stack::alertmanager(d, am_port, &format!("{}/v1/alerts/alertmanager", app.base), "e2e-token");
    assert!(
        stack::ready(&format!("http://127.0.0.1:{am_port}/-/ready"), 30).await,
        "{}",
        stack::logs(d, &["prometheus-alertmanager"])
    );
    // Someone silenced postgres' alerts while they work on it.
    let end = chrono::Utc::now() + chrono::Duration::hours(1);
    let r = app
        .http
        .post(format!("http://127.0.0.1:{am_port}/api/v2/silences"))
        .json(&json!({"matchers": [{"name": "service", "value": "postgres", "isRegex": false, "isEqual": true}],
                      "startsAt": chrono::Utc::now(), "endsAt": end, "createdBy": "dana", "comment": "vacuum running"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{:?}", r.text().await);
    let rules = r#"
groups:
- name: e2e
  interval: 1s
  rules:
  - alert: CheckoutErrors
    expr: medic_e2e_error_ratio > 0.2
    labels: {severity: critical}
  - alert: PostgresSaturated
    expr: medic_e2e_saturation > 0.9
    labels: {severity: warning}
    annotations: {summary: connection slots nearly exhausted}
"#;
    let prom = stack::prometheus(d, prom_port, "prom-data", target_port, am_port, rules);
    let logs = || stack::logs(d, &["prometheus", "prometheus-alertmanager"]);

    let diagnosed = |min: usize| {
        let app = &app;
        async move {
            let (_, list) = app.get("/v1/incidents?state=open").await;
            let id = list["incidents"].as_array()?.iter().find(|i| i["title"] == "CheckoutErrors on checkout")?["id"]
                .as_i64()?;
            let (_, v) = app.get(&format!("/v1/incidents/{id}")).await;
            let n = v["timeline"].as_array()?.iter().filter(|e| e["kind"] == "diagnosed").count();
            (n >= min).then(|| (id, v["diagnosis"].clone()))
        }
    };
    let (id, diagnosis) =
        poll_until(60, || diagnosed(1)).await.unwrap_or_else(|| panic!("no diagnosis within 60s\n{}", logs()));
    let ev = evidence(&diagnosis);
    let texts: Vec<&str> = ev.iter().map(|(t, _)| t.as_str()).collect();
    let (text, at) = ev
        .iter()
        .find(|(t, _)| t.starts_with("error_ratio of checkout rose"))
        .unwrap_or_else(|| panic!("no onset read back from Prometheus: {texts:#?}"));
    assert!(text.contains("rose from 1.0% to 35.0%"), "{text}");
    let at = at.unwrap() as f64 / 1000.0;
    assert!((at - onset).abs() <= 60.0, "onset {at} is {}s from the true one", at - onset);
    assert!(
        texts
            .iter()
            .any(|t| t.starts_with("also firing in Alertmanager: PostgresSaturated on postgres (a dependency)")
                && t.contains("silenced or inhibited")
                && t.ends_with("connection slots nearly exhausted")),
        "{texts:#?}"
    );
    assert!(
        texts
            .iter()
            .any(|t| t.contains("by dana") && t.contains("service=\"postgres\"") && t.ends_with("vacuum running")),
        "{texts:#?}"
    );
    assert!(!texts.iter().any(|t| t.starts_with("unavailable")), "{texts:#?}");
    let queries = diagnosis["queries"].as_array().unwrap();
    for kind in ["topology", "metrics", "alerts", "silences", "changes"] {
        assert!(
            queries.iter().any(|q| q["kind"] == kind && q["error"].is_null() && q["ms"].is_u64()),
            "{kind}: {queries:?}"
        );
    }
    assert!(queries.iter().any(|q| q["what"] == "error_ratio of postgres"), "the dependency's golden signals too");
    let (_, text) = app.get("/metrics").await;
    let text = text.as_str().unwrap();
    assert!(
        text.contains(
            "medic_context_query_duration_seconds_count{kind=\"metrics\",source=\"prometheus\",outcome=\"ok\"}"
        ),
        "{text}"
    );

    // Prometheus goes away; a new alert joins the incident; the diagnosis still comes.
    drop(prom);
    let (status, _) = app
        .post(
            "/v1/alerts/generic",
            json!({"alerts": [{"name": "CheckoutLatency", "status": "firing", "labels": {"service": "checkout"}}]})
                .to_string(),
            &[],
        )
        .await;
    assert_eq!(status, 200);
    let (id2, diagnosis) =
        poll_until(30, || diagnosed(2)).await.unwrap_or_else(|| panic!("no second diagnosis within 30s\n{}", logs()));
    assert_eq!(id2, id, "the alert joined the incident");
    let texts: Vec<String> = evidence(&diagnosis).into_iter().map(|(t, _)| t).collect();
    assert!(texts.iter().any(|t| t.starts_with("unavailable: metrics: prometheus failed: unreachable")), "{texts:#?}");
    assert!(
        texts.iter().any(|t| t.starts_with("also firing in Alertmanager: PostgresSaturated")),
        "Alertmanager still answers"
    );
    app.stop().await.unwrap();
}
