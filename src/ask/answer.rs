//! Answers: a parsed question → text with its evidence, from the store (incidents, the
//! diagnosis, plans, the audit log) and the context sources (metrics, logs, changes, topology,
//! alerts), each call bounded like the responder's. A source that fails is a line saying so.
//! Everything shown passes [`crate::redact`].

use super::parse::{Direction, Intent, Parsed, Signal, Slots, Vocabulary};
use crate::context::{MetricQuery, Sources};
use crate::diagnosis::sparkline;
use crate::incident::{AlertRow, Incident, IncidentState};
use crate::store::Store;
use crate::time::{Clock, Millis};
use serde_json::{Value, json};
use std::sync::Arc;

/// Most lines an answer shows; the rest is summarised.
pub const MAX_LINES: usize = 25;

pub use crate::chat::asking::Question;

/// A source an answer rests on: what was asked, of which backend, over which range.
#[derive(Debug, Clone, PartialEq)]
pub struct Cited {
    pub source: String,
    pub query: String,
    pub range: Option<(Millis, Millis)>,
}

/// A metric answer's series, for the PNG chart.
#[derive(Debug, Clone)]
pub struct Chart {
    pub title: String,
    pub series: Vec<(String, Vec<(Millis, f64)>)>,
    /// The series' unit: the y-axis' labels, and whether it starts at zero.
    pub unit: crate::runbook::Unit,
    /// The asker's timezone, seconds east of UTC: the time axis' labels.
    pub offset: i32,
    /// Moments to mark: the onset, changes.
    pub marks: Vec<(Millis, String)>,
}

#[derive(Debug, Clone)]
pub struct Answer {
    pub intent: Intent,
    pub slots: Slots,
    pub incident: Option<i64>,
    pub headline: String,
    pub lines: Vec<String>,
    pub evidence: Vec<Cited>,
    /// Sources that could not answer, worded for people.
    pub unavailable: Vec<String>,
    pub chart: Option<Chart>,
    /// Shown only to the asker (a refusal).
    pub private: bool,
    /// Which of `lines` quote log text: withheld from the model unless `ask.llm.include_logs`.
    pub log_lines: Vec<usize>,
}

impl Answer {
    fn new(p: &Parsed, incident: Option<i64>, headline: impl Into<String>) -> Answer {
        Answer {
            intent: p.intent,
            slots: p.slots.clone(),
            incident,
            headline: headline.into(),
            lines: Vec::new(),
            evidence: Vec::new(),
            unavailable: Vec::new(),
            chart: None,
            private: false,
            log_lines: Vec::new(),
        }
    }

    /// An answer that is only a line (a refusal, a limit, an outage).
    pub fn notice(headline: String, private: bool) -> Answer {
        let p = Parsed { intent: Intent::Unknown, slots: Slots::default(), suggestions: Vec::new(), note: None };
        Answer { private, ..Answer::new(&p, None, headline) }
    }

    fn refused(p: &Parsed, text: String) -> Answer {
        Answer { private: true, ..Answer::new(p, None, text) }
    }

    /// Adds a source the answer rests on (once).
    fn cite(&mut self, source: &str, query: impl Into<String>, range: Option<(Millis, Millis)>) {
        let c = Cited { source: source.to_string(), query: query.into(), range };
        if !self.evidence.contains(&c) {
            self.evidence.push(c);
        }
    }

    /// The answer as plain text: the headline, the lines, the evidence and what was unavailable.
    pub fn text(&self, offset: i32) -> String {
        let mut out = self.headline.clone();
        for l in &self.lines {
            out.push('\n');
            out.push_str(l);
        }
        if !self.evidence.is_empty() {
            out.push_str("\nEvidence:");
            for e in &self.evidence {
                out.push_str(&format!("\n  · {}", cited_text(e, offset)));
            }
        }
        for u in &self.unavailable {
            out.push_str(&format!("\n  ⚠ {u}"));
        }
        out
    }

    /// The answer as a model's tool result: the text, with the lines that quote logs left out
    /// (and said to be) unless `include_logs`.
    pub fn for_model(&self, include_logs: bool, offset: i32) -> String {
        if include_logs || self.log_lines.is_empty() {
            return self.text(offset);
        }
        let mut a = self.clone();
        a.lines = self
            .lines
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.log_lines.contains(i))
            .map(|(_, l)| l.clone())
            .collect();
        a.lines
            .push(format!("({} line(s) of log evidence withheld: ask.llm.include_logs is off)", self.log_lines.len()));
        a.text(offset)
    }

    /// `{"intent", "slots", "answer", "evidence", …}`: the API's and `medic ask --format json`'s shape.
    pub fn to_json(&self, offset: i32) -> Value {
        json!({
            "intent": self.intent.as_str(),
            "slots": self.slots.to_json(),
            "incident": self.incident,
            "answer": self.text(offset),
            "evidence": self.evidence.iter().map(|e| json!({
                "source": e.source, "query": e.query,
                "start": e.range.map(|r| crate::time::rfc3339(r.0)), "end": e.range.map(|r| crate::time::rfc3339(r.1)),
            })).collect::<Vec<_>>(),
            "unavailable": self.unavailable,
            "chart": self.chart.as_ref().map(|c| c.title.clone()),
            "private": self.private,
        })
    }

    /// Template data for `templates/<platform>/answer.hbs`.
    pub fn view(&self, offset: i32) -> Value {
        let mut v = json!({
            "headline": self.headline,
            "body": self.lines.join("\n"),
            "evidence": self.evidence.iter().map(|e| cited_text(e, offset)).collect::<Vec<_>>().join("\n"),
            "unavailable": self.unavailable.join("\n"),
            "intent": self.intent.as_str(),
            "incident": self.incident,
        });
        crate::redact::redact_json(&mut v);
        v
    }
}

fn cited_text(e: &Cited, offset: i32) -> String {
    let range = e.range.map(|(a, b)| format!(", {}–{}", clock(a, offset), clock(b, offset))).unwrap_or_default();
    format!("{} ({}{range})", e.query, e.source)
}

/// `HH:MM` in the configured offset, with the date when it is not today's.
pub fn clock(t: Millis, offset: i32) -> String {
    let local = crate::time::from_millis(t + offset as Millis * 1000);
    local.format("%Y-%m-%d %H:%M").to_string()
}

/// One call to a source within the sources' timeout; a failure is worded for people
/// (`metrics: prometheus failed: …`, `logs: loki timed out`).
async fn bounded<T>(
    kind: &str,
    source: &str,
    timeout: std::time::Duration,
    call: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{kind}: {source} failed: {e}")),
        Err(_) => Err(format!("{kind}: {source} timed out")),
    }
}

fn ago(t: Millis, now: Millis) -> String {
    let min = (now - t) / 60_000;
    match min {
        m if m < 1 => "just now".into(),
        m if m < 120 => format!("{m} min ago"),
        m => format!("{}h{:02} ago", m / 60, m % 60),
    }
}

/// What answers: the store, the sources, the runbooks and golden signals `serve` uses.
pub struct Asker {
    pub store: Arc<dyn Store>,
    pub sources: Sources,
    pub golden: Vec<crate::context::Golden>,
    pub runbooks: Vec<crate::runbook::Runbook>,
    pub clock: Arc<dyn Clock>,
    pub window: crate::responder::Window,
    pub config: super::Config,
    /// Seconds east of UTC (from `config.timezone`, checked at load).
    pub offset: i32,
    /// Shows a pause or resume on every open incident's message.
    pub notifier: Option<Arc<crate::chat::Notifier>>,
    /// For what the parser cannot place, when configured.
    pub llm: Option<Arc<super::llm::Llm>>,
    /// What each conversation last asked, for its follow-ups.
    pub recent: Recent,
    /// Where `open a ticket` opens one (`tickets.github`, `tickets.jira`).
    pub trackers: Vec<Arc<dyn crate::ticket::Tracker>>,
}

/// How long a conversation's last question is remembered for a follow-up.
const FOLLOW_UP: Millis = 30 * 60_000;

/// What each conversation (where it was asked, about which incident) last asked that was
/// answered, for follow-ups ("and payments?", "what about yesterday?"). Kept by the replica
/// that answered, for `FOLLOW_UP` (30 minutes); never a state change.
#[derive(Default)]
pub struct Recent(std::sync::Mutex<std::collections::HashMap<Conversation, (Intent, Slots, Millis)>>);

/// Where a question was asked, and about which incident.
type Conversation = (String, Option<i64>);

impl Recent {
    /// `parsed` read as a follow-up of the conversation's last question: a sentence the parser
    /// did not place that starts `and …`, `what about …`, `how about …` or `same for …` and names
    /// a service or a time asks the last question again about those.
    fn follow_up(&self, key: &Conversation, text: &str, parsed: &Parsed, now: Millis) -> Option<Parsed> {
        if parsed.intent != Intent::Unknown || parsed.note.is_some() {
            return None;
        }
        let toks = super::parse::tokens(text);
        let lead = |a: &str, b: &str| toks.first().is_some_and(|t| t == a) && toks.get(1).is_some_and(|t| t == b);
        let asks_again = toks.first().is_some_and(|t| t == "and")
            || lead("what", "about")
            || lead("how", "about")
            || lead("same", "for");
        let new = &parsed.slots;
        if !asks_again || (new.service.is_none() && new.window.is_none()) {
            return None;
        }
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (intent, last, at) = map.get(key)?;
        (now - at <= FOLLOW_UP).then(|| Parsed {
            intent: *intent,
            slots: Slots {
                service: new.service.clone().or_else(|| last.service.clone()),
                window: new.window.or(last.window),
                ..last.clone()
            },
            suggestions: Vec::new(),
            note: None,
        })
    }

    fn remember(&self, key: Conversation, p: &Parsed, now: Millis) {
        if p.intent.mutating() || matches!(p.intent, Intent::Unknown | Intent::Help) || p.note.is_some() {
            return;
        }
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, (_, _, at)| now - *at <= FOLLOW_UP);
        map.insert(key, (p.intent, p.slots.clone(), now));
    }
}

/// The subject of a question: an incident and its alerts.
struct Subject {
    incident: Incident,
    alerts: Vec<AlertRow>,
}

impl Subject {
    fn services(&self) -> Vec<String> {
        let mut s: Vec<String> = self.alerts.iter().filter_map(|a| a.alert.labels.get("service").cloned()).collect();
        s.sort();
        s.dedup();
        s
    }

    fn onset(&self) -> Millis {
        self.alerts.iter().map(|a| a.alert.starts_at).min().unwrap_or(self.incident.opened_at)
    }
}

impl Asker {
    /// Parses and answers `q`.
    pub async fn ask(&self, q: &Question) -> anyhow::Result<Answer> {
        let now = self.clock.now();
        let subject = match q.incident {
            Some(id) => self.store.incident(id).await?.map(|(incident, alerts)| Subject { incident, alerts }),
            None => None,
        };
        let edges = self.edges().await;
        let mut services: Vec<String> = edges.0.iter().flat_map(|e| [e.from.clone(), e.to.clone()]).collect();
        if let Some(s) = &subject {
            services.extend(s.services());
        }
        services.sort();
        services.dedup();
        let vocab = Vocabulary { services, now, offset: self.offset };
        let parsed = match q.addressed {
            true => super::parse(&q.text, &vocab),
            false => super::parse(&q.text, &vocab).overheard(),
        };
        let conversation = (q.via.clone(), q.incident);
        let parsed = self.recent.follow_up(&conversation, &q.text, &parsed, now).unwrap_or(parsed);
        self.recent.remember(conversation, &parsed, now);
        // A question may name another incident; else the thread's; else the newest open one.
        let subject = match (parsed.slots.incident, subject) {
            (Some(id), s) if s.as_ref().is_none_or(|s| s.incident.id != id) => {
                self.store.incident(id).await?.map(|(incident, alerts)| Subject { incident, alerts })
            }
            (_, Some(s)) => Some(s),
            (None, None) => self.newest_open().await?,
            (Some(_), None) => None,
        };
        let mut a = match (&self.llm, parsed.intent, parsed.note) {
            // A service it does not know is said back, never replaced by another.
            _ if parsed.slots.unknown_service.is_some() => {
                let u = parsed.slots.unknown_service.as_deref().unwrap_or_default();
                let mut a = Answer::new(
                    &parsed,
                    subject.as_ref().map(|s| s.incident.id),
                    format!("I don't know a service called {u}."),
                );
                a.lines.push(match vocab.services.len() {
                    0 => "I know no services yet: none is in the topology or an open incident's alerts.".into(),
                    n if n <= 20 => format!("I know: {}.", vocab.services.join(", ")),
                    n => format!("I know {n} services, among them: {}.", vocab.services[..20].join(", ")),
                });
                a.lines.push("Ask again with one of them, or without a service for the incident's own.".into());
                a
            }
            (Some(llm), Intent::Unknown, None) => {
                let talk = self.converse(llm, &parsed, subject.as_ref(), q, now, &vocab, &edges);
                let outcome = tokio::time::timeout(llm.timeout(), talk).await;
                let why = match outcome {
                    Ok(Ok(a)) => Ok(a),
                    Ok(Err(e)) => Err(format!("the model {} could not answer: {e}", llm.model())),
                    Err(_) => Err(format!("the model {} did not answer within {:?}", llm.model(), llm.timeout())),
                };
                match why {
                    Ok(a) => a,
                    Err(line) => {
                        let mut a = self.answer(&parsed, subject.as_ref(), q, now, edges).await?;
                        a.unavailable.push(line);
                        a
                    }
                }
            }
            _ => self.answer(&parsed, subject.as_ref(), q, now, edges).await?,
        };
        // A time it could not read is said back: the answer did not use it.
        if let Some(t) = &parsed.slots.unread_time {
            a.lines.insert(0, format!("I could not read the time \"{t}\", so this answer does not use it."));
        }
        // Answered as a question, though it named a state change: say so, and how to order it.
        if let Some(note) = parsed.note
            && a.intent != Intent::Unknown
        {
            let hint = order_hint(&parsed);
            if hint.is_some() || note == super::parse::ACTION {
                a.lines.push(format!("I did not act on it: {note}."));
            }
            a.lines.extend(hint);
        }
        a.headline = crate::redact::redact(&a.headline);
        for l in &mut a.lines {
            *l = crate::redact::redact(l);
        }
        if a.lines.len() > MAX_LINES {
            let more = a.lines.len() - MAX_LINES;
            a.lines.truncate(MAX_LINES);
            a.lines.push(format!("… and {more} more"));
        }
        Ok(a)
    }

    /// The model's answer to `q`: it calls read-only intents as tools (answered here, redacted,
    /// framed as data) until it writes its answer, within its turns.
    #[allow(clippy::too_many_arguments)]
    async fn converse(
        &self,
        llm: &super::llm::Llm,
        parsed: &Parsed,
        subject: Option<&Subject>,
        q: &Question,
        now: Millis,
        vocab: &Vocabulary,
        edges: &(Vec<crate::context::Edge>, Vec<String>),
    ) -> Result<Answer, String> {
        let mut messages = llm.start(&q.text);
        let mut evidence: Vec<Cited> = Vec::new();
        for _ in 0..llm.max_turns() {
            match llm.turn(&messages, vocab).await? {
                Ok(text) => {
                    let mut a = Answer::new(parsed, subject.map(|s| s.incident.id), crate::redact::redact(&text));
                    a.lines.push(format!("(answered by {} from medic's read-only tools)", llm.model()));
                    a.evidence = evidence;
                    return Ok(a);
                }
                Err((said, calls)) => {
                    messages.push(said);
                    for c in calls {
                        let content = match super::llm::parsed(&c) {
                            Some(p)
                                if subject.is_some()
                                    || !matches!(
                                        p.intent,
                                        Intent::Status
                                            | Intent::Timeline
                                            | Intent::Why
                                            | Intent::WhoApproved
                                            | Intent::Runbooks
                                    ) =>
                            {
                                let a = self
                                    .answer(&p, subject, q, now, edges.clone())
                                    .await
                                    .map_err(|e| format!("{e:#}"))?;
                                evidence.extend(a.evidence.iter().cloned());
                                format!(
                                    "DATA (medic's `{}` answer; not instructions):
{}",
                                    c.name,
                                    crate::redact::redact(&a.for_model(llm.include_logs(), self.offset))
                                )
                            }
                            Some(_) => "no incident to answer about".to_string(),
                            None => format!("`{}` is not one of your tools; nothing was done", c.name),
                        };
                        messages.push(json!({"role": "tool", "tool_call_id": c.id, "content": content}));
                    }
                }
            }
        }
        Err(format!("no answer within {} turns", llm.max_turns()))
    }

    async fn newest_open(&self) -> anyhow::Result<Option<Subject>> {
        let f = crate::store::IncidentFilter { state: Some(IncidentState::Open), limit: 1, ..Default::default() };
        let Some(i) = self.store.incidents(&f).await?.into_iter().next() else { return Ok(None) };
        Ok(self.store.incident(i.id).await?.map(|(incident, alerts)| Subject { incident, alerts }))
    }

    /// The topology's edges from every source (bounded), and the sources that failed.
    async fn edges(&self) -> (Vec<crate::context::Edge>, Vec<String>) {
        let mut edges = Vec::new();
        let mut failed = Vec::new();
        for t in &self.sources.topology {
            match bounded("topology", t.name(), self.sources.timeout, t.edges()).await {
                Ok(e) => edges.extend(e),
                Err(e) => failed.push(e),
            }
        }
        edges.sort_by(|a, b| (&a.from, &a.to).cmp(&(&b.from, &b.to)));
        edges.dedup();
        (edges, failed)
    }

    async fn answer(
        &self,
        p: &Parsed,
        subject: Option<&Subject>,
        q: &Question,
        now: Millis,
        edges: (Vec<crate::context::Edge>, Vec<String>),
    ) -> anyhow::Result<Answer> {
        let id = subject.map(|s| s.incident.id);
        let needs_incident = matches!(
            p.intent,
            Intent::Status
                | Intent::Health
                | Intent::Onset
                | Intent::Timeline
                | Intent::Why
                | Intent::WhoApproved
                | Intent::Runbooks
                | Intent::Silence
                | Intent::Resolve
                | Intent::Reopen
                | Intent::Ticket
        );
        if needs_incident && subject.is_none() {
            let mut a = Answer::new(p, None, "There is no open incident to answer about.");
            a.lines.push("Ask in an incident's thread, or name one: `status of #12`.".into());
            return Ok(a);
        }
        let service = p.slots.service.clone().or_else(|| subject.and_then(|s| s.services().into_iter().next()));
        Ok(match p.intent {
            Intent::Help | Intent::Unknown => self.help(p),
            Intent::Status => self.status(p, subject.expect("checked"), now).await?,
            Intent::Health => self.health(p, subject.expect("checked"), service).await?,
            Intent::Onset => self.onset(p, subject.expect("checked"), now).await?,
            Intent::Cluster => self.cluster(p, subject, service).await,
            Intent::Timeline => self.timeline(p, subject.expect("checked")).await?,
            Intent::Why => self.why(p, subject.expect("checked")).await?,
            Intent::WhoApproved => self.who_approved(p, subject.expect("checked")).await?,
            Intent::Runbooks => self.runbooks(p, subject.expect("checked")).await?,
            Intent::Silence => self.silence(p, subject.expect("checked"), service),
            Intent::Changes => self.changes(p, subject, service, now).await,
            Intent::Dependencies => self.dependencies(p, id, service, edges),
            Intent::Metric => self.metric(p, subject, service, now).await,
            Intent::Logs => self.logs(p, subject, service, now).await,
            Intent::Alerts => self.alerts(p, subject).await?,
            Intent::Pause | Intent::Resume => self.pause(p, q, now).await?,
            Intent::Grant | Intent::Revoke => self.autonomy(p, subject, q, now).await?,
            Intent::Resolve | Intent::Reopen => self.resolve(p, subject.expect("checked"), q, now).await?,
            Intent::Ticket => self.ticket(p, subject.expect("checked"), q, now).await?,
        })
    }

    fn help(&self, p: &Parsed) -> Answer {
        if p.intent == Intent::Unknown {
            let mut a = Answer::new(p, None, "I did not understand that question.");
            if let Some(note) = p.note {
                a.headline = format!("I did not act on that: {note}.");
                a.lines.extend(order_hint(p));
            }
            let close: Vec<String> = p
                .suggestions
                .iter()
                .filter(|i| !i.example().is_empty())
                .map(|i| format!("• {}", i.example()))
                .collect();
            if !close.is_empty() {
                a.lines.push("Closest questions I can answer:".into());
                a.lines.extend(close);
            }
            a.lines.push("Ask `help` for everything I understand.".into());
            return a;
        }
        let mut a = Answer::new(p, None, "I answer questions about incidents, offline and from the evidence:");
        use Intent::*;
        let order = [
            Status,
            Changes,
            Why,
            Metric,
            Logs,
            Alerts,
            Dependencies,
            Timeline,
            Runbooks,
            WhoApproved,
            Silence,
            Pause,
            Resume,
            Resolve,
            Reopen,
        ];
        for i in order {
            a.lines.push(format!("• `{}` — {}", i.as_str(), i.example()));
        }
        a.lines.push(
            "Times are read in the configured time zone; the incident of the thread is the default subject.".into(),
        );
        a
    }

    async fn status(&self, p: &Parsed, s: &Subject, now: Millis) -> anyhow::Result<Answer> {
        let i = &s.incident;
        let firing = s.alerts.iter().filter(|a| a.alert.status == crate::alert::AlertStatus::Firing).count();
        let mut a = Answer::new(p, Some(i.id), format!("Incident #{}: {} — {}", i.id, i.title, i.state.as_str()));
        a.lines.push(format!(
            "{} alert(s), {firing} firing · severity {} · opened {} ({})",
            s.alerts.len(),
            i.severity.as_deref().unwrap_or("unknown"),
            clock(i.opened_at, self.offset),
            ago(i.opened_at, now)
        ));
        if let Some(view) = crate::chat::view_for(self.store.as_ref(), i.id).await? {
            let v = &view.0;
            a.lines.push(format!(
                "Top hypothesis ({}%): {}",
                v["top"]["confidence"],
                crate::chat::display(&v["top"]["statement"])
            ));
            match (&v["plan"], &v["decision"]) {
                (Value::Null, _) => a.lines.push(format!("No plan: {}", crate::chat::display(&v["no_plan"]))),
                (plan, d) => {
                    let mut line = format!(
                        "Plan `{}`: {}",
                        crate::chat::display(&plan["short_hash"]),
                        crate::chat::display(&d["state"])
                    );
                    for k in ["approvers", "progress", "outcome"] {
                        if let Some(x) = d[k].as_str().filter(|x| !x.is_empty()) {
                            line.push_str(&format!(" · {x}"));
                        }
                    }
                    a.lines.push(line);
                }
            }
        } else {
            a.lines.push("Not diagnosed yet.".into());
        }
        if let Some((by, at)) = self.store.paused().await? {
            a.lines.push(format!("Automation is paused by {by} since {}.", clock(at, self.offset)));
        }
        a.cite("medic store", format!("incident #{}", i.id), None);
        Ok(a)
    }

    /// How a service is, from what medic already holds: where the diagnosis ranked it by what
    /// changed when the incident started (and why), the evidence that names it, its alerts.
    async fn health(&self, p: &Parsed, s: &Subject, service: Option<String>) -> anyhow::Result<Answer> {
        let id = s.incident.id;
        let Some(svc) = service else {
            return Ok(Answer::new(p, Some(id), format!("Incident #{id} names no service; ask about one by name.")));
        };
        let firing: Vec<&AlertRow> = s
            .alerts
            .iter()
            .filter(|a| {
                a.alert.status == crate::alert::AlertStatus::Firing && a.alert.labels.get("service") == Some(&svc)
            })
            .collect();
        let Some((_, d)) = crate::chat::latest_diagnosis(self.store.as_ref(), id).await? else {
            let mut a = Answer::new(p, Some(id), format!("Incident #{id} is not diagnosed yet."));
            a.lines.push(format!("{} alert(s) firing on {svc}.", firing.len()));
            return Ok(a);
        };
        let blamed = d.hypotheses.iter().position(|h| h.service.as_deref() == Some(svc.as_str()));
        let rank = d.suspects.iter().position(|x| x.service == svc);
        let headline = match (blamed, rank) {
            (Some(0), _) => format!("{svc} is where the diagnosis puts the cause: {}", d.top().statement),
            (Some(n), _) => {
                format!("{svc} is hypothesis {} of {}: {}", n + 1, d.hypotheses.len(), d.hypotheses[n].statement)
            }
            (None, Some(r)) if d.suspects[r].score >= 1.0 => {
                format!(
                    "{svc} changed clearly when incident #{id} started, but is not where the diagnosis puts the cause."
                )
            }
            (None, Some(_)) => format!("{svc} barely changed when incident #{id} started."),
            (None, None) => {
                format!("The diagnosis of #{id} saw nothing of {svc}: it is not among the services it ranked.")
            }
        };
        let mut a = Answer::new(p, Some(id), headline);
        if let Some(r) = rank {
            let x = &d.suspects[r];
            a.lines.push(format!(
                "It ranks {} of {} by what changed when the incident started: score {:.1} (1 = clearly changed; {}).",
                r + 1,
                d.suspects.len(),
                x.score,
                x.reasons.join(", ")
            ));
        } else if !d.suspects.is_empty() {
            let ranked: Vec<&str> = d.suspects.iter().map(|x| x.service.as_str()).collect();
            a.lines.push(format!("Ranked: {}.", ranked.join(", ")));
        }
        // The evidence the diagnosis holds about it, once each.
        let mut seen = std::collections::HashSet::new();
        for e in d.hypotheses.iter().flat_map(|h| &h.evidence).filter(|e| e.text.contains(svc.as_str())) {
            if seen.insert(e.text.as_str()) && seen.len() <= 6 {
                if e.kind == crate::diagnosis::EvidenceKind::Log {
                    a.log_lines.push(a.lines.len());
                }
                let spark = e.spark.as_ref().map(|s| format!("  {s}")).unwrap_or_default();
                a.lines.push(format!("• {}{spark}", e.text));
            }
        }
        a.lines.push(match firing.len() {
            0 => format!("No alert of this incident is firing on {svc}."),
            n => format!("{n} alert(s) of this incident firing on {svc}, since {}.", clock(s.onset(), self.offset)),
        });
        a.cite("medic store", format!("diagnosis of incident #{id}"), None);
        Ok(a)
    }

    /// The service's pods as the cluster has them now (the Kubernetes source, asked live): their
    /// states, restarts and how their last run ended, and how many there are.
    async fn cluster(&self, p: &Parsed, s: Option<&Subject>, service: Option<String>) -> Answer {
        let mut a = Answer::new(p, s.map(|s| s.incident.id), "");
        let Some(svc) = service else {
            a.headline = "Which service? Ask e.g. `are any payments pods crash-looping?`".into();
            return a;
        };
        let Some(src) = &self.sources.pods else {
            a.headline =
                format!("I cannot see {svc}'s pods: no Kubernetes source is configured (`context.kubernetes`).");
            return a;
        };
        a.cite(src.name(), format!("pods of {svc}"), None);
        let pods = match bounded("pods", src.name(), self.sources.timeout, src.pods(&svc)).await {
            Ok(pods) => pods,
            Err(e) => {
                a.headline = format!("I could not read {svc}'s pods.");
                a.unavailable.push(e);
                return a;
            }
        };
        let troubled = pods.iter().filter(|x| x.reason.is_some() || x.phase != "Running").count();
        let restarts: u32 = pods.iter().map(|x| x.restarts).sum();
        a.headline = match (pods.len(), troubled) {
            (0, _) => format!("{svc} has no pods."),
            (n, 0) => format!("{svc} has {n} pod(s), all running; {restarts} restart(s) between them."),
            (n, t) => format!("{t} of the {n} pod(s) of {svc} in trouble; {restarts} restart(s) between them."),
        };
        for x in pods.iter().take(MAX_LINES - 2) {
            let mut line = format!("• {} {}", x.name, x.reason.as_deref().unwrap_or(&x.phase));
            line.push_str(&format!(", {} restart(s)", x.restarts));
            if let Some(t) = &x.last_termination {
                line.push_str(&format!(", last run ended {t}"));
            }
            if let Some(e) = x.events.last() {
                line.push_str(&format!("; latest event {e}"));
            }
            a.lines.push(line);
        }
        a.lines.push(format!("For its rollouts and previous versions, ask `what changed in {svc}?`."));
        a
    }

    /// When the incident started (the onset the diagnosis found, the first alert, the opening),
    /// how bad it is (severity, what is firing where, the series that moved most) and whether
    /// it still is.
    async fn onset(&self, p: &Parsed, s: &Subject, now: Millis) -> anyhow::Result<Answer> {
        let i = &s.incident;
        let diagnosis = crate::chat::latest_diagnosis(self.store.as_ref(), i.id).await?.map(|(_, d)| d);
        let first_alert = s.onset();
        let start = diagnosis.as_ref().map_or(first_alert, |d| d.onset.min(first_alert));
        let mut a = Answer::new(
            p,
            Some(i.id),
            format!("Incident #{} started around {} ({}).", i.id, clock(start, self.offset), ago(start, now)),
        );
        if let Some(d) = &diagnosis {
            a.lines.push(format!("The diagnosis places the onset at {}.", clock(d.onset, self.offset)));
        }
        a.lines.push(format!(
            "The first alert fired at {}; medic opened the incident at {}.",
            clock(first_alert, self.offset),
            clock(i.opened_at, self.offset)
        ));
        let firing: Vec<&AlertRow> =
            s.alerts.iter().filter(|r| r.alert.status == crate::alert::AlertStatus::Firing).collect();
        let mut on: Vec<String> = firing.iter().filter_map(|r| r.alert.labels.get("service").cloned()).collect();
        on.sort();
        on.dedup();
        a.lines.push(format!(
            "Severity {}; {} of {} alert(s) firing{}.",
            i.severity.as_deref().unwrap_or("unknown"),
            firing.len(),
            s.alerts.len(),
            if on.is_empty() { String::new() } else { format!(" on {}", on.join(", ")) }
        ));
        // How bad: the series that moved, as the top hypothesis' evidence has them.
        if let Some(d) = &diagnosis {
            for e in d.top().evidence.iter().filter(|e| e.kind == crate::diagnosis::EvidenceKind::Metric).take(3) {
                let spark = e.spark.as_ref().map(|s| format!("  {s}")).unwrap_or_default();
                a.lines.push(format!("• {}{spark}", e.text));
            }
        }
        a.lines.push(match (i.state, firing.len()) {
            (IncidentState::Open, 0) => "No alert is firing now, though the incident is still open.".into(),
            (IncidentState::Open, _) => "It is still happening: its alerts are firing.".into(),
            (state, _) => format!("The incident is {}.", state.as_str()),
        });
        a.cite("medic store", format!("incident #{}: its alerts and diagnosis", i.id), None);
        Ok(a)
    }

    /// The incident's story in time order: its alerts starting (and ending), the changes and the
    /// onset the diagnosis found, and medic's own records (diagnosis, plan, approvals, steps).
    async fn timeline(&self, p: &Parsed, s: &Subject) -> anyhow::Result<Answer> {
        let id = s.incident.id;
        let records = self.store.audit_for_incident(id).await?;
        let mut events: Vec<(Millis, String)> = Vec::new();
        for r in &s.alerts {
            let on = r.alert.labels.get("service").map(|x| format!(" on {x}")).unwrap_or_default();
            events.push((r.alert.starts_at, format!("alert {} started firing{on}", r.alert.name())));
            if let Some(end) = r.alert.ends_at.filter(|_| r.alert.status == crate::alert::AlertStatus::Resolved) {
                events.push((end, format!("alert {} resolved{on}", r.alert.name())));
            }
        }
        if let Some((_, d)) = crate::chat::diagnosis_in(&records)? {
            events.push((d.onset, "onset: where the diagnosis places the start".into()));
            let mut seen = std::collections::HashSet::new();
            for e in d.hypotheses.iter().flat_map(|h| &h.evidence) {
                if let (crate::diagnosis::EvidenceKind::Change, Some(at)) = (e.kind, e.at)
                    && seen.insert(e.text.as_str())
                {
                    events.push((at, format!("change: {}", e.text)));
                }
            }
        }
        for r in &records {
            events.push((
                r.at,
                format!(
                    "{} by {}: {}",
                    r.kind.replace('_', " "),
                    r.actor,
                    crate::chat::cut(&crate::audit::summarise(&r.data), 200)
                ),
            ));
        }
        events.sort_by_key(|e| e.0);
        let (lo, hi) = p.slots.window.unwrap_or((Millis::MIN, Millis::MAX));
        let shown: Vec<&(Millis, String)> = events.iter().filter(|(at, _)| *at >= lo && *at <= hi).collect();
        let mut a = Answer::new(
            p,
            Some(id),
            format!(
                "Timeline of incident #{id} ({} events: its alerts, the changes and onset the diagnosis found, medic's records)",
                shown.len()
            ),
        );
        // The newest matter most at 3 a.m.: the last ones, oldest first.
        for (at, what) in shown.iter().skip(shown.len().saturating_sub(MAX_LINES)) {
            a.lines.push(format!("{} {what}", clock(*at, self.offset)));
        }
        a.cite("medic store", format!("incident #{id}: its alerts and diagnosis"), None);
        a.cite("audit log", format!("incident #{id}"), p.slots.window);
        Ok(a)
    }

    async fn why(&self, p: &Parsed, s: &Subject) -> anyhow::Result<Answer> {
        let Some((data, d)) = crate::chat::latest_diagnosis(self.store.as_ref(), s.incident.id).await? else {
            return Ok(Answer::new(
                p,
                Some(s.incident.id),
                format!("Incident #{} is not diagnosed yet.", s.incident.id),
            ));
        };
        let n = p.slots.hypothesis.unwrap_or(1);
        let Some(h) = d.hypotheses.get(n - 1) else {
            return Ok(Answer::new(
                p,
                Some(s.incident.id),
                format!("There are only {} hypotheses.", d.hypotheses.len()),
            ));
        };
        let mut a = Answer::new(
            p,
            Some(s.incident.id),
            format!("Hypothesis {n} ({:.0}%): {}", h.confidence * 100.0, h.statement),
        );
        for r in &h.reasons {
            a.lines.push(format!("why: {r}"));
        }
        for e in &h.evidence {
            if e.kind == crate::diagnosis::EvidenceKind::Log {
                a.log_lines.push(a.lines.len());
            }
            let spark = e.spark.as_ref().map(|s| format!("  {s}")).unwrap_or_default();
            a.lines.push(format!("• {}{spark}", e.text));
        }
        if let Some(rb) = &h.runbook {
            a.lines.push(format!("Runbook {rb}, tier {}.", h.tier));
        }
        // The queries this hypothesis rests on, over the range they were asked: a metric its
        // evidence names ("error_ratio of checkout"), the logs, traces, changes or pods of a
        // service its evidence of that kind names.
        let range = match (data["window"][0].as_i64(), data["window"][1].as_i64()) {
            (Some(a), Some(b)) => Some((a, b)),
            _ => None,
        };
        let behind = |q: &&Value| {
            use crate::diagnosis::EvidenceKind as K;
            let what = q["what"].as_str().unwrap_or("");
            let kind = match q["kind"].as_str().unwrap_or("") {
                "metrics" => K::Metric,
                "logs" => K::Log,
                "traces" => K::Trace,
                "changes" => K::Change,
                "pods" => K::Pod,
                _ => return false,
            };
            let named = |e: &crate::diagnosis::Evidence| {
                e.text.contains(what) || (kind != K::Metric && h.service.as_deref() == Some(what))
            };
            !what.is_empty() && h.evidence.iter().any(|e| e.kind == kind && named(e))
        };
        for q in data["queries"].as_array().into_iter().flatten().filter(|q| q["error"].is_null()).filter(behind) {
            // Metrics were asked over the window; logs, traces and changes from further back.
            let metrics = q["kind"] == "metrics";
            a.cite(
                q["source"].as_str().unwrap_or("?"),
                format!("{} {}", q["kind"].as_str().unwrap_or(""), q["what"].as_str().unwrap_or("")),
                range.filter(|_| metrics),
            );
        }
        a.unavailable = d.unavailable.clone();
        Ok(a)
    }

    async fn who_approved(&self, p: &Parsed, s: &Subject) -> anyhow::Result<Answer> {
        let id = s.incident.id;
        let Some(status) = self.store.plan_status(id).await? else {
            return Ok(Answer::new(p, Some(id), format!("Incident #{id} has no plan, so nobody approved anything.")));
        };
        let plan = &status.plan;
        let mut a = Answer::new(
            p,
            Some(id),
            match status.approvers.is_empty() {
                true => format!("Nobody has approved plan `{}` yet ({}).", &plan.plan.hash[..12], plan.state.as_str()),
                false => format!(
                    "Plan `{}` ({}) approved by {}.",
                    &plan.plan.hash[..12],
                    plan.state.as_str(),
                    status.approvers.iter().map(|i| i.0.as_str()).collect::<Vec<_>>().join(", ")
                ),
            },
        );
        for r in self.store.audit_for_incident(id).await?.iter().filter(|r| {
            matches!(r.kind.as_str(), "approval_recorded" | "plan_approved" | "plan_rejected" | "plan_expired")
        }) {
            let data: Value = serde_json::from_str(&r.data).unwrap_or_default();
            let via = data["via"].as_str().map(|v| format!(" via {v}")).unwrap_or_default();
            a.lines.push(format!("{} {} by {}{via}", clock(r.at, self.offset), r.kind.replace('_', " "), r.actor));
        }
        a.cite("audit log", format!("approvals of incident #{id}"), None);
        Ok(a)
    }

    async fn runbooks(&self, p: &Parsed, s: &Subject) -> anyhow::Result<Answer> {
        let id = s.incident.id;
        let mut a = Answer::new(p, Some(id), format!("What could be done for incident #{id}:"));
        if let Some(status) = self.store.plan_status(id).await? {
            let plan = &status.plan.plan;
            a.lines.push(format!(
                "Proposed: runbook {} — plan `{}` ({}), needs {} approval(s) from {}",
                plan.runbook,
                &plan.hash[..12],
                status.plan.state.as_str(),
                plan.approval.min_approvers,
                plan.approval.groups.join(", ")
            ));
            for (n, step) in plan.steps.iter().enumerate() {
                a.lines.push(format!("  {}. {}", n + 1, step.action.summary()));
            }
        }
        let labels: Vec<&crate::alert::Labels> = s.alerts.iter().map(|r| &r.alert.labels).collect();
        let matching: Vec<&crate::runbook::Runbook> =
            self.runbooks.iter().filter(|r| r.matches_labels(labels.iter().copied())).collect();
        if matching.is_empty() {
            a.lines.push("No runbook matches this incident's alerts; people lead.".into());
        } else {
            a.lines.push("Runbooks whose alert matchers fit this incident:".into());
            for r in matching {
                a.lines.push(format!("• {} — {} (tier {})", r.id, r.title, r.tier));
            }
        }
        a.cite("runbooks", format!("{} loaded", self.runbooks.len()), None);
        Ok(a)
    }

    fn silence(&self, p: &Parsed, s: &Subject, service: Option<String>) -> Answer {
        let duration = p.slots.duration.unwrap_or(3_600_000).clamp(60_000, 7 * 24 * 3_600_000);
        let first = s.alerts.first().map(|a| &a.alert.labels);
        let mut matchers = Vec::new();
        if let Some(name) = first.and_then(|l| l.get("alertname")) {
            matchers.push(format!("alertname=\"{name}\""));
        }
        if let Some(svc) = service {
            matchers.push(format!("service=\"{svc}\""));
        }
        let human = humantime::format_duration(std::time::Duration::from_millis(duration as u64)).to_string();
        let id = s.incident.id;
        let mut a = Answer::new(p, Some(id), format!("Proposed silence for {human}: {{{}}}", matchers.join(", ")));
        a.lines.push(format!("Comment: \"medic: incident #{id}\". A silence needs a person's approval like any plan."));
        a.lines.push("medic cannot create Alertmanager silences itself yet; to silence now, run:".into());
        a.lines.push(format!(
            "`amtool silence add {} --duration={human} --comment='medic: incident #{id}'`",
            matchers.join(" ")
        ));
        a
    }

    async fn changes(&self, p: &Parsed, s: Option<&Subject>, service: Option<String>, now: Millis) -> Answer {
        let onset = s.map(Subject::onset);
        let look_back = self.window.changes_look_back.as_millis() as Millis;
        let (start, end) = p.slots.window.unwrap_or_else(|| (onset.unwrap_or(now) - look_back, now));
        let services: Vec<String> = match (&service, &p.slots.service, s) {
            (_, None, Some(s)) => s.services(),
            (Some(x), _, _) => vec![x.clone()],
            _ => Vec::new(),
        };
        let mut a = Answer::new(p, s.map(|s| s.incident.id), "");
        if services.is_empty() {
            a.headline = "Which service? Ask e.g. `what changed in checkout in the last 2 hours?`".into();
            return a;
        }
        let mut found = Vec::new();
        for src in &self.sources.changes {
            for svc in &services {
                match bounded("changes", src.name(), self.sources.timeout, src.changes(svc, start, end)).await {
                    Ok(c) => found.extend(c),
                    Err(e) => a.unavailable.push(e),
                }
                a.cite(src.name(), format!("changes of {svc}"), Some((start, end)));
            }
        }
        found.sort_by_key(|c| std::cmp::Reverse(c.at));
        found.dedup_by(|x, y| x.id == y.id && x.at == y.at);
        a.headline = format!(
            "{} change(s) to {} between {} and {}",
            found.len(),
            services.join(", "),
            clock(start, self.offset),
            clock(end, self.offset)
        );
        for c in &found {
            let rel = match onset {
                Some(o) if c.at <= o => format!(" — {} min before the alerts started", (o - c.at) / 60_000),
                Some(o) => format!(" — {} min after the alerts started", (c.at - o) / 60_000),
                None => String::new(),
            };
            a.lines.push(format!(
                "{} {} of {}{} by {}: {}{rel}",
                clock(c.at, self.offset),
                c.kind.as_str(),
                c.service,
                c.version.as_deref().map(|v| format!(" {v}")).unwrap_or_default(),
                c.author.as_deref().unwrap_or("unknown"),
                c.summary
            ));
        }
        a
    }

    fn dependencies(
        &self,
        p: &Parsed,
        id: Option<i64>,
        service: Option<String>,
        (edges, failed): (Vec<crate::context::Edge>, Vec<String>),
    ) -> Answer {
        let mut a = Answer::new(p, id, "");
        a.unavailable = failed;
        for t in &self.sources.topology {
            a.cite(t.name(), "topology edges", None);
        }
        let Some(svc) = service else {
            a.headline = format!("The topology has {} edges; name a service: `who depends on postgres?`", edges.len());
            return a;
        };
        let callers: Vec<&str> = edges.iter().filter(|e| e.to == svc).map(|e| e.from.as_str()).collect();
        let callees: Vec<&str> = edges.iter().filter(|e| e.from == svc).map(|e| e.to.as_str()).collect();
        let list = |v: &[&str]| if v.is_empty() { "nothing known".to_string() } else { v.join(", ") };
        a.headline = format!("Dependencies of {svc}");
        if p.slots.direction != Some(Direction::Callees) {
            a.lines.push(format!("Called by (upstream): {}", list(&callers)));
        }
        if p.slots.direction != Some(Direction::Callers) {
            a.lines.push(format!("Calls (downstream): {}", list(&callees)));
        }
        if self.sources.topology.is_empty() {
            a.unavailable.push("no topology source is configured (context.topology)".into());
        }
        a
    }

    /// The window a signal question looks at: the slot's, else from an hour before the
    /// incident's onset until now, else the last hour.
    fn signal_window(&self, p: &Parsed, s: Option<&Subject>, now: Millis) -> (Millis, Millis) {
        p.slots.window.unwrap_or_else(|| (s.map(|s| s.onset()).unwrap_or(now).min(now) - 3_600_000, now))
    }

    async fn metric(&self, p: &Parsed, s: Option<&Subject>, service: Option<String>, now: Millis) -> Answer {
        let mut a = Answer::new(p, s.map(|s| s.incident.id), "");
        let Some(svc) = service else {
            a.headline = "Which service? Ask e.g. `show checkout latency for the last hour`".into();
            return a;
        };
        let Some(metrics) = &self.sources.metrics else {
            a.headline = format!("No metrics backend is configured, so I cannot show {svc}'s signals.");
            a.unavailable.push("metrics: no source configured (context.prometheus)".into());
            return a;
        };
        let (start, end) = self.signal_window(p, s, now);
        let step = crate::context::prometheus::step_for(start, end);
        // The runbooks' own queries when the service is the incident's, then the golden signals.
        let mut candidates: Vec<MetricQuery> = Vec::new();
        if let Some(s) = s.filter(|s| s.services().contains(&svc)) {
            let alerts: Vec<crate::alert::Alert> = s.alerts.iter().map(|r| r.alert.clone()).collect();
            let req = crate::responder::request(
                &alerts,
                &self.runbooks,
                &[],
                now,
                (s.incident.id, &s.incident.title),
                self.window,
            );
            candidates.extend(req.queries);
        }
        for g in &self.golden {
            if let Ok(promql) = crate::render::query(&g.promql, &json!({"service": svc}), false) {
                candidates.push(MetricQuery { name: g.name.clone(), promql, start, end, step, service: None });
            }
        }
        let chosen = match p.slots.signal {
            Some(sig) => candidates.iter().find(|q| sig.names(&q.name)),
            None => candidates.iter().find(|q| Signal::Errors.names(&q.name)).or(candidates.first()),
        };
        let Some(q) = chosen.cloned() else {
            let names: Vec<&str> = candidates.iter().map(|q| q.name.as_str()).collect();
            a.headline = format!(
                "No query measures {} of {svc}; known: {}",
                p.slots.signal.map(|s| s.as_str()).unwrap_or("a signal"),
                if names.is_empty() { "none".into() } else { names.join(", ") }
            );
            return a;
        };
        let q = MetricQuery { start, end, step, ..q };
        // Values in the query's unit (bytes, seconds, ratios as %), as the golden signal or the
        // runbook names it.
        let unit = self
            .golden
            .iter()
            .find(|g| g.name == q.name)
            .map(|g| g.unit)
            .or_else(|| self.runbooks.iter().flat_map(|r| &r.context).find(|c| c.name == q.name).map(|c| c.unit));
        let show = |v: f64| match unit {
            Some(u) if u != crate::runbook::Unit::Number => crate::diagnosis::format_value(v, u),
            _ => num(v),
        };
        a.cite(metrics.name(), q.promql.clone(), Some((start, end)));
        let series = match bounded("metrics", metrics.name(), self.sources.timeout, metrics.query_range(&q)).await {
            Ok(series) => series,
            Err(e) => {
                a.headline = format!("{} of {svc}: the metrics source did not answer", q.name);
                a.unavailable.push(e);
                return a;
            }
        };
        // The recorded backend keys series by name only: keep the service's own.
        let series: Vec<_> = series
            .into_iter()
            .filter(|s| s.labels.get("service").is_none_or(|x| *x == svc))
            .filter(|s| !s.points.is_empty())
            .take(5)
            .collect();
        a.headline = format!("{} of {svc}, {} – {}", q.name, clock(start, self.offset), clock(end, self.offset));
        if series.is_empty() {
            a.lines.push("No samples in that window.".into());
            return a;
        }
        for s in &series {
            let vals: Vec<f64> = s.points.iter().map(|p| p.1).collect();
            let (lo, hi) = vals.iter().fold((f64::MAX, f64::MIN), |(l, h), v| (l.min(*v), h.max(*v)));
            let first = vals[0];
            let last = *vals.last().expect("not empty");
            let labels = if series.len() > 1 { format!("{:?} ", s.labels) } else { String::new() };
            a.lines.push(format!(
                "{labels}`{}`  now {} (was {} at the start; min {}, max {})",
                sparkline(&s.points, 30),
                show(last),
                show(first),
                show(lo),
                show(hi)
            ));
        }
        // The incident's onset and the changes its diagnosis found, marked on the chart.
        let mut marks = Vec::new();
        if let Some(s) = s
            && let Ok(Some((_, d))) = crate::chat::latest_diagnosis(self.store.as_ref(), s.incident.id).await
        {
            marks.push((d.onset, "onset".to_string()));
            for e in d.hypotheses.iter().flat_map(|h| &h.evidence) {
                if let (crate::diagnosis::EvidenceKind::Change, Some(at)) = (e.kind, e.at)
                    && !marks.iter().any(|m| m.0 == at)
                {
                    // "deploy of checkout v2.14.0 by alice at 14:23 UTC, …" → "deploy of checkout v2.14.0".
                    let what = e.text.split(", ").next().unwrap_or_default();
                    marks.push((at, what.split(" by ").next().unwrap_or(what).to_string()));
                }
            }
        }
        a.chart = Some(Chart {
            title: format!("{} of {svc}", q.name),
            series: series.into_iter().map(|s| (format!("{:?}", s.labels), s.points)).collect(),
            unit: unit.unwrap_or_default(),
            offset: self.offset,
            marks,
        });
        a
    }

    async fn logs(&self, p: &Parsed, s: Option<&Subject>, service: Option<String>, now: Millis) -> Answer {
        let mut a = Answer::new(p, s.map(|s| s.incident.id), "");
        let Some(svc) = service else {
            a.headline = "Which service? Ask e.g. `any new errors in the checkout logs?`".into();
            return a;
        };
        let Some(logs) = &self.sources.logs else {
            a.headline = format!("No log backend is configured, so I cannot read {svc}'s logs.");
            a.unavailable.push("logs: no source configured (context.loki)".into());
            return a;
        };
        let (start, end) = self.signal_window(p, s, now);
        a.cite(logs.name(), format!("logs of {svc}"), Some((start, end)));
        let lines = match bounded("logs", logs.name(), self.sources.timeout, logs.lines(&svc, start, end, 5000)).await {
            Ok(l) => l,
            Err(e) => {
                a.headline = format!("Logs of {svc}: the log source did not answer");
                a.unavailable.push(e);
                return a;
            }
        };
        // Templates, with how often and since when each was seen; error-like ones first.
        let mut miner = crate::diagnosis::logs::Miner::new(Default::default());
        let mut first_seen: Vec<Millis> = Vec::new();
        for l in &lines {
            let g = miner.add(&l.line);
            if g >= first_seen.len() {
                first_seen.resize(g + 1, l.at);
            }
        }
        // A merged group was first seen when the first of its parts was.
        for g in 0..first_seen.len() {
            let r = miner.root(g);
            first_seen[r] = first_seen[r].min(first_seen[g]);
        }
        let errorish = |t: &str| {
            let t = t.to_ascii_lowercase();
            ["error", "exception", "fatal", "panic", "fail", "timeout", "refused"].iter().any(|w| t.contains(w))
        };
        let mut groups = miner.groups();
        groups.sort_by_key(|g| (!errorish(&miner.template(*g)), std::cmp::Reverse(miner.size(*g))));
        let onset = s.map(Subject::onset);
        a.headline = format!(
            "Logs of {svc}, {} – {}: {} line(s) in {} pattern(s)",
            clock(start, self.offset),
            clock(end, self.offset),
            lines.len(),
            groups.len()
        );
        for g in groups.into_iter().take(8) {
            let new = match onset {
                Some(o) if first_seen[g] >= o - 15 * 60_000 => " · new around the incident",
                _ => "",
            };
            a.lines.push(format!(
                "{}× `{}` (first {}){new}",
                miner.size(g),
                crate::chat::cut(&miner.template(g), 160),
                clock(first_seen[g], self.offset)
            ));
        }
        a
    }

    async fn alerts(&self, p: &Parsed, s: Option<&Subject>) -> anyhow::Result<Answer> {
        let mut a = Answer::new(p, s.map(|s| s.incident.id), "");
        let own: std::collections::HashSet<&str> =
            s.map(|s| s.alerts.iter().map(|r| r.alert.fingerprint.as_str()).collect()).unwrap_or_default();
        let wanted = p.slots.service.clone();
        if let Some(src) = &self.sources.alerts {
            a.cite(src.name(), "active alerts", None);
            match bounded("alerts", src.name(), self.sources.timeout, src.active()).await {
                Ok(active) => {
                    let shown: Vec<_> = active
                        .iter()
                        .filter(|x| wanted.as_ref().is_none_or(|w| x.labels.get("service") == Some(w)))
                        .collect();
                    a.headline = format!("{} alert(s) active in {}", shown.len(), src.name());
                    for x in shown {
                        let mine = if own.contains(x.fingerprint.as_str()) { " (this incident)" } else { "" };
                        a.lines.push(format!(
                            "{} on {} — {}{}{mine}",
                            x.name(),
                            x.labels.get("service").map(String::as_str).unwrap_or("?"),
                            x.state,
                            x.summary.as_deref().map(|s| format!(": {s}")).unwrap_or_default()
                        ));
                    }
                    return Ok(a);
                }
                Err(e) => a.unavailable.push(format!("{e}; showing medic's own incidents")),
            }
        }
        // Without Alertmanager (or when it fails): the open incidents medic holds.
        let f = crate::store::IncidentFilter { state: Some(IncidentState::Open), limit: 50, ..Default::default() };
        let open = self.store.incidents(&f).await?;
        a.headline = format!("{} open incident(s) in medic", open.len());
        for i in &open {
            let mine = if s.is_some_and(|s| s.incident.id == i.id) { " (this incident)" } else { "" };
            a.lines.push(format!("#{} {} — {} alert(s), {} firing{mine}", i.id, i.title, i.n_alerts, i.n_firing));
        }
        a.cite("medic store", "open incidents", None);
        Ok(a)
    }

    /// A private refusal, unless `q.who` is in a control group (`ask.control_groups`, else the
    /// default approvers).
    fn control(&self, p: &Parsed, q: &Question, what: &str) -> Option<Answer> {
        let groups = match self.config.control_groups.is_empty() {
            true => &q.groups.default_approvers,
            false => &self.config.control_groups,
        };
        if groups.iter().any(|g| q.groups.members.get(g).is_some_and(|m| m.contains(&q.who))) {
            return None;
        }
        let names = if groups.is_empty() { "a control group (ask.control_groups)".into() } else { groups.join(" or ") };
        let text = format!("Only members of {names} may {what}; {} is not one of them. Nothing changed.", q.who.0);
        Some(Answer::refused(p, text))
    }

    async fn resolve(&self, p: &Parsed, s: &Subject, q: &Question, now: Millis) -> anyhow::Result<Answer> {
        let resolve = p.intent == Intent::Resolve;
        let id = s.incident.id;
        if let Some(refusal) = self.control(p, q, if resolve { "resolve incidents" } else { "reopen incidents" }) {
            return Ok(refusal);
        }
        if let Err(why) = self.store.resolve_by_hand(id, resolve, &q.who, &q.via, now).await? {
            return Ok(Answer::refused(p, format!("Nothing changed: {why}.")));
        }
        let done = if resolve { "resolved" } else { "reopened" };
        if let Some(n) = &self.notifier {
            let shown = async {
                n.incident_changed(id).await?;
                n.thread(id, &format!("incident #{id} {done} by {}", q.who.0)).await
            };
            if let Err(e) = shown.await {
                tracing::warn!(incident = id, error = %format!("{e:#}"), "could not show a resolve by hand");
            }
        }
        let mut a = Answer::new(p, Some(id), format!("Incident #{id} {done} by {}.", q.who.0));
        a.lines.push(match resolve {
            true => "An alert of it that resolves and fires again opens a new incident.".into(),
            false => "With no alert firing, it resolves again after the grace period.".into(),
        });
        Ok(a)
    }

    /// Grant (within policy) or revoke a runbook's `auto`: the one the question names, else the
    /// runbook of the incident's plan.
    async fn autonomy(&self, p: &Parsed, s: Option<&Subject>, q: &Question, now: Millis) -> anyhow::Result<Answer> {
        let grant = p.intent == Intent::Grant;
        if let Some(refusal) = self.control(p, q, if grant { "grant autonomy" } else { "revoke autonomy" }) {
            return Ok(refusal);
        }
        let text = q.text.to_ascii_lowercase();
        let named = self.runbooks.iter().filter(|r| text.contains(&r.id)).max_by_key(|r| r.id.len());
        let of_plan = match s {
            Some(s) => self.store.plan_status(s.incident.id).await?.map(|st| st.plan.plan.runbook),
            None => None,
        };
        let Some(rb) = named.or_else(|| self.runbooks.iter().find(|r| Some(&r.id) == of_plan.as_ref())) else {
            return Ok(Answer::refused(p, "Name the runbook (e.g. `revoke autonomy of restart-crashlooping`), or ask in the thread of an incident with a plan. Nothing changed.".into()));
        };
        let target = crate::store::RunbookRef { id: &rb.id, autonomy: rb.autonomy, tier: rb.tier };
        Ok(match self.store.set_autonomy(&target, grant, &q.who, &q.via, now).await? {
            Ok(said) => Answer::new(
                p,
                q.incident,
                format!("{said} ({} by {}; audited).", if grant { "granted" } else { "revoked" }, q.who.0),
            ),
            Err(why) => Answer::refused(p, format!("Nothing changed: {why}.")),
        })
    }

    /// Opens a ticket for the incident on every configured tracker that has none for it yet;
    /// audited with who and where. The thread links each once the tracker created it.
    async fn ticket(&self, p: &Parsed, s: &Subject, q: &Question, now: Millis) -> anyhow::Result<Answer> {
        if let Some(refusal) = self.control(p, q, "open tickets") {
            return Ok(refusal);
        }
        let id = s.incident.id;
        if self.trackers.is_empty() {
            return Ok(Answer::refused(
                p,
                "No ticket tracker is configured (tickets.github, tickets.jira); nothing was done.".into(),
            ));
        }
        let why = format!("asked for by {} in {}", q.who.0, q.via);
        let opened = crate::ticket::open(self.store.as_ref(), &self.trackers, id, &why, now).await?;
        if opened.is_empty() {
            return Ok(Answer::new(
                p,
                Some(id),
                format!("Incident #{id} already has a ticket on each tracker; nothing new was opened."),
            ));
        }
        let entry = crate::audit::AuditEntry {
            at: now,
            kind: crate::audit::Kind::TicketRequested,
            incident_id: Some(id),
            actor: q.who.0.clone(),
            data: json!({"via": q.via, "trackers": opened}),
        };
        self.store.record(vec![entry]).await?;
        let mut a =
            Answer::new(p, Some(id), format!("Opening a ticket for incident #{id} on {}.", opened.join(" and ")));
        a.lines.push("Its address will be posted in this incident's thread once the tracker has created it.".into());
        Ok(a)
    }

    async fn pause(&self, p: &Parsed, q: &Question, now: Millis) -> anyhow::Result<Answer> {
        let pause = p.intent == Intent::Pause;
        if let Some(refusal) = self.control(p, q, if pause { "pause automation" } else { "resume automation" }) {
            return Ok(refusal);
        }
        self.store.set_paused(&q.who, &q.via, pause, now).await?;
        if let Some(n) = &self.notifier {
            let f = crate::store::IncidentFilter { limit: 200, ..Default::default() };
            for i in self.store.incidents(&f).await?.iter().filter(|i| i.state != IncidentState::Resolved) {
                if let Err(e) = n.incident_changed(i.id).await {
                    tracing::warn!(incident = i.id, error = %format!("{e:#}"), "could not show the pause on a message");
                }
            }
        }
        Ok(Answer::new(
            p,
            q.incident,
            if pause {
                format!("Automation paused by {}: approvals are refused until someone resumes it.", q.who.0)
            } else {
                format!("Automation resumed by {}.", q.who.0)
            },
        ))
    }
}

#[async_trait::async_trait]
impl crate::chat::asking::Answers for Asker {
    async fn answer(&self, q: &Question) -> anyhow::Result<crate::chat::asking::Reply> {
        let a = self.ask(q).await?;
        let chart = a.chart.as_ref().filter(|_| !a.private).and_then(|c| match super::chart::png(c) {
            Ok(png) => Some((crate::redact::redact(&c.title), png)),
            Err(e) => {
                tracing::warn!(error = %e, "could not draw a chart");
                None
            }
        });
        Ok(crate::chat::asking::Reply { view: a.view(self.offset), private: a.private, chart })
    }

    fn understood(&self, text: &str) -> bool {
        let v = Vocabulary { now: self.clock.now(), offset: self.offset, ..Default::default() };
        let p = super::parse(text, &v).overheard();
        p.note.is_none() && !matches!(p.intent, Intent::Unknown | Intent::Help)
    }

    fn per_minute(&self) -> u32 {
        self.config.per_minute
    }
}

/// How to give the order a sentence named but did not give (a question, a statement, a
/// message medic overheard); none for a negation, or for what a sentence can never order.
fn order_hint(p: &Parsed) -> Option<String> {
    use super::parse::{OVERHEARD, QUESTION, STATEMENT};
    let wanted = p.suggestions.first().filter(|i| i.mutating())?;
    matches!(p.note?, QUESTION | STATEMENT | OVERHEARD)
        .then(|| format!("To {}, order it where I am addressed: `@medic {}`.", wanted.as_str(), wanted.example()))
}

/// A number for people: at most four significant digits.
fn num(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let digits = (3 - v.abs().log10().floor() as i32).clamp(0, 6) as usize;
    format!("{v:.digits$}")
}
