//! Correlation and audit through the real store, on both backends, with a hand-driven clock:
//! grouping, resolve after grace, reopen, flap damping across batches, tamper detection, large
//! batches, and two writers (replicas) on one database.

mod common;

use common::{Db, fresh_db, raw_pool};
use medic::alert::{Alert, AlertStatus, Labels, Source};
use medic::audit::{Broken, Verifier};
use medic::incident::{IncidentState, Outcome, Policy};
use medic::store::{self, IncidentFilter, Store};
use medic::time::Millis;
use std::sync::Arc;

const T0: Millis = 1_800_000_000_000;
const MIN: Millis = 60_000;

fn alert(fp: &str, service: &str, status: AlertStatus, starts: Millis) -> Alert {
    let labels: Labels =
        [("alertname".to_string(), format!("Alert{fp}")), ("service".to_string(), service.to_string())].into();
    Alert {
        source: Source::Alertmanager,
        fingerprint: fp.into(),
        status,
        labels,
        annotations: [("summary".to_string(), format!("{fp} on {service}"))].into(),
        starts_at: starts,
        ends_at: (status == AlertStatus::Resolved).then_some(starts + MIN),
        links: Labels::new(),
    }
}

async fn ingest(s: &dyn Store, alerts: Vec<Alert>, now: Millis, p: &Policy) -> Vec<Outcome> {
    s.ingest(&alerts, &[], now, p).await.unwrap().outcomes
}

async fn state(s: &dyn Store, id: i64) -> IncidentState {
    s.incident(id).await.unwrap().unwrap().0.state
}

async fn verify(s: &dyn Store) -> Result<u64, Broken> {
    let mut v = Verifier::default();
    for r in s.audit_page(0, 1_000_000).await.unwrap() {
        v.check(&r)?;
    }
    Ok(v.checked)
}

async fn open(db: Db) -> Option<(common::TestDb, Arc<dyn Store>)> {
    let db = fresh_db(db).await?;
    let s = store::open(&db.url, 4).await.unwrap();
    Some((db, s))
}

async fn grouping_resolve_reopen(db: Db) {
    let Some((_db, s)) = open(db).await else { return };
    let p = Policy::default(); // grace 5m, window 1h
    use AlertStatus::*;
    assert_eq!(ingest(&*s, vec![alert("a", "pay", Firing, T0)], T0, &p).await, [Outcome::New]);
    ingest(&*s, vec![alert("b", "pay", Firing, T0), alert("c", "web", Firing, T0)], T0 + MIN, &p).await;
    let list = s.incidents(&IncidentFilter { limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(list.len(), 2, "pay and web are two incidents");
    let (pay, alerts) = s.incident(1).await.unwrap().unwrap();
    assert_eq!((pay.n_alerts, pay.n_firing, alerts.len()), (2, 2, 2));

    ingest(&*s, vec![alert("a", "pay", Resolved, T0), alert("b", "pay", Resolved, T0)], T0 + 3 * MIN, &p).await;
    assert_eq!(state(&*s, 1).await, IncidentState::Resolving);
    assert_eq!(s.tick(T0 + 7 * MIN, &p).await.unwrap(), 0, "grace not over");
    // Re-fire inside the grace period: the same incident, reopened.
    ingest(&*s, vec![alert("a", "pay", Firing, T0 + 7 * MIN)], T0 + 7 * MIN, &p).await;
    assert_eq!(state(&*s, 1).await, IncidentState::Open);
    ingest(&*s, vec![alert("a", "pay", Resolved, T0 + 7 * MIN)], T0 + 8 * MIN, &p).await;
    assert_eq!(s.tick(T0 + 12 * MIN, &p).await.unwrap(), 0);
    assert_eq!(s.tick(T0 + 13 * MIN, &p).await.unwrap(), 1);
    assert_eq!(state(&*s, 1).await, IncidentState::Resolved);
    assert_eq!(state(&*s, 2).await, IncidentState::Open);
    assert_eq!(s.unresolved_counts().await.unwrap(), (1, 0));

    // After resolution, the same alert firing again is a new incident.
    ingest(&*s, vec![alert("a", "pay", Firing, T0 + 20 * MIN)], T0 + 20 * MIN, &p).await;
    let (inc3, _) = s.incident(3).await.unwrap().unwrap();
    assert_eq!((inc3.group_key.as_str(), inc3.state), ("service=pay", IncidentState::Open));

    let kinds: Vec<String> = s.audit_for_incident(1).await.unwrap().into_iter().map(|r| r.kind).collect();
    assert_eq!(
        kinds,
        [
            "incident_opened",
            "alert_received",
            "alert_received",
            "alert_resolved",
            "alert_resolved",
            "incident_resolving",
            "alert_firing",
            "incident_reopened",
            "alert_resolved",
            "incident_resolving",
            "incident_resolved"
        ]
    );
    assert_eq!(verify(&*s).await, Ok(s.audit_page(0, 1000).await.unwrap().len() as u64));
    s.close().await;
}

async fn group_window(db: Db) {
    let Some((_db, s)) = open(db).await else { return };
    let p = Policy::default();
    ingest(&*s, vec![alert("a", "pay", AlertStatus::Firing, T0)], T0, &p).await;
    let r = s.ingest(&[alert("b", "pay", AlertStatus::Firing, T0)], &[], T0 + 61 * MIN, &p).await.unwrap();
    assert_eq!(r.incidents, [Some(2)], "outside the 1h window a new incident opens");
    let r = s.ingest(&[alert("c", "pay", AlertStatus::Firing, T0)], &[], T0 + 62 * MIN, &p).await.unwrap();
    assert_eq!(r.incidents, [Some(2)], "and later alerts join the newest one");
    s.close().await;
}

async fn flapping_is_damped_across_batches(db: Db) {
    let Some((_db, s)) = open(db).await else { return };
    let p = Policy::default(); // threshold 4 in 10m, hold 15m, grace 5m
    let mut t = T0;
    ingest(&*s, vec![alert("f", "pay", AlertStatus::Firing, t)], t, &p).await;
    for _ in 0..5 {
        t += MIN;
        ingest(&*s, vec![alert("f", "pay", AlertStatus::Resolved, t - MIN)], t, &p).await;
        t += MIN;
        ingest(&*s, vec![alert("f", "pay", AlertStatus::Firing, t)], t, &p).await;
    }
    let (_, alerts) = s.incident(1).await.unwrap().unwrap();
    assert!(alerts[0].flapping, "the flapping flag survives the round trip through the store");
    t += MIN;
    ingest(&*s, vec![alert("f", "pay", AlertStatus::Resolved, t - MIN)], t, &p).await;
    s.tick(t + 14 * MIN, &p).await.unwrap();
    assert_eq!(state(&*s, 1).await, IncidentState::Open, "held open while the alert may flap back");
    s.tick(t + 15 * MIN, &p).await.unwrap();
    assert_eq!(state(&*s, 1).await, IncidentState::Resolving);
    s.tick(t + 20 * MIN, &p).await.unwrap();
    assert_eq!(state(&*s, 1).await, IncidentState::Resolved);
    let records = s.audit_for_incident(1).await.unwrap();
    let flap_at = records.iter().position(|r| r.kind == "alert_flapping").expect("flapping audited");
    let transitions: Vec<&str> =
        records[flap_at..].iter().map(|r| r.kind.as_str()).filter(|k| k.starts_with("incident_")).collect();
    // The re-fire that revealed the flapping reopens the incident; after that it stays open
    // through every further flap until the hold has passed.
    assert_eq!(transitions, ["incident_reopened", "incident_resolving", "incident_resolved"]);
    s.close().await;
}

async fn audit_tampering_is_detected(db: Db) {
    // (what to do to the log, what verify must say)
    let cases: [(&str, &[&str], Broken); 4] = [
        ("alter", &["UPDATE audit_log SET data = '{\"alert\":\"forged\"}' WHERE seq = 3"], Broken::Altered { seq: 3 }),
        ("remove", &["DELETE FROM audit_log WHERE seq = 2"], Broken::Gap { seq: 3, expected: 2 }),
        (
            "reorder",
            &[
                "UPDATE audit_log SET seq = -2 WHERE seq = 2",
                "UPDATE audit_log SET seq = 2 WHERE seq = 3",
                "UPDATE audit_log SET seq = 3 WHERE seq = -2",
            ],
            Broken::Link { seq: 2 },
        ),
        (
            "rehash one",
            &["UPDATE audit_log SET hash = 'ab' || substr(hash, 3) WHERE seq = 4"],
            Broken::Altered { seq: 4 },
        ),
    ];
    for (what, sql, expected) in cases {
        let Some((db, s)) = open(db).await else { return };
        let p = Policy::default();
        ingest(
            &*s,
            vec![alert("a", "pay", AlertStatus::Firing, T0), alert("b", "web", AlertStatus::Firing, T0)],
            T0,
            &p,
        )
        .await;
        ingest(&*s, vec![alert("a", "pay", AlertStatus::Resolved, T0)], T0 + MIN, &p).await;
        assert_eq!(verify(&*s).await, Ok(6), "{what}: intact before tampering");
        let raw = raw_pool(&db).await;
        for q in sql {
            sqlx::query(q).execute(&raw).await.unwrap();
        }
        raw.close().await;
        assert_eq!(verify(&*s).await, Err(expected), "{what}");
        s.close().await;
    }
}

async fn large_batches_are_chunked(db: Db) {
    let Some((_db, s)) = open(db).await else { return };
    let p = Policy::default();
    let alerts: Vec<Alert> =
        (0..1300).map(|i| alert(&format!("fp{i}"), &format!("svc{}", i % 7), AlertStatus::Firing, T0)).collect();
    let r = s.ingest(&alerts, &[], T0, &p).await.unwrap();
    assert!(r.outcomes.iter().all(|o| *o == Outcome::New));
    assert_eq!(s.incidents(&IncidentFilter { limit: 100, ..Default::default() }).await.unwrap().len(), 7);
    let r = s.ingest(&alerts, &[], T0 + 1, &p).await.unwrap();
    assert!(r.outcomes.iter().all(|o| *o == Outcome::Unchanged));
    assert_eq!(verify(&*s).await, Ok(1300 + 7));
    s.close().await;
}

/// A big incident is never read whole: its first and latest alerts, and pages by key.
async fn a_big_incident_is_read_in_bounded_slices(db: Db) {
    let Some((_db, s)) = open(db).await else { return };
    let p = Policy::default();
    let n = store::ALERTS_READ + 200;
    for batch in 0..n / 100 {
        let alerts: Vec<Alert> = (batch * 100..batch * 100 + 100)
            .map(|i| alert(&format!("fp{i:05}"), "big", AlertStatus::Firing, T0))
            .collect();
        s.ingest(&alerts, &[], T0 + batch, &p).await.unwrap();
    }
    let id = s.incidents(&IncidentFilter { limit: 10, ..Default::default() }).await.unwrap()[0].id;
    let (inc, alerts) = s.incident(id).await.unwrap().unwrap();
    assert_eq!(inc.n_alerts, n);
    assert_eq!(alerts.len() as i64, store::ALERTS_READ);
    let keys: Vec<String> = alerts.iter().map(|r| r.alert.fingerprint.clone()).collect();
    assert_eq!(keys[0], "fp00000", "the first seen first");
    assert_eq!(keys[499], "fp00499");
    assert_eq!(keys[500], format!("fp{:05}", n - 500), "then the latest");
    assert_eq!(keys.last().unwrap(), &format!("fp{:05}", n - 1));
    let (_, page, total) = s.incident_alerts(id, None, 3).await.unwrap().unwrap();
    assert_eq!(total, n);
    let after = page.last().unwrap().alert.key();
    let (_, next, _) = s.incident_alerts(id, Some(&after), 3).await.unwrap().unwrap();
    assert!(next[0].alert.key() > after);
    s.close().await;
}

/// Two stores on one database stand for two replicas: one chain, one incident per group.
async fn two_writers_share_one_chain(db: Db) {
    let Some((db, a)) = open(db).await else { return };
    let b = store::open(&db.url, 4).await.unwrap();
    let p = Arc::new(Policy::default());
    let mut tasks = Vec::new();
    for (w, s) in [a.clone(), b.clone()].into_iter().enumerate() {
        let p = p.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..40 {
                let batch = vec![
                    alert(&format!("w{w}-{i}"), "shared", AlertStatus::Firing, T0),
                    alert(&format!("w{w}-{i}-x"), &format!("own{w}"), AlertStatus::Firing, T0),
                ];
                s.ingest(&batch, &[], T0 + i, &p).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let list = a.incidents(&IncidentFilter { limit: 100, ..Default::default() }).await.unwrap();
    let shared: Vec<_> = list.iter().filter(|i| i.group_key == "service=shared").collect();
    assert_eq!(shared.len(), 1, "one incident for the shared group, whichever replica saw it first");
    assert_eq!(shared[0].n_alerts, 80);
    assert_eq!(list.len(), 3);
    assert_eq!(verify(&*b).await, Ok(160 + 3));
    a.close().await;
    b.close().await;
}

/// A chat delivery is handled once, whichever replica (store client) sees it; the record is
/// kept a day. A hand resolve and reopen are audited, and refused with the reason when they
/// do not apply.
async fn deliveries_once_and_resolve_by_hand(db: Db) {
    let Some((db, s)) = open(db).await else { return };
    let other = store::open(&db.url, 2).await.unwrap();
    assert!(s.first_delivery("slack", "Ev1", T0).await.unwrap());
    assert!(!other.first_delivery("slack", "Ev1", T0 + 1).await.unwrap(), "another replica sees it handled");
    assert!(s.first_delivery("discord", "Ev1", T0).await.unwrap(), "per platform");
    assert!(other.first_delivery("slack", "Ev1", T0 + 25 * 60 * MIN).await.unwrap(), "forgotten after a day");

    let p = Policy::default();
    ingest(&*s, vec![alert("a", "pay", AlertStatus::Firing, T0)], T0, &p).await;
    let who = medic::approval::Identity("slack:U1".into());
    assert!(s.resolve_by_hand(9, true, &who, "slack:C1", T0).await.unwrap().unwrap_err().contains("no incident #9"));
    s.resolve_by_hand(1, true, &who, "slack:C1", T0 + MIN).await.unwrap().unwrap();
    assert_eq!(state(&*s, 1).await, IncidentState::Resolved);
    assert!(s.resolve_by_hand(1, true, &who, "slack:C1", T0).await.unwrap().unwrap_err().contains("already resolved"));
    // The alert resolves and fires again: a new incident; the old one cannot reopen beside it.
    ingest(&*s, vec![alert("a", "pay", AlertStatus::Resolved, T0)], T0 + 2 * MIN, &p).await;
    ingest(&*s, vec![alert("a", "pay", AlertStatus::Firing, T0 + 3 * MIN)], T0 + 3 * MIN, &p).await;
    assert_eq!(state(&*s, 2).await, IncidentState::Open);
    let refused = s.resolve_by_hand(1, false, &who, "slack:C1", T0).await.unwrap().unwrap_err();
    assert!(refused.contains("incident #2 of the same group is open"), "{refused}");
    s.resolve_by_hand(2, true, &who, "slack:C1", T0 + 3 * MIN).await.unwrap().unwrap();
    s.resolve_by_hand(1, false, &who, "slack:C1", T0 + 4 * MIN).await.unwrap().unwrap();
    assert_eq!(state(&*s, 1).await, IncidentState::Open);
    let hand: Vec<_> =
        s.audit_for_incident(1).await.unwrap().into_iter().filter(|r| r.data.contains("by hand")).collect();
    assert_eq!(hand.len(), 2);
    assert!(hand.iter().all(|r| r.actor == "slack:U1" && r.data.contains("slack:C1")));
    assert!(verify(&*s).await.unwrap() > 0, "the chain verifies");
    other.close().await;
}

/// A named lease has one holder among replicas (two store instances here); its holder renews
/// it; another takes it once it lapses, or at once when it is released.
async fn a_lease_has_one_holder_and_lapses(db: Db) {
    let Some((db, a)) = open(db).await else { return };
    let b = store::open(&db.url, 4).await.unwrap();
    let ttl = 15_000;
    assert!(a.lease("slack-socket-mode", "replica-a", T0, ttl).await.unwrap());
    assert!(!b.lease("slack-socket-mode", "replica-b", T0 + 1, ttl).await.unwrap(), "held by a");
    assert!(a.lease("slack-socket-mode", "replica-a", T0 + 5_000, ttl).await.unwrap(), "renewed");
    assert!(!b.lease("slack-socket-mode", "replica-b", T0 + 19_999, ttl).await.unwrap(), "renewal counted");
    assert!(b.lease("slack-socket-mode", "replica-b", T0 + 20_000, ttl).await.unwrap(), "lapsed: taken over");
    assert!(!a.lease("slack-socket-mode", "replica-a", T0 + 20_001, ttl).await.unwrap(), "a lost it");
    assert!(a.lease("other", "replica-a", T0 + 20_001, ttl).await.unwrap(), "leases are per name");
    b.release("slack-socket-mode", "replica-a").await.unwrap();
    assert!(!a.lease("slack-socket-mode", "replica-a", T0 + 20_002, ttl).await.unwrap(), "only its holder releases it");
    b.release("slack-socket-mode", "replica-b").await.unwrap();
    assert!(a.lease("slack-socket-mode", "replica-a", T0 + 20_003, ttl).await.unwrap(), "released: taken at once");
}

/// Retention removes an incident resolved long ago (and its alerts) and the audit records
/// older than the cut behind a checkpoint; the chain still verifies from the checkpoint, and
/// altering what remains, or the checkpoint, is still detected.
async fn retention_keeps_the_chain_verifiable(db: Db) {
    use medic::store::retention::Config;
    let Some((db, s)) = open(db).await else { return };
    let p = Policy::default();
    const DAY: Millis = 24 * 60 * MIN;
    ingest(&*s, vec![alert("a", "pay", AlertStatus::Firing, T0)], T0, &p).await;
    ingest(&*s, vec![alert("a", "pay", AlertStatus::Resolved, T0)], T0 + MIN, &p).await;
    s.tick(T0 + 10 * MIN, &p).await.unwrap();
    assert_eq!(state(&*s, 1).await, IncidentState::Resolved);
    let later = T0 + 10 * DAY;
    ingest(&*s, vec![alert("b", "web", AlertStatus::Firing, later)], later, &p).await;
    let before = s.audit_page(0, 1_000_000).await.unwrap();
    let week = Some(std::time::Duration::from_secs(7 * 86_400));
    let cfg = Config { incidents: week, audit: week, outbox: week, every: None };
    let pruned = s.prune(later + MIN, &cfg).await.unwrap();
    assert_eq!(pruned.incidents, 1);
    let old = before.iter().filter(|r| r.at < later + MIN - 7 * DAY).count() as u64;
    assert!(old > 0 && pruned.audit == old, "{pruned:?}, {old} old records");
    assert!(s.incident(1).await.unwrap().is_none(), "the old incident is gone");
    assert!(s.incident(2).await.unwrap().is_some(), "the open one stays");
    let v = medic::store::verify_audit(&*s).await.unwrap().expect("intact after retention");
    let last_removed = before[old as usize - 1].clone();
    assert_eq!(v.from, Some(last_removed.seq));
    assert_eq!(v.checked as usize, before.len() - old as usize + 1, "what stays, and the audit_pruned record");
    assert_eq!(s.prune(later + 2 * MIN, &cfg).await.unwrap(), Default::default(), "a second run removes nothing");
    // Tampering with what remains, or with the checkpoint, is still found.
    let raw = raw_pool(&db).await;
    let first = last_removed.seq + 1;
    let tamper = format!("UPDATE audit_log SET data = '{{\"alert\":\"forged\"}}' WHERE seq = {first}");
    sqlx::query(&tamper).execute(&raw).await.unwrap();
    let broken = medic::store::verify_audit(&*s).await.unwrap().unwrap_err();
    assert!(broken.contains(&format!("record {first}: content does not match")), "{broken}");
    let restore = format!("UPDATE audit_log SET data = $1 WHERE seq = {first}");
    sqlx::query(&restore).bind(before[first as usize - 1].data.clone()).execute(&raw).await.unwrap();
    assert!(medic::store::verify_audit(&*s).await.unwrap().is_ok(), "restored");
    let forged = format!("UPDATE audit_checkpoint SET seq = {}, hash = '{}'", first, before[first as usize - 1].hash);
    sqlx::query(&forged).execute(&raw).await.unwrap();
    sqlx::query(&format!("DELETE FROM audit_log WHERE seq = {first}")).execute(&raw).await.unwrap();
    let broken = medic::store::verify_audit(&*s).await.unwrap().unwrap_err();
    assert!(broken.contains("not the one the chain's newest audit_pruned record attests"), "{broken}");
    raw.close().await;
}

/// A delivery that could not be built is failed for good and shows in the platform's health;
/// the next root post is a post (there is no sent message to update), and it is claimed.
async fn a_delivery_that_did_not_render_is_a_failed_delivery(db: Db) {
    let Some((_db, s)) = open(db).await else { return };
    let item = store::OutboxItem {
        platform: "discord".into(),
        incident_id: 1,
        op: "post".into(),
        channel: "C1".into(),
        target: None,
        body: String::new(),
    };
    s.outbox_refused(&item, "the post could not be built: decision not found", T0).await.unwrap();
    let health = s.outbox_health(T0 - MIN).await.unwrap();
    assert_eq!((health.len(), health[0].failed), (1, 1), "{health:?}");
    assert!(health[0].last_error.as_deref().unwrap_or("").contains("could not be built"), "{health:?}");
    assert!(s.outbox_claim("discord", T0, MIN, 10).await.unwrap().is_empty(), "a failed row is never sent");
    s.outbox_push(&store::OutboxItem { body: "{}".into(), ..item }, T0 + 1).await.unwrap();
    let claimed = s.outbox_claim("discord", T0 + 2, MIN, 10).await.unwrap();
    assert_eq!(claimed.iter().map(|r| r.item.op.as_str()).collect::<Vec<_>>(), ["post"]);
}

/// The per-person question limit holds across replicas: two stores on one database (two
/// replicas) allow 20 in a minute between them, and more once the minute has passed.
async fn the_question_limit_is_shared_by_replicas(db: Db) {
    let Some((db, a)) = open(db).await else { return };
    let b = store::open(&db.url, 2).await.unwrap();
    let mut allowed = 0;
    for i in 0..30 {
        let s = if i % 2 == 0 { &a } else { &b };
        allowed += usize::from(s.within_rate("ask", "slack:U1", 20, T0 + i).await.unwrap());
    }
    assert_eq!(allowed, 20);
    assert!(a.within_rate("ask", "slack:U2", 20, T0 + 31).await.unwrap(), "per person");
    assert!(b.within_rate("ask", "slack:U1", 20, T0 + MIN + 1).await.unwrap(), "the minute slides");
    b.close().await;
}

both_stores!(
    the_question_limit_is_shared_by_replicas,
    a_delivery_that_did_not_render_is_a_failed_delivery,
    retention_keeps_the_chain_verifiable,
    a_lease_has_one_holder_and_lapses,
    deliveries_once_and_resolve_by_hand,
    grouping_resolve_reopen,
    group_window,
    flapping_is_damped_across_batches,
    audit_tampering_is_detected,
    large_batches_are_chunked,
    a_big_incident_is_read_in_bounded_slices,
    two_writers_share_one_chain,
);
