//! The incident workflow on the engine. So far: the safety policy that decides
//! whether a planned action may run without a human.

pub mod policy;
