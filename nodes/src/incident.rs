//! What an incident is made of: the detection that opened it, its stable
//! fingerprint, and its deterministic severity.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use engine::Timestamp;
use serde::{Deserialize, Serialize};

/// Where a detection came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum Source {
    /// A streaming detector: its score in [0, 1] and its reason.
    Detector { detector: String, score: f64, reason: String },
    /// An Alertmanager alert group; its own fingerprint and group key kept
    /// verbatim, and the rule's expression when the alert's `generatorURL` carries it.
    Alertmanager {
        group_key: String,
        alertname: String,
        fingerprints: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expr: Option<String>,
        /// The labels the group is keyed by (Alertmanager's `group_by`): the
        /// series of `expr` that belong to this group carry these.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        group_labels: BTreeMap<String, String>,
    },
}

/// One detection: an anomaly or an alert group, the input of the detect node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    pub service: String,
    /// The runbook vocabulary: `latency_spike`, `error_rate_spike`, …
    pub anomaly_type: String,
    pub metric: String,
    pub observed: f64,
    pub baseline_mean: f64,
    pub baseline_stddev: f64,
    pub started_at: Timestamp,
    pub source: Source,
    /// Labels carried from the source (`platform`, `namespace`, `oom_killed`, …):
    /// evidence, never a target.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// An alert's annotations (`summary`, `description`, `runbook_url`), shown
    /// to whoever the incident is handed to.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// How much a service matters: tier 1 takes customer traffic directly.
/// Written as the number 1, 2 or 3.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(into = "u8")]
pub enum Tier {
    Tier1,
    #[default]
    Tier2,
    Tier3,
}

impl TryFrom<u8> for Tier {
    type Error = String;
    fn try_from(n: u8) -> Result<Tier, String> {
        match n {
            1 => Ok(Tier::Tier1),
            2 => Ok(Tier::Tier2),
            3 => Ok(Tier::Tier3),
            _ => Err(format!("tier {n} is not 1, 2 or 3")),
        }
    }
}

impl<'de> Deserialize<'de> for Tier {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Tier, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Tier;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a tier: 1, 2 or 3")
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Tier, E> {
                u8::try_from(n)
                    .map_err(|_| format!("tier {n} is not 1, 2 or 3"))
                    .and_then(Tier::try_from)
                    .map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Tier, E> {
                u64::try_from(n)
                    .map_err(|_| E::custom(format!("tier {n} is not 1, 2 or 3")))
                    .and_then(|n| self.visit_u64(n))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Tier, E> {
                Err(E::custom(format!("tier `{s}` is not 1, 2 or 3")))
            }
        }
        d.deserialize_any(V)
    }
}

impl From<Tier> for u8 {
    fn from(t: Tier) -> u8 {
        match t {
            Tier::Tier1 => 1,
            Tier::Tier2 => 2,
            Tier::Tier3 => 3,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Sev1,
    Sev2,
    Sev3,
    Sev4,
}

/// How far the observation is from normal, in the detection's own terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Impact {
    Low,
    Medium,
    High,
    Critical,
}

/// The stable identity of a condition: service, anomaly type and metric.
/// A second detection with the same fingerprint while an incident is open
/// attaches to it. For Alertmanager the group key is the identity instead:
/// one alert group is one incident.
pub fn fingerprint(d: &Detection) -> String {
    let identity = match &d.source {
        Source::Alertmanager { group_key, .. } => format!("alertmanager\u{0}{group_key}"),
        Source::Detector { .. } => format!("{}\u{0}{}\u{0}{}", d.service, d.anomaly_type, d.metric),
    };
    // FNV-1a, 64 bits: stable across processes, versions and platforms.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in identity.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    let mut out = String::with_capacity(16);
    let _ = write!(out, "{hash:016x}");
    out
}

/// Impact from the deviation in standard deviations: ≥ 10σ critical, ≥ 6σ
/// high, ≥ 3σ medium, below that low. A zero spread counts any change as 10σ.
pub fn impact(d: &Detection) -> Impact {
    let deviation = (d.observed - d.baseline_mean).abs();
    let sigmas = if d.baseline_stddev > 0.0 {
        deviation / d.baseline_stddev
    } else if deviation > 0.0 {
        10.0
    } else {
        0.0
    };
    match sigmas {
        s if s >= 10.0 => Impact::Critical,
        s if s >= 6.0 => Impact::High,
        s if s >= 3.0 => Impact::Medium,
        _ => Impact::Low,
    }
}

/// Severity = impact × tier, as a fixed table: the same input always gives the same severity.
///
/// | impact \ tier | 1 | 2 | 3 |
/// |---|---|---|---|
/// | critical | sev1 | sev2 | sev3 |
/// | high | sev2 | sev2 | sev3 |
/// | medium | sev2 | sev3 | sev4 |
/// | low | sev3 | sev4 | sev4 |
pub fn severity(impact: Impact, tier: Tier) -> Severity {
    use Impact::*;
    use Severity::*;
    use Tier::*;
    match (impact, tier) {
        (Critical, Tier1) => Sev1,
        (Critical, Tier2) | (High, Tier1) | (High, Tier2) | (Medium, Tier1) => Sev2,
        (Critical, Tier3) | (High, Tier3) | (Medium, Tier2) | (Low, Tier1) => Sev3,
        (Medium, Tier3) | (Low, Tier2) | (Low, Tier3) => Sev4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn detection(service: &str, observed: f64) -> Detection {
        Detection {
            service: service.into(),
            anomaly_type: "latency_spike".into(),
            metric: "http_p99_ms".into(),
            observed,
            baseline_mean: 100.0,
            baseline_stddev: 10.0,
            started_at: Timestamp(1_700_000_000_000),
            source: Source::Detector { detector: "zscore".into(), score: 0.9, reason: "z=7".into() },
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
        }
    }

    #[test]
    fn the_fingerprint_is_stable_and_ignores_the_values() {
        let a = detection("checkout", 180.0);
        let mut b = detection("checkout", 400.0);
        b.started_at = Timestamp(1);
        assert_eq!(fingerprint(&a), fingerprint(&b));
        // Pinned: a fingerprint stored today must match one computed by a later version.
        assert_eq!(fingerprint(&a), "0d228bd90f642f98"); // FNV-1a of "checkout\0latency_spike\0http_p99_ms"
        assert_ne!(fingerprint(&a), fingerprint(&detection("cart", 180.0)));
        let mut other_metric = detection("checkout", 180.0);
        other_metric.metric = "http_p50_ms".into();
        assert_ne!(fingerprint(&a), fingerprint(&other_metric));
    }

    #[test]
    fn one_alert_group_is_one_fingerprint_whatever_its_alerts() {
        let alert = |fps: &[&str], service: &str| {
            let mut d = detection(service, 0.0);
            d.source = Source::Alertmanager {
                group_key: "{}:{alertname=\"HighErrorRate\"}".into(),
                alertname: "HighErrorRate".into(),
                fingerprints: fps.iter().map(|s| (*s).to_owned()).collect(),
                expr: None,
                group_labels: BTreeMap::new(),
            };
            d
        };
        assert_eq!(fingerprint(&alert(&["a1"], "checkout")), fingerprint(&alert(&["a1", "b2"], "cart")));
    }

    #[test]
    fn severity_table() {
        let tiers = |service: &str| if service == "checkout" { Tier::Tier1 } else { Tier::Tier2 };
        for (service, observed, want) in [
            ("checkout", 200.0, Severity::Sev1), // 10σ on tier 1
            ("checkout", 170.0, Severity::Sev2), // 7σ
            ("checkout", 140.0, Severity::Sev2), // 4σ
            ("checkout", 110.0, Severity::Sev3), // 1σ
            ("search", 200.0, Severity::Sev2),   // unlisted: tier 2
            ("search", 110.0, Severity::Sev4),
        ] {
            let d = detection(service, observed);
            assert_eq!(severity(impact(&d), tiers(service)), want, "{service} at {observed}");
        }
        let mut flat = detection("search", 100.5);
        flat.baseline_stddev = 0.0;
        assert_eq!(impact(&flat), Impact::Critical);
    }

    proptest! {
        #[test]
        fn more_deviation_or_a_higher_tier_is_never_less_severe(
            a in 0.0f64..30.0, b in 0.0f64..30.0, t in 0usize..3,
        ) {
            let tiers = [Tier::Tier1, Tier::Tier2, Tier::Tier3];
            let (lo, hi) = (a.min(b), a.max(b));
            let d = |sig: f64| detection("svc", 100.0 + sig * 10.0);
            let s_lo = severity(impact(&d(lo)), tiers[t]);
            let s_hi = severity(impact(&d(hi)), tiers[t]);
            prop_assert!(s_hi <= s_lo, "Sev1 < Sev4 in this ordering");
            if t > 0 {
                prop_assert!(severity(impact(&d(hi)), tiers[t - 1]) <= s_hi);
            }
        }
    }
}
