//! A scripted executor for the demo and tests: keeps a replica count per
//! target, answers every action, fails the ones it is told to, runs a scripted
//! effect on the world when an action executes ("the latency drops"), and
//! records every call so a test can assert what reached it (and what did not).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde_json::{json, Value};

use crate::{Action, Blast, ExecError, Executor, Outcome};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    /// `describe`, `dry_run`, `execute` or `rollback`.
    pub verb: &'static str,
    pub action: String,
    pub target: String,
    pub key: Option<String>,
}

/// What executing an action does to a simulated world.
pub type Effect = Arc<dyn Fn(&Action) + Send + Sync>;

#[derive(Clone, Default)]
pub struct MockExecutor {
    effects: Arc<Mutex<HashMap<String, Effect>>>,
    replicas: Arc<Mutex<BTreeMap<String, u64>>>,
    failures: Arc<Mutex<HashMap<String, String>>>,
    calls: Arc<Mutex<Vec<Call>>>,
    /// Idempotency keys already executed: a repeat is not applied twice.
    done: Arc<Mutex<HashMap<String, Outcome>>>,
}

impl std::fmt::Debug for MockExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockExecutor").field("replicas", &self.replicas).finish_non_exhaustive()
    }
}

impl MockExecutor {
    pub fn with_replicas(self, target: &str, n: u64) -> Self {
        self.replicas.lock().expect("mock lock").insert(target.to_owned(), n);
        self
    }

    /// Runs `effect` each time `action` is executed (not on a repeat of the same key).
    pub fn on_execute(&self, action: &str, effect: Effect) {
        self.effects.lock().expect("mock lock").insert(action.to_owned(), effect);
    }

    /// Makes `action` fail with a backend error.
    pub fn fail(&self, action: &str, error: &str) {
        self.failures.lock().expect("mock lock").insert(action.to_owned(), error.to_owned());
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("mock lock").clone()
    }

    /// Calls that changed (or would have changed) something.
    pub fn mutations(&self) -> Vec<Call> {
        self.calls().into_iter().filter(|c| c.verb == "execute" || c.verb == "rollback").collect()
    }

    pub fn replicas(&self, target: &str) -> u64 {
        self.replicas.lock().expect("mock lock").get(target).copied().unwrap_or(1)
    }

    fn record(&self, verb: &'static str, action: &Action, key: Option<&str>) {
        let call =
            Call { verb, action: action.action.clone(), target: action.target.clone(), key: key.map(str::to_owned) };
        self.calls.lock().expect("mock lock").push(call);
    }

    fn desired(action: &Action, current: u64) -> Result<Option<u64>, ExecError> {
        if !action.action.starts_with("scale") {
            return Ok(None);
        }
        if let Some(n) = action.param_u64("replicas")? {
            return Ok(Some(n));
        }
        let factor = action.param_f64("factor")?.unwrap_or(2.0);
        Ok(Some(((current.max(1) as f64) * factor).round() as u64))
    }
}

#[async_trait]
impl Executor for MockExecutor {
    fn kind(&self) -> &'static str {
        "mock"
    }

    async fn describe(&self, action: &Action) -> Result<Value, ExecError> {
        self.record("describe", action, None);
        Ok(json!({ "target": action.target, "replicas": self.replicas(&action.target) }))
    }

    async fn dry_run(&self, action: &Action, pre: &Value) -> Result<Outcome, ExecError> {
        self.record("dry_run", action, None);
        let before = pre["replicas"].as_u64().unwrap_or(1);
        let desired = MockExecutor::desired(action, before)?;
        Ok(Outcome {
            dry_run: false,
            changed: true,
            summary: format!("would {} {}", action.action, action.target),
            after: json!({ "target": action.target, "replicas": desired.unwrap_or(before) }),
            blast: Blast { replicas: desired.map(|d| (before, d)), ..Blast::default() },
        })
    }

    async fn execute(&self, action: &Action, pre: &Value, key: &str) -> Result<Outcome, ExecError> {
        if let Some(done) = self.done.lock().expect("mock lock").get(key) {
            return Ok(Outcome { changed: false, ..done.clone() });
        }
        self.record("execute", action, Some(key));
        if let Some(error) = self.failures.lock().expect("mock lock").get(&action.action) {
            return Err(ExecError::Backend(error.clone()));
        }
        let before = pre["replicas"].as_u64().unwrap_or(1);
        if let Some(n) = MockExecutor::desired(action, before)? {
            self.replicas.lock().expect("mock lock").insert(action.target.clone(), n);
        }
        let outcome = Outcome {
            dry_run: false,
            changed: true,
            summary: format!("{} {}", action.action, action.target),
            after: json!({ "target": action.target, "replicas": self.replicas(&action.target) }),
            blast: Blast::default(),
        };
        self.done.lock().expect("mock lock").insert(key.to_owned(), outcome.clone());
        let effect = self.effects.lock().expect("mock lock").get(&action.action).cloned();
        if let Some(effect) = effect {
            effect(action);
        }
        Ok(outcome)
    }

    async fn rollback(&self, action: &Action, pre: &Value, key: &str) -> Result<Outcome, ExecError> {
        self.record("rollback", action, Some(key));
        if let Some(n) = pre["replicas"].as_u64() {
            self.replicas.lock().expect("mock lock").insert(action.target.clone(), n);
        }
        Ok(Outcome {
            dry_run: false,
            changed: true,
            summary: format!("restored {}", action.target),
            after: pre.clone(),
            blast: Blast::default(),
        })
    }
}
