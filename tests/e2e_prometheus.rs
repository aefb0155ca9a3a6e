//! End to end with the real thing: Prometheus scrapes a fault gauge served by this test, a rule
//! fires, Alertmanager delivers its webhook (with a bearer token) to a medic started here; the
//! alert becomes an incident. Clearing the fault resolves the alert, and the incident resolves.
//!
//! Needs `prometheus` and `prometheus-alertmanager` (Debian packages) on PATH: under `CI=true`
//! their absence fails the test, elsewhere it is skipped with the reason.

mod common;

use common::{Db, TestApp, poll_until};
use medic::config::Config;
use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Kills the child process when the test ends, however it ends.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn on_path(bin: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn spawn(bin: &'static str, args: &[String], dir: &Path) -> Guard {
    let log = std::fs::File::create(dir.join(format!("{bin}.log"))).unwrap();
    let child = Command::new(bin)
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
    Guard(child)
}

/// Serves `medic_e2e_fault{service="checkout"} <value>` for Prometheus to scrape.
async fn fault_target(value: Arc<AtomicU64>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let v = value.load(Ordering::SeqCst);
            async move { format!("# TYPE medic_e2e_fault gauge\nmedic_e2e_fault{{service=\"checkout\"}} {v}\n") }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_alertmanager_medic() {
    for bin in ["prometheus", "prometheus-alertmanager"] {
        if !on_path(bin) {
            common::unavailable(&format!(
                "{bin} is not installed (apt-get install prometheus prometheus-alertmanager)"
            ));
            return;
        }
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

    let fault = Arc::new(AtomicU64::new(1));
    let target = fault_target(fault.clone()).await;
    let (prom_port, am_port) = (free_port(), free_port());
    std::fs::write(
        d.join("rules.yml"),
        "groups:\n- name: e2e\n  interval: 1s\n  rules:\n  - alert: CheckoutErrors\n    expr: medic_e2e_fault > 0\n    labels: {severity: critical}\n    annotations: {summary: \"checkout is failing\"}\n",
    )
    .unwrap();
    std::fs::write(
        d.join("prometheus.yml"),
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nrule_files: [rules.yml]\n\
             scrape_configs:\n- job_name: e2e\n  static_configs: [{{targets: ['127.0.0.1:{target}']}}]\n\
             alerting:\n  alertmanagers: [{{static_configs: [{{targets: ['127.0.0.1:{am_port}']}}]}}]\n"
        ),
    )
    .unwrap();
    std::fs::write(
        d.join("alertmanager.yml"),
        format!(
            "route: {{receiver: medic, group_by: [service], group_wait: 1s, group_interval: 1s, repeat_interval: 1h}}\n\
             receivers:\n- name: medic\n  webhook_configs:\n  - url: {}/v1/alerts/alertmanager\n    send_resolved: true\n    \
             http_config: {{authorization: {{credentials: e2e-token}}}}\n",
            app.base
        ),
    )
    .unwrap();
    let _am = spawn(
        "prometheus-alertmanager",
        &[
            "--config.file=alertmanager.yml".into(),
            "--storage.path=am-data".into(),
            format!("--web.listen-address=127.0.0.1:{am_port}"),
            "--cluster.listen-address=".into(),
        ],
        d,
    );
    let _prom = spawn(
        "prometheus",
        &[
            "--config.file=prometheus.yml".into(),
            "--storage.tsdb.path=prom-data".into(),
            format!("--web.listen-address=127.0.0.1:{prom_port}"),
            "--rules.alert.resend-delay=1s".into(),
        ],
        d,
    );

    let logs = || {
        ["prometheus", "prometheus-alertmanager"]
            .map(|b| {
                format!(
                    "--- {b}.log (tail)\n{}",
                    std::fs::read_to_string(d.join(format!("{b}.log")))
                        .unwrap_or_default()
                        .lines()
                        .rev()
                        .take(15)
                        .collect::<Vec<_>>()
                        .join("\n")
                )
            })
            .join("\n")
    };
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
    };
    let series = medic::context::Metrics::query_range(&prom, &q).await.expect("real Prometheus answers");
    assert_eq!(series.len(), 1, "{series:?}");
    assert_eq!(series[0].labels["service"], "checkout");
    assert!(series[0].points.iter().any(|p| p.1 == 1.0), "{series:?}");

    fault.store(0, Ordering::SeqCst);
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
    let kinds: Vec<&str> =
        resolved["timeline"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
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
