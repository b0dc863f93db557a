//! The metric store goes away during `verify`, cut by a TCP proxy in front
//! of the real clickhouse-server: verification waits it out with durable
//! timers and resolves when it comes back inside the window; when it stays
//! away past the window, the incident is escalated, never failed.

use std::sync::Arc;
use std::time::Duration;

use engine::testing::{fast_worker, wait_until, Backend, BackgroundWorker, TestDb};
use engine::{Clock, RunStatus, SystemClock};
use executors::{Action, Allowlist};
use nodes::policy::PolicyConfig;
use nodes::workflow::{self, Incident, WorkflowConfig};
use telemetry::event::{Event, MetricSample};
use telemetry::store::{ClickHouseConfig, ClickHouseStore, EventStore, StorePorts};
use telemetry::testing::Proxy;

use crate::api::latency_spike;
use crate::ingest::{clickhouse, clickhouse_url};
use crate::support::incidents_reading;

fn sample(at: i64, value: f64) -> Event {
    Event::Metric(MetricSample {
        ts: at,
        service: "checkout".into(),
        metric: "http_p99_ms".into(),
        value,
        labels: Default::default(),
    })
}

/// A run whose restart is auto-approved, with its metrics read from
/// ClickHouse through `proxy`; the restart cuts the proxy as it acts.
async fn setup(
    name: &str,
    verify_window: Duration,
) -> (TestDb, engine::Engine, Proxy, ClickHouseStore, executors::mock::MockExecutor) {
    let url = clickhouse_url();
    let proxy = Proxy::start(url.trim_start_matches("http://")).await;
    let (config, storage) = clickhouse(&format!("http://{}", proxy.addr), name).await;
    // The test writes straight to the server, around the proxy.
    let direct =
        ClickHouseStore::new(&ClickHouseConfig { database: config.database.clone(), ..ClickHouseConfig::new(&url) });
    let now = SystemClock.now();
    let baseline: Vec<Event> = (0..60i64)
        .map(|i| sample(now.0 - (3600 - i * 60) * 1000, 100.0 + [-8.0, -3.0, 0.0, 4.0, 9.0, -6.0][(i % 6) as usize]))
        .collect();
    direct.insert(&baseline).await.unwrap();
    let db = TestDb::new(Backend::Postgres).await;
    let config = WorkflowConfig {
        policy: PolicyConfig {
            allowlist: Allowlist::parse(&["kubernetes:prod/*"]).unwrap(),
            ..PolicyConfig::default()
        },
        verify_window,
        verify_interval: Duration::from_millis(500),
        ..WorkflowConfig::default()
    };
    let metrics: Arc<dyn nodes::ports::MetricStore> = Arc::new(StorePorts(storage.store.clone()));
    let world = incidents_reading(&db.store().await, config, false, Some(metrics)).await;
    let cut = proxy.clone();
    world.mock.on_execute("restart_deployment", Arc::new(move |_: &Action| cut.cut()));
    (db, world.engine, proxy, direct, world.mock)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metric_store_outage_inside_the_window_is_waited_out() {
    let (_db, engine, proxy, direct, mock) = setup("verify_outage", Duration::from_secs(90)).await;
    let worker = BackgroundWorker::start(&engine, fast_worker("verify"));
    let run = engine.start(workflow::GRAPH, &Incident::new(latency_spike())).await.unwrap();
    crate::support::eventually("the restart", Duration::from_secs(30), || {
        let acted = !mock.mutations().is_empty();
        async move { acted }
    })
    .await;
    // The service recovered; the store holds it, but Sentinel cannot read it for 20 s.
    let now = SystemClock.now().0;
    direct.insert(&(1..=5).map(|i| sample(now + i * 10, 101.0)).collect::<Vec<_>>()).await.unwrap();
    let unreachable = wait_until(&engine, run, Duration::from_secs(20), |r| {
        r.node == "verify"
            && serde_json::from_value::<Incident>(r.state.clone()).is_ok_and(|s| s.verify_read_failures >= 2)
    })
    .await;
    assert!(!unreachable.status.is_finished(), "{:?}", unreachable.error);
    tokio::time::sleep(Duration::from_secs(20)).await; // the outage itself, not a wait for a result
    proxy.restore();
    let done = wait_until(&engine, run, Duration::from_secs(60), |r| r.status.is_finished()).await;
    worker.stop().await;
    assert_eq!(done.status, RunStatus::Completed, "{:?}", done.error);
    let s: Incident = serde_json::from_value(done.state).unwrap();
    assert_eq!(s.outcome.as_deref(), Some("resolved"), "{:#?}", s.timeline);
    let notes: Vec<&str> = s.timeline.iter().filter(|t| t.node == "verify").map(|t| t.what.as_str()).collect();
    assert!(notes.iter().any(|n| n.starts_with("metric store unreachable")), "{notes:?}");
    assert!(notes.iter().any(|n| n.starts_with("metric store back after")), "{notes:?}");
    let history = engine.detail(run).await.unwrap().history;
    let retried =
        history.iter().filter(|c| c.node == "verify" && matches!(c.outcome, engine::StepOutcome::Retry { .. }));
    assert_eq!(retried.count(), 0, "the outage is waited out with timers, not retried as a failing step");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metric_store_away_past_the_window_escalates() {
    let (_db, engine, proxy, _direct, mock) = setup("verify_gone", Duration::from_secs(4)).await;
    let worker = BackgroundWorker::start(&engine, fast_worker("verify"));
    let run = engine.start(workflow::GRAPH, &Incident::new(latency_spike())).await.unwrap();
    let done = wait_until(&engine, run, Duration::from_secs(60), |r| r.status.is_finished()).await;
    worker.stop().await;
    proxy.restore();
    assert_eq!(mock.mutations().len(), 1, "the restart was done");
    assert_eq!(done.status, RunStatus::Completed, "escalated, not failed: {:?}", done.error);
    let s: Incident = serde_json::from_value(done.state).unwrap();
    let outcome = s.outcome.clone().unwrap();
    assert!(outcome.starts_with("escalated: could not verify http_p99_ms (metric store unreachable"), "{outcome}");
    let path: Vec<String> = engine.detail(run).await.unwrap().history.iter().map(|c| c.node.clone()).collect();
    assert_eq!(path.last().map(String::as_str), Some("escalate"), "{path:?}");
    assert!(
        !path.contains(&"rollback".to_owned()),
        "an unverified action is handed to a human, not guessed at: {path:?}"
    );
    let escalation = engine
        .store()
        .outbox_due(engine::Timestamp(i64::MAX), 20)
        .await
        .unwrap()
        .into_iter()
        .find(|m| m.topic == "escalation")
        .expect("an escalation in the outbox");
    let actions = escalation.payload["actions"].as_array().unwrap();
    assert_eq!(actions.len(), 1, "{escalation:?}");
    assert_eq!(actions[0]["action"]["action"], "restart_deployment");
    assert_eq!(actions[0]["action"]["target"], "kubernetes:prod/checkout");
    assert!(actions[0]["pre_state"].is_object(), "the page carries the pre-state: {escalation:?}");
}
