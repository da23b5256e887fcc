//! The library's logs for a C host: `dw_set_log_callback`, and the `DUALWRITE_LOG` /
//! `DUALWRITE_LOG_FORMAT` stderr output every C entry point that opens a bridge switches on
//! (`crate::logging`).

use super::error::dw_result;
use std::ffi::{c_char, c_int, c_void, CString};

/// Log level of an error: something failed and was not retried (or retrying stopped).
pub const DW_LOG_ERROR: c_int = 1;
/// Log level of a warning: something failed and is being retried, or needs an operator soon
/// (a shadow-read mismatch, PostgreSQL unreachable, a dead letter).
pub const DW_LOG_WARN: c_int = 2;
/// Log level of information: migrations applied, phases changed, the replicator's lease.
pub const DW_LOG_INFO: c_int = 3;
/// Log level of debugging detail: batches, retries, reads routed.
pub const DW_LOG_DEBUG: c_int = 4;
/// Log level of tracing detail.
pub const DW_LOG_TRACE: c_int = 5;

/// Receives one log event: its level (`DW_LOG_ERROR` .. `DW_LOG_TRACE`), its target (the
/// library module, e.g. "dualwrite::replicator") and its text (the message, then `key=value`
/// fields), both NUL-terminated UTF-8 and valid only during the call; and the `user_data` given
/// to `dw_set_log_callback`.
pub type dw_log_callback = Option<
    unsafe extern "C" fn(level: c_int, target: *const c_char, message: *const c_char, user_data: *mut c_void),
>;

/// The host's pointer, handed back untouched; the host promised it may be used from any thread.
struct UserData(*mut c_void);
unsafe impl Send for UserData {}
unsafe impl Sync for UserData {}
impl UserData {
    // A method, so the closure below captures the whole (Send + Sync) wrapper, not the field.
    fn ptr(&self) -> *mut c_void {
        self.0
    }
}

fn level_number(level: tracing::Level) -> c_int {
    match level {
        tracing::Level::ERROR => DW_LOG_ERROR,
        tracing::Level::WARN => DW_LOG_WARN,
        tracing::Level::INFO => DW_LOG_INFO,
        tracing::Level::DEBUG => DW_LOG_DEBUG,
        tracing::Level::TRACE => DW_LOG_TRACE,
    }
}

/// A C string of `s`, NUL bytes replaced (a message never fails to arrive because of one).
fn c_text(s: &str) -> CString {
    CString::new(s.replace('\0', "\u{fffd}")).unwrap_or_default()
}

/// Send the library's log events to `callback` instead of stderr; NULL sends them back to
/// stderr. Which events: the filter in `DUALWRITE_LOG` (e.g. "debug", "dualwrite=info", "off";
/// default "warn"), read once, by the first call of this function or of `dw_bridge_open`.
/// Without a callback, events are written to stderr, one line each, as text, or as JSON with
/// `DUALWRITE_LOG_FORMAT=json`.
///
/// Threading: the callback is called on the thread that logged, which may be the caller's
/// thread or one of the library's own (the replicator, the flag watcher), and from several
/// threads at once: it must be thread-safe. It must not call `dw_set_log_callback`, and should
/// return quickly (a slow callback slows the thread that logged). When `dw_set_log_callback`
/// returns, no call to the previous callback is still running or will start, so its
/// `user_data` may be freed then. The setting is process-wide, not per bridge.
///
/// Parameters:
/// - `callback`: the function to call. NULL is allowed: events go back to stderr.
/// - `user_data`: passed to `callback` as given, never read by the library. NULL is allowed.
///
/// Returns `DW_OK`.
///
/// # Safety
/// `callback` is NULL or a function that is safe to call as described; `user_data` is passed
/// to it as given and may be NULL.
#[no_mangle]
pub unsafe extern "C" fn dw_set_log_callback(callback: dw_log_callback, user_data: *mut c_void) -> dw_result {
    ffi_boundary!({
        let hook: Option<crate::logging::LogCallback> = callback.map(|f| {
            let data = UserData(user_data);
            Box::new(move |level: tracing::Level, target: &str, message: &str| {
                let (t, m) = (c_text(target), c_text(message));
                // SAFETY: the host gave `f` for exactly this call, with its own user_data.
                unsafe { f(level_number(level), t.as_ptr(), m.as_ptr(), data.ptr()) }
            }) as crate::logging::LogCallback
        });
        crate::logging::set_callback(hook);
        Ok(())
    })
}
