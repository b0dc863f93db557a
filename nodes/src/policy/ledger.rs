//! The policy's facts, read from the engine's ledger: auto-approvals
//! (reserved atomically against the limits when given), actions, executor
//! outcomes and failed attempts, each recorded by the incident workflow in
//! its checkpoint transaction. Indexed by kind, subject and time, so a
//! decision reads only the facts inside the policy's own windows, however
//! many incidents the database holds; durable, so the breaker, rate limits,
//! cooldowns and the loop guard hold across restarts and replicas.

use std::sync::Arc;

use async_trait::async_trait;
use engine::{Engine, Timestamp};
use executors::KillSwitch;

use super::{facts, Facts, FailedAttempt, Outcome, PolicyConfig};
use crate::ports::PortError;
use crate::runbook::PlannedAction;
use crate::workflow::SafetyFacts;

pub struct LedgerFacts {
    pub engine: Engine,
    /// The same switch the executors read, so one switch stops both.
    pub kill_switch: Arc<dyn KillSwitch>,
    /// The windows to read come from here.
    pub policy: PolicyConfig,
}

fn unavailable(e: impl std::fmt::Display) -> PortError {
    PortError::Unavailable(e.to_string())
}

#[async_trait]
impl SafetyFacts for LedgerFacts {
    async fn facts(&self, _: &PlannedAction, service: &str, now: Timestamp) -> Result<Facts, PortError> {
        let store = self.engine.store();
        let since = now.saturating_sub(self.policy.horizon());
        let kill_switch = self.kill_switch.engaged().await.map_err(unavailable)?;
        let auto = store.ledger(facts::AUTO_APPROVAL, None, since).await.map_err(unavailable)?;
        let actions = store.ledger(facts::ACTION, Some(service), since).await.map_err(unavailable)?;
        let outcomes = store.ledger(facts::OUTCOME, None, since).await.map_err(unavailable)?;
        let failures = store.ledger(facts::FAILURE, None, since).await.map_err(unavailable)?;
        let text = |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or_default().to_owned();
        Ok(Facts {
            kill_switch,
            outcomes: outcomes.iter().map(outcome).collect(),
            auto_approvals: auto.iter().map(|f| f.at).collect(),
            last_action_on_service: actions.iter().map(|f| f.at).max(),
            failed_attempts: failures
                .iter()
                .map(|f| FailedAttempt {
                    at: f.at,
                    action: text(&f.payload, "action"),
                    target: text(&f.payload, "target"),
                })
                .collect(),
            // Memory's word, added by the workflow.
            recurring: None,
        })
    }
}

/// The auto-approval breaker as it stands at `now`, from the outcomes in the
/// ledger: what the next proposal would meet.
pub async fn breaker_state(engine: &Engine, policy: &PolicyConfig, now: Timestamp) -> Result<super::Breaker, String> {
    let since = now.saturating_sub(policy.horizon());
    let outcomes = engine.store().ledger(facts::OUTCOME, None, since).await.map_err(|e| e.to_string())?;
    let outcomes: Vec<Outcome> = outcomes.iter().map(outcome).collect();
    Ok(super::breaker(&policy.breaker, &outcomes, now))
}

fn outcome(f: &engine::NewFact) -> Outcome {
    Outcome { at: f.at, succeeded: f.payload.get("succeeded") == Some(&true.into()) }
}
