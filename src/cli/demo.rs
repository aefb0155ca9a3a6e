//! `medic demo`: the whole loop, locally, on a bundled scenario (a service whose connection pool
//! leaks after a deploy). It runs `serve`'s own pipeline — the server, the responder, the
//! notifier and outbox, the click path and the executor — with three differences only: the
//! recorded context backend as its sources, the console as its chat platform (clicks typed at
//! the terminal), and a small Kubernetes API server served locally
//! ([`crate::scenario::cluster::LocalCluster`]) that medic's real Kubernetes client rolls the
//! Deployment back on; the rollback switches the recorded world to its "after" state so the
//! post-check can verify the fix. A fresh SQLite store in a temporary directory; fed over HTTP as
//! Alertmanager and CI would. No accounts, no network.

use crate::chat::console::Console;
use crate::config::Config;
use crate::runbook::Runbook;
use crate::scenario::Scenario;
use crate::scenario::cluster::LocalCluster;
use crate::scenario::recorded::Recorded;
use crate::server::Parts;
use crate::time::{Clock, SystemClock, rfc3339};
use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

const SCENARIO: &str = include_str!("../../examples/demo/scenario.yaml");
const RUNBOOKS: [&str; 7] = [
    include_str!("../../runbooks/rollback-bad-deploy.yaml"),
    include_str!("../../runbooks/restart-crashlooping.yaml"),
    include_str!("../../runbooks/scale-out-saturation.yaml"),
    include_str!("../../runbooks/disk-cleanup.yaml"),
    include_str!("../../runbooks/stuck-queue-consumer.yaml"),
    include_str!("../../runbooks/idle-fleet-scale-to-zero.yaml"),
    include_str!("../../runbooks/human-led-data-loss-risk.yaml"),
];

pub async fn run(auto_approve: bool) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("medic-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let result = scenario(&dir, auto_approve).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
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
    let console = Arc::new(Console::new(auto_approve, Box::new(std::io::stdout()))?);
    // The world, anchored at this moment, and the local cluster its rollback reaches.
    let mut scenario: Scenario = serde_norway::from_str(SCENARIO).context("bundled scenario")?;
    scenario.now = rfc3339(SystemClock.now());
    let world = scenario.world().map_err(anyhow::Error::msg)?;
    let recorded = Arc::new(Recorded::new(world.clone()));
    let cluster = LocalCluster::start(&world.kubernetes, &world.pods).await?;
    let r = recorded.clone();
    cluster.on_change(move || r.act(SystemClock.now()));

    // `serve`'s own configuration: the shipped runbooks, the console user in every approver
    // group, the local cluster as the one Kubernetes actions change (its namespaces allowed).
    let runbooks_dir = dir.join("runbooks");
    std::fs::create_dir_all(&runbooks_dir)?;
    let user = crate::chat::console::identity();
    let mut config = Config::default();
    for text in RUNBOOKS {
        let rb: Runbook = serde_norway::from_str(text)?;
        for g in &rb.approval.groups {
            config.responders.groups.insert(g.clone(), vec![user.0.clone()]);
        }
        std::fs::write(runbooks_dir.join(format!("{}.yaml", rb.id)), serde_norway::to_string(&rb)?)?;
    }
    config.runbooks = Some(runbooks_dir);
    config.incidents.resolve_grace = Duration::from_secs(2);
    config.executor.kubernetes = Some(crate::executor::kubernetes::Config {
        namespaces: world.kubernetes.iter().map(|w| w.namespace.clone()).collect(),
        url: Some(cluster.url.clone()),
        ..Default::default()
    });
    config.executor.owner = Some("medic-demo".into());
    let url = format!("sqlite://{}", dir.join("medic.db").display());
    let store = crate::store::open(&url, 4).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (clicks_tx, clicks_rx) = tokio::sync::oneshot::channel();
    let parts = Parts {
        sources: Some((crate::scenario::run::sources(&world, recorded.clone())?, world.golden.clone())),
        platforms: vec![console.clone()],
        clicks: Some(clicks_tx),
    };
    let server_store = store.clone();
    let server = tokio::spawn(async move {
        crate::server::run_with(
            listener,
            &config,
            server_store,
            Arc::new(SystemClock),
            async {
                let _ = stopped.await;
            },
            parts,
        )
        .await
    });
    let clicks = clicks_rx.await.context("the server started")?;

    println!(
        "medic demo — {}\n  store {url} (temporary) · medic {base} · Kubernetes API {} (local)\n",
        world.name, cluster.url
    );
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
            "CI reported: {} of {}{}{} at {}",
            c.kind.as_str(),
            c.service,
            c.version.as_deref().map(|v| format!(" {v}")).unwrap_or_default(),
            c.author.as_deref().map(|a| format!(" by {a}")).unwrap_or_default(),
            rfc3339(c.at)
        );
    }
    let r = post("/v1/alerts/alertmanager", alertmanager_payload(&world.alerts, None)).await?;
    let id = r["incidents"][0].as_i64().context("the alert opened an incident")?;
    println!("Alertmanager sent {} alert(s) → incident #{id}\n", world.alerts.len());

    // The responder investigates, proposes the plan and posts the message, as in production.
    let diagnosed = wait(20, || crate::chat::latest_diagnosis(store.as_ref(), id)).await?;
    let Some((_, diagnosis)) = diagnosed else { bail!("no diagnosis of incident #{id} within 20 s") };
    drained(store.as_ref()).await?;
    let Some(status) = store.plan_status(id).await? else {
        println!("\nNo plan to approve.");
        return finish(store, stop, server, id).await;
    };
    if !auto_approve {
        questions(&base, id).await?;
    }
    let hash = status.plan.plan.hash.clone();
    // The terminal's click goes through the click path Slack and Discord use.
    let groups = {
        let mut g = crate::approval::Groups::default();
        for group in &status.plan.plan.approval.groups {
            g.members.insert(group.clone(), vec![user.clone()]);
        }
        g
    };
    let Some((decision, reason)) = console.ask(&hash, &crate::chat::more_evidence(&diagnosis)).await? else {
        println!("no answer: the plan stays proposed; nothing runs");
        return finish(store, stop, server, id).await;
    };
    if let Some(refusal) = clicks.decide(id, &hash, user.clone(), decision, "console", reason, &groups).await? {
        println!("{refusal}");
    }
    // The executor runs in the background, as after a Slack click; wait for its outcome.
    let ran = wait(60, || async {
        let s = store.plan_status(id).await?;
        Ok(s.and_then(|s| s.execution).filter(|(state, _)| state != "running").map(|_| ()))
    })
    .await?;
    if ran.is_some() {
        // The fix holds: Alertmanager resolves the alert, and the incident resolves.
        post("/v1/alerts/alertmanager", alertmanager_payload(&world.alerts, Some(SystemClock.now()))).await?;
        let resolved = wait(15, || async {
            let state = store.incident(id).await?.map(|(i, _)| i.state);
            Ok((state == Some(crate::incident::IncidentState::Resolved)).then_some(()))
        })
        .await?;
        drained(store.as_ref()).await?;
        let state = if resolved.is_some() { "resolved" } else { "not resolved yet" };
        println!("  #{id} ↳ alert resolved; incident #{id} is {state}");
    }
    finish(store, stop, server, id).await
}

/// What medic would have sent a person had the plan failed (`paging`, `tickets`: none
/// configured in the demo): the PagerDuty event and the ticket, as `page::watch` builds them.
async fn would_page(store: &dyn crate::store::Store, id: i64) -> Result<()> {
    let why = "plan failed at a step and was rolled back; a person must take over";
    let page = crate::page::page_for(store, id, why, Some("https://medic.example.com")).await?;
    println!(
        "\nWhen medic cannot help (a plan fails, no runbook matches, an approval waits), it pages a person. \
         For a failed plan on this incident, with paging.pagerduty configured (POST /v2/enqueue):\n"
    );
    println!("{}", serde_json::to_string_pretty(&crate::page::pagerduty::event(&page))?);
    if let Some(t) = crate::ticket::for_incident(store, id, "a plan failed and a person must take over").await? {
        println!("\n… and open a ticket (tickets.github, tickets.jira): {}", t.title);
        let lines: Vec<&str> = t.body.lines().take(8).collect();
        println!("{}\n  …", lines.iter().map(|l| format!("  {l}")).collect::<Vec<_>>().join("\n"));
    }
    Ok(())
}

/// At a terminal (and without `--yes`): questions about the incident, answered by the server's
/// `POST /v1/ask` — what Slack and Discord users ask in the thread — until an empty line.
async fn questions(base: &str, id: i64) -> Result<()> {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        return Ok(());
    }
    println!(
        "\nAsk medic about incident #{id} (e.g. \"what changed?\", \"show checkout latency\", \"help\"); an empty line goes on."
    );
    loop {
        print!("ask> ");
        std::io::stdout().flush()?;
        let line = tokio::task::spawn_blocking(|| {
            let mut s = String::new();
            std::io::stdin().lock().read_line(&mut s).map(|_| s)
        })
        .await??;
        let q = line.trim();
        if q.is_empty() {
            return Ok(());
        }
        let answer = super::ask::remote(base, None, q, Some(id)).await?;
        println!("{}\n", crate::chat::display(&answer["answer"]));
    }
}

/// Polls `f` every 100 ms until it gives something, for at most `secs`.
async fn wait<T, F, Fut>(secs: u64, mut f: F) -> Result<Option<T>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await? {
            return Ok(Some(v));
        }
        if std::time::Instant::now() > deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the console has shown everything queued for it.
async fn drained(store: &dyn crate::store::Store) -> Result<()> {
    wait(10, || async {
        let health = store.outbox_health(0).await?;
        Ok(health.iter().all(|h| h.platform != "console" || h.pending == 0).then_some(()))
    })
    .await?;
    Ok(())
}

async fn finish(
    store: Arc<dyn crate::store::Store>,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<Result<()>>,
    id: i64,
) -> Result<()> {
    let _ = stop.send(());
    server.await.context("server task")??;
    would_page(store.as_ref(), id).await?;
    let out = std::env::temp_dir().join(format!("medic-demo-{}-export", std::process::id()));
    let files = super::export(store.as_ref(), id, &out).await?;
    println!("\nAudit trail of incident #{id} (medic audit export --incident {id}):\n");
    print!("{}", std::fs::read_to_string(&files[1])?);
    let _ = std::fs::remove_dir_all(&out);
    print!("\nmedic audit verify: ");
    super::verify(store.as_ref(), None).await?;
    store.close().await;
    Ok(())
}
