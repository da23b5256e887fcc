//! The two migration sets, the registry and the live catalogs agree; the runner is idempotent
//! and refuses tampering; pgvector and pgcrypto work in a migrated database.

mod common;

use dualwrite::schema::{ColType, TABLES};
use std::collections::BTreeSet;

fn sqlite_conn() -> (tempfile::TempDir, rusqlite::Connection) {
    let (dir, path) = common::temp_sqlite();
    let conn = rusqlite::Connection::open(path).unwrap();
    (dir, conn)
}

#[test]
fn postgres_migrations_apply_once_then_change_nothing() {
    let db = common::fresh_db();
    let mut c = db.connect();
    let first = dualwrite::migrate_postgres(&mut c).unwrap();
    let latest = dualwrite::latest_version(dualwrite::Store::Postgres);
    assert_eq!(first.applied.len() as i64, latest);
    assert_eq!(first.version, dualwrite::latest_version(dualwrite::Store::Postgres));
    let second = dualwrite::migrate_postgres(&mut c).unwrap();
    assert!(second.applied.is_empty());
    assert_eq!(second.version, first.version);
    let rows = c
        .query("SELECT version, length(checksum), success, duration_ms >= 0 FROM dualwrite.schema_migrations ORDER BY 1", &[])
        .unwrap();
    assert_eq!(rows.len() as i64, latest);
    for r in rows {
        assert_eq!(r.get::<_, i32>(1), 64, "sha-256 hex checksum");
        assert!(r.get::<_, bool>(2));
        assert!(r.get::<_, bool>(3));
    }
}

#[test]
fn sqlite_migrations_apply_once_then_change_nothing() {
    let (_d, mut c) = sqlite_conn();
    let first = dualwrite::migrate_sqlite(&mut c).unwrap();
    assert_eq!(first.applied.len() as i64, dualwrite::latest_version(dualwrite::Store::Sqlite));
    let schema_before: Vec<String> = c
        .prepare("SELECT sql FROM sqlite_master ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .flatten()
        .collect();
    let second = dualwrite::migrate_sqlite(&mut c).unwrap();
    assert!(second.applied.is_empty());
    let schema_after: Vec<String> = c
        .prepare("SELECT sql FROM sqlite_master ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(schema_before, schema_after);
    assert_eq!(dualwrite::sqlite_version(&c).unwrap(), dualwrite::latest_version(dualwrite::Store::Sqlite));
}

#[test]
fn tampered_dirty_or_unknown_ledger_rows_stop_the_run() {
    let (_d, mut c) = sqlite_conn();
    dualwrite::migrate_sqlite(&mut c).unwrap();
    c.execute(
        "UPDATE _dualwrite_migrations SET checksum = 'deadbeef' || substr(checksum, 9) WHERE version = 1",
        [],
    )
    .unwrap();
    let err = dualwrite::migrate_sqlite(&mut c).unwrap_err().to_string();
    assert!(err.contains("changed after it was applied"), "{err}");

    let db = common::migrated_db();
    let mut pg = db.connect();
    pg.execute("UPDATE dualwrite.schema_migrations SET success = false WHERE version = 2", &[]).unwrap();
    let err = dualwrite::migrate_postgres(&mut pg).unwrap_err().to_string();
    assert!(err.contains("dirty"), "{err}");
    pg.execute("UPDATE dualwrite.schema_migrations SET success = true WHERE version = 2", &[]).unwrap();
    pg.execute(
        "INSERT INTO dualwrite.schema_migrations (version, name, checksum, success, duration_ms) VALUES (999, 'future', 'x', true, 0)",
        &[],
    )
    .unwrap();
    let err = dualwrite::migrate_postgres(&mut pg).unwrap_err().to_string();
    assert!(err.contains("unknown to this build"), "{err}");
    pg.execute("DELETE FROM dualwrite.schema_migrations WHERE version = 999", &[]).unwrap();
    pg.execute("UPDATE dualwrite.schema_migrations SET checksum = 'x' WHERE version = 3", &[]).unwrap();
    let err = dualwrite::postgres_version(&mut pg).unwrap_err().to_string();
    assert!(err.contains("changed after it was applied"), "{err}");
}

#[test]
fn registry_matches_the_live_postgres_catalog_column_by_column() {
    let db = common::migrated_db();
    let mut c = db.connect();
    let live: BTreeSet<(String, String, String, bool)> = c
        .query(
            "SELECT c.relname::text, a.attname::text, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull
             FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'public' AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let registry: BTreeSet<(String, String, String, bool)> = TABLES
        .iter()
        .flat_map(|t| {
            t.columns.iter().map(|col| {
                (t.name.to_string(), col.name.to_string(), col.ty.pg_type().to_string(), col.nullable)
            })
        })
        .collect();
    assert_eq!(live, registry, "public schema and registry differ");

    // Each table's primary key is the registry's key.
    for t in TABLES {
        let pk: String = c
            .query_one(
                "SELECT a.attname::text FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
                 WHERE i.indrelid = ('public.' || $1)::regclass AND i.indisprimary",
                &[&t.name],
            )
            .unwrap()
            .get(0);
        assert_eq!(pk, t.key, "{}", t.name);
    }
}

#[test]
fn registry_matches_the_live_sqlite_schema_column_by_column() {
    let (_d, mut c) = sqlite_conn();
    dualwrite::migrate_sqlite(&mut c).unwrap();
    let tables: BTreeSet<String> = c
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '\\_%' ESCAPE '\\' AND name NOT LIKE 'sqlite_%'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(tables, TABLES.iter().map(|t| t.name.to_string()).collect());
    for t in TABLES {
        let cols: Vec<(String, String, bool, bool)> = c
            .prepare(&format!("PRAGMA table_info({})", t.name))
            .unwrap()
            .query_map([], |r| Ok((r.get(1)?, r.get(2)?, r.get::<_, i64>(3)? == 0, r.get::<_, i64>(5)? > 0)))
            .unwrap()
            .flatten()
            .collect();
        let expected: Vec<(String, String, bool, bool)> = t
            .columns
            .iter()
            .map(|col| {
                (col.name.to_string(), col.ty.sqlite_type().to_string(), col.nullable, col.name == t.key)
            })
            .collect();
        assert_eq!(
            cols, expected,
            "{}: SQLite columns (name, type, nullable, pk) differ from the registry",
            t.name
        );
    }
}

#[test]
fn every_foreign_key_exists_with_an_index_in_both_stores() {
    let db = common::migrated_db();
    let mut pg = db.connect();
    let live: BTreeSet<(String, String, String)> = pg
        .query(
            "SELECT cl.relname::text, a.attname::text, rc.relname::text
             FROM pg_constraint k JOIN pg_class cl ON cl.oid = k.conrelid JOIN pg_class rc ON rc.oid = k.confrelid
             JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = k.conkey[1]
             WHERE k.contype = 'f' AND cl.relnamespace = 'public'::regnamespace",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let registry: BTreeSet<(String, String, String)> = TABLES
        .iter()
        .flat_map(|t| {
            t.foreign_keys
                .iter()
                .map(|f| (t.name.to_string(), f.column.to_string(), f.references.to_string()))
        })
        .collect();
    assert_eq!(live, registry);
    for (table, column, _) in &registry {
        let indexed: bool = pg
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
                 WHERE i.indrelid = ('public.' || $1)::regclass AND a.attname = $2)",
                &[table, column],
            )
            .unwrap()
            .get(0);
        assert!(indexed, "postgres: no index leads with {table}.{column}");
    }

    let (_d, mut lite) = sqlite_conn();
    dualwrite::migrate_sqlite(&mut lite).unwrap();
    let mut sqlite_fks = BTreeSet::new();
    for t in TABLES {
        let fks: Vec<(String, String)> = lite
            .prepare(&format!("PRAGMA foreign_key_list({})", t.name))
            .unwrap()
            .query_map([], |r| Ok((r.get(3)?, r.get(2)?)))
            .unwrap()
            .flatten()
            .collect();
        for (col, parent) in fks {
            sqlite_fks.insert((t.name.to_string(), col, parent));
        }
    }
    assert_eq!(sqlite_fks, registry);
}

#[test]
fn enumerated_columns_have_checks_and_listed_indexes_exist() {
    let db = common::migrated_db();
    let mut pg = db.connect();
    let (_d, mut lite) = sqlite_conn();
    dualwrite::migrate_sqlite(&mut lite).unwrap();
    for t in TABLES {
        let pg_checks: Vec<String> = pg
            .query(
                "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE contype = 'c' AND conrelid = ('public.' || $1)::regclass",
                &[&t.name],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let sqlite_sql: String =
            lite.query_row("SELECT sql FROM sqlite_master WHERE name = ?1", [t.name], |r| r.get(0)).unwrap();
        for col in t.columns.iter().filter(|c| c.allowed.is_some()) {
            let allowed = col.allowed.unwrap();
            assert!(
                pg_checks
                    .iter()
                    .any(|d| d.contains(col.name) && allowed.iter().all(|v| d.contains(&format!("'{v}'")))),
                "postgres: no CHECK on {}.{} listing {allowed:?}: {pg_checks:?}",
                t.name,
                col.name
            );
            let line = sqlite_sql.lines().find(|l| l.trim_start().starts_with(col.name)).unwrap_or_default();
            assert!(
                line.contains("CHECK") && allowed.iter().all(|v| line.contains(&format!("'{v}'"))),
                "sqlite: no CHECK on {}.{} listing {allowed:?}",
                t.name,
                col.name
            );
        }
    }
    for (table, index) in [
        ("jobs", "jobs_claim_idx"),
        ("job_logs", "job_logs_job_id_created_at_idx"),
        ("serpapi_results", "serpapi_results_hash_key"),
        ("embeddings", "embeddings_text_hash_model_key"),
        ("prompts", "prompts_key_version_key"),
        ("text_analytics_cache", "text_analytics_cache_expires_at_idx"),
        ("wordstat_cache", "wordstat_cache_expires_at_idx"),
        ("audit_events", "audit_events_entity_idx"),
        ("audit_events", "audit_events_actor_id_idx"),
        ("users", "users_email_key"),
    ] {
        let n: i64 = pg
            .query_one("SELECT count(*) FROM pg_indexes WHERE schemaname = 'public' AND tablename = $1 AND indexname = $2", &[&table, &index])
            .unwrap()
            .get(0);
        assert_eq!(n, 1, "postgres index {index} on {table}");
    }
    // The claim query a worker runs can use the partial claim index.
    pg.batch_execute("SET enable_seqscan = off").unwrap();
    let plan: String = pg
        .query(
            "EXPLAIN SELECT id FROM jobs WHERE status = 'queued'
             ORDER BY (CASE priority WHEN 'urgent' THEN 0 WHEN 'high' THEN 1 WHEN 'normal' THEN 2 ELSE 3 END), queued_at, id LIMIT 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(plan.contains("jobs_claim_idx"), "{plan}");
}

#[test]
fn bridge_bookkeeping_stays_out_of_the_public_schema() {
    let db = common::migrated_db();
    let mut pg = db.connect();
    let public: i64 =
        pg.query_one("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'", &[]).unwrap().get(0);
    assert_eq!(public, 13);
    let bridge: Vec<String> = pg
        .query("SELECT tablename::text FROM pg_tables WHERE schemaname = 'dualwrite' ORDER BY 1", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        bridge.contains(&"schema_migrations".to_string()) && bridge.contains(&"row_revisions".to_string()),
        "{bridge:?}"
    );
}

#[test]
fn vector_and_pgcrypto_work_and_wire_rows_load_through_jsonb_populate_recordset() {
    let db = common::migrated_db();
    let mut pg = db.connect();
    let d: f64 = pg.query_one("SELECT '[1,2,3]'::vector <-> '[1,2,4]'::vector", &[]).unwrap().get(0);
    assert_eq!(d, 1.0);
    let s: String = pg
        .query_one(
            "SELECT pgp_sym_decrypt(pgp_sym_encrypt('s3cret', 'k-0123456789abcdef'), 'k-0123456789abcdef')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(s, "s3cret");
    // The wire form (docs/ARCHITECTURE.md) loads as-is: uuid, jsonb, timestamptz, numeric, vector.
    let id = uuid::Uuid::new_v4();
    let row = serde_json::json!([{
        "id": id.to_string(), "text_hash": "h", "vector": [0.5, -1.25, 3.0e-7], "model": "m",
        "meta": {"k": [1, 2]}, "created_at": "2026-01-02T03:04:05.123456Z"
    }]);
    pg.execute(
        "INSERT INTO embeddings SELECT * FROM jsonb_populate_recordset(NULL::embeddings, $1::text::jsonb)",
        &[&row.to_string()],
    )
    .unwrap();
    let r = pg
        .query_one("SELECT vector::text, meta->'k'->>1, to_char(created_at AT TIME ZONE 'UTC', 'US') FROM embeddings", &[])
        .unwrap();
    assert_eq!(r.get::<_, String>(0), "[0.5,-1.25,3e-07]");
    assert_eq!(r.get::<_, String>(1), "2");
    assert_eq!(r.get::<_, String>(2), "123456");
    for t in TABLES {
        for c in t.columns.iter().filter(|c| c.ty == ColType::Vector) {
            assert_eq!(c.name, "vector");
        }
    }
}

/// The registry's indexed free text (what `check_indexed_text` bounds) is exactly the free-text
/// columns of PostgreSQL's indexes on the 13 tables: an index added by a migration and not to the
/// registry would let over-long values through again (issue 14, item 5).
#[test]
fn the_registry_knows_every_index_that_holds_free_text() {
    let db = common::migrated_db();
    let mut pg = db.connect();
    let rows = pg
        .query(
            "SELECT t.relname::text, i.relname::text,
                    array_agg(a.attname::text ORDER BY k.ord) FILTER (WHERE a.attname IS NOT NULL)
             FROM pg_index x
             JOIN pg_class i ON i.oid = x.indexrelid
             JOIN pg_class t ON t.oid = x.indrelid
             JOIN pg_namespace n ON n.oid = t.relnamespace AND n.nspname = 'public'
             CROSS JOIN LATERAL unnest(x.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
             LEFT JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum
             GROUP BY 1, 2",
            &[],
        )
        .unwrap();
    let mut catalog = BTreeSet::new();
    for r in rows {
        let (table, index, columns): (String, String, Option<Vec<String>>) = (r.get(0), r.get(1), r.get(2));
        let t =
            dualwrite::schema::table(&table).unwrap_or_else(|| panic!("index {index} on unknown {table}"));
        let text: Vec<String> = columns
            .unwrap_or_default()
            .into_iter()
            .filter(|c| t.column(c).is_some_and(|c| c.ty == ColType::Text && c.allowed.is_none()))
            .collect();
        if !text.is_empty() {
            catalog.insert((table, text));
        }
    }
    let registry: BTreeSet<(String, Vec<String>)> = TABLES
        .iter()
        .flat_map(|t| {
            t.indexed_text()
                .map(|cols| (t.name.to_string(), cols.iter().map(|c| c.name.to_string()).collect()))
        })
        .collect();
    assert_eq!(registry, catalog);
}

/// The CHECK expressions written in a SQLite `CREATE TABLE` statement, blanks collapsed.
fn checks_in_sqlite_sql(sql: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = sql;
    while let Some(at) = rest.find("CHECK") {
        let after = rest[at + "CHECK".len()..].trim_start();
        assert!(after.starts_with('('), "a CHECK without its parenthesis in {sql}");
        // The expression runs to the parenthesis that closes the first one (none in a string).
        let (mut depth, mut quoted, mut end) = (0usize, false, None);
        for (i, ch) in after.char_indices() {
            match ch {
                '\'' => quoted = !quoted,
                '(' if !quoted => depth += 1,
                ')' if !quoted => {
                    depth -= 1;
                    if depth == 0 {
                        end = Some(i);
                        break;
                    }
                }
                _ => {}
            }
        }
        let end = end.unwrap_or_else(|| panic!("an unclosed CHECK in {sql}"));
        out.insert(collapse_blanks(&after[1..end]));
        rest = &after[end..];
    }
    out
}

fn collapse_blanks(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The registry's CHECKs and defaults of `t` as PostgreSQL prints them: added to an empty copy of
/// the table's columns, so the catalog normalises them as it did the migration's.
fn registry_as_postgres_prints_it(
    pg: &mut postgres::Transaction<'_>,
    t: &dualwrite::schema::Table,
) -> (BTreeSet<String>, BTreeSet<(String, String)>) {
    let copy = format!("registry_{}", t.name);
    pg.batch_execute(&format!("CREATE TEMP TABLE {copy} (LIKE public.{})", t.name)).unwrap();
    for check in t.postgres_checks() {
        pg.batch_execute(&format!("ALTER TABLE {copy} ADD CHECK ({check})")).unwrap();
    }
    for c in t.columns {
        if let Some(d) = c.postgres_default() {
            pg.batch_execute(&format!("ALTER TABLE {copy} ALTER COLUMN {} SET DEFAULT {d}", c.name)).unwrap();
        }
    }
    postgres_checks_and_defaults(pg, &format!("pg_temp.{copy}"))
}

/// The CHECKs (`pg_get_constraintdef`) and column defaults (`pg_get_expr`) of a live table.
fn postgres_checks_and_defaults(
    pg: &mut postgres::Transaction<'_>,
    relation: &str,
) -> (BTreeSet<String>, BTreeSet<(String, String)>) {
    let checks = pg
        .query(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE contype = 'c' AND conrelid = $1::text::regclass",
            &[&relation],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let defaults = pg
        .query(
            "SELECT a.attname::text, pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d
             JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
             WHERE d.adrelid = $1::text::regclass",
            &[&relation],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    (checks, defaults)
}

/// Issue 17, item 5: every CHECK and default of both stores is the registry's (which drives
/// `validate_row`), and the registry has none that a store lacks.
#[test]
fn registry_checks_and_defaults_match_both_live_catalogs() {
    let db = common::migrated_db();
    let mut pg = db.connect();
    let mut tx = pg.transaction().unwrap();
    let (_d, mut lite) = sqlite_conn();
    dualwrite::migrate_sqlite(&mut lite).unwrap();
    for t in TABLES {
        let (live_checks, live_defaults) =
            postgres_checks_and_defaults(&mut tx, &format!("public.{}", t.name));
        let (registry_checks, registry_defaults) = registry_as_postgres_prints_it(&mut tx, t);
        assert_eq!(live_checks, registry_checks, "postgres: CHECKs of {} (live, registry)", t.name);
        assert_eq!(live_defaults, registry_defaults, "postgres: defaults of {} (live, registry)", t.name);

        let sql: String =
            lite.query_row("SELECT sql FROM sqlite_master WHERE name = ?1", [t.name], |r| r.get(0)).unwrap();
        let registry: BTreeSet<String> = t.sqlite_checks().iter().map(|c| collapse_blanks(c)).collect();
        assert_eq!(checks_in_sqlite_sql(&sql), registry, "sqlite: CHECKs of {} (live, registry)", t.name);
        let live_defaults: BTreeSet<(String, String)> = lite
            .prepare(&format!("PRAGMA table_info({})", t.name))
            .unwrap()
            .query_map([], |r| Ok((r.get(1)?, r.get::<_, Option<String>>(4)?)))
            .unwrap()
            .map(Result::unwrap)
            .filter_map(|(name, default)| Some((name, default?)))
            .collect();
        let registry_defaults: BTreeSet<(String, String)> =
            t.columns.iter().filter_map(|c| Some((c.name.to_string(), c.sqlite_default()?))).collect();
        assert_eq!(live_defaults, registry_defaults, "sqlite: defaults of {} (live, registry)", t.name);
    }
}

/// Issue 17, item 5: the unique constraints (and unique indexes) of both stores are the
/// registry's `unique`, which the key and index checks rely on.
#[test]
fn registry_unique_constraints_match_both_live_catalogs() {
    let db = common::migrated_db();
    let mut pg = db.connect();
    let (_d, mut lite) = sqlite_conn();
    dualwrite::migrate_sqlite(&mut lite).unwrap();
    for t in TABLES {
        let registry: BTreeSet<Vec<String>> =
            t.unique.iter().map(|cols| cols.iter().map(|c| c.to_string()).collect()).collect();
        let live_pg: BTreeSet<Vec<String>> = pg
            .query(
                "SELECT array_agg(a.attname::text ORDER BY k.ord) FROM pg_index x
                 CROSS JOIN LATERAL unnest(x.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
                 LEFT JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum
                 WHERE x.indrelid = ('public.' || $1)::regclass AND x.indisunique AND NOT x.indisprimary
                 GROUP BY x.indexrelid",
                &[&t.name],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(live_pg, registry, "postgres: unique constraints of {} (live, registry)", t.name);
        let unique_indexes: Vec<String> = lite
            .prepare(&format!("PRAGMA index_list({})", t.name))
            .unwrap()
            .query_map([], |r| Ok((r.get::<_, String>(1)?, r.get::<_, i64>(2)?, r.get::<_, String>(3)?)))
            .unwrap()
            .map(Result::unwrap)
            .filter(|(_, unique, origin)| *unique == 1 && origin != "pk")
            .map(|(name, _, _)| name)
            .collect();
        let live_sqlite: BTreeSet<Vec<String>> = unique_indexes
            .iter()
            .map(|index| {
                lite.prepare(&format!("PRAGMA index_info({index})"))
                    .unwrap()
                    .query_map([], |r| r.get::<_, String>(2))
                    .unwrap()
                    .map(Result::unwrap)
                    .collect()
            })
            .collect();
        assert_eq!(live_sqlite, registry, "sqlite: unique constraints of {} (live, registry)", t.name);
    }
}
