//! One behaviour suite, two adapters: the embedded Qdrant engine and a
//! Qdrant server through `qdrant-client` (a local gRPC server backed by the
//! embedded engine, which also records the exact requests).

mod support;

use std::sync::Arc;

use memory::edge::{EdgeIndex, VECTOR};
use memory::index::{Point, Search, VectorIndex};
use memory::server::QdrantIndex;
use nodes::memory::{Remembered, Status};
use qdrant_client::qdrant::{Distance, FieldType};
use support::qdrant_server::{indexed_fields, FakeQdrant, Received};
use uuid::Uuid;

const DIM: usize = 384;

/// A deterministic unit vector near axis `axis`, tilted by `tilt` toward the next axis.
fn unit(axis: usize, tilt: f32) -> Vec<f32> {
    let mut v = vec![0.0f32; DIM];
    v[axis % DIM] = 1.0;
    v[(axis + 1) % DIM] = tilt;
    let n = (1.0 + tilt * tilt).sqrt();
    v.iter_mut().for_each(|x| *x /= n);
    v
}

fn record(id: Uuid, service: &str, status: Status, opened_at: i64) -> Remembered {
    Remembered {
        incident: id.to_string(),
        service: service.into(),
        symptom: "latency_spike".into(),
        signal: "p99_latency_ms".into(),
        summary: None,
        labels: Default::default(),
        fingerprint: format!("fp-{service}"),
        status,
        opened_at,
        resolved_at: None,
        cause: None,
        hypothesis: None,
        remedy: None,
        outcome: None,
        mttr_secs: None,
        affected: Vec::new(),
    }
}

fn point(id: Uuid, vector: Vec<f32>, service: &str, status: Status, opened_at: i64) -> Point {
    Point { id, vector, payload: record(id, service, status, opened_at) }
}

fn ids(n: usize) -> Vec<Uuid> {
    (0..n).map(|i| Uuid::from_u128(0x5e47_1000_0000_4000_8000_0000_0000_0000 + i as u128)).collect()
}

/// The behaviours every adapter must show.
async fn behaviour(index: &dyn VectorIndex) {
    index.ensure(DIM).await.expect("ensure");
    index.ensure(DIM).await.expect("ensure again is a no-op");
    assert_eq!(index.count().await.expect("count"), 0);

    let id = ids(6);
    index
        .upsert(vec![
            point(id[0], unit(0, 0.0), "checkout", Status::Open, 1_000),
            point(id[1], unit(0, 0.3), "checkout", Status::Resolved, 2_000),
            point(id[2], unit(0, 0.6), "payments", Status::Open, 3_000),
            point(id[3], unit(7, 0.0), "checkout", Status::Open, 4_000),
            point(id[4], unit(0, 1.0), "inventory", Status::Escalated, 5_000),
        ])
        .await
        .expect("upsert");
    assert_eq!(index.count().await.expect("count"), 5);

    // Nearest first, scored by cosine similarity.
    let hits = index.search(&Search { vector: unit(0, 0.0), limit: 3, ..Search::default() }).await.expect("search");
    let got: Vec<Uuid> = hits.iter().map(|h| h.id).collect();
    assert_eq!(got, vec![id[0], id[1], id[2]]);
    assert!((hits[0].score - 1.0).abs() < 1e-4, "identical vector scores 1, got {}", hits[0].score);
    let expected = 1.0 / (1.0f32 + 0.09).sqrt();
    assert!((hits[1].score - expected).abs() < 1e-3, "cosine {expected}, got {}", hits[1].score);
    assert_eq!(hits[0].payload, record(id[0], "checkout", Status::Open, 1_000), "the payload comes back whole");

    // Each filter, and all of them together.
    let near = |s: Search| Search { vector: unit(0, 0.0), limit: if s.limit == 0 { 10 } else { s.limit }, ..s };
    let found = |hits: Vec<memory::index::Hit>| hits.into_iter().map(|h| h.id).collect::<Vec<_>>();
    let services = near(Search { services: vec!["payments".into(), "inventory".into()], ..Search::default() });
    assert_eq!(found(index.search(&services).await.expect("search")), vec![id[2], id[4]]);
    let open = near(Search { statuses: vec![Status::Open], ..Search::default() });
    assert_eq!(found(index.search(&open).await.expect("search")), vec![id[0], id[2], id[3]]);
    let recent = near(Search { opened_since: Some(3_000), ..Search::default() });
    assert_eq!(found(index.search(&recent).await.expect("search")), vec![id[2], id[4], id[3]]);
    let except = near(Search { except: Some(id[0]), limit: 2, ..Search::default() });
    assert_eq!(found(index.search(&except).await.expect("search")), vec![id[1], id[2]]);
    let all = near(Search {
        services: vec!["checkout".into()],
        statuses: vec![Status::Open],
        opened_since: Some(500),
        except: Some(id[0]),
        ..Search::default()
    });
    assert_eq!(found(index.search(&all).await.expect("search")), vec![id[3]]);
    let none = near(Search { services: vec!["nobody".into()], ..Search::default() });
    assert!(index.search(&none).await.expect("search").is_empty());

    // An upsert under an existing id replaces the point.
    let mut resolved = record(id[0], "checkout", Status::Resolved, 1_000);
    resolved.outcome = Some("resolved".into());
    resolved.mttr_secs = Some(420.0);
    index.upsert(vec![Point { id: id[0], vector: unit(0, 0.0), payload: resolved.clone() }]).await.expect("upsert");
    assert_eq!(index.count().await.expect("count"), 5);
    assert_eq!(index.get(id[0]).await.expect("get"), Some(resolved));
    assert_eq!(found(index.search(&open).await.expect("search")), vec![id[2], id[3]]);
    assert_eq!(index.get(id[5]).await.expect("get"), None, "never stored");

    // Deleted points are gone from every read.
    index.delete(&[id[0], id[2], id[5]]).await.expect("delete, including an id never stored");
    assert_eq!(index.count().await.expect("count"), 3);
    assert_eq!(index.get(id[0]).await.expect("get"), None);
    let rest = found(index.search(&near(Search::default())).await.expect("search"));
    assert_eq!(rest, vec![id[1], id[4], id[3]]);
    index.delete(&[]).await.expect("deleting nothing");

    // Retention: incidents that ended before the cutoff go; open ones and
    // later ones stay.
    let ended = |id: Uuid, status: Status, resolved_at: Option<i64>| {
        let mut p = point(id, unit(9, 0.0), "ledger", status, 1);
        p.payload.resolved_at = resolved_at;
        p
    };
    let old = ids(12);
    index
        .upsert(vec![
            ended(old[6], Status::Resolved, Some(100)),
            ended(old[7], Status::Escalated, Some(150)),
            ended(old[8], Status::Closed, Some(199)),
            ended(old[9], Status::Resolved, Some(200)),
            ended(old[10], Status::Open, None),
            ended(old[11], Status::Resolved, Some(5_000)),
        ])
        .await
        .expect("upsert");
    index.delete_ended_before(200).await.expect("prune");
    let ledger = near(Search { vector: unit(9, 0.0), services: vec!["ledger".into()], ..Search::default() });
    let mut left = found(index.search(&ledger).await.expect("search"));
    left.sort();
    assert_eq!(left, vec![old[9], old[10], old[11]]);
}

#[tokio::test]
async fn the_embedded_engine_behaves() {
    let dir = tempfile::tempdir().expect("temp dir");
    let index = EdgeIndex::open(dir.path(), DIM).expect("opens");
    behaviour(&index).await;
}

#[tokio::test]
async fn a_qdrant_server_through_the_client_behaves() {
    let (_server, url) = FakeQdrant::start().await;
    let index = QdrantIndex::new(&url, "sentinel_test", None).expect("client");
    behaviour(&index).await;
}

#[tokio::test]
async fn the_embedded_engine_keeps_its_points_across_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let id = ids(2);
    {
        let index = EdgeIndex::open(dir.path(), DIM).expect("opens");
        index.ensure(DIM).await.expect("ensure");
        index
            .upsert(vec![
                point(id[0], unit(3, 0.0), "checkout", Status::Open, 1),
                point(id[1], unit(4, 0.0), "payments", Status::Open, 2),
            ])
            .await
            .expect("upsert");
        index.delete(&[id[1]]).await.expect("delete");
    }
    let index = EdgeIndex::open(dir.path(), DIM).expect("opens again");
    index.ensure(DIM).await.expect("ensure");
    assert_eq!(index.count().await.expect("count"), 1);
    assert_eq!(index.get(id[0]).await.expect("get").map(|r| r.service), Some("checkout".into()));
    let hits = index.search(&Search { vector: unit(3, 0.0), limit: 5, ..Search::default() }).await.expect("search");
    assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), vec![id[0]]);
}

#[tokio::test]
async fn the_embedded_engine_is_one_processs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let first = EdgeIndex::open(dir.path(), DIM).expect("opens");
    let err = EdgeIndex::open(dir.path(), DIM).err().expect("a second opener is refused");
    assert!(err.to_string().contains("in use by another process"), "{err}");
    assert!(err.to_string().contains("QDRANT_URL"), "{err}");
    drop(first);
    EdgeIndex::open(dir.path(), DIM).expect("free again once closed");
}

#[tokio::test]
async fn the_embedded_engine_refuses_vectors_of_another_size() {
    let dir = tempfile::tempdir().expect("temp dir");
    drop(EdgeIndex::open(dir.path(), DIM).expect("opens"));
    let err = EdgeIndex::open(dir.path(), 128).err().expect("another size is refused");
    assert!(err.to_string().contains("384-dimension"), "{err}");
}

#[tokio::test]
async fn the_embedded_engine_stays_correct_through_its_background_optimisation() {
    // More points than one optimisation threshold: the HNSW graph is built
    // while writes and searches go on, and every point stays findable.
    let dir = tempfile::tempdir().expect("temp dir");
    let index = Arc::new(EdgeIndex::open(dir.path(), DIM).expect("opens"));
    index.ensure(DIM).await.expect("ensure");
    let n = memory::edge::OPTIMIZE_EVERY + 500;
    let id: Vec<Uuid> = (0..n).map(|_| Uuid::new_v4()).collect();
    // Point i: near axis i mod 384, tilted by a step per turn round the axes: all distinct.
    let vector = |i: usize| unit(i % DIM, 0.05 + 0.1 * (i / DIM) as f32);
    let all: Vec<(usize, Uuid)> = id.iter().copied().enumerate().collect();
    for chunk in all.chunks(250) {
        let points = chunk.iter().map(|&(i, u)| point(u, vector(i), "svc", Status::Resolved, 1)).collect();
        index.upsert(points).await.expect("upsert");
    }
    index.optimize().expect("optimize");
    assert_eq!(index.count().await.expect("count"), n as u64);
    for &(i, u) in all.iter().step_by(97) {
        let hits = index.search(&Search { vector: vector(i), limit: 10, ..Search::default() }).await.expect("search");
        assert_eq!(hits.first().map(|h| h.id), Some(u), "point {i} is the nearest to its own vector");
        assert!(hits[0].score > 0.999, "an identical vector scores 1, got {}", hits[0].score);
    }
}

#[tokio::test]
async fn the_client_sends_exactly_these_requests() {
    let (server, url) = FakeQdrant::start().await;
    let index = QdrantIndex::new(&url, "incidents", None).expect("client");

    index.ensure(DIM).await.expect("ensure");
    let sent = server.take();
    let Received::CollectionExists(exists) = &sent[0] else { panic!("first, whether it exists: {sent:?}") };
    assert_eq!(exists.collection_name, "incidents");
    let Received::CreateCollection(create) = &sent[1] else { panic!("then the collection: {sent:?}") };
    assert_eq!(create.collection_name, "incidents");
    let vectors = format!("{:?}", create.vectors_config);
    let params = match create.vectors_config.clone().and_then(|v| v.config) {
        Some(qdrant_client::qdrant::vectors_config::Config::ParamsMap(m)) => m.map,
        other => panic!("one named vector, got {other:?}"),
    };
    assert_eq!(params.len(), 1, "{vectors}");
    assert_eq!(params[VECTOR].size, DIM as u64);
    assert_eq!(params[VECTOR].distance, Distance::Cosine as i32);
    assert!(matches!(&sent[2], Received::CollectionInfo(i) if i.collection_name == "incidents"), "{sent:?}");
    let expected: std::collections::BTreeSet<(String, i32)> = [
        ("service", FieldType::Keyword),
        ("status", FieldType::Keyword),
        ("fingerprint", FieldType::Keyword),
        ("opened_at", FieldType::Integer),
        ("resolved_at", FieldType::Integer),
    ]
    .into_iter()
    .map(|(f, t)| (f.to_owned(), t as i32))
    .collect();
    assert_eq!(indexed_fields(&sent), expected);
    assert_eq!(sent.len(), 3 + 5, "nothing else: {sent:?}");
    for r in &sent[3..] {
        let Received::CreateFieldIndex(c) = r else { panic!("{r:?}") };
        assert_eq!((c.collection_name.as_str(), c.wait), ("incidents", Some(true)));
    }

    // A second start finds everything in place and creates nothing.
    index.ensure(DIM).await.expect("ensure again");
    let again = server.take();
    assert!(
        matches!(again.as_slice(), [Received::CollectionExists(_), Received::CollectionInfo(_)]),
        "only looks: {again:?}"
    );

    let id = ids(2);
    index.upsert(vec![point(id[0], unit(1, 0.0), "checkout", Status::Open, 10)]).await.expect("upsert");
    let sent = server.take();
    let [Received::Upsert(up)] = sent.as_slice() else { panic!("one upsert: {sent:?}") };
    assert_eq!((up.collection_name.as_str(), up.wait, up.points.len()), ("incidents", Some(true), 1));
    let p = &up.points[0];
    assert_eq!(
        format!("{:?}", p.id.as_ref().and_then(|i| i.point_id_options.clone())),
        format!("Some(Uuid({:?}))", id[0].to_string())
    );
    let mut keys: Vec<&str> = p.payload.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["fingerprint", "incident", "opened_at", "service", "signal", "status", "symptom"]);

    let search = Search {
        vector: unit(1, 0.0),
        services: vec!["checkout".into()],
        statuses: vec![Status::Open],
        opened_since: Some(5),
        except: Some(id[1]),
        limit: 4,
    };
    let hits = index.search(&search).await.expect("search");
    assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), vec![id[0]]);
    let sent = server.take();
    let [Received::Query(q)] = sent.as_slice() else { panic!("one query: {sent:?}") };
    assert_eq!((q.collection_name.as_str(), q.using.as_deref(), q.limit), ("incidents", Some(VECTOR), Some(4)));
    assert_eq!(q.filter, memory::server::filter(&search), "the filter as built");
    let filter = q.filter.clone().expect("a filter");
    assert_eq!((filter.must.len(), filter.must_not.len(), filter.should.len()), (3, 1, 0));
    assert!(format!("{:?}", q.with_payload).contains("Enable(true)"), "{:?}", q.with_payload);

    index.delete(&[id[0]]).await.expect("delete");
    let sent = server.take();
    let [Received::Delete(d)] = sent.as_slice() else { panic!("one delete: {sent:?}") };
    assert_eq!((d.collection_name.as_str(), d.wait), ("incidents", Some(true)));
}

#[tokio::test]
async fn a_collection_of_another_size_is_refused() {
    let (_server, url) = FakeQdrant::start().await;
    let other = QdrantIndex::new(&url, "incidents", None).expect("client");
    other.ensure(128).await.expect("a 128-dimension collection");
    let index = QdrantIndex::new(&url, "incidents", None).expect("client");
    let err = index.ensure(DIM).await.expect_err("refused");
    assert!(err.to_string().contains("128-dimension"), "{err}");
    assert!(matches!(err, memory::IndexError::Refused(_)), "not worth retrying: {err:?}");
}

#[tokio::test]
async fn a_server_that_is_away_is_worth_retrying() {
    let (server, url) = FakeQdrant::start().await;
    let index = QdrantIndex::new(&url, "incidents", None).expect("client");
    index.ensure(DIM).await.expect("ensure");
    server.set_down(true);
    let err = index.count().await.expect_err("down");
    assert!(matches!(err, memory::IndexError::Unavailable(_)), "{err:?}");
    server.set_down(false);
    assert_eq!(index.count().await.expect("back"), 0);

    // Nothing listening at all.
    let nowhere = QdrantIndex::new("http://127.0.0.1:9", "incidents", None).expect("client");
    let err = nowhere.count().await.expect_err("nothing there");
    assert!(matches!(err, memory::IndexError::Unavailable(_)), "{err:?}");
}

#[tokio::test]
async fn memory_starts_without_its_server_and_catches_up_when_it_returns() {
    use nodes::memory::IncidentMemory;
    let (server, url) = FakeQdrant::start().await;
    server.set_down(true);
    let index = Arc::new(QdrantIndex::new(&url, "incidents", None).expect("client"));
    let memory = memory::SemanticMemory::new(support::embedder(), index).await.expect("starts all the same");
    let err = memory.size().await.expect_err("the server is away");
    assert!(matches!(err, nodes::ports::PortError::Unavailable(_)), "{err:?}");
    server.set_down(false);
    assert_eq!(memory.size().await.expect("back"), 0);
    let sent = server.take();
    assert!(
        sent.iter().any(|r| matches!(r, Received::CreateCollection(_))),
        "the collection is made on return: {sent:?}"
    );
}
