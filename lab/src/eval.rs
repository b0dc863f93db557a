//! `sentinel eval`: the detector scored on a labelled corpus in the layout
//! of the Numenta Anomaly Benchmark (`data/**.csv` with `timestamp,value`,
//! `labels/combined_windows.json` mapping each file to its anomaly windows),
//! by the benchmark's published scoring method:
//!
//! - The first 15 % of each file (at most 750 rows) is probationary: nothing
//!   detected there counts.
//! - A detection inside a window is a true positive, rewarded by how early it
//!   came: `A_TP · σ(p)`, with `p` from −1 at the window's first row to about
//!   0 at its last, and the scaled sigmoid `σ(p) = 2 / (1 + e^{5p}) − 1`. Only
//!   a window's earliest detection counts.
//! - A detection outside every window is a false positive, costing
//!   `A_FP · σ(p)` with `p` its distance past the previous window's end in
//!   that window's widths (`σ` is −1 from `p > 3` on), or the full `A_FP` when
//!   no window came before: a detection just after a window costs little.
//! - A window with no detection costs `A_FN`.
//! - The profiles' weights (`A_TP`, `A_FP`, `A_FN`): standard (1, 0.11, 1),
//!   reward low FP (1, 0.22, 1), reward low FN (1, 0.11, 2).
//! - The corpus score is normalised between the null detector (nothing
//!   detected: `−A_FN` per window) as 0 and the perfect one (every window
//!   detected at its first row) as 100, after choosing the one threshold on
//!   the point score that maximises the raw score over the whole corpus (a
//!   sweep over 0, 0.001, …, 1).
//!
//! Beside it, the honest figure: the anomalies the persistence rule actually
//! raises, with no threshold to tune, scored the same way and as precision
//! (raised anomalies inside a window) and recall (windows with one).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use serde::Serialize;
use telemetry::detect::{DetectorConfig, Series};
use telemetry::replay::parse_timestamp;

/// The weights of one scoring profile.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Profile {
    pub name: &'static str,
    pub tp: f64,
    pub fp: f64,
    pub fn_: f64,
}

pub const PROFILES: [Profile; 3] = [
    Profile { name: "standard", tp: 1.0, fp: 0.11, fn_: 1.0 },
    Profile { name: "reward_low_fp", tp: 1.0, fp: 0.22, fn_: 1.0 },
    Profile { name: "reward_low_fn", tp: 1.0, fp: 0.11, fn_: 2.0 },
];

/// One labelled series, scored.
#[derive(Clone, Debug)]
pub struct Scored {
    pub name: String,
    /// The point score of each row (0 for a replayed timestamp).
    pub scores: Vec<f64>,
    /// Whether the persistence rule raised an anomaly at each row.
    pub raised: Vec<bool>,
    /// Anomaly windows as inclusive row ranges.
    pub windows: Vec<(usize, usize)>,
}

/// NAB's scaled sigmoid.
fn scaled_sigmoid(position: f64) -> f64 {
    if position > 3.0 {
        -1.0
    } else {
        2.0 / (1.0 + (5.0 * position).exp()) - 1.0
    }
}

fn probation(rows: usize) -> usize {
    ((rows as f64 * 0.15) as usize).min(750)
}

/// What one file's detections earned.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq)]
pub struct Tally {
    pub raw: f64,
    pub tp: usize,
    pub fp: usize,
    pub fn_: usize,
}

/// Scores one file's detections (`detected(row)`) under a profile.
pub fn tally(rows: usize, windows: &[(usize, usize)], profile: &Profile, detected: impl Fn(usize) -> bool) -> Tally {
    let mut t = Tally::default();
    let mut found = vec![false; windows.len()];
    let mut w = 0; // the first window not yet behind us
    for i in probation(rows)..rows {
        while w < windows.len() && windows[w].1 < i {
            w += 1;
        }
        if !detected(i) {
            continue;
        }
        match windows.get(w) {
            Some(&(start, end)) if start <= i => {
                if !found[w] {
                    found[w] = true;
                    let width = (end - start + 1) as f64;
                    let position = -((end - i + 1) as f64) / width;
                    t.raw += profile.tp * scaled_sigmoid(position);
                    t.tp += 1;
                }
            }
            _ => {
                t.fp += 1;
                t.raw += match w.checked_sub(1).map(|p| windows[p]) {
                    Some((start, end)) => {
                        let position = (i - end) as f64 / (end - start + 1) as f64;
                        profile.fp * scaled_sigmoid(position)
                    }
                    None => -profile.fp,
                };
            }
        }
    }
    t.fn_ = found.iter().filter(|f| !**f).count();
    t.raw -= profile.fn_ * t.fn_ as f64;
    t
}

/// The corpus score of one profile at its best threshold.
#[derive(Clone, Debug, Serialize)]
pub struct ProfileScore {
    pub profile: &'static str,
    pub threshold: f64,
    pub score: f64,
    pub raw: f64,
    pub null: f64,
    pub perfect: f64,
    pub per_file: Vec<(String, Tally)>,
}

fn normalise(raw: f64, null: f64, perfect: f64) -> f64 {
    if perfect == null {
        return 0.0;
    }
    100.0 * (raw - null) / (perfect - null)
}

fn bounds(files: &[Scored], profile: &Profile) -> (f64, f64) {
    let windows: usize = files.iter().map(|f| f.windows.len()).sum();
    (-profile.fn_ * windows as f64, profile.tp * scaled_sigmoid(-1.0) * windows as f64)
}

/// Sweeps the threshold for one profile.
pub fn best_threshold(files: &[Scored], profile: &Profile) -> ProfileScore {
    let (null, perfect) = bounds(files, profile);
    let mut best: Option<(f64, f64)> = None;
    for k in 0..=1000 {
        let threshold = f64::from(k) / 1000.0;
        let raw: f64 =
            files.iter().map(|f| tally(f.scores.len(), &f.windows, profile, |i| f.scores[i] >= threshold).raw).sum();
        // Ties go to the higher threshold: fewer detections for the same score.
        if best.is_none_or(|(_, b)| raw >= b) {
            best = Some((threshold, raw));
        }
    }
    let (threshold, raw) = best.expect("a threshold was tried");
    let per_file = files
        .iter()
        .map(|f| (f.name.clone(), tally(f.scores.len(), &f.windows, profile, |i| f.scores[i] >= threshold)))
        .collect();
    ProfileScore {
        profile: profile.name,
        threshold,
        score: normalise(raw, null, perfect),
        raw,
        null,
        perfect,
        per_file,
    }
}

/// The anomalies raised by the persistence rule, as they are.
#[derive(Clone, Debug, Serialize)]
pub struct Raised {
    /// NAB score (standard profile) with the raised anomalies as the detections.
    pub score: f64,
    pub anomalies: usize,
    pub in_window: usize,
    pub windows: usize,
    pub windows_found: usize,
    pub precision: f64,
    pub recall: f64,
}

pub fn raised(files: &[Scored]) -> Raised {
    let profile = &PROFILES[0];
    let (null, perfect) = bounds(files, profile);
    let raw: f64 = files.iter().map(|f| tally(f.raised.len(), &f.windows, profile, |i| f.raised[i]).raw).sum();
    let mut r = Raised {
        score: normalise(raw, null, perfect),
        anomalies: 0,
        in_window: 0,
        windows: 0,
        windows_found: 0,
        precision: 0.0,
        recall: 0.0,
    };
    for f in files {
        let first = probation(f.raised.len());
        let hits: Vec<usize> = (first..f.raised.len()).filter(|i| f.raised[*i]).collect();
        r.anomalies += hits.len();
        r.in_window += hits.iter().filter(|i| f.windows.iter().any(|(s, e)| (s..=e).contains(i))).count();
        r.windows += f.windows.len();
        r.windows_found += f.windows.iter().filter(|(s, e)| hits.iter().any(|i| (s..=e).contains(&i))).count();
    }
    r.precision = if r.anomalies == 0 { 0.0 } else { r.in_window as f64 / r.anomalies as f64 };
    r.recall = if r.windows == 0 { 0.0 } else { r.windows_found as f64 / r.windows as f64 };
    r
}

/// Reads a corpus and scores every file with the detector.
pub fn score_corpus(dir: &Path, config: &DetectorConfig) -> anyhow::Result<Vec<Scored>> {
    let labels_path = dir.join("labels/combined_windows.json");
    let labels: BTreeMap<String, Vec<[String; 2]>> = serde_json::from_slice(
        &std::fs::read(&labels_path).with_context(|| format!("reading {}", labels_path.display()))?,
    )
    .with_context(|| format!("{} is not a map of file to windows", labels_path.display()))?;
    let data = dir.join("data");
    let mut files = Vec::new();
    for (name, windows) in &labels {
        let path = data.join(name);
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        files.push(score_file(name, &text, windows, config).with_context(|| path.display().to_string())?);
    }
    let listed: Vec<PathBuf> = csv_files(&data)?;
    if let Some(extra) = listed.iter().find(|p| !labels.contains_key(&relative(&data, p))) {
        bail!("{} has no entry in {}", extra.display(), labels_path.display());
    }
    if files.is_empty() {
        bail!("{} labels no file", labels_path.display());
    }
    Ok(files)
}

fn relative(base: &Path, path: &Path) -> String {
    path.strip_prefix(base).unwrap_or(path).to_string_lossy().replace('\\', "/")
}

fn csv_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "csv") {
                out.push(path);
            }
        }
    }
    Ok(out)
}

/// One file: every row scored, the windows turned into row ranges.
pub fn score_file(name: &str, text: &str, windows: &[[String; 2]], config: &DetectorConfig) -> anyhow::Result<Scored> {
    let mut series = Series::new();
    let (mut times, mut scores, mut raised) = (Vec::new(), Vec::new(), Vec::new());
    telemetry::replay::for_each_row(text.as_bytes(), |row| {
        let (score, anomaly) =
            series.observe(config, row.ts, row.value).map_or((0.0, false), |(p, a)| (p.score, a.is_some()));
        times.push(row.ts);
        scores.push(score);
        raised.push(anomaly);
        Ok(())
    })?;
    let windows = windows
        .iter()
        .map(|[from, to]| {
            let (from, to) =
                (parse_timestamp(from).map_err(anyhow::Error::msg)?, parse_timestamp(to).map_err(anyhow::Error::msg)?);
            let start = times.iter().position(|t| *t >= from);
            let end = times.iter().rposition(|t| *t <= to);
            match (start, end) {
                (Some(s), Some(e)) if s <= e => Ok((s, e)),
                _ => bail!("window {from}..{to} holds no row"),
            }
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if windows.windows(2).any(|w| w[1].0 <= w[0].1) {
        bail!("windows overlap or are out of order");
    }
    Ok(Scored { name: name.to_owned(), scores, raised, windows })
}

/// Everything `sentinel eval` prints.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub files: usize,
    pub windows: usize,
    pub profiles: Vec<ProfileScore>,
    pub raised: Raised,
}

pub fn evaluate(dir: &Path, config: &DetectorConfig) -> anyhow::Result<Report> {
    let files = score_corpus(dir, config)?;
    Ok(Report {
        files: files.len(),
        windows: files.iter().map(|f| f.windows.len()).sum(),
        profiles: PROFILES.iter().map(|p| best_threshold(&files, p)).collect(),
        raised: raised(&files),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STANDARD: Profile = PROFILES[0];

    #[test]
    fn the_scaled_sigmoid_rewards_early_and_forgives_just_late() {
        assert!((scaled_sigmoid(-1.0) - 0.98661).abs() < 1e-5);
        assert_eq!(scaled_sigmoid(0.0), 0.0);
        assert!(scaled_sigmoid(0.5) < -0.8);
        assert_eq!(scaled_sigmoid(3.5), -1.0);
    }

    #[test]
    fn a_window_counts_its_earliest_detection_once() {
        // 1000 rows: probation is the first 150. One window, rows 400..=499.
        let windows = [(400, 499)];
        let none = tally(1000, &windows, &STANDARD, |_| false);
        assert_eq!((none.raw, none.fn_), (-1.0, 1));
        let first = tally(1000, &windows, &STANDARD, |i| i == 400);
        assert!((first.raw - 0.98661).abs() < 1e-4, "{first:?}");
        let late = tally(1000, &windows, &STANDARD, |i| i == 480);
        assert!(late.raw > 0.0 && late.raw < first.raw, "{late:?}");
        let twice = tally(1000, &windows, &STANDARD, |i| i == 400 || i == 401);
        assert_eq!((twice.tp, twice.fp), (1, 0), "the second detection in the window is ignored");
        assert_eq!(twice.raw, first.raw);
    }

    #[test]
    fn false_positives_cost_by_where_they_fall() {
        let windows = [(400, 499)];
        let before = tally(1000, &windows, &STANDARD, |i| i == 300);
        assert!((before.raw - (-1.0 - 0.11)).abs() < 1e-9, "{before:?}");
        let just_after = tally(1000, &windows, &STANDARD, |i| i == 501);
        assert!(just_after.raw > -1.0 - 0.02, "{just_after:?}");
        let far_after = tally(1000, &windows, &STANDARD, |i| i == 950);
        assert!((far_after.raw - (-1.0 - 0.11)).abs() < 1e-9, "{far_after:?}");
        let probationary = tally(1000, &windows, &STANDARD, |i| i == 10);
        assert_eq!(probationary.fp, 0, "nothing counts in the probationary period");
    }

    #[test]
    fn the_best_threshold_scores_a_perfect_detector_100_and_a_silent_one_0() {
        let mut scores = vec![0.1; 1000];
        scores[400] = 0.9;
        let perfect = Scored { name: "a".into(), scores, raised: vec![false; 1000], windows: vec![(400, 499)] };
        let best = best_threshold(std::slice::from_ref(&perfect), &STANDARD);
        assert!((best.score - 100.0).abs() < 1e-6, "{best:?}");
        assert!(best.threshold > 0.1 && best.threshold <= 0.9);
        let silent = Scored { scores: vec![0.0; 1000], ..perfect.clone() };
        let best = best_threshold(&[silent], &STANDARD);
        assert!(best.score.abs() < 1e-9, "{best:?}");
        let r = raised(&[Scored { raised: (0..1000).map(|i| i == 410 || i == 900).collect(), ..perfect }]);
        assert_eq!((r.anomalies, r.in_window, r.windows_found), (2, 1, 1));
        assert_eq!((r.precision, r.recall), (0.5, 1.0));
    }

    #[test]
    fn a_file_is_scored_row_by_row_with_its_windows_as_row_ranges() {
        let mut text = String::from("timestamp,value\n");
        for i in 0..300 {
            let v = if (200..230).contains(&i) { 500.0 } else { 100.0 + (i % 7) as f64 };
            text.push_str(&format!("2026-03-02 {:02}:{:02}:00,{v}\n", i / 60, i % 60));
        }
        let windows = [["2026-03-02 03:10:00.000000".to_owned(), "2026-03-02 03:40:00.000000".to_owned()]];
        let f = score_file("x.csv", &text, &windows, &DetectorConfig::default()).unwrap();
        assert_eq!(f.windows, vec![(190, 220)]);
        assert_eq!(f.scores.len(), 300);
        assert!(f.raised[200..=205].iter().any(|r| *r), "the step is raised");
        let bad = [["2027-01-01 00:00:00".to_owned(), "2027-01-02 00:00:00".to_owned()]];
        assert!(score_file("x.csv", &text, &bad, &DetectorConfig::default()).is_err(), "a window past the data");
    }
}
