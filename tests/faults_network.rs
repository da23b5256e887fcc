//! Network faults and a file-size limit (invariants 1, 2, 3 and 6), after tests/faults.rs and
//! tests/faults_more.rs: 20 ms of latency each way between the bridge and PostgreSQL while writes
//! stream in; the traffic black-holed (connections kept open, nothing forwarded, no RST) in the
//! middle of a stream in `dual`, and while PostgreSQL is the primary (`postgres_primary`); and
//! SQLite under RLIMIT_FSIZE in a child process (the full-disk scenario without a file system of
//! its own). Each scenario prints one `FAULT SUMMARY` line that docs/RELIABILITY.md quotes.
//!
//! Run: `pg_virtualenv -t -v 15 cargo test --test faults_network -- --nocapture`. Short by default;
//! `DUALWRITE_SOAK=1` scales every scenario up; `DUALWRITE_FAULT_SEED=<n>` replays a run's random
//! choices. The proxy (tests/support/proxy.rs) explains what its black hole models.
//!
//! A black hole must be noticed by the bridge's own timeouts: the scenarios give it `BOUND` to
//! notice, then cut the held connections (the RST that eventually arrives) so the rest of the
//! scenario still runs and proves convergence, and fail at the end if the bound was missed.
//!
//! The RLIMIT_FSIZE writer is this test binary re-run with `--ignored --exact
//! fsize_limited_writer_child` and the `DW_FSIZE_*` variables, as tests/processes.rs does.

mod common;
mod support;

use dualwrite::{
    Bridge, BridgeOptions, Config, FlagChange, KeySource, PgConfig, ReplicatorOptions, WriteMode,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use support::proxy::{Proxy, Upstream};
use support::workload::*;
use support::{integrity_check, short_or_soak};

const CONVERGE: Duration = Duration::from_secs(120);
/// How long the bridge may take to notice a black hole (a write to fail, replication to resume
/// after the route is back): past the 30 s reply deadline (`DUALWRITE_PG_REPLY_TIMEOUT`,
/// src/pg_deadline.rs), which covers TLS connections (the test cluster has ssl on; `prefer`).
const BOUND: Duration = Duration::from_secs(35);

/// A bridge whose PostgreSQL is reached through `proxy`.
fn proxied_bridge(db: &common::TestDb, dir: &Path, proxy: &Proxy, options: BridgeOptions) -> Bridge {
    let mut config = common::config(db, dir);
    config.postgres = Some(support::via_proxy(&db.config, proxy.port()));
    Bridge::open(config, options).expect("open bridge")
}

/// The test database's client sessions as PostgreSQL sees them (`state: query`), ours excluded.
fn sessions(db: &common::TestDb) -> Vec<String> {
    db.connect()
        .query(
            "SELECT coalesce(state, '?') || ' ' || coalesce(wait_event, '-') || ': ' || left(query, 70) \
             FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() \
             AND backend_type = 'client backend' ORDER BY backend_start",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Median round trip of `SELECT 1` through the proxy (to show the latency is really there).
fn round_trip(db: &common::TestDb, proxy: &Proxy) -> Duration {
    let mut c = support::via_proxy(&db.config, proxy.port()).connect().expect("connect through the proxy");
    let mut times: Vec<Duration> = (0..5)
        .map(|_| {
            let t = Instant::now();
            c.simple_query("SELECT 1").unwrap();
            t.elapsed()
        })
        .collect();
    times.sort();
    times[2]
}

/// What a writer thread did.
struct Streamed {
    w: Workload,
    attempted: u64,
    failed: u64,
    slowest: Duration,
}

/// Write the seeded workload on a thread until `stop` (and at least `min` writes), pausing 2 ms
/// every 8 writes as a monolith does between requests (a writer that never lets go of SQLite's
/// write lock starves the replicator, see tests/faults.rs). A failed write is counted, not fatal.
fn stream_writes(
    b: &Bridge,
    seed: u64,
    min: u64,
    stop: &Arc<AtomicBool>,
) -> std::thread::JoinHandle<Streamed> {
    let (b, stop) = (b.clone(), stop.clone());
    std::thread::spawn(move || {
        let mut s = Streamed { w: Workload::new(seed, 0), attempted: 0, failed: 0, slowest: Duration::ZERO };
        while s.attempted < min || !stop.load(Ordering::SeqCst) {
            let p = s.w.plan();
            s.attempted += 1;
            let t = Instant::now();
            match Workload::execute(&b, &p) {
                Ok(stored) => s.w.record(&p, stored),
                Err(e) => {
                    eprintln!("write {} ({} {} {}) failed: {e}", p.n, p.change.kind(), p.table, p.key);
                    s.failed += 1;
                }
            }
            s.slowest = s.slowest.max(t.elapsed());
            if p.n % 8 == 7 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        s
    })
}

// ----- 1. 20 ms each way -----

#[test]
fn latency_of_20ms_each_way_replication_keeps_up_and_converges() {
    let _serial = serial();
    let seed = seed("latency");
    let writes: u64 = short_or_soak(3_000, 20_000);
    let each_way = Duration::from_millis(20);
    let db = common::migrated_db();
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(Upstream::of(db.config.postgres_config()));
    let rtt_before = round_trip(&db, &proxy);
    // From the first byte: connection set-up (TLS negotiation, authentication) pays it too.
    proxy.set_latency(each_way);
    let rtt = round_trip(&db, &proxy);
    println!(
        "latency: SELECT 1 through the proxy: {rtt_before:.1?} without, {rtt:.1?} with {each_way:?} each way"
    );
    assert!(rtt >= each_way * 2, "the proxy does not delay: round trip {rtt:?}");
    // The default replicator options: what a monolith runs with.
    let b = proxied_bridge(&db, dir.path(), &proxy, BridgeOptions::default());
    let sqlite = b.config().sqlite_path.clone();

    let stop = Arc::new(AtomicBool::new(true));
    let started = Instant::now();
    let writer = stream_writes(&b, seed, writes, &stop);
    // The lag while writing: the age of the oldest change not yet in PostgreSQL, and the depth.
    let (mut lag_max, mut lag_sum, mut depth_max, mut samples) = (0i64, 0i64, 0i64, 0i64);
    while !writer.is_finished() {
        std::thread::sleep(Duration::from_millis(100));
        let st = b.status().unwrap();
        let lag = st.oldest_pending_ms.unwrap_or(0);
        lag_max = lag_max.max(lag);
        lag_sum += lag;
        depth_max = depth_max.max(st.outbox_depth);
        samples += 1;
    }
    let s = writer.join().expect("writer thread");
    let writing = started.elapsed();
    let flushing = Instant::now();
    b.flush(CONVERGE).expect("converge under latency");
    let converge = flushing.elapsed();
    let st = b.status().unwrap();
    println!("latency: status after flush: {st:?}");
    let lag_mean = lag_sum / samples.max(1);
    let rate = s.attempted as f64 / writing.as_secs_f64();

    assert_eq!(s.failed, 0, "writes failed under latency");
    assert_eq!(st.outbox_depth, 0);
    assert_eq!(st.dead_letters, 0, "{:?}", b.dead_letters().unwrap());
    let lost = s.w.lost(&b);
    assert_eq!(lost, 0, "writes lost");
    common::assert_stores_equal(&b, &db);
    assert_revisions_consistent(&db, last_outbox_seq(&sqlite));
    let tombstones = assert_deletes_tombstoned(&db, &s.w);
    println!(
        "FAULT SUMMARY scenario=latency each_way_ms={} rtt_ms={:.1} writes_attempted={} writes_failed={} \
         write_rate={rate:.0}/s lag_max_ms={lag_max} lag_mean_ms={lag_mean} outbox_depth_max={depth_max} \
         final_flush_ms={} rows_checked={} deletes_checked={tombstones} lost={lost} duplicated=0 \
         stores_equal=yes seed={seed}",
        each_way.as_millis(),
        rtt.as_secs_f64() * 1e3,
        s.attempted,
        s.failed,
        converge.as_millis(),
        s.w.expected.len(),
    );
}

// ----- 2. black hole in the middle of a stream, dual mode -----

#[test]
fn black_hole_mid_stream_in_dual_mode_replication_resumes_after_restore() {
    let _serial = serial();
    let seed = seed("black_hole_dual");
    let mut rng = StdRng::seed_from_u64(seed);
    let hole_for = short_or_soak(Duration::from_secs(3), Duration::from_secs(15));
    let db = common::migrated_db();
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(Upstream::of(db.config.postgres_config()));
    // Small batches keep the replicator busy, so the black hole lands inside a batch.
    let options = BridgeOptions {
        replicator: ReplicatorOptions {
            batch_size: 50,
            poll_interval: Duration::from_millis(20),
            min_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_secs(1),
            ..ReplicatorOptions::default()
        },
        ..BridgeOptions::default()
    };
    let b = proxied_bridge(&db, dir.path(), &proxy, options);
    let sqlite = b.config().sqlite_path.clone();

    let stop = Arc::new(AtomicBool::new(false));
    let writer = stream_writes(&b, seed, 1_000, &stop);
    assert!(
        eventually(Duration::from_secs(30), || max_revision(&db) > 0),
        "nothing replicated before the black hole"
    );
    std::thread::sleep(Duration::from_millis(rng.gen_range(300..1_000)));
    let caught = proxy.black_hole();
    let holed = Instant::now();
    let revision_at_hole = max_revision(&db);
    let pending_at_hole = last_outbox_seq(&sqlite) - revision_at_hole;
    std::thread::sleep(hole_for);
    let during = b.status().unwrap();
    let revision_before_restore = max_revision(&db);
    proxy.restore();
    let restored = Instant::now();
    let target = last_outbox_seq(&sqlite);
    println!(
        "black_hole_dual: {caught} open connection(s) black-holed with {pending_at_hole} changes pending; after \
         {hole_for:?}: outbox depth {}, PostgreSQL at revision {revision_before_restore} (was {revision_at_hole}), \
         replicator connected={} last_error={:?}; restored, target change {target}",
        during.outbox_depth, during.postgres_connected, during.last_error
    );

    // The bridge must find out by itself that its connection is dead and replicate through a
    // new one: nothing else will tell it (the held connection never answers, never closes).
    let resumed = eventually(BOUND, || max_revision(&db) >= target);
    let resumed_after = restored.elapsed();
    let mut hang = None;
    if !resumed {
        let st = b.status().unwrap();
        let held = proxy.held_connections();
        let pg_sessions = sessions(&db);
        let report = format!(
            "replication did not resume within {BOUND:?} of the restore ({:?} after the black hole began): \
             PostgreSQL at revision {} of {target}, outbox depth {}, status connected={} last_error={:?} \
             retries={}; {held} connection(s) still black-holed; PostgreSQL sessions: {pg_sessions:?}",
            holed.elapsed(),
            max_revision(&db),
            st.outbox_depth,
            st.postgres_connected,
            st.last_error,
            st.retries
        );
        println!("black_hole_dual: HANG: {report}");
        hang = Some(report);
        // The RST that eventually arrives: the rest of the scenario still runs.
        let cut = proxy.cut_all();
        let cut_at = Instant::now();
        assert!(
            eventually(CONVERGE, || max_revision(&db) >= target),
            "replication did not resume even after the black-holed connections were cut"
        );
        println!(
            "black_hole_dual: after cutting {cut} held connection(s), caught up in {:.2?}",
            cut_at.elapsed()
        );
    } else {
        println!("black_hole_dual: caught up with change {target} {resumed_after:.2?} after the restore");
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    let s = writer.join().expect("writer thread");
    let flushing = Instant::now();
    b.flush(CONVERGE).expect("converge after the black hole");
    let converge = flushing.elapsed();
    let st = b.status().unwrap();
    println!("black_hole_dual: status after flush: {st:?}; proxy {:?}", proxy.stats());

    assert_eq!(
        s.failed, 0,
        "writes failed while PostgreSQL was black-holed (dual mode: SQLite alone takes them)"
    );
    assert_eq!(st.outbox_depth, 0);
    assert_eq!(st.dead_letters, 0, "{:?}", b.dead_letters().unwrap());
    let lost = s.w.lost(&b);
    assert_eq!(lost, 0, "writes lost");
    common::assert_stores_equal(&b, &db);
    assert_revisions_consistent(&db, last_outbox_seq(&sqlite));
    let tombstones = assert_deletes_tombstoned(&db, &s.w);
    println!(
        "FAULT SUMMARY scenario=black_hole_dual hole_s={} connections_held={caught} writes_attempted={} \
         writes_failed={} slowest_write_ms={} resumed_within_bound={} resume_ms={} final_flush_ms={} \
         rows_checked={} deletes_checked={tombstones} lost={lost} duplicated=0 stores_equal=yes seed={seed}",
        hole_for.as_secs(),
        s.attempted,
        s.failed,
        s.slowest.as_millis(),
        resumed,
        if resumed { resumed_after.as_millis().to_string() } else { "none".into() },
        converge.as_millis(),
        s.w.expected.len(),
    );
    if let Some(report) = hang {
        panic!(
            "the replicator did not notice a silent PostgreSQL: the reply deadline (src/pg_deadline.rs, \
             DUALWRITE_PG_REPLY_TIMEOUT, TLS connections only) did not fail its round trip within BOUND: {report}"
        );
    }
}

// ----- 3. black hole while PostgreSQL is the primary -----

#[test]
fn black_hole_with_postgres_primary_a_write_fails_in_bounded_time() {
    let _serial = serial();
    let seed = seed("black_hole_primary");
    let before = short_or_soak(100, 1_000);
    let after = short_or_soak(200, 2_000);
    let db = common::migrated_db();
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(Upstream::of(db.config.postgres_config()));
    let b = proxied_bridge(&db, dir.path(), &proxy, BridgeOptions::default());
    let mut w = Workload::new(seed, 0);
    for _ in 0..before {
        w.step(&b);
    }
    b.flush(CONVERGE).expect("replicates before the switch");
    // Deletes made while SQLite was the primary went through the outbox and must have left
    // tombstones in the revision ledger. Those made with PostgreSQL first are plain PostgreSQL
    // deletes (no revision claim, docs/ARCHITECTURE.md "PostgreSQL as the primary"): that they
    // stay deleted is checked by the row-by-row comparison of both stores below.
    let deleted_in_dual: Vec<(&'static str, String)> =
        w.expected.iter().filter(|(_, row)| row.is_none()).map(|(key, _)| key.clone()).collect();
    b.set_flag(FlagChange::WriteMode(WriteMode::PostgresPrimary), "t", "w", false).expect("postgres_primary");
    for _ in 0..before {
        w.step(&b);
    }
    // Between writes, so no write is in flight (a write whose COMMIT PostgreSQL took but whose
    // answer was swallowed would be an unknown outcome the model cannot check).
    let caught = proxy.black_hole();
    let holed = Instant::now();

    // Two writes from two threads of the monolith: the second one queues behind the first.
    let mut start_write = |n: u64| {
        let p = w.insert_job(n);
        let (tx, rx) = mpsc::channel();
        let bridge = b.clone();
        let plan = p.clone();
        std::thread::spawn(move || {
            let t = Instant::now();
            let r = Workload::execute(&bridge, &plan);
            let _ = tx.send((r, t.elapsed()));
        });
        (p, rx)
    };
    let (first, first_rx) = start_write(900_000_000);
    std::thread::sleep(Duration::from_millis(500));
    let (second, second_rx) = start_write(900_000_001);
    let first_outcome = first_rx.recv_timeout(BOUND).ok();
    let second_outcome = second_rx.recv_timeout(Duration::from_secs(2)).ok();
    let waited = holed.elapsed();
    let describe = |o: &Option<(dualwrite::Result<Option<dualwrite::Row>>, Duration)>| match o {
        Some((Ok(_), t)) => format!("succeeded after {t:.2?}"),
        Some((Err(e), t)) => format!("failed after {t:.2?}: {e} ({e:?})"),
        None => format!("no answer after {waited:.1?}"),
    };
    println!(
        "black_hole_primary: {caught} connection(s) black-holed; first write {}; second write {}",
        describe(&first_outcome),
        describe(&second_outcome)
    );
    // `status` (what an operator looks at) asks PostgreSQL how far SQLite is behind in this mode.
    let status_took = Instant::now();
    let during = bounded(Duration::from_secs(10), {
        let b = b.clone();
        move || b.status()
    });
    let status_during = match &during {
        Some(Ok(st)) => format!(
            "status answered in {:.2?}: connected={} last_error={:?}",
            status_took.elapsed(),
            st.postgres_connected,
            st.last_error
        ),
        Some(Err(e)) => format!("status failed in {:.2?}: {e}", status_took.elapsed()),
        None => "status did not answer within 10 s either".to_string(),
    };
    println!("black_hole_primary: {status_during}");
    let pg_sessions = sessions(&db);
    let hang = first_outcome.is_none().then(|| {
        format!(
            "a write in postgres_primary did not return within {BOUND:?} of the black hole (the second \
             write, from another thread, {}); {status_during}; {} connection(s) black-holed; PostgreSQL \
             sessions: {pg_sessions:?}",
            describe(&second_outcome),
            proxy.held_connections()
        )
    });
    if let Some((r, _)) = &first_outcome {
        assert!(r.is_err(), "a write succeeded with PostgreSQL, the primary, black-holed");
    }

    // Restore; if the writes hang, cut the held connections (the RST that eventually arrives).
    proxy.restore();
    let mut outcomes = vec![(first, first_outcome, first_rx), (second, second_outcome, second_rx)];
    if hang.is_some() {
        println!("black_hole_primary: proxy {:?}, {} open", proxy.stats(), proxy.open_connections());
        let cut = proxy.cut_all();
        println!("black_hole_primary: HANG; cut {cut} held connection(s)");
    }
    let mut results = Vec::new();
    for (p, outcome, rx) in outcomes.drain(..) {
        let (r, t) = match outcome {
            Some(o) => o,
            None => rx
                .recv_timeout(Duration::from_secs(60))
                .expect("the write returns once its connection is cut"),
        };
        println!(
            "black_hole_primary: write {} ({} {}): {} after {t:.2?}",
            p.n,
            p.change.kind(),
            p.table,
            match &r {
                Ok(_) => "succeeded".to_string(),
                Err(e) => format!("failed: {e} ({e:?})"),
            }
        );
        match r {
            Ok(stored) => w.record(&p, stored),
            Err(e) => results.push(format!("{e}")),
        }
    }
    // The error the caller got (the first write's when it failed).
    let error = results.first().cloned().unwrap_or_default();

    // Writes work again, and the stores converge.
    let restored = Instant::now();
    let mut first_ok = None;
    for _ in 0..after {
        w.step(&b);
        first_ok.get_or_insert(restored.elapsed());
    }
    let flushing = Instant::now();
    b.flush(CONVERGE).expect("converge after the black hole");
    let caught_up = sqlite_caught_up(&db, CONVERGE)
        .expect("SQLite did not take PostgreSQL's changes (the capture did not resume after the black hole)");
    let converge = flushing.elapsed();
    println!(
        "black_hole_primary: SQLite had taken every PostgreSQL change {caught_up:.2?} after the last write"
    );
    let st = b.status().unwrap();
    assert_eq!(st.outbox_depth, 0);
    assert_eq!(st.dead_letters, 0, "{:?}", b.dead_letters().unwrap());
    let lost = w.lost(&b);
    assert_eq!(lost, 0, "writes lost");
    common::assert_stores_equal(&b, &db);
    let mut still_deleted_from_dual = Workload::new(seed, 0);
    still_deleted_from_dual.expected = deleted_in_dual
        .into_iter()
        .filter(|key| matches!(w.expected.get(key), Some(None)))
        .map(|key| (key, None))
        .collect();
    let tombstones = assert_deletes_tombstoned(&db, &still_deleted_from_dual);
    let first_time = outcomes_time(&hang, waited);
    println!(
        "FAULT SUMMARY scenario=black_hole_primary connections_held={caught} write_error_within_bound={} \
         first_write={first_time} error=\"{error}\" first_write_after_restore_ms={} writes_after={after} \
         writes_committed={} rows_checked={} deletes_checked={tombstones} lost={lost} duplicated=0 \
         final_flush_ms={} stores_equal=yes seed={seed}",
        hang.is_none(),
        first_ok.unwrap_or_default().as_millis(),
        w.writes,
        w.expected.len(),
        converge.as_millis(),
    );
    if let Some(report) = hang {
        panic!(
            "a PostgreSQL-first write did not fail within BOUND against a silent PostgreSQL: the reply \
             deadline (src/pg_deadline.rs, TLS connections only) and the bounded connect \
             (PgConfig::connect) should have ended it: {report}"
        );
    }
}

/// With PostgreSQL first, `flush` has nothing to wait for (the outbox stays empty): SQLite follows
/// through the change capture, whose stream restarts after a fault. SQLite holds every change
/// committed until now once the slot's confirmed position passes the current WAL position, since
/// a position is confirmed only after SQLite committed what came before it. How long that took.
fn sqlite_caught_up(db: &common::TestDb, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut pg = db.connect();
    let now: String = pg.query_one("SELECT pg_current_wal_flush_lsn()::text", &[]).unwrap().get(0);
    let confirmed = format!(
        "SELECT coalesce(confirmed_flush_lsn >= $1::text::pg_lsn, false) FROM pg_replication_slots \
         WHERE slot_name = {}",
        dualwrite::capture::slot::SLOT_SQL
    );
    eventually(within, || pg.query_opt(&confirmed, &[&now]).unwrap().is_some_and(|r| r.get::<_, bool>(0)))
        .then(|| started.elapsed())
}

/// `f` on a thread; its result if it came within `d` (the thread is left behind if not).
fn bounded<T: Send + 'static>(d: Duration, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(d).ok()
}

fn outcomes_time(hang: &Option<String>, waited: Duration) -> String {
    match hang {
        Some(_) => format!("hung_over_{}s", waited.as_secs()),
        None => "failed_in_time".into(),
    }
}

// ----- 4. SQLite under RLIMIT_FSIZE -----

const FSIZE_SQLITE: &str = "DW_FSIZE_SQLITE";
const FSIZE_PG: &str = "DW_FSIZE_PG";
const FSIZE_KEY: &str = "DW_FSIZE_KEY";
const FSIZE_SEED: &str = "DW_FSIZE_SEED";
const FSIZE_AFTER: &str = "DW_FSIZE_AFTER";
/// Writes tried after the first refused one, while the limit holds.
const FSIZE_MORE: u64 = 20;

/// setrlimit(2), getrlimit(2) and signal(2) of the C library std links (no libc crate in the
/// dev-dependencies). Values of Linux (x86_64 and aarch64 alike).
#[cfg(target_os = "linux")]
mod rlimit {
    #[repr(C)]
    pub struct RLimit {
        pub cur: u64,
        pub max: u64,
    }
    pub const RLIMIT_FSIZE: i32 = 1;
    pub const RLIM_INFINITY: u64 = u64::MAX;
    pub const SIGXFSZ: i32 = 25;
    pub const SIG_IGN: usize = 1;
    pub const SIG_ERR: usize = usize::MAX;
    extern "C" {
        pub fn setrlimit(resource: i32, rlim: *const RLimit) -> i32;
        pub fn getrlimit(resource: i32, rlim: *mut RLimit) -> i32;
        pub fn signal(signum: i32, handler: usize) -> usize;
    }

    /// The soft and hard RLIMIT_FSIZE of this process.
    pub fn fsize() -> (u64, u64) {
        let mut r = RLimit { cur: 0, max: 0 };
        // SAFETY: `r` is a valid, writable rlimit struct of the C layout.
        assert_eq!(unsafe { getrlimit(RLIMIT_FSIZE, &mut r) }, 0, "getrlimit");
        (r.cur, r.max)
    }

    /// Set the soft RLIMIT_FSIZE (the hard one stays unlimited).
    pub fn set_fsize(soft: u64) -> std::io::Result<()> {
        let r = RLimit { cur: soft, max: RLIM_INFINITY };
        // SAFETY: `r` is a valid rlimit struct of the C layout; setrlimit only reads it.
        if unsafe { setrlimit(RLIMIT_FSIZE, &r) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    out.write_all(format!("{line}\n").as_bytes()).expect("write to the parent");
    out.flush().expect("flush to the parent");
}

/// The writer of `sqlite_under_rlimit_fsize_...`, started with RLIMIT_FSIZE set and SIGXFSZ
/// ignored: writes the seeded workload until a write fails, `FSIZE_MORE` more, checks the file,
/// then lifts its own limit and writes `DW_FSIZE_AFTER` more on the same bridge. Reports
/// `OK <n> <table> <key> <row json | null>` per acknowledged write, `FAIL <n> <table> <key>
/// <extended code> <message>` per refused one, `INTEGRITY <result>` and `DONE`.
#[test]
#[ignore = "a child process of sqlite_under_rlimit_fsize_fails_clearly_keeps_every_write_and_recovers, which starts it"]
#[cfg(target_os = "linux")]
fn fsize_limited_writer_child() {
    let Ok(sqlite) = std::env::var(FSIZE_SQLITE) else { return };
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"));
    let seed: u64 = var(FSIZE_SEED).parse().unwrap();
    let after: u64 = var(FSIZE_AFTER).parse().unwrap();
    let config = Config {
        sqlite_path: sqlite.clone().into(),
        postgres: Some(PgConfig::from_url(&var(FSIZE_PG)).expect("child PostgreSQL config")),
        key_source: KeySource::File(var(FSIZE_KEY).into()),
    };
    let b = Bridge::open(config, BridgeOptions::default()).expect("child: open bridge");
    let mut w = Workload::load(&b, seed, 1_000_000);
    let (soft, hard) = rlimit::fsize();
    // A newline first: libtest may have printed "test fsize_limited_writer_child ... " without one.
    say(&format!("\nREADY fsize_soft={soft} fsize_hard={hard}"));
    let report = |p: &Planned, r: &dualwrite::Result<Option<dualwrite::Row>>| match r {
        Ok(stored) => {
            let image = stored.as_ref().map_or("null".to_string(), |r| Value::Object(r.clone()).to_string());
            say(&format!("OK {} {} {} {image}", p.n, p.table, p.key));
        }
        Err(e) => say(&format!(
            "FAIL {} {} {} {} {e} | {e:?}",
            p.n,
            p.table,
            p.key,
            e.sqlite_extended_code().unwrap_or(-1)
        )),
    };
    let mut failed = 0u64;
    let mut tried_after_failure = 0u64;
    while tried_after_failure < FSIZE_MORE {
        let p = w.plan();
        let r = Workload::execute(&b, &p);
        report(&p, &r);
        match r {
            Ok(stored) => w.record(&p, stored),
            Err(_) => failed += 1,
        }
        if failed > 0 {
            tried_after_failure += 1;
        }
        assert!(w.writes < 1_000_000, "the limit never stopped a write");
    }
    say(&format!("INTEGRITY {}", integrity_check(Path::new(&sqlite))));
    let st = b.status().unwrap();
    say(&format!(
        "LIMITED outbox_depth={} applied={} retries={} last_error={:?}",
        st.outbox_depth, st.applied_total, st.retries, st.last_error
    ));
    // The limit lifted: the same bridge takes writes again.
    rlimit::set_fsize(rlimit::RLIM_INFINITY).expect("lift RLIMIT_FSIZE");
    say("LIFTED");
    for _ in 0..after {
        let p = w.plan();
        let r = Workload::execute(&b, &p);
        report(&p, &r);
        let stored =
            r.unwrap_or_else(|e| panic!("child: write {} failed once the limit was lifted: {e}", p.n));
        w.record(&p, stored);
    }
    b.flush(CONVERGE).expect("child: flush once the limit was lifted");
    say("DONE");
}

#[test]
#[cfg(target_os = "linux")]
fn sqlite_under_rlimit_fsize_fails_clearly_keeps_every_write_and_recovers() {
    use std::os::unix::process::CommandExt;
    let _serial = serial();
    let seed = seed("rlimit_fsize");
    let after = short_or_soak(500, 5_000);
    let db = common::migrated_db();
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(&db, dir.path());
    let KeySource::File(key) = &config.key_source else { unreachable!("tests use a key file") };
    // 100 writes, replicated, then the bridge closes (the WAL is checkpointed into the file).
    let mut w = Workload::new(seed, 0);
    {
        let b = Bridge::open(config.clone(), BridgeOptions::default()).expect("open bridge");
        for _ in 0..100 {
            w.step(&b);
        }
        b.flush(CONVERGE).expect("replicates before the limit");
    }
    let size = |suffix: &str| {
        std::fs::metadata(format!("{}{suffix}", config.sqlite_path.display())).map(|m| m.len()).unwrap_or(0)
    };
    let (db_size, wal_size) = (size(""), size("-wal"));
    // Every file the child writes may grow 1 MiB past the largest one there is now.
    let limit = db_size.max(wal_size) + (1 << 20);
    let started = Instant::now();
    let mut cmd = Command::new(std::env::current_exe().expect("the test binary"));
    cmd.args(["--ignored", "--exact", "fsize_limited_writer_child", "--nocapture", "--test-threads=1"])
        .env(FSIZE_SQLITE, &config.sqlite_path)
        .env(FSIZE_PG, support::conninfo(&db.config))
        .env(FSIZE_KEY, key)
        .env(FSIZE_SEED, (seed + 1).to_string())
        .env(FSIZE_AFTER, after.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    // SAFETY: between fork and exec only async-signal-safe calls (signal, setrlimit) on values
    // copied in; an ignored signal stays ignored across exec, and rlimits are inherited.
    unsafe {
        cmd.pre_exec(move || {
            if rlimit::signal(rlimit::SIGXFSZ, rlimit::SIG_IGN) == rlimit::SIG_ERR {
                return Err(std::io::Error::last_os_error());
            }
            rlimit::set_fsize(limit)
        });
    }
    let mut child = cmd.spawn().expect("start the limited writer");
    let mut out = String::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.expect("the child's output");
        out.push_str(&line);
        out.push('\n');
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "the limited writer exited with {status}:\n{}", tail(&out));
    let child_s = started.elapsed();

    // What the child acknowledged, and what it was refused.
    let ready = out.lines().find(|l| l.starts_with("READY")).expect("READY").to_string();
    assert!(ready.contains(&format!("fsize_soft={limit} ")), "the limit did not reach the child: {ready}");
    let mut lifted = false;
    let (mut acked_limited, mut acked_lifted) = (0u64, 0u64);
    let mut refusals = Vec::new();
    for line in out.lines() {
        if line == "LIFTED" {
            lifted = true;
        } else if let Some(rest) = line.strip_prefix("OK ") {
            let f: Vec<&str> = rest.splitn(4, ' ').collect();
            let row = match serde_json::from_str::<Value>(f[3]).expect("OK json") {
                Value::Object(m) => Some(m),
                Value::Null => None,
                other => panic!("OK row {other}"),
            };
            w.expected.insert((table_name(f[1]), f[2].to_string()), row);
            w.writes += 1;
            if lifted {
                acked_lifted += 1;
            } else {
                acked_limited += 1;
            }
        } else if let Some(rest) = line.strip_prefix("FAIL ") {
            let f: Vec<&str> = rest.splitn(5, ' ').collect();
            refusals.push((f[3].parse::<i32>().unwrap(), f[4].to_string()));
        }
    }
    let integrity_while_limited =
        out.lines().find_map(|l| l.strip_prefix("INTEGRITY ")).unwrap_or("?").to_string();
    let limited = out.lines().find(|l| l.starts_with("LIMITED")).unwrap_or("?").to_string();
    assert!(out.lines().any(|l| l == "DONE"), "{}", tail(&out));
    let (first_code, first_message) =
        refusals.first().cloned().expect("no write was refused under the limit");
    println!(
        "rlimit_fsize: limit {limit} bytes (database {db_size}, WAL {wal_size} before); {acked_limited} writes \
         acknowledged under the limit; {} refused of {} tried after the first refusal; first refusal: extended code \
         {first_code}: {first_message}; integrity while limited: {integrity_while_limited}; {limited}; \
         {acked_lifted} writes once the limit was lifted",
        refusals.len(),
        FSIZE_MORE
    );
    for (code, message) in &refusals {
        // A clear storage error: SQLITE_FULL (13) or an I/O error (10 and its extended codes),
        // never a generic internal error or a panic.
        assert!(code & 0xff == 13 || code & 0xff == 10, "unexpected refusal {code}: {message}");
    }
    assert_eq!(integrity_while_limited, "ok", "PRAGMA integrity_check under the limit");
    assert_eq!(integrity_check(&config.sqlite_path), "ok", "PRAGMA integrity_check after the child");

    // The parent (no limit) takes over: every acknowledged write is there, and replicated.
    let b = Bridge::open(config.clone(), BridgeOptions::default()).expect("open bridge after the child");
    let lost_in_sqlite = w.lost(&b);
    assert_eq!(lost_in_sqlite, 0, "acknowledged writes lost, or a refused write left a trace");
    let mut w2 = Workload::load(&b, seed + 2, 2_000_000);
    w2.expected = std::mem::take(&mut w.expected);
    w2.writes = w.writes;
    for _ in 0..after {
        w2.step(&b);
    }
    let (converge, tombstones) = assert_converged(&b, &db, &w2, &config.sqlite_path, CONVERGE);
    println!(
        "FAULT SUMMARY scenario=rlimit_fsize limit_bytes={limit} writes_acked_under_limit={} refused={} \
         first_error_code={first_code} error=\"{first_message}\" integrity=ok writes_after_lift_in_child={acked_lifted} \
         writes_after_in_parent={after} writes_committed={} rows_checked={} deletes_checked={tombstones} lost=0 \
         duplicated=0 child_s={:.1} final_flush_ms={} stores_equal=yes seed={seed}",
        acked_limited + 100,
        refusals.len(),
        w2.writes,
        w2.expected.len(),
        child_s.as_secs_f64(),
        converge.as_millis(),
    );
}

fn tail(out: &str) -> String {
    let lines: Vec<&str> = out.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
