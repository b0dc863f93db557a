//! A human decision on an approval gate, whichever edge it arrives through
//! (the REST API or a Slack button). The gate's decision is one signal,
//! `decision:GATE`, so the database's primary key makes it first-wins across
//! processes; the same decision again is a duplicate; anything else (a second
//! person, a gate the run is not waiting on) is refused and recorded on the
//! run, and never applied.

use engine::{Delivery, Engine, Error as EngineError, Run, RunDetail, RunId, RunStatus, Signal};
use nodes::workflow::Incident;
use serde_json::{json, Value};

/// What became of a decision.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    Accepted,
    /// The same decision again: nothing changed.
    Duplicate,
    /// Not applied, and recorded on the run: why.
    Refused(String),
}

/// A decision as an edge hands it over, its decider already authenticated.
pub struct Decision<'a> {
    pub run: RunId,
    pub gate: &'a str,
    /// `approve` or `reject`.
    pub kind: &'a str,
    /// The authenticated principal: an API key's name or `slack:USER`.
    pub by: &'a str,
    /// Lets a retried request (or Slack's retried click) be recognised.
    pub request: Option<&'a str>,
    pub via: &'static str,
    pub note: Option<String>,
    pub reason: String,
}

/// The signal id of a gate's decision.
pub fn signal_id(gate: &str) -> String {
    format!("decision:{gate}")
}

/// The gate `run` waits on for a decision of `kind`, if it waits on one.
pub fn waiting_gate(run: &Run, kind: &str) -> Option<String> {
    let waiting =
        run.status == RunStatus::Waiting && run.node == "await_approval" && run.wait_signals.iter().any(|s| s == kind);
    if !waiting {
        return None;
    }
    serde_json::from_value::<Incident>(run.state.clone()).ok()?.gate
}

/// RFC 3339 in UTC, to the millisecond.
pub fn rfc3339(ms: i64) -> String {
    nodes::postmortem::rfc3339(engine::Timestamp(ms))
}

impl Decision<'_> {
    /// Takes the gate's decision, or says why not. `detail` is the run as the
    /// caller read it; `not_waiting` words the refusal when the run does not
    /// wait on this gate.
    pub async fn submit(
        &self,
        engine: &Engine,
        detail: &RunDetail,
        not_waiting: impl FnOnce() -> String,
    ) -> Result<Answer, EngineError> {
        let signal = signal_id(self.gate);
        if let Some(prior) = detail.signals.iter().find(|s| s.id == signal) {
            return Ok(self.second(engine, prior).await);
        }
        if waiting_gate(&detail.run, self.kind).as_deref() != Some(self.gate) {
            let why = not_waiting();
            self.refuse(engine, &why).await;
            return Ok(Answer::Refused(why));
        }
        let payload = json!({
            "gate": self.gate, "by": self.by, "note": self.note, "reason": self.reason, "via": self.via,
            "request": self.request,
        });
        match engine.signal(self.run, &signal, self.kind, payload).await? {
            Delivery::Accepted => Ok(Answer::Accepted),
            // Another request took the gate between our read and our write.
            Delivery::Duplicate => {
                let detail = engine.detail(self.run).await?;
                match detail.signals.iter().find(|s| s.id == signal) {
                    Some(prior) => Ok(self.second(engine, prior).await),
                    None => Ok(Answer::Duplicate),
                }
            }
        }
    }

    /// Records on the run a decision that was not applied, so the incident's
    /// own record shows every attempt; a finished run takes no more signals.
    pub async fn refuse(&self, engine: &Engine, why: &str) {
        let payload = json!({
            "by": self.by, "wanted": self.kind, "gate": self.gate, "reason": why, "via": self.via,
            "request": self.request,
        });
        let id = format!("refused:{}", uuid::Uuid::new_v4());
        match engine.signal(self.run, &id, "refused_decision", payload).await {
            Ok(_) | Err(EngineError::RunFinished { .. }) => {}
            Err(e) => tracing::warn!(error = %e, run = %self.run, "could not record a refused decision"),
        }
    }

    /// A decision for a gate that has one: the same request (or the same
    /// principal deciding the same way) again is a duplicate; anything else
    /// is refused, naming who decided first and when.
    async fn second(&self, engine: &Engine, prior: &Signal) -> Answer {
        let prior_by = prior.payload.get("by").and_then(Value::as_str).unwrap_or("unknown");
        let prior_request = prior.payload.get("request").and_then(Value::as_str);
        let same_request = self.request.is_some() && self.request == prior_request;
        if same_request || (prior_by == self.by && prior.kind == self.kind) {
            return Answer::Duplicate;
        }
        let done = if prior.kind == "approve" { "approved" } else { "rejected" };
        let why = format!("gate {} was already {done} by {prior_by} at {}", self.gate, rfc3339(prior.received_at.0));
        self.refuse(engine, &why).await;
        Answer::Refused(why)
    }
}
