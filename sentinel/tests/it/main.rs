//! Process-level tests: real `sentinel worker` processes against a real
//! PostgreSQL, killed with SIGKILL, and a PostgreSQL cluster restarted under
//! a running engine.
mod api;
mod api_fuzz;
mod cli;
mod cluster;
mod config;
mod console;
mod console_browser;
mod crash;
mod demo;
mod facts;
mod gates;
mod ingest;
mod ingest_crash;
mod memory;
mod partitions;
mod pg_restart;
mod prometheus;
mod rbac;
mod relay;
mod remediation;
mod replicas;
mod slack;
mod support;
mod traces;
mod verify_outage;
