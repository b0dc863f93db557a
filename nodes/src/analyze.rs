//! Root-cause analysis: evidence gathered through the ports, ranked hypotheses
//! with a composite confidence. Deterministic: no LLM decides anything here.
//!
//! Confidence = 0.5 × rule agreement + 0.3 × evidence strength + 0.2 × retrieval
//! relevance, each in [0, 1]:
//! * rule agreement: how well the cause explains this anomaly type (a table);
//! * evidence strength: how strong the supporting signal is (deploy recency,
//!   upstream deviation in σ, the anomaly's own deviation in σ);
//! * retrieval: the best similarity among similar past incidents (semantic
//!   memory, [`crate::memory::similar_past`]) that were *resolved* after
//!   acting on the same cause (the same cause string, or the same kind:
//!   `upstream:*`, `intrinsic:*`); 0 when memory is off or none was. An
//!   escalated or closed past incident is shown, never counted: nothing
//!   confirmed its cause.

use std::collections::BTreeMap;
use std::time::Duration;

use engine::Timestamp;
use petgraph::graph::{DiGraph, NodeIndex};
use serde::{Deserialize, Serialize};

use crate::incident::fingerprint;
use crate::incident::Detection;
use crate::memory::{similar_past, IncidentMemory, Neighbour, Remembered, Status, SIMILAR_PAST};
use crate::ports::{Cluster, Deployments, MetricStore, NodeReport, PortError, WorkloadReport};
use crate::runbook::Evidence;

pub const WEIGHT_RULE: f64 = 0.5;
pub const WEIGHT_EVIDENCE: f64 = 0.3;
pub const WEIGHT_RETRIEVAL: f64 = 0.2;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hypothesis {
    /// `deployment`, `upstream:<service>` or `intrinsic:<anomaly type>`.
    pub cause: String,
    pub summary: String,
    pub evidence: Vec<String>,
    pub rule: f64,
    pub strength: f64,
    pub retrieval: f64,
    pub confidence: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    pub hypotheses: Vec<Hypothesis>,
    pub evidence: BTreeMap<String, Evidence>,
    pub baseline_mean: f64,
    pub baseline_stddev: f64,
    /// Services that call the affected one and show errors too.
    pub downstream_affected: Vec<String>,
    /// Similar past incidents (semantic memory), most relevant first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub similar: Vec<Neighbour>,
    /// Why `similar` is empty when memory could not be asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_note: Option<String>,
}

/// Which service calls which: an edge `a → b` means `a` depends on `b`.
#[derive(Clone, Debug, Default)]
pub struct ServiceGraph {
    graph: DiGraph<String, ()>,
    index: BTreeMap<String, NodeIndex>,
}

impl ServiceGraph {
    pub fn new(edges: &[(&str, &str)]) -> Self {
        let mut g = ServiceGraph::default();
        for (a, b) in edges {
            let (a, b) = (g.node(a), g.node(b));
            g.graph.update_edge(a, b, ());
        }
        g
    }

    fn node(&mut self, name: &str) -> NodeIndex {
        if let Some(i) = self.index.get(name) {
            return *i;
        }
        let i = self.graph.add_node(name.to_owned());
        self.index.insert(name.to_owned(), i);
        i
    }

    fn neighbours(&self, service: &str, dir: petgraph::Direction) -> Vec<String> {
        let Some(&i) = self.index.get(service) else { return Vec::new() };
        let mut v: Vec<String> = self.graph.neighbors_directed(i, dir).map(|n| self.graph[n].clone()).collect();
        v.sort();
        v
    }

    /// What `service` depends on.
    pub fn upstream(&self, service: &str) -> Vec<String> {
        self.neighbours(service, petgraph::Direction::Outgoing)
    }

    /// What depends on `service`.
    pub fn downstream(&self, service: &str) -> Vec<String> {
        self.neighbours(service, petgraph::Direction::Incoming)
    }
}

/// How well a cause explains an anomaly type.
fn rule_agreement(cause: &str, anomaly_type: &str) -> f64 {
    match (cause, anomaly_type) {
        ("deployment", "bad_deployment" | "crash_loop_backoff" | "image_pull_backoff") => 1.0,
        ("deployment", "error_rate_spike" | "latency_spike") => 0.8,
        ("deployment", _) => 0.4,
        ("upstream", "latency_spike" | "error_rate_spike") => 0.8,
        ("upstream", _) => 0.3,
        ("intrinsic", _) => 0.6,
        _ => 0.0,
    }
}

fn mean_stddev(xs: &[f64]) -> Option<(f64, f64)> {
    if xs.len() < 2 {
        return None;
    }
    let mean = xs.iter().sum::<f64>() / xs.len() as f64;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (xs.len() - 1) as f64;
    Some((mean, var.sqrt()))
}

/// Deviation of the latest `recent` samples from the samples before them, in σ.
async fn deviation(
    metrics: &dyn MetricStore,
    service: &str,
    metric: &str,
    now: Timestamp,
) -> Result<Option<f64>, PortError> {
    let before = metrics
        .window(
            service,
            metric,
            now.saturating_sub(Duration::from_secs(3600)),
            now.saturating_sub(Duration::from_secs(600)),
        )
        .await?;
    let recent = metrics
        .window(
            service,
            metric,
            now.saturating_sub(Duration::from_secs(600)),
            now.saturating_add(Duration::from_millis(1)),
        )
        .await?;
    let (Some((mean, sd)), Some(last)) = (mean_stddev(&before.iter().map(|s| s.1).collect::<Vec<_>>()), recent.last())
    else {
        return Ok(None);
    };
    Ok(Some((last.1 - mean) / sd.max(1e-9)))
}

pub struct Ports<'a> {
    pub metrics: &'a dyn MetricStore,
    pub deployments: &'a dyn Deployments,
    pub memory: &'a dyn IncidentMemory,
    pub services: &'a ServiceGraph,
    pub cluster: &'a dyn Cluster,
}

/// What the cluster is asked about: the service's Deployment (from the
/// catalogue), and the node an incident is about, if any.
#[derive(Clone, Debug, Default)]
pub struct ClusterSubject {
    pub workload: Option<(String, String)>,
    pub node: Option<String>,
}

/// Facts only the cluster may state: a label claiming one is ignored.
pub const CLUSTER_FACTS: [&str; 8] = [
    "oom_killed",
    "image_pull_failed",
    "crash_looping",
    "restarts",
    "pods_not_ready",
    "node_not_ready",
    "node_pressure",
    "minutes_since_rollout",
];

/// The facts and evidence lines a workload report gives.
pub fn workload_facts(r: &WorkloadReport, now: Timestamp) -> (BTreeMap<String, Evidence>, Vec<String>) {
    let mut facts = BTreeMap::new();
    let mut lines = Vec::new();
    let oom = r.pods.iter().any(|p| p.last_terminated.as_ref().is_some_and(|(reason, _)| reason == "OOMKilled"));
    let image = r.pods.iter().any(|p| {
        p.waiting.as_deref().is_some_and(|w| matches!(w, "ImagePullBackOff" | "ErrImagePull" | "InvalidImageName"))
    });
    let crash = r.pods.iter().any(|p| p.waiting.as_deref() == Some("CrashLoopBackOff"));
    facts.insert("oom_killed".into(), Evidence::Bool(oom));
    facts.insert("image_pull_failed".into(), Evidence::Bool(image));
    facts.insert("crash_looping".into(), Evidence::Bool(crash));
    facts.insert("restarts".into(), Evidence::Number(r.pods.iter().map(|p| p.restarts).max().unwrap_or(0) as f64));
    facts.insert("pods_not_ready".into(), Evidence::Number(r.pods.iter().filter(|p| !p.ready).count() as f64));
    for p in &r.pods {
        let mut what = Vec::new();
        if let Some((reason, code)) = &p.last_terminated {
            what.push(format!("last terminated {reason} (exit {code})"));
        }
        if let Some(w) = &p.waiting {
            what.push(format!("waiting: {w}"));
        }
        if p.restarts > 0 {
            what.push(format!("{} restarts", p.restarts));
        }
        if !what.is_empty() {
            lines.push(format!("pod {}: {}", p.name, what.join(", ")));
        }
    }
    for e in r.events.iter().filter(|e| e.kind == "Warning").take(3) {
        lines.push(format!("event {} on {} ×{}: {}", e.reason, e.object, e.count, e.message));
    }
    if let Some(latest) = r.rollouts.first() {
        if let Some(created) = latest.created_ms {
            let minutes = ((now.0 - created).max(0) as f64 / 60_000.0).round();
            facts.insert("minutes_since_rollout".into(), Evidence::Number(minutes));
            lines.push(format!(
                "rollout: revision {} ({}, {}) {minutes:.0} min ago",
                latest.revision,
                latest.replicaset,
                latest.images.join(", ")
            ));
        }
    }
    let (not_ready, pressure) = node_facts(&r.nodes, &mut lines);
    facts.insert("node_not_ready".into(), Evidence::Bool(not_ready));
    facts.insert("node_pressure".into(), Evidence::Bool(pressure));
    (facts, lines)
}

/// Whether any node is not ready, and whether any reports pressure; a line per troubled node.
fn node_facts(nodes: &[NodeReport], lines: &mut Vec<String>) -> (bool, bool) {
    for n in nodes.iter().filter(|n| n.ready != Some(true) || !n.problems.is_empty() || n.unschedulable) {
        let ready = match n.ready {
            Some(true) => "Ready",
            Some(false) => "NotReady",
            None => "readiness unknown",
        };
        let cordoned = if n.unschedulable { ", cordoned" } else { "" };
        lines.push(format!("node {}: {ready}{cordoned} {:?}", n.name, n.problems));
    }
    (nodes.iter().any(|n| n.ready == Some(false)), nodes.iter().any(|n| !n.problems.is_empty()))
}

/// Reads the cluster about `subject`: its facts and evidence lines. A cluster
/// that cannot be read is a line of evidence, not a failed analysis.
async fn read_cluster(
    cluster: &dyn Cluster,
    subject: &ClusterSubject,
    now: Timestamp,
) -> (BTreeMap<String, Evidence>, Vec<String>) {
    let mut facts = BTreeMap::new();
    let mut lines = Vec::new();
    if let Some((ns, name)) = &subject.workload {
        match cluster.workload(ns, name).await {
            Ok(Some(r)) => (facts, lines) = workload_facts(&r, now),
            Ok(None) => lines.push(format!("the cluster has no Deployment {ns}/{name}")),
            Err(e) => lines.push(format!("the cluster could not be read: {e}")),
        }
    }
    if let Some(node) = &subject.node {
        match cluster.node(node).await {
            Ok(Some(n)) => {
                let (not_ready, pressure) = node_facts(std::slice::from_ref(&n), &mut lines);
                facts.insert("node_not_ready".into(), Evidence::Bool(not_ready));
                facts.insert("node_pressure".into(), Evidence::Bool(pressure));
            }
            Ok(None) => lines.push(format!("the cluster has no node {node}")),
            Err(e) => lines.push(format!("the cluster could not be read: {e}")),
        }
    }
    (facts, lines)
}

pub async fn analyze(
    ports: &Ports<'_>,
    d: &Detection,
    subject: &ClusterSubject,
    now: Timestamp,
) -> Result<Analysis, PortError> {
    let mut evidence: BTreeMap<String, Evidence> = d
        .labels
        .iter()
        .filter(|(k, _)| !CLUSTER_FACTS.contains(&k.as_str()))
        .map(|(k, v)| {
            let e = match v.as_str() {
                "true" => Evidence::Bool(true),
                "false" => Evidence::Bool(false),
                _ => v.parse::<f64>().map(Evidence::Number).unwrap_or_else(|_| Evidence::Text(v.clone())),
            };
            (k.clone(), e)
        })
        .collect();

    // Baseline: the detector's own (it knows which points were anomalous), else
    // the hour before detection.
    let (baseline_mean, baseline_stddev) = if d.baseline_stddev > 0.0 {
        (d.baseline_mean, d.baseline_stddev)
    } else {
        let from = d.started_at.saturating_sub(Duration::from_secs(3600));
        let history = ports.metrics.window(&d.service, &d.metric, from, d.started_at).await?;
        mean_stddev(&history.iter().map(|s| s.1).collect::<Vec<_>>()).unwrap_or((d.baseline_mean, d.baseline_stddev))
    };
    let sigmas = (d.observed - baseline_mean).abs() / baseline_stddev.max(1e-9);
    let deviation_text =
        if baseline_stddev > 0.0 { format!("{sigmas:.1}σ") } else { "off a baseline with no spread".to_owned() };
    let cpu = ports
        .metrics
        .window(
            &d.service,
            "cpu_utilization",
            now.saturating_sub(Duration::from_secs(600)),
            now.saturating_add(Duration::from_millis(1)),
        )
        .await?;
    if let Some((_, c)) = cpu.last() {
        evidence.insert("cpu_utilization".into(), Evidence::Number(*c));
    }

    let (cluster_facts, cluster_lines) = read_cluster(ports.cluster, subject, now).await;
    evidence.extend(cluster_facts);

    let mut candidates: Vec<(String, String, Vec<String>, f64)> = Vec::new();
    let deploys = ports.deployments.since(&d.service, d.started_at.saturating_sub(Duration::from_secs(7200))).await?;
    let last = deploys.iter().filter(|x| x.at <= d.started_at).max_by_key(|x| x.at);
    if last.is_none() {
        // No deploy event, but the cluster rolled the Deployment out recently.
        if let Some(Evidence::Number(m)) = evidence.get("minutes_since_rollout").cloned() {
            if m <= 120.0 {
                evidence.insert("minutes_since_deploy".into(), Evidence::Number(m));
                let line = cluster_lines.iter().find(|l| l.starts_with("rollout:")).cloned().unwrap_or_default();
                candidates.push((
                    "deployment".into(),
                    format!("a rollout of {} {m:.0} min before the analysis", d.service),
                    vec![line],
                    (1.0 - m / 120.0).clamp(0.0, 1.0),
                ));
            }
        }
    }
    if let Some(last) = last {
        let minutes = d.started_at.since(last.at).as_secs_f64() / 60.0;
        evidence.insert("minutes_since_deploy".into(), Evidence::Number(minutes.round()));
        candidates.push((
            "deployment".into(),
            format!("deployment of {} {} {:.0} min before the anomaly", d.service, last.version, minutes),
            vec![format!("deployed {} at {}", last.version, last.at.0)],
            (1.0 - minutes / 120.0).clamp(0.0, 1.0),
        ));
    }
    let mut upstream_degraded = false;
    for up in ports.services.upstream(&d.service) {
        if let Some(z) = deviation(ports.metrics, &up, "error_rate", d.started_at).await? {
            if z > 3.0 {
                upstream_degraded = true;
                candidates.push((
                    format!("upstream:{up}"),
                    format!("{up}, which {} depends on, is failing too", d.service),
                    vec![format!("{up} error_rate {z:.1}σ above its baseline")],
                    (z / 10.0).min(1.0),
                ));
            }
        }
    }
    evidence.insert("upstream_degraded".into(), Evidence::Bool(upstream_degraded));
    let mut downstream_affected = Vec::new();
    for down in ports.services.downstream(&d.service) {
        if deviation(ports.metrics, &down, "error_rate", d.started_at).await?.is_some_and(|z| z > 3.0) {
            downstream_affected.push(down);
        }
    }
    candidates.push((
        format!("intrinsic:{}", d.anomaly_type),
        format!("{} in {} itself ({deviation_text} on {})", d.anomaly_type.replace('_', " "), d.service, d.metric),
        std::iter::once(format!(
            "{} = {:.2} against a baseline of {:.2} ± {:.2}",
            d.metric, d.observed, baseline_mean, baseline_stddev
        ))
        .chain(cluster_lines.iter().cloned())
        .collect(),
        (sigmas / 10.0).min(1.0),
    ));

    // Memory is an aid: when it cannot be asked, analysis goes on without it.
    let me = Remembered::opened("", &fingerprint(d), d);
    let (similar, memory_note) = match similar_past(ports.memory, &me, SIMILAR_PAST).await {
        Ok(similar) => (similar, None),
        Err(e) => (Vec::new(), Some(format!("similar past incidents unavailable: {e}"))),
    };
    let mut hypotheses: Vec<Hypothesis> = candidates
        .into_iter()
        .map(|(cause, summary, mut ev, strength)| {
            let kind = cause.split(':').next().unwrap_or_default();
            let rule = rule_agreement(kind, &d.anomaly_type);
            let confirming: Vec<&Neighbour> = similar
                .iter()
                .filter(|n| n.incident.status == Status::Resolved)
                .filter(|n| {
                    n.incident.cause.as_deref().is_some_and(|c| c == cause || c.split(':').next() == Some(kind))
                })
                .collect();
            let retrieval = confirming.iter().map(|n| n.similarity.clamp(0.0, 1.0)).fold(0.0, f64::max);
            if let Some(best) = confirming.iter().max_by(|a, b| a.similarity.total_cmp(&b.similarity)) {
                ev.push(format!(
                    "{} similar past incident(s) resolved with this cause; most similar {} ({:.2}){}",
                    confirming.len(),
                    best.incident.incident,
                    best.similarity,
                    best.incident.remedy.as_ref().map(|r| format!(", fixed by {}", r.action)).unwrap_or_default()
                ));
            }
            let confidence = WEIGHT_RULE * rule + WEIGHT_EVIDENCE * strength + WEIGHT_RETRIEVAL * retrieval;
            Hypothesis { cause, summary, evidence: ev, rule, strength, retrieval, confidence }
        })
        .collect();
    hypotheses.sort_by(|a, b| b.confidence.total_cmp(&a.confidence).then_with(|| a.cause.cmp(&b.cause)));
    Ok(Analysis { hypotheses, evidence, baseline_mean, baseline_stddev, downstream_affected, similar, memory_note })
}
