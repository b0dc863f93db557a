//! The policy's facts, read from the incident runs the engine already keeps:
//! durable, so the breaker, rate limits, cooldowns and the remediation-loop
//! guard survive restarts without tables of their own.

use std::time::Duration;

use async_trait::async_trait;
use engine::{Engine, RunFilter, Timestamp};
use nodes::policy::{Facts, FailedAttempt, Outcome};
use nodes::ports::PortError;
use nodes::runbook::PlannedAction;
use nodes::verify::Verdict;
use nodes::workflow::{self, Incident, SafetyFacts};

use crate::access::Access;

pub struct RunHistoryFacts {
    pub engine: Engine,
    /// Where the kill switch is kept.
    pub switches: Access,
    /// How far back to look: the longest policy window.
    pub horizon: Duration,
}

#[async_trait]
impl SafetyFacts for RunHistoryFacts {
    async fn facts(&self, _: &PlannedAction, service: &str, now: Timestamp) -> Result<Facts, PortError> {
        let runs = self
            .engine
            .list(&RunFilter { graph: Some(workflow::GRAPH.into()), limit: Some(1000), ..Default::default() })
            .await
            .map_err(|e| PortError::Unavailable(e.to_string()))?;
        let since = now.saturating_sub(self.horizon);
        let kill_switch = self.switches.kill_switch().await.map_err(|e| PortError::Unavailable(e.to_string()))?;
        let mut facts = Facts { kill_switch: kill_switch.enabled, ..Facts::default() };
        for run in runs.iter().filter(|r| r.updated_at >= since) {
            let Ok(s) = serde_json::from_value::<Incident>(run.state.clone()) else { continue };
            // A dry run changed nothing: its auto-approval does not count toward the rate limits.
            let dry = |gate: &Option<String>| gate.is_some() && s.actions.iter().any(|a| a.dry_run && &a.gate == gate);
            facts.auto_approvals.extend(s.decisions.iter().filter(|d| d.by == "policy" && !dry(&d.gate)).map(|d| d.at));
            // Each rollback undoes the action before it, in order: action i failed iff
            // i < rollbacks, or the executor itself failed on it.
            let rolled_back = s.rollbacks as usize;
            for (i, a) in s.actions.iter().enumerate() {
                if a.dry_run {
                    continue;
                }
                if s.detection.as_ref().is_some_and(|d| d.service == service) {
                    facts.last_action_on_service = facts.last_action_on_service.max(Some(a.at));
                }
                let failed = i < rolled_back || a.outcome.get("error").is_some();
                let verified = i + 1 == s.actions.len() && matches!(s.verdict, Some(Verdict::Recovered { .. }));
                if failed || verified {
                    facts.outcomes.push(Outcome { at: a.at, succeeded: verified });
                }
                if failed {
                    facts.failed_attempts.push(FailedAttempt {
                        at: a.at,
                        action: a.action.action.action.clone(),
                        target: a.action.action.target.clone(),
                    });
                }
            }
        }
        Ok(facts)
    }
}
