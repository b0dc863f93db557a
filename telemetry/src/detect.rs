//! Streaming anomaly detection, one [`Series`] per (service, metric).
//!
//! Every sample is scored by four detectors against the samples *before* it:
//!
//! | detector | deviation `d` of a value `x` | parameters (default) |
//! |---|---|---|
//! | rolling z-score | `(x − mean) / stddev` of the last `window` points | `window` 60, `z_threshold` 3 |
//! | robust | `0.6745 · (x − median) / MAD` of the same window | `mad_threshold` 3 |
//! | EWMA | `(x − m) / s`, `m` and `s²` exponentially weighted mean and variance | `ewma_alpha` 0.1, `ewma_threshold` 3 |
//! | seasonal | `(x − c) / s` against the same hour of the week (or, until two weeks are seen, of the day) on earlier weeks (days): `c` the median of the last eight periods' means, `s` from the spread within and between them | `seasonal_threshold` 3, `seasonal_min_periods` 2 |
//!
//! Every scale is floored at `min_relative_scale` (1 %) of the level, so a flat
//! series does not alert on a rounding change. A deviation `d` against its
//! threshold `T` becomes a score `d² / (d² + T²)`: 0 on the baseline, 0.5 at
//! the threshold, 0.8 at twice it, below 1 always.
//!
//! **The point score** (what `sentinel detect` writes) is the median of the
//! three rolling scores (two of z-score, robust and EWMA must agree), and,
//! once the seasonal baseline for that hour has `seasonal_min_periods`
//! earlier periods, the smaller of that and the seasonal score: a value that
//! is normal for this hour of the day or week does not alert, however far it
//! is from the last hour's. No score before `warmup` points (0).
//!
//! **The persistence rule** turns scores into anomalies: an anomaly is raised
//! when `persist_n` of the last `persist_m` points (3 of 5) scored at least
//! 0.5, once per episode; the episode ends after `persist_m` points in a row
//! below 0.5. The anomaly carries the highest score of those points and a
//! reason naming each detector's deviation. The score a series reports for
//! each point ([`Series::observe`], `sentinel detect`) is the rule's own: the
//! `persist_n`-th highest of the last `persist_m` point scores, so it reaches
//! 0.5 exactly when the rule holds, and a lone blip never scores high.
//!
//! **Any input** gives a finite score in [0, 1]: sums and squares are taken in
//! units of the window's largest magnitude, a baseline that a jump too large
//! to square would overflow starts again from the new value, and a value that
//! is not finite scores 0 and is not learnt (the telemetry path refuses such
//! events, and `sentinel detect` refuses such a row with its line number). A
//! point at or before the series' newest timestamp is a replay: not scored,
//! not learnt (`sentinel detect` writes 0 for it and counts it).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// The detectors' parameters (see the module documentation).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DetectorConfig {
    pub window: usize,
    pub warmup: usize,
    pub z_threshold: f64,
    pub mad_threshold: f64,
    pub ewma_alpha: f64,
    pub ewma_threshold: f64,
    pub seasonal_threshold: f64,
    pub seasonal_min_periods: usize,
    pub min_relative_scale: f64,
    pub persist_n: usize,
    pub persist_m: usize,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            window: 60,
            warmup: 20,
            z_threshold: 3.0,
            mad_threshold: 3.0,
            ewma_alpha: 0.1,
            ewma_threshold: 3.0,
            seasonal_threshold: 3.0,
            seasonal_min_periods: 2,
            min_relative_scale: 0.01,
            persist_n: 3,
            persist_m: 5,
        }
    }
}

impl DetectorConfig {
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("z_threshold", self.z_threshold),
            ("mad_threshold", self.mad_threshold),
            ("ewma_threshold", self.ewma_threshold),
            ("seasonal_threshold", self.seasonal_threshold),
        ];
        for (name, v) in positive {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!("{name} must be above 0, not {v}"));
            }
        }
        if !(self.ewma_alpha > 0.0 && self.ewma_alpha < 1.0) {
            return Err(format!("ewma_alpha must be in (0, 1), not {}", self.ewma_alpha));
        }
        if self.window < 3 || self.warmup < 3 || self.warmup > self.window {
            return Err(format!("need 3 <= warmup ({}) <= window ({})", self.warmup, self.window));
        }
        if self.persist_n == 0 || self.persist_n > self.persist_m {
            return Err(format!("need 1 <= persist_n ({}) <= persist_m ({})", self.persist_n, self.persist_m));
        }
        if self.min_relative_scale.is_nan() || self.min_relative_scale < 0.0 || self.seasonal_min_periods == 0 {
            return Err("min_relative_scale must be >= 0 and seasonal_min_periods >= 1".into());
        }
        Ok(())
    }
}

/// A score against its threshold: 0.5 at the threshold. Written as
/// `1 / (1 + (T/d)²)` so that a deviation too large to square (a flat series
/// that moves: the scale is the tiny floor) scores 1, not `∞/∞`.
fn score(d: f64, threshold: f64) -> f64 {
    if d.is_nan() {
        return 0.0;
    }
    let r = threshold / d.abs();
    1.0 / (1.0 + r * r)
}

/// The median of `|v − med|` over sorted values, without sorting the
/// deviations: they grow outward from `med` on both sides, so the two sides
/// are merged up to the middle one.
fn median_deviation(sorted: &[f64], med: f64) -> f64 {
    let n = sorted.len();
    let split = sorted.partition_point(|v| *v < med);
    let (mut left, mut right) = (split, split); // next: sorted[left - 1], sorted[right]
    let mut next = || match (left.checked_sub(1).map(|i| med - sorted[i]), sorted.get(right).map(|v| v - med)) {
        (Some(l), Some(r)) if l <= r => {
            left -= 1;
            l
        }
        (_, Some(r)) => {
            right += 1;
            r
        }
        (Some(l), None) => {
            left -= 1;
            l
        }
        (None, None) => 0.0,
    };
    let mut lower = 0.0;
    for _ in 0..n.div_ceil(2) {
        lower = next();
    }
    if n % 2 == 1 {
        lower
    } else {
        (lower + next()) / 2.0
    }
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// One detector's view of a point.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    /// Signed deviation in the detector's own units (σ-like).
    pub deviation: f64,
    pub score: f64,
}

/// Every detector's view of one point, and the point score.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PointScore {
    /// What [`Series::observe`] reports: the persistence rule's score (see
    /// the module documentation); [`Series::score`] reports the point's own.
    pub score: f64,
    /// The point's own score, before the persistence rule.
    #[serde(default)]
    pub point: f64,
    pub zscore: Option<Reading>,
    pub robust: Option<Reading>,
    pub ewma: Option<Reading>,
    pub seasonal: Option<Reading>,
    /// The rolling window's mean and standard deviation (the baseline an
    /// anomaly reports).
    pub mean: f64,
    pub stddev: f64,
}

impl PointScore {
    /// `z 6.1, robust 7.3, ewma 5.2, seasonal 4.8 (hour of week)`.
    pub fn reason(&self) -> String {
        let mut parts = Vec::new();
        let mut add = |name: &str, r: Option<Reading>| {
            if let Some(r) = r {
                parts.push(format!("{name} {:+.1}", r.deviation));
            }
        };
        add("z", self.zscore);
        add("robust", self.robust);
        add("ewma", self.ewma);
        add("seasonal", self.seasonal);
        parts.join(", ")
    }
}

/// An anomaly: the persistence rule held.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Anomaly {
    /// The timestamp (ms) of the point that completed the rule.
    pub ts: i64,
    pub value: f64,
    /// The highest point score among the points that made it.
    pub score: f64,
    pub mean: f64,
    pub stddev: f64,
    pub reason: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Ewma {
    mean: f64,
    var: f64,
    n: u64,
}

/// The last `PERIODS` values, oldest first, held inline in single precision
/// (a series has 192 of these: this keeps a series' state under 16 KiB); on
/// the wire a plain list, of which the newest `PERIODS` are kept when read.
/// A mean beyond single precision's range is held as infinite, and its
/// bucket gives no baseline.
#[derive(Clone, Copy, Debug, Default)]
struct Ring {
    values: [f32; PERIODS],
    len: u8,
    /// Index of the oldest value.
    head: u8,
}

impl Ring {
    fn len(&self) -> usize {
        usize::from(self.len)
    }

    fn push(&mut self, v: f64) {
        let (len, head) = (usize::from(self.len), usize::from(self.head));
        let v = v as f32;
        if len < PERIODS {
            self.values[(head + len) % PERIODS] = v;
            self.len += 1;
        } else {
            self.values[head] = v;
            self.head = ((head + 1) % PERIODS) as u8;
        }
    }

    fn iter(&self) -> impl Iterator<Item = f64> + '_ {
        (0..self.len()).map(|i| f64::from(self.values[(usize::from(self.head) + i) % PERIODS]))
    }
}

impl Serialize for Ring {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for Ring {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut ring = Ring::default();
        for v in Vec::<f64>::deserialize(d)? {
            ring.push(v);
        }
        Ok(ring)
    }
}

/// Per-bucket statistics of earlier periods (days or weeks).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Bucket {
    /// Means of the last periods seen, oldest first (at most `PERIODS`).
    means: Ring,
    /// Pooled within-period variance of those periods.
    within: f64,
    within_n: u32,
    /// The period being filled (its index, wrapped to 32 bits: only
    /// whether it changed matters).
    period: i32,
    n: u32,
    mean: f64,
    m2: f64,
}

/// Periods a seasonal baseline remembers: eight weeks for the hour of the
/// week, eight days for the hour of the day.
const PERIODS: usize = 8;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;
const WEEK_MS: i64 = 7 * DAY_MS;

impl Bucket {
    /// The baseline (center, scale) from completed periods before `period`.
    fn baseline(&self, min_periods: usize) -> Option<(f64, f64)> {
        if self.means.len() < min_periods {
            return None;
        }
        let mut sorted = [0.0; PERIODS];
        let sorted = &mut sorted[..self.means.len()];
        for (slot, m) in sorted.iter_mut().zip(self.means.iter()) {
            *slot = m;
        }
        if sorted.iter().any(|m| !m.is_finite()) {
            return None;
        }
        sorted.sort_unstable_by(f64::total_cmp);
        let center = median(sorted);
        let between = 1.4826 * median_deviation(sorted, center);
        let within = if self.within_n > 0 { self.within } else { 0.0 };
        Some((center, (within + between * between).sqrt()))
    }

    fn add(&mut self, period: i32, x: f64) {
        if self.n > 0 && period != self.period {
            self.close();
        }
        self.period = period;
        self.n = self.n.saturating_add(1);
        let delta = x - self.mean;
        self.mean += delta / f64::from(self.n);
        self.m2 += delta * (x - self.mean);
        if !(self.mean.is_finite() && self.m2.is_finite()) {
            // A jump too large to square: this period starts again from `x`.
            (self.n, self.mean, self.m2) = (1, x, 0.0);
        }
    }

    /// Moves the period being filled into the history.
    fn close(&mut self) {
        self.means.push(self.mean);
        if self.n > 1 {
            let var = self.m2 / f64::from(self.n - 1);
            self.within_n = self.within_n.saturating_add(1);
            let k = f64::from(self.within_n.min(PERIODS as u32));
            self.within += (var - self.within) / k;
        }
        self.n = 0;
        self.mean = 0.0;
        self.m2 = 0.0;
    }
}

/// The seasonal baselines: hour of the week, and hour of the day until the
/// week has enough history.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Seasonal {
    week: Vec<Bucket>,
    day: Vec<Bucket>,
}

impl Seasonal {
    fn new() -> Self {
        Seasonal { week: vec![Bucket::default(); 168], day: vec![Bucket::default(); 24] }
    }

    /// (hour of the week, week, hour of the day, day); the periods' indices
    /// wrapped to 32 bits.
    fn slots(ts: i64) -> (usize, i32, usize, i32) {
        // The Unix epoch was a Thursday; shift so buckets start on Monday 00:00 UTC.
        let t = ts.saturating_add(3 * DAY_MS);
        let week_slot = (t.rem_euclid(WEEK_MS) / HOUR_MS) as usize;
        let day_slot = (t.rem_euclid(DAY_MS) / HOUR_MS) as usize;
        (week_slot, t.div_euclid(WEEK_MS) as i32, day_slot, t.div_euclid(DAY_MS) as i32)
    }

    /// (center, scale, which) for `ts`, from earlier periods only.
    fn baseline(&mut self, ts: i64, min_periods: usize) -> Option<(f64, f64)> {
        let (ws, week, ds, day) = Seasonal::slots(ts);
        // Close a bucket whose period has passed, so its mean counts now.
        for (b, period) in [(&mut self.week[ws], week), (&mut self.day[ds], day)] {
            if b.n > 0 && b.period != period {
                b.close();
            }
        }
        self.week[ws].baseline(min_periods).or_else(|| self.day[ds].baseline(min_periods))
    }

    fn add(&mut self, ts: i64, x: f64) {
        let (ws, week, ds, day) = Seasonal::slots(ts);
        self.week[ws].add(week, x);
        self.day[ds].add(day, x);
    }
}

/// The detectors of one (service, metric) series. Serializable, so that it
/// can be checkpointed and restored (a restart or a partition moving to
/// another replica keeps the seasonal baseline).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Series {
    window: VecDeque<f64>,
    ewma: Ewma,
    seasonal: Seasonal,
    /// Whether each of the last `persist_m` points scored >= 0.5, and its score.
    recent: VecDeque<(bool, f64)>,
    in_episode: bool,
    calm: usize,
    seen: u64,
    /// The newest timestamp observed: points at or before it are replays
    /// (a Kafka rewind, a retried batch) and are ignored.
    #[serde(default)]
    last_ts: Option<i64>,
    /// The window's values in order, kept as points come and go (rebuilt
    /// from the window after a restore).
    #[serde(skip)]
    sorted: Vec<f64>,
}

impl Default for Series {
    fn default() -> Self {
        Series::new()
    }
}

impl Series {
    pub fn new() -> Self {
        Series {
            window: VecDeque::new(),
            ewma: Ewma::default(),
            seasonal: Seasonal::new(),
            recent: VecDeque::new(),
            in_episode: false,
            calm: 0,
            seen: 0,
            last_ts: None,
            sorted: Vec::new(),
        }
    }

    /// Scores `x` at `ts` (ms) against what came before, then learns it.
    /// A value that is not finite scores 0 and is not learnt.
    pub fn score(&mut self, cfg: &DetectorConfig, ts: i64, x: f64) -> PointScore {
        let n = self.window.len();
        let mut out = PointScore {
            score: 0.0,
            point: 0.0,
            zscore: None,
            robust: None,
            ewma: None,
            seasonal: None,
            mean: x,
            stddev: 0.0,
        };
        if !x.is_finite() {
            out.mean = 0.0;
            return out;
        }
        if n > 0 {
            // In units of the window's largest magnitude, so that neither the
            // sum nor the squares overflow, whatever the values.
            let unit = self.window.iter().fold(0.0_f64, |m, v| m.max(v.abs())).max(f64::MIN_POSITIVE);
            let mean = self.window.iter().map(|v| v / unit).sum::<f64>() / n as f64;
            let var =
                self.window.iter().map(|v| (v / unit - mean) * (v / unit - mean)).sum::<f64>() / (n.max(2) - 1) as f64;
            out.mean = mean * unit;
            out.stddev = (var.sqrt() * unit).min(f64::MAX);
        }
        let floor = |level: f64| (cfg.min_relative_scale * level.abs()).max(f64::MIN_POSITIVE);
        if n >= cfg.warmup {
            let d = (x - out.mean) / out.stddev.max(floor(out.mean));
            out.zscore = Some(Reading { deviation: d, score: score(d, cfg.z_threshold) });

            if self.sorted.len() != n {
                self.sorted = self.window.iter().copied().collect();
                self.sorted.sort_unstable_by(f64::total_cmp);
            }
            let med = median(&self.sorted);
            // 1.4826 · MAD estimates σ for normal data; 0.6745 = 1 / 1.4826.
            let mad = median_deviation(&self.sorted, med);
            let d = 0.6745 * (x - med) / mad.max(floor(med) * 0.6745);
            out.robust = Some(Reading { deviation: d, score: score(d, cfg.mad_threshold) });

            let d = (x - self.ewma.mean) / self.ewma.var.sqrt().max(floor(self.ewma.mean));
            out.ewma = Some(Reading { deviation: d, score: score(d, cfg.ewma_threshold) });

            let mut rolling = [out.zscore, out.robust, out.ewma].map(|r| r.map_or(0.0, |r| r.score));
            rolling.sort_by(f64::total_cmp);
            out.score = rolling[1];
        }
        if let Some((center, scale)) = self.seasonal.baseline(ts, cfg.seasonal_min_periods) {
            let d = (x - center) / scale.max(floor(center));
            let r = Reading { deviation: d, score: score(d, cfg.seasonal_threshold) };
            out.seasonal = Some(r);
            if n >= cfg.warmup {
                out.score = out.score.min(r.score);
            }
        }
        out.point = out.score;
        self.learn(cfg, ts, x);
        out
    }

    fn learn(&mut self, cfg: &DetectorConfig, ts: i64, x: f64) {
        if !x.is_finite() {
            return;
        }
        self.window.push_back(x);
        let at = self.sorted.partition_point(|v| v.total_cmp(&x).is_lt());
        self.sorted.insert(at, x);
        if self.window.len() > cfg.window {
            if let Some(old) = self.window.pop_front() {
                let at = self.sorted.partition_point(|v| v.total_cmp(&old).is_lt());
                self.sorted.remove(at);
            }
        }
        let e = &mut self.ewma;
        if e.n == 0 {
            e.mean = x;
        } else {
            let delta = x - e.mean;
            e.mean += cfg.ewma_alpha * delta;
            e.var = (1.0 - cfg.ewma_alpha) * (e.var + cfg.ewma_alpha * delta * delta);
            if !(e.mean.is_finite() && e.var.is_finite()) {
                // A jump too large to square: start again from this value.
                *e = Ewma { mean: x, var: 0.0, n: 0 };
            }
        }
        e.n += 1;
        self.seasonal.add(ts, x);
        self.seen += 1;
    }

    /// Bytes this series holds: the struct and what its collections own.
    /// (The seasonal buckets hold their periods inline.)
    pub fn state_bytes(&self) -> usize {
        let f = std::mem::size_of::<f64>();
        std::mem::size_of::<Series>()
            + self.window.capacity() * f
            + self.recent.capacity() * std::mem::size_of::<(bool, f64)>()
            + self.sorted.capacity() * f
            + (self.seasonal.week.capacity() + self.seasonal.day.capacity()) * std::mem::size_of::<Bucket>()
    }

    /// The newest timestamp this series has observed.
    pub fn last_ts(&self) -> Option<i64> {
        self.last_ts
    }

    /// Scores the point and applies the persistence rule: Some once per
    /// episode. A point at or before the last one observed is a replay: None,
    /// and nothing learnt from it.
    pub fn observe(&mut self, cfg: &DetectorConfig, ts: i64, x: f64) -> Option<(PointScore, Option<Anomaly>)> {
        if self.last_ts.is_some_and(|last| ts <= last) {
            return None;
        }
        self.last_ts = Some(ts);
        Some(self.observe_new(cfg, ts, x))
    }

    fn observe_new(&mut self, cfg: &DetectorConfig, ts: i64, x: f64) -> (PointScore, Option<Anomaly>) {
        let mut p = self.score(cfg, ts, x);
        let high = p.score >= 0.5;
        self.recent.push_back((high, p.score));
        if self.recent.len() > cfg.persist_m {
            self.recent.pop_front();
        }
        // The persistence rule as a score: the `persist_n`-th highest of the
        // last `persist_m` points' scores, at least 0.5 exactly when the rule
        // holds. A lone blip never scores high.
        p.point = p.score;
        // Without sorting a copy per point: the `persist_n`-th highest is the
        // largest score that at least `persist_n` of them reach.
        p.score = self
            .recent
            .iter()
            .map(|(_, s)| *s)
            .filter(|s| self.recent.iter().filter(|(_, t)| t >= s).count() >= cfg.persist_n)
            .fold(0.0, f64::max);
        if self.in_episode {
            self.calm = if high { 0 } else { self.calm + 1 };
            if self.calm >= cfg.persist_m {
                self.in_episode = false;
                self.calm = 0;
            }
            return (p, None);
        }
        let hits = self.recent.iter().filter(|(h, _)| *h).count();
        if high && hits >= cfg.persist_n {
            self.in_episode = true;
            self.calm = 0;
            let best = self.recent.iter().map(|(_, s)| *s).fold(0.0, f64::max);
            let reason = format!("{} of the last {} points scored >= 0.5; {}", hits, self.recent.len(), p.reason());
            let a = Anomaly { ts, value: x, score: best, mean: p.mean, stddev: p.stddev, reason };
            return (p, Some(a));
        }
        (p, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic noise source: xorshift, uniform in [-1, 1).
    struct Noise(u64);
    impl Noise {
        fn next(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 11) as f64 / (1u64 << 52) as f64 - 1.0
        }
    }

    const MIN: i64 = 60_000;

    fn run(series: &[(i64, f64)]) -> Vec<(usize, Anomaly)> {
        run_with(&DetectorConfig::default(), series)
    }

    fn run_with(cfg: &DetectorConfig, series: &[(i64, f64)]) -> Vec<(usize, Anomaly)> {
        let mut s = Series::new();
        series
            .iter()
            .enumerate()
            .filter_map(|(i, (ts, x))| s.observe(cfg, *ts, *x).and_then(|o| o.1).map(|a| (i, a)))
            .collect()
    }

    #[test]
    fn a_step_in_a_noisy_series_is_one_anomaly() {
        let mut noise = Noise(7);
        let series: Vec<(i64, f64)> = (0..400)
            .map(|i| (i * MIN, 100.0 + 3.0 * noise.next() + if (200..230).contains(&i) { 60.0 } else { 0.0 }))
            .collect();
        let found = run(&series);
        assert_eq!(found.len(), 1, "{found:?}");
        let (at, a) = &found[0];
        assert!((202..=205).contains(at), "raised at point {at}, the third high point is 202");
        assert!(a.score > 0.9 && a.reason.contains("3 of the last 5"), "{a:?}");
        assert!((a.mean - 100.0).abs() < 2.0);
    }

    #[test]
    fn a_single_point_blip_does_not_alert() {
        let mut noise = Noise(11);
        let series: Vec<(i64, f64)> =
            (0..300).map(|i| (i * MIN, 50.0 + noise.next() + if i == 150 || i == 220 { 40.0 } else { 0.0 })).collect();
        assert!(run(&series).is_empty());
    }

    #[test]
    fn noise_alone_does_not_alert() {
        let mut noise = Noise(3);
        let series: Vec<(i64, f64)> = (0..5000).map(|i| (i * MIN, 200.0 + 20.0 * noise.next())).collect();
        assert!(run(&series).is_empty());
    }

    /// Traffic that jumps from 100 to 400 at 09:00 and back at 18:00 every
    /// day: the rolling detectors see a step twice a day; the seasonal one
    /// knows the hour. After the first two days, nothing alerts, and a real
    /// spike on day 5 still does.
    #[test]
    fn daily_seasonality_does_not_alert_and_a_real_spike_does() {
        let mut noise = Noise(5);
        let day = 1440;
        let series: Vec<(i64, f64)> = (0..6 * day)
            .map(|i| {
                let minute = i % day;
                let level = if (540..1080).contains(&minute) { 400.0 } else { 100.0 };
                let spike = if (4 * day + 300..4 * day + 330).contains(&i) { 300.0 } else { 0.0 };
                (i * MIN, level + 5.0 * noise.next() + spike)
            })
            .collect();
        let found: Vec<i64> = run(&series).into_iter().map(|(i, _)| i as i64).filter(|i| *i >= 2 * day).collect();
        assert_eq!(found.len(), 1, "{found:?}");
        assert!((4 * day + 302..4 * day + 306).contains(&found[0]), "{found:?}");
        // Without the seasonal baseline the same days alert at every step.
        let blind = DetectorConfig { seasonal_min_periods: 1000, ..DetectorConfig::default() };
        let steps = run_with(&blind, &series).into_iter().filter(|(i, _)| *i as i64 >= 2 * day).count();
        assert!(steps >= 6, "{steps} alerts without seasonality");
    }

    #[test]
    fn weekday_and_weekend_differ_without_alerting() {
        // Hourly samples over five weeks; weekends run at a third of weekday load.
        let mut noise = Noise(9);
        let hour = 60 * MIN;
        let series: Vec<(i64, f64)> = (0..24 * 7 * 5)
            .map(|h| {
                let ts = h * hour;
                let (_, _, _, day) = Seasonal::slots(ts);
                let weekend = day.rem_euclid(7) >= 5;
                (ts, if weekend { 100.0 } else { 300.0 } + 4.0 * noise.next())
            })
            .collect();
        let late: Vec<usize> = run(&series).into_iter().map(|(i, _)| i).filter(|i| *i >= 24 * 7 * 2).collect();
        assert!(late.is_empty(), "{late:?}");
        let blind = DetectorConfig { seasonal_min_periods: 1000, ..DetectorConfig::default() };
        let weekends = run_with(&blind, &series).into_iter().filter(|(i, _)| *i >= 24 * 7 * 2).count();
        assert!(weekends >= 3, "{weekends} alerts without seasonality");
    }

    #[test]
    fn scores_are_in_range_and_half_at_the_threshold() {
        assert_eq!(score(0.0, 4.0), 0.0);
        assert_eq!(score(4.0, 4.0), 0.5);
        assert_eq!(score(-4.0, 4.0), 0.5);
        assert!((score(8.0, 4.0) - 0.8).abs() < 1e-12);
        assert_eq!(score(f64::INFINITY, 4.0), 1.0);
        assert_eq!(score(f64::NAN, 4.0), 0.0);
    }

    #[test]
    fn the_episode_ends_and_a_second_fault_alerts_again() {
        let mut noise = Noise(13);
        let series: Vec<(i64, f64)> = (0..600)
            .map(|i| {
                let f = (200..220).contains(&i) || (450..470).contains(&i);
                (i * MIN, 10.0 + 0.5 * noise.next() + if f { 8.0 } else { 0.0 })
            })
            .collect();
        let found: Vec<usize> = run(&series).into_iter().map(|(i, _)| i).collect();
        assert_eq!(found.len(), 2, "{found:?}");
    }

    #[test]
    fn bad_parameters_are_refused() {
        let bad = DetectorConfig { persist_n: 6, ..DetectorConfig::default() };
        assert!(bad.validate().is_err());
        let bad = DetectorConfig { ewma_alpha: 1.5, ..DetectorConfig::default() };
        assert!(bad.validate().is_err());
        assert!(DetectorConfig::default().validate().is_ok());
    }

    /// Values from the pathological families a real series can hold, mixed.
    fn value() -> impl proptest::strategy::Strategy<Value = f64> {
        use proptest::prelude::*;
        prop_oneof![
            Just(0.0),
            Just(-0.0),
            Just(1.0),
            Just(f64::MAX),
            Just(f64::MIN),
            Just(f64::MIN_POSITIVE),
            Just(5e-324),
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            -1e3..1e3f64,
            -1e300..1e300f64,
            any::<f64>(),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(400))]

        /// Whatever the series (constant stretches, zeros, negatives, huge and
        /// tiny magnitudes, NaN and infinities, repeated, backwards and
        /// far-apart timestamps, a single point), every score is a finite
        /// number in [0, 1], and every anomaly reports finite figures.
        #[test]
        fn every_score_is_finite_and_within_0_and_1(
            runs in proptest::collection::vec((value(), 1usize..80, -2i64..4, 0u8..4), 1..12),
            start in -1_000_000_000_000i64..4_000_000_000_000,
        ) {
            let cfg = DetectorConfig::default();
            let mut s = Series::new();
            let mut ts = start;
            for (x, len, step, kind) in runs {
                for i in 0..len {
                    // A run of one value, of a ramp around it, or alternating with zero.
                    let x = match kind {
                        0 => x,
                        1 => x + i as f64,
                        2 => if i % 2 == 0 { x } else { 0.0 },
                        _ => x * (i as f64).sin(),
                    };
                    let direct = s.clone().score(&cfg, ts, x);
                    proptest::prop_assert!(direct.score.is_finite() && (0.0..=1.0).contains(&direct.score), "{x} → {direct:?}");
                    if let Some((p, anomaly)) = s.observe(&cfg, ts, x) {
                        proptest::prop_assert!(p.score.is_finite() && (0.0..=1.0).contains(&p.score), "{x} → {p:?}");
                        for r in [p.zscore, p.robust, p.ewma, p.seasonal].into_iter().flatten() {
                            proptest::prop_assert!((0.0..=1.0).contains(&r.score), "{r:?}");
                        }
                        if let Some(a) = anomaly {
                            proptest::prop_assert!(
                                [a.value, a.score, a.mean, a.stddev].iter().all(|v| v.is_finite()),
                                "{a:?}"
                            );
                        }
                    }
                    // Steps of -2 to +3 minutes: repeats and backwards moves included.
                    ts = ts.saturating_add(step * MIN);
                }
                ts = ts.saturating_add(3_600_000 * i64::from(kind)); // and gaps of hours
            }
        }
    }

    proptest::proptest! {
        /// The merged median deviation is the sorted one, exactly.
        #[test]
        fn the_median_deviation_without_sorting_is_the_sorted_one(
            mut values in proptest::collection::vec(-1e6..1e6f64, 1..80),
            repeats in 0usize..20,
        ) {
            values.extend(values.clone().into_iter().take(repeats)); // ties
            values.sort_unstable_by(f64::total_cmp);
            let med = median(&values);
            let mut dev: Vec<f64> = values.iter().map(|v| (v - med).abs()).collect();
            dev.sort_unstable_by(f64::total_cmp);
            proptest::prop_assert_eq!(median_deviation(&values, med), median(&dev));
        }
    }

    #[test]
    fn a_ring_keeps_the_newest_periods_and_reads_longer_lists() {
        let mut r = Ring::default();
        for v in 1..=6 {
            r.push(f64::from(v));
        }
        assert_eq!(r.iter().collect::<Vec<_>>(), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        for v in 7..=10 {
            r.push(f64::from(v));
        }
        assert_eq!(r.iter().collect::<Vec<_>>(), [3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]);
        assert_eq!(serde_json::to_string(&r).unwrap(), "[3.0,4.0,5.0,6.0,7.0,8.0,9.0,10.0]");
        // A longer list keeps its newest values.
        let long: Ring = serde_json::from_str("[1,2,3,4,5,6,7,8,9,10]").unwrap();
        assert_eq!(long.iter().collect::<Vec<_>>(), [3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]);
    }

    #[test]
    fn a_restored_series_scores_as_the_uninterrupted_one() {
        let cfg = DetectorConfig::default();
        let mut noise = Noise(13);
        let mut a = Series::new();
        for i in 0..200 {
            a.observe(&cfg, i * MIN, 50.0 + noise.next());
        }
        let mut b: Series = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        for i in 200..260 {
            let x = 50.0 + noise.next() + if i > 230 { 9.0 } else { 0.0 };
            // serde_json may read a float back one unit in the last place off.
            let (pa, aa) = a.observe(&cfg, i * MIN, x).unwrap();
            let (pb, ab) = b.observe(&cfg, i * MIN, x).unwrap();
            assert!((pa.score - pb.score).abs() < 1e-9 && aa.is_some() == ab.is_some(), "point {i}: {pa:?} {pb:?}");
            let robust = |p: &PointScore| p.robust.unwrap().deviation;
            assert!((robust(&pa) - robust(&pb)).abs() < 1e-9, "the median and MAD of the rebuilt order, point {i}");
        }
    }

    #[test]
    fn a_flat_zero_series_that_moves_scores_one_not_nan() {
        let mut s = Series::new();
        let cfg = DetectorConfig::default();
        for i in 0..600 {
            s.observe(&cfg, i * MIN, 0.0);
        }
        let (p, _) = s.observe(&cfg, 600 * MIN, 1.0).unwrap();
        assert_eq!(p.point, 1.0, "{p:?}");
        assert_eq!(p.score, 0.0, "one point is not yet three of five: {p:?}");
        s.observe(&cfg, 601 * MIN, 1.0).unwrap();
        let (p, anomaly) = s.observe(&cfg, 602 * MIN, 1.0).unwrap();
        assert!(p.score >= 0.5 && anomaly.is_some(), "{p:?}");
    }
}
