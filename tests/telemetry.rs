//! Logs at debug level carry no template parameter (issue 12, item 6): handlebars prints every
//! helper's parameters at debug, label values included. Its own process: the subscriber is global.

use medic::chat::IncidentView;
use std::io::Write;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn debug_logs_do_not_print_template_parameters() {
    let buf = Buffer::default();
    let writer = buf.clone();
    tracing_subscriber::fmt()
        .with_env_filter(medic::telemetry::filter(Some("debug")))
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .try_init()
        .expect("the only subscriber of this process");
    tracing::debug!("debug is on");

    const SECRET: &str = "planted-secret-9f3a";
    let view = IncidentView(serde_json::json!({
        "incident": {"id": 3, "title": format!("Disk full on db ({SECRET})"), "state": "open", "severity": "critical"},
        "service": "db", "onset": "2026-11-21T14:37:00.000Z",
        "top": {"statement": "s", "confidence": 75, "runbook": "none", "tier": 5, "evidence": []},
        "unavailable": [], "plan": null, "no_plan": "no runbook matches", "paused": null,
        "resolved": false, "buttons": false, "services": "db",
    }));
    let templates = medic::chat::slack::templates().unwrap();
    let rendered = templates.render("incident", &view.0).unwrap();
    assert!(rendered.contains(SECRET), "the message shows the title (a sign the template saw it)");

    let logs = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("debug is on"), "debug logging is on: {logs}");
    assert!(!logs.contains(SECRET), "a template parameter reached the log:\n{logs}");
}
