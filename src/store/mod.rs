//! The stores: SQLite (the monolith's file, the source of truth while dual writing) and
//! PostgreSQL (the target, fed by the replicator; in the last phases the primary, see `pg_primary`).

pub(crate) mod fence;
pub(crate) mod pg_pool;
pub(crate) mod pg_primary;
pub mod postgres;
pub mod sqlite;
