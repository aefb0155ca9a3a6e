//! `medic demo`: the whole loop, locally, on a bundled scenario — a fresh SQLite store in a
//! temporary directory, the real server on a loopback port, and the scenario's webhooks posted
//! to it over HTTP, exactly as Alertmanager and CI would. Nothing to sign up for, nothing to run.

use crate::config::Config;
use crate::time::SystemClock;
use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

const CHANGE: &str = include_str!("../examples/demo/change.json");
const FIRING: &str = include_str!("../examples/demo/firing.json");
const RESOLVED: &str = include_str!("../examples/demo/resolved.json");

pub async fn run() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("medic-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let result = scenario(&dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn scenario(dir: &std::path::Path) -> Result<()> {
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

    println!("medic demo: the loop on a bundled scenario");
    println!("  store   {url} (temporary)\n  server  {base}\n");
    let http = reqwest::Client::new();
    let post = |path: &'static str, body: &'static str| {
        let req = http.post(format!("{base}{path}")).header("content-type", "application/json").body(body);
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

    let r = post("/v1/changes", CHANGE).await?;
    println!("1. CI reports a deploy of checkout           POST /v1/changes              -> {r}");
    let r = post("/v1/alerts/alertmanager", FIRING).await?;
    println!("2. Alertmanager sends 3 firing alerts         POST /v1/alerts/alertmanager  -> {r}");
    let r = post("/v1/alerts/alertmanager", FIRING).await?;
    println!("3. Alertmanager re-sends the same notification                              -> {r}");

    let list: Value = http.get(format!("{base}/v1/incidents")).send().await?.json().await?;
    println!("\n   Incidents (grouped by service):");
    for i in list["incidents"].as_array().into_iter().flatten() {
        println!(
            "   #{} {:<9} {:<8} {} ({} alerts, {} firing)",
            i["id"],
            i["state"].as_str().unwrap_or(""),
            i["severity"].as_str().unwrap_or("-"),
            i["title"].as_str().unwrap_or(""),
            i["alert_count"],
            i["firing_count"]
        );
    }

    let r = post("/v1/alerts/alertmanager", RESOLVED).await?;
    println!("\n4. checkout's alerts resolve                  POST /v1/alerts/alertmanager  -> {r}");
    let id = r["incidents"][0].as_i64().context("the resolve names its incident")?;
    let state = |v: &Value| v["state"].as_str().unwrap_or("").to_string();
    let mut inc: Value = http.get(format!("{base}/v1/incidents/{id}")).send().await?.json().await?;
    println!(
        "   incident #{id} is {} until {} (grace period 2s)",
        state(&inc),
        inc["resolves_at"].as_str().unwrap_or("-")
    );
    for _ in 0..50 {
        if state(&inc) == "resolved" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        inc = http.get(format!("{base}/v1/incidents/{id}")).send().await?.json().await?;
    }
    println!("5. grace period over: incident #{id} is {}", state(&inc));

    let _ = stop.send(());
    server.await.context("server task")??;

    let out = dir.join("export");
    let files = crate::cli::export(store.as_ref(), id, &out).await?;
    println!("\n6. The audit trail of incident #{id} (medic audit export --incident {id}):\n");
    print!("{}", std::fs::read_to_string(&files[1])?);
    print!("\n7. medic audit verify: ");
    crate::cli::verify(store.as_ref(), None).await?;
    store.close().await;
    println!(
        "\nThis build covers intake, correlation and the audit trail. Context gathering, diagnosis,\n\
         remediation plans, Slack/Discord and approval are on the roadmap and not in this build yet."
    );
    Ok(())
}
