//! Chat: where incidents are shown and decided. Each platform is one adapter behind [`Chat`];
//! only adapters know platform formats. Messages are rendered from `templates/<platform>/`
//! (handlebars), from one [`IncidentView`] that every adapter shares.

pub mod console;

use crate::approval::Decision;
use crate::diagnosis::Diagnosis;
use crate::incident::Incident;
use crate::plan::ProposedPlan;
use crate::time::rfc3339;
use async_trait::async_trait;
use serde_json::{Value, json};

/// What an incident message shows, as template data.
pub struct IncidentView(pub Value);

impl IncidentView {
    /// `paused`: who paused automation and when, shown on every message while it lasts.
    pub fn new(
        incident: &Incident,
        diagnosis: &Diagnosis,
        plan: Option<&Result<ProposedPlan, String>>,
        expires_at: Option<i64>,
        paused: Option<&(String, i64)>,
    ) -> IncidentView {
        let top = diagnosis.top();
        let plan_view = match plan {
            Some(Ok(p)) => json!({
                "short_hash": &p.hash[..12],
                "hash": p.hash,
                "expected_impact": p.expected_impact,
                "steps": p.steps.iter().enumerate().map(|(i, s)| json!({
                    "n": i + 1, "id": s.id, "action": s.action.summary(),
                    "verify": s.post_check.as_ref().map(|c| c.summary()),
                    "rollback": s.rollback.as_ref().map(|r| r.summary()).or_else(|| s.irreversible.as_ref().map(|w| format!("none (irreversible: {w})"))),
                })).collect::<Vec<_>>(),
                "min_approvers": p.approval.min_approvers,
                "groups": p.approval.groups.join(", "),
                "expires": expires_at.map(rfc3339),
            }),
            _ => Value::Null,
        };
        let no_plan = match plan {
            Some(Err(e)) => e.clone(),
            _ => "no runbook matches; people lead".into(),
        };
        IncidentView(json!({
            "incident": {"id": incident.id, "title": incident.title, "state": incident.state.as_str()},
            "service": diagnosis.service,
            "onset": rfc3339(diagnosis.onset),
            "top": {
                "statement": top.statement,
                "confidence": (top.confidence * 100.0).round() as i64,
                "runbook": top.runbook.clone().unwrap_or_else(|| "none".into()),
                "tier": top.tier,
                "evidence": top.evidence,
            },
            "unavailable": diagnosis.unavailable,
            "plan": plan_view,
            "no_plan": no_plan,
            "paused": paused.map(|(by, at)| json!({"by": by, "since": rfc3339(*at)})),
        }))
    }
}

#[async_trait]
pub trait Chat: Send + Sync {
    fn name(&self) -> &str;
    /// Shows (or updates) the incident's root message.
    async fn show_incident(&self, view: &IncidentView) -> anyhow::Result<()>;
    /// A line in the incident's thread: progress, results.
    async fn thread(&self, incident_id: i64, text: &str) -> anyhow::Result<()>;
    /// Waits for a person's decision on the plan shown (console); platforms with buttons
    /// deliver clicks through their own endpoint instead and return `None` here.
    async fn ask(&self, plan_hash: &str) -> anyhow::Result<Option<Decision>>;
}

/// Loads the templates of one platform from `dir`, strict mode, no HTML escaping.
pub fn templates(dir: &std::path::Path) -> anyhow::Result<handlebars::Handlebars<'static>> {
    let mut hb = crate::plan::handlebars(true);
    for entry in std::fs::read_dir(dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|x| x == "hbs") {
            let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
            hb.register_template_file(&name, &path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        }
    }
    Ok(hb)
}
