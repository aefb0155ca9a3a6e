//! `medic test` and `medic replay` on the shipped runbooks and their scenarios: every runbook
//! has a scenario where it must match and one where it must not, they all pass, and a wrong
//! expectation fails the run.

use std::path::Path;
use std::process::{Command, Output};

fn medic(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_medic")).args(args).current_dir(env!("CARGO_MANIFEST_DIR")).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn every_runbook_has_passing_match_and_no_match_scenarios() {
    let o = medic(&["test", "runbooks/"]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains(" 0 failed"), "{out}");
    // The scenario whose post-check fails shows the rollback and the escalation.
    let failing = out.split("rollback-does-not-help").nth(1).unwrap_or_default();
    assert!(failing.contains("verification: expected failed, got failed"), "{out}");
    assert!(
        failing.contains(
            "step failed: step: roll-back; reason: post-check failed: error_ratio = 0.15, not < 0.02 within 600s"
        ),
        "{out}"
    );
    assert!(
        failing.contains(
            "step rolled back: step: roll-back; rollback: rollout undo deployment/checkout -n shop to revision 42; result: done"
        ),
        "{out}"
    );
    assert!(failing.contains("escalated:"), "{out}");
    let runbooks = medic::runbook::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("runbooks")).unwrap();
    for rb in &runbooks {
        let mut matched = false;
        let mut refused = false;
        let mut precondition_fails = false;
        for entry in std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("runbooks/tests")).unwrap() {
            let path = entry.unwrap().path();
            if !path.file_name().unwrap().to_string_lossy().starts_with(&format!("{}.", rb.id)) {
                continue;
            }
            let world = medic::scenario::Scenario::load(&path).unwrap().world().unwrap();
            precondition_fails |= world.expect.refused.is_some();
            match world.expect.runbook.as_deref() {
                Some(id) if id == rb.id => matched = true,
                Some("none") => refused = true,
                other => panic!("{}: unexpected expectation {other:?}", path.display()),
            }
            assert!(
                out.contains(&format!("ok   {}", path.strip_prefix(env!("CARGO_MANIFEST_DIR")).unwrap().display())),
                "{out}"
            );
        }
        assert!(matched && refused, "{}: needs a scenario where it matches and one where it must not", rb.id);
        let acts_on_kubernetes = rb.plan.iter().flat_map(|p| &p.steps).any(|s| s.action.kubernetes.is_some());
        assert!(
            precondition_fails || !acts_on_kubernetes,
            "{}: needs a scenario where its Kubernetes precondition fails (expect.refused)",
            rb.id
        );
    }
}

#[test]
fn a_wrong_expectation_fails_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let src = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("runbooks/tests/rollback-bad-deploy.no-deploy.yaml"),
    )
    .unwrap();
    let file = dir.path().join("wrong.yaml");
    std::fs::write(&file, src.replace("runbook: none", "runbook: rollback-bad-deploy")).unwrap();
    let o = medic(&["test", file.to_str().unwrap()]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("runbook: expected rollback-bad-deploy, got none"), "{out}");
    assert!(out.contains("1 failed"), "{out}");

    std::fs::write(&file, "name: x\nnow: 2026-11-21T15:00:00Z\nalerts: []\n").unwrap();
    let out = text(&medic(&["test", file.to_str().unwrap()]));
    assert!(out.contains("alerts: expected at least one alert"), "{out}");
}

#[test]
fn replay_shows_evidence_and_the_plan_without_executing() {
    let o = medic(&["replay", "runbooks/tests/rollback-bad-deploy.match.yaml"]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    for needle in [
        "Top hypothesis (confidence",
        "runbook rollback-bad-deploy, tier 3",
        "[metric] error_ratio of checkout climbed steadily from 0.4% to 14.8% over 23 min from 14:37 UTC",
        "[change] deploy of checkout v2.14.0 by alice",
        "[log] log pattern new since the change",
        "Plan ",
        "(not executed)",
        "1. roll-back: rollout undo deployment/checkout -n shop to revision 41",
        "touches: checkout (Deployment, namespace shop): revision 42 (checkout=registry.example.com/shop/checkout:v2.14.0) → revision 41 (checkout=registry.example.com/shop/checkout:v2.13.2)",
        "verify: error_ratio < 0.02 within 600s",
        "rollback: rollout undo back to revision 42",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in\n{out}");
    }
}
