//! The operator console at its boundary, without a browser: sign-in and the
//! session cookie, CSRF, roles, expiry and revocation, decisions bound to
//! the gate and audited, and the live feed's events.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use engine::testing::{fast_worker, wait_until, Backend, BackgroundWorker, TestDb};
use engine::{Clock, Engine, ManualClock, RunStatus, SystemClock};
use http_body_util::BodyExt;
use nodes::workflow::{self, Incident, WorkflowConfig};
use tower::ServiceExt;

use api::access::{Access, Role};
use api::console::Console;
use api::security::{RateLimit, Security};
use api::server::{app, AppState};

use crate::api::latency_spike;

/// The API with the console, over `engine`'s database; sessions and audit
/// timed by `clock`. Returns the router, the access tables, and a key per role.
pub async fn console_app(
    engine: &Engine,
    clock: Arc<ManualClock>,
    ttl: Duration,
) -> (axum::Router, Access, [String; 4]) {
    let access = Access::new(engine.store(), clock).await.expect("API migrations");
    let mut keys = Vec::new();
    for role in [Role::Ingest, Role::Viewer, Role::Operator, Role::Admin] {
        keys.push(access.create_key(&format!("{role}-person"), role, "test").await.expect("create key").secret);
    }
    let state = AppState {
        engine: engine.clone(),
        security: Security::new(access.clone(), RateLimit::default()),
        slack: None,
        telemetry: None,
        memory: Arc::new(nodes::memory::NoMemory::default()),
    };
    let console = Console { session_ttl: ttl, ..Console::default() };
    (app(state, Some(console)), access, keys.try_into().unwrap())
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: String,
}

pub async fn send(app: &axum::Router, req: Request<Body>) -> Reply {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = String::from_utf8_lossy(&resp.into_body().collect().await.unwrap().to_bytes()).into_owned();
    Reply { status, headers, body }
}

fn get(uri: &str, cookie: Option<&str>) -> Request<Body> {
    let mut req = Request::get(uri);
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, c);
    }
    req.body(Body::empty()).unwrap()
}

fn post(uri: &str, cookie: Option<&str>, form: &[(&str, &str)]) -> Request<Body> {
    let mut req = Request::post(uri).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, c);
    }
    req.body(Body::from(serde_urlencoded::to_string(form).unwrap())).unwrap()
}

/// Signs in with `key`: the cookie to send back (`name=value`) and the Set-Cookie header.
pub async fn sign_in(app: &axum::Router, key: &str) -> (String, String) {
    let r = send(app, post("/console/login", None, &[("key", key), ("next", "/console")])).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let set = r.headers.get(header::SET_COOKIE).expect("a session cookie").to_str().unwrap().to_owned();
    (set.split(';').next().unwrap().to_owned(), set)
}

/// The CSRF token the page's forms carry.
fn csrf(page: &str) -> String {
    let at = page.find(r#"name="csrf" value=""#).expect("a form with the CSRF token") + r#"name="csrf" value=""#.len();
    page[at..at + 64].to_owned()
}

async fn audited(access: &Access, action_suffix: &str) -> Vec<(String, Option<i64>)> {
    access
        .audit_log(200)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action.ends_with(action_suffix))
        .map(|e| (e.actor, e.status))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_csrf_and_roles_sqlite() {
    sessions_csrf_and_roles(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_csrf_and_roles_postgres() {
    sessions_csrf_and_roles(Backend::Postgres).await;
}

async fn sessions_csrf_and_roles(backend: Backend) {
    let db = TestDb::new(backend).await;
    let world = crate::support::incidents(&db.store().await, WorkflowConfig::default(), true).await;
    let engine = world.engine.clone();
    let clock = Arc::new(ManualClock::new(SystemClock.now()));
    let ttl = Duration::from_secs(3600);
    let (app, access, [ingest, viewer, operator, admin]) = console_app(&engine, clock.clone(), ttl).await;
    let worker = BackgroundWorker::start(&engine, fast_worker("console"));
    let run = engine.start(workflow::GRAPH, &Incident::new(latency_spike())).await.unwrap();
    let waiting = wait_until(&engine, run, Duration::from_secs(20), |r| r.status == RunStatus::Waiting).await;
    let gate = serde_json::from_value::<Incident>(waiting.state.clone()).unwrap().gate.unwrap();

    // Signed out: pages go to the sign-in form and come back; forms and the feed are 401.
    let r = send(&app, get(&format!("/console/incidents/{run}"), None)).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let to = r.headers[header::LOCATION].to_str().unwrap();
    assert!(to.starts_with("/console/login?") && to.contains(&format!("incidents%2F{run}")), "{to}");
    assert_eq!(send(&app, get("/console/events", None)).await.status, StatusCode::UNAUTHORIZED);
    let r = send(&app, post(&format!("/console/incidents/{run}/approve"), None, &[("gate", &gate)])).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // Bad keys: refused with a reason; an ingest key cannot sign in; an
    // outside `next` is not followed.
    let r = send(&app, post("/console/login", None, &[("key", "snl_not-a-key")])).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.body.contains("Unknown or revoked API key"), "{}", r.body);
    assert!(r.headers.get(header::SET_COOKIE).is_none());
    let r = send(&app, post("/console/login", None, &[("key", &ingest)])).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = send(&app, post("/console/login", None, &[("key", &viewer), ("next", "//evil.example/x")])).await;
    assert_eq!(r.headers[header::LOCATION], "/console");
    let mut cross = post("/console/login", None, &[("key", &viewer)]);
    cross.headers_mut().insert(header::ORIGIN, "https://evil.example".parse().unwrap());
    cross.headers_mut().insert(header::HOST, "sentinel.local".parse().unwrap());
    assert_eq!(send(&app, cross).await.status, StatusCode::FORBIDDEN);

    // The cookie: HttpOnly, SameSite=Strict, scoped to the console, expiring;
    // Secure when the request came over TLS.
    let (viewer_cookie, set) = sign_in(&app, &viewer).await;
    for part in ["HttpOnly", "SameSite=Strict", "Path=/console", "Max-Age=3600"] {
        assert!(set.contains(part), "{set} lacks {part}");
    }
    assert!(!set.contains("Secure"), "{set}");
    let mut tls = post("/console/login", None, &[("key", &viewer)]);
    tls.headers_mut().insert("x-forwarded-proto", "https".parse().unwrap());
    let r = send(&app, tls).await;
    assert!(r.headers[header::SET_COOKIE].to_str().unwrap().contains("Secure"));

    // The viewer sees the waiting incident and its proposal, and no way to decide.
    let feed = send(&app, get("/console", Some(&viewer_cookie))).await;
    assert_eq!(feed.status, StatusCode::OK);
    assert!(feed.body.contains("checkout") && feed.body.contains("decision needed"), "{}", feed.body);
    assert!(feed.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap().contains("frame-ancestors 'none'"));
    let page = send(&app, get(&format!("/console/incidents/{run}"), Some(&viewer_cookie))).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains(&gate), "the page names the gate");
    assert!(!page.body.contains("/decide?"), "a viewer is offered no decision:\n{}", page.body);
    assert!(page.body.contains("you can see this proposal but not decide it"));
    let token = csrf(&page.body);
    // A forged POST with a valid session and token is still refused by role, and audited.
    let r = send(
        &app,
        post(&format!("/console/incidents/{run}/approve"), Some(&viewer_cookie), &[("csrf", &token), ("gate", &gate)]),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(audited(&access, "/approve").await, vec![("viewer-person".to_owned(), Some(403))]);
    let r = send(&app, get(&format!("/console/incidents/{run}/decide?kind=approve&gate={gate}"), Some(&viewer_cookie)))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // An operator: the confirmation shows exactly the proposal; without the
    // CSRF token, with a wrong one, or from another origin, nothing happens.
    let (op_cookie, _) = sign_in(&app, &operator).await;
    let confirm =
        send(&app, get(&format!("/console/incidents/{run}/decide?kind=approve&gate={gate}"), Some(&op_cookie))).await;
    assert_eq!(confirm.status, StatusCode::OK);
    assert!(confirm.body.contains(&format!("Approve gate {gate}")), "{}", confirm.body);
    let token = csrf(&confirm.body);
    let uri = format!("/console/incidents/{run}/approve");
    for form in [vec![("gate", gate.as_str())], vec![("csrf", "0".repeat(64).as_str()), ("gate", gate.as_str())]] {
        let r = send(&app, post(&uri, Some(&op_cookie), &form)).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
        assert!(r.body.contains("security token"), "{}", r.body);
    }
    let mut cross = post(&uri, Some(&op_cookie), &[("csrf", &token), ("gate", &gate)]);
    cross.headers_mut().insert(header::ORIGIN, "https://evil.example".parse().unwrap());
    cross.headers_mut().insert(header::HOST, "sentinel.local".parse().unwrap());
    assert_eq!(send(&app, cross).await.status, StatusCode::FORBIDDEN);
    // A gate that is not the one waiting: refused, recorded on the run, not applied.
    let r = send(&app, post(&uri, Some(&op_cookie), &[("csrf", &token), ("gate", "1-0000000000000000")])).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.body.contains("the proposal changed since the page was loaded"), "{}", r.body);
    assert_eq!(engine.run(run).await.unwrap().status, RunStatus::Waiting);
    // Session ends with the key's revocation, whatever the cookie says.
    let (admin_cookie, _) = sign_in(&app, &admin).await;
    let admin_key = access.list_keys().await.unwrap().into_iter().find(|k| k.name == "admin-person").unwrap();
    access.revoke_key(&admin_key.id).await.unwrap();
    assert_eq!(send(&app, get("/console", Some(&admin_cookie))).await.status, StatusCode::SEE_OTHER);

    // The decision, as the operator: the run moves on, recorded as theirs, via the console, audited.
    let r =
        send(&app, post(&uri, Some(&op_cookie), &[("csrf", &token), ("gate", &gate), ("reason", "looks right")])).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let done = wait_until(&engine, run, Duration::from_secs(20), |r| r.node != "await_approval").await;
    let s: Incident = serde_json::from_value(done.state).unwrap();
    let d = s.decisions.iter().find(|d| d.gate.as_deref() == Some(gate.as_str())).expect("the gate's decision");
    assert!(d.approved);
    assert_eq!(
        (d.by.as_str(), d.via.as_deref(), d.reason.as_str()),
        ("operator-person", Some("console"), "looks right")
    );
    let approvals = audited(&access, "/approve").await;
    assert!(approvals.contains(&("operator-person".to_owned(), Some(303))), "{approvals:?}");

    // No page shows a key's secret.
    for uri in ["/console".to_owned(), format!("/console/incidents/{run}"), "/console/operations".to_owned()] {
        let r = send(&app, get(&uri, Some(&op_cookie))).await;
        assert_eq!(r.status, StatusCode::OK, "{uri}");
        for secret in [&ingest, &viewer, &operator, &admin] {
            assert!(!r.body.contains(secret.as_str()), "{uri} shows a key");
        }
    }

    // Expiry: an hour later the session is over; pages send to sign-in, forms are 401.
    clock.advance(ttl + Duration::from_secs(1));
    let r = send(&app, get("/console", Some(&op_cookie))).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let r = send(&app, post(&format!("/console/incidents/{run}/cancel"), Some(&op_cookie), &[("csrf", &token)])).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_ne!(engine.run(run).await.unwrap().status, RunStatus::Cancelled, "an expired session cancelled nothing");

    // Sign out ends a session at once.
    let (cookie, _) = sign_in(&app, &viewer).await;
    let page = send(&app, get("/console", Some(&cookie))).await;
    let r = send(&app, post("/console/logout", Some(&cookie), &[("csrf", &csrf(&page.body))])).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(send(&app, get("/console", Some(&cookie))).await.status, StatusCode::SEE_OTHER);
    worker.stop().await;
}

/// The live feed: a change to a run reaches a signed-in page as a `change`
/// event naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_announces_changed_runs() {
    let db = TestDb::new(Backend::Postgres).await;
    let world = crate::support::incidents(&db.store().await, WorkflowConfig::default(), true).await;
    let engine = world.engine.clone();
    // Changes made through another handle on the database reach this one through PostgreSQL.
    let other = crate::support::incidents(&db.store().await, WorkflowConfig::default(), true).await.engine;
    let stop = tokio_util::sync::CancellationToken::new();
    let follow = tokio::spawn({
        let (store, stop) = (engine.store().clone(), stop.clone());
        async move { store.follow_changes(stop).await }
    });
    let clock = Arc::new(ManualClock::new(SystemClock.now()));
    let (app, _, [_, viewer, _, _]) = console_app(&engine, clock, Duration::from_secs(3600)).await;
    let (cookie, _) = sign_in(&app, &viewer).await;
    let resp = app.clone().oneshot(get("/console/events", Some(&cookie))).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/event-stream");
    let mut body = resp.into_body();
    let mut seen = String::new();
    let mut next_event = async |seen: &mut String, until: &str| {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !seen.contains(until) {
            let frame = tokio::time::timeout_at(deadline, body.frame()).await;
            let frame = frame.unwrap_or_else(|_| panic!("no `{until}` in the feed within 20 s; got:\n{seen}"));
            let frame = frame.expect("the feed ended").expect("a frame");
            if let Some(data) = frame.data_ref() {
                seen.push_str(&String::from_utf8_lossy(data));
            }
        }
    };
    next_event(&mut seen, "event: ready").await;
    let run = other.start(workflow::GRAPH, &Incident::new(latency_spike())).await.unwrap();
    next_event(&mut seen, &run.to_string()).await;
    assert!(seen.contains("event: change"), "{seen}");
    stop.cancel();
    follow.await.unwrap();
}

/// Operations: cancel for operators; the kill switch for admins only; a
/// dead-lettered notification requeued; every change audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_cancel_and_requeue_admins_hold_the_kill_switch() {
    let db = TestDb::new(Backend::Sqlite).await;
    let world = crate::support::incidents(&db.store().await, WorkflowConfig::default(), true).await;
    let engine = world.engine.clone();
    let clock = Arc::new(ManualClock::new(SystemClock.now()));
    let (app, access, [_, _, operator, admin]) = console_app(&engine, clock, Duration::from_secs(3600)).await;
    let worker = BackgroundWorker::start(&engine, fast_worker("console-ops"));
    let run = engine.start(workflow::GRAPH, &Incident::new(latency_spike())).await.unwrap();
    wait_until(&engine, run, Duration::from_secs(20), |r| r.status == RunStatus::Waiting).await;

    // The approval request went to the outbox; pretend its delivery was given up on.
    let store = engine.store();
    let outbox = store.outbox_list(None, 10).await.unwrap();
    let message = outbox.iter().find(|m| m.run_id == run.to_string()).expect("the approval request in the outbox");
    sqlx::query("UPDATE outbox SET status = 'dead', last_error = 'slack: 500' WHERE id = $1")
        .bind(message.id)
        .execute(store.pool())
        .await
        .unwrap();

    let (op, _) = sign_in(&app, &operator).await;
    let page = send(&app, get("/console/operations", Some(&op))).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("slack: 500") && page.body.contains("Requeue"), "{}", page.body);
    assert!(page.body.contains("Closed: "), "the breaker's state: {}", page.body);
    assert!(!page.body.contains("/console/kill-switch"), "an operator is offered no kill switch");
    let token = csrf(&page.body);
    // The kill switch is an admin's: refused (and audited) for an operator.
    let r = send(&app, post("/console/kill-switch", Some(&op), &[("csrf", &token), ("enabled", "on")])).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(!access.kill_switch().await.unwrap().enabled);
    // Requeue: the message is pending again.
    let r = send(&app, post(&format!("/console/outbox/{}/requeue", message.id), Some(&op), &[("csrf", &token)])).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let again = store.outbox_list(None, 10).await.unwrap().into_iter().find(|m| m.id == message.id).unwrap();
    assert_eq!(again.status, "pending");
    let r = send(&app, post(&format!("/console/outbox/{}/requeue", message.id), Some(&op), &[("csrf", &token)])).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "a message not dead-lettered is not requeued twice");

    // The admin turns the kill switch on.
    let (ad, _) = sign_in(&app, &admin).await;
    let page = send(&app, get("/console/operations", Some(&ad))).await;
    assert!(page.body.contains("Turn the kill switch on"));
    let r =
        send(&app, post("/console/kill-switch", Some(&ad), &[("csrf", &csrf(&page.body)), ("enabled", "on")])).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let kill = access.kill_switch().await.unwrap();
    assert_eq!((kill.enabled, kill.updated_by.as_deref()), (true, Some("admin-person")));

    // The operator cancels the incident.
    let page = send(&app, get(&format!("/console/incidents/{run}"), Some(&op))).await;
    assert!(page.body.contains("Cancel the incident"));
    let r = send(
        &app,
        post(&format!("/console/incidents/{run}/cancel"), Some(&op), &[("csrf", &token), ("reason", "duplicate page")]),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let cancelled = wait_until(&engine, run, Duration::from_secs(20), |r| r.status == RunStatus::Cancelled).await;
    assert!(cancelled.error.unwrap_or_default().contains("console-cancel:operator-person"));

    let audit: Vec<(String, String, Option<i64>)> =
        access.audit_log(50).await.unwrap().into_iter().map(|e| (e.actor, e.action, e.status)).collect();
    for expected in [
        ("operator-person", "POST /console/kill-switch", Some(403)),
        ("operator-person", "POST /console/outbox/{id}/requeue", Some(303)),
        ("admin-person", "POST /console/kill-switch", Some(303)),
        ("operator-person", "POST /console/incidents/{id}/cancel", Some(303)),
    ] {
        assert!(
            audit.iter().any(|(a, b, c)| (a.as_str(), b.as_str(), *c) == expected),
            "no audit entry {expected:?} in {audit:?}"
        );
    }
    worker.stop().await;
}
