//! The `sentinel` binary's library half: configuration, the built-in
//! benchmark graphs and the benchmarks, so integration tests can drive the
//! same code the binary runs.

pub mod access;
pub mod bench;
pub mod cli;
pub mod config;
pub mod demo;
pub mod detector_state;
pub mod facts;
pub mod gate;
pub mod ingest;
pub mod logging;
pub mod observe;
pub mod partitions;
pub mod relay;
pub mod remediate;
pub mod security;
pub mod server;
pub mod slack;
pub mod wiring;
