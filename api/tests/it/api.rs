//! The REST API at its boundary: status codes, JSON errors, and what a
//! decision does to the run.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use engine::testing::{fast_worker, wait_until, Backend, BackgroundWorker, TestDb};
use engine::{Graph, NodeContext, Registry, RunStatus, Transition};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

/// `gate` waits for approve/reject, then completes with the decision as state.
fn gate_graph() -> Graph<Value> {
    Graph::builder("gate", 1)
        .node("gate", |s: Value, ctx: NodeContext| async move {
            match ctx.take_signal(&["approve", "reject"]) {
                Some(sig) => Ok((json!({ "decision": sig.kind, "by": sig.payload["actor"] }), Transition::Complete)),
                None => Ok((s, Transition::wait_for(["approve", "reject"], None))),
            }
        })
        .start("gate")
        .build()
        .unwrap()
}

/// Calls the API with an API key (None: without one).
pub async fn call_as(
    app: &axum::Router,
    key: Option<&str>,
    method: &str,
    uri: &str,
    body: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(key) = key {
        req = req.header("authorization", format!("Bearer {key}"));
    }
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req.body(body.map_or_else(Body::empty, |b| Body::from(b.to_owned()))).unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let value =
        serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_errors_and_inspection() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut registry = Registry::new();
    registry.register(gate_graph());
    let engine = db.engine(registry).await;
    let (app, _, keys) = crate::support::app(&engine).await;
    let call = |app: &axum::Router, method: &str, uri: &str, body: Option<&str>| {
        let (app, key, method, uri, body) =
            (app.clone(), keys.operator.clone(), method.to_owned(), uri.to_owned(), body.map(str::to_owned));
        async move { call_as(&app, Some(&key), &method, &uri, body.as_deref()).await }
    };
    let run = engine.start("gate", &json!({})).await.unwrap();

    // No worker yet: the run has not reached its gate, so a decision is a conflict that says why.
    let body = r#"{"actor":"alice","reason":"looks safe"}"#;
    let (status, v) = call(&app, "POST", &format!("/v1/runs/{run}/approve"), Some(body)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["error"]["message"], format!("run {run} is not waiting for a decision (it is runnable at `gate`)"));
    let worker = BackgroundWorker::start(&engine, fast_worker("api-test"));
    wait_until(&engine, run, Duration::from_secs(10), |r| r.status == RunStatus::Waiting).await;

    // Bad input: each a 4xx with a JSON error, and the run untouched.
    for (method, uri, body, want) in [
        ("POST", format!("/v1/runs/{run}/approve"), Some("{not json"), StatusCode::BAD_REQUEST),
        ("POST", format!("/v1/runs/{run}/approve"), Some(r#"{"reason":5}"#), StatusCode::UNPROCESSABLE_ENTITY),
        ("POST", format!("/v1/runs/{run}/approve"), Some(r#"{"actor":"  "}"#), StatusCode::BAD_REQUEST),
        ("POST", "/v1/runs/not-a-uuid/approve".to_owned(), Some(body), StatusCode::BAD_REQUEST),
        ("POST", "/v1/runs/01a2054b-87bb-7445-bf0f-830483e586af/approve".to_owned(), Some(body), StatusCode::NOT_FOUND),
        ("GET", "/v1/runs/01a2054b-87bb-7445-bf0f-830483e586af".to_owned(), None, StatusCode::NOT_FOUND),
        ("GET", "/v1/runs?status=sleeping".to_owned(), None, StatusCode::BAD_REQUEST),
        ("GET", "/v1/runs?limit=0".to_owned(), None, StatusCode::BAD_REQUEST),
        ("POST", format!("/v1/runs/{run}/retry"), None, StatusCode::CONFLICT),
        ("GET", "/v1/graphs/nope/mermaid".to_owned(), None, StatusCode::NOT_FOUND),
        ("GET", "/no/such/route".to_owned(), None, StatusCode::NOT_FOUND),
    ] {
        let (status, v) = call(&app, method, &uri, body).await;
        assert_eq!(status, want, "{method} {uri}: {v}");
        if status != StatusCode::UNPROCESSABLE_ENTITY {
            assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{method} {uri}: {v}");
        } else {
            assert!(v["error"]["message"].as_str().unwrap().contains("reason: invalid type"), "{v}");
        }
    }
    assert_eq!(engine.run(run).await.unwrap().status, RunStatus::Waiting);

    // The decision itself, then its retry: one decision.
    let (status, v) = call(&app, "POST", &format!("/v1/runs/{run}/approve"), Some(body)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["delivery"], "accepted");
    let done = wait_until(&engine, run, Duration::from_secs(10), |r| r.status.is_finished()).await;
    worker.stop().await;
    assert_eq!(done.state, json!({ "decision": "approve", "by": "alice" }));
    let (status, v) = call(&app, "POST", &format!("/v1/runs/{run}/approve"), Some(body)).await;
    assert_eq!(status, StatusCode::CONFLICT, "a finished run takes no decision: {v}");

    // Inspection.
    let (status, v) = call(&app, "GET", &format!("/v1/runs/{run}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["run"]["status"], "completed");
    assert_eq!(v["history"].as_array().unwrap().len(), 2);
    assert_eq!(v["signals"][0]["kind"], "approve");
    assert_eq!(v["signals"][0]["payload"]["actor"], "alice");
    let (status, v) = call(&app, "GET", "/v1/runs?status=completed&graph=gate", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["runs"].as_array().unwrap().len(), 1);
    let (status, v) = call(&app, "GET", "/v1/graphs/gate/mermaid", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(v.as_str().unwrap().starts_with("flowchart TD"));
    let (status, v) = call(&app, "GET", "/health", None).await;
    assert_eq!((status, v), (StatusCode::OK, json!({ "status": "ok" })));

    // Oversized bodies are refused before they are read, in our error format.
    let huge = format!(r#"{{"actor":"alice","reason":"{}"}}"#, "x".repeat(sentinel::server::MAX_BODY_BYTES));
    let (status, v) = call(&app, "POST", &format!("/v1/runs/{run}/approve"), Some(&huge)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert_eq!(v["error"]["code"], "bad_body");

    // Every response carries a request id: the client's, or a fresh one.
    let req = Request::builder().uri("/health").header("x-request-id", "req-123").body(Body::empty()).unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.headers()["x-request-id"], "req-123");
    let resp = app.clone().oneshot(Request::builder().uri("/health").body(Body::empty()).unwrap()).await.unwrap();
    let generated = resp.headers()["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(generated).is_ok(), "{generated}");
}
