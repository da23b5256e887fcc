//! The workload the fault tests drive (tests/faults.rs, tests/faults_more.rs): inserts, updates
//! and deletes over jobs, job_logs (a foreign key to jobs) and the two caches, decided by a seeded
//! RNG, with the expected final state of every row it touched; and the checks run after a fault
//! (rows lost, the revision ledger, outbox depth). `DUALWRITE_FAULT_SEED` replays a run.
//!
//! Needs `mod common;` next to `mod support;` in the test crate (the checks take a `TestDb`).

use dualwrite::{Bridge, Row};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The scenarios of a test binary run one at a time (each takes this lock): their write rates and
/// convergence times are quoted, and write-heavy scenarios sharing two cores would measure each
/// other.
pub static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn seed(scenario: &str) -> u64 {
    let seed = match std::env::var("DUALWRITE_FAULT_SEED") {
        Ok(s) => s.trim().parse().expect("DUALWRITE_FAULT_SEED must be an unsigned integer"),
        Err(_) => rand::random::<u32>() as u64,
    };
    println!("{scenario}: seed {seed} (replay with DUALWRITE_FAULT_SEED={seed})");
    seed
}

pub const JOB_STATUSES: &[&str] = &["queued", "running", "succeeded", "failed", "cancelled"];
pub const JOB_PRIORITIES: &[&str] = &["low", "normal", "high", "urgent"];
pub const LOG_LEVELS: &[&str] = &["debug", "info", "warning", "error"];
pub const CACHES: &[&str] = &["text_analytics_cache", "wordstat_cache"];
/// Cache keys are reused (deleted and inserted again), unlike uuids.
pub const CACHE_KEYS: u64 = 150;

/// A uuid derived from a kind (1 = job, 2 = log) and the write counter.
pub fn id(kind: u32, n: u64) -> String {
    format!("{kind:08x}-0000-4000-8000-{n:012x}")
}

#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    Insert(Value),
    Patch(Value),
    Delete,
}

impl Change {
    pub fn kind(&self) -> &'static str {
        match self {
            Change::Insert(_) => "insert",
            Change::Patch(_) => "patch",
            Change::Delete => "delete",
        }
    }

    pub fn body(&self) -> &Value {
        match self {
            Change::Insert(v) | Change::Patch(v) => v,
            Change::Delete => &Value::Null,
        }
    }

    pub fn parse(kind: &str, body: Value) -> Change {
        match kind {
            "insert" => Change::Insert(body),
            "patch" => Change::Patch(body),
            "delete" => Change::Delete,
            other => panic!("unknown change kind {other:?}"),
        }
    }
}

/// One write, decided before it is made.
#[derive(Clone, Debug)]
pub struct Planned {
    pub n: u64,
    pub table: &'static str,
    pub key: String,
    pub change: Change,
}

/// A set of keys that can be picked from at random.
#[derive(Default)]
pub struct KeySet {
    keys: Vec<String>,
    pos: HashMap<String, usize>,
}

impl KeySet {
    pub fn insert(&mut self, k: &str) {
        if !self.pos.contains_key(k) {
            self.pos.insert(k.to_string(), self.keys.len());
            self.keys.push(k.to_string());
        }
    }

    pub fn remove(&mut self, k: &str) {
        if let Some(i) = self.pos.remove(k) {
            self.keys.swap_remove(i);
            if let Some(moved) = self.keys.get(i) {
                self.pos.insert(moved.clone(), i);
            }
        }
    }

    pub fn contains(&self, k: &str) -> bool {
        self.pos.contains_key(k)
    }

    pub fn pick(&self, rng: &mut StdRng) -> Option<String> {
        if self.keys.is_empty() {
            None
        } else {
            Some(self.keys[rng.gen_range(0..self.keys.len())].clone())
        }
    }
}

/// What the workload believes is in the store, and the expected final state of every row it
/// ever wrote (`None` = deleted).
pub struct Workload {
    rng: StdRng,
    next: u64,
    jobs: KeySet,
    logs: KeySet,
    logs_of_job: HashMap<String, KeySet>,
    job_of_log: HashMap<String, String>,
    caches: [KeySet; 2],
    pub expected: HashMap<(&'static str, String), Option<Row>>,
    pub writes: u64,
}

pub fn cache_index(table: &str) -> usize {
    CACHES.iter().position(|c| *c == table).expect("a cache table")
}

pub fn table_name(name: &str) -> &'static str {
    dualwrite::schema::TABLES.iter().find(|t| t.name == name).map(|t| t.name).expect("a known table")
}

impl Workload {
    /// An empty store; write counters start at `first_n`.
    pub fn new(seed: u64, first_n: u64) -> Workload {
        Workload {
            rng: StdRng::seed_from_u64(seed),
            next: first_n,
            jobs: KeySet::default(),
            logs: KeySet::default(),
            logs_of_job: HashMap::new(),
            job_of_log: HashMap::new(),
            caches: Default::default(),
            expected: HashMap::new(),
            writes: 0,
        }
    }

    /// Pick up what is already in the SQLite file (a restarted writer).
    pub fn load(bridge: &Bridge, seed: u64, first_n: u64) -> Workload {
        let mut w = Workload::new(seed, first_n);
        let all = json!({"limit": 10_000});
        for row in bridge.list("jobs", &all).expect("list jobs") {
            w.jobs.insert(row["id"].as_str().unwrap());
        }
        for row in bridge.list("job_logs", &all).expect("list job_logs") {
            w.add_log(row["id"].as_str().unwrap(), row["job_id"].as_str().unwrap());
        }
        for (i, cache) in CACHES.iter().enumerate() {
            for row in bridge.list(cache, &all).expect("list caches") {
                w.caches[i].insert(row["cache_key"].as_str().unwrap());
            }
        }
        w
    }

    pub fn add_log(&mut self, log: &str, job: &str) {
        self.logs.insert(log);
        self.logs_of_job.entry(job.to_string()).or_default().insert(log);
        self.job_of_log.insert(log.to_string(), job.to_string());
    }

    pub fn remove_log(&mut self, log: &str) {
        self.logs.remove(log);
        if let Some(job) = self.job_of_log.remove(log) {
            if let Some(set) = self.logs_of_job.get_mut(&job) {
                set.remove(log);
            }
        }
    }

    pub fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.rng.gen_range(0..from.len())]
    }

    pub fn insert_job(&mut self, n: u64) -> Planned {
        let priority = self.pick(JOB_PRIORITIES);
        let key = id(1, n);
        let row = json!({"id": key, "type": "crawl", "payload": {"n": n, "kw": ["a", n % 7]}, "priority": priority});
        Planned { n, table: "jobs", key, change: Change::Insert(row) }
    }

    /// The next write, chosen from the current state (15% job inserts, 35% log inserts, 15% job
    /// updates, 10% log deletes, 5% job deletes, 15% cache upserts, 5% cache deletes).
    pub fn plan(&mut self) -> Planned {
        let n = self.next;
        self.next += 1;
        let roll = self.rng.gen_range(0..100);
        match roll {
            15..=49 => {
                let Some(job) = self.jobs.pick(&mut self.rng) else { return self.insert_job(n) };
                let level = self.pick(LOG_LEVELS);
                let key = id(2, n);
                let row = json!({"id": key, "job_id": job, "level": level, "message": format!("step {n} of {job}"),
                    "context": {"n": n}});
                Planned { n, table: "job_logs", key, change: Change::Insert(row) }
            }
            50..=64 => {
                let Some(job) = self.jobs.pick(&mut self.rng) else { return self.insert_job(n) };
                let status = self.pick(JOB_STATUSES);
                let progress = format!("{}.{:02}", self.rng.gen_range(0..100), self.rng.gen_range(0..100));
                let change =
                    Change::Patch(json!({"status": status, "progress": progress, "payload": {"n": n}}));
                Planned { n, table: "jobs", key: job, change }
            }
            65..=74 => match self.logs.pick(&mut self.rng) {
                Some(log) => Planned { n, table: "job_logs", key: log, change: Change::Delete },
                None => self.insert_job(n),
            },
            75..=79 => {
                let Some(job) = self.jobs.pick(&mut self.rng) else { return self.insert_job(n) };
                // A job with logs cannot go (the foreign key): delete one of its logs first.
                match self.logs_of_job.get(&job).and_then(|s| s.pick(&mut self.rng)) {
                    Some(log) => Planned { n, table: "job_logs", key: log, change: Change::Delete },
                    None => Planned { n, table: "jobs", key: job, change: Change::Delete },
                }
            }
            80..=99 => {
                let table = self.pick(CACHES);
                let key = format!("c{}", self.rng.gen_range(0..CACHE_KEYS));
                let exists = self.caches[cache_index(table)].contains(&key);
                let value = json!({"n": n, "hits": [n % 3, n % 5]});
                let change = if roll >= 95 && exists {
                    Change::Delete
                } else if exists {
                    Change::Patch(json!({"value": value}))
                } else {
                    Change::Insert(
                        json!({"cache_key": key, "value": value, "expires_at": "2030-01-02T03:04:05.123456Z"}),
                    )
                };
                Planned { n, table, key, change }
            }
            _ => self.insert_job(n),
        }
    }

    /// Make the write; returns the row as stored (`None` for a delete).
    pub fn execute(bridge: &Bridge, p: &Planned) -> dualwrite::Result<Option<Row>> {
        match &p.change {
            Change::Insert(v) => bridge.insert(p.table, v).map(Some),
            Change::Patch(v) => bridge.patch(p.table, &p.key, v).map(Some),
            Change::Delete => {
                let found = bridge.delete(p.table, &p.key)?;
                assert!(found, "{} {} was expected to exist", p.table, p.key);
                Ok(None)
            }
        }
    }

    /// Note a write that returned success.
    pub fn record(&mut self, p: &Planned, stored: Option<Row>) {
        match (p.table, &p.change) {
            ("jobs", Change::Insert(_)) => self.jobs.insert(&p.key),
            ("jobs", Change::Delete) => {
                self.jobs.remove(&p.key);
                self.logs_of_job.remove(&p.key);
            }
            ("job_logs", Change::Insert(v)) => self.add_log(&p.key, v["job_id"].as_str().unwrap()),
            ("job_logs", Change::Delete) => self.remove_log(&p.key),
            (t, Change::Insert(_)) if CACHES.contains(&t) => self.caches[cache_index(t)].insert(&p.key),
            (t, Change::Delete) if CACHES.contains(&t) => self.caches[cache_index(t)].remove(&p.key),
            _ => {}
        }
        self.expected.insert((p.table, p.key.clone()), stored);
        self.writes += 1;
    }

    /// Plan, make and note one write; panics if the write fails (invariant 1: it must not).
    pub fn step(&mut self, bridge: &Bridge) {
        let p = self.plan();
        let stored = Workload::execute(bridge, &p).unwrap_or_else(|e| {
            panic!("write {} ({} {} {}) failed: {e}", p.n, p.change.kind(), p.table, p.key)
        });
        self.record(&p, stored);
    }

    /// Rows whose SQLite state differs from what the writes returned (lost updates, lost
    /// inserts, resurrected deletes), plus rows SQLite has that no write made. Prints the first.
    pub fn lost(&self, bridge: &Bridge) -> usize {
        let mut lost = 0;
        for ((table, key), want) in &self.expected {
            let got = bridge.get(table, key).expect("read sqlite");
            if &got != want {
                if lost < 5 {
                    eprintln!("LOST {table} {key}: expected {want:?}, sqlite has {got:?}");
                }
                lost += 1;
            }
        }
        for table in ["jobs", "job_logs", CACHES[0], CACHES[1]] {
            let live = self.expected.iter().filter(|((t, _), row)| *t == table && row.is_some()).count();
            let have = count_rows(bridge, table);
            if have != live {
                eprintln!("{table}: sqlite has {have} rows, the writes left {live}");
                lost += have.abs_diff(live);
            }
        }
        lost
    }
}

// ----- checks after a fault -----

/// The rows of `table` in SQLite, paged (one list returns at most 10,000 rows).
pub fn count_rows(bridge: &Bridge, table: &str) -> usize {
    let mut n = 0;
    loop {
        let page = bridge.list(table, &json!({"limit": 10_000, "offset": n})).expect("list").len();
        n += page;
        if page < 10_000 {
            return n;
        }
    }
}

/// Every row the workload deleted (and did not make again) has a tombstone in PostgreSQL's
/// revision ledger, so no older copy of it can come back. Returns how many were checked.
pub fn assert_deletes_tombstoned(db: &crate::common::TestDb, w: &Workload) -> usize {
    let mut pg = db.connect();
    let mut checked = 0;
    for ((table, key), row) in &w.expected {
        if row.is_some() {
            continue;
        }
        let deleted: Option<bool> = pg
            .query_opt(
                "SELECT deleted FROM dualwrite.row_revisions WHERE table_name = $1 AND row_key = $2",
                &[table, key],
            )
            .unwrap()
            .map(|r| r.get(0));
        assert_eq!(deleted, Some(true), "{table} {key}: deleted in SQLite, no tombstone in PostgreSQL");
        checked += 1;
    }
    checked
}

/// After a fault: flush, then prove convergence row by row — nothing pending or dead-lettered, no
/// acknowledged write of `w` lost, both stores equal, no revision newer than the outbox (no older
/// copy won), every delete tombstoned (none resurrected), SQLite sound. Returns the time the flush
/// took and the tombstones checked.
pub fn assert_converged(
    b: &Bridge,
    db: &crate::common::TestDb,
    w: &Workload,
    sqlite: &std::path::Path,
    timeout: Duration,
) -> (Duration, usize) {
    let flushing = Instant::now();
    b.flush(timeout).expect("converge after the fault");
    let converge = flushing.elapsed();
    let st = b.status().unwrap();
    assert_eq!(st.outbox_depth, 0);
    assert_eq!(st.dead_letters, 0, "{:?}", b.dead_letters().unwrap());
    assert_eq!(w.lost(b), 0, "writes lost");
    crate::common::assert_stores_equal(b, db);
    assert_revisions_consistent(db, last_outbox_seq(sqlite));
    let tombstones = assert_deletes_tombstoned(db, w);
    assert_eq!(crate::support::integrity_check(sqlite), "ok", "PRAGMA integrity_check after the fault");
    (converge, tombstones)
}

/// Wait for `cond` up to `timeout`.
pub fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn max_revision(db: &crate::common::TestDb) -> i64 {
    db.connect()
        .query_one("SELECT coalesce(max(revision), 0) FROM dualwrite.row_revisions", &[])
        .unwrap()
        .get(0)
}

/// The revision ledger agrees with the rows: every live row has a live revision entry, every
/// tombstone has no row, and no revision is newer than the newest outbox sequence number.
pub fn assert_revisions_consistent(db: &crate::common::TestDb, last_seq: i64) {
    let mut pg = db.connect();
    for table in ["jobs", "job_logs", CACHES[0], CACHES[1]] {
        let t = dualwrite::schema::TABLES.iter().find(|t| t.name == table).unwrap();
        let sql = format!(
            "SELECT count(*) FILTER (WHERE r.row_key IS NULL OR r.deleted) FROM public.{table} p \
             LEFT JOIN dualwrite.row_revisions r ON r.table_name = $1 AND r.row_key = p.{key}::text",
            key = t.key
        );
        let orphans: i64 = pg.query_one(&sql, &[&table]).unwrap().get(0);
        assert_eq!(orphans, 0, "{table}: rows without a live revision");
    }
    let max = max_revision(db);
    assert!(max <= last_seq, "a revision ({max}) newer than any outbox record ({last_seq})");
}

/// Make the replicator lease lapse (only when its holder is dead).
pub fn expire_lease(sqlite: &std::path::Path) {
    let c = rusqlite::Connection::open(sqlite).unwrap();
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    if let Err(e) =
        c.execute("UPDATE _dualwrite_replicator_lease SET expires_at = '1970-01-01T00:00:00.000000Z'", [])
    {
        println!("kill_9: no replicator lease to expire ({e})");
    }
}

pub fn outbox_depth(sqlite: &std::path::Path) -> i64 {
    let c = rusqlite::Connection::open(sqlite).unwrap();
    c.query_row("SELECT count(*) FROM _dualwrite_outbox", [], |r| r.get(0)).unwrap()
}

pub fn last_outbox_seq(sqlite: &std::path::Path) -> i64 {
    let c = rusqlite::Connection::open(sqlite).unwrap();
    c.query_row(
        "SELECT coalesce(max(seq), 0) FROM sqlite_sequence WHERE name = '_dualwrite_outbox'",
        [],
        |r| r.get(0),
    )
    .unwrap()
}
