//! Approvals bound to a gate, on PostgreSQL and SQLite: two people approving
//! the same proposal at once make one decision; an action that does not help
//! is rolled back and the incident re-planned behind a new gate; a decision
//! naming the old gate, through the API or straight into the run, is refused
//! and recorded, and the run waits until the new gate is decided.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use engine::testing::{fast_worker, wait_until, Backend, BackgroundWorker, TestDb};
use engine::{Clock, RunStatus, SystemClock};
use executors::Action;
use nodes::ports::Deployment;
use nodes::verify::VerifyConfig;
use nodes::workflow::{self, Incident, WorkflowConfig};
use serde_json::json;

use crate::api::{call_as, latency_spike};
use crate::support::incidents;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_applies_to_its_gate_only_postgres() {
    a_decision_applies_to_its_gate_only(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_applies_to_its_gate_only_sqlite() {
    a_decision_applies_to_its_gate_only(Backend::Sqlite).await;
}

/// The incident workflow where nothing is auto-approved (empty allowlist),
/// verification is short, and a latency spike on checkout five minutes after
/// a deployment is planned as a rollback of it first, then a restart; the
/// rollback does not help (latency stays where it was detected), so an
/// approved rollback is undone and the incident re-planned behind gate 2.
pub async fn replanned_after_rollback(db: &TestDb) -> crate::support::Incidents {
    let config = WorkflowConfig {
        verify: VerifyConfig::default(),
        verify_window: Duration::from_secs(1),
        verify_interval: Duration::from_millis(100),
        ..WorkflowConfig::default()
    };
    let world = incidents(&db.store().await, config, false).await;
    let now = SystemClock.now();
    for i in 0..60u64 {
        let at = now.saturating_sub(Duration::from_secs(3600 - i * 60));
        world.metrics.push("checkout", "http_p99_ms", at, 100.0 + [-8.0, -3.0, 0.0, 4.0, 9.0, -6.0][(i % 6) as usize]);
    }
    world.deployments.0.lock().unwrap().push(Deployment {
        service: "checkout".into(),
        version: "v42".into(),
        at: now.saturating_sub(Duration::from_secs(300)),
    });
    let metrics = world.metrics.clone();
    world.mock.on_execute(
        "rollback_deployment",
        Arc::new(move |_: &Action| {
            let t = SystemClock.now();
            for i in 1..=20 {
                metrics.push("checkout", "http_p99_ms", t.saturating_add(Duration::from_millis(i * 10)), 180.0);
            }
        }),
    );
    world
}

fn state(run: &engine::Run) -> Incident {
    serde_json::from_value(run.state.clone()).unwrap()
}

async fn a_decision_applies_to_its_gate_only(backend: Backend) {
    let db = TestDb::new(backend).await;
    let world = replanned_after_rollback(&db).await;
    let engine = world.engine.clone();
    let (app, _, keys) = crate::support::app(&engine).await;
    let second = world.access.create_key("second-operator", api::access::Role::Operator, "test").await.unwrap();
    let worker = BackgroundWorker::start(&engine, fast_worker("gates"));
    let run = engine.start(workflow::GRAPH, &Incident::new(latency_spike())).await.unwrap();
    let waiting = wait_until(&engine, run, Duration::from_secs(20), |r| r.status == RunStatus::Waiting).await;
    let gate1 = state(&waiting).gate.unwrap();
    assert!(gate1.starts_with("1-"), "{gate1}");
    assert_eq!(state(&waiting).plan[0].action.action, "rollback_deployment");

    // Two operators approve gate 1 at the same moment: one decision.
    let uri = format!("/v1/runs/{run}/approve");
    let body = json!({ "gate": gate1, "reason": "roll it back" }).to_string();
    let (a, b) = tokio::join!(
        call_as(&app, Some(&keys.operator), "POST", &uri, Some(&body)),
        call_as(&app, Some(&second.secret), "POST", &uri, Some(&body)),
    );
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::ACCEPTED, StatusCode::CONFLICT], "{a:?} {b:?}");
    let (winner, loser) = if a.0 == StatusCode::ACCEPTED { ("operator-key", &b.1) } else { ("second-operator", &a.1) };
    let told = loser["error"]["message"].as_str().unwrap();
    assert!(told.starts_with(&format!("gate {gate1} was already approved by {winner} at ")), "{told}");

    // The rollback is executed, does not help, is undone; the incident is
    // re-planned and waits at gate 2 for the next action.
    let at_gate2 = wait_until(&engine, run, Duration::from_secs(30), |r| {
        r.status == RunStatus::Waiting && state(r).gate.as_deref().is_some_and(|g| g.starts_with("2-"))
    })
    .await;
    let s = state(&at_gate2);
    let gate2 = s.gate.clone().unwrap();
    assert_eq!(s.plan[s.current].action.action, "restart_deployment");
    assert_eq!((s.decisions.len(), s.decisions[0].by.as_str()), (1, winner));
    assert_eq!(s.decisions[0].gate.as_deref(), Some(gate1.as_str()));
    assert_eq!(s.rollbacks, 1);

    // A decision naming gate 1 now: refused (409), recorded on the run.
    let loser_key = if winner == "operator-key" { &second.secret } else { &keys.operator };
    let (status, v) = call_as(&app, Some(loser_key), "POST", &uri, Some(&body)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    // A decision naming a gate this run never proposed: refused, recorded.
    let made_up = json!({ "gate": "2-0000000000000000" }).to_string();
    let (status, v) = call_as(&app, Some(&keys.operator), "POST", &uri, Some(&made_up)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains(&format!("waits on (gate {gate2}")), "{v}");
    // A stale decision that slipped past the API (it was in flight when the
    // proposal changed) reaches the node: it is refused there and recorded.
    let stale = json!({ "gate": gate1, "by": "slack:U_LATE", "via": "slack", "request": "slack:U_LATE:1" });
    engine.signal(run, "decision:late", "approve", stale).await.unwrap();
    let settled = wait_until(&engine, run, Duration::from_secs(20), |r| {
        r.status == RunStatus::Waiting && !state(r).refused_decisions.is_empty()
    })
    .await;
    let s = state(&settled);
    assert_eq!(s.gate.as_deref(), Some(gate2.as_str()), "still waiting on gate 2");
    assert_eq!(s.decisions.len(), 1, "no decision was applied to gate 2");
    assert_eq!(s.refused_decisions.len(), 1);
    let r = &s.refused_decisions[0];
    assert_eq!(
        (r.by.as_str(), r.gate.as_deref(), r.wanted.as_str()),
        ("slack:U_LATE", Some(gate1.as_str()), "approve")
    );
    let mutations: Vec<(&str, String)> = world.mock.mutations().into_iter().map(|c| (c.verb, c.action)).collect();
    assert_eq!(
        mutations,
        [("execute", "rollback_deployment".to_owned()), ("rollback", "rollback_deployment".to_owned())],
        "the restart waits for its own decision"
    );
    let detail = engine.detail(run).await.unwrap();
    let refused: Vec<&str> = detail
        .signals
        .iter()
        .filter(|s| s.kind == "refused_decision")
        .map(|s| s.payload["gate"].as_str().unwrap())
        .collect();
    assert_eq!(
        refused,
        [gate1.as_str(), gate1.as_str(), "2-0000000000000000"],
        "each refusal at the API is on the run"
    );
    let audit = world.access.audit_log(100).await.unwrap();
    let conflicts = audit.iter().filter(|e| e.target == uri && e.status == Some(409)).count();
    assert_eq!(conflicts, 3, "the audit log has every refused decision: {audit:#?}");

    // Gate 2 decided: the run moves on.
    let reject = json!({ "gate": gate2, "reason": "not now" }).to_string();
    let (status, v) =
        call_as(&app, Some(&keys.operator), "POST", &format!("/v1/runs/{run}/reject"), Some(&reject)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    let done = wait_until(&engine, run, Duration::from_secs(20), |r| r.status.is_finished()).await;
    worker.stop().await;
    let s = state(&done);
    assert_eq!(done.status, RunStatus::Completed);
    assert_eq!(s.outcome.as_deref(), Some("rejected by operator-key"));
    assert_eq!(s.decisions.len(), 2);
    assert_eq!(world.mock.mutations().len(), 2, "nothing more was done");
}
