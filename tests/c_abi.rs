//! The C ABI as C sees it: the programs in tests/c/ are compiled with
//! `-Wall -Wextra -Wpedantic -Werror -fsanitize=address,undefined`, linked against the cdylib
//! (libdualwrite.so) and the staticlib (libdualwrite.a), and run against a real PostgreSQL; this
//! side then checks what reached SQLite and PostgreSQL.
//!
//! `cargo test` builds only the rlib for integration tests, so the libraries a C program links
//! could be stale: the first test to need them runs `cargo build --lib` with the profile and
//! target directory of this test executable, which brings libdualwrite.so and libdualwrite.a up
//! to date (a no-op when they are).
//!
//! Needs a C compiler (`cc`, or `CC`) with AddressSanitizer (gcc's works without libclang-rt),
//! `nm`, and PostgreSQL (run through `scripts/test`, or `pg_virtualenv -v 15 cargo test --test
//! c_abi`).

mod common;

use serde_json::json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// target/<profile>/, where cargo puts this executable's libraries (the executable itself is in
/// target/<profile>/deps/).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("path of the test executable");
    exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>").to_path_buf()
}

/// The built libraries: their directory, and what a program linking the staticlib must add.
struct Libraries {
    dir: PathBuf,
    /// `-l`/`-L` arguments for the system libraries the crate's dependencies link dynamically
    /// (e.g. OpenSSL), as their build scripts told cargo; the Rust standard library's own are
    /// added by [`compile`].
    static_link_args: Vec<String>,
}

/// Build libdualwrite.so and libdualwrite.a (once per test run).
fn libraries() -> &'static Libraries {
    static LIBS: OnceLock<Libraries> = OnceLock::new();
    LIBS.get_or_init(|| {
        let dir = profile_dir();
        let profile = match dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") => "dev".to_string(),
            Some(other) => other.to_string(),
            None => panic!("unexpected test executable location {}", dir.display()),
        };
        let target_dir = dir.parent().expect("target directory");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        // JSON messages: cargo reports every build script's link requests, fresh or not.
        let out = Command::new(&cargo)
            .args(["build", "--lib", "--message-format=json-render-diagnostics", "--profile", &profile])
            .arg("--target-dir")
            .arg(target_dir)
            .current_dir(manifest_dir())
            .stderr(std::process::Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {cargo}: {e}"));
        assert!(
            out.status.success(),
            "`cargo build --lib` failed; the C tests need the cdylib and staticlib"
        );
        let mut static_link_args = Vec::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else { continue };
            if msg["reason"] != "build-script-executed" {
                continue;
            }
            let strs = |key: &str| -> Vec<String> {
                msg[key]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            };
            // Static native libraries (the bundled SQLite) are inside libdualwrite.a already.
            let dynamic: Vec<String> = strs("linked_libs")
                .into_iter()
                .filter(|l| !l.starts_with("static="))
                .map(|l| format!("-l{}", l.rsplit('=').next().unwrap_or(&l)))
                .collect();
            if !dynamic.is_empty() {
                for path in strs("linked_paths") {
                    static_link_args.push(format!("-L{}", path.rsplit('=').next().unwrap_or(&path)));
                }
                static_link_args.extend(dynamic);
            }
        }
        for lib in ["libdualwrite.so", "libdualwrite.a"] {
            assert!(dir.join(lib).exists(), "{} was not built", dir.join(lib).display());
        }
        Libraries { dir, static_link_args }
    })
}

#[derive(Clone, Copy, Debug)]
enum Link {
    Shared,
    Static,
}

const BOTH: [Link; 2] = [Link::Shared, Link::Static];

/// Compile tests/c/<program>.c against include/dualwrite.h and link it to the library.
fn compile(program: &str, link: Link) -> PathBuf {
    let libs = &libraries().dir;
    let out_dir = libs.join("c_abi");
    std::fs::create_dir_all(&out_dir).expect("create target/<profile>/c_abi");
    let exe = out_dir.join(format!("{program}-{link:?}").to_lowercase());
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let mut cmd = Command::new(&cc);
    // -O0: at -O1 a leaked pointer can survive in a stack slot and hide the leak from LSan.
    cmd.args(["-std=c11", "-Wall", "-Wextra", "-Wpedantic", "-Werror", "-g", "-O0"])
        .args(["-fno-omit-frame-pointer", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"])
        .arg("-I")
        .arg(manifest_dir().join("include"))
        .arg(manifest_dir().join("tests/c").join(format!("{program}.c")))
        .arg("-o")
        .arg(&exe)
        .arg("-pthread");
    match link {
        Link::Shared => {
            cmd.arg("-L").arg(libs).arg("-ldualwrite").arg(format!("-Wl,-rpath,{}", libs.display()));
        }
        Link::Static => {
            cmd.arg(libs.join("libdualwrite.a")).args(&libraries().static_link_args).args([
                "-lpthread",
                "-ldl",
                "-lm",
            ]);
        }
    }
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run the C compiler {cc}: {e}"));
    assert!(
        out.status.success(),
        "compiling tests/c/{program}.c ({link:?}) failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

/// Run a compiled test program with `env` added; it must exit 0. Returns its standard output.
fn run(exe: &Path, args: &[String], env: &HashMap<String, String>) -> String {
    run_capturing(exe, args, env).0
}

/// Like [`run`], returning standard output and standard error.
fn run_capturing(exe: &Path, args: &[String], env: &HashMap<String, String>) -> (String, String) {
    let mut cmd = Command::new(exe);
    if env.contains_key("PGHOST") {
        // PostgreSQL comes from the PG* variables here: a URL variable would win over them.
        cmd.env_remove("DUALWRITE_PG_URL").env_remove("DATABASE_URL");
    }
    cmd.args(args)
        .env("ASAN_OPTIONS", "detect_leaks=1:halt_on_error=1:abort_on_error=0")
        .env("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1")
        // A configuration the test does not give must not come from the developer's shell.
        .env_remove("DUALWRITE_CONFIG")
        .env_remove("DUALWRITE_SQLITE_PATH")
        .env_remove("DUALWRITE_SECRET_KEY_FILE")
        .env_remove("DUALWRITE_SECRET_KEY");
    cmd.envs(env);
    let Output { status, stdout, stderr } =
        cmd.output().unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()));
    let stdout = String::from_utf8_lossy(&stdout).into_owned();
    let stderr = String::from_utf8_lossy(&stderr);
    eprintln!("--- {} ---\n{stdout}{stderr}", exe.display());
    assert!(status.success(), "{} failed ({status}):\n{stdout}\n{stderr}", exe.display());
    (stdout, stderr.into_owned())
}

/// `name=value` lines a program printed.
fn printed(stdout: &str, name: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("the program printed no {name}=...:\n{stdout}"))
        .to_string()
}

/// The same database as libpq `PG*` variables (and nothing that would override them).
fn pg_env(db: &common::TestDb) -> HashMap<String, String> {
    let c = db.config.postgres_config();
    let mut env = HashMap::new();
    let host = match c.get_hosts().first() {
        Some(postgres::config::Host::Tcp(h)) => h.clone(),
        Some(postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    env.insert("PGHOST".into(), host);
    env.insert("PGPORT".into(), c.get_ports().first().copied().unwrap_or(5432).to_string());
    env.insert("PGUSER".into(), c.get_user().unwrap_or("postgres").to_string());
    env.insert("PGDATABASE".into(), c.get_dbname().unwrap_or("postgres").to_string());
    if let Some(pw) = c.get_password() {
        env.insert("PGPASSWORD".into(), String::from_utf8_lossy(pw).into_owned());
    }
    env
}

/// The configuration JSON for a bridge on dir/monolith.sqlite3 replicating into `db`.
fn config_json(db: &common::TestDb, dir: &Path) -> String {
    json!({
        "sqlite_path": dir.join("monolith.sqlite3"),
        "create": true,
        "postgres_url": common::url_of(db),
        "key_file": common::key_file(dir),
    })
    .to_string()
}

/// A Rust bridge on the same SQLite file that does not replicate (for checks).
fn checker(db: &common::TestDb, dir: &Path) -> dualwrite::Bridge {
    common::bridge_with(db, dir, dualwrite::BridgeOptions { replicate: false, ..Default::default() })
}

/// Row counts of every table in both stores, and the outbox's (count, last seq).
#[derive(Debug, PartialEq)]
struct Counts {
    sqlite: Vec<(String, i64)>,
    postgres: Vec<(String, i64)>,
    outbox: (i64, Option<i64>),
}

fn counts(db: &common::TestDb, dir: &Path) -> Counts {
    let lite = rusqlite::Connection::open(dir.join("monolith.sqlite3")).expect("open sqlite");
    let mut pg = db.connect();
    let mut sqlite = Vec::new();
    let mut postgres = Vec::new();
    for t in dualwrite::schema::TABLES {
        let n: i64 = lite.query_row(&format!("SELECT count(*) FROM {}", t.name), [], |r| r.get(0)).unwrap();
        sqlite.push((t.name.to_string(), n));
        let n: i64 = pg.query_one(&format!("SELECT count(*) FROM {}", t.name), &[]).unwrap().get(0);
        postgres.push((t.name.to_string(), n));
    }
    let outbox = lite
        .query_row("SELECT count(*), max(seq) FROM _dualwrite_outbox", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap();
    Counts { sqlite, postgres, outbox }
}

#[test]
fn happy_path_from_c_reaches_postgres() {
    for link in BOTH {
        let exe = compile("happy", link);
        let db = common::migrated_db();
        let dir = tempfile::tempdir().unwrap();
        // The shared build finds PostgreSQL through the PG* variables (dualwrite::Config::load's
        // fallback); the static one through "postgres_url".
        let (config, env) = match link {
            Link::Shared => {
                let c = json!({
                    "sqlite_path": dir.path().join("monolith.sqlite3"),
                    "create": true,
                    "key_file": common::key_file(dir.path()),
                });
                (c.to_string(), pg_env(&db))
            }
            Link::Static => (config_json(&db, dir.path()), HashMap::new()),
        };
        let out = run(&exe, &[config], &env);
        let user_id = printed(&out, "user_id");
        let deleted_id = printed(&out, "deleted_id");
        let job_id = printed(&out, "job_id");

        let mut pg = db.connect();
        let user = pg
            .query_one("SELECT email, display_name, role FROM users WHERE id = $1::text::uuid", &[&user_id])
            .expect("the user written from C is in PostgreSQL");
        assert_eq!(
            (user.get::<_, String>(0), user.get::<_, String>(1), user.get::<_, String>(2)),
            ("ann@example.com".to_string(), "Ann B.".to_string(), "admin".to_string())
        );
        let gone: i64 = pg
            .query_one("SELECT count(*) FROM users WHERE id = $1::text::uuid", &[&deleted_id])
            .unwrap()
            .get(0);
        assert_eq!(gone, 0, "the user deleted from C is still in PostgreSQL");
        let job = pg
            .query_one(
                "SELECT status, progress::text, payload::text FROM jobs WHERE id = $1::text::uuid",
                &[&job_id],
            )
            .unwrap();
        assert_eq!(job.get::<_, String>(0), "running");
        assert_eq!(job.get::<_, String>(1), "12.5");
        let payload: serde_json::Value = serde_json::from_str(&job.get::<_, String>(2)).unwrap();
        assert_eq!(payload, json!({"kw": ["a", 1]}));
        common::assert_stores_equal(&checker(&db, dir.path()), &db);
    }
}

#[test]
fn every_error_code_null_argument_and_bad_utf8_from_c() {
    for link in BOTH {
        let exe = compile("errors", link);
        let db = common::migrated_db();
        let dir = tempfile::tempdir().unwrap();
        let sqlite_only = json!({
            "sqlite_path": dir.path().join("solo.sqlite3"),
            "create": true,
            "postgres_url": null,
            "key_env": "DUALWRITE_TEST_KEY_THAT_IS_NOT_SET",
        });
        run(&exe, &[config_json(&db, dir.path()), sqlite_only.to_string()], &HashMap::new());
        // The failed calls wrote nothing: exactly the one user and one job the program created.
        let c = counts(&db, dir.path());
        let users = c.postgres.iter().find(|(t, _)| t == "users").unwrap().1;
        let jobs = c.postgres.iter().find(|(t, _)| t == "jobs").unwrap().1;
        assert_eq!((users, jobs), (1, 1), "{c:?}");
        assert_eq!(c.sqlite, c.postgres);
        common::assert_stores_equal(&checker(&db, dir.path()), &db);
    }
}

/// Issue 17, item 1: closing and freeing NULL are harmless no-ops (`dw_bridge_close(NULL)` was
/// `DW_NULL_PARAMETER`), so a C cleanup path can release what it holds without knowing which
/// step failed.
#[test]
fn releasing_null_is_a_harmless_no_op() {
    for link in BOTH {
        let exe = compile("release_null", link);
        let dir = tempfile::tempdir().unwrap();
        let sqlite_only = json!({
            "sqlite_path": dir.path().join("solo.sqlite3"),
            "create": true,
            "postgres_url": null,
            "key_env": "DUALWRITE_TEST_KEY_THAT_IS_NOT_SET",
        });
        let out = run(&exe, &[sqlite_only.to_string()], &HashMap::new());
        assert!(out.contains("release_null"), "{out}");
    }
}

#[test]
fn hostile_input_changes_neither_store() {
    for link in BOTH {
        let exe = compile("hostile", link);
        let db = common::migrated_db();
        let dir = tempfile::tempdir().unwrap();
        {
            let b = common::bridge(&db, dir.path());
            let u = b.insert("users", &json!({"email": "seed@example.com", "display_name": "Seed"})).unwrap();
            b.insert("jobs", &json!({"type": "seed", "owner_id": u["id"]})).unwrap();
            b.insert(
                "wordstat_cache",
                &json!({"cache_key": "seed", "value": {"n": 1}, "expires_at": "2030-01-01T00:00:00Z"}),
            )
            .unwrap();
            b.flush(Duration::from_secs(60)).unwrap();
            b.shutdown(Duration::from_secs(5));
        }
        let before = counts(&db, dir.path());
        assert_eq!(before.sqlite, before.postgres);
        run(&exe, &[config_json(&db, dir.path())], &HashMap::new());
        let b = common::bridge(&db, dir.path());
        b.flush(Duration::from_secs(60)).unwrap();
        let after = counts(&db, dir.path());
        assert_eq!(before, after, "garbage input changed a store (or wrote to the outbox)");
        common::assert_stores_equal(&b, &db);
        assert_eq!(b.dead_letters().unwrap(), vec![]);
    }
}

#[test]
fn four_pthreads_share_one_handle() {
    const PER_THREAD: i64 = 50;
    for link in BOTH {
        let exe = compile("threads", link);
        let db = common::migrated_db();
        let dir = tempfile::tempdir().unwrap();
        let out = run(&exe, &[config_json(&db, dir.path()), PER_THREAD.to_string()], &HashMap::new());
        assert_eq!(printed(&out, "inserted"), (4 * PER_THREAD).to_string());
        let mut pg = db.connect();
        let n: i64 = pg.query_one("SELECT count(*) FROM users", &[]).unwrap().get(0);
        assert_eq!(n, 4 * PER_THREAD);
        common::assert_stores_equal(&checker(&db, dir.path()), &db);
    }
}

/// Regression (issue 14, item 3): in a fork()ed child, `dw_bridge_close` and `dw_bridge_free` on
/// the inherited handle panicked inside the library (joining the parent's replicator thread):
/// `DW_PANIC`, and a panic message with a backtrace on the host's stderr. Now the child's copy is
/// released quietly and the parent's bridge goes on replicating.
#[test]
fn a_forked_child_releases_the_inherited_handle_quietly() {
    for link in BOTH {
        let exe = compile("fork", link);
        let db = common::migrated_db();
        let dir = tempfile::tempdir().unwrap();
        // A panic would print its backtrace on stderr.
        let env = HashMap::from([("RUST_BACKTRACE".to_string(), "1".to_string())]);
        let (stdout, stderr) = run_capturing(&exe, &[config_json(&db, dir.path())], &env);
        assert!(
            !stderr.contains("panicked") && !stderr.contains("backtrace"),
            "{link:?}: the library printed a panic:\n{stderr}"
        );
        let mut pg = db.connect();
        for label in ["parent_before", "parent_after"] {
            let id = printed(&stdout, label);
            let n: i64 =
                pg.query_one("SELECT count(*) FROM users WHERE id = $1::text::uuid", &[&id]).unwrap().get(0);
            assert_eq!(n, 1, "{label} {id} did not reach PostgreSQL");
        }
        common::assert_stores_equal(&checker(&db, dir.path()), &db);
    }
}

#[test]
fn a_locked_sqlite_file_is_dw_busy_and_nothing_is_written() {
    let exe = compile("busy", Link::Shared);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("monolith.sqlite3");
    // Create and migrate the file, then hold its write lock from another connection.
    let config = dualwrite::Config {
        sqlite_path: path.clone(),
        postgres: None,
        key_source: dualwrite::KeySource::Env("DUALWRITE_TEST_KEY_THAT_IS_NOT_SET".into()),
    };
    drop(
        dualwrite::Bridge::open(config, dualwrite::BridgeOptions::default()).expect("create the SQLite file"),
    );
    let lock = rusqlite::Connection::open(&path).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    let config = json!({"sqlite_path": path, "postgres_url": null, "migrate_sqlite": false});
    run(&exe, &[config.to_string()], &HashMap::new());
    lock.execute_batch("ROLLBACK").unwrap();
    let n: i64 = lock.query_row("SELECT count(*) FROM users", [], |r| r.get(0)).unwrap();
    let outbox: i64 = lock.query_row("SELECT count(*) FROM _dualwrite_outbox", [], |r| r.get(0)).unwrap();
    assert_eq!((n, outbox), (0, 0));
}

/// Every `dw_` symbol the cdylib exports is declared in the header, and every function the
/// header declares is exported.
#[test]
fn the_library_exports_exactly_the_header_s_functions() {
    let so = libraries().dir.join("libdualwrite.so");
    let out = Command::new("nm").args(["-D", "--defined-only"]).arg(&so).output().expect("run nm");
    assert!(out.status.success(), "nm failed: {}", String::from_utf8_lossy(&out.stderr));
    let mut exported: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .filter(|s| s.starts_with("dw_"))
        .map(str::to_string)
        .collect();
    exported.sort();
    let header = std::fs::read_to_string(manifest_dir().join("include/dualwrite.h")).unwrap();
    let mut declared: Vec<String> = header
        .lines()
        .filter(|l| !["//", "/*", "*", "#"].iter().any(|c| l.trim_start().starts_with(c)))
        .filter_map(|l| {
            let name_end = l.find('(')?;
            let name = l[..name_end].rsplit([' ', '*']).next()?;
            name.starts_with("dw_").then(|| name.to_string())
        })
        .collect();
    declared.sort();
    assert_eq!(exported, declared);
}

/// The sanitizers are live: a program that leaks one string from the library fails.
#[test]
fn leak_sanitizer_catches_a_string_that_is_not_freed() {
    let exe = compile("leak", Link::Shared);
    let dir = tempfile::tempdir().unwrap();
    let config =
        json!({"sqlite_path": dir.path().join("leak.sqlite3"), "create": true, "postgres_url": null});
    let out = Command::new(&exe)
        .arg(config.to_string())
        .env("ASAN_OPTIONS", "detect_leaks=1:malloc_context_size=100")
        .output()
        .expect("run the leak program");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a leaked dw string went unnoticed: are the sanitizers on?\n{stderr}");
    assert!(stderr.contains("LeakSanitizer") && stderr.contains("leak.c"), "{stderr}");
}

/// C++ can include the header and link against the library (the `extern "C"` guard).
#[test]
fn the_header_works_from_cpp() {
    let libs = &libraries().dir;
    let exe = libs.join("c_abi").join("cpp_header");
    std::fs::create_dir_all(libs.join("c_abi")).unwrap();
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    let out = Command::new(&cxx)
        .args([
            "-std=c++17",
            "-Wall",
            "-Wextra",
            "-Wpedantic",
            "-Werror",
            "-g",
            "-fsanitize=address,undefined",
        ])
        .arg("-I")
        .arg(manifest_dir().join("include"))
        .arg(manifest_dir().join("tests/c/cpp_header.cpp"))
        .arg("-o")
        .arg(&exe)
        .arg("-L")
        .arg(libs)
        .arg("-ldualwrite")
        .arg(format!("-Wl,-rpath,{}", libs.display()))
        .output()
        .unwrap_or_else(|e| panic!("cannot run the C++ compiler {cxx}: {e}"));
    assert!(
        out.status.success(),
        "compiling tests/c/cpp_header.cpp failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = run(&exe, &[], &HashMap::new());
    assert!(stdout.contains(env!("CARGO_PKG_VERSION")), "{stdout}");
}

/// The library's logs reach a C host: through dw_set_log_callback, else on stderr as text or
/// JSON lines (DUALWRITE_LOG, DUALWRITE_LOG_FORMAT). No PostgreSQL: opening new SQLite files
/// logs the migrations it applies.
#[test]
fn logs_reach_the_host_by_callback_or_on_stderr() {
    let exe = compile("logs", Link::Shared);
    for (mode, format) in [("callback", "text"), ("stderr", "text"), ("stderr", "json")] {
        let (dir, _) = common::temp_sqlite();
        let config = |name: &str| {
            json!({"sqlite_path": dir.path().join(name), "create": true, "postgres_url": null, "key_env": "NO_KEY_HERE"})
                .to_string()
        };
        let out = Command::new(&exe)
            .args([config("a.sqlite3"), mode.to_string(), config("b.sqlite3")])
            .env("DUALWRITE_LOG", "info")
            .env("DUALWRITE_LOG_FORMAT", format)
            .env("ASAN_OPTIONS", "detect_leaks=1:halt_on_error=1")
            .env_remove("DUALWRITE_CONFIG")
            .output()
            .unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{mode}/{format}: {stdout}\n{stderr}");
        let migrations = stderr.lines().filter(|l| l.contains("migration applied")).count();
        let latest = dualwrite::latest_version(dualwrite::Store::Sqlite) as usize;
        match mode {
            // The first file's migrations went to the callback; the second file's to stderr.
            "callback" => {
                assert!(printed(&stdout, "migrations").parse::<usize>().unwrap() >= latest, "{stdout}");
                assert_eq!(migrations, latest, "{stderr}");
            }
            _ => assert_eq!(migrations, 2 * latest, "{stderr}"),
        }
        if format == "json" {
            for line in stderr.lines().filter(|l| l.contains("migration applied")) {
                let v: serde_json::Value =
                    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
                assert_eq!(
                    (v["level"].as_str(), v["target"].as_str()),
                    (Some("INFO"), Some("dualwrite::migrate"))
                );
                assert_eq!(v["store"], "sqlite", "{line}");
            }
        } else {
            let line = stderr.lines().find(|l| l.contains("migration applied")).unwrap();
            assert!(
                line.contains(" INFO dualwrite::migrate: migration applied store=sqlite version=1"),
                "{line}"
            );
        }
    }
}
