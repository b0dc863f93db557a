//! Nothing a client sends makes the API answer 5xx or panic: arbitrary paths,
//! methods and bodies, against a server with real runs in it.

use axum::body::Body;
use axum::http::Request;
use engine::testing::{Backend, TestDb};
use engine::{Graph, NodeContext, Registry, Transition};
use http_body_util::BodyExt;
use proptest::prelude::*;
use serde_json::{json, Value};
use tower::ServiceExt;

fn any_body() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,200}",
        Just(r#"{"actor":"alice"}"#.to_owned()),
        Just(r#"{"actor":"alice","reason":"x","request_id":"r1"}"#.to_owned()),
        Just(r#"{"actor":null}"#.to_owned()),
        Just(r#"[1,2,3]"#.to_owned()),
        Just(r#"{"actor":"a","extra":true}"#.to_owned()),
        "[{}\\[\\]\":,a-z0-9 ]{0,60}",
    ]
}

fn any_path(run: String) -> impl Strategy<Value = String> {
    let verbs = prop_oneof![
        Just(""),
        Just("/approve"),
        Just("/reject"),
        Just("/cancel"),
        Just("/retry"),
        Just("/postmortem"),
        Just("/../x")
    ];
    let ids = prop_oneof![
        Just(run),
        "[a-z0-9%-]{0,40}".prop_map(|s| s),
        Just("01a2054b-87bb-7445-bf0f-830483e586af".to_owned())
    ];
    let roots = prop_oneof![
        Just("/v1/runs/"),
        Just("/v1/incidents/"),
        Just("/v1/graphs/"),
        Just("/"),
        Just("/v1/runs?status="),
        Just("/v1/keys/"),
        Just("/v1/killswitch"),
        Just("/v1/audit?limit=")
    ];
    (roots, ids, verbs).prop_map(|(r, i, v)| format!("{r}{i}{v}"))
}

#[test]
fn arbitrary_requests_never_get_a_5xx() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (app, run, _db, keys) = rt.block_on(async {
        let db = TestDb::new(Backend::Sqlite).await;
        let mut registry = Registry::new();
        registry.register(
            Graph::builder("gate", 1)
                .node(
                    "gate",
                    |s: Value, _: NodeContext| async move { Ok((s, Transition::wait_for(["approve"], None))) },
                )
                .start("gate")
                .build()
                .unwrap(),
        );
        let engine = db.engine(registry).await;
        let run = engine.start("gate", &json!({})).await.unwrap();
        let (app, _, keys) = crate::support::app(&engine).await;
        (app, run.to_string(), db, keys)
    });
    let methods = prop_oneof![Just("GET"), Just("POST"), Just("PUT"), Just("DELETE")];
    // No key, a forged one, a malformed header, or a real key of each role.
    let auths = prop_oneof![
        Just(None),
        Just(Some("Bearer snl_0000".to_owned())),
        Just(Some("Basic YWRtaW46YWRtaW4=".to_owned())),
        Just(Some(format!("Bearer {}", keys.viewer))),
        Just(Some(format!("Bearer {}", keys.operator))),
        Just(Some(format!("Bearer {}", keys.admin))),
    ];
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig { cases: 300, ..ProptestConfig::default() });
    runner
        .run(&(methods, any_path(run), any_body(), any::<bool>(), auths), |(method, path, body, json_type, auth)| {
            let Ok(uri) = path.parse::<axum::http::Uri>() else { return Ok(()) };
            let mut req = Request::builder().method(method).uri(uri);
            if let Some(auth) = auth {
                req = req.header("authorization", auth);
            }
            if json_type {
                req = req.header("content-type", "application/json");
            }
            let req = req.body(Body::from(body)).unwrap();
            let (status, bytes) = rt.block_on(async {
                let resp = app.clone().oneshot(req).await.unwrap();
                let status = resp.status();
                (status, resp.into_body().collect().await.unwrap().to_bytes())
            });
            prop_assert!(!status.is_server_error(), "{method} {path} → {status}: {}", String::from_utf8_lossy(&bytes));
            Ok(())
        })
        .unwrap();
}

/// Slack's endpoint under arbitrary input: unsigned and signed bodies, random
/// forms, payloads with random types, users, action ids, run ids and
/// timestamps. Nothing panics or answers 5xx; only a signed click by an
/// approver on a waiting run could decide, and none here is by an approver.
#[test]
fn arbitrary_slack_interactions_never_get_a_5xx_or_decide() {
    use api::slack::{sign, Approvers, SlackState};
    const SECRET: &str = "fuzz-secret";
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (app, run, engine, _db) = rt.block_on(async {
        let db = TestDb::new(Backend::Sqlite).await;
        let mut registry = Registry::new();
        registry.register(
            Graph::builder("gate", 1)
                .node("gate", |s: Value, _: NodeContext| async move {
                    Ok((s, Transition::wait_for(["approve", "reject"], None)))
                })
                .start("gate")
                .build()
                .unwrap(),
        );
        let engine = db.engine(registry).await;
        let run = engine.start("gate", &json!({})).await.unwrap();
        let (security, _) = crate::support::security(&engine, api::security::RateLimit::default()).await;
        let slack = SlackState {
            engine: engine.clone(),
            access: security.access.clone(),
            signing_secret: SECRET.into(),
            approvers: Approvers { anyone: vec!["U_ONLY_APPROVER".into()], ..Approvers::default() },
        };
        let app = api::server::router(api::server::AppState {
            engine: engine.clone(),
            security,
            slack: Some(slack),
            telemetry: None,
            memory: std::sync::Arc::new(nodes::memory::NoMemory::default()),
        });
        (app, run, engine, db)
    });
    let run_s = run.to_string();
    let payload = (
        prop_oneof![3 => Just("block_actions".to_owned()), 1 => Just("view_submission".to_owned()), 1 => "[a-z_]{0,12}"],
        prop_oneof![Just("U_MALLORY".to_owned()), "[A-Z0-9_]{0,12}"],
        prop_oneof![Just("sentinel_approve".to_owned()), Just("sentinel_reject".to_owned()), "[a-z_]{0,16}"],
        prop_oneof![Just(run_s), "[a-f0-9-]{0,40}"],
        "[0-9.]{0,20}",
        any::<bool>(),
    )
        .prop_map(|(kind, user, action, value, ts, with_actions)| {
            let actions = if with_actions {
                json!([{ "action_id": action, "value": value, "action_ts": ts }])
            } else {
                json!("not a list")
            };
            let p = json!({ "type": kind, "user": { "id": user }, "actions": actions });
            serde_urlencoded::to_string([("payload", p.to_string())]).unwrap()
        });
    let bodies = prop_oneof![3 => payload, 1 => "\\PC{0,120}", 1 => "payload=[%a-zA-Z0-9{}:\",]{0,80}"];
    // Signed correctly, signed with another secret, a stale or garbage timestamp, or unsigned.
    let signing = prop_oneof![4 => Just(0u8), 1 => Just(1), 1 => Just(2), 1 => Just(3), 1 => Just(4)];
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig { cases: 300, ..ProptestConfig::default() });
    runner
        .run(&(bodies, signing), |(body, signing)| {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
            let mut req = Request::builder()
                .method("POST")
                .uri("/slack/interactions")
                .header("content-type", "application/x-www-form-urlencoded");
            match signing {
                0 => {
                    req = req.header("x-slack-request-timestamp", now.to_string());
                    req = req.header("x-slack-signature", sign(SECRET, now, body.as_bytes()));
                }
                1 => {
                    req = req.header("x-slack-request-timestamp", now.to_string());
                    req = req.header("x-slack-signature", sign("other", now, body.as_bytes()));
                }
                2 => {
                    req = req.header("x-slack-request-timestamp", (now - 400).to_string());
                    req = req.header("x-slack-signature", sign(SECRET, now - 400, body.as_bytes()));
                }
                3 => {
                    req = req.header("x-slack-request-timestamp", "yesterday");
                    req = req.header("x-slack-signature", "v0=zz");
                }
                _ => {}
            }
            let req = req.body(Body::from(body.clone())).unwrap();
            let (status, bytes) = rt.block_on(async {
                let resp = app.clone().oneshot(req).await.unwrap();
                let status = resp.status();
                (status, resp.into_body().collect().await.unwrap().to_bytes())
            });
            prop_assert!(!status.is_server_error(), "{body} → {status}: {}", String::from_utf8_lossy(&bytes));
            Ok(())
        })
        .unwrap();
    let signals = rt.block_on(engine.detail(run)).unwrap().signals;
    assert!(signals.iter().all(|s| s.kind == "refused_decision"), "no click decided: {signals:?}");
    assert!(!signals.is_empty(), "some signed clicks reached the approver check");
}
