//! `sentinel bench ingest`: the telemetry path measured end to end, HTTP →
//! Kafka → ClickHouse, through the same router, publisher, consumer and store
//! `sentinel serve` runs. It starts no broker and no ClickHouse: it uses the
//! ones at `KAFKA_BROKERS` and `CLICKHOUSE_URL` (local defaults), in a topic,
//! consumer group and database of its own that it removes afterwards.
//!
//! Throughput: N events posted with `concurrency` requests in flight, in
//! requests of 1, 100 or 1,000 events; the clock stops when ClickHouse holds
//! all N. Latency: from the POST of the point that completes a fault's
//! persistence rule to the anomaly's hand-off to intake, measured for many
//! services while a background load flows.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_trait::async_trait;
use engine::{Engine, SystemClock};
use futures::stream::{self, StreamExt};
use nodes::incident::Detection;
use serde::Serialize;
use serde_json::{json, Value};
use telemetry::detect::DetectorConfig;
use telemetry::kafka::{ensure_topic, AllPartitions, KafkaConfig, KafkaPublisher, KafkaSource};
use telemetry::pipeline::{AnomalySink, Processor};
use telemetry::store::{ClickHouseConfig, ClickHouseStore, EventStore};
use tokio_util::sync::CancellationToken;

use super::percentile_ms as percentile;
use api::access::{Access, Role};
use api::ingest::{IntakeSink, Telemetry};
use api::security::{RateLimit, Security};
use api::server::{router, AppState};

#[derive(Clone, Debug)]
pub struct IngestBench {
    /// Engine and API keys (`DATABASE_URL`, or a temporary SQLite file).
    pub database_url: String,
    pub brokers: String,
    pub clickhouse_url: String,
    pub batch_sizes: Vec<usize>,
    /// Events per throughput measurement with one event per request.
    pub single_events: usize,
    /// Events per throughput measurement with batches.
    pub batch_events: usize,
    pub concurrency: usize,
    /// Services whose fault latency is measured.
    pub faults: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct Throughput {
    pub batch: usize,
    pub events: usize,
    pub concurrency: usize,
    /// Events/s accepted over HTTP (202: acknowledged by Kafka).
    pub http_per_sec: f64,
    /// Events/s from the first request until ClickHouse held them all.
    pub end_to_end_per_sec: f64,
    pub request_p50_ms: f64,
    pub request_p99_ms: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Latency {
    pub anomalies: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct IngestFigures {
    pub throughput: Vec<Throughput>,
    pub ingest_to_anomaly: Latency,
}

/// Records when each service's anomaly reached intake.
#[derive(Default)]
struct Stopwatch(Mutex<HashMap<String, Instant>>);

#[async_trait]
impl AnomalySink for Stopwatch {
    async fn anomaly(&self, d: Detection) -> Result<(), String> {
        self.0.lock().map_err(|e| e.to_string())?.entry(d.service).or_insert_with(Instant::now);
        Ok(())
    }
}

/// One pipeline: its own topic, group and database, and the API in front.
struct Rig {
    base: String,
    key: String,
    store: Arc<ClickHouseStore>,
    stopwatch: Arc<Stopwatch>,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Rig {
    async fn start(b: &IngestBench, engine: &Engine, access: &Access, key: &str, tag: &str) -> anyhow::Result<Rig> {
        let id = format!("{tag}_{}", uuid::Uuid::new_v4().simple());
        let kafka = KafkaConfig {
            topic: format!("sentinel-bench-{id}"),
            group: format!("sentinel-bench-{id}"),
            ..KafkaConfig::new(&b.brokers)
        };
        ensure_topic(&kafka).await.map_err(|e| anyhow::anyhow!("Kafka at {}: {e}", b.brokers))?;
        let ch =
            ClickHouseConfig { database: format!("sentinel_bench_{id}"), ..ClickHouseConfig::new(&b.clickhouse_url) };
        let store = Arc::new(ClickHouseStore::new(&ch));
        store.migrate().await.with_context(|| format!("ClickHouse at {}", b.clickhouse_url))?;
        let stopwatch = Arc::new(Stopwatch::default());
        let stop = CancellationToken::new();
        let processor = Processor::new(store.clone(), stopwatch.clone(), DetectorConfig::default());
        let source = KafkaSource::new(&kafka, Arc::new(AllPartitions)).map_err(|e| anyhow::anyhow!(e))?;
        let consumer = tokio::spawn(source.run(processor, stop.clone()));
        let telemetry = Telemetry {
            publisher: Arc::new(KafkaPublisher::new(&kafka).map_err(|e| anyhow::anyhow!(e))?),
            store: store.clone(),
            intake: IntakeSink::new(engine.clone()),
            storage: "clickhouse",
        };
        // The per-key rate limit is not what is measured.
        let limit = RateLimit { per_second: u32::MAX.try_into()?, burst: u32::MAX.try_into()? };
        let app = router(AppState {
            engine: engine.clone(),
            security: Security::new(access.clone(), limit),
            slack: None,
            telemetry: Some(telemetry),
            memory: Arc::new(nodes::memory::NoMemory::default()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let server = tokio::spawn({
            let stop = stop.clone();
            async move {
                let _ = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await;
            }
        });
        Ok(Rig { base, key: key.to_owned(), store, stopwatch, stop, tasks: vec![consumer, server] })
    }

    async fn stored(&self) -> u64 {
        self.store.counts().await.map(|c| c["metric"]).unwrap_or(0)
    }

    async fn wait_stored(&self, n: u64, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let have = self.stored().await;
            if have >= n {
                return Ok(());
            }
            anyhow::ensure!(Instant::now() < deadline, "only {have} of {n} events reached ClickHouse in {within:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        for t in self.tasks {
            t.await?;
        }
        self.store.drop_database().await?;
        Ok(())
    }
}

const T0: i64 = 1_795_417_200_000;

fn sample(service: usize, minute: i64, value: f64) -> Value {
    json!({ "kind": "metric", "ts": T0 + minute * 60_000, "service": format!("svc-{service:04}"),
            "metric": "http_p99_ms", "value": value })
}

/// Posts `bodies`, `concurrency` at a time; every answer must be 202.
async fn post_all(
    http: &reqwest::Client,
    rig: &Rig,
    bodies: Vec<String>,
    concurrency: usize,
) -> anyhow::Result<Vec<Duration>> {
    let url = format!("{}/v1/events", rig.base);
    let results: Vec<anyhow::Result<Duration>> = stream::iter(bodies)
        .map(|body| {
            let req = http.post(&url).bearer_auth(&rig.key).header("content-type", "application/json").body(body);
            async move {
                let t = Instant::now();
                let resp = req.send().await?;
                let status = resp.status().as_u16();
                let text = resp.text().await?;
                anyhow::ensure!(status == 202, "POST /v1/events: {status} {text}");
                Ok(t.elapsed())
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let mut latencies = results.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    latencies.sort();
    Ok(latencies)
}

async fn throughput(b: &IngestBench, rig: &Rig, http: &reqwest::Client, batch: usize) -> anyhow::Result<Throughput> {
    let events = if batch == 1 { b.single_events } else { b.batch_events };
    let services = 500;
    // Quiet noise: nothing here should look like an anomaly.
    let all: Vec<Value> =
        (0..events).map(|i| sample(i % services, (i / services) as i64, 100.0 + (i % 7) as f64)).collect();
    let bodies: Vec<String> = all.chunks(batch).map(|c| Value::Array(c.to_vec()).to_string()).collect();
    let concurrency = if batch == 1 { b.concurrency } else { b.concurrency.min(16) };
    let started = Instant::now();
    let latencies = post_all(http, rig, bodies, concurrency).await?;
    let http_secs = started.elapsed().as_secs_f64();
    rig.wait_stored(events as u64, Duration::from_secs(300)).await?;
    let total_secs = started.elapsed().as_secs_f64();
    Ok(Throughput {
        batch,
        events,
        concurrency,
        http_per_sec: events as f64 / http_secs,
        end_to_end_per_sec: events as f64 / total_secs,
        request_p50_ms: percentile(&latencies, 0.50),
        request_p99_ms: percentile(&latencies, 0.99),
    })
}

async fn fault_latency(b: &IngestBench, rig: &Rig, http: &reqwest::Client) -> anyhow::Result<Latency> {
    let warm = 60;
    let base = 2000; // services of this phase: svc-2000…
    let warmup: Vec<Value> = (0..warm)
        .flat_map(|m| (0..b.faults).map(move |s| sample(base + s, m, 100.0 + ((s as i64 + m) % 7) as f64)))
        .collect();
    let bodies = warmup.chunks(1000).map(|c| Value::Array(c.to_vec()).to_string()).collect();
    post_all(http, rig, bodies, 8).await?;
    rig.wait_stored(warmup.len() as u64, Duration::from_secs(120)).await?;

    // Background load: quiet batches from other services while the faults arrive.
    let load_stop = CancellationToken::new();
    let load = tokio::spawn({
        let (http, url, key, stop) =
            (http.clone(), format!("{}/v1/events", rig.base), rig.key.clone(), load_stop.clone());
        async move {
            let mut minute = 10_000;
            while !stop.is_cancelled() {
                let batch: Vec<Value> = (0..100).map(|s| sample(4000 + s, minute, 50.0 + (s % 3) as f64)).collect();
                let _ = http.post(&url).bearer_auth(&key).json(&batch).send().await;
                minute += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });
    // Each service gets three faulty points in one request; the third completes the rule.
    let mut sent = HashMap::new();
    for s in 0..b.faults {
        let fault: Vec<Value> = (0..3).map(|k| sample(base + s, warm + k, 900.0)).collect();
        let t = Instant::now();
        let resp = http.post(format!("{}/v1/events", rig.base)).bearer_auth(&rig.key).json(&fault).send().await?;
        anyhow::ensure!(resp.status().as_u16() == 202, "fault batch: {}", resp.status());
        sent.insert(format!("svc-{:04}", base + s), t);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while rig.stopwatch.0.lock().map_err(|e| anyhow::anyhow!("{e}"))?.len() < sent.len() {
        anyhow::ensure!(Instant::now() < deadline, "not every fault was detected within 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    load_stop.cancel();
    load.await?;
    let seen = rig.stopwatch.0.lock().map_err(|e| anyhow::anyhow!("{e}"))?.clone();
    let mut delays: Vec<Duration> =
        sent.iter().filter_map(|(svc, t)| seen.get(svc).map(|at| at.saturating_duration_since(*t))).collect();
    delays.sort();
    Ok(Latency {
        anomalies: delays.len(),
        p50_ms: percentile(&delays, 0.50),
        p99_ms: percentile(&delays, 0.99),
        max_ms: delays.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
    })
}

pub async fn run_ingest_bench(b: &IngestBench) -> anyhow::Result<IngestFigures> {
    let store = super::connect(&b.database_url).await?;
    let engine = Engine::new(store.clone(), engine::Registry::new(), Arc::new(SystemClock));
    let access = Access::new(&store, Arc::new(SystemClock)).await.context("API migrations")?;
    let key = access.create_key("bench-ingest", Role::Ingest, "bench").await?;
    let http = reqwest::Client::builder().pool_max_idle_per_host(b.concurrency).build()?;
    let mut figures = Vec::new();
    for &batch in &b.batch_sizes {
        let rig = Rig::start(b, &engine, &access, &key.secret, &format!("b{batch}")).await?;
        let measured = throughput(b, &rig, &http, batch).await;
        rig.stop().await?;
        figures.push(measured?);
    }
    let rig = Rig::start(b, &engine, &access, &key.secret, "latency").await?;
    let latency = fault_latency(b, &rig, &http).await;
    rig.stop().await?;
    access.revoke_key(&key.key.id).await?;
    Ok(IngestFigures { throughput: figures, ingest_to_anomaly: latency? })
}
