//! The SQLite side: connections with the bridge's pragmas, registry-derived SQL for rows, and the
//! outbox write that shares each change's transaction.

use crate::error::{Error, Result};
use crate::schema::{
    check_indexed_text, decode_sqlite_row, encode_for_sqlite, now_timestamp, Filter, SqlValue, Table,
};
use crate::store::pg_primary::PgWrite;
use rusqlite::{params, Connection, OptionalExtension, ToSql};
use serde_json::{Map, Value};
use std::path::Path;
use std::time::Duration;

/// How long a writer waits for another process's write lock before failing with `Busy`.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Open a connection with the pragmas every bridge connection uses: WAL (readers never block the
/// writer), synchronous=FULL (a returned write survives power loss, not only a crash), foreign
/// keys on, and a busy timeout so concurrent processes queue instead of failing.
pub fn open(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.set_prepared_statement_cache_capacity(128);
    Ok(conn)
}

/// `a, b, c`: the table's columns in registry order (the order [`decode_sqlite_row`] reads).
fn column_list(table: &Table) -> String {
    table.column_names().collect::<Vec<_>>().join(", ")
}

fn select_sql(table: &Table) -> String {
    format!("SELECT {} FROM {}", column_list(table), table.name)
}

/// One change as the outbox records it.
#[derive(Clone, Debug, PartialEq)]
pub struct OutboxRecord {
    pub seq: i64,
    pub table_name: String,
    pub row_key: String,
    pub op: Op,
    /// The wire JSON of the row after the change; `None` for a delete.
    pub row_image: Option<String>,
    pub created_at: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Upsert,
    Delete,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Upsert => "upsert",
            Op::Delete => "delete",
        }
    }
    fn parse(s: &str) -> Result<Op> {
        match s {
            "upsert" => Ok(Op::Upsert),
            "delete" => Ok(Op::Delete),
            other => Err(Error::Internal(format!("outbox holds unknown op {other:?}"))),
        }
    }
}

/// Read access to rows, for a plain connection or a transaction.
pub trait Rows {
    fn conn(&self) -> &Connection;

    fn get_row(&self, table: &Table, key: &str) -> Result<Option<Map<String, Value>>> {
        get_row(self.conn(), table, key)
    }

    /// Rows matching `filter`.
    fn query_rows(&self, table: &Table, filter: &Filter) -> Result<Vec<Map<String, Value>>> {
        filtered_rows_within(self.conn(), table, filter, usize::MAX)
    }
}

fn get_row(conn: &Connection, table: &Table, key: &str) -> Result<Option<Map<String, Value>>> {
    let sql = format!("{} WHERE {} = ?1", select_sql(table), table.key);
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query([key])?;
    match rows.next()? {
        Some(r) => Ok(Some(decode_sqlite_row(table, r)?)),
        None => Ok(None),
    }
}

/// `filter` as SQLite's SQL after `WHERE` for `table`, with the values it binds (as SQLite
/// stores them for their columns).
pub(crate) fn filter_sql(table: &Table, filter: &Filter) -> Result<(String, Vec<SqlValue>)> {
    let mut args = Vec::new();
    let sql = filter.render(table, |column, value| {
        args.push(encode_for_sqlite(column, value)?);
        Ok(format!("?{}", args.len()))
    })?;
    Ok((sql, args))
}

/// Rows of `table` matching `filter`, read like [`query_rows_within`].
pub(crate) fn filtered_rows_within(
    conn: &Connection,
    table: &Table,
    filter: &Filter,
    max_bytes: usize,
) -> Result<Vec<Map<String, Value>>> {
    let (sql, args) = filter_sql(table, filter)?;
    let refs: Vec<&dyn ToSql> = args.iter().map(|a| a as &dyn ToSql).collect();
    query_rows_within(conn, table, &sql, &refs, max_bytes)
}

/// Rows matching `where_sql`, SQLite SQL this crate rendered (a [`Filter`]'s, see
/// [`filter_sql`], or `bridge::ListQuery`'s; never caller text) with its values in `args`.
/// For a list a caller asked for reading stops, with `bridge::list_too_large`, once the rows'
/// values take more than `max_bytes` (the first row is always read).
pub(crate) fn query_rows_within(
    conn: &Connection,
    table: &Table,
    where_sql: &str,
    args: &[&dyn ToSql],
    max_bytes: usize,
) -> Result<Vec<Map<String, Value>>> {
    use rusqlite::types::ValueRef;
    let sql = format!("{} WHERE {}", select_sql(table), where_sql);
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(args)?;
    let mut out = Vec::new();
    let mut bytes = 0usize;
    while let Some(r) = rows.next()? {
        for i in 0..table.columns.len() {
            bytes += match r.get_ref(i)? {
                ValueRef::Text(b) | ValueRef::Blob(b) => b.len(),
                _ => 8,
            };
        }
        if bytes > max_bytes && !out.is_empty() {
            return Err(crate::bridge::list_too_large(out.len()));
        }
        out.push(decode_sqlite_row(table, r)?);
    }
    Ok(out)
}

impl Rows for Connection {
    fn conn(&self) -> &Connection {
        self
    }
}

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

    /// A single-insert PostgreSQL write the write fence refused: the fence's mode.
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

/// The outbox as the replicator and `status` see it.
pub struct Outbox;

/// A batch stops growing once its row images reach this size (it always holds at least one
/// record): the replicator sends a table's images as one jsonb parameter, which PostgreSQL caps
/// at 256 MB, and holds the whole batch in memory.
pub const MAX_BATCH_BYTES: usize = 64 << 20;

impl Outbox {
    /// Up to `limit` pending records in sequence order; it stops adding records once their row
    /// images reach [`MAX_BATCH_BYTES`] (so a batch holds at most that plus one record).
    pub fn pending(conn: &Connection, limit: usize) -> Result<Vec<OutboxRecord>> {
        let mut stmt = conn.prepare_cached(
            "SELECT seq, table_name, row_key, op, row_image, created_at FROM _dualwrite_outbox ORDER BY seq LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get::<_, String>(3)?, r.get(4)?, r.get(5)?))
        })?;
        let mut out = Vec::new();
        let mut bytes = 0;
        for row in rows {
            let (seq, table_name, row_key, op, row_image, created_at): (_, _, _, _, Option<String>, _) = row?;
            bytes += row_image.as_ref().map_or(0, String::len);
            out.push(OutboxRecord { seq, table_name, row_key, op: Op::parse(&op)?, row_image, created_at });
            if bytes >= MAX_BATCH_BYTES {
                break;
            }
        }
        Ok(out)
    }

    /// Remove applied records `first..=last` (a contiguous prefix: sequence numbers are assigned
    /// under SQLite's single write lock, so no lower number can commit later) and count them in
    /// the shared replication state, in one transaction.
    pub fn mark_applied(conn: &mut Connection, first: i64, last: i64, written: usize) -> Result<usize> {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let n = tx
            .prepare_cached("DELETE FROM _dualwrite_outbox WHERE seq BETWEEN ?1 AND ?2")?
            .execute([first, last])?;
        tx.prepare_cached(
            "UPDATE _dualwrite_replication_state SET applied_total = applied_total + ?1, batches_total = batches_total + 1,
             last_error = NULL, last_applied_at = ?2 WHERE id = 1",
        )?
        .execute(params![written as i64, now_timestamp()])?;
        tx.commit()?;
        Ok(n)
    }

    /// Record a failed replication attempt (the message never carries row data or secrets).
    pub fn record_failure(conn: &Connection, error: &str) -> Result<()> {
        conn.prepare_cached(
            "UPDATE _dualwrite_replication_state SET retries_total = retries_total + 1, last_error = ?1, last_error_at = ?2
             WHERE id = 1",
        )?
        .execute(params![error, now_timestamp()])?;
        Ok(())
    }

    /// The shared counters: (applied, retries, last error, last applied at).
    pub fn replication_state(conn: &Connection) -> Result<ReplicationState> {
        Ok(conn.query_row(
            "SELECT applied_total, batches_total, retries_total, last_error, last_applied_at
             FROM _dualwrite_replication_state WHERE id = 1",
            [],
            |r| {
                Ok(ReplicationState {
                    applied_total: r.get(0)?,
                    batches_total: r.get(1)?,
                    retries_total: r.get(2)?,
                    last_error: r.get(3)?,
                    last_applied_at: r.get(4)?,
                })
            },
        )?)
    }

    /// Move one record to the dead letters with the error that stopped it.
    pub fn dead_letter(conn: &mut Connection, record: &OutboxRecord, error: &str) -> Result<()> {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT OR REPLACE INTO _dualwrite_dead_letters (seq, table_name, row_key, op, row_image, created_at, failed_at, error)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                record.seq,
                record.table_name,
                record.row_key,
                record.op.as_str(),
                record.row_image,
                record.created_at,
                now_timestamp(),
                error
            ],
        )?;
        tx.execute("DELETE FROM _dualwrite_outbox WHERE seq = ?1", [record.seq])?;
        tx.commit()?;
        Ok(())
    }

    /// (depth, oldest pending created_at, newest seq ever assigned).
    pub fn depth(conn: &Connection) -> Result<(i64, Option<String>)> {
        Ok(conn.query_row("SELECT count(*), min(created_at) FROM _dualwrite_outbox", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?)
    }

    /// How many records the outbox spans, from its oldest to the newest number handed out: an
    /// upper bound of its depth at the cost of two index lookups (`depth` counts every row).
    pub fn span(conn: &Connection) -> Result<i64> {
        let oldest: Option<i64> =
            conn.prepare_cached("SELECT min(seq) FROM _dualwrite_outbox")?.query_row([], |r| r.get(0))?;
        Ok(oldest.map_or(0, |o| Self::last_seq(conn).map_or(0, |l| l - o + 1)))
    }

    /// The highest sequence number committed so far (0 when none).
    pub fn last_seq(conn: &Connection) -> Result<i64> {
        let v: Option<i64> = conn
            .query_row("SELECT seq FROM sqlite_sequence WHERE name = '_dualwrite_outbox'", [], |r| r.get(0))
            .optional()?;
        Ok(v.unwrap_or(0))
    }

    /// Whether a change of `table` — of the row `key`, or of any row when `None` — has not reached
    /// PostgreSQL: pending in the outbox (whichever process wrote it), or dead-lettered. Reads use
    /// it for read-your-writes across processes (`src/reads.rs`); each side is one probe of an
    /// index on `(table_name, row_key)`, so it costs the same with an empty outbox or a backlog.
    pub fn holds_unapplied(conn: &Connection, table: &str, key: Option<&str>) -> Result<bool> {
        Ok(match key {
            Some(k) => conn
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM _dualwrite_outbox WHERE table_name = ?1 AND row_key = ?2)
                     OR EXISTS (SELECT 1 FROM _dualwrite_dead_letters WHERE table_name = ?1 AND row_key = ?2)",
                )?
                .query_row([table, k], |r| r.get(0))?,
            None => conn
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM _dualwrite_outbox WHERE table_name = ?1)
                     OR EXISTS (SELECT 1 FROM _dualwrite_dead_letters WHERE table_name = ?1)",
                )?
                .query_row([table], |r| r.get(0))?,
        })
    }

    /// Whether any record with `seq <= upto` is still pending.
    pub fn any_pending_upto(conn: &Connection, upto: i64) -> Result<bool> {
        Ok(conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM _dualwrite_outbox WHERE seq <= ?1)",
            [upto],
            |r| r.get(0),
        )?)
    }
}

/// Replication counters shared by all processes on the file.
#[derive(Clone, Debug, Default)]
pub struct ReplicationState {
    pub applied_total: i64,
    pub batches_total: i64,
    pub retries_total: i64,
    pub last_error: Option<String>,
    pub last_applied_at: Option<String>,
}

/// A dead letter as listed by the API and the CLI (the row image is left out: it may be large).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct DeadLetter {
    pub seq: i64,
    pub table_name: String,
    pub row_key: String,
    pub op: String,
    pub created_at: String,
    pub failed_at: String,
    pub error: String,
}

pub struct DeadLetters;

impl DeadLetters {
    pub fn list(conn: &Connection) -> Result<Vec<DeadLetter>> {
        let mut stmt = conn.prepare_cached(
            "SELECT seq, table_name, row_key, op, created_at, failed_at, error FROM _dualwrite_dead_letters ORDER BY seq",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(DeadLetter {
                seq: r.get(0)?,
                table_name: r.get(1)?,
                row_key: r.get(2)?,
                op: r.get(3)?,
                created_at: r.get(4)?,
                failed_at: r.get(5)?,
                error: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    pub fn count(conn: &Connection) -> Result<i64> {
        Ok(conn.query_row("SELECT count(*) FROM _dualwrite_dead_letters", [], |r| r.get(0))?)
    }

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

    pub fn drop(conn: &Connection, seq: i64) -> Result<bool> {
        Ok(conn.execute("DELETE FROM _dualwrite_dead_letters WHERE seq = ?1", [seq])? > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Filter;
    use serde_json::json;

    /// Each value is bound as SQLite stores it for its column (an int as an INTEGER).
    #[test]
    fn filters_render_with_numbered_placeholders_and_stored_values() {
        let prompts = crate::schema::table("prompts").unwrap();
        let f = Filter::new().eq("key", "k").greater("version", json!(2)).eq("updated_by", Value::Null);
        assert_eq!(
            filter_sql(prompts, &f).unwrap(),
            (
                "key = ?1 AND version > ?2 AND updated_by IS NULL".to_string(),
                vec![SqlValue::Text("k".into()), SqlValue::Integer(2)]
            )
        );
    }
}
