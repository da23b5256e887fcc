//! Verify: prove that SQLite and PostgreSQL hold the same rows; repair what differs.
//!
//! Per table, both stores are read in key order (SQLite in chunks, each from one short read
//! transaction; PostgreSQL through one cursor, binary results) by two threads. Every row is turned
//! into a canonical encoding, column by column, from the store's own representation:
//!
//! | type | canonical form |
//! | --- | --- |
//! | uuid | its 16 bytes |
//! | text, bytea (secrets too) | the bytes |
//! | jsonb | the parsed value re-serialised: each object as the sum of a keyed 128-bit hash per member (key and value together, so no sort), arrays in order, numbers as integers when integral (below 2^53) and otherwise as shortest round-trip `f64` (`1.5e0`): key order, whitespace and `1.0`/`1`/`1e0` never count |
//! | timestamptz | microseconds since 2000-01-01 UTC (PostgreSQL's own binary form) |
//! | numeric | the exact decimal, leading and trailing zeros removed: `12.50` = `12.5` (numeric equality), never a float |
//! | int | the integer |
//! | vector | the dimension and each component's `f32` bits (bit for bit: -0 is not 0) |
//!
//! A row's digest is SHA-256 of its encoding. A chunk is a run of `chunk_size` keys in SQLite's
//! order; its checksum (count + XOR of the digests) is compared with the checksum of PostgreSQL's
//! rows in the same key range; a differing chunk is then merged key by key into missing (in
//! SQLite, not PostgreSQL), extra (in PostgreSQL only) and different keys. Those keys are read again
//! from both stores (a few rounds, a short wait between them): a key that now matches was a change
//! passing by; a key that still differs while a change to it waits in the outbox is *in flight*,
//! not a difference; what is left is a difference, named with its columns (never values: secrets).

use crate::config::Config;
use crate::error::{Error, Result};
use crate::pg_connect::PgConfig;
use crate::schema::{ColType, Column, Table};
use crate::store::sqlite;
use canon::{canon_pg, canon_sqlite};
use postgres::types::{FromSql, Type};
use rusqlite::types::ValueRef;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet, VecDeque};
use std::io::Read;
use std::time::{Duration, Instant};

mod canon;

/// How to verify.
#[derive(Clone, Debug)]
pub struct VerifyOptions {
    /// Tables to verify (registry names); `None` = all 13.
    pub tables: Option<Vec<String>>,
    /// Keys per chunk.
    pub chunk_size: usize,
    /// How many times a differing key is read again before it is reported.
    pub recheck_rounds: u32,
    /// Wait between those reads (lets the replicator apply what is in flight).
    pub recheck_wait: Duration,
    /// At most this many keys are listed per table and category (all are counted).
    pub max_keys: usize,
    /// Store the result in `dualwrite.verify_runs`.
    pub record: bool,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            tables: None,
            chunk_size: 10_000,
            recheck_rounds: 3,
            recheck_wait: Duration::from_millis(300),
            max_keys: 1_000,
            record: true,
        }
    }
}

/// A key whose row differs, with the columns that differ.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct KeyDiff {
    pub key: String,
    pub columns: Vec<String>,
}

/// One table's result.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct TableResult {
    pub table: String,
    pub sqlite_rows: u64,
    pub postgres_rows: u64,
    pub chunks: u64,
    pub chunks_differing: u64,
    /// In SQLite, not in PostgreSQL.
    pub missing: Vec<String>,
    /// In PostgreSQL, not in SQLite.
    pub extra: Vec<String>,
    /// In both, with different values.
    pub different: Vec<KeyDiff>,
    /// Differing while a change to the row is still pending in the outbox.
    pub in_flight: Vec<String>,
    /// Missing + extra + different, counted in full (the lists stop at `max_keys`).
    pub differences: u64,
    pub in_flight_count: u64,
    pub truncated: bool,
    pub elapsed_ms: u64,
}

impl TableResult {
    pub fn ok(&self) -> bool {
        self.differences == 0
    }

    /// The keys to re-enqueue: missing, extra and different (not those in flight).
    pub fn keys_to_repair(&self) -> impl Iterator<Item = &str> {
        self.missing
            .iter()
            .chain(&self.extra)
            .map(String::as_str)
            .chain(self.different.iter().map(|d| d.key.as_str()))
    }
}

/// A verify run's result.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct VerifyReport {
    /// The `dualwrite.verify_runs` id, when recorded.
    pub id: Option<i64>,
    pub started_at: String,
    pub elapsed_ms: u64,
    pub ok: bool,
    /// Pending outbox records when the run started.
    pub outbox_depth: i64,
    pub tables: Vec<TableResult>,
    /// Changes made in PostgreSQL by others than the bridge while SQLite was the primary, as the
    /// change capture counted them (all time), and the newest of them: the likely cause of
    /// differences, named where they happened.
    #[serde(default)]
    pub foreign_writes: i64,
    #[serde(default)]
    pub recent_foreign: Vec<crate::capture::ForeignChange>,
}

impl VerifyReport {
    pub fn differences(&self) -> u64 {
        self.tables.iter().map(|t| t.differences).sum()
    }
    pub fn in_flight(&self) -> u64 {
        self.tables.iter().map(|t| t.in_flight_count).sum()
    }
    pub fn rows(&self) -> (u64, u64) {
        (self.tables.iter().map(|t| t.sqlite_rows).sum(), self.tables.iter().map(|t| t.postgres_rows).sum())
    }

    fn summary_line(&self) -> String {
        let (l, p) = self.rows();
        let secs = self.elapsed_ms as f64 / 1000.0;
        format!(
            "{}: {} difference(s), {} in flight; {l} SQLite rows, {p} PostgreSQL rows in {secs:.2} s ({:.0} rows/s per side)",
            if self.ok { "MATCH" } else { "DIFFERENT" },
            self.differences(),
            self.in_flight(),
            l.max(p) as f64 / secs.max(1e-9)
        )
    }

    /// A terminal table, then the located keys (at most 20 per list; `--json` has them all).
    pub fn render_text(&self) -> String {
        let mut out = format!(
            "{:<22} {:>10} {:>10} {:>7} {:>9} {:>8} {:>8} {:>9} {:>9}  result\n",
            "table", "sqlite", "postgres", "chunks", "differ", "missing", "extra", "different", "in flight"
        );
        for t in &self.tables {
            out.push_str(&format!(
                "{:<22} {:>10} {:>10} {:>7} {:>9} {:>8} {:>8} {:>9} {:>9}  {}\n",
                t.table,
                t.sqlite_rows,
                t.postgres_rows,
                t.chunks,
                t.chunks_differing,
                t.missing.len(),
                t.extra.len(),
                t.different.len(),
                t.in_flight_count,
                if t.ok() { "ok" } else { "DIFFERENT" }
            ));
        }
        for t in &self.tables {
            let show = |label: &str, keys: Vec<String>, out: &mut String| {
                for k in keys.iter().take(20) {
                    out.push_str(&format!("  {} {label}: {k}\n", t.table));
                }
                if keys.len() > 20 {
                    out.push_str(&format!(
                        "  {} {label}: … {} more (see --json)\n",
                        t.table,
                        keys.len() - 20
                    ));
                }
            };
            show("missing in postgres", t.missing.clone(), &mut out);
            show("extra in postgres", t.extra.clone(), &mut out);
            show(
                "different",
                t.different.iter().map(|d| format!("{} ({})", d.key, d.columns.join(", "))).collect(),
                &mut out,
            );
            show("in flight", t.in_flight.clone(), &mut out);
        }
        out.push_str(&self.foreign_lines());
        out.push_str(&self.summary_line());
        out.push('\n');
        out
    }

    /// The foreign writes the change capture saw, if any.
    fn foreign_lines(&self) -> String {
        if self.foreign_writes == 0 {
            return String::new();
        }
        let mut out = format!(
            "{} change(s) were made in PostgreSQL by others than the bridge while SQLite was the primary; newest:\n",
            self.foreign_writes
        );
        for f in &self.recent_foreign {
            out.push_str(&format!("  {} {} {} (committed {})\n", f.op, f.table, f.key, f.committed_at));
        }
        out
    }

    /// Markdown for the migration log and CI summaries.
    pub fn render_markdown(&self) -> String {
        let mut out = format!(
            "### dualwrite verify: {}\n\nStarted {}{}.\n\n| table | sqlite rows | postgres rows | chunks | chunks differing | missing | extra | different | in flight | result |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n",
            if self.ok { "match" } else { "**DIFFERENT**" },
            self.started_at,
            self.id.map(|i| format!(", run {i}")).unwrap_or_default()
        );
        for t in &self.tables {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                t.table,
                t.sqlite_rows,
                t.postgres_rows,
                t.chunks,
                t.chunks_differing,
                t.missing.len(),
                t.extra.len(),
                t.different.len(),
                t.in_flight_count,
                if t.ok() { "ok" } else { "**different**" }
            ));
        }
        let mut details = String::new();
        for t in &self.tables {
            for k in &t.missing {
                details.push_str(&format!("- `{}` `{k}`: missing in PostgreSQL\n", t.table));
            }
            for k in &t.extra {
                details.push_str(&format!("- `{}` `{k}`: extra in PostgreSQL\n", t.table));
            }
            for d in &t.different {
                details.push_str(&format!(
                    "- `{}` `{}`: different ({})\n",
                    t.table,
                    d.key,
                    d.columns.join(", ")
                ));
            }
            for k in &t.in_flight {
                details.push_str(&format!("- `{}` `{k}`: in flight (pending in the outbox)\n", t.table));
            }
        }
        if !details.is_empty() {
            out.push('\n');
            out.push_str(&details);
        }
        out.push_str(&format!("\n{}\n", self.summary_line()));
        out
    }
}

/// A row's digest (the first 16 bytes of SHA-256 of its canonical encoding).
type RowDigest = [u8; 16];
/// A chunk of (key, digest) in key order, and whether it is the table's last.
type LiteChunk = (Vec<(String, RowDigest)>, bool);
/// A located key: its kind of difference and the differing columns (`None`: equal now), and
/// whether a change to it waits in the outbox.
type KeyState = (String, Option<(Kind, Vec<String>)>, bool);

/// Verify the tables of `options` and (by default) record the result in PostgreSQL.
pub fn verify(config: &Config, options: &VerifyOptions) -> Result<VerifyReport> {
    if options.chunk_size == 0 {
        return Err(Error::invalid("chunk_size", "must be at least 1"));
    }
    let tables = crate::schema::select_tables(options.tables.as_deref())?;
    let pg = config.require_postgres()?.clone();
    let started_at = crate::schema::now_timestamp();
    let started = Instant::now();
    let lite = sqlite::open(&config.sqlite_path)?;
    let (outbox_depth, _) = sqlite::Outbox::depth(&lite)?;
    let foreign_writes = crate::capture::CaptureState::load(&lite)?.foreign_total;
    let recent_foreign = crate::capture::follow::foreign_changes(&lite, 20)?;
    let mut client = pg.connect()?;
    crate::migrate::require_bookkeeping(&mut client)?;
    let mut results = Vec::new();
    for t in tables {
        let t0 = Instant::now();
        let mut r = scan_table(&config.sqlite_path, &pg, t, options)?;
        let suspects = std::mem::take(&mut r.1);
        let mut result = r.0;
        recheck(&lite, &mut client, t, suspects, options, &mut result)?;
        result.elapsed_ms = t0.elapsed().as_millis() as u64;
        results.push(result);
    }
    let mut report = VerifyReport {
        id: None,
        started_at,
        elapsed_ms: started.elapsed().as_millis() as u64,
        ok: results.iter().all(TableResult::ok),
        outbox_depth,
        tables: results,
        foreign_writes,
        recent_foreign,
    };
    if options.record {
        report.id = Some(record(&mut client, &report)?);
    }
    Ok(report)
}

/// Check only the given keys of one table (after a repair), with the same rechecks.
pub fn verify_keys(
    config: &Config,
    table: &str,
    keys: &[String],
    options: &VerifyOptions,
) -> Result<TableResult> {
    let t = crate::schema::require_table(table)?;
    let pg = config.require_postgres()?;
    let lite = sqlite::open(&config.sqlite_path)?;
    let mut client = pg.connect()?;
    let started = Instant::now();
    let mut result = TableResult { table: t.name.to_string(), ..Default::default() };
    let suspects = keys.iter().map(|k| (k.clone(), Kind::Different)).collect();
    recheck(&lite, &mut client, t, suspects, options, &mut result)?;
    result.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(result)
}

fn record(client: &mut postgres::Client, report: &VerifyReport) -> Result<i64> {
    let json = serde_json::to_string(report).map_err(|e| Error::Internal(e.to_string()))?;
    let names: Vec<&str> = report.tables.iter().map(|t| t.table.as_str()).collect();
    let row = client.query_one(
        "INSERT INTO dualwrite.verify_runs (started_at, ok, tables, differences, in_flight, report)
         VALUES ($1::text::timestamptz, $2, $3, $4, $5, $6::text::jsonb) RETURNING id",
        &[
            &report.started_at,
            &report.ok,
            &names,
            &(report.differences() as i64),
            &(report.in_flight() as i64),
            &json,
        ],
    )?;
    let id: i64 = row.get(0);
    // Keep the stored report's id in step with its row.
    client.execute(
        "UPDATE dualwrite.verify_runs SET report = jsonb_set(report, '{id}', to_jsonb(id)) WHERE id = $1",
        &[&id],
    )?;
    Ok(id)
}

/// The newest recorded verify run (the phase guard rails refuse a cut-over when it failed).
pub fn last_run(client: &mut postgres::Client) -> Result<Option<VerifyReport>> {
    let row =
        client.query_opt("SELECT report::text FROM dualwrite.verify_runs ORDER BY id DESC LIMIT 1", &[])?;
    match row {
        None => Ok(None),
        Some(r) => {
            let text: String = r.get(0);
            serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| Error::Internal(format!("stored verify report: {e}")))
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Missing,
    Extra,
    Different,
}

/// Stream both stores in key order, compare chunk checksums, locate differing keys.
fn scan_table(
    path: &std::path::Path,
    pg: &PgConfig,
    table: &'static Table,
    options: &VerifyOptions,
) -> Result<(TableResult, Vec<(String, Kind)>)> {
    let n = options.chunk_size;
    let (lite_tx, lite_rx) = crossbeam_channel::bounded::<Result<LiteChunk>>(2);
    let (pg_tx, pg_rx) = crossbeam_channel::bounded::<Result<Vec<(String, RowDigest)>>>(2);
    std::thread::scope(|s| {
        // Owned by this closure, so an early return drops them and the readers stop sending.
        let (lite_rx, pg_rx) = (lite_rx, pg_rx);
        s.spawn(move || {
            if let Err(e) = stream_sqlite(path, table, n, &lite_tx) {
                let _ = lite_tx.send(Err(e));
            }
        });
        s.spawn(move || {
            if let Err(e) = stream_postgres(pg, table, n, &pg_tx) {
                let _ = pg_tx.send(Err(e));
            }
        });
        let mut result = TableResult { table: table.name.to_string(), ..Default::default() };
        let mut suspects: Vec<(String, Kind)> = Vec::new();
        let mut pg_buf: VecDeque<(String, RowDigest)> = VecDeque::new();
        let mut pg_done = false;
        // Receive until the PostgreSQL side has a key beyond `hi` (or ended).
        let mut fill = |hi: Option<&str>, pg_buf: &mut VecDeque<(String, RowDigest)>| -> Result<()> {
            while !pg_done && hi.is_none_or(|h| pg_buf.back().is_none_or(|(k, _)| k.as_str() <= h)) {
                match pg_rx.recv() {
                    Ok(batch) => pg_buf.extend(batch?),
                    Err(_) => pg_done = true,
                }
            }
            Ok(())
        };
        loop {
            let (rows, last) = match lite_rx.recv() {
                Ok(chunk) => chunk?,
                Err(_) => return Err(Error::Internal("the SQLite reader stopped early".into())),
            };
            let hi = if last { None } else { rows.last().map(|(k, _)| k.clone()) };
            fill(hi.as_deref(), &mut pg_buf)?;
            let take = match &hi {
                None => pg_buf.len(),
                Some(h) => pg_buf.iter().take_while(|(k, _)| k <= h).count(),
            };
            let theirs: Vec<(String, RowDigest)> = pg_buf.drain(..take).collect();
            result.chunks += 1;
            result.sqlite_rows += rows.len() as u64;
            result.postgres_rows += theirs.len() as u64;
            if checksum(&rows) != checksum(&theirs) {
                result.chunks_differing += 1;
                locate(&rows, &theirs, &mut suspects);
            }
            if last {
                break;
            }
        }
        Ok((result, suspects))
    })
}

/// Count + XOR of the row digests (each already covers its key).
fn checksum(rows: &[(String, RowDigest)]) -> (usize, RowDigest) {
    let mut x = [0u8; 16];
    for (_, d) in rows {
        for (a, b) in x.iter_mut().zip(d) {
            *a ^= b;
        }
    }
    (rows.len(), x)
}

/// Merge two key-sorted lists into the keys that differ.
fn locate(ours: &[(String, RowDigest)], theirs: &[(String, RowDigest)], out: &mut Vec<(String, Kind)>) {
    let (mut i, mut j) = (0, 0);
    while i < ours.len() || j < theirs.len() {
        match (ours.get(i), theirs.get(j)) {
            (Some(a), Some(b)) if a.0 == b.0 => {
                if a.1 != b.1 {
                    out.push((a.0.clone(), Kind::Different));
                }
                i += 1;
                j += 1;
            }
            (Some(a), Some(b)) if a.0 < b.0 => {
                out.push((a.0.clone(), Kind::Missing));
                i += 1;
            }
            (Some(_), Some(b)) => {
                out.push((b.0.clone(), Kind::Extra));
                j += 1;
            }
            (Some(a), None) => {
                out.push((a.0.clone(), Kind::Missing));
                i += 1;
            }
            (None, Some(b)) => {
                out.push((b.0.clone(), Kind::Extra));
                j += 1;
            }
            (None, None) => break,
        }
    }
}

fn digest(key: &str, buf: &[u8]) -> RowDigest {
    let mut h = Sha256::new();
    h.update((key.len() as u32).to_le_bytes());
    h.update(key.as_bytes());
    h.update(buf);
    let d = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&d[..16]);
    out
}

/// The digest `verify` computes for one SQLite row, `values` in `table.columns` order (as
/// `stream_sqlite` selects them): canonical encoding, then SHA-256. For benches/hot_paths.rs.
pub fn sqlite_row_digest(table: &Table, values: &[ValueRef<'_>]) -> [u8; 16] {
    let mut buf = Vec::with_capacity(1024);
    for (c, v) in table.columns.iter().zip(values) {
        canon_sqlite(c, *v, &mut buf);
    }
    let key = match values.get(table.columns.iter().position(|c| c.name == table.key).unwrap_or(0)) {
        Some(ValueRef::Text(t)) => String::from_utf8_lossy(t).into_owned(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    };
    digest(&key, &buf)
}

/// SQLite's own ceiling for `mmap_size` (SQLITE_MAX_MMAP_SIZE's default); a larger value is cut to it.
const MMAP_SIZE: i64 = 0x7fff_0000;

fn stream_sqlite(
    path: &std::path::Path,
    table: &'static Table,
    n: usize,
    tx: &crossbeam_channel::Sender<Result<LiteChunk>>,
) -> Result<()> {
    let mut conn = sqlite::open(path)?;
    // Pages read through a memory map instead of a `read()` copy each (the file's first 2 GB, the
    // most SQLite maps; the rest as before). This connection only reads.
    conn.pragma_update(None, "mmap_size", MMAP_SIZE)?;
    let cols = table.column_names().collect::<Vec<_>>().join(", ");
    let first = format!("SELECT {cols} FROM {t} ORDER BY {k} LIMIT ?1", t = table.name, k = table.key);
    let next =
        format!("SELECT {cols} FROM {t} WHERE {k} > ?1 ORDER BY {k} LIMIT ?2", t = table.name, k = table.key);
    let key_index = table.columns.iter().position(|c| c.name == table.key).unwrap_or(0);
    let mut after: Option<String> = None;
    let mut buf = Vec::with_capacity(1024);
    loop {
        let mut rows_out = Vec::with_capacity(n.min(100_000));
        {
            let t = conn.transaction()?;
            {
                let mut stmt = t.prepare_cached(if after.is_some() { &next } else { &first })?;
                let mut rows = match &after {
                    Some(k) => stmt.query(rusqlite::params![k, n as i64])?,
                    None => stmt.query([n as i64])?,
                };
                while let Some(r) = rows.next()? {
                    buf.clear();
                    for (i, c) in table.columns.iter().enumerate() {
                        canon_sqlite(c, r.get_ref(i)?, &mut buf);
                    }
                    let key = match r.get_ref(key_index)? {
                        ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                        other => format!("{other:?}"),
                    };
                    let d = digest(&key, &buf);
                    rows_out.push((key, d));
                }
            }
            t.commit()?;
        }
        let last = rows_out.len() < n;
        after = rows_out.last().map(|(k, _)| k.clone());
        if tx.send(Ok((rows_out, last))).is_err() || last {
            return Ok(());
        }
    }
}

/// The select list for PostgreSQL: columns in registry order, numeric as text.
fn pg_select(table: &Table) -> String {
    table
        .columns
        .iter()
        .map(|c| match c.ty {
            ColType::Numeric => format!("{n}::text AS {n}", n = c.name),
            _ => c.name.to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The key order both stores share: uuid bytes = lower-case hex text; text keys in byte order.
fn pg_order(table: &Table) -> String {
    match table.key_column().ty {
        ColType::Uuid => table.key.to_string(),
        _ => format!("{} COLLATE \"C\"", table.key),
    }
}

fn stream_postgres(
    pg: &PgConfig,
    table: &'static Table,
    n: usize,
    tx: &crossbeam_channel::Sender<Result<Vec<(String, RowDigest)>>>,
) -> Result<()> {
    let mut client = pg.connect()?;
    // One binary COPY out of the ordered select: the server keeps sending while this thread
    // encodes, and each field arrives in the same binary form a binary-result query gives (so
    // `canon_pg` reads it the same), without a `Row` (and its allocations) per row.
    let sql = format!(
        "COPY (SELECT {} FROM public.{} ORDER BY {}) TO STDOUT (FORMAT binary)",
        pg_select(table),
        table.name,
        pg_order(table)
    );
    let mut reader = std::io::BufReader::with_capacity(256 * 1024, client.copy_out(sql.as_str())?);
    let bad = |what: &str| Error::Internal(format!("verify: COPY from {}: {what}", table.name));
    let mut head = [0u8; 19];
    reader.read_exact(&mut head)?;
    if &head[..11] != b"PGCOPY\n\xff\r\n\0" {
        return Err(bad("not a binary COPY stream"));
    }
    let ext = u32::from_be_bytes([head[15], head[16], head[17], head[18]]) as u64;
    std::io::copy(&mut (&mut reader).take(ext), &mut std::io::sink())?;
    let key_index = table.columns.iter().position(|c| c.name == table.key).unwrap_or(0);
    let mut buf = Vec::with_capacity(1024);
    // The tuple's fields, one after another, and where each is (None: NULL).
    let mut fields: Vec<u8> = Vec::with_capacity(4096);
    let mut spans: Vec<Option<std::ops::Range<usize>>> = Vec::with_capacity(table.columns.len());
    let mut out = Vec::with_capacity(n.min(100_000));
    loop {
        let mut count = [0u8; 2];
        reader.read_exact(&mut count)?;
        let count = i16::from_be_bytes(count);
        if count == -1 {
            break;
        }
        if count as usize != table.columns.len() {
            return Err(bad("a tuple with another number of fields"));
        }
        fields.clear();
        spans.clear();
        for _ in 0..count {
            let mut len = [0u8; 4];
            reader.read_exact(&mut len)?;
            let len = i32::from_be_bytes(len);
            if len < 0 {
                spans.push(None);
                continue;
            }
            let at = fields.len();
            fields.resize(at + len as usize, 0);
            reader.read_exact(&mut fields[at..])?;
            spans.push(Some(at..fields.len()));
        }
        buf.clear();
        let mut key = String::new();
        for (i, (c, span)) in table.columns.iter().zip(&spans).enumerate() {
            let raw = span.clone().map(|r| &fields[r]);
            if i == key_index {
                key = pg_key_text(c, raw);
            }
            canon_pg(c, raw, &mut buf);
        }
        let d = digest(&key, &buf);
        out.push((key, d));
        if out.len() == n
            && tx.send(Ok(std::mem::replace(&mut out, Vec::with_capacity(n.min(100_000))))).is_err()
        {
            return Ok(());
        }
    }
    if !out.is_empty() {
        let _ = tx.send(Ok(out));
    }
    Ok(())
}

fn pg_key_text(c: &Column, raw: Option<&[u8]>) -> String {
    match (c.ty, raw) {
        (ColType::Uuid, Some(b)) => match uuid::Uuid::from_slice(b) {
            // Written into a stack buffer: no formatting machinery per row.
            Ok(u) => u.hyphenated().encode_lower(&mut uuid::Uuid::encode_buffer()).to_owned(),
            Err(_) => hex::encode(b),
        },
        (_, Some(b)) => String::from_utf8_lossy(b).into_owned(),
        (_, None) => String::new(),
    }
}

/// Any value in PostgreSQL's binary form, undecoded.
struct Raw<'a>(&'a [u8]);

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(
        _: &Type,
        raw: &'a [u8],
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(raw))
    }
    fn accepts(_: &Type) -> bool {
        true
    }
}

// ----- rechecking located keys -----

/// Per-column canonical encodings of some rows, by key.
type Rows = HashMap<String, Vec<Vec<u8>>>;

fn read_sqlite_keys(
    conn: &rusqlite::Connection,
    table: &Table,
    keys: &[String],
) -> Result<(Rows, HashSet<String>)> {
    let cols = table.column_names().collect::<Vec<_>>().join(", ");
    let key_index = table.columns.iter().position(|c| c.name == table.key).unwrap_or(0);
    let mut out = Rows::new();
    let t = conn.unchecked_transaction()?;
    for batch in keys.chunks(500) {
        let marks = (1..=batch.len()).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ");
        let sql = format!("SELECT {cols} FROM {} WHERE {} IN ({marks})", table.name, table.key);
        let mut stmt = t.prepare(&sql)?;
        let mut rows = stmt.query(rusqlite::params_from_iter(batch.iter()))?;
        while let Some(r) = rows.next()? {
            let mut per = Vec::with_capacity(table.columns.len());
            for (i, c) in table.columns.iter().enumerate() {
                let mut b = Vec::new();
                canon_sqlite(c, r.get_ref(i)?, &mut b);
                per.push(b);
            }
            let key = match r.get_ref(key_index)? {
                ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                other => format!("{other:?}"),
            };
            out.insert(key, per);
        }
    }
    // Keys with a change waiting in the outbox (read in the same snapshot as the rows).
    let mut pending = HashSet::new();
    let mut stmt =
        t.prepare_cached("SELECT DISTINCT row_key FROM _dualwrite_outbox WHERE table_name = ?1")?;
    let mut rows = stmt.query([table.name])?;
    while let Some(r) = rows.next()? {
        pending.insert(r.get::<_, String>(0)?);
    }
    drop(rows);
    drop(stmt);
    t.commit()?;
    Ok((out, pending))
}

fn read_postgres_keys(client: &mut postgres::Client, table: &Table, keys: &[String]) -> Result<Rows> {
    let key_cast = match table.key_column().ty {
        ColType::Uuid => "::text[]::uuid[]",
        _ => "::text[]",
    };
    let sql = format!(
        "SELECT {} FROM public.{} WHERE {} = ANY($1{key_cast})",
        pg_select(table),
        table.name,
        table.key
    );
    let key_index = table.columns.iter().position(|c| c.name == table.key).unwrap_or(0);
    let mut out = Rows::new();
    // Only well-formed keys can be asked for as uuids; others cannot be in PostgreSQL anyway.
    let asked: Vec<&String> = keys
        .iter()
        .filter(|k| table.key_column().ty != ColType::Uuid || uuid::Uuid::try_parse(k).is_ok())
        .collect();
    for batch in asked.chunks(1000) {
        let batch: Vec<&str> = batch.iter().map(|s| s.as_str()).collect();
        for row in client.query(&sql, &[&batch])? {
            let mut per = Vec::with_capacity(table.columns.len());
            let mut key = String::new();
            for (i, c) in table.columns.iter().enumerate() {
                let raw: Option<Raw<'_>> = row.try_get(i)?;
                let raw = raw.map(|r| r.0);
                if i == key_index {
                    key = pg_key_text(c, raw);
                }
                let mut b = Vec::new();
                canon_pg(c, raw, &mut b);
                per.push(b);
            }
            out.insert(key, per);
        }
    }
    Ok(out)
}

/// Read the suspects again (a few rounds) and fill the result's lists.
fn recheck(
    lite: &rusqlite::Connection,
    client: &mut postgres::Client,
    table: &Table,
    suspects: Vec<(String, Kind)>,
    options: &VerifyOptions,
    result: &mut TableResult,
) -> Result<()> {
    let mut keys: Vec<String> = suspects.into_iter().map(|(k, _)| k).collect();
    let rounds = options.recheck_rounds.max(1);
    let mut final_state: Vec<KeyState> = Vec::new();
    for round in 1..=rounds {
        if keys.is_empty() {
            break;
        }
        if round > 1 {
            std::thread::sleep(options.recheck_wait);
        }
        let (ours, pending) = read_sqlite_keys(lite, table, &keys)?;
        let theirs = read_postgres_keys(client, table, &keys)?;
        let mut still = Vec::new();
        final_state.clear();
        for k in keys {
            let state = match (ours.get(&k), theirs.get(&k)) {
                (None, None) => None,
                (Some(_), None) => Some((Kind::Missing, Vec::new())),
                (None, Some(_)) => Some((Kind::Extra, Vec::new())),
                (Some(a), Some(b)) => {
                    let cols: Vec<String> = table
                        .columns
                        .iter()
                        .zip(a.iter().zip(b))
                        .filter(|(_, (x, y))| x != y)
                        .map(|(c, _)| c.name.to_string())
                        .collect();
                    (!cols.is_empty()).then_some((Kind::Different, cols))
                }
            };
            if state.is_some() {
                let in_flight = pending.contains(&k);
                final_state.push((k.clone(), state, in_flight));
                still.push(k);
            }
        }
        keys = still;
    }
    for (key, state, in_flight) in final_state {
        let Some((kind, cols)) = state else { continue };
        if in_flight {
            result.in_flight_count += 1;
            if result.in_flight.len() < options.max_keys {
                result.in_flight.push(key);
            } else {
                result.truncated = true;
            }
            continue;
        }
        result.differences += 1;
        let listed = result.missing.len() + result.extra.len() + result.different.len();
        if listed >= options.max_keys {
            result.truncated = true;
            continue;
        }
        match kind {
            Kind::Missing => result.missing.push(key),
            Kind::Extra => result.extra.push(key),
            Kind::Different => result.different.push(KeyDiff { key, columns: cols }),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locate_names_missing_extra_and_different() {
        let r = |k: &str, d: u8| (k.to_string(), [d; 16]);
        let mut out = Vec::new();
        locate(&[r("a", 1), r("b", 1), r("d", 1)], &[r("b", 2), r("c", 1), r("d", 1), r("e", 1)], &mut out);
        assert_eq!(
            out,
            vec![
                ("a".into(), Kind::Missing),
                ("b".into(), Kind::Different),
                ("c".into(), Kind::Extra),
                ("e".into(), Kind::Extra)
            ]
        );
    }
}
