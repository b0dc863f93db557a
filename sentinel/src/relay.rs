//! The outbox relay: delivers what checkpoints committed to the outbox, after
//! commit, at least once. Failed deliveries are retried with exponential
//! backoff and dead-lettered after `max_attempts` (visible in the outbox).
//!
//! Slack: `approval_requested` posts the incident message with Approve/Reject
//! buttons (chat.postMessage) and records the message's channel and ts on the
//! run as a `slack_message` signal; later topics update that message
//! (chat.update). PagerDuty (Events API v2): an `escalation` triggers an alert
//! keyed by the incident's run id; once triggered, the decision acknowledges
//! it and the resolution resolves it.
//!
//! Nothing is dropped quietly: a message that must reach a person (an
//! approval request, an escalation) and that no configured destination took
//! is marked `undeliverable`, which `/health/detailed`, `/metrics` and the
//! CLI show. Updates to a message never posted (an incident that needed
//! nobody) are simply done.

use std::time::Duration;

use engine::{Delivery, Engine, PendingMessage, RetryPolicy, Timestamp};
use nodes::workflow::{topics, Incident};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use api::slack::{APPROVE_ACTION, REJECT_ACTION};

/// Slack's Web API, at a configurable base URL so tests can stand in for it.
#[derive(Clone)]
pub struct SlackClient {
    pub base_url: String,
    pub token: String,
    /// Where messages go unless the service names its own channel.
    pub channel: String,
    /// Each catalogued service's own channel, by service name.
    pub channels: std::collections::BTreeMap<String, String>,
    pub http: reqwest::Client,
}

/// The `event_type` of the metadata on every message the relay posts; its
/// `event_payload.outbox_key` is the outbox message's idempotency key.
pub const OUTBOX_EVENT: &str = "sentinel_outbox";

/// The prefix of a delivery error after which the message may have reached
/// its destination (the request went out, no answer came back).
const IN_DOUBT: &str = "in doubt: ";

/// Whether an earlier send of `msg` may have reached its destination: a
/// claim that ended without a recorded outcome, or a send with no answer.
fn in_doubt(msg: &PendingMessage) -> bool {
    msg.claims > i64::from(msg.attempts) + 1 || msg.last_error.as_deref().is_some_and(|e| e.starts_with(IN_DOUBT))
}

impl SlackClient {
    /// The channel for an incident on `service`.
    pub fn channel_for(&self, service: &str) -> &str {
        self.channels.get(service).map_or(&self.channel, String::as_str)
    }

    async fn call(&self, method: &str, body: &Value) -> Result<Value, String> {
        let url = format!("{}/api/{method}", self.base_url.trim_end_matches('/'));
        let sent =
            self.http.post(&url).bearer_auth(&self.token).json(body).timeout(Duration::from_secs(10)).send().await;
        Self::answer(method, sent).await
    }

    async fn answer(method: &str, sent: reqwest::Result<reqwest::Response>) -> Result<Value, String> {
        let resp = match sent {
            Ok(resp) => resp,
            // Never connected: Slack saw nothing.
            Err(e) if e.is_connect() => return Err(format!("{method}: {e}")),
            Err(e) => return Err(format!("{IN_DOUBT}{method}: {e}")),
        };
        let status = resp.status();
        let reply: Value = resp.json().await.map_err(|e| format!("{method}: HTTP {status}, unreadable body: {e}"))?;
        if reply["ok"] != json!(true) {
            return Err(format!("{method}: HTTP {status}, error {}", reply["error"]));
        }
        Ok(reply)
    }

    /// The channel and ts of a message posted for outbox key `key`, found in
    /// the channel's history since the message was queued. None when there is
    /// none, or when the history cannot be read (then posting again is the
    /// lesser evil: a duplicate beats an approval request nobody sees).
    async fn find_posted(&self, channel: &str, key: &str, since: Timestamp) -> Option<Value> {
        let base = format!("{}/api/conversations.history", self.base_url.trim_end_matches('/'));
        let Ok(mut url) = reqwest::Url::parse(&base) else {
            tracing::warn!(url = %base, "the Slack base URL does not parse; posting");
            return None;
        };
        let oldest = format!("{:.3}", (since.0 - 60_000).max(0) as f64 / 1000.0);
        let query =
            [("channel", channel), ("oldest", oldest.as_str()), ("include_all_metadata", "true"), ("limit", "200")];
        url.query_pairs_mut().extend_pairs(query);
        let sent = self.http.get(url).bearer_auth(&self.token).timeout(Duration::from_secs(10)).send().await;
        let reply = match Self::answer("conversations.history", sent).await {
            Ok(reply) => reply,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the channel to check for an earlier post; posting");
                return None;
            }
        };
        let posted = reply["messages"].as_array()?.iter().find(|m| {
            m["metadata"]["event_type"] == OUTBOX_EVENT && m["metadata"]["event_payload"]["outbox_key"] == key
        })?;
        metrics::counter!("sentinel_outbox_duplicates_avoided_total").increment(1);
        let channel = reply.get("channel").cloned().unwrap_or_else(|| json!(channel));
        Some(json!({ "channel": channel, "ts": posted["ts"] }))
    }
}

/// PagerDuty's Events API v2, at a configurable base URL.
#[derive(Clone)]
pub struct PagerDuty {
    pub base_url: String,
    pub routing_key: String,
    pub http: reqwest::Client,
}

/// Where the relay delivers.
#[derive(Clone, Default)]
pub struct Destinations {
    pub slack: Option<SlackClient>,
    pub pagerduty: Option<PagerDuty>,
}

#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// Attempts before a message is dead-lettered, and the backoff between them.
    pub retry: RetryPolicy,
    pub poll_interval: Duration,
    /// How long a claimed batch is this relay's: a relay that dies leaves its
    /// messages to the others after this.
    pub claim_lease: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            retry: RetryPolicy { max_attempts: 8, initial_backoff: Duration::from_secs(2), ..RetryPolicy::default() },
            poll_interval: Duration::from_millis(500),
            claim_lease: Duration::from_secs(60),
        }
    }
}

/// Runs until `shutdown` fires. Messages are claimed one at a time, each
/// under its own claim token: the claim is extended while the send is in
/// progress, an outcome is recorded only under the claim it was sent under,
/// and a send whose claim was lost is abandoned (the next claimant checks
/// whether it reached Slack before posting again).
pub async fn run(engine: Engine, destinations: Destinations, config: RelayConfig, shutdown: CancellationToken) {
    loop {
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            let now = engine.clock().now();
            match engine.store().outbox_claim(now, now.saturating_add(config.claim_lease)).await {
                Ok(Some(msg)) => dispatch(&engine, &destinations, &config, msg).await,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "reading the outbox failed");
                    break;
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(config.poll_interval) => {}
        }
    }
}

/// Delivers one claimed message and records the outcome under its claim.
async fn dispatch(engine: &Engine, destinations: &Destinations, config: &RelayConfig, msg: PendingMessage) {
    let store = engine.store();
    let token = msg.claim_token.clone();
    let keep_claim = async {
        loop {
            tokio::time::sleep(config.claim_lease / 3).await;
            let until = engine.clock().now().saturating_add(config.claim_lease);
            match store.outbox_extend(msg.id, &token, until).await {
                Ok(true) => {}
                Ok(false) => return,
                // The database is away: so is every other relay's claim.
                Err(e) => tracing::warn!(error = %e, "could not extend an outbox claim"),
            }
        }
    };
    let result = tokio::select! {
        result = deliver(engine, destinations, &msg) => result,
        _ = keep_claim => {
            tracing::warn!(key = %msg.idempotency_key, "outbox claim lost while sending; another relay owns the message");
            metrics::counter!("sentinel_outbox_claims_lost_total").increment(1);
            return;
        }
    };
    let now = engine.clock().now();
    let recorded = match result {
        Ok(Sent::Delivered) => store.outbox_delivered(msg.id, &token, now).await,
        Ok(Sent::Undeliverable(why)) => {
            tracing::error!(key = %msg.idempotency_key, topic = %msg.topic, reason = %why, "outbox message undeliverable");
            metrics::counter!("sentinel_outbox_undeliverable_total", "topic" => msg.topic.clone()).increment(1);
            store.outbox_undeliverable(msg.id, &token, &why).await
        }
        Err(error) => {
            let attempt = msg.attempts + 1;
            let retry_at = retry_time(config, now, attempt);
            tracing::warn!(key = %msg.idempotency_key, topic = %msg.topic, attempt, %error, dead = retry_at.is_none(), "outbox delivery failed");
            store.outbox_failed(msg.id, &token, &error, retry_at).await
        }
    };
    match recorded {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(key = %msg.idempotency_key, "outbox claim lost before the outcome was recorded");
            metrics::counter!("sentinel_outbox_claims_lost_total").increment(1);
        }
        Err(e) => tracing::warn!(error = %e, "could not record an outbox delivery; it will be sent again"),
    }
}

/// What became of a message.
#[derive(Debug, PartialEq, Eq)]
enum Sent {
    Delivered,
    /// No configured destination takes it: said why.
    Undeliverable(String),
}

/// Topics that ask something of a person: one nobody received is a failure.
fn needs_a_person(topic: &str) -> bool {
    topic == topics::ESCALATION || topic == topics::APPROVAL_REQUESTED
}

async fn deliver(engine: &Engine, to: &Destinations, msg: &PendingMessage) -> Result<Sent, String> {
    if to.slack.is_none() && to.pagerduty.is_none() {
        return Ok(Sent::Undeliverable("neither Slack nor PagerDuty is configured".into()));
    }
    let detail = engine.detail(msg.run_id).await.map_err(|e| e.to_string())?;
    let incident: Incident =
        serde_json::from_value(detail.run.state.clone()).map_err(|e| format!("not an incident: {e}"))?;
    let mut taken = false;
    if let Some(slack) = &to.slack {
        taken |= deliver_slack(engine, slack, msg, &detail, &incident).await?;
    }
    if let Some(pd) = &to.pagerduty {
        taken |= deliver_pagerduty(engine, pd, msg, &detail, &incident).await?;
    }
    if !taken && needs_a_person(&msg.topic) {
        return Ok(Sent::Undeliverable(format!("no configured destination takes `{}` for this incident", msg.topic)));
    }
    Ok(Sent::Delivered)
}

async fn deliver_pagerduty(
    engine: &Engine,
    pd: &PagerDuty,
    msg: &PendingMessage,
    detail: &engine::RunDetail,
    incident: &Incident,
) -> Result<bool, String> {
    let triggered = detail.signals.iter().any(|s| s.kind == "pagerduty_triggered");
    let action = match msg.topic.as_str() {
        topics::ESCALATION => "trigger",
        topics::DECIDED if triggered => "acknowledge",
        topics::RESOLVED if triggered => "resolve",
        _ => return Ok(false),
    };
    let severity = match incident.severity {
        Some(nodes::incident::Severity::Sev1) => "critical",
        Some(nodes::incident::Severity::Sev2) => "error",
        Some(nodes::incident::Severity::Sev3) => "warning",
        _ => "info",
    };
    let mut body =
        json!({ "routing_key": pd.routing_key, "event_action": action, "dedup_key": msg.run_id.to_string() });
    if action == "trigger" {
        // An alert's own annotations say what it means and where its runbook is.
        let note = |k: &str| msg.payload["annotations"][k].as_str().filter(|v| !v.is_empty()).map(str::to_owned);
        let reason = msg.payload["reason"].as_str().unwrap_or("escalated");
        let summary = match note("summary") {
            Some(s) => format!("{} — {s} ({reason})", headline(incident)),
            None => format!("{} — {reason}", headline(incident)),
        };
        if let Some(url) = note("runbook_url") {
            body["links"] = json!([{ "href": url, "text": "Runbook" }]);
        }
        body["payload"] = json!({
            "summary": summary,
            "source": incident.detection.as_ref().map_or("sentinel".to_owned(), |d| d.service.clone()),
            "severity": severity,
            "custom_details": {
                "run": msg.run_id.to_string(),
                "outcome": incident.outcome,
                // What was done, and the state to restore by hand.
                "actions": msg.payload.get("actions").cloned().unwrap_or_default(),
                "description": note("description"),
                "runbook_url": note("runbook_url"),
            },
        });
    }
    let url = format!("{}/v2/enqueue", pd.base_url.trim_end_matches('/'));
    let resp = pd
        .http
        .post(&url)
        .json(&body)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| format!("pagerduty: {e}"))?;
    let status = resp.status();
    if !status.is_success() {
        let text = resp.text().await.unwrap_or_default();
        return Err(format!("pagerduty: HTTP {status}: {text}"));
    }
    if action == "trigger" && !triggered {
        match engine.signal(msg.run_id, "pagerduty-trigger", "pagerduty_triggered", json!({})).await {
            Ok(_) | Err(engine::Error::RunFinished { .. }) => {}
            Err(e) => return Err(format!("triggered, but could not record it: {e}")),
        }
    }
    Ok(true)
}

async fn deliver_slack(
    engine: &Engine,
    slack: &SlackClient,
    msg: &PendingMessage,
    detail: &engine::RunDetail,
    incident: &Incident,
) -> Result<bool, String> {
    let run = msg.run_id.to_string();
    let posted = detail.signals.iter().find(|s| s.kind == "slack_message").map(|s| s.payload.clone());
    match (msg.topic.as_str(), posted) {
        (topics::APPROVAL_REQUESTED, None) => {
            // An earlier send of this very message may have reached Slack (its
            // relay died or lost the claim, or the answer never came): look for
            // it by its outbox key before posting again.
            let channel = slack.channel_for(incident.detection.as_ref().map_or("", |d| d.service.as_str()));
            let found = if in_doubt(msg) {
                slack.find_posted(channel, &msg.idempotency_key, msg.created_at).await
            } else {
                None
            };
            let at = match found {
                Some(at) => at,
                None => {
                    let reason = msg.payload["reason"].as_str().unwrap_or_default();
                    let body = json!({
                        "channel": channel, "text": headline(incident), "blocks": approval_blocks(&run, incident, reason),
                        "metadata": { "event_type": OUTBOX_EVENT, "event_payload": { "outbox_key": msg.idempotency_key, "run": run } },
                    });
                    let reply = slack.call("chat.postMessage", &body).await?;
                    json!({ "channel": reply["channel"], "ts": reply["ts"] })
                }
            };
            match engine.signal(msg.run_id, "slack-message", "slack_message", at).await {
                Ok(Delivery::Accepted | Delivery::Duplicate) | Err(engine::Error::RunFinished { .. }) => Ok(true),
                Err(e) => Err(format!("posted, but could not record the message: {e}")),
            }
        }
        // A later proposal of the same incident: the message is updated with it.
        (topics::APPROVAL_REQUESTED, Some(at)) => {
            let reason = msg.payload["reason"].as_str().unwrap_or_default();
            let body = json!({ "channel": at["channel"], "ts": at["ts"], "text": headline(incident), "blocks": approval_blocks(&run, incident, reason) });
            slack.call("chat.update", &body).await.map(|_| true)
        }
        (_, Some(at)) => {
            let body = json!({ "channel": at["channel"], "ts": at["ts"], "text": headline(incident), "blocks": status_blocks(incident, &msg.topic) });
            slack.call("chat.update", &body).await.map(|_| true)
        }
        // Nothing was posted for this incident (it never needed a human).
        (_, None) => Ok(false),
    }
}

fn headline(s: &Incident) -> String {
    let severity = s.severity.map_or("unknown".to_owned(), |x| format!("{x:?}").to_lowercase());
    match &s.detection {
        Some(d) => format!("{severity}: {} on {}", d.anomaly_type.replace('_', " "), d.service),
        None => format!("{severity}: incident"),
    }
}

fn mrkdwn(text: String) -> Value {
    json!({ "type": "section", "text": { "type": "mrkdwn", "text": text } })
}

fn summary_blocks(s: &Incident) -> Vec<Value> {
    let mut blocks = vec![json!({ "type": "header", "text": { "type": "plain_text", "text": headline(s) } })];
    if let Some(d) = &s.detection {
        blocks.push(mrkdwn(format!(
            "*{}* = {:.2} (baseline {:.2} ± {:.2}); affected: {}",
            d.metric,
            d.observed,
            d.baseline_mean,
            d.baseline_stddev,
            s.affected.join(", ")
        )));
    }
    let hypotheses: Vec<String> = s
        .analysis
        .hypotheses
        .iter()
        .take(3)
        .map(|h| format!("• {} — {:.0}%", h.summary, h.confidence * 100.0))
        .collect();
    if !hypotheses.is_empty() {
        blocks.push(mrkdwn(format!("*Hypotheses*\n{}", hypotheses.join("\n"))));
    }
    if let Some(r) = &s.recurrence {
        blocks.push(mrkdwn(format!("*Recurring* — {}", r.describe())));
    }
    let seen: Vec<String> = s
        .analysis
        .similar
        .iter()
        .take(3)
        .map(|n| {
            let r = &n.incident;
            format!(
                "• {} on {} ({:.2} alike): {}{}{}",
                r.symptom.replace('_', " "),
                r.service,
                n.similarity,
                r.remedy.as_ref().map_or("no action".to_owned(), |m| format!("`{}` on `{}`", m.action, m.target)),
                r.outcome.as_deref().map(|o| format!(", {o}")).unwrap_or_default(),
                r.mttr_secs.map(|m| format!(", MTTR {m:.0} s")).unwrap_or_default()
            )
        })
        .collect();
    if !seen.is_empty() {
        blocks.push(mrkdwn(format!("*Seen before*\n{}", seen.join("\n"))));
    }
    if let Some(a) = s.plan.get(s.current) {
        blocks.push(mrkdwn(format!(
            "*Plan*: `{}` on `{}`{} — downtime ~{} s, blast radius {}, rollback: {}",
            a.action.action,
            a.action.target,
            if a.action.params.is_empty() {
                String::new()
            } else {
                format!(" with `{}`", serde_json::to_string(&a.action.params).unwrap_or_default())
            },
            a.estimated_downtime.as_secs(),
            serde_json::to_value(a.blast_radius).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default(),
            a.rollback
        )));
    }
    blocks
}

fn button(action_id: &str, label: &str, style: &str, run: &str, question: &str) -> Value {
    json!({
        "type": "button",
        "action_id": action_id,
        "text": { "type": "plain_text", "text": label },
        "style": style,
        "value": run,
        "confirm": {
            "title": { "type": "plain_text", "text": format!("{label}?") },
            "text": { "type": "mrkdwn", "text": question },
            "confirm": { "type": "plain_text", "text": label },
            "deny": { "type": "plain_text", "text": "Cancel" }
        }
    })
}

fn approval_blocks(run: &str, s: &Incident, reason: &str) -> Vec<Value> {
    let mut blocks = summary_blocks(s);
    blocks.push(
        json!({ "type": "context", "elements": [{ "type": "mrkdwn", "text": format!("Why a human: {reason}") }] }),
    );
    let action = s
        .plan
        .get(s.current)
        .map_or("the planned action".to_owned(), |a| format!("`{}` on `{}`", a.action.action, a.action.target));
    // The buttons carry the gate: a click decides this proposal or nothing.
    let value = format!("{run}/{}", s.gate.as_deref().unwrap_or_default());
    blocks.push(json!({
        "type": "actions",
        "block_id": "sentinel_decision",
        "elements": [
            button(APPROVE_ACTION, "Approve", "primary", &value, &format!("Run {action} now?")),
            button(REJECT_ACTION, "Reject", "danger", &value, &format!("Reject {action}? The incident will be closed."))
        ]
    }));
    blocks
}

fn status_blocks(s: &Incident, topic: &str) -> Vec<Value> {
    let mut blocks = summary_blocks(s);
    let mut lines: Vec<String> = s
        .decisions
        .iter()
        .map(|d| format!("{} by {}", if d.approved { "Approved" } else { "Rejected" }, d.by))
        .collect();
    lines.push(match topic {
        topics::EXECUTED => "Action executed; verifying.".to_owned(),
        topics::RESOLVED => format!("Resolved (MTTR {:.0} s).", s.mttr_secs.unwrap_or_default()),
        topics::ESCALATION => {
            // What was done, with the state to restore by hand if need be.
            let done: Vec<String> = s
                .actions
                .iter()
                .filter(|a| !a.dry_run)
                .map(|a| {
                    format!("`{}` on `{}` (before: `{}`)", a.action.action.action, a.action.action.target, a.pre_state)
                })
                .collect();
            let done = if done.is_empty() { String::new() } else { format!(" Done: {}.", done.join("; ")) };
            format!("Escalated: {}.{done}", s.outcome.as_deref().unwrap_or("needs a human"))
        }
        _ => s.outcome.clone().unwrap_or_else(|| "Decision recorded.".to_owned()),
    });
    blocks.push(json!({ "type": "context", "elements": [{ "type": "mrkdwn", "text": lines.join(" · ") }] }));
    blocks
}

/// When a message that failed its `attempt`-th delivery is tried again; `None`: dead-lettered.
fn retry_time(config: &RelayConfig, now: Timestamp, attempt: i32) -> Option<Timestamp> {
    (attempt < config.retry.max_attempts).then(|| now.saturating_add(config.retry.backoff(attempt)))
}
