//! Legacy data: a test-made monolith file with every messy case SQLite's loose typing lets in
//! (hundreds of rows per case) is profiled by preflight (counts asserted exactly), converted value
//! by value (an epoch-ms timestamp lands on its exact microsecond, also in PostgreSQL), adopted
//! without losing or changing a row that could be kept, and its unconvertible rows become rejects.
//!
//! PostgreSQL tests: `pg_virtualenv -t -v 15 cargo test --test legacy`.

mod common;

use chrono::{DateTime, SecondsFormat, Utc};
use dualwrite::legacy::{
    self, convert_row, preflight, AdoptOptions, ColumnRules, ExtraColumns, Overrides, PreflightOptions,
    PreflightReport, RejectStage, RejectStore, RejectedRow, Unconvertible,
};
use dualwrite::schema::{self, SqlValue, Table};
use rusqlite::types::Value as V;
use rusqlite::Connection;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// 2024-05-01T10:00:00Z.
const BASE_S: i64 = 1_714_557_600;

fn uid(table: u128, case: u128, i: u128) -> String {
    // "4abc": every id has letters, so its upper-case spelling differs.
    uuid::Uuid::from_u128((table << 96) | (case << 64) | (0x4abc << 48) | i).hyphenated().to_string()
}

fn iso(us: i64) -> String {
    DateTime::<Utc>::from_timestamp_micros(us).unwrap().to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// A value the conversion must produce for (table, rowid, column).
struct Expect {
    table: &'static str,
    rowid: i64,
    column: &'static str,
    value: Value,
}

struct Legacy {
    expects: Vec<Expect>,
}

/// The monolith's file: its own DDL (loose or no types, no CHECKs, no foreign keys), a missing
/// column (`users.role`, `job_logs.step`), an extra one (`users.nickname`), a legacy index, a table
/// of its own (`sessions`) and a view over `users`.
fn build_legacy(path: &Path) -> Legacy {
    let mut c = Connection::open(path).unwrap();
    c.execute_batch(
        "CREATE TABLE users (id TEXT PRIMARY KEY, email TEXT, display_name TEXT, created_at, updated_at TEXT,
                             disabled_at TEXT, nickname TEXT);
         CREATE INDEX users_email ON users (email);
         CREATE TABLE jobs (id TEXT PRIMARY KEY, type TEXT, payload TEXT, status TEXT, progress, owner_id TEXT,
                            queued_at, started_at TEXT, finished_at TEXT, priority TEXT);
         CREATE TABLE job_logs (id TEXT PRIMARY KEY, job_id TEXT, level TEXT, message TEXT, context TEXT, created_at);
         CREATE TABLE prompts (id TEXT PRIMARY KEY, key TEXT, body TEXT, version TEXT, updated_by TEXT, updated_at TEXT);
         CREATE TABLE api_keys (id, owner_id, provider, secret_ciphertext, metadata, rotated_at, created_at, updated_at);
         CREATE TABLE sessions (id INTEGER PRIMARY KEY, user_id TEXT, token TEXT);
         CREATE VIEW active_users AS SELECT id, email FROM users WHERE disabled_at IS NULL;",
    )
    .unwrap();
    let tx = c.transaction().unwrap();
    let mut ex = Vec::new();
    let mut push = |table, rowid, column, value: Value| ex.push(Expect { table, rowid, column, value });
    let user = |case: u128, i: u128| uid(1, case, i);
    {
        let mut ins = tx
            .prepare("INSERT INTO users (id, email, display_name, created_at, updated_at, disabled_at, nickname) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")
            .unwrap();
        let mut rowid = 0;
        let mut add = |vals: [V; 7]| {
            ins.execute(rusqlite::params_from_iter(vals)).unwrap();
            rowid += 1;
            rowid
        };
        // a: canonical ids, epoch seconds (INTEGER), canonical updated_at, NULL disabled_at.
        for i in 0..300u128 {
            let s = BASE_S + i as i64 * 3_601;
            let upd = (BASE_S + i as i64 * 60) * 1_000_000 + i as i64;
            let r = add([
                V::Text(user(1, i)),
                V::Text(format!("user{i}@example.com")),
                V::Text(format!("User {i}")),
                V::Integer(s),
                V::Text(iso(upd)),
                V::Null,
                V::Text(format!("nick{i}")),
            ]);
            push("users", r, "created_at", json!(iso(s * 1_000_000)));
            push("users", r, "updated_at", json!(iso(upd)));
            push("users", r, "role", json!("member"));
        }
        // b: upper-case ids, mixed-case emails, epoch milliseconds, "YYYY-MM-DD HH:MM:SS.fff", ''.
        for i in 0..200u128 {
            let ms = BASE_S * 1000 + i as i64 * 86_400_123;
            let upd_ms = BASE_S * 1000 + i as i64 * 60_000 + 123;
            let naive =
                DateTime::<Utc>::from_timestamp_millis(upd_ms).unwrap().format("%Y-%m-%d %H:%M:%S%.3f");
            let r = add([
                V::Text(user(2, i).to_uppercase()),
                V::Text(format!("User.B{i}@Example.com")),
                V::Text(format!("B {i}")),
                V::Integer(ms),
                V::Text(naive.to_string()),
                V::Text(String::new()),
                V::Null,
            ]);
            push("users", r, "id", json!(user(2, i)));
            push("users", r, "email", json!(format!("user.b{i}@example.com")));
            push("users", r, "created_at", json!(iso(ms * 1000)));
            push("users", r, "updated_at", json!(iso(upd_ms * 1000)));
            push("users", r, "disabled_at", Value::Null);
        }
        // c: braced ids, epoch microseconds, "YYYY-MM-DDTHH:MM:SS" naive, RFC 3339 at +02:00.
        for i in 0..100u128 {
            let us = BASE_S * 1_000_000 + i as i64 * 1_000_003;
            let upd = BASE_S + i as i64 * 3600;
            let dis_us = (BASE_S + 86_400) * 1_000_000 + i as i64 * 7;
            let local = DateTime::<Utc>::from_timestamp_micros(dis_us + 7_200_000_000).unwrap();
            let r = add([
                V::Text(format!("{{{}}}", user(3, i))),
                V::Text(format!("user.c{i}@example.com")),
                V::Text(format!("C {i}")),
                V::Integer(us),
                V::Text(
                    DateTime::<Utc>::from_timestamp(upd, 0).unwrap().format("%Y-%m-%dT%H:%M:%S").to_string(),
                ),
                V::Text(format!("{}+02:00", local.format("%Y-%m-%dT%H:%M:%S%.6f"))),
                V::Null,
            ]);
            push("users", r, "id", json!(user(3, i)));
            push("users", r, "created_at", json!(iso(us)));
            push("users", r, "updated_at", json!(iso(upd * 1_000_000)));
            push("users", r, "disabled_at", json!(iso(dis_us)));
        }
        // d: ids that are not uuids (rejected), Julian days, RFC 3339 with Z.
        for i in 0..150u128 {
            add([
                V::Text(format!("legacy-{i}")),
                V::Text(format!("user.d{i}@example.com")),
                V::Text(format!("D {i}")),
                V::Real(2_460_431.5 + i as f64 * 0.25),
                V::Text(format!("2024-05-01T10:{:02}:00Z", i % 60)),
                V::Null,
                V::Null,
            ]);
        }
        // e: the emails of a, upper-cased: duplicates once lower-cased (rejected).
        for i in 0..100u128 {
            add([
                V::Text(user(5, i)),
                V::Text(format!("USER{i}@EXAMPLE.COM")),
                V::Text(format!("E {i}")),
                V::Text(iso(BASE_S * 1_000_000)),
                V::Text(iso(BASE_S * 1_000_000)),
                V::Null,
                V::Null,
            ]);
        }
    }
    {
        let mut ins = tx
            .prepare("INSERT INTO jobs (id, type, payload, status, progress, owner_id, queued_at, started_at, finished_at, priority) VALUES (?1, 'crawl', ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'normal')")
            .unwrap();
        let mut rowid = 0;
        let mut add = |vals: [V; 8]| {
            ins.execute(rusqlite::params_from_iter(vals)).unwrap();
            rowid += 1;
            rowid
        };
        let job = |case: u128, i: u128| uid(2, case, i);
        let ms = |i: i64| V::Integer(BASE_S * 1000 + i);
        // j1: JSON payloads, integer progress, epoch ms (INTEGER), '' started_at.
        for i in 0..300u128 {
            let q = BASE_S * 1000 + i as i64 * 1_001;
            let r = add([
                V::Text(job(1, i)),
                V::Text(format!("{{\"n\": {i}}}")),
                V::Text("queued".into()),
                V::Integer(i as i64 % 101),
                V::Text(user(1, i)),
                V::Integer(q),
                V::Text(String::new()),
                V::Null,
            ]);
            push("jobs", r, "queued_at", json!(iso(q * 1000)));
            push("jobs", r, "payload", json!({ "n": i as u64 }));
            push("jobs", r, "progress", json!((i % 101).to_string()));
            push("jobs", r, "started_at", Value::Null);
            push("jobs", r, "owner_id", json!(user(1, i)));
        }
        // j2: plain-text payloads, numbers as text, upper-case owner ids, epoch ms as text.
        let decimals = [(" 7 ", "7"), ("+3", "3"), ("12.50", "12.50"), ("007.5", "7.5")];
        for i in 0..200u128 {
            let q = BASE_S * 1000 + 500_000 + i as i64 * 7;
            let (given, want) = decimals[i as usize % 4];
            let r = add([
                V::Text(job(2, i)),
                V::Text(format!("crawl page {i}")),
                V::Text("running".into()),
                V::Text(given.into()),
                V::Text(user(2, i).to_uppercase()),
                V::Text(q.to_string()),
                V::Text(iso(BASE_S * 1_000_000)),
                V::Null,
            ]);
            push("jobs", r, "queued_at", json!(iso(q * 1000)));
            push("jobs", r, "payload", json!(format!("crawl page {i}")));
            push("jobs", r, "progress", json!(want));
            push("jobs", r, "owner_id", json!(user(2, i)));
        }
        // j3: progress that is not a number (rejected).
        for i in 0..150u128 {
            add([
                V::Text(job(3, i)),
                V::Text("{}".into()),
                V::Text("queued".into()),
                V::Text("abc".into()),
                V::Null,
                ms(i as i64),
                V::Null,
                V::Null,
            ]);
        }
        // j4: owners that do not exist (orphans).
        for i in 0..150u128 {
            add([
                V::Text(job(4, i)),
                V::Text("{}".into()),
                V::Text("queued".into()),
                V::Integer(0),
                V::Text(uid(9, 9, i)),
                ms(i as i64),
                V::Null,
                V::Null,
            ]);
        }
        // j5: owners that are duplicate users, themselves rejected (orphans: parent rejected).
        for i in 0..100u128 {
            add([
                V::Text(job(5, i)),
                V::Text("{}".into()),
                V::Text("queued".into()),
                V::Integer(0),
                V::Text(user(5, i)),
                ms(i as i64),
                V::Null,
                V::Null,
            ]);
        }
        // j6: broken JSON (rejected).
        for i in 0..100u128 {
            add([
                V::Text(job(6, i)),
                V::Text("{\"broken\": ".into()),
                V::Text("queued".into()),
                V::Integer(0),
                V::Null,
                ms(i as i64),
                V::Null,
                V::Null,
            ]);
        }
        // j7: owners that are not uuids (rejected).
        for i in 0..100u128 {
            add([
                V::Text(job(7, i)),
                V::Text("{}".into()),
                V::Text("queued".into()),
                V::Integer(0),
                V::Text(format!("legacy-{i}")),
                ms(i as i64),
                V::Null,
                V::Null,
            ]);
        }
        // j8: '' payloads (→ the default), epoch seconds as REAL with a fraction and as text.
        for i in 0..100u128 {
            let r = add([
                V::Text(job(8, i)),
                V::Text(String::new()),
                V::Text("queued".into()),
                V::Integer(0),
                V::Null,
                V::Real((BASE_S + i as i64) as f64 + 0.25),
                V::Text(String::new()),
                V::Text((BASE_S + i as i64).to_string()),
            ]);
            push("jobs", r, "payload", json!({}));
            push("jobs", r, "queued_at", json!(iso((BASE_S + i as i64) * 1_000_000 + 250_000)));
            push("jobs", r, "finished_at", json!(iso((BASE_S + i as i64) * 1_000_000)));
            push("jobs", r, "started_at", Value::Null);
        }
        let mut logs = tx
            .prepare("INSERT INTO job_logs (id, job_id, level, message, context, created_at) VALUES (?1, ?2, 'info', 'm', ?3, ?4)")
            .unwrap();
        let mut jd_sql = tx.prepare("SELECT strftime('%Y-%m-%dT%H:%M:%fZ', ?1)").unwrap();
        // l1: plain-text context, Julian days (REAL).
        for i in 0..200u128 {
            let jd = 2_460_431.5 + i as f64 / 1024.0;
            logs.execute(rusqlite::params![uid(3, 1, i), job(1, i), "retrying", jd]).unwrap();
            // SQLite's own reading of the Julian day, to the millisecond.
            let sqlite_says: String = jd_sql.query_row([jd], |r| r.get(0)).unwrap();
            push("job_logs", i as i64 + 1, "created_at", json!(sqlite_says.replace('Z', "000Z")));
            push("job_logs", i as i64 + 1, "context", json!("retrying"));
            push("job_logs", i as i64 + 1, "step", Value::Null);
        }
        // l2: space-separated naive timestamps, jobs that are rejected (orphans).
        for i in 0..200u128 {
            let t = DateTime::<Utc>::from_timestamp(BASE_S + i as i64, 0)
                .unwrap()
                .format("%Y-%m-%d %H:%M:%S")
                .to_string();
            logs.execute(rusqlite::params![uid(3, 2, i), job(3, i % 150), "{\"k\":1}", t]).unwrap();
        }
    }
    {
        let mut p = tx
            .prepare("INSERT INTO prompts (id, key, body, version, updated_by, updated_at) VALUES (?1, ?2, 'body', ?3, ?4, ?5)")
            .unwrap();
        for i in 0..200u128 {
            p.execute(rusqlite::params![
                uid(4, 1, i),
                format!("prompt-{i}"),
                "3",
                user(1, i),
                format!("2024-05-01T10:{:02}:00Z", i % 60)
            ])
            .unwrap();
            push("prompts", i as i64 + 1, "version", json!(3));
            push(
                "prompts",
                i as i64 + 1,
                "updated_at",
                json!(iso((BASE_S + (i as i64 % 60) * 60) * 1_000_000)),
            );
        }
        // p2: version 0 (rejected: versions start at 1).
        for i in 0..100u128 {
            p.execute(rusqlite::params![
                uid(4, 2, i),
                format!("other-{i}"),
                "0",
                Option::<String>::None,
                "2024-05-01T10:00:00Z"
            ])
            .unwrap();
        }
        // p3: (key, version) of p1 again (duplicates).
        for i in 0..100u128 {
            p.execute(rusqlite::params![
                uid(4, 3, i),
                format!("prompt-{i}"),
                "3",
                Option::<String>::None,
                "2024-05-01T10:00:00Z"
            ])
            .unwrap();
        }
        let mut k = tx.prepare("INSERT INTO api_keys VALUES (?1, ?2, ?3, ?4, ?5, NULL, ?6, ?6)").unwrap();
        let now = iso(BASE_S * 1_000_000);
        for i in 0..100u128 {
            let secret = vec![0xc3u8, i as u8, 0x0d, 0x04];
            k.execute(rusqlite::params![
                uid(5, 1, i),
                user(1, i),
                "openai",
                secret.clone(),
                format!("{{\"tier\": {i}}}"),
                now
            ])
            .unwrap();
            push(
                "api_keys",
                i as i64 + 1,
                "secret_ciphertext",
                json!(format!("\\x{}", hex::encode(&secret))),
            );
        }
        // k2: a plaintext secret in the bytea column (rejected; never shown).
        for i in 0..100u128 {
            k.execute(rusqlite::params![
                uid(5, 2, i),
                user(1, 100 + i),
                "serp",
                format!("sk-plaintext-{i}"),
                "{}",
                now
            ])
            .unwrap();
        }
        let mut s = tx.prepare("INSERT INTO sessions (user_id, token) VALUES (?1, ?2)").unwrap();
        for i in 0..50u128 {
            s.execute(rusqlite::params![user(1, i), format!("tok{i}")]).unwrap();
        }
    }
    tx.commit().unwrap();
    Legacy { expects: ex }
}

/// The raw rows of a registry table as the file holds them: (rowid, values in registry order with
/// NULL for absent columns).
fn raw_rows(conn: &Connection, table: &Table) -> Vec<(i64, Vec<V>)> {
    let present: Vec<String> = conn
        .prepare(&format!("SELECT name FROM pragma_table_info('{}')", table.name))
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let cols: Vec<String> = table
        .columns
        .iter()
        .map(|c| if present.iter().any(|p| p == c.name) { c.name.to_string() } else { "NULL".into() })
        .collect();
    let sql = format!("SELECT rowid, {} FROM {} ORDER BY rowid", cols.join(", "), table.name);
    let mut stmt = conn.prepare(&sql).unwrap();
    let n = table.columns.len();
    stmt.query_map([], |r| Ok((r.get(0)?, (1..=n).map(|i| r.get::<_, V>(i).unwrap()).collect())))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Every table's rows (all columns, with rowid) and the whole schema, to prove nothing changed.
/// The schema (name, SQL) and every table's rows.
type Dump = (Vec<(String, String)>, BTreeMap<String, Vec<Vec<V>>>);

fn dump(conn: &Connection) -> Dump {
    let schema: Vec<(String, String)> = conn
        .prepare("SELECT name, coalesce(sql, '') FROM sqlite_master ORDER BY name")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut rows = BTreeMap::new();
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for t in tables {
        let n: usize = conn
            .query_row(&format!("SELECT count(*) FROM pragma_table_info('{t}')"), [], |r| r.get(0))
            .unwrap();
        let mut stmt = conn.prepare(&format!("SELECT rowid, * FROM \"{t}\" ORDER BY rowid")).unwrap();
        let all = stmt
            .query_map([], |r| Ok((0..=n).map(|i| r.get::<_, V>(i).unwrap()).collect::<Vec<_>>()))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        rows.insert(t, all);
    }
    (schema, rows)
}

fn table_report<'a>(r: &'a PreflightReport, t: &str) -> &'a legacy::preflight::TableReport {
    r.tables.iter().find(|x| x.table == t).unwrap()
}

fn column<'a>(r: &'a PreflightReport, t: &str, c: &str) -> &'a legacy::preflight::ColumnReport {
    table_report(r, t).columns.iter().find(|x| x.column == c).unwrap()
}

fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

fn types(null: u64, integer: u64, real: u64, text: u64, blob: u64) -> BTreeMap<String, u64> {
    counts(&[("null", null), ("integer", integer), ("real", real), ("text", text), ("blob", blob)])
}

#[test]
fn preflight_profiles_the_legacy_file_exactly() {
    let (_d, path) = common::temp_sqlite();
    build_legacy(&path);
    let bytes_before = std::fs::read(&path).unwrap();
    let r = preflight(&path, &PreflightOptions::default()).unwrap();
    // Read-only: not one byte of the file changed, and no journal or WAL was left behind.
    assert_eq!(std::fs::read(&path).unwrap(), bytes_before);
    assert!(!path.with_extension("sqlite3-wal").exists());

    assert_eq!(r.state, "legacy");
    assert_eq!(r.schema_version, 0);
    assert_eq!((r.rows, r.rows_rejected, r.rows_held_out), (3050, 1350, 0));
    assert!(!r.clean);
    assert_eq!(r.exit_code(), 3);
    assert_eq!(r.blocking.len(), 1, "{:?}", r.blocking);
    assert!(r.blocking[0].contains("users") && r.blocking[0].contains("nickname"), "{:?}", r.blocking);

    // users
    let u = table_report(&r, "users");
    assert_eq!((u.rows, u.rows_clean, u.rows_converted, u.rows_rejected), (850, 600, 600, 250));
    assert_eq!(u.missing_columns, vec!["role"]);
    assert_eq!(u.extra_columns, vec!["nickname"]);
    assert_eq!(u.duplicates.len(), 1);
    assert_eq!((u.duplicates[0].columns.clone(), u.duplicates[0].rows), (vec!["email".to_string()], 100));
    assert_eq!(u.duplicates[0].examples.len(), 5);
    assert_eq!(
        u.duplicates[0].examples[0].reason,
        "duplicate unique value (email) of the row kept with rowid 1"
    );
    let id = column(&r, "users", "id");
    assert_eq!(id.types, types(0, 0, 0, 850, 0));
    assert_eq!(
        id.formats,
        counts(&[("canonical", 400), ("upper_case", 200), ("braced", 100), ("not_uuid", 150)])
    );
    assert_eq!((id.converted, id.unconvertible, id.examples.len()), (300, 150, 5));
    assert_eq!(id.examples[0].key, "legacy-0");
    assert_eq!(id.examples[0].value, "\"legacy-0\"");
    assert_eq!(id.examples[0].reason, "\"legacy-0\" is not a uuid");
    let email = column(&r, "users", "email");
    assert_eq!(email.formats, counts(&[("text", 550), ("case_folded", 300)]));
    assert_eq!(email.converted, 300);
    let created = column(&r, "users", "created_at");
    assert_eq!(created.types, types(0, 600, 150, 100, 0));
    assert_eq!(
        created.formats,
        counts(&[
            ("epoch_s", 300),
            ("epoch_ms", 200),
            ("epoch_us", 100),
            ("julian_day", 150),
            ("canonical", 100)
        ])
    );
    assert_eq!((created.converted, created.unconvertible), (750, 0));
    let updated = column(&r, "users", "updated_at");
    assert_eq!(
        updated.formats,
        counts(&[("canonical", 400), ("naive_space", 200), ("naive_t", 100), ("rfc3339", 150)])
    );
    assert_eq!(updated.converted, 450);
    let disabled = column(&r, "users", "disabled_at");
    assert_eq!(disabled.types, types(550, 0, 0, 300, 0));
    assert_eq!((disabled.nulls, disabled.empty_strings, disabled.converted), (550, 200, 300));
    assert_eq!(disabled.formats, counts(&[("rfc3339", 100)]));
    let role = column(&r, "users", "role");
    assert!(!role.present);
    assert_eq!(role.types, types(0, 0, 0, 0, 0));
    assert_eq!(role.converted, 850);
    assert!(role.rule.contains("absent: filled with \"member\""), "{}", role.rule);
    assert!(created.rule.contains("naive as UTC"), "{}", created.rule);

    // jobs
    let j = table_report(&r, "jobs");
    assert_eq!((j.rows, j.rows_clean, j.rows_converted, j.rows_rejected), (1200, 600, 600, 600));
    let payload = column(&r, "jobs", "payload");
    assert_eq!(payload.formats, counts(&[("json", 800), ("plain_text", 200), ("invalid_json", 100)]));
    assert_eq!((payload.empty_strings, payload.converted, payload.unconvertible), (100, 300, 100));
    assert!(payload.examples[0].reason.starts_with("is not valid JSON"), "{:?}", payload.examples[0]);
    let progress = column(&r, "jobs", "progress");
    assert_eq!(progress.types, types(0, 850, 0, 350, 0));
    assert_eq!(
        progress.formats,
        counts(&[("integer", 850), ("decimal_text", 150), ("decimal", 50), ("not_a_number", 150)])
    );
    assert_eq!((progress.converted, progress.unconvertible), (1000, 150));
    let owner = column(&r, "jobs", "owner_id");
    assert_eq!(owner.types, types(350, 0, 0, 850, 0));
    assert_eq!(owner.formats, counts(&[("canonical", 550), ("upper_case", 200), ("not_uuid", 100)]));
    assert_eq!((owner.converted, owner.unconvertible), (200, 100));
    let queued = column(&r, "jobs", "queued_at");
    assert_eq!(queued.types, types(0, 900, 100, 200, 0));
    assert_eq!(queued.formats, counts(&[("epoch_ms", 1100), ("epoch_s", 100)]));
    assert_eq!(queued.converted, 1200);
    let started = column(&r, "jobs", "started_at");
    assert_eq!((started.nulls, started.empty_strings, started.converted), (600, 400, 400));
    assert_eq!(started.formats, counts(&[("canonical", 200)]));
    assert_eq!(column(&r, "jobs", "finished_at").formats, counts(&[("epoch_s", 100)]));
    assert_eq!(j.orphans.len(), 1);
    let o = &j.orphans[0];
    assert_eq!((o.column.as_str(), o.references.as_str()), ("owner_id", "users"));
    assert_eq!((o.rows, o.parent_missing, o.parent_rejected), (250, 150, 100));

    // job_logs
    let l = table_report(&r, "job_logs");
    assert_eq!((l.rows, l.rows_clean, l.rows_rejected), (400, 200, 200));
    assert_eq!(l.missing_columns, vec!["step"]);
    assert_eq!(column(&r, "job_logs", "context").formats, counts(&[("plain_text", 200), ("json", 200)]));
    assert_eq!(
        column(&r, "job_logs", "created_at").formats,
        counts(&[("julian_day", 200), ("naive_space", 200)])
    );
    assert_eq!((l.orphans[0].rows, l.orphans[0].parent_rejected), (200, 200));

    // prompts
    let p = table_report(&r, "prompts");
    assert_eq!((p.rows, p.rows_clean, p.rows_rejected), (400, 200, 200));
    let version = column(&r, "prompts", "version");
    assert_eq!(version.formats, counts(&[("integer_text", 400)]));
    assert_eq!((version.converted, version.unconvertible), (300, 100));
    assert_eq!(version.examples[0].reason, "must be at least 1");
    assert_eq!(
        (p.duplicates[0].columns.clone(), p.duplicates[0].rows),
        (vec!["key".into(), "version".into()], 100)
    );

    // api_keys: the plaintext secrets are counted, never shown.
    let k = table_report(&r, "api_keys");
    assert_eq!((k.rows, k.rows_clean, k.rows_rejected), (200, 100, 100));
    let secret = column(&r, "api_keys", "secret_ciphertext");
    assert_eq!(secret.types, types(0, 0, 0, 100, 100));
    assert_eq!(secret.formats, counts(&[("blob", 100), ("not_bytes", 100)]));
    assert!(secret.examples.iter().all(|e| e.value == "<redacted>"));
    for text in [serde_json::to_string(&r).unwrap(), r.render_text(), r.render_markdown()] {
        assert!(!text.contains("sk-plaintext"), "a secret was printed");
    }
    // Tables the monolith never had.
    assert!(!table_report(&r, "pages").present);
    let text = r.render_text();
    assert!(text.contains("users: 850 rows, 600 clean (600 converted), 250 would be rejected"), "{text}");
    assert!(text.contains("NOT clean: 1350 of 3050 rows would be rejected"), "{text}");
    let md = r.render_markdown();
    assert!(md.contains("| queued_at | timestamp with time zone |"), "{md}");

    // Extra columns set aside: no longer blocking.
    let opts = PreflightOptions { extra_columns_allowed: true, ..Default::default() };
    assert!(preflight(&path, &opts).unwrap().blocking.is_empty());
}

#[test]
fn every_convertible_value_is_converted_exactly() {
    let (_d, path) = common::temp_sqlite();
    let legacy = build_legacy(&path);
    let conn = Connection::open(&path).unwrap();
    let mut rows: HashMap<(&str, i64), serde_json::Map<String, Value>> = HashMap::new();
    for name in ["users", "jobs", "job_logs", "prompts", "api_keys"] {
        let table = schema::table(name).unwrap();
        let rules = ColumnRules::new(table, &Overrides::none()).with_absent(if name == "users" {
            &["role"]
        } else if name == "job_logs" {
            &["step"]
        } else {
            &[]
        });
        for (rowid, raw) in raw_rows(&conn, table) {
            if let Ok(row) = convert_row(table, &raw, &rules) {
                // What the bridge itself accepts: converting is the same as validating the result.
                let validated =
                    schema::validate_row(table, &Value::Object(row.clone()), schema::RowMode::Insert)
                        .unwrap();
                assert_eq!(validated, row);
                rows.insert((name, rowid), row);
            }
        }
    }
    assert!(legacy.expects.len() > 3000);
    for e in &legacy.expects {
        let row = rows
            .get(&(e.table, e.rowid))
            .unwrap_or_else(|| panic!("{} rowid {} did not convert", e.table, e.rowid));
        assert_eq!(row[e.column], e.value, "{}.{} rowid {}", e.table, e.column, e.rowid);
    }
    // The example the issue names: an epoch-ms value lands on its exact microsecond.
    let job = &rows[&("jobs", 2)];
    assert_eq!(job["queued_at"], "2024-05-01T10:00:01.001000Z");
}

#[test]
fn conversions_can_be_pinned_per_column() {
    let table = schema::table("jobs").unwrap();
    let row = |queued: V| {
        vec![
            V::Text(uid(2, 1, 1)),
            V::Text("crawl".into()),
            V::Text("{}".into()),
            V::Text("queued".into()),
            V::Text("0".into()),
            V::Null,
            queued,
            V::Null,
            V::Null,
            V::Text("normal".into()),
        ]
    };
    let auto = ColumnRules::new(table, &Overrides::none());
    // 50,000,000,000 by magnitude is epoch seconds (the year 3554); pinned, it is milliseconds.
    let w = convert_row(table, &row(V::Integer(50_000_000_000)), &auto).unwrap();
    assert_eq!(w["queued_at"], "3554-06-09T16:53:20.000000Z");
    let overrides =
        Overrides::parse(&[("jobs.queued_at".to_string(), "epoch_ms".to_string())].into()).unwrap();
    let pinned = ColumnRules::new(table, &overrides);
    let w = convert_row(table, &row(V::Integer(50_000_000_000)), &pinned).unwrap();
    assert_eq!(w["queued_at"], "1971-08-02T16:53:20.000000Z");
    assert!(pinned
        .rule("queued_at")
        .unwrap()
        .describe(table.column("queued_at").unwrap())
        .contains("numbers as epoch_ms"));
    // Ambiguous without a pin: named, with the hint.
    let e = convert_row(table, &row(V::Integer(86_400)), &auto).unwrap_err();
    assert_eq!(e[0].column.as_deref(), Some("queued_at"));
    assert!(e[0].reason.contains("pin the column's unit in [conversions]"), "{}", e[0].reason);
    let strict = ColumnRules::new(
        table,
        &Overrides::parse(&[("jobs.queued_at".to_string(), "strict".to_string())].into()).unwrap(),
    );
    assert!(convert_row(table, &row(V::Integer(1_714_557_600_000)), &strict).is_err());
    assert!(convert_row(table, &row(V::Text("2024-05-01T10:00:00.000000Z".into())), &strict).is_ok());

    // The report shows the configured rule.
    let (_d, path) = common::temp_sqlite();
    build_legacy(&path);
    let r = preflight(&path, &PreflightOptions { overrides, ..Default::default() }).unwrap();
    let q = column(&r, "jobs", "queued_at");
    assert!(q.configured && q.rule.contains("(configured)"), "{}", q.rule);
    // Every epoch-ms value is still read as milliseconds; the epoch-seconds REALs now are too.
    assert_eq!(q.formats, counts(&[("epoch_ms", 1200)]));
}

/// The registry's CHECK rules, which the conversion applies (`schema::check_rule`), refuse what the
/// real SQLite schema refuses, so the two cannot drift apart.
#[test]
fn mirrored_checks_match_the_schema() {
    let (_d, path) = common::temp_sqlite();
    let mut c = Connection::open(&path).unwrap();
    dualwrite::migrate_sqlite(&mut c).unwrap();
    let cases: &[(&str, &str, V)] = &[
        ("jobs", "type", V::Text(String::new())),
        ("api_keys", "provider", V::Text(String::new())),
        ("prompts", "key", V::Text(String::new())),
        ("audit_events", "action", V::Text(String::new())),
        ("jobs", "progress", V::Text("100.5".into())),
        ("jobs", "progress", V::Text("-1".into())),
        ("generated_text", "version", V::Integer(0)),
        ("prompts", "version", V::Integer(0)),
    ];
    for (t, col, bad) in cases {
        let table = schema::table(t).unwrap();
        let rules = ColumnRules::new(table, &Overrides::none()).with_absent(&[]);
        let column = table.column(col).unwrap();
        // A valid row, then the one bad value.
        let wire = schema::validate_row(table, &minimal_row(t), schema::RowMode::Insert).unwrap();
        let mut values: Vec<V> = legacy::to_sqlite_values(table, &wire)
            .unwrap()
            .into_iter()
            .map(|v| match v {
                SqlValue::Null => V::Null,
                SqlValue::Integer(i) => V::Integer(i),
                SqlValue::Text(s) => V::Text(s),
                SqlValue::Blob(b) => V::Blob(b),
            })
            .collect();
        let i = table.columns.iter().position(|c| c.name == column.name).unwrap();
        values[i] = bad.clone();
        let rejects = convert_row(table, &values, &rules).unwrap_err();
        assert_eq!(rejects[0].column.as_deref(), Some(*col), "{t}.{col}");
        let sql = format!(
            "INSERT INTO {t} ({}) VALUES ({})",
            table.column_names().collect::<Vec<_>>().join(", "),
            (1..=values.len()).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ")
        );
        c.execute_batch("PRAGMA foreign_keys = OFF").unwrap();
        let err = c.execute(&sql, rusqlite::params_from_iter(values.iter())).unwrap_err().to_string();
        assert!(err.contains("CHECK constraint failed"), "{t}.{col} = {bad:?}: {err}");
    }
}

fn minimal_row(t: &str) -> Value {
    let u = uid(7, 7, 7);
    match t {
        "jobs" => json!({"type": "x"}),
        "api_keys" => json!({"owner_id": u, "provider": "p", "secret_ciphertext": "\\x00"}),
        "prompts" => json!({"key": "k", "body": "b", "version": 1}),
        "audit_events" => json!({"action": "a", "entity": "e"}),
        "generated_text" => json!({"section_type": "intro", "content": "c"}),
        other => panic!("{other}"),
    }
}

#[test]
fn adoption_refuses_by_default_and_changes_nothing() {
    let (_d, path) = common::temp_sqlite();
    build_legacy(&path);
    let mut c = Connection::open(&path).unwrap();
    let fk_before: i64 = c.query_row("PRAGMA foreign_keys", [], |r| r.get(0)).unwrap();
    let before = dump(&c);
    // Extra columns: refused before any row is looked at.
    let e = dualwrite::migrate_sqlite(&mut c).unwrap_err().to_string();
    assert!(e.contains("adoption refused, nothing was changed") && e.contains("nickname"), "{e}");
    assert_eq!(dump(&c), before);
    // With extra columns set aside, the unconvertible rows are named, row by row.
    let opts = AdoptOptions { extra_columns: ExtraColumns::SetAside, ..Default::default() };
    let e = dualwrite::migrate_sqlite_with(&mut c, &opts).unwrap_err().to_string();
    assert!(e.contains("900 row(s) cannot be brought into the target schema"), "{e}");
    assert!(
        e.contains("users rowid 601 key \"legacy-0\": id = \"legacy-0\": \"legacy-0\" is not a uuid"),
        "{e}"
    );
    assert!(e.contains("… and 880 more row(s)"), "{e}");
    assert_eq!(dump(&c), before, "a refused adoption leaves the file exactly as it was");
    // The monolith's connection settings are restored.
    let fk: i64 = c.query_row("PRAGMA foreign_keys", [], |r| r.get(0)).unwrap();
    assert_eq!(fk, fk_before);
}

#[test]
fn adoption_with_holdouts_loses_and_changes_no_row() {
    let (_d, path) = common::temp_sqlite();
    build_legacy(&path);
    let mut c = Connection::open(&path).unwrap();
    c.execute_batch("PRAGMA foreign_keys = ON").unwrap();
    let (_, before) = dump(&c);
    let mut legacy_raw: HashMap<&str, Vec<(i64, Vec<V>)>> = HashMap::new();
    for t in ["users", "jobs", "job_logs", "prompts", "api_keys"] {
        legacy_raw.insert(t, raw_rows(&c, schema::table(t).unwrap()));
    }
    let opts = AdoptOptions {
        overrides: Overrides::none(),
        unconvertible: Unconvertible::HoldOut,
        extra_columns: ExtraColumns::SetAside,
    };
    let report = dualwrite::migrate_sqlite_with(&mut c, &opts).unwrap();
    assert_eq!(report.version, dualwrite::latest_version(dualwrite::Store::Sqlite));
    let a = report.adoption.expect("adopted");
    let fk: i64 = c.query_row("PRAGMA foreign_keys", [], |r| r.get(0)).unwrap();
    assert_eq!(fk, 1, "the connection's foreign_keys setting is restored");
    let per: HashMap<&str, (u64, u64, u64, u64)> = a
        .tables
        .iter()
        .map(|t| (t.table.as_str(), (t.rows_before, t.rows_adopted, t.rows_held_out, t.orphans_kept)))
        .collect();
    assert_eq!(per["users"], (850, 600, 250, 0));
    assert_eq!(per["jobs"], (1200, 850, 350, 250));
    assert_eq!(per["job_logs"], (400, 400, 0, 200));
    assert_eq!(per["prompts"], (400, 200, 200, 0));
    assert_eq!(per["api_keys"], (200, 100, 100, 0));
    assert_eq!(a.rows_held_out, 900);
    assert_eq!(a.tables.iter().find(|t| t.table == "users").unwrap().filled_columns, vec!["role"]);
    assert_eq!(a.created.len(), 8);
    assert_eq!(a.dropped_indexes.len(), 1);
    assert_eq!(a.dropped_indexes[0].sql, "CREATE INDEX users_email ON users (email)");

    // Row by row: a convertible row is in its table, at its rowid, exactly as converted; any
    // other is held out exactly as it was.
    let holdouts = legacy::holdouts(&c).unwrap();
    assert_eq!(holdouts.len(), 900);
    let held: HashMap<(String, i64), &legacy::HeldOutRow> =
        holdouts.iter().map(|h| ((h.table.clone(), h.rowid.unwrap()), h)).collect();
    for (t, rows) in &legacy_raw {
        let table = schema::table(t).unwrap();
        let rules = ColumnRules::new(table, &Overrides::none()).with_absent(match *t {
            "users" => &["role"],
            "job_logs" => &["step"],
            _ => &[],
        });
        let mut stmt = c
            .prepare(&format!(
                "SELECT {} FROM {t} WHERE rowid = ?1",
                table.column_names().collect::<Vec<_>>().join(", ")
            ))
            .unwrap();
        let legacy_all = &before[*t];
        for (rowid, raw) in rows {
            let stored: Option<Vec<V>> = stmt
                .query_row([rowid], |r| {
                    Ok((0..table.columns.len()).map(|i| r.get::<_, V>(i).unwrap()).collect())
                })
                .ok();
            match (convert_row(table, raw, &rules), held.get(&(t.to_string(), *rowid))) {
                (Ok(wire), None) => {
                    let want: Vec<V> = legacy::to_sqlite_values(table, &wire)
                        .unwrap()
                        .into_iter()
                        .map(|v| match v {
                            SqlValue::Null => V::Null,
                            SqlValue::Integer(i) => V::Integer(i),
                            SqlValue::Text(s) => V::Text(s),
                            SqlValue::Blob(b) => V::Blob(b),
                        })
                        .collect();
                    assert_eq!(stored.as_ref(), Some(&want), "{t} rowid {rowid}");
                }
                (conv, Some(h)) => {
                    assert!(stored.is_none(), "{t} rowid {rowid} is both adopted and held out");
                    // Held out: a conversion failure or a duplicate.
                    assert!(
                        conv.is_err() || h.reasons[0].reason.starts_with("duplicate"),
                        "{t} rowid {rowid}: {:?}",
                        h.reasons
                    );
                    // Exactly as it was: every legacy column, every type.
                    let original = legacy_all.iter().find(|r| r[0] == V::Integer(*rowid)).unwrap();
                    let decoded = legacy::decode_holdout(&h.row).unwrap();
                    let names = &legacy_columns()[t];
                    assert_eq!(decoded.len(), names.len());
                    for (name, value) in decoded {
                        let i = names.iter().position(|n| *n == name).unwrap();
                        assert_eq!(value, original[i + 1], "{t} rowid {rowid} column {name}");
                    }
                }
                (Err(e), None) => panic!("{t} rowid {rowid} neither adopted nor held out: {e:?}"),
            }
        }
    }
    // The reasons of a held-out secret never carry it.
    let k2 = holdouts.iter().find(|h| h.table == "api_keys").unwrap();
    assert_eq!(k2.reasons[0].value.as_deref(), Some("<redacted>"));

    // The monolith's own table and its view are untouched; extra columns were set aside.
    assert_eq!(dump(&c).1["sessions"], before["sessions"]);
    // a (NULL) and b ('' became NULL) are active; c is disabled; d and e are held out.
    let active: i64 = c.query_row("SELECT count(*) FROM active_users", [], |r| r.get(0)).unwrap();
    assert_eq!(active, 500);
    let extras: i64 = c
        .query_row("SELECT count(*) FROM _dualwrite_adoption_extras WHERE table_name = 'users' AND columns_json LIKE '{\"nickname\":\"nick%'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(extras, 300);

    // The adopted schema is exactly a fresh file's.
    let (_d2, fresh_path) = common::temp_sqlite();
    let mut fresh = Connection::open(&fresh_path).unwrap();
    dualwrite::migrate_sqlite(&mut fresh).unwrap();
    let entity_schema = |conn: &Connection| -> Vec<(String, String)> {
        dump(conn)
            .0
            .into_iter()
            .filter(|(n, _)| {
                schema::TABLES.iter().any(|t| n == t.name || n.starts_with(&format!("{}_", t.name)))
            })
            .collect()
    };
    assert_eq!(entity_schema(&c), entity_schema(&fresh));
    assert_eq!(dualwrite::sqlite_version(&c).unwrap(), dualwrite::latest_version(dualwrite::Store::Sqlite));
    let again = dualwrite::migrate_sqlite(&mut c).unwrap();
    assert!(again.applied.is_empty() && again.adoption.is_none());

    // Preflight on the adopted file: held-out rows are counted; only orphans would be rejected.
    let r = preflight(&path, &PreflightOptions::default()).unwrap();
    assert_eq!(r.state, "migrated");
    assert_eq!(r.rows_held_out, 900);
    let j = table_report(&r, "jobs");
    assert_eq!((j.rows, j.rows_rejected, j.held_out), (850, 250, 350));
    assert_eq!((j.orphans[0].parent_missing, j.orphans[0].parent_rejected), (250, 0));
    assert_eq!(table_report(&r, "job_logs").rows_rejected, 200);
    assert_eq!(table_report(&r, "users").rows_rejected, 0);
    assert_eq!(r.exit_code(), 3);

    // The bridge opens the adopted file and writes to it.
    let dir = path.parent().unwrap();
    let bridge = dualwrite::Bridge::open(
        dualwrite::Config {
            sqlite_path: path.clone(),
            postgres: None,
            key_source: dualwrite::KeySource::File(common::key_file(dir)),
        },
        dualwrite::BridgeOptions { replicate: false, ..Default::default() },
    )
    .unwrap();
    let u = bridge.create_user(&dualwrite::NewUser::new("new@example.com", "New")).unwrap();
    assert_eq!(u.role, dualwrite::UserRole::Member);
    let got = bridge.get("users", &uid(1, 2, 0)).unwrap().unwrap();
    assert_eq!(got["email"], "user.b0@example.com");
}

/// The legacy tables' column names, in the file's order (a held-out row is keyed by them).
fn legacy_columns() -> HashMap<&'static str, Vec<&'static str>> {
    [
        ("users", vec!["id", "email", "display_name", "created_at", "updated_at", "disabled_at", "nickname"]),
        (
            "jobs",
            vec![
                "id",
                "type",
                "payload",
                "status",
                "progress",
                "owner_id",
                "queued_at",
                "started_at",
                "finished_at",
                "priority",
            ],
        ),
        ("job_logs", vec!["id", "job_id", "level", "message", "context", "created_at"]),
        ("prompts", vec!["id", "key", "body", "version", "updated_by", "updated_at"]),
        (
            "api_keys",
            vec![
                "id",
                "owner_id",
                "provider",
                "secret_ciphertext",
                "metadata",
                "rotated_at",
                "created_at",
                "updated_at",
            ],
        ),
    ]
    .into_iter()
    .collect()
}

#[test]
fn a_clean_legacy_file_is_adopted_by_plain_migrate() {
    let (_d, path) = common::temp_sqlite();
    let c = Connection::open(&path).unwrap();
    c.execute_batch(
        "CREATE TABLE users (id TEXT PRIMARY KEY, email TEXT UNIQUE, display_name TEXT, role TEXT,
                             created_at DATETIME DEFAULT CURRENT_TIMESTAMP, updated_at DATETIME DEFAULT CURRENT_TIMESTAMP,
                             disabled_at DATETIME);
         CREATE TABLE jobs (id TEXT PRIMARY KEY, type TEXT, payload TEXT, status TEXT, progress REAL, owner_id TEXT REFERENCES users(id),
                            queued_at INTEGER, started_at DATETIME, finished_at DATETIME, priority TEXT);",
    )
    .unwrap();
    for i in 0..300u128 {
        c.execute(
            "INSERT INTO users (id, email, display_name, role) VALUES (?1, ?2, 'n', 'admin')",
            rusqlite::params![uid(1, 1, i).to_uppercase(), format!("u{i}@x.org")],
        )
        .unwrap();
        c.execute(
            "INSERT INTO jobs VALUES (?1, 'crawl', 'plain', 'queued', 12.5, ?2, ?3, NULL, '', 'high')",
            rusqlite::params![uid(2, 1, i), uid(1, 1, i).to_uppercase(), BASE_S * 1000 + i as i64],
        )
        .unwrap();
    }
    drop(c);
    assert!(preflight(&path, &PreflightOptions::default()).unwrap().clean);
    let mut c = Connection::open(&path).unwrap();
    let r = dualwrite::migrate_sqlite(&mut c).unwrap();
    let a = r.adoption.unwrap();
    assert_eq!(a.rows_held_out, 0);
    assert_eq!(a.tables.iter().map(|t| t.rows_adopted).sum::<u64>(), 600);
    // SQLite's CURRENT_TIMESTAMP default ('YYYY-MM-DD HH:MM:SS', UTC) became canonical.
    let (created, owner, queued, progress): (String, String, String, String) = c
        .query_row("SELECT u.created_at, j.owner_id, j.queued_at, j.progress FROM jobs j JOIN users u ON u.id = j.owner_id LIMIT 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .unwrap();
    assert!(created.ends_with(".000000Z") && created.len() == 27, "{created}");
    assert_eq!(owner, uid(1, 1, 0));
    assert_eq!(queued, "2024-05-01T10:00:00.000000Z");
    assert_eq!(progress, "12.5");
    let orphans: i64 =
        c.query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| r.get(0)).unwrap();
    assert_eq!(orphans, 0);
    assert!(preflight(&path, &PreflightOptions::default()).unwrap().clean);
}

#[test]
fn preflight_cli_exit_codes_and_formats() {
    let bin = env!("CARGO_BIN_EXE_dualwrite");
    let (dir, path) = common::temp_sqlite();
    build_legacy(&path);
    let run = |args: &[&str], sqlite: &Path, config: Option<&Path>| {
        let mut cmd = std::process::Command::new(bin);
        cmd.args(args).env("DUALWRITE_SQLITE_PATH", sqlite).env_remove("DUALWRITE_CONFIG");
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        cmd.output().unwrap()
    };
    let out = run(&["preflight", "--json"], &path, None);
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["rows_rejected"], 1350);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("sk-plaintext"));
    let out = run(&["preflight", "--markdown", "--tables", "jobs"], &path, None);
    assert_eq!(out.status.code(), Some(3));
    let md = String::from_utf8_lossy(&out.stdout);
    assert!(md.contains("### jobs") && !md.contains("### users"), "{md}");
    let out = run(&["preflight"], &dir.path().join("missing.sqlite3"), None);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no SQLite file"));
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[conversions]\n\"jobs.queued_at\" = \"epoch_days\"\n").unwrap();
    assert_eq!(run(&["preflight"], &path, Some(&bad)).status.code(), Some(1));
    // A usage error is neither "rejects" (3) nor "error" (1).
    assert_eq!(run(&["preflight", "--no-such-option"], &path, None).status.code(), Some(64));

    // migrate adopts with the configuration's [adoption] settings, then preflight is clean of
    // conversion problems (the orphans and the held-out rows remain: exit 3).
    let cfg = dir.path().join("dw.toml");
    std::fs::write(&cfg, "[adoption]\nunconvertible = \"hold_out\"\nextra_columns = \"set_aside\"\n")
        .unwrap();
    let out = run(&["migrate", "--only", "sqlite"], &path, Some(&cfg));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("adopted the monolith's tables") && text.contains("900 row(s) held out"), "{text}");
    let out = run(&["preflight", "--json"], &path, Some(&cfg));
    assert_eq!(out.status.code(), Some(3));
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((j["rows_rejected"].as_u64(), j["rows_held_out"].as_u64()), (Some(450), Some(900)));

    // A fresh, empty migrated file is clean.
    let empty = dir.path().join("empty.sqlite3");
    dualwrite::migrate_sqlite(&mut Connection::open(&empty).unwrap()).unwrap();
    let out = run(&["preflight"], &empty, None);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
}

// ----- with PostgreSQL -----

/// The clean rows, converted, are accepted by PostgreSQL as they are (through the replicator's
/// own `jsonb_populate_recordset`), with the exact microsecond; the rejected rows become rejects
/// with reasons, in the table and the file, and retrying takes only them.
#[test]
fn converted_rows_land_in_postgres_and_the_rest_become_rejects() {
    let db = common::migrated_db();
    let mut pg = db.connect();
    let (dir, path) = common::temp_sqlite();
    let legacy_expect = build_legacy(&path);
    let conn = Connection::open(&path).unwrap();
    let reject_file = dir.path().join("rejects.jsonl");
    let mut store = RejectStore::open(&mut pg, Some(&reject_file)).unwrap();
    let mut accepted: HashMap<&str, u64> = HashMap::new();
    let mut rejected: HashMap<&str, u64> = HashMap::new();
    for name in ["users", "jobs", "job_logs", "prompts", "api_keys"] {
        let table = schema::table(name).unwrap();
        let rules = ColumnRules::new(table, &Overrides::none()).with_absent(match name {
            "users" => &["role"],
            "job_logs" => &["step"],
            _ => &[],
        });
        for (_, raw) in raw_rows(&conn, table) {
            match convert_row(table, &raw, &rules) {
                Ok(row) => {
                    // One row per transaction, as a backfill isolating a refused row would.
                    let mut tx = pg.transaction().unwrap();
                    let sql = format!(
                        "INSERT INTO public.{name} SELECT * FROM jsonb_populate_recordset(NULL::public.{name}, $1::text::jsonb)"
                    );
                    let res =
                        tx.execute(&sql, &[&Value::Array(vec![Value::Object(row.clone())]).to_string()]);
                    match res {
                        Ok(_) => {
                            tx.commit().unwrap();
                            *accepted.entry(name).or_default() += 1;
                        }
                        Err(e) => {
                            drop(tx);
                            let key = row[table.key].as_str().unwrap();
                            let r = RejectedRow::postgres(table, key, &e);
                            let mut tx = pg.transaction().unwrap();
                            store.record(&mut tx, &r).unwrap();
                            tx.commit().unwrap();
                            store.flush().unwrap();
                            *rejected.entry(name).or_default() += 1;
                        }
                    }
                }
                Err(problems) => {
                    let r = RejectedRow::conversion(table, problems);
                    let mut tx = pg.transaction().unwrap();
                    store.record(&mut tx, &r).unwrap();
                    tx.commit().unwrap();
                    store.flush().unwrap();
                    *rejected.entry(name).or_default() += 1;
                }
            }
        }
    }
    // Exactly preflight's clean/rejected split.
    let report = preflight(&path, &PreflightOptions::default()).unwrap();
    for t in &report.tables {
        if t.rows > 0 {
            let name = t.table.as_str();
            assert_eq!(accepted.get(name).copied().unwrap_or(0), t.rows_clean, "{name} accepted");
            assert_eq!(rejected.get(name).copied().unwrap_or(0), t.rows_rejected, "{name} rejected");
        }
    }
    assert_eq!(store.counts().values().sum::<u64>(), 1350);

    // Values in PostgreSQL: every expected timestamp to the microsecond, JSON as JSON.
    for e in legacy_expect.expects.iter().filter(|e| e.column.ends_with("_at")) {
        let table = schema::table(e.table).unwrap();
        let raw = &raw_rows(&conn, table)[(e.rowid - 1) as usize].1;
        let rules = ColumnRules::new(table, &Overrides::none()).with_absent(match e.table {
            "users" => &["role"],
            "job_logs" => &["step"],
            _ => &[],
        });
        let key = convert_row(table, raw, &rules).unwrap()[table.key].as_str().unwrap().to_string();
        let sql = format!(
            "SELECT to_char({c} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') FROM public.{t} WHERE {k}::text = $1",
            c = e.column,
            t = e.table,
            k = table.key
        );
        let got: Option<String> = pg.query_one(&sql, &[&key]).unwrap().get(0);
        assert_eq!(
            got.map(Value::String).unwrap_or(Value::Null),
            e.value,
            "{}.{} of {key}",
            e.table,
            e.column
        );
    }
    let payload: Value = pg
        .query_one("SELECT payload FROM public.jobs WHERE id = $1::text::uuid", &[&uid(2, 2, 0)])
        .unwrap()
        .get(0);
    assert_eq!(payload, json!("crawl page 0"));

    // The stored rejects: reasons, redaction, the file.
    let pending = RejectStore::pending_counts(&mut pg).unwrap();
    assert_eq!(pending["users"], 250);
    assert_eq!(pending["jobs"], 600);
    let list = RejectStore::list(&mut pg).unwrap();
    let orphan = list.iter().find(|r| r.key == uid(2, 4, 0)).unwrap();
    assert_eq!(orphan.stage, "postgres");
    assert!(orphan.problems[0].reason.contains("23503"), "{:?}", orphan.problems);
    let dup = list.iter().find(|r| r.table == "users" && r.key == uid(1, 5, 0)).unwrap();
    assert!(dup.problems[0].reason.contains("23505"), "{:?}", dup.problems);
    let legacy_id = list.iter().find(|r| r.key == "legacy-3").unwrap();
    assert_eq!(legacy_id.stage, "convert");
    assert_eq!(legacy_id.problems[0].column.as_deref(), Some("id"));
    let file = std::fs::read_to_string(&reject_file).unwrap();
    assert_eq!(file.lines().count(), 1350);
    let first: Value = serde_json::from_str(file.lines().next().unwrap()).unwrap();
    assert_eq!(first["stage"], "convert");
    assert!(!file.contains("sk-plaintext"));
    let all: String = pg
        .query_one("SELECT string_agg(problems::text, ' ') FROM dualwrite.backfill_rejects", &[])
        .unwrap()
        .get(0);
    assert!(!all.contains("sk-plaintext") && all.contains("<redacted>"));

    // Fix the data (give the orphans their owner), retry only the rejected keys of jobs.
    let keys = RejectStore::pending_keys(&mut pg, "jobs").unwrap();
    assert_eq!(keys.len(), 600);
    let jobs = schema::table("jobs").unwrap();
    let rules = ColumnRules::new(jobs, &Overrides::none());
    conn.execute("UPDATE jobs SET owner_id = NULL WHERE id LIKE ?1", [format!("{}%", &uid(2, 4, 0)[..18])])
        .unwrap();
    let mut retried = Vec::new();
    let mut stmt = conn
        .prepare(&format!(
            "SELECT {} FROM jobs WHERE id = ?1",
            jobs.column_names().collect::<Vec<_>>().join(", ")
        ))
        .unwrap();
    for k in &keys {
        let Ok(raw) = stmt.query_row([k], |r| {
            Ok((0..jobs.columns.len()).map(|i| r.get::<_, V>(i).unwrap()).collect::<Vec<_>>())
        }) else {
            continue;
        };
        let Ok(row) = convert_row(jobs, &raw, &rules) else { continue };
        let sql = "INSERT INTO public.jobs SELECT * FROM jsonb_populate_recordset(NULL::public.jobs, $1::text::jsonb)";
        let mut tx = pg.transaction().unwrap();
        if tx.execute(sql, &[&Value::Array(vec![Value::Object(row)]).to_string()]).is_ok() {
            tx.commit().unwrap();
            retried.push(k.clone());
        }
    }
    assert_eq!(retried.len(), 150, "the orphans whose owner was cleared");
    let mut tx = pg.transaction().unwrap();
    assert_eq!(RejectStore::resolve(&mut tx, "jobs", &retried).unwrap(), 150);
    tx.commit().unwrap();
    assert_eq!(RejectStore::pending_keys(&mut pg, "jobs").unwrap().len(), 450);
    assert_eq!(RejectStage::Convert.as_str(), "convert");
}

/// Rows written into the adopted file behind the bridge's back (the monolith's old code or a
/// manual fix, with SQLite's default `foreign_keys = OFF`), which SQLite's CHECKs let through but
/// no rule converts; returns their keys per table. Hundreds per case.
fn write_past_the_checks(c: &Connection) -> BTreeMap<&'static str, Vec<String>> {
    // SQLite's own default, which the monolith's code never changed.
    c.execute_batch("PRAGMA foreign_keys = OFF").unwrap();
    let mut keys: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    let ts = iso(BASE_S * 1_000_000);
    let mut job = c
        .prepare(
            "INSERT INTO jobs (id, type, payload, status, progress, owner_id, queued_at, priority)
             VALUES (?1, 'crawl', '{}', 'queued', ?2, ?3, ?4, 'normal')",
        )
        .unwrap();
    for i in 0..200u128 {
        // Not a number: the CHECK casts it to 0.
        job.execute(rusqlite::params![uid(2, 10, i), "n/a", Option::<String>::None, ts]).unwrap();
        // Not a uuid in a foreign-key column.
        job.execute(rusqlite::params![uid(2, 11, i), "0", format!("legacy-owner-{i}"), ts]).unwrap();
        // Matches the CHECK's GLOB, is no date.
        job.execute(rusqlite::params![
            uid(2, 12, i),
            "0",
            Option::<String>::None,
            "2024-02-30T10:00:00.000000Z"
        ])
        .unwrap();
        keys.entry("jobs").or_default().extend([uid(2, 10, i), uid(2, 11, i), uid(2, 12, i)]);
    }
    let nan = f32::NAN.to_le_bytes().repeat(4);
    for i in 0..100u128 {
        c.execute(
            "INSERT INTO embeddings (id, text_hash, vector, model, meta, created_at) VALUES (?1, ?2, ?3, 'm', '{}', ?4)",
            rusqlite::params![uid(6, 1, i), format!("h{i}"), nan, ts],
        )
        .unwrap();
        keys.entry("embeddings").or_default().push(uid(6, 1, i));
    }
    // A plaintext secret, written with the CHECKs off: rejected, never shown.
    c.execute_batch("PRAGMA ignore_check_constraints = ON").unwrap();
    let mut key = c.prepare("INSERT INTO api_keys VALUES (?1, ?2, ?3, ?4, '{}', NULL, ?5, ?5)").unwrap();
    for i in 0..100u128 {
        key.execute(rusqlite::params![
            uid(5, 3, i),
            uid(1, 1, i),
            format!("legacy-{i}"),
            format!("sk-live-{i}"),
            ts
        ])
        .unwrap();
        keys.entry("api_keys").or_default().push(uid(5, 3, i));
    }
    c.execute_batch("PRAGMA ignore_check_constraints = OFF").unwrap();
    keys
}

/// The whole path on real data: the legacy file is profiled (preflight's counts asserted),
/// adopted (messy values converted, unconvertible rows held out), then rows that only PostgreSQL
/// or the rules refuse are backfilled: the table goes on, every one of them is a reject with its
/// reason (table and file, secrets redacted), verify reports exactly those keys as missing, and
/// after the data is fixed `backfill --retry-rejects` takes only them, until verify is clean.
#[test]
fn the_backfill_converts_rejects_and_retries_only_the_rejects() {
    let db = common::migrated_db();
    let mut pg = db.connect();
    let (dir, path) = common::temp_sqlite();
    let legacy_expect = build_legacy(&path);
    let config = common::config(&db, dir.path());
    let dualwrite::KeySource::File(key) = &config.key_source else { unreachable!("tests use key files") };

    // Before: preflight on the monolith's own file.
    let before = preflight(&path, &PreflightOptions::default()).unwrap();
    assert_eq!((before.rows, before.rows_rejected), (3050, 1350));
    let split = |r: &PreflightReport, t: &str| {
        let t = table_report(r, t);
        (t.rows, t.rows_clean, t.rows_rejected)
    };
    assert_eq!(split(&before, "users"), (850, 600, 250));
    assert_eq!(split(&before, "jobs"), (1200, 600, 600));

    // Adopt: what converts is converted in place, what does not is held out.
    let mut c = Connection::open(&path).unwrap();
    let opts = AdoptOptions {
        unconvertible: Unconvertible::HoldOut,
        extra_columns: ExtraColumns::SetAside,
        ..Default::default()
    };
    assert_eq!(dualwrite::migrate_sqlite_with(&mut c, &opts).unwrap().adoption.unwrap().rows_held_out, 900);
    let convert_keys = write_past_the_checks(&c);

    let want_rejects: BTreeMap<String, u64> =
        counts(&[("jobs", 600 + 250), ("job_logs", 200), ("api_keys", 100 + 100), ("embeddings", 100)]);
    // The api_keys orphans: a plain ciphertext whose owner does not exist.
    for i in 0..100u128 {
        c.execute(
            "INSERT INTO api_keys VALUES (?1, ?2, 'orphan', X'c30d04', '{}', NULL, ?3, ?3)",
            rusqlite::params![uid(5, 4, i), uid(9, 8, i), iso(BASE_S * 1_000_000)],
        )
        .unwrap();
    }
    // Preflight on the adopted file predicts the backfill's rejects, table by table.
    let after = preflight(&path, &PreflightOptions::default()).unwrap();
    assert_eq!((after.rows_rejected, after.rows_held_out), (1350, 900));
    for t in &after.tables {
        assert_eq!(t.rows_rejected, want_rejects.get(&t.table).copied().unwrap_or(0), "{}", t.table);
    }
    // Keys refused by PostgreSQL (orphans): jobs j4/j5, job_logs l2, api_keys x5.
    let mut postgres_keys: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for i in 0..150u128 {
        postgres_keys.entry("jobs").or_default().push(uid(2, 4, i));
    }
    for i in 0..100u128 {
        postgres_keys.entry("jobs").or_default().push(uid(2, 5, i));
        postgres_keys.entry("api_keys").or_default().push(uid(5, 4, i));
    }
    for i in 0..200u128 {
        postgres_keys.entry("job_logs").or_default().push(uid(3, 2, i));
    }

    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_dualwrite"))
            .args(args)
            .env("DUALWRITE_SQLITE_PATH", &path)
            .env("DUALWRITE_PG_URL", common::url_of(&db))
            .env("DUALWRITE_SECRET_KEY_FILE", key)
            .env_remove("DUALWRITE_CONFIG")
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let per_table = |summary: &Value, field: &str| -> BTreeMap<String, u64> {
        summary["tables"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t[field].as_u64().unwrap() > 0)
            .map(|t| (t["table"].as_str().unwrap().to_string(), t[field].as_u64().unwrap()))
            .collect()
    };

    // The backfill: small odd chunks, so rejects fall in many chunks and at their edges.
    let summary: Value = serde_json::from_str(&cli(&["backfill", "--chunk-size", "97", "--json"])).unwrap();
    assert_eq!(summary["rejects"], json!(want_rejects));
    assert_eq!(per_table(&summary, "rows_rejected"), want_rejects);
    assert_eq!(summary["rejects_pending"], json!(want_rejects));
    let copied = per_table(&summary, "rows_copied");
    assert_eq!(
        copied,
        counts(&[("users", 600), ("jobs", 600), ("job_logs", 200), ("prompts", 200), ("api_keys", 100)])
    );
    // Every table finished; the checkpoints moved past the rejected rows.
    assert!(summary["tables"].as_array().unwrap().iter().all(|t| t["finished"] == true));

    // The conversions, in PostgreSQL: every expected value of every converted row.
    let adopted_key = |t: &str, rowid: i64| -> String {
        let table = schema::table(t).unwrap();
        c.query_row(&format!("SELECT {} FROM {t} WHERE rowid = ?1", table.key), [rowid], |r| r.get(0))
            .unwrap()
    };
    let mut pg_rows = HashMap::new();
    for t in ["users", "jobs", "job_logs", "prompts", "api_keys"] {
        pg_rows.insert(t, dualwrite::store::postgres::all_rows(&mut pg, schema::table(t).unwrap()).unwrap());
    }
    for e in &legacy_expect.expects {
        let key = adopted_key(e.table, e.rowid);
        let row = pg_rows[e.table].get(&key).unwrap_or_else(|| panic!("{} {key} not in PostgreSQL", e.table));
        assert_eq!(row[e.column], e.value, "{}.{} of {key}", e.table, e.column);
    }
    // An epoch-ms value (jobs j1 #1: 1714557601001) on its exact microsecond.
    let us: i64 = pg
        .query_one(
            "SELECT (extract(epoch FROM queued_at) * 1000000)::bigint FROM jobs WHERE id = $1::text::uuid",
            &[&uid(2, 1, 1)],
        )
        .unwrap()
        .get(0);
    assert_eq!(us, (BASE_S * 1000 + 1_001) * 1000);

    // The rejects: exactly the expected keys, with their stage and reason.
    let stored = RejectStore::list(&mut pg).unwrap();
    let by_key: HashMap<(&str, &str), &legacy::rejects::StoredReject> =
        stored.iter().map(|r| ((r.table.as_str(), r.key.as_str()), r)).collect();
    assert_eq!(stored.len(), 1350);
    for (stage, keys) in [("convert", &convert_keys), ("postgres", &postgres_keys)] {
        for (t, ks) in keys.iter() {
            for k in ks {
                let r = by_key.get(&(*t, k.as_str())).unwrap_or_else(|| panic!("{t} {k} is no reject"));
                assert_eq!((r.stage.as_str(), r.resolved, r.attempts), (stage, false, 1), "{t} {k}");
            }
        }
    }
    let problem = |t: &str, k: String| by_key[&(t, k.as_str())].problems[0].clone();
    let p = problem("jobs", uid(2, 10, 0));
    assert_eq!((p.column.as_deref(), p.value.as_deref()), (Some("progress"), Some("\"n/a\"")));
    let p = problem("jobs", uid(2, 11, 7));
    assert_eq!(p.column.as_deref(), Some("owner_id"));
    assert!(p.reason.contains("not a uuid"), "{}", p.reason);
    assert_eq!(problem("jobs", uid(2, 12, 0)).column.as_deref(), Some("queued_at"));
    assert_eq!(problem("embeddings", uid(6, 1, 0)).column.as_deref(), Some("vector"));
    let p = problem("api_keys", uid(5, 3, 0));
    assert_eq!((p.column.as_deref(), p.value.as_deref()), (Some("secret_ciphertext"), Some("<redacted>")));
    let p = problem("jobs", uid(2, 4, 0));
    assert!(p.reason.contains("23503") && p.reason.contains("jobs_owner_id_fkey"), "{}", p.reason);
    let p = problem("api_keys", uid(5, 4, 0));
    assert!(p.reason.contains("23503") && p.reason.contains("detail withheld"), "{}", p.reason);
    // The reject file (beside the SQLite file by default): one line per reject, no secret.
    let reject_file = dir.path().join("monolith.sqlite3.rejects.jsonl");
    let file = std::fs::read_to_string(&reject_file).unwrap();
    let lines: Vec<Value> = file.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 1350);
    let file_keys: std::collections::BTreeSet<(String, String)> = lines
        .iter()
        .map(|l| (l["table"].as_str().unwrap().into(), l["key"].as_str().unwrap().into()))
        .collect();
    let table_keys: std::collections::BTreeSet<(String, String)> =
        stored.iter().map(|r| (r.table.clone(), r.key.clone())).collect();
    assert_eq!(file_keys, table_keys);
    let all_problems: String = pg
        .query_one("SELECT string_agg(problems::text, ' ') FROM dualwrite.backfill_rejects", &[])
        .unwrap()
        .get(0);
    for text in [&file, &all_problems] {
        assert!(!text.contains("sk-live") && !text.contains("c30d04"), "a secret was written");
    }

    // Verify reports exactly the rejects as missing, and nothing else.
    let missing_exactly = |want: &BTreeMap<&str, Vec<String>>| {
        let report =
            dualwrite::verify::verify(&config, &dualwrite::verify::VerifyOptions::default()).unwrap();
        for t in &report.tables {
            let missing: std::collections::BTreeSet<&str> = t.missing.iter().map(String::as_str).collect();
            let expected: std::collections::BTreeSet<&str> =
                want.get(t.table.as_str()).into_iter().flatten().map(String::as_str).collect();
            assert_eq!(missing, expected, "{}: missing", t.table);
            assert!(t.extra.is_empty() && t.different.is_empty() && t.in_flight.is_empty(), "{t:?}");
            assert!(!t.truncated);
        }
        report.ok
    };
    let mut all_rejects = convert_keys.clone();
    for (t, ks) in &postgres_keys {
        all_rejects.entry(t).or_default().extend(ks.iter().cloned());
    }
    assert!(!missing_exactly(&all_rejects));

    // Fix the data in SQLite — all but 50 of the 'n/a' progress values, which get another wrong
    // value — and delete 50 of the orphaned logs (gone: resolved without a copy).
    c.execute_batch(&format!(
        "UPDATE jobs SET progress = CASE WHEN id < '{cut}' THEN 'tbd' ELSE '0' END WHERE progress = 'n/a';
         UPDATE jobs SET owner_id = NULL WHERE owner_id LIKE 'legacy-owner-%' OR id LIKE '{j4}%' OR id LIKE '{j5}%';
         UPDATE jobs SET queued_at = '2024-02-29T10:00:00.000000Z' WHERE queued_at LIKE '2024-02-30%';
         UPDATE embeddings SET vector = X'0000803f000000400000404000008040' WHERE id LIKE '{e}%';
         UPDATE api_keys SET secret_ciphertext = X'c30d0401' WHERE provider LIKE 'legacy-%';
         UPDATE api_keys SET owner_id = replace(owner_id, substr(owner_id, 1, 18), '{u}') WHERE provider = 'orphan';
         DELETE FROM job_logs WHERE id IN (SELECT id FROM job_logs WHERE id LIKE '{l2}%' ORDER BY id LIMIT 50);
         UPDATE job_logs SET job_id = '{j1}' || substr(job_id, 19) WHERE id LIKE '{l2}%';",
        cut = uid(2, 10, 50),
        j4 = &uid(2, 4, 0)[..18],
        j5 = &uid(2, 5, 0)[..18],
        e = &uid(6, 1, 0)[..18],
        u = &uid(1, 1, 0)[..18],
        l2 = &uid(3, 2, 0)[..18],
        j1 = &uid(2, 1, 0)[..18],
    ))
    .unwrap();
    let still_broken: Vec<String> = (0..50u128).map(|i| uid(2, 10, i)).collect();

    let summary: Value = serde_json::from_str(&cli(&["backfill", "--retry-rejects", "--json"])).unwrap();
    assert_eq!(summary["retry_rejects"], true);
    assert_eq!(summary["rejects"], json!({"jobs": 50}));
    assert_eq!(summary["rejects_pending"], json!({"jobs": 50}));
    assert_eq!(
        per_table(&summary, "rejects_resolved"),
        counts(&[("jobs", 800), ("job_logs", 200), ("api_keys", 200), ("embeddings", 100)])
    );
    assert_eq!(
        per_table(&summary, "rows_copied"),
        counts(&[("jobs", 800), ("job_logs", 150), ("api_keys", 200), ("embeddings", 100)])
    );
    // The still-broken rows stay rejects, with the new reason.
    assert_eq!(RejectStore::pending_keys(&mut pg, "jobs").unwrap(), still_broken);
    let again = RejectStore::list(&mut pg).unwrap();
    let r = again.iter().find(|r| r.key == still_broken[0]).unwrap();
    assert_eq!((r.attempts, r.problems[0].value.as_deref()), (2, Some("\"tbd\"")));
    assert!(!missing_exactly(&[("jobs", still_broken.clone())].into()));
    // The file got one more line per still-broken row.
    assert_eq!(std::fs::read_to_string(&reject_file).unwrap().lines().count(), 1400);

    // Fixed at last: the terminal summary, then a clean verify and nothing pending.
    c.execute("UPDATE jobs SET progress = '100' WHERE progress = 'tbd'", []).unwrap();
    let text = cli(&["backfill", "--retry-rejects"]);
    let jobs_line = text.lines().find(|l| l.starts_with("jobs ")).unwrap_or_else(|| panic!("{text}"));
    assert_eq!(
        jobs_line.split_whitespace().take(5).collect::<Vec<_>>(),
        ["jobs", "50", "50", "0", "50"],
        "{text}"
    );
    assert!(text.contains("0 rejected") && !text.contains("rejects pending"), "{text}");
    assert!(missing_exactly(&BTreeMap::new()));
    assert!(RejectStore::pending_counts(&mut pg).unwrap().is_empty());
    assert!(RejectStore::list(&mut pg).unwrap().iter().all(|r| r.resolved));
}
