//! Semantic memory for the incident workflow: incidents embedded with
//! all-MiniLM-L6-v2 in process ([`embed`]) and kept in a Qdrant index
//! ([`index`]: embedded by default, a server when `QDRANT_URL` is set).
//! [`SemanticMemory`] fills the workflow's [`IncidentMemory`] port.

pub mod edge;
pub mod embed;
pub mod index;
pub mod server;

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use nodes::memory::{IncidentMemory, MemoryState, Neighbour, Recall, Remembered};
use nodes::ports::PortError;
use uuid::Uuid;

pub use embed::{Embedder, DIMENSIONS};
pub use index::{IndexError, VectorIndex};

/// Texts whose vectors are kept for reuse: a detection's text is looked up
/// several times at intake, and the caller-symptom texts at every one.
const CACHED_VECTORS: usize = 1024;

/// The embedder and the index, behind the workflow's port.
#[derive(Clone)]
pub struct SemanticMemory {
    embedder: Arc<Embedder>,
    index: Arc<dyn VectorIndex>,
    cache: Arc<Mutex<lru::LruCache<String, Arc<Vec<f32>>>>>,
    /// Set once the index was made ready ([`VectorIndex::ensure`]).
    ready: Arc<tokio::sync::OnceCell<()>>,
}

impl SemanticMemory {
    /// Makes the index ready for the embedder's vectors (see
    /// [`VectorIndex::ensure`]). An index that refuses (another vector size,
    /// a collection Sentinel did not make) is an error; one that cannot be
    /// reached is not: memory starts unavailable, every use says so and the
    /// incident goes on without it, and the next use tries again.
    pub async fn new(embedder: Arc<Embedder>, index: Arc<dyn VectorIndex>) -> Result<SemanticMemory, IndexError> {
        let cache = lru::LruCache::new(NonZeroUsize::new(CACHED_VECTORS).expect("non-zero"));
        let memory = SemanticMemory {
            embedder,
            index,
            cache: Arc::new(Mutex::new(cache)),
            ready: Arc::new(tokio::sync::OnceCell::new()),
        };
        match memory.ready().await {
            Ok(()) => {}
            Err(IndexError::Unavailable(m)) => {
                tracing::warn!(index = %memory.index.describe(), error = %m, "semantic memory: the index is unavailable; trying again at each use");
            }
            Err(e) => return Err(e),
        }
        Ok(memory)
    }

    /// The index, made ready on first success.
    async fn ready(&self) -> Result<(), IndexError> {
        self.ready.get_or_try_init(|| self.index.ensure(DIMENSIONS)).await.map(|_| ())
    }

    pub fn index(&self) -> &Arc<dyn VectorIndex> {
        &self.index
    }

    /// The unit vector of `text`, computed on a blocking thread (or
    /// remembered from a recent call).
    pub async fn embed(&self, text: &str) -> Result<Arc<Vec<f32>>, PortError> {
        if let Some(v) = self.cache.lock().expect("cache lock").get(text) {
            return Ok(v.clone());
        }
        let (embedder, owned) = (self.embedder.clone(), text.to_owned());
        let v = tokio::task::spawn_blocking(move || embedder.embed(&owned))
            .await
            .map_err(|e| PortError::Unavailable(format!("embedding task: {e}")))?
            .map_err(|e| PortError::Refused(format!("embedding: {e}")))?;
        let v = Arc::new(v);
        self.cache.lock().expect("cache lock").put(text.to_owned(), v.clone());
        Ok(v)
    }
}

fn port(e: IndexError) -> PortError {
    match e {
        IndexError::Unavailable(m) => PortError::Unavailable(m),
        IndexError::Refused(m) => PortError::Refused(m),
    }
}

fn incident_id(incident: &str) -> Result<Uuid, PortError> {
    incident.parse().map_err(|e| PortError::Refused(format!("incident id `{incident}` is not a UUID: {e}")))
}

#[async_trait]
impl IncidentMemory for SemanticMemory {
    fn state(&self) -> MemoryState {
        MemoryState::On {
            model: format!("all-MiniLM-L6-v2 from {}", self.embedder.dir().display()),
            index: self.index.describe(),
        }
    }

    async fn remember(&self, incident: &Remembered) -> Result<(), PortError> {
        let id = incident_id(&incident.incident)?;
        self.ready().await.map_err(port)?;
        let vector = self.embed(&incident.text()).await?.as_ref().clone();
        let point = index::Point { id, vector, payload: incident.clone() };
        self.index.upsert(vec![point]).await.map_err(port)
    }

    async fn recall(&self, recall: &Recall) -> Result<Vec<Neighbour>, PortError> {
        self.ready().await.map_err(port)?;
        let vector = self.embed(&recall.text).await?;
        let search = index::Search {
            vector: vector.as_ref().clone(),
            services: recall.services.clone(),
            statuses: recall.statuses.clone(),
            opened_since: recall.opened_since.map(|t| t.0),
            except: recall.except.as_deref().map(incident_id).transpose()?,
            limit: recall.limit,
        };
        let hits = self.index.search(&search).await.map_err(port)?;
        Ok(hits.into_iter().map(|h| Neighbour { similarity: f64::from(h.score), incident: h.payload }).collect())
    }

    async fn get(&self, incident: &str) -> Result<Option<Remembered>, PortError> {
        let id = incident_id(incident)?;
        self.ready().await.map_err(port)?;
        self.index.get(id).await.map_err(port)
    }

    async fn similarity(&self, a: &str, b: &str) -> Result<f64, PortError> {
        let (a, b) = (self.embed(a).await?, self.embed(b).await?);
        Ok(f64::from(embed::cosine(&a, &b)))
    }

    async fn size(&self) -> Result<u64, PortError> {
        self.ready().await.map_err(port)?;
        self.index.count().await.map_err(port)
    }

    async fn prune(&self, before: engine::Timestamp) -> Result<(), PortError> {
        self.ready().await.map_err(port)?;
        self.index.delete_ended_before(before.0).await.map_err(port)
    }
}
