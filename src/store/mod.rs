//! The stores: SQLite (the monolith's file, the source of truth while dual writing) and
//! PostgreSQL (the target, fed by the replicator; in the last phases the primary, see `pg_primary`).
//!
//! Inside, the layers go `outbox` and `sqlite` and `postgres` at the bottom, then `fence`,
//! `pg_pool`, `pg_primary`, and `write_tx` (which writes to either) on top; no file imports one
//! above it (tests/structure.rs).

use crate::error::Error;

pub(crate) mod fence;
pub mod outbox;
pub(crate) mod pg_pool;
pub(crate) mod pg_primary;
pub mod postgres;
pub mod sqlite;
pub mod write_tx;

/// The most one list returns, as the rows' bytes (SQLite's values, or PostgreSQL's wire text):
/// without a bound, 10,000 rows of up to 8 MiB each would be ~80 GB in the caller's process.
/// Reading stops as soon as the rows pass it, and the read fails with [`list_too_large`]; a list
/// always returns its first row, whatever its size.
pub const MAX_LIST_BYTES: usize = 64 << 20;

/// The error of a list whose rows pass [`MAX_LIST_BYTES`] (`InvalidArgument`, `DW_INVALID_ARGUMENT`).
pub(crate) fn list_too_large(rows: usize) -> Error {
    Error::invalid(
        "limit",
        format!(
            "the first {rows} rows of this list already take more than {} MiB, the most one list returns: \
             ask for fewer rows (limit) and page through the rest (offset)",
            MAX_LIST_BYTES >> 20
        ),
    )
}
