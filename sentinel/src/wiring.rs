//! Ports wired for a standalone `sentinel serve`/`worker`: metrics and
//! deployments come from the telemetry store (ClickHouse, or the embedded
//! memory store), or from a team's Prometheus per the configuration, which
//! also re-evaluates alert rules for verification; actions go through the executors' factory, built from the
//! configuration's `executors`, or, without it, from the mock backend in
//! dry-run mode (recorded, never done).

use std::sync::Arc;

use anyhow::Context as _;

use engine::{Engine, Registry, Store, SystemClock};
use executors::kubernetes::inspect::Inspector;
use executors::ExecError;
use executors::{Allowlist, Executor, Executors, ExecutorsConfig, Guardrails, KillSwitch};
use nodes::catalog::{Catalog, MetricsFrom};
use nodes::memory::{IncidentMemory, MemoryState, NoMemory};
use nodes::ports::{
    AlertRules, Cluster, Deployments, MetricStore, NoAlertRules, NoCluster, NodeReport, PortError, WorkloadReport,
};
use nodes::workflow::Workflow;
use telemetry::prometheus::Prometheus;

use crate::config::{Config, MemorySettings};
use telemetry::store::StorePorts;

use nodes::policy::ledger::LedgerFacts;

/// The executors' factory from the configuration, or dry runs through the
/// mock backend without one.
pub async fn executor(
    config: Option<&ExecutorsConfig>,
    kill_switch: Arc<dyn KillSwitch>,
) -> anyhow::Result<Arc<dyn Executor>> {
    let Some(config) = config else {
        let rails = Guardrails {
            allowlist: Allowlist::parse(&["*"]).map_err(anyhow::Error::msg)?,
            dry_run: true,
            ..Guardrails::default()
        };
        let config = ExecutorsConfig::mock_for_every_kind(Default::default(), rails);
        return Ok(Arc::new(Executors::build(&config, kill_switch).await?));
    };
    let executors = Executors::build(config, kill_switch).await?;
    tracing::info!(kinds = ?executors.kinds(), dry_run = config.guardrails.dry_run, "executors ready");
    Ok(Arc::new(executors))
}

/// Semantic memory as configured: off (saying why) without a model
/// directory; with one, the model loaded and the vector index made ready
/// (a Qdrant server at `QDRANT_URL`, else the embedded engine under the data
/// directory). A model directory that does not load, or an index that
/// refuses, stops the start: memory was asked for.
pub async fn semantic_memory(settings: &MemorySettings) -> anyhow::Result<Arc<dyn IncidentMemory>> {
    let Some(dir) = settings.model_dir.clone() else {
        let off = NoMemory::default();
        tracing::info!(
            "semantic memory: off ({}); run scripts/ensure-model.sh and set SENTINEL_MODEL_DIR to turn it on",
            off.reason
        );
        return Ok(Arc::new(off));
    };
    let embedder = tokio::task::spawn_blocking(move || memory::Embedder::load(&dir))
        .await?
        .context("semantic memory: loading the embedding model")?;
    let inference = embedder.inference();
    let index: Arc<dyn memory::VectorIndex> = match &settings.qdrant_url {
        Some(url) => {
            Arc::new(memory::server::QdrantIndex::new(url, &settings.collection, settings.qdrant_api_key.clone())?)
        }
        None => {
            let dir = settings.index_dir.clone();
            Arc::new(
                tokio::task::spawn_blocking(move || memory::edge::EdgeIndex::open(&dir, memory::DIMENSIONS)).await??,
            )
        }
    };
    let memory = memory::SemanticMemory::new(Arc::new(embedder), index).await.context("semantic memory")?;
    if let MemoryState::On { model, index } = memory.state() {
        tracing::info!(%model, inference, %index, "semantic memory: on");
    }
    Ok(Arc::new(memory))
}

/// Applies the runs' retention to semantic memory, every `every`, until `stop`.
pub async fn prune_memory(
    memory: Arc<dyn IncidentMemory>,
    retention: std::time::Duration,
    every: std::time::Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        let cutoff = engine::Clock::now(&SystemClock).saturating_sub(retention);
        if let Err(e) = memory.prune(cutoff).await {
            tracing::warn!(error = %e, "semantic memory: pruning past retention failed");
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// Where services' metrics are read: Sentinel's own store, or the team's
/// Prometheus where the catalogue (or `metrics_from`) says so.
fn metric_store(telemetry: &StorePorts, prometheus: Option<Arc<Prometheus>>, config: &Config) -> Arc<dyn MetricStore> {
    match prometheus {
        Some(p) => Arc::new(RoutedMetrics {
            sentinel: telemetry.clone(),
            prometheus: p,
            catalog: config.catalog.clone(),
            default: config.metrics_from,
        }),
        None => Arc::new(telemetry.clone()),
    }
}

/// The operator console as `serve` runs it: the metric chart reads where
/// the workflow reads; the breaker is the configured policy's.
pub fn console(
    telemetry: StorePorts,
    config: &Config,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<api::console::Console> {
    let prometheus = match &config.prometheus {
        Some(p) => Some(Arc::new(Prometheus::new(p.clone(), config.catalog.clone()).map_err(anyhow::Error::msg)?)),
        None => None,
    };
    let session_ttl = config.file.server.session_ttl.unwrap_or(api::console::Console::default().session_ttl);
    anyhow::ensure!(session_ttl >= std::time::Duration::from_secs(60), "server.session_ttl must be at least 1m");
    Ok(api::console::Console {
        session_ttl,
        secure_cookies: config.file.server.secure_cookies,
        metrics: Some(metric_store(&telemetry, prometheus, config)),
        policy: config.workflow.policy.clone(),
        stop,
    })
}

/// The incident workflow as `serve` and `worker` run it, from the
/// configuration. With a Kubernetes executor configured, analysis reads the
/// cluster through the same credentials.
pub async fn standalone_workflow(
    store: &Store,
    kill_switch: Arc<dyn KillSwitch>,
    telemetry: StorePorts,
    executor: Arc<dyn Executor>,
    memory: Arc<dyn IncidentMemory>,
    config: &Config,
) -> anyhow::Result<Arc<Workflow>> {
    let policy = config.workflow.policy.clone();
    let prometheus = match &config.prometheus {
        Some(p) => Some(Arc::new(Prometheus::new(p.clone(), config.catalog.clone()).map_err(anyhow::Error::msg)?)),
        None => None,
    };
    let metrics = metric_store(&telemetry, prometheus.clone(), config);
    let deployments: Arc<dyn Deployments> = match &prometheus {
        Some(p) if config.prometheus.as_ref().is_some_and(|c| c.deployments.is_some()) => p.clone(),
        _ => Arc::new(telemetry),
    };
    let alerts: Arc<dyn AlertRules> = match &prometheus {
        Some(p) => p.clone(),
        None => Arc::new(NoAlertRules),
    };
    let cluster: Arc<dyn Cluster> = match config.executors.as_ref().and_then(|x| x.kubernetes.as_ref()) {
        Some(_) => Arc::new(KubeCluster(Inspector::from_environment().await.map_err(anyhow::Error::msg)?)),
        None => Arc::new(NoCluster),
    };
    Ok(Arc::new(Workflow {
        config: config.workflow.clone(),
        runbooks: config.runbooks.clone(),
        services: config.catalog.clone(),
        metrics,
        deployments,
        memory,
        alerts,
        cluster,
        executor,
        safety: Arc::new(LedgerFacts {
            engine: Engine::new(store.clone(), Registry::new(), Arc::new(SystemClock)),
            kill_switch,
            policy,
        }),
    }))
}

/// The cluster's word on workloads and nodes, read through kube.
pub struct KubeCluster(pub Inspector);

fn cluster_err(e: ExecError) -> Result<(), PortError> {
    match e {
        ExecError::NotFound(_) => Ok(()),
        e => Err(PortError::Unavailable(e.to_string())),
    }
}

#[async_trait::async_trait]
impl Cluster for KubeCluster {
    async fn workload(&self, namespace: &str, deployment: &str) -> Result<Option<WorkloadReport>, PortError> {
        match self.0.workload(namespace, deployment).await {
            Ok(r) => Ok(Some(r)),
            Err(e) => cluster_err(e).map(|()| None),
        }
    }

    async fn node(&self, name: &str) -> Result<Option<NodeReport>, PortError> {
        match self.0.node(name).await {
            Ok(r) => Ok(Some(r)),
            Err(e) => cluster_err(e).map(|()| None),
        }
    }
}

/// Each service's metrics from where the catalogue (or the default) says.
struct RoutedMetrics {
    sentinel: StorePorts,
    prometheus: Arc<Prometheus>,
    catalog: Catalog,
    default: MetricsFrom,
}

#[async_trait::async_trait]
impl MetricStore for RoutedMetrics {
    async fn window(
        &self,
        service: &str,
        metric: &str,
        from: engine::Timestamp,
        to: engine::Timestamp,
    ) -> Result<Vec<(engine::Timestamp, f64)>, PortError> {
        match self.catalog.metrics_from(service).unwrap_or(self.default) {
            MetricsFrom::Prometheus => self.prometheus.window(service, metric, from, to).await,
            MetricsFrom::Sentinel => self.sentinel.window(service, metric, from, to).await,
        }
    }
}
