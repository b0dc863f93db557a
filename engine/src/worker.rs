//! Workers: claim due runs, run one node at a time under a lease, checkpoint.
//!
//! A worker process runs `concurrency` slots. An idle slot sleeps until this
//! process or a PostgreSQL NOTIFY says a run became runnable, or until the
//! poll interval passes (timers and expired leases are found by polling).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::engine::Engine;
use crate::error::Error;
use crate::graph::{ErasedGraph, Executed};
use crate::node::{Collected, NodeContext, NodeError, Transition};
use crate::run::Signal;
use crate::run::{RunStatus, StepOutcome};
use crate::store::{CheckpointWrite, Claimed, Kept, Next};

#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Written as the lease owner and on every history row.
    pub id: String,
    /// Runs executed at once by this worker.
    pub concurrency: usize,
    /// How long a claim is valid without a heartbeat. Heartbeats run every third of it.
    pub lease: Duration,
    /// The fallback when no notification arrives: timers fire and expired
    /// leases are reclaimed within about this long.
    pub poll_interval: Duration,
    /// A run whose lease was lost this many times in a row at the same step
    /// (its worker crashed or hung there each time) fails instead of looping.
    pub max_lease_losses: i32,
    /// Finished runs older than this are deleted with their history; `None` keeps them.
    pub retention: Option<Duration>,
    pub prune_interval: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            id: format!("worker-{}-{}", std::process::id(), &uuid::Uuid::new_v4().simple().to_string()[..8]),
            concurrency: 4,
            lease: Duration::from_secs(30),
            poll_interval: Duration::from_millis(500),
            max_lease_losses: 5,
            retention: Some(Duration::from_secs(30 * 24 * 3600)),
            prune_interval: Duration::from_secs(3600),
        }
    }
}

/// Runs workers until `shutdown` fires; returns once every slot has finished
/// its current step (or given its run back).
pub async fn run_worker(engine: Engine, config: WorkerConfig, shutdown: CancellationToken) {
    let tracker = TaskTracker::new();
    let config = Arc::new(config);
    {
        let store = engine.store().clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move { store.listen(shutdown).await });
    }
    if let Some(retention) = config.retention {
        let engine = engine.clone();
        let shutdown = shutdown.clone();
        let every = config.prune_interval;
        tracker.spawn(async move { prune_loop(engine, retention, every, shutdown).await });
    }
    for slot in 0..config.concurrency.max(1) {
        let engine = engine.clone();
        let config = config.clone();
        let shutdown = shutdown.clone();
        let span = tracing::info_span!("slot", worker = %config.id, slot);
        tracker.spawn(async move { slot_loop(engine, config, shutdown).await }.instrument(span));
    }
    tracker.close();
    tracker.wait().await;
}

async fn prune_loop(engine: Engine, retention: Duration, every: Duration, shutdown: CancellationToken) {
    loop {
        let cutoff = engine.clock().now().saturating_sub(retention);
        match engine.store().prune_finished(cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(runs = n, "pruned finished runs past retention"),
            Err(e) => tracing::warn!(error = %e, "pruning finished runs failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

async fn slot_loop(engine: Engine, config: Arc<WorkerConfig>, shutdown: CancellationToken) {
    let wake = engine.store().local_wake();
    let mut backoff = Duration::from_millis(50);
    while !shutdown.is_cancelled() {
        // Registered before claiming, so a notification sent while we query is not missed.
        let notified = wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let now = engine.clock().now();
        match engine.store().claim(&config.id, now, now.saturating_add(config.lease)).await {
            Ok(Some(claimed)) => {
                backoff = Duration::from_millis(50);
                run_claimed(&engine, &config, &shutdown, claimed).await;
            }
            Ok(None) => {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = &mut notified => {}
                    _ = tokio::time::sleep(config.poll_interval) => {}
                }
            }
            Err(e) => {
                // The database is away: wait and try again; no run is lost, leases expire.
                tracing::warn!(error = %e, retry_in = ?backoff, "claiming failed");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(config.poll_interval.max(Duration::from_secs(2)));
            }
        }
    }
}

/// Runs a claimed run's steps for as long as the lease is kept.
async fn run_claimed(engine: &Engine, config: &WorkerConfig, shutdown: &CancellationToken, claimed: Claimed) {
    let Some(graph) = engine.registry().get(&claimed.graph, claimed.graph_version).cloned() else {
        let reason = Error::UnknownGraph { name: claimed.graph.clone(), version: claimed.graph_version }.to_string();
        tracing::error!(run = %claimed.id, %reason, "failing run");
        if let Err(e) = engine.store().fail_claimed(claimed.id, claimed.epoch, &reason, engine.clock().now()).await {
            tracing::warn!(run = %claimed.id, error = %e, "could not fail run");
        }
        return;
    };
    let mut current = claimed;
    // Signals for the first step are loaded; later steps get them from the checkpoint.
    let mut pending: Option<Vec<Signal>> = None;
    loop {
        if current.lease_losses >= config.max_lease_losses {
            let reason = format!(
                "lease lost {} times at node `{}` (step {}): its worker crashed or hung there each time",
                current.lease_losses, current.node, current.step
            );
            tracing::error!(run = %current.id, %reason, "failing run");
            if let Err(e) = engine.store().fail_claimed(current.id, current.epoch, &reason, engine.clock().now()).await
            {
                tracing::warn!(run = %current.id, error = %e, "could not fail run");
            }
            return;
        }
        // A root span: each step is its own trace, named by run, node and step.
        let span = tracing::info_span!(
            parent: None,
            "step",
            run = %current.id,
            graph = %graph.name(),
            node = %current.node,
            step = current.step,
            attempt = current.attempt,
            worker = %config.id,
        );
        let next = run_step(engine, config, shutdown, &*graph, &current, pending.take()).instrument(span).await;
        match next {
            Some(Kept { run, pending: p }) if !shutdown.is_cancelled() => {
                current = Claimed { graph: current.graph.clone(), graph_version: current.graph_version, ..run };
                pending = Some(p);
            }
            Some(Kept { run, .. }) => {
                if let Err(e) = engine.store().release(run.id, run.epoch, engine.clock().now()).await {
                    tracing::warn!(run = %run.id, error = %e, "could not release run on shutdown; its lease will expire");
                }
                return;
            }
            None => return,
        }
    }
}

/// Runs one node and checkpoints it. Returns the run when the lease is kept
/// for its next node.
async fn run_step(
    engine: &Engine,
    config: &WorkerConfig,
    shutdown: &CancellationToken,
    graph: &dyn ErasedGraph,
    run: &Claimed,
    pending: Option<Vec<Signal>>,
) -> Option<Kept> {
    let store = engine.store();
    let clock = engine.clock();
    let started_at = clock.now();
    let timer = std::time::Instant::now();
    let pending = match pending {
        Some(p) => p,
        None => match store.pending_signals(run.id).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "cannot load signals; giving the run back");
                let _ = store.release(run.id, run.epoch, clock.now()).await;
                return None;
            }
        },
    };
    let state_before: serde_json::Value = match serde_json::from_str(&run.state) {
        Ok(v) => v,
        Err(e) => serde_json::Value::String(format!("<undecodable state: {e}>")),
    };
    let lease_lost = CancellationToken::new();
    let collected = Arc::new(Mutex::new(Collected { pending: pending.clone(), ..Default::default() }));
    let ctx = NodeContext {
        run_id: run.id,
        node: run.node.as_str().into(),
        step: run.step,
        attempt: run.attempt,
        started_at,
        clock: clock.clone(),
        store: store.clone(),
        lease_lost: lease_lost.clone(),
        collected: collected.clone(),
    };

    let heartbeat = async {
        let mut beat = tokio::time::interval(config.lease / 3);
        beat.tick().await;
        // A kept lease may have only half its length left when the step starts.
        let mut lease_until = started_at.saturating_add(config.lease / 2);
        loop {
            beat.tick().await;
            let now = clock.now();
            match store.heartbeat(run.id, run.epoch, now, now.saturating_add(config.lease)).await {
                Ok(true) => lease_until = now.saturating_add(config.lease),
                Ok(false) => {
                    tracing::warn!("lease lost while the node ran; abandoning the step");
                    return;
                }
                Err(e) if clock.now() >= lease_until => {
                    tracing::warn!(error = %e, "lease expired without a heartbeat; abandoning the step");
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "heartbeat failed; will retry"),
            }
        }
    };
    let executed = tokio::select! {
        executed = graph.execute(&run.node, state_before, ctx) => executed,
        () = heartbeat => {
            lease_lost.cancel();
            return None;
        }
    };

    let finished_at = clock.now();
    let node_time = timer.elapsed();
    let (outcome, state_after, next, keep_effects) = decide(graph, run, executed, finished_at);
    metrics::histogram!(
        "sentinel_node_duration_seconds",
        "graph" => graph.name().to_owned(),
        "node" => run.node.clone(),
        "outcome" => outcome.label(),
    )
    .record(node_time.as_secs_f64());
    let (consumed, outbox, facts) = if keep_effects {
        let c = collected.lock().expect("context lock poisoned");
        (c.consumed.clone(), c.outbox.clone(), c.facts.clone())
    } else {
        (Vec::new(), Vec::new(), Vec::new())
    };
    match &outcome {
        StepOutcome::Failed { error } => tracing::warn!(%error, "run failed"),
        StepOutcome::Retry { error } => tracing::info!(%error, attempt = run.attempt, "node will be retried"),
        other => tracing::debug!(outcome = other.label(), "step done"),
    }
    let write = CheckpointWrite {
        run_id: run.id,
        epoch: run.epoch,
        step: run.step,
        node: run.node.clone(),
        attempt: run.attempt,
        outcome,
        state_before: run.state.clone(),
        state_after,
        worker: config.id.clone(),
        started_at,
        finished_at,
        next,
        consumed,
        pending,
        signal_seq: run.signal_seq,
        outbox,
        facts,
        keep_lease_until: (!shutdown.is_cancelled()).then(|| finished_at.saturating_add(config.lease)),
        lease_refresh_before: finished_at.saturating_add(config.lease / 2),
    };
    let timer = std::time::Instant::now();
    let kept = commit(engine, config, &write).await;
    metrics::histogram!("sentinel_checkpoint_duration_seconds").record(timer.elapsed().as_secs_f64());
    kept
}

/// Writes the checkpoint, retrying while the database is away. Retrying is
/// safe: the write is fenced by lease epoch and step, so a commit that did go
/// through before the connection broke turns the retry into `LeaseLost`.
async fn commit(engine: &Engine, config: &WorkerConfig, write: &CheckpointWrite) -> Option<Kept> {
    let give_up_at = engine.clock().now().saturating_add(config.lease);
    let mut backoff = Duration::from_millis(50);
    loop {
        match engine.store().checkpoint(write).await {
            Ok(kept) => return kept,
            Err(Error::LeaseLost { .. }) => {
                tracing::warn!("lease lost before the checkpoint; the step's result is discarded");
                return None;
            }
            Err(e) if e.is_transient() && engine.clock().now() < give_up_at => {
                tracing::warn!(error = %e, retry_in = ?backoff, "checkpoint failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Err(e) => {
                tracing::error!(error = %e, "checkpoint failed; the run will be reclaimed when its lease expires");
                return None;
            }
        }
    }
}

/// Turns what the node did into the history outcome, the state to keep and the
/// run's next position. The last value says whether the step's signals and
/// outbox messages count (only when the node returned normally).
fn decide(
    graph: &dyn ErasedGraph,
    run: &Claimed,
    executed: Executed,
    now: crate::Timestamp,
) -> (StepOutcome, String, Next, bool) {
    let node = run.node.clone();
    let unchanged = run.state.clone();
    let at = |status, node: String, attempt| Next {
        status,
        node,
        attempt,
        wake_at: None,
        wait_signals: Vec::new(),
        error: None,
    };
    let failed = |error: String| {
        let mut next = at(RunStatus::Failed, node.clone(), run.attempt);
        next.error = Some(error.clone());
        (StepOutcome::Failed { error }, unchanged.clone(), next, false)
    };
    match executed {
        Executed::Ran { state, transition } => {
            let state = state.to_string();
            match transition {
                Transition::Route(route) => match graph.target(&node, &route) {
                    Some(to) => (
                        StepOutcome::Route { route, to: to.to_owned() },
                        state,
                        at(RunStatus::Runnable, to.to_owned(), 1),
                        true,
                    ),
                    None => failed(format!("node `{node}` returned route `{route}`, which has no edge")),
                },
                Transition::Wait { signals, until } => {
                    if signals.is_empty() && until.is_none() {
                        return failed(format!("node `{node}` waits for neither a signal nor a time"));
                    }
                    let mut next = at(RunStatus::Waiting, node, 1);
                    next.wake_at = until;
                    next.wait_signals = signals;
                    (StepOutcome::Wait, state, next, true)
                }
                Transition::Complete => {
                    (StepOutcome::Completed, state, at(RunStatus::Completed, node, run.attempt), true)
                }
                Transition::Fail(reason) => {
                    let mut next = at(RunStatus::Failed, node, run.attempt);
                    next.error = Some(reason.clone());
                    (StepOutcome::Failed { error: reason }, state, next, true)
                }
            }
        }
        Executed::Failed(NodeError::Retryable(error)) => {
            let policy = graph.retry_policy(&node).cloned().unwrap_or_default();
            if run.attempt < policy.max_attempts {
                let mut next = at(RunStatus::Runnable, node.clone(), run.attempt + 1);
                next.wake_at = Some(now.saturating_add(policy.backoff(run.attempt)));
                (StepOutcome::Retry { error }, unchanged, next, false)
            } else {
                failed(format!("node `{node}` failed after {} attempts: {error}", run.attempt))
            }
        }
        Executed::Failed(NodeError::Fatal(error)) => failed(format!("node `{node}` failed: {error}")),
        Executed::Panicked(msg) => failed(format!("node `{node}` panicked: {msg}")),
        Executed::BadState(e) => {
            failed(format!("state of run no longer decodes for graph `{}` v{}: {e}", graph.name(), graph.version()))
        }
        Executed::UnknownNode => {
            failed(format!("node `{node}` is not in graph `{}` v{}", graph.name(), graph.version()))
        }
    }
}
