//! Built-in graphs for benchmarks and crash tests (`bench.*`), and
//! `sentinel bench engine`.
//!
//! * `bench.chain`: one node that loops `steps` times, doing nothing else:
//!   what the engine costs per checkpointed transition.
//! * `bench.effects`: like the chain, but each step performs a side effect:
//!   appending `run:step` to a witness file, with optional pauses inside and
//!   after the action so a test can SIGKILL a worker mid-step. A resumed action
//!   first checks the witness file, as a real executor checks the world.
//! * `bench.wait`: parks until a `go` signal arrives.

pub mod api;
pub mod detect;
pub mod incident;
pub mod ingest;
pub mod memory;

use std::collections::HashMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use engine::{
    Engine, Graph, NodeContext, NodeError, Registry, RunId, RunStatus, Store, StoreConfig, SystemClock, Transition,
    WorkerConfig,
};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Chain {
    pub i: u32,
    pub steps: u32,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Effects {
    pub i: u32,
    pub steps: u32,
    pub witness: PathBuf,
    /// Pause after writing the witness line, before the outcome is recorded.
    pub pause_in_act_ms: u64,
    /// Pause after the outcome is recorded, before the checkpoint.
    pub pause_after_ms: u64,
}

/// Records when each step of each run started, for latency figures.
#[derive(Default)]
pub struct Probe {
    starts: Mutex<HashMap<RunId, Vec<Instant>>>,
}

impl Probe {
    fn record(&self, run: RunId) {
        let now = Instant::now();
        self.starts.lock().expect("probe lock").entry(run).or_default().push(now);
    }

    fn first_start(&self, run: RunId) -> Option<Instant> {
        self.starts.lock().expect("probe lock").get(&run).and_then(|v| v.first().copied())
    }

    /// Time between consecutive step starts of the same run: commit of one
    /// checkpoint plus dispatch of the next node.
    fn step_gaps(&self) -> Vec<Duration> {
        let starts = self.starts.lock().expect("probe lock");
        starts.values().flat_map(|v| v.windows(2).map(|w| w[1] - w[0])).collect()
    }
}

pub fn chain_graph(probe: Option<Arc<Probe>>) -> Graph<Chain> {
    Graph::builder("bench.chain", 1)
        .node("step", move |mut s: Chain, ctx: NodeContext| {
            let probe = probe.clone();
            async move {
                if let Some(p) = &probe {
                    p.record(ctx.run_id());
                }
                s.i += 1;
                let route = if s.i >= s.steps { "done" } else { "next" };
                Ok((s, Transition::route(route)))
            }
        })
        .node("finish", |s: Chain, _: NodeContext| async move { Ok((s, Transition::Complete)) })
        .edge("step", "next", "step")
        .edge("step", "done", "finish")
        .start("step")
        .build()
        .expect("bench.chain is a valid graph")
}

pub fn effects_graph() -> Graph<Effects> {
    Graph::builder("bench.effects", 1)
        .node("step", |mut s: Effects, ctx: NodeContext| async move {
            let line = format!("{}:{}", ctx.run_id(), s.i);
            let witness = s.witness.clone();
            let pause_in_act = Duration::from_millis(s.pause_in_act_ms);
            ctx.effect(&format!("write-{}", s.i), |attempt| async move {
                if attempt.resumed && witness_has(&witness, &line).map_err(NodeError::retryable)? {
                    return Ok(());
                }
                append_line(&witness, &line).map_err(NodeError::retryable)?;
                tokio::time::sleep(pause_in_act).await;
                Ok(())
            })
            .await?;
            tokio::time::sleep(Duration::from_millis(s.pause_after_ms)).await;
            s.i += 1;
            let route = if s.i >= s.steps { "done" } else { "next" };
            Ok((s, Transition::route(route)))
        })
        .node("finish", |s: Effects, _: NodeContext| async move { Ok((s, Transition::Complete)) })
        .edge("step", "next", "step")
        .edge("step", "done", "finish")
        .start("step")
        .build()
        .expect("bench.effects is a valid graph")
}

pub fn wait_graph() -> Graph<Chain> {
    Graph::builder("bench.wait", 1)
        .node("park", |s: Chain, ctx: NodeContext| async move {
            if ctx.take_signal(&["go"]).is_some() {
                return Ok((s, Transition::Complete));
            }
            Ok((s, Transition::wait_for(["go"], None)))
        })
        .start("park")
        .build()
        .expect("bench.wait is a valid graph")
}

fn append_line(path: &std::path::Path, line: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    f.write_all(format!("{line}\n").as_bytes())?;
    f.sync_data()
}

fn witness_has(path: &std::path::Path, line: &str) -> std::io::Result<bool> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text.lines().any(|l| l == line)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Every built-in benchmark graph.
pub fn registry(probe: Option<Arc<Probe>>) -> Registry {
    let mut r = Registry::new();
    register(&mut r, probe);
    r
}

/// Adds the benchmark graphs to `registry`: for `sentinel bench` and the
/// tests only; `serve` and `worker` never run them.
pub fn register(registry: &mut Registry, probe: Option<Arc<Probe>>) {
    registry.register(chain_graph(probe)).register(effects_graph()).register(wait_graph());
}

// ---- sentinel bench engine ---------------------------------------------------

#[derive(Clone, Debug)]
pub struct EngineBench {
    pub url: String,
    pub runs: u32,
    pub steps: u32,
    pub concurrency: Vec<usize>,
    pub start_samples: u32,
    pub waiting_runs: u32,
}

#[derive(Clone, Debug, Serialize)]
pub struct Throughput {
    pub workers: usize,
    pub transitions: u64,
    pub seconds: f64,
    pub transitions_per_sec: f64,
    pub step_p50_ms: f64,
    pub step_p99_ms: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct EngineFigures {
    pub backend: String,
    pub throughput: Vec<Throughput>,
    pub start_p50_ms: f64,
    pub start_p99_ms: f64,
    pub waiting_runs: u32,
    pub rss_before_mb: f64,
    pub rss_with_waiting_mb: f64,
}

async fn connect(url: &str) -> anyhow::Result<Store> {
    let mut config = StoreConfig::new(url);
    config.max_connections = 24;
    Store::connect(&config)
        .await
        .with_context(|| format!("connecting to {}", url.split('@').next_back().unwrap_or(url)))
}

async fn purge(store: &Store) -> anyhow::Result<()> {
    for g in ["bench.chain", "bench.effects", "bench.wait"] {
        store.purge_graph(g).await?;
    }
    Ok(())
}

fn bench_worker(id: &str, concurrency: usize) -> WorkerConfig {
    WorkerConfig { id: id.to_owned(), concurrency, retention: None, ..WorkerConfig::default() }
}

/// Waits until all `count` runs of `graph` are in `status`; answers the
/// history rows they wrote. Fails if the graph holds any run this bench did
/// not start (another bench on the same database would skew the figures).
async fn wait_for_graph(
    store: &Store,
    graph: &str,
    status: RunStatus,
    count: i64,
    within: Duration,
) -> anyhow::Result<i64> {
    let deadline = Instant::now() + within;
    loop {
        let (runs, done, steps) = store.graph_progress(graph, status).await?;
        anyhow::ensure!(
            runs == count,
            "the database holds {runs} runs of {graph}, this bench started {count}: is another bench running on it?"
        );
        if done == count {
            return Ok(steps);
        }
        anyhow::ensure!(Instant::now() < deadline, "only {done} of {count} runs became {status} within {within:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub async fn run_engine_bench(b: &EngineBench) -> anyhow::Result<EngineFigures> {
    let backend = if b.url.starts_with("sqlite") { "sqlite" } else { "postgres" };
    let mut throughput = Vec::new();
    for &workers in &b.concurrency {
        let store = connect(&b.url).await?;
        purge(&store).await?;
        let probe = Arc::new(Probe::default());
        let engine = Engine::new(store.clone(), registry(Some(probe.clone())), Arc::new(SystemClock));
        for _ in 0..b.runs {
            engine.start("bench.chain", &Chain { i: 0, steps: b.steps }).await?;
        }
        let shutdown = CancellationToken::new();
        let t0 = Instant::now();
        let worker = tokio::spawn({
            let (engine, shutdown) = (engine.clone(), shutdown.clone());
            async move { engine.work(bench_worker("bench", workers), shutdown).await }
        });
        let steps =
            wait_for_graph(&store, "bench.chain", RunStatus::Completed, b.runs as i64, Duration::from_secs(600))
                .await?;
        let seconds = t0.elapsed().as_secs_f64();
        shutdown.cancel();
        worker.await?;
        // Counted, not computed: the history rows the runs this bench started wrote.
        let transitions = steps as u64;
        let mut gaps = probe.step_gaps();
        gaps.sort();
        throughput.push(Throughput {
            workers,
            transitions,
            seconds,
            transitions_per_sec: transitions as f64 / seconds,
            step_p50_ms: percentile_ms(&gaps, 0.50),
            step_p99_ms: percentile_ms(&gaps, 0.99),
        });
        purge(&store).await?;
        store.close().await;
    }

    // Start latency: an idle worker in its own store handle, so on PostgreSQL
    // only NOTIFY can wake it; runs are created through another handle.
    let creator = connect(&b.url).await?;
    // SQLite is one process: creator and worker share the store and its in-process wake-up.
    let worker_store = if backend == "sqlite" { creator.clone() } else { connect(&b.url).await? };
    let probe = Arc::new(Probe::default());
    let creator_engine = Engine::new(creator.clone(), registry(None), Arc::new(SystemClock));
    let worker_engine = Engine::new(worker_store.clone(), registry(Some(probe.clone())), Arc::new(SystemClock));
    let shutdown = CancellationToken::new();
    let mut config = bench_worker("bench-idle", 1);
    config.poll_interval = Duration::from_secs(5);
    let worker = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { worker_engine.work(config, shutdown).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut starts = Vec::new();
    for _ in 0..b.start_samples {
        let t = Instant::now();
        let id = creator_engine.start("bench.chain", &Chain { i: 0, steps: 1 }).await?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let first = loop {
            if let Some(s) = probe.first_start(id) {
                break s;
            }
            anyhow::ensure!(Instant::now() < deadline, "run {id} did not start within 10 s");
            tokio::time::sleep(Duration::from_micros(200)).await;
        };
        starts.push(first - t);
        // Let the run finish so the worker is idle again.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.cancel();
    worker.await?;
    starts.sort();
    purge(&creator).await?;

    // Memory with many waiting runs: they live in the database, not the worker.
    let rss_before_mb = rss_mb();
    let engine = Engine::new(creator.clone(), registry(None), Arc::new(SystemClock));
    for _ in 0..b.waiting_runs {
        engine.start("bench.wait", &Chain::default()).await?;
    }
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn({
        let (engine, shutdown) = (engine.clone(), shutdown.clone());
        async move { engine.work(bench_worker("bench-wait", 4), shutdown).await }
    });
    wait_for_graph(&creator, "bench.wait", RunStatus::Waiting, b.waiting_runs as i64, Duration::from_secs(600)).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_with_waiting_mb = rss_mb();
    shutdown.cancel();
    worker.await?;
    purge(&creator).await?;
    creator.close().await;
    worker_store.close().await;

    Ok(EngineFigures {
        backend: backend.to_owned(),
        throughput,
        start_p50_ms: percentile_ms(&starts, 0.50),
        start_p99_ms: percentile_ms(&starts, 0.99),
        waiting_runs: b.waiting_runs,
        rss_before_mb,
        rss_with_waiting_mb,
    })
}

fn percentile_ms(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// This process's resident set size, from /proc (Linux); NaN elsewhere.
pub fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}
