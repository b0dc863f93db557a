//! The webhook executor against a local server that records every request.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use executors::webhook::{WebhookConfig, WebhookExecutor};
use executors::{Action, ExecError, Executor};
use serde_json::{json, Value};

type Seen = Arc<Mutex<Vec<(String, Option<String>, Option<String>, Value)>>>;

async fn hook(
    State((seen, status)): State<(Seen, Arc<Mutex<StatusCode>>)>,
    Path(verb): Path<String>,
    headers: HeaderMap,
    body: axum::Json<Value>,
) -> (StatusCode, axum::Json<Value>) {
    let header = |h: &str| headers.get(h).and_then(|v| v.to_str().ok()).map(str::to_owned);
    seen.lock().unwrap().push((verb.clone(), header("idempotency-key"), header("authorization"), body.0));
    let status = *status.lock().unwrap();
    let answer = match verb.as_str() {
        "describe" => json!({ "replicas": 3 }),
        _ => json!({ "replicas": 3, "restarted": true }),
    };
    (status, axum::Json(answer))
}

async fn server() -> (String, Seen, Arc<Mutex<StatusCode>>) {
    let seen: Seen = Arc::default();
    let status = Arc::new(Mutex::new(StatusCode::OK));
    let app = axum::Router::new().route("/hooks/{verb}", post(hook)).with_state((seen.clone(), status.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen, status)
}

fn restart() -> Action {
    Action {
        executor: "kubernetes".into(),
        action: "restart_deployment".into(),
        target: "kubernetes:prod/checkout".into(),
        params: Default::default(),
    }
}

#[tokio::test]
async fn actions_reach_the_webhook_with_their_idempotency_key_and_errors_are_classified() {
    let (url, seen, status) = server().await;
    let hook =
        WebhookExecutor::new(WebhookConfig { url, token: Some("s3cret".into()), timeout: Duration::from_secs(5) });
    let pre = hook.describe(&restart()).await.unwrap();
    assert_eq!(pre, json!({ "replicas": 3 }));
    let dry = hook.dry_run(&restart(), &pre).await.unwrap();
    assert!(dry.dry_run && !dry.changed);
    let done = hook.execute(&restart(), &pre, "run-1:apply-0").await.unwrap();
    assert!(done.changed && !done.dry_run);
    assert_eq!(done.after["restarted"], true);
    hook.rollback(&restart(), &pre, "run-1:restore-0").await.unwrap();

    let seen = seen.lock().unwrap().clone();
    let verbs: Vec<&str> = seen.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(verbs, ["describe", "execute", "rollback"], "a dry run sends nothing");
    let (_, key, auth, body) = &seen[1];
    assert_eq!(key.as_deref(), Some("run-1:apply-0"));
    assert_eq!(auth.as_deref(), Some("Bearer s3cret"));
    assert_eq!(
        body,
        &json!({
            "verb": "execute", "executor": "kubernetes", "action": "restart_deployment",
            "target": "kubernetes:prod/checkout", "params": {}, "idempotency_key": "run-1:apply-0",
            "pre_state": { "replicas": 3 },
        })
    );
    assert_eq!(seen[0].1, None, "describe carries no key");

    *status.lock().unwrap() = StatusCode::SERVICE_UNAVAILABLE;
    let e = hook.execute(&restart(), &pre, "k").await.unwrap_err();
    assert!(e.is_transient(), "5xx is retried: {e}");
    *status.lock().unwrap() = StatusCode::UNPROCESSABLE_ENTITY;
    let e = hook.execute(&restart(), &pre, "k").await.unwrap_err();
    assert!(matches!(e, ExecError::Refused { guard: "webhook", .. }), "4xx is a refusal: {e}");
    let bad = Action { target: "checkout".into(), ..restart() };
    assert!(matches!(hook.execute(&bad, &pre, "k").await, Err(ExecError::BadAction(_))));
}

#[tokio::test]
async fn nobody_listening_is_a_backend_error() {
    let hook = WebhookExecutor::new(WebhookConfig {
        url: "http://127.0.0.1:9/hooks".into(),
        token: None,
        timeout: Duration::from_secs(2),
    });
    let e = hook.execute(&restart(), &json!({}), "k").await.unwrap_err();
    assert!(e.is_transient(), "{e}");
}
