//! Intake benchmark: posts Alertmanager v4 payloads to a running medic on loopback and prints
//! sustained alerts/s, p50/p99 intake latency, medic's CPU time and resident memory, and the
//! `diagnosed` records the storm caused, for SQLite and PostgreSQL. Afterwards it counts the
//! alerts in the database: every acknowledged alert must be there (acknowledged == stored), or
//! the run fails.
//!
//! A storm: `--alerts 100000 --incidents 50` sends exactly that many alerts, grouped into that
//! many incidents (one service each). `--against-alertmanager` also starts the real
//! Alertmanager (Debian's `prometheus-alertmanager`) on loopback and sends it the same alerts
//! through `POST /api/v2/alerts`, with the same batch size and senders, in the same run, and
//! prints the ratio.
//!
//! ```text
//! cargo build --release && cargo run --release --example bench_intake -- [--store sqlite|postgres|both]
//!     [--seconds 10 | --alerts N] [--incidents 50] [--alerts-per-payload 10] [--concurrency 16]
//!     [--against-alertmanager] [--postgres-url URL]
//! ```
//! The load generator runs on the same machine as medic and competes with it for the CPU.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

struct Args {
    stores: Vec<String>,
    seconds: u64,
    /// A fixed number of alerts instead of a fixed time.
    alerts: Option<u64>,
    incidents: usize,
    against_alertmanager: bool,
    per_payload: usize,
    concurrency: usize,
    postgres_url: String,
}

const USAGE: &str = "usage: cargo run --release --example bench_intake -- [--store sqlite|postgres|both] \
[--seconds 10 | --alerts N] [--incidents 50] [--alerts-per-payload 10] [--concurrency 16] \
[--against-alertmanager] [--postgres-url URL]
Build the server first (cargo build --release): the benchmark runs target/release/medic.";

fn args() -> Args {
    let mut a = Args {
        stores: vec!["sqlite".into(), "postgres".into()],
        seconds: 10,
        alerts: None,
        incidents: 50,
        against_alertmanager: false,
        per_payload: 10,
        concurrency: 16,
        postgres_url: std::env::var("MEDIC_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into()),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--store" => {
                let v = val();
                a.stores = if v == "both" { vec!["sqlite".into(), "postgres".into()] } else { vec![v] }
            }
            "--seconds" => a.seconds = val().parse().expect("--seconds N"),
            "--alerts" => a.alerts = Some(val().parse().expect("--alerts N")),
            "--incidents" => a.incidents = val().parse::<usize>().expect("--incidents N").max(1),
            "--against-alertmanager" => a.against_alertmanager = true,
            "--alerts-per-payload" => a.per_payload = val().parse().expect("--alerts-per-payload N"),
            "--concurrency" => a.concurrency = val().parse().expect("--concurrency N"),
            "--postgres-url" => a.postgres_url = val(),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => {
                eprintln!("unknown flag {other}\n{USAGE}");
                std::process::exit(2);
            }
        }
    }
    a
}

struct Medic(Child);

impl Drop for Medic {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let _ = self.0.wait();
    }
}

impl Medic {
    /// (current, peak) resident set size in MiB, from /proc.
    fn rss_mib(&self) -> (f64, f64) {
        rss_mib(self.0.id())
    }

    /// CPU seconds (user + system) medic has used so far.
    fn cpu_seconds(&self) -> f64 {
        cpu_seconds(&self.0.id().to_string())
    }
}

/// (commits, mean commit ms) from medic's own /metrics.
async fn commit_stats(http: &reqwest::Client, base: &str) -> (f64, f64) {
    let text = http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    let value = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let (count, sum) =
        (value("medic_store_commit_duration_seconds_count"), value("medic_store_commit_duration_seconds_sum"));
    (count, if count > 0.0 { sum / count * 1000.0 } else { 0.0 })
}

fn medic_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().and_then(|p| p.parent()).map(|p| p.join("medic")).unwrap();
    assert!(bin.exists(), "{} not found: run `cargo build --release` first", bin.display());
    bin
}

const NAMES: [&str; 8] = [
    "HighErrorRate",
    "HighLatencyP99",
    "PodCrashLooping",
    "DBPoolExhausted",
    "DiskWillFill",
    "CPUThrottling",
    "OOMKilled",
    "QueueBacklog",
];

/// The `n` alerts of request `seq`, as JSON objects without a trailing comma: each with a fresh
/// fingerprint (every alert is new work: stored, correlated and audited), all of one service
/// (`incidents` services in turn: medic groups by service, so they make that many incidents).
/// Written with a template rather than a JSON tree so the load generator stays cheap.
fn alerts(seq: u64, n: usize, incidents: usize, webhook: bool) -> (String, String) {
    use std::fmt::Write as _;
    let service = format!("svc-{}", seq as usize % incidents);
    let mut out = String::with_capacity(n * 600);
    for i in 0..n {
        let name = NAMES[(seq as usize + i) % NAMES.len()];
        let sep = if i == 0 { "" } else { "," };
        let _ = write!(
            out,
            r#"{sep}{{"labels":{{"alertname":"{name}","service":"{service}","namespace":"prod","severity":"critical","instance":"10.0.{i}.{}:9090","job":"kubernetes-pods","seq":"{seq}"}},"annotations":{{"summary":"{name} on {service}","description":"value 0.97 above threshold 0.9 for 5m","runbook_url":"https://runbooks.example.com/x"}},"startsAt":"2026-12-03T07:23:00.000Z","generatorURL":"http://prometheus:9090/graph?g0.expr=x""#,
            seq % 250
        );
        if webhook {
            let _ =
                write!(out, r#","status":"firing","endsAt":"0001-01-01T00:00:00Z","fingerprint":"{seq:012x}{i:04x}""#);
        }
        out.push('}');
    }
    (out, service)
}

/// A version-4 webhook notification, as Alertmanager sends medic.
fn payload(seq: u64, n: usize, incidents: usize) -> Vec<u8> {
    let (alerts, service) = alerts(seq, n, incidents, true);
    format!(
        r#"{{"receiver":"medic","status":"firing","alerts":[{alerts}],"groupLabels":{{"service":"{service}"}},"commonLabels":{{"service":"{service}"}},"commonAnnotations":{{}},"externalURL":"http://alertmanager:9093","version":"4","groupKey":"{{}}:{{service=\"{service}\"}}","truncatedAlerts":0}}"#
    )
    .into_bytes()
}

/// The same alerts as Prometheus posts them to Alertmanager (`POST /api/v2/alerts`).
fn postable(seq: u64, n: usize, incidents: usize) -> Vec<u8> {
    format!("[{}]", alerts(seq, n, incidents, false).0).into_bytes()
}

/// CPU seconds (user + system) a process has used, from /proc/PID/stat.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// (current, peak) resident set size in MiB of a process, from /proc.
fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|k| k.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// What one load run measured.
struct Load {
    alerts_per_s: f64,
    requests_per_s: f64,
    p50: f64,
    p99: f64,
    max: f64,
    acked: u64,
    seconds: f64,
}

/// Sends requests (`body(seq)`, `per_payload` alerts each) to `url` from `concurrency` senders:
/// for `a.seconds` after a 2 s warm-up, or, with `--alerts N`, until N alerts are acknowledged.
async fn drive(http: &reqwest::Client, url: &str, a: &Args, body: fn(u64, usize, usize) -> Vec<u8>) -> Load {
    let seq = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(AtomicU64::new(0));
    let warmup = if a.alerts.is_some() { Duration::ZERO } else { Duration::from_secs(2) };
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + Duration::from_secs(a.seconds);
    let requests_total = a.alerts.map(|n| n.div_ceil(a.per_payload as u64));
    let mut workers = Vec::new();
    for _ in 0..a.concurrency {
        let (http, url, seq, acked) = (http.clone(), url.to_string(), seq.clone(), acked.clone());
        let (n, incidents) = (a.per_payload, a.incidents);
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let s = seq.fetch_add(1, Ordering::Relaxed);
                if requests_total.is_some_and(|total| s >= total) {
                    break;
                }
                let body = body(s, n, incidents);
                let t0 = Instant::now();
                if requests_total.is_none() && t0 >= end {
                    break;
                }
                let r = http.post(&url).header("content-type", "application/json").body(body).send().await;
                let r = r.expect("request");
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                assert!(status.is_success(), "{url} refused a payload: {status} {text}");
                acked.fetch_add(n as u64, Ordering::Relaxed);
                if t0 >= measure_from {
                    lat.push(t0.elapsed().as_secs_f64() * 1000.0);
                }
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for w in workers {
        lat.extend(w.await.unwrap());
    }
    let seconds = if a.alerts.is_some() { start.elapsed().as_secs_f64() } else { a.seconds as f64 };
    lat.sort_by(|x, y| x.partial_cmp(y).unwrap());
    let q = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    let requests = lat.len() as f64;
    Load {
        alerts_per_s: requests * a.per_payload as f64 / seconds,
        requests_per_s: requests / seconds,
        p50: q(0.50),
        p99: q(0.99),
        max: *lat.last().unwrap(),
        acked: acked.load(Ordering::Relaxed),
        seconds,
    }
}

struct Run {
    load: Load,
    stored: i64,
    diagnosed: i64,
    rss: (f64, f64),
    /// medic's CPU seconds over the whole run, commits made, mean commit time.
    cpu: f64,
    client_cpu: f64,
    commits: f64,
    commit_ms: f64,
}

async fn ready(http: &reqwest::Client, url: &str, what: &str) {
    let t = Instant::now();
    while http.get(url).send().await.map(|r| !r.status().is_success()).unwrap_or(true) {
        assert!(t.elapsed() < Duration::from_secs(30), "{what} did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn run(url: &str, a: &Args) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let medic = Medic(
        Command::new(medic_binary())
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--database-url", url])
            .current_dir(dir.path())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    let http = medic::telemetry::http_client_builder().pool_max_idle_per_host(a.concurrency).build().unwrap();
    ready(&http, &format!("{base}/readyz"), "medic").await;

    let client_cpu_before = cpu_seconds("self");
    let load = drive(&http, &format!("{base}/v1/alerts/alertmanager"), a, payload).await;
    let rss = medic.rss_mib();
    let cpu = medic.cpu_seconds();
    let client_cpu = cpu_seconds("self") - client_cpu_before;
    let (commits, commit_ms) = commit_stats(&http, &base).await;
    drop(medic); // graceful shutdown: drains the writer
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    let count = |sql: &'static str| {
        let pool = pool.clone();
        async move { sqlx::Row::get::<i64, _>(&sqlx::query(sql).fetch_one(&pool).await.unwrap(), "n") }
    };
    let stored = count("SELECT COUNT(*) AS n FROM alerts").await;
    let diagnosed = count("SELECT COUNT(*) AS n FROM audit_log WHERE kind = 'diagnosed'").await;
    pool.close().await;
    Run { load, stored, diagnosed, rss, cpu, client_cpu, commits, commit_ms }
}

/// The real Alertmanager on loopback, taking the same alerts: its load, CPU seconds and RSS.
async fn alertmanager(a: &Args) -> Option<(Load, f64, (f64, f64))> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("am.yml"), "route: {receiver: none}\nreceivers: [{name: none}]\n").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new("prometheus-alertmanager")
        .args([
            "--config.file=am.yml".to_string(),
            "--storage.path=data".into(),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--cluster.listen-address=".into(),
            "--log.level=warn".into(),
        ])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(child) = child else {
        println!("alertmanager: prometheus-alertmanager is not installed (apt-get install prometheus-alertmanager)");
        return None;
    };
    let am = Medic(child);
    let base = format!("http://127.0.0.1:{port}");
    let http = medic::telemetry::http_client_builder().pool_max_idle_per_host(a.concurrency).build().unwrap();
    ready(&http, &format!("{base}/-/ready"), "Alertmanager").await;
    let load = drive(&http, &format!("{base}/api/v2/alerts"), a, postable).await;
    let pid = am.0.id();
    Some((load, cpu_seconds(&pid.to_string()), rss_mib(pid)))
}

/// The same server URL with another database name (query string kept).
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map(|(b, q)| (b, format!("?{q}"))).unwrap_or((url, String::new()));
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host = base[scheme_end..].find('/').map(|i| &base[..scheme_end + i]).unwrap_or(base);
    format!("{host}/{name}{query}")
}

fn load_line(name: &str, l: &Load, rss: (f64, f64), stored: &str) {
    println!(
        "{:<13} {:>9.0} {:>10.0} {:>7.1} {:>7.1} {:>7.1} {:>9} {:>9} {:>6.1} ({:.1})",
        name, l.alerts_per_s, l.requests_per_s, l.p50, l.p99, l.max, l.acked, stored, rss.0, rss.1
    );
}

#[tokio::main]
async fn main() {
    let a = args();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let what = match a.alerts {
        Some(n) => format!("{n} alerts into {} incidents", a.incidents),
        None => format!("{}s measured after 2s warm-up, {} incidents", a.seconds, a.incidents),
    };
    println!(
        "medic intake benchmark: {cores} cores, load average {}; {what}; {} alerts per payload, {} concurrent senders",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        a.per_payload,
        a.concurrency
    );
    println!(
        "{:<13} {:>9} {:>10} {:>7} {:>7} {:>7} {:>9} {:>9} {:>14}",
        "target", "alerts/s", "requests/s", "p50 ms", "p99 ms", "max ms", "acked", "stored", "RSS MiB (peak)"
    );
    let mut failed = false;
    let reference = if a.against_alertmanager { alertmanager(&a).await } else { None };
    if let Some((l, cpu, rss)) = &reference {
        load_line("alertmanager", l, *rss, "-");
        println!(
            "              Alertmanager: {cpu:.1} CPU s for {} alerts ({:.0} µs/alert), {:.1} s",
            l.acked,
            cpu * 1e6 / l.acked as f64,
            l.seconds
        );
    }
    for store in &a.stores {
        let tmp = tempfile::tempdir().unwrap();
        let (url, pg_db) = match store.as_str() {
            "sqlite" => (format!("sqlite://{}/bench.db", tmp.path().display()), None),
            "postgres" => {
                let name = format!("medic_bench_{}", std::process::id());
                let admin = sqlx::PgPool::connect(&a.postgres_url).await.expect("PostgreSQL for the benchmark");
                sqlx::query(&format!("CREATE DATABASE {name}")).execute(&admin).await.unwrap();
                (with_database(&a.postgres_url, &name), Some((admin, name)))
            }
            other => panic!("unknown store {other}"),
        };
        let r = run(&url, &a).await;
        load_line(&format!("medic {store}"), &r.load, r.rss, &r.stored.to_string());
        println!(
            "              medic: {:.1} CPU s for {} alerts ({:.0} µs/alert), {:.1} s; {:.0} commits of {:.0} alerts on average, {:.2} ms each; load generator {:.1} CPU s",
            r.cpu,
            r.load.acked,
            r.cpu * 1e6 / r.load.acked as f64,
            r.load.seconds,
            r.commits,
            r.load.acked as f64 / r.commits.max(1.0),
            r.commit_ms,
            r.client_cpu
        );
        // The aim allows two per incident per started minute of storm.
        let minutes = (r.load.seconds / 60.0).ceil().max(1.0);
        println!(
            "              {} diagnosed records: {:.2} per incident, {:.2} per incident per started minute of storm ({minutes:.0})",
            r.diagnosed,
            r.diagnosed as f64 / a.incidents as f64,
            r.diagnosed as f64 / a.incidents as f64 / minutes
        );
        if let Some((l, _, _)) = &reference {
            println!(
                "              ratio to Alertmanager: {:.2}× its ingest rate",
                r.load.alerts_per_s / l.alerts_per_s
            );
        }
        if r.stored as u64 != r.load.acked {
            println!("  FAILED: {} alerts acknowledged but {} stored", r.load.acked, r.stored);
            failed = true;
        }
        if let Some((admin, name)) = pg_db {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name}")).execute(&admin).await;
            admin.close().await;
        }
    }
    println!(
        "aims: 100k alerts into 50 incidents at >= 1.0x Alertmanager's rate on SQLite, >= 0.5x on PostgreSQL; p99 < 50 ms; \
         <= 2 diagnosed per incident per minute; peak RSS < 100 MiB; every acknowledged alert durable"
    );
    if failed {
        std::process::exit(1);
    }
}
