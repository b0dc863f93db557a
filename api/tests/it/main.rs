//! Process-level tests: real `sentinel worker` processes against a real
//! PostgreSQL, killed with SIGKILL, and a PostgreSQL cluster restarted under
//! a running engine.
mod crash;
mod pg_restart;
mod support;
