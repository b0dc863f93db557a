//! Slack interactivity: `POST /slack/interactions`, where the Approve and
//! Reject buttons of an incident message land.
//!
//! Every request is verified exactly as Slack specifies: `X-Slack-Signature`
//! is `v0=` + hex HMAC-SHA256 of `v0:{X-Slack-Request-Timestamp}:{raw body}`
//! under the signing secret, compared in constant time, and requests whose
//! timestamp is more than five minutes away are refused (replays). Only then
//! is the form-encoded `payload` parsed. A button's value names the run and
//! the gate it was posted for (`RUN/GATE`); a click becomes the gate's one
//! decision signal, so Slack's retries are one decision, a second person's
//! click is told who decided first, and a click on a replaced proposal is
//! refused and recorded, never applied.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use engine::{Engine, RunId};
use hmac::{Hmac, Mac};
use nodes::workflow::Incident;
use serde::Deserialize;
use serde_json::json;
use sha2::Sha256;

use crate::access::{Access, AuditStart};
use crate::gate;

/// The action ids of the buttons Sentinel posts; their value is `RUN/GATE`.
pub const APPROVE_ACTION: &str = "sentinel_approve";
pub const REJECT_ACTION: &str = "sentinel_reject";
/// Requests whose timestamp is further than this from now are refused.
const MAX_SKEW_SECS: i64 = 5 * 60;

/// Who may decide. A Slack user may approve when listed for the incident's
/// service, for its severity, or in `anyone`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approvers {
    #[serde(default)]
    pub anyone: Vec<String>,
    #[serde(default)]
    pub by_service: BTreeMap<String, Vec<String>>,
    /// Keys are `sev1` … `sev4`.
    #[serde(default)]
    pub by_severity: BTreeMap<String, Vec<String>>,
}

impl Approvers {
    pub fn is_empty(&self) -> bool {
        self.anyone.is_empty()
            && self.by_service.values().all(Vec::is_empty)
            && self.by_severity.values().all(Vec::is_empty)
    }

    fn allows(&self, user: &str, incident: &Incident) -> bool {
        let listed = |users: Option<&Vec<String>>| users.is_some_and(|u| u.iter().any(|x| x == user));
        let service = incident.detection.as_ref().map(|d| d.service.clone()).unwrap_or_default();
        let severity = incident.severity.map(|s| format!("{s:?}").to_lowercase()).unwrap_or_default();
        listed(Some(&self.anyone)) || listed(self.by_service.get(&service)) || listed(self.by_severity.get(&severity))
    }
}

#[derive(Clone)]
pub struct SlackState {
    pub engine: Engine,
    /// Where clicks are audited.
    pub access: Access,
    pub signing_secret: String,
    pub approvers: Approvers,
}

/// Why a request was refused before it could touch a run.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    MissingHeader(&'static str),
    StaleTimestamp,
    BadSignature,
}

/// Checks Slack's request signature over the raw body.
pub fn verify(secret: &str, headers: &HeaderMap, body: &[u8], now_secs: i64) -> Result<(), Refusal> {
    let header =
        |name: &'static str| headers.get(name).and_then(|v| v.to_str().ok()).ok_or(Refusal::MissingHeader(name));
    let timestamp = header("x-slack-request-timestamp")?;
    let signature = header("x-slack-signature")?;
    let ts: i64 = timestamp.parse().map_err(|_| Refusal::StaleTimestamp)?;
    // abs_diff cannot overflow, whatever the two values.
    if now_secs.abs_diff(ts) > MAX_SKEW_SECS.unsigned_abs() {
        return Err(Refusal::StaleTimestamp);
    }
    let tag = signature.strip_prefix("v0=").and_then(|h| hex::decode(h).ok()).ok_or(Refusal::BadSignature)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).map_err(|_| Refusal::BadSignature)?;
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    // verify_slice compares in constant time.
    mac.verify_slice(&tag).map_err(|_| Refusal::BadSignature)
}

/// Signs like Slack does; for tests and local tooling.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(format!("v0:{timestamp}:").as_bytes());
    mac.update(body);
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

#[derive(Deserialize)]
struct Form {
    payload: String,
}

#[derive(Deserialize)]
struct Payload {
    #[serde(rename = "type")]
    kind: String,
    user: User,
    #[serde(default)]
    actions: Vec<Action>,
}

#[derive(Deserialize)]
struct User {
    id: String,
    #[serde(default)]
    username: Option<String>,
}

#[derive(Deserialize)]
struct Action {
    action_id: String,
    #[serde(default)]
    value: String,
    #[serde(default)]
    action_ts: String,
}

fn reply(status: StatusCode, text: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "response_type": "ephemeral", "replace_original": false, "text": text.into() })))
        .into_response()
}

/// The Slack routes, to merge into the API router when Slack is configured.
pub fn router(state: SlackState) -> axum::Router {
    axum::Router::new()
        .route("/slack/interactions", axum::routing::post(interactions))
        .layer(axum::extract::DefaultBodyLimit::max(crate::server::MAX_BODY_BYTES))
        .with_state(state)
}

/// Verified clicks on a run are audited with the answer given; forged or
/// stale requests are not (they are logged), so nobody can fill the audit log
/// without the signing secret.
pub async fn interactions(State(state): State<SlackState>, headers: HeaderMap, body: Bytes) -> Response {
    let request_id = headers.get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-").to_owned();
    let mut audited: Option<(String, String, String)> = None;
    let resp = interact(&state, &headers, &body, &mut audited).await;
    if let Some((actor, action, target)) = audited {
        let entry = AuditStart {
            actor: &actor,
            key_id: None,
            action: &action,
            target: &target,
            request_id: &request_id,
            detail: "",
        };
        if let Err(e) = state.access.audit(&entry, resp.status().as_u16()).await {
            tracing::error!(error = %e, "could not audit a Slack interaction");
        }
    }
    resp
}

async fn interact(
    state: &SlackState,
    headers: &HeaderMap,
    body: &Bytes,
    audited: &mut Option<(String, String, String)>,
) -> Response {
    let now = state.engine.clock().now();
    if let Err(refusal) = verify(&state.signing_secret, headers, body, now.0 / 1000) {
        tracing::warn!(?refusal, "slack request refused");
        let text = match refusal {
            Refusal::MissingHeader(h) => format!("missing header {h}"),
            Refusal::StaleTimestamp => "request timestamp is malformed or more than 5 minutes from now".to_owned(),
            Refusal::BadSignature => "signature does not match".to_owned(),
        };
        return reply(StatusCode::UNAUTHORIZED, text);
    }
    let payload: Payload = match serde_urlencoded::from_bytes::<Form>(body)
        .map_err(|e| e.to_string())
        .and_then(|f| serde_json::from_str(&f.payload).map_err(|e| e.to_string()))
    {
        Ok(p) => p,
        Err(e) => return reply(StatusCode::BAD_REQUEST, format!("malformed interaction payload: {e}")),
    };
    if payload.kind != "block_actions" {
        return reply(StatusCode::OK, format!("ignored `{}` interaction", payload.kind));
    }
    let Some(action) = payload.actions.iter().find(|a| a.action_id == APPROVE_ACTION || a.action_id == REJECT_ACTION)
    else {
        return reply(StatusCode::OK, "no Sentinel action in this interaction");
    };
    let (run, gate) = action.value.split_once('/').unwrap_or((action.value.as_str(), ""));
    let Ok(run) = run.parse::<RunId>() else {
        return reply(StatusCode::BAD_REQUEST, format!("`{}` does not name a run", action.value));
    };
    let kind = if action.action_id == APPROVE_ACTION { "approve" } else { "reject" };
    let actor = format!("slack:{}", payload.user.id);
    *audited = Some((actor.clone(), format!("slack {kind}"), format!("/v1/runs/{run}")));
    let detail = match state.engine.detail(run).await {
        Ok(d) => d,
        Err(engine::Error::RunNotFound(_)) => {
            return reply(StatusCode::NOT_FOUND, format!("incident run {run} does not exist"))
        }
        Err(e) => {
            tracing::error!(error = %e, "slack interaction");
            return reply(StatusCode::SERVICE_UNAVAILABLE, "Sentinel cannot reach its database; try again");
        }
    };
    let r = &detail.run;
    let incident: Incident = serde_json::from_value(r.state.clone()).unwrap_or_default();
    let click_id = format!("slack:{}:{}", payload.user.id, action.action_ts);
    let who = payload.user.username.clone().unwrap_or_else(|| payload.user.id.clone());
    let decision = gate::Decision {
        run,
        gate,
        kind,
        by: &actor,
        request: Some(&click_id),
        via: "slack",
        note: Some(who.clone()),
        reason: format!("{kind}d in Slack by {who}"),
    };
    if !state.approvers.allows(&payload.user.id, &incident) {
        // Recorded on the run, where the audit of the incident lives; it decides nothing.
        decision.refuse(&state.engine, "not an approver for this incident").await;
        return reply(StatusCode::FORBIDDEN, format!("<@{}> is not an approver for this incident", payload.user.id));
    }
    let not_waiting = || {
        match gate::waiting_gate(r, kind) {
        Some(g) => format!(
            "this button is for an earlier proposal (gate {gate}); the incident now waits on gate {g}: use the latest message"
        ),
        None => format!("this incident is not waiting for a decision (it is {} at {})", r.status, r.node),
    }
    };
    match decision.submit(&state.engine, &detail, not_waiting).await {
        Ok(gate::Answer::Accepted) => reply(StatusCode::OK, format!("{kind}d by <@{}>", payload.user.id)),
        Ok(gate::Answer::Duplicate) => reply(StatusCode::OK, "already recorded"),
        Ok(gate::Answer::Refused(why)) => reply(StatusCode::CONFLICT, why),
        Err(e @ engine::Error::RunFinished { .. }) => reply(StatusCode::CONFLICT, e.to_string()),
        Err(e) => {
            tracing::error!(error = %e, "slack interaction");
            reply(StatusCode::SERVICE_UNAVAILABLE, "Sentinel could not record the decision; try again")
        }
    }
}
