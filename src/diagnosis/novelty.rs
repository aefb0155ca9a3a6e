//! Context novelty: a streaming detector that asks "have I seen this *sequence* before?" rather
//! than "is this value far from the expected one?". It is the idea of Smirnov's Contextual
//! Anomaly Detector (CAD OSE, third on NAB's scoreboard), written afresh for medic.
//!
//! Each value becomes a few *facts* (its level on a coarse scale, one fact per bit). A *context*
//! joins what was true at the last step (its facts, plus the contexts that were active then) to
//! the facts of this step. The detector remembers every context it has seen; at each step it
//! counts how many of the contexts whose left side fully held last step are confirmed by this
//! step, and how many contexts it has to learn. Anomaly = (1 − confirmed share + new share) / 2:
//! a series that keeps doing what it did scores near 0, a series entering a new regime, or an old
//! level in a new order, scores high. Every point's score can be explained by the two shares.
//!
//! After a score at or above the threshold, scores are held at 0 for a rest period: the same event
//! is not news twice.
//!
//! [`Flatline`] asks a third question: "has this series ever stood still this long?". A metric
//! that repeats one exact value for longer than ever before (after it has been seen to move) is
//! stuck: a dead exporter, a hung process, a disk that stopped writing. [`Combined`] joins the
//! three.

use super::anomaly::{Config, Detector, Score};
use std::collections::{HashMap, HashSet};

/// Settings; the defaults are CAD OSE's published ones.
#[derive(Debug, Clone, Copy)]
pub struct NoveltyConfig {
    /// The range values are expected in; values outside are clamped to its edges.
    pub min: f64,
    pub max: f64,
    /// Levels are 2^bits steps across the range; each bit is one fact.
    pub bits: u32,
    /// A left side with more matched facts than this does not seed new contexts.
    pub max_left: usize,
    /// How many of the most-confirmed active contexts carry over as facts to the next step.
    pub max_active: usize,
    /// A score at or above this starts a rest period.
    pub threshold: f64,
    /// Points held at 0 after a score at or above the threshold (also at the start).
    pub rest: usize,
}

impl NoveltyConfig {
    pub fn new(min: f64, max: f64, rest: usize) -> NoveltyConfig {
        NoveltyConfig { min, max, bits: 3, max_left: 7, max_active: 15, threshold: 0.75, rest }
    }
}

/// A fact that stands for an active context rather than a value bit.
const CONTEXT_FACT: u64 = 1 << 31;

/// One half of a context: a set of facts, and how many of them hold at the current step.
#[derive(Debug, Default)]
struct Half {
    facts: Vec<u64>,
    held: u32,
    /// Left halves only: (right half, context) pairs, in the order they were learned.
    contexts: Vec<(u32, u32)>,
}

/// Every left (or every right) half the detector has learned, indexed by fact.
#[derive(Debug, Default)]
struct Side {
    ids: HashMap<Vec<u64>, u32>,
    halves: Vec<Half>,
    by_fact: HashMap<u64, Vec<u32>>,
    /// The halves with at least one fact holding, in id order.
    touched: Vec<u32>,
    /// The facts that hold (sorted).
    holding: Vec<u64>,
}

impl Side {
    /// The half with exactly these facts (sorted), learned if new.
    fn intern(&mut self, facts: &[u64]) -> u32 {
        if let Some(&id) = self.ids.get(facts) {
            return id;
        }
        let id = self.halves.len() as u32;
        self.halves.push(Half { facts: facts.to_vec(), ..Half::default() });
        for f in facts {
            self.by_fact.entry(*f).or_default().push(id);
        }
        self.ids.insert(facts.to_vec(), id);
        id
    }

    /// Counts, for each half, how many of its facts hold now.
    fn hold(&mut self, facts: &[u64]) {
        for id in self.touched.drain(..) {
            self.halves[id as usize].held = 0;
        }
        self.holding.clear();
        self.holding.extend_from_slice(facts);
        let mut any = false;
        for f in facts {
            for &id in self.by_fact.get(f).map(Vec::as_slice).unwrap_or_default() {
                self.halves[id as usize].held += 1;
                any = true;
            }
        }
        // Most halves share a fact with any step, so a scan in id order beats sorting.
        if any {
            self.touched.extend((0..self.halves.len() as u32).filter(|id| self.halves[*id as usize].held > 0));
        }
    }

    fn full(&self, id: u32) -> bool {
        let h = &self.halves[id as usize];
        h.held as usize == h.facts.len()
    }
}

/// The facts two sorted lists share, in order.
fn common(a: &[u64], b: &[u64]) -> Vec<u64> {
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                (i, j) = (i + 1, j + 1);
            }
        }
    }
    out
}

#[derive(Debug, Clone, Copy)]
struct Context {
    seen: u32,
    /// Learned from a raw step (left facts → right facts), not from a crossing of two others;
    /// only those seed new contexts.
    raw: bool,
}

/// The streaming context-novelty detector (see the module docs).
#[derive(Debug)]
pub struct Novelty {
    cfg: NoveltyConfig,
    step: f64,
    left: Side,
    right: Side,
    pairs: HashMap<(u32, u32), u32>,
    contexts: Vec<Context>,
    /// Last step's facts and active contexts: the left side of this step's raw context.
    last: Vec<u64>,
    rest: Rest,
}

/// Holds scores at 0 for `rest` points after one at or above `threshold`, and at the start.
#[derive(Debug)]
struct Rest {
    rest: usize,
    threshold: f64,
    /// Steps since the last score at or above the threshold (the start counts as one).
    since_high: usize,
}

impl Rest {
    fn new(cfg: &NoveltyConfig) -> Rest {
        Rest { rest: cfg.rest, threshold: cfg.threshold, since_high: 0 }
    }

    /// The score to report for `raw`.
    fn pass(&mut self, raw: f64) -> f64 {
        let resting = self.since_high < self.rest;
        self.since_high = if raw >= self.threshold { 0 } else { self.since_high + 1 };
        if resting { 0.0 } else { raw }
    }
}

/// What the detector says about one point, and why.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NoveltyScore {
    /// 0–1, after the rest period.
    pub score: f64,
    /// Before the rest period.
    pub raw: f64,
    /// Share of the contexts expected from the last step that this step confirmed.
    pub confirmed: f64,
    /// Share of the candidate contexts this step that were new.
    pub new: f64,
}

impl Novelty {
    pub fn new(cfg: NoveltyConfig) -> Novelty {
        let levels = ((1u64 << cfg.bits) - 1) as f64;
        let range = if cfg.max > cfg.min { cfg.max - cfg.min } else { levels };
        Novelty {
            cfg,
            step: range / levels,
            left: Side::default(),
            right: Side::default(),
            pairs: HashMap::new(),
            contexts: Vec::new(),
            last: Vec::new(),
            rest: Rest::new(&cfg),
        }
    }

    /// The facts for a value: bit `b` of its level gives fact `2b` or `2b + 1`.
    fn facts(&self, x: f64) -> Vec<u64> {
        let top = (1u64 << self.cfg.bits) - 1;
        let level = ((x - self.cfg.min) / self.step).clamp(0.0, top as f64) as u64;
        (0..self.cfg.bits as u64).map(|b| 2 * b + ((level >> b) & 1)).collect()
    }

    /// The context joining `l` to `r`: (id, whether it is new).
    fn learn(&mut self, l: &[u64], r: &[u64], raw: bool) -> (u32, bool) {
        let (li, ri) = (self.left.intern(l), self.right.intern(r));
        if let Some(&id) = self.pairs.get(&(li, ri)) {
            if raw {
                self.contexts[id as usize].raw = true;
            }
            return (id, false);
        }
        let id = self.contexts.len() as u32;
        self.contexts.push(Context { seen: 0, raw });
        self.pairs.insert((li, ri), id);
        self.left.halves[li as usize].contexts.push((ri, id));
        (id, true)
    }

    /// Feeds one point; returns its score.
    pub fn push(&mut self, x: f64) -> NoveltyScore {
        let s = self.step(x);
        if !x.is_finite() {
            return s;
        }
        NoveltyScore { score: self.rest.pass(s.raw), ..s }
    }

    /// Feeds one point and learns from it, without the rest period (`score` is `raw`): for a
    /// detector that rests on its own, as [`Combined`] does.
    fn step(&mut self, x: f64) -> NoveltyScore {
        if !x.is_finite() {
            return NoveltyScore { score: 0.0, raw: 0.0, confirmed: 0.0, new: 0.0 };
        }
        let now = self.facts(x);
        // The raw context of this step; a new one is not expected to confirm itself.
        let last = std::mem::take(&mut self.last);
        let (fresh, raw_new) = match last.is_empty() {
            true => (None, false),
            false => match self.learn(&last, &now, true) {
                (id, true) => (Some(id), true),
                (_, false) => (None, false),
            },
        };
        let mut candidates: Vec<(Vec<u64>, Vec<u64>)> = Vec::new();
        self.right.hold(&now);
        // Which learned contexts were expected (left side fully held last step) and which came
        // true; partial matches of raw contexts are candidates for new, smaller contexts.
        let (mut expected, mut active) = (0usize, Vec::new());
        for &li in &self.left.touched {
            let lh = &self.left.halves[li as usize];
            let left_full = lh.held as usize == lh.facts.len();
            // A half that did not fully hold only seeds candidates, and only on a new raw step.
            if !left_full && !raw_new {
                continue;
            }
            for &(ri, id) in &lh.contexts {
                if Some(id) == fresh {
                    continue;
                }
                let rh = &self.right.halves[ri as usize];
                if left_full {
                    expected += 1;
                }
                if rh.held == 0 {
                    continue;
                }
                if left_full && self.right.full(ri) {
                    let c = &mut self.contexts[id as usize];
                    c.seen += 1;
                    active.push((c.seen, id));
                } else if self.contexts[id as usize].raw && raw_new && lh.held as usize <= self.cfg.max_left {
                    candidates.push((common(&lh.facts, &self.left.holding), common(&rh.facts, &now)));
                }
            }
        }
        let confirmed = if expected > 0 { active.len() as f64 / expected as f64 } else { 0.0 };
        // The most-confirmed active contexts become facts of the next step's left side.
        if active.len() > self.cfg.max_active {
            active.select_nth_unstable_by(self.cfg.max_active, |a, b| b.cmp(a));
            active.truncate(self.cfg.max_active);
        }
        let mut next = now.clone();
        next.extend(active.iter().map(|&(_, id)| CONTEXT_FACT + id as u64));
        next.sort_unstable();
        next.dedup();
        // Learn the candidates; count how many were really new.
        let mut unique: HashSet<(Vec<u64>, Vec<u64>)> = HashSet::with_capacity(candidates.len() + 1);
        if !last.is_empty() {
            unique.insert((last, now));
        }
        let mut learned = usize::from(raw_new);
        for (l, r) in candidates {
            learned += usize::from(self.learn(&l, &r, false).1);
            unique.insert((l, r));
        }
        let new = if unique.is_empty() { 0.0 } else { learned as f64 / unique.len() as f64 };
        self.left.hold(&next);
        self.last = next;

        let raw = (1.0 - confirmed + new) / 2.0;
        NoveltyScore { score: raw, raw, confirmed, new }
    }
}

/// The shortest run of one repeated value [`Flatline`] reports (chosen on NAB's half A, where every
/// value from 2 to 200 scored 72.5–73.6; see docs/src/benchmarks.md).
pub const FLATLINE_MIN_RUN: usize = 30;

/// Reports a series that repeats one exact value for longer than it ever has before, once per run,
/// and only after it has been seen to change (a series flat from its start is not news).
#[derive(Debug, Clone)]
pub struct Flatline {
    min_run: usize,
    last: f64,
    /// Points in the current run of `last`.
    run: usize,
    /// The longest run that has ended; `None` until the value first changes.
    longest: Option<usize>,
}

/// What [`Flatline`] says about one point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FlatlineScore {
    /// 1 on the point where the current run becomes the longest yet, else 0.
    pub score: f64,
    /// Points in the current run of one value.
    pub run: usize,
    /// The longest earlier run (0 before the value first changed).
    pub longest: usize,
}

impl Flatline {
    pub fn new(min_run: usize) -> Flatline {
        Flatline { min_run: min_run.max(2), last: f64::NAN, run: 0, longest: None }
    }

    pub fn push(&mut self, x: f64) -> FlatlineScore {
        if !x.is_finite() {
            return FlatlineScore { score: 0.0, run: self.run, longest: self.longest.unwrap_or(0) };
        }
        if x == self.last {
            self.run += 1;
        } else {
            if self.run > 0 {
                self.longest = Some(self.longest.unwrap_or(0).max(self.run));
            }
            (self.last, self.run) = (x, 1);
        }
        // News once: on the point where the run first outlasts every earlier one and the minimum.
        let news = self.longest.is_some_and(|l| self.run == (l + 1).max(self.min_run));
        let score = if news { 1.0 } else { 0.0 };
        FlatlineScore { score, run: self.run, longest: self.longest.unwrap_or(0) }
    }
}

/// The streaming detector medic scores on NAB: the level detector ([`Detector`], which knows how
/// far a value is from what was expected), context novelty (which knows whether this sequence
/// has been seen before) and [`Flatline`] (which knows whether it has ever stood still this long),
/// the highest of the three, under one rest period. The level detector's own damping is off here:
/// the shared rest does that job, once.
#[derive(Debug)]
pub struct Combined {
    level: Detector,
    novelty: Novelty,
    flatline: Flatline,
    rest: Rest,
}

/// What [`Combined`] says about one point: its score and each part's (before the shared rest).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CombinedScore {
    pub score: f64,
    pub level: Score,
    pub novelty: NoveltyScore,
    pub flatline: FlatlineScore,
}

impl Combined {
    pub fn new(level: Config, novelty: NoveltyConfig) -> Combined {
        Combined {
            level: Detector::new(Config { quiet: 0, ..level }),
            rest: Rest::new(&novelty),
            novelty: Novelty::new(novelty),
            flatline: Flatline::new(FLATLINE_MIN_RUN),
        }
    }

    pub fn push(&mut self, x: f64) -> CombinedScore {
        let (level, novelty, flatline) = (self.level.push(x), self.novelty.step(x), self.flatline.push(x));
        let raw = level.score.max(novelty.raw).max(flatline.score);
        CombinedScore { score: self.rest.pass(raw), level, novelty, flatline }
    }
}

/// NAB's probation: the first 15 % of a series, at most 750 points, where no detector is scored
/// (and where the diagnosis takes no alarm).
pub fn probation(points: usize) -> usize {
    ((0.15 * points as f64).floor() as usize).min(750)
}

/// The score at or above which the diagnosis takes a point as an alarm: the threshold NAB's
/// standard profile chooses for [`Combined`] on the 44 shared files (`bench_nab` prints it).
pub const ALARM: f64 = 0.75;

impl Combined {
    /// The detector set up for one whole series as NAB sets up every detector, the way
    /// `bench_nab` scores it and the diagnosis runs it: the series' range, a rest of a fifth of
    /// the probation, and a daily period when the series holds three days of `step_secs` steps.
    pub fn for_series(values: &[f64], step_secs: i64) -> Combined {
        let step = step_secs.max(1);
        let per_day = 86_400 / step;
        let period = (86_400 % step == 0 && values.len() as i64 >= 3 * per_day).then_some(per_day as usize);
        let (lo, hi) =
            values.iter().filter(|x| x.is_finite()).fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
        let (lo, hi) = if lo <= hi { (lo, hi) } else { (0.0, 0.0) };
        Combined::new(Config { period, ..Config::default() }, NoveltyConfig::new(lo, hi, probation(values.len()) / 5))
    }
}

/// Which part of [`Combined`] fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fired {
    /// The value is far from what was expected ([`Detector`]).
    Level,
    /// The sequence is one not seen before ([`Novelty`]).
    Novelty,
    /// The series has stood still longer than ever before ([`Flatline`]).
    Flatline,
}

impl Fired {
    pub fn as_str(self) -> &'static str {
        match self {
            Fired::Level => "level",
            Fired::Novelty => "novelty",
            Fired::Flatline => "flatline",
        }
    }
}

/// One alarm of [`alarms`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Alarm {
    /// The point's index in the series.
    pub index: usize,
    pub score: f64,
    /// The part with the highest score at that point.
    pub fired: Fired,
    /// Points in the run of one value the point ends (for a flatline).
    pub run: usize,
}

/// Most points of a series the diagnosis runs the detector on: a longer window is read as the
/// means of equal buckets of consecutive points (Prometheus itself keeps a range query near 250
/// points). A bound on its cost, which grows with what the novelty part has learned.
pub const MOST_POINTS: usize = 500;

/// Every alarm of the detector over a series, after its probation; a series longer than
/// [`MOST_POINTS`] is read in buckets (indices are into `values`: a bucket's first point).
pub fn alarms(values: &[f64], step_secs: i64) -> Vec<Alarm> {
    let k = values.len().div_ceil(MOST_POINTS).max(1);
    let read: Vec<f64> = if k == 1 {
        values.to_vec()
    } else {
        values
            .chunks(k)
            .map(|c| {
                let finite: Vec<f64> = c.iter().copied().filter(|x| x.is_finite()).collect();
                if finite.is_empty() { f64::NAN } else { finite.iter().sum::<f64>() / finite.len() as f64 }
            })
            .collect()
    };
    let mut d = Combined::for_series(&read, step_secs * k as i64);
    let quiet = probation(read.len());
    let mut out = Vec::new();
    for (i, x) in read.iter().enumerate() {
        let s = d.push(*x);
        if i < quiet || s.score < ALARM {
            continue;
        }
        let parts =
            [(Fired::Level, s.level.score), (Fired::Novelty, s.novelty.raw), (Fired::Flatline, s.flatline.score)];
        let fired = parts.iter().max_by(|a, b| a.1.total_cmp(&b.1)).map_or(Fired::Level, |p| p.0);
        out.push(Alarm { index: i * k, score: s.score, fired, run: s.flatline.run * k });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A saw-tooth over 0..8, repeated: every context is learned within a few periods.
    fn saw(n: usize) -> impl Iterator<Item = f64> {
        (0..n).map(|i| (i % 8) as f64)
    }

    #[test]
    fn a_learned_sequence_is_not_news_and_a_new_order_is() {
        let mut d = Novelty::new(NoveltyConfig::new(0.0, 7.0, 0));
        let early: Vec<f64> = saw(16).map(|x| d.push(x).raw).collect();
        let learned: Vec<f64> = saw(400).map(|x| d.push(x).raw).collect();
        assert!(early[1] >= 0.75, "the first step is all new: {early:?}");
        assert!(learned.iter().rev().take(80).all(|s| *s < 0.1), "{:?}", &learned[320..]);
        // The same levels, backwards: each value is familiar, the order is not.
        let reversed: Vec<NoveltyScore> = (0..8).rev().map(|x| d.push(x as f64)).collect();
        let top = reversed.iter().map(|s| s.raw).fold(0.0, f64::max);
        assert!(top >= 0.75, "{reversed:?}");
        assert!(reversed.iter().any(|s| s.confirmed < 0.5 && s.new > 0.5), "{reversed:?}");
    }

    #[test]
    fn a_score_at_the_threshold_starts_a_rest_and_so_does_the_start() {
        let mut d = Novelty::new(NoveltyConfig::new(0.0, 7.0, 5));
        let start: Vec<f64> = saw(5).map(|x| d.push(x).score).collect();
        assert_eq!(start, vec![0.0; 5], "the first `rest` points are held at 0");
        for x in saw(400) {
            d.push(x);
        }
        let jump: Vec<NoveltyScore> = [7.0, 0.0, 7.0, 0.0, 7.0, 0.0, 7.0, 0.0].iter().map(|x| d.push(*x)).collect();
        let first = jump.iter().position(|s| s.score >= 0.75).expect("the new order is reported");
        for s in &jump[first + 1..(first + 6).min(jump.len())] {
            assert_eq!(s.score, 0.0, "resting after a report: {jump:?}");
        }
    }

    #[test]
    fn values_outside_the_range_are_clamped_and_non_finite_ones_ignored() {
        let mut d = Novelty::new(NoveltyConfig::new(0.0, 7.0, 0));
        assert_eq!(d.facts(-5.0), d.facts(0.0));
        assert_eq!(d.facts(1e9), d.facts(7.0));
        assert_eq!(d.facts(5.0), vec![1, 2, 5], "5 = 0b101: bits 0 and 2 set");
        assert_eq!(d.push(f64::NAN).raw, 0.0);
        // A flat range does not divide by zero.
        let mut flat = Novelty::new(NoveltyConfig::new(3.0, 3.0, 0));
        assert!(flat.push(3.0).raw.is_finite());
    }

    #[test]
    fn a_flatline_longer_than_any_before_is_reported_once() {
        let mut d = Flatline::new(5);
        // Flat from the start: nothing to compare with, so not news.
        assert!((0..50).all(|_| d.push(1.0).score == 0.0));
        // Moving, in runs shorter than that first one.
        let moving = |len: usize| (0..200).map(move |i| ((i / len) % 3) as f64);
        assert!(moving(7).all(|x| d.push(x).score == 0.0), "no run is the longest yet");

        // Runs of 3, then 20 nines: reported when the run reaches the minimum of 5, once.
        let mut d = Flatline::new(5);
        let scores: Vec<f64> = moving(3).chain([9.0; 20]).map(|x| d.push(x).score).collect();
        let hits: Vec<usize> = scores.iter().enumerate().filter(|(_, s)| **s > 0.0).map(|(i, _)| i).collect();
        assert_eq!(hits, vec![204], "{scores:?}");
        // Then 25 fours: news when they outlast the nines (at their 21st point).
        let scores: Vec<FlatlineScore> = [4.0; 25].iter().map(|x| d.push(*x)).collect();
        let hit = scores.iter().position(|s| s.score > 0.0);
        assert_eq!(hit, Some(20), "{scores:?}");
        assert_eq!((scores[20].run, scores[20].longest), (21, 20));
        assert_eq!(scores.iter().filter(|s| s.score > 0.0).count(), 1);
        assert_eq!(d.push(f64::NAN).run, 25, "a gap neither ends nor extends the run");
    }

    #[test]
    fn combined_reports_what_either_part_sees_once() {
        let cfg = NoveltyConfig::new(0.0, 100.0, 20);
        let mut d = Combined::new(Config::default(), cfg);
        let mut quiet = Vec::new();
        for i in 0..600 {
            quiet.push(d.push(50.0 + (i % 3) as f64).score);
        }
        assert!(quiet[500..].iter().all(|s| *s < 0.75), "a calm series stays calm");
        let spike: Vec<CombinedScore> = [100.0, 50.0, 51.0, 52.0, 50.0].iter().map(|x| d.push(*x)).collect();
        assert!(spike[0].score >= 0.75, "{spike:?}");
        assert!(spike[1..].iter().all(|s| s.score == 0.0), "one report per event: {spike:?}");
    }
}
