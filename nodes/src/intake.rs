//! Where detections enter: one incident per condition. The incident run
//! carries its detection's fingerprint as the engine's correlation key, so a
//! detection whose fingerprint matches an open incident is attached to it as
//! an `attach` signal (kept in the run's record), and one that matches none
//! opens a new incident — atomically, however many processes take detections.
//!
//! With semantic memory, a detection whose fingerprint no open incident holds
//! may still be one of them ([`open_or_join`]): the same problem on the same
//! service told in other words (an alert and a detector's anomaly), or a
//! caller's symptom of a failure the catalogue places upstream (an alert
//! storm). It joins that incident, as an `attach` signal that records how
//! and how similar, instead of paging again.

use std::time::Duration;

use engine::{Correlated, Delivery, Engine, RunId, Timestamp};
use serde::{Deserialize, Serialize};

use crate::analyze::ServiceGraph;
use crate::incident::{fingerprint, Detection, Source};
use crate::memory::{IncidentMemory, Recall, Remembered, Status};
use crate::ports::PortError;
use crate::workflow::{self, Incident};

#[derive(Clone, Debug, PartialEq)]
pub enum Intake {
    Opened(RunId),
    /// Attached to the open incident; `Duplicate` when this very detection was attached before.
    Attached(RunId, Delivery),
    /// Joined an open incident with another fingerprint, by meaning.
    Joined(RunId, Delivery, Join),
    /// This very detection opened an incident that has since finished (a
    /// replay: a Kafka rewind, an Alertmanager resend): nothing to do.
    Repeated(RunId),
}

/// Opens an incident for `detection`, or attaches it to the open one with the
/// same fingerprint.
pub async fn open_or_attach(engine: &Engine, detection: &Detection) -> engine::Result<Intake> {
    let key = fingerprint(detection);
    let signal_id = format!("attach:{key}:{}", detection.started_at.0);
    let payload = serde_json::to_value(detection)?;
    let state = Incident::new(detection.clone());
    // The detection itself (its condition and start) is the start key.
    let start_key = format!("{key}:{}", detection.started_at.0);
    let started =
        engine.start_or_signal(workflow::GRAPH, &key, Some(&start_key), &state, &signal_id, "attach", payload).await?;
    Ok(match started {
        Correlated::Started(run) => Intake::Opened(run),
        Correlated::Signalled(run, delivery) => Intake::Attached(run, delivery),
        Correlated::Repeated(run) => Intake::Repeated(run),
    })
}

/// The condition behind `detection` cleared (its Alertmanager group
/// resolved): the open incident with its fingerprint gets a `cleared` signal,
/// which closes it if it is still waiting for a decision. None when no
/// incident is open for it.
pub async fn clear(engine: &Engine, detection: &Detection) -> engine::Result<Option<RunId>> {
    let key = fingerprint(detection);
    let signal_id = format!("cleared:{key}:{}", detection.started_at.0);
    let payload = serde_json::json!({ "source": source_name(detection), "detection": detection });
    Ok(engine.signal_open(workflow::GRAPH, &key, &signal_id, "cleared", payload).await?.map(|(run, _)| run))
}

/// How detections join open incidents by meaning. The defaults are the
/// thresholds measured on `lab/memory/pairs.json` (`sentinel eval --memory lab/memory`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct JoinConfig {
    /// Cosine similarity at or above which a detection joins an open
    /// incident on the same service.
    pub same_service: f64,
    /// How much a detection must read like a caller's symptom (slow or
    /// failing requests: [`CALLER_SYMPTOMS`]) to join an open incident on a
    /// service its own depends on.
    pub caller_symptom: f64,
    /// Only incidents opened this long before the detection, or later, are joined.
    pub window: Duration,
}

impl Default for JoinConfig {
    fn default() -> Self {
        JoinConfig { same_service: 0.45, caller_symptom: 0.40, window: Duration::from_secs(3600) }
    }
}

/// What a service shows when one it calls fails: the texts a downstream
/// symptom is compared with.
pub const CALLER_SYMPTOMS: &[&str] = &[
    "latency spike: requests are slow, high response time",
    "error rate spike: requests fail with errors, 5xx responses",
];

/// How a detection joined an open incident.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "how", rename_all = "snake_case")]
pub enum Join {
    /// The same problem on the same service, in other words.
    SameProblem { similarity: f64 },
    /// A caller's symptom on `service`, which depends on the incident's service.
    Downstream { service: String, caller_symptom: f64 },
}

/// Semantic memory and the catalogue's dependencies, for [`open_or_join`].
pub struct Joiner<'a> {
    pub memory: &'a dyn IncidentMemory,
    pub services: &'a ServiceGraph,
    pub config: &'a JoinConfig,
}

impl Joiner<'_> {
    /// The open incident `d` belongs to by meaning, if any: first one on the
    /// same service at or above the similarity threshold; else, when `d`
    /// reads as a caller's symptom, the most similar open incident on a
    /// service `d`'s service depends on.
    pub async fn find(&self, d: &Detection) -> Result<Option<(String, Join)>, PortError> {
        let text = Remembered::opened("", "", d).text();
        let since = Timestamp(d.started_at.0.saturating_sub(self.config.window.as_millis() as i64));
        let open = |services: Vec<String>| Recall {
            text: text.clone(),
            services,
            statuses: vec![Status::Open],
            opened_since: Some(since),
            except: None,
            limit: 1,
        };
        if let Some(n) = self.memory.recall(&open(vec![d.service.clone()])).await?.into_iter().next() {
            if n.similarity >= self.config.same_service {
                return Ok(Some((n.incident.incident, Join::SameProblem { similarity: n.similarity })));
            }
        }
        let upstream = self.services.upstream(&d.service);
        if upstream.is_empty() {
            return Ok(None);
        }
        let mut caller_symptom = f64::MIN;
        for symptom in CALLER_SYMPTOMS {
            caller_symptom = caller_symptom.max(self.memory.similarity(&text, symptom).await?);
        }
        if caller_symptom < self.config.caller_symptom {
            return Ok(None);
        }
        Ok(self
            .memory
            .recall(&open(upstream))
            .await?
            .into_iter()
            .next()
            .map(|n| (n.incident.incident, Join::Downstream { service: d.service.clone(), caller_symptom })))
    }
}

/// [`open_or_attach`], and before opening a new incident, a look for an
/// open one it belongs to by meaning ([`Joiner::find`]). Memory failing
/// (its index away, no model) never loses the detection: it is taken as
/// without memory, and the failure logged.
pub async fn open_or_join(
    engine: &Engine,
    joiner: Option<&Joiner<'_>>,
    detection: &Detection,
) -> engine::Result<Intake> {
    let Some(joiner) = joiner else { return open_or_attach(engine, detection).await };
    let key = fingerprint(detection);
    let signal_id = format!("attach:{key}:{}", detection.started_at.0);
    let payload = serde_json::to_value(detection)?;
    if let Some((run, delivery)) = engine.signal_open(workflow::GRAPH, &key, &signal_id, "attach", payload).await? {
        return Ok(Intake::Attached(run, delivery));
    }
    let found = match joiner.find(detection).await {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(error = %e, service = %detection.service, "semantic memory unavailable: opening by fingerprint only");
            None
        }
    };
    if let Some((incident, join)) = found {
        if let Ok(run) = incident.parse::<RunId>() {
            let payload = serde_json::json!({ "detection": detection, "join": join });
            match engine.signal(run, &signal_id, "attach", payload).await {
                Ok(delivery) => return Ok(Intake::Joined(run, delivery, join)),
                // It ended between the search and the signal: open a new one.
                Err(engine::Error::RunFinished { .. } | engine::Error::RunNotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
    }
    open_or_attach(engine, detection).await
}

fn source_name(d: &Detection) -> &'static str {
    match d.source {
        Source::Alertmanager { .. } => "alertmanager",
        Source::Detector { .. } => "detector",
    }
}
