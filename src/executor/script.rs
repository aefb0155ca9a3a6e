//! `script` actions: a file of the configured scripts directory, run without a shell, with an
//! environment of its own (`PATH`, `LANG`, `HOME` and what the runbook names: nothing of
//! medic's, whose secrets live there), in a process group of its own that is killed whole at
//! its timeout (and once it ends: nothing it started outlives it); its output is redacted.

use super::MAX_OUTPUT;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// What every script gets, unless the runbook names its own value.
const BASE_ENV: [(&str, &str); 3] =
    [("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"), ("LANG", "C.UTF-8"), ("HOME", "/")];

pub async fn run(
    dir: Option<&Path>,
    argv: &[String],
    env: &BTreeMap<String, String>,
    timeout_secs: u64,
) -> Result<String, String> {
    let dir = dir.ok_or("no scripts directory is configured")?;
    let name = argv.first().ok_or("empty argv")?;
    if name.is_empty() || name.contains(['/', '\\']) || name == "." || name == ".." {
        return Err(format!("{name:?} is not a script name in the scripts directory"));
    }
    let path = dir.join(name);
    let mut cmd = tokio::process::Command::new(&path);
    cmd.args(&argv[1..])
        .env_clear()
        .envs(BASE_ENV)
        .envs(env)
        .current_dir(dir)
        .process_group(0)
        .kill_on_drop(true)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().map_err(|e| format!("cannot run {}: {e}", path.display()))?;
    // The group's id is the script's pid (`process_group(0)`).
    let group = child.id();
    let out = tokio::time::timeout(Duration::from_secs(timeout_secs), child.wait_with_output()).await;
    if let Some(pgid) = group.and_then(|p| i32::try_from(p).ok()) {
        // SAFETY: kill(2) with a negative pid signals that process group; no memory is shared.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
    }
    let out = match out {
        Err(_) => {
            return Err(format!(
                "{name} timed out after {timeout_secs}s and was killed, with every process it started"
            ));
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn script(dir: &Path, name: &str, body: &str) {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// medic's environment (its `{env: …}` secrets) is not the script's: it sees only the base
    /// and what the runbook names.
    #[tokio::test]
    async fn a_script_sees_only_the_environment_the_runbook_names() {
        let dir = tempfile::tempdir().unwrap();
        script(dir.path(), "show-env", "env");
        // SAFETY: a name only this test uses; nothing reads it concurrently.
        unsafe { std::env::set_var("MEDIC_TEST_SCRIPT_SECRET", "s3cret-from-medics-env") };
        let env = BTreeMap::from([("TARGET".to_string(), "checkout".to_string())]);
        let out = run(Some(dir.path()), &["show-env".into()], &env, 10).await.unwrap();
        assert!(!out.contains("MEDIC_TEST_SCRIPT_SECRET") && !out.contains("s3cret"), "{out}");
        assert!(out.contains("TARGET=checkout") && out.contains("PATH=/usr/local/sbin"), "{out}");
        let names: Vec<&str> = out.lines().filter_map(|l| l.split_once('=').map(|(k, _)| k)).collect();
        assert!(names.iter().all(|n| ["PATH", "LANG", "HOME", "TARGET", "PWD", "SHLVL", "_"].contains(n)), "{names:?}");
    }

    /// A script that times out is killed with everything it started.
    #[tokio::test]
    async fn a_timed_out_script_takes_its_children_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("child.pid");
        script(dir.path(), "hang", &format!("sleep 300 &\necho $! > {}\nsleep 300", pidfile.display()));
        let e = run(Some(dir.path()), &["hang".into()], &BTreeMap::new(), 1).await.unwrap_err();
        assert!(e.contains("timed out after 1s"), "{e}");
        let pid = std::fs::read_to_string(&pidfile).unwrap().trim().to_string();
        let alive = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')))
        };
        for _ in 0..50 {
            if !alive() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the script's child {pid} outlived it");
    }
}
