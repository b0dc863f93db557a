//! EC2 and ECS executors against a real moto server (scripts/ensure-moto.sh
//! starts one on 127.0.0.1:5055; SENTINEL_TEST_AWS_ENDPOINT overrides it):
//! each action and its rollback, asserted on the state moto reports.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_ec2::config::Credentials;
use executors::aws::{AwsConfig, Ec2Executor, EcsExecutor, KEY_TAG};
use executors::{Action, ExecError, Executor};
use serde_json::json;

fn endpoint() -> String {
    std::env::var("SENTINEL_TEST_AWS_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:5055".to_owned())
}

async fn sdk() -> SdkConfig {
    let url = endpoint();
    let answers = reqwest_free_probe(&url).await;
    assert!(answers, "no moto server answers at {url}: run scripts/ensure-moto.sh (the test command does)");
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(url)
        .credentials_provider(Credentials::new("testing", "testing", None, None, "sentinel-tests"))
        .load()
        .await
}

/// A TCP connect is enough to tell "nothing listens" from "moto is there".
async fn reqwest_free_probe(url: &str) -> bool {
    let addr = url.trim_start_matches("http://").trim_end_matches('/').to_owned();
    tokio::net::TcpStream::connect(addr).await.is_ok()
}

fn config() -> AwsConfig {
    AwsConfig {
        endpoint_url: Some(endpoint()),
        wait_timeout: Duration::from_secs(20),
        poll_interval: Duration::from_millis(100),
        ..AwsConfig::default()
    }
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{prefix}-{nanos}")
}

fn action(executor: &str, name: &str, target: &str, params: serde_json::Value) -> Action {
    let params: BTreeMap<String, serde_json::Value> = serde_json::from_value(params).unwrap();
    Action { executor: executor.into(), action: name.into(), target: target.into(), params }
}

/// A cluster with service `api` running 2 tasks of revision 2 of its task definition.
async fn ecs_service(sdk: &SdkConfig) -> (aws_sdk_ecs::Client, String, String) {
    let ecs = aws_sdk_ecs::Client::new(sdk);
    let cluster = unique("cluster");
    ecs.create_cluster().cluster_name(&cluster).send().await.unwrap();
    let family = unique("web");
    let mut arns = Vec::new();
    for image in ["nginx:1.25", "nginx:1.27"] {
        let container = aws_sdk_ecs::types::ContainerDefinition::builder().name("web").image(image).memory(128).build();
        let out = ecs.register_task_definition().family(&family).container_definitions(container).send().await.unwrap();
        arns.push(out.task_definition().unwrap().task_definition_arn().unwrap().to_owned());
    }
    ecs.create_service()
        .cluster(&cluster)
        .service_name("api")
        .task_definition(&arns[1])
        .desired_count(2)
        .send()
        .await
        .unwrap();
    // moto reports a new service's tasks as running only once its desired
    // count has been set through UpdateService: do so, so the service starts
    // stable (running == desired), as a real one is before an incident.
    ecs.update_service().cluster(&cluster).service("api").desired_count(2).send().await.unwrap();
    assert_eq!(ecs_state(&ecs, &cluster).await.1, 2, "the fixture's service is stable");
    (ecs, cluster, family)
}

async fn ecs_state(ecs: &aws_sdk_ecs::Client, cluster: &str) -> (i32, i32, String) {
    let out = ecs.describe_services().cluster(cluster).services("api").send().await.unwrap();
    let s = &out.services()[0];
    (s.desired_count(), s.running_count(), s.task_definition().unwrap().to_owned())
}

#[tokio::test]
async fn ecs_scale_and_its_rollback() {
    let sdk = sdk().await;
    let (ecs, cluster, _) = ecs_service(&sdk).await;
    let exec = EcsExecutor::from_sdk(&sdk, config());
    let scale = action("ecs", "scale_service", &format!("ecs:{cluster}/api"), json!({ "factor": 2 }));

    let pre = exec.describe(&scale).await.unwrap();
    assert_eq!(pre["desired_count"], 2);
    let plan = exec.dry_run(&scale, &pre).await.unwrap();
    assert_eq!(plan.blast.replicas, Some((2, 4)));
    assert_eq!(ecs_state(&ecs, &cluster).await.0, 2, "a dry run changes nothing");

    let out = exec.execute(&scale, &pre, "run-1:apply-0").await.unwrap();
    assert!(out.changed, "{out:?}");
    assert_eq!(ecs_state(&ecs, &cluster).await.0, 4);
    // The same execute again (a crash before its outcome was recorded): the
    // world already holds 4 tasks, so nothing is sent.
    let again = exec.execute(&scale, &pre, "run-1:apply-0").await.unwrap();
    assert!(!again.changed);
    assert_eq!(ecs_state(&ecs, &cluster).await.0, 4);

    let back = exec.rollback(&scale, &pre, "run-1:restore-0").await.unwrap();
    assert!(back.changed);
    let (desired, running, _) = ecs_state(&ecs, &cluster).await;
    assert_eq!((desired, running), (2, 2), "the desired count ends where it started");
}

#[tokio::test]
async fn ecs_task_definition_rollback_and_forced_deployment() {
    let sdk = sdk().await;
    let (ecs, cluster, family) = ecs_service(&sdk).await;
    let exec = EcsExecutor::from_sdk(&sdk, config());
    let target = format!("ecs:{cluster}/api");

    let roll = action("ecs", "rollback_task_definition", &target, json!({}));
    let pre = exec.describe(&roll).await.unwrap();
    assert!(pre["task_definition"].as_str().unwrap().ends_with(&format!("{family}:2")));
    let out = exec.execute(&roll, &pre, "run-2:apply-0").await.unwrap();
    assert!(out.changed);
    assert!(ecs_state(&ecs, &cluster).await.2.ends_with(&format!("{family}:1")));
    assert!(!exec.execute(&roll, &pre, "run-2:apply-0").await.unwrap().changed, "already on the previous revision");
    exec.rollback(&roll, &pre, "run-2:restore-0").await.unwrap();
    assert!(ecs_state(&ecs, &cluster).await.2.ends_with(&format!("{family}:2")), "back on the revision it ran");

    let force = action("ecs", "force_new_deployment", &target, json!({}));
    let pre = exec.describe(&force).await.unwrap();
    assert!(exec.execute(&force, &pre, "run-3:apply-0").await.unwrap().changed);
    assert!(!exec.execute(&force, &pre, "run-3:apply-0").await.unwrap().changed, "the key tag says it is done");
    let arn = ecs.describe_services().cluster(&cluster).services("api").send().await.unwrap().services()[0]
        .service_arn()
        .unwrap()
        .to_owned();
    let tags = ecs.list_tags_for_resource().resource_arn(arn).send().await.unwrap();
    assert!(tags.tags().iter().any(|t| t.key() == Some(KEY_TAG) && t.value() == Some("run-3:apply-0")));

    let missing = action("ecs", "scale_service", &format!("ecs:{cluster}/nope"), json!({}));
    assert!(matches!(exec.describe(&missing).await.unwrap_err(), ExecError::NotFound(_)));
    let unknown = action("ecs", "make_coffee", &target, json!({}));
    assert!(matches!(exec.dry_run(&unknown, &pre).await.unwrap_err(), ExecError::Unsupported { .. }));
}

#[tokio::test]
async fn ec2_stop_start_reboot_and_rollback() {
    let sdk = sdk().await;
    let ec2 = aws_sdk_ec2::Client::new(&sdk);
    let out = ec2.run_instances().image_id("ami-12c6146b").min_count(1).max_count(1).send().await.unwrap();
    let id = out.instances()[0].instance_id().unwrap().to_owned();
    let exec = Ec2Executor::from_sdk(&sdk, config());
    let state = |ec2: aws_sdk_ec2::Client, id: String| async move {
        let out = ec2.describe_instances().instance_ids(id).send().await.unwrap();
        out.reservations()[0].instances()[0].state().unwrap().name().unwrap().as_str().to_owned()
    };
    let target = format!("ec2:us-east-1/{id}");
    let stop = action("ec2", "stop_instance", &target, json!({}));
    let pre = exec.describe(&stop).await.unwrap();
    assert_eq!(pre["state"], "running");
    assert!(exec.execute(&stop, &pre, "run-4:apply-0").await.unwrap().changed);
    assert_eq!(state(ec2.clone(), id.clone()).await, "stopped");
    assert!(!exec.execute(&stop, &pre, "run-4:apply-0").await.unwrap().changed, "already stopped");
    assert!(exec.rollback(&stop, &pre, "run-4:restore-0").await.unwrap().changed);
    assert_eq!(state(ec2.clone(), id.clone()).await, "running", "back to its prior state");

    let reboot = action("ec2", "reboot_instance", &target, json!({}));
    let pre = exec.describe(&reboot).await.unwrap();
    assert!(exec.execute(&reboot, &pre, "run-5:apply-0").await.unwrap().changed);
    assert!(!exec.execute(&reboot, &pre, "run-5:apply-0").await.unwrap().changed, "one reboot per key");
    assert_eq!(state(ec2.clone(), id.clone()).await, "running");

    let missing = action("ec2", "stop_instance", "ec2:us-east-1/i-0000000000000000f", json!({}));
    let err = exec.describe(&missing).await.unwrap_err();
    assert!(matches!(err, ExecError::NotFound(_)), "{err}");
}

/// A service placed by tags: the executor acts on the instance an alert
/// names only once AWS shows it carries the catalogue's tags.
#[tokio::test]
async fn ec2_acts_only_on_an_instance_carrying_the_required_tags() {
    let sdk = sdk().await;
    let ec2 = aws_sdk_ec2::Client::new(&sdk);
    let tagged = |service: &str| {
        aws_sdk_ec2::types::TagSpecification::builder()
            .resource_type(aws_sdk_ec2::types::ResourceType::Instance)
            .tags(aws_sdk_ec2::types::Tag::builder().key("Service").value(service).build())
            .build()
    };
    let run = |service: &'static str| {
        let ec2 = ec2.clone();
        let spec = tagged(service);
        async move {
            let out = ec2.run_instances().image_id("ami-12c6146b").min_count(1).max_count(1).tag_specifications(spec);
            out.send().await.unwrap().instances()[0].instance_id().unwrap().to_owned()
        }
    };
    let ours = run("checkout").await;
    let theirs = run("payments").await;
    let exec = Ec2Executor::from_sdk(&sdk, config());
    let require = json!({ "require_tags": { "Service": "checkout" } });

    let stop = action("ec2", "stop_instance", &format!("ec2:us-east-1/{ours}"), require.clone());
    let pre = exec.describe(&stop).await.unwrap();
    assert_eq!(pre["state"], "running");
    assert!(exec.execute(&stop, &pre, "run-6:apply-0").await.unwrap().changed);

    let wrong = action("ec2", "stop_instance", &format!("ec2:us-east-1/{theirs}"), require);
    let err = exec.describe(&wrong).await.unwrap_err();
    assert!(
        matches!(&err, ExecError::Refused { guard: "catalogue", reason } if reason.contains("Service=checkout")),
        "{err}"
    );
    let err = exec.execute(&wrong, &pre, "run-7:apply-0").await.unwrap_err();
    assert!(matches!(err, ExecError::Refused { .. }), "{err}");
    let out = ec2.describe_instances().instance_ids(&theirs).send().await.unwrap();
    let state = out.reservations()[0].instances()[0].state().unwrap().name().unwrap().as_str().to_owned();
    assert_eq!(state, "running", "another service's instance is left alone");

    let malformed = action("ec2", "stop_instance", &format!("ec2:us-east-1/{ours}"), json!({ "require_tags": ["x"] }));
    assert!(matches!(exec.describe(&malformed).await.unwrap_err(), ExecError::BadAction(_)));
}
