//! Traces and logs of a real `sentinel serve` process: spans arrive at a local
//! OTLP/HTTP collector (JSON encoding, the wire format of the spec) as one
//! trace per run step and one per request, and JSON log lines inside a
//! request carry its request id.

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use engine::testing::{wait_until, TestDb};
use serde_json::Value;

use crate::support::eventually;

type Received = Arc<Mutex<Vec<Value>>>;

async fn collect(State(got): State<Received>, headers: HeaderMap, body: Bytes) -> &'static str {
    assert_eq!(headers["content-type"], "application/json", "OTLP/HTTP JSON");
    got.lock().unwrap().push(serde_json::from_slice(&body).expect("an OTLP JSON export request"));
    "{}"
}

/// Every span received: (trace id, parent span id, name, attributes as a flat object).
fn spans(exports: &[Value]) -> Vec<(String, String, String, serde_json::Map<String, Value>)> {
    let mut out = Vec::new();
    for export in exports {
        for rs in export["resourceSpans"].as_array().into_iter().flatten() {
            let service = rs["resource"]["attributes"]
                .as_array()
                .and_then(|a| a.iter().find(|kv| kv["key"] == "service.name"))
                .map(|kv| kv["value"]["stringValue"].clone());
            assert_eq!(service, Some(Value::from("sentinel-test")), "{rs}");
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                for span in ss["spans"].as_array().into_iter().flatten() {
                    let mut attrs = serde_json::Map::new();
                    for kv in span["attributes"].as_array().into_iter().flatten() {
                        let v = &kv["value"];
                        let value = v.get("stringValue").or_else(|| v.get("intValue")).cloned().unwrap_or(Value::Null);
                        attrs.insert(kv["key"].as_str().unwrap().to_owned(), value);
                    }
                    out.push((
                        span["traceId"].as_str().unwrap_or_default().to_owned(),
                        span["parentSpanId"].as_str().unwrap_or_default().to_owned(),
                        span["name"].as_str().unwrap_or_default().to_owned(),
                        attrs,
                    ));
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_per_step_and_request_ids_on_log_lines() {
    let received: Received = Arc::default();
    let collector = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = format!("http://{}", collector.local_addr().unwrap());
    let app = axum::Router::new().route("/v1/traces", post(collect)).with_state(received.clone());
    tokio::spawn(async move { axum::serve(collector, app).await });

    let db = TestDb::new(engine::testing::Backend::Postgres).await;
    // Only to start the run: `serve` runs it.
    let store = engine::Store::connect(&engine::StoreConfig::new(&db.url)).await.unwrap();
    let engine = crate::support::incidents(&store, nodes::workflow::WorkflowConfig::default(), true).await.engine;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(env!("CARGO_BIN_EXE_sentinel"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("DATABASE_URL", &db.url)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp)
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
        .env("OTEL_SERVICE_NAME", "sentinel-test")
        .env("SENTINEL_LOG_FORMAT", "json")
        .env("SENTINEL_LOG", "info,tower_http=debug")
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sentinel serve");

    // An anomaly no runbook answers: detect, analyze, plan, escalate; four steps.
    let mut detection = crate::api::latency_spike();
    detection.anomaly_type = "unheard_of".into();
    let incident = nodes::workflow::Incident::new(detection);
    let run = engine.start(nodes::workflow::GRAPH, &incident).await.unwrap();
    wait_until(&engine, run, Duration::from_secs(20), |r| r.status.is_finished()).await;
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/v1/runs");
    eventually("the server answers", Duration::from_secs(10), || {
        let req = http.get(&url).header("x-request-id", "req-trace-42");
        async move { req.send().await.is_ok_and(|r| r.status() == 401) }
    })
    .await;
    // SIGTERM: a graceful stop flushes the batched spans.
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "serve exited with {:?}", output.status);

    let spans = spans(&received.lock().unwrap());
    let run_id = run.to_string();
    let mut steps: Vec<_> =
        spans.iter().filter(|s| s.2 == "step" && s.3.get("run") == Some(&Value::from(run_id.clone()))).collect();
    steps.sort_by_key(|s| s.3["step"].to_string());
    let numbers: Vec<String> = steps.iter().map(|s| s.3["step"].to_string().trim_matches('"').to_owned()).collect();
    assert_eq!(numbers, ["0", "1", "2", "3"], "one span per step: {steps:?}");
    let nodes: Vec<&Value> = steps.iter().map(|s| &s.3["node"]).collect();
    assert_eq!(nodes, ["detect", "analyze", "plan", "escalate"]);
    for s in &steps {
        assert!(s.1.is_empty(), "a step span is a root span: {s:?}");
        assert_eq!(s.3["graph"], "incident");
    }
    let traces: std::collections::BTreeSet<_> = steps.iter().map(|s| s.0.clone()).collect();
    assert_eq!(traces.len(), 4, "each step is its own trace");
    let request =
        spans.iter().find(|s| s.2 == "request" && s.3.get("request_id") == Some(&Value::from("req-trace-42")));
    assert!(request.is_some(), "the request's span carries its id: {spans:?}");

    // JSON logs: every line logged inside a request names the request id.
    let stderr = String::from_utf8(output.stderr).unwrap();
    let lines: Vec<Value> = stderr.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert!(!lines.is_empty(), "JSON log lines: {stderr}");
    let in_request: Vec<&Value> = lines.iter().filter(|l| l["span"]["name"] == "request").collect();
    assert!(!in_request.is_empty(), "{stderr}");
    assert!(in_request.iter().all(|l| l["span"]["request_id"].is_string()), "{stderr}");
    assert!(in_request.iter().any(|l| l["span"]["request_id"] == "req-trace-42"), "{stderr}");
}
