//! The Prometheus metrics backend against a local fake speaking the real HTTP API: a matrix with
//! auth and tenant headers, Prometheus' error JSON, refused credentials, a huge response
//! (bounded), and a slow server (timed out, and an "unavailable" line through `gather`).

use medic::context::prometheus::{Auth, Prometheus};
use medic::context::{MetricQuery, Metrics, Request, Sources, gather};
use medic::secret::Secret;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

async fn fake() -> String {
    let app = axum::Router::new().route(
        "/api/v1/query_range",
        axum::routing::get(|headers: axum::http::HeaderMap, axum::extract::Query(q): axum::extract::Query<HashMap<String, String>>| async move {
            use axum::http::StatusCode;
            let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
            let query = q.get("query").cloned().unwrap_or_default();
            if auth != "Bearer tok" {
                return (StatusCode::UNAUTHORIZED, "Unauthorized\n".to_string());
            }
            match query.as_str() {
                "broken(" => (StatusCode::BAD_REQUEST, json!({"status": "error", "errorType": "bad_data", "error": "1:8: parse error: unclosed left parenthesis"}).to_string()),
                "huge" => (StatusCode::OK, format!("{{\"status\":\"success\",\"data\":{{\"resultType\":\"matrix\",\"result\":[{{\"metric\":{{}},\"values\":[{}]}}]}}}}", vec!["[1,\"1\"]"; 10_000].join(","))),
                "slow" => {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    (StatusCode::OK, String::new())
                }
                _ => {
                    let tenant = headers.get("x-scope-orgid").and_then(|v| v.to_str().ok()).unwrap_or("none").to_string();
                    let step: f64 = q["step"].parse().unwrap();
                    let body = json!({"status": "success", "data": {"resultType": "matrix", "result": [
                        {"metric": {"__name__": "up", "job": "api", "tenant": tenant}, "values": [[1700000000.0, "1"], [1700000000.0 + step, "NaN"], [1700000000.0 + 2.0 * step, "0.5"]]},
                        {"metric": {"job": "db"}, "values": [[1700000000.0, "+Inf"]]},
                    ]}});
                    (StatusCode::OK, body.to_string())
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn q(promql: &str) -> MetricQuery {
    MetricQuery {
        name: "errors".into(),
        promql: promql.into(),
        start: 1_700_000_000_000,
        end: 1_700_000_600_000,
        step: 15_000,
        service: None,
    }
}

fn prom(base: &str, token: &str, timeout: Duration) -> Prometheus {
    Prometheus::new(base, Auth::Bearer(Secret::new(token)), vec![("X-Scope-OrgID".into(), "team-a".into())], timeout)
        .unwrap()
}

#[tokio::test]
async fn reads_a_matrix_with_auth_and_tenant() {
    let base = fake().await;
    let series = prom(&base, "tok", Duration::from_secs(5)).query_range(&q("up")).await.unwrap();
    assert_eq!(series.len(), 2);
    assert_eq!(series[0].query, "errors");
    assert_eq!(series[0].labels["tenant"], "team-a");
    assert_eq!(
        series[0].points,
        vec![(1_700_000_000_000, 1.0), (1_700_000_030_000, 0.5)],
        "NaN dropped, step honoured"
    );
    assert!(series[1].points.is_empty(), "+Inf dropped");
}

#[tokio::test]
async fn errors_are_readable_and_bounded() {
    let base = fake().await;
    let p = prom(&base, "tok", Duration::from_secs(5));
    assert_eq!(
        p.query_range(&q("broken(")).await.unwrap_err(),
        "HTTP 400: bad_data: 1:8: parse error: unclosed left parenthesis"
    );
    let e = prom(&base, "wrong", Duration::from_secs(5)).query_range(&q("up")).await.unwrap_err();
    assert_eq!(e, "HTTP 401: credentials refused");
    let mut small = prom(&base, "tok", Duration::from_secs(5));
    small.set_max_bytes(4096);
    assert!(small.query_range(&q("huge")).await.unwrap_err().contains("response larger than 4096 bytes"));
    let e = prom(&base, "tok", Duration::from_millis(200)).query_range(&q("slow")).await.unwrap_err();
    assert_eq!(e, "timed out");
    let e = prom("http://127.0.0.1:9", "tok", Duration::from_secs(1)).query_range(&q("up")).await.unwrap_err();
    assert!(e.starts_with("unreachable"), "{e}");
}

#[tokio::test]
async fn a_slow_prometheus_is_an_unavailable_line() {
    let base = fake().await;
    let sources = Sources {
        metrics: Some(Arc::new(prom(&base, "tok", Duration::from_secs(30)))),
        timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let req = Request { start: 0, end: 1, queries: vec![q("slow"), q("up")], ..Default::default() };
    let ctx = gather(&sources, &req).await;
    assert_eq!(ctx.unavailable, ["metrics: prometheus timed out after 300ms"]);
    assert_eq!(ctx.series.len(), 2, "the query that answered is kept");
}
