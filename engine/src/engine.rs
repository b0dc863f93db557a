//! [`Engine`]: the handle the rest of the system uses to start, signal,
//! inspect and run workflows.

use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::graph::Registry;
use crate::run::{Delivery, Run, RunDetail, RunFilter, RunId};
use crate::store::{Correlated, NewRun, NewSignal, Store, CANCEL};
use crate::worker::{run_worker, WorkerConfig};

/// A store, the graphs this process knows, and a clock. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    store: Store,
    registry: Arc<Registry>,
    clock: Arc<dyn Clock>,
}

impl Engine {
    pub fn new(store: Store, registry: Registry, clock: Arc<dyn Clock>) -> Self {
        Engine { store, registry: Arc::new(registry), clock }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Starts a run of the latest registered version of `graph`.
    pub async fn start<S: Serialize>(&self, graph: &str, state: &S) -> Result<RunId> {
        let id = RunId::new();
        self.start_with_id(id, graph, state).await?;
        Ok(id)
    }

    /// Starts a run with a caller-chosen id (for example derived from an
    /// incident), so a retried start fails on the duplicate id instead of
    /// starting twice.
    pub async fn start_with_id<S: Serialize>(&self, id: RunId, graph: &str, state: &S) -> Result<()> {
        let run = self.new_run(id, graph, state, None, None)?;
        self.store.create_run(&run, self.clock.now()).await
    }

    fn new_run<S: Serialize>(
        &self,
        id: RunId,
        graph: &str,
        state: &S,
        key: Option<&str>,
        start_key: Option<&str>,
    ) -> Result<NewRun> {
        let g =
            self.registry.latest(graph).ok_or_else(|| Error::UnknownGraph { name: graph.to_owned(), version: 0 })?;
        Ok(NewRun {
            id,
            graph: g.name().to_owned(),
            graph_version: g.version(),
            node: g.start().to_owned(),
            state: serde_json::to_value(state)?,
            correlation_key: key.map(str::to_owned),
            start_key: start_key.map(str::to_owned),
        })
    }

    /// Starts a run of `graph` holding correlation `key`, or, when an
    /// unfinished run of the graph already holds it, delivers the signal
    /// (`signal_id`, `kind`, `payload`) to that run. Atomic across processes
    /// sharing the database: many concurrent calls with one key start one run.
    /// With a `start_key`, a start whose key a finished run already holds is a
    /// [`Correlated::Repeated`] and starts nothing (a replayed trigger).
    #[allow(clippy::too_many_arguments)]
    pub async fn start_or_signal<S: Serialize>(
        &self,
        graph: &str,
        key: &str,
        start_key: Option<&str>,
        state: &S,
        signal_id: &str,
        kind: &str,
        payload: Value,
    ) -> Result<Correlated> {
        let run = self.new_run(RunId::new(), graph, state, Some(key), start_key)?;
        let signal = NewSignal { id: signal_id.to_owned(), kind: kind.to_owned(), payload };
        self.store.start_or_signal(&run, &signal, self.clock.now()).await
    }

    /// Delivers a signal to the unfinished run of `graph` holding `key`;
    /// None when no unfinished run holds it.
    pub async fn signal_open(
        &self,
        graph: &str,
        key: &str,
        signal_id: &str,
        kind: &str,
        payload: Value,
    ) -> Result<Option<(RunId, Delivery)>> {
        let signal = NewSignal { id: signal_id.to_owned(), kind: kind.to_owned(), payload };
        self.store.signal_open(graph, key, &signal, self.clock.now()).await
    }

    /// Delivers a signal once per `signal_id`; see [`Store::signal`].
    pub async fn signal(&self, run: RunId, signal_id: &str, kind: &str, payload: Value) -> Result<Delivery> {
        let signal = NewSignal { id: signal_id.to_owned(), kind: kind.to_owned(), payload };
        self.store.signal(run, &signal, self.clock.now()).await
    }

    /// Cancels a run: at once when it is runnable or waiting, at the end of
    /// its current step when it is running.
    pub async fn cancel(&self, run: RunId, signal_id: &str, reason: &str) -> Result<Delivery> {
        self.signal(run, signal_id, CANCEL, serde_json::json!({ "reason": reason })).await
    }

    /// Puts a failed run back to work at the node where it failed.
    pub async fn retry(&self, run: RunId) -> Result<()> {
        self.store.retry_run(run, self.clock.now()).await
    }

    /// Runs changed from now on (see [`Store::changes`]); the nil id means any may have.
    pub fn changes(&self) -> tokio::sync::broadcast::Receiver<RunId> {
        self.store.changes()
    }

    pub async fn run(&self, run: RunId) -> Result<Run> {
        self.store.get_run(run).await
    }

    pub async fn detail(&self, run: RunId) -> Result<RunDetail> {
        self.store.run_detail(run).await
    }

    pub async fn list(&self, filter: &RunFilter) -> Result<Vec<Run>> {
        self.store.list_runs(filter).await
    }

    /// Runs a worker in this task until `shutdown` fires.
    pub async fn work(&self, config: WorkerConfig, shutdown: CancellationToken) {
        run_worker(self.clone(), config, shutdown).await
    }
}
