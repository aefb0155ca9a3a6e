//! The `medic` binary: `check`, `serve` on embedded defaults with a clean SIGTERM, and
//! `audit verify|export` (with `--database-url` / `MEDIC_DATABASE_URL` on both stores).

mod common;

use common::{Db, fresh_db, raw_pool};
use serde_json::json;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn medic(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_medic"));
    c.args(args).current_dir(cwd).env_remove("MEDIC_DATABASE_URL").env("RUST_LOG", "warn");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run medic")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

const SECRETS: [(&str, &str); 16] = [
    ("MEDIC_DATABASE_URL_FROM_CONFIG", "sqlite://medic.db"),
    ("MEDIC_API_TOKEN", "l"),
    ("MEDIC_ALERTMANAGER_TOKEN", "a"),
    ("MEDIC_GRAFANA_TOKEN", "b"),
    ("MEDIC_GENERIC_SECRET", "c"),
    ("MEDIC_GENERIC_SECRET_PREVIOUS", "d"),
    ("MEDIC_PAGERDUTY_SECRET", "e"),
    ("MEDIC_CHANGES_TOKEN", "f"),
    ("MEDIC_PROMETHEUS_TOKEN", "g"),
    ("MEDIC_GITHUB_TOKEN", "h"),
    ("MEDIC_SLACK_BOT_TOKEN", "xoxb-i"),
    ("MEDIC_SLACK_SIGNING_SECRET", "j"),
    ("MEDIC_DISCORD_BOT_TOKEN", "k"),
    ("MEDIC_MATTERMOST_BOT_TOKEN", "n"),
    ("MEDIC_MATTERMOST_COMMAND_TOKEN", "o"),
    ("MEDIC_AWX_AUTHORIZATION", "Bearer m"),
];

#[test]
fn check_accepts_the_reference_config_and_names_problems() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let o = medic(&["check", "--config", "examples/medic.yaml"], root, &SECRETS);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("examples/medic.yaml: OK"), "{}", text(&o));
    assert!(
        text(&o).contains("runbooks: OK (7 runbooks)"),
        "the shipped runbooks are checked by default: {}",
        text(&o)
    );

    let o = medic(&["check", "--config", "examples/medic.yaml"], root, &SECRETS[1..]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("database.url: environment variable MEDIC_DATABASE_URL_FROM_CONFIG is not set"),
        "{}",
        text(&o)
    );

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.yaml"), "listen: 127.0.0.1:8080\nincidents:\n  grace: 5m\n").unwrap();
    let o = medic(&["check", "--config", "bad.yaml"], dir.path(), &[]);
    assert_eq!(o.status.code(), Some(1));
    let t = text(&o);
    assert!(t.contains("bad.yaml") && t.contains("unknown field `grace`") && t.contains("line 3"), "{t}");

    std::fs::create_dir(dir.path().join("rb")).unwrap();
    std::fs::write(dir.path().join("rb/x.yaml"), "id: x\ntitle: X\ntier: 9\nmatch: {alerts: ['a=b']}\nhypothesis: h\n")
        .unwrap();
    std::fs::write(dir.path().join("ok.yaml"), "listen: 127.0.0.1:9\n").unwrap();
    let o = medic(
        &["check", "--config", "ok.yaml", "--runbooks", &format!("{}/runbooks", env!("CARGO_MANIFEST_DIR"))],
        dir.path(),
        &[],
    );
    assert!(
        text(&o)
            .contains("rollback-bad-deploy: approval.groups names \"sre-oncall\", which is not in responders.groups"),
        "{}",
        text(&o)
    );
    let o = medic(&["check", "--config", "ok.yaml", "--runbooks", "rb"], dir.path(), &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("rb/x.yaml: tier: expected 1 to 5, got 9"), "{}", text(&o));

    std::fs::write(dir.path().join("inline.yaml"), "intake:\n  changes:\n    auth: {bearer: [s3cr3t-value]}\n")
        .unwrap();
    let t = text(&medic(&["check", "--config", "inline.yaml"], dir.path(), &[]));
    assert!(t.contains("inline secrets are not accepted") && !t.contains("s3cr3t-value"), "{t}");
}

/// Offline, about the demo's scenario: the answer names the deploy, its time and its author.
#[test]
fn ask_offline_about_a_scenario() {
    let root = env!("CARGO_MANIFEST_DIR");
    let o = medic(
        &[
            "ask",
            "--scenario",
            "examples/demo/scenario.yaml",
            "--runbooks",
            "runbooks",
            "what changed before the errors started?",
        ],
        std::path::Path::new(root),
        &[],
    );
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(t.contains("deploy of checkout v2.14.0 by alice") && t.contains("22 min before the alerts started"), "{t}");
    assert!(t.contains("2026-11-21 14:23"), "the time of the deploy: {t}");
    let o = medic(
        &["ask", "--scenario", "examples/demo/scenario.yaml", "--format", "json", "show checkout latency since 14:30"],
        std::path::Path::new(root),
        &[],
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    assert_eq!(v["intent"], "metric");
    assert_eq!(v["slots"]["service"], "checkout");
    assert_eq!(v["slots"]["signal"], "latency");
    assert_eq!(v["slots"]["window"]["start"], "2026-11-21T14:30:00.000Z");
    assert!(v["evidence"][0]["query"].as_str().unwrap().contains("checkout"), "{v:#}");
}

#[test]
fn serve_refuses_public_address_without_auth() {
    let dir = tempfile::tempdir().unwrap();
    let o = medic(&["serve", "--listen", "0.0.0.0:0"], dir.path(), &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("is not loopback, so every enabled intake source needs `auth` and the API `api.bearer`"),
        "{}",
        text(&o)
    );
    assert!(!dir.path().join("medic.db").exists(), "refused before touching the store");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test]
async fn serve_on_defaults_then_audit_verify_and_export() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_medic"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .current_dir(dir.path())
        .env_remove("MEDIC_DATABASE_URL")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = medic::telemetry::http_client_builder().build().unwrap();
    common::eventually(20, "medic to answer /readyz", || {
        let req = http.get(format!("{base}/readyz")).send();
        async move { req.await.ok().filter(|r| r.status().is_success()) }
    })
    .await;
    let r = http
        .post(format!("{base}/v1/alerts/generic"))
        .json(&json!({"alerts": [{"name": "DiskFull", "status": "firing", "labels": {"service": "db"}}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "no auth needed on loopback with no config");
    // A second `serve` on the same SQLite file is refused, saying why.
    let o = medic(&["serve", "--listen", &format!("127.0.0.1:{}", free_port())], dir.path(), &[]);
    assert!(
        !o.status.success() && text(&o).contains("another `medic serve` is using the SQLite store"),
        "{}",
        text(&o)
    );
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let mut status = None;
    for _ in 0..100 {
        if let Some(s) = child.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(status.expect("medic exits on SIGTERM").success());
    let mut log = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut log).unwrap();
    assert!(log.contains("medic listening"), "{log}");
    assert!(!log.contains('\x1b'), "no colour codes when stderr is not a terminal: {log:?}");
    assert!(dir.path().join("medic.db").exists(), "the embedded default store is medic.db in the working directory");

    // The audit commands find medic.db by default too.
    let o = medic(&["audit", "verify"], dir.path(), &[]);
    // alert_received, incident_opened, and the responder's diagnosis (no runbooks, no sources).
    assert!(o.status.success() && text(&o).contains("OK: 3 records"), "{}", text(&o));
    let o = medic(&["audit", "export", "--incident", "1", "--out", "out"], dir.path(), &[]);
    assert!(o.status.success(), "{}", text(&o));
    let md = std::fs::read_to_string(dir.path().join("out/incident-1.md")).unwrap();
    assert!(md.starts_with("# Incident 1: DiskFull on db") && md.contains("| incident_opened | medic |"), "{md}");
    assert!(md.contains("| diagnosed | medic | top: No runbook matches"), "{md}");
    let js: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("out/incident-1.json")).unwrap()).unwrap();
    assert_eq!(js["timeline"].as_array().unwrap().len(), 3);
    assert_eq!(js["alerts"][0]["labels"]["alertname"], "DiskFull");
    let o = medic(&["audit", "export", "--incident", "7"], dir.path(), &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("no incident 7"));

    // `medic runbooks`: every column starts where its header does, whatever the names' lengths.
    let runbooks = Path::new(env!("CARGO_MANIFEST_DIR")).join("runbooks");
    let o = medic(&["runbooks", "--runbooks", runbooks.to_str().unwrap()], dir.path(), &[]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let lines: Vec<&str> = out.lines().collect();
    let header = lines[0];
    for col in ["CEILING", "LEVEL", "LAST OUTCOMES", "SHADOW"] {
        let at = header.find(col).unwrap();
        for l in &lines[1..] {
            assert!(l.len() > at && l.as_bytes()[at - 1] == b' ' && l.as_bytes()[at] != b' ', "{col} in {l:?}:\n{out}");
        }
    }
    for col in ["STREAK", "VERIFIED", "FAILED", "MEDIAN FIX"] {
        let end = header.find(col).unwrap() + col.len();
        for l in &lines[1..] {
            assert!(
                l.as_bytes()[end - 1] != b' ' && l.as_bytes()[end] == b' ',
                "{col} (right-aligned) in {l:?}:\n{out}"
            );
        }
    }
}

async fn pause_and_resume(db: Db) {
    let Some(tdb) = fresh_db(db).await else { return };
    let dir = tempfile::tempdir().unwrap();
    // The store exists, as `serve` made it; an empty audit log vouches for nothing.
    let store = medic::store::open(&tdb.url, 2).await.unwrap();
    let o = medic(&["audit", "verify", "--database-url", &tdb.url], dir.path(), &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("FAILED: the audit log is empty"), "{}", text(&o));
    let o = medic(&["pause", "--database-url", &tdb.url], dir.path(), &[("USER", "carol")]);
    assert!(o.status.success() && text(&o).contains("automation paused by console:carol"), "{}", text(&o));
    assert!(text(&o).contains("store: "), "it says which store it paused: {}", text(&o));
    assert_eq!(store.paused().await.unwrap().map(|p| p.0), Some("console:carol".to_string()));
    let o = medic(&["pause", "--database-url", &tdb.url], dir.path(), &[("USER", "dave")]);
    assert!(o.status.success() && text(&o).contains("already paused (by console:carol"), "{}", text(&o));
    let o = medic(&["resume", "--database-url", &tdb.url], dir.path(), &[("USER", "carol")]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(store.paused().await.unwrap(), None);
    let o = medic(&["resume", "--database-url", &tdb.url], dir.path(), &[("USER", "carol")]);
    assert!(o.status.success() && text(&o).contains("automation was not paused; nothing changed"), "{}", text(&o));
    let kinds: Vec<String> = store.audit_page(0, 10).await.unwrap().into_iter().map(|r| r.kind).collect();
    assert_eq!(kinds, ["automation_paused", "automation_resumed"], "a repeat writes nothing");
    store.close().await;
}

async fn audit_verify_with_url_override(db: Db) {
    let Some(tdb) = fresh_db(db).await else { return };
    let store = medic::store::open(&tdb.url, 2).await.unwrap();
    let policy = medic::incident::Policy::default();
    let alerts: Vec<_> = (0..3)
        .map(|i| medic::alert::Alert {
            source: medic::alert::Source::Generic,
            fingerprint: format!("f{i}"),
            status: medic::alert::AlertStatus::Firing,
            labels: [("alertname".to_string(), "X".to_string()), ("service".to_string(), "s".to_string())].into(),
            annotations: Default::default(),
            starts_at: 1,
            ends_at: None,
            links: Default::default(),
        })
        .collect();
    store.ingest(&alerts, &[], 1000, &policy).await.unwrap();
    store.close().await;
    let dir = tempfile::tempdir().unwrap();
    let o = medic(&["audit", "verify", "--database-url", &tdb.url], dir.path(), &[]);
    assert!(o.status.success(), "{}", text(&o));
    let head = String::from_utf8_lossy(&o.stdout).trim().rsplit(' ').next().unwrap().to_string();
    assert!(head.starts_with("4:"), "{head}");
    let o = medic(&["audit", "verify", "--expect-head", &head], dir.path(), &[("MEDIC_DATABASE_URL", &tdb.url)]);
    assert!(o.status.success(), "{}", text(&o));
    // The system goes on: a new alert after the head was kept is no tampering.
    let store = medic::store::open(&tdb.url, 2).await.unwrap();
    let mut later = alerts[0].clone();
    later.fingerprint = "f9".into();
    store.ingest(&[later], &[], 2000, &policy).await.unwrap();
    store.close().await;
    let o = medic(&["audit", "verify", "--expect-head", &head], dir.path(), &[("MEDIC_DATABASE_URL", &tdb.url)]);
    assert!(o.status.success(), "a live system is not tampered with: {}", text(&o));
    assert!(text(&o).contains(&format!("OK: the chain still holds {head}; 1 record(s) came after it")), "{}", text(&o));
    let (seq, _) = head.split_once(':').unwrap();
    let forged = format!("{seq}:{}", "0".repeat(64));
    let o = medic(&["audit", "verify", "--expect-head", &forged], dir.path(), &[("MEDIC_DATABASE_URL", &tdb.url)]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("(altered)"), "{}", text(&o));

    let raw = raw_pool(&tdb).await;
    sqlx::query("DELETE FROM audit_log WHERE seq >= 4").execute(&raw).await.unwrap();
    raw.close().await;
    let o = medic(&["audit", "verify", "--expect-head", &head], dir.path(), &[("MEDIC_DATABASE_URL", &tdb.url)]);
    assert_eq!(o.status.code(), Some(1), "truncating the tail is caught by the anchored head: {}", text(&o));
    assert!(text(&o).contains("FAILED: the chain is intact up to 3:"), "{}", text(&o));
    assert!(text(&o).contains("records removed from the end"), "{}", text(&o));
    assert!(!dir.path().join("medic.db").exists(), "the override is used, not the default");
}

both_stores!(audit_verify_with_url_override, pause_and_resume);

/// `pause`, `resume` and `audit` run where there is no store: each says so and fails, and none
/// creates one (only `serve` and `demo` may); `audit verify` exits 2, "could not run".
#[test]
fn commands_never_create_a_store() {
    let dir = tempfile::tempdir().unwrap();
    for args in [&["pause"][..], &["resume"], &["audit", "export", "--incident", "1"]] {
        let o = medic(args, dir.path(), &[("USER", "carol")]);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", text(&o));
        assert!(text(&o).contains("no store at ") && text(&o).contains("medic.db"), "{args:?}: {}", text(&o));
    }
    let o = medic(&["audit", "verify"], dir.path(), &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("audit verify could not run: no store at"), "{}", text(&o));
    assert!(!dir.path().join("medic.db").exists(), "no store was created");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing was written");
}

/// An unreachable PostgreSQL: a line saying what it tries, then exit 2 within seconds.
#[test]
fn audit_verify_fails_fast_on_an_unreachable_server() {
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let o = medic(&["audit", "verify", "--database-url", "postgres://medic@127.0.0.1:9/medic"], dir.path(), &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("store: postgres://medic@127.0.0.1:9/medic"), "{}", text(&o));
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
}

/// Every option and argument of every command says what it is for; commands that use no store
/// do not offer `--database-url`.
#[test]
fn every_option_has_help_and_none_is_ignored() {
    use clap::CommandFactory;
    fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if id != "help" && id != "version" && arg.get_help().is_none() {
                missing.push(format!("{path} {id}"));
            }
        }
        for sub in cmd.get_subcommands() {
            walk(sub, &format!("{path} {}", sub.get_name()), missing);
        }
    }
    let cli = medic::cli::Cli::command();
    let mut missing = Vec::new();
    walk(&cli, "medic", &mut missing);
    assert!(missing.is_empty(), "without help text: {missing:?}");
    for name in ["demo", "replay", "test"] {
        let sub = cli.find_subcommand(name).unwrap();
        assert!(
            sub.get_arguments().all(|a| a.get_id() != "database_url"),
            "{name} lists --database-url and ignores it"
        );
    }
}

/// `medic check` reports every problem in one run: each unknown key, each invalid value, and the
/// runbooks' problems too, not only the first.
#[test]
fn check_reports_every_problem_at_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("m.yaml"),
        "incidents:\n  group_windw: 1h\nexecutor:\n  dry_rn: true\ndatabase: {url: {env: MEDIC_UNSET_FOR_TEST}}\n",
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("rb")).unwrap();
    std::fs::write(dir.path().join("rb/bad.yaml"), "id: x\n").unwrap();
    std::fs::write(dir.path().join("rb/typos.yaml"), "id: y\ntitel: t\nhypothesys: h\ntier: 3\n").unwrap();
    let o = medic(&["check", "--config", "m.yaml", "--runbooks", "rb"], dir.path(), &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    for needle in [
        "unknown field `group_windw`",
        "line 2 column 3",
        "executor: unknown field `dry_rn`",
        "line 4 column 3",
        "MEDIC_UNSET_FOR_TEST is not set",
        "bad.yaml: missing field `title`",
        // Every unknown key of one runbook in the same run, not one per run.
        "typos.yaml: unknown field `titel`",
        "typos.yaml: unknown field `hypothesys`",
    ] {
        assert!(text(&o).contains(needle), "{needle} missing from:\n{}", text(&o));
    }
}

/// Values that parse but cannot work are named: a backend URL without a scheme, a Slack
/// channel's name where its id is needed.
#[test]
fn check_refuses_urls_without_a_scheme_and_channel_names() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("m.yaml"),
        "context:\n  prometheus: {url: 'prometheus:9090'}\nslack:\n  bot_token: {env: MEDIC_T_BOT}\n  \
         signing_secret: [{env: MEDIC_T_SIGN}]\n  default_channel: '#incidents'\n",
    )
    .unwrap();
    let o = medic(&["check", "--config", "m.yaml"], dir.path(), &[("MEDIC_T_BOT", "xoxb-1"), ("MEDIC_T_SIGN", "s")]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("context.prometheus.url: \"prometheus:9090\" is not an http(s) URL with a host"),
        "{}",
        text(&o)
    );
    assert!(text(&o).contains("slack.default_channel: \"#incidents\" is not a Slack channel id"), "{}", text(&o));
}

/// A trace-backed incident as a person reads it (the console's view, as `medic replay` prints
/// it): the service to blame and the evidence from its spans.
#[test]
fn a_trace_backed_diagnosis_names_the_service_and_shows_the_traces() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let o = medic(&["replay", "runbooks/tests/rca.slow-downstream-traces.yaml"], root, &[]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("The cause is likely in payments"), "{out}");
    assert!(out.contains("[trace] spans of payments spent 400.0 ms in the service itself at the median"), "{out}");
    assert!(out.contains("checkout → payments: 21 calls, p90 400.0 ms"), "{out}");
    assert!(out.contains("frontend's alert is likely a symptom"), "{out}");
}

/// Writes one day of Nezha-format data (per-pod metric CSVs, log and span CSVs per minute)
/// for gateway → order → station, 08:00–08:40 UTC, with station's own time and CPU jumping at
/// 08:30 and its logs turning to timeouts.
fn nezha_day(dir: &Path) {
    let day = dir.join("2023-01-29");
    for kind in ["metric", "log", "trace"] {
        std::fs::create_dir_all(day.join(kind)).unwrap();
    }
    let base = chrono::DateTime::parse_from_rfc3339("2023-01-29T08:00:00Z").unwrap().timestamp();
    let fault = base + 30 * 60;
    let pods = [
        ("ts-gateway-service-6f6cfc45b-h5m2n", "GatewayFilter#41"),
        ("ts-order-service-84cbf6c798-7njv6", "t.s.OrderServiceImpl#120"),
        ("ts-station-service-5b6f7d9c8-x2k4p", "t.s.StationServiceImpl#88"),
    ];
    let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    for (k, (pod, _)) in pods.iter().enumerate() {
        let mut csv = String::from(
            "Time,TimeStamp,PodName,CpuUsage(m),CpuUsageRate(%),MemoryUsage(Mi),MemoryUsageRate(%),SyscallRead,\
             SyscallWrite,NetworkReceiveBytes,NetworkTransmitBytes,PodClientLatencyP90(s),PodServerLatencyP90(s),\
             PodClientLatencyP95(s),PodServerLatencyP95(s),PodClientLatencyP99(s),PodServerLatencyP99(s),\
             PodWorkload(Ops),PodSuccessRate(%),NodeCpuUsageRate(%),NodeMemoryUsageRate(%),NodeNetworkReceiveBytes\n",
        );
        for m in 0..41 {
            let t = base + m * 60 + 9;
            let after = t >= fault;
            let wobble = ((m * 7 + k as i64 * 3) % 5) as f64;
            let cpu = if after && k == 2 { 92.0 + wobble } else { 10.0 + wobble };
            let latency = if after { 0.4 + 0.01 * (3 - k) as f64 } else { 0.01 + 0.001 * wobble };
            csv.push_str(&format!(
                "x,{t},{pod},0,{cpu},{},0,0,0,0,0,0,{latency},0,0,0,0,{},100,0,0,0\n",
                300.0 + wobble,
                20.0 + wobble
            ));
        }
        std::fs::write(day.join("metric").join(format!("{pod}_metric.csv")), csv).unwrap();
    }
    // Each minute's file holds the minute before its name.
    for m in 1..41i64 {
        let name = format!("08_{m:02}");
        let mut spans =
            String::from("TraceID,SpanID,ParentID,PodName,OperationName,StartTimeUnixNano,EndTimeUnixNano,Duration\n");
        let mut logs = String::from("Timestamp,TimeUnixNano,Node,PodName,Container,TraceID,SpanID,Log\n");
        for n in 0..20i64 {
            let start = (base + (m - 1) * 60) * 1_000_000_000 + n * 3_000_000_000;
            let after = start >= fault * 1_000_000_000;
            let own = [3_000i64, 2_000, if after { 400_000 } else { 5_000 }];
            let trace = format!("{:032x}", m * 100 + n);
            let (mut parent, mut t) = ("root".to_string(), start);
            for (k, (pod, at)) in pods.iter().enumerate() {
                let us: i64 = own[k..].iter().sum();
                let span = format!("{:016x}", (m * 100 + n) * 10 + k as i64);
                spans.push_str(&format!("{trace},{span},{parent},{pod},GET /api/{k},{t},{},{us}\n", t + us * 1000));
                let msg = if after && k == 2 {
                    format!(
                        "ERROR t.s.StationServiceImpl#95 TraceID: {trace} SpanID: {span} [getStation][java.net.SocketTimeoutException: Read timed out after 400 ms]"
                    )
                } else {
                    format!(
                        "INFO {at} TraceID: {trace} SpanID: {span} [handle][Response is: Response(status=1, msg=Success, id={n})]"
                    )
                };
                let json = serde_json::json!({"log": format!("{msg}\n"), "stream": "stdout"}).to_string();
                logs.push_str(&format!("x,{},10.0.0.1,{pod},server,{trace},{span},{}\n", t + 1000, quote(&json)));
                parent = span;
                t += 1_000_000;
            }
        }
        std::fs::write(day.join("trace").join(format!("{name}_trace.csv")), spans).unwrap();
        std::fs::write(day.join("log").join(format!("{name}_log.csv")), logs).unwrap();
    }
}

/// A scenario reading a Nezha-format directory (`nezha:`): `medic test` checks the blamed
/// service, and `medic replay` shows the evidence from the recorded metrics, logs and traces.
#[test]
fn a_scenario_reads_a_nezha_format_directory() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    nezha_day(&dir.path().join("data"));
    let scenario = dir.path().join("station.yaml");
    std::fs::write(
        &scenario,
        "name: station slows down under CPU contention (recorded)\n\
         now: 2023-01-29T08:33:30Z\n\
         nezha: data\n\
         alerts:\n  - labels: {alertname: FrontendSlowOrFailing, service: ts-gateway-service, severity: critical}\n    \
         starts: 2023-01-29T08:30:30Z\n\
         expect:\n  runbook: none\n  suspect: ts-station-service\n",
    )
    .unwrap();
    let runbooks = root.join("runbooks");
    let args = |cmd: &'static str| [cmd, scenario.to_str().unwrap(), "--runbooks", runbooks.to_str().unwrap()];
    let o = medic(&args("test"), dir.path(), &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("1 passed, 0 failed"), "{}", text(&o));
    let o = medic(&args("replay"), dir.path(), &[]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("The cause is likely in ts-station-service"), "{out}");
    assert!(out.contains("[trace] spans of ts-station-service spent 400.0 ms"), "{out}");
    assert!(out.lines().any(|l| l.contains("[log]") && l.contains("t.s.StationServiceImpl")), "{out}");
    assert!(out.contains("[metric] cpu of ts-station-service rose from 12.0% to 95.0%"), "{out}");
    // A directory that holds no Nezha data is named, not ignored.
    std::fs::write(&scenario, std::fs::read_to_string(&scenario).unwrap().replace("nezha: data", "nezha: nowhere"))
        .unwrap();
    let o = medic(&args("replay"), dir.path(), &[]);
    assert!(!o.status.success());
    assert!(text(&o).contains("nowhere: no day folder"), "{}", text(&o));
}
