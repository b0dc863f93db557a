//! API security at the boundary: each role is allowed and refused exactly what
//! the role table says, keys are checked and revocable, every mutating call is
//! audited, rate limits hold per key, CORS is off, and the OpenAPI document
//! describes the routes the server really has.

use std::num::NonZeroU32;

use api::security::RateLimit;
use api::server::{router, AppState};
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use engine::testing::{Backend, TestDb};
use engine::{Graph, NodeContext, Registry, Transition};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::api::call_as;

fn gate_graph() -> Graph<Value> {
    Graph::builder("gate", 1)
        .node("gate", |s: Value, _: NodeContext| async move { Ok((s, Transition::wait_for(["approve"], None))) })
        .start("gate")
        .build()
        .unwrap()
}

async fn engine(db: &TestDb) -> engine::Engine {
    let mut registry = Registry::new();
    registry.register(gate_graph());
    db.engine(registry).await
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Needs {
    Viewer,
    Operator,
    Admin,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_is_allowed_and_refused_exactly_its_table() {
    let db = TestDb::new(Backend::Sqlite).await;
    let engine = engine(&db).await;
    let (app, security, keys) = crate::support::app(&engine).await;
    let run = engine.start("gate", &json!({})).await.unwrap();
    let missing = "01a2054b-87bb-7445-bf0f-830483e586af";
    let decision = r#"{"reason":"rbac test"}"#;

    // Every /v1 route and what it needs. Targets that do not exist keep the
    // allowed calls from changing anything, so each role sees the same state.
    let table: Vec<(Method, String, Option<&str>, Needs)> = vec![
        (Method::GET, "/v1/runs".into(), None, Needs::Viewer),
        (Method::GET, format!("/v1/runs/{run}"), None, Needs::Viewer),
        (Method::GET, "/v1/graphs/gate/mermaid".into(), None, Needs::Viewer),
        (Method::GET, "/v1/incidents".into(), None, Needs::Viewer),
        (Method::GET, format!("/v1/incidents/{run}/postmortem"), None, Needs::Viewer),
        (Method::GET, "/v1/killswitch".into(), None, Needs::Viewer),
        (Method::GET, "/v1/outbox?status=dead".into(), None, Needs::Viewer),
        (Method::POST, format!("/v1/runs/{missing}/approve"), Some(decision), Needs::Operator),
        (Method::POST, format!("/v1/runs/{missing}/reject"), Some(decision), Needs::Operator),
        (Method::POST, format!("/v1/runs/{missing}/cancel"), Some(decision), Needs::Operator),
        (Method::POST, format!("/v1/runs/{missing}/retry"), None, Needs::Operator),
        (Method::POST, "/v1/outbox/999999/requeue".into(), None, Needs::Operator),
        (Method::GET, "/v1/keys".into(), None, Needs::Admin),
        (Method::POST, "/v1/keys".into(), Some(r#"{"name":"","role":"viewer"}"#), Needs::Admin),
        (Method::DELETE, "/v1/keys/key_000000000000".into(), None, Needs::Admin),
        (Method::PUT, "/v1/killswitch".into(), Some(r#"{"enabled":false}"#), Needs::Admin),
        (Method::GET, "/v1/audit".into(), None, Needs::Admin),
    ];
    let roles = [(Needs::Viewer, &keys.viewer), (Needs::Operator, &keys.operator), (Needs::Admin, &keys.admin)];
    let rank = |n: Needs| n as u8;
    for (method, uri, body, needs) in &table {
        let (status, v) = call_as(&app, None, method.as_str(), uri, *body).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri} without a key: {v}");
        for (role, key) in roles {
            let (status, v) = call_as(&app, Some(key), method.as_str(), uri, *body).await;
            if rank(role) >= rank(*needs) {
                assert!(
                    status != StatusCode::FORBIDDEN && status != StatusCode::UNAUTHORIZED && !status.is_server_error(),
                    "{role:?} may {method} {uri}, got {status}: {v}"
                );
            } else {
                assert_eq!(status, StatusCode::FORBIDDEN, "{role:?} may not {method} {uri}: {v}");
                let message = v["error"]["message"].as_str().unwrap();
                assert!(
                    message.starts_with(&format!("this call needs the {}", format!("{needs:?}").to_lowercase())),
                    "{message}"
                );
            }
        }
    }

    // The audit log holds every mutating call, allowed or refused, and no read.
    let log = security.access.audit_log(1000).await.unwrap();
    let mutating: Vec<_> = table.iter().filter(|(m, ..)| *m != Method::GET).collect();
    // Each mutating route was tried by three roles.
    assert_eq!(log.len(), mutating.len() * 3, "{log:#?}");
    assert!(log.iter().all(|e| !e.action.starts_with("GET ")));
    for (method, uri, _, needs) in mutating {
        for (role, _) in roles {
            let name = format!("{}-key", format!("{role:?}").to_lowercase());
            let entry =
                log.iter().find(|e| e.actor == name && &e.target == uri && e.action.starts_with(method.as_str()));
            let entry = entry.unwrap_or_else(|| panic!("no audit entry for {name} {method} {uri}"));
            assert!(entry.key_id.as_deref().is_some_and(|k| k.starts_with("key_")));
            assert!(!entry.request_id.is_empty() && entry.request_id != "-", "{entry:?}");
            let status = entry.status.unwrap();
            assert_eq!(status == 403, rank(role) < rank(*needs), "{entry:?}");
        }
    }
    assert_eq!(engine.run(run).await.unwrap().status, engine::RunStatus::Runnable, "nothing changed the run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_hashed_revocable_and_checked() {
    let db = TestDb::new(Backend::Sqlite).await;
    let engine = engine(&db).await;
    let (app, security, keys) = crate::support::app(&engine).await;

    // An admin creates a key; its secret is answered once and stored only as a hash.
    let (status, created) =
        call_as(&app, Some(&keys.admin), "POST", "/v1/keys", Some(r#"{"name":"ci-bot","role":"operator"}"#)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let secret = created["secret"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("snl_") && secret.len() == 68, "{secret}");
    let stored: Vec<String> =
        sqlx::query_scalar("SELECT hash FROM api_keys").fetch_all(engine.store().pool()).await.unwrap();
    assert!(stored.iter().all(|h| h.len() == 64 && !h.contains(&secret[4..])));
    let (status, v) = call_as(&app, Some(&keys.admin), "GET", "/v1/keys", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!v.to_string().contains(&secret), "a list never shows secrets");
    assert_eq!(v["keys"].as_array().unwrap().len(), 4);

    let (status, _) = call_as(&app, Some(&secret), "GET", "/v1/runs", None).await;
    assert_eq!(status, StatusCode::OK);
    // Bad keys and bad headers: 401 with a reason.
    for (header, why) in [
        (format!("Bearer {}x", secret), "unknown or revoked"),
        ("Bearer snl_".to_owned(), "unknown or revoked"),
        (format!("Basic {secret}"), "must be `Bearer <key>`"),
        (format!("bearer{secret}"), "must be `Bearer <key>`"),
    ] {
        let req = Request::get("/v1/runs").header("authorization", header.clone()).body(Body::empty()).unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{header}");
        assert_eq!(resp.headers()["www-authenticate"], "Bearer");
        let body: Value = serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
        assert!(body["error"]["message"].as_str().unwrap().contains(why), "{header}: {body}");
    }

    // Revoked: refused from the next request on; revoking twice is a 404.
    let (status, v) = call_as(&app, Some(&keys.admin), "DELETE", &format!("/v1/keys/{id}"), None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert!(v["revoked_at"].is_i64());
    let (status, v) = call_as(&app, Some(&secret), "GET", "/v1/runs", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");
    let (status, _) = call_as(&app, Some(&keys.admin), "DELETE", &format!("/v1/keys/{id}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Bad key requests.
    for body in [r#"{"name":"x","role":"root"}"#, r#"{"name":"  ","role":"viewer"}"#, r#"{"name":"x"}"#] {
        let (status, v) = call_as(&app, Some(&keys.admin), "POST", "/v1/keys", Some(body)).await;
        assert!(status.is_client_error(), "{body}: {status} {v}");
    }

    // The kill switch is shared through the database.
    let (status, v) = call_as(&app, Some(&keys.admin), "PUT", "/v1/killswitch", Some(r#"{"enabled":true}"#)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert!(security.access.kill_switch().await.unwrap().enabled);
    let (_, v) = call_as(&app, Some(&keys.viewer), "GET", "/v1/killswitch", None).await;
    assert_eq!((v["enabled"].clone(), v["updated_by"].clone()), (json!(true), json!("admin-key")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_are_per_key() {
    let db = TestDb::new(Backend::Sqlite).await;
    let engine = engine(&db).await;
    let limit = RateLimit { per_second: NonZeroU32::new(1).unwrap(), burst: NonZeroU32::new(3).unwrap() };
    let (security, keys) = crate::support::security(&engine, limit).await;
    let app = router(AppState {
        engine: engine.clone(),
        security,
        slack: None,
        telemetry: None,
        memory: std::sync::Arc::new(nodes::memory::NoMemory::default()),
    });
    for _ in 0..3 {
        let (status, _) = call_as(&app, Some(&keys.viewer), "GET", "/v1/runs", None).await;
        assert_eq!(status, StatusCode::OK);
    }
    let req = Request::get("/v1/runs").header("authorization", format!("Bearer {}", keys.viewer)).body(Body::empty());
    let resp = app.clone().oneshot(req.unwrap()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    // Another key has its own allowance.
    let (status, _) = call_as(&app, Some(&keys.admin), "GET", "/v1/runs", None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_is_off_and_openapi_matches_the_routes() {
    let db = TestDb::new(Backend::Sqlite).await;
    let engine = engine(&db).await;
    let (app, _, keys) = crate::support::app(&engine).await;

    // A browser preflight from another origin gets no CORS grant.
    let req = Request::builder()
        .method("OPTIONS")
        .uri("/v1/runs")
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .body(Body::empty())
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert!(resp.headers().get("access-control-allow-origin").is_none());
    let req = Request::get("/v1/runs")
        .header("origin", "https://evil.example")
        .header("authorization", format!("Bearer {}", keys.viewer))
        .body(Body::empty())
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers().get("access-control-allow-origin").is_none());

    // The document is public, OpenAPI 3, and each operation it lists exists:
    // calling it as admin never reaches the router's "no such route".
    let (status, doc) = call_as(&app, None, "GET", "/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert_eq!(doc["components"]["securitySchemes"]["api_key"]["scheme"], "bearer");
    let paths = doc["paths"].as_object().unwrap();
    let mut operations = 0;
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            operations += 1;
            assert!(op["responses"].as_object().is_some_and(|r| !r.is_empty()), "{method} {path}");
            // The statuses every route can answer are documented on each, with the error body.
            for status in ["400", "401", "403", "503"] {
                assert_eq!(
                    op["responses"][status]["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/ErrorBody",
                    "{method} {path} documents {status}"
                );
            }
            let uri = path.replace("{id}", "01a2054b-87bb-7445-bf0f-830483e586af").replace("{name}", "gate");
            let body = (method != "get" && method != "delete").then_some("{}");
            let (status, v) = call_as(&app, Some(&keys.admin), &method.to_uppercase(), &uri, body).await;
            assert_ne!(v["error"]["message"], "no such route", "{method} {path} is documented but not routed");
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        }
    }
    assert_eq!(operations, 21, "every operation is documented");
    assert_eq!(doc["paths"]["/v1/runs/{id}"]["get"]["parameters"][0]["schema"]["format"], "uuid");
    // A decision names its gate; a cancellation has none to name.
    let schemas = &doc["components"]["schemas"];
    assert!(
        schemas["DecisionBody"]["required"].as_array().unwrap().contains(&json!("gate")),
        "{}",
        schemas["DecisionBody"]
    );
    assert!(schemas["CancelBody"]["properties"].get("gate").is_none());
    // A malformed parameter is answered in the API's own format, not as text.
    let (status, body) = call_as(&app, Some(&keys.admin), "GET", "/v1/runs?limit=many", None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_request")), "{body}");
    let (status, body) = call_as(&app, Some(&keys.admin), "POST", "/v1/outbox/not-a-number/requeue", Some("{}")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_request")), "{body}");
}
