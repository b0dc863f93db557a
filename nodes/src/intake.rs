//! Where detections enter: one incident per condition. The incident run
//! carries its detection's fingerprint as the engine's correlation key, so a
//! detection whose fingerprint matches an open incident is attached to it as
//! an `attach` signal (kept in the run's record), and one that matches none
//! opens a new incident — atomically, however many processes take detections.

use engine::{Correlated, Delivery, Engine, RunId};

use crate::incident::{fingerprint, Detection, Source};
use crate::workflow::{self, Incident};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Intake {
    Opened(RunId),
    /// Attached to the open incident; `Duplicate` when this very detection was attached before.
    Attached(RunId, Delivery),
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

fn source_name(d: &Detection) -> &'static str {
    match d.source {
        Source::Alertmanager { .. } => "alertmanager",
        Source::Detector { .. } => "detector",
    }
}
