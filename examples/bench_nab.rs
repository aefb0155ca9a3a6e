//! The streaming metric detector on the Numenta Anomaly Benchmark, scored with NAB's published
//! method, per cost profile, next to the published scoreboard, plus points/s of the detector
//! alone. Writes NAB-format result files (`timestamp,value,anomaly_score,label`) so NAB's own
//! scorer can check the figure.
//!
//! ```text
//! cargo run --release --example bench_nab -- [--data ../shared/datasets/nab] [--results target/nab-results]
//!     [--half a|b] [--detector combined|level|novelty|flatline] [--rounds 3]
//! ```
//!
//! The detector is `novelty::Combined` (the level detector, context novelty and the flatline
//! record under one rest period), set up by `Combined::for_series` exactly as the diagnosis
//! runs it on every series of an incident (`anomaly::analyse`); `level`, `novelty` and
//! `flatline` score each part alone. It also prints the slowest file and what the diagnosis'
//! step costs on ten six-hour series.
//!
//! Scoring, as NAB's `sweeper.py` does it: the first 15% of each file (at most 750 rows) is
//! probation and not scored. A point inside a window scores the scaled sigmoid of its relative
//! position (tpWeight at the left edge, falling towards 0 at the right edge); a window's score is
//! its best detected point, or −fnWeight if nothing in it was detected. A detection outside every
//! window costs fpWeight × the scaled sigmoid of its distance past the previous window (a full
//! fpWeight when there is none). The threshold is the one that maximises the corpus's score, per
//! profile, found exactly by sweeping every distinct anomaly score. The score is normalised so a
//! detector that never fires scores 0 and one that fires at every window's left edge scores 100.

#[path = "common/data.rs"]
mod data;
#[path = "common/usage.rs"]
mod usage;

use chrono::NaiveDateTime;
use medic::diagnosis::anomaly::{self, Config, Detector};
use medic::diagnosis::novelty::{Combined, FLATLINE_MIN_RUN, Flatline, Novelty, NoveltyConfig, probation};
use std::collections::BTreeMap;
use std::time::Instant;

/// NAB's published scores, standard profile (the dataset README).
const SCOREBOARD: [(&str, f64); 12] = [
    ("ARTime", 74.9),
    ("Numenta HTM", 70.5),
    ("CAD OSE", 69.9),
    ("earthgecko Skyline", 58.2),
    ("KNN CAD", 58.0),
    ("Relative Entropy", 54.6),
    ("Random Cut Forest", 51.7),
    ("Twitter ADVec", 47.1),
    ("Windowed Gaussian", 39.6),
    ("Etsy Skyline", 35.7),
    ("Bayes Changepoint", 17.7),
    ("random", 11.0),
];

#[derive(Debug, Clone, Copy)]
struct Profile {
    tp: f64,
    fp: f64,
    fn_: f64,
}

fn scaled_sigmoid(position: f64) -> f64 {
    if position >= 3.0 { -1.0 } else { 2.0 / (1.0 + (5.0 * position).exp()) - 1.0 }
}

/// One row as the scorer sees it: its anomaly score, what detecting it is worth, and its window
/// (`None` outside every window); probationary rows are dropped.
#[derive(Debug, Clone, Copy)]
struct Row {
    score: f64,
    worth: f64,
    window: Option<usize>,
}

/// `sweeper.calcSweepScore`: `windows` are index ranges (inclusive), in order, not overlapping;
/// window ids are offset by `first_window` so they stay distinct across files.
fn sweep(scores: &[f64], windows: &[(usize, usize)], first_window: usize, p: Profile) -> Vec<Row> {
    let max_tp = scaled_sigmoid(-1.0);
    let start = probation(scores.len());
    let mut rows = Vec::with_capacity(scores.len());
    let mut prev: Option<(usize, f64)> = None;
    for (i, &score) in scores.iter().enumerate() {
        let inside = windows.iter().position(|&(l, r)| l <= i && i <= r);
        let worth = match inside {
            Some(w) => {
                let (l, r) = windows[w];
                let width = (r - l + 1) as f64;
                scaled_sigmoid(-((r as f64 - i as f64 + 1.0) / width)) * p.tp / max_tp
            }
            None => {
                let position = prev.map_or(3.0, |(right, width)| (i - right) as f64 / (width - 1.0));
                scaled_sigmoid(position) * p.fp
            }
        };
        if let Some(w) = inside
            && i == windows[w].1
        {
            prev = Some((i, (windows[w].1 - windows[w].0 + 1) as f64));
        }
        if i >= start {
            rows.push(Row { score, worth, window: inside.map(|w| w + first_window) });
        }
    }
    rows
}

/// `sweeper.calcScoreByThreshold`: the score at each distinct threshold, highest first, counting
/// every row whose anomaly score is at or above it as a detection.
fn by_threshold(rows: &[Row], p: Profile) -> Vec<(f64, f64)> {
    let mut sorted: Vec<&Row> = rows.iter().collect();
    sorted.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut windows: BTreeMap<usize, f64> = rows.iter().filter_map(|r| r.window).map(|w| (w, -p.fn_)).collect();
    let mut total = windows.values().sum::<f64>();
    let mut out = Vec::new();
    let mut threshold = 1.1;
    for r in sorted {
        if r.score != threshold {
            out.push((threshold, total));
            threshold = r.score;
        }
        match r.window {
            Some(w) => {
                let best = windows.get_mut(&w).expect("every window was entered");
                if r.worth > *best {
                    total += r.worth - *best;
                    *best = r.worth;
                }
            }
            None => {
                total += r.worth;
            }
        }
    }
    out.push((threshold, total));
    out
}

/// The score at `threshold`: `sweeper.scoreDataSet`'s row lookup (the last threshold at or above).
fn score_at(table: &[(f64, f64)], threshold: f64) -> f64 {
    let mut prev = table[0].1;
    for &(t, s) in table {
        if t == threshold {
            return s;
        }
        if t < threshold {
            return prev;
        }
        prev = s;
    }
    prev
}

struct DataFile {
    name: String,
    stamps: Vec<String>,
    values: Vec<f64>,
    windows: Vec<(usize, usize)>,
    step_secs: i64,
}

fn parse_time(s: &str) -> i64 {
    let s = s.trim();
    let t = NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S"))
        .unwrap_or_else(|e| panic!("timestamp {s:?}: {e}"));
    t.and_utc().timestamp()
}

fn load(data: &str) -> Vec<DataFile> {
    let windows_path = format!("{data}/labels/combined_windows.json");
    let text = std::fs::read_to_string(&windows_path).unwrap_or_else(|e| panic!("{windows_path}: {e}"));
    let labels: BTreeMap<String, Vec<[String; 2]>> = serde_json::from_str(&text).expect("combined_windows.json");
    let mut files = Vec::new();
    for (name, wins) in labels {
        let path = format!("{data}/data/{name}");
        let Ok(csv) = std::fs::read_to_string(&path) else { continue };
        let (mut stamps, mut values, mut secs) = (Vec::new(), Vec::new(), Vec::new());
        for line in csv.lines().skip(1).filter(|l| !l.trim().is_empty()) {
            let (t, v) = line.split_once(',').unwrap_or_else(|| panic!("{path}: {line:?}"));
            secs.push(parse_time(t));
            stamps.push(t.to_string());
            values.push(v.trim().parse::<f64>().unwrap_or_else(|e| panic!("{path}: {v:?}: {e}")));
        }
        let index = |w: &str| {
            let t = parse_time(w);
            secs.iter().position(|s| *s == t).unwrap_or_else(|| panic!("{name}: window edge {w} is not a row"))
        };
        let windows = wins.iter().map(|[l, r]| (index(l), index(r))).collect();
        let mut steps: Vec<i64> = secs.windows(2).map(|w| w[1] - w[0]).collect();
        steps.sort_unstable();
        let step_secs = steps.get(steps.len() / 2).copied().unwrap_or(300).max(1);
        files.push(DataFile { name, stamps, values, windows, step_secs });
    }
    files
}

fn config_for(f: &DataFile) -> Config {
    let per_day = 86_400 / f.step_secs;
    let period = (86_400 % f.step_secs == 0 && f.values.len() as i64 >= 3 * per_day).then_some(per_day as usize);
    Config { period, ..Config::default() }
}

/// NAB hands every detector the file's range and its probation (`inputMin`, `inputMax`,
/// `probationaryPeriod`); the rest after a report is a fifth of the probation, as in CAD OSE.
fn novelty_for(f: &DataFile) -> NoveltyConfig {
    let (lo, hi) = f.values.iter().fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
    NoveltyConfig::new(lo, hi, probation(f.values.len()) / 5)
}

/// `--detector combined` (the default: the detector the diagnosis runs, set up by the same
/// `Combined::for_series`), `level`, `novelty` or `flatline`: each point's anomaly score.
fn detect(f: &DataFile, which: &str) -> Vec<f64> {
    match which {
        "level" => {
            let mut d = Detector::new(config_for(f));
            f.values.iter().map(|x| d.push(*x).score).collect()
        }
        "novelty" => {
            let mut d = Novelty::new(novelty_for(f));
            f.values.iter().map(|x| d.push(*x).score).collect()
        }
        "flatline" => {
            let mut d = Flatline::new(FLATLINE_MIN_RUN);
            f.values.iter().map(|x| d.push(*x).score).collect()
        }
        _ => {
            let mut d = Combined::for_series(&f.values, f.step_secs);
            f.values.iter().map(|x| d.push(*x).score).collect()
        }
    }
}

fn main() {
    usage::or_help(
        "bench_nab: the streaming metric detector on the Numenta Anomaly Benchmark (NAB score per profile)\n\nusage: bench_nab [--data DIR] [--results DIR] [--half a|b] [--detector combined|level|novelty|flatline] [--rounds N]\n  --data      NAB (data/, labels/, profiles.json) (default ../shared/datasets/nab)\n  --results   where NAB-format result files are written (default target/nab-results)\n  --half      every other file, to choose on one half and report on the other\n  --detector  which detector (default combined)\n  --rounds    timing rounds of the detector alone",
    );
    let args: Vec<String> = std::env::args().collect();
    let arg = |flag: &str, default: &str| {
        args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned().unwrap_or_else(|| default.into())
    };
    let data = arg("--data", "../shared/datasets/nab");
    let results = arg("--results", "target/nab-results");
    data::or_exit(&data, "profiles.json", "NAB (data/ and labels/combined_windows.json, profiles.json)");
    let profiles_text = std::fs::read_to_string(format!("{data}/profiles.json")).expect("profiles.json");
    let profiles: BTreeMap<String, serde_json::Value> = serde_json::from_str(&profiles_text).expect("profiles");
    // `--half a|b`: every other file (in name order), so a change can be chosen on one half and
    // reported on the other.
    let half = arg("--half", "all");
    let files: Vec<DataFile> = load(&data)
        .into_iter()
        .enumerate()
        .filter(|(i, _)| match half.as_str() {
            "a" => i % 2 == 0,
            "b" => i % 2 == 1,
            "all" => true,
            other => {
                eprintln!("--half {other:?}: expected a, b or all");
                std::process::exit(2)
            }
        })
        .map(|(_, f)| f)
        .collect();
    let points: usize = files.iter().map(|f| f.values.len()).sum();
    let windows: usize = files.iter().map(|f| f.windows.len()).sum();
    println!("NAB: {} files, {points} points, {windows} windows, from {data}", files.len());

    let which = arg("--detector", "combined");
    if !["combined", "level", "novelty", "flatline"].contains(&which.as_str()) {
        eprintln!("--detector {which:?}: expected combined, level, novelty or flatline");
        std::process::exit(2)
    }
    let scores: Vec<Vec<f64>> = files.iter().map(|f| detect(f, &which)).collect();

    // Result files, as NAB's runner writes them: results/<detector>/<category>/<detector>_<file>.
    for (f, s) in files.iter().zip(&scores) {
        let (category, file) = f.name.split_once('/').expect("category/file.csv");
        let dir = format!("{results}/medic/{category}");
        std::fs::create_dir_all(&dir).expect("results directory");
        let mut out = String::from("timestamp,value,anomaly_score,label\n");
        for (i, ((t, v), a)) in f.stamps.iter().zip(&f.values).zip(s).enumerate() {
            let label = u8::from(f.windows.iter().any(|&(l, r)| l <= i && i <= r));
            out.push_str(&format!("{t},{v},{a},{label}\n"));
        }
        std::fs::write(format!("{dir}/medic_{file}"), out).expect("result file");
    }
    println!("result files: {results}/medic/<category>/medic_<file>.csv");

    println!();
    println!("{:<20} {:>9} {:>10} {:>8}", "profile", "threshold", "raw score", "score");
    for (name, value) in &profiles {
        let m = &value["CostMatrix"];
        let w = |k: &str| m[k].as_f64().unwrap_or_else(|| panic!("profile {name}: {k}"));
        let p = Profile { tp: w("tpWeight"), fp: w("fpWeight"), fn_: w("fnWeight") };
        let (score, threshold, raw) = score_corpus(&files, &scores, p);
        println!("{name:<20} {threshold:>9.4} {raw:>10.2} {score:>8.1}");
    }
    println!();
    println!("published, standard profile, whole corpus (58 files; this subset has {}):", files.len());
    for (who, s) in SCOREBOARD {
        println!("  {who:<20} {s:>5.1}");
    }

    // Throughput of the detector alone: every file, several rounds (`--rounds 0` skips it).
    let rounds: usize = arg("--rounds", "3").parse().unwrap_or_else(|e| {
        eprintln!("--rounds: {e}");
        std::process::exit(2)
    });
    if rounds == 0 {
        return;
    }
    let started = Instant::now();
    let mut sink = 0.0;
    for _ in 0..rounds {
        for f in &files {
            sink += detect(f, &which).iter().sum::<f64>();
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!();
    println!(
        "speed: {:.2} M points/s on one core ({} points in {:.1} ms per round; checksum {sink:.0})",
        (points * rounds) as f64 / secs / 1e6,
        points,
        secs * 1000.0 / rounds as f64
    );
    // The slowest file, and what the diagnosis pays: `anomaly::analyse` (the window method and
    // this detector, on at most `MOST_POINTS` bucket means a series) on ten series of six hours
    // at 15-second steps, cut from the files.
    let (slowest, per_file) = files
        .iter()
        .map(|f| {
            let t = Instant::now();
            std::hint::black_box(detect(f, &which));
            (f, t.elapsed().as_secs_f64())
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .expect("a file");
    println!(
        "slowest file: {} ({} points) in {:.0} ms, {:.1} µs a point",
        slowest.name,
        slowest.values.len(),
        per_file * 1000.0,
        per_file * 1e6 / slowest.values.len() as f64
    );
    const SIX_HOURS: usize = 6 * 240;
    let windows: Vec<Vec<(i64, f64)>> = files
        .iter()
        .filter(|f| f.values.len() >= SIX_HOURS)
        .take(10)
        .map(|f| {
            f.values[f.values.len() - SIX_HOURS..].iter().enumerate().map(|(i, v)| (i as i64 * 15_000, *v)).collect()
        })
        .collect();
    let mut times: Vec<f64> = (0..rounds.max(5))
        .map(|_| {
            let t = Instant::now();
            for w in &windows {
                std::hint::black_box(anomaly::analyse(w));
            }
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(f64::total_cmp);
    println!(
        "the diagnosis' step: anomaly::analyse on {} series × {SIX_HOURS} points (6 h at 15 s): median {:.1} ms, max {:.1} ms of {} rounds",
        windows.len(),
        times[times.len() / 2],
        times[times.len() - 1],
        times.len()
    );
}

/// The normalised corpus score with the best threshold for `p`: (score, threshold, raw).
fn score_corpus(files: &[DataFile], scores: &[Vec<f64>], p: Profile) -> (f64, f64, f64) {
    let mut all = Vec::new();
    let mut next_window = 0;
    for (f, s) in files.iter().zip(scores) {
        all.extend(sweep(s, &f.windows, next_window, p));
        next_window += f.windows.len();
    }
    let table = by_threshold(&all, p);
    let (threshold, raw) = table.iter().copied().max_by(|a, b| a.1.total_cmp(&b.1)).expect("a threshold");
    // The same threshold file by file (NAB's final pass) must add up to the corpus figure.
    let mut next_window = 0;
    let per_file: f64 = files
        .iter()
        .zip(scores)
        .map(|(f, s)| {
            let rows = sweep(s, &f.windows, next_window, p);
            next_window += f.windows.len();
            score_at(&by_threshold(&rows, p), threshold)
        })
        .sum();
    if std::env::var("NAB_DEBUG").is_ok() {
        for (f, s) in files.iter().zip(scores) {
            let start = probation(s.len());
            let hits: Vec<String> = f
                .windows
                .iter()
                .map(|&(l, r)| match (l.max(start)..=r).find(|&i| s[i] >= threshold) {
                    Some(i) => format!("{:.2}", (i - l) as f64 / (r - l + 1) as f64),
                    None => "miss".into(),
                })
                .collect();
            let fps = (start..s.len())
                .filter(|&i| s[i] >= threshold && !f.windows.iter().any(|&(l, r)| l <= i && i <= r))
                .count();
            println!("  {:<60} n={:<6} fp={fps:<4} windows {hits:?}", f.name, s.len());
        }
    }
    assert!((per_file - raw).abs() < 1e-6, "per-file {per_file} vs corpus {raw}");
    let (null, perfect) = bounds(&all, p);
    (100.0 * (raw - null) / (perfect - null), threshold, raw)
}

/// What a detector that never fires scores, and one that fires at each window's first scored row.
fn bounds(rows: &[Row], p: Profile) -> (f64, f64) {
    let mut best: BTreeMap<usize, f64> = BTreeMap::new();
    for r in rows {
        if let Some(w) = r.window {
            let b = best.entry(w).or_insert(f64::MIN);
            *b = b.max(r.worth);
        }
    }
    (-p.fn_ * best.len() as f64, best.values().sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    const STANDARD: Profile = Profile { tp: 1.0, fp: 0.11, fn_: 1.0 };

    #[test]
    fn scaled_sigmoid_matches_nab() {
        assert!((scaled_sigmoid(-1.0) - 0.98661).abs() < 1e-5);
        assert!((scaled_sigmoid(-0.5) - 0.84828).abs() < 1e-5);
        assert_eq!(scaled_sigmoid(0.0), 0.0);
        assert_eq!(scaled_sigmoid(3.0), -1.0);
    }

    #[test]
    fn hand_computed_file() {
        // 100 rows, probation 15; one window 50..=59.
        let windows = [(50, 59)];
        let mut scores = vec![0.0; 100];
        // An early detection in the window, a later one in it, an FP before it and one long after.
        scores[51] = 0.9;
        scores[55] = 0.95;
        scores[30] = 0.8;
        scores[95] = 0.7;
        let rows = sweep(&scores, &windows, 0, STANDARD);
        assert_eq!(rows.len(), 85);
        let table = by_threshold(&rows, STANDARD);
        let tp_at = |i: usize| scaled_sigmoid(-((59.0 - i as f64 + 1.0) / 10.0)) / scaled_sigmoid(-1.0);
        // Threshold 0.95: only row 55 detected.
        assert!((score_at(&table, 0.95) - tp_at(55)).abs() < 1e-9);
        // 0.9: row 51 is the window's best.
        assert!((score_at(&table, 0.9) - tp_at(51)).abs() < 1e-9);
        // 0.8: plus an FP with no window before it, a full −0.11.
        assert!((score_at(&table, 0.8) - (tp_at(51) - 0.11)).abs() < 1e-9);
        // 0.7: plus an FP 36 rows after a 10-row window: position 4 ≥ 3, so −0.11 again.
        assert!((score_at(&table, 0.7) - (tp_at(51) - 0.22)).abs() < 1e-9);
        // Above every score: the window is missed.
        assert_eq!(score_at(&table, 1.0), -1.0);
        let (null, perfect) = bounds(&rows, STANDARD);
        assert_eq!((null, perfect), (-1.0, 1.0));
    }

    #[test]
    fn probation_is_capped() {
        assert_eq!(probation(100), 15);
        assert_eq!(probation(10_000), 750);
    }
}
