//! Ports wired for a standalone `sentinel serve`/`worker`: metrics and
//! deployments come from the telemetry store (ClickHouse, or the embedded
//! memory store); actions go through the executors' factory, built from
//! `SENTINEL_EXECUTORS_FILE`, or, without it, from the mock backend in
//! dry-run mode (recorded, never done).

use std::sync::Arc;
use std::time::Duration;

use engine::{Engine, Registry, Store, SystemClock};
use executors::{Allowlist, Executor, Executors, ExecutorsConfig, Guardrails, KillSwitch};
use nodes::analyze::ServiceGraph;
use nodes::ports::NoIndex;
use nodes::runbook;
use nodes::workflow::{Workflow, WorkflowConfig};

use crate::access::Access;
use crate::config::ExecutorsFile;
use telemetry::store::StorePorts;

use crate::facts::LedgerFacts;

/// How actions are carried out, and what the policy may approve alone.
pub struct Acting {
    pub executor: Arc<dyn Executor>,
    pub auto_approve: Allowlist,
    /// The policy's cooldown per service, when the executors file sets one.
    pub service_cooldown: Option<Duration>,
    /// The fleet-wide cooldown per target, when the executors file sets one.
    pub target_cooldown: Option<Duration>,
    /// The policy's auto-approval limits (per minute, per hour), when set.
    pub auto_limits: (Option<u32>, Option<u32>),
}

impl Acting {
    /// From the executors file, or dry runs through the mock backend without one.
    pub async fn build(file: Option<&ExecutorsFile>, kill_switch: Arc<dyn KillSwitch>) -> anyhow::Result<Acting> {
        let Some(file) = file else {
            let rails = Guardrails {
                allowlist: Allowlist::parse(&["*"]).map_err(anyhow::Error::msg)?,
                dry_run: true,
                ..Guardrails::default()
            };
            let config = ExecutorsConfig::mock_for_every_kind(Default::default(), rails);
            let executors = Executors::build(&config, kill_switch).await?;
            return Ok(Acting {
                executor: Arc::new(executors),
                auto_approve: Allowlist::default(),
                service_cooldown: None,
                target_cooldown: None,
                auto_limits: (None, None),
            });
        };
        let executors = Executors::build(&file.executors_config(), kill_switch).await?;
        tracing::info!(kinds = ?executors.kinds(), dry_run = file.dry_run, "executors ready");
        Ok(Acting {
            executor: Arc::new(executors),
            auto_approve: file.auto_approve.clone(),
            service_cooldown: file.cooldown_secs.map(Duration::from_secs),
            target_cooldown: file.target_cooldown_secs.map(Duration::from_secs),
            auto_limits: (file.max_auto_per_minute, file.max_auto_per_hour),
        })
    }
}

pub fn standalone_workflow(store: &Store, switches: Access, telemetry: StorePorts, acting: Acting) -> Arc<Workflow> {
    let mut config = WorkflowConfig::default();
    config.policy.allowlist = acting.auto_approve;
    if let Some(cooldown) = acting.service_cooldown {
        config.policy.service_cooldown = cooldown;
    }
    if let Some(cooldown) = acting.target_cooldown {
        config.target_cooldown = cooldown;
    }
    if let Some(n) = acting.auto_limits.0 {
        config.policy.max_auto_per_minute = n;
    }
    if let Some(n) = acting.auto_limits.1 {
        config.policy.max_auto_per_hour = n;
    }
    let policy = config.policy.clone();
    Arc::new(Workflow {
        config,
        // The built-in runbooks are checked by the tests; a broken one is a build defect.
        runbooks: runbook::shipped().unwrap_or_else(|e| panic!("built-in runbooks: {e}")),
        services: ServiceGraph::default(),
        metrics: Arc::new(telemetry.clone()),
        deployments: Arc::new(telemetry),
        index: Arc::new(NoIndex),
        executor: acting.executor,
        safety: Arc::new(LedgerFacts {
            engine: Engine::new(store.clone(), Registry::new(), Arc::new(SystemClock)),
            switches,
            policy,
        }),
    })
}
