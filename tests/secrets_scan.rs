//! Invariant 7, the wide scan. tests/repo_secrets.rs proves the api_keys operations keep the
//! plaintext out of the outbox, the SQLite file, PostgreSQL, the logs and Debug output (raw and
//! hex). This file widens the net after a workload that puts, replaces, rotates, reads back,
//! lists, dead-letters and deletes API keys, with every log line captured at TRACE:
//!
//! - what is searched for: each plaintext raw, in hex (both cases) and in base64 (standard and
//!   URL-safe alphabets, all three alignments), and the encryption key itself the same ways;
//! - where: every log line, the `status()` JSON, the message of every failing api-key call, the
//!   `Debug` of every public type the workload touched, the outbox and the dead-letter table,
//!   the SQLite file and its WAL as bytes, every table of both PostgreSQL schemas (public and
//!   dualwrite) as text;
//! - a bad key source (missing, world- or group-readable, empty, too short, a directory, an unset
//!   variable) fails the api-key calls with a clear error naming the fix, while writes to every
//!   other table go on and replicate; a wrong key fails decryption with a clear error.
//!
//! Needs PostgreSQL: `pg_virtualenv -t -v 15 cargo test --test secrets_scan`.

mod common;

use dualwrite::{Bridge, BridgeOptions, Config, Error, KeySource, NewUser, SecretKey};
use serde_json::json;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

const FIRST: &[u8] = b"sk_live_SCAN_first_plaintext_Q8w2Zr";
const SECOND: &[u8] = b"sk_live_SCAN_second_plaintext_M4n7Xt";
const REFUSED: &[u8] = b"sk_live_SCAN_deadletter_plaintext_Hy6";
/// The key of `common::key_file`: a secret too (it must not land in a store or a log either).
const ENCRYPTION_KEY: &[u8] = b"test-key-0123456789abcdef-not-for-production";

// ----- capture every log line of this process at TRACE -----

fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        // try_init also routes the `log` records of the dependencies (tokio-postgres logs every
        // statement with its parameters at debug) into the same buffer.
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_span_events(tracing_subscriber::fmt::format::FmtSpan::FULL)
            .with_writer(move || SharedWriter(sink.clone()))
            .try_init()
            .expect("no other global subscriber or logger");
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

// ----- the needles -----

fn base64(bytes: &[u8], alphabet: &[u8; 64]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(alphabet[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

const STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Every form a secret could take in a haystack: raw, hex (lower/upper), and base64 in both
/// alphabets at the three alignments it can start at (only whole groups, which do not depend on
/// the bytes around it).
fn forms(secret: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = vec![
        ("raw".to_string(), secret.to_vec()),
        ("hex".to_string(), hex::encode(secret).into_bytes()),
        ("HEX".to_string(), hex::encode_upper(secret).into_bytes()),
    ];
    for (name, alphabet) in [("base64", STD), ("base64url", URL)] {
        for skip in 0..3 {
            let rest = &secret[skip..];
            let whole = rest.len() / 3 * 4;
            let enc = base64(rest, alphabet);
            out.push((format!("{name}@{skip}"), enc.as_bytes()[..whole].to_vec()));
        }
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> bool {
    needle.len() <= hay.len() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Fails the test naming the place and the form if any secret is in `hay`.
#[track_caller]
fn assert_clean(place: &str, hay: &[u8]) {
    for (label, secret) in
        [("first", FIRST), ("second", SECOND), ("refused", REFUSED), ("encryption key", ENCRYPTION_KEY)]
    {
        for (form, needle) in forms(secret) {
            assert!(!find(hay, &needle), "the {label} secret ({form}) is in {place}");
        }
    }
}

#[test]
fn base64_helper_matches_known_vectors() {
    assert_eq!(base64(b"foobar", STD), "Zm9vYmFy");
    assert_eq!(base64(b"fooba", STD), "Zm9vYmE");
    assert_eq!(base64(&[0xfb, 0xff], URL), "-_8");
    // A secret found inside a longer base64 text, whatever its offset.
    for pad in 0..3 {
        let mut buf = vec![b'.'; pad];
        buf.extend_from_slice(FIRST);
        buf.extend_from_slice(b"tail");
        let hay = base64(&buf, STD);
        assert!(forms(FIRST).iter().any(|(_, n)| find(hay.as_bytes(), n)), "offset {pad}");
    }
}

// ----- the workload and the scan -----

fn sqlite_text_of(path: &Path, sql: &str) -> String {
    let c = rusqlite::Connection::open(path).unwrap();
    let mut stmt = c.prepare(sql).unwrap();
    let rows: Vec<String> =
        stmt.query_map([], |r| r.get::<_, String>(0)).unwrap().collect::<Result<_, _>>().unwrap();
    rows.join("\n")
}

#[test]
fn after_an_api_keys_workload_no_secret_is_anywhere() {
    let logs = captured_logs();
    let db = common::migrated_db();
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(&db, dir.path());
    let b = common::bridge(&db, dir.path());
    let mut shown: Vec<(String, String)> = Vec::new();
    let mut show = |place: &str, text: String| shown.push((place.to_string(), text));

    let owner = b.create_user(&NewUser::new("scan@example.com", "Scan")).unwrap();
    let other = b.create_user(&NewUser::new("other@example.com", "Other")).unwrap();
    let meta = json!({"label": "production", "rotates": "monthly"});
    let k1 = b.put_api_key(owner.id, "serpapi", FIRST, Some(&meta)).unwrap();
    let k2 = b.put_api_key(owner.id, "serpapi", FIRST, None).unwrap();
    let k3 = b.rotate_api_key(owner.id, "serpapi", SECOND).unwrap();
    let k4 = b.put_api_key(other.id, "openai", FIRST, None).unwrap();
    assert_eq!(b.api_key_secret(owner.id, "serpapi").unwrap().expose(), SECOND);
    assert_eq!(b.api_key_secret(other.id, "openai").unwrap().expose(), FIRST);
    let secret = b.api_key_secret(owner.id, "serpapi").unwrap();
    show("Debug of ApiKey", format!("{k1:?} {k2:?} {k3:?} {k4:?}"));
    show("Debug of Secret", format!("{secret:?}"));
    show("Debug of list_api_keys", format!("{:?}", b.list_api_keys(owner.id).unwrap()));
    show("Debug of get_api_key", format!("{:?}", b.get_api_key(owner.id, "serpapi").unwrap()));
    show(
        "the generic get of api_keys",
        serde_json::to_string(&b.get("api_keys", &k3.id.to_string()).unwrap()).unwrap(),
    );
    show(
        "the generic list of api_keys",
        serde_json::to_string(&b.list("api_keys", &json!({})).unwrap()).unwrap(),
    );
    show("Serialize of ApiKey", serde_json::to_string(&k3).unwrap());

    // Failing api-key calls: their messages and Debug.
    let failures: Vec<(&str, dualwrite::Result<()>)> = vec![
        ("put for an unknown owner", b.put_api_key(uuid::Uuid::new_v4(), "serpapi", FIRST, None).map(drop)),
        ("put with an empty provider", b.put_api_key(owner.id, "", FIRST, None).map(drop)),
        ("put of an empty secret", b.put_api_key(owner.id, "x", b"", None).map(drop)),
        ("rotate of a missing key", b.rotate_api_key(owner.id, "nobody", SECOND).map(drop)),
        ("read of a missing key", b.api_key_secret(owner.id, "nobody").map(drop)),
        ("put with bad metadata", b.put_api_key(owner.id, "x", FIRST, Some(&json!("not an object\u{0}"))).map(drop)),
        ("put of a 64 MiB secret", b.put_api_key(owner.id, "big", &FIRST.repeat((64 << 20) / FIRST.len() + 1), None).map(drop)),
        ("generic insert of a ciphertext", b.insert("api_keys", &json!({"owner_id": owner.id, "provider": "g", "secret_ciphertext": format!("\\x{}", hex::encode(FIRST))})).map(drop)),
    ];
    for (what, r) in failures {
        let e = r.expect_err(what);
        show(&format!("the error of {what}"), format!("{e} / {e:?}"));
    }

    // A change PostgreSQL refuses (a CHECK only it has): the api_keys row goes to the dead letters.
    db.connect()
        .batch_execute("ALTER TABLE api_keys ADD CONSTRAINT scan_refuses CHECK (provider <> 'refused')")
        .unwrap();
    b.put_api_key(owner.id, "refused", REFUSED, None).unwrap();
    b.flush(Duration::from_secs(60)).unwrap();
    let st = b.status().unwrap();
    assert_eq!(st.dead_letters, 1, "{st:?}");
    let letters = b.dead_letters().unwrap();
    assert_eq!(letters[0].table_name, "api_keys");
    show("Debug of DeadLetter", format!("{letters:?}"));
    show("status() as JSON", serde_json::to_string(&st).unwrap());
    show("Debug of Status", format!("{st:?}"));
    show("Debug of Flags", format!("{:?}", b.flags()));
    show("Debug of Config", format!("{:?}", b.config()));
    show("Debug of PgConfig", format!("{:?}", db.config));
    show("Debug of SecretKey", format!("{:?}", SecretKey::load(&config.key_source).unwrap()));
    show("Debug of BridgeOptions", format!("{:?}", BridgeOptions::default()));
    // Retrying re-enqueues the row's current state; dropping it leaves nothing behind.
    assert!(b.retry_dead_letter(letters[0].seq).unwrap());
    b.flush(Duration::from_secs(60)).unwrap();
    assert_eq!(b.status().unwrap().dead_letters, 1, "still refused by the CHECK");
    let sqlite = &config.sqlite_path;
    show("the dead-letter table", sqlite_text_of(sqlite, "SELECT quote(seq) || table_name || row_key || op || coalesce(row_image, '') || error FROM _dualwrite_dead_letters"));
    db.connect().batch_execute("ALTER TABLE api_keys DROP CONSTRAINT scan_refuses").unwrap();
    let seq = b.dead_letters().unwrap()[0].seq;
    assert!(b.retry_dead_letter(seq).unwrap());

    // Deletes, then everything replicated.
    assert!(b.delete_api_key(other.id, "openai").unwrap());
    b.flush(Duration::from_secs(60)).unwrap();
    assert_eq!(b.status().unwrap().dead_letters, 0);
    common::assert_stores_equal(&b, &db);

    // The outbox while it holds api_keys records: a second bridge that does not replicate.
    b.shutdown(Duration::from_secs(5));
    drop(b);
    let quiet =
        common::bridge_with(&db, dir.path(), BridgeOptions { replicate: false, ..Default::default() });
    quiet.rotate_api_key(owner.id, "serpapi", FIRST).unwrap();
    quiet.put_api_key(owner.id, "third", SECOND, None).unwrap();
    let outbox = sqlite_text_of(
        sqlite,
        "SELECT quote(seq) || table_name || row_key || op || coalesce(row_image, '') FROM _dualwrite_outbox",
    );
    assert!(
        outbox.contains("api_keys") && outbox.contains("secret_ciphertext"),
        "the outbox holds the records"
    );
    show("the outbox", outbox);
    drop(quiet);

    // Scan what was shown.
    for (place, text) in &shown {
        assert_clean(place, text.as_bytes());
    }
    // The SQLite files as bytes (free pages included).
    for suffix in ["", "-wal", "-shm"] {
        let mut p = sqlite.clone().into_os_string();
        p.push(suffix);
        if let Ok(bytes) = std::fs::read(&p) {
            assert_clean(&p.to_string_lossy(), &bytes);
        }
    }
    // Every table of both PostgreSQL schemas, as text.
    let mut pg = db.connect();
    let tables: Vec<String> = pg
        .query(
            "SELECT format('%I.%I', table_schema, table_name) FROM information_schema.tables \
             WHERE table_schema IN ('public', 'dualwrite') AND table_type = 'BASE TABLE'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(tables.len() >= 15, "{tables:?}");
    for t in &tables {
        let rows: Vec<String> =
            pg.query(&format!("SELECT t::text FROM {t} t"), &[]).unwrap().iter().map(|r| r.get(0)).collect();
        assert_clean(&format!("PostgreSQL {t}"), rows.concat().as_bytes());
    }
    // The log as the workload left it (the query below binds the key as a parameter, and
    // tokio-postgres logs parameters at debug: that is this test's doing, not the library's,
    // which never sends the key to PostgreSQL).
    let text = logs.lock().unwrap_or_else(|p| p.into_inner()).clone();
    // PostgreSQL decrypts what it holds with the same key: the ciphertext is the real thing.
    let plain: String = pg
        .query_one(
            "SELECT pgp_sym_decrypt(secret_ciphertext, $1) FROM api_keys WHERE provider = 'serpapi'",
            &[&std::str::from_utf8(ENCRYPTION_KEY).unwrap()],
        )
        .unwrap()
        .get(0);
    assert_eq!(plain.as_bytes(), SECOND);
    // Every log line of the workload, TRACE included, the driver's debug lines too.
    assert!(find(&text, b"executing statement"), "the driver's debug lines are captured");
    assert!(!text.is_empty(), "the workload logged nothing: is the subscriber installed?");
    assert_clean("the log", &text);
    eprintln!(
        "secrets scan: {} places shown, {} PostgreSQL tables, {} bytes of logs, SQLite file and WAL: clean",
        shown.len(),
        tables.len(),
        text.len()
    );
}

// ----- bad key sources -----

fn key_in(dir: &Path, content: &[u8], mode: u32) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join("key");
    std::fs::write(&p, content).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

/// What is wrong, how to make it in a directory, what the message must say, the kind of error.
type BadSource = (&'static str, Box<dyn Fn(&Path) -> KeySource>, &'static [&'static str], fn(&Error) -> bool);

#[test]
fn a_bad_key_source_fails_api_key_calls_clearly_and_nothing_else() {
    captured_logs();
    let db = common::migrated_db();
    let cases: Vec<BadSource> = vec![
        (
            "a missing key file",
            Box::new(|d| KeySource::File(d.join("no-such-key"))),
            &["no-such-key", "cannot read it"],
            |e| matches!(e, Error::Config(_)),
        ),
        (
            "a world-readable key file",
            Box::new(|d| KeySource::File(key_in(d, ENCRYPTION_KEY, 0o644))),
            &["chmod 600", "group or others", "644"],
            |e| matches!(e, Error::Config(_)),
        ),
        (
            "a group-readable key file",
            Box::new(|d| KeySource::File(key_in(d, ENCRYPTION_KEY, 0o640))),
            &["chmod 600"],
            |e| matches!(e, Error::Config(_)),
        ),
        ("an empty key file", Box::new(|d| KeySource::File(key_in(d, b"\n", 0o600))), &["is empty"], |e| {
            matches!(e, Error::Config(_))
        }),
        (
            "a key that is too short",
            Box::new(|d| KeySource::File(key_in(d, b"short\n", 0o600))),
            &["shorter than 16 bytes"],
            |e| matches!(e, Error::Config(_) | Error::Crypto(_)),
        ),
        (
            "a directory as the key file",
            Box::new(|d| {
                let p = d.join("keydir");
                std::fs::create_dir(&p).unwrap();
                KeySource::File(p)
            }),
            &["not a regular file"],
            |e| matches!(e, Error::Config(_)),
        ),
        (
            "an unset key variable",
            Box::new(|_| KeySource::Env("DUALWRITE_SCAN_TEST_KEY_NEVER_SET".into())),
            &["DUALWRITE_SCAN_TEST_KEY_NEVER_SET", "is not set"],
            |e| matches!(e, Error::Config(_)),
        ),
    ];
    for (what, source, mentions, kind) in cases {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            sqlite_path: dir.path().join("monolith.sqlite3"),
            postgres: Some(db.config.clone()),
            key_source: source(dir.path()),
        };
        // Opening works: only the secrets need the key.
        let b =
            Bridge::open(config, BridgeOptions::default()).unwrap_or_else(|e| panic!("{what}: open: {e}"));
        let owner =
            b.create_user(&NewUser::new(format!("{}@example.com", uuid::Uuid::new_v4()), "K")).unwrap();
        // Nothing in flight, so only a failed call could change the depth under the check.
        b.flush(std::time::Duration::from_secs(60)).unwrap();
        let depth = b.status().unwrap().outbox_depth;
        for (call, r) in [
            ("put", b.put_api_key(owner.id, "serpapi", FIRST, None).map(drop)),
            ("rotate", b.rotate_api_key(owner.id, "serpapi", SECOND).map(drop)),
            ("read", b.api_key_secret(owner.id, "serpapi").map(drop)),
        ] {
            let e = r.expect_err(&format!("{what}: {call} must fail"));
            assert!(kind(&e), "{what}: {call}: wrong kind of error: {e:?}");
            let m = e.to_string();
            assert!(m.contains("secret key"), "{what}: {call}: {m}");
            for s in mentions {
                assert!(m.contains(s), "{what}: {call}: the message should say {s:?}: {m}");
            }
            assert_clean(&format!("the error of {call} with {what}"), format!("{m} {e:?}").as_bytes());
        }
        assert_eq!(b.status().unwrap().outbox_depth, depth, "{what}: a failed api-key call wrote something");
        assert!(b.list_api_keys(owner.id).unwrap().is_empty());
        // Everything else works and replicates.
        let job = b.insert("jobs", &json!({"type": "still-works", "owner_id": owner.id})).unwrap();
        b.patch("jobs", job["id"].as_str().unwrap(), &json!({"priority": "high"})).unwrap();
        b.flush(Duration::from_secs(60)).unwrap_or_else(|e| panic!("{what}: {e}"));
        let n: i64 = db
            .connect()
            .query_one(
                "SELECT count(*) FROM jobs WHERE id = $1::text::uuid AND priority = 'high'",
                &[&job["id"].as_str().unwrap()],
            )
            .unwrap()
            .get(0);
        assert_eq!(n, 1, "{what}: the job did not replicate");
        b.shutdown(Duration::from_secs(5));
    }
}

#[test]
fn a_wrong_key_fails_decryption_with_a_clear_error() {
    captured_logs();
    let db = common::migrated_db();
    let dir = tempfile::tempdir().unwrap();
    let right =
        common::bridge_with(&db, dir.path(), BridgeOptions { replicate: false, ..Default::default() });
    let owner = right.create_user(&NewUser::new("wrong@example.com", "W")).unwrap();
    right.put_api_key(owner.id, "serpapi", FIRST, None).unwrap();
    drop(right);

    let key_dir = tempfile::tempdir().unwrap();
    let other_key = key_in(key_dir.path(), b"a different key, long enough\n", 0o600);
    let config = Config {
        sqlite_path: dir.path().join("monolith.sqlite3"),
        postgres: Some(db.config.clone()),
        key_source: KeySource::File(other_key),
    };
    let wrong = Bridge::open(config, BridgeOptions { replicate: false, ..Default::default() }).unwrap();
    let e = wrong.api_key_secret(owner.id, "serpapi").unwrap_err();
    assert!(matches!(e, Error::Crypto(_)), "{e:?}");
    assert!(e.to_string().contains("wrong key"), "{e}");
    assert_clean("the wrong-key error", format!("{e} {e:?}").as_bytes());
    assert!(!e.to_string().contains("a different key"), "the message shows the key: {e}");
    // The record itself is still readable without its secret.
    assert_eq!(wrong.get_api_key(owner.id, "serpapi").unwrap().unwrap().provider, "serpapi");
    // The logs of the process hold neither key.
    let text = captured_logs().lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert!(!find(&text, b"a different key"), "the wrong key is in the log");
    assert_clean("the log", &text);
}
