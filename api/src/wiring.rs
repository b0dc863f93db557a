//! Ports wired for a standalone `sentinel serve`/`worker`: metrics and
//! deployments come from the telemetry store (ClickHouse, or the embedded
//! memory store); actions go through the executors of
//! `SENTINEL_EXECUTORS_FILE`, or, without it, are dry runs through the mock
//! remediator (recorded, not done).

use std::sync::Arc;
use std::time::Duration;

use engine::{Engine, Registry, Store, SystemClock};
use nodes::analyze::ServiceGraph;
use nodes::ports::{MockRemediator, NoIndex, Remediator};
use nodes::runbook;
use nodes::workflow::{Workflow, WorkflowConfig};

use crate::access::Access;
use telemetry::store::StorePorts;

use crate::facts::RunHistoryFacts;

/// How actions are carried out: recorded only, or through live executors.
pub enum Acting {
    DryRun,
    Live { remediator: Arc<dyn Remediator>, auto_approve: Vec<String> },
}

pub fn standalone_workflow(store: &Store, switches: Access, telemetry: StorePorts, acting: Acting) -> Arc<Workflow> {
    let (config, remediator): (WorkflowConfig, Arc<dyn Remediator>) = match acting {
        Acting::DryRun => {
            (WorkflowConfig { dry_run: true, ..WorkflowConfig::default() }, Arc::new(MockRemediator::default()))
        }
        Acting::Live { remediator, auto_approve } => {
            let mut config = WorkflowConfig::default();
            config.policy.allowlist = auto_approve;
            (config, remediator)
        }
    };
    Arc::new(Workflow {
        config,
        // The built-in runbooks are checked by the tests; a broken one is a build defect.
        runbooks: runbook::shipped().unwrap_or_else(|e| panic!("built-in runbooks: {e}")),
        services: ServiceGraph::default(),
        metrics: Arc::new(telemetry.clone()),
        deployments: Arc::new(telemetry),
        index: Arc::new(NoIndex),
        remediator,
        safety: Arc::new(RunHistoryFacts {
            engine: Engine::new(store.clone(), Registry::new(), Arc::new(SystemClock)),
            switches,
            horizon: Duration::from_secs(6 * 3600),
        }),
    })
}
