//! Text across the boundary: NUL-terminated UTF-8 arguments in, JSON text out, and
//! `dw_string_free` for every string the library hands out.

use super::error::Failure;
use crate::error::Error;
use serde::Serialize;
use serde_json::Value;
use std::ffi::{c_char, CStr, CString};
use zeroize::Zeroize;

/// Borrow a required text argument: NULL is `DW_NULL_PARAMETER`, bytes that are not UTF-8 are
/// `DW_INVALID_ARGUMENT`.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that outlives the call.
pub(crate) unsafe fn str_arg<'a>(p: *const c_char, name: &str) -> Result<&'a str, Failure> {
    if p.is_null() {
        return Err(Failure::null(name));
    }
    // SAFETY: by the contract above.
    let bytes = unsafe { CStr::from_ptr(p) };
    bytes.to_str().map_err(|e| {
        Error::invalid(name, format!("is not valid UTF-8 (bad byte at offset {})", e.valid_up_to())).into()
    })
}

/// Parse a JSON argument. Nothing has been touched yet when this fails, so bad JSON changes
/// neither store. serde_json refuses nesting deeper than 128 levels, so hostile input cannot
/// exhaust the stack.
pub(crate) fn json_arg(text: &str, name: &str) -> Result<Value, Failure> {
    serde_json::from_str(text).map_err(|e| Error::invalid(name, format!("is not valid JSON: {e}")).into())
}

/// `let s: &str = try_str!(table);` — a required text argument (see [`str_arg`]).
macro_rules! try_str {
    ($p:ident) => {
        $crate::ffi::strings::str_arg($p, stringify!($p))?
    };
}

/// `let v: serde_json::Value = try_json!(row_json);` — a required JSON text argument.
macro_rules! try_json {
    ($p:ident) => {
        $crate::ffi::strings::json_arg($crate::ffi::strings::str_arg($p, stringify!($p))?, stringify!($p))?
    };
}

/// `try_out!(row_json_out);` — refuse a NULL output pointer before doing any work.
macro_rules! try_out {
    ($p:ident) => {
        if $p.is_null() {
            return Err($crate::ffi::error::Failure::null(stringify!($p)));
        }
    };
}

/// Hand `text` to C through a checked, non-NULL `out`; C frees it with `dw_string_free`.
///
/// # Safety
/// `out` is non-NULL and writable.
pub(crate) unsafe fn string_out(out: *mut *mut c_char, text: String) -> Result<(), Failure> {
    let c = CString::new(text).map_err(|_| Error::Internal("an output string holds a NUL byte".into()))?;
    // SAFETY: by the contract above.
    unsafe { *out = c.into_raw() };
    Ok(())
}

/// Serialize `value` as JSON and hand it to C (see [`string_out`]). JSON escapes NUL, so the
/// text has none.
///
/// # Safety
/// `out` is non-NULL and writable.
pub(crate) unsafe fn json_out(out: *mut *mut c_char, value: &impl Serialize) -> Result<(), Failure> {
    let text = serde_json::to_string(value)
        .map_err(|e| Error::Internal(format!("cannot serialize the result as JSON: {e}")))?;
    // SAFETY: passed on.
    unsafe { string_out(out, text) }
}

/// Free a string returned by this library (through a `char **..._out` argument). The bytes are
/// wiped before the memory is released (a result can hold a secret, from
/// `dw_call(..., "api_keys.secret", ...)`).
///
/// Parameters:
/// - `s`: a string from a `char **..._out` of this library, unmodified (the length is found by
///   its terminating NUL), not freed yet. NULL is allowed: a harmless no-op, as `free(NULL)`.
///
/// Only strings from this library may be passed, each exactly once; never pass the result of
/// `dw_last_error_message`, `dw_result_str` or `dw_version`, which the library keeps.
///
/// # Safety
/// `s` is NULL or a string this library returned and that was not freed yet.
#[no_mangle]
pub unsafe extern "C" fn dw_string_free(s: *mut c_char) {
    ffi_boundary_infallible!((), {
        if !s.is_null() {
            // SAFETY: by the contract above it came from CString::into_raw.
            let text = unsafe { CString::from_raw(s) };
            text.into_bytes_with_nul().zeroize();
        }
    })
}
