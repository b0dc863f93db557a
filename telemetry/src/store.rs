//! Where events are kept, and the queries the workflow asks of them.
//!
//! [`ClickHouseStore`] is the real one; [`MemoryStore`] is the embedded
//! default. Both are idempotent: every event carries an id derived from its
//! content ([`event_id`]), and queries count each id once, so an event stored
//! twice (a batch redelivered after a crash, before its offsets were
//! committed) is harmless.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use engine::Timestamp;
use nodes::ports::{self, MetricStore, PortError};
use serde::{Deserialize, Serialize};

use crate::event::{DeployEvent, Event};

pub mod clickhouse;

pub use self::clickhouse::{ClickHouseConfig, ClickHouseStore};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store did not answer or failed; the batch may be retried.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store refused: {0}")]
    Refused(String),
}

/// Summary statistics of a metric over a window (each sample counted once).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub count: u64,
    pub mean: f64,
    pub stddev: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
}

#[async_trait]
pub trait EventStore: Send + Sync {
    /// Stores a batch; all or nothing from the caller's view (retry on error).
    async fn insert(&self, batch: &[Event]) -> Result<(), StoreError>;

    /// `(ts, value)` of `metric` for `service` with `from <= ts < to`, oldest first.
    async fn metric_window(
        &self,
        service: &str,
        metric: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<(i64, f64)>, StoreError>;

    /// The metric's statistics over the window; None when it has no sample.
    async fn stats(&self, service: &str, metric: &str, from: i64, to: i64) -> Result<Option<Stats>, StoreError>;

    /// Deployments of `service` at or after `from`, oldest first.
    async fn deploys_since(&self, service: &str, from: i64) -> Result<Vec<DeployEvent>, StoreError>;

    /// Distinct events stored, by kind (`metric`, `log`, `deploy`).
    async fn counts(&self) -> Result<BTreeMap<String, u64>, StoreError>;

    /// Whether the store answers.
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// FNV-1a (64 bits) over the event's canonical JSON: the same event always
/// has the same id, on every process and version. The JSON is hashed as it
/// is written, never held.
pub fn event_id(e: &Event) -> u64 {
    struct Hashing(fnv::FnvHasher);
    impl std::io::Write for Hashing {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            std::hash::Hasher::write(&mut self.0, bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut h = Hashing(fnv::FnvHasher::default());
    // Writing into a hasher cannot fail, and an event always serializes.
    let _ = serde_json::to_writer(&mut h, e);
    std::hash::Hasher::finish(&h.0)
}

/// Percentile by nearest rank over sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn stats_of(mut values: Vec<f64>) -> Option<Stats> {
    if values.is_empty() {
        return None;
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = if values.len() > 1 { values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    values.sort_by(f64::total_cmp);
    Some(Stats {
        count: values.len() as u64,
        mean,
        stddev: var.sqrt(),
        p50: percentile(&values, 0.5),
        p90: percentile(&values, 0.9),
        p99: percentile(&values, 0.99),
    })
}

/// The embedded store: everything in memory, for the demo and tests.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Memory>,
}

#[derive(Default)]
struct Memory {
    ids: HashSet<u64>,
    /// (service, metric) → (ts, value), in arrival order.
    metrics: BTreeMap<(String, String), Vec<(i64, f64)>>,
    deploys: BTreeMap<String, Vec<DeployEvent>>,
    logs: u64,
}

impl MemoryStore {
    pub fn new() -> Self {
        MemoryStore::default()
    }
}

#[async_trait]
impl EventStore for MemoryStore {
    async fn insert(&self, batch: &[Event]) -> Result<(), StoreError> {
        let mut m = self.inner.lock().expect("memory store lock");
        for e in batch {
            if !m.ids.insert(event_id(e)) {
                continue;
            }
            match e {
                Event::Metric(s) => {
                    m.metrics.entry((s.service.clone(), s.metric.clone())).or_default().push((s.ts, s.value))
                }
                Event::Deploy(d) => m.deploys.entry(d.service.clone()).or_default().push(d.clone()),
                Event::Log(_) => m.logs += 1,
            }
        }
        Ok(())
    }

    async fn metric_window(
        &self,
        service: &str,
        metric: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<(i64, f64)>, StoreError> {
        let m = self.inner.lock().expect("memory store lock");
        let mut out: Vec<(i64, f64)> = m
            .metrics
            .get(&(service.to_owned(), metric.to_owned()))
            .map(|v| v.iter().copied().filter(|(ts, _)| *ts >= from && *ts < to).collect())
            .unwrap_or_default();
        out.sort_by_key(|(ts, _)| *ts);
        Ok(out)
    }

    async fn stats(&self, service: &str, metric: &str, from: i64, to: i64) -> Result<Option<Stats>, StoreError> {
        let window = self.metric_window(service, metric, from, to).await?;
        Ok(stats_of(window.into_iter().map(|(_, v)| v).collect()))
    }

    async fn deploys_since(&self, service: &str, from: i64) -> Result<Vec<DeployEvent>, StoreError> {
        let m = self.inner.lock().expect("memory store lock");
        let mut out: Vec<DeployEvent> =
            m.deploys.get(service).map(|v| v.iter().filter(|d| d.ts >= from).cloned().collect()).unwrap_or_default();
        out.sort_by_key(|d| d.ts);
        Ok(out)
    }

    async fn counts(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        let m = self.inner.lock().expect("memory store lock");
        Ok(BTreeMap::from([
            ("metric".to_owned(), m.metrics.values().map(|v| v.len() as u64).sum()),
            ("log".to_owned(), m.logs),
            ("deploy".to_owned(), m.deploys.values().map(|v| v.len() as u64).sum()),
        ]))
    }
}

fn port_error(e: StoreError) -> PortError {
    match e {
        StoreError::Unavailable(m) => PortError::Unavailable(m),
        StoreError::Refused(m) => PortError::Refused(m),
    }
}

/// The workflow's ports, answered from a store.
#[derive(Clone)]
pub struct StorePorts(pub Arc<dyn EventStore>);

#[async_trait]
impl MetricStore for StorePorts {
    async fn window(
        &self,
        service: &str,
        metric: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<(Timestamp, f64)>, PortError> {
        let rows = self.0.metric_window(service, metric, from.0, to.0).await.map_err(port_error)?;
        Ok(rows.into_iter().map(|(ts, v)| (Timestamp(ts), v)).collect())
    }
}

#[async_trait]
impl ports::Deployments for StorePorts {
    async fn since(&self, service: &str, from: Timestamp) -> Result<Vec<ports::Deployment>, PortError> {
        let rows = self.0.deploys_since(service, from.0).await.map_err(port_error)?;
        Ok(rows
            .into_iter()
            .map(|d| ports::Deployment { service: d.service, version: d.version, at: Timestamp(d.ts) })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::MetricSample;

    fn sample(ts: i64, value: f64) -> Event {
        Event::Metric(MetricSample {
            ts,
            service: "checkout".into(),
            metric: "p99".into(),
            value,
            labels: BTreeMap::new(),
        })
    }

    #[test]
    fn the_id_is_fnv1a_of_the_canonical_json() {
        let e = sample(60_000, 1.5);
        let mut expected: u64 = 0xcbf2_9ce4_8422_2325;
        for b in serde_json::to_vec(&e).unwrap() {
            expected ^= u64::from(b);
            expected = expected.wrapping_mul(0x0100_0000_01b3);
        }
        assert_eq!(event_id(&e), expected);
    }

    #[tokio::test]
    async fn a_redelivered_batch_is_counted_once() {
        let store = MemoryStore::new();
        let batch: Vec<Event> = (0..100).map(|i| sample(i * 1000, i as f64)).collect();
        store.insert(&batch).await.unwrap();
        store.insert(&batch[50..]).await.unwrap();
        assert_eq!(store.counts().await.unwrap()["metric"], 100);
        let w = store.metric_window("checkout", "p99", 10_000, 20_000).await.unwrap();
        assert_eq!(w.len(), 10);
        assert_eq!(w[0], (10_000, 10.0));
        let s = store.stats("checkout", "p99", 0, 100_000).await.unwrap().unwrap();
        assert_eq!((s.count, s.mean, s.p50, s.p90, s.p99), (100, 49.5, 49.0, 89.0, 98.0));
    }
}
