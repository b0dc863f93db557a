//! Decoding rows into the engine's types. Any malformed value is reported as
//! [`Error::Corrupt`] with the table it came from, never a panic.

use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::Claimed;
use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::run::{Checkpoint, EffectRecord, PendingMessage, Run, RunId, RunStatus, Signal};

pub(super) const RUN_COLUMNS: &str = "id, graph, graph_version, status, node, state, step, attempt, lease_owner, \
     lease_expires_at, wake_at, wait_signals, error, created_at, updated_at, finished_at, correlation_key";

fn corrupt(table: &'static str, reason: impl std::fmt::Display) -> Error {
    Error::Corrupt { table, reason: reason.to_string() }
}

fn run_id(table: &'static str, s: &str) -> Result<RunId> {
    s.parse().map_err(|e| corrupt(table, format!("run id `{s}`: {e}")))
}

fn json(table: &'static str, s: &str) -> Result<Value> {
    serde_json::from_str(s).map_err(|e| corrupt(table, format!("json: {e}")))
}

fn ts(v: Option<i64>) -> Option<Timestamp> {
    v.map(Timestamp)
}

pub(super) fn status(s: &str) -> Result<RunStatus> {
    s.parse().map_err(|e| corrupt("runs", e))
}

pub(super) fn claimed(r: &AnyRow) -> Result<Claimed> {
    Ok(Claimed {
        id: run_id("runs", &r.try_get::<String, _>("id")?)?,
        graph: r.try_get("graph")?,
        graph_version: r.try_get::<i64, _>("graph_version")? as i32,
        node: r.try_get("node")?,
        state: r.try_get("state")?,
        step: r.try_get("step")?,
        attempt: r.try_get::<i64, _>("attempt")? as i32,
        epoch: r.try_get("lease_epoch")?,
        lease_losses: r.try_get::<i64, _>("lease_losses")? as i32,
        signal_seq: r.try_get("signal_seq")?,
    })
}

pub(super) fn run(r: &AnyRow) -> Result<Run> {
    let wait: String = r.try_get("wait_signals")?;
    Ok(Run {
        id: run_id("runs", &r.try_get::<String, _>("id")?)?,
        graph: r.try_get("graph")?,
        graph_version: r.try_get::<i64, _>("graph_version")? as i32,
        status: status(&r.try_get::<String, _>("status")?)?,
        node: r.try_get("node")?,
        state: json("runs", &r.try_get::<String, _>("state")?)?,
        step: r.try_get("step")?,
        attempt: r.try_get::<i64, _>("attempt")? as i32,
        lease_owner: r.try_get("lease_owner")?,
        lease_expires_at: ts(r.try_get("lease_expires_at")?),
        wake_at: ts(r.try_get("wake_at")?),
        wait_signals: wait.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect(),
        error: r.try_get("error")?,
        created_at: Timestamp(r.try_get("created_at")?),
        updated_at: Timestamp(r.try_get("updated_at")?),
        finished_at: ts(r.try_get("finished_at")?),
        correlation_key: r.try_get("correlation_key")?,
    })
}

pub(super) fn run_id_of(r: &AnyRow) -> Result<RunId> {
    run_id("runs", &r.try_get::<String, _>(0)?)
}

pub(super) fn checkpoint(r: &AnyRow) -> Result<Checkpoint> {
    let outcome: String = r.try_get("outcome")?;
    Ok(Checkpoint {
        run_id: run_id("run_history", &r.try_get::<String, _>("run_id")?)?,
        step: r.try_get("step")?,
        node: r.try_get("node")?,
        attempt: r.try_get::<i64, _>("attempt")? as i32,
        outcome: serde_json::from_str(&outcome).map_err(|e| corrupt("run_history", format!("outcome: {e}")))?,
        state_before: json("run_history", &r.try_get::<String, _>("state_before")?)?,
        state_after: json("run_history", &r.try_get::<String, _>("state_after")?)?,
        worker: r.try_get("worker")?,
        started_at: Timestamp(r.try_get("started_at")?),
        finished_at: Timestamp(r.try_get("finished_at")?),
    })
}

pub(super) fn signal(r: &AnyRow) -> Result<Signal> {
    Ok(Signal {
        id: r.try_get("signal_id")?,
        kind: r.try_get("kind")?,
        payload: json("run_signals", &r.try_get::<String, _>("payload")?)?,
        received_at: Timestamp(r.try_get("received_at")?),
        consumed_step: r.try_get("consumed_step")?,
    })
}

pub(super) fn effect(r: &AnyRow) -> Result<EffectRecord> {
    let outcome: Option<String> = r.try_get("outcome")?;
    Ok(EffectRecord {
        key: r.try_get("key")?,
        step: r.try_get("step")?,
        intent_at: Timestamp(r.try_get("intent_at")?),
        outcome: outcome.map(|o| json("run_effects", &o)).transpose()?,
        completed_at: ts(r.try_get("completed_at")?),
    })
}

pub(super) fn message(r: &AnyRow) -> Result<PendingMessage> {
    Ok(PendingMessage {
        id: r.try_get("id")?,
        run_id: run_id("outbox", &r.try_get::<String, _>("run_id")?)?,
        idempotency_key: r.try_get("idempotency_key")?,
        topic: r.try_get("topic")?,
        payload: json("outbox", &r.try_get::<String, _>("payload")?)?,
        attempts: r.try_get::<i64, _>("attempts")? as i32,
        created_at: Timestamp(r.try_get("created_at")?),
        claim_token: r.try_get::<Option<String>, _>("claim_token")?.unwrap_or_default(),
        claims: r.try_get("claims")?,
        last_error: r.try_get("last_error")?,
    })
}
