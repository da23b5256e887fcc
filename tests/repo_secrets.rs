//! Invariant 7 for the api_keys operations: a plaintext secret is found nowhere but in the
//! caller's hands: not in the outbox, not in the SQLite file, not in PostgreSQL, not in a log
//! line, not in Debug output or an error message. (Checked as raw bytes and as hex, the bytea
//! wire form.)
//!
//! Needs PostgreSQL: `pg_virtualenv -v 15 cargo test --test repo_secrets`.

mod common;

use dualwrite::{BridgeOptions, NewUser, SecretKey};
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

const FIRST: &str = "sk_live_FIRST_plaintext_marker_7f3a9c";
const SECOND: &str = "sk_live_SECOND_plaintext_marker_0b12de";

/// Every log line of this test process (all levels), for scanning.
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || SharedWriter(sink.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("no other global subscriber");
        buf
    })
    .clone()
}

struct SharedWriter(Arc<Mutex<Vec<u8>>>);

impl Write for SharedWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Whether `haystack` holds any of the plaintexts, raw or hex-encoded (either case).
fn leaks(haystack: &[u8]) -> Option<&'static str> {
    let hay_lower = haystack.to_ascii_lowercase();
    for p in [FIRST, SECOND] {
        let raw = p.as_bytes();
        let hex = hex::encode(raw);
        if haystack.windows(raw.len()).any(|w| w == raw)
            || hay_lower.windows(hex.len()).any(|w| w == hex.as_bytes())
        {
            return Some(p);
        }
    }
    None
}

#[test]
fn no_plaintext_secret_in_the_outbox_either_store_a_log_line_or_debug_output() {
    let logs = captured_logs();
    let db = common::migrated_db();
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(&db, dir.path());

    // First without replication, so the outbox keeps every record for inspection.
    let b = common::bridge_with(&db, dir.path(), BridgeOptions { replicate: false, ..Default::default() });
    let owner = b.create_user(&NewUser::new("ann@example.com", "Ann")).unwrap();
    let key = b.put_api_key(owner.id, "serpapi", FIRST.as_bytes(), None).unwrap();
    let again = b.put_api_key(owner.id, "serpapi", FIRST.as_bytes(), None).unwrap();
    let rotated = b.rotate_api_key(owner.id, "serpapi", SECOND.as_bytes()).unwrap();
    let secret = b.api_key_secret(owner.id, "serpapi").unwrap();
    assert_eq!(secret.expose(), SECOND.as_bytes());

    // Debug output and error messages.
    for shown in [
        format!("{secret:?}"),
        format!("{key:?} {again:?} {rotated:?}"),
        format!("{:?}", b.list_api_keys(owner.id).unwrap()),
        format!("{:?}", b.put_api_key(uuid::Uuid::new_v4(), "serpapi", FIRST.as_bytes(), None)),
        format!("{}", b.put_api_key(uuid::Uuid::new_v4(), "serpapi", FIRST.as_bytes(), None).unwrap_err()),
        format!("{:?}", b.put_api_key(owner.id, "", FIRST.as_bytes(), None)),
    ] {
        assert_eq!(leaks(shown.as_bytes()), None, "leaked in {shown}");
    }

    // The outbox: api_keys images carry the ciphertext, never the plaintext.
    let lite = rusqlite::Connection::open(&config.sqlite_path).unwrap();
    let images: Vec<String> = lite
        .prepare("SELECT row_image FROM _dualwrite_outbox WHERE table_name = 'api_keys'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(images.len(), 3, "put, put (replace), rotate");
    let sk = SecretKey::load(&config.key_source).unwrap();
    for (image, expected) in images.iter().zip([FIRST, FIRST, SECOND]) {
        assert_eq!(leaks(image.as_bytes()), None, "plaintext in the outbox: {image}");
        let v: serde_json::Value = serde_json::from_str(image).unwrap();
        let ct = v["secret_ciphertext"].as_str().unwrap().strip_prefix("\\x").unwrap();
        assert_eq!(
            sk.decrypt(&hex::decode(ct).unwrap()).unwrap(),
            expected.as_bytes(),
            "the image holds the ciphertext"
        );
    }
    let all_images: Vec<String> = lite
        .prepare("SELECT coalesce(row_image, '') FROM _dualwrite_outbox")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(leaks(all_images.concat().as_bytes()), None);
    drop(lite);

    // The SQLite files as bytes (database and WAL): no plaintext anywhere, not even in free pages.
    for suffix in ["", "-wal"] {
        let mut path = config.sqlite_path.clone().into_os_string();
        path.push(suffix);
        if let Ok(bytes) = std::fs::read(&path) {
            assert_eq!(leaks(&bytes), None, "plaintext in {}", path.to_string_lossy());
        }
    }

    // Now replicate and look in PostgreSQL: the table and the bridge's own schema.
    drop(b);
    let b = common::bridge(&db, dir.path());
    b.flush(Duration::from_secs(30)).unwrap();
    common::assert_stores_equal(&b, &db);
    assert_eq!(b.status().unwrap().dead_letters, 0);
    let mut pg = db.connect();
    let dump: Vec<String> = pg
        .query("SELECT t::text FROM api_keys t UNION ALL SELECT r::text FROM dualwrite.row_revisions r", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(!dump.is_empty());
    assert_eq!(leaks(dump.concat().as_bytes()), None, "plaintext in PostgreSQL: {dump:?}");
    let raw: Vec<u8> = pg.query_one("SELECT secret_ciphertext FROM api_keys", &[]).unwrap().get(0);
    assert_eq!(leaks(&raw), None);
    let plain: String = pg
        .query_one("SELECT pgp_sym_decrypt(secret_ciphertext, $1) FROM api_keys", &[&sk.expose_for_sql()])
        .unwrap()
        .get(0);
    assert_eq!(plain, SECOND);

    // No log line of this process (replicator included) mentions a plaintext.
    let text = logs.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert_eq!(leaks(&text), None, "plaintext in a log line");
}
