//! What the store persists about a run, as the engine's API hands it out.

use std::fmt;
use std::str::FromStr;

use serde_json::Value;
use uuid::Uuid;

use crate::clock::Timestamp;

/// A run's id: a UUIDv7, so ids sort by creation time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct RunId(pub Uuid);

impl RunId {
    pub fn new() -> Self {
        RunId(Uuid::now_v7())
    }

    /// The nil id: no run. [`crate::Store::changes`] sends it to mean "any
    /// run may have changed".
    pub fn nil() -> Self {
        RunId(Uuid::nil())
    }
}

impl Default for RunId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for RunId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(RunId)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Due to run its current node (now, or at `wake_at` for a retry backoff).
    Runnable,
    /// A worker holds the lease and is running the current node.
    Running,
    /// Parked until a signal it waits for arrives or its timer (`wake_at`) fires.
    Waiting,
    Completed,
    Failed,
    Cancelled,
}

impl RunStatus {
    pub const ALL: [RunStatus; 6] = [
        RunStatus::Runnable,
        RunStatus::Running,
        RunStatus::Waiting,
        RunStatus::Completed,
        RunStatus::Failed,
        RunStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Runnable => "runnable",
            RunStatus::Running => "running",
            RunStatus::Waiting => "waiting",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }

    pub fn is_finished(self) -> bool {
        matches!(self, RunStatus::Completed | RunStatus::Failed | RunStatus::Cancelled)
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RunStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RunStatus::ALL.into_iter().find(|st| st.as_str() == s).ok_or_else(|| format!("unknown run status `{s}`"))
    }
}

/// A run as stored: where it is, what it holds, who runs it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Run {
    pub id: RunId,
    pub graph: String,
    pub graph_version: i32,
    pub status: RunStatus,
    /// The node that runs next (or ran last, once finished).
    pub node: String,
    pub state: Value,
    /// The step number the next checkpoint will have; equals the history length.
    pub step: i64,
    /// Attempt of the current node, from 1; grows on retries.
    pub attempt: i32,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<Timestamp>,
    /// Durable timer: when a waiting run wakes, or when a retry is due.
    pub wake_at: Option<Timestamp>,
    /// Signal kinds that wake a waiting run.
    pub wait_signals: Vec<String>,
    pub error: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    /// Unique among the graph's unfinished runs, when set.
    pub correlation_key: Option<String>,
}

/// What happened in one step, as the history row records it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StepOutcome {
    /// The node returned a route; the run moved along the edge to `to`.
    Route {
        route: String,
        to: String,
    },
    /// The node asked to wait for signals or a timer.
    Wait,
    /// The node failed with a retryable error; it runs again at `wake_at`.
    Retry {
        error: String,
    },
    Completed,
    Failed {
        error: String,
    },
    Cancelled,
}

impl StepOutcome {
    pub fn label(&self) -> &'static str {
        match self {
            StepOutcome::Route { .. } => "route",
            StepOutcome::Wait => "wait",
            StepOutcome::Retry { .. } => "retry",
            StepOutcome::Completed => "completed",
            StepOutcome::Failed { .. } => "failed",
            StepOutcome::Cancelled => "cancelled",
        }
    }
}

/// One immutable history row: the checkpoint written after a node ran.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Checkpoint {
    pub run_id: RunId,
    pub step: i64,
    pub node: String,
    pub attempt: i32,
    pub outcome: StepOutcome,
    pub state_before: Value,
    pub state_after: Value,
    pub worker: String,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
}

/// A signal delivered to a run.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Signal {
    /// Caller-supplied id; a second delivery with the same id is a duplicate.
    pub id: String,
    pub kind: String,
    pub payload: Value,
    pub received_at: Timestamp,
    /// The step that consumed it, once a node took it.
    pub consumed_step: Option<i64>,
}

/// The result of delivering a signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    Accepted,
    /// A signal with this id was delivered before; nothing changed.
    Duplicate,
}

/// A run with everything recorded about it, for inspection.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RunDetail {
    pub run: Run,
    pub history: Vec<Checkpoint>,
    pub signals: Vec<Signal>,
    pub effects: Vec<EffectRecord>,
}

/// A side effect's record: intent first, outcome once it is known.
#[derive(Clone, Debug, serde::Serialize)]
pub struct EffectRecord {
    pub key: String,
    pub step: i64,
    pub intent_at: Timestamp,
    pub outcome: Option<Value>,
    pub completed_at: Option<Timestamp>,
}

/// Filter for listing runs.
#[derive(Clone, Debug, Default)]
pub struct RunFilter {
    pub status: Option<RunStatus>,
    pub graph: Option<String>,
    pub limit: Option<i64>,
}

/// A message a step asked to send; committed with the checkpoint and sent after.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OutboxMessage {
    pub topic: String,
    pub payload: Value,
}

/// An outbox message with its delivery record, for inspection.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct OutboxEntry {
    pub id: i64,
    pub run_id: String,
    pub idempotency_key: String,
    pub topic: String,
    /// `pending`, `delivered`, or `dead` (retries exhausted).
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub delivered_at: Option<i64>,
}

/// How far behind the outbox is.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct OutboxStats {
    pub pending: i64,
    pub dead: i64,
    /// Messages no configured destination could take.
    pub undeliverable: i64,
    /// When the oldest message still pending was written.
    pub oldest_pending_at: Option<i64>,
}

/// An outbox message as stored, with its idempotency key `run:step:index`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PendingMessage {
    pub id: i64,
    pub run_id: RunId,
    pub idempotency_key: String,
    pub topic: String,
    pub payload: Value,
    pub attempts: i32,
    pub created_at: Timestamp,
    /// The claim this copy was handed out under (empty when not claimed):
    /// pass it back to record the outcome.
    pub claim_token: String,
    /// How many times the message was claimed, this claim included.
    pub claims: i64,
    /// Why the last delivery failed, if it did.
    pub last_error: Option<String>,
}
