//! The telemetry path inside the binary: `POST /v1/events` and
//! `POST /v1/alertmanager`, the pipeline behind them (Kafka and ClickHouse
//! when configured, the embedded channel and memory store otherwise), and
//! the intake that turns anomalies and alert groups into incidents.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use engine::Engine;
use nodes::analyze::ServiceGraph;
use nodes::incident::Detection;
use nodes::intake::{self, Intake, JoinConfig, Joiner};
use nodes::memory::IncidentMemory;
use serde_json::json;
use telemetry::alertmanager::{self, Change};
use telemetry::detect::DetectorConfig;
use telemetry::event::parse_batch;
use telemetry::kafka::{ensure_topic, KafkaConfig, KafkaPublisher, KafkaSource};

use crate::partitions::SqlPartitionOwner;
use telemetry::pipeline::{AnomalySink, Checkpointing, Embedded, Processor, PublishError, Publisher};

use crate::detector_state::SqlDetectorStates;
use telemetry::store::{ClickHouseConfig, ClickHouseStore, EventStore, MemoryStore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::server::AppState;

/// How long a starting server waits for ClickHouse before it gives up.
const STARTUP_WAIT: Duration = Duration::from_secs(60);

/// Largest body `POST /v1/events` takes (413 beyond).
pub const MAX_EVENTS_BODY: usize = 8 * 1024 * 1024;

#[derive(Clone, Debug)]
pub struct TelemetryConfig {
    /// Kafka when set; the embedded channel otherwise.
    pub kafka: Option<KafkaConfig>,
    /// ClickHouse when set; the memory store otherwise.
    pub clickhouse: Option<ClickHouseConfig>,
    /// Events the embedded pipeline holds before it answers 503.
    pub capacity: usize,
    /// Largest batch the embedded consumer stores at once.
    pub max_batch: usize,
    pub detectors: DetectorConfig,
    /// How often changed detector state is checkpointed.
    pub checkpoint_interval: Duration,
    /// This process's name among the Kafka consumers (`SENTINEL_INSTANCE_ID`):
    /// a replica restarted under the same name takes its partitions back at
    /// once. Two live processes must never share one.
    pub instance_id: String,
    /// Whether this process consumes the Kafka topic (`serve --no-consumer`
    /// turns it off: the process then only accepts events and publishes
    /// them, and other processes store and watch them). The embedded
    /// pipeline is always consumed where it is.
    pub consume: bool,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            kafka: None,
            clickhouse: None,
            capacity: 200_000,
            max_batch: 10_000,
            detectors: DetectorConfig::default(),
            consume: true,
            checkpoint_interval: Duration::from_secs(10),
            instance_id: format!("sentinel-{}", uuid::Uuid::new_v4().simple()),
        }
    }
}

/// Opens incidents for anomalies and alert groups. Safe to call from any
/// number of tasks and processes: the engine's correlation key makes one
/// incident per fingerprint.
#[derive(Clone)]
pub struct IntakeSink {
    engine: Engine,
    semantic: Option<Arc<SemanticIntake>>,
}

/// What joining open incidents by meaning needs (semantic memory on).
pub struct SemanticIntake {
    pub memory: Arc<dyn IncidentMemory>,
    /// The catalogue's dependencies.
    pub services: ServiceGraph,
    pub config: JoinConfig,
}

impl IntakeSink {
    pub fn new(engine: Engine) -> Self {
        IntakeSink { engine, semantic: None }
    }

    /// Detections join open incidents by meaning too ([`intake::open_or_join`]).
    pub fn with_memory(mut self, semantic: SemanticIntake) -> Self {
        self.semantic = Some(Arc::new(semantic));
        self
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub async fn open(&self, d: &Detection) -> engine::Result<Intake> {
        match &self.semantic {
            Some(s) => {
                let joiner = Joiner { memory: &*s.memory, services: &s.services, config: &s.config };
                intake::open_or_join(&self.engine, Some(&joiner), d).await
            }
            None => intake::open_or_attach(&self.engine, d).await,
        }
    }

    pub async fn clear(&self, d: &Detection) -> engine::Result<Option<engine::RunId>> {
        intake::clear(&self.engine, d).await
    }
}

#[async_trait]
impl AnomalySink for IntakeSink {
    async fn anomaly(&self, d: Detection) -> Result<(), String> {
        let outcome = self.open(&d).await.map_err(|e| e.to_string())?;
        tracing::info!(service = %d.service, anomaly = %d.anomaly_type, ?outcome, "anomaly");
        Ok(())
    }
}

/// The running telemetry path, as the handlers see it.
#[derive(Clone)]
pub struct Telemetry {
    pub publisher: Arc<dyn Publisher>,
    pub store: Arc<dyn EventStore>,
    pub intake: IntakeSink,
    /// `clickhouse` or `memory`.
    pub storage: &'static str,
}

/// The event store the configuration names, migrated.
#[derive(Clone)]
pub struct Storage {
    pub store: Arc<dyn EventStore>,
    /// `clickhouse` or `memory`.
    pub kind: &'static str,
}

pub async fn open_store(config: &TelemetryConfig) -> anyhow::Result<Storage> {
    Ok(match &config.clickhouse {
        Some(ch) => {
            let store = ClickHouseStore::new(ch);
            // A ClickHouse restarting as this process starts is waited for a
            // while (a replica restarted during an outage), then reported.
            let deadline = std::time::Instant::now() + STARTUP_WAIT;
            let mut wait = Duration::from_millis(250);
            loop {
                match store.migrate().await {
                    Ok(()) => break,
                    Err(e) if std::time::Instant::now() < deadline => {
                        tracing::warn!(error = %e, retry_in = ?wait, "ClickHouse not ready at start; retrying");
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(Duration::from_secs(5));
                    }
                    Err(e) => anyhow::bail!("ClickHouse at {}: {e} (still failing after {STARTUP_WAIT:?})", ch.url),
                }
            }
            Storage { store: Arc::new(store), kind: "clickhouse" }
        }
        None => Storage { store: Arc::new(MemoryStore::new()), kind: "memory" },
    })
}

/// Builds the pipeline over `storage` and starts its consumer (stopped by `stop`).
pub async fn start(
    intake: IntakeSink,
    storage: Storage,
    config: &TelemetryConfig,
    stop: CancellationToken,
) -> anyhow::Result<(Telemetry, JoinHandle<()>)> {
    // Detector state is checkpointed beside the runs (the API's migrations
    // hold its table), so baselines survive restarts and partition moves.
    let engine = intake.engine().clone();
    crate::access::Access::new(engine.store(), engine.clock().clone()).await?;
    let checkpointing = Checkpointing {
        states: Arc::new(SqlDetectorStates::new(engine.store().clone())),
        interval: config.checkpoint_interval,
    };
    let shared = engine.store().clone();
    let processor = Processor::new(storage.store.clone(), Arc::new(intake.clone()), config.detectors.clone())
        .with_checkpointing(checkpointing);
    let (publisher, consumer): (Arc<dyn Publisher>, JoinHandle<()>) = match &config.kafka {
        Some(k) => {
            ensure_topic(k).await.map_err(|e| anyhow::anyhow!("Kafka at {}: {e}", k.brokers))?;
            let publisher = KafkaPublisher::new(k).map_err(|e| anyhow::anyhow!(e))?;
            let consumer = if config.consume {
                let owner = SqlPartitionOwner::new(shared, &k.group, &config.instance_id);
                let source = KafkaSource::new(k, Arc::new(owner)).map_err(|e| anyhow::anyhow!(e))?;
                tokio::spawn(source.run(processor, stop))
            } else {
                tracing::info!("not consuming the topic here (--no-consumer)");
                tokio::spawn(async {})
            };
            (Arc::new(publisher), consumer)
        }
        None if !config.consume => {
            anyhow::bail!("--no-consumer needs Kafka (telemetry.kafka or KAFKA_BROKERS): the embedded pipeline is consumed by the process that accepts the events")
        }
        None => {
            let (pipe, source) = Embedded::new(config.capacity);
            (Arc::new(pipe), tokio::spawn(source.run(processor, config.max_batch, stop)))
        }
    };
    tracing::info!(pipeline = publisher.kind(), storage = storage.kind, "telemetry path started");
    Ok((Telemetry { publisher, store: storage.store, intake, storage: storage.kind }, consumer))
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": { "code": code, "message": message.into() } }))).into_response()
}

fn retry_after(mut resp: Response, after: Duration) -> Response {
    let secs = after.as_secs().max(1);
    resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    resp
}

/// A body that could not be read (too large, or cut off): our JSON error, with axum's reason.
fn unreadable(rejection: BytesRejection) -> Response {
    let status = rejection.status();
    let code = if status == StatusCode::PAYLOAD_TOO_LARGE { "too_large" } else { "bad_body" };
    error(status, code, format!("{} (the limit is {MAX_EVENTS_BODY} bytes)", rejection.body_text()))
}

fn not_running() -> Response {
    error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the telemetry path is not running here")
}

/// Accept a batch of events.
///
/// A JSON array of events, or NDJSON (one per line); see the event model in
/// the README. Answered 202 once the batch is durably handed to the pipeline
/// (acknowledged by Kafka, or queued in the embedded pipeline).
/// The telemetry bodies in the OpenAPI document, exactly: their schemas come
/// from the parsers' own crate, in JSON Schema terms utoipa's types do not
/// hold (patterns per `oneOf` branch, `propertyNames`, closed objects).
pub fn document_bodies(doc: &mut serde_json::Value) {
    let bodies = [
        ("/v1/events", telemetry::event::batch_schema()),
        ("/v1/alertmanager", telemetry::alertmanager::notification_schema()),
    ];
    for (path, schema) in bodies {
        let body = &mut doc["paths"][path]["post"]["requestBody"];
        assert!(body.is_object(), "{path} has a request body in the document");
        body["content"]["application/json"]["schema"] = schema;
        body["required"] = true.into();
    }
    // Protobuf, which JSON Schema cannot describe: bytes of that media type.
    doc["paths"]["/api/v1/write"]["post"]["requestBody"]["content"]["application/x-protobuf"]["schema"] =
        serde_json::json!({ "type": "string", "format": "binary" });
}

#[utoipa::path(
    post, path = "/v1/events", tag = "telemetry",
    request_body(content = String, description = "One event, a JSON array of events, or events one after another (NDJSON)", content_type = "application/json"),
    responses(
        (status = 202, description = "Accepted: `{\"accepted\": N}`"),
        (status = 400, description = "An event is malformed; `error.index` says which (0-based)", body = crate::server::ErrorBody),
        (status = 413, description = "The body or the batch is too large", body = crate::server::ErrorBody),
        (status = 503, description = "The pipeline is saturated or unavailable; retry after `Retry-After`", body = crate::server::ErrorBody),
    )
)]
pub async fn post_events(State(state): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    let Some(t) = state.telemetry.as_ref() else { return not_running() };
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return unreadable(rejection),
    };
    let events = match parse_batch(&body) {
        Ok(events) => events,
        Err(e) => {
            metrics::counter!("sentinel_ingest_rejected_total").increment(1);
            let body = json!({ "error": { "code": "bad_event", "message": e.to_string(), "index": e.index } });
            return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
        }
    };
    if events.is_empty() {
        return error(StatusCode::BAD_REQUEST, "bad_event", "the batch holds no event");
    }
    let n = events.len();
    match publish(t, events).await {
        Ok(()) => (StatusCode::ACCEPTED, axum::Json(json!({ "accepted": n }))).into_response(),
        Err(refused) => refused,
    }
}

/// Hands a batch to the pipeline; the refusal is the answer to give.
async fn publish(t: &Telemetry, events: Vec<telemetry::event::Event>) -> Result<(), Response> {
    let n = events.len();
    match t.publisher.publish(events).await {
        Ok(()) => {
            metrics::counter!("sentinel_ingest_events_total").increment(n as u64);
            Ok(())
        }
        Err(PublishError::Saturated { retry_after: after }) => {
            metrics::counter!("sentinel_ingest_saturated_total").increment(1);
            Err(retry_after(
                error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "saturated",
                    format!("{}", PublishError::Saturated { retry_after: after }),
                ),
                after,
            ))
        }
        Err(e @ PublishError::TooLarge { .. }) => Err(error(StatusCode::PAYLOAD_TOO_LARGE, "too_large", e.to_string())),
        Err(e @ PublishError::Unavailable(_)) => {
            tracing::warn!(error = %e, "publish failed");
            Err(retry_after(
                error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e.to_string()),
                Duration::from_secs(5),
            ))
        }
    }
}

/// Prometheus remote write 1.0.
///
/// A snappy-compressed protobuf `WriteRequest`, as Prometheus's
/// `remote_write` sends it (with an ingest key as its bearer credentials).
/// Each sample becomes a metric event on the same path as `/v1/events`: the
/// series' `__name__` is the metric, its `service` (else `app`, else `job`)
/// label the service. Stale markers are skipped. 204 once the batch is handed
/// to the pipeline; 400 is final (Prometheus drops the batch), 503 is retried.
#[utoipa::path(
    post, path = "/api/v1/write", tag = "telemetry",
    request_body(content = Vec<u8>, description = "snappy-compressed protobuf prometheus.WriteRequest", content_type = "application/x-protobuf"),
    responses(
        (status = 204, description = "Accepted"),
        (status = 400, description = "Not a remote-write body, or a series without a name or service", body = crate::server::ErrorBody),
        (status = 413, description = "The body or the batch is too large", body = crate::server::ErrorBody),
        (status = 503, description = "The pipeline is saturated or unavailable; retry after `Retry-After`", body = crate::server::ErrorBody),
    )
)]
pub async fn post_remote_write(State(state): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    let Some(t) = state.telemetry.as_ref() else { return not_running() };
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return unreadable(rejection),
    };
    let decoded = match telemetry::remote_write::decode(&body) {
        Ok(d) => d,
        Err(e) => {
            metrics::counter!("sentinel_ingest_rejected_total").increment(1);
            return error(StatusCode::BAD_REQUEST, "bad_write_request", e);
        }
    };
    if decoded.skipped > 0 {
        metrics::counter!("sentinel_remote_write_skipped_samples_total").increment(decoded.skipped as u64);
    }
    if decoded.events.is_empty() {
        return StatusCode::NO_CONTENT.into_response();
    }
    match publish(t, decoded.events).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(refused) => refused,
    }
}

/// Alertmanager's webhook (payload version 4).
///
/// A firing group opens its incident (or attaches to the open one: one group
/// is one incident); a resolved group clears it, closing it if it still waits
/// for a decision. Configure Alertmanager's `webhook_configs` with this URL
/// and an API key as bearer credentials.
#[utoipa::path(
    post, path = "/v1/alertmanager", tag = "telemetry",
    request_body(content = String, description = "Alertmanager webhook payload, version 4", content_type = "application/json"),
    responses(
        (status = 202, description = "`{\"incident\": RUN_ID|null, \"status\": \"opened\"|\"attached\"|\"duplicate\"|\"cleared\"|\"no_open_incident\"}`"),
        (status = 400, description = "Not an Alertmanager v4 payload", body = crate::server::ErrorBody),
        (status = 503, description = "The database is unavailable; Alertmanager retries", body = crate::server::ErrorBody),
    )
)]
pub async fn post_alertmanager(State(state): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    let Some(t) = state.telemetry.as_ref() else { return not_running() };
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return unreadable(rejection),
    };
    let notification = match alertmanager::parse(&body) {
        Ok(n) => n,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_payload", e),
    };
    metrics::counter!("sentinel_alertmanager_notifications_total", "status" => notification.status.clone())
        .increment(1);
    let outcome = match notification.change() {
        Change::Firing(d) => t.intake.open(&d).await.map(|i| match i {
            Intake::Opened(run) => (Some(run), "opened"),
            Intake::Attached(run, engine::Delivery::Accepted) => (Some(run), "attached"),
            Intake::Joined(run, engine::Delivery::Accepted, _) => (Some(run), "joined"),
            Intake::Attached(run, engine::Delivery::Duplicate)
            | Intake::Joined(run, engine::Delivery::Duplicate, _)
            | Intake::Repeated(run) => (Some(run), "duplicate"),
        }),
        Change::Resolved(d) => t.intake.clear(&d).await.map(|run| match run {
            Some(run) => (Some(run), "cleared"),
            None => (None, "no_open_incident"),
        }),
    };
    match outcome {
        Ok((run, status)) => {
            (StatusCode::ACCEPTED, axum::Json(json!({ "incident": run, "status": status }))).into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, "alertmanager intake failed");
            retry_after(error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e.to_string()), Duration::from_secs(5))
        }
    }
}
