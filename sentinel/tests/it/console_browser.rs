//! The operator console in headless Chromium (Debian's `chromium` and
//! `chromium-driver`, driven over WebDriver): a viewer sees a waiting
//! incident and no decision; an operator approves in the page, by keyboard
//! alone, and the run moves on; a stale confirmation is refused after a re-plan; the feed shows
//! a new incident without a reload; a request without the CSRF token and an
//! expired session are refused. Screenshots of the feed (desktop and phone
//! width) and of an incident page are written to
//! `$CARGO_TARGET_TMPDIR/console-screenshots/`.

use std::net::TcpListener as StdListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use engine::testing::{fast_worker, wait_until, Backend, BackgroundWorker, TestDb};
use engine::{Clock, ManualClock, RunStatus, SystemClock};
use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use nodes::workflow::{self, Incident};
use serde_json::json;

use crate::api::latency_spike;
use crate::support::reached;

/// chromedriver on a free port; killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    async fn start() -> Driver {
        let path = which("chromedriver").unwrap_or_else(|| {
            panic!(
                "chromedriver is not installed: run scripts/ensure-browser.sh (Debian's chromium and chromium-driver)"
            )
        });
        assert!(which("chromium").is_some(), "chromium is not installed: run scripts/ensure-browser.sh");
        let port = StdListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(path)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        let status = format!("{url}/status");
        let up = reached(Duration::from_secs(30), || {
            let status = status.clone();
            async move { reqwest::get(&status).await.is_ok_and(|r| r.status().is_success()) }
        })
        .await;
        assert!(up, "chromedriver did not answer on {url} within 30 s");
        Driver { child, url }
    }

    /// A fresh headless browser (its own profile: no cookies) at 1280×800.
    async fn browser(&self) -> Client {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": which("chromium").unwrap(),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,800"],
            }),
        );
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a WebDriver session in chromium")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| PathBuf::from(d).join(name)).find(|p| p.is_file())
}

fn screenshots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn sign_in(c: &Client, base: &str, key: &str) {
    c.goto(&format!("{base}/console")).await.unwrap();
    // Not signed in: the console sends us to the form.
    c.wait().at_most(Duration::from_secs(20)).for_element(Locator::Css("input#key")).await.unwrap();
    c.find(Locator::Css("input#key")).await.unwrap().send_keys(key).await.unwrap();
    c.find(Locator::Css("form.login button")).await.unwrap().click().await.unwrap();
    until_page_has(c, "id=\"feed\"", "the feed after signing in").await;
}

/// Waits until the page's source contains `text`.
async fn until_page_has(c: &Client, text: &str, what: &str) {
    let ok = reached(Duration::from_secs(30), || async { c.source().await.is_ok_and(|s| s.contains(text)) }).await;
    assert!(ok, "timed out waiting for {what} (`{text}`); page:\n{}", c.source().await.unwrap_or_default());
}

/// Presses `key` on whatever has the keyboard focus.
async fn press(c: &Client, key: Key) {
    let key = char::from(key);
    let keys =
        KeyActions::new("keyboard".into()).then(KeyAction::Down { value: key }).then(KeyAction::Up { value: key });
    c.perform_actions(keys).await.unwrap();
}

/// Presses Tab until the focused element matches `css`, as someone without
/// a mouse does; fails when 100 presses do not get there.
async fn tab_to(c: &Client, css: &str) {
    for _ in 0..100 {
        press(c, Key::Tab).await;
        let focused = c
            .execute(
                "return document.activeElement !== null && document.activeElement.matches(arguments[0]);",
                vec![json!(css)],
            )
            .await
            .unwrap();
        if focused == json!(true) {
            return;
        }
    }
    panic!("100 presses of Tab did not reach `{css}`; page:\n{}", c.source().await.unwrap_or_default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_decides_in_the_browser() {
    let db = TestDb::new(Backend::Postgres).await;
    // Nothing is auto-approved; the first action (a rollback of the recent
    // deployment) does not help, so the incident is re-planned behind gate 2.
    let world = crate::gates::replanned_after_rollback(&db).await;
    let engine = world.engine.clone();
    let clock = Arc::new(ManualClock::new(SystemClock.now()));
    let ttl = Duration::from_secs(3600);
    let (_, access, [_, viewer, operator, _]) = crate::console::console_app(&engine, clock.clone(), ttl).await;
    let second = access.create_key("second-operator", api::access::Role::Operator, "test").await.unwrap().secret;
    // Served on a real port, with the chart reading the same metrics.
    let state = api::server::AppState {
        engine: engine.clone(),
        security: api::security::Security::new(access.clone(), api::security::RateLimit::default()),
        slack: None,
        telemetry: None,
        memory: Arc::new(nodes::memory::NoMemory::default()),
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let console = api::console::Console {
        session_ttl: ttl,
        metrics: Some(Arc::new(world.metrics.clone())),
        stop: stop.clone(),
        ..Default::default()
    };
    let app = api::server::app(state, Some(console));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn({
        let stop = stop.clone();
        async move { axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await }
    });
    let worker = BackgroundWorker::start(&engine, fast_worker("console-browser"));
    let run = engine.start(workflow::GRAPH, &Incident::new(latency_spike())).await.unwrap();
    let waiting = wait_until(&engine, run, Duration::from_secs(20), |r| r.status == RunStatus::Waiting).await;
    let gate1 = serde_json::from_value::<Incident>(waiting.state).unwrap().gate.unwrap();
    let driver = Driver::start().await;
    let shots = screenshots();

    // The viewer: sees the incident waiting for a decision, and no way to decide.
    let v = driver.browser().await;
    sign_in(&v, &base, &viewer).await;
    let row = v.find(Locator::Css(&format!("tr[data-run='{run}']"))).await.expect("the waiting incident in the feed");
    let text = row.text().await.unwrap();
    assert!(text.contains("checkout") && text.contains("decision needed"), "{text}");
    v.goto(&format!("{base}/console/incidents/{run}")).await.unwrap();
    until_page_has(&v, &gate1, "the proposal's gate").await;
    assert!(v.find_all(Locator::Css("a.button.approve")).await.unwrap().is_empty(), "a viewer sees no Approve");
    assert!(v.find_all(Locator::Css("a.button.reject")).await.unwrap().is_empty(), "a viewer sees no Reject");
    v.close().await.unwrap();

    // An operator opens the confirmation of gate 1 ...
    let o = driver.browser().await;
    sign_in(&o, &base, &operator).await;
    std::fs::write(shots.join("feed.png"), o.screenshot().await.unwrap()).unwrap();
    o.goto(&format!("{base}/console/incidents/{run}")).await.unwrap();
    o.find(Locator::Css("a.button.approve")).await.unwrap().click().await.unwrap();
    until_page_has(&o, &format!("Approve gate {gate1}"), "the confirmation of gate 1").await;
    // ... meanwhile someone else approves gate 1 through the API; the
    // rollback does not help, and the incident waits at gate 2.
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{base}/v1/runs/{run}/approve"))
        .bearer_auth(&second)
        .json(&json!({ "gate": gate1 }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let replanned = wait_until(&engine, run, Duration::from_secs(30), |r| {
        r.status == RunStatus::Waiting
            && serde_json::from_value::<Incident>(r.state.clone())
                .is_ok_and(|s| s.gate.is_some_and(|g| g.starts_with("2-")))
    })
    .await;
    let gate2 = serde_json::from_value::<Incident>(replanned.state).unwrap().gate.unwrap();
    // The stale page's confirmation is refused and changes nothing.
    o.find(Locator::Css("form.confirm button")).await.unwrap().click().await.unwrap();
    until_page_has(&o, "Not applied", "the refusal").await;
    let body = o.find(Locator::Css("main")).await.unwrap().text().await.unwrap();
    assert!(body.contains(&format!("gate {gate1} was already approved by second-operator")), "{body}");
    let after = engine.run(run).await.unwrap();
    let s: Incident = serde_json::from_value(after.state).unwrap();
    assert_eq!(
        (after.status, s.gate.as_deref()),
        (RunStatus::Waiting, Some(gate2.as_str())),
        "still waiting at gate 2"
    );
    assert!(!s.decisions.iter().any(|d| d.gate.as_deref() == Some(gate2.as_str())), "gate 2 undecided");

    // The incident page is live: it shows gate 2 (re-planned while we looked away).
    o.goto(&format!("{base}/console/incidents/{run}")).await.unwrap();
    until_page_has(&o, &gate2, "gate 2 on the incident page").await;
    // The whole page: a window as tall as the document.
    let height = o.execute("return document.documentElement.scrollHeight;", vec![]).await.unwrap();
    o.set_window_size(1280, height.as_u64().unwrap_or(800).clamp(800, 6000) as u32).await.unwrap();
    std::fs::write(shots.join("incident.png"), o.screenshot().await.unwrap()).unwrap();
    o.set_window_size(1280, 800).await.unwrap();
    // A request without the CSRF token, from the page itself, is refused.
    let status = o
        .execute_async(
            "const done = arguments[arguments.length - 1];
             fetch(location.pathname + '/approve', { method: 'POST', headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
                 body: 'gate=' + encodeURIComponent(arguments[0]) }).then(r => done(r.status), () => done(0));",
            vec![json!(gate2)],
        )
        .await
        .unwrap();
    assert_eq!(status, json!(403));
    assert_eq!(engine.run(run).await.unwrap().node, "await_approval", "the forged request changed nothing");
    // The operator approves gate 2 in the page, with the keyboard alone:
    // the run moves on.
    tab_to(&o, "a.button.approve").await;
    press(&o, Key::Enter).await;
    until_page_has(&o, &format!("Approve gate {gate2}"), "the confirmation of gate 2").await;
    tab_to(&o, "textarea#reason").await;
    o.active_element().await.unwrap().send_keys("second try").await.unwrap();
    tab_to(&o, "form.confirm button").await;
    press(&o, Key::Enter).await;
    until_page_has(&o, "Your approval was recorded", "the notice").await;
    // Asserted through the REST API, as a viewer reads it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let detail = loop {
        let resp = http.get(format!("{base}/v1/runs/{run}")).bearer_auth(&viewer).send().await.unwrap();
        let detail: serde_json::Value = resp.json().await.unwrap();
        if detail["run"]["node"] != "await_approval" {
            break detail;
        }
        assert!(tokio::time::Instant::now() < deadline, "the run did not move on after the approval: {detail}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let s: Incident = serde_json::from_value(detail["state"].clone()).unwrap();
    let d = s.decisions.iter().find(|d| d.gate.as_deref() == Some(gate2.as_str())).expect("gate 2's decision");
    assert!(d.approved);
    assert_eq!(
        (d.by.as_str(), d.via.as_deref(), d.reason.as_str()),
        ("operator-person", Some("console"), "second try")
    );

    // The feed is live: a new incident appears without a reload.
    o.goto(&format!("{base}/console")).await.unwrap();
    o.wait().at_most(Duration::from_secs(20)).for_element(Locator::Css("#feed")).await.unwrap();
    let connected = reached(Duration::from_secs(30), || async {
        o.execute("return document.getElementById('live-state').textContent;", vec![])
            .await
            .is_ok_and(|v| v == json!("live"))
    })
    .await;
    assert!(connected, "the feed's event stream did not connect");
    o.execute("window.sentinelMarker = 42;", vec![]).await.unwrap();
    let mut payments = latency_spike();
    payments.service = "payments".into();
    let second_run = engine.start(workflow::GRAPH, &Incident::new(payments)).await.unwrap();
    until_page_has(&o, &format!("data-run=\"{second_run}\""), "the new incident in the feed").await;
    assert_eq!(o.execute("return window.sentinelMarker;", vec![]).await.unwrap(), json!(42), "no reload happened");
    o.set_window_size(390, 844).await.unwrap();
    std::fs::write(shots.join("feed-phone.png"), o.screenshot().await.unwrap()).unwrap();

    // The session expires: the next page is the sign-in form, saying so.
    clock.advance(ttl + Duration::from_secs(1));
    o.goto(&format!("{base}/console/incidents/{run}")).await.unwrap();
    until_page_has(&o, "Your session has ended", "the sign-in form after expiry").await;
    assert!(o.current_url().await.unwrap().path().ends_with("/console/login"));
    o.close().await.unwrap();

    eprintln!("console screenshots: {}", shots.display());
    worker.stop().await;
    stop.cancel();
    server.await.unwrap().unwrap();
}
