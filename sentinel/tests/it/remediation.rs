//! Through the workflow, against a real moto server: an incident whose
//! runbook says "scale the ECS service" is auto-approved, executed by the ECS
//! executor behind its guardrails, fails verification (the metric gets worse),
//! is rolled back, and the service's desired count ends where it started.

use std::sync::Arc;
use std::time::Duration;

use api::access::Access;
use api::remediate::SharedKillSwitch;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_ecs::config::Credentials;
use engine::testing::{fast_worker, finished, Backend, BackgroundWorker, TestDb};
use engine::{Clock, Registry, SystemClock};
use executors::aws::{AwsConfig, EcsExecutor};
use executors::{Allowlist, Executor, Executors, Guardrails};
use nodes::catalog::{self, Catalog};
use nodes::incident::{Detection, Source};
use nodes::policy::ledger::LedgerFacts;
use nodes::policy::PolicyConfig;
use nodes::ports::{MemoryDeployments, MemoryMetrics};
use nodes::runbook;
use nodes::workflow::{self, Incident, Workflow, WorkflowConfig};

fn moto() -> String {
    std::env::var("SENTINEL_TEST_AWS_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:5055".to_owned())
}

async fn desired(ecs: &aws_sdk_ecs::Client, cluster: &str) -> i32 {
    let out = ecs.describe_services().cluster(cluster).services("orders").send().await.unwrap();
    out.services()[0].desired_count()
}

/// An ECS service `orders` at a desired count of 3, in a cluster of its own, in moto.
async fn ecs_service(url: &str) -> (aws_config::SdkConfig, aws_sdk_ecs::Client, String) {
    let addr = url.trim_start_matches("http://").trim_end_matches('/').to_owned();
    assert!(
        tokio::net::TcpStream::connect(&addr).await.is_ok(),
        "no moto server answers at {url}: run scripts/ensure-moto.sh (the test command does)"
    );
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(url)
        .credentials_provider(Credentials::new("testing", "testing", None, None, "sentinel-tests"))
        .load()
        .await;
    let ecs = aws_sdk_ecs::Client::new(&sdk);
    let cluster = format!("prod-{}", uuid::Uuid::new_v4().simple());
    ecs.create_cluster().cluster_name(&cluster).send().await.unwrap();
    let container =
        aws_sdk_ecs::types::ContainerDefinition::builder().name("orders").image("orders:7").memory(256).build();
    let task = ecs.register_task_definition().family("orders").container_definitions(container).send().await.unwrap();
    let task = task.task_definition().unwrap().task_definition_arn().unwrap().to_owned();
    ecs.create_service()
        .cluster(&cluster)
        .service_name("orders")
        .task_definition(task)
        .desired_count(3)
        .send()
        .await
        .unwrap();
    // moto marks tasks running once the count is set through UpdateService.
    ecs.update_service().cluster(&cluster).service("orders").desired_count(3).send().await.unwrap();
    (sdk, ecs, cluster)
}

/// A catalogue where `orders` is the ECS service of that name in `cluster`.
fn orders_on(cluster: &str) -> Catalog {
    let orders = catalog::Service {
        name: "orders".into(),
        runs_on: catalog::Placement {
            ecs: Some(catalog::EcsService { cluster: cluster.into(), service: None }),
            ..Default::default()
        },
        ..Default::default()
    };
    Catalog::new(vec![orders], None).unwrap()
}

fn cpu_saturation(cluster: &str, at: engine::Timestamp) -> Detection {
    Detection {
        service: "orders".into(),
        anomaly_type: "cpu_saturation".into(),
        metric: "cpu_pct".into(),
        observed: 92.0,
        baseline_mean: 40.0,
        baseline_stddev: 5.0,
        started_at: at,
        source: Source::Detector { detector: "zscore".into(), score: 1.0, reason: "test".into() },
        // A label naming another cluster is evidence, not a target: the
        // action goes where the catalogue says `orders` runs.
        labels: [("platform".to_owned(), "ecs".to_owned()), ("namespace".to_owned(), format!("not-{cluster}"))]
            .into_iter()
            .collect(),
        annotations: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ecs_scale_that_does_not_help_is_rolled_back_in_moto() {
    let url = moto();
    let (sdk, ecs, cluster) = ecs_service(&url).await;
    let db = TestDb::new(Backend::Postgres).await;
    let store = db.store().await;
    let access = Access::new(&store, Arc::new(SystemClock)).await.unwrap();
    let target_glob = format!("ecs:{cluster}/*");
    let aws = AwsConfig {
        endpoint_url: Some(url.clone()),
        wait_timeout: Duration::from_secs(20),
        poll_interval: Duration::from_millis(100),
        ..AwsConfig::default()
    };
    let ecs_exec: Arc<dyn Executor> = Arc::new(EcsExecutor::from_sdk(&sdk, aws));
    let allowlist = Allowlist::parse(&[&target_glob]).unwrap();
    let rails = Guardrails { allowlist: allowlist.clone(), ..Guardrails::default() };
    let executors =
        Executors::from_parts(vec![("ecs".into(), ecs_exec)], &rails, SharedKillSwitch::arc(access.clone()));

    // CPU stays saturated, worse than when detected, after the scale-out.
    let metrics = MemoryMetrics::default();
    let now = SystemClock.now();
    for i in 0..50u64 {
        metrics.push("orders", "cpu_pct", now.saturating_add(Duration::from_millis(100 * i)), 99.0);
    }
    let workflow = Arc::new(Workflow {
        config: WorkflowConfig {
            policy: PolicyConfig { allowlist: allowlist.clone(), ..PolicyConfig::default() },
            verify_window: Duration::from_secs(3),
            verify_interval: Duration::from_millis(100),
            ..WorkflowConfig::default()
        },
        runbooks: runbook::Runbooks::shipped().unwrap(),
        services: orders_on(&cluster),
        metrics: Arc::new(metrics),
        deployments: Arc::new(MemoryDeployments::default()),
        memory: Arc::new(nodes::memory::NoMemory::default()),
        alerts: Arc::new(nodes::ports::NoAlertRules),
        cluster: Arc::new(nodes::ports::NoCluster),
        executor: Arc::new(executors),
        safety: Arc::new(LedgerFacts {
            engine: engine::Engine::new(store.clone(), Registry::new(), Arc::new(SystemClock)),
            kill_switch: SharedKillSwitch::arc(access),
            policy: PolicyConfig { allowlist, ..PolicyConfig::default() },
        }),
    });
    let mut registry = Registry::new();
    registry.register(workflow::graph(workflow));
    let engine = engine::Engine::new(store, registry, Arc::new(SystemClock));
    let worker = BackgroundWorker::start(&engine, fast_worker("remediation"));

    let detection = cpu_saturation(&cluster, now);
    let run = engine.start(workflow::GRAPH, &Incident::new(detection)).await.unwrap();
    let done = finished(&engine, run).await;
    worker.stop().await;

    let history = engine.detail(run).await.unwrap().history;
    let path: Vec<&str> = history.iter().map(|c| c.node.as_str()).collect();
    let at = |node: &str| path.iter().position(|n| *n == node).unwrap_or_else(|| panic!("{node} not in {path:?}"));
    assert!(at("execute") < at("verify") && at("verify") < at("rollback"), "{path:?}");
    let s: Incident = serde_json::from_value(done.state).unwrap();
    assert_eq!(s.actions.len(), 1);
    assert_eq!(s.actions[0].pre_state["desired_count"], 3);
    assert_eq!(s.actions[0].outcome["after"]["desired_count"], 6, "scaled ×2 in moto: {:?}", s.actions[0].outcome);
    assert_eq!(s.rollbacks, 1);
    assert_eq!(desired(&ecs, &cluster).await, 3, "the desired count ends where it started");
    let effects = engine.detail(run).await.unwrap().effects;
    let keys: Vec<&str> = effects.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["capture-0", "apply-0", "restore-0"]);
}

/// `sentinel serve` with an executors file whose `dry_run` is true, acting on
/// ECS in moto: the auto-approved scale-out ends as a dry run (planned from
/// the real service, nothing changed), and the policy's facts count nothing
/// of it: no executor outcome for the breaker, no auto-approval for the rate
/// limits, no action on the service, no failed attempt for the loop guard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executors_file_in_dry_run_ends_the_incident_as_a_dry_run_and_counts_nothing() {
    use nodes::workflow::SafetyFacts;
    let url = moto();
    let (_sdk, ecs, cluster) = ecs_service(&url).await;
    let db = TestDb::new(Backend::Postgres).await;
    let store = db.store().await;
    let dir = std::env::temp_dir().join(format!("sentinel-dry-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("sentinel.yaml");
    // `orders` runs in the moto cluster by the catalogue; the detection's
    // labels name another cluster, which must not matter.
    std::fs::write(
        &file,
        format!(
            "services:\n  - name: orders\n    tier: 1\n    runs_on: {{ ecs: {{ cluster: {cluster} }} }}\n\
             policy: {{ auto_approve: [\"ecs:{cluster}/*\"] }}\n\
             executors:\n  dry_run: true\n  allowlist: [\"ecs:{cluster}/*\"]\n\
             \x20 aws: {{ region: us-east-1, endpoint_url: \"{url}\", wait_timeout: 20s }}\n"
        ),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut serve = crate::support::serve_command(port, &file, &db.url);
    serve.env("AWS_ACCESS_KEY_ID", "testing").env("AWS_SECRET_ACCESS_KEY", "testing").env("SENTINEL_LOG", "warn");
    let mut serve = serve.spawn().expect("spawn sentinel serve");
    // This engine only starts the run and reads it: `serve` runs it.
    let engine = crate::support::incidents(&store, WorkflowConfig::default(), true).await.engine;
    let run = engine.start(workflow::GRAPH, &Incident::new(cpu_saturation(&cluster, SystemClock.now()))).await.unwrap();
    let done = engine::testing::wait_until(&engine, run, Duration::from_secs(60), |r| r.status.is_finished()).await;
    let _ = serve.kill();
    let _ = serve.wait();
    let _ = std::fs::remove_dir_all(&dir);

    assert_eq!(done.status, engine::RunStatus::Completed, "{:?}", done.error);
    let s: Incident = serde_json::from_value(done.state).unwrap();
    let path: Vec<String> = engine.detail(run).await.unwrap().history.iter().map(|c| c.node.clone()).collect();
    assert_eq!(path, ["detect", "analyze", "plan", "await_approval", "execute", "closed"], "no verify, no rollback");
    assert_eq!((s.decisions.len(), s.decisions[0].by.as_str()), (1, "policy"), "auto-approved by the policy");
    assert_eq!(s.actions.len(), 1);
    let a = &s.actions[0];
    assert!(a.dry_run, "{a:?}");
    assert_eq!((a.action.action.executor.as_str(), a.action.action.action.as_str()), ("ecs", "scale_service"));
    assert_eq!(a.pre_state["desired_count"], 3, "the pre-state was read from moto");
    assert_eq!(a.outcome["dry_run"], true);
    assert_eq!(a.outcome["after"]["desired_count"], 6, "the plan says what would change: {:?}", a.outcome);
    assert_eq!(a.action.action.target, format!("ecs:{cluster}/orders"), "the catalogue's cluster, not the label's");
    assert_eq!(s.severity, Some(nodes::incident::Severity::Sev1), "tier 1 from the catalogue");
    assert!(s.outcome.as_deref().unwrap().starts_with("dry run: scale_service on ecs:"), "{:?}", s.outcome);
    assert_eq!(desired(&ecs, &cluster).await, 3, "nothing changed in ECS");

    let switches = Access::new(&store, Arc::new(SystemClock)).await.unwrap();
    let facts = LedgerFacts {
        engine: engine.clone(),
        kill_switch: SharedKillSwitch::arc(switches),
        policy: Default::default(),
    };
    let f = facts.facts(&s.plan[0], "orders", SystemClock.now()).await.unwrap();
    assert!(f.outcomes.is_empty(), "the breaker counts no dry run: {:?}", f.outcomes);
    assert!(f.auto_approvals.is_empty(), "the rate limits count no dry run: {:?}", f.auto_approvals);
    assert!(f.failed_attempts.is_empty(), "the loop guard counts no dry run: {:?}", f.failed_attempts);
    assert_eq!(f.last_action_on_service, None, "a dry run starts no cooldown");
}
