//! The Kubernetes executor against a local server that speaks the Kubernetes
//! REST paths it uses, serves realistic objects (a Deployment with two
//! revisions of ReplicaSets, their pods, a bare pod, nodes with DaemonSet,
//! mirror, kube-system, finished and budget-protected pods) and records every
//! request: method, path, content type and body are asserted exactly.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use executors::kubernetes::{KubeConfig, KubeExecutor, RESTART_KEY};
use executors::{Action, Allowlist, ExecError, Executor, Guarded, Guardrails, NoKillSwitch};
use serde_json::{json, Value};

/// (method, path, content type, body) of one request.
type Request = (String, String, String, Value);

#[derive(Clone, Default)]
struct Fake {
    objects: Arc<Mutex<BTreeMap<String, Value>>>,
    /// (method, path?query, content type, body) of every request.
    requests: Arc<Mutex<Vec<Request>>>,
    /// Evictions of the payments pod its disruption budget refuses (429) first.
    budget_refusals: Arc<Mutex<u32>>,
}

const DEPLOY: &str = "/apis/apps/v1/namespaces/shop/deployments/checkout";
const RS: &str = "/apis/apps/v1/namespaces/shop/replicasets/checkout-7d9f8";
const POD: &str = "/api/v1/namespaces/shop/pods/checkout-7d9f8-x2x7q";
const BARE: &str = "/api/v1/namespaces/shop/pods/debug-shell";
const OLD_RS: &str = "/apis/apps/v1/namespaces/shop/replicasets/checkout-5c6b4";
const NODE_A: &str = "/api/v1/nodes/node-a";
const NODE_C: &str = "/api/v1/nodes/node-c";
const PAYMENTS: &str = "/api/v1/namespaces/pay/pods/payments-6f7c9-q8w2d";
const HPA: &str = "/apis/autoscaling/v2/namespaces/shop/horizontalpodautoscalers/checkout-hpa";
const CLAIM: &str = "/api/v1/namespaces/shop/persistentvolumeclaims/checkout-data";

fn owner(kind: &str, api: &str, name: &str) -> Value {
    json!([{ "apiVersion": api, "kind": kind, "name": name, "uid": format!("uid-{name}"), "controller": true, "blockOwnerDeletion": true }])
}

fn seed(fake: &Fake) {
    *fake.budget_refusals.lock().unwrap() = 1;
    let mut o = fake.objects.lock().unwrap();
    o.insert(DEPLOY.into(), json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": "checkout", "namespace": "shop", "uid": "uid-checkout", "generation": 3,
            "annotations": { "deployment.kubernetes.io/revision": "3" } },
        "spec": {
            "replicas": 2,
            "selector": { "matchLabels": { "app": "checkout" } },
            "template": template("registry.local/checkout:1.42.0")
        },
        "status": { "observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2 }
    }));
    let rs = |name: &str, revision: &str, image: &str, hash: &str| {
        let mut t = template(image);
        t["metadata"]["labels"]["pod-template-hash"] = json!(hash);
        json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": { "name": name, "namespace": "shop", "labels": { "app": "checkout", "pod-template-hash": hash },
                "annotations": { "deployment.kubernetes.io/revision": revision },
                "ownerReferences": owner("Deployment", "apps/v1", "checkout") },
            "spec": { "replicas": 2, "selector": { "matchLabels": { "app": "checkout" } }, "template": t }
        })
    };
    o.insert(RS.into(), rs("checkout-7d9f8", "3", "registry.local/checkout:1.42.0", "7d9f8"));
    o.insert(OLD_RS.into(), rs("checkout-5c6b4", "2", "registry.local/checkout:1.41.3", "5c6b4"));
    // Revision 1 of another deployment behind the same labels: not checkout's history.
    let mut canary = rs("checkout-canary-1a2b3", "1", "registry.local/checkout:2.0.0-rc1", "1a2b3");
    canary["metadata"]["ownerReferences"] = owner("Deployment", "apps/v1", "checkout-canary");
    o.insert("/apis/apps/v1/namespaces/shop/replicasets/checkout-canary-1a2b3".into(), canary);
    o.insert(POD.into(), pod("shop", "checkout-7d9f8-x2x7q", Some(("ReplicaSet", "checkout-7d9f8")), "node-a"));
    for n in ["node-a", "node-b", "node-c"] {
        o.insert(
            format!("/api/v1/nodes/{n}"),
            json!({ "apiVersion": "v1", "kind": "Node", "metadata": { "name": n, "labels": { "kubernetes.io/hostname": n } },
                "spec": { "podCIDR": "10.244.0.0/24" }, "status": { "conditions": [{ "type": "Ready", "status": "True" }] } }),
        );
    }
    // node-a: what a drain evicts and what it leaves.
    o.insert(PAYMENTS.into(), pod("pay", "payments-6f7c9-q8w2d", Some(("ReplicaSet", "payments-6f7c9")), "node-a"));
    o.insert(
        "/api/v1/namespaces/logging/pods/fluentd-x7k2p".into(),
        pod("logging", "fluentd-x7k2p", Some(("DaemonSet", "fluentd")), "node-a"),
    );
    let mut mirror = pod("kube-system", "kube-proxy-node-a", Some(("Node", "node-a")), "node-a");
    mirror["metadata"]["annotations"] =
        json!({ "kubernetes.io/config.mirror": "3f1c2d", "kubernetes.io/config.source": "file" });
    mirror["metadata"]["ownerReferences"][0]["apiVersion"] = json!("v1");
    mirror["metadata"]["namespace"] = json!("default");
    o.insert("/api/v1/namespaces/default/pods/kube-proxy-node-a".into(), mirror);
    o.insert(
        "/api/v1/namespaces/kube-system/pods/coredns-5d78c-4kx9z".into(),
        pod("kube-system", "coredns-5d78c-4kx9z", Some(("ReplicaSet", "coredns-5d78c")), "node-a"),
    );
    let mut done = pod("batch", "report-28731-tz6vq", Some(("Job", "report-28731")), "node-a");
    done["status"]["phase"] = json!("Succeeded");
    o.insert("/api/v1/namespaces/batch/pods/report-28731-tz6vq".into(), done);
    o.insert(BARE.into(), pod("shop", "debug-shell", None, "node-b"));
    o.insert(
        HPA.into(),
        json!({ "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": { "name": "checkout-hpa", "namespace": "shop" },
            "spec": { "scaleTargetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": "checkout" },
                "minReplicas": 2, "maxReplicas": 4,
                "metrics": [{ "type": "Resource", "resource": { "name": "cpu", "target": { "type": "Utilization", "averageUtilization": 70 } } }] },
            "status": { "currentReplicas": 4, "desiredReplicas": 4 } }),
    );
    o.insert(
        CLAIM.into(),
        json!({ "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": { "name": "checkout-data", "namespace": "shop" },
            "spec": { "accessModes": ["ReadWriteOnce"], "storageClassName": "gp3", "resources": { "requests": { "storage": "10Gi" } } },
            "status": { "phase": "Bound", "capacity": { "storage": "10Gi" } } }),
    );
}

fn template(image: &str) -> Value {
    json!({
        "metadata": { "labels": { "app": "checkout" } },
        "spec": { "containers": [
            { "name": "app", "image": image, "resources": { "limits": { "memory": "512Mi" }, "requests": { "memory": "256Mi" } } },
            { "name": "proxy", "image": "envoy:1.29" }
        ] }
    })
}

fn pod(ns: &str, name: &str, controlled_by: Option<(&str, &str)>, node: &str) -> Value {
    let mut p = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": name, "namespace": ns, "uid": format!("uid-{name}") },
        "spec": { "nodeName": node, "containers": [{ "name": "main", "image": "busybox" }] },
        "status": { "phase": "Running" }
    });
    if let Some((kind, owner_name)) = controlled_by {
        p["metadata"]["ownerReferences"] = owner(kind, "apps/v1", owner_name);
    }
    p
}

/// RFC 7386 merge, with lists of named objects merged by name (the strategic
/// merge the API server applies to containers).
fn merge(into: &mut Value, patch: &Value) {
    match (into, patch) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                if v.is_null() {
                    a.remove(k);
                } else {
                    merge(a.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if b.iter().all(|x| x.get("name").is_some()) => {
            for item in b {
                match a.iter_mut().find(|e| e["name"] == item["name"]) {
                    Some(e) => merge(e, item),
                    None => a.push(item.clone()),
                }
            }
        }
        (slot, v) => *slot = v.clone(),
    }
}

/// The objects a list request selects: kind from the path, its namespace if
/// any, `labelSelector` (k=v,…) and `fieldSelector` (spec.nodeName=…).
fn list(objects: &BTreeMap<String, Value>, path: &str, query: &str) -> Option<Value> {
    let kind = match path.rsplit('/').next()? {
        "pods" => "Pod",
        "nodes" => "Node",
        "replicasets" => "ReplicaSet",
        "events" => "Event",
        "horizontalpodautoscalers" => "HorizontalPodAutoscaler",
        _ => return None,
    };
    let namespace = path.split("/namespaces/").nth(1).and_then(|r| r.split('/').next());
    let params: BTreeMap<String, String> = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    let items: Vec<Value> = objects
        .values()
        .filter(|o| o["kind"] == kind)
        .filter(|o| namespace.is_none_or(|ns| o["metadata"]["namespace"] == ns))
        .filter(|o| {
            params.get("labelSelector").is_none_or(|sel| {
                sel.split(',').all(|kv| {
                    let (k, v) = kv.split_once('=').unwrap();
                    o["metadata"]["labels"][k] == v
                })
            })
        })
        .filter(|o| {
            params.get("fieldSelector").is_none_or(|sel| {
                let node = sel.strip_prefix("spec.nodeName=").expect("only spec.nodeName is served");
                o["spec"]["nodeName"] == node
            })
        })
        .cloned()
        .collect();
    Some(
        json!({ "apiVersion": "v1", "kind": format!("{kind}List"), "metadata": { "resourceVersion": "1" }, "items": items }),
    )
}

fn not_found(path: &str) -> axum::response::Response {
    let status = json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("{path} not found"), "reason": "NotFound", "code": 404 });
    (StatusCode::NOT_FOUND, axum::Json(status)).into_response()
}

/// The controller at work: a new generation is observed and fully rolled out at once.
fn roll_out(d: &mut Value) {
    let generation = d["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
    d["metadata"]["generation"] = json!(generation);
    let replicas = d["spec"]["replicas"].clone();
    d["status"] = json!({ "observedGeneration": generation, "replicas": replicas, "updatedReplicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas });
}

async fn api(
    State(fake): State<Fake>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let path = uri.path().to_owned();
    let query = uri.query().unwrap_or("").to_owned();
    let ctype = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let recorded = if query.is_empty() { path.clone() } else { format!("{path}?{query}") };
    fake.requests.lock().unwrap().push((method.to_string(), recorded, ctype.clone(), parsed.clone()));
    let mut objects = fake.objects.lock().unwrap();
    match (method.as_str(), path.as_str()) {
        ("PATCH", p) if p == format!("{DEPLOY}/scale") => {
            let d = objects.get_mut(DEPLOY).unwrap();
            d["spec"]["replicas"] = parsed["spec"]["replicas"].clone();
            roll_out(d);
            let scale = json!({ "apiVersion": "autoscaling/v1", "kind": "Scale",
                "metadata": { "name": "checkout", "namespace": "shop" },
                "spec": { "replicas": d["spec"]["replicas"] }, "status": { "replicas": d["spec"]["replicas"] } });
            axum::Json(scale).into_response()
        }
        ("PATCH", DEPLOY) if ctype == "application/json-patch+json" => {
            let d = objects.get_mut(DEPLOY).unwrap();
            for op in parsed.as_array().unwrap() {
                assert_eq!((op["op"].as_str(), op["path"].as_str()), (Some("replace"), Some("/spec/template")));
                d["spec"]["template"] = op["value"].clone();
            }
            roll_out(d);
            axum::Json(d.clone()).into_response()
        }
        ("PATCH", p) if ctype == "application/merge-patch+json" && (p == HPA || p == CLAIM) => {
            let o = objects.get_mut(p).unwrap();
            merge(o, &parsed);
            axum::Json(o.clone()).into_response()
        }
        ("PATCH", p) if p == DEPLOY || p.starts_with("/api/v1/nodes/") => match objects.get_mut(p) {
            Some(o) => {
                merge(o, &parsed);
                if p == DEPLOY {
                    roll_out(o);
                }
                axum::Json(o.clone()).into_response()
            }
            None => not_found(p),
        },
        ("POST", p) if p.ends_with("/eviction") => {
            let pod = p.trim_end_matches("/eviction");
            let mut refusals = fake.budget_refusals.lock().unwrap();
            if pod == PAYMENTS && *refusals > 0 {
                *refusals -= 1;
                let status = json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": "Cannot evict pod as it would violate the pod's disruption budget.",
                    "reason": "TooManyRequests", "code": 429 });
                return (StatusCode::TOO_MANY_REQUESTS, axum::Json(status)).into_response();
            }
            match objects.remove(pod) {
                Some(_) => axum::Json(
                    json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201 }),
                )
                .into_response(),
                None => not_found(pod),
            }
        }
        ("GET", p) => match objects.get(p).cloned().or_else(|| list(&objects, p, &query)) {
            Some(o) => axum::Json(o).into_response(),
            None => not_found(p),
        },
        ("DELETE", p) => match objects.remove(p) {
            Some(o) => axum::Json(o).into_response(),
            None => not_found(p),
        },
        _ => (StatusCode::METHOD_NOT_ALLOWED, "unexpected request").into_response(),
    }
}

async fn fake_cluster() -> (Fake, kube::Client) {
    let fake = Fake::default();
    seed(&fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().fallback(api).with_state(fake.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let config = kube::Config::new(url.parse().unwrap());
    executors::install_tls_provider();
    (fake, kube::Client::try_from(config).unwrap())
}

async fn setup() -> (Fake, KubeExecutor) {
    let (fake, client) = fake_cluster().await;
    let exec = KubeExecutor::from_client(
        client,
        KubeConfig { wait_timeout: Duration::from_secs(5), poll_interval: Duration::from_millis(20) },
    );
    (fake, exec)
}

fn action(name: &str, target: &str, params: Value) -> Action {
    Action {
        executor: "kubernetes".into(),
        action: name.into(),
        target: target.into(),
        params: serde_json::from_value(params).unwrap(),
    }
}

/// Requests that change something, as (method, path, content type, body).
fn mutations(fake: &Fake) -> Vec<Request> {
    fake.requests.lock().unwrap().iter().filter(|r| r.0 != "GET").cloned().collect()
}

#[tokio::test]
async fn a_pod_is_resolved_to_its_deployment_and_scaled_then_restored() {
    let (fake, exec) = setup().await;
    let scale = action("scale_deployment", "kubernetes:shop/checkout-7d9f8-x2x7q", json!({ "factor": 2 }));
    let pre = exec.describe(&scale).await.unwrap();
    assert_eq!(pre["deployment"], "checkout");
    assert_eq!(
        pre["resolved"],
        json!(["Pod/checkout-7d9f8-x2x7q", "ReplicaSet/checkout-7d9f8", "Deployment/checkout"])
    );
    let gets: Vec<String> = fake.requests.lock().unwrap().iter().map(|r| format!("{} {}", r.0, r.1)).collect();
    assert_eq!(
        gets,
        [
            "GET /apis/apps/v1/namespaces/shop/deployments/checkout-7d9f8-x2x7q".to_owned(),
            format!("GET {POD}"),
            format!("GET {RS}"),
            format!("GET {DEPLOY}")
        ]
    );

    let out = exec.execute(&scale, &pre, "run-1:apply-0").await.unwrap();
    assert!(out.changed);
    assert_eq!(out.after["replicas"], 4);
    assert!(!exec.execute(&scale, &pre, "run-1:apply-0").await.unwrap().changed, "already at 4: no second patch");
    exec.rollback(&scale, &pre, "run-1:restore-0").await.unwrap();
    assert_eq!(
        mutations(&fake),
        [
            (
                "PATCH".into(),
                format!("{DEPLOY}/scale"),
                "application/merge-patch+json".into(),
                json!({ "spec": { "replicas": 4 } })
            ),
            (
                "PATCH".into(),
                format!("{DEPLOY}/scale"),
                "application/merge-patch+json".into(),
                json!({ "spec": { "replicas": 2 } })
            ),
        ]
    );
    assert_eq!(fake.objects.lock().unwrap()[DEPLOY]["spec"]["replicas"], 2);
}

#[tokio::test]
async fn restart_and_image_patches_are_exact_and_rolled_back() {
    let (fake, exec) = setup().await;
    let restart = action("restart_deployment", "kubernetes:shop/checkout", json!({}));
    let pre = exec.describe(&restart).await.unwrap();
    assert!(exec.execute(&restart, &pre, "run-2:apply-0").await.unwrap().changed);
    assert!(
        !exec.execute(&restart, &pre, "run-2:apply-0").await.unwrap().changed,
        "the key annotation says it is done"
    );
    let m = mutations(&fake);
    assert_eq!(m.len(), 1);
    assert_eq!(
        (m[0].0.as_str(), m[0].1.as_str(), m[0].2.as_str()),
        ("PATCH", DEPLOY, "application/strategic-merge-patch+json")
    );
    let annotations = &m[0].3["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations[RESTART_KEY], "run-2:apply-0");
    assert!(annotations["kubectl.kubernetes.io/restartedAt"].as_str().unwrap().ends_with('Z'));

    let image = action(
        "patch_image",
        "kubernetes:shop/checkout",
        json!({ "image": "registry.local/checkout:1.41.3", "container": "app" }),
    );
    let pre = exec.describe(&image).await.unwrap();
    assert!(exec.execute(&image, &pre, "run-3:apply-0").await.unwrap().changed);
    assert!(exec.rollback(&image, &pre, "run-3:restore-0").await.unwrap().changed);
    let patch =
        |img: &str| json!({ "spec": { "template": { "spec": { "containers": [{ "name": "app", "image": img }] } } } });
    let m = mutations(&fake);
    assert_eq!(m[1].3, patch("registry.local/checkout:1.41.3"));
    assert_eq!(m[2].3, patch("registry.local/checkout:1.42.0"));
    let d = &fake.objects.lock().unwrap()[DEPLOY];
    assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["image"], "registry.local/checkout:1.42.0");
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][1]["image"], "envoy:1.29",
        "the other container is untouched"
    );
}

#[tokio::test]
async fn only_a_pod_with_a_controller_is_deleted() {
    let (fake, exec) = setup().await;
    let owned = action("delete_pod", "kubernetes:shop/checkout-7d9f8-x2x7q", json!({}));
    let pre = exec.describe(&owned).await.unwrap();
    assert_eq!(pre["controller"], "ReplicaSet/checkout-7d9f8");
    assert!(exec.execute(&owned, &pre, "run-4:apply-0").await.unwrap().changed);
    assert!(!exec.execute(&owned, &pre, "run-4:apply-0").await.unwrap().changed, "already gone");

    let bare = action("delete_pod", "kubernetes:shop/debug-shell", json!({}));
    let pre = exec.describe(&bare).await.unwrap();
    let err = exec.execute(&bare, &pre, "run-5:apply-0").await.unwrap_err();
    assert!(matches!(err, ExecError::Refused { guard: "ownership", .. }), "{err}");
    let m = mutations(&fake);
    assert_eq!(m.len(), 1);
    assert_eq!((m[0].0.as_str(), m[0].1.as_str()), ("DELETE", POD));
    assert!(fake.objects.lock().unwrap().contains_key(BARE), "the bare pod is still there");
}

#[tokio::test]
async fn dry_run_sends_no_mutating_request() {
    let (fake, exec) = setup().await;
    let rails = Guardrails {
        allowlist: Allowlist::parse(&["kubernetes:shop/*", "kubernetes:node/*"]).unwrap(),
        dry_run: true,
        ..Guardrails::default()
    };
    let g = Guarded::new(Arc::new(exec), rails, Arc::new(NoKillSwitch));
    for a in [
        action("scale_deployment", "kubernetes:shop/checkout", json!({ "replicas": 3 })),
        action("restart_deployment", "kubernetes:shop/checkout", json!({})),
        action("patch_image", "kubernetes:shop/checkout", json!({ "image": "x:1" })),
        action("patch_image", "kubernetes:shop/checkout", json!({ "image": "last_known_good" })),
        action("patch_memory_limit", "kubernetes:shop/checkout", json!({})),
        action("rollback_deployment", "kubernetes:shop/checkout", json!({})),
        action("delete_pod", "kubernetes:shop/checkout-7d9f8-x2x7q", json!({})),
        action("cordon_node", "kubernetes:node/node-c", json!({})),
        action("drain_node", "kubernetes:node/node-a", json!({})),
        action("uncordon_node", "kubernetes:node/node-c", json!({})),
    ] {
        let pre = g.describe(&a).await.unwrap();
        let out = g.execute(&a, &pre, "k").await.unwrap();
        assert!(!out.changed && out.summary.starts_with("dry run"), "{out:?}");
        g.rollback(&a, &pre, "k").await.unwrap();
    }
    assert!(mutations(&fake).is_empty(), "{:?}", mutations(&fake));
    // The blast radius holds here too: 2 → 5 is refused before anything is sent.
    let big = action("scale_deployment", "kubernetes:shop/checkout", json!({ "replicas": 5 }));
    let pre = g.describe(&big).await.unwrap();
    assert!(matches!(g.execute(&big, &pre, "k").await.unwrap_err(), ExecError::Refused { guard: "blast_radius", .. }));
}

#[tokio::test]
async fn memory_limit_is_doubled_within_floor_and_cap_then_restored() {
    let (fake, exec) = setup().await;
    let raise = action(
        "patch_memory_limit",
        "kubernetes:shop/checkout",
        json!({ "factor": 2, "floor_mib": 256, "cap_mib": 8192 }),
    );
    let pre = exec.describe(&raise).await.unwrap();
    assert_eq!(pre["containers"][0]["memory_limit"], "512Mi");
    assert_eq!(exec.dry_run(&raise, &pre).await.unwrap().summary, "raise app's memory limit from 512Mi to 1024Mi");
    assert!(exec.execute(&raise, &pre, "run-6:apply-0").await.unwrap().changed);
    assert!(!exec.execute(&raise, &pre, "run-6:apply-0").await.unwrap().changed, "already at 1024Mi");
    assert!(exec.rollback(&raise, &pre, "run-6:restore-0").await.unwrap().changed);
    let limit = |m: &str| {
        json!({ "spec": { "template": { "spec": { "containers": [
            { "name": "app", "resources": { "limits": { "memory": m } } }
        ] } } } })
    };
    let m = mutations(&fake);
    assert_eq!(
        m,
        [
            ("PATCH".into(), DEPLOY.into(), "application/strategic-merge-patch+json".into(), limit("1024Mi")),
            ("PATCH".into(), DEPLOY.into(), "application/strategic-merge-patch+json".into(), limit("512Mi")),
        ]
    );
    let d = fake.objects.lock().unwrap()[DEPLOY].clone();
    assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"], "512Mi");
    assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["memory"], "256Mi");

    // The cap bounds the raise; a floor lifts a small one; at the cap it is refused.
    let capped = action("patch_memory_limit", "kubernetes:shop/checkout", json!({ "factor": 4, "cap_mib": 1536 }));
    assert!(exec.dry_run(&capped, &pre).await.unwrap().summary.ends_with("to 1536Mi"));
    let floored = action("patch_memory_limit", "kubernetes:shop/checkout", json!({ "factor": 1.1, "floor_mib": 2048 }));
    assert!(exec.dry_run(&floored, &pre).await.unwrap().summary.ends_with("to 2048Mi"));
    let at_cap = action("patch_memory_limit", "kubernetes:shop/checkout", json!({ "cap_mib": 512 }));
    let err = exec.dry_run(&at_cap, &pre).await.unwrap_err();
    assert!(matches!(err, ExecError::Refused { guard: "memory_cap", .. }), "{err}");
    let sidecar = action("patch_memory_limit", "kubernetes:shop/checkout", json!({ "container": "proxy" }));
    assert!(matches!(exec.dry_run(&sidecar, &pre).await.unwrap_err(), ExecError::BadAction(_)), "no limit to raise");
}

#[tokio::test]
async fn rollback_deployment_restores_the_previous_revisions_template_and_back() {
    let (fake, exec) = setup().await;
    let undo = action("rollback_deployment", "kubernetes:shop/checkout", json!({}));
    let pre = exec.describe(&undo).await.unwrap();
    let lists: Vec<String> =
        fake.requests.lock().unwrap().iter().filter(|r| r.1.contains('?')).map(|r| r.1.clone()).collect();
    assert_eq!(lists, ["/apis/apps/v1/namespaces/shop/replicasets?&labelSelector=app%3Dcheckout"]);
    assert_eq!(pre["revision"], 3);
    assert_eq!(pre["previous"]["revision"], 2, "the canary's revision 1 is another deployment's");
    assert_eq!(pre["previous"]["replicaset"], "checkout-5c6b4");
    assert_eq!(
        exec.dry_run(&undo, &pre).await.unwrap().summary,
        "roll deployment checkout back from revision 3 to revision 2"
    );
    assert!(exec.execute(&undo, &pre, "run-7:apply-0").await.unwrap().changed);
    assert!(!exec.execute(&undo, &pre, "run-7:apply-0").await.unwrap().changed, "already on revision 2's template");
    assert!(exec.rollback(&undo, &pre, "run-7:restore-0").await.unwrap().changed);

    let m = mutations(&fake);
    assert_eq!(m.len(), 2);
    let replace = |image: &str| json!([{ "op": "replace", "path": "/spec/template", "value": template(image) }]);
    assert_eq!(
        m[0],
        (
            "PATCH".into(),
            DEPLOY.into(),
            "application/json-patch+json".into(),
            replace("registry.local/checkout:1.41.3")
        ),
        "revision 2's template, without its pod-template-hash label"
    );
    assert_eq!(
        m[1],
        (
            "PATCH".into(),
            DEPLOY.into(),
            "application/json-patch+json".into(),
            replace("registry.local/checkout:1.42.0")
        )
    );

    // `last_known_good` is the previous revision's image of that container.
    let fallback =
        action("patch_image", "kubernetes:shop/checkout", json!({ "image": "last_known_good", "container": "app" }));
    let pre = exec.describe(&fallback).await.unwrap();
    assert_eq!(
        exec.dry_run(&fallback, &pre).await.unwrap().summary,
        "set app's image to registry.local/checkout:1.41.3"
    );

    // With no earlier revision there is nothing to roll back to.
    fake.objects.lock().unwrap().remove(OLD_RS);
    let pre = exec.describe(&undo).await.unwrap();
    assert!(matches!(exec.dry_run(&undo, &pre).await.unwrap_err(), ExecError::NotFound(_)));
}

#[tokio::test]
async fn drain_evicts_through_the_eviction_api_and_skips_what_it_must() {
    let (fake, exec) = setup().await;
    let drain = action("drain_node", "kubernetes:node/node-a", json!({}));
    let pre = exec.describe(&drain).await.unwrap();
    let skips: BTreeMap<String, Value> = pre["pods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap().to_owned(), p["skip"].clone()))
        .collect();
    assert_eq!(
        skips,
        BTreeMap::from([
            ("checkout-7d9f8-x2x7q".to_owned(), Value::Null),
            ("coredns-5d78c-4kx9z".to_owned(), json!("kube-system")),
            ("fluentd-x7k2p".to_owned(), json!("daemonset")),
            ("kube-proxy-node-a".to_owned(), json!("mirror")),
            ("payments-6f7c9-q8w2d".to_owned(), Value::Null),
            ("report-28731-tz6vq".to_owned(), json!("finished")),
        ])
    );
    let out = exec.execute(&drain, &pre, "run-8:apply-0").await.unwrap();
    assert!(out.changed);
    assert_eq!(out.summary, "drained node node-a: 2 pods evicted");
    assert!(!exec.execute(&drain, &pre, "run-8:apply-0").await.unwrap().changed, "cordoned and empty: nothing to do");

    let eviction = |ns: &str, name: &str| {
        (
            "POST".to_owned(),
            format!("/api/v1/namespaces/{ns}/pods/{name}/eviction"),
            "application/json".to_owned(),
            json!({ "apiVersion": "policy/v1", "kind": "Eviction", "metadata": { "name": name, "namespace": ns } }),
        )
    };
    let cordon = |on: bool| {
        (
            "PATCH".to_owned(),
            NODE_A.to_owned(),
            "application/merge-patch+json".to_owned(),
            json!({ "spec": { "unschedulable": on } }),
        )
    };
    assert_eq!(
        mutations(&fake),
        [
            cordon(true),
            eviction("pay", "payments-6f7c9-q8w2d"),
            eviction("pay", "payments-6f7c9-q8w2d"),
            eviction("shop", "checkout-7d9f8-x2x7q"),
        ],
        "cordon first; the budget's 429 is retried; nothing else is evicted"
    );
    let gets: Vec<String> =
        fake.requests.lock().unwrap().iter().filter(|r| r.0 == "GET").map(|r| r.1.clone()).collect();
    assert!(gets.contains(&"/api/v1/pods?&fieldSelector=spec.nodeName%3Dnode-a".to_owned()), "{gets:?}");
    {
        let o = fake.objects.lock().unwrap();
        assert!(!o.contains_key(POD) && !o.contains_key(PAYMENTS));
        assert!(o.contains_key("/api/v1/namespaces/logging/pods/fluentd-x7k2p"));
        assert!(o.contains_key("/api/v1/namespaces/kube-system/pods/coredns-5d78c-4kx9z"));
        assert_eq!(o[NODE_A]["spec"]["unschedulable"], true);
    }

    exec.rollback(&drain, &pre, "run-8:restore-0").await.unwrap();
    assert_eq!(mutations(&fake).last().unwrap(), &cordon(false));
    assert_eq!(fake.objects.lock().unwrap()[NODE_A]["spec"]["unschedulable"], false);
}

#[tokio::test]
async fn a_drain_that_would_lose_a_pod_or_a_second_node_is_refused() {
    let (fake, exec) = setup().await;
    // Node-c is cordoned, uncordoned and cordoned again in a row: the guardrails
    // keep no cooldown (that is the policy's, for auto-approvals).
    let rails = Guardrails { allowlist: Allowlist::parse(&["kubernetes:node/*"]).unwrap(), ..Guardrails::default() };
    let g = Guarded::new(Arc::new(exec), rails, Arc::new(NoKillSwitch));

    // node-b runs debug-shell, which no controller owns.
    let drain_b = action("drain_node", "kubernetes:node/node-b", json!({}));
    let pre = g.describe(&drain_b).await.unwrap();
    let err = g.execute(&drain_b, &pre, "run-9:apply-0").await.unwrap_err();
    assert!(
        matches!(&err, ExecError::Refused { guard: "ownership", reason } if reason.contains("shop/debug-shell")),
        "{err}"
    );

    // With node-c already cordoned, cordoning or draining node-a would be a second node.
    let cordon_c = action("cordon_node", "kubernetes:node/node-c", json!({}));
    let pre = g.describe(&cordon_c).await.unwrap();
    assert!(g.execute(&cordon_c, &pre, "run-10:apply-0").await.unwrap().changed);
    for name in ["drain_node", "cordon_node"] {
        let a = action(name, "kubernetes:node/node-a", json!({}));
        let pre = g.describe(&a).await.unwrap();
        assert_eq!(pre["other_nodes_cordoned"], 1);
        let err = g.execute(&a, &pre, "run-11:apply-0").await.unwrap_err();
        assert!(matches!(err, ExecError::Refused { guard: "blast_radius", .. }), "{err}");
    }
    // Uncordoning is always allowed, and its rollback cordons again.
    let uncordon_c = action("uncordon_node", "kubernetes:node/node-c", json!({}));
    let pre = g.describe(&uncordon_c).await.unwrap();
    assert!(g.execute(&uncordon_c, &pre, "run-12:apply-0").await.unwrap().changed);
    assert!(g.rollback(&uncordon_c, &pre, "run-12:restore-0").await.unwrap().changed);

    let m = mutations(&fake);
    let node_c = |on: bool| {
        (
            "PATCH".to_owned(),
            NODE_C.to_owned(),
            "application/merge-patch+json".to_owned(),
            json!({ "spec": { "unschedulable": on } }),
        )
    };
    assert_eq!(m, [node_c(true), node_c(false), node_c(true)], "nothing reached node-a or node-b");
    assert!(fake.objects.lock().unwrap().contains_key(BARE));
}

/// The inspector reads a Deployment's pods (an OOMKilled container, one
/// waiting in CrashLoopBackOff), the events about them, its rollout history
/// and its nodes, with reads only, each one asserted.
#[tokio::test]
async fn the_inspector_reads_pods_events_rollouts_and_nodes_and_changes_nothing() {
    use executors::kubernetes::inspect::{Inspector, PodReport};
    let (fake, client) = fake_cluster().await;
    {
        let mut o = fake.objects.lock().unwrap();
        let p = o.get_mut(POD).unwrap();
        p["metadata"]["labels"] = json!({ "app": "checkout", "pod-template-hash": "7d9f8" });
        p["status"] = json!({
            "phase": "Running",
            "conditions": [{ "type": "Ready", "status": "False" }],
            "containerStatuses": [
                { "name": "app", "ready": false, "restartCount": 5, "image": "registry.local/checkout:1.42.0", "imageID": "",
                  "state": { "waiting": { "reason": "CrashLoopBackOff", "message": "back-off 2m40s restarting failed container" } },
                  "lastState": { "terminated": { "reason": "OOMKilled", "exitCode": 137, "startedAt": "2026-11-30T10:00:00Z", "finishedAt": "2026-11-30T10:05:00Z" } } },
                { "name": "proxy", "ready": true, "restartCount": 0, "image": "envoy:1.29", "imageID": "", "state": { "running": {} } }
            ]
        });
        o.get_mut(RS).unwrap()["metadata"]["creationTimestamp"] = json!("2026-11-30T09:50:00Z");
        o.get_mut(NODE_A).unwrap()["status"]["conditions"] =
            json!([{ "type": "Ready", "status": "True" }, { "type": "MemoryPressure", "status": "True" }]);
        let event = |name: &str, kind: &str, object: &str, reason: &str, message: &str, last: &str| {
            json!({ "apiVersion": "v1", "kind": "Event",
                "metadata": { "name": name, "namespace": "shop" },
                "involvedObject": { "kind": kind, "name": object, "namespace": "shop" },
                "reason": reason, "message": message, "type": "Warning", "count": 12, "lastTimestamp": last })
        };
        o.insert(
            "/api/v1/namespaces/shop/events/checkout-7d9f8-x2x7q.1".into(),
            event(
                "checkout-7d9f8-x2x7q.1",
                "Pod",
                "checkout-7d9f8-x2x7q",
                "BackOff",
                "Back-off restarting failed container app",
                "2026-11-30T10:06:00Z",
            ),
        );
        o.insert(
            "/api/v1/namespaces/shop/events/other.1".into(),
            event("other.1", "Pod", "someone-else", "Failed", "not about checkout", "2026-11-30T10:07:00Z"),
        );
    }
    let report = Inspector::from_client(client).workload("shop", "checkout").await.unwrap();
    assert_eq!(report.revision, Some(3));
    assert_eq!(
        report.pods,
        [PodReport {
            name: "checkout-7d9f8-x2x7q".into(),
            node: Some("node-a".into()),
            ready: false,
            restarts: 5,
            last_terminated: Some(("OOMKilled".into(), 137)),
            waiting: Some("CrashLoopBackOff".into()),
        }]
    );
    assert_eq!(report.events.len(), 1, "only events about checkout: {:?}", report.events);
    assert_eq!(
        (report.events[0].reason.as_str(), report.events[0].object.as_str(), report.events[0].count),
        ("BackOff", "Pod/checkout-7d9f8-x2x7q", 12)
    );
    let revisions: Vec<(u64, &str)> = report.rollouts.iter().map(|r| (r.revision, r.replicaset.as_str())).collect();
    assert_eq!(revisions, [(3, "checkout-7d9f8"), (2, "checkout-5c6b4")], "the canary's ReplicaSet is not checkout's");
    assert_eq!(report.rollouts[0].created_ms, Some(1_796_032_200_000));
    assert_eq!(report.rollouts[0].images, ["registry.local/checkout:1.42.0", "envoy:1.29"]);
    assert_eq!(
        (report.nodes[0].name.as_str(), report.nodes[0].ready, report.nodes[0].problems.as_slice()),
        ("node-a", Some(true), ["MemoryPressure".to_owned()].as_slice())
    );
    let requests = fake.requests.lock().unwrap().clone();
    let seen: Vec<(String, String)> = requests.iter().map(|(m, p, _, _)| (m.clone(), p.clone())).collect();
    assert_eq!(
        seen,
        [
            ("GET".to_owned(), DEPLOY.to_owned()),
            ("GET".into(), "/apis/apps/v1/namespaces/shop/replicasets?&labelSelector=app%3Dcheckout".into()),
            ("GET".into(), "/api/v1/namespaces/shop/pods?&labelSelector=app%3Dcheckout".into()),
            ("GET".into(), "/api/v1/namespaces/shop/events".into()),
            ("GET".into(), NODE_A.into()),
        ]
    );
}

/// KubeHpaMaxedOut's action: the autoscaler that scales the Deployment gets a
/// higher ceiling, once; the rollback puts the old one back.
#[tokio::test]
async fn an_autoscalers_ceiling_is_raised_once_and_restored() {
    let (fake, exec) = setup().await;
    let a = action("raise_hpa_max", "kubernetes:shop/checkout", json!({ "factor": 1.5 }));
    let pre = exec.describe(&a).await.unwrap();
    assert_eq!((pre["hpa"].as_str(), pre["max_replicas"].as_i64()), (Some("checkout-hpa"), Some(4)));
    let plan = exec.dry_run(&a, &pre).await.unwrap();
    assert_eq!(plan.summary, "raise autoscaler checkout-hpa's maxReplicas from 4 to 6");
    assert_eq!(plan.blast.replicas, Some((4, 6)), "the scale-factor guardrail sees it");
    let out = exec.execute(&a, &pre, "run:apply-0").await.unwrap();
    assert!(out.changed);
    assert_eq!(fake.objects.lock().unwrap()[HPA]["spec"]["maxReplicas"], 6);
    let again = exec.execute(&a, &pre, "run:apply-0").await.unwrap();
    assert!(!again.changed, "a repeat finds it done");
    let back = exec.rollback(&a, &pre, "run:restore-0").await.unwrap();
    assert!(back.changed);
    assert_eq!(fake.objects.lock().unwrap()[HPA]["spec"]["maxReplicas"], 4);
    let patches: Vec<Request> = fake.requests.lock().unwrap().iter().filter(|r| r.0 == "PATCH").cloned().collect();
    assert_eq!(
        patches,
        [
            (
                "PATCH".into(),
                HPA.into(),
                "application/merge-patch+json".into(),
                json!({ "spec": { "maxReplicas": 6 } })
            ),
            (
                "PATCH".into(),
                HPA.into(),
                "application/merge-patch+json".into(),
                json!({ "spec": { "maxReplicas": 4 } })
            ),
        ]
    );
    // At the cap already: refused, not a no-op presented as a fix.
    let capped = action("raise_hpa_max", "kubernetes:shop/checkout", json!({ "cap": 4 }));
    assert!(matches!(exec.dry_run(&capped, &pre).await, Err(ExecError::Refused { guard: "hpa_cap", .. })));
    let none = action("raise_hpa_max", "kubernetes:shop/payments", json!({}));
    assert!(matches!(exec.describe(&none).await, Err(ExecError::NotFound(_))));
}

/// KubePersistentVolumeFillingUp's action: the claim's request grows, once;
/// a volume cannot shrink, so the rollback changes nothing.
#[tokio::test]
async fn a_claim_is_expanded_once_and_never_shrunk() {
    let (fake, exec) = setup().await;
    let a = action("expand_volume", "kubernetes:shop/checkout-data", json!({ "factor": 1.5 }));
    let pre = exec.describe(&a).await.unwrap();
    assert_eq!(
        pre,
        json!({ "claim": "checkout-data", "requested": "10Gi", "capacity": "10Gi", "storage_class": "gp3" })
    );
    let out = exec.execute(&a, &pre, "run:apply-0").await.unwrap();
    assert_eq!((out.changed, out.summary.as_str()), (true, "expand claim checkout-data from 10Gi to 15Gi"));
    assert_eq!(fake.objects.lock().unwrap()[CLAIM]["spec"]["resources"]["requests"]["storage"], "15Gi");
    assert!(!exec.execute(&a, &pre, "run:apply-0").await.unwrap().changed, "a repeat finds it done");
    let back = exec.rollback(&a, &pre, "run:restore-0").await.unwrap();
    assert!(!back.changed);
    assert_eq!(fake.objects.lock().unwrap()[CLAIM]["spec"]["resources"]["requests"]["storage"], "15Gi");
    let patches: Vec<Request> = fake.requests.lock().unwrap().iter().filter(|r| r.0 == "PATCH").cloned().collect();
    assert_eq!(
        patches,
        [(
            "PATCH".into(),
            CLAIM.into(),
            "application/merge-patch+json".into(),
            json!({ "spec": { "resources": { "requests": { "storage": "15Gi" } } } })
        )]
    );
}

/// (API group, resource or resource/subresource, verb) of a request, as RBAC
/// names it: `GET /apis/apps/v1/namespaces/shop/deployments/checkout/scale`
/// is ("apps", "deployments/scale", "get"); a GET without a name is a list.
fn rbac_request(method: &str, path_and_query: &str) -> (String, String, String) {
    let path = path_and_query.split('?').next().unwrap();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => panic!("not a Kubernetes API path: {path}"),
    };
    let rest = match rest {
        ["namespaces", _ns, rest @ ..] if !rest.is_empty() => rest,
        _ => rest,
    };
    let (resource, named) = match rest {
        [resource] => (resource.to_string(), false),
        [resource, _name] => (resource.to_string(), true),
        [resource, _name, sub] => (format!("{resource}/{sub}"), true),
        _ => panic!("unexpected path shape: {path}"),
    };
    let watch = path_and_query.contains("watch=true");
    let verb = match (method, named) {
        ("GET", _) if watch => "watch",
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => panic!("unexpected method {method}"),
    };
    (group.to_owned(), resource, verb.to_owned())
}

/// What the ClusterRole in k8s/base/rbac.yaml grants, one triple per
/// (group, resource, verb).
fn cluster_role_grants() -> std::collections::BTreeSet<(String, String, String)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../k8s/base/rbac.yaml");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    let mut grants = std::collections::BTreeSet::new();
    let mut roles = 0;
    for doc in text.split("\n---\n") {
        let doc: Value = serde_saphyr::from_str(doc).unwrap_or_else(|e| panic!("{path}: {e}"));
        if doc["kind"] != "ClusterRole" {
            continue;
        }
        roles += 1;
        for rule in doc["rules"].as_array().unwrap() {
            let strings = |key: &str| -> Vec<String> {
                rule[key].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect()
            };
            for g in strings("apiGroups") {
                for r in strings("resources") {
                    for v in strings("verbs") {
                        assert!(!g.contains('*') && !r.contains('*') && !v.contains('*'), "a wildcard in {rule}");
                        grants.insert((g.clone(), r.clone(), v));
                    }
                }
            }
        }
    }
    assert_eq!(roles, 1, "{path} holds one ClusterRole");
    grants
}

/// Every action of [`executors::kubernetes::ACTIONS`] (capture, act, roll
/// back) and the inspector, each against a fresh recording API server: the
/// requests they make, as RBAC names them, are exactly what the executor's
/// ClusterRole grants. A new request without a rule, or a rule no request
/// needs, fails here.
#[tokio::test]
async fn the_cluster_role_grants_exactly_what_the_executor_uses() {
    use executors::kubernetes::inspect::Inspector;
    use executors::kubernetes::ACTIONS;
    let mut used = std::collections::BTreeSet::new();
    let mut record = |fake: &Fake| {
        for (method, path, _, _) in fake.requests.lock().unwrap().iter() {
            used.insert(rbac_request(method, path));
        }
    };
    for name in ACTIONS {
        // The actions each needs to act on the seeded objects (as in the tests
        // above), each then rolled back, except a cordon its uncordon undoes.
        let one = |a: Action| vec![(a, true)];
        let steps: Vec<(Action, bool)> = match name {
            "scale_deployment" => one(action(name, "kubernetes:shop/checkout-7d9f8-x2x7q", json!({ "factor": 2 }))),
            "restart_deployment" | "rollback_deployment" => one(action(name, "kubernetes:shop/checkout", json!({}))),
            "patch_image" => vec![
                (action(name, "kubernetes:shop/checkout", json!({ "image": "registry.local/checkout:1.41.3" })), true),
                (action(name, "kubernetes:shop/checkout", json!({ "image": "last_known_good" })), true),
            ],
            "patch_memory_limit" => one(action(name, "kubernetes:shop/checkout", json!({ "factor": 2 }))),
            "delete_pod" => one(action(name, "kubernetes:shop/checkout-7d9f8-x2x7q", json!({}))),
            "cordon_node" | "uncordon_node" => vec![
                (action("cordon_node", "kubernetes:node/node-c", json!({})), false),
                (action("uncordon_node", "kubernetes:node/node-c", json!({})), true),
            ],
            "drain_node" => one(action(name, "kubernetes:node/node-a", json!({}))),
            "raise_hpa_max" => one(action(name, "kubernetes:shop/checkout", json!({ "factor": 1.5 }))),
            "expand_volume" => one(action(name, "kubernetes:shop/checkout-data", json!({ "factor": 1.5 }))),
            other => panic!("{other} is in ACTIONS but this test has no scenario for it: add one"),
        };
        let (fake, exec) = setup().await;
        for (i, (a, roll_back)) in steps.iter().enumerate() {
            let pre = exec.describe(a).await.unwrap_or_else(|e| panic!("{}: describe: {e}", a.action));
            let out = exec.execute(a, &pre, &format!("rbac:{i}")).await;
            assert!(out.as_ref().is_ok_and(|o| o.changed), "{}: {out:?}", a.action);
            if *roll_back {
                exec.rollback(a, &pre, &format!("rbac:restore-{i}"))
                    .await
                    .unwrap_or_else(|e| panic!("{}: rollback: {e}", a.action));
            }
        }
        record(&fake);
    }
    let (fake, client) = fake_cluster().await;
    Inspector::from_client(client).workload("shop", "checkout").await.unwrap();
    record(&fake);

    let granted = cluster_role_grants();
    let missing: Vec<_> = used.difference(&granted).collect();
    let unused: Vec<_> = granted.difference(&used).collect();
    assert!(
        missing.is_empty() && unused.is_empty(),
        "k8s/base/rbac.yaml and the executor disagree\n  used, not granted: {missing:?}\n  granted, never used: {unused:?}"
    );
}
