//! `sentinel bench api`: the REST API and the Slack endpoint measured over real
//! HTTP on loopback, with keys checked, audit entries written and decisions
//! recorded exactly as in production.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use engine::{Engine, Graph, NodeContext, RunId, RunStatus, SystemClock, Transition};
use serde::Serialize;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::{bench_worker, connect, percentile_ms as percentile};
use api::access::{Access, Role};
use api::security::{RateLimit, Security};
use api::server::{router, AppState};
use api::slack::{sign, Approvers, SlackState, APPROVE_ACTION};

/// `bench.gate`: waits for approve/reject, then completes.
pub fn gate_graph() -> Graph<Value> {
    Graph::builder("bench.gate", 1)
        .node("gate", |s: Value, ctx: NodeContext| async move {
            match ctx.take_signal(&["approve", "reject"]) {
                Some(_) => Ok((s, Transition::Complete)),
                None => Ok((s, Transition::wait_for(["approve", "reject"], None))),
            }
        })
        .start("gate")
        .build()
        .expect("bench.gate is a valid graph")
}

#[derive(Clone, Debug)]
pub struct ApiBench {
    pub url: String,
    pub backend: String,
    pub requests: u32,
    pub concurrency: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct CallFigures {
    pub call: &'static str,
    pub requests: u32,
    pub concurrency: usize,
    pub per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ApiFigures {
    pub backend: String,
    pub calls: Vec<CallFigures>,
}

const SECRET: &str = "bench-signing-secret";

pub async fn run_api_bench(b: &ApiBench) -> anyhow::Result<ApiFigures> {
    let store = connect(&b.url).await?;
    store.purge_graph("bench.gate").await?;
    let mut registry = engine::Registry::new();
    registry.register(gate_graph());
    let engine = Engine::new(store.clone(), registry, Arc::new(SystemClock));
    let access = Access::new(&store, Arc::new(SystemClock)).await.context("API migrations")?;
    // Keys for this run only: revoked when it ends, so a benchmark leaves no usable key behind.
    let viewer_key = access.create_key("bench-viewer", Role::Viewer, "bench").await?;
    let operator_key = access.create_key("bench-operator", Role::Operator, "bench").await?;
    let (viewer, operator) = (viewer_key.secret.clone(), operator_key.secret.clone());
    // The rate limit is not what is measured.
    let limit = RateLimit { per_second: u32::MAX.try_into()?, burst: u32::MAX.try_into()? };
    let slack = SlackState {
        engine: engine.clone(),
        access: access.clone(),
        signing_secret: SECRET.into(),
        approvers: Approvers { anyone: vec!["U_BENCH".into()], ..Approvers::default() },
    };
    let app = router(AppState {
        engine: engine.clone(),
        security: Security::new(access.clone(), limit),
        slack: Some(slack),
        telemetry: None,
        memory: std::sync::Arc::new(nodes::memory::NoMemory::default()),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let shutdown = CancellationToken::new();
    let server = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await }
    });

    // Runs parked at their gate, one per decision to make.
    let mut runs = Vec::new();
    for _ in 0..b.requests * 2 {
        runs.push(engine.start("bench.gate", &json!({})).await?);
    }
    let worker = tokio::spawn({
        let (engine, shutdown) = (engine.clone(), shutdown.clone());
        async move { engine.work(bench_worker("bench-api", 8), shutdown).await }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let waiting = engine
            .list(&engine::RunFilter {
                status: Some(RunStatus::Waiting),
                graph: Some("bench.gate".into()),
                limit: Some(runs.len() as i64 + 1),
            })
            .await?
            .len();
        if waiting == runs.len() {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "runs did not reach their gate ({waiting}/{})", runs.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (for_api, for_slack) = runs.split_at(b.requests as usize);

    let http = reqwest::Client::builder().pool_max_idle_per_host(b.concurrency).build()?;
    let mut calls = Vec::new();
    let list = |_: usize| http.get(format!("{base}/v1/runs?limit=20")).bearer_auth(&viewer);
    calls.push(measure("GET /v1/runs", b, list, 200).await?);
    let approve = |i: usize| {
        http.post(format!("{base}/v1/runs/{}/approve", for_api[i]))
            .bearer_auth(&operator)
            .json(&json!({ "reason": "bench" }))
    };
    calls.push(measure("POST /v1/runs/{id}/approve", b, approve, 202).await?);
    let click = |i: usize| {
        let run: RunId = for_slack[i];
        let payload = json!({
            "type": "block_actions",
            "user": { "id": "U_BENCH" },
            "actions": [{ "action_id": APPROVE_ACTION, "value": run.to_string(), "action_ts": format!("{i}.0") }],
        });
        let body = serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap_or_default();
        let ts = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        http.post(format!("{base}/slack/interactions"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-slack-request-timestamp", ts.to_string())
            .header("x-slack-signature", sign(SECRET, ts, body.as_bytes()))
            .body(body)
    };
    calls.push(measure("POST /slack/interactions", b, click, 200).await?);

    shutdown.cancel();
    worker.await?;
    server.await??;
    store.purge_graph("bench.gate").await?;
    for key in [&viewer_key.key.id, &operator_key.key.id] {
        access.revoke_key(key).await?;
    }
    Ok(ApiFigures { backend: b.backend.clone(), calls })
}

/// Sends `b.requests` requests, `b.concurrency` at a time; every answer must
/// have the expected status.
async fn measure<F>(call: &'static str, b: &ApiBench, request: F, expect: u16) -> anyhow::Result<CallFigures>
where
    F: Fn(usize) -> reqwest::RequestBuilder,
{
    use futures::stream::{self, StreamExt};
    let started = Instant::now();
    let results: Vec<anyhow::Result<Duration>> = stream::iter(0..b.requests as usize)
        .map(|i| {
            let req = request(i);
            async move {
                let t = Instant::now();
                let resp = req.send().await?;
                let status = resp.status().as_u16();
                let body = resp.bytes().await?;
                anyhow::ensure!(status == expect, "{call}: {status} {}", String::from_utf8_lossy(&body));
                Ok(t.elapsed())
            }
        })
        .buffer_unordered(b.concurrency)
        .collect()
        .await;
    let seconds = started.elapsed().as_secs_f64();
    let mut latencies = results.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    latencies.sort();
    Ok(CallFigures {
        call,
        requests: b.requests,
        concurrency: b.concurrency,
        per_sec: f64::from(b.requests) / seconds,
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
        max_ms: latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
    })
}
