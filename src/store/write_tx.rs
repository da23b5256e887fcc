//! The write transaction every change goes through: the row and its outbox record commit (or
//! vanish) together in SQLite, or, while PostgreSQL is the primary, the row is written in
//! PostgreSQL's transaction (`store::pg_primary`).

use crate::error::{Error, Result};
use crate::schema::{
    check_indexed_text, decode_sqlite_row, encode_for_sqlite, now_timestamp, Filter, SqlValue, Table,
};
use crate::store::outbox::{DeadLetters, Op};
use crate::store::pg_primary::PgWrite;
use crate::store::sqlite::{column_list, filtered_rows_within, get_row, Rows};
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{Map, Value};

/// A write transaction: every change made through it is recorded in the outbox in the same
/// transaction, so the row and its outbox record commit (or vanish) together.
///
/// While PostgreSQL is the primary (`store::pg_primary`) the rows are read and written in a
/// PostgreSQL transaction instead, and nothing is written to SQLite (the change capture brings
/// the changes there); no SQLite lock is held.
pub struct WriteTx<'c> {
    target: Target<'c>,
    pub(crate) changes: usize,
    /// Off once SQLite-only mode has captured as many changes as it may (`Bridge::write`).
    capture: bool,
}

enum Target<'c> {
    Sqlite(rusqlite::Transaction<'c>),
    /// `conn`: a SQLite connection for the bridge's own bookkeeping reads, never written.
    Postgres {
        pg: Box<PgWrite>,
        conn: &'c Connection,
    },
}

impl Rows for WriteTx<'_> {
    fn conn(&self) -> &Connection {
        match &self.target {
            Target::Sqlite(tx) => tx,
            Target::Postgres { conn, .. } => conn,
        }
    }

    fn get_row(&self, table: &Table, key: &str) -> Result<Option<Map<String, Value>>> {
        match &self.target {
            Target::Postgres { pg, .. } => pg.get_row(table, key),
            Target::Sqlite(tx) => get_row(tx, table, key),
        }
    }

    fn query_rows(&self, table: &Table, filter: &Filter) -> Result<Vec<Map<String, Value>>> {
        match &self.target {
            Target::Postgres { pg, .. } => pg.query_rows(table, filter),
            Target::Sqlite(tx) => filtered_rows_within(tx, table, filter, usize::MAX),
        }
    }
}

impl<'c> WriteTx<'c> {
    pub(crate) fn begin(conn: &'c mut Connection) -> Result<Self> {
        // IMMEDIATE takes the write lock up front, so a transaction that read first never fails
        // to upgrade (SQLITE_BUSY without a retry) when another process writes.
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        Ok(WriteTx { target: Target::Sqlite(tx), changes: 0, capture: true })
    }

    /// A write whose rows live in PostgreSQL's transaction `pg` (PostgreSQL is the primary).
    pub(crate) fn on_postgres(conn: &'c Connection, pg: Box<PgWrite>) -> Self {
        WriteTx { target: Target::Postgres { pg, conn }, changes: 0, capture: false }
    }

    /// A one-statement PostgreSQL write the write fence refused: the fence's mode.
    pub(crate) fn fenced(&self) -> Option<Option<crate::flags::WriteMode>> {
        match &self.target {
            Target::Postgres { pg, .. } => pg.fenced(),
            Target::Sqlite(_) => None,
        }
    }

    pub(crate) fn commit(self) -> Result<()> {
        match self.target {
            Target::Sqlite(tx) => Ok(tx.commit()?),
            Target::Postgres { pg, .. } => pg.commit(),
        }
    }

    /// End without committing (a failed operation). SQLite rolls back on drop by itself.
    pub(crate) fn abort(self) {
        if let Target::Postgres { pg, .. } = self.target {
            pg.abort();
        }
    }

    fn sqlite(&mut self) -> Result<&mut rusqlite::Transaction<'c>> {
        match &mut self.target {
            Target::Sqlite(tx) => Ok(tx),
            Target::Postgres { .. } => {
                Err(Error::Internal("a SQLite write while PostgreSQL is the primary".into()))
            }
        }
    }

    /// Commit this transaction's changes without outbox records (the capture limit of
    /// SQLite-only mode was reached).
    pub(crate) fn stop_capturing(&mut self) {
        self.capture = false;
    }

    /// Insert a complete, validated row (see `schema::validate_row`) and return it as stored.
    pub fn insert(&mut self, table: &'static Table, row: &Map<String, Value>) -> Result<Map<String, Value>> {
        check_indexed_text(table, row)?;
        if let Target::Postgres { pg, .. } = &mut self.target {
            self.changes += 1;
            return pg.insert(table, row);
        }
        let mut values = Vec::with_capacity(table.columns.len());
        for c in table.columns {
            values.push(encode_for_sqlite(c, row.get(c.name).unwrap_or(&Value::Null))?);
        }
        let placeholders = (1..=values.len()).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ");
        let sql = format!(
            "INSERT INTO {} ({}) VALUES ({placeholders}) RETURNING {}",
            table.name,
            column_list(table),
            column_list(table)
        );
        let stored = {
            let mut stmt = self.sqlite()?.prepare_cached(&sql)?;
            let mut rows = stmt.query(rusqlite::params_from_iter(values.iter()))?;
            let r = rows.next()?.ok_or_else(|| Error::Internal("INSERT RETURNING gave no row".into()))?;
            decode_sqlite_row(table, r)?
        };
        self.record(table, &stored, Op::Upsert)?;
        Ok(stored)
    }

    /// Set some columns of an existing row (validated, without the key); returns the whole row.
    pub fn update(
        &mut self,
        table: &'static Table,
        key: &str,
        changes: &Map<String, Value>,
    ) -> Result<Map<String, Value>> {
        check_indexed_text(table, changes)?;
        if let Target::Postgres { pg, .. } = &mut self.target {
            self.changes += usize::from(!changes.is_empty());
            return pg.update(table, key, changes);
        }
        if changes.is_empty() {
            return self.get_row(table, key)?.ok_or_else(|| Error::not_found(table.name, key));
        }
        let mut sets = Vec::with_capacity(changes.len());
        let mut values: Vec<SqlValue> = Vec::with_capacity(changes.len() + 1);
        for (name, v) in changes {
            let c = table
                .column(name)
                .ok_or_else(|| Error::invalid(format!("{}.{name}", table.name), "no such column"))?;
            values.push(encode_for_sqlite(c, v)?);
            sets.push(format!("{} = ?{}", c.name, values.len()));
        }
        values.push(SqlValue::Text(key.to_string()));
        let sql = format!(
            "UPDATE {} SET {} WHERE {} = ?{} RETURNING {}",
            table.name,
            sets.join(", "),
            table.key,
            values.len(),
            column_list(table)
        );
        let stored = {
            let mut stmt = self.sqlite()?.prepare_cached(&sql)?;
            let mut rows = stmt.query(rusqlite::params_from_iter(values.iter()))?;
            match rows.next()? {
                Some(r) => decode_sqlite_row(table, r)?,
                None => return Err(Error::not_found(table.name, key)),
            }
        };
        // The whole row: an index may sum this change's text with the row's other columns. An
        // error here rolls the whole write back.
        check_indexed_text(table, &stored)?;
        self.record(table, &stored, Op::Upsert)?;
        Ok(stored)
    }

    /// Order this write after every other write on `(scope, key)` in flight, for a write that
    /// derives a new row from the latest existing ones (the next version number of a prompt):
    /// row locks cannot do it, as the row it would conflict with does not exist yet. In SQLite
    /// the write lock already orders every write; while PostgreSQL is the primary an advisory
    /// lock held to the transaction's end does, and the reads after it see what the writes
    /// before it committed (READ COMMITTED takes a new snapshot per statement).
    pub(crate) fn serialize_on(&mut self, scope: &str, key: &str) -> Result<()> {
        match &self.target {
            Target::Postgres { pg, .. } => pg.serialize_on(scope, key),
            Target::Sqlite(_) => Ok(()),
        }
    }

    /// Set `changes` on the row under `key` only if it meets `condition`, as one statement;
    /// `None` when nothing changed (no such row, or it does not meet the condition). Made only
    /// as a one-statement write while PostgreSQL is the primary (`Bridge::write_one_statement`),
    /// whose ordinary way then finds out which and reports it.
    pub(crate) fn update_where(
        &mut self,
        table: &'static Table,
        key: &str,
        changes: &Map<String, Value>,
        condition: &Filter,
    ) -> Result<Option<Map<String, Value>>> {
        check_indexed_text(table, changes)?;
        let Target::Postgres { pg, .. } = &mut self.target else {
            return Err(Error::Internal("a one-statement write on SQLite".into()));
        };
        let stored = pg.update_where(table, key, changes, condition)?;
        self.changes += usize::from(stored.is_some());
        Ok(stored)
    }

    /// Insert `row`, or set `set` on the row with the same `conflict` values (the key or a
    /// unique constraint), as one statement. Made only as a one-statement write while PostgreSQL
    /// is the primary (`Bridge::write_one_statement`); the ordinary way is `repo::upsert_row`.
    pub(crate) fn upsert(
        &mut self,
        table: &'static Table,
        row: &Map<String, Value>,
        conflict: &[&str],
        set: &Map<String, Value>,
    ) -> Result<Map<String, Value>> {
        check_indexed_text(table, row)?;
        let Target::Postgres { pg, .. } = &mut self.target else {
            return Err(Error::Internal("a one-statement write on SQLite".into()));
        };
        self.changes += 1;
        pg.upsert(table, row, conflict, set)
    }

    /// Delete a row; `false` when there was none (nothing is recorded then).
    pub fn delete(&mut self, table: &'static Table, key: &str) -> Result<bool> {
        if let Target::Postgres { pg, .. } = &mut self.target {
            let deleted = pg.delete(table, key)?;
            self.changes += usize::from(deleted);
            return Ok(deleted);
        }
        let sql = format!("DELETE FROM {} WHERE {} = ?1", table.name, table.key);
        let n = self.sqlite()?.prepare_cached(&sql)?.execute([key])?;
        if n == 0 {
            return Ok(false);
        }
        self.record_delete(table, key)?;
        Ok(true)
    }

    fn record(&mut self, table: &'static Table, row: &Map<String, Value>, op: Op) -> Result<()> {
        let key = table.key_of(row)?;
        let image = serde_json::to_string(row).map_err(|e| Error::Internal(e.to_string()))?;
        self.append_outbox(table.name, key, op, Some(&image))
    }

    fn record_delete(&mut self, table: &'static Table, key: &str) -> Result<()> {
        self.append_outbox(table.name, key, Op::Delete, None)
    }

    fn append_outbox(&mut self, table: &'static str, key: &str, op: Op, image: Option<&str>) -> Result<()> {
        self.changes += 1;
        if !self.capture {
            return Ok(());
        }
        let tx = self.sqlite()?;
        tx.prepare_cached(
            "INSERT INTO _dualwrite_outbox (table_name, row_key, op, row_image, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![table, key, op.as_str(), image, now_timestamp()])?;
        Ok(())
    }

    /// Re-enqueue a row's current state (or its absence, as a delete) with a new revision.
    /// Used to repair PostgreSQL and to retry dead letters.
    pub fn requeue(&mut self, table: &'static Table, key: &str) -> Result<()> {
        if matches!(self.target, Target::Postgres { .. }) {
            return Err(Error::Conflict(
                "PostgreSQL is the primary store (write_mode postgres_primary or postgres): SQLite's copy \
                 of a row cannot be sent to it; roll back to dual first"
                    .into(),
            ));
        }
        match self.get_row(table, key)? {
            Some(row) => self.record(table, &row, Op::Upsert),
            None => self.record_delete(table, key),
        }
    }
}

// Retrying a dead letter re-enqueues through a write transaction, so it sits above both.
impl DeadLetters {
    /// Retry: re-enqueue the row's current SQLite state with a new revision, and drop the letter.
    /// (Replaying the old image could move PostgreSQL back in time; the current state cannot.)
    pub fn retry(tx: &mut WriteTx<'_>, seq: i64) -> Result<bool> {
        let found: Option<(String, String)> = tx
            .conn()
            .query_row("SELECT table_name, row_key FROM _dualwrite_dead_letters WHERE seq = ?1", [seq], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        let Some((table_name, key)) = found else { return Ok(false) };
        let table = crate::schema::table(&table_name)
            .ok_or_else(|| Error::Internal(format!("dead letter for unknown table {table_name}")))?;
        tx.requeue(table, &key)?;
        tx.conn().execute("DELETE FROM _dualwrite_dead_letters WHERE seq = ?1", [seq])?;
        Ok(true)
    }
}
