//! The incident graph on the engine:
//!
//! ```text
//! detect → analyze → plan → await_approval → execute → verify ─┬→ resolve
//!             ↑        └→ escalate      └→ closed     └→ escalate  └→ rollback ─┬→ analyze
//!             └─────────────────────────────────────────────────────────────────┘└→ escalate
//! ```
//!
//! Every node reads the incident state, acts only through ports, and appends
//! to the incident's timeline, which the postmortem is written from.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use engine::{Graph, NodeContext, NodeError, RetryPolicy, Timestamp, Transition};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::analyze::{self, Analysis, ServiceGraph};
use crate::incident::{self, Detection, Severity, Tiers};
use crate::policy::{self, Decision, Facts, PolicyConfig, ProposedAction};
use crate::ports::{Deployments, IncidentIndex, MetricStore, PortError, Remediator};
use crate::postmortem;
use crate::runbook::{PlannedAction, Runbook};
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
    /// `policy`, `timeout`, or the human's id.
    pub by: String,
    pub reason: String,
    pub at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActionRecord {
    pub action: PlannedAction,
    pub pre_state: serde_json::Value,
    pub outcome: serde_json::Value,
    pub dry_run: bool,
    pub at: Timestamp,
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
    pub decisions: Vec<DecisionRecord>,
    pub actions: Vec<ActionRecord>,
    pub verify_deadline: Option<Timestamp>,
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
    pub dry_run: bool,
    pub tiers: Tiers,
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
            dry_run: false,
            tiers: Tiers::default(),
        }
    }
}

/// Everything the nodes reach the world through.
pub struct Workflow {
    pub config: WorkflowConfig,
    pub runbooks: Vec<Runbook>,
    pub services: ServiceGraph,
    pub metrics: Arc<dyn MetricStore>,
    pub deployments: Arc<dyn Deployments>,
    pub index: Arc<dyn IncidentIndex>,
    pub remediator: Arc<dyn Remediator>,
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
    let w = |f: fn(Arc<Workflow>, Incident, NodeContext) -> futures_box::BoxOut| {
        let wf = workflow.clone();
        move |s: Incident, ctx: NodeContext| f(wf.clone(), s, ctx)
    };
    let io = RetryPolicy { max_attempts: 5, initial_backoff: Duration::from_millis(200), ..RetryPolicy::default() };
    Graph::builder(GRAPH, VERSION)
        .node("detect", w(|w, s, c| Box::pin(detect(w, s, c))))
        .node_with_retry("analyze", w(|w, s, c| Box::pin(analyze_node(w, s, c))), io.clone())
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
    let d = s.detection()?.clone();
    s.fingerprint = incident::fingerprint(&d);
    let impact = incident::impact(&d);
    let severity = incident::severity(impact, w.config.tiers.of(&d.service));
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
    Ok((s, Transition::route("next")))
}

async fn analyze_node(w: Arc<Workflow>, mut s: Incident, ctx: NodeContext) -> Out {
    let d = s.detection()?.clone();
    let ports =
        analyze::Ports { metrics: &*w.metrics, deployments: &*w.deployments, index: &*w.index, services: &w.services };
    let analysis = analyze::analyze(&ports, &d, ctx.now()).await.map_err(port)?;
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
    let alert = match &d.source {
        incident::Source::Alertmanager { alertname, .. } => Some(alertname.as_str()),
        incident::Source::Detector { .. } => None,
    };
    let Some(runbook) = w.runbooks.iter().find(|r| r.answers(Some(&d.anomaly_type), alert)) else {
        s.note(ctx.now(), "plan", format!("no runbook answers {}", d.anomaly_type));
        s.outcome = Some("escalated: no runbook".into());
        return Ok((s, Transition::route("no_action")));
    };
    let namespace = d.labels.get("namespace").map_or("default", String::as_str);
    let planned = runbook.plan(&s.analysis.evidence, &d.service, namespace);
    // Actions already tried and rolled back are not planned again.
    let tried: Vec<(String, String)> =
        s.actions.iter().map(|a| (a.action.action.clone(), a.action.target.clone())).collect();
    let fresh: Vec<PlannedAction> =
        planned.into_iter().filter(|a| !tried.contains(&(a.action.clone(), a.target.clone()))).collect();
    s.runbook = Some(runbook.id.clone());
    let Some(first) = fresh.first() else {
        s.note(ctx.now(), "plan", format!("runbook {} has no untried action", runbook.id));
        s.outcome = Some("escalated: no untried action".into());
        return Ok((s, Transition::route("no_action")));
    };
    s.note(
        ctx.now(),
        "plan",
        format!(
            "runbook {}: {} on {} (downtime {}s)",
            runbook.id,
            first.action,
            first.target,
            first.estimated_downtime.as_secs()
        ),
    );
    s.plan = fresh;
    s.current = 0;
    s.approval_deadline = None;
    Ok((s, Transition::route("next")))
}

fn current(s: &Incident) -> Result<PlannedAction, NodeError> {
    s.plan.get(s.current).cloned().ok_or_else(|| NodeError::fatal("no planned action"))
}

async fn await_approval(w: Arc<Workflow>, mut s: Incident, ctx: NodeContext) -> Out {
    let action = current(&s)?;
    let service = s.detection()?.service.clone();
    let now = ctx.now();
    if s.approval_deadline.is_none() {
        let facts = w.safety.facts(&action, &service, now).await.map_err(port)?;
        let proposed = ProposedAction {
            service: service.clone(),
            executor: action.executor.clone(),
            action: action.action.clone(),
            target: action.target.clone(),
            estimated_downtime: action.estimated_downtime,
        };
        let decision = policy::decide(&w.config.policy, &proposed, &facts, now);
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
            });
            s.note(now, "await_approval", decision.reason());
            ctx.send(topics::DECIDED, json!({ "approved": true, "by": "policy", "action": action.action }));
            return Ok((s, Transition::route("approved")));
        }
        let deadline = now.saturating_add(w.config.approval_timeout);
        s.approval_deadline = Some(deadline);
        s.note(now, "await_approval", format!("{}; waiting for a human until {}", decision.reason(), deadline.0));
        ctx.send(
            topics::APPROVAL_REQUESTED,
            json!({ "action": action, "reason": decision.reason(), "severity": s.severity, "deadline": deadline }),
        );
    }
    if let Some(signal) = ctx.take_signal(&["cleared"]) {
        // The alert group resolved while the action waited for a decision: nothing to do.
        let by = signal.payload.get("source").and_then(|a| a.as_str()).unwrap_or("alertmanager").to_owned();
        s.note(now, "await_approval", format!("condition cleared ({by}) before any action; closing"));
        s.outcome = Some("cleared before any action".into());
        return Ok((s, Transition::route("cleared")));
    }
    if let Some(signal) = ctx.take_signal(&["approve", "reject"]) {
        let approved = signal.kind == "approve";
        let decision = if approved { "approved" } else { "rejected" };
        metrics::counter!("sentinel_approval_decisions_total", "decider" => "human", "decision" => decision)
            .increment(1);
        let by = signal.payload.get("actor").and_then(|a| a.as_str()).unwrap_or("unknown").to_owned();
        let reason = signal.payload.get("reason").and_then(|a| a.as_str()).unwrap_or("").to_owned();
        s.decisions.push(DecisionRecord { approved, by: by.clone(), reason: reason.clone(), at: now });
        s.note(
            now,
            "await_approval",
            format!(
                "{} by {by}{}",
                if approved { "approved" } else { "rejected" },
                if reason.is_empty() { String::new() } else { format!(": {reason}") }
            ),
        );
        ctx.send(topics::DECIDED, json!({ "approved": approved, "by": by, "action": action.action }));
        if !approved {
            s.outcome = Some(format!("rejected by {by}"));
        }
        return Ok((s, Transition::route(if approved { "approved" } else { "rejected" })));
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
        });
        s.note(now, "await_approval", "approval timed out: escalated and rejected");
        ctx.send(
            topics::ESCALATION,
            json!({ "reason": "approval timed out", "action": action.action, "severity": s.severity }),
        );
        s.outcome = Some("rejected: approval timed out".into());
        return Ok((s, Transition::route("rejected")));
    }
    Ok((s, Transition::wait_for(["approve", "reject", "cleared"], Some(deadline))))
}

async fn execute(w: Arc<Workflow>, mut s: Incident, ctx: NodeContext) -> Out {
    let action = current(&s)?;
    let n = s.actions.len();
    let now = ctx.now();
    if w.config.dry_run {
        s.actions.push(ActionRecord {
            action: action.clone(),
            pre_state: json!(null),
            outcome: json!({ "dry_run": true }),
            dry_run: true,
            at: now,
        });
        executed_metric(&action, "dry_run");
        s.note(now, "execute", format!("dry run: would {} on {}", action.action, action.target));
        s.outcome = Some(format!("dry run: {} on {} recorded, not performed", action.action, action.target));
        ctx.send(topics::EXECUTED, json!({ "action": action.action, "dry_run": true }));
        return Ok((s, Transition::route("dry_run")));
    } else {
        let remediator = w.remediator.clone();
        let pre_state =
            ctx.effect(&format!("capture-{n}"), |_| async { remediator.capture(&action).await.map_err(port) }).await?;
        let pre = &pre_state;
        let applied = ctx
            .effect(&format!("apply-{n}"), |attempt| async move {
                match remediator.apply(&action, pre, &attempt.idempotency_key).await {
                    Ok(v) => Ok(Ok(v)),
                    Err(PortError::Refused(reason)) => Ok(Err(reason)),
                    Err(e) => Err(port(e)),
                }
            })
            .await?;
        let action = current(&s)?;
        let result = if applied.is_ok() { "applied" } else { "refused" };
        executed_metric(&action, result);
        match applied {
            Ok(outcome) => {
                s.note(now, "execute", format!("{} on {}", action.action, action.target));
                s.actions.push(ActionRecord { action: action.clone(), pre_state, outcome, dry_run: false, at: now });
            }
            Err(reason) => {
                s.note(now, "execute", format!("{} on {} refused: {reason}", action.action, action.target));
                s.outcome = Some(format!("escalated: executor refused: {reason}"));
                return Ok((s, Transition::route("failed")));
            }
        }
    }
    ctx.send(topics::EXECUTED, json!({ "action": current(&s)?.action, "dry_run": w.config.dry_run }));
    s.verify_deadline = None;
    s.verdict = None;
    Ok((s, Transition::route("next")))
}

fn executed_metric(action: &PlannedAction, outcome: &'static str) {
    let labels =
        [("executor", action.executor.clone()), ("action", action.action.clone()), ("outcome", outcome.to_owned())];
    metrics::counter!("sentinel_executor_actions_total", &labels).increment(1);
}

async fn verify_node(w: Arc<Workflow>, mut s: Incident, ctx: NodeContext) -> Out {
    let d = s.detection()?.clone();
    let now = ctx.now();
    let acted_at = s.actions.last().map_or(now, |a| a.at);
    let deadline = *s.verify_deadline.get_or_insert(acted_at.saturating_add(w.config.verify_window));
    let readings = w
        .metrics
        .window(&d.service, &d.metric, acted_at, now.saturating_add(Duration::from_millis(1)))
        .await
        .map_err(port)?;
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

async fn rollback(w: Arc<Workflow>, mut s: Incident, ctx: NodeContext) -> Out {
    let now = ctx.now();
    let Some(last) = s.actions.last().cloned() else {
        return Err(NodeError::fatal("rollback without an executed action"));
    };
    if !last.dry_run {
        let remediator = w.remediator.clone();
        let n = s.actions.len() - 1;
        ctx.effect(&format!("restore-{n}"), |attempt| async move {
            remediator.restore(&last.action, &last.pre_state, &attempt.idempotency_key).await.map_err(port)
        })
        .await?;
    }
    s.rollbacks += 1;
    metrics::counter!("sentinel_rollbacks_total").increment(1);
    let last = s.actions.last().cloned().ok_or_else(|| NodeError::fatal("no action"))?;
    s.note(now, "rollback", format!("restored {} to its state before {}", last.action.target, last.action.action));
    ctx.send(topics::ESCALATION, json!({ "reason": "rollback", "action": last.action.action }));
    if s.rollbacks > w.config.max_rollbacks {
        s.outcome = Some(format!("escalated after {} rollbacks", s.rollbacks));
        return Ok((s, Transition::route("escalate")));
    }
    if matches!(s.verdict, Some(Verdict::Worse { .. })) {
        s.outcome = Some("escalated: the action made things worse".into());
        return Ok((s, Transition::route("escalate")));
    }
    Ok((s, Transition::route("reanalyze")))
}

async fn resolve(_: Arc<Workflow>, mut s: Incident, ctx: NodeContext) -> Out {
    let now = ctx.now();
    let started = s.detection()?.started_at;
    s.resolved_at = Some(now);
    s.mttr_secs = Some(now.since(started).as_secs_f64());
    s.outcome = Some("resolved".into());
    s.note(now, "resolve", format!("resolved; MTTR {:.1}s", now.since(started).as_secs_f64()));
    s.postmortem = Some(postmortem::render(&s));
    ctx.send(topics::RESOLVED, json!({ "mttr_secs": s.mttr_secs }));
    Ok((s, Transition::Complete))
}

async fn escalate(_: Arc<Workflow>, mut s: Incident, ctx: NodeContext) -> Out {
    let now = ctx.now();
    let reason = s.outcome.clone().unwrap_or_else(|| "escalated".into());
    s.note(now, "escalate", format!("handed to a human: {reason}"));
    ctx.send(topics::ESCALATION, json!({ "reason": reason, "severity": s.severity }));
    s.postmortem = Some(postmortem::render(&s));
    Ok((s, Transition::Complete))
}

async fn closed(_: Arc<Workflow>, mut s: Incident, ctx: NodeContext) -> Out {
    s.note(ctx.now(), "closed", s.outcome.clone().unwrap_or_else(|| "closed".into()));
    s.postmortem = Some(postmortem::render(&s));
    Ok((s, Transition::Complete))
}
