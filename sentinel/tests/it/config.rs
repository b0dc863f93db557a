//! The configuration file through the binary: `sentinel config check`,
//! `sentinel runbooks lint`, and `serve` refusing a bad file before it starts.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn sentinel(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sentinel"));
    cmd.args(args).current_dir(repo()).stdin(Stdio::null()).env("SENTINEL_LOG", "warn");
    for var in [
        "SENTINEL_CONFIG",
        "DATABASE_URL",
        "SLACK_SIGNING_SECRET",
        "SLACK_BOT_TOKEN",
        "KAFKA_BROKERS",
        "CLICKHOUSE_URL",
    ] {
        cmd.env_remove(var);
    }
    cmd.output().expect("run sentinel")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let dir = std::env::temp_dir().join(format!("sentinel-config-it-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The files the Kubernetes manifests ship as the ConfigMap's `sentinel.yaml`
/// are valid, and each overlay acts the way its comment says.
#[test]
fn the_kubernetes_configurations_pass_config_check() {
    for (file, executors) in [
        ("k8s/base/sentinel.yaml", "executors: none (every action is a dry run through the mock backend)"),
        ("k8s/overlays/staging/sentinel.yaml", "executors: aws, kubernetes (dry run)"),
        ("k8s/overlays/prod/sentinel.yaml", "executors: aws, kubernetes (live)"),
    ] {
        let out = sentinel(&["config", "check", file]);
        assert!(out.status.success(), "{file}: {}", text(&out.stderr));
        let shown = text(&out.stdout);
        assert!(shown.starts_with(&format!("{file}: ok\n")) && shown.contains(executors), "{file}: {shown}");
    }
}

#[test]
fn config_check_passes_the_example_and_names_the_place_of_an_error() {
    let out = sentinel(&["config", "check", "sentinel.example.yaml"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(shown.starts_with("sentinel.example.yaml: ok\n"), "{shown}");
    assert!(shown.contains("services: 5 (checkout, inventory, ledger, payments, reports)"), "{shown}");
    assert!(shown.contains("runbooks: 15 (1 from the team's directories)"), "{shown}");
    assert!(shown.contains("executors: aws, kubernetes, webhook (dry run)"), "{shown}");

    let dir = Scratch::new();
    let file = dir.0.join("sentinel.yaml");
    std::fs::write(&file, "services:\n  - name: a\n  - name: b\n    depends_on: [a, billing]\n").unwrap();
    let out = sentinel(&["--config", file.to_str().unwrap(), "config", "check"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("{}:4:21: `b` depends on `billing`, which is not a listed service", file.display())),
        "{err}"
    );

    // A metric store deadline too short to mean anything is refused where it is written.
    let short = dir.0.join("short-timeout.yaml");
    std::fs::write(&short, "telemetry:\n  clickhouse:\n    url: \"http://127.0.0.1:8123\"\n    timeout: 10ms\n")
        .unwrap();
    let out = sentinel(&["--config", short.to_str().unwrap(), "config", "check"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains(&format!("{}:4:", short.display())) && err.contains("it must be at least 100ms"), "{err}");

    // `serve` refuses the same file before it listens.
    let out = sentinel(&["serve", "--listen", "127.0.0.1:0", "--config", file.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains(":4:21: `b` depends on `billing`"), "{}", text(&out.stderr));
}

#[test]
fn runbooks_lint_checks_each_directory() {
    let out = sentinel(&["runbooks", "lint", "examples/runbooks", "nodes/runbooks"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(shown.contains("examples/runbooks: 1 runbooks ok (checkout-high-latency)"), "{shown}");
    assert!(shown.contains("nodes/runbooks: 14 runbooks ok"), "{shown}");

    let dir = Scratch::new();
    std::fs::write(
        dir.0.join("bad.yaml"),
        "id: bad\ntitle: Bad\nmatch:\n  alerts: [{ name: X, matchers: ['severity=~\"(\"'] }]\nsteps: []\n",
    )
    .unwrap();
    let out = sentinel(&["runbooks", "lint", dir.0.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains(&format!("{}:4:", dir.0.join("bad.yaml").display())), "{err}");
    assert!(err.contains("not a regular expression"), "{err}");
}
