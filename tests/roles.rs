//! Least privilege: the two roles of `migrations/postgres/roles.sql.example` (docs/SECURITY.md),
//! created in the test cluster from that very file. The migration role migrates a fresh database
//! without being a superuser; the runtime role runs a replicating bridge (inserts, updates and
//! deletes reach PostgreSQL), reads from PostgreSQL, backfills and verifies — and cannot create,
//! alter, drop or truncate a table, create a schema, or write the migration ledger.
//!
//! Needs PostgreSQL with a superuser to create the roles: `pg_virtualenv -t -v 15 cargo test --test roles`.

mod common;

use dualwrite::backfill::{backfill, BackfillOptions, NoProgress};
use dualwrite::doctor::CheckStatus;
use dualwrite::verify::{verify, VerifyOptions};
use dualwrite::{Bridge, BridgeOptions, Config, FlagChange, KeySource, PgConfig, ReadSource, WriteMode};
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;

const EXAMPLE: &str = include_str!("../migrations/postgres/roles.sql.example");

/// The two sections of the example, with our database, role names and passwords put in.
struct Script {
    setup: String,
    grants: String,
}

fn script(db: &str, migrator: &str, runtime: &str, password: &str) -> Script {
    let fill = |s: &str| {
        s.replace("dualwrite_migrator", migrator)
            .replace("dualwrite_runtime", runtime)
            .replace("DATABASE app", &format!("DATABASE {db}"))
            .replace("'change-me-migrator'", &format!("'{password}'"))
            .replace("'change-me-runtime'", &format!("'{password}'"))
    };
    let (_, rest) = EXAMPLE.split_once("-- @section setup").expect("the example has a setup section");
    let (setup, grants) = rest.split_once("-- @section grants").expect("the example has a grants section");
    // Each marker line ends with a note in parentheses: start after it.
    let body = |s: &str| fill(s.split_once('\n').map_or("", |(_, rest)| rest));
    Script { setup: body(setup), grants: body(grants) }
}

/// Drops the roles when the test ends (after the database that holds their objects is gone).
struct Roles {
    admin: PgConfig,
    names: [String; 2],
}

impl Drop for Roles {
    fn drop(&mut self) {
        if let Ok(mut c) = self.admin.connect() {
            for n in &self.names {
                let _ = c.batch_execute(&format!("DROP ROLE IF EXISTS {n}"));
            }
        }
    }
}

/// The test database reached as `user`.
fn as_role(db: &common::TestDb, user: &str, password: &str) -> PgConfig {
    let c = db.config.postgres_config();
    let host = match &c.get_hosts()[0] {
        postgres::config::Host::Tcp(h) => h.clone(),
        postgres::config::Host::Unix(p) => p.display().to_string(),
    };
    let url = format!(
        "host='{host}' port={} dbname={} user={user} password='{password}'",
        c.get_ports().first().copied().unwrap_or(5432),
        c.get_dbname().unwrap()
    );
    PgConfig::from_url_with_env(&url, &HashMap::new()).unwrap()
}

/// Run `sql` and return the SQLSTATE it failed with.
#[track_caller]
fn refused(c: &mut postgres::Client, sql: &str) -> String {
    match c.batch_execute(sql) {
        Ok(()) => panic!("the runtime role could run: {sql}"),
        Err(e) => e.code().map(|c| c.code().to_string()).unwrap_or_else(|| e.to_string()),
    }
}

#[test]
fn migration_role_migrates_and_runtime_role_replicates_but_cannot_change_the_schema() {
    let suffix = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let (migrator, runtime) = (format!("dw_migrator_{suffix}"), format!("dw_runtime_{suffix}"));
    let password = format!("pw-{}", uuid::Uuid::new_v4().simple());
    let admin = common::server();
    let _roles = Roles { admin: admin.clone(), names: [runtime.clone(), migrator.clone()] };
    let db = common::fresh_db();
    let dbname = db.config.dbname().unwrap().to_string();
    let s = script(&dbname, &migrator, &runtime, &password);

    // 1. Setup as the superuser, on the fresh database.
    db.connect().batch_execute(&s.setup).unwrap_or_else(|e| panic!("setup section: {e}"));
    let mut su = admin.connect().unwrap();
    let is_super: bool = su
        .query_one(
            "SELECT rolsuper OR rolcreaterole OR rolcreatedb FROM pg_roles WHERE rolname = $1",
            &[&migrator],
        )
        .unwrap()
        .get(0);
    assert!(!is_super, "the migration role must not be a superuser");

    // 2. Migrate as the migration role, then its grants section.
    let mig = as_role(&db, &migrator, &password);
    let report =
        dualwrite::migrate_postgres(&mut mig.connect().unwrap()).expect("migrate as the migration role");
    assert_eq!(report.version, dualwrite::latest_version(dualwrite::Store::Postgres));
    mig.connect().unwrap().batch_execute(&s.grants).unwrap_or_else(|e| panic!("grants section: {e}"));
    // Idempotent: the grants run after every migrate.
    mig.connect().unwrap().batch_execute(&s.grants).unwrap();

    // 3. A bridge replicating as the runtime role.
    let run = as_role(&db, &runtime, &password);
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        sqlite_path: dir.path().join("monolith.sqlite3"),
        postgres: Some(run.clone()),
        key_source: KeySource::File(common::key_file(dir.path())),
    };
    // History written before replication starts, for the backfill.
    {
        let quiet =
            Bridge::open(config.clone(), BridgeOptions { replicate: false, ..Default::default() }).unwrap();
        for i in 0..20 {
            quiet.insert("prompts", &json!({"key": format!("p{i}"), "body": "b", "version": 1})).unwrap();
        }
        // Not replicated: drop the outbox as if these rows predate the bridge.
        rusqlite::Connection::open(&config.sqlite_path)
            .unwrap()
            .execute("DELETE FROM _dualwrite_outbox", [])
            .unwrap();
    }
    let b = Bridge::open(config.clone(), BridgeOptions::default()).unwrap();
    let user = b.insert("users", &json!({"email": "roles@example.com", "display_name": "R"})).unwrap();
    let uid = user["id"].as_str().unwrap().to_string();
    let job = b.insert("jobs", &json!({"type": "t", "owner_id": uid})).unwrap();
    let jid = job["id"].as_str().unwrap().to_string();
    b.patch("jobs", &jid, &json!({"priority": "urgent"})).unwrap();
    b.put_api_key(uuid::Uuid::parse_str(&uid).unwrap(), "serpapi", b"runtime-role-secret", None).unwrap();
    let gone = b.insert("jobs", &json!({"type": "to-delete"})).unwrap();
    assert!(b.delete("jobs", gone["id"].as_str().unwrap()).unwrap());
    b.insert("wordstat_cache", &json!({"cache_key": "k", "value": 1, "expires_at": "2030-01-01T00:00:00Z"}))
        .unwrap();
    b.flush(Duration::from_secs(60)).expect("the runtime role replicates");
    let st = b.status().unwrap();
    assert_eq!((st.dead_letters, st.outbox_depth), (0, 0), "{st:?}");
    let mut check = db.connect();
    let prio: String =
        check.query_one("SELECT priority FROM jobs WHERE id = $1::text::uuid", &[&jid]).unwrap().get(0);
    assert_eq!(prio, "urgent", "the update reached PostgreSQL");
    let n: i64 = check.query_one("SELECT count(*) FROM jobs", &[]).unwrap().get(0);
    assert_eq!(n, 1, "the delete reached PostgreSQL");

    // Reads served by PostgreSQL as the runtime role.
    b.set_flag(FlagChange::ReadSource(ReadSource::Postgres), "tests/roles.rs", "read as runtime", false)
        .unwrap();
    assert_eq!(b.get("jobs", &jid).unwrap().unwrap()["priority"], "urgent");
    let reads = b.status().unwrap().reads;
    let jobs = &reads["jobs"];
    assert!(jobs.postgres >= 1 && jobs.fallbacks == 0, "served by PostgreSQL without fallback: {jobs:?}");

    // Backfill and verify as the runtime role.
    backfill(&config, &BackfillOptions::default(), &mut NoProgress).expect("backfill as the runtime role");
    b.flush(Duration::from_secs(60)).unwrap();
    let report = verify(&config, &VerifyOptions::default()).expect("verify as the runtime role");
    assert!(report.ok, "{}", report.render_text());
    common::assert_stores_equal(&b, &db);

    // PostgreSQL as the primary and back, as the runtime role (the outbox and revision sequence
    // grants of migrations 0005).
    b.set_flag(
        FlagChange::WriteMode(WriteMode::PostgresPrimary),
        "tests/roles.rs",
        "primary as runtime",
        false,
    )
    .unwrap();
    b.patch("jobs", &jid, &json!({"progress": "60"})).unwrap();
    b.set_flag(FlagChange::WriteMode(WriteMode::Postgres), "tests/roles.rs", "postgres as runtime", false)
        .unwrap();
    b.patch("jobs", &jid, &json!({"progress": "70"})).unwrap();
    b.rollback_to_sqlite("tests/roles.rs", "back as runtime", false).unwrap();
    b.set_flag(FlagChange::WriteMode(WriteMode::Dual), "tests/roles.rs", "dual again", false).unwrap();
    b.flush(Duration::from_secs(60)).unwrap();
    common::assert_stores_equal(&b, &db);
    b.shutdown(Duration::from_secs(5));

    // 4. No DDL for the runtime role, anywhere.
    let mut c = run.connect().unwrap();
    for sql in [
        "CREATE TABLE public.evil (id int)",
        "CREATE TABLE dualwrite.evil (id int)",
        "CREATE SCHEMA evil",
        "DROP TABLE users",
        "DROP TABLE dualwrite.row_revisions",
        "ALTER TABLE jobs ADD COLUMN evil int",
        "ALTER TABLE jobs DROP CONSTRAINT jobs_pkey",
        "CREATE INDEX evil ON jobs (type)",
        "TRUNCATE jobs",
        "CREATE TRIGGER evil BEFORE INSERT ON jobs FOR EACH ROW EXECUTE FUNCTION pg_catalog.suppress_redundant_updates_trigger()",
        "DELETE FROM dualwrite.schema_migrations",
        "UPDATE dualwrite.schema_migrations SET checksum = 'x'",
        "CREATE EXTENSION IF NOT EXISTS hstore",
    ] {
        let code = refused(&mut c, sql);
        // 42501 insufficient_privilege; 42809/42P01 never expected here.
        assert_eq!(code, "42501", "{sql}: expected insufficient_privilege, got {code}");
    }
    // Holding no grant option, it cannot pass its rights on (PostgreSQL warns and grants nothing).
    c.batch_execute("GRANT SELECT ON jobs TO PUBLIC").unwrap();
    let leaked: bool =
        c.query_one("SELECT has_table_privilege('public', 'jobs', 'SELECT')", &[]).unwrap().get(0);
    assert!(!leaked, "the runtime role passed its rights on");
    // It can still read the ledger (doctor) and use temporary tables (backfill staging).
    assert_eq!(
        dualwrite::postgres_version(&mut c).unwrap(),
        dualwrite::latest_version(dualwrite::Store::Postgres)
    );
    c.batch_execute("CREATE TEMP TABLE scratch (id int) ON COMMIT DELETE ROWS").unwrap();
    // And the superuser sees the schema owned by the migration role.
    let owner: String = db
        .connect()
        .query_one(
            "SELECT tableowner FROM pg_tables WHERE schemaname = 'public' AND tablename = 'users'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(owner, migrator);

    // Regression (issue 14, item 10): `dualwrite doctor` checks, for the role it runs as, the
    // TEMPORARY right the backfill's staging tables need (the example grants it).
    let temporary = |config: &Config| {
        dualwrite::doctor::run(config)
            .into_iter()
            .find(|c| c.name == "postgres temporary tables")
            .expect("checked")
    };
    let checks = dualwrite::doctor::run(&config);
    assert!(checks.iter().all(|c| c.status == CheckStatus::Ok), "{}", dualwrite::doctor::render(&checks));
    assert!(temporary(&config).detail.contains(&runtime), "{:?}", temporary(&config));
    su.batch_execute(&format!("REVOKE TEMPORARY ON DATABASE {dbname} FROM {runtime}")).unwrap();
    let refused = temporary(&config);
    assert_eq!(refused.status, CheckStatus::Fail);
    assert!(
        refused.detail.contains(&format!("GRANT TEMPORARY ON DATABASE {dbname} TO {runtime}")),
        "{}",
        refused.detail
    );
    // What the check is for: without the right, the backfill fails (run again from the start,
    // so it has chunks to stage).
    let again = BackfillOptions { restart: true, ..Default::default() };
    let e = backfill(&config, &again, &mut NoProgress).expect_err("a backfill without TEMPORARY");
    assert!(e.to_string().contains("temporary"), "{e}");
}
