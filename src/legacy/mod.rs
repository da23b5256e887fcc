//! Legacy data: the monolith's own SQLite file, written for years without the constraints our
//! migrations add.
//!
//! - [`convert`]: the conversion rules (timestamps detected by value, numbers stored as text,
//!   empty strings meant as NULL, plain text in a jsonb column, uuids in other spellings), chosen
//!   per column and overridable in the configuration (`[conversions]`); [`convert_row`] turns one
//!   raw row into the wire form or names every problem as a [`Reject`].
//! - [`preflight`]: `dualwrite preflight` — profiles every column of every table, read-only, on a
//!   legacy file or a migrated one, and says whether a backfill can run clean.
//! - [`adopt`]: `migrate_sqlite` on a file that already holds the monolith's tables rebuilds each
//!   into our schema in one transaction; rows that cannot be converted stop the adoption with a
//!   report (default) or are held out, unchanged, in `_dualwrite_adoption_holdouts`.
//! - [`rejects`]: where the backfill records rows it cannot copy (`dualwrite.backfill_rejects` in
//!   PostgreSQL and a JSON-lines file), so `backfill --retry-rejects` can take only those again.
//!
//! See docs/ARCHITECTURE.md, "Legacy data", and docs/MIGRATION.md.

pub mod adopt;
pub mod convert;
pub mod preflight;
pub mod rejects;
mod source;

pub use adopt::{
    decode_holdout, holdouts, AdoptOptions, AdoptionReport, ExtraColumns, HeldOutRow, TableAdoption,
    Unconvertible,
};
pub use convert::{
    convert_row, convert_sqlite_row, to_sqlite_values, ColumnRule, ColumnRules, EpochUnit, Overrides, Reject,
};
pub use preflight::{preflight, PreflightOptions, PreflightReport};
pub use rejects::{RejectStage, RejectStore, RejectedRow};
