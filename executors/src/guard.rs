//! Guardrails enforced inside the executor layer, whoever calls: the target
//! allowlist, the kill switch, the blast-radius limits and dry-run mode. Each
//! refusal is [`ExecError::Refused`] naming its guard; nothing is done when
//! one refuses.
//!
//! There is no cooldown here: the cooldown per service is the auto-approval
//! policy's, read from durable facts (`nodes::policy`), so it holds across
//! restarts and replicas; a human may still approve an action inside it.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use crate::{Action, Allowlist, ExecError, Executor, Outcome};

/// Whether the operators stopped all automation. Read at every execution.
#[async_trait]
pub trait KillSwitch: Send + Sync {
    async fn engaged(&self) -> Result<bool, ExecError>;
}

/// A kill switch that is never on (tests, tools).
pub struct NoKillSwitch;

#[async_trait]
impl KillSwitch for NoKillSwitch {
    async fn engaged(&self) -> Result<bool, ExecError> {
        Ok(false)
    }
}

#[derive(Clone, Debug)]
pub struct Guardrails {
    /// Targets that may be acted on, as globs over `KIND:SCOPE/NAME`
    /// (`ecs:prod/*`, `kubernetes:*/checkout`). Empty: nothing may be.
    pub allowlist: Allowlist,
    /// Record and describe, never mutate: the one dry-run switch. An execute
    /// answers an [`Outcome`] with `dry_run` set.
    pub dry_run: bool,
    /// Never scale to more than this many times the current count.
    pub max_scale_factor: f64,
    /// Never drain a node while this many others are cordoned.
    pub max_nodes_cordoned: u64,
}

impl Default for Guardrails {
    fn default() -> Self {
        Guardrails { allowlist: Allowlist::default(), dry_run: false, max_scale_factor: 2.0, max_nodes_cordoned: 0 }
    }
}

/// An executor behind the guardrails.
pub struct Guarded {
    inner: Arc<dyn Executor>,
    rails: Guardrails,
    kill_switch: Arc<dyn KillSwitch>,
}

fn refused(guard: &'static str, reason: impl Into<String>) -> ExecError {
    ExecError::Refused { guard, reason: reason.into() }
}

impl Guarded {
    pub fn new(inner: Arc<dyn Executor>, rails: Guardrails, kill_switch: Arc<dyn KillSwitch>) -> Guarded {
        Guarded { inner, rails, kill_switch }
    }

    fn check_allowlist(&self, action: &Action) -> Result<(), ExecError> {
        action.target()?;
        if !self.rails.allowlist.admits(&action.target) {
            return Err(refused("allowlist", format!("`{}` matches no allowlist pattern", action.target)));
        }
        Ok(())
    }

    fn check_blast(&self, action: &Action, plan: &Outcome) -> Result<(), ExecError> {
        if let Some((before, after)) = plan.blast.replicas {
            // From zero, one replica is the smallest step there is.
            let limit = ((before.max(1) as f64) * self.rails.max_scale_factor).floor() as u64;
            if after > limit {
                return Err(refused(
                    "blast_radius",
                    format!(
                        "{action} would scale {before} → {after}, above {}× ({limit})",
                        self.rails.max_scale_factor
                    ),
                ));
            }
        }
        if let Some(cordoned) = plan.blast.other_nodes_cordoned {
            if cordoned > self.rails.max_nodes_cordoned {
                return Err(refused(
                    "blast_radius",
                    format!(
                        "{cordoned} other node(s) already cordoned; at most {} may be at once",
                        self.rails.max_nodes_cordoned + 1
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Executor for Guarded {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    async fn describe(&self, action: &Action) -> Result<Value, ExecError> {
        self.check_allowlist(action)?;
        self.inner.describe(action).await
    }

    async fn dry_run(&self, action: &Action, pre_state: &Value) -> Result<Outcome, ExecError> {
        self.check_allowlist(action)?;
        self.inner.dry_run(action, pre_state).await
    }

    /// Allowlist, kill switch, then the plan's blast radius; in dry-run mode
    /// the plan is the answer (marked `dry_run`) and nothing is mutated.
    async fn execute(&self, action: &Action, pre_state: &Value, key: &str) -> Result<Outcome, ExecError> {
        self.check_allowlist(action)?;
        if self.kill_switch.engaged().await? {
            return Err(refused("kill_switch", "the kill switch is on"));
        }
        let plan = self.inner.dry_run(action, pre_state).await?;
        self.check_blast(action, &plan)?;
        if self.rails.dry_run {
            return Ok(Outcome {
                changed: false,
                dry_run: true,
                summary: format!("dry run: {}", plan.summary),
                ..plan
            });
        }
        self.inner.execute(action, pre_state, key).await
    }

    /// Restoring the pre-state is allowed past the kill switch (it undoes
    /// Sentinel's own change), not past the allowlist or dry run.
    async fn rollback(&self, action: &Action, pre_state: &Value, key: &str) -> Result<Outcome, ExecError> {
        self.check_allowlist(action)?;
        if self.rails.dry_run {
            return Ok(Outcome {
                changed: false,
                dry_run: true,
                summary: format!("dry run: would restore {} to its pre-state", action.target),
                after: pre_state.clone(),
                blast: Default::default(),
            });
        }
        self.inner.rollback(action, pre_state, key).await
    }
}
