//! Databases and worker processes for the process-level tests.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use api::access::{Access, Role};
use api::security::{RateLimit, Security};
use api::server::{router, AppState};
use engine::{Engine, RunId, Store, StoreConfig, SystemClock};

pub use engine::testing::{admin_url, create_database as fresh_database};

pub async fn engine(url: &str) -> Engine {
    let store = Store::connect(&StoreConfig::new(url)).await.expect("connect and migrate");
    Engine::new(store, lab::bench::registry(None), Arc::new(SystemClock))
}

/// A `sentinel worker` process; killed with SIGKILL when dropped.
pub struct WorkerProcess(Child);

impl WorkerProcess {
    pub fn spawn(url: &str, id: &str, concurrency: usize, lease_ms: u64) -> WorkerProcess {
        let child = Command::new(env!("CARGO_BIN_EXE_sentinel"))
            .args(["bench", "worker", "--id", id, "--poll-ms", "50"])
            .args(["--concurrency", &concurrency.to_string(), "--lease-ms", &lease_ms.to_string()])
            .env("DATABASE_URL", url)
            .env("SENTINEL_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn sentinel worker");
        WorkerProcess(child)
    }

    /// SIGKILL: no shutdown hook, no released lease, no last checkpoint.
    pub fn kill(mut self) {
        self.0.kill().expect("SIGKILL the worker");
        self.0.wait().expect("reap the worker");
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn witness_path(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("sentinel-witness-{tag}-{}", uuid::Uuid::new_v4().simple()))
}

/// How many times each line occurs in the witness file.
pub fn witness_counts(path: &Path) -> HashMap<String, usize> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut counts = HashMap::new();
    for line in text.lines() {
        *counts.entry(line.to_owned()).or_insert(0) += 1;
    }
    counts
}

pub async fn eventually<F, Fut>(what: &str, within: Duration, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    assert!(reached(within, check).await, "timed out after {within:?} waiting for {what}");
}

/// Whether `check` holds within `within` (for a caller that fails with more to say).
pub async fn reached<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !check().await {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

/// `sentinel serve` on `port` with configuration `config` and database
/// `database_url`, and none of the outside world's services from the
/// environment: what a test does not give it, it does not have.
pub fn serve_command(port: u16, config: &Path, database_url: &str) -> Command {
    let mut serve = Command::new(env!("CARGO_BIN_EXE_sentinel"));
    serve
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--config"])
        .arg(config)
        .env("DATABASE_URL", database_url)
        .stdin(Stdio::null());
    for var in [
        "KAFKA_BROKERS",
        "CLICKHOUSE_URL",
        "SLACK_BOT_TOKEN",
        "SLACK_SIGNING_SECRET",
        "PAGERDUTY_ROUTING_KEY",
        "SENTINEL_CONFIG",
        "PROMETHEUS_URL",
    ] {
        serve.env_remove(var);
    }
    serve
}

/// Asserts the run's history is steps 0..n with no gap and no duplicate.
pub async fn assert_history_contiguous(engine: &Engine, run: RunId) -> Vec<engine::Checkpoint> {
    let history = engine.detail(run).await.expect("run detail").history;
    let steps: Vec<i64> = history.iter().map(|c| c.step).collect();
    assert_eq!(steps, (0..history.len() as i64).collect::<Vec<_>>(), "run {run}: history has a gap or duplicate");
    history
}

/// One API key of each role, in the engine's database.
pub struct Keys {
    pub viewer: String,
    pub operator: String,
    pub admin: String,
}

/// The API's gatekeeping over the engine's database, with a key per role.
pub async fn security(engine: &Engine, limit: RateLimit) -> (Security, Keys) {
    let access = Access::new(engine.store(), Arc::new(SystemClock)).await.expect("API migrations");
    let mut secrets = Vec::new();
    for role in [Role::Viewer, Role::Operator, Role::Admin] {
        secrets.push(access.create_key(&format!("{role}-key"), role, "test").await.expect("create key").secret);
    }
    let admin = secrets.pop().unwrap();
    let operator = secrets.pop().unwrap();
    let viewer = secrets.pop().unwrap();
    (Security::new(access, limit), Keys { viewer, operator, admin })
}

/// The API router with a key per role and no Slack.
pub async fn app(engine: &Engine) -> (axum::Router, Security, Keys) {
    let (security, keys) = security(engine, RateLimit::default()).await;
    let state = AppState {
        engine: engine.clone(),
        security: security.clone(),
        slack: None,
        telemetry: None,
        memory: std::sync::Arc::new(nodes::memory::NoMemory::default()),
    };
    (router(state), security, keys)
}

/// The incident workflow as `serve` wires it, with the factory's mock backend
/// behind the guardrails for every executor kind (allowlist `*`, the API's
/// kill switch) and the policy's facts read from the runs.
pub struct Incidents {
    pub engine: Engine,
    pub mock: executors::mock::MockExecutor,
    pub metrics: nodes::ports::MemoryMetrics,
    pub deployments: nodes::ports::MemoryDeployments,
    pub access: Access,
}

pub async fn incidents(store: &engine::Store, config: nodes::workflow::WorkflowConfig, dry_run: bool) -> Incidents {
    incidents_reading(store, config, dry_run, None).await
}

/// [`incidents`] whose metrics come from `metrics` (a real store) instead of memory.
pub async fn incidents_reading(
    store: &engine::Store,
    config: nodes::workflow::WorkflowConfig,
    dry_run: bool,
    metrics_port: Option<Arc<dyn nodes::ports::MetricStore>>,
) -> Incidents {
    incidents_with(store, config, dry_run, metrics_port, Arc::new(nodes::ports::NoCluster)).await
}

/// [`incidents_reading`] with the cluster's word from `cluster`.
pub async fn incidents_with(
    store: &engine::Store,
    config: nodes::workflow::WorkflowConfig,
    dry_run: bool,
    metrics_port: Option<Arc<dyn nodes::ports::MetricStore>>,
    cluster: Arc<dyn nodes::ports::Cluster>,
) -> Incidents {
    use executors::{Allowlist, Executors, ExecutorsConfig, Guardrails};
    let access = Access::new(store, Arc::new(SystemClock)).await.expect("API migrations");
    let mock = executors::mock::MockExecutor::default();
    let executors = Executors::build(
        &ExecutorsConfig::mock_for_every_kind(
            mock.clone(),
            Guardrails { allowlist: Allowlist::parse(&["*"]).unwrap(), dry_run, ..Guardrails::default() },
        ),
        api::remediate::SharedKillSwitch::arc(access.clone()),
    )
    .await
    .expect("mock executors");
    let metrics = nodes::ports::MemoryMetrics::default();
    let deployments = nodes::ports::MemoryDeployments::default();
    let policy = config.policy.clone();
    let workflow = Arc::new(nodes::workflow::Workflow {
        config,
        runbooks: nodes::runbook::Runbooks::shipped().expect("runbooks"),
        services: nodes::catalog::Catalog::every_service_in("prod"),
        metrics: metrics_port.unwrap_or_else(|| Arc::new(metrics.clone())),
        deployments: Arc::new(deployments.clone()),
        memory: Arc::new(nodes::memory::NoMemory::default()),
        alerts: Arc::new(nodes::ports::NoAlertRules),
        cluster,
        executor: Arc::new(executors),
        safety: Arc::new(nodes::policy::ledger::LedgerFacts {
            engine: Engine::new(store.clone(), engine::Registry::new(), Arc::new(SystemClock)),
            kill_switch: api::remediate::SharedKillSwitch::arc(access.clone()),
            policy,
        }),
    });
    let mut registry = engine::Registry::new();
    registry.register(nodes::workflow::graph(workflow));
    Incidents {
        engine: Engine::new(store.clone(), registry, Arc::new(SystemClock)),
        mock,
        metrics,
        deployments,
        access,
    }
}

/// `KAFKA_BROKERS` (the scripts' local default), after checking a broker answers there.
pub async fn kafka_brokers() -> String {
    let brokers = std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    assert!(
        tokio::net::TcpStream::connect(brokers.split(',').next().unwrap()).await.is_ok(),
        "no Kafka broker answers at {brokers}; run scripts/ensure-tansu.sh"
    );
    brokers
}
