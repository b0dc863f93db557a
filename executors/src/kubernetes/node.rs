//! Node actions on `kubernetes:node/NAME`: `cordon_node`, `uncordon_node`
//! and `drain_node`.
//!
//! A drain cordons the node, then evicts its pods through the Eviction API
//! (so PodDisruptionBudgets hold: a 429 is retried until the wait timeout),
//! and waits until they are gone. It leaves alone, as `kubectl drain
//! --ignore-daemonsets` does, pods a DaemonSet owns (its controller would put
//! them straight back), mirror pods (the kubelet owns them), pods in
//! `kube-system`, and pods that already finished. A pod no controller owns
//! would be lost for good: the drain is refused before anything is done.
//! The blast radius counts the other nodes already cordoned, so the guard can
//! keep drains to one node at a time. Rollback uncordons (or re-cordons) the
//! node; evicted pods are not brought back, their controllers have replaced
//! them elsewhere.

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::{json, Value};

use super::{controller, kube_err, unsupported, KubeExecutor};
use crate::{wait_until, Action, Blast, ExecError, Outcome};

/// The annotation the kubelet puts on the API copy of a static pod.
pub const MIRROR: &str = "kubernetes.io/config.mirror";

pub fn is_node_action(action: &str) -> bool {
    matches!(action, "cordon_node" | "uncordon_node" | "drain_node")
}

/// Why a drain leaves this pod where it is, if it does.
pub fn skip_reason(pod: &Pod) -> Option<&'static str> {
    let meta = &pod.metadata;
    if meta.annotations.as_ref().is_some_and(|a| a.contains_key(MIRROR)) {
        return Some("mirror");
    }
    if controller(meta.owner_references.as_ref()).is_some_and(|o| o.kind == "DaemonSet") {
        return Some("daemonset");
    }
    if meta.namespace.as_deref() == Some("kube-system") {
        return Some("kube-system");
    }
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return Some("finished");
    }
    None
}

fn pod_entry(pod: &Pod) -> Value {
    let owner = controller(pod.metadata.owner_references.as_ref()).map(|o| format!("{}/{}", o.kind, o.name));
    json!({
        "namespace": pod.metadata.namespace,
        "name": pod.metadata.name,
        "controller": owner,
        "skip": skip_reason(pod),
    })
}

/// `namespace/name` of the pods a drain evicts.
fn evictable(pods: &Value) -> Vec<(String, String)> {
    pods.as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["skip"].is_null())
        .map(|p| {
            (p["namespace"].as_str().unwrap_or_default().to_owned(), p["name"].as_str().unwrap_or_default().to_owned())
        })
        .collect()
}

/// What a node action would do from this pre-state; refuses a drain that
/// would lose a pod no controller owns.
pub fn plan(action: &Action, pre: &Value) -> Result<Outcome, ExecError> {
    let node = pre["node"].as_str().unwrap_or_default();
    let cordoned = pre["unschedulable"].as_bool().unwrap_or(false);
    let mut after = pre.clone();
    let mut blast = Blast::default();
    let summary = match action.action.as_str() {
        "cordon_node" => {
            after["unschedulable"] = json!(true);
            blast.other_nodes_cordoned = pre["other_nodes_cordoned"].as_u64();
            format!("cordon node {node}")
        }
        "uncordon_node" => {
            after["unschedulable"] = json!(false);
            format!("uncordon node {node}")
        }
        "drain_node" => {
            let bare: Vec<String> = pre["pods"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["skip"].is_null() && p["controller"].is_null())
                .map(|p| format!("{}/{}", p["namespace"].as_str().unwrap_or(""), p["name"].as_str().unwrap_or("")))
                .collect();
            if !bare.is_empty() {
                return Err(ExecError::Refused {
                    guard: "ownership",
                    reason: format!(
                        "node {node} runs pods no controller owns ({}): draining would lose them",
                        bare.join(", ")
                    ),
                });
            }
            after["unschedulable"] = json!(true);
            blast.other_nodes_cordoned = pre["other_nodes_cordoned"].as_u64();
            let evict = evictable(&pre["pods"]);
            let left = pre["pods"].as_array().map_or(0, Vec::len) - evict.len();
            format!(
                "cordon node {node} and evict {} pods (leaving {left} daemonset, mirror, kube-system or finished)",
                evict.len()
            )
        }
        _ => return Err(unsupported(action)),
    };
    let changed = action.action == "drain_node" || cordoned != after["unschedulable"].as_bool().unwrap_or(false);
    Ok(Outcome { dry_run: false, changed, summary, after, blast })
}

impl KubeExecutor {
    fn nodes(&self) -> Api<Node> {
        Api::all(self.client.clone())
    }

    async fn pods_on(&self, node: &str) -> Result<Vec<Pod>, ExecError> {
        let on_node = ListParams::default().fields(&format!("spec.nodeName={node}"));
        let pods = Api::<Pod>::all(self.client.clone()).list(&on_node).await.map_err(|e| kube_err("list pods", e))?;
        Ok(pods.items)
    }

    pub(super) async fn describe_node(&self, action: &Action, name: &str) -> Result<Value, ExecError> {
        let node = self.nodes().get(name).await.map_err(|e| kube_err("get node", e))?;
        let cordoned = |n: &Node| n.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false);
        let others = self.nodes().list(&ListParams::default()).await.map_err(|e| kube_err("list nodes", e))?;
        let other_cordoned =
            others.items.iter().filter(|n| n.metadata.name.as_deref() != Some(name) && cordoned(n)).count();
        let mut state = json!({
            "node": name,
            "unschedulable": cordoned(&node),
            "other_nodes_cordoned": other_cordoned,
        });
        if action.action == "drain_node" {
            state["pods"] = self.pods_on(name).await?.iter().map(pod_entry).collect();
        }
        Ok(state)
    }

    async fn set_unschedulable(&self, name: &str, unschedulable: bool) -> Result<bool, ExecError> {
        let node = self.nodes().get(name).await.map_err(|e| kube_err("get node", e))?;
        if node.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false) == unschedulable {
            return Ok(false);
        }
        let patch = Patch::Merge(json!({ "spec": { "unschedulable": unschedulable } }));
        self.nodes().patch(name, &PatchParams::default(), &patch).await.map_err(|e| kube_err("patch node", e))?;
        Ok(true)
    }

    /// Evicts one pod, retrying while a disruption budget says not yet (429).
    /// False when the pod was already gone.
    async fn evict(&self, namespace: &str, name: &str) -> Result<bool, ExecError> {
        let pods = Api::<Pod>::namespaced(self.client.clone(), namespace);
        let body = json!({
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": { "name": name, "namespace": namespace },
        });
        let body = serde_json::to_vec(&body).map_err(|e| ExecError::Backend(format!("eviction body: {e}")))?;
        let deadline = tokio::time::Instant::now() + self.config.wait_timeout;
        loop {
            match pods.create_subresource::<Value>("eviction", name, &PostParams::default(), body.clone()).await {
                Ok(_) => return Ok(true),
                Err(kube::Error::Api(s)) if s.code == 404 => return Ok(false),
                // A PodDisruptionBudget does not allow it yet: try again.
                Err(kube::Error::Api(s)) if s.code == 429 => {}
                Err(e) => return Err(kube_err("evict pod", e)),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ExecError::Timeout {
                    what: format!("a disruption budget to allow evicting pod {namespace}/{name}"),
                    after: self.config.wait_timeout,
                });
            }
            tokio::time::sleep(self.config.poll_interval).await;
        }
    }

    pub(super) async fn execute_node(&self, action: &Action, name: &str) -> Result<Outcome, ExecError> {
        let (changed, summary) = match action.action.as_str() {
            "cordon_node" => (self.set_unschedulable(name, true).await?, format!("cordoned node {name}")),
            "uncordon_node" => (self.set_unschedulable(name, false).await?, format!("uncordoned node {name}")),
            "drain_node" => {
                // The pods now, not at describe time: a repeat after a crash
                // finds the ones already evicted gone.
                let now = self.describe_node(action, name).await?;
                plan(action, &now)?;
                let cordoned = self.set_unschedulable(name, true).await?;
                let mut evicted = 0;
                for (ns, pod) in evictable(&now["pods"]) {
                    if self.evict(&ns, &pod).await? {
                        evicted += 1;
                    }
                }
                wait_until(
                    &format!("pods to leave node {name}"),
                    self.config.wait_timeout,
                    self.config.poll_interval,
                    || async { Ok(self.pods_on(name).await?.iter().all(|p| skip_reason(p).is_some())) },
                )
                .await?;
                (cordoned || evicted > 0, format!("drained node {name}: {evicted} pods evicted"))
            }
            _ => return Err(unsupported(action)),
        };
        let after = self.describe_node(action, name).await?;
        let note = if changed { "" } else { " (already done)" };
        Ok(Outcome { dry_run: false, changed, summary: format!("{summary}{note}"), after, blast: Blast::default() })
    }

    pub(super) async fn restore_node(&self, action: &Action, pre: &Value, name: &str) -> Result<Outcome, ExecError> {
        if !is_node_action(&action.action) {
            return Err(unsupported(action));
        }
        let before = pre["unschedulable"]
            .as_bool()
            .ok_or_else(|| ExecError::BadAction("pre-state lacks the node's unschedulable flag".into()))?;
        let changed = self.set_unschedulable(name, before).await?;
        let word = if before { "cordoned" } else { "schedulable" };
        Ok(Outcome {
            dry_run: false,
            changed,
            summary: format!("node {name} {word} again"),
            after: json!({ "node": name, "unschedulable": before }),
            blast: Blast::default(),
        })
    }
}
