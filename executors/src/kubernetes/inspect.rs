//! Reading a workload's state from the cluster, for analysis; nothing here
//! mutates. A Deployment's pods (readiness, restarts, the last termination
//! and the current waiting reason of each container), the namespace's recent
//! events about them, its rollout history (the ReplicaSets it owns), and the
//! conditions of the nodes its pods run on.

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{Api, ListParams};
use serde::{Deserialize, Serialize};

use super::{controller, kube_err, revision};
use crate::ExecError;

/// What the cluster says about one Deployment.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkloadReport {
    pub namespace: String,
    pub deployment: String,
    /// The Deployment's current revision.
    pub revision: Option<u64>,
    pub pods: Vec<PodReport>,
    /// Events about the Deployment, its ReplicaSets and its pods, newest first.
    pub events: Vec<EventReport>,
    /// Its ReplicaSets, newest revision first.
    pub rollouts: Vec<Rollout>,
    /// The nodes its pods run on.
    pub nodes: Vec<NodeReport>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PodReport {
    pub name: String,
    pub node: Option<String>,
    pub ready: bool,
    /// Restarts summed over its containers.
    pub restarts: i64,
    /// Why a container last terminated (`OOMKilled`, `Error`, …) and its exit code.
    pub last_terminated: Option<(String, i32)>,
    /// Why a container waits now (`CrashLoopBackOff`, `ImagePullBackOff`, …).
    pub waiting: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EventReport {
    /// `Warning` or `Normal`.
    pub kind: String,
    pub reason: String,
    pub message: String,
    /// `Pod/checkout-7d9f8-x2x7q`.
    pub object: String,
    pub count: i32,
    /// Milliseconds since the epoch, when known.
    pub last_seen_ms: Option<i64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    pub revision: u64,
    pub replicaset: String,
    /// Milliseconds since the epoch.
    pub created_ms: Option<i64>,
    pub images: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeReport {
    pub name: String,
    /// The `Ready` condition; None when the node reports none.
    pub ready: Option<bool>,
    /// Pressure and other conditions that are `True` besides `Ready`.
    pub problems: Vec<String>,
    pub unschedulable: bool,
}

/// Reads workloads and nodes through a cluster client.
#[derive(Clone)]
pub struct Inspector {
    client: kube::Client,
}

fn ms(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> i64 {
    t.0.timestamp_millis()
}

impl Inspector {
    /// The client from the kubeconfig (or the in-cluster service account).
    pub async fn from_environment() -> Result<Inspector, ExecError> {
        crate::install_tls_provider();
        let client =
            kube::Client::try_default().await.map_err(|e| ExecError::Backend(format!("kubernetes client: {e}")))?;
        Ok(Inspector { client })
    }

    pub fn from_client(client: kube::Client) -> Inspector {
        Inspector { client }
    }

    pub async fn workload(&self, ns: &str, name: &str) -> Result<WorkloadReport, ExecError> {
        let d = Api::<Deployment>::namespaced(self.client.clone(), ns)
            .get(name)
            .await
            .map_err(|e| kube_err("get deployment", e))?;
        let selector = d
            .spec
            .as_ref()
            .and_then(|s| s.selector.match_labels.as_ref())
            .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","))
            .unwrap_or_default();
        let by_labels = ListParams::default().labels(&selector);
        let sets = Api::<ReplicaSet>::namespaced(self.client.clone(), ns)
            .list(&by_labels)
            .await
            .map_err(|e| kube_err("list replicasets", e))?;
        let owned: Vec<&ReplicaSet> = sets
            .items
            .iter()
            .filter(|rs| {
                controller(rs.metadata.owner_references.as_ref())
                    .is_some_and(|o| o.kind == "Deployment" && o.name == name)
            })
            .collect();
        let set_names: Vec<String> = owned.iter().filter_map(|rs| rs.metadata.name.clone()).collect();
        let mut rollouts: Vec<Rollout> = owned
            .iter()
            .filter_map(|rs| {
                let images = rs
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .and_then(|t| t.spec.as_ref())
                    .map(|s| s.containers.iter().filter_map(|c| c.image.clone()).collect())
                    .unwrap_or_default();
                Some(Rollout {
                    revision: revision(rs.metadata.annotations.as_ref())?,
                    replicaset: rs.metadata.name.clone()?,
                    created_ms: rs.metadata.creation_timestamp.as_ref().map(ms),
                    images,
                })
            })
            .collect();
        rollouts.sort_by_key(|r| std::cmp::Reverse(r.revision));

        let pods = Api::<Pod>::namespaced(self.client.clone(), ns)
            .list(&by_labels)
            .await
            .map_err(|e| kube_err("list pods", e))?;
        let pods: Vec<PodReport> = pods
            .items
            .iter()
            .filter(|p| {
                controller(p.metadata.owner_references.as_ref())
                    .is_some_and(|o| o.kind == "ReplicaSet" && set_names.contains(&o.name))
            })
            .map(pod_report)
            .collect();

        let events = Api::<Event>::namespaced(self.client.clone(), ns)
            .list(&ListParams::default())
            .await
            .map_err(|e| kube_err("list events", e))?;
        let mut events: Vec<EventReport> = events
            .items
            .iter()
            .filter(|e| {
                let o = &e.involved_object;
                let n = o.name.clone().unwrap_or_default();
                match o.kind.as_deref() {
                    Some("Pod") => pods.iter().any(|p| p.name == n),
                    Some("ReplicaSet") => set_names.contains(&n),
                    Some("Deployment") => n == name,
                    _ => false,
                }
            })
            .map(|e| EventReport {
                kind: e.type_.clone().unwrap_or_default(),
                reason: e.reason.clone().unwrap_or_default(),
                message: e.message.clone().unwrap_or_default(),
                object: format!(
                    "{}/{}",
                    e.involved_object.kind.as_deref().unwrap_or("?"),
                    e.involved_object.name.as_deref().unwrap_or("?")
                ),
                count: e.count.unwrap_or(1),
                last_seen_ms: e
                    .last_timestamp
                    .as_ref()
                    .map(ms)
                    .or_else(|| e.event_time.as_ref().map(|t| t.0.timestamp_millis())),
            })
            .collect();
        events.sort_by_key(|e| std::cmp::Reverse(e.last_seen_ms));

        let mut node_names: Vec<String> = pods.iter().filter_map(|p| p.node.clone()).collect();
        node_names.sort();
        node_names.dedup();
        let mut nodes = Vec::new();
        for n in node_names {
            nodes.push(self.node(&n).await?);
        }
        Ok(WorkloadReport {
            namespace: ns.to_owned(),
            deployment: name.to_owned(),
            revision: revision(d.metadata.annotations.as_ref()),
            pods,
            events,
            rollouts,
            nodes,
        })
    }

    pub async fn node(&self, name: &str) -> Result<NodeReport, ExecError> {
        let node = Api::<Node>::all(self.client.clone()).get(name).await.map_err(|e| kube_err("get node", e))?;
        let conditions = node.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
        Ok(NodeReport {
            name: name.to_owned(),
            ready: conditions.iter().find(|c| c.type_ == "Ready").map(|c| c.status == "True"),
            problems: conditions
                .iter()
                .filter(|c| c.type_ != "Ready" && c.status == "True")
                .map(|c| c.type_.clone())
                .collect(),
            unschedulable: node.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false),
        })
    }
}

fn pod_report(p: &Pod) -> PodReport {
    let statuses = p.status.as_ref().and_then(|s| s.container_statuses.clone()).unwrap_or_default();
    let ready = p
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True");
    PodReport {
        name: p.metadata.name.clone().unwrap_or_default(),
        node: p.spec.as_ref().and_then(|s| s.node_name.clone()),
        ready,
        restarts: statuses.iter().map(|c| i64::from(c.restart_count)).sum(),
        last_terminated: statuses.iter().find_map(|c| {
            let t = c.last_state.as_ref()?.terminated.as_ref()?;
            Some((t.reason.clone().unwrap_or_default(), t.exit_code))
        }),
        waiting: statuses.iter().find_map(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone()),
    }
}
