//! Where detections enter: one incident per condition. A detection whose
//! fingerprint matches an open incident is attached to it as an `attach`
//! signal (kept in the run's record); otherwise it opens a new incident.

use engine::{Delivery, Engine, RunFilter, RunId, RunStatus};

use crate::incident::{fingerprint, Detection};
use crate::workflow::{self, Incident};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Intake {
    Opened(RunId),
    /// Attached to the open incident; `Duplicate` when this very detection was attached before.
    Attached(RunId, Delivery),
}

/// Opens an incident for `detection`, or attaches it to the open one with the
/// same fingerprint. Call it from one intake task: two concurrent calls for a
/// new condition could both open an incident.
pub async fn open_or_attach(engine: &Engine, detection: &Detection) -> engine::Result<Intake> {
    let wanted = fingerprint(detection);
    let signal_id = format!("attach:{wanted}:{}", detection.started_at.0);
    let payload = serde_json::to_value(detection)?;
    match signal_open(engine, &wanted, &signal_id, "attach", payload).await? {
        Some((run, delivery)) => Ok(Intake::Attached(run, delivery)),
        None => Ok(Intake::Opened(engine.start(workflow::GRAPH, &Incident::new(detection.clone())).await?)),
    }
}

/// The condition behind `detection` cleared (its Alertmanager group
/// resolved): the open incident with its fingerprint gets a `cleared` signal,
/// which closes it if it is still waiting for a decision. None when no
/// incident is open for it.
pub async fn clear(engine: &Engine, detection: &Detection) -> engine::Result<Option<RunId>> {
    let wanted = fingerprint(detection);
    let signal_id = format!("cleared:{wanted}:{}", detection.started_at.0);
    let payload = serde_json::json!({ "source": source_name(detection), "detection": detection });
    Ok(signal_open(engine, &wanted, &signal_id, "cleared", payload).await?.map(|(run, _)| run))
}

fn source_name(d: &Detection) -> &'static str {
    match d.source {
        crate::incident::Source::Alertmanager { .. } => "alertmanager",
        crate::incident::Source::Detector { .. } => "detector",
    }
}

/// Signals the open incident whose detection has fingerprint `wanted`.
async fn signal_open(
    engine: &Engine,
    wanted: &str,
    signal_id: &str,
    kind: &str,
    payload: serde_json::Value,
) -> engine::Result<Option<(RunId, Delivery)>> {
    for status in [RunStatus::Waiting, RunStatus::Running, RunStatus::Runnable] {
        let filter = RunFilter { status: Some(status), graph: Some(workflow::GRAPH.into()), limit: Some(1000) };
        for run in engine.list(&filter).await? {
            let Ok(open) = serde_json::from_value::<Incident>(run.state) else { continue };
            if open.detection.as_ref().map(fingerprint).as_deref() != Some(wanted) {
                continue;
            }
            match engine.signal(run.id, signal_id, kind, payload.clone()).await {
                Ok(delivery) => return Ok(Some((run.id, delivery))),
                // It finished between the listing and the signal.
                Err(engine::Error::RunFinished { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
    }
    Ok(None)
}
