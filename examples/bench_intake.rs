//! Intake benchmark: posts Alertmanager v4 payloads to a running medic on loopback and prints
//! sustained alerts/s, p50/p99 intake latency and medic's resident memory, for SQLite and
//! PostgreSQL. Afterwards it counts the alerts in the database: every acknowledged alert must
//! be there (acknowledged == stored), or the run fails.
//!
//! ```text
//! cargo build --release && cargo run --release --example bench_intake -- [--store sqlite|postgres|both]
//!     [--seconds 10] [--alerts-per-payload 10] [--concurrency 16] [--postgres-url URL]
//! ```
//! The load generator runs on the same machine as medic and competes with it for the CPU.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

struct Args {
    stores: Vec<String>,
    seconds: u64,
    per_payload: usize,
    concurrency: usize,
    postgres_url: String,
}

const USAGE: &str = "usage: cargo run --release --example bench_intake -- [--store sqlite|postgres|both] \
[--seconds 10] [--alerts-per-payload 10] [--concurrency 16] [--postgres-url URL]
Build the server first (cargo build --release): the benchmark runs target/release/medic.";

fn args() -> Args {
    let mut a = Args {
        stores: vec!["sqlite".into(), "postgres".into()],
        seconds: 10,
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
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.0.id())).unwrap_or_default();
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

const SERVICES: usize = 50;
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

/// A version-4 notification of `n` alerts, each with a fresh fingerprint (every alert is new
/// work: stored, correlated and audited). Written with a template rather than a JSON tree so
/// the load generator, which shares the machine with medic, stays cheap.
fn payload(seq: u64, n: usize) -> Vec<u8> {
    use std::fmt::Write as _;
    let service = format!("svc-{}", seq as usize % SERVICES);
    let mut alerts = String::with_capacity(n * 600);
    for i in 0..n {
        let name = NAMES[(seq as usize + i) % NAMES.len()];
        let sep = if i == 0 { "" } else { "," };
        let _ = write!(
            alerts,
            r#"{sep}{{"status":"firing","labels":{{"alertname":"{name}","service":"{service}","namespace":"prod","severity":"critical","instance":"10.0.{i}.{}:9090","job":"kubernetes-pods"}},"annotations":{{"summary":"{name} on {service}","description":"value 0.97 above threshold 0.9 for 5m","runbook_url":"https://runbooks.example.com/x"}},"startsAt":"2026-11-21T14:23:00.000Z","endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://prometheus:9090/graph?g0.expr=x","fingerprint":"{seq:012x}{i:04x}"}}"#,
            seq % 250
        );
    }
    format!(
        r#"{{"receiver":"medic","status":"firing","alerts":[{alerts}],"groupLabels":{{"service":"{service}"}},"commonLabels":{{"service":"{service}"}},"commonAnnotations":{{}},"externalURL":"http://alertmanager:9093","version":"4","groupKey":"{{}}:{{service=\"{service}\"}}","truncatedAlerts":0}}"#
    )
    .into_bytes()
}

/// CPU seconds (user + system) a process has used, from /proc/PID/stat.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

struct Run {
    alerts_per_s: f64,
    requests_per_s: f64,
    p50: f64,
    p99: f64,
    max: f64,
    acked: u64,
    stored: i64,
    rss: (f64, f64),
    /// medic's CPU seconds over the whole run, commits made, mean commit time.
    cpu: f64,
    client_cpu: f64,
    commits: f64,
    commit_ms: f64,
}

async fn run(store: &str, url: &str, a: &Args) -> Run {
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
    let t = Instant::now();
    while http.get(format!("{base}/readyz")).send().await.map(|r| !r.status().is_success()).unwrap_or(true) {
        assert!(t.elapsed() < Duration::from_secs(30), "medic did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let client_cpu_before = cpu_seconds("self");
    let seq = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(AtomicU64::new(0));
    let warmup = Duration::from_secs(2);
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + Duration::from_secs(a.seconds);
    let mut workers = Vec::new();
    for _ in 0..a.concurrency {
        let (http, base, seq, acked, n) = (http.clone(), base.clone(), seq.clone(), acked.clone(), a.per_payload);
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut measured = 0u64;
            loop {
                let s = seq.fetch_add(1, Ordering::Relaxed);
                let body = payload(s, n);
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                let r = http
                    .post(format!("{base}/v1/alerts/alertmanager"))
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .expect("request");
                let ok = r.status().is_success();
                let _ = r.bytes().await;
                assert!(ok, "medic refused a payload");
                acked.fetch_add(n as u64, Ordering::Relaxed);
                if t0 >= measure_from {
                    lat.push(t0.elapsed().as_secs_f64() * 1000.0);
                    measured += 1;
                }
            }
            (lat, measured)
        }));
    }
    let mut lat = Vec::new();
    let mut requests = 0;
    for w in workers {
        let (l, m) = w.await.unwrap();
        lat.extend(l);
        requests += m;
    }
    let rss = medic.rss_mib();
    let cpu = medic.cpu_seconds();
    let client_cpu = cpu_seconds("self") - client_cpu_before;
    let (commits, commit_ms) = commit_stats(&http, &base).await;
    drop(medic); // graceful shutdown: drains the writer
    lat.sort_by(|x, y| x.partial_cmp(y).unwrap());
    let q = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];

    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    let stored: i64 =
        sqlx::Row::get(&sqlx::query("SELECT COUNT(*) AS n FROM alerts").fetch_one(&pool).await.unwrap(), "n");
    pool.close().await;
    let secs = a.seconds as f64;
    let _ = store;
    Run {
        alerts_per_s: requests as f64 * a.per_payload as f64 / secs,
        requests_per_s: requests as f64 / secs,
        p50: q(0.50),
        p99: q(0.99),
        max: *lat.last().unwrap(),
        acked: acked.load(Ordering::Relaxed),
        stored,
        rss,
        cpu,
        client_cpu,
        commits,
        commit_ms,
    }
}

/// The same server URL with another database name (query string kept).
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map(|(b, q)| (b, format!("?{q}"))).unwrap_or((url, String::new()));
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host = base[scheme_end..].find('/').map(|i| &base[..scheme_end + i]).unwrap_or(base);
    format!("{host}/{name}{query}")
}

#[tokio::main]
async fn main() {
    let a = args();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!(
        "medic intake benchmark: {cores} cores, {} alerts per Alertmanager payload, {} concurrent senders, {}s measured after 2s warm-up",
        a.per_payload, a.concurrency, a.seconds
    );
    println!(
        "{:<9} {:>9} {:>10} {:>7} {:>7} {:>7} {:>9} {:>9} {:>14}",
        "store", "alerts/s", "requests/s", "p50 ms", "p99 ms", "max ms", "acked", "stored", "RSS MiB (peak)"
    );
    let mut failed = false;
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
        let r = run(store, &url, &a).await;
        println!(
            "{:<9} {:>9.0} {:>10.0} {:>7.1} {:>7.1} {:>7.1} {:>9} {:>9} {:>6.1} ({:.1})",
            store, r.alerts_per_s, r.requests_per_s, r.p50, r.p99, r.max, r.acked, r.stored, r.rss.0, r.rss.1
        );
        println!(
            "          medic: {:.1} CPU s for {} alerts ({:.0} µs/alert); {:.0} commits of {:.0} alerts on average, {:.2} ms each; load generator {:.1} CPU s",
            r.cpu,
            r.acked,
            r.cpu * 1e6 / r.acked as f64,
            r.commits,
            r.acked as f64 / r.commits.max(1.0),
            r.commit_ms,
            r.client_cpu
        );
        if r.stored as u64 != r.acked {
            println!("  FAILED: {} alerts acknowledged but {} stored", r.acked, r.stored);
            failed = true;
        }
        if let Some((admin, name)) = pg_db {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name}")).execute(&admin).await;
            admin.close().await;
        }
    }
    println!(
        "aim: >= 10000 alerts/s with SQLite, p99 < 50 ms, every acknowledged alert durable (synchronous=FULL, group commit)"
    );
    if failed {
        std::process::exit(1);
    }
}
