//! Ask benchmark: question → answer latency of `POST /v1/ask` for 1,000 mixed questions about
//! an incident, with a real Prometheus on loopback behind the metric questions (no Loki: log
//! questions answer that no log source is configured) and no LLM; and
//! the parser alone. Aims (issue 15): p99 < 100 ms end to end, the parser < 50 µs. Then, offline
//! against the demo scenario (no services, the path `medic ask` takes), every question of
//! `tests/ask/phrasings.tsv` and `tests/ask/public.tsv` one by one, overheard so that nothing
//! changes: the parser's p99 and the answer's p99 (aims, issue 33: < 5 ms and < 100 ms).
//!
//! ```text
//! cargo run --release --example bench_ask -- [--questions 1000]
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

const QUESTIONS: [&str; 20] = [
    "what changed?",
    "status",
    "why?",
    "show checkout latency for the last hour",
    "error rate of checkout since 30 minutes ago",
    "who depends on postgres?",
    "what does checkout depend on",
    "any errors in the checkout logs?",
    "what else is firing?",
    "who approved the plan?",
    "timeline",
    "what can we do here?",
    "silence this for 1h",
    "help",
    "chart cpu of payments over the past 2h",
    "what's the weather like?",
    "what's wrong with checkout?",
    "when did it start?",
    "are any checkout pods crash-looping?",
    "what changed in robusta-runner?",
];

/// Every question of the phrasing tables.
fn table_questions() -> Vec<&'static str> {
    [include_str!("../tests/ask/phrasings.tsv"), include_str!("../tests/ask/public.tsv")]
        .into_iter()
        .flat_map(str::lines)
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split('\t').next())
        .collect()
}

/// Parser and answer percentiles, question by question, against the demo scenario offline.
async fn offline(vocab: &medic::ask::Vocabulary) -> anyhow::Result<()> {
    let questions = table_questions();
    let mut parse_us = Vec::new();
    for _ in 0..20 {
        for q in &questions {
            let t = Instant::now();
            std::hint::black_box(medic::ask::parse(q, vocab));
            parse_us.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let world = medic::scenario::Scenario::load(&root.join("examples/demo/scenario.yaml"))
        .and_then(|s| s.world())
        .map_err(anyhow::Error::msg)?;
    let o = medic::cli::ask::Offline::open(&world, medic::runbook::load(&root.join("runbooks"))?, None).await?;
    let me = medic::approval::Identity("bench:U0".into());
    let mut answer_ms = Vec::new();
    for q in &questions {
        let question = medic::ask::answer::Question {
            text: q.to_string(),
            incident: Some(o.incident),
            who: me.clone(),
            via: "bench".into(),
            groups: Default::default(),
            addressed: false,
        };
        let t = Instant::now();
        o.asker.ask(&question).await?;
        answer_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    println!(
        "offline, demo scenario, {} table questions: parser p50 {:.1} µs · p99 {:.1} µs (aim < 5 ms); answer p50 {:.2} ms · p99 {:.2} ms · max {:.2} ms (aim p99 < 100 ms)",
        questions.len(),
        pct(parse_us.clone(), 0.5),
        pct(parse_us, 0.99),
        pct(answer_ms.clone(), 0.5),
        pct(answer_ms.clone(), 0.99),
        pct(answer_ms, 1.0)
    );
    Ok(())
}

fn pct(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    usage::or_help(
        "bench_ask: question-to-answer latency of POST /v1/ask (real Prometheus on loopback) and of the parser alone\n\nusage: bench_ask [--questions N]\n  --questions  how many mixed questions (default 1000); needs prometheus and promtool",
    );
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args
        .iter()
        .position(|a| a == "--questions")
        .and_then(|i| args.get(i + 1))
        .map_or(1000, |v| v.parse().expect("a number"));
    // The parser alone, over the mixed questions.
    let vocab = medic::ask::Vocabulary {
        services: ["checkout", "payments", "postgres", "cart", "frontend"].map(String::from).to_vec(),
        now: SystemClock.now(),
        offset: 0,
    };
    let rounds = 20_000;
    let t0 = Instant::now();
    for i in 0..rounds {
        std::hint::black_box(medic::ask::parse(QUESTIONS[i % QUESTIONS.len()], &vocab));
    }
    let per = t0.elapsed().as_secs_f64() * 1e6 / rounds as f64;
    println!("parser alone: {per:.1} µs per question (mean of {rounds}; aim < 50 µs)");
    offline(&vocab).await?;
    if let Some(why) = stack::missing(&["prometheus", "promtool"]) {
        anyhow::bail!("{why}");
    }

    // Prometheus with two hours of golden signals for checkout and payments.
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let target = Target::default();
    let series = ["http_requests_total", "http_errors_total", "container_cpu_usage_seconds_total"];
    for svc in ["checkout", "payments"] {
        for s in series {
            target.set(&format!("{s}{{service=\"{svc}\"}}"), 100.0);
        }
    }
    let port = target.serve().await;
    let now = SystemClock.now() as f64 / 1000.0;
    // Each metric family's series together, as OpenMetrics (and promtool) want them.
    let history: Vec<(String, Vec<(f64, f64)>)> = series
        .iter()
        .flat_map(|s| ["checkout", "payments"].into_iter().map(move |svc| (svc, s)))
        .map(|(svc, s)| {
            let labels = format!("{s}{{instance=\"127.0.0.1:{port}\",job=\"e2e\",service=\"{svc}\"}}");
            (labels, (0..480).map(|i| (now - 7200.0 + i as f64 * 15.0, i as f64 * 10.0)).collect())
        })
        .collect();
    stack::backfill(d, "prom-data", &history);
    let prom_port = stack::free_port();
    let _prom = stack::prometheus(d, prom_port, "prom-data", port, stack::free_port(), "groups: []\n");
    if !stack::ready(&format!("http://127.0.0.1:{prom_port}/-/ready"), 60).await {
        anyhow::bail!("Prometheus did not start\n{}", stack::logs(d, &["prometheus"]));
    }
    std::fs::write(d.join("topology.yaml"), "checkout: [payments, postgres]\n")?;
    let golden = json!([
        {"name": "request_rate", "promql": "sum(rate(http_requests_total{service=\"{{service}}\"}[5m]))"},
        {"name": "error_ratio", "promql": "sum(rate(http_errors_total{service=\"{{service}}\"}[5m])) / sum(rate(http_requests_total{service=\"{{service}}\"}[5m]))"},
        {"name": "latency_p99", "promql": "max(rate(http_requests_total{service=\"{{service}}\"}[5m]))"},
        {"name": "cpu_cores", "promql": "sum(rate(container_cpu_usage_seconds_total{service=\"{{service}}\"}[5m]))"},
    ]);
    let yaml = serde_json::to_string(&json!({
        "context": {"prometheus": {"url": format!("http://127.0.0.1:{prom_port}"), "golden_signals": golden},
                    "topology": {"file": d.join("topology.yaml")}},
    }))?;
    let config = Config::parse(&yaml, "bench.yaml").map_err(|e| anyhow::anyhow!("{e}"))?;
    let served = serve::start(config, d).await?;
    let (store, base) = (served.store.clone(), served.base.clone());
    let http = medic::telemetry::http_client_builder().build()?;
    let alert = json!({"version": "4", "status": "firing", "receiver": "medic", "groupKey": "{}:{}", "truncatedAlerts": 0,
        "externalURL": "http://alertmanager", "alerts": [{"status": "firing",
        "labels": {"alertname": "HighErrorRate", "service": "checkout", "severity": "critical"}, "annotations": {},
        "startsAt": rfc3339(SystemClock.now() - 600_000), "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus/graph", "fingerprint": "bench0001"}]});
    let r: Value = http.post(format!("{base}/v1/alerts/alertmanager")).json(&alert).send().await?.json().await?;
    let id = r["incidents"][0].as_i64().ok_or_else(|| anyhow::anyhow!("no incident: {r}"))?;
    let t0 = Instant::now();
    while !store.audit_for_incident(id).await?.iter().any(|r| r.kind == "diagnosed") {
        anyhow::ensure!(t0.elapsed() < Duration::from_secs(30), "no diagnosis within 30 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut by_intent: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    let mut all = Vec::with_capacity(n);
    for i in 0..=n {
        let q = QUESTIONS[i % QUESTIONS.len()];
        let t = Instant::now();
        let v: Value = http
            .post(format!("{base}/v1/ask"))
            .json(&json!({"question": q, "incident": id}))
            .send()
            .await?
            .json()
            .await?;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        if i == 0 {
            continue; // warm-up
        }
        // No Loki here (logs answers say so); any source that failed is a broken run.
        let failed =
            v["unavailable"].as_array().into_iter().flatten().any(|u| !u.to_string().contains("no source configured"));
        if i <= QUESTIONS.len() && failed {
            anyhow::bail!("{q:?}: a source failed: {v:#}");
        }
        by_intent.entry(v["intent"].as_str().unwrap_or("?").to_string()).or_default().push(ms);
        all.push(ms);
    }
    println!("{n} questions against /v1/ask (real Prometheus on loopback, no LLM):");
    println!(
        "  p50 {:.2} ms · p99 {:.2} ms · max {:.2} ms (aim p99 < 100 ms)",
        pct(all.clone(), 0.5),
        pct(all.clone(), 0.99),
        pct(all, 1.0)
    );
    for (intent, v) in by_intent {
        println!("  {intent:<13} n={:<4} p50 {:.2} ms · p99 {:.2} ms", v.len(), pct(v.clone(), 0.5), pct(v, 0.99));
    }
    served.stop().await?;
    Ok(())
}
