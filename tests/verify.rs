//! verify against a real PostgreSQL: each kind of planted difference is found and located to its
//! key and column; JSON that differs only in spelling is not; changes in flight are named as such;
//! repair makes the stores equal again.

mod common;

use dualwrite::verify::{self, VerifyOptions, VerifyReport};
use dualwrite::BridgeOptions;
use serde_json::json;
use std::time::Duration;

const FLUSH: Duration = Duration::from_secs(60);

fn table<'a>(r: &'a VerifyReport, name: &str) -> &'a verify::TableResult {
    r.tables.iter().find(|t| t.table == name).unwrap()
}

fn fast() -> VerifyOptions {
    // Small chunks, so the differences land in several chunks; quick rechecks.
    VerifyOptions { chunk_size: 7, recheck_wait: Duration::from_millis(50), ..Default::default() }
}

#[test]
fn verify_locates_planted_differences_ignores_json_spelling_names_in_flight_and_repair_fixes_them() {
    let db = common::migrated_db();
    let dir = tempfile::tempdir().unwrap();
    let b = common::bridge(&db, dir.path());
    let config = common::config(&db, dir.path());
    let job = b
        .insert(
            "jobs",
            &json!({"type": "crawl", "payload": {"kw": ["a", "b"], "n": 1.5}, "progress": "12.50"}),
        )
        .unwrap();
    let jid = job["id"].as_str().unwrap().to_string();
    let mut logs = Vec::new();
    for i in 0..40 {
        let r = b
            .insert(
                "job_logs",
                &json!({"job_id": jid, "level": "info", "message": format!("m{i}"),
                "context": {"attempt": i, "nested": {"b": [1, 2], "a": "x"}}}),
            )
            .unwrap();
        logs.push(r["id"].as_str().unwrap().to_string());
    }
    let mut embs = Vec::new();
    for i in 0..10 {
        let r = b
            .insert(
                "embeddings",
                &json!({"text_hash": format!("h{i}"), "model": "m", "vector": [0.1, i as f64, -3.5]}),
            )
            .unwrap();
        embs.push(r["id"].as_str().unwrap().to_string());
    }
    b.insert(
        "wordstat_cache",
        &json!({"cache_key": "Ünïcode key", "value": {"a": 1}, "expires_at": "2030-01-01T00:00:00Z"}),
    )
    .unwrap();
    b.insert(
        "wordstat_cache",
        &json!({"cache_key": "Zebra", "value": {"a": 2}, "expires_at": "2030-01-01T00:00:00Z"}),
    )
    .unwrap();
    b.insert(
        "wordstat_cache",
        &json!({"cache_key": "apple", "value": {"a": 3}, "expires_at": "2030-01-01T00:00:00Z"}),
    )
    .unwrap();
    b.flush(FLUSH).unwrap();

    let clean = verify::verify(&config, &fast()).unwrap();
    assert!(clean.ok, "{}", clean.render_text());
    assert_eq!(table(&clean, "job_logs").sqlite_rows, 40);
    assert_eq!(table(&clean, "job_logs").postgres_rows, 40);
    assert!(table(&clean, "job_logs").chunks >= 6);

    // JSON that differs only in key order, whitespace and number spelling: written into SQLite
    // directly (PostgreSQL's jsonb has its own spelling anyway). Not a difference.
    let lite = dualwrite::store::sqlite::open(&dir.path().join("monolith.sqlite3")).unwrap();
    lite.execute(
        "UPDATE job_logs SET context = ?1 WHERE id = ?2",
        rusqlite::params!["{ \"nested\" : { \"a\":\"x\",  \"b\" : [1.0, 2] },\n  \"attempt\": 3 }", logs[3]],
    )
    .unwrap();
    lite.execute(
        "UPDATE jobs SET payload = ?1 WHERE id = ?2",
        rusqlite::params!["{\"n\":1.50,\"kw\":[\"a\",\"b\"]}", jid],
    )
    .unwrap();

    // Plant one of each difference in PostgreSQL, bypassing the bridge.
    let extra = uuid::Uuid::new_v4().to_string();
    let mut pg = db.connect();
    pg.batch_execute(&format!(
        "DELETE FROM job_logs WHERE id = '{missing}';
         INSERT INTO job_logs (id, job_id, level, message, context, created_at)
             VALUES ('{extra}', '{jid}', 'info', 'planted', '{{}}', now());
         UPDATE job_logs SET context = jsonb_set(context, '{{nested,a}}', '\"y\"') WHERE id = '{json}';
         UPDATE job_logs SET created_at = created_at + interval '1 microsecond' WHERE id = '{ts}';
         UPDATE embeddings SET vector = '[0.1,5.0001,-3.5]' WHERE id = '{vec}';
         UPDATE wordstat_cache SET value = '{{\"a\": 10}}' WHERE cache_key = 'Zebra';",
        missing = logs[10],
        json = logs[20],
        ts = logs[30],
        vec = embs[5],
    ))
    .unwrap();

    // A change still in the outbox is in flight, not a difference.
    b.shutdown(Duration::from_secs(5));
    b.patch("job_logs", &logs[35], &json!({"message": "changed, not replicated yet"})).unwrap();

    let r = verify::verify(&config, &fast()).unwrap();
    let text = r.render_text();
    assert!(!r.ok, "{text}");
    let t = table(&r, "job_logs");
    assert_eq!(t.missing, vec![logs[10].clone()], "{text}");
    assert_eq!(t.extra, vec![extra.clone()], "{text}");
    let mut diff: Vec<(String, Vec<String>)> =
        t.different.iter().map(|d| (d.key.clone(), d.columns.clone())).collect();
    diff.sort();
    let mut want = vec![
        (logs[20].clone(), vec!["context".to_string()]),
        (logs[30].clone(), vec!["created_at".to_string()]),
    ];
    want.sort();
    assert_eq!(diff, want, "{text}");
    assert_eq!(t.in_flight, vec![logs[35].clone()], "{text}");
    assert_eq!(t.differences, 4);
    assert!(t.chunks_differing >= 1 && t.chunks_differing <= 4, "{text}");
    let e = table(&r, "embeddings");
    assert_eq!(e.different.len(), 1, "{text}");
    assert_eq!(
        (e.different[0].key.as_str(), e.different[0].columns.clone()),
        (embs[5].as_str(), vec!["vector".to_string()])
    );
    let w = table(&r, "wordstat_cache");
    assert_eq!(w.different.iter().map(|d| d.key.as_str()).collect::<Vec<_>>(), vec!["Zebra"], "{text}");
    assert!(table(&r, "jobs").ok(), "JSON spelling is not a difference: {text}");
    assert_eq!(r.differences(), 6);
    assert_eq!(r.in_flight(), 1);
    assert!(r.render_markdown().contains("| job_logs | 40 | 40 |"), "{}", r.render_markdown());
    assert!(text.contains(&format!("{} (context)", logs[20])), "{text}");

    // Recorded, for repair and for the phase guard rails.
    let last = verify::last_run(&mut pg).unwrap().expect("a recorded run");
    assert_eq!(last.id, r.id);
    assert!(!last.ok);
    let failed: bool = pg
        .query_one("SELECT NOT ok FROM dualwrite.verify_runs WHERE id = $1", &[&r.id.unwrap()])
        .unwrap()
        .get(0);
    assert!(failed);

    // Repair through the outbox with a replicating bridge; the keys check out; a full verify passes.
    let b2 = dualwrite::Bridge::open(
        config.clone(),
        BridgeOptions { migrate_sqlite: false, ..Default::default() },
    )
    .unwrap();
    let fixed = dualwrite::repair::repair(&b2, &last, FLUSH).unwrap();
    assert_eq!(fixed.requeued, 6);
    assert!(fixed.ok, "{fixed:?}");
    b2.flush(FLUSH).unwrap();
    let after = verify::verify(&config, &fast()).unwrap();
    assert!(after.ok, "{}", after.render_text());
    assert_eq!(after.in_flight(), 0);
    assert!(verify::last_run(&mut pg).unwrap().unwrap().ok);
    b2.shutdown(Duration::from_secs(1));
}

#[test]
fn verify_reads_secrets_only_as_bytes_and_never_prints_values() {
    let db = common::migrated_db();
    let dir = tempfile::tempdir().unwrap();
    let b = common::bridge(&db, dir.path());
    let config = common::config(&db, dir.path());
    let u = b.insert("users", &json!({"email": "ann@example.com", "display_name": "Ann"})).unwrap();
    let owner = uuid::Uuid::parse_str(u["id"].as_str().unwrap()).unwrap();
    b.put_api_key(owner, "serpapi", b"s3cr3t-value", None).unwrap();
    b.flush(FLUSH).unwrap();
    let clean = verify::verify(&config, &VerifyOptions { record: false, ..fast() }).unwrap();
    assert!(clean.ok, "ciphertext compared as bytes: {}", clean.render_text());
    let mut pg = db.connect();
    // The stored ciphertext, as hex (its first 32 digits are plenty to recognise it in a report).
    let stored: String =
        pg.query_one("SELECT encode(secret_ciphertext, 'hex') FROM api_keys", &[]).unwrap().get(0);
    pg.batch_execute("UPDATE api_keys SET secret_ciphertext = secret_ciphertext || '\\x00'::bytea").unwrap();
    let r = verify::verify(&config, &VerifyOptions { record: false, ..fast() }).unwrap();
    let t = table(&r, "api_keys");
    assert_eq!(t.different.len(), 1);
    assert_eq!(t.different[0].columns, vec!["secret_ciphertext".to_string()]);
    let out = format!("{}{}{}", r.render_text(), r.render_markdown(), serde_json::to_string(&r).unwrap());
    assert!(!out.contains("s3cr3t"));
    // The plaintext never reaches either store, so the check that matters is the ciphertext.
    assert!(!out.to_lowercase().contains(&stored[..32]), "a report shows the stored ciphertext");
    b.shutdown(Duration::from_secs(1));
}

/// The commands as an operator runs them: exit codes, `--json`, `--markdown`, `repair`.
#[test]
fn the_cli_backfills_verifies_with_exit_codes_and_repairs() {
    let db = common::migrated_db();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("monolith.sqlite3");
    // History written before the bridge: only a backfill brings it over.
    {
        let mut c = dualwrite::store::sqlite::open(&path).unwrap();
        dualwrite::migrate_sqlite(&mut c).unwrap();
        for i in 0..30 {
            c.execute(
                "INSERT INTO wordstat_cache (cache_key, value, expires_at) VALUES (?1, ?2, '2030-01-01T00:00:00.000000Z')",
                rusqlite::params![format!("k{i:02}"), json!({"i": i}).to_string()],
            )
            .unwrap();
        }
    }
    let key = common::key_file(dir.path());
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_dualwrite"))
            .args(args)
            .env("DUALWRITE_SQLITE_PATH", &path)
            .env("DUALWRITE_SECRET_KEY_FILE", &key)
            .env("PGDATABASE", db.config.dbname().unwrap())
            .env_remove("DUALWRITE_PG_URL")
            .env_remove("DATABASE_URL")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(&["verify", "--tables", "wordstat_cache"]);
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(out.contains("DIFFERENT") && out.contains("missing in postgres: k00"), "{out}");

    let (code, out, err) =
        run(&["backfill", "--tables", "wordstat_cache", "--chunk-size", "10", "--stop-after-chunks", "2"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("interrupted"), "{out}");
    let (code, out, err) = run(&["backfill", "--chunk-size", "10", "--json"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let w = report["tables"].as_array().unwrap().iter().find(|t| t["table"] == "wordstat_cache").unwrap();
    assert_eq!(w["rows_copied"], 10, "{out}");
    assert_eq!(w["rows_total"], 30, "{out}");

    let (code, out, err) = run(&["verify", "--json"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let r: VerifyReport = serde_json::from_str(&out).unwrap();
    assert!(r.ok && r.id.is_some());

    db.connect()
        .batch_execute("UPDATE wordstat_cache SET value = '{\"i\": -1}' WHERE cache_key = 'k07'")
        .unwrap();
    let (code, out, _) = run(&["verify", "--markdown"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("| wordstat_cache | 30 | 30 |") && out.contains("`k07`: different (value)"),
        "{out}"
    );
    let (code, out, err) = run(&["repair", "--timeout", "60"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("re-enqueued 1 row(s)") && out.contains("repaired"), "{out}");
    let (code, out, err) = run(&["verify"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("MATCH"), "{out}");
}

/// The vector column's bits as SQLite holds them, and as PostgreSQL does (its binary form).
fn vector_bits(db: &common::TestDb, sqlite: &std::path::Path, id: &str) -> (Vec<u32>, Vec<u32>) {
    let lite = rusqlite::Connection::open(sqlite).unwrap();
    let blob: Vec<u8> =
        lite.query_row("SELECT vector FROM embeddings WHERE id = ?1", [id], |r| r.get(0)).unwrap();
    let sqlite_bits = blob.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    let text: String = db
        .connect()
        .query_one("SELECT vector::text FROM embeddings WHERE id = $1::text::uuid", &[&id])
        .unwrap()
        .get(0);
    let pg_bits = text
        .trim_matches(|c| c == '[' || c == ']')
        .split(',')
        .map(|x| x.parse::<f32>().unwrap().to_bits())
        .collect();
    (sqlite_bits, pg_bits)
}

/// Regression (issue 14, item 4): a vector component -0.0 reached PostgreSQL as +0 (rows were
/// applied through jsonb, whose numbers have no negative zero) while SQLite held -0, and verify
/// compared -0 and +0 as equal. Now both stores hold the same bits on every path into PostgreSQL
/// (the replicator, the backfill's JSON method, writes while PostgreSQL is the primary and
/// SQLite's catch-up from it), reads from PostgreSQL return them, and verify compares them bit for
/// bit.
#[test]
fn vectors_are_bit_exact_in_both_stores_and_verify_compares_their_bits() {
    let db = common::migrated_db();
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(&db, dir.path());
    let b = common::bridge(&db, dir.path());
    let want: Vec<u32> = [-0.0f32, 0.0, 1.5, -2.25, 0.1].iter().map(|f| f.to_bits()).collect();
    let e = b
        .insert(
            "embeddings",
            &json!({"text_hash": "neg0", "model": "m", "vector": [-0.0, 0.0, 1.5, -2.25, 0.1]}),
        )
        .unwrap();
    let id = e["id"].as_str().unwrap().to_string();
    b.flush(FLUSH).unwrap();
    assert_eq!(vector_bits(&db, &config.sqlite_path, &id), (want.clone(), want.clone()), "replicated");
    assert!(verify::verify(&config, &fast()).unwrap().ok);

    // Read from PostgreSQL: the sign survives.
    b.set_flag(dualwrite::FlagChange::ReadSource(dualwrite::ReadSource::Postgres), "t", "read pg", true)
        .unwrap();
    let read = b.get("embeddings", &id).unwrap().unwrap();
    assert!(read["vector"][0].as_f64().unwrap().is_sign_negative(), "{read:?}");
    assert_eq!(b.status().unwrap().reads["embeddings"].postgres, 1);

    // +0 in PostgreSQL where SQLite holds -0 is a difference.
    db.connect()
        .execute("UPDATE embeddings SET vector = '[0,0,1.5,-2.25,0.1]' WHERE id = $1::text::uuid", &[&id])
        .unwrap();
    let r = verify::verify(&config, &fast()).unwrap();
    assert!(!r.ok && table(&r, "embeddings").differences == 1, "{}", r.render_text());

    // The backfill's JSON method.
    let json = dualwrite::backfill::BackfillOptions {
        method: dualwrite::backfill::ApplyMethod::Json,
        restart: true,
        ..Default::default()
    };
    db.connect().execute("DELETE FROM embeddings", &[]).unwrap();
    db.connect().execute("DELETE FROM dualwrite.row_revisions WHERE table_name = 'embeddings'", &[]).unwrap();
    dualwrite::backfill::backfill(&config, &json, &mut dualwrite::backfill::NoProgress).unwrap();
    assert_eq!(vector_bits(&db, &config.sqlite_path, &id), (want.clone(), want.clone()), "backfilled");
    assert!(verify::verify(&config, &fast()).unwrap().ok);

    // PostgreSQL as the primary: written there first, SQLite follows from the change capture.
    b.set_flag(
        dualwrite::FlagChange::WriteMode(dualwrite::WriteMode::PostgresPrimary),
        "t",
        "pg first",
        true,
    )
    .unwrap();
    let v2 = [-0.0f32, -1.0, 0.0];
    b.patch("embeddings", &id, &json!({"vector": [-0.0, -1.0, 0.0]})).unwrap();
    // SQLite follows from the change capture, in the background.
    b.wait_for_sqlite(std::time::Duration::from_secs(60)).unwrap();
    let want2: Vec<u32> = v2.iter().map(|f| f.to_bits()).collect();
    assert_eq!(
        vector_bits(&db, &config.sqlite_path, &id),
        (want2.clone(), want2),
        "written to PostgreSQL first"
    );
    b.rollback_to_sqlite("t", "back", false).unwrap();
    b.set_flag(dualwrite::FlagChange::WriteMode(dualwrite::WriteMode::Dual), "t", "dual", true).unwrap();
    b.flush(FLUSH).unwrap();
    assert!(verify::verify(&config, &fast()).unwrap().ok);
    common::assert_stores_equal(&b, &db);
}

/// JSON compared across the two stores' own spellings (PostgreSQL's jsonb output, SQLite's stored
/// text): the same value in another member order, spacing, escape or number spelling is equal;
/// values swapped between keys or between nested objects, and arrays in another order, differ.
#[test]
fn json_compares_as_values_across_jsonb_output_and_sqlite_text() {
    let db = common::migrated_db();
    let dir = tempfile::tempdir().unwrap();
    let b = common::bridge(&db, dir.path());
    let config = common::config(&db, dir.path());
    // (key, SQLite text, PostgreSQL jsonb, equal)
    let cases = [
        (
            "reordered",
            r#"{"b": 2, "a": 1, "c": {"y": [1, 2], "x": "é"}}"#,
            r#"{"a":1,"b":2,"c":{"x":"\u00e9","y":[1,2.0]}}"#,
            true,
        ),
        (
            "escaped-key",
            r#"{"\u0061b": {"z": true}, "c": "tab\tq\"/"}"#,
            r#"{"ab": {"z": true}, "c": "tab\u0009q\"\/"}"#,
            true,
        ),
        ("repeated-key", r#"{"a": 1, "a": 2}"#, r#"{"a": 2}"#, true),
        (
            "integers",
            r#"{"n": 100, "m": -0, "k": -42, "big": 12345678901234567890}"#,
            r#"{"n": 1e2, "m": 0, "k": -42.0, "big": 12345678901234567890}"#,
            true,
        ),
        ("swapped-values", r#"{"a": 1, "b": 2}"#, r#"{"a": 2, "b": 1}"#, false),
        ("swapped-nested", r#"{"x": {"a": 1}, "y": {"b": 2}}"#, r#"{"x": {"b": 2}, "y": {"a": 1}}"#, false),
        ("array-order", r#"{"a": [1, 2]}"#, r#"{"a": [2, 1]}"#, false),
        ("objects-in-array", r#"[{"a": 1}, {"b": 2}]"#, r#"[{"b": 2}, {"a": 1}]"#, false),
        ("key-value-boundary", r#"{"ab": "c"}"#, r#"{"a": "bc"}"#, false),
        ("member-added", r#"{"a": 1}"#, r#"{"a": 1, "b": null}"#, false),
        ("last-digit", r#"{"n": 123456789012345678}"#, r#"{"n": 123456789012345679}"#, false),
        ("repeated-key-first", r#"{"a": 2, "a": 1}"#, r#"{"a": 2}"#, false),
    ];
    for (key, ..) in &cases {
        b.insert(
            "wordstat_cache",
            &json!({"cache_key": key, "value": {}, "expires_at": "2030-01-01T00:00:00Z"}),
        )
        .unwrap();
    }
    b.flush(FLUSH).unwrap();
    b.shutdown(Duration::from_secs(5));
    let lite = dualwrite::store::sqlite::open(&dir.path().join("monolith.sqlite3")).unwrap();
    let mut pg = db.connect();
    for (key, text, jsonb, _) in &cases {
        lite.execute(
            "UPDATE wordstat_cache SET value = ?1 WHERE cache_key = ?2",
            rusqlite::params![text, key],
        )
        .unwrap();
        pg.execute("UPDATE wordstat_cache SET value = $1::text::jsonb WHERE cache_key = $2", &[jsonb, key])
            .unwrap();
    }
    let options = VerifyOptions { tables: Some(vec!["wordstat_cache".into()]), ..fast() };
    let r = verify::verify(&config, &options).unwrap();
    let mut different: Vec<&str> =
        table(&r, "wordstat_cache").different.iter().map(|d| d.key.as_str()).collect();
    different.sort();
    let mut want: Vec<&str> = cases.iter().filter(|c| !c.3).map(|c| c.0).collect();
    want.sort();
    assert_eq!(different, want, "{}", r.render_text());
}
