//! Result codes, the one place they are chosen ([`map_error`]), and the thread-local message of
//! the last failure.

use crate::error::{Error, ErrorKind};
use std::cell::RefCell;
use std::ffi::{c_char, c_int, CStr, CString};

/// What a `dw_*` call did. `DW_OK` is 0; every other value is a failure, and
/// `dw_last_error_message()` then says what went wrong. The numbers are part of the ABI: they are
/// never changed or reused, and new codes are only ever added at the end.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum dw_result {
    /// Success; the call's outputs were written.
    DW_OK = 0,
    /// The addressed row (or dead letter) does not exist.
    DW_NOT_FOUND = 1,
    /// The change breaks a rule of the data that depends on other rows or state (a unique or
    /// foreign key, a state transition the entity does not allow). Nothing was written.
    DW_CONFLICT = 2,
    /// The input can never succeed as given: unknown table or column, a value of the wrong type,
    /// a value a CHECK refuses (value set, non-empty, lower-case, range), malformed JSON, text that
    /// is not UTF-8, a handle already closed. Nothing was written.
    DW_INVALID_ARGUMENT = 3,
    /// SQLite stayed locked by another writer for longer than the busy timeout. Retrying later
    /// may succeed. Nothing was written.
    DW_BUSY = 4,
    /// A store or resource is not reachable now (a file that cannot be opened, PostgreSQL down,
    /// a flush that timed out). Retrying later may succeed. (A read-only SQLite file is
    /// `DW_CONFIG`: retrying does not help.)
    DW_UNAVAILABLE = 5,
    /// A required pointer argument was NULL. Nothing was done.
    DW_NULL_PARAMETER = 6,
    /// A bug inside the library was caught at the C boundary. The handle may still be used, but
    /// please report the message.
    DW_PANIC = 7,
    /// A bug or an impossible state inside the library (see the message).
    DW_INTERNAL = 8,
    /// The configuration is wrong or incomplete: a bad PostgreSQL URL, a missing or unusable
    /// secret key, a SQLite schema this build cannot use (run `dualwrite migrate`), a SQLite file
    /// that is read-only for this process.
    DW_CONFIG = 9,
    /// Writes are switched off: the flag `write_mode` is `read_only` (the monolith is being
    /// decommissioned; PostgreSQL's services own the data). Nothing was written. Reads still work.
    DW_READ_ONLY = 10,
}

use dw_result::*;

/// The one place a core error becomes a result code: the core classifies ([`Error::kind`]), this
/// names the code of each kind. Exhaustive on purpose (no wildcard arm): a new kind must be given
/// a code here before the crate compiles.
pub(crate) fn map_error(e: &Error) -> dw_result {
    result_code(e.kind())
}

fn result_code(kind: ErrorKind) -> dw_result {
    match kind {
        ErrorKind::NotFound => DW_NOT_FOUND,
        ErrorKind::Conflict => DW_CONFLICT,
        ErrorKind::InvalidArgument => DW_INVALID_ARGUMENT,
        ErrorKind::Busy => DW_BUSY,
        ErrorKind::Unavailable => DW_UNAVAILABLE,
        ErrorKind::Internal => DW_INTERNAL,
        ErrorKind::Config => DW_CONFIG,
        ErrorKind::ReadOnly => DW_READ_ONLY,
    }
}

/// A failed call: its code and the message `dw_last_error_message()` will return.
#[derive(Debug)]
pub(crate) struct Failure {
    pub code: dw_result,
    pub message: String,
}

impl Failure {
    pub fn null(parameter: &str) -> Failure {
        Failure { code: DW_NULL_PARAMETER, message: format!("{parameter} must not be NULL") }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure { code: map_error(&e), message: e.to_string() }
    }
}

thread_local! {
    /// The message of the last call on this thread; empty after a success.
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// Longest message kept, in bytes: messages may quote caller input, which can be huge.
const MAX_MESSAGE: usize = 2048;

/// Record the outcome of a call for `dw_last_error_message()`.
pub(crate) fn set_last_error(message: &str) {
    let mut text = message.replace('\0', "\\0");
    if text.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    // A message can quote caller text; a NUL in it would cut the C string short, so it is shown
    // as `\0` above and the conversion cannot fail.
    let c = CString::new(text).unwrap_or_default();
    // Fails only while the thread is being torn down, when nobody can read it any more.
    let _ = LAST_ERROR.try_with(|e| *e.borrow_mut() = c);
}

/// The message of the last failed `dw_*` call on the calling thread, or `""` when the last call
/// succeeded (or none was made yet).
///
/// Never NULL. The string is owned by the library: do not free it. It stays valid until the next
/// `dw_*` call on the same thread (other than `dw_last_error_message`, `dw_result_str`,
/// `dw_version` and `dw_string_free`, which leave it alone); copy it to keep it. Messages never
/// contain a secret.
#[no_mangle]
pub extern "C" fn dw_last_error_message() -> *const c_char {
    ffi_boundary_infallible!(c"".as_ptr(), {
        LAST_ERROR.try_with(|e| e.borrow().as_ptr()).unwrap_or(c"".as_ptr())
    })
}

/// A static, human-readable description of a result code, like `sqlite3_errstr`. A value that is
/// no `dw_result` gives "unknown result code".
///
/// Never NULL. The string is owned by the library and valid for the life of the process: do not
/// free it.
#[no_mangle]
pub extern "C" fn dw_result_str(code: c_int) -> *const c_char {
    ffi_boundary_infallible!(c"unknown result code".as_ptr(), { result_text(code).as_ptr() })
}

fn result_text(code: c_int) -> &'static CStr {
    const TABLE: &[(dw_result, &CStr)] = &[
        (DW_OK, c"success"),
        (DW_NOT_FOUND, c"not found"),
        (DW_CONFLICT, c"conflict: the change breaks a rule of the data"),
        (DW_INVALID_ARGUMENT, c"invalid argument"),
        (DW_BUSY, c"busy: the SQLite database is locked by another writer"),
        (DW_UNAVAILABLE, c"unavailable: a store or resource cannot be reached now"),
        (DW_NULL_PARAMETER, c"a required pointer argument was NULL"),
        (DW_PANIC, c"internal panic caught at the C boundary"),
        (DW_INTERNAL, c"internal error"),
        (DW_CONFIG, c"configuration error"),
        (DW_READ_ONLY, c"read-only: writes are switched off (write_mode read_only)"),
    ];
    TABLE.iter().find(|(r, _)| *r as c_int == code).map_or(c"unknown result code", |(_, t)| t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_its_own_text_and_unknown_codes_are_named() {
        let texts: Vec<_> = (0..=10).map(result_text).collect();
        for (i, t) in texts.iter().enumerate() {
            assert_ne!(*t, c"unknown result code", "code {i}");
            assert_eq!(texts.iter().filter(|u| *u == t).count(), 1, "code {i} shares its text");
        }
        assert_eq!(result_text(11), c"unknown result code");
        assert_eq!(result_text(-1), c"unknown result code");
    }

    #[test]
    fn core_errors_map_to_the_codes_a_caller_acts_on() {
        assert_eq!(map_error(&Error::invalid("x", "y")), DW_INVALID_ARGUMENT);
        assert_eq!(map_error(&Error::not_found("users", "k")), DW_NOT_FOUND);
        assert_eq!(map_error(&Error::Conflict("c".into())), DW_CONFLICT);
        assert_eq!(map_error(&Error::ReadOnly("r".into())), DW_READ_ONLY);
        assert_eq!(map_error(&Error::Busy("b".into())), DW_BUSY);
        assert_eq!(map_error(&Error::Unavailable("u".into())), DW_UNAVAILABLE);
        assert_eq!(map_error(&Error::Config("c".into())), DW_CONFIG);
        assert_eq!(map_error(&Error::Migration("m".into())), DW_CONFIG);
        assert_eq!(map_error(&Error::Crypto("k".into())), DW_CONFIG);
        assert_eq!(map_error(&Error::Internal("i".into())), DW_INTERNAL);
        assert_eq!(map_error(&Error::Sqlite(rusqlite::Error::QueryReturnedNoRows)), DW_NOT_FOUND);
        let cant_open =
            rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN), None);
        assert_eq!(map_error(&Error::Sqlite(cant_open)), DW_UNAVAILABLE);
        let io = std::io::Error::other("disk");
        assert_eq!(map_error(&Error::Io(io)), DW_UNAVAILABLE);
    }

    /// The C++ binding names its failures with `ErrorKind::result_code_name`: the names must be
    /// the ones this header gives the same codes.
    #[test]
    fn every_kind_is_named_after_its_code() {
        for &kind in ErrorKind::ALL {
            assert_eq!(format!("{:?}", result_code(kind)), kind.result_code_name(), "{kind:?}");
        }
    }

    #[test]
    fn the_last_error_is_per_thread_and_nul_safe() {
        set_last_error("first\0second");
        let here = unsafe { CStr::from_ptr(dw_last_error_message()) }.to_str().unwrap().to_string();
        assert_eq!(here, "first\\0second");
        let there = std::thread::spawn(|| {
            unsafe { CStr::from_ptr(dw_last_error_message()) }.to_str().unwrap().to_string()
        })
        .join()
        .unwrap();
        assert_eq!(there, "");

        set_last_error(&"é".repeat(5000));
        let long = unsafe { CStr::from_ptr(dw_last_error_message()) }.to_str().unwrap().to_string();
        assert!(long.len() <= MAX_MESSAGE + '…'.len_utf8() && long.ends_with('…'));
    }
}
