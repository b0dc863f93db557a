//! Observability endpoints: Prometheus `/metrics` and `/health/detailed`.
//!
//! Counters and histograms are recorded where things happen (the engine's
//! worker times every node and checkpoint, the workflow counts decisions,
//! actions and rollbacks, the HTTP layer counts requests) through the
//! `metrics` facade; gauges that describe the database (runs by status,
//! outbox backlog) are read at scrape time so every process reports the same
//! truth.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::Serialize;
use serde_json::json;

use crate::server::AppState;

/// Seconds buckets for every `*_seconds` histogram: 0.5 ms to 30 s.
const BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// The process's Prometheus recorder, installed on first use.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
            .expect("the bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (a host program's); ours then only renders what it saw.
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics shows only scrape-time gauges");
        }
        handle
    })
}

/// Counts and times every request by route template (never by raw path, so
/// ids do not explode the label space).
pub async fn track(req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().to_string();
    let started = Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    metrics::counter!("sentinel_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("sentinel_http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    resp
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics_endpoint(State(state): State<AppState>) -> Response {
    let handle = prometheus();
    let store = state.engine.store();
    match store.count_by_status().await {
        Ok(counts) => {
            for status in engine::RunStatus::ALL {
                let n = counts.iter().find(|(s, _)| *s == status).map_or(0, |(_, n)| *n);
                metrics::gauge!("sentinel_runs", "status" => status.to_string()).set(n as f64);
            }
            metrics::gauge!("sentinel_database_up").set(1.0);
        }
        Err(e) => {
            tracing::warn!(error = %e, "metrics: cannot count runs");
            metrics::gauge!("sentinel_database_up").set(0.0);
        }
    }
    if let Ok(outbox) = store.outbox_stats().await {
        let now = state.engine.clock().now().0;
        metrics::gauge!("sentinel_outbox_pending").set(outbox.pending as f64);
        metrics::gauge!("sentinel_outbox_dead").set(outbox.dead as f64);
        metrics::gauge!("sentinel_outbox_undeliverable").set(outbox.undeliverable as f64);
        let lag = outbox.oldest_pending_at.map_or(0.0, |t| (now - t).max(0) as f64 / 1000.0);
        metrics::gauge!("sentinel_outbox_lag_seconds").set(lag);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], handle.render()).into_response()
}

/// One dependency's health.
#[derive(Serialize)]
struct Component {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    latency_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<serde_json::Value>,
}

impl Component {
    /// A dependency that does not answer. The error's text (hosts, SQL) goes to
    /// the log; this endpoint needs no key, so it says only that it is down.
    fn down(e: &dyn std::fmt::Display) -> Component {
        tracing::warn!(error = %e, "health check: a dependency is down");
        Component { status: "down", latency_ms: None, detail: Some(json!("unreachable; see the server's log")) }
    }

    fn not_configured(what: &str) -> Component {
        Component {
            status: "not_configured",
            latency_ms: None,
            detail: Some(json!(format!("no {what} in this deployment"))),
        }
    }
}

/// Outbox messages older than this make the service degraded.
const OUTBOX_LAG_LIMIT_SECS: f64 = 60.0;

/// `GET /health/detailed`: each dependency with its status. 200 when the
/// database answers (`ok`, or `degraded` when the outbox is behind, holds
/// dead letters, or holds messages no destination could take), 503 when it
/// does not.
pub async fn health_detailed(State(state): State<AppState>) -> Response {
    let store = state.engine.store();
    let started = Instant::now();
    let ping = store.ping().await;
    let db_ms = started.elapsed().as_secs_f64() * 1000.0;
    let database = match &ping {
        Ok(()) => Component {
            status: "ok",
            latency_ms: Some(db_ms),
            detail: Some(json!(format!("{:?}", store.dialect()).to_lowercase())),
        },
        Err(e) => Component::down(&e),
    };
    let outbox = match store.outbox_stats().await {
        Ok(stats) => {
            let now = state.engine.clock().now().0;
            let lag = stats.oldest_pending_at.map_or(0.0, |t| (now - t).max(0) as f64 / 1000.0);
            let stuck = stats.dead > 0 || stats.undeliverable > 0 || lag > OUTBOX_LAG_LIMIT_SECS;
            let status = if stuck { "degraded" } else { "ok" };
            let detail = json!({
                "pending": stats.pending, "dead": stats.dead, "undeliverable": stats.undeliverable, "lag_seconds": lag,
            });
            Component { status, latency_ms: None, detail: Some(detail) }
        }
        Err(e) => Component::down(&e),
    };
    let (broker, clickhouse) = match &state.telemetry {
        None => (Component::not_configured("telemetry pipeline"), Component::not_configured("event store")),
        Some(t) => {
            let started = Instant::now();
            let broker = match t.publisher.health().await {
                Ok(detail) if t.publisher.kind() == "kafka" => Component {
                    status: "ok",
                    latency_ms: Some(started.elapsed().as_secs_f64() * 1000.0),
                    detail: Some(json!(detail)),
                },
                Ok(detail) => Component { status: "embedded", latency_ms: None, detail: Some(json!(detail)) },
                Err(e) => Component { status: "down", latency_ms: None, detail: Some(json!(e)) },
            };
            let started = Instant::now();
            let clickhouse = match (t.storage, t.store.ping().await) {
                ("memory", _) => {
                    Component { status: "embedded", latency_ms: None, detail: Some(json!("in-memory event store")) }
                }
                (_, Ok(())) => {
                    Component { status: "ok", latency_ms: Some(started.elapsed().as_secs_f64() * 1000.0), detail: None }
                }
                (_, Err(e)) => Component::down(&e),
            };
            (broker, clickhouse)
        }
    };
    let vector_index = match state.memory.state() {
        nodes::memory::MemoryState::Off { reason } => Component {
            status: "off",
            latency_ms: None,
            detail: Some(json!(format!("semantic memory is off: {reason}"))),
        },
        nodes::memory::MemoryState::On { index, .. } => {
            let started = Instant::now();
            // No path and no address here: this endpoint needs no key.
            let kind = if index.starts_with("embedded") { "embedded" } else { "qdrant server" };
            match state.memory.size().await {
                Ok(incidents) => Component {
                    status: "ok",
                    latency_ms: Some(started.elapsed().as_secs_f64() * 1000.0),
                    detail: Some(json!({ "index": kind, "incidents": incidents })),
                },
                Err(e) => Component::down(&e),
            }
        }
    };
    let overall = if ping.is_err() {
        "down"
    } else if outbox.status != "ok"
        || broker.status == "down"
        || clickhouse.status == "down"
        || vector_index.status == "down"
    {
        "degraded"
    } else {
        "ok"
    };
    let body = json!({
        "status": overall,
        "version": env!("CARGO_PKG_VERSION"),
        "components": {
            "database": database,
            "outbox": outbox,
            "broker": broker,
            "clickhouse": clickhouse,
            "vector_index": vector_index,
        }
    });
    let status = if ping.is_err() { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    (status, axum::Json(body)).into_response()
}
