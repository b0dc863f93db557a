use std::collections::BTreeMap;
use std::path::Path;

use proptest::prelude::*;

use super::*;

#[test]
fn the_shipped_runbooks_load_and_cover_every_required_fault() {
    let runbooks = load_dir(&shipped_dir()).expect("shipped runbooks load");
    for anomaly in [
        "latency_spike",
        "error_rate_spike",
        "cpu_saturation",
        "memory_leak",
        "oom_killed",
        "db_connection_exhaustion",
        "consumer_lag",
        "bad_deployment",
        "crash_loop_backoff",
        "image_pull_backoff",
        "node_not_ready",
    ] {
        let found: Vec<&str> =
            runbooks.iter().filter(|r| r.answers(Some(anomaly), None)).map(|r| r.id.as_str()).collect();
        assert_eq!(found.len(), 1, "exactly one runbook answers `{anomaly}`: {found:?}");
    }
    let by_alert: Vec<&str> =
        runbooks.iter().filter(|r| r.answers(None, Some("KubePodCrashLooping"))).map(|r| r.id.as_str()).collect();
    assert_eq!(by_alert, ["crash-loop-backoff"]);
}

#[test]
fn the_built_in_runbooks_are_exactly_the_files_on_disk() {
    let from_disk = load_dir(&shipped_dir()).unwrap();
    assert_eq!(shipped().unwrap(), from_disk, "SHIPPED must list every file under nodes/runbooks/");
}

fn evidence(pairs: &[(&str, Evidence)]) -> BTreeMap<String, Evidence> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
}

#[test]
fn plans_follow_the_conditions_in_order() {
    let runbooks = load_dir(&shipped_dir()).unwrap();
    let latency = runbooks.iter().find(|r| r.id == "latency-spike").unwrap();
    let steps = |ev| latency.plan(&ev, "checkout", "prod").into_iter().map(|a| a.action.action).collect::<Vec<_>>();
    assert_eq!(steps(evidence(&[])), ["restart_deployment"]);
    assert_eq!(
        steps(evidence(&[
            ("minutes_since_deploy", Evidence::Number(12.0)),
            ("cpu_utilization", Evidence::Number(0.95))
        ])),
        ["rollback_deployment", "scale_deployment", "restart_deployment"]
    );
    let plan = latency.plan(&evidence(&[]), "checkout", "prod");
    assert_eq!(plan[0].action.target, "kubernetes:prod/checkout");
    assert_eq!(plan[0].estimated_downtime, std::time::Duration::from_secs(10));
    let cpu = runbooks.iter().find(|r| r.id == "cpu-saturation").unwrap();
    let plan = cpu.plan(&evidence(&[("platform", Evidence::Text("ecs".into()))]), "orders", "prod-cluster");
    assert_eq!(plan.len(), 1);
    assert_eq!(
        (plan[0].action.executor.as_str(), plan[0].action.params["factor"].clone()),
        ("ecs", serde_json::json!(2))
    );
}

#[track_caller]
fn refused(text: &str, expected: &str) {
    let err = parse(Path::new("runbooks/broken.yaml"), text).expect_err("a malformed runbook is refused");
    assert_eq!(err.to_string(), expected);
}

const GOOD_STEP: &str = "
steps:
  - name: restart
    action:
      executor: kubernetes
      action: restart_deployment
      target: \"kubernetes:{namespace}/{service}\"
      estimated_downtime_secs: 10
      blast_radius: single_service
      rollback: restore_pre_state
";

#[test]
fn malformed_runbooks_fail_with_file_and_line() {
    refused(
        &format!(
            "id: x\ntitle: X\nmatch:\n  anomaly_types: [a]\n{}",
            GOOD_STEP.replace("kubernetes\n", "kubernetes\n      colour: red\n")
        ),
        "runbooks/broken.yaml:10:7: steps[0].action: unknown field `colour`, expected one of `executor`, `action`, \
         `target`, `params`, `estimated_downtime_secs`, `blast_radius`, `rollback` at line 10 column 7",
    );
    refused(
        &format!("id: x\ntitle: X\nmatch:\n  anomaly_types: [a]\n{}", GOOD_STEP.replace("    action:\n", "    when: [\"cpu >> 3\"]\n    action:\n")),
        "runbooks/broken.yaml:8:11: steps[0].when: condition `cpu >> 3`: unknown operator `>>` (< <= > >= == !=) at line 8 column 11",
    );
    refused(
        &format!(
            "id: x\ntitle: X\nmatch:\n  anomaly_types: [a]\n{}",
            GOOD_STEP.replace("executor: kubernetes", "executor: azure")
        ),
        "runbooks/broken.yaml:9: step `restart`: unknown executor `azure` (ec2, ecs, kubernetes, mock)",
    );
    refused(
        &format!("id: x\ntitle: X\nmatch: {{}}\n{GOOD_STEP}"),
        "runbooks/broken.yaml:3: `match` needs anomaly_types or alert_names",
    );
    refused(
        "id: x\ntitle: [X]\n",
        "runbooks/broken.yaml:2:8: title: invalid type: sequence, expected a string at line 2 column 8",
    );
    refused("id: x\n\tid: y\n", "runbooks/broken.yaml:2:1: found a tab character that violates indentation at line 2 column 1, while scanning a plain scalar at line 1 column 5");
}

#[test]
fn conditions() {
    let ev = evidence(&[
        ("n", Evidence::Number(5.0)),
        ("flag", Evidence::Bool(true)),
        ("platform", Evidence::Text("ecs".into())),
    ]);
    for (cond, want) in [
        ("n < 6", true),
        ("n <= 5", true),
        ("n > 5", false),
        ("n >= 5", true),
        ("n == 5", true),
        ("n != 5", false),
        ("flag == true", true),
        ("flag != true", false),
        ("platform == ecs", true),
        ("platform == kubernetes", false),
        ("missing == true", false),
        ("n == ecs", false),
    ] {
        let c = Condition::try_from(cond.to_owned()).unwrap();
        assert_eq!(c.holds(&ev), want, "{cond}");
    }
    assert!(Condition::try_from("flag < true".to_owned()).is_err());
    assert!(Condition::try_from("just two".to_owned()).is_err());
}

proptest! {
    #[test]
    fn parsing_arbitrary_text_never_panics(text in "\\PC{0,400}") {
        let _ = parse(Path::new("fuzz.yaml"), &text);
    }

    #[test]
    fn a_condition_survives_a_round_trip(key in "[a-z_]{1,12}", op in 0usize..6, n in -1.0e6f64..1.0e6) {
        let ops = ["<", "<=", ">", ">=", "==", "!="];
        let c = Condition::try_from(format!("{key} {} {n}", ops[op])).unwrap();
        prop_assert_eq!(Condition::try_from(String::from(c.clone())).unwrap(), c);
    }
}
