//! The operator CLI against a real `sentinel serve`: the first admin key made
//! directly in the database, then keys, runs and the kill switch over the REST
//! API, as tables and as JSON; refusals exit non-zero with the API's words.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::eventually;

fn sentinel(data: &Path, url: &str, key: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sentinel"));
    cmd.args(args).env("SENTINEL_DATA_DIR", data).env("SENTINEL_URL", url).env_remove("DATABASE_URL");
    cmd.env_remove("SENTINEL_API_KEY");
    if let Some(key) = key {
        cmd.env("SENTINEL_API_KEY", key);
    }
    cmd.env("SENTINEL_LOG", "warn").stdin(Stdio::null()).output().expect("run sentinel")
}

fn ok_json(out: Output) -> Value {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_runs_and_the_kill_switch_from_the_command_line() {
    let data = std::env::temp_dir().join(format!("sentinel-cli-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&data).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");

    let admin = ok_json(sentinel(
        &data,
        &url,
        None,
        &["keys", "create", "--direct", "--name", "root", "--role", "admin", "--json"],
    ));
    let admin = admin["secret"].as_str().unwrap().to_owned();
    let mut server = Command::new(env!("CARGO_BIN_EXE_sentinel"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("SENTINEL_DATA_DIR", &data)
        .env_remove("DATABASE_URL")
        .env("SENTINEL_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    eventually("serve answers", Duration::from_secs(20), || {
        let req = http.get(format!("{url}/health"));
        async move { req.send().await.is_ok() }
    })
    .await;

    // Keys: created over the API, listed as a table and as JSON, revoked.
    let viewer = ok_json(sentinel(
        &data,
        &url,
        Some(&admin),
        &["keys", "create", "--name", "dash", "--role", "viewer", "--json"],
    ));
    let (viewer_id, viewer_secret) = (viewer["id"].as_str().unwrap(), viewer["secret"].as_str().unwrap());
    let table = sentinel(&data, &url, Some(&admin), &["keys", "list"]);
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(table.contains("dash") && table.contains("viewer") && table.contains("root"), "{table}");
    assert!(!table.contains(viewer_secret), "secrets are never listed");
    let runs = ok_json(sentinel(&data, &url, Some(viewer_secret), &["runs", "list", "--json"]));
    assert_eq!(runs["runs"], Value::Array(vec![]));

    // A viewer may not touch the kill switch: non-zero exit, the API's reason.
    let refused = sentinel(&data, &url, Some(viewer_secret), &["killswitch", "on"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("403") && stderr.contains("needs the admin role"), "{stderr}");
    let on = ok_json(sentinel(&data, &url, Some(&admin), &["killswitch", "on", "--json"]));
    assert_eq!((on["enabled"].as_bool(), on["updated_by"].as_str()), (Some(true), Some("root")));
    let status = sentinel(&data, &url, Some(viewer_secret), &["killswitch", "status"]);
    assert!(String::from_utf8_lossy(&status.stdout).contains("kill switch ON"));

    // Deciding on a run that does not exist: 404, said plainly.
    let missing = sentinel(&data, &url, Some(&admin), &["runs", "approve", "01a2054b-87bb-7445-bf0f-830483e586af"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr)
        .contains("404 Not Found: run 01a2054b-87bb-7445-bf0f-830483e586af not found"));

    // A waiting incident: `runs show` and `runs approve` show the proposal and its gate first.
    ok_json(sentinel(&data, &url, Some(&admin), &["killswitch", "off", "--json"]));
    let db = format!("sqlite://{}", data.join("sentinel.db").display());
    let store = engine::Store::connect(&engine::StoreConfig::new(&db)).await.unwrap();
    // This engine only starts the run and reads it: `serve` runs it.
    let engine = crate::support::incidents(&store, nodes::workflow::WorkflowConfig::default(), true).await.engine;
    let incident = nodes::workflow::Incident::new(crate::api::latency_spike());
    let run = engine.start(nodes::workflow::GRAPH, &incident).await.unwrap();
    engine::testing::wait_until(&engine, run, Duration::from_secs(30), |r| r.status == engine::RunStatus::Waiting)
        .await;
    let id = run.to_string();
    let shown = sentinel(&data, &url, Some(viewer_secret), &["runs", "show", &id]);
    let shown = String::from_utf8_lossy(&shown.stdout).into_owned();
    for needle in [
        "proposal gate 1-",
        "(waiting for a decision)",
        "service     checkout (sev2)",
        // The embedded defaults put every service in `default`, whatever its labels say.
        "action      kubernetes restart_deployment on kubernetes:default/checkout",
        "downtime    ~10 s; blast radius single_service; rollback: restore_pre_state",
    ] {
        assert!(shown.contains(needle), "`runs show` lacks `{needle}`:\n{shown}");
    }
    let approved = sentinel(&data, &url, Some(&admin), &["runs", "approve", &id, "--actor", "slack:U1"]);
    assert!(approved.status.success(), "{}", String::from_utf8_lossy(&approved.stderr));
    let said = String::from_utf8_lossy(&approved.stdout).into_owned();
    assert!(said.contains("action      kubernetes restart_deployment") && said.contains("approve gate 1-"), "{said}");
    let done = engine::testing::wait_until(&engine, run, Duration::from_secs(30), |r| r.status.is_finished()).await;
    let s: nodes::workflow::Incident = serde_json::from_value(done.state).unwrap();
    let d = &s.decisions[0];
    assert_eq!((d.by.as_str(), d.note.as_deref()), ("root", Some("slack:U1")), "the key decides; the actor is a note");
    assert!(s.outcome.unwrap().starts_with("dry run: restart_deployment"), "no executors file: a dry run");
    store.close().await;

    let revoked = ok_json(sentinel(&data, &url, Some(&admin), &["keys", "revoke", viewer_id, "--json"]));
    assert!(revoked["revoked_at"].is_i64());
    let after = sentinel(&data, &url, Some(viewer_secret), &["runs", "list"]);
    assert!(String::from_utf8_lossy(&after.stderr).contains("401 Unauthorized: unknown or revoked API key"));
    let no_key = sentinel(&data, &url, None, &["runs", "list"]);
    assert!(String::from_utf8_lossy(&no_key.stderr).contains("no API key"));

    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&data);
}
