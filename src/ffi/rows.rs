//! The generic row operations: any of the 13 tables by name, rows as JSON objects in the wire form
//! (described in the header's prologue, cbindgen.toml). Table and column names are looked up in the registry, never pasted
//! into SQL, so hostile names are refused as `DW_INVALID_ARGUMENT`.

use super::bridge::dw_bridge;
use super::error::dw_result;
use super::strings::json_out;
use crate::error::Error;
use crate::schema::truncate_for_message;
use serde_json::Value;
use std::ffi::{c_char, c_int};

/// Read one row by its key (`id`, or `cache_key` for the two caches).
///
/// Parameters:
/// - `bridge`: an open handle. NULL: `DW_NULL_PARAMETER`.
/// - `table`: a table name. NULL: `DW_NULL_PARAMETER`.
/// - `key`: the row's key. NULL: `DW_NULL_PARAMETER`.
/// - `row_json_out`: where the row goes. NULL: `DW_NULL_PARAMETER`, and nothing is read.
///
/// On `DW_OK`, `*row_json_out` receives the row as a JSON object, owned by the caller: free it
/// with `dw_string_free`. `DW_NOT_FOUND` when there is no such row; `*row_json_out` is then
/// unchanged.
///
/// # Safety
/// Every pointer is NULL or valid: strings NUL-terminated, `row_json_out` writable.
#[no_mangle]
pub unsafe extern "C" fn dw_get(
    bridge: *mut dw_bridge,
    table: *const c_char,
    key: *const c_char,
    row_json_out: *mut *mut c_char,
) -> dw_result {
    ffi_boundary!({
        let h = try_clone_arc!(bridge);
        let table = try_str!(table);
        let key = try_str!(key);
        try_out!(row_json_out);
        let row = h
            .live()?
            .get(table, key)?
            .ok_or_else(|| Error::not_found(truncate_for_message(table), truncate_for_message(key)))?;
        json_out(row_json_out, &row)
    })
}

/// List rows of a table.
///
/// Parameters:
/// - `bridge`: an open handle. NULL: `DW_NULL_PARAMETER`.
/// - `table`: a table name. NULL: `DW_NULL_PARAMETER`.
/// - `filter_json`: a JSON object, every member optional: `{"where": {"column": value, ...},
///   "order_by": "column", "desc": false, "limit": 100, "offset": 0}` (equality only; `null`
///   matches NULL; `limit` at most 10000; the default order is by key). NULL is allowed: the
///   first 100 rows by key, as `"{}"`.
/// - `rows_json_out`: where the rows go. NULL: `DW_NULL_PARAMETER`, and nothing is read.
///
/// A list holds at most 64 MiB of rows (the first row always comes back, whatever its size):
/// past that, reading stops and the call returns `DW_INVALID_ARGUMENT` with a message saying to
/// ask for fewer rows and page with `offset`. The same bound holds for `dw_call` operations that
/// list rows.
///
/// On `DW_OK`, `*rows_json_out` receives a JSON array of row objects (possibly empty), owned by
/// the caller: free it with `dw_string_free`.
///
/// # Safety
/// Every pointer is NULL or valid: strings NUL-terminated, `rows_json_out` writable.
#[no_mangle]
pub unsafe extern "C" fn dw_list(
    bridge: *mut dw_bridge,
    table: *const c_char,
    filter_json: *const c_char,
    rows_json_out: *mut *mut c_char,
) -> dw_result {
    ffi_boundary!({
        let h = try_clone_arc!(bridge);
        let table = try_str!(table);
        let filter = if filter_json.is_null() { Value::Null } else { try_json!(filter_json) };
        try_out!(rows_json_out);
        let rows = h.live()?.list(table, &filter)?;
        json_out(rows_json_out, &rows)
    })
}

/// Insert a row given as a JSON object. Missing ids, timestamps and columns with defaults are
/// filled in. The call returns only after the store that takes writes first has committed: SQLite
/// with the outbox record (PostgreSQL receives it in the background), or, in the PostgreSQL-first
/// write modes, PostgreSQL (`DW_UNAVAILABLE` while it is unreachable). `DW_READ_ONLY` in
/// write_mode read_only.
///
/// Parameters:
/// - `bridge`: an open handle. NULL: `DW_NULL_PARAMETER`.
/// - `table`: a table name. NULL: `DW_NULL_PARAMETER`.
/// - `row_json`: the row, a JSON object. NULL: `DW_NULL_PARAMETER`.
/// - `row_json_out`: where the stored row goes. NULL: `DW_NULL_PARAMETER`, and nothing is
///   written to either store.
///
/// On `DW_OK`, `*row_json_out` receives the row as stored, owned by the caller: free it with
/// `dw_string_free`. `DW_CONFLICT` for a duplicate key or a missing parent row;
/// `DW_INVALID_ARGUMENT` for an unknown table or column or a value that does not fit. The secret
/// column of api_keys cannot be written here (use `dw_call` with `"api_keys.put"`).
///
/// # Safety
/// Every pointer is NULL or valid: strings NUL-terminated, `row_json_out` writable.
#[no_mangle]
pub unsafe extern "C" fn dw_insert(
    bridge: *mut dw_bridge,
    table: *const c_char,
    row_json: *const c_char,
    row_json_out: *mut *mut c_char,
) -> dw_result {
    ffi_boundary!({
        let h = try_clone_arc!(bridge);
        let table = try_str!(table);
        let row = try_json!(row_json);
        try_out!(row_json_out);
        let stored = h.live()?.insert(table, &row)?;
        json_out(row_json_out, &stored)
    })
}

/// Change some columns of the row with key `key`. Committed, with the whole row, as `dw_insert`
/// commits: to SQLite with its outbox record (PostgreSQL receives it in the background), or to
/// PostgreSQL first in the PostgreSQL-first write modes (`DW_UNAVAILABLE` while it is
/// unreachable). `DW_READ_ONLY` in write_mode read_only.
///
/// Parameters:
/// - `bridge`: an open handle. NULL: `DW_NULL_PARAMETER`.
/// - `table`: a table name. NULL: `DW_NULL_PARAMETER`.
/// - `key`: the row's key. NULL: `DW_NULL_PARAMETER`.
/// - `changes_json`: a JSON object of the columns to set (the key cannot change). NULL:
///   `DW_NULL_PARAMETER`.
/// - `row_json_out`: where the changed row goes. NULL: `DW_NULL_PARAMETER`, and nothing is
///   written to either store.
///
/// On `DW_OK`, `*row_json_out` receives the whole row after the change, owned by the caller: free
/// it with `dw_string_free`. `DW_NOT_FOUND` when there is no such row; `DW_CONFLICT` and
/// `DW_INVALID_ARGUMENT` as for `dw_insert`.
///
/// # Safety
/// Every pointer is NULL or valid: strings NUL-terminated, `row_json_out` writable.
#[no_mangle]
pub unsafe extern "C" fn dw_patch(
    bridge: *mut dw_bridge,
    table: *const c_char,
    key: *const c_char,
    changes_json: *const c_char,
    row_json_out: *mut *mut c_char,
) -> dw_result {
    ffi_boundary!({
        let h = try_clone_arc!(bridge);
        let table = try_str!(table);
        let key = try_str!(key);
        let changes = try_json!(changes_json);
        try_out!(row_json_out);
        let row = h.live()?.patch(table, key, &changes)?;
        json_out(row_json_out, &row)
    })
}

/// Delete the row with key `key`. Committed as `dw_insert` commits: to SQLite with its outbox
/// record (PostgreSQL receives it in the background), or to PostgreSQL first in the
/// PostgreSQL-first write modes (`DW_UNAVAILABLE` while it is unreachable). `DW_READ_ONLY` in
/// write_mode read_only.
///
/// Parameters:
/// - `bridge`: an open handle. NULL: `DW_NULL_PARAMETER`.
/// - `table`: a table name. NULL: `DW_NULL_PARAMETER`.
/// - `key`: the row's key. NULL: `DW_NULL_PARAMETER`.
/// - `deleted_out`: where to say whether a row was deleted. NULL: `DW_NULL_PARAMETER`, and
///   nothing is deleted.
///
/// On `DW_OK`, `*deleted_out` is 1 if a row was deleted and 0 if there was none (not an error).
/// `DW_CONFLICT` when other rows still reference it.
///
/// # Safety
/// Every pointer is NULL or valid: strings NUL-terminated, `deleted_out` writable.
#[no_mangle]
pub unsafe extern "C" fn dw_delete(
    bridge: *mut dw_bridge,
    table: *const c_char,
    key: *const c_char,
    deleted_out: *mut c_int,
) -> dw_result {
    ffi_boundary!({
        let h = try_clone_arc!(bridge);
        let table = try_str!(table);
        let key = try_str!(key);
        try_out!(deleted_out);
        let deleted = h.live()?.delete(table, key)?;
        *deleted_out = c_int::from(deleted);
        Ok(())
    })
}
