//! The ClickHouse store against the real clickhouse-server the scripts start
//! (`CLICKHOUSE_URL`, default http://127.0.0.1:8123), each test in a database
//! of its own.

mod support;

use std::collections::BTreeMap;

use telemetry::event::{DeployEvent, Event, LogLine, MetricSample};
use telemetry::store::{ClickHouseConfig, ClickHouseStore, EventStore};

async fn store(name: &str) -> ClickHouseStore {
    support::clickhouse(&format!("{name}_{}", std::process::id())).await
}

fn metric(ts: i64, value: f64, labels: &[(&str, &str)]) -> Event {
    Event::Metric(MetricSample {
        ts,
        service: "checkout".into(),
        metric: "http_p99_ms".into(),
        value,
        labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    })
}

#[tokio::test]
async fn events_come_back_exactly_as_sent_and_duplicates_count_once() {
    let store = store("exact").await;
    store.migrate().await.expect("a second migrate is a no-op");
    let t0 = 1_795_417_200_000;
    let mut batch: Vec<Event> = (0..1000)
        .map(|i| {
            metric(t0 + i * 1000, 100.0 + (i % 10) as f64 + 0.125, &[("namespace", "shop"), ("pod", "checkout-1")])
        })
        .collect();
    batch.push(Event::Log(LogLine {
        ts: t0,
        service: "checkout".into(),
        level: "error".into(),
        message: "upstream 'payments' timed out; retry \"later\"\nsecond line ✓".into(),
        trace_id: Some("4bf92f3577b34da6".into()),
    }));
    let deploy = DeployEvent {
        ts: t0 + 5000,
        service: "checkout".into(),
        version: "1.42.0".into(),
        change_type: "rollout".into(),
        git_sha: Some("9f1c2e7".into()),
    };
    batch.push(Event::Deploy(deploy.clone()));
    store.insert(&batch).await.unwrap();
    // A redelivered half batch: stored again, counted once.
    store.insert(&batch[500..]).await.unwrap();

    assert_eq!(
        store.counts().await.unwrap(),
        BTreeMap::from([("deploy".to_owned(), 1), ("log".to_owned(), 1), ("metric".to_owned(), 1000)])
    );
    let window = store.metric_window("checkout", "http_p99_ms", t0 + 400_000, t0 + 600_000).await.unwrap();
    let expected: Vec<(i64, f64)> = (400..600).map(|i| (t0 + i * 1000, 100.0 + (i % 10) as f64 + 0.125)).collect();
    assert_eq!(window, expected);
    assert!(store.metric_window("checkout", "other", t0, t0 + 10_000_000).await.unwrap().is_empty());
    let stats = store.stats("checkout", "http_p99_ms", t0, t0 + 10_000_000).await.unwrap().unwrap();
    assert_eq!(stats.count, 1000);
    assert!((stats.mean - 104.625).abs() < 1e-9, "{stats:?}");
    assert_eq!((stats.p50, stats.p90, stats.p99), (105.125, 109.125, 109.125));
    assert!(store.stats("nobody", "x", 0, 1).await.unwrap().is_none());
    assert_eq!(store.deploys_since("checkout", t0).await.unwrap(), vec![deploy]);
    assert!(store.deploys_since("checkout", t0 + 6000).await.unwrap().is_empty());
    store.drop_database().await.unwrap();
}

#[tokio::test]
async fn a_server_that_is_away_is_an_unavailable_error() {
    let store = ClickHouseStore::new(&ClickHouseConfig::new("http://127.0.0.1:1"));
    let err = store.insert(&[metric(0, 1.0, &[])]).await.unwrap_err();
    assert!(matches!(err, telemetry::store::StoreError::Unavailable(_)), "{err}");
}
