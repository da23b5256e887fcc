//! The workload runner: the monolith's operation mix against each configuration, and the
//! measurements behind the cut-over targets (docs/BENCHMARKS.md). `scripts/bench` runs it.
//!
//! ```text
//! cargo bench --bench workload -- compare
//!     [--configs sqlite,dual-sqlite,dual-postgres,postgres-primary,postgres-bridge,postgres]
//!     [--duration 20 | --count N] [--rate 400] [--concurrency 4] [--json] [--out FILE]
//! cargo bench --bench workload -- targets [--drain-rows 200000] [--lag-rate 2000] [--lag-secs 30]
//!     [--outage-secs 60] [--outage-rate 1000] [--json] [--out FILE]
//! cargo bench --bench workload -- report --criterion target/criterion --compare FILE
//!     [--capacity FILE] --targets FILE [--doc docs/BENCHMARKS.md]
//! ```
//!
//! **Configurations** (`compare`), in the order of the migration's steps: `sqlite` (write_mode
//! sqlite: the rollback target; changes are captured in the outbox, nothing is applied),
//! `dual-sqlite` (write_mode dual, reads from SQLite), `dual-postgres` (write_mode dual,
//! read_source postgres: reads from PostgreSQL with read-your-writes), `postgres-primary`
//! (write_mode postgres_primary: each write is one PostgreSQL transaction on a pooled connection,
//! no SQLite lock; SQLite follows from the change capture; every read from PostgreSQL),
//! `postgres-bridge` (write_mode postgres: the bridge writes and reads PostgreSQL only, SQLite
//! frozen), and `postgres`: **not the
//! bridge** — the same operations done directly with SQL through the `postgres` crate (one
//! connection per worker, the same schema, indexes and foreign keys), the baseline the new
//! services would see. The two PostgreSQL-first configurations are seeded in write mode dual and
//! then switched with `set_flag` (not forced: the guard rails pass, nothing is pending), as the
//! runbook does. Each configuration runs in a child process of its own (a fresh SQLite file, a
//! fresh PostgreSQL database), so its peak RSS (`VmHWM`) is its own.
//!
//! **The mix** (per 100 operations): 30 `append_log`, 10 `set_progress`, 6 `cache_put`,
//! 4 `submit_job`, 4 `add_page`, 4 `add_headings` (5 headings, one transaction) — 58 writes — and
//! 20 `cache_get` (90 % hits), 12 `prompt_latest`, 5 `get_job`, 5 `job_logs` (a job's first
//! 20 logs) — 42 reads. Seeded first: 100 running jobs, 20 pages, 500 entries in each cache,
//! 5 prompts of 3 versions.
//!
//! **Rate**: `--rate R` spreads R operations per second over the workers on a fixed schedule, and
//! each latency is measured from the operation's *scheduled* start, so a stall that delays later
//! operations is counted in them (no coordinated omission). `--rate 0` is closed-loop: each worker
//! starts its next operation when the last one returns (the capacity of the configuration), and
//! latency is the call's own time.
//!
//! **Replication lag**: for every job_logs row written, the runner keeps the instant the write
//! returned (after SQLite's commit) and, after the run, asks PostgreSQL when the replicator's
//! transaction that applied it committed (`pg_xact_commit_timestamp(xmin)`, which needs
//! `track_commit_timestamp = on`; scripts/bench starts PostgreSQL with it). lag = PostgreSQL's
//! commit − the write's return, on the same clock, for every row rather than a sample. job_logs
//! are 30 % of the writes and travel in the same ordered stream as the others. Without
//! `track_commit_timestamp` the runner falls back to `status().oldest_pending_ms` sampled every
//! 100 ms, and says so.
//!
//! **Outbox peak**: `status().outbox_depth`, sampled every 100 ms. **Peak RSS**: `VmHWM` of the
//! child process at its end (after the post-run catch-up).
//!
//! In `postgres-primary` a write returns after PostgreSQL's commit and SQLite follows from the
//! change capture in the background: its lag column is the **SQLite follower's** lag (when each
//! job_logs row appeared in SQLite, polled every 2 ms, − when its write returned), and catch-up
//! is `Bridge::wait_for_sqlite` after the run. In `postgres-bridge` SQLite is frozen: no lag,
//! "n/a" (an "—" means not measured: write mode sqlite replicates nothing, direct SQL has no
//! bridge).
//!
//! Without `--bench` (criterion-style test mode: `cargo test --benches`), it runs every
//! configuration and every target for a moment at a tiny scale, so it cannot rot.

/// The fault tests' TCP proxy, and only that file of tests/support: the rest of it belongs to
/// the tests (it needs their `common` module).
#[path = "support/cpu.rs"]
mod cpu;
#[path = "../tests/support/proxy.rs"]
#[allow(dead_code)]
mod proxy;

use clap::{Args, Parser, Subcommand};
use dualwrite::{
    Bridge, BridgeOptions, Cache, Config, FlagChange, HeadingLevel, JobPriority, KeySource, LogLevel,
    NewHeading, NewJob, NewJobLog, NewPage, Paging, PgConfig, ReadSource, WriteMode,
};
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use uuid::Uuid;

// ----- command line -----

#[derive(Parser)]
#[command(name = "workload", about = "dualwrite's workload runner (see benches/workload.rs)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the mix against each configuration and print one comparison table.
    Compare(CompareArgs),
    /// One configuration, in this process (what `compare` runs in each child); prints JSON.
    #[command(hide = true)]
    Run(RunArgs),
    /// Measure the cut-over targets: drain throughput, lag at a steady rate, outage recovery.
    Targets(TargetArgs),
    /// Render the tables of docs/BENCHMARKS.md from the results (and splice them into --doc).
    Report(ReportArgs),
    /// The change capture's cost to a writer that is not the bridge (a new service).
    CaptureCost(CaptureCostArgs),
}

#[derive(Args)]
struct CaptureCostArgs {
    /// Rounds; each runs both cases, in alternating order.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds per case.
    #[arg(long, default_value_t = 10.0)]
    secs: f64,
    /// Connections of the foreign writer (closed loop, autocommit inserts).
    #[arg(long, default_value_t = 4)]
    writers: usize,
}

#[derive(Args, Clone)]
struct Load {
    /// Seconds to run each configuration (ignored with --count).
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
    /// Run this many operations instead of a fixed time.
    #[arg(long)]
    count: Option<u64>,
    /// Operations per second over all workers; 0 = as fast as they go (closed loop).
    #[arg(long, default_value_t = 400.0)]
    rate: f64,
    /// Worker threads (the monolith's request threads).
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
}

#[derive(Args)]
struct CompareArgs {
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "sqlite,dual-sqlite,dual-postgres,postgres-primary,postgres-bridge,postgres"
    )]
    configs: Vec<String>,
    #[command(flatten)]
    load: Load,
    /// Print JSON instead of the table.
    #[arg(long)]
    json: bool,
    /// Also write the JSON results here.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args)]
struct RunArgs {
    #[arg(long)]
    config: String,
    #[command(flatten)]
    load: Load,
}

#[derive(Args)]
struct TargetArgs {
    /// job_logs rows in the backlog the drain target replicates.
    #[arg(long, default_value_t = 200_000)]
    drain_rows: usize,
    /// Outbox records per PostgreSQL transaction for the drain (default: the replicator's).
    #[arg(long)]
    drain_batch: Option<usize>,
    /// Writes per second for the lag target.
    #[arg(long, default_value_t = 2000.0)]
    lag_rate: f64,
    #[arg(long, default_value_t = 30.0)]
    lag_secs: f64,
    /// Length of the PostgreSQL outage, and the write rate during it.
    #[arg(long, default_value_t = 60.0)]
    outage_secs: f64,
    #[arg(long, default_value_t = 1000.0)]
    outage_rate: f64,
    /// Rounds of the interleaved dual-vs-sqlite write comparison.
    #[arg(long, default_value_t = 20)]
    dual_rounds: usize,
    /// Only these targets (dual, drain, lag, outage; follower-lag, not in the default set: the
    /// lag's steady writes with PostgreSQL as the primary and SQLite following).
    #[arg(long, value_delimiter = ',', default_value = "dual,drain,lag,outage")]
    only: Vec<String>,
    #[arg(long)]
    json: bool,
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args)]
struct ReportArgs {
    /// criterion's output directory (target/criterion).
    #[arg(long)]
    criterion: Option<PathBuf>,
    /// `compare --out` results at a fixed rate.
    #[arg(long)]
    compare: Option<PathBuf>,
    /// `compare --rate 0 --out` results (capacity).
    #[arg(long)]
    capacity: Option<PathBuf>,
    #[arg(long)]
    targets: Option<PathBuf>,
    /// scripts/bench-backfill's table (Markdown), for the backfill section.
    #[arg(long)]
    backfill: Option<PathBuf>,
    /// Markdown file whose generated sections are replaced (created when missing).
    #[arg(long)]
    doc: Option<PathBuf>,
    /// A text shown in the "Run" section (e.g. the machine load before and after).
    #[arg(long)]
    note: Option<String>,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        test_mode();
        return;
    }
    let rest = args.iter().filter(|a| *a != "--bench").cloned();
    let cli = Cli::parse_from(rest);
    match cli.cmd {
        Cmd::Compare(a) => compare(a),
        Cmd::Run(a) => {
            let r = run_config(&a.config, &a.load);
            println!("{}", serde_json::to_string(&r).unwrap());
        }
        Cmd::Targets(a) => targets(a),
        Cmd::Report(a) => report(a),
        Cmd::CaptureCost(a) => capture_cost(&a),
    }
}

// ----- the capture's cost to a foreign writer -----

/// A service's writes (plain SQL, autocommit inserts into job_logs, closed loop, `writers`
/// connections) with the capture slot idle (no process of the monolith runs: nothing decodes,
/// PostgreSQL only keeps the WAL) and with it streamed by a bridge in `postgres_primary`, SQLite
/// following. Both run on `wal_level = logical` (the cluster's setting; `replica` against
/// `logical` needs a restart, so it is not part of this comparison). Interleaved rounds, the
/// order alternating, so the machine's drift falls on both.
fn capture_cost(a: &CaptureCostArgs) {
    let db = Db::create("capture_cost");
    let dir = tempfile::tempdir().expect("tempdir");
    let (b, fx) = dual_bridge(dir.path(), &db.config);
    set_flag(&b, FlagChange::WriteMode(WriteMode::PostgresPrimary));
    drop(b);
    let job = fx.jobs[0];
    println!("| round | slot | foreign inserts/s | p50 ms | p99 ms | load before |");
    println!("| --- | --- | ---: | ---: | ---: | --- |");
    let mut totals: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for round in 1..=a.rounds {
        let order = if round % 2 == 1 { ["idle", "streamed"] } else { ["streamed", "idle"] };
        for case in order {
            let bridge = (case == "streamed").then(|| {
                let b = Bridge::open(bridge_config(dir.path(), Some(&db.config)), BridgeOptions::default())
                    .expect("open");
                // The backlog of the idle case first: the measured seconds are the steady state.
                b.wait_for_sqlite(Duration::from_secs(300)).expect("SQLite catches up");
                b
            });
            let load = loadavg();
            let (rate, hist) = foreign_inserts(&db.config, job, a.writers, a.secs);
            if let Some(b) = &bridge {
                b.wait_for_sqlite(Duration::from_secs(300)).expect("SQLite follows the foreign writer");
            }
            drop(bridge);
            println!(
                "| {round} | {case} | {rate:.0} | {:.2} | {:.2} | {load} |",
                hist.value_at_quantile(0.5) as f64 / 1000.0,
                hist.value_at_quantile(0.99) as f64 / 1000.0
            );
            totals.entry(case).or_default().push(rate);
        }
    }
    let median = |v: &Vec<f64>| {
        let mut v = v.clone();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (idle, streamed) = (median(&totals["idle"]), median(&totals["streamed"]));
    println!(
        "\nmedian foreign inserts/s: slot idle {idle:.0}, slot streamed {streamed:.0}: {:.2}x",
        streamed / idle
    );
}

/// `writers` connections inserting job_logs rows as fast as they can for `secs`: rows/s and the
/// latency of each insert (µs).
fn foreign_inserts(pg: &PgConfig, job: Uuid, writers: usize, secs: f64) -> (f64, Histogram<u64>) {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let started = Instant::now();
    let handles: Vec<_> = (0..writers)
        .map(|_| {
            let pg = pg.clone();
            std::thread::spawn(move || {
                let mut c = pg.connect().expect("connect");
                let st = c
                    .prepare(
                        "INSERT INTO job_logs (id, job_id, level, step, message, created_at) \
                         VALUES ($1, $2, 'info', 'service', $3, now())",
                    )
                    .expect("prepare");
                let mut hist = new_hist();
                while Instant::now() < deadline {
                    let t = Instant::now();
                    c.execute(&st, &[&Uuid::now_v7(), &job, &MESSAGE]).expect("foreign insert");
                    hist.record(t.elapsed().as_micros().max(1) as u64).expect("record");
                }
                hist
            })
        })
        .collect();
    let mut all = new_hist();
    for h in handles {
        all.add(h.join().expect("writer")).expect("merge");
    }
    (all.len() as f64 / started.elapsed().as_secs_f64(), all)
}

/// `cargo test --benches`: every code path once, small and quick; no timing is asserted.
fn test_mode() {
    eprintln!("workload: test mode (tiny runs; `cargo bench --bench workload -- --help` for real ones)");
    SMALL.store(true, Ordering::Relaxed);
    let load = Load { duration: 1.0, count: Some(150), rate: 0.0, concurrency: 2 };
    let mut results = Vec::new();
    for config in CONFIGS {
        let r = run_config(config, &load);
        assert!(r.ops_total >= 150, "{config}: {} operations", r.ops_total);
        assert_eq!(r.errors, 0, "{config}: {:?}", r.first_error);
        results.push(r);
    }
    print_table(&results);
    let t = TargetArgs {
        drain_rows: 2000,
        drain_batch: None,
        dual_rounds: 2,
        lag_rate: 200.0,
        lag_secs: 1.0,
        outage_secs: 1.0,
        outage_rate: 100.0,
        only: vec!["dual".into(), "drain".into(), "lag".into(), "follower-lag".into(), "outage".into()],
        json: false,
        out: None,
    };
    let r = run_targets(&t);
    println!("{}", render_targets(&r, None));
}

// ----- PostgreSQL -----

const NO_PG: &str = "the workload runner needs PostgreSQL: run scripts/bench (a throw-away PostgreSQL 15 via pg_virtualenv), \
or set DUALWRITE_PG_URL or the PGHOST/PGPORT/PGUSER/PGPASSWORD/PGDATABASE variables";

fn server() -> PgConfig {
    let env: HashMap<String, String> = std::env::vars().collect();
    match env.get("DUALWRITE_PG_URL").or_else(|| env.get("DATABASE_URL")) {
        Some(u) => PgConfig::from_url(u).expect("DUALWRITE_PG_URL is valid"),
        None => PgConfig::from_pg_vars(&env).expect(NO_PG),
    }
}

/// A migrated database of its own, dropped at the end.
struct Db {
    admin: PgConfig,
    name: String,
    config: PgConfig,
}

static DB_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Db {
    fn create(tag: &str) -> Db {
        let admin = server();
        let name = format!(
            "dw_wl_{}_{}_{}",
            tag.replace('-', "_"),
            std::process::id(),
            DB_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mut c = admin.connect().unwrap_or_else(|e| panic!("{e}\n{NO_PG}"));
        c.batch_execute(&format!("CREATE DATABASE {name}")).expect("create database");
        let config = admin.with_dbname(&name);
        dualwrite::migrate_postgres(&mut config.connect().expect("connect")).expect("migrate postgres");
        Db { admin, name, config }
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Ok(mut c) = self.admin.connect() {
            let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
        }
    }
}

fn track_commit_timestamp(pg: &PgConfig) -> bool {
    pg.connect()
        .ok()
        .and_then(|mut c| c.query_one("SHOW track_commit_timestamp", &[]).ok())
        .is_some_and(|r| r.get::<_, String>(0) == "on")
}

// ----- the mix -----

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Op {
    AppendLog,
    SetProgress,
    CachePut,
    SubmitJob,
    AddPage,
    AddHeadings,
    CacheGet,
    PromptLatest,
    GetJob,
    JobLogs,
}

/// (operation, weight per 100).
const MIX: &[(Op, u32)] = &[
    (Op::AppendLog, 30),
    (Op::SetProgress, 10),
    (Op::CachePut, 6),
    (Op::SubmitJob, 4),
    (Op::AddPage, 4),
    (Op::AddHeadings, 4),
    (Op::CacheGet, 20),
    (Op::PromptLatest, 12),
    (Op::GetJob, 5),
    (Op::JobLogs, 5),
];

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::AppendLog => "append_log",
            Op::SetProgress => "set_progress",
            Op::CachePut => "cache_put",
            Op::SubmitJob => "submit_job",
            Op::AddPage => "add_page",
            Op::AddHeadings => "add_headings",
            Op::CacheGet => "cache_get",
            Op::PromptLatest => "prompt_latest",
            Op::GetJob => "get_job",
            Op::JobLogs => "job_logs",
        }
    }

    fn pick(rng: &mut StdRng) -> Op {
        let mut n = rng.gen_range(0..100);
        for (op, w) in MIX {
            if n < *w {
                return *op;
            }
            n -= w;
        }
        unreachable!("weights add up to 100")
    }
}

const PROMPTS: usize = 5;

/// Test mode seeds less (each seeded write waits for an fsync).
static SMALL: AtomicBool = AtomicBool::new(false);

/// Seeded running jobs, pages, and entries per cache.
fn scale() -> (usize, usize, usize) {
    if SMALL.load(Ordering::Relaxed) {
        (10, 5, 20)
    } else {
        (100, 20, 500)
    }
}

/// What the operations pick from.
struct Fixture {
    jobs: Vec<Uuid>,
    pages: Vec<Uuid>,
}

fn cache_key(i: usize) -> String {
    format!("kw:{i:05}")
}

fn prompt_key(i: usize) -> String {
    format!("prompt.section.{i}")
}

fn cache_value(rng: &mut StdRng) -> Value {
    json!({"lang": "en", "words": rng.gen_range(200..3000), "readability": 61.5,
           "keywords": ["rust", "sqlite", "postgres"], "tone": "neutral"})
}

fn log_context(rng: &mut StdRng) -> Value {
    json!({"attempt": rng.gen_range(1..4), "http_status": 200, "results": rng.gen_range(0..100),
           "url": format!("https://example.com/search?q={}", rng.gen_range(0..100_000))})
}

const MESSAGE: &str = "fetched 10 results for keyword \"rust sqlite outbox\" in 412 ms";

/// One configuration's operations for one worker (one per worker thread: the size difference
/// between the variants does not matter).
#[allow(clippy::large_enum_variant)]
enum Backend {
    Bridge(Bridge),
    Pg(postgres::Client),
}

/// What an operation left behind for the lag measurement.
struct Written {
    job_log: Option<(Uuid, SystemTime)>,
}

fn exec(
    backend: &mut Backend,
    op: Op,
    fx: &Fixture,
    rng: &mut StdRng,
    last_page: &mut Option<Uuid>,
) -> Result<Written, String> {
    let job = fx.jobs[rng.gen_range(0..fx.jobs.len())];
    let mut written = Written { job_log: None };
    match backend {
        Backend::Bridge(b) => {
            let e = |e: dualwrite::Error| e.to_string();
            match op {
                Op::AppendLog => {
                    let log = NewJobLog {
                        step: Some("fetch".into()),
                        context: Some(log_context(rng)),
                        ..NewJobLog::new(job, LogLevel::Info, MESSAGE)
                    };
                    let row = b.append_job_log(&log).map_err(e)?;
                    written.job_log = Some((row.id, SystemTime::now()));
                }
                Op::SetProgress => {
                    let p = format!("{}.{}", rng.gen_range(0..100), rng.gen_range(0..10));
                    b.set_job_progress(job, &p).map_err(e)?;
                }
                Op::CachePut => {
                    let key = cache_key(rng.gen_range(0..scale().2));
                    b.cache_put(pick_cache(rng), &key, &cache_value(rng), Duration::from_secs(3600))
                        .map_err(e)?;
                }
                Op::SubmitJob => {
                    let new = NewJob {
                        payload: Some(json!({"keywords": ["rust", "sqlite"], "depth": 2})),
                        priority: Some(JobPriority::Normal),
                        ..NewJob::new("crawl")
                    };
                    b.submit_job(&new).map_err(e)?;
                }
                Op::AddPage => {
                    let page = NewPage {
                        title: Some("Rust and SQLite: a dual-write migration".into()),
                        lang: Some("en".into()),
                        content_hash: Some(format!("{:016x}", rng.gen::<u64>())),
                        source_job_id: Some(job),
                        ..NewPage::new(format!("https://example.com/p/{}", Uuid::new_v4()))
                    };
                    *last_page = Some(b.add_page(&page).map_err(e)?.id);
                }
                Op::AddHeadings => {
                    let page = last_page.unwrap_or(fx.pages[rng.gen_range(0..fx.pages.len())]);
                    let hs: Vec<NewHeading> = (0..5)
                        .map(|i| {
                            NewHeading::new(
                                if i == 0 { HeadingLevel::H1 } else { HeadingLevel::H2 },
                                format!("Section {i}: why outboxes work"),
                            )
                        })
                        .collect();
                    b.add_headings(page, &hs).map_err(e)?;
                }
                Op::CacheGet => {
                    let key = cache_lookup_key(rng);
                    b.cache_get(pick_cache(rng), &key).map_err(e)?;
                }
                Op::PromptLatest => {
                    b.latest_prompt(&prompt_key(rng.gen_range(0..PROMPTS))).map_err(e)?.ok_or("no prompt")?;
                }
                Op::GetJob => {
                    b.get_job(job).map_err(e)?.ok_or("no job")?;
                }
                Op::JobLogs => {
                    b.list_job_logs(job, Paging::first(20)).map_err(e)?;
                }
            }
        }
        Backend::Pg(c) => {
            let e = |e: postgres::Error| e.to_string();
            match op {
                Op::AppendLog => {
                    let id = Uuid::now_v7();
                    c.query_one(
                        "INSERT INTO job_logs (id, job_id, level, step, message, context, created_at)
                         VALUES ($1, $2, 'info', 'fetch', $3, $4, now()) RETURNING *",
                        &[&id, &job, &MESSAGE, &log_context(rng)],
                    )
                    .map_err(e)?;
                }
                Op::SetProgress => {
                    let p = format!("{}.{}", rng.gen_range(0..100), rng.gen_range(0..10));
                    c.query_one(
                        "UPDATE jobs SET progress = $2::text::numeric WHERE id = $1 AND status IN ('queued', 'running')
                         RETURNING *",
                        &[&job, &p],
                    )
                    .map_err(e)?;
                }
                Op::CachePut => {
                    let key = cache_key(rng.gen_range(0..scale().2));
                    let sql = format!(
                        "INSERT INTO {} (cache_key, value, expires_at) VALUES ($1, $2, now() + interval '1 hour')
                         ON CONFLICT (cache_key) DO UPDATE SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at
                         RETURNING *",
                        pick_cache(rng).table_name()
                    );
                    c.query_one(&sql, &[&key, &cache_value(rng)]).map_err(e)?;
                }
                Op::SubmitJob => {
                    c.query_one(
                        "INSERT INTO jobs (id, type, payload, status, progress, queued_at, priority)
                         VALUES ($1, 'crawl', $2, 'queued', 0, now(), 'normal') RETURNING *",
                        &[&Uuid::now_v7(), &json!({"keywords": ["rust", "sqlite"], "depth": 2})],
                    )
                    .map_err(e)?;
                }
                Op::AddPage => {
                    let id = Uuid::now_v7();
                    c.query_one(
                        "INSERT INTO pages (id, url, title, lang, content_hash, fetched_at, source_job_id)
                         VALUES ($1, $2, 'Rust and SQLite: a dual-write migration', 'en', $3, now(), $4) RETURNING *",
                        &[&id, &format!("https://example.com/p/{}", Uuid::new_v4()), &format!("{:016x}", rng.gen::<u64>()), &job],
                    )
                    .map_err(e)?;
                    *last_page = Some(id);
                }
                Op::AddHeadings => {
                    let page = last_page.unwrap_or(fx.pages[rng.gen_range(0..fx.pages.len())]);
                    let mut tx = c.transaction().map_err(e)?;
                    let stmt = tx
                        .prepare("INSERT INTO headings (id, page_id, level, text, created_at) VALUES ($1, $2, $3, $4, now()) RETURNING *")
                        .map_err(e)?;
                    for i in 0..5 {
                        let level = if i == 0 { "h1" } else { "h2" };
                        tx.query_one(
                            &stmt,
                            &[&Uuid::now_v7(), &page, &level, &format!("Section {i}: why outboxes work")],
                        )
                        .map_err(e)?;
                    }
                    tx.commit().map_err(e)?;
                }
                Op::CacheGet => {
                    let sql = format!(
                        "SELECT cache_key, value, expires_at FROM {} WHERE cache_key = $1 AND expires_at > now()",
                        pick_cache(rng).table_name()
                    );
                    c.query_opt(&sql, &[&cache_lookup_key(rng)]).map_err(e)?;
                }
                Op::PromptLatest => {
                    c.query_opt(
                        "SELECT * FROM prompts WHERE key = $1 ORDER BY version DESC LIMIT 1",
                        &[&prompt_key(rng.gen_range(0..PROMPTS))],
                    )
                    .map_err(e)?
                    .ok_or("no prompt")?;
                }
                Op::GetJob => {
                    c.query_opt("SELECT * FROM jobs WHERE id = $1", &[&job]).map_err(e)?.ok_or("no job")?;
                }
                Op::JobLogs => {
                    c.query(
                        "SELECT * FROM job_logs WHERE job_id = $1 ORDER BY created_at, id LIMIT 20",
                        &[&job],
                    )
                    .map_err(e)?;
                }
            }
        }
    }
    Ok(written)
}

fn pick_cache(rng: &mut StdRng) -> Cache {
    if rng.gen_bool(0.5) {
        Cache::TextAnalytics
    } else {
        Cache::Wordstat
    }
}

/// 90 % of lookups hit a seeded key.
fn cache_lookup_key(rng: &mut StdRng) -> String {
    if rng.gen_bool(0.9) {
        cache_key(rng.gen_range(0..scale().2))
    } else {
        format!("miss:{}", rng.gen::<u32>())
    }
}

// ----- fixtures -----

fn seed_bridge(b: &Bridge) -> Fixture {
    let (n_jobs, n_pages, n_keys) = scale();
    let mut jobs = Vec::with_capacity(n_jobs);
    for _ in 0..n_jobs {
        b.submit_job(&NewJob::new("crawl")).expect("submit");
        jobs.push(b.claim_next_job().expect("claim").expect("a queued job").id);
    }
    let pages = (0..n_pages)
        .map(|i| b.add_page(&NewPage::new(format!("https://example.com/seed/{i}"))).expect("page").id)
        .collect();
    let mut rng = StdRng::seed_from_u64(7);
    for cache in [Cache::TextAnalytics, Cache::Wordstat] {
        for k in 0..n_keys {
            b.cache_put(cache, &cache_key(k), &cache_value(&mut rng), Duration::from_secs(86_400))
                .expect("cache");
        }
    }
    for p in 0..PROMPTS {
        for v in 0..3 {
            b.publish_prompt(
                &prompt_key(p),
                &format!("Write section {p}, version {v}, about {{topic}}."),
                None,
            )
            .expect("prompt");
        }
    }
    Fixture { jobs, pages }
}

fn seed_pg(c: &mut postgres::Client) -> Fixture {
    let (n_jobs, n_pages, n_keys) = scale();
    let mut tx = c.transaction().expect("begin");
    let mut jobs = Vec::with_capacity(n_jobs);
    for _ in 0..n_jobs {
        let id = Uuid::now_v7();
        tx.execute(
            "INSERT INTO jobs (id, type, status, started_at) VALUES ($1, 'crawl', 'running', now())",
            &[&id],
        )
        .expect("job");
        jobs.push(id);
    }
    let mut pages = Vec::new();
    for i in 0..n_pages {
        let id = Uuid::now_v7();
        tx.execute(
            "INSERT INTO pages (id, url) VALUES ($1, $2)",
            &[&id, &format!("https://example.com/seed/{i}")],
        )
        .expect("page");
        pages.push(id);
    }
    let mut rng = StdRng::seed_from_u64(7);
    for table in ["text_analytics_cache", "wordstat_cache"] {
        for k in 0..n_keys {
            tx.execute(
                &format!("INSERT INTO {table} (cache_key, value, expires_at) VALUES ($1, $2, now() + interval '1 day')"),
                &[&cache_key(k), &cache_value(&mut rng)],
            )
            .expect("cache");
        }
    }
    for p in 0..PROMPTS {
        for v in 1..=3 {
            tx.execute(
                "INSERT INTO prompts (id, key, body, version) VALUES ($1, $2, $3, $4)",
                &[
                    &Uuid::now_v7(),
                    &prompt_key(p),
                    &format!("Write section {p}, version {v}, about {{topic}}."),
                    &v,
                ],
            )
            .expect("prompt");
        }
    }
    tx.commit().expect("commit");
    c.batch_execute("ANALYZE").expect("analyze");
    Fixture { jobs, pages }
}

fn bridge_config(dir: &Path, pg: Option<&PgConfig>) -> Config {
    Config {
        sqlite_path: dir.join("monolith.sqlite3"),
        postgres: pg.cloned(),
        key_source: KeySource::Env("DUALWRITE_WORKLOAD_NO_KEY".into()),
    }
}

fn set_flag(b: &Bridge, change: FlagChange) {
    b.set_flag(change, "workload runner", "benchmark configuration", true).expect("set flag");
}

// ----- one run -----

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Latency {
    count: u64,
    p50_us: u64,
    p95_us: u64,
    p99_us: u64,
    max_us: u64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Latency {
        Latency {
            count: h.len(),
            p50_us: h.value_at_quantile(0.50),
            p95_us: h.value_at_quantile(0.95),
            p99_us: h.value_at_quantile(0.99),
            max_us: h.max(),
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Lag {
    /// `commit_timestamp` (every job_logs row) or `oldest_pending_sampled`.
    method: String,
    samples: u64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct RunResult {
    config: String,
    label: String,
    rate: f64,
    concurrency: usize,
    seconds: f64,
    ops_total: u64,
    ops_per_sec: f64,
    errors: u64,
    first_error: Option<String>,
    all: Latency,
    ops: BTreeMap<String, Latency>,
    lag: Option<Lag>,
    outbox_peak: Option<i64>,
    /// Seconds from the end of the run until PostgreSQL had every change (dual only).
    catch_up_secs: Option<f64>,
    rss_peak_kb: u64,
    /// postgres_primary: CPU time of the replicator thread (the SQLite follower) per change it
    /// applied over the run and its catch-up, in microseconds.
    follower_cpu_us_per_change: Option<f64>,
    /// Reads per table and source, from `status().reads` (bridge configurations).
    reads: Value,
    load_before: String,
    load_after: String,
}

const CONFIGS: [&str; 6] =
    ["sqlite", "dual-sqlite", "dual-postgres", "postgres-primary", "postgres-bridge", "postgres"];

fn label(config: &str) -> &'static str {
    match config {
        "sqlite" => "SQLite only (bridge, write_mode sqlite, reads sqlite)",
        "dual-sqlite" => "dual, reads from SQLite (bridge)",
        "dual-postgres" => "dual, reads from PostgreSQL (bridge)",
        "postgres-primary" => {
            "PostgreSQL first, SQLite follows in the background (bridge, write_mode postgres_primary)"
        }
        "postgres-bridge" => "PostgreSQL only, SQLite frozen (bridge, write_mode postgres)",
        "postgres" => "PostgreSQL only (direct SQL via the postgres crate, not the bridge)",
        other => panic!("unknown configuration {other:?}; use {}", CONFIGS.join(", ")),
    }
}

/// The bridge's write mode for a bridge configuration (`None`: direct SQL).
fn write_mode(config: &str) -> Option<WriteMode> {
    match config {
        "sqlite" => Some(WriteMode::Sqlite),
        "dual-sqlite" | "dual-postgres" => Some(WriteMode::Dual),
        "postgres-primary" => Some(WriteMode::PostgresPrimary),
        "postgres-bridge" => Some(WriteMode::Postgres),
        _ => None,
    }
}

/// PostgreSQL takes the writes synchronously: no background replication, so no lag, no SQLite
/// outbox and no catch-up to report ("n/a").
fn postgres_first(config: &str) -> bool {
    write_mode(config).is_some_and(WriteMode::postgres_first)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The replicator thread's name as the kernel keeps it (15 bytes of `dualwrite-replicator`).
const REPLICATOR_THREAD: &str = "dualwrite-repli";

/// The SQLite follower's CPU per change it applies (postgres_primary), from where it was started.
struct FollowerMeter {
    cpu_secs: f64,
    applied: i64,
}

impl FollowerMeter {
    fn start(b: &Bridge) -> FollowerMeter {
        FollowerMeter { cpu_secs: Self::cpu_secs(), applied: Self::applied(b) }
    }

    /// Microseconds of the replicator thread's CPU per change applied since `start`.
    fn us_per_change(&self, b: &Bridge) -> Option<f64> {
        let changes = Self::applied(b) - self.applied;
        (changes > 0).then(|| (Self::cpu_secs() - self.cpu_secs) * 1e6 / changes as f64)
    }

    fn cpu_secs() -> f64 {
        cpu::CpuSnapshot::take(0).threads.get(REPLICATOR_THREAD).copied().unwrap_or(0.0)
    }

    /// From the file's capture bookkeeping.
    fn applied(b: &Bridge) -> i64 {
        b.status().expect("status").capture.map_or(0, |c| c.applied_total)
    }
}

/// Peak resident set size of this process (kB).
fn vm_hwm_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram")
}

struct WorkerOut {
    hists: BTreeMap<Op, Histogram<u64>>,
    errors: u64,
    first_error: Option<String>,
    job_logs: Vec<(Uuid, SystemTime)>,
}

/// Run `concurrency` workers over `backends` with the mix (or `only` one operation) at `load`.
fn drive(
    mut backends: Vec<Backend>,
    fx: &Fixture,
    load: &Load,
    only: Option<Op>,
    stop: &AtomicBool,
) -> (Vec<WorkerOut>, f64) {
    let n = backends.len();
    let interval =
        if load.rate > 0.0 { Duration::from_secs_f64(n as f64 / load.rate) } else { Duration::ZERO };
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(load.duration);
    let issued = AtomicU64::new(0);
    let outs = std::thread::scope(|s| {
        let handles: Vec<_> = backends
            .drain(..)
            .enumerate()
            .map(|(w, mut backend)| {
                let issued = &issued;
                s.spawn(move || {
                    let mut rng = StdRng::seed_from_u64(1000 + w as u64);
                    let mut out = WorkerOut {
                        hists: BTreeMap::new(),
                        errors: 0,
                        first_error: None,
                        job_logs: Vec::new(),
                    };
                    let mut next = started + interval.mul_f64(w as f64 / n as f64);
                    let mut last_page = None;
                    loop {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        match load.count {
                            Some(c) => {
                                if issued.fetch_add(1, Ordering::Relaxed) >= c {
                                    break;
                                }
                            }
                            None => {
                                if Instant::now() >= end {
                                    break;
                                }
                            }
                        }
                        let intended = if interval.is_zero() {
                            Instant::now()
                        } else {
                            let now = Instant::now();
                            if next > now {
                                std::thread::sleep(next - now);
                            }
                            let t = next;
                            next += interval;
                            t
                        };
                        let op = only.unwrap_or_else(|| Op::pick(&mut rng));
                        match exec(&mut backend, op, fx, &mut rng, &mut last_page) {
                            Ok(w) => {
                                let us = intended.elapsed().as_micros().max(1) as u64;
                                out.hists.entry(op).or_insert_with(new_hist).saturating_record(us);
                                if let Some(j) = w.job_log {
                                    out.job_logs.push(j);
                                }
                            }
                            Err(e) => {
                                out.errors += 1;
                                out.first_error.get_or_insert(format!("{}: {e}", op.name()));
                            }
                        }
                    }
                    out
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("worker")).collect::<Vec<_>>()
    });
    (outs, started.elapsed().as_secs_f64())
}

/// Samples `status()` every 100 ms: the outbox peak and the age of its oldest record.
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<(i64, Vec<i64>)>>,
}

impl Sampler {
    fn start(b: &Bridge) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let (b, s) = (b.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let (mut peak, mut ages) = (0, Vec::new());
            while !s.load(Ordering::Relaxed) {
                if let Ok(st) = b.status() {
                    peak = peak.max(st.outbox_depth);
                    ages.push(st.oldest_pending_ms.unwrap_or(0));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            (peak, ages)
        });
        Sampler { stop, thread: Some(thread) }
    }

    fn finish(mut self) -> (i64, Vec<i64>) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().map(|t| t.join().expect("sampler")).unwrap_or_default()
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn lag_of(mut ms: Vec<f64>, method: &str) -> Lag {
    ms.sort_by(f64::total_cmp);
    Lag {
        method: method.into(),
        samples: ms.len() as u64,
        p50_ms: percentile(&ms, 0.50),
        p99_ms: percentile(&ms, 0.99),
        max_ms: ms.last().copied().unwrap_or(0.0),
    }
}

/// Replication lag of each (job log, time its write returned): PostgreSQL's commit time of the
/// row minus that time. Call after the rows were flushed. `None` when PostgreSQL recorded no
/// usable commit time: the replicator's sessions set a replication origin (so the change capture
/// can tell them apart), and a transaction under an origin records the origin's timestamp as its
/// commit time — never set by the bridge, so 2000-01-01. Then the caller falls back to the
/// sampled age of the oldest pending change (an upper bound of the lag).
fn commit_lag(pg: &PgConfig, written: &[(Uuid, SystemTime)]) -> Option<Lag> {
    let mut c = pg.connect().expect("connect");
    let returned: HashMap<Uuid, SystemTime> = written.iter().copied().collect();
    let mut lags = Vec::with_capacity(written.len());
    for chunk in written.chunks(10_000) {
        let ids: Vec<Uuid> = chunk.iter().map(|(id, _)| *id).collect();
        let rows = c
            .query(
                "SELECT id, extract(epoch FROM pg_xact_commit_timestamp(xmin))::float8 FROM job_logs WHERE id = ANY($1)",
                &[&ids],
            )
            .expect("commit timestamps");
        for r in rows {
            let id: Uuid = r.get(0);
            let Some(committed) = r.get::<_, Option<f64>>(1) else { continue };
            let back = returned[&id].duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
            if committed < back - 1.0 {
                // The origin's timestamp, not the commit's (see above).
                return None;
            }
            // The replicator may commit before the writing thread reads the clock: never below 0.
            lags.push(((committed - back) * 1000.0).max(0.0));
        }
    }
    assert_eq!(lags.len(), written.len(), "every job log written reached PostgreSQL");
    Some(lag_of(lags, "commit_timestamp"))
}

/// When each job_logs row appeared in SQLite, polled every 2 ms by rowid (rows the capture
/// applies get increasing rowids): the SQLite follower's side of the lag in postgres_primary.
struct SqliteWatcher {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<HashMap<Uuid, SystemTime>>,
}

impl SqliteWatcher {
    fn start(path: &Path) -> SqliteWatcher {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let path = path.to_path_buf();
        let thread = std::thread::spawn(move || {
            let c = rusqlite::Connection::open(&path).expect("open SQLite");
            let mut seen = HashMap::new();
            let mut last: i64 =
                c.query_row("SELECT coalesce(max(rowid), 0) FROM job_logs", [], |r| r.get(0)).unwrap_or(0);
            loop {
                let done = flag.load(Ordering::Relaxed);
                let mut stmt = c
                    .prepare_cached("SELECT rowid, id FROM job_logs WHERE rowid > ?1 ORDER BY rowid")
                    .expect("prepare");
                let rows: Vec<(i64, String)> = stmt
                    .query_map([last], |r| Ok((r.get(0)?, r.get(1)?)))
                    .and_then(|rows| rows.collect())
                    .unwrap_or_default();
                let now = SystemTime::now();
                for (rowid, id) in rows {
                    last = last.max(rowid);
                    if let Ok(id) = id.parse() {
                        seen.entry(id).or_insert(now);
                    }
                }
                if done {
                    return seen;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        SqliteWatcher { stop, thread }
    }

    fn finish(self) -> HashMap<Uuid, SystemTime> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("watcher")
    }
}

/// SQLite's follower lag per job_logs row: when it appeared in SQLite − when its write returned.
fn follower_lag(seen: &HashMap<Uuid, SystemTime>, written: &[(Uuid, SystemTime)]) -> Lag {
    let mut lags = Vec::with_capacity(written.len());
    for (id, back) in written {
        let at = seen.get(id).unwrap_or_else(|| panic!("job log {id} never reached SQLite"));
        lags.push(at.duration_since(*back).map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0));
    }
    lag_of(lags, "sqlite_poll_2ms")
}

fn merge(outs: &[WorkerOut]) -> (BTreeMap<Op, Histogram<u64>>, Histogram<u64>, u64, Option<String>) {
    let mut per_op: BTreeMap<Op, Histogram<u64>> = BTreeMap::new();
    let mut all = new_hist();
    let (mut errors, mut first) = (0, None);
    for o in outs {
        for (op, h) in &o.hists {
            per_op.entry(*op).or_insert_with(new_hist).add(h).expect("merge");
            all.add(h).expect("merge");
        }
        errors += o.errors;
        if first.is_none() {
            first.clone_from(&o.first_error);
        }
    }
    (per_op, all, errors, first)
}

/// Run one configuration in this process.
/// Open the bridge's pooled PostgreSQL connections before the timed run, as the direct-SQL
/// configuration opens its `concurrency` connections before its run: the pool opens them on
/// demand, one at a time, and a run that starts with an empty pool counts those connects (TLS,
/// SCRAM) — and, at a fixed rate, every operation scheduled behind them — as the bridge's
/// latency. `concurrency` threads read at once until each has been served a few times.
fn warm_pool(b: &Bridge, concurrency: usize) {
    std::thread::scope(|s| {
        for _ in 0..concurrency {
            s.spawn(|| {
                for _ in 0..20 {
                    b.list("jobs", &serde_json::json!({"limit": 1})).expect("warm-up read");
                }
            });
        }
    });
}

fn run_config(config: &str, load: &Load) -> RunResult {
    let label = label(config);
    let db = Db::create(config);
    let dir = tempfile::tempdir().expect("tempdir");
    let load_before = loadavg();
    let stop = AtomicBool::new(false);
    let mut result = RunResult {
        config: config.into(),
        label: label.into(),
        rate: load.rate,
        concurrency: load.concurrency,
        load_before,
        ..RunResult::default()
    };
    let (outs, secs) = if config == "postgres" {
        let fx = seed_pg(&mut db.config.connect().expect("connect"));
        let backends =
            (0..load.concurrency).map(|_| Backend::Pg(db.config.connect().expect("connect"))).collect();
        drive(backends, &fx, load, None, &stop)
    } else {
        let b = Bridge::open(bridge_config(dir.path(), Some(&db.config)), BridgeOptions::default())
            .expect("open");
        let fx = seed_bridge(&b);
        b.flush(Duration::from_secs(120)).expect("flush the seed");
        match config {
            "sqlite" => set_flag(&b, FlagChange::WriteMode(WriteMode::Sqlite)),
            "dual-sqlite" => {}
            "dual-postgres" => set_flag(&b, FlagChange::ReadSource(ReadSource::Postgres)),
            _ => {
                // As the runbook does it: not forced, so the guard rails are checked (they pass:
                // the seed is flushed, no dead letters, no verify run).
                let mode = write_mode(config).expect("a bridge configuration");
                b.set_flag(FlagChange::WriteMode(mode), "workload runner", "benchmark configuration", false)
                    .expect("enter a PostgreSQL-first write mode");
            }
        }
        let pg_first = postgres_first(config);
        if pg_first {
            warm_pool(&b, load.concurrency);
        }
        // Nothing is replicated to PostgreSQL in the background once PostgreSQL is the primary;
        // in postgres_primary SQLite follows it in the background instead.
        let sampler = (!pg_first).then(|| Sampler::start(&b));
        let watcher = (config == "postgres-primary")
            .then(|| SqliteWatcher::start(&dir.path().join("monolith.sqlite3")));
        let backends = (0..load.concurrency).map(|_| Backend::Bridge(b.clone())).collect();
        let meter = FollowerMeter::start(&b);
        let (outs, secs) = drive(backends, &fx, load, None, &stop);
        if let Some(w) = watcher {
            let t = Instant::now();
            b.wait_for_sqlite(Duration::from_secs(600)).expect("SQLite follows after the run");
            result.catch_up_secs = Some(t.elapsed().as_secs_f64());
            result.follower_cpu_us_per_change = meter.us_per_change(&b);
            let seen = w.finish();
            let written: Vec<_> = outs.iter().flat_map(|o| o.job_logs.iter().copied()).collect();
            result.lag = Some(follower_lag(&seen, &written));
        }
        if config != "sqlite" && !pg_first {
            let t = Instant::now();
            b.flush(Duration::from_secs(600)).expect("catch up after the run");
            result.catch_up_secs = Some(t.elapsed().as_secs_f64());
        }
        let (peak, ages) = sampler.map(Sampler::finish).unwrap_or_default();
        result.outbox_peak = (!pg_first).then_some(peak);
        if config != "sqlite" && !pg_first {
            let written: Vec<_> = outs.iter().flat_map(|o| o.job_logs.iter().copied()).collect();
            let committed =
                track_commit_timestamp(&db.config).then(|| commit_lag(&db.config, &written)).flatten();
            result.lag = Some(committed.unwrap_or_else(|| {
                lag_of(ages.into_iter().map(|a| a as f64).collect(), "oldest_pending_sampled")
            }));
        }
        result.reads = serde_json::to_value(b.status().expect("status").reads).unwrap_or_default();
        b.shutdown(Duration::from_secs(5));
        if config == "postgres-primary" {
            assert_sqlite_followed(&dir.path().join("monolith.sqlite3"), &db.config);
        }
        (outs, secs)
    };
    let (per_op, all, errors, first) = merge(&outs);
    result.seconds = secs;
    result.ops_total = all.len();
    result.ops_per_sec = all.len() as f64 / secs;
    result.errors = errors;
    result.first_error = first;
    result.all = Latency::of(&all);
    result.ops = per_op.iter().map(|(op, h)| (op.name().to_string(), Latency::of(h))).collect();
    result.rss_peak_kb = vm_hwm_kb();
    result.load_after = loadavg();
    result
}

/// In postgres_primary SQLite follows from the capture: after the run (and `wait_for_sqlite`) it must hold
/// as many rows as PostgreSQL in every table the mix writes (else the figures would be of a
/// bridge whose SQLite silently fell behind).
fn assert_sqlite_followed(sqlite_path: &Path, pg: &PgConfig) {
    let lite = rusqlite::Connection::open(sqlite_path).expect("open SQLite");
    let mut client = pg.connect().expect("connect");
    for t in ["jobs", "job_logs", "pages", "headings", "text_analytics_cache", "wordstat_cache"] {
        let sql = format!("SELECT count(*) FROM {t}");
        let in_sqlite: i64 = lite.query_row(&sql, [], |r| r.get(0)).expect("count in SQLite");
        let in_pg: i64 = client.query_one(&sql, &[]).expect("count in PostgreSQL").get(0);
        assert_eq!(in_sqlite, in_pg, "{t}: SQLite holds {in_sqlite} rows, PostgreSQL {in_pg}");
    }
}

// ----- compare -----

fn compare(a: CompareArgs) {
    let exe = std::env::current_exe().expect("own path");
    let mut results = Vec::new();
    for config in &a.configs {
        label(config);
        eprintln!("workload: {config} ...");
        let mut cmd = Command::new(&exe);
        cmd.args(["--bench", "run", "--config", config]);
        cmd.args(["--duration", &a.load.duration.to_string(), "--rate", &a.load.rate.to_string()]);
        cmd.args(["--concurrency", &a.load.concurrency.to_string()]);
        if let Some(c) = a.load.count {
            cmd.args(["--count", &c.to_string()]);
        }
        let out = cmd.stderr(std::process::Stdio::inherit()).output().expect("run a configuration");
        assert!(out.status.success(), "configuration {config} failed");
        let r: RunResult = serde_json::from_slice(&out.stdout).expect("a child's JSON result");
        results.push(r);
    }
    let text = serde_json::to_string_pretty(&results).unwrap();
    if let Some(p) = &a.out {
        std::fs::write(p, &text).expect("write --out");
    }
    if a.json {
        println!("{text}");
    } else {
        print_table(&results);
    }
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "—".into(), |v| v.to_string())
}

/// The comparison as Markdown: one summary table and one per-operation latency table.
fn render_compare(results: &[RunResult]) -> String {
    let mut s = String::new();
    s.push_str("| configuration | ops/s | p50 ms | p95 ms | p99 ms | max ms | lag p50 / p99 / max ms | outbox peak | catch-up s | peak RSS MB | errors |\n");
    s.push_str("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for r in results {
        // Not "—" (not measured) but not applicable: PostgreSQL took each write synchronously
        // (postgres_primary's lag and catch-up are SQLite's, following the capture).
        let na = |v: String| if postgres_first(&r.config) && r.lag.is_none() { "n/a".to_string() } else { v };
        let lag = r.lag.as_ref().map_or_else(
            || "—".to_string(),
            |l| {
                format!(
                    "{:.1} / {:.1} / {:.1}{}",
                    l.p50_ms,
                    l.p99_ms,
                    l.max_ms,
                    match l.method.as_str() {
                        "commit_timestamp" => "",
                        "sqlite_poll_2ms" => " (SQLite follower)",
                        _ => " (sampled)",
                    }
                )
            },
        );
        s.push_str(&format!(
            "| {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {} |\n",
            r.label,
            r.ops_per_sec,
            ms(r.all.p50_us),
            ms(r.all.p95_us),
            ms(r.all.p99_us),
            ms(r.all.max_us),
            na(lag),
            na(opt(r.outbox_peak)),
            na(opt(r.catch_up_secs.map(|c| format!("{c:.2}")))),
            r.rss_peak_kb as f64 / 1024.0,
            r.errors
        ));
    }
    s.push_str("\nLatency per operation, p50 / p99 ms:\n\n| operation |");
    for r in results {
        s.push_str(&format!(" {} |", r.config));
    }
    s.push_str("\n| --- |");
    for _ in results {
        s.push_str(" ---: |");
    }
    s.push('\n');
    for (op, _) in MIX {
        s.push_str(&format!("| {} |", op.name()));
        for r in results {
            match r.ops.get(op.name()) {
                Some(l) => s.push_str(&format!(" {} / {} |", ms(l.p50_us), ms(l.p99_us))),
                None => s.push_str(" — |"),
            }
        }
        s.push('\n');
    }
    s
}

fn print_table(results: &[RunResult]) {
    if let Some(r) = results.first() {
        println!(
            "rate {} ops/s, {} workers, {:.0} s per configuration",
            if r.rate > 0.0 { format!("{:.0}", r.rate) } else { "unlimited".into() },
            r.concurrency,
            r.seconds
        );
    }
    println!("{}", render_compare(results));
    for r in results {
        if let Some(us) = r.follower_cpu_us_per_change {
            println!(
                "{}: the SQLite follower (replicator thread) used {us:.1} µs of CPU per change it applied",
                r.config
            );
        }
    }
    for r in results.iter().filter(|r| r.errors > 0) {
        println!("{}: {} errors, first: {}", r.config, r.errors, r.first_error.as_deref().unwrap_or(""));
    }
}

// ----- targets -----

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Drain {
    rows: usize,
    jobs: usize,
    seconds: f64,
    rows_per_sec: f64,
    /// Writing the backlog (on tmpfs when available, so without fsync waits): µs per write,
    /// past 50,000 pending writes included.
    backlog_write_us: f64,
    /// The same backlog drained again by hand with the replicator's own steps, timed per step.
    phases: Option<DrainPhases>,
    /// CPU-seconds of the bridge's drain (open to flush, and on until the capture slot confirmed
    /// the replicator's own transactions), this process and PostgreSQL's.
    #[serde(default)]
    cpu: cpu::CpuSplit,
    /// From the end of the flush until the capture slot confirmed everything written.
    #[serde(default)]
    capture_caught_up_secs: f64,
}

/// Where a drain's time goes: the replicator's three steps, each summed over all batches.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct DrainPhases {
    batch_size: usize,
    batches: usize,
    seconds: f64,
    /// `Outbox::pending`: reading a batch from SQLite.
    read_outbox_secs: f64,
    /// `store::postgres::apply_batch`: the PostgreSQL transaction.
    apply_secs: f64,
    /// `Outbox::mark_applied`: deleting the batch from the outbox (one SQLite commit).
    mark_applied_secs: f64,
    /// CPU-seconds of the drain by hand, this process and PostgreSQL's.
    #[serde(default)]
    cpu: cpu::CpuSplit,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct SteadyLag {
    rate: f64,
    seconds: f64,
    writes: u64,
    writes_per_sec: f64,
    write_latency: Latency,
    lag: Lag,
    outbox_peak: i64,
}

impl SteadyLag {
    /// A steady run at `rate` that lasted `seconds`, with its writes' latencies `all`.
    fn of(rate: f64, seconds: f64, all: &Histogram<u64>, lag: Lag, outbox_peak: i64) -> SteadyLag {
        SteadyLag {
            rate,
            seconds,
            writes: all.len(),
            writes_per_sec: all.len() as f64 / seconds,
            write_latency: Latency::of(all),
            lag,
            outbox_peak,
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct FollowerLag {
    steady: SteadyLag,
    /// CPU time of the replicator thread (the follower) per change it applied.
    follower_cpu_us_per_change: Option<f64>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Outage {
    rate: f64,
    outage_secs: f64,
    /// Changes waiting when PostgreSQL came back.
    backlog_at_return: i64,
    /// From PostgreSQL's return until every change committed before it was applied.
    drained_secs: f64,
    writes_during_outage: u64,
    write_errors: u64,
    write_latency_during_outage: Latency,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Targets {
    dual_vs_sqlite: Option<DualVsSqlite>,
    drain: Option<Drain>,
    lag: Option<SteadyLag>,
    /// The same steady writes with PostgreSQL as the primary: the SQLite follower's lag.
    follower_lag: Option<FollowerLag>,
    outage: Option<Outage>,
    versions: BTreeMap<String, String>,
    load_before: String,
    load_after: String,
}

fn targets(a: TargetArgs) {
    let r = run_targets(&a);
    let text = serde_json::to_string_pretty(&r).unwrap();
    if let Some(p) = &a.out {
        std::fs::write(p, &text).expect("write --out");
    }
    if a.json {
        println!("{text}");
    } else {
        println!("{}", render_targets(&r, None));
    }
}

fn versions() -> BTreeMap<String, String> {
    let mut v = BTreeMap::new();
    v.insert("sqlite".into(), rusqlite::version().to_string());
    if let Ok(mut c) = server().connect() {
        if let Ok(r) = c.query_one("SHOW server_version", &[]) {
            v.insert("postgresql".into(), r.get(0));
        }
        if let Ok(r) =
            c.query_one("SELECT default_version FROM pg_available_extensions WHERE name = 'vector'", &[])
        {
            v.insert("pgvector".into(), r.get(0));
        }
        for setting in ["fsync", "synchronous_commit", "track_commit_timestamp", "ssl"] {
            if let Ok(r) = c.query_one(&format!("SHOW {setting}"), &[]) {
                v.insert(format!("postgresql {setting}"), r.get(0));
            }
        }
    }
    v
}

fn run_targets(a: &TargetArgs) -> Targets {
    let mut t = Targets { versions: versions(), load_before: loadavg(), ..Targets::default() };
    if a.only.iter().any(|o| o == "dual") {
        eprintln!("workload: dual vs sqlite write target ({} interleaved rounds) ...", a.dual_rounds);
        t.dual_vs_sqlite = Some(dual_vs_sqlite_target(a.dual_rounds));
    }
    if a.only.iter().any(|o| o == "drain") {
        eprintln!("workload: drain target ({} rows) ...", a.drain_rows);
        t.drain = Some(drain_target(a.drain_rows, a.drain_batch));
    }
    if a.only.iter().any(|o| o == "lag") {
        eprintln!("workload: lag target ({} writes/s for {} s) ...", a.lag_rate, a.lag_secs);
        t.lag = Some(lag_target(a.lag_rate, a.lag_secs));
    }
    if a.only.iter().any(|o| o == "follower-lag") {
        eprintln!(
            "workload: follower lag target ({} writes/s for {} s, postgres_primary) ...",
            a.lag_rate, a.lag_secs
        );
        t.follower_lag = Some(follower_lag_target(a.lag_rate, a.lag_secs));
    }
    if a.only.iter().any(|o| o == "outage") {
        eprintln!("workload: outage target ({} s at {} writes/s) ...", a.outage_secs, a.outage_rate);
        t.outage = Some(outage_target(a.outage_rate, a.outage_secs));
    }
    t.load_after = loadavg();
    t
}

/// One write operation in both write modes, interleaved.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct ModePair {
    op: String,
    sqlite: Latency,
    dual: Latency,
    /// Median over rounds of (dual's mean write time / sqlite's) within the same round.
    ratio_median: f64,
    ratio_q1: f64,
    ratio_q3: f64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct DualVsSqlite {
    rounds: usize,
    writes_per_round: usize,
    ops: Vec<ModePair>,
}

/// The same single-caller writes on a bridge in write mode `sqlite` and one in `dual` (its
/// replicator applying them meanwhile), alternated in rounds of [`ROUND_WRITES`] per operation
/// and mode, the mode that goes first alternating too. fsync latency on a shared disk drifts by
/// an order of magnitude within minutes, so criterion's one-after-the-other medians can compare a
/// quiet minute with a busy one; a ratio taken within one round compares like with like. After
/// each dual round the replicator is let finish (untimed), so its work never lands in a sqlite
/// round.
fn dual_vs_sqlite_target(rounds: usize) -> DualVsSqlite {
    const ROUND_WRITES: usize = 100;
    let db = Db::create("modes");
    let (d1, d2) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    let open = |dir: &Path, mode: WriteMode| {
        let b = Bridge::open(bridge_config(dir, Some(&db.config)), BridgeOptions::default()).expect("open");
        set_flag(&b, FlagChange::WriteMode(mode));
        b.submit_job(&NewJob::new("crawl")).expect("submit");
        let job = b.claim_next_job().expect("claim").expect("a queued job").id;
        (b, job)
    };
    let bridges = [open(d1.path(), WriteMode::Sqlite), open(d2.path(), WriteMode::Dual)];
    let mut rng = StdRng::seed_from_u64(11);
    let ops = [Op::AppendLog, Op::SetProgress, Op::CachePut];
    let mut hists: Vec<[Histogram<u64>; 2]> = ops.iter().map(|_| [new_hist(), new_hist()]).collect();
    let mut ratios: Vec<Vec<f64>> = ops.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        for (i, op) in ops.iter().enumerate() {
            let mut mean = [0.0; 2];
            for k in 0..2 {
                let mode = (round + k) % 2;
                let (b, job) = &bridges[mode];
                let started = Instant::now();
                for n in 0..ROUND_WRITES {
                    let t = Instant::now();
                    match op {
                        Op::AppendLog => {
                            let log = NewJobLog {
                                step: Some("fetch".into()),
                                context: Some(log_context(&mut rng)),
                                ..NewJobLog::new(*job, LogLevel::Info, MESSAGE)
                            };
                            b.append_job_log(&log).map(drop)
                        }
                        Op::SetProgress => b.set_job_progress(*job, &format!("{}.5", n % 100)).map(drop),
                        _ => b
                            .cache_put(
                                Cache::TextAnalytics,
                                &cache_key(n),
                                &cache_value(&mut rng),
                                Duration::from_secs(3600),
                            )
                            .map(drop),
                    }
                    .expect("write");
                    hists[i][mode].saturating_record(t.elapsed().as_micros().max(1) as u64);
                }
                mean[mode] = started.elapsed().as_secs_f64() / ROUND_WRITES as f64;
                if mode == 1 {
                    b.flush(Duration::from_secs(60)).expect("flush the dual round");
                }
            }
            ratios[i].push(mean[1] / mean[0]);
        }
    }
    for (b, _) in &bridges {
        b.shutdown(Duration::from_secs(5));
    }
    let pairs = ops
        .iter()
        .enumerate()
        .map(|(i, op)| {
            let mut r = ratios[i].clone();
            r.sort_by(f64::total_cmp);
            ModePair {
                op: op.name().into(),
                sqlite: Latency::of(&hists[i][0]),
                dual: Latency::of(&hists[i][1]),
                ratio_median: percentile(&r, 0.5),
                ratio_q1: percentile(&r, 0.25),
                ratio_q3: percentile(&r, 0.75),
            }
        })
        .collect();
    DualVsSqlite { rounds, writes_per_round: ROUND_WRITES, ops: pairs }
}

/// A consistent copy of the SQLite database at `from` (`VACUUM INTO`: a snapshot, whatever
/// connections are still open on it).
fn copy_sqlite(from: &Path, to: &Path) {
    let c = rusqlite::Connection::open(from).expect("open the backlog");
    c.execute("VACUUM INTO ?1", [to.to_str().expect("a UTF-8 path")]).expect("copy the backlog");
}

/// A backlog of `rows` job_logs (and their jobs) written with replication off, then drained by
/// a replicating bridge: rows per second from the bridge's open to the end of its flush.
fn drain_target(rows: usize, batch: Option<usize>) -> Drain {
    let mut options = BridgeOptions::default();
    let batch_size = batch.unwrap_or(options.replicator.batch_size);
    options.replicator.batch_size = batch_size;
    const DRAIN_JOBS: usize = 100;
    // The backlog is written on tmpfs when there is one (its content does not depend on how
    // fast it was written, and a 200k-row backlog at one fsync per write would take minutes),
    // then copied to $TMPDIR, where the drain runs with real fsyncs.
    let shm = Path::new("/dev/shm");
    let backlog_write_us;
    let scratch =
        if shm.is_dir() { tempfile::tempdir_in(shm) } else { tempfile::tempdir() }.expect("tempdir");
    let db = Db::create("drain");
    {
        // PostgreSQL configured but no replicator running: the bridge of a process whose
        // replication is paused (a rollback, an outage), which remembers its own writes.
        let b = Bridge::open(
            bridge_config(scratch.path(), Some(&db.config)),
            BridgeOptions { replicate: false, ..Default::default() },
        )
        .expect("open");
        let jobs: Vec<Uuid> =
            (0..DRAIN_JOBS).map(|_| b.submit_job(&NewJob::new("crawl")).expect("job").id).collect();
        let mut rng = StdRng::seed_from_u64(3);
        let t = Instant::now();
        for i in 0..rows {
            let log = NewJobLog {
                step: Some("fetch".into()),
                context: Some(log_context(&mut rng)),
                ..NewJobLog::new(jobs[i % DRAIN_JOBS], LogLevel::Info, MESSAGE)
            };
            b.append_job_log(&log).expect("append");
        }
        backlog_write_us = t.elapsed().as_secs_f64() * 1e6 / rows.max(1) as f64;
        assert_eq!(b.status().expect("status").outbox_depth as usize, rows + DRAIN_JOBS);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let by_hand = tempfile::tempdir().expect("tempdir");
    copy_sqlite(&scratch.path().join("monolith.sqlite3"), &dir.path().join("monolith.sqlite3"));
    copy_sqlite(&scratch.path().join("monolith.sqlite3"), &by_hand.path().join("monolith.sqlite3"));
    drop(scratch);
    let postmaster = cpu::postmaster_of(&mut db.config.connect().expect("connect"));
    let cpu_before = cpu::CpuSnapshot::take(postmaster);
    let started = Instant::now();
    let b = Bridge::open(bridge_config(dir.path(), Some(&db.config)), options).expect("open");
    if let Err(e) = b.flush(Duration::from_secs(1800)) {
        panic!("draining the backlog: {e}; status: {:?}", b.status());
    }
    let seconds = started.elapsed().as_secs_f64();
    // The replicator's own transactions are decoded by the capture slot's walsender and read
    // back by the replicator (in `dual` it follows the capture too); that work may trail the
    // flush, so the CPU is counted once the slot has confirmed everything written so far.
    let capture_caught_up_secs = wait_for_capture(&db.config, Duration::from_secs(60));
    let cpu = cpu::CpuSnapshot::take(postmaster).since(&cpu_before);
    b.shutdown(Duration::from_secs(5));
    drop(b);
    let n: i64 = db.config.connect().unwrap().query_one("SELECT count(*) FROM job_logs", &[]).unwrap().get(0);
    assert_eq!(n as usize, rows, "every backlog row reached PostgreSQL");
    let phases = drain_phases(&by_hand.path().join("monolith.sqlite3"), batch_size);
    Drain {
        rows,
        jobs: DRAIN_JOBS,
        seconds,
        rows_per_sec: rows as f64 / seconds,
        backlog_write_us,
        phases: Some(phases),
        cpu,
        capture_caught_up_secs,
    }
}

/// Wait until the capture slot of `pg`'s database has confirmed the WAL written so far (at most
/// `limit`); how long that took.
fn wait_for_capture(pg: &PgConfig, limit: Duration) -> f64 {
    let mut c = pg.connect().expect("connect");
    let target: String = c.query_one("SELECT pg_current_wal_lsn()::text", &[]).expect("lsn").get(0);
    let started = Instant::now();
    while started.elapsed() < limit {
        let behind: Option<bool> = c
            .query_opt(
                "SELECT confirmed_flush_lsn < $1::text::pg_lsn FROM pg_replication_slots
                 WHERE slot_name = 'dw_capture_' || md5(current_database())",
                &[&target],
            )
            .expect("slot position")
            .and_then(|r| r.get(0));
        if behind != Some(true) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    started.elapsed().as_secs_f64()
}

/// Drain the backlog at `path` into a fresh database with the replicator's own steps
/// (`Outbox::pending`, `apply_batch`, `Outbox::mark_applied`), one after the other as the
/// replicator runs them, timing each.
fn drain_phases(path: &Path, batch_size: usize) -> DrainPhases {
    use dualwrite::store::{postgres::apply_batch, sqlite};
    let db = Db::create("phases");
    let mut client = db.config.connect().expect("connect");
    let reader = sqlite::open(path).expect("open");
    let mut writer = sqlite::open(path).expect("open");
    // As the replicator's own connection (see `Replicator::start`).
    writer.pragma_update(None, "synchronous", "NORMAL").expect("pragma");
    let mut p = DrainPhases { batch_size, ..DrainPhases::default() };
    let postmaster = cpu::postmaster_of(&mut client);
    let cpu_before = cpu::CpuSnapshot::take(postmaster);
    let started = Instant::now();
    loop {
        let t = Instant::now();
        let batch = sqlite::Outbox::pending(&reader, batch_size).expect("read the outbox");
        p.read_outbox_secs += t.elapsed().as_secs_f64();
        if batch.is_empty() {
            break;
        }
        let t = Instant::now();
        let applied = apply_batch(&mut client, &batch, true).expect("apply");
        p.apply_secs += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let (first, last) = (batch[0].seq, batch[batch.len() - 1].seq);
        sqlite::Outbox::mark_applied(&mut writer, first, last, applied.written).expect("mark applied");
        p.mark_applied_secs += t.elapsed().as_secs_f64();
        p.batches += 1;
    }
    p.seconds = started.elapsed().as_secs_f64();
    p.cpu = cpu::CpuSnapshot::take(postmaster).since(&cpu_before);
    p
}

/// A dual-mode bridge with its seed, on a fresh file and database.
fn dual_bridge(dir: &Path, pg: &PgConfig) -> (Bridge, Fixture) {
    let b = Bridge::open(bridge_config(dir, Some(pg)), BridgeOptions::default()).expect("open");
    let fx = seed_bridge(&b);
    b.flush(Duration::from_secs(120)).expect("flush the seed");
    (b, fx)
}

/// append_log at `rate` for `secs`; lag of every row.
fn lag_target(rate: f64, secs: f64) -> SteadyLag {
    let db = Db::create("lag");
    let dir = tempfile::tempdir().expect("tempdir");
    let (b, fx) = dual_bridge(dir.path(), &db.config);
    let load = Load { duration: secs, count: None, rate, concurrency: 4 };
    let sampler = Sampler::start(&b);
    let stop = AtomicBool::new(false);
    let backends = (0..load.concurrency).map(|_| Backend::Bridge(b.clone())).collect();
    let (outs, seconds) = drive(backends, &fx, &load, Some(Op::AppendLog), &stop);
    b.flush(Duration::from_secs(600)).expect("flush");
    let (peak, ages) = sampler.finish();
    let (_, all, errors, first) = merge(&outs);
    assert_eq!(errors, 0, "{first:?}");
    let written: Vec<_> = outs.iter().flat_map(|o| o.job_logs.iter().copied()).collect();
    let committed = track_commit_timestamp(&db.config).then(|| commit_lag(&db.config, &written)).flatten();
    let lag = committed
        .unwrap_or_else(|| lag_of(ages.into_iter().map(|a| a as f64).collect(), "oldest_pending_sampled"));
    b.shutdown(Duration::from_secs(5));
    SteadyLag::of(rate, seconds, &all, lag, peak)
}

/// append_log at `rate` for `secs` in postgres_primary (each write one PostgreSQL commit); the
/// SQLite follower's lag of every row: when it appeared in SQLite − when its write returned.
fn follower_lag_target(rate: f64, secs: f64) -> FollowerLag {
    let db = Db::create("follower_lag");
    let dir = tempfile::tempdir().expect("tempdir");
    let (b, fx) = dual_bridge(dir.path(), &db.config);
    b.set_flag(
        FlagChange::WriteMode(WriteMode::PostgresPrimary),
        "workload runner",
        "follower lag target",
        false,
    )
    .expect("enter postgres_primary");
    let load = Load { duration: secs, count: None, rate, concurrency: 4 };
    warm_pool(&b, load.concurrency);
    let watcher = SqliteWatcher::start(&dir.path().join("monolith.sqlite3"));
    let stop = AtomicBool::new(false);
    let backends = (0..load.concurrency).map(|_| Backend::Bridge(b.clone())).collect();
    let meter = FollowerMeter::start(&b);
    let (outs, seconds) = drive(backends, &fx, &load, Some(Op::AppendLog), &stop);
    b.wait_for_sqlite(Duration::from_secs(600)).expect("SQLite follows after the run");
    let follower_cpu_us_per_change = meter.us_per_change(&b);
    let seen = watcher.finish();
    let (_, all, errors, first) = merge(&outs);
    assert_eq!(errors, 0, "{first:?}");
    let written: Vec<_> = outs.iter().flat_map(|o| o.job_logs.iter().copied()).collect();
    let lag = follower_lag(&seen, &written);
    b.shutdown(Duration::from_secs(5));
    FollowerLag { steady: SteadyLag::of(rate, seconds, &all, lag, 0), follower_cpu_us_per_change }
}

/// The same database as `pg`, reached through a proxy on 127.0.0.1:`port` (as tests/support's
/// `via_proxy`).
fn via_proxy(pg: &PgConfig, port: u16) -> PgConfig {
    let c = pg.postgres_config();
    let q = |v: &str| format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"));
    let mut url = format!("host=127.0.0.1 port={port} user={}", q(c.get_user().unwrap_or("postgres")));
    if let Some(pw) = c.get_password() {
        url.push_str(&format!(" password={}", q(&String::from_utf8_lossy(pw))));
    }
    if let Some(db) = c.get_dbname() {
        url.push_str(&format!(" dbname={}", q(db)));
    }
    PgConfig::from_url(&url).expect("proxied PostgreSQL config")
}

/// PostgreSQL (through a TCP proxy) goes away for `secs` while append_log runs at `rate`, then
/// returns: how long until everything written before its return is applied.
fn outage_target(rate: f64, secs: f64) -> Outage {
    use proxy::{Proxy, Upstream};
    let db = Db::create("outage");
    let proxy = Proxy::start(Upstream::of(db.config.postgres_config()));
    let via = via_proxy(&db.config, proxy.port());
    let dir = tempfile::tempdir().expect("tempdir");
    let (b, fx) = dual_bridge(dir.path(), &via);
    let warm = (secs / 6.0).clamp(0.5, 10.0);
    let stop = AtomicBool::new(false);
    let phase = AtomicI64::new(0); // 0 warm-up, 1 outage, 2 after the return
    let mut outage = Outage { rate, outage_secs: secs, ..Outage::default() };
    let during = Mutex::new((new_hist(), 0u64, 0u64));
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let load = Load { duration: 3600.0, count: None, rate, concurrency: 4 };
            let backends = (0..load.concurrency).map(|_| Backend::Bridge(b.clone())).collect();
            drive(backends, &fx, &load, Some(Op::AppendLog), &stop)
        });
        std::thread::sleep(Duration::from_secs_f64(warm));
        b.flush(Duration::from_secs(60)).expect("caught up before the outage");
        let before = b.status().expect("status").applied_total;
        proxy.down();
        phase.store(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_secs_f64(secs));
        let st = b.status().expect("status");
        outage.backlog_at_return = st.outbox_depth;
        assert!(st.applied_total <= before + 2000, "nothing was applied while PostgreSQL was down");
        proxy.up();
        phase.store(2, Ordering::SeqCst);
        let back = Instant::now();
        b.flush(Duration::from_secs(300)).expect("drain after the outage");
        outage.drained_secs = back.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        let (outs, _) = writer.join().expect("writers");
        let (_, all, errors, _) = merge(&outs);
        let mut d = during.lock().unwrap();
        d.0 = all;
        d.2 = errors;
    });
    let d = during.into_inner().unwrap();
    outage.writes_during_outage = (rate * secs) as u64;
    outage.write_errors = d.2;
    outage.write_latency_during_outage = Latency::of(&d.0);
    b.flush(Duration::from_secs(120)).expect("final flush");
    b.shutdown(Duration::from_secs(5));
    drop(proxy);
    outage
}

// ----- report -----

/// Criterion medians by benchmark id (`write/dual/rust/append_log` → ns).
fn criterion_medians(dir: &Path) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n == "new") {
                    let bench: Option<Value> = std::fs::read(p.join("benchmark.json"))
                        .ok()
                        .and_then(|b| serde_json::from_slice(&b).ok());
                    let est: Option<Value> = std::fs::read(p.join("estimates.json"))
                        .ok()
                        .and_then(|b| serde_json::from_slice(&b).ok());
                    if let (Some(b), Some(e)) = (bench, est) {
                        if let (Some(id), Some(m)) =
                            (b["full_id"].as_str(), e["median"]["point_estimate"].as_f64())
                        {
                            out.insert(id.to_string(), m);
                        }
                    }
                } else {
                    stack.push(p);
                }
            }
        }
    }
    out
}

fn us(ns: f64) -> String {
    if ns >= 100_000.0 {
        format!("{:.0}", ns / 1000.0)
    } else {
        format!("{:.1}", ns / 1000.0)
    }
}

fn render_hot_paths(m: &BTreeMap<String, f64>) -> String {
    let get = |id: &str| m.get(id).copied();
    let cell = |id: &str| get(id).map_or_else(|| "—".to_string(), us);
    let mut s = String::new();
    s.push_str("Writes (median µs per call; each commit waits for an fsync):\n\n");
    s.push_str("| operation | sqlite, Rust API | sqlite, C ABI | dual, Rust API | dual, C ABI | dual / sqlite (Rust) |\n");
    s.push_str("| --- | ---: | ---: | ---: | ---: | ---: |\n");
    for op in ["append_log", "set_progress", "cache_put"] {
        let ratio = match (get(&format!("write/dual/rust/{op}")), get(&format!("write/sqlite/rust/{op}"))) {
            (Some(d), Some(q)) => format!("{:.2}", d / q),
            _ => "—".into(),
        };
        s.push_str(&format!(
            "| {op} | {} | {} | {} | {} | {ratio} |\n",
            cell(&format!("write/sqlite/rust/{op}")),
            cell(&format!("write/sqlite/c_abi/{op}")),
            cell(&format!("write/dual/rust/{op}")),
            cell(&format!("write/dual/c_abi/{op}")),
        ));
    }
    s.push_str(
        "\nPostgreSQL-first writes (median µs per call, Rust API; a PostgreSQL round trip and commit \
         inside each call, under SQLite's write lock):\n\n",
    );
    s.push_str(
        "| operation | dual | postgres_primary | postgres | postgres_primary / dual | postgres / dual |\n",
    );
    s.push_str("| --- | ---: | ---: | ---: | ---: | ---: |\n");
    for op in ["append_log", "set_progress", "cache_put"] {
        let dual = get(&format!("write/dual/rust/{op}"));
        let ratio = |mode: &str| match (get(&format!("write/{mode}/rust/{op}")), dual) {
            (Some(m), Some(d)) => format!("{:.2}", m / d),
            _ => "—".into(),
        };
        s.push_str(&format!(
            "| {op} | {} | {} | {} | {} | {} |\n",
            cell(&format!("write/dual/rust/{op}")),
            cell(&format!("write/postgres_primary/rust/{op}")),
            cell(&format!("write/postgres/rust/{op}")),
            ratio("postgres_primary"),
            ratio("postgres"),
        ));
    }
    s.push_str("\nReads (median µs per call):\n\n");
    s.push_str(
        "| operation | sqlite | postgres | shadow | sqlite, C ABI |\n| --- | ---: | ---: | ---: | ---: |\n",
    );
    for (op, c_op) in [
        ("get_job", "get_job"),
        ("job_logs", "job_logs"),
        ("cache_hit", ""),
        ("cache_get_typed", "cache_get_typed"),
    ] {
        s.push_str(&format!(
            "| {op} | {} | {} | {} | {} |\n",
            cell(&format!("read/sqlite/{op}")),
            cell(&format!("read/postgres/{op}")),
            cell(&format!("read/shadow/{op}")),
            if c_op.is_empty() { "—".into() } else { cell(&format!("read/sqlite/c_abi/{c_op}")) },
        ));
    }
    s.push_str("\nReplication (median per batch of 1,000 job_logs records):\n\n| benchmark | ms | rows/s |\n| --- | ---: | ---: |\n");
    for id in ["replicate/apply_batch_1000_job_logs", "replicate/apply_batch_1000_job_logs_replayed"] {
        if let Some(ns) = get(id) {
            s.push_str(&format!("| `{id}` | {:.2} | {:.0} |\n", ns / 1e6, 1000.0 / (ns / 1e9)));
        }
    }
    // `capture/follow/<n>_mixed`: n captured transactions of one change each, and the job they share.
    for (id, ns) in m.iter().filter(|(id, _)| id.starts_with("capture/follow/")) {
        let Some(txns) = id.strip_prefix("capture/follow/").and_then(|r| r.strip_suffix("_mixed")) else {
            continue;
        };
        let Ok(txns) = txns.parse::<f64>() else { continue };
        let changes = txns + 1.0;
        s.push_str(&format!(
            "\nThe SQLite follower (`capture::decode` + `capture::follow::take` of captured single-change \
             transactions, no commit; median):\n\n| benchmark | ms | µs per change | changes/s |\n| --- | ---: | ---: | ---: |\n\
             | `{id}` | {:.2} | {:.2} | {:.0} |\n",
            ns / 1e6,
            ns / 1000.0 / changes,
            changes / (ns / 1e9)
        ));
    }
    // `verify/row_digest_job_logs/<rows>`: the id ends in the number of rows digested.
    let digests: Vec<(&String, usize, f64)> = m
        .iter()
        .filter_map(|(id, ns)| {
            let rows = id.strip_prefix("verify/row_digest_job_logs/")?.parse().ok()?;
            Some((id, rows, *ns))
        })
        .collect();
    if !digests.is_empty() {
        s.push_str(
            "\nCanonical-row checksum (`verify::sqlite_row_digest`: canonical encoding + SHA-256 per row, \
             XORed into a chunk checksum; median):\n\n| benchmark | ms | µs per row | rows/s |\n| --- | ---: | ---: | ---: |\n",
        );
        for (id, rows, ns) in digests {
            s.push_str(&format!(
                "| `{id}` | {:.2} | {:.2} | {:.0} |\n",
                ns / 1e6,
                ns / 1000.0 / rows as f64,
                rows as f64 / (ns / 1e9)
            ));
        }
    }
    s
}

struct TargetRow {
    target: String,
    measured: String,
    met: Option<bool>,
}

fn target_rows(t: &Targets, m: Option<&BTreeMap<String, f64>>) -> Vec<TargetRow> {
    let mut rows = Vec::new();
    if let Some(d) = &t.dual_vs_sqlite {
        let worst = d.ops.iter().map(|p| p.ratio_median).fold(0.0, f64::max);
        rows.push(TargetRow {
            target: "dual write median ≤ 1.5 × sqlite mode".into(),
            measured: format!(
                "interleaved, {} rounds of {} writes per operation and mode, median of the per-round \
                 ratios (quartiles): {}",
                d.rounds,
                d.writes_per_round,
                d.ops
                    .iter()
                    .map(|p| format!(
                        "{} {:.2}× ({:.2}–{:.2}; medians {} / {} µs)",
                        p.op, p.ratio_median, p.ratio_q1, p.ratio_q3, p.dual.p50_us, p.sqlite.p50_us
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            met: Some(worst <= 1.5),
        });
    }
    if let Some(m) = m {
        let ops = ["append_log", "set_progress", "cache_put"];
        let ratios: Vec<(String, f64)> = ops
            .iter()
            .filter_map(|op| {
                let d = m.get(&format!("write/dual/rust/{op}"))?;
                let q = m.get(&format!("write/sqlite/rust/{op}"))?;
                Some((op.to_string(), d / q))
            })
            .collect();
        if !ratios.is_empty() && t.dual_vs_sqlite.is_none() {
            let worst = ratios.iter().map(|(_, r)| *r).fold(0.0, f64::max);
            rows.push(TargetRow {
                target: "dual write median ≤ 1.5 × sqlite mode".into(),
                measured: ratios.iter().map(|(op, r)| format!("{op} {r:.2}×")).collect::<Vec<_>>().join(", "),
                met: Some(worst <= 1.5),
            });
        }
        let reads = [
            ("get_job", "read/sqlite/get_job", "read/sqlite/c_abi/get_job"),
            ("job_logs", "read/sqlite/job_logs", "read/sqlite/c_abi/job_logs"),
            ("cache_get", "read/sqlite/cache_get_typed", "read/sqlite/c_abi/cache_get_typed"),
        ];
        let read_deltas: Vec<(String, f64)> = reads
            .iter()
            .filter_map(|(op, r, c)| Some((op.to_string(), (m.get(*c)? - m.get(*r)?) / 1000.0)))
            .collect();
        let write_deltas: Vec<(String, f64)> = ops
            .iter()
            .filter_map(|op| {
                let c = m.get(&format!("write/sqlite/c_abi/{op}"))?;
                let r = m.get(&format!("write/sqlite/rust/{op}"))?;
                Some((op.to_string(), (c - r) / 1000.0))
            })
            .collect();
        if !read_deltas.is_empty() {
            let small = read_deltas
                .iter()
                .filter(|(op, _)| op != "job_logs")
                .map(|(_, d)| *d)
                .fold(f64::MIN, f64::max);
            rows.push(TargetRow {
                target: "C ABI adds ≤ 3 µs median per call over the Rust API".into(),
                measured: format!(
                    "one-row reads (the verdict): {}; a 50-row list: {} (JSON encoding of the \
                     result); writes, within one fsync's noise: {}",
                    read_deltas
                        .iter()
                        .filter(|(op, _)| op != "job_logs")
                        .map(|(op, d)| format!("{op} {d:+.1} µs"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    read_deltas
                        .iter()
                        .filter(|(op, _)| op == "job_logs")
                        .map(|(_, d)| format!("{d:+.1} µs"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    write_deltas
                        .iter()
                        .map(|(op, d)| format!("{op} {d:+.1} µs"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                met: Some(small <= 3.0),
            });
        }
    }
    if let Some(d) = &t.drain {
        rows.push(TargetRow {
            target: "replication drains a backlog at ≥ 50,000 job_logs rows/s".into(),
            measured: format!(
                "{:.0} rows/s ({} rows in {:.1} s){}",
                d.rows_per_sec,
                d.rows,
                d.seconds,
                d.phases.as_ref().map_or_else(String::new, |p| format!(
                    "; capture caught up {:.1} s after the flush; {}; the same drain by hand, per step: PostgreSQL apply {:.0} %, outbox read {:.0} %, \
                     outbox delete {:.0} % of {:.1} s ({} batches of {}); {}",
                    d.capture_caught_up_secs,
                    d.cpu.render(),
                    100.0 * p.apply_secs / p.seconds,
                    100.0 * p.read_outbox_secs / p.seconds,
                    100.0 * p.mark_applied_secs / p.seconds,
                    p.seconds,
                    p.batches,
                    p.batch_size,
                    p.cpu.render()
                ))
            ),
            met: Some(d.rows_per_sec >= 50_000.0),
        });
    }
    if let Some(l) = &t.lag {
        rows.push(TargetRow {
            target: format!("replication lag at a steady {:.0} writes/s: p99 < 100 ms", l.rate),
            measured: format!(
                "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {} writes ({:.0}/s achieved{})",
                l.lag.p50_ms,
                l.lag.p99_ms,
                l.lag.max_ms,
                l.writes,
                l.writes_per_sec,
                if l.lag.method == "commit_timestamp" { "" } else { "; sampled outbox age" }
            ),
            met: Some(l.lag.p99_ms < 100.0 && l.writes_per_sec >= 0.95 * l.rate),
        });
    }
    if let Some(f) = &t.follower_lag {
        let l = &f.steady;
        rows.push(TargetRow {
            target: format!("SQLite follower's lag at a steady {:.0} writes/s in postgres_primary: p99 < 100 ms", l.rate),
            measured: format!(
                "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {} writes ({:.0}/s achieved; write p50 {:.2} ms, p99 {:.2} ms; \
                 follower CPU {} µs per change)",
                l.lag.p50_ms,
                l.lag.p99_ms,
                l.lag.max_ms,
                l.writes,
                l.writes_per_sec,
                l.write_latency.p50_us as f64 / 1000.0,
                l.write_latency.p99_us as f64 / 1000.0,
                f.follower_cpu_us_per_change.map_or("—".into(), |c| format!("{c:.1}"))
            ),
            met: Some(l.lag.p99_ms < 100.0 && l.writes_per_sec >= 0.95 * l.rate),
        });
    }
    if let Some(o) = &t.outage {
        rows.push(TargetRow {
            target: format!(
                "a {:.0} s PostgreSQL outage under {:.0} writes/s drained within 10 s of its return",
                o.outage_secs, o.rate
            ),
            measured: format!(
                "{:.1} s for {} waiting changes; {} write errors during the outage",
                o.drained_secs, o.backlog_at_return, o.write_errors
            ),
            met: Some(o.drained_secs <= 10.0 && o.write_errors == 0),
        });
    }
    rows
}

fn render_targets(t: &Targets, m: Option<&BTreeMap<String, f64>>) -> String {
    let mut s = String::from("| target | measured | met |\n| --- | --- | --- |\n");
    for r in target_rows(t, m) {
        let met = match r.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "—",
        };
        s.push_str(&format!("| {} | {} | {met} |\n", r.target, r.measured));
    }
    s
}

fn render_rss_target(results: &[RunResult]) -> String {
    let bridge: Vec<&RunResult> = results.iter().filter(|r| r.config != "postgres").collect();
    let Some(worst) = bridge.iter().max_by_key(|r| r.rss_peak_kb) else { return String::new() };
    let mb = worst.rss_peak_kb as f64 / 1024.0;
    format!(
        "| peak RSS of a process with the bridge under the mixed workload < 100 MB | {mb:.1} MB (highest: {}) | {} |\n",
        worst.config,
        if mb < 100.0 { "yes" } else { "**no**" }
    )
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let mem_kb: u64 = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().next().and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok()))
        .unwrap_or(0);
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    format!("{cores} cores ({cpu}), {:.1} GiB memory", mem_kb as f64 / 1024.0 / 1024.0)
}

fn rustc_version() -> String {
    Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn read_json<T: for<'de> Deserialize<'de>>(p: &Option<PathBuf>) -> Option<T> {
    p.as_ref().map(|p| {
        serde_json::from_slice(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    })
}

fn report(a: ReportArgs) {
    let medians = a.criterion.as_deref().map(criterion_medians);
    let compare: Option<Vec<RunResult>> = read_json(&a.compare);
    let capacity: Option<Vec<RunResult>> = read_json(&a.capacity);
    let targets: Option<Targets> = read_json(&a.targets);
    let mut sections: Vec<(&str, String)> = Vec::new();

    let mut run = String::new();
    run.push_str(&format!("- date: {}\n", chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")));
    run.push_str(&format!("- machine: {}\n", machine()));
    let mut versions = vec![rustc_version()];
    if let Some(t) = &targets {
        for (k, v) in &t.versions {
            versions.push(format!("{k} {v}"));
        }
    }
    run.push_str(&format!("- versions: {}\n", versions.join(", ")));
    if let Some(n) = &a.note {
        run.push_str(&format!("- {n}\n"));
    }
    sections.push(("run", run));

    if let Some(m) = &medians {
        sections.push(("hot-paths", render_hot_paths(m)));
    }
    let mut cmp = String::new();
    if let Some(c) = &compare {
        if let Some(r) = c.first() {
            cmp.push_str(&format!(
                "At a fixed {:.0} operations/s over {} workers, {:.0} s per configuration (latency from each operation's scheduled start):\n\n",
                r.rate, r.concurrency, r.seconds
            ));
        }
        cmp.push_str(&render_compare(c));
    }
    if let Some(c) = &capacity {
        if let Some(r) = c.first() {
            cmp.push_str(&format!(
                "\nCapacity: closed loop (each of {} workers starts its next operation when the last returns), {:.0} s per configuration:\n\n",
                r.concurrency, r.seconds
            ));
        }
        cmp.push_str(&render_compare(c));
    }
    if !cmp.is_empty() {
        sections.push(("comparison", cmp));
    }
    if let Some(t) = &targets {
        let mut s = render_targets(t, medians.as_ref());
        if let Some(c) = compare.as_ref().or(capacity.as_ref()) {
            s.push_str(&render_rss_target(c));
        }
        sections.push(("targets", s));
    }

    if let Some(p) = &a.backfill {
        let table = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        sections.push(("backfill", table));
    }

    match &a.doc {
        None => {
            for (name, body) in &sections {
                println!("<!-- {name} -->\n{body}");
            }
        }
        Some(doc) => {
            let mut text = std::fs::read_to_string(doc).unwrap_or_default();
            for (name, body) in &sections {
                text = splice(&text, name, body);
            }
            std::fs::write(doc, text).expect("write the doc");
            eprintln!("workload: regenerated {} section(s) of {}", sections.len(), doc.display());
        }
    }
}

/// Replace what lies between `<!-- BEGIN generated:NAME -->` and `<!-- END generated:NAME -->`
/// (appending both markers at the end when absent).
fn splice(text: &str, name: &str, body: &str) -> String {
    let begin = format!("<!-- BEGIN generated:{name} (scripts/bench) -->");
    let end = format!("<!-- END generated:{name} -->");
    let block = format!("{begin}\n{}\n{end}", body.trim_end());
    match (text.find(&begin), text.find(&end)) {
        (Some(b), Some(e)) if e > b => format!("{}{block}{}", &text[..b], &text[e + end.len()..]),
        _ => format!("{}\n{block}\n", text.trim_end()),
    }
}
