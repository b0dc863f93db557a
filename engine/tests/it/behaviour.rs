//! Behaviour at the engine's boundary: runs through graphs, the database
//! state they leave, signals, timers, retries, effects, fencing, retention.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use engine::{
    Delivery, Error, Graph, ManualClock, NodeContext, NodeError, Registry, RetryPolicy, RunFilter, RunStatus,
    StepOutcome, Timestamp, Transition,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use engine::on_both_stores;
use engine::testing::{fast_worker, finished, wait_until, Backend, BackgroundWorker, TestDb};

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
struct Flow {
    trail: Vec<String>,
    deadline: Option<Timestamp>,
    decision: Option<String>,
}

type Out = Result<(Flow, Transition), NodeError>;

fn visit(mut s: Flow, name: &str) -> Flow {
    s.trail.push(name.to_owned());
    s
}

/// prepare → gate ─approved→ act
///                ├rejected→ closed
///                └timeout──→ closed
/// The gate waits for approve/reject for one hour.
fn approval_graph(version: i32) -> Graph<Flow> {
    Graph::builder("approval", version)
        .node("prepare", |s: Flow, _: NodeContext| async move { Ok((visit(s, "prepare"), Transition::route("next"))) })
        .node("gate", gate)
        .node("act", |s: Flow, ctx: NodeContext| async move {
            ctx.send("notify", json!({ "acted": true }));
            Ok((visit(s, "act"), Transition::Complete))
        })
        .node("closed", |s: Flow, _: NodeContext| async move { Ok((visit(s, "closed"), Transition::Complete)) })
        .edge("prepare", "next", "gate")
        .edge("gate", "approved", "act")
        .edge("gate", "rejected", "closed")
        .edge("gate", "timeout", "closed")
        .start("prepare")
        .build()
        .expect("valid graph")
}

async fn gate(mut s: Flow, ctx: NodeContext) -> Out {
    if let Some(sig) = ctx.take_signal(&["approve", "reject"]) {
        s.decision = Some(sig.kind.clone());
        let route = if sig.kind == "approve" { "approved" } else { "rejected" };
        return Ok((visit(s, "gate"), Transition::route(route)));
    }
    let deadline = *s.deadline.get_or_insert(ctx.now().saturating_add(Duration::from_secs(3600)));
    if ctx.now() >= deadline {
        s.decision = Some("timeout".into());
        return Ok((visit(s, "gate"), Transition::route("timeout")));
    }
    Ok((s, Transition::wait_for(["approve", "reject"], Some(deadline))))
}

fn registry(graphs: impl IntoIterator<Item = Graph<Flow>>) -> Registry {
    let mut r = Registry::new();
    for g in graphs {
        r.register(g);
    }
    r
}

fn routes(history: &[engine::Checkpoint]) -> Vec<String> {
    history
        .iter()
        .map(|c| match &c.outcome {
            StepOutcome::Route { to, .. } => format!("{}->{to}", c.node),
            other => format!("{}:{}", c.node, other.label()),
        })
        .collect()
}

fn assert_contiguous(history: &[engine::Checkpoint]) {
    let steps: Vec<i64> = history.iter().map(|c| c.step).collect();
    let expected: Vec<i64> = (0..history.len() as i64).collect();
    assert_eq!(steps, expected, "history has a gap or a duplicate step");
}

on_both_stores!(
    approved_run_follows_its_route_and_checkpoints_every_step,
    duplicate_signals_are_one_decision,
    a_signal_sent_before_the_wait_is_kept,
    signals_for_unknown_or_finished_runs_are_errors,
    a_timer_fires_after_the_worker_restarts,
    retryable_errors_retry_with_backoff_then_fail,
    fatal_errors_and_panics_fail_the_run_not_the_worker,
    undecodable_state_and_unregistered_versions_fail_clearly,
    a_run_keeps_the_graph_version_it_started_on,
    cancel_stops_waiting_and_running_runs,
    a_recorded_effect_is_not_performed_again,
    a_worker_whose_lease_was_taken_over_cannot_commit,
    listing_filters_by_status_and_graph,
    finished_runs_are_pruned_after_retention,
    a_failed_run_can_be_retried,
);

async fn approved_run_follows_its_route_and_checkpoints_every_step(backend: Backend) {
    let db = TestDb::new(backend).await;
    let engine = db.engine(registry([approval_graph(1)])).await;
    let worker = BackgroundWorker::start(&engine, fast_worker("w1"));
    let run = engine.start("approval", &Flow::default()).await.unwrap();
    wait_until(&engine, run, Duration::from_secs(10), |r| r.status == RunStatus::Waiting).await;

    let waiting = engine.run(run).await.unwrap();
    assert_eq!(
        (waiting.node.as_str(), waiting.wait_signals.clone()),
        ("gate", vec!["approve".into(), "reject".into()])
    );
    assert!(waiting.wake_at.is_some(), "the approval timeout is a durable timer");
    assert_eq!(waiting.lease_owner, None, "a waiting run holds no lease");

    let d = engine.signal(run, "slack-action-1", "approve", json!({ "actor": "alice" })).await.unwrap();
    assert_eq!(d, Delivery::Accepted);
    let done = finished(&engine, run).await;
    worker.stop().await;

    assert_eq!(done.status, RunStatus::Completed);
    let detail = engine.detail(run).await.unwrap();
    assert_contiguous(&detail.history);
    assert_eq!(routes(&detail.history), ["prepare->gate", "gate:wait", "gate->act", "act:completed"]);
    let state: Flow = serde_json::from_value(done.state).unwrap();
    assert_eq!(state.trail, ["prepare", "gate", "act"]);
    assert_eq!(state.decision.as_deref(), Some("approve"));
    // Each history row holds the state before and after its node.
    assert_eq!(detail.history[0].state_before, json!({ "trail": [], "deadline": null, "decision": null }));
    assert_eq!(detail.history[3].state_after["trail"], json!(["prepare", "gate", "act"]));
    assert_eq!(detail.signals.len(), 1);
    assert_eq!(detail.signals[0].consumed_step, Some(2));
    // The outbox message was committed with act's checkpoint, keyed run:step:index.
    let outbox = engine.store().outbox_due(Timestamp(i64::MAX), 10).await.unwrap();
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].idempotency_key, format!("{run}:3:0"));
    assert_eq!(outbox[0].payload, json!({ "acted": true }));
    let claimed = engine.store().outbox_claim(Timestamp(i64::MAX - 1), Timestamp(i64::MAX)).await.unwrap().unwrap();
    assert_eq!((claimed.id, claimed.claims), (outbox[0].id, 1));
    assert!(engine.store().outbox_delivered(claimed.id, &claimed.claim_token, Timestamp(1)).await.unwrap());
    assert!(engine.store().outbox_due(Timestamp(i64::MAX), 10).await.unwrap().is_empty());
}

async fn duplicate_signals_are_one_decision(backend: Backend) {
    let db = TestDb::new(backend).await;
    let engine = db.engine(registry([approval_graph(1)])).await;
    let worker = BackgroundWorker::start(&engine, fast_worker("w1"));
    let run = engine.start("approval", &Flow::default()).await.unwrap();
    wait_until(&engine, run, Duration::from_secs(10), |r| r.status == RunStatus::Waiting).await;
    // Slack retries the same action three times; a different action id is a different decision.
    let mut deliveries = Vec::new();
    for _ in 0..3 {
        deliveries.push(engine.signal(run, "action-7", "reject", json!({})).await.unwrap());
    }
    assert_eq!(deliveries, [Delivery::Accepted, Delivery::Duplicate, Delivery::Duplicate]);
    let done = finished(&engine, run).await;
    worker.stop().await;
    assert_eq!(done.status, RunStatus::Completed);
    let detail = engine.detail(run).await.unwrap();
    assert_eq!(routes(&detail.history), ["prepare->gate", "gate:wait", "gate->closed", "closed:completed"]);
    assert_eq!(detail.signals.len(), 1);
    // A duplicate of a delivered signal is still a duplicate after the run finished.
    assert_eq!(engine.signal(run, "action-7", "reject", json!({})).await.unwrap(), Delivery::Duplicate);
}

async fn a_signal_sent_before_the_wait_is_kept(backend: Backend) {
    let db = TestDb::new(backend).await;
    let engine = db.engine(registry([approval_graph(1)])).await;
    // No worker yet: the run has not reached its gate when the approval arrives.
    let run = engine.start("approval", &Flow::default()).await.unwrap();
    assert_eq!(engine.signal(run, "early", "approve", json!({})).await.unwrap(), Delivery::Accepted);
    let worker = BackgroundWorker::start(&engine, fast_worker("w1"));
    let done = finished(&engine, run).await;
    worker.stop().await;
    let detail = engine.detail(run).await.unwrap();
    assert_eq!(routes(&detail.history), ["prepare->gate", "gate->act", "act:completed"], "no wait at all");
    assert_eq!(done.status, RunStatus::Completed);
}

async fn signals_for_unknown_or_finished_runs_are_errors(backend: Backend) {
    let db = TestDb::new(backend).await;
    let engine = db.engine(registry([approval_graph(1)])).await;
    let unknown = engine::RunId::new();
    let err = engine.signal(unknown, "s", "approve", json!({})).await.unwrap_err();
    assert!(matches!(err, Error::RunNotFound(id) if id == unknown), "{err}");
    assert_eq!(err.to_string(), format!("run {unknown} not found"));

    let run = engine.start("approval", &Flow::default()).await.unwrap();
    engine.signal(run, "a", "approve", json!({})).await.unwrap();
    let worker = BackgroundWorker::start(&engine, fast_worker("w1"));
    finished(&engine, run).await;
    worker.stop().await;
    let err = engine.signal(run, "late", "approve", json!({})).await.unwrap_err();
    assert!(matches!(err, Error::RunFinished { status: RunStatus::Completed, .. }), "{err}");
    assert!(err.to_string().contains("is completed and takes no more signals"));
    // The refused signal was not stored.
    assert_eq!(engine.detail(run).await.unwrap().signals.len(), 1);
}

async fn a_timer_fires_after_the_worker_restarts(backend: Backend) {
    let db = TestDb::new(backend).await;
    let clock = ManualClock::new(Timestamp(1_700_000_000_000));
    let engine = db.engine_with_clock(registry([approval_graph(1)]), Arc::new(clock.clone())).await;
    let worker = BackgroundWorker::start(&engine, fast_worker("w1"));
    let run = engine.start("approval", &Flow::default()).await.unwrap();
    let waiting = wait_until(&engine, run, Duration::from_secs(10), |r| r.status == RunStatus::Waiting).await;
    assert_eq!(waiting.wake_at, Some(Timestamp(1_700_000_000_000 + 3_600_000)));
    worker.stop().await;
    engine.store().close().await;

    // A new process: new connections, new worker, and an hour later.
    let engine = db.engine_with_clock(registry([approval_graph(1)]), Arc::new(clock.clone())).await;
    clock.advance(Duration::from_secs(3599));
    let worker = BackgroundWorker::start(&engine, fast_worker("w2"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(engine.run(run).await.unwrap().status, RunStatus::Waiting, "the timer is not due yet");
    clock.advance(Duration::from_secs(1));
    let done = finished(&engine, run).await;
    worker.stop().await;
    let state: Flow = serde_json::from_value(done.state).unwrap();
    assert_eq!(state.decision.as_deref(), Some("timeout"));
    let detail = engine.detail(run).await.unwrap();
    assert_eq!(routes(&detail.history), ["prepare->gate", "gate:wait", "gate->closed", "closed:completed"]);
    assert_eq!(detail.history[2].worker, "w2");
}

fn flaky_graph(failures: Arc<AtomicUsize>, fail_times: usize, max_attempts: i32) -> Graph<Flow> {
    let policy = RetryPolicy {
        max_attempts,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        multiplier: 2.0,
        jitter: 0.5,
    };
    Graph::builder("flaky", 1)
        .node_with_retry(
            "call",
            move |s: Flow, _: NodeContext| {
                let failures = failures.clone();
                async move {
                    if failures.fetch_add(1, Ordering::SeqCst) < fail_times {
                        return Err(NodeError::retryable("upstream timed out"));
                    }
                    Ok((visit(s, "call"), Transition::Complete))
                }
            },
            policy,
        )
        .start("call")
        .build()
        .unwrap()
}

async fn retryable_errors_retry_with_backoff_then_fail(backend: Backend) {
    let db = TestDb::new(backend).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let engine = db.engine(registry([flaky_graph(calls.clone(), 2, 3)])).await;
    let worker = BackgroundWorker::start(&engine, fast_worker("w1"));
    let run = engine.start("flaky", &Flow::default()).await.unwrap();
    let done = finished(&engine, run).await;
    assert_eq!(done.status, RunStatus::Completed);
    let history = engine.detail(run).await.unwrap().history;
    assert_eq!(routes(&history), ["call:retry", "call:retry", "call:completed"]);
    assert_eq!(history.iter().map(|c| c.attempt).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(history[1].started_at >= history[0].finished_at.saturating_add(Duration::from_millis(5)), "backoff waited");
    worker.stop().await;

    // Three failures with three attempts allowed: the run fails, saying why.
    let calls = Arc::new(AtomicUsize::new(0));
    let db = TestDb::new(backend).await;
    let engine = db.engine(registry([flaky_graph(calls.clone(), 5, 3)])).await;
    let worker = BackgroundWorker::start(&engine, fast_worker("w1"));
    let run = engine.start("flaky", &Flow::default()).await.unwrap();
    let done = finished(&engine, run).await;
    worker.stop().await;
    assert_eq!(done.status, RunStatus::Failed);
    assert_eq!(done.error.as_deref(), Some("node `call` failed after 3 attempts: upstream timed out"));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

async fn fatal_errors_and_panics_fail_the_run_not_the_worker(backend: Backend) {
    let db = TestDb::new(backend).await;
    let g = |name: &str, kind: u8| {
        Graph::builder(name, 1)
            .node("only", move |s: Flow, _: NodeContext| async move {
                match kind {
                    0 => Err(NodeError::fatal("target not on the allowlist")),
                    1 => panic!("index out of bounds"),
                    _ => Ok((s, Transition::Complete)),
                }
            })
            .start("only")
            .build()
            .unwrap()
    };
    let engine = db.engine(registry([g("fatal", 0), g("panics", 1), g("fine", 2)])).await;
    let worker = BackgroundWorker::start(&engine, fast_worker("w1"));
    let fatal = engine.start("fatal", &Flow::default()).await.unwrap();
    let panics = engine.start("panics", &Flow::default()).await.unwrap();
    let f = finished(&engine, fatal).await;
    let p = finished(&engine, panics).await;
    assert_eq!(
        (f.status, f.error.as_deref()),
        (RunStatus::Failed, Some("node `only` failed: target not on the allowlist"))
    );
    assert_eq!((p.status, p.error.as_deref()), (RunStatus::Failed, Some("node `only` panicked: index out of bounds")));
    // The same worker still runs other runs.
    let fine = engine.start("fine", &Flow::default()).await.unwrap();
    assert_eq!(finished(&engine, fine).await.status, RunStatus::Completed);
    worker.stop().await;
    let history = engine.detail(panics).await.unwrap().history;
    assert_eq!(routes(&history), ["only:failed"]);
}

async fn undecodable_state_and_unregistered_versions_fail_clearly(backend: Backend) {
    let db = TestDb::new(backend).await;
    #[derive(Serialize)]
    struct Other {
        trail: &'static str,
    }
    let old = db.engine(registry([approval_graph(1)])).await;
    let bad_state = old.start("approval", &Other { trail: "not a list" }).await.unwrap();
    let orphan = old.start("approval", &Flow::default()).await.unwrap();
    // Make bad_state runnable first, then run a worker that only knows version 2.
    let new = db.engine(registry([approval_graph(2)])).await;
    let worker_v1 = BackgroundWorker::start(&old, fast_worker("w-old"));
    let r = finished(&old, bad_state).await;
    assert_eq!(r.status, RunStatus::Failed);
    let err = r.error.unwrap();
    assert!(err.starts_with("state of run no longer decodes for graph `approval` v1: invalid type"), "{err}");
    // The orphan gets as far as its gate on v1, then only a v2 worker is left.
    wait_until(&old, orphan, Duration::from_secs(10), |r| r.status == RunStatus::Waiting).await;
    worker_v1.stop().await;
    old.signal(orphan, "go", "approve", json!({})).await.unwrap();
    let worker_v2 = BackgroundWorker::start(&new, fast_worker("w-new"));
    let r = finished(&new, orphan).await;
    worker_v2.stop().await;
    assert_eq!(
        (r.status, r.error.as_deref()),
        (RunStatus::Failed, Some("graph `approval` version 1 is not registered"))
    );
    let err = new.start("nope", &Flow::default()).await.unwrap_err();
    assert_eq!(err.to_string(), "graph `nope` version 0 is not registered");
}

async fn a_run_keeps_the_graph_version_it_started_on(backend: Backend) {
    let db = TestDb::new(backend).await;
    // v2 of the graph skips the gate.
    let v2 = Graph::builder("approval", 2)
        .node("prepare", |s: Flow, _: NodeContext| async move { Ok((visit(s, "prepare-v2"), Transition::Complete)) })
        .start("prepare")
        .build()
        .unwrap();
    let v1_only = db.engine(registry([approval_graph(1)])).await;
    let old_run = v1_only.start("approval", &Flow::default()).await.unwrap();
    let both = db.engine(registry([approval_graph(1), v2])).await;
    let new_run = both.start("approval", &Flow::default()).await.unwrap();
    both.signal(old_run, "ok", "approve", json!({})).await.unwrap();
    let worker = BackgroundWorker::start(&both, fast_worker("w"));
    let old = finished(&both, old_run).await;
    let new = finished(&both, new_run).await;
    worker.stop().await;
    assert_eq!((old.graph_version, new.graph_version), (1, 2));
    assert_eq!(old.state["trail"], json!(["prepare", "gate", "act"]));
    assert_eq!(new.state["trail"], json!(["prepare-v2"]));
}

async fn cancel_stops_waiting_and_running_runs(backend: Backend) {
    let db = TestDb::new(backend).await;
    let release = Arc::new(tokio::sync::Notify::new());
    let entered = Arc::new(tokio::sync::Notify::new());
    let (r, e) = (release.clone(), entered.clone());
    let slow = Graph::builder("slow", 1)
        .node("work", move |s: Flow, _: NodeContext| {
            let (r, e) = (r.clone(), e.clone());
            async move {
                e.notify_one();
                r.notified().await;
                Ok((visit(s, "work"), Transition::route("next")))
            }
        })
        .node("after", |s: Flow, _: NodeContext| async move { Ok((visit(s, "after"), Transition::Complete)) })
        .edge("work", "next", "after")
        .start("work")
        .build()
        .unwrap();
    let engine = db.engine(registry([approval_graph(1), slow])).await;
    let worker = BackgroundWorker::start(&engine, fast_worker("w"));

    let waiting = engine.start("approval", &Flow::default()).await.unwrap();
    wait_until(&engine, waiting, Duration::from_secs(10), |r| r.status == RunStatus::Waiting).await;
    engine.cancel(waiting, "cancel-1", "false alarm").await.unwrap();
    let r = engine.run(waiting).await.unwrap();
    assert_eq!((r.status, r.error.as_deref()), (RunStatus::Cancelled, Some("cancelled by signal `cancel-1`")));

    let running = engine.start("slow", &Flow::default()).await.unwrap();
    entered.notified().await;
    engine.cancel(running, "cancel-2", "operator").await.unwrap();
    assert_eq!(engine.run(running).await.unwrap().status, RunStatus::Running, "the step in flight finishes");
    release.notify_one();
    let r = finished(&engine, running).await;
    worker.stop().await;
    assert_eq!(r.status, RunStatus::Cancelled);
    let detail = engine.detail(running).await.unwrap();
    assert_eq!(routes(&detail.history), ["work->after"], "the next node never ran");
    assert_eq!(detail.signals[0].consumed_step, Some(0));
}

async fn a_recorded_effect_is_not_performed_again(backend: Backend) {
    let db = TestDb::new(backend).await;
    let performed = Arc::new(AtomicUsize::new(0));
    let fail_after = Arc::new(AtomicBool::new(true));
    let (p, f) = (performed.clone(), fail_after.clone());
    let g = Graph::builder("effects", 1)
        .node_with_retry(
            "act",
            move |s: Flow, ctx: NodeContext| {
                let (p, f) = (p.clone(), f.clone());
                async move {
                    let outcome: String = ctx
                        .effect("restart-api", |attempt| async move {
                            assert!(!attempt.resumed);
                            p.fetch_add(1, Ordering::SeqCst);
                            Ok(format!("restarted with key {}", attempt.idempotency_key))
                        })
                        .await?;
                    // Something after the effect fails once: the retry must not restart again.
                    if f.swap(false, Ordering::SeqCst) {
                        return Err(NodeError::retryable("metrics API unavailable"));
                    }
                    Ok((visit(s, &outcome), Transition::Complete))
                }
            },
            RetryPolicy { initial_backoff: Duration::from_millis(5), ..RetryPolicy::default() },
        )
        .start("act")
        .build()
        .unwrap();
    let engine = db.engine(registry([g])).await;
    let worker = BackgroundWorker::start(&engine, fast_worker("w"));
    let run = engine.start("effects", &Flow::default()).await.unwrap();
    let done = finished(&engine, run).await;
    worker.stop().await;
    assert_eq!(done.status, RunStatus::Completed);
    assert_eq!(performed.load(Ordering::SeqCst), 1);
    assert_eq!(done.state["trail"], json!([format!("restarted with key {run}:restart-api")]));
    let effects = engine.detail(run).await.unwrap().effects;
    assert_eq!(effects.len(), 1);
    assert_eq!(effects[0].outcome, Some(json!(format!("restarted with key {run}:restart-api"))));
}

async fn a_worker_whose_lease_was_taken_over_cannot_commit(backend: Backend) {
    let db = TestDb::new(backend).await;
    let clock = ManualClock::new(Timestamp(1_700_000_000_000));
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let started = Arc::new(AtomicUsize::new(0));
    let (g2, s2) = (gate.clone(), started.clone());
    let g = Graph::builder("fenced", 1)
        .node("slow", move |s: Flow, ctx: NodeContext| {
            let (g, st) = (g2.clone(), s2.clone());
            async move {
                st.fetch_add(1, Ordering::SeqCst);
                let _permit = g.acquire().await.map_err(NodeError::fatal)?;
                let me = ctx.pending_signals().len();
                Ok((visit(s, &format!("slow@attempt{}-{me}", ctx.attempt())), Transition::Complete))
            }
        })
        .start("slow")
        .build()
        .unwrap();
    let engine = db.engine_with_clock(registry([g]), Arc::new(clock.clone())).await;
    let mut first = fast_worker("first");
    first.lease = Duration::from_secs(30);
    // One slot: an idle second slot of A's could reclaim the expired lease
    // before B does (a race the test is not about, and that made it flaky).
    first.concurrency = 1;
    let worker_a = BackgroundWorker::start(&engine, first);
    let run = engine.start("fenced", &Flow::default()).await.unwrap();
    while started.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Worker A hangs; its lease runs out (the clock jumps past it) and B takes over.
    clock.advance(Duration::from_secs(120));
    let worker_b = BackgroundWorker::start(&engine, fast_worker("second"));
    wait_until(&engine, run, Duration::from_secs(10), |r| r.lease_owner.as_deref() == Some("second")).await;
    while started.load(Ordering::SeqCst) < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Both nodes now finish: only B's checkpoint may land.
    gate.add_permits(2);
    let done = finished(&engine, run).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    worker_a.stop().await;
    worker_b.stop().await;
    let history = engine.detail(run).await.unwrap().history;
    assert_eq!(history.len(), 1, "exactly one checkpoint for the step");
    assert_eq!(history[0].worker, "second");
    assert_eq!(done.status, RunStatus::Completed);
}

async fn listing_filters_by_status_and_graph(backend: Backend) {
    let db = TestDb::new(backend).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let engine = db.engine(registry([approval_graph(1), flaky_graph(calls, 0, 1)])).await;
    let worker = BackgroundWorker::start(&engine, fast_worker("w"));
    let a = engine.start("approval", &Flow::default()).await.unwrap();
    let b = engine.start("approval", &Flow::default()).await.unwrap();
    let c = engine.start("flaky", &Flow::default()).await.unwrap();
    wait_until(&engine, a, Duration::from_secs(10), |r| r.status == RunStatus::Waiting).await;
    wait_until(&engine, b, Duration::from_secs(10), |r| r.status == RunStatus::Waiting).await;
    finished(&engine, c).await;
    worker.stop().await;
    let ids = |runs: Vec<engine::Run>| runs.into_iter().map(|r| r.id).collect::<Vec<_>>();
    let waiting = RunFilter { status: Some(RunStatus::Waiting), ..Default::default() };
    assert_eq!(ids(engine.list(&waiting).await.unwrap()), [b, a], "newest first");
    let flaky = RunFilter { graph: Some("flaky".into()), ..Default::default() };
    assert_eq!(ids(engine.list(&flaky).await.unwrap()), [c]);
    let one = RunFilter { limit: Some(1), ..Default::default() };
    assert_eq!(ids(engine.list(&one).await.unwrap()), [c]);
    let counts = engine.store().count_by_status().await.unwrap();
    assert_eq!(counts, [(RunStatus::Completed, 1), (RunStatus::Waiting, 2)]);
}

async fn finished_runs_are_pruned_after_retention(backend: Backend) {
    let db = TestDb::new(backend).await;
    let clock = ManualClock::new(Timestamp(1_700_000_000_000));
    let calls = Arc::new(AtomicUsize::new(0));
    let engine =
        db.engine_with_clock(registry([approval_graph(1), flaky_graph(calls, 0, 1)]), Arc::new(clock.clone())).await;
    let worker = BackgroundWorker::start(&engine, fast_worker("w"));
    let done = engine.start("flaky", &Flow::default()).await.unwrap();
    let open = engine.start("approval", &Flow::default()).await.unwrap();
    finished(&engine, done).await;
    wait_until(&engine, open, Duration::from_secs(10), |r| r.status == RunStatus::Waiting).await;
    worker.stop().await;

    // The worker's own pruner: retention of one day, checked every 20 ms.
    let mut config = fast_worker("pruner");
    config.retention = Some(Duration::from_secs(24 * 3600));
    config.prune_interval = Duration::from_millis(20);
    clock.advance(Duration::from_secs(24 * 3600 - 1));
    let worker = BackgroundWorker::start(&engine, config.clone());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(engine.run(done).await.is_ok(), "not yet past retention");
    clock.advance(Duration::from_secs(2));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while engine.run(done).await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "finished run was not pruned");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    worker.stop().await;
    assert!(matches!(engine.detail(done).await, Err(Error::RunNotFound(_))));
    assert!(engine.store().history(done).await.unwrap().is_empty(), "history went with the run");
    // The approval run timed out during the jump and finished just now: kept.
    assert_eq!(engine.run(open).await.unwrap().status, RunStatus::Completed);
}

async fn a_failed_run_can_be_retried(backend: Backend) {
    let db = TestDb::new(backend).await;
    let broken = Arc::new(AtomicBool::new(true));
    let b = broken.clone();
    let g = Graph::builder("fixable", 1)
        .node("step", move |s: Flow, _: NodeContext| {
            let b = b.clone();
            async move {
                if b.load(Ordering::SeqCst) {
                    return Err(NodeError::fatal("credentials expired"));
                }
                Ok((visit(s, "step"), Transition::Complete))
            }
        })
        .start("step")
        .build()
        .unwrap();
    let engine = db.engine(registry([g])).await;
    let worker = BackgroundWorker::start(&engine, fast_worker("w"));
    let run = engine.start("fixable", &Flow::default()).await.unwrap();
    assert_eq!(finished(&engine, run).await.status, RunStatus::Failed);
    broken.store(false, Ordering::SeqCst);
    engine.retry(run).await.unwrap();
    let done = finished(&engine, run).await;
    worker.stop().await;
    assert_eq!(done.status, RunStatus::Completed);
    let err = engine.retry(run).await.unwrap_err();
    assert!(matches!(err, Error::WrongStatus { status: RunStatus::Completed, .. }), "{err}");
    let history = engine.detail(run).await.unwrap().history;
    assert_eq!(history.last().unwrap().outcome, StepOutcome::Completed);
    assert!(routes(&history).starts_with(&["step:failed".to_owned()]));
}
