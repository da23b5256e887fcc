//! The way back from a lost capture (PostgreSQL invalidated the slot, or it was dropped) while
//! PostgreSQL is the primary: a new slot, then SQLite takes every row PostgreSQL holds.
//!
//! The copy is read after the new slot's start, so the slot hands out again changes the copy
//! already holds; applied in order on top of it they bring each row back to its newest state, so
//! SQLite converges on PostgreSQL (the same reasoning as a snapshot + replay subscriber).

use super::follow::{upsert_row, CaptureState, Era};
use super::slot;
use crate::error::{Error, Result};
use crate::pg_connect::PgConfig;
use crate::schema::TABLES;
use postgres::fallible_iterator::FallibleIterator;
use rusqlite::Connection;
use std::collections::HashSet;

/// What a resync copied.
#[derive(Debug, Default)]
pub struct Resynced {
    pub rows: u64,
    pub deleted: u64,
}

/// Run in the caller's SQLite write transaction (`conn`, holding the file's write lock).
pub fn resync(conn: &Connection, pg: &PgConfig) -> Result<Resynced> {
    if CaptureState::load(conn)?.era != Era::PostgresFirst {
        return Err(Error::Conflict(
            "SQLite is the primary store (write_mode sqlite or dual): copying PostgreSQL over it would lose its \
             changes; a resync is for the PostgreSQL-first modes"
                .into(),
        ));
    }
    let mut client = pg.connect()?;
    slot::drop_slot(&mut client)?;
    slot::ensure(&mut client)?;
    // Rows may arrive in any order across tables: check the foreign keys at commit.
    conn.execute_batch("PRAGMA defer_foreign_keys = ON")?;
    let mut out = Resynced::default();
    for table in TABLES {
        let mut keys = HashSet::new();
        let sql = crate::store::postgres::row_to_wire_sql(table);
        let mut rows = client.query_raw(&sql, std::iter::empty::<&(dyn postgres::types::ToSql + Sync)>())?;
        while let Some(r) = rows.next()? {
            let row = crate::store::postgres::wire_row(table, &r)?;
            keys.insert(table.key_of(&row)?.to_string());
            upsert_row(conn, table, &row)?;
            out.rows += 1;
        }
        let mut stale = Vec::new();
        {
            let mut stmt = conn.prepare(&format!("SELECT {} FROM {}", table.key, table.name))?;
            let mut q = stmt.query([])?;
            while let Some(r) = q.next()? {
                let k: String = r.get(0)?;
                if !keys.contains(&k) {
                    stale.push(k);
                }
            }
        }
        for k in stale {
            conn.execute(&format!("DELETE FROM {} WHERE {} = ?1", table.name, table.key), [&k])?;
            out.deleted += 1;
        }
    }
    conn.execute(
        "UPDATE _dualwrite_capture SET applied_lsn = 0, cut_at_lsn = NULL, cut_at = NULL, last_error = NULL WHERE id = 1",
        [],
    )?;
    conn.execute("DELETE FROM _dualwrite_capture_dead_letters", [])?;
    Ok(out)
}
