//! Sentinel's HTTP edge: the REST API, the operator console, Slack
//! interactivity, the telemetry routes, and what guards them (API keys,
//! sessions, roles, rate limits, the audit log). The only crate that knows
//! HTTP, HTML and JSON wire formats.

pub mod access;
pub mod console;
pub mod detector_state;
pub mod gate;
pub mod ingest;
pub mod observe;
pub mod partitions;
pub mod remediate;
pub mod security;
pub mod server;
pub mod slack;
