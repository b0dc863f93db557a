//! The incident workflow on the engine. So far: the safety policy that decides
//! whether a planned action may run without a human, and the runbooks that
//! say which actions to plan.

pub mod policy;
pub mod runbook;
