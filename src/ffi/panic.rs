//! The panic boundary every exported function body runs in: no unwind ever reaches C
//! (invariant 8). Requires `panic = "unwind"` (Cargo's default; the crate sets no other).

use super::error::{dw_result, set_last_error, Failure};
use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Run the body of a fallible `dw_*` function: a block that evaluates to
/// `Result<(), Failure>` (use `?` and `return Err(..)` freely). Returns `DW_OK`, the failure's
/// code, or `DW_PANIC`, and records the message for `dw_last_error_message()`.
macro_rules! ffi_boundary {
    ($body:block) => {
        $crate::ffi::panic::run(move || -> ::std::result::Result<(), $crate::ffi::error::Failure> { $body })
    };
}

/// Run the body of a `dw_*` function that cannot fail; a panic (a bug) yields `$on_panic`.
/// Leaves the last error message alone.
macro_rules! ffi_boundary_infallible {
    ($on_panic:expr, $body:block) => {
        ::std::panic::catch_unwind(::std::panic::AssertUnwindSafe(move || $body)).unwrap_or($on_panic)
    };
}

pub(crate) fn run(body: impl FnOnce() -> Result<(), Failure>) -> dw_result {
    // Unwind safety: a panic can leave only the library's own state behind, and every lock in
    // the core is taken with poison recovery, so the handle stays usable.
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => {
            set_last_error("");
            dw_result::DW_OK
        }
        Ok(Err(failure)) => {
            set_last_error(&failure.message);
            failure.code
        }
        Err(payload) => {
            set_last_error(&format!(
                "panic inside dualwrite (a bug; please report it): {}",
                payload_text(&*payload)
            ));
            dw_result::DW_PANIC
        }
    }
}

fn payload_text(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "no message"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    fn last_error() -> String {
        let p = super::super::error::dw_last_error_message();
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }

    #[test]
    fn a_panic_becomes_dw_panic_with_its_message() {
        let r = ffi_boundary!({
            if last_error().is_empty() {
                panic!("boom {}", 42);
            }
            Ok(())
        });
        assert_eq!(r, dw_result::DW_PANIC);
        assert!(last_error().contains("boom 42"), "{}", last_error());

        // The thread keeps working, and the next success clears the message.
        assert_eq!(ffi_boundary!({ Ok(()) }), dw_result::DW_OK);
        assert_eq!(last_error(), "");
    }

    #[test]
    fn a_failure_keeps_its_code_and_message() {
        let r = ffi_boundary!({ Err(Failure::null("table")) });
        assert_eq!(r, dw_result::DW_NULL_PARAMETER);
        assert_eq!(last_error(), "table must not be NULL");
    }

    #[test]
    fn an_infallible_body_returns_its_fallback_on_panic() {
        let v: i32 = ffi_boundary_infallible!(-1, {
            if last_error().len() < usize::MAX {
                panic!("static str payload");
            }
            1
        });
        assert_eq!(v, -1);
    }
}
