//! From accepted events to stored rows and anomalies.
//!
//! The ingest side hands batches to a [`Publisher`] (Kafka, or the embedded
//! channel); the consume side feeds them to a [`Processor`], which stores each
//! batch (retrying while the store is away, so nothing is dropped and the
//! source is not acknowledged meanwhile), then runs the detectors of every
//! (service, metric) in the batch and hands anomalies to an [`AnomalySink`].
//! Only then is the batch acknowledged (Kafka offsets committed, embedded
//! capacity released): delivery is at least once, and a batch seen twice is
//! harmless (event ids in the store, fingerprints at intake).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use engine::Timestamp;
use nodes::incident::{Detection, Source};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::detect::{Anomaly, DetectorConfig, Series};
use crate::event::{Event, MetricSample};
use crate::store::EventStore;

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum PublishError {
    /// Too much is in flight: the caller should come back later.
    #[error("the pipeline is saturated; retry in {retry_after:?}")]
    Saturated { retry_after: Duration },
    /// Larger than the pipeline can ever hold at once.
    #[error("a batch of {events} events is more than the pipeline holds ({capacity})")]
    TooLarge { events: usize, capacity: usize },
    #[error("the pipeline is unavailable: {0}")]
    Unavailable(String),
}

/// Where the ingest side hands accepted batches.
#[async_trait]
pub trait Publisher: Send + Sync {
    /// Returns once the batch is durably handed over (acknowledged by the
    /// broker, or queued in the embedded pipeline).
    async fn publish(&self, events: Vec<Event>) -> Result<(), PublishError>;

    /// `kafka` or `embedded`, for health and logs.
    fn kind(&self) -> &'static str;

    /// Whether the pipeline can take events now; the error says why not.
    async fn health(&self) -> Result<String, String> {
        Ok(self.kind().to_owned())
    }
}

/// Where anomalies go: the API opens (or attaches to) an incident.
#[async_trait]
pub trait AnomalySink: Send + Sync {
    async fn anomaly(&self, detection: Detection) -> Result<(), String>;
}

/// Anomalies into a channel, for a caller that opens incidents itself (the demo).
pub struct ChannelSink(pub mpsc::UnboundedSender<Detection>);

#[async_trait]
impl AnomalySink for ChannelSink {
    async fn anomaly(&self, detection: Detection) -> Result<(), String> {
        self.0.send(detection).map_err(|_| "the receiver has gone".to_owned())
    }
}

/// The runbook vocabulary for a metric name: `http_p99_ms` → `latency_spike`.
pub fn anomaly_type(metric: &str) -> &'static str {
    let m = metric.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| m.contains(w));
    if has(&["latency", "p99", "p95", "duration", "response_time"]) {
        "latency_spike"
    } else if has(&["error", "5xx", "fail"]) {
        "error_rate_spike"
    } else if has(&["cpu"]) {
        "cpu_saturation"
    } else if has(&["mem", "rss", "heap"]) {
        "memory_leak"
    } else if has(&["connection", "pool"]) {
        "db_connection_exhaustion"
    } else if has(&["lag"]) {
        "consumer_lag"
    } else {
        "metric_anomaly"
    }
}

/// A detection for the workflow from an anomaly of `sample`'s series.
pub fn detection(sample: &MetricSample, a: &Anomaly) -> Detection {
    Detection {
        service: sample.service.clone(),
        anomaly_type: anomaly_type(&sample.metric).to_owned(),
        metric: sample.metric.clone(),
        observed: a.value,
        baseline_mean: a.mean,
        baseline_stddev: a.stddev,
        started_at: Timestamp(a.ts),
        source: Source::Detector { detector: "ensemble".into(), score: a.score, reason: a.reason.clone() },
        labels: sample.labels.clone(),
        annotations: Default::default(),
    }
}

/// Retry pacing while the store or the sink is away.
#[derive(Clone, Debug)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { initial: Duration::from_millis(100), max: Duration::from_secs(5) }
    }
}

/// The shutdown token fired while a batch was still unstored.
#[derive(Debug, PartialEq, thiserror::Error)]
#[error("stopped before the batch was stored")]
pub struct Stopped;

/// Services whose detectors start over at the next batch: a remediation
/// moved their baseline, what was learnt before no longer holds.
#[derive(Clone, Default)]
pub struct Resets(Arc<std::sync::Mutex<Vec<String>>>);

impl Resets {
    pub fn reset(&self, service: &str) {
        self.0.lock().expect("resets lock").push(service.to_owned());
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().expect("resets lock"))
    }
}

/// Where detector state is checkpointed, so that a restart, or a partition
/// moving to another replica, keeps each series' baselines. Keyed by
/// (service, metric).
#[async_trait]
pub trait DetectorStates: Send + Sync {
    /// The checkpointed state of each of `keys` that has one.
    async fn load(&self, keys: &[(String, String)]) -> Result<Vec<((String, String), Series)>, String>;
    async fn save(&self, states: &[((String, String), Series)]) -> Result<(), String>;
}

/// Checkpointing of detector state: where, and how often.
#[derive(Clone)]
pub struct Checkpointing {
    pub states: Arc<dyn DetectorStates>,
    pub interval: Duration,
}

/// Stores batches, then runs the detectors over them.
pub struct Processor {
    store: Arc<dyn EventStore>,
    sink: Arc<dyn AnomalySink>,
    config: DetectorConfig,
    backoff: Backoff,
    series: HashMap<(String, String), Series>,
    resets: Resets,
    checkpointing: Option<Checkpointing>,
    /// Series changed since the last checkpoint.
    dirty: HashSet<(String, String)>,
    last_checkpoint: Instant,
}

impl Processor {
    pub fn new(store: Arc<dyn EventStore>, sink: Arc<dyn AnomalySink>, config: DetectorConfig) -> Self {
        Processor {
            store,
            sink,
            config,
            backoff: Backoff::default(),
            series: HashMap::new(),
            resets: Resets::default(),
            checkpointing: None,
            dirty: HashSet::new(),
            last_checkpoint: Instant::now(),
        }
    }

    /// Restores each series from `c.states` the first time it is seen, and
    /// checkpoints changed series every `c.interval`.
    pub fn with_checkpointing(mut self, c: Checkpointing) -> Self {
        self.checkpointing = Some(c);
        self
    }

    /// Forgets every series (the source was reassigned: another replica may
    /// have moved them on); each is restored from its checkpoint when next seen.
    pub async fn reassigned(&mut self) {
        self.checkpoint().await;
        self.series.clear();
    }

    /// Saves the series changed since the last checkpoint. A failure is
    /// logged and retried at the next one: detection goes on meanwhile.
    pub async fn checkpoint(&mut self) {
        let Some(c) = &self.checkpointing else { return };
        if self.dirty.is_empty() {
            return;
        }
        let states: Vec<((String, String), Series)> =
            self.dirty.iter().filter_map(|k| self.series.get(k).map(|s| (k.clone(), s.clone()))).collect();
        match c.states.save(&states).await {
            Ok(()) => {
                metrics::counter!("sentinel_detector_checkpoints_total").increment(1);
                self.dirty.clear();
                self.last_checkpoint = Instant::now();
            }
            Err(e) => tracing::warn!(error = %e, series = states.len(), "detector checkpoint failed; retrying later"),
        }
    }

    /// Restores the series of `events` not in memory from their checkpoints.
    async fn restore(&mut self, events: &[Event]) {
        let Some(c) = &self.checkpointing else { return };
        let mut missing: Vec<(String, String)> = Vec::new();
        for e in events {
            let Event::Metric(m) = e else { continue };
            let key = (m.service.clone(), m.metric.clone());
            if !self.series.contains_key(&key) && !missing.contains(&key) {
                missing.push(key);
            }
        }
        if missing.is_empty() {
            return;
        }
        match c.states.load(&missing).await {
            Ok(found) => {
                metrics::counter!("sentinel_detector_restored_total").increment(found.len() as u64);
                self.series.extend(found);
            }
            // Starting these series afresh beats stopping detection.
            Err(e) => tracing::warn!(error = %e, "detector state could not be restored; those series start afresh"),
        }
    }

    /// A handle to reset a service's detectors from elsewhere.
    pub fn resets(&self) -> Resets {
        self.resets.clone()
    }

    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Stores the batch, retrying until it is stored or `stop` fires, then
    /// detects. Ok means the batch may be acknowledged.
    pub async fn process(&mut self, events: &[Event], stop: &CancellationToken) -> Result<(), Stopped> {
        if events.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let mut wait = self.backoff.initial;
        loop {
            match self.store.insert(events).await {
                Ok(()) => break,
                Err(e) => {
                    metrics::counter!("sentinel_ingest_store_retries_total").increment(1);
                    tracing::warn!(error = %e, events = events.len(), retry_in = ?wait, "store failed; retrying the batch");
                    tokio::select! {
                        _ = stop.cancelled() => return Err(Stopped),
                        _ = tokio::time::sleep(wait) => {}
                    }
                    wait = (wait * 2).min(self.backoff.max);
                }
            }
        }
        metrics::histogram!("sentinel_ingest_flush_seconds").record(started.elapsed().as_secs_f64());
        for service in self.resets.take() {
            self.series.retain(|(s, _), _| *s != service);
            self.dirty.retain(|(s, _)| *s != service);
        }
        self.restore(events).await;
        metrics::counter!("sentinel_ingest_stored_events_total").increment(events.len() as u64);
        for e in events {
            let Event::Metric(m) = e else { continue };
            let key = (m.service.clone(), m.metric.clone());
            let series = self.series.entry(key.clone()).or_default();
            let Some((_, anomaly)) = series.observe(&self.config, m.ts, m.value) else {
                // Seen before (a rewind or a redelivered batch): learnt once only.
                metrics::counter!("sentinel_detector_replayed_points_total").increment(1);
                continue;
            };
            self.dirty.insert(key);
            if let Some(a) = anomaly {
                metrics::counter!("sentinel_anomalies_total").increment(1);
                self.hand_over(detection(m, &a), stop).await?;
            }
        }
        if self.checkpointing.as_ref().is_some_and(|c| self.last_checkpoint.elapsed() >= c.interval) {
            self.checkpoint().await;
        }
        Ok(())
    }

    async fn hand_over(&self, d: Detection, stop: &CancellationToken) -> Result<(), Stopped> {
        let mut wait = self.backoff.initial;
        loop {
            match self.sink.anomaly(d.clone()).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::warn!(error = %e, service = %d.service, "could not open the incident; retrying");
                    tokio::select! {
                        _ = stop.cancelled() => return Err(Stopped),
                        _ = tokio::time::sleep(wait) => {}
                    }
                    wait = (wait * 2).min(self.backoff.max);
                }
            }
        }
    }
}

/// A batch in the embedded pipeline, holding its share of the capacity
/// until it is processed.
struct Held {
    events: Vec<Event>,
    _permit: OwnedSemaphorePermit,
}

/// The embedded pipeline: an in-process channel bounded by a number of
/// events in flight; beyond it, publishers are told to come back later.
pub struct Embedded {
    tx: mpsc::UnboundedSender<Held>,
    permits: Arc<Semaphore>,
    capacity: usize,
}

/// How long a stopping embedded pipeline keeps storing what it accepted.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The consuming half of [`Embedded`].
pub struct EmbeddedSource {
    rx: mpsc::UnboundedReceiver<Held>,
}

impl Embedded {
    pub fn new(capacity: usize) -> (Embedded, EmbeddedSource) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Embedded { tx, permits: Arc::new(Semaphore::new(capacity)), capacity }, EmbeddedSource { rx })
    }

    /// Events accepted and not yet processed.
    pub fn in_flight(&self) -> usize {
        self.capacity - self.permits.available_permits()
    }
}

#[async_trait]
impl Publisher for Embedded {
    async fn publish(&self, events: Vec<Event>) -> Result<(), PublishError> {
        if events.len() > self.capacity {
            return Err(PublishError::TooLarge { events: events.len(), capacity: self.capacity });
        }
        let n = u32::try_from(events.len())
            .map_err(|_| PublishError::TooLarge { events: events.len(), capacity: self.capacity })?;
        let permit = self
            .permits
            .clone()
            .try_acquire_many_owned(n)
            .map_err(|_| PublishError::Saturated { retry_after: Duration::from_secs(1) })?;
        self.tx
            .send(Held { events, _permit: permit })
            .map_err(|_| PublishError::Unavailable("the embedded pipeline has stopped".into()))
    }

    fn kind(&self) -> &'static str {
        "embedded"
    }

    async fn health(&self) -> Result<String, String> {
        Ok(format!("embedded: {} of {} events in flight", self.in_flight(), self.capacity))
    }
}

impl EmbeddedSource {
    /// Feeds the processor until `stop` fires, coalescing what is queued into
    /// batches of up to `max_batch` events. Then it takes nothing new and
    /// stores what was already accepted, for up to [`DRAIN_TIMEOUT`].
    pub async fn run(self, mut processor: Processor, max_batch: usize, stop: CancellationToken) {
        self.consume(&mut processor, max_batch, stop).await;
        processor.checkpoint().await;
    }

    async fn consume(mut self, processor: &mut Processor, max_batch: usize, stop: CancellationToken) {
        let mut unstored = None;
        loop {
            let first = tokio::select! {
                _ = stop.cancelled() => break,
                held = self.rx.recv() => match held { Some(h) => h, None => return },
            };
            let batch = self.coalesce(first, max_batch);
            if processor.process(&events_of(&batch), &stop).await.is_err() {
                unstored = Some(batch);
                break;
            }
            // Dropping the held batches releases their capacity.
        }
        self.rx.close();
        let deadline = CancellationToken::new();
        tokio::spawn({
            let deadline = deadline.clone();
            async move {
                tokio::time::sleep(DRAIN_TIMEOUT).await;
                deadline.cancel();
            }
        });
        let mut next = unstored;
        loop {
            let batch = match next.take() {
                Some(b) => b,
                None => match self.rx.recv().await {
                    Some(first) => self.coalesce(first, max_batch),
                    None => return,
                },
            };
            let events = events_of(&batch);
            if processor.process(&events, &deadline).await.is_err() {
                let left: usize = events.len()
                    + std::iter::from_fn(|| self.rx.try_recv().ok()).map(|h| h.events.len()).sum::<usize>();
                tracing::error!(events = left, "stopped with accepted events the store did not take");
                return;
            }
        }
    }

    /// `first` and whatever is queued behind it, up to `max_batch` events.
    fn coalesce(&mut self, first: Held, max_batch: usize) -> Vec<Held> {
        let mut n = first.events.len();
        let mut batch = vec![first];
        while n < max_batch {
            match self.rx.try_recv() {
                Ok(h) => {
                    n += h.events.len();
                    batch.push(h);
                }
                Err(_) => break,
            }
        }
        batch
    }
}

fn events_of(batch: &[Held]) -> Vec<Event> {
    batch.iter().flat_map(|h| h.events.iter().cloned()).collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::event::MetricSample;
    use crate::store::{MemoryStore, StoreError};

    #[derive(Default)]
    struct Collect(Mutex<Vec<Detection>>);

    #[async_trait]
    impl AnomalySink for Collect {
        async fn anomaly(&self, d: Detection) -> Result<(), String> {
            self.0.lock().unwrap().push(d);
            Ok(())
        }
    }

    fn sample(i: i64, v: f64) -> Event {
        Event::Metric(MetricSample {
            ts: i * 60_000,
            service: "checkout".into(),
            metric: "http_p99_ms".into(),
            value: v,
            labels: [("namespace".to_owned(), "shop".to_owned())].into(),
        })
    }

    #[tokio::test]
    async fn saturation_is_reported_and_capacity_comes_back() {
        let (pipe, source) = Embedded::new(10);
        pipe.publish((0..6).map(|i| sample(i, 1.0)).collect()).await.unwrap();
        assert_eq!(
            pipe.publish((0..6).map(|i| sample(i, 1.0)).collect()).await,
            Err(PublishError::Saturated { retry_after: Duration::from_secs(1) })
        );
        assert!(matches!(
            pipe.publish((0..11).map(|i| sample(i, 1.0)).collect()).await,
            Err(PublishError::TooLarge { .. })
        ));
        let store = Arc::new(MemoryStore::new());
        let sink = Arc::new(Collect::default());
        let stop = CancellationToken::new();
        let task =
            tokio::spawn(source.run(Processor::new(store.clone(), sink, DetectorConfig::default()), 100, stop.clone()));
        tokio::time::timeout(Duration::from_secs(5), async {
            while pipe.in_flight() > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap();
        pipe.publish((6..12).map(|i| sample(i, 1.0)).collect()).await.unwrap();
        stop.cancel();
        task.await.unwrap();
        assert!(store.counts().await.unwrap()["metric"] >= 6);
    }

    #[tokio::test]
    async fn what_was_accepted_is_stored_when_stopping() {
        let (pipe, source) = Embedded::new(10_000);
        for chunk in 0..20 {
            pipe.publish((chunk * 100..chunk * 100 + 100).map(|i| sample(i, 1.0)).collect()).await.unwrap();
        }
        let store = Arc::new(MemoryStore::new());
        let stop = CancellationToken::new();
        stop.cancel();
        let processor = Processor::new(store.clone(), Arc::new(Collect::default()), DetectorConfig::default());
        source.run(processor, 300, stop).await;
        assert_eq!(store.counts().await.unwrap()["metric"], 2000);
        assert!(matches!(pipe.publish(vec![sample(0, 1.0)]).await, Err(PublishError::Unavailable(_))));
    }

    /// Checkpoints kept in memory, as a database would keep them.
    #[derive(Default)]
    struct Kept(Mutex<HashMap<(String, String), Series>>);

    #[async_trait]
    impl DetectorStates for Kept {
        async fn load(&self, keys: &[(String, String)]) -> Result<Vec<((String, String), Series)>, String> {
            let kept = self.0.lock().unwrap();
            Ok(keys.iter().filter_map(|k| kept.get(k).map(|s| (k.clone(), s.clone()))).collect())
        }
        async fn save(&self, states: &[((String, String), Series)]) -> Result<(), String> {
            self.0.lock().unwrap().extend(states.iter().cloned());
            Ok(())
        }
    }

    /// Two days of a daily cycle, one point a minute, then an hour-long surge.
    fn seasonal_then_surge() -> (Vec<Event>, Vec<Event>) {
        let level = |i: i64| 100.0 + 50.0 * ((i % 1440) as f64 / 1440.0 * std::f64::consts::TAU).sin() + (i % 7) as f64;
        let history = (0..2 * 1440).map(|i| sample(i, level(i))).collect();
        let surge = (2 * 1440..2 * 1440 + 60).map(|i| sample(i, level(i) * 4.0)).collect();
        (history, surge)
    }

    #[tokio::test]
    async fn a_replayed_batch_is_learnt_once_and_raises_nothing_new() {
        let (history, surge) = seasonal_then_surge();
        let sink = Arc::new(Collect::default());
        let mut p = Processor::new(Arc::new(MemoryStore::new()), sink.clone(), DetectorConfig::default());
        let stop = CancellationToken::new();
        p.process(&history, &stop).await.unwrap();
        p.process(&surge, &stop).await.unwrap();
        assert_eq!(sink.0.lock().unwrap().len(), 1, "one surge, one anomaly");
        // A Kafka rewind hands the same points over again, and a partial overlap.
        p.process(&surge, &stop).await.unwrap();
        p.process(&history[history.len() - 100..], &stop).await.unwrap();
        assert_eq!(sink.0.lock().unwrap().len(), 1, "a replayed episode opens nothing new");
    }

    #[tokio::test]
    async fn a_restarted_processor_restores_its_baselines_from_the_checkpoint() {
        let (history, surge) = seasonal_then_surge();
        let kept = Arc::new(Kept::default());
        let checkpointing = || Checkpointing { states: kept.clone(), interval: Duration::from_secs(3600) };
        let stop = CancellationToken::new();
        let store = Arc::new(MemoryStore::new());
        let mut before = Processor::new(store.clone(), Arc::new(Collect::default()), DetectorConfig::default())
            .with_checkpointing(checkpointing());
        before.process(&history, &stop).await.unwrap();
        // A clean stop checkpoints what changed since the last checkpoint.
        before.checkpoint().await;
        let key = ("checkout".to_owned(), "http_p99_ms".to_owned());
        let saved = kept.0.lock().unwrap()[&key].clone();
        assert_eq!(saved.last_ts(), Some((2 * 1440 - 1) * 60_000));

        // The restarted process sees the surge with two days of baselines behind it...
        let sink = Arc::new(Collect::default());
        let mut after =
            Processor::new(store.clone(), sink.clone(), DetectorConfig::default()).with_checkpointing(checkpointing());
        after.process(&surge, &stop).await.unwrap();
        assert_eq!(sink.0.lock().unwrap().len(), 1, "the surge is caught at once");
        // ...and gives every point exactly the score the uninterrupted detector gives.
        let mut uninterrupted = Series::new();
        let mut restored = saved;
        let cfg = DetectorConfig::default();
        for e in &history {
            let Event::Metric(m) = e else { continue };
            uninterrupted.observe(&cfg, m.ts, m.value);
        }
        for e in &surge {
            let Event::Metric(m) = e else { continue };
            let a = uninterrupted.observe(&cfg, m.ts, m.value).unwrap().0.score;
            let b = restored.observe(&cfg, m.ts, m.value).unwrap().0.score;
            assert_eq!(a.to_bits(), b.to_bits(), "at {}", m.ts);
        }

        // Without the checkpoint, a fresh detector has no warm-up behind it and misses the surge.
        let blind = Arc::new(Collect::default());
        let mut fresh = Processor::new(store, blind.clone(), DetectorConfig::default());
        fresh.process(&surge, &stop).await.unwrap();
        assert!(blind.0.lock().unwrap().is_empty(), "the checkpoint is what made the difference");
    }

    /// A store that fails its first `n` inserts.
    struct Flaky {
        fail: Mutex<u32>,
        inner: MemoryStore,
    }

    #[async_trait]
    impl EventStore for Flaky {
        async fn insert(&self, batch: &[Event]) -> Result<(), StoreError> {
            {
                let mut f = self.fail.lock().unwrap();
                if *f > 0 {
                    *f -= 1;
                    return Err(StoreError::Unavailable("down".into()));
                }
            }
            self.inner.insert(batch).await
        }
        async fn metric_window(&self, s: &str, m: &str, f: i64, t: i64) -> Result<Vec<(i64, f64)>, StoreError> {
            self.inner.metric_window(s, m, f, t).await
        }
        async fn stats(&self, s: &str, m: &str, f: i64, t: i64) -> Result<Option<crate::store::Stats>, StoreError> {
            self.inner.stats(s, m, f, t).await
        }
        async fn deploys_since(&self, s: &str, f: i64) -> Result<Vec<crate::event::DeployEvent>, StoreError> {
            self.inner.deploys_since(s, f).await
        }
        async fn counts(&self) -> Result<std::collections::BTreeMap<String, u64>, StoreError> {
            self.inner.counts().await
        }
    }

    #[tokio::test]
    async fn a_failing_store_is_retried_and_a_fault_is_one_detection() {
        let store = Arc::new(Flaky { fail: Mutex::new(3), inner: MemoryStore::new() });
        let sink = Arc::new(Collect::default());
        let mut p = Processor::new(store.clone(), sink.clone(), DetectorConfig::default())
            .with_backoff(Backoff { initial: Duration::from_millis(1), max: Duration::from_millis(4) });
        let stop = CancellationToken::new();
        let events: Vec<Event> = (0..300)
            .map(|i| sample(i, 100.0 + (i % 7) as f64 + if (200..240).contains(&i) { 400.0 } else { 0.0 }))
            .collect();
        for chunk in events.chunks(50) {
            p.process(chunk, &stop).await.unwrap();
        }
        assert_eq!(store.inner.counts().await.unwrap()["metric"], 300);
        let found = sink.0.lock().unwrap().clone();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].anomaly_type, "latency_spike");
        assert_eq!(found[0].labels["namespace"], "shop");
        assert!(matches!(&found[0].source, Source::Detector { score, .. } if *score > 0.9));
        // Stopping while the store is down gives the batch back unacknowledged.
        *store.fail.lock().unwrap() = u32::MAX;
        stop.cancel();
        assert_eq!(p.process(&events[..1], &stop).await, Err(Stopped));
    }
}
