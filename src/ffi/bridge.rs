//! `dw_bridge`: the handle the monolith holds. Open from a JSON configuration, close (drain and
//! stop the replicator), free.

use super::error::{dw_result, Failure};
use super::handle::{arc_into_raw, free_arc, Castable, OwnershipArc};
use super::strings::json_arg;
use crate::bridge::{Bridge, BridgeOptions};
use crate::config::{Config, KeySource};
use crate::error::Error;
use crate::pg_connect::PgConfig;
use serde::{Deserialize, Deserializer};
use std::ffi::c_char;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An open bridge: SQLite connections, the secret key and (when PostgreSQL is configured and
/// `replicate` is on) the background replicator of this process.
///
/// Thread-safe: any number of threads may call functions on one handle at the same time.
/// Created by `dw_bridge_open`, closed by `dw_bridge_close`, released by `dw_bridge_free`.
///
/// Across `fork()`: a handle belongs to the process that opened it. A child that inherits one
/// (a pre-fork server that opened it before forking) gets `DW_UNAVAILABLE` from every call on it,
/// except `dw_bridge_close` and `dw_bridge_free`, which release the child's copy quietly: they
/// touch none of the parent's threads, connections or file locks, and the child's copy of the
/// memory is left allocated (a leak checker run in the child reports it). The parent's handle is
/// unaffected. A child that needs a bridge opens its own with `dw_bridge_open`.
pub struct dw_bridge {
    _private: [u8; 0],
}

/// What a `dw_bridge` pointer holds.
pub(crate) struct BridgeHandle {
    bridge: Bridge,
    /// Whether this process runs a replicator (so closing has something to drain).
    replicating: bool,
    closed: AtomicBool,
}

impl Castable for dw_bridge {
    type Ownership = OwnershipArc;
    type RustType = BridgeHandle;
}

impl BridgeHandle {
    /// The bridge, unless the handle was closed: use after close is refused, not undefined.
    pub(crate) fn live(&self) -> Result<&Bridge, Failure> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::invalid(
                "bridge",
                "the handle was closed by dw_bridge_close; only dw_bridge_free may be called on it",
            )
            .into());
        }
        Ok(&self.bridge)
    }
}

/// The JSON object `dw_bridge_open` takes. Fields left out come from the environment (and the
/// TOML file), exactly as `dualwrite::Config::load` and the CLI read them.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OpenConfig {
    /// A TOML configuration file, read first (the environment and the fields here win over it).
    config_file: Option<PathBuf>,
    sqlite_path: Option<PathBuf>,
    /// Absent: from the environment. `null`: no PostgreSQL (SQLite only, nothing replicates).
    #[serde(default, deserialize_with = "present")]
    postgres_url: Option<Option<String>>,
    key_file: Option<PathBuf>,
    key_env: Option<String>,
    #[serde(default = "yes")]
    replicate: bool,
    #[serde(default = "yes")]
    migrate_sqlite: bool,
    /// Create the SQLite file when there is none (default: a missing file is an error).
    #[serde(default)]
    create: bool,
}

/// Tells a field given as `null` (`Some(None)`) from one left out (`None`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

fn yes() -> bool {
    true
}

fn open_config(text: &str) -> Result<(Config, BridgeOptions), Failure> {
    let v = json_arg(text, "config_json")?;
    let oc: OpenConfig = serde_json::from_value(v)
        .map_err(|e| Error::invalid("config_json", super::call::serde_message(&e)))?;
    let mut config = Config::load(oc.config_file.as_deref())?;
    if let Some(p) = oc.sqlite_path {
        config.sqlite_path = p;
    }
    match oc.postgres_url {
        None => {}
        Some(None) => config.postgres = None,
        Some(Some(url)) => config.postgres = Some(PgConfig::from_url(&url)?),
    }
    config.key_source = match (oc.key_file, oc.key_env) {
        (Some(_), Some(_)) => {
            return Err(Error::invalid("config_json", "give key_file or key_env, not both").into());
        }
        (Some(f), None) => KeySource::File(f),
        (None, Some(v)) => KeySource::Env(v),
        (None, None) => config.key_source,
    };
    let options = BridgeOptions {
        migrate_sqlite: oc.migrate_sqlite,
        replicate: oc.replicate,
        create_sqlite: oc.create,
        ..Default::default()
    };
    Ok((config, options))
}

/// Open a bridge.
///
/// `config_json` is a JSON object; every field is optional:
///
/// | field | meaning |
/// | --- | --- |
/// | `"sqlite_path"` | the monolith's SQLite file (migrated if behind; it must exist unless `"create"`) |
/// | `"create"` | create the SQLite file when there is none (default `false`: a missing file is `DW_CONFIG`, so a mistyped path never becomes a new, empty database) |
/// | `"postgres_url"` | a `postgres://` URL or libpq `key=value` string; `null` = no PostgreSQL |
/// | `"key_file"` / `"key_env"` | the secret key for api_keys: a file (mode 0600), or the name of an environment variable holding it (not both) |
/// | `"replicate"` | run the replicator in this process (default `true`) |
/// | `"migrate_sqlite"` | apply SQLite migrations on open (default `true`) |
/// | `"config_file"` | a TOML file read first, as `dualwrite --config` reads it |
///
/// A field left out comes from the environment (`DUALWRITE_SQLITE_PATH`, `DUALWRITE_PG_URL`,
/// `DATABASE_URL`, the libpq `PG*` variables, `DUALWRITE_SECRET_KEY_FILE`, ...) or the TOML file,
/// as for the CLI. Unknown fields are refused (`DW_INVALID_ARGUMENT`). A missing secret key does
/// not fail the open; only the api_keys operations then fail (`DW_CONFIG`).
///
/// On `DW_OK`, `*bridge_out` receives a new handle, owned by the caller: close it with
/// `dw_bridge_close` and release it with `dw_bridge_free`. On failure `*bridge_out` is unchanged.
///
/// # Safety
/// `config_json` is NULL or a NUL-terminated string; `bridge_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dw_bridge_open(
    config_json: *const c_char,
    bridge_out: *mut *mut dw_bridge,
) -> dw_result {
    ffi_boundary!({
        // A C or Python host has no tracing subscriber: the library's logs go to stderr (or the
        // host's dw_set_log_callback), filtered by DUALWRITE_LOG.
        crate::logging::install_from_env();
        let text = try_str!(config_json);
        try_out!(bridge_out);
        let (config, options) = open_config(text)?;
        let replicating = options.replicate && config.postgres.is_some();
        let bridge = Bridge::open(config, options)?;
        let handle = Arc::new(BridgeHandle { bridge, replicating, closed: AtomicBool::new(false) });
        *bridge_out = arc_into_raw::<dw_bridge>(handle);
        Ok(())
    })
}

/// Close a bridge: refuse further calls on the handle, wait up to `timeout_ms` milliseconds for
/// this process's replicator to apply every change committed so far, then stop it.
///
/// The handle is closed whatever the result. `DW_OK`: everything was applied (or this process
/// does not replicate, or write_mode is sqlite after a rollback: replication is paused and the
/// captured changes wait for `write_mode=dual`, so there is nothing to wait for). `DW_UNAVAILABLE`:
/// some changes were not applied in time; they stay in the SQLite outbox, and the next process
/// that replicates applies them. Closing a closed handle does nothing and returns `DW_OK`.
///
/// In a `fork()`ed child, on the handle it inherited: returns `DW_OK` at once and drains nothing
/// (the replicator is the parent's); the parent's bridge is unaffected.
///
/// Use after close is detected: every later call on the handle, except `dw_bridge_close` and
/// `dw_bridge_free`, returns `DW_INVALID_ARGUMENT`. Calls already running on other threads
/// finish normally. The handle stays allocated until `dw_bridge_free`.
///
/// # Safety
/// `bridge` is NULL or a handle from `dw_bridge_open` that was not freed.
#[no_mangle]
pub unsafe extern "C" fn dw_bridge_close(bridge: *mut dw_bridge, timeout_ms: u32) -> dw_result {
    ffi_boundary!({
        let h = try_clone_arc!(bridge);
        if h.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let timeout = Duration::from_millis(timeout_ms.into());
        let started = Instant::now();
        // In a fork()ed child the replicator is the parent's: nothing to drain or stop here.
        // Rolled back (write_mode sqlite, or DUALWRITE_FORCE_SQLITE): replication is paused on
        // purpose and the captured changes wait for write_mode=dual. Draining cannot finish, and
        // reporting that would make every program's shutdown fail after a documented rollback.
        let paused = h.bridge.flags().effective_write_mode() == crate::flags::WriteMode::Sqlite;
        let drained =
            if h.replicating && h.bridge.opened_here() && !paused { h.bridge.flush(timeout) } else { Ok(()) };
        h.bridge.shutdown(timeout.saturating_sub(started.elapsed()));
        drained.map_err(|e| {
            let mut f = Failure::from(e);
            f.message = format!(
                "the bridge is closed, but not every change reached PostgreSQL; the rest stays in the \
                 outbox for the next process that replicates: {}",
                f.message
            );
            f
        })
    })
}

/// Release a handle. NULL is accepted and does nothing.
///
/// If the handle was not closed, this also stops the replicator, waiting about a second at most
/// for it to drain (changes not applied stay in the outbox). If another thread is still inside
/// a call on the handle, that call finishes first and the bridge is released after it. Never
/// use the handle again after this call, and free it only once: that is not detected.
///
/// In a `fork()`ed child, on the handle it inherited: releases the child's copy without
/// stopping, joining or closing anything of the parent's (see `dw_bridge`).
///
/// # Safety
/// `bridge` is NULL or a handle from `dw_bridge_open` that was not freed.
#[no_mangle]
pub unsafe extern "C" fn dw_bridge_free(bridge: *mut dw_bridge) {
    ffi_boundary_infallible!((), { free_arc(bridge) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_config_fields_win_and_null_means_no_postgres() {
        let (c, o) = open_config(
            r#"{"sqlite_path": "/tmp/x.sqlite3", "postgres_url": null, "key_env": "MY_KEY", "replicate": false}"#,
        )
        .unwrap();
        assert_eq!(c.sqlite_path, PathBuf::from("/tmp/x.sqlite3"));
        assert!(c.postgres.is_none());
        assert_eq!(c.key_source, KeySource::Env("MY_KEY".into()));
        assert!(!o.replicate && o.migrate_sqlite);

        let (c, _) = open_config(r#"{"postgres_url": "postgres://u:pw@h:5/db"}"#).unwrap();
        assert_eq!(c.postgres.unwrap().description, "postgres://u:***@h:5/db");
    }

    #[test]
    fn bad_open_configs_are_refused_with_the_right_code() {
        let code = |s: &str| open_config(s).err().map(|f| f.code);
        assert_eq!(code(r#"{"sqlite_paht": "x"}"#), Some(dw_result::DW_INVALID_ARGUMENT));
        assert_eq!(code(r#"["x"]"#), Some(dw_result::DW_INVALID_ARGUMENT));
        assert_eq!(code(r#"{"replicate": "yes"}"#), Some(dw_result::DW_INVALID_ARGUMENT));
        assert_eq!(code(r#"{"key_file": "/k", "key_env": "K"}"#), Some(dw_result::DW_INVALID_ARGUMENT));
        assert_eq!(code(r#"{"postgres_url": "postgres://h:notaport/db"}"#), Some(dw_result::DW_CONFIG));
        assert_eq!(code(r#"{"config_file": "/nonexistent/dw.toml"}"#), Some(dw_result::DW_CONFIG));
    }

    /// Regression (issue 14, item 2): `config_file` naming the key file put the key in the message.
    #[test]
    fn a_config_file_that_does_not_parse_is_not_quoted_in_the_message() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("secret.key");
        std::fs::write(&key, "k3y-0f-the-api-keys-9a8b7c6d5e4f3a2b1c0d\n").unwrap();
        let f = open_config(&serde_json::json!({ "config_file": key }).to_string()).err().unwrap();
        assert_eq!(f.code, dw_result::DW_CONFIG);
        assert!(f.message.contains("secret.key") && f.message.contains("at line 1"), "{}", f.message);
        assert!(!f.message.contains("k3y-0f-the-api-keys"), "{}", f.message);
    }
}
