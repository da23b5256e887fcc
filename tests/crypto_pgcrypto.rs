//! SecretKey against the real PostgreSQL pgcrypto, both directions.
//!
//! Needs a server: `pg_virtualenv cargo test --test crypto_pgcrypto` (scripts/test does that).

use std::collections::HashMap;
use std::sync::Mutex;

use dualwrite::{Error, PgConfig, SecretKey};

const KEY: &str = "pgcrypto-compat test key 0123456789";

fn client() -> postgres::Client {
    static SETUP: Mutex<()> = Mutex::new(());
    let vars: HashMap<String, String> = std::env::vars().collect();
    if !vars.contains_key("PGHOST") {
        panic!(
            "no PostgreSQL configured: run scripts/test (it starts a throw-away cluster with pg_virtualenv) or set DUALWRITE_PG_URL / PG* variables"
        );
    }
    let cfg = PgConfig::from_pg_vars(&vars).expect("PGHOST is set");
    let mut c = cfg.connect().unwrap_or_else(|e| panic!("cannot connect to {}: {e}", cfg.description));
    // Concurrent CREATE EXTENSION IF NOT EXISTS can race: one test at a time.
    let _guard = SETUP.lock().unwrap_or_else(|p| p.into_inner());
    c.batch_execute("CREATE EXTENSION IF NOT EXISTS pgcrypto").expect("pgcrypto available");
    c
}

fn key() -> SecretKey {
    SecretKey::from_bytes(KEY.as_bytes()).unwrap()
}

fn texts() -> Vec<String> {
    vec![
        "sk_live_51HqLyjWDarjtT1zdp7dc".to_string(),
        "naïve Schlüssel ключ 秘密の鍵 🔑".to_string(),
        "line one\nline two\r\nline three\n".to_string(),
        String::new(),
        four_kib_secret(),
    ]
}

/// Exactly 4096 bytes, mixing ASCII and multi-byte characters.
fn four_kib_secret() -> String {
    let mut s = String::new();
    for ch in "abcdefghijklmnopqrstuvwxyz0123456789é€".chars().cycle() {
        if s.len() + ch.len_utf8() > 4096 {
            break;
        }
        s.push(ch);
    }
    while s.len() < 4096 {
        s.push('x');
    }
    s
}

#[test]
fn postgres_decrypts_what_we_encrypt() {
    let mut c = client();
    let k = key();
    for plain in texts() {
        let ct = k.encrypt(plain.as_bytes()).unwrap();
        let row = c
            .query_one("SELECT pgp_sym_decrypt($1::bytea, $2)", &[&ct, &k.expose_for_sql()])
            .unwrap_or_else(|e| panic!("pgp_sym_decrypt failed on a {}-byte text: {e}", plain.len()));
        assert_eq!(row.get::<_, String>(0), plain);
        let row =
            c.query_one("SELECT pgp_sym_decrypt_bytea($1::bytea, $2)", &[&ct, &k.expose_for_sql()]).unwrap();
        assert_eq!(row.get::<_, Vec<u8>>(0), plain.as_bytes());
    }
}

#[test]
fn postgres_decrypts_binary_secrets_as_bytea() {
    let mut c = client();
    let k = key();
    let plain: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
    let ct = k.encrypt(&plain).unwrap();
    let row =
        c.query_one("SELECT pgp_sym_decrypt_bytea($1::bytea, $2)", &[&ct, &k.expose_for_sql()]).unwrap();
    assert_eq!(row.get::<_, Vec<u8>>(0), plain);
    // Not UTF-8: marked binary, which the text variant refuses ("Not text data").
    let text = c.query_one("SELECT pgp_sym_decrypt($1::bytea, $2)", &[&ct, &k.expose_for_sql()]);
    assert!(text.is_err());
}

#[test]
fn postgres_reads_a_non_ascii_key() {
    let mut c = client();
    let k = SecretKey::from_bytes("clé secrète — ключ — 鍵".as_bytes()).unwrap();
    let ct = k.encrypt(b"value").unwrap();
    let row = c.query_one("SELECT pgp_sym_decrypt($1::bytea, $2)", &[&ct, &k.expose_for_sql()]).unwrap();
    assert_eq!(row.get::<_, String>(0), "value");
    let row = c.query_one("SELECT pgp_sym_encrypt('other', $1)", &[&k.expose_for_sql()]).unwrap();
    assert_eq!(k.decrypt(&row.get::<_, Vec<u8>>(0)).unwrap(), b"other");
}

/// True when the packet after the leading SKESK has a partial body length (RFC 9580 4.2.1.4).
fn seipd_uses_partial_lengths(ct: &[u8]) -> bool {
    assert_eq!(ct[0], 0xC3, "new-format SKESK first");
    let next = 2 + ct[1] as usize;
    assert_eq!(ct[next], 0xD2, "new-format SEIPD second");
    (224..255).contains(&ct[next + 1])
}

#[test]
fn we_decrypt_what_postgres_encrypts() {
    let mut c = client();
    let k = key();
    let mut all = texts();
    let big = "pgcrypto partial body lengths ✓ ".repeat(100 * 1024 / 34 + 1);
    all.push(big.clone());
    for options in ["", "cipher-algo=aes256, compress-algo=0"] {
        for plain in &all {
            let row = c
                .query_one("SELECT pgp_sym_encrypt($1, $2, $3)", &[plain, &k.expose_for_sql(), &options])
                .unwrap();
            let ct: Vec<u8> = row.get(0);
            let back =
                k.decrypt(&ct).unwrap_or_else(|e| panic!("options '{options}', {} bytes: {e}", plain.len()));
            assert_eq!(back, plain.as_bytes(), "options '{options}'");
            if plain.len() == big.len() {
                assert!(seipd_uses_partial_lengths(&ct), "100 KiB should be streamed");
            }
        }
    }
}

#[test]
fn we_decrypt_postgres_option_variants() {
    let mut c = client();
    let k = key();
    let plain = "variant test: ünïcödé, repeated repeated repeated repeated";
    for options in [
        "cipher-algo=aes128",
        "cipher-algo=aes192",
        "cipher-algo=aes256, s2k-digest-algo=sha256",
        "compress-algo=1",
        "compress-algo=2, compress-level=9",
        "sess-key=1",
        "sess-key=1, cipher-algo=aes256",
        "s2k-mode=1",
        "s2k-count=65011712",
    ] {
        let row = c
            .query_one("SELECT pgp_sym_encrypt($1, $2, $3)", &[&plain, &k.expose_for_sql(), &options])
            .unwrap_or_else(|e| panic!("pgp_sym_encrypt with '{options}': {e}"));
        let back = k.decrypt(&row.get::<_, Vec<u8>>(0)).unwrap_or_else(|e| panic!("'{options}': {e}"));
        assert_eq!(back, plain.as_bytes(), "options '{options}'");
    }
    // Binary literal written by pgp_sym_encrypt_bytea.
    let bin: Vec<u8> = vec![0, 159, 146, 150, 255];
    let row = c.query_one("SELECT pgp_sym_encrypt_bytea($1, $2)", &[&bin, &k.expose_for_sql()]).unwrap();
    assert_eq!(k.decrypt(&row.get::<_, Vec<u8>>(0)).unwrap(), bin);
}

#[test]
fn messages_without_mdc_are_refused() {
    let mut c = client();
    let k = key();
    let row = c
        .query_one("SELECT pgp_sym_encrypt('malleable', $1, 'disable-mdc=1')", &[&k.expose_for_sql()])
        .unwrap();
    let err = k.decrypt(&row.get::<_, Vec<u8>>(0)).unwrap_err();
    assert!(matches!(err, Error::Crypto(_)), "{err:?}");
    // Regression (issue 14, item 9): it was refused as "wrong key, or … tampered with"; the
    // message now says what it is, with the right key as with a wrong one.
    let msg = err.to_string();
    assert!(msg.contains("no integrity check") && msg.contains("disable-mdc"), "{msg}");
    assert!(!msg.contains("wrong key"), "{msg}");
    let wrong = SecretKey::from_bytes(b"definitely not the right key").unwrap();
    let msg = wrong.decrypt(&row.get::<_, Vec<u8>>(0)).unwrap_err().to_string();
    assert!(msg.contains("disable-mdc"), "{msg}");
}

#[test]
fn wrong_key_fails_on_both_sides() {
    let mut c = client();
    let k = key();
    let wrong = SecretKey::from_bytes(b"definitely not the right key").unwrap();

    // Ours -> PostgreSQL with the wrong key.
    let ct = k.encrypt(b"secret value").unwrap();
    for sql in ["SELECT pgp_sym_decrypt($1::bytea, $2)", "SELECT pgp_sym_decrypt_bytea($1::bytea, $2)"] {
        let r = c.query_one(sql, &[&ct, &wrong.expose_for_sql()]);
        let e = r.expect_err("PostgreSQL decrypted with the wrong key");
        let shown = Error::from(e).to_string();
        assert!(shown.contains("Wrong key or corrupt data"), "{shown}");
    }

    // PostgreSQL -> ours with the wrong key.
    for options in ["", "cipher-algo=aes256, compress-algo=0", "sess-key=1"] {
        let row = c
            .query_one("SELECT pgp_sym_encrypt('secret value', $1, $2)", &[&k.expose_for_sql(), &options])
            .unwrap();
        let ct: Vec<u8> = row.get(0);
        let err = wrong.decrypt(&ct).unwrap_err();
        assert!(matches!(err, Error::Crypto(_)), "{err:?}");
        assert!(!err.to_string().contains("secret value"));
        assert_eq!(k.decrypt(&ct).unwrap(), b"secret value");
    }
}
