use std::collections::BTreeMap;
use std::path::Path;

use proptest::prelude::*;

use super::*;
use crate::catalog::Catalog;
use crate::incident::{Detection, Source};

fn detection(service: &str, anomaly: &str) -> Detection {
    Detection {
        service: service.into(),
        anomaly_type: anomaly.into(),
        metric: "m".into(),
        observed: 1.0,
        baseline_mean: 0.0,
        baseline_stddev: 0.0,
        started_at: engine::Timestamp(0),
        source: Source::Detector { detector: "t".into(), score: 1.0, reason: String::new() },
        labels: BTreeMap::new(),
        annotations: BTreeMap::new(),
    }
}

fn alert(name: &str, labels: &[(&str, &str)]) -> Detection {
    let mut d = detection("checkout", "alert");
    d.source = Source::Alertmanager {
        group_key: "g".into(),
        alertname: name.into(),
        fingerprints: vec![],
        expr: None,
        group_labels: Default::default(),
    };
    d.labels = labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    d
}

#[test]
fn the_shipped_runbooks_load_and_cover_every_required_fault() {
    let runbooks = Runbooks::shipped().expect("shipped runbooks load");
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
        let d = detection("checkout", anomaly);
        let found: Vec<&str> =
            runbooks.iter().filter(|r| r.fit(&d, &BTreeMap::new()).is_some()).map(|r| r.id.as_str()).collect();
        assert_eq!(found.len(), 1, "exactly one runbook answers `{anomaly}`: {found:?}");
    }
}

#[test]
fn the_common_kube_prometheus_alerts_each_have_a_runbook() {
    let runbooks = Runbooks::shipped().unwrap();
    let chosen = |name: &str, labels: &[(&str, &str)]| {
        runbooks.choose(&alert(name, labels), &BTreeMap::new()).map(|r| r.id.as_str())
    };
    let pod = [("namespace", "shop"), ("pod", "checkout-7d9f8b6c5-x2x9q"), ("container", "app")];
    assert_eq!(chosen("KubePodCrashLooping", &pod), Some("crash-loop-backoff"));
    assert_eq!(chosen("KubePodCrashLooping", &[("reason", "OOMKilled")]), Some("memory-leak"), "the OOM case");
    assert_eq!(chosen("KubeContainerOOMKilled", &pod), Some("memory-leak"));
    assert_eq!(chosen("KubePodNotReady", &pod), Some("pod-not-ready"));
    assert_eq!(chosen("KubeContainerWaiting", &[("reason", "CrashLoopBackOff")]), Some("crash-loop-backoff"));
    assert_eq!(chosen("KubeContainerWaiting", &[("reason", "ErrImagePull")]), Some("image-pull-backoff"));
    assert_eq!(chosen("KubeContainerWaiting", &[("reason", "ContainerCreating")]), Some("pod-not-ready"));
    assert_eq!(chosen("KubeDeploymentReplicasMismatch", &[("deployment", "checkout")]), Some("bad-deployment"));
    assert_eq!(chosen("CPUThrottlingHigh", &pod), Some("cpu-saturation"));
    assert_eq!(chosen("KubeNodeNotReady", &[("node", "ip-10-0-1-7")]), Some("node-not-ready"));
    assert_eq!(chosen("TargetDown", &[("job", "checkout")]), Some("target-down"));
    assert_eq!(chosen("KubeHpaMaxedOut", &[("horizontalpodautoscaler", "checkout")]), Some("hpa-maxed-out"));
    assert_eq!(
        chosen("KubePersistentVolumeFillingUp", &[("persistentvolumeclaim", "data-0")]),
        Some("volume-filling-up")
    );
    assert_eq!(chosen("SomethingNobodyWroteARunbookFor", &pod), None);
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
fn plans_follow_the_conditions_in_order_with_targets_from_the_catalogue() {
    let runbooks = load_dir(&shipped_dir()).unwrap();
    let catalog = Catalog::every_service_in("prod");
    let latency = runbooks.iter().find(|r| r.id == "latency-spike").unwrap();
    let d = detection("checkout", "latency_spike");
    let steps = |ev| latency.plan(&ev, &d, &catalog).actions.into_iter().map(|a| a.action.action).collect::<Vec<_>>();
    assert_eq!(steps(evidence(&[])), ["restart_deployment"]);
    assert_eq!(
        steps(evidence(&[
            ("minutes_since_deploy", Evidence::Number(12.0)),
            ("cpu_utilization", Evidence::Number(0.95))
        ])),
        ["rollback_deployment", "scale_deployment", "restart_deployment"]
    );
    let plan = latency.plan(&evidence(&[]), &d, &catalog);
    assert_eq!(plan.actions[0].action.target, "kubernetes:prod/checkout");
    assert_eq!(plan.actions[0].estimated_downtime, std::time::Duration::from_secs(10));

    // ECS steps need an ECS placement: without one they are reported, not planned.
    let cpu = runbooks.iter().find(|r| r.id == "cpu-saturation").unwrap();
    let ecs = evidence(&[("platform", Evidence::Text("ecs".into()))]);
    let plan = cpu.plan(&ecs, &detection("orders", "cpu_saturation"), &catalog);
    assert!(plan.actions.is_empty());
    assert!(plan.untargeted[0].contains("`orders` has no ecs placement"), "{:?}", plan.untargeted);
    let orders = crate::catalog::Service {
        name: "orders".into(),
        runs_on: crate::catalog::Placement {
            ecs: Some(crate::catalog::EcsService { cluster: "prod-cluster".into(), service: None }),
            ..Default::default()
        },
        ..Default::default()
    };
    let catalog = Catalog::new(vec![orders], None).unwrap();
    let plan = cpu.plan(&ecs, &detection("orders", "cpu_saturation"), &catalog);
    assert_eq!(plan.actions.len(), 1);
    assert_eq!(
        (
            plan.actions[0].action.executor.as_str(),
            plan.actions[0].action.target.as_str(),
            plan.actions[0].action.params["factor"].clone()
        ),
        ("ecs", "ecs:prod-cluster/orders", serde_json::json!(2))
    );
}

#[test]
fn an_instance_placed_by_tags_is_acted_on_with_the_tags_it_must_carry() {
    let runbooks = load_dir(&shipped_dir()).unwrap();
    let node = runbooks.iter().find(|r| r.id == "node-not-ready").unwrap();
    let tags = BTreeMap::from([("Service".to_owned(), "web".to_owned())]);
    let web = crate::catalog::Service {
        name: "web".into(),
        runs_on: crate::catalog::Placement {
            ec2: Some(crate::catalog::Ec2Instances { region: "eu-west-1".into(), tags, ..Default::default() }),
            ..Default::default()
        },
        ..Default::default()
    };
    let catalog = Catalog::new(vec![web], None).unwrap();
    let mut d = alert("KubeNodeNotReady", &[("node", "ip-10-0-0-7"), ("instance_id", "i-0abc")]);
    d.service = "web".into();
    let ec2 = evidence(&[("platform", Evidence::Text("ec2".into()))]);
    let plan = node.plan(&ec2, &d, &catalog);
    let reboot = plan.actions.iter().find(|a| a.action.executor == "ec2").expect("the reboot is planned");
    assert_eq!(reboot.action.target, "ec2:eu-west-1/i-0abc");
    assert_eq!(reboot.action.params[crate::catalog::REQUIRE_TAGS], serde_json::json!({ "Service": "web" }));
    let drain = plan.actions.iter().find(|a| a.action.executor == "kubernetes").unwrap();
    assert!(!drain.action.params.contains_key(crate::catalog::REQUIRE_TAGS), "only steps on the instance carry them");
}

#[test]
fn alertmanager_matchers() {
    let m = |s: &str| Matcher::try_from(s.to_owned());
    let labels: BTreeMap<String, String> = [("service", "checkout"), ("severity", "critical"), ("path", "/a \"b\"")]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    for (matcher, want) in [
        ("service=checkout", true),
        ("service=\"checkout\"", true),
        ("service = \"checkout\"", true),
        ("service!=checkout", false),
        ("service=~\"check.*\"", true),
        ("service=~\"check\"", false), // anchored, as in Alertmanager
        ("service!~\"cart|search\"", true),
        ("severity=~\"warning|critical\"", true),
        ("team=\"\"", true), // a missing label is the empty string
        ("team!=\"\"", false),
        ("path=\"/a \\\"b\\\"\"", true),
    ] {
        assert_eq!(m(matcher).unwrap().matches(&labels), want, "{matcher}");
    }
    for bad in ["=x", "service", "service==x", "service=~\"(\"", "service=\"open", "1x=y", "service=\"a\"b"] {
        assert!(m(bad).is_err(), "{bad} must be refused");
    }
    let round = m("service=~\"a|b\"").unwrap();
    assert_eq!(Matcher::try_from(String::from(round.clone())).unwrap(), round);
}

#[test]
fn a_team_runbook_answers_before_a_shipped_one_and_replaces_one_with_its_id() {
    let dir = std::env::temp_dir().join(format!("sentinel-runbooks-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let team = |id: &str, alerts: &str| format!("id: {id}\ntitle: T\nmatch:\n  alerts: {alerts}\n{}", GOOD_STEP);
    std::fs::write(dir.join("a.yaml"), team("crash-loop-backoff", "[KubePodCrashLooping]")).unwrap();
    std::fs::write(dir.join("b.yaml"), team("ours", "[{ name: HighLatency, matchers: ['tier=\"1\"'] }]")).unwrap();
    let runbooks = Runbooks::load(std::slice::from_ref(&dir)).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(runbooks.team_count(), 2);
    assert_eq!(runbooks.iter().filter(|r| r.id == "crash-loop-backoff").count(), 1, "replaced, not doubled");
    let chosen = |d: &Detection| runbooks.choose(d, &BTreeMap::new()).map(|r| r.title.clone());
    assert_eq!(chosen(&alert("KubePodCrashLooping", &[])).as_deref(), Some("T"));
    assert_eq!(chosen(&alert("HighLatency", &[("tier", "1")])).as_deref(), Some("T"));
    assert_eq!(chosen(&alert("HighLatency", &[("tier", "2")])), None);
    assert_eq!(chosen(&detection("x", "latency_spike")).as_deref(), Some("Latency spike"), "shipped ones still answer");
}

#[track_caller]
fn refused(text: &str, expected: &str) {
    let err = parse(Path::new("runbooks/broken.yaml"), text).expect_err("a malformed runbook is refused").to_string();
    assert!(err.starts_with(expected), "`{err}` is not `{expected}…`");
}

const GOOD_STEP: &str = "
steps:
  - name: restart
    action:
      executor: kubernetes
      action: restart_deployment
      target: \"kubernetes:{namespace}/{deployment}\"
      estimated_downtime_secs: 10
      blast_radius: single_service
      rollback: restore_pre_state
";

#[test]
fn malformed_runbooks_fail_with_file_line_and_column() {
    let head = "id: x\ntitle: X\nmatch:\n  anomaly_types: [a]\n";
    refused(
        &format!("{head}{}", GOOD_STEP.replace("kubernetes\n", "kubernetes\n      colour: red\n")),
        "runbooks/broken.yaml:10:7: unknown field `colour`",
    );
    refused(
        &format!("{head}{}", GOOD_STEP.replace("    action:\n", "    when: [\"cpu >> 3\"]\n    action:\n")),
        "runbooks/broken.yaml:8:12: condition `cpu >> 3`: unknown operator `>>` (< <= > >= == !=)",
    );
    refused(
        &format!("{head}{}", GOOD_STEP.replace("executor: kubernetes", "executor: azure")),
        "runbooks/broken.yaml:9:17: step `restart`: unknown executor `azure` (ec2, ecs, kubernetes, mock)",
    );
    refused(
        &format!("{head}{}", GOOD_STEP.replace("{deployment}", "{pod}")),
        "runbooks/broken.yaml:11:15: step `restart`: target `kubernetes:{namespace}/{pod}`: unknown placeholder `{pod}`",
    );
    refused(
        &format!("{head}{}", GOOD_STEP.replace("\"kubernetes:", "\"ecs:")),
        "runbooks/broken.yaml:11:15: step `restart`: target `ecs:{namespace}/{deployment}` does not start with `kubernetes:`",
    );
    refused(
        &format!("id: x\ntitle: X\nmatch: {{}}\n{GOOD_STEP}"),
        "runbooks/broken.yaml:3:8: `match` needs anomaly_types, alerts or facts",
    );
    refused(
        &format!("id: x\ntitle: X\nmatch:\n  alerts: [{{ name: A, matchers: ['sev=~\"(\"']}}]\n{GOOD_STEP}"),
        "runbooks/broken.yaml:4:",
    );
    refused("id: x\ntitle: [X]\n", "runbooks/broken.yaml:2:8: ");
    refused("id: x\n\tid: y\n", "runbooks/broken.yaml:1:5: while scanning a plain scalar, found a tab");
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
