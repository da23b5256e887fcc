//! `doctor`: the smoke test a CI/CD pipeline runs before a deploy. It connects to both stores,
//! checks that the SQLite file is intact and writable, the extensions, the schema versions and
//! the secret key, and reports each check. It changes nothing.

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
