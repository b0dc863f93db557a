//! The Kubernetes executor against a local server that speaks the Kubernetes
//! REST paths it uses, serves realistic objects (a Deployment, its ReplicaSet,
//! their pods, a bare pod) and records every request: method, path, content
//! type and body are asserted exactly.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use executors::kubernetes::{KubeConfig, KubeExecutor, RESTART_KEY};
use executors::{Action, ExecError, Executor, Guarded, Guardrails, NoKillSwitch};
use serde_json::{json, Value};

/// (method, path, content type, body) of one request.
type Request = (String, String, String, Value);

#[derive(Clone, Default)]
struct Fake {
    objects: Arc<Mutex<BTreeMap<String, Value>>>,
    /// (method, path, content type, body) of every request.
    requests: Arc<Mutex<Vec<Request>>>,
}

const DEPLOY: &str = "/apis/apps/v1/namespaces/shop/deployments/checkout";
const RS: &str = "/apis/apps/v1/namespaces/shop/replicasets/checkout-7d9f8";
const POD: &str = "/api/v1/namespaces/shop/pods/checkout-7d9f8-x2x7q";
const BARE: &str = "/api/v1/namespaces/shop/pods/debug-shell";

fn owner(kind: &str, api: &str, name: &str) -> Value {
    json!([{ "apiVersion": api, "kind": kind, "name": name, "uid": format!("uid-{name}"), "controller": true, "blockOwnerDeletion": true }])
}

fn seed(fake: &Fake) {
    let mut o = fake.objects.lock().unwrap();
    o.insert(DEPLOY.into(), json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": "checkout", "namespace": "shop", "uid": "uid-checkout", "generation": 3 },
        "spec": {
            "replicas": 2,
            "selector": { "matchLabels": { "app": "checkout" } },
            "template": {
                "metadata": { "labels": { "app": "checkout" } },
                "spec": { "containers": [
                    { "name": "app", "image": "registry.local/checkout:1.42.0" },
                    { "name": "proxy", "image": "envoy:1.29" }
                ] }
            }
        },
        "status": { "observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2 }
    }));
    o.insert(RS.into(), json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": { "name": "checkout-7d9f8", "namespace": "shop", "ownerReferences": owner("Deployment", "apps/v1", "checkout") },
        "spec": { "replicas": 2, "selector": { "matchLabels": { "app": "checkout" } } }
    }));
    o.insert(POD.into(), json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": "checkout-7d9f8-x2x7q", "namespace": "shop", "ownerReferences": owner("ReplicaSet", "apps/v1", "checkout-7d9f8") },
        "spec": { "containers": [{ "name": "app", "image": "registry.local/checkout:1.42.0" }] }
    }));
    o.insert(
        BARE.into(),
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": "debug-shell", "namespace": "shop" },
            "spec": { "containers": [{ "name": "sh", "image": "busybox" }] }
        }),
    );
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
    let ctype = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    fake.requests.lock().unwrap().push((method.to_string(), path.clone(), ctype, parsed.clone()));
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
        ("PATCH", DEPLOY) => {
            let d = objects.get_mut(DEPLOY).unwrap();
            let template = &parsed["spec"]["template"];
            if let Some(annotations) = template["metadata"]["annotations"].as_object() {
                let target = &mut d["spec"]["template"]["metadata"];
                if target.get("annotations").is_none() {
                    target["annotations"] = json!({});
                }
                for (k, v) in annotations {
                    target["annotations"][k] = v.clone();
                }
            }
            // Strategic merge: containers are merged by name.
            for c in template["spec"]["containers"].as_array().into_iter().flatten() {
                let containers = d["spec"]["template"]["spec"]["containers"].as_array_mut().unwrap();
                let existing = containers.iter_mut().find(|e| e["name"] == c["name"]).unwrap();
                existing["image"] = c["image"].clone();
            }
            roll_out(d);
            axum::Json(d.clone()).into_response()
        }
        ("GET", p) => match objects.get(p) {
            Some(o) => axum::Json(o.clone()).into_response(),
            None => not_found(p),
        },
        ("DELETE", p) => match objects.remove(p) {
            Some(o) => axum::Json(o).into_response(),
            None => not_found(p),
        },
        _ => (StatusCode::METHOD_NOT_ALLOWED, "unexpected request").into_response(),
    }
}

async fn setup() -> (Fake, KubeExecutor) {
    let fake = Fake::default();
    seed(&fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().fallback(api).with_state(fake.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let config = kube::Config::new(url.parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
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
    let rails = Guardrails { allowlist: vec!["kubernetes:shop/*".into()], dry_run: true, ..Guardrails::default() };
    let g = Guarded::new(Arc::new(exec), rails, Arc::new(NoKillSwitch)).unwrap();
    for a in [
        action("scale_deployment", "kubernetes:shop/checkout", json!({ "replicas": 3 })),
        action("restart_deployment", "kubernetes:shop/checkout", json!({})),
        action("patch_image", "kubernetes:shop/checkout", json!({ "image": "x:1" })),
        action("delete_pod", "kubernetes:shop/checkout-7d9f8-x2x7q", json!({})),
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
