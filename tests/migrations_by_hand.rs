//! A DBA can apply migrations/postgres/*.sql with plain psql (or Flyway, sqitch: any tool that
//! runs the files in order) and end with what `dualwrite migrate` makes; and a database migrated
//! before postgres 0003 learned to create its schema is still accepted by the runner.

mod common;

use std::process::Command;

/// Everything of the schema a migration can make, one line per object, sorted; the runner's own
/// ledger (dualwrite.schema_migrations) is left out: a hand-applied database has none.
fn catalog(c: &mut postgres::Client) -> Vec<String> {
    const SCHEMAS: &str = "('public', 'dualwrite')";
    let queries = [
        "SELECT 'extension ' || extname || ' ' || extversion FROM pg_extension".to_string(),
        format!(
            "SELECT 'relation ' || n.nspname || '.' || c.relname || ' kind ' || c.relkind::text
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname IN {SCHEMAS} AND c.relname NOT LIKE 'schema_migrations%'"
        ),
        format!(
            "SELECT 'column ' || table_schema || '.' || table_name || '.' || column_name || ' ' || ordinal_position
                    || ' ' || udt_name || ' null=' || is_nullable || ' default=' || coalesce(column_default, '-')
             FROM information_schema.columns
             WHERE table_schema IN {SCHEMAS} AND table_name <> 'schema_migrations'"
        ),
        format!(
            "SELECT 'constraint ' || conrelid::regclass::text || ' ' || conname || ' ' || pg_get_constraintdef(c.oid)
             FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
             WHERE n.nspname IN {SCHEMAS} AND conrelid::regclass::text NOT LIKE '%schema_migrations'"
        ),
        format!(
            "SELECT 'index ' || indexdef FROM pg_indexes
             WHERE schemaname IN {SCHEMAS} AND tablename <> 'schema_migrations'"
        ),
        format!(
            "SELECT 'function ' || pg_get_functiondef(p.oid)
             FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname IN {SCHEMAS} AND p.prokind IN ('f', 'p')
               AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')"
        ),
        format!(
            "SELECT 'trigger ' || pg_get_triggerdef(t.oid)
             FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE NOT t.tgisinternal AND n.nspname IN {SCHEMAS}"
        ),
        format!(
            "SELECT 'view ' || schemaname || '.' || viewname || ' ' || definition FROM pg_views
             WHERE schemaname IN {SCHEMAS}"
        ),
        "SELECT 'schema ' || nspname FROM pg_namespace WHERE nspname IN ('public', 'dualwrite')".to_string(),
        format!(
            "SELECT 'comment ' || c.relname || ' ' || d.objsubid || ' ' || d.description
             FROM pg_description d JOIN pg_class c ON c.oid = d.objoid JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname IN {SCHEMAS}"
        ),
    ];
    let mut lines = Vec::new();
    for q in &queries {
        for row in c.query(q.as_str(), &[]).unwrap_or_else(|e| panic!("{q}: {e}")) {
            lines.push(row.get::<_, String>(0));
        }
    }
    lines.sort();
    lines
}

fn migration_files() -> Vec<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/postgres");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    files.sort();
    files
}

#[test]
fn plain_psql_applies_the_files_and_ends_where_migrate_ends() {
    let by_runner = common::migrated_db();
    let by_hand = common::fresh_db();
    let files = migration_files();
    assert_eq!(files.len() as i64, dualwrite::latest_version(dualwrite::Store::Postgres), "{files:?}");
    for f in &files {
        // -1: each file in one transaction, as the runner does; ON_ERROR_STOP: fail, not skip.
        let out = Command::new("psql")
            .args(["-X", "-q", "-1", "-v", "ON_ERROR_STOP=1", "-d", &common::url_of(&by_hand), "-f"])
            .arg(f)
            .output()
            .unwrap_or_else(|e| panic!("psql (the PostgreSQL client) is needed by this test: {e}"));
        assert!(
            out.status.success(),
            "psql failed on {}:\n{}",
            f.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (want, got) = (catalog(&mut by_runner.connect()), catalog(&mut by_hand.connect()));
    assert!(want.len() > 100, "the catalog query sees the schema: {} lines", want.len());
    let only_runner: Vec<_> = want.iter().filter(|l| !got.contains(l)).collect();
    let only_hand: Vec<_> = got.iter().filter(|l| !want.contains(l)).collect();
    assert!(
        only_runner.is_empty() && only_hand.is_empty(),
        "only in the runner's database: {only_runner:#?}\nonly in the hand-applied one: {only_hand:#?}"
    );
}

#[test]
fn a_ledger_holding_0003_s_earlier_text_is_accepted_and_any_other_is_not() {
    let db = common::migrated_db();
    let mut c = db.connect();
    // The checksum of 0003 before it began with CREATE SCHEMA IF NOT EXISTS (what every database
    // migrated by an earlier build holds).
    c.execute(
        "UPDATE dualwrite.schema_migrations
         SET checksum = '16590c3dcae5f2df7ef128a414ea3ccf249a42f39861972999bd4b21bb16b2a8' WHERE version = 3",
        &[],
    )
    .unwrap();
    let latest = dualwrite::latest_version(dualwrite::Store::Postgres);
    assert_eq!(dualwrite::postgres_version(&mut c).unwrap(), latest);
    assert!(dualwrite::migrate_postgres(&mut c).unwrap().applied.is_empty());
    // The earlier checksum is accepted for version 3 only.
    c.execute(
        "UPDATE dualwrite.schema_migrations
         SET checksum = '16590c3dcae5f2df7ef128a414ea3ccf249a42f39861972999bd4b21bb16b2a8' WHERE version = 2",
        &[],
    )
    .unwrap();
    let err = dualwrite::postgres_version(&mut c).unwrap_err().to_string();
    assert!(err.contains("version 2") && err.contains("changed after it was applied"), "{err}");
}
