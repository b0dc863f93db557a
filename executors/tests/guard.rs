//! The guardrails, each on its own: every guard refuses alone with a typed
//! error and nothing reaches the backend; an allowlisted target passes; dry
//! run makes no mutating call.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use executors::mock::MockExecutor;
use executors::{Action, ExecError, Executor, Guarded, Guardrails, KillSwitch};
use serde_json::json;

struct Switch(AtomicBool);

#[async_trait]
impl KillSwitch for Switch {
    async fn engaged(&self) -> Result<bool, ExecError> {
        Ok(self.0.load(Ordering::SeqCst))
    }
}

fn scale(target: &str, replicas: Option<u64>) -> Action {
    let mut params = BTreeMap::new();
    if let Some(n) = replicas {
        params.insert("replicas".to_owned(), json!(n));
    }
    Action { executor: "mock".into(), action: "scale_service".into(), target: target.into(), params }
}

fn rails() -> Guardrails {
    Guardrails {
        allowlist: vec!["ecs:prod/*".into(), "kubernetes:*/checkout".into()],
        cooldown: Duration::from_secs(600),
        ..Guardrails::default()
    }
}

fn guarded(mock: &MockExecutor, rails: Guardrails, switch: Arc<Switch>) -> Guarded {
    Guarded::new(Arc::new(mock.clone()), rails, switch).unwrap()
}

fn guard_of(e: ExecError) -> &'static str {
    match e {
        ExecError::Refused { guard, .. } => guard,
        other => panic!("expected a refusal, got {other}"),
    }
}

#[tokio::test]
async fn an_allowlisted_target_within_limits_passes() {
    let mock = MockExecutor::default().with_replicas("ecs:prod/api", 3);
    let g = guarded(&mock, rails(), Arc::new(Switch(AtomicBool::new(false))));
    let action = scale("ecs:prod/api", Some(6));
    let pre = g.describe(&action).await.unwrap();
    let out = g.execute(&action, &pre, "run:apply-0").await.unwrap();
    assert!(out.changed);
    assert_eq!(mock.replicas("ecs:prod/api"), 6);
    assert_eq!(mock.mutations().len(), 1);
    assert_eq!(mock.mutations()[0].key.as_deref(), Some("run:apply-0"));
    // `*` in a pattern spans a namespace too.
    let k8s = Action {
        executor: "mock".into(),
        action: "restart_deployment".into(),
        target: "kubernetes:shop/checkout".into(),
        params: BTreeMap::new(),
    };
    let pre = g.describe(&k8s).await.unwrap();
    assert!(g.execute(&k8s, &pre, "k").await.unwrap().changed);
}

#[tokio::test]
async fn each_guard_refuses_on_its_own_and_nothing_reaches_the_backend() {
    let switch = Arc::new(Switch(AtomicBool::new(false)));
    let mock = MockExecutor::default().with_replicas("ecs:prod/api", 3).with_replicas("ecs:prod/web", 3);
    let g = guarded(&mock, rails(), switch.clone());

    // Allowlist: a target no pattern matches (nor a malformed one).
    for target in ["ecs:staging/api", "kubernetes:shop/payments", "not-a-target"] {
        let action = scale(target, Some(4));
        let err = g.execute(&action, &json!({ "replicas": 3 }), "k1").await.unwrap_err();
        match target {
            "not-a-target" => assert!(matches!(err, ExecError::BadAction(_)), "{err}"),
            _ => assert_eq!(guard_of(err), "allowlist"),
        }
    }
    // Blast radius: beyond 2x the current count.
    let err = g.execute(&scale("ecs:prod/api", Some(7)), &json!({ "replicas": 3 }), "k2").await.unwrap_err();
    let text = err.to_string();
    assert_eq!(guard_of(err), "blast_radius");
    assert!(text.contains("3 → 7"), "{text}");
    // Kill switch.
    switch.0.store(true, Ordering::SeqCst);
    let err = g.execute(&scale("ecs:prod/api", Some(4)), &json!({ "replicas": 3 }), "k3").await.unwrap_err();
    assert_eq!(guard_of(err), "kill_switch");
    switch.0.store(false, Ordering::SeqCst);
    assert!(mock.mutations().is_empty(), "no refused action reached the backend: {:?}", mock.mutations());

    // Cooldown: a second action on the same target soon after the first.
    g.execute(&scale("ecs:prod/api", Some(4)), &json!({ "replicas": 3 }), "k4").await.unwrap();
    let err = g.execute(&scale("ecs:prod/api", Some(5)), &json!({ "replicas": 4 }), "k5").await.unwrap_err();
    assert_eq!(guard_of(err), "cooldown");
    // … but another target is free, and restoring the first is allowed.
    g.execute(&scale("ecs:prod/web", Some(6)), &json!({ "replicas": 3 }), "k6").await.unwrap();
    g.rollback(&scale("ecs:prod/api", Some(4)), &json!({ "replicas": 3 }), "k7").await.unwrap();
    assert_eq!(mock.replicas("ecs:prod/api"), 3);
    let keys: Vec<_> = mock.mutations().into_iter().map(|c| c.key.unwrap()).collect();
    assert_eq!(keys, ["k4", "k6", "k7"]);
}

#[tokio::test]
async fn dry_run_makes_no_mutating_call() {
    let mock = MockExecutor::default().with_replicas("ecs:prod/api", 2);
    let g = guarded(&mock, Guardrails { dry_run: true, ..rails() }, Arc::new(Switch(AtomicBool::new(false))));
    let action = scale("ecs:prod/api", Some(4));
    let pre = g.describe(&action).await.unwrap();
    let out = g.execute(&action, &pre, "k").await.unwrap();
    assert!(!out.changed);
    assert!(out.summary.starts_with("dry run: would scale_service"), "{}", out.summary);
    assert_eq!(out.after["replicas"], 4, "the plan says what would change");
    let out = g.rollback(&action, &pre, "k").await.unwrap();
    assert!(!out.changed);
    assert!(mock.mutations().is_empty(), "{:?}", mock.mutations());
    assert_eq!(mock.replicas("ecs:prod/api"), 2);
    // Dry run still refuses what the guards refuse.
    assert_eq!(guard_of(g.execute(&scale("ecs:prod/api", Some(9)), &pre, "k").await.unwrap_err()), "blast_radius");
}

#[tokio::test]
async fn a_repeated_execute_does_not_act_twice() {
    let mock = MockExecutor::default().with_replicas("ecs:prod/api", 2);
    let rails = Guardrails { cooldown: Duration::ZERO, ..rails() };
    let g = guarded(&mock, rails, Arc::new(Switch(AtomicBool::new(false))));
    let action = scale("ecs:prod/api", Some(4));
    let pre = json!({ "replicas": 2 });
    assert!(g.execute(&action, &pre, "run-1:apply-0").await.unwrap().changed);
    assert!(!g.execute(&action, &pre, "run-1:apply-0").await.unwrap().changed);
    assert_eq!(mock.mutations().len(), 1);
}
