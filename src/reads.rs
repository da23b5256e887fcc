//! Where a read is served from, by the read-source flag: SQLite, PostgreSQL (with
//! read-your-writes and a fallback to SQLite), or shadow (serve SQLite, compare PostgreSQL in the
//! background).
//!
//! Read-your-writes, across processes: a read meant for PostgreSQL is served from SQLite while
//! the shared outbox (or the dead letters) holds a change of the row it asks for — or, for a list,
//! of any row of its table — whichever process on the file made that change. A change leaves the
//! outbox only after PostgreSQL committed it, so a read served by PostgreSQL is never older than
//! SQLite's committed state for what it reads. The check is one probe of an index on
//! `(table_name, row_key)` (SQLite migration 0006); with an empty outbox it finds nothing at once.

use crate::error::{Error, Result};
use crate::pg_connect::PgConfig;
use crate::schema::{self, ColType, Row, Table};
use crate::store::outbox::Outbox;
use crate::store::sqlite::{self, Rows};
use crate::store::{postgres, MAX_LIST_BYTES};
use crossbeam_channel::{Receiver, Sender, TrySendError};
use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Idle PostgreSQL connections kept for reads.
/// PostgreSQL connections the reads of one bridge share (r2d2: see `store::pg_pool`).
const READ_POOL_SIZE: u32 = 8;
/// Shadow comparisons waiting for the background worker; more are dropped (and counted).
const SHADOW_QUEUE: usize = 1024;
/// How long a shadow comparison waits for replication to catch up with the read it checks.
const SHADOW_WAIT: Duration = Duration::from_secs(2);

/// Per-table read counters, shown by `status`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ReadCounters {
    pub sqlite: u64,
    pub postgres: u64,
    /// Reads meant for PostgreSQL served from SQLite because a change to what they read (the row;
    /// for a list, its table) had not reached PostgreSQL yet, whichever process made it.
    #[serde(alias = "own_writes_from_sqlite")]
    pub pending_from_sqlite: u64,
    /// Reads meant for PostgreSQL served from SQLite because PostgreSQL failed.
    pub fallbacks: u64,
    pub shadow_matches: u64,
    pub shadow_mismatches: u64,
    /// Shadow checks skipped: the row changed meanwhile, replication lagged, or the queue was full.
    pub shadow_skipped: u64,
}

/// What a read asks for.
#[derive(Clone, Debug)]
pub(crate) enum ReadSpec {
    Key(String),
    List {
        filters: Vec<(&'static str, Value)>,
        order_by: Vec<&'static str>,
        desc: bool,
        limit: i64,
        offset: i64,
    },
    /// A typed filter each store renders itself: for the reads plain equality cannot express.
    Filter(crate::schema::Filter),
}

struct ShadowJob {
    table: &'static Table,
    spec: ReadSpec,
    served: Vec<Row>,
    /// The newest outbox number when the read was served: compare once PostgreSQL has it.
    seen_seq: i64,
}

pub(crate) struct ReadRouter {
    pg: Option<PgConfig>,
    pool: Option<crate::store::pg_pool::PgPool>,
    counters: Arc<Mutex<BTreeMap<&'static str, ReadCounters>>>,
    shadow: Sender<ShadowJob>,
    last_fallback_log: Mutex<Option<Instant>>,
}

impl ReadRouter {
    pub(crate) fn new(pg: Option<PgConfig>, sqlite_path: std::path::PathBuf) -> Arc<ReadRouter> {
        let (tx, rx) = crossbeam_channel::bounded(SHADOW_QUEUE);
        let counters = Arc::new(Mutex::new(BTreeMap::new()));
        let router = Arc::new(ReadRouter {
            pg: pg.clone(),
            pool: pg.as_ref().map(|p| crate::store::pg_pool::new_pool(p, READ_POOL_SIZE)),
            counters: counters.clone(),
            shadow: tx,
            last_fallback_log: Mutex::new(None),
        });
        if let Some(pg) = pg {
            let _ = std::thread::Builder::new()
                .name("dualwrite-shadow".into())
                .spawn(move || shadow_worker(rx, pg, sqlite_path, counters));
        }
        router
    }

    pub(crate) fn counters(&self) -> BTreeMap<String, ReadCounters> {
        let c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        c.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    fn count(&self, table: &'static str, f: impl FnOnce(&mut ReadCounters)) {
        let mut c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        f(c.entry(table).or_default());
    }

    /// Serve a read according to `source`.
    pub(crate) fn read(
        &self,
        source: crate::flags::ReadSource,
        table: &'static Table,
        spec: ReadSpec,
        sqlite: &rusqlite::Connection,
    ) -> Result<Vec<Row>> {
        use crate::flags::ReadSource;
        match source {
            ReadSource::Sqlite => {
                self.count(table.name, |c| c.sqlite += 1);
                read_sqlite(table, &spec, sqlite)
            }
            ReadSource::Shadow => {
                let seen_seq = Outbox::last_seq(sqlite)?;
                let served = read_sqlite(table, &spec, sqlite)?;
                self.count(table.name, |c| c.sqlite += 1);
                if self.pg.is_some() {
                    let job = ShadowJob { table, spec, served: served.clone(), seen_seq };
                    if let Err(TrySendError::Full(_)) = self.shadow.try_send(job) {
                        self.count(table.name, |c| c.shadow_skipped += 1);
                    }
                }
                Ok(served)
            }
            ReadSource::Postgres => {
                let key = match &spec {
                    ReadSpec::Key(k) => Some(k.as_str()),
                    ReadSpec::List { .. } | ReadSpec::Filter(..) => None,
                };
                if Outbox::holds_unapplied(sqlite, table.name, key)? {
                    self.count(table.name, |c| c.pending_from_sqlite += 1);
                    return read_sqlite(table, &spec, sqlite);
                }
                match self.read_postgres(table, &spec) {
                    Ok(rows) => {
                        self.count(table.name, |c| c.postgres += 1);
                        Ok(rows)
                    }
                    // The caller's to fix (a list past `MAX_LIST_BYTES`): SQLite would say the same.
                    Err(e @ crate::Error::InvalidArgument { .. }) => Err(e),
                    Err(e) => {
                        self.count(table.name, |c| c.fallbacks += 1);
                        self.log_fallback(&e);
                        read_sqlite(table, &spec, sqlite)
                    }
                }
            }
        }
    }

    /// A read while SQLite is frozen (write_mode `postgres`): PostgreSQL or an error, never a
    /// fallback to SQLite's old rows.
    pub(crate) fn read_primary(&self, table: &'static Table, spec: &ReadSpec) -> Result<Vec<Row>> {
        match self.read_postgres(table, spec) {
            Ok(rows) => {
                self.count(table.name, |c| c.postgres += 1);
                Ok(rows)
            }
            Err(e) => Err(crate::Error::Unavailable(format!(
                "PostgreSQL, the only store written in write_mode postgres, is unreachable: {e}"
            ))),
        }
    }

    fn log_fallback(&self, e: &crate::Error) {
        let mut last = self.last_fallback_log.lock().unwrap_or_else(|p| p.into_inner());
        // One line per 10 s at most: a dead PostgreSQL must not flood the monolith's logs.
        if last.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
            tracing::warn!(error = %e, "PostgreSQL read failed; serving reads from SQLite");
            *last = Some(Instant::now());
        }
    }

    fn read_postgres(&self, table: &'static Table, spec: &ReadSpec) -> Result<Vec<Row>> {
        let Some(pool) = &self.pool else {
            return Err(crate::Error::Config(
                "read_source is postgres but no PostgreSQL is configured".into(),
            ));
        };
        let mut client = crate::store::pg_pool::get(pool, "PostgreSQL is unreachable for reads")?;
        read_pg(&mut client, table, spec)
    }
}

fn read_sqlite(table: &'static Table, spec: &ReadSpec, sqlite: &rusqlite::Connection) -> Result<Vec<Row>> {
    match spec {
        ReadSpec::Key(k) => Ok(sqlite.get_row(table, k)?.into_iter().collect()),
        ReadSpec::List { filters, order_by, desc, limit, offset } => {
            ListQuery::from_parts(filters.clone(), order_by.clone(), *desc, *limit, *offset)
                .run(table, sqlite)
        }
        ReadSpec::Filter(filter) => {
            crate::store::sqlite::filtered_rows_within(sqlite, table, filter, MAX_LIST_BYTES)
        }
    }
}

fn read_pg(
    client: &mut crate::store::pg_pool::PgConn,
    table: &'static Table,
    spec: &ReadSpec,
) -> Result<Vec<Row>> {
    match spec {
        ReadSpec::Key(k) => postgres::select_rows_prepared(
            client,
            table,
            &[(table.key, Value::String(k.clone()))],
            &[],
            false,
            1,
            0,
        ),
        ReadSpec::List { filters, order_by, desc, limit, offset } => {
            postgres::select_rows_prepared(client, table, filters, order_by, *desc, *limit, *offset)
        }
        ReadSpec::Filter(filter) => postgres::select_filtered_prepared(client, table, filter),
    }
}

/// Two wire rows hold the same data: JSON compared parsed (it already is), vectors as f32 bit for
/// bit (-0.0 is not 0.0).
pub(crate) fn same_row(table: &Table, a: &Row, b: &Row) -> bool {
    table.columns.iter().all(|c| {
        let (x, y) = (a.get(c.name), b.get(c.name));
        match (c.ty, x, y) {
            (ColType::Vector, Some(Value::Array(x)), Some(Value::Array(y))) => {
                x.len() == y.len()
                    && x.iter().zip(y).all(|(p, q)| {
                        p.as_f64().map(|f| (f as f32).to_bits()) == q.as_f64().map(|f| (f as f32).to_bits())
                    })
            }
            _ => x == y,
        }
    })
}

fn key_of(table: &Table, row: &Row) -> String {
    row.get(table.key).and_then(Value::as_str).unwrap_or_default().to_string()
}

fn shadow_worker(
    rx: Receiver<ShadowJob>,
    pg: PgConfig,
    sqlite_path: std::path::PathBuf,
    counters: Arc<Mutex<BTreeMap<&'static str, ReadCounters>>>,
) {
    let Ok(sqlite) = crate::store::sqlite::open(&sqlite_path) else { return };
    let mut client: Option<crate::store::pg_pool::PgConn> = None;
    let count = |t: &'static str, f: &dyn Fn(&mut ReadCounters)| {
        let mut c = counters.lock().unwrap_or_else(|p| p.into_inner());
        f(c.entry(t).or_default());
    };
    for job in rx {
        let t = job.table.name;
        // Wait until PostgreSQL has everything the served read could have seen.
        let deadline = Instant::now() + SHADOW_WAIT;
        let caught_up = loop {
            match Outbox::lowest_pending(&sqlite) {
                Ok(low) if low > job.seen_seq => break true,
                Ok(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                _ => break false,
            }
        };
        if !caught_up {
            count(t, &|c| c.shadow_skipped += 1);
            continue;
        }
        if client.as_ref().is_none_or(|c| c.is_closed()) {
            client = pg.connect().ok().map(crate::store::pg_pool::PgConn::new);
        }
        let Some(c) = client.as_mut() else {
            count(t, &|c| c.shadow_skipped += 1);
            continue;
        };
        let theirs = match read_pg(c, job.table, &job.spec) {
            Ok(r) => r,
            Err(_) => {
                client = None;
                count(t, &|c| c.shadow_skipped += 1);
                continue;
            }
        };
        let now_rows = read_sqlite(job.table, &job.spec, &sqlite).unwrap_or_default();
        let by_key = |rows: &[Row]| -> HashMap<String, Row> {
            rows.iter().map(|r| (key_of(job.table, r), r.clone())).collect()
        };
        let (served, pg_rows, current) = (by_key(&job.served), by_key(&theirs), by_key(&now_rows));
        if served.len() != current.len()
            || served.iter().any(|(k, r)| current.get(k).is_none_or(|n| !same_row(job.table, r, n)))
        {
            // SQLite changed since the read was served: this comparison would prove nothing.
            count(t, &|c| c.shadow_skipped += 1);
            continue;
        }
        let mismatched: Vec<&String> = served
            .iter()
            .filter(|(k, r)| pg_rows.get(*k).is_none_or(|p| !same_row(job.table, r, p)))
            .map(|(k, _)| k)
            .chain(pg_rows.keys().filter(|k| !served.contains_key(*k)))
            .collect();
        if mismatched.is_empty() {
            count(t, &|c| c.shadow_matches += 1);
        } else {
            // Keys only: row values may hold personal data or ciphertext.
            tracing::warn!(table = t, keys = ?mismatched.iter().take(10).collect::<Vec<_>>(), "shadow read mismatch");
            count(t, &|c| c.shadow_mismatches += 1);
        }
    }
}

/// A list request: `{"where": {"column": value, ...}, "order_by": "column", "desc": false,
/// "limit": 100, "offset": 0}`. Equality only (null means IS NULL); columns must be the table's.
pub struct ListQuery {
    filters: Vec<(&'static str, Value)>,
    order_by: Vec<&'static str>,
    desc: bool,
    limit: i64,
    offset: i64,
}

pub const MAX_LIST_LIMIT: i64 = 10_000;

impl ListQuery {
    pub fn parse(t: &'static Table, v: &Value) -> Result<ListQuery> {
        let empty = Map::new();
        let obj = match v {
            Value::Null => &empty,
            Value::Object(o) => o,
            _ => return Err(Error::invalid("filter", "must be a JSON object")),
        };
        for k in obj.keys() {
            if !["where", "order_by", "desc", "limit", "offset"].contains(&k.as_str()) {
                return Err(Error::invalid(
                    format!("filter.{}", schema::truncate_for_message(k)),
                    "unknown; use where, order_by, desc, limit, offset",
                ));
            }
        }
        let mut filters = Vec::new();
        if let Some(w) = obj.get("where") {
            let w = w.as_object().ok_or_else(|| Error::invalid("filter.where", "must be an object"))?;
            for (name, value) in w {
                let c = t.column(name).ok_or_else(|| {
                    Error::invalid(
                        format!("filter.where.{}", schema::truncate_for_message(name)),
                        "no such column",
                    )
                })?;
                let value = if value.is_null() { Value::Null } else { schema::canonical_value(t, c, value)? };
                filters.push((c.name, value));
            }
        }
        let order_by = match obj.get("order_by") {
            None => vec![],
            Some(Value::String(s)) => {
                vec![t.column(s).ok_or_else(|| Error::invalid("filter.order_by", "no such column"))?.name]
            }
            Some(_) => return Err(Error::invalid("filter.order_by", "must be a column name")),
        };
        let desc = match obj.get("desc") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(Error::invalid("filter.desc", "must be true or false")),
        };
        let int = |name: &str, default: i64, max: i64| -> Result<i64> {
            match obj.get(name) {
                None => Ok(default),
                Some(v) => v.as_i64().filter(|n| (0..=max).contains(n)).ok_or_else(|| {
                    Error::invalid(format!("filter.{name}"), format!("must be an integer from 0 to {max}"))
                }),
            }
        };
        Ok(ListQuery {
            filters,
            order_by,
            desc,
            limit: int("limit", 100, MAX_LIST_LIMIT)?,
            offset: int("offset", 0, i64::MAX)?,
        })
    }

    pub(crate) fn from_parts(
        filters: Vec<(&'static str, Value)>,
        order_by: Vec<&'static str>,
        desc: bool,
        limit: i64,
        offset: i64,
    ) -> ListQuery {
        ListQuery { filters, order_by, desc, limit, offset }
    }

    pub(crate) fn into_spec(self) -> ReadSpec {
        ReadSpec::List {
            filters: self.filters,
            order_by: self.order_by,
            desc: self.desc,
            limit: self.limit,
            offset: self.offset,
        }
    }

    pub fn run(&self, t: &Table, conn: &Connection) -> Result<Vec<Row>> {
        let mut clauses = Vec::new();
        let mut args: Vec<schema::SqlValue> = Vec::new();
        for (name, value) in &self.filters {
            if value.is_null() {
                clauses.push(format!("{name} IS NULL"));
            } else {
                let c = t.column(name).ok_or_else(|| Error::Internal("filter column vanished".into()))?;
                args.push(schema::encode_for_sqlite(c, value)?);
                clauses.push(format!("{name} = ?{}", args.len()));
            }
        }
        let mut sql = if clauses.is_empty() { "1".to_string() } else { clauses.join(" AND ") };
        sql.push_str(&format!(
            " ORDER BY {} LIMIT {} OFFSET {}",
            t.order_clause(&self.order_by, self.desc),
            self.limit,
            self.offset
        ));
        let refs: Vec<&dyn rusqlite::ToSql> = args.iter().map(|a| a as &dyn rusqlite::ToSql).collect();
        sqlite::query_rows_within(conn, t, &sql, &refs, MAX_LIST_BYTES)
    }
}
