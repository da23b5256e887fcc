//! The handle the monolith holds: SQLite connections, the secret key, the replicator thread, and
//! the generic (table name + JSON) API. Typed repository operations live in `src/repo/`.
//!
//! A `Bridge` is `Send + Sync` and cheap to clone; any number of threads may use one at once.
//! Writes serialise on one writer connection (SQLite has one writer anyway); reads use a small
//! pool of connections, which WAL lets run beside the writer.

use crate::config::Config;
use crate::crypto::SecretKey;
use crate::error::{Error, Result};
use crate::flags::{FlagCache, FlagChange, Flags, ReadSource, WriteMode};
use crate::reads::{ListQuery, ReadCounters, ReadRouter, ReadSpec};
use crate::replicator::{ReplicationStats, Replicator, ReplicatorOptions};
use crate::schema::{self, validate_row, Row, RowMode, Table};
use crate::store::outbox::{DeadLetter, DeadLetters, Outbox};
use crate::store::pg_pool::{self, PgPool};
use crate::store::pg_primary::{Began, PgWrite};
use crate::store::sqlite::{self, Rows};
use crate::store::write_tx::WriteTx;
use crossbeam_channel::Sender;
use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How to open a bridge.
#[derive(Clone, Debug)]
pub struct BridgeOptions {
    /// Apply the SQLite migrations on open (the PostgreSQL ones are `dualwrite migrate`'s job).
    pub migrate_sqlite: bool,
    /// Run the replicator in this process (when PostgreSQL is configured).
    pub replicate: bool,
    pub replicator: ReplicatorOptions,
    /// In write_mode `sqlite` the outbox keeps capturing changes, so that returning to `dual`
    /// replays only what PostgreSQL missed. It may hold this many; from 80 % on a warning is logged
    /// (once a minute), and at the limit capture stops — the file must not grow without bound —
    /// and the way back to `dual` needs `dualwrite verify` + `repair` (refused unless forced).
    pub capture_limit: i64,
    /// Create the SQLite file when there is none. The Rust API keeps the default `true`; the C
    /// ABI (`"create"`) and the CLI (`migrate --create`) default to `false`, so that a mistyped
    /// path is an error rather than a new, empty database.
    pub create_sqlite: bool,
}

impl Default for BridgeOptions {
    fn default() -> Self {
        BridgeOptions {
            migrate_sqlite: true,
            replicate: true,
            replicator: ReplicatorOptions::default(),
            capture_limit: DEFAULT_CAPTURE_LIMIT,
            create_sqlite: true,
        }
    }
}

/// [`BridgeOptions::capture_limit`] by default: a few hundred MB of outbox for typical rows.
pub const DEFAULT_CAPTURE_LIMIT: i64 = 1_000_000;

/// Replication health, from the API and `dualwrite status`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Status {
    /// Changes committed to SQLite and not yet applied to PostgreSQL.
    pub outbox_depth: i64,
    /// Age of the oldest pending change: the replication lag.
    pub oldest_pending_ms: Option<i64>,
    /// Changes applied by every process on this file, ever.
    pub applied_total: i64,
    /// Rate of this process's replicator over the last seconds (0 when it does not replicate).
    pub applied_per_sec: f64,
    /// Failed attempts (retried) by every process on this file, ever.
    pub retries: i64,
    pub dead_letters: i64,
    /// The most recent failure, cleared by the next applied batch.
    pub last_error: Option<String>,
    pub last_applied_at: Option<String>,
    /// Whether this process runs a replicator, whether it holds the single-replicator lease (is
    /// the one applying), and whether it holds a PostgreSQL connection.
    pub replicator_running: bool,
    pub replicator_holds_lease: bool,
    pub postgres_connected: bool,
    /// The flags in effect in this process.
    pub flags: Flags,
    /// Since when changes are not captured any more: SQLite-only mode reached its capture limit
    /// (`BridgeOptions::capture_limit`); returning to dual then needs verify and repair.
    pub capture_overflow_since: Option<String>,
    /// The change capture: how far SQLite follows PostgreSQL (every writer's changes), the slot's
    /// retained WAL and lag, foreign writes seen while SQLite is the primary. `None` without
    /// PostgreSQL.
    pub capture: Option<crate::capture::CaptureStatus>,
    /// Reads served by this process, per table: where from, fallbacks, shadow results.
    pub reads: BTreeMap<String, ReadCounters>,
}

struct Inner {
    config: Config,
    writer: Arc<Mutex<Connection>>,
    readers: Mutex<Vec<Connection>>,
    key: std::result::Result<SecretKey, String>,
    wake: Sender<()>,
    stats: Arc<ReplicationStats>,
    replicator: Mutex<Option<Replicator>>,
    flags: Arc<FlagCache>,
    router: Arc<ReadRouter>,
    capture_limit: i64,
    last_capture_warning: Mutex<Option<Instant>>,
    /// Connections for the writes made while PostgreSQL is the primary (any number of threads
    /// at once: no SQLite lock is held across them). `None` without PostgreSQL.
    pool: Option<PgPool>,
    /// The process that opened the bridge. After fork() the child has none of its threads (the
    /// replicator, the flag watcher) and shares its SQLite file descriptors, so the child must
    /// open its own bridge; calls through the inherited handle fail with a clear error.
    pid: u32,
}

impl Drop for Inner {
    /// Dropped in a fork()ed child (the bridge it inherited): the replicator and flag-watcher
    /// threads are the parent's and do not exist here, and the SQLite connections and PostgreSQL
    /// sockets are the parent's too. Joining the threads would fail (a panic), closing SQLite
    /// would touch the parent's file locks, and a PostgreSQL client's goodbye would end the
    /// parent's session. So the child's copy lets go of those parts without running their
    /// destructors: the child leaks its own copy of that memory, and the parent is untouched.
    fn drop(&mut self) {
        if self.pid == std::process::id() {
            return;
        }
        std::mem::forget(self.replicator.get_mut().unwrap_or_else(|p| p.into_inner()).take());
        std::mem::forget(std::mem::take(self.readers.get_mut().unwrap_or_else(|p| p.into_inner())));
        // The pool's connections and its helper thread are the parent's too.
        std::mem::forget(self.pool.take());
        // A reference that is never dropped keeps each shared part (and its connections) alive.
        std::mem::forget(Arc::clone(&self.writer));
        std::mem::forget(Arc::clone(&self.router));
        std::mem::forget(Arc::clone(&self.flags));
    }
}

#[derive(Clone)]
pub struct Bridge {
    inner: Arc<Inner>,
}

/// Idle reader connections kept for reuse.
const MAX_IDLE_READERS: usize = 8;
/// PostgreSQL connections for the writes made while PostgreSQL is the primary.
const PRIMARY_POOL_SIZE: u32 = 16;
/// Tries of a write whose mode changed under it (a phase switch between its checks).
const WRITE_MODE_TRIES: usize = 4;

impl Bridge {
    /// Open the SQLite file (migrating it unless told not to), load the secret key, and start
    /// the replicator when PostgreSQL is configured.
    pub fn open(config: Config, options: BridgeOptions) -> Result<Bridge> {
        if !options.create_sqlite && !config.sqlite_path.exists() {
            return Err(Error::Config(format!(
                "no SQLite file at {}: check the path, or ask for a new database (\"create\": true)",
                config.sqlite_path.display()
            )));
        }
        let mut writer = sqlite::open(&config.sqlite_path)?;
        if options.migrate_sqlite {
            crate::migrate::migrate_sqlite(&mut writer)?;
        } else {
            let v = crate::migrate::sqlite_version(&writer)?;
            let latest = crate::migrate::latest_version(crate::Store::Sqlite);
            if v != latest {
                return Err(Error::Migration(format!(
                    "sqlite schema is at version {v}, this build needs {latest}: run `dualwrite migrate`"
                )));
            }
        }
        let writer = Arc::new(Mutex::new(writer));
        let config_pool = config.postgres.as_ref().map(|pg| pg_pool::new_pool(pg, PRIMARY_POOL_SIZE));
        let key = SecretKey::load(&config.key_source).map_err(|e| e.to_string());
        let flags = FlagCache::start(config.sqlite_path.clone())?;
        let router = ReadRouter::new(config.postgres.clone(), config.sqlite_path.clone());
        let (wake, wake_rx) = crossbeam_channel::bounded(1);
        let stats = Arc::new(ReplicationStats::default());
        let replicator = match (&config.postgres, options.replicate) {
            (Some(pg), true) => Some(Replicator::start(
                config.sqlite_path.clone(),
                pg.clone(),
                options.replicator.clone(),
                wake_rx,
                stats.clone(),
                flags.clone(),
                writer.clone(),
            )?),
            _ => None,
        };
        Ok(Bridge {
            inner: Arc::new(Inner {
                config,
                writer,
                readers: Mutex::new(Vec::new()),
                key,
                wake,
                stats,
                replicator: Mutex::new(replicator),
                flags,
                router,
                pool: config_pool,
                capture_limit: options.capture_limit,
                last_capture_warning: Mutex::new(None),
                pid: std::process::id(),
            }),
        })
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The secret key, or why there is none.
    pub(crate) fn key(&self) -> Result<&SecretKey> {
        self.inner.key.as_ref().map_err(|e| Error::Config(format!("no secret key for api_keys: {e}")))
    }

    /// Whether this process opened the bridge (false in a fork()ed child that inherited it).
    pub(crate) fn opened_here(&self) -> bool {
        std::process::id() == self.inner.pid
    }

    fn same_process(&self) -> Result<()> {
        let me = std::process::id();
        if me == self.inner.pid {
            return Ok(());
        }
        Err(Error::Unavailable(format!(
            "this bridge was opened by process {} and this is process {me} (a fork): open a new bridge in the child",
            self.inner.pid
        )))
    }

    fn lock_writer(&self) -> Result<MutexGuard<'_, Connection>> {
        self.same_process()?;
        // A panic while holding the lock cannot leave a transaction open (rusqlite rolls back on
        // drop), so a poisoned lock is safe to take over.
        Ok(self.inner.writer.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Run `f` as one write, in the write mode the file holds at that moment (read inside the
    /// transaction, under SQLite's write lock, so no write is made in a mode already left).
    ///
    /// SQLite first (`sqlite`, `dual`): one SQLite transaction; every change it makes is recorded
    /// in the outbox in that transaction. Returns only after the commit (invariant 1); then
    /// wakes the replicator. PostgreSQL first: see [`Bridge::write_primary`]. An error from `f`
    /// rolls everything back.
    pub(crate) fn write<T>(&self, f: impl FnOnce(&mut WriteTx<'_>) -> Result<T>) -> Result<T> {
        self.write_routed(true, f)
    }

    /// [`Bridge::write`] for an operation that is exactly one insert (`f` runs one
    /// `WriteTx::insert` and nothing else): [`Bridge::write_one_statement`] with `f` both ways.
    /// `Fn`: the insert may run twice (a refused first attempt changed nothing), so its row
    /// (key included) must be made before `f`, not inside it.
    pub(crate) fn write_insert<T>(&self, f: impl Fn(&mut WriteTx<'_>) -> Result<T>) -> Result<T> {
        self.write_one_statement(|tx| f(tx).map(Some), |tx| f(tx))
    }

    /// [`Bridge::write`] for an operation that PostgreSQL can do in one statement: while it is
    /// the primary, `one` runs first, in autocommit, with the write fence checked inside the
    /// statement (`WriteTx::insert`, `WriteTx::update_where` or `WriteTx::upsert`, exactly one of
    /// them): one round trip instead of three or four (begin at the fence, read, write, commit),
    /// and no window between a read and the write that depends on it. `ordinary` runs instead —
    /// as [`Bridge::write`] does, in whatever mode the file holds — when SQLite is the primary,
    /// when `one` changed nothing (`Ok(None)`: the row is missing or does not meet the condition,
    /// and the ordinary way says which), when the fence refused (a switch), or when a pooled
    /// connection turned out dead before the statement ran. Neither closure may do anything
    /// outside its write: one of them may run after the other changed nothing.
    pub(crate) fn write_one_statement<T>(
        &self,
        one: impl FnOnce(&mut WriteTx<'_>) -> Result<Option<T>>,
        ordinary: impl FnOnce(&mut WriteTx<'_>) -> Result<T>,
    ) -> Result<T> {
        let cached = self.inner.flags.get().write_mode;
        if cached.postgres_first() && cached != WriteMode::ReadOnly {
            if let Some(out) = self.write_primary_one_statement(one)? {
                return Ok(out);
            }
        }
        self.write_routed(true, ordinary)
    }

    /// The one-statement write while PostgreSQL is the primary; `None`: take the ordinary way.
    fn write_primary_one_statement<T>(
        &self,
        one: impl FnOnce(&mut WriteTx<'_>) -> Result<Option<T>>,
    ) -> Result<Option<T>> {
        self.same_process()?;
        let Some(pool) = self.inner.pool.as_ref() else { return Ok(None) };
        if self.inner.flags.get().forced_sqlite {
            return Ok(None);
        }
        let client = pg_pool::get(pool, "PostgreSQL, the primary store, is unreachable")?;
        let started = Instant::now();
        self.read(|conn| {
            let mut tx = WriteTx::on_postgres(conn, PgWrite::one_statement_write(client));
            match one(&mut tx) {
                Ok(Some(out)) => tx.commit().map(|()| Some(out)),
                Ok(None) => {
                    tx.abort();
                    Ok(None)
                }
                Err(e) => {
                    let fenced = tx.fenced().is_some();
                    tx.abort();
                    match e {
                        // The fence holds another mode: the ordinary way follows the file's.
                        _ if fenced => Ok(None),
                        // An idle pooled connection the server dropped meanwhile (a restart):
                        // the statement never reached a live session, the ordinary way retries
                        // on another connection (as its begin does). A dead server fails
                        // there too, after its own wait.
                        Error::Unavailable(_) if started.elapsed() < Duration::from_secs(1) => Ok(None),
                        e => Err(e),
                    }
                }
            }
        })
    }

    /// A write to SQLite alone whatever the write mode: the bridge's own bookkeeping (flags and
    /// their audit events, dead letters). Its changes still go through SQLite's outbox.
    fn write_local<T>(&self, f: impl FnOnce(&mut WriteTx<'_>) -> Result<T>) -> Result<T> {
        self.write_routed(false, f)
    }

    fn write_routed<T>(&self, by_mode: bool, f: impl FnOnce(&mut WriteTx<'_>) -> Result<T>) -> Result<T> {
        let mut f = Some(f);
        // The fence's mode, when a PostgreSQL-first attempt found it different from the file's.
        let mut fenced: Option<Option<WriteMode>> = None;
        for _ in 0..WRITE_MODE_TRIES {
            let cached = self.inner.flags.get().write_mode;
            if by_mode && cached.postgres_first() && cached != WriteMode::ReadOnly {
                let op = f.take().ok_or_else(|| Error::Internal("a write ran twice".into()))?;
                match self.write_primary(op)? {
                    Ok(out) => return Ok(out),
                    Err((fence, op)) => {
                        f = Some(op);
                        fenced = Some(fence);
                    }
                }
            }
            let mut conn = self.lock_writer()?;
            let mut tx = WriteTx::begin(&mut conn)?;
            if by_mode {
                let mode = crate::flags::stored_write_mode(tx.conn())?;
                if mode != cached {
                    // This process has not seen the change yet: take it now, for its reads too.
                    if let Ok(flags) = Flags::load(tx.conn()) {
                        self.inner.flags.set(flags);
                    }
                }
                if mode == WriteMode::ReadOnly {
                    return Err(read_only_error());
                }
                if mode.postgres_first() {
                    // The file says PostgreSQL first. Holding the file's write lock, no switch is
                    // running: a fence that said otherwise was left by a switch that died
                    // half-way, and the file is the authority.
                    if let Some(fence) = fenced.take().filter(|f| *f != Some(mode)) {
                        self.repair_fence(mode, fence)?;
                    }
                    drop(tx);
                    drop(conn);
                    continue;
                }
                // The brake is read once per process (Flags::forced_sqlite), not from the
                // environment on every write.
                if mode == WriteMode::Sqlite || self.inner.flags.get().forced_sqlite {
                    self.bound_capture(&mut tx)?;
                }
            }
            let op = f.take().ok_or_else(|| Error::Internal("a write ran twice".into()))?;
            let out = op(&mut tx)?;
            let changed = tx.changes > 0;
            tx.commit()?;
            drop(conn);
            if changed {
                // A full channel already holds a wake-up: nothing is lost by dropping this one.
                let _ = self.inner.wake.try_send(());
            }
            return Ok(out);
        }
        Err(Error::Unavailable(
            "the write mode kept changing while this write started (a phase switch): retry".into(),
        ))
    }

    /// Set the write fence to the file's mode (see `store::fence`); called under the file's write lock.
    fn repair_fence(&self, mode: WriteMode, fence: Option<WriteMode>) -> Result<()> {
        tracing::warn!(file = %mode, fence = ?fence.map(|m| m.as_str()),
            "PostgreSQL's write fence disagrees with the file's write mode (a phase switch died half-way): repairing it");
        let pool =
            self.inner.pool.as_ref().ok_or_else(|| Error::Config("no PostgreSQL is configured".into()))?;
        let mut client = pg_pool::get(pool, "repairing the write fence")?;
        crate::store::fence::set(&mut client, mode)
    }

    /// Nothing replicates in SQLite-only mode, so the outbox only grows: warn near the limit, and
    /// at the limit stop capturing (remembered in the flags, so every process stops) rather than
    /// fill the disk. The writes themselves always go on.
    fn bound_capture(&self, tx: &mut WriteTx<'_>) -> Result<()> {
        if crate::flags::capture_overflow(tx.conn())?.is_some() {
            tx.stop_capturing();
            return Ok(());
        }
        let span = Outbox::span(tx.conn())?;
        let limit = self.inner.capture_limit;
        if span >= limit {
            crate::flags::set_capture_overflow(tx.conn())?;
            tx.stop_capturing();
            tracing::error!(
                limit,
                "write_mode sqlite: the outbox reached its capture limit; changes from now on are not captured, \
                 and returning to dual will need `dualwrite verify` and `dualwrite repair`"
            );
        } else if span.saturating_mul(5) >= limit.saturating_mul(4) {
            let mut last = self.inner.last_capture_warning.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                *last = Some(Instant::now());
                tracing::warn!(
                    captured = span,
                    limit,
                    "write_mode sqlite: the outbox is near its capture limit; return to dual soon"
                );
            }
        }
        Ok(())
    }

    /// A write while PostgreSQL is the primary: `f`'s reads and writes go to one PostgreSQL
    /// transaction on a pooled connection, committed before this returns; no SQLite lock is
    /// held. SQLite takes the change from the change capture (in the background in
    /// `postgres_primary`; at a rollback after `postgres`). `Ok(Err((fence, f)))`: the write
    /// fence holds another mode (a switch), `f` has not run.
    #[allow(clippy::type_complexity)]
    fn write_primary<T, F>(&self, f: F) -> Result<std::result::Result<T, (Option<WriteMode>, F)>>
    where
        F: FnOnce(&mut WriteTx<'_>) -> Result<T>,
    {
        self.same_process()?;
        if self.inner.flags.get().forced_sqlite {
            return Err(Error::Unavailable(format!(
                "{} is set in this process but PostgreSQL is the primary store: a SQLite-only write would split the \
                 data. Roll back first (`dualwrite rollback`); the brake applies from then on",
                crate::flags::FORCE_SQLITE_ENV
            )));
        }
        let pool = self.inner.pool.as_ref().ok_or_else(|| {
            Error::Config(
                "the write mode needs PostgreSQL (it is the primary store), and none is configured".into(),
            )
        })?;
        let started = Instant::now();
        let pg = loop {
            let client = pg_pool::get(pool, "PostgreSQL, the primary store, is unreachable")?;
            match PgWrite::begin(client) {
                Ok(Began::Write(pg)) => break pg,
                Ok(Began::Fenced(fence)) => return Ok(Err((fence, f))),
                // An idle pooled connection the server dropped meanwhile (a restart) fails at
                // once and leaves the pool: take another. One that timed out is not retried:
                // the caller has waited long enough.
                Err(Error::Unavailable(_)) if started.elapsed() < Duration::from_secs(1) => continue,
                Err(e) => return Err(e),
            }
        };
        let out = self.read(|conn| {
            let mut tx = WriteTx::on_postgres(conn, pg);
            match f(&mut tx) {
                Ok(out) => tx.commit().map(|()| out),
                Err(e) => {
                    tx.abort();
                    Err(e)
                }
            }
        })?;
        // No wake-up for the capture: it polls every few milliseconds, so its decoding calls
        // (each one starts a decoding context in PostgreSQL) do not multiply with the writes.
        Ok(Ok(out))
    }

    /// Run `f` with a reader connection from the pool.
    pub(crate) fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        self.same_process()?;
        let conn = {
            let mut pool = self.inner.readers.lock().unwrap_or_else(|p| p.into_inner());
            pool.pop()
        };
        let conn = match conn {
            Some(c) => c,
            None => sqlite::open(&self.inner.config.sqlite_path)?,
        };
        let out = f(&conn);
        let mut pool = self.inner.readers.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < MAX_IDLE_READERS {
            pool.push(conn);
        }
        out
    }

    // ----- the generic, registry-driven API (the C ABI and tools reach every table with it) -----

    /// One row by key, or `None`.
    pub fn get(&self, table: &str, key: &str) -> Result<Option<Row>> {
        let t = schema::require_table(table)?;
        let key = canonical_key(t, key)?;
        Ok(self.routed_read(t, ReadSpec::Key(key))?.into_iter().next())
    }

    /// Rows matching a filter (see [`ListQuery`]). At most [`MAX_LIST_BYTES`](crate::store::MAX_LIST_BYTES) of rows: past it
    /// the read stops with `InvalidArgument` saying to page (the typed lists too).
    pub fn list(&self, table: &str, query: &Value) -> Result<Vec<Row>> {
        let t = schema::require_table(table)?;
        let q = ListQuery::parse(t, query)?;
        self.routed_read(t, q.into_spec())
    }

    /// Serve a read from the source the flags name for `table` (see `src/reads.rs`).
    pub(crate) fn routed_read(&self, t: &'static Table, spec: ReadSpec) -> Result<Vec<Row>> {
        let flags = self.inner.flags.get();
        if flags.write_mode == WriteMode::Postgres {
            // SQLite is frozen: no fallback to it, it would serve old rows as current.
            return self.inner.router.read_primary(t, &spec);
        }
        let source = flags.effective_read_source(t.name);
        self.read(|c| self.inner.router.read(source, t, spec, c))
    }

    // ----- flags -----

    /// The flags in effect in this process (one atomic load; refreshed by a watcher thread).
    pub fn flags(&self) -> Arc<Flags> {
        self.inner.flags.get()
    }

    /// Change a flag for every process on this file, recorded in `audit_events` with who and
    /// why. Moving reads or writes away from SQLite is refused while changes are pending
    /// (more than `GUARD_MAX_PENDING`) or dead letters exist, unless `force`.
    pub fn set_flag(&self, change: FlagChange, who: &str, why: &str, force: bool) -> Result<Flags> {
        if who.trim().is_empty() || why.trim().is_empty() {
            return Err(Error::invalid("flag change", "say who changes the flag and why"));
        }
        if change.leaves_sqlite() && !force {
            let st = self.status()?;
            let mut reasons = Vec::new();
            if st.outbox_depth > GUARD_MAX_PENDING {
                reasons.push(format!(
                    "{} changes are not replicated yet (limit {GUARD_MAX_PENDING})",
                    st.outbox_depth
                ));
            }
            if st.dead_letters > 0 {
                reasons.push(format!("{} dead letters exist (`dualwrite dead-letters`)", st.dead_letters));
            }
            match self.last_verify_differences() {
                Ok(Some(n)) if n > 0 => reasons.push(format!(
                    "the last `dualwrite verify` found {n} difference(s); run `dualwrite repair` and verify again"
                )),
                Ok(_) => {}
                Err(e) => reasons.push(format!("the last verify result cannot be read: {e}")),
            }
            if !reasons.is_empty() {
                return Err(Error::conflict(format!(
                    "refusing {}: {}; use --force to override",
                    change.stored_name(),
                    reasons.join("; ")
                )));
            }
        }
        let audit = schema::require_table("audit_events")?;
        let pg = self.inner.config.postgres.as_ref();
        let notes = self.write_local(|tx| {
            // The stored flags, under the write lock: what every process writes by right now.
            let before = Flags::load(tx.conn())?;
            let notes = match change {
                FlagChange::WriteMode(to) => {
                    crate::phases::prepare_write_mode(tx.conn(), pg, before.write_mode, to, force)?
                }
                _ => Vec::new(),
            };
            crate::flags::store(tx.conn(), &change, who, why)?;
            let event = validate_row(
                audit,
                &json!({
                    "action": "flags.set",
                    "entity": "dualwrite_flags",
                    "metadata": {
                        "flag": change.stored_name(),
                        "from": match &change {
                            FlagChange::WriteMode(_) => json!(before.write_mode.as_str()),
                            FlagChange::ReadSource(_) => json!(before.read_source.as_str()),
                            FlagChange::TableReadSource(t, _) => json!(before.read_source_overrides.get(*t).map(|r| r.as_str())),
                        },
                        "to": change.stored_value(),
                        "who": who,
                        "why": why,
                        "forced": force,
                        "notes": notes,
                    }
                }),
                RowMode::Insert,
            )?;
            tx.insert(audit, &event)?;
            Ok(notes)
        })?;
        let now = self.read(Flags::load)?;
        self.inner.flags.set(now.clone());
        tracing::info!(flag = %change.stored_name(), to = ?change.stored_value(), who, ?notes, "flag changed");
        Ok(now)
    }

    /// Differences the last recorded verify run found (`None`: never verified, or no PostgreSQL).
    fn last_verify_differences(&self) -> Result<Option<u64>> {
        let Some(pg) = &self.inner.config.postgres else { return Ok(None) };
        let mut client = pg.connect()?;
        Ok(crate::verify::last_run(&mut client)?.map(|r| if r.ok { 0 } else { r.differences().max(1) }))
    }

    /// Roll back to SQLite-only in one step: writes stay in SQLite (still captured in the outbox,
    /// so returning to `dual` replays only what PostgreSQL missed) and every read comes from
    /// SQLite. From `postgres_primary` or `postgres`, SQLite first catches up with the changes
    /// PostgreSQL took; with PostgreSQL unreachable that cannot be lossless and is refused unless
    /// `force`. From any other mode it is never refused.
    pub fn rollback_to_sqlite(&self, who: &str, why: &str, force: bool) -> Result<Flags> {
        // Writes first: if the catch-up is refused, nothing has changed.
        self.set_flag(FlagChange::WriteMode(WriteMode::Sqlite), who, why, force)?;
        for (t, source) in self.flags().read_source_overrides.clone() {
            if source != ReadSource::Sqlite {
                let table = schema::require_table(&t)?;
                self.set_flag(FlagChange::TableReadSource(table.name, None), who, why, true)?;
            }
        }
        self.set_flag(FlagChange::ReadSource(ReadSource::Sqlite), who, why, true)
    }

    /// Insert a row given as JSON; missing ids, timestamps and defaults are filled in. Returns the
    /// row as stored.
    pub fn insert(&self, table: &str, row: &Value) -> Result<Row> {
        let t = schema::require_table(table)?;
        let row = validate_row(t, row, RowMode::Insert)?;
        refuse_secret_columns(t, &row)?;
        self.write_insert(|tx| tx.insert(t, &row))
    }

    /// Change some columns of a row; returns the whole row after the change.
    pub fn patch(&self, table: &str, key: &str, changes: &Value) -> Result<Row> {
        let t = schema::require_table(table)?;
        let key = canonical_key(t, key)?;
        let changes = validate_row(t, changes, RowMode::Patch)?;
        refuse_secret_columns(t, &changes)?;
        self.write(|tx| tx.update(t, &key, &changes))
    }

    /// Delete a row; `false` if there was none. A row other rows still reference is a conflict.
    pub fn delete(&self, table: &str, key: &str) -> Result<bool> {
        let t = schema::require_table(table)?;
        let key = canonical_key(t, key)?;
        self.write(|tx| tx.delete(t, &key))
    }

    // ----- replication -----

    /// Wait until every change committed before this call has been applied to PostgreSQL (or
    /// moved to the dead letters). For tests, shutdown and cut-over.
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let target = self.read(Outbox::last_seq)?;
        loop {
            if !self.read(|c| Outbox::any_pending_upto(c, target))? {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let st = self.status()?;
                if st.flags.effective_write_mode() == WriteMode::Sqlite {
                    return Err(Error::Unavailable(format!(
                        "flush cannot finish: write_mode is sqlite here (a rollback or {}), so replication is paused with {} change(s) captured",
                        crate::flags::FORCE_SQLITE_ENV,
                        st.outbox_depth
                    )));
                }
                return Err(Error::Unavailable(format!(
                    "flush timed out after {:?} with {} change(s) pending{}",
                    timeout,
                    st.outbox_depth,
                    st.last_error.map(|e| format!("; last error: {e}")).unwrap_or_default()
                )));
            }
            let _ = self.inner.wake.try_send(());
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn status(&self) -> Result<Status> {
        let (depth, oldest) = self.read(Outbox::depth)?;
        let dead = self.read(DeadLetters::count)?;
        let shared = self.read(Outbox::replication_state)?;
        let s = &self.inner.stats;
        let oldest_pending_ms = oldest.and_then(|t| {
            chrono::DateTime::parse_from_rfc3339(&t)
                .ok()
                .map(|t| (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_milliseconds().max(0))
        });
        Ok(Status {
            outbox_depth: depth,
            oldest_pending_ms,
            applied_total: shared.applied_total,
            applied_per_sec: s.applied_per_sec(),
            retries: shared.retries_total,
            dead_letters: dead,
            last_error: shared.last_error,
            last_applied_at: shared.last_applied_at,
            replicator_running: s.running.load(Ordering::Relaxed),
            replicator_holds_lease: s.holds_lease.load(Ordering::Relaxed),
            postgres_connected: s.connected.load(Ordering::Relaxed),
            flags: (*self.flags()).clone(),
            capture_overflow_since: self.read(crate::flags::capture_overflow)?,
            capture: self.capture_status(),
            reads: self.inner.router.counters(),
        })
    }

    /// The capture as this file and PostgreSQL see it (PostgreSQL unreachable: the file's part only).
    fn capture_status(&self) -> Option<crate::capture::CaptureStatus> {
        // The pool exists exactly when PostgreSQL is configured.
        let pool = self.inner.pool.as_ref()?;
        let file = self.read(|c| {
            Ok((crate::capture::CaptureState::load(c)?, crate::capture::follow::foreign_changes(c, 10)?))
        });
        let (state, recent_foreign) = match file {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!(error = %e, "capture state unreadable");
                return None;
            }
        };
        // A pooled connection, not a new one: `status` runs often (monitoring, every flag
        // change's guard rails).
        let slot = pg_pool::get(pool, "asking PostgreSQL about the capture")
            .and_then(|mut c| crate::capture::slot::probe(&mut c));
        Some(crate::capture::CaptureStatus::new(state, recent_foreign, slot))
    }

    /// The captured PostgreSQL changes SQLite refused (a constraint), oldest first.
    pub fn capture_dead_letters(&self) -> Result<Vec<crate::capture::follow::CaptureDeadLetter>> {
        self.read(crate::capture::follow::dead_letters)
    }

    /// The way back from a lost capture slot while PostgreSQL is the primary: a new slot, then
    /// SQLite takes every row PostgreSQL holds (see `capture::resync`). Recorded in `audit_events`.
    pub fn resync_sqlite_from_postgres(
        &self,
        who: &str,
        why: &str,
    ) -> Result<crate::capture::resync::Resynced> {
        if who.trim().is_empty() || why.trim().is_empty() {
            return Err(Error::invalid("resync", "say who resyncs and why"));
        }
        let pg = self.inner.config.require_postgres()?.clone();
        let audit = schema::require_table("audit_events")?;
        self.write_local(|tx| {
            let done = crate::capture::resync::resync(tx.conn(), &pg)?;
            let event = validate_row(
                audit,
                &json!({"action": "capture.resync", "entity": "dualwrite_capture",
                        "metadata": {"who": who, "why": why, "rows": done.rows, "deleted": done.deleted}}),
                RowMode::Insert,
            )?;
            tx.insert(audit, &event)?;
            Ok(done)
        })
    }

    /// Drop the capture slot (after the decommission: nothing follows PostgreSQL any more, and a
    /// slot nobody reads keeps WAL forever). While PostgreSQL is the primary this ends the lossless
    /// rollback, so it is refused unless `force`.
    pub fn drop_capture(&self, force: bool) -> Result<bool> {
        let mode = self.read(crate::flags::stored_write_mode)?;
        if mode.postgres_first() && !force {
            return Err(Error::conflict(format!(
                "write_mode is {mode}: without the capture a rollback could not bring PostgreSQL's changes back to \
                 SQLite; use --force once SQLite is no longer a fallback (the monolith is switched off)"
            )));
        }
        let pg = self.inner.config.require_postgres()?;
        crate::capture::slot::drop_slot(&mut pg.connect()?)
    }

    /// Wait until SQLite holds every change PostgreSQL committed before this call (whoever made
    /// it), as far as the capture goes: for tests, benchmarks and the cut-over. `Unavailable`
    /// when the time runs out.
    pub fn wait_for_sqlite(&self, timeout: Duration) -> Result<()> {
        let pg = self
            .inner
            .config
            .postgres
            .as_ref()
            .ok_or_else(|| Error::Config("no PostgreSQL is configured".into()))?;
        if self.flags().write_mode == WriteMode::Postgres {
            return Err(Error::Conflict(
                "SQLite is frozen in write_mode postgres: it follows again in postgres_primary".into(),
            ));
        }
        let mut client = pg.connect()?;
        let target = crate::capture::slot::flush_lsn(&mut client)?;
        let deadline = Instant::now() + timeout;
        loop {
            let state = self.read(crate::capture::CaptureState::load)?;
            // The slot is confirmed only past what SQLite took (or what was not its to take).
            let confirmed = crate::capture::slot::state(&mut client)?
                .and_then(|s| s.confirmed_lsn)
                .and_then(|l| crate::capture::pgoutput::parse_lsn(&l))
                .unwrap_or(0);
            if state.applied_lsn.max(confirmed) >= target {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Unavailable(format!(
                    "SQLite has not followed PostgreSQL up to {} within {timeout:?} (it is at {}){}",
                    crate::capture::pgoutput::lsn_text(target),
                    crate::capture::pgoutput::lsn_text(state.applied_lsn),
                    state.last_error.map(|e| format!("; last error: {e}")).unwrap_or_default()
                )));
            }
            let _ = self.inner.wake.try_send(());
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>> {
        self.read(DeadLetters::list)
    }

    /// Re-enqueue a dead letter's row in its current SQLite state; `false` if no such letter.
    pub fn retry_dead_letter(&self, seq: i64) -> Result<bool> {
        self.write(|tx| DeadLetters::retry(tx, seq))
    }

    pub fn drop_dead_letter(&self, seq: i64) -> Result<bool> {
        self.write_local(|tx| DeadLetters::drop(tx.conn(), seq))
    }

    /// Stop the replicator after draining what it can within `timeout`; the rest stays in the
    /// outbox. Writes keep working (they are replicated by the next process that replicates).
    ///
    /// In a fork()ed child that inherited the bridge this does nothing: the replicator is the
    /// parent's.
    pub fn shutdown(&self, timeout: Duration) {
        if !self.opened_here() {
            return;
        }
        let r = self.inner.replicator.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(r) = r {
            let _ = self.inner.wake.try_send(());
            r.shutdown(timeout);
        }
    }
}

/// The error of every write while `write_mode` is `read_only`.
fn read_only_error() -> Error {
    Error::ReadOnly(
        "write_mode is read_only: the monolith no longer writes (PostgreSQL's services own the data); reads still \
         work. `dualwrite rollback` or another write mode lifts it"
            .into(),
    )
}

/// Canonical form of a key given as text (a uuid is normalised; a cache key is kept).
fn canonical_key(t: &Table, key: &str) -> Result<String> {
    let v = schema::canonical_value(t, t.key_column(), &Value::String(key.to_string()))?;
    Ok(v.as_str().unwrap_or(key).to_string())
}

/// Secrets enter only through `put_api_key`/`rotate_api_key`, which encrypt them; the generic
/// API cannot write a ciphertext column (it could not tell plaintext from ciphertext).
fn refuse_secret_columns(t: &Table, row: &Row) -> Result<()> {
    for c in t.columns.iter().filter(|c| c.secret) {
        if row.contains_key(c.name) {
            return Err(Error::invalid(
                format!("{}.{}", t.name, c.name),
                "secrets are written only through the api_keys operations (put/rotate), which encrypt them",
            ));
        }
    }
    Ok(())
}

/// Phase changes away from SQLite are refused while more changes than this wait in the outbox.
pub const GUARD_MAX_PENDING: i64 = 1_000;
