//! Slack interactions: only a correctly signed, fresh request from an
//! approver decides; every other request is refused and changes nothing.

use std::time::Duration;

use api::access::Access;
use api::slack::{router, sign, Approvers, SlackState, APPROVE_ACTION};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use engine::testing::{fast_worker, wait_until, Backend, BackgroundWorker, TestDb};
use engine::{Clock, RunId, RunStatus, SystemClock};
use http_body_util::BodyExt;
use nodes::incident::{Detection, Source};
use nodes::workflow::{self, Incident, WorkflowConfig};
use serde_json::{json, Value};
use tower::ServiceExt;

const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";

/// A click on a button whose value is `run` (`RUN/GATE`).
fn click(run: &str, user: &str, action_ts: &str) -> String {
    let payload = json!({
        "type": "block_actions",
        "user": { "id": user, "username": "alice" },
        "actions": [{ "action_id": APPROVE_ACTION, "value": run, "action_ts": action_ts, "type": "button" }],
        "response_url": "https://hooks.slack.test/actions/1",
        "trigger_id": "13345224609.738474920.8088930838d88f008e0"
    });
    serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap()
}

async fn post(app: &axum::Router, body: &str, headers: &[(&str, String)]) -> (StatusCode, Value) {
    let mut req = Request::builder()
        .method("POST")
        .uri("/slack/interactions")
        .header("content-type", "application/x-www-form-urlencoded");
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let resp = app.clone().oneshot(req.body(Body::from(body.to_owned())).unwrap()).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn signed(body: &str, ts: i64) -> Vec<(&'static str, String)> {
    vec![("x-slack-request-timestamp", ts.to_string()), ("x-slack-signature", sign(SECRET, ts, body.as_bytes()))]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_signed_fresh_click_by_an_approver_decides() {
    let db = TestDb::new(Backend::Sqlite).await;
    // Nothing is auto-approved; actions are dry runs.
    let engine = crate::support::incidents(&db.store().await, WorkflowConfig::default(), true).await.engine;
    let approvers = Approvers {
        by_service: [("checkout".to_owned(), vec!["U_ALICE".to_owned(), "U_BOB".to_owned()])].into_iter().collect(),
        ..Approvers::default()
    };
    let access = Access::new(engine.store(), std::sync::Arc::new(SystemClock)).await.unwrap();
    let app =
        router(SlackState { engine: engine.clone(), access: access.clone(), signing_secret: SECRET.into(), approvers });
    // (status, actor, action) of each audit entry, oldest first.
    let audit = |access: Access| async move {
        let mut entries = access.audit_log(100).await.unwrap();
        entries.reverse();
        entries.into_iter().map(|e| (e.status, e.actor, e.action, e.target)).collect::<Vec<_>>()
    };
    let detection = Detection {
        service: "checkout".into(),
        anomaly_type: "latency_spike".into(),
        metric: "http_p99_ms".into(),
        observed: 900.0,
        baseline_mean: 100.0,
        baseline_stddev: 10.0,
        started_at: SystemClock.now(),
        source: Source::Detector { detector: "zscore".into(), score: 1.0, reason: "test".into() },
        labels: Default::default(),
        annotations: Default::default(),
    };
    let run = engine.start(workflow::GRAPH, &Incident::new(detection)).await.unwrap();
    let worker = BackgroundWorker::start(&engine, fast_worker("slack-test"));
    let waiting = wait_until(&engine, run, Duration::from_secs(10), |r| r.status == RunStatus::Waiting).await;
    let gate = serde_json::from_value::<Incident>(waiting.state).unwrap().gate.expect("a gate");
    let value = format!("{run}/{gate}");
    let now = SystemClock.now().0 / 1000;
    let body = click(&value, "U_ALICE", "1700000000.000100");

    let unchanged = |engine: engine::Engine, run: RunId| async move {
        let d = engine.detail(run).await.unwrap();
        (d.run.status, d.signals.iter().filter(|s| s.kind != "refused_decision").count())
    };
    let mut wrong = signed(&body, now);
    wrong[1].1 = sign("not-the-secret", now, body.as_bytes());
    let stale = signed(&body, now - 6 * 60);
    let other_user = click(&value, "U_MALLORY", "1700000000.000200");
    let unknown = click(&format!("{}/{gate}", RunId::new()), "U_ALICE", "1700000000.000300");
    let old_gate = click(&format!("{run}/0-0123456789abcdef"), "U_ALICE", "1700000000.000400");
    let header = |ts: &str| {
        vec![("x-slack-request-timestamp", ts.to_owned()), ("x-slack-signature", sign(SECRET, now, body.as_bytes()))]
    };
    // (what, body, headers, expected status, text the reply must contain)
    type Case = (&'static str, String, Vec<(&'static str, String)>, StatusCode, &'static str);
    let cases: Vec<Case> = vec![
        ("wrong signature", body.clone(), wrong, StatusCode::UNAUTHORIZED, "signature does not match"),
        ("six minutes old", body.clone(), stale, StatusCode::UNAUTHORIZED, "more than 5 minutes from now"),
        (
            "six minutes ahead",
            body.clone(),
            signed(&body, now + 6 * 60),
            StatusCode::UNAUTHORIZED,
            "more than 5 minutes from now",
        ),
        (
            "the smallest timestamp",
            body.clone(),
            signed(&body, i64::MIN),
            StatusCode::UNAUTHORIZED,
            "more than 5 minutes from now",
        ),
        (
            "the largest timestamp",
            body.clone(),
            signed(&body, i64::MAX),
            StatusCode::UNAUTHORIZED,
            "more than 5 minutes from now",
        ),
        ("a word for a timestamp", body.clone(), header("soon"), StatusCode::UNAUTHORIZED, "malformed"),
        ("a timestamp past i64", body.clone(), header("99999999999999999999"), StatusCode::UNAUTHORIZED, "malformed"),
        (
            "no signature",
            body.clone(),
            vec![("x-slack-request-timestamp", now.to_string())],
            StatusCode::UNAUTHORIZED,
            "missing header x-slack-signature",
        ),
        (
            "no timestamp",
            body.clone(),
            vec![("x-slack-signature", sign(SECRET, now, body.as_bytes()))],
            StatusCode::UNAUTHORIZED,
            "missing header x-slack-request-timestamp",
        ),
        (
            "tampered body",
            body.replace("U_ALICE", "U_EVE"),
            signed(&body, now),
            StatusCode::UNAUTHORIZED,
            "signature does not match",
        ),
        (
            "malformed payload",
            "payload=%7Bnot-json".to_owned(),
            signed("payload=%7Bnot-json", now),
            StatusCode::BAD_REQUEST,
            "malformed interaction payload",
        ),
        (
            "no payload field",
            "x=1".to_owned(),
            signed("x=1", now),
            StatusCode::BAD_REQUEST,
            "malformed interaction payload",
        ),
        ("unknown run", unknown.clone(), signed(&unknown, now), StatusCode::NOT_FOUND, "does not exist"),
        ("not an approver", other_user.clone(), signed(&other_user, now), StatusCode::FORBIDDEN, "is not an approver"),
        ("a gate not waited on", old_gate.clone(), signed(&old_gate, now), StatusCode::CONFLICT, "earlier proposal"),
    ];
    for (what, body, headers, status, text) in cases {
        let (got, reply) = post(&app, &body, &headers).await;
        assert_eq!(got, status, "{what}: {reply}");
        assert!(reply["text"].as_str().unwrap_or_default().contains(text), "{what}: {reply}");
        assert_eq!(unchanged(engine.clone(), run).await, (RunStatus::Waiting, 0), "{what} changed the run");
    }
    // Forged, stale and malformed requests leave no trace in the audit log;
    // signed clicks on a run are audited with the answer they got.
    let unknown_run =
        serde_json::from_str::<Value>(&serde_urlencoded::from_str::<Vec<(String, String)>>(&unknown).unwrap()[0].1)
            .unwrap()["actions"][0]["value"]
            .as_str()
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .to_owned();
    let entry = |status: u16, user: &str, target: &str| {
        (Some(i64::from(status)), format!("slack:{user}"), "slack approve".to_owned(), format!("/v1/runs/{target}"))
    };
    assert_eq!(
        audit(access.clone()).await,
        vec![
            entry(404, "U_ALICE", &unknown_run),
            entry(403, "U_MALLORY", &run.to_string()),
            entry(409, "U_ALICE", &run.to_string())
        ]
    );
    let refused = engine.detail(run).await.unwrap().signals;
    assert_eq!(refused.len(), 2, "refused clicks are recorded on the run, deciding nothing");
    assert_eq!(refused[0].payload["by"], "slack:U_MALLORY");
    assert_eq!(
        (&refused[1].payload["by"], &refused[1].payload["gate"]),
        (&json!("slack:U_ALICE"), &json!("0-0123456789abcdef"))
    );

    // The real click decides; Slack's retry of it is the same decision; a
    // second approver's click is told who decided first.
    let (got, reply) = post(&app, &body, &signed(&body, now)).await;
    assert_eq!(got, StatusCode::OK, "{reply}");
    let done = wait_until(&engine, run, Duration::from_secs(10), |r| r.status.is_finished()).await;
    let s: Incident = serde_json::from_value(done.state).unwrap();
    assert_eq!(s.decisions.len(), 1);
    assert_eq!((s.decisions[0].approved, s.decisions[0].by.as_str()), (true, "slack:U_ALICE"));
    assert_eq!(s.decisions[0].gate.as_deref(), Some(gate.as_str()));
    let (got, reply) = post(&app, &body, &signed(&body, now)).await;
    assert_eq!((got, reply["text"].as_str().unwrap()), (StatusCode::OK, "already recorded"));
    let bob = click(&value, "U_BOB", "1700000000.000500");
    let (got, reply) = post(&app, &bob, &signed(&bob, now)).await;
    assert_eq!(got, StatusCode::CONFLICT, "{reply}");
    let text = reply["text"].as_str().unwrap();
    assert!(text.starts_with(&format!("gate {gate} was already approved by slack:U_ALICE at 20")), "{text}");
    worker.stop().await;
    let signals = engine.detail(run).await.unwrap().signals;
    assert_eq!(signals.iter().filter(|s| s.kind == "approve").count(), 1);
    let log = audit(access.clone()).await;
    let run = run.to_string();
    assert_eq!(log[3..], [entry(200, "U_ALICE", &run), entry(200, "U_ALICE", &run), entry(409, "U_BOB", &run)]);
}
