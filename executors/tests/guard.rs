//! The guardrails, each on its own: every guard refuses alone with a typed
//! error and nothing reaches the backend; an allowlisted target passes; dry
//! run makes no mutating call and says so in the outcome. The same guards
//! hold for every executor kind the factory serves.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use executors::mock::MockExecutor;
use executors::{Action, Allowlist, ExecError, Executor, Executors, Guarded, Guardrails, KillSwitch};
use serde_json::{json, Value};

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
        allowlist: Allowlist::parse(&["ecs:prod/*", "kubernetes:*/checkout"]).unwrap(),
        ..Guardrails::default()
    }
}

fn guarded(mock: &MockExecutor, rails: Guardrails, switch: Arc<Switch>) -> Guarded {
    Guarded::new(Arc::new(mock.clone()), rails, switch)
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
    assert!(out.changed && !out.dry_run);
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
    // … but restoring a pre-state is allowed past it: it undoes Sentinel's own change.
    g.rollback(&scale("ecs:prod/web", Some(4)), &json!({ "replicas": 3 }), "k4").await.unwrap();
    switch.0.store(false, Ordering::SeqCst);
    let keys: Vec<_> = mock.mutations().into_iter().map(|c| c.key.unwrap()).collect();
    assert_eq!(keys, ["k4"], "no refused action reached the backend");
    // Two actions on one target in a row pass: the cooldown is the policy's, not the executors'.
    g.execute(&scale("ecs:prod/api", Some(4)), &json!({ "replicas": 3 }), "k5").await.unwrap();
    g.execute(&scale("ecs:prod/api", Some(5)), &json!({ "replicas": 4 }), "k6").await.unwrap();
    assert_eq!(mock.replicas("ecs:prod/api"), 5);
}

#[tokio::test]
async fn dry_run_makes_no_mutating_call() {
    let mock = MockExecutor::default().with_replicas("ecs:prod/api", 2);
    let g = guarded(&mock, Guardrails { dry_run: true, ..rails() }, Arc::new(Switch(AtomicBool::new(false))));
    let action = scale("ecs:prod/api", Some(4));
    let pre = g.describe(&action).await.unwrap();
    let out = g.execute(&action, &pre, "k").await.unwrap();
    assert!(out.dry_run && !out.changed, "a dry run is typed as one: {out:?}");
    assert!(out.summary.starts_with("dry run: would scale_service"), "{}", out.summary);
    assert_eq!(out.after["replicas"], 4, "the plan says what would change");
    let out = g.rollback(&action, &pre, "k").await.unwrap();
    assert!(out.dry_run && !out.changed);
    assert!(mock.mutations().is_empty(), "{:?}", mock.mutations());
    assert_eq!(mock.replicas("ecs:prod/api"), 2);
    // Dry run still refuses what the guards refuse.
    assert_eq!(guard_of(g.execute(&scale("ecs:prod/api", Some(9)), &pre, "k").await.unwrap_err()), "blast_radius");
}

#[tokio::test]
async fn a_repeated_execute_does_not_act_twice() {
    let mock = MockExecutor::default().with_replicas("ecs:prod/api", 2);
    let g = guarded(&mock, rails(), Arc::new(Switch(AtomicBool::new(false))));
    let action = scale("ecs:prod/api", Some(4));
    let pre = json!({ "replicas": 2 });
    assert!(g.execute(&action, &pre, "run-1:apply-0").await.unwrap().changed);
    assert!(!g.execute(&action, &pre, "run-1:apply-0").await.unwrap().changed);
    assert_eq!(mock.mutations().len(), 1);
}

/// Through the factory, for every executor kind: each guard of the unified
/// guardrails refuses alone (the others passing), and nothing reaches the
/// backend. The mock answers for each kind, so what is tested is the
/// factory's routing and the guards, whatever backend sits behind them.
#[tokio::test]
async fn every_guard_refuses_alone_for_every_executor_kind() {
    // (kind, an allowed target, a target outside the allowlist, an action on it that scales)
    let kinds = [
        ("ec2", "ec2:us-east-1/i-0abc", "ec2:eu-west-1/i-0abc", None),
        ("ecs", "ecs:prod/orders", "ecs:staging/orders", Some("scale_service")),
        ("kubernetes", "kubernetes:prod/checkout", "kubernetes:staging/checkout", Some("scale_deployment")),
        ("mock", "mock:prod/thing", "mock:dev/thing", Some("scale_thing")),
    ];
    let allowlist = Allowlist::parse(&["ec2:us-east-1/*", "ecs:prod/*", "kubernetes:prod/*", "mock:prod/*"]).unwrap();
    for (kind, allowed, outside, scaling) in kinds {
        let act = |name: &str, target: &str, replicas: Option<u64>| {
            let params =
                replicas.map(|n| [("replicas".to_owned(), json!(n))].into_iter().collect()).unwrap_or_default();
            Action { executor: kind.into(), action: name.into(), target: target.into(), params }
        };
        let pre = json!({ "replicas": 3 });
        let build = |dry_run: bool, switch: Arc<Switch>| {
            let mock = MockExecutor::default();
            let rails = Guardrails { allowlist: allowlist.clone(), dry_run, ..Guardrails::default() };
            let factory = Executors::from_parts(
                vec![(kind.to_owned(), Arc::new(mock.clone()) as Arc<dyn Executor>)],
                &rails,
                switch,
            );
            (mock, factory)
        };
        let off = || Arc::new(Switch(AtomicBool::new(false)));
        let restart = act("restart", allowed, None);

        // Every guard passing: it acts.
        let (mock, f) = build(false, off());
        assert!(f.execute(&restart, &pre, "k0").await.unwrap().changed, "{kind}");
        assert_eq!(mock.mutations().len(), 1, "{kind}");

        // Allowlist alone.
        let (mock, f) = build(false, off());
        assert_eq!(
            guard_of(f.execute(&act("restart", outside, None), &pre, "k1").await.unwrap_err()),
            "allowlist",
            "{kind}"
        );
        assert_eq!(guard_of(f.describe(&act("restart", outside, None)).await.unwrap_err()), "allowlist", "{kind}");
        assert!(mock.calls().is_empty(), "{kind}: the backend saw nothing: {:?}", mock.calls());

        // Kill switch alone.
        let (mock, f) = build(false, Arc::new(Switch(AtomicBool::new(true))));
        assert_eq!(guard_of(f.execute(&restart, &pre, "k2").await.unwrap_err()), "kill_switch", "{kind}");
        assert!(mock.mutations().is_empty(), "{kind}");

        // Blast radius alone, for the kinds that scale: 3 → 7 is beyond 2×.
        if let Some(name) = scaling {
            let (mock, f) = build(false, off());
            let err = f.execute(&act(name, allowed, Some(7)), &pre, "k3").await.unwrap_err();
            assert_eq!(guard_of(err), "blast_radius", "{kind}");
            assert!(
                f.execute(&act(name, allowed, Some(6)), &pre, "k4").await.unwrap().changed,
                "{kind}: 2× is allowed"
            );
            assert_eq!(mock.mutations().len(), 1, "{kind}");
        }

        // Dry run alone: an answer, typed as a dry run, with no mutation.
        let (mock, f) = build(true, off());
        let out = f.execute(&restart, &pre, "k5").await.unwrap();
        assert!(out.dry_run && !out.changed, "{kind}: {out:?}");
        let back: Value = serde_json::to_value(&out).unwrap();
        assert_eq!(back["dry_run"], true, "{kind}: the outcome says so when stored");
        assert!(mock.mutations().is_empty(), "{kind}");
    }
    // A kind nobody configured is an error, not a silent success.
    let f = Executors::from_parts(Vec::new(), &Guardrails::default(), Arc::new(Switch(AtomicBool::new(false))));
    let orphan = Action {
        executor: "ecs".into(),
        action: "restart".into(),
        target: "ecs:prod/x".into(),
        params: BTreeMap::new(),
    };
    assert!(matches!(f.execute(&orphan, &json!({}), "k").await.unwrap_err(), ExecError::NoExecutor(_)));
}
