//! dualwrite: move a live application's data from SQLite to PostgreSQL without downtime.
//!
//! The monolith writes through [`Bridge`]; every change commits to SQLite together with an
//! outbox record and is replicated to PostgreSQL in the background. See docs/ARCHITECTURE.md.

mod bridge;
mod config;
mod crypto;
pub mod doctor;
mod error;
mod migrate;
mod replicator;
pub mod schema;
pub mod store;

pub use bridge::{Bridge, BridgeOptions, ListQuery, Row, Status};
pub use config::{Config, KeySource, PgConfig};
pub use crypto::SecretKey;
pub use error::{Error, Result};
pub use migrate::{
    latest_version, migrate_postgres, migrate_sqlite, postgres_version, sqlite_version, MigrationReport,
    Store,
};
pub use replicator::ReplicatorOptions;
pub use store::sqlite::DeadLetter;
