//! Ports wired for a standalone `sentinel serve`/`worker`: metrics and
//! deployments come from the telemetry store (ClickHouse, or the embedded
//! memory store); every action is a dry run through the mock remediator
//! (recorded, not done) until live executors are configured.

use std::sync::Arc;
use std::time::Duration;

use engine::{Engine, Registry, Store, SystemClock};
use nodes::analyze::ServiceGraph;
use nodes::ports::{MockRemediator, NoIndex};
use nodes::runbook;
use nodes::workflow::{Workflow, WorkflowConfig};

use crate::access::Access;
use telemetry::store::StorePorts;

use crate::facts::RunHistoryFacts;

pub fn standalone_workflow(store: &Store, switches: Access, telemetry: StorePorts) -> Arc<Workflow> {
    Arc::new(Workflow {
        config: WorkflowConfig { dry_run: true, ..WorkflowConfig::default() },
        // The built-in runbooks are checked by the tests; a broken one is a build defect.
        runbooks: runbook::shipped().unwrap_or_else(|e| panic!("built-in runbooks: {e}")),
        services: ServiceGraph::default(),
        metrics: Arc::new(telemetry.clone()),
        deployments: Arc::new(telemetry),
        index: Arc::new(NoIndex),
        remediator: Arc::new(MockRemediator::default()),
        safety: Arc::new(RunHistoryFacts {
            engine: Engine::new(store.clone(), Registry::new(), Arc::new(SystemClock)),
            switches,
            horizon: Duration::from_secs(6 * 3600),
        }),
    })
}
