//! `doctor`: the smoke test a CI/CD pipeline runs before a deploy. It connects to both stores,
//! checks the extensions, the schema versions, the PostgreSQL role's right to create temporary
//! tables (the backfill's staging) and the secret key, and reports each check.

use crate::config::Config;
use crate::migrate::{self, Store};
use crate::SecretKey;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckStatus {
    Ok,
    Fail,
}

#[derive(Clone, Debug)]
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

    let sqlite = rusqlite::Connection::open_with_flags(
        &config.sqlite_path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    );
    match sqlite {
        Ok(conn) => {
            checks.push(Check::new("sqlite connection", Ok(config.sqlite_path.display().to_string())));
            checks.push(Check::new(
                "sqlite schema",
                version_check(Store::Sqlite, migrate::sqlite_version(&conn)),
            ));
        }
        Err(e) => {
            checks.push(Check::new(
                "sqlite connection",
                Err(format!("cannot open {}: {e}", config.sqlite_path.display())),
            ));
        }
    }

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

fn version_check(store: Store, v: crate::Result<i64>) -> std::result::Result<String, String> {
    let latest = migrate::latest_version(store);
    match v {
        Ok(v) if v == latest => Ok(format!("version {v} (latest)")),
        Ok(v) => Err(format!("version {v}, this build ships {latest}: run `dualwrite migrate`")),
        Err(e) => Err(e.to_string()),
    }
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
