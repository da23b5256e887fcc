//! The backfill against a real PostgreSQL: history copied in while the monolith keeps writing,
//! with no row going back in time and no deleted row coming back; resumable after an interruption
//! without copying a committed chunk again.

mod common;

use dualwrite::backfill::{self, BackfillOptions, NoProgress};
use dualwrite::schema::{self, ColType, Table};
use dualwrite::verify::{self, VerifyOptions};
use rand::Rng;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const FLUSH: Duration = Duration::from_secs(120);

fn uuid_for(table: u32, i: u32) -> String {
    // Spread over the key space (not in insertion order), unique per table.
    let r = (i as u64).wrapping_mul(2_654_435_761) ^ ((table as u64) << 40);
    format!("{:08x}-{:04x}-4000-8000-{:012x}", (r & 0xffff_ffff) as u32, table, i)
}

fn ts(i: u32) -> String {
    format!(
        "2025-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        1 + i % 12,
        1 + i % 28,
        i % 24,
        i % 60,
        (i / 60) % 60,
        i % 1_000_000
    )
}

/// History written straight into SQLite (as the monolith did before the bridge): no outbox.
struct History {
    jobs: Vec<String>,
    logs: Vec<String>,
    caches: Vec<String>,
    embeddings: Vec<String>,
}

fn seed_history(
    path: &std::path::Path,
    users: u32,
    jobs: u32,
    logs: u32,
    embeddings: u32,
    caches: u32,
) -> History {
    let mut conn = dualwrite::store::sqlite::open(path).unwrap();
    dualwrite::migrate_sqlite(&mut conn).unwrap();
    let tx = conn.transaction().unwrap();
    let mut h = History { jobs: vec![], logs: vec![], caches: vec![], embeddings: vec![] };
    {
        let mut st = tx
            .prepare("INSERT INTO users (id, email, display_name, role, created_at, updated_at) VALUES (?1, ?2, ?3, 'member', ?4, ?4)")
            .unwrap();
        for i in 0..users {
            st.execute(rusqlite::params![
                uuid_for(1, i),
                format!("user{i}@example.com"),
                format!("User {i}"),
                ts(i)
            ])
            .unwrap();
        }
        let mut st = tx
            .prepare("INSERT INTO jobs (id, type, payload, status, progress, owner_id, queued_at, priority) VALUES (?1, 'crawl', ?2, 'queued', ?3, ?4, ?5, 'normal')")
            .unwrap();
        for i in 0..jobs {
            let id = uuid_for(2, i);
            let owner = (users > 0 && i % 3 == 0).then(|| uuid_for(1, i % users));
            st.execute(rusqlite::params![
                id,
                json!({"kw": ["a", i], "depth": 2}).to_string(),
                format!("{}.{}", i % 100, i % 10),
                owner,
                ts(i)
            ])
            .unwrap();
            h.jobs.push(id);
        }
        let mut st = tx
            .prepare("INSERT INTO job_logs (id, job_id, level, step, message, context, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")
            .unwrap();
        for i in 0..logs {
            let id = uuid_for(3, i);
            let level = ["debug", "info", "warning", "error"][(i % 4) as usize];
            let step = (i % 3 != 0).then_some("fetch");
            st.execute(rusqlite::params![
                id,
                h.jobs[(i % jobs) as usize],
                level,
                step,
                format!("fetched {} results in {} ms", i % 97, i % 1000),
                json!({"attempt": i % 5, "http": 200, "url": format!("https://example.com/{i}")}).to_string(),
                ts(i)
            ])
            .unwrap();
            h.logs.push(id);
        }
        let mut st = tx
            .prepare("INSERT INTO embeddings (id, text_hash, vector, model, meta, created_at) VALUES (?1, ?2, ?3, 'm', '{}', ?4)")
            .unwrap();
        for i in 0..embeddings {
            let id = uuid_for(4, i);
            let v: Vec<u8> =
                [i as f32, 0.5, -1.25, 1.0 / (i as f32 + 1.0)].iter().flat_map(|f| f.to_le_bytes()).collect();
            st.execute(rusqlite::params![id, format!("h{i}"), v, ts(i)]).unwrap();
            h.embeddings.push(id);
        }
        let mut st = tx
            .prepare("INSERT INTO wordstat_cache (cache_key, value, expires_at) VALUES (?1, ?2, ?3)")
            .unwrap();
        for i in 0..caches {
            let key = format!("kw:{:x}:{i}", (i as u64).wrapping_mul(2_654_435_761) % 4096);
            st.execute(rusqlite::params![key, json!({"count": i, "series": [1, 2, 3]}).to_string(), ts(i)])
                .unwrap();
            h.caches.push(key);
        }
    }
    tx.commit().unwrap();
    h
}

/// Every row of `table` in SQLite, wire form, by key.
fn sqlite_rows(path: &std::path::Path, table: &Table) -> HashMap<String, Value> {
    let conn = dualwrite::store::sqlite::open(path).unwrap();
    let cols = table.column_names().collect::<Vec<_>>().join(", ");
    let mut st = conn.prepare(&format!("SELECT {cols} FROM {}", table.name)).unwrap();
    let mut rows = st.query([]).unwrap();
    let mut out = HashMap::new();
    while let Some(r) = rows.next().unwrap() {
        let row = schema::decode_sqlite_row(table, r).unwrap();
        out.insert(row[table.key].as_str().unwrap().to_string(), Value::Object(row));
    }
    out
}

fn same_value(ty: ColType, a: &Value, b: &Value) -> bool {
    match ty {
        ColType::Vector => {
            let f = |v: &Value| -> Vec<f32> {
                v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
            };
            f(a) == f(b)
        }
        _ => a == b,
    }
}

/// Row-by-row comparison for tables of any size: PostgreSQL equals SQLite (the live version).
fn assert_tables_equal(path: &std::path::Path, db: &common::TestDb, tables: &[&str]) {
    let mut pg = db.connect();
    for name in tables {
        let t = schema::table(name).unwrap();
        let lite = sqlite_rows(path, t);
        let theirs = dualwrite::store::postgres::all_rows(&mut pg, t).unwrap();
        for (key, row) in &lite {
            let p = theirs.get(key).unwrap_or_else(|| panic!("{name} {key} missing in postgres"));
            for c in t.columns {
                assert!(
                    same_value(c.ty, &row[c.name], &p[c.name]),
                    "{name}.{} of {key}: postgres holds an older or other value: sqlite {} != postgres {}",
                    c.name,
                    row[c.name],
                    p[c.name]
                );
            }
        }
        for key in theirs.keys() {
            assert!(
                lite.contains_key(key),
                "{name} {key} exists in postgres but not in sqlite (resurrected?)"
            );
        }
        assert_eq!(lite.len(), theirs.len(), "{name}");
    }
}

#[test]
fn backfill_while_the_monolith_writes_ends_equal_with_nothing_older_and_nothing_resurrected() {
    let db = common::migrated_db();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("monolith.sqlite3");
    // 100,000 rows of history over five tables.
    let h = seed_history(&path, 2_000, 8_000, 80_000, 2_000, 8_000);
    let bridge = common::bridge(&db, dir.path());
    let config = common::config(&db, dir.path());

    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let writer = {
        let (b, stop, ops) = (bridge.clone(), stop.clone(), ops.clone());
        let (jobs, logs, caches, embeddings) =
            (h.jobs.clone(), h.logs.clone(), h.caches.clone(), h.embeddings.clone());
        std::thread::spawn(move || {
            let mut rng = rand::thread_rng();
            let mut deleted_logs = HashSet::new();
            let mut deleted_caches = HashSet::new();
            let mut progress = 0u64;
            while !stop.load(Ordering::Relaxed) {
                progress += 1;
                let r = rng.gen_range(0..100);
                match r {
                    0..=24 => {
                        let job = &jobs[rng.gen_range(0..jobs.len())];
                        b.insert("job_logs", &json!({"job_id": job, "level": "info", "message": "live", "context": {"n": progress}}))
                            .unwrap();
                    }
                    25..=39 => {
                        let job = &jobs[rng.gen_range(0..jobs.len())];
                        b.patch(
                            "jobs",
                            job,
                            &json!({"status": "running", "progress": format!("{}.5", progress % 100)}),
                        )
                        .unwrap();
                    }
                    40..=54 => {
                        let key = &logs[rng.gen_range(0..logs.len())];
                        b.delete("job_logs", key).unwrap();
                        deleted_logs.insert(key.clone());
                    }
                    55..=64 => {
                        let key = &caches[rng.gen_range(0..caches.len())];
                        if !deleted_caches.contains(key) {
                            b.patch("wordstat_cache", key, &json!({"value": {"count": progress}})).unwrap();
                        }
                    }
                    65..=71 => {
                        let key = &caches[rng.gen_range(0..caches.len())];
                        if b.delete("wordstat_cache", key).unwrap() {
                            deleted_caches.insert(key.clone());
                        }
                    }
                    72..=74 => {
                        // A deleted cache key written again: live again, legitimately.
                        if let Some(key) = deleted_caches.iter().next().cloned() {
                            b.insert("wordstat_cache", &json!({"cache_key": key, "value": {"again": progress}, "expires_at": "2031-01-01T00:00:00Z"}))
                                .unwrap();
                            deleted_caches.remove(&key);
                        }
                    }
                    75..=86 => {
                        let key = &embeddings[rng.gen_range(0..embeddings.len())];
                        let x = progress as f64 / 7.0;
                        b.patch("embeddings", key, &json!({"vector": [x, 1.5, -x, 0.25]})).unwrap();
                    }
                    87..=94 => {
                        // A new parent after the jobs table may already be copied, and its children.
                        let job =
                            b.insert("jobs", &json!({"type": "live", "payload": {"p": progress}})).unwrap();
                        for _ in 0..3 {
                            b.insert(
                                "job_logs",
                                &json!({"job_id": job["id"], "level": "debug", "message": "new job"}),
                            )
                            .unwrap();
                        }
                    }
                    _ => {
                        b.insert(
                            "users",
                            &json!({"email": format!("live{progress}@example.com"), "display_name": "Live"}),
                        )
                        .unwrap();
                    }
                }
                ops.fetch_add(1, Ordering::Relaxed);
            }
            (deleted_logs, deleted_caches)
        })
    };

    // Let the writer start, then copy the history in small chunks (many snapshots).
    while ops.load(Ordering::Relaxed) < 20 {
        std::thread::sleep(Duration::from_millis(10));
    }
    let options = BackfillOptions { chunk_size: 1_000, ..Default::default() };
    let report = backfill::backfill(&config, &options, &mut NoProgress).unwrap();
    let during = ops.load(Ordering::Relaxed);
    eprintln!("{}changes made by the writer while the backfill ran: {during}", report.render());
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (deleted_logs, deleted_caches) = writer.join().unwrap();
    assert!(!report.interrupted);
    assert!(report.tables.iter().all(|t| t.finished), "{}", report.render());
    assert!(report.rows_copied() >= 90_000, "{}", report.render());
    assert!(during >= 50, "the writer made only {during} changes while the backfill ran");
    bridge.flush(FLUSH).unwrap();

    let v = verify::verify(&config, &VerifyOptions::default()).unwrap();
    assert!(v.ok, "{}", v.render_text());
    assert_eq!(v.in_flight(), 0);
    assert!(v.rows().0 >= 100_000);

    // Row by row: every PostgreSQL row is SQLite's live version; deleted rows stayed deleted.
    assert_tables_equal(&path, &db, &["users", "jobs", "job_logs", "embeddings", "wordstat_cache"]);
    let mut pg = db.connect();
    let gone: Vec<&str> = deleted_logs.iter().map(String::as_str).collect();
    let back: i64 = pg
        .query_one("SELECT count(*) FROM job_logs WHERE id = ANY($1::text[]::uuid[])", &[&gone])
        .unwrap()
        .get(0);
    assert_eq!(back, 0, "a deleted job log came back");
    let tombstones: i64 = pg
        .query_one(
            "SELECT count(*) FROM dualwrite.row_revisions WHERE table_name = 'job_logs' AND deleted AND row_key = ANY($1)",
            &[&gone],
        )
        .unwrap()
        .get(0);
    assert_eq!(tombstones as usize, deleted_logs.len());
    let caches_gone: Vec<&str> = deleted_caches.iter().map(String::as_str).collect();
    let back: i64 = pg
        .query_one("SELECT count(*) FROM wordstat_cache WHERE cache_key = ANY($1)", &[&caches_gone])
        .unwrap()
        .get(0);
    assert_eq!(back, 0, "a deleted cache entry came back");
    bridge.shutdown(Duration::from_secs(1));
}

#[test]
fn an_interrupted_backfill_resumes_without_copying_committed_chunks_again() {
    let db = common::migrated_db();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("monolith.sqlite3");
    seed_history(&path, 0, 100, 10_500, 0, 0);
    let config = common::config(&db, dir.path());
    let mut pg = db.connect();

    // Interrupted after 4 chunks: jobs (100 rows, one chunk) then 3 chunks of job_logs.
    let options = BackfillOptions { chunk_size: 1_000, stop_after_chunks: Some(4), ..Default::default() };
    let first = backfill::backfill(&config, &options, &mut NoProgress).unwrap();
    assert!(first.interrupted, "{}", first.render());
    let cp = backfill::checkpoints(&mut pg).unwrap();
    let logs = cp.iter().find(|c| c.table_name == "job_logs").expect("a job_logs checkpoint");
    assert_eq!((logs.rows_copied, logs.chunks, logs.finished), (3_000, 3, false));
    let n: i64 = pg.query_one("SELECT count(*) FROM job_logs", &[]).unwrap().get(0);
    assert_eq!(n, 3_000);

    // Resumed: only the rest is copied; the checkpoint counts every row exactly once.
    let second = backfill::backfill(
        &config,
        &BackfillOptions { chunk_size: 1_000, ..Default::default() },
        &mut NoProgress,
    )
    .unwrap();
    assert!(!second.interrupted);
    let jobs = second.tables.iter().find(|t| t.table == "jobs").unwrap();
    assert!(jobs.skipped && jobs.rows_copied == 0, "a finished table is not copied again");
    let logs = second.tables.iter().find(|t| t.table == "job_logs").unwrap();
    assert_eq!(logs.rows_copied, 7_500, "{}", second.render());
    assert_eq!(logs.rows_total, 10_500);
    let cp = backfill::checkpoints(&mut pg).unwrap();
    let logs = cp.iter().find(|c| c.table_name == "job_logs").unwrap();
    assert_eq!((logs.rows_copied, logs.chunks, logs.finished), (10_500, 11, true));
    let n: i64 = pg.query_one("SELECT count(*) FROM job_logs", &[]).unwrap().get(0);
    assert_eq!(n, 10_500);

    // Again: nothing to do. With restart: everything again, and nothing changes (same snapshot).
    let third = backfill::backfill(&config, &BackfillOptions::default(), &mut NoProgress).unwrap();
    assert_eq!(third.rows_copied(), 0);
    let again = backfill::backfill(
        &config,
        &BackfillOptions { restart: true, tables: Some(vec!["job_logs".into()]), ..Default::default() },
        &mut NoProgress,
    )
    .unwrap();
    assert_eq!(again.rows_copied(), 10_500);
    assert_tables_equal(&path, &db, &["jobs", "job_logs"]);
    let v = verify::verify(&config, &VerifyOptions::default()).unwrap();
    assert!(v.ok, "{}", v.render_text());
}

/// Several readers on consecutive key ranges and many small chunks (an odd size, so chunks end
/// anywhere): interrupted, the committed rows are exactly the first rows in key order (the
/// checkpoint marks a prefix, so no chunk after a missing one committed); resumed with another
/// number of readers, every row arrives and none twice (the checkpoint's count is the table's).
#[test]
fn parallel_readers_copy_every_chunk_once_and_commit_in_key_order() {
    let db = common::migrated_db();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("monolith.sqlite3");
    let h = seed_history(&path, 0, 50, 5_003, 0, 0);
    let config = common::config(&db, dir.path());
    let mut pg = db.connect();
    let options = |readers, workers, stop_after_chunks| BackfillOptions {
        tables: Some(vec!["jobs".into(), "job_logs".into()]),
        chunk_size: 37,
        readers,
        workers,
        stop_after_chunks,
        ..Default::default()
    };
    let mut keys = h.logs.clone();
    keys.sort();
    let copied_keys = |pg: &mut postgres::Client| -> Vec<String> {
        pg.query("SELECT id::text FROM job_logs ORDER BY id", &[]).unwrap().iter().map(|r| r.get(0)).collect()
    };

    // jobs: 50 rows, 2 chunks (37 + 13); then 40 chunks of job_logs.
    let first = backfill::backfill(&config, &options(4, 3, Some(42)), &mut NoProgress).unwrap();
    assert!(first.interrupted, "{}", first.render());
    let cp = backfill::checkpoints(&mut pg).unwrap();
    let logs = cp.iter().find(|c| c.table_name == "job_logs").expect("a job_logs checkpoint");
    assert_eq!((logs.rows_copied, logs.chunks, logs.finished), (40 * 37, 40, false));
    assert_eq!(logs.last_key.as_deref(), Some(keys[40 * 37 - 1].as_str()));
    assert_eq!(copied_keys(&mut pg), keys[..40 * 37], "the first 40 chunks in key order, nothing else");

    let second = backfill::backfill(&config, &options(3, 2, None), &mut NoProgress).unwrap();
    assert!(!second.interrupted, "{}", second.render());
    let logs = second.tables.iter().find(|t| t.table == "job_logs").unwrap();
    assert_eq!(logs.rows_copied, 5_003 - 40 * 37, "{}", second.render());
    let cp = backfill::checkpoints(&mut pg).unwrap();
    let logs = cp.iter().find(|c| c.table_name == "job_logs").unwrap();
    // 5,003 rows: 135 full chunks and a tail of 8.
    assert_eq!((logs.rows_copied, logs.chunks, logs.finished), (5_003, 136, true));
    assert_eq!(copied_keys(&mut pg), keys);
    assert_tables_equal(&path, &db, &["jobs", "job_logs"]);
    let v = verify::verify(&config, &VerifyOptions::default()).unwrap();
    assert!(v.ok, "{}", v.render_text());
}

#[test]
fn the_json_method_applies_the_same_rows_as_copy() {
    let db = common::migrated_db();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("monolith.sqlite3");
    seed_history(&path, 50, 100, 1_000, 100, 100);
    let config = common::config(&db, dir.path());
    let options =
        BackfillOptions { method: backfill::ApplyMethod::Json, chunk_size: 300, ..Default::default() };
    let r = backfill::backfill(&config, &options, &mut NoProgress).unwrap();
    assert_eq!(r.rows_copied(), 1_350);
    assert_tables_equal(&path, &db, &["users", "jobs", "job_logs", "embeddings", "wordstat_cache"]);
}

#[test]
fn a_second_backfill_at_the_same_time_is_refused() {
    let db = common::migrated_db();
    let dir = tempfile::tempdir().unwrap();
    seed_history(&dir.path().join("monolith.sqlite3"), 0, 10, 0, 0, 0);
    let config = common::config(&db, dir.path());
    let mut holder = db.connect();
    holder.execute("SELECT pg_advisory_lock($1)", &[&0x6477_6266_696c_6c30i64]).unwrap();
    let err = backfill::backfill(&config, &BackfillOptions::default(), &mut NoProgress).unwrap_err();
    assert!(err.to_string().contains("another backfill"), "{err}");
}

#[test]
fn an_unmigrated_postgres_is_named_not_a_missing_relation() {
    let db = common::fresh_db();
    let dir = tempfile::tempdir().unwrap();
    seed_history(&dir.path().join("monolith.sqlite3"), 0, 1, 0, 0, 0);
    let config = common::config(&db, dir.path());
    let err = backfill::backfill(&config, &BackfillOptions::default(), &mut NoProgress).unwrap_err();
    assert!(err.to_string().contains("dualwrite migrate"), "{err}");
    let err = verify::verify(&config, &VerifyOptions::default()).unwrap_err();
    assert!(err.to_string().contains("dualwrite migrate"), "{err}");
}

#[test]
fn a_backfill_killed_with_sigkill_resumes_without_copying_committed_chunks_again() {
    let db = common::migrated_db();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("monolith.sqlite3");
    seed_history(&path, 0, 100, 20_000, 0, 0);
    let config = common::config(&db, dir.path());
    let dualwrite::KeySource::File(key) = &config.key_source else { unreachable!("tests use key files") };
    let cli = |args: &[&str]| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_dualwrite"));
        c.args(args)
            .env("DUALWRITE_SQLITE_PATH", &path)
            .env("DUALWRITE_PG_URL", common::url_of(&db))
            .env("DUALWRITE_SECRET_KEY_FILE", key)
            .env_remove("DUALWRITE_CONFIG")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        c
    };
    // Throttled so the kill lands half-way through job_logs.
    let mut child = cli(&["backfill", "--chunk-size", "500", "--max-rows-per-sec", "4000"]).spawn().unwrap();
    let mut pg = db.connect();
    let copied_logs = |pg: &mut postgres::Client| -> i64 {
        pg.query_opt(
            "SELECT rows_copied FROM dualwrite.backfill_checkpoints WHERE table_name = 'job_logs'",
            &[],
        )
        .unwrap()
        .map_or(0, |r| r.get(0))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while copied_logs(&mut pg) < 3_000 {
        assert!(std::time::Instant::now() < deadline, "the backfill did not get going");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // A COMMIT the killed process had sent may still be finishing in its server session: wait
    // until the backfill's sessions are gone, so the checkpoint read next is the last one.
    let gone_by = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < gone_by {
        let others: i64 = pg
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                 AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
                &[],
            )
            .unwrap()
            .get(0);
        if others == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let committed = copied_logs(&mut pg);
    let in_pg: i64 = pg.query_one("SELECT count(*) FROM job_logs", &[]).unwrap().get(0);
    assert_eq!(in_pg, committed, "each chunk commits with its checkpoint: nothing half-applied");
    assert!(committed < 20_000, "killed half-way");

    let out = cli(&["backfill", "--chunk-size", "500", "--json"])
        .stdout(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert!(out.status.success());
    let summary: Value = serde_json::from_slice(&out.stdout).expect("backfill --json prints its summary");
    let logs = summary["tables"].as_array().unwrap().iter().find(|t| t["table"] == "job_logs").unwrap();
    assert_eq!(
        logs["rows_copied"].as_i64().unwrap(),
        20_000 - committed,
        "only the uncommitted rest was copied"
    );
    assert_eq!(copied_logs(&mut pg), 20_000);
    assert_tables_equal(&path, &db, &["jobs", "job_logs"]);
}

/// The direct path (rows no change touched, copied without a claim of their own) against a delete
/// that commits while the copy is in flight: the replicator's `DELETE` cannot see the uncommitted
/// copy, so the backfill must find the tombstone before it commits. The test plays the replicator
/// by hand at the worst moment: it holds the delete lock as a deleting batch does, waits until the
/// backfill's chunk (copied, not committed) queues behind it, commits a tombstone above the
/// chunk's snapshot for one of its keys (deleting nothing: the row is not visible yet), and lets go.
#[test]
fn a_delete_committed_while_a_direct_copy_is_in_flight_stays_deleted() {
    use dualwrite::store::postgres::{delete_lock_key, DELETE_LOCK_CLASS};
    let db = common::migrated_db();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("monolith.sqlite3");
    let h = seed_history(&path, 0, 10, 500, 0, 0);
    let config = common::config(&db, dir.path());
    let jobs = BackfillOptions { tables: Some(vec!["jobs".into()]), ..Default::default() };
    backfill::backfill(&config, &jobs, &mut NoProgress).unwrap();

    let logs = schema::table("job_logs").unwrap();
    let mut replicator = db.connect();
    replicator
        .execute("SELECT pg_advisory_lock($1, $2)", &[&DELETE_LOCK_CLASS, &delete_lock_key(logs)])
        .unwrap();
    let run = std::thread::spawn({
        let config = config.clone();
        move || {
            let options =
                BackfillOptions { tables: Some(vec!["job_logs".into()]), workers: 1, ..Default::default() };
            backfill::backfill(&config, &options, &mut NoProgress).unwrap()
        }
    });
    let mut watch = db.connect();
    let deadline = std::time::Instant::now() + FLUSH;
    loop {
        let waiting: i64 = watch
            .query_one("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted", &[])
            .unwrap()
            .get(0);
        if waiting > 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the backfill never waited for the delete lock");
        std::thread::sleep(Duration::from_millis(20));
    }
    let victim = &h.logs[123];
    let mut tx = replicator.transaction().unwrap();
    tx.execute(
        "INSERT INTO dualwrite.row_revisions (table_name, row_key, revision, deleted) VALUES ('job_logs', $1, $2, true)",
        &[victim, &(1i64 << 40)],
    )
    .unwrap();
    let seen = tx.execute("DELETE FROM job_logs WHERE id = $1::text::uuid", &[victim]).unwrap();
    assert_eq!(seen, 0, "the copy is not committed yet, so the delete cannot see it");
    tx.commit().unwrap();
    replicator
        .execute("SELECT pg_advisory_unlock($1, $2)", &[&DELETE_LOCK_CLASS, &delete_lock_key(logs)])
        .unwrap();

    let report = run.join().unwrap();
    let summary = report.tables.iter().find(|t| t.table == "job_logs").unwrap();
    assert_eq!((summary.rows_copied, summary.rows_written), (500, 499), "{}", report.render());
    let mut pg = db.connect();
    let back: i64 =
        pg.query_one("SELECT count(*) FROM job_logs WHERE id = $1::text::uuid", &[victim]).unwrap().get(0);
    assert_eq!(back, 0, "a row deleted after the snapshot came back");
    let n: i64 = pg.query_one("SELECT count(*) FROM job_logs", &[]).unwrap().get(0);
    assert_eq!(n, 499);
}

/// Rows that do need their claim on the direct path's chunks: a key PostgreSQL already holds with a
/// newer revision keeps the newer row (the direct COPY meets it and the row goes through the
/// claim, which it loses), and a key whose change was still in the outbox at the snapshot is
/// claimed at the snapshot, so that older change, applied afterwards, changes nothing.
#[test]
fn keys_with_a_newer_revision_or_a_pending_change_keep_the_guard_on_the_direct_path() {
    use dualwrite::store::sqlite::{Op, OutboxRecord};
    let db = common::migrated_db();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("monolith.sqlite3");
    let h = seed_history(&path, 0, 10, 500, 0, 0);
    let config = common::config(&db, dir.path());
    let jobs = BackfillOptions { tables: Some(vec!["jobs".into()]), ..Default::default() };
    backfill::backfill(&config, &jobs, &mut NoProgress).unwrap();
    let logs = schema::table("job_logs").unwrap();
    let lite_rows = sqlite_rows(&path, logs);

    // A newer version already replicated (revision far above any snapshot of this file).
    let (newer, pending) = (&h.logs[7], &h.logs[300]);
    let mut pg = db.connect();
    let mut image = lite_rows[newer].clone();
    image["message"] = json!("newer than the history");
    let batch = vec![OutboxRecord {
        seq: 1 << 40,
        table_name: "job_logs".into(),
        row_key: newer.clone(),
        op: Op::Upsert,
        row_image: Some(image.to_string()),
        created_at: ts(1),
    }];
    dualwrite::store::postgres::apply_batch(&mut pg, &batch, true).unwrap();

    // An older image of another row still in the outbox (below the snapshot the backfill takes).
    let mut old = lite_rows[pending].clone();
    old["message"] = json!("older than the history");
    let lite = dualwrite::store::sqlite::open(&path).unwrap();
    lite.execute(
        "INSERT INTO _dualwrite_outbox (table_name, row_key, op, row_image, created_at) VALUES ('job_logs', ?1, 'upsert', ?2, ?3)",
        rusqlite::params![pending, old.to_string(), ts(2)],
    )
    .unwrap();
    let seq: i64 = lite.query_row("SELECT max(seq) FROM _dualwrite_outbox", [], |r| r.get(0)).unwrap();

    let options = BackfillOptions { tables: Some(vec!["job_logs".into()]), ..Default::default() };
    let report = backfill::backfill(&config, &options, &mut NoProgress).unwrap();
    let summary = report.tables.iter().find(|t| t.table == "job_logs").unwrap();
    assert_eq!((summary.rows_copied, summary.rows_written), (500, 499), "{}", report.render());
    let message = |pg: &mut postgres::Client, key: &str| -> String {
        pg.query_one("SELECT message FROM job_logs WHERE id = $1::text::uuid", &[&key]).unwrap().get(0)
    };
    assert_eq!(message(&mut pg, newer), "newer than the history");
    assert_eq!(message(&mut pg, pending), lite_rows[pending]["message"].as_str().unwrap());

    // The replicator now applies the pending older change: it loses to the snapshot's claim.
    let late = vec![OutboxRecord {
        seq,
        table_name: "job_logs".into(),
        row_key: pending.clone(),
        op: Op::Upsert,
        row_image: Some(old.to_string()),
        created_at: ts(2),
    }];
    let applied = dualwrite::store::postgres::apply_batch(&mut pg, &late, true).unwrap();
    assert_eq!(applied.written, 0, "an older change won over the backfilled row");
    assert_eq!(message(&mut pg, pending), lite_rows[pending]["message"].as_str().unwrap());
}
