//! Semantic memory: every incident kept as a vector of what it is about, so
//! that a second detection of one problem joins the open incident instead of
//! paging again, and analysis can read how similar incidents ended.
//!
//! This module holds what the workflow needs of it: the record kept per
//! incident ([`Remembered`]), the fixed text it is embedded from
//! ([`Remembered::text`]), and the port ([`IncidentMemory`]). The `memory`
//! crate fills the port (embeddings and a Qdrant index); [`NoMemory`] is the
//! port when there is no model: semantic memory off, and saying so.

use std::collections::BTreeMap;

use async_trait::async_trait;
use engine::Timestamp;
use serde::{Deserialize, Serialize};

use crate::incident::{Detection, Source};
use crate::ports::PortError;

/// Where an incident stands, as memory keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Open,
    Resolved,
    Escalated,
    /// Rejected, cleared before a decision, or a dry run: over, nothing verified.
    Closed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Open => "open",
            Status::Resolved => "resolved",
            Status::Escalated => "escalated",
            Status::Closed => "closed",
        }
    }
}

/// What was done about an incident, as memory keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Remedy {
    pub executor: String,
    pub action: String,
    pub target: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, serde_json::Value>,
}

/// One incident in memory: the vector's payload. Everything the uses of
/// memory filter or show is here; the vector is embedded from [`text`](Self::text).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Remembered {
    /// The incident's run id (a UUID): the point's id.
    pub incident: String,
    pub service: String,
    /// The anomaly type (`latency_spike`), or `alert` for an alert without one.
    pub symptom: String,
    /// The metric, or the alert's name.
    pub signal: String,
    /// The alert's own words (its `summary` annotation), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// The labels that describe the problem (not the ones naming a pod, an
    /// instance or a route): see [`describing_labels`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    pub fingerprint: String,
    pub status: Status,
    /// Milliseconds since the epoch, as every [`Timestamp`].
    pub opened_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<i64>,
    /// The top hypothesis: its cause (`deployment`, `upstream:payments`) and words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hypothesis: Option<String>,
    /// The last action taken (not a dry run), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remedy: Option<Remedy>,
    /// How it ended, in the run's words (`resolved`, `escalated: …`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mttr_secs: Option<f64>,
    /// Services this incident stands for besides its own (storm collapse).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub affected: Vec<String>,
}

/// Labels that identify an instance, a place, an owner or a rule's plumbing
/// rather than the problem: left out of the embedded text so that two
/// reports of one problem from two pods (or two rule sets) read the same.
const NOT_DESCRIBING: &[&str] = &[
    "alertname",
    "anomaly_type",
    "cluster",
    "container",
    "deployment",
    "endpoint",
    "env",
    "environment",
    "instance",
    "instance_id",
    "job",
    "metric",
    "namespace",
    "node",
    "owner",
    "pod",
    "prometheus",
    "receiver",
    "region",
    "replica",
    "service",
    "severity",
    "team",
    "tier",
    "uid",
    "zone",
];

/// The labels of a detection worth embedding.
pub fn describing_labels(labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    labels
        .iter()
        .filter(|(k, v)| !NOT_DESCRIBING.contains(&k.as_str()) && !k.starts_with("__") && !v.is_empty())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

impl Remembered {
    /// The record of a new incident, as its detection describes it.
    pub fn opened(incident: &str, fingerprint: &str, d: &Detection) -> Remembered {
        let signal = match &d.source {
            Source::Alertmanager { alertname, .. } => alertname.clone(),
            Source::Detector { .. } => d.metric.clone(),
        };
        Remembered {
            incident: incident.to_owned(),
            service: d.service.clone(),
            symptom: d.anomaly_type.clone(),
            signal,
            summary: d.annotations.get("summary").cloned(),
            labels: describing_labels(&d.labels),
            fingerprint: fingerprint.to_owned(),
            status: Status::Open,
            opened_at: d.started_at.0,
            resolved_at: None,
            cause: None,
            hypothesis: None,
            remedy: None,
            outcome: None,
            mttr_secs: None,
            affected: Vec::new(),
        }
    }

    /// What the incident is about, in words: the text its vector is embedded
    /// from. Fixed in form so that two incidents compare by what differs.
    ///
    /// `symptom, signal (summary) [labels]; cause: hypothesis; resolution: action on target, outcome`
    ///
    /// * Identifiers are split into words (`HighRequestLatency` → `high
    ///   request latency`, `p99_latency_ms` → `p99 latency ms`): the model reads words.
    /// * The service is not in the text, and its name in an alert's summary
    ///   reads `the service`: services are compared exactly (the same one,
    ///   or one the catalogue says depends on it), never by how alike two
    ///   names look. Measured on `lab/memory/pairs.json`, leaving the name
    ///   in lowered the separation of "same problem" from "same service,
    ///   another problem" (ARCHITECTURE.md, "Semantic memory").
    /// * Labels naming an instance, a route or a context (pod, region,
    ///   team, …) are left out ([`describing_labels`]).
    pub fn text(&self) -> String {
        let mut t = String::new();
        if self.symptom != "alert" {
            t.push_str(&words(&self.symptom));
            t.push_str(", ");
        }
        t.push_str(&words(&self.signal));
        if let Some(s) = &self.summary {
            t.push_str(" (");
            t.push_str(&without_name(s.trim(), &self.service));
            t.push(')');
        }
        if !self.labels.is_empty() {
            let labels: Vec<String> = self.labels.iter().map(|(k, v)| format!("{} {}", words(k), v)).collect();
            t.push_str(" [");
            t.push_str(&labels.join(", "));
            t.push(']');
        }
        if let Some(h) = &self.hypothesis {
            t.push_str("; cause: ");
            t.push_str(&without_name(h, &self.service));
        }
        if let Some(r) = &self.remedy {
            t.push_str(&format!("; resolution: {}", words(&r.action)));
            if let Some(o) = &self.outcome {
                t.push_str(", ");
                t.push_str(o);
            }
        }
        t
    }
}

/// `text` with the service's name (a whole word, with an article before it
/// or not) read as `the service`.
fn without_name(text: &str, service: &str) -> String {
    if service.is_empty() {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(service) {
        let before = &rest[..at];
        let after = &rest[at + service.len()..];
        let starts = before.chars().next_back().is_none_or(|c| !c.is_alphanumeric() && c != '-' && c != '_');
        let ends = after.chars().next().is_none_or(|c| !c.is_alphanumeric() && c != '-' && c != '_');
        if starts && ends {
            let kept = ["the ", "The ", "a ", "A ", "an ", "An "]
                .iter()
                .find_map(|article| before.strip_suffix(article))
                .unwrap_or(before);
            out.push_str(kept);
            out.push_str("the service");
        } else {
            out.push_str(before);
            out.push_str(service);
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// An identifier as words: `_`, `-`, `.` and `/` become spaces and a
/// lower-to-upper change starts a word (`KubePodCrashLooping` → `kube pod
/// crash looping`). Other text is kept, lower-cased.
pub fn words(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len() + 8);
    for (i, &c) in chars.iter().enumerate() {
        if matches!(c, '_' | '-' | '.' | '/') {
            if !out.is_empty() && !out.ends_with(' ') {
                out.push(' ');
            }
            continue;
        }
        let prev = i.checked_sub(1).map(|p| chars[p]);
        let next = chars.get(i + 1);
        // `latencyHigh`, `p99Latency`, and the last capital of an acronym
        // that starts a word: `CPUThrottling` → `cpu throttling`.
        let starts_word = c.is_uppercase()
            && prev.is_some_and(|p| {
                p.is_lowercase() || p.is_ascii_digit() || (p.is_uppercase() && next.is_some_and(|n| n.is_lowercase()))
            });
        if starts_word && !out.ends_with(' ') {
            out.push(' ');
        }
        out.extend(c.to_lowercase());
    }
    out.trim_end().to_owned()
}

/// A remembered incident found near a text.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Neighbour {
    /// Cosine similarity of the two texts' vectors, in [-1, 1].
    pub similarity: f64,
    pub incident: Remembered,
}

/// What to look for: the incidents nearest to `text` among those that pass
/// the filters.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Recall {
    pub text: String,
    /// Only these services (any service when empty).
    pub services: Vec<String>,
    /// Only incidents in these states (any when empty).
    pub statuses: Vec<Status>,
    /// Only incidents opened at or after this time.
    pub opened_since: Option<Timestamp>,
    /// Never this incident (the one asking).
    pub except: Option<String>,
    pub limit: usize,
}

/// Whether memory is on, and what it runs on, for `/health/detailed` and the start line.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum MemoryState {
    On { model: String, index: String },
    Off { reason: String },
}

/// The port semantic memory is used through.
#[async_trait]
pub trait IncidentMemory: Send + Sync {
    fn state(&self) -> MemoryState;
    /// Stores `incident` (embedding its text), replacing what was kept under its id.
    async fn remember(&self, incident: &Remembered) -> Result<(), PortError>;
    /// The incidents nearest to `recall.text`, most similar first.
    async fn recall(&self, recall: &Recall) -> Result<Vec<Neighbour>, PortError>;
    /// The record kept for `incident`, if any.
    async fn get(&self, incident: &str) -> Result<Option<Remembered>, PortError>;
    /// Cosine similarity of two texts' vectors, in [-1, 1].
    async fn similarity(&self, a: &str, b: &str) -> Result<f64, PortError>;
    /// How many incidents are kept (asks the index: its health check too).
    async fn size(&self) -> Result<u64, PortError>;
    /// Drops the incidents that ended before `before`: the runs' retention,
    /// applied to memory (the engine prunes a run once it finished longer ago).
    async fn prune(&self, before: Timestamp) -> Result<(), PortError>;
}

/// How many similar past incidents analysis reads, and the API lists by default.
pub const SIMILAR_PAST: usize = 5;

/// Least similarity for a past incident to count as similar at all.
pub const MIN_SIMILARITY: f64 = 0.35;

/// Past incidents like `incident` (its text as opened: what it is about),
/// ended ones only: those on the same service first, most similar first,
/// then the same kind of problem elsewhere, up to `limit`, each at least
/// [`MIN_SIMILARITY`] alike. An open incident never finds itself: it is not
/// ended.
pub async fn similar_past(
    memory: &dyn IncidentMemory,
    incident: &Remembered,
    limit: usize,
) -> Result<Vec<Neighbour>, PortError> {
    let text = Remembered { hypothesis: None, remedy: None, outcome: None, ..incident.clone() }.text();
    let ended = vec![Status::Resolved, Status::Escalated, Status::Closed];
    let recall = |services: Vec<String>, limit: usize| Recall {
        text: text.clone(),
        services,
        statuses: ended.clone(),
        opened_since: None,
        except: Some(incident.incident.clone()).filter(|i| !i.is_empty()),
        limit,
    };
    let mut found: Vec<Neighbour> = memory
        .recall(&recall(vec![incident.service.clone()], limit))
        .await?
        .into_iter()
        .filter(|n| n.similarity >= MIN_SIMILARITY)
        .collect();
    if found.len() < limit {
        // Elsewhere: ask for enough to fill after dropping this service's own.
        let more = memory.recall(&recall(Vec::new(), limit * 2 + found.len())).await?;
        found.extend(
            more.into_iter()
                .filter(|n| n.incident.service != incident.service && n.similarity >= MIN_SIMILARITY)
                .take(limit - found.len()),
        );
    }
    Ok(found)
}

/// Fixes that give a service more of something: the same one again on a
/// target means the last one did not hold (a memory limit doubled, then
/// doubled again).
pub const ESCALATING_ACTIONS: &[&str] =
    &["patch_memory_limit", "scale_deployment", "raise_hpa_max", "expand_volume", "scale_service"];

/// How far back remediations of a target count toward a recurrence.
pub const RECURRENCE_WINDOW: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// Remediations of one target before this one, within the window, that make it recurring.
pub const RECURRENCE_COUNT: usize = 2;

/// An earlier fix of the same target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PreviousFix {
    pub incident: String,
    pub action: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, serde_json::Value>,
    /// When it ended (milliseconds).
    pub at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
}

/// The same target remediated again and again: the fix is not holding, and
/// a human decides the next one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Recurrence {
    pub target: String,
    pub action: String,
    /// The earlier fixes of this target within the window, newest first.
    pub previous: Vec<PreviousFix>,
    /// The same escalating fix again ([`ESCALATING_ACTIONS`]).
    pub escalating: bool,
}

impl Recurrence {
    /// One line for the timeline, Slack and the postmortem.
    pub fn describe(&self) -> String {
        let list: Vec<String> = self
            .previous
            .iter()
            .map(|p| {
                let params =
                    if p.params.is_empty() { String::new() } else { format!(" {}", serde_json::json!(p.params)) };
                format!("{}{params} ({})", p.action, p.incident)
            })
            .collect();
        format!(
            "recurring: {} on {} again: {} earlier fix(es) of this target in 7 days{}: {}",
            self.action,
            self.target,
            self.previous.len(),
            if self.escalating { ", the same escalating fix among them" } else { "" },
            list.join(", ")
        )
    }
}

/// Whether `action` on `target` for `incident` repeats earlier fixes:
/// [`RECURRENCE_COUNT`] or more ended incidents of the service whose last
/// action was on the same target within [`RECURRENCE_WINDOW`], or one with
/// the same escalating action.
pub async fn recurrence(
    memory: &dyn IncidentMemory,
    incident: &Remembered,
    executor_action: &str,
    target: &str,
    now: Timestamp,
) -> Result<Option<Recurrence>, PortError> {
    let since = Timestamp(now.0.saturating_sub(RECURRENCE_WINDOW.as_millis() as i64));
    let recall = Recall {
        text: incident.text(),
        services: vec![incident.service.clone()],
        statuses: vec![Status::Resolved, Status::Escalated, Status::Closed],
        opened_since: Some(since),
        except: Some(incident.incident.clone()).filter(|i| !i.is_empty()),
        limit: 100,
    };
    let mut previous: Vec<PreviousFix> = memory
        .recall(&recall)
        .await?
        .into_iter()
        .filter_map(|n| {
            let r = n.incident;
            let remedy = r.remedy?;
            (remedy.target == target).then(|| PreviousFix {
                incident: r.incident,
                action: remedy.action,
                params: remedy.params,
                at: r.resolved_at.unwrap_or(r.opened_at),
                outcome: r.outcome,
            })
        })
        .collect();
    previous.sort_by_key(|p| std::cmp::Reverse(p.at));
    let escalating =
        ESCALATING_ACTIONS.contains(&executor_action) && previous.iter().any(|p| p.action == executor_action);
    if previous.len() >= RECURRENCE_COUNT || escalating {
        return Ok(Some(Recurrence {
            target: target.to_owned(),
            action: executor_action.to_owned(),
            previous,
            escalating,
        }));
    }
    Ok(None)
}

/// No model: semantic memory is off. Nothing is kept, nothing is found, and
/// [`state`](IncidentMemory::state) says why.
#[derive(Clone, Debug)]
pub struct NoMemory {
    pub reason: String,
}

impl Default for NoMemory {
    fn default() -> Self {
        NoMemory { reason: "no model directory (SENTINEL_MODEL_DIR) is set".into() }
    }
}

#[async_trait]
impl IncidentMemory for NoMemory {
    fn state(&self) -> MemoryState {
        MemoryState::Off { reason: self.reason.clone() }
    }
    async fn remember(&self, _: &Remembered) -> Result<(), PortError> {
        Ok(())
    }
    async fn recall(&self, _: &Recall) -> Result<Vec<Neighbour>, PortError> {
        Ok(Vec::new())
    }
    async fn get(&self, _: &str) -> Result<Option<Remembered>, PortError> {
        Ok(None)
    }
    async fn similarity(&self, _: &str, _: &str) -> Result<f64, PortError> {
        Err(PortError::Refused(format!("semantic memory is off: {}", self.reason)))
    }
    async fn prune(&self, _: Timestamp) -> Result<(), PortError> {
        Ok(())
    }
    async fn size(&self) -> Result<u64, PortError> {
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_read_as_words() {
        assert_eq!(words("HighRequestLatency"), "high request latency");
        assert_eq!(words("p99_latency_ms"), "p99 latency ms");
        assert_eq!(words("KubePodCrashLooping"), "kube pod crash looping");
        assert_eq!(words("checkout-web"), "checkout web");
        assert_eq!(words("http.server.duration"), "http server duration");
        assert_eq!(words("CPUThrottlingHigh"), "cpu throttling high");
        assert_eq!(words("already words"), "already words");
    }

    #[test]
    fn the_service_is_not_in_the_text() {
        assert_eq!(
            without_name("p99 latency of checkout is above 500 ms", "checkout"),
            "p99 latency of the service is above 500 ms"
        );
        assert_eq!(without_name("the checkout queue backlog grows", "checkout"), "the service queue backlog grows");
        assert_eq!(
            without_name("checkout-web is slow; checkout too", "checkout"),
            "checkout-web is slow; the service too"
        );
        assert_eq!(without_name("a cart pod was OOM killed", "cart"), "the service pod was OOM killed");
        assert_eq!(without_name("nothing here", ""), "nothing here");
    }

    #[test]
    fn instance_labels_are_not_embedded() {
        let labels: BTreeMap<String, String> = [("pod", "api-7d9f"), ("reason", "OOMKilled"), ("severity", "page")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        assert_eq!(describing_labels(&labels).into_keys().collect::<Vec<_>>(), vec!["reason".to_owned()]);
    }
}
