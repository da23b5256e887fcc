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
//! -- --quick`, or `cargo test --benches` (each benchmark once); both use a backlog of 100 instead
//! of 50 001 (`DUALWRITE_BENCH_BACKLOG=N` overrides). On a shared machine, where fsync latency
//! drifts, `DUALWRITE_BENCH_INTERLEAVED=30 cargo bench --bench write_path` alternates the three
//! paths instead (see [`interleaved`]). See docs/BENCHMARKS.md. Files live under `$TMPDIR`
//! (default `/tmp`): put it on the disk you care about, since each commit waits for an fsync there.

use criterion::{criterion_group, Criterion};
use dualwrite::schema::now_timestamp;
use dualwrite::store::sqlite;
use dualwrite::{Bridge, BridgeOptions, Config, KeySource};
use rusqlite::{params, Connection, TransactionBehavior};
use serde_json::{json, Value};
use std::hint::black_box;
use std::time::{Duration, Instant};
use tempfile::TempDir;

const INSERT_JOB_LOG: &str = "INSERT INTO job_logs (id, job_id, level, step, message, context, created_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
const MESSAGE: &str = "fetched 10 results for keyword \"rust sqlite outbox\" in 412 ms";

/// Unreplicated writes made before `bridge_insert_after_50k` is measured: just past the 50 000
/// at which the bridge starts pruning its read-your-writes memory (`src/reads.rs`).
const BACKLOG: usize = 50_001;
/// The backlog in the quick modes, which only check that the benchmark runs.
const BACKLOG_SMOKE: usize = 100;

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

/// How many writes `bridge_insert_after_50k` makes first: `DUALWRITE_BENCH_BACKLOG` if set, else
/// [`BACKLOG`], or [`BACKLOG_SMOKE`] in criterion's test mode (`cargo test --benches` runs the
/// binary without `--bench`) and with `--quick`, where writing 50 001 rows one fsync at a time
/// would take most of the run.
fn backlog() -> usize {
    if let Some(n) = std::env::var("DUALWRITE_BENCH_BACKLOG").ok().and_then(|v| v.parse().ok()) {
        return n;
    }
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") || args.iter().any(|a| a == "--quick") {
        BACKLOG_SMOKE
    } else {
        BACKLOG
    }
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
            for _ in 1..backlog() {
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

/// `DUALWRITE_BENCH_INTERLEAVED=ROUNDS cargo bench --bench write_path`: instead of criterion,
/// alternate the three paths in rounds of [`ROUND_WRITES`] writes each (rotating which goes first)
/// and report the median over rounds of each path's time per write and of the paired ratios. On a
/// shared machine fsync latency drifts by an order of magnitude within minutes; criterion measures
/// one path after the other, so its medians can compare a quiet minute with a busy one, while a
/// ratio taken within one round compares like with like.
fn interleaved(rounds: usize) {
    const ROUND_WRITES: u32 = 200;
    assert!(
        rounds * ROUND_WRITES as usize + 1 < 50_000,
        "stay below the bridge's 50 000-write pruning point"
    );
    let (_d1, conn_exec, job_exec) = plain_store();
    let (_d2, mut conn_tx, job_tx) = plain_store();
    let (_d3, bridge, job_bridge) = bridge_store();
    let names = ["sqlite_execute_autocommit", "sqlite_prepared_tx", "bridge_insert"];
    let mut per_write: [Vec<f64>; 3] = Default::default();
    for round in 0..rounds {
        for k in 0..3 {
            let path = (round + k) % 3;
            let start = Instant::now();
            for _ in 0..ROUND_WRITES {
                match path {
                    0 => drop(black_box(plain_execute(&conn_exec, &job_exec))),
                    1 => drop(black_box(plain_prepared_tx(&mut conn_tx, &job_tx))),
                    _ => drop(black_box(bridge_insert(&bridge, &job_bridge))),
                }
            }
            per_write[path].push(start.elapsed().as_secs_f64() * 1e6 / f64::from(ROUND_WRITES));
        }
    }
    fn median(mut v: Vec<f64>) -> f64 {
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    }
    fn quartiles(mut v: Vec<f64>) -> (f64, f64) {
        v.sort_by(f64::total_cmp);
        (v[v.len() / 4], v[(3 * v.len()) / 4])
    }
    println!("interleaved: {rounds} rounds x {ROUND_WRITES} writes per path");
    println!("| path | median us/write | quartiles |");
    println!("| --- | ---: | --- |");
    for (i, name) in names.iter().enumerate() {
        let (q1, q3) = quartiles(per_write[i].clone());
        println!("| `{name}` | {:.1} | {q1:.1} to {q3:.1} |", median(per_write[i].clone()));
    }
    for (num, den) in [(2, 1), (2, 0), (1, 0)] {
        let ratios: Vec<f64> = per_write[num].iter().zip(&per_write[den]).map(|(a, b)| a / b).collect();
        let (q1, q3) = quartiles(ratios.clone());
        println!(
            "ratio {} / {}: median of per-round ratios {:.2} (quartiles {q1:.2} to {q3:.2}); ratio of medians {:.2}",
            names[num],
            names[den],
            median(ratios),
            median(per_write[num].clone()) / median(per_write[den].clone())
        );
    }
}

fn main() {
    if let Ok(v) = std::env::var("DUALWRITE_BENCH_INTERLEAVED") {
        interleaved(v.parse().unwrap_or(30));
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
