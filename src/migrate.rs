//! The migration runner for both stores. The SQL is compiled in (`include_str!`) and checksummed
//! (SHA-256). A ledger table keeps version, name, checksum, success, duration and time; each
//! script commits together with its ledger row. A changed script, a dirty (unsuccessful) row or
//! an applied version this build does not know stops the run with a clear error.
//!
//! Written here rather than taken from refinery: refinery's ledger has no success or duration
//! column and lives in the public schema, which must stay exactly the target schema.

use crate::error::{Error, Result};
use crate::ledger::{self, sqlite_ledger, LedgerRow, Migration, SQLITE_LEDGER};
use std::time::{Duration, Instant};

/// Which database a migration set belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Store {
    Sqlite,
    Postgres,
}

impl std::fmt::Display for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Store::Sqlite => "sqlite",
            Store::Postgres => "postgres",
        })
    }
}
impl Migration {
    /// Is `ledger` (the checksum recorded when the script was applied) this script, or an
    /// earlier text of it listed in [`EARLIER_CHECKSUMS`]?
    fn accepts(&self, store: Store, ledger: &str) -> bool {
        ledger == self.checksum()
            || EARLIER_CHECKSUMS.iter().any(|(s, v, sum)| *s == store && *v == self.version && *sum == ledger)
    }
}

/// Scripts edited after release in a way that changes nothing for a database they were already
/// applied to, with the checksum of their earlier text, which the ledger of such a database
/// holds. Only ever for edits that are no-ops there (never edit an applied migration otherwise:
/// add a new one).
const EARLIER_CHECKSUMS: &[(Store, i64, &str)] = &[
    // postgres 0003 gained `CREATE SCHEMA IF NOT EXISTS dualwrite` (the runner had always made
    // the schema before it), so psql, Flyway or sqitch can apply the files as they are.
    (Store::Postgres, 3, "16590c3dcae5f2df7ef128a414ea3ccf249a42f39861972999bd4b21bb16b2a8"),
];

pub static POSTGRES_MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "extensions",
        sql: include_str!("../migrations/postgres/0001_extensions.sql"),
    },
    Migration {
        version: 2,
        name: "target_schema",
        sql: include_str!("../migrations/postgres/0002_target_schema.sql"),
    },
    Migration {
        version: 3,
        name: "bridge_schema",
        sql: include_str!("../migrations/postgres/0003_bridge_schema.sql"),
    },
    Migration {
        version: 4,
        name: "backfill_verify",
        sql: include_str!("../migrations/postgres/0004_backfill_verify.sql"),
    },
    Migration {
        version: 5,
        name: "postgres_primary",
        sql: include_str!("../migrations/postgres/0005_postgres_primary.sql"),
    },
    Migration {
        version: 6,
        name: "backfill_rejects",
        sql: include_str!("../migrations/postgres/0006_backfill_rejects.sql"),
    },
    Migration {
        version: 7,
        name: "change_capture",
        sql: include_str!("../migrations/postgres/0007_change_capture.sql"),
    },
    Migration {
        version: 8,
        name: "write_fence_check",
        sql: include_str!("../migrations/postgres/0008_write_fence_check.sql"),
    },
];

pub static SQLITE_MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "entities", sql: include_str!("../migrations/sqlite/0001_entities.sql") },
    Migration { version: 2, name: "bridge", sql: include_str!("../migrations/sqlite/0002_bridge.sql") },
    Migration {
        version: 3,
        name: "replication_state",
        sql: include_str!("../migrations/sqlite/0003_replication_state.sql"),
    },
    Migration { version: 4, name: "phases", sql: include_str!("../migrations/sqlite/0004_phases.sql") },
    Migration {
        version: 5,
        name: "postgres_primary",
        sql: include_str!("../migrations/sqlite/0005_postgres_primary.sql"),
    },
    Migration {
        version: 6,
        name: "change_capture",
        sql: include_str!("../migrations/sqlite/0006_change_capture.sql"),
    },
    Migration {
        version: 7,
        name: "pending_by_row",
        sql: include_str!("../migrations/sqlite/0007_pending_by_row.sql"),
    },
];

pub fn migrations(store: Store) -> &'static [Migration] {
    match store {
        Store::Sqlite => SQLITE_MIGRATIONS,
        Store::Postgres => POSTGRES_MIGRATIONS,
    }
}

/// The newest version this build ships for a store.
pub fn latest_version(store: Store) -> i64 {
    migrations(store).last().map_or(0, |m| m.version)
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct MigrationReport {
    pub store: Store,
    /// Versions applied by this run, with their names and durations.
    pub applied: Vec<(i64, &'static str, Duration)>,
    /// The version the database is at after the run.
    pub version: i64,
    /// What adopting the monolith's existing tables did (SQLite only; `None` when nothing needed
    /// adopting). See `legacy::adopt`.
    pub adoption: Option<crate::legacy::AdoptionReport>,
}

/// Compare the ledger with the embedded scripts; return the versions still to apply.
fn plan(store: Store, ledger: &[LedgerRow]) -> Result<Vec<&'static Migration>> {
    let known = migrations(store);
    for row in ledger {
        let Some(m) = known.iter().find(|m| m.version == row.version) else {
            return Err(Error::Migration(format!(
                "{store}: version {} is applied in the database but unknown to this build (it ships 1..={}); \
                 use the dualwrite build that applied it",
                row.version,
                latest_version(store)
            )));
        };
        if !row.success {
            return Err(Error::Migration(format!(
                "{store}: version {} ({}) is marked dirty (a failed run left it half-applied); \
                 repair the database by hand, then delete that ledger row",
                m.version, m.name
            )));
        }
        if !m.accepts(store, &row.checksum) {
            return Err(Error::Migration(format!(
                "{store}: version {} ({}) was changed after it was applied (checksum {} in the ledger, {} in this build); \
                 never edit an applied migration, add a new one",
                m.version,
                m.name,
                &row.checksum[..row.checksum.len().min(12)],
                &m.checksum()[..12]
            )));
        }
    }
    Ok(known.iter().filter(|m| !ledger.iter().any(|r| r.version == m.version)).collect())
}

fn current(ledger: &[LedgerRow]) -> i64 {
    ledger.iter().map(|r| r.version).max().unwrap_or(0)
}

/// Bring a SQLite database to the newest schema. Safe to run from several processes at once:
/// each script runs in a `BEGIN IMMEDIATE` transaction that re-reads the ledger first. A file that
/// already holds the monolith's tables is adopted with the default options (see
/// [`migrate_sqlite_with`]).
pub fn migrate_sqlite(conn: &mut rusqlite::Connection) -> Result<MigrationReport> {
    migrate_sqlite_with(conn, &crate::legacy::AdoptOptions::default())
}

/// [`migrate_sqlite`], adopting existing entity tables with `adopt` (conversion overrides, what
/// to do with unconvertible rows and extra columns) in place of migration 1.
pub fn migrate_sqlite_with(
    conn: &mut rusqlite::Connection,
    adopt: &crate::legacy::AdoptOptions,
) -> Result<MigrationReport> {
    refuse_unrelated_file(conn)?;
    let adoption = crate::legacy::adopt::adopt_if_needed(conn, adopt, &SQLITE_MIGRATIONS[0])?;
    conn.execute_batch(SQLITE_LEDGER)?;
    let mut applied = Vec::new();
    if let Some(a) = &adoption {
        applied.push((1, SQLITE_MIGRATIONS[0].name, Duration::from_millis(a.duration_ms)));
    }
    loop {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let ledger = sqlite_ledger(&tx)?;
        let todo = plan(Store::Sqlite, &ledger)?;
        let Some(m) = todo.first() else {
            return Ok(MigrationReport {
                store: Store::Sqlite,
                applied,
                version: current(&ledger),
                adoption,
            });
        };
        let started = Instant::now();
        tx.execute_batch(m.sql).map_err(|e| {
            Error::Migration(format!("sqlite: version {} ({}) failed: {e}", m.version, m.name))
        })?;
        let took = started.elapsed();
        ledger::record_sqlite(&tx, m, took.as_millis() as i64)?;
        tx.commit()?;
        tracing::info!(
            store = "sqlite",
            version = m.version,
            name = m.name,
            ms = took.as_millis() as u64,
            "migration applied"
        );
        applied.push((m.version, m.name, took));
    }
}

/// A file with tables of its own but no ledger and none of the 13 entity tables belongs to
/// some other application (a mistyped path, the wrong file): migrating would add the bridge's
/// tables to it without a word. An empty file, a file migrated before, or the monolith's own
/// file (adopted) is fine.
fn refuse_unrelated_file(conn: &rusqlite::Connection) -> Result<()> {
    let mut stmt = conn.prepare(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name",
    )?;
    let tables = stmt.query_map([], |r| r.get::<_, String>(0))?.collect::<rusqlite::Result<Vec<_>>>()?;
    let ours = |t: &String| {
        t == "_dualwrite_migrations" || crate::schema::TABLES.iter().any(|e| e.name.eq_ignore_ascii_case(t))
    };
    if tables.is_empty() || tables.iter().any(ours) {
        return Ok(());
    }
    let shown: Vec<&str> = tables.iter().take(10).map(String::as_str).collect();
    let more = if tables.len() > shown.len() {
        format!(" and {} more", tables.len() - shown.len())
    } else {
        String::new()
    };
    Err(Error::Migration(format!(
        "sqlite: this file holds {} table(s) of another application ({}{more}) and none of the bridge's \
         or the monolith's 13 tables: refusing to add the bridge's tables to it; check the path",
        tables.len(),
        shown.join(", ")
    )))
}

/// The version a SQLite database is at, after checking its ledger against this build.
pub fn sqlite_version(conn: &rusqlite::Connection) -> Result<i64> {
    if !ledger::sqlite_has_ledger(conn)? {
        return Ok(0);
    }
    let ledger = sqlite_ledger(conn)?;
    plan(Store::Sqlite, &ledger)?;
    Ok(current(&ledger))
}

const PG_LEDGER: &str = "CREATE SCHEMA IF NOT EXISTS dualwrite;
CREATE TABLE IF NOT EXISTS dualwrite.schema_migrations (
    version bigint PRIMARY KEY,
    name text NOT NULL,
    checksum text NOT NULL,
    success boolean NOT NULL,
    duration_ms bigint NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now())";

/// Any fixed number: the advisory lock that serialises concurrent `migrate` runs.
const PG_MIGRATION_LOCK: i64 = 0x6477_6d69_6772_6174; // "dwmigrat"

fn pg_ledger(client: &mut impl postgres::GenericClient) -> Result<Vec<LedgerRow>> {
    Ok(client
        .query("SELECT version, checksum, success FROM dualwrite.schema_migrations ORDER BY version", &[])?
        .iter()
        .map(|r| LedgerRow { version: r.get(0), checksum: r.get(1), success: r.get(2) })
        .collect())
}

/// Bring a PostgreSQL database to the newest schema, holding an advisory lock so two runs never
/// interleave. Each script and its ledger row commit in one transaction.
pub fn migrate_postgres(client: &mut postgres::Client) -> Result<MigrationReport> {
    client.execute("SELECT pg_advisory_lock($1)", &[&PG_MIGRATION_LOCK])?;
    let result = migrate_postgres_locked(client);
    let unlock = client.execute("SELECT pg_advisory_unlock($1)", &[&PG_MIGRATION_LOCK]);
    let report = result?;
    unlock?;
    Ok(report)
}

fn migrate_postgres_locked(client: &mut postgres::Client) -> Result<MigrationReport> {
    client.batch_execute(PG_LEDGER)?;
    let ledger = pg_ledger(client)?;
    let todo = plan(Store::Postgres, &ledger)?;
    let mut applied = Vec::new();
    for m in todo {
        let mut tx = client.transaction()?;
        let started = Instant::now();
        tx.batch_execute(m.sql).map_err(|e| {
            Error::Migration(format!(
                "postgres: version {} ({}) failed: {}",
                m.version,
                m.name,
                Error::Postgres(e)
            ))
        })?;
        let took = started.elapsed();
        tx.execute(
            "INSERT INTO dualwrite.schema_migrations (version, name, checksum, success, duration_ms) VALUES ($1, $2, $3, true, $4)",
            &[&m.version, &m.name, &m.checksum(), &(took.as_millis() as i64)],
        )?;
        tx.commit()?;
        tracing::info!(
            store = "postgres",
            version = m.version,
            name = m.name,
            ms = took.as_millis() as u64,
            "migration applied"
        );
        applied.push((m.version, m.name, took));
    }
    let version = applied.last().map(|a| a.0).unwrap_or_else(|| current(&ledger));
    Ok(MigrationReport { store: Store::Postgres, applied, version, adoption: None })
}

/// The backfill and verify tables come with PostgreSQL migration 4: say so instead of failing on
/// a missing relation.
pub(crate) fn require_bookkeeping(client: &mut postgres::Client) -> Result<()> {
    let v = postgres_version(client)?;
    if v < 4 {
        return Err(Error::Migration(format!(
            "the PostgreSQL schema is at version {v}; backfill and verify need version 4 or later: run `dualwrite migrate`"
        )));
    }
    Ok(())
}

/// The version a PostgreSQL database is at, after checking its ledger against this build.
pub fn postgres_version(client: &mut postgres::Client) -> Result<i64> {
    let exists: bool =
        client.query_one("SELECT to_regclass('dualwrite.schema_migrations') IS NOT NULL", &[])?.get(0);
    if !exists {
        return Ok(0);
    }
    let ledger = pg_ledger(client)?;
    plan(Store::Postgres, &ledger)?;
    Ok(current(&ledger))
}
