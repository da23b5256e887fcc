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
//! Rows travel as PostgreSQL binary COPY into a per-session temporary staging table, then one
//! statement claims the revisions (the claim as a CTE) and upserts only the winners. The chunk's
//! rows and the table's checkpoint (`dualwrite.backfill_checkpoints`) commit in one transaction,
//! so an interrupted run resumes after the last committed chunk and never copies it again.
//! Memory is bounded by the chunk size. See docs/ARCHITECTURE.md, "Backfill and verify".

use crate::config::Config;
use crate::error::{Error, Result};
use crate::schema::{self, decode_sqlite_row, ColType, Table};
use crate::store::postgres::claim_sql;
use crate::store::sqlite::{self, Outbox};
use rusqlite::types::ValueRef;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How rows travel to PostgreSQL. Both end in the same revision-guarded upsert; `Copy` is the
/// default (see docs/BENCHMARKS.md for the measurement that chose it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ApplyMethod {
    /// Binary COPY into a temporary staging table, then claim + upsert from it.
    #[default]
    Copy,
    /// The rows as one JSON array parameter read with `jsonb_populate_recordset` (the
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
    /// Set to stop after the chunk in progress (e.g. from a signal handler).
    pub cancel: Option<Arc<AtomicBool>>,
    pub method: ApplyMethod,
    /// How long to wait for the replicator to apply the outbox up to a chunk's snapshot when
    /// PostgreSQL refuses the chunk for a foreign key or unique constraint (a parent inserted
    /// after its table was copied is still in the outbox).
    pub catch_up_timeout: Duration,
    /// PostgreSQL connections applying chunks at once (chunks still commit in key order).
    pub workers: usize,
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
            catch_up_timeout: Duration::from_secs(300),
            workers: 2,
        }
    }
}

/// What happened to one table in one run.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TableSummary {
    pub table: String,
    /// Rows read from SQLite and sent by this run.
    pub rows_copied: u64,
    /// Of those, rows that won the revision claim (the rest had a newer live revision).
    pub rows_written: u64,
    pub chunks: u64,
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
}

impl BackfillReport {
    pub fn rows_copied(&self) -> u64 {
        self.tables.iter().map(|t| t.rows_copied).sum()
    }

    /// A plain text table: rows per table, time, rows/s.
    pub fn render(&self) -> String {
        let mut out = format!(
            "{:<22} {:>10} {:>10} {:>7} {:>10} {:>12}  state\n",
            "table", "copied", "written", "chunks", "seconds", "rows/s"
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
                "{:<22} {:>10} {:>10} {:>7} {:>10.2} {:>12.0}  {state}\n",
                t.table,
                t.rows_copied,
                t.rows_written,
                t.chunks,
                t.elapsed_ms as f64 / 1000.0,
                t.rows_per_sec
            ));
        }
        let secs = self.elapsed_ms as f64 / 1000.0;
        out.push_str(&format!(
            "total: {} rows in {:.2} s ({:.0} rows/s){}\n",
            self.rows_copied(),
            secs,
            if secs > 0.0 { self.rows_copied() as f64 / secs } else { 0.0 },
            if self.interrupted { "; interrupted: run again to resume" } else { "" }
        ));
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

/// The backfill and verify tables come with PostgreSQL migration 4: say so instead of failing on
/// a missing relation.
pub(crate) fn require_bookkeeping(client: &mut postgres::Client) -> Result<()> {
    let v = crate::migrate::postgres_version(client)?;
    if v < 4 {
        return Err(Error::Migration(format!(
            "the PostgreSQL schema is at version {v}; backfill and verify need version 4 or later: run `dualwrite migrate`"
        )));
    }
    Ok(())
}

/// The tables to copy, validated, in foreign-key order.
pub(crate) fn select_tables(names: Option<&[String]>) -> Result<Vec<&'static Table>> {
    let Some(names) = names else { return Ok(schema::TABLES.iter().collect()) };
    let mut out = Vec::new();
    for n in names {
        let t = schema::require_table(n.trim())?;
        if !out.iter().any(|x: &&Table| x.name == t.name) {
            out.push(t);
        }
    }
    out.sort_by_key(|t| t.fk_rank());
    Ok(out)
}

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
    let tables = select_tables(options.tables.as_deref())?;
    let pg = config.require_postgres()?.clone();
    let mut run = Run {
        lite: sqlite::open(&config.sqlite_path)?,
        pg_config: pg,
        client: None,
        options,
        started: Instant::now(),
        rows_this_run: 0,
        chunks_this_run: 0,
    };
    run.connect()?;
    require_bookkeeping(run.client()?)?;
    let mut report = BackfillReport { tables: Vec::new(), interrupted: false, elapsed_ms: 0 };
    for t in tables {
        let summary = run.copy_table(t, progress)?;
        progress.table_done(&summary);
        let stopped = !summary.finished;
        report.tables.push(summary);
        if stopped {
            report.interrupted = true;
            break;
        }
    }
    if let Some(c) = run.client.as_mut() {
        let _ = c.execute("SELECT pg_advisory_unlock($1)", &[&BACKFILL_LOCK]);
    }
    report.elapsed_ms = run.started.elapsed().as_millis() as u64;
    Ok(report)
}

struct Run<'o> {
    lite: rusqlite::Connection,
    pg_config: crate::config::PgConfig,
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
    keys: Vec<String>,
    /// COPY binary rows (without header/trailer) or a JSON array, per method.
    payload: Vec<u8>,
    /// Fewer rows than a full chunk: the table ends here.
    last: bool,
}

/// Why a chunk did not commit.
enum Attempt {
    /// PostgreSQL refused the chunk for a constraint; wait for the outbox to reach the snapshot.
    Constraint(Error),
    /// Connection or concurrency failure: reconnect and try again.
    Transient(Error),
    /// The data or the schema is wrong: stop.
    Permanent(Error),
}

/// What a worker reports to the reader.
enum Outcome {
    Committed { rows: u64, written: u64 },
    Failed { attempt: Attempt, snapshot: i64 },
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
        // Consecutive failures without a committed chunk in between (a long table under live
        // writes may wait for the replicator many times, each time making progress after).
        let mut failures = 0u32;
        let mut chunks_at_failure = 0;
        loop {
            // Always (re)start from what PostgreSQL says is committed.
            let (last_key, rows_total, _) = self.checkpoint(table)?;
            match self.pipeline(table, last_key, rows_total as u64, &mut summary, progress)? {
                None => break,
                Some((attempt, snapshot)) => {
                    failures = if summary.chunks > chunks_at_failure { 1 } else { failures + 1 };
                    chunks_at_failure = summary.chunks;
                    match attempt {
                        Attempt::Constraint(e) if failures < 6 => {
                            progress.paused(
                                table.name,
                                "waiting for the replicator to apply the outbox up to the chunk's snapshot",
                            );
                            tracing::info!(table = table.name, error = %e, snapshot,
                                "backfill chunk refused by a constraint; waiting for the replicator to catch up");
                            self.wait_for_outbox(snapshot).map_err(|w| {
                                Error::Unavailable(format!(
                                    "{}: PostgreSQL refused a backfill chunk ({e}) and the outbox did not reach its \
                                     snapshot: {w}. Is replication running (a process with the bridge open, or `dualwrite drain`)?",
                                    table.name
                                ))
                            })?;
                        }
                        Attempt::Transient(e) if failures < 6 => {
                            tracing::warn!(table = table.name, error = %e, attempt = failures, "backfill chunk failed; retrying");
                            std::thread::sleep(Duration::from_millis(100 << failures.min(6)));
                        }
                        Attempt::Constraint(e) | Attempt::Transient(e) | Attempt::Permanent(e) => {
                            tracing::error!(table = table.name, error = %e, "backfill chunk failed");
                            return Err(e);
                        }
                    }
                }
            }
        }
        let (_, rows_total, finished) = self.checkpoint(table)?;
        summary.rows_total = rows_total as u64;
        summary.finished = finished;
        summary.elapsed_ms = started.elapsed().as_millis() as u64;
        summary.rows_per_sec = summary.rows_copied as f64 / started.elapsed().as_secs_f64().max(1e-9);
        Ok(summary)
    }

    /// Read chunks in key order on this thread while `workers` connections apply them; each
    /// chunk commits (with its checkpoint) only after the one before it, so the checkpoint always
    /// marks a prefix of the table and a resumed run never copies a committed chunk again.
    /// Returns the first failure, after every worker has stopped (uncommitted chunks roll back).
    fn pipeline(
        &mut self,
        table: &'static Table,
        mut last_key: Option<String>,
        mut rows_total: u64,
        summary: &mut TableSummary,
        progress: &mut dyn BackfillProgress,
    ) -> Result<Option<(Attempt, i64)>> {
        let n = self.options.chunk_size;
        let method = self.options.method;
        let workers = self.options.workers.max(1);
        let shared: Shared = Default::default();
        let (job_tx, job_rx) = crossbeam_channel::bounded::<Chunk>(workers);
        let (out_tx, out_rx) = crossbeam_channel::unbounded::<Outcome>();
        let pg_config = self.pg_config.clone();
        std::thread::scope(|s| -> Result<Option<(Attempt, i64)>> {
            for w in 0..workers {
                let (job_rx, out_tx, shared, pg_config) =
                    (job_rx.clone(), out_tx.clone(), &shared, &pg_config);
                std::thread::Builder::new()
                    .name(format!("dualwrite-backfill-{w}"))
                    .spawn_scoped(s, move || worker(pg_config, table, method, &job_rx, &out_tx, shared))
                    .map_err(Error::Io)?;
            }
            drop(job_rx);
            drop(out_tx);
            let mut failure = None;
            let mut note = |o: Outcome,
                            failure: &mut Option<(Attempt, i64)>,
                            progress: &mut dyn BackfillProgress| match o {
                Outcome::Committed { rows, written } => {
                    summary.chunks += 1;
                    summary.rows_copied += rows;
                    summary.rows_written += written;
                    rows_total += rows;
                    progress.chunk_done(table.name, rows_total);
                }
                Outcome::Failed { attempt, snapshot } => {
                    if failure.is_none() {
                        *failure = Some((attempt, snapshot));
                    }
                }
            };
            let mut index = 0;
            loop {
                while let Ok(o) = out_rx.try_recv() {
                    note(o, &mut failure, progress);
                }
                let failed = shared.0.lock().unwrap_or_else(|p| p.into_inner()).failed;
                if failed || failure.is_some() || self.stop_requested() {
                    break;
                }
                self.throttle(table, progress)?;
                let mut chunk = self.read_chunk(table, last_key.as_deref(), n)?;
                chunk.index = index;
                chunk.last = chunk.keys.len() < n;
                let last = chunk.last;
                if let Some(k) = chunk.keys.last() {
                    last_key = Some(k.clone());
                }
                self.rows_this_run += chunk.keys.len() as u64;
                if !chunk.keys.is_empty() {
                    self.chunks_this_run += 1;
                }
                if job_tx.send(chunk).is_err() {
                    break;
                }
                index += 1;
                if last {
                    break;
                }
            }
            drop(job_tx);
            // The workers finish (or roll back) what they hold, then close the channel.
            for o in out_rx.iter() {
                note(o, &mut failure, progress);
            }
            Ok(failure)
        })
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

    fn wait_for_outbox(&self, upto: i64) -> std::result::Result<(), String> {
        let deadline = Instant::now() + self.options.catch_up_timeout;
        loop {
            match Outbox::any_pending_upto(&self.lite, upto) {
                Ok(false) => return Ok(()),
                Ok(true) => {}
                Err(e) => return Err(e.to_string()),
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "changes up to {upto} still pending after {:?}",
                    self.options.catch_up_timeout
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Read up to `n` rows after `after` from one SQLite snapshot, with its high-water mark.
    fn read_chunk(&mut self, table: &'static Table, after: Option<&str>, n: usize) -> Result<Chunk> {
        let cols = table.column_names().collect::<Vec<_>>().join(", ");
        let sql = match after {
            Some(_) => {
                format!(
                    "SELECT {cols} FROM {t} WHERE {k} > ?1 ORDER BY {k} LIMIT ?2",
                    t = table.name,
                    k = table.key
                )
            }
            None => format!("SELECT {cols} FROM {t} ORDER BY {k} LIMIT ?1", t = table.name, k = table.key),
        };
        let method = self.options.method;
        // Deferred: the snapshot starts at the first read, which is the high-water mark.
        let tx = self.lite.transaction()?;
        let snapshot = Outbox::last_seq(&tx)?;
        let key_index = table.columns.iter().position(|c| c.name == table.key).unwrap_or(0);
        let mut keys = Vec::with_capacity(n.min(100_000));
        let mut payload = Vec::with_capacity(n.min(100_000) * 256);
        {
            let mut stmt = tx.prepare_cached(&sql)?;
            let mut rows = match after {
                Some(k) => stmt.query(rusqlite::params![k, n as i64])?,
                None => stmt.query([n as i64])?,
            };
            if method == ApplyMethod::Json {
                payload.push(b'[');
            }
            while let Some(r) = rows.next()? {
                let key = match r.get_ref(key_index)? {
                    ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                    other => {
                        return Err(Error::Internal(format!(
                            "{}: key of type {:?}",
                            table.name,
                            other.data_type()
                        )))
                    }
                };
                match method {
                    ApplyMethod::Copy => encode_copy_row(table, r, &key, &mut payload)?,
                    ApplyMethod::Json => {
                        if !keys.is_empty() {
                            payload.push(b',');
                        }
                        let row = decode_sqlite_row(table, r)?;
                        serde_json::to_writer(&mut payload, &row)
                            .map_err(|e| Error::Internal(e.to_string()))?;
                    }
                }
                keys.push(key);
            }
            if method == ApplyMethod::Json {
                payload.push(b']');
            }
        }
        tx.commit()?;
        Ok(Chunk { index: 0, snapshot, keys, payload, last: false })
    }
}

/// A worker: its own connection (asynchronous commit, its own staging table), applying chunks
/// as they come and committing each in its turn.
fn worker(
    pg: &crate::config::PgConfig,
    table: &'static Table,
    method: ApplyMethod,
    jobs: &crossbeam_channel::Receiver<Chunk>,
    out: &crossbeam_channel::Sender<Outcome>,
    shared: &Shared,
) {
    let fail = |attempt: Attempt, snapshot: i64| {
        let (m, cv) = shared;
        m.lock().unwrap_or_else(|p| p.into_inner()).failed = true;
        cv.notify_all();
        let _ = out.send(Outcome::Failed { attempt, snapshot });
    };
    let mut client = match pg.connect() {
        Ok(c) => c,
        Err(e) => return fail(Attempt::Transient(e), 0),
    };
    // A chunk and its checkpoint commit together, so an asynchronous commit lost in a PostgreSQL
    // crash only means those chunks are copied again by the resumed run (still revision-guarded).
    let mut setup = String::from("SET synchronous_commit = off;");
    if method == ApplyMethod::Copy {
        setup.push_str(&stage_ddl(table));
    }
    if let Err(e) = client.batch_execute(&setup) {
        return fail(classify(e), 0);
    }
    for chunk in jobs.iter() {
        match apply_chunk_tx(&mut client, table, &chunk, method, shared) {
            Ok(Some(written)) => {
                let _ = out.send(Outcome::Committed { rows: chunk.keys.len() as u64, written });
            }
            // Another chunk failed first: this one rolled back; stop.
            Ok(None) => return,
            Err(e) => return fail(classify(e), chunk.snapshot),
        }
    }
}

fn classify(e: postgres::Error) -> Attempt {
    match e.code().map(|c| c.code().to_string()) {
        // A referenced row or a unique value that the replicator has not applied yet.
        Some(c) if c == "23503" || c == "23505" => Attempt::Constraint(Error::Postgres(e)),
        // A property of the data or the schema: retrying the same rows cannot help.
        Some(c) if c.starts_with("22") || c.starts_with("23") || c.starts_with("42") => {
            Attempt::Permanent(Error::Postgres(e))
        }
        _ => Attempt::Transient(Error::Postgres(e)),
    }
}

/// Apply one chunk, wait for its turn, advance the checkpoint, commit. `None`: another chunk
/// failed while this one waited, and this one was rolled back.
fn apply_chunk_tx(
    client: &mut postgres::Client,
    table: &'static Table,
    chunk: &Chunk,
    method: ApplyMethod,
    shared: &Shared,
) -> std::result::Result<Option<u64>, postgres::Error> {
    let t0 = Instant::now();
    let mut tx = client.transaction()?;
    let mut written = 0;
    if !chunk.keys.is_empty() {
        let revs = vec![chunk.snapshot; chunk.keys.len()];
        let dels = vec![false; chunk.keys.len()];
        written = match method {
            ApplyMethod::Copy => {
                let mut w = tx.copy_in(&format!(
                    "COPY pg_temp.dw_stage_{} ({}) FROM STDIN (FORMAT binary)",
                    table.name,
                    table.column_names().collect::<Vec<_>>().join(", ")
                ))?;
                let mut header = Vec::with_capacity(19);
                header.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
                header.extend_from_slice(&0i32.to_be_bytes());
                header.extend_from_slice(&0i32.to_be_bytes());
                let res = w
                    .write_all(&header)
                    .and_then(|_| w.write_all(&chunk.payload))
                    .and_then(|_| w.write_all(&(-1i16).to_be_bytes()));
                if let Err(e) = res {
                    // The server's error, if it sent one, comes from finish().
                    tracing::debug!(error = %e, "COPY write failed");
                }
                w.finish()?;
                tx.execute(&apply_sql(table, ApplyMethod::Copy), &[&table.name, &chunk.keys, &revs, &dels])?
            }
            ApplyMethod::Json => {
                let json = std::str::from_utf8(&chunk.payload).unwrap_or("[]");
                tx.execute(
                    &apply_sql(table, ApplyMethod::Json),
                    &[&table.name, &chunk.keys, &revs, &dels, &json],
                )?
            }
        };
    }
    let applied = t0.elapsed();
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
    tx.execute(
        "INSERT INTO dualwrite.backfill_checkpoints (table_name, last_key, rows_copied, chunks, finished)
         VALUES ($1, $2, $3, 1, $4)
         ON CONFLICT (table_name) DO UPDATE SET
             last_key = coalesce(EXCLUDED.last_key, dualwrite.backfill_checkpoints.last_key),
             rows_copied = dualwrite.backfill_checkpoints.rows_copied + EXCLUDED.rows_copied,
             chunks = dualwrite.backfill_checkpoints.chunks + 1,
             finished = EXCLUDED.finished, updated_at = now()",
        &[&table.name, &chunk.keys.last(), &(chunk.keys.len() as i64), &chunk.last],
    )?;
    tx.commit()?;
    {
        let (m, cv) = shared;
        m.lock().unwrap_or_else(|p| p.into_inner()).next = chunk.index + 1;
        cv.notify_all();
    }
    tracing::debug!(
        table = table.name,
        rows = chunk.keys.len(),
        apply_ms = applied.as_millis() as u64,
        total_ms = t0.elapsed().as_millis() as u64,
        "backfill chunk committed"
    );
    Ok(Some(written))
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
            format!("jsonb_populate_recordset(NULL::public.{}, $5::text::jsonb) AS s", table.name),
            table.columns.iter().map(|c| format!("s.{}", c.name)).collect::<Vec<_>>().join(", "),
        ),
    };
    let sets = table
        .column_names()
        .filter(|c| *c != table.key)
        .map(|c| format!("{c} = EXCLUDED.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "WITH won AS ({claim}) INSERT INTO public.{t} ({cols}) SELECT {exprs} FROM {source} \
         JOIN won ON won.row_key = s.{key}::text ON CONFLICT ({key}) DO UPDATE SET {sets}",
        claim = claim_sql(),
        t = table.name,
        key = table.key
    )
}

fn put(buf: &mut Vec<u8>, bytes: &[u8]) {
    buf.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
    buf.extend_from_slice(bytes);
}

/// One row of a SQLite result (the table's columns in registry order) as a binary COPY tuple.
fn encode_copy_row(table: &Table, r: &rusqlite::Row<'_>, key: &str, buf: &mut Vec<u8>) -> Result<()> {
    buf.extend_from_slice(&(table.columns.len() as i16).to_be_bytes());
    for (i, c) in table.columns.iter().enumerate() {
        let v = r.get_ref(i)?;
        let bad = |what: &str| {
            Error::Internal(format!(
                "{}.{} of row {key}: {what} (SQLite holds {:?})",
                table.name,
                c.name,
                v.data_type()
            ))
        };
        if let ValueRef::Null = v {
            buf.extend_from_slice(&(-1i32).to_be_bytes());
            continue;
        }
        match c.ty {
            ColType::Uuid => {
                let ValueRef::Text(t) = v else { return Err(bad("not a uuid")) };
                let u = uuid::Uuid::try_parse_ascii(t).map_err(|_| bad("not a uuid"))?;
                put(buf, u.as_bytes());
            }
            ColType::Text | ColType::Numeric => match v {
                ValueRef::Text(t) => put(buf, t),
                ValueRef::Integer(n) => put(buf, n.to_string().as_bytes()),
                ValueRef::Real(f) => put(buf, f.to_string().as_bytes()),
                _ => return Err(bad("not text")),
            },
            ColType::Jsonb => {
                let ValueRef::Text(t) = v else { return Err(bad("not JSON text")) };
                buf.extend_from_slice(&(t.len() as i32 + 1).to_be_bytes());
                buf.push(1); // jsonb binary format version
                buf.extend_from_slice(t);
            }
            ColType::Timestamptz => {
                let ValueRef::Text(t) = v else { return Err(bad("not a timestamp")) };
                let s = std::str::from_utf8(t).map_err(|_| bad("not UTF-8"))?;
                let us = timestamp_micros(s).ok_or_else(|| bad("not a timestamp"))?;
                put(buf, &us.to_be_bytes());
            }
            ColType::Int => {
                let ValueRef::Integer(n) = v else { return Err(bad("not an integer")) };
                let n = i32::try_from(n).map_err(|_| bad("outside the 32-bit range"))?;
                put(buf, &n.to_be_bytes());
            }
            ColType::Bytea => match v {
                ValueRef::Blob(b) | ValueRef::Text(b) => put(buf, b),
                _ => return Err(bad("not bytes")),
            },
            ColType::Vector => {
                let ValueRef::Blob(b) = v else { return Err(bad("not a vector BLOB")) };
                if b.is_empty() || b.len() % 4 != 0 || b.len() / 4 > MAX_VECTOR_DIM {
                    return Err(bad("not a vector BLOB"));
                }
                // pgvector's binary form: int16 dimension, int16 unused, float4 big-endian each.
                buf.extend_from_slice(&(4 + b.len() as i32).to_be_bytes());
                buf.extend_from_slice(&((b.len() / 4) as i16).to_be_bytes());
                buf.extend_from_slice(&0i16.to_be_bytes());
                for f in b.chunks_exact(4) {
                    buf.extend_from_slice(&[f[3], f[2], f[1], f[0]]);
                }
            }
        }
    }
    Ok(())
}

/// pgvector's limit on a vector's dimension (as `schema` checks on input).
const MAX_VECTOR_DIM: usize = 16_000;

/// Days from 0001-01-01 (CE day 1) to 2000-01-01, PostgreSQL's epoch.
const PG_EPOCH_DAYS_FROM_CE: i64 = 730_120;

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` as microseconds since 2000-01-01 UTC (PostgreSQL's binary
/// timestamptz). Other RFC 3339 forms are accepted through chrono; sub-microsecond digits are not.
pub(crate) fn timestamp_micros(s: &str) -> Option<i64> {
    use chrono::Datelike;
    let b = s.as_bytes();
    let fixed = b.len() == 27
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'.'
        && b[26] == b'Z';
    if fixed {
        let num = |from: usize, to: usize| -> Option<i64> {
            b[from..to]
                .iter()
                .try_fold(0i64, |acc, &c| c.is_ascii_digit().then(|| acc * 10 + (c - b'0') as i64))
        };
        let (y, mo, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
        let (h, mi, se, us) = (num(11, 13)?, num(14, 16)?, num(17, 19)?, num(20, 26)?);
        if h < 24 && mi < 60 && se < 60 {
            let date = chrono::NaiveDate::from_ymd_opt(y as i32, mo as u32, d as u32)?;
            let days = date.num_days_from_ce() as i64 - PG_EPOCH_DAYS_FROM_CE;
            return Some(((days * 86_400 + h * 3_600 + mi * 60 + se) * 1_000_000) + us);
        }
    }
    let t = chrono::DateTime::parse_from_rfc3339(s).ok()?.with_timezone(&chrono::Utc);
    if chrono::Timelike::nanosecond(&t) % 1000 != 0 {
        return None;
    }
    let epoch = chrono::NaiveDate::from_ymd_opt(2000, 1, 1)?.and_hms_opt(0, 0, 0)?.and_utc();
    (t - epoch).num_microseconds()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_to_postgres_micros() {
        assert_eq!(timestamp_micros("2000-01-01T00:00:00.000000Z"), Some(0));
        assert_eq!(timestamp_micros("2000-01-01T00:00:01.000001Z"), Some(1_000_001));
        assert_eq!(timestamp_micros("1999-12-31T23:59:59.999999Z"), Some(-1));
        assert_eq!(
            timestamp_micros("2026-01-02T03:04:05.123456Z"),
            timestamp_micros("2026-01-02T05:04:05.123456+02:00")
        );
        assert_eq!(timestamp_micros("2026-02-30T00:00:00.000000Z"), None);
        assert_eq!(timestamp_micros("2026-01-02T03:04:05.1234567Z"), None);
        assert_eq!(timestamp_micros("yesterday"), None);
    }

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
