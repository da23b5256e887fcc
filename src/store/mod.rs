//! The two stores: SQLite (the monolith's file, the source of truth while dual writing) and
//! PostgreSQL (the target, fed by the replicator).

pub mod postgres;
pub mod sqlite;
