//! Migration-phase flags: the write mode and the read source (global, with per-table read-source
//! overrides), stored in the SQLite file so every process of the monolith shares them.
//!
//! Each process keeps the current flags in memory and a watcher thread re-reads them when the
//! file changed (`PRAGMA data_version`, checked every [`WATCH_INTERVAL`]), so a change made by
//! any process (or the CLI) is seen everywhere within a second, and a call pays one atomic load.
//! `DUALWRITE_FORCE_SQLITE=1` in a process's environment forces SQLite-only there (the emergency
//! brake) whatever the file says.
//!
//! The write mode is global only: one transaction may touch several tables and the replication
//! stream must keep their commit order and foreign keys, so all tables move together. Reads can
//! move table by table.

use crate::error::{Error, Result};
use crate::schema;
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// How often each process checks whether the flags changed.
pub const WATCH_INTERVAL: Duration = Duration::from_millis(200);
/// The emergency brake.
pub const FORCE_SQLITE_ENV: &str = "DUALWRITE_FORCE_SQLITE";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteMode {
    /// SQLite only; changes are still captured in the outbox but not replicated.
    Sqlite,
    /// SQLite, then PostgreSQL in the background.
    Dual,
    /// PostgreSQL synchronously first; SQLite follows in the background from PostgreSQL's change
    /// capture (every writer's changes, not only the bridge's).
    PostgresPrimary,
    /// PostgreSQL only; SQLite is frozen and the capture position kept, so a rollback catches up.
    Postgres,
    /// The monolith is being switched off (the design notes' step 7): every write through the
    /// library is refused (`Error::ReadOnly`), reads come from PostgreSQL, and SQLite keeps
    /// following the services' changes so a rollback stays lossless.
    ReadOnly,
}

impl WriteMode {
    /// Does PostgreSQL take the writes first (and serve every read)?
    pub fn postgres_first(self) -> bool {
        matches!(self, WriteMode::PostgresPrimary | WriteMode::Postgres | WriteMode::ReadOnly)
    }

    /// Does SQLite follow PostgreSQL's changes in this mode (`postgres` freezes it)?
    pub fn sqlite_follows(self) -> bool {
        matches!(self, WriteMode::PostgresPrimary | WriteMode::ReadOnly)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadSource {
    Sqlite,
    Postgres,
    /// Serve SQLite; compare with PostgreSQL in the background and count mismatches.
    Shadow,
}

macro_rules! text_enum {
    ($t:ty, $field:literal, { $($v:ident => $s:literal),+ $(,)? }) => {
        impl $t {
            pub fn as_str(self) -> &'static str {
                match self { $(<$t>::$v => $s),+ }
            }
        }
        impl std::str::FromStr for $t {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                match s {
                    $($s => Ok(<$t>::$v),)+
                    other => Err(Error::invalid($field, format!(
                        "{:?} is not one of {}", schema::truncate_for_message(other), [$($s),+].join(", ")))),
                }
            }
        }
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
text_enum!(WriteMode, "write_mode", { Sqlite => "sqlite", Dual => "dual", PostgresPrimary => "postgres_primary", Postgres => "postgres", ReadOnly => "read_only" });
text_enum!(ReadSource, "read_source", { Sqlite => "sqlite", Postgres => "postgres", Shadow => "shadow" });

/// The flags as stored, plus whether this process's emergency brake overrides them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Flags {
    pub write_mode: WriteMode,
    pub read_source: ReadSource,
    /// Per-table read-source overrides.
    pub read_source_overrides: BTreeMap<String, ReadSource>,
    /// `DUALWRITE_FORCE_SQLITE` is set in this process: everything is SQLite-only here.
    pub forced_sqlite: bool,
}

impl Flags {
    /// The write mode in effect in this process (the brake cannot make SQLite the primary
    /// again behind PostgreSQL's back: see the module comment).
    pub fn effective_write_mode(&self) -> WriteMode {
        if self.forced_sqlite && !self.write_mode.postgres_first() {
            WriteMode::Sqlite
        } else {
            self.write_mode
        }
    }

    /// The read source in effect for `table` in this process. While PostgreSQL is the primary
    /// every read comes from it, whatever the read flags say.
    pub fn effective_read_source(&self, table: &str) -> ReadSource {
        if self.write_mode.postgres_first() {
            return ReadSource::Postgres;
        }
        if self.forced_sqlite {
            return ReadSource::Sqlite;
        }
        self.read_source_overrides.get(table).copied().unwrap_or(self.read_source)
    }

    /// Read the stored flags.
    pub fn load(conn: &Connection) -> Result<Flags> {
        let mut stmt = conn.prepare_cached("SELECT name, value FROM _dualwrite_flags")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut flags = Flags {
            write_mode: WriteMode::Dual,
            read_source: ReadSource::Sqlite,
            read_source_overrides: BTreeMap::new(),
            forced_sqlite: forced_by_env(),
        };
        for row in rows {
            let (name, value) = row?;
            match name.as_str() {
                "write_mode" => flags.write_mode = value.parse()?,
                "read_source" => flags.read_source = value.parse()?,
                n => {
                    if let Some(table) = n.strip_prefix("read_source:") {
                        flags.read_source_overrides.insert(table.to_string(), value.parse()?);
                    }
                }
            }
        }
        Ok(flags)
    }
}

/// The write mode as stored, read inside the caller's write transaction: the authoritative value
/// for that write, so no write is made in a mode the file has already left.
pub(crate) fn stored_write_mode(conn: &Connection) -> Result<WriteMode> {
    let mut stmt = conn.prepare_cached("SELECT value FROM _dualwrite_flags WHERE name = 'write_mode'")?;
    let value: Option<String> = stmt.query_row([], |r| r.get(0)).optional()?;
    value.map_or(Ok(WriteMode::Dual), |v| v.parse())
}

/// The flag row that says SQLite-only mode reached its capture limit (the value: since when).
const CAPTURE_OVERFLOW: &str = "capture_overflow";

/// Since when changes are no longer captured (SQLite-only mode reached its capture limit), if so.
pub(crate) fn capture_overflow(conn: &Connection) -> Result<Option<String>> {
    let mut stmt = conn.prepare_cached("SELECT value FROM _dualwrite_flags WHERE name = ?1")?;
    Ok(stmt.query_row([CAPTURE_OVERFLOW], |r| r.get(0)).optional()?)
}

pub(crate) fn set_capture_overflow(conn: &Connection) -> Result<()> {
    conn.execute(
        "INSERT INTO _dualwrite_flags (name, value, updated_at, updated_by, reason) VALUES (?1, ?2, ?2, 'dualwrite', ?3)
         ON CONFLICT (name) DO NOTHING",
        params![CAPTURE_OVERFLOW, schema::now_timestamp(), "the outbox reached its capture limit in write_mode sqlite"],
    )?;
    Ok(())
}

pub(crate) fn clear_capture_overflow(conn: &Connection) -> Result<()> {
    conn.execute("DELETE FROM _dualwrite_flags WHERE name = ?1", [CAPTURE_OVERFLOW])?;
    Ok(())
}

fn forced_by_env() -> bool {
    std::env::var(FORCE_SQLITE_ENV).is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// A flag to set, as the CLI and the API name it.
#[derive(Clone, Debug, PartialEq)]
pub enum FlagChange {
    WriteMode(WriteMode),
    ReadSource(ReadSource),
    /// A per-table read source; `None` removes the override.
    TableReadSource(&'static str, Option<ReadSource>),
}

impl FlagChange {
    /// Parse `name=value`: `write_mode=dual`, `read_source=shadow`, `read_source:jobs=postgres`,
    /// `read_source:jobs=default` (remove the override).
    pub fn parse(name: &str, value: &str) -> Result<FlagChange> {
        match name {
            "write_mode" => Ok(FlagChange::WriteMode(value.parse()?)),
            "read_source" => Ok(FlagChange::ReadSource(value.parse()?)),
            n => match n.strip_prefix("read_source:") {
                Some(table) => {
                    let t = schema::require_table(table)?;
                    let v = if value == "default" { None } else { Some(value.parse()?) };
                    Ok(FlagChange::TableReadSource(t.name, v))
                }
                None => Err(Error::invalid(
                    "flag",
                    format!(
                        "unknown flag {:?}; flags are write_mode, read_source, read_source:<table>",
                        schema::truncate_for_message(n)
                    ),
                )),
            },
        }
    }

    pub(crate) fn stored_name(&self) -> String {
        match self {
            FlagChange::WriteMode(_) => "write_mode".into(),
            FlagChange::ReadSource(_) => "read_source".into(),
            FlagChange::TableReadSource(t, _) => format!("read_source:{t}"),
        }
    }

    pub(crate) fn stored_value(&self) -> Option<&'static str> {
        match self {
            FlagChange::WriteMode(m) => Some(m.as_str()),
            FlagChange::ReadSource(r) => Some(r.as_str()),
            FlagChange::TableReadSource(_, r) => r.map(|r| r.as_str()),
        }
    }

    /// Does this change move reads or writes away from SQLite (and so need the guard rails)?
    pub fn leaves_sqlite(&self) -> bool {
        match self {
            FlagChange::WriteMode(m) => matches!(m, WriteMode::PostgresPrimary | WriteMode::Postgres),
            FlagChange::ReadSource(r) | FlagChange::TableReadSource(_, Some(r)) => *r == ReadSource::Postgres,
            FlagChange::TableReadSource(_, None) => false,
        }
    }
}

/// Write a flag row (inside the caller's transaction, which also records the audit event).
pub(crate) fn store(conn: &Connection, change: &FlagChange, who: &str, why: &str) -> Result<()> {
    let name = change.stored_name();
    match change.stored_value() {
        Some(value) => {
            conn.execute(
                "INSERT INTO _dualwrite_flags (name, value, updated_at, updated_by, reason) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at,
                 updated_by = excluded.updated_by, reason = excluded.reason",
                params![name, value, schema::now_timestamp(), who, why],
            )?;
        }
        None => {
            conn.execute("DELETE FROM _dualwrite_flags WHERE name = ?1", [name])?;
        }
    }
    Ok(())
}

/// This process's view of the flags, refreshed by a watcher thread.
pub(crate) struct FlagCache {
    current: RwLock<Arc<Flags>>,
}

impl FlagCache {
    /// Load the flags now and start watching the file for changes.
    pub(crate) fn start(path: PathBuf) -> Result<Arc<FlagCache>> {
        let conn = crate::store::sqlite::open(&path)?;
        let cache = Arc::new(FlagCache { current: RwLock::new(Arc::new(Flags::load(&conn)?)) });
        let weak = Arc::downgrade(&cache);
        std::thread::Builder::new()
            .name("dualwrite-flags".into())
            .spawn(move || watch(conn, weak))
            .map_err(Error::Io)?;
        Ok(cache)
    }

    pub(crate) fn get(&self) -> Arc<Flags> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Take a freshly read value at once (after this process changed the flags itself).
    pub(crate) fn set(&self, flags: Flags) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(flags);
    }
}

/// Poll `PRAGMA data_version` (changes whenever another connection commits to the file) and
/// reload the flags when it moved. Ends when the bridge is gone.
fn watch(conn: Connection, cache: std::sync::Weak<FlagCache>) {
    let version = |c: &Connection| c.query_row("PRAGMA data_version", [], |r| r.get::<_, i64>(0)).ok();
    let mut seen = version(&conn);
    loop {
        std::thread::sleep(WATCH_INTERVAL);
        let Some(cache) = cache.upgrade() else { return };
        let now = version(&conn);
        if now == seen {
            continue;
        }
        seen = now;
        match Flags::load(&conn) {
            Ok(f) => {
                let old = cache.get();
                if *old != f {
                    tracing::info!(write_mode = %f.write_mode, read_source = %f.read_source, "flags changed");
                    cache.set(f);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot re-read the flags; keeping the last known ones"),
        }
    }
}
