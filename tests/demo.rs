//! `medic demo --yes`: the whole loop on the bundled scenario exits 0 and prints, in order, the
//! incident, the top hypothesis with its evidence, the plan with its hash, who approved, each
//! step with its result, the verification and the audit verification.

use std::process::Command;
use std::time::Instant;

/// `medic demo --yes` as `demo-user`; its stdout and stderr, after checking it exited 0.
fn demo() -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_medic"))
        .args(["demo", "--yes"])
        .current_dir(std::env::temp_dir())
        .env("USER", "demo-user")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{out}");
    out
}

#[test]
fn the_whole_loop_in_order() {
    let started = Instant::now();
    let out = demo();
    let mut at = 0;
    for needle in [
        "Incident #1: HighErrorRate on checkout",
        "Top hypothesis (",
        "runbook rollback-bad-deploy",
        "[metric] error_ratio of checkout climbed steadily from 0.4% to 14.8% over 23 min",
        "[metric] the dependencies of checkout look healthy: no series of payments (1) or postgres (1) left its baseline",
        "[change] deploy of checkout v2.14.0 by alice",
        "[log] log pattern new since the change",
        "Plan ",
        "1. roll-back: rollout undo deployment/checkout -n shop to revision 41",
        "touches: checkout (Deployment, namespace shop): revision 42",
        "approved by console:demo-user",
        "step succeeded: step: roll-back",
        "rolled back deployment/checkout -n shop from revision 42 to the template of revision 41",
        "verified: error_ratio = 0.004 (< 0.02)",
        "verified: every post-check passed",
        "incident #1 is resolved",
        "| plan_approved | console:demo-user |",
        "medic audit verify: OK:",
    ] {
        match out[at..].find(needle) {
            Some(i) => at += i + needle.len(),
            None => panic!("{needle:?} missing (or out of order) after byte {at} of\n{out}"),
        }
    }
    assert!(started.elapsed().as_secs() < 60, "the demo runs in under a minute");
}

/// The demo runs `serve`'s own pipeline: the diagnosis the audit records is the one the console
/// showed, and the plan approved came from that hypothesis' runbook (issue 14).
#[test]
fn the_audit_says_what_the_console_showed() {
    let out = demo();
    let shown = regex::Regex::new(r"Top hypothesis \((\d+)% · runbook ([a-z0-9-]+) ").unwrap();
    let c = shown.captures(&out).unwrap_or_else(|| panic!("no top hypothesis in\n{out}"));
    let (confidence, runbook) = (c[1].to_string(), c[2].to_string());
    assert_eq!(runbook, "rollback-bad-deploy");
    let diagnosed = out.lines().find(|l| l.contains("| diagnosed | medic |")).expect("a diagnosed record");
    assert!(
        diagnosed.contains(&format!("({confidence}%); plan of {runbook} |")),
        "the audit's diagnosis is the one shown ({confidence}%, {runbook}): {diagnosed}"
    );
    let proposed = out.lines().find(|l| l.contains("| plan_proposed | medic |")).expect("a proposed plan");
    assert!(proposed.contains(&format!("runbook: {runbook};")), "{proposed}");
    let approved = out.lines().find(|l| l.contains("| plan_approved |")).expect("an approved plan");
    assert!(approved.contains(&format!("runbook: {runbook};")), "{approved}");
}

#[test]
fn every_shipped_template_loads() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("templates/console");
    let hb = medic::chat::templates(&dir).unwrap();
    assert!(hb.has_template("incident"));
}
