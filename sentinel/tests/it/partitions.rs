//! Kafka partition ownership shared through the database: a fair split among
//! live members, a killed member's partitions taken over once its lease
//! lapses, a clean stop handing over at once, and never two owners at a time.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use engine::testing::{Backend, TestDb};
use engine::SystemClock;

use crate::support::eventually;
use api::access::Access;
use api::partitions::SqlPartitionOwner;
use telemetry::kafka::PartitionOwner;

const TOPIC: &str = "events";
const LEASE: Duration = Duration::from_secs(3);

async fn members(backend: Backend, names: &[&str]) -> (TestDb, Vec<SqlPartitionOwner>) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    Access::new(&store, Arc::new(SystemClock)).await.expect("API migrations");
    let owners = names.iter().map(|n| SqlPartitionOwner::new(store.clone(), "group", *n)).collect();
    (db, owners)
}

/// Every member claims once, in turn; answers what each owns.
async fn round(owners: &[&SqlPartitionOwner], partitions: i32) -> Vec<BTreeSet<i32>> {
    let mut owned = Vec::new();
    for o in owners {
        owned.push(o.claim(TOPIC, partitions, LEASE).await.expect("claim"));
    }
    owned
}

fn disjoint(owned: &[BTreeSet<i32>]) -> bool {
    let total: usize = owned.iter().map(BTreeSet::len).sum();
    let union: BTreeSet<i32> = owned.iter().flatten().copied().collect();
    total == union.len()
}

async fn split_and_take_over(backend: Backend) {
    let (_db, owners) = members(backend, &["a", "b", "c"]).await;
    let [a, b, c] = [&owners[0], &owners[1], &owners[2]];
    // The first to claim takes everything; as the others join, it gives back its excess.
    assert_eq!(round(&[a], 3).await[0], BTreeSet::from([0, 1, 2]));
    let mut owned = Vec::new();
    for _ in 0..3 {
        owned = round(&[a, b, c], 3).await;
        assert!(disjoint(&owned), "two owners of one partition: {owned:?}");
    }
    assert!(owned.iter().all(|o| o.len() == 1), "one partition each: {owned:?}");

    // `c` is killed: it stops renewing. Until its lease lapses nobody takes its partition.
    let of_c = owned[2].clone();
    let survivors = round(&[a, b], 3).await;
    assert!(survivors.iter().all(|o| o.is_disjoint(&of_c)), "taken before the lease lapsed: {survivors:?}");
    // Once it has lapsed, the survivors share all three (they wait out c's membership too).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let owned = loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let owned = round(&[a, b], 3).await;
        assert!(disjoint(&owned), "{owned:?}");
        if owned.iter().map(BTreeSet::len).sum::<usize>() == 3 {
            break owned;
        }
        assert!(std::time::Instant::now() < deadline, "c's partition was never taken over: {owned:?}");
    };
    assert!(owned.iter().all(|o| !o.is_empty()), "{owned:?}");

    // A clean stop hands over at once: b's partitions go to a on its next claim.
    b.release(TOPIC).await.unwrap();
    let owned = round(&[a], 3).await;
    assert_eq!(owned[0], BTreeSet::from([0, 1, 2]));
}

#[tokio::test]
async fn partitions_are_split_and_taken_over_on_postgres() {
    split_and_take_over(Backend::Postgres).await;
}

#[tokio::test]
async fn partitions_are_split_and_taken_over_on_sqlite() {
    split_and_take_over(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_member_restarted_under_its_name_takes_its_partitions_back_at_once() {
    let (db, owners) = members(Backend::Postgres, &["a", "b"]).await;
    let mut owned = Vec::new();
    for _ in 0..2 {
        owned = round(&[&owners[0], &owners[1]], 4).await;
    }
    assert_eq!(owned.iter().map(BTreeSet::len).collect::<Vec<_>>(), vec![2, 2], "{owned:?}");
    // `b` restarts: a new process, the same instance id, before its lease lapses.
    let again = SqlPartitionOwner::new(db.store().await, "group", "b");
    assert_eq!(again.claim(TOPIC, 4, LEASE).await.unwrap(), owned[1]);
}

#[tokio::test]
async fn concurrent_claims_never_give_one_partition_two_owners() {
    let (_db, owners) = members(Backend::Postgres, &["a", "b", "c", "d"]).await;
    let owners: Vec<Arc<SqlPartitionOwner>> = owners.into_iter().map(Arc::new).collect();
    for _ in 0..10 {
        let claims: Vec<_> = owners
            .iter()
            .map(|o| {
                let o = o.clone();
                tokio::spawn(async move { o.claim(TOPIC, 6, LEASE).await.expect("claim") })
            })
            .collect();
        let mut owned = Vec::new();
        for c in claims {
            owned.push(c.await.unwrap());
        }
        assert!(disjoint(&owned), "two owners of one partition: {owned:?}");
    }
}

/// Two consumers of one topic share its partitions through the database; one
/// is killed (its task dropped, nothing released); the other takes its
/// partitions over once the lease lapses, and every event lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_consumers_partitions_are_consumed_by_the_other() {
    use telemetry::detect::DetectorConfig;
    use telemetry::event::{Event, MetricSample};
    use telemetry::kafka::{ensure_topic, KafkaConfig, KafkaPublisher, KafkaSource};
    use telemetry::pipeline::{ChannelSink, Processor, Publisher};
    use tokio_util::sync::CancellationToken;

    let brokers = crate::support::kafka_brokers().await;
    let (db, _) = members(Backend::Postgres, &[]).await;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let config = KafkaConfig {
        topic: format!("t-own-{id}"),
        group: format!("g-own-{id}"),
        max_wait: Duration::from_millis(50),
        lease: Duration::from_secs(2),
        claim_interval: Duration::from_millis(200),
        ..KafkaConfig::new(&brokers)
    };
    ensure_topic(&config).await.unwrap();
    let (_, storage) = crate::ingest::clickhouse(&crate::ingest::clickhouse_url(), "own").await;
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let sink = Arc::new(ChannelSink(tx));
    let shared = db.store().await;
    let consumer = |name: &str, stop: CancellationToken| {
        let owner = SqlPartitionOwner::new(shared.clone(), &config.group, name);
        let source = KafkaSource::new(&config, Arc::new(owner)).unwrap();
        let processor = Processor::new(storage.store.clone(), sink.clone(), DetectorConfig::default());
        tokio::spawn(source.run(processor, stop))
    };
    let stop = CancellationToken::new();
    let a = consumer("a", stop.clone());
    let b = consumer("b", stop.clone());
    // Both own partitions before the kill (the fair split is 2 + 1).
    let store = db.store().await;
    eventually("both consumers own partitions", Duration::from_secs(30), || {
        let store = store.clone();
        async move {
            let rows =
                sqlx::query_scalar::<_, String>("SELECT DISTINCT owner FROM partition_owners WHERE owner IS NOT NULL")
                    .fetch_all(store.pool())
                    .await
                    .unwrap();
            rows.len() == 2
        }
    })
    .await;
    let publisher = KafkaPublisher::new(&config).unwrap();
    // 30 services: keyed by service, they cover all three partitions.
    let batch = |minute: i64| -> Vec<Event> {
        (0..30)
            .map(|s| {
                Event::Metric(MetricSample {
                    ts: 1_795_417_200_000 + minute * 60_000,
                    service: format!("svc-{s:02}"),
                    metric: "http_p99_ms".into(),
                    value: 100.0 + (s % 7) as f64,
                    labels: Default::default(),
                })
            })
            .collect()
    };
    let stored = || async { storage.store.counts().await.map(|c| c["metric"]).unwrap_or(0) };
    for minute in 0..10 {
        publisher.publish(batch(minute)).await.unwrap();
    }
    eventually("300 events stored", Duration::from_secs(60), || async { stored().await >= 300 }).await;

    b.abort(); // SIGKILL: no release, its leases lapse on their own
    let _ = b.await;
    for minute in 10..20 {
        publisher.publish(batch(minute)).await.unwrap();
    }
    eventually("all 600 events stored after the kill", Duration::from_secs(60), || async { stored().await >= 600 })
        .await;
    let owners = sqlx::query_scalar::<_, String>("SELECT DISTINCT owner FROM partition_owners WHERE owner IS NOT NULL")
        .fetch_all(store.pool())
        .await
        .unwrap();
    assert_eq!(owners, vec!["a".to_owned()], "the survivor owns every partition");
    stop.cancel();
    a.await.unwrap();
}
