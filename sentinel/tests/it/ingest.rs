//! The telemetry path through the HTTP API: `POST /v1/events` into the
//! embedded pipeline and into the real tansu broker and clickhouse-server,
//! backpressure while ClickHouse is away, and Alertmanager notifications
//! opening, attaching to and clearing incidents.

use std::sync::Arc;
use std::time::Duration;

use api::access::Access;
use api::ingest::{self, IntakeSink, Storage, TelemetryConfig};
use api::security::RateLimit;
use api::server::{router, AppState};
use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use engine::testing::{fast_worker, Backend, BackgroundWorker, TestDb};
use engine::{Engine, RunFilter, RunStatus, SystemClock};
use http_body_util::BodyExt;
use nodes::workflow::{self, Incident};
use serde_json::{json, Value};
use telemetry::kafka::KafkaConfig;
use telemetry::store::{ClickHouseConfig, ClickHouseStore, EventStore, StorePorts};
use telemetry::testing::Proxy;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::support::{eventually, security, Keys};

struct Harness {
    app: axum::Router,
    engine: Engine,
    keys: Keys,
    access: Access,
    store: Arc<dyn EventStore>,
    stop: CancellationToken,
    _worker: BackgroundWorker,
    _db: TestDb,
}

/// The API with the incident workflow over `storage`, a worker, and the telemetry path.
async fn harness(config: TelemetryConfig, storage: Storage) -> Harness {
    let db = TestDb::new(Backend::Postgres).await;
    let store = db.store().await;
    let access = Access::new(&store, Arc::new(SystemClock)).await.unwrap();
    let kill_switch = api::remediate::SharedKillSwitch::arc(access.clone());
    let executor = sentinel::wiring::executor(None, kill_switch.clone()).await.unwrap();
    // The embedded defaults, with the database this harness opened itself.
    let env = |name: &str| (name == "DATABASE_URL").then(|| "sqlite://unused".to_owned());
    let defaults = sentinel::config::Config::load(None, &env).unwrap();
    let workflow = sentinel::wiring::standalone_workflow(
        &store,
        kill_switch,
        StorePorts(storage.store.clone()),
        executor,
        Arc::new(nodes::memory::NoMemory::default()),
        &defaults,
    )
    .await
    .unwrap();
    let mut registry = engine::Registry::new();
    registry.register(workflow::graph(workflow));
    let engine = Engine::new(store, registry, Arc::new(SystemClock));
    let worker = BackgroundWorker::start(&engine, fast_worker("ingest"));
    let stop = CancellationToken::new();
    let events = storage.store.clone();
    let (telemetry, _consumer) =
        ingest::start(IntakeSink::new(engine.clone()), storage, &config, stop.clone()).await.unwrap();
    let (security, keys) = security(&engine, RateLimit::default()).await;
    let app = router(AppState {
        engine: engine.clone(),
        security,
        slack: None,
        telemetry: Some(telemetry),
        memory: std::sync::Arc::new(nodes::memory::NoMemory::default()),
    });
    Harness { app, engine, keys, access, store: events, stop, _worker: worker, _db: db }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn post(
    app: &axum::Router,
    path: &str,
    key: Option<&str>,
    body: impl Into<Body>,
) -> (StatusCode, Value, Option<String>) {
    let mut req = Request::post(path).header(header::CONTENT_TYPE, "application/json");
    if let Some(key) = key {
        req = req.header(header::AUTHORIZATION, format!("Bearer {key}"));
    }
    let resp = app.clone().oneshot(req.body(body.into()).unwrap()).await.unwrap();
    let status = resp.status();
    let retry = resp.headers().get(header::RETRY_AFTER).map(|v| v.to_str().unwrap().to_owned());
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null), retry)
}

fn metric(service: &str, minute: i64, value: f64) -> Value {
    json!({ "kind": "metric", "ts": 1_795_417_200_000i64 + minute * 60_000, "service": service,
            "metric": "http_p99_ms", "value": value, "labels": { "namespace": "shop" } })
}

/// 300 minutes of `checkout` latency with a 40-minute fault at minute 200.
fn faulty_series() -> Vec<Value> {
    (0..300)
        .map(|i| metric("checkout", i, 120.0 + (i % 7) as f64 + if (200..240).contains(&i) { 600.0 } else { 0.0 }))
        .collect()
}

async fn incident_runs(engine: &Engine) -> Vec<engine::Run> {
    engine.list(&RunFilter { graph: Some(workflow::GRAPH.into()), ..RunFilter::default() }).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_validated_accepted_and_one_fault_opens_one_incident() {
    let storage = ingest::open_store(&TelemetryConfig::default()).await.unwrap();
    let h = harness(TelemetryConfig::default(), storage).await;
    let op = Some(h.keys.operator.as_str());

    let (status, body, _) = post(&h.app, "/v1/events", None, "[]").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, _, _) =
        post(&h.app, "/v1/events", Some(&h.keys.viewer), json!([metric("a", 0, 1.0)]).to_string()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // An ingest key pushes telemetry and may read or decide nothing.
    let agent = h.access.create_key("agent", api::access::Role::Ingest, "test").await.unwrap().secret;
    let (status, body, _) = post(&h.app, "/v1/events", Some(&agent), json!([metric("b", 0, 1.0)]).to_string()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let req =
        Request::get("/v1/runs").header(header::AUTHORIZATION, format!("Bearer {agent}")).body(Body::empty()).unwrap();
    assert_eq!(h.app.clone().oneshot(req).await.unwrap().status(), StatusCode::FORBIDDEN);
    let approve = "/v1/runs/01a2054b-87bb-7445-bf0f-830483e586af/approve";
    assert_eq!(post(&h.app, approve, Some(&agent), "{}").await.0, StatusCode::FORBIDDEN);
    eventually("the agent's sample stored", Duration::from_secs(10), || async {
        h.store.counts().await.unwrap()["metric"] == 1
    })
    .await;

    let bad = json!([metric("a", 0, 1.0), metric("a", 1, 1.0), { "kind": "metric", "service": "a" }]);
    let (status, body, _) = post(&h.app, "/v1/events", op, bad.to_string()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!((body["error"]["code"].as_str(), body["error"]["index"].as_u64()), (Some("bad_event"), Some(2)));
    let (status, body, _) = post(&h.app, "/v1/events", op, "{not json").await;
    assert_eq!((status, body["error"]["index"].as_u64()), (StatusCode::BAD_REQUEST, Some(0)));
    let (status, body, _) = post(&h.app, "/v1/events", op, vec![b' '; 9 * 1024 * 1024]).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("too_large")), "{body}");
    assert_eq!(h.store.counts().await.unwrap()["metric"], 1, "nothing of a refused batch is kept");

    // The series as NDJSON in batches of 50, then one array; one fault, one incident.
    let series = faulty_series();
    for chunk in series[..150].chunks(50) {
        let ndjson: String = chunk.iter().map(|e| format!("{e}\n")).collect();
        let (status, body, _) = post(&h.app, "/v1/events", op, ndjson).await;
        assert_eq!((status, body["accepted"].as_u64()), (StatusCode::ACCEPTED, Some(50)));
    }
    let (status, body, _) = post(&h.app, "/v1/events", op, Value::Array(series[150..].to_vec()).to_string()).await;
    assert_eq!((status, body["accepted"].as_u64()), (StatusCode::ACCEPTED, Some(150)));
    eventually("300 samples stored", Duration::from_secs(20), || async {
        h.store.counts().await.unwrap()["metric"] == 301
    })
    .await;
    eventually("the incident", Duration::from_secs(20), || async { !incident_runs(&h.engine).await.is_empty() }).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let runs = incident_runs(&h.engine).await;
    assert_eq!(runs.len(), 1, "one fault, one incident");
    let incident: Incident = serde_json::from_value(runs[0].state.clone()).unwrap();
    let d = incident.detection.unwrap();
    assert_eq!(
        (d.service.as_str(), d.anomaly_type.as_str(), d.labels["namespace"].as_str()),
        ("checkout", "latency_spike", "shop")
    );
}

async fn post_write(app: &axum::Router, key: &str, body: Vec<u8>) -> (StatusCode, Value) {
    let req = Request::post("/api/v1/write")
        .header(header::CONTENT_TYPE, "application/x-protobuf")
        .header(header::CONTENT_ENCODING, "snappy")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .header(header::AUTHORIZATION, format!("Bearer {key}"))
        .body(Body::from(body))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// Prometheus remote write feeds the same path and detectors as `/v1/events`:
/// the faulty series, written as Prometheus would, opens one incident.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_write_feeds_the_detectors_like_events_do() {
    use telemetry::remote_write::{encode, Label, Sample, TimeSeries, WriteRequest};
    let storage = ingest::open_store(&TelemetryConfig::default()).await.unwrap();
    let h = harness(TelemetryConfig::default(), storage).await;
    let prometheus = h.access.create_key("prometheus", api::access::Role::Ingest, "test").await.unwrap().secret;
    let labels = |name: &str| {
        [("__name__", name), ("job", "checkout"), ("instance", "10.0.0.7:8080"), ("namespace", "shop")]
            .iter()
            .map(|(n, v)| Label { name: (*n).into(), value: (*v).into() })
            .collect::<Vec<_>>()
    };
    let samples: Vec<Sample> = faulty_series()
        .iter()
        .map(|e| Sample { timestamp: e["ts"].as_i64().unwrap(), value: e["value"].as_f64().unwrap() })
        .collect();

    let one =
        WriteRequest { timeseries: vec![TimeSeries { labels: labels("http_p99_ms"), samples: samples[..1].to_vec() }] };
    assert_eq!(post_write(&h.app, &h.keys.viewer, encode(&one)).await.0, StatusCode::FORBIDDEN);
    let (status, body) = post_write(&h.app, &prometheus, b"not snappy".to_vec()).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("bad_write_request")),
        "{body}"
    );

    // As Prometheus shards it: several requests, in order.
    for chunk in samples.chunks(60) {
        let request =
            WriteRequest { timeseries: vec![TimeSeries { labels: labels("http_p99_ms"), samples: chunk.to_vec() }] };
        let (status, body) = post_write(&h.app, &prometheus, encode(&request)).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    }
    eventually("300 samples stored", Duration::from_secs(20), || async {
        h.store.counts().await.unwrap()["metric"] == 300
    })
    .await;
    eventually("the incident waits for a decision", Duration::from_secs(30), || async {
        incident_runs(&h.engine).await.iter().any(|r| r.status == engine::RunStatus::Waiting || r.status.is_finished())
    })
    .await;
    let runs = incident_runs(&h.engine).await;
    assert_eq!(runs.len(), 1, "one step, one incident");
    let incident: Incident = serde_json::from_value(runs[0].state.clone()).unwrap();
    let d = incident.detection.unwrap();
    assert_eq!(
        (d.service.as_str(), d.anomaly_type.as_str(), d.metric.as_str()),
        ("checkout", "latency_spike", "http_p99_ms")
    );
    assert_eq!(d.labels["instance"], "10.0.0.7:8080");
}

pub fn clickhouse_url() -> String {
    std::env::var("CLICKHOUSE_URL").unwrap_or_else(|_| "http://127.0.0.1:8123".into())
}

pub async fn clickhouse(url: &str, name: &str) -> (ClickHouseConfig, Storage) {
    let config = ClickHouseConfig {
        database: format!("sentinel_t_{name}_{}", uuid::Uuid::new_v4().simple()),
        ..ClickHouseConfig::new(url)
    };
    let store = ClickHouseStore::new(&config);
    store
        .ping()
        .await
        .unwrap_or_else(|e| panic!("ClickHouse is not answering at {url} ({e}); run scripts/ensure-clickhouse.sh"));
    store.migrate().await.unwrap();
    (config, Storage { store: Arc::new(store), kind: "clickhouse" })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_to_kafka_to_clickhouse_exactly_as_sent() {
    let brokers = crate::support::kafka_brokers().await;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let kafka = KafkaConfig {
        topic: format!("t-http-{id}"),
        group: format!("g-http-{id}"),
        max_wait: Duration::from_millis(50),
        ..KafkaConfig::new(&brokers)
    };
    let (ch, storage) = clickhouse(&clickhouse_url(), "http").await;
    let config = TelemetryConfig { kafka: Some(kafka), clickhouse: Some(ch.clone()), ..TelemetryConfig::default() };
    let h = harness(config, storage).await;
    let op = Some(h.keys.operator.as_str());
    let mut series = faulty_series();
    series.extend((0..300).map(|i| metric("search", i, 40.0 + (i % 5) as f64 * 0.25)));
    series.push(json!({ "kind": "deploy", "ts": "2026-11-23T07:58:00Z", "service": "checkout", "version": "1.42.0",
                        "change_type": "rollout", "git_sha": "9f1c2e7" }));
    for chunk in series.chunks(100) {
        let (status, body, _) = post(&h.app, "/v1/events", op, Value::Array(chunk.to_vec()).to_string()).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }
    // The deploy came in the last request, and may be stored in a batch of its own.
    eventually("600 samples and the deploy in ClickHouse", Duration::from_secs(60), || async {
        h.store.counts().await.map(|c| c["metric"] == 600 && c["deploy"] == 1).unwrap_or(false)
    })
    .await;
    // Exactly as sent, read back through a client of its own.
    let direct = ClickHouseStore::new(&ch);
    for service in ["checkout", "search"] {
        let sent: Vec<(i64, f64)> = series
            .iter()
            .filter(|e| e["service"] == service && e["kind"] == "metric")
            .map(|e| (e["ts"].as_i64().unwrap(), e["value"].as_f64().unwrap()))
            .collect();
        assert_eq!(direct.metric_window(service, "http_p99_ms", 0, i64::MAX).await.unwrap(), sent, "{service}");
    }
    let deploys = direct.deploys_since("checkout", 0).await.unwrap();
    assert_eq!((deploys.len(), deploys[0].ts, deploys[0].version.as_str()), (1, 1_795_420_680_000, "1.42.0"));
    eventually("the incident", Duration::from_secs(30), || async { !incident_runs(&h.engine).await.is_empty() }).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let runs = incident_runs(&h.engine).await;
    assert_eq!(runs.len(), 1, "one fault, one incident");
    let incident: Incident = serde_json::from_value(runs[0].state.clone()).unwrap();
    assert_eq!(incident.detection.unwrap().service, "checkout");
    direct.drop_database().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_away_is_backpressure_and_nothing_accepted_is_lost() {
    let url = clickhouse_url();
    let proxy = Proxy::start(url.trim_start_matches("http://")).await;
    let (ch, storage) = clickhouse(&format!("http://{}", proxy.addr), "backpressure").await;
    let config = TelemetryConfig { capacity: 500, max_batch: 100, ..TelemetryConfig::default() };
    let h = harness(config, storage).await;
    let op = Some(h.keys.operator.as_str());
    proxy.cut();

    let series: Vec<Value> = (0..2000).map(|i| metric("search", i, 40.0 + (i % 5) as f64)).collect();
    let mut accepted: Vec<Value> = Vec::new();
    let mut refused = None;
    for chunk in series.chunks(100) {
        let (status, body, retry) = post(&h.app, "/v1/events", op, Value::Array(chunk.to_vec()).to_string()).await;
        match status {
            StatusCode::ACCEPTED => accepted.extend_from_slice(chunk),
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(body["error"]["code"], "saturated", "{body}");
                refused = Some(retry.expect("Retry-After on 503"));
                break;
            }
            other => panic!("{other}: {body}"),
        }
    }
    assert_eq!(refused.as_deref(), Some("1"), "the pipeline pushed back once full");
    let direct = ClickHouseStore::new(&ClickHouseConfig { url: url.clone(), ..ch.clone() });
    let stored_while_away = direct.counts().await.unwrap()["metric"] as usize;
    // A batch whose insert reached ClickHouse just as it went away is stored
    // and still held (its insert failed as far as the pipeline knows).
    assert!(
        accepted.len() >= 500 && accepted.len() - stored_while_away <= 500,
        "{} accepted, {stored_while_away} stored: at most the capacity (500) held",
        accepted.len()
    );

    proxy.restore();
    let total = accepted.len() as u64;
    eventually("every accepted event stored", Duration::from_secs(30), || async {
        direct.counts().await.map(|c| c["metric"] == total).unwrap_or(false)
    })
    .await;
    let stored = direct.metric_window("search", "http_p99_ms", 0, i64::MAX).await.unwrap();
    let sent: Vec<(i64, f64)> =
        accepted.iter().map(|e| (e["ts"].as_i64().unwrap(), e["value"].as_f64().unwrap())).collect();
    assert_eq!(stored, sent);
    // And it takes events again.
    let (status, _, _) = post(&h.app, "/v1/events", op, Value::Array(series[1900..].to_vec()).to_string()).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    direct.drop_database().await.unwrap();
}

fn notification(status: &str, alerts: &[(&str, &str)]) -> String {
    let alerts: Vec<Value> = alerts
        .iter()
        .map(|(fp, alert_status)| {
            json!({ "status": alert_status, "labels": { "alertname": "KubeNodeNotReady", "node": "node-7", "severity": "critical", "namespace": "kube-system" },
                    "annotations": { "summary": "node-7 is not ready" }, "startsAt": "2026-11-23T07:00:00Z",
                    "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prometheus/graph", "fingerprint": fp })
        })
        .collect();
    json!({ "version": "4", "groupKey": "{}:{alertname=\"KubeNodeNotReady\"}", "status": status, "receiver": "sentinel",
            "groupLabels": { "alertname": "KubeNodeNotReady" }, "commonLabels": { "alertname": "KubeNodeNotReady", "node": "node-7" },
            "commonAnnotations": {}, "externalURL": "http://alertmanager:9093", "truncatedAlerts": 0, "alerts": alerts,
            "aNewerField": true })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_group_is_one_incident_and_its_resolution_clears_it() {
    let storage = ingest::open_store(&TelemetryConfig::default()).await.unwrap();
    let h = harness(TelemetryConfig::default(), storage).await;
    let op = Some(h.keys.operator.as_str());

    let (status, body, _) = post(&h.app, "/v1/alertmanager", op, "{\"version\":\"4\"}").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, first, _) = post(&h.app, "/v1/alertmanager", op, notification("firing", &[("aa11", "firing")])).await;
    assert_eq!((status, first["status"].as_str()), (StatusCode::ACCEPTED, Some("opened")), "{first}");
    let run: engine::RunId = serde_json::from_value(first["incident"].clone()).unwrap();
    // Draining a node needs a human: the incident waits for a decision.
    eventually("the incident waits for approval", Duration::from_secs(20), || async {
        h.engine.run(run).await.unwrap().status == RunStatus::Waiting
    })
    .await;
    // The same group again, with a second alert: attached, not a second incident.
    let (_, again, _) =
        post(&h.app, "/v1/alertmanager", op, notification("firing", &[("aa11", "firing"), ("bb22", "firing")])).await;
    assert_eq!((again["status"].as_str(), &again["incident"]), (Some("attached"), &first["incident"]));
    assert_eq!(incident_runs(&h.engine).await.len(), 1);

    let (_, resolved, _) =
        post(&h.app, "/v1/alertmanager", op, notification("resolved", &[("aa11", "resolved"), ("bb22", "resolved")]))
            .await;
    assert_eq!((resolved["status"].as_str(), &resolved["incident"]), (Some("cleared"), &first["incident"]));
    let done = engine::testing::finished(&h.engine, run).await;
    let incident: Incident = serde_json::from_value(done.state).unwrap();
    assert_eq!(incident.outcome.as_deref(), Some("cleared before any action"));
    assert!(incident.actions.is_empty(), "nothing was done");
    let (_, late, _) = post(&h.app, "/v1/alertmanager", op, notification("resolved", &[("aa11", "resolved")])).await;
    assert_eq!(late["status"], "no_open_incident");
}

/// `serve --no-consumer`: the process accepts events and publishes them to
/// Kafka, but never joins the consumers (no member row, no partition lease);
/// a consuming process on the same database stores every one of them. The
/// embedded pipeline cannot be split that way, and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_that_does_not_consume_only_publishes() {
    let brokers = crate::support::kafka_brokers().await;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let kafka = KafkaConfig {
        topic: format!("t-noconsume-{id}"),
        group: format!("g-noconsume-{id}"),
        max_wait: Duration::from_millis(50),
        ..KafkaConfig::new(&brokers)
    };
    let (ch, storage) = clickhouse(&clickhouse_url(), "noconsume").await;
    let publishing = TelemetryConfig {
        kafka: Some(kafka),
        clickhouse: Some(ch.clone()),
        consume: false,
        instance_id: format!("publisher-{id}"),
        ..TelemetryConfig::default()
    };
    let h = harness(publishing.clone(), storage.clone()).await;
    let op = Some(h.keys.operator.as_str());
    let series: Vec<Value> = (0..200).map(|i| metric("search", i, 40.0 + (i % 5) as f64 * 0.25)).collect();
    for chunk in series.chunks(50) {
        let (status, body, _) = post(&h.app, "/v1/events", op, Value::Array(chunk.to_vec()).to_string()).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }
    let consuming = TelemetryConfig { consume: true, instance_id: format!("consumer-{id}"), ..publishing.clone() };
    let (_telemetry, _consumer) =
        ingest::start(IntakeSink::new(h.engine.clone()), storage, &consuming, h.stop.clone()).await.unwrap();
    eventually("the 200 samples in ClickHouse", Duration::from_secs(60), || async {
        h.store.counts().await.map(|c| c["metric"] == 200).unwrap_or(false)
    })
    .await;
    let pool = h.engine.store().pool();
    let group = format!("g-noconsume-{id}");
    let members: Vec<String> = sqlx::query_scalar("SELECT member FROM consumer_members WHERE consumer_group = $1")
        .bind(&group)
        .fetch_all(pool)
        .await
        .unwrap();
    assert_eq!(members, [format!("consumer-{id}")], "only the consuming process joined");
    let owners: Vec<Option<String>> =
        sqlx::query_scalar("SELECT DISTINCT owner FROM partition_owners WHERE consumer_group = $1")
            .bind(&group)
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(owners, [Some(format!("consumer-{id}"))], "every partition leased to the consuming process");
    ClickHouseStore::new(&ch).drop_database().await.unwrap();

    let embedded = TelemetryConfig { consume: false, ..TelemetryConfig::default() };
    let memory = Storage { store: Arc::new(telemetry::store::MemoryStore::new()), kind: "memory" };
    let err = ingest::start(IntakeSink::new(h.engine.clone()), memory, &embedded, h.stop.clone())
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("--no-consumer needs Kafka"), "{err}");
}
