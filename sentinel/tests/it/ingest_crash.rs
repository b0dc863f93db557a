//! A real `sentinel serve` on the tansu broker and clickhouse-server, killed
//! with SIGKILL while events stream in and started again: every event it
//! answered 202 for ends up in ClickHouse, once.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use telemetry::store::{ClickHouseConfig, ClickHouseStore, EventStore};

use crate::support::{admin_url, eventually, fresh_database};

struct Serve(Child);

impl Serve {
    fn start(port: u16, env: &[(&str, String)]) -> Serve {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sentinel"));
        cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")]).env("SENTINEL_LOG", "warn");
        for (k, v) in env {
            cmd.env(k, v);
        }
        Serve(cmd.stdin(Stdio::null()).spawn().expect("spawn sentinel serve"))
    }

    fn kill(mut self) {
        self.0.kill().expect("SIGKILL serve");
        self.0.wait().expect("reap serve");
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn up(http: &reqwest::Client, url: &str) {
    eventually("serve answers", Duration::from_secs(30), || {
        let req = http.get(format!("{url}/health"));
        async move { req.send().await.is_ok_and(|r| r.status().is_success()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_killed_during_ingestion_loses_no_accepted_event() {
    let brokers = crate::support::kafka_brokers().await;
    let clickhouse = std::env::var("CLICKHOUSE_URL").unwrap_or_else(|_| "http://127.0.0.1:8123".into());
    let id = uuid::Uuid::new_v4().simple().to_string();
    let database_url = fresh_database(&admin_url()).await;
    let env = vec![
        ("DATABASE_URL", database_url.clone()),
        ("KAFKA_BROKERS", brokers),
        ("CLICKHOUSE_URL", clickhouse.clone()),
        ("SENTINEL_KAFKA_TOPIC", format!("t-crash-{id}")),
        ("SENTINEL_KAFKA_GROUP", format!("g-crash-{id}")),
        ("SENTINEL_CLICKHOUSE_DATABASE", format!("sentinel_t_crash_{id}")),
    ];
    let key = Command::new(env!("CARGO_BIN_EXE_sentinel"))
        .args(["keys", "create", "--direct", "--name", "agent", "--role", "operator", "--json"])
        .env("DATABASE_URL", &database_url)
        .env("SENTINEL_LOG", "warn")
        .output()
        .unwrap();
    assert!(key.status.success(), "{}", String::from_utf8_lossy(&key.stderr));
    let key: Value = serde_json::from_slice(&key.stdout).unwrap();
    let key = key["secret"].as_str().unwrap().to_owned();

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let mut serve = Some(Serve::start(port, &env));
    up(&http, &url).await;

    // 60 batches of 100 samples; SIGKILL after the 20th is answered, start again
    // after the 35th is sent. A batch not answered 202 is sent again, as a client would.
    let mut accepted = 0u64;
    let mut refused = 0;
    for n in 0..60i64 {
        let batch: Vec<Value> = (0..100)
            .map(|i| {
                json!({ "kind": "metric", "ts": 1_795_417_200_000i64 + (n * 100 + i) * 1000,
                        "service": format!("svc-{}", i % 10), "metric": "http_p99_ms", "value": 100 + (i % 7) })
            })
            .collect();
        loop {
            let resp = http.post(format!("{url}/v1/events")).bearer_auth(&key).json(&batch).send().await;
            if resp.as_ref().is_ok_and(|r| r.status().as_u16() == 202) {
                accepted += 100;
                break;
            }
            refused += 1;
            if serve.is_none() && refused > 5 {
                serve = Some(Serve::start(port, &env));
                up(&http, &url).await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if n == 20 {
            serve.take().unwrap().kill();
        }
    }
    assert!(refused > 0, "requests were refused while serve was down");
    assert_eq!(accepted, 6000);
    let store = ClickHouseStore::new(&ClickHouseConfig {
        database: format!("sentinel_t_crash_{id}"),
        ..ClickHouseConfig::new(&clickhouse)
    });
    eventually("every accepted event in ClickHouse", Duration::from_secs(60), || async {
        store.counts().await.map(|c| c["metric"] == accepted).unwrap_or(false)
    })
    .await;
    drop(serve);
    store.drop_database().await.unwrap();
}
