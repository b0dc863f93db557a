//! The incident graph on the engine:
//!
//! ```text
//! detect → analyze → plan → await_approval → execute → verify ─┬→ resolve
//!             ↑        └→ escalate      └→ closed     └→ escalate  └→ rollback ─┬→ analyze
//!             └─────────────────────────────────────────────────────────────────┘└→ escalate
//! ```
//!
//! (`analyze` also escalates when its evidence stays out of reach after its retries.)
//!
//! Every node reads the incident state, acts only through ports, and appends
//! to the incident's timeline, which the postmortem is written from.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use engine::{Graph, Hold, NodeContext, NodeError, Reservation, RetryPolicy, Signal, Timestamp, Transition};
use executors::{ExecError, Executor, Outcome};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::analyze::{self, Analysis};
use crate::catalog::Catalog;
use crate::incident::{self, Detection, Severity};
use crate::memory::{recurrence, IncidentMemory, Recurrence, Remedy, Remembered, Status as MemoryStatus};
use crate::policy::{self, facts, Decision, Facts, PolicyConfig, ProposedAction};
use crate::ports::{AlertRules, Cluster, Deployments, MetricStore, PortError};
use crate::postmortem;
use crate::runbook::{PlannedAction, Runbooks};
use crate::verify::{self, Baseline, Verdict, VerifyConfig};

pub const GRAPH: &str = "incident";
pub const VERSION: i32 = 1;

/// Outbox topics the workflow writes.
pub mod topics {
    pub const APPROVAL_REQUESTED: &str = "approval_requested";
    pub const DECIDED: &str = "decided";
    pub const EXECUTED: &str = "executed";
    pub const ESCALATION: &str = "escalation";
    pub const RESOLVED: &str = "resolved";
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TimelineEntry {
    pub at: Timestamp,
    pub node: String,
    pub what: String,
}

/// Who decided about an action, and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecisionRecord {
    pub approved: bool,
    /// `policy`, `timeout`, or the authenticated principal: an API key's name
    /// or `slack:USER_ID`. Never taken from a request body.
    pub by: String,
    pub reason: String,
    pub at: Timestamp,
    /// The gate decided (see [`gate_id`]).
    #[serde(default)]
    pub gate: Option<String>,
    /// Where the decision came from (`api`, `slack`), and what the caller
    /// wrote about who it acted for: a note, not an identity.
    #[serde(default)]
    pub via: Option<String>,
    #[serde(default)]
    pub note: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActionRecord {
    pub action: PlannedAction,
    pub pre_state: serde_json::Value,
    pub outcome: serde_json::Value,
    /// The guardrails were in dry-run mode: nothing was done. A dry run is
    /// never verified, rolled back or counted by the policy's facts.
    pub dry_run: bool,
    pub at: Timestamp,
    /// The gate that approved it.
    #[serde(default)]
    pub gate: Option<String>,
}

/// A decision that named a gate the run was not waiting on (stale, a
/// duplicate, or for a proposal since replaced): recorded, never applied.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RefusedDecision {
    pub gate: Option<String>,
    /// `approve` or `reject`.
    pub wanted: String,
    pub by: String,
    pub at: Timestamp,
    pub reason: String,
}

/// The id of an approval gate: the proposal's number within the run and a
/// digest of exactly what was proposed (executor, action, target,
/// parameters), e.g. `2-5f1c09d3a4b7e621`. A decision applies only to the
/// gate it names, so an approval can never move to another action.
pub fn gate_id(number: u32, action: &executors::Action) -> String {
    // Parameters are a BTreeMap, so the JSON (and the digest) is canonical.
    let bound = json!({
        "executor": action.executor, "action": action.action, "target": action.target, "params": action.params,
    });
    let digest = Sha256::digest(bound.to_string().as_bytes());
    format!("{number}-{}", hex::encode(&digest[..8]))
}

/// The incident's state, checkpointed after every node.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub detection: Option<Detection>,
    pub fingerprint: String,
    pub severity: Option<Severity>,
    pub affected: Vec<String>,
    pub analysis: Analysis,
    pub runbook: Option<String>,
    pub plan: Vec<PlannedAction>,
    /// Index into `plan` of the action being decided, executed or verified.
    pub current: usize,
    pub approval_deadline: Option<Timestamp>,
    /// Proposals made so far: gate `n` is the n-th.
    #[serde(default)]
    pub proposals: u32,
    /// The gate of the current proposal.
    #[serde(default)]
    pub gate: Option<String>,
    /// The planned action's target was remediated again and again
    /// (semantic memory): a human decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recurrence: Option<Recurrence>,
    pub decisions: Vec<DecisionRecord>,
    #[serde(default)]
    pub refused_decisions: Vec<RefusedDecision>,
    pub actions: Vec<ActionRecord>,
    pub verify_deadline: Option<Timestamp>,
    /// Metric-store reads that failed during the current verification.
    #[serde(default)]
    pub verify_read_failures: u32,
    /// For an alert's incident: evaluations in a row in which the alert's
    /// expression returned no series.
    #[serde(default)]
    pub alert_clear_streak: u32,
    /// Since when the approved action waits for its target (another run
    /// holds it, or it is cooling down).
    #[serde(default)]
    pub target_wait_since: Option<Timestamp>,
    pub verdict: Option<Verdict>,
    pub rollbacks: u32,
    pub outcome: Option<String>,
    pub resolved_at: Option<Timestamp>,
    pub mttr_secs: Option<f64>,
    pub postmortem: Option<String>,
    pub timeline: Vec<TimelineEntry>,
}

impl Incident {
    pub fn new(detection: Detection) -> Self {
        Incident { detection: Some(detection), ..Incident::default() }
    }

    fn note(&mut self, at: Timestamp, node: &str, what: impl Into<String>) {
        self.timeline.push(TimelineEntry { at, node: node.to_owned(), what: what.into() });
    }

    fn detection(&self) -> Result<&Detection, NodeError> {
        self.detection.as_ref().ok_or_else(|| NodeError::fatal("incident has no detection"))
    }
}

/// The facts the policy needs, read from durable storage.
#[async_trait]
pub trait SafetyFacts: Send + Sync {
    async fn facts(&self, action: &PlannedAction, service: &str, now: Timestamp) -> Result<Facts, PortError>;
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WorkflowConfig {
    pub policy: PolicyConfig,
    pub verify: VerifyConfig,
    /// How long a human has to decide before the incident escalates and the action is rejected.
    pub approval_timeout: Duration,
    /// How long to watch the metric after an action before rolling back.
    pub verify_window: Duration,
    /// How often the verify node looks at the metric.
    pub verify_interval: Duration,
    /// Rollbacks after which the incident is escalated instead of re-analysed.
    pub max_rollbacks: u32,
    /// Least time between two runs' actions on one target, fleet-wide (one
    /// run may act again on its own target at once, e.g. after a rollback).
    pub target_cooldown: Duration,
}

impl Default for WorkflowConfig {
    fn default() -> Self {
        WorkflowConfig {
            policy: PolicyConfig::default(),
            verify: VerifyConfig::default(),
            approval_timeout: Duration::from_secs(15 * 60),
            verify_window: Duration::from_secs(10 * 60),
            verify_interval: Duration::from_secs(30),
            max_rollbacks: 2,
            target_cooldown: Duration::from_secs(60),
        }
    }
}

/// Everything the nodes reach the world through.
pub struct Workflow {
    pub config: WorkflowConfig,
    pub runbooks: Runbooks,
    /// The service catalogue: tiers, dependencies, and the only source of targets.
    pub services: Catalog,
    pub metrics: Arc<dyn MetricStore>,
    pub deployments: Arc<dyn Deployments>,
    /// Semantic memory: where this incident is kept, and similar ones found.
    pub memory: Arc<dyn IncidentMemory>,
    /// Evaluates alerting rules (Prometheus), to verify an alert's incident.
    pub alerts: Arc<dyn AlertRules>,
    /// The cluster's word on a workload or a node (Kubernetes, read-only).
    pub cluster: Arc<dyn Cluster>,
    /// Acts on the world: the executors' factory (every backend behind the
    /// guardrails, dry-run mode included).
    pub executor: Arc<dyn Executor>,
    pub safety: Arc<dyn SafetyFacts>,
}

fn port(e: PortError) -> NodeError {
    match e {
        PortError::Unavailable(m) => NodeError::Retryable(m),
        PortError::Refused(m) => NodeError::Fatal(m),
    }
}

type Out = Result<(Incident, Transition), NodeError>;

/// Builds the incident graph over `workflow`.
pub fn graph(workflow: Arc<Workflow>) -> Graph<Incident> {
    // Every node first takes in the detections that joined the incident since.
    let w = |f: fn(Arc<Workflow>, Incident, NodeContext) -> futures_box::BoxOut| {
        let wf = workflow.clone();
        move |mut s: Incident, ctx: NodeContext| {
            absorb_joins(&mut s, &ctx);
            f(wf.clone(), s, ctx)
        }
    };
    let io = io_retry();
    Graph::builder(GRAPH, VERSION)
        .node("detect", w(|w, s, c| Box::pin(detect(w, s, c))))
        .node_with_retry("analyze", w(|w, s, c| Box::pin(analyze_node(w, s, c))), analyze_retry())
        .node("plan", w(|w, s, c| Box::pin(plan(w, s, c))))
        .node_with_retry("await_approval", w(|w, s, c| Box::pin(await_approval(w, s, c))), io.clone())
        .node_with_retry("execute", w(|w, s, c| Box::pin(execute(w, s, c))), io.clone())
        .node_with_retry("verify", w(|w, s, c| Box::pin(verify_node(w, s, c))), io.clone())
        .node_with_retry("rollback", w(|w, s, c| Box::pin(rollback(w, s, c))), io)
        .node("resolve", w(|w, s, c| Box::pin(resolve(w, s, c))))
        .node("escalate", w(|w, s, c| Box::pin(escalate(w, s, c))))
        .node("closed", w(|w, s, c| Box::pin(closed(w, s, c))))
        .edge("detect", "next", "analyze")
        .edge("analyze", "next", "plan")
        .edge("analyze", "unanalyzable", "escalate")
        .edge("plan", "next", "await_approval")
        .edge("plan", "no_action", "escalate")
        .edge("await_approval", "approved", "execute")
        .edge("await_approval", "rejected", "closed")
        .edge("await_approval", "cleared", "closed")
        .edge("execute", "next", "verify")
        .edge("execute", "failed", "escalate")
        .edge("execute", "dry_run", "closed")
        .edge("verify", "recovered", "resolve")
        .edge("verify", "not_recovered", "rollback")
        .edge("verify", "unverifiable", "escalate")
        .edge("rollback", "reanalyze", "analyze")
        .edge("rollback", "escalate", "escalate")
        .start("detect")
        .build()
        .expect("the incident graph is valid")
}

mod futures_box {
    use super::Out;
    pub type BoxOut = std::pin::Pin<Box<dyn std::future::Future<Output = Out> + Send>>;
}

async fn detect(w: Arc<Workflow>, mut s: Incident, ctx: NodeContext) -> Out {
    let mut d = s.detection()?.clone();
    s.fingerprint = incident::fingerprint(&d);
    // An alert's subject label may name a pod or a scrape job: the incident
    // is about the catalogued service it belongs to.
    if let Some(service) = w.services.identify(&d).filter(|name| *name != d.service) {
        s.note(ctx.now(), "detect", format!("{} belongs to service {service}", d.service));
        d.service = service;
        s.detection = Some(d.clone());
    }
    let impact = incident::impact(&d);
    let severity = incident::severity(impact, w.services.tier(&d.service));
    s.severity = Some(severity);
    s.affected = vec![d.service.clone()];
    s.note(
        ctx.now(),
        "detect",
        format!(
            "{} on {} ({} = {:.2}, baseline {:.2}): {:?}, impact {:?}",
            d.anomaly_type, d.service, d.metric, d.observed, d.baseline_mean, severity, impact
        ),
    );
    remember(&w, &mut s, &ctx, MemoryStatus::Open).await;
    Ok((s, Transition::route("next")))
}

/// Takes the `attach` signals delivered since the last step: repeats of the
/// detection are consumed quietly; detections that joined by meaning are
/// noted on the timeline, and a downstream service that joined becomes an
/// affected service of this incident (storm collapse).
fn absorb_joins(s: &mut Incident, ctx: &NodeContext) {
    while let Some(signal) = ctx.take_signal(&["attach"]) {
        let Some(join) = signal.payload.get("join") else { continue };
        let detection = &signal.payload["detection"];
        let what = format!(
            "{} {} on {}",
            detection["anomaly_type"].as_str().unwrap_or("detection"),
            detection["metric"].as_str().unwrap_or_default(),
            detection["service"].as_str().unwrap_or_default()
        );
        let how = match join["how"].as_str() {
            Some("downstream") => {
                let service = join["service"].as_str().unwrap_or_default().to_owned();
                if !service.is_empty() && !s.affected.contains(&service) {
                    s.affected.push(service);
                }
                format!(
                    "a caller's symptom (reads {:.2} like one)",
                    join["caller_symptom"].as_f64().unwrap_or_default()
                )
            }
            _ => format!(
                "the same problem in other words (similarity {:.2})",
                join["similarity"].as_f64().unwrap_or_default()
            ),
        };
        s.note(signal.received_at, ctx.node(), format!("joined: {what}, {how}"));
    }
}

/// The incident as semantic memory keeps it, in `status`.
pub fn memory_record(s: &Incident, run: engine::RunId, status: MemoryStatus, now: Timestamp) -> Option<Remembered> {
    let d = s.detection.as_ref()?;
    let mut r = Remembered::opened(&run.to_string(), &s.fingerprint, d);
    r.status = status;
    if status != MemoryStatus::Open {
        r.resolved_at = Some(s.resolved_at.unwrap_or(now).0);
    }
    if let Some(h) = s.analysis.hypotheses.first() {
        r.cause = Some(h.cause.clone());
        r.hypothesis = Some(h.summary.clone());
    }
    r.remedy = s.actions.iter().rev().find(|a| !a.dry_run).map(|a| Remedy {
        executor: a.action.action.executor.clone(),
        action: a.action.action.action.clone(),
        target: a.action.action.target.clone(),
        params: a.action.action.params.clone(),
    });
    r.outcome = s.outcome.clone();
    r.mttr_secs = s.mttr_secs;
    r.affected = s.affected.iter().filter(|a| **a != d.service).cloned().collect();
    Some(r)
}

/// Keeps the incident in semantic memory. Memory is an aid, never a
/// condition: when it cannot be written the incident goes on, and its
/// timeline says so.
async fn remember(w: &Workflow, s: &mut Incident, ctx: &NodeContext, status: MemoryStatus) {
    let Some(record) = memory_record(s, ctx.run_id(), status, ctx.now()) else { return };
    if let Err(e) = w.memory.remember(&record).await {
        tracing::warn!(run = %ctx.run_id(), error = %e, "semantic memory: could not keep the incident");
        s.note(ctx.now(), ctx.node(), format!("semantic memory could not keep this incident ({e})"));
    }
}

async fn analyze_node(w: Arc<Workflow>, mut s: Incident, ctx: NodeContext) -> Out {
    let d = s.detection()?.clone();
    let ports = analyze::Ports {
        metrics: &*w.metrics,
        deployments: &*w.deployments,
        memory: &*w.memory,
        services: w.services.graph(),
        cluster: &*w.cluster,
    };
    // The cluster is asked about the Deployment the catalogue places the
    // service in, and about the node a node's incident names.
    let subject = analyze::ClusterSubject {
        workload: w
            .services
            .placement(&d.service)
            .and_then(|p| p.kubernetes)
            .map(|k| (k.namespace, k.deployment.unwrap_or_else(|| d.service.clone()))),
        node: d.labels.get("node").cloned(),
    };
    let analysis = match analyze::analyze(&ports, &d, &subject, ctx.now()).await.map_err(port) {
        Ok(a) => a,
        Err(e) if is_final(&e, &ctx, &analyze_retry()) => {
            // The evidence stayed out of reach (a metric store outage longer
            // than the retries): a person takes over rather than the run failing.
            s.note(ctx.now(), "analyze", format!("could not gather evidence after {} attempts: {e}", ctx.attempt()));
            s.outcome = Some(format!("escalated: could not analyze ({e})"));
            return Ok((s, Transition::route("unanalyzable")));
        }
        Err(e) => return Err(e),
    };
    for down in &analysis.downstream_affected {
        if !s.affected.contains(down) {
            s.affected.push(down.clone());
        }
    }
    let top = analysis
        .hypotheses
        .first()
        .map(|h| format!("{} ({:.0}%)", h.summary, h.confidence * 100.0))
        .unwrap_or_default();
    s.note(ctx.now(), "analyze", format!("{} hypotheses; top: {top}", analysis.hypotheses.len()));
    s.analysis = analysis;
    Ok((s, Transition::route("next")))
}

async fn plan(w: Arc<Workflow>, mut s: Incident, ctx: NodeContext) -> Out {
    let d = s.detection()?.clone();
    // Where the service runs is the catalogue's word, not a label's.
    let mut evidence = s.analysis.evidence.clone();
    if let Some(p) = w.services.placement(&d.service) {
        let kinds: Vec<&str> =
            [("kubernetes", p.kubernetes.is_some()), ("ecs", p.ecs.is_some()), ("ec2", p.ec2.is_some())]
                .into_iter()
                .filter_map(|(k, on)| on.then_some(k))
                .collect();
        if let [only] = kinds.as_slice() {
            evidence.insert("platform".into(), crate::runbook::Evidence::Text((*only).to_owned()));
        }
    }
    let Some(runbook) = w.runbooks.choose(&d, &evidence) else {
        let what = match &d.source {
            incident::Source::Alertmanager { alertname, .. } => format!("alert {alertname}"),
            incident::Source::Detector { .. } => d.anomaly_type.clone(),
        };
        s.note(ctx.now(), "plan", format!("no runbook answers {what}"));
        s.outcome = Some("escalated: no runbook".into());
        return Ok((s, Transition::route("no_action")));
    };
    let plan = runbook.plan(&evidence, &d, &w.services);
    for why in &plan.untargeted {
        s.note(ctx.now(), "plan", format!("runbook {}: {why}", runbook.id));
    }
    let untargeted_only = plan.actions.is_empty() && !plan.untargeted.is_empty();
    let planned = plan.actions;
    // Actions already tried and rolled back are not planned again.
    let tried: Vec<(&str, &str)> =
        s.actions.iter().map(|a| (a.action.action.action.as_str(), a.action.action.target.as_str())).collect();
    let fresh: Vec<PlannedAction> = planned
        .into_iter()
        .filter(|p| !tried.contains(&(p.action.action.as_str(), p.action.target.as_str())))
        .collect();
    s.runbook = Some(runbook.id.clone());
    let Some(first) = fresh.first() else {
        if untargeted_only {
            s.outcome = Some("escalated: no action has a target in the service catalogue".into());
        } else {
            s.note(ctx.now(), "plan", format!("runbook {} has no untried action", runbook.id));
            s.outcome = Some("escalated: no untried action".into());
        }
        return Ok((s, Transition::route("no_action")));
    };
    s.note(
        ctx.now(),
        "plan",
        format!(
            "runbook {}: {} on {} (downtime {}s)",
            runbook.id,
            first.action.action,
            first.action.target,
            first.estimated_downtime.as_secs()
        ),
    );
    // The same target fixed again and again: the fix is not holding.
    let (executor_action, target) = (first.action.action.clone(), first.action.target.clone());
    s.recurrence = None;
    if let Some(me) = memory_record(&s, ctx.run_id(), MemoryStatus::Open, ctx.now()) {
        match recurrence(&*w.memory, &me, &executor_action, &target, ctx.now()).await {
            Ok(Some(r)) => {
                s.note(ctx.now(), "plan", r.describe());
                s.recurrence = Some(r);
            }
            Ok(None) => {}
            Err(e) => s.note(ctx.now(), "plan", format!("could not ask semantic memory about earlier fixes ({e})")),
        }
    }
    s.plan = fresh;
    s.current = 0;
    s.approval_deadline = None;
    Ok((s, Transition::route("next")))
}

fn current(s: &Incident) -> Result<PlannedAction, NodeError> {
    s.plan.get(s.current).cloned().ok_or_else(|| NodeError::fatal("no planned action"))
}

/// A human's decision as the API or Slack delivered it: the gate it names and
/// the authenticated principal who made it.
struct HumanDecision {
    approved: bool,
    gate: Option<String>,
    by: String,
    reason: String,
    via: Option<String>,
    note: Option<String>,
}

impl HumanDecision {
    fn from_signal(signal: &Signal) -> HumanDecision {
        let text = |k: &str| signal.payload.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        HumanDecision {
            approved: signal.kind == "approve",
            gate: text("gate"),
            by: text("by").unwrap_or_else(|| "unknown".to_owned()),
            reason: text("reason").unwrap_or_default(),
            via: text("via"),
            note: text("note").filter(|n| !n.is_empty()),
        }
    }
}

async fn await_approval(w: Arc<Workflow>, mut s: Incident, ctx: NodeContext) -> Out {
    let planned = current(&s)?;
    let service = s.detection()?.service.clone();
    let now = ctx.now();
    if s.approval_deadline.is_none() {
        // A new proposal: a new gate, bound to exactly this action.
        s.proposals += 1;
        let gate = gate_id(s.proposals, &planned.action);
        s.gate = Some(gate.clone());
        let mut facts = w.safety.facts(&planned, &service, now).await.map_err(port)?;
        facts.recurring = s.recurrence.as_ref().map(|r| (r.previous.len(), r.escalating));
        let proposed = ProposedAction {
            service: service.clone(),
            executor: planned.action.executor.clone(),
            action: planned.action.action.clone(),
            target: planned.action.target.clone(),
            estimated_downtime: planned.estimated_downtime,
        };
        let mut decision = policy::decide(&w.config.policy, &proposed, &facts, now);
        if decision == Decision::AutoApprove {
            // The facts were read without a lock: the limits are checked again
            // and the auto-approval recorded in one atomic step, fleet-wide.
            let limits = w.config.policy.limits(&proposed);
            let what = json!({ "gate": gate, "action": proposed.action, "target": proposed.target });
            let key = format!("auto:{gate}");
            match ctx.reserve("policy", &key, facts::AUTO_APPROVAL, &service, what, &limits).await? {
                Reservation::Reserved | Reservation::AlreadyReserved => {}
                Reservation::Refused { limit, count, latest } => {
                    let refusal = w.config.policy.refusal(limit, count, latest);
                    decision = Decision::NeedsHuman { refusals: vec![refusal] };
                }
            }
        }
        let open =
            matches!(policy::breaker(&w.config.policy.breaker, &facts.outcomes, now), policy::Breaker::Open { .. });
        metrics::gauge!("sentinel_breaker_open").set(if open { 1.0 } else { 0.0 });
        let verdict = if decision == Decision::AutoApprove { "approved" } else { "needs_human" };
        metrics::counter!("sentinel_approval_decisions_total", "decider" => "policy", "decision" => verdict)
            .increment(1);
        if decision == Decision::AutoApprove {
            s.decisions.push(DecisionRecord {
                approved: true,
                by: "policy".into(),
                reason: decision.reason(),
                at: now,
                gate: Some(gate.clone()),
                via: None,
                note: None,
            });
            s.note(now, "await_approval", format!("gate {gate}: {}", decision.reason()));
            ctx.send(
                topics::DECIDED,
                json!({ "approved": true, "by": "policy", "gate": gate, "action": planned.action.action }),
            );
            return Ok((s, Transition::route("approved")));
        }
        let deadline = now.saturating_add(w.config.approval_timeout);
        s.approval_deadline = Some(deadline);
        s.note(
            now,
            "await_approval",
            format!("gate {gate}: {}; waiting for a human until {}", decision.reason(), deadline.0),
        );
        ctx.send(
            topics::APPROVAL_REQUESTED,
            json!({ "gate": gate, "action": planned, "reason": decision.reason(), "severity": s.severity, "deadline": deadline }),
        );
    }
    let gate = s.gate.clone().ok_or_else(|| NodeError::fatal("waiting for a decision without a gate"))?;
    if let Some(signal) = ctx.take_signal(&["cleared"]) {
        // The alert group resolved while the action waited for a decision: nothing to do.
        let by = signal.payload.get("source").and_then(|a| a.as_str()).unwrap_or("alertmanager").to_owned();
        s.note(now, "await_approval", format!("condition cleared ({by}) before any action; closing"));
        s.outcome = Some("cleared before any action".into());
        return Ok((s, Transition::route("cleared")));
    }
    while let Some(signal) = ctx.take_signal(&["approve", "reject"]) {
        let d = HumanDecision::from_signal(&signal);
        let kind = if d.approved { "approve" } else { "reject" };
        if d.gate.as_deref() != Some(gate.as_str()) {
            // Not for the proposal on the table: recorded, never applied.
            let named = d.gate.clone().unwrap_or_else(|| "no gate".to_owned());
            let reason = format!("names gate {named}, but the run waits on gate {gate}");
            metrics::counter!("sentinel_approval_decisions_refused_total", "reason" => "stale_gate").increment(1);
            s.note(now, "await_approval", format!("refused a {kind} by {}: {reason}", d.by));
            s.refused_decisions.push(RefusedDecision {
                gate: d.gate,
                wanted: kind.to_owned(),
                by: d.by,
                at: now,
                reason,
            });
            continue;
        }
        let decision = if d.approved { "approved" } else { "rejected" };
        metrics::counter!("sentinel_approval_decisions_total", "decider" => "human", "decision" => decision)
            .increment(1);
        s.note(
            now,
            "await_approval",
            format!(
                "gate {gate} {decision} by {}{}",
                d.by,
                if d.reason.is_empty() { String::new() } else { format!(": {}", d.reason) }
            ),
        );
        ctx.send(
            topics::DECIDED,
            json!({ "approved": d.approved, "by": d.by, "gate": gate, "action": planned.action.action }),
        );
        if !d.approved {
            s.outcome = Some(format!("rejected by {}", d.by));
        }
        s.decisions.push(DecisionRecord {
            approved: d.approved,
            by: d.by,
            reason: d.reason,
            at: now,
            gate: Some(gate),
            via: d.via,
            note: d.note,
        });
        return Ok((s, Transition::route(decision)));
    }
    let deadline = s.approval_deadline.unwrap_or(now);
    if now >= deadline {
        metrics::counter!("sentinel_approval_decisions_total", "decider" => "timeout", "decision" => "rejected")
            .increment(1);
        s.decisions.push(DecisionRecord {
            approved: false,
            by: "timeout".into(),
            reason: "nobody decided in time".into(),
            at: now,
            gate: Some(gate.clone()),
            via: None,
            note: None,
        });
        s.note(now, "await_approval", format!("gate {gate}: approval timed out: escalated and rejected"));
        ctx.send(
            topics::ESCALATION,
            json!({ "reason": "approval timed out", "gate": gate, "action": planned.action.action, "severity": s.severity }),
        );
        s.outcome = Some("rejected: approval timed out".into());
        return Ok((s, Transition::route("rejected")));
    }
    Ok((s, Transition::wait_for(["approve", "reject", "cleared"], Some(deadline))))
}

/// An executor error as the engine should treat it: transient backend
/// failures are retried; a refusal or a bad action is not.
fn exec(e: ExecError) -> NodeError {
    if e.is_transient() || matches!(e, ExecError::Timeout { .. }) {
        NodeError::Retryable(e.to_string())
    } else {
        NodeError::Fatal(e.to_string())
    }
}

/// Whether the engine will run this step again after `e`: a fatal error, or
/// a retryable one on the last attempt, ends the run unless the node routes
/// elsewhere. After an action touched the world the workflow escalates
/// instead, so a failure never goes unseen.
fn is_final(e: &NodeError, ctx: &NodeContext, policy: &RetryPolicy) -> bool {
    matches!(e, NodeError::Fatal(_)) || ctx.attempt() >= policy.max_attempts
}

/// Analysis reads the metric store: its retries outlast a short outage of it
/// (about two minutes in all) before the incident goes to a person.
fn analyze_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 10,
        initial_backoff: Duration::from_millis(500),
        max_backoff: Duration::from_secs(20),
        ..RetryPolicy::default()
    }
}

fn io_retry() -> RetryPolicy {
    RetryPolicy { max_attempts: 5, initial_backoff: Duration::from_millis(200), ..RetryPolicy::default() }
}

/// The resource a run holds while it acts on `target` and verifies the result.
fn target_resource(target: &str) -> String {
    format!("target:{target}")
}

/// How long a hold on a target lasts without renewal: the action, and the
/// verification after it (each verification step renews it).
fn target_hold(w: &Workflow) -> Duration {
    w.config.verify_window + Duration::from_secs(300)
}

async fn execute(w: Arc<Workflow>, mut s: Incident, ctx: NodeContext) -> Out {
    let planned = current(&s)?;
    let action = planned.action.clone();
    let n = s.actions.len();
    let now = ctx.now();
    let service = s.detection()?.service.clone();
    // At most one run acts on a target at a time, fleet-wide, with a cooldown between runs.
    let resource = target_resource(&action.target);
    match ctx.hold(&resource, target_hold(&w), w.config.target_cooldown).await? {
        Hold::Held => {
            if let Some(since) = s.target_wait_since.take() {
                s.note(
                    now,
                    "execute",
                    format!("{} is free after {:.1}s", action.target, now.since(since).as_secs_f64()),
                );
            }
        }
        busy => {
            let (until, why) = match busy {
                Hold::Busy { holder, until } => (until, format!("run {holder} is acting on it")),
                Hold::Cooling { until } => (until, "another run acted on it within the target cooldown".to_owned()),
                Hold::Held => unreachable!("matched above"),
            };
            let since = *s.target_wait_since.get_or_insert(now);
            if now.since(since) >= w.config.approval_timeout {
                s.note(
                    now,
                    "execute",
                    format!("{} stayed busy for {}s; not acting", action.target, now.since(since).as_secs()),
                );
                s.outcome = Some(format!("escalated: {} was busy with another action for too long", action.target));
                return Ok((s, Transition::route("failed")));
            }
            if since == now {
                s.note(now, "execute", format!("waiting for {}: {why}", action.target));
            }
            metrics::counter!("sentinel_target_waits_total").increment(1);
            let next = until
                .min(now.saturating_add(w.config.verify_interval))
                .max(now.saturating_add(Duration::from_millis(10)));
            return Ok((s, Transition::sleep_until(next)));
        }
    }
    let executor = w.executor.clone();
    let captured =
        ctx.effect(&format!("capture-{n}"), |_| async { executor.describe(&action).await.map_err(exec) }).await;
    let pre_state = match captured {
        Ok(pre) => pre,
        Err(e) if is_final(&e, &ctx, &io_retry()) => {
            // Nothing was done: describing is read-only.
            s.note(now, "execute", format!("{action} not attempted: {e}"));
            s.outcome = Some(format!("escalated: could not read {} before acting: {e}", action.target));
            executed_metric(&planned, "refused");
            return Ok((s, Transition::route("failed")));
        }
        Err(e) => return Err(e),
    };
    let pre = &pre_state;
    let act = &action;
    // A refusal is an answer, recorded as such; a backend failure is retried.
    let applied: Result<Result<Outcome, String>, NodeError> = ctx
        .effect(&format!("apply-{n}"), |attempt| async move {
            match executor.execute(act, pre, &attempt.idempotency_key).await {
                Ok(outcome) => Ok(Ok(outcome)),
                Err(e) if e.is_transient() || matches!(e, ExecError::Timeout { .. }) => Err(exec(e)),
                Err(e) => Ok(Err(e.to_string())),
            }
        })
        .await;
    let gate = s.gate.clone();
    match applied {
        Ok(Ok(outcome)) if outcome.dry_run => {
            executed_metric(&planned, "dry_run");
            // Nothing was done: the auto-approval, if any, counts toward no limit.
            if let Some(gate) = &gate {
                ctx.unreserve(&format!("auto:{gate}")).await?;
            }
            s.note(now, "execute", format!("dry run: would {} {}: {}", action.action, action.target, outcome.summary));
            s.outcome = Some(format!("dry run: {} on {} recorded, not performed", action.action, action.target));
            ctx.send(topics::EXECUTED, json!({ "action": action.action, "dry_run": true, "summary": outcome.summary }));
            let outcome = serde_json::to_value(&outcome).unwrap_or_default();
            s.actions.push(ActionRecord { action: planned, pre_state, outcome, dry_run: true, at: now, gate });
            Ok((s, Transition::route("dry_run")))
        }
        Ok(Ok(outcome)) => {
            executed_metric(&planned, "applied");
            s.note(now, "execute", format!("{}: {}", action, outcome.summary));
            ctx.send(
                topics::EXECUTED,
                json!({ "action": action.action, "dry_run": false, "summary": outcome.summary }),
            );
            ctx.record(
                facts::ACTION,
                &service,
                json!({ "action": action.action, "target": action.target, "gate": gate }),
            );
            let outcome = serde_json::to_value(&outcome).unwrap_or_default();
            s.actions.push(ActionRecord { action: planned, pre_state, outcome, dry_run: false, at: now, gate });
            s.verify_deadline = None;
            s.verify_read_failures = 0;
            s.alert_clear_streak = 0;
            s.verdict = None;
            Ok((s, Transition::route("next")))
        }
        Ok(Err(reason)) => {
            executed_metric(&planned, "refused");
            s.note(now, "execute", format!("{action} refused: {reason}"));
            s.outcome = Some(format!("escalated: executor refused: {reason}"));
            Ok((s, Transition::route("failed")))
        }
        Err(e) if is_final(&e, &ctx, &io_retry()) => {
            // The executor may have acted before it failed: a person must look,
            // with the pre-state in hand.
            executed_metric(&planned, "failed");
            s.note(now, "execute", format!("{action} failed after {} attempts: {e}", ctx.attempt()));
            s.outcome = Some(format!("escalated: {action} failed and may be partly applied: {e}"));
            ctx.record(
                facts::ACTION,
                &service,
                json!({ "action": action.action, "target": action.target, "gate": gate }),
            );
            record_failure(&ctx, &service, &action);
            let outcome = json!({ "error": e.to_string() });
            s.actions.push(ActionRecord { action: planned, pre_state, outcome, dry_run: false, at: now, gate });
            Ok((s, Transition::route("failed")))
        }
        Err(e) => Err(e),
    }
}

/// An action that did not help: a failed outcome for the breaker, and a
/// failure of this action on this target for the loop guard.
fn record_failure(ctx: &NodeContext, service: &str, action: &executors::Action) {
    let what = json!({ "action": action.action, "target": action.target });
    ctx.record(
        facts::OUTCOME,
        service,
        json!({ "succeeded": false, "action": action.action, "target": action.target }),
    );
    ctx.record(facts::FAILURE, &policy::facts::failure_subject(&action.action, &action.target), what);
}

fn executed_metric(planned: &PlannedAction, outcome: &'static str) {
    let labels = [
        ("executor", planned.action.executor.clone()),
        ("action", planned.action.action.clone()),
        ("outcome", outcome.to_owned()),
    ];
    metrics::counter!("sentinel_executor_actions_total", &labels).increment(1);
}

async fn verify_node(w: Arc<Workflow>, mut s: Incident, ctx: NodeContext) -> Out {
    let d = s.detection()?.clone();
    let now = ctx.now();
    if let Some(last) = s.actions.last() {
        // Still ours while we watch the result (renewed; never lost to a cooldown).
        ctx.hold(&target_resource(&last.action.action.target), target_hold(&w), Duration::ZERO).await?;
    }
    let acted_at = s.actions.last().map_or(now, |a| a.at);
    let deadline = *s.verify_deadline.get_or_insert(acted_at.saturating_add(w.config.verify_window));
    if let incident::Source::Alertmanager { alertname, expr, group_labels, .. } = &d.source {
        match verify_alert(&w, s, &ctx, alertname, expr.as_deref(), group_labels, deadline).await {
            AlertVerdict::Decided(out) => return out,
            // No rule to evaluate, but the alert's metric has a baseline: verify by it.
            AlertVerdict::ByMetric(back) => s = back,
        }
    }
    let read = w.metrics.window(&d.service, &d.metric, acted_at, now.saturating_add(Duration::from_millis(1))).await;
    let readings = match read {
        Ok(r) => r,
        Err(PortError::Refused(e)) | Err(PortError::Unavailable(e)) if now >= deadline => {
            // The window ended with the metric store still away: the action's
            // effect is unknown, so a human decides.
            s.note(now, "verify", format!("the metric store is unreachable and the verification window ended: {e}"));
            s.outcome = Some(format!("escalated: could not verify {} (metric store unreachable: {e})", d.metric));
            return Ok((s, Transition::route("unverifiable")));
        }
        Err(e) => {
            // Wait it out with a durable timer; the window still bounds it.
            if s.verify_read_failures == 0 {
                s.note(now, "verify", format!("metric store unreachable ({e}); retrying until {}", deadline.0));
            }
            s.verify_read_failures += 1;
            metrics::counter!("sentinel_verify_read_failures_total").increment(1);
            let next = now.saturating_add(w.config.verify_interval).min(deadline);
            return Ok((s, Transition::sleep_until(next)));
        }
    };
    if s.verify_read_failures > 0 {
        s.note(now, "verify", format!("metric store back after {} failed reads", s.verify_read_failures));
        s.verify_read_failures = 0;
    }
    let values: Vec<f64> = readings.iter().map(|r| r.1).collect();
    let baseline =
        Baseline { mean: s.analysis.baseline_mean, stddev: s.analysis.baseline_stddev, detected: d.observed };
    let verdict = verify::assess(&w.config.verify, &baseline, &values);
    match verdict {
        Verdict::Recovered { .. } => {
            s.note(
                now,
                "verify",
                format!(
                    "{} back within {}σ for {} readings",
                    d.metric, w.config.verify.sigma_tolerance, w.config.verify.consecutive
                ),
            );
            s.verdict = Some(verdict);
            record_success(&ctx, &s, &d.service);
            Ok((s, Transition::route("recovered")))
        }
        Verdict::Worse { reading, .. } => {
            s.note(
                now,
                "verify",
                format!("{} got worse after the action ({reading:.2}): rolling back at once", d.metric),
            );
            s.verdict = Some(verdict);
            Ok((s, Transition::route("not_recovered")))
        }
        Verdict::NotRecovered if now >= deadline => {
            s.note(now, "verify", format!("{} not recovered within the verification window", d.metric));
            s.verdict = Some(verdict);
            Ok((s, Transition::route("not_recovered")))
        }
        Verdict::NotRecovered => {
            let next = now.saturating_add(w.config.verify_interval).min(deadline);
            Ok((s, Transition::sleep_until(next)))
        }
    }
}

/// The last action worked: an outcome fact for the policy's breaker.
fn record_success(ctx: &NodeContext, s: &Incident, service: &str) {
    if let Some(last) = s.actions.last() {
        let a = &last.action.action;
        ctx.record(facts::OUTCOME, service, json!({ "succeeded": true, "action": a.action, "target": a.target }));
    }
}

/// How an alert's incident is verified this time round.
enum AlertVerdict {
    Decided(Out),
    /// By the alert's metric against its baseline, as a detector's anomaly is.
    ByMetric(Incident),
}

/// Verifies an alert's incident by the alert's own condition: its rule's
/// expression, re-evaluated where the rule lives, returning no series
/// `consecutive` times in a row, or the group's resolved notification.
/// Without a rule to evaluate, an alert whose metric has a baseline (events
/// for it reached the metric store) is verified by that metric; one without
/// waits for the resolved notification and, failing it, goes to a human
/// rather than rolling back a fix that may have worked.
async fn verify_alert(
    w: &Workflow,
    mut s: Incident,
    ctx: &NodeContext,
    alertname: &str,
    expr: Option<&str>,
    group_labels: &std::collections::BTreeMap<String, String>,
    deadline: Timestamp,
) -> AlertVerdict {
    let now = ctx.now();
    let recovered = |mut s: Incident, why: String| -> Out {
        s.note(now, "verify", why);
        s.verdict = Some(Verdict::Recovered { at: s.alert_clear_streak as usize });
        let service = s.detection()?.service.clone();
        record_success(ctx, &s, &service);
        Ok((s, Transition::route("recovered")))
    };
    if ctx.take_signal(&["cleared"]).is_some() {
        return AlertVerdict::Decided(recovered(
            s,
            format!("alert {alertname} resolved (Alertmanager's resolved notification)"),
        ));
    }
    let expr = match expr {
        Some(e) => Some(e.to_owned()),
        None => match w.alerts.expression(alertname).await {
            Ok(e) => e,
            Err(e) => {
                s.note(now, "verify", format!("cannot read the rule of {alertname}: {e}"));
                None
            }
        },
    };
    if expr.is_none() && s.analysis.baseline_stddev > 0.0 {
        return AlertVerdict::ByMetric(s);
    }
    let evaluated = match &expr {
        Some(expr) => Some(w.alerts.series(expr, group_labels, now).await),
        None => None,
    };
    match &evaluated {
        Some(Ok(0)) => {
            s.alert_clear_streak += 1;
            if s.alert_clear_streak as usize >= w.config.verify.consecutive.max(1) {
                let why = format!(
                    "alert {alertname}'s condition returned no series {} evaluations in a row",
                    s.alert_clear_streak
                );
                return AlertVerdict::Decided(recovered(s, why));
            }
        }
        Some(Ok(n)) => {
            let n = *n;
            if s.alert_clear_streak > 0 || s.verify_read_failures > 0 {
                s.note(now, "verify", format!("alert {alertname} fires again ({n} series)"));
            }
            s.alert_clear_streak = 0;
            s.verify_read_failures = 0;
        }
        Some(Err(e)) => {
            if s.verify_read_failures == 0 {
                s.note(now, "verify", format!("cannot evaluate alert {alertname} ({e}); retrying"));
            }
            s.verify_read_failures += 1;
            s.alert_clear_streak = 0;
        }
        None => {}
    }
    if now >= deadline {
        s.verdict = Some(Verdict::NotRecovered);
        return AlertVerdict::Decided(match evaluated {
            Some(Ok(_)) => {
                s.note(now, "verify", format!("alert {alertname} still fires at the end of the verification window"));
                Ok((s, Transition::route("not_recovered")))
            }
            _ => {
                let why = if expr.is_none() {
                    "no rule source knows its expression and it did not resolve".to_owned()
                } else {
                    "its expression could not be evaluated".to_owned()
                };
                s.note(now, "verify", format!("cannot tell whether alert {alertname} cleared: {why}"));
                s.outcome = Some(format!("escalated: could not verify alert {alertname} ({why})"));
                Ok((s, Transition::route("unverifiable")))
            }
        });
    }
    let next = now.saturating_add(w.config.verify_interval).min(deadline);
    AlertVerdict::Decided(Ok((s, Transition::wait_for(["cleared"], Some(next)))))
}

async fn rollback(w: Arc<Workflow>, mut s: Incident, ctx: NodeContext) -> Out {
    let now = ctx.now();
    let Some(last) = s.actions.last().cloned() else {
        return Err(NodeError::fatal("rollback without an executed action"));
    };
    let n = s.actions.len() - 1;
    let executor = w.executor.clone();
    let (action, pre) = (&last.action.action, &last.pre_state);
    let restored = ctx
        .effect(&format!("restore-{n}"), |attempt| async move {
            executor.rollback(action, pre, &attempt.idempotency_key).await.map_err(exec)
        })
        .await;
    match restored {
        Ok(_) => {}
        Err(e) if is_final(&e, &ctx, &io_retry()) => {
            s.note(now, "rollback", format!("could not restore {}: {e}", action.target));
            s.outcome = Some(format!("escalated: rollback of {action} failed: {e}"));
            return Ok((s, Transition::route("escalate")));
        }
        Err(e) => return Err(e),
    }
    s.rollbacks += 1;
    record_failure(&ctx, &s.detection()?.service, action);
    metrics::counter!("sentinel_rollbacks_total").increment(1);
    s.note(now, "rollback", format!("restored {} to its state before {}", action.target, action.action));
    ctx.send(topics::ESCALATION, json!({ "reason": "rollback", "action": action.action }));
    if s.rollbacks > w.config.max_rollbacks {
        s.outcome = Some(format!("escalated after {} rollbacks", s.rollbacks));
        return Ok((s, Transition::route("escalate")));
    }
    if matches!(s.verdict, Some(Verdict::Worse { .. })) {
        s.outcome = Some("escalated: the action made things worse".into());
        return Ok((s, Transition::route("escalate")));
    }
    ctx.release(&target_resource(&action.target)).await?;
    Ok((s, Transition::route("reanalyze")))
}

/// Lets go of every target this run acted on (a no-op for those it does not hold).
async fn release_targets(s: &Incident, ctx: &NodeContext) -> Result<(), NodeError> {
    for a in &s.actions {
        ctx.release(&target_resource(&a.action.action.target)).await?;
    }
    if let Some(p) = s.plan.get(s.current) {
        ctx.release(&target_resource(&p.action.target)).await?;
    }
    Ok(())
}

async fn resolve(w: Arc<Workflow>, mut s: Incident, ctx: NodeContext) -> Out {
    release_targets(&s, &ctx).await?;
    let now = ctx.now();
    let started = s.detection()?.started_at;
    s.resolved_at = Some(now);
    s.mttr_secs = Some(now.since(started).as_secs_f64());
    s.outcome = Some("resolved".into());
    s.note(now, "resolve", format!("resolved; MTTR {:.1}s", now.since(started).as_secs_f64()));
    remember(&w, &mut s, &ctx, MemoryStatus::Resolved).await;
    s.postmortem = Some(postmortem::render(&s));
    ctx.send(topics::RESOLVED, json!({ "mttr_secs": s.mttr_secs }));
    Ok((s, Transition::Complete))
}

async fn escalate(w: Arc<Workflow>, mut s: Incident, ctx: NodeContext) -> Out {
    release_targets(&s, &ctx).await?;
    let now = ctx.now();
    let reason = s.outcome.clone().unwrap_or_else(|| "escalated".into());
    s.note(now, "escalate", format!("handed to a human: {reason}"));
    // What was done and how to undo it by hand: every live action with its pre-state.
    let done: Vec<serde_json::Value> = s
        .actions
        .iter()
        .filter(|a| !a.dry_run)
        .map(|a| json!({ "action": a.action.action, "outcome": a.outcome, "pre_state": a.pre_state, "at": a.at }))
        .collect();
    // An alert's own words for whoever is paged: summary, description, runbook_url.
    let annotations = s.detection.as_ref().map(|d| d.annotations.clone()).unwrap_or_default();
    ctx.send(
        topics::ESCALATION,
        json!({ "reason": reason, "severity": s.severity, "actions": done, "annotations": annotations }),
    );
    remember(&w, &mut s, &ctx, MemoryStatus::Escalated).await;
    s.postmortem = Some(postmortem::render(&s));
    Ok((s, Transition::Complete))
}

async fn closed(w: Arc<Workflow>, mut s: Incident, ctx: NodeContext) -> Out {
    release_targets(&s, &ctx).await?;
    s.note(ctx.now(), "closed", s.outcome.clone().unwrap_or_else(|| "closed".into()));
    remember(&w, &mut s, &ctx, MemoryStatus::Closed).await;
    s.postmortem = Some(postmortem::render(&s));
    Ok((s, Transition::Complete))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(target: &str, factor: f64) -> executors::Action {
        executors::Action {
            executor: "kubernetes".into(),
            action: "scale_deployment".into(),
            target: target.into(),
            params: [("factor".to_owned(), json!(factor))].into_iter().collect(),
        }
    }

    #[test]
    fn a_gate_is_bound_to_exactly_what_was_proposed() {
        let a = action("kubernetes:prod/checkout", 1.5);
        let gate = gate_id(1, &a);
        assert_eq!(gate, gate_id(1, &a.clone()), "the same proposal, the same gate");
        assert!(gate.starts_with("1-") && gate.len() == 2 + 16, "{gate}");
        for other in [
            gate_id(2, &a),
            gate_id(1, &action("kubernetes:prod/payments", 1.5)),
            gate_id(1, &action("kubernetes:prod/checkout", 2.0)),
            gate_id(1, &executors::Action { executor: "ecs".into(), ..a.clone() }),
            gate_id(1, &executors::Action { action: "restart_deployment".into(), ..a.clone() }),
        ] {
            assert_ne!(gate, other, "any change to the proposal is another gate");
        }
    }
}
