//! The REST API: workflow inspection and the decisions humans make. JSON in
//! and out; every refusal is a JSON body that says what was wrong.

use std::str::FromStr;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, State};
use axum::http::{header, StatusCode};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use engine::{Delivery, Engine, Error as EngineError, OutboxEntry, RunFilter, RunId, RunStatus};
use nodes::memory::{IncidentMemory, MemoryState, SIMILAR_PAST};
use nodes::workflow::{self, Incident};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::access::{ApiKey, AuditEntry, KillSwitch, NewKey, Role};
use crate::gate;
use crate::security::{self, Caller, Security};
use crate::slack::SlackState;

#[derive(Clone)]
pub struct AppState {
    pub engine: Engine,
    pub security: Security,
    /// Slack interactivity, when configured: `POST /slack/interactions`.
    pub slack: Option<SlackState>,
    /// The telemetry path behind `/v1/events` and `/v1/alertmanager` (503 without it).
    pub telemetry: Option<crate::ingest::Telemetry>,
    /// Semantic memory (`NoMemory` when it is off): similar incidents, and its health.
    pub memory: Arc<dyn IncidentMemory>,
}

/// Request bodies larger than this are refused with 413 before they are read.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// The API: every request gets an `x-request-id` (kept when the client sent
/// one, generated otherwise), echoed in the response and carried by the
/// request's tracing span, so every log line of a request names it.
pub fn router(state: AppState) -> Router {
    app(state, None)
}

/// The API, and the operator console under `/console` when given one.
pub fn app(state: AppState, console: Option<crate::console::Console>) -> Router {
    use axum::http::HeaderName;
    use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
    let request_id = HeaderName::from_static("x-request-id");
    let trace = tower_http::trace::TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
        let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-");
        tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
    });
    let (api, mut doc) = api_routes(state.clone()).split_for_parts();
    // After the routes are in: the shared error statuses go on each of them.
    utoipa::Modify::modify(&ErrorResponses, &mut doc);
    let mut doc = serde_json::to_value(&doc).expect("the OpenAPI document serializes");
    crate::ingest::document_bodies(&mut doc);
    let doc = Arc::new(doc);
    let slack = state.slack.clone().map(crate::slack::router).unwrap_or_default();
    let console = console.map(|c| crate::console::router(state.clone(), c)).unwrap_or_default();
    Router::new()
        .route("/health", get(health))
        .route("/health/detailed", get(crate::observe::health_detailed))
        .route("/metrics", get(crate::observe::metrics_endpoint))
        .route("/openapi.json", get(move || std::future::ready(axum::Json(doc.as_ref().clone()))))
        .with_state(state)
        .merge(api)
        .merge(slack)
        .merge(console)
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .layer(axum::middleware::from_fn(crate::observe::track))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(trace)
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Sentinel", description = "Durable incident-response workflows with human approval gates."),
    modifiers(&BearerAuth),
    security(("api_key" = [])),
    tags(
        (name = "runs", description = "Workflow runs: inspection and decisions"),
        (name = "incidents", description = "Incidents and their postmortems"),
        (name = "outbox", description = "Notifications to Slack and PagerDuty, and their dead letters"),
        (name = "admin", description = "API keys, the kill switch and the audit log"),
        (name = "telemetry", description = "Events and Alertmanager notifications in (ingest, operator or admin keys; not audited, not rate limited: the pipeline pushes back)"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let scheme =
            HttpBuilder::new().scheme(HttpAuthScheme::Bearer).description(Some("An API key (`snl_…`)")).build();
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("api_key", SecurityScheme::Http(scheme));
    }
}

/// Every status a route can answer besides its own, documented with the
/// error body: 401 without a valid key, 403 for a role that may not, 429 over
/// the key's rate (not on the telemetry routes, which push back with 503),
/// 503 when the database is away; and for a route with a body, 400 for a
/// malformed one, 413 for one too large, 415 for the wrong content type.
struct ErrorResponses;

impl utoipa::Modify for ErrorResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let error = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build(),
                )
                .build()
        };
        for (path, item) in openapi.paths.paths.iter_mut() {
            if !(path.starts_with("/v1/") || path.starts_with("/api/v1/")) {
                continue;
            }
            let telemetry = ["/v1/events", "/v1/alertmanager", "/api/v1/write"].contains(&path.as_str());
            let operations =
                [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch].into_iter().flatten();
            for op in operations {
                let mut add = vec![
                    ("400", "A parameter or the body is malformed"),
                    ("401", "No API key, or one that is unknown or revoked"),
                    ("403", "The key's role may not do this"),
                    ("503", "The database (or the telemetry pipeline) is unavailable; retry"),
                ];
                if !telemetry {
                    add.push(("429", "Over the key's rate limit; retry after `Retry-After`"));
                }
                if op.request_body.is_some() {
                    add.push(("413", "The body is too large"));
                    add.push(("415", "The body's content type is not the one documented"));
                    add.push(("422", "The body is JSON of the wrong shape"));
                }
                for (status, description) in add {
                    op.responses.responses.entry(status.to_owned()).or_insert_with(|| error(description).into());
                }
            }
        }
    }
}

/// The `/v1` routes in three groups by the role they need. Every route is
/// behind an API key; the operator and admin groups audit what they change.
fn api_routes(state: AppState) -> OpenApiRouter {
    let sec = state.security.clone();
    let viewer = OpenApiRouter::new()
        .routes(routes!(list_runs))
        .routes(routes!(get_run))
        .routes(routes!(mermaid))
        .routes(routes!(list_incidents))
        .routes(routes!(postmortem))
        .routes(routes!(similar_incidents))
        .routes(routes!(get_kill_switch))
        .routes(routes!(list_outbox))
        .route_layer(from_fn_with_state((sec.clone(), Role::Viewer), security::require));
    let operator = OpenApiRouter::new()
        .routes(routes!(approve))
        .routes(routes!(reject))
        .routes(routes!(cancel))
        .routes(routes!(retry))
        .routes(routes!(requeue_outbox))
        .route_layer(from_fn_with_state(sec.clone(), security::audit))
        .route_layer(from_fn_with_state((sec.clone(), Role::Operator), security::require));
    let admin = OpenApiRouter::new()
        .routes(routes!(list_keys, create_key))
        .routes(routes!(revoke_key))
        .routes(routes!(set_kill_switch))
        .routes(routes!(audit_log))
        .route_layer(from_fn_with_state(sec.clone(), security::audit))
        .route_layer(from_fn_with_state((sec.clone(), Role::Admin), security::require));
    // Telemetry comes in at thousands of requests a second: keys are checked
    // through a short-lived cache, and the pipeline's backpressure (503 with
    // Retry-After) stands in for the per-key rate limit.
    let ingest = OpenApiRouter::new()
        .routes(routes!(crate::ingest::post_events))
        .routes(routes!(crate::ingest::post_alertmanager))
        .routes(routes!(crate::ingest::post_remote_write))
        .layer(axum::extract::DefaultBodyLimit::max(crate::ingest::MAX_EVENTS_BODY))
        .route_layer(from_fn_with_state(sec.clone(), security::require_ingest))
        .layer(from_fn_with_state(sec.clone(), security::authenticate_cached));
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(viewer)
        .merge(operator)
        .merge(admin)
        .layer(from_fn_with_state(sec, security::authenticate))
        .merge(ingest)
        .with_state(state)
}

/// Every error the API answers with.
#[derive(Debug)]
pub enum ApiError {
    BadRequest(String),
    /// A body axum could not take: its status (400 syntax, 415 content type, 422 shape) and why.
    Body(StatusCode, String),
    NotFound(String),
    Conflict(String),
    Unavailable(String),
    Internal(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = match self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, "bad_request", m),
            ApiError::Body(status, m) => (status, "bad_body", m),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, "not_found", m),
            ApiError::Conflict(m) => (StatusCode::CONFLICT, "conflict", m),
            ApiError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", m),
            ApiError::Internal(m) => {
                // The detail goes to the log, inside the request's span; the client gets no internals.
                tracing::error!(error = %m, "internal error");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error".to_owned())
            }
        };
        (status, axum::Json(json!({ "error": { "code": code, "message": message } }))).into_response()
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::RunNotFound(_) => ApiError::NotFound(e.to_string()),
            EngineError::RunFinished { .. } | EngineError::WrongStatus { .. } => ApiError::Conflict(e.to_string()),
            EngineError::UnknownGraph { .. } => ApiError::NotFound(e.to_string()),
            e if e.is_transient() => {
                // The driver's text names hosts and SQL: it goes to the log, not to the client.
                tracing::warn!(error = %e, "database unavailable");
                ApiError::Unavailable("the database is unavailable; try again".into())
            }
            e => ApiError::Internal(e.to_string()),
        }
    }
}

/// `Query` whose rejections use our error format.
pub struct Query<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for Query<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Query(value)),
            Err(rejection) => Err(ApiError::BadRequest(rejection.body_text())),
        }
    }
}

/// `Path` whose rejections use our error format.
pub struct Path<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for Path<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(rejection) => Err(ApiError::BadRequest(rejection.body_text())),
        }
    }
}

/// `Json` whose rejections use our error format.
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    axum::Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Json(v)),
            Err(rejection) => Err(ApiError::Body(rejection.status(), rejection.body_text())),
        }
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        tracing::warn!(error = %e, "database unavailable");
        ApiError::Unavailable("the database is unavailable; try again".into())
    }
}

/// The error body every refusal carries.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// `bad_request`, `bad_body`, `unauthorized`, `forbidden`, `rate_limited`,
    /// `not_found`, `conflict`, `unavailable` or `internal`.
    pub code: String,
    pub message: String,
}

/// A list's `limit`: 1 to 1000, 100 when absent.
fn page_limit(limit: Option<i64>) -> Result<i64, ApiError> {
    let limit = limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::BadRequest("limit must be between 1 and 1000".into()));
    }
    Ok(limit)
}

fn run_id(s: &str) -> Result<RunId, ApiError> {
    RunId::from_str(s).map_err(|_| ApiError::BadRequest(format!("`{s}` is not a run id (a UUID)")))
}

async fn health(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    state.engine.store().ping().await.map_err(|e| {
        tracing::warn!(error = %e, "health: database unreachable");
        ApiError::Unavailable("the database is unreachable".into())
    })?;
    Ok(Json(json!({ "status": "ok" })))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// runnable, running, waiting, completed, failed or cancelled.
    #[param(pattern = "^(runnable|running|waiting|completed|failed|cancelled)$")]
    status: Option<String>,
    graph: Option<String>,
    /// 1 to 1000; 100 when absent.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

/// A run as the API shows it in lists.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct RunSummary {
    pub id: String,
    pub graph: String,
    pub graph_version: i32,
    pub status: String,
    pub node: String,
    pub step: i64,
    pub attempt: i32,
    pub waiting_for: Vec<String>,
    pub wake_at: Option<i64>,
    pub error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl From<&engine::Run> for RunSummary {
    fn from(r: &engine::Run) -> Self {
        RunSummary {
            id: r.id.to_string(),
            graph: r.graph.clone(),
            graph_version: r.graph_version,
            status: r.status.to_string(),
            node: r.node.clone(),
            step: r.step,
            attempt: r.attempt,
            waiting_for: r.wait_signals.clone(),
            wake_at: r.wake_at.map(|t| t.0),
            error: r.error.clone(),
            created_at: r.created_at.0,
            updated_at: r.updated_at.0,
        }
    }
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct RunList {
    pub runs: Vec<RunSummary>,
}

/// List runs, newest first.
#[utoipa::path(get, path = "/v1/runs", tag = "runs", params(ListQuery),
    responses((status = 200, body = RunList), (status = 400, body = ErrorBody)))]
async fn list_runs(State(state): State<AppState>, Query(q): Query<ListQuery>) -> Result<Json<RunList>, ApiError> {
    let status = q.status.as_deref().map(RunStatus::from_str).transpose().map_err(ApiError::BadRequest)?;
    let limit = page_limit(q.limit)?;
    let runs = state.engine.list(&RunFilter { status, graph: q.graph, limit: Some(limit) }).await?;
    Ok(Json(RunList { runs: runs.iter().map(RunSummary::from).collect() }))
}

/// One checkpoint of a run's history.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct HistoryEntry {
    pub step: i64,
    pub node: String,
    pub attempt: i32,
    #[schema(value_type = Object)]
    pub outcome: Value,
    #[schema(value_type = Object)]
    pub state_before: Value,
    #[schema(value_type = Object)]
    pub state_after: Value,
    pub worker: String,
    pub started_at: i64,
    pub finished_at: i64,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct SignalEntry {
    pub id: String,
    pub kind: String,
    #[schema(value_type = Object)]
    pub payload: Value,
    pub received_at: i64,
    pub consumed_step: Option<i64>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct EffectEntry {
    pub key: String,
    pub step: i64,
    pub intent_at: i64,
    #[schema(value_type = Option<Object>)]
    pub outcome: Option<Value>,
    pub completed_at: Option<i64>,
}

/// What a human is asked to decide: shown wherever they can decide it.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Proposal {
    /// Name this in `POST /v1/runs/{id}/approve|reject`.
    pub gate: String,
    /// True while the run waits on this gate.
    pub waiting: bool,
    pub service: String,
    pub severity: Option<String>,
    pub top_hypothesis: Option<String>,
    pub executor: String,
    pub action: String,
    pub target: String,
    #[schema(value_type = Object)]
    pub params: Value,
    pub estimated_downtime_secs: u64,
    pub blast_radius: String,
    pub rollback: String,
    /// When the run escalates if nobody decides (epoch ms).
    pub deadline: Option<i64>,
    /// Who decided this gate, once someone has.
    pub decided: Option<String>,
}

impl Proposal {
    /// The current proposal of an incident run, if it has reached one.
    pub fn of(run: &engine::Run) -> Option<Proposal> {
        if run.graph != workflow::GRAPH {
            return None;
        }
        let s: Incident = serde_json::from_value(run.state.clone()).ok()?;
        let gate = s.gate.clone()?;
        let planned = s.plan.get(s.current)?;
        let waiting = run.status == RunStatus::Waiting && run.node == "await_approval";
        let decided = s.decisions.iter().rev().find(|d| d.gate.as_deref() == Some(gate.as_str())).map(|d| {
            format!(
                "{} by {} at {}",
                if d.approved { "approved" } else { "rejected" },
                d.by,
                crate::gate::rfc3339(d.at.0)
            )
        });
        let text = |v: Value| v.as_str().map(str::to_owned).unwrap_or_default();
        Some(Proposal {
            gate,
            waiting,
            service: s.detection.as_ref().map(|d| d.service.clone()).unwrap_or_default(),
            severity: s.severity.and_then(|v| serde_json::to_value(v).ok()).map(text),
            top_hypothesis: s
                .analysis
                .hypotheses
                .first()
                .map(|h| format!("{} ({:.0}%)", h.summary, h.confidence * 100.0)),
            executor: planned.action.executor.clone(),
            action: planned.action.action.clone(),
            target: planned.action.target.clone(),
            params: serde_json::to_value(&planned.action.params).unwrap_or_default(),
            estimated_downtime_secs: planned.estimated_downtime.as_secs(),
            blast_radius: text(serde_json::to_value(planned.blast_radius).unwrap_or_default()),
            rollback: planned.rollback.clone(),
            deadline: if waiting { s.approval_deadline.map(|t| t.0) } else { None },
            decided,
        })
    }
}

/// A run with its state, history, signals and side effects.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct RunDetailBody {
    pub run: RunSummary,
    /// For an incident: the action proposed at its current gate.
    pub proposal: Option<Proposal>,
    #[schema(value_type = Object)]
    pub state: Value,
    pub history: Vec<HistoryEntry>,
    pub signals: Vec<SignalEntry>,
    pub effects: Vec<EffectEntry>,
}

/// One run: state, checkpoint history, signals and side-effect records.
#[utoipa::path(get, path = "/v1/runs/{id}", tag = "runs", params(("id" = uuid::Uuid, Path, description = "Run id")),
    responses((status = 200, body = RunDetailBody), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_run(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<RunDetailBody>, ApiError> {
    let detail = state.engine.detail(run_id(&id)?).await?;
    let history = detail
        .history
        .iter()
        .map(|c| HistoryEntry {
            step: c.step,
            node: c.node.clone(),
            attempt: c.attempt,
            outcome: serde_json::to_value(&c.outcome).unwrap_or(Value::Null),
            state_before: c.state_before.clone(),
            state_after: c.state_after.clone(),
            worker: c.worker.clone(),
            started_at: c.started_at.0,
            finished_at: c.finished_at.0,
        })
        .collect();
    let signals = detail
        .signals
        .iter()
        .map(|s| SignalEntry {
            id: s.id.clone(),
            kind: s.kind.clone(),
            payload: s.payload.clone(),
            received_at: s.received_at.0,
            consumed_step: s.consumed_step,
        })
        .collect();
    let effects = detail
        .effects
        .iter()
        .map(|e| EffectEntry {
            key: e.key.clone(),
            step: e.step,
            intent_at: e.intent_at.0,
            outcome: e.outcome.clone(),
            completed_at: e.completed_at.map(|t| t.0),
        })
        .collect();
    let proposal = Proposal::of(&detail.run);
    Ok(Json(RunDetailBody {
        run: RunSummary::from(&detail.run),
        proposal,
        state: detail.run.state,
        history,
        signals,
        effects,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    /// The gate decided (`GET /v1/runs/{id}` shows it as `proposal.gate`):
    /// a decision applies to exactly the proposal it names, or to nothing.
    /// (Read as optional only so that its absence gets a 400 naming the gate
    /// the run waits on.)
    #[serde(default)]
    #[schema(required = true, value_type = String, pattern = r"\S")]
    pub gate: Option<String>,
    /// Who the key acts for, kept as a note. The decision is recorded as made
    /// by the authenticated key, whatever this says. Not blank.
    #[serde(default)]
    #[schema(pattern = r"\S")]
    pub actor: Option<String>,
    #[serde(default)]
    pub reason: String,
    /// Lets a retried request be recognised as the same one.
    pub request_id: Option<String>,
}

/// What a decision or cancellation did.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct SignalAccepted {
    pub run: String,
    pub signal: String,
    /// `accepted`, or `duplicate` when this request id was seen before.
    #[schema(value_type = String)]
    pub delivery: Delivery,
}

/// Cancelling a run: no gate, it stops the run whatever it waits on.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelBody {
    /// Who the key acts for, kept as a note. Not blank.
    #[serde(default)]
    #[schema(pattern = r"\S")]
    pub actor: Option<String>,
    #[serde(default)]
    pub reason: String,
    /// Lets a retried request be recognised as the same one.
    pub request_id: Option<String>,
}

fn note(actor: Option<&str>) -> Result<Option<String>, ApiError> {
    match actor.map(str::trim) {
        None => Ok(None),
        Some("") => Err(ApiError::BadRequest("actor must not be empty".into())),
        Some(a) => Ok(Some(a.to_owned())),
    }
}

async fn decide(
    state: &AppState,
    caller: &Caller,
    id: &str,
    kind: &str,
    body: DecisionBody,
) -> Result<(StatusCode, Json<SignalAccepted>), ApiError> {
    let id = run_id(id)?;
    let note = note(body.actor.as_deref())?;
    let detail = state.engine.detail(id).await?;
    let run = &detail.run;
    let current = Proposal::of(run).filter(|p| p.waiting && run.wait_signals.iter().any(|s| s == kind));
    let Some(gate) = body.gate.as_deref().map(str::trim).filter(|g| !g.is_empty()) else {
        return Err(ApiError::BadRequest(match &current {
            Some(p) => format!("`gate` is required: this run waits on gate {} ({} on {})", p.gate, p.action, p.target),
            None => "`gate` is required: name the proposal you decide on".to_owned(),
        }));
    };
    let decision = gate::Decision {
        run: id,
        gate,
        kind,
        by: &caller.name,
        request: body.request_id.as_deref(),
        via: "api",
        note,
        reason: body.reason.clone(),
    };
    let not_waiting = || match &current {
        Some(p) => {
            format!("gate {gate} is not the proposal this run waits on (gate {}: {} on {})", p.gate, p.action, p.target)
        }
        None => {
            format!("run {id} is not waiting for a decision on gate {gate} (it is {} at `{}`)", run.status, run.node)
        }
    };
    let (status, delivery) = match decision.submit(&state.engine, &detail, not_waiting).await? {
        gate::Answer::Accepted => (StatusCode::ACCEPTED, Delivery::Accepted),
        gate::Answer::Duplicate => (StatusCode::OK, Delivery::Duplicate),
        gate::Answer::Refused(why) => return Err(ApiError::Conflict(why)),
    };
    Ok((status, Json(SignalAccepted { run: id.to_string(), signal: gate::signal_id(gate), delivery })))
}

/// Approve the action a run waits on (operator).
#[utoipa::path(post, path = "/v1/runs/{id}/approve", tag = "runs", request_body = DecisionBody,
    params(("id" = uuid::Uuid, Path, description = "Run id")),
    responses((status = 202, body = SignalAccepted), (status = 200, description = "The same decision again", body = SignalAccepted),
        (status = 400, description = "No gate named", body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "The gate was decided by someone else, or is not the one the run waits on", body = ErrorBody)))]
async fn approve(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Json(body): Json<DecisionBody>,
) -> Result<(StatusCode, Json<SignalAccepted>), ApiError> {
    decide(&state, &caller, &id, "approve", body).await
}

/// Reject the action a run waits on (operator).
#[utoipa::path(post, path = "/v1/runs/{id}/reject", tag = "runs", request_body = DecisionBody,
    params(("id" = uuid::Uuid, Path, description = "Run id")),
    responses((status = 202, body = SignalAccepted), (status = 200, description = "The same decision again", body = SignalAccepted),
        (status = 400, description = "No gate named", body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "The gate was decided by someone else, or is not the one the run waits on", body = ErrorBody)))]
async fn reject(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Json(body): Json<DecisionBody>,
) -> Result<(StatusCode, Json<SignalAccepted>), ApiError> {
    decide(&state, &caller, &id, "reject", body).await
}

/// Cancel a run (operator): it stops at its next step.
#[utoipa::path(post, path = "/v1/runs/{id}/cancel", tag = "runs", request_body = CancelBody,
    params(("id" = uuid::Uuid, Path, description = "Run id")),
    responses((status = 202, body = SignalAccepted), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn cancel(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Json(body): Json<CancelBody>,
) -> Result<(StatusCode, Json<SignalAccepted>), ApiError> {
    let id = run_id(&id)?;
    note(body.actor.as_deref())?;
    let signal = body.request_id.unwrap_or_else(|| format!("api-cancel:{}", caller.name));
    let delivery = state.engine.cancel(id, &signal, &body.reason).await?;
    Ok((StatusCode::ACCEPTED, Json(SignalAccepted { run: id.to_string(), signal, delivery })))
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct RetryAccepted {
    pub run: String,
    pub status: String,
}

/// Retry a failed run from the step that failed (operator).
#[utoipa::path(post, path = "/v1/runs/{id}/retry", tag = "runs", params(("id" = uuid::Uuid, Path, description = "Run id")),
    responses((status = 202, body = RetryAccepted), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn retry(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<RetryAccepted>), ApiError> {
    let id = run_id(&id)?;
    state.engine.retry(id).await?;
    Ok((StatusCode::ACCEPTED, Json(RetryAccepted { run: id.to_string(), status: "runnable".into() })))
}

/// A registered graph as a Mermaid flowchart.
#[utoipa::path(get, path = "/v1/graphs/{name}/mermaid", tag = "runs", params(("name" = String, Path)),
    responses((status = 200, content_type = "text/plain", body = String), (status = 404, body = ErrorBody)))]
async fn mermaid(State(state): State<AppState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    let text = state
        .engine
        .registry()
        .mermaid(&name, None)
        .ok_or_else(|| ApiError::NotFound(format!("graph `{name}` is not registered")))?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

/// An incident as listed.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct IncidentSummary {
    pub run: String,
    pub status: String,
    pub node: String,
    pub service: Option<String>,
    pub anomaly_type: Option<String>,
    pub fingerprint: Option<String>,
    #[schema(value_type = Option<String>)]
    pub severity: Option<Value>,
    pub outcome: Option<String>,
    pub mttr_secs: Option<f64>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct IncidentList {
    pub incidents: Vec<IncidentSummary>,
}

/// The 200 newest incidents.
#[utoipa::path(get, path = "/v1/incidents", tag = "incidents", responses((status = 200, body = IncidentList)))]
async fn list_incidents(State(state): State<AppState>) -> Result<Json<IncidentList>, ApiError> {
    let runs = state
        .engine
        .list(&RunFilter { graph: Some(workflow::GRAPH.into()), limit: Some(200), ..Default::default() })
        .await?;
    let incidents = runs
        .iter()
        .map(|r| {
            let s: Option<Incident> = serde_json::from_value(r.state.clone()).ok();
            let detection = s.as_ref().and_then(|s| s.detection.as_ref());
            IncidentSummary {
                run: r.id.to_string(),
                status: r.status.to_string(),
                node: r.node.clone(),
                service: detection.map(|d| d.service.clone()),
                anomaly_type: detection.map(|d| d.anomaly_type.clone()),
                fingerprint: s.as_ref().map(|s| s.fingerprint.clone()),
                severity: s.as_ref().and_then(|s| s.severity).and_then(|v| serde_json::to_value(v).ok()),
                outcome: s.as_ref().and_then(|s| s.outcome.clone()),
                mttr_secs: s.as_ref().and_then(|s| s.mttr_secs),
            }
        })
        .collect();
    Ok(Json(IncidentList { incidents }))
}

/// An incident's blameless postmortem, in Markdown.
#[utoipa::path(get, path = "/v1/incidents/{id}/postmortem", tag = "incidents", params(("id" = uuid::Uuid, Path, description = "Run id")),
    responses((status = 200, content_type = "text/markdown", body = String), (status = 404, body = ErrorBody)))]
async fn postmortem(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let run = state.engine.run(run_id(&id)?).await?;
    let incident: Incident =
        serde_json::from_value(run.state).map_err(|_| ApiError::NotFound(format!("run {id} is not an incident")))?;
    let text = incident
        .postmortem
        .ok_or_else(|| ApiError::NotFound(format!("incident {id} has no postmortem yet (it is {})", run.status)))?;
    Ok(([(header::CONTENT_TYPE, "text/markdown; charset=utf-8")], text).into_response())
}

/// A past incident found similar, as listed.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct SimilarIncident {
    pub incident: String,
    /// Cosine similarity of the two incidents' texts, in [-1, 1].
    pub similarity: f64,
    pub service: String,
    pub symptom: String,
    /// The metric, or the alert's name.
    pub signal: String,
    /// `resolved`, `escalated` or `closed`.
    pub status: String,
    /// The top hypothesis it ended with.
    pub cause: Option<String>,
    /// The last action taken: `action on target`.
    pub action: Option<String>,
    pub outcome: Option<String>,
    pub mttr_secs: Option<f64>,
    /// Milliseconds since the epoch.
    pub opened_at: i64,
    pub resolved_at: Option<i64>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct SimilarList {
    pub incident: String,
    /// `on`, or `off: <why>` (no model directory): then `similar` is empty
    /// because nothing is remembered, not because nothing is alike.
    pub memory: String,
    /// Most similar first: the same service's, then other services'.
    pub similar: Vec<SimilarIncident>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SimilarParams {
    /// How many (1 to 50; default 5).
    #[param(minimum = 1, maximum = 50)]
    pub limit: Option<usize>,
}

/// Past incidents like this one (semantic memory): ended ones on the same
/// service first, then elsewhere, each with what was done and how it went.
/// With memory off the list is empty and `memory` says why; 503 when its
/// index cannot be reached.
#[utoipa::path(get, path = "/v1/incidents/{id}/similar", tag = "incidents",
    params(("id" = uuid::Uuid, Path, description = "Run id"), SimilarParams),
    responses((status = 200, body = SimilarList), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
async fn similar_incidents(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(params): Query<SimilarParams>,
) -> Result<Json<SimilarList>, ApiError> {
    let limit = params.limit.unwrap_or(SIMILAR_PAST);
    if !(1..=50).contains(&limit) {
        return Err(ApiError::BadRequest(format!("limit {limit} is not from 1 to 50")));
    }
    let run_id = run_id(&id)?;
    let run = state.engine.run(run_id).await?;
    if let MemoryState::Off { reason } = state.memory.state() {
        return Ok(Json(SimilarList { incident: id, memory: format!("off: {reason}"), similar: Vec::new() }));
    }
    let incident: Incident =
        serde_json::from_value(run.state).map_err(|_| ApiError::NotFound(format!("run {id} is not an incident")))?;
    let record = workflow::memory_record(&incident, run_id, nodes::memory::Status::Open, state.engine.clock().now())
        .ok_or_else(|| ApiError::NotFound(format!("incident {id} has no detection")))?;
    let found = nodes::memory::similar_past(&*state.memory, &record, limit).await.map_err(|e| match e {
        nodes::ports::PortError::Unavailable(m) => ApiError::Unavailable(format!("semantic memory: {m}")),
        nodes::ports::PortError::Refused(m) => ApiError::Internal(format!("semantic memory: {m}")),
    })?;
    let similar = found
        .into_iter()
        .map(|n| {
            let r = n.incident;
            SimilarIncident {
                incident: r.incident,
                similarity: n.similarity,
                service: r.service,
                symptom: r.symptom,
                signal: r.signal,
                status: r.status.as_str().to_owned(),
                cause: r.cause,
                action: r.remedy.map(|m| format!("{} on {}", m.action, m.target)),
                outcome: r.outcome,
                mttr_secs: r.mttr_secs,
                opened_at: r.opened_at,
                resolved_at: r.resolved_at,
            }
        })
        .collect();
    Ok(Json(SimilarList { incident: id, memory: "on".into(), similar }))
}

// ---- admin ------------------------------------------------------------------

#[derive(Serialize, Deserialize, ToSchema)]
pub struct KeyList {
    pub keys: Vec<ApiKey>,
}

/// Every API key, revoked ones included; never their secrets (admin).
#[utoipa::path(get, path = "/v1/keys", tag = "admin", responses((status = 200, body = KeyList), (status = 403, body = ErrorBody)))]
async fn list_keys(State(state): State<AppState>) -> Result<Json<KeyList>, ApiError> {
    Ok(Json(KeyList { keys: state.security.access.list_keys().await? }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// 1 to 100 characters, not all blank.
    #[schema(min_length = 1, max_length = 100, pattern = r"\S")]
    pub name: String,
    pub role: Role,
}

/// Create an API key (admin). The secret is in this answer and nowhere else.
#[utoipa::path(post, path = "/v1/keys", tag = "admin", request_body = CreateKey,
    responses((status = 201, body = NewKey), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn create_key(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(body): Json<CreateKey>,
) -> Result<(StatusCode, Json<NewKey>), ApiError> {
    let name = body.name.trim();
    if name.is_empty() || name.len() > 100 {
        return Err(ApiError::BadRequest("name must be 1 to 100 characters".into()));
    }
    let key = state.security.access.create_key(name, body.role, &caller.name).await?;
    Ok((StatusCode::CREATED, Json(key)))
}

/// Revoke an API key (admin); it stops working at once.
#[utoipa::path(delete, path = "/v1/keys/{id}", tag = "admin", params(("id" = String, Path, description = "Key id (key_…)")),
    responses((status = 200, body = ApiKey), (status = 404, body = ErrorBody)))]
async fn revoke_key(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<ApiKey>, ApiError> {
    let access = &state.security.access;
    if !access.revoke_key(&id).await? {
        return Err(ApiError::NotFound(format!("no active API key `{id}`")));
    }
    state.security.forget_cached_keys();
    let key = access.list_keys().await?.into_iter().find(|k| k.id == id);
    key.map(Json).ok_or_else(|| ApiError::NotFound(format!("no API key `{id}`")))
}

/// The kill switch: when on, no action is auto-approved.
#[utoipa::path(get, path = "/v1/killswitch", tag = "admin", responses((status = 200, body = KillSwitch)))]
async fn get_kill_switch(State(state): State<AppState>) -> Result<Json<KillSwitch>, ApiError> {
    Ok(Json(state.security.access.kill_switch().await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetKillSwitch {
    pub enabled: bool,
}

/// Turn the kill switch on or off (admin).
#[utoipa::path(put, path = "/v1/killswitch", tag = "admin", request_body = SetKillSwitch,
    responses((status = 200, body = KillSwitch), (status = 403, body = ErrorBody)))]
async fn set_kill_switch(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(body): Json<SetKillSwitch>,
) -> Result<Json<KillSwitch>, ApiError> {
    let switch = state.security.access.set_kill_switch(body.enabled, &caller.name).await?;
    tracing::warn!(enabled = body.enabled, by = %caller.name, "kill switch set");
    Ok(Json(switch))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct AuditQuery {
    /// 1 to 1000; 100 when absent.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct AuditList {
    pub entries: Vec<AuditEntry>,
}

/// The audit log, newest first (admin).
#[utoipa::path(get, path = "/v1/audit", tag = "admin", params(AuditQuery),
    responses((status = 200, body = AuditList), (status = 403, body = ErrorBody)))]
async fn audit_log(State(state): State<AppState>, Query(q): Query<AuditQuery>) -> Result<Json<AuditList>, ApiError> {
    let limit = page_limit(q.limit)?;
    Ok(Json(AuditList { entries: state.security.access.audit_log(limit).await? }))
}

// ---- outbox -------------------------------------------------------------------

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct OutboxQuery {
    /// pending, delivered, dead or undeliverable.
    #[param(pattern = "^(pending|delivered|dead|undeliverable)$")]
    status: Option<String>,
    /// 1 to 1000; 100 when absent.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct OutboxList {
    #[schema(value_type = Vec<Object>)]
    pub messages: Vec<OutboxEntry>,
}

/// Outbox messages, newest first: `?status=dead` lists the dead letters.
#[utoipa::path(get, path = "/v1/outbox", tag = "outbox", params(OutboxQuery),
    responses((status = 200, body = OutboxList), (status = 400, body = ErrorBody)))]
async fn list_outbox(
    State(state): State<AppState>,
    Query(q): Query<OutboxQuery>,
) -> Result<Json<OutboxList>, ApiError> {
    if let Some(s) = q.status.as_deref() {
        if !["pending", "delivered", "dead", "undeliverable"].contains(&s) {
            return Err(ApiError::BadRequest(format!(
                "unknown outbox status `{s}` (pending, delivered, dead or undeliverable)"
            )));
        }
    }
    let limit = page_limit(q.limit)?;
    Ok(Json(OutboxList { messages: state.engine.store().outbox_list(q.status.as_deref(), limit).await? }))
}

/// Send a dead or undeliverable message again (operator): back to pending with fresh attempts.
#[utoipa::path(post, path = "/v1/outbox/{id}/requeue", tag = "outbox", params(("id" = i64, Path)),
    responses((status = 202, body = Object), (status = 404, body = ErrorBody)))]
async fn requeue_outbox(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id: i64 = id.parse().map_err(|_| ApiError::BadRequest(format!("`{id}` is not an outbox message id")))?;
    if !state.engine.store().outbox_requeue(id, state.engine.clock().now()).await? {
        return Err(ApiError::NotFound(format!("no dead or undeliverable outbox message {id}")));
    }
    Ok((StatusCode::ACCEPTED, Json(json!({ "id": id, "status": "pending" }))))
}
