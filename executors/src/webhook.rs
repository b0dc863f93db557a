//! The webhook executor: hands each action to a team's own automation over
//! HTTP (a runbook-automation service, a deploy tool, a test recorder), for
//! the executor kinds it is configured to serve.
//!
//! Every call is a `POST {url}/{verb}` with a JSON body
//! `{verb, executor, action, target, params, idempotency_key?, pre_state?}`
//! and, for `execute` and `rollback`, an `Idempotency-Key` header: the
//! receiver must apply a key at most once (a retried or resumed step sends
//! the same key again). Answers: 2xx with a JSON object (`describe`: the
//! pre-state; `execute`/`rollback`: the state after, and `changed` when it
//! says whether anything changed); 4xx is a refusal (not retried); 5xx, a
//! timeout or no connection is a backend error (retried).

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};

use crate::{Action, Blast, ExecError, Executor, Outcome};

#[derive(Clone, Debug)]
pub struct WebhookConfig {
    /// Base URL; the verb is appended (`…/execute`).
    pub url: String,
    /// Sent as a bearer token when set.
    pub token: Option<String>,
    pub timeout: Duration,
}

pub struct WebhookExecutor {
    config: WebhookConfig,
    http: reqwest::Client,
}

impl WebhookExecutor {
    pub fn new(config: WebhookConfig) -> Self {
        WebhookExecutor { config, http: reqwest::Client::new() }
    }

    async fn call(
        &self,
        verb: &str,
        action: &Action,
        key: Option<&str>,
        pre: Option<&Value>,
    ) -> Result<Value, ExecError> {
        action.target()?;
        let url = format!("{}/{verb}", self.config.url.trim_end_matches('/'));
        let mut body = json!({
            "verb": verb, "executor": action.executor, "action": action.action,
            "target": action.target, "params": action.params,
        });
        if let Some(key) = key {
            body["idempotency_key"] = json!(key);
        }
        if let Some(pre) = pre {
            body["pre_state"] = pre.clone();
        }
        let mut request = self.http.post(&url).json(&body).timeout(self.config.timeout);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        if let Some(token) = &self.config.token {
            request = request.bearer_auth(token);
        }
        let resp = request.send().await.map_err(|e| ExecError::Backend(format!("webhook {verb}: {e}")))?;
        let status = resp.status();
        let text =
            resp.text().await.map_err(|e| ExecError::Backend(format!("webhook {verb}: reading the answer: {e}")))?;
        if status.is_server_error() {
            return Err(ExecError::Backend(format!("webhook {verb}: HTTP {status}: {text}")));
        }
        if !status.is_success() {
            return Err(ExecError::Refused {
                guard: "webhook",
                reason: format!("{verb} answered HTTP {status}: {text}"),
            });
        }
        if text.trim().is_empty() {
            return Ok(json!({}));
        }
        serde_json::from_str(&text)
            .map_err(|e| ExecError::Backend(format!("webhook {verb}: the answer is not JSON: {e}")))
    }

    fn outcome(verb: &str, action: &Action, after: Value) -> Outcome {
        let changed = after.get("changed").and_then(Value::as_bool).unwrap_or(true);
        Outcome {
            dry_run: false,
            changed,
            summary: format!("{verb} {} on {} through the webhook", action.action, action.target),
            after,
            blast: Blast::default(),
        }
    }
}

#[async_trait]
impl Executor for WebhookExecutor {
    fn kind(&self) -> &'static str {
        "webhook"
    }

    async fn describe(&self, action: &Action) -> Result<Value, ExecError> {
        self.call("describe", action, None, None).await
    }

    /// Nothing is sent: the webhook's own side decides what an action does.
    async fn dry_run(&self, action: &Action, pre_state: &Value) -> Result<Outcome, ExecError> {
        action.target()?;
        Ok(Outcome {
            dry_run: true,
            changed: false,
            summary: format!("would send {} on {} to the webhook", action.action, action.target),
            after: pre_state.clone(),
            blast: Blast::default(),
        })
    }

    async fn execute(&self, action: &Action, pre_state: &Value, key: &str) -> Result<Outcome, ExecError> {
        let after = self.call("execute", action, Some(key), Some(pre_state)).await?;
        Ok(WebhookExecutor::outcome("execute", action, after))
    }

    async fn rollback(&self, action: &Action, pre_state: &Value, key: &str) -> Result<Outcome, ExecError> {
        let after = self.call("rollback", action, Some(key), Some(pre_state)).await?;
        Ok(WebhookExecutor::outcome("rollback", action, after))
    }
}
