//! The backfill: copy the rows already in SQLite into PostgreSQL while the monolith keeps writing.
//!
//! Each table (parents first, `schema::TABLES` order) is copied in chunks by key. A chunk is read
//! inside one SQLite read transaction: its first read takes the outbox high-water mark `S` (the
//! highest sequence number ever assigned), which fixes the WAL snapshot, then the chunk's rows are
//! read from that same snapshot. Every row of the chunk is applied with revision `S` through the
//! same revision claim as the replicator (`store::postgres::claim_sql`), so:
//!
//! - a live change committed after the snapshot has a sequence number above `S` and wins, whether
//!   it reaches PostgreSQL before or after the backfill's copy;
//! - a delete committed after the snapshot leaves a tombstone above `S`: the row stays deleted;
//! - an older revision already applied is overwritten by the snapshot's copy, which includes it.
//!
//! Rows whose key no change at or below `S` ever touched (not in the outbox at the snapshot, not
//! in the ledger) need no claim of their own: they take the direct path, a binary COPY straight
//! into the target table (`copy_direct`; why that keeps the guard's promises is written there and
//! in docs/ARCHITECTURE.md). The other rows travel as binary COPY into a per-session temporary
//! staging table, then one statement claims the revisions (the claim as a CTE) and upserts only
//! the winners. The chunk's
//! rows and the table's checkpoint (`dualwrite.backfill_checkpoints`) commit in one transaction,
//! so an interrupted run resumes after the last committed chunk and never copies it again.
//! Memory is bounded by the chunk size.
//!
//! Every row read is converted with the legacy conversion rules (`legacy::convert_sqlite_row`,
//! with the configuration's `[conversions]`; a row whose values the rules would keep unchanged is
//! encoded straight from SQLite's bytes instead, `plain.rs`), so a value SQLite's CHECKs let through but the
//! target type cannot hold never stops a table: such a row becomes a reject
//! (`dualwrite.backfill_rejects` and the reject file, `legacy::RejectStore`), committed with the
//! chunk, and the checkpoint still moves past it. A chunk PostgreSQL refuses for its data (SQLSTATE
//! classes 22 and 23) is applied again row by row under savepoints, and only the refused rows
//! become rejects. `retry_rejects` copies exactly the rows still listed as rejects again. See
//! docs/ARCHITECTURE.md, "Backfill and verify".

use crate::config::Config;
use crate::error::{Error, Result};
use crate::legacy::{self, ColumnRules, Overrides, RejectStore, RejectedRow};
use crate::pgcopy::encode_copy_row;
use crate::schema::{self, ColType, Table};
use crate::store::postgres::claim_sql;
use crate::store::sqlite::{self, Outbox};
use plain::PlainRows;
use rusqlite::types::ValueRef;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod plain;
mod ranges;

/// How rows travel to PostgreSQL. Both end in the same revision-guarded upsert; `Copy` is the
/// default (see docs/BENCHMARKS.md for the measurement that chose it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ApplyMethod {
    /// Binary COPY into a temporary staging table, then claim + upsert from it.
    #[default]
    Copy,
    /// The rows as one JSON array parameter read with `json_populate_recordset` (the
    /// replicator's way), then claim + upsert.
    Json,
}

/// What to copy and how fast.
#[derive(Clone, Debug)]
pub struct BackfillOptions {
    /// Tables to copy (registry names); `None` = all 13. Always copied in foreign-key order.
    pub tables: Option<Vec<String>>,
    /// Rows per chunk: one SQLite snapshot, one PostgreSQL transaction, one checkpoint.
    pub chunk_size: usize,
    /// Cap on rows copied per second (over the whole run); `None` = as fast as possible.
    pub max_rows_per_sec: Option<u64>,
    /// Pause while the live outbox holds more than this many pending changes, so the backfill
    /// never starves the replicator (and through it the monolith's replication lag).
    pub max_outbox_depth: Option<i64>,
    /// Copy tables again even if their checkpoint says finished (and start them from the top).
    pub restart: bool,
    /// Stop (as if interrupted) after this many chunks in this run. For tests and trial runs.
    pub stop_after_chunks: Option<u64>,
    /// Set to stop after the chunks in progress (e.g. from a signal handler).
    pub cancel: Option<Arc<AtomicBool>>,
    pub method: ApplyMethod,
    /// How long to wait for the replicator to apply the outbox up to a chunk's snapshot when
    /// PostgreSQL refuses the chunk for a foreign key or unique constraint (a parent inserted
    /// after its table was copied is still in the outbox).
    pub catch_up_timeout: Duration,
    /// PostgreSQL connections applying chunks at once (chunks still commit in key order).
    pub workers: usize,
    /// Threads reading and encoding chunks at once, each on its own SQLite connection and
    /// snapshot, on consecutive key ranges (`ranges.rs`).
    pub readers: usize,
    /// Copy rows no change ever touched straight into the target table, without a revision claim
    /// of their own (see "the direct path" in the module documentation); `false` claims every row.
    pub direct: bool,
    /// Per-column conversion rules from the configuration (`[conversions]`, `LegacyConfig`).
    pub conversions: Overrides,
    /// Also append every rejected row to this file, one JSON line each (the table
    /// `dualwrite.backfill_rejects` is always written).
    pub reject_file: Option<PathBuf>,
    /// Copy only the rows still listed as rejects (after their data was fixed), read again from
    /// SQLite by key; checkpoints are neither read nor moved.
    pub retry_rejects: bool,
}

impl Default for BackfillOptions {
    fn default() -> Self {
        BackfillOptions {
            tables: None,
            chunk_size: 10_000,
            max_rows_per_sec: None,
            max_outbox_depth: Some(50_000),
            restart: false,
            stop_after_chunks: None,
            cancel: None,
            method: ApplyMethod::Copy,
            direct: true,
            catch_up_timeout: Duration::from_secs(300),
            workers: 2,
            readers: 2,
            conversions: Overrides::none(),
            reject_file: None,
            retry_rejects: false,
        }
    }
}

/// What happened to one table in one run.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TableSummary {
    pub table: String,
    /// Rows read from SQLite and accepted by PostgreSQL in this run (rejects not included).
    pub rows_copied: u64,
    /// Of those, rows that won the revision claim (the rest had a newer live revision).
    pub rows_written: u64,
    pub chunks: u64,
    /// Rows this run sent to the rejects (not convertible, or refused by PostgreSQL).
    pub rows_rejected: u64,
    /// Rejects this run took off the list: copied at last, or gone from SQLite.
    pub rejects_resolved: u64,
    /// Rows copied by every run so far (the checkpoint's count).
    pub rows_total: u64,
    /// Finished before this run; nothing was copied.
    pub skipped: bool,
    pub finished: bool,
    pub elapsed_ms: u64,
    pub rows_per_sec: f64,
}

/// The result of a run.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BackfillReport {
    pub tables: Vec<TableSummary>,
    /// Stopped before every table was finished (cancel or `stop_after_chunks`).
    pub interrupted: bool,
    pub elapsed_ms: u64,
    /// A `retry_rejects` run.
    pub retry_rejects: bool,
    /// Rows rejected by this run, per table (tables without rejects are left out).
    pub rejects: BTreeMap<String, u64>,
    /// Rejects still pending after this run, per table (this run's and earlier runs').
    pub rejects_pending: BTreeMap<String, u64>,
    pub reject_file: Option<PathBuf>,
}

impl BackfillReport {
    pub fn rows_copied(&self) -> u64 {
        self.tables.iter().map(|t| t.rows_copied).sum()
    }

    pub fn rows_rejected(&self) -> u64 {
        self.rejects.values().sum()
    }

    /// A plain text table: rows copied and rejected per table, time, rows/s; then where the
    /// rejects are and how to take them again.
    pub fn render(&self) -> String {
        let mut out = format!(
            "{:<22} {:>10} {:>10} {:>9} {:>9} {:>7} {:>10} {:>12}  state\n",
            "table", "copied", "written", "rejected", "resolved", "chunks", "seconds", "rows/s"
        );
        for t in &self.tables {
            let state = if t.skipped {
                "already finished"
            } else if t.finished {
                "finished"
            } else {
                "interrupted"
            };
            out.push_str(&format!(
                "{:<22} {:>10} {:>10} {:>9} {:>9} {:>7} {:>10.2} {:>12.0}  {state}\n",
                t.table,
                t.rows_copied,
                t.rows_written,
                t.rows_rejected,
                t.rejects_resolved,
                t.chunks,
                t.elapsed_ms as f64 / 1000.0,
                t.rows_per_sec
            ));
        }
        let secs = self.elapsed_ms as f64 / 1000.0;
        out.push_str(&format!(
            "total: {} rows in {:.2} s ({:.0} rows/s), {} rejected{}\n",
            self.rows_copied(),
            secs,
            if secs > 0.0 { self.rows_copied() as f64 / secs } else { 0.0 },
            self.rows_rejected(),
            if self.interrupted { "; interrupted: run again to resume" } else { "" }
        ));
        let pending: u64 = self.rejects_pending.values().sum();
        if pending > 0 {
            let per_table =
                self.rejects_pending.iter().map(|(t, n)| format!("{t} {n}")).collect::<Vec<_>>().join(", ");
            out.push_str(&format!(
                "rejects pending: {pending} ({per_table}); reasons in dualwrite.backfill_rejects{}. \
                 Fix the data in SQLite, then run `dualwrite backfill --retry-rejects`\n",
                self.reject_file.as_ref().map(|f| format!(" and {}", f.display())).unwrap_or_default()
            ));
        }
        out
    }
}

/// Progress callbacks (the CLI draws bars on a terminal; [`LogProgress`] writes log lines).
pub trait BackfillProgress {
    /// `total` is SQLite's row count when the table starts (an estimate while writes go on).
    fn table_started(&mut self, _table: &str, _total: u64, _already_copied: u64) {}
    fn chunk_done(&mut self, _table: &str, _rows_total: u64) {}
    fn paused(&mut self, _table: &str, _why: &str) {}
    fn table_done(&mut self, _summary: &TableSummary) {}
}

/// No output.
pub struct NoProgress;
impl BackfillProgress for NoProgress {}

/// Log lines (tracing, info level) at most every few seconds per table: for runs without a terminal.
pub struct LogProgress {
    every: Duration,
    table_started: Instant,
    last: Instant,
    total: u64,
    base: u64,
}

impl Default for LogProgress {
    fn default() -> Self {
        LogProgress {
            every: Duration::from_secs(5),
            table_started: Instant::now(),
            last: Instant::now(),
            total: 0,
            base: 0,
        }
    }
}

impl BackfillProgress for LogProgress {
    fn table_started(&mut self, table: &str, total: u64, already: u64) {
        self.table_started = Instant::now();
        self.last = Instant::now();
        self.total = total;
        self.base = already;
        tracing::info!(table, rows = total, already_copied = already, "backfill: table started");
    }
    fn chunk_done(&mut self, table: &str, rows_total: u64) {
        if self.last.elapsed() < self.every {
            return;
        }
        self.last = Instant::now();
        let secs = self.table_started.elapsed().as_secs_f64();
        let rate = (rows_total.saturating_sub(self.base)) as f64 / secs.max(1e-9);
        let eta = if rate > 0.0 { self.total.saturating_sub(rows_total) as f64 / rate } else { 0.0 };
        tracing::info!(
            table,
            rows = rows_total,
            of = self.total,
            rows_per_sec = rate as u64,
            eta_s = eta as u64,
            "backfill: progress"
        );
    }
    fn paused(&mut self, table: &str, why: &str) {
        tracing::info!(table, why, "backfill: paused");
    }
    fn table_done(&mut self, s: &TableSummary) {
        tracing::info!(table = %s.table, rows = s.rows_copied, rows_per_sec = s.rows_per_sec as u64,
            finished = s.finished, skipped = s.skipped, "backfill: table done");
    }
}

/// A checkpoint row as stored.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Checkpoint {
    pub table_name: String,
    pub last_key: Option<String>,
    pub rows_copied: i64,
    pub chunks: i64,
    pub finished: bool,
}

/// The checkpoints of every table the backfill has started.
pub fn checkpoints(client: &mut postgres::Client) -> Result<Vec<Checkpoint>> {
    Ok(client
        .query(
            "SELECT table_name, last_key, rows_copied, chunks, finished FROM dualwrite.backfill_checkpoints",
            &[],
        )?
        .iter()
        .map(|r| Checkpoint {
            table_name: r.get(0),
            last_key: r.get(1),
            rows_copied: r.get(2),
            chunks: r.get(3),
            finished: r.get(4),
        })
        .collect())
}

/// Any fixed number: one backfill at a time per PostgreSQL database.
const BACKFILL_LOCK: i64 = 0x6477_6266_696c_6c30; // "dwbfill0"

/// Copy the tables named in `options` (all by default) from the SQLite file of `config` into its
/// PostgreSQL, resuming from the checkpoints.
pub fn backfill(
    config: &Config,
    options: &BackfillOptions,
    progress: &mut dyn BackfillProgress,
) -> Result<BackfillReport> {
    if options.chunk_size == 0 {
        return Err(Error::invalid("chunk_size", "must be at least 1"));
    }
    let tables = schema::select_tables(options.tables.as_deref())?;
    let pg = config.require_postgres()?.clone();
    let mut run = Run {
        lite: sqlite::open(&config.sqlite_path)?,
        sqlite_path: config.sqlite_path.clone(),
        pg_config: pg,
        client: None,
        options,
        started: Instant::now(),
        rows_this_run: 0,
        chunks_this_run: 0,
    };
    run.connect()?;
    crate::migrate::require_bookkeeping(run.client()?)?;
    let mut store = RejectStore::open(run.client()?, options.reject_file.as_deref())?;
    let mut report = BackfillReport {
        tables: Vec::new(),
        interrupted: false,
        elapsed_ms: 0,
        retry_rejects: options.retry_rejects,
        rejects: BTreeMap::new(),
        rejects_pending: BTreeMap::new(),
        reject_file: options.reject_file.clone(),
    };
    for t in tables {
        let summary = if options.retry_rejects {
            run.retry_table(t, &mut store, progress)?
        } else {
            run.copy_table(t, &mut store, progress)?
        };
        progress.table_done(&summary);
        let stopped = !summary.finished;
        report.tables.push(summary);
        if stopped {
            report.interrupted = true;
            break;
        }
    }
    report.rejects = store.counts().clone();
    report.rejects_pending = RejectStore::pending_counts(run.client()?)?;
    report.elapsed_ms = run.started.elapsed().as_millis() as u64;
    Ok(report)
}

struct Run<'o> {
    lite: rusqlite::Connection,
    sqlite_path: PathBuf,
    pg_config: crate::pg_connect::PgConfig,
    /// Holds the advisory lock; reads and resets checkpoints.
    client: Option<postgres::Client>,
    options: &'o BackfillOptions,
    started: Instant,
    rows_this_run: u64,
    chunks_this_run: u64,
}

/// One chunk read from one SQLite snapshot.
struct Chunk {
    /// Position in this pipeline run: chunks commit in this order.
    index: u64,
    snapshot: i64,
    /// Keys of the rows sent (converted), in key order.
    keys: Vec<String>,
    /// COPY binary rows (without header/trailer) or a JSON array, per method.
    payload: Vec<u8>,
    /// Where each sent row is in `payload` (a COPY tuple, or a JSON object), for the row-by-row
    /// retry of a refused chunk.
    spans: Vec<std::ops::Range<usize>>,
    /// Per sent row: must it claim its revision (a change to its key was still in the outbox at
    /// the snapshot), or may it take the direct path (see `copy_direct`)?
    claim: Vec<bool>,
    /// May rows of this chunk take the direct path at all (binary COPY, SQLite the primary, the
    /// option on)?
    direct: bool,
    /// Rows the conversion rules refused; they commit with the chunk.
    rejects: Vec<RejectedRow>,
    /// Rows read, sent or not: fewer than a full chunk means the table ends here.
    rows_read: usize,
    /// The key of the last row read (sent or rejected): where the checkpoint moves to.
    last_key: Option<String>,
    /// Fewer rows than a full chunk: the table ends here.
    last: bool,
}

impl Chunk {
    fn new(method: ApplyMethod, snapshot: i64, capacity: usize) -> Chunk {
        let mut payload = Vec::with_capacity(capacity * 256);
        if method == ApplyMethod::Json {
            payload.push(b'[');
        }
        Chunk {
            index: 0,
            snapshot,
            keys: Vec::with_capacity(capacity),
            payload,
            spans: Vec::with_capacity(capacity),
            claim: Vec::new(),
            direct: false,
            rejects: Vec::new(),
            rows_read: 0,
            last_key: None,
            last: false,
        }
    }

    /// Convert one SQLite row (the table's columns in registry order) and add it to the payload,
    /// or to the rejects when a rule refuses a value.
    fn add(
        &mut self,
        table: &Table,
        method: ApplyMethod,
        r: &rusqlite::Row<'_>,
        key: String,
        rules: &ColumnRules,
        plain: Option<&PlainRows>,
    ) {
        self.rows_read += 1;
        self.last_key = Some(key.clone());
        if method == ApplyMethod::Copy {
            // Values the rules would keep as they are go straight into the tuple (plain.rs).
            let start = self.payload.len();
            if plain.is_some_and(|p| p.encode(r, &mut self.payload)) {
                self.spans.push(start..self.payload.len());
                self.keys.push(key);
                return;
            }
        }
        let converted = legacy::convert_sqlite_row(table, r, 0, rules).and_then(|row| {
            let start = self.payload.len();
            if method == ApplyMethod::Json && !self.keys.is_empty() {
                self.payload.push(b',');
            }
            let body = self.payload.len();
            let encoded = match method {
                ApplyMethod::Copy => legacy::to_sqlite_values(table, &row)
                    .and_then(|values| encode_copy_row(table, &values, &key, &mut self.payload)),
                ApplyMethod::Json => {
                    serde_json::to_writer(&mut self.payload, &row).map_err(|e| Error::Internal(e.to_string()))
                }
            };
            match encoded {
                Ok(()) => Ok(body..self.payload.len()),
                Err(e) => {
                    // The rules produced a value the encoder cannot send: a bug, but one row's.
                    self.payload.truncate(start);
                    Err(vec![legacy::Reject {
                        table: table.name.into(),
                        key: key.clone(),
                        column: None,
                        value: None,
                        reason: format!("converted, but cannot be encoded for PostgreSQL: {e}"),
                    }])
                }
            }
        });
        match converted {
            Ok(span) => {
                self.spans.push(span);
                self.keys.push(key);
            }
            Err(problems) => {
                let mut rejected = RejectedRow::conversion(table, problems);
                rejected.key = key;
                self.rejects.push(rejected);
            }
        }
    }

    fn finish(&mut self, method: ApplyMethod) {
        if method == ApplyMethod::Json {
            self.payload.push(b']');
        }
    }

    /// The COPY tuples of the rows at `rows` (indexes into `keys`).
    fn copy_body(&self, rows: &[usize]) -> Vec<u8> {
        let mut out = Vec::with_capacity(rows.iter().map(|&i| self.spans[i].len()).sum());
        for &i in rows {
            out.extend_from_slice(&self.payload[self.spans[i].clone()]);
        }
        out
    }

    /// What travels for every row of the chunk (`None`) or for row `i` alone.
    fn body(&self, method: ApplyMethod, row: Option<usize>) -> Cow<'_, [u8]> {
        match (method, row) {
            (_, None) => Cow::Borrowed(&self.payload),
            (ApplyMethod::Copy, Some(i)) => Cow::Borrowed(&self.payload[self.spans[i].clone()]),
            (ApplyMethod::Json, Some(i)) => {
                let mut one = Vec::with_capacity(self.spans[i].len() + 2);
                one.push(b'[');
                one.extend_from_slice(&self.payload[self.spans[i].clone()]);
                one.push(b']');
                Cow::Owned(one)
            }
        }
    }
}

/// Why a chunk did not commit.
enum Attempt {
    /// PostgreSQL refused the chunk for a foreign key or a unique value while the outbox still
    /// held changes up to its snapshot: wait for the replicator to apply them, then start again
    /// from the checkpoint (every uncommitted chunk rolled back, so no lock is held meanwhile).
    Constraint { error: Error, snapshot: i64 },
    /// Connection or concurrency failure: reconnect and try again.
    Transient(Error),
    /// The schema or the bookkeeping is wrong, or replication did not catch up: stop.
    Permanent(Error),
}

/// What a worker reports to the reader.
enum Outcome {
    /// Committed: rows PostgreSQL took, rows that won the claim, and the chunk's rejects (to be
    /// logged to the reject file now that they are committed).
    Committed {
        rows: u64,
        written: u64,
        rejects: Vec<RejectedRow>,
    },
    Failed(Attempt),
}

/// Commit order across the workers: chunk `next` is the only one allowed to commit.
#[derive(Default)]
struct Turn {
    next: u64,
    failed: bool,
}

type Shared = (std::sync::Mutex<Turn>, std::sync::Condvar);

impl Run<'_> {
    fn connect(&mut self) -> Result<()> {
        let mut c = self.pg_config.connect()?;
        let locked: bool = c.query_one("SELECT pg_try_advisory_lock($1)", &[&BACKFILL_LOCK])?.get(0);
        if !locked {
            return Err(Error::Conflict(
                "another backfill is running against this PostgreSQL database; wait for it or stop it".into(),
            ));
        }
        self.client = Some(c);
        Ok(())
    }

    fn client(&mut self) -> Result<&mut postgres::Client> {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            self.connect()?;
        }
        self.client.as_mut().ok_or_else(|| Error::Internal("no PostgreSQL connection".into()))
    }

    fn stop_requested(&self) -> bool {
        self.options.cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed))
            || self.options.stop_after_chunks.is_some_and(|n| self.chunks_this_run >= n)
    }

    fn checkpoint(&mut self, table: &Table) -> Result<(Option<String>, i64, bool)> {
        Ok(self
            .client()?
            .query_opt(
                "SELECT last_key, rows_copied, finished FROM dualwrite.backfill_checkpoints WHERE table_name = $1",
                &[&table.name],
            )?
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .unwrap_or((None, 0, false)))
    }

    fn copy_table(
        &mut self,
        table: &'static Table,
        store: &mut RejectStore,
        progress: &mut dyn BackfillProgress,
    ) -> Result<TableSummary> {
        let started = Instant::now();
        if self.options.restart {
            self.client()?.execute(
                "DELETE FROM dualwrite.backfill_checkpoints WHERE table_name = $1",
                &[&table.name],
            )?;
        }
        let (_, rows_before, finished) = self.checkpoint(table)?;
        let mut summary = TableSummary {
            table: table.name.to_string(),
            rows_copied: 0,
            rows_written: 0,
            chunks: 0,
            rows_rejected: 0,
            rejects_resolved: 0,
            rows_total: rows_before as u64,
            skipped: finished,
            finished,
            elapsed_ms: 0,
            rows_per_sec: 0.0,
        };
        if finished {
            return Ok(summary);
        }
        let total: i64 =
            self.lite.query_row(&format!("SELECT count(*) FROM {}", table.name), [], |r| r.get(0))?;
        progress.table_started(table.name, total as u64, rows_before as u64);
        let rules = ColumnRules::new(table, &self.options.conversions);
        let rejected_before = store.counts().get(table.name).copied().unwrap_or(0);
        // Consecutive failures without a committed chunk in between.
        let mut failures = 0u32;
        let mut chunks_at_failure = 0;
        loop {
            // Always (re)start from what PostgreSQL says is committed.
            let (last_key, rows_total, _) = self.checkpoint(table)?;
            let failure =
                self.pipeline(table, &rules, last_key, rows_total as u64, &mut summary, store, progress)?;
            let Some(attempt) = failure else { break };
            failures = if summary.chunks > chunks_at_failure { 1 } else { failures + 1 };
            chunks_at_failure = summary.chunks;
            match attempt {
                Attempt::Constraint { error, snapshot } if failures < 6 => {
                    progress.paused(
                        table.name,
                        "waiting for the replicator to apply the outbox up to the chunk's snapshot",
                    );
                    tracing::info!(table = table.name, %error, snapshot,
                        "backfill chunk refused by a constraint; waiting for the replicator to catch up");
                    wait_for_outbox(&self.lite, snapshot, self.options.catch_up_timeout, table)?;
                }
                Attempt::Transient(e) if failures < 6 => {
                    tracing::warn!(table = table.name, error = %e, attempt = failures, "backfill chunk failed; retrying");
                    std::thread::sleep(Duration::from_millis(100 << failures.min(6)));
                }
                Attempt::Constraint { error: e, .. } | Attempt::Transient(e) | Attempt::Permanent(e) => {
                    tracing::error!(table = table.name, error = %e, "backfill chunk failed");
                    return Err(e);
                }
            }
        }
        let (_, rows_total, finished) = self.checkpoint(table)?;
        summary.rows_total = rows_total as u64;
        summary.finished = finished;
        summary.rows_rejected = store.counts().get(table.name).copied().unwrap_or(0) - rejected_before;
        summary.elapsed_ms = started.elapsed().as_millis() as u64;
        summary.rows_per_sec = summary.rows_copied as f64 / started.elapsed().as_secs_f64().max(1e-9);
        Ok(summary)
    }

    /// Cut the table into key ranges of a chunk each on this thread, read and encode them on
    /// `readers` threads, and apply them on `workers` connections; the chunks reach the workers
    /// in key order and each commits (with its checkpoint and its rejects) only after the one
    /// before it, so the checkpoint always marks a prefix of the table and a resumed run never
    /// copies a committed chunk again. At most `readers + 1` chunks are between the cut and the
    /// workers' queue, so memory stays a few chunks. Returns the first failure, after every
    /// thread has stopped (uncommitted chunks roll back).
    #[allow(clippy::too_many_arguments)]
    fn pipeline(
        &mut self,
        table: &'static Table,
        rules: &ColumnRules,
        last_key: Option<String>,
        mut rows_total: u64,
        summary: &mut TableSummary,
        store: &mut RejectStore,
        progress: &mut dyn BackfillProgress,
    ) -> Result<Option<Attempt>> {
        let n = self.options.chunk_size;
        let method = self.options.method;
        let workers = self.options.workers.max(1);
        let readers = self.options.readers.max(1);
        let shared: Shared = Default::default();
        let (job_tx, job_rx) = crossbeam_channel::bounded::<Chunk>(workers);
        let (out_tx, out_rx) = crossbeam_channel::unbounded::<Outcome>();
        let (range_tx, range_rx) = crossbeam_channel::unbounded::<ranges::KeyRange>();
        let (read_tx, read_rx) = crossbeam_channel::unbounded::<Result<Chunk>>();
        let ctx =
            WorkerCtx { pg: self.pg_config.clone(), sqlite_path: self.sqlite_path.clone(), table, method };
        let reader_ctx = ranges::ReaderCtx {
            sqlite_path: self.sqlite_path.clone(),
            table,
            rules,
            method,
            chunk_size: n,
            direct: self.options.direct,
        };
        std::thread::scope(|s| -> Result<Option<Attempt>> {
            for w in 0..workers {
                let (job_rx, out_tx, shared, ctx) = (job_rx.clone(), out_tx.clone(), &shared, &ctx);
                std::thread::Builder::new()
                    .name(format!("dualwrite-backfill-{w}"))
                    .spawn_scoped(s, move || worker(ctx, &job_rx, &out_tx, shared))
                    .map_err(Error::Io)?;
            }
            for r in 0..readers {
                let (range_rx, read_tx, reader_ctx) = (range_rx.clone(), read_tx.clone(), &reader_ctx);
                std::thread::Builder::new()
                    .name(format!("dualwrite-backfill-read-{r}"))
                    .spawn_scoped(s, move || ranges::reader(reader_ctx, &range_rx, &read_tx))
                    .map_err(Error::Io)?;
            }
            drop((job_rx, out_tx, range_rx, read_tx));
            let mut failure = None;
            let mut note = |o: Outcome,
                            failure: &mut Option<Attempt>,
                            progress: &mut dyn BackfillProgress|
             -> Result<()> {
                match o {
                    Outcome::Committed { rows, written, rejects } => {
                        summary.chunks += 1;
                        summary.rows_copied += rows;
                        summary.rows_written += written;
                        rows_total += rows;
                        // Committed, so the file never names a row the table does not have.
                        store.log(&rejects)?;
                        let rejected = store.counts().get(table.name).copied().unwrap_or(0);
                        progress.chunk_done(table.name, rows_total + rejected);
                    }
                    Outcome::Failed(f) => {
                        if failure.is_none() {
                            *failure = Some(f);
                        }
                    }
                }
                Ok(())
            };
            // The cut: the next range starts after `after`; `planning` until the tail was read
            // and was not full (or a stop); while the tail is out, nothing is cut after it.
            let mut after = last_key;
            let mut planning = true;
            let mut tail_out = false;
            let mut cut = 0u64;
            let mut in_order = ranges::InOrder::default();
            'run: loop {
                while let Ok(o) = out_rx.try_recv() {
                    note(o, &mut failure, progress)?;
                }
                let failed = shared.0.lock().unwrap_or_else(|p| p.into_inner()).failed;
                if failed || failure.is_some() {
                    break;
                }
                while planning && !tail_out && cut - in_order.handed_on() <= readers as u64 {
                    if self.stop_requested() {
                        planning = false;
                        break;
                    }
                    self.throttle(table, progress)?;
                    let upto = ranges::next_boundary(&self.lite, table, after.as_deref(), n)?;
                    match &upto {
                        // A full chunk (its rows were there at the cut): it counts now, so
                        // `stop_after_chunks` never cuts one too many.
                        Some(_) => self.chunks_this_run += 1,
                        None => tail_out = true,
                    }
                    let range = ranges::KeyRange { index: cut, after: after.clone(), upto: upto.clone() };
                    if upto.is_some() {
                        after = upto;
                    }
                    // Refused only when every reader stopped, each after sending its error:
                    // the receive below returns it.
                    let _ = range_tx.send(range);
                    cut += 1;
                }
                if cut == in_order.handed_on() {
                    break; // nothing out, nothing more to cut
                }
                let Ok(read) = read_rx.recv() else { break };
                let chunk = read?;
                self.rows_this_run += chunk.rows_read as u64;
                if chunk.index + 1 == cut && tail_out {
                    tail_out = false;
                    if chunk.rows_read > 0 {
                        self.chunks_this_run += 1;
                    }
                    if chunk.last {
                        planning = false;
                    } else {
                        // Full: rows were appended since the cut; go on after them.
                        after.clone_from(&chunk.last_key);
                    }
                }
                in_order.push(chunk);
                while let Some(chunk) = in_order.pop() {
                    if job_tx.send(chunk).is_err() {
                        break 'run;
                    }
                }
            }
            drop(range_tx);
            drop(job_tx);
            // The workers finish (or roll back) what they hold, then close the channel.
            for o in out_rx.iter() {
                note(o, &mut failure, progress)?;
            }
            Ok(failure)
        })
    }

    /// `retry_rejects`: read the rows still listed as rejects of `table` again from SQLite, by key,
    /// convert and apply them; what goes through (or is gone from SQLite) is resolved, what is
    /// still refused stays a reject with the new reason. Checkpoints are not touched.
    fn retry_table(
        &mut self,
        table: &'static Table,
        store: &mut RejectStore,
        progress: &mut dyn BackfillProgress,
    ) -> Result<TableSummary> {
        let started = Instant::now();
        let keys = RejectStore::pending_keys(self.client()?, table.name)?;
        let mut summary = TableSummary {
            table: table.name.to_string(),
            rows_copied: 0,
            rows_written: 0,
            chunks: 0,
            rows_rejected: 0,
            rejects_resolved: 0,
            rows_total: keys.len() as u64,
            skipped: false,
            finished: true,
            elapsed_ms: 0,
            rows_per_sec: 0.0,
        };
        if keys.is_empty() {
            return Ok(summary);
        }
        progress.table_started(table.name, keys.len() as u64, 0);
        let method = self.options.method;
        let rules = ColumnRules::new(table, &self.options.conversions);
        // Its own connection, with its own staging table, as a worker's.
        let mut client = self.pg_config.connect()?;
        // Its rows come from SQLite: not foreign writes to the change capture.
        crate::capture::slot::tag_session_if_capturing(&mut client);
        if method == ApplyMethod::Copy {
            client.batch_execute(&stage_ddl(table))?;
        }
        let rejected_before = store.counts().get(table.name).copied().unwrap_or(0);
        let mut done = 0;
        for batch in keys.chunks(self.options.chunk_size) {
            if self.stop_requested() {
                summary.finished = false;
                break;
            }
            let (mut chunk, gone) = self.read_keys(table, &rules, batch)?;
            let timeout = self.options.catch_up_timeout;
            // No transaction is open while waiting: the replicator may need the rows it would lock.
            let mut attempts = 0;
            let (mut tx, applied) = loop {
                wait_for_outbox(&self.lite, chunk.snapshot, timeout, table)?;
                let mut tx = client.transaction()?;
                let lite = &self.lite;
                match apply_rows(&mut tx, table, &chunk, method, &mut |upto| {
                    Outbox::any_pending_upto(lite, upto)
                }) {
                    Ok(applied) => break (tx, applied),
                    Err(e) if attempts < 5 && is_lag(&e) => {
                        tx.rollback()?;
                        attempts += 1;
                    }
                    Err(e) => return Err(e),
                }
            };
            let mut rejects = std::mem::take(&mut chunk.rejects);
            rejects.extend(applied.refused);
            for r in &rejects {
                RejectStore::insert(&mut tx, r)?;
            }
            let mut resolved = applied.keys;
            let copied = resolved.len() as u64;
            resolved.extend(gone);
            let n = RejectStore::resolve(&mut tx, table.name, &resolved)?;
            tx.commit()?;
            store.log(&rejects)?;
            summary.chunks += 1;
            summary.rows_copied += copied;
            summary.rows_written += applied.written;
            summary.rejects_resolved += n;
            done += batch.len() as u64;
            progress.chunk_done(table.name, done);
        }
        summary.rows_rejected = store.counts().get(table.name).copied().unwrap_or(0) - rejected_before;
        summary.elapsed_ms = started.elapsed().as_millis() as u64;
        summary.rows_per_sec = summary.rows_copied as f64 / started.elapsed().as_secs_f64().max(1e-9);
        Ok(summary)
    }

    /// Sleep to hold the rows/s cap; pause while the outbox is deeper than the bound.
    fn throttle(&mut self, table: &Table, progress: &mut dyn BackfillProgress) -> Result<()> {
        if let Some(cap) = self.options.max_rows_per_sec.filter(|c| *c > 0) {
            let due = Duration::from_secs_f64(self.rows_this_run as f64 / cap as f64);
            let elapsed = self.started.elapsed();
            if due > elapsed {
                std::thread::sleep(due - elapsed);
            }
        }
        if let Some(bound) = self.options.max_outbox_depth {
            let mut told = false;
            loop {
                let (depth, _) = Outbox::depth(&self.lite)?;
                if depth <= bound || self.stop_requested() {
                    break;
                }
                if !told {
                    progress.paused(table.name, &format!("outbox depth {depth} above {bound}"));
                    told = true;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        Ok(())
    }

    /// The rows of `keys` from one SQLite snapshot, converted; and the keys no longer there.
    fn read_keys(
        &mut self,
        table: &'static Table,
        rules: &ColumnRules,
        keys: &[String],
    ) -> Result<(Chunk, Vec<String>)> {
        let sql = format!(
            "SELECT {} FROM {} WHERE {} = ?1",
            table.column_names().collect::<Vec<_>>().join(", "),
            table.name,
            table.key
        );
        let method = self.options.method;
        let tx = self.lite.transaction()?;
        let snapshot = Outbox::last_seq(&tx)?;
        let mut chunk = Chunk::new(method, snapshot, keys.len());
        let mut gone = Vec::new();
        {
            let mut stmt = tx.prepare_cached(&sql)?;
            for k in keys {
                let mut rows = stmt.query([k])?;
                match rows.next()? {
                    Some(r) => chunk.add(table, method, r, k.clone(), rules, None),
                    None => gone.push(k.clone()),
                }
            }
        }
        chunk.finish(method);
        // Retries always claim (chunk.direct stays false): few rows, and some already in the table.
        chunk.claim = vec![true; chunk.keys.len()];
        tx.commit()?;
        Ok((chunk, gone))
    }
}

/// The key of a SQLite row as text (the column in registry position).
fn row_key(table: &Table, r: &rusqlite::Row<'_>) -> Result<String> {
    let key_index = table.columns.iter().position(|c| c.name == table.key).unwrap_or(0);
    match r.get_ref(key_index)? {
        ValueRef::Text(t) => Ok(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Integer(n) => Ok(n.to_string()),
        other => Err(Error::Internal(format!("{}: key of type {:?}", table.name, other.data_type()))),
    }
}

/// Wait until the outbox holds nothing at or below `upto`: every change up to a snapshot has
/// reached PostgreSQL, so a foreign-key or unique refusal of that snapshot's rows is their own.
fn wait_for_outbox(lite: &rusqlite::Connection, upto: i64, timeout: Duration, table: &Table) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while Outbox::any_pending_upto(lite, upto)? {
        if Instant::now() >= deadline {
            return Err(Error::Unavailable(format!(
                "{}: PostgreSQL refused backfill rows for a foreign key or unique value, and the outbox \
                 still held changes up to their snapshot ({upto}) after {timeout:?}. Is replication \
                 running (a process with the bridge open, or `dualwrite drain`)?",
                table.name
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// A read-only SQLite connection for a backfill thread: a worker's look at the outbox, a reader's
/// chunks.
fn open_reader(path: &std::path::Path) -> Result<rusqlite::Connection> {
    use rusqlite::OpenFlags;
    let conn = rusqlite::Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(10))?;
    Ok(conn)
}

/// What every worker of one table's pipeline shares.
struct WorkerCtx {
    pg: crate::pg_connect::PgConfig,
    sqlite_path: PathBuf,
    table: &'static Table,
    method: ApplyMethod,
}

/// A worker: its own PostgreSQL connection (asynchronous commit, its own staging table) and a
/// read-only SQLite connection (to see the outbox), applying chunks as they come and committing
/// each in its turn.
fn worker(
    ctx: &WorkerCtx,
    jobs: &crossbeam_channel::Receiver<Chunk>,
    out: &crossbeam_channel::Sender<Outcome>,
    shared: &Shared,
) {
    let fail = |attempt: Attempt| {
        let (m, cv) = shared;
        m.lock().unwrap_or_else(|p| p.into_inner()).failed = true;
        cv.notify_all();
        let _ = out.send(Outcome::Failed(attempt));
    };
    let lite = match open_reader(&ctx.sqlite_path) {
        Ok(c) => c,
        Err(e) => return fail(Attempt::Permanent(e)),
    };
    let mut client = match ctx.pg.connect() {
        Ok(c) => c,
        Err(e) => return fail(Attempt::Transient(e)),
    };
    // Its rows come from SQLite: not foreign writes to the change capture.
    crate::capture::slot::tag_session_if_capturing(&mut client);
    // A chunk and its checkpoint commit together, so an asynchronous commit lost in a PostgreSQL
    // crash only means those chunks are copied again by the resumed run (still revision-guarded).
    // lock_timeout: two workers' chunks from different snapshots can carry the same unique value
    // (an e-mail moved between rows); one then waits on the other's uncommitted row while that one
    // waits for its turn to commit, which PostgreSQL cannot see as a deadlock. The timeout turns it
    // into a transient failure, retried from the checkpoint.
    let mut setup = String::from("SET synchronous_commit = off; SET lock_timeout = '10s';");
    if ctx.method == ApplyMethod::Copy {
        setup.push_str(&stage_ddl(ctx.table));
    }
    if let Err(e) = client.batch_execute(&setup) {
        return fail(classify(Error::Postgres(e)));
    }
    let lite = std::cell::RefCell::new(lite);
    let mut pending = |upto: i64| Outbox::any_pending_upto(&lite.borrow(), upto);
    let mut postgres_first = || Ok(crate::flags::stored_write_mode(&lite.borrow())?.postgres_first());
    for chunk in jobs.iter() {
        match apply_chunk_tx(
            &mut client,
            ctx.table,
            &chunk,
            ctx.method,
            shared,
            &mut pending,
            &mut postgres_first,
        ) {
            Ok(Some(outcome)) => {
                let _ = out.send(outcome);
            }
            // Another chunk failed first: this one rolled back; stop.
            Ok(None) => return,
            Err(e) if is_lag(&e) => return fail(Attempt::Constraint { error: e, snapshot: chunk.snapshot }),
            Err(e) => return fail(classify(e)),
        }
    }
}

fn classify(e: Error) -> Attempt {
    let Error::Postgres(pe) = e else {
        return match e {
            Error::Io(_) => Attempt::Transient(e),
            _ => Attempt::Permanent(e),
        };
    };
    match pe.code().map(|c| c.code().to_string()) {
        // A property of the data or the schema that the row-by-row retry could not take apart
        // (or the bookkeeping's own statements): retrying the same rows cannot help.
        Some(c) if c.starts_with("22") || c.starts_with("23") || c.starts_with("42") => {
            Attempt::Permanent(Error::Postgres(pe))
        }
        _ => Attempt::Transient(Error::Postgres(pe)),
    }
}

/// PostgreSQL refused rows for their data (SQLSTATE classes 22 and 23), not for the connection
/// or the schema.
fn refused_for_data(e: &postgres::Error) -> bool {
    e.code().is_some_and(|c| c.code().starts_with("22") || c.code().starts_with("23"))
}

/// A foreign-key or unique refusal (23503, 23505) may only mean a parent, or the change that freed
/// a value, is still in the outbox.
fn maybe_replication_lag(e: &postgres::Error) -> bool {
    e.code().is_some_and(|c| matches!(c.code(), "23503" | "23505"))
}

/// What [`apply_rows`] returns when a refusal may be replication lag: the outbox still holds
/// changes up to the chunk's snapshot.
fn is_lag(e: &Error) -> bool {
    matches!(e, Error::Postgres(pe) if maybe_replication_lag(pe))
}

/// What PostgreSQL took of a chunk.
struct Applied {
    /// Rows that won the revision claim.
    written: u64,
    /// Keys of the rows PostgreSQL accepted (won or lost the claim).
    keys: Vec<String>,
    /// Rows PostgreSQL refused, one by one.
    refused: Vec<RejectedRow>,
    /// Keys copied by the direct path (no claim): checked for tombstones before the commit.
    direct: Vec<String>,
}

/// Apply a chunk in the caller's transaction: the whole chunk under a savepoint; if PostgreSQL
/// refuses it for its data, again row by row, each under its own savepoint, and the refused rows
/// are returned as rejects.
///
/// A foreign-key or unique refusal is believed only when `pending(snapshot)` says the outbox holds
/// nothing at or below the chunk's snapshot any more (a parent inserted after its table was copied,
/// or the change that freed a value, may still be on its way), and only after one more try, since
/// the outbox may have drained between the refusal and the look. Otherwise the refusal is returned
/// (see [`is_lag`]): the caller rolls back and waits without holding locks — never inside this
/// transaction, where other chunks' uncommitted rows could block the replicator it waits for.
fn apply_rows(
    tx: &mut postgres::Transaction<'_>,
    table: &'static Table,
    chunk: &Chunk,
    method: ApplyMethod,
    pending: &mut dyn FnMut(i64) -> Result<bool>,
) -> Result<Applied> {
    let mut applied = Applied { written: 0, keys: Vec::new(), refused: Vec::new(), direct: Vec::new() };
    if chunk.keys.is_empty() {
        return Ok(applied);
    }
    let rows: Vec<usize> = if chunk.direct {
        copy_direct(tx, table, chunk, &mut applied)?
    } else {
        (0..chunk.keys.len()).collect()
    };
    if rows.is_empty() {
        return Ok(applied);
    }
    let keys: Vec<String> = rows.iter().map(|&i| chunk.keys[i].clone()).collect();
    let body: Cow<'_, [u8]> = if rows.len() == chunk.keys.len() {
        chunk.body(method, None)
    } else {
        Cow::Owned(chunk.copy_body(&rows))
    };
    // Set once the outbox was seen empty up to the snapshot: constraint refusals are then real.
    let mut caught_up = false;
    loop {
        let mut whole = tx.savepoint("dw_chunk")?;
        match send(&mut whole, table, method, chunk.snapshot, &keys, &body) {
            Ok(written) => {
                whole.commit()?;
                applied.written += written;
                applied.keys.extend(keys);
                return Ok(applied);
            }
            Err(e) if maybe_replication_lag(&e) && !caught_up => {
                whole.rollback()?;
                if pending(chunk.snapshot)? {
                    return Err(Error::Postgres(e));
                }
                caught_up = true;
            }
            Err(e) if refused_for_data(&e) => {
                whole.rollback()?;
                tracing::info!(table = table.name, error = %e, rows = keys.len(),
                    "backfill chunk refused for its data; applying it row by row");
                break;
            }
            Err(e) => return Err(Error::Postgres(e)),
        }
    }
    for i in rows {
        let key = &chunk.keys[i];
        loop {
            let mut one = tx.savepoint("dw_row")?;
            let body = chunk.body(method, Some(i));
            match send(&mut one, table, method, chunk.snapshot, std::slice::from_ref(key), &body) {
                Ok(written) => {
                    one.commit()?;
                    applied.written += written;
                    applied.keys.push(key.clone());
                }
                Err(e) if maybe_replication_lag(&e) && !caught_up => {
                    one.rollback()?;
                    if pending(chunk.snapshot)? {
                        return Err(Error::Postgres(e));
                    }
                    caught_up = true;
                    continue;
                }
                Err(e) if refused_for_data(&e) => {
                    one.rollback()?;
                    applied.refused.push(RejectedRow::postgres(table, key, &e));
                }
                Err(e) => return Err(Error::Postgres(e)),
            }
            break;
        }
    }
    Ok(applied)
}

/// Stage `body` (COPY tuples or a JSON array holding exactly the rows of `keys`) and run the
/// claim + upsert with revision `snapshot`. Returns the rows written (claims won).
fn send(
    tx: &mut postgres::Transaction<'_>,
    table: &'static Table,
    method: ApplyMethod,
    snapshot: i64,
    keys: &[String],
    body: &[u8],
) -> std::result::Result<u64, postgres::Error> {
    let revs = vec![snapshot; keys.len()];
    let dels = vec![false; keys.len()];
    match method {
        ApplyMethod::Copy => {
            copy_in(tx, &format!("pg_temp.dw_stage_{}", table.name), table, body)?;
            // The staging table may still hold rows from earlier savepoints of this transaction
            // (it empties at commit): the join with the claimed keys takes only these rows.
            tx.execute(&apply_sql(table, ApplyMethod::Copy), &[&table.name, &keys, &revs, &dels])
        }
        ApplyMethod::Json => {
            // serde_json wrote the body, so it is UTF-8; an empty array instead would mark every
            // key applied without sending a row.
            let json = std::str::from_utf8(body).expect("the JSON body serde_json wrote is UTF-8");
            tx.execute(&apply_sql(table, ApplyMethod::Json), &[&table.name, &keys, &revs, &dels, &json])
        }
    }
}

/// Binary COPY of `body` (tuples without header and trailer) into `target` (the staging table, or
/// the target table itself on the direct path).
fn copy_in(
    tx: &mut postgres::Transaction<'_>,
    target: &str,
    table: &Table,
    body: &[u8],
) -> std::result::Result<u64, postgres::Error> {
    let mut w = tx.copy_in(&format!(
        "COPY {target} ({}) FROM STDIN (FORMAT binary)",
        table.column_names().collect::<Vec<_>>().join(", ")
    ))?;
    let mut header = Vec::with_capacity(19);
    header.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    header.extend_from_slice(&0i32.to_be_bytes());
    header.extend_from_slice(&0i32.to_be_bytes());
    let res = w
        .write_all(&header)
        .and_then(|_| w.write_all(body))
        .and_then(|_| w.write_all(&(-1i16).to_be_bytes()));
    if let Err(e) = res {
        // The server's error, if it sent one, comes from finish().
        tracing::debug!(error = %e, "COPY write failed");
    }
    w.finish()
}

/// The direct path: copy the chunk's rows that need no claim straight into the target table
/// (binary COPY; through the staging table and a plain `INSERT … SELECT` for a table with a
/// numeric column, which travels as text). Returns the rows left for the guarded path (claim +
/// upsert): those marked `claim`, and every row when the direct copy failed.
///
/// Why a row needs no claim of its own: every change the bridge ever made to a key has either
/// been applied (so `dualwrite.row_revisions` holds its revision or tombstone) or was still in the
/// outbox at the chunk's snapshot (those rows are marked `claim` by `ranges::read_range`), or comes after
/// the snapshot (a revision above S). A row with none of the first two was never touched by a
/// change at or below S, so no change can arrive later with a lower revision than the snapshot's
/// row and the claim at S would guard nothing. What is left is the race with changes above S:
///
/// - a newer row (upsert) meets this copy on the primary key: committed first, the COPY fails
///   with a unique violation, and the rows PostgreSQL already has (or the ledger knows) are moved
///   to the guarded path, where the claim at S loses; in flight or later, the replicator's upsert
///   waits for this transaction and then overwrites the copy;
/// - a delete does not meet it (a `DELETE` cannot see an uncommitted insert): `finish_direct`
///   looks for tombstones above S of the copied keys under `DELETE_LOCK_CLASS` just before the
///   commit, and removes those rows.
///
/// Any other refusal (a foreign key, another unique value, bad data) sends every row down the
/// guarded path, which has the handling for each (replication lag, row-by-row rejects).
fn copy_direct(
    tx: &mut postgres::Transaction<'_>,
    table: &'static Table,
    chunk: &Chunk,
    applied: &mut Applied,
) -> Result<Vec<usize>> {
    let all = || (0..chunk.keys.len()).collect::<Vec<_>>();
    let (mut direct, mut guarded): (Vec<usize>, Vec<usize>) =
        all().into_iter().partition(|&i| !chunk.claim[i]);
    let staged = table.columns.iter().any(|c| c.ty == ColType::Numeric);
    for attempt in 0..2 {
        if direct.is_empty() {
            return Ok(guarded);
        }
        let body = if guarded.is_empty() {
            Cow::Borrowed(&chunk.payload[..])
        } else {
            Cow::Owned(chunk.copy_body(&direct))
        };
        let mut sp = tx.savepoint("dw_direct")?;
        let res = if staged {
            // First in the transaction, so the staging table holds exactly these rows.
            copy_in(&mut sp, &format!("pg_temp.dw_stage_{}", table.name), table, &body)
                .and_then(|_| sp.execute(&direct_insert_sql(table), &[]))
        } else {
            copy_in(&mut sp, &format!("public.{}", table.name), table, &body)
        };
        match res {
            Ok(_) => {
                sp.commit()?;
                applied.written += direct.len() as u64;
                applied.direct = direct.iter().map(|&i| chunk.keys[i].clone()).collect();
                applied.keys.extend(applied.direct.iter().cloned());
                return Ok(guarded);
            }
            Err(e) if attempt == 0 && e.code() == Some(&postgres::error::SqlState::UNIQUE_VIOLATION) => {
                sp.rollback()?;
                // Some of these rows are there already (a newer change replicated, an earlier
                // run, --restart) or known to the ledger: those take the claim.
                let keys: Vec<&str> = direct.iter().map(|&i| chunk.keys[i].as_str()).collect();
                let known: std::collections::HashSet<String> = tx
                    .query(&known_keys_sql(table), &[&table.name, &keys])?
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                tracing::debug!(table = table.name, known = known.len(), "direct copy met existing rows");
                direct.retain(|&i| {
                    let keep = !known.contains(&chunk.keys[i]);
                    if !keep {
                        guarded.push(i);
                    }
                    keep
                });
                guarded.sort_unstable();
            }
            Err(e) => {
                sp.rollback()?;
                tracing::debug!(table = table.name, error = %e, "direct copy refused; the chunk takes the guarded path");
                return Ok(all());
            }
        }
    }
    Ok(all())
}

/// Keys (of `$2`) that the target table holds or the revision ledger knows.
fn known_keys_sql(table: &Table) -> String {
    format!(
        "SELECT {k}::text FROM public.{t} WHERE {k} = ANY($2::text[]::{kt}[]) \
         UNION SELECT row_key FROM dualwrite.row_revisions WHERE table_name = $1 AND row_key = ANY($2::text[])",
        k = table.key,
        t = table.name,
        kt = crate::store::postgres::key_type(table)
    )
}

/// The direct path's insert from the staging table (tables with a numeric column).
fn direct_insert_sql(table: &Table) -> String {
    let cols = table.column_names().collect::<Vec<_>>().join(", ");
    let exprs = table
        .columns
        .iter()
        .map(|c| match c.ty {
            ColType::Numeric => format!("s.{}::numeric", c.name),
            _ => format!("s.{}", c.name),
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!("INSERT INTO public.{t} ({cols}) SELECT {exprs} FROM pg_temp.dw_stage_{t} AS s", t = table.name)
}

/// Before the commit of a chunk with rows copied by the direct path: hold `DELETE_LOCK_CLASS`
/// shared (so no transaction deleting rows of this table is in flight), then remove the copied
/// rows whose key has a tombstone above the snapshot — deleted after the snapshot, by a batch
/// that committed while the copy was in flight. Returns the rows removed.
fn finish_direct(
    tx: &mut postgres::Transaction<'_>,
    table: &Table,
    snapshot: i64,
    keys: &[String],
) -> Result<u64> {
    use crate::store::postgres::{delete_lock_key, key_type, DELETE_LOCK_CLASS};
    tx.execute(
        "SELECT pg_advisory_xact_lock_shared($1, $2)",
        &[&DELETE_LOCK_CLASS, &delete_lock_key(table)],
    )?;
    let sql = format!(
        "DELETE FROM public.{t} WHERE {k} IN (SELECT row_key::{kt} FROM dualwrite.row_revisions \
         WHERE table_name = $1 AND row_key = ANY($2::text[]) AND deleted AND revision > $3)",
        t = table.name,
        k = table.key,
        kt = key_type(table)
    );
    Ok(tx.execute(&sql, &[&table.name, &keys, &snapshot])?)
}

/// Apply one chunk with its rejects, wait for its turn, advance the checkpoint past every row
/// read (rejected ones too), commit. `None`: another chunk failed while this one waited, and
/// this one was rolled back.
fn apply_chunk_tx(
    client: &mut postgres::Client,
    table: &'static Table,
    chunk: &Chunk,
    method: ApplyMethod,
    shared: &Shared,
    pending: &mut dyn FnMut(i64) -> Result<bool>,
    postgres_first: &mut dyn FnMut() -> Result<bool>,
) -> Result<Option<Outcome>> {
    let t0 = Instant::now();
    let mut tx = client.transaction()?;
    let applied = apply_rows(&mut tx, table, chunk, method, pending)?;
    let mut rejects = chunk.rejects.clone();
    rejects.extend(applied.refused);
    for r in &rejects {
        RejectStore::insert(&mut tx, r)?;
    }
    // Rows rejected by an earlier run that now went through (e.g. with --restart).
    RejectStore::resolve(&mut tx, table.name, &applied.keys)?;
    let apply_ms = t0.elapsed().as_millis() as u64;
    {
        let (m, cv) = shared;
        let mut turn = m.lock().unwrap_or_else(|p| p.into_inner());
        while turn.next != chunk.index && !turn.failed {
            turn = cv.wait(turn).unwrap_or_else(|p| p.into_inner());
        }
        if turn.failed {
            return Ok(None);
        }
    }
    let mut written = applied.written;
    if !applied.direct.is_empty() {
        // Under the lock, the write mode once more: PostgreSQL-first writes delete without it, so
        // a switch to such a mode while this chunk was in flight stops the run (it is refused in
        // those modes; the direct rows roll back with the chunk).
        let removed = finish_direct(&mut tx, table, chunk.snapshot, &applied.direct)?;
        if postgres_first()? {
            return Err(Error::Conflict(
                "the write mode changed to a PostgreSQL-first mode while the backfill ran; the backfill \
                 copies SQLite to PostgreSQL only while SQLite is the primary"
                    .into(),
            ));
        }
        written -= removed;
    }
    let rows = applied.keys.len() as u64;
    tx.execute(
        "INSERT INTO dualwrite.backfill_checkpoints (table_name, last_key, rows_copied, chunks, finished)
         VALUES ($1, $2, $3, 1, $4)
         ON CONFLICT (table_name) DO UPDATE SET
             last_key = coalesce(EXCLUDED.last_key, dualwrite.backfill_checkpoints.last_key),
             rows_copied = dualwrite.backfill_checkpoints.rows_copied + EXCLUDED.rows_copied,
             chunks = dualwrite.backfill_checkpoints.chunks + 1,
             finished = EXCLUDED.finished, updated_at = now()",
        &[&table.name, &chunk.last_key, &(rows as i64), &chunk.last],
    )?;
    tx.commit()?;
    {
        let (m, cv) = shared;
        m.lock().unwrap_or_else(|p| p.into_inner()).next = chunk.index + 1;
        cv.notify_all();
    }
    tracing::debug!(
        table = table.name,
        rows,
        rejected = rejects.len(),
        apply_ms,
        total_ms = t0.elapsed().as_millis() as u64,
        "backfill chunk committed"
    );
    Ok(Some(Outcome::Committed { rows, written, rejects }))
}

/// The staging table's type for a column: the target type, except numeric, which travels as text
/// (cast in the upsert) so no float or binary-numeric encoder sits between the two stores.
fn stage_type(c: &schema::Column) -> &'static str {
    match c.ty {
        ColType::Uuid => "uuid",
        ColType::Text | ColType::Numeric => "text",
        ColType::Jsonb => "jsonb",
        ColType::Timestamptz => "timestamptz",
        ColType::Int => "int4",
        ColType::Bytea => "bytea",
        ColType::Vector => "vector",
    }
}

fn stage_ddl(table: &Table) -> String {
    let cols =
        table.columns.iter().map(|c| format!("{} {}", c.name, stage_type(c))).collect::<Vec<_>>().join(", ");
    format!("CREATE TEMP TABLE IF NOT EXISTS dw_stage_{} ({cols}) ON COMMIT DELETE ROWS", table.name)
}

/// Claim (the replicator's own statement, as a CTE) + upsert of the winners, from the staging
/// table or from a JSON array parameter (`$5`).
fn apply_sql(table: &Table, method: ApplyMethod) -> String {
    let cols = table.column_names().collect::<Vec<_>>().join(", ");
    let (source, exprs) = match method {
        ApplyMethod::Copy => (
            format!("pg_temp.dw_stage_{} AS s", table.name),
            table
                .columns
                .iter()
                .map(|c| match c.ty {
                    ColType::Numeric => format!("s.{}::numeric", c.name),
                    _ => format!("s.{}", c.name),
                })
                .collect::<Vec<_>>()
                .join(", "),
        ),
        ApplyMethod::Json => (
            // json, not jsonb: a vector's -0.0 stays negative zero (see `store::postgres::upsert_sql`).
            format!("json_populate_recordset(NULL::public.{}, $5::text::json) AS s", table.name),
            table.columns.iter().map(|c| format!("s.{}", c.name)).collect::<Vec<_>>().join(", "),
        ),
    };
    let sets = table.set_all_from_excluded();
    format!(
        "WITH won AS ({claim}) INSERT INTO public.{t} ({cols}) SELECT {exprs} FROM {source} \
         JOIN won ON won.row_key = s.{key}::text ON CONFLICT ({key}) DO UPDATE SET {sets}",
        claim = claim_sql(),
        t = table.name,
        key = table.key
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backfill_upsert_runs_the_shared_claim() {
        let t = schema::table("jobs").unwrap();
        for m in [ApplyMethod::Copy, ApplyMethod::Json] {
            let sql = apply_sql(t, m);
            assert!(sql.contains(claim_sql()), "{sql}");
            assert!(sql.contains("WHERE dualwrite.row_revisions.revision < EXCLUDED.revision"));
        }
        assert!(apply_sql(t, ApplyMethod::Copy).contains("s.progress::numeric"));
    }
}
