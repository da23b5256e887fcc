//! The Python binding (bindings/python/, ctypes over the C ABI): runs its pytest suite against a
//! real PostgreSQL database and the freshly built cdylib, and fails if pytest fails or collects
//! no test.
//!
//! Like tests/c_abi.rs, it first runs `cargo build --lib` (same profile and target directory) so
//! that libdualwrite.so is current. The interpreter is `DUALWRITE_PYTHON`, else the first of
//! `python3` and `/usr/bin/python3` that can import pytest (Debian's python3-pytest, installed
//! by scripts/setup).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Build the cdylib for this test executable's profile and return its path.
fn cdylib() -> PathBuf {
    let exe = std::env::current_exe().expect("path of the test executable");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>").to_path_buf();
    let profile = match dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev".to_string(),
        Some(other) => other.to_string(),
        None => panic!("unexpected test executable location {}", dir.display()),
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .args(["build", "--lib", "--profile", &profile, "--target-dir"])
        .arg(dir.parent().expect("target directory"))
        .current_dir(manifest_dir())
        .status()
        .unwrap_or_else(|e| panic!("cannot run {cargo}: {e}"));
    assert!(status.success(), "`cargo build --lib` failed");
    let so = dir.join("libdualwrite.so");
    assert!(so.exists(), "{} was not built", so.display());
    so
}

fn python_with_pytest() -> String {
    if let Ok(p) = std::env::var("DUALWRITE_PYTHON") {
        return p;
    }
    for candidate in ["python3", "/usr/bin/python3"] {
        let ok =
            Command::new(candidate).args(["-c", "import pytest"]).output().is_ok_and(|o| o.status.success());
        if ok {
            return candidate.to_string();
        }
    }
    panic!(
        "no Python with pytest found (tried python3 and /usr/bin/python3): install python3-pytest \
         (scripts/setup does) or set DUALWRITE_PYTHON"
    );
}

#[test]
fn the_python_binding_s_pytest_suite_passes() {
    let so = cdylib();
    let python = python_with_pytest();
    let db = common::migrated_db();
    let out = Command::new(&python)
        .args(["-m", "pytest", "-v", "-p", "no:cacheprovider", "tests"])
        .current_dir(manifest_dir().join("bindings/python"))
        .env("DUALWRITE_LIB", &so)
        .env("DUALWRITE_TEST_PG_URL", common::url_of(&db))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("DUALWRITE_CONFIG")
        .env_remove("DUALWRITE_SQLITE_PATH")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}{stderr}");
    // pytest exits 5 when it collected nothing: that is a failure here too.
    assert!(out.status.success(), "pytest failed ({}):\n{stdout}\n{stderr}", out.status);
    assert!(stdout.contains(" passed"), "pytest ran no test:\n{stdout}");
}
