//! The operator console: server-rendered pages over the same engine, gate
//! and access rules as the REST API. Sign in with an API key to get a
//! session cookie (HttpOnly, SameSite=Strict, Secure behind TLS, expiring);
//! every state-changing form carries the session's CSRF token; the session
//! acts as its key, with the key's role, and every decision goes through the
//! gate ([`crate::gate`]) and into the audit log like any other.
//!
//! The pages work without JavaScript. `console.js` adds the live feed: it
//! listens to `/console/events` (server-sent events from the engine's own
//! change notifications) and re-fetches the part of the page marked
//! `data-live` when a run it shows changed.

mod svg;
mod view;

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Form, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use engine::{RunFilter, RunId};
use futures::StreamExt as _;
use maud::Markup;
use nodes::policy::PolicyConfig;
use nodes::ports::MetricStore;
use nodes::workflow;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::access::{Role, Session};
use crate::gate;
use crate::security::{self, Caller};
use crate::server::AppState;

/// The session cookie. Scoped to `/console`: the REST API never reads it.
pub const COOKIE: &str = "sentinel_session";

/// Form bodies the console accepts are small; anything larger is refused.
const MAX_FORM_BYTES: usize = 16 * 1024;

/// How the console is served.
#[derive(Clone)]
pub struct Console {
    /// How long a session lasts after sign-in.
    pub session_ttl: Duration,
    /// Mark the cookie `Secure` on every response (set when Sentinel itself is
    /// behind TLS). It is also marked so whenever the request says it came
    /// over TLS (`X-Forwarded-Proto: https`).
    pub secure_cookies: bool,
    /// Where the incident page's chart reads the metric from.
    pub metrics: Option<Arc<dyn MetricStore>>,
    /// The policy, for the breaker's state.
    pub policy: PolicyConfig,
    /// Ends the live feeds (so a graceful shutdown is not held open by them).
    pub stop: CancellationToken,
}

impl Default for Console {
    fn default() -> Self {
        Console {
            session_ttl: Duration::from_secs(8 * 3600),
            secure_cookies: false,
            metrics: None,
            policy: PolicyConfig::default(),
            stop: CancellationToken::new(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct ConsoleState {
    app: AppState,
    console: Arc<Console>,
}

/// The console's routes, by the role they need. Mutating routes are audited
/// (after the session, CSRF and role are checked, as the API's are).
pub fn router(app: AppState, console: Console) -> Router {
    let sec = app.security.clone();
    let state = ConsoleState { app, console: Arc::new(console) };
    let public =
        Router::new().route("/console/login", get(login_page).post(login)).route("/console/assets/{file}", get(asset));
    let viewer = Router::new()
        .route("/console", get(feed))
        .route("/console/events", get(events))
        .route("/console/incidents/{id}", get(incident))
        .route("/console/operations", get(operations))
        .route("/console/logout", post(logout))
        .route_layer(from_fn_with_state((state.clone(), Role::Viewer), guard));
    let operator = Router::new()
        .route("/console/incidents/{id}/decide", get(confirm))
        .route("/console/incidents/{id}/approve", post(approve))
        .route("/console/incidents/{id}/reject", post(reject))
        .route("/console/incidents/{id}/cancel", post(cancel))
        .route("/console/incidents/{id}/retry", post(retry))
        .route("/console/outbox/{id}/requeue", post(requeue))
        .route_layer(from_fn_with_state(sec.clone(), security::audit))
        .route_layer(from_fn_with_state((state.clone(), Role::Operator), guard));
    let admin = Router::new()
        .route("/console/kill-switch", post(kill_switch))
        .route_layer(from_fn_with_state(sec, security::audit))
        .route_layer(from_fn_with_state((state.clone(), Role::Admin), guard));
    public.merge(viewer).merge(operator).merge(admin).with_state(state).layer(axum::middleware::map_response(harden))
}

/// Every console response: no framing, no referrer to other sites, scripts and styles from
/// the console itself only, nothing cached.
async fn harden(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // `same-origin`, not `no-referrer`: under the latter a browser sends `Origin: null` on
    // its own form posts, which the origin check refuses.
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    resp
}

// ---- sessions ---------------------------------------------------------------

/// The session cookie's secret in the request, if any.
fn session_secret(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == COOKIE)
        .map(|c| c.value().to_owned())
}

/// Whether the request came over TLS, as far as Sentinel can tell.
fn over_tls(headers: &HeaderMap) -> bool {
    headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()).is_some_and(|p| p.eq_ignore_ascii_case("https"))
}

fn session_cookie(value: String, max_age: Duration, secure: bool) -> HeaderValue {
    let cookie = cookie::Cookie::build((COOKIE, value))
        .path("/console")
        .http_only(true)
        .secure(secure)
        .same_site(cookie::SameSite::Strict)
        .max_age(cookie::time::Duration::seconds(max_age.as_secs() as i64))
        .build();
    HeaderValue::from_str(&cookie.to_string()).expect("a cookie of hex characters is a valid header")
}

/// A cross-site request: an `Origin` that is not this host.
fn foreign_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
    origin == "null" || origin_host != host
}

/// The console's gate: a live session (or the sign-in page), the CSRF token
/// on anything that changes state, and the role the route needs. Passes the
/// caller on as the API's [`Caller`], so auditing works the same.
async fn guard(State((state, needed)): State<(ConsoleState, Role)>, req: Request, next: Next) -> Response {
    let mutating = req.method() != Method::GET && req.method() != Method::HEAD;
    let Some(secret) = session_secret(req.headers()) else {
        return signed_out(&req, mutating, "Sign in to use the console.");
    };
    let session = match state.app.security.access.session(&secret).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            return signed_out(
                &req,
                mutating,
                "Your session has ended (expired, signed out, or its key revoked). Sign in again.",
            )
        }
        Err(e) => {
            tracing::warn!(error = %e, "console: session lookup failed");
            return view::error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "The database is unavailable; nothing was changed. Try again.",
                None,
            );
        }
    };
    let caller = Caller { key_id: session.key_id.clone(), name: session.name.clone(), role: session.role };
    let mut req = req;
    if mutating {
        if foreign_origin(req.headers()) {
            tracing::warn!(actor = %session.name, "console: refused a request from another origin");
            return view::error_page(
                StatusCode::FORBIDDEN,
                "Refused: this request came from another site.",
                Some(&session),
            );
        }
        let (parts, body) = req.into_parts();
        let bytes = match axum::body::to_bytes(body, MAX_FORM_BYTES).await {
            Ok(b) => b,
            Err(_) => return view::error_page(StatusCode::PAYLOAD_TOO_LARGE, "The form is too large.", Some(&session)),
        };
        let sent = parts.headers.get("x-csrf-token").and_then(|v| v.to_str().ok()).map(str::to_owned).or_else(|| {
            serde_urlencoded::from_bytes::<Vec<(String, String)>>(&bytes)
                .ok()
                .and_then(|fields| fields.into_iter().find(|(k, _)| k == "csrf").map(|(_, v)| v))
        });
        if !sent.as_deref().is_some_and(|t| constant_time_eq(t.as_bytes(), session.csrf.as_bytes())) {
            tracing::warn!(actor = %session.name, path = %parts.uri.path(), "console: refused a request without its CSRF token");
            return view::error_page(
                StatusCode::FORBIDDEN,
                "Refused: the form's security token is missing or wrong (a stale or forged form). Nothing was changed; reload the page and try again.",
                Some(&session),
            );
        }
        req = Request::from_parts(parts, axum::body::Body::from(bytes));
    }
    if caller.role < needed {
        let message = format!("This needs the {needed} role; you are signed in as {} ({}).", caller.name, caller.role);
        if mutating {
            let call = security::Refused::of(&req);
            security::record_refusal(&state.app.security, call, &caller, &message).await;
        }
        return view::error_page(StatusCode::FORBIDDEN, &message, Some(&session));
    }
    req.extensions_mut().insert(caller);
    req.extensions_mut().insert(session);
    next.run(req).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// No session: pages go to the sign-in form (and come back after); the live
/// feed and forms are answered 401.
fn signed_out(req: &Request, mutating: bool, why: &str) -> Response {
    let path = req.uri().path();
    if mutating || path == "/console/events" || req.headers().contains_key("x-console-live") {
        return view::error_page(StatusCode::UNAUTHORIZED, &format!("{why} Nothing was changed."), None);
    }
    let next = req.uri().path_and_query().map_or("/console", |p| p.as_str());
    let query = serde_urlencoded::to_string([("next", next), ("why", "signed_out")]).unwrap_or_default();
    Redirect::to(&format!("/console/login?{query}")).into_response()
}

#[derive(Deserialize, Default)]
struct LoginQuery {
    next: Option<String>,
    why: Option<String>,
}

async fn login_page(axum::extract::Query(q): axum::extract::Query<LoginQuery>) -> Markup {
    let note = q.why.as_deref().map(|_| "Your session has ended, or you have not signed in yet.");
    view::login(safe_next(q.next.as_deref()), note, None)
}

/// Only a console path: never another site, never a scheme-relative `//host`.
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n) if n.starts_with("/console") && !n.starts_with("//") && !n.contains('\\') => n,
        _ => "/console",
    }
}

#[derive(Deserialize)]
struct LoginForm {
    key: String,
    #[serde(default)]
    next: Option<String>,
}

async fn login(State(state): State<ConsoleState>, headers: HeaderMap, Form(form): Form<LoginForm>) -> Response {
    let next = safe_next(form.next.as_deref()).to_owned();
    if foreign_origin(&headers) {
        return (
            StatusCode::FORBIDDEN,
            view::login(&next, None, Some("Refused: this sign-in came from another site.")),
        )
            .into_response();
    }
    let access = &state.app.security.access;
    let key = match access.authenticate(form.key.trim()).await {
        Ok(Some(key)) => key,
        Ok(None) => {
            return (StatusCode::UNAUTHORIZED, view::login(&next, None, Some("Unknown or revoked API key.")))
                .into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, "console: key lookup failed");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                view::login(&next, None, Some("The database is unavailable; try again.")),
            )
                .into_response();
        }
    };
    if key.role < Role::Viewer {
        let why =
            format!("Key `{}` has the {} role, which pushes telemetry only; it cannot sign in.", key.name, key.role);
        return (StatusCode::FORBIDDEN, view::login(&next, None, Some(&why))).into_response();
    }
    let ttl = state.console.session_ttl;
    let (secret, _) = match access.open_session(&key, ttl).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "console: cannot open a session");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                view::login(&next, None, Some("The database is unavailable; try again.")),
            )
                .into_response();
        }
    };
    let entry = crate::access::AuditStart {
        actor: &key.name,
        key_id: Some(&key.id),
        action: "POST /console/login",
        target: "/console/login",
        request_id: headers.get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-"),
        detail: "console sign-in",
    };
    if let Err(e) = access.audit(&entry, StatusCode::SEE_OTHER.as_u16()).await {
        tracing::error!(error = %e, "could not audit a console sign-in");
    }
    let secure = state.console.secure_cookies || over_tls(&headers);
    let mut resp = Redirect::to(&next).into_response();
    resp.headers_mut().insert(header::SET_COOKIE, session_cookie(secret, ttl, secure));
    resp
}

async fn logout(State(state): State<ConsoleState>, headers: HeaderMap) -> Response {
    if let Some(secret) = session_secret(&headers) {
        if let Err(e) = state.app.security.access.close_session(&secret).await {
            tracing::warn!(error = %e, "console: cannot close a session");
        }
    }
    let secure = state.console.secure_cookies || over_tls(&headers);
    let mut resp = Redirect::to("/console/login").into_response();
    resp.headers_mut().insert(header::SET_COOKIE, session_cookie(String::new(), Duration::ZERO, secure));
    resp
}

// ---- assets -----------------------------------------------------------------

async fn asset(axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "console.css" => (include_str!("assets/console.css"), "text/css; charset=utf-8"),
        "console.js" => (include_str!("assets/console.js"), "text/javascript; charset=utf-8"),
        _ => return (StatusCode::NOT_FOUND, "no such asset").into_response(),
    };
    ([(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "public, max-age=300")], body).into_response()
}

// ---- pages ------------------------------------------------------------------

/// The feed's filters, as the form sends them.
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct FeedFilter {
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub service: Option<String>,
    #[serde(default)]
    pub severity: Option<String>,
}

impl FeedFilter {
    fn blank(v: &Option<String>) -> Option<&str> {
        v.as_deref().map(str::trim).filter(|s| !s.is_empty() && *s != "all")
    }
}

/// The newest incidents the feed looks at.
const FEED_RUNS: i64 = 500;

async fn feed(
    State(state): State<ConsoleState>,
    Extension(session): Extension<Session>,
    axum::extract::Query(filter): axum::extract::Query<FeedFilter>,
) -> Response {
    let runs = match state
        .app
        .engine
        .list(&RunFilter { graph: Some(workflow::GRAPH.into()), limit: Some(FEED_RUNS), ..Default::default() })
        .await
    {
        Ok(runs) => runs,
        Err(e) => return unavailable(e, &session),
    };
    let now = state.app.engine.clock().now();
    let rows: Vec<view::Row> = runs.iter().filter_map(|r| view::Row::of(r, now)).collect();
    let services: BTreeSet<String> = rows.iter().map(|r| r.service.clone()).collect();
    let status = FeedFilter::blank(&filter.status);
    let service = FeedFilter::blank(&filter.service);
    let severity = FeedFilter::blank(&filter.severity);
    let shown: Vec<view::Row> = rows
        .into_iter()
        .filter(|r| status.is_none_or(|s| r.phase.as_str() == s))
        .filter(|r| service.is_none_or(|s| r.service == s))
        .filter(|r| severity.is_none_or(|s| r.severity.as_deref() == Some(s)))
        .collect();
    view::feed(&session, &filter, &services, shown).into_response()
}

fn unavailable(e: engine::Error, session: &Session) -> Response {
    if matches!(e, engine::Error::RunNotFound(_)) {
        return view::error_page(StatusCode::NOT_FOUND, &e.to_string(), Some(session));
    }
    database_down(&e, session)
}

/// 503: the database did not answer (the detail goes to the log, not the page).
fn database_down(e: &dyn std::fmt::Display, session: &Session) -> Response {
    tracing::warn!(error = %e, "console: database unavailable");
    view::error_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "The database is unavailable; nothing was changed. Try again.",
        Some(session),
    )
}

fn parse_run(id: &str) -> Option<RunId> {
    RunId::from_str(id).ok()
}

fn no_such_incident(id: &str, session: &Session) -> Response {
    view::error_page(StatusCode::NOT_FOUND, &format!("`{id}` is not an incident id."), Some(session))
}

#[derive(Deserialize, Default)]
struct IncidentQuery {
    done: Option<String>,
}

async fn incident(
    State(state): State<ConsoleState>,
    Extension(session): Extension<Session>,
    axum::extract::Path(id): axum::extract::Path<String>,
    axum::extract::Query(q): axum::extract::Query<IncidentQuery>,
) -> Response {
    let Some(run) = parse_run(&id) else {
        return no_such_incident(&id, &session);
    };
    let detail = match state.app.engine.detail(run).await {
        Ok(d) => d,
        Err(e) => return unavailable(e, &session),
    };
    if detail.run.graph != workflow::GRAPH {
        return view::error_page(StatusCode::NOT_FOUND, &format!("run {run} is not an incident"), Some(&session));
    }
    let incident: workflow::Incident = serde_json::from_value(detail.run.state.clone()).unwrap_or_default();
    let shape = state.app.engine.registry().shape(&detail.run.graph, Some(detail.run.graph_version));
    let readings = match (&state.console.metrics, &incident.detection) {
        (Some(metrics), Some(d)) => {
            let (from, to) = view::chart_window(&incident, &detail.run, state.app.engine.clock().now());
            Some(metrics.window(&d.service, &d.metric, from, to).await.map_err(|e| e.to_string()))
        }
        _ => None,
    };
    let now = state.app.engine.clock().now();
    view::incident(&session, &detail, &incident, shape.as_ref(), readings, q.done.as_deref(), now).into_response()
}

#[derive(Deserialize)]
struct ConfirmQuery {
    kind: String,
    gate: String,
}

/// The confirmation before a decision: exactly the proposal the decision will
/// be bound to. Not live: what it shows is what the decision names.
async fn confirm(
    State(state): State<ConsoleState>,
    Extension(session): Extension<Session>,
    axum::extract::Path(id): axum::extract::Path<String>,
    axum::extract::Query(q): axum::extract::Query<ConfirmQuery>,
) -> Response {
    let Some(run) = parse_run(&id) else {
        return no_such_incident(&id, &session);
    };
    if q.kind != "approve" && q.kind != "reject" {
        return view::error_page(StatusCode::BAD_REQUEST, "A decision is `approve` or `reject`.", Some(&session));
    }
    let detail = match state.app.engine.detail(run).await {
        Ok(d) => d,
        Err(e) => return unavailable(e, &session),
    };
    let proposal = crate::server::Proposal::of(&detail.run);
    let nonce = uuid::Uuid::new_v4().to_string();
    view::confirm(&session, &detail.run, proposal.as_ref(), &q.kind, &q.gate, &nonce).into_response()
}

#[derive(Deserialize)]
struct DecisionForm {
    gate: String,
    #[serde(default)]
    reason: String,
    /// Set when the confirmation was rendered: a resubmitted form is the same request.
    #[serde(default)]
    nonce: Option<String>,
}

async fn approve(
    State(state): State<ConsoleState>,
    Extension(caller): Extension<Caller>,
    Extension(session): Extension<Session>,
    axum::extract::Path(id): axum::extract::Path<String>,
    Form(form): Form<DecisionForm>,
) -> Response {
    decide(&state, &caller, &session, &id, "approve", form).await
}

async fn reject(
    State(state): State<ConsoleState>,
    Extension(caller): Extension<Caller>,
    Extension(session): Extension<Session>,
    axum::extract::Path(id): axum::extract::Path<String>,
    Form(form): Form<DecisionForm>,
) -> Response {
    decide(&state, &caller, &session, &id, "reject", form).await
}

/// A decision from the console: the same gate rules as the API and Slack.
async fn decide(
    state: &ConsoleState,
    caller: &Caller,
    session: &Session,
    id: &str,
    kind: &str,
    form: DecisionForm,
) -> Response {
    let Some(run) = parse_run(id) else {
        return no_such_incident(id, session);
    };
    let engine = &state.app.engine;
    let detail = match engine.detail(run).await {
        Ok(d) => d,
        Err(e) => return unavailable(e, session),
    };
    let gate = form.gate.trim();
    let current = crate::server::Proposal::of(&detail.run).filter(|p| p.waiting);
    let decision = gate::Decision {
        run,
        gate,
        kind,
        by: &caller.name,
        request: form.nonce.as_deref().filter(|n| !n.is_empty()),
        via: "console",
        note: None,
        reason: form.reason.trim().to_owned(),
    };
    let not_waiting = || {
        match &current {
        Some(p) => format!(
            "This page named gate {gate}, but the incident now waits on gate {} ({} on {}): the proposal changed since the page was loaded. Nothing was applied.",
            p.gate, p.action, p.target
        ),
        None => format!(
            "The incident is not waiting for a decision on gate {gate} (it is {} at `{}`). Nothing was applied.",
            detail.run.status, detail.run.node
        ),
    }
    };
    match decision.submit(engine, &detail, not_waiting).await {
        Ok(gate::Answer::Accepted) | Ok(gate::Answer::Duplicate) => {
            Redirect::to(&format!("/console/incidents/{run}?done={kind}")).into_response()
        }
        Ok(gate::Answer::Refused(why)) => view::refused(session, run, &why),
        Err(e) => unavailable(e, session),
    }
}

#[derive(Deserialize)]
struct ReasonForm {
    #[serde(default)]
    reason: String,
}

async fn cancel(
    State(state): State<ConsoleState>,
    Extension(caller): Extension<Caller>,
    Extension(session): Extension<Session>,
    axum::extract::Path(id): axum::extract::Path<String>,
    Form(form): Form<ReasonForm>,
) -> Response {
    let Some(run) = parse_run(&id) else {
        return no_such_incident(&id, &session);
    };
    let reason = if form.reason.trim().is_empty() {
        format!("cancelled by {} in the console", caller.name)
    } else {
        format!("cancelled by {} in the console: {}", caller.name, form.reason.trim())
    };
    let signal = format!("console-cancel:{}", caller.name);
    match state.app.engine.cancel(run, &signal, &reason).await {
        Ok(_) => Redirect::to(&format!("/console/incidents/{run}?done=cancel")).into_response(),
        Err(e @ (engine::Error::RunFinished { .. } | engine::Error::WrongStatus { .. })) => {
            view::refused(&session, run, &e.to_string())
        }
        Err(e) => unavailable(e, &session),
    }
}

async fn retry(
    State(state): State<ConsoleState>,
    Extension(session): Extension<Session>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let Some(run) = parse_run(&id) else {
        return no_such_incident(&id, &session);
    };
    match state.app.engine.retry(run).await {
        Ok(()) => Redirect::to(&format!("/console/incidents/{run}?done=retry")).into_response(),
        Err(e @ (engine::Error::RunFinished { .. } | engine::Error::WrongStatus { .. })) => {
            view::refused(&session, run, &e.to_string())
        }
        Err(e) => unavailable(e, &session),
    }
}

/// Kill switch, breaker, dead letters.
async fn operations(State(state): State<ConsoleState>, Extension(session): Extension<Session>) -> Response {
    let engine = &state.app.engine;
    let now = engine.clock().now();
    let kill = match state.app.security.access.kill_switch().await {
        Ok(k) => k,
        Err(e) => return database_down(&e, &session),
    };
    let breaker = nodes::policy::ledger::breaker_state(engine, &state.console.policy, now).await;
    let mut dead = Vec::new();
    for status in ["dead", "undeliverable"] {
        match engine.store().outbox_list(Some(status), 200).await {
            Ok(list) => dead.extend(list),
            Err(e) => return unavailable(e, &session),
        }
    }
    view::operations(&session, &kill, breaker, &state.console.policy, &dead, now).into_response()
}

async fn requeue(
    State(state): State<ConsoleState>,
    Extension(session): Extension<Session>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return view::error_page(StatusCode::NOT_FOUND, "No such outbox message.", Some(&session));
    };
    let engine = &state.app.engine;
    match engine.store().outbox_requeue(id, engine.clock().now()).await {
        Ok(true) => Redirect::to("/console/operations?done=requeue").into_response(),
        Ok(false) => view::error_page(
            StatusCode::CONFLICT,
            &format!("Outbox message {id} is not dead-lettered (already requeued or delivered)."),
            Some(&session),
        ),
        Err(e) => unavailable(e, &session),
    }
}

#[derive(Deserialize)]
struct KillSwitchForm {
    enabled: String,
}

async fn kill_switch(
    State(state): State<ConsoleState>,
    Extension(caller): Extension<Caller>,
    Extension(session): Extension<Session>,
    Form(form): Form<KillSwitchForm>,
) -> Response {
    let enabled = match form.enabled.as_str() {
        "on" => true,
        "off" => false,
        _ => return view::error_page(StatusCode::BAD_REQUEST, "The kill switch is `on` or `off`.", Some(&session)),
    };
    match state.app.security.access.set_kill_switch(enabled, &caller.name).await {
        Ok(_) => Redirect::to("/console/operations?done=kill-switch").into_response(),
        Err(e) => database_down(&e, &session),
    }
}

// ---- live feed ----------------------------------------------------------------

/// Changes are gathered this long before one event goes out.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// Adds a changed run to an event; the nil id means changes may have been
/// missed (the change listener reconnected): look again at everything.
fn note(run: RunId, runs: &mut BTreeSet<String>, all: &mut bool) {
    if run == RunId::nil() {
        *all = true;
    } else {
        runs.insert(run.to_string());
    }
}

/// Server-sent events: `change` with the ids of the runs that changed (or
/// `"all": true` after a burst too large to list). Ends when the session
/// expires or the server stops.
async fn events(State(state): State<ConsoleState>, Extension(session): Extension<Session>) -> Response {
    let rx = state.app.engine.changes();
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        use tokio::sync::broadcast::error::RecvError;
        let mut runs = BTreeSet::new();
        let mut all = false;
        match rx.recv().await {
            Ok(run) => note(run, &mut runs, &mut all),
            Err(RecvError::Lagged(_)) => all = true,
            Err(RecvError::Closed) => return None,
        }
        let until = tokio::time::Instant::now() + DEBOUNCE;
        loop {
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Ok(run)) => note(run, &mut runs, &mut all),
                Ok(Err(RecvError::Lagged(_))) => all = true,
                Ok(Err(RecvError::Closed)) | Err(_) => break,
            }
        }
        let data = serde_json::json!({ "runs": runs, "all": all });
        Some((Ok::<_, Infallible>(Event::default().event("change").data(data.to_string())), rx))
    });
    let left = Duration::from_millis((session.expires_at - state.app.security.access.now().0).max(0) as u64);
    let stop = state.console.stop.clone();
    let ends = async move {
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(left) => {}
        }
    };
    let hello = futures::stream::once(async { Ok::<_, Infallible>(Event::default().event("ready").data("{}")) });
    let stream = hello.chain(stream).take_until(ends);
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}
