//! AWS executors: EC2 instances and ECS services, through the official SDK.
//! Region and credentials come from the standard AWS chain; an endpoint URL
//! can point the SDK elsewhere (a moto server in the tests).
//!
//! Every mutation checks the world first and waits for the expected state
//! afterwards. Actions that leave no trace in the state they change (reboot,
//! force a deployment) tag the resource with the idempotency key, so a repeat
//! after a crash finds the tag and does not act again.

use std::time::Duration;

use async_trait::async_trait;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata};
use serde_json::{json, Value};

use crate::{wait_until, Action, Blast, ExecError, Executor, Outcome};

/// The tag holding the idempotency key of the last action Sentinel took.
pub const KEY_TAG: &str = "sentinel:last-action-key";

#[derive(Clone, Debug)]
pub struct AwsConfig {
    /// Overrides the region of the standard chain.
    pub region: Option<String>,
    /// Overrides the service endpoints (moto, LocalStack, a VPC endpoint).
    pub endpoint_url: Option<String>,
    /// How long to wait for a target to reach the expected state.
    pub wait_timeout: Duration,
    pub poll_interval: Duration,
}

impl Default for AwsConfig {
    fn default() -> Self {
        AwsConfig {
            region: None,
            endpoint_url: None,
            wait_timeout: Duration::from_secs(300),
            poll_interval: Duration::from_secs(5),
        }
    }
}

pub async fn sdk_config(c: &AwsConfig) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(region) = &c.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(url) = &c.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    loader.load().await
}

fn backend<E: std::error::Error + ProvideErrorMetadata + 'static>(
    what: &str,
    e: aws_sdk_ec2::error::SdkError<E>,
) -> ExecError {
    let not_found = e.code().is_some_and(|c| c.contains("NotFound") || c.contains("NotFoundException"));
    let text = format!("{what}: {}", DisplayErrorContext(&e));
    if not_found {
        ExecError::NotFound(text)
    } else {
        ExecError::Backend(text)
    }
}

fn unsupported(executor: &str, action: &Action) -> ExecError {
    ExecError::Unsupported { executor: executor.to_owned(), action: action.action.clone() }
}

// ---- EC2 ------------------------------------------------------------------------

/// The parameter naming tags the instance must carry before anything is
/// done to it (the service catalogue's, for services placed by tags).
pub const REQUIRE_TAGS: &str = "require_tags";

/// `reboot_instance`, `stop_instance`, `start_instance` on `ec2:REGION/INSTANCE_ID`;
/// with [`REQUIRE_TAGS`], only on an instance that carries those tags.
pub struct Ec2Executor {
    client: aws_sdk_ec2::Client,
    config: AwsConfig,
}

impl Ec2Executor {
    pub async fn new(config: AwsConfig) -> Ec2Executor {
        Ec2Executor::from_sdk(&sdk_config(&config).await, config)
    }

    /// With an SDK configuration built by the caller (its own credentials provider).
    pub fn from_sdk(sdk: &aws_config::SdkConfig, config: AwsConfig) -> Ec2Executor {
        Ec2Executor { client: aws_sdk_ec2::Client::new(sdk), config }
    }

    /// (state name, value of the key tag).
    async fn state(&self, id: &str) -> Result<(String, Option<String>), ExecError> {
        let (state, tags) = self.instance(id).await?;
        Ok((state, tags.get(KEY_TAG).cloned()))
    }

    /// (state name, tags).
    async fn instance(&self, id: &str) -> Result<(String, std::collections::BTreeMap<String, String>), ExecError> {
        let out = self
            .client
            .describe_instances()
            .instance_ids(id)
            .send()
            .await
            .map_err(|e| backend("DescribeInstances", e))?;
        let instance = out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .find(|i| i.instance_id() == Some(id))
            .ok_or_else(|| ExecError::NotFound(format!("instance {id}")))?;
        let state = instance.state().and_then(|s| s.name()).map_or("unknown", |n| n.as_str()).to_owned();
        let tags = instance
            .tags()
            .iter()
            .filter_map(|t| Some((t.key()?.to_owned(), t.value().unwrap_or_default().to_owned())))
            .collect();
        Ok((state, tags))
    }

    /// Refuses an instance without the tags the action requires.
    async fn check_tags(&self, id: &str, action: &Action) -> Result<(), ExecError> {
        let Some(required) = action.params.get(REQUIRE_TAGS) else { return Ok(()) };
        let required: std::collections::BTreeMap<String, String> = serde_json::from_value(required.clone())
            .map_err(|e| ExecError::BadAction(format!("`{REQUIRE_TAGS}` must map tag keys to values: {e}")))?;
        let (_, tags) = self.instance(id).await?;
        let missing: Vec<String> =
            required.iter().filter(|(k, v)| tags.get(*k) != Some(*v)).map(|(k, v)| format!("{k}={v}")).collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(ExecError::Refused {
                guard: "catalogue",
                reason: format!("instance {id} does not carry {}: it is not the service's", missing.join(", ")),
            })
        }
    }

    async fn wait_for(&self, id: &str, want: &str) -> Result<(), ExecError> {
        wait_until(
            &format!("instance {id} to be {want}"),
            self.config.wait_timeout,
            self.config.poll_interval,
            || async { Ok(self.state(id).await?.0 == want) },
        )
        .await
    }

    async fn tag(&self, id: &str, key: &str) -> Result<(), ExecError> {
        let tag = aws_sdk_ec2::types::Tag::builder().key(KEY_TAG).value(key).build();
        self.client.create_tags().resources(id).tags(tag).send().await.map_err(|e| backend("CreateTags", e))?;
        Ok(())
    }

    /// Moves the instance to `want` (running or stopped) unless it is there.
    async fn ensure(&self, id: &str, want: &str) -> Result<bool, ExecError> {
        let (state, _) = self.state(id).await?;
        if state == want {
            return Ok(false);
        }
        match want {
            "stopped" => {
                self.client.stop_instances().instance_ids(id).send().await.map_err(|e| backend("StopInstances", e))?;
            }
            _ => {
                self.client
                    .start_instances()
                    .instance_ids(id)
                    .send()
                    .await
                    .map_err(|e| backend("StartInstances", e))?;
            }
        }
        self.wait_for(id, want).await?;
        Ok(true)
    }
}

#[async_trait]
impl Executor for Ec2Executor {
    fn kind(&self) -> &'static str {
        "ec2"
    }

    async fn describe(&self, action: &Action) -> Result<Value, ExecError> {
        let id = action.target()?.name;
        self.check_tags(&id, action).await?;
        let (state, _) = self.state(&id).await?;
        Ok(json!({ "instance_id": id, "state": state }))
    }

    async fn dry_run(&self, action: &Action, pre: &Value) -> Result<Outcome, ExecError> {
        let id = action.target()?.name;
        let after = match action.action.as_str() {
            "reboot_instance" | "start_instance" => "running",
            "stop_instance" => "stopped",
            _ => return Err(unsupported("ec2", action)),
        };
        let before = pre["state"].as_str().unwrap_or("unknown");
        Ok(Outcome {
            dry_run: false,
            changed: action.action == "reboot_instance" || before != after,
            summary: format!("{} {id} ({before} → {after})", action.action),
            after: json!({ "instance_id": id, "state": after }),
            blast: Blast::default(),
        })
    }

    async fn execute(&self, action: &Action, _pre: &Value, key: &str) -> Result<Outcome, ExecError> {
        let id = action.target()?.name;
        self.check_tags(&id, action).await?;
        let changed = match action.action.as_str() {
            "reboot_instance" => {
                let (_, tag) = self.state(&id).await?;
                if tag.as_deref() == Some(key) {
                    false
                } else {
                    self.client
                        .reboot_instances()
                        .instance_ids(&id)
                        .send()
                        .await
                        .map_err(|e| backend("RebootInstances", e))?;
                    self.tag(&id, key).await?;
                    self.wait_for(&id, "running").await?;
                    true
                }
            }
            "stop_instance" => self.ensure(&id, "stopped").await?,
            "start_instance" => self.ensure(&id, "running").await?,
            _ => return Err(unsupported("ec2", action)),
        };
        let (state, _) = self.state(&id).await?;
        let verb = if changed { "" } else { " (already done)" };
        Ok(Outcome {
            dry_run: false,
            changed,
            summary: format!("{} {id}{verb}: now {state}", action.action),
            after: json!({ "instance_id": id, "state": state }),
            blast: Blast::default(),
        })
    }

    async fn rollback(&self, action: &Action, pre: &Value, _key: &str) -> Result<Outcome, ExecError> {
        let id = action.target()?.name;
        // A reboot leaves nothing to undo; an instance caught mid-transition is left as it is.
        let want = pre["state"].as_str().filter(|s| matches!(*s, "running" | "stopped"));
        let changed = match want {
            Some(want) if action.action != "reboot_instance" => self.ensure(&id, want).await?,
            _ => false,
        };
        let (state, _) = self.state(&id).await?;
        Ok(Outcome {
            dry_run: false,
            changed,
            summary: format!("instance {id} back to {state}"),
            after: json!({ "instance_id": id, "state": state }),
            blast: Blast::default(),
        })
    }
}

// ---- ECS ------------------------------------------------------------------------

/// `scale_service` (`replicas` or `factor`, default ×2), `force_new_deployment`,
/// `rollback_task_definition` (to the previous revision) on `ecs:CLUSTER/SERVICE`.
pub struct EcsExecutor {
    client: aws_sdk_ecs::Client,
    config: AwsConfig,
}

#[derive(Debug)]
struct Service {
    arn: String,
    desired: i32,
    running: i32,
    task_definition: String,
}

impl EcsExecutor {
    pub async fn new(config: AwsConfig) -> EcsExecutor {
        EcsExecutor::from_sdk(&sdk_config(&config).await, config)
    }

    /// With an SDK configuration built by the caller (its own credentials provider).
    pub fn from_sdk(sdk: &aws_config::SdkConfig, config: AwsConfig) -> EcsExecutor {
        EcsExecutor { client: aws_sdk_ecs::Client::new(sdk), config }
    }

    async fn service(&self, cluster: &str, name: &str) -> Result<Service, ExecError> {
        let out = self.client.describe_services().cluster(cluster).services(name).send().await.map_err(|e| {
            ExecError::Backend(format!("DescribeServices: {}", aws_sdk_ecs::error::DisplayErrorContext(&e)))
        })?;
        let s = out
            .services()
            .iter()
            .find(|s| s.service_name() == Some(name))
            .ok_or_else(|| ExecError::NotFound(format!("ECS service {name} in cluster {cluster}")))?;
        Ok(Service {
            arn: s.service_arn().unwrap_or_default().to_owned(),
            desired: s.desired_count(),
            running: s.running_count(),
            task_definition: s.task_definition().unwrap_or_default().to_owned(),
        })
    }

    async fn tag_value(&self, arn: &str) -> Result<Option<String>, ExecError> {
        let out = self.client.list_tags_for_resource().resource_arn(arn).send().await.map_err(|e| {
            ExecError::Backend(format!("ListTagsForResource: {}", aws_sdk_ecs::error::DisplayErrorContext(&e)))
        })?;
        Ok(out.tags().iter().find(|t| t.key() == Some(KEY_TAG)).and_then(|t| t.value()).map(str::to_owned))
    }

    async fn tag(&self, arn: &str, key: &str) -> Result<(), ExecError> {
        let tag = aws_sdk_ecs::types::Tag::builder().key(KEY_TAG).value(key).build();
        self.client
            .tag_resource()
            .resource_arn(arn)
            .tags(tag)
            .send()
            .await
            .map_err(|e| ExecError::Backend(format!("TagResource: {}", aws_sdk_ecs::error::DisplayErrorContext(&e))))?;
        Ok(())
    }

    async fn update(
        &self,
        cluster: &str,
        name: &str,
        desired: Option<i32>,
        task: Option<&str>,
        force: bool,
    ) -> Result<(), ExecError> {
        let mut req = self.client.update_service().cluster(cluster).service(name);
        if let Some(n) = desired {
            req = req.desired_count(n);
        }
        if let Some(t) = task {
            req = req.task_definition(t);
        }
        if force {
            req = req.force_new_deployment(true);
        }
        req.send().await.map_err(|e| {
            ExecError::Backend(format!("UpdateService: {}", aws_sdk_ecs::error::DisplayErrorContext(&e)))
        })?;
        Ok(())
    }

    /// Waits until the service runs `desired` tasks of `task` (when given).
    async fn settle(&self, cluster: &str, name: &str, desired: i32, task: Option<&str>) -> Result<(), ExecError> {
        let what = format!("service {name} to run {desired} task(s)");
        wait_until(&what, self.config.wait_timeout, self.config.poll_interval, || async {
            let s = self.service(cluster, name).await?;
            Ok(s.desired == desired && s.running == desired && task.is_none_or(|t| s.task_definition == t))
        })
        .await
    }

    /// `family:N` → `family:N-1`.
    fn previous_revision(task_definition: &str) -> Result<String, ExecError> {
        let (family, revision) = task_definition
            .rsplit_once(':')
            .and_then(|(f, r)| r.parse::<u32>().ok().map(|r| (f, r)))
            .ok_or_else(|| ExecError::BadAction(format!("task definition `{task_definition}` has no revision")))?;
        if revision <= 1 {
            return Err(ExecError::NotFound(format!("no revision before {task_definition}")));
        }
        Ok(format!("{family}:{}", revision - 1))
    }

    fn pre(pre: &Value) -> Result<(i64, String), ExecError> {
        let desired = pre["desired_count"]
            .as_i64()
            .ok_or_else(|| ExecError::BadAction("pre-state lacks desired_count".into()))?;
        let task = pre["task_definition"].as_str().unwrap_or_default().to_owned();
        Ok((desired, task))
    }

    fn state(s: &Service, cluster: &str, name: &str) -> Value {
        json!({
            "cluster": cluster, "service": name, "desired_count": s.desired,
            "running_count": s.running, "task_definition": s.task_definition,
        })
    }
}

fn count(n: i64) -> Result<i32, ExecError> {
    i32::try_from(n).map_err(|_| ExecError::BadAction(format!("count {n} is out of range")))
}

#[async_trait]
impl Executor for EcsExecutor {
    fn kind(&self) -> &'static str {
        "ecs"
    }

    async fn describe(&self, action: &Action) -> Result<Value, ExecError> {
        let t = action.target()?;
        let s = self.service(&t.scope, &t.name).await?;
        Ok(EcsExecutor::state(&s, &t.scope, &t.name))
    }

    async fn dry_run(&self, action: &Action, pre: &Value) -> Result<Outcome, ExecError> {
        let t = action.target()?;
        let (desired, task) = EcsExecutor::pre(pre)?;
        let mut after = pre.clone();
        let (summary, blast) = match action.action.as_str() {
            "scale_service" => {
                let to = action.scale_to(desired)?;
                after["desired_count"] = json!(to);
                let blast = Blast { replicas: Some((desired.max(0) as u64, to.max(0) as u64)), ..Blast::default() };
                (format!("scale {} from {desired} to {to} task(s)", t.name), blast)
            }
            "force_new_deployment" => (format!("force a new deployment of {}", t.name), Blast::default()),
            "rollback_task_definition" => {
                let previous = EcsExecutor::previous_revision(&task)?;
                after["task_definition"] = json!(previous);
                (format!("roll {} back from {task} to {previous}", t.name), Blast::default())
            }
            _ => return Err(unsupported("ecs", action)),
        };
        Ok(Outcome { dry_run: false, changed: true, summary, after, blast })
    }

    async fn execute(&self, action: &Action, pre: &Value, key: &str) -> Result<Outcome, ExecError> {
        let t = action.target()?;
        let (desired, task) = EcsExecutor::pre(pre)?;
        let now = self.service(&t.scope, &t.name).await?;
        let changed = match action.action.as_str() {
            "scale_service" => {
                let to = count(action.scale_to(desired)?)?;
                let act = now.desired != to;
                if act {
                    self.update(&t.scope, &t.name, Some(to), None, false).await?;
                }
                self.settle(&t.scope, &t.name, to, None).await?;
                act
            }
            "force_new_deployment" => {
                let act = self.tag_value(&now.arn).await?.as_deref() != Some(key);
                if act {
                    self.update(&t.scope, &t.name, None, None, true).await?;
                    self.tag(&now.arn, key).await?;
                }
                self.settle(&t.scope, &t.name, now.desired, None).await?;
                act
            }
            "rollback_task_definition" => {
                let previous = EcsExecutor::previous_revision(&task)?;
                let act = now.task_definition != previous;
                if act {
                    self.update(&t.scope, &t.name, None, Some(&previous), false).await?;
                }
                self.settle(&t.scope, &t.name, now.desired, Some(&previous)).await?;
                act
            }
            _ => return Err(unsupported("ecs", action)),
        };
        let s = self.service(&t.scope, &t.name).await?;
        let note = if changed { "" } else { " (already done)" };
        Ok(Outcome {
            dry_run: false,
            changed,
            summary: format!("{} {}{note}: {} task(s) of {}", action.action, t.name, s.running, s.task_definition),
            after: EcsExecutor::state(&s, &t.scope, &t.name),
            blast: Blast::default(),
        })
    }

    async fn rollback(&self, action: &Action, pre: &Value, _key: &str) -> Result<Outcome, ExecError> {
        let t = action.target()?;
        let (desired, task) = EcsExecutor::pre(pre)?;
        let desired = count(desired)?;
        let now = self.service(&t.scope, &t.name).await?;
        let restore_task = (!task.is_empty() && now.task_definition != task).then_some(task.as_str());
        let changed = now.desired != desired || restore_task.is_some();
        if changed {
            self.update(&t.scope, &t.name, Some(desired), restore_task, false).await?;
        }
        self.settle(&t.scope, &t.name, desired, (!task.is_empty()).then_some(task.as_str())).await?;
        let s = self.service(&t.scope, &t.name).await?;
        Ok(Outcome {
            dry_run: false,
            changed,
            summary: format!("{} back to {} task(s) of {}", t.name, s.desired, s.task_definition),
            after: EcsExecutor::state(&s, &t.scope, &t.name),
            blast: Blast::default(),
        })
    }
}
