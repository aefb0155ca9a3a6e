//! The console adapter: incident messages on the terminal, decisions typed at a prompt (or
//! given by `--yes`). Used by `medic demo` and for local use.

use super::{Chat, IncidentView};
use crate::approval::Decision;
use async_trait::async_trait;
use std::io::Write;
use std::sync::Mutex;

pub struct Console {
    templates: handlebars::Handlebars<'static>,
    /// Answer Approve without asking (scripts, CI).
    pub auto_approve: bool,
    out: Mutex<Box<dyn Write + Send>>,
}

/// The console templates, compiled into the binary so the console works from anywhere.
pub const INCIDENT_TEMPLATE: &str = include_str!("../../templates/console/incident.hbs");

impl Console {
    pub fn new(auto_approve: bool, out: Box<dyn Write + Send>) -> anyhow::Result<Console> {
        let mut templates = crate::plan::handlebars(true);
        templates.register_template_string("incident", INCIDENT_TEMPLATE)?;
        Ok(Console { templates, auto_approve, out: Mutex::new(out) })
    }

    pub fn render(&self, view: &IncidentView) -> anyhow::Result<String> {
        Ok(self.templates.render("incident", &view.0)?)
    }

    fn write(&self, text: &str) -> anyhow::Result<()> {
        let mut out = self.out.lock().expect("console output lock");
        out.write_all(text.as_bytes())?;
        out.flush()?;
        Ok(())
    }
}

#[async_trait]
impl Chat for Console {
    fn name(&self) -> &str {
        "console"
    }

    async fn show_incident(&self, view: &IncidentView) -> anyhow::Result<()> {
        self.write(&self.render(view)?)
    }

    async fn thread(&self, incident_id: i64, text: &str) -> anyhow::Result<()> {
        self.write(&format!("  #{incident_id} ↳ {text}\n"))
    }

    async fn ask(&self, plan_hash: &str) -> anyhow::Result<Option<Decision>> {
        let short = &plan_hash[..12.min(plan_hash.len())];
        if self.auto_approve {
            self.write(&format!("\nApprove plan {short}? [a]pprove / [r]eject: a (--yes)\n"))?;
            return Ok(Some(Decision::Approve));
        }
        self.write(&format!("\nApprove plan {short}? [a]pprove / [r]eject: "))?;
        let line = tokio::task::spawn_blocking(|| {
            let mut s = String::new();
            std::io::stdin().read_line(&mut s).map(|_| s)
        })
        .await??;
        Ok(match line.trim().to_ascii_lowercase().as_str() {
            "a" | "approve" | "y" | "yes" => Some(Decision::Approve),
            _ => Some(Decision::Reject),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn view(paused: serde_json::Value) -> IncidentView {
        IncidentView(json!({
            "incident": {"id": 3, "title": "HighErrorRate on checkout", "state": "open"},
            "service": "checkout", "onset": "2026-11-21T14:37:00.000Z",
            "top": {"statement": "s", "confidence": 75, "runbook": "none", "tier": 5, "evidence": []},
            "unavailable": ["metrics: prometheus timed out after 5s"], "plan": null, "no_plan": "no runbook matches", "paused": paused,
        }))
    }

    #[test]
    fn shows_pause_and_unavailable_sources() {
        let c = Console::new(false, Box::new(std::io::sink())).unwrap();
        let text = c.render(&view(json!({"by": "console:carol", "since": "2026-11-21T14:40:00.000Z"}))).unwrap();
        assert!(text.contains("AUTOMATION PAUSED by console:carol since 2026-11-21T14:40:00.000Z"), "{text}");
        assert!(text.contains("metrics: prometheus timed out after 5s"), "{text}");
        assert!(text.contains("No plan: no runbook matches"), "{text}");
        let text = c.render(&view(serde_json::Value::Null)).unwrap();
        assert!(!text.contains("PAUSED"), "{text}");
    }
}
