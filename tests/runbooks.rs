//! Every runbook shipped in `runbooks/` loads and passes the safety rules, and the published
//! JSON Schema (`runbooks/schema.json`) matches the types. Regenerate it with
//! `MEDIC_UPDATE_SCHEMA=1 cargo test --test runbooks`.

use medic::runbook::{self, ActionKind, Undo};
use std::path::Path;

fn dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("runbooks")
}

#[test]
fn shipped_runbooks_load_and_are_sound() {
    let runbooks = runbook::load_dir(&dir()).unwrap_or_else(|errors| panic!("{}", errors.join("\n")));
    let ids: Vec<&str> = runbooks.iter().map(|r| r.id.as_str()).collect();
    for expected in [
        "rollback-bad-deploy",
        "restart-crashlooping",
        "scale-out-saturation",
        "disk-cleanup",
        "stuck-queue-consumer",
        "idle-fleet-scale-to-zero",
        "human-led-data-loss-risk",
    ] {
        assert!(ids.contains(&expected), "{expected} missing from {ids:?}");
    }
    for rb in &runbooks {
        let file = dir().join(format!("{}.yaml", rb.id));
        assert!(file.exists(), "runbook {} should live in {}", rb.id, file.display());
        if let Some(plan) = &rb.plan {
            for step in &plan.steps {
                let kind = step.action.kind().unwrap();
                assert!(rb.tier >= kind.min_tier());
                let undone = match kind.undo() {
                    Undo::Declared => step.rollback.is_some() || step.irreversible.is_some(),
                    Undo::Derived(_) | Undo::Needless(_) => step.rollback.is_none() && step.irreversible.is_none(),
                };
                assert!(undone, "{}: step {}", rb.id, step.id);
            }
        }
    }
    // One runbook acts through a webhook (AWX here), as Rundeck or Argo Workflows would be used.
    let webhook = runbooks.iter().find(|r| r.id == "disk-cleanup").unwrap();
    assert_eq!(webhook.plan.as_ref().unwrap().steps[0].action.kind(), Ok(ActionKind::Http));
}

#[test]
fn problems_name_the_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let good = std::fs::read_to_string(dir().join("restart-crashlooping.yaml")).unwrap();
    std::fs::write(tmp.path().join("a.yaml"), &good).unwrap();
    std::fs::write(tmp.path().join("b.yaml"), &good).unwrap();
    std::fs::write(tmp.path().join("c.yaml"), good.replace("tier: 2", "tier: 2\nowner: me")).unwrap();
    std::fs::write(
        tmp.path().join("d.yml"),
        good.replace("id: restart-crashlooping", "id: other").replace("tier: 2", "tier: 1"),
    )
    .unwrap();
    std::fs::write(tmp.path().join("notes.txt"), "not a runbook").unwrap();
    let errors = runbook::load_dir(tmp.path()).unwrap_err();
    let text = errors.join("\n");
    assert!(text.contains("b.yaml: id \"restart-crashlooping\" is already used by"), "{text}");
    assert!(text.contains("c.yaml: unknown field `owner`") && text.contains("line 8"), "{text}");
    assert!(
        text.contains("d.yml: plan.steps[0].action: `kubernetes.rollout_restart` needs a runbook of tier 2 or higher"),
        "{text}"
    );
    // c.yaml, its unknown key set aside, is checked further: it repeats a's id too.
    assert!(text.contains("c.yaml: id \"restart-crashlooping\" is already used by"), "{text}");
    assert_eq!(errors.len(), 4, "{text}");
}

#[test]
fn published_schema_matches_the_types() {
    let path = dir().join("schema.json");
    let generated = runbook::json_schema();
    if std::env::var("MEDIC_UPDATE_SCHEMA").is_ok() {
        std::fs::write(&path, &generated).unwrap();
    }
    let published = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        published == generated,
        "runbooks/schema.json is out of date: run `MEDIC_UPDATE_SCHEMA=1 cargo test --test runbooks`"
    );
    let v: serde_json::Value = serde_json::from_str(&published).unwrap();
    assert_eq!(v["additionalProperties"], false, "unknown keys are refused by editors too");
    assert!(v["required"].as_array().unwrap().iter().any(|r| r == "hypothesis"));
}
