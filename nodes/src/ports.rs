//! The ports the incident workflow reads and acts through. Other crates fill
//! them with real adapters (ClickHouse, Qdrant, AWS, Kubernetes); the
//! in-memory ones here serve the embedded demo and the tests.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use engine::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::runbook::PlannedAction;

/// A port's failure: worth retrying (the backend is away) or not.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Refused(String),
}

#[async_trait]
pub trait MetricStore: Send + Sync {
    /// Samples of `metric` for `service` with `from <= ts < to`, oldest first.
    async fn window(
        &self,
        service: &str,
        metric: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<(Timestamp, f64)>, PortError>;
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    pub service: String,
    pub version: String,
    pub at: Timestamp,
}

#[async_trait]
pub trait Deployments: Send + Sync {
    async fn since(&self, service: &str, from: Timestamp) -> Result<Vec<Deployment>, PortError>;
}

/// A past incident found similar to the current one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SimilarIncident {
    pub incident: String,
    /// Retrieval relevance in [0, 1].
    pub relevance: f64,
    /// The root cause that incident was resolved with, e.g. `bad_deployment`.
    pub root_cause: String,
}

#[async_trait]
pub trait IncidentIndex: Send + Sync {
    async fn similar(&self, text: &str, limit: usize) -> Result<Vec<SimilarIncident>, PortError>;
}

/// Acts on the world. Each call carries the engine's idempotency key.
#[async_trait]
pub trait Remediator: Send + Sync {
    /// The target's current state, enough to restore it later.
    async fn capture(&self, action: &PlannedAction) -> Result<Value, PortError>;
    /// Acts from the captured pre-state (the same one the rollback restores).
    async fn apply(&self, action: &PlannedAction, pre_state: &Value, idempotency_key: &str)
        -> Result<Value, PortError>;
    async fn restore(&self, action: &PlannedAction, pre_state: &Value, idempotency_key: &str) -> Result<(), PortError>;
}

/// Samples by (service, metric), oldest first.
type Series = BTreeMap<(String, String), Vec<(Timestamp, f64)>>;

/// Metrics kept in memory, for the demo and tests.
#[derive(Clone, Default)]
pub struct MemoryMetrics {
    series: Arc<Mutex<Series>>,
}

impl MemoryMetrics {
    pub fn push(&self, service: &str, metric: &str, at: Timestamp, value: f64) {
        let mut s = self.series.lock().expect("metrics lock");
        let v = s.entry((service.to_owned(), metric.to_owned())).or_default();
        let i = v.partition_point(|(t, _)| *t <= at);
        v.insert(i, (at, value));
    }
}

#[async_trait]
impl MetricStore for MemoryMetrics {
    async fn window(
        &self,
        service: &str,
        metric: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<(Timestamp, f64)>, PortError> {
        let s = self.series.lock().expect("metrics lock");
        Ok(s.get(&(service.to_owned(), metric.to_owned()))
            .map(|v| v.iter().filter(|(t, _)| *t >= from && *t < to).copied().collect())
            .unwrap_or_default())
    }
}

#[derive(Clone, Default)]
pub struct MemoryDeployments(pub Arc<Mutex<Vec<Deployment>>>);

#[async_trait]
impl Deployments for MemoryDeployments {
    async fn since(&self, service: &str, from: Timestamp) -> Result<Vec<Deployment>, PortError> {
        let d = self.0.lock().expect("deployments lock");
        Ok(d.iter().filter(|d| d.service == service && d.at >= from).cloned().collect())
    }
}

/// No past incidents: retrieval contributes nothing.
#[derive(Clone, Default)]
pub struct NoIndex;

#[async_trait]
impl IncidentIndex for NoIndex {
    async fn similar(&self, _: &str, _: usize) -> Result<Vec<SimilarIncident>, PortError> {
        Ok(Vec::new())
    }
}

/// What a mock action does to the world: a function the demo or a test
/// supplies, applied to the simulated metrics.
pub type Effect = Arc<dyn Fn(&PlannedAction) + Send + Sync>;

/// A remediator that acts on nothing real: it records every call (with its
/// idempotency key) and runs a scripted effect, such as "the latency drops".
#[derive(Clone, Default)]
pub struct MockRemediator {
    pub calls: Arc<Mutex<Vec<(String, String, String)>>>,
    effects: Arc<Mutex<BTreeMap<String, Effect>>>,
    refusals: Arc<Mutex<BTreeMap<String, String>>>,
}

impl MockRemediator {
    /// Runs `effect` when `action` is applied.
    pub fn on_apply(&self, action: &str, effect: Effect) {
        self.effects.lock().expect("mock lock").insert(action.to_owned(), effect);
    }

    /// Makes `action` fail with `reason`.
    pub fn refuse(&self, action: &str, reason: &str) {
        self.refusals.lock().expect("mock lock").insert(action.to_owned(), reason.to_owned());
    }

    /// (verb, action, idempotency key) of every call so far.
    pub fn calls(&self) -> Vec<(String, String, String)> {
        self.calls.lock().expect("mock lock").clone()
    }

    fn record(&self, verb: &str, action: &PlannedAction, key: &str) {
        self.calls.lock().expect("mock lock").push((verb.to_owned(), action.action.clone(), key.to_owned()));
    }
}

#[async_trait]
impl Remediator for MockRemediator {
    async fn capture(&self, action: &PlannedAction) -> Result<Value, PortError> {
        Ok(serde_json::json!({ "target": action.target, "replicas": 3 }))
    }

    async fn apply(&self, action: &PlannedAction, _pre_state: &Value, key: &str) -> Result<Value, PortError> {
        if let Some(reason) = self.refusals.lock().expect("mock lock").get(&action.action) {
            return Err(PortError::Refused(reason.clone()));
        }
        self.record("apply", action, key);
        let effect = self.effects.lock().expect("mock lock").get(&action.action).cloned();
        if let Some(effect) = effect {
            effect(action);
        }
        Ok(serde_json::json!({ "applied": action.action, "target": action.target }))
    }

    async fn restore(&self, action: &PlannedAction, _pre_state: &Value, key: &str) -> Result<(), PortError> {
        self.record("restore", action, key);
        Ok(())
    }
}
