//! The ports the incident workflow reads through. Other crates fill them with
//! real adapters (ClickHouse, Prometheus, Kubernetes); the in-memory ones here serve the
//! embedded demo and the tests. The workflow acts through the executors
//! crate's `Executor` trait, not a port of its own.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use engine::Timestamp;
use serde::{Deserialize, Serialize};

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

/// Where alerting rules are evaluated (Prometheus): verification of an
/// incident an alert opened asks whether the alert's own condition still holds.
#[async_trait]
pub trait AlertRules: Send + Sync {
    /// The expression of alerting rule `alertname`, when the rule source has it.
    async fn expression(&self, alertname: &str) -> Result<Option<String>, PortError>;
    /// How many series `expr` returns at `at` that agree with `labels` on
    /// every label both carry (an alert group's own series): none means the
    /// group's condition is gone.
    async fn series(&self, expr: &str, labels: &BTreeMap<String, String>, at: Timestamp) -> Result<usize, PortError>;
}

/// No rule source: an alert's incident is verified by its resolved notification alone.
#[derive(Clone, Default)]
pub struct NoAlertRules;

#[async_trait]
impl AlertRules for NoAlertRules {
    async fn expression(&self, _: &str) -> Result<Option<String>, PortError> {
        Ok(None)
    }
    async fn series(&self, _: &str, _: &BTreeMap<String, String>, _: Timestamp) -> Result<usize, PortError> {
        Err(PortError::Refused("no rule source is configured".into()))
    }
}

pub use executors::kubernetes::inspect::{NodeReport, WorkloadReport};

/// What the cluster says about a workload or a node (Kubernetes, read-only):
/// the source of the facts runbook conditions test (`oom_killed`,
/// `image_pull_failed`, …). `None`: no such object.
#[async_trait]
pub trait Cluster: Send + Sync {
    async fn workload(&self, namespace: &str, deployment: &str) -> Result<Option<WorkloadReport>, PortError>;
    async fn node(&self, name: &str) -> Result<Option<NodeReport>, PortError>;
}

/// No cluster to read: analysis goes without its facts.
#[derive(Clone, Default)]
pub struct NoCluster;

#[async_trait]
impl Cluster for NoCluster {
    async fn workload(&self, _: &str, _: &str) -> Result<Option<WorkloadReport>, PortError> {
        Ok(None)
    }
    async fn node(&self, _: &str) -> Result<Option<NodeReport>, PortError> {
        Ok(None)
    }
}

/// A cluster kept in memory, for the demo's simulated fleet and tests.
#[derive(Clone, Default)]
pub struct MemoryCluster {
    workloads: Arc<Mutex<BTreeMap<(String, String), WorkloadReport>>>,
    nodes: Arc<Mutex<BTreeMap<String, NodeReport>>>,
}

impl MemoryCluster {
    pub fn set_workload(&self, report: WorkloadReport) {
        let key = (report.namespace.clone(), report.deployment.clone());
        self.workloads.lock().expect("cluster lock").insert(key, report);
    }

    pub fn set_node(&self, report: NodeReport) {
        self.nodes.lock().expect("cluster lock").insert(report.name.clone(), report);
    }
}

#[async_trait]
impl Cluster for MemoryCluster {
    async fn workload(&self, namespace: &str, deployment: &str) -> Result<Option<WorkloadReport>, PortError> {
        let w = self.workloads.lock().expect("cluster lock");
        Ok(w.get(&(namespace.to_owned(), deployment.to_owned())).cloned())
    }
    async fn node(&self, name: &str) -> Result<Option<NodeReport>, PortError> {
        Ok(self.nodes.lock().expect("cluster lock").get(name).cloned())
    }
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
