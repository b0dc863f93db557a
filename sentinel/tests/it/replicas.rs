//! Two replicas (engines with their own connection pools and workers) on one
//! PostgreSQL: one incident per fingerprint, the policy's limits held across
//! both, one action at a time per target.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api::ingest::IntakeSink;
use engine::testing::{Backend, BackgroundWorker, TestDb};
use engine::{Clock, Delivery, RunFilter, RunStatus, SystemClock, WorkerConfig};
use executors::{Action, Allowlist};
use nodes::incident::{Detection, Source};
use nodes::intake::Intake;
use nodes::policy::PolicyConfig;
use nodes::ports::MemoryMetrics;
use nodes::workflow::{self, Incident, WorkflowConfig};

use crate::support::{eventually, incidents, Incidents};

fn detection(service: &str, metric: &str) -> Detection {
    Detection {
        service: service.into(),
        anomaly_type: "error_rate_spike".into(),
        metric: metric.into(),
        observed: 20.0,
        baseline_mean: 1.0,
        baseline_stddev: 0.5,
        started_at: SystemClock.now(),
        source: Source::Detector { detector: "zscore".into(), score: 1.0, reason: "test".into() },
        labels: [("namespace".to_owned(), "prod".to_owned())].into_iter().collect(),
        annotations: Default::default(),
    }
}

fn worker(id: &str) -> WorkerConfig {
    WorkerConfig {
        id: id.to_owned(),
        concurrency: 8,
        lease: Duration::from_secs(5),
        poll_interval: Duration::from_millis(20),
        ..WorkerConfig::default()
    }
}

/// Two replicas of the incident workflow, acting live through the mock
/// backend; every action brings the metric of its service back to normal in
/// both replicas' metric stores, so verification passes.
async fn replicas(db: &TestDb, config: WorkflowConfig) -> (Incidents, Incidents, Arc<Mutex<Vec<(String, Instant)>>>) {
    let a = incidents(&db.store().await, config.clone(), false).await;
    let b = incidents(&db.store().await, config, false).await;
    let executed = Arc::new(Mutex::new(Vec::new()));
    let stores: Vec<MemoryMetrics> = vec![a.metrics.clone(), b.metrics.clone()];
    for mock in [&a.mock, &b.mock] {
        let (stores, executed) = (stores.clone(), executed.clone());
        mock.on_execute(
            "restart_deployment",
            Arc::new(move |action: &Action| {
                let service = action.target.rsplit('/').next().unwrap_or_default().to_owned();
                executed.lock().unwrap().push((action.target.clone(), Instant::now()));
                let t = SystemClock.now();
                for m in &stores {
                    for metric in ["error_rate", "error_ratio"] {
                        for i in 1..=3 {
                            m.push(&service, metric, t.saturating_add(Duration::from_millis(i)), 1.0);
                        }
                    }
                }
            }),
        );
    }
    (a, b, executed)
}

fn auto_approving(policy: PolicyConfig) -> WorkflowConfig {
    WorkflowConfig {
        policy: PolicyConfig { allowlist: Allowlist::parse(&["kubernetes:prod/*"]).unwrap(), ..policy },
        verify_window: Duration::from_secs(20),
        verify_interval: Duration::from_millis(50),
        ..WorkflowConfig::default()
    }
}

async fn incident_runs(engine: &engine::Engine) -> Vec<engine::Run> {
    let filter = RunFilter { graph: Some(workflow::GRAPH.into()), limit: Some(10_000), ..Default::default() };
    engine.list(&filter).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_detections_of_one_fingerprint_on_two_replicas_open_one_incident() {
    let db = TestDb::new(Backend::Postgres).await;
    let (a, b, _) = replicas(&db, WorkflowConfig::default()).await;
    let sinks = [IntakeSink::new(a.engine.clone()), IntakeSink::new(b.engine.clone())];
    let base = detection("checkout", "error_rate");
    let mut tasks = Vec::new();
    for i in 0..200i64 {
        let sink = sinks[i as usize % 2].clone();
        let mut d = base.clone();
        // Each a distinct detection (its own start time) of one condition.
        d.started_at = engine::Timestamp(base.started_at.0 + i);
        tasks.push(tokio::spawn(async move { sink.open(&d).await }));
    }
    let (mut opened, mut attached) = (Vec::new(), 0);
    for t in tasks {
        match t.await.unwrap().unwrap() {
            Intake::Opened(run) => opened.push(run),
            Intake::Attached(_, Delivery::Accepted) => attached += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((opened.len(), attached), (1, 199));
    let runs = incident_runs(&a.engine).await;
    assert_eq!(runs.len(), 1, "one incident in the database");
    let signals = a.engine.detail(opened[0]).await.unwrap().signals;
    assert_eq!(signals.iter().filter(|s| s.kind == "attach").count(), 199, "every other detection is on its record");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_auto_approval_candidates_on_two_replicas_against_ten_a_minute_give_ten() {
    let db = TestDb::new(Backend::Postgres).await;
    let policy = PolicyConfig {
        max_auto_per_minute: 10,
        max_auto_per_hour: 1000,
        service_cooldown: Duration::ZERO,
        ..PolicyConfig::default()
    };
    let (a, b, executed) = replicas(&db, auto_approving(policy)).await;
    let workers = [BackgroundWorker::start(&a.engine, worker("a")), BackgroundWorker::start(&b.engine, worker("b"))];
    let mut runs = Vec::new();
    for i in 0..50 {
        let e = if i % 2 == 0 { &a.engine } else { &b.engine };
        runs.push(
            e.start(workflow::GRAPH, &Incident::new(detection(&format!("svc-{i}"), "error_rate"))).await.unwrap(),
        );
    }
    // Quiescent: every run resolved, or waits for a human at its gate.
    eventually("all 50 incidents settle", Duration::from_secs(60), || {
        let engine = a.engine.clone();
        async move {
            incident_runs(&engine).await.iter().all(|r| {
                r.status == RunStatus::Completed || (r.status == RunStatus::Waiting && r.node == "await_approval")
            })
        }
    })
    .await;
    for w in workers {
        w.stop().await;
    }
    let states: Vec<Incident> =
        incident_runs(&a.engine).await.into_iter().map(|r| serde_json::from_value(r.state).unwrap()).collect();
    let by_policy = states.iter().filter(|s| s.decisions.iter().any(|d| d.by == "policy")).count();
    assert_eq!(by_policy, 10, "exactly the limit was auto-approved");
    assert_eq!(executed.lock().unwrap().len(), 10, "and acted on");
    assert_eq!(states.iter().filter(|s| s.outcome.as_deref() == Some("resolved")).count(), 10);
    let refused = states
        .iter()
        .filter(|s| s.timeline.iter().any(|t| t.what.contains("auto-approvals in the last minute (limit 10)")))
        .count();
    assert_eq!(refused, 40, "every other candidate waits for a human, saying why");
    let reserved = a.engine.store().ledger("auto_approval", None, engine::Timestamp(0)).await.unwrap();
    assert_eq!(reserved.len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_incidents_on_one_target_act_one_after_the_other_with_the_cooldown_between() {
    let db = TestDb::new(Backend::Postgres).await;
    let policy = PolicyConfig { service_cooldown: Duration::ZERO, ..PolicyConfig::default() };
    let config = WorkflowConfig { target_cooldown: Duration::from_millis(1500), ..auto_approving(policy) };
    let (a, b, executed) = replicas(&db, config).await;
    let workers = [BackgroundWorker::start(&a.engine, worker("a")), BackgroundWorker::start(&b.engine, worker("b"))];
    // Two conditions (two fingerprints) whose runbook restarts the same deployment.
    let first = a.engine.start(workflow::GRAPH, &Incident::new(detection("checkout", "error_rate"))).await.unwrap();
    let second = b.engine.start(workflow::GRAPH, &Incident::new(detection("checkout", "error_ratio"))).await.unwrap();
    for run in [first, second] {
        engine::testing::wait_until(&a.engine, run, Duration::from_secs(60), |r| r.status.is_finished()).await;
    }
    for w in workers {
        w.stop().await;
    }
    let executed = executed.lock().unwrap().clone();
    assert_eq!(executed.len(), 2, "{executed:?}");
    assert!(executed.iter().all(|(t, _)| t == "kubernetes:prod/checkout"));
    let states = [state(&a.engine, first).await, state(&a.engine, second).await];
    assert!(
        states.iter().all(|s| s.outcome.as_deref() == Some("resolved")),
        "{:?}",
        states.iter().map(|s| &s.outcome).collect::<Vec<_>>()
    );
    let (earlier, later) = if states[0].actions[0].at <= states[1].actions[0].at {
        (&states[0], &states[1])
    } else {
        (&states[1], &states[0])
    };
    assert!(
        later.timeline.iter().any(|t| t.what.starts_with("waiting for kubernetes:prod/checkout")),
        "{:?}",
        later.timeline
    );
    assert!(later.actions[0].at >= earlier.resolved_at.unwrap(), "no overlap: the first run verified and let go first");
    // The cooldown runs from when the first run took the target; an action's
    // `at` is the step's clock reading just before it takes the target, so the
    // gap between the two readings may fall short by the moments between
    // reading and taking (1 ms seen on a loaded machine).
    let gap = later.actions[0].at.since(earlier.actions[0].at);
    assert!(gap >= Duration::from_millis(1450), "the second action waited out the cooldown: {gap:?}");
    assert!(a.engine.store().holds(SystemClock.now()).await.unwrap().is_empty(), "both let go of the target");
}

async fn state(engine: &engine::Engine, run: engine::RunId) -> Incident {
    serde_json::from_value(engine.run(run).await.unwrap().state).unwrap()
}
