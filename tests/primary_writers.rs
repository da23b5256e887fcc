//! Concurrent writers while PostgreSQL is the primary (write_mode postgres_primary): a write no
//! longer holds SQLite's write lock, so the atomicity a read-check-write sequence had from it
//! must come from PostgreSQL — row locks on what a write reads, and single conditional
//! statements. Threads of one bridge and a second bridge on the same file (another process of
//! the monolith) race on the same rows.
//!
//! Needs PostgreSQL: `pg_virtualenv -t -v 15 -o wal_level=logical cargo test --test primary_writers`.

mod common;

use dualwrite::{Bridge, BridgeOptions, Cache, Error, FlagChange, JobStatus, NewJob, WriteMode};
use serde_json::json;
use std::collections::HashSet;
use std::sync::{Arc, Barrier};
use std::time::Duration;
use uuid::Uuid;

/// Two bridges on one SQLite file in postgres_primary: `main` runs the change capture, `other`
/// is a second process of the monolith.
fn primary_pair(db: &common::TestDb, dir: &std::path::Path) -> (Bridge, Bridge) {
    let main = common::bridge(db, dir);
    main.set_flag(FlagChange::WriteMode(WriteMode::PostgresPrimary), "test", "primary writers", false)
        .expect("switch to postgres_primary");
    let other = common::bridge_with(db, dir, BridgeOptions { replicate: false, ..Default::default() });
    assert_eq!(other.flags().write_mode, WriteMode::PostgresPrimary);
    (main, other)
}

/// Run `f(i)` on `n` threads at once, `i` being the thread's number; each thread gets one of the
/// bridges in turn.
fn race<T: Send + 'static>(
    bridges: &[&Bridge],
    n: usize,
    f: impl Fn(&Bridge, usize) -> T + Send + Sync + 'static,
) -> Vec<T> {
    let f = Arc::new(f);
    let start = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let (b, f, start) = (bridges[i % bridges.len()].clone(), f.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                f(&b, i)
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().expect("racing thread")).collect()
}

#[test]
fn concurrent_claimers_never_share_a_job_while_postgresql_is_the_primary() {
    let db = common::migrated_db();
    let dir = tempfile::tempdir().unwrap();
    let (main, other) = primary_pair(&db, dir.path());
    let mut submitted = HashSet::new();
    for i in 0..120 {
        submitted.insert(main.submit_job(&NewJob::new(format!("job {i}"))).unwrap().id);
    }
    let claims = race(&[&main, &other], 6, |b, _| {
        let mut mine = Vec::new();
        while let Some(job) = b.claim_next_job().unwrap() {
            assert_eq!(job.status, JobStatus::Running);
            mine.push(job.id);
        }
        mine
    });
    let mut seen = HashSet::new();
    for id in claims.iter().flatten() {
        assert!(seen.insert(*id), "job {id} was claimed twice");
    }
    assert_eq!(seen, submitted, "every job claimed exactly once");
    let running: i64 =
        db.connect().query_one("SELECT count(*) FROM jobs WHERE status = 'running'", &[]).unwrap().get(0);
    assert_eq!(running, 120);
}

#[test]
fn of_concurrent_moves_of_a_job_to_a_final_status_exactly_one_wins() {
    let db = common::migrated_db();
    let dir = tempfile::tempdir().unwrap();
    let (main, other) = primary_pair(&db, dir.path());
    let finals = [JobStatus::Succeeded, JobStatus::Failed, JobStatus::Cancelled];
    for round in 0..15 {
        let id = main.submit_job(&NewJob::new(format!("round {round}"))).unwrap().id;
        main.set_job_status(id, JobStatus::Running).unwrap();
        let outcomes = race(&[&main, &other], 6, move |b, i| {
            // Half the threads finish the job, the other half report progress on it.
            if i % 2 == 0 {
                b.set_job_status(id, finals[i / 2 % 3]).map(|j| Some(j.status))
            } else {
                b.set_job_progress(id, "50").map(|_| None)
            }
        });
        let mut won = Vec::new();
        for outcome in &outcomes {
            match outcome {
                Ok(Some(status)) => won.push(*status),
                Ok(None) => {}
                Err(Error::Conflict(_)) => {}
                Err(e) => panic!("round {round}: unexpected error {e}"),
            }
        }
        assert_eq!(won.len(), 1, "round {round}: exactly one move to a final status succeeds: {outcomes:?}");
        let job = main.get_job(id).unwrap().unwrap();
        assert_eq!(job.status, won[0], "round {round}: the winner's status is the job's");
        // A finished job's progress never changes: what it holds now is what it held when it
        // finished, and any later attempt is refused.
        let e = main.set_job_progress(id, "99").unwrap_err();
        assert!(matches!(e, Error::Conflict(_)), "{e}");
        assert_eq!(main.get_job(id).unwrap().unwrap().progress, job.progress);
    }
    let e = main.set_job_status(Uuid::now_v7(), JobStatus::Running).unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "a missing job is not found, not a conflict: {e}");
    let e = main.set_job_progress(Uuid::now_v7(), "1").unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e}");
    main.wait_for_sqlite(Duration::from_secs(60)).unwrap();
    common::assert_stores_equal(&main, &db);
}

#[test]
fn concurrent_upserts_of_one_new_key_all_succeed_and_leave_one_row() {
    let db = common::migrated_db();
    let dir = tempfile::tempdir().unwrap();
    let (main, other) = primary_pair(&db, dir.path());
    for round in 0..10 {
        let key = format!("key {round}");
        let results = race(&[&main, &other], 6, {
            let key = key.clone();
            move |b, i| {
                b.cache_put(Cache::TextAnalytics, &key, &json!({ "writer": i }), Duration::from_secs(600))
            }
        });
        for r in &results {
            assert!(r.is_ok(), "round {round}: every upsert succeeds (none fails on the unique key): {r:?}");
        }
        let rows = db
            .connect()
            .query("SELECT value FROM text_analytics_cache WHERE cache_key = $1", &[&key])
            .unwrap();
        assert_eq!(rows.len(), 1, "round {round}: one row per key");
        let stored: serde_json::Value = rows[0].get(0);
        let written: Vec<_> = results.iter().map(|r| r.as_ref().unwrap().value.clone()).collect();
        assert!(written.contains(&stored), "round {round}: the row holds one writer's value: {stored}");
    }
    main.wait_for_sqlite(Duration::from_secs(60)).unwrap();
    common::assert_stores_equal(&main, &db);
}

/// A write while PostgreSQL is the primary sends each value as text cast to its column's type
/// (`store::pg_primary`): a JSON column takes the JSON text, so a JSON string stays a string —
/// even one that reads as a number or an object — and a JSON null in a nullable column is SQL
/// NULL. Each kind goes through the three shapes of write (insert, update, upsert) and reads back
/// as written, from the bridge and from PostgreSQL itself.
#[test]
fn every_kind_of_json_value_reaches_postgresql_as_written_while_it_is_the_primary() {
    let db = common::migrated_db();
    let dir = tempfile::tempdir().unwrap();
    let (main, _other) = primary_pair(&db, dir.path());
    let mut pg = db.connect();
    let stored = |pg: &mut postgres::Client, sql: &str, key: &str| -> Option<serde_json::Value> {
        let text: Option<String> = pg.query_one(sql, &[&key]).unwrap().get(0);
        text.map(|t| serde_json::from_str(&t).unwrap())
    };
    let kinds = [
        json!("5"),
        json!("{\"a\": 1}"),
        json!("plain"),
        json!({"a": [1, "x", null]}),
        json!(12.5),
        json!([1, 2]),
        json!(true),
    ];
    let job = main.insert("jobs", &json!({"type": "kinds"})).unwrap();
    let job_id = job["id"].as_str().unwrap().to_string();
    for (i, v) in kinds.iter().enumerate() {
        let inserted = main.insert("jobs", &json!({"type": "kinds", "payload": v})).unwrap();
        let id = inserted["id"].as_str().unwrap();
        assert_eq!(&inserted["payload"], v, "insert of {v}: the row returned");
        let by_sql = "SELECT payload::text FROM jobs WHERE id = $1::text::uuid";
        assert_eq!(stored(&mut pg, by_sql, id).as_ref(), Some(v), "insert of {v}: in PostgreSQL");

        let patched = main.patch("jobs", &job_id, &json!({"payload": v})).unwrap();
        assert_eq!(&patched["payload"], v, "update to {v}: the row returned");
        assert_eq!(stored(&mut pg, by_sql, &job_id).as_ref(), Some(v), "update to {v}: in PostgreSQL");

        let key = format!("kind-{}", i % 2);
        main.cache_put(Cache::Wordstat, &key, v, Duration::from_secs(3600)).unwrap();
        let by_sql = "SELECT value::text FROM wordstat_cache WHERE cache_key = $1";
        assert_eq!(stored(&mut pg, by_sql, &key).as_ref(), Some(v), "upsert of {v}: in PostgreSQL");
        assert_eq!(
            main.cache_get(Cache::Wordstat, &key).unwrap().map(|e| e.value).as_ref(),
            Some(v),
            "upsert of {v}: read back"
        );
    }
    let unowned = main.insert("jobs", &json!({"type": "kinds", "owner_id": null})).unwrap();
    let nulls: (Option<Uuid>, i64) = {
        let r = pg
            .query_one(
                "SELECT owner_id, count(*) OVER () FROM jobs WHERE id = $1::text::uuid",
                &[&unowned["id"].as_str().unwrap()],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(nulls, (None, 1), "a JSON null is SQL NULL");
}
