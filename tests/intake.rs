//! Intake over HTTP, on both stores: each source with real-shaped payloads, authentication,
//! every bad-input class, and re-delivery idempotence.

mod common;

use common::{Db, TestApp, fixture};
use medic::config::Config;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::path::Path;

/// A config whose secrets live in files under `dir` (name → value).
fn config(dir: &Path, yaml: &str, secrets: &[(&str, &str)]) -> Config {
    for (name, value) in secrets {
        std::fs::write(dir.join(name), format!("{value}\n")).unwrap();
    }
    let yaml = yaml.replace("$DIR", &dir.display().to_string());
    Config::parse(&yaml, "test.yaml").unwrap_or_else(|e| panic!("{e}"))
}

/// The timeline's kinds, without the responder's (asynchronous) `diagnosed` records.
fn kinds(detail: &Value) -> Vec<String> {
    detail["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .filter(|k| k != "diagnosed")
        .collect()
}

async fn alertmanager_real_payloads(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        "incidents: {resolve_grace: 0s}\nintake:\n  alertmanager:\n    auth: {bearer: [{file: $DIR/am}]}\n",
        &[("am", "test-token")],
    );
    let Some(app) = TestApp::spawn(db, cfg).await else { return };
    let auth = [("authorization", "Bearer test-token")];

    let (s, v) = app.post("/v1/alerts/alertmanager", fixture("alertmanager-0.25-firing.json"), &auth).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!((v["new"].as_u64(), v["incidents"].clone()), (Some(1), json!([1])));

    let (s, inc) = app.get("/v1/incidents/1").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(inc["state"], "open");
    assert_eq!(inc["title"], "CheckoutHighErrorRate on checkout");
    assert_eq!(inc["severity"], "critical");
    let alert = &inc["alerts"][0];
    assert_eq!(alert["key"], "alertmanager/179e723e8f1abc96");
    assert_eq!(alert["labels"]["namespace"], "shop");
    assert_eq!(alert["starts_at"], "2026-11-21T19:50:24.443Z");
    assert!(alert["links"]["generator"].as_str().unwrap().starts_with("http://vm:19095/graph"));

    let (s, v) = app.post("/v1/alerts/alertmanager", fixture("alertmanager-0.25-resolved.json"), &auth).await;
    assert_eq!((s, v["updated"].as_u64()), (StatusCode::OK, Some(1)), "{v}");
    let (_, inc) = app.get("/v1/incidents/1").await;
    assert_eq!(inc["state"], "resolved");
    assert_eq!(inc["alerts"][0]["ends_at"], "2026-11-21T19:50:37.443Z");
    assert_eq!(kinds(&inc), ["incident_opened", "alert_received", "alert_resolved", "incident_resolved"]);
    app.stop().await.unwrap();
}

async fn redelivery_changes_nothing(db: Db) {
    let Some(app) = TestApp::spawn(db, Config::default()).await else { return };
    let firing = fixture("alertmanager-0.25-firing.json");
    let resolved = fixture("alertmanager-0.25-resolved.json");
    app.post("/v1/alerts/alertmanager", firing.clone(), &[]).await;
    let (audit, incidents) = (app.audit_len().await, app.incident_count().await);
    for _ in 0..3 {
        let (s, v) = app.post("/v1/alerts/alertmanager", firing.clone(), &[]).await;
        assert_eq!((s, v["unchanged"].as_u64(), v["new"].as_u64()), (StatusCode::OK, Some(1), Some(0)), "{v}");
    }
    assert_eq!((app.audit_len().await, app.incident_count().await), (audit, incidents));

    app.post("/v1/alerts/alertmanager", resolved.clone(), &[]).await;
    let audit = app.audit_len().await;
    let (_, v) = app.post("/v1/alerts/alertmanager", resolved, &[]).await;
    assert_eq!(v["unchanged"].as_u64(), Some(1), "{v}");
    // A late copy of the firing notification after the resolve must not re-open anything.
    let (_, v) = app.post("/v1/alerts/alertmanager", firing, &[]).await;
    assert_eq!(v["stale"].as_u64(), Some(1), "{v}");
    assert_eq!(app.audit_len().await, audit);
    app.stop().await.unwrap();
}

async fn grafana_payload(db: Db) {
    let Some(app) = TestApp::spawn(db, Config::default()).await else { return };
    let (s, v) = app.post("/v1/alerts/grafana", fixture("grafana-firing.json"), &[]).await;
    assert_eq!((s, v["new"].as_u64()), (StatusCode::OK, Some(2)), "{v}");
    // No service or namespace label: each alert is its own incident.
    assert_eq!(v["incidents"], json!([1, 2]));
    let (_, inc) = app.get("/v1/incidents/1").await;
    let a = &inc["alerts"][0];
    assert_eq!(a["source"], "grafana");
    assert_eq!(a["fingerprint"], "c6eadffa33fcdf37");
    assert_eq!(a["links"]["dashboard"], "https://play.grafana.org/d/abc");
    assert!(a["links"]["silence"].as_str().unwrap().contains("alerting/silence/new"));
    assert_eq!(a["annotations"]["values"], "B=44.23943737541908, C=1");
    assert_eq!(a["starts_at"], "2021-10-12T07:51:03.157Z", "offset converted to UTC");
    // Alertmanager's version is not Grafana's.
    let (s, v) = app.post("/v1/alerts/grafana", fixture("alertmanager-0.25-firing.json"), &[]).await;
    assert_eq!((s, v["field"].as_str()), (StatusCode::BAD_REQUEST, Some("version")), "{v}");
    app.stop().await.unwrap();
}

async fn generic_format(db: Db) {
    let cfg = Config::parse("incidents: {resolve_grace: 0s}", "t").unwrap();
    let Some(app) = TestApp::spawn(db, cfg).await else { return };
    let firing = json!({"alerts": [{"name": "BackupFailed", "status": "firing", "labels": {"service": "billing"},
        "annotations": {"summary": "nightly backup failed"}, "url": "https://ci.example.com/jobs/1"}]});
    let (s, v) = app.post("/v1/alerts/generic", firing.to_string(), &[]).await;
    assert_eq!((s, v["new"].as_u64(), v["incidents"].clone()), (StatusCode::OK, Some(1), json!([1])), "{v}");
    // A periodic check re-sending "still failing" without a start time changes nothing.
    let (_, v) = app.post("/v1/alerts/generic", firing.to_string(), &[]).await;
    assert_eq!(v["unchanged"].as_u64(), Some(1), "{v}");
    let resolved =
        json!({"alerts": [{"name": "BackupFailed", "status": "resolved", "labels": {"service": "billing"}}]});
    let (_, v) = app.post("/v1/alerts/generic", resolved.to_string(), &[]).await;
    assert_eq!(v["updated"].as_u64(), Some(1), "{v}");
    let (_, v) = app.post("/v1/alerts/generic", resolved.to_string(), &[]).await;
    assert_eq!(v["unchanged"].as_u64(), Some(1), "{v}");
    // Failing again after the incident resolved: a new occurrence, a new incident.
    let (_, v) = app.post("/v1/alerts/generic", firing.to_string(), &[]).await;
    assert_eq!((v["updated"].as_u64(), v["incidents"].clone()), (Some(1), json!([2])), "{v}");

    let typo = json!({"alerts": [{"name": "X", "status": "firing", "severty": "high"}]});
    let (s, v) = app.post("/v1/alerts/generic", typo.to_string(), &[]).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["message"].as_str().unwrap().contains("unknown field `severty`"), "{v}");
    assert!(v["field"].as_str().unwrap().starts_with("alerts[0]"), "{v}");
    app.stop().await.unwrap();
}

async fn pagerduty_hmac(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        "incidents: {resolve_grace: 0s}\nintake:\n  pagerduty:\n    auth: {hmac: [{file: $DIR/new}, {file: $DIR/old}]}\n",
        &[("new", "pd-new-secret"), ("old", "pd-old-secret")],
    );
    let Some(app) = TestApp::spawn(db, cfg).await else { return };
    let post = |name: &'static str, sig: String| {
        let body = fixture(name);
        let app = &app;
        async move { app.post("/v1/alerts/pagerduty", body, &[("x-pagerduty-signature", &sig)]).await }
    };
    let sign = |secret: &str, name: &str| format!("v1={}", medic::intake::sign(secret, &fixture(name)));

    let (s, v) = post("pagerduty-triggered.json", sign("wrong", "pagerduty-triggered.json")).await;
    assert_eq!((s, v["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthorized")), "{v}");
    let (s, _) = post("pagerduty-triggered.json", "v1=zz".into()).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(app.audit_len().await, 0);

    // PagerDuty sends several signatures while it rotates; one valid is enough. The old secret
    // is still accepted during our own rotation.
    let both = format!("v1=00ff, {}", sign("pd-old-secret", "pagerduty-triggered.json"));
    let (s, v) = post("pagerduty-triggered.json", both).await;
    assert_eq!((s, v["new"].as_u64()), (StatusCode::OK, Some(1)), "{v}");
    let (_, inc) = app.get("/v1/incidents/1").await;
    assert_eq!(inc["title"], "A little bump in the road on API Service");
    assert_eq!(inc["alerts"][0]["labels"]["priority"], "P1");
    assert_eq!(inc["alerts"][0]["links"]["source"], "https://acme.pagerduty.com/incidents/PGR0VU2");

    let (s, v) = post("pagerduty-acknowledged.json", sign("pd-new-secret", "pagerduty-acknowledged.json")).await;
    assert_eq!((s, v["stored"].as_bool()), (StatusCode::ACCEPTED, Some(false)), "{v}");
    let (s, v) = post("pagerduty-resolved.json", sign("pd-new-secret", "pagerduty-resolved.json")).await;
    assert_eq!((s, v["updated"].as_u64()), (StatusCode::OK, Some(1)), "{v}");
    let (_, inc) = app.get("/v1/incidents/1").await;
    assert_eq!(inc["state"], "resolved");
    app.stop().await.unwrap();
}

async fn change_events(db: Db) {
    let Some(app) = TestApp::spawn(db, Config::default()).await else { return };
    let change = json!({"kind": "deploy", "service": "checkout", "summary": "Deploy v1.4.2", "author": "alice",
        "version": "v1.4.2", "at": "2026-11-21T14:20:00Z", "id": "gh-run-8812"});
    let (s, v) = app.post("/v1/changes", change.to_string(), &[]).await;
    assert_eq!((s, v["new"].as_u64()), (StatusCode::OK, Some(1)), "{v}");
    let (_, v) = app.post("/v1/changes", change.to_string(), &[]).await;
    assert_eq!(v["new"].as_u64(), Some(0), "re-delivery is a no-op: {v}");
    let records = app.store.audit_page(0, 100).await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].kind, "change_recorded");

    let (s, v) =
        app.post("/v1/changes", json!({"kind": "rollout", "service": "x", "summary": "y"}).to_string(), &[]).await;
    assert_eq!((s, v["field"].as_str()), (StatusCode::BAD_REQUEST, Some("kind")), "{v}");
    assert!(v["message"].as_str().unwrap().contains("expected one of `deploy`, `config`, `flag`"), "{v}");
    let (s, v) = app.post("/v1/changes", json!({"kind": "flag", "summary": "y"}).to_string(), &[]).await;
    assert_eq!((s, v["field"].as_str()), (StatusCode::BAD_REQUEST, Some("service")), "{v}");
    assert!(v["message"].as_str().unwrap().contains("missing field `service`"), "{v}");
    app.stop().await.unwrap();
}

/// Sends a chunked body (no Content-Length) of `len` bytes over a raw connection.
async fn post_chunked(base: &str, path: &str, token: &str, len: usize) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b' '; 1024];
    for _ in 0..len / 1024 {
        if s.write_all(b"400\r\n").await.is_err()
            || s.write_all(&chunk).await.is_err()
            || s.write_all(b"\r\n").await.is_err()
        {
            break;
        }
    }
    let _ = s.write_all(b"0\r\n\r\n").await;
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp).await;
    let text = String::from_utf8_lossy(&resp);
    text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

async fn bad_input_is_refused_and_stores_nothing(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        "intake:\n  max_body_bytes: 4096\n  alertmanager:\n    auth: {bearer: [{file: $DIR/new}, {file: $DIR/old}]}\n  grafana: {enabled: false}\n",
        &[("new", "tok-new"), ("old", "tok-old")],
    );
    let Some(app) = TestApp::spawn(db, cfg).await else { return };
    let good = fixture("alertmanager-0.25-firing.json");
    let path = "/v1/alerts/alertmanager";
    let auth = [("authorization", "Bearer tok-new")];

    let (s, v) = app.post(path, good.clone(), &[]).await;
    assert_eq!((s, v["message"].as_str()), (StatusCode::UNAUTHORIZED, Some("missing Authorization: Bearer token")));
    let (s, v) = app.post(path, good.clone(), &[("authorization", "Bearer tok-newer")]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(!v.to_string().contains("tok-new\""), "no secret in the reply: {v}");

    let (s, v) =
        app.post(path, good.clone(), &[("authorization", "Bearer tok-new"), ("content-type", "text/plain")]).await;
    assert_eq!((s, v["error"].as_str()), (StatusCode::UNSUPPORTED_MEDIA_TYPE, Some("unsupported_media_type")), "{v}");

    let (s, v) = app.post(path, vec![b' '; 5000], &auth).await;
    assert_eq!((s, v["error"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large")), "{v}");
    assert_eq!(post_chunked(&app.base, path, "tok-new", 64 * 1024).await, 413, "chunked bodies are limited too");

    let field = |body: Value| {
        let app = &app;
        async move {
            let (s, v) = app.post(path, body.to_string(), &auth).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
            (v["field"].as_str().unwrap().to_string(), v["message"].as_str().unwrap().to_string())
        }
    };
    let (s, v) = app.post(path, "not json", &auth).await;
    assert_eq!((s, v["field"].as_str()), (StatusCode::BAD_REQUEST, Some("(body)")), "{v}");
    // Truncated JSON names where parsing stopped.
    let (s, v) = app.post(path, "{\"version\": \"4\", \"alerts\": [", &auth).await;
    assert_eq!((s, v["field"].as_str()), (StatusCode::BAD_REQUEST, Some("alerts")), "{v}");
    assert!(v["message"].as_str().unwrap().contains("EOF while parsing"), "{v}");

    let mut p: Value = serde_json::from_slice(&good).unwrap();
    p["alerts"][0]["startsAt"] = json!("yesterday");
    let (f, m) = field(p).await;
    assert_eq!(f, "alerts[0].startsAt");
    assert!(m.contains("RFC 3339"), "{m}");

    let mut p: Value = serde_json::from_slice(&good).unwrap();
    p["alerts"][0]["status"] = json!("fired");
    assert_eq!(field(p).await.0, "alerts[0].status");

    let mut p: Value = serde_json::from_slice(&good).unwrap();
    p["version"] = json!("3");
    assert_eq!(field(p).await, ("version".to_string(), "expected \"4\", got \"3\"".to_string()));

    let mut p: Value = serde_json::from_slice(&good).unwrap();
    p["alerts"][0]["labels"] = json!("service=checkout");
    assert_eq!(field(p).await.0, "alerts[0].labels");

    // One bad alert in a notification: the whole notification is refused, the good one too.
    let mut p: Value = serde_json::from_slice(&good).unwrap();
    let mut second = p["alerts"][0].clone();
    second["labels"]["service"] = json!("check\u{0}out");
    second["fingerprint"] = json!("another");
    p["alerts"].as_array_mut().unwrap().push(second);
    let (f, m) = field(p).await;
    assert_eq!((f.as_str(), m.as_str()), ("alerts[1].labels.service", "expected no control characters"));

    let mut p: Value = serde_json::from_slice(&good).unwrap();
    p["alerts"][0].as_object_mut().unwrap().remove("startsAt");
    assert_eq!(field(p).await.0, "alerts[0].startsAt", "a missing field is named too");

    let mut p: Value = serde_json::from_slice(&good).unwrap();
    p["alerts"] = json!([]);
    assert_eq!(field(p).await.0, "alerts");

    let (s, v) = app.post("/v1/alerts/grafana", fixture("grafana-firing.json"), &[]).await;
    assert_eq!((s, v["error"].as_str()), (StatusCode::NOT_FOUND, Some("source_disabled")));

    assert_eq!(app.incident_count().await, 0);
    assert_eq!(app.audit_len().await, 0);

    // The old secret still works during rotation.
    let (s, _) = app.post(path, good, &[("authorization", "Bearer tok-old")]).await;
    assert_eq!(s, StatusCode::OK);
    app.stop().await.unwrap();
}

async fn hmac_on_generic(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "intake:\n  generic:\n    auth: {hmac: [{file: $DIR/s}]}\n", &[("s", "gen-secret")]);
    let Some(app) = TestApp::spawn(db, cfg).await else { return };
    let body = json!({"alerts": [{"name": "CronMissed", "status": "firing"}]}).to_string();
    let good = format!("sha256={}", medic::intake::sign("gen-secret", body.as_bytes()));
    let (s, _) = app.post("/v1/alerts/generic", body.clone(), &[("x-medic-signature", &good)]).await;
    assert_eq!(s, StatusCode::OK);
    let tampered = body.replace("CronMissed", "CronMissee");
    let (s, v) = app.post("/v1/alerts/generic", tampered, &[("x-medic-signature", &good)]).await;
    assert_eq!((s, v["message"].as_str()), (StatusCode::UNAUTHORIZED, Some("signature does not match the body")));
    let (s, v) = app.post("/v1/alerts/generic", body, &[]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(v["message"].as_str().unwrap().contains("X-Medic-Signature"), "{v}");
    app.stop().await.unwrap();
}

both_stores!(
    alertmanager_real_payloads,
    redelivery_changes_nothing,
    grafana_payload,
    generic_format,
    pagerduty_hmac,
    change_events,
    bad_input_is_refused_and_stores_nothing,
    hmac_on_generic,
);
