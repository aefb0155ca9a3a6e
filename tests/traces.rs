//! The trace backends against local fakes speaking their real HTTP APIs — Tempo's
//! `/api/search` and `/api/traces/{id}` (OTLP JSON) and Jaeger's `/api/traces` — and what
//! medic makes of what they answer: spans with their services and parents, dependencies seen in
//! traces joining the topology, and a diagnosis that names the slow service with the evidence
//! from its spans.

use medic::alert::{Alert, AlertStatus, Source};
use medic::context::http::Auth;
use medic::context::jaeger::Jaeger;
use medic::context::tempo::Tempo;
use medic::context::{self, Request, Sources, Traces};
use medic::diagnosis::{EvidenceKind, Input, diagnose};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// 1 trace every 30 s from T0 for 30 minutes through frontend → checkout → payments; from
/// minute 20 payments takes 400 ms of its own time instead of 2 ms, and fails one call in four.
const T0: i64 = 1_700_000_000_000;

struct Call {
    service: &'static str,
    id: String,
    parent: Option<String>,
    start_ns: i64,
    end_ns: i64,
    error: bool,
}

fn trace(i: i64) -> (String, Vec<Call>) {
    let start = T0 + i * 30_000;
    let slow = i >= 40;
    let db_us: i64 = if slow { 400_000 } else { 2_000 };
    let ns = |ms: i64| ms * 1_000_000;
    let id = format!("{:032x}", 0xabc000 + i);
    let calls = vec![
        Call {
            service: "frontend",
            id: format!("{i:08x}000000a1"),
            parent: None,
            start_ns: ns(start),
            end_ns: ns(start) + (db_us + 4_000) * 1000,
            error: false,
        },
        Call {
            service: "checkout",
            id: format!("{i:08x}000000b2"),
            parent: Some(format!("{i:08x}000000a1")),
            start_ns: ns(start) + 1_000_000,
            end_ns: ns(start) + 1_000_000 + (db_us + 1_000) * 1000,
            error: false,
        },
        Call {
            service: "payments",
            id: format!("{i:08x}000000c3"),
            parent: Some(format!("{i:08x}000000b2")),
            start_ns: ns(start) + 2_000_000,
            end_ns: ns(start) + 2_000_000 + db_us * 1000,
            error: slow && i % 4 == 0,
        },
    ];
    (id, calls)
}

fn otlp(calls: &[Call], trace_id: &str, old_field_names: bool) -> Value {
    let spans_of = |svc: &str| -> Vec<Value> {
        calls
            .iter()
            .filter(|c| c.service == svc)
            .map(|c| {
                json!({
                    "traceId": trace_id, "spanId": c.id, "parentSpanId": c.parent.clone().unwrap_or_default(),
                    "name": format!("GET /{svc}"), "kind": "SPAN_KIND_SERVER",
                    "startTimeUnixNano": c.start_ns.to_string(), "endTimeUnixNano": c.end_ns.to_string(),
                    "status": if c.error { json!({"code": "STATUS_CODE_ERROR", "message": "boom"}) } else { json!({}) },
                })
            })
            .collect()
    };
    let key = if old_field_names { "instrumentationLibrarySpans" } else { "scopeSpans" };
    let batches: Vec<Value> = ["frontend", "checkout", "payments"]
        .iter()
        .map(|svc| {
            let mut b = serde_json::Map::new();
            b.insert(
                "resource".into(),
                json!({"attributes": [{"key": "service.name", "value": {"stringValue": svc}}]}),
            );
            b.insert(key.into(), json!([{"scope": {"name": "otel"}, "spans": spans_of(svc)}]));
            Value::Object(b)
        })
        .collect();
    json!({ "batches": batches })
}

async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

type Q = axum::extract::Query<HashMap<String, String>>;

async fn fake_tempo(seen: Arc<Mutex<Vec<String>>>) -> String {
    let app = axum::Router::new()
        .route(
            "/api/search",
            axum::routing::get({
                let seen = seen.clone();
                move |axum::extract::Query(q): Q| {
                    let seen = seen.clone();
                    async move {
                        seen.lock().unwrap().push(format!("search tags={} start={} end={} limit={}", q["tags"], q["start"], q["end"], q["limit"]));
                        let (start, end): (i64, i64) = (q["start"].parse().unwrap(), q["end"].parse().unwrap());
                        let limit: usize = q["limit"].parse().unwrap();
                        let traces: Vec<Value> = (0..60)
                            .filter(|i| (start..=end).contains(&((T0 + i * 30_000) / 1000)))
                            .take(limit)
                            .map(|i| json!({"traceID": trace(i).0, "rootServiceName": "frontend", "rootTraceName": "GET /frontend", "startTimeUnixNano": ((T0 + i * 30_000) * 1_000_000).to_string(), "durationMs": 5}))
                            .collect();
                        axum::Json(json!({"traces": traces, "metrics": {"inspectedTraces": 60}}))
                    }
                }
            }),
        )
        .route(
            "/api/traces/{id}",
            axum::routing::get(move |axum::extract::Path(id): axum::extract::Path<String>| {
                let seen = seen.clone();
                async move {
                    use axum::http::StatusCode;
                    seen.lock().unwrap().push(format!("trace {id}"));
                    match (0..60).find(|i| trace(*i).0 == id) {
                        Some(i) => (StatusCode::OK, otlp(&trace(i).1, &id, i % 2 == 1).to_string()),
                        None => (StatusCode::NOT_FOUND, "trace not found".into()),
                    }
                }
            }),
        );
    serve(app).await
}

async fn fake_jaeger() -> String {
    let app = axum::Router::new().route(
        "/api/traces",
        axum::routing::get(move |axum::extract::Query(q): Q| async move {
            let (start, end): (i64, i64) = (q["start"].parse().unwrap(), q["end"].parse().unwrap());
            let data: Vec<Value> = (0..60)
                .filter(|i| (start..=end).contains(&((T0 + i * 30_000) * 1000)))
                .filter(|_| q["service"] == "frontend")
                .map(|i| {
                    let (id, calls) = trace(i);
                    let pid = |s: &str| match s { "frontend" => "p1", "checkout" => "p2", _ => "p3" };
                    json!({
                        "traceID": id,
                        "spans": calls.iter().map(|c| json!({
                            "traceID": id, "spanID": c.id, "operationName": format!("GET /{}", c.service),
                            "references": c.parent.as_ref().map(|p| vec![json!({"refType": "CHILD_OF", "traceID": id, "spanID": p})]).unwrap_or_default(),
                            "startTime": c.start_ns / 1000, "duration": (c.end_ns - c.start_ns) / 1000,
                            "tags": if c.error { vec![json!({"key": "error", "type": "bool", "value": true})] } else { vec![] },
                            "logs": [], "processID": pid(c.service), "warnings": null,
                        })).collect::<Vec<_>>(),
                        "processes": {"p1": {"serviceName": "frontend", "tags": []}, "p2": {"serviceName": "checkout", "tags": []}, "p3": {"serviceName": "payments", "tags": []}},
                        "warnings": null,
                    })
                })
                .collect();
            axum::Json(json!({"data": data, "total": 0, "limit": 0, "offset": 0, "errors": null}))
        }),
    );
    serve(app).await
}

#[tokio::test]
async fn tempo_search_then_each_trace() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let tempo = Tempo::new(&fake_tempo(seen.clone()).await, Auth::None, vec![], Duration::from_secs(5)).unwrap();
    let spans = tempo.spans("frontend", T0, T0 + 10 * 60_000, 5).await.unwrap();
    assert_eq!(spans.len(), 15, "5 traces of 3 spans");
    let sent = seen.lock().unwrap().clone();
    assert_eq!(
        sent[0],
        format!("search tags=service.name=frontend start={} end={} limit=5", T0 / 1000, (T0 + 10 * 60_000) / 1000)
    );
    assert_eq!(sent.len(), 6, "one search, then each trace: {sent:?}");
    let pay = spans.iter().find(|s| s.service == "payments").unwrap();
    assert_eq!((pay.duration_us, pay.start, pay.operation.as_str()), (2_000, T0 + 2, "GET /payments"));
    let checkout = spans.iter().find(|s| s.service == "checkout" && s.trace_id == pay.trace_id).unwrap();
    assert_eq!(pay.parent.as_deref(), Some(checkout.span_id.as_str()));
    assert!(
        spans.iter().any(|s| s.service == "payments" && s.trace_id.ends_with("abc001")),
        "older OTLP field names read too"
    );
    let edges = context::traces::edges(&spans);
    assert_eq!(edges.len(), 2);

    // Errors from the span status; a trace the search named but Tempo lost is an error naming it.
    let late = tempo.spans("frontend", T0 + 20 * 60_000, T0 + 30 * 60_000, 20).await.unwrap();
    assert_eq!(late.iter().filter(|s| s.error).count(), 5);
}

#[tokio::test]
async fn jaeger_traces_with_processes_and_references() {
    let jaeger = Jaeger::new(&fake_jaeger().await, Auth::None, vec![], Duration::from_secs(5)).unwrap();
    let spans = jaeger.spans("frontend", T0 + 20 * 60_000, T0 + 30 * 60_000, 100).await.unwrap();
    assert_eq!(spans.len(), 60);
    let pay: Vec<_> = spans.iter().filter(|s| s.service == "payments").collect();
    assert!(pay.iter().all(|s| s.duration_us == 400_000 && s.parent.is_some()));
    assert_eq!(pay.iter().filter(|s| s.error).count(), 5, "error=true tags");
    assert!(spans.iter().filter(|s| s.service == "frontend").all(|s| s.parent.is_none()), "roots have no CHILD_OF");
}

#[tokio::test]
async fn a_slow_service_seen_in_traces_is_named_with_the_evidence_from_its_spans() {
    for jaeger in [false, true] {
        let backend: Arc<dyn Traces> = if jaeger {
            Arc::new(Jaeger::new(&fake_jaeger().await, Auth::None, vec![], Duration::from_secs(5)).unwrap())
        } else {
            Arc::new(
                Tempo::new(
                    &fake_tempo(Arc::new(Mutex::new(Vec::new()))).await,
                    Auth::None,
                    vec![],
                    Duration::from_secs(5),
                )
                .unwrap(),
            )
        };
        let sources = Sources { traces: Some(backend), trace_limit: 100, ..Default::default() };
        let split = T0 + 20 * 60_000;
        let req = Request {
            services: vec!["frontend".into()],
            start: T0 - 60_000,
            end: T0 + 30 * 60_000,
            split,
            logs_start: T0 - 60_000,
            ..Default::default()
        };
        let ctx = context::gather(&sources, &req).await;
        assert!(ctx.unavailable.is_empty(), "{:?}", ctx.unavailable);
        assert_eq!(ctx.spans.len(), 180, "baseline and incident read apart, each span once");
        assert_eq!(ctx.dependencies, ["checkout", "payments"], "dependencies seen in traces join the topology");
        assert_eq!(ctx.queries.iter().filter(|q| q.kind == "traces").count(), 2);
        let labels = [("alertname", "SlowCheckout"), ("service", "frontend")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let alerts = [Alert {
            source: Source::Generic,
            fingerprint: "f1".into(),
            status: AlertStatus::Firing,
            labels,
            annotations: Default::default(),
            starts_at: split,
            ends_at: None,
            links: Default::default(),
        }];
        let d = diagnose(&Input {
            incident_id: 1,
            title: "t",
            alerts: &alerts,
            context: &ctx,
            runbooks: &[],
            golden: &[],
            history: &[],
        });
        let top = d.top();
        assert_eq!(top.service.as_deref(), Some("payments"), "{top:#?}");
        assert!(top.statement.contains("frontend's alert is likely a symptom"), "{}", top.statement);
        let ev = top.evidence.iter().find(|e| e.kind == EvidenceKind::Trace).expect("trace evidence");
        assert!(
            ev.text.contains("spans of payments spent 400.0 ms in the service itself at the median"),
            "{}",
            ev.text
        );
        assert!(
            ev.text.contains("errors 25% after, 0% before") && ev.text.contains("checkout → payments: 20 calls"),
            "{}",
            ev.text
        );
        assert_eq!(d.suspects[0].service, "payments");
    }
}
