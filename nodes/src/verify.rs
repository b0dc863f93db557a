//! Verification: did the action bring the metric back to its baseline?

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VerifyConfig {
    /// A reading within this many standard deviations of the baseline mean is recovered.
    pub sigma_tolerance: f64,
    /// Recovered readings needed in a row.
    pub consecutive: usize,
    /// A reading this many times further from the baseline than the detection
    /// was is "worse": roll back at once.
    pub worse_factor: f64,
}

impl Default for VerifyConfig {
    fn default() -> Self {
        VerifyConfig { sigma_tolerance: 2.0, consecutive: 3, worse_factor: 1.2 }
    }
}

/// The baseline that triggered detection, and the deviation detected.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    pub mean: f64,
    pub stddev: f64,
    /// The reading that opened the incident.
    pub detected: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// `consecutive` readings in a row within tolerance, ending at reading `at`.
    Recovered { at: usize },
    /// A reading got further from normal than at detection: roll back now.
    Worse { at: usize, reading: f64 },
    /// Not recovered (yet): keep waiting while the window lasts, then roll back.
    NotRecovered,
}

/// In words, for the postmortem and the console (readings counted from 1).
impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Recovered { at } => write!(f, "Recovered: back within tolerance, confirmed at reading {}", at + 1),
            Verdict::Worse { at, reading } => {
                write!(f, "Worse: reading {} ({reading:.3}) was further from normal than at detection", at + 1)
            }
            Verdict::NotRecovered => f.write_str("Not recovered within the verification window"),
        }
    }
}

/// Judges post-action readings, oldest first, against the baseline.
pub fn assess(config: &VerifyConfig, baseline: &Baseline, readings: &[f64]) -> Verdict {
    let spread = baseline.stddev.max(f64::EPSILON);
    let detected_distance = (baseline.detected - baseline.mean).abs();
    let mut streak = 0;
    for (i, &r) in readings.iter().enumerate() {
        if !r.is_finite() {
            streak = 0;
            continue;
        }
        let distance = (r - baseline.mean).abs();
        if detected_distance > 0.0 && distance > detected_distance * config.worse_factor {
            return Verdict::Worse { at: i, reading: r };
        }
        if distance <= config.sigma_tolerance * spread {
            streak += 1;
            if streak >= config.consecutive.max(1) {
                return Verdict::Recovered { at: i };
            }
        } else {
            streak = 0;
        }
    }
    Verdict::NotRecovered
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BASE: Baseline = Baseline { mean: 100.0, stddev: 10.0, detected: 300.0 };

    #[test]
    fn verdicts() {
        let c = VerifyConfig::default();
        for (readings, want) in [
            (vec![250.0, 115.0, 105.0, 98.0], Verdict::Recovered { at: 3 }),
            (vec![115.0, 130.0, 105.0, 98.0], Verdict::NotRecovered),
            (vec![115.0, 105.0, 130.0, 101.0, 99.0, 100.0], Verdict::Recovered { at: 5 }),
            (vec![280.0, 400.0, 100.0], Verdict::Worse { at: 1, reading: 400.0 }),
            (vec![], Verdict::NotRecovered),
            (vec![100.0, f64::NAN, 100.0, 100.0], Verdict::NotRecovered),
        ] {
            assert_eq!(assess(&c, &BASE, &readings), want, "{readings:?}");
        }
    }

    proptest! {
        #[test]
        fn readings_at_the_baseline_always_recover(n in 3usize..20) {
            prop_assert_eq!(assess(&VerifyConfig::default(), &BASE, &vec![100.0; n]), Verdict::Recovered { at: 2 });
        }

        #[test]
        fn the_verdict_never_panics(readings in proptest::collection::vec(any::<f64>(), 0..50)) {
            let _ = assess(&VerifyConfig::default(), &BASE, &readings);
        }
    }
}
