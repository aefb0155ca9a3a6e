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
//!
//! Each action kind runs in its own module: [`http`], [`script`], [`kubernetes`] and
//! [`alertmanager`]. A kind whose undo medic derives (`kubernetes.scale`: the previous count;
//! `kubernetes.rollout_undo`: the revision it replaced; `alertmanager.silence`: expire it)
//! returns that undo with its result, and a rollback runs it. [`survey`] reads what each step
//! will touch when a plan is proposed, so the approver sees it.

pub mod alertmanager;
pub mod http;
pub mod kubernetes;
pub mod script;

use crate::approval::ApprovedPlan;
use crate::audit::{AuditEntry, Kind};
use crate::context::{MetricQuery, Metrics};
use crate::plan::{PlanAction, PlanCheck, PlanStep, ProposedPlan, SilenceOp};
use crate::runbook::Condition;
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
    /// Headers (credentials) added to every `http` action to a host, by host, e.g.
    /// `awx.example.com: {Authorization: {env: AWX_AUTHORIZATION}}`. Runbooks never hold them.
    #[serde(default)]
    pub http_headers: std::collections::BTreeMap<String, std::collections::BTreeMap<String, crate::secret::SecretRef>>,
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
    /// The cluster Kubernetes actions change, and how far (absent: Kubernetes steps are refused).
    #[serde(default)]
    pub kubernetes: Option<kubernetes::Config>,
    /// The Alertmanager silences are made in (absent: silence steps are refused).
    #[serde(default)]
    pub alertmanager: Option<alertmanager::Config>,
}

impl Config {
    /// Everything wrong with the section: a missing scripts directory, a credential that does
    /// not resolve, a Kubernetes section that allows nothing or an unbounded scale step.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(d) = &self.scripts_dir
            && !d.is_dir()
        {
            out.push(format!("executor.scripts_dir: {} is not a directory", d.display()));
        }
        for (host, headers) in &self.http_headers {
            if !self.http_allowed_hosts.contains(host) {
                out.push(format!("executor.http_headers.{host}: not in executor.http_allowed_hosts"));
            }
            for (name, secret) in headers {
                if let Err(e) = secret.resolve() {
                    out.push(format!("executor.http_headers.{host}.{name}: {e}"));
                }
            }
        }
        if let Some(k) = &self.kubernetes {
            if k.namespaces.is_empty() {
                out.push("executor.kubernetes.namespaces: empty, so every Kubernetes step would be refused".into());
            }
            if !(1..=100).contains(&k.max_scale_step_percent) {
                out.push("executor.kubernetes.max_scale_step_percent: expected 1 to 100".into());
            }
        }
        if let Some(a) = &self.alertmanager
            && let Err(e) = reqwest::Url::parse(&a.url)
        {
            out.push(format!("executor.alertmanager.url {:?}: {e}", a.url));
        }
        out
    }
}

const NO_CLUSTER: &str = "no cluster is configured for Kubernetes actions (executor.kubernetes)";
const NO_ALERTMANAGER: &str = "no Alertmanager is configured for silences (executor.alertmanager)";

/// Where actions may reach, and how.
#[derive(Clone, Default)]
pub struct Limits {
    /// Hosts (`host` or `host:port`) HTTP actions may call.
    pub allowed_hosts: Vec<String>,
    /// Credentials added to HTTP actions, by host.
    pub host_headers: http::HostHeaders,
    /// The only directory scripts run from.
    pub scripts_dir: Option<PathBuf>,
    /// Record what would run, run nothing.
    pub dry_run: bool,
    /// Scenario tests: an action switches this recorded world to its "after" state instead of
    /// reaching anything (Kubernetes actions reach the scenario's local cluster when one is set).
    pub simulate: Option<Arc<dyn Simulate>>,
    pub kubernetes: Option<Arc<kubernetes::Cluster>>,
    pub alertmanager: Option<Arc<alertmanager::Silences>>,
}

impl Limits {
    /// The clients the config's `executor.kubernetes` and `executor.alertmanager` name.
    pub async fn connect(&mut self, cfg: &Config, timeout: Duration) -> Result<(), String> {
        for (host, headers) in &cfg.http_headers {
            for (name, secret) in headers {
                let value = secret.resolve().map_err(|e| format!("executor.http_headers.{host}.{name}: {e}"))?;
                self.host_headers.entry(host.clone()).or_default().push((name.clone(), value));
            }
        }
        if let Some(k) = &cfg.kubernetes {
            self.kubernetes = Some(Arc::new(kubernetes::Cluster::connect(k, timeout).await?));
        }
        if let Some(a) = &cfg.alertmanager {
            self.alertmanager = Some(Arc::new(alertmanager::Silences::new(a, timeout)?));
        }
        Ok(())
    }
}

/// What an action did, and what undoes it when medic derives that itself.
pub struct Acted {
    pub output: String,
    pub undo: Option<PlanAction>,
    /// The action changed the world but did not take (a rollout that did not complete): the
    /// step fails and `undo` rolls it back.
    pub failed: Option<String>,
}

impl Acted {
    pub(crate) fn said(output: String) -> Acted {
        Acted { output, undo: None, failed: None }
    }
}

/// Reads what each Kubernetes and Alertmanager step of `plan` will touch, or why it would be
/// refused, into the plan (whose hash then covers it): the approver sees it.
/// A cluster that could not be read for one step is not asked again for the next: the survey
/// of a plan costs at most one step's bound when the API server is down.
pub async fn survey(limits: &Limits, clock: &dyn Clock, plan: &mut ProposedPlan) {
    let mut unreadable: Option<String> = None;
    for step in &mut plan.steps {
        match &mut step.action {
            PlanAction::Kubernetes(op) => match (&limits.kubernetes, &unreadable) {
                (Some(_), Some(why)) => step.refused = Some(why.clone()),
                (Some(cluster), None) => match cluster.survey(op, clock).await {
                    Ok((touches, seen)) => {
                        step.touches = Some(touches);
                        op.seen = Some(seen);
                    }
                    Err(e) => {
                        if e.starts_with(kubernetes::UNREADABLE) {
                            unreadable = Some(e.clone());
                        }
                        step.refused = Some(e);
                    }
                },
                (None, _) => step.refused = Some(NO_CLUSTER.into()),
            },
            PlanAction::Alertmanager(op) => match (&limits.alertmanager, op) {
                (None, _) if limits.simulate.is_none() => step.refused = Some(NO_ALERTMANAGER.into()),
                (_, SilenceOp::Silence { matchers, duration_secs, .. }) => {
                    step.touches = Some(format!(
                        "notifications of the alerts matching {} for {} (expired if the plan rolls back)",
                        matchers.join(", "),
                        humantime::format_duration(Duration::from_secs(*duration_secs))
                    ))
                }
                _ => {}
            },
            _ => {}
        }
    }
    plan.hash = plan.content_hash();
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

/// A step that failed: whether its action ran (and what undoes it), and why.
struct Failed {
    ran: Option<Option<PlanAction>>,
    reason: String,
    /// What the action said, when it ran.
    output: Option<String>,
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
    /// This replica lost the execution mid-plan (its lease lapsed, another replica marked it
    /// interrupted and escalated it): it stopped before `step` and acted no more.
    Fenced {
        step: String,
    },
}

/// Raised inside an execution when its replica no longer holds it.
#[derive(Debug)]
struct Fenced(String);

impl std::fmt::Display for Fenced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the execution is no longer held by this replica (before {})", self.0)
    }
}

impl std::error::Error for Fenced {}

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
    /// Verified runs in a row that grant a runbook `auto` (`autonomy.grant_after`).
    pub grant_after: u32,
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
            grant_after: crate::autonomy::Config::default().grant_after,
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
        data["owner"] = json!(self.owner);
        let entry =
            AuditEntry { at: self.clock.now(), kind, incident_id: Some(p.incident_id), actor: "medic".into(), data };
        let held = self
            .store
            .execution_event(&p.hash, &self.owner, step as i64, state, entry.clone(), self.grant_after)
            .await?;
        if !held {
            return Err(Fenced(format!("recording step {}", step + 1)).into());
        }
        if let Some(f) = &self.on_progress {
            f(entry).await;
        }
        Ok(())
    }

    /// The fence before every action: this replica still holds the execution (its owner, still
    /// running, the lease not lapsed), renewed for another lease; else it stops, audited.
    async fn fence(&self, approved: &ApprovedPlan, step: usize, before: &str) -> anyhow::Result<()> {
        let (hash, now) = (&approved.plan().hash, self.clock.now());
        if self.store.execution_heartbeat(hash, &self.owner, now, self.lease.as_millis() as crate::time::Millis).await?
        {
            return Ok(());
        }
        let data = json!({"plan": hash, "before": before, "reason": format!(
            "{} no longer holds this execution (its lease lapsed and another replica marked it interrupted): \
             it stopped before {before} and acts no more",
            self.owner
        )});
        tracing::error!(plan = %hash, owner = %self.owner, before, "lost the execution's lease: stopping");
        // The record is audited as fenced (it moves nothing); only a store error is not a stop.
        if let Err(e) = self.event(approved, step, ExecState::Running, Kind::ExecutionFenced, data).await
            && !e.is::<Fenced>()
        {
            return Err(e);
        }
        Err(Fenced(before.to_string()).into())
    }

    pub async fn execute(&self, approved: ApprovedPlan) -> anyhow::Result<Outcome> {
        if !self.store.claim_execution(&approved, &self.owner, self.clock.now()).await? {
            return Ok(Outcome::AlreadyClaimed);
        }
        let _lease = self.hold_lease(&approved.plan().hash);
        match self.run(&approved).await {
            Err(e) if e.is::<Fenced>() => {
                let step = e.downcast::<Fenced>().map(|f| f.0).unwrap_or_default();
                Ok(Outcome::Fenced { step })
            }
            other => other,
        }
    }

    async fn run(&self, approved: &ApprovedPlan) -> anyhow::Result<Outcome> {
        let steps = approved.plan().steps.clone();
        let mut done: Vec<(&PlanStep, Option<PlanAction>)> = Vec::new();
        for (i, step) in steps.iter().enumerate() {
            self.fence(approved, i, &format!("step {} ({})", i + 1, step.id)).await?;
            if let Some(by) = self.store.stop_requested(&approved.plan().hash).await? {
                return self.stop(approved, i, &done, &by).await;
            }
            let failure = match self.run_step(step, approved.plan().dry_run).await {
                Ok((result, undo)) => {
                    self.event(
                        approved,
                        i,
                        ExecState::Running,
                        Kind::StepSucceeded,
                        json!({"step": step.id, "result": result}),
                    )
                    .await?;
                    done.push((step, undo));
                    continue;
                }
                Err(Failed { ran, reason, output }) => {
                    if let Some(undo) = ran {
                        done.push((step, undo));
                    }
                    (reason, output)
                }
            };
            let (failure, output) = failure;
            let mut data = json!({"step": step.id, "reason": failure});
            if let Some(o) = output {
                data["output"] = json!(o);
            }
            self.event(approved, i, ExecState::Running, Kind::StepFailed, data).await?;
            let clean = self.roll_back(approved, i, &done).await?;
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
            self.event(approved, i, state, Kind::Escalated, data).await?;
            return Ok(Outcome::RolledBack { step: step.id.clone(), reason: failure });
        }
        let last = steps.len().saturating_sub(1);
        self.event(
            approved,
            last,
            ExecState::Succeeded,
            Kind::ExecutionFinished,
            json!({"plan": approved.plan().hash, "result": "succeeded",
                   "dry_run": approved.plan().dry_run || self.limits.dry_run}),
        )
        .await?;
        Ok(Outcome::Succeeded)
    }

    /// A person stopped the plan before step `at`: what ran is rolled back, and a person takes
    /// over. (The stop already took the runbook's `auto` away.)
    async fn stop(
        &self,
        approved: &ApprovedPlan,
        at: usize,
        done: &[(&PlanStep, Option<PlanAction>)],
        by: &str,
    ) -> anyhow::Result<Outcome> {
        let clean = self.roll_back(approved, at, done).await?;
        let state = if clean { ExecState::RolledBack } else { ExecState::Failed };
        let reason = format!("stopped by {by} before step {} of {}", at + 1, approved.plan().steps.len());
        let data = json!({"plan": approved.plan().hash, "stopped_by": by, "reason": reason,
            "message": if clean { "stopped; the steps that ran were rolled back; a person must take over" }
                       else { "stopped, and a rollback failed: the system is in a partial state; a person must take over now" }});
        self.event(approved, at, state, Kind::Escalated, data).await?;
        Ok(Outcome::RolledBack {
            step: approved.plan().steps.get(at).map(|s| s.id.clone()).unwrap_or_default(),
            reason,
        })
    }

    /// Renews the execution's heartbeat until the returned guard is dropped.
    fn hold_lease(&self, hash: &str) -> AbortOnDrop {
        let (store, clock, hash, every) = (self.store.clone(), self.clock.clone(), hash.to_string(), self.lease / 4);
        let (owner, lease) = (self.owner.clone(), self.lease.as_millis() as crate::time::Millis);
        AbortOnDrop(tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = store.execution_heartbeat(&hash, &owner, clock.now(), lease).await {
                    tracing::warn!(plan = %hash, error = %format!("{e:#}"), "could not renew the execution's lease");
                }
            }
        }))
    }

    /// Precondition, action, post-check: the result and what undoes the action.
    async fn run_step(&self, step: &PlanStep, dry_run: bool) -> Result<(Value, Option<PlanAction>), Failed> {
        let not_ran = |reason| Failed { ran: None, reason, output: None };
        // What the approver approved is what the survey read. A step refused at proposal (a
        // 404, an unreadable cluster) was never read: the workload may have appeared since
        // with another template, which nobody saw.
        if let PlanAction::Kubernetes(op) = &step.action
            && op.seen.is_none()
            && self.limits.kubernetes.is_some()
        {
            return Err(not_ran(format!(
                "{} was not read when the plan was proposed ({}), so nobody approved what it is now; medic \
                 proposes a fresh plan when the incident is investigated again",
                op.target,
                step.refused.as_deref().unwrap_or("not surveyed")
            )));
        }
        if dry_run || self.limits.dry_run {
            // Kubernetes actions are proven by a server-side dry run; the rest is a log. Nothing
            // changes, so nothing can be verified either.
            let would_check =
                |c: &Option<PlanCheck>| c.as_ref().map(|c| format!("dry run: would check {}", c.summary()));
            let acted = self.act(&step.action, true).await.map_err(not_ran)?;
            return Ok((
                json!({
                    "action": step.action.summary(),
                    "output": acted.output,
                    "precondition": would_check(&step.precondition),
                    "verified": would_check(&step.post_check),
                }),
                None,
            ));
        }
        if let Some(pre) = &step.precondition {
            self.check(pre).await.map_err(|e| not_ran(format!("precondition not met: {e}")))?;
        }
        let acted = self.act(&step.action, false).await.map_err(not_ran)?;
        if let Some(reason) = acted.failed {
            return Err(Failed { ran: Some(acted.undo), reason, output: Some(acted.output) });
        }
        let verified = match &step.post_check {
            Some(c) => Some(self.check(c).await.map_err(|e| Failed {
                ran: Some(acted.undo.clone()),
                reason: format!("post-check failed: {e}"),
                output: Some(acted.output.clone()),
            })?),
            None => None,
        };
        Ok((json!({"action": step.action.summary(), "output": acted.output, "verified": verified}), acted.undo))
    }

    /// Rolls back the steps done, newest first, each by the undo medic derived when it ran or
    /// the runbook's `rollback`; false if any rollback failed.
    async fn roll_back(
        &self,
        approved: &ApprovedPlan,
        at: usize,
        done: &[(&PlanStep, Option<PlanAction>)],
    ) -> anyhow::Result<bool> {
        let mut clean = true;
        for (step, derived) in done.iter().rev() {
            let undo = derived.as_ref().or(step.rollback.as_ref());
            if undo.is_some() {
                self.fence(approved, at, &format!("the rollback of {}", step.id)).await?;
            }
            let data = match (undo, &step.irreversible) {
                (Some(rb), _) => match self.act(rb, approved.plan().dry_run).await {
                    Ok(out) => {
                        json!({"step": step.id, "rollback": rb.summary(), "result": "done", "output": out.output})
                    }
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
                service: None,
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

    /// Runs one action (or, in dry-run mode, proves or describes it); what undoes it, if
    /// medic derives that itself.
    async fn act(&self, a: &PlanAction, plan_dry_run: bool) -> Result<Acted, String> {
        let dry_run = self.limits.dry_run || plan_dry_run;
        if let Some(world) = &self.limits.simulate
            && !dry_run
        {
            // Opaque actions are taken to work: the world switches to its "after" state. A
            // silence changes no metric. With a (local) cluster, the cluster acts, and the
            // world follows its first change.
            let switches = match a {
                PlanAction::Http { .. } | PlanAction::Script { .. } => Some(true),
                PlanAction::Kubernetes(_) if self.limits.kubernetes.is_none() => Some(true),
                PlanAction::Alertmanager(_) if self.limits.alertmanager.is_none() => Some(false),
                _ => None,
            };
            if let Some(switches) = switches {
                if switches {
                    world.act(self.clock.now());
                }
                return Ok(Acted::said(format!("simulated: {}", a.summary())));
            }
        }
        match a {
            PlanAction::Kubernetes(k) => match &self.limits.kubernetes {
                Some(cluster) => cluster.act(k, dry_run, self.sleep.as_ref(), self.clock.as_ref()).await,
                None => Err(NO_CLUSTER.into()),
            },
            PlanAction::Alertmanager(op) => match &self.limits.alertmanager {
                Some(am) => am.act(op, dry_run, self.clock.now()).await,
                None => Err(NO_ALERTMANAGER.into()),
            },
            _ if dry_run => Ok(Acted::said(format!("dry run: would {}", a.summary()))),
            PlanAction::Http { method, url, headers, body, expect_status, timeout_secs } => {
                let r = http::Request {
                    method: *method,
                    url,
                    headers,
                    body: body.as_ref(),
                    expect_status,
                    timeout_secs: *timeout_secs,
                };
                http::call(&self.http, &self.limits, r, &a.summary()).await.map(Acted::said)
            }
            PlanAction::Script { argv, timeout_secs, env } => {
                script::run(self.limits.scripts_dir.as_deref(), argv, env, *timeout_secs).await.map(Acted::said)
            }
            PlanAction::Wait { secs } => {
                self.sleep.sleep(Duration::from_secs(*secs)).await;
                Ok(Acted::said(format!("waited {secs}s")))
            }
            PlanAction::Check(c) => self.check(c).await.map(Acted::said),
        }
    }
}
