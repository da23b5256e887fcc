//! Chunks read on several threads: the planner cuts the table into consecutive key ranges of
//! `chunk_size` rows (an index-only scan of the key), readers turn ranges into chunks, each from
//! its own SQLite snapshot on its own connection, and [`InOrder`] hands the chunks on in key
//! order, so the workers still commit them one after the other and the checkpoint still marks a
//! prefix of the table.
//!
//! Why a range read from its own snapshot keeps the guard's promises: every row of the range that
//! exists at the chunk's snapshot `S` is read from that snapshot and applied with revision `S`,
//! as before; a row inserted into the range after `S` has a change above `S` in the outbox and
//! reaches PostgreSQL through the replicator, exactly like a row inserted behind the checkpoint of
//! the one-reader loop. Snapshots no longer grow with the chunk index (a reader may take its
//! snapshot before the previous range's reader), which nothing relies on: the claim, the direct
//! path and the tombstone check are per chunk and per key, and ranges share no key.
//!
//! The last range has no upper end; it is read with a `LIMIT` of one chunk, so rows appended to
//! the table meanwhile (time-ordered keys) cannot make it larger than a chunk. When it comes back
//! full, the planner goes on from its last key.

use super::{row_key, Chunk};
use crate::backfill::ApplyMethod;
use crate::error::{Error, Result};
use crate::legacy::ColumnRules;
use crate::schema::Table;
use crate::store::sqlite::Outbox;
use rusqlite::types::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// One chunk to read: the rows with keys in `(after, upto]`.
pub(super) struct KeyRange {
    /// Position in the pipeline run: the chunk commits in this order.
    pub index: u64,
    /// The last key of the previous range (`None`: from the first row).
    pub after: Option<String>,
    /// The last key of this range; `None` for the table's tail, read with a `LIMIT` of one chunk.
    pub upto: Option<String>,
}

/// The key `n` rows after `after` (the inclusive upper end of the next range), or `None` when
/// fewer than `n` rows are left. Reads only the key's index.
pub(super) fn next_boundary(
    lite: &rusqlite::Connection,
    table: &Table,
    after: Option<&str>,
    n: usize,
) -> Result<Option<String>> {
    let (filter, params) = match after {
        Some(k) => (format!("WHERE {} > ?2", table.key), vec![Value::Text(k.to_string())]),
        None => (String::new(), vec![]),
    };
    let sql =
        format!("SELECT {k} FROM {t} {filter} ORDER BY {k} LIMIT 1 OFFSET ?1", k = table.key, t = table.name);
    let mut stmt = lite.prepare_cached(&sql)?;
    let mut all = vec![Value::Integer(n as i64 - 1)];
    all.extend(params);
    let mut rows = stmt.query(rusqlite::params_from_iter(all))?;
    match rows.next()? {
        Some(r) => Ok(Some(key_text(table, r.get_ref(0)?)?)),
        None => Ok(None),
    }
}

fn key_text(table: &Table, v: rusqlite::types::ValueRef<'_>) -> Result<String> {
    use rusqlite::types::ValueRef;
    match v {
        ValueRef::Text(t) => Ok(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Integer(n) => Ok(n.to_string()),
        other => Err(Error::Internal(format!("{}: key of type {:?}", table.name, other.data_type()))),
    }
}

/// What every reader of one table's pipeline shares.
pub(super) struct ReaderCtx<'a> {
    pub sqlite_path: PathBuf,
    pub table: &'static Table,
    pub rules: &'a ColumnRules,
    pub method: ApplyMethod,
    /// Rows per chunk (the tail's `LIMIT`).
    pub chunk_size: usize,
    /// The direct path is wanted (`BackfillOptions::direct`).
    pub direct: bool,
}

/// A reader thread: its own read-only SQLite connection; reads the ranges it is given and sends
/// each chunk (or the error that stopped it, after which it stops).
pub(super) fn reader(
    ctx: &ReaderCtx<'_>,
    ranges: &crossbeam_channel::Receiver<KeyRange>,
    out: &crossbeam_channel::Sender<Result<Chunk>>,
) {
    let mut lite = match super::open_reader(&ctx.sqlite_path) {
        Ok(c) => c,
        Err(e) => {
            let _ = out.send(Err(e));
            return;
        }
    };
    for range in ranges.iter() {
        let chunk = read_range(&mut lite, ctx, &range);
        let failed = chunk.is_err();
        if out.send(chunk).is_err() || failed {
            return;
        }
    }
}

/// Read the rows of `range` from one SQLite snapshot, with its high-water mark, each converted by
/// the rules, and mark which of them may take the direct path.
pub(super) fn read_range(
    lite: &mut rusqlite::Connection,
    ctx: &ReaderCtx<'_>,
    range: &KeyRange,
) -> Result<Chunk> {
    let table = ctx.table;
    let mut conditions = Vec::new();
    let mut params = Vec::new();
    if let Some(k) = &range.after {
        params.push(Value::Text(k.clone()));
        conditions.push(format!("{} > ?{}", table.key, params.len()));
    }
    if let Some(k) = &range.upto {
        params.push(Value::Text(k.clone()));
        conditions.push(format!("{} <= ?{}", table.key, params.len()));
    }
    let mut sql =
        format!("SELECT {} FROM {}", table.column_names().collect::<Vec<_>>().join(", "), table.name);
    if !conditions.is_empty() {
        sql.push_str(&format!(" WHERE {}", conditions.join(" AND ")));
    }
    sql.push_str(&format!(" ORDER BY {}", table.key));
    if range.upto.is_none() {
        params.push(Value::Integer(ctx.chunk_size as i64));
        sql.push_str(&format!(" LIMIT ?{}", params.len()));
    }
    let method = ctx.method;
    let plain = super::plain::PlainRows::new(table, ctx.rules);
    // Deferred: the snapshot starts at the first read, which is the high-water mark.
    let tx = lite.transaction()?;
    let snapshot = Outbox::last_seq(&tx)?;
    let mut chunk = Chunk::new(method, snapshot, ctx.chunk_size.min(100_000));
    chunk.index = range.index;
    {
        let mut stmt = tx.prepare_cached(&sql)?;
        let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
        while let Some(r) = rows.next()? {
            let key = row_key(table, r)?;
            chunk.add(table, method, r, key, ctx.rules, plain.as_ref());
        }
    }
    chunk.finish(method);
    match &range.upto {
        // Every row up to the range's end was read (some may have been deleted since the cut):
        // the checkpoint moves to the end, and the table goes on after it.
        Some(end) => {
            chunk.last_key = Some(end.clone());
            chunk.last = false;
        }
        None => chunk.last = chunk.rows_read < ctx.chunk_size,
    }
    // The direct path, from the same snapshot: only while SQLite is the primary (PostgreSQL-
    // first writes are not the replicator's, see `copy_direct`), and never for a row whose
    // key still has a change in the outbox at or below S: applied later with its own (lower)
    // revision, that change would replace the snapshot's newer row for a moment.
    chunk.direct =
        method == ApplyMethod::Copy && ctx.direct && !crate::flags::stored_write_mode(&tx)?.postgres_first();
    chunk.claim = vec![!chunk.direct; chunk.keys.len()];
    if chunk.direct && !chunk.keys.is_empty() {
        // The outbox is kept short (the throttle pauses past max_outbox_depth), so one scan of
        // this table's pending keys per chunk is cheap; usually it is empty.
        let mut stmt = tx.prepare_cached("SELECT row_key FROM _dualwrite_outbox WHERE table_name = ?1")?;
        let mut rows = stmt.query([table.name])?;
        let mut pending = std::collections::HashSet::new();
        while let Some(r) = rows.next()? {
            pending.insert(r.get::<_, String>(0)?);
        }
        if !pending.is_empty() {
            for (claim, key) in chunk.claim.iter_mut().zip(&chunk.keys) {
                *claim = pending.contains(key);
            }
        }
    }
    tx.commit()?;
    Ok(chunk)
}

/// Chunks arrive from the readers in any order and leave in index order.
#[derive(Default)]
pub(super) struct InOrder {
    next: u64,
    waiting: BTreeMap<u64, Chunk>,
}

impl InOrder {
    pub fn push(&mut self, chunk: Chunk) {
        self.waiting.insert(chunk.index, chunk);
    }

    /// The next chunk in index order, once it has arrived.
    pub fn pop(&mut self) -> Option<Chunk> {
        let chunk = self.waiting.remove(&self.next)?;
        self.next += 1;
        Some(chunk)
    }

    /// Chunks handed on so far (the index of the next one).
    pub fn handed_on(&self) -> u64 {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(index: u64) -> Chunk {
        let mut c = Chunk::new(ApplyMethod::Copy, 0, 1);
        c.index = index;
        c
    }

    #[test]
    fn chunks_leave_in_index_order_whatever_order_they_arrive_in() {
        let mut q = InOrder::default();
        q.push(chunk(2));
        q.push(chunk(1));
        assert!(q.pop().is_none(), "chunk 0 has not arrived");
        q.push(chunk(0));
        let order: Vec<u64> = std::iter::from_fn(|| q.pop()).map(|c| c.index).collect();
        assert_eq!(order, [0, 1, 2]);
        assert_eq!(q.handed_on(), 3);
    }

    #[test]
    fn boundaries_cut_the_key_order_into_chunks_of_n() {
        let lite = rusqlite::Connection::open_in_memory().unwrap();
        let table = crate::schema::table("job_logs").unwrap();
        lite.execute_batch(&format!("CREATE TABLE {} ({} TEXT PRIMARY KEY)", table.name, table.key)).unwrap();
        for i in 0..25 {
            lite.execute(&format!("INSERT INTO {} VALUES (?1)", table.name), [format!("k{i:03}")]).unwrap();
        }
        let first = next_boundary(&lite, table, None, 10).unwrap();
        assert_eq!(first.as_deref(), Some("k009"));
        let second = next_boundary(&lite, table, first.as_deref(), 10).unwrap();
        assert_eq!(second.as_deref(), Some("k019"));
        assert_eq!(next_boundary(&lite, table, second.as_deref(), 10).unwrap(), None, "5 rows left");
        assert_eq!(next_boundary(&lite, table, Some("k014"), 10).unwrap().as_deref(), Some("k024"));
    }

    /// Rows inserted after the cut: inside a range they are read with it (nothing falls between two
    /// ranges); past the last cut, the tail still reads one chunk at most and says it is not last.
    #[test]
    fn a_range_reads_what_its_snapshot_holds_and_the_tail_at_most_a_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ranges.sqlite3");
        let mut lite = crate::store::sqlite::open(&path).unwrap();
        crate::migrate_sqlite(&mut lite).unwrap();
        let table = crate::schema::table("wordstat_cache").unwrap();
        let insert = |lite: &rusqlite::Connection, key: &str| {
            lite.execute(
                "INSERT INTO wordstat_cache (cache_key, value, expires_at) VALUES (?1, '{}', '2030-01-01T00:00:00.000000Z')",
                [key],
            )
            .unwrap();
        };
        for i in 0..6 {
            insert(&lite, &format!("k{i}0"));
        }
        let upto = next_boundary(&lite, table, None, 3).unwrap();
        assert_eq!(upto.as_deref(), Some("k20"));
        insert(&lite, "k05"); // inside the first range, after the cut
        insert(&lite, "k95"); // past the end: the tail now holds four rows
        let rules = ColumnRules::new(table, &crate::legacy::Overrides::none());
        let ctx = ReaderCtx {
            sqlite_path: path.clone(),
            table,
            rules: &rules,
            method: ApplyMethod::Copy,
            chunk_size: 3,
            direct: true,
        };
        let mut reader = super::super::open_reader(&path).unwrap();
        let first =
            read_range(&mut reader, &ctx, &KeyRange { index: 0, after: None, upto: upto.clone() }).unwrap();
        assert_eq!(first.keys, ["k00", "k05", "k10", "k20"]);
        assert_eq!((first.last_key.as_deref(), first.last), (Some("k20"), false));
        assert!(first.direct && first.claim.iter().all(|c| !c), "no change touched these keys");
        let tail = read_range(&mut reader, &ctx, &KeyRange { index: 1, after: upto, upto: None }).unwrap();
        assert_eq!(tail.keys, ["k30", "k40", "k50"]);
        assert_eq!((tail.last_key.as_deref(), tail.last), (Some("k50"), false), "a full tail is not the end");
        let rest = KeyRange { index: 2, after: Some("k50".into()), upto: None };
        let end = read_range(&mut reader, &ctx, &rest).unwrap();
        assert_eq!((end.keys.as_slice(), end.last), (&["k95".to_string()][..], true));
    }
}
