//! Chat: where incidents are shown and decided. Each platform (Slack, Discord, Mattermost, the console) is
//! one adapter behind [`Platform`], fed by the outbox; only adapters know platform formats. Messages are rendered from `templates/<platform>/`
//! (handlebars), from one [`IncidentView`] that every adapter shares.

pub mod asking;
pub mod clicks;
pub mod console;
pub mod discord;
pub mod lease;
pub mod mattermost;
pub mod outbox;
pub mod slack;
pub mod summary;

use crate::diagnosis::Diagnosis;
use crate::incident::Incident;
use crate::plan::ProposedPlan;
use crate::time::rfc3339;
use async_trait::async_trait;
use serde_json::{Value, json};

/// A channel for incidents whose first alert carries all of `labels` (Slack and Discord
/// config).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub labels: std::collections::BTreeMap<String, String>,
    pub channel: String,
}

/// The channel of the first route whose labels all match, else `default`.
pub fn route(routes: &[Route], default: &str, labels: &crate::alert::Labels) -> String {
    routes
        .iter()
        .find(|r| r.labels.iter().all(|(k, v)| labels.get(k) == Some(v)))
        .map(|r| r.channel.clone())
        .unwrap_or_else(|| default.to_string())
}

/// A signed request's timestamp (`header` names it in the error) is within 5 minutes of now:
/// a captured request cannot be replayed later.
pub fn fresh(ts: &str, header: &str) -> Result<(), String> {
    fresh_at(ts, header, chrono::Utc::now().timestamp())
}

/// [`fresh`] at `now` (Unix seconds). The distance is computed with checked arithmetic: a
/// timestamp near `i64::MIN` must not wrap around into "fresh".
pub(crate) fn fresh_at(ts: &str, header: &str, now: i64) -> Result<(), String> {
    let t: i64 = ts.parse().map_err(|_| format!("{header} is not a number"))?;
    match now.checked_sub(t).and_then(i64::checked_abs) {
        Some(d) if d <= 300 => Ok(()),
        Some(_) => Err(format!("request timestamp is {}s away from now (more than 5 minutes)", now - t)),
        None => Err(format!("{header} is out of range")),
    }
}

/// Whether a plan hash read from a button is well formed (64 hex characters).
pub fn is_plan_hash(h: &str) -> bool {
    h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit())
}

/// What a cut text ends with: the rest is in the incident's thread.
pub const MORE: &str = "… see thread";

/// How long a click may take to be decided and stored before Slack or Discord is answered
/// anyway (both want an answer within 3 s); the click goes on being handled after.
pub const ACK_BUDGET: std::time::Duration = std::time::Duration::from_millis(2500);

/// `s` cut to `max` characters, ending "… see thread" when cut.
pub fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let keep = max.saturating_sub(MORE.chars().count() + 1);
    format!("{} {MORE}", s.chars().take(keep).collect::<String>().trim_end())
}

/// An incident message's colour (`0xRRGGBB`) by its state and severity, as every platform with
/// coloured messages shows it: green once resolved or verified, purple where a person must look
/// (rolled back, interrupted), else red, amber or blue by severity.
pub fn colour(state: &Value, severity: &Value, decision: &Value) -> u32 {
    let outcome = decision["outcome"].as_str().unwrap_or("");
    if state == "resolved" || outcome.starts_with("verified") {
        0x2e_b8_86
    } else if outcome.starts_with("rolled back") || outcome.starts_with("interrupted") {
        0x8e_44_ad
    } else {
        match severity.as_str().unwrap_or("") {
            "critical" | "page" | "error" => 0xe0_1e_5a,
            "warning" => 0xec_b2_2e,
            _ => 0x36_c5_f0,
        }
    }
}

/// A template value as text (null is empty).
pub fn display(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

handlebars::handlebars_helper!(hb_join: |*args| Value::String(args.iter().map(|a| display(a)).collect()));
handlebars::handlebars_helper!(hb_when: |c: Json, a: Json, b: Json| {
    let truthy = match c { Value::Null => false, Value::Bool(b) => *b, Value::String(s) => !s.is_empty(),
                           Value::Array(x) => !x.is_empty(), _ => true };
    if truthy { a.clone() } else { b.clone() }
});
handlebars::handlebars_helper!(hb_evidence_lines: |ev: Json| Value::String(ev.as_array().map(|a| a.iter().map(|e| {
    let spark = e["spark"].as_str().map(|s| format!("  `{s}`")).unwrap_or_default();
    format!("• {}{spark}\n", display(&e["text"]))
}).collect()).unwrap_or_default()));
handlebars::handlebars_helper!(hb_step_lines: |steps: Json| Value::String(steps.as_array().map(|a| a.iter().map(|s| {
    let mut line = format!("{}. {}\n", display(&s["n"]), display(&s["action"]));
    if !s["touches"].is_null() { line.push_str(&format!("    touches: {}\n", display(&s["touches"]))); }
    if !s["refused"].is_null() { line.push_str(&format!("    ⛔ refused now: {}\n", display(&s["refused"]))); }
    if !s["verify"].is_null() { line.push_str(&format!("    verify: {}\n", display(&s["verify"]))); }
    if !s["rollback"].is_null() { line.push_str(&format!("    rollback: {}\n", display(&s["rollback"]))); }
    line
}).collect()).unwrap_or_default()));

handlebars::handlebars_helper!(hb_json_text: |v: Json, max: u64| {
    Value::String(serde_json::to_string(&cut(&display(v), max as usize)).expect("a string serialises"))
});

/// `s` with a backslash before each of `anywhere`, and before each of `line_start` that
/// starts a line (after any indentation): Markdown's escapes, for a platform's set of markup.
pub fn backslash_escape(s: &str, anywhere: &[char], line_start: &[char]) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    let mut at_start = true;
    for c in s.chars() {
        if anywhere.contains(&c) || (at_start && line_start.contains(&c)) {
            out.push('\\');
        }
        out.push(c);
        at_start = c == '\n' || (at_start && c.is_whitespace());
    }
    out
}

/// Registers `text` for a platform whose template data is escaped beforehand ([`escaped_with`]):
/// the value as a JSON string, cut at `max` characters with "… see thread".
pub fn register_json_text(hb: &mut handlebars::Handlebars<'static>) {
    hb.register_helper("text", Box::new(hb_json_text));
}

/// `v` with every string in it passed through `escape` (a platform's Markdown escaping): the data
/// a template renders, so that only the template's own markup is markup.
pub fn escaped_with(v: &Value, escape: fn(&str) -> String) -> Value {
    match v {
        Value::String(s) => Value::String(escape(s)),
        Value::Array(a) => Value::Array(a.iter().map(|x| escaped_with(x, escape)).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, x)| (k.clone(), escaped_with(x, escape))).collect()),
        other => other.clone(),
    }
}

/// The members of a platform's user groups, cached for a while: what `slack:group:S…` and
/// `mattermost:group:…` entries in responders stand for.
pub struct GroupCache {
    ttl: std::time::Duration,
    groups: std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, Vec<String>)>>,
}

impl GroupCache {
    pub fn new(ttl: std::time::Duration) -> GroupCache {
        GroupCache { ttl, groups: Default::default() }
    }

    /// `responders`' groups, each `{platform}:group:ID` entry adding `{platform}:USER` for every
    /// member `fetch(ID)` lists (cached for the TTL; a failed fetch, `None`, is not cached and
    /// adds no one: its members cannot approve until the platform answers).
    pub async fn expand<F, Fut>(
        &self,
        responders: &crate::approval::Responders,
        platform: &str,
        fetch: F,
    ) -> crate::approval::Groups
    where
        F: Fn(String) -> Fut,
        Fut: std::future::Future<Output = Option<Vec<String>>>,
    {
        let prefix = format!("{platform}:group:");
        let mut g = responders.groups();
        for members in g.members.values_mut() {
            let mut extra = Vec::new();
            for id in members.iter().filter_map(|m| m.0.strip_prefix(&prefix)) {
                let cached = self.groups.lock().unwrap_or_else(|e| e.into_inner()).get(id).cloned();
                let users = match cached {
                    Some((at, users)) if at.elapsed() < self.ttl => users,
                    _ => match fetch(id.to_string()).await {
                        Some(users) => {
                            let mut cache = self.groups.lock().unwrap_or_else(|e| e.into_inner());
                            cache.insert(id.to_string(), (std::time::Instant::now(), users.clone()));
                            users
                        }
                        None => Vec::new(),
                    },
                };
                extra.extend(users.into_iter().map(|u| crate::approval::Identity(format!("{platform}:{u}"))));
            }
            members.extend(extra);
        }
        g
    }
}

/// A strict registry with the helpers every platform's templates share: `join` (concatenate),
/// `when` (a value by a condition), `evidence_lines`, `step_lines`. Each platform adds its own
/// `text` helper (its escaping and limits).
pub fn templates_with_helpers() -> handlebars::Handlebars<'static> {
    let mut hb = crate::plan::handlebars(true);
    hb.register_helper("join", Box::new(hb_join));
    hb.register_helper("when", Box::new(hb_when));
    hb.register_helper("evidence_lines", Box::new(hb_evidence_lines));
    hb.register_helper("step_lines", Box::new(hb_step_lines));
    hb
}

/// What an incident message shows, as template data.
#[derive(Debug, Clone)]
pub struct IncidentView(pub Value);

/// The incident's latest `diagnosed` audit record (its data) and the diagnosis in it.
pub async fn latest_diagnosis(store: &dyn crate::store::Store, id: i64) -> anyhow::Result<Option<(Value, Diagnosis)>> {
    diagnosis_in(&store.audit_for_incident(id).await?)
}

/// The latest `diagnosed` record of an incident's audit records (its data) and the diagnosis in it.
pub fn diagnosis_in(records: &[crate::audit::AuditRecord]) -> anyhow::Result<Option<(Value, Diagnosis)>> {
    let Some(record) = records.iter().rev().find(|r| r.kind == "diagnosed") else { return Ok(None) };
    let data: Value = serde_json::from_str(&record.data)?;
    let diagnosis: Diagnosis = serde_json::from_value(data["diagnosis"].clone())?;
    Ok(Some((data, diagnosis)))
}

/// The incident's view as the store has it now: the incident, its latest diagnosis, its latest
/// plan with its approvals and execution, and the kill switch. `None` before the first
/// diagnosis (there is nothing to show yet).
pub async fn view_for(store: &dyn crate::store::Store, id: i64) -> anyhow::Result<Option<IncidentView>> {
    let Some((incident, alerts)) = store.incident(id).await? else { return Ok(None) };
    let Some((data, diagnosis)) = latest_diagnosis(store, id).await? else { return Ok(None) };
    let status = store.plan_status(id).await?;
    let plan_error = data["plan"]["error"].as_str().map(str::to_string);
    let plan: Option<Result<ProposedPlan, String>> = match (&status, plan_error) {
        (Some(s), _) => Some(Ok(s.plan.plan.clone())),
        (None, Some(e)) => Some(Err(e)),
        (None, None) => None,
    };
    let paused = store.paused().await?;
    let mut view = IncidentView::new(
        &incident,
        &diagnosis,
        plan.as_ref(),
        status.as_ref().map(|s| s.plan.expires_at),
        paused.as_ref(),
    );
    view.show(status.as_ref());
    let mut services: Vec<&str> =
        alerts.iter().filter_map(|a| a.alert.labels.get("service").map(String::as_str)).collect();
    services.sort_unstable();
    services.dedup();
    view.0["services"] = json!(services.join(", "));
    Ok(Some(view))
}

impl IncidentView {
    /// `paused`: who paused automation and when, shown on every message while it lasts.
    pub fn new(
        incident: &Incident,
        diagnosis: &Diagnosis,
        plan: Option<&Result<ProposedPlan, String>>,
        expires_at: Option<i64>,
        paused: Option<&(String, i64)>,
    ) -> IncidentView {
        let top = diagnosis.top();
        let plan_view = match plan {
            Some(Ok(p)) => json!({
                "short_hash": &p.hash[..12],
                "hash": p.hash,
                "expected_impact": p.expected_impact,
                "steps": p.steps.iter().enumerate().map(|(i, s)| json!({
                    "n": i + 1, "id": s.id, "action": s.action.summary(),
                    "verify": s.post_check.as_ref().map(|c| c.summary()),
                    "rollback": s.rollback_text(),
                    "touches": s.touches, "refused": s.refused,
                })).collect::<Vec<_>>(),
                "min_approvers": p.approval.min_approvers,
                "groups": p.approval.groups.join(", "),
                "expires": expires_at.map(rfc3339),
            }),
            _ => Value::Null,
        };
        let no_plan = match plan {
            Some(Err(e)) => e.clone(),
            _ => "no runbook matches; people lead".into(),
        };
        let mut view = json!({
            "incident": {"id": incident.id, "title": incident.title, "state": incident.state.as_str(),
                         "severity": incident.severity},
            "service": diagnosis.service,
            "onset": rfc3339(diagnosis.onset),
            "top": {
                "statement": top.statement,
                "confidence": (top.confidence * 100.0).round() as i64,
                "runbook": top.runbook.clone().unwrap_or_else(|| "none".into()),
                "tier": top.tier,
                "evidence": top.evidence,
            },
            "unavailable": diagnosis.unavailable,
            "plan": plan_view,
            "no_plan": no_plan,
            "paused": paused.map(|(by, at)| json!({"by": by, "since": rfc3339(*at)})),
            // Set by `view_for` from the plan's state: which buttons show, whether it runs by
            // itself, the plan's decision and progress. Every key a template reads is present
            // in every view (templates are strict): null or false when it does not apply.
            "can_approve": false, "stop": false, "auto": null, "decision": null, "buttons": false,
            // Set by the notifier: a Ticket button, when a tracker is configured.
            "ticket": false,
            "resolved": incident.state == crate::incident::IncidentState::Resolved, "services": "",
        });
        // Everything shown passes redaction, the plan's text included (its step URLs, its
        // expected impact, the confirm dialog): the plan itself keeps what it must call.
        crate::redact::redact_json(&mut view);
        IncidentView(view)
    }

    /// Shows the plan's state on the view: its decision, progress and outcome, which buttons
    /// show, and whether it runs by itself. Without a plan, none of it.
    pub fn show(&mut self, status: Option<&crate::store::PlanStatus>) {
        let resolved = self.0["resolved"] == json!(true);
        if let Some(s) = status {
            let n_steps = s.plan.plan.steps.len() as i64;
            let (progress, outcome) = match s.execution.as_ref().map(|(st, step)| (st.as_str(), *step)) {
                Some(("running", k)) => (Some(format!("executing step {} of {n_steps}", (k + 1).min(n_steps))), None),
                Some(("succeeded", _)) => (None, Some("verified: every step and post-check passed".to_string())),
                Some(("rolled_back", k)) => (None, Some(format!("rolled back after step {} of {n_steps}", k + 1))),
                Some(("interrupted", _)) => {
                    (None, Some("interrupted: medic stopped while it ran; escalated to a person".to_string()))
                }
                Some((other, _)) => (None, Some(other.replace('_', " "))),
                None => (None, None),
            };
            let who: Vec<&str> = s.approvers.iter().map(|a| a.0.as_str()).collect();
            self.0["decision"] = json!({
                "state": s.plan.state.as_str(),
                "approvers": who.join(", "),
                "approvals": who.len(),
                "needed": s.plan.plan.approval.min_approvers,
                "progress": progress,
                "outcome": outcome,
            });
            let proposed = s.plan.state == crate::approval::PlanState::Proposed && !resolved;
            let running = matches!(s.execution.as_ref(), Some((st, _)) if st == "running");
            self.0["buttons"] = json!(proposed);
            self.0["can_approve"] = json!(proposed && s.plan.plan.autonomy != crate::runbook::Autonomy::Suggest);
            if let Some(a) = &s.plan.plan.auto {
                let waiting = proposed && s.auto_at.is_some();
                let by_itself = s.approvers.iter().any(|p| p.0 == crate::approval::AUTO);
                // Declined by the auto runner (paused, level lost, a guardrail): a person decides.
                let why = match a.runs_itself && proposed && !waiting {
                    true => "not running by itself any more (the thread says why): it needs approval".to_string(),
                    false => crate::redact::redact(&a.why),
                };
                self.0["auto"] = json!({"runs_itself": waiting || by_itself, "why": why,
                                         "runs_at": s.auto_at.filter(|_| waiting).map(rfc3339)});
                // Stop: while it waits for its delay, or while it runs by itself.
                self.0["stop"] = json!(waiting || (running && by_itself));
            }
        }
    }
}

/// Every hypothesis with all its evidence and the reasons for its confidence: what "More
/// evidence" shows, on every platform and at the console prompt.
pub fn more_evidence(d: &Diagnosis) -> String {
    let mut text = String::new();
    for (i, h) in d.hypotheses.iter().enumerate() {
        text.push_str(&format!("{}. {} ({:.0}%)\n", i + 1, h.statement, h.confidence * 100.0));
        for e in &h.evidence {
            let spark = e.spark.as_ref().map(|s| format!("  {s}")).unwrap_or_default();
            text.push_str(&format!("   • {}{spark}\n", e.text));
        }
        for reason in &h.reasons {
            text.push_str(&format!("   why: {reason}\n"));
        }
    }
    text
}

/// A chat platform that shows incidents through the outbox (Slack, Discord, Mattermost, the console). It turns the
/// shared view into its wire format and delivers what the outbox hands it.
#[async_trait]
pub trait Platform: outbox::Destination {
    /// Where an incident with these alert labels is posted.
    fn channel_for(&self, labels: &crate::alert::Labels) -> String;
    /// The root message's request body for `view` (also the body of its updates).
    fn root(&self, view: &IncidentView, channel: &str) -> anyhow::Result<String>;
    /// A reply's request body (also a message of its own: op `message`).
    fn reply(&self, channel: &str, text: &str) -> String;
    /// Every channel incidents may be posted to: the default and each route's.
    fn channels(&self) -> Vec<String>;
    /// A link to the incident's thread (its root message `root` in `channel`), where the
    /// platform gives one.
    async fn link(&self, _channel: &str, _root: &str) -> Option<String> {
        None
    }
    /// A long-lived connection's state for `/readyz` (Discord's Gateway, Mattermost's
    /// WebSocket), under its key: none when this platform holds no connection.
    fn connection(&self) -> Option<(&'static str, Value)> {
        None
    }
}

/// The default channel and each route's, once each.
pub fn route_channels(routes: &[Route], default: &str) -> Vec<String> {
    let mut out = vec![default.to_string()];
    for r in routes {
        if !out.contains(&r.channel) {
            out.push(r.channel.clone());
        }
    }
    out
}

/// Queues what chat should show when an incident changes, on every configured platform.
pub struct Notifier {
    pub store: std::sync::Arc<dyn crate::store::Store>,
    pub platforms: Vec<std::sync::Arc<dyn Platform>>,
    pub clock: std::sync::Arc<dyn crate::time::Clock>,
    /// A ticket tracker is configured: messages carry a Ticket button (the order `open a
    /// ticket for this`, through the asking path).
    pub tickets: bool,
}

impl Notifier {
    /// The labels that route the incident: its first alert's.
    async fn labels(&self, id: i64) -> anyhow::Result<crate::alert::Labels> {
        let alerts = self.store.incident(id).await?.map(|(_, a)| a).unwrap_or_default();
        Ok(alerts.into_iter().next().map(|a| a.alert.labels).unwrap_or_default())
    }

    /// Queues `op` for the incident on every platform, in the channel its labels route to. A
    /// body that cannot be built for one platform (its template failed on this view) is a
    /// failed delivery of that platform, shown in `/readyz` and `/metrics`; the others still
    /// get theirs.
    async fn queue(
        &self,
        id: i64,
        op: &str,
        body: impl Fn(&dyn Platform, &str) -> anyhow::Result<String>,
    ) -> anyhow::Result<()> {
        let labels = self.labels(id).await?;
        for p in &self.platforms {
            let channel = p.channel_for(&labels);
            let built = body(p.as_ref(), &channel);
            let mut item = crate::store::OutboxItem {
                platform: p.name().into(),
                incident_id: id,
                op: op.into(),
                body: String::new(),
                channel,
                target: None,
            };
            match built {
                Ok(body) => {
                    item.body = body;
                    self.store.outbox_push(&item, self.clock.now()).await?;
                }
                Err(e) => {
                    let error = crate::redact::redact(&format!("the {op} could not be built: {e:#}"));
                    tracing::error!(platform = p.name(), incident = id, %error, "a chat delivery failed to render");
                    self.store.outbox_refused(&item, &error, self.clock.now()).await?;
                }
            }
        }
        Ok(())
    }

    /// The incident's root message, posted the first time and updated after; false when there
    /// is nothing to show yet (no diagnosis).
    pub async fn incident_changed(&self, id: i64) -> anyhow::Result<bool> {
        let Some(mut view) = view_for(self.store.as_ref(), id).await? else { return Ok(false) };
        view.0["ticket"] = json!(self.tickets);
        self.queue(id, "post", |p, channel| p.root(&view, channel)).await?;
        Ok(true)
    }

    /// An execution's step event, as it is recorded: a thread line for a step's result or an
    /// escalation, then the root message's progress.
    pub async fn progress(&self, entry: &crate::audit::AuditEntry) -> anyhow::Result<()> {
        let Some(id) = entry.incident_id else { return Ok(()) };
        let kind = entry.kind.as_str();
        if matches!(kind, "step_succeeded" | "step_failed" | "step_rolled_back" | "escalated") {
            self.thread(
                id,
                &format!("{}: {}", kind.replace('_', " "), crate::audit::summarise(&entry.data.to_string())),
            )
            .await?;
        }
        self.incident_changed(id).await.map(drop)
    }

    /// Executions marked interrupted (`(plan hash, incident)`): each message shows it, and its
    /// thread says what a person must do. Failures are logged; the audit already holds them.
    pub async fn interrupted(&self, plans: &[(String, i64)]) {
        for (plan, id) in plans {
            let text = format!(
                "plan {} was interrupted: medic stopped while it ran. It is not re-run; escalated to a person, \
                 who must check the state of each step (see the audit log).",
                &plan[..plan.len().min(12)]
            );
            let r = async {
                self.thread(*id, &text).await?;
                self.incident_changed(*id).await
            };
            if let Err(e) = r.await {
                tracing::warn!(incident = id, error = %format!("{e:#}"), "could not show an interrupted plan in chat");
            }
        }
    }

    /// A line in the incident's thread on every platform.
    pub async fn thread(&self, id: i64, text: &str) -> anyhow::Result<()> {
        let text = crate::redact::redact(text);
        self.queue(id, "thread", |p, channel| Ok(p.reply(channel, &text))).await
    }
}

/// How often resolved incidents are looked for, to update their messages.
const RESOLVED_POLL: std::time::Duration = std::time::Duration::from_secs(2);

/// Incidents resolve on the writer's tick, not on a request: this task notices them and
/// updates their messages (state, buttons gone) and threads, until `stop`.
pub async fn watch_resolved(
    notifier: std::sync::Arc<Notifier>,
    clock: std::sync::Arc<dyn crate::time::Clock>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut since = clock.now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(RESOLVED_POLL) => {}
            _ = stop.changed() => return,
        }
        let filter = crate::store::IncidentFilter {
            state: Some(crate::incident::IncidentState::Resolved),
            limit: 200,
            ..Default::default()
        };
        let Ok(list) = notifier.store.incidents(&filter).await else { continue };
        let mut newest = since;
        for i in list.iter().filter(|i| i.resolved_at.is_some_and(|t| t > since)) {
            newest = newest.max(i.resolved_at.unwrap_or(since));
            // Only incidents chat has shown (they have a diagnosis) get the resolved line, and
            // once, whichever replica sees the resolution first.
            let event = format!("resolved:{}:{}", i.id, i.resolved_at.unwrap_or_default());
            let r = async {
                if notifier.store.first_delivery("medic", &event, clock.now()).await?
                    && notifier.incident_changed(i.id).await?
                {
                    notifier.thread(i.id, &format!("incident #{} resolved", i.id)).await?;
                }
                Ok::<(), anyhow::Error>(())
            };
            if let Err(e) = r.await {
                tracing::warn!(incident = i.id, error = %format!("{e:#}"), "could not queue the resolved update");
            }
        }
        since = newest;
    }
}

/// Loads the templates of one platform from `dir`, strict mode, no HTML escaping.
pub fn templates(dir: &std::path::Path) -> anyhow::Result<handlebars::Handlebars<'static>> {
    let mut hb = crate::plan::handlebars(true);
    for entry in std::fs::read_dir(dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|x| x == "hbs") {
            let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
            hb.register_template_file(&name, &path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        }
    }
    Ok(hb)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::approval::{PlanState, StoredPlan};
    use crate::incident::IncidentState;
    use crate::store::PlanStatus;

    fn incident(state: IncidentState) -> Incident {
        Incident {
            id: 4,
            group_key: "k".into(),
            title: "DiskFull on db-1".into(),
            severity: Some("critical".into()),
            state,
            opened_at: 0,
            last_fired_at: 0,
            n_alerts: 1,
            n_firing: 1,
            quiet_at: None,
            resolve_at: None,
            resolved_at: None,
        }
    }

    fn plan() -> ProposedPlan {
        let yaml = r#"
id: rb
title: t
tier: 2
match: {alerts: ['alertname="A"']}
hypothesis: h
plan:
  expected_impact: "db-1 gets room"
  steps:
    - id: clean
      action: {http: {url: "http://ops/clean"}}
      rollback: {http: {url: "http://ops/restore"}}
"#;
        crate::plan::build(&serde_norway::from_str(yaml).unwrap(), &json!({}), 4).unwrap()
    }

    fn status(state: PlanState, execution: Option<&str>, auto: bool) -> PlanStatus {
        let mut plan = plan();
        if auto {
            plan.auto = Some(crate::autonomy::AutoNote { runs_itself: true, why: "earned".into(), delay_secs: 60 });
        }
        PlanStatus {
            plan: StoredPlan {
                plan,
                state,
                requested_by: crate::approval::Identity("medic".into()),
                proposed_at: 0,
                expires_at: 3_600_000,
            },
            approvers: match state {
                PlanState::Approved => vec![crate::approval::Identity("slack:U1".into())],
                _ => Vec::new(),
            },
            execution: execution.map(|e| (e.to_string(), 0)),
            auto_at: auto.then_some(60_000),
        }
    }

    /// Every shape a view takes — no plan, a plan refused at proposal, a plan, a plan that runs
    /// by itself, running, verified, rolled back, interrupted, resolved, paused — renders on
    /// every platform. (Discord's template failed on a view with no plan: `decision` was missing.)
    #[test]
    fn every_template_renders_every_view_shape() {
        let diagnosis: Diagnosis = serde_json::from_value(json!({
            "service": "db-1", "onset": 0, "unavailable": [],
            "hypotheses": [{"statement": "no runbook matches; people lead", "confidence": 0.2, "runbook": null,
                            "tier": 5, "evidence": [], "reasons": []}],
        }))
        .unwrap();
        let refused: Result<ProposedPlan, String> = Err("the plan could not be built: no such var".into());
        let proposed: Result<ProposedPlan, String> = Ok(plan());
        let paused = ("slack:U1".to_string(), 0);
        #[allow(clippy::type_complexity)]
        let shapes: Vec<(
            &str,
            IncidentState,
            Option<&Result<ProposedPlan, String>>,
            Option<PlanStatus>,
            bool,
        )> = vec![
            ("no plan", IncidentState::Open, None, None, false),
            ("refused plan", IncidentState::Open, Some(&refused), None, false),
            ("plan", IncidentState::Open, Some(&proposed), Some(status(PlanState::Proposed, None, false)), false),
            ("auto plan", IncidentState::Open, Some(&proposed), Some(status(PlanState::Proposed, None, true)), false),
            (
                "running",
                IncidentState::Open,
                Some(&proposed),
                Some(status(PlanState::Approved, Some("running"), true)),
                false,
            ),
            (
                "verified",
                IncidentState::Open,
                Some(&proposed),
                Some(status(PlanState::Approved, Some("succeeded"), false)),
                false,
            ),
            (
                "rolled back",
                IncidentState::Open,
                Some(&proposed),
                Some(status(PlanState::Approved, Some("rolled_back"), false)),
                false,
            ),
            (
                "interrupted",
                IncidentState::Open,
                Some(&proposed),
                Some(status(PlanState::Approved, Some("interrupted"), false)),
                false,
            ),
            (
                "resolved with plan",
                IncidentState::Resolved,
                Some(&proposed),
                Some(status(PlanState::Rejected, None, false)),
                false,
            ),
            ("resolved, no plan", IncidentState::Resolved, None, None, false),
            ("paused, no plan", IncidentState::Open, None, None, true),
        ];
        let slack = slack::templates().unwrap();
        let discord = discord::templates().unwrap();
        let mattermost = mattermost::templates().unwrap();
        let console =
            console::Console::with_input(false, Box::new(std::io::sink()), Box::new(std::io::empty())).unwrap();
        let mut failures = Vec::new();
        // Every shape with and without the Ticket button.
        for ((name, state, plan, status, is_paused), ticket) in shapes.iter().flat_map(|s| [(s, false), (s, true)]) {
            let mut view = IncidentView::new(&incident(*state), &diagnosis, *plan, None, is_paused.then_some(&paused));
            view.show(status.as_ref());
            view.0["ticket"] = json!(ticket);
            let rendered = [
                ("slack", slack::root_body(&slack, &view, "C1")),
                ("discord", discord::root_body(&discord, &view)),
                ("mattermost", mattermost::root_body(&mattermost, &view, "c", "http://medic/a", |_, _, _| json!({}))),
                ("console", console.render(&view)),
            ];
            for (platform, r) in rendered {
                match r {
                    Ok(body) if body.contains("DiskFull on db-1") => {}
                    Ok(body) => failures.push(format!("{platform}, {name}: no title in {body}")),
                    Err(e) => failures.push(format!("{platform}, {name}: {e:#}")),
                }
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn freshness_cannot_be_fooled_by_overflow() {
        let now = 1_764_000_000;
        assert!(fresh_at(&now.to_string(), "ts", now).is_ok());
        assert!(fresh_at(&(now - 300).to_string(), "ts", now).is_ok());
        assert!(fresh_at(&(now - 301).to_string(), "ts", now).is_err());
        assert!(fresh_at(&(now + 301).to_string(), "ts", now).is_err());
        // `now - ts` wraps to i64::MIN, whose wrapping `abs()` is negative: it passed as fresh.
        let e = fresh_at(&(i64::MIN + now).to_string(), "X-Slack-Request-Timestamp", now).unwrap_err();
        assert!(e.contains("out of range"), "{e}");
        assert!(fresh_at(&i64::MIN.to_string(), "ts", now).is_err());
        assert!(fresh_at(&i64::MAX.to_string(), "ts", now).is_err());
    }
}
