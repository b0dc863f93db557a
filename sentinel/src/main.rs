//! `sentinel`: the one binary. Reads the configuration (`sentinel.yaml` and
//! the environment) once, installs tracing, and dispatches to the verbs below.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use api::access::Access;
use api::security::Security;
use clap::{Args, Parser, Subcommand};
use engine::{Engine, Store, StoreConfig, SystemClock, WorkerConfig};
use lab::bench::{self, EngineBench};
use sentinel::cli;
use sentinel::config::{self, Config};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "sentinel", version, about = "Durable incident-response workflows")]
struct Cli {
    /// The configuration file (`sentinel.example.yaml` documents it); without
    /// one, the embedded defaults.
    #[arg(long, global = true, env = "SENTINEL_CONFIG")]
    config: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the incident workflow end to end on embedded defaults: simulated
    /// fleet, detector, engine on SQLite, REST API, mock executors.
    Demo(DemoArgs),
    /// Serve the REST API (and run workers in the same process unless told not to).
    Serve(ServeArgs),
    /// Apply the database migrations (DATABASE_URL, or the embedded SQLite file) and exit.
    Migrate,
    /// Run workers until SIGINT/SIGTERM.
    Worker(WorkerArgs),
    /// Score a CSV time series (`timestamp,value`) with the streaming
    /// detectors; writes `timestamp,value,anomaly_score` (score in [0, 1]).
    Detect(DetectArgs),
    /// Score the detectors on a labelled corpus in the Numenta Anomaly
    /// Benchmark's layout (`data/**.csv`, `labels/combined_windows.json`),
    /// by its scoring method; also precision and recall of the anomalies the
    /// persistence rule raises. With `--memory DIR`: semantic memory's dedup
    /// precision and recall and its retrieval recall@5 on a labelled set.
    Eval(EvalArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Inspect and decide on runs through the REST API.
    Runs {
        #[command(flatten)]
        remote: cli::Remote,
        #[command(subcommand)]
        command: cli::RunsCommand,
    },
    /// Create, revoke and list API keys (admin).
    Keys {
        #[command(flatten)]
        remote: cli::Remote,
        #[command(subcommand)]
        command: cli::KeysCommand,
    },
    /// The kill switch: when on, no action is auto-approved (admin).
    Killswitch {
        #[command(flatten)]
        remote: cli::Remote,
        #[command(subcommand)]
        command: cli::KillSwitchCommand,
    },
    /// The configuration file.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Runbook files.
    #[command(subcommand)]
    Runbooks(RunbooksCommand),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a configuration (FILE, or --config) with the environment as
    /// `serve` would read it, without starting anything; exit 1 on an error.
    Check { file: Option<std::path::PathBuf> },
}

#[derive(Subcommand)]
enum RunbooksCommand {
    /// Check every runbook file of each DIR; exit 1 on the first error.
    Lint {
        #[arg(required = true)]
        dirs: Vec<std::path::PathBuf>,
    },
}

#[derive(Args)]
struct ServeArgs {
    #[arg(long, default_value = "127.0.0.1:8080", env = "SENTINEL_LISTEN")]
    listen: String,
    /// Serve the API only; runs are executed by `sentinel worker` processes.
    #[arg(long)]
    no_worker: bool,
    /// Do not consume the Kafka topic here: accept and publish events only,
    /// and leave storing and detection to the processes that consume it
    /// (needs Kafka).
    #[arg(long)]
    no_consumer: bool,
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
}

#[derive(Args)]
struct DemoArgs {
    /// Keep injecting faults for this many seconds (one round of seven takes under a minute).
    #[arg(long, default_value_t = 0)]
    seconds: u64,
    /// Seed of the simulation's noise.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Where the API and the operator console listen (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// After the scenarios, keep the API and the console up until Ctrl-C.
    #[arg(long)]
    keep: bool,
}

#[derive(Args)]
struct DetectArgs {
    /// The series: a header naming `timestamp` and `value`.
    #[arg(long)]
    input: std::path::PathBuf,
    /// Where the scores go (standard output when absent).
    #[arg(long)]
    output: Option<std::path::PathBuf>,
    /// Detector parameters as JSON (any subset of `window`, `warmup`,
    /// `z_threshold`, `mad_threshold`, `ewma_alpha`, `ewma_threshold`,
    /// `seasonal_threshold`, `seasonal_min_periods`, `min_relative_scale`,
    /// `persist_n`, `persist_m`).
    #[arg(long)]
    params: Option<String>,
}

#[derive(Args)]
struct DetectBenchArgs {
    /// Series scored side by side.
    #[arg(long, default_value_t = 100)]
    series: usize,
    /// Points per series, one a minute (20,160 = two weeks).
    #[arg(long, default_value_t = 20_160)]
    points: usize,
    /// Detector parameters as JSON, as for `detect`.
    #[arg(long)]
    params: Option<String>,
}

#[derive(Args)]
struct MemoryBenchArgs {
    /// The embedding model's directory.
    #[arg(long, env = "SENTINEL_MODEL_DIR")]
    model_dir: std::path::PathBuf,
    /// Texts embedded (timed one by one).
    #[arg(long, default_value_t = 1_000)]
    texts: usize,
    /// Incidents stored in the index before searching.
    #[arg(long, default_value_t = 100_000)]
    points: usize,
    /// Searches timed.
    #[arg(long, default_value_t = 2_000)]
    searches: usize,
    /// Run the model on candle even where the CPU could run the AVX-512 BF16
    /// encoder (to compare the two).
    #[arg(long)]
    candle: bool,
    /// Print the figures as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["corpus", "memory"])))]
struct EvalArgs {
    /// The detection corpus directory.
    #[arg(long)]
    corpus: Option<std::path::PathBuf>,
    /// The semantic memory set's directory (`lab/memory`: pairs.json, retrieval.json).
    #[arg(long)]
    memory: Option<std::path::PathBuf>,
    /// The embedding model's directory (for `--memory`).
    #[arg(long, env = "SENTINEL_MODEL_DIR")]
    model_dir: Option<std::path::PathBuf>,
    /// Print every pair decided wrongly (for `--memory`).
    #[arg(long)]
    mistakes: bool,
    /// Detector parameters as JSON, as for `detect`.
    #[arg(long)]
    params: Option<String>,
    /// Print the whole report as JSON (every file's tally under each profile).
    #[arg(long)]
    json: bool,
    /// List each file's tally under the standard profile.
    #[arg(long)]
    per_file: bool,
}

#[derive(Args)]
struct WorkerArgs {
    /// Runs executed at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Lease length in milliseconds; heartbeats run every third of it.
    #[arg(long, default_value_t = 30_000)]
    lease_ms: u64,
    /// Poll interval in milliseconds (the fallback when no notification arrives).
    #[arg(long, default_value_t = 500)]
    poll_ms: u64,
    /// Worker id written on leases and history (default: worker-PID-RANDOM).
    #[arg(long)]
    id: Option<String>,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Checkpointed transitions/s and step latency at several worker counts,
    /// run start latency, and memory with many waiting runs; on PostgreSQL
    /// (DATABASE_URL) and on SQLite.
    Engine(EngineBenchArgs),
    /// Requests/s and latency of the REST API (key check, audit, decision) and
    /// of Slack interactions (signature, approver check, decision), over HTTP
    /// on loopback; on PostgreSQL (DATABASE_URL) and SQLite.
    Api(ApiBenchArgs),
    /// Events/s end to end (HTTP → Kafka → ClickHouse) with 1, 100 and 1,000
    /// events per request, and the delay from ingest to anomaly. Uses the
    /// broker at KAFKA_BROKERS and the server at CLICKHOUSE_URL (local
    /// defaults); starts neither.
    Ingest(IngestBenchArgs),
    /// The incident graph end to end on the mock backend: detection → resolved
    /// latency (p50/p99) when the policy auto-approves and the first
    /// verification reading recovers. PostgreSQL runs in a scratch database on
    /// the DATABASE_URL server; SQLite in a temporary file.
    Incident(IncidentBenchArgs),
    /// The streaming detectors on one core: points/s and bytes of state per
    /// series (seasonal baselines full after two weeks of points).
    Detect(DetectBenchArgs),
    /// Semantic memory: embedding p50/p99 per incident text, nearest-incident
    /// search p50/p99 in the embedded Qdrant index holding `--points`
    /// incidents, and the index's resident memory.
    Memory(MemoryBenchArgs),
    /// A worker that runs the benchmark graphs (`bench.*`) besides the
    /// incident workflow: for the crash and restart tests, never production.
    Worker(WorkerArgs),
}

#[derive(Args)]
struct IncidentBenchArgs {
    /// Incidents opened in each run.
    #[arg(long, default_value_t = 500)]
    incidents: usize,
    /// Detections per second.
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    /// Worker slots.
    #[arg(long, default_value_t = 16)]
    workers: usize,
    /// Only these backends (postgres needs DATABASE_URL).
    #[arg(long, value_delimiter = ',', default_values_t = ["postgres".to_owned(), "sqlite".to_owned()])]
    backends: Vec<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct IngestBenchArgs {
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 100, 1000])]
    batch_sizes: Vec<usize>,
    /// Events measured with one event per request.
    #[arg(long, default_value_t = 50_000)]
    single_events: usize,
    /// Events measured with each batch size above 1.
    #[arg(long, default_value_t = 500_000)]
    batch_events: usize,
    /// Requests in flight (batches: at most 16).
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Services given a fault for the ingest-to-anomaly delay.
    #[arg(long, default_value_t = 200)]
    faults: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ApiBenchArgs {
    /// Requests per call measured.
    #[arg(long, default_value_t = 2000)]
    requests: u32,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    #[arg(long, value_delimiter = ',', default_values_t = ["postgres".to_owned(), "sqlite".to_owned()])]
    backends: Vec<String>,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct EngineBenchArgs {
    #[arg(long, default_value_t = 500)]
    runs: u32,
    /// Node executions per run (the run then takes one more step to finish).
    #[arg(long, default_value_t = 20)]
    steps: u32,
    /// Worker slots to measure with, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 4, 16])]
    workers: Vec<usize>,
    #[arg(long, default_value_t = 200)]
    start_samples: u32,
    #[arg(long, default_value_t = 10_000)]
    waiting: u32,
    /// Only these backends (postgres needs DATABASE_URL).
    #[arg(long, value_delimiter = ',', default_values_t = ["postgres".to_owned(), "sqlite".to_owned()])]
    backends: Vec<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn main() -> std::process::ExitCode {
    // Where the embedding model runs on candle (a CPU without AVX-512 BF16,
    // or `bench memory --candle`): candle's pool for element-wise work spins
    // while it waits for its threads, and here it competes with the runtime
    // and the matrix multiplications' own threads. With it off, one embedding
    // takes 15.4–17.0 ms p50 and 27–30 ms p99 instead of 16.0–18.9 and 46–53
    // (`sentinel bench memory`, 4 runs each). Set before any thread
    // exists, so nothing reads the environment while it changes; an operator's
    // own setting wins.
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    let cli = Cli::parse();
    // Before the runtime: the trace exporter runs on threads of its own and
    // must be flushed after the runtime has stopped.
    let result = sentinel::logging::init().and_then(|logging| {
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        let result = runtime.block_on(run(cli));
        drop(runtime);
        drop(logging);
        result
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // The error and its causes, one line, without a backtrace: a bad
        // configuration reads `sentinel.yaml:14:9: …`.
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The configuration from `--config`/`SENTINEL_CONFIG` and the environment.
fn load_config(path: Option<&std::path::Path>) -> anyhow::Result<Config> {
    let config = Config::load(path, &config::process_env)?;
    match &config.path {
        Some(p) => {
            tracing::info!(config = %p.display(), services = config.catalog.services().count(), "configuration read")
        }
        None => tracing::info!("no configuration file: embedded defaults"),
    }
    Ok(config)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let path = cli.config.as_deref();
    match cli.command {
        Command::Migrate => {
            open_database(&load_config(path)?.database_url).await?;
            eprintln!("migrations applied");
        }
        Command::Worker(args) => worker(args, &load_config(path)?, false).await?,
        Command::Demo(args) => demo(args).await?,
        Command::Detect(args) => detect(args)?,
        Command::Eval(args) => eval(args).await?,
        Command::Serve(args) => serve(args, load_config(path)?).await?,
        Command::Config(ConfigCommand::Check { file }) => {
            let file = file.as_deref().or(path).context("name a file: `sentinel config check FILE` or --config")?;
            let config = Config::load(Some(file), &config::process_env)?;
            println!("{}: ok\n{}", file.display(), config.summary());
        }
        Command::Runbooks(RunbooksCommand::Lint { dirs }) => {
            for dir in &dirs {
                let runbooks = nodes::runbook::load_dir(dir)?;
                println!(
                    "{}: {} runbooks ok ({})",
                    dir.display(),
                    runbooks.len(),
                    runbooks.iter().map(|r| r.id.as_str()).collect::<Vec<_>>().join(", ")
                );
            }
        }
        Command::Bench(BenchCommand::Engine(args)) => bench_engine(args).await?,
        Command::Bench(BenchCommand::Api(args)) => bench_api(args).await?,
        Command::Bench(BenchCommand::Ingest(args)) => bench_ingest(args).await?,
        Command::Bench(BenchCommand::Incident(args)) => bench_incident(args).await?,
        Command::Bench(BenchCommand::Detect(args)) => {
            let config = detector_params(args.params.as_deref())?;
            let f = lab::bench::detect::run(args.series, args.points, &config);
            println!(
                "{} series x {} points on one core: {:.0} points/s ({:.0} ns/point); {} bytes of state per series; {} anomalies raised",
                f.series, f.points_per_series, f.points_per_sec, f.ns_per_point, f.state_bytes_per_series, f.anomalies
            );
        }
        Command::Bench(BenchCommand::Memory(args)) => {
            let inference = if args.candle { memory::embed::Inference::Candle } else { memory::embed::Inference::Auto };
            let f = lab::bench::memory::run(&args.model_dir, inference, args.texts, args.points, args.searches).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&f)?);
            } else {
                println!(
                    "embed ({}): {} texts, p50 {:.2} ms, p99 {:.2} ms\nsearch: {} incidents (filled in {:.1} s, optimised in {:.1} s), {} searches, p50 {:.3} ms, p99 {:.3} ms\nresident memory: {:.0} MiB before the index, {:.0} MiB after ({:.0} MiB for it); {:.0} MiB on disk",
                    f.inference, f.texts, f.embed_p50_ms, f.embed_p99_ms, f.points, f.fill_secs, f.optimize_secs, f.searches,
                    f.search_p50_ms, f.search_p99_ms, f.rss_before_mib, f.rss_after_mib, f.rss_after_mib - f.rss_before_mib,
                    f.index_disk_mib
                );
            }
        }
        Command::Bench(BenchCommand::Worker(args)) => worker(args, &load_config(path)?, true).await?,
        Command::Runs { remote, command } => cli::Client::new(remote).runs(command).await?,
        Command::Keys { remote, command: cli::KeysCommand::Create { name, role, direct: true } } => {
            let (_, access) = open_database(&load_config(path)?.database_url).await?;
            let key = access.create_key(&name, role, "cli --direct").await.context("creating the key")?;
            cli::Client::new(remote).print_new_key(&key)?;
        }
        Command::Keys { remote, command } => cli::Client::new(remote).keys(command).await?,
        Command::Killswitch { remote, command } => cli::Client::new(remote).kill_switch(command).await?,
    }
    Ok(())
}

async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let rows = lab::demo::run(lab::demo::DemoConfig {
        data_dir: config::data_dir(&config::process_env),
        run_for: Duration::from_secs(args.seconds),
        seed: args.seed,
        model_dir: config::process_env("SENTINEL_MODEL_DIR").map(std::path::PathBuf::from),
        listen: args.listen,
        keep: args.keep,
    })
    .await?;
    if !args.keep {
        println!("\n{}", lab::demo::table(&rows));
    }
    Ok(())
}

fn detector_params(params: Option<&str>) -> anyhow::Result<telemetry::detect::DetectorConfig> {
    let config: telemetry::detect::DetectorConfig = match params {
        Some(json) => serde_json::from_str(json).context("--params")?,
        None => Default::default(),
    };
    config.validate().map_err(|e| anyhow::anyhow!("--params: {e}"))?;
    Ok(config)
}

async fn eval_memory(args: &EvalArgs, dir: &std::path::Path) -> anyhow::Result<()> {
    let model = args.model_dir.as_deref().context("--memory needs the model: --model-dir or SENTINEL_MODEL_DIR")?;
    let config = nodes::intake::JoinConfig::default();
    let r = lab::memory_eval::evaluate(dir, model, &config).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!(
        "dedup on {} pairs at same_service {:.2}, caller_symptom {:.2}: precision {:.3}, recall {:.3} ({} joined rightly, {} wrongly, {} missed)",
        r.pairs, config.same_service, config.caller_symptom, r.precision, r.recall, r.true_positives, r.false_positives, r.false_negatives
    );
    for k in &r.by_kind {
        println!("  {:<22} {:>3} pairs, {:>3} joined", k.kind, k.pairs, k.joined);
    }
    println!("  same-service threshold sweep (other decisions as measured):");
    for p in &r.sweep {
        println!("    {:.2}: precision {:.3}, recall {:.3}", p.same_service, p.precision, p.recall);
    }
    if args.mistakes {
        for m in &r.mistakes {
            println!("  ✗ {m}");
        }
    }
    println!(
        "retrieval over {} past incidents, {} queries: recall@5 {:.3} ({} found), first place {}",
        r.past_incidents, r.queries, r.recall_at_5, r.found_in_5, r.found_first
    );
    Ok(())
}

async fn eval(args: EvalArgs) -> anyhow::Result<()> {
    if let Some(dir) = &args.memory {
        return eval_memory(&args, dir).await;
    }
    let corpus = args.corpus.as_deref().context("--corpus or --memory")?;
    let config = detector_params(args.params.as_deref())?;
    let report = lab::eval::evaluate(corpus, &config)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "{} files, {} anomaly windows; detector {}",
        report.files,
        report.windows,
        serde_json::to_string(&config)?
    );
    if args.per_file {
        for (name, t) in &report.profiles[0].per_file {
            println!("  {name:<44} raw {:>7.3}  tp {} fp {} fn {}", t.raw, t.tp, t.fp, t.fn_);
        }
    }
    for p in &report.profiles {
        println!(
            "{:<14} score {:>6.1}  (threshold {:.3}; raw {:.2}, null {:.2}, perfect {:.2})",
            p.profile, p.score, p.threshold, p.raw, p.null, p.perfect
        );
    }
    let r = &report.raised;
    println!(
        "raised anomalies (persistence rule, fixed threshold): score {:.1} (standard); {} raised, {} inside a window: precision {:.2}; {} of {} windows found: recall {:.2}",
        r.score, r.anomalies, r.in_window, r.precision, r.windows_found, r.windows, r.recall
    );
    Ok(())
}

fn detect(args: DetectArgs) -> anyhow::Result<()> {
    let config = detector_params(args.params.as_deref())?;
    let input = std::fs::File::open(&args.input).with_context(|| format!("opening {}", args.input.display()))?;
    let input = std::io::BufReader::new(input);
    let summary = match &args.output {
        Some(path) => {
            let out = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
            telemetry::replay::replay(input, std::io::BufWriter::new(out), &config)
        }
        None => telemetry::replay::replay(input, std::io::stdout().lock(), &config),
    }
    .with_context(|| format!("{}", args.input.display()))?;
    eprintln!(
        "{} points, {} scored >= 0.5, {} anomalies raised by the persistence rule, {} out of order (scored 0)",
        summary.points, summary.above_half, summary.anomalies, summary.out_of_order
    );
    Ok(())
}

/// The graph `serve` and `worker` run: the incident workflow, and nothing
/// else (the benchmark graphs are registered by `sentinel bench` only).
async fn registry(
    store: &Store,
    access: Access,
    telemetry: &api::ingest::Storage,
    memory: Arc<dyn nodes::memory::IncidentMemory>,
    config: &Config,
) -> anyhow::Result<engine::Registry> {
    if config.executors.is_none() {
        tracing::info!("no `executors` in the configuration: actions are recorded as dry runs");
    }
    let kill_switch = api::remediate::SharedKillSwitch::arc(access.clone());
    let executor = sentinel::wiring::executor(config.executors.as_ref(), kill_switch.clone())
        .await
        .context("building the executors")?;
    let mut registry = engine::Registry::new();
    let ports = telemetry::store::StorePorts(telemetry.store.clone());
    let workflow = sentinel::wiring::standalone_workflow(store, kill_switch, ports, executor, memory, config).await?;
    registry.register(nodes::workflow::graph(workflow));
    Ok(registry)
}

/// The database with the engine's and the API's migrations applied.
async fn open_database(url: &str) -> anyhow::Result<(Store, Access)> {
    if let Some(dir) = url.strip_prefix("sqlite://").and_then(|f| std::path::Path::new(f).parent()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating the data directory {}", dir.display()))?;
    }
    let store = Store::connect(&StoreConfig::new(url)).await.context("connecting to the database")?;
    let access = Access::new(&store, Arc::new(SystemClock)).await.context("migrating the API tables")?;
    Ok((store, access))
}

async fn serve(args: ServeArgs, mut config: Config) -> anyhow::Result<()> {
    config.telemetry.consume = !args.no_consumer;
    api::observe::prometheus();
    let (store, access) = open_database(&config.database_url).await?;
    let storage = api::ingest::open_store(&config.telemetry).await.context("telemetry store")?;
    let memory = sentinel::wiring::semantic_memory(&config.memory).await?;
    let registry = registry(&store, access.clone(), &storage, memory.clone(), &config).await?;
    let engine = Engine::new(store.clone(), registry, Arc::new(SystemClock));
    if access.list_keys().await?.iter().all(|k| k.revoked_at.is_some()) {
        tracing::warn!(
            "no API key exists: every /v1 call will be refused; create one with \
             `sentinel keys create --direct --name NAME --role admin`"
        );
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    let worker = (!args.no_worker).then(|| {
        let (engine, shutdown) = (engine.clone(), shutdown.clone());
        let config = WorkerConfig { concurrency: args.concurrency, ..WorkerConfig::default() };
        if let Some(retention) = config.retention {
            tokio::spawn(sentinel::wiring::prune_memory(
                memory.clone(),
                retention,
                config.prune_interval,
                shutdown.clone(),
            ));
        }
        tokio::spawn(async move { engine.work(config, shutdown).await })
    });
    let listener =
        tokio::net::TcpListener::bind(&args.listen).await.with_context(|| format!("listening on {}", args.listen))?;
    tracing::info!(listen = %args.listen, workers = !args.no_worker, "serving");
    let destinations =
        sentinel::relay::Destinations { slack: config.slack_api.clone(), pagerduty: config.pagerduty.clone() };
    let relay = tokio::spawn(sentinel::relay::run(
        engine.clone(),
        destinations,
        sentinel::relay::RelayConfig::default(),
        shutdown.clone(),
    ));
    let slack = config.slack.as_ref().map(|s| api::slack::SlackState {
        engine: engine.clone(),
        access: access.clone(),
        signing_secret: s.signing_secret.clone(),
        approvers: s.approvers.clone(),
    });
    if slack.is_some() {
        tracing::info!("slack interactions enabled at /slack/interactions");
    }
    let mut intake = api::ingest::IntakeSink::new(engine.clone());
    if let nodes::memory::MemoryState::On { .. } = memory.state() {
        intake = intake.with_memory(api::ingest::SemanticIntake {
            memory: memory.clone(),
            services: config.catalog.graph().clone(),
            config: config.memory.join.clone(),
        });
    }
    let console_metrics = telemetry::store::StorePorts(storage.store.clone());
    let (telemetry, consumer) =
        api::ingest::start(intake, storage, &config.telemetry, shutdown.clone()).await.context("telemetry")?;
    let security = Security::new(access, config.rate_limit);
    // The console's live feed hears of runs changed by other processes too.
    let changes = tokio::spawn({
        let (store, shutdown) = (store.clone(), shutdown.clone());
        async move { store.follow_changes(shutdown).await }
    });
    let console = sentinel::wiring::console(console_metrics, &config, shutdown.clone())?;
    tracing::info!(url = %format!("http://{}/console", args.listen), "operator console");
    let app = api::server::app(
        api::server::AppState { engine: engine.clone(), security, slack, telemetry: Some(telemetry), memory },
        Some(console),
    );
    axum::serve(listener, app).with_graceful_shutdown(shutdown.clone().cancelled_owned()).await?;
    if let Some(worker) = worker {
        worker.await?;
    }
    relay.await?;
    consumer.await?;
    changes.await?;
    Ok(())
}

/// Runs workers; `with_bench_graphs` adds the `bench.*` graphs (`sentinel bench worker`).
async fn worker(args: WorkerArgs, config: &Config, with_bench_graphs: bool) -> anyhow::Result<()> {
    let (store, access) = open_database(&config.database_url).await?;
    let storage = api::ingest::open_store(&config.telemetry).await.context("telemetry store")?;
    let memory = sentinel::wiring::semantic_memory(&config.memory).await?;
    let mut registry = registry(&store, access, &storage, memory.clone(), config).await?;
    if with_bench_graphs {
        bench::register(&mut registry, None);
    }
    let engine = Engine::new(store.clone(), registry, Arc::new(SystemClock));
    let mut config = WorkerConfig {
        concurrency: args.concurrency,
        lease: Duration::from_millis(args.lease_ms),
        poll_interval: Duration::from_millis(args.poll_ms),
        ..WorkerConfig::default()
    };
    if let Some(id) = args.id {
        config.id = id;
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    if let Some(retention) = config.retention {
        tokio::spawn(sentinel::wiring::prune_memory(memory, retention, config.prune_interval, shutdown.clone()));
    }
    tracing::info!(worker = %config.id, concurrency = config.concurrency, "worker started");
    engine.work(config, shutdown).await;
    tracing::info!("worker stopped");
    Ok(())
}

async fn stop_on_signal(shutdown: CancellationToken) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM");
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down: finishing steps in flight");
    shutdown.cancel();
}

async fn bench_engine(args: EngineBenchArgs) -> anyhow::Result<()> {
    let mut results = Vec::new();
    for backend in &args.backends {
        let (url, _tmp) = bench_database(backend)?;
        eprintln!("benchmarking {backend} …");
        let figures = bench::run_engine_bench(&EngineBench {
            url,
            runs: args.runs,
            steps: args.steps,
            concurrency: args.workers.clone(),
            start_samples: args.start_samples,
            waiting_runs: args.waiting,
        })
        .await?;
        results.push(figures);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
        return Ok(());
    }
    println!(
        "{:<9} {:>7} {:>12} {:>10} {:>14} {:>11} {:>11}",
        "backend", "workers", "transitions", "seconds", "transitions/s", "step p50 ms", "step p99 ms"
    );
    for f in &results {
        for t in &f.throughput {
            println!(
                "{:<9} {:>7} {:>12} {:>10.2} {:>14.0} {:>11.2} {:>11.2}",
                f.backend, t.workers, t.transitions, t.seconds, t.transitions_per_sec, t.step_p50_ms, t.step_p99_ms
            );
        }
    }
    println!();
    println!(
        "{:<9} {:>13} {:>13} {:>9} {:>15} {:>17}",
        "backend", "start p50 ms", "start p99 ms", "waiting", "rss before MB", "rss waiting MB"
    );
    for f in &results {
        println!(
            "{:<9} {:>13.2} {:>13.2} {:>9} {:>15.1} {:>17.1}",
            f.backend, f.start_p50_ms, f.start_p99_ms, f.waiting_runs, f.rss_before_mb, f.rss_with_waiting_mb
        );
    }
    Ok(())
}

/// The database URL a benchmark backend runs on; SQLite in a temporary directory.
fn bench_database(backend: &str) -> anyhow::Result<(String, Option<TempDir>)> {
    match backend {
        "postgres" => {
            let url = config::process_env("DATABASE_URL")
                .filter(|u| u.starts_with("postgres"))
                .context("the postgres benchmark needs DATABASE_URL=postgres://…")?;
            Ok((url, None))
        }
        "sqlite" => {
            let dir = std::env::temp_dir().join(format!("sentinel-bench-{}", uuid::Uuid::new_v4().simple()));
            std::fs::create_dir_all(&dir)?;
            Ok((format!("sqlite://{}", dir.join("bench.db").display()), Some(TempDir(dir))))
        }
        other => anyhow::bail!("unknown backend `{other}` (postgres, sqlite)"),
    }
}

async fn bench_incident(args: IncidentBenchArgs) -> anyhow::Result<()> {
    let mut results = Vec::new();
    for backend in &args.backends {
        let (url, _tmp) = bench_database(backend)?;
        eprintln!("benchmarking the incident graph on {backend} …");
        let b =
            bench::incident::IncidentBench { url, incidents: args.incidents, rate: args.rate, workers: args.workers };
        results.push(bench::incident::run_incident_bench(&b).await?);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
        return Ok(());
    }
    println!(
        "{:<9} {:>9} {:>7} {:>7} {:>6} {:>11} {:>8} {:>8} {:>8}",
        "backend", "incidents", "rate/s", "workers", "steps", "resolved/s", "p50 ms", "p99 ms", "max ms"
    );
    for f in &results {
        println!(
            "{:<9} {:>9} {:>7.0} {:>7} {:>6} {:>11.1} {:>8.1} {:>8.1} {:>8.1}",
            f.backend, f.incidents, f.rate, f.workers, f.steps, f.resolved_per_sec, f.p50_ms, f.p99_ms, f.max_ms
        );
    }
    for f in &results {
        println!();
        println!("{} path (medians): {:<16} {:>10} {:>8}", f.backend, "step", "waited ms", "ran ms");
        for s in &f.path {
            println!("{:>26}{:<16} {:>10.1} {:>8.1}", "", s.node, s.waited_p50_ms, s.ran_p50_ms);
        }
    }
    Ok(())
}

async fn bench_api(args: ApiBenchArgs) -> anyhow::Result<()> {
    let mut results = Vec::new();
    for backend in &args.backends {
        let (url, _tmp) = bench_database(backend)?;
        eprintln!("benchmarking the API on {backend} …");
        let bench = bench::api::ApiBench {
            url,
            backend: backend.clone(),
            requests: args.requests,
            concurrency: args.concurrency,
        };
        results.push(bench::api::run_api_bench(&bench).await?);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
        return Ok(());
    }
    println!(
        "{:<9} {:<28} {:>9} {:>6} {:>10} {:>8} {:>8} {:>8}",
        "backend", "call", "requests", "conc", "req/s", "p50 ms", "p99 ms", "max ms"
    );
    for f in &results {
        for c in &f.calls {
            println!(
                "{:<9} {:<28} {:>9} {:>6} {:>10.0} {:>8.2} {:>8.2} {:>8.2}",
                f.backend, c.call, c.requests, c.concurrency, c.per_sec, c.p50_ms, c.p99_ms, c.max_ms
            );
        }
    }
    Ok(())
}

async fn bench_ingest(args: IngestBenchArgs) -> anyhow::Result<()> {
    let (database_url, _dir) = match config::process_env("DATABASE_URL") {
        Some(url) => (url, None),
        None => bench_database("sqlite")?,
    };
    let env = |name: &str, default: &str| config::process_env(name).unwrap_or(default.into());
    let b = lab::bench::ingest::IngestBench {
        database_url,
        brokers: env("KAFKA_BROKERS", "127.0.0.1:9092"),
        clickhouse_url: env("CLICKHOUSE_URL", "http://127.0.0.1:8123"),
        batch_sizes: args.batch_sizes,
        single_events: args.single_events,
        batch_events: args.batch_events,
        concurrency: args.concurrency,
        faults: args.faults,
    };
    let figures = lab::bench::ingest::run_ingest_bench(&b).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&figures)?);
        return Ok(());
    }
    println!("HTTP → Kafka ({}) → ClickHouse ({})", b.brokers, b.clickhouse_url);
    println!(
        "{:>6} {:>9} {:>5} {:>12} {:>14} {:>8} {:>8}",
        "batch", "events", "conc", "http ev/s", "end-to-end/s", "p50 ms", "p99 ms"
    );
    for t in &figures.throughput {
        println!(
            "{:>6} {:>9} {:>5} {:>12.0} {:>14.0} {:>8.2} {:>8.2}",
            t.batch, t.events, t.concurrency, t.http_per_sec, t.end_to_end_per_sec, t.request_p50_ms, t.request_p99_ms
        );
    }
    let l = &figures.ingest_to_anomaly;
    println!(
        "ingest → anomaly over {} faults: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        l.anomalies, l.p50_ms, l.p99_ms, l.max_ms
    );
    Ok(())
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
