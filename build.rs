//! Gives the shared library a SONAME, `libdualwrite.so.<major>`, as C libraries have: a program
//! linked against it records that name (NEEDED), so an incompatible major version is never
//! loaded in its place, and versions can sit side by side (scripts/install installs
//! libdualwrite.so.<major>.<minor>.<patch> with the .so.<major> and .so symlinks).
//!
//! A program linked in the build tree then looks for libdualwrite.so.<major> beside
//! libdualwrite.so, so this also makes that symlink in target/<profile>/ (it dangles until the
//! library is linked, which cargo does right after).

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return;
    }
    let major = std::env::var("CARGO_PKG_VERSION_MAJOR").unwrap_or_else(|_| "0".into());
    let soname = format!("libdualwrite.so.{major}");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,{soname}");

    // OUT_DIR is target/<profile>/build/dualwrite-<hash>/out (or under target/<triple>/<profile>).
    let Some(out_dir) = std::env::var_os("OUT_DIR").map(std::path::PathBuf::from) else { return };
    let Some(profile_dir) = out_dir.ancestors().nth(3) else { return };
    if profile_dir.join("build").is_dir() {
        let link = profile_dir.join(&soname);
        if std::fs::symlink_metadata(&link).is_err() {
            if let Err(e) = std::os::unix::fs::symlink("libdualwrite.so", &link) {
                println!("cargo:warning=could not make {}: {e}", link.display());
            }
        }
    }
}
