//! `sentinel bench incident`: the incident graph end to end, detection →
//! resolved, on the mock backend. Every incident goes through intake, analyze,
//! plan, the policy gate (which auto-approves), execute (the mock acts and the
//! metric recovers) and verify (one reading), with every checkpoint, ledger
//! fact and target hold written as in production.
//!
//! PostgreSQL runs use a scratch database created on the `DATABASE_URL`
//! server and dropped afterwards, so a real deployment's incidents are never
//! touched and a second run starts from the same place.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use engine::{Clock, Engine, Registry, RunFilter, RunId, RunStatus, SystemClock, Timestamp};
use executors::mock::MockExecutor;
use executors::{Action, Allowlist, Executors, ExecutorsConfig, Guardrails};
use nodes::incident::{Detection, Source};
use nodes::intake::Intake;
use nodes::policy::PolicyConfig;
use nodes::ports::{MemoryDeployments, MemoryMetrics};
use nodes::verify::VerifyConfig;
use nodes::workflow::{self, Incident, Workflow, WorkflowConfig};
use serde::Serialize;
use sqlx::Connection as _;
use tokio_util::sync::CancellationToken;

use super::{bench_worker, connect, percentile_ms as percentile};
use api::access::Access;
use api::ingest::IntakeSink;
use api::remediate::SharedKillSwitch;
use nodes::policy::ledger::LedgerFacts;

#[derive(Clone, Debug)]
pub struct IncidentBench {
    /// `sqlite://…`, or a PostgreSQL server URL (a scratch database is made on it).
    pub url: String,
    pub incidents: usize,
    /// Detections opened per second.
    pub rate: f64,
    pub workers: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct IncidentFigures {
    pub backend: String,
    pub incidents: usize,
    pub rate: f64,
    pub workers: usize,
    /// Incidents resolved per second over the whole run.
    pub resolved_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Checkpoints per incident (the same for every incident, checked).
    pub steps: i64,
    /// Where the time goes, per step in path order: the median time from the
    /// previous checkpoint (or the detection) until the step started, and
    /// the median time the step ran.
    pub path: Vec<StepFigures>,
}

#[derive(Clone, Debug, Serialize)]
pub struct StepFigures {
    pub node: String,
    pub waited_p50_ms: f64,
    pub ran_p50_ms: f64,
}

/// A database of its own on a PostgreSQL server, dropped with [`Scratch::drop_now`].
struct Scratch {
    server: String,
    name: String,
    url: String,
}

impl Scratch {
    async fn create(server: &str) -> anyhow::Result<Scratch> {
        let name = format!("sentinel_bench_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(server).await.context("connecting to DATABASE_URL")?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .context("creating a scratch database")?;
        let (base, query) = match server.split_once('?') {
            Some((b, q)) => (b, format!("?{q}")),
            None => (server, String::new()),
        };
        // postgres://user@host:port/db → the same server, the scratch database.
        let prefix = match base.rfind('/') {
            Some(i) if base[..i].contains("://") && !base[..i].ends_with('/') => &base[..i],
            _ => base,
        };
        Ok(Scratch { server: server.to_owned(), url: format!("{prefix}/{name}{query}"), name })
    }

    async fn drop_now(self) -> anyhow::Result<()> {
        let mut conn = sqlx::PgConnection::connect(&self.server).await?;
        sqlx::query(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)).execute(&mut conn).await?;
        Ok(())
    }
}

fn detection(i: usize, at: Timestamp) -> Detection {
    Detection {
        service: format!("svc-{i:05}"),
        anomaly_type: "error_rate_spike".into(),
        metric: "error_rate".into(),
        observed: 20.0,
        baseline_mean: 1.0,
        baseline_stddev: 0.5,
        started_at: at,
        source: Source::Detector { detector: "bench".into(), score: 1.0, reason: "bench incident".into() },
        labels: [("namespace".to_owned(), "prod".to_owned())].into_iter().collect(),
        annotations: Default::default(),
    }
}

/// The production workflow with the mock backend acting live: each restart
/// brings its service's metric back, so the first verification reading passes.
async fn workflow(store: &engine::Store) -> anyhow::Result<Workflow> {
    let access = Access::new(store, Arc::new(SystemClock)).await.context("API migrations")?;
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
    let rails =
        Guardrails { allowlist: Allowlist::parse(&["*"]).map_err(anyhow::Error::msg)?, ..Guardrails::default() };
    let executors =
        Executors::build(&ExecutorsConfig::mock_for_every_kind(mock, rails), SharedKillSwitch::arc(access.clone()))
            .await?;
    let policy = PolicyConfig {
        allowlist: Allowlist::parse(&["kubernetes:prod/*"]).map_err(anyhow::Error::msg)?,
        max_auto_per_minute: u32::MAX,
        max_auto_per_hour: u32::MAX,
        ..PolicyConfig::default()
    };
    let config = WorkflowConfig {
        policy: policy.clone(),
        verify: VerifyConfig { consecutive: 1, ..VerifyConfig::default() },
        verify_window: Duration::from_secs(60),
        verify_interval: Duration::from_millis(100),
        ..WorkflowConfig::default()
    };
    Ok(Workflow {
        config,
        runbooks: nodes::runbook::Runbooks::shipped().map_err(|e| anyhow::anyhow!("built-in runbooks: {e}"))?,
        services: nodes::catalog::Catalog::every_service_in("prod"),
        metrics: Arc::new(metrics),
        deployments: Arc::new(MemoryDeployments::default()),
        memory: Arc::new(nodes::memory::NoMemory::default()),
        alerts: Arc::new(nodes::ports::NoAlertRules),
        cluster: Arc::new(nodes::ports::NoCluster),
        executor: Arc::new(executors),
        safety: Arc::new(LedgerFacts {
            engine: Engine::new(store.clone(), Registry::new(), Arc::new(SystemClock)),
            kill_switch: SharedKillSwitch::arc(access),
            policy,
        }),
    })
}

pub async fn run_incident_bench(b: &IncidentBench) -> anyhow::Result<IncidentFigures> {
    anyhow::ensure!(b.incidents > 0 && b.rate > 0.0 && b.workers > 0, "incidents, rate and workers must be positive");
    let (backend, scratch) =
        if b.url.starts_with("sqlite") { ("sqlite", None) } else { ("postgres", Some(Scratch::create(&b.url).await?)) };
    let url = scratch.as_ref().map_or(b.url.clone(), |s| s.url.clone());
    let measured = measure(b, backend, &url).await;
    if let Some(s) = scratch {
        s.drop_now().await.context("dropping the scratch database")?;
    }
    measured
}

async fn measure(b: &IncidentBench, backend: &str, url: &str) -> anyhow::Result<IncidentFigures> {
    let store = connect(url).await?;
    let mut registry = Registry::new();
    registry.register(workflow::graph(Arc::new(workflow(&store).await?)));
    let engine = Engine::new(store.clone(), registry, Arc::new(SystemClock));
    let any = RunFilter { graph: Some(workflow::GRAPH.into()), limit: Some(1), ..Default::default() };
    anyhow::ensure!(engine.list(&any).await?.is_empty(), "the benchmark database already holds incidents");
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn({
        let (engine, shutdown, config) = (engine.clone(), shutdown.clone(), bench_worker("bench-incident", b.workers));
        async move { engine.work(config, shutdown).await }
    });
    let sink = IntakeSink::new(engine.clone());
    let started = Instant::now();
    let mut opened: Vec<(RunId, Timestamp)> = Vec::with_capacity(b.incidents);
    for i in 0..b.incidents {
        let due = started + Duration::from_secs_f64(i as f64 / b.rate);
        tokio::time::sleep_until(due.into()).await;
        let at = SystemClock.now();
        match sink.open(&detection(i, at)).await? {
            Intake::Opened(run) => opened.push((run, at)),
            other => anyhow::bail!("detection {i} did not open an incident: {other:?}"),
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120 + b.incidents as u64 / 10);
    let mut latencies = Vec::with_capacity(opened.len());
    let mut steps = None;
    for (run, at) in &opened {
        let r = loop {
            let r = engine.run(*run).await?;
            if r.status.is_finished() {
                break r;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "incident {run} still {} at {} after the deadline",
                r.status,
                r.node
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let state: Incident = serde_json::from_value(r.state.clone())?;
        anyhow::ensure!(
            r.status == RunStatus::Completed && state.outcome.as_deref() == Some("resolved"),
            "incident {run} ended {} with outcome {:?}",
            r.status,
            state.outcome
        );
        anyhow::ensure!(
            steps.is_none_or(|s| s == r.step),
            "incidents took different paths ({:?} and {} steps)",
            steps,
            r.step
        );
        steps = Some(r.step);
        let finished = r.finished_at.context("a finished run without finished_at")?;
        latencies.push(Duration::from_millis(u64::try_from(finished.0 - at.0).unwrap_or(0)));
    }
    let elapsed = started.elapsed().as_secs_f64();
    shutdown.cancel();
    worker.await?;
    latencies.sort();
    let mut path: Vec<(String, Vec<Duration>, Vec<Duration>)> = Vec::new();
    for (run, at) in &opened {
        let mut previous = *at;
        for (i, c) in engine.detail(*run).await?.history.iter().enumerate() {
            if path.len() <= i {
                path.push((c.node.clone(), Vec::new(), Vec::new()));
            }
            path[i].1.push(Duration::from_millis(c.started_at.0.saturating_sub(previous.0).max(0) as u64));
            path[i].2.push(Duration::from_millis(c.finished_at.0.saturating_sub(c.started_at.0).max(0) as u64));
            previous = c.finished_at;
        }
    }
    let path = path
        .into_iter()
        .map(|(node, mut waited, mut ran)| {
            waited.sort();
            ran.sort();
            StepFigures { node, waited_p50_ms: percentile(&waited, 0.5), ran_p50_ms: percentile(&ran, 0.5) }
        })
        .collect();
    Ok(IncidentFigures {
        backend: backend.to_owned(),
        incidents: b.incidents,
        rate: b.rate,
        workers: b.workers,
        resolved_per_sec: b.incidents as f64 / elapsed,
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
        max_ms: latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
        steps: steps.unwrap_or(0),
        path,
    })
}
