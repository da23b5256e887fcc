//! The outbox's vocabulary and bookkeeping: a change as the outbox records it ([`OutboxRecord`],
//! [`Op`]), the pending records the replicator reads and removes ([`Outbox`]), the shared
//! replication counters and the dead letters. All of it lives in the SQLite file; the write that
//! appends a record shares the row's transaction (`store::write_tx`).

use crate::error::{Error, Result};
use crate::schema::now_timestamp;
use rusqlite::{params, Connection, OptionalExtension};

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
        Self::pending_after(conn, i64::MIN, limit)
    }

    /// [`Outbox::pending`] from the first record numbered above `after`: the batch that follows
    /// one still being applied (and so still in the outbox). Nothing numbered at or below `after`
    /// can commit later (see [`Outbox::mark_applied`]), so no record is passed over.
    pub fn pending_after(conn: &Connection, after: i64, limit: usize) -> Result<Vec<OutboxRecord>> {
        let mut stmt = conn.prepare_cached(
            "SELECT seq, table_name, row_key, op, row_image, created_at FROM _dualwrite_outbox WHERE seq > ?1
             ORDER BY seq LIMIT ?2",
        )?;
        let rows = stmt.query_map([after, limit as i64], |r| {
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

    /// The lowest sequence number still pending, or the next one to be handed out when none is:
    /// every change numbered below it has reached PostgreSQL (or the dead letters).
    pub fn lowest_pending(sqlite: &Connection) -> Result<i64> {
        let low: Option<i64> =
            sqlite.query_row("SELECT min(seq) FROM _dualwrite_outbox", [], |r| r.get(0))?;
        Ok(match low {
            Some(l) => l,
            None => Outbox::last_seq(sqlite)? + 1,
        })
    }

    /// Remove the records up to `last` that the caller applied itself (a phase switch drains the
    /// outbox before PostgreSQL becomes the primary), without counting them as the replicator's.
    pub fn remove_applied_upto(conn: &Connection, last: i64) -> Result<usize> {
        Ok(conn.execute("DELETE FROM _dualwrite_outbox WHERE seq <= ?1", [last])?)
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

    pub fn drop(conn: &Connection, seq: i64) -> Result<bool> {
        Ok(conn.execute("DELETE FROM _dualwrite_dead_letters WHERE seq = ?1", [seq])? > 0)
    }
}
