//! The Kafka half of the pipeline, through rdkafka (librdkafka 2.x): a
//! producer keyed by service (one service's series stays on one partition, so
//! one consumer sees all of it, in order) and a consumer group member that
//! commits offsets only after its batch is stored and scanned.
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

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::future::join_all;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};
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

/// Starts each assigned partition `rewind` messages before its committed offset.
pub struct RewindContext {
    rewind: i64,
    /// Set on every assignment: the consumer's detectors restore their series.
    assigned: Arc<std::sync::atomic::AtomicBool>,
}

impl ClientContext for RewindContext {}

impl ConsumerContext for RewindContext {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        if err != RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS {
            if let Err(e) = consumer.unassign() {
                tracing::warn!(error = %e, "kafka unassign");
            }
            return;
        }
        match consumer.committed_offsets(tpl.clone(), Duration::from_secs(10)) {
            Ok(committed) => {
                for elem in committed.elements() {
                    if let Offset::Offset(at) = elem.offset() {
                        let from = Offset::Offset((at - self.rewind).max(0));
                        if let Err(e) = tpl.set_partition_offset(elem.topic(), elem.partition(), from) {
                            tracing::warn!(error = %e, "kafka rewind");
                        }
                    }
                }
            }
            // Without the committed offsets the assignment starts from them as usual.
            Err(e) => tracing::warn!(error = %e, "kafka committed offsets; not rewinding"),
        }
        if let Err(e) = consumer.assign(tpl) {
            tracing::warn!(error = %e, "kafka assign");
        }
        self.assigned.store(true, std::sync::atomic::Ordering::SeqCst);
    }
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

/// A consumer group member feeding a [`Processor`].
pub struct KafkaSource {
    consumer: Arc<StreamConsumer<RewindContext>>,
    assigned: Arc<std::sync::atomic::AtomicBool>,
    topic: String,
    max_batch: usize,
    max_wait: Duration,
}

impl KafkaSource {
    pub fn new(config: &KafkaConfig) -> Result<Self, String> {
        let assigned = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let consumer: StreamConsumer<RewindContext> = ClientConfig::new()
            .set("bootstrap.servers", &config.brokers)
            .set("group.id", &config.group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set("session.timeout.ms", "10000")
            .create_with_context(RewindContext { rewind: config.rewind.max(0), assigned: assigned.clone() })
            .map_err(|e| format!("kafka consumer: {e}"))?;
        consumer.subscribe(&[&config.topic]).map_err(|e| format!("subscribe to {}: {e}", config.topic))?;
        Ok(KafkaSource {
            consumer: Arc::new(consumer),
            assigned,
            topic: config.topic.clone(),
            max_batch: config.max_batch,
            max_wait: config.max_wait,
        })
    }

    /// Consumes until `stop` fires: batches by size or time, processes each,
    /// then commits its offsets. A batch interrupted by `stop` is not
    /// committed; the group hands it out again.
    pub async fn run(self, mut processor: Processor, stop: CancellationToken) {
        loop {
            let mut events = Vec::new();
            let mut offsets: BTreeMap<i32, i64> = BTreeMap::new();
            let mut deadline: Option<Instant> = None;
            while events.len() < self.max_batch {
                let wait = match deadline {
                    None => Duration::from_secs(3600),
                    Some(d) => d.saturating_duration_since(Instant::now()),
                };
                let received = tokio::select! {
                    _ = stop.cancelled() => return processor.checkpoint().await,
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
                deadline.get_or_insert_with(|| Instant::now() + self.max_wait);
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
            if self.assigned.swap(false, std::sync::atomic::Ordering::SeqCst) {
                // Partitions moved: series this replica had may have moved on elsewhere.
                processor.reassigned().await;
            }
            if processor.process(&events, &stop).await.is_err() {
                return processor.checkpoint().await;
            }
            let mut list = TopicPartitionList::new();
            for (partition, offset) in &offsets {
                if let Err(e) = list.add_partition_offset(&self.topic, *partition, Offset::Offset(offset + 1)) {
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
