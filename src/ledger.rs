//! The migration ledger's shared part: a compiled-in migration ([`Migration`]) and SQLite's ledger
//! table (`_dualwrite_migrations`), its DDL, reading it back and recording a version. The runner
//! (`migrate`), the adoption of the monolith's file (`legacy::adopt`, which applies version 1
//! itself, in its own transaction) and preflight all use it, so the ledger's SQL is written once
//! and legacy needs nothing from the runner that calls it.

use crate::error::Result;
use rusqlite::Connection;
use sha2::{Digest, Sha256};

/// One compiled-in migration script of either store.
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

impl Migration {
    pub fn checksum(&self) -> String {
        hex::encode(Sha256::digest(self.sql.as_bytes()))
    }
}

/// One ledger row as read back.
pub(crate) struct LedgerRow {
    pub(crate) version: i64,
    pub(crate) checksum: String,
    pub(crate) success: bool,
}

pub(crate) const SQLITE_LEDGER: &str = "CREATE TABLE IF NOT EXISTS _dualwrite_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    checksum TEXT NOT NULL,
    success INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    applied_at TEXT NOT NULL)";

pub(crate) fn sqlite_ledger(conn: &Connection) -> Result<Vec<LedgerRow>> {
    let mut stmt =
        conn.prepare("SELECT version, checksum, success FROM _dualwrite_migrations ORDER BY version")?;
    let rows = stmt
        .query_map([], |r| Ok(LedgerRow { version: r.get(0)?, checksum: r.get(1)?, success: r.get(2)? }))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Record `m` as applied, successfully, in `duration_ms`, in the transaction `conn` that applied it
/// (so the script and its ledger row commit together).
pub(crate) fn record_sqlite(conn: &Connection, m: &Migration, duration_ms: i64) -> Result<()> {
    conn.execute(
        "INSERT INTO _dualwrite_migrations (version, name, checksum, success, duration_ms, applied_at)
         VALUES (?1, ?2, ?3, 1, ?4, ?5)",
        rusqlite::params![m.version, m.name, m.checksum(), duration_ms, crate::schema::now_timestamp()],
    )?;
    Ok(())
}

/// Whether the file has a ledger at all (a file never migrated has none).
pub(crate) fn sqlite_has_ledger(conn: &Connection) -> Result<bool> {
    Ok(conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = '_dualwrite_migrations'",
        [],
        |r| r.get(0),
    )?)
}

/// Whether the ledger records `version` (applied or dirty); `false` without a ledger.
pub(crate) fn sqlite_records(conn: &Connection, version: i64) -> Result<bool> {
    if !sqlite_has_ledger(conn)? {
        return Ok(false);
    }
    Ok(conn.query_row(
        "SELECT count(*) > 0 FROM _dualwrite_migrations WHERE version = ?1",
        [version],
        |r| r.get(0),
    )?)
}

/// The newest version applied successfully, without checking the ledger against this build
/// (preflight reports on files any build migrated); 0 without a ledger.
pub(crate) fn sqlite_applied_version(conn: &Connection) -> Result<i64> {
    if !sqlite_has_ledger(conn)? {
        return Ok(0);
    }
    Ok(conn.query_row(
        "SELECT coalesce(max(version), 0) FROM _dualwrite_migrations WHERE success",
        [],
        |r| r.get(0),
    )?)
}
