//! What the telemetry tests share: the real services, unique names, a sink
//! that collects detections, and a TCP proxy that can cut a service off.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use nodes::incident::Detection;
use telemetry::event::{Event, MetricSample};
use telemetry::pipeline::AnomalySink;
use telemetry::store::{ClickHouseConfig, ClickHouseStore, EventStore};

pub fn clickhouse_url() -> String {
    std::env::var("CLICKHOUSE_URL").unwrap_or_else(|_| "http://127.0.0.1:8123".into())
}

pub fn brokers() -> String {
    let brokers = std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let first = brokers.split(',').next().unwrap_or_default().to_owned();
    if std::net::TcpStream::connect_timeout(&first.parse().expect("KAFKA_BROKERS host:port"), Duration::from_secs(2))
        .is_err()
    {
        panic!("no Kafka broker answers at {first}; run scripts/ensure-tansu.sh");
    }
    brokers
}

/// A name no other test or run uses.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{prefix}_{}_{nanos}", std::process::id())
}

/// A fresh ClickHouse database behind `url`.
pub async fn clickhouse_at(url: &str, name: &str) -> ClickHouseStore {
    let config = ClickHouseConfig { database: format!("sentinel_t_{name}"), ..ClickHouseConfig::new(url) };
    let store = ClickHouseStore::new(&config);
    store
        .ping()
        .await
        .unwrap_or_else(|e| panic!("ClickHouse is not answering at {url} ({e}); run scripts/ensure-clickhouse.sh"));
    store.drop_database().await.unwrap();
    store.migrate().await.unwrap();
    store
}

/// The database of an earlier [`clickhouse`] call again, without dropping it.
pub fn clickhouse_reuse(name: &str) -> ClickHouseStore {
    let config = ClickHouseConfig { database: format!("sentinel_t_{name}"), ..ClickHouseConfig::new(clickhouse_url()) };
    ClickHouseStore::new(&config)
}

pub async fn clickhouse(name: &str) -> ClickHouseStore {
    clickhouse_at(&clickhouse_url(), name).await
}

#[derive(Default)]
pub struct Collect(pub Mutex<Vec<Detection>>);

#[async_trait]
impl AnomalySink for Collect {
    async fn anomaly(&self, d: Detection) -> Result<(), String> {
        self.0.lock().unwrap().push(d);
        Ok(())
    }
}

pub fn sample(service: &str, i: i64, value: f64) -> Event {
    Event::Metric(MetricSample {
        ts: 1_795_417_200_000 + i * 60_000,
        service: service.into(),
        metric: "http_p99_ms".into(),
        value,
        labels: BTreeMap::from([("namespace".to_owned(), "shop".to_owned())]),
    })
}

/// Waits until the store holds `n` distinct metric samples.
pub async fn wait_for_metrics(store: &dyn EventStore, n: u64, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let have = store.counts().await.map(|c| c["metric"]).unwrap_or(0);
        if have == n {
            return;
        }
        assert!(have < n, "more samples than sent: {have} > {n}");
        if tokio::time::Instant::now() > deadline {
            panic!("only {have} of {n} samples stored within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
