//! The Kubernetes manifests (`k8s/`), rendered by `kubectl kustomize` for each
//! overlay, read strictly into the k8s-openapi types: every object must be a
//! kind this test knows, deserialize into its type, and come back out
//! unchanged, so a misspelt or misplaced field (which serde would otherwise
//! drop without a word) fails here instead of in the cluster.

use std::path::Path;
use std::process::Command;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

fn render(overlay: &str) -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../k8s/overlays").join(overlay);
    let out = Command::new("kubectl").arg("kustomize").arg(&dir).output().unwrap_or_else(|e| {
        panic!("kubectl is needed to render {}: {e} (install kubectl; only `kubectl kustomize` is used)", dir.display())
    });
    assert!(out.status.success(), "kubectl kustomize {}: {}", dir.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The object through `T` and back, compared with what was read.
fn round_trip<T: DeserializeOwned + Serialize>(doc: &Value) -> Result<(), String> {
    let typed: T = serde_json::from_value(doc.clone()).map_err(|e| e.to_string())?;
    let back = serde_json::to_value(&typed).unwrap();
    if &back != doc {
        return Err(format!("fields the type does not have were dropped:\n{}", diff(doc, &back, "")));
    }
    Ok(())
}

/// The paths at which `a` has something `b` does not, or a different value.
fn diff(a: &Value, b: &Value, at: &str) -> String {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            x.iter().map(|(k, v)| diff(v, y.get(k).unwrap_or(&Value::Null), &format!("{at}.{k}"))).collect()
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            x.iter().zip(y).enumerate().map(|(i, (v, w))| diff(v, w, &format!("{at}[{i}]"))).collect()
        }
        _ if a == b => String::new(),
        _ => format!("  {at}: {a} became {b}\n"),
    }
}

fn check(doc: &Value) -> Result<(), String> {
    let api = doc["apiVersion"].as_str().unwrap_or("");
    let kind = doc["kind"].as_str().unwrap_or("");
    match (api, kind) {
        ("v1", "Namespace") => round_trip::<Namespace>(doc),
        ("v1", "ServiceAccount") => round_trip::<ServiceAccount>(doc),
        ("v1", "ConfigMap") => round_trip::<ConfigMap>(doc),
        ("v1", "Service") => round_trip::<Service>(doc),
        ("apps/v1", "Deployment") => round_trip::<Deployment>(doc),
        ("batch/v1", "Job") => round_trip::<Job>(doc),
        ("batch/v1", "CronJob") => round_trip::<CronJob>(doc),
        ("autoscaling/v2", "HorizontalPodAutoscaler") => round_trip::<HorizontalPodAutoscaler>(doc),
        ("policy/v1", "PodDisruptionBudget") => round_trip::<PodDisruptionBudget>(doc),
        ("networking.k8s.io/v1", "Ingress") => round_trip::<Ingress>(doc),
        ("networking.k8s.io/v1", "NetworkPolicy") => round_trip::<NetworkPolicy>(doc),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => round_trip::<ClusterRole>(doc),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => round_trip::<ClusterRoleBinding>(doc),
        _ => Err(format!("{api} {kind} is not a kind this test knows")),
    }
}

fn objects(overlay: &str) -> Vec<Value> {
    render(overlay)
        .split("\n---\n")
        .map(|doc| serde_saphyr::from_str::<Value>(doc).unwrap_or_else(|e| panic!("{overlay}: {e}\n{doc}")))
        .collect()
}

#[test]
fn every_rendered_object_is_exactly_a_kubernetes_object() {
    for overlay in ["staging", "prod"] {
        let objects = objects(overlay);
        let mut kinds: Vec<String> = Vec::new();
        for o in &objects {
            let name =
                format!("{} {}", o["kind"].as_str().unwrap_or("?"), o["metadata"]["name"].as_str().unwrap_or("?"));
            check(o).unwrap_or_else(|e| panic!("{overlay}: {name}: {e}"));
            kinds.push(name);
        }
        // The pieces the issue names are all there.
        for expected in [
            "Deployment sentinel-api",
            "Deployment sentinel-worker",
            "Deployment sentinel-consumer",
            "Job sentinel-migrate",
            "Service sentinel-api",
            "Ingress sentinel-slack",
            "HorizontalPodAutoscaler sentinel-api",
            "ClusterRole sentinel-executor",
            "NetworkPolicy default-deny",
            "PodDisruptionBudget sentinel-api",
            "CronJob sentinel-backup",
        ] {
            assert!(kinds.iter().any(|k| k == expected), "{overlay}: no {expected} in {kinds:?}");
        }
        assert!(kinds.iter().any(|k| k.starts_with("ConfigMap sentinel-config-")), "{overlay}: {kinds:?}");
    }
}

/// The pod rules every workload of both overlays keeps.
#[test]
fn every_pod_runs_restricted() {
    for overlay in ["staging", "prod"] {
        for o in objects(overlay) {
            let spec = match o["kind"].as_str() {
                Some("Deployment") | Some("Job") => &o["spec"]["template"]["spec"],
                Some("CronJob") => &o["spec"]["jobTemplate"]["spec"]["template"]["spec"],
                _ => continue,
            };
            let name = o["metadata"]["name"].as_str().unwrap();
            assert_eq!(spec["securityContext"]["runAsNonRoot"], true, "{overlay} {name}");
            assert_eq!(spec["securityContext"]["seccompProfile"]["type"], "RuntimeDefault", "{overlay} {name}");
            let containers = spec["containers"]
                .as_array()
                .unwrap()
                .iter()
                .chain(spec["initContainers"].as_array().into_iter().flatten());
            for c in containers {
                let sc = &c["securityContext"];
                assert_eq!(sc["readOnlyRootFilesystem"], true, "{overlay} {name} {}", c["name"]);
                assert_eq!(sc["allowPrivilegeEscalation"], false, "{overlay} {name} {}", c["name"]);
                assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]), "{overlay} {name} {}", c["name"]);
                assert!(
                    c["resources"]["limits"]["memory"].is_string(),
                    "{overlay} {name} {}: no memory limit",
                    c["name"]
                );
                // Secrets only by reference, never a value in a manifest.
                for e in c["env"].as_array().into_iter().flatten() {
                    let n = e["name"].as_str().unwrap();
                    if [
                        "DATABASE_URL",
                        "SLACK_SIGNING_SECRET",
                        "SLACK_BOT_TOKEN",
                        "PAGERDUTY_ROUTING_KEY",
                        "CLICKHOUSE_PASSWORD",
                    ]
                    .contains(&n)
                    {
                        assert!(
                            e.get("value").is_none() && e["valueFrom"]["secretKeyRef"].is_object(),
                            "{overlay} {name}: {n}"
                        );
                    }
                }
            }
        }
    }
}
