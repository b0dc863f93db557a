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
