//! Metric anomalies, two ways, both explainable:
//!
//! - [`Detector`]: a streaming level detector, O(1) time and memory per point, for a series seen one
//!   point at a time (NAB scores it inside `novelty::Combined`). Each point is compared with what the series
//!   led one to expect (a level that ignores spikes, plus a daily profile when a period is
//!   given), in robust σ; the surprise of the last few points is then judged against the surprise
//!   the series usually shows (an anomaly likelihood, as Numenta's detectors do), so a noisy
//!   series does not alarm all day and a calm one alarms at its first real departure. A value
//!   outside the whole range seen so far, and at least 2 σ from what was expected, is an anomaly
//!   by itself. Once it has reported, it damps its scores for a while: the same event is not news.
//! - [`analyse`]: a window at once (what the diagnosis has): where the series changed (the split
//!   that best separates two levels, walked back to where it first left its baseline band),
//!   which way, how far in robust σ of the baseline before it, and what shape: a step that stays,
//!   a steady climb (a leak), or a spike that has passed. A daily pattern is taken out first when
//!   the window holds at least two days of it. [`explain`] says it in one line.

use super::novelty::{self, Fired};
use crate::runbook::Unit;
use crate::time::{Millis, from_millis};

/// The streaming detector's knobs; the defaults are the ones the NAB figures were measured with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Points per season (e.g. 288 for a daily pattern at 5-minute steps); `None` for none.
    pub period: Option<usize>,
    /// Weight of each new point in the level.
    pub level_rate: f64,
    /// Weight of each new point in the typical deviation.
    pub dev_rate: f64,
    /// Weight of each new point in its phase of the seasonal profile.
    pub season_rate: f64,
    /// Points averaged for the recent surprise.
    pub short: usize,
    /// Weight of each new point in the long-run surprise statistics.
    pub long_rate: f64,
    /// Points seen before any score is given.
    pub warm_up: usize,
    /// How far beyond the range seen so far (as a fraction of that range) is anomalous by itself.
    pub range_tolerance: f64,
    /// Added to the surprise of a value beyond the range seen so far.
    pub range_bonus: f64,
    /// The surprise that scores 0.5.
    pub half: f64,
    /// A score at or above this is a report; the next `quiet` points are damped by `damp`.
    pub report: f64,
    pub quiet: usize,
    pub damp: f64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            period: None,
            level_rate: 0.1,
            dev_rate: 0.02,
            season_rate: 0.1,
            short: 3,
            long_rate: 0.002,
            warm_up: 50,
            range_tolerance: 0.01,
            range_bonus: 20.0,
            half: 3.0,
            report: 0.7,
            quiet: 50,
            damp: 0.3,
        }
    }
}

const SHORT_MAX: usize = 64;

/// A new extreme must also be this far from what was expected to count by itself, so a noise
/// record soon after warm-up is not an alarm.
const NEW_EXTREME_SIGMAS: f64 = 2.0;

/// What the detector says about one point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    /// 0–1: how unlikely the recent behaviour is given the series so far.
    pub score: f64,
    /// The point's departure from what was expected, in robust σ (signed).
    pub z: f64,
    /// What was expected.
    pub expected: f64,
}

/// A streaming anomaly detector (see the module docs).
#[derive(Debug, Clone)]
pub struct Detector {
    cfg: Config,
    n: usize,
    level: f64,
    dev: f64,
    season: Vec<f64>,
    phase: usize,
    lo: f64,
    hi: f64,
    recent: [f64; SHORT_MAX],
    recent_sum: f64,
    long_mean: f64,
    long_var: f64,
    quiet: usize,
    season_dev: f64,
}

impl Detector {
    pub fn new(cfg: Config) -> Detector {
        let season = vec![0.0; cfg.period.unwrap_or(0)];
        Detector {
            n: 0,
            level: 0.0,
            dev: 0.0,
            season,
            phase: 0,
            lo: f64::MAX,
            hi: f64::MIN,
            recent: [0.0; SHORT_MAX],
            recent_sum: 0.0,
            long_mean: 0.0,
            long_var: 0.0,
            quiet: 0,
            season_dev: 0.0,
            cfg: Config { short: cfg.short.clamp(1, SHORT_MAX), ..cfg },
        }
    }

    /// Feeds one point; returns its score.
    pub fn push(&mut self, x: f64) -> Score {
        if !x.is_finite() {
            return Score { score: 0.0, z: 0.0, expected: self.level };
        }
        let c = &self.cfg;
        if self.n == 0 {
            self.level = x;
        }
        let range = if self.hi >= self.lo { self.hi - self.lo } else { 0.0 };
        // A floor under the scales, so a flat line's first move is large but finite.
        let floor = (1e-3 * range).max(1e-9 * (1.0 + self.level.abs()));
        // Two experts: the recent level, and the same time one period ago (a profile per phase).
        // Whichever has been the better predictor judges the point.
        let seasonal_phase = self.season.get(self.phase).copied().filter(|_| self.n >= self.season.len());
        let level_scale = (self.dev * 1.2533).max(floor);
        let (expected, scale) = match seasonal_phase {
            Some(p) if self.season_dev < self.dev => (p, (self.season_dev * 1.2533).max(floor)),
            _ => (self.level, level_scale),
        };
        let resid = x - expected;
        let z = resid / scale;
        // The surprise, compressed so one wild point does not swamp the statistics.
        let raw = (1.0 + z.abs()).ln();
        let slot = self.n % c.short;
        self.recent_sum += raw - self.recent[slot];
        self.recent[slot] = raw;
        let short_mean = self.recent_sum / c.short.min(self.n + 1) as f64;
        let warm = self.n >= c.warm_up;
        let out_of_range = warm
            && z.abs() >= NEW_EXTREME_SIGMAS
            && (x > self.hi + c.range_tolerance * range || x < self.lo - c.range_tolerance * range);
        // How unusual the recent surprise is, in standard deviations of the usual surprise; a
        // value beyond everything seen so far counts as unusual by itself.
        let u = (short_mean - self.long_mean) / self.long_var.sqrt().max(1e-6)
            + if out_of_range { c.range_bonus } else { 0.0 };
        let mut score = if warm && u > 0.0 { u / (u + c.half) } else { 0.0 };
        // Once it has spoken, the detector stays quiet for a while: the same event is not news.
        if self.quiet > 0 {
            self.quiet -= 1;
            score *= c.damp;
        } else if score >= c.report {
            self.quiet = c.quiet;
        }

        // Learn: spikes are clipped to 4 σ, so they barely move the level, while a lasting shift
        // is followed within a few dozen points.
        let limit = if warm { 4.0 * level_scale } else { f64::INFINITY };
        let clipped = (x - self.level).clamp(-limit, limit);
        self.level += c.level_rate * clipped;
        // Until warm, every point weighs the same in the deviation (it starts from nothing).
        self.dev += c.dev_rate.max(1.0 / (self.n + 1) as f64) * (clipped.abs() - self.dev);
        let period = self.season.len();
        if let Some(p) = self.season.get_mut(self.phase) {
            if self.n < period {
                *p = x;
                // Until it has a record, the profile is trusted less than the level.
                self.season_dev = 2.0 * self.dev;
            } else {
                let season_scale = (self.season_dev * 1.2533).max(floor);
                let e = (x - *p).clamp(-4.0 * season_scale, 4.0 * season_scale);
                self.season_dev += c.dev_rate * (e.abs() - self.season_dev);
                *p += c.season_rate * e;
            }
            self.phase = (self.phase + 1) % period;
        }
        let a = if self.n < c.warm_up { 1.0 / (self.n + 1) as f64 } else { c.long_rate };
        let d = short_mean - self.long_mean;
        self.long_mean += a * d;
        self.long_var = (1.0 - a) * (self.long_var + a * d * d);
        self.lo = self.lo.min(x);
        self.hi = self.hi.max(x);
        self.n += 1;
        Score { score, z, expected }
    }
}

/// The complementary error function (Numerical Recipes' Chebyshev fit, relative error < 1.2e-7).
pub fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.26551223
            + t * (1.00002368
                + t * (0.37409196
                    + t * (0.09678418
                        + t * (-0.18628806
                            + t * (0.27886807
                                + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))))
            .exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

/// How a series left its baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Moved to a new level and stayed there.
    Step,
    /// Climbed (or sank) steadily: a leak, a filling queue.
    Ramp,
    /// Left and came back: a transient.
    Spike,
    /// Stands still at one value, longer than it ever did before in the window: a dead
    /// exporter, a hung process.
    Flatline,
}

/// What [`analyse`] found in a window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Finding {
    /// Where the series first left its baseline band for good.
    pub onset: Millis,
    pub up: bool,
    /// The baseline (robust median before the onset, seasonal pattern added back).
    pub before: f64,
    /// The level after the onset (median), and the furthest point.
    pub after: f64,
    pub peak: f64,
    pub peak_at: Millis,
    /// The latest value.
    pub last: f64,
    /// The peak's distance from the baseline in robust σ of the baseline (MAD × 1.4826);
    /// infinite when the baseline was perfectly flat.
    pub sigmas: f64,
    /// How long the baseline it was measured against lasted.
    pub baseline: Millis,
    pub shape: Shape,
    /// True when a daily pattern was taken out before judging.
    pub seasonal: bool,
    /// 0–1, grows with `sigmas` (4 σ → 0.5, 10 σ → 0.8).
    pub score: f64,
    /// Which part of the streaming detector confirmed it; `None` when the window is too short
    /// for the detector ([`DETECTOR_MIN_POINTS`]) and the window method alone decided.
    pub fired: Option<Fired>,
}

/// Least points in a window for the streaming detector to judge it (its warm-up, twice).
pub const DETECTOR_MIN_POINTS: usize = 100;
/// How many points before the window method's onset an alarm may come and still confirm it
/// (the walk back to the baseline band can land a little after the detector's first alarm).
const ONSET_SLACK: usize = 5;

const DAY: Millis = 86_400_000;

/// Finds the largest sustained change in `points` (see the module docs), if there is a clear one
/// and, in a window long enough, the streaming detector NAB scores ([`novelty::Combined`], set
/// up by `Combined::for_series`) alarms at it too; or a flatline that detector reports and that
/// lasts to the window's end. A series that never moved is no finding.
pub fn analyse(points: &[(Millis, f64)]) -> Option<Finding> {
    let first = points.first()?.1;
    if points.iter().all(|p| p.1 == first || !p.1.is_finite()) {
        return None;
    }
    let change = window_change(points);
    if points.len() < DETECTOR_MIN_POINTS {
        return change;
    }
    let values: Vec<f64> = points.iter().map(|p| p.1).collect();
    let step = median(&points.windows(2).map(|w| (w[1].0 - w[0].0) as f64).collect::<Vec<_>>());
    let alarms = novelty::alarms(&values, (step / 1000.0).round() as i64);
    if let Some(f) = change {
        let onset = points.iter().position(|p| p.0 == f.onset).unwrap_or(0);
        if let Some(a) = alarms.iter().find(|a| a.index + ONSET_SLACK >= onset) {
            return Some(Finding { fired: Some(a.fired), ..f });
        }
    }
    // Still standing still at the end, longer than ever before.
    let a = alarms.iter().rev().find(|a| a.fired == Fired::Flatline)?;
    let start = a.index + 1 - a.run.min(a.index + 1);
    let value = values[start];
    if values[start..].iter().any(|v| *v != value) {
        return None;
    }
    Some(Finding {
        onset: points[start].0,
        up: false,
        before: value,
        after: value,
        peak: value,
        peak_at: points[a.index].0,
        last: value,
        sigmas: 0.0,
        baseline: points[start].0 - points[0].0,
        shape: Shape::Flatline,
        seasonal: false,
        score: a.score,
        fired: Some(Fired::Flatline),
    })
}

/// The window method: the largest sustained change, or a spike (see the module docs).
fn window_change(points: &[(Millis, f64)]) -> Option<Finding> {
    let n = points.len();
    if n < 8 {
        return None;
    }
    let raw: Vec<f64> = points.iter().map(|p| p.1).collect();
    // A daily pattern, when the window shows it twice and it explains the series: judge each
    // point against the same time on the previous days (their median).
    let step = median(&points.windows(2).map(|w| (w[1].0 - w[0].0) as f64).collect::<Vec<_>>()).max(1.0);
    let period = (DAY as f64 / step).round() as usize;
    let seasonal = period >= 4 && n >= 2 * period && autocorrelation(&raw, period) > 0.6;
    let (first, v): (usize, Vec<f64>) = if seasonal {
        let expect = |i: usize| {
            let prior: Vec<f64> = (1..=3).filter(|d| i >= d * period).map(|d| raw[i - d * period]).collect();
            median(&prior)
        };
        (period, (period..n).map(|i| raw[i] - expect(i)).collect())
    } else {
        (0, raw.clone())
    };
    let m = v.len();
    if m < 8 {
        return None;
    }
    let baseline_of = |head: &[f64]| {
        let mid = median(head);
        (mid, 1.4826 * median(&head.iter().map(|x| (x - mid).abs()).collect::<Vec<_>>()))
    };
    let shift = change_point(&v);
    // The step: its baseline from the first half of the segment before the split, so the start
    // of a slow rise does not widen the band it is measured against.
    let step_found = shift.and_then(|k| {
        let (before, sd) = baseline_of(&v[..(k / 2).max(3)]);
        let after = mean(&v[k..]);
        let band = (3.0 * sd).max(0.05 * before.abs()).max(1e-9);
        if (after - before).abs() < (4.0 * sd).max(0.10 * before.abs()).max(1e-9) {
            return None;
        }
        let up = after > before;
        let outside = |x: f64| if up { x > before + band } else { x < before - band };
        let mut start = k;
        while start > 0 && outside(v[start - 1]) {
            start -= 1;
        }
        while start < m && !outside(v[start]) {
            start += 1;
        }
        (start < m).then_some((start, before, sd, up, band))
    });
    let (start, before, sd, up, band) = match step_found {
        Some(s) => s,
        // No lasting shift: a spike, if one point stands far out of the whole window (robust
        // statistics of the whole window, as a spike too short to move a mean barely moves them).
        None => {
            let (centre, spread) = baseline_of(&v);
            let (spike_i, spike_z) = v
                .iter()
                .enumerate()
                .map(|(i, x)| (i, (x - centre) / spread.max(1e-12)))
                .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))?;
            if spike_z.abs() < 8.0 {
                return None;
            }
            let up = spike_z > 0.0;
            let band = 3.0 * spread;
            let mut start = spike_i;
            while start > 0 && (v[start - 1] - centre).abs() > band && (v[start - 1] > centre) == up {
                start -= 1;
            }
            (start, centre, spread, up, band)
        }
    };
    let further = |a: &(usize, f64), b: &(usize, f64)| if up { a.1.total_cmp(&b.1) } else { b.1.total_cmp(&a.1) };
    let (peak_i, peak) = v[start..].iter().copied().enumerate().map(|(i, x)| (start + i, x)).max_by(further)?;
    let tail = &v[start..];
    let back = |x: &f64| (x - before).abs() <= band;
    let recovered_from = tail.len() - tail.iter().rev().take_while(|x| back(x)).count();
    let rise = (peak - before).abs();
    let reached = tail.iter().position(|x| (x - before).abs() >= 0.8 * rise).unwrap_or(0);
    let shape = if recovered_from < tail.len() && tail.len() - recovered_from >= 2.max(tail.len() / 5) {
        Shape::Spike
    } else if tail.len() >= 6 && reached * 2 > tail.len() {
        Shape::Ramp
    } else {
        Shape::Step
    };
    let sigmas = if sd > 0.0 { rise / sd } else { f64::INFINITY };
    // Back to the series' own terms: the seasonal expectation at each point is added back.
    let expect_at = |i: usize| raw[first + i] - v[i];
    let after_level = median(&v[start..]);
    Some(Finding {
        onset: points[first + start].0,
        up,
        before: before + expect_at(start),
        after: after_level + expect_at(start),
        peak: peak + expect_at(peak_i),
        peak_at: points[first + peak_i].0,
        last: raw[n - 1],
        sigmas,
        baseline: points[first + start].0 - points[0].0,
        shape,
        seasonal,
        score: if sigmas.is_finite() { 1.0 - (-sigmas / 5.8).exp() } else { 1.0 }.clamp(0.0, 1.0),
        fired: None,
    })
}

/// The split maximising the weighted difference of means before and after it (a t-statistic
/// without the variance), if the series is long enough to have one.
pub fn change_point(v: &[f64]) -> Option<usize> {
    let n = v.len();
    if n < 8 {
        return None;
    }
    let mut prefix = vec![0.0; n + 1];
    for i in 0..n {
        prefix[i + 1] = prefix[i] + v[i];
    }
    let mean = |a: usize, b: usize| (prefix[b] - prefix[a]) / (b - a) as f64;
    (3..=n - 3)
        .map(|k| (k, (mean(k, n) - mean(0, k)).abs() * ((k * (n - k)) as f64 / n as f64).sqrt()))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(k, _)| k)
}

fn autocorrelation(v: &[f64], lag: usize) -> f64 {
    let mu = mean(v);
    let var: f64 = v.iter().map(|x| (x - mu) * (x - mu)).sum();
    if var == 0.0 || lag >= v.len() {
        return 0.0;
    }
    v.iter().zip(&v[lag..]).map(|(a, b)| (a - mu) * (b - mu)).sum::<f64>() / var
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

pub fn median(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len().is_multiple_of(2) { (v[m - 1] + v[m]) / 2.0 } else { v[m] }
}

/// The diagnosis' minutes and hours, plus days for the long baselines of a seasonal window.
fn duration(ms: Millis) -> String {
    let m = (ms as f64 / 60_000.0).round() as i64;
    if m >= 48 * 60 { format!("{} days", m / (24 * 60)) } else { super::minutes(ms) }
}

/// One line for people: "p99 latency of api rose from 120 ms to 870 ms at 14:23 UTC, 9.4 robust
/// σ above the prior 6 h, and stayed there".
pub fn explain(f: &Finding, name: &str, unit: Unit) -> String {
    let v = |x: f64| super::format_value(x, unit);
    let at = from_millis(f.onset).format("%H:%M UTC");
    let (verb, side) = match (f.shape, f.up) {
        (Shape::Spike, true) => ("spiked", "above"),
        (Shape::Spike, false) => ("dropped", "below"),
        (Shape::Ramp, true) => ("climbed steadily", "above"),
        (Shape::Ramp, false) => ("sank steadily", "below"),
        (Shape::Step, true) => ("rose", "above"),
        (Shape::Step, false) => ("fell", "below"),
        (Shape::Flatline, _) => ("stood still", ""),
    };
    let fired = match f.fired {
        Some(Fired::Novelty) => "; a sequence the detector had not seen before",
        _ => "",
    };
    let sigmas = if f.sigmas.is_finite() {
        let decimals = if f.sigmas >= 100.0 { 0 } else { 1 };
        format!("{:.decimals$} robust σ {side} the prior {}", f.sigmas, duration(f.baseline))
    } else {
        format!("from a flat prior {}", duration(f.baseline))
    };
    let seasonal = if f.seasonal { " for the time of day" } else { "" };
    match f.shape {
        Shape::Spike => format!(
            "{name} {verb} from {} to {} at {at}, {sigmas}{seasonal}, and is back to {}{fired}",
            v(f.before),
            v(f.peak),
            v(f.last)
        ),
        Shape::Ramp => format!(
            "{name} {verb} from {} to {} over {} from {at}, {sigmas}{seasonal}{fired}",
            v(f.before),
            v(f.peak),
            duration(f.peak_at - f.onset)
        ),
        Shape::Step => {
            format!("{name} {verb} from {} to {} at {at}, {sigmas}{seasonal}{fired}", v(f.before), v(f.peak))
        }
        Shape::Flatline => format!(
            "{name} has {verb} at {} since {at}, longer than at any time in the prior {} (the detector's flatline)",
            v(f.last),
            duration(f.baseline)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Millis = 60_000;

    fn pts(values: &[f64], step: Millis) -> Vec<(Millis, f64)> {
        values.iter().enumerate().map(|(i, v)| (i as Millis * step, *v)).collect()
    }

    /// Deterministic noise in [-1, 1].
    fn noise(i: usize) -> f64 {
        let x = (i as u64).wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((x >> 33) % 2001) as f64 / 1000.0 - 1.0
    }

    #[test]
    fn a_step_after_a_deploy_has_its_onset_size_and_shape() {
        let v: Vec<f64> = (0..120).map(|i| if i < 80 { 0.01 } else { 0.35 } + 0.002 * noise(i)).collect();
        let f = analyse(&pts(&v, MIN)).unwrap();
        assert_eq!(f.onset, 80 * MIN);
        assert!(f.up && f.shape == Shape::Step, "{f:?}");
        assert!((f.before - 0.01).abs() < 0.002 && (f.after - 0.35).abs() < 0.003, "{f:?}");
        assert!(f.sigmas > 50.0, "{f:?}");
        let text = explain(&f, "error_ratio of checkout", Unit::Ratio);
        assert!(text.starts_with("error_ratio of checkout rose from 1.0% to 35."), "{text}");
        assert!(text.contains("at 01:20 UTC") && text.contains("robust σ above the prior 80 min"), "{text}");
    }

    #[test]
    fn a_slow_leak_is_a_steady_climb_from_where_it_began() {
        // Memory flat at 300 MiB for 3 h, then +1 MiB a minute for 3 h.
        let mib = 1024.0 * 1024.0;
        let v: Vec<f64> =
            (0..360).map(|i| (300.0 + if i < 180 { 0.0 } else { (i - 180) as f64 } + 0.5 * noise(i)) * mib).collect();
        let f = analyse(&pts(&v, MIN)).unwrap();
        assert_eq!(f.shape, Shape::Ramp, "{f:?}");
        let onset_min = f.onset / MIN;
        assert!((175..=200).contains(&onset_min), "the leak began at minute 180, found {onset_min}");
        let text = explain(&f, "memory of cart", Unit::Bytes);
        assert!(text.contains("climbed steadily from 300 MiB to 479 MiB"), "{text}");
    }

    #[test]
    fn a_spike_on_a_daily_pattern_is_found_and_the_pattern_is_not() {
        // Three days at 5-minute steps: traffic peaks every afternoon, and one 15-minute spike
        // on the third day at a time of day that is normally quiet.
        let step = 5 * MIN;
        let day = 288;
        let v: Vec<f64> = (0..3 * day)
            .map(|i| {
                let phase = (i % day) as f64 / day as f64 * std::f64::consts::TAU;
                let spike = if (2 * day + 40..2 * day + 43).contains(&i) { 400.0 } else { 0.0 };
                1000.0 + 600.0 * phase.sin() + 10.0 * noise(i) + spike
            })
            .collect();
        let f = analyse(&pts(&v, step)).unwrap();
        assert!(f.seasonal && f.shape == Shape::Spike && f.up, "{f:?}");
        assert_eq!(f.onset, (2 * day + 40) as Millis * step);
        assert!(explain(&f, "requests of api", Unit::Number).contains("for the time of day, and is back to"));

        // The same days without the spike: nothing to report.
        let calm: Vec<f64> = (0..3 * day)
            .map(|i| 1000.0 + 600.0 * ((i % day) as f64 / day as f64 * std::f64::consts::TAU).sin() + 10.0 * noise(i))
            .collect();
        assert_eq!(analyse(&pts(&calm, step)), None);
    }

    #[test]
    fn noisy_flat_series_raise_nothing() {
        for seed in 0..20 {
            let v: Vec<f64> = (0..360).map(|i| 100.0 + 5.0 * noise(i + 1000 * seed)).collect();
            assert_eq!(analyse(&pts(&v, MIN)), None, "seed {seed}");
            let mut d = Detector::new(Config::default());
            let reports = v.iter().filter(|x| d.push(**x).score >= d.cfg.report).count();
            assert!(reports <= 1, "seed {seed}: {reports} reports");
        }
        assert_eq!(analyse(&pts(&[1.0; 40], MIN)), None);
        assert_eq!(analyse(&pts(&[0.0; 400], MIN)), None, "a healthy series flat at zero is not a finding");
        assert_eq!(analyse(&pts(&[1.0, 5.0, 9.0], MIN)), None, "too short to judge");
    }

    /// In a window long enough, the detector NAB scores must alarm at the change the window
    /// method found, and says which part fired.
    #[test]
    fn the_streaming_detector_confirms_a_change_and_says_what_fired() {
        let v: Vec<f64> = (0..360).map(|i| if i < 300 { 100.0 } else { 160.0 } + 3.0 * noise(i)).collect();
        let f = analyse(&pts(&v, MIN)).expect("a step of 20 σ");
        assert_eq!((f.onset, f.shape), (300 * MIN, Shape::Step), "{f:?}");
        assert!(f.fired.is_some(), "{f:?}");
        // The same step in a short window is the window method's alone.
        let short: Vec<f64> = v[280..].to_vec();
        assert_eq!(analyse(&pts(&short, MIN)).expect("found").fired, None);
        // A long window is read in buckets, and the alarm still confirms the step.
        let long: Vec<f64> = (0..2000).map(|i| if i < 1700 { 100.0 } else { 160.0 } + 3.0 * noise(i)).collect();
        let f = analyse(&pts(&long, MIN)).expect("a step of 20 σ in 2,000 points");
        assert_eq!(f.onset, 1700 * MIN, "{f:?}");
        assert!(f.fired.is_some(), "{f:?}");
    }

    #[test]
    fn a_series_that_stands_still_longer_than_ever_is_a_flatline_finding() {
        let mut v: Vec<f64> = (0..300).map(|i| 50.0 + 4.0 * noise(i)).collect();
        v.extend([v[299]; 60]);
        let f = analyse(&pts(&v, MIN)).expect("stuck for an hour");
        assert_eq!((f.shape, f.fired, f.onset), (Shape::Flatline, Some(Fired::Flatline), 299 * MIN), "{f:?}");
        let text = explain(&f, "requests of api", Unit::Number);
        assert!(
            text.starts_with(
                "requests of api has stood still at 48.6 since 04:59 UTC, longer than at any time in the prior 4 h"
            ),
            "{text}"
        );
        // Moving again by the end, it is history, not a finding.
        v.extend((0..5).map(|i| 50.0 + i as f64));
        assert_eq!(analyse(&pts(&v, MIN)).map(|f| f.shape), None);
    }

    #[test]
    fn the_streaming_detector_alarms_at_a_shift_and_settles_after_it() {
        let v: Vec<f64> = (0..600).map(|i| if i < 400 { 50.0 } else { 80.0 } + 2.0 * noise(i)).collect();
        let mut d = Detector::new(Config::default());
        let scores: Vec<Score> = v.iter().map(|x| d.push(*x)).collect();
        let report = Config::default().report;
        let first = scores.iter().position(|s| s.score >= report);
        assert_eq!(first, Some(400), "reports the shift when it happens: {:?}", &scores[first.unwrap_or(0)]);
        assert!(scores[400].z > 8.0, "{:?}", scores[400]);
        assert!(scores[550..].iter().all(|s| s.score < report), "the new level becomes normal");
    }

    #[test]
    fn the_streaming_detector_learns_a_daily_pattern() {
        let day = 288;
        let v: Vec<f64> = (0..10 * day)
            .map(|i| 1000.0 + 600.0 * ((i % day) as f64 / day as f64 * std::f64::consts::TAU).sin() + 10.0 * noise(i))
            .collect();
        let mut d = Detector::new(Config { period: Some(day), ..Config::default() });
        let late: Vec<Score> = v.iter().map(|x| d.push(*x)).skip(5 * day).collect();
        let report = Config::default().report;
        assert!(late.iter().all(|s| s.score < report && s.z.abs() < 6.0), "the pattern is expected by day 5");
    }

    #[test]
    fn erfc_matches_known_values() {
        for (x, want) in
            [(0.0, 1.0), (0.5, 0.4795001222), (1.0, 0.1572992071), (2.0, 0.0046777350), (-1.0, 1.8427007929)]
        {
            assert!((erfc(x) - want).abs() < 1e-7, "erfc({x}) = {}", erfc(x));
        }
    }
}
