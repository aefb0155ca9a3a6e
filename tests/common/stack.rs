//! The real observability stack on loopback for end-to-end tests and benchmarks: Prometheus
//! and Alertmanager (Debian packages) as child processes killed when dropped, a scrape target
//! whose values the caller sets, and history backfilled with `promtool tsdb
//! create-blocks-from openmetrics` so a range query over hours has data from the first second.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

/// Kills the child process when dropped, however the test ends.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn on_path(bin: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
}

/// The first of `bins` that is not installed.
pub fn missing(bins: &[&str]) -> Option<String> {
    bins.iter()
        .find(|b| !on_path(b))
        .map(|b| format!("{b} is not installed (apt-get install prometheus prometheus-alertmanager)"))
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts `bin` in `dir`, its stderr in `dir/<bin>.log`.
pub fn spawn(bin: &str, args: &[String], dir: &Path) -> Guard {
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

/// The last lines of each log in `dir`, for a failure message.
pub fn logs(dir: &Path, bins: &[&str]) -> String {
    bins.iter()
        .map(|b| {
            let text = std::fs::read_to_string(dir.join(format!("{b}.log"))).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            format!("--- {b}.log (tail, newest first)\n{}", tail.join("\n"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A `/metrics` endpoint serving gauges (`name{labels}` → value) the caller changes at will.
#[derive(Clone, Default)]
pub struct Target(pub Arc<Mutex<BTreeMap<String, f64>>>);

impl Target {
    pub fn set(&self, series: &str, v: f64) {
        self.0.lock().unwrap().insert(series.to_string(), v);
    }

    /// Serves on a loopback port; returns it.
    pub async fn serve(&self) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let values = self.0.clone();
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let body: String = values.lock().unwrap().iter().map(|(k, v)| format!("{k} {v}\n")).collect();
                async move { body }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        port
    }
}

/// Writes `series` (each `name{labels}` with `(unix seconds, value)` samples, oldest first) as
/// blocks into the Prometheus data directory `data`, the way an operator backfills.
pub fn backfill(dir: &Path, data: &str, series: &[(String, Vec<(f64, f64)>)]) {
    let mut om = String::new();
    let mut names: Vec<&str> = series.iter().map(|(s, _)| s.split('{').next().unwrap()).collect();
    names.dedup();
    for name in names {
        om.push_str(&format!("# TYPE {name} gauge\n"));
        for (s, points) in series.iter().filter(|(s, _)| s.split('{').next() == Some(name)) {
            for (t, v) in points {
                om.push_str(&format!("{s} {v} {t:.3}\n"));
            }
        }
    }
    om.push_str("# EOF\n");
    std::fs::write(dir.join("history.om"), om).unwrap();
    let out = Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics", "history.om", data])
        .current_dir(dir)
        .output()
        .expect("promtool runs");
    assert!(out.status.success(), "backfill failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// Prometheus on `port` over `data`, scraping `target` every second, evaluating `rules` (a
/// rules file's text) every second and sending alerts to Alertmanager on `am_port`.
pub fn prometheus(dir: &Path, port: u16, data: &str, target: u16, am_port: u16, rules: &str) -> Guard {
    std::fs::write(dir.join("rules.yml"), rules).unwrap();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nrule_files: [rules.yml]\n\
             scrape_configs:\n- job_name: e2e\n  static_configs: [{{targets: ['127.0.0.1:{target}']}}]\n\
             alerting:\n  alertmanagers: [{{static_configs: [{{targets: ['127.0.0.1:{am_port}']}}]}}]\n"
        ),
    )
    .unwrap();
    spawn(
        "prometheus",
        &[
            "--config.file=prometheus.yml".into(),
            format!("--storage.tsdb.path={data}"),
            format!("--web.listen-address=127.0.0.1:{port}"),
            // Without it the first notification is dropped and the next comes a minute later.
            "--rules.alert.resend-delay=1s".into(),
        ],
        dir,
    )
}

/// Alertmanager on `port`, sending every group to `webhook` with a bearer `token`.
pub fn alertmanager(dir: &Path, port: u16, webhook: &str, token: &str) -> Guard {
    std::fs::write(
        dir.join("alertmanager.yml"),
        format!(
            "route: {{receiver: medic, group_by: [service], group_wait: 1s, group_interval: 1s, repeat_interval: 1h}}\n\
             receivers:\n- name: medic\n  webhook_configs:\n  - url: {webhook}\n    send_resolved: true\n    \
             http_config: {{authorization: {{credentials: {token}}}}}\n"
        ),
    )
    .unwrap();
    spawn(
        "prometheus-alertmanager",
        &[
            "--config.file=alertmanager.yml".into(),
            "--storage.path=am-data".into(),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--cluster.listen-address=".into(),
        ],
        dir,
    )
}

/// Waits until `url` answers 200 (a readiness endpoint), up to `secs`.
pub async fn ready(url: &str, secs: u64) -> bool {
    let http = medic::telemetry::http_client_builder().build().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if http.get(url).send().await.is_ok_and(|r| r.status().is_success()) {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    false
}
