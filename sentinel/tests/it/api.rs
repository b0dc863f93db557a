//! The REST API at its boundary: status codes, JSON errors, and what a
//! decision does to the run.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use engine::testing::{fast_worker, wait_until, Backend, BackgroundWorker, TestDb};
use engine::{Clock, RunStatus, SystemClock};
use http_body_util::BodyExt;
use nodes::incident::{Detection, Source};
use nodes::workflow::{self, Incident, WorkflowConfig};
use serde_json::{json, Value};
use tower::ServiceExt;

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

/// A latency spike on checkout: nothing is auto-approved by default, so it
/// waits at its first gate.
pub fn latency_spike() -> Detection {
    Detection {
        service: "checkout".into(),
        anomaly_type: "latency_spike".into(),
        metric: "http_p99_ms".into(),
        observed: 180.0,
        baseline_mean: 100.0,
        baseline_stddev: 6.0,
        started_at: SystemClock.now(),
        source: Source::Detector { detector: "zscore".into(), score: 1.0, reason: "test".into() },
        labels: [("namespace".to_owned(), "prod".to_owned())].into_iter().collect(),
        annotations: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_errors_and_inspection() {
    let db = TestDb::new(Backend::Sqlite).await;
    let engine = crate::support::incidents(&db.store().await, WorkflowConfig::default(), true).await.engine;
    let (app, _, keys) = crate::support::app(&engine).await;
    let call = |app: &axum::Router, method: &str, uri: &str, body: Option<&str>| {
        let (app, key, method, uri, body) =
            (app.clone(), keys.operator.clone(), method.to_owned(), uri.to_owned(), body.map(str::to_owned));
        async move { call_as(&app, Some(&key), &method, &uri, body.as_deref()).await }
    };
    let run = engine.start(workflow::GRAPH, &Incident::new(latency_spike())).await.unwrap();

    // No worker yet: the run has not reached its gate, so a decision is a conflict that says why.
    let early = r#"{"gate":"1-0123456789abcdef","reason":"looks safe"}"#;
    let (status, v) = call(&app, "POST", &format!("/v1/runs/{run}/approve"), Some(early)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    assert_eq!(
        v["error"]["message"],
        format!("run {run} is not waiting for a decision on gate 1-0123456789abcdef (it is runnable at `detect`)")
    );
    let worker = BackgroundWorker::start(&engine, fast_worker("api-test"));
    let waiting = wait_until(&engine, run, Duration::from_secs(10), |r| r.status == RunStatus::Waiting).await;
    let gate = serde_json::from_value::<Incident>(waiting.state).unwrap().gate.unwrap();
    let body = format!(r#"{{"gate":"{gate}","actor":"alice","reason":"looks safe"}}"#);
    let body = body.as_str();

    // Bad input: each a 4xx with a JSON error, and the run untouched.
    for (method, uri, body, want) in [
        ("POST", format!("/v1/runs/{run}/approve"), Some("{not json"), StatusCode::BAD_REQUEST),
        ("POST", format!("/v1/runs/{run}/approve"), Some(r#"{"reason":5}"#), StatusCode::UNPROCESSABLE_ENTITY),
        ("POST", format!("/v1/runs/{run}/approve"), Some(r#"{"actor":"  "}"#), StatusCode::BAD_REQUEST),
        ("POST", format!("/v1/runs/{run}/approve"), Some(r#"{"reason":"no gate"}"#), StatusCode::BAD_REQUEST),
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
    let (_, v) = call(&app, "POST", &format!("/v1/runs/{run}/approve"), Some(r#"{"reason":"no gate"}"#)).await;
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("this run waits on gate {gate} (restart_deployment on kubernetes:prod/checkout)")),
        "{message}"
    );
    assert_eq!(engine.run(run).await.unwrap().status, RunStatus::Waiting);

    // What a human decides on, shown before they decide.
    let (status, v) = call(&app, "GET", &format!("/v1/runs/{run}"), None).await;
    assert_eq!(status, StatusCode::OK);
    let p = &v["proposal"];
    assert_eq!((p["gate"].as_str(), p["waiting"].as_bool()), (Some(gate.as_str()), Some(true)), "{p}");
    assert_eq!((p["service"].as_str(), p["severity"].as_str()), (Some("checkout"), Some("sev2")), "{p}");
    assert_eq!(
        (p["action"].as_str(), p["target"].as_str()),
        (Some("restart_deployment"), Some("kubernetes:prod/checkout"))
    );
    assert_eq!((p["estimated_downtime_secs"].as_u64(), p["blast_radius"].as_str()), (Some(10), Some("single_service")));
    assert!(p["top_hypothesis"].as_str().is_some() && p["deadline"].as_i64().is_some(), "{p}");

    // The decision itself, then its retry: one decision, made by the key whatever the body says.
    let (status, v) = call(&app, "POST", &format!("/v1/runs/{run}/approve"), Some(body)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["delivery"], "accepted");
    let done = wait_until(&engine, run, Duration::from_secs(10), |r| r.status.is_finished()).await;
    let (status, v) = call(&app, "POST", &format!("/v1/runs/{run}/approve"), Some(body)).await;
    assert_eq!((status, v["delivery"].as_str()), (StatusCode::OK, Some("duplicate")), "the same decision again: {v}");
    worker.stop().await;
    let s: Incident = serde_json::from_value(done.state).unwrap();
    assert_eq!(s.decisions.len(), 1);
    let d = &s.decisions[0];
    assert_eq!((d.approved, d.by.as_str(), d.note.as_deref()), (true, "operator-key", Some("alice")));
    assert_eq!(d.gate.as_deref(), Some(gate.as_str()));
    let reject = body.replace("looks safe", "changed my mind");
    let (status, v) = call(&app, "POST", &format!("/v1/runs/{run}/reject"), Some(&reject)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with(&format!("gate {gate} was already approved by operator-key at ")),
        "{v}"
    );

    // Inspection.
    let (status, v) = call(&app, "GET", &format!("/v1/runs/{run}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["run"]["status"], "completed");
    assert_eq!(v["proposal"]["waiting"], false);
    assert!(v["proposal"]["decided"].as_str().unwrap().starts_with("approved by operator-key at "), "{v}");
    let decision = v["signals"].as_array().unwrap().iter().find(|s| s["kind"] == "approve").unwrap();
    assert_eq!((&decision["payload"]["by"], &decision["payload"]["note"]), (&json!("operator-key"), &json!("alice")));
    let (status, v) = call(&app, "GET", "/v1/runs?status=completed&graph=incident", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["runs"].as_array().unwrap().len(), 1);
    let (status, v) = call(&app, "GET", "/v1/graphs/incident/mermaid", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(v.as_str().unwrap().starts_with("flowchart TD"));
    let (status, v) = call(&app, "GET", "/health", None).await;
    assert_eq!((status, v), (StatusCode::OK, json!({ "status": "ok" })));

    // Oversized bodies are refused before they are read, in our error format.
    let huge = format!(r#"{{"actor":"alice","reason":"{}"}}"#, "x".repeat(api::server::MAX_BODY_BYTES));
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
