use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use engine::Timestamp;
use nodes::incident::{Detection, Source, Tier};

use super::*;

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../sentinel.example.yaml")
}

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: BTreeMap<String, String> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    move |name: &str| map.get(name).cloned()
}

/// A scratch directory with `sentinel.yaml` holding `text`.
struct Scratch(PathBuf);

impl Scratch {
    fn new(text: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("sentinel-config-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("sentinel.yaml"), text).unwrap();
        Scratch(dir)
    }

    fn file(&self) -> PathBuf {
        self.0.join("sentinel.yaml")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn alert(name: &str, labels: &[(&str, &str)]) -> Detection {
    Detection {
        service: labels.iter().find(|(k, _)| *k == "service").map_or("x", |(_, v)| v).to_owned(),
        anomaly_type: "alert".into(),
        metric: name.into(),
        observed: 1.0,
        baseline_mean: 0.0,
        baseline_stddev: 0.0,
        started_at: Timestamp(0),
        source: Source::Alertmanager {
            group_key: "g".into(),
            alertname: name.into(),
            fingerprints: vec![],
            expr: None,
            group_labels: Default::default(),
        },
        labels: labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        annotations: BTreeMap::new(),
    }
}

#[test]
fn every_field_of_the_example_file_lands_where_it_belongs() {
    let env = env_of(&[
        ("DATABASE_URL", "postgres://db.internal/sentinel"),
        ("CLICKHOUSE_PASSWORD", "ch-secret"),
        ("SENTINEL_WEBHOOK_TOKEN", "hook-token"),
        ("SLACK_SIGNING_SECRET", "signing"),
        ("SLACK_BOT_TOKEN", "xoxb-1"),
        ("PAGERDUTY_ROUTING_KEY", "pd-key"),
        ("SENTINEL_INSTANCE_ID", "replica-0"),
        ("PROMETHEUS_PASSWORD", "prom-pass"),
    ]);
    let c = Config::load(Some(&example()), &env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.database_url, "postgres://db.internal/sentinel");
    assert_eq!((c.rate_limit.per_second.get(), c.rate_limit.burst.get()), (20, 40));

    let kafka = c.telemetry.kafka.as_ref().unwrap();
    assert_eq!(
        (kafka.brokers.as_str(), kafka.topic.as_str(), kafka.group.as_str()),
        ("127.0.0.1:9092", "sentinel.events", "sentinel")
    );
    let ch = c.telemetry.clickhouse.as_ref().unwrap();
    assert_eq!((ch.url.as_str(), ch.database.as_str()), ("http://127.0.0.1:8123", "sentinel"));
    assert_eq!((ch.user.as_deref(), ch.password.as_deref()), (Some("default"), Some("ch-secret")));
    assert_eq!(c.telemetry.capacity, 200_000);
    assert_eq!(c.telemetry.instance_id, "replica-0");

    // The catalogue: tiers, owners, dependencies, placements.
    let checkout = c.catalog.service("checkout").unwrap();
    assert_eq!((checkout.tier, checkout.owners.as_slice()), (Tier::Tier1, ["team-payments".to_owned()].as_slice()));
    assert_eq!(c.catalog.tier("ledger"), Tier::Tier3);
    assert_eq!(c.catalog.tier("unknown"), Tier::Tier2);
    assert_eq!(c.catalog.graph().upstream("checkout"), ["inventory", "payments"]);
    assert_eq!(c.catalog.graph().downstream("payments"), ["checkout"]);
    let d = |service: &str, labels: &[(&str, &str)]| {
        let mut d = alert("X", labels);
        d.service = service.into();
        d
    };
    let t = |template: &str, det: &Detection| c.catalog.target(template, det);
    assert_eq!(t("kubernetes:{namespace}/{deployment}", &d("checkout", &[])).unwrap(), "kubernetes:shop/checkout-web");
    assert_eq!(t("ecs:{cluster}/{ecs_service}", &d("payments", &[])).unwrap(), "ecs:prod/payments-api");
    assert_eq!(t("kubernetes:{namespace}/{deployment}", &d("inventory", &[])).unwrap(), "kubernetes:shop/inventory");
    assert_eq!(t("kubernetes:{namespace}/{claim}", &d("inventory", &[])).unwrap(), "kubernetes:shop/inventory-data");
    assert!(
        t("kubernetes:{namespace}/{claim}", &d("checkout", &[("persistentvolumeclaim", "x")])).is_err(),
        "a label adds no claim"
    );
    assert_eq!(t("ec2:{region}/{instance}", &d("ledger", &[])).unwrap(), "ec2:eu-west-1/i-0abc1234def567890");
    assert_eq!(
        t("ec2:{region}/{instance}", &d("reports", &[("instance_id", "i-0f00")])).unwrap(),
        "ec2:eu-west-1/i-0f00"
    );
    let tags = c.catalog.ec2_tags("reports").unwrap();
    assert_eq!((tags["Service"].as_str(), tags["Env"].as_str()), ("reports", "prod"));
    assert_eq!(
        t("kubernetes:{namespace}/{deployment}", &d("search", &[("namespace", "prod")])).unwrap(),
        "kubernetes:default/search",
        "unlisted services run where `unlisted_services` says, whatever their labels"
    );

    // The team's runbook answers its own alert, on checkout only.
    assert_eq!(c.runbooks.team_count(), 1);
    let chosen = |a: &Detection| c.runbooks.choose(a, &BTreeMap::new()).map(|r| r.id.clone());
    assert_eq!(
        chosen(&alert("HighLatency", &[("service", "checkout"), ("severity", "page")])).as_deref(),
        Some("checkout-high-latency")
    );
    assert_eq!(chosen(&alert("HighLatency", &[("service", "checkout"), ("severity", "info")])), None);
    assert_eq!(chosen(&alert("HighLatency", &[("service", "search")])), None);

    let w = &c.workflow;
    assert_eq!(w.policy.allowlist, executors::Allowlist::parse(&["kubernetes:shop/*"]).unwrap());
    assert_eq!(w.policy.max_auto_downtime, Duration::from_secs(60));
    assert_eq!((w.policy.max_auto_per_minute, w.policy.max_auto_per_hour), (5, 30));
    assert_eq!(w.policy.service_cooldown, Duration::from_secs(600));
    assert_eq!(w.target_cooldown, Duration::from_secs(60));
    assert_eq!(w.policy.loop_guard_window, Duration::from_secs(6 * 3600));
    assert_eq!(w.policy.breaker.failure_threshold, 0.1);
    assert_eq!(w.policy.breaker.window, Duration::from_secs(3600));
    assert_eq!(w.policy.breaker.min_outcomes, 5);
    assert_eq!(w.policy.breaker.cool_down, Duration::from_secs(900));
    assert_eq!(w.approval_timeout, Duration::from_secs(900));
    assert_eq!((w.verify_window, w.verify_interval), (Duration::from_secs(600), Duration::from_secs(30)));
    assert_eq!((w.verify.consecutive, w.verify.sigma_tolerance, w.max_rollbacks), (3, 2.0, 2));

    let x = c.executors.as_ref().unwrap();
    assert!(x.guardrails.dry_run);
    assert_eq!(
        x.guardrails.allowlist,
        executors::Allowlist::parse(&["kubernetes:shop/*", "ecs:prod/*", "ec2:eu-west-1/*"]).unwrap()
    );
    assert_eq!((x.guardrails.max_scale_factor, x.guardrails.max_nodes_cordoned), (2.0, 1));
    let aws = x.aws.as_ref().unwrap();
    assert_eq!((aws.region.as_deref(), aws.wait_timeout), (Some("eu-west-1"), Duration::from_secs(300)));
    assert_eq!(x.kubernetes.as_ref().unwrap().wait_timeout, Duration::from_secs(300));
    let (hook, kinds) = x.webhook.as_ref().unwrap();
    assert_eq!(
        (hook.url.as_str(), hook.token.as_deref(), hook.timeout),
        ("https://automation.internal/sentinel", Some("hook-token"), Duration::from_secs(10))
    );
    assert_eq!(kinds, &["ec2"]);

    let slack = c.slack.as_ref().unwrap();
    assert_eq!(slack.signing_secret, "signing");
    assert_eq!(slack.approvers.anyone, ["U0ONCALL"]);
    assert_eq!(slack.approvers.by_service["checkout"], ["U0ALICE", "U0BOB"]);
    assert_eq!(slack.approvers.by_severity["sev1"], ["U0INCIDENTCMD"]);
    let api = c.slack_api.as_ref().unwrap();
    assert_eq!((api.base_url.as_str(), api.token.as_str()), ("https://slack.com", "xoxb-1"));
    assert_eq!((api.channel_for("checkout"), api.channel_for("payments")), ("C0PAYMENTS", "C0INCIDENTS"));
    let pd = c.pagerduty.as_ref().unwrap();
    assert_eq!((pd.base_url.as_str(), pd.routing_key.as_str()), ("https://events.pagerduty.com", "pd-key"));
    let prom = c.prometheus.as_ref().unwrap();
    assert_eq!(prom.url, "http://prometheus.monitoring:9090");
    assert!(
        matches!(&prom.auth, telemetry::prometheus::Auth::Basic { user, password: Some(p) } if user == "sentinel" && p == "prom-pass")
    );
    assert_eq!((prom.timeout, prom.step), (Duration::from_secs(10), Duration::from_secs(15)));
    assert_eq!(prom.default_query, telemetry::prometheus::DEFAULT_QUERY);
    assert!(prom.queries["http_p99_ms"].starts_with("histogram_quantile(0.99"));
    assert_eq!(prom.deployments.as_deref(), Some(telemetry::prometheus::KUBE_STATE_DEPLOYMENTS));
    assert_eq!(c.metrics_from, nodes::catalog::MetricsFrom::Prometheus);
    assert_eq!(c.catalog.metrics_from("ledger"), Some(nodes::catalog::MetricsFrom::Sentinel));
    assert_eq!(c.catalog.metrics_from("checkout"), None);
    assert!(c.summary().contains("services: 5 (checkout, inventory, ledger, payments, reports)"), "{}", c.summary());
}

#[test]
fn the_environment_overrides_urls_in_the_file() {
    let env = env_of(&[
        ("DATABASE_URL", "sqlite://x.db"),
        ("KAFKA_BROKERS", "kafka-0:9092"),
        ("SENTINEL_KAFKA_TOPIC", "t2"),
        ("CLICKHOUSE_URL", "http://ch:8123"),
        ("SENTINEL_CLICKHOUSE_DATABASE", "db2"),
        ("SLACK_BOT_TOKEN", "xoxb"),
        ("SENTINEL_SLACK_API_URL", "http://127.0.0.1:1"),
        ("PAGERDUTY_ROUTING_KEY", "k"),
        ("SENTINEL_PAGERDUTY_URL", "http://127.0.0.1:2"),
        ("PROMETHEUS_URL", "http://127.0.0.1:3"),
        ("PROMETHEUS_TOKEN", "prom-token"),
    ]);
    let c = Config::load(Some(&example()), &env).unwrap();
    let kafka = c.telemetry.kafka.unwrap();
    assert_eq!(
        (kafka.brokers.as_str(), kafka.topic.as_str(), kafka.group.as_str()),
        ("kafka-0:9092", "t2", "sentinel")
    );
    let ch = c.telemetry.clickhouse.unwrap();
    assert_eq!((ch.url.as_str(), ch.database.as_str()), ("http://ch:8123", "db2"));
    assert_eq!(c.slack_api.unwrap().base_url, "http://127.0.0.1:1");
    assert_eq!(c.pagerduty.unwrap().base_url, "http://127.0.0.1:2");
    let prom = c.prometheus.unwrap();
    assert_eq!(prom.url, "http://127.0.0.1:3");
    assert!(matches!(prom.auth, telemetry::prometheus::Auth::Bearer(ref t) if t == "prom-token"));
    let err =
        Config::load(Some(&example()), &env_of(&[("DATABASE_URL", "x"), ("CLICKHOUSE_URL", "ch:8123")])).err().unwrap();
    assert_eq!(err.to_string(), "CLICKHOUSE_URL: `ch:8123` is not an http:// or https:// URL");
}

#[test]
fn without_a_file_the_embedded_defaults_hold() {
    let dir = Scratch::new("");
    let data = dir.0.join("data");
    let c = Config::load(None, &env_of(&[("SENTINEL_DATA_DIR", data.to_str().unwrap())])).unwrap();
    assert_eq!(c.database_url, format!("sqlite://{}", data.join("sentinel.db").display()));
    assert!(c.telemetry.kafka.is_none() && c.telemetry.clickhouse.is_none() && c.executors.is_none());
    assert!(c.slack.is_none() && c.slack_api.is_none() && c.pagerduty.is_none());
    assert_eq!(c.runbooks.team_count(), 0);
    let mut d = alert("X", &[("namespace", "prod")]);
    d.service = "search".into();
    assert_eq!(c.catalog.target("kubernetes:{namespace}/{deployment}", &d).unwrap(), "kubernetes:default/search");
    assert_eq!(c.workflow.approval_timeout, WorkflowConfig::default().approval_timeout);
    let err = Config::load(None, &env_of(&[("DATABASE_URL", "x"), ("SLACK_BOT_TOKEN", "xoxb")])).err().unwrap();
    assert_eq!(err.to_string(), "SLACK_BOT_TOKEN is set but `slack.channel` is not: where would messages go?");
}

#[test]
fn a_data_dir_is_relative_to_the_file() {
    let dir = Scratch::new("data_dir: state\n");
    let c = Config::load(Some(&dir.file()), &env_of(&[])).unwrap();
    assert_eq!(c.database_url, format!("sqlite://{}", dir.0.join("state").join("sentinel.db").display()));
    let mut d = alert("X", &[]);
    d.service = "search".into();
    assert!(
        c.catalog.target("kubernetes:{namespace}/{deployment}", &d).is_err(),
        "a file without unlisted_services acts on no unlisted service"
    );
}

#[track_caller]
fn refused(text: &str, env: &[(&str, &str)], expected: &str) {
    let dir = Scratch::new(text);
    let err = Config::load(Some(&dir.file()), &env_of(env)).err().expect("refused");
    let shown = err.to_string();
    let prefix = format!("{}:", dir.file().display());
    let rest = shown.strip_prefix(&prefix).unwrap_or_else(|| panic!("`{shown}` does not start with the file"));
    assert!(rest.starts_with(expected), "`{rest}` is not `{expected}…`");
}

#[test]
fn semantic_memory_is_configured_by_the_file_and_the_environment() {
    let c = Config::load(Some(&example()), &env_of(&[])).unwrap();
    let m = &c.memory;
    assert_eq!(m.model_dir.as_deref(), Some(Path::new("/opt/sentinel/model")));
    assert_eq!(m.qdrant_url.as_deref(), Some("http://127.0.0.1:6334"));
    assert_eq!(m.collection, "sentinel_incidents");
    assert_eq!((m.join.same_service, m.join.caller_symptom), (0.45, 0.40));
    assert_eq!(m.join.window, Duration::from_secs(3600));
    assert!(m.index_dir.ends_with(".sentinel/memory"), "{}", m.index_dir.display());

    let env = env_of(&[
        ("SENTINEL_MODEL_DIR", "/models/minilm"),
        ("QDRANT_URL", "http://qdrant:6334"),
        ("QDRANT_API_KEY", "k"),
    ]);
    let c = Config::load(Some(&example()), &env).unwrap();
    assert_eq!(c.memory.model_dir.as_deref(), Some(Path::new("/models/minilm")));
    assert_eq!(c.memory.qdrant_url.as_deref(), Some("http://qdrant:6334"));
    assert_eq!(c.memory.qdrant_api_key.as_deref(), Some("k"));

    // No file, no variable: memory is off, and the embedded index would live under the data directory.
    let c = Config::load(None, &env_of(&[("SENTINEL_DATA_DIR", "/var/lib/sentinel")])).unwrap();
    assert_eq!(c.memory.model_dir, None);
    assert_eq!(c.memory.qdrant_url, None);
    assert_eq!(c.memory.index_dir, Path::new("/var/lib/sentinel/memory"));
    assert_eq!(c.memory.join, nodes::intake::JoinConfig::default());
}

#[test]
fn bad_files_name_the_line_and_column() {
    let db = [("DATABASE_URL", "sqlite://unused.db")];
    refused(
        "server:\n  burst: 4\n  brust: 5\n",
        &db,
        "3:3: unknown field `brust`, expected one of rate_per_sec, burst",
    );
    refused("services:\n  - name: a\n    tier: first\n", &db, "3:11: tier `first` is not 1, 2 or 3");
    refused("services:\n  - name: a\n    tier: 7\n", &db, "3:11: tier 7 is not 1, 2 or 3");
    refused(
        "services:\n  - name: a\n  - name: b\n    depends_on:\n      - a\n      - c\n",
        &db,
        "6:9: `b` depends on `c`, which is not a listed service",
    );
    refused(
        "services:\n  - name: a\n    runs_on:\n      kubernetes: { namespace: \"\" }\n",
        &db,
        "4:32: a namespace is a non-empty name without `/`",
    );
    refused("approval:\n  timeout: soon\n", &db, "2:3: invalid value: string \"soon\", expected a duration");
    refused("policy:\n  auto_approve: [\"ecs:[x\"]\n", &db, "2:18: ");
    refused("executors:\n  allowlist: [\"ecs:*\"]\n", &db, "2:3: configure `aws`, `kubernetes`, `webhook` or several");
    refused(
        "executors:\n  allowlist: [\"ecs:*\"]\n  webhook: { url: \"h\", kinds: [azure] }\n",
        &db,
        "3:32: `azure` is not one of [\"ec2\", \"ecs\", \"kubernetes\", \"mock\"]",
    );
    refused("runbooks:\n  dirs: [nowhere]\n", &db, "2:10: ");
    refused("prometheus:\n  user: x\n", &db, "2:3: `prometheus` needs a `url` (or PROMETHEUS_URL)");
    refused("metrics_from: prometheus\n", &db, "1:15: metrics from `prometheus`, but no Prometheus is configured");
    refused("memory:\n  join:\n    same_service: 1.5\n", &db, "3:19: 1.5 is not a cosine similarity (from -1 to 1)");
    refused("memory:\n  qdrant:\n    url: qdrant:6334\n", &db, "3:10: ");
    refused("memory:\n  modeldir: x\n", &db, "2:3: unknown field `modeldir`");
    refused(
        "slack:\n  approvers: { anyone: [] }\n",
        &[("DATABASE_URL", "x"), ("SLACK_SIGNING_SECRET", "s")],
        "2:3: SLACK_SIGNING_SECRET is set but no approver is configured (`slack.approvers` or a service's \
         `slack.approvers`): nobody could approve in Slack",
    );
}

#[test]
fn a_broken_team_runbook_is_named_with_its_own_position() {
    let dir = Scratch::new("runbooks:\n  dirs: [team]\n");
    std::fs::create_dir_all(dir.0.join("team")).unwrap();
    std::fs::write(
        dir.0.join("team/bad.yaml"),
        "id: x\ntitle: X\nmatch:\n  alerts:\n    - { name: A, matchers: ['sev=~\"(\"']}\n",
    )
    .unwrap();
    let err = Config::load(Some(&dir.file()), &env_of(&[("DATABASE_URL", "x")])).err().unwrap().to_string();
    assert!(err.starts_with(&format!("{}:5:", dir.0.join("team/bad.yaml").display())), "{err}");
    assert!(err.contains("not a regular expression"), "{err}");
}
