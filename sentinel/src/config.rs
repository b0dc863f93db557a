//! The one configuration: `sentinel.yaml` (path from `--config` or
//! `SENTINEL_CONFIG`), read once into [`Config`] and passed down. Secrets come
//! only from the environment; URLs may be in the file, and the environment
//! overrides them. Every error names `FILE:LINE:COLUMN` (or the variable).
//! `sentinel.example.yaml` at the repository root documents every field.
//!
//! | variable | what | file field it overrides |
//! |---|---|---|
//! | `DATABASE_URL` | PostgreSQL (or `sqlite://…`); a secret | — |
//! | `SENTINEL_DATA_DIR` | the embedded SQLite file's directory | `data_dir` |
//! | `KAFKA_BROKERS`, `SENTINEL_KAFKA_TOPIC`, `SENTINEL_KAFKA_GROUP` | the Kafka path | `telemetry.kafka.*` |
//! | `CLICKHOUSE_URL`, `SENTINEL_CLICKHOUSE_DATABASE`, `CLICKHOUSE_USER` | the metric store | `telemetry.clickhouse.*` |
//! | `CLICKHOUSE_PASSWORD` | a secret | — |
//! | `SENTINEL_INSTANCE_ID` | this process's name among Kafka consumers | — |
//! | `SLACK_SIGNING_SECRET`, `SLACK_BOT_TOKEN` | Slack interactivity and messages; secrets | — |
//! | `SENTINEL_SLACK_API_URL` | Slack Web API base | `slack.api_url` |
//! | `PAGERDUTY_ROUTING_KEY` | escalations; a secret | — |
//! | `SENTINEL_PAGERDUTY_URL` | PagerDuty Events API base | `pagerduty.url` |
//! | `SENTINEL_WEBHOOK_TOKEN` | bearer token for the webhook executor; a secret | — |
//! | `PROMETHEUS_URL` | a team's Prometheus | `prometheus.url` |
//! | `PROMETHEUS_PASSWORD`, `PROMETHEUS_TOKEN` | its basic-auth password or bearer token; secrets | — |
//! | `SENTINEL_MODEL_DIR` | the embedding model's directory (`scripts/ensure-model.sh`) | `memory.model_dir` |
//! | `QDRANT_URL` | a Qdrant server (gRPC) for semantic memory | `memory.qdrant.url` |
//! | `QDRANT_API_KEY` | its API key; a secret | — |

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use executors::Allowlist;
use nodes::catalog::{self, Catalog};
use nodes::runbook::Runbooks;
use nodes::workflow::WorkflowConfig;
use nodes::yaml;
use serde::Deserialize;

/// `sentinel.yaml` as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    #[serde(default)]
    pub server: ServerSection,
    /// Where the embedded SQLite database lives when `DATABASE_URL` is unset.
    pub data_dir: Option<PathBuf>,
    #[serde(default)]
    pub telemetry: TelemetrySection,
    /// The service catalogue.
    #[serde(default)]
    pub services: Vec<catalog::Service>,
    /// Where a service the catalogue does not list runs (names default to the
    /// service's). Absent: such a service is analysed and escalated, never acted on.
    pub unlisted_services: Option<catalog::Placement>,
    #[serde(default)]
    pub runbooks: RunbooksSection,
    #[serde(default)]
    pub policy: PolicySection,
    #[serde(default)]
    pub approval: ApprovalSection,
    #[serde(default)]
    pub verify: VerifySection,
    /// How actions are carried out. Absent: every action is a dry run through the mock backend.
    pub executors: Option<ExecutorsSection>,
    #[serde(default)]
    pub slack: SlackSection,
    #[serde(default)]
    pub pagerduty: PagerDutySection,
    /// A team's Prometheus: a metric source, and where alert rules are
    /// re-evaluated to verify an alert's incident.
    pub prometheus: Option<PrometheusSection>,
    #[serde(default)]
    pub memory: MemorySection,
    /// Where services' metrics are read from unless a service says: `sentinel`
    /// (events sent to Sentinel) or `prometheus`. Default: `prometheus` when
    /// it is configured, else `sentinel`.
    pub metrics_from: Option<catalog::MetricsFrom>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusSection {
    /// `PROMETHEUS_URL` overrides.
    pub url: Option<String>,
    /// Basic auth user (the password is `PROMETHEUS_PASSWORD`); or set
    /// `PROMETHEUS_TOKEN` for a bearer token.
    pub user: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Resolution of range queries (default 15s).
    #[serde(default, with = "humantime_serde")]
    pub step: Option<Duration>,
    /// The PromQL of a metric without its own query; `{metric}` and
    /// `{service}` are filled in. Default `avg({metric}{job="{service}"})`.
    pub default_query: Option<String>,
    /// PromQL by metric name, with `{service}` filled in.
    #[serde(default)]
    pub queries: BTreeMap<String, String>,
    /// Deployments as ReplicaSets created: `kube-state-metrics` for the
    /// standard query, or a PromQL template over `{namespace}`,
    /// `{deployment}`, `{service}`. Absent: deployments come from events.
    pub deployments: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// Requests per second per API key (default 20).
    pub rate_per_sec: Option<std::num::NonZeroU32>,
    /// Burst per API key (default 40).
    pub burst: Option<std::num::NonZeroU32>,
    /// How long a console sign-in lasts (default 8h).
    #[serde(default, with = "humantime_serde")]
    pub session_ttl: Option<Duration>,
    /// Mark the console's session cookie `Secure` always (set when Sentinel
    /// is served over TLS). Without it, the cookie is marked so when the
    /// request came through a TLS proxy (`X-Forwarded-Proto: https`).
    #[serde(default)]
    pub secure_cookies: bool,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySection {
    pub kafka: Option<KafkaSection>,
    pub clickhouse: Option<ClickHouseSection>,
    /// Events the embedded pipeline holds before it answers 503.
    pub ingest_capacity: Option<std::num::NonZeroUsize>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSection {
    pub brokers: Option<String>,
    pub topic: Option<String>,
    pub group: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClickHouseSection {
    pub url: Option<String>,
    pub database: Option<String>,
    pub user: Option<String>,
    /// How long one query or insert may take before it counts as the store
    /// being away (default 10s).
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunbooksSection {
    /// Directories of a team's runbooks, relative to this file; they answer
    /// before the shipped ones, and one with a shipped runbook's id replaces it.
    #[serde(default)]
    pub dirs: Vec<PathBuf>,
}

/// The auto-approval policy (see `nodes::policy`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySection {
    /// Targets the policy may approve without a human. Empty: none.
    #[serde(default)]
    pub auto_approve: Allowlist,
    #[serde(default, with = "humantime_serde")]
    pub max_auto_downtime: Option<Duration>,
    pub max_auto_per_minute: Option<u32>,
    pub max_auto_per_hour: Option<u32>,
    /// After an action on a service, further auto-approvals on it wait this long.
    #[serde(default, with = "humantime_serde")]
    pub service_cooldown: Option<Duration>,
    /// Least time between two incidents' actions on one target, fleet-wide.
    #[serde(default, with = "humantime_serde")]
    pub target_cooldown: Option<Duration>,
    /// A failed action is not auto-approved again on its target within this window.
    #[serde(default, with = "humantime_serde")]
    pub loop_guard_window: Option<Duration>,
    #[serde(default)]
    pub breaker: BreakerSection,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerSection {
    /// Executor failure rate above which auto-approval stops (0 to 1).
    pub failure_threshold: Option<f64>,
    #[serde(default, with = "humantime_serde")]
    pub window: Option<Duration>,
    pub min_outcomes: Option<usize>,
    #[serde(default, with = "humantime_serde")]
    pub cool_down: Option<Duration>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalSection {
    /// How long a human has to decide before the incident escalates (default 15m).
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifySection {
    /// How long to watch after an action before rolling back (default 10m).
    #[serde(default, with = "humantime_serde")]
    pub window: Option<Duration>,
    /// How often to look (default 30s).
    #[serde(default, with = "humantime_serde")]
    pub interval: Option<Duration>,
    /// Recovered readings needed in a row (default 3).
    pub consecutive: Option<usize>,
    /// A reading within this many σ of the baseline is recovered (default 2).
    pub sigma_tolerance: Option<f64>,
    /// Rollbacks after which the incident is escalated (default 2).
    pub max_rollbacks: Option<u32>,
}

/// The executors `serve` and `worker` act through.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutorsSection {
    /// Default true: live actions are an explicit choice.
    #[serde(default = "yes")]
    pub dry_run: bool,
    /// Targets that may be acted on at all.
    pub allowlist: Allowlist,
    pub max_scale_factor: Option<f64>,
    pub max_nodes_cordoned: Option<u64>,
    pub aws: Option<AwsSection>,
    pub kubernetes: Option<KubeSection>,
    pub webhook: Option<WebhookSection>,
}

/// Actions of the listed kinds go to a team's own automation over HTTP
/// (see `executors::webhook`); the token comes from `SENTINEL_WEBHOOK_TOKEN`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSection {
    pub url: String,
    pub kinds: Vec<String>,
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsSection {
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub wait_timeout: Option<Duration>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubeSection {
    #[serde(default, with = "humantime_serde")]
    pub wait_timeout: Option<Duration>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackSection {
    /// Where incident messages go unless the service names its own channel.
    pub channel: Option<String>,
    pub api_url: Option<String>,
    #[serde(default)]
    pub approvers: ApproversSection,
}

/// Slack users who may approve beyond each service's own approvers.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApproversSection {
    #[serde(default)]
    pub anyone: Vec<String>,
    /// Keys are `sev1` … `sev4`.
    #[serde(default)]
    pub by_severity: BTreeMap<nodes::incident::Severity, Vec<String>>,
}

/// Semantic memory: the embedding model, the vector index, and how
/// detections join open incidents by meaning.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemorySection {
    /// The model directory; absent (and no SENTINEL_MODEL_DIR): memory is off.
    pub model_dir: Option<PathBuf>,
    pub qdrant: Option<QdrantSection>,
    #[serde(default)]
    pub join: JoinSection,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QdrantSection {
    pub url: Option<String>,
    pub collection: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinSection {
    pub same_service: Option<f64>,
    pub caller_symptom: Option<f64>,
    #[serde(default, with = "humantime_serde")]
    pub window: Option<Duration>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagerDutySection {
    pub url: Option<String>,
}

fn yes() -> bool {
    true
}

/// Reads a variable; a blank one counts as unset.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment, blank values unset.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Where the embedded SQLite file (and the demo's output) lives without a
/// configuration file: `SENTINEL_DATA_DIR`, else `.sentinel`.
pub fn data_dir(env: Env<'_>) -> PathBuf {
    env("SENTINEL_DATA_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(".sentinel"))
}

/// Everything the binary needs, checked.
pub struct Config {
    /// The file it came from, if any.
    pub path: Option<PathBuf>,
    pub file: File,
    pub database_url: String,
    pub telemetry: api::ingest::TelemetryConfig,
    pub rate_limit: api::security::RateLimit,
    pub catalog: Catalog,
    pub runbooks: Runbooks,
    pub workflow: WorkflowConfig,
    pub executors: Option<executors::ExecutorsConfig>,
    pub slack: Option<SlackSettings>,
    pub slack_api: Option<crate::relay::SlackClient>,
    pub pagerduty: Option<crate::relay::PagerDuty>,
    pub prometheus: Option<telemetry::prometheus::PrometheusConfig>,
    /// Where a service's metrics come from when its catalogue entry does not say.
    pub metrics_from: catalog::MetricsFrom,
    pub memory: MemorySettings,
}

/// Semantic memory as configured.
#[derive(Clone, Debug)]
pub struct MemorySettings {
    /// The model's directory; None: memory is off.
    pub model_dir: Option<PathBuf>,
    /// A Qdrant server's URL; None: the embedded index in `index_dir`.
    pub qdrant_url: Option<String>,
    pub qdrant_api_key: Option<String>,
    pub collection: String,
    pub index_dir: PathBuf,
    pub join: nodes::intake::JoinConfig,
}

/// Slack interactivity: the signing secret and who may approve.
#[derive(Clone)]
pub struct SlackSettings {
    pub signing_secret: String,
    pub approvers: api::slack::Approvers,
}

impl std::fmt::Debug for SlackSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackSettings").field("approvers", &self.approvers).finish_non_exhaustive()
    }
}

/// A configuration that cannot be used: where, and why.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    At(#[from] yaml::Error),
    #[error(transparent)]
    Runbook(#[from] nodes::runbook::Error),
    #[error("reading {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Env(String),
}

impl Config {
    /// Reads `path` (or, with none, the embedded defaults) and the environment.
    pub fn load(path: Option<&Path>, env: Env<'_>) -> Result<Config, Error> {
        let (file, text) = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| Error::Io { path: p.to_owned(), source })?;
                (yaml::from_str::<File>(p, &text)?, text)
            }
            None => (File::default(), String::new()),
        };
        // Without a file, only the environment can be wrong.
        let at = |field: &str, message: String| -> Error {
            match path {
                Some(p) => Error::At(yaml::error_at(p, &text, field, message)),
                None => Error::Env(message),
            }
        };
        let base = path.and_then(Path::parent).map(Path::to_owned).unwrap_or_default();

        // Without a file, every service runs as the Deployment of its name in
        // `default`; a file says where services run, or they are not acted on.
        let unlisted = match path {
            None => Some(catalog::Placement::kubernetes_namespace("default")),
            Some(_) => file.unlisted_services.clone(),
        };
        let catalog = Catalog::new(file.services.clone(), unlisted).map_err(|e| at(&e.at, e.message))?;
        let dirs: Vec<PathBuf> = file.runbooks.dirs.iter().map(|d| base.join(d)).collect();
        for (i, d) in dirs.iter().enumerate() {
            if !d.is_dir() {
                return Err(at(&format!("runbooks.dirs[{i}]"), format!("{} is not a directory", d.display())));
            }
        }
        let runbooks = Runbooks::load(&dirs)?;

        let workflow = workflow_config(&file).map_err(|(field, m)| at(&field, m))?;
        let executors = match &file.executors {
            Some(x) => Some(executors_config(x, env).map_err(|(field, m)| at(&format!("executors.{field}"), m))?),
            None => None,
        };
        let url = |var: &str, field: &str, from_file: Option<&String>| -> Result<Option<String>, Error> {
            match env(var) {
                Some(u) => check_url(&u).map(|_| Some(u)).map_err(|m| Error::Env(format!("{var}: {m}"))),
                None => match from_file {
                    Some(u) => check_url(u).map(|_| Some(u.clone())).map_err(|m| at(field, m)),
                    None => Ok(None),
                },
            }
        };

        let mut telemetry = api::ingest::TelemetryConfig::default();
        let t = &file.telemetry;
        let kafka = t.kafka.clone().unwrap_or_default();
        if let Some(brokers) = env("KAFKA_BROKERS").or(kafka.brokers.clone()) {
            let mut k = telemetry::kafka::KafkaConfig::new(brokers);
            if let Some(topic) = env("SENTINEL_KAFKA_TOPIC").or(kafka.topic.clone()) {
                k.topic = topic;
            }
            if let Some(group) = env("SENTINEL_KAFKA_GROUP").or(kafka.group.clone()) {
                k.group = group;
            }
            telemetry.kafka = Some(k);
        }
        let ch = t.clickhouse.clone().unwrap_or_default();
        if let Some(u) = url("CLICKHOUSE_URL", "telemetry.clickhouse.url", ch.url.as_ref())? {
            let mut c = telemetry::store::ClickHouseConfig::new(u);
            if let Some(db) = env("SENTINEL_CLICKHOUSE_DATABASE").or(ch.database.clone()) {
                c.database = db;
            }
            c.user = env("CLICKHOUSE_USER").or(ch.user.clone());
            c.password = env("CLICKHOUSE_PASSWORD");
            if let Some(t) = ch.timeout {
                if t < Duration::from_millis(100) {
                    return Err(at("telemetry.clickhouse.timeout", "it must be at least 100ms".into()));
                }
                c.timeout = t;
            }
            telemetry.clickhouse = Some(c);
        }
        if let Some(id) = env("SENTINEL_INSTANCE_ID") {
            telemetry.instance_id = id;
        }
        if let Some(n) = t.ingest_capacity {
            telemetry.capacity = n.get();
        }

        let mut rate_limit = api::security::RateLimit::default();
        if let Some(n) = file.server.rate_per_sec {
            rate_limit.per_second = n;
        }
        if let Some(n) = file.server.burst {
            rate_limit.burst = n;
        }

        let slack_url = url("SENTINEL_SLACK_API_URL", "slack.api_url", file.slack.api_url.as_ref())?;
        let slack = match env("SLACK_SIGNING_SECRET") {
            Some(signing_secret) => {
                let approvers = approvers(&file, &catalog);
                if approvers.is_empty() {
                    return Err(at(
                        "slack",
                        "SLACK_SIGNING_SECRET is set but no approver is configured (`slack.approvers` or a \
                         service's `slack.approvers`): nobody could approve in Slack"
                            .into(),
                    ));
                }
                Some(SlackSettings { signing_secret, approvers })
            }
            None => None,
        };
        let slack_api = match env("SLACK_BOT_TOKEN") {
            Some(token) => {
                let channel = file.slack.channel.clone().ok_or_else(|| {
                    at("slack", "SLACK_BOT_TOKEN is set but `slack.channel` is not: where would messages go?".into())
                })?;
                let channels = catalog
                    .services()
                    .filter_map(|s| Some((s.name.clone(), s.slack.as_ref()?.channel.clone()?)))
                    .collect();
                Some(crate::relay::SlackClient {
                    base_url: slack_url.unwrap_or_else(|| "https://slack.com".to_owned()),
                    token,
                    channel,
                    channels,
                    http: http_client().map_err(Error::Env)?,
                })
            }
            None => None,
        };
        let pd_url = url("SENTINEL_PAGERDUTY_URL", "pagerduty.url", file.pagerduty.url.as_ref())?;
        let pagerduty = match env("PAGERDUTY_ROUTING_KEY") {
            Some(routing_key) => Some(crate::relay::PagerDuty {
                base_url: pd_url.unwrap_or_else(|| "https://events.pagerduty.com".to_owned()),
                routing_key,
                http: http_client().map_err(Error::Env)?,
            }),
            None => None,
        };

        let prom = file.prometheus.clone().unwrap_or_default();
        let prometheus = match url("PROMETHEUS_URL", "prometheus.url", prom.url.as_ref())? {
            Some(u) => {
                let mut p = telemetry::prometheus::PrometheusConfig::new(u);
                p.auth = match (env("PROMETHEUS_TOKEN"), &prom.user) {
                    (Some(token), _) => telemetry::prometheus::Auth::Bearer(token),
                    (None, Some(user)) => {
                        telemetry::prometheus::Auth::Basic { user: user.clone(), password: env("PROMETHEUS_PASSWORD") }
                    }
                    (None, None) => telemetry::prometheus::Auth::None,
                };
                if let Some(t) = prom.timeout {
                    p.timeout = t;
                }
                if let Some(step) = prom.step {
                    if step.is_zero() {
                        return Err(at("prometheus.step", "a step of 0 is no resolution".into()));
                    }
                    p.step = step;
                }
                if let Some(q) = &prom.default_query {
                    p.default_query = q.clone();
                }
                p.queries = prom.queries.clone();
                p.deployments = prom.deployments.as_deref().map(|d| match d {
                    "kube-state-metrics" => telemetry::prometheus::KUBE_STATE_DEPLOYMENTS.to_owned(),
                    query => query.to_owned(),
                });
                Some(p)
            }
            None if file.prometheus.is_some() => {
                return Err(at("prometheus", "`prometheus` needs a `url` (or PROMETHEUS_URL)".into()));
            }
            None => None,
        };
        let metrics_from = file.metrics_from.unwrap_or(if prometheus.is_some() {
            catalog::MetricsFrom::Prometheus
        } else {
            catalog::MetricsFrom::Sentinel
        });
        let wants_prometheus = metrics_from == catalog::MetricsFrom::Prometheus
            || catalog.services().any(|s| s.metrics_from == Some(catalog::MetricsFrom::Prometheus));
        if wants_prometheus && prometheus.is_none() {
            return Err(at("metrics_from", "metrics from `prometheus`, but no Prometheus is configured".into()));
        }

        let data = match (env("SENTINEL_DATA_DIR"), &file.data_dir) {
            (None, Some(d)) => base.join(d),
            _ => data_dir(env),
        };
        let database_url = match env("DATABASE_URL") {
            Some(u) => u,
            None => format!("sqlite://{}", data.join("sentinel.db").display()),
        };
        let m = &file.memory;
        let mut join = nodes::intake::JoinConfig::default();
        for (field, value, into) in [
            ("memory.join.same_service", m.join.same_service, &mut join.same_service),
            ("memory.join.caller_symptom", m.join.caller_symptom, &mut join.caller_symptom),
        ] {
            if let Some(v) = value {
                if !(-1.0..=1.0).contains(&v) {
                    return Err(at(field, format!("{v} is not a cosine similarity (from -1 to 1)")));
                }
                *into = v;
            }
        }
        if let Some(w) = m.join.window {
            join.window = w;
        }
        let qdrant = m.qdrant.clone().unwrap_or_default();
        let memory = MemorySettings {
            model_dir: env("SENTINEL_MODEL_DIR")
                .map(PathBuf::from)
                .or_else(|| m.model_dir.as_ref().map(|d| base.join(d))),
            qdrant_url: url("QDRANT_URL", "memory.qdrant.url", qdrant.url.as_ref())?,
            qdrant_api_key: env("QDRANT_API_KEY"),
            collection: qdrant.collection.unwrap_or_else(|| memory::server::COLLECTION.to_owned()),
            index_dir: data.join("memory"),
            join,
        };
        Ok(Config {
            path: path.map(Path::to_owned),
            file,
            database_url,
            telemetry,
            rate_limit,
            catalog,
            runbooks,
            workflow,
            executors,
            slack,
            slack_api,
            pagerduty,
            prometheus,
            metrics_from,
            memory,
        })
    }

    /// What `sentinel config check` prints about a configuration that passed.
    pub fn summary(&self) -> String {
        let mut lines = Vec::new();
        let services: Vec<&str> = self.catalog.services().map(|s| s.name.as_str()).collect();
        lines.push(format!("services: {} ({})", services.len(), services.join(", ")));
        lines.push(format!(
            "runbooks: {} ({} from the team's directories)",
            self.runbooks.iter().count(),
            self.runbooks.team_count()
        ));
        lines.push(match (&self.executors, &self.file.executors) {
            (Some(_), Some(x)) => format!(
                "executors: {} ({})",
                [("aws", x.aws.is_some()), ("kubernetes", x.kubernetes.is_some()), ("webhook", x.webhook.is_some())]
                    .iter()
                    .filter(|(_, on)| *on)
                    .map(|(k, _)| *k)
                    .collect::<Vec<_>>()
                    .join(", "),
                if x.dry_run { "dry run" } else { "live" }
            ),
            _ => "executors: none (every action is a dry run through the mock backend)".to_owned(),
        });
        lines.push(format!(
            "approval timeout: {}; auto-approve: {}",
            humantime::format_duration(self.workflow.approval_timeout),
            if self.workflow.policy.allowlist.is_empty() {
                "nothing".to_owned()
            } else {
                format!("{:?}", self.workflow.policy.allowlist)
            }
        ));
        lines.push(format!(
            "metrics: {:?} by default{}",
            self.metrics_from,
            self.prometheus.as_ref().map_or(String::new(), |p| format!("; Prometheus at {}", p.url))
        ));
        lines.push(format!(
            "telemetry: {}, {}",
            self.telemetry.kafka.as_ref().map_or("embedded channel".to_owned(), |k| format!("Kafka {}", k.brokers)),
            self.telemetry.clickhouse.as_ref().map_or("memory store".to_owned(), |c| format!("ClickHouse {}", c.url))
        ));
        lines.push(match &self.memory.model_dir {
            None => "semantic memory: off (no model directory)".to_owned(),
            Some(dir) => format!(
                "semantic memory: model {}, {}",
                dir.display(),
                self.memory.qdrant_url.as_ref().map_or_else(
                    || format!("embedded index in {}", self.memory.index_dir.display()),
                    |u| format!("Qdrant at {u} ({})", self.memory.collection)
                )
            ),
        });
        lines.join("\n")
    }
}

fn workflow_config(file: &File) -> Result<WorkflowConfig, (String, String)> {
    let mut w = WorkflowConfig::default();
    let p = &file.policy;
    w.policy.allowlist = p.auto_approve.clone();
    if let Some(d) = p.max_auto_downtime {
        w.policy.max_auto_downtime = d;
    }
    if let Some(n) = p.max_auto_per_minute {
        w.policy.max_auto_per_minute = n;
    }
    if let Some(n) = p.max_auto_per_hour {
        w.policy.max_auto_per_hour = n;
    }
    if let Some(d) = p.service_cooldown {
        w.policy.service_cooldown = d;
    }
    if let Some(d) = p.target_cooldown {
        w.target_cooldown = d;
    }
    if let Some(d) = p.loop_guard_window {
        w.policy.loop_guard_window = d;
    }
    let b = &p.breaker;
    if let Some(t) = b.failure_threshold {
        if !(0.0..=1.0).contains(&t) {
            return Err(("policy.breaker.failure_threshold".into(), format!("{t} is not between 0 and 1")));
        }
        w.policy.breaker.failure_threshold = t;
    }
    if let Some(d) = b.window {
        w.policy.breaker.window = d;
    }
    if let Some(n) = b.min_outcomes {
        w.policy.breaker.min_outcomes = n;
    }
    if let Some(d) = b.cool_down {
        w.policy.breaker.cool_down = d;
    }
    if let Some(d) = file.approval.timeout {
        if d.is_zero() {
            return Err(("approval.timeout".into(), "a timeout of 0 would escalate every approval at once".into()));
        }
        w.approval_timeout = d;
    }
    let v = &file.verify;
    if let Some(d) = v.window {
        w.verify_window = d;
    }
    if let Some(d) = v.interval {
        if d.is_zero() || d > w.verify_window {
            return Err(("verify.interval".into(), "the interval must be above 0 and within the window".into()));
        }
        w.verify_interval = d;
    }
    if let Some(n) = v.consecutive {
        if n == 0 {
            return Err(("verify.consecutive".into(), "at least one recovered reading is needed".into()));
        }
        w.verify.consecutive = n;
    }
    if let Some(s) = v.sigma_tolerance {
        if !(s.is_finite() && s > 0.0) {
            return Err(("verify.sigma_tolerance".into(), format!("{s} is not above 0")));
        }
        w.verify.sigma_tolerance = s;
    }
    if let Some(n) = v.max_rollbacks {
        w.max_rollbacks = n;
    }
    Ok(w)
}

/// The executors' configuration, guardrails included; errors name the field.
fn executors_config(x: &ExecutorsSection, env: Env<'_>) -> Result<executors::ExecutorsConfig, (String, String)> {
    if x.allowlist.is_empty() {
        return Err(("allowlist".into(), "`allowlist` is empty: no target could ever be acted on".into()));
    }
    if x.aws.is_none() && x.kubernetes.is_none() && x.webhook.is_none() {
        return Err((String::new(), "configure `aws`, `kubernetes`, `webhook` or several".into()));
    }
    let mut rails = executors::Guardrails { allowlist: x.allowlist.clone(), dry_run: x.dry_run, ..Default::default() };
    if let Some(f) = x.max_scale_factor {
        if !(f.is_finite() && f >= 1.0) {
            return Err(("max_scale_factor".into(), format!("{f} is not a factor of 1 or more")));
        }
        rails.max_scale_factor = f;
    }
    if let Some(n) = x.max_nodes_cordoned {
        rails.max_nodes_cordoned = n;
    }
    let aws = x.aws.as_ref().map(|a| {
        let mut c = executors::aws::AwsConfig {
            region: a.region.clone(),
            endpoint_url: a.endpoint_url.clone(),
            ..Default::default()
        };
        if let Some(d) = a.wait_timeout {
            c.wait_timeout = d;
        }
        c
    });
    let kubernetes = x.kubernetes.as_ref().map(|k| {
        let mut c = executors::kubernetes::KubeConfig::default();
        if let Some(d) = k.wait_timeout {
            c.wait_timeout = d;
        }
        c
    });
    let webhook = match &x.webhook {
        Some(w) => {
            if let Some((i, k)) = w.kinds.iter().enumerate().find(|(_, k)| !executors::KINDS.contains(&k.as_str())) {
                return Err((format!("webhook.kinds[{i}]"), format!("`{k}` is not one of {:?}", executors::KINDS)));
            }
            check_url(&w.url).map_err(|m| ("webhook.url".to_owned(), m))?;
            let config = executors::webhook::WebhookConfig {
                url: w.url.clone(),
                token: env("SENTINEL_WEBHOOK_TOKEN"),
                timeout: w.timeout.unwrap_or(Duration::from_secs(10)),
            };
            Some((config, w.kinds.clone()))
        }
        None => None,
    };
    Ok(executors::ExecutorsConfig { aws, kubernetes, webhook, guardrails: rails, ..Default::default() })
}

/// Who may approve in Slack: the file's `anyone` and `by_severity`, and each
/// service's own approvers from the catalogue.
fn approvers(file: &File, catalog: &Catalog) -> api::slack::Approvers {
    let a = &file.slack.approvers;
    api::slack::Approvers {
        anyone: a.anyone.clone(),
        by_service: catalog
            .services()
            .filter_map(|s| Some((s.name.clone(), s.slack.as_ref()?.approvers.clone())))
            .filter(|(_, v)| !v.is_empty())
            .collect(),
        by_severity: a.by_severity.iter().map(|(s, v)| (format!("{s:?}").to_lowercase(), v.clone())).collect(),
    }
}

/// An endpoint URL: https (rustls, system roots), or http for local relays and tests.
fn check_url(url: &str) -> Result<(), String> {
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err(format!("`{url}` is not an http:// or https:// URL"));
    }
    Ok(())
}

/// The client for outbound notifications: a request that hangs is abandoned
/// after 10 s and retried by the relay, well inside its claim on the message.
fn http_client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| format!("building the HTTP client: {e}"))
}

#[cfg(test)]
#[path = "config/tests.rs"]
mod tests;
