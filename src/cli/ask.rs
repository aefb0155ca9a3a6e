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
    let o = Offline::open(&world, runbooks, None).await?;
    let q = Question {
        text: question.to_string(),
        incident: Some(o.incident),
        who: crate::chat::console::identity(),
        via: "cli".into(),
        groups: Default::default(),
        addressed: true,
    };
    let answer = o.asker.ask(&q).await.map(|a| a.to_json(0));
    o.close().await;
    answer
}

/// A scenario's incident, stored in a throwaway SQLite store and investigated by `serve`'s
/// responder over the recorded backend, with an [`Asker`] for it.
pub struct Offline {
    pub asker: Asker,
    pub incident: i64,
    dir: std::path::PathBuf,
}

impl Offline {
    pub async fn open(
        world: &crate::scenario::World,
        runbooks: Vec<crate::runbook::Runbook>,
        llm: Option<Arc<crate::ask::llm::Llm>>,
    ) -> Result<Offline> {
        let dir = crate::scenario::run::tempfile_dir()?;
        let store = crate::store::open(&format!("sqlite://{}", dir.join("ask.db").display()), 2).await?;
        match Offline::investigate(world, runbooks, llm, store.clone()).await {
            Ok((asker, incident)) => Ok(Offline { asker, incident, dir }),
            Err(e) => {
                store.close().await;
                let _ = std::fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }

    pub async fn close(self) {
        self.asker.store.close().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    async fn investigate(
        world: &crate::scenario::World,
        runbooks: Vec<crate::runbook::Runbook>,
        llm: Option<Arc<crate::ask::llm::Llm>>,
        store: Arc<dyn crate::store::Store>,
    ) -> Result<(Asker, i64)> {
        let ingested = store.ingest(&world.alerts, &[], world.now, &Default::default()).await?;
        let id =
            ingested.incidents.iter().flatten().next().copied().context("the scenario's alerts opened no incident")?;
        let recorded = Arc::new(Recorded::new(world.clone()));
        let sources = crate::scenario::run::sources(world, recorded.clone())?;
        let clock = Arc::new(crate::time::ManualClock::new(world.now));
        let (limits, _cluster) = crate::scenario::run::local_actions(world, recorded.clone(), clock.clone()).await?;
        let responder = crate::responder::Responder {
            store: store.clone(),
            sources: sources.clone(),
            runbooks: runbooks.clone(),
            golden: world.golden.clone(),
            clock: clock.clone(),
            metrics: Default::default(),
            cache: crate::context::Cache::new(Duration::ZERO),
            window: Default::default(),
            notifier: None,
            limits,
            autonomy: Default::default(),
            guardrails: Default::default(),
            digests: Default::default(),
        };
        responder.investigate(id).await?;
        let asker = Asker {
            store,
            sources,
            golden: world.golden.clone(),
            runbooks,
            clock,
            window: Default::default(),
            config: Default::default(),
            offset: 0,
            notifier: None,
            llm,
            recent: Default::default(),
            trackers: Vec::new(),
        };
        Ok((asker, id))
    }
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
