//! `medic demo`: the whole loop, locally, on a bundled scenario (a service whose connection pool
//! leaks after a deploy). A fresh SQLite store in a temporary directory; medic's real server on
//! a loopback port, fed over HTTP as Alertmanager and CI would; the recorded context backend;
//! the console chat adapter; and a small deploy API served locally, whose rollback switches the
//! recorded world to its "after" state so the post-check can verify the fix. Nothing to sign up
//! for, no network.

use crate::approval::{Click, Groups, Identity, Verdict};
use crate::chat::{Chat, IncidentView, console::Console};
use crate::config::Config;
use crate::context::{Sources, recorded::Recorded};
use crate::executor::{Executor, Limits, Outcome};
use crate::runbook::Runbook;
use crate::scenario::Scenario;
use crate::time::{Clock, SystemClock, rfc3339};
use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

const SCENARIO: &str = include_str!("../examples/demo/scenario.yaml");
const RUNBOOKS: [&str; 7] = [
    include_str!("../runbooks/rollback-bad-deploy.yaml"),
    include_str!("../runbooks/restart-crashlooping.yaml"),
    include_str!("../runbooks/scale-out-saturation.yaml"),
    include_str!("../runbooks/disk-cleanup.yaml"),
    include_str!("../runbooks/stuck-queue-consumer.yaml"),
    include_str!("../runbooks/idle-fleet-scale-to-zero.yaml"),
    include_str!("../runbooks/human-led-data-loss-risk.yaml"),
];

pub async fn run(auto_approve: bool) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("medic-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let result = scenario(&dir, auto_approve).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// The demo's deploy API: `POST /v1/services/{service}/rollback` rolls back (the world switches
/// to its "after" state); anything else is acknowledged.
async fn deploy_api(recorded: Arc<Recorded>) -> Result<String> {
    let app = axum::Router::new().route(
        "/v1/services/{service}/{op}",
        axum::routing::post(move |axum::extract::Path((service, op)): axum::extract::Path<(String, String)>| {
            let recorded = recorded.clone();
            async move {
                if op == "rollback" {
                    recorded.act(SystemClock.now());
                }
                axum::Json(json!({"service": service, "operation": op, "status": "done"}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

fn alertmanager_payload(alerts: &[crate::alert::Alert], resolved_at: Option<i64>) -> Value {
    let status = if resolved_at.is_some() { "resolved" } else { "firing" };
    json!({
        "version": "4", "status": status, "receiver": "medic", "groupKey": "{}:{service=\"checkout\"}",
        "truncatedAlerts": 0, "externalURL": "http://alertmanager.demo",
        "alerts": alerts.iter().map(|a| json!({
            "status": status, "labels": a.labels, "annotations": a.annotations,
            "startsAt": rfc3339(a.starts_at),
            "endsAt": resolved_at.map(rfc3339).unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
            "generatorURL": "http://prometheus.demo/graph", "fingerprint": a.fingerprint,
        })).collect::<Vec<_>>(),
    })
}

async fn scenario(dir: &std::path::Path, auto_approve: bool) -> Result<()> {
    let chat = Console::new(auto_approve, Box::new(std::io::stdout()))?;
    let mut config = Config::default();
    config.incidents.resolve_grace = Duration::from_secs(2);
    let url = format!("sqlite://{}", dir.join("medic.db").display());
    let store = crate::store::open(&url, 4).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server_store = store.clone();
    let server = tokio::spawn(async move {
        crate::server::run(listener, &config, server_store, Arc::new(SystemClock), async {
            let _ = stopped.await;
        })
        .await
    });

    // The world, anchored at this moment.
    let mut scenario: Scenario = serde_norway::from_str(SCENARIO).context("bundled scenario")?;
    scenario.now = rfc3339(SystemClock.now());
    let world = scenario.world().map_err(anyhow::Error::msg)?;
    let recorded = Arc::new(Recorded::new(world.clone()));
    let api = deploy_api(recorded.clone()).await?;
    let mut runbooks: Vec<Runbook> = RUNBOOKS.iter().map(|t| serde_norway::from_str(t)).collect::<Result<_, _>>()?;
    for rb in &mut runbooks {
        if rb.vars.contains_key("deploy_api") {
            rb.vars.insert("deploy_api".into(), format!("http://{api}"));
        }
    }

    println!("medic demo — {}\n  store {url} (temporary) · medic {base} · deploy API http://{api}\n", world.name);
    let http = crate::telemetry::http_client_builder().build()?;
    let post = |path: &'static str, body: Value| {
        let req = http.post(format!("{base}{path}")).json(&body);
        async move {
            let resp = req.send().await.with_context(|| format!("POST {path}"))?;
            let status = resp.status();
            let v: Value = resp.json().await?;
            if !status.is_success() {
                bail!("POST {path}: {status} {v}");
            }
            Ok::<Value, anyhow::Error>(v)
        }
    };
    for c in &world.changes {
        let change = json!({"kind": c.kind.as_str(), "service": c.service, "summary": c.summary, "author": c.author,
                            "version": c.version, "at": rfc3339(c.at), "id": format!("ci-{}", c.at)});
        post("/v1/changes", change).await?;
        println!(
            "CI reported: {} of {} {} by {} at {}",
            c.kind.as_str(),
            c.service,
            c.version.as_deref().unwrap_or(""),
            c.author.as_deref().unwrap_or("?"),
            rfc3339(c.at)
        );
    }
    let r = post("/v1/alerts/alertmanager", alertmanager_payload(&world.alerts, None)).await?;
    let id = r["incidents"][0].as_i64().context("the alert opened an incident")?;
    println!("Alertmanager sent {} alert(s) → incident #{id}\n", world.alerts.len());
    let (incident, _) = store.incident(id).await?.context("the incident exists")?;

    // Context, diagnosis and plan.
    let sources = Sources::all(recorded.clone(), Duration::from_secs(5));
    let outcome = crate::scenario::run::run_with(&world, &runbooks, &sources, (id, &incident.title)).await;
    let requested_by = Identity("medic".into());
    let mut expires = None;
    if let Some(Ok(plan)) = &outcome.plan {
        store.propose(plan, &requested_by, SystemClock.now()).await?;
        expires = store.plan(&plan.hash).await?.map(|p| p.expires_at);
    }
    let paused = store.paused().await?;
    chat.show_incident(&IncidentView::new(
        &incident,
        &outcome.diagnosis,
        outcome.plan.as_ref(),
        expires,
        paused.as_ref(),
    ))
    .await?;

    let Some(Ok(plan)) = &outcome.plan else {
        println!("\nNo plan to approve.");
        return finish(store, stop, server, id).await;
    };
    // Approval: the console user, in the runbook's first approver group.
    let user = crate::chat::console::identity();
    let groups = Groups {
        members: plan.approval.groups.iter().map(|g| (g.clone(), vec![user.clone()])).collect(),
        default_approvers: Vec::new(),
    };
    // Guardrails, as they stand at the moment of the click.
    let budget = runbooks.iter().find(|r| r.id == plan.runbook).and_then(|r| r.attempt_budget);
    let assessment = crate::store::guardrails_now(
        store.as_ref(),
        &crate::guardrails::GuardrailConfig::default(),
        id,
        outcome.diagnosis.service.as_deref(),
        &world.changes,
        budget,
        SystemClock.now(),
    )
    .await?;
    for w in &assessment.warnings {
        chat.thread(id, &format!("warning: {w}")).await?;
    }
    let Some((decision, reason)) = chat.ask(&plan.hash, &crate::chat::more_evidence(&outcome.diagnosis)).await? else {
        chat.thread(id, "no answer: the plan stays proposed; nothing runs").await?;
        return finish(store, stop, server, id).await;
    };
    let click = Click { who: user.clone(), decision, via: "console".into(), at: SystemClock.now(), reason };
    let (verdict, approved) = store.decide(&plan.hash, &click, &groups, assessment.refusal()).await?;
    match (&verdict, approved) {
        (Verdict::Approved { approvers }, Some(approved)) => {
            let names: Vec<String> = approvers.iter().map(|a| a.0.clone()).collect();
            chat.thread(id, &format!("plan {} approved by {}", &plan.hash[..12], names.join(", "))).await?;
            let executor = Executor::new(
                store.clone(),
                recorded.clone(),
                Arc::new(SystemClock),
                Limits { allowed_hosts: vec![api.clone()], ..Default::default() },
                "medic-demo",
            );
            let outcome = executor.execute(approved).await?;
            for r in store.audit_for_incident(id).await? {
                if matches!(r.kind.as_str(), "step_succeeded" | "step_failed" | "step_rolled_back") {
                    chat.thread(id, &format!("{}: {}", r.kind.replace('_', " "), crate::audit::summarise(&r.data)))
                        .await?;
                }
            }
            match outcome {
                Outcome::Succeeded => chat.thread(id, "verified: every post-check passed").await?,
                Outcome::RolledBack { step, reason } => {
                    chat.thread(id, &format!("rolled back after {step}: {reason}")).await?
                }
                Outcome::AlreadyClaimed => chat.thread(id, "already executed").await?,
            }
            // The fix holds: Alertmanager resolves the alert, and the incident resolves.
            post("/v1/alerts/alertmanager", alertmanager_payload(&world.alerts, Some(SystemClock.now()))).await?;
            for _ in 0..50 {
                if store.incident(id).await?.is_some_and(|(i, _)| i.state == crate::incident::IncidentState::Resolved) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let state = store.incident(id).await?.map(|(i, _)| i.state.as_str()).unwrap_or("?");
            chat.thread(id, &format!("alert resolved; incident #{id} is {state}")).await?;
        }
        (Verdict::Rejected, _) => {
            let why = click.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default();
            chat.thread(id, &format!("plan rejected by {user}{why}; nothing runs")).await?
        }
        (other, _) => chat.thread(id, &format!("not approved: {other:?}")).await?,
    }
    finish(store, stop, server, id).await
}

async fn finish(
    store: Arc<dyn crate::store::Store>,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<Result<()>>,
    id: i64,
) -> Result<()> {
    let _ = stop.send(());
    server.await.context("server task")??;
    let out = std::env::temp_dir().join(format!("medic-demo-{}-export", std::process::id()));
    let files = crate::cli::export(store.as_ref(), id, &out).await?;
    println!("\nAudit trail of incident #{id} (medic audit export --incident {id}):\n");
    print!("{}", std::fs::read_to_string(&files[1])?);
    let _ = std::fs::remove_dir_all(&out);
    print!("\nmedic audit verify: ");
    crate::cli::verify(store.as_ref(), None).await?;
    store.close().await;
    Ok(())
}
