//! The embedded vector index: Qdrant's engine in process (`qdrant-edge`),
//! one shard in a directory under the data directory. The default: nothing
//! to run beside Sentinel.
//!
//! The shard's calls are blocking; each runs on a blocking thread. Writes
//! (upserts, deletes, index creation, flushes) take one lock, because the
//! shard's own flush insists on finding its write-ahead log free. Searches
//! take none. Every write is in the shard's write-ahead log before the call
//! returns, so a killed process loses nothing the index acknowledged; the
//! log is replayed when the shard is opened again.
//!
//! The directory is locked while it is open: a second process (or a second
//! index in this one) is refused, as two writers would corrupt the shard.
//!
//! A shard searches its fresh points by scanning them; once enough have
//! accumulated ([`OPTIMIZE_EVERY`]), it is optimised in the background,
//! which builds the HNSW graph over them.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use nodes::memory::Remembered;
use qdrant_edge::external::ordered_float::OrderedFloat;
use qdrant_edge::{
    Condition, CountRequest, CreateIndex, Distance, EdgeConfigBuilder, EdgeShard, EdgeVectorParamsBuilder,
    FieldCondition, FieldIndexOperations, Filter, HasIdCondition, Match, NamedQuery, Payload, PayloadFieldSchema,
    PayloadSchemaType, PointId, PointInsertOperations, PointOperations, PointStructPersisted, QueryEnum, Range,
    SearchRequest, UpdateOperation, VectorPersisted, VectorStructPersisted, WithPayloadInterface, WithVector,
};
use uuid::Uuid;

use crate::index::{
    payload_from, payload_json, FieldKind, Hit, IndexError, Point, Search, VectorIndex, ENDED, INDEXED_FIELDS,
};

/// The name of the one dense vector each point has (the same in the Qdrant server's collection).
pub const VECTOR: &str = "incident";

/// Points written between two background optimisations.
pub const OPTIMIZE_EVERY: usize = 2_000;

pub struct EdgeIndex {
    shard: Arc<EdgeShard>,
    /// Held while the index is open: one process per directory.
    _lock: std::fs::File,
    dir: PathBuf,
    /// Held by every write: the shard's flush fails if its log is busy.
    writes: Arc<Mutex<()>>,
    written_since_optimize: Arc<AtomicUsize>,
    optimizing: Arc<AtomicBool>,
}

impl EdgeIndex {
    /// Opens the shard in `dir`, creating it (with `dimensions`-long cosine
    /// vectors) when the directory holds none.
    pub fn open(dir: &Path, dimensions: usize) -> Result<EdgeIndex, IndexError> {
        let refused = |what: &str, e: &dyn std::fmt::Display| {
            IndexError::Refused(format!("embedded index at {}: {what}: {e}", dir.display()))
        };
        std::fs::create_dir_all(dir).map_err(|e| refused("cannot create the directory", &e))?;
        // The shard is one process's: a second one writing it would corrupt it.
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(".sentinel.lock"))
            .map_err(|e| refused("cannot open its lock file", &e))?;
        if let Err(e) = fs4::FileExt::try_lock(&lock) {
            return Err(IndexError::Refused(format!(
                "embedded index at {} is in use by another process ({e}): the embedded index is one process's; \
                 several processes share a Qdrant server (QDRANT_URL)",
                dir.display()
            )));
        }
        let config = EdgeConfigBuilder::new()
            .vector(VECTOR, EdgeVectorParamsBuilder::new(dimensions, Distance::Cosine).build())
            .build();
        let existing = dir.join("edge_config.json").exists();
        let shard = if existing {
            EdgeShard::load(dir, None).map_err(|e| refused("cannot open it", &e))?
        } else {
            EdgeShard::new(dir, config).map_err(|e| refused("cannot create it", &e))?
        };
        {
            let cfg = shard.config();
            match cfg.vectors.get(VECTOR) {
                Some(v) if v.size == dimensions && v.distance == Distance::Cosine => {}
                Some(v) => {
                    return Err(IndexError::Refused(format!(
                        "embedded index at {} holds {}-dimension {:?} vectors, not {dimensions}-dimension cosine: \
                         move it away to start a new one",
                        dir.display(),
                        v.size,
                        v.distance
                    )))
                }
                None => {
                    return Err(IndexError::Refused(format!(
                        "embedded index at {} has no `{VECTOR}` vector: it was not made by Sentinel",
                        dir.display()
                    )))
                }
            }
        }
        Ok(EdgeIndex {
            shard: Arc::new(shard),
            _lock: lock,
            dir: dir.to_owned(),
            writes: Arc::new(Mutex::new(())),
            written_since_optimize: Arc::new(AtomicUsize::new(0)),
            optimizing: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Builds the HNSW graph over every point not yet indexed; blocks. The
    /// background optimisation does this on its own; a benchmark calls it
    /// before measuring.
    pub fn optimize(&self) -> Result<(), IndexError> {
        let _w = self.writes.lock().expect("writes lock");
        self.shard.optimize().map(|_| ()).map_err(|e| IndexError::Unavailable(format!("optimize: {e}")))
    }

    /// Runs `f` on a blocking thread with the shard, under the write lock.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&EdgeShard) -> Result<T, IndexError> + Send + 'static,
    ) -> Result<T, IndexError> {
        let (shard, writes) = (self.shard.clone(), self.writes.clone());
        tokio::task::spawn_blocking(move || {
            let _w = writes.lock().expect("writes lock");
            f(&shard)
        })
        .await
        .map_err(|e| IndexError::Unavailable(format!("embedded index task: {e}")))?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&EdgeShard) -> Result<T, IndexError> + Send + 'static,
    ) -> Result<T, IndexError> {
        let shard = self.shard.clone();
        tokio::task::spawn_blocking(move || f(&shard))
            .await
            .map_err(|e| IndexError::Unavailable(format!("embedded index task: {e}")))?
    }

    /// Starts a background optimisation when enough points were written
    /// since the last one and none is running.
    fn maybe_optimize(&self, written: usize) {
        let total = self.written_since_optimize.fetch_add(written, Ordering::Relaxed) + written;
        if total < OPTIMIZE_EVERY || self.optimizing.swap(true, Ordering::AcqRel) {
            return;
        }
        self.written_since_optimize.store(0, Ordering::Relaxed);
        let (shard, writes, running) = (self.shard.clone(), self.writes.clone(), self.optimizing.clone());
        tokio::task::spawn_blocking(move || {
            let _w = writes.lock().expect("writes lock");
            if let Err(e) = shard.optimize() {
                tracing::warn!(error = %e, "embedded vector index: optimisation failed; searches scan instead");
            }
            running.store(false, Ordering::Release);
        });
    }
}

fn op_err(what: &'static str) -> impl Fn(qdrant_edge::OperationError) -> IndexError {
    move |e| IndexError::Unavailable(format!("{what}: {e}"))
}

fn point_id(id: Uuid) -> PointId {
    PointId::Uuid(id)
}

fn uuid_of(id: &PointId) -> Result<Uuid, IndexError> {
    match id {
        PointId::Uuid(u) => Ok(*u),
        PointId::NumId(n) => Err(IndexError::Refused(format!("point {n} has a numeric id, not an incident's"))),
    }
}

fn payload_of(p: Option<Payload>) -> Result<Remembered, IndexError> {
    payload_from(p.ok_or_else(|| IndexError::Refused("a point came back without its payload".into()))?.0)
}

fn filter(search: &Search) -> Option<Filter> {
    let mut must = Vec::new();
    if !search.services.is_empty() {
        must.push(Condition::Field(FieldCondition::new_match(
            "service".try_into().expect("a plain key"),
            Match::from(search.services.clone()),
        )));
    }
    if !search.statuses.is_empty() {
        let statuses: Vec<String> = search.statuses.iter().map(|s| s.as_str().to_owned()).collect();
        must.push(Condition::Field(FieldCondition::new_match(
            "status".try_into().expect("a plain key"),
            Match::from(statuses),
        )));
    }
    if let Some(since) = search.opened_since {
        must.push(Condition::Field(FieldCondition::new_range(
            "opened_at".try_into().expect("a plain key"),
            Range { gte: Some(OrderedFloat(since as f64)), lt: None, gt: None, lte: None },
        )));
    }
    let must_not =
        search.except.map(|id| vec![Condition::HasId(std::iter::once(point_id(id)).collect::<HasIdCondition>())]);
    (!must.is_empty() || must_not.is_some()).then(|| Filter {
        should: None,
        min_should: None,
        must: (!must.is_empty()).then_some(must),
        must_not,
    })
}

#[async_trait]
impl VectorIndex for EdgeIndex {
    fn describe(&self) -> String {
        format!("embedded Qdrant engine at {}", self.dir.display())
    }

    async fn ensure(&self, dimensions: usize) -> Result<(), IndexError> {
        let size = self.shard.config().vectors.get(VECTOR).map(|v| v.size);
        if size != Some(dimensions) {
            return Err(IndexError::Refused(format!(
                "embedded index at {} holds vectors of size {size:?}, not {dimensions}",
                self.dir.display()
            )));
        }
        self.write(|shard| {
            let existing = shard.info().payload_schema;
            for (field, kind) in INDEXED_FIELDS {
                let key = (*field).try_into().expect("a plain key");
                if existing.contains_key(&key) {
                    continue;
                }
                let schema = match kind {
                    FieldKind::Keyword => PayloadSchemaType::Keyword,
                    FieldKind::Integer => PayloadSchemaType::Integer,
                };
                shard
                    .update(UpdateOperation::FieldIndexOperation(FieldIndexOperations::CreateIndex(CreateIndex {
                        field_name: key,
                        field_schema: Some(PayloadFieldSchema::FieldType(schema)),
                    })))
                    .map_err(op_err("create payload index"))?;
            }
            Ok(())
        })
        .await
    }

    async fn upsert(&self, points: Vec<Point>) -> Result<(), IndexError> {
        let n = points.len();
        let persisted = points
            .into_iter()
            .map(|p| {
                Ok(PointStructPersisted {
                    id: point_id(p.id),
                    vector: VectorStructPersisted::Named(
                        [(VECTOR.to_owned(), VectorPersisted::Dense(p.vector))].into_iter().collect(),
                    ),
                    payload: Some(Payload(payload_json(&p.payload)?)),
                })
            })
            .collect::<Result<Vec<_>, IndexError>>()?;
        self.write(move |shard| {
            shard
                .update(UpdateOperation::PointOperation(PointOperations::UpsertPoints(
                    PointInsertOperations::PointsList(persisted),
                )))
                .map_err(op_err("upsert"))
        })
        .await?;
        self.maybe_optimize(n);
        Ok(())
    }

    async fn search(&self, search: &Search) -> Result<Vec<Hit>, IndexError> {
        let request = SearchRequest {
            query: QueryEnum::Nearest(NamedQuery { query: search.vector.clone().into(), using: Some(VECTOR.into()) }),
            filter: filter(search),
            params: None,
            limit: search.limit,
            offset: 0,
            with_payload: Some(WithPayloadInterface::Bool(true)),
            with_vector: Some(WithVector::Bool(false)),
            score_threshold: None,
        };
        let found = self.read(move |shard| shard.search(request).map_err(op_err("search"))).await?;
        found
            .into_iter()
            .map(|p| Ok(Hit { id: uuid_of(&p.id)?, score: p.score, payload: payload_of(p.payload)? }))
            .collect()
    }

    async fn get(&self, id: Uuid) -> Result<Option<Remembered>, IndexError> {
        let found = self
            .read(move |shard| {
                shard
                    .retrieve(&[point_id(id)], Some(WithPayloadInterface::Bool(true)), Some(WithVector::Bool(false)))
                    .map_err(op_err("retrieve"))
            })
            .await?;
        found.into_iter().next().map(|r| payload_of(r.payload)).transpose()
    }

    async fn delete(&self, ids: &[Uuid]) -> Result<(), IndexError> {
        let ids: Vec<PointId> = ids.iter().copied().map(point_id).collect();
        self.write(move |shard| {
            shard
                .update(UpdateOperation::PointOperation(PointOperations::DeletePoints { ids }))
                .map_err(op_err("delete"))
        })
        .await
    }

    async fn delete_ended_before(&self, before: i64) -> Result<(), IndexError> {
        let ended: Vec<String> = ENDED.iter().map(|s| s.as_str().to_owned()).collect();
        let filter = Filter {
            should: None,
            min_should: None,
            must: Some(vec![
                Condition::Field(FieldCondition::new_match(
                    "status".try_into().expect("a plain key"),
                    Match::from(ended),
                )),
                Condition::Field(FieldCondition::new_range(
                    "resolved_at".try_into().expect("a plain key"),
                    Range { lt: Some(OrderedFloat(before as f64)), gt: None, gte: None, lte: None },
                )),
            ]),
            must_not: None,
        };
        self.write(move |shard| {
            shard
                .update(UpdateOperation::PointOperation(PointOperations::DeletePointsByFilter(filter)))
                .map_err(op_err("delete by filter"))
        })
        .await
    }

    async fn count(&self) -> Result<u64, IndexError> {
        self.read(|shard| {
            shard.count(CountRequest { filter: None, exact: true }).map(|n| n as u64).map_err(op_err("count"))
        })
        .await
    }
}
