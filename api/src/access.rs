//! Who may call the API and what they did: API keys with roles, the audit
//! log, and the operator switches every process shares (the kill switch).
//! Kept in the engine's database, in tables of the API's own.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use engine::{Clock, Dialect, Store, Timestamp};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::{AnyPool, Row};

pub type Result<T> = std::result::Result<T, sqlx::Error>;

/// What a key may do. From `Viewer` up, each role may do everything the ones
/// before it may; `Ingest` may only push telemetry (`/v1/events`,
/// `/v1/alertmanager`), which operators and admins may do too.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Pushes telemetry: events and Alertmanager notifications. Nothing else.
    Ingest,
    /// Reads: runs, incidents, postmortems, graphs, outbox.
    Viewer,
    /// Decisions on runs: approve, reject, cancel, retry.
    Operator,
    /// Keys, the kill switch, the audit log.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Ingest => "ingest",
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "ingest" => Ok(Role::Ingest),
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            other => Err(format!("unknown role `{other}` (ingest, viewer, operator or admin)")),
        }
    }
}

/// An API key as stored: everything but the secret.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    pub role: Role,
    /// The first characters of the secret, to recognise a key in a list.
    pub prefix: String,
    pub created_at: i64,
    pub created_by: String,
    pub revoked_at: Option<i64>,
}

/// A key just created: the only time its secret is known.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NewKey {
    #[serde(flatten)]
    pub key: ApiKey,
    pub secret: String,
}

/// One audit log entry.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    pub at: i64,
    /// The key's name, or `slack:USER` for a Slack click.
    pub actor: String,
    pub key_id: Option<String>,
    /// What was asked, e.g. `POST /v1/runs/{id}/approve`.
    pub action: String,
    pub target: String,
    pub request_id: String,
    /// The HTTP status answered; absent while the call is in flight or if the
    /// process died before answering.
    pub status: Option<i64>,
    pub detail: String,
}

/// What an audit entry is opened with.
#[derive(Clone, Debug)]
pub struct AuditStart<'a> {
    pub actor: &'a str,
    pub key_id: Option<&'a str>,
    pub action: &'a str,
    pub target: &'a str,
    pub request_id: &'a str,
    pub detail: &'a str,
}

/// The kill switch as stored: when on, the policy auto-approves nothing.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KillSwitch {
    pub enabled: bool,
    pub updated_at: Option<i64>,
    pub updated_by: Option<String>,
}

/// A signed-in console user: the key the session was opened with, its role,
/// and the token every state-changing request of the session must carry.
#[derive(Clone, Debug)]
pub struct Session {
    pub key_id: String,
    pub name: String,
    pub role: Role,
    pub csrf: String,
    pub expires_at: i64,
}

const KEY_PREFIX: &str = "snl_";
const KILL_SWITCH: &str = "kill_switch";

#[derive(Clone)]
pub struct Access {
    pool: AnyPool,
    clock: Arc<dyn Clock>,
}

impl Access {
    /// Applies the API's migrations (versions from 1000 up) to the store's database.
    pub async fn new(store: &Store, clock: Arc<dyn Clock>) -> Result<Access> {
        let mut migrator = match store.dialect() {
            Dialect::Postgres => sqlx::migrate!("./migrations/postgres"),
            Dialect::Sqlite => sqlx::migrate!("./migrations/sqlite"),
        };
        migrator.set_ignore_missing(true);
        migrator.run(store.pool()).await?;
        Ok(Access { pool: store.pool().clone(), clock })
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    // ---- keys ---------------------------------------------------------------

    pub async fn create_key(&self, name: &str, role: Role, created_by: &str) -> Result<NewKey> {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let secret = format!("{KEY_PREFIX}{}", hex::encode(bytes));
        let mut id = [0u8; 6];
        rand::rngs::OsRng.fill_bytes(&mut id);
        let key = ApiKey {
            id: format!("key_{}", hex::encode(id)),
            name: name.to_owned(),
            role,
            prefix: secret[..KEY_PREFIX.len() + 8].to_owned(),
            created_at: self.now().0,
            created_by: created_by.to_owned(),
            revoked_at: None,
        };
        sqlx::query(
            "INSERT INTO api_keys (id, name, role, hash, prefix, created_at, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&key.id)
        .bind(&key.name)
        .bind(role.as_str())
        .bind(hash(&secret))
        .bind(&key.prefix)
        .bind(key.created_at)
        .bind(&key.created_by)
        .execute(&self.pool)
        .await?;
        Ok(NewKey { key, secret })
    }

    pub async fn list_keys(&self) -> Result<Vec<ApiKey>> {
        let rows = sqlx::query(
            "SELECT id, name, role, prefix, created_at, created_by, revoked_at FROM api_keys ORDER BY created_at, id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(key_from_row).collect()
    }

    /// Revokes a key; false when no active key has that id.
    pub async fn revoke_key(&self, id: &str) -> Result<bool> {
        let done = sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(self.now().0)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The active key whose secret this is.
    pub async fn authenticate(&self, secret: &str) -> Result<Option<ApiKey>> {
        if !secret.starts_with(KEY_PREFIX) {
            return Ok(None);
        }
        // Looked up by hash: the comparison happens on a digest, never on the secret.
        let row = sqlx::query(
            "SELECT id, name, role, prefix, created_at, created_by, revoked_at FROM api_keys WHERE hash = $1 AND revoked_at IS NULL",
        )
        .bind(hash(secret))
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(key_from_row).transpose()
    }

    // ---- audit --------------------------------------------------------------

    /// Opens an entry before the call acts; returns its id for [`Access::audit_end`].
    pub async fn audit_begin(&self, e: &AuditStart<'_>) -> Result<i64> {
        let row = sqlx::query(
            "INSERT INTO audit_log (at, actor, key_id, action, target, request_id, detail)
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        )
        .bind(self.now().0)
        .bind(e.actor)
        .bind(e.key_id)
        .bind(e.action)
        .bind(e.target)
        .bind(e.request_id)
        .bind(e.detail)
        .fetch_one(&self.pool)
        .await?;
        row.try_get(0)
    }

    pub async fn audit_end(&self, id: i64, status: u16) -> Result<()> {
        sqlx::query("UPDATE audit_log SET status = $1 WHERE id = $2")
            .bind(i64::from(status))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A whole entry at once, for calls answered without acting (refusals).
    pub async fn audit(&self, e: &AuditStart<'_>, status: u16) -> Result<()> {
        let id = self.audit_begin(e).await?;
        self.audit_end(id, status).await
    }

    /// The newest entries first.
    pub async fn audit_log(&self, limit: i64) -> Result<Vec<AuditEntry>> {
        let rows = sqlx::query(
            "SELECT id, at, actor, key_id, action, target, request_id, status, detail
             FROM audit_log ORDER BY id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    id: r.try_get("id")?,
                    at: r.try_get("at")?,
                    actor: r.try_get("actor")?,
                    key_id: r.try_get("key_id")?,
                    action: r.try_get("action")?,
                    target: r.try_get("target")?,
                    request_id: r.try_get("request_id")?,
                    status: r.try_get("status")?,
                    detail: r.try_get("detail")?,
                })
            })
            .collect()
    }

    // ---- console sessions -----------------------------------------------------

    /// Opens a console session for `key`, lasting `ttl`: the cookie's secret
    /// (returned once; only its digest is stored) and the session.
    pub async fn open_session(&self, key: &ApiKey, ttl: std::time::Duration) -> Result<(String, Session)> {
        let secret = random_hex(32);
        let csrf = random_hex(32);
        let now = self.now();
        let expires_at = now.saturating_add(ttl).0;
        sqlx::query(
            "INSERT INTO console_sessions (hash, key_id, csrf, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(hash(&secret))
        .bind(&key.id)
        .bind(&csrf)
        .bind(now.0)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        let session = Session { key_id: key.id.clone(), name: key.name.clone(), role: key.role, csrf, expires_at };
        Ok((secret, session))
    }

    /// The live session whose cookie secret this is: not expired, and its
    /// key not revoked.
    pub async fn session(&self, secret: &str) -> Result<Option<Session>> {
        let row = sqlx::query(
            "SELECT s.key_id, s.csrf, s.expires_at, k.name, k.role FROM console_sessions s
             JOIN api_keys k ON k.id = s.key_id
             WHERE s.hash = $1 AND s.expires_at > $2 AND k.revoked_at IS NULL",
        )
        .bind(hash(secret))
        .bind(self.now().0)
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = row else { return Ok(None) };
        let role: String = r.try_get("role")?;
        Ok(Some(Session {
            key_id: r.try_get("key_id")?,
            name: r.try_get("name")?,
            role: role.parse().map_err(|e: String| sqlx::Error::Decode(e.into()))?,
            csrf: r.try_get("csrf")?,
            expires_at: r.try_get("expires_at")?,
        }))
    }

    /// Ends a session (sign out), and forgets every expired one.
    pub async fn close_session(&self, secret: &str) -> Result<()> {
        sqlx::query("DELETE FROM console_sessions WHERE hash = $1 OR expires_at <= $2")
            .bind(hash(secret))
            .bind(self.now().0)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ---- settings -------------------------------------------------------------

    pub async fn kill_switch(&self) -> Result<KillSwitch> {
        let row = sqlx::query("SELECT value, updated_at, updated_by FROM settings WHERE name = $1")
            .bind(KILL_SWITCH)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            None => Ok(KillSwitch { enabled: false, updated_at: None, updated_by: None }),
            Some(r) => Ok(KillSwitch {
                enabled: r.try_get::<String, _>("value")? == "on",
                updated_at: Some(r.try_get("updated_at")?),
                updated_by: Some(r.try_get("updated_by")?),
            }),
        }
    }

    pub async fn set_kill_switch(&self, enabled: bool, by: &str) -> Result<KillSwitch> {
        let now = self.now().0;
        sqlx::query(
            "INSERT INTO settings (name, value, updated_at, updated_by) VALUES ($1, $2, $3, $4)
             ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at, updated_by = excluded.updated_by",
        )
        .bind(KILL_SWITCH)
        .bind(if enabled { "on" } else { "off" })
        .bind(now)
        .bind(by)
        .execute(&self.pool)
        .await?;
        Ok(KillSwitch { enabled, updated_at: Some(now), updated_by: Some(by.to_owned()) })
    }
}

/// `bytes` random bytes from the OS, in hex.
fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    hex::encode(buf)
}

fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn key_from_row(r: &sqlx::any::AnyRow) -> Result<ApiKey> {
    let role: String = r.try_get("role")?;
    Ok(ApiKey {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        role: role.parse().map_err(|e: String| sqlx::Error::Decode(e.into()))?,
        prefix: r.try_get("prefix")?,
        created_at: r.try_get("created_at")?,
        created_by: r.try_get("created_by")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}
