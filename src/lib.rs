//! dualwrite: move a live application's data from SQLite to PostgreSQL without downtime.
//!
//! The monolith writes through [`Bridge`]; every change commits to SQLite together with an
//! outbox record and is replicated to PostgreSQL in the background. See docs/ARCHITECTURE.md.

// Backfill (copy history in while writes go on) and verify/repair (prove the stores equal).
pub mod backfill;
mod bridge;
pub mod capture;
mod config;
mod crypto;
pub mod doctor;
mod error;
mod flags;
// Legacy data: adopting the monolith's own file, preflight profiling, conversion rules, rejects.
pub mod legacy;
pub mod logging;
pub mod metrics;
// The C ABI (include/dualwrite.h); nothing in the Rust API depends on it.
mod ffi;
mod migrate;
mod pg_deadline;
mod pgcopy;
mod phases;
mod reads;
mod replicator;
mod repo;
pub mod schema;
pub mod store;
pub mod verify;

pub use bridge::{Bridge, BridgeOptions, ListQuery, Row, Status, MAX_LIST_BYTES};
pub use config::{Config, KeySource, LegacyConfig, PgConfig, RootCert, SslMode, DEFAULT_SQLITE_PATH};
pub use crypto::SecretKey;
pub use error::{Error, Result};
pub use flags::{FlagChange, Flags, ReadSource, WriteMode, FORCE_SQLITE_ENV};
pub use migrate::{
    latest_version, migrate_postgres, migrate_sqlite, migrate_sqlite_with, postgres_version, sqlite_version,
    MigrationReport, Store,
};
pub use reads::ReadCounters;
pub use replicator::{ReplicatorOptions, LEASE_DURATION};
pub use repo::{
    serpapi_hash, ApiKey, AuditEvent, Cache, CacheEntry, Embedding, GeneratedText, GeneratedTextRevision,
    GeneratedTextStatus, Heading, HeadingLevel, Job, JobLog, JobPriority, JobStatus, LogLevel, NewAuditEvent,
    NewEmbedding, NewGeneratedText, NewHeading, NewJob, NewJobLog, NewPage, NewSerpApiResult, NewUser, Page,
    Paging, Prompt, Secret, SectionType, SerpApiResult, User, UserChanges, UserRole,
};
pub use store::sqlite::DeadLetter;
