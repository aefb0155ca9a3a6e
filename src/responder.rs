//! The responder: what medic does once an incident opens or grows. It gathers the context
//! (every configured backend, in parallel, cached per incident), diagnoses, builds the top
//! hypothesis' plan, proposes it, and records a `diagnosed` audit entry carrying the diagnosis
//! and every query with its duration. Chat adapters show what it records.
//!
//! [`request`] and [`conclude`] are the IO-free halves, shared with `medic test` / `medic
//! replay` (scenarios) and the demo, so every path diagnoses the same way.

use crate::alert::Alert;
use crate::approval::Identity;
use crate::audit::{AuditEntry, Kind};
use crate::context::{self, Cache, Context, Golden, MetricQuery, Request, Sources};
use crate::diagnosis::{self, Diagnosis, Past};
use crate::incident::{Incident, IncidentState};
use crate::metrics::Metrics;
use crate::plan::{self, ProposedPlan};
use crate::runbook::Runbook;
use crate::store::{IncidentFilter, Store};
use crate::time::{Clock, Millis};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;

/// How far back from the alerts' start the context is read.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// Metrics and logs.
    pub look_back: Duration,
    /// Logs and traces (their baseline).
    pub logs_look_back: Duration,
    /// Changes: a deploy hours before the onset still explains it.
    pub changes_look_back: Duration,
}

impl From<&crate::context::Config> for Window {
    fn from(c: &crate::context::Config) -> Window {
        Window { look_back: c.look_back, logs_look_back: c.logs_look_back, changes_look_back: c.changes_look_back }
    }
}

impl Default for Window {
    fn default() -> Self {
        Window {
            look_back: Duration::from_secs(2 * 3600),
            logs_look_back: Duration::from_secs(60 * 60),
            changes_look_back: Duration::from_secs(24 * 3600),
        }
    }
}

/// The question for an incident's firing `alerts` at `now`: their services, the window, the
/// runbooks' own queries (rendered for the first alert) and the golden signals.
pub fn request(
    alerts: &[Alert],
    runbooks: &[Runbook],
    golden: &[Golden],
    now: Millis,
    incident: (i64, &str),
    window: Window,
) -> Request {
    let first_start = alerts.iter().map(|a| a.starts_at).min().unwrap_or(now);
    let start = first_start - window.look_back.as_millis() as Millis;
    let mut services: Vec<String> = alerts.iter().filter_map(|a| a.labels.get("service").cloned()).collect();
    services.sort();
    services.dedup();
    let mut queries = Vec::new();
    if let Some(first) = alerts.first() {
        let tctx = diagnosis::template_context(first, incident, None, &Default::default());
        for (r, q) in runbooks.iter().flat_map(|r| r.context.iter().map(move |q| (r, q))) {
            if let Some(promql) = &q.promql
                && !queries.iter().any(|m: &MetricQuery| m.name == q.name)
            {
                match crate::render::query(promql, &tctx, false) {
                    Ok(promql) => {
                        let step = context::prometheus::step_for(start, now);
                        queries.push(MetricQuery {
                            name: q.name.clone(),
                            promql,
                            start,
                            end: now,
                            step,
                            service: None,
                        });
                    }
                    Err(e) => tracing::warn!(runbook = %r.id, query = %q.name, error = %e, "context query not run"),
                }
            }
        }
    }
    Request {
        services,
        start,
        end: now,
        split: first_start,
        logs_start: first_start - window.logs_look_back.as_millis() as Millis,
        changes_start: first_start - window.changes_look_back.as_millis() as Millis,
        queries,
        golden: golden.to_vec(),
    }
}

/// The diagnosis of `alerts` over `ctx`, and the top hypothesis' plan (or why it has none;
/// `None` when no runbook matched).
pub fn conclude(
    alerts: &[Alert],
    runbooks: &[Runbook],
    golden: &[Golden],
    ctx: &Context,
    incident: (i64, &str),
    history: &[Past],
) -> (Diagnosis, Option<Result<ProposedPlan, String>>) {
    let (incident_id, title) = incident;
    let d =
        diagnosis::diagnose(&diagnosis::Input { incident_id, title, alerts, context: ctx, runbooks, golden, history });
    let plan = d.top().runbook.as_ref().map(|id| {
        let rb = runbooks.iter().find(|r| &r.id == id).expect("the hypothesis names a loaded runbook");
        let alert = alerts.iter().find(|a| rb.matches_labels(std::iter::once(&a.labels))).unwrap_or(&alerts[0]);
        let change = ctx.changes.iter().filter(|c| c.at <= d.onset + 120_000).max_by_key(|c| c.at);
        plan::build(rb, &diagnosis::template_context(alert, incident, change, &rb.vars), incident_id)
    });
    (d, plan)
}

/// Resolved incidents of `incident`'s group (its signature), newest first, at most three, each
/// with what resolved it, read from the audit log.
pub async fn history(store: &dyn Store, incident: &Incident) -> anyhow::Result<Vec<Past>> {
    let filter = IncidentFilter {
        state: Some(IncidentState::Resolved),
        before: Some(incident.id),
        group_key: Some(incident.group_key.clone()),
        limit: 3,
    };
    let mut out = Vec::new();
    for p in store.incidents(&filter).await? {
        let audit = store.audit_for_incident(p.id).await?;
        let last = |k: Kind| {
            audit
                .iter()
                .rev()
                .find(|r| r.kind == k.as_str())
                .map(|r| serde_json::from_str::<serde_json::Value>(&r.data).unwrap_or_default())
        };
        let approved = last(Kind::PlanApproved);
        let runbook = approved.as_ref().and_then(|d| d["runbook"].as_str()).map(str::to_string);
        let finished = last(Kind::ExecutionFinished).is_some_and(|d| d["result"] == "succeeded");
        let outcome = match (&runbook, approved.as_ref()) {
            (Some(rb), Some(d)) => {
                let by: Vec<&str> =
                    d["approvers"].as_array().into_iter().flatten().filter_map(|a| a.as_str()).collect();
                let ran = if finished {
                    "ran and was verified"
                } else if last(Kind::StepRolledBack).is_some() || last(Kind::Escalated).is_some() {
                    "failed and was rolled back or escalated"
                } else {
                    "did not finish"
                };
                format!("the plan of {rb}, approved by {}, {ran}", by.join(", "))
            }
            _ => "resolved without a plan from medic".into(),
        };
        out.push(Past {
            incident_id: p.id,
            title: p.title,
            opened_at: p.opened_at,
            resolved_at: p.resolved_at,
            runbook,
            verified: finished,
            outcome,
        });
    }
    Ok(out)
}

/// Milliseconds with two decimals, for the audit.
fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 100_000.0).round() / 100.0
}

/// Most investigations running at once.
const PARALLEL: usize = 8;

/// The incidents waiting for an investigation. Intake pushes an incident id when an alert opens,
/// joins, re-fires in or resolves out of it. An incident is investigated at once the first time;
/// after that at most once per `every` (its later triggers wait, coalesced into one), and an
/// incident triggered again while its investigation runs is investigated once more afterwards.
/// So a storm of alerts into one incident costs one investigation per `every`, not one per
/// batch. Nothing is dropped, and memory is bounded by the number of incidents active within
/// `every`.
pub struct Triggers {
    state: Mutex<TriggerState>,
    notify: Notify,
    every: Duration,
}

#[derive(Default)]
struct TriggerState {
    pending: BTreeSet<i64>,
    /// Running investigations, and whether each was triggered again meanwhile.
    busy: HashMap<i64, bool>,
    /// When each incident's last investigation started (dropped once older than `every`).
    last: HashMap<i64, tokio::time::Instant>,
    /// Incidents triggered within `every` of their last investigation, and when they are due.
    deferred: BTreeMap<i64, tokio::time::Instant>,
    /// Incidents whose triggers since their last investigation include a resolve or a re-fire:
    /// they are diagnosed again even if their alert names and services did not change.
    significant: BTreeSet<i64>,
    closed: bool,
}

/// One incident to investigate, and whether an alert of it resolved or fired again since the
/// last investigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trigger {
    pub id: i64,
    pub significant: bool,
}

impl Default for Triggers {
    fn default() -> Self {
        Triggers::new(Duration::from_secs(30))
    }
}

impl Triggers {
    pub fn new(every: Duration) -> Triggers {
        Triggers { state: Mutex::default(), notify: Notify::new(), every }
    }

    /// Incident `id` changed; `significant` when an alert of it resolved or fired again.
    pub fn push(&self, id: i64, significant: bool) {
        let mut st = self.state.lock().unwrap();
        if significant {
            st.significant.insert(id);
        }
        let now = tokio::time::Instant::now();
        match st.busy.get_mut(&id) {
            Some(again) => *again = true,
            None => match st.last.get(&id).map(|t| *t + self.every).filter(|due| *due > now) {
                Some(due) => {
                    st.deferred.entry(id).or_insert(due);
                }
                None => {
                    st.pending.insert(id);
                }
            },
        }
        drop(st);
        self.notify.notify_one();
    }

    /// No more pushes are coming: the responder ends once the work left is done (what waits
    /// for its interval runs now).
    pub fn close(&self) {
        self.state.lock().unwrap().closed = true;
        self.notify.notify_one();
    }

    /// The next incidents to investigate (marked running), or `None` once closed and idle.
    async fn take(&self) -> Option<Vec<Trigger>> {
        loop {
            let next_due = {
                let mut st = self.state.lock().unwrap();
                let now = tokio::time::Instant::now();
                let closed = st.closed;
                let due: Vec<i64> =
                    st.deferred.iter().filter(|(_, t)| closed || **t <= now).map(|(id, _)| *id).collect();
                for id in due {
                    st.deferred.remove(&id);
                    st.pending.insert(id);
                }
                let every = self.every;
                st.last.retain(|_, t| *t + every > now);
                if !st.pending.is_empty() {
                    let ids: Vec<i64> = std::mem::take(&mut st.pending).into_iter().collect();
                    let mut out = Vec::with_capacity(ids.len());
                    for id in ids {
                        st.busy.insert(id, false);
                        st.last.insert(id, now);
                        out.push(Trigger { id, significant: st.significant.remove(&id) });
                    }
                    return Some(out);
                }
                if st.closed && st.busy.is_empty() && st.deferred.is_empty() {
                    return None;
                }
                st.deferred.values().min().copied()
            };
            match next_due {
                Some(due) => {
                    tokio::select! {
                        _ = self.notify.notified() => {}
                        _ = tokio::time::sleep_until(due) => {}
                    }
                }
                None => self.notify.notified().await,
            }
        }
    }

    fn finish(&self, id: i64) {
        let mut st = self.state.lock().unwrap();
        if st.busy.remove(&id) == Some(true) {
            let due = st.last.get(&id).map(|t| *t + self.every).unwrap_or_else(tokio::time::Instant::now);
            st.deferred.insert(id, due);
        }
        drop(st);
        self.notify.notify_one();
    }
}

/// What the responder needs, fixed at start.
pub struct Responder {
    pub store: Arc<dyn Store>,
    pub sources: Sources,
    pub runbooks: Vec<Runbook>,
    pub golden: Vec<Golden>,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    pub cache: Cache,
    pub window: Window,
    /// Chat platforms to show each diagnosis on.
    pub notifier: Option<Arc<crate::chat::Notifier>>,
    /// The executor's clients: a plan's Kubernetes and Alertmanager steps are surveyed with
    /// them before it is proposed (what they will touch, or why they would be refused).
    pub limits: crate::executor::Limits,
    /// When a plan runs by itself, and the guardrails that stop that.
    pub autonomy: crate::autonomy::Config,
    pub guardrails: crate::guardrails::GuardrailConfig,
    /// What each incident's last diagnosis read: its firing alerts' names and services.
    pub digests: Mutex<HashMap<i64, u64>>,
}

/// The firing alerts' distinct (alert name, service) pairs, hashed: what a new diagnosis would
/// see differently.
fn digest(alerts: &[Alert]) -> u64 {
    use std::hash::{Hash, Hasher};
    let pairs: BTreeSet<(&str, &str)> =
        alerts.iter().map(|a| (a.name(), a.labels.get("service").map(String::as_str).unwrap_or(""))).collect();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    pairs.hash(&mut h);
    h.finish()
}

impl Responder {
    /// For a runbook whose ceiling is `auto`: whether this plan runs by itself for this
    /// incident, and why (its record, the environment's policy, the guardrails now).
    async fn earned(&self, plan: &mut ProposedPlan, alerts: &[Alert], now: crate::time::Millis) -> anyhow::Result<()> {
        if plan.autonomy != crate::runbook::Autonomy::Auto {
            return Ok(());
        }
        let record = self.store.autonomy(&plan.runbook).await?;
        let label = &self.autonomy.environment_label;
        let env = alerts.iter().find_map(|a| a.labels.get(label).map(String::as_str));
        let service = alerts.iter().find_map(|a| a.labels.get("service").map(String::as_str));
        let store = self.store.as_ref();
        let a = crate::store::guardrails_for(
            store,
            &self.guardrails,
            &self.runbooks,
            plan.incident_id,
            &plan.runbook,
            service,
            now,
        )
        .await?;
        let guardrail = a.stops_automation();
        plan.auto = crate::autonomy::assess(&self.autonomy, plan, &record, env, guardrail.as_deref());
        plan.hash = plan.content_hash();
        Ok(())
    }
}

/// One finished investigation.
#[derive(Debug, Clone)]
pub struct Report {
    pub incident_id: i64,
    pub gather: Duration,
    pub diagnose: Duration,
    pub cached: bool,
}

impl Responder {
    /// Investigates triggered incidents, up to eight at once, until `triggers` is closed
    /// and idle. Failures are logged; the next trigger tries again.
    pub async fn run(self: Arc<Self>, triggers: Arc<Triggers>) {
        let limit = Arc::new(Semaphore::new(PARALLEL));
        let mut tasks = JoinSet::new();
        while let Some(batch) = triggers.take().await {
            for Trigger { id, significant } in batch {
                let permit = limit.clone().acquire_owned().await.expect("never closed");
                let (me, triggers) = (self.clone(), triggers.clone());
                tasks.spawn(async move {
                    match me.investigate_if_changed(id, significant).await {
                        Ok(_) => {}
                        Err(e) => tracing::warn!(incident = id, error = %format!("{e:#}"), "investigation failed"),
                    }
                    triggers.finish(id);
                    drop(permit);
                });
            }
            while tasks.try_join_next().is_some() {}
        }
        while tasks.join_next().await.is_some() {}
    }

    /// [`Responder::investigate`], unless nothing diagnosis reads changed since the last time:
    /// no alert resolved or fired again (`significant`), and the firing alerts' names and
    /// services are the same set.
    pub async fn investigate_if_changed(&self, id: i64, significant: bool) -> anyhow::Result<Option<Report>> {
        let Some((incident, rows)) = self.store.incident(id).await? else { return Ok(None) };
        let alerts: Vec<Alert> =
            rows.into_iter().map(|r| r.alert).filter(|a| a.status == crate::alert::AlertStatus::Firing).collect();
        let digest = digest(&alerts);
        let same = self.digests.lock().unwrap().get(&id) == Some(&digest);
        if same && !significant {
            return Ok(None);
        }
        let report = self.diagnose(incident, alerts).await?;
        let mut digests = self.digests.lock().unwrap();
        if digests.len() > 10_000 {
            digests.clear();
        }
        digests.insert(id, digest);
        Ok(report)
    }

    /// Gathers, diagnoses, proposes and records for incident `id`; `None` if it has no firing
    /// alert any more.
    pub async fn investigate(&self, id: i64) -> anyhow::Result<Option<Report>> {
        let Some((incident, rows)) = self.store.incident(id).await? else { return Ok(None) };
        let alerts: Vec<Alert> =
            rows.into_iter().map(|r| r.alert).filter(|a| a.status == crate::alert::AlertStatus::Firing).collect();
        self.diagnose(incident, alerts).await
    }

    async fn diagnose(&self, incident: Incident, alerts: Vec<Alert>) -> anyhow::Result<Option<Report>> {
        let id = incident.id;
        if alerts.is_empty() {
            return Ok(None);
        }
        let now = self.clock.now();
        let inc = (id, incident.title.as_str());
        let started = Instant::now();
        let req = request(&alerts, &self.runbooks, &self.golden, now, inc, self.window);
        // Similar past incidents are read from the store while the sources answer.
        let ((ctx, cached), past) =
            tokio::join!(self.cache.gather(id, &self.sources, &req), history(self.store.as_ref(), &incident));
        let past = past?;
        let gather = started.elapsed();
        let started = Instant::now();
        let (d, mut plan) = conclude(&alerts, &self.runbooks, &self.golden, &ctx, inc, &past);
        let diagnose = started.elapsed();
        if let Some(Ok(p)) = &mut plan {
            crate::executor::survey(&self.limits, self.clock.as_ref(), p).await;
            self.earned(p, &alerts, now).await?;
        }
        if !cached {
            for q in &ctx.queries {
                self.metrics.observe_context_query(q.kind, &q.source, q.error.is_none(), Duration::from_millis(q.ms));
            }
        }
        self.metrics.observe_investigation(gather, diagnose);
        let mut entries = vec![AuditEntry {
            at: now,
            kind: Kind::Diagnosed,
            incident_id: Some(id),
            actor: "medic".into(),
            data: json!({
                "top": format!("{} ({:.0}%)", d.top().statement, d.top().confidence * 100.0),
                "diagnosis": d,
                "plan": plan.as_ref().map(|p| match p {
                    Ok(p) => json!({"hash": p.hash, "runbook": p.runbook}),
                    Err(e) => json!({"error": crate::redact::redact(e)}),
                }),
                "gather_ms": ms(gather),
                "diagnose_ms": ms(diagnose),
                "cached": cached,
                // With `cached`, these are the calls of the earlier gathering this one reused.
                "queries": ctx.queries,
                // The range they were asked over.
                "window": [ctx.start, ctx.end],
            }),
        }];
        if let Some(Ok(p)) = &plan {
            self.store.propose(p, &Identity("medic".into()), now).await?;
        }
        self.store.record(std::mem::take(&mut entries)).await?;
        if let Some(n) = &self.notifier {
            n.incident_changed(id).await?;
        }
        tracing::info!(
            incident = id,
            top = %d.top().statement,
            confidence = d.top().confidence,
            gather_ms = gather.as_millis() as u64,
            unavailable = d.unavailable.len(),
            "diagnosed"
        );
        Ok(Some(Report { incident_id: id, gather, diagnose, cached }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(batch: Option<Vec<Trigger>>) -> Vec<(i64, bool)> {
        batch.unwrap().into_iter().map(|t| (t.id, t.significant)).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_storm_into_one_incident_is_investigated_once_per_interval() {
        let t = Triggers::new(Duration::from_secs(30));
        t.push(1, false);
        assert_eq!(ids(t.take().await), [(1, false)], "the first trigger runs at once");
        t.finish(1);
        let started = tokio::time::Instant::now();
        for _ in 0..1000 {
            t.push(1, false);
        }
        t.push(2, false);
        assert_eq!(ids(t.take().await), [(2, false)], "another incident is not held up");
        t.finish(2);
        t.push(1, true);
        assert_eq!(ids(t.take().await), [(1, true)], "1000 triggers, one investigation, significant");
        assert_eq!(started.elapsed(), Duration::from_secs(30), "and only once the interval passed");
        // Triggered while it runs: once more afterwards, at the next interval.
        t.push(1, false);
        t.finish(1);
        assert_eq!(ids(t.take().await), [(1, false)]);
        assert_eq!(started.elapsed(), Duration::from_secs(60));
        t.finish(1);
        // Closing runs what still waits, then ends.
        t.push(1, false);
        t.close();
        assert_eq!(ids(t.take().await), [(1, false)]);
        t.finish(1);
        assert!(t.take().await.is_none());
        assert_eq!(started.elapsed(), Duration::from_secs(60), "closing does not wait out the interval");
    }
}
