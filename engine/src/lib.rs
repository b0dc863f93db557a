//! A durable graph runtime. A workflow is a [`Graph`] of named nodes over a
//! serde state type; each run of it advances one node at a time, and after
//! every node one transaction checkpoints the run in PostgreSQL (or SQLite):
//! an immutable history row, the next node, signals consumed, outbox messages,
//! the lease released. Any worker process can die at any point; another one
//! reclaims the run when its lease expires and resumes from the last checkpoint.
//!
//! The engine knows nothing about what the nodes do.

mod clock;
mod engine;
mod error;
mod graph;
mod node;
mod run;
mod store;
#[cfg(feature = "testing")]
pub mod testing;
mod worker;

pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use engine::Engine;
pub use error::{Error, Result};
pub use graph::{Graph, GraphBuilder, Registry, Shape};
pub use node::{EffectAttempt, Node, NodeContext, NodeError, RetryPolicy, Transition};
pub use run::{
    Checkpoint, Delivery, EffectRecord, OutboxEntry, OutboxMessage, OutboxStats, PendingMessage, Run, RunDetail,
    RunFilter, RunId, RunStatus, Signal, StepOutcome,
};
pub use store::{
    Correlated, Dialect, Hold, Limit, NewFact, NewRun, NewSignal, Reservation, Store, StoreConfig, CANCEL,
};
pub use worker::WorkerConfig;
