//! Method: root cause across services. Every service the context saw is scored on what
//! changed at the incident's start (the split), against its own baseline before it. Each fault
//! class is looked for where it must show itself, whatever the system:
//!
//! - **resource (CPU contention or consumption, memory pressure, disk I/O)**: the service's own
//!   work slows, so the time its spans spent in the service itself (not waiting for callees,
//!   not on the wire) grows, and its own series (CPU, memory, restarts, latency) leave their
//!   baselines, in robust σ with a floor per unit. A caller too starved to read its answers
//!   also slows *every* call it makes on the wire (see network). Latency does not count for a
//!   service whose own span time did not change: it is waiting.
//! - **network (delay or loss on a pod)**: the calls *into* the pod slow down as its callers
//!   see them while its own work does not. From traces, per call edge, the caller's client span
//!   beyond the callee's server span (the wire), before and after; each edge less how much the
//!   caller's other calls changed (a caller that is itself slow slows them all); a service
//!   whose calls out to two or more callees all slowed on the wire is slow to send or read. From
//!   metrics, a golden signal that is the callers' view of another (`callers_view_of`: Istio's
//!   `reporter="source"`, the service graph's client histograms) less the service's own view.
//!   Retries and timeouts in the callers' logs count through the logs.
//! - **code defects (error returns, exceptions)**: new or jumped log patterns (grouped by the
//!   code location a line names, else by the template miner; in σ of Anscombe's transform for
//!   two Poisson counts, beyond how much the pattern's share wobbles between baseline minutes);
//!   error spans; and the code path: per kind of request a service served, how many spans of
//!   each operation it made inside it (work that stopped after an early return, or error
//!   handling that started; error handling that stopped is recovery, not a defect).
//! - **crashes**: a pod crash-looping, killed, not ready or not running is a clear change by
//!   itself; restarts count through the restart series. That a crashed service's own spans stop
//!   is not read as such (its callers' errors and logs are).
//!
//! Each signal becomes a strength (1 = clearly changed); a service's score is its strongest
//! signal plus a quarter of the others (agreement between sources). Then the topology, decided
//! on the scores before any halving: slowness and errors travel up the call graph, so a service
//! that depends (up to three calls down) on another clearly anomalous one is more likely a
//! symptom and its score is halved; a change in what a service is asked travels down, so a
//! service whose only change is the mix of its spans, called by a clearly changed service, is
//! halved too. Baselines leave out the times past incidents of the same kind were open. A
//! source that is missing (no traces for the window, no logs) removes its signals and leaves
//! the others to rank. Every number that went into a rank is in its reasons. One configuration
//! for every system (the figures, and which data chose them: the book's Benchmarks chapter).

use super::{Evidence, EvidenceKind, format_value, hhmm, logs, sparkline};
use crate::context::{Context, Edge, LogLine, Span, traces};
use crate::runbook::Unit;
use crate::time::Millis;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// A service ranked as a possible root cause, with the evidence for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Suspect {
    pub service: String,
    pub score: f64,
    /// What the score is made of: "logs 3.1", "traces 1.4", "metrics 0.2", "halved: …".
    pub reasons: Vec<String>,
    /// How many of its sources changed clearly (strength ≥ 1).
    #[serde(skip)]
    pub strong: usize,
    /// Halved as a likely symptom of a dependency (or a caller) that changed too.
    #[serde(skip)]
    pub halved: bool,
    /// The source of its strongest signal (`logs`, `metrics`, `traces`, `spans`, `network`, `pods`).
    #[serde(skip)]
    pub top: &'static str,
    #[serde(skip)]
    pub evidence: Vec<Evidence>,
}

/// A log pattern's z, in standard errors, that counts as a clear change.
const LOG_Z: f64 = 4.0;
/// A metric's distance from its baseline median, in robust σ, that counts as a clear change.
const METRIC_Z: f64 = 8.0;
/// Own-time growth that counts as a clear change (×2).
const TRACE_RATIO: f64 = 2.0;
/// Slack added to both sides of an own-time ratio, microseconds (see `trace_signal`).
const OWN_SLACK_US: f64 = 5_000.0;
/// Least lines, points or spans on each side for a signal to be read at all.
const MIN_BASELINE: usize = 20;
const MIN_INCIDENT: usize = 10;
/// Logs weigh the baseline's sampling error (see `log_signal`), so fewer lines are enough.
const MIN_LOG_BASELINE: usize = 10;

/// One signal of one service.
struct Signal {
    source: &'static str,
    strength: f64,
    evidence: Evidence,
}

fn excluded(t: Millis, quiet: &[(Millis, Millis)]) -> bool {
    quiet.iter().any(|(a, b)| t >= *a && t < *b)
}

static ERROR_LIKE: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
    regex::Regex::new(r"(?i)error|exception|fail|panic|fatal|timeout|timed out|refused|unavailable|denied")
        .expect("a valid regex")
});

/// A log statement is told by its first words (level, logger, message); what follows is
/// mostly data (lists of any length), which would split one statement into many patterns.
const PATTERN_WORDS: usize = 12;

fn head(line: &str) -> std::borrow::Cow<'_, str> {
    match line.split_whitespace().nth(PATTERN_WORDS) {
        None => std::borrow::Cow::Borrowed(line),
        Some(_) => std::borrow::Cow::Owned(line.split_whitespace().take(PATTERN_WORDS).collect::<Vec<_>>().join(" ")),
    }
}

/// How far `observed` counts are from `expected` ones, in standard deviations, through
/// Anscombe's square-root transform of Poisson counts: honest for small counts (3 lines where
/// none were expected is not 8σ) and for large ones alike.
fn anscombe(observed: f64, expected: f64) -> f64 {
    2.0 * ((observed + 0.375).sqrt() - (expected + 0.375).sqrt())
}

/// The same for two Poisson counts: `after` over a span `ratio` times as long as the one
/// `before` was counted over. The baseline's own sampling error counts too, so a short baseline
/// needs a bigger change; a long one (`ratio` → 0) gives the one-sample figure.
fn anscombe_two(after: f64, before: f64, ratio: f64) -> f64 {
    2.0 * ((after + 0.375).sqrt() - ((before + 0.375) * ratio).sqrt()) / (1.0 + ratio).sqrt()
}

/// The log signal of one service's lines.
fn log_signal(lines: &[&LogLine], split: Millis, quiet: &[(Millis, Millis)]) -> Option<Signal> {
    let mut miner = logs::Miner::new(logs::Config::default());
    // A line that names its code location (`OrderServiceImpl#65`, `handler.go:88`) is grouped
    // by it: that is its statement, whatever the words after it. Others go to the miner.
    let mut located: HashMap<&str, usize> = HashMap::new();
    // Per group: baseline count, incident count, an example from the incident (or baseline).
    let mut counts: HashMap<usize, (usize, usize, &str)> = HashMap::new();
    let mut minutes: BTreeMap<Millis, HashMap<usize, usize>> = BTreeMap::new();
    let (mut a, mut b) = (0usize, 0usize);
    for l in lines {
        let before = l.at < split;
        if before && excluded(l.at, quiet) {
            continue;
        }
        let g = match l.line.split_whitespace().take(6).find(|t| logs::is_code_location(t)) {
            Some(loc) => {
                // Ids counted down from the top, apart from the miner's (counted up from 0).
                let next = usize::MAX - located.len();
                *located.entry(loc).or_insert(next)
            }
            None => miner.add(&head(&l.line)),
        };
        let c = counts.entry(g).or_insert((0, 0, l.line.as_str()));
        if before {
            c.0 += 1;
            a += 1;
            *minutes.entry(l.at.div_euclid(60_000)).or_default().entry(g).or_default() += 1;
        } else {
            if c.1 == 0 {
                c.2 = l.line.as_str();
            }
            c.1 += 1;
            b += 1;
        }
    }
    if a < MIN_LOG_BASELINE || b < MIN_INCIDENT {
        return None;
    }
    // Groups the miner merged as the lines came count as one.
    let root = |g: usize| if g > usize::MAX / 2 { g } else { miner.root(g) };
    let mut merged: HashMap<usize, (usize, usize, &str)> = HashMap::new();
    for (g, (x, y, example)) in counts {
        let m = merged.entry(root(g)).or_insert((0, 0, example));
        if m.1 == 0 && y > 0 {
            m.2 = example;
        }
        (m.0, m.1) = (m.0 + x, m.1 + y);
    }
    let counts = merged;
    for m in minutes.values_mut() {
        *m = m.drain().fold(HashMap::new(), |mut acc, (g, n)| {
            *acc.entry(root(g)).or_default() += n;
            acc
        });
    }
    let minutes: Vec<(usize, &HashMap<usize, usize>)> =
        minutes.values().map(|m| (m.values().sum::<usize>(), m)).filter(|(n, _)| *n >= 3).collect();
    let (af, bf) = (a as f64, b as f64);
    let mut best: Option<(f64, usize)> = None;
    for (g, (x, y, _)) in &counts {
        let share = *x as f64 / af;
        let z = anscombe_two(*y as f64, *x as f64, bf / af);
        // How much the pattern's share wobbles from one baseline minute to the next, in the
        // same units: a pattern that is always erratic needs a bigger change to count.
        let spread = if minutes.len() >= 3 {
            let sq: f64 =
                minutes.iter().map(|(n, m)| anscombe(*m.get(g).unwrap_or(&0) as f64, share * *n as f64).powi(2)).sum();
            (sq / minutes.len() as f64).sqrt().max(1.0)
        } else {
            1.0
        };
        let z = z.abs() / spread;
        // Ties go to the pattern with more lines after the split, then the first one seen.
        let better = |(bz, bg): (f64, usize)| z.total_cmp(&bz).then(y.cmp(&counts[&bg].1)).then(bg.cmp(g)).is_gt();
        if best.is_none_or(better) {
            best = Some((z, *g));
        }
    }
    let (z, g) = best?;
    let (x, y, example) = counts[&g];
    let pct = |n: usize, of: f64| format!("{:.1}%", 100.0 * n as f64 / of);
    let how = match (x, y) {
        (0, _) => "new",
        (_, 0) => "gone",
        _ if (y as f64 / bf) > (x as f64 / af) => "up",
        _ => "down",
    };
    let template = if g > usize::MAX / 2 { logs::tokens(&head(example)).join(" ") } else { miner.template(g) };
    let text = format!(
        "log pattern {how} at {}: \"{template}\" was {} of the service's lines before ({x} of {a}), {} after ({y} of {b}); {z:.1}σ beyond its usual spread (e.g. \"{}\")",
        hhmm(split),
        pct(x, af),
        pct(y, bf),
        example.chars().take(240).collect::<String>(),
    );
    let mut strength = z / LOG_Z;
    if how == "new" && ERROR_LIKE.is_match(&template) {
        // A new error pattern is what a defect looks like; a new INFO line may be new traffic.
        strength *= 1.5;
    }
    Some(Signal {
        source: "logs",
        strength,
        evidence: Evidence { kind: EvidenceKind::Log, text, at: Some(split), spark: None },
    })
}

/// Each span's request in its own service: the nearest ancestor (or itself) whose parent is on
/// another service or absent, the span that served the request there.
fn requests(spans: &[Span]) -> Vec<usize> {
    let by_id: HashMap<(&str, &str), usize> =
        spans.iter().enumerate().map(|(i, s)| ((s.trace_id.as_str(), s.span_id.as_str()), i)).collect();
    let parent = |i: usize| {
        let s = &spans[i];
        let p = by_id.get(&(s.trace_id.as_str(), s.parent.as_deref()?)).copied()?;
        (spans[p].service == s.service).then_some(p)
    };
    let mut entry: Vec<Option<usize>> = vec![None; spans.len()];
    for i in 0..spans.len() {
        let mut chain = vec![i];
        let mut at = i;
        // Walk up within the service (a malformed cycle stops at the first repeat).
        let top = loop {
            if let Some(e) = entry[at] {
                break e;
            }
            match parent(at) {
                Some(p) if !chain.contains(&p) && chain.len() < 64 => {
                    chain.push(p);
                    at = p;
                }
                _ => break at,
            }
        };
        for c in chain {
            entry[c] = Some(top);
        }
    }
    entry.into_iter().map(|e| e.unwrap_or_default()).collect()
}

/// The code path of one service: per kind of request it served (its server spans, by
/// operation), how many spans of each operation it made inside the request (its internal work
/// and its calls out), before and after the split, in σ of Anscombe's transform. A defect shows
/// here as work that stopped (an error returned before the calls that follow it), or new work
/// (an error handler); a change in how much traffic of each kind arrives does not.
fn path_signal(
    service: &str,
    mine: &[usize],
    spans: &[Span],
    request: &[usize],
    split: Millis,
    quiet: &[(Millis, Millis)],
) -> Option<Signal> {
    // Requests per kind, before and after; spans per (kind, operation), before and after.
    let mut served: HashMap<&str, (usize, usize)> = HashMap::new();
    let mut made: HashMap<(&str, &str), (usize, usize)> = HashMap::new();
    for &i in mine {
        let r = &spans[request[i]];
        if r.start < split && excluded(r.start, quiet) {
            continue;
        }
        let after = r.start >= split;
        let bump = |c: &mut (usize, usize)| if after { c.1 += 1 } else { c.0 += 1 };
        if request[i] == i {
            bump(served.entry(r.operation.as_str()).or_default());
        } else {
            bump(made.entry((r.operation.as_str(), spans[i].operation.as_str())).or_default());
        }
    }
    // Work that stopped altogether is a key with no spans after; every kind's made spans are
    // looked at, including those seen only after.
    // The largest change: its z, the (kind, operation), its spans and the requests, before and after.
    type Change<'s> = (f64, (&'s str, &'s str), (usize, usize), (usize, usize));
    let mut best: Option<Change> = None;
    for (&(kind, op), &(x, y)) in &made {
        let Some(&(n0, n1)) = served.get(kind) else { continue };
        if n0 < MIN_LOG_BASELINE || n1 < MIN_INCIDENT {
            continue;
        }
        let z = anscombe_two(y as f64, x as f64, n1 as f64 / n0 as f64);
        // Error handling that stopped is recovery, not a defect: error-like work counts only
        // when it grows.
        let z = if ERROR_LIKE.is_match(op) { z } else { z.abs() };
        if best.is_none_or(|b| z > b.0 || (z == b.0 && (kind, op) < b.1)) {
            best = Some((z, (kind, op), (x, y), (n0, n1)));
        }
    }
    let (z, (kind, op), (x, y), (n0, n1)) = best?;
    let per = |c: usize, n: usize| c as f64 / n as f64;
    let text = format!(
        "per {kind} request it served, {service} made {:.2} {op} spans after {} ({y} in {n1} requests), {:.2} before ({x} in {n0}); {z:.1}σ",
        per(y, n1),
        hhmm(split),
        per(x, n0),
    );
    let mut strength = z / LOG_Z;
    if x == 0 && ERROR_LIKE.is_match(op) {
        strength *= 1.5;
    }
    Some(Signal {
        source: "spans",
        strength,
        evidence: Evidence { kind: EvidenceKind::Trace, text, at: Some(split), spark: None },
    })
}

/// The pod signal of one service: a pod crash-looping, killed, not ready or not running is a
/// clear change by itself (a crash shows here first; its spans simply stop).
fn pod_signal(pods: &[&crate::context::Pod]) -> Option<Signal> {
    let p = pods.iter().find(|p| super::situation::bad(p))?;
    Some(Signal { source: "pods", strength: 1.5, evidence: super::situation::pod(p) })
}

/// The least change of each unit that can count, however still its baseline.
fn floor(unit: Unit) -> f64 {
    match unit {
        Unit::Ratio => 0.05,
        Unit::Seconds => 0.05,
        Unit::Bytes => 64.0 * 1048576.0,
        Unit::Number => 1.0,
    }
}

/// The strongest metric signal of one service's series.
fn metric_signal(
    series: &[&crate::context::Series],
    split: Millis,
    signals: &Signals,
    waiting: bool,
) -> Option<Signal> {
    let mut best: Option<Signal> = None;
    for s in series {
        let unit = signals.units.get(s.query.as_str()).copied().unwrap_or_default();
        // A callers' view is the network's signal, read by `network_signal`.
        if (waiting && unit == Unit::Seconds) || signals.callers_view.contains_key(s.query.as_str()) {
            continue;
        }
        let mut base: Vec<f64> = s.points.iter().filter(|(t, _)| *t < split).map(|p| p.1).collect();
        let after: Vec<(Millis, f64)> = s.points.iter().copied().filter(|(t, _)| *t >= split).collect();
        if base.len() < MIN_BASELINE || after.is_empty() {
            continue;
        }
        base.sort_by(f64::total_cmp);
        let med = base[base.len() / 2];
        let mut dev: Vec<f64> = base.iter().map(|x| (x - med).abs()).collect();
        dev.sort_by(f64::total_cmp);
        let scale = (1.4826 * dev[dev.len() / 2]).max(0.1 * med.abs()).max(floor(unit));
        let Some(&(at, peak)) = after.iter().max_by(|a, b| (a.1 - med).abs().total_cmp(&(b.1 - med).abs())) else {
            continue;
        };
        let z = (peak - med).abs() / scale;
        if best.as_ref().is_some_and(|b| b.strength >= z / METRIC_Z) {
            continue;
        }
        let way = if peak > med { "rose" } else { "fell" };
        let svc = s.labels.get("service").map(String::as_str).unwrap_or("?");
        let text = format!(
            "{} of {svc} {way} from {} to {} at {} ({z:.0} robust σ)",
            s.query,
            format_value(med, unit),
            format_value(peak, unit),
            hhmm(at)
        );
        best = Some(Signal {
            source: "metrics",
            strength: z / METRIC_Z,
            evidence: Evidence {
                kind: EvidenceKind::Metric,
                text,
                at: Some(at),
                spark: Some(sparkline(&s.points, 20)),
            },
        });
    }
    best
}

fn ms(us: u64) -> String {
    if us >= 1_000_000 { format!("{:.2} s", us as f64 / 1e6) } else { format!("{:.1} ms", us as f64 / 1000.0) }
}

/// The trace signal of one service: its spans' own time and errors, before and after.
fn trace_signal(
    service: &str,
    mine: &[(&Span, u64)],
    edges: &[traces::EdgeStats],
    split: Millis,
    quiet: &[(Millis, Millis)],
) -> Option<Signal> {
    let (mut before, mut after) = (Vec::new(), Vec::new());
    let (mut err_before, mut err_after) = (0usize, 0usize);
    for &(s, o) in mine {
        if s.start < split && excluded(s.start, quiet) {
            continue;
        }
        if s.start < split {
            before.push(o);
            err_before += usize::from(s.error);
        } else {
            after.push(o);
            err_after += usize::from(s.error);
        }
    }
    if before.len() < MIN_BASELINE || after.len() < MIN_INCIDENT {
        return None;
    }
    before.sort_unstable();
    after.sort_unstable();
    let (p0, p1) = (traces::quantile(&before, 0.5), traces::quantile(&after, 0.5));
    // Slack of a few milliseconds, the size of a scheduling hiccup or a young-generation GC
    // pause: 1 → 4 ms is not a slow service, 1 → 70 ms is.
    let ratio = (p1 as f64 + OWN_SLACK_US) / (p0 as f64 + OWN_SLACK_US);
    let latency = ratio.log(TRACE_RATIO).max(0.0);
    let (nb, na) = (before.len() as f64, after.len() as f64);
    let (e0, e1) = (err_before as f64 / nb, err_after as f64 / na);
    let pe = (err_before + err_after) as f64 / (nb + na);
    let errors =
        if pe > 0.0 { ((e1 - e0) / (pe * (1.0 - pe) * (1.0 / nb + 1.0 / na)).sqrt()).max(0.0) / LOG_Z } else { 0.0 };
    let calls = edges
        .iter()
        .filter(|e| e.to == service)
        .map(|e| {
            format!(
                "{} → {service}: {} calls, p90 {}, {:.0}% errors",
                e.from,
                e.calls,
                ms(e.p90_us),
                100.0 * e.error_ratio()
            )
        })
        .take(3)
        .collect::<Vec<_>>()
        .join("; ");
    let mut text = format!(
        "spans of {service} spent {} in the service itself at the median after {}, {} before ({ratio:.1}×; {} spans after, {} before)",
        ms(p1),
        hhmm(split),
        ms(p0),
        after.len(),
        before.len()
    );
    if err_after > 0 || err_before > 0 {
        text.push_str(&format!("; errors {:.0}% after, {:.0}% before", 100.0 * e1, 100.0 * e0));
    }
    if !calls.is_empty() {
        text.push_str(&format!(" — calls into it: {calls}"));
    }
    Some(Signal {
        source: "traces",
        strength: latency.max(errors),
        evidence: Evidence { kind: EvidenceKind::Trace, text, at: Some(split), spark: None },
    })
}

/// What the diagnosis knows of the series' names: each one's unit, and which are a callers'
/// view of another ([`crate::context::Golden::callers_view_of`]: name → the service's own).
#[derive(Default)]
pub(super) struct Signals<'a> {
    pub units: BTreeMap<&'a str, Unit>,
    pub callers_view: BTreeMap<&'a str, &'a str>,
}

/// Slack added to both sides of a ratio of network times (seconds): a call that took 2 ms on
/// the wire and now takes 6 is not a delay.
const NETWORK_SLACK_S: f64 = 0.010;

/// How much longer, in doublings (with the slack), `after` is than `before` (seconds).
fn doublings(before: f64, after: f64) -> f64 {
    ((after + NETWORK_SLACK_S) / (before + NETWORK_SLACK_S)).log(TRACE_RATIO)
}

/// One call edge's network time (the client span beyond the callee's server span), before and
/// after the split.
struct Wire<'a> {
    from: &'a str,
    to: &'a str,
    /// Medians, seconds, and the calls they are of.
    before: (f64, usize),
    after: (f64, usize),
}

impl Wire<'_> {
    fn change(&self) -> f64 {
        doublings(self.before.0, self.after.0)
    }
}

/// The median, none of nothing.
fn median_of(v: Vec<f64>) -> Option<f64> {
    (!v.is_empty()).then(|| super::anomaly::median(&v))
}

/// The edges with enough calls on both sides of the split.
fn wires<'a>(
    by_edge: &HashMap<(&'a str, &'a str), Vec<(Millis, u64)>>,
    split: Millis,
    quiet: &[(Millis, Millis)],
) -> Vec<Wire<'a>> {
    let mut out: Vec<Wire> = by_edge
        .iter()
        .filter_map(|(&(from, to), calls)| {
            let (mut b, mut a): (Vec<u64>, Vec<u64>) = (Vec::new(), Vec::new());
            for &(t, us) in calls {
                if t >= split {
                    a.push(us);
                } else if !excluded(t, quiet) {
                    b.push(us);
                }
            }
            if b.len() < MIN_BASELINE || a.len() < MIN_INCIDENT {
                return None;
            }
            b.sort_unstable();
            a.sort_unstable();
            let m = |v: &[u64]| traces::quantile(v, 0.5) as f64 / 1e6;
            Some(Wire { from, to, before: (m(&b), b.len()), after: (m(&a), a.len()) })
        })
        .collect();
    out.sort_by(|x, y| (x.from, x.to).cmp(&(y.from, y.to)));
    out
}

/// The network reading of one service from the traces' call edges: the wire of the calls
/// into it (each less how much its caller's calls to others changed: a caller that is slow
/// to send or read slows all its calls), and of the calls out of it to two or more callees (a
/// service slow on the network, or too starved to read its answers, slows them all).
fn wire_reading(service: &str, wires: &[Wire], split: Millis) -> Option<(f64, String)> {
    let others = |from: &str, to: &str| {
        median_of(wires.iter().filter(|w| w.from == from && w.to != to).map(Wire::change).collect()).unwrap_or(0.0)
    };
    let into: Vec<&Wire> = wires.iter().filter(|w| w.to == service).collect();
    let inward = median_of(into.iter().map(|w| w.change() - others(w.from, w.to).max(0.0)).collect());
    let out: Vec<&Wire> = wires.iter().filter(|w| w.from == service).collect();
    let outward = if out.len() >= 2 { median_of(out.iter().map(|w| w.change()).collect()) } else { None };
    let show = |ws: &[&Wire], inward: bool| {
        ws.iter()
            .take(3)
            .map(|w| {
                format!(
                    "{} {} → {} ({} calls after, {} before)",
                    if inward { w.from } else { w.to },
                    format_value(w.before.0, Unit::Seconds),
                    format_value(w.after.0, Unit::Seconds),
                    w.after.1,
                    w.before.1
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    match (inward, outward) {
        (Some(i), o) if i >= o.unwrap_or(f64::MIN) => Some((
            i,
            format!(
                "calls into {service} spent longer on the network after {} (the callers' client span beyond its server span, at the median), from {}",
                hhmm(split),
                show(&into, true)
            ),
        )),
        (_, Some(o)) => Some((
            o,
            format!(
                "{service}'s calls out to all its {} callees spent longer on the network after {} (its client span beyond the callee's server span, at the median): it is slow to send or to read the answers; to {}",
                out.len(),
                hhmm(split),
                show(&out, false)
            ),
        )),
        _ => None,
    }
}

/// The network signal of one service: how much longer the calls into it (or out of it) take
/// on the network than before. From traces ([`wire_reading`]); from metrics, a callers' view
/// series less the service's own. A delay or loss on the service's network shows here and
/// nowhere in its own work.
fn network_signal(
    service: &str,
    wires: &[Wire],
    series: &[&crate::context::Series],
    signals: &Signals,
    split: Millis,
    quiet: &[(Millis, Millis)],
) -> Option<Signal> {
    let mut reads: Vec<(f64, String)> = wire_reading(service, wires, split).into_iter().collect();
    for view in series {
        let Some(own_name) = signals.callers_view.get(view.query.as_str()) else { continue };
        let Some(own) = series.iter().find(|s| s.query == *own_name) else { continue };
        let own: HashMap<Millis, f64> = own.points.iter().copied().collect();
        let gap: Vec<(Millis, f64)> = view
            .points
            .iter()
            .filter(|(t, _)| *t >= split || !excluded(*t, quiet))
            .filter_map(|(t, v)| own.get(t).map(|o| (*t, (v - o).max(0.0))))
            .collect();
        let base: Vec<f64> = gap.iter().filter(|(t, _)| *t < split).map(|p| p.1).collect();
        let inc: Vec<f64> = gap.iter().filter(|(t, _)| *t >= split).map(|p| p.1).collect();
        if base.len() < MIN_BASELINE || inc.is_empty() {
            continue;
        }
        let (Some(g0), Some(g1)) = (median_of(base), median_of(inc)) else { continue };
        let text = format!(
            "{} less {own_name} of {service} (the network into it) went from {} to {} at the median after {}",
            view.query,
            format_value(g0, Unit::Seconds),
            format_value(g1, Unit::Seconds),
            hhmm(split)
        );
        reads.push((doublings(g0, g1), text));
    }
    let (change, text) = reads.into_iter().max_by(|a, b| a.0.total_cmp(&b.0))?;
    Some(Signal {
        source: "network",
        strength: change.max(0.0),
        evidence: Evidence { kind: EvidenceKind::Trace, text, at: Some(split), spark: None },
    })
}

/// Each service's spans (by index, with the time each spent in the service itself, and whether
/// it is a client span) and, per call edge, the network time of its calls. A client span (one child,
/// on another service) is the caller waiting on the wire and on the callee: its time beyond
/// the callee's server span is the network's, not the caller's work.
type SpanSplit<'a> = (HashMap<&'a str, Vec<(usize, u64, bool)>>, HashMap<(&'a str, &'a str), Vec<(Millis, u64)>>);

fn split_spans(spans: &[Span]) -> SpanSplit<'_> {
    let own = traces::exclusive(spans);
    let mut children: HashMap<(&str, &str), (usize, usize)> = HashMap::new();
    for (i, s) in spans.iter().enumerate() {
        if let Some(p) = s.parent.as_deref() {
            let c = children.entry((s.trace_id.as_str(), p)).or_insert((0, i));
            (c.0, c.1) = (c.0 + 1, i);
        }
    }
    let (mut work, mut wire): SpanSplit = Default::default();
    for (i, (s, o)) in spans.iter().zip(own).enumerate() {
        let client = match children.get(&(s.trace_id.as_str(), s.span_id.as_str())) {
            Some(&(1, c)) if spans[c].service != s.service => {
                let callee = &spans[c];
                wire.entry((s.service.as_str(), callee.service.as_str()))
                    .or_default()
                    .push((callee.start, s.duration_us.saturating_sub(callee.duration_us)));
                true
            }
            _ => false,
        };
        work.entry(s.service.as_str()).or_default().push((i, o, client));
    }
    (work, wire)
}

/// Every service of the context, ranked, best first.
pub(super) fn rank(ctx: &Context, split: Millis, quiet: &[(Millis, Millis)], signals: &Signals) -> Vec<Suspect> {
    let mut services: BTreeMap<&str, (Vec<&LogLine>, Vec<&crate::context::Series>)> = BTreeMap::new();
    for l in &ctx.logs {
        services.entry(l.service.as_str()).or_default().0.push(l);
    }
    for s in &ctx.series {
        if let Some(svc) = s.labels.get("service") {
            services.entry(svc.as_str()).or_default().1.push(s);
        }
    }
    for s in &ctx.spans {
        services.entry(s.service.as_str()).or_default();
    }
    let mut pods: HashMap<&str, Vec<&crate::context::Pod>> = HashMap::new();
    for p in &ctx.pods {
        services.entry(p.service.as_str()).or_default();
        pods.entry(p.service.as_str()).or_default().push(p);
    }
    let edges = traces::edge_stats(&ctx.spans, split, Millis::MAX);
    let (by_service, by_edge) = split_spans(&ctx.spans);
    let request = requests(&ctx.spans);
    let wires = wires(&by_edge, split, quiet);
    let mut out: Vec<Suspect> = services
        .iter()
        .map(|(svc, (lines, series))| {
            let spans = by_service.get(svc).map_or(&[][..], Vec::as_slice);
            let work: Vec<(&Span, u64)> =
                spans.iter().filter(|s| !s.2).map(|(i, own, _)| (&ctx.spans[*i], *own)).collect();
            let traced = trace_signal(svc, &work, &edges, split, quiet);
            // Latency that rose while the service's own span time did not is time spent
            // waiting on its dependencies: its latency series are not its signal. A service
            // with too few spans of its own work is judged on all of them, its calls included.
            let waiting = match &traced {
                Some(t) => t.strength < 0.5,
                None => {
                    let all: Vec<(&Span, u64)> = spans.iter().map(|(i, own, _)| (&ctx.spans[*i], *own)).collect();
                    trace_signal(svc, &all, &edges, split, quiet).is_some_and(|t| t.strength < 0.5)
                }
            };
            let mine: Vec<usize> = spans.iter().map(|s| s.0).collect();
            let network = network_signal(svc, &wires, series, signals, split, quiet);
            let mut signals: Vec<Signal> = [
                log_signal(lines, split, quiet),
                metric_signal(series, split, signals, waiting),
                traced,
                path_signal(svc, &mine, &ctx.spans, &request, split, quiet),
                pod_signal(pods.get(svc).map_or(&[][..], Vec::as_slice)),
                network,
            ]
            .into_iter()
            .flatten()
            .collect();
            signals.sort_by(|a, b| b.strength.total_cmp(&a.strength));
            let top = signals.first().map_or(0.0, |s| s.strength);
            let rest: f64 = signals.iter().skip(1).map(|s| s.strength.min(top)).sum();
            Suspect {
                service: svc.to_string(),
                score: top + 0.25 * rest,
                reasons: signals.iter().map(|s| format!("{} {:.1}", s.source, s.strength)).collect(),
                strong: signals.iter().filter(|s| s.strength >= 1.0).count(),
                halved: false,
                top: signals.first().map_or("", |s| s.source),
                evidence: signals.into_iter().filter(|s| s.strength >= 0.5).map(|s| s.evidence).collect(),
            }
        })
        .collect();
    demote_symptoms(&mut out, &ctx.topology);
    out.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.service.cmp(&b.service)));
    out
}

/// The services `from` calls, directly or through others, at most `hops` calls down.
fn within<'e>(edges: &'e [Edge], from: &str, hops: usize) -> Vec<&'e str> {
    let mut seen: Vec<&str> = Vec::new();
    let mut frontier: Vec<&str> = vec![from];
    for _ in 0..hops {
        let mut next: Vec<&str> = Vec::new();
        for e in edges.iter().filter(|e| frontier.contains(&e.from.as_str()) && e.to != from) {
            if !seen.contains(&e.to.as_str()) {
                seen.push(&e.to);
                next.push(&e.to);
            }
        }
        frontier = next;
    }
    seen
}

/// Symptoms, decided on the scores before any halving. Slowness, errors and failed calls travel
/// up the call graph: a clearly anomalous service that depends (directly or up to three calls
/// down) on another one anomalous by those is more likely its symptom. A change in what a
/// service is asked travels down: a service whose strongest signal is only the mix of its
/// spans, called directly by a clearly anomalous service, is more likely that caller's
/// symptom. Either way its score is halved.
fn demote_symptoms(suspects: &mut [Suspect], edges: &[Edge]) {
    let before: HashMap<String, (f64, &'static str)> =
        suspects.iter().map(|s| (s.service.clone(), (s.score, s.top))).collect();
    for s in suspects.iter_mut().filter(|s| s.score >= 1.0) {
        let below = within(edges, &s.service, 3);
        let worst = below
            .iter()
            .filter_map(|c| before.get(*c).map(|v| (*c, *v)))
            .filter(|(_, (v, top))| *v >= 1.0 && *top != "spans")
            .max_by(|a, b| a.1.0.total_cmp(&b.1.0));
        let caller = (s.top == "spans")
            .then(|| {
                edges
                    .iter()
                    .filter(|e| e.to == s.service && e.from != s.service)
                    .filter_map(|e| before.get(&e.from).map(|v| (e.from.as_str(), v.0)))
                    .filter(|(_, v)| *v >= 1.0)
                    .max_by(|a, b| a.1.total_cmp(&b.1))
            })
            .flatten();
        let reason = match (worst, caller) {
            (Some((callee, (v, _))), _) => format!("halved: it depends on {callee}, anomalous too ({v:.1})"),
            (None, Some((c, v))) => {
                format!("halved: only the mix of its spans changed, and its caller {c} changed clearly ({v:.1})")
            }
            (None, None) => continue,
        };
        s.score *= 0.5;
        s.reasons.push(reason);
        s.halved = true;
    }
}

/// The hypothesis that the top-ranked service is the cause, when one clearly changed and the
/// context saw across services (traces, or logs of several services); else `None`, and the
/// metrics-only topology method speaks.
pub(super) fn hypothesis(f: &super::Facts) -> Option<super::Hypothesis> {
    let across = !f.ctx.spans.is_empty() || f.ctx.logs.iter().any(|l| Some(l.service.as_str()) != f.main());
    let top = f.suspects.first().filter(|s| across && s.score >= 1.0)?;
    let second = f.suspects.get(1);
    let mut odds = super::Odds::new(
        -1.0,
        format!(
            "{} ranks first of {} services by what changed when the incident started",
            top.service,
            f.suspects.len()
        ),
    );
    odds.add(
        top.score.ln().min(1.5),
        format!("its change scores {:.1} (1 = clearly changed): {}", top.score, top.reasons.join(", ")),
    );
    match second {
        Some(n) if n.score < 0.5 * top.score => {
            odds.add(1.0, format!("well ahead of the next, {} ({:.1})", n.service, n.score))
        }
        Some(n) => odds.add(-0.5, format!("close to the next, {} ({:.1})", n.service, n.score)),
        None => {}
    }
    let strong = top.strong;
    if strong > 1 {
        odds.add(0.5 * (strong - 1) as f64, format!("{strong} kinds of evidence agree"));
    }
    let s = &top.service;
    let symptom = match f.main() {
        Some(m) if m != s => format!(" {m}'s alert is likely a symptom."),
        _ => String::new(),
    };
    let mut evidence = top.evidence.clone();
    for n in f.suspects.iter().skip(1).take(2) {
        odds.reasons.push(format!("next in rank: {} ({:.1}: {})", n.service, n.score, n.reasons.join(", ")));
    }
    evidence.extend(f.alert_ev.iter().cloned());
    evidence.extend(f.context_ev.iter().cloned());
    let below = if top.halved {
        ", though a service it depends on changed too"
    } else {
        ", and nothing it depends on changed as much"
    };
    Some(super::Hypothesis {
        statement: format!(
            "The cause is likely in {s}: of the {} services seen, it changed most when the incident started{below}.{symptom}",
            f.suspects.len()
        ),
        confidence: odds.confidence(),
        runbook: None,
        service: Some(s.clone()),
        tier: 5,
        evidence,
        reasons: odds.reasons,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::traces::span;

    fn line(at: Millis, service: &str, text: &str) -> LogLine {
        LogLine { at, service: service.into(), line: text.into() }
    }

    #[test]
    fn a_new_error_pattern_in_one_service_ranks_it_first_and_its_caller_is_a_symptom() {
        let mut logs = Vec::new();
        for m in 0..20 {
            for i in 0..5 {
                let at = m * 60_000 + i * 1000;
                logs.push(line(at, "orders", &format!("INFO order {i} placed for user {m}")));
                logs.push(line(at, "contacts", &format!("INFO contact {i} found")));
            }
        }
        for m in 20..23 {
            for i in 0..5 {
                let at = m * 60_000 + i * 1000;
                logs.push(line(at, "orders", &format!("ERROR order {i} failed: contacts returned 500")));
                logs.push(line(at, "contacts", &format!("ERROR No contacts according to contactsId {i}")));
            }
        }
        let ctx = Context {
            logs,
            topology: vec![Edge { from: "orders".into(), to: "contacts".into() }],
            ..Default::default()
        };
        let r = rank(&ctx, 20 * 60_000, &[], &Signals::default());
        assert_eq!(r[0].service, "contacts", "{r:#?}");
        assert!(r[1].reasons.iter().any(|x| x.starts_with("halved: it depends on contacts")), "{r:#?}");
        let t = &r[0].evidence[0].text;
        assert!(
            t.starts_with("log pattern new at 00:20 UTC: \"ERROR No contacts according to contactsId <*>\""),
            "{t}"
        );

        // Past incidents' windows are not baseline: the same errors then do not hide them now.
        let mut again = ctx.clone();
        again.logs.extend(
            (0..15).map(|i| line(5 * 60_000 + i * 1000, "contacts", "ERROR No contacts according to contactsId 9")),
        );
        let quiet = [(5 * 60_000, 6 * 60_000)];
        assert_eq!(rank(&again, 20 * 60_000, &quiet, &Signals::default())[0].service, "contacts");
    }

    /// A service that logged only a minute before the split (data had just begun): a template
    /// that is new and frequent after it is still a clear change, but a rare line seen once or
    /// twice is not, because a short baseline may simply have missed it.
    #[test]
    fn a_short_baseline_still_shows_a_clear_change_but_not_a_rare_line() {
        let mut before: Vec<LogLine> =
            (0..12).map(|i| line(i * 5_000, "contacts", &format!("INFO contact {i} found"))).collect();
        let after = |bad: i64| -> Vec<LogLine> {
            (0..40)
                .map(|i| {
                    let text = if i % 20 < bad {
                        format!("ERROR No contacts according to contactsId {i}")
                    } else {
                        format!("INFO contact {i} found")
                    };
                    line(60_000 + i * 3_000, "contacts", &text)
                })
                .collect()
        };
        let score = |lines: &[LogLine]| {
            let refs: Vec<&LogLine> = lines.iter().collect();
            log_signal(&refs, 60_000, &[]).map(|s| (s.strength, s.evidence.text))
        };
        let storm = [before.clone(), after(10)].concat();
        let (strength, text) = score(&storm).expect("12 baseline lines are enough to read");
        assert!(strength >= 1.0 && text.starts_with("log pattern new"), "{strength} {text}");
        let (strength, text) = score(&[before.clone(), after(1)].concat()).expect("read");
        assert!(strength < 1.0, "two lines after a 12-line baseline: {strength} {text}");
        // A baseline of fewer than 10 lines is not read at all.
        before.truncate(9);
        assert!(score(&[before, after(10)].concat()).is_none());
    }

    #[test]
    fn a_slow_service_shows_in_its_own_time_not_its_callers() {
        let mut spans = Vec::new();
        for i in 0..60 {
            let at = i * 30_000;
            let slow = at >= 20 * 60_000;
            let t = format!("t{i}");
            let db = if slow { 400_000 } else { 2_000 };
            spans.push(span(&t, "a", None, "frontend", at, 3_000 + 1_000 + db));
            spans.push(span(&t, "b", Some("a"), "checkout", at, 1_000 + db));
            spans.push(span(&t, "c", Some("b"), "payments", at, db));
        }
        let ctx = Context { topology: traces::edges(&spans), spans, ..Default::default() };
        let r = rank(&ctx, 20 * 60_000, &[], &Signals::default());
        assert_eq!(r[0].service, "payments", "{r:#?}");
        assert!(r[0].score >= 1.0 && r[1].score < 0.5, "{r:#?}");
        let t = &r[0].evidence[0].text;
        assert!(t.starts_with("spans of payments spent 400.0 ms in the service itself at the median"), "{t}");
        assert!(t.contains("checkout → payments: 20 calls, p90 400.0 ms"), "{t}");
    }

    /// How a system names its spans: OnlineBoutique's gRPC (a client span on the caller and a
    /// server span on the callee, both named after the method) or TrainTicket's HTTP (a client
    /// span `HTTP POST`, a server span named after the route).
    #[derive(Clone, Copy, Debug)]
    enum Naming {
        Grpc,
        Http,
    }

    impl Naming {
        fn client(self, method: &str) -> String {
            match self {
                Naming::Grpc => format!("hipstershop.{method}"),
                Naming::Http => "HTTP POST".into(),
            }
        }

        fn server(self, method: &str) -> String {
            match self {
                Naming::Grpc => format!("hipstershop.{method}"),
                Naming::Http => format!("/api/v1/{}", method.to_lowercase()),
            }
        }
    }

    /// `calls` are (caller, callee, method, the callee's own µs, µs on the wire); each trace is
    /// one frontend request making them.
    fn traces_of(
        naming: Naming,
        split_at: i64,
        calls: impl Fn(bool, i64) -> Vec<(&'static str, &'static str, &'static str, u64, u64)>,
    ) -> Vec<Span> {
        let mut spans = Vec::new();
        for i in 0..160 {
            let at = i * 15_000;
            let after = at >= split_at;
            let t = format!("t{i}");
            let mut total = 1_000;
            let mut kids = Vec::new();
            for (k, (from, to, method, own, wire)) in calls(after, i).into_iter().enumerate() {
                let (client, server) = (format!("c{k}"), format!("s{k}"));
                // Calls from the frontend are made by its request; others by the first call's server span.
                let parent = if from == "frontend" { "root" } else { "s0" };
                let mut c = span(&t, &client, Some(parent), from, at, own + wire);
                c.operation = naming.client(method);
                let mut sv = span(&t, &server, Some(&client), to, at, own);
                sv.operation = naming.server(method);
                total += own + wire;
                kids.push(c);
                kids.push(sv);
            }
            let mut root = span(&t, "root", None, "frontend", at, total);
            root.operation = naming.server("Frontend/Recv");
            spans.push(root);
            spans.extend(kids);
        }
        spans
    }

    fn ranked(spans: Vec<Span>) -> Vec<Suspect> {
        let ctx = Context { topology: traces::edges(&spans), spans, ..Default::default() };
        rank(&ctx, 20 * 60_000, &[], &Signals::default())
    }

    #[test]
    fn a_network_delay_on_a_pod_shows_in_the_calls_into_it_not_in_its_own_work() {
        for naming in [Naming::Grpc, Naming::Http] {
            let r = ranked(traces_of(naming, 20 * 60_000, |after, _| {
                let delay = if after { 200_000 } else { 3_000 };
                vec![
                    ("frontend", "cartservice", "CartService/GetCart", 1_500, delay),
                    ("frontend", "currencyservice", "CurrencyService/Convert", 1_000, 3_000),
                    ("frontend", "adservice", "AdService/GetAds", 2_000, 2_000),
                ]
            }));
            assert_eq!((r[0].service.as_str(), r[0].top), ("cartservice", "network"), "{naming:?}: {r:#?}");
            let t = &r[0].evidence[0].text;
            assert!(t.starts_with("calls into cartservice spent longer on the network"), "{t}");
            assert!(t.contains("from frontend 3 ms → 200 ms"), "{t}");
            assert!(r.iter().skip(1).all(|s| s.score < 1.0), "the caller waits, the others are fine: {r:#?}");
        }
    }

    #[test]
    fn a_starved_caller_slows_every_call_it_makes_and_is_blamed_not_its_callees() {
        for naming in [Naming::Grpc, Naming::Http] {
            let r = ranked(traces_of(naming, 20 * 60_000, |after, _| {
                let slow = if after { 80_000 } else { 2_000 };
                vec![
                    ("frontend", "cartservice", "CartService/GetCart", 1_500, slow),
                    ("frontend", "currencyservice", "CurrencyService/Convert", 1_000, slow),
                    ("frontend", "adservice", "AdService/GetAds", 2_000, slow),
                ]
            }));
            assert_eq!(r[0].service, "frontend", "{naming:?}: {r:#?}");
            let t = &r[0].evidence[0].text;
            assert!(t.starts_with("frontend's calls out to all its 3 callees spent longer"), "{t}");
            assert!(r.iter().skip(1).all(|s| s.score < 1.0), "{r:#?}");
        }
    }

    #[test]
    fn an_error_return_shows_as_work_that_stopped_in_the_service_that_returned() {
        // checkout charges the card, then ships; after the split it returns an error after
        // the charge in every other order, so shipping is asked less often, but no differently.
        for naming in [Naming::Grpc, Naming::Http] {
            let r = ranked(traces_of(naming, 20 * 60_000, |after, i| {
                let mut calls = vec![
                    ("frontend", "checkoutservice", "CheckoutService/PlaceOrder", 5_000, 2_000),
                    ("checkoutservice", "paymentservice", "PaymentService/Charge", 1_000, 2_000),
                ];
                if !after || i % 2 == 0 {
                    calls.push(("checkoutservice", "shippingservice", "ShippingService/ShipOrder", 1_000, 2_000));
                }
                calls
            }));
            assert_eq!((r[0].service.as_str(), r[0].top), ("checkoutservice", "spans"), "{naming:?}: {r:#?}");
            let t = &r[0].evidence[0].text;
            let expected =
                format!("per {} request it served, checkoutservice made", naming.server("CheckoutService/PlaceOrder"));
            assert!(t.starts_with(&expected), "{t}");
            assert!(r.iter().find(|s| s.service == "shippingservice").is_none_or(|s| s.score < 1.0), "{r:#?}");
        }
    }

    #[test]
    fn error_handling_that_stops_is_not_a_defect_but_error_handling_that_starts_is() {
        let run = |before_errors: bool| {
            ranked(traces_of(Naming::Grpc, 20 * 60_000, move |after, i| {
                let mut calls = vec![("frontend", "cartservice", "CartService/GetCart", 1_500, 2_000)];
                if (after != before_errors) && i % 2 == 0 {
                    calls.push(("frontend", "adservice", "AdService/ErrorHandler.error", 1_000, 2_000));
                }
                calls
            }))
        };
        let stopped = run(true);
        assert!(stopped.iter().all(|s| s.score < 1.0), "{stopped:#?}");
        let started = run(false);
        assert_eq!(started[0].service, "frontend", "{started:#?}");
        assert!(started[0].score >= 1.0, "{started:#?}");
    }

    #[test]
    fn without_traces_the_network_shows_in_the_callers_view_of_a_service() {
        let series = |name: &str, f: &dyn Fn(i64) -> f64| crate::context::Series {
            query: name.into(),
            labels: [("service".to_string(), "cartservice".to_string())].into(),
            points: (0..40).map(|m| (m * 60_000, f(m))).collect(),
        };
        let wobble = |m: i64| 0.001 * (m % 3) as f64;
        let ctx = Context {
            series: vec![
                series("latency_p50_served", &|m| 0.003 + wobble(m)),
                series("latency_p50_by_callers", &|m| if m >= 30 { 0.24 } else { 0.006 + wobble(m) }),
            ],
            ..Default::default()
        };
        let signals = Signals {
            units: [("latency_p50_served", Unit::Seconds), ("latency_p50_by_callers", Unit::Seconds)].into(),
            callers_view: [("latency_p50_by_callers", "latency_p50_served")].into(),
        };
        let r = rank(&ctx, 30 * 60_000, &[], &signals);
        assert_eq!((r[0].service.as_str(), r[0].top), ("cartservice", "network"), "{r:#?}");
        assert!(r[0].score >= 1.0, "{r:#?}");
        let t = &r[0].evidence[0].text;
        assert!(t.starts_with("latency_p50_by_callers less latency_p50_served of cartservice (the network into it) went from 3 ms to 236 ms"), "{t}");
    }

    #[test]
    fn a_crash_looping_pod_is_a_clear_change_by_itself() {
        let pod = |service: &str, reason: Option<&str>| crate::context::Pod {
            name: format!("{service}-5f6585d649-fnmft"),
            service: service.into(),
            phase: "Running".into(),
            reason: reason.map(str::to_string),
            restarts: if reason.is_some() { 7 } else { 0 },
            last_termination: reason.map(|_| "Error (exit 1) at 14:02".to_string()),
            events: Vec::new(),
        };
        let ctx = Context {
            pods: vec![pod("cartservice", None), pod("adservice", Some("CrashLoopBackOff"))],
            ..Default::default()
        };
        let r = rank(&ctx, 20 * 60_000, &[], &Signals::default());
        assert_eq!((r[0].service.as_str(), r[0].top), ("adservice", "pods"), "{r:#?}");
        assert!(r[0].evidence[0].text.contains("CrashLoopBackOff (7 restarts)"), "{r:#?}");
        assert_eq!(r[1].score, 0.0, "{r:#?}");
    }
}
