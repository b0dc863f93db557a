//! The vector index port: where incidents' vectors are kept and searched.
//! Two adapters pass one behaviour suite (`memory/tests/index.rs`): the
//! embedded Qdrant engine ([`crate::edge::EdgeIndex`], the default) and a
//! Qdrant server ([`crate::server::QdrantIndex`], when `QDRANT_URL` is set).
//!
//! The index is told what it keeps: one point per incident, its id the
//! run's UUID, its payload a [`Remembered`]. The payload fields that filters
//! use are indexed: `service`, `status`, `fingerprint` (keywords),
//! `opened_at` and `resolved_at` (integers, milliseconds).

use async_trait::async_trait;
use nodes::memory::{Remembered, Status};
use uuid::Uuid;

/// Payload fields with an index, and their kind.
pub const INDEXED_FIELDS: &[(&str, FieldKind)] = &[
    ("service", FieldKind::Keyword),
    ("status", FieldKind::Keyword),
    ("fingerprint", FieldKind::Keyword),
    ("opened_at", FieldKind::Integer),
    ("resolved_at", FieldKind::Integer),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldKind {
    Keyword,
    Integer,
}

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// The index cannot be reached or did not answer: worth retrying.
    #[error("vector index unavailable: {0}")]
    Unavailable(String),
    /// The index answered no (a wrong collection, a bad request, a payload it cannot read).
    #[error("vector index refused: {0}")]
    Refused(String),
}

/// One incident's vector and payload.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    pub id: Uuid,
    pub vector: Vec<f32>,
    pub payload: Remembered,
}

/// A search: the points nearest `vector` that pass every filter given.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Search {
    pub vector: Vec<f32>,
    /// `service` is one of these (no filter when empty).
    pub services: Vec<String>,
    /// `status` is one of these (no filter when empty).
    pub statuses: Vec<Status>,
    /// `opened_at >= this` (milliseconds).
    pub opened_since: Option<i64>,
    /// Not this point.
    pub except: Option<Uuid>,
    pub limit: usize,
}

/// A point found, with its cosine similarity to the query.
#[derive(Clone, Debug, PartialEq)]
pub struct Hit {
    pub id: Uuid,
    pub score: f32,
    pub payload: Remembered,
}

#[async_trait]
pub trait VectorIndex: Send + Sync {
    /// Where the points live, for the start line and `/health/detailed`.
    fn describe(&self) -> String;
    /// Makes the collection ready: created with `dimensions` and cosine
    /// distance and the payload indexes if absent; refused if it exists with
    /// another size or distance.
    async fn ensure(&self, dimensions: usize) -> Result<(), IndexError>;
    /// Stores the points, replacing any with the same id.
    async fn upsert(&self, points: Vec<Point>) -> Result<(), IndexError>;
    async fn search(&self, search: &Search) -> Result<Vec<Hit>, IndexError>;
    async fn get(&self, id: Uuid) -> Result<Option<Remembered>, IndexError>;
    async fn delete(&self, ids: &[Uuid]) -> Result<(), IndexError>;
    /// Deletes the points of incidents that ended (any status but open)
    /// before `before` (`resolved_at < before`, milliseconds).
    async fn delete_ended_before(&self, before: i64) -> Result<(), IndexError>;
    async fn count(&self) -> Result<u64, IndexError>;
}

/// The statuses of an incident that has ended.
pub const ENDED: [Status; 3] = [Status::Resolved, Status::Escalated, Status::Closed];

/// A payload as the JSON object both adapters store.
pub(crate) fn payload_json(r: &Remembered) -> Result<serde_json::Map<String, serde_json::Value>, IndexError> {
    match serde_json::to_value(r) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        Ok(other) => Err(IndexError::Refused(format!("payload is not an object: {other}"))),
        Err(e) => Err(IndexError::Refused(format!("payload: {e}"))),
    }
}

/// A stored payload read back.
pub(crate) fn payload_from(m: serde_json::Map<String, serde_json::Value>) -> Result<Remembered, IndexError> {
    serde_json::from_value(serde_json::Value::Object(m))
        .map_err(|e| IndexError::Refused(format!("a stored payload is not an incident: {e}")))
}
