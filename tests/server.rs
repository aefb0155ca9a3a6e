//! The server as a whole, on both stores: health, readiness, metrics, the incident API's
//! errors, and graceful shutdown under load (every acknowledged alert is stored, none lost).

mod common;

use common::{Db, TestApp, fixture, raw_pool};
use medic::config::Config;
use reqwest::StatusCode;
use serde_json::json;
use sqlx::Row;
use std::sync::Arc;

async fn health_readiness_metrics(db: Db) {
    let Some(app) = TestApp::spawn(db, Config::default()).await else { return };
    let (s, v) = app.get("/healthz").await;
    assert_eq!((s, v["status"].as_str()), (StatusCode::OK, Some("ok")));
    let (s, v) = app.get("/readyz").await;
    assert_eq!((s, v["ready"].as_bool()), (StatusCode::OK, Some(true)), "{v}");

    app.post("/v1/alerts/alertmanager", fixture("alertmanager-0.25-firing.json"), &[]).await;
    app.post("/v1/alerts/alertmanager", fixture("alertmanager-0.25-firing.json"), &[]).await;
    app.post("/v1/alerts/alertmanager", "{}", &[("content-type", "text/plain")]).await;
    let resp = app.http.get(format!("{}/metrics", app.base)).send().await.unwrap();
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = resp.text().await.unwrap();
    for line in [
        "medic_intake_requests_total{source=\"alertmanager\",result=\"stored\"} 2",
        "medic_intake_requests_total{source=\"alertmanager\",result=\"unsupported_media_type\"} 1",
        "medic_alerts_received_total{source=\"alertmanager\",result=\"new\"} 1",
        "medic_alerts_received_total{source=\"alertmanager\",result=\"unchanged\"} 1",
        "medic_incidents{state=\"open\"} 1",
        "medic_http_request_duration_seconds_count{route=\"/v1/alerts/alertmanager\",status=\"200\"} 2",
        "medic_store_committed_submissions_total 2",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    app.stop().await.unwrap();
}

/// A storm's incident answers in pages: 250 alerts come 100 at a time with a cursor, the
/// timeline likewise, and following the cursors yields every alert once (issue 13).
async fn incident_detail_is_paginated(db: Db) {
    let Some(app) = TestApp::spawn(db, Config::default()).await else { return };
    let alerts: Vec<_> = (0..250)
        .map(|i| json!({"name": format!("Disk{i:03}"), "status": "firing", "labels": {"service": "db"}}))
        .collect();
    let (s, v) = app.post("/v1/alerts/generic", json!({"alerts": alerts}).to_string(), &[]).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, first) = app.get("/v1/incidents/1").await;
    assert_eq!(first["alerts"].as_array().unwrap().len(), 100, "100 alerts by default");
    assert_eq!(first["alerts_total"], 250);
    let mut seen: Vec<String> = Vec::new();
    let mut url = "/v1/incidents/1?alerts_limit=70&timeline_limit=50".to_string();
    loop {
        let (s, page) = app.get(&url).await;
        assert_eq!(s, StatusCode::OK, "{page}");
        assert!(page["timeline"].as_array().unwrap().len() <= 50);
        seen.extend(page["alerts"].as_array().unwrap().iter().map(|a| a["key"].as_str().unwrap().to_string()));
        match page["alerts_next"].as_str() {
            Some(next) => {
                url = format!(
                    "/v1/incidents/1?alerts_limit=70&timeline_limit=50&alerts_after={}",
                    url::form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
                )
            }
            None => break,
        }
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!((seen.len(), unique.len()), (250, 250), "every alert once");
    // The timeline: alert_received (250 alerts in one record or more) and incident_opened, paged.
    let (_, t) = app.get("/v1/incidents/1?timeline_limit=1").await;
    assert_eq!(t["timeline"].as_array().unwrap().len(), 1);
    let next = t["timeline_next"].as_str().expect("a next page").to_string();
    let (_, t2) = app.get(&format!("/v1/incidents/1?timeline_limit=1&timeline_after={next}")).await;
    assert!(t2["timeline"][0]["seq"].as_i64() > t["timeline"][0]["seq"].as_i64());
    for (q, needle) in
        [("alerts_limit=0", "alerts_limit: expected a number from 1 to 1000"), ("page=2", "unknown query parameter")]
    {
        let (s, v) = app.get(&format!("/v1/incidents/1?{q}")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{q}");
        assert!(v["message"].as_str().unwrap().contains(needle), "{q}: {v}");
    }
    app.stop().await.unwrap();
}

async fn incident_api_errors_and_filters(db: Db) {
    let cfg = Config::parse("incidents: {resolve_grace: 0s}", "t").unwrap();
    let Some(app) = TestApp::spawn(db, cfg).await else { return };
    let alert = |name: &str, status: &str| {
        json!({"alerts": [{"name": name, "status": status, "labels": {"service": name}}]}).to_string()
    };
    app.post("/v1/alerts/generic", alert("a", "firing"), &[]).await;
    app.post("/v1/alerts/generic", alert("b", "firing"), &[]).await;
    app.post("/v1/alerts/generic", alert("a", "resolved"), &[]).await;

    let (_, v) = app.get("/v1/incidents").await;
    let ids: Vec<i64> = v["incidents"].as_array().unwrap().iter().map(|i| i["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, [2, 1], "newest first");
    let (_, v) = app.get("/v1/incidents?state=resolved").await;
    assert_eq!(v["incidents"].as_array().unwrap().len(), 1);
    assert_eq!(v["incidents"][0]["title"], "a on a");
    let (_, v) = app.get("/v1/incidents?limit=1&before=2").await;
    assert_eq!(v["incidents"][0]["id"], 1);

    for (q, needle) in [
        ("state=closed", "state: expected open, resolving or resolved"),
        ("limit=0", "limit:"),
        ("sort=id", "unknown query parameter"),
    ] {
        let (s, v) = app.get(&format!("/v1/incidents?{q}")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{q}");
        assert!(v["message"].as_str().unwrap().contains(needle), "{q}: {v}");
    }
    let (s, v) = app.get("/v1/incidents/99").await;
    assert_eq!((s, v["message"].as_str()), (StatusCode::NOT_FOUND, Some("no incident 99")));
    let (s, _) = app.get("/v1/incidents/abc").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = app.get("/v1/nothing").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    app.stop().await.unwrap();
}

/// Shut down while 200 requests are in flight: every 200 is in the database afterwards, every
/// other request failed to connect (nothing half-done, no 5xx).
async fn graceful_shutdown_under_load(db: Db) {
    let Some(app) = TestApp::spawn(db, Config::default()).await else { return };
    let mut tasks = Vec::new();
    let first_ack = Arc::new(tokio::sync::Notify::new());
    for i in 0..200 {
        let (http, base, first_ack) = (app.http.clone(), app.base.clone(), first_ack.clone());
        tasks.push(tokio::spawn(async move {
            let body = json!({"alerts": [{"name": format!("load{i}"), "status": "firing", "labels": {"service": format!("s{}", i % 5)}}]});
            match http.post(format!("{base}/v1/alerts/generic")).json(&body).send().await {
                Ok(r) => {
                    first_ack.notify_one();
                    Some(r.status())
                }
                Err(_) => None,
            }
        }));
    }
    // Stop as soon as one request is acknowledged: the rest are in flight, however fast or slow
    // the machine is.
    tokio::time::timeout(std::time::Duration::from_secs(30), first_ack.notified())
        .await
        .expect("a first acknowledgement");
    let db = app.stop().await.expect("clean shutdown");
    let mut acked = 0;
    for t in tasks {
        match t.await.unwrap() {
            Some(StatusCode::OK) => acked += 1,
            Some(other) => panic!("a request in flight during shutdown got {other}"),
            None => {}
        }
    }
    let raw = raw_pool(&db).await;
    let stored: i64 = sqlx::query("SELECT COUNT(*) AS n FROM alerts").fetch_one(&raw).await.unwrap().get("n");
    raw.close().await;
    eprintln!("graceful shutdown: {acked} of 200 acknowledged, {stored} stored");
    assert!(acked > 0, "some requests completed before shutdown");
    assert_eq!(stored, acked, "acknowledged == stored");
}

/// With a topology, a failing dependency's alert joins its caller's open incident, and the
/// responder's diagnosis covers both services; an unrelated service gets its own incident.
async fn topology_groups_a_dependency_with_its_caller(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let topo = dir.path().join("topology.yaml");
    std::fs::write(&topo, "checkout: [postgres]\n").unwrap();
    let cfg = Config::parse(&format!("context: {{topology: {{file: {}}}}}\n", topo.display()), "t.yaml").unwrap();
    let Some(app) = TestApp::spawn(db, cfg).await else { return };
    let post = |name: &str, service: &str| {
        json!({"alerts": [{"name": name, "status": "firing", "labels": {"service": service}}]}).to_string()
    };
    let (_, a) = app.post("/v1/alerts/generic", post("HighErrorRate", "checkout"), &[]).await;
    let (_, b) = app.post("/v1/alerts/generic", post("PoolSaturated", "postgres"), &[]).await;
    let (_, c) = app.post("/v1/alerts/generic", post("DiskFull", "search"), &[]).await;
    assert_eq!(
        (a["incidents"].clone(), b["incidents"].clone(), c["incidents"].clone()),
        (json!([1]), json!([1]), json!([2]))
    );
    let found = common::poll_until(10, || {
        let app = &app;
        async move {
            let (_, v) = app.get("/v1/incidents/1").await;
            let d = v["diagnosis"].clone();
            (d["queries"].as_array().is_some_and(|q| q.iter().any(|q| q["what"] == "postgres"))).then_some(d)
        }
    })
    .await;
    let Some(diagnosis) = found else {
        panic!("no diagnosis that asked about both services: {}", app.get("/v1/incidents/1").await.1);
    };
    assert!(diagnosis["queries"].as_array().unwrap().iter().any(|q| q["what"] == "checkout"), "{diagnosis}");
    app.stop().await.unwrap();
}

/// `POST /v1/ask` answers with intent, slots, answer and evidence; it takes `api.bearer` like
/// the incident API (which it now guards too); a bad body and an oversized question are 400s
/// naming the problem; the API cannot pause automation.
async fn ask_api_answers_and_is_authenticated(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "t0ken-for-the-api").unwrap();
    let yaml = format!("api:\n  bearer: [{{file: {}}}]\n", dir.path().join("token").display());
    let cfg = Config::parse(&yaml, "api.yaml").unwrap();
    let Some(app) = TestApp::spawn(db, cfg).await else { return };
    let alert = json!({"name": "HighErrorRate", "status": "firing", "labels": {"service": "checkout"}});
    assert_eq!(app.post("/v1/alerts/generic", json!({"alerts": [alert]}).to_string(), &[]).await.0, StatusCode::OK);
    let auth = [("authorization", "Bearer t0ken-for-the-api"), ("content-type", "application/json")];
    let ask = json!({"question": "status of incident 1"}).to_string();
    assert_eq!(app.post("/v1/ask", ask.clone(), &[]).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(app.get("/v1/incidents").await.0, StatusCode::UNAUTHORIZED, "the incident API takes the token too");
    let wrong = [("authorization", "Bearer nope")];
    assert_eq!(app.post("/v1/ask", ask.clone(), &wrong).await.0, StatusCode::UNAUTHORIZED);
    let (s, v) = app.post("/v1/ask", ask, &auth).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!((v["intent"].as_str(), v["slots"]["incident"].as_i64()), (Some("status"), Some(1)), "{v:#}");
    assert!(v["answer"].as_str().unwrap().contains("Incident #1: HighErrorRate on checkout"), "{v:#}");
    assert!(v["evidence"].is_array());
    let (s, v) = app.post("/v1/ask", json!({"question": "pause"}).to_string(), &auth).await;
    assert_eq!((s, v["private"].as_bool()), (StatusCode::OK, Some(true)), "{v}");
    assert!(app.store.paused().await.unwrap().is_none(), "the API cannot pause");
    let (s, v) = app.post("/v1/ask", json!({"question": "x".repeat(5000)}).to_string(), &auth).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["message"].as_str().unwrap().contains("longer than 4000"), "{v}");
    let (s, v) = app.post("/v1/ask", json!({"q": "status"}).to_string(), &auth).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["message"].as_str().unwrap().contains("unknown field `q`"), "{v}");
    app.stop().await.unwrap();
}

both_stores!(
    ask_api_answers_and_is_authenticated,
    incident_detail_is_paginated,
    health_readiness_metrics,
    incident_api_errors_and_filters,
    graceful_shutdown_under_load,
    topology_groups_a_dependency_with_its_caller
);
