//! Prometheus as a metric source, over its HTTP API (`/api/v1/query`,
//! `/api/v1/query_range`, `/api/v1/rules`): the workflow's `MetricStore`
//! (a metric of a service is a PromQL query from a template), its
//! `Deployments` (ReplicaSets created, from kube-state-metrics), and its
//! `AlertRules` (an alert's expression, evaluated now).
//!
//! Errors: Prometheus away, timing out or answering 5xx is `Unavailable`
//! (the workflow waits it out); a query Prometheus refuses (400, 422) is
//! `Refused`.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use engine::Timestamp;
use nodes::catalog::Catalog;
use nodes::ports::{AlertRules, Deployment, Deployments, MetricStore, PortError};
use serde_json::Value;

/// How to reach Prometheus and what to ask it.
#[derive(Clone, Debug)]
pub struct PrometheusConfig {
    /// The server's base URL, e.g. `http://prometheus:9090`.
    pub url: String,
    pub auth: Auth,
    pub timeout: Duration,
    /// Resolution of range queries (at least; wider for long windows).
    pub step: Duration,
    /// The query of a metric without its own: `{metric}` and `{service}`
    /// are filled in.
    pub default_query: String,
    /// Queries by metric name, e.g. `http_p99_ms` → a `histogram_quantile`.
    pub queries: BTreeMap<String, String>,
    /// Deployments: an instant query whose series are a service's ReplicaSets
    /// with their creation time (seconds) as value; `{namespace}`,
    /// `{deployment}` and `{service}` from the catalogue. None: no deployments.
    pub deployments: Option<String>,
}

impl PrometheusConfig {
    pub fn new(url: impl Into<String>) -> PrometheusConfig {
        PrometheusConfig {
            url: url.into(),
            auth: Auth::None,
            timeout: Duration::from_secs(10),
            step: Duration::from_secs(15),
            default_query: DEFAULT_QUERY.to_owned(),
            queries: BTreeMap::new(),
            deployments: None,
        }
    }
}

/// A metric of a service, unless configured otherwise: the mean over the
/// service's series of that name, the scrape job being the service.
pub const DEFAULT_QUERY: &str = r#"avg({metric}{job="{service}"})"#;

/// The ReplicaSets of a Deployment, as kube-state-metrics exports them.
pub const KUBE_STATE_DEPLOYMENTS: &str =
    r#"kube_replicaset_created{namespace="{namespace}", replicaset=~"{deployment}-[a-z0-9]+"}"#;

#[derive(Clone)]
pub enum Auth {
    None,
    Basic { user: String, password: Option<String> },
    Bearer(String),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::None => f.write_str("None"),
            Auth::Basic { user, .. } => write!(f, "Basic({user})"),
            Auth::Bearer(_) => f.write_str("Bearer"),
        }
    }
}

/// One series of a query's answer: its labels and its samples.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub labels: BTreeMap<String, String>,
    pub samples: Vec<(Timestamp, f64)>,
}

#[derive(Clone)]
pub struct Prometheus {
    config: PrometheusConfig,
    catalog: Catalog,
    http: reqwest::Client,
}

impl Prometheus {
    pub fn new(config: PrometheusConfig, catalog: Catalog) -> Result<Prometheus, String> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(config.timeout)
            .build()
            .map_err(|e| format!("building the Prometheus client: {e}"))?;
        Ok(Prometheus { config, catalog, http })
    }

    async fn get(&self, path: &str, params: &[(&str, String)]) -> Result<Value, PortError> {
        let url = format!("{}{path}", self.config.url.trim_end_matches('/'));
        let mut req = self.http.get(&url).query(params);
        req = match &self.config.auth {
            Auth::None => req,
            Auth::Basic { user, password } => req.basic_auth(user, password.as_ref()),
            Auth::Bearer(token) => req.bearer_auth(token),
        };
        let resp = req.send().await.map_err(|e| PortError::Unavailable(format!("prometheus {path}: {e}")))?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        let why = || body["error"].as_str().unwrap_or("no error message").to_owned();
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Err(PortError::Unavailable(format!("prometheus {path}: HTTP {status}: {}", why())));
        }
        if !status.is_success() || body["status"] != "success" {
            return Err(PortError::Refused(format!("prometheus {path}: HTTP {status}: {}", why())));
        }
        Ok(body["data"].clone())
    }

    /// The series `expr` returns at `at`.
    pub async fn instant(&self, expr: &str, at: Timestamp) -> Result<Vec<Series>, PortError> {
        let data = self.get("/api/v1/query", &[("query", expr.to_owned()), ("time", seconds(at))]).await?;
        match data["resultType"].as_str() {
            Some("vector") => Ok(data["result"].as_array().into_iter().flatten().filter_map(series_of).collect()),
            Some("scalar") => Ok(sample(&data["result"])
                .into_iter()
                .map(|s| Series { labels: BTreeMap::new(), samples: vec![s] })
                .collect()),
            other => Err(PortError::Refused(format!("`{expr}` answers a {other:?}, not an instant vector"))),
        }
    }

    /// The series `expr` returns over `[from, to]`.
    pub async fn range(&self, expr: &str, from: Timestamp, to: Timestamp) -> Result<Vec<Series>, PortError> {
        // Prometheus answers at most 11,000 points per series.
        let span = Duration::from_millis(u64::try_from(to.0.saturating_sub(from.0)).unwrap_or(0));
        let step = self.config.step.max(span / 10_000).max(Duration::from_millis(1));
        let params = [
            ("query", expr.to_owned()),
            ("start", seconds(from)),
            ("end", seconds(to)),
            ("step", format!("{:.3}", step.as_secs_f64())),
        ];
        let data = self.get("/api/v1/query_range", &params).await?;
        if data["resultType"] != "matrix" {
            return Err(PortError::Refused(format!("`{expr}` does not answer a range vector")));
        }
        Ok(data["result"].as_array().into_iter().flatten().filter_map(series_of).collect())
    }

    /// The query for `metric` of `service`.
    pub fn query_for(&self, service: &str, metric: &str) -> String {
        let template = self.config.queries.get(metric).unwrap_or(&self.config.default_query);
        template.replace("{metric}", metric).replace("{service}", service)
    }
}

/// Prometheus's time: seconds since the epoch, to the millisecond.
fn seconds(t: Timestamp) -> String {
    format!("{}.{:03}", t.0.div_euclid(1000), t.0.rem_euclid(1000))
}

/// `[1700000000.123, "42.5"]` → (ms, value); NaN and stale values are no sample.
fn sample(v: &Value) -> Option<(Timestamp, f64)> {
    let at = v.get(0)?.as_f64()?;
    let value: f64 = v.get(1)?.as_str()?.parse().ok()?;
    value.is_finite().then_some((Timestamp((at * 1000.0).round() as i64), value))
}

fn series_of(v: &Value) -> Option<Series> {
    let labels =
        v["metric"].as_object()?.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned()))).collect();
    let samples = match (v.get("value"), v.get("values")) {
        (Some(one), _) => sample(one).into_iter().collect(),
        (None, Some(many)) => many.as_array()?.iter().filter_map(sample).collect(),
        _ => Vec::new(),
    };
    Some(Series { labels, samples })
}

#[async_trait]
impl MetricStore for Prometheus {
    /// The query's samples in `[from, to)`; several series are averaged per
    /// timestamp (a template should aggregate to one).
    async fn window(
        &self,
        service: &str,
        metric: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<(Timestamp, f64)>, PortError> {
        if to <= from {
            return Ok(Vec::new());
        }
        let series = self.range(&self.query_for(service, metric), from, to).await?;
        let mut by_time: BTreeMap<Timestamp, (f64, u32)> = BTreeMap::new();
        for (t, v) in series.iter().flat_map(|s| &s.samples) {
            let e = by_time.entry(*t).or_insert((0.0, 0));
            e.0 += v;
            e.1 += 1;
        }
        Ok(by_time
            .into_iter()
            .filter(|(t, _)| *t >= from && *t < to)
            .map(|(t, (sum, n))| (t, sum / f64::from(n)))
            .collect())
    }
}

#[async_trait]
impl Deployments for Prometheus {
    async fn since(&self, service: &str, from: Timestamp) -> Result<Vec<Deployment>, PortError> {
        let Some(template) = &self.config.deployments else { return Ok(Vec::new()) };
        let Some(kube) = self.catalog.placement(service).and_then(|p| p.kubernetes) else { return Ok(Vec::new()) };
        let expr = template
            .replace("{namespace}", &kube.namespace)
            .replace("{deployment}", kube.deployment.as_deref().unwrap_or(service))
            .replace("{service}", service);
        let now = engine::Clock::now(&engine::SystemClock);
        let mut out: Vec<Deployment> = self
            .instant(&expr, now)
            .await?
            .into_iter()
            .filter_map(|s| {
                let (_, created) = *s.samples.first()?;
                let at = Timestamp((created * 1000.0) as i64);
                let version = s.labels.get("replicaset").cloned().unwrap_or_default();
                (at >= from).then(|| Deployment { service: service.to_owned(), version, at })
            })
            .collect();
        out.sort_by_key(|d| d.at);
        Ok(out)
    }
}

#[async_trait]
impl AlertRules for Prometheus {
    async fn expression(&self, alertname: &str) -> Result<Option<String>, PortError> {
        let data = self.get("/api/v1/rules", &[("type", "alert".to_owned())]).await?;
        let rules =
            data["groups"].as_array().into_iter().flatten().flat_map(|g| g["rules"].as_array().into_iter().flatten());
        Ok(rules
            .filter(|r| r["type"] == "alerting" && r["name"] == alertname)
            .find_map(|r| r["query"].as_str().map(str::to_owned)))
    }

    async fn series(&self, expr: &str, labels: &BTreeMap<String, String>, at: Timestamp) -> Result<usize, PortError> {
        let agrees = |s: &Series| labels.iter().all(|(k, v)| s.labels.get(k).is_none_or(|x| x == v));
        Ok(self.instant(expr, at).await?.iter().filter(|s| agrees(s)).count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_as_prometheus_writes_them() {
        let v: Value = serde_json::from_str(
            r#"{"metric":{"__name__":"up","job":"checkout"},"values":[[1700000000.5,"1"],[1700000015,"NaN"],[1700000030,"0.25"]]}"#,
        )
        .unwrap();
        let s = series_of(&v).unwrap();
        assert_eq!(s.labels["job"], "checkout");
        assert_eq!(s.samples, [(Timestamp(1_700_000_000_500), 1.0), (Timestamp(1_700_000_030_000), 0.25)]);
        assert_eq!(seconds(Timestamp(1_700_000_000_007)), "1700000000.007");
        let p = Prometheus::new(
            PrometheusConfig {
                queries: [("http_p99_ms".to_owned(), "p99{svc=\"{service}\"}".to_owned())].into(),
                ..PrometheusConfig::new("http://127.0.0.1:1")
            },
            Catalog::default(),
        )
        .unwrap();
        assert_eq!(p.query_for("checkout", "http_p99_ms"), "p99{svc=\"checkout\"}");
        assert_eq!(p.query_for("checkout", "queue_depth"), "avg(queue_depth{job=\"checkout\"})");
    }
}
