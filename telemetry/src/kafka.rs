//! The Kafka half of the pipeline, through rdkafka (librdkafka 2.x): a
//! producer keyed by service (one service's series stays on one partition, so
//! one consumer sees all of it, in order) and a consumer of the partitions
//! this process owns ([`PartitionOwner`]) that commits offsets only after its
//! batch is stored and scanned.
//!
//! On every partition assignment the consumer starts up to
//! [`KafkaConfig::rewind`] messages before the committed offset. Some brokers
//! (tansu 0.6, seen here) answer a fetch from an offset inside a record batch
//! with the batches that *start* at or after it, skipping the rest of that
//! batch: resuming exactly at a committed offset in the middle of a producer
//! batch would lose its tail. Our producer caps a record batch at
//! `batch.num.messages` = `rewind`, so starting that far back always covers
//! it; the messages seen twice are harmless (event ids in the store,
//! fingerprints at intake). Against Apache Kafka it only costs a re-read.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::future::join_all;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::event::Event;
use crate::pipeline::{Processor, PublishError, Publisher};

#[derive(Clone, Debug)]
pub struct KafkaConfig {
    /// `KAFKA_BROKERS`, comma separated `host:port`.
    pub brokers: String,
    pub topic: String,
    pub group: String,
    pub partitions: i32,
    /// How long the producer keeps retrying a message before the request fails.
    pub delivery_timeout: Duration,
    /// Consumer batches: flushed at this many events, or this long after the first.
    pub max_batch: usize,
    pub max_wait: Duration,
    /// Messages re-read before the committed offset on assignment (see the
    /// module documentation); also the producer's largest record batch.
    pub rewind: i64,
    /// How long a replica's claim on its partitions lasts unrenewed: how soon
    /// a killed replica's partitions are consumed again by the others.
    pub lease: Duration,
    /// How often the claims are renewed and the share rebalanced.
    pub claim_interval: Duration,
}

impl KafkaConfig {
    pub fn new(brokers: impl Into<String>) -> Self {
        KafkaConfig {
            brokers: brokers.into(),
            topic: "sentinel-events".into(),
            group: "sentinel-ingest".into(),
            partitions: 3,
            delivery_timeout: Duration::from_secs(30),
            max_batch: 10_000,
            max_wait: Duration::from_millis(200),
            rewind: 10_000,
            lease: Duration::from_secs(5),
            claim_interval: Duration::from_secs(1),
        }
    }
}

fn unavailable(what: &str, e: KafkaError) -> PublishError {
    PublishError::Unavailable(format!("kafka {what}: {e}"))
}

/// Creates the topic unless it exists.
pub async fn ensure_topic(config: &KafkaConfig) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        .create()
        .map_err(|e| format!("kafka admin client: {e}"))?;
    let topic = NewTopic::new(&config.topic, config.partitions, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin.create_topics([&topic], &options).await.map_err(|e| format!("create topic: {e}"))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => return Err(format!("create topic {name}: {code}")),
        }
    }
    Ok(())
}

pub struct KafkaPublisher {
    producer: FutureProducer,
    topic: String,
}

impl KafkaPublisher {
    pub fn new(config: &KafkaConfig) -> Result<Self, String> {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &config.brokers)
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("batch.num.messages", config.rewind.to_string())
            .set("queue.buffering.max.messages", "500000")
            .set("message.timeout.ms", config.delivery_timeout.as_millis().to_string())
            .create()
            .map_err(|e| format!("kafka producer: {e}"))?;
        Ok(KafkaPublisher { producer, topic: config.topic.clone() })
    }

    /// Waits until everything queued is delivered (or `timeout`).
    pub fn flush(&self, timeout: Duration) -> Result<(), String> {
        self.producer.flush(timeout).map_err(|e| format!("kafka flush: {e}"))
    }
}

#[async_trait]
impl Publisher for KafkaPublisher {
    async fn publish(&self, events: Vec<Event>) -> Result<(), PublishError> {
        let mut pending = Vec::with_capacity(events.len());
        for e in &events {
            let payload =
                serde_json::to_vec(e).map_err(|err| PublishError::Unavailable(format!("encode event: {err}")))?;
            let record = FutureRecord::to(&self.topic).key(e.service()).payload(&payload);
            match self.producer.send_result(record) {
                Ok(delivery) => pending.push(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    // What was queued is still delivered; the client retries
                    // the batch, and duplicates are harmless downstream.
                    return Err(PublishError::Saturated { retry_after: Duration::from_secs(1) });
                }
                Err((err, _)) => return Err(unavailable("produce", err)),
            }
        }
        for outcome in join_all(pending).await {
            match outcome {
                Ok(Ok(_)) => {}
                Ok(Err((err, _))) => return Err(unavailable("delivery", err)),
                Err(_) => return Err(PublishError::Unavailable("kafka producer dropped the message".into())),
            }
        }
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "kafka"
    }

    async fn health(&self) -> Result<String, String> {
        let client = self.producer.clone();
        let topic = self.topic.clone();
        tokio::task::spawn_blocking(move || {
            let meta = client
                .client()
                .fetch_metadata(Some(&topic), Duration::from_secs(2))
                .map_err(|e| format!("kafka metadata: {e}"))?;
            let partitions = meta.topics().first().map_or(0, |t| t.partitions().len());
            Ok(format!("kafka: {} brokers, topic {topic} with {partitions} partitions", meta.brokers().len()))
        })
        .await
        .map_err(|e| format!("kafka health: {e}"))?
    }
}

/// Which partitions of the topic this process consumes.
///
/// Sentinel does not rely on the broker's group coordinator to hand out
/// partitions: with tansu 0.6 (seen here), while replicas were SIGKILLed and
/// restarted every few seconds, some partitions went unconsumed for minutes.
/// Ownership is a lease instead, in the database every
/// replica already shares (`sentinel::partitions`), fenced like every other
/// fleet-wide ownership; offsets are still committed to the broker under
/// [`KafkaConfig::group`], so the usual tooling shows the lag.
#[async_trait]
pub trait PartitionOwner: Send + Sync {
    /// Renews this process's leases for `lease` and takes or gives back
    /// partitions towards a fair share; answers the partitions it owns now.
    async fn claim(&self, topic: &str, partitions: i32, lease: Duration) -> Result<BTreeSet<i32>, String>;
    /// Gives every partition back at once (a clean stop), so others take over
    /// without waiting for the leases to lapse.
    async fn release(&self, topic: &str) -> Result<(), String>;
}

/// The only consumer of the topic owns every partition (tests, one process).
pub struct AllPartitions;

#[async_trait]
impl PartitionOwner for AllPartitions {
    async fn claim(&self, _topic: &str, partitions: i32, _lease: Duration) -> Result<BTreeSet<i32>, String> {
        Ok((0..partitions).collect())
    }

    async fn release(&self, _topic: &str) -> Result<(), String> {
        Ok(())
    }
}

/// Renews the leases every [`KafkaConfig::claim_interval`] and publishes the
/// owned set. When the leases cannot be renewed for as long as they last,
/// another replica may own them now: this one stops consuming them.
async fn keep_claims(
    owner: Arc<dyn PartitionOwner>,
    config: KafkaConfig,
    owned: watch::Sender<BTreeSet<i32>>,
    stop: CancellationToken,
) {
    let mut renewed = Instant::now();
    loop {
        match owner.claim(&config.topic, config.partitions, config.lease).await {
            Ok(now) => {
                renewed = Instant::now();
                owned.send_if_modified(|current| {
                    let changed = *current != now;
                    *current = now;
                    changed
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "kafka partition leases not renewed");
                if renewed.elapsed() >= config.lease {
                    owned.send_if_modified(|current| !std::mem::take(current).is_empty());
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(config.claim_interval) => {}
        }
    }
}

/// A consumer of the partitions a [`PartitionOwner`] hands it, feeding a [`Processor`].
pub struct KafkaSource {
    consumer: Arc<StreamConsumer>,
    owner: Arc<dyn PartitionOwner>,
    config: KafkaConfig,
}

impl KafkaSource {
    pub fn new(config: &KafkaConfig, owner: Arc<dyn PartitionOwner>) -> Result<Self, String> {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &config.brokers)
            // Offsets are committed under the group; partitions are assigned by us.
            .set("group.id", &config.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .create()
            .map_err(|e| format!("kafka consumer: {e}"))?;
        Ok(KafkaSource { consumer: Arc::new(consumer), owner, config: config.clone() })
    }

    /// The topic's partitions as the broker has them (a topic made elsewhere
    /// may have more than [`KafkaConfig::partitions`]).
    async fn partition_count(&self) -> i32 {
        let (consumer, topic) = (self.consumer.clone(), self.config.topic.clone());
        let found = tokio::task::spawn_blocking(move || {
            let meta = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10)).ok()?;
            meta.topics().first().map(|t| t.partitions().len() as i32)
        })
        .await
        .ok()
        .flatten();
        match found {
            Some(n) if n > 0 => n,
            _ => {
                tracing::warn!(topic = %self.config.topic, assumed = self.config.partitions, "kafka topic metadata unavailable");
                self.config.partitions
            }
        }
    }

    /// Starts consuming `gained` (each `rewind` messages before its committed
    /// offset, see the module documentation) and stops consuming `lost`.
    fn reassign(&self, gained: &BTreeSet<i32>, lost: &BTreeSet<i32>) -> Result<(), KafkaError> {
        if !lost.is_empty() {
            let mut tpl = TopicPartitionList::new();
            for p in lost {
                tpl.add_partition(&self.config.topic, *p);
            }
            self.consumer.incremental_unassign(&tpl)?;
        }
        if gained.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for p in gained {
            tpl.add_partition(&self.config.topic, *p);
        }
        let committed = self.consumer.committed_offsets(tpl, Duration::from_secs(10))?;
        let mut start = TopicPartitionList::new();
        for elem in committed.elements() {
            let from = match elem.offset() {
                Offset::Offset(at) => Offset::Offset((at - self.config.rewind.max(0)).max(0)),
                _ => Offset::Beginning,
            };
            start.add_partition_offset(elem.topic(), elem.partition(), from)?;
        }
        self.consumer.incremental_assign(&start)
    }

    /// Consumes until `stop` fires: batches by size or time, processes each,
    /// then commits its offsets. A batch interrupted by `stop` is not
    /// committed; its partitions' next owner reads it again.
    pub async fn run(self, mut processor: Processor, stop: CancellationToken) {
        let (tx, mut owned_rx) = watch::channel(BTreeSet::new());
        let claims_stop = stop.child_token();
        let config = KafkaConfig { partitions: self.partition_count().await, ..self.config.clone() };
        let claims = tokio::spawn(keep_claims(self.owner.clone(), config, tx, claims_stop.clone()));
        // Dropped with this future (an aborted task): the claims stop being renewed too.
        let renewing = claims_stop.drop_guard();
        self.consume(&mut processor, &mut owned_rx, &stop).await;
        drop(renewing);
        let _ = claims.await;
        processor.checkpoint().await;
        if let Err(e) = self.owner.release(&self.config.topic).await {
            tracing::warn!(error = %e, "kafka partitions not released; they lapse on their own");
        }
    }

    async fn consume(
        &self,
        processor: &mut Processor,
        owned_rx: &mut watch::Receiver<BTreeSet<i32>>,
        stop: &CancellationToken,
    ) {
        let mut owned: BTreeSet<i32> = BTreeSet::new();
        loop {
            if owned_rx.has_changed().unwrap_or(false) {
                let now = owned_rx.borrow_and_update().clone();
                let gained: BTreeSet<i32> = now.difference(&owned).copied().collect();
                let lost: BTreeSet<i32> = owned.difference(&now).copied().collect();
                match self.reassign(&gained, &lost) {
                    Ok(()) => {
                        tracing::info!(partitions = ?now, "kafka partitions owned");
                        owned = now;
                        if !gained.is_empty() {
                            // Series of these partitions were someone else's: restore their state.
                            processor.reassigned().await;
                        }
                    }
                    Err(e) => {
                        // Tried again at the next renewal.
                        tracing::warn!(error = %e, "kafka assignment failed");
                        owned_rx.mark_changed();
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                }
            }
            let mut events = Vec::new();
            let mut offsets: BTreeMap<i32, i64> = BTreeMap::new();
            let mut deadline: Option<Instant> = None;
            while events.len() < self.config.max_batch {
                let wait = match deadline {
                    None => Duration::from_secs(3600),
                    Some(d) => d.saturating_duration_since(Instant::now()),
                };
                let received = tokio::select! {
                    _ = stop.cancelled() => return,
                    // The owned partitions changed: reassign before the next batch
                    // (`changed` marked the value seen; mark it again for the check above).
                    Ok(()) = owned_rx.changed(), if deadline.is_none() => {
                        owned_rx.mark_changed();
                        break;
                    }
                    r = tokio::time::timeout(wait, self.consumer.recv()) => r,
                };
                let message = match received {
                    Err(_) => break, // the batch's time is up
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "kafka consume error");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                    Ok(Ok(m)) => m,
                };
                if !owned.contains(&message.partition()) {
                    continue; // fetched before the partition was given up
                }
                deadline.get_or_insert_with(|| Instant::now() + self.config.max_wait);
                offsets.insert(message.partition(), message.offset());
                match message.payload().map(serde_json::from_slice::<Event>) {
                    Some(Ok(e)) => events.push(e),
                    Some(Err(e)) => {
                        metrics::counter!("sentinel_ingest_undecodable_total").increment(1);
                        tracing::warn!(error = %e, partition = message.partition(), offset = message.offset(), "skipping an undecodable message");
                    }
                    None => {}
                }
            }
            if offsets.is_empty() {
                continue;
            }
            if processor.process(&events, stop).await.is_err() {
                return;
            }
            let mut list = TopicPartitionList::new();
            for (partition, offset) in &offsets {
                if let Err(e) = list.add_partition_offset(&self.config.topic, *partition, Offset::Offset(offset + 1)) {
                    tracing::warn!(error = %e, "offset list");
                }
            }
            if let Err(e) = self.consumer.commit(&list, CommitMode::Sync) {
                // Not fatal: the batch is stored; a redelivery is harmless.
                tracing::warn!(error = %e, "offset commit failed; the batch may be delivered again");
            }
        }
    }
}
