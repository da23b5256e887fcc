//! The C ABI, `include/dualwrite.h`: the only code in the crate that knows about C.
//!
//! Conventions (after rustls-ffi, sqlite3.h and libgit2; the header's prologue, in cbindgen.toml,
//! states them for C callers):
//!
//! - Every exported body runs inside [`ffi_boundary!`]: a panic becomes `DW_PANIC` with a message,
//!   never an unwind into C (invariant 8).
//! - Every required pointer argument goes through a null-checking macro (`DW_NULL_PARAMETER`);
//!   releasing NULL (`dw_bridge_close`, `dw_bridge_free`, `dw_string_free`) is a no-op, as
//!   `free(NULL)` is. Each function's doc says per pointer parameter whether NULL is allowed (the
//!   header test checks that it does). Text must be NUL-terminated UTF-8 (`DW_INVALID_ARGUMENT`
//!   otherwise); JSON is parsed before anything is touched, so bad input changes neither store.
//! - Outputs (`*_out`) are written only when the call returns `DW_OK`.
//! - The core classifies errors (`Error::kind`); [`error::map_error`] gives each kind its code;
//!   the message of the last failure on the calling thread is read with `dw_last_error_message()`.
//! - Handles are described once, in [`handle::Castable`] (`dw_bridge` is an `Arc`).
//! - Strings the library returns are freed with `dw_string_free`.
//!
//! One module per C object or concern: `bridge` (the handle's life), `rows` (the generic
//! table + JSON operations), `replication` (flush, status, dead letters), `call` (`dw_call`, the
//! C entry to the core's operations by name in src/call.rs, and their documentation), `error`,
//! `log` (the library's logs for the host), `strings`, `version`.

// C names (`dw_bridge`, `DW_OK`) are the ABI; they do not follow Rust's casing.
#![allow(non_camel_case_types)]

#[macro_use]
mod panic;
#[macro_use]
mod handle;
#[macro_use]
mod strings;

// In the order the header lists them.
mod bridge;
mod call;
mod error;
mod log;
mod replication;
mod rows;
mod version;

#[cfg(test)]
mod tests {
    /// The dependency points one way: the C ABI uses the core, and nothing in the core (the Rust
    /// API, the CLI, the C++ binding's entry points) reaches into the C ABI, so the core can be
    /// changed and tested without thinking of C.
    #[test]
    fn nothing_outside_the_c_abi_uses_it() {
        fn rust_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
                let path = entry.expect("directory entry").path();
                if path.is_dir() {
                    if !path.ends_with("ffi") {
                        rust_files(&path, out);
                    }
                } else if path.extension().is_some_and(|x| x == "rs") {
                    out.push(path);
                }
            }
        }
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        assert!(files.iter().any(|f| f.ends_with("call.rs")), "the walk found the core's files");
        let users: Vec<String> = files
            .iter()
            .filter(|f| std::fs::read_to_string(f).is_ok_and(|text| text.contains("crate::ffi")))
            .map(|f| f.display().to_string())
            .collect();
        assert!(
            users.is_empty(),
            "the core must not depend on the C ABI; these files use crate::ffi: {users:?}"
        );
    }
}
