//! Cluster evidence: analysis reads the affected Deployment's pods, events,
//! rollouts and nodes through kube (the `KubeCluster` adapter `serve` wires)
//! from a local server that speaks the Kubernetes REST paths with realistic
//! objects; what the cluster states chooses the runbook and the step, and a
//! label claiming the same is not evidence.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::IntoResponse;
use engine::testing::{wait_until, Backend, BackgroundWorker, TestDb};
use engine::RunStatus;
use executors::kubernetes::inspect::Inspector;
use nodes::incident::Detection;
use nodes::workflow::{self, Incident, WorkflowConfig};
use serde_json::{json, Value};

type Objects = Arc<Mutex<BTreeMap<String, Value>>>;

fn minutes_ago(m: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now() - Duration::from_secs(m * 60)).to_string()
}

/// A Deployment `name` in `prod`, its current ReplicaSet (rolled out
/// `rolled_minutes_ago`) and one pod with `status`.
fn workload(o: &mut BTreeMap<String, Value>, name: &str, hash: &str, rolled_minutes_ago: u64, status: Value) {
    let labels = json!({ "app": name });
    o.insert(
        format!("/apis/apps/v1/namespaces/prod/deployments/{name}"),
        json!({ "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": { "name": name, "namespace": "prod", "annotations": { "deployment.kubernetes.io/revision": "4" } },
            "spec": { "replicas": 1, "selector": { "matchLabels": labels },
                "template": { "metadata": { "labels": labels }, "spec": { "containers": [{ "name": "app", "image": format!("registry.local/{name}:2.0.0") }] } } } }),
    );
    let rs = format!("{name}-{hash}");
    o.insert(
        format!("/apis/apps/v1/namespaces/prod/replicasets/{rs}"),
        json!({ "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": { "name": rs, "namespace": "prod", "labels": labels, "creationTimestamp": minutes_ago(rolled_minutes_ago),
                "annotations": { "deployment.kubernetes.io/revision": "4" },
                "ownerReferences": [{ "apiVersion": "apps/v1", "kind": "Deployment", "name": name, "uid": format!("uid-{name}"), "controller": true }] },
            "spec": { "replicas": 1, "selector": { "matchLabels": labels },
                "template": { "metadata": { "labels": labels }, "spec": { "containers": [{ "name": "app", "image": format!("registry.local/{name}:2.0.0") }] } } } }),
    );
    let pod = format!("{rs}-x2x7q");
    o.insert(
        format!("/api/v1/namespaces/prod/pods/{pod}"),
        json!({ "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": pod, "namespace": "prod", "labels": labels,
                "ownerReferences": [{ "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs, "uid": format!("uid-{rs}"), "controller": true }] },
            "spec": { "nodeName": "node-a", "containers": [{ "name": "app", "image": format!("registry.local/{name}:2.0.0") }] },
            "status": status }),
    );
}

fn cluster() -> Objects {
    let mut o = BTreeMap::new();
    let waiting = |reason: &str, restarts: i32, last: Value| {
        json!({ "phase": "Running", "conditions": [{ "type": "Ready", "status": "False" }],
            "containerStatuses": [{ "name": "app", "ready": false, "restartCount": restarts, "image": "", "imageID": "",
                "state": { "waiting": { "reason": reason } }, "lastState": last }] })
    };
    let oom = json!({ "terminated": { "reason": "OOMKilled", "exitCode": 137 } });
    workload(&mut o, "checkout", "7d9f8", 300, waiting("CrashLoopBackOff", 6, oom));
    workload(&mut o, "cart", "5c6b4", 3, waiting("ImagePullBackOff", 0, json!({})));
    let healthy = json!({ "phase": "Running", "conditions": [{ "type": "Ready", "status": "True" }],
        "containerStatuses": [{ "name": "app", "ready": true, "restartCount": 0, "image": "", "imageID": "", "state": { "running": {} } }] });
    workload(&mut o, "search", "9a8b7", 300, healthy);
    o.insert(
        "/api/v1/namespaces/prod/events/checkout-7d9f8-x2x7q.17a".into(),
        json!({ "apiVersion": "v1", "kind": "Event", "metadata": { "name": "checkout-7d9f8-x2x7q.17a", "namespace": "prod" },
            "involvedObject": { "kind": "Pod", "name": "checkout-7d9f8-x2x7q", "namespace": "prod" },
            "reason": "BackOff", "message": "Back-off restarting failed container app", "type": "Warning", "count": 14,
            "lastTimestamp": minutes_ago(1) }),
    );
    o.insert(
        "/api/v1/nodes/node-a".into(),
        json!({ "apiVersion": "v1", "kind": "Node", "metadata": { "name": "node-a" },
            "status": { "conditions": [{ "type": "Ready", "status": "True" }] } }),
    );
    Arc::new(Mutex::new(o))
}

/// GET of an object by path, or a list (pods, replicasets, events) by
/// namespace and `labelSelector`; nothing else is served.
async fn api(State(objects): State<Objects>, uri: Uri) -> axum::response::Response {
    let objects = objects.lock().unwrap();
    if let Some(o) = objects.get(uri.path()) {
        return axum::Json(o.clone()).into_response();
    }
    let kind = match uri.path().rsplit('/').next() {
        Some("pods") => "Pod",
        Some("replicasets") => "ReplicaSet",
        Some("events") => "Event",
        _ => return (StatusCode::NOT_FOUND, axum::Json(json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found" }))).into_response(),
    };
    let namespace = uri.path().split("/namespaces/").nth(1).and_then(|r| r.split('/').next()).unwrap_or_default();
    let selector: Option<String> = uri.query().and_then(|q| {
        q.split('&').find_map(|kv| kv.strip_prefix("labelSelector=")).map(|s| s.replace("%3D", "=").replace("%2C", ","))
    });
    let items: Vec<Value> = objects
        .values()
        .filter(|o| o["kind"] == kind && o["metadata"]["namespace"] == namespace)
        .filter(|o| {
            selector.as_deref().is_none_or(|sel| {
                sel.split(',').all(|kv| kv.split_once('=').is_some_and(|(k, v)| o["metadata"]["labels"][k] == v))
            })
        })
        .cloned()
        .collect();
    axum::Json(json!({ "apiVersion": "v1", "kind": format!("{kind}List"), "metadata": { "resourceVersion": "1" }, "items": items })).into_response()
}

/// What Alertmanager posts for a kube-state-metrics alert on `pod`, read as
/// `/v1/alertmanager` reads it.
fn alert(name: &str, pod: &str, labels: &[(&str, &str)]) -> Detection {
    let mut all: serde_json::Map<String, Value> = [
        ("alertname", name),
        ("namespace", "prod"),
        ("pod", pod),
        ("container", "app"),
        ("job", "kube-state-metrics"),
        ("service", "kube-state-metrics"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), json!(v)))
    .collect();
    all.extend(labels.iter().map(|(k, v)| ((*k).to_owned(), json!(v))));
    let starts = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let body = json!({
        "version": "4", "groupKey": format!("{{}}:{{alertname=\"{name}\", pod=\"{pod}\"}}"), "status": "firing",
        "receiver": "sentinel", "groupLabels": { "alertname": name, "pod": pod }, "commonLabels": all,
        "commonAnnotations": { "summary": format!("{pod} is not well") }, "externalURL": "http://alertmanager:9093",
        "alerts": [{ "status": "firing", "labels": all, "annotations": {}, "startsAt": starts,
            "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "", "fingerprint": format!("fp-{pod}") }]
    });
    let notification = telemetry::alertmanager::parse(body.to_string().as_bytes()).unwrap();
    let telemetry::alertmanager::Change::Firing(d) = notification.change() else { panic!("firing") };
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_cluster_states_chooses_the_runbook_and_labels_do_not() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().fallback(api).with_state(cluster());
    tokio::spawn(async move { axum::serve(listener, app).await });
    executors::install_tls_provider();
    let client = kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
    let kube = Arc::new(sentinel::wiring::KubeCluster(Inspector::from_client(client)));

    let db = TestDb::new(Backend::Postgres).await;
    let store = db.store().await;
    let h = crate::support::incidents_with(&store, WorkflowConfig::default(), true, None, kube).await;
    let worker = BackgroundWorker::start(&h.engine, engine::testing::fast_worker("w"));
    let cases = [
        // A crash loop whose pod the cluster shows OOMKilled; the label's claim is ignored.
        (
            alert("KubePodCrashLooping", "checkout-7d9f8-x2x7q", &[("oom_killed", "false")]),
            "checkout",
            "memory-leak",
            "patch_memory_limit",
        ),
        // A pod not ready because its image cannot be pulled.
        (alert("KubePodNotReady", "cart-5c6b4-x2x7q", &[]), "cart", "image-pull-backoff", "patch_image"),
        // A label claiming an image pull failure on a healthy workload is no evidence.
        (
            alert("KubePodNotReady", "search-9a8b7-x2x7q", &[("image_pull_failed", "true")]),
            "search",
            "pod-not-ready",
            "restart_deployment",
        ),
    ];
    for (detection, service, runbook, action) in cases {
        let run = h.engine.start(workflow::GRAPH, &Incident::new(detection)).await.unwrap();
        let r = wait_until(&h.engine, run, Duration::from_secs(30), |r| r.status == RunStatus::Waiting).await;
        let s: Incident = serde_json::from_value(r.state).unwrap();
        assert_eq!(s.detection.as_ref().unwrap().service, service, "the pod's Deployment is the catalogued service");
        assert_eq!(s.runbook.as_deref(), Some(runbook), "{service}: {:?}", s.analysis.evidence);
        assert_eq!(s.plan[0].action.action, action, "{service}");
        assert_eq!(s.plan[0].action.target, format!("kubernetes:prod/{service}"));
    }
    let runs =
        h.engine.list(&engine::RunFilter { graph: Some(workflow::GRAPH.into()), ..Default::default() }).await.unwrap();
    let state = |service: &str| -> Incident {
        runs.iter()
            .map(|r| serde_json::from_value::<Incident>(r.state.clone()).unwrap())
            .find(|s| s.detection.as_ref().is_some_and(|d| d.service == service))
            .unwrap()
    };
    let checkout = state("checkout");
    let ev = &checkout.analysis.evidence;
    assert_eq!(ev["oom_killed"], nodes::runbook::Evidence::Bool(true), "the cluster's word, not the label's");
    assert_eq!(ev["crash_looping"], nodes::runbook::Evidence::Bool(true));
    assert_eq!(ev["restarts"], nodes::runbook::Evidence::Number(6.0));
    let lines: Vec<&String> = checkout.analysis.hypotheses.iter().flat_map(|h| &h.evidence).collect();
    assert!(
        lines.iter().any(|l| *l
            == "pod checkout-7d9f8-x2x7q: last terminated OOMKilled (exit 137), waiting: CrashLoopBackOff, 6 restarts"),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l.starts_with("event BackOff on Pod/checkout-7d9f8-x2x7q ×14")), "{lines:?}");
    // cart was rolled out three minutes ago: the rollout is a hypothesis of its own.
    let cart = state("cart");
    assert_eq!(cart.analysis.evidence["minutes_since_deploy"], nodes::runbook::Evidence::Number(3.0));
    assert!(cart.analysis.hypotheses.iter().any(|h| h.cause == "deployment"), "{:?}", cart.analysis.hypotheses);
    let search = state("search");
    assert_eq!(search.analysis.evidence["image_pull_failed"], nodes::runbook::Evidence::Bool(false));
    worker.stop().await;
}
