//! The REST API: workflow inspection and the decisions humans make. JSON in
//! and out; every refusal is a JSON body that says what was wrong.

use std::str::FromStr;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use engine::{Delivery, Engine, Error as EngineError, RunFilter, RunId, RunStatus};
use nodes::workflow::{self, Incident};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[derive(Clone)]
pub struct AppState {
    pub engine: Engine,
}

/// Request bodies larger than this are refused with 413 before they are read.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// The API: every request gets an `x-request-id` (kept when the client sent
/// one, generated otherwise), echoed in the response and carried by the
/// request's tracing span, so every log line of a request names it.
pub fn router(state: AppState) -> Router {
    use axum::http::HeaderName;
    use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
    let request_id = HeaderName::from_static("x-request-id");
    let trace = tower_http::trace::TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
        let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-");
        tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
    });
    routes(state)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(trace)
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
}

fn routes(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/v1/runs", get(list_runs))
        .route("/v1/runs/{id}", get(get_run))
        .route("/v1/runs/{id}/approve", post(approve))
        .route("/v1/runs/{id}/reject", post(reject))
        .route("/v1/runs/{id}/cancel", post(cancel))
        .route("/v1/runs/{id}/retry", post(retry))
        .route("/v1/graphs/{name}/mermaid", get(mermaid))
        .route("/v1/incidents", get(list_incidents))
        .route("/v1/incidents/{id}/postmortem", get(postmortem))
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
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
            e if e.is_transient() => ApiError::Unavailable(format!("the database is unavailable: {e}")),
            e => ApiError::Internal(e.to_string()),
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

fn run_id(s: &str) -> Result<RunId, ApiError> {
    RunId::from_str(s).map_err(|_| ApiError::BadRequest(format!("`{s}` is not a run id (a UUID)")))
}

async fn health(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    state.engine.store().ping().await.map_err(|e| ApiError::Unavailable(format!("database: {e}")))?;
    Ok(Json(json!({ "status": "ok" })))
}

#[derive(Deserialize)]
struct ListQuery {
    status: Option<String>,
    graph: Option<String>,
    limit: Option<i64>,
}

/// A run as the API shows it in lists.
#[derive(Serialize)]
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

async fn list_runs(State(state): State<AppState>, Query(q): Query<ListQuery>) -> Result<Json<Value>, ApiError> {
    let status = q.status.as_deref().map(RunStatus::from_str).transpose().map_err(ApiError::BadRequest)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::BadRequest("limit must be between 1 and 1000".into()));
    }
    let runs = state.engine.list(&RunFilter { status, graph: q.graph, limit: Some(limit) }).await?;
    Ok(Json(json!({ "runs": runs.iter().map(RunSummary::from).collect::<Vec<_>>() })))
}

async fn get_run(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let detail = state.engine.detail(run_id(&id)?).await?;
    let history: Vec<Value> = detail
        .history
        .iter()
        .map(|c| {
            json!({
                "step": c.step, "node": c.node, "attempt": c.attempt, "outcome": c.outcome,
                "state_before": c.state_before, "state_after": c.state_after, "worker": c.worker,
                "started_at": c.started_at.0, "finished_at": c.finished_at.0,
            })
        })
        .collect();
    let signals: Vec<Value> = detail
        .signals
        .iter()
        .map(|s| json!({ "id": s.id, "kind": s.kind, "payload": s.payload, "received_at": s.received_at.0, "consumed_step": s.consumed_step }))
        .collect();
    let effects: Vec<Value> = detail
        .effects
        .iter()
        .map(|e| json!({ "key": e.key, "step": e.step, "intent_at": e.intent_at.0, "outcome": e.outcome, "completed_at": e.completed_at.map(|t| t.0) }))
        .collect();
    Ok(Json(json!({
        "run": RunSummary::from(&detail.run),
        "state": detail.run.state,
        "history": history,
        "signals": signals,
        "effects": effects,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    /// Who decides (a person's id).
    pub actor: String,
    #[serde(default)]
    pub reason: String,
    /// Deduplicates retried requests; defaults to one decision per actor and run.
    pub request_id: Option<String>,
}

async fn decide(
    state: &AppState,
    id: &str,
    kind: &str,
    body: DecisionBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id = run_id(id)?;
    if body.actor.trim().is_empty() {
        return Err(ApiError::BadRequest("actor must not be empty".into()));
    }
    let run = state.engine.run(id).await?;
    if run.status != RunStatus::Waiting || !run.wait_signals.iter().any(|s| s == kind) {
        return Err(ApiError::Conflict(format!(
            "run {id} is not waiting for a decision (it is {} at `{}`)",
            run.status, run.node
        )));
    }
    let signal_id = body.request_id.unwrap_or_else(|| format!("api:{}:{}", body.actor, run.step));
    let delivery = state
        .engine
        .signal(id, &signal_id, kind, json!({ "actor": body.actor, "reason": body.reason, "via": "api" }))
        .await?;
    let status = match delivery {
        Delivery::Accepted => StatusCode::ACCEPTED,
        Delivery::Duplicate => StatusCode::OK,
    };
    Ok((status, Json(json!({ "run": id.to_string(), "signal": signal_id, "delivery": delivery }))))
}

async fn approve(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(body): Json<DecisionBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    decide(&state, &id, "approve", body).await
}

async fn reject(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(body): Json<DecisionBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    decide(&state, &id, "reject", body).await
}

async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(body): Json<DecisionBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id = run_id(&id)?;
    let signal_id = body.request_id.unwrap_or_else(|| format!("api-cancel:{}", body.actor));
    let delivery = state.engine.cancel(id, &signal_id, &body.reason).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "run": id.to_string(), "delivery": delivery }))))
}

async fn retry(State(state): State<AppState>, Path(id): Path<String>) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id = run_id(&id)?;
    state.engine.retry(id).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "run": id.to_string(), "status": "runnable" }))))
}

async fn mermaid(State(state): State<AppState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    let text = state
        .engine
        .registry()
        .mermaid(&name, None)
        .ok_or_else(|| ApiError::NotFound(format!("graph `{name}` is not registered")))?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

async fn list_incidents(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let runs = state
        .engine
        .list(&RunFilter { graph: Some(workflow::GRAPH.into()), limit: Some(200), ..Default::default() })
        .await?;
    let incidents: Vec<Value> = runs
        .iter()
        .map(|r| {
            let s: Option<Incident> = serde_json::from_value(r.state.clone()).ok();
            json!({
                "run": r.id.to_string(),
                "status": r.status.to_string(),
                "node": r.node,
                "service": s.as_ref().and_then(|s| s.detection.as_ref().map(|d| d.service.clone())),
                "anomaly_type": s.as_ref().and_then(|s| s.detection.as_ref().map(|d| d.anomaly_type.clone())),
                "fingerprint": s.as_ref().map(|s| s.fingerprint.clone()),
                "severity": s.as_ref().and_then(|s| s.severity),
                "outcome": s.as_ref().and_then(|s| s.outcome.clone()),
                "mttr_secs": s.as_ref().and_then(|s| s.mttr_secs),
            })
        })
        .collect();
    Ok(Json(json!({ "incidents": incidents })))
}

async fn postmortem(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let run = state.engine.run(run_id(&id)?).await?;
    let incident: Incident =
        serde_json::from_value(run.state).map_err(|_| ApiError::NotFound(format!("run {id} is not an incident")))?;
    let text = incident
        .postmortem
        .ok_or_else(|| ApiError::NotFound(format!("incident {id} has no postmortem yet (it is {})", run.status)))?;
    Ok(([(header::CONTENT_TYPE, "text/markdown; charset=utf-8")], text).into_response())
}
