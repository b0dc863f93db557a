//! The API's gatekeeping, as middleware: who is calling (an API key in
//! `Authorization: Bearer`), whether they are within their rate limit,
//! whether their role allows the route, and an audit entry for every call that
//! can change something, written before the call acts.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde_json::json;

use sha2::{Digest, Sha256};

use crate::access::{Access, ApiKey, AuditStart, Role};

/// The caller of a request, once its key is known.
#[derive(Clone, Debug)]
pub struct Caller {
    pub key_id: String,
    pub name: String,
    pub role: Role,
}

/// Requests per key: a steady rate and the burst allowed above it.
#[derive(Clone, Copy, Debug)]
pub struct RateLimit {
    pub per_second: NonZeroU32,
    pub burst: NonZeroU32,
}

impl Default for RateLimit {
    fn default() -> Self {
        const PER_SECOND: NonZeroU32 = NonZeroU32::new(20).unwrap();
        const BURST: NonZeroU32 = NonZeroU32::new(40).unwrap();
        RateLimit { per_second: PER_SECOND, burst: BURST }
    }
}

#[derive(Clone)]
pub struct Security {
    pub access: Access,
    limiter: Arc<DefaultKeyedRateLimiter<String>>,
    /// Keys recently looked up by the ingest routes: secret digest → (key, when).
    cache: Arc<Mutex<KeyCache>>,
}

/// Secret digest → (key, when it was looked up).
type KeyCache = HashMap<[u8; 32], (ApiKey, Instant)>;

/// How long the ingest routes trust a key lookup. A key revoked through this
/// process stops working at once; through another process, within this long.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(5);

impl Security {
    pub fn new(access: Access, limit: RateLimit) -> Security {
        let quota = Quota::per_second(limit.per_second).allow_burst(limit.burst);
        Security { access, limiter: Arc::new(RateLimiter::keyed(quota)), cache: Arc::default() }
    }

    /// Drops every cached key lookup (after a revocation).
    pub fn forget_cached_keys(&self) {
        self.cache.lock().expect("key cache lock").clear();
    }

    async fn cached_key(&self, secret: &str) -> crate::access::Result<Option<ApiKey>> {
        let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        if let Some((key, at)) = self.cache.lock().expect("key cache lock").get(&digest) {
            if at.elapsed() < KEY_CACHE_TTL {
                return Ok(Some(key.clone()));
            }
        }
        let key = self.access.authenticate(secret).await?;
        let mut cache = self.cache.lock().expect("key cache lock");
        match &key {
            Some(k) => {
                cache.insert(digest, (k.clone(), Instant::now()));
            }
            None => {
                cache.remove(&digest);
            }
        }
        Ok(key)
    }
}

fn refuse(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": { "code": code, "message": message.into() } }))).into_response()
}

pub fn request_id(req: &Request) -> String {
    req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-").to_owned()
}

/// The key in `Authorization: Bearer <key>`, or why there is none (for the 401).
fn bearer(req: &Request) -> Result<String, &'static str> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Err("missing API key: send `Authorization: Bearer <key>` (create one with `sentinel keys create`)");
    };
    match value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")) {
        Some(secret) => Ok(secret.trim().to_owned()),
        None => Err("the Authorization header must be `Bearer <key>`"),
    }
}

/// Finds the caller's key and applies its rate limit. Unauthenticated calls
/// are answered 401 and never reach a handler.
pub async fn authenticate(State(sec): State<Security>, mut req: Request, next: Next) -> Response {
    let secret = match bearer(&req) {
        Ok(secret) => secret,
        Err(why) => return unauthorized(why),
    };
    let key = match sec.access.authenticate(&secret).await {
        Ok(Some(key)) => key,
        Ok(None) => return unauthorized("unknown or revoked API key"),
        Err(e) => {
            tracing::error!(error = %e, "key lookup failed");
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "cannot check the API key: the database is unavailable",
            );
        }
    };
    if let Err(not_until) = sec.limiter.check_key(&key.id) {
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let mut resp = refuse(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("key `{}` is over its rate limit; retry in {secs} s", key.name),
        );
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        return resp;
    }
    req.extensions_mut().insert(Caller { key_id: key.id, name: key.name, role: key.role });
    next.run(req).await
}

/// Finds the caller's key through [`KEY_CACHE_TTL`]-long cache, with no rate
/// limit: for the ingest routes, where the pipeline pushes back instead.
pub async fn authenticate_cached(State(sec): State<Security>, mut req: Request, next: Next) -> Response {
    let secret = match bearer(&req) {
        Ok(secret) => secret,
        Err(why) => return unauthorized(why),
    };
    match sec.cached_key(&secret).await {
        Ok(Some(key)) => {
            req.extensions_mut().insert(Caller { key_id: key.id, name: key.name, role: key.role });
            next.run(req).await
        }
        Ok(None) => unauthorized("unknown or revoked API key"),
        Err(e) => {
            tracing::error!(error = %e, "key lookup failed");
            refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "cannot check the API key: the database is unavailable",
            )
        }
    }
}

fn unauthorized(message: &str) -> Response {
    let mut resp = refuse(StatusCode::UNAUTHORIZED, "unauthorized", message);
    resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

/// Refuses callers whose role is below `needed`. Refusals of calls that would
/// have changed something are audited too.
pub async fn require(State((sec, needed)): State<(Security, Role)>, req: Request, next: Next) -> Response {
    let Some(caller) = req.extensions().get::<Caller>().cloned() else {
        return unauthorized("no API key");
    };
    // `Ingest` is below `Viewer` in the order: it passes none of these.
    if caller.role >= needed {
        return next.run(req).await;
    }
    let message = format!("this call needs the {needed} role; key `{}` has {}", caller.name, caller.role);
    forbid(&sec, Refused::of(&req), &caller, message).await
}

/// The telemetry routes: `ingest` keys, and operators and admins.
pub async fn require_ingest(State(sec): State<Security>, req: Request, next: Next) -> Response {
    let Some(caller) = req.extensions().get::<Caller>().cloned() else {
        return unauthorized("no API key");
    };
    if caller.role == Role::Ingest || caller.role >= Role::Operator {
        return next.run(req).await;
    }
    let message =
        format!("this call needs the ingest, operator or admin role; key `{}` has {}", caller.name, caller.role);
    forbid(&sec, Refused::of(&req), &caller, message).await
}

/// What a refusal records of the request (owned: the request is not `Sync`).
pub(crate) struct Refused {
    mutating: bool,
    action: String,
    target: String,
    request_id: String,
}

impl Refused {
    pub(crate) fn of(req: &Request) -> Refused {
        Refused {
            mutating: req.method() != Method::GET,
            action: action(req),
            target: req.uri().path().to_owned(),
            request_id: request_id(req),
        }
    }
}

/// Audits a refused call that would have changed something (the console's
/// refusals, which answer with a page rather than JSON).
pub(crate) async fn record_refusal(sec: &Security, call: Refused, caller: &Caller, message: &str) {
    forbid(sec, call, caller, message.to_owned()).await;
}

/// 403, audited when the call would have changed something.
async fn forbid(sec: &Security, call: Refused, caller: &Caller, message: String) -> Response {
    if call.mutating {
        let entry = AuditStart {
            actor: &caller.name,
            key_id: Some(&caller.key_id),
            action: &call.action,
            target: &call.target,
            request_id: &call.request_id,
            detail: &message,
        };
        if let Err(e) = sec.access.audit(&entry, StatusCode::FORBIDDEN.as_u16()).await {
            tracing::error!(error = %e, "could not audit a refused call");
        }
    }
    refuse(StatusCode::FORBIDDEN, "forbidden", message)
}

fn action(req: &Request) -> String {
    let route = req.extensions().get::<MatchedPath>().map_or_else(|| req.uri().path(), |p| p.as_str());
    format!("{} {route}", req.method())
}

/// Writes the audit entry of a mutating call before it acts and its status
/// after. When the entry cannot be written the call is refused: nothing
/// changes without a record of it.
pub async fn audit(State(sec): State<Security>, req: Request, next: Next) -> Response {
    if req.method() == Method::GET || req.method() == Method::HEAD {
        return next.run(req).await;
    }
    let Some(caller) = req.extensions().get::<Caller>().cloned() else {
        return unauthorized("no API key");
    };
    let action = action(&req);
    let target = req.uri().path().to_owned();
    let request_id = request_id(&req);
    let entry = AuditStart {
        actor: &caller.name,
        key_id: Some(&caller.key_id),
        action: &action,
        target: &target,
        request_id: &request_id,
        detail: "",
    };
    let id = match sec.access.audit_begin(&entry).await {
        Ok(id) => id,
        Err(e) => {
            tracing::error!(error = %e, "could not open an audit entry");
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "cannot write the audit log; nothing was changed",
            );
        }
    };
    let resp = next.run(req).await;
    if let Err(e) = sec.access.audit_end(id, resp.status().as_u16()).await {
        tracing::error!(error = %e, audit_id = id, "could not complete an audit entry");
    }
    resp
}
