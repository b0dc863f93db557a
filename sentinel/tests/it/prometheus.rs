//! A team's real stack end to end: Prometheus (Debian's, on a loopback port)
//! scrapes an exporter this test controls, evaluates a real alert rule, sends
//! to a real Alertmanager, which posts to `sentinel serve`; the incident takes
//! the team's runbook for that alert and acts through the webhook executor
//! (this test's stand-in for the team's automation). Verification re-evaluates
//! the rule in Prometheus. Prometheus also remote-writes to `/api/v1/write`,
//! and a step in an exported series raises an anomaly.
//!
//! Needs `prometheus` and `prometheus-alertmanager` (scripts/ensure-prometheus.sh).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path as UrlPath, State};
use axum::routing::{get, post};
use engine::testing::{Backend, TestDb};
use engine::{RunFilter, RunStatus, SystemClock};
use nodes::workflow::{self, Incident};
use serde_json::{json, Value};

use crate::support::{eventually, reached};

/// What the exporter serves and what the automation was asked to do.
#[derive(Clone, Default)]
struct World {
    /// Gauge values by (metric, service).
    gauges: Arc<Mutex<BTreeMap<(String, String), f64>>>,
    /// Scrapes served, for the latency series' noise.
    scrapes: Arc<Mutex<u64>>,
    /// (verb, target) of every call the automation took.
    calls: Arc<Mutex<Vec<(String, String)>>>,
}

impl World {
    fn set(&self, metric: &str, service: &str, v: f64) {
        self.gauges.lock().unwrap().insert((metric.to_owned(), service.to_owned()), v);
    }

    fn calls(&self) -> Vec<(String, String)> {
        self.calls.lock().unwrap().clone()
    }
}

async fn metrics(State(w): State<World>) -> String {
    let n = {
        let mut s = w.scrapes.lock().unwrap();
        *s += 1;
        *s
    };
    let mut out = String::from("# TYPE queue_depth gauge\n# TYPE latency_ms gauge\n");
    for ((metric, service), v) in w.gauges.lock().unwrap().iter() {
        // A little noise, so the latency series has a spread.
        let v = if metric == "latency_ms" { v + (n % 7) as f64 } else { *v };
        out.push_str(&format!("{metric}{{service=\"{service}\"}} {v}\n"));
    }
    out
}

/// The team's automation behind the webhook executor: restarting checkout
/// drains its queue; nothing it does helps cart.
async fn automation(
    State(w): State<World>,
    UrlPath(verb): UrlPath<String>,
    body: axum::Json<Value>,
) -> axum::Json<Value> {
    let target = body["target"].as_str().unwrap_or_default().to_owned();
    w.calls.lock().unwrap().push((verb.clone(), target.clone()));
    if verb == "execute" && target == "kubernetes:shop/checkout-web" {
        w.set("queue_depth", "checkout", 10.0);
    }
    axum::Json(match verb.as_str() {
        "describe" => json!({ "replicas": 2 }),
        _ => json!({ "changed": true }),
    })
}

async fn serve_http(app: axum::Router) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A child process killed when the test ends, whatever happens.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(program: &str, args: &[String], log: &Path) -> Proc {
    let out = std::fs::File::create(log).unwrap();
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program} ({e}): run scripts/ensure-prometheus.sh"));
    Proc(child)
}

struct Stack {
    dir: PathBuf,
    world: World,
    sentinel: String,
    prometheus: String,
    _procs: Vec<Proc>,
    _db: TestDb,
    engine: engine::Engine,
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const RUNBOOK: &str = r#"
id: queue-too-deep
title: A queue too deep
match:
  alerts: [{ name: QueueTooDeep, matchers: ['severity="page"'] }]
steps:
  - name: restart the consumers
    action:
      executor: kubernetes
      action: restart_deployment
      target: "kubernetes:{namespace}/{deployment}"
      estimated_downtime_secs: 10
      blast_radius: single_service
      rollback: restore_pre_state
"#;

async fn stack() -> Stack {
    let dir = std::env::temp_dir().join(format!("sentinel-prom-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(dir.join("runbooks")).unwrap();
    let world = World::default();
    world.set("queue_depth", "checkout", 500.0);
    world.set("queue_depth", "cart", 500.0);
    world.set("latency_ms", "search", 100.0);
    let exporter = serve_http(axum::Router::new().route("/metrics", get(metrics)).with_state(world.clone())).await;
    let hooks = serve_http(axum::Router::new().route("/{verb}", post(automation)).with_state(world.clone())).await;
    let (sentinel_port, prom_port, am_port) = (free_port(), free_port(), free_port());
    let sentinel = format!("http://127.0.0.1:{sentinel_port}");
    let prometheus = format!("http://127.0.0.1:{prom_port}");

    let db = TestDb::new(Backend::Postgres).await;
    let store = db.store().await;
    let access = api::access::Access::new(&store, Arc::new(SystemClock)).await.unwrap();
    let key = access.create_key("prometheus", api::access::Role::Ingest, "test").await.unwrap().secret;

    std::fs::write(dir.join("runbooks/queue.yaml"), RUNBOOK).unwrap();
    std::fs::write(
        dir.join("sentinel.yaml"),
        format!(
            r#"
services:
  - name: checkout
    tier: 1
    runs_on: {{ kubernetes: {{ namespace: shop, deployment: checkout-web }} }}
  - name: cart
    runs_on: {{ kubernetes: {{ namespace: shop }} }}
runbooks: {{ dirs: [runbooks] }}
policy: {{ auto_approve: ["kubernetes:shop/*"], target_cooldown: 0s, service_cooldown: 0s }}
verify: {{ window: 12s, interval: 1s, consecutive: 3, max_rollbacks: 1 }}
executors:
  dry_run: false
  allowlist: ["kubernetes:shop/*"]
  webhook: {{ url: "http://127.0.0.1:{hooks}", kinds: [kubernetes] }}
prometheus: {{ url: "{prometheus}", step: 1s }}
metrics_from: sentinel
"#
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("rules.yml"),
        "groups:\n  - name: team\n    rules:\n      - alert: QueueTooDeep\n        expr: queue_depth > 100\n        \
         labels: { severity: page }\n        annotations: { summary: '{{ $labels.service }} queue is {{ $value }} deep' }\n",
    )
    .unwrap();
    // Only the latency series is remote-written: the queue series are the alert's business.
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            r#"
global: {{ scrape_interval: 1s, evaluation_interval: 1s }}
rule_files: [rules.yml]
scrape_configs:
  - job_name: exporter
    static_configs: [{{ targets: ["127.0.0.1:{exporter}"] }}]
alerting:
  alertmanagers: [{{ static_configs: [{{ targets: ["127.0.0.1:{am_port}"] }}] }}]
remote_write:
  - url: "{sentinel}/api/v1/write"
    authorization: {{ credentials: "{key}" }}
    queue_config: {{ batch_send_deadline: 1s, min_backoff: 100ms, max_backoff: 1s }}
    write_relabel_configs:
      - {{ source_labels: [__name__], regex: latency_ms, action: keep }}
"#
        ),
    )
    .unwrap();
    // Resolved notifications wait for the next group interval (5 min): within
    // this test only Prometheus itself can say an alert's condition is gone.
    std::fs::write(
        dir.join("alertmanager.yml"),
        format!(
            r#"
route:
  receiver: sentinel
  group_by: [alertname, service]
  group_wait: 1s
  group_interval: 5m
  repeat_interval: 1h
receivers:
  - name: sentinel
    webhook_configs:
      - url: "{sentinel}/v1/alertmanager"
        send_resolved: true
        http_config: {{ authorization: {{ credentials: "{key}" }} }}
"#
        ),
    )
    .unwrap();

    let mut procs = Vec::new();
    let mut serve = crate::support::serve_command(sentinel_port, &dir.join("sentinel.yaml"), &db.url);
    serve.env("SENTINEL_LOG", "info,sqlx=warn").stderr(std::fs::File::create(dir.join("serve.log")).unwrap());
    procs.push(Proc(serve.spawn().expect("spawn sentinel serve")));
    let http = reqwest::Client::new();
    eventually("serve answers", Duration::from_secs(30), || {
        let req = http.get(format!("{sentinel}/health"));
        async move { req.send().await.is_ok_and(|r| r.status().is_success()) }
    })
    .await;
    procs.push(spawn(
        "prometheus-alertmanager",
        &[
            format!("--config.file={}", dir.join("alertmanager.yml").display()),
            format!("--storage.path={}", dir.join("am").display()),
            format!("--web.listen-address=127.0.0.1:{am_port}"),
            "--cluster.listen-address=".into(),
        ],
        &dir.join("alertmanager.log"),
    ));
    procs.push(spawn(
        "prometheus",
        &[
            format!("--config.file={}", dir.join("prometheus.yml").display()),
            format!("--storage.tsdb.path={}", dir.join("tsdb").display()),
            format!("--web.listen-address=127.0.0.1:{prom_port}"),
        ],
        &dir.join("prometheus.log"),
    ));
    eventually("Prometheus is ready", Duration::from_secs(30), || {
        let req = http.get(format!("{prometheus}/-/ready"));
        async move { req.send().await.is_ok_and(|r| r.status().is_success()) }
    })
    .await;
    let engine = crate::support::incidents(&store, workflow::WorkflowConfig::default(), true).await.engine;
    Stack { dir, world, sentinel, prometheus, _procs: procs, _db: db, engine }
}

async fn incidents(engine: &engine::Engine) -> Vec<(engine::Run, Incident)> {
    let runs = engine.list(&RunFilter { graph: Some(workflow::GRAPH.into()), ..RunFilter::default() }).await.unwrap();
    runs.into_iter()
        .map(|r| {
            let s = serde_json::from_value(r.state.clone()).unwrap();
            (r, s)
        })
        .collect()
}

async fn incident_of(engine: &engine::Engine, service: &str) -> Option<(engine::Run, Incident)> {
    incidents(engine).await.into_iter().find(|(_, s)| s.detection.as_ref().is_some_and(|d| d.service == service))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_and_alertmanager_end_to_end() {
    let s = stack().await;
    let logs = || {
        ["serve.log", "prometheus.log", "alertmanager.log"]
            .iter()
            .map(|f| format!("--- {f}\n{}", std::fs::read_to_string(s.dir.join(f)).unwrap_or_default()))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let done = |service: &'static str| {
        let engine = s.engine.clone();
        move || {
            let engine = engine.clone();
            async move { incident_of(&engine, service).await.is_some_and(|(r, _)| r.status.is_finished()) }
        }
    };
    let deadline = Duration::from_secs(90);
    assert!(reached(deadline, done("checkout")).await, "checkout's incident did not finish:\n{}", logs());
    assert!(reached(deadline, done("cart")).await, "cart's incident did not finish:\n{}", logs());

    // checkout: the team's runbook, through the automation; the rule's
    // expression, re-evaluated in Prometheus, returns nothing: resolved.
    let (run, checkout) = incident_of(&s.engine, "checkout").await.unwrap();
    assert_eq!(run.status, RunStatus::Completed, "{}", logs());
    assert_eq!(checkout.runbook.as_deref(), Some("queue-too-deep"));
    let d = checkout.detection.as_ref().unwrap();
    let nodes::incident::Source::Alertmanager { alertname, expr, .. } = &d.source else { panic!("an alert") };
    assert_eq!((alertname.as_str(), expr.as_deref()), ("QueueTooDeep", Some("queue_depth > 100")));
    assert_eq!(d.annotations["summary"], "checkout queue is 500 deep");
    assert_eq!(checkout.actions[0].action.action.target, "kubernetes:shop/checkout-web");
    assert!(checkout.resolved_at.is_some(), "{:?}\n{}", checkout.timeline, logs());
    assert!(
        checkout.timeline.iter().any(|t| t.what.contains("QueueTooDeep's condition returned no series 3 evaluations")),
        "{:?}",
        checkout.timeline
    );
    assert!(
        !s.world.calls().contains(&("rollback".into(), "kubernetes:shop/checkout-web".into())),
        "a working fix stays"
    );

    // cart: the restart does nothing, the rule still fires at the end of the
    // window: rolled back, then handed to a human.
    let (run, cart) = incident_of(&s.engine, "cart").await.unwrap();
    let history = s.engine.detail(run.id).await.unwrap().history;
    let path: Vec<&str> = history.iter().map(|c| c.node.as_str()).collect();
    assert!(path.windows(2).any(|w| w == ["verify", "rollback"]), "{path:?}");
    assert!(cart.timeline.iter().any(|t| t.what.contains("QueueTooDeep still fires")), "{:?}", cart.timeline);
    assert!(s.world.calls().contains(&("rollback".into(), "kubernetes:shop/cart".into())), "{:?}", s.world.calls());
    assert!(cart.outcome.as_deref().is_some_and(|o| o.starts_with("escalated")), "{:?}", cart.outcome);

    // Remote write: once Prometheus holds a full detector window of latency
    // samples (60, and a few more), the latency steps up tenfold; the
    // detectors on Sentinel's side open an incident on search.
    let http = reqwest::Client::new();
    let counted = reached(Duration::from_secs(90), || {
        let req =
            http.get(format!("{}/api/v1/query", s.prometheus)).query(&[("query", "count_over_time(latency_ms[5m])")]);
        async move {
            let Ok(resp) = req.send().await else { return false };
            let v: Value = resp.json().await.unwrap_or_default();
            v["data"]["result"][0]["value"][1].as_str().and_then(|n| n.parse::<f64>().ok()).is_some_and(|n| n >= 65.0)
        }
    })
    .await;
    assert!(counted, "Prometheus did not scrape 65 latency samples:\n{}", logs());
    s.world.set("latency_ms", "search", 1000.0);
    let opened = reached(Duration::from_secs(60), || {
        let engine = s.engine.clone();
        async move { incident_of(&engine, "search").await.is_some() }
    })
    .await;
    if !opened {
        let counters = http.get(format!("{}/metrics", s.sentinel)).send().await.unwrap().text().await.unwrap();
        let ingest: Vec<&str> = counters.lines().filter(|l| l.contains("ingest") || l.contains("remote")).collect();
        panic!("no incident on search from remote-written samples ({ingest:?}):\n{}", logs());
    }
    let (_, search) = incident_of(&s.engine, "search").await.unwrap();
    let d = search.detection.unwrap();
    assert_eq!((d.anomaly_type.as_str(), d.metric.as_str()), ("latency_spike", "latency_ms"));
    assert!(matches!(d.source, nodes::incident::Source::Detector { .. }));
}
