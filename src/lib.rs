//! dualwrite: move a live application's data from SQLite to PostgreSQL without downtime.
//!
//! The monolith writes through [`Bridge`]. In the SQLite-first write modes every change commits to
//! SQLite together with an outbox record and is replicated to PostgreSQL in the background; in the
//! PostgreSQL-first modes a write commits to PostgreSQL first and SQLite follows through change
//! capture ([`WriteMode`]). See docs/ARCHITECTURE.md.

// Backfill (copy history in while writes go on) and verify/repair (prove the stores equal).
pub mod backfill;
mod bridge;
// The typed repository operations by name, with JSON arguments (`dw_call`, the C++ `call`).
mod call;
pub mod capture;
mod config;
mod crypto;
pub mod doctor;
mod error;
mod flags;
// Legacy data: adopting the monolith's own file, preflight profiling, conversion rules, rejects.
pub mod legacy;
// The migration ledger's SQL and `Migration`, shared by the runner, adoption and preflight.
mod ledger;
pub mod logging;
pub mod metrics;
// The C ABI (include/dualwrite.h); nothing in the Rust API depends on it.
mod ffi;
mod migrate;
// The JSON configuration object the bindings open a bridge with.
mod open_json;
// PostgreSQL connections: the connect (URL, TLS, masking, keepalives) and the reply deadline.
mod pg_connect;
mod pg_deadline;
mod pgcopy;
mod phases;
mod reads;
// Repair (re-send what verify found different), above the bridge it writes through.
pub mod repair;
mod replicator;
mod repo;
pub mod schema;
pub mod store;
pub mod verify;

pub use bridge::{Bridge, BridgeOptions, Status};
pub use config::{Config, KeySource, LegacyConfig, DEFAULT_SQLITE_PATH};
pub use crypto::SecretKey;
pub use error::{ConflictReason, Error, ErrorKind, Result};
pub use flags::{FlagChange, Flags, ReadSource, WriteMode, FORCE_SQLITE_ENV};
pub use migrate::{
    latest_version, migrate_postgres, migrate_sqlite, migrate_sqlite_with, postgres_version, sqlite_version,
    MigrationReport, Store,
};
pub use open_json::open_config_from_json;
pub use pg_connect::{PgConfig, RootCert, SslMode};
pub use reads::{ListQuery, ReadCounters};
pub use replicator::{ReplicatorOptions, LEASE_DURATION};
pub use repo::{
    serpapi_hash, ApiKey, AuditEvent, Cache, CacheEntry, Embedding, GeneratedText, GeneratedTextRevision,
    GeneratedTextStatus, Heading, HeadingLevel, Job, JobLog, JobPriority, JobStatus, LogLevel, NewAuditEvent,
    NewEmbedding, NewGeneratedText, NewHeading, NewJob, NewJobLog, NewPage, NewSerpApiResult, NewUser, Page,
    Paging, Prompt, Secret, SectionType, SerpApiResult, User, UserChanges, UserRole,
};
pub use schema::Row;
pub use store::outbox::DeadLetter;
pub use store::MAX_LIST_BYTES;
