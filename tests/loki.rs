//! The Loki logs backend against a local fake speaking the real HTTP API: streams merged in
//! time order with the tenant header, the query medic sends, caps on lines and line length,
//! and Loki's plain-text errors.

use medic::context::Logs;
use medic::context::http::Auth;
use medic::context::loki::Loki;
use medic::secret::Secret;
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

async fn fake(seen: Arc<Mutex<Vec<String>>>) -> String {
    let app = axum::Router::new().route(
        "/loki/api/v1/query_range",
        axum::routing::get(move |headers: axum::http::HeaderMap, axum::extract::Query(q): axum::extract::Query<HashMap<String, String>>| {
            let seen = seen.clone();
            async move {
                use axum::http::StatusCode;
                let query = q.get("query").cloned().unwrap_or_default();
                seen.lock().unwrap().push(format!("{query} start={} limit={} tenant={:?}", q["start"], q["limit"], headers.get("x-scope-orgid")));
                if query.contains("broken") {
                    return (StatusCode::BAD_REQUEST, "parse error at line 1, col 12: syntax error: unexpected IDENTIFIER\n".to_string());
                }
                let body = json!({"status": "success", "data": {"resultType": "streams", "result": [
                    {"stream": {"service": "checkout", "pod": "a"}, "values": [["1700000002000000000", "ERROR b"], ["1700000004000000000", "ERROR d"]]},
                    {"stream": {"service": "checkout", "pod": "b"}, "values": [["1700000001000000000", "ERROR a"], ["1700000003000000000", format!("ERROR {}", "x".repeat(5000))]]},
                ]}});
                (StatusCode::OK, body.to_string())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test]
async fn merges_streams_and_caps_them() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let base = fake(seen.clone()).await;
    let loki = Loki::new(
        &base,
        Auth::Bearer(Secret::new("t")),
        vec![("X-Scope-OrgID".into(), "team-a".into())],
        Duration::from_secs(5),
        None,
    )
    .unwrap();
    let lines = loki.lines("checkout", 1_700_000_000_000, 1_700_000_600_000, 3).await.unwrap();
    let texts: Vec<&str> = lines.iter().map(|l| &l.line[..7.min(l.line.len())]).collect();
    assert_eq!(texts, ["ERROR a", "ERROR b", "ERROR x"], "time order across streams, limit 3");
    assert_eq!(lines[0].at, 1_700_000_001_000);
    assert!(lines[2].line.len() <= 2048 + '…'.len_utf8() && lines[2].line.ends_with('…'), "long lines are cut");
    let sent = seen.lock().unwrap()[0].clone();
    assert!(sent.starts_with(r#"{service="checkout"} |~ "(?i)(error|"#), "{sent}");
    assert!(sent.contains("start=1700000000000000000 limit=3") && sent.contains("team-a"), "{sent}");
}

#[tokio::test]
async fn loki_errors_are_readable() {
    let base = fake(Arc::new(Mutex::new(Vec::new()))).await;
    let loki =
        Loki::new(&base, Auth::None, vec![], Duration::from_secs(5), Some(r#"{service="{{service}}"} broken"#.into()))
            .unwrap();
    let e = loki.lines("checkout", 0, 1, 10).await.unwrap_err();
    assert_eq!(e, "HTTP 400: parse error at line 1, col 12: syntax error: unexpected IDENTIFIER");
}
