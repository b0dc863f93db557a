//! The ClickHouse store, through the `clickhouse` crate over HTTP.
//!
//! The SQL keeps to what ClickHouse 18.16 (Debian's package) already runs and
//! current releases still do: `ReplacingMergeTree()` with `PARTITION BY` /
//! `ORDER BY`, `Int64` millisecond timestamps (18.16 has no `DateTime64`),
//! labels as a JSON string (no `Map` type), and RowBinary without the
//! names-and-types header (`with_validation(false)`). Duplicates are made
//! harmless by the event id: every query groups by it.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use clickhouse::{Client, Row};
use serde::{Deserialize, Serialize};

use super::{event_id, EventStore, Stats, StoreError};
use crate::event::{DeployEvent, Event};

#[derive(Clone, Debug)]
pub struct ClickHouseConfig {
    /// `CLICKHOUSE_URL`, e.g. `http://127.0.0.1:8123`.
    pub url: String,
    pub database: String,
    pub user: Option<String>,
    pub password: Option<String>,
    /// How long one query or insert may take, connecting included, before it
    /// fails as unavailable. The client has no deadline of its own: without
    /// this, a server that stops answering (a dropped route, not a refused
    /// connection) would hold a verification step or an ingest batch forever.
    pub timeout: Duration,
}

impl ClickHouseConfig {
    pub fn new(url: impl Into<String>) -> Self {
        ClickHouseConfig {
            url: url.into(),
            database: "sentinel".into(),
            user: None,
            password: None,
            timeout: Duration::from_secs(10),
        }
    }
}

/// The schema, in order; each step runs once (recorded in `schema_migrations`).
const MIGRATIONS: &[(u32, &[&str])] = &[(
    1,
    &[
        "CREATE TABLE IF NOT EXISTS metrics (date Date, ts Int64, service String, metric String, value Float64, \
         labels String, id UInt64) ENGINE = ReplacingMergeTree() PARTITION BY toYYYYMM(date) \
         ORDER BY (service, metric, ts, id)",
        "CREATE TABLE IF NOT EXISTS logs (date Date, ts Int64, service String, level String, message String, \
         trace_id String, id UInt64) ENGINE = ReplacingMergeTree() PARTITION BY toYYYYMM(date) \
         ORDER BY (service, ts, id)",
        "CREATE TABLE IF NOT EXISTS deploys (date Date, ts Int64, service String, version String, \
         change_type String, git_sha String, id UInt64) ENGINE = ReplacingMergeTree() \
         PARTITION BY toYYYYMM(date) ORDER BY (service, ts, id)",
    ],
)];

#[derive(Row, Serialize)]
struct MetricRow {
    date: u16,
    ts: i64,
    service: String,
    metric: String,
    value: f64,
    labels: String,
    id: u64,
}

#[derive(Row, Serialize)]
struct LogRow {
    date: u16,
    ts: i64,
    service: String,
    level: String,
    message: String,
    trace_id: String,
    id: u64,
}

#[derive(Row, Serialize, Deserialize)]
struct DeployRow {
    date: u16,
    ts: i64,
    service: String,
    version: String,
    change_type: String,
    git_sha: String,
    id: u64,
}

#[derive(Row, Deserialize)]
struct Point {
    ts: i64,
    value: f64,
}

#[derive(Row, Deserialize)]
struct StatsRow {
    n: u64,
    mean: f64,
    sd: f64,
    q: Vec<f64>,
}

/// Days since the Unix epoch, as ClickHouse's `Date` stores them.
fn date(ts_ms: i64) -> u16 {
    ts_ms.div_euclid(86_400_000).clamp(0, i64::from(u16::MAX)) as u16
}

fn unavailable(what: &str, e: clickhouse::error::Error) -> StoreError {
    StoreError::Unavailable(format!("clickhouse {what}: {e}"))
}

pub struct ClickHouseStore {
    client: Client,
    admin: Client,
    database: String,
    timeout: Duration,
}

impl ClickHouseStore {
    /// A client for the database (nothing is sent yet; see [`Self::migrate`]).
    pub fn new(config: &ClickHouseConfig) -> Self {
        let mut admin = Client::default().with_url(&config.url).with_validation(false);
        if let Some(u) = &config.user {
            admin = admin.with_user(u);
        }
        if let Some(p) = &config.password {
            admin = admin.with_password(p);
        }
        let client = admin.clone().with_database(&config.database);
        ClickHouseStore { client, admin, database: config.database.clone(), timeout: config.timeout }
    }

    /// `call`, failed as unavailable when it outlasts the configured timeout.
    async fn bounded<T>(
        &self,
        what: &str,
        call: impl std::future::Future<Output = Result<T, clickhouse::error::Error>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(r) => r.map_err(|e| unavailable(what, e)),
            Err(_) => Err(StoreError::Unavailable(format!("clickhouse {what}: no answer within {:?}", self.timeout))),
        }
    }

    /// Creates the database and applies the migrations not yet applied.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let db = &self.database;
        if db.is_empty() || !db.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(StoreError::Refused(format!("database name {db:?} must be letters, digits and _")));
        }
        self.bounded("create database", self.admin.query(&format!("CREATE DATABASE IF NOT EXISTS {db}")).execute())
            .await?;
        let ledger = "CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32, applied_at DateTime) \
                      ENGINE = MergeTree() ORDER BY version";
        self.bounded("create schema_migrations", self.client.query(ledger).execute()).await?;
        let applied: Vec<u32> = self
            .bounded("read schema_migrations", self.client.query("SELECT version FROM schema_migrations").fetch_all())
            .await?;
        for (version, statements) in MIGRATIONS {
            if applied.contains(version) {
                continue;
            }
            for sql in *statements {
                self.bounded("migration", self.client.query(sql).execute()).await?;
            }
            self.bounded(
                "record migration",
                self.client
                    .query("INSERT INTO schema_migrations (version, applied_at) VALUES (?, now())")
                    .bind(*version)
                    .execute(),
            )
            .await?;
        }
        Ok(())
    }

    /// Drops the database (tests and benchmarks clean up with it).
    pub async fn drop_database(&self) -> Result<(), StoreError> {
        self.bounded("drop database", self.admin.query(&format!("DROP DATABASE IF EXISTS {}", self.database)).execute())
            .await
    }

    async fn insert_rows<T>(&self, table: &str, rows: Vec<T>) -> Result<(), StoreError>
    where
        T: clickhouse::RowOwned + clickhouse::RowWrite,
    {
        if rows.is_empty() {
            return Ok(());
        }
        self.bounded("insert", async {
            let mut insert = self.client.insert::<T>(table).await?;
            for row in &rows {
                insert.write(row).await?;
            }
            insert.end().await
        })
        .await
    }
}

#[async_trait]
impl EventStore for ClickHouseStore {
    async fn insert(&self, batch: &[Event]) -> Result<(), StoreError> {
        let (mut metrics, mut logs, mut deploys) = (Vec::new(), Vec::new(), Vec::new());
        for e in batch {
            let id = event_id(e);
            match e {
                Event::Metric(m) => metrics.push(MetricRow {
                    date: date(m.ts),
                    ts: m.ts,
                    service: m.service.clone(),
                    metric: m.metric.clone(),
                    value: m.value,
                    labels: serde_json::to_string(&m.labels).unwrap_or_default(),
                    id,
                }),
                Event::Log(l) => logs.push(LogRow {
                    date: date(l.ts),
                    ts: l.ts,
                    service: l.service.clone(),
                    level: l.level.clone(),
                    message: l.message.clone(),
                    trace_id: l.trace_id.clone().unwrap_or_default(),
                    id,
                }),
                Event::Deploy(d) => deploys.push(DeployRow {
                    date: date(d.ts),
                    ts: d.ts,
                    service: d.service.clone(),
                    version: d.version.clone(),
                    change_type: d.change_type.clone(),
                    git_sha: d.git_sha.clone().unwrap_or_default(),
                    id,
                }),
            }
        }
        self.insert_rows("metrics", metrics).await?;
        self.insert_rows("logs", logs).await?;
        self.insert_rows("deploys", deploys).await
    }

    async fn metric_window(
        &self,
        service: &str,
        metric: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<(i64, f64)>, StoreError> {
        let rows: Vec<Point> = self
            .bounded(
                "metric window",
                self.client
                    .query(
                        "SELECT ts, any(value) AS value FROM metrics \
                 WHERE service = ? AND metric = ? AND ts >= ? AND ts < ? GROUP BY ts, id ORDER BY ts",
                    )
                    .bind(service)
                    .bind(metric)
                    .bind(from)
                    .bind(to)
                    .fetch_all(),
            )
            .await?;
        Ok(rows.into_iter().map(|p| (p.ts, p.value)).collect())
    }

    async fn stats(&self, service: &str, metric: &str, from: i64, to: i64) -> Result<Option<Stats>, StoreError> {
        let row: StatsRow = self
            .bounded(
                "stats",
                self.client
                    .query(
                        "SELECT count() AS n, avg(value) AS mean, stddevSamp(value) AS sd, \
                 quantilesExact(0.5, 0.9, 0.99)(value) AS q FROM \
                 (SELECT any(value) AS value FROM metrics \
                  WHERE service = ? AND metric = ? AND ts >= ? AND ts < ? GROUP BY ts, id)",
                    )
                    .bind(service)
                    .bind(metric)
                    .bind(from)
                    .bind(to)
                    .fetch_one(),
            )
            .await?;
        if row.n == 0 || row.q.len() != 3 {
            return Ok(None);
        }
        let finite = |v: f64| if v.is_finite() { v } else { 0.0 };
        Ok(Some(Stats {
            count: row.n,
            mean: row.mean,
            stddev: finite(row.sd),
            p50: row.q[0],
            p90: row.q[1],
            p99: row.q[2],
        }))
    }

    async fn deploys_since(&self, service: &str, from: i64) -> Result<Vec<DeployEvent>, StoreError> {
        let rows: Vec<DeployRow> = self
            .bounded(
                "deploys",
                self.client
                    .query(
                        "SELECT any(date) AS date, any(ts) AS ts, any(service) AS service, any(version) AS version, \
                 any(change_type) AS change_type, any(git_sha) AS git_sha, id \
                 FROM (SELECT * FROM deploys WHERE service = ? AND ts >= ?) GROUP BY id ORDER BY ts",
                    )
                    .bind(service)
                    .bind(from)
                    .fetch_all(),
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| DeployEvent {
                ts: r.ts,
                service: r.service,
                version: r.version,
                change_type: r.change_type,
                git_sha: (!r.git_sha.is_empty()).then_some(r.git_sha),
            })
            .collect())
    }

    /// Answers a trivial query: whether the server is up.
    async fn ping(&self) -> Result<(), StoreError> {
        self.bounded("ping", self.admin.query("SELECT 1").fetch_one::<u8>()).await.map(|_| ())
    }

    async fn counts(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        let mut out = BTreeMap::new();
        for (kind, table) in [("metric", "metrics"), ("log", "logs"), ("deploy", "deploys")] {
            let n: u64 = self
                .bounded("count", self.client.query(&format!("SELECT uniqExact(id) FROM {table}")).fetch_one())
                .await?;
            out.insert(kind.to_owned(), n);
        }
        Ok(out)
    }
}
