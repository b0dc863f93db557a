//! The bridge between the workflow's `Remediator` port and the executors:
//! `nodes` and `executors` know nothing of each other; this adapter turns a
//! planned action into an executor action and executor errors into port
//! errors (a guardrail refusal stays a refusal, recorded on the run).

use std::sync::Arc;

use async_trait::async_trait;
use executors::{Action, ExecError, Executors, KillSwitch};
use nodes::ports::{PortError, Remediator};
use nodes::runbook::PlannedAction;
use serde_json::Value;

use crate::access::Access;

pub struct ExecutorRemediator {
    pub executors: Executors,
}

fn action(a: &PlannedAction) -> Action {
    Action {
        executor: a.executor.clone(),
        action: a.action.clone(),
        target: a.target.clone(),
        params: a.params.clone(),
    }
}

fn port(e: ExecError) -> PortError {
    match e {
        e @ (ExecError::Refused { .. }
        | ExecError::BadAction(_)
        | ExecError::Unsupported { .. }
        | ExecError::NoExecutor(_)
        | ExecError::NotFound(_)) => PortError::Refused(e.to_string()),
        // Timeouts and backend failures may pass: the engine retries the step.
        e => PortError::Unavailable(e.to_string()),
    }
}

#[async_trait]
impl Remediator for ExecutorRemediator {
    async fn capture(&self, a: &PlannedAction) -> Result<Value, PortError> {
        self.executors.describe(&action(a)).await.map_err(port)
    }

    async fn apply(&self, a: &PlannedAction, pre_state: &Value, key: &str) -> Result<Value, PortError> {
        let outcome = self.executors.execute(&action(a), pre_state, key).await.map_err(port)?;
        serde_json::to_value(outcome).map_err(|e| PortError::Unavailable(e.to_string()))
    }

    async fn restore(&self, a: &PlannedAction, pre_state: &Value, key: &str) -> Result<(), PortError> {
        self.executors.rollback(&action(a), pre_state, key).await.map_err(port)?;
        Ok(())
    }
}

/// The executors read the same kill switch as the policy: the API's setting.
pub struct SharedKillSwitch(pub Access);

#[async_trait]
impl KillSwitch for SharedKillSwitch {
    async fn engaged(&self) -> Result<bool, ExecError> {
        self.0
            .kill_switch()
            .await
            .map(|k| k.enabled)
            .map_err(|e| ExecError::Backend(format!("reading the kill switch: {e}")))
    }
}

impl SharedKillSwitch {
    pub fn arc(access: Access) -> Arc<dyn KillSwitch> {
        Arc::new(SharedKillSwitch(access))
    }
}
