//! The policy's memory lives in the database: after a restart, a fix that
//! made things worse on a target is not auto-approved there again.

use std::sync::Arc;
use std::time::Duration;

use api::access::Access;
use api::remediate::SharedKillSwitch;
use engine::testing::{fast_worker, finished, wait_until, Backend, BackgroundWorker, TestDb};
use engine::{Clock, RunStatus, SystemClock};
use executors::{Action, Allowlist};
use nodes::incident::{Detection, Source};
use nodes::policy::ledger::LedgerFacts;
use nodes::policy::{self, PolicyConfig, ProposedAction, Refusal};
use nodes::ports::MemoryMetrics;
use nodes::workflow::{self, Incident, SafetyFacts, WorkflowConfig};

use crate::support::incidents;

fn config() -> WorkflowConfig {
    WorkflowConfig {
        policy: PolicyConfig {
            allowlist: Allowlist::parse(&["kubernetes:prod/*"]).unwrap(),
            ..PolicyConfig::default()
        },
        verify_window: Duration::from_secs(5),
        verify_interval: Duration::from_millis(50),
        ..WorkflowConfig::default()
    }
}

fn detection() -> Detection {
    Detection {
        service: "checkout".into(),
        anomaly_type: "error_rate_spike".into(),
        metric: "error_rate".into(),
        observed: 20.0,
        baseline_mean: 1.0,
        baseline_stddev: 0.5,
        started_at: SystemClock.now(),
        source: Source::Detector { detector: "zscore".into(), score: 1.0, reason: "test".into() },
        labels: [("namespace".to_owned(), "prod".to_owned())].into_iter().collect(),
        annotations: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fix_that_made_things_worse_is_not_auto_approved_again_after_a_restart() {
    let db = TestDb::new(Backend::Postgres).await;
    let world = incidents(&db.store().await, config(), false).await;
    let metrics: MemoryMetrics = world.metrics.clone();
    world.mock.on_execute(
        "restart_deployment",
        Arc::new(move |_: &Action| {
            let t = SystemClock.now();
            for i in 1..=3 {
                metrics.push("checkout", "error_rate", t.saturating_add(Duration::from_millis(i)), 60.0);
            }
        }),
    );
    let first = world.engine.clone();
    let worker = BackgroundWorker::start(&first, fast_worker("before-restart"));
    let run = first.start(workflow::GRAPH, &Incident::new(detection())).await.unwrap();
    let done = finished(&first, run).await;
    worker.stop().await;
    let s: Incident = serde_json::from_value(done.state).unwrap();
    assert_eq!(s.outcome.as_deref(), Some("escalated: the action made things worse"));
    first.store().close().await;

    // A new process: new connections, facts read back from the runs.
    let second = incidents(&db.store().await, config(), false).await.engine;
    let switches = Access::new(second.store(), Arc::new(SystemClock)).await.unwrap();
    let facts_source = LedgerFacts {
        engine: second.clone(),
        kill_switch: SharedKillSwitch::arc(switches.clone()),
        policy: config().policy,
    };
    let action = s.actions[0].action.clone();
    let now = SystemClock.now();
    let facts = facts_source.facts(&action, "checkout", now).await.unwrap();
    assert_eq!(facts.failed_attempts.len(), 1);
    assert_eq!(
        (facts.failed_attempts[0].action.as_str(), facts.failed_attempts[0].target.as_str()),
        ("restart_deployment", "kubernetes:prod/checkout")
    );
    assert_eq!(facts.auto_approvals.len(), 1);
    let proposed = ProposedAction {
        service: "checkout".into(),
        executor: action.action.executor.clone(),
        action: action.action.action.clone(),
        target: action.action.target.clone(),
        estimated_downtime: action.estimated_downtime,
    };
    let policy::Decision::NeedsHuman { refusals } = policy::decide(&config().policy, &proposed, &facts, now) else {
        panic!("the loop guard refuses");
    };
    assert!(refusals.iter().any(|r| matches!(r, Refusal::FailedBefore { .. })), "{refusals:?}");

    // The kill switch is read from the database, so every process sees it at once.
    assert!(!facts.kill_switch);
    switches.set_kill_switch(true, "test").await.unwrap();
    assert!(facts_source.facts(&action, "checkout", now).await.unwrap().kill_switch);
    switches.set_kill_switch(false, "test").await.unwrap();

    // And through the workflow: the same condition again waits for a human.
    let worker = BackgroundWorker::start(&second, fast_worker("after-restart"));
    let again = second.start(workflow::GRAPH, &Incident::new(detection())).await.unwrap();
    let waiting = wait_until(&second, again, Duration::from_secs(20), |r| r.status == RunStatus::Waiting).await;
    worker.stop().await;
    assert_eq!(waiting.node, "await_approval");
    let s: Incident = serde_json::from_value(waiting.state).unwrap();
    let why = &s.timeline.last().unwrap().what;
    assert!(why.contains("the same action already failed on this target"), "{why}");
}
