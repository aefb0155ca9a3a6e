//! The console adapter: a chat platform whose channel is the terminal. Incident messages come
//! through the outbox like Slack's and Discord's (the first in full, each update as the lines
//! that changed, thread lines as `#id ↳ text`); its "clicks" are typed at a prompt (or given
//! by `--yes`) and go through the same click path. Used by `medic demo`.

use super::{IncidentView, Platform};
use crate::approval::Decision;
use crate::store::{Delivery, OutboxRow};
use async_trait::async_trait;
use std::io::{BufRead, Write};
use std::sync::{Arc, Mutex};

pub struct Console {
    templates: handlebars::Handlebars<'static>,
    /// Answer Approve without asking (scripts, CI).
    pub auto_approve: bool,
    out: Mutex<Box<dyn Write + Send>>,
    /// Where answers are read from: the terminal, or a test's script.
    input: Arc<Mutex<Box<dyn BufRead + Send>>>,
    /// The last text shown of each incident's message: an update shows what changed.
    shown: Mutex<std::collections::HashMap<i64, String>>,
}

/// The console templates, compiled into the binary so the console works from anywhere.
pub const INCIDENT_TEMPLATE: &str = include_str!("../../templates/console/incident.hbs");

/// The console user's identity: `console:` and the OS user (`$USER`, else `$LOGNAME`, else what
/// `id -un` says), the same for every command (`pause`, `resume`, the demo's approval).
pub fn identity() -> crate::approval::Identity {
    let user = ["USER", "LOGNAME"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|u| !u.trim().is_empty()))
        .or_else(|| {
            let out = std::process::Command::new("id").arg("-un").output().ok()?;
            Some(String::from_utf8_lossy(&out.stdout).trim().to_string()).filter(|u| !u.is_empty())
        })
        .unwrap_or_else(|| "unknown-os-user".into());
    crate::approval::Identity(format!("console:{user}"))
}

/// What a line typed at the approval prompt means.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    Approve,
    Reject,
    MoreEvidence,
    /// Anything else: the prompt asks again (an unknown answer never rejects a plan).
    Unknown,
}

pub fn answer(line: &str) -> Answer {
    match line.trim().to_ascii_lowercase().as_str() {
        "a" | "approve" => Answer::Approve,
        "r" | "reject" => Answer::Reject,
        "m" | "more" | "more evidence" => Answer::MoreEvidence,
        _ => Answer::Unknown,
    }
}

impl Console {
    pub fn new(auto_approve: bool, out: Box<dyn Write + Send>) -> anyhow::Result<Console> {
        Console::with_input(auto_approve, out, Box::new(std::io::BufReader::new(std::io::stdin())))
    }

    /// A console that reads its answers from `input`.
    pub fn with_input(
        auto_approve: bool,
        out: Box<dyn Write + Send>,
        input: Box<dyn BufRead + Send>,
    ) -> anyhow::Result<Console> {
        let mut templates = crate::plan::handlebars(true);
        templates.register_template_string("incident", INCIDENT_TEMPLATE)?;
        Ok(Console {
            templates,
            auto_approve,
            out: Mutex::new(out),
            input: Arc::new(Mutex::new(input)),
            shown: Mutex::new(Default::default()),
        })
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

    /// One line of input; `None` at end of input.
    async fn read_line(&self) -> anyhow::Result<Option<String>> {
        let input = self.input.clone();
        let line = tokio::task::spawn_blocking(move || {
            let mut s = String::new();
            input.lock().expect("console input lock").read_line(&mut s).map(|n| (n > 0).then_some(s))
        })
        .await??;
        Ok(line)
    }
}

/// The console's channel: the terminal.
const TERMINAL: &str = "terminal";

#[async_trait]
impl Platform for Console {
    fn channel_for(&self, _labels: &crate::alert::Labels) -> String {
        TERMINAL.into()
    }

    fn root(&self, view: &IncidentView, _channel: &str) -> anyhow::Result<String> {
        self.render(view)
    }

    fn reply(&self, _channel: &str, text: &str) -> String {
        text.to_string()
    }

    fn channels(&self) -> Vec<String> {
        vec![TERMINAL.into()]
    }
}

#[async_trait]
impl super::outbox::Destination for Console {
    fn name(&self) -> &'static str {
        "console"
    }

    async fn deliver(&self, row: &OutboxRow) -> Delivery {
        let id = row.item.incident_id;
        let body = &row.item.body;
        let text = match row.item.op.as_str() {
            "post" => body.clone(),
            "update" => {
                let before = self.shown.lock().expect("console lock").get(&id).cloned().unwrap_or_default();
                let new: Vec<&str> =
                    body.lines().filter(|l| !l.trim().is_empty() && !before.lines().any(|b| b == *l)).collect();
                if new.is_empty() { String::new() } else { format!("  #{id} updated:\n{}\n", new.join("\n")) }
            }
            "thread" => body.lines().map(|l| format!("  #{id} ↳ {l}\n")).collect(),
            "message" => format!("{body}\n"),
            other => return Delivery::Failed { error: format!("unknown op {other}") },
        };
        if matches!(row.item.op.as_str(), "post" | "update") {
            self.shown.lock().expect("console lock").insert(id, body.clone());
        }
        match self.write(&text) {
            Ok(()) => Delivery::Sent { result: (row.item.op == "post").then(|| format!("console-{id}")) },
            Err(e) => Delivery::Retry { after_ms: 0, error: format!("cannot write to the terminal: {e}") },
        }
    }
}

impl Console {
    /// Asks at the prompt for a decision on the plan shown, and why when it is rejected;
    /// `more_evidence` is shown on `m`. `None` at end of input: nothing is decided.
    pub async fn ask(
        &self,
        plan_hash: &str,
        more_evidence: &str,
    ) -> anyhow::Result<Option<(Decision, Option<String>)>> {
        let short = &plan_hash[..12.min(plan_hash.len())];
        let prompt = format!("\nApprove plan {short}? [a]pprove / [r]eject / [m]ore evidence: ");
        if self.auto_approve {
            self.write(&format!("{prompt}a (--yes)\n"))?;
            return Ok(Some((Decision::Approve, None)));
        }
        self.ask_at_the_prompt(&prompt, more_evidence).await
    }

    async fn ask_at_the_prompt(
        &self,
        prompt: &str,
        more_evidence: &str,
    ) -> anyhow::Result<Option<(Decision, Option<String>)>> {
        loop {
            self.write(prompt)?;
            // End of input decides nothing: the plan stays proposed.
            let Some(line) = self.read_line().await? else { return Ok(None) };
            match answer(&line) {
                Answer::Approve => return Ok(Some((Decision::Approve, None))),
                Answer::MoreEvidence => self.write(more_evidence)?,
                Answer::Reject => {
                    self.write("Why? (one line, shown in the audit trail; Enter to skip): ")?;
                    let why = self.read_line().await?.map(|w| w.trim().to_string()).filter(|w| !w.is_empty());
                    return Ok(Some((Decision::Reject, why)));
                }
                Answer::Unknown => self.write(&format!(
                    "{:?} is not an answer: type a to approve, r to reject, m for more evidence.\n",
                    line.trim()
                ))?,
            }
        }
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
            "decision": null, "buttons": false,
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

    #[tokio::test]
    async fn the_prompt_asks_again_and_rejects_only_when_told() {
        let script = "x\nm\n\nreject\nthe deploy is rolled back by hand\n";
        let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
        struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let c =
            Console::with_input(false, Box::new(Shared(out.clone())), Box::new(std::io::Cursor::new(script))).unwrap();
        let got = c.ask("0123456789abcdef", "1. EVIDENCE SHOWN\n").await.unwrap();
        assert_eq!(got, Some((Decision::Reject, Some("the deploy is rolled back by hand".into()))));
        let shown = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        assert!(shown.contains("\"x\" is not an answer"), "{shown}");
        assert!(shown.contains("1. EVIDENCE SHOWN"), "m shows more evidence: {shown}");
        assert_eq!(shown.matches("[m]ore evidence: ").count(), 4, "asked again after x, m and an empty line");

        let c =
            Console::with_input(false, Box::new(std::io::sink()), Box::new(std::io::Cursor::new("m\na\n"))).unwrap();
        assert_eq!(c.ask("0123456789ab", "").await.unwrap(), Some((Decision::Approve, None)));
        let c = Console::with_input(false, Box::new(std::io::sink()), Box::new(std::io::Cursor::new("yes\n"))).unwrap();
        assert_eq!(c.ask("0123456789ab", "").await.unwrap(), None, "end of input decides nothing");
    }

    #[test]
    fn the_console_user_is_the_os_user() {
        let id = identity();
        let user = std::env::var("USER").or_else(|_| std::env::var("LOGNAME"));
        match user {
            Ok(u) if !u.trim().is_empty() => assert_eq!(id.0, format!("console:{u}")),
            _ => assert!(id.0.starts_with("console:") && id.0.len() > 8),
        }
    }
}
