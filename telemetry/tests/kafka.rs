//! The Kafka path against the real tansu broker and clickhouse-server the
//! scripts start: exactness, one anomaly for one fault, a consumer killed
//! mid-batch, a broker restarted mid-ingestion, ClickHouse going away.

mod support;

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use support::*;
use telemetry::detect::DetectorConfig;
use telemetry::event::Event;
use telemetry::kafka::{ensure_topic, AllPartitions, KafkaConfig, KafkaPublisher, KafkaSource};
use telemetry::pipeline::{Backoff, Processor, PublishError, Publisher};
use telemetry::store::{ClickHouseStore, EventStore, StoreError};
use telemetry::testing::Proxy;
use tokio_util::sync::CancellationToken;

async fn kafka(name: &str, brokers: &str) -> KafkaConfig {
    let config = KafkaConfig {
        topic: unique(&format!("t-{name}")),
        group: unique(&format!("g-{name}")),
        max_wait: Duration::from_millis(50),
        max_batch: 500,
        ..KafkaConfig::new(brokers)
    };
    ensure_topic(&config).await.unwrap();
    config
}

fn processor(store: Arc<dyn EventStore>, sink: Arc<Collect>) -> Processor {
    Processor::new(store, sink, DetectorConfig::default())
        .with_backoff(Backoff { initial: Duration::from_millis(20), max: Duration::from_millis(200) })
}

/// Three services, 300 minutes each; `checkout` has a 40-minute fault at minute 200.
fn series() -> Vec<Event> {
    let mut out = Vec::new();
    for i in 0..300 {
        for (k, service) in ["checkout", "payments", "search"].iter().enumerate() {
            let base = 100.0 * (k + 1) as f64 + (i % 7) as f64;
            let fault = if *service == "checkout" && (200..240).contains(&i) { 500.0 } else { 0.0 };
            out.push(sample(service, i, base + fault));
        }
    }
    out
}

#[tokio::test]
async fn events_through_kafka_land_exactly_and_one_fault_is_one_anomaly() {
    let brokers = brokers();
    let config = kafka("exact", &brokers).await;
    let store = Arc::new(clickhouse(&unique("kafka_exact")).await);
    let sink = Arc::new(Collect::default());
    let stop = CancellationToken::new();
    let consumer = tokio::spawn(
        KafkaSource::new(&config, Arc::new(AllPartitions))
            .unwrap()
            .run(processor(store.clone(), sink.clone()), stop.clone()),
    );

    let publisher = KafkaPublisher::new(&config).unwrap();
    let events = series();
    for chunk in events.chunks(100) {
        publisher.publish(chunk.to_vec()).await.unwrap();
    }
    wait_for_metrics(store.as_ref(), events.len() as u64, Duration::from_secs(60)).await;
    stop.cancel();
    consumer.await.unwrap();

    for service in ["checkout", "payments", "search"] {
        let sent: Vec<(i64, f64)> = events
            .iter()
            .filter_map(|e| match e {
                Event::Metric(m) if m.service == service => Some((m.ts, m.value)),
                _ => None,
            })
            .collect();
        let stored = store.metric_window(service, "http_p99_ms", 0, i64::MAX).await.unwrap();
        assert_eq!(stored, sent, "{service}");
    }
    let found = sink.0.lock().unwrap().clone();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!((found[0].service.as_str(), found[0].anomaly_type.as_str()), ("checkout", "latency_spike"));
    store.drop_database().await.unwrap();
}

/// Stores the first `good` batches, then hangs on the next one, as a process
/// that dies mid-batch would: consumed, never stored, never committed.
struct DiesMidBatch {
    inner: ClickHouseStore,
    good: Mutex<u32>,
    hung: Mutex<usize>,
}

#[async_trait]
impl EventStore for DiesMidBatch {
    async fn insert(&self, batch: &[Event]) -> Result<(), StoreError> {
        let hang = {
            let mut good = self.good.lock().unwrap();
            if *good == 0 {
                *self.hung.lock().unwrap() = batch.len();
                true
            } else {
                *good -= 1;
                false
            }
        };
        if hang {
            futures::future::pending::<()>().await;
        }
        self.inner.insert(batch).await
    }
    async fn metric_window(&self, s: &str, m: &str, f: i64, t: i64) -> Result<Vec<(i64, f64)>, StoreError> {
        self.inner.metric_window(s, m, f, t).await
    }
    async fn stats(&self, s: &str, m: &str, f: i64, t: i64) -> Result<Option<telemetry::store::Stats>, StoreError> {
        self.inner.stats(s, m, f, t).await
    }
    async fn deploys_since(&self, s: &str, f: i64) -> Result<Vec<telemetry::event::DeployEvent>, StoreError> {
        self.inner.deploys_since(s, f).await
    }
    async fn counts(&self) -> Result<std::collections::BTreeMap<String, u64>, StoreError> {
        self.inner.counts().await
    }
}

#[tokio::test]
async fn a_consumer_killed_mid_batch_loses_nothing() {
    let brokers = brokers();
    let config = kafka("killed", &brokers).await;
    let db = unique("kafka_killed");
    // 900 events in batches of at most 500: there is always a second batch to die in.
    let first = Arc::new(DiesMidBatch { inner: clickhouse(&db).await, good: Mutex::new(1), hung: Mutex::new(0) });
    let publisher = KafkaPublisher::new(&config).unwrap();
    let events = series();
    for chunk in events.chunks(300) {
        publisher.publish(chunk.to_vec()).await.unwrap();
    }
    let sink = Arc::new(Collect::default());
    let stop = CancellationToken::new();
    let doomed = tokio::spawn(
        KafkaSource::new(&config, Arc::new(AllPartitions)).unwrap().run(processor(first.clone(), sink.clone()), stop),
    );
    // Wait until it is stuck inside its second batch, then kill it there.
    tokio::time::timeout(Duration::from_secs(60), async {
        while *first.hung.lock().unwrap() == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the consumer reached its second batch");
    doomed.abort();
    let _ = doomed.await;
    let stored_before = first.inner.counts().await.unwrap()["metric"];
    assert!(stored_before < events.len() as u64, "the kill came before everything was stored");

    let store = Arc::new(clickhouse_reuse(&db));
    let stop = CancellationToken::new();
    let again = tokio::spawn(
        KafkaSource::new(&config, Arc::new(AllPartitions)).unwrap().run(processor(store.clone(), sink), stop.clone()),
    );
    wait_for_metrics(store.as_ref(), events.len() as u64, Duration::from_secs(90)).await;
    stop.cancel();
    again.await.unwrap();
    store.drop_database().await.unwrap();
}

#[tokio::test]
async fn clickhouse_away_holds_the_batch_and_nothing_is_lost() {
    let brokers = brokers();
    let config = kafka("chdown", &brokers).await;
    let url = clickhouse_url();
    let proxy = Proxy::start(url.trim_start_matches("http://")).await;
    let db = unique("kafka_chdown");
    let store = Arc::new(clickhouse_at(&format!("http://{}", proxy.addr), &db).await);
    let sink = Arc::new(Collect::default());
    let stop = CancellationToken::new();
    let consumer = tokio::spawn(
        KafkaSource::new(&config, Arc::new(AllPartitions)).unwrap().run(processor(store.clone(), sink), stop.clone()),
    );
    let publisher = KafkaPublisher::new(&config).unwrap();
    let events = series();
    publisher.publish(events[..300].to_vec()).await.unwrap();
    wait_for_metrics(store.as_ref(), 300, Duration::from_secs(60)).await;

    proxy.cut();
    // Accepted while ClickHouse is away: the broker holds them, the consumer waits.
    for chunk in events[300..].chunks(100) {
        publisher.publish(chunk.to_vec()).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let direct = clickhouse_reuse(&db);
    assert_eq!(direct.counts().await.unwrap()["metric"], 300, "nothing stored while away");
    proxy.restore();
    wait_for_metrics(store.as_ref(), events.len() as u64, Duration::from_secs(60)).await;
    stop.cancel();
    consumer.await.unwrap();
    direct.drop_database().await.unwrap();
}

/// A tansu broker of the test's own, on `port`, keeping its data in a bucket
/// of the moto server (S3), so that it survives the broker's restart.
fn tansu(port: u16, bucket: &str) -> Child {
    let endpoint = std::env::var("SENTINEL_TEST_MOTO_URL").unwrap_or_else(|_| "http://127.0.0.1:5055".into());
    Command::new("tansu")
        .args(["broker", "--listener-url", &format!("tcp://127.0.0.1:{port}")])
        .args(["--advertised-listener-url", &format!("tcp://127.0.0.1:{port}")])
        .args(["--storage-engine", &format!("s3://{bucket}/")])
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT", endpoint)
        .env("AWS_ALLOW_HTTP", "true")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tansu is installed (scripts/ensure-tansu.sh)")
}

async fn wait_port(port: u16) {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("tansu did not listen on {port}");
}

#[tokio::test]
async fn a_broker_restarted_during_ingestion_loses_nothing() {
    let moto = std::env::var("SENTINEL_TEST_MOTO_URL").unwrap_or_else(|_| "http://127.0.0.1:5055".into());
    let bucket = unique("tansu").replace('_', "-");
    let created = reqwest::Client::new().put(format!("{moto}/{bucket}")).send().await;
    assert!(
        created.as_ref().is_ok_and(|r| r.status().is_success()),
        "moto (S3) must answer at {moto} to hold the broker's data; run scripts/ensure-moto.sh: {created:?}"
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut broker = tansu(port, &bucket);
    wait_port(port).await;
    let brokers = format!("127.0.0.1:{port}");
    let config = kafka("restart", &brokers).await;
    let store = Arc::new(clickhouse(&unique("kafka_restart")).await);
    let sink = Arc::new(Collect::default());
    let stop = CancellationToken::new();
    let consumer = tokio::spawn(
        KafkaSource::new(&config, Arc::new(AllPartitions)).unwrap().run(processor(store.clone(), sink), stop.clone()),
    );
    let publisher = KafkaPublisher::new(&config).unwrap();
    let events = series();
    let mut failed = 0;
    for (n, chunk) in events.chunks(100).enumerate() {
        if n == 3 {
            broker.kill().unwrap();
            broker.wait().unwrap();
            let bucket = bucket.clone();
            let restart = tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(2)).await;
                tansu(port, &bucket)
            });
            // Published while the broker is down: librdkafka retries until it is back.
            let mut outcome = publisher.publish(chunk.to_vec()).await;
            broker = restart.await.unwrap();
            while let Err(PublishError::Unavailable(_)) = outcome {
                // A client told 503 sends the batch again.
                failed += 1;
                outcome = publisher.publish(chunk.to_vec()).await;
            }
            outcome.unwrap();
            continue;
        }
        publisher.publish(chunk.to_vec()).await.unwrap();
    }
    wait_for_metrics(store.as_ref(), events.len() as u64, Duration::from_secs(120)).await;
    stop.cancel();
    consumer.await.unwrap();
    broker.kill().unwrap();
    let _ = broker.wait();
    assert!(failed <= 3, "{failed} retries");
    store.drop_database().await.unwrap();
}
