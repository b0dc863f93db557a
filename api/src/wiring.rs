//! Ports wired for a standalone `sentinel serve`/`worker`: metrics and
//! deployments come from the telemetry store (ClickHouse, or the embedded
//! memory store); actions go through the executors' factory, built from the
//! configuration's `executors`, or, without it, from the mock backend in
//! dry-run mode (recorded, never done).

use std::sync::Arc;

use engine::{Engine, Registry, Store, SystemClock};
use executors::{Allowlist, Executor, Executors, ExecutorsConfig, Guardrails, KillSwitch};
use nodes::ports::NoIndex;
use nodes::workflow::Workflow;

use crate::access::Access;
use crate::config::Config;
use telemetry::store::StorePorts;

use crate::facts::LedgerFacts;

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

/// The incident workflow as `serve` and `worker` run it, from the configuration.
pub fn standalone_workflow(
    store: &Store,
    switches: Access,
    telemetry: StorePorts,
    executor: Arc<dyn Executor>,
    config: &Config,
) -> Arc<Workflow> {
    let policy = config.workflow.policy.clone();
    Arc::new(Workflow {
        config: config.workflow.clone(),
        runbooks: config.runbooks.clone(),
        services: config.catalog.clone(),
        metrics: Arc::new(telemetry.clone()),
        deployments: Arc::new(telemetry),
        index: Arc::new(NoIndex),
        executor,
        safety: Arc::new(LedgerFacts {
            engine: Engine::new(store.clone(), Registry::new(), Arc::new(SystemClock)),
            switches,
            policy,
        }),
    })
}
