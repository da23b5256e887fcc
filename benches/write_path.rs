//! The synchronous write path: what the outbox costs on top of a plain SQLite insert.
//!
//! Three ways to write one `job_logs` row, each one transaction (one commit) per row, all on a
//! connection with the bridge's pragmas (`store::sqlite::open`: WAL, synchronous=FULL, foreign
//! keys, busy timeout) and the migrated schema:
//!
//! - `sqlite_execute_autocommit`: `Connection::execute`, an implicit transaction per statement;
//! - `sqlite_prepared_tx`: a cached prepared statement in an explicit `BEGIN IMMEDIATE` … `COMMIT`
//!   (what the bridge itself does, minus the outbox): the fair baseline;
//! - `bridge_insert`: `Bridge::insert("job_logs", json)`: validation, `INSERT … RETURNING`, the
//!   outbox record, commit. Replication is off and no PostgreSQL is configured, so no PostgreSQL
//!   is needed and no replicator runs beside the writer.
//!
//! Every criterion sample starts on a fresh, migrated file (set up outside the timed section), so
//! the three see the same file sizes, and a sample never depends on how many writes earlier
//! samples made. The fourth benchmark is the exception on purpose:
//!
//! - `bridge_insert_after_50k`: `Bridge::insert` on a bridge that has already made
//!   [`BACKLOG`] writes which were never replicated (a bridge without PostgreSQL, or one whose
//!   replication lags): the steady state of a long-running SQLite-only process.
//!
//! Full run: `cargo bench --bench write_path`. Quick checks (CI): `cargo bench --bench write_path
//! -- --quick`, or `cargo test --benches` (each benchmark once, with a backlog of 100 instead of
//! 50 001). See docs/BENCHMARKS.md. Files live under `$TMPDIR` (default `/tmp`): put it on the
//! disk you care about, since each commit waits for an fsync there.

use criterion::{criterion_group, criterion_main, Criterion};
use dualwrite::schema::now_timestamp;
use dualwrite::store::sqlite;
use dualwrite::{Bridge, BridgeOptions, Config, KeySource};
use rusqlite::{params, Connection, TransactionBehavior};
use serde_json::{json, Value};
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};
use tempfile::TempDir;

const INSERT_JOB_LOG: &str = "INSERT INTO job_logs (id, job_id, level, step, message, context, created_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
const MESSAGE: &str = "fetched 10 results for keyword \"rust sqlite outbox\" in 412 ms";

/// Unreplicated writes made before `bridge_insert_after_50k` is measured: just past the 50 000
/// at which the bridge starts pruning its read-your-writes memory (`src/reads.rs`).
const BACKLOG: usize = 50_001;
/// The same in criterion's test mode (`cargo test --benches`), which only checks the bench runs.
const BACKLOG_TEST_MODE: usize = 100;

/// The row's context, as the application would hand it over.
fn context() -> Value {
    json!({"attempt": 1, "http_status": 200, "results": 10})
}

/// A migrated SQLite file opened with the bridge's pragmas, holding one job to log against.
fn plain_store() -> (TempDir, Connection, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut conn = sqlite::open(&dir.path().join("plain.sqlite3")).expect("open sqlite");
    dualwrite::migrate_sqlite(&mut conn).expect("migrate sqlite");
    let sync: i64 = conn.pragma_query_value(None, "synchronous", |r| r.get(0)).expect("pragma");
    assert_eq!(sync, 2, "the bridge's connections use synchronous=FULL");
    let job = uuid::Uuid::now_v7().to_string();
    conn.execute(
        "INSERT INTO jobs (id, type, queued_at) VALUES (?1, 'crawl', ?2)",
        params![job, now_timestamp()],
    )
    .expect("insert job");
    (dir, conn, job)
}

/// A bridge on its own SQLite file: migrated on open, replication off, no PostgreSQL.
fn bridge_store() -> (TempDir, Bridge, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config {
        sqlite_path: dir.path().join("bridge.sqlite3"),
        postgres: None,
        // No secret key: job_logs has no secret column, so none is needed.
        key_source: KeySource::Env("DUALWRITE_BENCH_NO_KEY".into()),
    };
    let bridge =
        Bridge::open(config, BridgeOptions { replicate: false, ..Default::default() }).expect("open bridge");
    let job = bridge.insert("jobs", &json!({"type": "crawl"})).expect("insert job");
    let job = job["id"].as_str().expect("job id").to_string();
    (dir, bridge, job)
}

fn plain_execute(conn: &Connection, job: &str) -> usize {
    let id = uuid::Uuid::now_v7().to_string();
    let ctx = context().to_string();
    conn.execute(INSERT_JOB_LOG, params![id, job, "info", "fetch", MESSAGE, ctx, now_timestamp()])
        .expect("insert")
}

fn plain_prepared_tx(conn: &mut Connection, job: &str) -> usize {
    let id = uuid::Uuid::now_v7().to_string();
    let ctx = context().to_string();
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).expect("begin");
    let n = tx
        .prepare_cached(INSERT_JOB_LOG)
        .expect("prepare")
        .execute(params![id, job, "info", "fetch", MESSAGE, ctx, now_timestamp()])
        .expect("insert");
    tx.commit().expect("commit");
    n
}

fn bridge_insert(bridge: &Bridge, job: &str) -> dualwrite::Row {
    let row = json!({
        "job_id": job,
        "level": "info",
        "step": "fetch",
        "message": MESSAGE,
        "context": context(),
    });
    bridge.insert("job_logs", &row).expect("bridge insert")
}

/// Criterion's test mode: `cargo test --benches` runs the bench binary without `--bench`.
fn test_mode() -> bool {
    !std::env::args().any(|a| a == "--bench")
}

fn write_path(c: &mut Criterion) {
    let mut group = c.benchmark_group("write_path");

    group.bench_function("sqlite_execute_autocommit", |b| {
        b.iter_custom(|iters| {
            let (_dir, conn, job) = plain_store();
            let start = Instant::now();
            for _ in 0..iters {
                black_box(plain_execute(&conn, &job));
            }
            start.elapsed()
        })
    });

    group.bench_function("sqlite_prepared_tx", |b| {
        b.iter_custom(|iters| {
            let (_dir, mut conn, job) = plain_store();
            let start = Instant::now();
            for _ in 0..iters {
                black_box(plain_prepared_tx(&mut conn, &job));
            }
            start.elapsed()
        })
    });

    group.bench_function("bridge_insert", |b| {
        b.iter_custom(|iters| {
            let (_dir, bridge, job) = bridge_store();
            let start = Instant::now();
            for _ in 0..iters {
                black_box(bridge_insert(&bridge, &job));
            }
            start.elapsed()
        })
    });

    // Set up once, on first use (criterion calls the closure once per sample), and only when
    // this benchmark is selected: the backlog takes a while to write.
    let mut backlogged: Option<(TempDir, Bridge, String)> = None;
    group.bench_function("bridge_insert_after_50k", |b| {
        let (_, bridge, job) = backlogged.get_or_insert_with(|| {
            let store = bridge_store();
            let n = if test_mode() { BACKLOG_TEST_MODE } else { BACKLOG };
            for _ in 1..n {
                bridge_insert(&store.1, &store.2);
            }
            store
        });
        b.iter(|| black_box(bridge_insert(bridge, job)))
    });

    group.finish();
}

criterion_group! {
    name = benches;
    // Each write waits for an fsync, whose latency varies with whatever else uses the disk: a
    // longer window than criterion's 5 s default. Command-line flags (--measurement-time,
    // --sample-size, --quick) still override these.
    config = Criterion::default().measurement_time(Duration::from_secs(15)).sample_size(100);
    targets = write_path
}
criterion_main!(benches);
