//! Log template mining on Loghub's 2k samples: grouping accuracy (GA) and parsing accuracy (PA)
//! per system with one configuration, next to Drain's published GA (tuned per system, where
//! known), for every system folder under `--data` (a new one is scored as it is), and
//! lines/s of the miner alone.
//!
//! ```text
//! cargo run --release --example bench_loghub -- [--data ../shared/datasets/loghub-2k] [--half a|b] [--why SYSTEM]
//! ```
//! The systems are split in two halves, every other one in name order (a: the first, third, …),
//! and the average GA and PA of each half is printed, so a change chosen on one half is judged
//! on the other; `--half a|b` scores one half only.
//! GA: a line is correct when the set of lines in its group (as merged at the end) is exactly
//! the set of lines that share its ground-truth EventId. PA: its group's template equals the
//! ground truth's. `--why SYSTEM` prints each event type of SYSTEM that is not exactly one group.

#[path = "common/data.rs"]
mod data;
#[path = "common/usage.rs"]
mod usage;

use medic::diagnosis::logs::{Config, Miner};
use std::collections::HashMap;
use std::time::Instant;

/// Drain's published GA per system (tuned per system), shown beside ours where known.
const DRAIN: [(&str, f64); 12] = [
    ("Android", 0.911),
    ("Apache", 1.000),
    ("BGL", 0.963),
    ("HDFS", 0.998),
    ("HPC", 0.887),
    ("Hadoop", 0.948),
    ("Linux", 0.690),
    ("OpenSSH", 0.788),
    ("Proxifier", 0.527),
    ("Spark", 0.920),
    ("Windows", 0.997),
    ("Zookeeper", 0.967),
];

/// The structured CSV's (Content, EventId, EventTemplate) per line; fields may be quoted.
fn read(path: &str) -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut rows = Vec::new();
    let mut lines = text.lines();
    let header = split_csv(lines.next().expect("a header"));
    let col = |n: &str| header.iter().position(|h| h == n).unwrap_or_else(|| panic!("{path}: no column {n}"));
    let (c, e, t) = (col("Content"), col("EventId"), col("EventTemplate"));
    for line in lines {
        let f = split_csv(line);
        rows.push((f[c].clone(), f[e].clone(), f[t].clone()));
    }
    rows
}

fn split_csv(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(ch) = chars.next() {
        match ch {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            _ => cur.push(ch),
        }
    }
    out.push(cur);
    out
}

/// Every system under `data`: a directory holding `<name>_2k.log_structured_corrected.csv`
/// (or, failing that, one `*_structured*.csv`), sorted by name. A new system is scored as it is.
fn systems(data: &str) -> Vec<(String, std::path::PathBuf)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(data).unwrap_or_else(|e| panic!("{data}: {e}")) {
        let dir = entry.expect("a directory entry").path();
        let Some(name) = dir.file_name().and_then(|n| n.to_str()).map(str::to_string) else { continue };
        if !dir.is_dir() {
            continue;
        }
        let preferred = dir.join(format!("{name}_2k.log_structured_corrected.csv"));
        let file = if preferred.is_file() {
            Some(preferred)
        } else {
            let mut found: Vec<_> = std::fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.contains("_structured") && n.ends_with(".csv"))
                })
                .collect();
            found.sort();
            found.into_iter().next()
        };
        match file {
            Some(f) => out.push((name, f)),
            None => eprintln!("{}: no *_structured*.csv; skipped", dir.display()),
        }
    }
    out.sort();
    if out.is_empty() {
        eprintln!("error: no system folders with a structured CSV under {data}");
        std::process::exit(2);
    }
    out
}

fn main() {
    usage::or_help(
        "bench_loghub: log template mining on Loghub's 2k samples (grouping and parsing accuracy, lines/s)\n\nusage: bench_loghub [--data DIR] [--half a|b] [--why SYSTEM]\n  --data  one folder per system with its *_structured*.csv (default ../shared/datasets/loghub-2k)\n  --half  every other system in name order (a: the first, third, …; b: the others)\n  --why   print the event types of SYSTEM that are not exactly one group",
    );
    let args: Vec<String> = std::env::args().collect();
    let data = args
        .iter()
        .position(|a| a == "--data")
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| "../shared/datasets/loghub-2k".into());
    data::or_exit(&data, "", "the Loghub 2k samples (one directory per system)");
    let mut config = Config::default();
    let flag = |n: &str| {
        args.iter().position(|a| a == n).and_then(|i| args.get(i + 1)).map(|v| v.parse::<f64>().expect("a number"))
    };
    if let Some(d) = flag("--depth") {
        config.depth = d as usize;
    }
    if let Some(s) = flag("--similarity") {
        config.similarity = s;
    }
    // `--why SYSTEM`: each event type of SYSTEM that is not exactly one group, and its groups.
    let why = args.iter().position(|a| a == "--why").and_then(|i| args.get(i + 1)).cloned();
    println!("config: {config:?}");
    println!("{:<10} {:>6} {:>6} {:>8} {:>9}", "system", "GA", "PA", "Drain GA", "groups");
    let (mut ga_sum, mut pa_sum) = (0.0, 0.0);
    let mut corpus: Vec<Vec<(String, String, String)>> = Vec::new();
    let half = args.iter().position(|a| a == "--half").and_then(|i| args.get(i + 1)).cloned();
    // Each system with its half.
    let systems: Vec<(String, std::path::PathBuf, char)> = systems(&data)
        .into_iter()
        .enumerate()
        .map(|(i, (s, f))| (s, f, if i % 2 == 0 { 'a' } else { 'b' }))
        .filter(|(_, _, h)| match half.as_deref() {
            None => true,
            Some("a" | "b") => half.as_deref() == Some(h.to_string().as_str()),
            Some(other) => {
                eprintln!("--half {other:?}: expected a or b");
                std::process::exit(2)
            }
        })
        .collect();
    let mut halves: std::collections::BTreeMap<char, (f64, f64, usize)> = Default::default();
    let mut drains: Vec<f64> = Vec::new();
    for (system, file, h) in &systems {
        let rows = read(&file.display().to_string());
        let drain = DRAIN.iter().find(|d| d.0 == system).map(|d| d.1);
        drains.extend(drain);
        let mut miner = Miner::new(config);
        let assigned: Vec<usize> = rows.iter().map(|(content, _, _)| miner.add(content)).collect();
        // Groups merged later count as one.
        let assigned: Vec<usize> = assigned.into_iter().map(|g| miner.root(g)).collect();

        let mut truth_size: HashMap<&str, usize> = HashMap::new();
        for (_, e, _) in &rows {
            *truth_size.entry(e.as_str()).or_default() += 1;
        }
        let mut groups: HashMap<usize, Vec<usize>> = HashMap::new();
        for (i, g) in assigned.iter().enumerate() {
            groups.entry(*g).or_default().push(i);
        }
        let mut correct = 0;
        let mut parsed = 0;
        for (g, members) in &groups {
            let first = &rows[members[0]].1;
            let pure = members.iter().all(|&i| &rows[i].1 == first);
            if pure && truth_size[first.as_str()] == members.len() {
                correct += members.len();
                if miner.template(*g) == rows[members[0]].2 {
                    parsed += members.len();
                }
            }
        }
        if why.as_deref() == Some(system.as_str()) {
            let mut by_truth: HashMap<&str, HashMap<usize, usize>> = HashMap::new();
            for (i, g) in assigned.iter().enumerate() {
                *by_truth.entry(rows[i].1.as_str()).or_default().entry(*g).or_default() += 1;
            }
            let mut bad: Vec<_> = by_truth.iter().collect();
            bad.sort_by_key(|(_, gs)| std::cmp::Reverse(gs.values().sum::<usize>()));
            for (e, gs) in bad {
                let pure = gs.len() == 1 && groups[gs.keys().next().unwrap()].len() == gs.values().sum::<usize>();
                if pure {
                    continue;
                }
                let truth = rows.iter().find(|r| r.1 == *e).map(|r| r.2.clone()).unwrap_or_default();
                println!("TRUTH {e} ({} lines) {truth}", gs.values().sum::<usize>());
                for (g, n) in gs {
                    println!("   {n:>4} in group {g} (size {}): {}", groups[g].len(), miner.template(*g));
                }
            }
        }
        let ga = correct as f64 / rows.len() as f64;
        let pa = parsed as f64 / rows.len() as f64;
        ga_sum += ga;
        pa_sum += pa;
        let e = halves.entry(*h).or_default();
        (e.0, e.1, e.2) = (e.0 + ga, e.1 + pa, e.2 + 1);
        let drain = drain.map(|d| format!("{d:.3}")).unwrap_or_else(|| "-".into());
        println!("{system:<10} {ga:>6.3} {pa:>6.3} {drain:>8} {:>9}   half {h}", miner.groups().len());
        corpus.push(rows);
    }
    let n = systems.len() as f64;
    let drain_avg = match drains.len() == systems.len() {
        true => format!("{:.3}", drains.iter().sum::<f64>() / n),
        false => "-".into(),
    };
    println!("{:<10} {:>6.3} {:>6.3} {drain_avg:>8}", "average", ga_sum / n, pa_sum / n);
    for (h, (ga, pa, k)) in &halves {
        println!("{:<10} {:>6.3} {:>6.3}          ({k} systems)", format!("half {h}"), ga / *k as f64, pa / *k as f64);
    }
    // Throughput of the miner alone: every system from a fresh miner, 20 rounds; the median round.
    let lines_total: usize = corpus.iter().map(Vec::len).sum();
    let mut rounds: Vec<f64> = (0..20)
        .map(|_| {
            let started = Instant::now();
            for rows in &corpus {
                let mut miner = Miner::new(config);
                for (content, _, _) in rows {
                    std::hint::black_box(miner.add(content));
                }
            }
            started.elapsed().as_secs_f64()
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    let secs = rounds[rounds.len() / 2];
    println!(
        "\none configuration for every system; {lines_total} lines mined in {:.1} ms (median of 20 rounds): \
         {:.2} million lines/s on one core",
        secs * 1000.0,
        lines_total as f64 / secs / 1e6
    );
}
