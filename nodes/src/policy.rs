//! Auto-approval policy: the guards an action must pass before it may run
//! without a human, and the circuit breaker over recent executor outcomes.
//!
//! Everything here is a pure function of the configuration, the proposed
//! action, the facts read from durable storage ([`Facts`]) and the time, so the
//! same inputs always give the same decision, and every guard is testable alone.

use std::time::Duration;

use engine::Timestamp;
use executors::Allowlist;
use serde::{Deserialize, Serialize};

/// What a planned action claims about itself (from its runbook).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProposedAction {
    pub service: String,
    /// The executor kind and action, e.g. `kubernetes` / `restart_deployment`.
    pub executor: String,
    pub action: String,
    /// What it acts on, e.g. `kubernetes:prod/checkout`.
    pub target: String,
    pub estimated_downtime: Duration,
}

/// The policy's settings. Defaults are the documented ones.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PolicyConfig {
    /// Actions whose estimated downtime is at least this need a human.
    pub max_auto_downtime: Duration,
    pub breaker: BreakerConfig,
    pub max_auto_per_minute: u32,
    pub max_auto_per_hour: u32,
    /// Targets that may be acted on without a human (the executors' pattern
    /// type, [`Allowlist`]). Empty: nothing is auto-approved.
    pub allowlist: Allowlist,
    /// After an action on a service, further auto-approvals on it wait this long.
    pub service_cooldown: Duration,
    /// The same action that failed on the same target within this window is
    /// not auto-approved again (the remediation-loop guard).
    pub loop_guard_window: Duration,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            max_auto_downtime: Duration::from_secs(60),
            breaker: BreakerConfig::default(),
            max_auto_per_minute: 5,
            max_auto_per_hour: 30,
            allowlist: Allowlist::default(),
            service_cooldown: Duration::from_secs(10 * 60),
            loop_guard_window: Duration::from_secs(6 * 3600),
        }
    }
}

/// The circuit breaker: auto-approval stops when the recent executor failure
/// rate exceeds `failure_threshold`, and starts again `cool_down` after the trip.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BreakerConfig {
    pub failure_threshold: f64,
    /// Outcomes older than this do not count.
    pub window: Duration,
    /// Fewer outcomes than this in the window never trip the breaker.
    pub min_outcomes: usize,
    pub cool_down: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 0.10,
            window: Duration::from_secs(3600),
            min_outcomes: 5,
            cool_down: Duration::from_secs(15 * 60),
        }
    }
}

/// One executor outcome, as the audit trail records it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub at: Timestamp,
    pub succeeded: bool,
}

/// A past action of the same kind on the same target that did not help.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FailedAttempt {
    pub at: Timestamp,
    pub action: String,
    pub target: String,
}

/// The kinds of ledger facts the policy is made of (see `engine::Store::ledger`).
pub mod facts {
    /// An auto-approval, reserved atomically against the limits; subject: the service.
    pub const AUTO_APPROVAL: &str = "auto_approval";
    /// A live action was carried out (or failed part-way); subject: the service.
    pub const ACTION: &str = "action";
    /// An executor outcome for the breaker; subject: the service.
    pub const OUTCOME: &str = "outcome";
    /// An action that did not help; subject: [`failure_subject`].
    pub const FAILURE: &str = "failure";

    pub fn failure_subject(action: &str, target: &str) -> String {
        format!("{action}@{target}")
    }
}

impl PolicyConfig {
    /// How far back the policy's facts reach: its longest window (the
    /// breaker's replay includes a cool-down).
    pub fn horizon(&self) -> Duration {
        [
            self.breaker.window + self.breaker.cool_down,
            self.loop_guard_window,
            self.service_cooldown,
            Duration::from_secs(3600),
        ]
        .into_iter()
        .max()
        .unwrap_or_default()
    }

    /// The limits an auto-approval of `action` is reserved against, in one
    /// atomic step, so that concurrent decisions anywhere in the fleet never
    /// exceed them together. [`refusal`] names a refused one.
    pub fn limits(&self, action: &ProposedAction) -> Vec<engine::Limit> {
        let limit = |kind: &str, subject: Option<String>, window: Duration, max: u32| engine::Limit {
            kind: kind.to_owned(),
            subject,
            window,
            max,
        };
        vec![
            limit(facts::AUTO_APPROVAL, None, Duration::from_secs(60), self.max_auto_per_minute),
            limit(facts::AUTO_APPROVAL, None, Duration::from_secs(3600), self.max_auto_per_hour),
            limit(facts::AUTO_APPROVAL, Some(action.service.clone()), self.service_cooldown, 1),
            limit(facts::ACTION, Some(action.service.clone()), self.service_cooldown, 1),
            limit(
                facts::FAILURE,
                Some(facts::failure_subject(&action.action, &action.target)),
                self.loop_guard_window,
                1,
            ),
        ]
    }

    /// Why [`PolicyConfig::limits`]`[index]` refused, given how many facts filled it and the newest.
    pub fn refusal(&self, index: usize, count: u32, latest: Option<Timestamp>) -> Refusal {
        let latest = latest.unwrap_or(Timestamp(0));
        match index {
            0 => Refusal::RateLimitMinute { count, limit: self.max_auto_per_minute },
            1 => Refusal::RateLimitHour { count, limit: self.max_auto_per_hour },
            2 | 3 => Refusal::Cooldown { until: latest.saturating_add(self.service_cooldown) },
            _ => Refusal::FailedBefore { at: latest },
        }
    }
}

/// What the policy needs to know, read from durable storage (so it survives
/// restarts) by whoever calls [`decide`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Facts {
    pub kill_switch: bool,
    /// Executor outcomes, any order.
    pub outcomes: Vec<Outcome>,
    /// When earlier auto-approvals were given, any order.
    pub auto_approvals: Vec<Timestamp>,
    /// When the service was last acted on, if ever.
    pub last_action_on_service: Option<Timestamp>,
    pub failed_attempts: Vec<FailedAttempt>,
    /// The target was remediated again and again (semantic memory's
    /// [`crate::memory::recurrence`]): how many times, and whether with the
    /// same escalating fix. Set by the workflow, not read from the ledger.
    #[serde(default)]
    pub recurring: Option<(usize, bool)>,
}

/// Why an action was not auto-approved. Each is checked on its own.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "guard", rename_all = "snake_case")]
pub enum Refusal {
    KillSwitch,
    Downtime {
        estimated_secs: u64,
        limit_secs: u64,
    },
    BreakerOpen {
        failure_rate: f64,
        until: Timestamp,
    },
    RateLimitMinute {
        count: u32,
        limit: u32,
    },
    RateLimitHour {
        count: u32,
        limit: u32,
    },
    NotAllowlisted {
        target: String,
    },
    Cooldown {
        until: Timestamp,
    },
    FailedBefore {
        at: Timestamp,
    },
    /// The fix is not holding: the target was remediated before, recently.
    Recurring {
        previous: usize,
        escalating: bool,
    },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::KillSwitch => write!(f, "the kill switch is on"),
            Refusal::Downtime { estimated_secs, limit_secs } => {
                write!(f, "estimated downtime {estimated_secs}s is not under {limit_secs}s")
            }
            Refusal::BreakerOpen { failure_rate, until } => write!(
                f,
                "circuit breaker open: recent executor failure rate {:.0}%, closes at {}",
                failure_rate * 100.0,
                until.0
            ),
            Refusal::RateLimitMinute { count, limit } => {
                write!(f, "{count} auto-approvals in the last minute (limit {limit})")
            }
            Refusal::RateLimitHour { count, limit } => {
                write!(f, "{count} auto-approvals in the last hour (limit {limit})")
            }
            Refusal::NotAllowlisted { target } => write!(f, "target `{target}` is not on the allowlist"),
            Refusal::Cooldown { until } => write!(f, "service in cooldown until {}", until.0),
            Refusal::FailedBefore { at } => write!(f, "the same action already failed on this target at {}", at.0),
            Refusal::Recurring { previous, escalating: true } => write!(
                f,
                "recurring: the same escalating fix was applied to this target before ({previous} fix(es) in 7 days)"
            ),
            Refusal::Recurring { previous, escalating: false } => {
                write!(f, "recurring: this target was remediated {previous} time(s) in 7 days")
            }
        }
    }
}

/// The policy's decision, with every reason.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    AutoApprove,
    NeedsHuman { refusals: Vec<Refusal> },
}

impl Decision {
    /// One sentence for the audit trail.
    pub fn reason(&self) -> String {
        match self {
            Decision::AutoApprove => "auto-approved: every guard passed".to_owned(),
            Decision::NeedsHuman { refusals } => {
                let reasons: Vec<String> = refusals.iter().map(ToString::to_string).collect();
                format!("needs a human: {}", reasons.join("; "))
            }
        }
    }
}

/// The breaker's state at a time.
#[derive(Clone, Debug, PartialEq)]
pub enum Breaker {
    Closed { failure_rate: f64 },
    Open { failure_rate: f64, until: Timestamp },
}

/// Replays the outcomes in time order. The breaker trips when, among the
/// outcomes within `window` and after the last reset, at least `min_outcomes`
/// are present and the failure rate exceeds the threshold; it stays open for
/// `cool_down`, after which it is reset: outcomes before the reset no longer count.
pub fn breaker(config: &BreakerConfig, outcomes: &[Outcome], now: Timestamp) -> Breaker {
    let mut sorted: Vec<&Outcome> = outcomes.iter().filter(|o| o.at <= now).collect();
    sorted.sort_by_key(|o| o.at);
    let mut reset_at: Option<Timestamp> = None;
    let mut open_until: Option<Timestamp> = None;
    let rate_at = |t: Timestamp, reset: Option<Timestamp>| -> (usize, f64) {
        let from = t.saturating_sub(config.window);
        let counted: Vec<&&Outcome> =
            sorted.iter().filter(|o| o.at <= t && o.at > from && reset.is_none_or(|r| o.at >= r)).collect();
        let failures = counted.iter().filter(|o| !o.succeeded).count();
        let rate = if counted.is_empty() { 0.0 } else { failures as f64 / counted.len() as f64 };
        (counted.len(), rate)
    };
    for o in &sorted {
        if let Some(until) = open_until {
            if o.at < until {
                continue;
            }
            // Cool-down over: start afresh from the end of it.
            reset_at = Some(until);
            open_until = None;
        }
        let (n, rate) = rate_at(o.at, reset_at);
        if n >= config.min_outcomes && rate > config.failure_threshold {
            open_until = Some(o.at.saturating_add(config.cool_down));
        }
    }
    if let Some(until) = open_until {
        if now < until {
            let (_, rate) = rate_at(now, reset_at);
            return Breaker::Open { failure_rate: rate, until };
        }
        reset_at = Some(until);
    }
    let (_, rate) = rate_at(now, reset_at);
    Breaker::Closed { failure_rate: rate }
}

/// Decides whether `action` may run without a human. Every guard is checked,
/// so the decision lists every reason, not just the first.
pub fn decide(config: &PolicyConfig, action: &ProposedAction, facts: &Facts, now: Timestamp) -> Decision {
    let mut refusals = Vec::new();
    if facts.kill_switch {
        refusals.push(Refusal::KillSwitch);
    }
    if action.estimated_downtime >= config.max_auto_downtime {
        refusals.push(Refusal::Downtime {
            estimated_secs: action.estimated_downtime.as_secs(),
            limit_secs: config.max_auto_downtime.as_secs(),
        });
    }
    if let Breaker::Open { failure_rate, until } = breaker(&config.breaker, &facts.outcomes, now) {
        refusals.push(Refusal::BreakerOpen { failure_rate, until });
    }
    let within =
        |d: Duration| facts.auto_approvals.iter().filter(|t| **t <= now && **t > now.saturating_sub(d)).count() as u32;
    let last_minute = within(Duration::from_secs(60));
    if last_minute >= config.max_auto_per_minute {
        refusals.push(Refusal::RateLimitMinute { count: last_minute, limit: config.max_auto_per_minute });
    }
    let last_hour = within(Duration::from_secs(3600));
    if last_hour >= config.max_auto_per_hour {
        refusals.push(Refusal::RateLimitHour { count: last_hour, limit: config.max_auto_per_hour });
    }
    if !config.allowlist.admits(&action.target) {
        refusals.push(Refusal::NotAllowlisted { target: action.target.clone() });
    }
    if let Some(last) = facts.last_action_on_service {
        let until = last.saturating_add(config.service_cooldown);
        if now < until {
            refusals.push(Refusal::Cooldown { until });
        }
    }
    let since = now.saturating_sub(config.loop_guard_window);
    if let Some(f) = facts
        .failed_attempts
        .iter()
        .filter(|f| f.action == action.action && f.target == action.target && f.at > since && f.at <= now)
        .max_by_key(|f| f.at)
    {
        refusals.push(Refusal::FailedBefore { at: f.at });
    }
    if let Some((previous, escalating)) = facts.recurring {
        refusals.push(Refusal::Recurring { previous, escalating });
    }
    if refusals.is_empty() {
        Decision::AutoApprove
    } else {
        Decision::NeedsHuman { refusals }
    }
}

pub mod ledger;

#[cfg(test)]
#[path = "policy/tests.rs"]
mod tests;
