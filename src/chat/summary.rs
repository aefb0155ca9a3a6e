//! The morning summary: at a configured time, one message per channel medic posts incidents
//! to, about the night — the incidents since the last summary (and any still open), what ran by
//! itself and how it ended, what waits for a person, what failed — each with a link to its
//! thread where the platform gives one. Queued through the outbox (op `message`) once per day
//! and channel, whichever replica gets there first.

use super::Platform;
use crate::audit::AuditRecord;
use crate::incident::{Incident, IncidentState};
use crate::store::Store;
use crate::time::{Clock, Millis};
use serde::Deserialize;
use std::sync::Arc;

/// The `summary` section of the config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `HH:MM`, in `timezone`.
    pub at: String,
    /// `UTC` or a fixed offset (`+01:00`).
    #[serde(default = "utc")]
    pub timezone: String,
}

fn utc() -> String {
    "UTC".into()
}

const DAY: Millis = 24 * 3_600_000;

impl Config {
    /// (minutes after midnight, offset in seconds east of UTC), or what is wrong.
    pub fn parse(&self) -> Result<(i64, i32), String> {
        let offset =
            crate::ask::parse_offset(&self.timezone).map_err(|e| e.replace("ask.timezone", "summary.timezone"))?;
        let bad = || format!("summary.at: expected HH:MM, got {:?}", self.at);
        let (h, m) = self.at.split_once(':').ok_or_else(bad)?;
        let (h, m): (i64, i64) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
        if !(0..24).contains(&h) || !(0..60).contains(&m) {
            return Err(bad());
        }
        Ok((h * 60 + m, offset))
    }

    /// The latest summary time at or before `now` (UTC milliseconds).
    pub fn last_due(&self, now: Millis) -> Result<Millis, String> {
        let (minutes, offset) = self.parse()?;
        let local = now + offset as Millis * 1000;
        let today = local.div_euclid(DAY) * DAY + minutes * 60_000;
        let due_local = if today <= local { today } else { today - DAY };
        Ok(due_local - offset as Millis * 1000)
    }
}

/// What the night held for one incident.
#[derive(Debug, Clone, PartialEq)]
pub struct Night {
    pub incident: Incident,
    /// The service from its first alert.
    pub service: String,
    /// A plan ran by itself: how it ended (`succeeded`, `rolled back`…).
    pub ran_by_itself: Option<String>,
    /// Why it failed (an escalation's message).
    pub failed: Option<String>,
    /// What a person must do (approve a plan, look at an incident no runbook matched).
    pub waits: Option<String>,
    /// The incident's thread, where the platform can link it.
    pub link: Option<String>,
}

/// What the records say about one incident's night.
pub fn night_of(incident: Incident, service: String, records: &[AuditRecord], waiting_plan: Option<&str>) -> Night {
    let auto = records.iter().any(|r| r.kind == "plan_approved" && r.actor == crate::approval::AUTO);
    let finished = records.iter().rev().find(|r| r.kind == "execution_finished").map(|r| {
        let v: serde_json::Value = serde_json::from_str(&r.data).unwrap_or_default();
        v["result"].as_str().unwrap_or("finished").replace('_', " ")
    });
    let escalated = records.iter().rev().find(|r| r.kind == "escalated").map(|r| {
        let v: serde_json::Value = serde_json::from_str(&r.data).unwrap_or_default();
        v["message"].as_str().or(v["reason"].as_str()).unwrap_or("escalated").to_string()
    });
    let ran_by_itself = auto.then(|| {
        escalated.clone().map(|_| "rolled back".to_string()).or(finished.clone()).unwrap_or_else(|| "running".into())
    });
    let open = incident.state != IncidentState::Resolved;
    let waits = match (open, waiting_plan) {
        (true, Some(plan)) => Some(format!("plan {} waits for approval", &plan[..plan.len().min(12)])),
        (true, None) if escalated.is_some() => Some("a person must take over".into()),
        (true, None) if !records.iter().any(|r| r.kind == "plan_proposed") => {
            Some("no runbook matched; a person must look".into())
        }
        _ => None,
    };
    Night { incident, service, ran_by_itself, failed: escalated, waits, link: None }
}

/// The summary's text for the window `[since, now]`, times in `offset`.
pub fn text(nights: &[Night], since: Millis, now: Millis, offset: i32) -> String {
    let at = |t: Millis| crate::time::from_millis(t + offset as Millis * 1000).format("%Y-%m-%d %H:%M").to_string();
    let zone = if offset == 0 {
        "UTC".to_string()
    } else {
        format!("UTC{:+03}:{:02}", offset / 3600, (offset.abs() % 3600) / 60)
    };
    let count = |f: fn(&Night) -> bool| nights.iter().filter(|n| f(n)).count();
    let mut out = format!(
        "medic's summary, {} to {} {zone}: {} incident(s); {} ran by itself, {} failed, {} wait(s) for a person.",
        at(since),
        at(now),
        nights.len(),
        count(|n| n.ran_by_itself.is_some()),
        count(|n| n.failed.is_some()),
        count(|n| n.waits.is_some()),
    );
    if nights.is_empty() {
        out.push_str("\nA quiet night: no incidents.");
    }
    for n in nights {
        let mut parts =
            vec![format!("#{} {} on {} — {}", n.incident.id, n.incident.title, n.service, n.incident.state.as_str())];
        if let Some(r) = &n.ran_by_itself {
            parts.push(format!("ran by itself: {r}"));
        }
        if let Some(f) = &n.failed {
            parts.push(format!("failed: {f}"));
        }
        if let Some(w) = &n.waits {
            parts.push(format!("waits: {w}"));
        }
        if let Some(l) = &n.link {
            parts.push(l.clone());
        }
        out.push_str(&format!("\n• {}", parts.join("; ")));
    }
    crate::redact::redact(&out)
}

/// How often the clock is looked at.
const EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// Posts the summary when it is due, until `stop`.
pub async fn run(
    cfg: Config,
    store: Arc<dyn Store>,
    platforms: Vec<Arc<dyn Platform>>,
    clock: Arc<dyn Clock>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    // The summary time this replica has handled: the store is asked once per day, not every 30 s.
    let mut handled = None;
    loop {
        let now = clock.now();
        let due = cfg.last_due(now).ok();
        if due != handled {
            match post_due(&cfg, store.as_ref(), &platforms, now).await {
                Ok(()) => handled = due,
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "the morning summary could not be queued"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Queues today's summary on every platform and channel that has not had it, if it is due
/// (within an hour of its time: a medic started at noon does not post the morning's).
pub async fn post_due(
    cfg: &Config,
    store: &dyn Store,
    platforms: &[Arc<dyn Platform>],
    now: Millis,
) -> anyhow::Result<()> {
    let due = cfg.last_due(now).map_err(anyhow::Error::msg)?;
    let (_, offset) = cfg.parse().map_err(anyhow::Error::msg)?;
    if now - due > 3_600_000 {
        return Ok(());
    }
    let since = due - DAY;
    // Which channels still need today's summary: recorded first, so one replica builds each.
    let mut todo = Vec::new();
    for p in platforms {
        for channel in p.channels() {
            if store.first_delivery("summary", &format!("{}:{due}:{channel}", p.name()), now).await? {
                todo.push((p.clone(), channel));
            }
        }
    }
    if todo.is_empty() {
        return Ok(());
    }
    let mut incidents = Vec::new();
    let filter = crate::store::IncidentFilter { limit: 500, ..Default::default() };
    for i in store.incidents(&filter).await? {
        let recent = i.opened_at >= since || i.resolved_at.is_some_and(|t| t >= since);
        if recent || i.state != IncidentState::Resolved {
            let Some((incident, alerts)) = store.incident(i.id).await? else { continue };
            let labels = alerts.first().map(|a| a.alert.labels.clone()).unwrap_or_default();
            incidents.push((incident, labels));
        }
    }
    for (p, channel) in todo {
        let roots = store.outbox_sent(p.name(), "post", 1000).await?;
        let mine: Vec<_> = incidents.iter().filter(|(_, labels)| p.channel_for(labels) == channel).collect();
        let mut nights = Vec::new();
        for (incident, labels) in mine {
            let records = store.audit_for_incident(incident.id).await?;
            let waiting = store
                .plan_status(incident.id)
                .await?
                .filter(|s| s.plan.state == crate::approval::PlanState::Proposed && s.auto_at.is_none());
            let service = incident.service(labels);
            let mut n =
                night_of(incident.clone(), service, &records, waiting.as_ref().map(|s| s.plan.plan.hash.as_str()));
            if let Some((_, _, root)) = roots.iter().find(|(_, id, _)| *id == incident.id) {
                n.link = p.link(&channel, root).await;
            }
            nights.push(n);
        }
        let item = crate::store::OutboxItem {
            platform: p.name().into(),
            incident_id: 0,
            op: "message".into(),
            body: p.reply(&channel, &text(&nights, since, due, offset)),
            channel,
            target: None,
        };
        store.outbox_push(&item, now).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_is_due_once_a_day_at_its_local_time() {
        let cfg = Config { at: "08:00".into(), timezone: "+01:00".into() };
        // 2026-12-07T07:30Z is 08:30 at +01:00: due at 07:00Z today.
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-07T07:30:00Z").unwrap().timestamp_millis();
        let due = cfg.last_due(now).unwrap();
        assert_eq!(crate::time::rfc3339(due), "2026-12-07T07:00:00.000Z");
        // 06:30Z is 07:30 local: yesterday's.
        let early = now - 3_600_000;
        assert_eq!(crate::time::rfc3339(cfg.last_due(early).unwrap()), "2026-12-06T07:00:00.000Z");
        assert!(Config { at: "8am".into(), timezone: "UTC".into() }.parse().unwrap_err().contains("HH:MM"));
        assert!(Config { at: "24:00".into(), timezone: "UTC".into() }.parse().is_err());
    }
}
