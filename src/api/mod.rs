//! The JSON API — incidents (read-only) and `POST /v1/ask` — and the JSON views shared with
//! `medic audit export`. Every route here takes `Authorization: Bearer` with one of
//! `api.bearer` (required unless medic listens on loopback only): [`auth`], a leaf that
//! imports neither the server nor the config.

use crate::audit::AuditRecord;
use crate::incident::{AlertRow, Incident, IncidentState};
use crate::server::App;
use crate::store::IncidentFilter;
use crate::time::rfc3339;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

pub mod auth;

/// Longest question `POST /v1/ask` takes.
pub const MAX_QUESTION: usize = 4000;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AskBody {
    pub question: String,
    #[serde(default)]
    pub incident: Option<i64>,
}

/// `POST /v1/ask {"question": "…", "incident": 12}` → `{"intent", "slots", "answer", "evidence", …}`.
/// The API is not a person: it may ask anything read-only; pausing is refused (use chat or
/// `medic pause`).
pub async fn ask(State(app): State<Arc<App>>, body: axum::body::Bytes) -> Response {
    let body: AskBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return bad_request(format!("expected {{\"question\": \"…\", \"incident\": N}}: {e}")),
    };
    if body.question.chars().count() > MAX_QUESTION {
        return bad_request(format!("question: longer than {MAX_QUESTION} characters"));
    }
    let q = crate::ask::answer::Question {
        text: body.question,
        incident: body.incident,
        who: crate::approval::Identity("api".into()),
        via: "api".into(),
        groups: Default::default(),
        addressed: true,
    };
    match app.asker.ask(&q).await {
        Ok(a) => Json(a.to_json(app.asker.offset)).into_response(),
        Err(e) => internal(e),
    }
}

pub fn alert_json(r: &AlertRow) -> Value {
    let a = &r.alert;
    json!({
        "key": a.key(),
        "source": a.source.as_str(),
        "fingerprint": a.fingerprint,
        "status": a.status.as_str(),
        "labels": a.labels,
        "annotations": a.annotations,
        "links": a.links,
        "starts_at": rfc3339(a.starts_at),
        "ends_at": a.ends_at.map(rfc3339),
        "flapping": r.flapping,
    })
}

/// One audit record as the API and the export show it.
pub fn record_json(r: &AuditRecord) -> Value {
    json!({
        "seq": r.seq,
        "at": rfc3339(r.at),
        "kind": r.kind,
        "actor": r.actor,
        "data": serde_json::from_str::<Value>(&r.data).unwrap_or(Value::String(r.data.clone())),
        "hash": r.hash,
    })
}

fn bad_request(msg: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": "invalid_query", "message": msg}))).into_response()
}

fn internal(e: anyhow::Error) -> Response {
    tracing::error!(error = %format!("{e:#}"), "incident API failed");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"error": "unavailable", "message": "the store could not answer; retry later"})),
    )
        .into_response()
}

/// `GET /v1/incidents?state=open|resolving|resolved&limit=50&before=ID`, newest first.
pub async fn list(State(app): State<Arc<App>>, Query(q): Query<HashMap<String, String>>) -> Response {
    let mut f = IncidentFilter { limit: 50, ..Default::default() };
    for (k, v) in &q {
        match k.as_str() {
            "state" => match IncidentState::parse(v) {
                Some(s) => f.state = Some(s),
                None => return bad_request(format!("state: expected open, resolving or resolved, got {v:?}")),
            },
            "limit" => match v.parse::<i64>() {
                Ok(n) if (1..=1000).contains(&n) => f.limit = n,
                _ => return bad_request(format!("limit: expected a number from 1 to 1000, got {v:?}")),
            },
            "before" => match v.parse::<i64>() {
                Ok(n) => f.before = Some(n),
                Err(_) => return bad_request(format!("before: expected an incident id, got {v:?}")),
            },
            other => return bad_request(format!("unknown query parameter {other:?}; expected state, limit or before")),
        }
    }
    match app.store.incidents(&f).await {
        Ok(list) => Json(json!({"incidents": list.iter().map(Incident::to_json).collect::<Vec<_>>()})).into_response(),
        Err(e) => internal(e),
    }
}

/// `GET /v1/runbooks`: each runbook's declared ceiling, earned level, streak, verified and
/// failed runs, median time from alert to verified fix, last outcomes and shadow record.
pub async fn runbooks(State(app): State<Arc<App>>) -> Response {
    match app.store.runbook_stats(true).await {
        Ok(stats) => Json(runbooks_json(&stats, &app.asker.runbooks, app.grant_after)).into_response(),
        Err(e) => internal(e),
    }
}

/// The runbooks' records as `GET /v1/runbooks` and `medic runbooks --format json` show them:
/// every loaded runbook, and any other with a record in the store.
pub fn runbooks_json(
    stats: &[crate::store::RunbookStats],
    runbooks: &[crate::runbook::Runbook],
    grant_after: u32,
) -> Value {
    use crate::runbook::Autonomy;
    let mut ids: Vec<&str> = runbooks.iter().map(|r| r.id.as_str()).collect();
    ids.extend(stats.iter().map(|s| s.record.runbook.as_str()).filter(|id| !runbooks.iter().any(|r| r.id == *id)));
    let rows: Vec<Value> = ids
        .into_iter()
        .map(|id| {
            let rb = runbooks.iter().find(|r| r.id == id);
            let s = stats.iter().find(|s| s.record.runbook == id).cloned().unwrap_or_default();
            let ceiling = rb.map(|r| r.autonomy);
            let level = match ceiling {
                Some(Autonomy::Suggest) => "suggest",
                Some(Autonomy::Auto) if s.record.auto => "auto",
                _ => "approve",
            };
            json!({
                "runbook": id,
                "loaded": rb.is_some(),
                "tier": rb.map(|r| r.tier),
                "ceiling": ceiling.map(Autonomy::as_str),
                "level": level,
                "streak": s.record.streak,
                "grant_after": grant_after,
                "verified": s.record.verified,
                "failed": s.record.failed,
                "last_verified_incident": s.record.last_incident,
                "last_approved_by": s.record.last_by,
                "level_changed_because": s.record.reason,
                "median_fix_secs": s.median_fix_secs,
                "last_outcomes": s.last_outcomes,
                "shadow": {"handled_by_people": s.shadow_incidents, "resolved_alone": s.shadow_resolved_alone},
            })
        })
        .collect();
    json!({"runbooks": rows})
}

/// A page of an incident's alerts or timeline: at most `limit` items after the cursor.
struct Page {
    limit: usize,
    after: Option<String>,
}

/// Reads `{name}_limit` (1 to 1000, default `default`) and `{name}_after` (a cursor).
fn page(q: &HashMap<String, String>, name: &str, default: usize) -> Result<Page, String> {
    let limit = match q.get(&format!("{name}_limit")) {
        None => default,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=1000).contains(&n) => n,
            _ => return Err(format!("{name}_limit: expected a number from 1 to 1000, got {v:?}")),
        },
    };
    Ok(Page { limit, after: q.get(&format!("{name}_after")).cloned() })
}

/// `GET /v1/incidents/{id}?alerts_limit=100&alerts_after=KEY&timeline_limit=500&timeline_after=SEQ`:
/// the incident, a page of its alerts (ordered by key) and of its timeline (by sequence), each
/// with the cursor of the next page (`alerts_next`, `timeline_next`; null on the last), and its
/// latest diagnosis. A storm's incident answers in pages, not in one response of megabytes.
pub async fn detail(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Ok(id) = id.parse::<i64>() else { return bad_request(format!("incident id: expected a number, got {id:?}")) };
    if let Some(k) =
        q.keys().find(|k| !matches!(k.as_str(), "alerts_limit" | "alerts_after" | "timeline_limit" | "timeline_after"))
    {
        return bad_request(format!(
            "unknown query parameter {k:?}; expected alerts_limit, alerts_after, timeline_limit or timeline_after"
        ));
    }
    let (alerts_page, timeline_page) = match (page(&q, "alerts", 100), page(&q, "timeline", 500)) {
        (Ok(a), Ok(t)) => (a, t),
        (Err(e), _) | (_, Err(e)) => return bad_request(e),
    };
    let after_seq = match timeline_page.after.as_deref().map(str::parse::<i64>) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => return bad_request("timeline_after: expected a sequence number".to_string()),
    };
    let found = app.store.incident_alerts(id, alerts_page.after.as_deref(), alerts_page.limit as i64 + 1).await;
    let (inc, mut shown, total) = match found {
        Ok(Some(x)) => x,
        Ok(None) => {
            return (
                StatusCode::NOT_FOUND,
                Json(json!({"error": "not_found", "message": format!("no incident {id}")})),
            )
                .into_response();
        }
        Err(e) => return internal(e),
    };
    match app.store.audit_for_incident(id).await {
        Ok(records) => {
            let mut v = inc.to_json();
            let more = shown.len() > alerts_page.limit;
            shown.truncate(alerts_page.limit);
            v["alerts"] = json!(shown.iter().map(alert_json).collect::<Vec<_>>());
            v["alerts_total"] = json!(total);
            v["alerts_next"] = json!(more.then(|| shown.last().map(|r| r.alert.key())).flatten());
            let after: Vec<&AuditRecord> = records.iter().filter(|r| r.seq > after_seq).collect();
            let later = &after[..after.len().min(timeline_page.limit)];
            let more = after.len() > later.len();
            v["timeline"] = json!(later.iter().map(|r| record_json(r)).collect::<Vec<_>>());
            v["timeline_next"] = json!(more.then(|| later.last().map(|r| r.seq.to_string())).flatten());
            // The latest diagnosis, as recorded (the responder writes one per investigation).
            v["diagnosis"] = records
                .iter()
                .rev()
                .find(|r| r.kind == "diagnosed")
                .and_then(|r| serde_json::from_str(&r.data).ok())
                .unwrap_or(serde_json::Value::Null);
            Json(v).into_response()
        }
        Err(e) => internal(e),
    }
}
