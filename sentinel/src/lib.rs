//! The `sentinel` binary's library half: the configuration, the wiring of
//! ports for a standalone server, the outbox relay, logging and the CLI's
//! REST client, so integration tests drive the same code the binary runs.

pub mod cli;
pub mod config;
pub mod logging;
pub mod relay;
pub mod wiring;
