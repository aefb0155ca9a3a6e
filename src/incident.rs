//! Correlation: alerts in, incidents out. Pure code: no IO, no clock (`now` is passed in).
//!
//! The rules, as an on-call engineer would state them:
//! - **Dedup.** An alert is known by its source and fingerprint. A delivery that repeats what is
//!   already stored (same status, same `startsAt`, and for resolved alerts the same `endsAt`)
//!   changes nothing. A firing delivery with the `startsAt` of an alert already resolved is a
//!   stale re-delivery and is ignored.
//! - **Grouping.** The group key is the first label set of `group_by` that the alert carries in
//!   full (default: `service`, else `namespace`+`alertname`; else the alert is its own group). A
//!   firing alert joins the unresolved incident with its key that saw a new firing within
//!   `group_window`; otherwise it opens a new incident. An alert that re-fires while its incident
//!   is unresolved always returns to that incident.
//! - **Resolve and reopen.** When no alert of an incident fires, the incident is `resolving`;
//!   `resolve_grace` later it is `resolved`. A re-fire inside the grace period reopens it.
//!   Resolved incidents stay resolved; later alerts open a new incident.
//! - **Flap damping.** An alert that changes state `threshold` times within `window` is
//!   flapping: its resolves do not start the grace period until it has stayed quiet for `hold`,
//!   so the incident does not bounce between open and resolving with every flap.

use crate::alert::{Alert, AlertStatus, START_UNKNOWN};
use crate::audit::{AuditEntry, Kind};
use crate::time::Millis;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Label sets tried in order; the first the alert carries in full forms the group key.
    #[serde(default = "default_group_by")]
    pub group_by: Vec<Vec<String>>,
    /// A firing alert joins an unresolved incident of its group only if that incident saw a new
    /// firing alert within this window.
    #[serde(default = "default_group_window", with = "humantime_serde")]
    pub group_window: Duration,
    /// How long an incident with no firing alert waits before it is resolved.
    #[serde(default = "default_grace", with = "humantime_serde")]
    pub resolve_grace: Duration,
    #[serde(default)]
    pub flapping: FlapPolicy,
    /// A firing alert with no incident of its own group joins an open incident of a service
    /// its service calls or is called by (the topology), within `group_window`: a failing
    /// database and the errors of its callers are one incident.
    #[serde(default = "yes")]
    pub group_by_topology: bool,
    /// The dependency graph, kept current by the server from the context's topology sources.
    #[serde(skip)]
    pub topology: Graph,
}

fn yes() -> bool {
    true
}

/// Services and their neighbours (callers and callees), shared and replaceable at run time.
#[derive(Debug, Clone, Default)]
pub struct Graph(std::sync::Arc<std::sync::RwLock<BTreeMap<String, BTreeSet<String>>>>);

impl Graph {
    /// Replaces the graph with `edges` (`(caller, callee)` pairs).
    pub fn set<'a>(&self, edges: impl IntoIterator<Item = (&'a str, &'a str)>) {
        let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (a, b) in edges {
            g.entry(a.to_string()).or_default().insert(b.to_string());
            g.entry(b.to_string()).or_default().insert(a.to_string());
        }
        *self.0.write().unwrap() = g;
    }

    pub fn neighbours(&self, service: &str) -> Vec<String> {
        self.0.read().unwrap().get(service).map(|n| n.iter().cloned().collect()).unwrap_or_default()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlapPolicy {
    /// State changes counted within this window...
    #[serde(default = "default_flap_window", with = "humantime_serde")]
    pub window: Duration,
    /// ...make an alert flapping when they reach this many (0 disables flap damping).
    #[serde(default = "default_flap_threshold")]
    pub threshold: u32,
    /// A flapping alert must stay quiet this long before its resolve counts.
    #[serde(default = "default_flap_hold", with = "humantime_serde")]
    pub hold: Duration,
}

fn default_group_by() -> Vec<Vec<String>> {
    vec![vec!["service".into()], vec!["namespace".into(), "alertname".into()]]
}
fn default_group_window() -> Duration {
    Duration::from_secs(3600)
}
fn default_grace() -> Duration {
    Duration::from_secs(300)
}
fn default_flap_window() -> Duration {
    Duration::from_secs(600)
}
fn default_flap_threshold() -> u32 {
    4
}
fn default_flap_hold() -> Duration {
    Duration::from_secs(900)
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            group_by: default_group_by(),
            group_window: default_group_window(),
            resolve_grace: default_grace(),
            flapping: FlapPolicy::default(),
            group_by_topology: true,
            topology: Graph::default(),
        }
    }
}

impl Default for FlapPolicy {
    fn default() -> Self {
        FlapPolicy { window: default_flap_window(), threshold: default_flap_threshold(), hold: default_flap_hold() }
    }
}

fn ms(d: Duration) -> Millis {
    d.as_millis().min(i64::MAX as u128) as Millis
}

impl Policy {
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (i, set) in self.group_by.iter().enumerate() {
            if set.is_empty() || set.iter().any(|l| l.is_empty()) {
                out.push(format!("incidents.group_by[{i}]: expected a non-empty list of label names"));
            }
        }
        if self.flapping.threshold == 1 {
            out.push("incidents.flapping.threshold: expected 0 (off) or at least 2".into());
        }
        out
    }

    /// The key that groups this alert with others into one incident.
    pub fn group_key(&self, alert: &Alert) -> String {
        for set in &self.group_by {
            if set.iter().all(|l| alert.labels.contains_key(l)) {
                return set.iter().map(|l| format!("{l}={}", alert.labels[l])).collect::<Vec<_>>().join(",");
            }
        }
        format!("alert={}", alert.key())
    }

    /// The group keys of the alert's service's neighbours: its own key with the service
    /// replaced, when its key is made of a label set that includes `service`.
    pub fn related_keys(&self, alert: &Alert) -> Vec<String> {
        if !self.group_by_topology {
            return Vec::new();
        }
        let Some(set) = self.group_by.iter().find(|set| set.iter().all(|l| alert.labels.contains_key(l))) else {
            return Vec::new();
        };
        if !set.iter().any(|l| l == "service") {
            return Vec::new();
        }
        self.topology
            .neighbours(&alert.labels["service"])
            .into_iter()
            .map(|n| {
                set.iter()
                    .map(|l| format!("{l}={}", if l == "service" { &n } else { &alert.labels[l] }))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IncidentState {
    Open,
    Resolving,
    Resolved,
}

impl IncidentState {
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentState::Open => "open",
            IncidentState::Resolving => "resolving",
            IncidentState::Resolved => "resolved",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "open" => Some(IncidentState::Open),
            "resolving" => Some(IncidentState::Resolving),
            "resolved" => Some(IncidentState::Resolved),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Incident {
    pub id: i64,
    pub group_key: String,
    pub title: String,
    pub severity: Option<String>,
    pub state: IncidentState,
    pub opened_at: Millis,
    /// When an alert of this incident last started firing (the grouping window counts from it).
    pub last_fired_at: Millis,
    pub n_alerts: i64,
    pub n_firing: i64,
    /// The grace period counts from here: the latest resolve, pushed later by flap holds.
    pub quiet_at: Option<Millis>,
    pub resolve_at: Option<Millis>,
    pub resolved_at: Option<Millis>,
}

impl Incident {
    /// The service a page, a ticket or the summary names: the first alert's `service` label
    /// (`labels`), else the incident's group.
    pub fn service(&self, labels: &crate::alert::Labels) -> String {
        labels.get("service").cloned().unwrap_or_else(|| self.group_key.clone())
    }

    /// The incident as the API, the audit export and tickets show it.
    pub fn to_json(&self) -> serde_json::Value {
        use crate::time::rfc3339;
        json!({
            "id": self.id,
            "title": self.title,
            "state": self.state.as_str(),
            "severity": self.severity,
            "group_key": self.group_key,
            "opened_at": rfc3339(self.opened_at),
            "last_fired_at": rfc3339(self.last_fired_at),
            "resolves_at": self.resolve_at.map(rfc3339),
            "resolved_at": self.resolved_at.map(rfc3339),
            "alert_count": self.n_alerts,
            "firing_count": self.n_firing,
        })
    }
}

/// An alert as stored: its latest content plus what correlation keeps about it.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertRow {
    pub alert: Alert,
    pub incident_id: Option<i64>,
    pub group_key: String,
    pub first_seen_at: Millis,
    /// Time of the last firing/resolved transition.
    pub last_change_at: Millis,
    pub flap_window_start: Millis,
    pub flap_count: i64,
    pub flapping: bool,
}

/// What one delivered alert did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// First time this alert was seen.
    New,
    /// A known alert changed (fired again, resolved, or restarted).
    Updated,
    /// Same as what is stored: nothing changed.
    Unchanged,
    /// An older state than the one stored (a late re-delivery): ignored.
    Stale,
}

impl Outcome {
    /// In declaration order (`o as usize` indexes it).
    pub const ALL: [Outcome; 4] = [Outcome::New, Outcome::Updated, Outcome::Unchanged, Outcome::Stale];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::New => "new",
            Outcome::Updated => "updated",
            Outcome::Unchanged => "unchanged",
            Outcome::Stale => "stale",
        }
    }
}

/// The slice of the store that one batch can touch, loaded before and written after.
/// The store fills `alerts` (by key), `incidents` (those rows point at, plus every unresolved
/// incident whose group key occurs in the batch) and `next_incident_id`.
#[derive(Debug, Default)]
pub struct WorkingSet {
    pub alerts: HashMap<String, AlertRow>,
    pub incidents: BTreeMap<i64, Incident>,
    pub next_incident_id: i64,
    pub dirty_alerts: BTreeSet<String>,
    pub dirty_incidents: BTreeSet<i64>,
    pub audit: Vec<AuditEntry>,
}

const SEVERITY_RANK: [&str; 8] = ["critical", "high", "error", "major", "warning", "medium", "low", "info"];

fn severity_rank(s: &str) -> usize {
    SEVERITY_RANK.iter().position(|x| x.eq_ignore_ascii_case(s)).unwrap_or(SEVERITY_RANK.len())
}

fn alert_data(alert: &Alert, flapping: bool) -> serde_json::Value {
    let mut v = json!({
        "alert": alert.key(),
        "status": alert.status.as_str(),
        "labels": alert.labels,
        "annotations": alert.annotations,
        "starts_at": crate::time::rfc3339(alert.starts_at),
    });
    if let Some(e) = alert.ends_at {
        v["ends_at"] = json!(crate::time::rfc3339(e));
    }
    if flapping {
        v["flapping"] = json!(true);
    }
    v
}

impl WorkingSet {
    fn record(&mut self, at: Millis, kind: Kind, incident_id: Option<i64>, actor: &str, data: serde_json::Value) {
        self.audit.push(AuditEntry { at, kind, incident_id, actor: actor.to_string(), data });
    }

    /// Applies one delivered alert at time `now`. Duplicates and stale copies are decided by
    /// reference; only an alert that changes something is copied into the working set.
    pub fn apply(&mut self, incoming: &Alert, now: Millis, policy: &Policy) -> Outcome {
        let key = incoming.key();
        let mut alert = Cow::Borrowed(incoming);
        if incoming.starts_at == START_UNKNOWN {
            let old = self.alerts.get(&key).map(|r| (r.alert.status, r.alert.starts_at, r.alert.ends_at));
            let a = alert.to_mut();
            a.starts_at = match (old, a.status) {
                // Still firing, or resolving the occurrence we know: the stored start.
                (Some((AlertStatus::Firing, start, _)), _) => start,
                (Some((AlertStatus::Resolved, start, ends)), AlertStatus::Resolved) => {
                    a.ends_at = ends;
                    start
                }
                // New, or firing again: it started now.
                (_, AlertStatus::Firing) => now,
                (None, AlertStatus::Resolved) => a.ends_at.unwrap_or(now),
            };
        }
        let actor = incoming.source.as_str();
        let Some(old) = self.alerts.get(&key) else {
            let group_key = policy.group_key(&alert);
            let mut row = AlertRow {
                alert: alert.into_owned(),
                incident_id: None,
                group_key,
                first_seen_at: now,
                last_change_at: now,
                flap_window_start: now,
                flap_count: 0,
                flapping: false,
            };
            if row.alert.status == AlertStatus::Firing {
                let id = self.attach_firing(&mut row, now, policy);
                self.record(now, Kind::AlertReceived, Some(id), actor, alert_data(&row.alert, false));
                self.evaluate(id, now, policy);
            } else {
                self.record(now, Kind::AlertReceived, None, actor, alert_data(&row.alert, false));
            }
            self.put_alert(key, row);
            return Outcome::New;
        };

        let same_start = old.alert.starts_at == alert.starts_at;
        let transition = match (old.alert.status, alert.status) {
            (AlertStatus::Firing, AlertStatus::Firing) if same_start => return Outcome::Unchanged,
            (AlertStatus::Resolved, AlertStatus::Resolved) if same_start && old.alert.ends_at == alert.ends_at => {
                return Outcome::Unchanged;
            }
            (AlertStatus::Resolved, AlertStatus::Firing) if same_start => return Outcome::Stale,
            other => other,
        };
        // A real change: take the stored row out (put back by `put_alert`), no copy.
        let mut row = self.alerts.remove(&key).expect("the row was just found");
        row.alert = alert.into_owned();
        match transition {
            (AlertStatus::Firing, AlertStatus::Firing) | (AlertStatus::Resolved, AlertStatus::Resolved) => {
                // Same state, new times: the alert restarted, or its resolve time was corrected.
                self.record(now, Kind::AlertUpdated, row.incident_id, actor, alert_data(&row.alert, row.flapping));
            }
            (AlertStatus::Firing, AlertStatus::Resolved) => {
                self.count_flap(&mut row, now, policy);
                if let Some(id) = row.incident_id
                    && let Some(inc) = self.incidents.get_mut(&id)
                    && inc.state != IncidentState::Resolved
                {
                    inc.n_firing = (inc.n_firing - 1).max(0);
                    let quiet = if row.flapping { now + ms(policy.flapping.hold) } else { now };
                    inc.quiet_at = Some(inc.quiet_at.map_or(quiet, |q| q.max(quiet)));
                    self.dirty_incidents.insert(id);
                }
                self.record(now, Kind::AlertResolved, row.incident_id, actor, alert_data(&row.alert, row.flapping));
                if let Some(id) = row.incident_id {
                    self.evaluate(id, now, policy);
                }
            }
            (AlertStatus::Resolved, AlertStatus::Firing) => {
                self.count_flap(&mut row, now, policy);
                let id = self.attach_firing(&mut row, now, policy);
                self.record(now, Kind::AlertFiring, Some(id), actor, alert_data(&row.alert, row.flapping));
                self.evaluate(id, now, policy);
            }
        }
        self.put_alert(key, row);
        Outcome::Updated
    }

    fn put_alert(&mut self, key: String, row: AlertRow) {
        self.dirty_alerts.insert(key.clone());
        self.alerts.insert(key, row);
    }

    fn count_flap(&mut self, row: &mut AlertRow, now: Millis, policy: &Policy) {
        let f = &policy.flapping;
        let stable = now - row.last_change_at >= ms(f.hold);
        if now - row.flap_window_start > ms(f.window) || stable {
            row.flap_window_start = now;
            row.flap_count = 0;
            if stable {
                row.flapping = false;
            }
        }
        row.flap_count += 1;
        row.last_change_at = now;
        if f.threshold > 0 && !row.flapping && row.flap_count >= i64::from(f.threshold) {
            row.flapping = true;
            let data = json!({
                "alert": row.alert.key(),
                "changes": row.flap_count,
                "within": humantime::format_duration(f.window).to_string(),
                "hold": humantime::format_duration(f.hold).to_string(),
            });
            self.record(now, Kind::AlertFlapping, row.incident_id, "medic", data);
        }
    }

    /// Puts a firing alert into an incident: its own unresolved one, else the group's current
    /// one, else a new one. Returns the incident id.
    fn attach_firing(&mut self, row: &mut AlertRow, now: Millis, policy: &Policy) -> i64 {
        let current =
            row.incident_id.filter(|id| self.incidents.get(id).is_some_and(|i| i.state != IncidentState::Resolved));
        let joined = current.is_some();
        let id = current.or_else(|| self.find_group(row, now, policy)).unwrap_or_else(|| self.open(row, now));
        let inc = self.incidents.get_mut(&id).expect("incident just found or opened");
        if !joined {
            inc.n_alerts += 1;
        }
        inc.n_firing += 1;
        inc.last_fired_at = now;
        if let Some(sev) = row.alert.labels.get("severity")
            && inc.severity.as_deref().is_none_or(|cur| severity_rank(sev) < severity_rank(cur))
        {
            inc.severity = Some(sev.clone());
        }
        self.dirty_incidents.insert(id);
        row.incident_id = Some(id);
        id
    }

    /// The incident a firing alert joins: its group's, else a topology neighbour's.
    fn find_group(&self, row: &AlertRow, now: Millis, policy: &Policy) -> Option<i64> {
        let live = |keys: &[&str]| {
            self.incidents
                .values()
                .filter(|i| {
                    keys.contains(&i.group_key.as_str())
                        && i.state != IncidentState::Resolved
                        && now - i.last_fired_at <= ms(policy.group_window)
                })
                .max_by_key(|i| (i.last_fired_at, i.id))
                .map(|i| i.id)
        };
        live(&[row.group_key.as_str()]).or_else(|| {
            let related = policy.related_keys(&row.alert);
            live(&related.iter().map(String::as_str).collect::<Vec<_>>())
        })
    }

    fn open(&mut self, row: &AlertRow, now: Millis) -> i64 {
        let id = self.next_incident_id.max(1);
        self.next_incident_id = id + 1;
        let title = match row.alert.labels.get("service") {
            Some(s) => format!("{} on {s}", row.alert.name()),
            None => row.alert.name().to_string(),
        };
        let inc = Incident {
            id,
            group_key: row.group_key.clone(),
            title: title.clone(),
            severity: None,
            state: IncidentState::Open,
            opened_at: now,
            last_fired_at: now,
            n_alerts: 0,
            n_firing: 0,
            quiet_at: None,
            resolve_at: None,
            resolved_at: None,
        };
        self.incidents.insert(id, inc);
        self.dirty_incidents.insert(id);
        self.record(now, Kind::IncidentOpened, Some(id), "medic", json!({"title": title, "group_key": row.group_key}));
        id
    }

    /// Moves an incident to the state its alerts call for at `now`, auditing the transition.
    pub fn evaluate(&mut self, id: i64, now: Millis, policy: &Policy) {
        let Some(inc) = self.incidents.get_mut(&id) else { return };
        if inc.state == IncidentState::Resolved {
            return;
        }
        let from = inc.state;
        let resolve_at = inc.quiet_at.unwrap_or(now) + ms(policy.resolve_grace);
        let to = if inc.n_firing > 0 || inc.quiet_at.is_some_and(|q| now < q) {
            IncidentState::Open
        } else if now < resolve_at {
            IncidentState::Resolving
        } else {
            IncidentState::Resolved
        };
        if from == to {
            return;
        }
        inc.state = to;
        let (kind, data) = match to {
            IncidentState::Open => {
                inc.resolve_at = None;
                (Kind::IncidentReopened, json!({"reason": "an alert fired again within the grace period"}))
            }
            IncidentState::Resolving => {
                inc.resolve_at = Some(resolve_at);
                (
                    Kind::IncidentResolving,
                    json!({"reason": "no alert firing", "resolves_at": crate::time::rfc3339(resolve_at)}),
                )
            }
            IncidentState::Resolved => {
                inc.resolve_at = None;
                inc.resolved_at = Some(now);
                (Kind::IncidentResolved, json!({"reason": "all alerts resolved and the grace period passed"}))
            }
        };
        self.dirty_incidents.insert(id);
        self.record(now, kind, Some(id), "medic", data);
    }

    /// Re-evaluates every loaded incident (the periodic tick).
    pub fn evaluate_all(&mut self, now: Millis, policy: &Policy) {
        let ids: Vec<i64> = self.incidents.keys().copied().collect();
        for id in ids {
            self.evaluate(id, now, policy);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{Labels, Source};

    const MIN: Millis = 60_000;

    fn alert(fp: &str, service: &str, status: AlertStatus, starts: Millis) -> Alert {
        let labels: Labels =
            [("alertname".to_string(), format!("A{fp}")), ("service".to_string(), service.to_string())].into();
        Alert {
            source: Source::Alertmanager,
            fingerprint: fp.into(),
            status,
            labels,
            annotations: Labels::new(),
            starts_at: starts,
            ends_at: (status == AlertStatus::Resolved).then_some(starts + 1),
            links: Labels::new(),
        }
    }

    fn kinds(ws: &WorkingSet) -> Vec<Kind> {
        ws.audit.iter().map(|e| e.kind).collect()
    }

    #[test]
    fn groups_by_service_and_resolves_after_grace() {
        let p = Policy::default();
        let mut ws = WorkingSet { next_incident_id: 1, ..Default::default() };
        assert_eq!(ws.apply(&alert("a", "pay", AlertStatus::Firing, 0), 0, &p), Outcome::New);
        assert_eq!(ws.apply(&alert("b", "pay", AlertStatus::Firing, 0), MIN, &p), Outcome::New);
        assert_eq!(ws.apply(&alert("c", "web", AlertStatus::Firing, 0), MIN, &p), Outcome::New);
        assert_eq!(ws.incidents.len(), 2);
        assert_eq!(ws.incidents[&1].n_alerts, 2);
        assert_eq!(ws.apply(&alert("a", "pay", AlertStatus::Firing, 0), 2 * MIN, &p), Outcome::Unchanged);

        ws.apply(&alert("a", "pay", AlertStatus::Resolved, 0), 3 * MIN, &p);
        assert_eq!(ws.incidents[&1].state, IncidentState::Open);
        ws.apply(&alert("b", "pay", AlertStatus::Resolved, 0), 4 * MIN, &p);
        assert_eq!(ws.incidents[&1].state, IncidentState::Resolving);
        ws.evaluate_all(8 * MIN, &p);
        assert_eq!(ws.incidents[&1].state, IncidentState::Resolving);
        ws.evaluate_all(9 * MIN, &p);
        assert_eq!(ws.incidents[&1].state, IncidentState::Resolved);
        assert_eq!(ws.incidents[&2].state, IncidentState::Open);
    }

    #[test]
    fn refire_within_grace_reopens_after_grace_opens_new() {
        let p = Policy::default();
        let mut ws = WorkingSet { next_incident_id: 1, ..Default::default() };
        ws.apply(&alert("a", "pay", AlertStatus::Firing, 0), 0, &p);
        ws.apply(&alert("a", "pay", AlertStatus::Resolved, 0), MIN, &p);
        ws.apply(&alert("a", "pay", AlertStatus::Firing, 2 * MIN), 2 * MIN, &p);
        assert_eq!(ws.incidents[&1].state, IncidentState::Open);
        assert!(kinds(&ws).contains(&Kind::IncidentReopened));
        ws.apply(&alert("a", "pay", AlertStatus::Resolved, 2 * MIN), 3 * MIN, &p);
        ws.evaluate_all(9 * MIN, &p);
        assert_eq!(ws.incidents[&1].state, IncidentState::Resolved);
        ws.apply(&alert("a", "pay", AlertStatus::Firing, 10 * MIN), 10 * MIN, &p);
        assert_eq!(ws.incidents.len(), 2);
        assert_eq!(ws.alerts["alertmanager/a"].incident_id, Some(2));
    }

    #[test]
    fn stale_firing_after_resolve_is_ignored() {
        let p = Policy::default();
        let mut ws = WorkingSet { next_incident_id: 1, ..Default::default() };
        ws.apply(&alert("a", "pay", AlertStatus::Firing, 0), 0, &p);
        ws.apply(&alert("a", "pay", AlertStatus::Resolved, 0), MIN, &p);
        let n = ws.audit.len();
        assert_eq!(ws.apply(&alert("a", "pay", AlertStatus::Firing, 0), 2 * MIN, &p), Outcome::Stale);
        assert_eq!(ws.audit.len(), n);
    }

    #[test]
    fn a_dependency_joins_its_callers_incident() {
        let p = Policy::default();
        p.topology.set([("checkout", "postgres"), ("search", "elastic")]);
        let mut ws = WorkingSet { next_incident_id: 1, ..Default::default() };
        ws.apply(&alert("a", "checkout", AlertStatus::Firing, 0), 0, &p);
        ws.apply(&alert("b", "postgres", AlertStatus::Firing, MIN), MIN, &p);
        ws.apply(&alert("c", "elastic", AlertStatus::Firing, MIN), MIN, &p);
        assert_eq!(ws.incidents.len(), 2, "postgres joined checkout's incident; elastic is unrelated");
        assert_eq!(ws.alerts["alertmanager/b"].incident_id, Some(1));
        // Its own group's incident still comes first, and the feature can be turned off.
        let off = Policy { group_by_topology: false, ..p.clone() };
        let mut ws = WorkingSet { next_incident_id: 1, ..Default::default() };
        ws.apply(&alert("a", "checkout", AlertStatus::Firing, 0), 0, &off);
        ws.apply(&alert("b", "postgres", AlertStatus::Firing, MIN), MIN, &off);
        assert_eq!(ws.incidents.len(), 2);
    }

    #[test]
    fn group_window_limits_joining() {
        let p = Policy::default();
        let mut ws = WorkingSet { next_incident_id: 1, ..Default::default() };
        ws.apply(&alert("a", "pay", AlertStatus::Firing, 0), 0, &p);
        ws.apply(&alert("b", "pay", AlertStatus::Firing, 0), 61 * MIN, &p);
        assert_eq!(ws.incidents.len(), 2);
    }

    #[test]
    fn flapping_alert_does_not_bounce_the_incident() {
        let p = Policy::default();
        let mut ws = WorkingSet { next_incident_id: 1, ..Default::default() };
        let mut t = 0;
        ws.apply(&alert("a", "pay", AlertStatus::Firing, t), t, &p);
        for _ in 0..6 {
            t += MIN;
            ws.apply(&alert("a", "pay", AlertStatus::Resolved, t - MIN), t, &p);
            t += MIN;
            ws.apply(&alert("a", "pay", AlertStatus::Firing, t), t, &p);
        }
        assert!(ws.alerts["alertmanager/a"].flapping);
        assert!(kinds(&ws).contains(&Kind::AlertFlapping));
        // Before the flapping started (threshold 4), the incident did bounce; after, it stays open.
        let first_flap = ws.audit.iter().position(|e| e.kind == Kind::AlertFlapping).unwrap();
        assert!(!ws.audit[first_flap..].iter().any(|e| e.kind == Kind::IncidentResolving));
        t += MIN;
        ws.apply(&alert("a", "pay", AlertStatus::Resolved, t - MIN), t, &p);
        ws.evaluate_all(t + 10 * MIN, &p);
        assert_eq!(ws.incidents[&1].state, IncidentState::Open, "held while flapping");
        ws.evaluate_all(t + 15 * MIN, &p);
        assert_eq!(ws.incidents[&1].state, IncidentState::Resolving);
        ws.evaluate_all(t + 20 * MIN, &p);
        assert_eq!(ws.incidents[&1].state, IncidentState::Resolved);
    }

    #[test]
    fn group_key_falls_back() {
        let p = Policy::default();
        let mut a = alert("a", "pay", AlertStatus::Firing, 0);
        assert_eq!(p.group_key(&a), "service=pay");
        a.labels.remove("service");
        a.labels.insert("namespace".into(), "prod".into());
        assert_eq!(p.group_key(&a), "namespace=prod,alertname=Aa");
        a.labels.remove("namespace");
        assert_eq!(p.group_key(&a), "alert=alertmanager/a");
    }
}
