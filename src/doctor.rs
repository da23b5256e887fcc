//! `doctor`: the smoke test a CI/CD pipeline runs before a deploy. It connects to both stores,
//! checks that the SQLite file is intact and writable, the extensions, the schema versions, the
//! PostgreSQL role's right to create temporary tables (the backfill's staging), what the change
//! capture needs, and the secret key, and reports each check. It changes nothing.

use crate::config::Config;
use crate::migrate::{self, Store};
use crate::SecretKey;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    Ok,
    Fail,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: CheckStatus,
    pub detail: String,
}

impl Check {
    fn new(name: &'static str, result: std::result::Result<String, String>) -> Self {
        match result {
            Ok(detail) => Check { name, status: CheckStatus::Ok, detail },
            Err(detail) => Check { name, status: CheckStatus::Fail, detail },
        }
    }
}

/// Run every check; never stops at the first failure, so the report shows everything at once.
pub fn run(config: &Config) -> Vec<Check> {
    let mut checks = Vec::new();

    sqlite_checks(config, &mut checks);

    match config.require_postgres().and_then(|pg| pg.connect()) {
        Ok(mut client) => {
            checks.push(Check::new(
                "postgres connection",
                Ok(config.postgres.as_ref().map(|p| p.description.clone()).unwrap_or_default()),
            ));
            for ext in ["pgcrypto", "vector"] {
                let found = client
                    .query_opt("SELECT extversion FROM pg_extension WHERE extname = $1", &[&ext])
                    .map_err(|e| crate::Error::Postgres(e).to_string());
                let name = if ext == "vector" { "extension vector" } else { "extension pgcrypto" };
                checks.push(Check::new(
                    name,
                    match found {
                        Ok(Some(row)) => Ok(format!("version {}", row.get::<_, String>(0))),
                        Ok(None) => {
                            Err(format!("{ext} is not installed in this database: run `dualwrite migrate`"))
                        }
                        Err(e) => Err(e),
                    },
                ));
            }
            checks.push(Check::new(
                "postgres schema",
                version_check(Store::Postgres, migrate::postgres_version(&mut client)),
            ));
            checks.extend(capture_checks(&mut client));
            checks.push(Check::new("postgres temporary tables", temporary_check(&mut client)));
        }
        Err(e) => checks.push(Check::new("postgres connection", Err(e.to_string()))),
    }

    checks.push(Check::new(
        "secret key",
        SecretKey::load(&config.key_source)
            .map(|k| format!("{:?}, fingerprint {}", config.key_source, k.fingerprint()))
            .map_err(|e| e.to_string()),
    ));
    checks
}

/// What the change capture needs (docs/ARCHITECTURE.md, "Change capture"): logical decoding, the
/// slot (made by the replicator or the first switch to a PostgreSQL-first mode), the publication,
/// and the rights of the role the bridge connects as.
fn capture_checks(client: &mut postgres::Client) -> Vec<Check> {
    let pg = |e: postgres::Error| crate::Error::Postgres(e).to_string();
    let mut checks = Vec::new();
    let level = crate::capture::slot::wal_level(client).map_err(|e| e.to_string());
    checks.push(Check::new(
        "wal_level",
        match level {
            Ok(l) if l == "logical" => Ok(l),
            Ok(l) => Err(format!(
                "{l}: change capture needs logical (set wal_level = logical and restart PostgreSQL; on a managed \
                 service its own switch, e.g. rds.logical_replication = 1). Without it foreign writes are not seen \
                 and the PostgreSQL-first write modes are refused"
            )),
            Err(e) => Err(e),
        },
    ));
    checks.push(Check::new(
        "capture slot",
        match crate::capture::slot::state(client) {
            Ok(Some(s)) if s.wal_status == "lost" => Err(crate::capture::slot::lost_error().to_string()),
            Ok(Some(s)) => Ok(format!(
                "{} ({}), {} KiB of WAL retained, {} KiB not yet taken",
                s.slot_name,
                s.wal_status,
                s.retained_wal_bytes / 1024,
                s.pending_wal_bytes / 1024
            )),
            Ok(None) => Ok("not made yet (the replicator makes it once wal_level is logical)".into()),
            Err(e) => Err(e.to_string()),
        },
    ));
    let publication = client
        .query_one(
            "SELECT count(*) FROM pg_publication WHERE pubname = $1",
            &[&crate::capture::slot::PUBLICATION],
        )
        .map(|r| r.get::<_, i64>(0))
        .map_err(pg);
    checks.push(Check::new(
        "capture publication",
        match publication {
            Ok(1) => Ok(crate::capture::slot::PUBLICATION.into()),
            Ok(_) => Err("missing: run `dualwrite migrate`".into()),
            Err(e) => Err(e),
        },
    ));
    let rights = client
        .query_one(
            "SELECT r.rolsuper OR r.rolreplication,
                    has_function_privilege('pg_replication_origin_session_setup(text)', 'EXECUTE'),
                    has_function_privilege('pg_replication_origin_create(text)', 'EXECUTE')
             FROM pg_roles r WHERE r.rolname = current_user",
            &[],
        )
        .map(|r| (r.get::<_, bool>(0), r.get::<_, bool>(1), r.get::<_, bool>(2)))
        .map_err(pg);
    checks.push(Check::new(
        "capture privileges",
        match rights {
            Ok((true, true, true)) => Ok("REPLICATION and the replication origin functions".into()),
            Ok((replication, setup, create)) => Err(format!(
                "the role needs{}{}{} (migrations/postgres/roles.sql.example)",
                if replication { "" } else { " the REPLICATION attribute (slot functions)" },
                if setup { "" } else { " EXECUTE on pg_replication_origin_session_setup(text)" },
                if create { "" } else { " EXECUTE on pg_replication_origin_create(text)" }
            )),
            Err(e) => Err(e),
        },
    ));
    checks
}

/// The role the bridge connects as may create temporary tables: the backfill stages each chunk
/// in one (`CREATE TEMP TABLE … ON COMMIT DELETE ROWS`), so without `TEMPORARY` on the database
/// it fails, while everything else works. migrations/postgres/roles.sql.example grants it.
fn temporary_check(client: &mut postgres::Client) -> std::result::Result<String, String> {
    let row = client
        .query_one(
            "SELECT current_user::text, current_database()::text,
                    has_database_privilege(current_database(), 'TEMPORARY')",
            &[],
        )
        .map_err(|e| crate::Error::Postgres(e).to_string())?;
    let (role, database, allowed): (String, String, bool) = (row.get(0), row.get(1), row.get(2));
    if allowed {
        Ok(format!("role {role} may create them (the backfill stages its chunks in them)"))
    } else {
        Err(format!(
            "role {role} lacks TEMPORARY on database {database}, which the backfill needs for its staging tables: \
             GRANT TEMPORARY ON DATABASE {database} TO {role} (see migrations/postgres/roles.sql.example)"
        ))
    }
}

/// The SQLite file: it exists (doctor never creates it), opens, is intact (`PRAGMA
/// quick_check`: `verify` cannot read a file with a corrupt page), is writable (a probe that
/// takes the write lock and rolls back), and its schema version.
fn sqlite_checks(config: &Config, checks: &mut Vec<Check>) {
    use rusqlite::{Connection, OpenFlags};
    let path = &config.sqlite_path;
    if !path.exists() {
        checks.push(Check::new(
            "sqlite connection",
            Err(format!(
                "no SQLite file at {}: check the path, or create one with `dualwrite migrate --create`",
                path.display()
            )),
        ));
        return;
    }
    let conn = match Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    ) {
        Ok(conn) => conn,
        Err(e) => {
            checks.push(Check::new("sqlite connection", Err(format!("cannot open {}: {e}", path.display()))));
            return;
        }
    };
    checks.push(Check::new("sqlite connection", Ok(path.display().to_string())));
    let _ = conn.busy_timeout(crate::store::sqlite::BUSY_TIMEOUT);
    checks.push(Check::new(
        "sqlite integrity",
        quick_check(&conn).map_err(|e| format!("{}: {e}", path.display())),
    ));
    checks.push(Check::new("sqlite writable", write_probe(path)));
    checks.push(Check::new("sqlite schema", version_check(Store::Sqlite, migrate::sqlite_version(&conn))));
}

/// `PRAGMA quick_check` (O(N), skips the index-content cross-check of integrity_check): "ok", or
/// the first problems it lists.
fn quick_check(conn: &rusqlite::Connection) -> std::result::Result<String, String> {
    let mut stmt = conn.prepare("PRAGMA quick_check(5)").map_err(|e| e.to_string())?;
    let lines = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(|e| format!("the file cannot be read: {e}"))?;
    if lines.len() == 1 && lines[0] == "ok" {
        Ok("quick_check ok".into())
    } else {
        Err(format!("PRAGMA quick_check found damage: {}", lines.join("; ")))
    }
}

/// Can this process write the file? A read-only file (permissions, a read-only mount, a
/// directory where the -wal/-shm files cannot be made) opens fine and fails only at the first
/// write, so take the write lock and write, then roll back: nothing changes.
fn write_probe(path: &std::path::Path) -> std::result::Result<String, String> {
    use rusqlite::{Connection, OpenFlags};
    let fail = |e: rusqlite::Error| {
        format!("{} cannot be written by this process ({e}): check its owner, mode and mount, and its directory's", path.display())
    };
    let mut conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(fail)?;
    conn.busy_timeout(crate::store::sqlite::BUSY_TIMEOUT).map_err(fail)?;
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(fail)?;
    // A table made and dropped inside the rolled-back transaction: a real page write.
    tx.execute_batch("CREATE TABLE _dualwrite_doctor_probe (x); DROP TABLE _dualwrite_doctor_probe;")
        .map_err(fail)?;
    tx.rollback().map_err(fail)?;
    Ok("a write probe (rolled back) succeeded".into())
}

fn version_check(store: Store, v: crate::Result<i64>) -> std::result::Result<String, String> {
    let latest = migrate::latest_version(store);
    match v {
        Ok(v) if v == latest => Ok(format!("version {v} (latest)")),
        Ok(v) => Err(format!("version {v}, this build ships {latest}: run `dualwrite migrate`")),
        Err(e) => Err(e.to_string()),
    }
}

/// The report as JSON: `{"ok": bool, "checks": [{"name", "status": "ok"|"fail", "detail"}]}`.
pub fn render_json(checks: &[Check]) -> String {
    let ok = checks.iter().all(|c| c.status == CheckStatus::Ok);
    serde_json::to_string_pretty(&serde_json::json!({ "ok": ok, "checks": checks }))
        .unwrap_or_else(|e| format!("{{\"ok\": false, \"error\": {:?}}}", e.to_string()))
}

/// The report as a fixed-width table.
pub fn render(checks: &[Check]) -> String {
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for c in checks {
        let mark = match c.status {
            CheckStatus::Ok => "ok  ",
            CheckStatus::Fail => "FAIL",
        };
        out.push_str(&format!("{mark}  {:width$}  {}\n", c.name, c.detail));
    }
    out
}
