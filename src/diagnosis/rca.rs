//! Method: root cause across services. Every service the context saw is scored on what
//! changed at the incident's start (the split), against its own baseline before it:
//!
//! - **logs**: its lines grouped into patterns (by the code location a line names, else by the
//!   template miner on its first words); a pattern whose count after the split left what its
//!   baseline share predicts (new, gone, up or down), in σ of Anscombe's transform for two
//!   Poisson counts (a short baseline's own error counts), beyond how much that share wobbles
//!   between baseline minutes;
//! - **metrics**: its golden signals, how far the incident's values left the baseline's median,
//!   in robust σ (with a floor per unit, so an idle service's tiny wobble is not a signal);
//!   latency does not count for a service whose own span time did not change (it is waiting);
//! - **traces**: the time its spans spent in the service itself (not waiting for callees) and
//!   their error ratio, before and after; the calls into it show where in the call tree the
//!   change starts.
//!
//! Each signal becomes a strength (1 = clearly changed); a service's score is its strongest
//! signal plus a quarter of the others (agreement between sources). Then the topology: a service
//! that depends (up to three calls down) on another clearly anomalous one is more likely a
//! symptom than the cause, and its score is halved. Baselines leave out the times past incidents of the same kind were
//! open. Every number that went into a rank is in its reasons.

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
    /// Halved as a likely symptom of a dependency that changed too.
    #[serde(skip)]
    pub halved: bool,
    #[serde(skip)]
    pub evidence: Vec<Evidence>,
}

/// A log pattern's z, in standard errors, that counts as a clear change.
const LOG_Z: f64 = 4.0;
/// A metric's distance from its baseline median, in robust σ, that counts as a clear change.
const METRIC_Z: f64 = 8.0;
/// Own-time growth that counts as a clear change (×2).
const TRACE_RATIO: f64 = 2.0;
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
    units: &BTreeMap<&str, Unit>,
    waiting: bool,
) -> Option<Signal> {
    let mut best: Option<Signal> = None;
    for s in series {
        let unit = units.get(s.query.as_str()).copied().unwrap_or_default();
        if waiting && unit == Unit::Seconds {
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
    // A millisecond of slack: a 0.1 → 0.3 ms change is not a slow service.
    let ratio = (p1 as f64 + 1000.0) / (p0 as f64 + 1000.0);
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

/// Every service of the context, ranked, best first.
pub(super) fn rank(
    ctx: &Context,
    split: Millis,
    quiet: &[(Millis, Millis)],
    units: &BTreeMap<&str, Unit>,
) -> Vec<Suspect> {
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
    let own = traces::exclusive(&ctx.spans);
    let edges = traces::edge_stats(&ctx.spans, split, Millis::MAX);
    let mut by_service: HashMap<&str, Vec<(&Span, u64)>> = HashMap::new();
    for (s, o) in ctx.spans.iter().zip(own) {
        by_service.entry(s.service.as_str()).or_default().push((s, o));
    }
    let mut out: Vec<Suspect> = services
        .iter()
        .map(|(svc, (lines, series))| {
            let traced = trace_signal(svc, by_service.get(svc).map_or(&[][..], Vec::as_slice), &edges, split, quiet);
            // Latency that rose while the service's own span time did not is time spent
            // waiting on its dependencies: its latency series are not its signal.
            let waiting = traced.as_ref().is_some_and(|t| t.strength < 0.5);
            let mut signals: Vec<Signal> =
                [log_signal(lines, split, quiet), metric_signal(series, split, units, waiting), traced]
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

/// A clearly anomalous service that depends on another clearly anomalous one (directly or up to
/// three calls down) is more likely its symptom: its score is halved (decided on the scores
/// before any halving).
fn demote_symptoms(suspects: &mut [Suspect], edges: &[Edge]) {
    let score: HashMap<String, f64> = suspects.iter().map(|s| (s.service.clone(), s.score)).collect();
    for s in suspects.iter_mut().filter(|s| s.score >= 1.0) {
        let below = within(edges, &s.service, 3);
        let worst = below
            .iter()
            .filter_map(|c| score.get(*c).map(|v| (*c, *v)))
            .filter(|(_, v)| *v >= 1.0)
            .max_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((callee, v)) = worst {
            s.score *= 0.5;
            s.reasons.push(format!("halved: it depends on {callee}, anomalous too ({v:.1})"));
            s.halved = true;
        }
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
        let r = rank(&ctx, 20 * 60_000, &[], &BTreeMap::new());
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
        assert_eq!(rank(&again, 20 * 60_000, &quiet, &BTreeMap::new())[0].service, "contacts");
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
        let r = rank(&ctx, 20 * 60_000, &[], &BTreeMap::new());
        assert_eq!(r[0].service, "payments", "{r:#?}");
        assert!(r[0].score >= 1.0 && r[1].score < 0.5, "{r:#?}");
        let t = &r[0].evidence[0].text;
        assert!(t.starts_with("spans of payments spent 400.0 ms in the service itself at the median"), "{t}");
        assert!(t.contains("checkout → payments: 20 calls, p90 400.0 ms"), "{t}");
    }
}
