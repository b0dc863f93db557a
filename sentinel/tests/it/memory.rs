//! Semantic memory through the workflow, on the real model and the embedded
//! Qdrant engine: one problem reported twice in other words is one incident;
//! a caller's symptom joins its upstream incident; a resolved incident is
//! evidence for the next like it (analysis, the API); `/health/detailed`
//! says what memory runs on.

use std::sync::Arc;
use std::time::Duration;

use api::access::{Access, Role};
use api::ingest::{IntakeSink, SemanticIntake};
use api::remediate::SharedKillSwitch;
use api::security::{RateLimit, Security};
use api::server::{router, AppState};
use engine::testing::{fast_worker, Backend, BackgroundWorker, TestDb};
use engine::{Clock, Engine, Registry, RunId, SystemClock, Timestamp};
use executors::mock::MockExecutor;
use executors::{Action, Allowlist, Executors, ExecutorsConfig, Guardrails};
use memory::edge::EdgeIndex;
use memory::{Embedder, SemanticMemory, DIMENSIONS};
use nodes::catalog::Catalog;
use nodes::incident::{Detection, Source};
use nodes::intake::{Intake, Join, JoinConfig};
use nodes::memory::{IncidentMemory, Status};
use nodes::policy::ledger::LedgerFacts;
use nodes::policy::PolicyConfig;
use nodes::ports::{MemoryDeployments, MemoryMetrics};
use nodes::verify::VerifyConfig;
use nodes::workflow::{self, Incident, Workflow, WorkflowConfig};

use crate::support::eventually;

fn model_dir() -> std::path::PathBuf {
    let dir = std::env::var_os("SENTINEL_TEST_MODEL_DIR").map(std::path::PathBuf::from).unwrap_or_else(|| {
        panic!("SENTINEL_TEST_MODEL_DIR is not set: run `export SENTINEL_TEST_MODEL_DIR=\"$(scripts/ensure-model.sh)\"` first (scripts/test.sh does)")
    });
    assert!(dir.join("model.safetensors").is_file(), "no model in {}: run scripts/ensure-model.sh", dir.display());
    dir
}

async fn semantic_memory(dir: &std::path::Path) -> SemanticMemory {
    let model = model_dir();
    let embedder = tokio::task::spawn_blocking(move || Embedder::load(&model)).await.unwrap().expect("the model loads");
    let index = EdgeIndex::open(dir, DIMENSIONS).expect("the index opens");
    SemanticMemory::new(Arc::new(embedder), Arc::new(index)).await.expect("memory is ready")
}

fn detector(service: &str, anomaly: &str, metric: &str, at: Timestamp) -> Detection {
    Detection {
        service: service.into(),
        anomaly_type: anomaly.into(),
        metric: metric.into(),
        observed: 20.0,
        baseline_mean: 1.0,
        baseline_stddev: 0.5,
        started_at: at,
        source: Source::Detector { detector: "ensemble".into(), score: 0.9, reason: "test".into() },
        labels: Default::default(),
        annotations: Default::default(),
    }
}

fn alert(service: &str, alertname: &str, summary: &str, at: Timestamp) -> Detection {
    Detection {
        service: service.into(),
        anomaly_type: "alert".into(),
        metric: alertname.into(),
        observed: 1.0,
        baseline_mean: 0.0,
        baseline_stddev: 0.0,
        started_at: at,
        source: Source::Alertmanager {
            group_key: format!("{{}}:{{alertname=\"{alertname}\", service=\"{service}\"}}"),
            alertname: alertname.into(),
            fingerprints: vec!["a1b2c3".into()],
            expr: None,
            group_labels: Default::default(),
        },
        labels: [("pod".to_owned(), format!("{service}-7d9f8-x2x9z")), ("severity".to_owned(), "page".to_owned())]
            .into_iter()
            .collect(),
        annotations: [("summary".to_owned(), summary.to_owned())].into_iter().collect(),
    }
}

/// The workflow on the mock backend over `memory`. With `auto`, the policy
/// approves restarts in `prod` and each restart brings the service's error
/// rate back; without, every action waits for a human (incidents stay open).
async fn workflow(store: &engine::Store, memory: Arc<dyn IncidentMemory>, catalog: Catalog, auto: bool) -> Workflow {
    let access = Access::new(store, Arc::new(SystemClock)).await.unwrap();
    let mock = MockExecutor::default();
    let metrics = MemoryMetrics::default();
    let recovered = metrics.clone();
    mock.on_execute(
        "restart_deployment",
        Arc::new(move |action: &Action| {
            let service = action.target.rsplit('/').next().unwrap_or_default();
            recovered.push(service, "error_rate", SystemClock.now(), 1.0);
        }),
    );
    let rails = Guardrails { allowlist: Allowlist::parse(&["*"]).unwrap(), ..Guardrails::default() };
    let executors =
        Executors::build(&ExecutorsConfig::mock_for_every_kind(mock, rails), SharedKillSwitch::arc(access.clone()))
            .await
            .unwrap();
    let allow: &[&str] = if auto { &["kubernetes:prod/*"] } else { &[] };
    let policy = PolicyConfig { allowlist: Allowlist::parse(allow).unwrap(), ..PolicyConfig::default() };
    Workflow {
        config: WorkflowConfig {
            policy: policy.clone(),
            verify: VerifyConfig { consecutive: 1, ..VerifyConfig::default() },
            verify_window: Duration::from_secs(60),
            verify_interval: Duration::from_millis(100),
            ..WorkflowConfig::default()
        },
        runbooks: nodes::runbook::Runbooks::shipped().unwrap(),
        services: catalog,
        metrics: Arc::new(metrics),
        deployments: Arc::new(MemoryDeployments::default()),
        memory,
        alerts: Arc::new(nodes::ports::NoAlertRules),
        cluster: Arc::new(nodes::ports::NoCluster),
        executor: Arc::new(executors),
        safety: Arc::new(LedgerFacts {
            engine: Engine::new(store.clone(), Registry::new(), Arc::new(SystemClock)),
            kill_switch: SharedKillSwitch::arc(access),
            policy,
        }),
    }
}

/// An engine running the workflow over `memory`, and its worker.
async fn engine_over(
    store: &engine::Store,
    memory: Arc<dyn IncidentMemory>,
    catalog: Catalog,
    auto: bool,
    worker: &str,
) -> (Engine, BackgroundWorker) {
    let mut registry = Registry::new();
    registry.register(workflow::graph(Arc::new(workflow(store, memory, catalog, auto).await)));
    let engine = Engine::new(store.clone(), registry, Arc::new(SystemClock));
    let worker = BackgroundWorker::start(&engine, fast_worker(worker));
    (engine, worker)
}

/// Waits until the detect node has kept `run` in memory.
async fn in_memory(memory: &SemanticMemory, run: RunId, status: Status) {
    eventually(&format!("incident {run} in memory as {status:?}"), Duration::from_secs(60), || async {
        memory.get(&run.to_string()).await.unwrap().is_some_and(|r| r.status == status)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_problem_told_twice_is_one_incident_and_a_callers_symptom_joins_its_cause() {
    let dir = tempfile::tempdir().unwrap();
    let memory = semantic_memory(dir.path()).await;
    let db = TestDb::new(Backend::Sqlite).await;
    let store = db.store().await;
    // checkout and orders call payments.
    let catalog =
        Catalog::every_service_in("prod").with_dependencies(&[("checkout", "payments"), ("orders", "payments")]);
    let shared: Arc<dyn IncidentMemory> = Arc::new(memory.clone());
    let mut registry = Registry::new();
    registry.register(workflow::graph(Arc::new(workflow(&store, shared.clone(), catalog.clone(), false).await)));
    let engine = Engine::new(store, registry, Arc::new(SystemClock));
    let worker = BackgroundWorker::start(&engine, fast_worker("memory"));
    let intake = IntakeSink::new(engine.clone()).with_memory(SemanticIntake {
        memory: shared,
        services: catalog.graph().clone(),
        config: JoinConfig::default(),
    });
    let now = SystemClock.now();

    // An alert opens the incident …
    let first = alert("checkout", "HighRequestLatency", "p99 latency of checkout is above 500 ms", now);
    let Intake::Opened(run) = intake.open(&first).await.unwrap() else { panic!("the alert opens an incident") };
    in_memory(&memory, run, Status::Open).await;

    // … and the detector's anomaly of the same problem joins it.
    let second =
        detector("checkout", "latency_spike", "http_request_duration_p99", now.saturating_add(Duration::from_secs(60)));
    let joined = intake.open(&second).await.unwrap();
    let Intake::Joined(joined_run, engine::Delivery::Accepted, Join::SameProblem { similarity }) = joined else {
        panic!("the anomaly joins the alert's incident: {joined:?}")
    };
    assert_eq!(joined_run, run);
    assert!(similarity >= JoinConfig::default().same_service, "{similarity}");
    // Recorded on the run, with how and how similar.
    let signals = engine.detail(run).await.unwrap().signals;
    let attach = signals.iter().find(|s| s.kind == "attach").expect("an attach signal");
    assert_eq!(attach.payload["join"]["how"], "same_problem");
    assert!(attach.payload["join"]["similarity"].as_f64().unwrap() >= 0.45, "{}", attach.payload);
    assert_eq!(attach.payload["detection"]["metric"], "http_request_duration_p99");
    // Delivered again (a Kafka replay): a duplicate, nothing new.
    let again = intake.open(&second).await.unwrap();
    assert!(matches!(again, Intake::Joined(r, engine::Delivery::Duplicate, _) if r == run), "{again:?}");

    // Another problem on the same service is its own incident.
    let disk = alert(
        "checkout",
        "NodeDiskFull",
        "disk of the checkout host almost full",
        now.saturating_add(Duration::from_secs(90)),
    );
    let opened = intake.open(&disk).await.unwrap();
    assert!(matches!(opened, Intake::Opened(r) if r != run), "{opened:?}");

    // payments fails; orders, which calls it, starts failing requests: one incident.
    let upstream =
        detector("payments", "latency_spike", "p99_latency_ms", now.saturating_add(Duration::from_secs(120)));
    let Intake::Opened(payments) = intake.open(&upstream).await.unwrap() else { panic!("payments opens") };
    in_memory(&memory, payments, Status::Open).await;
    let symptom =
        detector("orders", "error_rate_spike", "http_5xx_ratio", now.saturating_add(Duration::from_secs(150)));
    let joined = intake.open(&symptom).await.unwrap();
    let Intake::Joined(r, engine::Delivery::Accepted, Join::Downstream { service, caller_symptom }) = joined else {
        let joined_to = match &joined {
            Intake::Joined(r, ..) => memory.get(&r.to_string()).await.unwrap(),
            _ => None,
        };
        panic!("orders' errors join the payments incident ({payments}): {joined:?}, to {joined_to:?}")
    };
    assert_eq!((r, service.as_str()), (payments, "orders"));
    assert!(caller_symptom >= JoinConfig::default().caller_symptom);

    // A service nothing depends on through payments, with the same symptom, is not pulled in.
    let elsewhere =
        detector("reports", "error_rate_spike", "http_5xx_ratio", now.saturating_add(Duration::from_secs(160)));
    assert!(matches!(intake.open(&elsewhere).await.unwrap(), Intake::Opened(_)));

    // When the payments incident moves on (here: a human rejects its action),
    // orders is among its affected services and the join is on its timeline.
    eventually("payments waits for a decision", Duration::from_secs(60), || async {
        api::gate::waiting_gate(&engine.run(payments).await.unwrap(), "reject").is_some()
    })
    .await;
    let gate = api::gate::waiting_gate(&engine.run(payments).await.unwrap(), "reject").unwrap();
    let decision = serde_json::json!({ "gate": gate, "by": "test", "reason": "not now" });
    engine.signal(payments, &api::gate::signal_id(&gate), "reject", decision).await.unwrap();
    eventually("the payments incident closes", Duration::from_secs(60), || async {
        engine.run(payments).await.unwrap().status.is_finished()
    })
    .await;
    let closed: Incident = serde_json::from_value(engine.run(payments).await.unwrap().state).unwrap();
    assert_eq!(closed.affected, ["payments", "orders"]);
    assert!(
        closed
            .timeline
            .iter()
            .any(|t| t.what.starts_with("joined: error_rate_spike http_5xx_ratio on orders, a caller's symptom")),
        "{:?}",
        closed.timeline
    );
    in_memory(&memory, payments, Status::Closed).await;
    assert_eq!(memory.get(&payments.to_string()).await.unwrap().unwrap().affected, ["orders"]);
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolved_incident_is_evidence_for_the_next_one_like_it() {
    let dir = tempfile::tempdir().unwrap();
    let memory = semantic_memory(dir.path()).await;
    let db = TestDb::new(Backend::Sqlite).await;
    let store = db.store().await;
    let shared: Arc<dyn IncidentMemory> = Arc::new(memory.clone());
    let (engine, worker) =
        engine_over(&store, shared, Catalog::every_service_in("prod"), true, "memory-evidence").await;
    let now = SystemClock.now();

    // The first: auto-approved restart, recovered, resolved, kept as resolved.
    let first = engine
        .start(workflow::GRAPH, &Incident::new(detector("orders", "error_rate_spike", "error_rate", now)))
        .await
        .unwrap();
    in_memory(&memory, first, Status::Resolved).await;
    let kept = memory.get(&first.to_string()).await.unwrap().unwrap();
    let remedy = kept.remedy.as_ref().expect("the restart is remembered");
    assert_eq!((remedy.action.as_str(), remedy.target.as_str()), ("restart_deployment", "kubernetes:prod/orders"));
    assert_eq!(kept.outcome.as_deref(), Some("resolved"));
    assert!(kept.mttr_secs.is_some() && kept.resolved_at.is_some() && kept.cause.is_some(), "{kept:?}");

    // The next, told as an alert: analysis lists the first and counts it.
    let later = now.saturating_add(Duration::from_secs(3600));
    let next = alert("orders", "HighErrorRate", "orders error rate above 5%", later);
    let second = engine.start(workflow::GRAPH, &Incident::new(next)).await.unwrap();
    eventually("the second incident is analysed", Duration::from_secs(60), || async {
        let run = engine.run(second).await.unwrap();
        serde_json::from_value::<Incident>(run.state).is_ok_and(|s| !s.analysis.hypotheses.is_empty())
    })
    .await;
    let s: Incident = serde_json::from_value(engine.run(second).await.unwrap().state).unwrap();
    let similar: Vec<&str> = s.analysis.similar.iter().map(|n| n.incident.incident.as_str()).collect();
    assert_eq!(similar.first().copied(), Some(first.to_string().as_str()), "{:?}", s.analysis.similar);
    let top = &s.analysis.hypotheses[0];
    assert!(top.retrieval > 0.0, "the resolved incident counts for its cause: {top:?}");
    assert!(top.evidence.iter().any(|e| e.contains(&first.to_string())), "{:?}", top.evidence);

    // The API lists it too, with what was done and how it went.
    let access = Access::new(&store, Arc::new(SystemClock)).await.unwrap();
    let key = access.create_key("viewer", Role::Viewer, "test").await.unwrap().secret;
    let app = router(AppState {
        engine: engine.clone(),
        security: Security::new(access, RateLimit::default()),
        slack: None,
        telemetry: None,
        memory: Arc::new(memory.clone()),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let http = reqwest::Client::new();
    let body: serde_json::Value = http
        .get(format!("{base}/v1/incidents/{second}/similar"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    let listed = &body["similar"][0];
    assert_eq!(listed["incident"], first.to_string());
    assert_eq!(listed["status"], "resolved");
    assert_eq!(listed["action"], "restart_deployment on kubernetes:prod/orders");
    assert!(listed["mttr_secs"].as_f64().is_some(), "{body}");
    let bad = http.get(format!("{base}/v1/incidents/{second}/similar?limit=0")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(bad.status(), 400);

    let health: serde_json::Value =
        http.get(format!("{base}/health/detailed")).send().await.unwrap().json().await.unwrap();
    let vi = &health["components"]["vector_index"];
    assert_eq!(vi["status"], "ok", "{health}");
    assert!(vi["detail"]["incidents"].as_u64().unwrap() >= 2, "{health}");
    assert_eq!(vi["detail"]["index"], "embedded", "{health}");
    assert!(
        !health.to_string().contains(dir.path().to_str().unwrap()),
        "no path in an unauthenticated answer: {health}"
    );
    // Everything holding the index goes before its directory does.
    server.abort();
    let _ = server.await;
    worker.stop().await;
}

#[tokio::test]
async fn without_a_model_memory_is_off_and_says_so() {
    let db = TestDb::new(Backend::Sqlite).await;
    let store = db.store().await;
    let mut registry = Registry::new();
    let off: Arc<dyn IncidentMemory> = Arc::new(nodes::memory::NoMemory::default());
    registry.register(workflow::graph(Arc::new(workflow(&store, off, Catalog::every_service_in("prod"), false).await)));
    let engine = Engine::new(store.clone(), registry, Arc::new(SystemClock));
    let engine_for_off = engine.clone();
    let access = Access::new(&store, Arc::new(SystemClock)).await.unwrap();
    let key = access.create_key("viewer", Role::Viewer, "test").await.unwrap().secret;
    let app = router(AppState {
        engine,
        security: Security::new(access, RateLimit::default()),
        slack: None,
        telemetry: None,
        memory: Arc::new(nodes::memory::NoMemory::default()),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let http = reqwest::Client::new();
    let health: serde_json::Value =
        http.get(format!("{base}/health/detailed")).send().await.unwrap().json().await.unwrap();
    let vi = &health["components"]["vector_index"];
    assert_eq!(vi["status"], "off");
    assert!(vi["detail"].as_str().unwrap().contains("SENTINEL_MODEL_DIR"), "{health}");
    let run = engine_for_off
        .start(workflow::GRAPH, &Incident::new(detector("orders", "error_rate_spike", "error_rate", SystemClock.now())))
        .await
        .unwrap();
    let r = http.get(format!("{base}/v1/incidents/{run}/similar")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(body["memory"].as_str().unwrap().starts_with("off: "), "{body}");
    assert_eq!(body["similar"], serde_json::json!([]), "{body}");
    let missing =
        http.get(format!("{base}/v1/incidents/{}/similar", RunId::new())).bearer_auth(&key).send().await.unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_fixed_again_and_again_is_recurring_and_needs_a_human() {
    let dir = tempfile::tempdir().unwrap();
    let memory = semantic_memory(dir.path()).await;
    let db = TestDb::new(Backend::Sqlite).await;
    let store = db.store().await;
    let shared: Arc<dyn IncidentMemory> = Arc::new(memory.clone());
    let (engine, worker) =
        engine_over(&store, shared, Catalog::every_service_in("prod"), true, "memory-recurring").await;
    let now = SystemClock.now();

    // A first incident, fixed by an auto-approved restart.
    let first = engine
        .start(workflow::GRAPH, &Incident::new(detector("orders", "error_rate_spike", "error_rate", now)))
        .await
        .unwrap();
    in_memory(&memory, first, Status::Resolved).await;
    let kept = memory.get(&first.to_string()).await.unwrap().unwrap();
    // The same fix, once more, two days ago (another incident).
    let mut earlier = kept.clone();
    earlier.incident = RunId::new().to_string();
    earlier.opened_at = now.0 - 2 * 24 * 3600 * 1000;
    earlier.resolved_at = Some(earlier.opened_at + 600_000);
    memory.remember(&earlier).await.unwrap();
    // And one three weeks ago, outside the window: not counted.
    let mut old = kept.clone();
    old.incident = RunId::new().to_string();
    old.opened_at = now.0 - 21 * 24 * 3600 * 1000;
    old.resolved_at = Some(old.opened_at + 600_000);
    memory.remember(&old).await.unwrap();

    // The third time: the restart is planned again, flagged, and left to a human.
    let later = now.saturating_add(Duration::from_secs(600));
    let third = engine
        .start(workflow::GRAPH, &Incident::new(detector("orders", "error_rate_spike", "error_rate", later)))
        .await
        .unwrap();
    eventually("the third incident waits for a human", Duration::from_secs(60), || async {
        engine.run(third).await.unwrap().wait_signals.iter().any(|k| k == "approve")
    })
    .await;
    let s: Incident = serde_json::from_value(engine.run(third).await.unwrap().state).unwrap();
    let r = s.recurrence.as_ref().expect("flagged recurring");
    let mut previous: Vec<&str> = r.previous.iter().map(|p| p.incident.as_str()).collect();
    previous.sort();
    let mut expected = vec![kept.incident.as_str(), earlier.incident.as_str()];
    expected.sort();
    assert_eq!(previous, expected, "the two fixes within 7 days, not the one three weeks ago");
    assert!(!r.escalating, "a restart is not an escalating fix");
    assert!(s.decisions.is_empty(), "not auto-approved: {:?}", s.decisions);
    let due =
        engine.store().outbox_due(SystemClock.now().saturating_add(Duration::from_secs(3600)), 1000).await.unwrap();
    let asked = due
        .iter()
        .find(|m| m.run_id == third && m.topic == workflow::topics::APPROVAL_REQUESTED)
        .expect("a human is asked");
    let reason = asked.payload["reason"].as_str().unwrap();
    assert!(reason.contains("recurring: this target was remediated 2 time(s) in 7 days"), "{reason}");
    assert!(
        s.timeline
            .iter()
            .any(|t| t.what.starts_with("recurring: restart_deployment on kubernetes:prod/orders again: 2 earlier")),
        "{:?}",
        s.timeline
    );
    let postmortem = nodes::postmortem::render(&s);
    assert!(postmortem.contains("keeps needing fixes (3 in 7 days)"), "{postmortem}");
    worker.stop().await;

    // An escalating fix: one earlier raise of the memory limit is enough.
    let mut raised = kept.clone();
    raised.incident = RunId::new().to_string();
    let target = kept.remedy.as_ref().unwrap().target.clone();
    raised.remedy = Some(nodes::memory::Remedy {
        executor: "kubernetes".into(),
        action: "patch_memory_limit".into(),
        target: target.clone(),
        params: [("factor".to_owned(), serde_json::json!(2))].into_iter().collect(),
    });
    memory.remember(&raised).await.unwrap();
    let me =
        nodes::memory::Remembered::opened("", "fp", &detector("orders", "memory_leak", "container_memory_rss", later));
    let r = nodes::memory::recurrence(&memory, &me, "patch_memory_limit", &target, later).await.unwrap().unwrap();
    assert!(r.escalating, "{r:?}");
    assert!(r.describe().contains("the same escalating fix among them"), "{}", r.describe());
}

/// `sentinel serve` on a data directory, with the model or without; its log in `log`.
fn serve(
    data: &std::path::Path,
    port: u16,
    model: Option<&std::path::Path>,
    log: &std::path::Path,
) -> std::process::Child {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_sentinel"));
    cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("SENTINEL_DATA_DIR", data)
        .env_remove("DATABASE_URL")
        .env_remove("QDRANT_URL")
        .env("SENTINEL_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).expect("log file"));
    match model {
        Some(m) => cmd.env("SENTINEL_MODEL_DIR", m),
        None => cmd.env_remove("SENTINEL_MODEL_DIR"),
    };
    cmd.spawn().expect("spawn sentinel serve")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_turns_memory_on_with_a_model_and_says_so_either_way() {
    let http = reqwest::Client::new();
    let health = |port: u16| {
        let http = http.clone();
        async move {
            let r = http.get(format!("http://127.0.0.1:{port}/health/detailed")).send().await.ok()?;
            r.json::<serde_json::Value>().await.ok()
        }
    };

    // With the model: the embedded index under the data directory.
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let logs = tempfile::tempdir().unwrap();
    let mut on = serve(data.path(), port, Some(&model_dir()), &logs.path().join("on.log"));
    eventually("serve answers with memory on", Duration::from_secs(60), || async { health(port).await.is_some() })
        .await;
    let body = health(port).await.unwrap();
    let vi = &body["components"]["vector_index"];
    assert_eq!(vi["status"], "ok", "{body}");
    assert_eq!(vi["detail"]["incidents"], 0, "{body}");
    assert!(data.path().join("memory").join(".sentinel.lock").is_file(), "the index lives under the data directory");

    // A second process on the same data directory is refused, and says why.
    let mut second = serve(data.path(), free_port(), Some(&model_dir()), &logs.path().join("second.log"));
    let status = tokio::task::spawn_blocking(move || second.wait()).await.unwrap().unwrap();
    assert!(!status.success(), "a second process on one embedded index does not start");
    let stderr = std::fs::read_to_string(logs.path().join("second.log")).unwrap();
    assert!(stderr.contains("in use by another process") && stderr.contains("QDRANT_URL"), "{stderr}");
    on.kill().unwrap();
    on.wait().unwrap();

    // Without: off, with the reason, at start and in /health/detailed.
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut off = serve(data.path(), port, None, &logs.path().join("off.log"));
    eventually("serve answers with memory off", Duration::from_secs(60), || async { health(port).await.is_some() })
        .await;
    let body = health(port).await.unwrap();
    assert_eq!(body["components"]["vector_index"]["status"], "off", "{body}");
    off.kill().unwrap();
    off.wait().unwrap();
    let stderr = std::fs::read_to_string(logs.path().join("off.log")).unwrap();
    assert!(stderr.contains("semantic memory: off"), "the start line says so: {stderr}");
}
