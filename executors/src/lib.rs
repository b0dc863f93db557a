//! Executors: the code that acts on infrastructure when an incident's action
//! is approved. One trait, [`Executor`], with a backend per platform (AWS EC2,
//! AWS ECS, a scripted mock), built from configuration by [`factory`], and
//! wrapped in [`Guarded`] so the guardrails hold whoever calls.
//!
//! Every mutation takes the captured pre-state and the engine's idempotency
//! key, and checks the world before acting: repeating an execute after a
//! crash finds the work done and does not act twice.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub mod allowlist;
pub mod aws;
pub mod factory;
pub mod guard;
pub mod kubernetes;
pub mod mock;
pub mod webhook;

/// Makes aws-lc-rs the process's TLS provider for rustls, once. Two crates
/// in the binary enable rustls's `ring` provider as well (the Qdrant client
/// through tonic), and a rustls that has both will not choose: the
/// Kubernetes client would panic at its first connection. Called before a
/// Kubernetes client is built; harmless to call again.
pub fn install_tls_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err: a provider is installed already (a host program chose one): keep it.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    });
}

pub use allowlist::{Allowlist, TargetPattern};
pub use factory::{Executors, ExecutorsConfig, KINDS};
pub use guard::{Guarded, Guardrails, KillSwitch, NoKillSwitch};

/// What to do, to what. `target` is `KIND:SCOPE/NAME`: `ecs:CLUSTER/SERVICE`,
/// `ec2:REGION/INSTANCE_ID`, `kubernetes:NAMESPACE/NAME`, `kubernetes:node/NAME`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Action {
    /// The executor kind (`ec2`, `ecs`, `mock`, …).
    pub executor: String,
    /// The action's name, e.g. `scale_service`.
    pub action: String,
    pub target: String,
    #[serde(default)]
    pub params: BTreeMap<String, Value>,
}

/// A parsed target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub kind: String,
    pub scope: String,
    pub name: String,
}

impl Action {
    pub fn target(&self) -> Result<Target, ExecError> {
        let bad = || ExecError::BadAction(format!("target `{}` is not KIND:SCOPE/NAME", self.target));
        let (kind, rest) = self.target.split_once(':').ok_or_else(bad)?;
        let (scope, name) = rest.split_once('/').ok_or_else(bad)?;
        if kind.is_empty() || scope.is_empty() || name.is_empty() || name.contains('/') {
            return Err(bad());
        }
        Ok(Target { kind: kind.to_owned(), scope: scope.to_owned(), name: name.to_owned() })
    }

    pub fn param_u64(&self, name: &str) -> Result<Option<u64>, ExecError> {
        match self.params.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| ExecError::BadAction(format!("parameter `{name}` must be a whole number, not {v}"))),
        }
    }

    /// The count a scaling action asks for from `before`: `replicas`, or
    /// `factor` × `before` (×2 by default), rounded.
    pub fn scale_to(&self, before: i64) -> Result<i64, ExecError> {
        if let Some(n) = self.param_u64("replicas")? {
            return i64::try_from(n).map_err(|_| ExecError::BadAction(format!("replicas {n} is too large")));
        }
        let factor = self.param_f64("factor")?.unwrap_or(2.0);
        if !(factor.is_finite() && factor > 0.0) {
            return Err(ExecError::BadAction(format!("factor must be above 0, not {factor}")));
        }
        Ok(((before.max(1) as f64) * factor).round() as i64)
    }

    pub fn param_f64(&self, name: &str) -> Result<Option<f64>, ExecError> {
        match self.params.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| ExecError::BadAction(format!("parameter `{name}` must be a number, not {v}"))),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} on {}", self.executor, self.action, self.target)
    }
}

/// What a change does to the size of what it touches, for the blast-radius
/// guard. Filled in by the executor from the pre-state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Blast {
    /// Replicas (or desired count) before and after a scaling action.
    pub replicas: Option<(u64, u64)>,
    /// Other nodes already cordoned when this action would drain one.
    pub other_nodes_cordoned: Option<u64>,
}

/// The result of a dry run, an execution or a rollback.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// False when the world was already as asked (a repeat after a crash, or
    /// nothing to do); the backend then made no mutating call.
    pub changed: bool,
    /// The guardrails are in dry-run mode: this is what would have been done,
    /// and nothing was. Never set by a backend.
    #[serde(default)]
    pub dry_run: bool,
    /// One line for people: what was (or would be) done.
    pub summary: String,
    /// The state the target was left in (or would be).
    pub after: Value,
    #[serde(default)]
    pub blast: Blast,
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// A guardrail said no; nothing was done.
    #[error("refused by the {guard} guard: {reason}")]
    Refused { guard: &'static str, reason: String },
    #[error("bad action: {0}")]
    BadAction(String),
    #[error("{executor} executor does not know the action `{action}`")]
    Unsupported { executor: String, action: String },
    #[error("no executor of kind `{0}` is configured")]
    NoExecutor(String),
    #[error("not found: {0}")]
    NotFound(String),
    /// The change was made but the target did not reach the expected state in time.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout { what: String, after: Duration },
    /// The backend failed; retrying may help.
    #[error("{0}")]
    Backend(String),
}

impl ExecError {
    /// Worth retrying: the backend may answer next time.
    pub fn is_transient(&self) -> bool {
        matches!(self, ExecError::Backend(_))
    }
}

/// One platform's remediation actions.
#[async_trait]
pub trait Executor: Send + Sync {
    fn kind(&self) -> &'static str;

    /// The target's current state: read-only, and everything a rollback needs.
    async fn describe(&self, action: &Action) -> Result<Value, ExecError>;

    /// What `execute` would do from this pre-state, without doing it.
    async fn dry_run(&self, action: &Action, pre_state: &Value) -> Result<Outcome, ExecError>;

    /// Acts, then waits until the target reaches the expected state. Checks
    /// the world first: when the change is already there it does nothing.
    async fn execute(&self, action: &Action, pre_state: &Value, idempotency_key: &str) -> Result<Outcome, ExecError>;

    /// Puts the target back in its pre-state (same checks and waits).
    async fn rollback(&self, action: &Action, pre_state: &Value, idempotency_key: &str) -> Result<Outcome, ExecError>;
}

/// Polls `check` every `every` until it returns true or `timeout` passes.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, every: Duration, mut check: F) -> Result<(), ExecError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool, ExecError>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await? {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ExecError::Timeout { what: what.to_owned(), after: timeout });
        }
        tokio::time::sleep(every).await;
    }
}
