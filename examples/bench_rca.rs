//! Root cause across services on labelled faults in Nezha-format data (Nezha, Yu et al., FSE
//! 2023: TrainTicket's 46 services or OnlineBoutique's 10 on Kubernetes; metrics, logs and
//! traces): for each fault, medic diagnoses the window from its logs' baseline before the
//! injection to three minutes after it, through the same gathering and diagnosis `serve` runs
//! (`responder::request`, `context::gather`, `responder::conclude`), with the recorded backend
//! `scenario::nezha` as metrics, logs, traces, pods and topology. It prints the ranked services
//! per fault, AS@1/3/5 overall, per fault class and per day, beside Nezha's published figures
//! for that system, and the time per fault.
//!
//! ```text
//! cargo run --release --example bench_rca -- [--data ../shared/datasets/nezha-tt] [--entry SERVICE] [--half a|b] [--why]
//! ```
//!
//! What medic is given, per fault, is what it would see at that moment: an alert on the entry
//! service starting at the injection time (no root-cause label), the data up to three minutes
//! after it, and the three latest earlier faults as resolved past incidents of the same kind
//! (open from their injection for five minutes: three of fault, then the alert's resolve), whose
//! windows its baselines leave out. One configuration for every fault, service and system.
//! `--half a|b` scores every other fault (in time order), to choose on one half and report on
//! the other.

#[path = "common/data.rs"]
mod data;
#[path = "common/usage.rs"]
mod usage;

use medic::alert::{Alert, AlertStatus, Source};
use medic::context::{self, Sources};
use medic::diagnosis::Past;
use medic::responder::{self, Window};
use medic::scenario::nezha::{self, Nezha};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A row of a published table: approach, data it reads, AS@1/3/5.
type Published = (&'static str, &'static str, [f64; 3]);

/// Nezha's published AS@1/3/5 on TrainTicket (all 45 faults) and the baselines its paper reports.
const TRAINTICKET: [Published; 8] = [
    ("Nezha", "metrics+logs+traces", [86.67, 97.78, 97.78]),
    ("Nezha without metrics", "logs+traces", [55.56, 62.22, 68.89]),
    ("Nezha without logs", "metrics+traces", [42.22, 44.44, 44.44]),
    ("MicroRCA", "metrics", [20.00, 31.11, 44.44]),
    ("MicroScope", "metrics", [17.78, 26.67, 35.56]),
    ("LogFaultFlagger", "logs", [17.78, 24.44, 24.44]),
    ("MicroRank", "traces", [15.56, 24.44, 35.56]),
    ("PDiagnose", "metrics+logs+traces", [8.89, 13.33, 22.22]),
];

/// The same on OnlineBoutique (all 56 faults; paper Table 3, as printed).
const ONLINEBOUTIQUE: [Published; 8] = [
    ("Nezha", "metrics+logs+traces", [92.86, 96.43, 96.43]),
    ("Nezha without metrics", "logs+traces", [26.78, 33.92, 35.71]),
    ("Nezha without logs", "metrics+traces", [64.28, 64.28, 64.28]),
    ("MicroRCA", "metrics", [16.07, 62.5, 92.75]),
    ("MicroScope", "metrics", [12.5, 41.07, 55.35]),
    ("LogFaultFlagger", "logs", [19.64, 21.42, 23.21]),
    ("MicroRank", "traces", [41.07, 48.21, 62.5]),
    ("PDiagnose", "metrics+logs+traces", [41.07, 73.21, 82.14]),
];

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

/// Faults found at rank 1, ≤ 3, ≤ 5, of how many.
#[derive(Default)]
struct Hits([usize; 3], usize);

impl Hits {
    fn add(&mut self, rank: Option<usize>) {
        for (k, n) in [1, 3, 5].iter().enumerate() {
            self.0[k] += usize::from(rank.is_some_and(|r| r <= *n));
        }
        self.1 += 1;
    }

    fn line(&self) -> String {
        let pct = |h: usize| 100.0 * h as f64 / self.1.max(1) as f64;
        format!(
            "AS@1 {:6.2}%  AS@3 {:6.2}%  AS@5 {:6.2}%  ({} faults)",
            pct(self.0[0]),
            pct(self.0[1]),
            pct(self.0[2]),
            self.1
        )
    }
}

#[tokio::main]
async fn main() {
    usage::or_help(
        "bench_rca: root-cause ranking on labelled faults in Nezha-format data (AS@1/3/5, time per fault)\n\n\
         usage: bench_rca [--data DIR] [--entry SERVICE] [--half a|b] [--why]\n  \
         --data   a directory holding days of Nezha-format data, TrainTicket or OnlineBoutique (default ../shared/datasets/nezha-tt)\n  \
         --entry  the service the alert fires on (default ts-gateway-service, or frontend where there is one)\n  \
         --half   every other fault in time order (a: the first, third, …; b: the others)\n  \
         --why    print the evidence of each fault's top three",
    );
    let data = PathBuf::from(arg("--data").unwrap_or_else(|| "../shared/datasets/nezha-tt".into()));
    data::or_exit(&data.to_string_lossy(), "", "Nezha-format data (metric/log/trace CSVs, fault lists)");
    let started = Instant::now();
    let fail = |e: String| -> ! {
        eprintln!("{e}");
        std::process::exit(2)
    };
    let recorded = Arc::new(Nezha::open(&data).unwrap_or_else(|e| fail(e)));
    let all = nezha::faults(&data).unwrap_or_else(|e| fail(e));
    if all.is_empty() {
        fail(format!("{}: no fault list (*fault_list.json) in any day folder", data.display()));
    }
    let half = arg("--half").unwrap_or_else(|| "all".into());
    let chosen: Vec<usize> = (0..all.len())
        .filter(|i| match half.as_str() {
            "a" => i % 2 == 0,
            "b" => i % 2 == 1,
            "all" => true,
            other => fail(format!("--half {other:?}: expected a, b or all")),
        })
        .collect();
    let services = recorded.services();
    let entry = arg("--entry").unwrap_or_else(|| {
        if services.iter().any(|s| s == "frontend") { "frontend".into() } else { "ts-gateway-service".into() }
    });
    let (system, published) = if entry == "frontend" {
        ("OnlineBoutique (56 faults", &ONLINEBOUTIQUE)
    } else {
        ("TrainTicket (45 faults", &TRAINTICKET)
    };
    println!(
        "{} faults ({} scored, half {half}), {} services with metrics, {} call edges in the topology; metrics read in {:.1} s",
        all.len(),
        chosen.len(),
        services.len(),
        recorded.topology().len(),
        started.elapsed().as_secs_f64()
    );
    let sources = Sources {
        metrics: Some(recorded.clone()),
        logs: Some(recorded.clone()),
        traces: Some(recorded.clone()),
        pods: Some(recorded.clone()),
        topology: if recorded.topology().is_empty() { Vec::new() } else { vec![recorded.clone()] },
        trace_limit: 5000,
        timeout: Duration::from_secs(30),
        budget: Duration::from_secs(60),
        ..Default::default()
    };
    let golden = nezha::golden();
    let (mut hits, mut by_kind, mut by_day) = (Hits::default(), BTreeMap::<&str, Hits>::new(), BTreeMap::new());
    let mut times = Vec::new();
    println!(
        "\n{:<20} {:<15} {:<30} {:>5}  {:<70} {:>7}",
        "injected (UTC)", "type", "root cause", "rank", "medic's top 3", "ms"
    );
    for &i in &chosen {
        let f = &all[i];
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
        let history: Vec<Past> = all[..i]
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
        let gathered = t0.elapsed().as_secs_f64() * 1000.0;
        let (d, _) = responder::conclude(&alerts, &[], &golden, &ctx, incident, &history);
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        times.push((ms, ms - gathered));
        let rank = d.suspects.iter().position(|s| s.service == f.service).map(|p| p + 1);
        hits.add(rank);
        by_kind.entry(f.kind.as_str()).or_default().add(rank);
        by_day
            .entry(medic::time::from_millis(f.at).format("%Y-%m-%d").to_string())
            .or_insert_with(Hits::default)
            .add(rank);
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
    let (mut all_ms, mut diagnose_ms): (Vec<f64>, Vec<f64>) = times.into_iter().unzip();
    all_ms.sort_by(f64::total_cmp);
    diagnose_ms.sort_by(f64::total_cmp);
    println!(
        "\nmedic: {}; per fault: median {:.0} ms, max {:.0} ms (reading the CSV files included; the diagnosis alone: median {:.0} ms, max {:.0} ms)",
        hits.line(),
        all_ms[all_ms.len() / 2],
        all_ms[all_ms.len() - 1],
        diagnose_ms[diagnose_ms.len() / 2],
        diagnose_ms[diagnose_ms.len() - 1]
    );
    println!("\nby fault class:");
    for (kind, h) in &by_kind {
        println!("  {kind:<16} {}", h.line());
    }
    if by_day.len() > 1 {
        println!("\nby day:");
        for (day, h) in &by_day {
            println!("  {day:<16} {}", h.line());
        }
    }
    println!("\npublished on {system}; Nezha, FSE 2023, Table 3):");
    for (name, data, [a1, a3, a5]) in published {
        println!("  {name:<24} {data:<20} AS@1 {a1:6.2}%  AS@3 {a3:6.2}%  AS@5 {a5:6.2}%");
    }
}
