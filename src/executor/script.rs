//! `script` actions: a file of the configured scripts directory, run without a shell, killed at
//! its timeout; its output is redacted.

use super::MAX_OUTPUT;
use std::path::Path;
use std::time::Duration;

pub async fn run(dir: Option<&Path>, argv: &[String], timeout_secs: u64) -> Result<String, String> {
    let dir = dir.ok_or("no scripts directory is configured")?;
    let name = argv.first().ok_or("empty argv")?;
    if name.is_empty() || name.contains(['/', '\\']) || name == "." || name == ".." {
        return Err(format!("{name:?} is not a script name in the scripts directory"));
    }
    let path = dir.join(name);
    let mut cmd = tokio::process::Command::new(&path);
    cmd.args(&argv[1..]).kill_on_drop(true).stdin(std::process::Stdio::null());
    let out = match tokio::time::timeout(Duration::from_secs(timeout_secs), cmd.output()).await {
        Err(_) => return Err(format!("{name} timed out after {timeout_secs}s and was killed")),
        Ok(Err(e)) => return Err(format!("cannot run {}: {e}", path.display())),
        Ok(Ok(o)) => o,
    };
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    // Redacted before the cut: a cut could leave a secret the patterns no longer see.
    let text = crate::redact::redact_cut(&text, MAX_OUTPUT);
    if out.status.success() {
        Ok(text.trim().to_string())
    } else {
        Err(format!("{name} exited with {}: {}", out.status, text.trim()))
    }
}
