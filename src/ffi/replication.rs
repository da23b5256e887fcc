//! Replication from C: wait for PostgreSQL to catch up, read the health, handle dead letters.

use super::bridge::dw_bridge;
use super::error::dw_result;
use super::strings::json_out;
use crate::error::Error;
use std::ffi::c_char;
use std::time::Duration;

/// Wait up to `timeout_ms` milliseconds until every change committed before this call has been
/// applied to PostgreSQL (or moved to the dead letters). `DW_UNAVAILABLE` when the time runs
/// out; the message says how many changes are pending and the last replication error.
///
/// Some process must be replicating (this one, when opened with PostgreSQL and `replicate`). In
/// the PostgreSQL-first write modes writes are in PostgreSQL when they return; this waits for
/// what SQLite-first writes left in the outbox.
///
/// Parameters:
/// - `bridge`: an open handle. NULL: `DW_NULL_PARAMETER`.
///
/// # Safety
/// `bridge` is NULL or a handle from `dw_bridge_open` that was not freed.
#[no_mangle]
pub unsafe extern "C" fn dw_flush(bridge: *mut dw_bridge, timeout_ms: u32) -> dw_result {
    ffi_boundary!({
        let h = try_clone_arc!(bridge);
        h.live()?.flush(Duration::from_millis(timeout_ms.into()))?;
        Ok(())
    })
}

/// Replication health as a JSON object: `outbox_depth`, `oldest_pending_ms`, `applied_total`,
/// `applied_per_sec`, `retries`, `dead_letters`, `last_error`, `replicator_running`,
/// `postgres_connected` (and fields added later).
///
/// Parameters:
/// - `bridge`: an open handle. NULL: `DW_NULL_PARAMETER`.
/// - `status_json_out`: where the object goes. NULL: `DW_NULL_PARAMETER`.
///
/// On `DW_OK`, `*status_json_out` receives the object, owned by the caller: free it with
/// `dw_string_free`.
///
/// # Safety
/// `bridge` is NULL or a live handle; `status_json_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dw_status(bridge: *mut dw_bridge, status_json_out: *mut *mut c_char) -> dw_result {
    ffi_boundary!({
        let h = try_clone_arc!(bridge);
        try_out!(status_json_out);
        let status = h.live()?.status()?;
        json_out(status_json_out, &status)
    })
}

/// The changes that failed for a permanent reason, as a JSON array of objects: `seq`,
/// `table_name`, `row_key`, `op`, `created_at`, `failed_at`, `error`.
///
/// Parameters:
/// - `bridge`: an open handle. NULL: `DW_NULL_PARAMETER`.
/// - `dead_letters_json_out`: where the array goes. NULL: `DW_NULL_PARAMETER`.
///
/// On `DW_OK`, `*dead_letters_json_out` receives the array, owned by the caller: free it with
/// `dw_string_free`.
///
/// # Safety
/// `bridge` is NULL or a live handle; `dead_letters_json_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dw_dead_letter_list(
    bridge: *mut dw_bridge,
    dead_letters_json_out: *mut *mut c_char,
) -> dw_result {
    ffi_boundary!({
        let h = try_clone_arc!(bridge);
        try_out!(dead_letters_json_out);
        let letters = h.live()?.dead_letters()?;
        json_out(dead_letters_json_out, &letters)
    })
}

/// Queue the dead letter `seq` again, with its row as SQLite holds it now. `DW_NOT_FOUND` when
/// there is no such dead letter.
///
/// Parameters:
/// - `bridge`: an open handle. NULL: `DW_NULL_PARAMETER`.
///
/// # Safety
/// `bridge` is NULL or a handle from `dw_bridge_open` that was not freed.
#[no_mangle]
pub unsafe extern "C" fn dw_dead_letter_retry(bridge: *mut dw_bridge, seq: i64) -> dw_result {
    ffi_boundary!({
        let h = try_clone_arc!(bridge);
        if !h.live()?.retry_dead_letter(seq)? {
            return Err(Error::not_found("dead letter", seq).into());
        }
        Ok(())
    })
}

/// Discard the dead letter `seq` (its change will not reach PostgreSQL). `DW_NOT_FOUND` when
/// there is no such dead letter.
///
/// Parameters:
/// - `bridge`: an open handle. NULL: `DW_NULL_PARAMETER`.
///
/// # Safety
/// `bridge` is NULL or a handle from `dw_bridge_open` that was not freed.
#[no_mangle]
pub unsafe extern "C" fn dw_dead_letter_drop(bridge: *mut dw_bridge, seq: i64) -> dw_result {
    ffi_boundary!({
        let h = try_clone_arc!(bridge);
        if !h.live()?.drop_dead_letter(seq)? {
            return Err(Error::not_found("dead letter", seq).into());
        }
        Ok(())
    })
}
