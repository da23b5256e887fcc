//! The replicator: changes reach PostgreSQL, in order, exactly once in effect; older revisions and
//! replayed deletes never win; a poison change goes to the dead letters while the rest flows.

mod common;

use dualwrite::store::sqlite::{Op, OutboxRecord};
use serde_json::json;
use std::time::Duration;

const FLUSH: Duration = Duration::from_secs(30);

#[test]
fn inserts_updates_and_deletes_reach_postgres() {
    let db = common::migrated_db();
    let dir = tempfile::tempdir().unwrap();
    let b = common::bridge(&db, dir.path());
    let user = b.insert("users", &json!({"email": "ann@example.com", "display_name": "Ann"})).unwrap();
    let uid = user["id"].as_str().unwrap();
    let job =
        b.insert("jobs", &json!({"type": "serp", "owner_id": uid, "payload": {"kw": ["a", 1]}})).unwrap();
    let jid = job["id"].as_str().unwrap();
    for i in 0..50 {
        b.insert("job_logs", &json!({"job_id": jid, "level": "info", "message": format!("step {i}")}))
            .unwrap();
    }
    b.patch("jobs", jid, &json!({"status": "running", "progress": "12.5"})).unwrap();
    let e = b
        .insert("embeddings", &json!({"text_hash": "h1", "model": "m", "vector": [0.1, 0.2, -3.5]}))
        .unwrap();
    b.insert(
        "text_analytics_cache",
        &json!({"cache_key": "k1", "value": {"n": 1}, "expires_at": "2030-01-01T00:00:00Z"}),
    )
    .unwrap();
    b.delete("embeddings", e["id"].as_str().unwrap()).unwrap();
    b.flush(FLUSH).unwrap();
    common::assert_stores_equal(&b, &db);
    let st = b.status().unwrap();
    assert_eq!(st.outbox_depth, 0);
    assert_eq!(st.dead_letters, 0);
}

fn record(seq: i64, key: &str, op: Op, image: Option<serde_json::Value>) -> OutboxRecord {
    OutboxRecord {
        seq,
        table_name: "wordstat_cache".into(),
        row_key: key.into(),
        op,
        row_image: image.map(|v| v.to_string()),
        created_at: "2026-01-01T00:00:00.000000Z".into(),
    }
}

fn cache_value(pg: &mut postgres::Client, key: &str) -> Option<i64> {
    pg.query_opt("SELECT (value->>'v')::int8 FROM wordstat_cache WHERE cache_key = $1", &[&key])
        .unwrap()
        .map(|r| r.get(0))
}

#[test]
fn an_older_revision_or_a_replayed_delete_never_wins_and_replays_change_nothing() {
    let db = common::migrated_db();
    let mut pg = db.connect();
    let img = |k: &str, v: i64| {
        Some(json!({"cache_key": k, "value": {"v": v}, "expires_at": "2030-01-01T00:00:00.000000Z"}))
    };
    let apply = |pg: &mut postgres::Client, recs: &[OutboxRecord]| {
        dualwrite::store::postgres::apply_batch(pg, recs, true).unwrap()
    };

    let a = apply(&mut pg, &[record(10, "k", Op::Upsert, img("k", 10))]);
    assert_eq!(a.written, 1);
    // Replay of the same batch: nothing written.
    let a = apply(&mut pg, &[record(10, "k", Op::Upsert, img("k", 10))]);
    assert_eq!(a.written, 0);
    // An older revision arriving late loses.
    apply(&mut pg, &[record(5, "k", Op::Upsert, img("k", 5))]);
    assert_eq!(cache_value(&mut pg, "k"), Some(10));
    // Newer wins.
    apply(&mut pg, &[record(11, "k", Op::Upsert, img("k", 11))]);
    assert_eq!(cache_value(&mut pg, "k"), Some(11));
    // Delete, then older upserts (a retry, another process, a backfill copy) cannot resurrect it.
    apply(&mut pg, &[record(12, "k", Op::Delete, None)]);
    apply(&mut pg, &[record(11, "k", Op::Upsert, img("k", 11)), record(3, "k", Op::Upsert, img("k", 3))]);
    assert_eq!(cache_value(&mut pg, "k"), None);
    // Within one batch the newest change of a row is the one that counts.
    apply(
        &mut pg,
        &[
            record(20, "k2", Op::Upsert, img("k2", 20)),
            record(21, "k2", Op::Delete, None),
            record(22, "k2", Op::Upsert, img("k2", 22)),
        ],
    );
    assert_eq!(cache_value(&mut pg, "k2"), Some(22));
    let tomb: bool = pg
        .query_one("SELECT deleted FROM dualwrite.row_revisions WHERE table_name = 'wordstat_cache' AND row_key = 'k'", &[])
        .unwrap()
        .get(0);
    assert!(tomb);
}

#[test]
fn a_poison_change_goes_to_dead_letters_while_the_rest_flows_and_can_be_retried() {
    let db = common::migrated_db();
    let dir = tempfile::tempdir().unwrap();
    let b = common::bridge(&db, dir.path());
    // Make PostgreSQL refuse one specific change: a CHECK that only PostgreSQL has.
    db.connect()
        .batch_execute("ALTER TABLE job_logs ADD CONSTRAINT no_poison CHECK (message <> 'poison')")
        .unwrap();
    let job = b.insert("jobs", &json!({"type": "t"})).unwrap();
    let jid = job["id"].as_str().unwrap();
    for i in 0..20 {
        let msg = if i == 7 { "poison".to_string() } else { format!("ok {i}") };
        b.insert("job_logs", &json!({"job_id": jid, "level": "info", "message": msg})).unwrap();
    }
    b.flush(FLUSH).unwrap();
    let dead = b.dead_letters().unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(dead[0].error.contains("no_poison"), "{}", dead[0].error);
    let n: i64 = db.connect().query_one("SELECT count(*) FROM job_logs", &[]).unwrap().get(0);
    assert_eq!(n, 19, "the other 19 logs flowed past the poison");
    assert_eq!(b.status().unwrap().dead_letters, 1);

    // Fix the cause, retry: the row's current state is re-enqueued and lands.
    db.connect().batch_execute("ALTER TABLE job_logs DROP CONSTRAINT no_poison").unwrap();
    assert!(b.retry_dead_letter(dead[0].seq).unwrap());
    b.flush(FLUSH).unwrap();
    assert!(b.dead_letters().unwrap().is_empty());
    common::assert_stores_equal(&b, &db);
    assert!(!b.retry_dead_letter(dead[0].seq).unwrap(), "a retried letter is gone");
}

#[test]
fn bad_input_is_refused_by_name_and_writes_nothing() {
    let db = common::migrated_db();
    let dir = tempfile::tempdir().unwrap();
    let b = common::bridge(&db, dir.path());
    let cases = [
        ("jobs", json!({"type": "t", "status": "exploded"}), "jobs.status"),
        ("jobs", json!({"type": "t", "progress": "12,5"}), "jobs.progress"),
        ("jobs", json!({"type": "t", "owner_id": "not-a-uuid"}), "jobs.owner_id"),
        ("jobs", json!({"type": "t", "queued_at": "yesterday"}), "jobs.queued_at"),
        ("jobs", json!({"type": "t", "nope": 1}), "jobs.nope"),
        ("jobs", json!(["not", "an", "object"]), "jobs"),
        ("users; DROP TABLE users", json!({}), "table"),
    ];
    for (table, row, field) in cases {
        let err = b.insert(table, &row).unwrap_err();
        assert!(matches!(err, dualwrite::Error::InvalidArgument { .. }), "{err}");
        assert!(err.to_string().contains(field), "{err} should name {field}");
    }
    // A foreign key SQLite enforces: a conflict, nothing written.
    let err = b.insert(
        "job_logs",
        &json!({"job_id": uuid::Uuid::new_v4().to_string(), "level": "info", "message": "m"}),
    );
    assert!(matches!(err, Err(dualwrite::Error::Conflict(_))), "{err:?}");
    assert_eq!(b.status().unwrap().outbox_depth, 0, "nothing reached the outbox");
    for t in dualwrite::schema::TABLES {
        assert!(b.list(t.name, &json!({})).unwrap().is_empty());
    }
}

/// Regression (issue 14, item 7): a batch that deletes a row and re-creates its unique key under a
/// new id (owner + provider, prompt key + version, email) applied the insert before the delete:
/// PostgreSQL refused it (unique violation) and the replicator re-applied the batch change by
/// change. The batch is taken straight from the outbox the bridge wrote, as the replicator takes it.
#[test]
fn a_unique_key_deleted_and_recreated_under_a_new_id_applies_in_one_batch() {
    let db = common::migrated_db();
    let dir = tempfile::tempdir().unwrap();
    let (owner, key, prompt, user) = {
        let r = common::bridge(&db, dir.path());
        let owner = r.insert("users", &json!({"email": "owner@example.com", "display_name": "O"})).unwrap();
        let owner = uuid::Uuid::parse_str(owner["id"].as_str().unwrap()).unwrap();
        let key = r.put_api_key(owner, "serpapi", b"first-secret", None).unwrap().id.to_string();
        let prompt = r.insert("prompts", &json!({"key": "greeting", "body": "v1", "version": 1})).unwrap();
        let user = r.insert("users", &json!({"email": "reused@example.com", "display_name": "A"})).unwrap();
        r.flush(FLUSH).unwrap();
        r.shutdown(Duration::from_secs(5));
        (owner, key, prompt["id"].as_str().unwrap().to_string(), user["id"].as_str().unwrap().to_string())
    };
    let w = common::bridge_with(
        &db,
        dir.path(),
        dualwrite::BridgeOptions { replicate: false, ..Default::default() },
    );
    assert!(w.delete("api_keys", &key).unwrap());
    let key2 = w.put_api_key(owner, "serpapi", b"second-secret", None).unwrap().id.to_string();
    assert!(w.delete("prompts", &prompt).unwrap());
    let prompt2 = w.insert("prompts", &json!({"key": "greeting", "body": "v2", "version": 1})).unwrap();
    assert!(w.delete("users", &user).unwrap());
    let user2 = w.insert("users", &json!({"email": "reused@example.com", "display_name": "B"})).unwrap();
    assert_ne!(key2, key);

    let sqlite = dualwrite::store::sqlite::open(&w.config().sqlite_path).unwrap();
    let batch = dualwrite::store::sqlite::Outbox::pending(&sqlite, 1000).unwrap();
    assert_eq!(batch.len(), 6);
    let mut pg = db.connect();
    let applied = dualwrite::store::postgres::apply_batch(&mut pg, &batch, true)
        .unwrap_or_else(|e| panic!("the batch needed a retry: {}", dualwrite::Error::Postgres(e)));
    assert_eq!((applied.written, applied.skipped), (6, 0));
    let ids = |pg: &mut postgres::Client, sql: &str| -> Vec<String> {
        pg.query(sql, &[]).unwrap().iter().map(|r| r.get(0)).collect()
    };
    assert_eq!(ids(&mut pg, "SELECT id::text FROM api_keys"), vec![key2]);
    assert_eq!(
        ids(&mut pg, "SELECT id::text FROM prompts"),
        vec![prompt2["id"].as_str().unwrap().to_string()]
    );
    assert_eq!(
        ids(&mut pg, "SELECT id::text FROM users WHERE email = 'reused@example.com'"),
        vec![user2["id"].as_str().unwrap().to_string()]
    );
    // The replicator finds it applied (every claim already won) and the stores agree.
    let r = common::bridge(&db, dir.path());
    r.flush(FLUSH).unwrap();
    assert_eq!(r.dead_letters().unwrap(), vec![]);
    common::assert_stores_equal(&r, &db);
}

/// A bridge that writes with replication paused (a rollback, an outage): its changes wait in
/// the outbox for the next replicating bridge on the file.
fn paused_bridge(db: &common::TestDb, dir: &std::path::Path) -> dualwrite::Bridge {
    common::bridge_with(db, dir, dualwrite::BridgeOptions { replicate: false, ..Default::default() })
}

/// A replicating bridge whose batches hold `batch_size` records.
fn bridge_with_batches(db: &common::TestDb, dir: &std::path::Path, batch_size: usize) -> dualwrite::Bridge {
    let replicator = dualwrite::ReplicatorOptions { batch_size, ..Default::default() };
    common::bridge_with(db, dir, dualwrite::BridgeOptions { replicator, ..Default::default() })
}

/// A backlog many batches long drains through the replicator's pipeline (the next batch read and
/// the last one removed from the outbox while PostgreSQL applies the current one): no record is
/// passed over or applied out of order — rows updated, deleted, and a unique key deleted and made
/// again under a new id, each in later batches than the rows were made in, end as in SQLite.
#[test]
fn a_backlog_of_many_batches_drains_through_the_pipeline_as_in_sqlite() {
    let db = common::migrated_db();
    let dir = tempfile::tempdir().unwrap();
    let pending = {
        let b = paused_bridge(&db, dir.path());
        // A job, then its three logs, and again: a parent the pipeline passed over would leave its
        // children without a parent at their batch's commit (a foreign-key refusal: dead letters).
        let mut jid = String::new();
        let logs: Vec<String> = (0..300)
            .map(|i| {
                if i % 3 == 0 {
                    jid =
                        b.insert("jobs", &json!({"type": "t"})).unwrap()["id"].as_str().unwrap().to_string();
                }
                let log = json!({"job_id": jid, "level": "info", "message": format!("log {i}")});
                b.insert("job_logs", &log).unwrap()["id"].as_str().unwrap().to_string()
            })
            .collect();
        for (i, id) in logs.iter().enumerate() {
            if i % 3 == 0 {
                b.patch("job_logs", id, &json!({"message": format!("updated {i}")})).unwrap();
            }
        }
        for (i, id) in logs.iter().enumerate() {
            if i % 5 == 0 {
                assert!(b.delete("job_logs", id).unwrap());
            }
        }
        let ann = b.insert("users", &json!({"email": "ann@example.com", "display_name": "Ann"})).unwrap();
        assert!(b.delete("users", ann["id"].as_str().unwrap()).unwrap());
        b.insert("users", &json!({"email": "ann@example.com", "display_name": "Ann again"})).unwrap();
        b.patch("jobs", &jid, &json!({"status": "running"})).unwrap();
        b.status().unwrap().outbox_depth
    };
    assert_eq!(pending, 100 + 300 + 100 + 60 + 3 + 1, "the backlog waits in the outbox");
    // 6 records a batch: about 94 batches, so several pipelined steps, with a batch's keys
    // changed again in batches read while it was being applied.
    let b = bridge_with_batches(&db, dir.path(), 6);
    b.flush(FLUSH).unwrap();
    common::assert_stores_equal(&b, &db);
    let st = b.status().unwrap();
    assert_eq!(st.outbox_depth, 0);
    assert_eq!(st.dead_letters, 0);
}

/// A change PostgreSQL refuses in the middle of a backlog: its batch is applied one change at a
/// time while the batch before it, committed and not yet removed, is removed as usual; the
/// poison goes to the dead letters and every other change of the backlog arrives.
#[test]
fn a_poison_change_in_the_middle_of_a_backlog_is_dead_lettered_and_the_rest_arrives() {
    let db = common::migrated_db();
    let dir = tempfile::tempdir().unwrap();
    db.connect()
        .batch_execute("ALTER TABLE job_logs ADD CONSTRAINT no_poison CHECK (message <> 'poison')")
        .unwrap();
    {
        let b = paused_bridge(&db, dir.path());
        let jid = b.insert("jobs", &json!({"type": "t"})).unwrap()["id"].as_str().unwrap().to_string();
        for i in 0..100 {
            let msg = if i == 53 { "poison".to_string() } else { format!("ok {i}") };
            b.insert("job_logs", &json!({"job_id": jid, "level": "info", "message": msg})).unwrap();
        }
    }
    let b = bridge_with_batches(&db, dir.path(), 10);
    b.flush(FLUSH).unwrap();
    let dead = b.dead_letters().unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(dead[0].error.contains("no_poison"), "{}", dead[0].error);
    let n: i64 = db.connect().query_one("SELECT count(*) FROM job_logs", &[]).unwrap().get(0);
    assert_eq!(n, 99, "the 99 other logs, before and after the poison's batch, arrived");
    assert_eq!(b.status().unwrap().outbox_depth, 0);
}
