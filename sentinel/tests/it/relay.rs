//! The outbox relay against a local server that speaks Slack's Web API and
//! records every request: the message is posted once (after a failed first
//! attempt), updated as the incident moves, and nothing is lost or doubled.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use engine::testing::{fast_worker, wait_until, Backend, BackgroundWorker, TestDb};
use engine::{Clock, RunId, RunStatus, SystemClock, Timestamp};
use nodes::incident::{Detection, Source};
use nodes::workflow::{self, Incident, WorkflowConfig};
use sentinel::relay::{run, Destinations, PagerDuty, RelayConfig, SlackClient};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

#[derive(Clone, Default)]
struct FakeApi {
    requests: Arc<Mutex<Vec<(String, String, Value)>>>,
    fail_next: Arc<AtomicBool>,
    /// The next request is recorded (and takes effect) but is never answered.
    hang_next: Arc<AtomicBool>,
    /// Messages in the channel, as conversations.history returns them.
    channel: Arc<Mutex<Vec<Value>>>,
}

/// conversations.history: what was posted, with its metadata, newest first.
async fn history(
    State(slack): State<FakeApi>,
    axum::extract::Query(query): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> axum::Json<Value> {
    slack.requests.lock().unwrap().push(("conversations.history".into(), String::new(), json!(query)));
    assert_eq!(query.get("include_all_metadata").map(String::as_str), Some("true"));
    let mut messages = slack.channel.lock().unwrap().clone();
    messages.reverse();
    axum::Json(json!({ "ok": true, "messages": messages, "has_more": false }))
}

async fn api(
    State(slack): State<FakeApi>,
    path: axum::extract::Path<String>,
    headers: HeaderMap,
    body: axum::Json<Value>,
) -> (StatusCode, axum::Json<Value>) {
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    slack.requests.lock().unwrap().push((path.0.clone(), auth, body.0.clone()));
    let failing = slack.fail_next.load(std::sync::atomic::Ordering::SeqCst);
    if path.0 == "chat.postMessage" && !failing {
        let ts = format!("1700000000.{:06}", slack.channel.lock().unwrap().len() + 100);
        slack.channel.lock().unwrap().push(json!({ "ts": ts, "text": body.0["text"], "metadata": body.0["metadata"] }));
    }
    if slack.hang_next.swap(false, std::sync::atomic::Ordering::SeqCst) {
        std::future::pending::<()>().await;
    }
    if slack.fail_next.swap(false, std::sync::atomic::Ordering::SeqCst) {
        return (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(json!({ "ok": false, "error": "internal_error" })));
    }
    (StatusCode::OK, axum::Json(json!({ "ok": true, "channel": body.0["channel"], "ts": "1700000000.000100" })))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_incident_message_is_posted_then_updated_through_the_outbox() {
    let fake = FakeApi::default();
    fake.fail_next.store(true, std::sync::atomic::Ordering::SeqCst);
    let base = fake_server(fake.clone()).await;

    let db = TestDb::new(Backend::Postgres).await;
    let engine = incident_engine(&db, WorkflowConfig::default()).await;
    let worker = BackgroundWorker::start(&engine, fast_worker("w"));
    let shutdown = CancellationToken::new();
    let slack = SlackClient {
        base_url: base,
        token: "xoxb-test".into(),
        channel: "C0INCIDENTS".into(),
        channels: Default::default(),
        http: reqwest::Client::new(),
    };
    let retry =
        engine::RetryPolicy { max_attempts: 5, initial_backoff: Duration::from_millis(50), ..Default::default() };
    let config = RelayConfig { retry, poll_interval: Duration::from_millis(20), ..RelayConfig::default() };
    let relay = tokio::spawn(run(
        engine.clone(),
        Destinations { slack: Some(slack), pagerduty: None },
        config,
        shutdown.clone(),
    ));

    let run_id = engine.start(workflow::GRAPH, &Incident::new(node_not_ready())).await.unwrap();
    wait_until(&engine, run_id, Duration::from_secs(20), |r| r.status == RunStatus::Waiting).await;
    // The message is posted (the first attempt failed) and its ts recorded on the run.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !engine.detail(run_id).await.unwrap().signals.iter().any(|s| s.kind == "slack_message") {
        assert!(tokio::time::Instant::now() < deadline, "the message was never posted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    approve_as_slack_user(&engine, run_id).await;
    wait_until(&engine, run_id, Duration::from_secs(20), |r| r.status.is_finished()).await;
    outbox_drained(&engine).await;
    shutdown.cancel();
    relay.await.unwrap();
    worker.stop().await;

    let requests = fake.requests.lock().unwrap().clone();
    let methods: Vec<&str> = requests.iter().map(|(m, _, _)| m.as_str()).collect();
    assert_eq!(methods, ["chat.postMessage", "chat.postMessage", "chat.update", "chat.update"]);
    assert!(requests.iter().all(|(_, auth, _)| auth == "Bearer xoxb-test"));
    let posted = &requests[1].2;
    assert_eq!(posted["channel"], "C0INCIDENTS");
    assert_eq!(
        posted["text"], "sev2: node not ready on ip-10-0-1-7",
        "critical impact on an unlisted (tier 2) service"
    );
    let actions = posted["blocks"].as_array().unwrap().iter().find(|b| b["type"] == "actions").expect("buttons");
    let buttons = actions["elements"].as_array().unwrap();
    assert_eq!(buttons.len(), 2);
    let gate = gate_of(&engine, run_id).await;
    assert_eq!(
        (&buttons[0]["action_id"], &buttons[0]["value"]),
        (&json!("sentinel_approve"), &json!(format!("{run_id}/{gate}"))),
        "the buttons carry the gate they decide"
    );
    assert_eq!(buttons[1]["action_id"], "sentinel_reject");
    assert!(
        buttons.iter().all(|b| b["confirm"]["confirm"]["type"] == "plain_text"),
        "each button asks for confirmation"
    );
    let plan = posted["blocks"].to_string();
    assert!(plan.contains("`drain_node` on `kubernetes:node/ip-10-0-1-7` with `{\\\"max_nodes\\\":1}` — downtime ~120 s, blast radius multiple_services, rollback: uncordon_node"), "{plan}");
    for (_, _, update) in &requests[2..] {
        assert_eq!((&update["channel"], &update["ts"]), (&json!("C0INCIDENTS"), &json!("1700000000.000100")));
        assert!(
            !update["blocks"].as_array().unwrap().iter().any(|b| b["type"] == "actions"),
            "no buttons once decided"
        );
    }
    assert!(requests[3].2["blocks"].to_string().contains("Approved by slack:U1"));
}

/// The incident workflow acting in dry-run mode.
async fn incident_engine(db: &TestDb, config: WorkflowConfig) -> engine::Engine {
    crate::support::incidents(&db.store().await, config, true).await.engine
}

/// The gate the run waits on.
async fn gate_of(engine: &engine::Engine, run: RunId) -> String {
    let s: Incident = serde_json::from_value(engine.run(run).await.unwrap().state).unwrap();
    s.gate.expect("the run has a gate")
}

/// Waits until no outbox message is due any more.
async fn outbox_drained(engine: &engine::Engine) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !engine.store().outbox_due(Timestamp(i64::MAX), 10).await.unwrap().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the outbox did not drain");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What the Slack handler records for an approver's click.
async fn approve_as_slack_user(engine: &engine::Engine, run: RunId) {
    let gate = gate_of(engine, run).await;
    let decision = json!({ "gate": gate, "by": "slack:U1", "via": "slack", "request": "slack:U1:1" });
    engine.signal(run, &format!("decision:{gate}"), "approve", decision).await.unwrap();
}

/// Draining a node takes 120 s of downtime: the policy always wants a human.
fn node_not_ready() -> Detection {
    Detection {
        service: "ip-10-0-1-7".into(),
        anomaly_type: "node_not_ready".into(),
        metric: "node_ready".into(),
        observed: 0.0,
        baseline_mean: 1.0,
        baseline_stddev: 0.0,
        started_at: SystemClock.now(),
        source: Source::Detector { detector: "rule".into(), score: 1.0, reason: "NotReady".into() },
        labels: [("node".to_owned(), "ip-10-0-1-7".to_owned())].into(),
        annotations: Default::default(),
    }
}

async fn fake_server(fake: FakeApi) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .route("/api/conversations.history", axum::routing::get(history))
        .route("/api/{method}", post(api))
        .route("/v2/{method}", post(api))
        .with_state(fake);
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_nobody_gives_in_time_pages_pagerduty() {
    let fake = FakeApi::default();
    let base = fake_server(fake.clone()).await;
    let db = TestDb::new(Backend::Sqlite).await;
    let config = WorkflowConfig { approval_timeout: Duration::from_millis(300), ..WorkflowConfig::default() };
    let engine = incident_engine(&db, config).await;
    let worker = BackgroundWorker::start(&engine, fast_worker("w"));
    let shutdown = CancellationToken::new();
    let pagerduty = PagerDuty { base_url: base, routing_key: "R0UTINGKEY".into(), http: reqwest::Client::new() };
    let config = RelayConfig {
        retry: engine::RetryPolicy::default(),
        poll_interval: Duration::from_millis(20),
        ..RelayConfig::default()
    };
    let relay = tokio::spawn(run(
        engine.clone(),
        Destinations { slack: None, pagerduty: Some(pagerduty) },
        config,
        shutdown.clone(),
    ));
    let run_id = engine.start(workflow::GRAPH, &Incident::new(node_not_ready())).await.unwrap();
    wait_until(&engine, run_id, Duration::from_secs(20), |r| r.status.is_finished()).await;
    outbox_drained(&engine).await;
    shutdown.cancel();
    relay.await.unwrap();
    worker.stop().await;
    let requests = fake.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 1, "one trigger, nothing else: {requests:#?}");
    let (path, _, body) = &requests[0];
    assert_eq!(path, "enqueue");
    assert_eq!(body["routing_key"], "R0UTINGKEY");
    assert_eq!(body["event_action"], "trigger");
    assert_eq!(body["dedup_key"], run_id.to_string());
    assert_eq!(body["payload"]["severity"], "error", "sev2 pages as error");
    assert_eq!(body["payload"]["source"], "ip-10-0-1-7");
    assert_eq!(body["payload"]["summary"], "sev2: node not ready on ip-10-0-1-7 — approval timed out");
    // PagerDuty takes no approval request: that one reached nobody, and says so.
    let undeliverable = engine.store().outbox_list(Some("undeliverable"), 10).await.unwrap();
    let topics: Vec<&str> = undeliverable.iter().map(|m| m.topic.as_str()).collect();
    assert_eq!(topics, ["approval_requested"]);
}

/// A team's alert that no runbook answers is escalated at once, and the page
/// carries the alert's own words: summary, description, runbook link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_without_a_runbook_pages_with_its_annotations() {
    let fake = FakeApi::default();
    let base = fake_server(fake.clone()).await;
    let db = TestDb::new(Backend::Sqlite).await;
    let engine = incident_engine(&db, WorkflowConfig::default()).await;
    let worker = BackgroundWorker::start(&engine, fast_worker("w"));
    let shutdown = CancellationToken::new();
    let pagerduty = PagerDuty { base_url: base, routing_key: "R0UTINGKEY".into(), http: reqwest::Client::new() };
    let config = RelayConfig { poll_interval: Duration::from_millis(20), ..RelayConfig::default() };
    let relay = tokio::spawn(run(
        engine.clone(),
        Destinations { slack: None, pagerduty: Some(pagerduty) },
        config,
        shutdown.clone(),
    ));
    let alert = Detection {
        service: "checkout".into(),
        anomaly_type: "alert".into(),
        metric: "QueueTooDeep".into(),
        observed: 1.0,
        baseline_mean: 0.0,
        baseline_stddev: 0.0,
        started_at: SystemClock.now(),
        source: Source::Alertmanager {
            group_key: "g1".into(),
            alertname: "QueueTooDeep".into(),
            fingerprints: vec!["f1".into()],
            expr: None,
            group_labels: Default::default(),
        },
        labels: [("severity".to_owned(), "page".to_owned())].into(),
        annotations: [
            ("summary".to_owned(), "Checkout queue is 40k deep".to_owned()),
            ("description".to_owned(), "Orders wait more than 5 minutes.".to_owned()),
            ("runbook_url".to_owned(), "https://runbooks.example/queue-too-deep".to_owned()),
        ]
        .into(),
    };
    let run_id = engine.start(workflow::GRAPH, &Incident::new(alert)).await.unwrap();
    let done = wait_until(&engine, run_id, Duration::from_secs(20), |r| r.status.is_finished()).await;
    outbox_drained(&engine).await;
    shutdown.cancel();
    relay.await.unwrap();
    worker.stop().await;
    let s: Incident = serde_json::from_value(done.state).unwrap();
    assert_eq!(s.outcome.as_deref(), Some("escalated: no runbook"));
    assert!(s.timeline.iter().any(|t| t.what == "no runbook answers alert QueueTooDeep"), "{:?}", s.timeline);
    let requests = fake.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 1, "one trigger: {requests:#?}");
    let body = &requests[0].2;
    assert_eq!(body["event_action"], "trigger");
    assert_eq!(
        body["payload"]["summary"],
        "sev2: alert on checkout — Checkout queue is 40k deep (escalated: no runbook)"
    );
    assert_eq!(body["payload"]["custom_details"]["description"], "Orders wait more than 5 minutes.");
    assert_eq!(body["payload"]["custom_details"]["runbook_url"], "https://runbooks.example/queue-too-deep");
    assert_eq!(body["links"], json!([{ "href": "https://runbooks.example/queue-too-deep", "text": "Runbook" }]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_dies_mid_send_loses_nothing_and_two_relays_send_once() {
    let fake = FakeApi::default();
    fake.hang_next.store(true, std::sync::atomic::Ordering::SeqCst);
    let base = fake_server(fake.clone()).await;
    let db = TestDb::new(Backend::Postgres).await;
    let engine = incident_engine(&db, WorkflowConfig::default()).await;
    let worker = BackgroundWorker::start(&engine, fast_worker("w"));
    let slack = SlackClient {
        base_url: base,
        token: "xoxb-test".into(),
        channel: "C0".into(),
        channels: Default::default(),
        http: reqwest::Client::new(),
    };
    let destinations = Destinations { slack: Some(slack), pagerduty: None };
    let config = RelayConfig {
        retry: engine::RetryPolicy { initial_backoff: Duration::from_millis(50), ..Default::default() },
        poll_interval: Duration::from_millis(20),
        claim_lease: Duration::from_millis(500),
    };
    let requests = |fake: &FakeApi| fake.requests.lock().unwrap().iter().map(|r| r.0.clone()).collect::<Vec<_>>();

    // Relay A claims the approval request and dies while Slack has not answered.
    let doomed = CancellationToken::new();
    let relay_a = tokio::spawn(run(engine.clone(), destinations.clone(), config.clone(), doomed.clone()));
    let run_id = engine.start(workflow::GRAPH, &Incident::new(node_not_ready())).await.unwrap();
    crate::support::eventually("relay A sends", Duration::from_secs(20), || {
        let n = requests(&fake).len();
        async move { n == 1 }
    })
    .await;
    relay_a.abort();
    assert!(relay_a.await.unwrap_err().is_cancelled());
    assert_eq!(engine.store().outbox_stats().await.unwrap().pending, 1, "the message is still owed");

    // Two relays: the message is sent again once its claim runs out, and once only.
    let shutdown = CancellationToken::new();
    let relays: Vec<_> = (0..2)
        .map(|_| tokio::spawn(run(engine.clone(), destinations.clone(), config.clone(), shutdown.clone())))
        .collect();
    crate::support::eventually("the message is delivered", Duration::from_secs(20), || {
        let engine = engine.clone();
        async move { engine.store().outbox_stats().await.unwrap().pending == 0 }
    })
    .await;
    approve_as_slack_user(&engine, run_id).await;
    wait_until(&engine, run_id, Duration::from_secs(20), |r| r.status.is_finished()).await;
    crate::support::eventually("the outbox drains", Duration::from_secs(20), || {
        let engine = engine.clone();
        async move { engine.store().outbox_stats().await.unwrap().pending == 0 }
    })
    .await;
    shutdown.cancel();
    for relay in relays {
        relay.await.unwrap();
    }
    worker.stop().await;
    // The second relay found relay A's post in the channel by its outbox key
    // and did not post again; the updates went to that message.
    assert_eq!(requests(&fake), ["chat.postMessage", "conversations.history", "chat.update", "chat.update"]);
    assert_eq!(fake.channel.lock().unwrap().len(), 1, "one message in the channel");
    let posted = fake.requests.lock().unwrap()[0].2.clone();
    assert_eq!(posted["metadata"]["event_type"], "sentinel_outbox");
    let key = posted["metadata"]["event_payload"]["outbox_key"].as_str().unwrap().to_owned();
    assert!(key.starts_with(&run_id.to_string()), "{key}");
    let updates: Vec<Value> = fake.requests.lock().unwrap()[2..].iter().map(|r| r.2.clone()).collect();
    assert!(updates.iter().all(|u| u["ts"] == "1700000000.000100"), "{updates:?}");
    let delivered = engine.store().outbox_list(Some("delivered"), 10).await.unwrap();
    assert_eq!(delivered.len(), 3);
    assert!(delivered.iter().all(|m| m.attempts == 1), "{delivered:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_destination_an_escalation_is_undeliverable_and_health_degraded() {
    let db = TestDb::new(Backend::Sqlite).await;
    let engine = incident_engine(&db, WorkflowConfig::default()).await;
    let worker = BackgroundWorker::start(&engine, fast_worker("w"));
    let shutdown = CancellationToken::new();
    let config = RelayConfig { poll_interval: Duration::from_millis(20), ..RelayConfig::default() };
    let relay = tokio::spawn(run(engine.clone(), Destinations::default(), config, shutdown.clone()));
    // No runbook answers: escalated at once.
    let mut detection = node_not_ready();
    detection.anomaly_type = "unheard_of".into();
    let run_id = engine.start(workflow::GRAPH, &Incident::new(detection)).await.unwrap();
    wait_until(&engine, run_id, Duration::from_secs(20), |r| r.status.is_finished()).await;
    crate::support::eventually("the relay gives up on the escalation", Duration::from_secs(20), || {
        let engine = engine.clone();
        async move { engine.store().outbox_stats().await.is_ok_and(|s| s.pending == 0 && s.undeliverable == 1) }
    })
    .await;
    shutdown.cancel();
    relay.await.unwrap();
    worker.stop().await;
    let gone = engine.store().outbox_list(Some("undeliverable"), 10).await.unwrap();
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0].topic, "escalation");
    assert!(engine.store().outbox_list(Some("delivered"), 10).await.unwrap().is_empty(), "nothing is called delivered");

    let (app, _, keys) = crate::support::app(&engine).await;
    let (status, health) = crate::api::call_as(&app, None, "GET", "/health/detailed", None).await;
    assert_eq!(status, axum::http::StatusCode::OK);
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(health["components"]["outbox"]["detail"]["undeliverable"], 1, "{health}");
    let (_, listed) =
        crate::api::call_as(&app, Some(&keys.viewer), "GET", "/v1/outbox?status=undeliverable", None).await;
    let error = listed["messages"][0]["last_error"].as_str().unwrap_or_default().to_owned();
    assert!(error.contains("neither Slack nor PagerDuty is configured"), "{listed}");
    let (status, metrics) = crate::api::call_as(&app, None, "GET", "/metrics", None).await;
    assert_eq!(status, axum::http::StatusCode::OK);
    assert!(metrics.as_str().unwrap().contains("sentinel_outbox_undeliverable 1"), "{metrics}");
    // Requeued once a destination exists, it is owed again.
    let id = gone[0].id;
    let (status, _) =
        crate::api::call_as(&app, Some(&keys.operator), "POST", &format!("/v1/outbox/{id}/requeue"), None).await;
    assert_eq!(status, axum::http::StatusCode::ACCEPTED);
    assert_eq!(engine.store().outbox_stats().await.unwrap().pending, 1);
}
