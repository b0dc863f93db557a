//! What several processes on one database agree on: one unfinished run per
//! correlation key, limit-checked reservations, resource holds with a
//! cooldown, per-message outbox claims. "Processes" are engines with their
//! own connection pools on one database.

use std::collections::HashSet;
use std::time::Duration;

use engine::{
    Correlated, Delivery, Engine, Error, Graph, Hold, Limit, NewFact, NodeContext, NodeError, Registry, Reservation,
    RunStatus, Timestamp, Transition,
};
use serde_json::{json, Value};

use engine::on_both_stores;
use engine::testing::{fast_worker, finished, Backend, BackgroundWorker, TestDb};

type Out = Result<(Value, Transition), NodeError>;

/// `wait` parks until a `go` signal; `note` records a fact and sends three
/// messages, then completes.
fn registry() -> Registry {
    let wait = Graph::builder("wait", 1)
        .node("wait", |s: Value, ctx: NodeContext| async move {
            if ctx.take_signal(&["go"]).is_some() {
                return Ok((s, Transition::Complete)) as Out;
            }
            Ok((s, Transition::wait_for(["go"], None)))
        })
        .start("wait")
        .build()
        .unwrap();
    let note = Graph::builder("note", 1)
        .node("note", |s: Value, ctx: NodeContext| async move {
            ctx.record("action", "checkout", json!({ "n": 1 }));
            for i in 0..3 {
                ctx.send("topic", json!({ "i": i }));
            }
            Ok((s, Transition::Complete)) as Out
        })
        .start("note")
        .build()
        .unwrap();
    let mut r = Registry::new();
    r.register(wait).register(note);
    r
}

async fn two_processes(db: &TestDb) -> (Engine, Engine) {
    (db.engine(registry()).await, db.engine(registry()).await)
}

on_both_stores!(
    one_unfinished_run_per_correlation_key,
    reservations_never_exceed_a_limit,
    a_resource_has_one_holder_and_a_cooldown,
    outbox_claims_are_per_message_and_fenced,
    facts_are_written_with_the_checkpoint,
);

async fn one_unfinished_run_per_correlation_key(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (a, b) = two_processes(&db).await;
    let mut tasks = Vec::new();
    for i in 0..64 {
        let e = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            e.start_or_signal(
                "wait",
                "fp-1",
                None,
                &json!({ "i": i }),
                &format!("attach-{i}"),
                "attach",
                json!({ "i": i }),
            )
            .await
        }));
    }
    let mut started = Vec::new();
    let mut signalled = Vec::new();
    for t in tasks {
        match t.await.unwrap().unwrap() {
            Correlated::Started(run) => started.push(run),
            Correlated::Signalled(run, delivery) => signalled.push((run, delivery)),
            repeated => panic!("no start key, no repeat: {repeated:?}"),
        }
    }
    assert_eq!(started.len(), 1, "exactly one start among 64 concurrent calls");
    let run = started[0];
    assert_eq!(signalled.len(), 63);
    assert!(signalled.iter().all(|(r, d)| *r == run && *d == Delivery::Accepted));
    assert_eq!(a.detail(run).await.unwrap().signals.len(), 63, "every other call is on the open run's record");
    assert_eq!(a.run(run).await.unwrap().correlation_key.as_deref(), Some("fp-1"));

    // A signal to the key reaches the open run; a key nobody holds reaches nothing.
    assert_eq!(a.signal_open("wait", "fp-1", "go-1", "go", json!({})).await.unwrap(), Some((run, Delivery::Accepted)));
    assert_eq!(a.signal_open("wait", "fp-2", "go-2", "go", json!({})).await.unwrap(), None);
    let worker = BackgroundWorker::start(&a, fast_worker("w"));
    assert_eq!(finished(&a, run).await.status, RunStatus::Completed);
    worker.stop().await;

    // Finished, the key is free: the next detection opens a new run.
    let again =
        b.start_or_signal("wait", "fp-1", Some("s-2"), &json!({}), "attach-x", "attach", json!({})).await.unwrap();
    let Correlated::Started(second) = again else { panic!("expected a new run, got {again:?}") };
    assert_ne!(second, run);
    // The same start again (a replayed trigger): while the run is open it takes
    // the signal; once it finished, it is a repeat and starts nothing.
    let open = a.start_or_signal("wait", "fp-1", Some("s-2"), &json!({}), "attach-z", "attach", json!({})).await;
    assert_eq!(open.unwrap(), Correlated::Signalled(second, Delivery::Accepted));
    a.signal(second, "go-2", "go", json!({})).await.unwrap();
    let worker = BackgroundWorker::start(&a, fast_worker("w"));
    assert_eq!(finished(&a, second).await.status, RunStatus::Completed);
    worker.stop().await;
    let repeat = b.start_or_signal("wait", "fp-1", Some("s-2"), &json!({}), "attach-r", "attach", json!({})).await;
    assert_eq!(repeat.unwrap(), Correlated::Repeated(second));
    assert_eq!(a.list(&engine::RunFilter { graph: Some("wait".into()), ..Default::default() }).await.unwrap().len(), 2);
    // The same key on another graph is another correlation.
    let other =
        b.start_or_signal("note", "fp-1", Some("s-2"), &json!({}), "attach-y", "attach", json!({})).await.unwrap();
    assert!(matches!(other, Correlated::Started(_)), "{other:?}");
}

async fn reservations_never_exceed_a_limit(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (a, b) = two_processes(&db).await;
    let now = Timestamp(1_000_000);
    let limits = vec![Limit { kind: "auto".into(), subject: None, window: Duration::from_secs(60), max: 10 }];
    let fact = |i: usize| NewFact {
        key: format!("k{i}"),
        run_id: format!("run-{i}"),
        kind: "auto".into(),
        subject: format!("svc-{}", i % 3),
        at: now,
        payload: json!({ "i": i }),
    };
    let mut tasks = Vec::new();
    for i in 0..50 {
        let store = if i % 2 == 0 { a.store().clone() } else { b.store().clone() };
        let (f, l) = (fact(i), limits.clone());
        tasks.push(tokio::spawn(async move { store.reserve("auto", &f, &l).await }));
    }
    let mut reserved = 0;
    let mut refused = 0;
    for t in tasks {
        match t.await.unwrap().unwrap() {
            Reservation::Reserved => reserved += 1,
            Reservation::Refused { limit: 0, count: 10, latest: Some(at) } if at == now => refused += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((reserved, refused), (10, 40), "50 concurrent candidates against a limit of 10");
    let held = a.store().ledger("auto", None, Timestamp(0)).await.unwrap();
    assert_eq!(held.len(), 10);
    // A retried reservation finds its own record and takes no second one.
    let first = held[0].key.trim_start_matches('k').parse::<usize>().unwrap();
    assert_eq!(a.store().reserve("auto", &fact(first), &limits).await.unwrap(), Reservation::AlreadyReserved);
    // Outside the window there is room again; a per-subject limit counts only its subject.
    let later = NewFact { key: "late".into(), at: now.saturating_add(Duration::from_secs(61)), ..fact(100) };
    assert_eq!(a.store().reserve("auto", &later, &limits).await.unwrap(), Reservation::Reserved);
    let per_subject =
        vec![Limit { kind: "auto".into(), subject: Some("svc-9".into()), window: Duration::from_secs(60), max: 1 }];
    let lone = NewFact { key: "lone".into(), subject: "svc-9".into(), ..fact(101) };
    assert_eq!(a.store().reserve("auto", &lone, &per_subject).await.unwrap(), Reservation::Reserved);
    let twice = NewFact { key: "twice".into(), subject: "svc-9".into(), ..fact(102) };
    assert!(matches!(b.store().reserve("auto", &twice, &per_subject).await.unwrap(), Reservation::Refused { .. }));
    assert_eq!(a.store().ledger("auto", Some("svc-9"), Timestamp(0)).await.unwrap().len(), 1);
    // A zero window limits nothing, even against facts stamped later.
    let off = vec![Limit { kind: "auto".into(), subject: Some("svc-9".into()), window: Duration::ZERO, max: 1 }];
    let earlier = NewFact { key: "earlier".into(), subject: "svc-9".into(), at: Timestamp(now.0 - 5), ..fact(103) };
    assert_eq!(a.store().reserve("auto", &earlier, &off).await.unwrap(), Reservation::Reserved);
}

async fn a_resource_has_one_holder_and_a_cooldown(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (a, b) = two_processes(&db).await;
    let t0 = Timestamp(5_000_000);
    let ttl = Duration::from_secs(600);
    let cooldown = Duration::from_secs(300);
    let mut tasks = Vec::new();
    for i in 0..20 {
        let store = if i % 2 == 0 { a.store().clone() } else { b.store().clone() };
        tasks.push(tokio::spawn(async move {
            (i, store.hold("ecs:prod/api", &format!("run-{i}"), t0, ttl, cooldown).await)
        }));
    }
    let mut holders = Vec::new();
    for t in tasks {
        let (i, hold) = t.await.unwrap();
        match hold.unwrap() {
            Hold::Held => holders.push(i),
            Hold::Busy { until, .. } => assert_eq!(until, t0.saturating_add(ttl)),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(holders.len(), 1, "one holder among 20 concurrent takers");
    let holder = format!("run-{}", holders[0]);
    let s = a.store();
    // The holder extends its hold; others stay out.
    let t1 = t0.saturating_add(Duration::from_secs(60));
    assert_eq!(s.hold("ecs:prod/api", &holder, t1, ttl, cooldown).await.unwrap(), Hold::Held);
    assert!(matches!(s.hold("ecs:prod/api", "other", t1, ttl, cooldown).await.unwrap(), Hold::Busy { .. }));
    // Released, the cooldown from the first take still runs.
    s.unhold("ecs:prod/api", &holder, t1).await.unwrap();
    assert_eq!(
        s.hold("ecs:prod/api", "other", t1, ttl, cooldown).await.unwrap(),
        Hold::Cooling { until: t0.saturating_add(cooldown) }
    );
    // The holder itself may act again (its own next step).
    assert_eq!(s.hold("ecs:prod/api", &holder, t1, ttl, cooldown).await.unwrap(), Hold::Held);
    // A holder that dies: its hold runs out at the ttl, then another takes it.
    let expired = t1.saturating_add(ttl);
    assert_eq!(s.hold("ecs:prod/api", "other", expired, ttl, cooldown).await.unwrap(), Hold::Held);
    assert_eq!(
        s.holds(expired).await.unwrap(),
        vec![("ecs:prod/api".to_owned(), "other".to_owned(), expired.saturating_add(ttl))]
    );
    // Another resource is independent.
    assert_eq!(s.hold("ecs:prod/web", &holder, t1, ttl, cooldown).await.unwrap(), Hold::Held);
}

async fn outbox_claims_are_per_message_and_fenced(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (a, b) = two_processes(&db).await;
    let worker = BackgroundWorker::start(&a, fast_worker("w"));
    let run = a.start("note", &json!({})).await.unwrap();
    finished(&a, run).await;
    worker.stop().await;

    let now = Timestamp(i64::MAX / 2);
    let lease = Duration::from_secs(60);
    let first = a.store().outbox_claim(now, now.saturating_add(lease)).await.unwrap().unwrap();
    let second = b.store().outbox_claim(now, now.saturating_add(lease)).await.unwrap().unwrap();
    let third = b.store().outbox_claim(now, now.saturating_add(lease)).await.unwrap().unwrap();
    assert_eq!(HashSet::from([first.id, second.id, third.id]).len(), 3, "one claim per message");
    assert!(a.store().outbox_claim(now, now.saturating_add(lease)).await.unwrap().is_none(), "all three are claimed");

    // The first relay is slow: it extends its claim while it sends.
    assert!(a.store().outbox_extend(first.id, &first.claim_token, now.saturating_add(lease * 2)).await.unwrap());
    // The second relay stalls past its claim: a third relay takes that message over.
    let late = now.saturating_add(lease + Duration::from_secs(1));
    let retaken = a.store().outbox_claim(late, late.saturating_add(lease)).await.unwrap().unwrap();
    assert_eq!((retaken.id, retaken.claims), (second.id, 2), "the stalled message, marked as claimed twice");
    assert_ne!(retaken.claim_token, second.claim_token);
    // The stale relay can record nothing; the new claimant can.
    assert!(!b.store().outbox_delivered(second.id, &second.claim_token, late).await.unwrap());
    assert!(!b.store().outbox_failed(second.id, &second.claim_token, "late", None).await.unwrap());
    assert!(!b.store().outbox_extend(second.id, &second.claim_token, late).await.unwrap());
    assert!(a.store().outbox_delivered(retaken.id, &retaken.claim_token, late).await.unwrap());
    assert!(a.store().outbox_delivered(first.id, &first.claim_token, late).await.unwrap());
    // A recorded outcome is final for every token.
    assert!(!a.store().outbox_delivered(first.id, &first.claim_token, late).await.unwrap());
    assert!(b.store().outbox_failed(third.id, &third.claim_token, "HTTP 500", None).await.unwrap());
    let stats = a.store().outbox_stats().await.unwrap();
    assert_eq!((stats.pending, stats.dead), (0, 1));
    // Requeued by an operator, the old token is void.
    assert!(a.store().outbox_requeue(third.id, late).await.unwrap());
    assert!(!a.store().outbox_delivered(third.id, &third.claim_token, late).await.unwrap());
}

async fn facts_are_written_with_the_checkpoint(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (a, _) = two_processes(&db).await;
    let worker = BackgroundWorker::start(&a, fast_worker("w"));
    let run = a.start("note", &json!({})).await.unwrap();
    finished(&a, run).await;
    worker.stop().await;
    let facts = a.store().ledger("action", Some("checkout"), Timestamp(0)).await.unwrap();
    assert_eq!(facts.len(), 1);
    assert_eq!((facts[0].key.clone(), facts[0].run_id.clone()), (format!("{run}:0:f0"), run.to_string()));
    assert_eq!(facts[0].payload, json!({ "n": 1 }));
    // Pruning runs keeps facts; pruning the ledger by time removes them.
    assert_eq!(a.store().prune_finished(Timestamp(i64::MAX)).await.unwrap(), 1);
    assert_eq!(a.store().ledger("action", None, Timestamp(0)).await.unwrap().len(), 1);
    assert_eq!(a.store().prune_ledger(Timestamp(i64::MAX)).await.unwrap(), 1);
    let err = a.store().create_run(&engine_new_run(), Timestamp(1)).await;
    assert!(err.is_ok(), "{err:?}");
    let taken =
        a.store().create_run(&engine::NewRun { id: engine::RunId::new(), ..engine_new_run() }, Timestamp(1)).await;
    assert!(matches!(taken, Err(Error::KeyTaken { .. })), "{taken:?}");
}

fn engine_new_run() -> engine::NewRun {
    engine::NewRun {
        id: engine::RunId::new(),
        graph: "wait".into(),
        graph_version: 1,
        node: "wait".into(),
        state: json!({}),
        correlation_key: Some("held".into()),
        start_key: None,
    }
}
