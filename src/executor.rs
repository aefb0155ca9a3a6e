//! The executor (§2.8): runs an [`ApprovedPlan`] — nothing else — as a durable job. For each
//! step: precondition, action, post-check. When a step fails or its post-check does not hold in
//! time, the steps already done are rolled back in reverse order (those that define a rollback)
//! and humans are escalated to. Every transition is recorded in the store with its audit entry
//! before the next one starts, and everything recorded is redacted first.
//!
//! A plan is claimed once (the execution row is keyed by the plan hash) and held by a lease:
//! the executor renews its heartbeat every quarter of the lease ([`LEASE`] by default) while it
//! runs. At start, [`recover`]
//! marks this owner's executions that were still running — a crash mid-plan — as interrupted
//! and escalates them; every replica then sweeps for executions of other owners whose lease
//! has lapsed (their replica is gone, perhaps for good, under another name). They are never
//! silently re-run.

use crate::approval::ApprovedPlan;
use crate::audit::{AuditEntry, Kind};
use crate::context::{MetricQuery, Metrics};
use crate::plan::{PlanAction, PlanCheck, PlanStep};
use crate::redact::redact;
use crate::runbook::{Condition, HttpMethod};
use crate::store::{ExecState, Store};
use crate::time::Clock;
use serde::Deserialize;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The `executor` section of the config. Where plans' actions may reach.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Hosts (`host` or `host:port`) that `http` actions may call.
    #[serde(default)]
    pub http_allowed_hosts: Vec<String>,
    /// The only directory `script` actions run from.
    #[serde(default)]
    pub scripts_dir: Option<PathBuf>,
    /// Propose and "execute" plans as a log only.
    #[serde(default)]
    pub dry_run: bool,
    /// This replica's name in the executions table; keep it stable across restarts so an
    /// interrupted plan is found (default: the host name).
    #[serde(default)]
    pub owner: Option<String>,
    /// How long a running execution's heartbeat holds it (default 60s, renewed every quarter
    /// of it): past it, its replica is taken to be gone, and any replica marks the execution
    /// interrupted and escalates it.
    #[serde(default, with = "humantime_serde")]
    pub lease: Option<std::time::Duration>,
}

/// Where actions may reach, and how.
#[derive(Clone, Default)]
pub struct Limits {
    /// Hosts (`host` or `host:port`) HTTP actions may call.
    pub allowed_hosts: Vec<String>,
    /// The only directory scripts run from.
    pub scripts_dir: Option<PathBuf>,
    /// Record what would run, run nothing.
    pub dry_run: bool,
    /// Scenario tests: an action switches this recorded world to its "after" state instead of
    /// reaching anything.
    pub simulate: Option<Arc<dyn Simulate>>,
}

/// A recorded world an action switches to its "after" state (scenario tests), instead of
/// reaching anything.
pub trait Simulate: Send + Sync {
    fn act(&self, at: crate::time::Millis);
}

/// How the executor waits: for real, or (scenario tests) by moving a manual clock.
#[async_trait::async_trait]
pub trait Sleep: Send + Sync {
    async fn sleep(&self, d: Duration);
}

pub struct RealSleep;

#[async_trait::async_trait]
impl Sleep for RealSleep {
    async fn sleep(&self, d: Duration) {
        tokio::time::sleep(d).await;
    }
}

/// Sleeping advances the clock and returns at once.
pub struct VirtualSleep(pub Arc<crate::time::ManualClock>);

#[async_trait::async_trait]
impl Sleep for VirtualSleep {
    async fn sleep(&self, d: Duration) {
        self.0.advance(d.as_millis() as i64);
    }
}

/// How an execution ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    /// A step failed; the steps done were rolled back (as far as they could be).
    RolledBack {
        step: String,
        reason: String,
    },
    /// Another call (or replica) already runs or ran this plan.
    AlreadyClaimed,
}

pub struct Executor {
    pub store: Arc<dyn Store>,
    pub metrics: Arc<dyn Metrics>,
    pub clock: Arc<dyn Clock>,
    pub limits: Limits,
    /// This process's name in the executions table (stable across restarts).
    pub owner: String,
    /// How long a heartbeat holds an execution; renewed every quarter of it.
    pub lease: Duration,
    pub sleep: Arc<dyn Sleep>,
    /// Called after each recorded step event (chat shows the progress).
    pub on_progress: Option<Progress>,
    http: reqwest::Client,
}

const MAX_OUTPUT: usize = 16 * 1024;

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How long an execution's heartbeat stays good by default: past it, its replica is taken to
/// be gone (`executor.lease`).
pub const LEASE: Duration = Duration::from_secs(60);

/// Marks orphaned executions interrupted and escalates them — never re-runs them — and returns
/// their plan hashes and incidents. `at_start`: this owner's executions still marked running
/// were cut off by its own crash, and are taken too; otherwise only other owners' executions
/// whose lease lapsed.
pub async fn recover(
    store: &dyn Store,
    owner: &str,
    at_start: bool,
    lease: Duration,
    now: crate::time::Millis,
) -> anyhow::Result<Vec<(String, i64)>> {
    let stale_before = now - lease.as_millis() as crate::time::Millis;
    let orphans = store.interrupt_running(owner, at_start, stale_before, now).await?;
    for (plan, incident) in &orphans {
        tracing::warn!(%plan, incident, owner, "plan interrupted (medic stopped while it ran); escalated, not re-run");
    }
    Ok(orphans)
}

/// Called with each recorded step event, in order, before the next step starts (chat shows the
/// progress and the step's result as it ends).
pub type Progress = Arc<dyn Fn(AuditEntry) -> futures_util::future::BoxFuture<'static, ()> + Send + Sync>;

/// This replica's executor owner: the configured one, else the host name.
pub fn owner(configured: Option<&str>) -> String {
    configured
        .map(str::to_string)
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname").ok().map(|h| h.trim().to_string()).filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "medic".into())
}

impl Executor {
    pub fn new(
        store: Arc<dyn Store>,
        metrics: Arc<dyn Metrics>,
        clock: Arc<dyn Clock>,
        limits: Limits,
        owner: impl Into<String>,
    ) -> Executor {
        let http = crate::telemetry::http_client_builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("an HTTP client");
        Executor {
            store,
            metrics,
            clock,
            limits,
            owner: owner.into(),
            lease: LEASE,
            sleep: Arc::new(RealSleep),
            on_progress: None,
            http,
        }
    }

    async fn event(
        &self,
        approved: &ApprovedPlan,
        step: usize,
        state: ExecState,
        kind: Kind,
        mut data: Value,
    ) -> anyhow::Result<()> {
        crate::redact::redact_json(&mut data);
        let p = approved.plan();
        let entry =
            AuditEntry { at: self.clock.now(), kind, incident_id: Some(p.incident_id), actor: "medic".into(), data };
        self.store.execution_event(&p.hash, step as i64, state, entry.clone()).await?;
        if let Some(f) = &self.on_progress {
            f(entry).await;
        }
        Ok(())
    }

    pub async fn execute(&self, approved: ApprovedPlan) -> anyhow::Result<Outcome> {
        if !self.store.claim_execution(&approved, &self.owner, self.clock.now()).await? {
            return Ok(Outcome::AlreadyClaimed);
        }
        let _lease = self.hold_lease(&approved.plan().hash);
        let steps = approved.plan().steps.clone();
        let mut done: Vec<&PlanStep> = Vec::new();
        for (i, step) in steps.iter().enumerate() {
            let failure = match self.run_step(step, approved.plan().dry_run).await {
                Ok(result) => {
                    self.event(
                        &approved,
                        i,
                        ExecState::Running,
                        Kind::StepSucceeded,
                        json!({"step": step.id, "result": result}),
                    )
                    .await?;
                    done.push(step);
                    continue;
                }
                Err((ran, reason)) => {
                    if ran {
                        done.push(step);
                    }
                    reason
                }
            };
            self.event(&approved, i, ExecState::Running, Kind::StepFailed, json!({"step": step.id, "reason": failure}))
                .await?;
            let clean = self.roll_back(&approved, i, &done).await?;
            let (state, message) = if clean {
                (
                    ExecState::RolledBack,
                    "the plan failed and its completed steps were rolled back; a person must take over",
                )
            } else {
                (
                    ExecState::Failed,
                    "the plan failed and a rollback failed too: the system is in a partial state; a person must take over now",
                )
            };
            let data =
                json!({"plan": approved.plan().hash, "failed_step": step.id, "reason": failure, "message": message});
            self.event(&approved, i, state, Kind::Escalated, data).await?;
            return Ok(Outcome::RolledBack { step: step.id.clone(), reason: failure });
        }
        let last = steps.len().saturating_sub(1);
        self.event(
            &approved,
            last,
            ExecState::Succeeded,
            Kind::ExecutionFinished,
            json!({"plan": approved.plan().hash, "result": "succeeded"}),
        )
        .await?;
        Ok(Outcome::Succeeded)
    }

    /// Renews the execution's heartbeat until the returned guard is dropped.
    fn hold_lease(&self, hash: &str) -> AbortOnDrop {
        let (store, clock, hash, every) = (self.store.clone(), self.clock.clone(), hash.to_string(), self.lease / 4);
        AbortOnDrop(tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = store.execution_heartbeat(&hash, clock.now()).await {
                    tracing::warn!(plan = %hash, error = %format!("{e:#}"), "could not renew the execution's lease");
                }
            }
        }))
    }

    /// Precondition, action, post-check. `Err((action_ran, reason))` on failure.
    async fn run_step(&self, step: &PlanStep, dry_run: bool) -> Result<Value, (bool, String)> {
        if dry_run || self.limits.dry_run {
            // A log only: nothing runs, so nothing can be verified either.
            let would_check =
                |c: &Option<PlanCheck>| c.as_ref().map(|c| format!("dry run: would check {}", c.summary()));
            return Ok(json!({
                "action": step.action.summary(),
                "output": format!("dry run: would {}", step.action.summary()),
                "precondition": would_check(&step.precondition),
                "verified": would_check(&step.post_check),
            }));
        }
        if let Some(pre) = &step.precondition {
            self.check(pre).await.map_err(|e| (false, format!("precondition not met: {e}")))?;
        }
        let output = self.act(&step.action, dry_run).await.map_err(|e| (false, e))?;
        let verified = match &step.post_check {
            Some(c) => Some(self.check(c).await.map_err(|e| (true, format!("post-check failed: {e}")))?),
            None => None,
        };
        Ok(json!({"action": step.action.summary(), "output": output, "verified": verified}))
    }

    /// Rolls back the steps done, newest first; false if any rollback failed.
    async fn roll_back(&self, approved: &ApprovedPlan, at: usize, done: &[&PlanStep]) -> anyhow::Result<bool> {
        let mut clean = true;
        for step in done.iter().rev() {
            let data = match (&step.rollback, &step.irreversible) {
                (Some(rb), _) => match self.act(rb, approved.plan().dry_run).await {
                    Ok(out) => json!({"step": step.id, "rollback": rb.summary(), "result": "done", "output": out}),
                    Err(e) => {
                        clean = false;
                        json!({"step": step.id, "rollback": rb.summary(), "result": "failed", "reason": e})
                    }
                },
                (None, Some(why)) => {
                    json!({"step": step.id, "result": "not rolled back", "reason": format!("irreversible: {why}")})
                }
                (None, None) => json!({"step": step.id, "result": "nothing to roll back"}),
            };
            self.event(approved, at, ExecState::Running, Kind::StepRolledBack, data).await?;
        }
        Ok(clean)
    }

    /// Polls the check's query until its condition holds (`Ok(value)`) or its deadline passes.
    async fn check(&self, c: &PlanCheck) -> Result<String, String> {
        let cond = Condition::parse(&c.condition)?;
        let name = c.query_name.clone().unwrap_or_else(|| c.promql.clone());
        let deadline = self.clock.now() + (c.within_secs as i64) * 1000;
        let mut last = None;
        let mut error = None;
        loop {
            let now = self.clock.now();
            let q = MetricQuery {
                name: name.clone(),
                promql: c.promql.clone(),
                start: now - 300_000,
                end: now,
                step: 15_000,
            };
            match self.metrics.query_range(&q).await {
                Ok(series) => {
                    last = series.iter().filter_map(|s| s.points.last()).max_by_key(|p| p.0).map(|p| p.1);
                    if let Some(v) = last
                        && cond.holds(v)
                    {
                        return Ok(format!("{name} = {v} ({})", c.condition));
                    }
                }
                Err(e) => error = Some(e),
            }
            let now = self.clock.now();
            if now >= deadline {
                return Err(match (last, error) {
                    (Some(v), _) => format!("{name} = {v}, not {} within {}s", c.condition, c.within_secs),
                    (None, Some(e)) => format!("{name} could not be queried: {e}"),
                    (None, None) => format!("{name} returned no data within {}s", c.within_secs),
                });
            }
            let wait = (c.every_secs.max(1) as i64 * 1000).min(deadline - now);
            self.sleep.sleep(Duration::from_millis(wait as u64)).await;
        }
    }

    async fn act(&self, a: &PlanAction, plan_dry_run: bool) -> Result<String, String> {
        if self.limits.dry_run || plan_dry_run {
            return Ok(format!("dry run: would {}", a.summary()));
        }
        if let Some(world) = &self.limits.simulate
            && !matches!(a, PlanAction::Wait { .. } | PlanAction::Check(_))
        {
            world.act(self.clock.now());
            return Ok(format!("simulated: {}", a.summary()));
        }
        match a {
            PlanAction::Http { method, url, headers, body, expect_status, timeout_secs } => {
                let parsed = reqwest::Url::parse(url).map_err(|e| redact(&format!("invalid URL {url}: {e}")))?;
                // The URL called is exactly the one approved: plans hold normalised URLs
                // (`render::url`), so one that normalises differently was not built by medic.
                if parsed.as_str() != url {
                    return Err(redact(&format!("{url} is not in normal form (it would call {parsed})")));
                }
                let host = parsed.host_str().unwrap_or_default();
                let with_port = parsed.port().map(|p| format!("{host}:{p}")).unwrap_or_else(|| host.to_string());
                if !self.limits.allowed_hosts.iter().any(|h| h == host || *h == with_port) {
                    return Err(format!("{with_port} is not on the executor's allow-list of HTTP hosts"));
                }
                let m = match method {
                    HttpMethod::Get => reqwest::Method::GET,
                    HttpMethod::Post => reqwest::Method::POST,
                    HttpMethod::Put => reqwest::Method::PUT,
                    HttpMethod::Patch => reqwest::Method::PATCH,
                    HttpMethod::Delete => reqwest::Method::DELETE,
                };
                let mut req = self.http.request(m, parsed).timeout(Duration::from_secs(*timeout_secs));
                for (k, v) in headers {
                    req = req.header(k, v);
                }
                if let Some(b) = body {
                    req = req.json(b);
                }
                let resp = req.send().await.map_err(|e| redact(&format!("{}: {e}", a.summary())))?;
                let status = resp.status().as_u16();
                let text = crate::redact::redact_cut(&resp.text().await.unwrap_or_default(), MAX_OUTPUT);
                let ok = if expect_status.is_empty() {
                    (200..300).contains(&status)
                } else {
                    expect_status.contains(&status)
                };
                let summary = format!("HTTP {status}: {}", text.trim());
                if ok { Ok(summary) } else { Err(format!("unexpected {summary}")) }
            }
            PlanAction::Script { argv, timeout_secs } => {
                let dir = self.limits.scripts_dir.as_ref().ok_or("no scripts directory is configured")?;
                let name = argv.first().ok_or("empty argv")?;
                if name.is_empty() || name.contains(['/', '\\']) || name == "." || name == ".." {
                    return Err(format!("{name:?} is not a script name in the scripts directory"));
                }
                let path = dir.join(name);
                let mut cmd = tokio::process::Command::new(&path);
                cmd.args(&argv[1..]).kill_on_drop(true).stdin(std::process::Stdio::null());
                let run = tokio::time::timeout(Duration::from_secs(*timeout_secs), cmd.output());
                let out = match run.await {
                    Err(_) => return Err(format!("{name} timed out after {timeout_secs}s and was killed")),
                    Ok(Err(e)) => return Err(format!("cannot run {}: {e}", path.display())),
                    Ok(Ok(o)) => o,
                };
                let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
                text.push_str(&String::from_utf8_lossy(&out.stderr));
                // Redacted before the cut: a cut could leave a secret the patterns no longer see.
                let text = crate::redact::redact_cut(&text, MAX_OUTPUT);
                if out.status.success() {
                    Ok(text.trim().to_string())
                } else {
                    Err(format!("{name} exited with {}: {}", out.status, text.trim()))
                }
            }
            PlanAction::Wait { secs } => {
                self.sleep.sleep(Duration::from_secs(*secs)).await;
                Ok(format!("waited {secs}s"))
            }
            PlanAction::Check(c) => self.check(c).await,
        }
    }
}
