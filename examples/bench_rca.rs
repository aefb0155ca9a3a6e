//! Root cause across services on labelled faults in Nezha's TrainTicket data (46 services on
//! Kubernetes; metrics, logs and traces): for each fault, medic diagnoses the window from its
//! logs' baseline before the injection to three minutes after it, through the same gathering and
//! diagnosis `serve` runs (`responder::request`, `context::gather`, `responder::conclude`), with
//! the recorded backend `scenario::nezha` as metrics, logs, traces and pods. It prints the ranked
//! services per fault, AS@1/3/5 beside Nezha's published figures, and the time per fault.
//!
//! ```text
//! cargo run --release --example bench_rca -- [--data ../shared/datasets/nezha-tt] [--entry ts-gateway-service]
//! ```
//!
//! What medic is given, per fault, is what it would see at that moment: an alert on the entry
//! service starting at the injection time (no root-cause label), the data up to three minutes
//! after it, and the three latest earlier faults as resolved past incidents of the same kind
//! (open from their injection for five minutes: three of fault, then the alert's resolve), whose
//! windows its baselines leave out. One configuration for every fault and service.

#[path = "common/data.rs"]
mod data;

use medic::alert::{Alert, AlertStatus, Source};
use medic::context::{self, Sources};
use medic::diagnosis::Past;
use medic::responder::{self, Window};
use medic::scenario::nezha::{self, Nezha};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Nezha's published AS@1/3/5 (all 45 TrainTicket faults) and the baselines its paper reports.
const PUBLISHED: [(&str, &str, [f64; 3]); 8] = [
    ("Nezha", "metrics+logs+traces", [86.67, 97.78, 97.78]),
    ("Nezha without metrics", "logs+traces", [55.56, 62.22, 68.89]),
    ("Nezha without logs", "metrics+traces", [42.22, 44.44, 44.44]),
    ("MicroRCA", "metrics", [20.00, 31.11, 44.44]),
    ("MicroScope", "metrics", [17.78, 26.67, 35.56]),
    ("LogFaultFlagger", "logs", [17.78, 24.44, 24.44]),
    ("MicroRank", "traces", [15.56, 24.44, 35.56]),
    ("PDiagnose", "metrics+logs+traces", [8.89, 13.33, 22.22]),
];

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--help" || a == "-h") {
        println!(
            "bench_rca: root-cause ranking on labelled faults in Nezha-format data (AS@1/3/5, time per fault)\n\n\
             usage: bench_rca [--data DIR] [--entry SERVICE] [--why]\n  \
             --data   a directory holding days of Nezha-format data (default ../shared/datasets/nezha-tt)\n  \
             --entry  the service the alert fires on (default ts-gateway-service)\n  \
             --why    print the evidence of each fault's top three"
        );
        return;
    }
    let data = PathBuf::from(arg("--data").unwrap_or_else(|| "../shared/datasets/nezha-tt".into()));
    let entry = arg("--entry").unwrap_or_else(|| "ts-gateway-service".into());
    data::or_exit(&data.to_string_lossy(), "", "Nezha-format TrainTicket data (metric/log/trace CSVs, fault lists)");
    let started = Instant::now();
    let fail = |e: String| -> ! {
        eprintln!("{e}");
        std::process::exit(2)
    };
    let recorded = Arc::new(Nezha::open(&data).unwrap_or_else(|e| fail(e)));
    let faults = nezha::faults(&data).unwrap_or_else(|e| fail(e));
    if faults.is_empty() {
        fail(format!("{}: no fault list (*fault_list.json) in any day folder", data.display()));
    }
    println!(
        "{} faults, {} services with metrics; metrics read in {:.1} s",
        faults.len(),
        recorded.services().len(),
        started.elapsed().as_secs_f64()
    );
    let sources = Sources {
        metrics: Some(recorded.clone()),
        logs: Some(recorded.clone()),
        traces: Some(recorded.clone()),
        pods: Some(recorded.clone()),
        trace_limit: 5000,
        timeout: Duration::from_secs(30),
        budget: Duration::from_secs(60),
        ..Default::default()
    };
    let golden = nezha::golden();
    let mut hits = [0usize; 3];
    let mut times = Vec::new();
    println!(
        "\n{:<20} {:<15} {:<30} {:>5}  {:<70} {:>7}",
        "injected (UTC)", "type", "root cause", "rank", "medic's top 3", "ms"
    );
    for (i, f) in faults.iter().enumerate() {
        let labels = [("alertname", "FrontendSlowOrFailing"), ("service", entry.as_str()), ("severity", "critical")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let alerts = [Alert {
            source: Source::Generic,
            fingerprint: format!("frontend-{i}"),
            status: AlertStatus::Firing,
            labels,
            annotations: Default::default(),
            starts_at: f.at,
            ends_at: None,
            links: Default::default(),
        }];
        let history: Vec<Past> = faults[..i]
            .iter()
            .enumerate()
            .rev()
            .take(3)
            .map(|(j, g)| Past {
                incident_id: j as i64 + 1,
                title: "FrontendSlowOrFailing".into(),
                opened_at: g.at,
                resolved_at: Some(g.at + 5 * 60_000),
                runbook: None,
                verified: false,
                outcome: "resolved by itself".into(),
            })
            .collect();
        let now = f.at + 3 * 60_000;
        let incident = (i as i64 + 1, "FrontendSlowOrFailing");
        let t0 = Instant::now();
        let req = responder::request(&alerts, &[], &golden, now, incident, Window::default());
        let ctx = context::gather(&sources, &req).await;
        let (d, _) = responder::conclude(&alerts, &[], &golden, &ctx, incident, &history);
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        times.push(ms);
        let rank = d.suspects.iter().position(|s| s.service == f.service).map(|p| p + 1);
        for (k, n) in [1, 3, 5].iter().enumerate() {
            hits[k] += usize::from(rank.is_some_and(|r| r <= *n));
        }
        let top: Vec<String> = d
            .suspects
            .iter()
            .take(3)
            .map(|s| format!("{} {:.1}", s.service.trim_start_matches("ts-"), s.score))
            .collect();
        println!(
            "{:<20} {:<15} {:<30} {:>5}  {:<70} {:>7.0}",
            medic::time::from_millis(f.at).format("%Y-%m-%d %H:%M:%S"),
            f.kind,
            f.service,
            rank.map_or("—".into(), |r| r.to_string()),
            top.join(", "),
            ms
        );
        if std::env::args().any(|a| a == "--why") {
            for s in d.suspects.iter().take(3) {
                println!("    {} {:.1}: {}", s.service, s.score, s.reasons.join(", "));
                for e in &s.evidence {
                    println!("      {}", e.text.chars().take(300).collect::<String>());
                }
            }
        }
        if !ctx.unavailable.is_empty() {
            println!("    unavailable: {}", ctx.unavailable.join("; "));
        }
    }
    let n = faults.len() as f64;
    let pct = |h: usize| 100.0 * h as f64 / n;
    times.sort_by(f64::total_cmp);
    println!(
        "\nmedic: AS@1 {:.2}%  AS@3 {:.2}%  AS@5 {:.2}%  ({} faults); per fault: median {:.0} ms, max {:.0} ms",
        pct(hits[0]),
        pct(hits[1]),
        pct(hits[2]),
        faults.len(),
        times[times.len() / 2],
        times[times.len() - 1]
    );
    println!("\npublished on TrainTicket (45 faults; Nezha, FSE 2023, Table 3):");
    for (name, data, [a1, a3, a5]) in PUBLISHED {
        println!("  {name:<24} {data:<20} AS@1 {a1:6.2}%  AS@3 {a3:6.2}%  AS@5 {a5:6.2}%");
    }
}
