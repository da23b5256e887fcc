//! The hot paths of the bridge, one criterion benchmark each (docs/BENCHMARKS.md, "Hot paths").
//!
//! - `write/<mode>/<api>/<op>`: a write in write mode `sqlite` (captured in the outbox, nothing
//!   applied) and `dual` (the replicator applies it in the background, on the same 2 cores and the
//!   same writer lock), through the typed Rust API (`rust`) and through the C ABI (`c_abi`:
//!   `dw_call` with JSON text in and out, then `dw_string_free`, exactly what a C caller pays);
//!   and in the PostgreSQL-first modes, Rust API only (the C ABI's cost is the same in every mode):
//!   `postgres_primary` (the operation's PostgreSQL transaction with its outbox record, committed,
//!   then SQLite applies it in its own transaction, all inside the call) and `postgres` (the
//!   PostgreSQL transaction only; SQLite's lock is taken and released). Each of those two runs on a
//!   PostgreSQL database of its own, so no other bridge's rows reach its outbox.
//!   Operations: `append_log` (insert a job_logs row), `set_progress` (update a job),
//!   `cache_put` (upsert a text_analytics_cache entry among 1,000 keys).
//! - `read/<source>/<op>`: `get_job` (get by id), `job_logs` (a job's 50 logs), `cache_hit` (the
//!   cache row by key through the routed generic `get`), from read source `sqlite`, `postgres`
//!   and `shadow`. The typed `cache_get` (routed like the generic `get`) is measured from SQLite
//!   only, as `read/sqlite/cache_get_typed`, next to its C ABI twin. `read/sqlite/c_abi/*` are
//!   the same reads through `dw_call`, for the C ABI's cost without an fsync in the way.
//! - `read/pending_check/<what>/<outbox>`: what read-your-writes across processes adds to every
//!   read meant for PostgreSQL (`read/postgres/*` include it): `Outbox::holds_unapplied`, the probe
//!   of the shared outbox and dead letters for a change of the row (`row`) or, for a list, of the
//!   table (`table`), with an empty outbox (`empty`) and behind [`BACKLOG`] pending changes of
//!   other rows (`backlog`: PostgreSQL was down for a while). No PostgreSQL.
//! - `replicate/apply_batch_1000_job_logs`: `store::postgres::apply_batch` of 1,000 new job_logs
//!   records (claim + upsert + commit), and `…_replayed`: the same records again (every claim lost,
//!   nothing written: what a retried batch costs).
//! - `capture/follow_<n>_mixed`: the SQLite follower's CPU per captured change, without its
//!   commit: `n` single-statement PostgreSQL transactions made with plain SQL (a job_logs insert
//!   with a jsonb context, a jobs progress update, a text_analytics_cache upsert, an embeddings
//!   insert with a 384-float vector, in turn), read once from a real slot as pgoutput messages;
//!   each iteration decodes them (`capture::decode::Assembler`) and takes them into a migrated
//!   SQLite file (`capture::follow::take`) inside a transaction it rolls back. Criterion reports
//!   it per change (`thrpt`).
//! - `verify/row_digest_job_logs`: `dualwrite::verify::sqlite_row_digest` (canonical encoding +
//!   SHA-256, what `dualwrite verify` computes for every row on the SQLite side) over
//!   [`DIGEST_ROWS`] job_logs rows as SQLite stores them, read beforehand from a migrated file (so
//!   SQLite's own reading is not in the figure), plus the chunk checksum (XOR of the digests).
//!   Criterion reports it per row (`thrpt`, rows/s); its id ends in the row count. No PostgreSQL.
//!
//! The C functions are called from Rust through an `extern "C"` block: they are `#[no_mangle]`
//! in the dualwrite rlib this bench links, so the call goes through the real exported symbol, the
//! same code a C program reaches in libdualwrite.so (minus the PLT indirection of a shared
//! library, a few nanoseconds).
//!
//! Needs PostgreSQL: `DUALWRITE_PG_URL`/`DATABASE_URL` or the `PG*` variables (scripts/bench
//! runs it inside `pg_virtualenv`); without them it stops with a message saying so. One database
//! is created for the run and dropped at the end; SQLite files live in `$TMPDIR`.
//!
//! `cargo bench --bench hot_paths` (full), `cargo bench --bench hot_paths -- --quick`, and
//! `cargo test --benches` (criterion's test mode: each benchmark once, small fixtures).

use criterion::{criterion_group, BatchSize, BenchmarkId, Criterion, Throughput};
use dualwrite::schema::{now_timestamp, validate_row, RowMode};
use dualwrite::store::postgres::apply_batch;
use dualwrite::store::sqlite::{Op, Outbox, OutboxRecord};
use dualwrite::verify::sqlite_row_digest;
use dualwrite::{
    Bridge, BridgeOptions, Cache, Config, FlagChange, KeySource, LogLevel, NewJob, NewJobLog, Paging,
    PgConfig, ReadSource, WriteMode,
};
use rusqlite::types::{Value as SqlValue, ValueRef};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::ffi::{c_char, c_int, CStr, CString};
use std::hint::black_box;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;
use tempfile::TempDir;
use uuid::Uuid;

// ----- the C ABI, as include/dualwrite.h declares it -----

/// `dw_bridge*`: opaque.
#[repr(C)]
struct DwBridge {
    _private: [u8; 0],
}

extern "C" {
    fn dw_bridge_open(config_json: *const c_char, bridge_out: *mut *mut DwBridge) -> c_int;
    fn dw_bridge_close(bridge: *mut DwBridge, timeout_ms: u32) -> c_int;
    fn dw_bridge_free(bridge: *mut DwBridge);
    fn dw_call(
        bridge: *mut DwBridge,
        operation: *const c_char,
        args_json: *const c_char,
        result_json_out: *mut *mut c_char,
    ) -> c_int;
    fn dw_string_free(s: *mut c_char);
    fn dw_last_error_message() -> *const c_char;
}

/// A bridge opened through the C ABI, and how long closing it may wait for the replicator.
struct CBridge(*mut DwBridge, u32);

impl CBridge {
    fn open(config: &Value) -> CBridge {
        let text = CString::new(config.to_string()).expect("config JSON");
        let mut b = std::ptr::null_mut();
        // SAFETY: a NUL-terminated string and a writable out pointer.
        let rc = unsafe { dw_bridge_open(text.as_ptr(), &mut b) };
        assert_eq!(rc, 0, "dw_bridge_open: {}", last_error());
        CBridge(b, 60_000)
    }

    /// `dw_call`, the result freed with `dw_string_free`: one whole call as C pays it.
    fn call(&self, op: &CStr, args: &CStr) {
        let mut out: *mut c_char = std::ptr::null_mut();
        // SAFETY: a live handle, NUL-terminated strings, a writable out pointer.
        let rc = unsafe { dw_call(self.0, op.as_ptr(), args.as_ptr(), &mut out) };
        assert_eq!(rc, 0, "dw_call({op:?}): {}", last_error());
        // SAFETY: `out` came from the library on DW_OK.
        unsafe { dw_string_free(black_box(out)) };
    }

    /// `dw_call` returning the result text (set-up only).
    fn call_text(&self, op: &str, args: &Value) -> String {
        let (op, args) = (CString::new(op).unwrap(), CString::new(args.to_string()).unwrap());
        let mut out: *mut c_char = std::ptr::null_mut();
        // SAFETY: as in `call`.
        let rc = unsafe { dw_call(self.0, op.as_ptr(), args.as_ptr(), &mut out) };
        assert_eq!(rc, 0, "dw_call({op:?}): {}", last_error());
        // SAFETY: `out` is a NUL-terminated string from the library, freed right after.
        let text = unsafe { CStr::from_ptr(out) }.to_string_lossy().into_owned();
        unsafe { dw_string_free(out) };
        text
    }
}

impl Drop for CBridge {
    fn drop(&mut self) {
        // SAFETY: the handle from dw_bridge_open, closed and freed once.
        unsafe {
            dw_bridge_close(self.0, self.1);
            dw_bridge_free(self.0);
        }
    }
}

fn last_error() -> String {
    // SAFETY: never NULL; valid until the next call on this thread.
    unsafe { CStr::from_ptr(dw_last_error_message()) }.to_string_lossy().into_owned()
}

// ----- PostgreSQL -----

const NO_PG: &str =
    "hot_paths needs PostgreSQL: run scripts/bench (a throw-away PostgreSQL 15 via pg_virtualenv), \
or `pg_virtualenv -t -v 15 cargo bench --bench hot_paths`, or set DUALWRITE_PG_URL or the \
PGHOST/PGPORT/PGUSER/PGPASSWORD/PGDATABASE variables";

/// The server, from DUALWRITE_PG_URL / DATABASE_URL / PG* (as the tests read it), and a libpq
/// connection string for it (the C ABI takes the URL as text).
fn server() -> (PgConfig, String) {
    let env: HashMap<String, String> = std::env::vars().collect();
    if let Some(url) = env.get("DUALWRITE_PG_URL").or_else(|| env.get("DATABASE_URL")) {
        return (PgConfig::from_url(url).expect("DUALWRITE_PG_URL is valid"), url.clone());
    }
    let Some(pg) = PgConfig::from_pg_vars(&env) else { panic!("{NO_PG}") };
    let q = |v: &str| format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"));
    let mut url = format!(
        "host={} port={} user={}",
        q(&env["PGHOST"]),
        env.get("PGPORT").map_or("5432", String::as_str),
        q(pg.postgres_config().get_user().unwrap_or("postgres"))
    );
    if let Some(pw) = env.get("PGPASSWORD") {
        url.push_str(&format!(" password={}", q(pw)));
    }
    (pg, url)
}

/// A migrated database for this run, dropped at the end.
struct BenchDb {
    admin: PgConfig,
    name: String,
    config: PgConfig,
    url: String,
}

impl BenchDb {
    /// `tag` tells the run's databases apart (`main`, or a write mode that needs its own).
    fn create(tag: &str) -> BenchDb {
        let (admin, base_url) = server();
        let name = format!("dw_hot_paths_{}_{tag}", std::process::id());
        let mut c = admin.connect().unwrap_or_else(|e| panic!("{e}\n{NO_PG}"));
        c.batch_execute(&format!("DROP DATABASE IF EXISTS {name}")).expect("drop an old database");
        c.batch_execute(&format!("CREATE DATABASE {name}")).expect("create the database");
        let config = admin.with_dbname(&name);
        dualwrite::migrate_postgres(&mut config.connect().expect("connect")).expect("migrate postgres");
        let url = if base_url.contains("://") {
            // A URL: replace the database path.
            let (head, _) = base_url.rsplit_once('/').expect("a URL with a database");
            format!("{head}/{name}")
        } else {
            format!("{base_url} dbname={name}")
        };
        BenchDb { admin, name, config, url }
    }
}

impl Drop for BenchDb {
    fn drop(&mut self) {
        if let Ok(mut c) = self.admin.connect() {
            let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
        }
    }
}

// ----- fixtures -----

/// Criterion's test mode (`cargo test --benches`) runs the binary without `--bench`.
fn test_mode() -> bool {
    !std::env::args().any(|a| a == "--bench")
}

const MESSAGE: &str = "fetched 10 results for keyword \"rust sqlite outbox\" in 412 ms";
const KEY_ENV: &str = "DUALWRITE_BENCH_NO_KEY";
/// Cache keys the `cache_put` benchmarks cycle through.
const CACHE_KEYS: usize = 1000;

fn context() -> Value {
    json!({"attempt": 1, "http_status": 200, "results": 10})
}

fn rust_bridge(dir: &TempDir, db: &BenchDb, name: &str) -> Bridge {
    let config = Config {
        sqlite_path: dir.path().join(format!("{name}.sqlite3")),
        postgres: Some(db.config.clone()),
        key_source: KeySource::Env(KEY_ENV.into()),
    };
    Bridge::open(config, BridgeOptions::default()).expect("open bridge")
}

fn c_bridge(dir: &TempDir, db: &BenchDb, name: &str) -> CBridge {
    CBridge::open(&json!({
        "sqlite_path": dir.path().join(format!("{name}.sqlite3")),
        "create": true,
        "postgres_url": db.url,
        "key_env": KEY_ENV,
    }))
}

fn set_write_mode_rust(b: &Bridge, mode: WriteMode) {
    b.set_flag(FlagChange::WriteMode(mode), "hot_paths bench", "benchmark set-up", true)
        .expect("set write_mode");
}

fn set_write_mode_c(b: &mut CBridge, mode: WriteMode) {
    // In write mode sqlite nothing is applied, so closing must not wait for a drain.
    b.1 = if mode == WriteMode::Sqlite { 0 } else { 60_000 };
    let args = json!({"name": "write_mode", "value": mode.as_str(), "who": "hot_paths bench",
        "why": "benchmark set-up", "force": true});
    b.call_text("flags.set", &args);
}

/// A job to log against and update (running, so its progress may change).
fn running_job_rust(b: &Bridge) -> Uuid {
    let job = b.submit_job(&NewJob::new("crawl")).expect("submit");
    b.claim_next_job().expect("claim").expect("a queued job");
    job.id
}

fn running_job_c(b: &CBridge) -> String {
    let job: Value = serde_json::from_str(&b.call_text("jobs.submit", &json!({"type": "crawl"}))).unwrap();
    b.call_text("jobs.claim_next", &json!({}));
    job["id"].as_str().unwrap().to_string()
}

/// Progress values the `set_progress` benchmarks cycle through (each call changes the row).
fn progress(i: usize) -> String {
    format!("{}.5", i % 100)
}

fn cstrings(n: usize, f: impl Fn(usize) -> Value) -> Vec<CString> {
    (0..n).map(|i| CString::new(f(i).to_string()).unwrap()).collect()
}

// ----- writes -----

fn writes(c: &mut Criterion, db: &BenchDb) {
    let dir = tempfile::tempdir().expect("tempdir");
    let value = json!({"lang": "en", "words": 812, "readability": 61.5, "keywords": ["rust", "sqlite"]});
    let ttl = Duration::from_secs(3600);
    for mode in [WriteMode::Sqlite, WriteMode::Dual, WriteMode::PostgresPrimary, WriteMode::Postgres] {
        // PostgreSQL first: a database of its own. Entering the mode empties PostgreSQL's outbox,
        // and SQLite follows every record in it, so no other bridge may write there.
        let own_db = mode.postgres_first().then(|| BenchDb::create(mode.as_str()));
        let db = own_db.as_ref().unwrap_or(db);
        let mut group = c.benchmark_group(format!("write/{mode}"));

        // The typed Rust API.
        let b = rust_bridge(&dir, db, &format!("rust_{mode}"));
        set_write_mode_rust(&b, mode);
        let job = running_job_rust(&b);
        let log = NewJobLog {
            step: Some("fetch".into()),
            context: Some(context()),
            ..NewJobLog::new(job, LogLevel::Info, MESSAGE)
        };
        group.bench_function("rust/append_log", |bench| {
            bench.iter(|| black_box(b.append_job_log(&log).expect("append")))
        });
        let mut i = 0usize;
        group.bench_function("rust/set_progress", |bench| {
            bench.iter(|| {
                i += 1;
                black_box(b.set_job_progress(job, &progress(i)).expect("progress"))
            })
        });
        let keys: Vec<String> = (0..CACHE_KEYS).map(|k| format!("analysis:{k:04}")).collect();
        let mut i = 0usize;
        group.bench_function("rust/cache_put", |bench| {
            bench.iter(|| {
                i += 1;
                black_box(b.cache_put(Cache::TextAnalytics, &keys[i % CACHE_KEYS], &value, ttl).expect("put"))
            })
        });
        finish_bridge(&b, mode);
        drop(b);
        if mode.postgres_first() {
            // The C ABI adds the same JSON work in every mode: measured in `sqlite` and `dual`.
            group.finish();
            continue;
        }

        // The C ABI: JSON text in, JSON text out, freed.
        let mut cb = c_bridge(&dir, db, &format!("c_{mode}"));
        set_write_mode_c(&mut cb, mode);
        let job = running_job_c(&cb);
        let op = c"jobs.append_log";
        let args = CString::new(
            json!({"job_id": job, "level": "info", "step": "fetch", "message": MESSAGE, "context": context()})
                .to_string(),
        )
        .unwrap();
        group.bench_function("c_abi/append_log", |bench| bench.iter(|| cb.call(op, &args)));
        let progress_args = cstrings(100, |i| json!({"id": job, "progress": progress(i)}));
        let mut i = 0usize;
        group.bench_function("c_abi/set_progress", |bench| {
            bench.iter(|| {
                i += 1;
                cb.call(c"jobs.set_progress", &progress_args[i % 100])
            })
        });
        let put_args = cstrings(
            CACHE_KEYS,
            |k| json!({"cache": "text_analytics", "key": format!("analysis:{k:04}"), "value": value, "ttl_seconds": 3600}),
        );
        let mut i = 0usize;
        group.bench_function("c_abi/cache_put", |bench| {
            bench.iter(|| {
                i += 1;
                cb.call(c"cache.put", &put_args[i % CACHE_KEYS])
            })
        });
        drop(cb); // dw_bridge_close drains the replicator (up to 60 s) before the next group.
        group.finish();
    }
}

/// Between groups: let a dual-mode replicator catch up, then stop it, so its work never lands
/// in the next benchmark's measurement.
fn finish_bridge(b: &Bridge, mode: WriteMode) {
    if mode == WriteMode::Dual {
        b.flush(Duration::from_secs(120)).expect("flush after the dual-mode writes");
    }
    b.shutdown(Duration::from_secs(5));
}

// ----- reads -----

fn reads(c: &mut Criterion, db: &BenchDb) {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = rust_bridge(&dir, db, "reads");
    let job = running_job_rust(&b);
    for i in 0..50 {
        let log =
            NewJobLog { context: Some(json!({"i": i})), ..NewJobLog::new(job, LogLevel::Info, MESSAGE) };
        b.append_job_log(&log).expect("append");
    }
    let value = json!({"lang": "en", "words": 812});
    b.cache_put(Cache::TextAnalytics, "analysis:hit", &value, Duration::from_secs(3600)).expect("put");
    b.flush(Duration::from_secs(60)).expect("flush the fixture");
    let page = Paging::first(50);

    for source in [ReadSource::Sqlite, ReadSource::Postgres, ReadSource::Shadow] {
        b.set_flag(FlagChange::ReadSource(source), "hot_paths bench", "benchmark set-up", true)
            .expect("set read_source");
        let jobs_before = b.status().expect("status").reads.get("jobs").cloned().unwrap_or_default();
        let mut group = c.benchmark_group(format!("read/{source}"));
        group.bench_function("get_job", |bench| {
            bench.iter(|| black_box(b.get_job(job).expect("get").expect("found")))
        });
        group.bench_function("job_logs", |bench| {
            bench.iter(|| {
                let logs = b.list_job_logs(job, page).expect("list");
                assert_eq!(logs.len(), 50);
                black_box(logs)
            })
        });
        group.bench_function("cache_hit", |bench| {
            bench
                .iter(|| black_box(b.get("text_analytics_cache", "analysis:hit").expect("get").expect("hit")))
        });
        if source == ReadSource::Sqlite {
            group.bench_function("cache_get_typed", |bench| {
                bench.iter(|| {
                    black_box(b.cache_get(Cache::TextAnalytics, "analysis:hit").expect("get").expect("hit"))
                })
            });
        }
        group.finish();
        // Every read of this group really came from where the group says (nothing to check when
        // a filter skipped its benchmarks: the counters did not move).
        let now = b.status().expect("status").reads.get("jobs").cloned().unwrap_or_default();
        let (served_sqlite, served_pg) =
            (now.sqlite - jobs_before.sqlite, now.postgres - jobs_before.postgres);
        match source {
            ReadSource::Postgres => assert!(
                served_sqlite == 0 && now.fallbacks == jobs_before.fallbacks,
                "{now:?} (before the group: {jobs_before:?})"
            ),
            _ => assert_eq!(served_pg, 0, "{now:?} (before the group: {jobs_before:?})"),
        }
    }
    b.shutdown(Duration::from_secs(5));
    drop(b);

    // The same reads through the C ABI (read source sqlite), next to `read/sqlite/*`.
    let cb = c_bridge(&dir, db, "reads_c");
    let job = running_job_c(&cb);
    for _ in 0..50 {
        cb.call_text("jobs.append_log", &json!({"job_id": job, "level": "info", "message": MESSAGE}));
    }
    cb.call_text(
        "cache.put",
        &json!({"cache": "text_analytics", "key": "analysis:hit", "value": value, "ttl_seconds": 3600}),
    );
    let mut group = c.benchmark_group("read/sqlite/c_abi");
    let get = CString::new(json!({"id": job}).to_string()).unwrap();
    group.bench_function("get_job", |bench| bench.iter(|| cb.call(c"jobs.get", &get)));
    let logs = CString::new(json!({"job_id": job, "limit": 50}).to_string()).unwrap();
    group.bench_function("job_logs", |bench| bench.iter(|| cb.call(c"jobs.list_logs", &logs)));
    let hit = CString::new(json!({"cache": "text_analytics", "key": "analysis:hit"}).to_string()).unwrap();
    group.bench_function("cache_get_typed", |bench| bench.iter(|| cb.call(c"cache.get", &hit)));
    group.finish();
}

/// Pending changes of other rows behind which `read/pending_check/*/backlog` probes.
const BACKLOG: usize = 10_000;

fn pending_check(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut conn = dualwrite::store::sqlite::open(&dir.path().join("pending.sqlite3")).expect("open sqlite");
    dualwrite::migrate_sqlite(&mut conn).expect("migrate sqlite");
    let key = Uuid::now_v7().to_string();
    let mut group = c.benchmark_group("read/pending_check");
    let probe = |group: &mut criterion::BenchmarkGroup<'_, _>, outbox: &str, conn: &rusqlite::Connection| {
        group.bench_function(format!("row/{outbox}"), |bench| {
            bench.iter(|| {
                let pending = Outbox::holds_unapplied(conn, "jobs", Some(&key)).expect("probe");
                assert!(!pending);
            })
        });
        group.bench_function(format!("table/{outbox}"), |bench| {
            bench.iter(|| assert!(!Outbox::holds_unapplied(conn, "jobs", None).expect("probe")))
        });
    };
    probe(&mut group, "empty", &conn);
    // A backlog of job_logs changes, as the outbox holds them while PostgreSQL is down.
    let tx = conn.transaction().expect("begin");
    for _ in 0..BACKLOG {
        tx.execute(
            "INSERT INTO _dualwrite_outbox (table_name, row_key, op, row_image, created_at) \
             VALUES ('job_logs', ?1, 'upsert', '{}', ?2)",
            rusqlite::params![Uuid::now_v7().to_string(), now_timestamp()],
        )
        .expect("outbox record");
    }
    tx.commit().expect("commit");
    probe(&mut group, "backlog", &conn);
    group.finish();
}

// ----- the replicator's apply -----

static SEQ: AtomicI64 = AtomicI64::new(1);

/// `n` job_logs outbox records as the bridge writes them: the wire image of a validated row,
/// consecutive revisions.
fn job_log_records(job: &str, n: usize) -> Vec<OutboxRecord> {
    let t = dualwrite::schema::table("job_logs").expect("job_logs");
    (0..n)
        .map(|i| {
            let row = validate_row(
                t,
                &json!({"job_id": job, "level": "info", "step": "fetch", "message": MESSAGE,
                        "context": {"attempt": i % 5, "http_status": 200, "results": i % 97}}),
                RowMode::Insert,
            )
            .expect("valid row");
            OutboxRecord {
                seq: SEQ.fetch_add(1, Ordering::Relaxed),
                table_name: "job_logs".into(),
                row_key: row["id"].as_str().unwrap().to_string(),
                op: Op::Upsert,
                created_at: row["created_at"].as_str().unwrap().to_string(),
                row_image: Some(serde_json::to_string(&row).unwrap()),
            }
        })
        .collect()
}

fn replicate(c: &mut Criterion, db: &BenchDb) {
    let mut client = db.config.connect().expect("connect");
    let jobs = dualwrite::schema::table("jobs").expect("jobs");
    let job = validate_row(jobs, &json!({"type": "crawl"}), RowMode::Insert).expect("job");
    let job_id = job["id"].as_str().unwrap().to_string();
    let record = OutboxRecord {
        seq: SEQ.fetch_add(1, Ordering::Relaxed),
        table_name: "jobs".into(),
        row_key: job_id.clone(),
        op: Op::Upsert,
        created_at: job["queued_at"].as_str().unwrap().to_string(),
        row_image: Some(serde_json::to_string(&job).unwrap()),
    };
    apply_batch(&mut client, &[record], true).expect("apply the parent job");

    let mut group = c.benchmark_group("replicate");
    group.bench_function("apply_batch_1000_job_logs", |bench| {
        bench.iter_batched(
            || job_log_records(&job_id, 1000),
            |records| {
                let applied = apply_batch(&mut client, &records, true).expect("apply");
                assert_eq!(applied.written, 1000);
            },
            BatchSize::PerIteration,
        )
    });
    let replay = job_log_records(&job_id, 1000);
    apply_batch(&mut client, &replay, true).expect("apply once");
    group.bench_function("apply_batch_1000_job_logs_replayed", |bench| {
        bench.iter(|| {
            let applied = apply_batch(&mut client, &replay, true).expect("apply");
            assert_eq!(applied.written, 0);
        })
    });
    group.finish();
}

// ----- the SQLite follower -----

/// Captured transactions the follower benchmark takes per iteration (criterion's test mode: 40).
const CAPTURED_TXNS: usize = 2_000;

/// `n` transactions of plain SQL (a new service's writes) in a database of their own, read from a
/// logical slot as pgoutput messages. The slot is dropped before the database.
fn captured_messages(n: usize) -> Vec<Vec<u8>> {
    use dualwrite::capture::slot;
    let db = BenchDb::create("capture");
    let mut client = db.config.connect().expect("connect");
    slot::ensure(&mut client)
        .expect("a capture slot (wal_level=logical: scripts/bench starts PostgreSQL so)");
    let job = Uuid::now_v7();
    client
        .execute("INSERT INTO jobs (id, type, payload) VALUES ($1, 'crawl', '{\"depth\": 2}')", &[&job])
        .expect("job");
    let vector: Vec<String> = (0..384).map(|i| format!("{}", (i as f32 * 0.37).sin())).collect();
    let vector = format!("[{}]", vector.join(","));
    for i in 0..n {
        let sql = match i % 4 {
            0 | 2 => format!(
                "INSERT INTO job_logs (id, job_id, level, step, message, context) VALUES ('{}', '{job}', 'info', \
                 'fetch', '{MESSAGE}', '{{\"attempt\": {}, \"http_status\": 200, \"results\": {}}}')",
                Uuid::now_v7(),
                i % 5,
                i % 97
            ),
            1 => format!("UPDATE jobs SET progress = {}.5, status = 'running' WHERE id = '{job}'", i % 100),
            _ if i % 8 == 3 => format!(
                "INSERT INTO text_analytics_cache (cache_key, value, expires_at) VALUES ('k{}', \
                 '{{\"score\": 0.{i}, \"words\": [\"rust\", \"sqlite\"]}}', now() + interval '1 hour') \
                 ON CONFLICT (cache_key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
                i % CACHE_KEYS
            ),
            _ => format!(
                "INSERT INTO embeddings (id, text_hash, vector, model) VALUES ('{}', 'h{i}', '{vector}', 'mini')",
                Uuid::now_v7()
            ),
        };
        client.batch_execute(&sql).expect("a foreign write");
    }
    slot::decoding_session(&mut client).expect("decoding session");
    let sql = format!(
        "SELECT data FROM pg_logical_slot_peek_binary_changes({}, NULL, NULL, 'proto_version', '1', \
         'publication_names', '{}')",
        slot::SLOT_SQL,
        slot::PUBLICATION
    );
    let messages = client.query(&sql, &[]).expect("peek").iter().map(|r| r.get::<_, Vec<u8>>(0)).collect();
    slot::drop_slot(&mut client).expect("drop the slot");
    messages
}

fn capture(c: &mut Criterion) {
    use dualwrite::capture::{decode::Assembler, follow};
    let n = if test_mode() { 40 } else { CAPTURED_TXNS };
    let messages = captured_messages(n);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut conn = dualwrite::store::sqlite::open(&dir.path().join("follower.sqlite3")).expect("open sqlite");
    dualwrite::migrate_sqlite(&mut conn).expect("migrate sqlite");
    follow::CaptureState::set_era(&conn, follow::Era::PostgresFirst).expect("era");
    // Never used: every value converts (a refetch would fail for want of a server).
    let (pg, _) = server();
    let decode = |messages: &[Vec<u8>]| {
        let mut asm = Assembler::default();
        for m in messages {
            asm.push(m).expect("decode");
        }
        asm.finish().expect("whole transactions")
    };
    let changes: usize = decode(&messages).iter().map(|t| t.changes.len()).sum();
    assert_eq!(changes, n + 1, "one change per transaction, and the job");
    let mut group = c.benchmark_group("capture");
    group.throughput(Throughput::Elements(changes as u64));
    group.bench_function(BenchmarkId::new("follow", format!("{n}_mixed")), |bench| {
        bench.iter(|| {
            let txns = decode(&messages);
            let target = txns.last().map_or(0, |t| t.end_lsn);
            let tx = conn.transaction().expect("begin");
            let mut refetch = follow::Refetcher::new(&pg);
            let taken = follow::take(&tx, &mut refetch, &txns, target).expect("take");
            assert_eq!(taken.applied, changes);
            tx.rollback().expect("rollback");
        })
    });
    group.finish();
}

// ----- the canonical-row checksum -----

/// job_logs rows the checksum benchmark digests per iteration (criterion's test mode: 100).
const DIGEST_ROWS: usize = 10_000;

/// `n` job_logs rows as SQLite stores them, each as `verify` selects it (the registry's column
/// order): written to a migrated file in one transaction, read back in key order.
fn sqlite_job_log_rows(n: usize) -> Vec<Vec<SqlValue>> {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut conn = dualwrite::store::sqlite::open(&dir.path().join("digest.sqlite3")).expect("open sqlite");
    dualwrite::migrate_sqlite(&mut conn).expect("migrate sqlite");
    let t = dualwrite::schema::table("job_logs").expect("job_logs");
    let tx = conn.transaction().expect("begin");
    let job = Uuid::now_v7().to_string();
    tx.execute(
        "INSERT INTO jobs (id, type, queued_at) VALUES (?1, 'crawl', ?2)",
        rusqlite::params![job, now_timestamp()],
    )
    .expect("insert job");
    {
        let mut insert = tx
            .prepare(
                "INSERT INTO job_logs (id, job_id, level, step, message, context, created_at) \
                 VALUES (?1, ?2, 'info', 'fetch', ?3, ?4, ?5)",
            )
            .expect("prepare");
        for i in 0..n {
            let context = json!({"attempt": i % 5, "http_status": 200, "results": i % 97,
                                 "url": format!("https://example.com/search?q={i}")});
            insert
                .execute(rusqlite::params![
                    Uuid::now_v7().to_string(),
                    job,
                    MESSAGE,
                    context.to_string(),
                    now_timestamp()
                ])
                .expect("insert job log");
        }
    }
    tx.commit().expect("commit");
    let cols = t.column_names().collect::<Vec<_>>().join(", ");
    let mut stmt = conn.prepare(&format!("SELECT {cols} FROM job_logs ORDER BY id")).expect("select");
    let rows = stmt
        .query_map([], |r| (0..t.columns.len()).map(|i| r.get::<_, SqlValue>(i)).collect())
        .expect("query")
        .collect::<rusqlite::Result<Vec<Vec<SqlValue>>>>()
        .expect("read rows");
    assert_eq!(rows.len(), n);
    rows
}

fn checksum(c: &mut Criterion) {
    let n = if test_mode() { 100 } else { DIGEST_ROWS };
    let t = dualwrite::schema::table("job_logs").expect("job_logs");
    let rows = sqlite_job_log_rows(n);
    let rows: Vec<Vec<ValueRef<'_>>> = rows.iter().map(|r| r.iter().map(ValueRef::from).collect()).collect();
    let mut group = c.benchmark_group("verify");
    group.throughput(Throughput::Elements(n as u64));
    group.bench_function(BenchmarkId::new("row_digest_job_logs", n), |bench| {
        bench.iter(|| {
            // As a verify chunk: every row's digest, XORed into the chunk's checksum.
            let mut chunk = [0u8; 16];
            for r in &rows {
                for (a, b) in chunk.iter_mut().zip(sqlite_row_digest(t, r)) {
                    *a ^= b;
                }
            }
            black_box(chunk)
        })
    });
    group.finish();
}

fn hot_paths(c: &mut Criterion) {
    let db = BenchDb::create("main");
    if test_mode() {
        eprintln!("hot_paths: test mode (each benchmark once) against {}", db.config.description);
    }
    writes(c, &db);
    reads(c, &db);
    pending_check(c);
    replicate(c, &db);
    capture(c);
    checksum(c);
}

criterion_group! {
    name = benches;
    // Writes wait for an fsync each (synchronous=FULL), whose latency drifts on a shared
    // machine: more samples over a longer window than criterion's default 5 s. Command-line
    // flags (--measurement-time, --sample-size, --quick) still override these.
    config = Criterion::default().measurement_time(Duration::from_secs(8)).warm_up_time(Duration::from_secs(2));
    targets = hot_paths
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
