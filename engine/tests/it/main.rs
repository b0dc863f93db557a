//! The engine's behaviour, one suite run against PostgreSQL and SQLite.
mod behaviour;
mod fleet;
mod graph;
