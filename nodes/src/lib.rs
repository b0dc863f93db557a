//! The incident workflow on the engine. So far, its building blocks: incident
//! identity and severity, the runbooks that say which actions to plan, the
//! safety policy that decides whether an action may run without a human, and
//! the verification of an action's effect. The graph that ties them together
//! comes next.

pub mod analyze;
pub mod catalog;
pub mod incident;
pub mod intake;
pub mod memory;
pub mod policy;
pub mod ports;
pub mod postmortem;
pub mod runbook;
pub mod verify;
pub mod workflow;
pub mod yaml;
