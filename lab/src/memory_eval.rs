//! `sentinel eval --memory DIR`: semantic memory measured on a labelled set
//! (`scripts/make-memory-pairs.py` writes `lab/memory/`), through the code
//! that serves: the embedder, the embedded Qdrant index, the intake's
//! [`Joiner`] and analysis's [`similar_past`].
//!
//! * Dedup: for each pair, the first detection is stored as an open
//!   incident, and the intake decides whether the second joins it. A pair
//!   labelled `same` that joins is a true positive. Precision and recall are
//!   at the configured thresholds; the sweep beside them shows what other
//!   same-service thresholds would give (from the same similarities).
//! * Retrieval: every past incident is stored as ended (with its cause,
//!   action, outcome and time to recover); each query's detection is looked
//!   up as analysis does, and recall@5 is how often one of the past
//!   incidents labelled as its own (the same problem on the same service) is
//!   among the five returned.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use engine::Timestamp;
use memory::edge::EdgeIndex;
use memory::{Embedder, SemanticMemory, DIMENSIONS};
use nodes::analyze::ServiceGraph;
use nodes::incident::{Detection, Source};
use nodes::intake::{Join, JoinConfig, Joiner};
use nodes::memory::{similar_past, IncidentMemory, Remedy, Remembered, Status, SIMILAR_PAST};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Deserialize)]
struct Service {
    name: String,
    depends_on: Vec<String>,
}

/// A detection as the set writes it.
#[derive(Deserialize)]
struct Written {
    service: String,
    anomaly_type: String,
    metric: String,
    source: String,
    alertname: Option<String>,
    summary: Option<String>,
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
    started_at: i64,
}

impl Written {
    fn detection(&self) -> Detection {
        let source = match self.source.as_str() {
            "alertmanager" => Source::Alertmanager {
                group_key: format!("{{}}:{{alertname=\"{}\"}}", self.metric),
                alertname: self.alertname.clone().unwrap_or_else(|| self.metric.clone()),
                fingerprints: Vec::new(),
                expr: None,
                group_labels: Default::default(),
            },
            _ => Source::Detector { detector: "ensemble".into(), score: 0.9, reason: "labelled set".into() },
        };
        Detection {
            service: self.service.clone(),
            anomaly_type: self.anomaly_type.clone(),
            metric: self.metric.clone(),
            observed: 1.0,
            baseline_mean: 0.0,
            baseline_stddev: 0.0,
            started_at: Timestamp(self.started_at),
            source,
            labels: self.labels.clone(),
            annotations: self.summary.iter().map(|s| ("summary".to_owned(), s.clone())).collect(),
        }
    }
}

#[derive(Deserialize)]
struct Pair {
    kind: String,
    same: bool,
    open: Written,
    new: Written,
}

#[derive(Deserialize)]
struct Pairs {
    services: Vec<Service>,
    pairs: Vec<Pair>,
}

#[derive(Deserialize)]
struct Action {
    executor: String,
    action: String,
    target: String,
}

#[derive(Deserialize)]
struct Past {
    id: String,
    detection: Written,
    cause: String,
    action: Action,
    outcome: String,
    mttr_secs: f64,
}

#[derive(Deserialize)]
struct Query {
    detection: Written,
    expected: Vec<String>,
}

#[derive(Deserialize)]
struct Retrieval {
    past: Vec<Past>,
    queries: Vec<Query>,
}

/// How one kind of pair fared.
#[derive(Clone, Debug, Default, Serialize)]
pub struct KindTally {
    pub kind: String,
    pub pairs: usize,
    pub joined: usize,
}

/// Precision and recall at one same-service threshold (from the recorded similarities).
#[derive(Clone, Debug, Serialize)]
pub struct SweepPoint {
    pub same_service: f64,
    pub precision: f64,
    pub recall: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct MemoryReport {
    pub config: JoinConfig,
    pub pairs: usize,
    pub true_positives: usize,
    pub false_positives: usize,
    pub false_negatives: usize,
    pub precision: f64,
    pub recall: f64,
    pub by_kind: Vec<KindTally>,
    pub sweep: Vec<SweepPoint>,
    /// Pairs decided wrongly: kind, label, and the two texts.
    pub mistakes: Vec<String>,
    pub past_incidents: usize,
    pub queries: usize,
    /// Queries with one of their own past incidents among the first five.
    pub found_in_5: usize,
    pub recall_at_5: f64,
    /// Same, at the first place.
    pub found_first: usize,
}

fn read<T: for<'de> Deserialize<'de>>(path: &Path) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// Memory on the model in `model_dir` and a fresh embedded index in `index_dir`
/// (which must outlive it: the index flushes into it when dropped).
async fn fresh_memory(model_dir: &Path, index_dir: &Path) -> anyhow::Result<SemanticMemory> {
    let model_dir = model_dir.to_owned();
    let embedder = tokio::task::spawn_blocking(move || Embedder::load(&model_dir)).await??;
    let index = EdgeIndex::open(index_dir, DIMENSIONS)?;
    Ok(SemanticMemory::new(Arc::new(embedder), Arc::new(index)).await?)
}

pub async fn evaluate(dir: &Path, model_dir: &Path, config: &JoinConfig) -> anyhow::Result<MemoryReport> {
    let pairs: Pairs = read(&dir.join("pairs.json"))?;
    let retrieval: Retrieval = read(&dir.join("retrieval.json"))?;
    let edges: Vec<(&str, &str)> =
        pairs.services.iter().flat_map(|s| s.depends_on.iter().map(move |d| (s.name.as_str(), d.as_str()))).collect();
    let services = ServiceGraph::new(&edges);
    let index_dir = tempfile::tempdir()?;
    let memory = fresh_memory(model_dir, index_dir.path()).await?;

    let (mut tp, mut fp, mut fn_) = (0, 0, 0);
    let mut by_kind: Vec<KindTally> = Vec::new();
    let mut mistakes = Vec::new();
    // (labelled same, same service, similarity) for the sweep.
    let mut same_service: Vec<(bool, f64)> = Vec::new();
    let joiner = Joiner { memory: &memory, services: &services, config };
    for pair in &pairs.pairs {
        let open = pair.open.detection();
        let uuid = Uuid::new_v4();
        let id = uuid.to_string();
        let record = Remembered::opened(&id, "open", &open);
        memory.remember(&record).await?;
        let new = pair.new.detection();
        let found = joiner.find(&new).await?;
        let joined = found.as_ref().is_some_and(|(incident, _)| *incident == id);
        if open.service == new.service {
            let sim = memory.similarity(&record.text(), &Remembered::opened("", "", &new).text()).await?;
            same_service.push((pair.same, sim));
        }
        match (pair.same, joined) {
            (true, true) => tp += 1,
            (false, true) => fp += 1,
            (true, false) => fn_ += 1,
            (false, false) => {}
        }
        if pair.same != joined {
            let how = match &found {
                Some((_, Join::SameProblem { similarity })) => format!("joined at similarity {similarity:.3}"),
                Some((_, Join::Downstream { caller_symptom, .. })) => {
                    format!("joined downstream, caller symptom {caller_symptom:.3}")
                }
                None => "not joined".into(),
            };
            mistakes.push(format!(
                "{} (labelled {}): {how}: [{}] {} | [{}] {}",
                pair.kind,
                if pair.same { "same" } else { "different" },
                open.service,
                record.text(),
                new.service,
                Remembered::opened("", "", &new).text()
            ));
        }
        match by_kind.iter_mut().find(|k| k.kind == pair.kind) {
            Some(k) => {
                k.pairs += 1;
                k.joined += usize::from(joined);
            }
            None => by_kind.push(KindTally { kind: pair.kind.clone(), pairs: 1, joined: usize::from(joined) }),
        }
        // The next pair starts from an empty memory.
        memory.index().delete(&[uuid]).await?;
    }

    // The sweep: only the same-service decision moves; the rest of the
    // decisions (downstream joins) are as measured.
    let other_tp = tp - same_service.iter().filter(|(same, s)| *same && *s >= config.same_service).count();
    let other_fp = fp - same_service.iter().filter(|(same, s)| !*same && *s >= config.same_service).count();
    let positives = pairs.pairs.iter().filter(|p| p.same).count();
    let sweep = (20..=70)
        .step_by(5)
        .map(|t| {
            let t = f64::from(t) / 100.0;
            let tp = other_tp + same_service.iter().filter(|(same, s)| *same && *s >= t).count();
            let fp = other_fp + same_service.iter().filter(|(same, s)| !*same && *s >= t).count();
            SweepPoint { same_service: t, precision: ratio(tp, tp + fp), recall: ratio(tp, positives) }
        })
        .collect();

    // Retrieval.
    for (i, p) in retrieval.past.iter().enumerate() {
        let d = p.detection.detection();
        let mut r = Remembered::opened(&Uuid::from_u128(i as u128 + 1).to_string(), &p.id, &d);
        r.status = Status::Resolved;
        r.resolved_at = Some(d.started_at.0 + (p.mttr_secs * 1000.0) as i64);
        r.cause = Some(p.cause.clone());
        r.hypothesis =
            Some(format!("{} in the service itself", p.cause.trim_start_matches("intrinsic:").replace('_', " ")));
        r.remedy = Some(Remedy {
            executor: p.action.executor.clone(),
            action: p.action.action.clone(),
            target: p.action.target.clone(),
            params: Default::default(),
        });
        r.outcome = Some(p.outcome.clone());
        r.mttr_secs = Some(p.mttr_secs);
        memory.remember(&r).await?;
    }
    let (mut found_in_5, mut found_first) = (0, 0);
    for q in &retrieval.queries {
        let d = q.detection.detection();
        let me = Remembered::opened("", "", &d);
        let similar = similar_past(&memory, &me, SIMILAR_PAST).await?;
        // The fingerprint field carries the past incident's id in this set.
        let ids: Vec<&str> = similar.iter().map(|n| n.incident.fingerprint.as_str()).collect();
        if ids.iter().any(|id| q.expected.iter().any(|e| e == id)) {
            found_in_5 += 1;
        }
        if ids.first().is_some_and(|id| q.expected.iter().any(|e| e == id)) {
            found_first += 1;
        }
    }

    Ok(MemoryReport {
        config: config.clone(),
        pairs: pairs.pairs.len(),
        true_positives: tp,
        false_positives: fp,
        false_negatives: fn_,
        precision: ratio(tp, tp + fp),
        recall: ratio(tp, tp + fn_),
        by_kind,
        sweep,
        mistakes,
        past_incidents: retrieval.past.len(),
        queries: retrieval.queries.len(),
        found_in_5,
        recall_at_5: ratio(found_in_5, retrieval.queries.len()),
        found_first,
    })
}
