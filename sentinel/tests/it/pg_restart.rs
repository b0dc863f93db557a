//! The database goes away under a running engine and comes back: no run is lost.
//!
//! The test owns a throwaway PostgreSQL cluster (initdb in a temp dir, its
//! own port) so that stopping it cannot disturb other tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use engine::{Engine, RunStatus, Store, StoreConfig, SystemClock, WorkerConfig};
use lab::bench::Chain;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::support::{assert_history_contiguous, eventually};

struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
}

fn pg_bin() -> PathBuf {
    let out = Command::new("pg_config").arg("--bindir").output();
    if let Ok(out) = out {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return dir;
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path().join("bin")).filter(|p| p.join("initdb").exists()).collect())
        .unwrap_or_default();
    found.sort();
    found.pop().expect("PostgreSQL server binaries (initdb, pg_ctl) not found: run scripts/ensure-postgres.sh")
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Runs a PostgreSQL server binary, as the `postgres` user when we are root
/// (initdb and postgres refuse to run as root).
fn pg(bin: &Path, tool: &str, args: &[&str]) {
    let exe = bin.join(tool);
    let status = if is_root() {
        Command::new("runuser").args(["-u", "postgres", "--"]).arg(&exe).args(args).stdout(Stdio::null()).status()
    } else {
        Command::new(&exe).args(args).stdout(Stdio::null()).status()
    }
    .unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()));
    assert!(status.success(), "{tool} {args:?} failed: {status}");
}

impl Cluster {
    fn create() -> Cluster {
        let bin = pg_bin();
        let dir = std::env::temp_dir().join(format!("sentinel-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        if is_root() {
            let ok = Command::new("chown").args(["-R", "postgres:postgres"]).arg(&dir).status().unwrap();
            assert!(ok.success(), "chown of the test cluster dir failed");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let data = dir.join("data");
        pg(&bin, "initdb", &["-D", data.to_str().unwrap(), "-A", "trust", "-U", "postgres", "--no-sync"]);
        let cluster = Cluster { bin, dir, port };
        cluster.start();
        cluster
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn start(&self) {
        let data = self.dir.join("data");
        let opts = format!("-p {} -k {} -c listen_addresses=127.0.0.1", self.port, self.dir.display());
        let log = self.dir.join("log");
        pg(
            &self.bin,
            "pg_ctl",
            &["-D", data.to_str().unwrap(), "-o", &opts, "-l", log.to_str().unwrap(), "-w", "start"],
        );
    }

    fn stop(&self) {
        let data = self.dir.join("data");
        pg(&self.bin, "pg_ctl", &["-D", data.to_str().unwrap(), "-m", "fast", "-w", "stop"]);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let args = ["-D", data.to_str().unwrap_or_default(), "-m", "immediate", "stop"];
        if is_root() {
            let _ =
                Command::new("runuser").args(["-u", "postgres", "--"]).arg(self.bin.join("pg_ctl")).args(args).status();
        } else {
            let _ = Command::new(self.bin.join("pg_ctl")).args(args).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_postgresql_under_a_running_engine_loses_no_run() {
    let cluster = Cluster::create();
    let mut config = StoreConfig::new(cluster.url());
    config.acquire_timeout = Duration::from_secs(2);
    let store = Store::connect(&config).await.expect("connect to the test cluster");
    let engine = Engine::new(store, lab::bench::registry(None), Arc::new(SystemClock));

    let mut waiting = Vec::new();
    for _ in 0..20 {
        waiting.push(engine.start("bench.wait", &Chain::default()).await.unwrap());
    }
    let mut chains = Vec::new();
    for _ in 0..10 {
        chains.push(engine.start("bench.chain", &Chain { i: 0, steps: 200 }).await.unwrap());
    }
    let shutdown = CancellationToken::new();
    let worker_config = WorkerConfig {
        id: "survivor".into(),
        concurrency: 4,
        lease: Duration::from_secs(3),
        poll_interval: Duration::from_millis(50),
        ..WorkerConfig::default()
    };
    let worker = tokio::spawn({
        let (engine, shutdown) = (engine.clone(), shutdown.clone());
        async move { engine.work(worker_config, shutdown).await }
    });
    eventually("the waiting runs to park", Duration::from_secs(30), || {
        let engine = engine.clone();
        let waiting = waiting.clone();
        async move {
            for id in waiting {
                if !engine.run(id).await.is_ok_and(|r| r.status == RunStatus::Waiting) {
                    return false;
                }
            }
            true
        }
    })
    .await;

    // The database goes away while chains are mid-flight.
    cluster.stop();
    let err = engine.signal(waiting[0], "go-0", "go", json!({})).await.unwrap_err();
    assert!(err.is_transient(), "a database that is down is a transient error, got: {err}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.start();

    // Deliver every signal; the first calls may still meet broken connections.
    for (i, id) in waiting.iter().enumerate() {
        let signal_id = format!("go-{i}");
        eventually("the signal to be delivered", Duration::from_secs(30), || {
            let engine = engine.clone();
            let signal_id = signal_id.clone();
            let id = *id;
            async move { engine.signal(id, &signal_id, "go", json!({})).await.is_ok() }
        })
        .await;
    }
    let all: Vec<_> = waiting.iter().chain(chains.iter()).copied().collect();
    eventually("every run to finish after the restart", Duration::from_secs(90), || {
        let engine = engine.clone();
        let all = all.clone();
        async move {
            for id in all {
                if !engine.run(id).await.is_ok_and(|r| r.status.is_finished()) {
                    return false;
                }
            }
            true
        }
    })
    .await;
    shutdown.cancel();
    worker.await.unwrap();

    for id in &all {
        let run = engine.run(*id).await.unwrap();
        assert_eq!(run.status, RunStatus::Completed, "run {id}: {:?}", run.error);
        let history = assert_history_contiguous(&engine, *id).await;
        if chains.contains(id) {
            assert_eq!(history.len(), 201, "every step of the chain checkpointed once");
            assert_eq!(run.state["i"], json!(200));
        }
    }
    engine.store().close().await;
}
