//! The C ABI, `include/dualwrite.h`: the only code in the crate that knows about C.
//!
//! Conventions (shared/CONVENTIONS.md; models rustls-ffi, sqlite3.h, libgit2):
//!
//! - Every exported body runs inside [`ffi_boundary!`]: a panic becomes `DW_PANIC` with a message,
//!   never an unwind into C (invariant 8).
//! - Every pointer argument goes through a null-checking macro (`DW_NULL_PARAMETER`); text must be
//!   NUL-terminated UTF-8 (`DW_INVALID_ARGUMENT` otherwise); JSON is parsed before anything is
//!   touched, so bad input changes neither store.
//! - Outputs (`*_out`) are written only when the call returns `DW_OK`.
//! - Error codes are chosen in one place, [`error::map_error`]; the message of the last failure on
//!   the calling thread is read with `dw_last_error_message()`.
//! - Handles are described once, in [`handle::Castable`] (`dw_bridge` is an `Arc`).
//! - Strings the library returns are freed with `dw_string_free`.
//!
//! One module per C object or concern: `bridge` (the handle's life), `rows` (the generic
//! table + JSON operations), `replication` (flush, status, dead letters), `call` (the typed
//! repository operations by name), `error`, `log` (the library's logs for the host), `strings`,
//! `version`.

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
