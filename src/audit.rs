//! The audit log: an append-only, hash-chained record of every transition.
//!
//! Record `n` stores `hash_n = SHA-256(prev_hash ‖ seq ‖ at ‖ kind ‖ incident ‖ actor ‖ data)`
//! with `prev_hash = hash_{n-1}` (64 zeros for the first). Sequence numbers are contiguous, so
//! [`Verifier`] finds the first record that was altered (its hash no longer matches its
//! content), removed (a gap in `seq`, or a `prev_hash` that no longer links) or reordered.
//! Removing records from the *end* leaves a valid shorter chain: `medic audit verify` prints the
//! head (`seq` and hash) so it can be anchored elsewhere and checked with `--expect-head`.

use crate::time::{Millis, rfc3339};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::fmt::Write as _;

pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What happened. A closed set: adding a transition means adding a kind here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    AlertReceived,
    AlertFiring,
    AlertResolved,
    AlertUpdated,
    AlertFlapping,
    IncidentOpened,
    IncidentResolving,
    IncidentReopened,
    IncidentResolved,
    ChangeRecorded,
    Diagnosed,
    PlanProposed,
    PlanSuperseded,
    ApprovalRecorded,
    PlanApproved,
    PlanRejected,
    ExecutionStarted,
    StepSucceeded,
    StepFailed,
    StepRolledBack,
    ExecutionFinished,
    ExecutionInterrupted,
    /// A replica found it no longer held an execution (its lease lapsed and another replica
    /// marked it interrupted) and stopped before its next action.
    ExecutionFenced,
    Escalated,
    AutomationPaused,
    AutomationResumed,
    AutonomyGranted,
    AutonomyLost,
    StopRequested,
    AutoRunDeclined,
    /// A person ordered a ticket for the incident (`open a ticket`).
    TicketRequested,
    AuditPruned,
}

impl Kind {
    /// Every kind of record.
    pub const ALL: [Kind; 32] = [
        Kind::AlertReceived,
        Kind::AlertFiring,
        Kind::AlertResolved,
        Kind::AlertUpdated,
        Kind::AlertFlapping,
        Kind::IncidentOpened,
        Kind::IncidentResolving,
        Kind::IncidentReopened,
        Kind::IncidentResolved,
        Kind::ChangeRecorded,
        Kind::Diagnosed,
        Kind::PlanProposed,
        Kind::PlanSuperseded,
        Kind::ApprovalRecorded,
        Kind::PlanApproved,
        Kind::PlanRejected,
        Kind::ExecutionStarted,
        Kind::StepSucceeded,
        Kind::StepFailed,
        Kind::StepRolledBack,
        Kind::ExecutionFinished,
        Kind::ExecutionInterrupted,
        Kind::ExecutionFenced,
        Kind::Escalated,
        Kind::AutomationPaused,
        Kind::AutomationResumed,
        Kind::AutonomyGranted,
        Kind::AutonomyLost,
        Kind::StopRequested,
        Kind::AutoRunDeclined,
        Kind::TicketRequested,
        Kind::AuditPruned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::AlertReceived => "alert_received",
            Kind::AlertFiring => "alert_firing",
            Kind::AlertResolved => "alert_resolved",
            Kind::AlertUpdated => "alert_updated",
            Kind::AlertFlapping => "alert_flapping",
            Kind::IncidentOpened => "incident_opened",
            Kind::IncidentResolving => "incident_resolving",
            Kind::IncidentReopened => "incident_reopened",
            Kind::IncidentResolved => "incident_resolved",
            Kind::ChangeRecorded => "change_recorded",
            Kind::Diagnosed => "diagnosed",
            Kind::PlanProposed => "plan_proposed",
            Kind::PlanSuperseded => "plan_superseded",
            Kind::ApprovalRecorded => "approval_recorded",
            Kind::PlanApproved => "plan_approved",
            Kind::PlanRejected => "plan_rejected",
            Kind::ExecutionStarted => "execution_started",
            Kind::StepSucceeded => "step_succeeded",
            Kind::StepFailed => "step_failed",
            Kind::StepRolledBack => "step_rolled_back",
            Kind::ExecutionFinished => "execution_finished",
            Kind::ExecutionInterrupted => "execution_interrupted",
            Kind::ExecutionFenced => "execution_fenced",
            Kind::Escalated => "escalated",
            Kind::AutomationPaused => "automation_paused",
            Kind::AutomationResumed => "automation_resumed",
            Kind::AutonomyGranted => "autonomy_granted",
            Kind::AutonomyLost => "autonomy_lost",
            Kind::StopRequested => "stop_requested",
            Kind::AutoRunDeclined => "auto_run_declined",
            Kind::TicketRequested => "ticket_requested",
            Kind::AuditPruned => "audit_pruned",
        }
    }
}

/// A transition not yet in the chain.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditEntry {
    pub at: Millis,
    pub kind: Kind,
    pub incident_id: Option<i64>,
    pub actor: String,
    pub data: serde_json::Value,
}

/// A record as stored. `data` is the exact JSON text that was hashed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditRecord {
    pub seq: i64,
    pub at: Millis,
    pub kind: String,
    pub incident_id: Option<i64>,
    pub actor: String,
    pub data: String,
    pub prev_hash: String,
    pub hash: String,
}

pub fn hash_record(
    prev_hash: &str,
    seq: i64,
    at: Millis,
    kind: &str,
    incident_id: Option<i64>,
    actor: &str,
    data: &str,
) -> String {
    let mut h = Sha256::new();
    for part in [
        prev_hash,
        &seq.to_string(),
        &at.to_string(),
        kind,
        &incident_id.map(|i| i.to_string()).unwrap_or_default(),
        actor,
    ] {
        h.update(part.as_bytes());
        h.update([0x1f]);
    }
    h.update(data.as_bytes());
    hex::encode(h.finalize())
}

/// Links new entries onto a chain whose head is `(last_seq, last_hash)`.
pub fn chain(last_seq: i64, last_hash: &str, entries: Vec<AuditEntry>) -> Vec<AuditRecord> {
    let mut prev = last_hash.to_string();
    entries
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let seq = last_seq + 1 + i as i64;
            let kind = e.kind.as_str().to_string();
            let data = e.data.to_string();
            let hash = hash_record(&prev, seq, e.at, &kind, e.incident_id, &e.actor, &data);
            let rec = AuditRecord {
                seq,
                at: e.at,
                kind,
                incident_id: e.incident_id,
                actor: e.actor,
                data,
                prev_hash: prev.clone(),
                hash: hash.clone(),
            };
            prev = hash;
            rec
        })
        .collect()
}

/// Why a record fails verification.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Broken {
    #[error("record {seq}: expected seq {expected}; records {expected}..{} are missing or out of order", .seq - 1)]
    Gap { seq: i64, expected: i64 },
    #[error("record {seq}: does not link to record {} (a record before it was removed, altered or reordered)", .seq - 1)]
    Link { seq: i64 },
    #[error("record {seq}: content does not match its hash (the record was altered)")]
    Altered { seq: i64 },
}

/// Walks the chain in `seq` order, record by record, so it can verify any length in bounded memory.
pub struct Verifier {
    expected_seq: i64,
    prev_hash: String,
    pub checked: u64,
}

impl Default for Verifier {
    fn default() -> Self {
        Verifier { expected_seq: 1, prev_hash: GENESIS.to_string(), checked: 0 }
    }
}

impl Verifier {
    /// Starts after the record `seq` whose hash is `hash`: what retention removed before it is
    /// vouched for by that hash, which covers every record up to it.
    pub fn from_checkpoint(seq: i64, hash: &str) -> Verifier {
        Verifier { expected_seq: seq + 1, prev_hash: hash.to_string(), checked: 0 }
    }

    pub fn check(&mut self, r: &AuditRecord) -> Result<(), Broken> {
        if r.seq != self.expected_seq {
            return Err(Broken::Gap { seq: r.seq, expected: self.expected_seq });
        }
        if r.prev_hash != self.prev_hash {
            return Err(Broken::Link { seq: r.seq });
        }
        if hash_record(&r.prev_hash, r.seq, r.at, &r.kind, r.incident_id, &r.actor, &r.data) != r.hash {
            return Err(Broken::Altered { seq: r.seq });
        }
        self.expected_seq += 1;
        self.prev_hash = r.hash.clone();
        self.checked += 1;
        Ok(())
    }

    /// `(seq, hash)` of the last record checked.
    pub fn head(&self) -> (i64, &str) {
        (self.expected_seq - 1, &self.prev_hash)
    }
}

/// An incident's timeline for the postmortem, as Markdown.
pub fn timeline_markdown(incident: &serde_json::Value, records: &[AuditRecord]) -> String {
    let s = |k: &str| incident.get(k).and_then(|v| v.as_str()).unwrap_or("-").to_string();
    let mut out = String::new();
    let _ = writeln!(out, "# Incident {}: {}\n", incident["id"], md_escape(&s("title")));
    let _ = writeln!(out, "- State: {}", s("state"));
    let _ = writeln!(out, "- Group: `{}`", s("group_key").replace('`', "'"));
    let _ = writeln!(out, "- Opened: {}", s("opened_at"));
    if let Some(r) = incident.get("resolved_at").and_then(|v| v.as_str()) {
        let _ = writeln!(out, "- Resolved: {r}");
    }
    let _ = writeln!(out, "\n## Timeline\n\n| # | Time (UTC) | Event | By | Details |\n|---|---|---|---|---|");
    for r in records {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            r.seq,
            rfc3339(r.at),
            r.kind,
            md_escape(&r.actor),
            md_escape(&summarise(&r.data))
        );
    }
    let _ = writeln!(out, "\nEach event's hash is in the JSON export; `medic audit verify` checks the whole chain.");
    out
}

/// One line of an audit record's data, for timelines and threads.
pub fn summarise(data: &str) -> String {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(data) else { return data.to_string() };
    let mut parts = Vec::new();
    let text = |x: &serde_json::Value| x.as_str().map(str::to_string);
    for k in [
        "top",
        "alert",
        "status",
        "step",
        "reason",
        "title",
        "resolves_at",
        "summary",
        "service",
        "kind",
        "runbook",
        "via",
        "rollback",
    ] {
        if let Some(x) = v.get(k).and_then(text) {
            parts.push(format!("{k}: {x}"));
        }
    }
    if let Some(p) = v.get("plan").and_then(|x| x.as_str()) {
        parts.push(format!("plan: {}", &p[..12.min(p.len())]));
    }
    // A diagnosis names the plan it proposed: `{"hash", "runbook"}`.
    if let Some(rb) = v.get("plan").and_then(|p| p.get("runbook")).and_then(text) {
        parts.push(format!("plan of {rb}"));
    }
    if let Some(a) = v.get("approvers").and_then(|x| x.as_array()) {
        parts.push(format!("approvers: {}", a.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join(", ")));
    }
    match v.get("result") {
        Some(serde_json::Value::String(r)) => parts.push(format!("result: {r}")),
        Some(r @ serde_json::Value::Object(_)) => {
            for k in ["action", "output", "verified"] {
                if let Some(x) = r.get(k).and_then(text) {
                    parts.push(format!("{k}: {x}"));
                }
            }
        }
        _ => {}
    }
    if let Some(s) = v.pointer("/annotations/summary").and_then(|x| x.as_str()) {
        parts.push(format!("summary: {s}"));
    }
    parts.join("; ")
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(n: usize) -> Vec<AuditEntry> {
        (0..n)
            .map(|i| AuditEntry {
                at: i as i64,
                kind: Kind::AlertReceived,
                incident_id: Some(1),
                actor: "t".into(),
                data: serde_json::json!({"i": i}),
            })
            .collect()
    }

    fn verify(rs: &[AuditRecord]) -> Result<(), Broken> {
        let mut v = Verifier::default();
        rs.iter().try_for_each(|r| v.check(r))
    }

    #[test]
    fn detects_alteration_removal_and_reordering() {
        let rs = chain(0, GENESIS, entries(5));
        assert_eq!(verify(&rs), Ok(()));

        let mut altered = rs.clone();
        altered[2].data = r#"{"i":99}"#.into();
        assert_eq!(verify(&altered), Err(Broken::Altered { seq: 3 }));

        let mut removed = rs.clone();
        removed.remove(1);
        assert_eq!(verify(&removed), Err(Broken::Gap { seq: 3, expected: 2 }));

        let mut reordered = rs.clone();
        reordered.swap(1, 2);
        reordered[1].seq = 2;
        reordered[2].seq = 3;
        assert_eq!(verify(&reordered), Err(Broken::Link { seq: 2 }));
    }

    #[test]
    fn chains_continue_from_a_head() {
        let a = chain(0, GENESIS, entries(2));
        let b = chain(2, &a[1].hash, entries(2));
        let all: Vec<_> = a.into_iter().chain(b).collect();
        assert_eq!(verify(&all), Ok(()));
    }
}
