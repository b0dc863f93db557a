//! Each injected fault driven through the whole incident graph: the path it
//! took, the decisions recorded, the actions sent, and the postmortem.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use engine::testing::{fast_worker, finished, wait_until, Backend, BackgroundWorker, TestDb};
use engine::{on_both_stores, Clock, Registry, RunStatus, SystemClock, Timestamp};
use executors::mock::MockExecutor;
use executors::{Action, Allowlist, Executors, Guardrails, NoKillSwitch};
use nodes::catalog::Catalog;
use nodes::incident::{Detection, Source};
use nodes::policy::{Facts, PolicyConfig};
use nodes::ports::{MemoryDeployments, MemoryMetrics, PortError};
use nodes::runbook::{PlannedAction, Runbooks};
use nodes::verify::VerifyConfig;
use nodes::workflow::{self, Incident, SafetyFacts, Workflow, WorkflowConfig};
use serde_json::json;

struct NoHistory;

#[async_trait]
impl SafetyFacts for NoHistory {
    async fn facts(&self, _: &PlannedAction, _: &str, _: Timestamp) -> Result<Facts, PortError> {
        Ok(Facts::default())
    }
}

struct World {
    metrics: MemoryMetrics,
    /// The backend behind the factory and its guardrails, for every kind.
    mock: MockExecutor,
    /// What the cluster says about workloads.
    cluster: nodes::ports::MemoryCluster,
}

/// (verb, action, idempotency key) of every mutating call that reached the backend.
fn mutations(mock: &MockExecutor) -> Vec<(String, String, String)> {
    mock.mutations().into_iter().map(|c| (c.verb.to_owned(), c.action, c.key.unwrap_or_default())).collect()
}

fn now() -> Timestamp {
    SystemClock.now()
}

/// An hour of steady baseline (mean 100, a little noise) for `service`/`metric`.
fn baseline(metrics: &MemoryMetrics, service: &str, metric: &str) {
    let t0 = now().saturating_sub(Duration::from_secs(3600));
    for i in 0..60u64 {
        let wobble = [-8.0, -3.0, 0.0, 4.0, 9.0, -6.0][(i % 6) as usize];
        metrics.push(service, metric, t0.saturating_add(Duration::from_secs(i * 60)), 100.0 + wobble);
    }
}

fn detection(service: &str, anomaly: &str, metric: &str, observed: f64, labels: &[(&str, &str)]) -> Detection {
    Detection {
        service: service.into(),
        anomaly_type: anomaly.into(),
        metric: metric.into(),
        observed,
        baseline_mean: 100.0,
        baseline_stddev: 6.0,
        started_at: now(),
        source: Source::Detector { detector: "zscore".into(), score: 0.95, reason: "z > 4 for 3 of 5 points".into() },
        labels: labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect::<BTreeMap<_, _>>(),
        annotations: Default::default(),
    }
}

/// After an action, the metric reads `value` a few times (just after now).
fn readings_after(metrics: &MemoryMetrics, service: &str, metric: &str, value: f64) -> executors::mock::Effect {
    let (metrics, service, metric) = (metrics.clone(), service.to_owned(), metric.to_owned());
    Arc::new(move |_| {
        let t = now();
        for i in 1..=4 {
            metrics.push(&service, &metric, t.saturating_add(Duration::from_millis(i)), value);
        }
    })
}

async fn engine_for(db: &TestDb, config: WorkflowConfig) -> (engine::Engine, World) {
    engine_with_deployments(db, config, MemoryDeployments::default(), false).await
}

async fn engine_with_deployments(
    db: &TestDb,
    config: WorkflowConfig,
    deployments: MemoryDeployments,
    dry_run: bool,
) -> (engine::Engine, World) {
    let metrics = MemoryMetrics::default();
    let mock = MockExecutor::default();
    let cluster = nodes::ports::MemoryCluster::default();
    let rails = Guardrails { allowlist: Allowlist::parse(&["*"]).unwrap(), dry_run, ..Guardrails::default() };
    let parts =
        executors::KINDS.iter().map(|k| ((*k).to_owned(), Arc::new(mock.clone()) as Arc<dyn executors::Executor>));
    let executors = Executors::from_parts(parts.collect(), &rails, Arc::new(NoKillSwitch));
    let workflow = Arc::new(Workflow {
        config,
        runbooks: Runbooks::shipped().unwrap(),
        services: Catalog::every_service_in("prod")
            .with_dependencies(&[("frontend", "checkout"), ("checkout", "payments")]),
        metrics: Arc::new(metrics.clone()),
        deployments: Arc::new(deployments),
        memory: Arc::new(nodes::memory::NoMemory::default()),
        alerts: Arc::new(nodes::ports::NoAlertRules),
        cluster: Arc::new(cluster.clone()),
        executor: Arc::new(executors),
        safety: Arc::new(NoHistory),
    });
    let mut registry = Registry::new();
    registry.register(workflow::graph(workflow));
    (db.engine(registry).await, World { metrics, mock, cluster })
}

fn config() -> WorkflowConfig {
    WorkflowConfig {
        policy: PolicyConfig {
            allowlist: Allowlist::parse(&["kubernetes:prod/*"]).unwrap(),
            ..PolicyConfig::default()
        },
        verify: VerifyConfig::default(),
        approval_timeout: Duration::from_secs(60),
        verify_window: Duration::from_secs(5),
        verify_interval: Duration::from_millis(50),
        ..WorkflowConfig::default()
    }
}

/// The nodes a run went through, a node that ran several times in a row (a
/// wait, a verification poll) counted once.
fn path(history: &[engine::Checkpoint]) -> Vec<String> {
    let mut nodes: Vec<String> = history.iter().map(|c| c.node.clone()).collect();
    nodes.dedup();
    nodes
}

on_both_stores!(
    a_dry_run_records_the_action_and_performs_nothing,
    a_second_detection_of_an_open_condition_attaches_to_its_incident,
    every_demo_fault_is_remediated_by_its_runbook,
    a_low_risk_restart_is_auto_approved_verified_and_resolved,
    a_risky_drain_waits_for_a_human_and_is_approved_through_a_signal,
    an_action_that_makes_things_worse_is_rolled_back_and_escalated,
    nobody_deciding_in_time_escalates_and_rejects,
    an_alert_without_a_rule_source_resolves_by_its_notification_and_is_never_rolled_back_blind,
);

async fn a_low_risk_restart_is_auto_approved_verified_and_resolved(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (engine, world) = engine_for(&db, config()).await;
    baseline(&world.metrics, "checkout", "http_p99_ms");
    world.mock.on_execute("restart_deployment", readings_after(&world.metrics, "checkout", "http_p99_ms", 101.0));
    let worker = BackgroundWorker::start(&engine, fast_worker("w"));
    let d = detection(
        "checkout",
        "latency_spike",
        "http_p99_ms",
        180.0,
        &[("namespace", "prod"), ("platform", "kubernetes")],
    );
    let run = engine.start(workflow::GRAPH, &Incident::new(d)).await.unwrap();
    let done = finished(&engine, run).await;
    worker.stop().await;

    assert_eq!(done.status, RunStatus::Completed, "{:?}", done.error);
    let detail = engine.detail(run).await.unwrap();
    assert_eq!(path(&detail.history), ["detect", "analyze", "plan", "await_approval", "execute", "verify", "resolve"]);
    let s: Incident = serde_json::from_value(done.state).unwrap();
    assert_eq!(s.outcome.as_deref(), Some("resolved"));
    assert_eq!(s.decisions.len(), 1);
    assert_eq!((s.decisions[0].approved, s.decisions[0].by.as_str()), (true, "policy"));
    let calls = mutations(&world.mock);
    assert_eq!(calls.len(), 1);
    assert_eq!((calls[0].0.as_str(), calls[0].1.as_str()), ("execute", "restart_deployment"));
    assert_eq!(calls[0].2, format!("{run}:apply-0"), "the engine's idempotency key reaches the executor");
    let gate = s.decisions[0].gate.clone().expect("an auto-approval names its gate too");
    let pm = s.postmortem.unwrap();
    for needle in [
        "# latency spike on checkout",
        &format!("Approved (gate {gate}) by policy"),
        "kubernetes `restart_deployment` on `kubernetes:prod/checkout`",
        "Recovered: back within tolerance",
        "- Outcome: resolved",
        "Time to resolve",
    ] {
        assert!(pm.contains(needle), "postmortem lacks `{needle}`:\n{pm}");
    }
    assert!(!pm.contains("{ at:"), "the verdict is written in words, not as a debug struct:\n{pm}");
    assert!(s.mttr_secs.is_some());
}

async fn a_risky_drain_waits_for_a_human_and_is_approved_through_a_signal(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut cfg = config();
    cfg.policy.allowlist.push(executors::TargetPattern::new("kubernetes:node/*").unwrap());
    let (engine, world) = engine_for(&db, cfg).await;
    baseline(&world.metrics, "ip-10-0-1-7", "node_ready");
    world.mock.on_execute("drain_node", readings_after(&world.metrics, "ip-10-0-1-7", "node_ready", 100.0));
    let worker = BackgroundWorker::start(&engine, fast_worker("w"));
    let d = detection("ip-10-0-1-7", "node_not_ready", "node_ready", 0.0, &[("node", "ip-10-0-1-7")]);
    let run = engine.start(workflow::GRAPH, &Incident::new(d)).await.unwrap();
    let waiting = wait_until(&engine, run, Duration::from_secs(20), |r| r.status == RunStatus::Waiting).await;
    assert_eq!(waiting.node, "await_approval");
    assert!(world.mock.mutations().is_empty(), "nothing acted before the approval");
    let outbox = engine.store().outbox_due(Timestamp(i64::MAX), 10).await.unwrap();
    let request =
        outbox.iter().find(|m| m.topic == "approval_requested").expect("approval requested through the outbox");
    assert!(request.payload["reason"].as_str().unwrap().contains("estimated downtime 120s is not under 60s"));

    let gate = request.payload["gate"].as_str().expect("the request names its gate").to_owned();
    let s: Incident = serde_json::from_value(waiting.state).unwrap();
    assert_eq!(s.gate.as_deref(), Some(gate.as_str()));
    assert!(gate.starts_with("1-"), "{gate}");
    let decision = |by: &str| json!({ "gate": gate, "by": by, "reason": "node is gone" });
    engine.signal(run, "slack-1", "approve", decision("alice")).await.unwrap();
    engine.signal(run, "slack-1", "approve", decision("alice")).await.unwrap();
    let done = finished(&engine, run).await;
    worker.stop().await;
    let s: Incident = serde_json::from_value(done.state).unwrap();
    assert_eq!(s.outcome.as_deref(), Some("resolved"), "{:#?}", s.timeline);
    assert_eq!(s.decisions.len(), 1, "a duplicated click is one decision");
    assert_eq!((s.decisions[0].by.as_str(), s.decisions[0].reason.as_str()), ("alice", "node is gone"));
    assert_eq!(s.decisions[0].gate.as_deref(), Some(gate.as_str()));
    assert!(s.postmortem.unwrap().contains(&format!("Approved (gate {gate}) by alice")));
}

async fn an_action_that_makes_things_worse_is_rolled_back_and_escalated(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (engine, world) = engine_for(&db, config()).await;
    baseline(&world.metrics, "checkout", "error_rate");
    world.mock.on_execute("restart_deployment", readings_after(&world.metrics, "checkout", "error_rate", 400.0));
    let worker = BackgroundWorker::start(&engine, fast_worker("w"));
    let d = detection("checkout", "error_rate_spike", "error_rate", 200.0, &[("namespace", "prod")]);
    let run = engine.start(workflow::GRAPH, &Incident::new(d)).await.unwrap();
    let done = finished(&engine, run).await;
    worker.stop().await;
    let detail = engine.detail(run).await.unwrap();
    assert_eq!(
        path(&detail.history),
        ["detect", "analyze", "plan", "await_approval", "execute", "verify", "rollback", "escalate"]
    );
    let s: Incident = serde_json::from_value(done.state).unwrap();
    assert_eq!(s.outcome.as_deref(), Some("escalated: the action made things worse"));
    let verbs: Vec<(String, String)> = mutations(&world.mock).into_iter().map(|(v, a, _)| (v, a)).collect();
    assert_eq!(
        verbs,
        [
            ("execute".to_owned(), "restart_deployment".to_owned()),
            ("rollback".to_owned(), "restart_deployment".to_owned())
        ]
    );
    let escalations = engine.store().outbox_due(Timestamp(i64::MAX), 20).await.unwrap();
    assert!(escalations.iter().filter(|m| m.topic == "escalation").count() >= 2, "rollback and escalation both notify");
}

async fn nobody_deciding_in_time_escalates_and_rejects(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut cfg = config();
    cfg.approval_timeout = Duration::from_millis(300);
    cfg.policy.allowlist = Allowlist::default();
    let (engine, world) = engine_for(&db, cfg).await;
    baseline(&world.metrics, "checkout", "http_p99_ms");
    let worker = BackgroundWorker::start(&engine, fast_worker("w"));
    let d = detection("checkout", "latency_spike", "http_p99_ms", 180.0, &[("namespace", "prod")]);
    let run = engine.start(workflow::GRAPH, &Incident::new(d)).await.unwrap();
    let done = finished(&engine, run).await;
    worker.stop().await;
    let s: Incident = serde_json::from_value(done.state).unwrap();
    assert_eq!(s.outcome.as_deref(), Some("rejected: approval timed out"));
    assert_eq!(s.decisions.last().map(|d| d.by.as_str()), Some("timeout"));
    assert!(world.mock.mutations().is_empty());
    let topics: Vec<String> =
        engine.store().outbox_due(Timestamp(i64::MAX), 20).await.unwrap().into_iter().map(|m| m.topic).collect();
    assert_eq!(topics, ["approval_requested", "escalation"]);
    let detail = engine.detail(run).await.unwrap();
    assert_eq!(path(&detail.history), ["detect", "analyze", "plan", "await_approval", "closed"]);
}

/// The seven faults the demo injects, each with the action its runbook should
/// take given the evidence; that action brings the metric back.
async fn every_demo_fault_is_remediated_by_its_runbook(backend: Backend) {
    // (service, anomaly type, metric, labels, the action its runbook should take)
    type Fault = (&'static str, &'static str, &'static str, &'static [(&'static str, &'static str)], &'static str);
    let faults: [Fault; 7] = [
        ("svc-latency", "latency_spike", "http_p99_ms", &[], "restart_deployment"),
        ("svc-errors", "error_rate_spike", "error_rate", &[], "restart_deployment"),
        ("svc-cpu", "cpu_saturation", "cpu_utilization", &[("platform", "kubernetes")], "scale_deployment"),
        // A label claiming an OOM kill is not evidence: the cluster's pod status is (below).
        ("svc-memory", "memory_leak", "memory_mb", &[("oom_killed", "false")], "patch_memory_limit"),
        ("svc-db", "db_connection_exhaustion", "db_connections", &[("connection_share", "0.7")], "restart_deployment"),
        ("svc-lag", "consumer_lag", "consumer_lag", &[("partitions_per_consumer", "3")], "scale_deployment"),
        ("svc-deploy", "error_rate_spike", "error_rate", &[], "rollback_deployment"),
    ];
    let db = TestDb::new(backend).await;
    let deployments = MemoryDeployments::default();
    // The failed deployment: shipped five minutes before its errors started.
    deployments.0.lock().unwrap().push(nodes::ports::Deployment {
        service: "svc-deploy".into(),
        version: "v42".into(),
        at: now().saturating_sub(Duration::from_secs(300)),
    });
    let mut cfg = config();
    cfg.policy.max_auto_per_minute = 100;
    cfg.policy.max_auto_per_hour = 100;
    let (engine, world) = engine_with_deployments(&db, cfg, deployments, false).await;
    for (service, _, metric, _, _) in &faults {
        baseline(&world.metrics, service, metric);
    }
    world.cluster.set_workload(nodes::ports::WorkloadReport {
        namespace: "prod".into(),
        deployment: "svc-memory".into(),
        pods: vec![executors::kubernetes::inspect::PodReport {
            name: "svc-memory-7d9f8b6c5-x2x9q".into(),
            restarts: 4,
            last_terminated: Some(("OOMKilled".into(), 137)),
            ..Default::default()
        }],
        ..Default::default()
    });
    // Each fixing action brings its service's metric back; any other action does nothing.
    let metrics = world.metrics.clone();
    let fixes: BTreeMap<(String, String), String> =
        faults.iter().map(|(s, _, m, _, a)| (((*s).to_owned(), (*a).to_owned()), (*m).to_owned())).collect();
    for action in ["restart_deployment", "scale_deployment", "patch_memory_limit", "rollback_deployment"] {
        let (metrics, fixes) = (metrics.clone(), fixes.clone());
        world.mock.on_execute(
            action,
            Arc::new(move |a: &Action| {
                let service = a.target.rsplit('/').next().unwrap_or_default().to_owned();
                if let Some(metric) = fixes.get(&(service.clone(), a.action.clone())) {
                    let t = now();
                    for i in 1..=4 {
                        metrics.push(&service, metric, t.saturating_add(Duration::from_millis(i)), 100.0);
                    }
                }
            }),
        );
    }
    let worker = BackgroundWorker::start(&engine, fast_worker("w"));
    let mut runs = Vec::new();
    for (service, anomaly, metric, labels, action) in &faults {
        let mut all: Vec<(&str, &str)> = vec![("namespace", "prod")];
        all.extend_from_slice(labels);
        let d = detection(service, anomaly, metric, 300.0, &all);
        runs.push((engine.start(workflow::GRAPH, &Incident::new(d)).await.unwrap(), *service, *action));
    }
    for (run, _, _) in &runs {
        finished(&engine, *run).await;
    }
    worker.stop().await;
    let calls = mutations(&world.mock);
    for (run, service, action) in runs {
        let r = engine.run(run).await.unwrap();
        let s: Incident = serde_json::from_value(r.state).unwrap();
        assert_eq!(s.outcome.as_deref(), Some("resolved"), "{service}: {:#?}", s.timeline);
        let applied: Vec<&str> =
            calls.iter().filter(|(_, _, key)| key.starts_with(&run.to_string())).map(|(_, a, _)| a.as_str()).collect();
        assert_eq!(applied, [action], "{service} took its runbook's action, once");
        let detail = engine.detail(run).await.unwrap();
        assert_eq!(
            path(&detail.history),
            ["detect", "analyze", "plan", "await_approval", "execute", "verify", "resolve"],
            "{service}"
        );
    }
}

async fn a_second_detection_of_an_open_condition_attaches_to_its_incident(backend: Backend) {
    use nodes::intake::{open_or_attach, Intake};
    let db = TestDb::new(backend).await;
    let mut cfg = config();
    cfg.policy.allowlist = Allowlist::default();
    let (engine, world) = engine_for(&db, cfg).await;
    baseline(&world.metrics, "checkout", "http_p99_ms");
    let first = detection("checkout", "latency_spike", "http_p99_ms", 180.0, &[("namespace", "prod")]);
    let Intake::Opened(run) = open_or_attach(&engine, &first).await.unwrap() else {
        panic!("the first detection opens")
    };
    let mut again = first.clone();
    again.observed = 230.0;
    again.started_at = first.started_at.saturating_add(Duration::from_secs(60));
    assert_eq!(open_or_attach(&engine, &again).await.unwrap(), Intake::Attached(run, engine::Delivery::Accepted));
    assert_eq!(open_or_attach(&engine, &again).await.unwrap(), Intake::Attached(run, engine::Delivery::Duplicate));
    // Another metric of the same service is another condition.
    let other = detection("checkout", "error_rate_spike", "error_rate", 9.0, &[("namespace", "prod")]);
    let Intake::Opened(other_run) = open_or_attach(&engine, &other).await.unwrap() else {
        panic!("another condition opens")
    };
    assert_ne!(other_run, run);
    let signals = engine.detail(run).await.unwrap().signals;
    assert_eq!(signals.len(), 1);
    assert_eq!(signals[0].kind, "attach");
    assert_eq!(signals[0].payload["observed"], json!(230.0));
    // Once the incident is over, the same condition opens a new one.
    engine.cancel(run, "c", "test").await.unwrap();
    let Intake::Opened(next) = open_or_attach(&engine, &again).await.unwrap() else {
        panic!("a closed incident is not reopened")
    };
    assert_ne!(next, run);
    assert_eq!(
        engine
            .list(&engine::RunFilter { graph: Some(workflow::GRAPH.into()), ..Default::default() })
            .await
            .unwrap()
            .len(),
        3
    );
}

async fn a_dry_run_records_the_action_and_performs_nothing(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (engine, world) = engine_with_deployments(&db, config(), MemoryDeployments::default(), true).await;
    baseline(&world.metrics, "checkout", "http_p99_ms");
    let worker = BackgroundWorker::start(&engine, fast_worker("w"));
    let d = detection("checkout", "latency_spike", "http_p99_ms", 180.0, &[("namespace", "prod")]);
    let run = engine.start(workflow::GRAPH, &Incident::new(d)).await.unwrap();
    let done = finished(&engine, run).await;
    worker.stop().await;
    assert!(world.mock.mutations().is_empty(), "a dry run makes no mutating call: {:?}", world.mock.mutations());
    let s: Incident = serde_json::from_value(done.state).unwrap();
    assert_eq!(
        s.outcome.as_deref(),
        Some("dry run: restart_deployment on kubernetes:prod/checkout recorded, not performed")
    );
    assert!(s.actions.len() == 1 && s.actions[0].dry_run);
    assert_eq!(s.actions[0].outcome["dry_run"], true);
    assert!(s
        .timeline
        .iter()
        .any(|t| t.what.starts_with("dry run: would restart_deployment kubernetes:prod/checkout")));
    let detail = engine.detail(run).await.unwrap();
    assert_eq!(path(&detail.history), ["detect", "analyze", "plan", "await_approval", "execute", "closed"]);
}

/// An alert's incident with no rule source and no baseline (its metric never
/// reached Sentinel): the resolved notification resolves it; without one, a
/// person is asked at the end of the window, and nothing is rolled back.
async fn an_alert_without_a_rule_source_resolves_by_its_notification_and_is_never_rolled_back_blind(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut cfg = config();
    cfg.verify_window = Duration::from_secs(2);
    let (engine, world) = engine_for(&db, cfg).await;
    let worker = BackgroundWorker::start(&engine, fast_worker("w"));
    let alert = |service: &str| {
        let mut d = detection(service, "error_rate_spike", "HighErrorRate", 1.0, &[("namespace", "prod")]);
        d.baseline_mean = 0.0;
        d.baseline_stddev = 0.0;
        d.source = Source::Alertmanager {
            group_key: format!("{{}}:{{service=\"{service}\"}}"),
            alertname: "HighErrorRate".into(),
            fingerprints: vec![format!("fp-{service}")],
            expr: None,
            group_labels: Default::default(),
        };
        d
    };
    let cleared = alert("svc-cleared");
    // Opened as the Alertmanager route opens it: correlated by its group.
    let nodes::intake::Intake::Opened(run) = nodes::intake::open_or_attach(&engine, &cleared).await.unwrap() else {
        panic!("a new incident")
    };
    wait_until(&engine, run, Duration::from_secs(20), |r| r.node == "verify").await;
    assert!(nodes::intake::clear(&engine, &cleared).await.unwrap().is_some(), "the resolved notification reaches it");
    let done = finished(&engine, run).await;
    let s: Incident = serde_json::from_value(done.state).unwrap();
    assert_eq!(s.outcome.as_deref(), Some("resolved"), "{:?}", s.timeline);
    assert!(s.timeline.iter().any(|t| t.what == "alert HighErrorRate resolved (Alertmanager's resolved notification)"));

    let silent = engine.start(workflow::GRAPH, &Incident::new(alert("svc-silent"))).await.unwrap();
    let done = finished(&engine, silent).await;
    worker.stop().await;
    let s: Incident = serde_json::from_value(done.state).unwrap();
    let detail = engine.detail(silent).await.unwrap();
    assert_eq!(path(&detail.history), ["detect", "analyze", "plan", "await_approval", "execute", "verify", "escalate"]);
    assert!(
        s.outcome.as_deref().is_some_and(|o| o.starts_with("escalated: could not verify alert HighErrorRate")),
        "{:?}",
        s.outcome
    );
    let verbs: Vec<String> = mutations(&world.mock).into_iter().map(|m| m.0).collect();
    assert_eq!(verbs, ["execute", "execute"], "two restarts, no rollback");
}
