//! What a node is and what it may ask of the engine while it runs.
//!
//! A node decides; the engine persists. It receives the run's state by value,
//! returns the new state and a [`Transition`], and reaches the outside world
//! only through its [`NodeContext`]: signals, outbox messages and side-effect
//! records, all of which become durable with the step's checkpoint.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rand::Rng;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, Timestamp};
use crate::run::{OutboxMessage, RunId, Signal};
use crate::store::{EffectStart, Hold, Limit, NewFact, Reservation, Store};

/// What a node asks the engine to do next.
#[derive(Clone, Debug, PartialEq)]
pub enum Transition {
    /// Follow the edge labelled with this route.
    Route(String),
    /// Park the run until one of `signals` arrives or `until` passes, then run
    /// this node again. The node reads the signal with [`NodeContext::take_signal`]
    /// and compares [`NodeContext::now`] with its own deadline.
    Wait { signals: Vec<String>, until: Option<Timestamp> },
    /// End the run successfully.
    Complete,
    /// End the run as failed, for a reason the node knows (not an error).
    Fail(String),
}

impl Transition {
    pub fn route(route: impl Into<String>) -> Self {
        Transition::Route(route.into())
    }

    pub fn wait_for<I, K>(signals: I, until: Option<Timestamp>) -> Self
    where
        I: IntoIterator<Item = K>,
        K: Into<String>,
    {
        Transition::Wait { signals: signals.into_iter().map(Into::into).collect(), until }
    }

    /// A durable sleep: wake at `until` whatever arrives.
    pub fn sleep_until(until: Timestamp) -> Self {
        Transition::Wait { signals: Vec::new(), until: Some(until) }
    }
}

/// An error a node returns. Retryable errors are retried per the node's
/// [`RetryPolicy`]; fatal ones fail the run at once.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    #[error("{0}")]
    Retryable(String),
    #[error("{0}")]
    Fatal(String),
}

impl NodeError {
    pub fn retryable(e: impl std::fmt::Display) -> Self {
        NodeError::Retryable(e.to_string())
    }

    pub fn fatal(e: impl std::fmt::Display) -> Self {
        NodeError::Fatal(e.to_string())
    }
}

/// One node of a graph over state `S`.
///
/// Closures `Fn(S, NodeContext) -> impl Future<Output = Result<(S, Transition), NodeError>>`
/// are nodes too.
#[async_trait]
pub trait Node<S>: Send + Sync + 'static {
    async fn run(&self, state: S, ctx: NodeContext) -> Result<(S, Transition), NodeError>;
}

#[async_trait]
impl<S, F, Fut> Node<S> for F
where
    S: Send + 'static,
    F: Fn(S, NodeContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(S, Transition), NodeError>> + Send,
{
    async fn run(&self, state: S, ctx: NodeContext) -> Result<(S, Transition), NodeError> {
        (self)(state, ctx).await
    }
}

/// How often and how patiently a node's retryable errors are retried.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Total attempts, the first included. 1 means no retry.
    pub max_attempts: i32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub multiplier: f64,
    /// Fraction of the backoff randomised away, in [0, 1]: 0.2 waits 80–100%.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            multiplier: 2.0,
            jitter: 0.2,
        }
    }
}

impl RetryPolicy {
    pub fn no_retry() -> Self {
        RetryPolicy { max_attempts: 1, ..Default::default() }
    }

    /// The wait before attempt `attempt + 1`, after attempt `attempt` (from 1) failed.
    pub fn backoff(&self, attempt: i32) -> Duration {
        let exp = self.multiplier.max(1.0).powi((attempt - 1).clamp(0, 62));
        let base = (self.initial_backoff.as_secs_f64() * exp).min(self.max_backoff.as_secs_f64());
        let jitter = self.jitter.clamp(0.0, 1.0);
        let factor = if jitter > 0.0 { 1.0 - rand::thread_rng().gen_range(0.0..jitter) } else { 1.0 };
        Duration::from_secs_f64((base * factor).max(0.0))
    }
}

/// What a node can see and ask for while it runs one step.
///
/// Cheap to clone; clones share what the step collects (consumed signals,
/// outbox messages).
#[derive(Clone)]
pub struct NodeContext {
    pub(crate) run_id: RunId,
    pub(crate) node: Arc<str>,
    pub(crate) step: i64,
    pub(crate) attempt: i32,
    pub(crate) started_at: Timestamp,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) store: Store,
    pub(crate) lease_lost: CancellationToken,
    pub(crate) collected: Arc<Mutex<Collected>>,
}

#[derive(Default)]
pub(crate) struct Collected {
    pub(crate) pending: Vec<Signal>,
    pub(crate) consumed: Vec<String>,
    pub(crate) outbox: Vec<OutboxMessage>,
    pub(crate) facts: Vec<NewFact>,
}

/// Passed to a side effect's action: its idempotency key, and whether an
/// earlier attempt recorded the intent without an outcome (it may or may not
/// have acted: check the world before acting again).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EffectAttempt {
    pub idempotency_key: String,
    pub resumed: bool,
}

impl NodeContext {
    pub fn run_id(&self) -> RunId {
        self.run_id
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// This step's number in the run's history (from 0).
    pub fn step(&self) -> i64 {
        self.step
    }

    /// This node's attempt, from 1.
    pub fn attempt(&self) -> i32 {
        self.attempt
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// When this step started.
    pub fn started_at(&self) -> Timestamp {
        self.started_at
    }

    /// Fires when the worker lost the run's lease: whatever the node does now
    /// will not be checkpointed, so a long node should stop.
    pub fn lease_lost(&self) -> CancellationToken {
        self.lease_lost.clone()
    }

    /// Signals delivered to the run and not yet consumed, oldest first.
    pub fn pending_signals(&self) -> Vec<Signal> {
        let c = self.collected.lock().expect("context lock poisoned");
        c.pending.iter().filter(|s| !c.consumed.contains(&s.id)).cloned().collect()
    }

    /// Takes the oldest pending signal of one of `kinds`. It is marked consumed
    /// by this step's checkpoint; if the step fails, it stays pending.
    pub fn take_signal(&self, kinds: &[&str]) -> Option<Signal> {
        let mut c = self.collected.lock().expect("context lock poisoned");
        let found =
            c.pending.iter().find(|s| kinds.contains(&s.kind.as_str()) && !c.consumed.contains(&s.id)).cloned()?;
        c.consumed.push(found.id.clone());
        Some(found)
    }

    /// Queues a message for the outbox; written in the step's checkpoint
    /// transaction and delivered after commit, keyed `run:step:index`.
    pub fn send(&self, topic: impl Into<String>, payload: Value) {
        let mut c = self.collected.lock().expect("context lock poisoned");
        c.outbox.push(OutboxMessage { topic: topic.into(), payload });
    }

    /// Records a fact in the ledger (see [`Store::ledger`]); written in the
    /// step's checkpoint transaction, keyed `run:step:fIndex`.
    pub fn record(&self, kind: &str, subject: &str, payload: Value) {
        let mut c = self.collected.lock().expect("context lock poisoned");
        let key = format!("{}:{}:f{}", self.run_id, self.step, c.facts.len());
        let fact = NewFact {
            key,
            run_id: self.run_id.to_string(),
            kind: kind.to_owned(),
            subject: subject.to_owned(),
            at: self.clock.now(),
            payload,
        };
        c.facts.push(fact);
    }

    /// Records a fact now, only if every limit has room (see
    /// [`Store::reserve`]): atomic across processes. Keyed `run:key`, so a
    /// retried step finds its own reservation ([`Reservation::AlreadyReserved`])
    /// instead of taking a second one. Committed at once: a reservation whose
    /// step never checkpoints still counts (the conservative side).
    pub async fn reserve(
        &self,
        scope: &str,
        key: &str,
        kind: &str,
        subject: &str,
        payload: Value,
        limits: &[Limit],
    ) -> Result<Reservation, NodeError> {
        let fact = NewFact {
            key: format!("{}:{key}", self.run_id),
            run_id: self.run_id.to_string(),
            kind: kind.to_owned(),
            subject: subject.to_owned(),
            at: self.clock.now(),
            payload,
        };
        self.store
            .reserve(scope, &fact, limits)
            .await
            .map_err(|e| NodeError::retryable(format!("reserving `{kind}`: {e}")))
    }

    /// Withdraws this run's reservation `key` (see [`NodeContext::reserve`]),
    /// e.g. when what it reserved for did not happen after all.
    pub async fn unreserve(&self, key: &str) -> Result<(), NodeError> {
        self.store
            .unreserve(&format!("{}:{key}", self.run_id))
            .await
            .map_err(|e| NodeError::retryable(format!("withdrawing reservation `{key}`: {e}")))
    }

    /// Takes `resource` for this run until `ttl` from now, across every
    /// process (see [`Store::hold`]). The run may take it again to extend it.
    pub async fn hold(&self, resource: &str, ttl: Duration, cooldown: Duration) -> Result<Hold, NodeError> {
        self.store
            .hold(resource, &self.run_id.to_string(), self.clock.now(), ttl, cooldown)
            .await
            .map_err(|e| NodeError::retryable(format!("taking `{resource}`: {e}")))
    }

    /// Lets go of `resource` if this run holds it.
    pub async fn release(&self, resource: &str) -> Result<(), NodeError> {
        self.store
            .unhold(resource, &self.run_id.to_string(), self.clock.now())
            .await
            .map_err(|e| NodeError::retryable(format!("releasing `{resource}`: {e}")))
    }

    /// Performs a side effect at most once per `key` and run, as far as the
    /// world allows: the intent is recorded before `act` runs and the outcome
    /// after. A recorded outcome is returned without acting again; an intent
    /// without outcome (the process died mid-action) calls `act` again with
    /// `resumed = true`, so it can check whether the first call took effect.
    ///
    /// The records are committed at once, not with the checkpoint: they
    /// describe the world, which does not roll back.
    pub async fn effect<T, F, Fut>(&self, key: &str, act: F) -> Result<T, NodeError>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce(EffectAttempt) -> Fut,
        Fut: Future<Output = Result<T, NodeError>>,
    {
        let idempotency_key = format!("{}:{}", self.run_id, key);
        let start = self
            .store
            .effect_begin(self.run_id, self.step, key, self.clock.now())
            .await
            .map_err(|e| NodeError::retryable(format!("recording intent of effect `{key}`: {e}")))?;
        let resumed = match start {
            EffectStart::Done(outcome) => {
                return serde_json::from_value(outcome).map_err(|e| {
                    NodeError::fatal(format!("recorded outcome of effect `{key}` no longer decodes: {e}"))
                });
            }
            EffectStart::New => false,
            EffectStart::Resumed => true,
        };
        let value = act(EffectAttempt { idempotency_key, resumed }).await?;
        let outcome = serde_json::to_value(&value)
            .map_err(|e| NodeError::fatal(format!("outcome of effect `{key}` does not encode: {e}")))?;
        self.store
            .effect_complete(self.run_id, key, &outcome, self.clock.now())
            .await
            .map_err(|e| NodeError::retryable(format!("recording outcome of effect `{key}`: {e}")))?;
        Ok(value)
    }
}
