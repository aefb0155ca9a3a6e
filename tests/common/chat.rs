//! What the chat tests share: a deploy API the plan calls (counting calls), and a runbook
//! whose plan calls it.
#![allow(dead_code)]

use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Serves `POST /v1/services/{service}/restart`, counting calls; returns `host:port`.
pub async fn deploy_api(count: Arc<AtomicUsize>) -> String {
    let app = axum::Router::new().route(
        "/v1/services/{service}/restart",
        axum::routing::post(move || {
            count.fetch_add(1, Ordering::SeqCst);
            async { axum::Json(json!({"status": "done"})) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr.to_string()
}

/// A stand-in speaking Prometheus' `query_range` wire format: every query answers one series
/// of `checkout` rising over the range asked. Returns its base URL.
pub async fn prometheus() -> String {
    async fn range(
        axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
    ) -> axum::Json<serde_json::Value> {
        let num = |k: &str| q.get(k).and_then(|v| v.parse::<f64>().ok());
        let (start, end, step) =
            (num("start").unwrap_or(0.0), num("end").unwrap_or(60.0), num("step").unwrap_or(15.0).max(1.0));
        let values: Vec<serde_json::Value> = (0..)
            .map(|i| start + i as f64 * step)
            .take_while(|t| *t <= end)
            .take(11_000)
            .enumerate()
            .map(|(i, t)| json!([t, format!("{}", 0.01 * i as f64)]))
            .collect();
        axum::Json(json!({"status": "success", "data": {"resultType": "matrix",
            "result": [{"metric": {"service": "checkout"}, "values": values}]}}))
    }
    let app = axum::Router::new().route("/api/v1/query_range", axum::routing::get(range).post(range));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

const RUNBOOK: &str = r#"
id: restart-on-chat-test
title: Restart the service
description: A test runbook whose plan calls a local deploy API.
tier: 2
match:
  alerts: ['alertname="ChatTest"']
hypothesis: "{{service}} needs a restart."
vars:
  deploy_api: http://DEPLOY
plan:
  expected_impact: A rolling restart of {{service}}.
  steps:
    - id: restart
      action:
        http: {method: POST, url: "{{vars.deploy_api}}/v1/services/{{service}}/restart"}
      irreversible: A restart cannot be undone.
approval:
  groups: [sre]
"#;

/// Writes `dir/runbooks/restart.yaml` (and `restart-slow.yaml`) calling `deploy`
/// (`host:port`); returns the directory.
pub fn runbooks(dir: &Path, deploy: &str) -> std::path::PathBuf {
    let d = dir.join("runbooks");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("restart.yaml"), RUNBOOK.replace("DEPLOY", deploy)).unwrap();
    // The same restart, then a wait of 3 s before the plan ends: for `ChatTestSlow` alerts.
    let slow = RUNBOOK
        .replace("id: restart-on-chat-test", "id: restart-then-wait")
        .replace(r#"alertname="ChatTest""#, r#"alertname="ChatTestSlow""#)
        .replace("approval:", "    - id: settle\n      action: {wait: 3s}\napproval:");
    std::fs::write(d.join("restart-slow.yaml"), slow.replace("DEPLOY", deploy)).unwrap();
    d
}

/// The alert that matches the runbook, as a generic intake body.
pub fn alert(status: &str) -> String {
    json!({"alerts": [{"name": "ChatTest", "status": status, "labels": {"service": "checkout", "severity": "critical"}}]})
        .to_string()
}

/// A stand-in for GitHub's create-issue endpoint (`POST /repos/acme/shop/issues`: 201 with the
/// issue's `number` and `html_url`), recording each body, and the config that opens tickets
/// there on order only (`ask.control_groups: [sre]`, the token in `dir`). Returns the issues
/// and the config lines.
pub async fn github_tickets(dir: &Path) -> (Arc<std::sync::Mutex<Vec<serde_json::Value>>>, String) {
    let issues = Arc::new(std::sync::Mutex::new(Vec::new()));
    let recorded = issues.clone();
    let github = axum::Router::new().route(
        "/repos/acme/shop/issues",
        axum::routing::post(move |body: axum::body::Bytes| {
            let recorded = recorded.clone();
            async move {
                let n = {
                    let mut i = recorded.lock().unwrap();
                    i.push(serde_json::from_slice::<serde_json::Value>(&body).unwrap_or_default());
                    i.len()
                };
                let issue = json!({"number": n, "html_url": format!("https://github.com/acme/shop/issues/{n}")});
                (axum::http::StatusCode::CREATED, axum::Json(issue))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gh = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, github).await.unwrap() });
    std::fs::write(dir.join("gh"), "gh-token").unwrap();
    let config = format!(
        "ask: {{control_groups: [sre]}}\ntickets:\n  github: {{repository: acme/shop, token: {{file: {}}}, api_url: '{gh}'}}\n\
         \x20 when: {{failed_plan: false, resolved_by_itself: false}}\n",
        dir.join("gh").display()
    );
    (issues, config)
}
