//! `medic ask`: a question to a running medic (`POST /v1/ask`), or offline against a scenario
//! — the scenario's incident is stored, investigated by `serve`'s own responder over the
//! recorded backend, then asked about through the same [`Asker`] chat and the API use.

use crate::ask::answer::{Asker, Question};
use crate::scenario::recorded::Recorded;
use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The answer as `POST /v1/ask` gives it, asked offline about `scenario`'s incident.
pub async fn offline(scenario: &Path, runbooks: &Path, question: &str) -> Result<Value> {
    let world = crate::scenario::Scenario::load(scenario)
        .and_then(|s| s.world().map_err(|e| format!("{}: {e}", scenario.display())))
        .map_err(anyhow::Error::msg)?;
    let runbooks = if runbooks.is_dir() { crate::runbook::load(runbooks)? } else { Vec::new() };
    let dir = crate::scenario::run::tempfile_dir()?;
    let store = crate::store::open(&format!("sqlite://{}", dir.join("ask.db").display()), 2).await?;
    let result = async {
        let ingested = store.ingest(&world.alerts, &[], world.now, &Default::default()).await?;
        let id =
            ingested.incidents.iter().flatten().next().copied().context("the scenario's alerts opened no incident")?;
        let recorded = Arc::new(Recorded::new(world.clone()));
        let sources = crate::context::Sources::all(recorded, Duration::from_secs(5));
        let clock = Arc::new(crate::time::ManualClock::new(world.now));
        let responder = crate::responder::Responder {
            store: store.clone(),
            sources: sources.clone(),
            runbooks: runbooks.clone(),
            golden: Vec::new(),
            clock: clock.clone(),
            metrics: Default::default(),
            cache: crate::context::Cache::new(Duration::ZERO),
            window: Default::default(),
            notifier: None,
        };
        responder.investigate(id).await?;
        let asker = Asker {
            store: store.clone(),
            sources,
            golden: Vec::new(),
            runbooks,
            clock,
            window: Default::default(),
            config: Default::default(),
            offset: 0,
            notifier: None,
        };
        let q = Question {
            text: question.to_string(),
            incident: Some(id),
            who: crate::chat::console::identity(),
            via: "cli".into(),
            groups: Default::default(),
        };
        Ok::<_, anyhow::Error>(asker.ask(&q).await?.to_json(0))
    }
    .await;
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// The answer of the medic at `url`.
pub async fn remote(url: &str, token: Option<&str>, question: &str, incident: Option<i64>) -> Result<Value> {
    let http = crate::telemetry::http_client_builder().timeout(Duration::from_secs(30)).build()?;
    let mut req = http.post(format!("{}/v1/ask", url.trim_end_matches('/'))).json(&json!({
        "question": question, "incident": incident,
    }));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.map_err(|e| anyhow::anyhow!("cannot reach medic at {url}: {}", e.without_url()))?;
    let status = resp.status();
    let v: Value = resp.json().await.with_context(|| format!("{url}/v1/ask answered {status}, not JSON"))?;
    if !status.is_success() {
        bail!("{url}/v1/ask: {status}: {}", crate::chat::display(&v["message"]));
    }
    Ok(v)
}
