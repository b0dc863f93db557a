//! Kubernetes through kube + k8s-openapi.
//!
//! Workloads are `kubernetes:NAMESPACE/NAME`, where NAME may be a Deployment
//! or one of its pods: a pod is resolved through its controller chain
//! (Pod → ReplicaSet → Deployment) before anything is patched. Actions:
//! - `scale_deployment`: `replicas`, or `factor` (×2 by default);
//! - `restart_deployment`: the rollout annotation `kubectl rollout restart` sets;
//! - `patch_image`: `image` (or `last_known_good`: the image of the previous
//!   revision), optional `container`;
//! - `patch_memory_limit`: the limit × `factor` (2), at least `floor_mib`
//!   (256) and at most `cap_mib` (8192), optional `container`;
//! - `rollback_deployment`: back to the previous revision's pod template (or
//!   `revision`), as `kubectl rollout undo` does;
//! - `delete_pod`: only a pod a controller will replace; a bare pod is refused.
//!
//! Nodes are `kubernetes:node/NAME`: `cordon_node`, `uncordon_node` and
//! `drain_node` (see [`node`]).
//!
//! Every action checks the object first, so a repeat does nothing, and rolls
//! back from the captured pre-state.

use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::{json, Value};

use crate::{wait_until, Action, Blast, ExecError, Executor, Outcome};

mod capacity;
pub mod inspect;
pub mod node;
pub mod quantity;

/// The annotation `kubectl rollout restart` sets on the pod template.
pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";
/// The idempotency key of the restart Sentinel made, beside it.
pub const RESTART_KEY: &str = "sentinel.dev/restart-key";
/// The revision the deployment controller writes on Deployments and ReplicaSets.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// The image parameter that means "the previous revision's image".
pub const LAST_KNOWN_GOOD: &str = "last_known_good";

#[derive(Clone, Debug)]
pub struct KubeConfig {
    pub wait_timeout: Duration,
    pub poll_interval: Duration,
}

impl Default for KubeConfig {
    fn default() -> Self {
        KubeConfig { wait_timeout: Duration::from_secs(300), poll_interval: Duration::from_secs(2) }
    }
}

/// A value a workload action sets on its deployment.
enum Setting {
    Replicas(i64),
    Image {
        container: String,
        image: String,
    },
    Memory {
        container: String,
        limit: String,
    },
    /// The whole pod template (rollout undo, and its rollback).
    Template(Value),
}

pub struct KubeExecutor {
    pub(crate) client: kube::Client,
    pub(crate) config: KubeConfig,
}

pub(crate) fn kube_err(what: &str, e: kube::Error) -> ExecError {
    match &e {
        kube::Error::Api(status) if status.code == 404 => ExecError::NotFound(format!("{what}: {}", status.message)),
        _ => ExecError::Backend(format!("{what}: {e}")),
    }
}

pub(crate) fn controller(refs: Option<&Vec<OwnerReference>>) -> Option<&OwnerReference> {
    refs.and_then(|r| r.iter().find(|o| o.controller == Some(true)))
}

/// Every action this executor performs; anything else is refused as
/// unsupported before a request is sent. (`k8s/base/rbac.yaml` grants what
/// these need, and `executors/tests/kubernetes.rs` checks it grants no more.)
pub const ACTIONS: [&str; 11] = [
    "scale_deployment",
    "restart_deployment",
    "patch_image",
    "patch_memory_limit",
    "rollback_deployment",
    "delete_pod",
    "cordon_node",
    "uncordon_node",
    "drain_node",
    "raise_hpa_max",
    "expand_volume",
];

pub(crate) fn unsupported(action: &Action) -> ExecError {
    ExecError::Unsupported { executor: "kubernetes".into(), action: action.action.clone() }
}

impl KubeExecutor {
    /// The client from the kubeconfig (or the in-cluster service account).
    pub async fn from_environment(config: KubeConfig) -> Result<KubeExecutor, ExecError> {
        crate::install_tls_provider();
        let client =
            kube::Client::try_default().await.map_err(|e| ExecError::Backend(format!("kubernetes client: {e}")))?;
        Ok(KubeExecutor { client, config })
    }

    pub fn from_client(client: kube::Client, config: KubeConfig) -> KubeExecutor {
        KubeExecutor { client, config }
    }

    fn deployments(&self, ns: &str) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), ns)
    }

    /// The Deployment named, or the one that controls the pod named.
    async fn resolve(&self, ns: &str, name: &str) -> Result<(Deployment, Vec<String>), ExecError> {
        match self.deployments(ns).get_opt(name).await.map_err(|e| kube_err("get deployment", e))? {
            Some(d) => Ok((d, vec![format!("Deployment/{name}")])),
            None => {
                let pod = Api::<Pod>::namespaced(self.client.clone(), ns)
                    .get(name)
                    .await
                    .map_err(|e| kube_err("get pod", e))?;
                let rs_ref = controller(pod.metadata.owner_references.as_ref())
                    .filter(|o| o.kind == "ReplicaSet")
                    .ok_or_else(|| ExecError::NotFound(format!("pod {name} is not controlled by a ReplicaSet")))?;
                let rs = Api::<ReplicaSet>::namespaced(self.client.clone(), ns)
                    .get(&rs_ref.name)
                    .await
                    .map_err(|e| kube_err("get replicaset", e))?;
                let d_ref =
                    controller(rs.metadata.owner_references.as_ref()).filter(|o| o.kind == "Deployment").ok_or_else(
                        || ExecError::NotFound(format!("replicaset {} is not controlled by a Deployment", rs_ref.name)),
                    )?;
                let d = self.deployments(ns).get(&d_ref.name).await.map_err(|e| kube_err("get deployment", e))?;
                Ok((
                    d,
                    vec![
                        format!("Pod/{name}"),
                        format!("ReplicaSet/{}", rs_ref.name),
                        format!("Deployment/{}", d_ref.name),
                    ],
                ))
            }
        }
    }

    fn state(d: &Deployment, chain: &[String]) -> Value {
        let spec = d.spec.as_ref();
        let template = spec.and_then(|s| s.template.spec.as_ref());
        let containers: Vec<Value> = template
            .map(|t| {
                t.containers
                    .iter()
                    .map(|c| {
                        let limit = c.resources.as_ref().and_then(|r| r.limits.as_ref()).and_then(|l| l.get("memory"));
                        json!({ "name": c.name, "image": c.image, "memory_limit": limit.map(|q| q.0.clone()) })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let annotations =
            spec.and_then(|s| s.template.metadata.as_ref()).and_then(|m| m.annotations.clone()).unwrap_or_default();
        json!({
            "deployment": d.metadata.name,
            "resolved": chain,
            "replicas": spec.and_then(|s| s.replicas).unwrap_or(1),
            "containers": containers,
            "restart_key": annotations.get(RESTART_KEY),
            "revision": revision(d.metadata.annotations.as_ref()),
            "template": spec.map(|s| template_value(&s.template)),
        })
    }

    /// The revision before the current one (or `wanted`), from the
    /// deployment's ReplicaSets: `{revision, template, images}`, or null when
    /// there is none.
    async fn previous(&self, ns: &str, d: &Deployment, wanted: Option<u64>) -> Result<Value, ExecError> {
        let name = d.metadata.name.clone().unwrap_or_default();
        let current = revision(d.metadata.annotations.as_ref()).unwrap_or(u64::MAX);
        let selector = d
            .spec
            .as_ref()
            .and_then(|s| s.selector.match_labels.as_ref())
            .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","))
            .unwrap_or_default();
        let sets = Api::<ReplicaSet>::namespaced(self.client.clone(), ns)
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| kube_err("list replicasets", e))?;
        let best = sets
            .items
            .iter()
            .filter(|rs| {
                controller(rs.metadata.owner_references.as_ref())
                    .is_some_and(|o| o.kind == "Deployment" && o.name == name)
            })
            .filter_map(|rs| Some((revision(rs.metadata.annotations.as_ref())?, rs)))
            .filter(|(rev, _)| match wanted {
                Some(w) => *rev == w,
                None => *rev < current,
            })
            .max_by_key(|(rev, _)| *rev);
        let Some((rev, rs)) = best else { return Ok(Value::Null) };
        let Some(template) = rs.spec.as_ref().and_then(|s| s.template.as_ref()) else { return Ok(Value::Null) };
        let images: serde_json::Map<String, Value> =
            template.spec.iter().flat_map(|s| &s.containers).map(|c| (c.name.clone(), json!(c.image))).collect();
        Ok(
            json!({ "revision": rev, "replicaset": rs.metadata.name, "template": template_value(template), "images": images }),
        )
    }

    /// The container an action names, or the first one.
    fn container(action: &Action, pre: &Value) -> Result<String, ExecError> {
        let name = match action.params.get("container").and_then(Value::as_str) {
            Some(c) => c,
            None => pre["containers"][0]["name"].as_str().ok_or_else(|| ExecError::BadAction("no container".into()))?,
        };
        if !pre["containers"].as_array().is_some_and(|cs| cs.iter().any(|c| c["name"] == name)) {
            return Err(ExecError::BadAction(format!("the deployment has no container `{name}`")));
        }
        Ok(name.to_owned())
    }

    /// (container name, image to set) for `patch_image`.
    fn image_change(action: &Action, pre: &Value) -> Result<(String, String), ExecError> {
        let image = action.params.get("image").and_then(Value::as_str).ok_or_else(|| {
            ExecError::BadAction("patch_image needs an `image` parameter (the fallback image)".into())
        })?;
        let container = KubeExecutor::container(action, pre)?;
        if image != LAST_KNOWN_GOOD {
            return Ok((container, image.to_owned()));
        }
        let previous = pre["previous"]["images"][&container].as_str().ok_or_else(|| {
            ExecError::NotFound(format!("no earlier revision of {} has container {container}", pre["deployment"]))
        })?;
        Ok((container, previous.to_owned()))
    }

    /// (container name, limit before, limit to set) for `patch_memory_limit`.
    fn memory_change(action: &Action, pre: &Value) -> Result<(String, String, String), ExecError> {
        let container = KubeExecutor::container(action, pre)?;
        let before = pre["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["name"] == container.as_str())
            .and_then(|c| c["memory_limit"].as_str())
            .ok_or_else(|| ExecError::BadAction(format!("container {container} has no memory limit to raise")))?;
        let bytes = quantity::bytes(before)
            .ok_or_else(|| ExecError::BadAction(format!("memory limit `{before}` is not a quantity")))?;
        let factor = action.param_f64("factor")?.unwrap_or(2.0);
        if !(factor.is_finite() && factor > 1.0) {
            return Err(ExecError::BadAction(format!("factor must be above 1, not {factor}")));
        }
        let floor = action.param_u64("floor_mib")?.unwrap_or(256).saturating_mul(1 << 20);
        let cap = action.param_u64("cap_mib")?.unwrap_or(8192).saturating_mul(1 << 20);
        let target = ((bytes as f64 * factor).ceil() as u64).max(floor).min(cap);
        if target <= bytes {
            return Err(ExecError::Refused {
                guard: "memory_cap",
                reason: format!(
                    "container {container} is at {before}, already at or above the cap of {}",
                    quantity::mebibytes(cap)
                ),
            });
        }
        Ok((container, before.to_owned(), quantity::mebibytes(target)))
    }

    /// `field` (`image`, `memory_limit`) of `container` in a captured state.
    fn container_field(state: &Value, container: &str, field: &str) -> Option<String> {
        state["containers"].as_array()?.iter().find(|c| c["name"] == container)?[field].as_str().map(str::to_owned)
    }

    /// What `action` sets on the deployment: forward (execute) from the
    /// pre-state, or back to the pre-state (rollback). None for
    /// `restart_deployment`, which has no setting of its own.
    fn setting(action: &Action, pre: &Value, back: bool) -> Result<Option<Setting>, ExecError> {
        let setting = match action.action.as_str() {
            "scale_deployment" if back => Setting::Replicas(
                pre["replicas"].as_i64().ok_or_else(|| ExecError::BadAction("pre-state lacks replicas".into()))?,
            ),
            "scale_deployment" => Setting::Replicas(action.scale_to(pre["replicas"].as_i64().unwrap_or(1))?),
            "patch_image" => {
                let (container, image) = KubeExecutor::image_change(action, pre)?;
                let image = if back {
                    KubeExecutor::container_field(pre, &container, "image")
                        .ok_or_else(|| ExecError::BadAction(format!("pre-state lacks container {container}")))?
                } else {
                    image
                };
                Setting::Image { container, image }
            }
            "patch_memory_limit" => {
                let (container, before, to) = KubeExecutor::memory_change(action, pre)?;
                Setting::Memory { container, limit: if back { before } else { to } }
            }
            "rollback_deployment" if back => {
                if pre["template"].is_null() {
                    return Err(ExecError::BadAction("pre-state lacks the pod template".into()));
                }
                Setting::Template(pre["template"].clone())
            }
            "rollback_deployment" => Setting::Template(KubeExecutor::rollback_target(pre)?["template"].clone()),
            "restart_deployment" => return Ok(None),
            _ => return Err(unsupported(action)),
        };
        Ok(Some(setting))
    }

    /// Makes the deployment so, unless `now` shows it already is; whether it acted.
    async fn converge(&self, ns: &str, name: &str, now: &Value, setting: &Setting) -> Result<bool, ExecError> {
        let already = match setting {
            Setting::Replicas(n) => now["replicas"].as_i64() == Some(*n),
            Setting::Image { container, image } => {
                KubeExecutor::container_field(now, container, "image").as_deref() == Some(image.as_str())
            }
            Setting::Memory { container, limit } => {
                KubeExecutor::container_field(now, container, "memory_limit").as_deref() == Some(limit.as_str())
            }
            Setting::Template(t) => now["template"] == *t,
        };
        if already {
            return Ok(false);
        }
        match setting {
            Setting::Replicas(n) => self.set_replicas(ns, name, *n).await?,
            Setting::Image { container, image } => self.set_image(ns, name, container, image).await?,
            Setting::Memory { container, limit } => self.set_memory(ns, name, container, limit).await?,
            Setting::Template(t) => self.set_template(ns, name, t).await?,
        }
        Ok(true)
    }

    async fn set_memory(&self, ns: &str, name: &str, container: &str, limit: &str) -> Result<(), ExecError> {
        let patch = json!({ "spec": { "template": { "spec": { "containers": [
            { "name": container, "resources": { "limits": { "memory": limit } } }
        ] } } } });
        self.patch(ns, name, patch).await
    }

    /// Replaces the pod template whole, as `kubectl rollout undo` does.
    async fn set_template(&self, ns: &str, name: &str, template: &Value) -> Result<(), ExecError> {
        let ops = json!([{ "op": "replace", "path": "/spec/template", "value": template }]);
        let patch: json_patch::Patch =
            serde_json::from_value(ops).map_err(|e| ExecError::BadAction(format!("template patch: {e}")))?;
        self.deployments(ns)
            .patch(name, &PatchParams::default(), &Patch::<()>::Json(patch))
            .await
            .map_err(|e| kube_err("patch deployment", e))?;
        Ok(())
    }

    async fn patch(&self, ns: &str, name: &str, patch: Value) -> Result<(), ExecError> {
        self.deployments(ns)
            .patch(name, &PatchParams::default(), &Patch::Strategic(patch))
            .await
            .map_err(|e| kube_err("patch deployment", e))?;
        Ok(())
    }

    async fn set_image(&self, ns: &str, name: &str, container: &str, image: &str) -> Result<(), ExecError> {
        let patch =
            json!({ "spec": { "template": { "spec": { "containers": [{ "name": container, "image": image }] } } } });
        self.patch(ns, name, patch).await
    }

    async fn set_replicas(&self, ns: &str, name: &str, replicas: i64) -> Result<(), ExecError> {
        self.deployments(ns)
            .patch_scale(name, &PatchParams::default(), &Patch::Merge(json!({ "spec": { "replicas": replicas } })))
            .await
            .map_err(|e| kube_err("patch scale", e))?;
        Ok(())
    }

    /// Waits until the rollout is done: the controller saw the latest spec and
    /// every replica is updated and ready.
    async fn rolled_out(&self, ns: &str, name: &str) -> Result<Deployment, ExecError> {
        let api = self.deployments(ns);
        wait_until(
            &format!("deployment {name} to roll out"),
            self.config.wait_timeout,
            self.config.poll_interval,
            || async {
                let d = api.get(name).await.map_err(|e| kube_err("get deployment", e))?;
                let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                let st = d.status.clone().unwrap_or_default();
                let observed = st.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0);
                Ok(observed && st.updated_replicas.unwrap_or(0) == want && st.ready_replicas.unwrap_or(0) == want)
            },
        )
        .await?;
        api.get(name).await.map_err(|e| kube_err("get deployment", e))
    }
}

#[async_trait]
impl Executor for KubeExecutor {
    fn kind(&self) -> &'static str {
        "kubernetes"
    }

    async fn describe(&self, action: &Action) -> Result<Value, ExecError> {
        if !ACTIONS.contains(&action.action.as_str()) {
            return Err(unsupported(action));
        }
        let t = action.target()?;
        if node::is_node_action(&action.action) {
            return self.describe_node(action, &t.name).await;
        }
        if capacity::is_capacity_action(&action.action) {
            return self.describe_capacity(action, &t.scope, &t.name).await;
        }
        if action.action == "delete_pod" {
            let pod = Api::<Pod>::namespaced(self.client.clone(), &t.scope)
                .get(&t.name)
                .await
                .map_err(|e| kube_err("get pod", e))?;
            let owner = controller(pod.metadata.owner_references.as_ref()).map(|o| format!("{}/{}", o.kind, o.name));
            return Ok(json!({ "pod": t.name, "controller": owner }));
        }
        let (d, chain) = self.resolve(&t.scope, &t.name).await?;
        let mut state = KubeExecutor::state(&d, &chain);
        let wants_previous = action.action == "rollback_deployment"
            || (action.action == "patch_image" && action.params.get("image") == Some(&json!(LAST_KNOWN_GOOD)));
        if wants_previous {
            let wanted = action.param_u64("revision")?;
            state["previous"] = self.previous(&t.scope, &d, wanted).await?;
        }
        Ok(state)
    }

    async fn dry_run(&self, action: &Action, pre: &Value) -> Result<Outcome, ExecError> {
        let t = action.target()?;
        if node::is_node_action(&action.action) {
            return node::plan(action, pre);
        }
        if capacity::is_capacity_action(&action.action) {
            let (summary, _, blast) = KubeExecutor::plan_capacity(action, pre)?;
            return Ok(Outcome { dry_run: false, changed: true, summary, after: pre.clone(), blast });
        }
        let mut after = pre.clone();
        let mut blast = Blast::default();
        let summary = match action.action.as_str() {
            "scale_deployment" => {
                let before = pre["replicas"].as_i64().unwrap_or(1);
                let to = action.scale_to(before)?;
                after["replicas"] = json!(to);
                blast.replicas = Some((before.max(0) as u64, to.max(0) as u64));
                format!("scale deployment {} from {before} to {to}", pre["deployment"].as_str().unwrap_or(&t.name))
            }
            "restart_deployment" => format!("restart deployment {}", pre["deployment"].as_str().unwrap_or(&t.name)),
            "patch_image" => {
                let (container, image) = KubeExecutor::image_change(action, pre)?;
                format!("set {container}'s image to {image}")
            }
            "patch_memory_limit" => {
                let (container, before, to) = KubeExecutor::memory_change(action, pre)?;
                format!("raise {container}'s memory limit from {before} to {to}")
            }
            "rollback_deployment" => {
                let to = KubeExecutor::rollback_target(pre)?;
                format!(
                    "roll deployment {} back from revision {} to revision {}",
                    pre["deployment"].as_str().unwrap_or(&t.name),
                    pre["revision"],
                    to["revision"]
                )
            }
            "delete_pod" => match pre["controller"].as_str() {
                Some(owner) => format!("delete pod {} ({owner} replaces it)", t.name),
                None => {
                    return Err(ExecError::Refused {
                        guard: "ownership",
                        reason: format!("pod {} has no controller: deleting it would lose it", t.name),
                    })
                }
            },
            _ => return Err(unsupported(action)),
        };
        Ok(Outcome { dry_run: false, changed: true, summary, after, blast })
    }

    async fn execute(&self, action: &Action, pre: &Value, key: &str) -> Result<Outcome, ExecError> {
        let t = action.target()?;
        if node::is_node_action(&action.action) {
            return self.execute_node(action, &t.name).await;
        }
        if capacity::is_capacity_action(&action.action) {
            return self.execute_capacity(action, pre, &t.scope, &t.name).await;
        }
        if action.action == "delete_pod" {
            self.dry_run(action, pre).await?;
            let pods = Api::<Pod>::namespaced(self.client.clone(), &t.scope);
            let changed = match pods.get_opt(&t.name).await.map_err(|e| kube_err("get pod", e))? {
                None => false,
                Some(_) => {
                    pods.delete(&t.name, &DeleteParams::default()).await.map_err(|e| kube_err("delete pod", e))?;
                    true
                }
            };
            let note = if changed { "" } else { " (already gone)" };
            return Ok(Outcome {
                dry_run: false,
                changed,
                summary: format!("deleted pod {}{note}", t.name),
                after: json!({ "pod": t.name, "deleted": true }),
                blast: Blast::default(),
            });
        }
        let (d, chain) = self.resolve(&t.scope, &t.name).await?;
        let name = d.metadata.name.clone().unwrap_or_default();
        let now = KubeExecutor::state(&d, &chain);
        let changed = match KubeExecutor::setting(action, pre, false)? {
            Some(setting) => self.converge(&t.scope, &name, &now, &setting).await?,
            // A restart sets nothing: our key beside the rollout annotation says whether it was done.
            None => {
                let act = now["restart_key"].as_str() != Some(key);
                if act {
                    let at = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
                    let patch = json!({ "spec": { "template": { "metadata": { "annotations": { RESTARTED_AT: at, RESTART_KEY: key } } } } });
                    self.patch(&t.scope, &name, patch).await?;
                }
                act
            }
        };
        let d = self.rolled_out(&t.scope, &name).await?;
        let after = KubeExecutor::state(&d, &chain);
        let note = if changed { "" } else { " (already done)" };
        Ok(Outcome {
            dry_run: false,
            changed,
            summary: format!("{} {name}{note}", action.action),
            after,
            blast: Blast::default(),
        })
    }

    async fn rollback(&self, action: &Action, pre: &Value, _key: &str) -> Result<Outcome, ExecError> {
        let t = action.target()?;
        if node::is_node_action(&action.action) {
            return self.restore_node(action, pre, &t.name).await;
        }
        if capacity::is_capacity_action(&action.action) {
            return self.restore_capacity(action, pre, &t.scope, &t.name).await;
        }
        if matches!(action.action.as_str(), "delete_pod" | "restart_deployment") {
            // The controller already replaced what was deleted or restarted: nothing to restore.
            return Ok(Outcome {
                dry_run: false,
                changed: false,
                summary: format!("nothing to restore after {}", action.action),
                after: pre.clone(),
                blast: Blast::default(),
            });
        }
        let (d, chain) = self.resolve(&t.scope, &t.name).await?;
        let name = d.metadata.name.clone().unwrap_or_default();
        let now = KubeExecutor::state(&d, &chain);
        let setting = KubeExecutor::setting(action, pre, true)?.ok_or_else(|| unsupported(action))?;
        let changed = self.converge(&t.scope, &name, &now, &setting).await?;
        let d = self.rolled_out(&t.scope, &name).await?;
        Ok(Outcome {
            dry_run: false,
            changed,
            summary: format!("{name} restored"),
            after: KubeExecutor::state(&d, &chain),
            blast: Blast::default(),
        })
    }
}

impl KubeExecutor {
    /// The revision `rollback_deployment` goes back to, from the pre-state.
    fn rollback_target(pre: &Value) -> Result<&Value, ExecError> {
        let to = &pre["previous"];
        if to.is_null() {
            return Err(ExecError::NotFound(format!(
                "deployment {} has no earlier revision to roll back to",
                pre["deployment"]
            )));
        }
        Ok(to)
    }
}

/// The controller's revision annotation, as a number.
pub(crate) fn revision(annotations: Option<&std::collections::BTreeMap<String, String>>) -> Option<u64> {
    annotations?.get(REVISION)?.parse().ok()
}

/// A pod template as JSON, without the `pod-template-hash` label the
/// ReplicaSet controller adds, so a Deployment's and a ReplicaSet's compare.
fn template_value(t: &PodTemplateSpec) -> Value {
    let mut v = serde_json::to_value(t).unwrap_or(Value::Null);
    if let Some(labels) = v.pointer_mut("/metadata/labels").and_then(Value::as_object_mut) {
        labels.remove("pod-template-hash");
    }
    v
}
