//! Capacity actions: `raise_hpa_max` on `kubernetes:NAMESPACE/DEPLOYMENT`
//! (the HorizontalPodAutoscaler that scales that Deployment gets a higher
//! `maxReplicas`) and `expand_volume` on `kubernetes:NAMESPACE/CLAIM` (a
//! PersistentVolumeClaim's storage request grows; the storage class must allow
//! expansion, and a volume never shrinks back, so its rollback does nothing).
//! Each target value is computed from the captured pre-state, so a repeat
//! after a crash finds it set and changes nothing.

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::{json, Value};

use super::{kube_err, quantity, unsupported, KubeExecutor};
use crate::{Action, Blast, ExecError, Outcome};

pub fn is_capacity_action(action: &str) -> bool {
    matches!(action, "raise_hpa_max" | "expand_volume")
}

impl KubeExecutor {
    fn hpas(&self, ns: &str) -> Api<HorizontalPodAutoscaler> {
        Api::namespaced(self.client.clone(), ns)
    }

    fn claims(&self, ns: &str) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.client.clone(), ns)
    }

    /// The autoscaler whose scale target is Deployment `deployment`.
    async fn hpa_for(&self, ns: &str, deployment: &str) -> Result<HorizontalPodAutoscaler, ExecError> {
        let all = self.hpas(ns).list(&ListParams::default()).await.map_err(|e| kube_err("list autoscalers", e))?;
        all.items
            .into_iter()
            .find(|h| {
                h.spec
                    .as_ref()
                    .is_some_and(|s| s.scale_target_ref.kind == "Deployment" && s.scale_target_ref.name == deployment)
            })
            .ok_or_else(|| ExecError::NotFound(format!("no autoscaler scales deployment {ns}/{deployment}")))
    }

    pub(crate) async fn describe_capacity(&self, action: &Action, ns: &str, name: &str) -> Result<Value, ExecError> {
        match action.action.as_str() {
            "raise_hpa_max" => {
                let h = self.hpa_for(ns, name).await?;
                let spec = h.spec.clone().unwrap_or_default();
                Ok(json!({
                    "hpa": h.metadata.name, "deployment": name, "max_replicas": spec.max_replicas,
                    "min_replicas": spec.min_replicas, "current_replicas": h.status.and_then(|s| s.current_replicas),
                }))
            }
            "expand_volume" => {
                let c = self.claims(ns).get(name).await.map_err(|e| kube_err("get claim", e))?;
                let requested = c
                    .spec
                    .as_ref()
                    .and_then(|s| s.resources.as_ref())
                    .and_then(|r| r.requests.as_ref())
                    .and_then(|r| r.get("storage"))
                    .map(|q| q.0.clone());
                let capacity = c
                    .status
                    .as_ref()
                    .and_then(|s| s.capacity.as_ref())
                    .and_then(|c| c.get("storage"))
                    .map(|q| q.0.clone());
                let class = c.spec.as_ref().and_then(|s| s.storage_class_name.clone());
                Ok(json!({ "claim": name, "requested": requested, "capacity": capacity, "storage_class": class }))
            }
            _ => Err(unsupported(action)),
        }
    }

    /// What the action sets, from the pre-state: `(summary, the value, blast)`.
    pub(crate) fn plan_capacity(action: &Action, pre: &Value) -> Result<(String, Value, Blast), ExecError> {
        match action.action.as_str() {
            "raise_hpa_max" => {
                let before = pre["max_replicas"]
                    .as_i64()
                    .ok_or_else(|| ExecError::BadAction("pre-state lacks max_replicas".into()))?;
                let factor = action.param_f64("factor")?.unwrap_or(1.5);
                if !(factor.is_finite() && factor > 1.0) {
                    return Err(ExecError::BadAction(format!("factor must be above 1, not {factor}")));
                }
                let cap = i64::try_from(action.param_u64("cap")?.unwrap_or(100)).unwrap_or(i64::MAX);
                let to = ((before.max(1) as f64 * factor).ceil() as i64).min(cap);
                if to <= before {
                    return Err(ExecError::Refused {
                        guard: "hpa_cap",
                        reason: format!(
                            "autoscaler {} is at {before} replicas, at or above the cap of {cap}",
                            pre["hpa"]
                        ),
                    });
                }
                let blast = Blast { replicas: Some((before.max(0) as u64, to as u64)), ..Blast::default() };
                Ok((
                    format!(
                        "raise autoscaler {}'s maxReplicas from {before} to {to}",
                        pre["hpa"].as_str().unwrap_or("?")
                    ),
                    json!(to),
                    blast,
                ))
            }
            "expand_volume" => {
                let before = pre["requested"]
                    .as_str()
                    .ok_or_else(|| ExecError::BadAction("pre-state lacks the storage request".into()))?;
                let bytes = quantity::bytes(before)
                    .ok_or_else(|| ExecError::BadAction(format!("`{before}` is not a quantity")))?;
                let factor = action.param_f64("factor")?.unwrap_or(1.5);
                if !(factor.is_finite() && factor > 1.0) {
                    return Err(ExecError::BadAction(format!("factor must be above 1, not {factor}")));
                }
                let cap = action.param_u64("cap_gib")?.unwrap_or(1024).saturating_mul(1 << 30);
                let to = ((bytes as f64 * factor).ceil() as u64).min(cap);
                if to <= bytes {
                    return Err(ExecError::Refused {
                        guard: "volume_cap",
                        reason: format!(
                            "claim {} requests {before}, at or above the cap of {}",
                            pre["claim"],
                            gibibytes(cap)
                        ),
                    });
                }
                let to = gibibytes(to);
                Ok((
                    format!("expand claim {} from {before} to {to}", pre["claim"].as_str().unwrap_or("?")),
                    json!(to),
                    Blast::default(),
                ))
            }
            _ => Err(unsupported(action)),
        }
    }

    pub(crate) async fn execute_capacity(
        &self,
        action: &Action,
        pre: &Value,
        ns: &str,
        name: &str,
    ) -> Result<Outcome, ExecError> {
        let (summary, to, blast) = KubeExecutor::plan_capacity(action, pre)?;
        let now = self.describe_capacity(action, ns, name).await?;
        let changed = match action.action.as_str() {
            "raise_hpa_max" => self.set_hpa_max(ns, &now, &to).await?,
            _ => {
                let already =
                    now["requested"].as_str().and_then(quantity::bytes) >= to.as_str().and_then(quantity::bytes);
                if !already {
                    let patch = json!({ "spec": { "resources": { "requests": { "storage": to } } } });
                    self.claims(ns)
                        .patch(name, &PatchParams::default(), &Patch::Merge(patch))
                        .await
                        .map_err(|e| kube_err("patch claim", e))?;
                }
                !already
            }
        };
        let after = self.describe_capacity(action, ns, name).await?;
        let note = if changed { "" } else { " (already done)" };
        Ok(Outcome { dry_run: false, changed, summary: format!("{summary}{note}"), after, blast })
    }

    pub(crate) async fn restore_capacity(
        &self,
        action: &Action,
        pre: &Value,
        ns: &str,
        name: &str,
    ) -> Result<Outcome, ExecError> {
        if action.action == "expand_volume" {
            return Ok(Outcome {
                dry_run: false,
                changed: false,
                summary: format!("claim {name} stays expanded: a volume cannot shrink"),
                after: pre.clone(),
                blast: Blast::default(),
            });
        }
        let now = self.describe_capacity(action, ns, name).await?;
        let changed = self.set_hpa_max(ns, &now, &pre["max_replicas"]).await?;
        Ok(Outcome {
            dry_run: false,
            changed,
            summary: format!(
                "autoscaler {} back to maxReplicas {}",
                pre["hpa"].as_str().unwrap_or("?"),
                pre["max_replicas"]
            ),
            after: self.describe_capacity(action, ns, name).await?,
            blast: Blast::default(),
        })
    }

    /// Sets the autoscaler's `maxReplicas` to `to` unless `now` shows it is; whether it acted.
    async fn set_hpa_max(&self, ns: &str, now: &Value, to: &Value) -> Result<bool, ExecError> {
        if now["max_replicas"] == *to {
            return Ok(false);
        }
        let hpa = now["hpa"].as_str().ok_or_else(|| ExecError::BadAction("no autoscaler named".into()))?;
        self.hpas(ns)
            .patch(hpa, &PatchParams::default(), &Patch::Merge(json!({ "spec": { "maxReplicas": to } })))
            .await
            .map_err(|e| kube_err("patch autoscaler", e))?;
        Ok(true)
    }
}

/// Whole gibibytes, as `NGi` (rounded up).
fn gibibytes(bytes: u64) -> String {
    format!("{}Gi", bytes.div_ceil(1 << 30))
}
