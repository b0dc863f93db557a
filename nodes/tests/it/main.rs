//! The incident workflow end to end on the engine, on PostgreSQL and SQLite.
mod scenarios;
