//! Configuration the binary reads from the environment. Only the binary reads env.

use std::path::PathBuf;

/// Where the embedded SQLite database lives when `DATABASE_URL` is unset.
pub fn data_dir() -> PathBuf {
    std::env::var_os("SENTINEL_DATA_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(".sentinel"))
}

/// `DATABASE_URL` (sqlx's convention), or the embedded SQLite file under the data dir.
pub fn database_url() -> anyhow::Result<String> {
    match std::env::var("DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => Ok(url),
        _ => {
            let dir = data_dir();
            std::fs::create_dir_all(&dir)
                .map_err(|e| anyhow::anyhow!("cannot create data dir {}: {e}", dir.display()))?;
            Ok(format!("sqlite://{}", dir.join("sentinel.db").display()))
        }
    }
}

/// Slack interactivity, when `SLACK_SIGNING_SECRET` is set. Approvers come from
/// `SENTINEL_SLACK_APPROVERS_FILE` (YAML: `anyone`, `by_service`, `by_severity`,
/// each listing Slack user ids) and/or `SENTINEL_SLACK_APPROVERS` (user ids
/// separated by commas, allowed for every incident).
pub fn slack(
    engine: engine::Engine,
    access: crate::access::Access,
) -> anyhow::Result<Option<crate::slack::SlackState>> {
    let Some(secret) = std::env::var("SLACK_SIGNING_SECRET").ok().filter(|s| !s.trim().is_empty()) else {
        return Ok(None);
    };
    let mut approvers = match std::env::var("SENTINEL_SLACK_APPROVERS_FILE").ok().filter(|s| !s.trim().is_empty()) {
        Some(path) => {
            let text = std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("reading {path}: {e}"))?;
            serde_yaml_ng::from_str::<crate::slack::Approvers>(&text).map_err(|e| anyhow::anyhow!("{path}: {e}"))?
        }
        None => crate::slack::Approvers::default(),
    };
    approvers.anyone.extend(
        std::env::var("SENTINEL_SLACK_APPROVERS")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
    );
    if approvers.is_empty() {
        anyhow::bail!(
            "SLACK_SIGNING_SECRET is set but no approver is configured (SENTINEL_SLACK_APPROVERS or \
             SENTINEL_SLACK_APPROVERS_FILE): nobody could approve in Slack"
        );
    }
    Ok(Some(crate::slack::SlackState { engine, access, signing_secret: secret, approvers }))
}

/// Slack's Web API for the outbox relay, when `SLACK_BOT_TOKEN` is set: messages go
/// to `SENTINEL_SLACK_CHANNEL` through `SENTINEL_SLACK_API_URL`.
pub fn slack_api() -> anyhow::Result<Option<crate::relay::SlackClient>> {
    let Some(token) = std::env::var("SLACK_BOT_TOKEN").ok().filter(|s| !s.trim().is_empty()) else {
        return Ok(None);
    };
    let channel = std::env::var("SENTINEL_SLACK_CHANNEL")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| anyhow::anyhow!("SLACK_BOT_TOKEN is set but SENTINEL_SLACK_CHANNEL is not"))?;
    let base_url = std::env::var("SENTINEL_SLACK_API_URL").unwrap_or_else(|_| "https://slack.com".to_owned());
    check_url("SENTINEL_SLACK_API_URL", &base_url)?;
    Ok(Some(crate::relay::SlackClient { base_url, token, channel, http: http_client()? }))
}

/// PagerDuty escalation, when `PAGERDUTY_ROUTING_KEY` is set, through
/// `SENTINEL_PAGERDUTY_URL`.
pub fn pagerduty() -> anyhow::Result<Option<crate::relay::PagerDuty>> {
    let Some(routing_key) = std::env::var("PAGERDUTY_ROUTING_KEY").ok().filter(|s| !s.trim().is_empty()) else {
        return Ok(None);
    };
    let base_url =
        std::env::var("SENTINEL_PAGERDUTY_URL").unwrap_or_else(|_| "https://events.pagerduty.com".to_owned());
    check_url("SENTINEL_PAGERDUTY_URL", &base_url)?;
    Ok(Some(crate::relay::PagerDuty { base_url, routing_key, http: http_client()? }))
}

/// Requests per API key: `SENTINEL_API_RATE_PER_SEC` (default 20) with bursts
/// up to `SENTINEL_API_BURST` (default 40).
pub fn rate_limit() -> anyhow::Result<crate::security::RateLimit> {
    let mut limit = crate::security::RateLimit::default();
    let read = |name: &str| -> anyhow::Result<Option<std::num::NonZeroU32>> {
        match std::env::var(name) {
            Ok(v) => v
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| anyhow::anyhow!("{name} must be a whole number above 0, not `{v}`")),
            Err(_) => Ok(None),
        }
    };
    if let Some(n) = read("SENTINEL_API_RATE_PER_SEC")? {
        limit.per_second = n;
    }
    if let Some(n) = read("SENTINEL_API_BURST")? {
        limit.burst = n;
    }
    Ok(limit)
}

/// An endpoint URL: https (rustls, system roots), or http for local relays and tests.
fn check_url(name: &str, url: &str) -> anyhow::Result<()> {
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        anyhow::bail!("{name} must be an http:// or https:// URL, not `{url}`");
    }
    Ok(())
}

/// The client for outbound notifications: a request that hangs is abandoned
/// after 10 s and retried by the relay, well inside its claim on the message.
fn http_client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .map_err(|e| anyhow::anyhow!("building the HTTP client: {e}"))
}

/// The telemetry path: Kafka when `KAFKA_BROKERS` is set (topic
/// `SENTINEL_KAFKA_TOPIC`, group `SENTINEL_KAFKA_GROUP`), ClickHouse when
/// `CLICKHOUSE_URL` is set (database `SENTINEL_CLICKHOUSE_DATABASE`, user
/// `CLICKHOUSE_USER`, password `CLICKHOUSE_PASSWORD`); the embedded channel
/// and memory store otherwise.
pub fn telemetry() -> anyhow::Result<crate::ingest::TelemetryConfig> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let mut config = crate::ingest::TelemetryConfig::default();
    if let Some(brokers) = var("KAFKA_BROKERS") {
        let mut kafka = telemetry::kafka::KafkaConfig::new(brokers);
        if let Some(topic) = var("SENTINEL_KAFKA_TOPIC") {
            kafka.topic = topic;
        }
        if let Some(group) = var("SENTINEL_KAFKA_GROUP") {
            kafka.group = group;
        }
        config.kafka = Some(kafka);
    }
    if let Some(id) = var("SENTINEL_INSTANCE_ID") {
        config.instance_id = id;
    }
    if let Some(url) = var("CLICKHOUSE_URL") {
        check_url("CLICKHOUSE_URL", &url)?;
        let mut ch = telemetry::store::ClickHouseConfig::new(url);
        if let Some(db) = var("SENTINEL_CLICKHOUSE_DATABASE") {
            ch.database = db;
        }
        ch.user = var("CLICKHOUSE_USER");
        ch.password = var("CLICKHOUSE_PASSWORD");
        config.clickhouse = Some(ch);
    }
    if let Some(n) = var("SENTINEL_INGEST_CAPACITY") {
        config.capacity = n
            .trim()
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| anyhow::anyhow!("SENTINEL_INGEST_CAPACITY must be a whole number above 0, not `{n}`"))?;
    }
    Ok(config)
}

/// `SENTINEL_EXECUTORS_FILE`: the executors `serve` and `worker` act through.
/// Without it every action is a dry run through the mock backend.
///
/// ```yaml
/// dry_run: false              # default true: live actions are an explicit choice
/// allowlist: ["kubernetes:prod/*", "ecs:prod-cluster/*"]   # targets that may be acted on
/// auto_approve: ["kubernetes:prod/*"]                      # targets the policy may approve alone
/// cooldown_secs: 600          # no auto-approval on a service this soon after an action on it
/// max_scale_factor: 2.0
/// max_nodes_cordoned: 0
/// aws: { region: us-east-1 }  # EC2 and ECS; credentials from the standard chain
/// kubernetes: {}              # the kubeconfig, or the in-cluster service account
/// webhook: { url: "https://automation.internal/sentinel", kinds: [kubernetes] }  # optional
/// target_cooldown_secs: 60    # least time between two incidents' actions on one target
/// ```
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutorsFile {
    #[serde(default = "yes")]
    pub dry_run: bool,
    pub allowlist: executors::Allowlist,
    #[serde(default)]
    pub auto_approve: executors::Allowlist,
    pub cooldown_secs: Option<u64>,
    /// The policy's limits on auto-approvals, fleet-wide.
    pub max_auto_per_minute: Option<u32>,
    pub max_auto_per_hour: Option<u32>,
    pub max_scale_factor: Option<f64>,
    pub max_nodes_cordoned: Option<u64>,
    pub aws: Option<AwsSection>,
    pub kubernetes: Option<KubeSection>,
    pub webhook: Option<WebhookSection>,
    /// Least time between two incidents' actions on one target, fleet-wide.
    pub target_cooldown_secs: Option<u64>,
}

/// Actions of the listed kinds go to a team's own automation over HTTP
/// (see `executors::webhook`); the token comes from `SENTINEL_WEBHOOK_TOKEN`.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSection {
    pub url: String,
    pub kinds: Vec<String>,
    pub timeout_secs: Option<u64>,
}

#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsSection {
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
    pub wait_timeout_secs: Option<u64>,
}

#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubeSection {
    pub wait_timeout_secs: Option<u64>,
}

fn yes() -> bool {
    true
}

impl ExecutorsFile {
    pub fn read(path: &std::path::Path) -> anyhow::Result<ExecutorsFile> {
        let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        let file: ExecutorsFile =
            serde_yaml_ng::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        if file.allowlist.is_empty() {
            anyhow::bail!("{}: `allowlist` is empty: no target could ever be acted on", path.display());
        }
        if file.aws.is_none() && file.kubernetes.is_none() && file.webhook.is_none() {
            anyhow::bail!("{}: configure `aws`, `kubernetes`, `webhook` or several", path.display());
        }
        if let Some(hook) = &file.webhook {
            if let Some(k) = hook.kinds.iter().find(|k| !executors::KINDS.contains(&k.as_str())) {
                anyhow::bail!("{}: webhook kind `{k}` is not one of {:?}", path.display(), executors::KINDS);
            }
        }
        Ok(file)
    }

    /// The executors' configuration, guardrails included.
    pub fn executors_config(&self) -> executors::ExecutorsConfig {
        let mut rails = executors::Guardrails { allowlist: self.allowlist.clone(), ..Default::default() };
        rails.dry_run = self.dry_run;
        if let Some(f) = self.max_scale_factor {
            rails.max_scale_factor = f;
        }
        if let Some(n) = self.max_nodes_cordoned {
            rails.max_nodes_cordoned = n;
        }
        let aws = self.aws.as_ref().map(|a| {
            let mut c = executors::aws::AwsConfig {
                region: a.region.clone(),
                endpoint_url: a.endpoint_url.clone(),
                ..Default::default()
            };
            if let Some(s) = a.wait_timeout_secs {
                c.wait_timeout = std::time::Duration::from_secs(s);
            }
            c
        });
        let kubernetes = self.kubernetes.as_ref().map(|k| {
            let mut c = executors::kubernetes::KubeConfig::default();
            if let Some(s) = k.wait_timeout_secs {
                c.wait_timeout = std::time::Duration::from_secs(s);
            }
            c
        });
        let webhook = self.webhook.as_ref().map(|w| {
            let config = executors::webhook::WebhookConfig {
                url: w.url.clone(),
                token: std::env::var("SENTINEL_WEBHOOK_TOKEN").ok().filter(|t| !t.is_empty()),
                timeout: std::time::Duration::from_secs(w.timeout_secs.unwrap_or(10)),
            };
            (config, w.kinds.clone())
        });
        executors::ExecutorsConfig { aws, kubernetes, webhook, guardrails: rails, ..Default::default() }
    }
}

pub fn executors_file() -> anyhow::Result<Option<ExecutorsFile>> {
    match std::env::var("SENTINEL_EXECUTORS_FILE").ok().filter(|s| !s.trim().is_empty()) {
        Some(path) => ExecutorsFile::read(std::path::Path::new(&path)).map(Some),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_executors_file_becomes_guardrails() {
        let dir = std::env::temp_dir().join(format!("sentinel-exec-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("executors.yaml");
        std::fs::write(
            &path,
            "dry_run: false\nallowlist: [\"ecs:prod/*\"]\ncooldown_secs: 60\nmax_scale_factor: 1.5\n\
             aws: { region: eu-west-1, endpoint_url: \"http://127.0.0.1:5055\" }\n",
        )
        .unwrap();
        let file = ExecutorsFile::read(&path).unwrap();
        let c = file.executors_config();
        assert!(!c.guardrails.dry_run);
        assert_eq!(c.guardrails.allowlist, executors::Allowlist::parse(&["ecs:prod/*"]).unwrap());
        assert_eq!(file.cooldown_secs, Some(60));
        assert_eq!(c.guardrails.max_scale_factor, 1.5);
        assert_eq!(c.aws.unwrap().region.as_deref(), Some("eu-west-1"));
        assert!(c.kubernetes.is_none());

        std::fs::write(&path, "allowlist: [\"ecs:prod/*\"]\naws: {}\n").unwrap();
        assert!(ExecutorsFile::read(&path).unwrap().dry_run, "dry run unless said otherwise");
        std::fs::write(&path, "allowlist: []\naws: {}\n").unwrap();
        assert!(ExecutorsFile::read(&path).unwrap_err().to_string().contains("allowlist"));
        std::fs::write(&path, "allowlist: [\"x:y/*\"]\n").unwrap();
        assert!(ExecutorsFile::read(&path).unwrap_err().to_string().contains("aws"));
        std::fs::write(&path, "allowlist: [\"x:y/*\"]\naws: {}\ndryrun: false\n").unwrap();
        assert!(ExecutorsFile::read(&path).unwrap_err().to_string().contains("dryrun"));
        std::fs::write(&path, "allowlist: [\"ecs:[prod\"]\naws: {}\n").unwrap();
        assert!(ExecutorsFile::read(&path).unwrap_err().to_string().contains("ecs:[prod"), "a bad pattern is named");
        let _ = std::fs::remove_dir_all(dir);
    }
}
