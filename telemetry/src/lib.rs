//! The telemetry path: events in (HTTP, Prometheus remote write, Kafka, Alertmanager), stored
//! (ClickHouse, or in memory), and watched by streaming detectors whose
//! anomalies start incident runs.

pub mod alertmanager;
pub mod detect;
pub mod event;
pub mod kafka;
pub mod pipeline;
pub mod prometheus;
pub mod remote_write;
pub mod replay;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
