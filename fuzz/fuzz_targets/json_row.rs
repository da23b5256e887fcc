//! Fuzz the generic JSON API over (table name, JSON row, filter, key) against a bridge with
//! replication off on a temporary SQLite file.
//!
//! Checked on every input: no panic (libFuzzer reports one as a crash); a refused write changes
//! nothing (the outbox depth and the row count of the table stay as they were); an accepted
//! write adds exactly one outbox record; what `get` returns after an accepted insert is a JSON
//! object holding the row's key. The inputs are JSON *text*, so the parser's limits (recursion,
//! surrogates, invalid UTF-8) are on the path too.
#![no_main]

use arbitrary::Arbitrary;
use dualwrite::{Bridge, BridgeOptions, Config, KeySource};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use std::sync::OnceLock;

#[derive(Arbitrary, Debug)]
enum TableName {
    /// One of the registry's tables, by position (wrapped).
    Known(u8),
    /// Anything else (quotes, semicolons, unicode...): must be refused.
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Op {
    Insert,
    Patch,
    Get,
    List,
    Delete,
}

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    table: TableName,
    op: Op,
    /// The key for get/patch/delete; empty means "the last row this run inserted".
    key: &'a str,
    /// JSON text of the row (insert/patch) or the filter (list), parsed here as the C ABI does.
    json: &'a [u8],
}

struct Fixture {
    bridge: Bridge,
    _dir: tempfile::TempDir,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("key");
        std::fs::write(&key, "fuzz-key-0123456789abcdef").expect("key file");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        }
        let config = Config {
            sqlite_path: dir.path().join("fuzz.sqlite3"),
            postgres: None,
            key_source: KeySource::File(key),
        };
        let bridge = Bridge::open(config, BridgeOptions { replicate: false, ..Default::default() })
            .expect("open the bridge");
        Fixture { bridge, _dir: dir }
    })
}

static LAST_KEY: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

fn rows(b: &Bridge, table: &str) -> usize {
    b.list(table, &serde_json::json!({"limit": 10_000})).map(|r| r.len()).unwrap_or(0)
}

fuzz_target!(|input: Input<'_>| {
    let f = fixture();
    let b = &f.bridge;
    let table = match &input.table {
        TableName::Known(i) => {
            let t = &dualwrite::schema::TABLES;
            t[*i as usize % t.len()].name.to_string()
        }
        TableName::Other(s) => s.clone(),
    };
    let known = dualwrite::schema::table(&table).is_some();
    let key = if input.key.is_empty() {
        LAST_KEY.lock().map(|k| k.clone()).unwrap_or_default()
    } else {
        input.key.to_string()
    };
    let parsed: Option<Value> = serde_json::from_slice(input.json).ok();
    let depth_before = b.status().expect("status").outbox_depth;
    let count_before = if known { rows(b, &table) } else { 0 };

    let wrote = match input.op {
        Op::Insert => parsed.as_ref().map(|v| b.insert(&table, v).map(Some)),
        Op::Patch => parsed.as_ref().map(|v| b.patch(&table, &key, v).map(|_| None)),
        Op::Delete => Some(b.delete(&table, &key).map(|_| None)),
        Op::Get => {
            if let Ok(Some(row)) = b.get(&table, &key) {
                let t = dualwrite::schema::table(&table).expect("a get succeeded on a known table");
                assert!(row.contains_key(t.key), "a row without its key: {row:?}");
            }
            None
        }
        Op::List => {
            if let Some(v) = &parsed {
                if let Ok(list) = b.list(&table, v) {
                    assert!(list.len() <= 10_000, "more rows than the largest limit");
                }
            }
            None
        }
    };
    if !known {
        // No name outside the registry reaches SQL: every call on it is refused.
        if let Some(r) = &wrote {
            assert!(r.is_err(), "a write to unknown table {table:?} succeeded");
        }
    }
    let depth_after = b.status().expect("status").outbox_depth;
    match wrote {
        Some(Err(e)) => {
            assert!(!e.to_string().is_empty());
            assert_eq!(depth_after, depth_before, "a refused write ({e}) changed the outbox");
            if known {
                assert_eq!(rows(b, &table), count_before, "a refused write ({e}) changed {table}");
            }
        }
        Some(Ok(inserted)) => {
            // A delete of a missing row or a patch that changed nothing may add no record.
            assert!(
                depth_after - depth_before <= 1,
                "one write, {} outbox records",
                depth_after - depth_before
            );
            if let Some(row) = inserted {
                let t = dualwrite::schema::table(&table).expect("insert succeeded on a known table");
                let k = row[t.key].as_str().expect("the key is text").to_string();
                let back = b.get(&table, &k).expect("get after insert").expect("the inserted row is there");
                assert_eq!(back, row, "the row read back differs from the row returned by insert");
                if let Ok(mut last) = LAST_KEY.lock() {
                    *last = k;
                }
            }
        }
        None => assert_eq!(depth_after, depth_before, "a read changed the outbox"),
    }
});
