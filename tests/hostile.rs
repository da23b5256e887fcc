//! Hostile input through the generic JSON API (`Bridge::insert/patch/get/list/delete`) and the
//! JSON parse path in front of it, against a bridge that replicates to a real PostgreSQL.
//!
//! Every refused case must be an `Err` with a message (never a panic) and must change neither
//! store: the row counts of the 13 tables in SQLite, the outbox depth and the dead letters stay as
//! they were, the seed rows keep their content, and after `flush` PostgreSQL holds the same counts
//! (and `dualwrite.row_revisions` the same number of revisions). Input that is hostile but valid
//! (SQL metacharacters, unicode, control characters in strings) is data: it is stored verbatim in
//! both stores.
//!
//! Property tests run 256 cases each (proptest's default). Soak run:
//! `PROPTEST_CASES=20000 pg_virtualenv -t -v 15 cargo test --release --test hostile`.
//! Short run: `pg_virtualenv -t -v 15 cargo test --test hostile`.

mod common;

use dualwrite::{Bridge, BridgeOptions, Error, Row};
use proptest::prelude::*;
use proptest::test_runner::{Config as PropConfig, TestCaseError, TestRunner};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

const TABLE_NAMES: [&str; 13] = [
    "users",
    "api_keys",
    "jobs",
    "job_logs",
    "serpapi_results",
    "pages",
    "embeddings",
    "headings",
    "generated_text",
    "prompts",
    "text_analytics_cache",
    "wordstat_cache",
    "audit_events",
];

/// A migrated database, a replicating bridge, and one valid row in every table.
struct Fx {
    db: common::TestDb,
    dir: tempfile::TempDir,
    b: Bridge,
    /// Table -> key of its seed row.
    seeds: BTreeMap<&'static str, String>,
    /// The seed rows as stored, to prove refused patches leave them alone.
    seed_rows: BTreeMap<&'static str, Row>,
    baseline: State,
    pg_baseline: Vec<i64>,
}

/// What a refused call must not change in SQLite.
#[derive(Debug, Clone, PartialEq)]
struct State {
    rows: Vec<i64>,
    outbox_depth: i64,
    dead_letters: i64,
}

impl Fx {
    fn new() -> Fx {
        let db = common::migrated_db();
        let dir = tempfile::tempdir().unwrap();
        let b = common::bridge_with(&db, dir.path(), BridgeOptions::default());
        let mut seeds = BTreeMap::new();
        let ins = |t: &str, v: Value| -> String {
            let row = b.insert(t, &v).unwrap_or_else(|e| panic!("seed {t}: {e}"));
            let key = dualwrite::schema::table(t).unwrap().key;
            row[key].as_str().unwrap().to_string()
        };
        let user = ins("users", json!({"email": "seed@example.com", "display_name": "Seed"}));
        let owner = uuid::Uuid::parse_str(&user).unwrap();
        let key = b.put_api_key(owner, "serpapi", b"seed-secret-value", None).unwrap();
        seeds.insert("api_keys", key.id.to_string());
        let job = ins("jobs", json!({"type": "crawl", "owner_id": user, "payload": {"q": "x"}}));
        seeds.insert("job_logs", ins("job_logs", json!({"job_id": job, "level": "info", "message": "m"})));
        let serp = ins(
            "serpapi_results",
            json!({"keyword": "k", "raw_json": {"r": [1, 2]}, "hash": "h1", "fetched_at": "2026-01-02T03:04:05.123456Z"}),
        );
        let page = ins(
            "pages",
            json!({"url": "https://example.com/", "fetched_at": "2026-01-02T03:04:05Z", "source_job_id": job, "serpapi_result_id": serp}),
        );
        let emb = ins("embeddings", json!({"text_hash": "t1", "vector": [0.5, -1.25, 3.0], "model": "m"}));
        let heading =
            ins("headings", json!({"page_id": page, "level": "h2", "text": "H", "embeddings_ref": emb}));
        seeds.insert(
            "generated_text",
            ins(
                "generated_text",
                json!({"section_type": "intro", "content": "c", "source_heading_id": heading, "owner_id": user, "job_id": job}),
            ),
        );
        seeds.insert(
            "prompts",
            ins("prompts", json!({"key": "p", "body": "b", "version": 1, "updated_by": user})),
        );
        for cache in ["text_analytics_cache", "wordstat_cache"] {
            seeds.insert(
                cache,
                ins(
                    cache,
                    json!({"cache_key": "seed", "value": {"v": 1}, "expires_at": "2030-01-01T00:00:00Z"}),
                ),
            );
        }
        seeds.insert(
            "audit_events",
            ins("audit_events", json!({"action": "seed", "entity": "users", "actor_id": user})),
        );
        seeds.insert("users", user);
        seeds.insert("jobs", job);
        seeds.insert("serpapi_results", serp);
        seeds.insert("pages", page);
        seeds.insert("embeddings", emb);
        seeds.insert("headings", heading);
        assert_eq!(seeds.len(), 13);
        b.flush(Duration::from_secs(60)).unwrap();
        common::assert_stores_equal(&b, &db);
        let seed_rows = seeds.iter().map(|(t, k)| (*t, b.get(t, k).unwrap().unwrap())).collect();
        let mut fx = Fx {
            db,
            dir,
            b,
            seeds,
            seed_rows,
            baseline: State { rows: vec![], outbox_depth: 0, dead_letters: 0 },
            pg_baseline: vec![],
        };
        fx.baseline = fx.state();
        fx.pg_baseline = fx.pg_counts();
        assert_eq!(fx.baseline.rows, fx.pg_baseline[..13].to_vec());
        fx
    }

    fn sqlite(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.dir.path().join("monolith.sqlite3")).unwrap()
    }

    fn state(&self) -> State {
        let sql = format!(
            "SELECT {}",
            TABLE_NAMES.iter().map(|t| format!("(SELECT count(*) FROM {t})")).collect::<Vec<_>>().join(", ")
        );
        let rows = self
            .sqlite()
            .query_row(&sql, [], |r| {
                (0..13).map(|i| r.get::<_, i64>(i)).collect::<rusqlite::Result<Vec<_>>>()
            })
            .unwrap();
        let st = self.b.status().unwrap();
        State { rows, outbox_depth: st.outbox_depth, dead_letters: st.dead_letters }
    }

    /// Row counts of the 13 tables in PostgreSQL, then the number of revisions.
    fn pg_counts(&self) -> Vec<i64> {
        let sql = format!(
            "SELECT {}, (SELECT count(*) FROM dualwrite.row_revisions)",
            TABLE_NAMES
                .iter()
                .map(|t| format!("(SELECT count(*) FROM public.{t})"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let row = self.db.connect().query_one(&sql, &[]).unwrap();
        (0..14).map(|i| row.get::<_, i64>(i)).collect()
    }

    /// The refused call changed nothing in SQLite (counts, outbox, dead letters, seed rows).
    fn unchanged(&self, what: &str) -> Result<(), TestCaseError> {
        let now = self.state();
        prop_assert_eq!(&now, &self.baseline, "{} changed SQLite", what);
        for (t, row) in &self.seed_rows {
            let back = self.b.get(t, &self.seeds[t]).unwrap();
            prop_assert_eq!(back.as_ref(), Some(row), "{} changed the seed row of {}", what, t);
        }
        Ok(())
    }

    /// Nothing reached PostgreSQL either.
    fn pg_unchanged(&self, what: &str) -> Result<(), TestCaseError> {
        self.b.flush(Duration::from_secs(30)).unwrap();
        prop_assert_eq!(self.pg_counts(), self.pg_baseline.clone(), "{} changed PostgreSQL", what);
        Ok(())
    }
}

/// Run a property with proptest's configuration (PROPTEST_CASES sets the case count).
fn check<S: Strategy>(name: &str, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    // No regression file: the seeds that found bugs are kept as named tests instead.
    let config = PropConfig { failure_persistence: None, ..PropConfig::default() };
    let cases = config.cases;
    let mut runner = TestRunner::new(config);
    if let Err(e) = runner.run(&strategy, test) {
        panic!("{name}: {e}");
    }
    eprintln!("{name}: {cases} cases passed, {} hostile calls refused cleanly", REFUSED.with(|n| n.get()));
}

thread_local! {
    /// Hostile calls refused by this test's thread (each test runs on its own thread).
    static REFUSED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// An `Err` with a readable message, or a test failure naming what was accepted.
fn refused<T: std::fmt::Debug>(r: dualwrite::Result<T>, what: &str) -> Result<Error, TestCaseError> {
    REFUSED.with(|n| n.set(n.get() + 1));
    match r {
        Err(e) => {
            let m = e.to_string();
            prop_assert!(m.len() > 10, "{}: message too thin: {:?}", what, m);
            Ok(e)
        }
        Ok(v) => {
            // Said at once: shrinking then runs on a store this case changed.
            let m = format!("{what}: accepted: {v:?}");
            eprintln!("FIRST FAILURE: {m}");
            Err(TestCaseError::fail(m))
        }
    }
}

/// Fragments an attacker would put in identifiers and strings.
fn meta_fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "'",
            "\"",
            ";",
            "--",
            "/*",
            "*/",
            "\\",
            "%",
            "_",
            "$1",
            "?1",
            ":name",
            "@p",
            "`",
            "[",
            "]",
            "(",
            ")",
            "DROP TABLE users",
            "' OR '1'='1",
            "'); DELETE FROM jobs; --",
            "\" OR 1=1 --",
            "UNION SELECT *",
            "\u{202e}",
            "ß",
            "🦀",
            "\u{feff}",
            "\r\n",
            "\t",
            "\u{1}",
            "\u{7f}",
            "\u{fffd}",
            "İ",
            "ǅ",
            "\u{0301}",
            " ",
            "users",
            "id",
            "x",
            "0",
            "NULL",
            "null",
            "true",
            "{}",
            "[]",
            "\\x00",
            "\\u0000",
            "%00",
        ])
        .prop_map(String::from),
        any::<char>().prop_filter("no NUL", |c| *c != '\0').prop_map(String::from),
    ]
}

fn meta_string() -> impl Strategy<Value = String> {
    prop::collection::vec(meta_fragment(), 0..12).prop_map(|v| v.concat())
}

/// Names that are not the registry's: metacharacters, near misses of real names, any text.
fn foreign_identifier(real: &'static [&'static str]) -> impl Strategy<Value = String> {
    let near_miss = (
        prop::sample::select(real),
        prop::sample::select(vec![
            " ",
            ";",
            "\"",
            "--",
            "\0",
            "; DROP TABLE users; --",
            "'",
            ".id",
            "\u{200b}",
            "\n",
            "(",
            "*",
        ]),
        any::<u8>(),
    )
        .prop_map(|(name, extra, how)| match how % 5 {
            0 => format!("{name}{extra}"),
            1 => format!("{extra}{name}"),
            2 => name.to_uppercase(),
            3 => format!("public.{name}"),
            _ => format!("\"{name}\""),
        });
    prop_oneof![near_miss, meta_string(), "\\PC{0,24}", ".{0,8}"]
        .prop_filter("not a registry name", move |s| !real.contains(&s.as_str()))
}

#[test]
fn table_names_outside_the_registry_are_refused() {
    let fx = Fx::new();
    let filter = json!({"limit": 5});
    check("table names", foreign_identifier(&TABLE_NAMES), |name| {
        let key = fx.seeds["users"].clone();
        for (what, e) in [
            (
                "insert",
                refused(fx.b.insert(&name, &json!({"email": "a@b.c", "display_name": "x"})), "insert")?,
            ),
            ("patch", refused(fx.b.patch(&name, &key, &json!({"display_name": "x"})), "patch")?),
            ("get", refused(fx.b.get(&name, &key), "get")?),
            ("list", refused(fx.b.list(&name, &filter), "list")?),
            ("delete", refused(fx.b.delete(&name, &key), "delete")?),
        ] {
            match e {
                Error::InvalidArgument { field, message } => {
                    prop_assert_eq!(field, "table");
                    prop_assert!(message.contains("unknown table"), "{}: {}", what, message);
                }
                other => return Err(TestCaseError::fail(format!("{what}: wrong error {other:?}"))),
            }
        }
        fx.unchanged(&format!("table {name:?}"))
    });
    fx.pg_unchanged("foreign table names").unwrap();
}

#[test]
fn column_names_outside_the_registry_are_refused() {
    let fx = Fx::new();
    // Near misses of every column name of the registry, tried on every table.
    let cols: &'static [&'static str] = Box::leak(
        dualwrite::schema::TABLES
            .iter()
            .flat_map(|t| t.column_names())
            .collect::<Vec<_>>()
            .into_boxed_slice(),
    );
    check(
        "column names",
        (foreign_identifier(cols), prop::sample::select(&TABLE_NAMES[..])),
        |(col, table)| {
            let t = dualwrite::schema::table(table).unwrap();
            if t.column(&col).is_some() {
                return Ok(());
            }
            let key = fx.seeds[table].clone();
            let mut row = serde_json::Map::new();
            row.insert(col.clone(), json!("x"));
            let row = Value::Object(row);
            refused(fx.b.insert(table, &row), "insert")?;
            refused(fx.b.patch(table, &key, &row), "patch")?;
            refused(fx.b.list(table, &json!({"where": row})), "list where")?;
            refused(fx.b.list(table, &json!({"order_by": col})), "list order_by")?;
            if !["where", "order_by", "desc", "limit", "offset"].contains(&col.as_str()) {
                let mut filter = serde_json::Map::new();
                filter.insert(col.clone(), json!(1));
                refused(fx.b.list(table, &Value::Object(filter)), "list option")?;
            }
            fx.unchanged(&format!("{table}.{col:?}"))
        },
    );
    fx.pg_unchanged("foreign column names").unwrap();
}

#[test]
fn sql_metacharacters_in_strings_are_stored_verbatim_in_both_stores() {
    let fx = Fx::new();
    let job = fx.seeds["jobs"].clone();
    let written = std::cell::RefCell::new(Vec::<(String, String, String, String)>::new());
    check("metacharacters", (meta_string(), meta_string(), meta_string()), |(msg, step, ctx_key)| {
        let row = fx
            .b
            .insert(
                "job_logs",
                &json!({"job_id": job, "level": "warning", "message": msg, "step": step, "context": {ctx_key.clone(): msg}}),
            )
            .map_err(|e| TestCaseError::fail(format!("valid row refused: {e}")))?;
        prop_assert_eq!(&row["message"], &json!(msg));
        prop_assert_eq!(&row["step"], &json!(step));
        let id = row["id"].as_str().unwrap().to_string();
        // The string as an equality filter finds exactly this row.
        let found =
            fx.b.list("job_logs", &json!({"where": {"message": msg, "step": step, "id": id}})).unwrap();
        prop_assert_eq!(found.len(), 1);
        prop_assert_eq!(&found[0], &row);
        written.borrow_mut().push((id, msg, step, ctx_key));
        Ok(())
    });
    let written = written.into_inner();
    fx.b.flush(Duration::from_secs(60)).unwrap();
    common::assert_stores_equal(&fx.b, &fx.db);
    let mut pg = fx.db.connect();
    for (id, msg, step, ctx_key) in &written {
        let r = pg
            .query_one(
                "SELECT message, step, context ->> $2 FROM job_logs WHERE id = $1::text::uuid",
                &[id, ctx_key],
            )
            .unwrap();
        assert_eq!((r.get::<_, String>(0), r.get::<_, String>(1)), (msg.clone(), step.clone()));
        assert_eq!(r.get::<_, Option<String>>(2).as_deref(), Some(msg.as_str()));
    }
    // Nothing else moved: the other tables hold their seeds.
    let counts = fx.pg_counts();
    for (i, t) in TABLE_NAMES.iter().enumerate() {
        let expected = fx.pg_baseline[i] + if *t == "job_logs" { written.len() as i64 } else { 0 };
        assert_eq!(counts[i], expected, "{t}");
    }
    assert_eq!(fx.state().dead_letters, 0);
    eprintln!("metacharacters: {} rows with hostile strings stored and replicated verbatim", written.len());
}

/// A JSON value with a NUL somewhere: in a string, deep in jsonb, or in an object key.
fn with_nul() -> impl Strategy<Value = (String, Value)> {
    (meta_string(), meta_string(), 0u8..4).prop_map(|(a, b, how)| {
        let s = format!("{a}\0{b}");
        let v = match how {
            0 => json!(s),
            1 => json!({"k": [1, {"deep": s}]}),
            2 => {
                let mut m = serde_json::Map::new();
                m.insert(s.clone(), json!(1));
                Value::Object(m)
            }
            _ => json!([s]),
        };
        (s, v)
    })
}

#[test]
fn nul_characters_are_refused_everywhere() {
    let fx = Fx::new();
    let job = fx.seeds["jobs"].clone();
    let log = fx.seeds["job_logs"].clone();
    check("NUL", with_nul(), |(s, jsonish)| {
        let e = refused(
            fx.b.insert("job_logs", &json!({"job_id": job, "level": "info", "message": s})),
            "NUL in text",
        )?;
        prop_assert!(e.to_string().contains("NUL"), "{}", e);
        refused(
            fx.b.insert(
                "job_logs",
                &json!({"job_id": job, "level": "info", "message": "m", "context": jsonish}),
            ),
            "NUL in jsonb",
        )?;
        refused(fx.b.patch("job_logs", &log, &json!({"step": s})), "NUL in a patch")?;
        refused(fx.b.list("job_logs", &json!({"where": {"message": s}})), "NUL in a filter")?;
        refused(fx.b.get("wordstat_cache", &s), "NUL in a text key")?;
        refused(
            fx.b.insert(
                "wordstat_cache",
                &json!({"cache_key": s, "value": 1, "expires_at": "2030-01-01T00:00:00Z"}),
            ),
            "NUL key",
        )?;
        fx.unchanged("NUL")
    });
    fx.pg_unchanged("NUL").unwrap();
}

/// (column, value) pairs that are wrong for the column's type or range, on table jobs /
/// generated_text / embeddings / users / job_logs.
fn bad_value() -> impl Strategy<Value = (&'static str, &'static str, Value)> {
    let big_int = prop_oneof![
        (i32::MAX as i64 + 1..=i64::MAX).prop_map(Value::from),
        (i64::MIN..i32::MIN as i64).prop_map(Value::from),
        (u64::MAX / 2 + 1..=u64::MAX).prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f + 0.5)),
        meta_string().prop_map(Value::from),
        Just(json!(true)),
        Just(json!([1])),
    ];
    let bad_numeric = prop_oneof![
        Just(json!("1e3")),
        Just(json!("NaN")),
        Just(json!("Infinity")),
        Just(json!("1.")),
        Just(json!(".5")),
        Just(json!("0x10")),
        Just(json!("1,5")),
        Just(json!("")),
        Just(json!(1e300)),
        Just(json!("1".repeat(101))),
        meta_string()
            .prop_filter("not a decimal", |s| {
                let b = s.trim().trim_start_matches(['-', '+']);
                b.is_empty() || !b.bytes().all(|c| c.is_ascii_digit() || c == b'.')
            })
            .prop_map(Value::from),
        Just(json!({"n": 1})),
    ];
    let bad_uuid = prop_oneof![
        meta_string().prop_map(Value::from),
        "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{11}".prop_map(Value::from),
        "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{11}[g-z]".prop_map(Value::from),
        Just(json!("00000000-0000-0000-0000-00000000000")),
        Just(json!("{00000000-0000-0000-0000-000000000000")),
        Just(json!(12345)),
        Just(json!(["00000000-0000-0000-0000-000000000000"])),
    ];
    let bad_ts = prop_oneof![
        Just(json!("2026-01-02T03:04:05.1234567Z")),
        Just(json!("2026-01-02T03:04:05.000000001Z")),
        Just(json!("0000-01-01T00:00:00Z")),
        Just(json!("10000-01-01T00:00:00Z")),
        Just(json!("9999-12-31T23:59:59.999999-01:00")),
        Just(json!("0001-01-01T00:30:00+01:00")),
        Just(json!("2016-12-31T23:59:60Z")),
        Just(json!("2026-02-30T00:00:00Z")),
        Just(json!("2026-01-02T24:00:00Z")),
        Just(json!("2026-01-02T03:04:05+25:00")),
        Just(json!("2026-01-02T03:04:05")),
        Just(json!("2026-01-02 03:04:05")),
        Just(json!("2026-01-02")),
        Just(json!("now")),
        Just(json!("infinity")),
        Just(json!(1767323045)),
        meta_string().prop_map(Value::from),
    ];
    let bad_enum = prop_oneof![
        Just(json!("Queued")),
        Just(json!("queued ")),
        Just(json!(" queued")),
        Just(json!("QUEUED")),
        Just(json!("done")),
        Just(json!("")),
        Just(json!(1)),
        Just(json!(["queued"])),
        meta_string()
            .prop_filter("not a status", |s| !["queued", "running", "succeeded", "failed", "cancelled"]
                .contains(&s.as_str()))
            .prop_map(Value::from),
    ];
    let bad_vector = prop_oneof![
        Just(json!([])),
        Just(json!([1e39])),
        Just(json!([-3.5e38])),
        Just(json!(["1"])),
        Just(json!([1, null])),
        Just(json!([[1.0]])),
        Just(json!("[1,2]")),
        Just(json!({"0": 1})),
        Just(Value::Array(vec![json!(0.5); 16_001])),
    ];
    let bad_bytea = prop_oneof![
        meta_string().prop_filter("not \\x hex", |s| dualwrite_bytea_invalid(s)).prop_map(Value::from),
        Just(json!("\\x0")),
        Just(json!("\\xzz")),
        Just(json!("0x00")),
        Just(json!([0, 1])),
    ];
    let not_a_string = prop_oneof![Just(json!(1)), Just(json!(true)), Just(json!({})), Just(json!([]))];
    prop_oneof![
        big_int.clone().prop_map(|v| ("generated_text", "version", v)),
        big_int.prop_map(|v| ("prompts", "version", v)),
        bad_numeric.prop_map(|v| ("jobs", "progress", v)),
        bad_uuid.clone().prop_map(|v| ("jobs", "owner_id", v)),
        bad_uuid.prop_map(|v| ("job_logs", "job_id", v)),
        bad_ts.clone().prop_map(|v| ("jobs", "started_at", v)),
        bad_ts.prop_map(|v| ("users", "disabled_at", v)),
        bad_enum.clone().prop_map(|v| ("jobs", "status", v)),
        bad_enum.clone().prop_map(|v| ("users", "role", v)),
        bad_enum.prop_map(|v| ("headings", "level", v)),
        bad_vector.prop_map(|v| ("embeddings", "vector", v)),
        bad_bytea.prop_map(|v| ("api_keys", "secret_ciphertext", v)),
        not_a_string.clone().prop_map(|v| ("users", "display_name", v)),
        not_a_string.prop_map(|v| ("job_logs", "message", v)),
        Just(("jobs", "status", Value::Null)),
        Just(("users", "email", Value::Null)),
    ]
}

fn dualwrite_bytea_invalid(s: &str) -> bool {
    match s.strip_prefix("\\x") {
        Some(h) => h.len() % 2 == 1 || !h.bytes().all(|b| b.is_ascii_hexdigit()),
        None => true,
    }
}

/// A valid insert for `table`, to which the bad value is added.
fn base_row(fx: &Fx, table: &str) -> Value {
    match table {
        "jobs" => json!({"type": "t"}),
        "job_logs" => json!({"job_id": fx.seeds["jobs"], "level": "info", "message": "m"}),
        "users" => json!({"email": "new@example.com", "display_name": "N"}),
        "generated_text" => json!({"section_type": "intro", "content": "c"}),
        "prompts" => json!({"key": "k2", "body": "b", "version": 3}),
        "headings" => json!({"page_id": fx.seeds["pages"], "level": "h1", "text": "t"}),
        "embeddings" => json!({"text_hash": "t2", "vector": [1.0], "model": "m"}),
        "api_keys" => json!({"owner_id": fx.seeds["users"], "provider": "p2"}),
        other => panic!("no base row for {other}"),
    }
}

#[test]
fn wrong_types_ranges_enums_uuids_and_timestamps_are_refused() {
    let fx = Fx::new();
    check("bad values", bad_value(), |(table, column, value)| {
        let mut row = base_row(&fx, table);
        row[column] = value.clone();
        let e = refused(fx.b.insert(table, &row), &format!("insert {table}.{column} = {value}"))?;
        match &e {
            Error::InvalidArgument { field, .. } => prop_assert_eq!(field, &format!("{table}.{column}")),
            other => return Err(TestCaseError::fail(format!("wrong error {other:?}"))),
        }
        let mut patch = serde_json::Map::new();
        patch.insert(column.to_string(), value.clone());
        refused(fx.b.patch(table, &fx.seeds[table], &Value::Object(patch.clone())), "patch")?;
        if !value.is_null() {
            refused(fx.b.list(table, &json!({"where": patch})), "filter")?;
        }
        fx.unchanged(&format!("{table}.{column} = {value}"))
    });
    fx.pg_unchanged("bad values").unwrap();
}

/// Filters that are wrong in shape or value.
fn bad_filter() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!([])),
        Just(json!("where id = 1")),
        Just(json!(1)),
        Just(json!({"where": []})),
        Just(json!({"where": "1=1"})),
        Just(json!({"where": {"id": "1 OR 1=1"}})),
        Just(json!({"order_by": 1})),
        Just(json!({"order_by": ["id"]})),
        Just(json!({"order_by": "id; DROP TABLE jobs"})),
        Just(json!({"order_by": "random()"})),
        Just(json!({"desc": "true"})),
        Just(json!({"desc": 1})),
        Just(json!({"limit": 10_001})),
        Just(json!({"limit": 1.5})),
        Just(json!({"limit": "10"})),
        Just(json!({"limit": null})),
        Just(json!({"offset": -1})),
        Just(json!({"offset": 1e30})),
        Just(json!({"offset": u64::MAX})),
        (i64::MIN..0).prop_map(|n| json!({"limit": n})),
        (10_001..i64::MAX).prop_map(|n| json!({"limit": n})),
        foreign_identifier(&["where", "order_by", "desc", "limit", "offset"]).prop_map(|k| {
            let mut m = serde_json::Map::new();
            m.insert(k, json!(1));
            Value::Object(m)
        }),
    ]
}

#[test]
fn bad_filters_are_refused() {
    let fx = Fx::new();
    check("bad filters", (bad_filter(), prop::sample::select(&TABLE_NAMES[..])), |(filter, table)| {
        refused(fx.b.list(table, &filter), &format!("list {table} {filter}"))?;
        fx.unchanged(&format!("filter {filter}"))
    });
    fx.pg_unchanged("bad filters").unwrap();
}

#[test]
fn bad_keys_are_refused_or_find_nothing() {
    let fx = Fx::new();
    check("bad keys", (meta_string(), prop::sample::select(&TABLE_NAMES[..])), |(key, table)| {
        let t = dualwrite::schema::table(table).unwrap();
        let is_uuid = uuid::Uuid::try_parse(&key).is_ok();
        if t.key_column().ty == dualwrite::schema::ColType::Uuid && !is_uuid {
            refused(fx.b.get(table, &key), "get")?;
            refused(fx.b.patch(table, &key, &json!({})), "patch")?;
            refused(fx.b.delete(table, &key), "delete")?;
        } else if !fx.seeds.values().any(|k| *k == key) {
            // A well-formed key of no row: nothing found, nothing deleted, a patch is NotFound.
            prop_assert_eq!(fx.b.get(table, &key).unwrap(), None);
            prop_assert!(!fx.b.delete(table, &key).unwrap());
            let e = refused(fx.b.patch(table, &key, &json!({})), "patch of a missing row")?;
            prop_assert!(e.is_not_found(), "{:?}", e);
        }
        fx.unchanged(&format!("key {key:?}"))
    });
    fx.pg_unchanged("bad keys").unwrap();
}

#[test]
fn the_key_cannot_be_changed_and_secrets_cannot_be_written_generically() {
    let fx = Fx::new();
    for t in TABLE_NAMES {
        let table = dualwrite::schema::table(t).unwrap();
        let mut patch = serde_json::Map::new();
        let new_key = if table.key_column().ty == dualwrite::schema::ColType::Uuid {
            json!(uuid::Uuid::new_v4().to_string())
        } else {
            json!("other")
        };
        patch.insert(table.key.to_string(), new_key);
        let e = fx.b.patch(t, &fx.seeds[t], &Value::Object(patch)).unwrap_err();
        assert!(e.to_string().contains("key cannot be changed"), "{t}: {e}");
    }
    let mut row = base_row(&fx, "api_keys");
    row["secret_ciphertext"] = json!("\\x00");
    let e = fx.b.insert("api_keys", &row).unwrap_err();
    assert!(e.to_string().contains("secrets are written only through"), "{e}");
    let e =
        fx.b.patch("api_keys", &fx.seeds["api_keys"], &json!({"secret_ciphertext": "\\x00"})).unwrap_err();
    assert!(e.to_string().contains("secrets are written only through"), "{e}");
    fx.unchanged("key changes").unwrap();
    fx.pg_unchanged("key changes").unwrap();
}

/// `[[[…1…]]]` nested `depth` arrays deep.
fn nested(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

#[test]
fn deep_json_is_refused_past_64_levels_and_unparseable_past_serde_jsons_limit() {
    let fx = Fx::new();
    let job = fx.seeds["jobs"].clone();
    let mut accepted = 0;
    for depth in 1..=200usize {
        // The JSON text of a whole row, as the C ABI receives it: the row object is one more level.
        let text = format!(
            r#"{{"job_id": "{job}", "level": "info", "message": "m", "context": {}}}"#,
            nested(depth)
        );
        match serde_json::from_str::<Value>(&text) {
            Err(e) => {
                // serde_json stops at 128 levels (the row object + 127 arrays).
                assert!(depth >= 127, "depth {depth}: {e}");
                assert!(e.to_string().contains("recursion limit"), "{e}");
            }
            Ok(row) => {
                assert!(depth < 127, "depth {depth} parsed");
                match fx.b.insert("job_logs", &row) {
                    Ok(_) => {
                        assert!(depth <= 64, "depth {depth} accepted");
                        accepted += 1;
                    }
                    Err(e) => {
                        assert!(depth > 64, "depth {depth} refused: {e}");
                        assert!(e.to_string().contains("nested deeper than 64 levels"), "{e}");
                    }
                }
            }
        }
        // The same depth inside a filter and a patch.
        if let Ok(v) = serde_json::from_str::<Value>(&nested(depth)) {
            let r = fx.b.list("job_logs", &json!({"where": {"context": v}}));
            assert_eq!(r.is_err(), depth > 64, "filter at depth {depth}");
            let r = fx.b.patch("job_logs", &fx.seeds["job_logs"], &json!({"context": v}));
            assert_eq!(r.is_err(), depth > 64, "patch at depth {depth}");
            if r.is_ok() {
                // Put the seed back as it was.
                let ctx = fx.seed_rows["job_logs"]["context"].clone();
                fx.b.patch("job_logs", &fx.seeds["job_logs"], &json!({"context": ctx})).unwrap();
            }
        }
    }
    assert_eq!(accepted, 64);
    fx.b.flush(Duration::from_secs(60)).unwrap();
    common::assert_stores_equal(&fx.b, &fx.db);
    assert_eq!(fx.state().dead_letters, 0, "PostgreSQL accepts every depth the bridge accepts");
    // 100,000 levels in the text: a parse error, no stack overflow.
    assert!(serde_json::from_str::<Value>(&nested(100_000)).is_err());
}

#[test]
fn lone_surrogates_and_invalid_utf8_are_parse_errors() {
    // serde_json refuses lone surrogates in \u escapes (it never builds a String that is not
    // UTF-8), so they never reach the bridge.
    for text in [
        r#"{"message": "\ud800"}"#,
        r#"{"message": "\udc00"}"#,
        r#"{"message": "a\ud800b"}"#,
        r#"{"message": "\ud800\u0041"}"#,
        r#"{"\ud800": 1}"#,
        r#"{"message": "\udbff\udbff"}"#,
    ] {
        let e = serde_json::from_str::<Value>(text).unwrap_err();
        assert!(e.to_string().contains("surrogate") || e.to_string().contains("escape"), "{text}: {e}");
    }
    // A valid pair is one character.
    let v: Value = serde_json::from_str(r#""\ud83e\udd80""#).unwrap();
    assert_eq!(v, json!("🦀"));
    for bytes in [&b"{\"message\": \"\xff\"}"[..], b"{\"message\": \"\xc3\x28\"}", b"{\"\xed\xa0\x80\": 1}"] {
        assert!(serde_json::from_slice::<Value>(bytes).is_err());
    }
    // Numbers past f64: a parse error, not infinity.
    for text in ["1e400", "-1e400", "[1e309]"] {
        assert!(serde_json::from_str::<Value>(text).is_err(), "{text}");
    }
}

#[test]
fn huge_strings_are_refused_past_8_mib() {
    let fx = Fx::new();
    let job = fx.seeds["jobs"].clone();
    let limit = 8 * 1024 * 1024;
    let too_big = "x".repeat(limit + 1);
    for row in [
        json!({"job_id": job, "level": "info", "message": too_big}),
        json!({"job_id": job, "level": "info", "message": "m", "context": {"k": too_big}}),
        json!({"job_id": job, "level": "info", "message": "m", "context": [1, too_big]}),
    ] {
        let e = fx.b.insert("job_logs", &row).unwrap_err();
        assert!(e.to_string().contains("at most 8388608"), "{e}");
        assert!(e.to_string().len() < 300, "the message must not echo the input");
    }
    // Many pieces under the limit that add up past it: the jsonb value as a whole is refused too
    // (regression: PostgreSQL's own jsonb limit would have refused it only at replication time).
    let piece = "p".repeat(limit / 4);
    let e = fx
        .b
        .insert("job_logs", &json!({"job_id": job, "level": "info", "message": "m", "context": [piece, piece, piece, piece, piece]}))
        .unwrap_err();
    assert!(e.to_string().contains("as JSON text"), "{e}");
    let mut key_too_big = serde_json::Map::new();
    key_too_big.insert(too_big.clone(), json!(1));
    let e = fx
        .b
        .insert("job_logs", &json!({"job_id": job, "level": "info", "message": "m", "context": key_too_big}))
        .unwrap_err();
    assert!(e.to_string().len() < 300);
    assert!(fx.b.list("job_logs", &json!({"where": {"message": too_big}})).is_err());
    assert!(fx.b.get("wordstat_cache", &too_big).is_err());
    fx.unchanged("huge strings").unwrap();
    fx.pg_unchanged("huge strings").unwrap();

    // Exactly the limit is accepted, and reaches PostgreSQL intact.
    let at_limit = "y".repeat(limit);
    let row = fx.b.insert("job_logs", &json!({"job_id": job, "level": "info", "message": at_limit})).unwrap();
    fx.b.flush(Duration::from_secs(60)).unwrap();
    let len: i32 = fx
        .db
        .connect()
        .query_one(
            "SELECT octet_length(message) FROM job_logs WHERE id = $1::text::uuid",
            &[&row["id"].as_str().unwrap()],
        )
        .unwrap()
        .get(0);
    assert_eq!(len as usize, limit);
}

/// Large rows that are each valid must replicate even when a backlog of them lands in one
/// batch: 40 rows of 7 MiB jsonb are 280 MB of images, more than PostgreSQL's 256 MB limit on
/// one jsonb value.
#[test]
fn a_backlog_of_large_rows_replicates() {
    let db = common::migrated_db();
    let dir = tempfile::tempdir().unwrap();
    let blob = "x".repeat(7 * 1024 * 1024);
    {
        // Written while nothing replicates (PostgreSQL down, or a rollback): one backlog.
        let b =
            common::bridge_with(&db, dir.path(), BridgeOptions { replicate: false, ..Default::default() });
        for i in 0..40 {
            b.insert(
                "serpapi_results",
                &json!({"keyword": "k", "hash": format!("h{i}"), "raw_json": {"blob": blob}, "fetched_at": "2026-01-02T03:04:05Z"}),
            )
            .unwrap();
        }
        assert_eq!(b.status().unwrap().outbox_depth, 40);
    }
    let started = std::time::Instant::now();
    let b = common::bridge(&db, dir.path());
    b.flush(Duration::from_secs(300)).unwrap_or_else(|e| panic!("the backlog did not drain: {e}"));
    eprintln!("backlog: 40 rows of 7 MiB drained in {:?}", started.elapsed());
    let st = b.status().unwrap();
    assert_eq!((st.outbox_depth, st.dead_letters), (0, 0), "{st:?}");
    let n: i64 = db.connect().query_one("SELECT count(*) FROM serpapi_results", &[]).unwrap().get(0);
    assert_eq!(n, 40);
}

/// Regression (issue 14, item 6): a list could return 10,000 rows of up to 8 MiB each (about
/// 80 GB in the monolith's process; 40 such rows took 681 MB through the Python binding). Now a
/// list stops reading once its rows pass `MAX_LIST_BYTES` and says to page, from SQLite and from
/// PostgreSQL, through the generic and the typed API (the C ABI and the bindings: see
/// bindings/python/tests/test_bridge.py); pages below the bound work.
#[test]
fn a_list_is_bounded_in_bytes_and_says_to_page() {
    let db = common::migrated_db();
    let dir = tempfile::tempdir().unwrap();
    let b = common::bridge(&db, dir.path());
    let job = b.submit_job(&dualwrite::NewJob::new("big")).unwrap();
    let per_row = 7 << 20;
    let rows = dualwrite::MAX_LIST_BYTES / per_row + 1;
    let message = "m".repeat(per_row);
    for _ in 0..rows {
        b.insert("job_logs", &json!({"job_id": job.id, "level": "info", "message": message})).unwrap();
    }
    b.flush(Duration::from_secs(120)).unwrap();
    let filter = |limit: usize, offset: usize| json!({"where": {"job_id": job.id}, "order_by": "created_at", "limit": limit, "offset": offset});
    for source in [dualwrite::ReadSource::Sqlite, dualwrite::ReadSource::Postgres] {
        b.set_flag(dualwrite::FlagChange::ReadSource(source), "tests/hostile.rs", "bounded lists", true)
            .unwrap();
        for result in [
            b.list("job_logs", &filter(rows, 0)).map(|r| r.len()),
            b.list_job_logs(job.id, dualwrite::Paging::new(rows as u32, 0)).map(|r| r.len()),
        ] {
            match result {
                Err(Error::InvalidArgument { field, message }) => {
                    assert_eq!(field, "limit", "{source}");
                    assert!(message.contains("64 MiB") && message.contains("page"), "{source}: {message}");
                }
                other => panic!("{source}: {rows} rows of 7 MiB listed: {other:?}"),
            }
        }
        // Paged, every row comes back.
        let first = b.list("job_logs", &filter(rows / 2, 0)).unwrap();
        let rest = b.list("job_logs", &filter(rows, rows / 2)).map(|r| r.len());
        assert_eq!(first.len(), rows / 2, "{source}");
        assert!(rest.is_ok_and(|n| n == rows - rows / 2), "{source}");
        // One row is always returned, whatever its size.
        assert_eq!(b.list("job_logs", &filter(1, 0)).unwrap().len(), 1);
    }
    let reads = &b.status().unwrap().reads["job_logs"];
    assert!(reads.postgres > 0 && reads.fallbacks == 0, "{reads:?}");
}

/// Numbers at the edges of f64 inside jsonb are valid: they must reach PostgreSQL (numeric inside
/// jsonb) and come back as the same numbers, so the stores never disagree about them.
#[test]
fn extreme_numbers_in_jsonb_replicate_unchanged() {
    let fx = Fx::new();
    let job = fx.seeds["jobs"].clone();
    let text = r#"[1e308, -1.7976931348623157e308, 5e-324, 2.2250738585072014e-308, 1.2345678901234568e29,
        18446744073709551615, -9223372036854775808, 9007199254740993, 0.1, -0.0, 0, 1E+2, 123.456e-300]"#;
    let numbers: Value = serde_json::from_str(text).unwrap();
    let row = fx
        .b
        .insert("job_logs", &json!({"job_id": job, "level": "debug", "message": "n", "context": numbers}))
        .unwrap();
    fx.b.flush(Duration::from_secs(30)).unwrap();
    assert_eq!(fx.state().dead_letters, 0);
    common::assert_stores_equal(&fx.b, &fx.db);
    // What PostgreSQL holds, read as JSON, is what SQLite holds.
    let id = row["id"].as_str().unwrap();
    let pg: String = fx
        .db
        .connect()
        .query_one("SELECT context::text FROM job_logs WHERE id = $1::text::uuid", &[&id])
        .unwrap()
        .get(0);
    let pg: Value = serde_json::from_str(&pg).unwrap();
    assert_eq!(pg, row["context"], "PostgreSQL: {pg}");
    // Past f64 is a parse error, not infinity.
    assert!(serde_json::from_str::<Value>("[1e400]").is_err());

    // Any finite f64: what the caller gave is what each store gives back.
    let rows = std::cell::RefCell::new(Vec::new());
    check(
        "finite f64 in jsonb",
        prop::collection::vec(any::<f64>().prop_filter("finite", |f| f.is_finite()), 1..16),
        |floats| {
            let given = json!(floats);
            // Through the text path, as the C ABI receives it.
            let parsed: Value = serde_json::from_str(&given.to_string()).unwrap();
            prop_assert_eq!(
                &parsed,
                &given,
                "serde_json does not round-trip its own output (float_roundtrip)"
            );
            let row =
                fx.b.insert(
                    "job_logs",
                    &json!({"job_id": job, "level": "debug", "message": "f", "context": parsed}),
                )
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            // The same numbers (integral floats past 1e16 are kept as integers, as PostgreSQL does).
            let stored = row["context"].as_array().unwrap();
            prop_assert_eq!(stored.len(), floats.len());
            for (s, f) in stored.iter().zip(&floats) {
                prop_assert_eq!(s.as_f64(), Some(*f), "stored {} for {:e}", s, f);
            }
            let id = row["id"].as_str().unwrap().to_string();
            prop_assert_eq!(&fx.b.get("job_logs", &id).unwrap().unwrap()["context"], &row["context"]);
            rows.borrow_mut().push((id, row["context"].clone()));
            Ok(())
        },
    );
    fx.b.flush(Duration::from_secs(60)).unwrap();
    assert_eq!(fx.state().dead_letters, 0);
    common::assert_stores_equal(&fx.b, &fx.db);
    let mut pg = fx.db.connect();
    for (id, given) in rows.into_inner() {
        let text: String = pg
            .query_one("SELECT context::text FROM job_logs WHERE id = $1::text::uuid", &[&id])
            .unwrap()
            .get(0);
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), given, "PostgreSQL gives back {text}");
    }
}
