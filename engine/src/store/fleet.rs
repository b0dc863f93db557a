//! What processes sharing one database agree on beyond runs: the ledger of
//! facts (with atomic, limit-checked reservations) and leases on resources
//! outside the engine (with a cooldown).

use std::time::Duration;

use serde_json::Value;
use sqlx::Row;

use super::Store;
use crate::clock::Timestamp;
use crate::error::Result;

/// A fact in the ledger, as recorded and as read back. `key` makes the
/// write idempotent.
#[derive(Clone, Debug, PartialEq)]
pub struct NewFact {
    pub key: String,
    pub run_id: String,
    pub kind: String,
    pub subject: String,
    pub at: Timestamp,
    pub payload: Value,
}

/// At most `max` facts of `kind` (about `subject`, when set) within `window`
/// before the reservation's time (or after it: a concurrent reservation may
/// carry a later time). A zero window is no limit.
#[derive(Clone, Debug, PartialEq)]
pub struct Limit {
    pub kind: String,
    pub subject: Option<String>,
    pub window: Duration,
    pub max: u32,
}

/// What [`Store::reserve`] did.
#[derive(Clone, Debug, PartialEq)]
pub enum Reservation {
    /// Every limit had room; the fact is recorded.
    Reserved,
    /// A fact with this key was recorded before (a retried step): it stands.
    AlreadyReserved,
    /// `limits[limit]` was full: `count` facts, the newest at `latest`. Nothing recorded.
    Refused { limit: usize, count: u32, latest: Option<Timestamp> },
}

/// What [`Store::hold`] found.
#[derive(Clone, Debug, PartialEq)]
pub enum Hold {
    /// The caller holds the resource until the lease's end.
    Held,
    /// Another holder has it until `until` (or releases it sooner).
    Busy { holder: String, until: Timestamp },
    /// Free, but taken by another holder too recently: free again at `until`.
    Cooling { until: Timestamp },
}

impl Store {
    /// Records facts, skipping keys recorded before.
    pub async fn record_facts(&self, facts: &[NewFact]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for f in facts {
            insert_fact(&mut tx, f).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Facts of `kind` (about `subject`, when set) at or after `since`, oldest first.
    pub async fn ledger(&self, kind: &str, subject: Option<&str>, since: Timestamp) -> Result<Vec<NewFact>> {
        let rows = sqlx::query(
            "SELECT key, run_id, kind, subject, at, payload FROM ledger
             WHERE kind = $1 AND (CAST($2 AS TEXT) IS NULL OR subject = CAST($2 AS TEXT)) AND at >= $3
             ORDER BY at, id",
        )
        .bind(kind)
        .bind(subject)
        .bind(since.0)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let payload: String = r.try_get("payload")?;
                Ok(NewFact {
                    key: r.try_get("key")?,
                    run_id: r.try_get("run_id")?,
                    kind: r.try_get("kind")?,
                    subject: r.try_get("subject")?,
                    at: Timestamp(r.try_get("at")?),
                    payload: serde_json::from_str(&payload)?,
                })
            })
            .collect()
    }

    /// Records `fact` only if every limit has room, as one atomic step:
    /// reservations in one `scope` are serialised by a row lock, so any
    /// number of processes and slots never exceed a limit together.
    pub async fn reserve(&self, scope: &str, fact: &NewFact, limits: &[Limit]) -> Result<Reservation> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO ledger_locks (scope) VALUES ($1) ON CONFLICT (scope) DO NOTHING")
            .bind(scope)
            .execute(&mut *tx)
            .await?;
        // Takes the scope's row lock until commit (SQLite: one writer anyway).
        sqlx::query("UPDATE ledger_locks SET taken = taken + 1 WHERE scope = $1").bind(scope).execute(&mut *tx).await?;
        let seen = sqlx::query("SELECT 1 FROM ledger WHERE key = $1").bind(&fact.key).fetch_optional(&mut *tx).await?;
        if seen.is_some() {
            tx.rollback().await?;
            return Ok(Reservation::AlreadyReserved);
        }
        // Facts stamped later than this one count too: a concurrent reservation
        // may have read the clock after this one and taken the lock before it.
        for (i, limit) in limits.iter().enumerate() {
            // A zero window is no limit (e.g. a cooldown configured off).
            if limit.window.is_zero() {
                continue;
            }
            let since = fact.at.saturating_sub(limit.window);
            let row = sqlx::query(
                "SELECT COUNT(*), MAX(at) FROM ledger
                 WHERE kind = $1 AND (CAST($2 AS TEXT) IS NULL OR subject = CAST($2 AS TEXT)) AND at > $3",
            )
            .bind(&limit.kind)
            .bind(limit.subject.as_deref())
            .bind(since.0)
            .fetch_one(&mut *tx)
            .await?;
            let count: i64 = row.try_get(0)?;
            if count >= limit.max as i64 {
                let latest: Option<i64> = row.try_get(1)?;
                tx.rollback().await?;
                return Ok(Reservation::Refused { limit: i, count: count as u32, latest: latest.map(Timestamp) });
            }
        }
        insert_fact(&mut tx, fact).await?;
        tx.commit().await?;
        Ok(Reservation::Reserved)
    }

    /// Withdraws the reserved fact `key` (idempotent).
    pub async fn unreserve(&self, key: &str) -> Result<()> {
        sqlx::query("DELETE FROM ledger WHERE key = $1").bind(key).execute(&self.pool).await?;
        Ok(())
    }

    /// Takes `resource` for `holder` until `now + ttl`, if nobody else holds
    /// it and no other holder took it within `cooldown`. The holder may take
    /// it again at any time (it extends its lease). One statement: atomic
    /// across processes.
    pub async fn hold(
        &self,
        resource: &str,
        holder: &str,
        now: Timestamp,
        ttl: Duration,
        cooldown: Duration,
    ) -> Result<Hold> {
        let until = now.saturating_add(ttl);
        let cooldown_ms = cooldown.as_millis().min(i64::MAX as u128) as i64;
        let taken = sqlx::query(
            "INSERT INTO resource_leases (resource, holder, expires_at, acquired_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (resource) DO UPDATE SET holder = $2, expires_at = $3, released_at = NULL,
                 acquired_at = CASE WHEN resource_leases.holder = $2 THEN resource_leases.acquired_at ELSE $4 END
             WHERE resource_leases.holder = $2
                OR (resource_leases.expires_at <= $4 AND resource_leases.acquired_at + $5 <= $4)
             RETURNING holder",
        )
        .bind(resource)
        .bind(holder)
        .bind(until.0)
        .bind(now.0)
        .bind(cooldown_ms)
        .fetch_optional(&self.pool)
        .await?;
        if taken.is_some() {
            return Ok(Hold::Held);
        }
        let row = sqlx::query("SELECT holder, expires_at, acquired_at FROM resource_leases WHERE resource = $1")
            .bind(resource)
            .fetch_one(&self.pool)
            .await?;
        let other: String = row.try_get::<Option<String>, _>(0)?.unwrap_or_default();
        let expires: i64 = row.try_get::<Option<i64>, _>(1)?.unwrap_or(0);
        let acquired: i64 = row.try_get(2)?;
        if expires > now.0 {
            Ok(Hold::Busy { holder: other, until: Timestamp(expires) })
        } else {
            Ok(Hold::Cooling { until: Timestamp(acquired.saturating_add(cooldown_ms)) })
        }
    }

    /// Lets go of `resource` if `holder` has it; the cooldown keeps running
    /// from when it was taken. Idempotent.
    pub async fn unhold(&self, resource: &str, holder: &str, now: Timestamp) -> Result<()> {
        sqlx::query(
            "UPDATE resource_leases SET expires_at = $3, released_at = $3
             WHERE resource = $1 AND holder = $2 AND expires_at > $3",
        )
        .bind(resource)
        .bind(holder)
        .bind(now.0)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Resources held now: (resource, holder, until).
    pub async fn holds(&self, now: Timestamp) -> Result<Vec<(String, String, Timestamp)>> {
        let rows = sqlx::query(
            "SELECT resource, holder, expires_at FROM resource_leases WHERE expires_at > $1 ORDER BY resource",
        )
        .bind(now.0)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((r.try_get(0)?, r.try_get::<Option<String>, _>(1)?.unwrap_or_default(), Timestamp(r.try_get(2)?)))
            })
            .collect()
    }

    /// Deletes ledger facts older than `before`.
    pub async fn prune_ledger(&self, before: Timestamp) -> Result<u64> {
        let done = sqlx::query("DELETE FROM ledger WHERE at < $1").bind(before.0).execute(&self.pool).await?;
        Ok(done.rows_affected())
    }
}

pub(super) async fn insert_fact(tx: &mut sqlx::Transaction<'static, sqlx::Any>, f: &NewFact) -> Result<()> {
    sqlx::query(
        "INSERT INTO ledger (key, run_id, kind, subject, at, payload) VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (key) DO NOTHING",
    )
    .bind(&f.key)
    .bind(&f.run_id)
    .bind(&f.kind)
    .bind(&f.subject)
    .bind(f.at.0)
    .bind(serde_json::to_string(&f.payload)?)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
