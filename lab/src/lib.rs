//! Sentinel on synthetic load: the demo (a simulated fleet feeding the
//! embedded telemetry pipeline, its scenarios and report), and the
//! benchmarks with their built-in `bench.*` graphs. Registered only by
//! `sentinel demo` and `sentinel bench …`, never by `serve` or `worker`.

pub mod bench;
pub mod demo;
pub mod eval;
pub mod memory_eval;
