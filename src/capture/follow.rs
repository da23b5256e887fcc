//! Reading the slot and taking its transactions into SQLite.
//!
//! A pass peeks (`pg_logical_slot_peek_binary_changes`: nothing is consumed), takes every
//! transaction after the file's mark into account in one SQLite transaction — applied while
//! PostgreSQL is the primary, counted and named as foreign while SQLite is — moves the mark in
//! that same transaction, and only after SQLite's commit confirms the position to PostgreSQL
//! (`pg_replication_slot_advance`). A crash anywhere between hands the same transactions out
//! again; the mark skips them: at-least-once delivery, applied once.

use super::decode::{Assembler, CapturedTxn, Change};
use super::slot::{self, PUBLICATION, SLOT_SQL};
use crate::error::{Error, Result};
use crate::pg_connect::PgConfig;
use crate::schema::{encode_for_sqlite, now_timestamp, SqlValue, Table};
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::PgLsn;
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Foreign changes kept by name (the newest); the total is counted without limit.
const FOREIGN_KEPT: i64 = 1_000;

/// Whether SQLite applies PostgreSQL's changes or only watches for foreign ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Era {
    SqliteFirst,
    PostgresFirst,
}

impl Era {
    fn as_str(self) -> &'static str {
        match self {
            Era::SqliteFirst => "sqlite_first",
            Era::PostgresFirst => "postgres_first",
        }
    }
}

/// The file's capture bookkeeping (`_dualwrite_capture`).
#[derive(Clone, Debug, serde::Serialize)]
pub struct CaptureState {
    pub applied_lsn: u64,
    pub era: Era,
    pub applied_total: i64,
    pub foreign_total: i64,
    pub last_commit_at: Option<String>,
    pub last_applied_at: Option<String>,
    pub retries_total: i64,
    pub last_error: Option<String>,
    pub cut_at: Option<String>,
    pub dead_letters: i64,
}

impl CaptureState {
    pub fn load(conn: &Connection) -> Result<CaptureState> {
        let mut s = conn.query_row(
            "SELECT applied_lsn, era, applied_total, foreign_total, last_commit_at, last_applied_at, retries_total,
                    last_error, cut_at FROM _dualwrite_capture WHERE id = 1",
            [],
            |r| {
                Ok(CaptureState {
                    applied_lsn: r.get::<_, i64>(0)? as u64,
                    era: if r.get::<_, String>(1)? == "postgres_first" { Era::PostgresFirst } else { Era::SqliteFirst },
                    applied_total: r.get(2)?,
                    foreign_total: r.get(3)?,
                    last_commit_at: r.get(4)?,
                    last_applied_at: r.get(5)?,
                    retries_total: r.get(6)?,
                    last_error: r.get(7)?,
                    cut_at: r.get(8)?,
                    dead_letters: 0,
                })
            },
        )?;
        s.dead_letters =
            conn.query_row("SELECT count(*) FROM _dualwrite_capture_dead_letters", [], |r| r.get(0))?;
        Ok(s)
    }

    /// The mark and the era only: what every batch the follower takes reads first.
    fn mark(conn: &Connection) -> Result<(u64, Era)> {
        Ok(conn.prepare_cached("SELECT applied_lsn, era FROM _dualwrite_capture WHERE id = 1")?.query_row(
            [],
            |r| {
                let era = if r.get::<_, String>(1)? == "postgres_first" {
                    Era::PostgresFirst
                } else {
                    Era::SqliteFirst
                };
                Ok((r.get::<_, i64>(0)? as u64, era))
            },
        )?)
    }

    /// Set the era (a phase switch, at a drained position).
    pub fn set_era(conn: &Connection, era: Era) -> Result<()> {
        conn.execute("UPDATE _dualwrite_capture SET era = ?1 WHERE id = 1", [era.as_str()])?;
        Ok(())
    }

    /// A forced rollback could not drain: remember from where SQLite misses PostgreSQL's changes.
    pub fn cut(conn: &Connection) -> Result<()> {
        conn.execute(
            "UPDATE _dualwrite_capture SET era = 'sqlite_first', cut_at_lsn = applied_lsn, cut_at = ?1 WHERE id = 1",
            [now_timestamp()],
        )?;
        Ok(())
    }

    /// A failed pass, for `status` (shared by every process).
    pub fn record_failure(conn: &Connection, error: &str) -> Result<()> {
        conn.execute(
            "UPDATE _dualwrite_capture SET retries_total = retries_total + 1, last_error = ?1 WHERE id = 1",
            [error],
        )?;
        Ok(())
    }
}

/// A foreign change as `status` and `verify` name it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ForeignChange {
    pub table: String,
    pub key: String,
    pub op: String,
    pub committed_at: String,
    pub lsn: String,
}

/// A captured change SQLite refused.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CaptureDeadLetter {
    pub seq: i64,
    pub lsn: String,
    pub table: String,
    pub key: String,
    pub op: String,
    pub error: String,
    pub failed_at: String,
}

/// The captured changes SQLite refused, oldest first.
pub fn dead_letters(conn: &Connection) -> Result<Vec<CaptureDeadLetter>> {
    let mut stmt = conn.prepare(
        "SELECT seq, lsn, table_name, row_key, op, error, failed_at FROM _dualwrite_capture_dead_letters ORDER BY seq",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(CaptureDeadLetter {
            seq: r.get(0)?,
            lsn: super::pgoutput::lsn_text(r.get::<_, i64>(1)? as u64),
            table: r.get(2)?,
            key: r.get(3)?,
            op: r.get(4)?,
            error: r.get(5)?,
            failed_at: r.get(6)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The newest foreign changes, newest first.
pub fn foreign_changes(conn: &Connection, limit: i64) -> Result<Vec<ForeignChange>> {
    let mut stmt = conn.prepare(
        "SELECT table_name, row_key, op, committed_at, lsn FROM _dualwrite_foreign_changes ORDER BY seq DESC LIMIT ?1",
    )?;
    let rows = stmt.query_map([limit], |r| {
        Ok(ForeignChange {
            table: r.get(0)?,
            key: r.get(1)?,
            op: r.get(2)?,
            committed_at: r.get(3)?,
            lsn: super::pgoutput::lsn_text(r.get::<_, i64>(4)? as u64),
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Transactions read from the slot and the position to confirm once they are taken into account.
pub struct Peeked {
    pub txns: Vec<CapturedTxn>,
    /// Everything before it was handed out (the whole range when `complete`).
    pub target: u64,
    /// The call returned everything committed up to the flush position it started from.
    pub complete: bool,
}

/// Read what the slot holds up to now, at most about `max_messages` messages (a call always ends
/// at a transaction's commit), calling `on_txn` for each transaction as it completes. The
/// connection must be in the decoding session's settings (`slot::DECODING_SESSION`).
pub fn peek(
    client: &mut postgres::Client,
    max_messages: Option<i32>,
    mut on_txn: impl FnMut(CapturedTxn) -> Result<()>,
) -> Result<(u64, bool)> {
    let upto = slot::flush_lsn(client)?;
    let upto_lsn = PgLsn::from(upto);
    let sql = format!(
        "SELECT data FROM pg_logical_slot_peek_binary_changes({SLOT_SQL}, $1, $2, 'proto_version', '1', \
         'publication_names', $3)"
    );
    let mut rows = client
        .query_raw(&sql, [&upto_lsn as &(dyn postgres::types::ToSql + Sync), &max_messages, &PUBLICATION])?;
    let mut asm = Assembler::default();
    let mut messages: i64 = 0;
    let mut last_end = 0;
    while let Some(row) = rows.next()? {
        let data: &[u8] = row.get(0);
        asm.push(data)?;
        messages += 1;
        for txn in asm.done.drain(..) {
            last_end = txn.end_lsn;
            on_txn(txn)?;
        }
    }
    asm.finish()?;
    let complete = max_messages.is_none_or(|m| messages < i64::from(m));
    // Complete: every commit before `upto` was handed out, so confirming `upto` skips nothing.
    Ok(if complete { (upto, true) } else { (last_end, false) })
}

/// What taking a batch into account did.
#[derive(Default, Debug, Clone, Copy)]
pub struct Taken {
    pub transactions: usize,
    pub applied: usize,
    pub foreign: usize,
    pub dead_lettered: usize,
}

impl std::ops::AddAssign for Taken {
    fn add_assign(&mut self, o: Taken) {
        self.transactions += o.transactions;
        self.applied += o.applied;
        self.foreign += o.foreign;
        self.dead_lettered += o.dead_lettered;
    }
}

/// Reads a row's current state from PostgreSQL when a change cannot be converted: a connection
/// of its own (the decoding connection is busy streaming), opened on first need.
pub struct Refetcher<'a> {
    pg: &'a PgConfig,
    client: Option<postgres::Client>,
}

impl<'a> Refetcher<'a> {
    pub fn new(pg: &'a PgConfig) -> Self {
        Refetcher { pg, client: None }
    }

    fn client(&mut self) -> Result<&mut postgres::Client> {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            self.client = Some(self.pg.connect()?);
        }
        self.client.as_mut().ok_or_else(|| Error::Internal("no refetch connection".into()))
    }
}

/// How long a phase switch waits for the slot while the replicator is reading it.
const SLOT_BUSY_WAIT: Duration = Duration::from_secs(30);
/// Changes held in memory before they are taken into SQLite during a drain.
const DRAIN_CHUNK: usize = 10_000;

/// Take everything the slot holds up to now into SQLite, in the caller's transaction `conn` (a
/// phase switch holding the file's write lock). The slot is not confirmed here: the replicator's
/// next pass does it after this transaction committed (until then the mark skips what is taken).
pub fn drain(conn: &Connection, pg: &PgConfig) -> Result<Taken> {
    let mut client = pg.connect()?;
    slot::decoding_session(&mut client)?;
    let mut refetch = Refetcher::new(pg);
    let deadline = Instant::now() + SLOT_BUSY_WAIT;
    loop {
        let mut total = Taken::default();
        let mut buf: Vec<CapturedTxn> = Vec::new();
        let mut held = 0;
        let result = peek(&mut client, None, |txn| {
            held += txn.changes.len();
            buf.push(txn);
            if held >= DRAIN_CHUNK {
                let upto = buf.last().map_or(0, |t| t.end_lsn);
                total += take(conn, &mut refetch, &buf, upto)?;
                buf.clear();
                held = 0;
            }
            Ok(())
        });
        match result {
            Ok((target, _)) => {
                total += take(conn, &mut refetch, &buf, target)?;
                return Ok(total);
            }
            // The replicator is reading the slot right now: a pass of the SQL functions lets go
            // by itself; its replication stream (PostgreSQL first) is ended, since it would
            // wait for the file's write lock this switch holds.
            Err(e) if slot_in_use(&e) && Instant::now() < deadline => {
                if !slot::release(&mut client)? {
                    std::thread::sleep(Duration::from_millis(20));
                }
                slot::wait_until_inactive(&mut client, Duration::from_secs(2))?;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The slot is being read by another session (SQLSTATE 55006).
pub fn slot_in_use(e: &Error) -> bool {
    matches!(e, Error::Postgres(p) if p.code() == Some(&postgres::error::SqlState::OBJECT_IN_USE))
}

/// Take `txns` into account in the caller's SQLite transaction (`conn`): skip those at or before
/// the mark and the bridge's own, apply or count the rest by the era, and move the mark to
/// `target`. `client` reads a row's current state when a change cannot be converted.
pub fn take(
    conn: &Connection,
    refetch: &mut Refetcher<'_>,
    txns: &[CapturedTxn],
    target: u64,
) -> Result<Taken> {
    let (applied_lsn, era) = CaptureState::mark(conn)?;
    let mut taken = Taken::default();
    let mut newest_commit = None;
    for txn in txns.iter().filter(|t| t.end_lsn > applied_lsn) {
        taken.transactions += 1;
        // The bridge's own transactions report their origin's timestamp as the commit time
        // (never set by the bridge: 2000-01-01), so only the others say how recent SQLite is.
        if txn.ours || txn.changes.is_empty() {
            continue;
        }
        newest_commit = Some(txn.commit_time.as_str());
        match era {
            Era::SqliteFirst => {
                for c in &txn.changes {
                    record_foreign(conn, txn, c)?;
                }
                taken.foreign += txn.changes.len();
            }
            Era::PostgresFirst => match apply_txn(conn, refetch, txn) {
                Ok(n) => taken.applied += n,
                Err(e) if is_refusal(&e) => {
                    tracing::error!(lsn = %super::pgoutput::lsn_text(txn.end_lsn), error = %e,
                        "SQLite refuses a transaction PostgreSQL committed; its changes go to the capture's dead letters");
                    for c in &txn.changes {
                        dead_letter(conn, txn, c, &e.to_string())?;
                    }
                    taken.dead_lettered += txn.changes.len();
                }
                Err(e) => return Err(e),
            },
        }
    }
    let mark = target.max(applied_lsn);
    conn.prepare_cached(
        "UPDATE _dualwrite_capture SET applied_lsn = ?1, applied_total = applied_total + ?2,
             foreign_total = foreign_total + ?3, last_commit_at = coalesce(?4, last_commit_at),
             last_applied_at = CASE WHEN ?2 > 0 THEN ?5 ELSE last_applied_at END, last_error = NULL WHERE id = 1",
    )?
    .execute(params![mark as i64, taken.applied as i64, taken.foreign as i64, newest_commit, now_timestamp()])?;
    if taken.foreign > 0 {
        conn.execute(
            "DELETE FROM _dualwrite_foreign_changes WHERE seq <= (SELECT max(seq) FROM _dualwrite_foreign_changes) - ?1",
            [FOREIGN_KEPT],
        )?;
    }
    Ok(taken)
}

/// SQLite refused the data (a constraint), as opposed to SQLite being unusable right now.
fn is_refusal(e: &Error) -> bool {
    match e {
        Error::Sqlite(rusqlite::Error::SqliteFailure(f, _)) => {
            f.code == rusqlite::ErrorCode::ConstraintViolation
        }
        Error::InvalidArgument { .. } | Error::Conflict(_) => true,
        _ => false,
    }
}

fn record_foreign(conn: &Connection, txn: &CapturedTxn, c: &Change) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO _dualwrite_foreign_changes (lsn, table_name, row_key, op, committed_at, seen_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        txn.end_lsn as i64,
        c.table_name(),
        c.key(),
        c.op(),
        txn.commit_time,
        now_timestamp()
    ])?;
    tracing::warn!(table = c.table_name(), key = c.key(), op = c.op(), committed_at = %txn.commit_time,
        "a change in PostgreSQL that the bridge did not make (SQLite is the primary: the stores now differ)");
    Ok(())
}

fn dead_letter(conn: &Connection, txn: &CapturedTxn, c: &Change, error: &str) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO _dualwrite_capture_dead_letters (lsn, table_name, row_key, op, error, failed_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![txn.end_lsn as i64, c.table_name(), c.key(), c.op(), error, now_timestamp()])?;
    Ok(())
}

/// Apply one PostgreSQL transaction all or nothing: under a savepoint, unless it is one change
/// SQLite takes in one statement (a failed statement undoes itself). No outbox records:
/// PostgreSQL has these changes already.
fn apply_txn(conn: &Connection, refetch: &mut Refetcher<'_>, txn: &CapturedTxn) -> Result<usize> {
    if let [only] = txn.changes.as_slice() {
        if only.is_one_statement() {
            apply_change(conn, refetch, only)?;
            return Ok(1);
        }
    }
    conn.prepare_cached("SAVEPOINT capture_txn")?.execute([])?;
    let result = (|| {
        for c in &txn.changes {
            apply_change(conn, refetch, c)?;
        }
        Ok(txn.changes.len())
    })();
    if result.is_err() {
        conn.prepare_cached("ROLLBACK TO capture_txn")?.execute([])?;
    }
    conn.prepare_cached("RELEASE capture_txn")?.execute([])?;
    result
}

fn apply_change(conn: &Connection, refetch: &mut Refetcher<'_>, c: &Change) -> Result<()> {
    match c {
        Change::Upsert { table, key, values, partial, old_key, .. } => {
            if let Some(old) = old_key {
                delete_row(conn, table, old)?;
            }
            if *partial {
                if !update_columns(conn, table, key, values)? {
                    refetch_row(conn, refetch, table, key)?;
                }
            } else {
                upsert_values(conn, table, values.iter().map(|v| v.as_ref().unwrap_or(&SqlValue::Null)))?;
            }
        }
        Change::Delete { table, key } => delete_row(conn, table, key)?,
        Change::Truncate { tables } => {
            for t in tables {
                conn.execute(&format!("DELETE FROM {}", t.name), [])?;
            }
        }
        Change::Refetch { table, key, why } => {
            tracing::debug!(table = table.name, key, why, "taking the row's current state from PostgreSQL");
            refetch_row(conn, refetch, table, key)?;
        }
    }
    Ok(())
}

/// The follower's statements per table, made once: formatting them for every change cost more
/// than SQLite's statement cache saves.
struct TableSql {
    upsert: String,
    delete: String,
}

fn table_sql(table: &Table) -> &'static TableSql {
    static SQL: OnceLock<HashMap<&'static str, TableSql>> = OnceLock::new();
    let all = SQL.get_or_init(|| {
        crate::schema::TABLES
            .iter()
            .map(|t| {
                let cols = t.column_names().collect::<Vec<_>>().join(", ");
                let placeholders = (1..=t.columns.len()).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ");
                let sets = t.set_all_from_excluded();
                let upsert = format!(
                    "INSERT INTO {n} ({cols}) VALUES ({placeholders}) ON CONFLICT ({key}) DO UPDATE SET {sets}",
                    n = t.name,
                    key = t.key
                );
                let delete = format!("DELETE FROM {} WHERE {} = ?1", t.name, t.key);
                (t.name, TableSql { upsert, delete })
            })
            .collect()
    });
    &all[table.name]
}

fn delete_row(conn: &Connection, table: &Table, key: &str) -> Result<()> {
    conn.prepare_cached(&table_sql(table).delete)?.execute([key])?;
    Ok(())
}

/// Insert the whole row (a wire row) or replace every column of the row with its key.
pub(crate) fn upsert_row(conn: &Connection, table: &Table, row: &Map<String, Value>) -> Result<()> {
    let mut values = Vec::with_capacity(table.columns.len());
    for c in table.columns {
        values.push(encode_for_sqlite(c, row.get(c.name).unwrap_or(&Value::Null))?);
    }
    upsert_values(conn, table, values.iter())
}

/// [`upsert_row`] with the values as SQLite stores them, one per column in the registry's order.
fn upsert_values<'v>(
    conn: &Connection,
    table: &Table,
    values: impl Iterator<Item = &'v SqlValue>,
) -> Result<()> {
    conn.prepare_cached(&table_sql(table).upsert)?.execute(rusqlite::params_from_iter(values))?;
    Ok(())
}

/// Set the columns the change carried (`Some`); `false` when SQLite has no such row.
fn update_columns(conn: &Connection, table: &Table, key: &str, values: &[Option<SqlValue>]) -> Result<bool> {
    let mut sets = Vec::new();
    let mut bound: Vec<&SqlValue> = Vec::new();
    for (c, v) in table.columns.iter().zip(values) {
        if let (true, Some(v)) = (c.name != table.key, v) {
            bound.push(v);
            sets.push(format!("{} = ?{}", c.name, bound.len()));
        }
    }
    if sets.is_empty() {
        let sql = format!("SELECT 1 FROM {} WHERE {} = ?1", table.name, table.key);
        return Ok(conn.query_row(&sql, [key], |_| Ok(())).optional()?.is_some());
    }
    let key = SqlValue::Text(key.to_string());
    bound.push(&key);
    let sql = format!("UPDATE {} SET {} WHERE {} = ?{}", table.name, sets.join(", "), table.key, bound.len());
    Ok(conn.prepare_cached(&sql)?.execute(rusqlite::params_from_iter(bound))? == 1)
}

/// Take the row's current state from PostgreSQL (or its absence). Later changes of the row in the
/// same stream bring it forward again, so SQLite converges on the same state.
fn refetch_row(conn: &Connection, refetch: &mut Refetcher<'_>, table: &Table, key: &str) -> Result<()> {
    let sql = format!(
        "{} WHERE {} = {}",
        crate::store::postgres::row_to_wire_sql(table),
        table.key,
        crate::store::postgres::typed_placeholder(table.key_column(), 1)
    );
    match refetch.client()?.query_opt(&sql, &[&key])? {
        Some(r) => {
            let row = crate::store::postgres::wire_row(table, &r)?;
            upsert_row(conn, table, &row)
        }
        None => delete_row(conn, table, key),
    }
}
