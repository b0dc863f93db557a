//! A Qdrant server as the vector index (`QDRANT_URL`), through `qdrant-client`
//! over gRPC: for several Sentinel processes sharing one memory.
//!
//! On [`ensure`](VectorIndex::ensure) the collection is created with one
//! named cosine vector ([`crate::edge::VECTOR`]) of the embedder's size and
//! the payload indexes of [`INDEXED_FIELDS`]; an existing collection with
//! another size or distance is refused rather than written into. Writes wait
//! for the server to apply them.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use nodes::memory::Remembered;
use qdrant_client::qdrant::point_id::PointIdOptions;
use qdrant_client::qdrant::points_selector::PointsSelectorOneOf;
use qdrant_client::qdrant::vectors_config::Config as VectorsConfigKind;
use qdrant_client::qdrant::{
    CollectionExistsRequest, Condition, CountPoints, CreateCollection, CreateFieldIndexCollection, DeletePoints,
    Distance, FieldType, Filter, GetCollectionInfoRequest, GetPoints, PointId, PointStruct, PointsIdsList,
    PointsSelector, Query, QueryPoints, Range, UpsertPoints, VectorParams, VectorParamsMap, VectorsConfig,
    WithPayloadSelector,
};
use qdrant_client::{Payload, Qdrant, QdrantError};
use uuid::Uuid;

use crate::edge::VECTOR;
use crate::index::{
    payload_from, payload_json, FieldKind, Hit, IndexError, Point, Search, VectorIndex, ENDED, INDEXED_FIELDS,
};

/// The collection Sentinel keeps its incidents in, unless told otherwise.
pub const COLLECTION: &str = "sentinel_incidents";

pub struct QdrantIndex {
    client: Qdrant,
    url: String,
    collection: String,
}

impl QdrantIndex {
    /// A client for the server at `url` (gRPC, usually port 6334). Connects
    /// lazily: an unreachable server shows at the first call.
    pub fn new(url: &str, collection: &str, api_key: Option<String>) -> Result<QdrantIndex, IndexError> {
        let client = Qdrant::from_url(url)
            .api_key(api_key)
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5))
            .skip_compatibility_check()
            .build()
            .map_err(|e| IndexError::Refused(format!("Qdrant at {url}: {e}")))?;
        Ok(QdrantIndex { client, url: url.to_owned(), collection: collection.to_owned() })
    }
}

/// A transport failure or a server that is away is worth retrying (the
/// client reports a connection it could not make as `INTERNAL`); a request
/// the server refused is not.
fn client_err(what: &'static str) -> impl Fn(QdrantError) -> IndexError {
    move |e| match &e {
        QdrantError::ResponseError { status }
            if matches!(
                status.code(),
                tonic::Code::Unavailable
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::Unknown
                    | tonic::Code::Aborted
                    | tonic::Code::Internal
                    | tonic::Code::ResourceExhausted
            ) =>
        {
            IndexError::Unavailable(format!("{what}: {e}"))
        }
        QdrantError::ResponseError { .. } => IndexError::Refused(format!("{what}: {e}")),
        _ => IndexError::Unavailable(format!("{what}: {e}")),
    }
}

fn point_id(id: Uuid) -> PointId {
    PointId { point_id_options: Some(PointIdOptions::Uuid(id.to_string())) }
}

fn uuid_of(id: Option<PointId>) -> Result<Uuid, IndexError> {
    match id.and_then(|p| p.point_id_options) {
        Some(PointIdOptions::Uuid(s)) => {
            s.parse().map_err(|e| IndexError::Refused(format!("point id `{s}` is not a UUID: {e}")))
        }
        other => Err(IndexError::Refused(format!("a point came back with id {other:?}, not an incident's"))),
    }
}

fn payload_of(map: HashMap<String, qdrant_client::qdrant::Value>) -> Result<Remembered, IndexError> {
    match serde_json::Value::from(Payload::from(map)) {
        serde_json::Value::Object(m) => payload_from(m),
        other => Err(IndexError::Refused(format!("a payload came back as {other}"))),
    }
}

fn with_payload() -> Option<WithPayloadSelector> {
    Some(true.into())
}

/// The search's filters as a Qdrant filter: every given one must hold.
pub fn filter(search: &Search) -> Option<Filter> {
    let mut must = Vec::new();
    if !search.services.is_empty() {
        must.push(Condition::matches("service", search.services.clone()));
    }
    if !search.statuses.is_empty() {
        must.push(Condition::matches(
            "status",
            search.statuses.iter().map(|s| s.as_str().to_owned()).collect::<Vec<_>>(),
        ));
    }
    if let Some(since) = search.opened_since {
        must.push(Condition::range("opened_at", Range { gte: Some(since as f64), ..Range::default() }));
    }
    let must_not: Vec<Condition> = search.except.map(|id| Condition::has_id([point_id(id)])).into_iter().collect();
    (!must.is_empty() || !must_not.is_empty()).then(|| Filter { must, must_not, ..Filter::default() })
}

#[async_trait]
impl VectorIndex for QdrantIndex {
    fn describe(&self) -> String {
        format!("Qdrant at {} (collection {})", self.url, self.collection)
    }

    async fn ensure(&self, dimensions: usize) -> Result<(), IndexError> {
        let exists = self
            .client
            .collection_exists(CollectionExistsRequest { collection_name: self.collection.clone() })
            .await
            .map_err(client_err("collection exists"))?;
        if !exists {
            let params =
                VectorParams { size: dimensions as u64, distance: Distance::Cosine as i32, ..VectorParams::default() };
            let vectors = VectorsConfig {
                config: Some(VectorsConfigKind::ParamsMap(VectorParamsMap {
                    map: [(VECTOR.to_owned(), params)].into_iter().collect(),
                })),
            };
            let created = self
                .client
                .create_collection(CreateCollection {
                    collection_name: self.collection.clone(),
                    vectors_config: Some(vectors),
                    ..CreateCollection::default()
                })
                .await;
            // Another process may have created it since: then it is checked below like any.
            if let Err(e) = created {
                tracing::info!(error = %e, "create collection refused; checking the existing one");
            }
        }
        let info = self
            .client
            .collection_info(GetCollectionInfoRequest { collection_name: self.collection.clone() })
            .await
            .map_err(client_err("collection info"))?
            .result
            .ok_or_else(|| IndexError::Refused("collection info came back empty".into()))?;
        let vector =
            info.config.and_then(|c| c.params).and_then(|p| p.vectors_config).and_then(|v| v.config).and_then(|c| {
                match c {
                    VectorsConfigKind::ParamsMap(m) => m.map.get(VECTOR).cloned(),
                    VectorsConfigKind::Params(_) => None,
                }
            });
        match vector {
            Some(v) if v.size == dimensions as u64 && v.distance == Distance::Cosine as i32 => {}
            Some(v) => {
                return Err(IndexError::Refused(format!(
                    "collection {} holds {}-dimension vectors with distance {} under `{VECTOR}`, \
                     not {dimensions}-dimension cosine",
                    self.collection, v.size, v.distance
                )))
            }
            None => {
                return Err(IndexError::Refused(format!(
                    "collection {} has no `{VECTOR}` vector: it was not made by Sentinel",
                    self.collection
                )))
            }
        }
        for (field, kind) in INDEXED_FIELDS {
            if info.payload_schema.contains_key(*field) {
                continue;
            }
            let field_type = match kind {
                FieldKind::Keyword => FieldType::Keyword,
                FieldKind::Integer => FieldType::Integer,
            };
            self.client
                .create_field_index(CreateFieldIndexCollection {
                    collection_name: self.collection.clone(),
                    wait: Some(true),
                    field_name: (*field).to_owned(),
                    field_type: Some(field_type as i32),
                    ..CreateFieldIndexCollection::default()
                })
                .await
                .map_err(client_err("create payload index"))?;
        }
        Ok(())
    }

    async fn upsert(&self, points: Vec<Point>) -> Result<(), IndexError> {
        let points = points
            .into_iter()
            .map(|p| {
                let payload = Payload::from(payload_json(&p.payload)?);
                let vectors: HashMap<String, Vec<f32>> = [(VECTOR.to_owned(), p.vector)].into_iter().collect();
                Ok(PointStruct { id: Some(point_id(p.id)), payload: payload.into(), vectors: Some(vectors.into()) })
            })
            .collect::<Result<Vec<_>, IndexError>>()?;
        self.client
            .upsert_points(UpsertPoints {
                collection_name: self.collection.clone(),
                wait: Some(true),
                points,
                ..UpsertPoints::default()
            })
            .await
            .map_err(client_err("upsert"))?;
        Ok(())
    }

    async fn search(&self, search: &Search) -> Result<Vec<Hit>, IndexError> {
        let found = self
            .client
            .query(QueryPoints {
                collection_name: self.collection.clone(),
                query: Some(Query::new_nearest(search.vector.clone())),
                using: Some(VECTOR.to_owned()),
                filter: filter(search),
                limit: Some(search.limit as u64),
                with_payload: with_payload(),
                ..QueryPoints::default()
            })
            .await
            .map_err(client_err("query"))?;
        found
            .result
            .into_iter()
            .map(|p| Ok(Hit { id: uuid_of(p.id)?, score: p.score, payload: payload_of(p.payload)? }))
            .collect()
    }

    async fn get(&self, id: Uuid) -> Result<Option<Remembered>, IndexError> {
        let found = self
            .client
            .get_points(GetPoints {
                collection_name: self.collection.clone(),
                ids: vec![point_id(id)],
                with_payload: with_payload(),
                ..GetPoints::default()
            })
            .await
            .map_err(client_err("get"))?;
        found.result.into_iter().next().map(|p| payload_of(p.payload)).transpose()
    }

    async fn delete(&self, ids: &[Uuid]) -> Result<(), IndexError> {
        if ids.is_empty() {
            return Ok(());
        }
        self.client
            .delete_points(DeletePoints {
                collection_name: self.collection.clone(),
                wait: Some(true),
                points: Some(PointsSelector {
                    points_selector_one_of: Some(PointsSelectorOneOf::Points(PointsIdsList {
                        ids: ids.iter().copied().map(point_id).collect(),
                    })),
                }),
                ..DeletePoints::default()
            })
            .await
            .map_err(client_err("delete"))?;
        Ok(())
    }

    async fn delete_ended_before(&self, before: i64) -> Result<(), IndexError> {
        let ended: Vec<String> = ENDED.iter().map(|s| s.as_str().to_owned()).collect();
        let filter = Filter {
            must: vec![
                Condition::matches("status", ended),
                Condition::range("resolved_at", Range { lt: Some(before as f64), ..Range::default() }),
            ],
            ..Filter::default()
        };
        self.client
            .delete_points(DeletePoints {
                collection_name: self.collection.clone(),
                wait: Some(true),
                points: Some(PointsSelector { points_selector_one_of: Some(PointsSelectorOneOf::Filter(filter)) }),
                ..DeletePoints::default()
            })
            .await
            .map_err(client_err("delete by filter"))?;
        Ok(())
    }

    async fn count(&self) -> Result<u64, IndexError> {
        let counted = self
            .client
            .count(CountPoints {
                collection_name: self.collection.clone(),
                exact: Some(true),
                ..CountPoints::default()
            })
            .await
            .map_err(client_err("count"))?;
        Ok(counted.result.map(|r| r.count).unwrap_or(0))
    }
}
