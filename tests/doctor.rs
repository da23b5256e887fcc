//! `dualwrite migrate` and `dualwrite doctor` as a user runs them.

mod common;

use std::process::{Command, Output};

struct Env {
    _dir: tempfile::TempDir,
    sqlite: std::path::PathBuf,
    key: std::path::PathBuf,
}

fn env() -> Env {
    let (dir, sqlite) = common::temp_sqlite();
    let key = common::key_file(dir.path());
    Env { _dir: dir, sqlite, key }
}

fn dualwrite(env: &Env, url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dualwrite"))
        .args(args)
        .env("DUALWRITE_SQLITE_PATH", &env.sqlite)
        .env("DUALWRITE_PG_URL", url)
        .env("DUALWRITE_SECRET_KEY_FILE", &env.key)
        .env_remove("DUALWRITE_CONFIG")
        .output()
        .expect("run dualwrite")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn migrate_then_doctor_passes_and_a_rerun_changes_nothing() {
    let db = common::fresh_db();
    let e = env();
    let url = common::url_of(&db);
    let out = dualwrite(&e, &url, &["migrate", "--create"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("postgres: applied 3 bridge_schema"), "{}", text(&out));
    let pg_latest =
        format!("postgres: up to date at version {}", dualwrite::latest_version(dualwrite::Store::Postgres));
    let again = dualwrite(&e, &url, &["migrate"]);
    let sqlite_latest =
        format!("sqlite: up to date at version {}", dualwrite::latest_version(dualwrite::Store::Sqlite));
    assert!(text(&again).contains(&sqlite_latest), "{}", text(&again));
    assert!(text(&again).contains(&pg_latest), "{}", text(&again));
    let doc = dualwrite(&e, &url, &["doctor"]);
    assert!(doc.status.success(), "{}", text(&doc));
    assert!(text(&doc).contains("all checks passed"));
    assert!(!text(&doc).contains("test-key-0123"), "doctor must not print the key");
}

#[test]
fn doctor_fails_clearly_when_postgres_is_down() {
    let e = env();
    // Nothing listens on port 1: the same error a stopped server gives.
    let doc = dualwrite(&e, "host=127.0.0.1 port=1 user=nobody dbname=none connect_timeout=2", &["doctor"]);
    assert!(!doc.status.success());
    let t = text(&doc);
    assert!(t.contains("FAIL  postgres connection") && t.contains("cannot connect"), "{t}");
}

#[test]
fn doctor_fails_clearly_on_a_missing_extension_an_old_schema_or_no_key() {
    let db = common::fresh_db();
    let mut e = env();
    let url = common::url_of(&db);
    // Not migrated yet: no extensions, schema version 0.
    let doc = dualwrite(&e, &url, &["doctor"]);
    assert!(!doc.status.success());
    let t = text(&doc);
    assert!(t.contains("FAIL  extension vector") && t.contains("run `dualwrite migrate`"), "{t}");
    assert!(t.contains("FAIL  postgres schema"), "{t}");

    assert!(dualwrite(&e, &url, &["migrate", "--create"]).status.success());
    db.connect().batch_execute("DROP EXTENSION vector CASCADE").unwrap();
    let t = text(&dualwrite(&e, &url, &["doctor"]));
    assert!(t.contains("FAIL  extension vector") && t.contains("ok    extension pgcrypto"), "{t}");

    e.key = e.sqlite.with_file_name("no-such.key");
    let doc = dualwrite(&e, &url, &["doctor"]);
    assert!(!doc.status.success());
    assert!(text(&doc).contains("FAIL  secret key"), "{}", text(&doc));
}

/// Regression (issue 14, item 2): `--config` naming a file that does not parse quoted it line by
/// line: the key itself when it named the key file, a password when the URL's line was wrong.
#[test]
fn a_configuration_file_that_does_not_parse_is_not_quoted() {
    let e = env();
    let secret = std::fs::read_to_string(&e.key).unwrap().trim().to_string();
    let broken = e.sqlite.with_file_name("broken.toml");
    std::fs::write(&broken, "[postgres]\nurl = \"postgres://app:hunter2-pw@db/app\" sslmode=require\n")
        .unwrap();
    for (file, secret) in [(&e.key, secret.as_str()), (&broken, "hunter2-pw")] {
        for command in ["status", "doctor"] {
            let out = Command::new(env!("CARGO_BIN_EXE_dualwrite"))
                .arg("--config")
                .arg(file)
                .arg(command)
                .env_remove("DUALWRITE_CONFIG")
                .output()
                .expect("run dualwrite");
            let t = text(&out);
            assert!(!out.status.success(), "{t}");
            assert!(t.contains(" at line 1") || t.contains(" at line 2"), "{t}");
            assert!(
                !t.contains(secret),
                "`dualwrite --config {} {command}` shows the secret: {t}",
                file.display()
            );
        }
    }
}
