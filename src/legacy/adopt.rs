//! Adopting an existing SQLite file: the monolith's own tables become ours, in one transaction.
//!
//! `migrate_sqlite` on a file whose ledger has no version 1 but which holds tables with registry
//! names runs this instead of migration 1:
//!
//! 1. with `foreign_keys = OFF` and `legacy_alter_table = ON` (set outside the transaction, as
//!    SQLite's "12-step" table rebuild requires) and one `BEGIN IMMEDIATE` transaction:
//! 2. shape checks first: a table that is a view, a missing column that nothing can fill (NOT NULL
//!    without a default), columns the target schema does not have (unless `extra_columns =
//!    "set_aside"`), a trigger on an entity table: any of them refuses adoption, nothing changed;
//! 3. the legacy indexes of those tables are dropped (listed in the report with their SQL) and
//!    each table is renamed `_dualwrite_legacy_<t>`;
//! 4. migration 1 runs as it is (so an adopted file's schema is byte-for-byte a fresh file's);
//! 5. each legacy row is converted ([`super::convert`], with the configuration's overrides) and
//!    inserted **with its rowid**; missing columns get their default (or NULL);
//! 6. a row that cannot be converted, repeats an earlier row's key or unique value (the first in
//!    rowid order is kept), or that SQLite refuses for another CHECK, is either a reason to refuse
//!    the whole adoption with a report naming every such row (`unconvertible = "refuse"`, the
//!    default: nothing changes, the monolith keeps working on its file as before), or kept
//!    **unchanged** in `_dualwrite_adoption_holdouts` with its reasons (`unconvertible =
//!    "hold_out"`); no row is ever lost: rows before = rows adopted + rows held out, checked;
//! 7. the legacy tables are dropped; views that worked before must still work; orphaned foreign
//!    keys are kept (SQLite accepts existing orphans; PostgreSQL will refuse them, so preflight
//!    and the backfill report them) and counted; version 1 is written to the ledger with its
//!    checksum and the report to `_dualwrite_adoption_log`; commit.
//!
//! Any error rolls everything back: adoption is all or nothing.

use super::convert::{assemble, convert_columns, key_text, to_sqlite_values, Overrides, Reject};
use super::preflight::duplicate_reason;
use super::source::{inspect, quote, shape_problems, Dedupe, Source};
use crate::error::{Error, Result};
use crate::ledger::{self, Migration, SQLITE_LEDGER};
use crate::schema::{now_timestamp, TABLES};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

/// What adoption does with rows that cannot be converted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unconvertible {
    /// Refuse the adoption, naming every such row; nothing changes.
    #[default]
    Refuse,
    /// Keep them unchanged in `_dualwrite_adoption_holdouts` with their reasons.
    HoldOut,
}

/// What adoption does with columns the target schema does not have.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExtraColumns {
    /// Refuse the adoption, naming the columns.
    #[default]
    Refuse,
    /// Keep their values in `_dualwrite_adoption_extras` (table, key, rowid, JSON of the columns).
    SetAside,
}

#[derive(Clone, Debug, Default)]
pub struct AdoptOptions {
    /// The configuration's `[conversions]`.
    pub overrides: Overrides,
    pub unconvertible: Unconvertible,
    pub extra_columns: ExtraColumns,
}

/// What an adoption did (also stored as JSON in `_dualwrite_adoption_log`).
#[derive(Clone, Debug, Serialize)]
pub struct AdoptionReport {
    pub adopted_at: String,
    pub duration_ms: u64,
    pub tables: Vec<TableAdoption>,
    /// Entity tables the file did not have, created empty.
    pub created: Vec<String>,
    /// The legacy indexes dropped with their tables; recreate by hand if the monolith needs one.
    pub dropped_indexes: Vec<DroppedIndex>,
    pub rows_held_out: u64,
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct TableAdoption {
    pub table: String,
    pub rows_before: u64,
    pub rows_adopted: u64,
    /// Adopted rows with at least one converted value.
    pub rows_converted: u64,
    pub rows_held_out: u64,
    /// Columns the legacy table lacked, filled with their default (or NULL).
    pub filled_columns: Vec<String>,
    /// Legacy columns set aside in `_dualwrite_adoption_extras`.
    pub extra_columns: Vec<String>,
    /// Adopted rows whose foreign key has no parent (kept; PostgreSQL will refuse them).
    pub orphans_kept: u64,
    /// Each column's rule, in words.
    pub rules: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct DroppedIndex {
    pub table: String,
    pub name: String,
    pub sql: String,
}

/// A row kept aside by adoption, exactly as it was.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct HeldOutRow {
    pub id: i64,
    pub table: String,
    /// The row's rowid in the legacy table (None for a WITHOUT ROWID table).
    pub rowid: Option<i64>,
    /// The key as it was.
    pub key: String,
    /// Every column of the legacy row, typed (see [`decode_holdout`]).
    pub row: Map<String, Value>,
    pub reasons: Vec<Reject>,
}

const ADOPTION_DDL: &str = "
CREATE TABLE IF NOT EXISTS _dualwrite_adoption_holdouts (
    id           INTEGER PRIMARY KEY,
    table_name   TEXT NOT NULL,
    source_rowid INTEGER,
    row_key      TEXT NOT NULL,
    row_json     TEXT NOT NULL,
    reasons      TEXT NOT NULL,
    held_at      TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS _dualwrite_adoption_log (
    id         INTEGER PRIMARY KEY,
    adopted_at TEXT NOT NULL,
    report     TEXT NOT NULL
);";

const EXTRAS_DDL: &str = "
CREATE TABLE IF NOT EXISTS _dualwrite_adoption_extras (
    table_name   TEXT NOT NULL,
    row_key      TEXT NOT NULL,
    source_rowid INTEGER,
    columns_json TEXT NOT NULL,
    PRIMARY KEY (table_name, row_key)
);";

fn legacy_name(table: &str) -> String {
    format!("_dualwrite_legacy_{table}")
}

fn table_exists(conn: &Connection, name: &str) -> Result<bool> {
    Ok(conn
        .query_row("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1", [name], |_| Ok(()))
        .optional()?
        .is_some())
}

/// The file holds entity tables but its ledger has no version 1: they are the monolith's own.
pub fn needs_adoption(conn: &Connection) -> Result<bool> {
    if crate::ledger::sqlite_records(conn, 1)? {
        return Ok(false);
    }
    let mut stmt =
        conn.prepare("SELECT 1 FROM sqlite_master WHERE type IN ('table', 'view') AND lower(name) = ?1")?;
    for t in TABLES {
        if stmt.exists([t.name])? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Adopt the file when it needs it (see the module documentation), in place of `entities`
/// (migration 1, which the runner hands over). The ledger is created inside the adoption's
/// transaction, so a refusal leaves no trace.
pub(crate) fn adopt_if_needed(
    conn: &mut Connection,
    opts: &AdoptOptions,
    entities: &Migration,
) -> Result<Option<AdoptionReport>> {
    if !needs_adoption(conn)? {
        return Ok(None);
    }
    let fk: i64 = conn.pragma_query_value(None, "foreign_keys", |r| r.get(0))?;
    let legacy_alter: i64 = conn.pragma_query_value(None, "legacy_alter_table", |r| r.get(0))?;
    // Both are no-ops inside a transaction, so they are set before it starts.
    conn.pragma_update(None, "foreign_keys", 0)?;
    conn.pragma_update(None, "legacy_alter_table", 1)?;
    let result = adopt_in_tx(conn, opts, entities);
    let restore_alter = conn.pragma_update(None, "legacy_alter_table", legacy_alter);
    let restore_fk = conn.pragma_update(None, "foreign_keys", fk);
    let report = result?;
    restore_alter?;
    restore_fk?;
    Ok(report)
}

fn working_views(conn: &Connection) -> Result<HashSet<String>> {
    let names: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'view'")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(names
        .into_iter()
        .filter(|v| conn.prepare(&format!("SELECT * FROM {} LIMIT 0", quote(v))).is_ok())
        .collect())
}

fn mentions(sql: &str, word: &str) -> bool {
    let sql = sql.to_lowercase();
    sql.match_indices(word).any(|(i, _)| {
        let before = sql[..i].chars().next_back();
        let after = sql[i + word.len()..].chars().next();
        let ident = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
        !ident(before) && !ident(after)
    })
}

fn adopt_in_tx(
    conn: &mut Connection,
    opts: &AdoptOptions,
    entities: &Migration,
) -> Result<Option<AdoptionReport>> {
    let started = Instant::now();
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    // Another process may have adopted the file while this one waited for the lock.
    if !needs_adoption(&tx)? {
        return Ok(None);
    }
    tx.execute_batch(SQLITE_LEDGER)?;
    let sources: Vec<Source> = TABLES.iter().map(|t| inspect(&tx, t)).collect::<Result<_>>()?;
    let present: Vec<&Source> = sources.iter().filter(|s| s.present).collect();

    // Shape problems: refused before anything changes.
    let mut problems = Vec::new();
    for s in &present {
        problems.extend(shape_problems(s, opts.extra_columns == ExtraColumns::SetAside));
    }
    let triggers: Vec<(String, String, String)> = tx
        .prepare("SELECT name, tbl_name, coalesce(sql, '') FROM sqlite_master WHERE type = 'trigger'")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut warnings = Vec::new();
    for (name, on, sql) in &triggers {
        if present.iter().any(|s| s.name.eq_ignore_ascii_case(on)) {
            problems.push(format!(
                "trigger {name} on {on}: its writes would bypass the outbox and its values may break the new CHECKs; \
                 drop it (the bridge takes over what it did) before adopting"
            ));
        } else if let Some(t) = present.iter().find(|s| mentions(sql, s.table.name)) {
            warnings.push(format!(
                "trigger {name} on {on} mentions {}: changes it makes there bypass the outbox",
                t.table.name
            ));
        }
    }
    if !problems.is_empty() {
        return Err(Error::Migration(format!(
            "adoption refused, nothing was changed:\n  - {}",
            problems.join("\n  - ")
        )));
    }
    let views_before = working_views(&tx)?;

    // Legacy indexes go (their names may be ours); the legacy tables step aside.
    let mut dropped_indexes = Vec::new();
    for s in &present {
        let indexes: Vec<(String, String)> = tx
            .prepare("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ?1 AND sql IS NOT NULL")?
            .query_map([&s.name], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        for (name, sql) in indexes {
            tx.execute_batch(&format!("DROP INDEX {}", quote(&name)))?;
            dropped_indexes.push(DroppedIndex { table: s.table.name.into(), name, sql });
        }
        tx.execute_batch(&format!(
            "ALTER TABLE {} RENAME TO {}",
            quote(&s.name),
            quote(&legacy_name(s.table.name))
        ))?;
    }
    tx.execute_batch(entities.sql).map_err(|e| {
        Error::Migration(format!("sqlite: adoption: version 1 ({}) failed: {e}", entities.name))
    })?;
    tx.execute_batch(ADOPTION_DDL)?;
    if opts.extra_columns == ExtraColumns::SetAside && present.iter().any(|s| !s.extra.is_empty()) {
        tx.execute_batch(EXTRAS_DDL)?;
    }

    let held_at = now_timestamp();
    let mut tables = Vec::new();
    let mut refused: Vec<HeldOutRow> = Vec::new();
    let mut refused_total = 0u64;
    for s in &present {
        let t = copy_table(&tx, s, opts, &held_at, &mut refused, &mut refused_total)?;
        tables.push(t);
    }
    for s in &present {
        tx.execute_batch(&format!("DROP TABLE {}", quote(&legacy_name(s.table.name))))?;
    }

    let broken: Vec<String> = views_before.difference(&working_views(&tx)?).cloned().collect();
    if !broken.is_empty() {
        return Err(Error::Migration(format!(
            "adoption refused, nothing was changed: view(s) {} would stop working (they use a column the target \
             schema does not have); change or drop them first",
            broken.join(", ")
        )));
    }
    if refused_total > 0 {
        let mut msg = format!(
            "adoption refused, nothing was changed: {refused_total} row(s) cannot be brought into the target schema:\n"
        );
        for h in refused.iter().take(20) {
            for r in &h.reasons {
                msg.push_str(&format!(
                    "  {} rowid {} key {:?}: {}{}\n",
                    h.table,
                    h.rowid.map(|r| r.to_string()).unwrap_or_else(|| "-".into()),
                    h.key,
                    r.column
                        .as_ref()
                        .map(|c| format!("{c} = {}: ", r.value.as_deref().unwrap_or("")))
                        .unwrap_or_default(),
                    r.reason
                ));
            }
        }
        if refused_total > 20 {
            msg.push_str(&format!("  … and {} more row(s)\n", refused_total - 20));
        }
        msg.push_str(
            "`dualwrite preflight` lists them all. Fix them in the file, pin a rule in [conversions], or set \
             [adoption] unconvertible = \"hold_out\" to keep them, unchanged, in _dualwrite_adoption_holdouts",
        );
        return Err(Error::Migration(msg));
    }

    // Orphans are kept (SQLite accepts existing ones); PostgreSQL will refuse them.
    let mut orphans: BTreeMap<(String, String), u64> = BTreeMap::new();
    {
        let mut stmt = tx.prepare("SELECT \"table\", parent FROM pragma_foreign_key_check")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            *orphans.entry((r.get(0)?, r.get(1)?)).or_default() += 1;
        }
    }
    for ((child, parent), n) in &orphans {
        match tables.iter_mut().find(|t| &t.table == child) {
            Some(t) => t.orphans_kept += n,
            None => warnings.push(format!(
                "{n} row(s) of the monolith's table {child} reference a {parent} row that is not there after adoption"
            )),
        }
    }

    let created = sources.iter().filter(|s| !s.present).map(|s| s.table.name.to_string()).collect();
    let report = AdoptionReport {
        adopted_at: held_at,
        duration_ms: started.elapsed().as_millis() as u64,
        rows_held_out: tables.iter().map(|t| t.rows_held_out).sum(),
        tables,
        created,
        dropped_indexes,
        warnings,
    };
    ledger::record_sqlite(&tx, entities, report.duration_ms as i64)?;
    tx.execute(
        "INSERT INTO _dualwrite_adoption_log (adopted_at, report) VALUES (?1, ?2)",
        rusqlite::params![
            report.adopted_at,
            serde_json::to_string(&report).map_err(|e| Error::Internal(e.to_string()))?
        ],
    )?;
    tx.commit()?;
    tracing::info!(
        tables = report.tables.len(),
        held_out = report.rows_held_out,
        ms = report.duration_ms,
        "sqlite: adopted the monolith's tables"
    );
    Ok(Some(report))
}

fn copy_table(
    tx: &Connection,
    s: &Source,
    opts: &AdoptOptions,
    held_at: &str,
    refused: &mut Vec<HeldOutRow>,
    refused_total: &mut u64,
) -> Result<TableAdoption> {
    let table = s.table;
    let rules = s.rules(&opts.overrides);
    let from = legacy_name(table.name);
    let before: i64 = tx.query_row(&format!("SELECT count(*) FROM {}", quote(&from)), [], |r| r.get(0))?;
    let cols = table.column_names().collect::<Vec<_>>();
    let mut insert = tx.prepare(&format!(
        "INSERT INTO {} (rowid, {}) VALUES ({})",
        table.name,
        cols.join(", "),
        (1..=cols.len() + 1).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ")
    ))?;
    let mut hold = tx.prepare(
        "INSERT INTO _dualwrite_adoption_holdouts (table_name, source_rowid, row_key, row_json, reasons, held_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    let set_aside = opts.extra_columns == ExtraColumns::SetAside && !s.extra.is_empty();
    let mut extras = if set_aside {
        Some(tx.prepare(
            "INSERT INTO _dualwrite_adoption_extras (table_name, row_key, source_rowid, columns_json) VALUES (?1, ?2, ?3, ?4)",
        )?)
    } else {
        None
    };
    // The legacy row's own column names, for the held-out copy.
    let names: Vec<&str> =
        s.columns.iter().flatten().map(String::as_str).chain(s.extra.iter().map(String::as_str)).collect();
    let mut report = TableAdoption {
        table: table.name.into(),
        rows_before: before as u64,
        rows_adopted: 0,
        rows_converted: 0,
        rows_held_out: 0,
        filled_columns: s.absent().iter().map(|c| c.to_string()).collect(),
        extra_columns: if set_aside { s.extra.clone() } else { vec![] },
        orphans_kept: 0,
        rules: table
            .columns
            .iter()
            .zip(&rules.columns)
            .map(|(c, r)| (c.name.to_string(), r.describe(c)))
            .collect(),
    };
    let mut dedupe = Dedupe::new(table);
    let mut stmt = tx.prepare(&s.select_sql(&from, true))?;
    let mut rows = stmt.query([])?;
    let n = table.columns.len();
    let mut ordinal = 0i64;
    while let Some(r) = rows.next()? {
        ordinal += 1;
        let rowid: Option<i64> = r.get(0)?;
        let mut raw = Vec::with_capacity(n);
        for i in 0..n {
            raw.push(r.get_ref(1 + i)?);
        }
        let mut extra_raw = Vec::with_capacity(s.extra.len());
        for i in 0..s.extra.len() {
            extra_raw.push(r.get_ref(1 + n + i)?);
        }
        let key = key_text(table, &raw);
        let outcomes = convert_columns(table, &raw, &rules).map_err(|e| Error::Internal(format!("{e:?}")))?;
        let changed = outcomes.iter().any(|o| o.changed);
        let reject = |reason: String| Reject {
            table: table.name.into(),
            key: key.clone(),
            column: None,
            value: None,
            reason,
        };
        let verdict = match assemble(table, &raw, outcomes) {
            Err(rejects) => Err(rejects),
            Ok(row) => match dedupe.find(&row) {
                Some((c, earlier)) => {
                    Err(vec![reject(duplicate_reason(table, &c, earlier, rowid.is_some()))])
                }
                None => {
                    let mut values: Vec<crate::schema::SqlValue> = Vec::with_capacity(n + 1);
                    values
                        .push(rowid.map_or(crate::schema::SqlValue::Null, crate::schema::SqlValue::Integer));
                    values.extend(to_sqlite_values(table, &row)?);
                    match insert.execute(rusqlite::params_from_iter(values.iter())) {
                        Ok(_) => {
                            dedupe.take(&row, rowid.unwrap_or(ordinal));
                            Ok(row)
                        }
                        Err(rusqlite::Error::SqliteFailure(e, msg))
                            if e.code == rusqlite::ErrorCode::ConstraintViolation =>
                        {
                            Err(vec![reject(format!(
                                "SQLite refused it: {}",
                                msg.unwrap_or_else(|| e.to_string())
                            ))])
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            },
        };
        match verdict {
            Ok(row) => {
                report.rows_adopted += 1;
                if changed {
                    report.rows_converted += 1;
                }
                if let Some(st) = extras.as_mut() {
                    if extra_raw.iter().any(|v| !matches!(v, ValueRef::Null)) {
                        let json =
                            typed_json(s.extra.iter().map(String::as_str).zip(extra_raw.iter().copied()));
                        st.execute(rusqlite::params![
                            table.name,
                            row[table.key].as_str().unwrap_or_default(),
                            rowid,
                            Value::Object(json).to_string()
                        ])?;
                    }
                }
            }
            Err(reasons) => {
                report.rows_held_out += 1;
                let all = raw
                    .iter()
                    .zip(&s.columns)
                    .filter(|(_, c)| c.is_some())
                    .map(|(v, _)| *v)
                    .chain(extra_raw.iter().copied());
                let row_json = typed_json(names.iter().copied().zip(all));
                match opts.unconvertible {
                    Unconvertible::HoldOut => {
                        hold.execute(rusqlite::params![
                            table.name,
                            rowid,
                            key,
                            Value::Object(row_json).to_string(),
                            serde_json::to_string(&reasons).map_err(|e| Error::Internal(e.to_string()))?,
                            held_at
                        ])?;
                    }
                    Unconvertible::Refuse => {
                        *refused_total += 1;
                        if refused.len() < 1000 {
                            refused.push(HeldOutRow {
                                id: 0,
                                table: table.name.into(),
                                rowid,
                                key: key.clone(),
                                row: Map::new(),
                                reasons,
                            });
                        }
                    }
                }
            }
        }
    }
    // Never lose a row: every legacy row is in the new table or held out.
    let after: i64 = tx.query_row(&format!("SELECT count(*) FROM {}", table.name), [], |r| r.get(0))?;
    if after as u64 != report.rows_adopted || report.rows_adopted + report.rows_held_out != report.rows_before
    {
        return Err(Error::Internal(format!(
            "adoption of {}: {} rows before, {} adopted ({} in the table), {} held out; rolled back",
            table.name, report.rows_before, report.rows_adopted, after, report.rows_held_out
        )));
    }
    Ok(report)
}

/// Column name → value, typed so that it reads back exactly: NULL, integer and real as JSON
/// (a real always with a `.` or an exponent), text as a JSON string, a BLOB as
/// `{"$blob": "<hex>"}`, text that is not UTF-8 as `{"$text_hex": "<hex>"}`.
fn typed_json<'a>(values: impl Iterator<Item = (&'a str, ValueRef<'a>)>) -> Map<String, Value> {
    values
        .map(|(name, v)| {
            let j = match v {
                ValueRef::Null => Value::Null,
                ValueRef::Integer(n) => Value::from(n),
                ValueRef::Real(f) => {
                    serde_json::Number::from_f64(f).map(Value::Number).unwrap_or(Value::Null)
                }
                ValueRef::Text(t) => match std::str::from_utf8(t) {
                    Ok(s) => Value::String(s.into()),
                    Err(_) => serde_json::json!({ "$text_hex": hex::encode(t) }),
                },
                ValueRef::Blob(b) => serde_json::json!({ "$blob": hex::encode(b) }),
            };
            (name.to_string(), j)
        })
        .collect()
}

/// A held-out row's columns as the SQLite values they were (the inverse of the `row_json`
/// encoding): the way to put a fixed row back, or to read one.
pub fn decode_holdout(row: &Map<String, Value>) -> Result<Vec<(String, rusqlite::types::Value)>> {
    use rusqlite::types::Value as V;
    let bad = |c: &str| Error::Internal(format!("held-out row: column {c} is not in the row_json encoding"));
    row.iter()
        .map(|(c, v)| {
            let value = match v {
                Value::Null => V::Null,
                Value::Number(n) if n.is_i64() => V::Integer(n.as_i64().unwrap_or_default()),
                Value::Number(n) => V::Real(n.as_f64().ok_or_else(|| bad(c))?),
                Value::String(s) => V::Text(s.clone()),
                Value::Object(o) => match (o.get("$blob"), o.get("$text_hex")) {
                    (Some(Value::String(h)), None) => V::Blob(hex::decode(h).map_err(|_| bad(c))?),
                    (None, Some(Value::String(h))) => {
                        // Not UTF-8: the bytes are returned as a BLOB (a String cannot hold them).
                        V::Blob(hex::decode(h).map_err(|_| bad(c))?)
                    }
                    _ => return Err(bad(c)),
                },
                _ => return Err(bad(c)),
            };
            Ok((c.clone(), value))
        })
        .collect()
}

/// Every held-out row of the file (empty when nothing was held out or the file was not adopted).
pub fn holdouts(conn: &Connection) -> Result<Vec<HeldOutRow>> {
    if !table_exists(conn, "_dualwrite_adoption_holdouts")? {
        return Ok(vec![]);
    }
    let mut stmt = conn.prepare(
        "SELECT id, table_name, source_rowid, row_key, row_json, reasons FROM _dualwrite_adoption_holdouts ORDER BY id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Option<i64>>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, String>(5)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, table, rowid, key, row_json, reasons) = row?;
        let bad = |e: serde_json::Error| Error::Internal(format!("_dualwrite_adoption_holdouts {id}: {e}"));
        out.push(HeldOutRow {
            id,
            table,
            rowid,
            key,
            row: serde_json::from_str(&row_json).map_err(bad)?,
            reasons: serde_json::from_str(&reasons).map_err(bad)?,
        });
    }
    Ok(out)
}

impl AdoptionReport {
    /// A few lines for the terminal.
    pub fn render(&self) -> String {
        let mut out = format!(
            "sqlite: adopted the monolith's tables in {} ms ({} row(s) held out)\n",
            self.duration_ms, self.rows_held_out
        );
        for t in &self.tables {
            out.push_str(&format!(
                "  {:<22} {:>9} rows: {:>9} adopted ({} converted), {} held out{}{}{}\n",
                t.table,
                t.rows_before,
                t.rows_adopted,
                t.rows_converted,
                t.rows_held_out,
                if t.filled_columns.is_empty() {
                    String::new()
                } else {
                    format!("; filled {}", t.filled_columns.join(", "))
                },
                if t.extra_columns.is_empty() {
                    String::new()
                } else {
                    format!("; set aside {}", t.extra_columns.join(", "))
                },
                if t.orphans_kept > 0 {
                    format!("; {} orphaned foreign key(s) kept", t.orphans_kept)
                } else {
                    String::new()
                },
            ));
        }
        if !self.created.is_empty() {
            out.push_str(&format!("  created empty: {}\n", self.created.join(", ")));
        }
        for i in &self.dropped_indexes {
            out.push_str(&format!("  dropped legacy index {} on {}: {}\n", i.name, i.table, i.sql));
        }
        for w in &self.warnings {
            out.push_str(&format!("  warning: {w}\n"));
        }
        if self.rows_held_out > 0 {
            out.push_str("  held-out rows: SELECT * FROM _dualwrite_adoption_holdouts (unchanged, with their reasons)\n");
        }
        out
    }
}
