//! Slack interactions: only a correctly signed, fresh request from an
//! approver decides; every other request is refused and changes nothing.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use engine::testing::{fast_worker, wait_until, Backend, BackgroundWorker, TestDb};
use engine::{Clock, Graph, NodeContext, Registry, RunId, RunStatus, SystemClock, Transition};
use http_body_util::BodyExt;
use nodes::incident::{Detection, Source};
use nodes::workflow::Incident;
use sentinel::access::Access;
use sentinel::slack::{router, sign, Approvers, SlackState, APPROVE_ACTION};
use serde_json::{json, Value};
use tower::ServiceExt;

const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";

fn gate_graph() -> Graph<Value> {
    Graph::builder("gate", 1)
        .node("gate", |mut s: Value, ctx: NodeContext| async move {
            match ctx.take_signal(&["approve", "reject"]) {
                Some(sig) => {
                    s["decided"] = json!(sig.kind);
                    s["by"] = sig.payload["actor"].clone();
                    Ok((s, Transition::Complete))
                }
                None => Ok((s, Transition::wait_for(["approve", "reject"], None))),
            }
        })
        .start("gate")
        .build()
        .unwrap()
}

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
    let mut registry = Registry::new();
    registry.register(gate_graph());
    let engine = db.engine(registry).await;
    let approvers = Approvers {
        by_service: [("checkout".to_owned(), vec!["U_ALICE".to_owned()])].into_iter().collect(),
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
    };
    let run = engine.start("gate", &serde_json::to_value(Incident::new(detection)).unwrap()).await.unwrap();
    let worker = BackgroundWorker::start(&engine, fast_worker("slack-test"));
    wait_until(&engine, run, Duration::from_secs(10), |r| r.status == RunStatus::Waiting).await;
    let now = SystemClock.now().0 / 1000;
    let body = click(&run.to_string(), "U_ALICE", "1700000000.000100");

    let unchanged = |engine: engine::Engine, run: RunId| async move {
        let d = engine.detail(run).await.unwrap();
        (d.run.status, d.signals.iter().filter(|s| s.kind != "refused_decision").count())
    };
    let mut wrong = signed(&body, now);
    wrong[1].1 = sign("not-the-secret", now, body.as_bytes());
    let stale = signed(&body, now - 6 * 60);
    let other_user = click(&run.to_string(), "U_MALLORY", "1700000000.000200");
    let unknown = click(&RunId::new().to_string(), "U_ALICE", "1700000000.000300");
    // (what, body, headers, expected status, text the reply must contain)
    type Case = (&'static str, String, Vec<(&'static str, String)>, StatusCode, &'static str);
    let cases: Vec<Case> = vec![
        ("wrong signature", body.clone(), wrong, StatusCode::UNAUTHORIZED, "signature does not match"),
        ("six minutes old", body.clone(), stale, StatusCode::UNAUTHORIZED, "older than 5 minutes"),
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
            .to_owned();
    let entry = |status: u16, user: &str, target: &str| {
        (Some(i64::from(status)), format!("slack:{user}"), "slack approve".to_owned(), format!("/v1/runs/{target}"))
    };
    assert_eq!(
        audit(access.clone()).await,
        vec![entry(404, "U_ALICE", &unknown_run), entry(403, "U_MALLORY", &run.to_string())]
    );
    let refused = engine.detail(run).await.unwrap().signals;
    assert_eq!(refused.len(), 1, "the non-approver's click is recorded, deciding nothing");
    assert_eq!(refused[0].payload["actor"], "slack:U_MALLORY");

    // The real click decides; Slack's retry of it and a replay change nothing.
    let (got, reply) = post(&app, &body, &signed(&body, now)).await;
    assert_eq!(got, StatusCode::OK, "{reply}");
    let done = wait_until(&engine, run, Duration::from_secs(10), |r| r.status.is_finished()).await;
    assert_eq!((&done.state["decided"], &done.state["by"]), (&json!("approve"), &json!("slack:U_ALICE")));
    for _ in 0..2 {
        let (got, reply) = post(&app, &body, &signed(&body, now)).await;
        assert_eq!(got, StatusCode::CONFLICT, "{reply}");
    }
    worker.stop().await;
    let signals = engine.detail(run).await.unwrap().signals;
    assert_eq!(signals.iter().filter(|s| s.kind == "approve").count(), 1);
    let log = audit(access.clone()).await;
    let run = run.to_string();
    assert_eq!(log[2..], [entry(200, "U_ALICE", &run), entry(409, "U_ALICE", &run), entry(409, "U_ALICE", &run)]);
}
