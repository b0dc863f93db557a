//! SIGKILL a worker process in the middle of a node; another resumes the run.

use std::collections::BTreeSet;
use std::time::Duration;

use engine::RunStatus;
use lab::bench::Effects;

use crate::support::{
    admin_url, assert_history_contiguous, engine, eventually, fresh_database, witness_counts, witness_path,
    WorkerProcess,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_step_loses_nothing_and_repeats_no_side_effect() {
    let url = fresh_database(&admin_url()).await;
    let engine = engine(&url).await;
    let witness = witness_path("crash");
    let steps = 6;
    let state = Effects { i: 0, steps, witness: witness.clone(), pause_in_act_ms: 500, pause_after_ms: 500 };
    let run = engine.start("bench.effects", &state).await.unwrap();
    let line = |i: u32| format!("{run}:{i}");

    // Kill 1: inside the action of step 1, after it acted, before its outcome was recorded.
    let first = WorkerProcess::spawn(&url, "victim-1", 1, 1500);
    eventually("step 1 to act", Duration::from_secs(30), || {
        let seen = witness_counts(&witness).contains_key(&line(1));
        async move { seen }
    })
    .await;
    first.kill();
    let effects = engine.detail(run).await.unwrap().effects;
    let write1 = effects.iter().find(|e| e.key == "write-1").expect("intent of step 1 recorded");
    assert!(write1.outcome.is_none(), "killed before the outcome was recorded");

    // Kill 2: after step 3's effect outcome was recorded, before its checkpoint.
    let second = WorkerProcess::spawn(&url, "victim-2", 1, 1500);
    eventually("step 3's outcome", Duration::from_secs(30), || {
        let engine = engine.clone();
        async move {
            let effects = engine.detail(run).await.map(|d| d.effects).unwrap_or_default();
            effects.iter().any(|e| e.key == "write-3" && e.outcome.is_some())
        }
    })
    .await;
    second.kill();
    let r = engine.run(run).await.unwrap();
    assert_eq!((r.status, r.step), (RunStatus::Running, 3), "killed mid-step, the run still holds a dead lease");

    let _finisher = WorkerProcess::spawn(&url, "finisher", 1, 1500);
    eventually("the run to finish", Duration::from_secs(60), || {
        let engine = engine.clone();
        async move { engine.run(run).await.is_ok_and(|r| r.status.is_finished()) }
    })
    .await;

    let done = engine.run(run).await.unwrap();
    assert_eq!(done.status, RunStatus::Completed, "error: {:?}", done.error);
    // Every side effect performed exactly once, and nothing else performed.
    let counts = witness_counts(&witness);
    let expected: BTreeSet<String> = (0..steps).map(line).collect();
    assert_eq!(counts.keys().cloned().collect::<BTreeSet<_>>(), expected);
    assert!(counts.values().all(|&n| n == 1), "a side effect ran twice: {counts:?}");
    // The history: one row per step (six steps and the finish), no gap, no duplicate.
    let history = assert_history_contiguous(&engine, run).await;
    assert_eq!(history.len(), steps as usize + 1);
    let workers: BTreeSet<&str> = history.iter().map(|c| c.worker.as_str()).collect();
    assert!(workers.contains("finisher"), "the run was resumed by another process: {workers:?}");
    assert_eq!(history[1].worker, "victim-2", "step 1 was redone by the second worker");
    let _ = std::fs::remove_file(&witness);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_worker_processes_run_every_step_of_every_run_exactly_once() {
    let url = fresh_database(&admin_url()).await;
    let engine = engine(&url).await;
    let witness = witness_path("concurrency");
    let (runs, steps) = (300u32, 3u32);
    let mut ids = Vec::new();
    for _ in 0..runs {
        let state = Effects { i: 0, steps, witness: witness.clone(), pause_in_act_ms: 0, pause_after_ms: 0 };
        ids.push(engine.start("bench.effects", &state).await.unwrap());
    }
    let workers: Vec<WorkerProcess> =
        (0..3).map(|i| WorkerProcess::spawn(&url, &format!("proc-{i}"), 4, 10_000)).collect();
    eventually("every run to finish", Duration::from_secs(120), || {
        let engine = engine.clone();
        async move {
            let counts = engine.store().count_by_status().await.unwrap_or_default();
            counts.iter().filter(|(s, _)| s.is_finished()).map(|(_, n)| n).sum::<i64>() == i64::from(runs)
        }
    })
    .await;
    drop(workers);

    let counts = witness_counts(&witness);
    assert_eq!(counts.len(), (runs * steps) as usize, "every step acted");
    assert!(counts.values().all(|&n| n == 1), "some step acted twice");
    let mut by_worker = BTreeSet::new();
    for id in ids {
        let run = engine.run(id).await.unwrap();
        assert_eq!(run.status, RunStatus::Completed, "run {id}: {:?}", run.error);
        let history = assert_history_contiguous(&engine, id).await;
        assert_eq!(history.len(), steps as usize + 1);
        by_worker.extend(history.into_iter().map(|c| c.worker));
    }
    assert!(by_worker.len() > 1, "work was shared between processes: {by_worker:?}");
    let _ = std::fs::remove_file(&witness);
}
