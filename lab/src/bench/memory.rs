//! `sentinel bench memory`: what semantic memory costs.
//!
//! * Embedding: incident texts of the lengths the workflow embeds (an
//!   opened incident's, and an ended one's with its cause and resolution),
//!   one at a time as the workflow does, timed per text: p50 and p99.
//! * Search: `points` incidents in the embedded Qdrant index (a fresh one in
//!   a temporary directory), optimised as the index optimises itself, then
//!   `searches` nearest-neighbour queries with the filters intake uses (one
//!   service, open, opened since): p50 and p99 per search. The stored
//!   vectors are the embeddings of generated incident texts, spread by a
//!   deterministic rotation so that 100,000 of them cost a few thousand
//!   embeddings to make.
//! * Memory: the process's resident set before the index is filled and
//!   after, as `/proc/self/status` reports it.

use std::sync::Arc;
use std::time::Instant;

use memory::edge::EdgeIndex;
use memory::embed::Inference;
use memory::index::{Point, Search, VectorIndex};
use memory::{Embedder, DIMENSIONS};
use nodes::memory::{Remedy, Remembered, Status};
use serde::Serialize;
use uuid::Uuid;

#[derive(Clone, Debug, Serialize)]
pub struct MemoryFigures {
    /// Which implementation ran the model.
    pub inference: &'static str,
    pub texts: usize,
    pub embed_p50_ms: f64,
    pub embed_p99_ms: f64,
    pub points: usize,
    pub fill_secs: f64,
    pub optimize_secs: f64,
    pub searches: usize,
    pub search_p50_ms: f64,
    pub search_p99_ms: f64,
    pub rss_before_mib: f64,
    pub rss_after_mib: f64,
    pub index_disk_mib: f64,
}

const SERVICES: &[&str] = &[
    "checkout",
    "payments",
    "inventory",
    "cart",
    "orders",
    "search",
    "auth",
    "sessions",
    "ledger",
    "reports",
    "notifications",
    "fraud",
];
const SIGNALS: &[(&str, &str, &str)] = &[
    ("latency_spike", "p99_latency_ms", "p99 latency above 500 ms"),
    ("error_rate_spike", "http_5xx_ratio", "error rate above 5%"),
    ("memory_leak", "container_memory_rss", "memory keeps growing"),
    ("cpu_saturation", "cpu_usage_ratio", "CPU usage above 90%"),
    ("db_connection_exhaustion", "db_connections_used_ratio", "no free database connections"),
    ("consumer_lag", "kafka_consumer_lag", "consumer lag is growing"),
    ("alert", "KubePodCrashLooping", "pod is crash looping"),
    ("alert", "NodeDiskFull", "disk almost full"),
];

/// The `i`-th generated incident: opened, or ended with a cause and resolution.
fn incident(i: usize, ended: bool) -> Remembered {
    let (symptom, signal, summary) = SIGNALS[i % SIGNALS.len()];
    let service = SERVICES[(i / SIGNALS.len()) % SERVICES.len()];
    Remembered {
        incident: Uuid::from_u128(i as u128 + 1).to_string(),
        service: service.into(),
        symptom: symptom.into(),
        signal: signal.into(),
        summary: i.is_multiple_of(3).then(|| format!("{service}: {summary}")),
        labels: Default::default(),
        fingerprint: format!("fp-{i}"),
        status: if ended { Status::Resolved } else { Status::Open },
        opened_at: 1_760_000_000_000 + i as i64 * 60_000,
        resolved_at: ended.then_some(1_760_000_000_000 + i as i64 * 60_000 + 600_000),
        cause: ended.then(|| format!("intrinsic:{symptom}")),
        hypothesis: ended.then(|| format!("{} in {service} itself ({signal} at 4.2σ)", symptom.replace('_', " "))),
        remedy: ended.then(|| Remedy {
            executor: "kubernetes".into(),
            action: ["rollback_deployment", "restart_deployment", "scale_deployment"][i % 3].into(),
            target: format!("shop/{service}"),
            params: Default::default(),
        }),
        outcome: ended.then(|| "resolved".to_owned()),
        mttr_secs: ended.then_some(600.0),
        affected: Vec::new(),
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn dir_bytes(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => dir_bytes(&e.path()),
                    _ => e.metadata().map(|m| m.len()).unwrap_or(0),
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Rotates `v` by `k` places and flips every `k`-th sign: a different unit
/// vector of the same kind, so a large index holds distinct points.
fn variant(v: &[f32], k: usize) -> Vec<f32> {
    let n = v.len();
    (0..n).map(|j| if (j + k).is_multiple_of(7) { -v[(j + k) % n] } else { v[(j + k) % n] }).collect()
}

pub async fn run(
    model_dir: &std::path::Path,
    inference: Inference,
    texts: usize,
    points: usize,
    searches: usize,
) -> anyhow::Result<MemoryFigures> {
    let model_dir = model_dir.to_owned();
    let embedder = Arc::new(tokio::task::spawn_blocking(move || Embedder::load_with(&model_dir, inference)).await??);

    // Embedding, one text at a time.
    let mut embed_ms = Vec::with_capacity(texts);
    let mut vectors = Vec::with_capacity(texts);
    for i in 0..texts {
        let text = incident(i, i % 2 == 1).text();
        let e = embedder.clone();
        let started = Instant::now();
        let v = tokio::task::spawn_blocking(move || e.embed(&text)).await??;
        embed_ms.push(started.elapsed().as_secs_f64() * 1e3);
        vectors.push(v);
    }
    embed_ms.sort_by(f64::total_cmp);

    // The index, filled.
    let dir = tempfile::tempdir()?;
    let rss_before_mib = super::rss_mb();
    let index = EdgeIndex::open(dir.path(), DIMENSIONS)?;
    index.ensure(DIMENSIONS).await?;
    let started = Instant::now();
    let mut batch = Vec::with_capacity(1000);
    for i in 0..points {
        let base = &vectors[i % vectors.len()];
        let vector = variant(base, i / vectors.len());
        let mut payload = incident(i, i % 10 != 0);
        payload.incident = Uuid::from_u128(i as u128 + 1).to_string();
        batch.push(Point { id: Uuid::from_u128(i as u128 + 1), vector, payload });
        if batch.len() == 1000 {
            index.upsert(std::mem::take(&mut batch)).await?;
        }
    }
    if !batch.is_empty() {
        index.upsert(batch).await?;
    }
    let fill_secs = started.elapsed().as_secs_f64();
    let started = Instant::now();
    index.optimize()?;
    let optimize_secs = started.elapsed().as_secs_f64();

    // Searches as intake makes them.
    let mut search_ms = Vec::with_capacity(searches);
    for q in 0..searches {
        let i = q * 7919 % points;
        let search = Search {
            vector: variant(&vectors[(q * 31) % vectors.len()], q % 5),
            services: vec![SERVICES[(i / SIGNALS.len()) % SERVICES.len()].to_owned()],
            statuses: if q % 2 == 0 { vec![Status::Open] } else { vec![Status::Resolved, Status::Escalated] },
            opened_since: (q % 2 == 0).then_some(1_760_000_000_000 + (i as i64 - 5_000).max(0) * 60_000),
            except: None,
            limit: 5,
        };
        let started = Instant::now();
        let hits = index.search(&search).await?;
        search_ms.push(started.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(hits);
    }
    search_ms.sort_by(f64::total_cmp);
    let rss_after_mib = super::rss_mb();
    let index_disk_mib = dir_bytes(dir.path()) as f64 / (1024.0 * 1024.0);
    Ok(MemoryFigures {
        inference: embedder.inference(),
        texts,
        embed_p50_ms: percentile(&embed_ms, 0.5),
        embed_p99_ms: percentile(&embed_ms, 0.99),
        points,
        fill_secs,
        optimize_secs,
        searches,
        search_p50_ms: percentile(&search_ms, 0.5),
        search_p99_ms: percentile(&search_ms, 0.99),
        rss_before_mib,
        rss_after_mib,
        index_disk_mib,
    })
}
