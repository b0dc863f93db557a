//! `sentinel demo`: the incident workflow end to end on embedded defaults.
//!
//! One process: the engine on a fresh SQLite file, a worker, the REST API on
//! a loopback port, a simulated fleet whose samples go through the embedded
//! telemetry pipeline (in-process channel, memory store, the streaming
//! detectors), and mock executors whose actions change the simulation. Faults are injected one after another;
//! each becomes an incident that runs through the graph, and the demo approves
//! the risky ones through the same REST API a human would use.

pub mod sim;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use engine::{Clock, Engine, Registry, RunFilter, RunId, RunStatus, Store, StoreConfig, SystemClock, WorkerConfig};
use executors::mock::MockExecutor;
use executors::{Action, Allowlist, Executors, ExecutorsConfig, Guardrails};
use nodes::incident::Source;
use nodes::intake::{open_or_join, Intake, JoinConfig, Joiner};
use nodes::memory::{IncidentMemory, MemoryState, NoMemory};
use nodes::policy::PolicyConfig;
use nodes::runbook;
use nodes::verify::VerifyConfig;
use nodes::workflow::{self, Incident, Workflow, WorkflowConfig};
use tokio_util::sync::CancellationToken;

use api::access::{Access, Role};
use api::remediate::SharedKillSwitch;
use api::security::{RateLimit, Security};
use api::server::{app, AppState};
use nodes::policy::ledger::LedgerFacts;
use sim::{Fault, Fleet};
use telemetry::detect::DetectorConfig;
use telemetry::event::{DeployEvent, Event, MetricSample};
use telemetry::pipeline::{ChannelSink, Embedded, Processor, Publisher};
use telemetry::store::{MemoryStore, StorePorts};

#[derive(Clone, Debug)]
pub struct DemoConfig {
    pub data_dir: PathBuf,
    /// Keep injecting faults for this long; the default round of seven takes under a minute.
    pub run_for: Duration,
    pub seed: u64,
    /// The embedding model's directory: semantic memory on (an embedded
    /// index beside the demo's database), or off without one.
    pub model_dir: Option<PathBuf>,
    /// Where the API and the console listen (`127.0.0.1:0`: any free port).
    pub listen: String,
    /// After the scenarios, print the table and keep serving (the console
    /// included) until SIGINT/SIGTERM.
    pub keep: bool,
}

/// One injected fault and what fixes it.
struct Scenario {
    name: &'static str,
    service: &'static str,
    metric: &'static str,
    fault: Fault,
    labels: &'static [(&'static str, &'static str)],
    /// Actions that end the fault; any other action leaves it as it is.
    fixed_by: &'static [&'static str],
    deploy: bool,
}

fn scenarios() -> Vec<Scenario> {
    let k8s: &[(&str, &str)] = &[("namespace", "prod"), ("platform", "kubernetes")];
    vec![
        Scenario {
            name: "latency spike",
            service: "checkout",
            metric: "http_p99_ms",
            fault: Fault { factor: 3.0, growth: 0.0 },
            labels: k8s,
            fixed_by: &["restart_deployment"],
            deploy: false,
        },
        Scenario {
            name: "error-rate spike",
            service: "frontend",
            metric: "error_rate",
            fault: Fault { factor: 8.0, growth: 0.0 },
            labels: k8s,
            fixed_by: &["restart_deployment"],
            deploy: false,
        },
        Scenario {
            name: "CPU saturation",
            service: "inventory",
            metric: "cpu_utilization",
            fault: Fault { factor: 2.0, growth: 0.0 },
            labels: k8s,
            fixed_by: &["scale_deployment"],
            deploy: false,
        },
        Scenario {
            name: "memory leak",
            service: "payments",
            metric: "memory_mb",
            fault: Fault { factor: 1.6, growth: 0.01 },
            labels: k8s,
            fixed_by: &["patch_memory_limit"],
            deploy: false,
        },
        Scenario {
            name: "DB connection exhaustion",
            service: "orders",
            metric: "db_connections",
            fault: Fault { factor: 2.5, growth: 0.0 },
            labels: &[("namespace", "prod"), ("platform", "kubernetes"), ("connection_share", "0.7")],
            fixed_by: &["restart_deployment"],
            deploy: false,
        },
        Scenario {
            name: "consumer lag",
            service: "billing-consumer",
            metric: "consumer_lag",
            fault: Fault { factor: 6.0, growth: 0.0 },
            labels: &[("namespace", "prod"), ("platform", "kubernetes"), ("partitions_per_consumer", "2")],
            fixed_by: &["restart_deployment"],
            deploy: false,
        },
        Scenario {
            name: "failed deployment",
            service: "checkout",
            metric: "error_rate",
            fault: Fault { factor: 10.0, growth: 0.0 },
            labels: k8s,
            fixed_by: &["rollback_deployment"],
            deploy: true,
        },
    ]
}

const TICK: Duration = Duration::from_millis(200);

struct Tracked {
    scenario: String,
    service: String,
    anomaly: String,
    seen_steps: usize,
    /// The step at which the demo last approved, so each gate is approved once.
    approved_at_step: Option<i64>,
}

/// A row of the closing table.
#[derive(Debug)]
pub struct Row {
    pub run: RunId,
    pub incident: String,
    pub decisions: String,
    pub outcome: String,
    pub mttr_secs: Option<f64>,
    pub postmortem: Option<PathBuf>,
}

pub async fn run(config: DemoConfig) -> anyhow::Result<Vec<Row>> {
    let started = Instant::now();
    let stamp = SystemClock.now().0;
    std::fs::create_dir_all(config.data_dir.join("postmortems")).context("creating the data dir")?;
    let db = config.data_dir.join(format!("demo-{stamp}.db"));
    let store = Store::connect(&StoreConfig::new(format!("sqlite://{}", db.display()))).await?;

    // The embedded telemetry path: samples in through a channel, into the
    // memory store the workflow reads, past the streaming detectors, whose
    // anomalies come back here to open incidents.
    let events = Arc::new(MemoryStore::new());
    let (detected_tx, mut detected) = tokio::sync::mpsc::unbounded_channel();
    let processor = Processor::new(events.clone(), Arc::new(ChannelSink(detected_tx)), DetectorConfig::default());
    let resets = processor.resets();
    let (pipeline, source) = Embedded::new(100_000);
    let pipeline_stop = CancellationToken::new();
    let consumer = tokio::spawn(source.run(processor, 10_000, pipeline_stop.clone()));
    let mock = MockExecutor::default();
    let fleet = Arc::new(Mutex::new(Fleet::new(config.seed)));
    let scenarios = Arc::new(scenarios());
    let active: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
    // Each sample carries the labels of the scenario active on its service.
    let sample_events = |samples: Vec<(&str, &str, f64)>, at: engine::Timestamp| -> Vec<Event> {
        let active = active.lock().expect("active lock");
        samples
            .into_iter()
            .map(|(service, metric, value)| {
                let labels = active.get(service).map_or(&[("namespace", "prod")][..], |i| scenarios[*i].labels);
                Event::Metric(MetricSample {
                    ts: at.0,
                    service: service.to_owned(),
                    metric: metric.to_owned(),
                    value,
                    labels: labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
                })
            })
            .collect()
    };

    // Prefill an hour of history, one sample per simulated minute.
    let now = SystemClock.now();
    for m in 0..60u32 {
        let at = now.saturating_sub(Duration::from_secs(u64::from(60 - m) * 60));
        let samples = fleet.lock().expect("fleet lock").sample(600 + m);
        pipeline.publish(sample_events(samples, at)).await.context("the embedded pipeline")?;
    }

    // What each mock action does to the simulation.
    for action in [
        "restart_deployment",
        "scale_deployment",
        "patch_memory_limit",
        "rollback_deployment",
        "patch_image",
        "drain_node",
        "delete_pod",
    ] {
        let (fleet, resets, scenarios, active) = (fleet.clone(), resets.clone(), scenarios.clone(), active.clone());
        mock.on_execute(
            action,
            Arc::new(move |a: &Action| {
                let service = a.target.rsplit('/').next().unwrap_or_default().to_owned();
                let Some(&i) = active.lock().expect("active lock").get(&service) else { return };
                if scenarios[i].fixed_by.contains(&a.action.as_str()) {
                    fleet.lock().expect("fleet lock").fix(&service);
                    // The detectors judge the fixed service against fresh data.
                    resets.reset(&service);
                }
            }),
        );
    }

    let auto: Vec<String> = ["frontend", "checkout", "inventory", "orders", "billing-consumer"]
        .iter()
        .map(|s| format!("kubernetes:prod/{s}"))
        .collect();
    let workflow_config = WorkflowConfig {
        policy: PolicyConfig {
            allowlist: Allowlist::parse(&auto).map_err(anyhow::Error::msg)?,
            ..PolicyConfig::default()
        },
        verify: VerifyConfig::default(),
        approval_timeout: Duration::from_secs(60),
        verify_window: Duration::from_secs(4),
        verify_interval: Duration::from_millis(400),
        ..WorkflowConfig::default()
    };
    let services = sim::catalog();
    let memory: Arc<dyn IncidentMemory> = match &config.model_dir {
        Some(dir) => {
            let (dir, index) = (dir.clone(), config.data_dir.join(format!("demo-{stamp}-memory")));
            let embedder = tokio::task::spawn_blocking(move || memory::Embedder::load(&dir))
                .await?
                .context("semantic memory: loading the model")?;
            let index = memory::edge::EdgeIndex::open(&index, memory::DIMENSIONS)?;
            Arc::new(memory::SemanticMemory::new(Arc::new(embedder), Arc::new(index)).await?)
        }
        None => Arc::new(NoMemory::default()),
    };
    match memory.state() {
        MemoryState::On { index, .. } => println!("semantic memory: on ({index})"),
        MemoryState::Off { reason } => println!("semantic memory: off ({reason})"),
    }
    let join = JoinConfig::default();
    let services_graph = services.graph().clone();
    // The policy reads its facts from the incident runs in the same store.
    let access = Access::new(&store, Arc::new(SystemClock)).await.context("migrating the API tables")?;
    // The demo approves through the API like any operator: with an operator key.
    let key =
        access.create_key("demo-operator", Role::Operator, "demo").await.context("creating the demo's API key")?;
    // Whoever runs the demo signs in to the console with this one.
    let console_key =
        access.create_key("demo-console", Role::Admin, "demo").await.context("creating the console's API key")?;
    let facts_engine = Engine::new(store.clone(), Registry::new(), Arc::new(SystemClock));
    // The factory's mock backend for every kind, behind the production guardrails
    // (allowlist, the API's kill switch, blast radius), live rather than dry run.
    let executors = Executors::build(
        &ExecutorsConfig::mock_for_every_kind(
            mock.clone(),
            Guardrails {
                allowlist: Allowlist::parse(&["kubernetes:prod/*", "kubernetes:node/*", "ecs:prod/*", "ec2:prod/*"])
                    .map_err(anyhow::Error::msg)?,
                dry_run: false,
                ..Guardrails::default()
            },
        ),
        SharedKillSwitch::arc(access.clone()),
    )
    .await
    .context("building the mock executors")?;
    let policy = workflow_config.policy.clone();
    let policy_for_console = policy.clone();
    let workflow = Arc::new(Workflow {
        config: workflow_config,
        runbooks: runbook::Runbooks::shipped().context("loading runbooks")?,
        services,
        metrics: Arc::new(StorePorts(events.clone())),
        deployments: Arc::new(StorePorts(events.clone())),
        memory: memory.clone(),
        alerts: Arc::new(nodes::ports::NoAlertRules),
        cluster: Arc::new(sim::cluster()),
        executor: Arc::new(executors),
        safety: Arc::new(LedgerFacts {
            engine: facts_engine,
            kill_switch: SharedKillSwitch::arc(access.clone()),
            policy,
        }),
    });
    let mut registry = Registry::new();
    registry.register(workflow::graph(workflow));
    let engine = Engine::new(store.clone(), registry, Arc::new(SystemClock));

    let shutdown = CancellationToken::new();
    let worker = tokio::spawn({
        let (engine, shutdown) = (engine.clone(), shutdown.clone());
        let config = WorkerConfig {
            id: "demo-worker".into(),
            concurrency: 4,
            poll_interval: Duration::from_millis(100),
            ..WorkerConfig::default()
        };
        async move { engine.work(config, shutdown).await }
    });
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let api = format!("http://{}", listener.local_addr()?);
    let server = tokio::spawn({
        let shutdown = shutdown.clone();
        let security = Security::new(access.clone(), RateLimit::default());
        let console = api::console::Console {
            metrics: Some(Arc::new(StorePorts(events.clone()))),
            policy: policy_for_console,
            stop: shutdown.clone(),
            ..Default::default()
        };
        let state = AppState { engine: engine.clone(), security, slack: None, telemetry: None, memory: memory.clone() };
        let app = app(state, Some(console));
        async move { axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await }
    });
    println!("sentinel demo: engine on {}, REST API on {api}", db.display());
    println!("operator console: {api}/console (sign in with the key {})", console_key.secret);
    println!("graph:\n{}", engine.registry().mermaid(workflow::GRAPH, None).unwrap_or_default());

    let http = reqwest::Client::new();
    let mut tracked: BTreeMap<RunId, Tracked> = BTreeMap::new();
    let mut injected: BTreeSet<usize> = BTreeSet::new();
    let mut tick: u64 = 0;
    let deadline = started + config.run_for.max(Duration::from_secs(20)) + Duration::from_secs(50);
    loop {
        tick += 1;
        let at = SystemClock.now();
        // Inject the next fault every 25 ticks (5 s), round after round while time allows.
        if tick % 25 == 15 {
            let round_done = injected.len() == scenarios.len();
            let keep_going = started.elapsed() < config.run_for;
            if !round_done || keep_going {
                if round_done {
                    injected.clear();
                }
                let i = injected.len();
                let s = &scenarios[i];
                if !fleet.lock().expect("fleet lock").faulty(s.service) {
                    injected.insert(i);
                    active.lock().expect("active lock").insert(s.service.to_owned(), i);
                    if s.deploy {
                        let deploy = Event::Deploy(DeployEvent {
                            ts: at.0,
                            service: s.service.into(),
                            version: format!("v2.{tick}"),
                            change_type: "rollout".into(),
                            git_sha: None,
                        });
                        pipeline.publish(vec![deploy]).await.context("the embedded pipeline")?;
                    }
                    fleet.lock().expect("fleet lock").inject(s.service, s.metric, s.fault.clone());
                    println!("[{:>5.1}s] inject   {:<17} {}", started.elapsed().as_secs_f64(), s.service, s.name);
                }
            }
        }
        // One simulated minute of telemetry, into the pipeline.
        let samples = fleet.lock().expect("fleet lock").sample(660 + tick as u32 % 1440);
        pipeline.publish(sample_events(samples, at)).await.context("the embedded pipeline")?;
        // What the detectors found since the last tick.
        while let Ok(detection) = detected.try_recv() {
            let joiner = Joiner { memory: &*memory, services: &services_graph, config: &join };
            let on = matches!(memory.state(), MemoryState::On { .. });
            let run = match open_or_join(&engine, on.then_some(&joiner), &detection).await? {
                Intake::Opened(run) => run,
                // The same condition while its incident is open: attached, not opened again;
                // the same detection again after it closed: a repeat.
                Intake::Attached(..) | Intake::Repeated(_) => continue,
                Intake::Joined(run, engine::Delivery::Accepted, how) => {
                    println!(
                        "[{:>5.1}s] join     {:<17} {} {} → incident {run} ({})",
                        started.elapsed().as_secs_f64(),
                        detection.service,
                        detection.anomaly_type,
                        detection.metric,
                        serde_json::to_string(&how).unwrap_or_default()
                    );
                    continue;
                }
                Intake::Joined(..) => continue,
            };
            let scenario_index = active.lock().expect("active lock").get(&detection.service).copied();
            let scenario = scenario_index.map_or("(noise)".to_owned(), |i| scenarios[i].name.to_owned());
            let score = match &detection.source {
                Source::Detector { score, .. } => *score,
                Source::Alertmanager { .. } => 1.0,
            };
            println!(
                "[{:>5.1}s] detect   {:<17} {} (score {score:.2}) → incident {run}",
                started.elapsed().as_secs_f64(),
                detection.service,
                detection.anomaly_type,
            );
            tracked.insert(
                run,
                Tracked {
                    scenario,
                    service: detection.service,
                    anomaly: detection.anomaly_type,
                    seen_steps: 0,
                    approved_at_step: None,
                },
            );
        }

        // Progress from each incident's own checkpoint history; approvals through the API.
        for (run, t) in tracked.iter_mut() {
            let detail = engine.detail(*run).await?;
            for c in detail.history.iter().skip(t.seen_steps) {
                let what = match &c.outcome {
                    engine::StepOutcome::Route { route, to } => format!("{} →{route}→ {to}", c.node),
                    engine::StepOutcome::Wait => format!("{} (waiting)", c.node),
                    other => format!("{} {}", c.node, other.label()),
                };
                println!("[{:>5.1}s] step {:>2}  {:<17} {what}", started.elapsed().as_secs_f64(), c.step, t.service);
            }
            t.seen_steps = detail.history.len();
            let r = &detail.run;
            if r.status == RunStatus::Waiting && r.node == "await_approval" && t.approved_at_step != Some(r.step) {
                let url = format!("{api}/v1/runs/{run}/approve");
                // The decision names the gate it was shown, as a human's would.
                let gate = r.state.get("gate").cloned().unwrap_or_default();
                let body = serde_json::json!({ "gate": gate, "reason": "approved through the REST API by the demo" });
                let resp = http
                    .post(&url)
                    .bearer_auth(&key.secret)
                    .json(&body)
                    .send()
                    .await
                    .context("calling the REST API")?;
                println!(
                    "[{:>5.1}s] approve  {:<17} POST {url} → {}",
                    started.elapsed().as_secs_f64(),
                    t.service,
                    resp.status()
                );
                if resp.status().is_success() {
                    t.approved_at_step = Some(r.step);
                }
            }
        }

        let all_injected = injected.len() == scenarios.len() && started.elapsed() >= config.run_for;
        let open = engine
            .list(&RunFilter { graph: Some(workflow::GRAPH.into()), limit: Some(1000), ..Default::default() })
            .await?
            .iter()
            .filter(|r| !r.status.is_finished())
            .count();
        let covered = scenarios.iter().all(|s| tracked.values().any(|t| t.scenario == s.name));
        if all_injected && covered && open == 0 {
            break;
        }
        if Instant::now() > deadline {
            println!("demo time limit reached with {open} incident(s) still open");
            break;
        }
        tokio::time::sleep(TICK).await;
    }
    let rows = rows(&engine, &tracked, &config).await?;
    if config.keep {
        println!("\n{}", table(&rows));
        println!("the scenarios are done; the API and the console stay up at {api}/console until Ctrl-C");
        stop_signal().await;
    }
    shutdown.cancel();
    pipeline_stop.cancel();
    worker.await?;
    server.await??;
    consumer.await?;
    store.close().await;
    Ok(rows)
}

/// SIGINT or SIGTERM.
async fn stop_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}

/// The demo's table of incidents, decisions, outcomes and postmortems.
pub fn table(rows: &[Row]) -> String {
    use std::fmt::Write as _;
    let mut out = format!("{:<58} {:<44} {:<40} {:>6}  postmortem\n", "incident", "decisions", "outcome", "MTTR s");
    for r in rows {
        let _ = writeln!(
            out,
            "{:<58} {:<44} {:<40} {:>6}  {}",
            r.incident,
            r.decisions,
            r.outcome,
            r.mttr_secs.map_or("-".to_owned(), |m| format!("{m:.1}")),
            r.postmortem.as_ref().map_or("-".to_owned(), |p| p.display().to_string())
        );
    }
    out
}

/// Each tracked incident as it ended, its postmortem written to the data directory.
async fn rows(engine: &Engine, tracked: &BTreeMap<RunId, Tracked>, config: &DemoConfig) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for (run, t) in tracked {
        let r = engine.run(*run).await?;
        let s: Incident = serde_json::from_value(r.state)?;
        let postmortem = match &s.postmortem {
            Some(text) => {
                let path = config.data_dir.join("postmortems").join(format!("{run}.md"));
                std::fs::write(&path, text)?;
                Some(path)
            }
            None => None,
        };
        rows.push(Row {
            run: *run,
            incident: format!("{} {} ({})", t.service, t.anomaly, t.scenario),
            decisions: s
                .decisions
                .iter()
                .map(|d| format!("{} by {}", if d.approved { "approved" } else { "rejected" }, d.by))
                .collect::<Vec<_>>()
                .join(", "),
            outcome: s.outcome.unwrap_or_else(|| r.status.to_string()),
            mttr_secs: s.mttr_secs,
            postmortem,
        });
    }
    Ok(rows)
}
