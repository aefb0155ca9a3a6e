//! Runs a scenario the way medic would handle the incident, without executing anything:
//! gather the context from the recorded backend, diagnose, and build the top hypothesis' plan.
//! `medic replay` prints the result; `medic test` compares it with the scenario's `expect`.

use super::World;
use super::recorded::Recorded;
use crate::context::{self, Sources};
use crate::diagnosis::Diagnosis;
use crate::plan::ProposedPlan;
use crate::responder;
use crate::runbook::Runbook;
use crate::scenario::cluster::LocalCluster;
use crate::time::Clock;
use std::sync::Arc;
use std::time::Duration;

/// The executor's clients for a scenario: its workloads on a [`LocalCluster`] (whose first
/// change switches `recorded` to the scenario's "after" world), the rest simulated. Keep the
/// cluster while the clients are used.
pub async fn local_actions(
    world: &World,
    recorded: Arc<Recorded>,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<(crate::executor::Limits, LocalCluster)> {
    let cluster = LocalCluster::start(&world.kubernetes, &world.pods).await?;
    let (r, c) = (recorded.clone(), clock.clone());
    cluster.on_change(move || r.act(c.now()));
    let mut namespaces: Vec<String> = world.kubernetes.iter().map(|w| w.namespace.clone()).collect();
    namespaces.dedup();
    let cfg = crate::executor::kubernetes::Config {
        namespaces: world.policy.namespaces.clone().unwrap_or(namespaces),
        scale_to_zero_namespaces: world.policy.scale_to_zero_namespaces.clone(),
        url: Some(cluster.url.clone()),
        ..crate::executor::kubernetes::Config::default()
    };
    let client = crate::executor::kubernetes::Cluster::connect(&cfg, Duration::from_secs(5)).await;
    let limits = crate::executor::Limits {
        simulate: Some(recorded),
        kubernetes: Some(Arc::new(client.map_err(anyhow::Error::msg)?)),
        alertmanager: None,
        ..Default::default()
    };
    Ok((limits, cluster))
}

pub struct Outcome {
    pub diagnosis: Diagnosis,
    /// The top hypothesis' plan, the reason it has none, or `None` when no runbook matched.
    pub plan: Option<Result<ProposedPlan, String>>,
}

/// The context sources of a scenario: the recorded world, with its metrics, logs, traces and
/// pods from its Nezha-format directory when it names one.
pub fn sources(world: &World, recorded: Arc<Recorded>) -> anyhow::Result<Sources> {
    let mut sources = Sources::all(recorded, Duration::from_secs(5));
    if let Some(dir) = &world.nezha {
        let data = Arc::new(super::nezha::Nezha::open(dir).map_err(|e| anyhow::anyhow!("nezha: {e}"))?);
        sources.metrics = Some(data.clone());
        sources.logs = Some(data.clone());
        sources.traces = Some(data.clone());
        if !data.topology().is_empty() {
            sources.topology.push(data.clone());
        }
        sources.pods = Some(data);
        // A minute of this data holds thousands of traces.
        sources.trace_limit = 5000;
    }
    Ok(sources)
}

pub async fn run(world: &World, runbooks: &[Runbook]) -> anyhow::Result<Outcome> {
    let recorded = Arc::new(Recorded::new(world.clone()));
    let clock = Arc::new(crate::time::ManualClock::new(world.now));
    let (limits, _cluster) = local_actions(world, recorded.clone(), clock.clone()).await?;
    let title = world.alerts[0].name().to_string();
    let sources = sources(world, recorded)?;
    Ok(run_with(world, runbooks, &sources, (1, &title), &limits, clock.as_ref()).await)
}

/// Like [`run`], for a given incident, with given sources and executor clients: the
/// responder's steps.
pub async fn run_with(
    world: &World,
    runbooks: &[Runbook],
    sources: &Sources,
    incident: (i64, &str),
    limits: &crate::executor::Limits,
    clock: &dyn Clock,
) -> Outcome {
    let request = responder::request(&world.alerts, runbooks, &world.golden, world.now, incident, Default::default());
    let ctx = context::gather(sources, &request).await;
    let (diagnosis, mut plan) = responder::conclude(&world.alerts, runbooks, &world.golden, &ctx, incident, &[]);
    if let Some(Ok(p)) = &mut plan {
        crate::executor::survey(limits, clock, p).await;
        if let Err(e) = earned(world, p) {
            plan = Some(Err(e));
        }
    }
    Outcome { diagnosis, plan }
}

/// Whether the plan runs by itself, given the scenario's `autonomy` (its runbook's history,
/// the policy, the kill switch): the rules `serve` applies, by the same code.
fn earned(world: &World, p: &mut ProposedPlan) -> Result<(), String> {
    let a = &world.autonomy;
    let may = crate::autonomy::may_grant(p.autonomy, p.tier).is_ok();
    let record = a.record(&p.runbook, may)?;
    let label = &a.policy.environment_label;
    let env = world.alerts.iter().find_map(|al| al.labels.get(label).map(String::as_str));
    let paused = a.paused.then_some("automation is paused by scenario:person");
    p.auto = crate::autonomy::assess(&a.policy, p, &record, env, paused);
    p.hash = p.content_hash();
    Ok(())
}

/// One expectation and how it went.
pub struct Verdict {
    pub what: String,
    pub ok: bool,
    pub detail: String,
}

/// Executes the plan against the scenario in simulation — an action switches the recorded
/// world to its "after" state, time is virtual — through the real store, approval and executor
/// (a throwaway SQLite store). Returns the outcome and the execution's audit lines.
pub async fn verify(world: &World, plan: &ProposedPlan) -> anyhow::Result<(crate::executor::Outcome, Vec<String>)> {
    use crate::approval::{Click, Decision, Groups, Identity};
    let dir = tempfile_dir()?;
    let store = crate::store::open(&format!("sqlite://{}", dir.join("verify.db").display()), 2).await?;
    let result = async {
        store.ingest(&world.alerts, &[], world.now, &crate::incident::Policy::default()).await?;
        let approver = Identity("scenario:approver".into());
        store.propose(plan, &Identity("scenario:medic".into()), world.now).await?;
        // The scenario's approver belongs to every group the plan names (or the default one).
        let mut names = plan.approval.groups.clone();
        names.push("scenario-approvers".into());
        let groups = Groups {
            members: names.into_iter().map(|g| (g, vec![approver.clone()])).collect(),
            default_approvers: vec!["scenario-approvers".into()],
        };
        let click =
            Click { who: approver, decision: Decision::Approve, via: "medic test".into(), at: world.now, reason: None };
        let (verdict, approved) = store.decide(&plan.hash, &click, &groups, None).await?;
        let approved = approved.ok_or_else(|| anyhow::anyhow!("the plan could not be approved: {verdict:?}"))?;
        let recorded = Arc::new(Recorded::new(world.clone()));
        let clock = Arc::new(crate::time::ManualClock::new(world.now));
        let (limits, _cluster) = local_actions(world, recorded.clone(), clock.clone()).await?;
        let mut ex = crate::executor::Executor::new(store.clone(), recorded, clock.clone(), limits, "medic-test");
        ex.sleep = Arc::new(crate::executor::VirtualSleep(clock));
        let outcome = ex.execute(approved).await?;
        let lines = store
            .audit_for_incident(plan.incident_id)
            .await?
            .into_iter()
            .filter(|r| r.kind.starts_with("step_") || r.kind == "escalated")
            .map(|r| format!("{}: {}", r.kind.replace('_', " "), crate::audit::summarise(&r.data)))
            .collect();
        Ok::<_, anyhow::Error>((outcome, lines))
    }
    .await;
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// A fresh directory under the system's temporary one, for a throwaway store.
pub(crate) fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "medic-verify-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Compares an outcome with the scenario's `expect`; `verification` runs the plan in simulation.
pub async fn check(world: &World, outcome: &Outcome) -> Vec<Verdict> {
    let mut out = Vec::new();
    let top = outcome.diagnosis.top();
    if let Some(want) = &world.expect.runbook {
        let got = top.runbook.clone().unwrap_or_else(|| "none".into());
        out.push(Verdict { what: "runbook".into(), ok: &got == want, detail: format!("expected {want}, got {got}") });
    }
    if let Some(want) = &world.expect.suspect {
        let got = top.service.clone().unwrap_or_else(|| "none".into());
        out.push(Verdict { what: "suspect".into(), ok: &got == want, detail: format!("expected {want}, got {got}") });
    }
    if let Some(want) = &world.expect.plan_steps {
        let got: Vec<String> = match &outcome.plan {
            Some(Ok(p)) => p.steps.iter().map(|s| s.id.clone()).collect(),
            _ => Vec::new(),
        };
        out.push(Verdict {
            what: "plan steps".into(),
            ok: &got == want,
            detail: format!(
                "expected {want:?}, got {got:?}{}",
                match &outcome.plan {
                    Some(Err(e)) => format!(" (no plan: {e})"),
                    _ => String::new(),
                }
            ),
        });
    }
    if let Some(want) = &world.expect.refused {
        let refusals: Vec<String> = match &outcome.plan {
            Some(Ok(p)) => {
                p.steps.iter().filter_map(|s| s.refused.as_ref().map(|r| format!("{}: {r}", s.id))).collect()
            }
            _ => Vec::new(),
        };
        out.push(Verdict {
            what: "refused".into(),
            ok: refusals.iter().any(|r| r.contains(want.as_str())),
            detail: format!("expected a step refused with {want:?}, got {refusals:?}"),
        });
    }
    if world.expect.autonomy.is_some() || world.expect.autonomy_reason.is_some() {
        let auto = match &outcome.plan {
            Some(Ok(p)) => p.auto.clone(),
            _ => None,
        };
        let got = if auto.as_ref().is_some_and(|a| a.runs_itself) { "auto" } else { "approve" };
        let why = auto.map(|a| a.why).unwrap_or_else(|| "the runbook does not declare `autonomy: auto`".into());
        if let Some(want) = &world.expect.autonomy {
            out.push(Verdict {
                what: "autonomy".into(),
                ok: got == want,
                detail: format!("expected {want}, got {got}: {why}"),
            });
        }
        if let Some(want) = &world.expect.autonomy_reason {
            out.push(Verdict {
                what: "autonomy reason".into(),
                ok: why.contains(want.as_str()),
                detail: format!("expected {want:?} in {why:?}"),
            });
        }
    }
    if let Some(want) = &world.expect.verification {
        let (ok, detail) = match &outcome.plan {
            Some(Ok(plan)) => match verify(world, plan).await {
                Ok((result, lines)) => {
                    let got = if result == crate::executor::Outcome::Succeeded { "passed" } else { "failed" };
                    (got == want, format!("expected {want}, got {got}\n         {}", lines.join("\n         ")))
                }
                Err(e) => (false, format!("could not run the plan: {e:#}")),
            },
            _ => (false, format!("expected {want}, but there is no plan to run")),
        };
        out.push(Verdict { what: "verification".into(), ok, detail });
    }
    out
}

/// The outcome as text for people (what `medic replay` prints).
pub fn report(world: &World, outcome: &Outcome) -> String {
    use std::fmt::Write as _;
    let d = &outcome.diagnosis;
    let mut s = String::new();
    let _ = writeln!(s, "Scenario: {}", world.name);
    let _ = writeln!(
        s,
        "Incident: {} alert(s) on {}; onset {}",
        world.alerts.len(),
        d.service.as_deref().unwrap_or("(no service label)"),
        crate::time::rfc3339(d.onset)
    );
    for (i, h) in d.hypotheses.iter().enumerate() {
        let head = if i == 0 { "Top hypothesis" } else { "Also possible" };
        let _ = writeln!(
            s,
            "\n{head} (confidence {:.0}%, runbook {}, tier {}):\n  {}",
            h.confidence * 100.0,
            h.runbook.as_deref().unwrap_or("none"),
            h.tier,
            h.statement
        );
        if i == 0 {
            let _ = writeln!(s, "  Evidence:");
            for e in &h.evidence {
                let _ =
                    writeln!(s, "    - [{}] {}", serde_json::to_value(e.kind).unwrap().as_str().unwrap_or(""), e.text);
            }
            let _ = writeln!(s, "  Why: {}", h.reasons.join("; "));
        }
    }
    match &outcome.plan {
        Some(Ok(p)) => {
            let _ = writeln!(s, "\nPlan {} (not executed):", &p.hash[..12]);
            if !p.expected_impact.is_empty() {
                let _ = writeln!(s, "  Expected impact: {}", p.expected_impact);
            }
            for (i, step) in p.steps.iter().enumerate() {
                let _ = writeln!(s, "  {}. {}: {}", i + 1, step.id, step.action.summary());
                if let Some(t) = &step.touches {
                    let _ = writeln!(s, "     touches: {t}");
                }
                if let Some(r) = &step.refused {
                    let _ = writeln!(s, "     REFUSED: {r}");
                }
                if let Some(c) = &step.post_check {
                    let _ = writeln!(s, "     verify: {}", c.summary());
                }
                if let Some(r) = step.rollback_text() {
                    let _ = writeln!(s, "     rollback: {r}");
                }
            }
            if let Some(auto) = &p.auto {
                let _ = writeln!(s, "  Autonomy: {}", auto.why);
            }
            let a = &p.approval;
            let _ = writeln!(
                s,
                "  Approval: {} of [{}]{}, expires after {}s",
                a.min_approvers,
                a.groups.join(", "),
                if a.self_approval { "" } else { ", not by the requester" },
                a.expires_after_secs
            );
        }
        Some(Err(e)) => {
            let _ = writeln!(s, "\nNo plan: {e}");
        }
        None => {
            let _ = writeln!(s, "\nNo plan: no runbook matches; people lead.");
        }
    }
    for u in &d.unavailable {
        let _ = writeln!(s, "Unavailable: {u}");
    }
    s
}
