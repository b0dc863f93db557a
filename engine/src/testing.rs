//! Test support, behind the `testing` feature: fresh databases and background
//! workers. PostgreSQL comes from `SENTINEL_TEST_DATABASE_URL` (default: the
//! local server) with a fresh database per test; SQLite is a fresh file per
//! test. Panics are the point here: a missing database fails the test with a
//! message that says how to start one.

use std::sync::Arc;
use std::time::Duration;

use crate::{Clock, Engine, Registry, Run, RunId, Store, StoreConfig, SystemClock, WorkerConfig};
use sqlx::{Connection, Executor, PgConnection};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Copy, Debug)]
pub enum Backend {
    Postgres,
    Sqlite,
}

pub fn admin_url() -> String {
    std::env::var("SENTINEL_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// Creates a fresh database on the server behind `admin` and returns its URL.
/// Left behind on purpose: scripts/test.sh drops leftovers before each run.
pub async fn create_database(admin: &str) -> String {
    let mut conn = PgConnection::connect(admin).await.unwrap_or_else(|e| {
        panic!("PostgreSQL is not reachable at {admin} ({e}); start it with scripts/ensure-postgres.sh")
    });
    let name = format!("sentinel_t_{}", uuid::Uuid::new_v4().simple());
    conn.execute(format!("CREATE DATABASE {name}").as_str()).await.expect("create test database");
    let (base, _) = admin.rsplit_once('/').expect("database url has a path");
    format!("{base}/{name}")
}

/// A fresh, migrated database; dropped (PostgreSQL) or deleted (SQLite) with the value.
pub struct TestDb {
    pub url: String,
    pg_name: Option<String>,
    _dir: Option<tempdir::Dir>,
}

mod tempdir {
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        match backend {
            Backend::Postgres => {
                let url = create_database(&admin_url()).await;
                let name = url.rsplit_once('/').map(|(_, n)| n.to_owned());
                TestDb { url, pg_name: name, _dir: None }
            }
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join(format!("sentinel-t-{}", uuid::Uuid::new_v4().simple()));
                std::fs::create_dir_all(&dir).expect("temp dir");
                let url = format!("sqlite://{}", dir.join("engine.db").display());
                TestDb { url, pg_name: None, _dir: Some(tempdir::Dir(dir)) }
            }
        }
    }

    pub async fn store(&self) -> Store {
        Store::connect(&StoreConfig::new(&self.url)).await.expect("connect and migrate")
    }

    pub async fn engine(&self, registry: Registry) -> Engine {
        Engine::new(self.store().await, registry, Arc::new(SystemClock))
    }

    pub async fn engine_with_clock(&self, registry: Registry, clock: Arc<dyn Clock>) -> Engine {
        Engine::new(self.store().await, registry, clock)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(name) = self.pg_name.take() {
            // Best effort, on a thread of its own: Drop cannot await. Leftovers
            // are removed by scripts/test.sh before each run.
            let admin = admin_url();
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
                rt.block_on(async {
                    let mut conn = PgConnection::connect(&admin).await.ok()?;
                    conn.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str()).await.ok()
                })
            })
            .join();
        }
    }
}

/// A worker running in the background until [`BackgroundWorker::stop`].
pub struct BackgroundWorker {
    shutdown: CancellationToken,
    handle: JoinHandle<()>,
}

pub fn fast_worker(id: &str) -> WorkerConfig {
    WorkerConfig {
        id: id.to_owned(),
        concurrency: 2,
        lease: Duration::from_secs(5),
        poll_interval: Duration::from_millis(20),
        ..WorkerConfig::default()
    }
}

impl BackgroundWorker {
    pub fn start(engine: &Engine, config: WorkerConfig) -> BackgroundWorker {
        let shutdown = CancellationToken::new();
        let engine = engine.clone();
        let token = shutdown.clone();
        let handle = tokio::spawn(async move { engine.work(config, token).await });
        BackgroundWorker { shutdown, handle }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.handle)
            .await
            .expect("worker stops within 10 s")
            .expect("worker task did not panic");
    }
}

/// Polls until `done(run)` holds, or panics after `within`.
pub async fn wait_until(engine: &Engine, run: RunId, within: Duration, done: impl Fn(&Run) -> bool) -> Run {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let r = engine.run(run).await.expect("run exists");
        if done(&r) {
            return r;
        }
        if tokio::time::Instant::now() > deadline {
            // What the run did last, so a failure on a loaded machine can be read.
            let tail: Vec<String> = match engine.detail(run).await {
                Ok(d) => {
                    d.history.iter().rev().take(8).rev().map(|c| format!("{} → {:?}", c.node, c.outcome)).collect()
                }
                Err(e) => vec![format!("(no history: {e})")],
            };
            panic!(
                "run {run} did not reach the expected state within {within:?}; it is {} at `{}` (error: {:?}); \
                 its last steps: {tail:#?}",
                r.status, r.node, r.error
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub async fn finished(engine: &Engine, run: RunId) -> Run {
    wait_until(engine, run, Duration::from_secs(20), |r| r.status.is_finished()).await
}

/// Runs each named async test body once per backend.
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::testing::Backend::Postgres).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::testing::Backend::Sqlite).await
                }
            }
        )*
    };
}
