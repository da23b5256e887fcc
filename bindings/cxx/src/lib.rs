//! dualwrite for C++: a `dualwrite::Bridge` class made with the cxx crate (model: dtolnay/cxx
//! demo/). It calls the Rust API of the `dualwrite` crate directly, not the C ABI.
//!
//! ```cpp
//! #include "dualwrite-cxx/src/lib.rs.h"
//!
//! rust::Box<dualwrite::Bridge> db = dualwrite::Bridge::open(R"({"sqlite_path": "app.sqlite3"})");
//! std::string user = std::string(db->insert("users", R"({"email": "a@example.com", "display_name": "A"})"));
//! std::string job = std::string(db->call("jobs.submit", R"({"type": "serp"})"));
//! db->flush(30000);
//! db->close(10000);
//! ```
//!
//! - Rows, filters and arguments cross as UTF-8 JSON text (the wire form of docs/ARCHITECTURE.md);
//!   results come back as `rust::String` holding JSON.
//! - A failure throws `rust::Error`. Its `what()` starts with the name of the C ABI's result code
//!   for the same failure (`DW_NOT_FOUND: `, `DW_CONFLICT: `, `DW_INVALID_ARGUMENT: `, `DW_BUSY: `,
//!   `DW_UNAVAILABLE: `, `DW_CONFIG: `, `DW_READ_ONLY: `, `DW_INTERNAL: `, `DW_PANIC: `), then the message. A
//!   `const char*` or `std::string` that is not UTF-8 throws `std::invalid_argument` while being
//!   converted to `rust::Str`, before the call.
//! - A panic inside dualwrite would abort the process if it reached cxx, so every method body runs
//!   inside `catch_unwind` ([`guard`]) and a panic becomes `rust::Error` (`DW_PANIC: ...`).
//! - Every method takes `const Bridge&`: one bridge may be used by any number of threads at once.
//!   `close` refuses every later call (`DW_INVALID_ARGUMENT: ... closed`); destroying the
//!   `rust::Box` releases the bridge (stopping an unclosed replicator within about a second).

use serde_json::Value;
use std::any::Any;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[cxx::bridge(namespace = "dualwrite")]
mod ffi {
    extern "Rust" {
        /// An open dualwrite bridge: the SQLite file, the secret key and (with PostgreSQL and
        /// `replicate`) this process's replicator. Thread-safe; every method throws `rust::Error`.
        type Bridge;

        /// Open a bridge. `config_json` is the JSON object of `dw_bridge_open` (`sqlite_path`,
        /// `postgres_url` — null for no PostgreSQL, absent for the PG* variables — `key_file` or
        /// `key_env`, `replicate`, `migrate_sqlite`, `config_file`, `create` — the SQLite file must
        /// exist unless it is true); "" or "{}" takes everything from the environment, as the CLI does.
        #[Self = "Bridge"]
        fn open(config_json: &str) -> Result<Box<Bridge>>;

        /// Insert a row (a JSON object) into `table`; returns the row as stored (JSON). Returns
        /// after the commit of the store that takes writes first (`dw_insert` in
        /// include/dualwrite.h): SQLite, with PostgreSQL receiving the row in the background, or
        /// PostgreSQL in the PostgreSQL-first write modes (`DW_UNAVAILABLE` while unreachable).
        fn insert(&self, table: &str, row_json: &str) -> Result<String>;

        /// The row of `table` whose key is `key`, as JSON; throws `DW_NOT_FOUND` when none.
        fn get(&self, table: &str, key: &str) -> Result<String>;

        /// Rows of `table` as a JSON array. `filter_json`: "" for the first 100 by key, or
        /// `{"where": {...}, "order_by": "...", "desc": false, "limit": 100, "offset": 0}`.
        fn list(&self, table: &str, filter_json: &str) -> Result<String>;

        /// Change some columns of a row; returns the whole row after the change (JSON).
        fn patch(&self, table: &str, key: &str, changes_json: &str) -> Result<String>;

        /// Delete a row; false if there was none (`delete` is a C++ keyword).
        fn remove(&self, table: &str, key: &str) -> Result<bool>;

        /// Run a typed repository operation by name with a JSON object of arguments, as
        /// `dw_call` does (`"operations"` lists them; their arguments are in the table of `dw_call`
        /// in include/dualwrite.h). Returns the result as JSON (an object, an array or `null`).
        fn call(&self, operation: &str, args_json: &str) -> Result<String>;

        /// Wait up to `timeout_ms` until every change committed so far reached PostgreSQL;
        /// throws `DW_UNAVAILABLE` when the time runs out.
        fn flush(&self, timeout_ms: u32) -> Result<()>;

        /// Replication health as a JSON object (outbox_depth, applied_total, dead_letters, flags, ...).
        fn status(&self) -> Result<String>;

        /// Refuse further calls, wait up to `timeout_ms` for this process's replicator to apply
        /// what was committed, and stop it. Throws `DW_UNAVAILABLE` if changes were left in the
        /// outbox (the bridge is closed all the same). Closing twice does nothing.
        fn close(&self, timeout_ms: u32) -> Result<()>;
    }
}

/// The Rust side of `dualwrite::Bridge`.
pub struct Bridge {
    /// `None` only while being dropped (see the `Drop` impl).
    inner: Option<dualwrite::Bridge>,
    /// Whether this process runs a replicator (so closing has something to drain).
    replicating: bool,
    closed: AtomicBool,
}

/// The error C++ receives as `rust::Error`: `"DW_<CODE>: message"`.
#[derive(Debug)]
pub struct Failure(String);

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<dualwrite::Error> for Failure {
    fn from(e: dualwrite::Error) -> Failure {
        Failure(format!("{}: {e}", code_name(&e)))
    }
}

/// The name of the C ABI's `dw_result` for an error, from the core's one classification
/// (`dualwrite::Error::kind`), so C, C++ and Python callers branch on the same codes.
pub fn code_name(e: &dualwrite::Error) -> &'static str {
    e.kind().result_code_name()
}

/// Run a method body: an error becomes `Failure`, and so does a panic, which must never unwind
/// into cxx's generated code (it would abort the process).
pub fn guard<T>(body: impl FnOnce() -> dualwrite::Result<T>) -> Result<T, Failure> {
    // Unwind safety: as at the C boundary (src/ffi/panic.rs), every lock in the core recovers
    // from poisoning, so the bridge stays usable after a caught panic.
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(result) => result.map_err(Failure::from),
        Err(payload) => Err(Failure(format!(
            "DW_PANIC: panic inside dualwrite (a bug; please report it): {}",
            payload_text(&*payload)
        ))),
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

/// The configuration object of `dw_bridge_open`, read by the core as the C ABI reads it; "" (or
/// only blanks) stands for `{}`: everything from the environment.
fn open_config(text: &str) -> dualwrite::Result<(dualwrite::Config, dualwrite::BridgeOptions)> {
    dualwrite::open_config_from_json(if text.trim().is_empty() { "{}" } else { text })
}

/// JSON text of the argument `what`: an `InvalidArgument` naming it, never quoting its value (a
/// row may hold anything), when it does not parse.
fn parse_json(what: &str, text: &str) -> dualwrite::Result<Value> {
    serde_json::from_str(text).map_err(|e| dualwrite::Error::invalid_json(what, &e))
}

fn to_json(value: &impl serde::Serialize) -> dualwrite::Result<String> {
    serde_json::to_string(value)
        .map_err(|e| dualwrite::Error::Internal(format!("cannot serialize the result as JSON: {e}")))
}

/// At most 64 characters of caller input in a message.
fn shorten(s: &str) -> String {
    let mut out: String = s.chars().take(64).collect();
    if s.chars().count() > 64 {
        out.push('…');
    }
    out
}

impl Bridge {
    /// `dualwrite::Bridge::open` in C++.
    fn open(config_json: &str) -> Result<Box<Bridge>, Failure> {
        guard(|| {
            let (config, options) = open_config(config_json)?;
            let replicating = options.replicate && config.postgres.is_some();
            let inner = dualwrite::Bridge::open(config, options)?;
            Ok(Box::new(Bridge { inner: Some(inner), replicating, closed: AtomicBool::new(false) }))
        })
    }

    /// The core bridge, unless closed: use after close is refused, not undefined.
    fn live(&self) -> dualwrite::Result<&dualwrite::Bridge> {
        if self.closed.load(Ordering::Acquire) {
            return Err(dualwrite::Error::invalid(
                "bridge",
                "the bridge was closed by close(); destroy it (drop the rust::Box)",
            ));
        }
        self.inner.as_ref().ok_or_else(|| dualwrite::Error::Internal("the bridge is being dropped".into()))
    }

    fn insert(&self, table: &str, row_json: &str) -> Result<String, Failure> {
        guard(|| to_json(&self.live()?.insert(table, &parse_json("row_json", row_json)?)?))
    }

    fn get(&self, table: &str, key: &str) -> Result<String, Failure> {
        guard(|| match self.live()?.get(table, key)? {
            Some(row) => to_json(&row),
            None => Err(dualwrite::Error::not_found(shorten(table), shorten(key))),
        })
    }

    fn list(&self, table: &str, filter_json: &str) -> Result<String, Failure> {
        guard(|| {
            let filter = if filter_json.trim().is_empty() {
                Value::Null
            } else {
                parse_json("filter_json", filter_json)?
            };
            to_json(&self.live()?.list(table, &filter)?)
        })
    }

    fn patch(&self, table: &str, key: &str, changes_json: &str) -> Result<String, Failure> {
        guard(|| to_json(&self.live()?.patch(table, key, &parse_json("changes_json", changes_json)?)?))
    }

    fn remove(&self, table: &str, key: &str) -> Result<bool, Failure> {
        guard(|| self.live()?.delete(table, key))
    }

    fn call(&self, operation: &str, args_json: &str) -> Result<String, Failure> {
        guard(|| self.live()?.call(operation, if args_json.trim().is_empty() { "{}" } else { args_json }))
    }

    fn flush(&self, timeout_ms: u32) -> Result<(), Failure> {
        guard(|| self.live()?.flush(Duration::from_millis(timeout_ms.into())))
    }

    fn status(&self) -> Result<String, Failure> {
        guard(|| to_json(&self.live()?.status()?))
    }

    fn close(&self, timeout_ms: u32) -> Result<(), Failure> {
        guard(|| {
            let Some(inner) = self.inner.as_ref() else { return Ok(()) };
            if self.closed.swap(true, Ordering::AcqRel) {
                return Ok(());
            }
            let timeout = Duration::from_millis(timeout_ms.into());
            let started = Instant::now();
            let drained = if self.replicating { inner.flush(timeout) } else { Ok(()) };
            inner.shutdown(timeout.saturating_sub(started.elapsed()));
            drained.map_err(|e| {
                dualwrite::Error::Unavailable(format!(
                    "the bridge is closed, but not every change reached PostgreSQL; the rest stays in \
                     the outbox for the next process that replicates: {e}"
                ))
            })
        })
    }
}

impl Drop for Bridge {
    /// Runs when C++ destroys the `rust::Box`: a panic here must not unwind into cxx either.
    fn drop(&mut self) {
        let inner = self.inner.take();
        let _ = catch_unwind(AssertUnwindSafe(move || drop(inner)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_error_not_an_abort() {
        let e = guard::<()>(|| panic!("boom")).unwrap_err();
        assert!(e.0.starts_with("DW_PANIC: ") && e.0.ends_with("boom"), "{e}");
        let e = guard::<()>(|| std::panic::panic_any(7_u8)).unwrap_err();
        assert!(e.0.ends_with("no message"), "{e}");
    }

    #[test]
    fn errors_carry_the_c_abi_code_name() {
        use dualwrite::Error as E;
        let cases = [
            (E::invalid("x", "y"), "DW_INVALID_ARGUMENT"),
            (E::not_found("users", "k"), "DW_NOT_FOUND"),
            (E::Conflict("c".into()), "DW_CONFLICT"),
            (E::Busy("b".into()), "DW_BUSY"),
            (E::Unavailable("u".into()), "DW_UNAVAILABLE"),
            (E::Io(std::io::Error::other("disk")), "DW_UNAVAILABLE"),
            (E::Config("c".into()), "DW_CONFIG"),
            (E::Migration("m".into()), "DW_CONFIG"),
            (E::Crypto("k".into()), "DW_CONFIG"),
            (E::ReadOnly("r".into()), "DW_READ_ONLY"),
            (E::Internal("i".into()), "DW_INTERNAL"),
        ];
        for (e, want) in cases {
            let text = Failure::from(e).0;
            assert!(text.starts_with(&format!("{want}: ")), "{text}");
        }
    }

    #[test]
    fn bad_configurations_are_refused_without_quoting_values() {
        let code = |s: &str| open_config(s).err().map(|e| Failure::from(e).0);
        let e = code(r#"{"sqlite_paht": "x"}"#).unwrap();
        assert!(e.starts_with("DW_INVALID_ARGUMENT") && e.contains("sqlite_paht"), "{e}");
        let e = code(r#"{"replicate": "hunter2"}"#).unwrap();
        assert!(e.starts_with("DW_INVALID_ARGUMENT") && !e.contains("hunter2"), "{e}");
        let e = code(r#"{"key_file": "/k", "key_env": "K"}"#).unwrap();
        assert!(e.starts_with("DW_INVALID_ARGUMENT"), "{e}");
        let e = code(r#"{"postgres_url": "postgres://h:notaport/db"}"#).unwrap();
        assert!(e.starts_with("DW_CONFIG"), "{e}");
        let (c, o) =
            open_config(r#"{"sqlite_path": "/tmp/x.sqlite3", "postgres_url": null, "replicate": false}"#)
                .unwrap();
        assert!(c.postgres.is_none() && !o.replicate && o.migrate_sqlite);
    }

    #[test]
    fn a_closed_bridge_refuses_calls() {
        let dir = tempfile::tempdir().unwrap();
        let config = serde_json::json!({
            "sqlite_path": dir.path().join("solo.sqlite3"),
            "create": true,
            "postgres_url": null,
            "key_env": "DUALWRITE_CXX_TEST_KEY_THAT_IS_NOT_SET",
        });
        let b = Bridge::open(&config.to_string()).unwrap();
        let row = b.insert("users", r#"{"email": "a@example.com", "display_name": "A"}"#).unwrap();
        let id = serde_json::from_str::<Value>(&row).unwrap()["id"].as_str().unwrap().to_string();
        assert!(b.get("users", &id).unwrap().contains("a@example.com"));
        assert!(b
            .get("users", "00000000-0000-4000-8000-000000000000")
            .unwrap_err()
            .0
            .starts_with("DW_NOT_FOUND"));
        assert!(b.list("users", "").unwrap().contains(&id));
        assert!(b.remove("users", &id).unwrap());
        assert!(!b.remove("users", &id).unwrap());
        b.close(1000).unwrap();
        b.close(1000).unwrap();
        let e = b.list("users", "").unwrap_err().0;
        assert!(e.starts_with("DW_INVALID_ARGUMENT") && e.contains("closed"), "{e}");
    }
}
