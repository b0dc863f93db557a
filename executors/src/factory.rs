//! Builds the configured executors, each behind the guardrails, and finds the
//! one an action names: the caller never knows which backend it talks to.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use crate::aws::{AwsConfig, Ec2Executor, EcsExecutor};
use crate::kubernetes::{KubeConfig, KubeExecutor};
use crate::mock::MockExecutor;
use crate::webhook::{WebhookConfig, WebhookExecutor};
use crate::{Action, ExecError, Executor, Guarded, Guardrails, KillSwitch, Outcome};

#[derive(Clone, Debug, Default)]
pub struct ExecutorsConfig {
    /// EC2 and ECS executors, when set.
    pub aws: Option<AwsConfig>,
    /// The Kubernetes executor, with the client from the kubeconfig or the
    /// in-cluster service account, when set.
    pub kubernetes: Option<KubeConfig>,
    /// The webhook executor and the kinds it answers for (it may stand in for
    /// any of them, e.g. `kubernetes` actions sent to a team's own automation).
    pub webhook: Option<(WebhookConfig, Vec<String>)>,
    /// The mock executor answers for these kinds (the demo maps `kubernetes`,
    /// `ecs` and `ec2` onto it).
    pub mock_kinds: Vec<String>,
    /// The mock those kinds reach: the caller keeps a clone to script it.
    pub mock: MockExecutor,
    pub guardrails: Guardrails,
}

/// Every executor kind there is: what a runbook may name.
pub const KINDS: [&str; 4] = ["ec2", "ecs", "kubernetes", "mock"];

impl ExecutorsConfig {
    /// `mock` answering for every kind behind `guardrails`: the demo, a
    /// server without an executors file (in dry-run mode), and tests.
    pub fn mock_for_every_kind(mock: MockExecutor, guardrails: Guardrails) -> ExecutorsConfig {
        ExecutorsConfig {
            mock_kinds: KINDS.map(str::to_owned).to_vec(),
            mock,
            guardrails,
            ..ExecutorsConfig::default()
        }
    }
}

/// The executors by kind. It is itself an [`Executor`] that hands each action
/// to the backend its `executor` field names, so the workflow holds one
/// `Arc<dyn Executor>` and never knows which backend it talks to.
#[derive(Clone)]
pub struct Executors {
    by_kind: BTreeMap<String, Arc<Guarded>>,
}

impl Executors {
    pub async fn build(config: &ExecutorsConfig, kill_switch: Arc<dyn KillSwitch>) -> Result<Executors, ExecError> {
        let mut raw: Vec<(String, Arc<dyn Executor>)> = Vec::new();
        if let Some(aws) = &config.aws {
            raw.push(("ec2".into(), Arc::new(Ec2Executor::new(aws.clone()).await)));
            raw.push(("ecs".into(), Arc::new(EcsExecutor::new(aws.clone()).await)));
        }
        if let Some(kube) = &config.kubernetes {
            raw.push(("kubernetes".into(), Arc::new(KubeExecutor::from_environment(kube.clone()).await?)));
        }
        if let Some((hook, kinds)) = &config.webhook {
            let hook: Arc<dyn Executor> = Arc::new(WebhookExecutor::new(hook.clone()));
            for kind in kinds {
                raw.push((kind.clone(), hook.clone()));
            }
        }
        if !config.mock_kinds.is_empty() {
            let mock: Arc<dyn Executor> = Arc::new(config.mock.clone());
            for kind in &config.mock_kinds {
                raw.push((kind.clone(), mock.clone()));
            }
        }
        Ok(Executors::from_parts(raw, &config.guardrails, kill_switch))
    }

    /// Wraps already-built executors (tests, embedders) in the guardrails.
    pub fn from_parts(
        executors: Vec<(String, Arc<dyn Executor>)>,
        rails: &Guardrails,
        kill_switch: Arc<dyn KillSwitch>,
    ) -> Executors {
        let mut by_kind = BTreeMap::new();
        for (kind, executor) in executors {
            by_kind.insert(kind, Arc::new(Guarded::new(executor, rails.clone(), kill_switch.clone())));
        }
        Executors { by_kind }
    }

    pub fn kinds(&self) -> Vec<String> {
        self.by_kind.keys().cloned().collect()
    }

    fn get(&self, action: &Action) -> Result<&Arc<Guarded>, ExecError> {
        self.by_kind.get(&action.executor).ok_or_else(|| ExecError::NoExecutor(action.executor.clone()))
    }
}

#[async_trait]
impl Executor for Executors {
    fn kind(&self) -> &'static str {
        "factory"
    }

    async fn describe(&self, action: &Action) -> Result<Value, ExecError> {
        self.get(action)?.describe(action).await
    }

    async fn dry_run(&self, action: &Action, pre: &Value) -> Result<Outcome, ExecError> {
        self.get(action)?.dry_run(action, pre).await
    }

    async fn execute(&self, action: &Action, pre: &Value, key: &str) -> Result<Outcome, ExecError> {
        self.get(action)?.execute(action, pre, key).await
    }

    async fn rollback(&self, action: &Action, pre: &Value, key: &str) -> Result<Outcome, ExecError> {
        self.get(action)?.rollback(action, pre, key).await
    }
}
