//! Kubernetes through kube + k8s-openapi, on `kubernetes:NAMESPACE/NAME`.
//!
//! NAME may be a Deployment or one of its pods: a pod is resolved through its
//! controller chain (Pod → ReplicaSet → Deployment) before anything is
//! patched. Actions: `scale_deployment` (`replicas`, or `factor` ×2 by
//! default), `restart_deployment` (the rollout annotation `kubectl rollout
//! restart` sets), `patch_image` (`image`, optional `container`),
//! `delete_pod` (only a pod a controller will replace; a bare pod is refused).
//! Each checks the object first, so a repeat does nothing, and rolls back
//! from the captured pre-state.

use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::{json, Value};

use crate::{wait_until, Action, Blast, ExecError, Executor, Outcome};

/// The annotation `kubectl rollout restart` sets on the pod template.
pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";
/// The idempotency key of the restart Sentinel made, beside it.
pub const RESTART_KEY: &str = "sentinel.dev/restart-key";

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

pub struct KubeExecutor {
    client: kube::Client,
    config: KubeConfig,
}

fn kube_err(what: &str, e: kube::Error) -> ExecError {
    match &e {
        kube::Error::Api(status) if status.code == 404 => ExecError::NotFound(format!("{what}: {}", status.message)),
        _ => ExecError::Backend(format!("{what}: {e}")),
    }
}

fn controller(refs: Option<&Vec<OwnerReference>>) -> Option<&OwnerReference> {
    refs.and_then(|r| r.iter().find(|o| o.controller == Some(true)))
}

fn unsupported(action: &Action) -> ExecError {
    ExecError::Unsupported { executor: "kubernetes".into(), action: action.action.clone() }
}

impl KubeExecutor {
    /// The client from the kubeconfig (or the in-cluster service account).
    pub async fn from_environment(config: KubeConfig) -> Result<KubeExecutor, ExecError> {
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
            .map(|t| t.containers.iter().map(|c| json!({ "name": c.name, "image": c.image })).collect())
            .unwrap_or_default();
        let annotations =
            spec.and_then(|s| s.template.metadata.as_ref()).and_then(|m| m.annotations.clone()).unwrap_or_default();
        json!({
            "deployment": d.metadata.name,
            "resolved": chain,
            "replicas": spec.and_then(|s| s.replicas).unwrap_or(1),
            "containers": containers,
            "restart_key": annotations.get(RESTART_KEY),
        })
    }

    fn scale_to(action: &Action, before: i64) -> Result<i64, ExecError> {
        if let Some(n) = action.param_u64("replicas")? {
            return i64::try_from(n).map_err(|_| ExecError::BadAction(format!("replicas {n} is too large")));
        }
        let factor = action.param_f64("factor")?.unwrap_or(2.0);
        if !(factor.is_finite() && factor > 0.0) {
            return Err(ExecError::BadAction(format!("factor must be above 0, not {factor}")));
        }
        Ok(((before.max(1) as f64) * factor).round() as i64)
    }

    /// (container name, image to set) for `patch_image`.
    fn image_change(action: &Action, pre: &Value) -> Result<(String, String), ExecError> {
        let image = action.params.get("image").and_then(Value::as_str).ok_or_else(|| {
            ExecError::BadAction("patch_image needs an `image` parameter (the fallback image)".into())
        })?;
        let container = match action.params.get("container").and_then(Value::as_str) {
            Some(c) => c.to_owned(),
            None => pre["containers"][0]["name"]
                .as_str()
                .ok_or_else(|| ExecError::BadAction("the deployment has no container".into()))?
                .to_owned(),
        };
        Ok((container, image.to_owned()))
    }

    fn image_of(state: &Value, container: &str) -> Option<String> {
        state["containers"].as_array()?.iter().find(|c| c["name"] == container)?["image"].as_str().map(str::to_owned)
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
        let t = action.target()?;
        if action.action == "delete_pod" {
            let pod = Api::<Pod>::namespaced(self.client.clone(), &t.scope)
                .get(&t.name)
                .await
                .map_err(|e| kube_err("get pod", e))?;
            let owner = controller(pod.metadata.owner_references.as_ref()).map(|o| format!("{}/{}", o.kind, o.name));
            return Ok(json!({ "pod": t.name, "controller": owner }));
        }
        let (d, chain) = self.resolve(&t.scope, &t.name).await?;
        Ok(KubeExecutor::state(&d, &chain))
    }

    async fn dry_run(&self, action: &Action, pre: &Value) -> Result<Outcome, ExecError> {
        let t = action.target()?;
        let mut after = pre.clone();
        let mut blast = Blast::default();
        let summary = match action.action.as_str() {
            "scale_deployment" => {
                let before = pre["replicas"].as_i64().unwrap_or(1);
                let to = KubeExecutor::scale_to(action, before)?;
                after["replicas"] = json!(to);
                blast.replicas = Some((before.max(0) as u64, to.max(0) as u64));
                format!("scale deployment {} from {before} to {to}", pre["deployment"].as_str().unwrap_or(&t.name))
            }
            "restart_deployment" => format!("restart deployment {}", pre["deployment"].as_str().unwrap_or(&t.name)),
            "patch_image" => {
                let (container, image) = KubeExecutor::image_change(action, pre)?;
                format!("set {container}'s image to {image}")
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
        Ok(Outcome { changed: true, summary, after, blast })
    }

    async fn execute(&self, action: &Action, pre: &Value, key: &str) -> Result<Outcome, ExecError> {
        let t = action.target()?;
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
                changed,
                summary: format!("deleted pod {}{note}", t.name),
                after: json!({ "pod": t.name, "deleted": true }),
                blast: Blast::default(),
            });
        }
        let (d, chain) = self.resolve(&t.scope, &t.name).await?;
        let name = d.metadata.name.clone().unwrap_or_default();
        let now = KubeExecutor::state(&d, &chain);
        let changed = match action.action.as_str() {
            "scale_deployment" => {
                let to = KubeExecutor::scale_to(action, pre["replicas"].as_i64().unwrap_or(1))?;
                let act = now["replicas"].as_i64() != Some(to);
                if act {
                    self.set_replicas(&t.scope, &name, to).await?;
                }
                act
            }
            "restart_deployment" => {
                let act = now["restart_key"].as_str() != Some(key);
                if act {
                    let at = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
                    let patch = json!({ "spec": { "template": { "metadata": { "annotations": { RESTARTED_AT: at, RESTART_KEY: key } } } } });
                    self.patch(&t.scope, &name, patch).await?;
                }
                act
            }
            "patch_image" => {
                let (container, image) = KubeExecutor::image_change(action, pre)?;
                let act = KubeExecutor::image_of(&now, &container).as_deref() != Some(image.as_str());
                if act {
                    self.set_image(&t.scope, &name, &container, &image).await?;
                }
                act
            }
            _ => return Err(unsupported(action)),
        };
        let d = self.rolled_out(&t.scope, &name).await?;
        let after = KubeExecutor::state(&d, &chain);
        let note = if changed { "" } else { " (already done)" };
        Ok(Outcome { changed, summary: format!("{} {name}{note}", action.action), after, blast: Blast::default() })
    }

    async fn rollback(&self, action: &Action, pre: &Value, _key: &str) -> Result<Outcome, ExecError> {
        let t = action.target()?;
        if matches!(action.action.as_str(), "delete_pod" | "restart_deployment") {
            // The controller already replaced what was deleted or restarted: nothing to restore.
            return Ok(Outcome {
                changed: false,
                summary: format!("nothing to restore after {}", action.action),
                after: pre.clone(),
                blast: Blast::default(),
            });
        }
        let (d, chain) = self.resolve(&t.scope, &t.name).await?;
        let name = d.metadata.name.clone().unwrap_or_default();
        let now = KubeExecutor::state(&d, &chain);
        let changed = match action.action.as_str() {
            "scale_deployment" => {
                let before =
                    pre["replicas"].as_i64().ok_or_else(|| ExecError::BadAction("pre-state lacks replicas".into()))?;
                let act = now["replicas"].as_i64() != Some(before);
                if act {
                    self.set_replicas(&t.scope, &name, before).await?;
                }
                act
            }
            "patch_image" => {
                let (container, _) = KubeExecutor::image_change(action, pre)?;
                let before = KubeExecutor::image_of(pre, &container)
                    .ok_or_else(|| ExecError::BadAction(format!("pre-state lacks container {container}")))?;
                let act = KubeExecutor::image_of(&now, &container).as_deref() != Some(before.as_str());
                if act {
                    self.set_image(&t.scope, &name, &container, &before).await?;
                }
                act
            }
            _ => return Err(unsupported(action)),
        };
        let d = self.rolled_out(&t.scope, &name).await?;
        Ok(Outcome {
            changed,
            summary: format!("{name} restored"),
            after: KubeExecutor::state(&d, &chain),
            blast: Blast::default(),
        })
    }
}
