//! Pages: when medic cannot help, a person hears it (spec §3: past the attempt budget medic
//! "pages a human"). Each destination is a module behind the small [`Pager`] trait, delivered
//! through the same durable outbox as chat (retries, `Retry-After`, 429, several replicas
//! delivering each page once): `pagerduty` (Events API v2) and `webhook` (a documented JSON
//! body with an optional HMAC signature, for Grafana IRM, incident.io, Squadcast and in-house
//! tools).
//!
//! [`watch`] reads the audit log as it grows (every replica; each page is queued once, by a key
//! in the store's delivery record) and pages (`paging.when`) for:
//! - an **escalation**: a plan failed and was rolled back, a plan was interrupted by a crash,
//!   a plan that ran by itself failed or was stopped (the executor records each as `escalated`);
//! - **autonomy lost**: a runbook that ran by itself failed and lost `auto`;
//! - **no runbook** matched an incident at severity critical (medic proposes nothing);
//! - a plan **waiting** for approval longer than `approval_waiting` (15 min), or whose
//!   **attempt budget** is spent (no approval can run it);
//! - medic's own **chat deliveries failing** (once a day);
//!
//! (`paging.routes` gives some incidents other rules, by their first alert's labels) and
//! resolves the page when the incident it was raised for resolves. It also queues the tickets
//! `tickets.when` asks for ([`crate::ticket`]) and links each created ticket in its incident's
//! thread. A page's one line says why; its details carry the incident's top hypothesis and what
//! medic tried; its link is the incident in medic's API.

pub mod pagerduty;
pub mod webhook;

use crate::audit::AuditRecord;
use crate::chat::outbox::Destination;
use crate::store::Store;
use crate::time::Clock;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// The `paging` section of the config.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub pagerduty: Option<pagerduty::Config>,
    #[serde(default)]
    pub webhook: Option<webhook::Config>,
    /// medic's address as people reach it (`https://medic.example.com`), for the page's link
    /// to the incident; none by default.
    #[serde(default)]
    pub external_url: Option<String>,
    #[serde(default)]
    pub when: When,
    /// Other rules for some incidents: the first route whose labels the incident's first
    /// alert all carries (`{labels: {env: staging}, when: {…}}`) gives its `when` (fields it
    /// leaves out take the built-in defaults); else `when`.
    #[serde(default)]
    pub routes: Vec<Route>,
}

/// A paging policy for the incidents whose first alert carries all of `labels`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub labels: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub when: When,
}

impl Config {
    /// The configured destinations.
    pub fn pagers(&self, timeout: Duration) -> Result<Vec<Arc<dyn Pager>>, String> {
        let mut out: Vec<Arc<dyn Pager>> = Vec::new();
        if let Some(c) = &self.pagerduty {
            out.push(Arc::new(pagerduty::PagerDuty::new(c, timeout)?));
        }
        if let Some(c) = &self.webhook {
            out.push(Arc::new(webhook::Webhook::new(c, timeout)?));
        }
        Ok(out)
    }
}

/// One page, as every destination words it.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub incident: i64,
    /// Why, in one line.
    pub summary: String,
    /// `critical`, `error`, `warning` or `info` (PagerDuty's words).
    pub severity: String,
    pub service: String,
    /// The top hypothesis and what medic tried.
    pub details: Value,
    pub link: Option<String>,
}

/// A destination pages go to: it words a trigger and a resolve; the outbox delivers them
/// (ops `trigger` and `resolve`, one dedup key per incident, so a second page updates the first).
pub trait Pager: Destination {
    fn trigger(&self, page: &Page) -> Value;
    fn resolve(&self, incident: i64) -> Value;
}

/// The dedup key of an incident's page on every destination; incident 0 is medic itself
/// (its chat deliveries failing).
pub fn dedup_key(incident: i64) -> String {
    if incident == 0 { "medic-degraded".into() } else { format!("medic-incident-{incident}") }
}

/// A page's severity from the alert's `severity` label: `critical` (also `page`, `emergency`,
/// `p1`) stays critical; anything else is `error`, never lower: medic pages because a person
/// must act.
fn severity(label: Option<&str>) -> &'static str {
    match label.unwrap_or("").to_ascii_lowercase().as_str() {
        "critical" | "page" | "emergency" | "p1" => "critical",
        _ => "error",
    }
}

/// What to page for, from an `escalated` or `autonomy_lost` record.
fn reason(r: &AuditRecord) -> Option<String> {
    let data: Value = serde_json::from_str(&r.data).unwrap_or(Value::Null);
    let said = |k: &str| data[k].as_str().map(str::to_string);
    let plan = data["plan"].as_str().map(|h| &h[..h.len().min(12)]).unwrap_or("?").to_string();
    match r.kind.as_str() {
        "escalated" => Some(match (said("stopped_by"), said("failed_step")) {
            (Some(by), _) => format!("plan {plan} was stopped by {by}; a person must take over"),
            (None, Some(step)) => format!(
                "plan {plan} failed at step {step} ({}); a person must take over",
                said("reason").unwrap_or_else(|| "no reason given".into())
            ),
            (None, None) => {
                format!("plan {plan}: {}", said("message").unwrap_or_else(|| "escalated to a person".into()))
            }
        }),
        "autonomy_lost" => Some(format!(
            "runbook {} ran by itself, failed and lost its autonomy; a person must look",
            said("runbook").unwrap_or_else(|| "?".into())
        )),
        _ => None,
    }
}

/// The page for `why` on incident `id`: its service and severity from its alerts, its top
/// hypothesis from its latest diagnosis.
pub async fn page_for(store: &dyn Store, id: i64, why: &str, external: Option<&str>) -> anyhow::Result<Page> {
    let (incident, alerts) = store.incident(id).await?.ok_or_else(|| anyhow::anyhow!("no incident #{id}"))?;
    let labels = alerts.first().map(|a| a.alert.labels.clone()).unwrap_or_default();
    let service = incident.service(&labels);
    let top = crate::chat::latest_diagnosis(store, id).await?.and_then(|(_, d)| {
        d.hypotheses.first().map(|h| json!({"hypothesis": h.statement, "confidence": h.confidence}))
    });
    let tried = store.plan_status(id).await?.map(|s| {
        json!({"plan": s.plan.plan.hash, "runbook": s.plan.plan.runbook, "state": s.plan.state.as_str(),
               "execution": s.execution.as_ref().map(|(state, _)| state.clone())})
    });
    Ok(Page {
        incident: id,
        summary: crate::redact::redact(&format!("medic incident #{id} on {service}: {why}")),
        severity: severity(labels.get("severity").map(String::as_str)).into(),
        service,
        details: json!({"incident": id, "why": why, "top_hypothesis": top, "what_medic_tried": tried,
                        "alerts": alerts.iter().filter_map(|a| a.alert.labels.get("alertname").cloned()).collect::<Vec<_>>()}),
        link: external.map(|u| format!("{}/v1/incidents/{id}", u.trim_end_matches('/'))),
    })
}

/// How often the audit log is read for what to page.
const EVERY: Duration = Duration::from_secs(2);
/// Open incidents are looked at for plans left waiting every this many reads (30 s): each look
/// reads every open incident's plan and guardrails.
const WAITING_EVERY: u64 = 15;
/// How long after a diagnosis medic looks whether it proposed a plan (the plan follows the
/// diagnosis record within the same response).
const SETTLE: crate::time::Millis = 10_000;

/// When to page (`paging.when`), with the defaults an on-call engineer would choose.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct When {
    /// A plan failed, was rolled back, stopped or interrupted; a plan that ran by itself failed.
    #[serde(default = "yes")]
    pub plan_failed: bool,
    /// A runbook that ran by itself failed and lost its autonomy.
    #[serde(default = "yes")]
    pub autonomy_lost: bool,
    /// An incident at this severity (the alert's `severity` label: `critical` also takes
    /// `page`) for which no runbook matched, so medic proposes nothing; `never` turns it off.
    #[serde(default = "critical")]
    pub no_runbook: String,
    /// A plan waiting for a person's approval this long; none: never.
    #[serde(default = "fifteen_minutes", with = "humantime_serde")]
    pub approval_waiting: Option<Duration>,
    /// The attempt budget is spent: medic proposes, but no approval can run it.
    #[serde(default = "yes")]
    pub budget_spent: bool,
    /// medic's own chat deliveries fail (refused for good in the last hour, or 3 still
    /// retrying): incidents may not reach people. At most once a day; resolved when they flow.
    #[serde(default = "yes")]
    pub chat_failing: bool,
}

fn yes() -> bool {
    true
}

fn critical() -> String {
    "critical".into()
}

fn fifteen_minutes() -> Option<Duration> {
    Some(Duration::from_secs(15 * 60))
}

impl Default for When {
    fn default() -> Self {
        When {
            plan_failed: true,
            autonomy_lost: true,
            no_runbook: critical(),
            approval_waiting: fifteen_minutes(),
            budget_spent: true,
            chat_failing: true,
        }
    }
}

/// What the watcher needs: the store, the destinations, the rules, and (to link tickets in the
/// incident's thread) chat.
pub struct Watcher {
    pub store: Arc<dyn Store>,
    pub pagers: Vec<Arc<dyn Pager>>,
    pub trackers: Vec<Arc<dyn crate::ticket::Tracker>>,
    pub when: When,
    pub routes: Vec<Route>,
    pub tickets: crate::ticket::When,
    pub external_url: Option<String>,
    pub runbooks: Vec<crate::runbook::Runbook>,
    pub guardrails: crate::guardrails::GuardrailConfig,
    pub notifier: Option<Arc<crate::chat::Notifier>>,
    pub clock: Arc<dyn Clock>,
    /// This replica paged that chat deliveries fail, and has not resolved it yet.
    pub degraded_paged: std::sync::atomic::AtomicBool,
    /// The day whose chat-failing page this replica has already asked the store about.
    pub degraded_day: std::sync::atomic::AtomicI64,
    /// Ticket deliveries this replica has linked or seen linked (`None` until the first look,
    /// which takes those already sent as linked by whoever ran then, as `watch` does with the
    /// audit log): the store's delivery record is asked once per ticket, not every 2 s, and a
    /// record that aged out of it never links a ticket twice.
    pub linked: std::sync::Mutex<Option<std::collections::HashSet<i64>>>,
}

/// Pages and tickets for what the audit log records from now on, resolves pages whose
/// incidents resolve, pages for plans left waiting, and links created tickets in their
/// incidents' threads, until `stop`. Every replica runs it; the store's delivery record queues
/// each page and ticket once.
pub async fn watch(w: Watcher, mut stop: tokio::sync::watch::Receiver<bool>) {
    if w.pagers.is_empty() && w.trackers.is_empty() {
        return;
    }
    // What was recorded before this replica started was handled by the one that ran then.
    let mut after = loop {
        match w.store.audit_head().await {
            Ok(seq) => break seq,
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "paging: cannot read the audit log"),
        }
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = stop.changed() => return,
        }
    };
    let mut reads = 0u64;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = stop.changed() => return,
        }
        reads += 1;
        let records = match w.store.audit_page(after, 500).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "paging: cannot read the audit log");
                continue;
            }
        };
        for r in &records {
            match w.handle(r).await {
                Ok(true) => after = r.seq,
                // A diagnosis not yet settled: read again on the next tick.
                Ok(false) => break,
                Err(e) => {
                    // Left for the next tick: nothing is lost, and the delivery record keeps it once.
                    tracing::warn!(seq = r.seq, error = %format!("{e:#}"), "paging: could not queue a page");
                    break;
                }
            }
        }
        if reads % WAITING_EVERY == 1
            && let Err(e) = w.waiting().await
        {
            tracing::warn!(error = %format!("{e:#}"), "paging: could not look at waiting plans");
        }
        if let Err(e) = w.degraded().await {
            tracing::warn!(error = %format!("{e:#}"), "paging: could not look at chat deliveries");
        }
        if let Err(e) = w.link_tickets().await {
            tracing::warn!(error = %format!("{e:#}"), "tickets: could not link a ticket in its thread");
        }
    }
}

impl Watcher {
    /// Pages `why` for incident `id` once per `key`, on every pager.
    async fn page(&self, id: i64, key: &str, why: &str) -> anyhow::Result<()> {
        if self.pagers.is_empty() || !self.store.first_delivery("page", key, self.clock.now()).await? {
            return Ok(());
        }
        let page = page_for(self.store.as_ref(), id, why, self.external_url.as_deref()).await?;
        tracing::warn!(incident = id, why = %page.summary, "paging a person");
        for p in &self.pagers {
            crate::chat::outbox::push(
                self.store.as_ref(),
                p.as_ref() as &dyn Destination,
                id,
                "trigger",
                &p.trigger(&page),
                self.clock.now(),
            )
            .await?;
        }
        Ok(())
    }

    /// The paging policy for incident `id`: its first alert's labels pick a route, else `when`.
    async fn when_for(&self, id: i64) -> anyhow::Result<&When> {
        if self.routes.is_empty() {
            return Ok(&self.when);
        }
        let labels = self.store.incident(id).await?.and_then(|(_, a)| a.into_iter().next()).map(|a| a.alert.labels);
        let labels = labels.unwrap_or_default();
        Ok(self
            .routes
            .iter()
            .find(|r| r.labels.iter().all(|(k, v)| labels.get(k) == Some(v)))
            .map_or(&self.when, |r| &r.when))
    }

    /// One ticket per incident and tracker, with the incident's story so far.
    async fn ticket(&self, id: i64, why: &str) -> anyhow::Result<()> {
        crate::ticket::open(self.store.as_ref(), &self.trackers, id, why, self.clock.now()).await.map(drop)
    }

    /// Handles one record; false when it must be read again later (a diagnosis too new to say
    /// whether a plan follows).
    async fn handle(&self, r: &AuditRecord) -> anyhow::Result<bool> {
        let Some(id) = r.incident_id else { return Ok(true) };
        let now = self.clock.now();
        match r.kind.as_str() {
            "escalated" | "autonomy_lost" => {
                let when = self.when_for(id).await?;
                let wanted = if r.kind == "escalated" { when.plan_failed } else { when.autonomy_lost };
                if let Some(why) = reason(r).filter(|_| wanted) {
                    self.page(id, &format!("trigger:{}", r.seq), &why).await?;
                }
                if r.kind == "escalated" && self.tickets.failed_plan {
                    self.ticket(id, "a plan failed and a person must take over").await?;
                }
            }
            "diagnosed" if !self.pagers.is_empty() => {
                let no_runbook = &self.when_for(id).await?.no_runbook;
                if no_runbook == "never" {
                    return Ok(true);
                }
                if now - r.at < SETTLE {
                    return Ok(false);
                }
                let Some((incident, alerts)) = self.store.incident(id).await? else { return Ok(true) };
                let level = alerts.first().and_then(|a| a.alert.labels.get("severity").cloned());
                let severe = severity(level.as_deref()) == "critical" || no_runbook != "critical";
                if severe
                    && incident.state != crate::incident::IncidentState::Resolved
                    && self.store.plan_status(id).await?.is_none()
                {
                    let why = "no runbook matches, so medic proposes nothing; a person must look";
                    self.page(id, &format!("no-runbook:{id}"), why).await?;
                }
            }
            "incident_resolved" => {
                for p in &self.pagers {
                    if self.store.outbox_has(p.name(), id, "trigger").await?
                        && self.store.first_delivery("page", &format!("resolve:{}:{}", p.name(), r.seq), now).await?
                    {
                        crate::chat::outbox::push(
                            self.store.as_ref(),
                            p.as_ref() as &dyn Destination,
                            id,
                            "resolve",
                            &p.resolve(id),
                            now,
                        )
                        .await?;
                    }
                }
                if self.tickets.resolved_by_itself && !self.trackers.is_empty() {
                    let records = self.store.audit_for_incident(id).await?;
                    let by_itself = records
                        .iter()
                        .any(|x| x.kind == "plan_approved" && x.actor == crate::approval::AUTO)
                        && records.iter().any(|x| x.kind == "execution_finished" && x.data.contains("\"succeeded\""));
                    if by_itself {
                        self.ticket(id, "medic resolved this incident by itself").await?;
                    }
                }
            }
            _ => {}
        }
        Ok(true)
    }

    /// Open incidents whose plan waits for a person: paged once the wait passes
    /// `approval_waiting`, or at once when the attempt budget is spent (no approval can run it).
    async fn waiting(&self) -> anyhow::Result<()> {
        if self.pagers.is_empty() {
            return Ok(());
        }
        let now = self.clock.now();
        let filter = crate::store::IncidentFilter {
            state: Some(crate::incident::IncidentState::Open),
            limit: 200,
            ..Default::default()
        };
        for incident in self.store.incidents(&filter).await? {
            let Some(status) = self.store.plan_status(incident.id).await? else { continue };
            if status.plan.state != crate::approval::PlanState::Proposed || status.auto_at.is_some() {
                continue;
            }
            let hash = &status.plan.plan.hash;
            let short = &hash[..hash.len().min(12)];
            let when = self.when_for(incident.id).await?;
            if let Some(wait) = when.approval_waiting {
                let waited = now - status.plan.proposed_at;
                if waited >= wait.as_millis() as crate::time::Millis {
                    let why = format!(
                        "plan {short} has waited {} for a person's approval",
                        humantime::format_duration(Duration::from_secs((waited / 60_000 * 60) as u64))
                    );
                    self.page(incident.id, &format!("waiting:{hash}"), &why).await?;
                }
            }
            if when.budget_spent {
                let service = self
                    .store
                    .incident(incident.id)
                    .await?
                    .and_then(|(_, a)| a.first().and_then(|a| a.alert.labels.get("service").cloned()));
                let a = crate::store::guardrails_for(
                    self.store.as_ref(),
                    &self.guardrails,
                    &self.runbooks,
                    incident.id,
                    &status.plan.plan.runbook,
                    service.as_deref(),
                    now,
                )
                .await?;
                if let Some(block) = a.blocks.iter().find(|b| b.contains("attempt budget")) {
                    self.page(incident.id, &format!("budget:{hash}"), block).await?;
                }
            }
        }
        Ok(())
    }

    /// Pages once a day (across replicas) when medic's own chat deliveries fail; the replica
    /// that paged resolves it when they flow again.
    async fn degraded(&self) -> anyhow::Result<()> {
        if self.pagers.is_empty() || !self.when.chat_failing {
            return Ok(());
        }
        let now = self.clock.now();
        let day = now / (24 * 3_600_000);
        let ours =
            |name: &str| self.pagers.iter().any(|p| p.name() == name) || self.trackers.iter().any(|t| t.name() == name);
        let health = self.store.outbox_health(now - 3_600_000).await?;
        let failing = health.iter().find(|h| !ours(&h.platform) && (h.failed > 0 || h.failing >= 3));
        match failing {
            Some(h) => {
                // Asked once a day per replica: the store's record decides which replica pages.
                if self.degraded_day.swap(day, std::sync::atomic::Ordering::SeqCst) == day
                    || !self.store.first_delivery("page", &format!("degraded:{day}"), now).await?
                {
                    return Ok(());
                }
                let why = format!(
                    "medic cannot deliver to {}: {} still retrying, {} refused in the last hour ({}); incidents may not reach people there",
                    h.platform,
                    h.failing,
                    h.failed,
                    h.last_error.as_deref().unwrap_or("no error recorded")
                );
                let page = Page {
                    incident: 0,
                    summary: crate::redact::redact(&why),
                    severity: "critical".into(),
                    service: "medic".into(),
                    details: serde_json::to_value(&health)?,
                    link: None,
                };
                tracing::error!(why = %page.summary, "paging a person: medic is degraded");
                // The replica that paged resolves it when deliveries flow again.
                self.degraded_paged.store(true, std::sync::atomic::Ordering::SeqCst);
                for p in &self.pagers {
                    crate::chat::outbox::push(
                        self.store.as_ref(),
                        p.as_ref() as &dyn Destination,
                        0,
                        "trigger",
                        &p.trigger(&page),
                        now,
                    )
                    .await?;
                }
            }
            None if self.degraded_paged.swap(false, std::sync::atomic::Ordering::SeqCst) => {
                for p in &self.pagers {
                    crate::chat::outbox::push(
                        self.store.as_ref(),
                        p.as_ref() as &dyn Destination,
                        0,
                        "resolve",
                        &p.resolve(0),
                        now,
                    )
                    .await?;
                }
            }
            None => {}
        }
        Ok(())
    }

    /// Tickets the trackers created: a line with the address in the incident's thread, once.
    async fn link_tickets(&self) -> anyhow::Result<()> {
        let Some(notifier) = &self.notifier else { return Ok(()) };
        for t in &self.trackers {
            let sent = self.store.outbox_sent(t.name(), "ticket", 50).await?;
            let new: Vec<_> = {
                let mut linked = self.linked.lock().unwrap_or_else(|e| e.into_inner());
                match linked.as_mut() {
                    None => {
                        *linked = Some(sent.iter().map(|(row, _, _)| *row).collect());
                        Vec::new()
                    }
                    Some(seen) => sent.into_iter().filter(|(row, _, _)| seen.insert(*row)).collect(),
                }
            };
            for (row, incident, address) in new {
                if self.store.first_delivery("ticket-link", &row.to_string(), self.clock.now()).await? {
                    notifier.thread(incident, &format!("{} ticket opened: {address}", t.name())).await?;
                }
            }
        }
        Ok(())
    }
}
