//! `/metrics`, `/health/detailed` and the outbox's dead letters. A test binary
//! of its own: the Prometheus recorder is process-wide, so here it sees only
//! what these tests do and its figures can be asserted exactly.

use std::sync::Arc;
use std::time::Duration;

use api::access::{Access, Role};
use api::security::{RateLimit, Security};
use api::server::{router, AppState};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use engine::testing::{fast_worker, wait_until, Backend, BackgroundWorker, TestDb};
use engine::{Graph, NodeContext, Registry, RunStatus, SystemClock, Transition};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

/// Waits for approval, then notifies through the outbox and completes.
fn gate_graph() -> Graph<Value> {
    Graph::builder("gate", 1)
        .node("gate", |s: Value, ctx: NodeContext| async move {
            match ctx.take_signal(&["approve"]) {
                Some(_) => {
                    ctx.send("test.done", json!({ "ok": true }));
                    Ok((s, Transition::Complete))
                }
                None => Ok((s, Transition::wait_for(["approve"], None))),
            }
        })
        .start("gate")
        .build()
        .unwrap()
}

async fn get(app: &axum::Router, uri: &str, key: Option<&str>) -> (StatusCode, String) {
    let mut req = Request::get(uri);
    if let Some(key) = key {
        req = req.header("authorization", format!("Bearer {key}"));
    }
    let resp = app.clone().oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
    let status = resp.status();
    (status, String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap())
}

async fn post(app: &axum::Router, uri: &str, key: &str, body: &str) -> StatusCode {
    let req = Request::post(uri)
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap();
    app.clone().oneshot(req).await.unwrap().status()
}

/// The value of one sample line, e.g. `sentinel_runs{status="completed"}`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_health_and_dead_letters() {
    api::observe::prometheus();
    let db = TestDb::new(Backend::Postgres).await;
    let mut registry = Registry::new();
    registry.register(gate_graph());
    let engine = db.engine(registry).await;
    let access = Access::new(engine.store(), Arc::new(SystemClock)).await.unwrap();
    let operator = access.create_key("ops", Role::Operator, "test").await.unwrap().secret;
    let security = Security::new(access, RateLimit::default());
    let app = router(AppState {
        engine: engine.clone(),
        security,
        slack: None,
        telemetry: None,
        memory: std::sync::Arc::new(nodes::memory::NoMemory::default()),
    });

    let (status, body) = get(&app, "/health/detailed", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let health: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["components"]["database"]["status"], "ok");
    assert_eq!(health["components"]["database"]["detail"], "postgres");
    assert_eq!(
        health["components"]["outbox"]["detail"],
        json!({ "pending": 0, "dead": 0, "undeliverable": 0, "lag_seconds": 0.0 })
    );
    assert_eq!(health["components"]["broker"]["status"], "not_configured");

    // Two runs: one approved (runs its node twice, sends one message), one
    // left waiting. A generic graph has no gate, so the API refuses to decide
    // on it (400), and that request is counted too.
    let worker = BackgroundWorker::start(&engine, fast_worker("metrics"));
    let done = engine.start("gate", &json!({})).await.unwrap();
    let waiting = engine.start("gate", &json!({})).await.unwrap();
    for run in [done, waiting] {
        wait_until(&engine, run, Duration::from_secs(10), |r| r.status == RunStatus::Waiting).await;
    }
    assert_eq!(post(&app, &format!("/v1/runs/{done}/approve"), &operator, "{}").await, StatusCode::BAD_REQUEST);
    engine.signal(done, "approval-1", "approve", json!({ "by": "ops" })).await.unwrap();
    wait_until(&engine, done, Duration::from_secs(10), |r| r.status.is_finished()).await;
    worker.stop().await;

    let (status, text) = get(&app, "/metrics", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(sample(&text, r#"sentinel_runs{status="completed"}"#), Some(1.0), "{text}");
    assert_eq!(sample(&text, r#"sentinel_runs{status="waiting"}"#), Some(1.0), "{text}");
    assert_eq!(sample(&text, r#"sentinel_runs{status="failed"}"#), Some(0.0), "{text}");
    assert_eq!(sample(&text, "sentinel_outbox_pending"), Some(1.0), "{text}");
    // Three node executions: two waits and one completion, each timed.
    assert_eq!(
        sample(&text, r#"sentinel_node_duration_seconds_count{graph="gate",node="gate",outcome="wait"}"#),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, r#"sentinel_node_duration_seconds_count{graph="gate",node="gate",outcome="completed"}"#),
        Some(1.0),
        "{text}"
    );
    assert!(
        text.contains(r#"sentinel_node_duration_seconds_bucket{graph="gate",node="gate",outcome="wait",le="0.005"}"#)
    );
    assert_eq!(
        sample(&text, r#"sentinel_http_requests_total{method="POST",route="/v1/runs/{id}/approve",status="400"}"#),
        Some(1.0),
        "{text}"
    );

    // A message whose deliveries all failed is a dead letter: visible in the
    // API, in the health report and in the metrics, and can be requeued.
    let far = engine::Timestamp(i64::MAX / 2);
    let message = engine.store().outbox_claim(far, far).await.unwrap().expect("a message is due");
    assert!(engine.store().outbox_failed(message.id, &message.claim_token, "slack answered 500", None).await.unwrap());
    let (status, body) = get(&app, "/v1/outbox?status=dead", Some(&operator)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let dead: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(dead["messages"].as_array().unwrap().len(), 1);
    assert_eq!(dead["messages"][0]["last_error"], "slack answered 500");
    assert_eq!(dead["messages"][0]["topic"], "test.done");
    let (_, body) = get(&app, "/health/detailed", None).await;
    let health: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (health["status"].as_str(), health["components"]["outbox"]["detail"]["dead"].as_i64()),
        (Some("degraded"), Some(1))
    );
    let (_, text) = get(&app, "/metrics", None).await;
    assert_eq!(sample(&text, "sentinel_outbox_dead"), Some(1.0), "{text}");
    let uri = format!("/v1/outbox/{}/requeue", message.id);
    assert_eq!(post(&app, &uri, &operator, "").await, StatusCode::ACCEPTED);
    assert_eq!(post(&app, &uri, &operator, "").await, StatusCode::NOT_FOUND, "only dead letters are requeued");
    assert_eq!(engine.store().outbox_stats().await.unwrap().dead, 0);

    // The database gone: the detailed health says so with a 503.
    engine.store().close().await;
    let (status, body) = get(&app, "/health/detailed", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let health: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (health["status"].as_str(), health["components"]["database"]["status"].as_str()),
        (Some("down"), Some("down"))
    );
    // No driver text (hosts, SQL, pool internals) in an unauthenticated answer.
    assert_eq!(health["components"]["database"]["detail"], "unreachable; see the server's log", "{body}");
    assert!(!body.contains("pool"), "{body}");
    let (status, body) = get(&app, "/health", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("the database is unreachable") && !body.contains("pool"), "{body}");
}
