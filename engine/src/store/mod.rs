//! The durable store: runs, history, signals, side-effect records and the
//! outbox, in PostgreSQL (many processes) or SQLite (the embedded default, one
//! process). One SQL text serves both dialects except where noted; timestamps
//! are epoch milliseconds from the engine's [`Clock`](crate::Clock).

mod fleet;
mod rows;

pub use fleet::{Hold, Limit, NewFact, Reservation};

use std::sync::{Arc, Once};
use std::time::Duration;

use serde_json::Value;
use sqlx::any::AnyPoolOptions;
use sqlx::{Any, AnyPool, Executor, Row, Transaction};
use tokio::sync::{broadcast, Notify};
use tokio_util::sync::CancellationToken;

use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::run::{
    Checkpoint, Delivery, EffectRecord, OutboxEntry, OutboxMessage, OutboxStats, PendingMessage, Run, RunDetail,
    RunFilter, RunId, RunStatus, Signal, StepOutcome,
};

/// The PostgreSQL channel on which a run that became runnable is announced.
const CHANNEL: &str = "sentinel_runs";
/// The PostgreSQL channel on which a run's change that did not make it
/// runnable (it waits, it finished, a signal that woke nothing) is announced,
/// with the run's id as payload. Live views listen to it and to [`CHANNEL`]
/// (whose payload is the run's id too); workers only to [`CHANNEL`].
const CHANGES: &str = "sentinel_run_changes";
/// Changes a slow subscriber may fall behind by before it is told it lagged.
const CHANGES_BUFFER: usize = 1024;
/// The signal kind that cancels a run; handled by the engine, not by nodes.
pub const CANCEL: &str = "cancel";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Sqlite,
}

/// Connection settings for [`Store::connect`].
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// `postgres://…` or `sqlite://PATH` (created when missing) or `sqlite::memory:`.
    pub url: String,
    /// Pool size for PostgreSQL; SQLite always uses one connection, which
    /// serialises writers the way SQLite wants them serialised.
    pub max_connections: u32,
    /// How long a caller waits for a pooled connection before the call fails
    /// (and, for a worker, is retried later).
    pub acquire_timeout: Duration,
}

impl StoreConfig {
    pub fn new(url: impl Into<String>) -> Self {
        StoreConfig { url: url.into(), max_connections: 20, acquire_timeout: Duration::from_secs(5) }
    }
}

/// Handle to the engine's tables. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    dialect: Dialect,
    url: Arc<str>,
    /// Wakes this process's idle workers; PostgreSQL NOTIFY reaches the others.
    local_wake: Arc<Notify>,
    /// Every run this process changed, and (while [`Store::follow_changes`]
    /// runs) those other processes changed.
    changes: broadcast::Sender<RunId>,
}

/// A run a worker holds the lease on.
#[derive(Clone, Debug)]
pub(crate) struct Claimed {
    pub(crate) id: RunId,
    pub(crate) graph: String,
    pub(crate) graph_version: i32,
    pub(crate) node: String,
    pub(crate) state: String,
    pub(crate) step: i64,
    pub(crate) attempt: i32,
    pub(crate) epoch: i64,
    /// How many times in a row a worker lost this run's lease at this step.
    pub(crate) lease_losses: i32,
    /// The run's signal counter when claimed: signals delivered later bump it.
    pub(crate) signal_seq: i64,
}

/// The run's position after a step, as the checkpoint writes it.
#[derive(Clone, Debug)]
pub(crate) struct Next {
    pub(crate) status: RunStatus,
    pub(crate) node: String,
    pub(crate) attempt: i32,
    pub(crate) wake_at: Option<Timestamp>,
    pub(crate) wait_signals: Vec<String>,
    pub(crate) error: Option<String>,
}

/// A run whose lease the worker kept after a checkpoint, with the signals
/// pending for its next step (read in the checkpoint transaction).
#[derive(Clone, Debug)]
pub(crate) struct Kept {
    pub(crate) run: Claimed,
    pub(crate) pending: Vec<Signal>,
}

/// Everything one checkpoint transaction writes.
#[derive(Clone, Debug)]
pub(crate) struct CheckpointWrite {
    pub(crate) run_id: RunId,
    pub(crate) epoch: i64,
    pub(crate) step: i64,
    pub(crate) node: String,
    pub(crate) attempt: i32,
    pub(crate) outcome: StepOutcome,
    pub(crate) state_before: String,
    pub(crate) state_after: String,
    pub(crate) worker: String,
    pub(crate) started_at: Timestamp,
    pub(crate) finished_at: Timestamp,
    pub(crate) next: Next,
    pub(crate) consumed: Vec<String>,
    /// The signals the node was shown, and the counter they were read at.
    pub(crate) pending: Vec<Signal>,
    pub(crate) signal_seq: i64,
    pub(crate) outbox: Vec<OutboxMessage>,
    /// Ledger facts the step recorded.
    pub(crate) facts: Vec<NewFact>,
    /// When set and the run is due again at once, the worker keeps the lease
    /// (until this time) and goes on with the next node without a new claim.
    pub(crate) keep_lease_until: Option<Timestamp>,
    /// A kept lease that expires before this is extended to `keep_lease_until`.
    pub(crate) lease_refresh_before: Timestamp,
}

/// What [`Store::effect_begin`] found.
#[derive(Debug)]
pub(crate) enum EffectStart {
    New,
    /// Intent recorded earlier, outcome never: the earlier attempt may have acted.
    Resumed,
    Done(Value),
}

/// A new run to insert.
#[derive(Clone, Debug)]
pub struct NewRun {
    pub id: RunId,
    pub graph: String,
    pub graph_version: i32,
    pub node: String,
    pub state: Value,
    /// Unique among the graph's unfinished runs (see [`Store::start_or_signal`]).
    pub correlation_key: Option<String>,
    /// Unique among all the graph's runs, finished or not.
    pub start_key: Option<String>,
}

/// What [`Store::start_or_signal`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Correlated {
    /// No unfinished run held the key: this one was started.
    Started(RunId),
    /// The unfinished run holding the key got the signal.
    Signalled(RunId, Delivery),
    /// A run with the same start key was started before and has finished:
    /// this start is a repeat, and nothing was done.
    Repeated(RunId),
}

/// A signal to deliver.
#[derive(Clone, Debug)]
pub struct NewSignal {
    pub id: String,
    pub kind: String,
    pub payload: Value,
}

static DRIVERS: Once = Once::new();

impl Store {
    /// Connects and applies the engine's migrations.
    pub async fn connect(config: &StoreConfig) -> Result<Store> {
        let store = Store::connect_without_migrating(config).await?;
        store.migrate().await?;
        Ok(store)
    }

    pub async fn connect_without_migrating(config: &StoreConfig) -> Result<Store> {
        DRIVERS.call_once(sqlx::any::install_default_drivers);
        let url = config.url.as_str();
        let dialect = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Dialect::Postgres
        } else if url.starts_with("sqlite:") {
            Dialect::Sqlite
        } else {
            return Err(Error::DatabaseUrl(redact(url)));
        };
        let options = AnyPoolOptions::new().acquire_timeout(config.acquire_timeout);
        let pool = match dialect {
            Dialect::Postgres => options.max_connections(config.max_connections).connect(url).await?,
            Dialect::Sqlite => {
                let url = sqlite_url(url);
                options
                    .max_connections(1)
                    .min_connections(1)
                    // An idle in-memory database must never be closed: it would vanish.
                    .idle_timeout(None)
                    .max_lifetime(None)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            conn.execute("PRAGMA journal_mode = WAL").await?;
                            conn.execute("PRAGMA synchronous = NORMAL").await?;
                            conn.execute("PRAGMA foreign_keys = ON").await?;
                            conn.execute("PRAGMA busy_timeout = 5000").await?;
                            Ok(())
                        })
                    })
                    .connect(&url)
                    .await?
            }
        };
        Ok(Store {
            pool,
            dialect,
            url: config.url.as_str().into(),
            local_wake: Arc::new(Notify::new()),
            changes: broadcast::channel(CHANGES_BUFFER).0,
        })
    }

    /// Applies the engine's migrations (versions below 1000). Crates built on
    /// the engine keep their own tables in the same database with versions
    /// from 1000 up, so each migrator ignores the other's entries.
    pub async fn migrate(&self) -> Result<()> {
        let mut migrator = match self.dialect {
            Dialect::Postgres => sqlx::migrate!("./migrations/postgres"),
            Dialect::Sqlite => sqlx::migrate!("./migrations/sqlite"),
        };
        migrator.set_ignore_missing(true);
        migrator.run(&self.pool).await?;
        Ok(())
    }

    /// The connection pool, for crates that keep tables of their own beside
    /// the engine's (API keys, audit log). Engine tables are written only
    /// through this type.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Checks the database answers.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub(crate) fn local_wake(&self) -> Arc<Notify> {
        self.local_wake.clone()
    }

    /// Runs changed from now on: by this process, and by others while
    /// [`Store::follow_changes`] runs.
    pub fn changes(&self) -> broadcast::Receiver<RunId> {
        self.changes.subscribe()
    }

    /// Announces a change to `run` to other processes: when the transaction
    /// commits, given one, or at once, given the pool.
    async fn changed_in<'e>(&self, db: impl sqlx::Executor<'e, Database = Any>, run: RunId) -> Result<()> {
        if self.dialect == Dialect::Postgres {
            sqlx::query("SELECT pg_notify($1, $2)").bind(CHANGES).bind(run.to_string()).execute(db).await?;
        }
        Ok(())
    }

    /// Announces a committed change to `run` in this process.
    fn changed(&self, run: RunId) {
        // No subscriber is not an error.
        let _ = self.changes.send(run);
    }

    /// Wakes other processes' idle workers when the transaction commits; the
    /// payload (the run's id) also tells a change listener which run changed.
    async fn notify_in(&self, tx: &mut Transaction<'static, Any>, run: RunId) -> Result<()> {
        if self.dialect == Dialect::Postgres {
            // Delivered by PostgreSQL only when the transaction commits.
            sqlx::query("SELECT pg_notify($1, $2)").bind(CHANNEL).bind(run.to_string()).execute(&mut **tx).await?;
        }
        Ok(())
    }

    // ---- runs -------------------------------------------------------------

    pub async fn create_run(&self, run: &NewRun, now: Timestamp) -> Result<()> {
        if !self.insert_run(run, now).await? {
            return Err(match (&run.correlation_key, &run.start_key) {
                (None, None) => Error::RunExists(run.id),
                (key, start) => Error::KeyTaken {
                    graph: run.graph.clone(),
                    key: key.clone().or_else(|| start.clone()).unwrap_or_default(),
                },
            });
        }
        Ok(())
    }

    /// Inserts the run; false when its correlation key is held by an
    /// unfinished run of the graph or its start key by any run of it
    /// (nothing is written then). A duplicate id is an error.
    async fn insert_run(&self, run: &NewRun, now: Timestamp) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "INSERT INTO runs (id, graph, graph_version, status, node, state, step, attempt, due_at, created_at,
                               updated_at, correlation_key, start_key)
             VALUES ($1, $2, $3, 'runnable', $4, $5, 0, 1, $6, $6, $6, $7, $8)
             ON CONFLICT DO NOTHING",
        )
        .bind(run.id.to_string())
        .bind(&run.graph)
        .bind(run.graph_version as i64)
        .bind(&run.node)
        .bind(serde_json::to_string(&run.state)?)
        .bind(now.0)
        .bind(run.correlation_key.as_deref())
        .bind(run.start_key.as_deref())
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        self.notify_in(&mut tx, run.id).await?;
        tx.commit().await?;
        self.local_wake.notify_waiters();
        self.changed(run.id);
        Ok(true)
    }

    /// The unfinished run of `graph` that holds `key`, if any.
    pub async fn open_run_with_key(&self, graph: &str, key: &str) -> Result<Option<RunId>> {
        let row = sqlx::query("SELECT id FROM runs WHERE graph = $1 AND correlation_key = $2 AND finished_at IS NULL")
            .bind(graph)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| rows::run_id_of(&r)).transpose()
    }

    /// Signals the unfinished run of `graph` holding `key`; None when none does.
    pub async fn signal_open(
        &self,
        graph: &str,
        key: &str,
        signal: &NewSignal,
        now: Timestamp,
    ) -> Result<Option<(RunId, Delivery)>> {
        // A run that finishes between the lookup and the signal frees the key:
        // look again (a bounded number of times; each pass needs a run to finish).
        for _ in 0..8 {
            let Some(run) = self.open_run_with_key(graph, key).await? else { return Ok(None) };
            match self.signal(run, signal, now).await {
                Ok(delivery) => return Ok(Some((run, delivery))),
                Err(Error::RunFinished { .. } | Error::RunNotFound(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::KeyContended { graph: graph.to_owned(), key: key.to_owned() })
    }

    /// Starts `run`, or, when an unfinished run of its graph holds its
    /// correlation key, delivers `signal` to that run instead. Atomic across
    /// processes: the partial unique index on (graph, correlation_key) lets
    /// exactly one of many concurrent starts insert; the others signal it.
    pub async fn start_or_signal(&self, run: &NewRun, signal: &NewSignal, now: Timestamp) -> Result<Correlated> {
        let key = run.correlation_key.as_deref().ok_or_else(|| Error::KeyTaken {
            graph: run.graph.clone(),
            key: "(none: start_or_signal needs a correlation key)".into(),
        })?;
        for _ in 0..8 {
            if let Some((id, delivery)) = self.signal_open(&run.graph, key, signal, now).await? {
                return Ok(Correlated::Signalled(id, delivery));
            }
            if self.insert_run(run, now).await? {
                return Ok(Correlated::Started(run.id));
            }
            if let Some(start_key) = &run.start_key {
                let row = sqlx::query("SELECT id FROM runs WHERE graph = $1 AND start_key = $2")
                    .bind(&run.graph)
                    .bind(start_key)
                    .fetch_optional(&self.pool)
                    .await?;
                if let Some(row) = row {
                    let earlier = rows::run_id_of(&row)?;
                    // Open: it takes the signal (next pass); finished: a repeat.
                    if self.open_run_with_key(&run.graph, key).await? != Some(earlier) {
                        return Ok(Correlated::Repeated(earlier));
                    }
                }
            }
            // Another process started it between our lookup and insert: signal that one.
        }
        Err(Error::KeyContended { graph: run.graph.clone(), key: key.to_owned() })
    }

    /// Claims the run that has been due longest: runnable, a waiting run whose
    /// timer fired, or a running run whose lease expired (its worker died).
    pub(crate) async fn claim(&self, worker: &str, now: Timestamp, lease_until: Timestamp) -> Result<Option<Claimed>> {
        let pick = match self.dialect {
            Dialect::Postgres => {
                "SELECT id FROM runs WHERE due_at <= $1 ORDER BY due_at LIMIT 1 FOR UPDATE SKIP LOCKED"
            }
            Dialect::Sqlite => "SELECT id FROM runs WHERE due_at <= $1 ORDER BY due_at LIMIT 1",
        };
        let sql = format!(
            "UPDATE runs SET status = 'running', lease_owner = $2, lease_epoch = lease_epoch + 1,
                 lease_expires_at = $3, due_at = $3, updated_at = $1,
                 lease_losses = lease_losses + CASE WHEN status = 'running' THEN 1 ELSE 0 END
             WHERE id = ({pick})
             RETURNING id, graph, graph_version, node, state, step, attempt, lease_epoch, lease_losses, signal_seq"
        );
        let row = sqlx::query(&sql).bind(now.0).bind(worker).bind(lease_until.0).fetch_optional(&self.pool).await?;
        row.map(|r| rows::claimed(&r)).transpose()
    }

    /// Extends a held lease; false when the lease was lost.
    pub(crate) async fn heartbeat(&self, run: RunId, epoch: i64, now: Timestamp, until: Timestamp) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE runs SET lease_expires_at = $3, due_at = $3, updated_at = $4
             WHERE id = $1 AND lease_epoch = $2 AND status = 'running'",
        )
        .bind(run.to_string())
        .bind(epoch)
        .bind(until.0)
        .bind(now.0)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives a claimed run back untouched (the worker is shutting down).
    pub(crate) async fn release(&self, run: RunId, epoch: i64, now: Timestamp) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE runs SET status = 'runnable', lease_owner = NULL, lease_expires_at = NULL, due_at = $3,
                 updated_at = $3, lease_losses = 0
             WHERE id = $1 AND lease_epoch = $2 AND status = 'running'",
        )
        .bind(run.to_string())
        .bind(epoch)
        .bind(now.0)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 1 {
            self.notify_in(&mut tx, run).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Fails a claimed run without running a node (unknown graph, too many
    /// lost leases). Fenced like a checkpoint.
    pub(crate) async fn fail_claimed(&self, run: RunId, epoch: i64, error: &str, now: Timestamp) -> Result<()> {
        let done = sqlx::query(
            "UPDATE runs SET status = 'failed', error = $3, lease_owner = NULL, lease_expires_at = NULL,
                 due_at = NULL, wake_at = NULL, updated_at = $4, finished_at = $4
             WHERE id = $1 AND lease_epoch = $2 AND status = 'running'",
        )
        .bind(run.to_string())
        .bind(epoch)
        .bind(error)
        .bind(now.0)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(Error::LeaseLost { run });
        }
        // Already committed: a lost announcement costs a live view a refresh, nothing more.
        if let Err(e) = self.changed_in(&self.pool, run).await {
            tracing::warn!(error = %e, %run, "could not announce a failed run");
        }
        self.changed(run);
        Ok(())
    }

    /// Commits one step: history row, signals consumed, the run moved to its
    /// next node, outbox messages, lease released (or kept, see
    /// [`CheckpointWrite::keep_lease_until`]). Fenced by the lease epoch and
    /// step: a worker whose lease was taken over gets [`Error::LeaseLost`] and
    /// writes nothing.
    ///
    /// The run row is updated first, which takes its lock: a concurrent
    /// [`Store::signal`] either committed before (and its signal is seen below)
    /// or waits for this commit (and then sees the waiting run and wakes it).
    pub(crate) async fn checkpoint(&self, cp: &CheckpointWrite) -> Result<Option<Kept>> {
        let run_id = cp.run_id.to_string();
        let now = cp.finished_at;
        let next = &cp.next;
        let due_now = next.status == RunStatus::Runnable && next.wake_at.is_none_or(|w| w <= now);
        let keep = cp.keep_lease_until.filter(|_| due_now);
        let (status, lease_owner, lease_expires_at, due_at) = match (next.status, keep) {
            (RunStatus::Runnable, Some(until)) => ("running", Some(cp.worker.as_str()), Some(until.0), Some(until.0)),
            (RunStatus::Runnable, None) => ("runnable", None, None, Some(next.wake_at.unwrap_or(now).0)),
            (RunStatus::Waiting, _) => ("waiting", None, None, next.wake_at.map(|w| w.0)),
            (s, _) => (s.as_str(), None, None, None),
        };
        let finished_at = next.status.is_finished().then_some(now.0);

        let mut tx = self.pool.begin().await?;
        // PostgreSQL moves the run and appends the history row in one statement
        // (one round trip); the insert happens only if the fenced update matched.
        let (update_sql, history_in_update) = match self.dialect {
            Dialect::Postgres => (
                "WITH moved AS (
                     UPDATE runs SET status = $4, node = $5, state = $6, step = step + 1, attempt = $7, wake_at = $8,
                         wait_signals = $9, error = $11, lease_owner = $12,
                         lease_expires_at = CASE WHEN $13 IS NULL THEN NULL
                             WHEN lease_expires_at >= $23 THEN lease_expires_at ELSE $13 END,
                         due_at = CASE WHEN $13 IS NULL THEN $10
                             WHEN lease_expires_at >= $23 THEN lease_expires_at ELSE $13 END,
                         lease_losses = 0, updated_at = $14, finished_at = $15
                     WHERE id = $1 AND lease_epoch = $2 AND step = $3 AND status = 'running'
                     RETURNING signal_seq),
                 history AS (
                     INSERT INTO run_history (run_id, step, node, attempt, outcome, state_before, state_after, worker,
                                              started_at, finished_at)
                     SELECT $1, $3, $16, $17, $18, $19, $6, $20, $21, $22 FROM moved)
                 SELECT signal_seq FROM moved",
                true,
            ),
            Dialect::Sqlite => (
                "UPDATE runs SET status = $4, node = $5, state = $6, step = step + 1, attempt = $7, wake_at = $8,
                     wait_signals = $9, error = $11, lease_owner = $12,
                     lease_expires_at = CASE WHEN $13 IS NULL THEN NULL
                         WHEN lease_expires_at >= $16 THEN lease_expires_at ELSE $13 END,
                     due_at = CASE WHEN $13 IS NULL THEN $10
                         WHEN lease_expires_at >= $16 THEN lease_expires_at ELSE $13 END,
                     lease_losses = 0, updated_at = $14, finished_at = $15
                 WHERE id = $1 AND lease_epoch = $2 AND step = $3 AND status = 'running'
                 RETURNING signal_seq",
                false,
            ),
        };
        let outcome = serde_json::to_string(&cp.outcome)?;
        let mut update = sqlx::query(update_sql)
            .bind(&run_id)
            .bind(cp.epoch)
            .bind(cp.step)
            .bind(status)
            .bind(&next.node)
            .bind(&cp.state_after)
            .bind(next.attempt as i64)
            .bind(next.wake_at.map(|w| w.0))
            .bind(next.wait_signals.join(","))
            .bind(due_at)
            .bind(next.error.as_deref())
            .bind(lease_owner)
            .bind(lease_expires_at)
            .bind(now.0)
            .bind(finished_at);
        if history_in_update {
            update = update
                .bind(&cp.node)
                .bind(cp.attempt as i64)
                .bind(&outcome)
                .bind(&cp.state_before)
                .bind(&cp.worker)
                .bind(cp.started_at.0)
                .bind(cp.finished_at.0);
        }
        // A kept lease is only extended once less than half of it is left, so
        // that most checkpoints leave every indexed column of the run alone
        // (a HOT update in PostgreSQL: no index writes).
        update = update.bind(cp.lease_refresh_before.0);
        let Some(row) = update.fetch_optional(&mut *tx).await? else {
            return Err(Error::LeaseLost { run: cp.run_id });
        };
        let signal_seq: i64 = row.try_get(0)?;
        if !history_in_update {
            sqlx::query(
                "INSERT INTO run_history (run_id, step, node, attempt, outcome, state_before, state_after, worker,
                                          started_at, finished_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(&run_id)
            .bind(cp.step)
            .bind(&cp.node)
            .bind(cp.attempt as i64)
            .bind(&outcome)
            .bind(&cp.state_before)
            .bind(&cp.state_after)
            .bind(&cp.worker)
            .bind(cp.started_at.0)
            .bind(cp.finished_at.0)
            .execute(&mut *tx)
            .await?;
        }
        for id in &cp.consumed {
            sqlx::query("UPDATE run_signals SET consumed_step = $3 WHERE run_id = $1 AND signal_id = $2 AND consumed_step IS NULL")
                .bind(&run_id)
                .bind(id)
                .bind(cp.step)
                .execute(&mut *tx)
                .await?;
        }
        // Signals delivered while the node ran bumped the counter; only then
        // is a fresh read needed. (This read runs after the update took the
        // row lock, so it sees every signal committed before that.)
        let mut pending: Vec<Signal> = if signal_seq != cp.signal_seq {
            let sql = format!(
                "SELECT signal_id, kind, payload, received_at, consumed_step FROM run_signals
                 WHERE run_id = $1 AND consumed_step IS NULL ORDER BY {}",
                self.signal_order()
            );
            sqlx::query(&sql)
                .bind(&run_id)
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(rows::signal)
                .collect::<Result<_>>()?
        } else {
            cp.pending.iter().filter(|s| !cp.consumed.contains(&s.id)).cloned().collect()
        };

        let mut status = status;
        if !next.status.is_finished() {
            if let Some(cancel) = pending.iter().find(|s| s.kind == CANCEL) {
                sqlx::query("UPDATE run_signals SET consumed_step = $3 WHERE run_id = $1 AND signal_id = $2")
                    .bind(&run_id)
                    .bind(&cancel.id)
                    .bind(cp.step)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(
                    "UPDATE runs SET status = 'cancelled', error = $2, due_at = NULL, wake_at = NULL,
                         lease_owner = NULL, lease_expires_at = NULL, finished_at = $3 WHERE id = $1",
                )
                .bind(&run_id)
                .bind(format!("cancelled by signal `{}`", cancel.id))
                .bind(now.0)
                .execute(&mut *tx)
                .await?;
                status = "cancelled";
            } else if next.status == RunStatus::Waiting && pending.iter().any(|s| next.wait_signals.contains(&s.kind)) {
                // The signal arrived while the node ran: wake at once rather than wait for it.
                sqlx::query("UPDATE runs SET status = 'runnable', wake_at = NULL, due_at = $2 WHERE id = $1")
                    .bind(&run_id)
                    .bind(now.0)
                    .execute(&mut *tx)
                    .await?;
                status = "runnable";
            }
        }

        for (i, msg) in cp.outbox.iter().enumerate() {
            sqlx::query(
                "INSERT INTO outbox (run_id, idempotency_key, topic, payload, next_attempt_at, created_at)
                 VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (idempotency_key) DO NOTHING",
            )
            .bind(&run_id)
            .bind(format!("{}:{}:{}", cp.run_id, cp.step, i))
            .bind(&msg.topic)
            .bind(serde_json::to_string(&msg.payload)?)
            .bind(now.0)
            .execute(&mut *tx)
            .await?;
        }
        for fact in &cp.facts {
            fleet::insert_fact(&mut tx, fact).await?;
        }
        let announce = status == "runnable";
        if announce {
            self.notify_in(&mut tx, cp.run_id).await?;
        } else if status != "running" {
            // Waiting or finished: a change a live view must see. A run that
            // moves on at once is announced by its wake-up (or, when this
            // worker keeps it, at its next stop), so most steps cost no extra
            // notification.
            self.changed_in(&mut *tx, cp.run_id).await?;
        }
        tx.commit().await?;
        if announce {
            self.local_wake.notify_waiters();
        }
        self.changed(cp.run_id);
        if status != "running" {
            return Ok(None);
        }
        pending.retain(|s| !cp.consumed.contains(&s.id));
        Ok(Some(Kept {
            run: Claimed {
                id: cp.run_id,
                graph: String::new(),
                graph_version: 0,
                node: next.node.clone(),
                state: cp.state_after.clone(),
                step: cp.step + 1,
                attempt: next.attempt,
                epoch: cp.epoch,
                lease_losses: 0,
                signal_seq,
            },
            pending,
        }))
    }

    // ---- signals ----------------------------------------------------------

    /// Stores a signal, once per `signal.id`, and wakes the run if it waits
    /// for this kind. A `cancel` signal cancels a runnable or waiting run at
    /// once and a running one at its next checkpoint.
    pub async fn signal(&self, run: RunId, signal: &NewSignal, now: Timestamp) -> Result<Delivery> {
        let run_id = run.to_string();
        let mut tx = self.pool.begin().await?;
        // Bumping the counter takes the run's row lock and tells a checkpoint
        // in flight that it must look for new signals.
        let row = sqlx::query(
            "UPDATE runs SET signal_seq = signal_seq + 1 WHERE id = $1 RETURNING status, wait_signals, step",
        )
        .bind(&run_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Err(Error::RunNotFound(run));
        };
        let status = rows::status(&row.try_get::<String, _>(0)?)?;
        let wait_signals: String = row.try_get(1)?;
        let step: i64 = row.try_get(2)?;
        let inserted = sqlx::query(
            "INSERT INTO run_signals (run_id, signal_id, kind, payload, received_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (run_id, signal_id) DO NOTHING",
        )
        .bind(&run_id)
        .bind(&signal.id)
        .bind(&signal.kind)
        .bind(serde_json::to_string(&signal.payload)?)
        .bind(now.0)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            // Duplicates are answered as such even after the run finished.
            tx.rollback().await?;
            return Ok(Delivery::Duplicate);
        }
        if status.is_finished() {
            tx.rollback().await?;
            return Err(Error::RunFinished { run, status });
        }
        let mut announce = false;
        if signal.kind == CANCEL {
            if matches!(status, RunStatus::Runnable | RunStatus::Waiting) {
                sqlx::query(
                    "UPDATE runs SET status = 'cancelled', error = $2, due_at = NULL, wake_at = NULL,
                         updated_at = $3, finished_at = $3 WHERE id = $1",
                )
                .bind(&run_id)
                .bind(format!("cancelled by signal `{}`", signal.id))
                .bind(now.0)
                .execute(&mut *tx)
                .await?;
                sqlx::query("UPDATE run_signals SET consumed_step = $3 WHERE run_id = $1 AND signal_id = $2")
                    .bind(&run_id)
                    .bind(&signal.id)
                    .bind(step)
                    .execute(&mut *tx)
                    .await?;
            }
        } else if status == RunStatus::Waiting && wait_signals.split(',').any(|k| k == signal.kind) {
            sqlx::query(
                "UPDATE runs SET status = 'runnable', wake_at = NULL, due_at = $2, updated_at = $2 WHERE id = $1",
            )
            .bind(&run_id)
            .bind(now.0)
            .execute(&mut *tx)
            .await?;
            self.notify_in(&mut tx, run).await?;
            announce = true;
        } else {
            self.changed_in(&mut *tx, run).await?;
        }
        tx.commit().await?;
        if announce {
            self.local_wake.notify_waiters();
        }
        self.changed(run);
        Ok(Delivery::Accepted)
    }

    fn signal_order(&self) -> &'static str {
        match self.dialect {
            Dialect::Postgres => "received_at, seq",
            Dialect::Sqlite => "received_at, rowid",
        }
    }

    pub(crate) async fn pending_signals(&self, run: RunId) -> Result<Vec<Signal>> {
        let sql = format!(
            "SELECT signal_id, kind, payload, received_at, consumed_step FROM run_signals
             WHERE run_id = $1 AND consumed_step IS NULL ORDER BY {}",
            self.signal_order()
        );
        let rows = sqlx::query(&sql).bind(run.to_string()).fetch_all(&self.pool).await?;
        rows.iter().map(rows::signal).collect()
    }

    /// Puts a failed run back to runnable at its current node, with a fresh
    /// attempt count; its history is kept.
    pub async fn retry_run(&self, run: RunId, now: Timestamp) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE runs SET status = 'runnable', attempt = 1, error = NULL, finished_at = NULL, wake_at = NULL,
                 due_at = $2, updated_at = $2, lease_losses = 0
             WHERE id = $1 AND status = 'failed'",
        )
        .bind(run.to_string())
        .bind(now.0)
        .execute(&mut *tx)
        .await;
        let done = match done {
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                tx.rollback().await?;
                let r = self.get_run(run).await?;
                let key = r.correlation_key.unwrap_or_default();
                return Err(Error::KeyTaken { graph: r.graph, key });
            }
            other => other?,
        };
        if done.rows_affected() == 0 {
            // Give the connection back first: SQLite has only one.
            tx.rollback().await?;
            let status = self.get_run(run).await?.status;
            return Err(Error::WrongStatus { run, status, expected: "failed" });
        }
        self.notify_in(&mut tx, run).await?;
        tx.commit().await?;
        self.local_wake.notify_waiters();
        self.changed(run);
        Ok(())
    }

    // ---- side effects -----------------------------------------------------

    pub(crate) async fn effect_begin(&self, run: RunId, step: i64, key: &str, now: Timestamp) -> Result<EffectStart> {
        let inserted = sqlx::query(
            "INSERT INTO run_effects (run_id, key, step, intent_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (run_id, key) DO NOTHING",
        )
        .bind(run.to_string())
        .bind(key)
        .bind(step)
        .bind(now.0)
        .execute(&self.pool)
        .await?;
        if inserted.rows_affected() == 1 {
            return Ok(EffectStart::New);
        }
        let outcome: Option<String> = sqlx::query("SELECT outcome FROM run_effects WHERE run_id = $1 AND key = $2")
            .bind(run.to_string())
            .bind(key)
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?;
        match outcome {
            Some(o) => Ok(EffectStart::Done(serde_json::from_str(&o)?)),
            None => Ok(EffectStart::Resumed),
        }
    }

    pub(crate) async fn effect_complete(&self, run: RunId, key: &str, outcome: &Value, now: Timestamp) -> Result<()> {
        sqlx::query(
            "UPDATE run_effects SET outcome = $3, completed_at = $4 WHERE run_id = $1 AND key = $2 AND outcome IS NULL",
        )
        .bind(run.to_string())
        .bind(key)
        .bind(serde_json::to_string(outcome)?)
        .bind(now.0)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    // ---- inspection -------------------------------------------------------

    pub async fn get_run(&self, run: RunId) -> Result<Run> {
        let sql = format!("SELECT {} FROM runs WHERE id = $1", rows::RUN_COLUMNS);
        let row = sqlx::query(&sql).bind(run.to_string()).fetch_optional(&self.pool).await?;
        row.as_ref().map(rows::run).transpose()?.ok_or(Error::RunNotFound(run))
    }

    /// Runs, newest first.
    pub async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<Run>> {
        let sql = format!(
            "SELECT {} FROM runs WHERE ($1 IS NULL OR status = $1) AND ($2 IS NULL OR graph = $2)
             ORDER BY created_at DESC, id DESC LIMIT $3",
            rows::RUN_COLUMNS
        );
        let rows = sqlx::query(&sql)
            .bind(filter.status.map(|s| s.as_str()))
            .bind(filter.graph.as_deref())
            .bind(filter.limit.unwrap_or(100))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(rows::run).collect()
    }

    /// Number of runs in each status.
    pub async fn count_by_status(&self) -> Result<Vec<(RunStatus, i64)>> {
        let rows = sqlx::query("SELECT status, COUNT(*) FROM runs GROUP BY status ORDER BY status")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok((rows::status(&r.try_get::<String, _>(0)?)?, r.try_get::<i64, _>(1)?))).collect()
    }

    /// How far the runs of one graph got: (runs, runs in `status`, history rows).
    pub async fn graph_progress(&self, graph: &str, status: RunStatus) -> Result<(i64, i64, i64)> {
        let row = sqlx::query(
            "SELECT COUNT(*), COALESCE(SUM(CASE WHEN status = $2 THEN 1 ELSE 0 END), 0),
                    (SELECT COUNT(*) FROM run_history h JOIN runs r ON r.id = h.run_id WHERE r.graph = $1)
             FROM runs WHERE graph = $1",
        )
        .bind(graph)
        .bind(status.as_str())
        .fetch_one(&self.pool)
        .await?;
        Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?))
    }

    pub async fn history(&self, run: RunId) -> Result<Vec<Checkpoint>> {
        let rows = sqlx::query(
            "SELECT run_id, step, node, attempt, outcome, state_before, state_after, worker, started_at, finished_at
             FROM run_history WHERE run_id = $1 ORDER BY step",
        )
        .bind(run.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::checkpoint).collect()
    }

    pub async fn signals(&self, run: RunId) -> Result<Vec<Signal>> {
        let sql = format!(
            "SELECT signal_id, kind, payload, received_at, consumed_step FROM run_signals WHERE run_id = $1 ORDER BY {}",
            self.signal_order()
        );
        let rows = sqlx::query(&sql).bind(run.to_string()).fetch_all(&self.pool).await?;
        rows.iter().map(rows::signal).collect()
    }

    pub async fn effects(&self, run: RunId) -> Result<Vec<EffectRecord>> {
        let rows = sqlx::query(
            "SELECT key, step, intent_at, outcome, completed_at FROM run_effects WHERE run_id = $1 ORDER BY intent_at, key",
        )
        .bind(run.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::effect).collect()
    }

    /// A run with its whole history, signals and side effects.
    pub async fn run_detail(&self, run: RunId) -> Result<RunDetail> {
        Ok(RunDetail {
            run: self.get_run(run).await?,
            history: self.history(run).await?,
            signals: self.signals(run).await?,
            effects: self.effects(run).await?,
        })
    }

    // ---- retention --------------------------------------------------------

    /// Deletes finished runs (with their history, signals, effects and outbox
    /// rows) that finished before `before`; returns how many runs went.
    pub async fn prune_finished(&self, before: Timestamp) -> Result<u64> {
        let mut total = 0;
        loop {
            let done = sqlx::query(
                "DELETE FROM runs WHERE id IN
                   (SELECT id FROM runs WHERE finished_at IS NOT NULL AND finished_at < $1 LIMIT 500)",
            )
            .bind(before.0)
            .execute(&self.pool)
            .await?;
            total += done.rows_affected();
            if done.rows_affected() < 500 {
                return Ok(total);
            }
        }
    }

    /// Deletes every run of `graph`, finished or not, with everything recorded
    /// about them. For benchmarks and operators cleaning up a retired graph.
    pub async fn purge_graph(&self, graph: &str) -> Result<u64> {
        let done = sqlx::query("DELETE FROM runs WHERE graph = $1").bind(graph).execute(&self.pool).await?;
        Ok(done.rows_affected())
    }

    // ---- outbox -----------------------------------------------------------

    /// Pending outbox messages due for (re)delivery, oldest first.
    pub async fn outbox_due(&self, now: Timestamp, limit: i64) -> Result<Vec<PendingMessage>> {
        let rows = sqlx::query(
            "SELECT id, run_id, idempotency_key, topic, payload, attempts, created_at, claim_token, claims, last_error FROM outbox
             WHERE status = 'pending' AND next_attempt_at <= $1 ORDER BY id LIMIT $2",
        )
        .bind(now.0)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::message).collect()
    }

    /// Claims the oldest due message until `lease_until`, with a fresh claim
    /// token: other relays skip it while the claim lasts, a relay that dies
    /// leaves it due again when the claim runs out (at-least-once, never
    /// lost), and only the token's holder can record its outcome. The
    /// message's `claims` counts every claim: above one, an earlier send may
    /// have reached its destination.
    pub async fn outbox_claim(&self, now: Timestamp, lease_until: Timestamp) -> Result<Option<PendingMessage>> {
        let lock = match self.dialect {
            Dialect::Postgres => "FOR UPDATE SKIP LOCKED",
            // One writer connection: the UPDATE is atomic on its own.
            Dialect::Sqlite => "",
        };
        let token = uuid::Uuid::new_v4().simple().to_string();
        let sql = format!(
            "UPDATE outbox SET next_attempt_at = $2, claim_token = $3, claims = claims + 1
             WHERE id = (SELECT id FROM outbox WHERE status = 'pending' AND next_attempt_at <= $1 ORDER BY next_attempt_at, id LIMIT 1 {lock})
             RETURNING id, run_id, idempotency_key, topic, payload, attempts, created_at, claim_token, claims, last_error"
        );
        let row = sqlx::query(&sql).bind(now.0).bind(lease_until.0).bind(&token).fetch_optional(&self.pool).await?;
        row.map(|r| rows::message(&r)).transpose()
    }

    /// Extends a claim while its send is in progress; false when the claim
    /// was lost (it ran out and another relay took the message).
    pub async fn outbox_extend(&self, id: i64, token: &str, until: Timestamp) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE outbox SET next_attempt_at = $3 WHERE id = $1 AND claim_token = $2 AND status = 'pending'",
        )
        .bind(id)
        .bind(token)
        .bind(until.0)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records a delivery; false (and nothing written) when `token` no longer holds the claim.
    pub async fn outbox_delivered(&self, id: i64, token: &str, now: Timestamp) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE outbox SET status = 'delivered', delivered_at = $3, attempts = attempts + 1
             WHERE id = $1 AND claim_token = $2 AND status = 'pending'",
        )
        .bind(id)
        .bind(token)
        .bind(now.0)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Marks a message that no configured destination can take: kept, counted
    /// apart from deliveries, and requeued by an operator once one is
    /// configured. Fenced like [`Store::outbox_delivered`].
    pub async fn outbox_undeliverable(&self, id: i64, token: &str, reason: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE outbox SET status = 'undeliverable', last_error = $3, attempts = attempts + 1
             WHERE id = $1 AND claim_token = $2 AND status = 'pending'",
        )
        .bind(id)
        .bind(token)
        .bind(reason)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records a failed delivery: retried at `retry_at`, or dead-lettered
    /// when `None`. Fenced like [`Store::outbox_delivered`].
    pub async fn outbox_failed(&self, id: i64, token: &str, error: &str, retry_at: Option<Timestamp>) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE outbox SET attempts = attempts + 1, last_error = $3,
                 status = CASE WHEN $4 IS NULL THEN 'dead' ELSE 'pending' END,
                 next_attempt_at = COALESCE($4, next_attempt_at)
             WHERE id = $1 AND claim_token = $2 AND status = 'pending'",
        )
        .bind(id)
        .bind(token)
        .bind(error)
        .bind(retry_at.map(|t| t.0))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Outbox messages newest first, optionally only those in one status.
    pub async fn outbox_list(&self, status: Option<&str>, limit: i64) -> Result<Vec<OutboxEntry>> {
        let rows = sqlx::query(
            "SELECT id, run_id, idempotency_key, topic, status, attempts, next_attempt_at, last_error, created_at, delivered_at
             FROM outbox WHERE (CAST($1 AS TEXT) IS NULL OR status = CAST($1 AS TEXT)) ORDER BY id DESC LIMIT $2",
        )
        .bind(status)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(OutboxEntry {
                    id: r.try_get("id")?,
                    run_id: r.try_get("run_id")?,
                    idempotency_key: r.try_get("idempotency_key")?,
                    topic: r.try_get("topic")?,
                    status: r.try_get("status")?,
                    attempts: r.try_get("attempts")?,
                    next_attempt_at: r.try_get("next_attempt_at")?,
                    last_error: r.try_get("last_error")?,
                    created_at: r.try_get("created_at")?,
                    delivered_at: r.try_get("delivered_at")?,
                })
            })
            .collect()
    }

    pub async fn outbox_stats(&self) -> Result<OutboxStats> {
        let row = sqlx::query(
            "SELECT COALESCE(SUM(CASE WHEN status = 'pending' THEN 1 ELSE 0 END), 0) AS pending,
                    COALESCE(SUM(CASE WHEN status = 'dead' THEN 1 ELSE 0 END), 0) AS dead,
                    COALESCE(SUM(CASE WHEN status = 'undeliverable' THEN 1 ELSE 0 END), 0) AS undeliverable,
                    MIN(CASE WHEN status = 'pending' THEN created_at END) AS oldest
             FROM outbox WHERE status <> 'delivered'",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(OutboxStats {
            pending: row.try_get("pending")?,
            dead: row.try_get("dead")?,
            undeliverable: row.try_get("undeliverable")?,
            oldest_pending_at: row.try_get("oldest")?,
        })
    }

    /// Puts a dead-lettered or undeliverable message back in the queue, due
    /// now; false when no such message has that id.
    pub async fn outbox_requeue(&self, id: i64, now: Timestamp) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = $2, claim_token = NULL
             WHERE id = $1 AND status IN ('dead', 'undeliverable')",
        )
        .bind(id)
        .bind(now.0)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    // ---- wake-ups ---------------------------------------------------------

    /// Forwards other processes' run changes (PostgreSQL notifications on
    /// [`CHANNEL`] and [`CHANGES`]) to [`Store::changes`] until `shutdown` fires; on SQLite,
    /// where one process owns the database, there are none. After a
    /// reconnection the missed changes are unknown: a nil run id says "look
    /// again at everything".
    pub async fn follow_changes(&self, shutdown: CancellationToken) {
        self.relay_notifications(&[CHANNEL, CHANGES], shutdown, |payload| match payload.map(str::parse::<RunId>) {
            Some(Ok(run)) => self.changed(run),
            Some(Err(_)) => tracing::warn!(payload, "a change notification without a run id"),
            None => self.changed(RunId::nil()),
        })
        .await
    }

    /// Forwards PostgreSQL notifications to this process's idle workers until
    /// `shutdown` fires. Reconnects after the database comes back; a missed
    /// notification costs at most one poll interval.
    pub(crate) async fn listen(&self, shutdown: CancellationToken) {
        self.relay_notifications(&[CHANNEL], shutdown, |_| self.local_wake.notify_waiters()).await
    }

    /// Hands each PostgreSQL notification on `channels` to `deliver` (its
    /// payload) until `shutdown` fires, reconnecting after the database comes
    /// back; `deliver(None)` after every (re)connection, when notifications
    /// may have been missed. Nothing on SQLite.
    async fn relay_notifications(
        &self,
        channels: &[&str],
        shutdown: CancellationToken,
        deliver: impl Fn(Option<&str>),
    ) {
        if self.dialect != Dialect::Postgres {
            return shutdown.cancelled().await;
        }
        while !shutdown.is_cancelled() {
            let mut listener = match sqlx::postgres::PgListener::connect(&self.url).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, ?channels, "cannot connect the notification listener; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            if let Err(e) = listener.listen_all(channels.iter().copied()).await {
                tracing::warn!(error = %e, ?channels, "LISTEN failed; retrying");
                continue;
            }
            // Whatever was announced while we were not listening.
            deliver(None);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    n = listener.try_recv() => match n {
                        Ok(Some(n)) => deliver(Some(n.payload())),
                        Ok(None) => {
                            tracing::info!(?channels, "notification listener reconnecting");
                            deliver(None);
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, ?channels, "notification listener failed; reconnecting");
                            tokio::select! {
                                _ = shutdown.cancelled() => return,
                                _ = tokio::time::sleep(Duration::from_secs(1)) => break,
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `sqlite://path` → `sqlite://path?mode=rwc`, so the file is created when missing.
fn sqlite_url(url: &str) -> String {
    if url.contains(":memory:") || url.contains("mode=") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    }
}

/// The URL's scheme only: enough to say what was wrong without echoing a password.
fn redact(url: &str) -> String {
    match url.split_once(':') {
        Some((scheme, _)) => format!("{scheme}:…"),
        None => "(no scheme)".to_owned(),
    }
}
