//! Packaged like a C library: `scripts/install` puts libdualwrite.so.MAJOR.MINOR.PATCH (SONAME
//! libdualwrite.so.MAJOR) with its symlinks, the CLI, the header and pkg-config files (C and
//! C++) under a prefix, stripped with the debug info beside them; a C program built with
//! pkg-config records NEEDED libdualwrite.so.MAJOR and runs; `pip install bindings/python`
//! gives a package that finds the installed library. No PostgreSQL needed.
//!
//! Needs `cc`, `readelf`, `objcopy`, `pkg-config` and Debian's python3 with pip, setuptools and
//! wheel (scripts/setup installs them).

use std::path::{Path, PathBuf};
use std::process::Command;

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn readelf(args: &[&str], file: &Path) -> String {
    sh(Command::new("readelf").args(args).arg(file))
}

/// Build the library, the CLI and the C++ binding with this test's profile; return the profile
/// name as scripts/install takes it.
fn build() -> String {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev".to_string(),
        Some(other) => other.to_string(),
        None => panic!("unexpected test executable location"),
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    sh(Command::new(&cargo)
        .args(["build", "--quiet", "--profile", &profile, "-p", "dualwrite", "--lib", "--bin", "dualwrite"])
        .current_dir(manifest_dir()));
    sh(Command::new(&cargo)
        .args(["build", "--quiet", "--profile", &profile, "-p", "dualwrite-cxx", "--lib"])
        .current_dir(manifest_dir()));
    profile
}

#[test]
fn scripts_install_lays_out_a_versioned_stripped_library_the_cli_and_pkg_config_files() {
    let profile = build();
    let tmp = tempfile::tempdir().unwrap();
    let prefix = tmp.path().join("prefix");
    sh(Command::new(manifest_dir().join("scripts/install"))
        .args(["--profile", &profile, "--no-build", "--cxx", "--prefix"])
        .arg(&prefix)
        .env_remove("DESTDIR"));
    let version = env!("CARGO_PKG_VERSION");
    let major = env!("CARGO_PKG_VERSION_MAJOR");
    let lib = prefix.join("lib");
    let real = lib.join(format!("libdualwrite.so.{version}"));

    // The versioned file and the usual symlinks; the SONAME names the major version.
    assert!(real.is_file() && !real.is_symlink(), "{}", real.display());
    assert_eq!(
        std::fs::read_link(lib.join(format!("libdualwrite.so.{major}"))).unwrap(),
        PathBuf::from(format!("libdualwrite.so.{version}"))
    );
    assert_eq!(
        std::fs::read_link(lib.join("libdualwrite.so")).unwrap(),
        PathBuf::from(format!("libdualwrite.so.{major}"))
    );
    let dynamic = readelf(&["-d"], &real);
    assert!(dynamic.contains(&format!("Library soname: [libdualwrite.so.{major}]")), "{dynamic}");

    // Stripped: no DWARF in the installed library and CLI; it is in .debug/, linked by name.
    for (file, debug) in [
        (real.clone(), lib.join(format!(".debug/libdualwrite.so.{version}.debug"))),
        (prefix.join("bin/dualwrite"), prefix.join("bin/.debug/dualwrite.debug")),
    ] {
        let sections = readelf(&["-S", "-W"], &file);
        assert!(!sections.contains(".debug_info"), "{} still has debug info", file.display());
        assert!(sections.contains(".gnu_debuglink"), "{} has no debug link", file.display());
        assert!(
            readelf(&["-S", "-W"], &debug).contains(".debug_info"),
            "{} holds no debug info",
            debug.display()
        );
    }
    let cli_version = sh(Command::new(prefix.join("bin/dualwrite")).arg("--version"));
    assert!(cli_version.contains(version), "{cli_version}");

    // A C program built with pkg-config against the installed files records the SONAME.
    let program = tmp.path().join("app.c");
    std::fs::write(
        &program,
        "#include <stdio.h>\n#include <dualwrite.h>\nint main(void) {\n  \
         if (dw_version_number() / 10000 != DW_VERSION_MAJOR) return 1;\n  \
         printf(\"%s %u\\n\", dw_version(), dw_version_number());\n  return 0;\n}\n",
    )
    .unwrap();
    let pkg_config_path = lib.join("pkgconfig");
    let flags = sh(Command::new("pkg-config")
        .args(["--cflags", "--libs", "dualwrite"])
        .env("PKG_CONFIG_PATH", &pkg_config_path));
    let app = tmp.path().join("app");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    sh(Command::new(&cc).arg(&program).arg("-o").arg(&app).args(flags.split_whitespace()));
    let needed = readelf(&["-d"], &app);
    assert!(needed.contains(&format!("Shared library: [libdualwrite.so.{major}]")), "{needed}");
    let ran = sh(Command::new(&app).env("LD_LIBRARY_PATH", &lib));
    assert!(ran.starts_with(&format!("{version} ")), "{ran}");

    // The C++ binding's pkg-config file points at its archive and headers.
    let cxx = sh(Command::new("pkg-config")
        .args(["--cflags", "--libs", "dualwrite-cxx"])
        .env("PKG_CONFIG_PATH", &pkg_config_path));
    assert!(cxx.contains(&format!("{}/libdualwrite_cxx.a", lib.display())), "{cxx}");
    assert!(prefix.join("include/dualwrite-cxx/src/lib.rs.h").is_file());
    assert!(prefix.join("include/rust/cxx.h").is_file());

    // pip installs the Python binding (from a copy: pip builds in the source tree), and the
    // package finds the installed library through the dynamic loader.
    let src = tmp.path().join("python-src");
    sh(Command::new("cp").arg("-r").arg(manifest_dir().join("bindings/python")).arg(&src));
    let target = tmp.path().join("site");
    sh(Command::new("/usr/bin/python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-build-isolation",
            "--no-deps",
            "--no-index",
            "--target",
        ])
        .arg(&target)
        .arg(&src)
        .env("PIP_ROOT_USER_ACTION", "ignore"));
    let py = sh(Command::new("/usr/bin/python3")
        .args(["-c", "import dualwrite; print(dualwrite.library_version()); print(dualwrite.__file__)"])
        .env("PYTHONPATH", &target)
        .env("LD_LIBRARY_PATH", &lib)
        .env_remove("DUALWRITE_LIB")
        .current_dir(tmp.path()));
    let mut lines = py.lines();
    assert_eq!(lines.next(), Some(version), "{py}");
    assert!(lines.next().unwrap().starts_with(&target.display().to_string()), "{py}");
}
