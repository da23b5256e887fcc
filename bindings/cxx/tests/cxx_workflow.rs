//! The C++ binding as C++ sees it: tests/workflow.cpp is compiled with
//! `c++ -std=c++17 -Wall -Wextra -Wpedantic -Werror -fsanitize=address,undefined`, linked against
//! libdualwrite_cxx.a (this crate's staticlib, which holds dualwrite, the Rust standard library
//! and the C++ half of the bridge), and run against a real PostgreSQL; this side then checks what
//! reached PostgreSQL.
//!
//! `cargo test` builds only the rlib for integration tests, so the test first runs
//! `cargo build -p dualwrite-cxx --lib` with the profile and target directory of this test
//! executable (a no-op when the staticlib is current). Cargo's JSON messages of that build give
//! the build script's OUT_DIR, where cxx-build wrote the headers (`dualwrite-cxx/src/lib.rs.h`,
//! `rust/cxx.h`), and the system libraries the dependencies link (OpenSSL).
//!
//! Needs a C++ compiler (`c++`, or `CXX`) with AddressSanitizer and PostgreSQL (run through
//! `scripts/test`, or `pg_virtualenv -t -v 15 cargo test -p dualwrite-cxx`).

#[path = "../../../tests/common/mod.rs"]
mod common;

use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// What a C++ program needs to use the binding.
struct Built {
    staticlib: PathBuf,
    include_dir: PathBuf,
    /// `-L`/`-l` arguments for the system libraries the dependencies link dynamically.
    link_args: Vec<String>,
    profile_dir: PathBuf,
}

fn build() -> Built {
    // target/<profile>/deps/<this test> → target/<profile>
    let exe = std::env::current_exe().expect("path of the test executable");
    let profile_dir =
        exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>").to_path_buf();
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev".to_string(),
        Some(other) => other.to_string(),
        None => panic!("unexpected test executable location {}", profile_dir.display()),
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(&cargo)
        .args(["build", "-p", "dualwrite-cxx", "--lib", "--message-format=json-render-diagnostics"])
        .args(["--profile", &profile, "--target-dir"])
        .arg(profile_dir.parent().expect("target directory"))
        .current_dir(workspace_dir())
        .stderr(std::process::Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cargo}: {e}"));
    assert!(out.status.success(), "`cargo build -p dualwrite-cxx --lib` failed");

    let mut staticlib = None;
    let mut include_dir = None;
    let mut link_args = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let strs = |key: &str| -> Vec<String> {
            msg[key].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_string)).collect()
        };
        let ours = msg["package_id"].as_str().is_some_and(|id| id.contains("dualwrite-cxx"));
        match msg["reason"].as_str() {
            Some("compiler-artifact") if ours => {
                staticlib = strs("filenames")
                    .into_iter()
                    .find(|f| f.ends_with("libdualwrite_cxx.a"))
                    .map(PathBuf::from);
            }
            Some("build-script-executed") => {
                if ours {
                    include_dir = msg["out_dir"].as_str().map(|d| Path::new(d).join("cxxbridge/include"));
                }
                // Static native libraries (SQLite, cxx's runtime, the bridge's C++ half) are inside
                // the staticlib already; dynamic ones must be named when linking it.
                let dynamic: Vec<String> = strs("linked_libs")
                    .into_iter()
                    .filter(|l| !l.starts_with("static="))
                    .map(|l| format!("-l{}", l.rsplit('=').next().unwrap_or(&l)))
                    .collect();
                if !dynamic.is_empty() {
                    for path in strs("linked_paths") {
                        link_args.push(format!("-L{}", path.rsplit('=').next().unwrap_or(&path)));
                    }
                    link_args.extend(dynamic);
                }
            }
            _ => {}
        }
    }
    let staticlib = staticlib.expect("cargo reported no libdualwrite_cxx.a");
    let include_dir = include_dir.expect("cargo reported no build script output for dualwrite-cxx");
    assert!(
        include_dir.join("dualwrite-cxx/src/lib.rs.h").exists(),
        "no generated header in {}",
        include_dir.display()
    );
    Built { staticlib, include_dir, link_args, profile_dir }
}

/// Compile tests/workflow.cpp against the binding.
fn compile(built: &Built) -> PathBuf {
    let out_dir = built.profile_dir.join("cxx");
    std::fs::create_dir_all(&out_dir).expect("create target/<profile>/cxx");
    let exe = out_dir.join("workflow");
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    let out = Command::new(&cxx)
        .args(["-std=c++17", "-Wall", "-Wextra", "-Wpedantic", "-Werror", "-g", "-O0"])
        .args(["-fno-omit-frame-pointer", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"])
        .arg("-I")
        .arg(&built.include_dir)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/workflow.cpp"))
        .arg("-o")
        .arg(&exe)
        .arg(&built.staticlib)
        .args(&built.link_args)
        .args(["-pthread", "-ldl", "-lm"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run the C++ compiler {cxx}: {e}"));
    assert!(
        out.status.success(),
        "compiling tests/workflow.cpp failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

fn printed(stdout: &str, name: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("the program printed no {name}=...:\n{stdout}"))
        .to_string()
}

#[test]
fn the_cpp_workflow_reaches_postgres_and_failures_throw() {
    let db = common::migrated_db();
    let exe = compile(&build());
    let dir = tempfile::tempdir().unwrap();
    let config = json!({
        "sqlite_path": dir.path().join("monolith.sqlite3"),
        "create": true,
        "postgres_url": common::url_of(&db),
        "key_file": common::key_file(dir.path()),
    });
    let out = Command::new(&exe)
        .arg(config.to_string())
        .env("ASAN_OPTIONS", "detect_leaks=1:halt_on_error=1:abort_on_error=0")
        .env("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1")
        .env_remove("DUALWRITE_CONFIG")
        .env_remove("DUALWRITE_SQLITE_PATH")
        .env_remove("DUALWRITE_SECRET_KEY_FILE")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("--- {} ---\n{stdout}{stderr}", exe.display());
    assert!(out.status.success(), "{} failed ({}):\n{stdout}\n{stderr}", exe.display(), out.status);
    assert!(stdout.contains(", 0 failed"), "{stdout}");

    let (user_id, job_id, page_id) =
        (printed(&stdout, "user_id"), printed(&stdout, "job_id"), printed(&stdout, "page_id"));
    let mut pg = db.connect();
    let one = |pg: &mut postgres::Client, sql: &str, id: &str| -> i64 {
        pg.query_one(sql, &[&id]).unwrap_or_else(|e| panic!("{sql}: {e}")).get(0)
    };
    assert_eq!(
        one(
            &mut pg,
            "SELECT count(*) FROM users WHERE id = $1::text::uuid AND email = 'cpp-editor@example.com'",
            &user_id
        ),
        1
    );
    assert_eq!(one(&mut pg, "SELECT count(*) FROM api_keys WHERE owner_id = $1::text::uuid", &user_id), 1);
    assert_eq!(
        one(
            &mut pg,
            "SELECT count(*) FROM jobs WHERE id = $1::text::uuid AND status = 'succeeded' AND progress = 100",
            &job_id
        ),
        1
    );
    assert_eq!(one(&mut pg, "SELECT count(*) FROM job_logs WHERE job_id = $1::text::uuid", &job_id), 1);
    assert_eq!(one(&mut pg, "SELECT count(*) FROM headings WHERE page_id = $1::text::uuid", &page_id), 2);
    assert_eq!(one(&mut pg, "SELECT count(*) FROM generated_text WHERE job_id = $1::text::uuid", &job_id), 1);
    assert_eq!(one(&mut pg, "SELECT count(*) FROM text_analytics_cache WHERE cache_key = $1", "cxx:1"), 1);
    assert_eq!(one(&mut pg, "SELECT count(*) FROM wordstat_cache WHERE cache_key = $1", "cxx:tmp"), 0);
    // The failed calls wrote nothing, and the stores agree row for row.
    assert_eq!(one(&mut pg, "SELECT count(*) FROM users WHERE display_name <> $1", "C++ editor"), 0);
    let checker = common::bridge_with(
        &db,
        dir.path(),
        dualwrite::BridgeOptions { replicate: false, ..Default::default() },
    );
    common::assert_stores_equal(&checker, &db);
}
