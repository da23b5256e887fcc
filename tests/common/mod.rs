//! Shared set-up for integration tests: a real PostgreSQL (from DUALWRITE_PG_URL / DATABASE_URL or
//! the PG* variables that `pg_virtualenv` sets), one fresh database per test, and temp SQLite files.
#![allow(dead_code)]

use dualwrite::PgConfig;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};

pub const NO_PG: &str = "no PostgreSQL configured: run `scripts/test` (it installs PostgreSQL 15 with pgvector \
and pgcrypto and runs the tests inside a throw-away cluster with pg_virtualenv), or set DUALWRITE_PG_URL or the \
PGHOST/PGPORT/PGUSER/PGPASSWORD/PGDATABASE variables";

/// The server the tests use. Panics (fails the test) when none is configured: a test that needs
/// PostgreSQL never passes or skips silently.
pub fn server() -> PgConfig {
    let env: HashMap<String, String> = std::env::vars().collect();
    let url = env.get("DUALWRITE_PG_URL").or_else(|| env.get("DATABASE_URL"));
    match url {
        Some(u) => PgConfig::from_url(u).expect("DUALWRITE_PG_URL is valid"),
        None => PgConfig::from_pg_vars(&env).expect(NO_PG),
    }
}

/// A database created for one test and dropped when the guard goes.
pub struct TestDb {
    pub config: PgConfig,
    admin: PgConfig,
    name: String,
}

impl TestDb {
    pub fn connect(&self) -> postgres::Client {
        self.config.connect().expect("connect to the test database")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if std::env::var_os("DUALWRITE_KEEP_TEST_DB").is_some() {
            eprintln!("kept test database {}", self.name);
            return;
        }
        if let Ok(mut c) = self.admin.connect() {
            // A logical slot (the change capture) keeps its database from being dropped.
            let _ = c.batch_execute(&format!(
                "SELECT pg_terminate_backend(active_pid, 5000) FROM pg_replication_slots
                     WHERE database = '{n}' AND active_pid IS NOT NULL;
                 SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = '{n}';",
                n = self.name
            ));
            let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
        }
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A new empty database on the test server.
pub fn fresh_db() -> TestDb {
    fresh_db_on(server())
}

/// A new empty database on the server `admin` reaches (the test server, or a private cluster a
/// test stops and starts: tests/support/cluster.rs).
pub fn fresh_db_on(admin: PgConfig) -> TestDb {
    let mut c = admin.connect().unwrap_or_else(|e| panic!("{e}\n{NO_PG}"));
    let name = format!(
        "dw_test_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst),
        uuid::Uuid::new_v4().simple().to_string().get(..8).unwrap_or("x")
    );
    c.batch_execute(&format!("CREATE DATABASE {name}")).expect("create test database");
    TestDb { config: admin.with_dbname(&name), admin, name }
}

/// A fresh database with both extensions and the bridge migrations applied.
pub fn migrated_db() -> TestDb {
    migrated_db_on(server())
}

/// [`migrated_db`] on the server `admin` reaches.
pub fn migrated_db_on(admin: PgConfig) -> TestDb {
    let db = fresh_db_on(admin);
    dualwrite::migrate_postgres(&mut db.connect()).expect("migrate postgres");
    db
}

/// A temp directory holding a SQLite path that does not exist yet.
pub fn temp_sqlite() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("monolith.sqlite3");
    (dir, path)
}

/// A key file with safe permissions.
pub fn key_file(dir: &std::path::Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join("dualwrite.key");
    std::fs::write(&p, "test-key-0123456789abcdef-not-for-production\n").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// A bridge on a fresh SQLite file replicating into `db` (already migrated).
pub fn bridge(db: &TestDb, dir: &std::path::Path) -> dualwrite::Bridge {
    bridge_with(db, dir, dualwrite::BridgeOptions::default())
}

pub fn bridge_with(
    db: &TestDb,
    dir: &std::path::Path,
    options: dualwrite::BridgeOptions,
) -> dualwrite::Bridge {
    dualwrite::Bridge::open(config(db, dir), options).expect("open bridge")
}

/// The configuration a test bridge uses: SQLite file and key file in `dir`, PostgreSQL = `db`.
pub fn config(db: &TestDb, dir: &std::path::Path) -> dualwrite::Config {
    dualwrite::Config {
        sqlite_path: dir.join("monolith.sqlite3"),
        postgres: Some(db.config.clone()),
        key_source: dualwrite::KeySource::File(key_file(dir)),
    }
}

/// Every row of every table in both stores, compared as wire JSON (vectors as f32 bits); panics with
/// the first difference.
pub fn assert_stores_equal(bridge: &dualwrite::Bridge, db: &TestDb) {
    let mut pg = db.connect();
    let sqlite = dualwrite::store::sqlite::open(&bridge.config().sqlite_path).expect("open sqlite");
    for t in dualwrite::schema::TABLES {
        let pg_rows = dualwrite::store::postgres::all_rows(&mut pg, t).expect("read postgres");
        // SQLite read directly, not through the bridge, whose reads follow the read flags.
        let lite = dualwrite::store::sqlite::Rows::query_rows(&sqlite, t, &dualwrite::schema::Filter::new())
            .expect("read sqlite");
        assert_eq!(
            pg_rows.len(),
            lite.len(),
            "{}: row counts differ (postgres {}, sqlite {})",
            t.name,
            pg_rows.len(),
            lite.len()
        );
        for row in lite {
            let key = row[t.key].as_str().unwrap().to_string();
            let theirs = pg_rows.get(&key).unwrap_or_else(|| panic!("{} {key} missing in postgres", t.name));
            for c in t.columns {
                let (a, b) = (&row[c.name], &theirs[c.name]);
                let same = match c.ty {
                    dualwrite::schema::ColType::Vector => {
                        // Bit for bit: -0.0 is not 0.0.
                        let f = |v: &serde_json::Value| -> Vec<u32> {
                            v.as_array()
                                .unwrap()
                                .iter()
                                .map(|x| (x.as_f64().unwrap() as f32).to_bits())
                                .collect()
                        };
                        f(a) == f(b)
                    }
                    _ => a == b,
                };
                assert!(same, "{}.{} of {key}: sqlite {a} != postgres {b}", t.name, c.name);
            }
        }
    }
}

/// A libpq key=value connection string for the test database (for child processes and the CLI).
pub fn url_of(db: &TestDb) -> String {
    let c = db.config.postgres_config();
    // libpq quoting: values in single quotes, backslash and quote escaped.
    let q = |v: &str| format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"));
    let host = match c.get_hosts().first() {
        Some(postgres::config::Host::Tcp(h)) => h.clone(),
        Some(postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let mut s = format!(
        "host={} port={} user={} dbname={}",
        q(&host),
        c.get_ports().first().copied().unwrap_or(5432),
        q(c.get_user().unwrap_or("postgres")),
        q(c.get_dbname().unwrap_or("postgres"))
    );
    if let Some(pw) = c.get_password() {
        s.push_str(&format!(" password={}", q(&String::from_utf8_lossy(pw))));
    }
    s
}
