//! What a sentence may change, through the [`Asker`] that Slack, Discord, `POST /v1/ask`,
//! `medic ask` and the demo all hand their questions to. The asker is a member of the control
//! group, so only the sentence's shape stands between it and a state change; the audit log
//! (every state change is audited in its transaction) and the store are the referees.
//! The sentences are `tests/ask/commands.tsv`.

use medic::approval::{Groups, Identity};
use medic::ask::answer::Question;
use medic::cli::ask::Offline;
use medic::incident::IncidentState;
use std::collections::BTreeMap;

async fn offline() -> Offline {
    offline_in("examples/demo/scenario.yaml").await
}

async fn offline_in(scenario: &str) -> Offline {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let world = medic::scenario::Scenario::load(&root.join(scenario)).unwrap().world().unwrap();
    let runbooks = medic::runbook::load(&root.join("runbooks")).unwrap();
    Offline::open(&world, runbooks, None).await.unwrap()
}

fn question(o: &Offline, text: &str, addressed: bool) -> Question {
    let me = Identity("slack:U0SRE".into());
    Question {
        text: text.into(),
        incident: Some(o.incident),
        who: me.clone(),
        via: "slack:C0INCIDENT".into(),
        groups: Groups { members: BTreeMap::from([("sre".into(), vec![me])]), default_approvers: vec!["sre".into()] },
        addressed,
    }
}

fn rows() -> Vec<(&'static str, &'static str)> {
    include_str!("ask/commands.tsv")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split_once('\t').expect("two columns"))
        .collect()
}

async fn audited(o: &Offline) -> usize {
    o.asker.store.audit_page(0, 100_000).await.unwrap().len()
}

async fn state(o: &Offline) -> (bool, IncidentState) {
    let paused = o.asker.store.paused().await.unwrap().is_some();
    (paused, o.asker.store.incident(o.incident).await.unwrap().unwrap().0.state)
}

#[tokio::test]
async fn a_question_never_acts_and_an_order_does_only_when_addressed() {
    let o = offline().await;
    let before = (audited(&o).await, state(&o).await);
    assert_eq!(before.1, (false, IncidentState::Open));
    let mut failures = Vec::new();
    for (text, want) in rows() {
        // Never: addressed or overheard, nothing changes and nothing is audited.
        // An order overheard: the same.
        for addressed in [true, false].into_iter().filter(|a| want == "never" || !a) {
            let a = o.asker.ask(&question(&o, text, addressed)).await.unwrap();
            if a.intent.mutating() || (audited(&o).await, state(&o).await) != before {
                failures.push(format!("{text:?} (addressed: {addressed}) acted: {}", a.text(0)));
            }
        }
    }
    // The orders, addressed: each reaches its action (a state that cannot change again, such
    // as resolving a resolved incident, is refused there, saying why).
    for (text, want) in rows().into_iter().filter(|(_, w)| *w != "never") {
        let a = o.asker.ask(&question(&o, text, true)).await.unwrap();
        if a.intent.as_str() != want {
            failures.push(format!("{text:?}: want {want}, got {}: {}", a.intent.as_str(), a.text(0)));
        }
        let (paused, incident) = state(&o).await;
        let changed = match want {
            "pause" => paused,
            "resume" => !paused,
            "resolve" => incident == IncidentState::Resolved,
            "reopen" => incident != IncidentState::Resolved,
            _ => true,
        };
        if !changed {
            failures.push(format!("{text:?} did not {want}: {}", a.text(0)));
        }
    }
    assert!(audited(&o).await > before.0, "the orders are audited");
    o.close().await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A question that names a state change is answered as a question, and says how to order it.
#[tokio::test]
async fn a_question_says_why_nothing_was_done() {
    let o = offline().await;
    let a = o.asker.ask(&question(&o, "did someone resolve this?", true)).await.unwrap();
    let text = a.text(0);
    assert_eq!(a.intent.as_str(), "status", "{text}");
    assert!(text.contains("reads as a question, so nothing was done"), "{text}");
    assert!(text.contains("`@medic resolve this incident`"), "{text}");
    let a = o.asker.ask(&question(&o, "pause automation", false)).await.unwrap();
    assert!(a.text(0).contains("not addressed to me"), "{}", a.text(0));
    o.close().await;
}

/// The kinds of question people type that Ask took wrongly before: a service's health, a
/// service it does not know (said back, never replaced by another), an order to act on the
/// system (answered with the plan, never carried out), the incident's onset, severity and story.
#[tokio::test]
async fn health_unknown_services_and_orders_to_act_are_answered_honestly() {
    let o = offline().await;
    let before = audited(&o).await;
    let o = &o;
    let ask = |text: &'static str| {
        let q = question(o, text, true);
        async move { o.asker.ask(&q).await.unwrap() }
    };
    let a = ask("what's wrong with checkout?").await;
    let text = a.text(0);
    assert_eq!(a.intent.as_str(), "health", "{text}");
    assert!(
        text.starts_with("checkout is where the diagnosis puts the cause: The deploy of checkout v2.14.0"),
        "{text}"
    );
    assert!(text.contains("It ranks 1 of 3 by what changed when the incident started"), "{text}");
    assert!(text.contains("• error_ratio of checkout climbed steadily from 0.4% to 14.8%"), "{text}");
    assert!(text.contains("1 alert(s) of this incident firing on checkout"), "{text}");
    let a = ask("is payments ok?").await;
    let text = a.text(0);
    assert!(text.starts_with("payments barely changed when incident #"), "{text}");
    assert!(text.contains("No alert of this incident is firing on payments."), "{text}");
    let a = ask("is the db ok?").await;
    let text = a.text(0);
    assert!(text.starts_with("postgres "), "the incident's one database, not checkout: {text}");
    let a = ask("what changed on monday?").await;
    let text = a.text(0);
    assert!(
        text.lines().nth(1) == Some("I could not read the time \"monday\", so this answer does not use it."),
        "{text}"
    );
    let a = ask("what changed in robusta-runner?").await;
    let text = a.text(0);
    assert!(text.starts_with("I don't know a service called robusta-runner."), "{text}");
    assert!(text.contains("I know: ") && text.contains("checkout"), "{text}");
    let a = ask("roll it back").await;
    let text = a.text(0);
    assert_eq!(a.intent.as_str(), "runbooks", "{text}");
    assert!(text.contains("Proposed: runbook rollback-bad-deploy"), "{text}");
    assert!(text.contains("I did not act on it: I do not act on the system from a sentence"), "{text}");
    // The incident itself: when it started and how bad it is, and its story between two times
    // (the deploy, the onset and the alert, not only medic's own records).
    let a = ask("when did it start?").await;
    let text = a.text(0);
    assert_eq!(a.intent.as_str(), "onset", "{text}");
    assert!(text.starts_with("Incident #1 started around 2026-11-21 14:36 (24 min ago)."), "{text}");
    assert!(text.contains("The first alert fired at 2026-11-21 14:45"), "{text}");
    assert!(text.contains("Severity critical; 1 of 1 alert(s) firing on checkout."), "{text}");
    assert!(text.contains("It is still happening"), "{text}");
    let a = ask("what happened between 14:20 and 14:50?").await;
    let text = a.text(0);
    assert_eq!(a.intent.as_str(), "timeline", "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[1].starts_with("2026-11-21 14:23 change: deploy of checkout v2.14.0 by alice"), "{text}");
    assert_eq!(lines[2], "2026-11-21 14:36 onset: where the diagnosis places the start", "{text}");
    assert_eq!(lines[3], "2026-11-21 14:45 alert HighErrorRate started firing on checkout", "{text}");
    // Values carry their units: a ratio as a percentage.
    let a = ask("show checkout error rate since 14:00").await;
    let text = a.text(0);
    assert!(text.contains("now 14.8% (was 0.4% at the start; min 0.3%, max 14.8%)"), "{text}");
    // Why: the evidence is the queries behind the hypothesis, metrics with their range.
    let a = ask("why?").await;
    let text = a.text(0);
    let cited: Vec<&str> = text.lines().skip_while(|l| *l != "Evidence:").skip(1).collect();
    assert_eq!(
        cited,
        [
            "  · metrics error_ratio (recorded, 2026-11-21 12:45–2026-11-21 15:00)",
            "  · metrics p99_latency (recorded, 2026-11-21 12:45–2026-11-21 15:00)",
            "  · changes checkout (recorded)",
            "  · logs checkout (recorded)",
        ],
        "{text}"
    );
    assert_eq!(audited(o).await, before, "answering changed nothing");
}

/// The cluster, in the crash-looping scenario: the pods as the Kubernetes source has them, and
/// the service's health from the diagnosis (its pods and restarts).
#[tokio::test]
async fn the_crash_looping_scenario_answers_about_its_pods_and_health() {
    let o = offline_in("runbooks/tests/restart-crashlooping.match.yaml").await;
    let a = o.asker.ask(&question(&o, "are any pods crash looping?", true)).await.unwrap();
    let text = a.text(0);
    assert_eq!(a.intent.as_str(), "cluster", "{text}");
    assert!(text.starts_with("2 of the 2 pod(s) of payments in trouble; 11 restart(s) between them."), "{text}");
    assert!(text.contains("• payments-6f7c9-9hh2m CrashLoopBackOff, 5 restart(s)"), "{text}");
    let a = o.asker.ask(&question(&o, "is payments ok?", true)).await.unwrap();
    let text = a.text(0);
    assert!(text.starts_with("payments is where the diagnosis puts the cause"), "{text}");
    assert!(text.contains("• pod payments-6f7c9-x2k4q is OOMKilled (6 restarts)"), "{text}");
    o.close().await;
}

/// The chart a `metric` answer carries, drawn from the demo incident: a PNG with its text
/// (written beside the test binary's target for a person to look at).
#[tokio::test]
async fn the_metric_chart_is_a_png_with_its_onset_and_change_marked() {
    let o = offline().await;
    let a = o.asker.ask(&question(&o, "chart checkout error rate since 14:00", true)).await.unwrap();
    let chart = a.chart.as_ref().expect("a metric answer carries its chart");
    assert_eq!(chart.unit, medic::runbook::Unit::Ratio, "{chart:?}");
    let marks: Vec<&str> = chart.marks.iter().map(|m| m.1.as_str()).collect();
    assert_eq!(marks, ["onset", "deploy of checkout v2.14.0"], "{chart:?}");
    let png = medic::ask::chart::png(chart).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    std::fs::write(std::env::temp_dir().join("medic-demo-chart.png"), &png).unwrap();
    o.close().await;
}

/// A follow-up in the same conversation asks the last question again about what it names; in
/// another conversation it is not understood.
#[tokio::test]
async fn a_follow_up_keeps_the_conversation_s_question() {
    let o = offline().await;
    let a = o.asker.ask(&question(&o, "what changed in checkout since 14:00?", true)).await.unwrap();
    assert_eq!(a.intent.as_str(), "changes");
    let a = o.asker.ask(&question(&o, "and payments?", true)).await.unwrap();
    let text = a.text(0);
    assert_eq!(a.intent.as_str(), "changes", "{text}");
    assert!(text.starts_with("0 change(s) to payments between 2026-11-21 14:00 and 2026-11-21 15:00"), "{text}");
    let a = o.asker.ask(&question(&o, "what about checkout?", true)).await.unwrap();
    assert!(a.text(0).starts_with("1 change(s) to checkout between 2026-11-21 14:00"), "{}", a.text(0));
    let elsewhere = Question { via: "slack:C0OTHER".into(), ..question(&o, "and payments?", true) };
    assert_eq!(o.asker.ask(&elsewhere).await.unwrap().intent.as_str(), "unknown", "another conversation");
    o.close().await;
}
