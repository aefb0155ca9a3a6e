//! Method: log patterns. The service's log lines grouped by the template miner ([`super::logs`]);
//! a pattern is evidence when it is new since the change, when its rate jumped at the onset, or
//! when it reads like an error; in that order, three at most.

use super::{Evidence, EvidenceKind, hhmm, logs};
use crate::alert::Change;
use crate::context::LogLine;
use crate::time::Millis;
use std::collections::BTreeMap;

pub(super) struct LogPattern {
    template: String,
    count: usize,
    /// Lines before the split time (the onset).
    before: usize,
    first_at: Millis,
    example: String,
}

impl LogPattern {
    /// Lines per minute before and after `split`, when the rate after is at least three times
    /// the rate before and at least five lines: "rate jumped".
    fn jump(&self, start: Millis, split: Millis, end: Millis) -> Option<(f64, f64)> {
        let per_min = |n: usize, ms: Millis| n as f64 * 60_000.0 / ms.max(60_000) as f64;
        let (before, after) = (per_min(self.before, split - start), per_min(self.count - self.before, end - split));
        (self.before > 0 && self.count - self.before >= 5 && after >= 3.0 * before).then_some((before, after))
    }
}

/// The lines grouped by the template miner ([`logs::Miner`]), most frequent first; `split`
/// divides each count into before and after.
fn patterns(lines: &[LogLine], split: Millis) -> Vec<LogPattern> {
    let mut miner = logs::Miner::new(logs::Config::default());
    let mut by: BTreeMap<usize, LogPattern> = BTreeMap::new();
    for l in lines {
        let g = miner.add(&l.line);
        by.entry(g)
            .and_modify(|p| {
                p.count += 1;
                p.before += usize::from(l.at < split);
                p.first_at = p.first_at.min(l.at);
            })
            .or_insert(LogPattern {
                template: String::new(),
                count: 1,
                before: usize::from(l.at < split),
                first_at: l.at,
                example: l.line.clone(),
            });
    }
    // Groups merged as the lines came are one pattern.
    let mut merged: BTreeMap<usize, LogPattern> = BTreeMap::new();
    for (g, p) in by {
        match merged.entry(miner.root(g)) {
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(p);
            }
            std::collections::btree_map::Entry::Occupied(mut e) => {
                let m = e.get_mut();
                m.count += p.count;
                m.before += p.before;
                if p.first_at < m.first_at {
                    (m.first_at, m.example) = (p.first_at, p.example);
                }
            }
        }
    }
    let mut v: Vec<LogPattern> = merged
        .into_iter()
        .map(|(g, mut p)| {
            p.template = miner.template(g);
            p
        })
        .collect();
    v.sort_by(|a, b| b.count.cmp(&a.count).then(a.first_at.cmp(&b.first_at)));
    v
}

/// The evidence of `lines` (the service's) around `onset`, each with whether it is new since
/// `latest_change`; `window` is the gathered range.
pub(super) fn evidence(
    lines: &[LogLine],
    onset: Millis,
    latest_change: Option<&Change>,
    window: (Millis, Millis),
) -> Vec<(bool, Evidence)> {
    let error_like =
        regex::Regex::new(r"(?i)error|exception|fail|panic|fatal|timeout|timed out|refused|exhausted|killed|denied")
            .expect("a valid regex");
    let is_new = |p: &LogPattern| latest_change.is_some_and(|c| p.first_at >= c.at);
    let jump = |p: &LogPattern| p.jump(window.0, onset, window.1.max(onset + 60_000));
    let mut found: Vec<LogPattern> = patterns(lines, onset)
        .into_iter()
        .filter(|p| is_new(p) || jump(p).is_some() || error_like.is_match(&p.template))
        .collect();
    found.sort_by_key(|p| (!is_new(p), jump(p).is_none()));
    found
        .iter()
        .take(3)
        .map(|p| {
            let new = is_new(p);
            let since = match jump(p) {
                _ if new => "new since the change".to_string(),
                Some((a, b)) => format!("whose rate jumped from {a:.1}/min to {b:.1}/min at the onset"),
                None => "seen".to_string(),
            };
            let text = format!(
                "log pattern {since}, {}× from {}: \"{}\" (e.g. \"{}\")",
                p.count,
                hhmm(p.first_at),
                p.template,
                p.example
            );
            (new, Evidence { kind: EvidenceKind::Log, text, at: Some(p.first_at), spark: None })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(at: Millis, text: &str) -> LogLine {
        LogLine { at, service: "checkout".into(), line: text.into() }
    }

    #[test]
    fn a_pattern_new_since_the_change_comes_first() {
        let mut lines: Vec<LogLine> = (0..10).map(|i| line(i * 60_000, &format!("GET /health 200 in {i}ms"))).collect();
        lines.extend((0..6).map(|i| line(20 * 60_000 + i * 1000, &format!("ERROR pool exhausted: waited {i}ms"))));
        let change = crate::diagnosis::changes::deploy("checkout", 15 * 60_000);
        let ev = evidence(&lines, 20 * 60_000, Some(&change), (0, 30 * 60_000));
        assert!(ev[0].0, "new since the change");
        assert!(ev[0].1.text.starts_with("log pattern new since the change, 6× from 00:20 UTC"), "{}", ev[0].1.text);
        assert!(ev.iter().all(|(_, e)| !e.text.contains("/health")), "a steady, ordinary pattern is not evidence");
    }
}
