//! More faults (invariants 1, 2, 3 and 6), after tests/faults.rs: a real PostgreSQL stopped with
//! `-m immediate` twice while writes stream in; 8 processes writing one SQLite file at once; SQLite
//! on a full disk; and a change PostgreSQL refuses with SQLSTATE class 54 (program limit
//! exceeded), which must become a dead letter instead of being retried forever. Each scenario
//! prints one `FAULT SUMMARY` line that docs/RELIABILITY.md quotes.
//!
//! Run: `pg_virtualenv -t -v 15 cargo test --test faults_more -- --nocapture` (as root: the full
//! disk is a small tmpfs the test mounts, and the private PostgreSQL runs as the `postgres` user).
//! Short by default (the whole file takes about a minute in a debug build on 2 cores);
//! `DUALWRITE_SOAK=1` scales every scenario up (more stops, longer outages, longer contention,
//! more writes after the disk fills). `DUALWRITE_FAULT_SEED=<n>` replays a run's random choices.
//!
//! The 8 writers are this test binary re-run with `--ignored --exact contending_writer_child` and
//! the `DW_CONTEND_*` variables, as tests/processes.rs and tests/faults.rs do.

mod common;
mod support;

use dualwrite::{
    Bridge, BridgeOptions, Cache, Config, Error, JobPriority, JobStatus, KeySource, LogLevel, NewJob,
    NewJobLog, PgConfig, ReplicatorOptions,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::cluster::PrivateCluster;
use support::workload::*;
use support::{integrity_check, short_or_soak};

const CONVERGE: Duration = Duration::from_secs(120);

// ----- 1. a real PostgreSQL stopped with `-m immediate` and started again mid-stream -----

/// What the writer thread of scenario 1 did.
struct Streamed {
    w: Workload,
    attempted: u64,
    failed: u64,
}

#[test]
fn postgres_stopped_immediate_and_restarted_mid_stream_converges() {
    let _serial = serial();
    let seed = seed("postgres_restart");
    let mut rng = StdRng::seed_from_u64(seed);
    let stops = short_or_soak(2, 6);
    let down_for = short_or_soak(Duration::from_secs(3), Duration::from_secs(8));
    const MIN_WRITES: u64 = 3_000;

    // Its own cluster: stopping the shared one would break every other test of the binary.
    let cluster = PrivateCluster::start();
    let db = common::migrated_db_on(cluster.admin());
    let dir = tempfile::tempdir().unwrap();
    // Small batches keep the replicator busy, so a stop lands inside a batch's transaction; a
    // 1 s backoff cap (default 5 s) keeps the catch-up after a restart about the data, not the wait.
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
    let b = common::bridge_with(&db, dir.path(), options);
    let sqlite = b.config().sqlite_path.clone();

    let stop = Arc::new(AtomicBool::new(false));
    let attempted = Arc::new(AtomicU64::new(0));
    let writer = {
        let (b, stop, attempted) = (b.clone(), stop.clone(), attempted.clone());
        std::thread::spawn(move || {
            let mut s = Streamed { w: Workload::new(seed, 0), attempted: 0, failed: 0 };
            while s.attempted < MIN_WRITES || !stop.load(Ordering::SeqCst) {
                let p = s.w.plan();
                s.attempted += 1;
                attempted.store(s.attempted, Ordering::SeqCst);
                match Workload::execute(&b, &p) {
                    Ok(stored) => s.w.record(&p, stored),
                    // SQLite alone takes the write, so nothing may fail; a failed write changed
                    // nothing (the model does not record it) and is counted.
                    Err(e) => {
                        eprintln!("write {} ({} {} {}) failed: {e}", p.n, p.change.kind(), p.table, p.key);
                        s.failed += 1;
                    }
                }
                // A monolith pauses between requests; a writer that never lets go of SQLite's
                // write lock starves the replicator's busy wait (see tests/faults.rs).
                if p.n % 8 == 7 {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            s
        })
    };

    let started = Instant::now();
    assert!(
        eventually(Duration::from_secs(30), || max_revision(&db) > 0),
        "nothing replicated before the first stop"
    );
    let mut catch_ups = Vec::new();
    let mut landed = Vec::new();
    let mut restarted_at_revision = None;
    for i in 0..stops {
        match restarted_at_revision {
            // Right after a restart, as soon as the replicator has applied something again: this
            // stop lands while it drains the backlog of the outage before.
            Some(before) => {
                eventually(Duration::from_secs(10), || max_revision(&db) > before);
            }
            // In steady streaming, after a seeded pause.
            None => std::thread::sleep(Duration::from_millis(rng.gen_range(300..1_200))),
        }
        let applied = max_revision(&db);
        let backlog = last_outbox_seq(&sqlite) - applied;
        cluster.stop_immediate();
        let stopped = Instant::now();
        landed.push(format!(
            "stop {}: {backlog} changes pending, {} writes made",
            i + 1,
            attempted.load(Ordering::SeqCst)
        ));
        std::thread::sleep(down_for);
        let before_start = Instant::now();
        cluster.start_again();
        let restarted = Instant::now();
        let writes_by_restart = attempted.load(Ordering::SeqCst);
        let target = last_outbox_seq(&sqlite);
        let unreachable = restarted.duration_since(stopped);
        let starting = restarted.duration_since(before_start);
        if i % 2 == 0 && i + 1 < stops {
            // The next stop interrupts the catch-up.
            restarted_at_revision = Some(max_revision(&db));
            println!(
                "postgres_restart: stop {}: unreachable {unreachable:.1?} (start with crash recovery {starting:.1?}), \
                 {writes_by_restart} writes made; the next stop interrupts the catch-up",
                i + 1
            );
            continue;
        }
        restarted_at_revision = None;
        // Caught up: PostgreSQL holds the newest change committed before the restart (changes
        // apply in commit order, so everything before it is there too).
        assert!(
            eventually(CONVERGE, || max_revision(&db) >= target),
            "stop {}: PostgreSQL never caught up with change {target}; status {:?}",
            i + 1,
            b.status().unwrap()
        );
        let caught_up = restarted.elapsed();
        println!(
            "postgres_restart: stop {}: unreachable {unreachable:.1?} (start with crash recovery {starting:.1?}), \
             {writes_by_restart} writes made; caught up with change {target} {caught_up:.2?} after the restart",
            i + 1
        );
        catch_ups.push(caught_up.as_millis());
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    let s = writer.join().expect("writer thread");
    let writing = started.elapsed();
    let flushing = Instant::now();
    b.flush(CONVERGE).expect("converge after the restarts");
    let converge = flushing.elapsed();

    let st = b.status().unwrap();
    println!("postgres_restart: {}; status after flush: {st:?}", landed.join("; "));
    let recoveries = cluster.log_lines_with("database system was not properly shut down");
    assert_eq!(
        recoveries.len(),
        stops,
        "each immediate stop made the server recover on start: {recoveries:?}"
    );
    assert_eq!(s.failed, 0, "writes failed while PostgreSQL was stopped or recovering");
    assert_eq!(st.outbox_depth, 0);
    assert_eq!(st.dead_letters, 0, "{:?}", b.dead_letters().unwrap());
    assert!(st.retries > 0, "the stops made the replicator retry");
    let lost = s.w.lost(&b);
    assert_eq!(lost, 0, "writes lost");
    common::assert_stores_equal(&b, &db);
    assert_revisions_consistent(&db, last_outbox_seq(&sqlite));
    let tombstones = assert_deletes_tombstoned(&db, &s.w);
    println!(
        "FAULT SUMMARY scenario=postgres_restart stops={stops} down_s={} writes_attempted={} writes_failed={} \
         writes_committed={} rows_checked={} deletes_checked={tombstones} retries={} lost={lost} duplicated=0 \
         catch_up_ms={catch_ups:?} final_flush_ms={} writing_s={:.1} stores_equal=yes seed={seed}",
        down_for.as_secs(),
        s.attempted,
        s.failed,
        s.w.writes,
        s.w.expected.len(),
        st.retries,
        converge.as_millis(),
        writing.as_secs_f64()
    );
}

// ----- 2. 8 processes writing one SQLite file -----

const CONTEND_N: &str = "DW_CONTEND_N";
const CONTEND_SQLITE: &str = "DW_CONTEND_SQLITE";
const CONTEND_PG: &str = "DW_CONTEND_PG";
const CONTEND_KEY: &str = "DW_CONTEND_KEY";
const CONTEND_START_MS: &str = "DW_CONTEND_START_MS";
const CONTEND_SECONDS: &str = "DW_CONTEND_SECONDS";
const WRITERS: usize = 8;
/// Jobs one writer submits at most (1,100 × 8 stays under the 10,000 rows a list returns).
const MAX_SUBMITS: u64 = 1_100;
/// Cache keys every writer upserts (contended rows), beside keys of its own.
const SHARED_KEYS: u64 = 20;

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    out.write_all(format!("{line}\n").as_bytes()).expect("write to the parent");
    out.flush().expect("flush to the parent");
}

fn job_uuid(writer: usize, i: u64) -> uuid::Uuid {
    uuid::Uuid::parse_str(&format!("{:08x}-0000-4000-8000-{i:012x}", 0x1000 + writer)).unwrap()
}

/// One writer of `eight_writer_processes_...`: from a start instant shared by all, for the given
/// seconds, a mix of plain writes and read-check-write operations on one SQLite file. Every
/// acknowledged write is reported on stdout (`ACK ...`), every failure (`FAIL ...`), and a last
/// line `DONE <ops> <writes> <failed> <busy>`.
#[test]
#[ignore = "a child process of eight_writer_processes_on_one_sqlite_file_lose_nothing, which starts it"]
fn contending_writer_child() {
    let Ok(n) = std::env::var(CONTEND_N) else { return };
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"));
    let n: usize = n.parse().unwrap();
    let config = Config {
        sqlite_path: var(CONTEND_SQLITE).into(),
        postgres: Some(PgConfig::from_url(&var(CONTEND_PG)).expect("child PostgreSQL config")),
        key_source: KeySource::File(var(CONTEND_KEY).into()),
    };
    let b = Bridge::open(config, BridgeOptions::default()).expect("child: open bridge");
    let start_at: u64 = var(CONTEND_START_MS).parse().unwrap();
    let seconds: u64 = var(CONTEND_SECONDS).parse().unwrap();
    std::thread::sleep(Duration::from_millis(start_at.saturating_sub(unix_ms())));
    // A newline first: libtest may have printed "test contending_writer_child ... " without one.
    say("\nSTART");
    let mut rng = StdRng::seed_from_u64(n as u64);
    let (mut ops, mut writes, mut failed, mut busy) = (0u64, 0u64, 0u64, 0u64);
    let mut claimed: Vec<uuid::Uuid> = Vec::new();
    let mut my_job: Option<uuid::Uuid> = None;
    let ttl = Duration::from_secs(3_600);
    let begun = Instant::now();
    let mut i = 0u64;
    while begun.elapsed() < Duration::from_secs(seconds) {
        i += 1;
        ops += 1;
        let (op, result): (&str, dualwrite::Result<Option<String>>) = match i % 10 {
            // Capped, so a soak run's tables stay under the 10,000 rows a list compares.
            0 | 5 if i < MAX_SUBMITS * 5 => {
                let mut job = NewJob::new(format!("contend {n}"));
                job.id = Some(job_uuid(n, i));
                job.priority = Some(
                    [JobPriority::Low, JobPriority::Normal, JobPriority::High, JobPriority::Urgent]
                        [rng.gen_range(0..4)],
                );
                (
                    "submit",
                    b.submit_job(&job).map(|j| {
                        my_job.get_or_insert(j.id);
                        Some(format!("SUBMIT {}", j.id))
                    }),
                )
            }
            // Read-check-write: the oldest most urgent queued job, of any writer, becomes ours
            // (once the submits are capped, the slots of submits claim too, mostly finding none).
            0 | 1 | 5 | 6 => (
                "claim",
                b.claim_next_job().map(|j| {
                    j.map(|j| {
                        claimed.push(j.id);
                        format!("CLAIM {}", j.id)
                    })
                }),
            ),
            // Read-check-write: a status transition checked against the stored status.
            2 | 7 => match claimed.pop() {
                Some(id) => {
                    let to = if rng.gen_bool(0.8) { JobStatus::Succeeded } else { JobStatus::Failed };
                    (
                        "set_status",
                        b.set_job_status(id, to).map(|j| Some(format!("STATUS {} {}", j.id, j.status))),
                    )
                }
                None => ("set_status", Ok(None)),
            },
            // Upserts of rows every writer touches (read the key, then insert or update).
            3 => {
                let key = format!("shared-{}", rng.gen_range(0..SHARED_KEYS));
                let value = json!({"by": n, "i": i});
                (
                    "shared_put",
                    b.cache_put(Cache::Wordstat, &key, &value, ttl)
                        .map(|e| Some(format!("SHARED {} {}", e.cache_key, e.value))),
                )
            }
            4 | 8 => {
                let key = format!("w{n}-{}", rng.gen_range(0..50));
                let value = json!({"by": n, "i": i});
                (
                    "own_put",
                    b.cache_put(Cache::TextAnalytics, &key, &value, ttl)
                        .map(|e| Some(format!("OWN {} {}", e.cache_key, e.value))),
                )
            }
            _ => {
                if rng.gen_bool(0.5) {
                    let key = format!("w{n}-{}", rng.gen_range(0..50));
                    (
                        "own_delete",
                        b.cache_delete(Cache::TextAnalytics, &key)
                            .map(|found| found.then(|| format!("OWN {key} null"))),
                    )
                } else {
                    match my_job {
                        Some(job) => {
                            let log_id = uuid::Uuid::new_v4();
                            let mut log = NewJobLog::new(job, LogLevel::Info, format!("writer {n} op {i}"));
                            log.id = Some(log_id);
                            (
                                "log",
                                b.append_job_log(&log)
                                    .map(|l| Some(format!("LOG {} {}", l.id, l.message.replace(' ', "_")))),
                            )
                        }
                        None => ("log", Ok(None)),
                    }
                }
            }
        };
        match result {
            Ok(Some(ack)) => {
                writes += 1;
                say(&format!("ACK {ack}"));
            }
            Ok(None) => {}
            Err(e) => {
                failed += 1;
                if matches!(e, Error::Busy(_)) {
                    busy += 1;
                }
                say(&format!("FAIL {op} {e}"));
            }
        }
        // Think time, as a monolith has between requests: without any, eight processes on two
        // cores hand SQLite's write lock around so fast that the busy handler of the ninth
        // connection (the replicator) rarely wins it (see tests/faults.rs).
        std::thread::sleep(Duration::from_millis(1));
    }
    say(&format!("DONE {ops} {writes} {failed} {busy}"));
    b.shutdown(Duration::from_secs(5));
}

/// What the parent knows from the writers' reports.
#[derive(Default)]
struct Reports {
    submitted: HashSet<String>,
    /// job -> (claiming writer, how many claims).
    claims: HashMap<String, Vec<usize>>,
    /// job -> final status set by its claimer.
    status: HashMap<String, String>,
    /// own cache key -> last acknowledged value (`None` = deleted).
    own: HashMap<String, Option<Value>>,
    /// shared cache key -> every acknowledged value.
    shared: HashMap<String, Vec<Value>>,
    /// job log id -> message.
    logs: HashMap<String, String>,
    ops: u64,
    writes: u64,
    failed: u64,
    busy: u64,
    failures: Vec<String>,
}

impl Reports {
    fn read(&mut self, writer: usize, out: &str) {
        let mut done = false;
        for line in out.lines() {
            let f: Vec<&str> = line.split(' ').collect();
            match f.as_slice() {
                ["ACK", "SUBMIT", id] => {
                    self.submitted.insert(id.to_string());
                }
                ["ACK", "CLAIM", id] => self.claims.entry(id.to_string()).or_default().push(writer),
                ["ACK", "STATUS", id, status] => {
                    self.status.insert(id.to_string(), status.to_string());
                }
                ["ACK", "OWN", key, value] => {
                    let v: Value = serde_json::from_str(value).unwrap();
                    self.own.insert(key.to_string(), (!v.is_null()).then_some(v));
                }
                ["ACK", "SHARED", key, value] => {
                    self.shared.entry(key.to_string()).or_default().push(serde_json::from_str(value).unwrap())
                }
                ["ACK", "LOG", id, message] => {
                    self.logs.insert(id.to_string(), message.replace('_', " "));
                }
                ["FAIL", ..] => self.failures.push(format!("writer {writer}: {line}")),
                ["DONE", ops, writes, failed, busy] => {
                    self.ops += ops.parse::<u64>().unwrap();
                    self.writes += writes.parse::<u64>().unwrap();
                    self.failed += failed.parse::<u64>().unwrap();
                    self.busy += busy.parse::<u64>().unwrap();
                    done = true;
                }
                _ => {}
            }
        }
        assert!(done, "writer {writer} did not finish:\n{out}");
    }
}

#[test]
fn eight_writer_processes_on_one_sqlite_file_lose_nothing() {
    let _serial = serial();
    let seconds = short_or_soak(15, 120);
    let db = common::migrated_db();
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(&db, dir.path());
    // Create and migrate the file first, so the writers start on an equal footing.
    drop(
        Bridge::open(config.clone(), BridgeOptions { replicate: false, ..BridgeOptions::default() }).unwrap(),
    );
    let KeySource::File(key) = &config.key_source else { unreachable!("tests use a key file") };
    let exe = std::env::current_exe().expect("the test binary");
    // Every writer opens its bridge first, then all start at once.
    let start_at = unix_ms() + 3_000;
    let mut children = Vec::new();
    for n in 0..WRITERS {
        let mut child = Command::new(&exe)
            .args(["--ignored", "--exact", "contending_writer_child", "--nocapture", "--test-threads=1"])
            .env(CONTEND_N, n.to_string())
            .env(CONTEND_SQLITE, &config.sqlite_path)
            .env(CONTEND_PG, support::conninfo(&db.config))
            .env(CONTEND_KEY, key)
            .env(CONTEND_START_MS, start_at.to_string())
            .env(CONTEND_SECONDS, seconds.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start a writer process");
        // Drain each pipe on a thread, so a writer never blocks on a full pipe.
        let stdout = child.stdout.take().unwrap();
        let out = Arc::new(Mutex::new(String::new()));
        let reader = {
            let out = out.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let line = line.expect("a writer's output");
                    let mut o = out.lock().unwrap();
                    o.push_str(&line);
                    o.push('\n');
                }
            })
        };
        children.push((child, reader, out));
    }
    let mut reports = Reports::default();
    for (n, (mut child, reader, out)) in children.into_iter().enumerate() {
        let status = child.wait().unwrap();
        reader.join().unwrap();
        let out = out.lock().unwrap();
        assert!(status.success(), "writer {n} exited with {status}:\n{out}");
        reports.read(n, &out);
    }
    let run_secs = seconds as f64;
    for f in reports.failures.iter().take(10) {
        eprintln!("{f}");
    }
    assert_eq!(reports.busy, 0, "writes failed with SQLITE_BUSY (busy timeout 10 s)");
    assert_eq!(reports.failed, 0, "writes failed");
    let integrity = integrity_check(&config.sqlite_path);
    assert_eq!(integrity, "ok", "PRAGMA integrity_check after the writers");

    // No job claimed twice, and every claim acknowledged belongs to a submitted job.
    let twice: Vec<_> = reports.claims.iter().filter(|(_, by)| by.len() > 1).collect();
    assert!(twice.is_empty(), "jobs claimed more than once: {twice:?}");
    assert!(!reports.claims.is_empty(), "no job was claimed: the read-check-write path was not tested");

    let b = common::bridge(&db, dir.path());
    let flushing = Instant::now();
    b.flush(CONVERGE).expect("converge after the writers");
    let converge = flushing.elapsed();

    // Every acknowledged write is in SQLite, as acknowledged.
    let mut lost = 0;
    let mut check = |ok: bool, what: String| {
        if !ok {
            if lost < 10 {
                eprintln!("LOST {what}");
            }
            lost += 1;
        }
    };
    for id in &reports.submitted {
        let job = b.get_job(id.parse().unwrap()).unwrap();
        let want = match (reports.claims.contains_key(id), reports.status.get(id)) {
            (false, _) => "queued".to_string(),
            (true, None) => "running".to_string(),
            (true, Some(s)) => s.clone(),
        };
        let got = job.as_ref().map(|j| j.status.to_string());
        check(got.as_deref() == Some(want.as_str()), format!("job {id}: want {want}, sqlite has {got:?}"));
    }
    for id in reports.claims.keys() {
        check(reports.submitted.contains(id), format!("claimed job {id} was never submitted"));
    }
    for (key, want) in &reports.own {
        let got = b.cache_get(Cache::TextAnalytics, key).unwrap().map(|e| e.value);
        check(&got == want, format!("text_analytics_cache {key}: want {want:?}, sqlite has {got:?}"));
    }
    for (key, acked) in &reports.shared {
        let got = b.cache_get(Cache::Wordstat, key).unwrap().map(|e| e.value);
        check(
            got.as_ref().is_some_and(|v| acked.contains(v)),
            format!("wordstat_cache {key}: {got:?} is none of the {} acknowledged values", acked.len()),
        );
    }
    for (id, message) in &reports.logs {
        let got = b.get("job_logs", id).unwrap();
        check(
            got.as_ref().and_then(|r| r["message"].as_str()) == Some(message.as_str()),
            format!("job_log {id}: {got:?}"),
        );
    }
    assert_eq!(lost, 0, "acknowledged writes missing or different in SQLite");
    // ... and in PostgreSQL, row by row.
    common::assert_stores_equal(&b, &db);
    let st = b.status().unwrap();
    assert_eq!(st.outbox_depth, 0);
    assert_eq!(st.dead_letters, 0, "{:?}", b.dead_letters().unwrap());
    assert_eq!(integrity_check(&config.sqlite_path), "ok", "PRAGMA integrity_check after the flush");
    println!(
        "FAULT SUMMARY scenario=eight_writers processes={WRITERS} seconds={seconds} ops={} writes_acknowledged={} \
         throughput={:.0}/s failed={} busy={} jobs_submitted={} jobs_claimed={} claimed_twice=0 logs={} \
         lost={lost} integrity=ok final_flush_ms={} stores_equal=yes",
        reports.ops,
        reports.writes,
        reports.writes as f64 / run_secs,
        reports.failed,
        reports.busy,
        reports.submitted.len(),
        reports.claims.len(),
        reports.logs.len(),
        converge.as_millis()
    );
}

// ----- 3. SQLite on a full disk -----

/// A tmpfs mounted on a directory for one test, unmounted when dropped.
struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    fn mount(path: &Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(path).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(path)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mount -t tmpfs failed ({}): this scenario needs root (CAP_SYS_ADMIN) to mount a small file \
             system; run the suite as root, as `scripts/test` does",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        SmallDisk { path: path.to_path_buf() }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("--lazy").arg(&self.path).status();
    }
}

/// Fill the file system with `path` (64 KiB at a time until the write fails), then give back
/// `leave` bytes: the file system is left with about that much free space.
fn fill(path: &Path, leave: u64) -> u64 {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0xa5u8; 64 * 1024];
    let mut len = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => len += n as u64,
        }
    }
    let len = len.saturating_sub(leave);
    f.set_len(len).unwrap();
    len
}

#[test]
fn sqlite_on_a_full_disk_fails_clearly_keeps_every_write_and_recovers() {
    let _serial = serial();
    let seed = seed("full_disk");
    let after = short_or_soak(500, 5_000);
    let db = common::migrated_db();
    let dir = tempfile::tempdir().unwrap();
    // 24 MiB: room for SQLite's default WAL (1,000 pages, 4 MiB, before the checkpoint resets
    // it) and the database once the filler is gone; the filler leaves 1 MiB to fill.
    let disk = SmallDisk::mount(&dir.path().join("disk"), "24m");
    let mut config = common::config(&db, dir.path());
    config.sqlite_path = disk.path.join("monolith.sqlite3");
    let b = Bridge::open(config.clone(), BridgeOptions::default()).expect("open bridge");
    let mut w = Workload::new(seed, 0);
    for _ in 0..100 {
        w.step(&b);
    }
    b.flush(CONVERGE).expect("replicates before the disk fills");
    let filler = disk.path.join("filler");
    let filler_len = fill(&filler, 1 << 20);

    // Write until SQLite says the disk is full.
    let mut acked_before = 0u64;
    let error = loop {
        let p = w.plan();
        match Workload::execute(&b, &p) {
            Ok(stored) => {
                w.record(&p, stored);
                acked_before += 1;
                assert!(acked_before < 1_000_000, "the disk never filled");
            }
            Err(e) => break (p, e),
        }
    };
    let (failed_write, e) = error;
    let message = e.to_string();
    println!(
        "full_disk: write {} ({} {} {}) failed after {acked_before} writes on the last MiB: {message} (sqlite extended code {:?}, {e:?})",
        failed_write.n,
        failed_write.change.kind(),
        failed_write.table,
        failed_write.key,
        e.sqlite_extended_code()
    );
    // SQLITE_FULL (13), and the message says so: not a generic internal error.
    assert_eq!(e.sqlite_extended_code(), Some(13), "{e:?}");
    assert!(message.contains("full"), "the error does not say the disk is full: {message}");
    assert!(!matches!(e, Error::Internal(_)), "{e:?}");

    // More writes while full: each fails the same clean way (or fits in a freed page), none panics.
    let mut failed_while_full = 1;
    for _ in 0..20 {
        let p = w.plan();
        match Workload::execute(&b, &p) {
            Ok(stored) => w.record(&p, stored),
            Err(e) => {
                assert_eq!(e.sqlite_extended_code(), Some(13), "{e:?}");
                failed_while_full += 1;
            }
        }
    }
    // Nothing corrupted, every acknowledged write there, no failed write left a trace.
    assert_eq!(integrity_check(&config.sqlite_path), "ok", "PRAGMA integrity_check on the full disk");
    assert_eq!(w.lost(&b), 0, "acknowledged writes lost, or a failed write left a trace, on the full disk");
    let full = b.status().unwrap();
    println!(
        "full_disk: {failed_while_full} writes refused while full; replicator while full: outbox depth {}, \
         applied {}, retries {}, last error {:?}",
        full.outbox_depth, full.applied_total, full.retries, full.last_error
    );

    // Space returns: writes work again at once, and everything converges.
    std::fs::remove_file(&filler).unwrap();
    for _ in 0..after {
        // Panics if the write fails.
        w.step(&b);
    }
    let (converge, tombstones) = assert_converged(&b, &db, &w, &config.sqlite_path, CONVERGE);
    drop(b);
    println!(
        "FAULT SUMMARY scenario=full_disk fs=tmpfs_24MiB filler_bytes={filler_len} writes_acked_before_full={} \
         refused_while_full={failed_while_full} error=\"{message}\" writes_after_space_returned={after} \
         writes_committed={} rows_checked={} deletes_checked={tombstones} lost=0 duplicated=0 \
         integrity=ok final_flush_ms={} stores_equal=yes seed={seed}",
        acked_before + 100,
        w.writes,
        w.expected.len(),
        converge.as_millis()
    );
    drop(disk);
}

// ----- 4. SQLSTATE class 54 is a property of the change -----

#[test]
fn a_change_over_a_postgres_limit_becomes_a_dead_letter_and_is_not_retried() {
    let _serial = serial();
    let db = common::migrated_db();
    let dir = tempfile::tempdir().unwrap();
    // The rows are written while nothing replicates, so the bad one is in the same batch.
    let w = common::bridge_with(&db, dir.path(), BridgeOptions { replicate: false, ..Default::default() });
    let job = w.insert("jobs", &json!({"type": "t"})).unwrap();
    let jid = job["id"].as_str().unwrap();
    // pages.url has a btree index (pages_url_idx) in PostgreSQL only. A 3,000-character URL of
    // random characters does not compress (pglz), so its index entry exceeds the btree maximum
    // of 2,704 bytes: "index row size ... exceeds btree version 4 maximum", SQLSTATE 54000.
    // The bridge refuses such a value at write time (`check_indexed_text`), so the row is
    // planted in SQLite and its outbox record as a file written before that check would hold it.
    let mut rng = StdRng::seed_from_u64(54);
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let long: String = (0..3_000).map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char).collect();
    let mut bad = String::new();
    for i in 0..21 {
        let page = w
            .insert("pages", &json!({"url": format!("https://example.com/{i}"), "source_job_id": jid}))
            .unwrap();
        if i == 7 {
            bad = page["id"].as_str().unwrap().to_string();
        }
    }
    let url = format!("https://example.com/{long}");
    let lite = rusqlite::Connection::open(&w.config().sqlite_path).unwrap();
    lite.execute("UPDATE pages SET url = ?1 WHERE id = ?2", [&url, &bad]).unwrap();
    let planted = lite
        .execute(
            "UPDATE _dualwrite_outbox SET row_image = json_set(row_image, '$.url', ?1) WHERE row_key = ?2",
            [&url, &bad],
        )
        .unwrap();
    assert_eq!(planted, 1);
    w.shutdown(Duration::from_secs(5));
    let b = common::bridge(&db, dir.path());
    let flushing = Instant::now();
    b.flush(Duration::from_secs(60)).expect("the batch with the oversized row does not block replication");
    let took = flushing.elapsed();
    let dead = b.dead_letters().unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].row_key, bad);
    assert!(dead[0].error.contains("54000"), "{}", dead[0].error);
    let mut pg = db.connect();
    let n: i64 = pg.query_one("SELECT count(*) FROM pages", &[]).unwrap().get(0);
    assert_eq!(n, 20, "the 20 good pages replicated past the bad one");
    let st = b.status().unwrap();
    assert_eq!(st.outbox_depth, 0);

    // Not retried: later changes flow, and the retry counter does not move.
    std::thread::sleep(Duration::from_secs(1));
    b.insert("pages", &json!({"url": "https://example.com/after", "source_job_id": jid})).unwrap();
    b.flush(Duration::from_secs(30)).unwrap();
    let later = b.status().unwrap();
    assert_eq!(later.retries, st.retries, "the dead letter is being retried");
    assert_eq!(later.dead_letters, 1);
    // The rest of the stores agree once the row PostgreSQL cannot hold is gone from SQLite too.
    assert!(b.delete("pages", &bad).unwrap());
    b.flush(Duration::from_secs(30)).unwrap();
    common::assert_stores_equal(&b, &db);
    println!(
        "FAULT SUMMARY scenario=sqlstate_54 good=20 bad=1 dead_letters=1 error=\"{}\" retries={} flush_ms={}",
        dead[0].error,
        later.retries,
        took.as_millis()
    );
}
