//! The CLI never surprises: a mistyped path is an error, not a new database; another
//! application's file is refused; exit codes are one table (a usage error is never "the stores
//! differ"); `doctor` finds a damaged or read-only file; `--who` works without `$USER`.
//! None of these needs PostgreSQL: the commands refuse before they would connect.

mod common;

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

/// Nothing listens on port 1: a PostgreSQL URL that parses but is never reached.
const UNREACHABLE_PG: &str = "host=127.0.0.1 port=1 user=nobody dbname=none connect_timeout=2";

fn dualwrite(sqlite: Option<&Path>, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dualwrite"));
    c.args(args)
        .env("DUALWRITE_PG_URL", UNREACHABLE_PG)
        .env_remove("DUALWRITE_CONFIG")
        .env_remove("DUALWRITE_SQLITE_PATH")
        .env_remove("DUALWRITE_FORCE_SQLITE");
    if let Some(p) = sqlite {
        c.env("DUALWRITE_SQLITE_PATH", p);
    }
    c
}

fn run(sqlite: Option<&Path>, args: &[&str]) -> Output {
    dualwrite(sqlite, args).output().expect("run dualwrite")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn migrated_file(dir: &Path, name: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    let out = run(Some(&path), &["migrate", "--only", "sqlite", "--create"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    path
}

#[test]
fn a_mistyped_sqlite_path_is_an_error_and_no_file_appears() {
    let (dir, _) = common::temp_sqlite();
    let typo = dir.path().join("monlith.sqlite3");
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["flags", "get"],
        &["flags", "set", "write_mode=dual", "--why", "test", "--who", "t"],
        &["rollback", "--why", "test", "--who", "t"],
        &["backfill"],
        &["verify"],
        &["dead-letters"],
        &["drain", "--timeout", "1"],
        &["migrate"],
        &["migrate", "--only", "sqlite"],
    ] {
        let out = run(Some(&typo), args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        let t = text(&out);
        assert!(t.contains(&format!("no SQLite file at {}", typo.display())), "{args:?}: {t}");
        assert!(t.contains("dualwrite migrate --create"), "{args:?}: {t}");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(left.is_empty(), "{args:?} left {left:?} behind");
    }
    // doctor reports it as a failed check, and creates nothing either.
    let out = run(Some(&typo), &["doctor"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("FAIL  sqlite connection") && text(&out).contains("no SQLite file"),
        "{}",
        text(&out)
    );
    assert!(!typo.exists());

    // Asked for, the file is made.
    let out = run(Some(&typo), &["migrate", "--only", "sqlite", "--create"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(typo.exists());
    assert_eq!(run(Some(&typo), &["status"]).status.code(), Some(0));
}

#[test]
fn with_no_path_configured_the_error_names_the_default() {
    let dir = tempfile::tempdir().unwrap();
    let out = dualwrite(None, &["status"]).current_dir(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let t = text(&out);
    assert!(t.contains(&format!("no SQLite file at {} (the default", dualwrite::DEFAULT_SQLITE_PATH)), "{t}");
    assert!(!dir.path().join(dualwrite::DEFAULT_SQLITE_PATH).exists());
}

#[test]
fn migrate_refuses_another_application_s_file_and_leaves_it_alone() {
    let (dir, _) = common::temp_sqlite();
    let other = dir.path().join("crm.db");
    let conn = rusqlite::Connection::open(&other).unwrap();
    conn.execute_batch("CREATE TABLE customers (id INTEGER PRIMARY KEY); CREATE TABLE invoices (n INTEGER);")
        .unwrap();
    let tables = |c: &rusqlite::Connection| -> i64 {
        c.query_row("SELECT count(*) FROM sqlite_master WHERE type = 'table'", [], |r| r.get(0)).unwrap()
    };
    for create in [false, true] {
        let args: &[&str] = if create {
            &["migrate", "--only", "sqlite", "--create"]
        } else {
            &["migrate", "--only", "sqlite"]
        };
        let out = run(Some(&other), args);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        let t = text(&out);
        assert!(t.contains("2 table(s) of another application (customers, invoices)"), "{t}");
        assert_eq!(tables(&conn), 2);
    }
    // The library refuses too (Bridge::open migrates with the same runner).
    let mut c = rusqlite::Connection::open(&other).unwrap();
    let e = dualwrite::migrate_sqlite(&mut c).unwrap_err();
    assert!(matches!(e, dualwrite::Error::Migration(_)), "{e}");
    assert_eq!(tables(&conn), 2);
    // An empty file (touched beforehand) is not "another application's".
    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    let out = run(Some(&empty), &["migrate", "--only", "sqlite"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn usage_errors_have_their_own_exit_code() {
    let (dir, _) = common::temp_sqlite();
    let path = migrated_file(dir.path(), "a.sqlite3");
    for args in [
        &["no-such-command"][..],
        &["verify", "--no-such-option"],
        &["flags", "set"],
        &["status", "--json=x"],
    ] {
        let out = run(Some(&path), args);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {}", text(&out));
    }
    assert_eq!(run(Some(&path), &["--help"]).status.code(), Some(0));
    assert_eq!(run(Some(&path), &["--version"]).status.code(), Some(0));
    let help = run(Some(&path), &["flags", "set", "--help"]);
    assert_eq!(help.status.code(), Some(0));
    for mode in ["sqlite", "dual", "postgres_primary", "postgres"] {
        assert!(text(&help).contains(&format!("\n  {mode} ")), "{mode} missing from:\n{}", text(&help));
    }
}

#[test]
fn who_falls_back_to_logname_then_the_user_s_name() {
    let (dir, _) = common::temp_sqlite();
    let path = migrated_file(dir.path(), "w.sqlite3");
    let set = |value: &str, env: &[(&str, &str)]| {
        let mut c = dualwrite(Some(&path), &["flags", "set", value, "--why", "who test"]);
        c.env_remove("USER").env_remove("LOGNAME");
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    };
    set("read_source=shadow", &[("LOGNAME", "cron-ops")]);
    set("read_source=sqlite", &[]);
    set("read_source=shadow", &[("USER", "alice"), ("LOGNAME", "cron-ops")]);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let who: Vec<String> = conn
        .prepare("SELECT json_extract(metadata, '$.who') FROM audit_events WHERE action = 'flags.set' ORDER BY created_at, id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(who.len(), 3, "{who:?}");
    assert_eq!(who[0], "cron-ops");
    // Neither variable: the password database's name for this uid (never empty).
    let uid = std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m)).unwrap();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let name = passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.get(2) == Some(&uid.to_string().as_str())).then(|| f[0].to_string())
        })
        .unwrap_or(format!("uid {uid}"));
    assert_eq!(who[1], name);
    assert_eq!(who[2], "alice");
}

#[test]
fn dead_letters_list_takes_json_after_the_subcommand() {
    let (dir, _) = common::temp_sqlite();
    let path = migrated_file(dir.path(), "d.sqlite3");
    for args in [
        &["dead-letters", "list", "--json"][..],
        &["dead-letters", "--json", "list"],
        &["dead-letters", "--json"],
    ] {
        let out = run(Some(&path), args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out));
        let v: Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {}", text(&out)));
        assert_eq!(v, serde_json::json!([]));
    }
}

fn doctor_json(path: &Path) -> (Option<i32>, Value) {
    let out = run(Some(path), &["doctor", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    (out.status.code(), v)
}

fn check<'a>(report: &'a Value, name: &str) -> (&'a str, &'a str) {
    let c = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {report}"));
    (c["status"].as_str().unwrap(), c["detail"].as_str().unwrap())
}

#[test]
fn doctor_finds_a_damaged_page() {
    let (dir, _) = common::temp_sqlite();
    let path = migrated_file(dir.path(), "c.sqlite3");
    let (_, v) = doctor_json(&path);
    assert_eq!(check(&v, "sqlite integrity"), ("ok", "quick_check ok"));
    assert_eq!(v["ok"], false, "no PostgreSQL here, so not ok: {v}");
    // Overwrite the header of page 3 (a table's root page: users) with garbage.
    let page_size: u64 =
        rusqlite::Connection::open(&path).unwrap().query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap();
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.seek(SeekFrom::Start(page_size * 2)).unwrap();
        f.write_all(&[0xff; 64]).unwrap();
    }
    let (code, v) = doctor_json(&path);
    assert_eq!(code, Some(1));
    let (status, detail) = check(&v, "sqlite integrity");
    assert_eq!(status, "fail", "{v}");
    assert!(detail.contains("malformed") || detail.contains("quick_check found damage"), "{detail}");
}

/// Makes `path` read-only for this process and undoes it on drop. Root ignores file modes, so
/// as root the file is made immutable (`chattr +i`, ext4 and most Linux file systems).
struct ReadOnly<'a>(&'a Path, bool);
impl<'a> ReadOnly<'a> {
    fn new(path: &'a Path) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let root =
            std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m)).unwrap() == 0;
        if root {
            let ok =
                Command::new("chattr").arg("+i").arg(path).status().map(|s| s.success()).unwrap_or(false);
            assert!(ok, "as root, this test needs chattr +i on {}", path.display());
        } else {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o444)).unwrap();
        }
        ReadOnly(path, root)
    }
}
impl Drop for ReadOnly<'_> {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        if self.1 {
            let _ = Command::new("chattr").arg("-i").arg(self.0).status();
        } else {
            let _ = std::fs::set_permissions(self.0, std::fs::Permissions::from_mode(0o644));
        }
    }
}

#[test]
fn doctor_finds_a_read_only_file_and_a_write_names_it() {
    let (dir, _) = common::temp_sqlite();
    let path = migrated_file(dir.path(), "r.sqlite3");
    let before = std::fs::read(&path).unwrap();
    assert_eq!(check(&doctor_json(&path).1, "sqlite writable").0, "ok");
    // The probe wrote and rolled back: the file is byte for byte what it was.
    assert_eq!(std::fs::read(&path).unwrap(), before);
    {
        let _ro = ReadOnly::new(&path);
        let (code, v) = doctor_json(&path);
        assert_eq!(code, Some(1));
        let (status, detail) = check(&v, "sqlite writable");
        assert_eq!(status, "fail", "{v}");
        assert!(detail.contains("cannot be written by this process"), "{detail}");
        assert_eq!(check(&v, "sqlite integrity").0, "ok");
        // A write says the file is read-only, names it, and is a configuration error (exit 1).
        let out = run(Some(&path), &["flags", "set", "read_source=shadow", "--why", "t", "--who", "t"]);
        assert_eq!(out.status.code(), Some(1));
        let t = text(&out);
        assert!(t.contains("read-only for this process") && t.contains(&path.display().to_string()), "{t}");
    }
}
