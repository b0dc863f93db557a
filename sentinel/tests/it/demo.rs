//! `sentinel demo` end to end: every injected fault becomes an incident that
//! runs through the graph to a recorded end, with a postmortem on disk. With
//! semantic memory on (the model the test command names in
//! SENTINEL_TEST_MODEL_DIR), as a team with the model would run it.

use std::time::Duration;

use lab::demo::{run, DemoConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_takes_every_fault_through_the_graph() {
    let dir = std::env::temp_dir().join(format!("sentinel-demo-{}", uuid::Uuid::new_v4().simple()));
    let model_dir = std::env::var_os("SENTINEL_TEST_MODEL_DIR").map(std::path::PathBuf::from);
    let rows = run(DemoConfig {
        data_dir: dir.clone(),
        run_for: Duration::ZERO,
        seed: 7,
        model_dir,
        listen: "127.0.0.1:0".into(),
        keep: false,
    })
    .await
    .expect("the demo runs");

    for scenario in [
        "latency spike",
        "error-rate spike",
        "CPU saturation",
        "memory leak",
        "DB connection exhaustion",
        "consumer lag",
        "failed deployment",
    ] {
        let row = rows
            .iter()
            .find(|r| r.incident.contains(&format!("({scenario})")))
            .unwrap_or_else(|| panic!("no incident for `{scenario}`: {rows:#?}"));
        assert_eq!(row.outcome, "resolved", "{row:#?}");
        assert!(row.mttr_secs.is_some_and(|m| m > 0.0));
        let pm = std::fs::read_to_string(row.postmortem.as_ref().expect("a postmortem path")).unwrap();
        assert!(pm.contains("## Timeline") && pm.contains("## Decisions"), "{pm}");
    }
    // Risky ones stopped at the gate and were approved through the REST API.
    assert!(rows.iter().any(|r| r.decisions.contains("approved by demo-operator")), "{rows:#?}");
    assert!(rows.iter().any(|r| r.decisions.contains("approved by policy")), "{rows:#?}");
    // The consumer-lag fix needs a second action: the first is rolled back.
    let lag = rows.iter().find(|r| r.incident.contains("(consumer lag)")).unwrap();
    let pm = std::fs::read_to_string(lag.postmortem.as_ref().unwrap()).unwrap();
    assert!(pm.contains("`rollback` restored kubernetes:prod/billing-consumer"), "{pm}");
    let _ = std::fs::remove_dir_all(dir);
}
