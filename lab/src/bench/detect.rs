//! `sentinel bench detect`: the streaming detectors' cost per point and per
//! series, on one core.
//!
//! Series of realistic shape (a daily cycle, noise, an occasional step) are
//! scored point by point on the calling thread, as the telemetry consumer
//! does; the figure is points per second over all of them. State is what one
//! series holds once its seasonal baselines are full (two weeks of points).

use std::time::Instant;

use serde::Serialize;
use telemetry::detect::{DetectorConfig, Series};

#[derive(Clone, Debug, Serialize)]
pub struct DetectFigures {
    pub series: usize,
    pub points_per_series: usize,
    pub points_per_sec: f64,
    pub ns_per_point: f64,
    pub state_bytes_per_series: usize,
    pub anomalies: usize,
}

/// A deterministic series: one sample a minute, a daily cycle, noise, and a
/// step for an hour in the middle of each day but the first.
fn value(seed: u64, i: usize) -> f64 {
    let mut x = seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    let noise = (x >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
    let minute = i % 1440;
    let day = (minute as f64 / 1440.0 * std::f64::consts::TAU).sin();
    let step = if i > 1440 && (720..780).contains(&minute) && (i / 1440) % 3 == 1 { 80.0 } else { 0.0 };
    100.0 + 30.0 * day + 6.0 * noise + step
}

pub fn run(series: usize, points: usize, config: &DetectorConfig) -> DetectFigures {
    let mut all: Vec<Series> = (0..series).map(|_| Series::new()).collect();
    let mut anomalies = 0;
    let started = Instant::now();
    // Interleaved, as a consumer sees a batch of many series at each instant.
    for i in 0..points {
        let ts = i as i64 * 60_000;
        for (k, s) in all.iter_mut().enumerate() {
            if let Some((_, Some(_))) = s.observe(config, ts, value(k as u64, i)) {
                anomalies += 1;
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let total = (series * points) as f64;
    let state = all.iter().map(Series::state_bytes).max().unwrap_or(0);
    DetectFigures {
        series,
        points_per_series: points,
        points_per_sec: total / elapsed,
        ns_per_point: elapsed * 1e9 / total,
        state_bytes_per_series: state,
        anomalies,
    }
}
