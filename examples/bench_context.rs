//! Context benchmark: the time from an Alertmanager webhook reaching medic to the diagnosis
//! being recorded, split into gathering (the real Prometheus on loopback) and diagnosing.
//!
//! The service has `--series` golden-signal series (default 10) with `--hours` of history
//! (default 6) backfilled at 15 s resolution with `promtool`, then scraped live; medic's
//! look-back is set to the same span, so every investigation reads the whole window. Each run
//! opens a new incident (the cache is off), and the time is taken from just before the POST to
//! the moment the `diagnosed` audit record is visible in the store (polled every 2 ms).
//!
//! ```text
//! cargo run --release --example bench_context -- [--runs 30] [--series 10] [--hours 6]
//! ```
//! Needs `prometheus` and `promtool` (Debian package `prometheus`).

#[path = "common/serve.rs"]
mod serve;
#[path = "../tests/common/stack.rs"]
mod stack;
#[path = "common/usage.rs"]
mod usage;

use medic::config::Config;
use medic::time::{Clock, SystemClock, rfc3339};
use serde_json::{Value, json};
use stack::Target;
use std::time::{Duration, Instant};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("a number"))
        .unwrap_or(default)
}

fn pct(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    usage::or_help(
        "bench_context: webhook-to-diagnosis time, gathering (real Prometheus on loopback) and diagnosing\n\nusage: bench_context [--runs N] [--series N] [--hours N]\n  --runs    investigations (default 30)\n  --series  golden-signal series (default 10)\n  --hours   history backfilled per series (default 6); needs prometheus and promtool",
    );
    let (runs, n_series, hours) = (arg("--runs", 30) as usize, arg("--series", 10) as usize, arg("--hours", 6));
    if let Some(why) = stack::missing(&["prometheus", "promtool"]) {
        anyhow::bail!("{why}");
    }
    let dir = tempfile::tempdir()?;
    let d = dir.path();

    // History and live values: a noisy baseline; the first series steps up 20 minutes ago.
    let target = Target::default();
    let name = |k: usize| format!("bench_golden_{k}{{service=\"checkout\"}}");
    for k in 0..n_series {
        target.set(&name(k), if k == 0 { 40.0 } else { 10.0 + k as f64 });
    }
    let port = target.serve().await;
    let now = SystemClock.now() as f64 / 1000.0;
    let span = hours as f64 * 3600.0 + 1800.0;
    let history: Vec<(String, Vec<(f64, f64)>)> = (0..n_series)
        .map(|k| {
            let labels = name(k).replace('{', &format!("{{instance=\"127.0.0.1:{port}\",job=\"e2e\","));
            let points = (0..(span / 15.0) as usize)
                .map(|i| {
                    let t = now - span + i as f64 * 15.0;
                    let noise = ((i * 7919 + k * 104729) % 13) as f64 * 0.1;
                    let v = if k == 0 && t > now - 1200.0 { 40.0 } else { 10.0 + k as f64 + noise };
                    (t, v)
                })
                .collect();
            (labels, points)
        })
        .collect();
    let started = Instant::now();
    stack::backfill(d, "prom-data", &history);
    println!(
        "backfilled {n_series} series × {:.0} h at 15 s in {:.1} s",
        span / 3600.0,
        started.elapsed().as_secs_f64()
    );
    let prom_port = stack::free_port();
    let _prom = stack::prometheus(d, prom_port, "prom-data", port, stack::free_port(), "groups: []\n");
    if !stack::ready(&format!("http://127.0.0.1:{prom_port}/-/ready"), 60).await {
        anyhow::bail!("Prometheus did not start\n{}", stack::logs(d, &["prometheus"]));
    }

    // medic, in this process, with the context pointed at that Prometheus.
    let golden: Vec<Value> = (0..n_series)
        .map(|k| json!({"name": format!("signal_{k}"), "promql": format!("max(bench_golden_{k}{{service=\"{{{{service}}}}\"}})")}))
        .collect();
    let yaml = serde_json::to_string(&json!({
        "incidents": {"group_by": [["service", "run"]]},
        "context": {"look_back": format!("{hours}h"), "cache_ttl": "0s",
                    "prometheus": {"url": format!("http://127.0.0.1:{prom_port}"), "golden_signals": golden}},
    }))?;
    let config = Config::parse(&yaml, "bench.yaml").map_err(|e| anyhow::anyhow!("{e}"))?;
    let served = serve::start(config, d).await?;
    let (store, base) = (served.store.clone(), served.base.clone());

    let http = medic::telemetry::http_client_builder().build()?;
    let (mut e2e, mut gather, mut diagnose) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..=runs {
        let at = rfc3339(SystemClock.now());
        let payload = json!({
            "version": "4", "status": "firing", "receiver": "medic", "groupKey": format!("{{}}:{{run=\"{run}\"}}"),
            "truncatedAlerts": 0, "externalURL": "http://alertmanager",
            "alerts": [{"status": "firing", "labels": {"alertname": "BenchSignal0High", "service": "checkout", "run": run.to_string()},
                        "annotations": {}, "startsAt": at, "endsAt": "0001-01-01T00:00:00Z",
                        "generatorURL": "http://prometheus/graph", "fingerprint": format!("bench{run:08}")}],
        });
        let t0 = Instant::now();
        let r: Value = http.post(format!("{base}/v1/alerts/alertmanager")).json(&payload).send().await?.json().await?;
        let id = r["incidents"][0].as_i64().ok_or_else(|| anyhow::anyhow!("no incident: {r}"))?;
        let record = loop {
            if let Some(rec) = store.audit_for_incident(id).await?.into_iter().find(|r| r.kind == "diagnosed") {
                break rec;
            }
            if t0.elapsed() > Duration::from_secs(30) {
                anyhow::bail!("no diagnosis for incident {id} within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let total = t0.elapsed().as_secs_f64() * 1000.0;
        let data: Value = serde_json::from_str(&record.data)?;
        let failed: Vec<&Value> =
            data["queries"].as_array().unwrap().iter().filter(|q| !q["error"].is_null()).collect();
        if !failed.is_empty() {
            anyhow::bail!("queries failed: {failed:?}");
        }
        if run == 0 {
            println!("warm-up run: {total:.1} ms end to end (not counted)");
            println!("top hypothesis: {}", data["top"].as_str().unwrap_or("?"));
            for e in data["diagnosis"]["hypotheses"][0]["evidence"].as_array().into_iter().flatten() {
                println!("  • {}", e["text"].as_str().unwrap_or("?"));
            }
            continue;
        }
        e2e.push(total);
        gather.push(data["gather_ms"].as_f64().unwrap_or(f64::NAN));
        diagnose.push(data["diagnose_ms"].as_f64().unwrap_or(f64::NAN));
    }

    // How big the answers were: one of the series, asked the way medic asks.
    let prom = medic::context::prometheus::Prometheus::new(
        &format!("http://127.0.0.1:{prom_port}"),
        medic::context::http::Auth::None,
        vec![],
        Duration::from_secs(5),
    )
    .map_err(anyhow::Error::msg)?;
    let end = SystemClock.now();
    let start = end - hours as i64 * 3_600_000;
    let step = medic::context::prometheus::step_for(start, end);
    let q = medic::context::MetricQuery {
        name: "signal_1".into(),
        promql: "max(bench_golden_1{service=\"checkout\"})".into(),
        start,
        end,
        step,
        service: None,
    };
    let series = medic::context::Metrics::query_range(&prom, &q).await.map_err(anyhow::Error::msg)?;
    let n_points = series.first().map(|s| s.points.len()).unwrap_or(0);
    let step = step / 1000;

    println!(
        "\n{runs} investigations, {n_series} golden-signal series × {hours} h each (step {step} s, {n_points} points per series):"
    );
    println!("                          p50        p90        max");
    for (what, v) in [("webhook → diagnosis", &e2e), ("  gathering", &gather), ("  diagnosing", &diagnose)] {
        println!(
            "{what:<22} {:>7.2} ms {:>7.2} ms {:>7.2} ms",
            pct(v.clone(), 0.5),
            pct(v.clone(), 0.9),
            pct(v.clone(), 1.0)
        );
    }
    println!(
        "(gathering and diagnosing are medic's own timings; the rest of end to end is intake, the audit write and the 2 ms poll)"
    );
    served.stop().await?;
    Ok(())
}
