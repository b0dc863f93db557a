//! A Qdrant server for the client adapter's tests: the Qdrant gRPC services
//! (`qdrant-client`'s generated server traits) on a local port, answering
//! the calls the adapter makes from the embedded engine ([`EdgeIndex`]) and
//! recording every request so a test can assert exactly what was sent.
//!
//! It understands the requests Sentinel's adapter sends and nothing more:
//! a filter of another shape, a point without the named vector, any other
//! RPC, is answered `INVALID_ARGUMENT` or `UNIMPLEMENTED`.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use ::qdrant_client::qdrant::collections_server::{Collections, CollectionsServer};
use ::qdrant_client::qdrant::condition::ConditionOneOf;
use ::qdrant_client::qdrant::points_selector::PointsSelectorOneOf;
use ::qdrant_client::qdrant::points_server::{Points, PointsServer};
use ::qdrant_client::qdrant::qdrant_server::{Qdrant, QdrantServer};
use ::qdrant_client::qdrant::r#match::MatchValue;
use ::qdrant_client::qdrant::vectors_config::Config as VectorsConfigKind;
use ::qdrant_client::qdrant::*;
use ::qdrant_client::Payload;
use memory::edge::{EdgeIndex, VECTOR};
use memory::index::{Point, Search, VectorIndex};
use nodes::memory::{Remembered, Status};
use tonic::{Request, Response, Status as RpcStatus};
use uuid::Uuid;

/// One request the server received: the RPC's name and the message.
#[derive(Clone, Debug)]
pub enum Received {
    CollectionExists(CollectionExistsRequest),
    CreateCollection(CreateCollection),
    CollectionInfo(GetCollectionInfoRequest),
    CreateFieldIndex(CreateFieldIndexCollection),
    Upsert(UpsertPoints),
    Query(QueryPoints),
    Get(GetPoints),
    Delete(DeletePoints),
    Count(CountPoints),
    HealthCheck,
}

struct Collection {
    name: String,
    params: VectorParams,
    index: Arc<EdgeIndex>,
    payload_indexes: HashMap<String, i32>,
}

#[derive(Clone)]
pub struct FakeQdrant {
    inner: Arc<Inner>,
}

struct Inner {
    received: Mutex<Vec<Received>>,
    collection: Mutex<Option<Arc<Mutex<Collection>>>>,
    /// When set, every data RPC answers UNAVAILABLE (a server that went away).
    down: std::sync::atomic::AtomicBool,
    /// Last: dropped after the collection's shard, which flushes into it.
    dir: tempfile::TempDir,
}

impl FakeQdrant {
    /// Serves on a free local port; returns the server and its `http://` URL.
    pub async fn start() -> (FakeQdrant, String) {
        let fake = FakeQdrant {
            inner: Arc::new(Inner {
                received: Mutex::new(Vec::new()),
                collection: Mutex::new(None),
                down: std::sync::atomic::AtomicBool::new(false),
                dir: tempfile::tempdir().expect("temp dir"),
            }),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let router = tonic::transport::Server::builder()
            .add_service(CollectionsServer::new(fake.clone()))
            .add_service(PointsServer::new(fake.clone()))
            .add_service(QdrantServer::new(fake.clone()));
        tokio::spawn(async move { router.serve_with_incoming(incoming).await.expect("fake Qdrant serves") });
        (fake, format!("http://{addr}"))
    }

    /// Every request so far, in order; clears the record.
    pub fn take(&self) -> Vec<Received> {
        std::mem::take(&mut *self.inner.received.lock().expect("lock"))
    }

    pub fn set_down(&self, down: bool) {
        self.inner.down.store(down, std::sync::atomic::Ordering::SeqCst);
    }

    fn record(&self, r: Received) -> Result<(), RpcStatus> {
        self.inner.received.lock().expect("lock").push(r);
        if self.inner.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(RpcStatus::unavailable("the fake server is down"));
        }
        Ok(())
    }

    fn collection(&self, name: &str) -> Result<Arc<Mutex<Collection>>, RpcStatus> {
        let c = self.inner.collection.lock().expect("lock").clone();
        match c {
            Some(c) if c.lock().expect("lock").name == name => Ok(c),
            _ => Err(RpcStatus::not_found(format!("Collection `{name}` doesn't exist!"))),
        }
    }

    fn index(&self, name: &str) -> Result<Arc<EdgeIndex>, RpcStatus> {
        Ok(self.collection(name)?.lock().expect("lock").index.clone())
    }
}

fn invalid(what: impl Into<String>) -> RpcStatus {
    RpcStatus::invalid_argument(what.into())
}

fn internal(e: impl std::fmt::Display) -> RpcStatus {
    RpcStatus::internal(e.to_string())
}

fn uuid_of(id: &PointId) -> Result<Uuid, RpcStatus> {
    match &id.point_id_options {
        Some(point_id::PointIdOptions::Uuid(s)) => s.parse().map_err(|_| invalid(format!("bad uuid {s}"))),
        other => Err(invalid(format!("expected a UUID point id, got {other:?}"))),
    }
}

fn point_id(id: Uuid) -> PointId {
    PointId { point_id_options: Some(point_id::PointIdOptions::Uuid(id.to_string())) }
}

fn json_payload(map: HashMap<String, Value>) -> Result<Remembered, RpcStatus> {
    serde_json::from_value(serde_json::Value::from(Payload::from(map)))
        .map_err(|e| invalid(format!("payload is not an incident: {e}")))
}

fn grpc_payload(r: &Remembered) -> HashMap<String, Value> {
    let v = serde_json::to_value(r).expect("serialises");
    Payload::try_from(v).expect("an object").into()
}

#[allow(deprecated)]
fn dense(v: &Vector) -> Vec<f32> {
    match &v.vector {
        Some(vector::Vector::Dense(d)) => d.data.clone(),
        _ => v.data.clone(),
    }
}

fn ok_update() -> Response<PointsOperationResponse> {
    Response::new(PointsOperationResponse {
        result: Some(UpdateResult { operation_id: Some(1), status: UpdateStatus::Completed as i32 }),
        ..Default::default()
    })
}

/// The adapter's filter back into a search: exactly the shapes it sends.
fn search_of(filter: Option<Filter>) -> Result<Search, RpcStatus> {
    let mut s = Search::default();
    let Some(f) = filter else { return Ok(s) };
    if !f.should.is_empty() || f.min_should.is_some() {
        return Err(invalid("unexpected `should` in the filter"));
    }
    for c in f.must {
        let Some(ConditionOneOf::Field(fc)) = c.condition_one_of else {
            return Err(invalid("a `must` condition that is not a field condition"));
        };
        match (fc.key.as_str(), fc.r#match.and_then(|m| m.match_value), fc.range) {
            ("service", Some(MatchValue::Keywords(k)), None) => s.services = k.strings,
            ("status", Some(MatchValue::Keywords(k)), None) => {
                s.statuses = k
                    .strings
                    .iter()
                    .map(|x| serde_json::from_value::<Status>(serde_json::Value::String(x.clone())))
                    .collect::<Result<_, _>>()
                    .map_err(|e| invalid(format!("status: {e}")))?
            }
            ("opened_at", None, Some(r)) if r.gt.is_none() && r.lt.is_none() && r.lte.is_none() => {
                s.opened_since = r.gte.map(|x| x as i64)
            }
            (key, m, r) => return Err(invalid(format!("unexpected condition on `{key}`: {m:?} {r:?}"))),
        }
    }
    for c in f.must_not {
        match c.condition_one_of {
            Some(ConditionOneOf::HasId(h)) if h.has_id.len() == 1 => s.except = Some(uuid_of(&h.has_id[0])?),
            other => return Err(invalid(format!("unexpected `must_not`: {other:?}"))),
        }
    }
    Ok(s)
}

/// The adapter's retention filter: ended statuses, and `resolved_at < t`.
fn ended_before(f: Filter) -> Result<i64, RpcStatus> {
    let ended: BTreeSet<String> = memory::index::ENDED.iter().map(|s| s.as_str().to_owned()).collect();
    let (mut statuses, mut before) = (None, None);
    for c in f.must {
        let Some(ConditionOneOf::Field(fc)) = c.condition_one_of else {
            return Err(invalid("a `must` condition that is not a field condition"));
        };
        match (fc.key.as_str(), fc.r#match.and_then(|m| m.match_value), fc.range) {
            ("status", Some(MatchValue::Keywords(k)), None) => statuses = Some(k.strings.into_iter().collect()),
            ("resolved_at", None, Some(r)) if r.gt.is_none() && r.gte.is_none() && r.lte.is_none() => {
                before = r.lt.map(|x| x as i64)
            }
            (key, m, r) => return Err(invalid(format!("unexpected condition on `{key}`: {m:?} {r:?}"))),
        }
    }
    if statuses.as_ref() != Some(&ended) || !f.must_not.is_empty() || !f.should.is_empty() {
        return Err(invalid(format!("expected ended statuses {ended:?}, got {statuses:?}")));
    }
    before.ok_or_else(|| invalid("expected resolved_at < t"))
}

/// RPCs this server does not serve. Written out as `async_trait` would
/// expand them: the attribute does not see into a macro's output.
macro_rules! unimplemented_rpcs {
    ($($name:ident($req:ident) -> $resp:ident;)*) => {
        $(
            fn $name<'life0, 'async_trait>(
                &'life0 self,
                _: Request<$req>,
            ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response<$resp>, RpcStatus>> + Send + 'async_trait>>
            where
                'life0: 'async_trait,
                Self: 'async_trait,
            {
                Box::pin(async {
                    Err(RpcStatus::unimplemented(concat!(stringify!($name), " is not served by the fake Qdrant")))
                })
            }
        )*
    };
}

#[tonic::async_trait]
impl Qdrant for FakeQdrant {
    async fn health_check(&self, _: Request<HealthCheckRequest>) -> Result<Response<HealthCheckReply>, RpcStatus> {
        self.record(Received::HealthCheck)?;
        Ok(Response::new(HealthCheckReply { title: "fake qdrant".into(), version: "1.15.0".into(), commit: None }))
    }
}

#[tonic::async_trait]
impl Collections for FakeQdrant {
    async fn collection_exists(
        &self,
        r: Request<CollectionExistsRequest>,
    ) -> Result<Response<CollectionExistsResponse>, RpcStatus> {
        let r = r.into_inner();
        self.record(Received::CollectionExists(r.clone()))?;
        let exists = self.collection(&r.collection_name).is_ok();
        Ok(Response::new(CollectionExistsResponse { result: Some(CollectionExists { exists }), time: 0.0 }))
    }

    async fn create(&self, r: Request<CreateCollection>) -> Result<Response<CollectionOperationResponse>, RpcStatus> {
        let r = r.into_inner();
        self.record(Received::CreateCollection(r.clone()))?;
        if self.collection(&r.collection_name).is_ok() {
            return Err(RpcStatus::already_exists(format!("Collection `{}` already exists!", r.collection_name)));
        }
        let params = match r.vectors_config.and_then(|v| v.config) {
            Some(VectorsConfigKind::ParamsMap(m)) if m.map.len() == 1 && m.map.contains_key(VECTOR) => m.map[VECTOR],
            other => return Err(invalid(format!("expected one named vector `{VECTOR}`, got {other:?}"))),
        };
        if params.distance != Distance::Cosine as i32 {
            return Err(invalid("this fake serves cosine distance only"));
        }
        let dir = self.inner.dir.path().join(&r.collection_name);
        let index = EdgeIndex::open(&dir, params.size as usize).map_err(internal)?;
        let c = Collection { name: r.collection_name, params, index: Arc::new(index), payload_indexes: HashMap::new() };
        *self.inner.collection.lock().expect("lock") = Some(Arc::new(Mutex::new(c)));
        Ok(Response::new(CollectionOperationResponse { result: true, time: 0.0 }))
    }

    async fn get(
        &self,
        r: Request<GetCollectionInfoRequest>,
    ) -> Result<Response<GetCollectionInfoResponse>, RpcStatus> {
        let r = r.into_inner();
        self.record(Received::CollectionInfo(r.clone()))?;
        let c = self.collection(&r.collection_name)?;
        let c = c.lock().expect("lock");
        let vectors = VectorsConfig {
            config: Some(VectorsConfigKind::ParamsMap(VectorParamsMap {
                map: [(VECTOR.to_owned(), c.params)].into_iter().collect(),
            })),
        };
        let payload_schema = c
            .payload_indexes
            .iter()
            .map(|(k, t)| (k.clone(), PayloadSchemaInfo { data_type: *t, ..Default::default() }))
            .collect();
        Ok(Response::new(GetCollectionInfoResponse {
            result: Some(CollectionInfo {
                status: CollectionStatus::Green as i32,
                config: Some(CollectionConfig {
                    params: Some(CollectionParams { vectors_config: Some(vectors), ..Default::default() }),
                    ..Default::default()
                }),
                payload_schema,
                ..Default::default()
            }),
            time: 0.0,
        }))
    }

    unimplemented_rpcs! {
        list(ListCollectionsRequest) -> ListCollectionsResponse;
        update(UpdateCollection) -> CollectionOperationResponse;
        delete(DeleteCollection) -> CollectionOperationResponse;
        update_aliases(ChangeAliases) -> CollectionOperationResponse;
        list_collection_aliases(ListCollectionAliasesRequest) -> ListAliasesResponse;
        list_aliases(ListAliasesRequest) -> ListAliasesResponse;
        collection_cluster_info(CollectionClusterInfoRequest) -> CollectionClusterInfoResponse;
        update_collection_cluster_setup(UpdateCollectionClusterSetupRequest) -> UpdateCollectionClusterSetupResponse;
        create_shard_key(CreateShardKeyRequest) -> CreateShardKeyResponse;
        delete_shard_key(DeleteShardKeyRequest) -> DeleteShardKeyResponse;
        list_shard_keys(ListShardKeysRequest) -> ListShardKeysResponse;
    }
}

#[tonic::async_trait]
impl Points for FakeQdrant {
    async fn create_field_index(
        &self,
        r: Request<CreateFieldIndexCollection>,
    ) -> Result<Response<PointsOperationResponse>, RpcStatus> {
        let r = r.into_inner();
        self.record(Received::CreateFieldIndex(r.clone()))?;
        let c = self.collection(&r.collection_name)?;
        let t = r.field_type.ok_or_else(|| invalid("field_type is required"))?;
        let schema = match FieldType::try_from(t) {
            Ok(FieldType::Keyword) => PayloadSchemaType::Keyword,
            Ok(FieldType::Integer) => PayloadSchemaType::Integer,
            other => return Err(invalid(format!("unexpected field type {other:?}"))),
        };
        c.lock().expect("lock").payload_indexes.insert(r.field_name, schema as i32);
        Ok(ok_update())
    }

    async fn upsert(&self, r: Request<UpsertPoints>) -> Result<Response<PointsOperationResponse>, RpcStatus> {
        let r = r.into_inner();
        self.record(Received::Upsert(r.clone()))?;
        let index = self.index(&r.collection_name)?;
        let mut points = Vec::new();
        for p in r.points {
            let id = uuid_of(p.id.as_ref().ok_or_else(|| invalid("a point without an id"))?)?;
            let vector = match p.vectors.and_then(|v| v.vectors_options) {
                Some(vectors::VectorsOptions::Vectors(named)) => {
                    named.vectors.get(VECTOR).map(dense).ok_or_else(|| invalid(format!("no `{VECTOR}` vector")))?
                }
                other => return Err(invalid(format!("expected named vectors, got {other:?}"))),
            };
            points.push(Point { id, vector, payload: json_payload(p.payload)? });
        }
        index.upsert(points).await.map_err(internal)?;
        Ok(ok_update())
    }

    async fn query(&self, r: Request<QueryPoints>) -> Result<Response<QueryResponse>, RpcStatus> {
        let r = r.into_inner();
        self.record(Received::Query(r.clone()))?;
        let index = self.index(&r.collection_name)?;
        if r.using.as_deref() != Some(VECTOR) {
            return Err(invalid(format!("expected using = `{VECTOR}`, got {:?}", r.using)));
        }
        let vector = match r.query.and_then(|q| q.variant) {
            Some(query::Variant::Nearest(VectorInput { variant: Some(vector_input::Variant::Dense(d)) })) => d.data,
            other => return Err(invalid(format!("expected a nearest dense query, got {other:?}"))),
        };
        let mut search = search_of(r.filter)?;
        search.vector = vector;
        search.limit = r.limit.ok_or_else(|| invalid("limit is required"))? as usize;
        let hits = index.search(&search).await.map_err(internal)?;
        let result = hits
            .into_iter()
            .map(|h| ScoredPoint {
                id: Some(point_id(h.id)),
                payload: grpc_payload(&h.payload),
                score: h.score,
                ..Default::default()
            })
            .collect();
        Ok(Response::new(QueryResponse { result, ..Default::default() }))
    }

    async fn get(&self, r: Request<GetPoints>) -> Result<Response<GetResponse>, RpcStatus> {
        let r = r.into_inner();
        self.record(Received::Get(r.clone()))?;
        let index = self.index(&r.collection_name)?;
        let mut result = Vec::new();
        for id in &r.ids {
            let id = uuid_of(id)?;
            if let Some(p) = index.get(id).await.map_err(internal)? {
                result.push(RetrievedPoint { id: Some(point_id(id)), payload: grpc_payload(&p), ..Default::default() });
            }
        }
        Ok(Response::new(GetResponse { result, ..Default::default() }))
    }

    async fn delete(&self, r: Request<DeletePoints>) -> Result<Response<PointsOperationResponse>, RpcStatus> {
        let r = r.into_inner();
        self.record(Received::Delete(r.clone()))?;
        let index = self.index(&r.collection_name)?;
        match r.points.and_then(|p| p.points_selector_one_of) {
            Some(PointsSelectorOneOf::Points(list)) => {
                let ids = list.ids.iter().map(uuid_of).collect::<Result<Vec<_>, _>>()?;
                index.delete(&ids).await.map_err(internal)?;
            }
            Some(PointsSelectorOneOf::Filter(f)) => {
                index.delete_ended_before(ended_before(f)?).await.map_err(internal)?;
            }
            None => return Err(invalid("nothing selected")),
        }
        Ok(ok_update())
    }

    async fn count(&self, r: Request<CountPoints>) -> Result<Response<CountResponse>, RpcStatus> {
        let r = r.into_inner();
        self.record(Received::Count(r.clone()))?;
        let index = self.index(&r.collection_name)?;
        let count = index.count().await.map_err(internal)?;
        Ok(Response::new(CountResponse { result: Some(CountResult { count }), ..Default::default() }))
    }

    unimplemented_rpcs! {
        update_vectors(UpdatePointVectors) -> PointsOperationResponse;
        delete_vectors(DeletePointVectors) -> PointsOperationResponse;
        set_payload(SetPayloadPoints) -> PointsOperationResponse;
        overwrite_payload(SetPayloadPoints) -> PointsOperationResponse;
        delete_payload(DeletePayloadPoints) -> PointsOperationResponse;
        clear_payload(ClearPayloadPoints) -> PointsOperationResponse;
        delete_field_index(DeleteFieldIndexCollection) -> PointsOperationResponse;
        create_vector_name(CreateVectorNameRequest) -> PointsOperationResponse;
        delete_vector_name(DeleteVectorNameRequest) -> PointsOperationResponse;
        search(SearchPoints) -> SearchResponse;
        search_batch(SearchBatchPoints) -> SearchBatchResponse;
        search_groups(SearchPointGroups) -> SearchGroupsResponse;
        scroll(ScrollPoints) -> ScrollResponse;
        recommend(RecommendPoints) -> RecommendResponse;
        recommend_batch(RecommendBatchPoints) -> RecommendBatchResponse;
        recommend_groups(RecommendPointGroups) -> RecommendGroupsResponse;
        discover(DiscoverPoints) -> DiscoverResponse;
        discover_batch(DiscoverBatchPoints) -> DiscoverBatchResponse;
        update_batch(UpdateBatchPoints) -> UpdateBatchResponse;
        query_batch(QueryBatchPoints) -> QueryBatchResponse;
        query_groups(QueryPointGroups) -> QueryGroupsResponse;
        facet(FacetCounts) -> FacetResponse;
        search_matrix_pairs(SearchMatrixPoints) -> SearchMatrixPairsResponse;
        search_matrix_offsets(SearchMatrixPoints) -> SearchMatrixOffsetsResponse;
    }
}

/// Names of the payload fields a collection has an index on, for assertions.
pub fn indexed_fields(requests: &[Received]) -> BTreeSet<(String, i32)> {
    requests
        .iter()
        .filter_map(|r| match r {
            Received::CreateFieldIndex(c) => Some((c.field_name.clone(), c.field_type.unwrap_or(-1))),
            _ => None,
        })
        .collect()
}
