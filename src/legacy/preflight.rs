//! `dualwrite preflight`: profile every column of every table before a backfill, read-only.
//!
//! Works on the monolith's own file before adoption (its raw tables, any column types, missing or
//! extra columns) and on a migrated file. For each table: rows, rows that convert cleanly (and how
//! many needed a conversion), rows that would be rejected; per column: the rule in effect,
//! `typeof()` counts, NULL and `''` counts, the detected forms (timestamp formats, JSON vs plain
//! text, uuid spellings, …), values that will not convert with up to N example keys; duplicate
//! keys and unique values PostgreSQL would refuse (after conversion: `ABC…` and `abc…` are the same
//! uuid); orphaned foreign keys (the parent is missing, or would itself be rejected). Also the
//! rows held out by an earlier adoption, and shape problems that stop adoption.
//!
//! The file is opened read-only and read in one transaction (one snapshot for every table).

use super::convert::{assemble, convert_columns, key_text, render_value, Overrides};
use super::source::{inspect, shape_problems, uuid_key, Dedupe};
use crate::error::{Error, Result};
use crate::schema::{Table, TABLES};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

#[derive(Clone, Debug)]
pub struct PreflightOptions {
    /// The configuration's `[conversions]`.
    pub overrides: Overrides,
    /// Example keys kept per problem (per column, per duplicate set, per foreign key).
    pub examples: usize,
    /// Report only these tables (all are still read: orphans need their parents).
    pub tables: Option<Vec<String>>,
    /// `[adoption] extra_columns = "set_aside"`: extra legacy columns are not a blocking problem.
    pub extra_columns_allowed: bool,
}

impl Default for PreflightOptions {
    fn default() -> Self {
        PreflightOptions {
            overrides: Overrides::none(),
            examples: 5,
            tables: None,
            extra_columns_allowed: false,
        }
    }
}

/// The whole report (`--json` prints it as is).
#[derive(Clone, Debug, Serialize)]
pub struct PreflightReport {
    pub file: String,
    /// `legacy` (the monolith's own tables, not adopted yet) or `migrated`.
    pub state: String,
    /// The SQLite schema version (0 for a legacy file).
    pub schema_version: i64,
    pub tables: Vec<TableReport>,
    pub rows: u64,
    pub rows_rejected: u64,
    pub rows_held_out: u64,
    /// Problems no row-level rule fixes (a missing required column, extra columns, a view).
    pub blocking: Vec<String>,
    /// A backfill (after adoption, for a legacy file) would copy every row: nothing rejected,
    /// held out or blocking.
    pub clean: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct TableReport {
    pub table: String,
    pub present: bool,
    pub rows: u64,
    /// Rows that convert and would be accepted by PostgreSQL.
    pub rows_clean: u64,
    /// Of the clean rows, those with at least one converted value.
    pub rows_converted: u64,
    /// Rows that would be rejected: a value that does not convert, a duplicate, an orphan.
    pub rows_rejected: u64,
    /// Rows kept aside by an earlier adoption (`_dualwrite_adoption_holdouts`).
    pub held_out: u64,
    pub missing_columns: Vec<String>,
    pub extra_columns: Vec<String>,
    pub columns: Vec<ColumnReport>,
    pub duplicates: Vec<DuplicateReport>,
    pub orphans: Vec<OrphanReport>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ColumnReport {
    pub column: String,
    /// The PostgreSQL type.
    pub target: String,
    pub nullable: bool,
    /// The file has this column.
    pub present: bool,
    /// The rule in effect, in words.
    pub rule: String,
    /// Set in `[conversions]`.
    pub configured: bool,
    /// `typeof()` counts: null, integer, real, text, blob.
    pub types: BTreeMap<String, u64>,
    pub nulls: u64,
    pub empty_strings: u64,
    /// Values that convert but not unchanged.
    pub converted: u64,
    /// Values that will not convert.
    pub unconvertible: u64,
    /// Non-NULL, non-empty values by detected form (timestamps by format, JSON vs plain text, …).
    pub formats: BTreeMap<String, u64>,
    pub examples: Vec<Example>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Example {
    pub key: String,
    /// The value as found (redacted for a secret column); empty for a row-level problem.
    pub value: String,
    pub reason: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct DuplicateReport {
    /// The key or unique columns.
    pub columns: Vec<String>,
    /// Rows that repeat an earlier row's values (the first, in rowid order, is kept).
    pub rows: u64,
    pub examples: Vec<Example>,
}

#[derive(Clone, Debug, Serialize)]
pub struct OrphanReport {
    pub column: String,
    pub references: String,
    pub rows: u64,
    /// No such parent row in the file.
    pub parent_missing: u64,
    /// The parent is there but would be rejected itself.
    pub parent_rejected: u64,
    pub examples: Vec<Example>,
}

#[derive(Default)]
struct ParentKeys {
    ok: HashSet<u128>,
    rejected: HashSet<u128>,
}

/// Profile the SQLite file at `path`. Reads only: the file is opened read-only.
pub fn preflight(path: &Path, opts: &PreflightOptions) -> Result<PreflightReport> {
    if !path.is_file() {
        return Err(Error::Config(format!("no SQLite file at {}", path.display())));
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
    )?;
    conn.busy_timeout(crate::store::sqlite::BUSY_TIMEOUT)?;
    if let Some(names) = &opts.tables {
        for n in names {
            crate::schema::require_table(n)?;
        }
    }
    // One read transaction: every table is read from the same snapshot.
    conn.execute_batch("BEGIN DEFERRED")?;
    let report = profile(&conn, path, opts);
    let _ = conn.execute_batch("COMMIT");
    report
}

fn table_exists(conn: &Connection, name: &str) -> Result<bool> {
    Ok(conn
        .query_row("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1", [name], |_| Ok(()))
        .optional()?
        .is_some())
}

fn profile(conn: &Connection, path: &Path, opts: &PreflightOptions) -> Result<PreflightReport> {
    let version = crate::ledger::sqlite_applied_version(conn)?;
    let mut held_out: HashMap<String, u64> = HashMap::new();
    if table_exists(conn, "_dualwrite_adoption_holdouts")? {
        let mut stmt =
            conn.prepare("SELECT table_name, count(*) FROM _dualwrite_adoption_holdouts GROUP BY 1")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            held_out.insert(r.get(0)?, r.get::<_, i64>(1)? as u64);
        }
    }
    let referenced: HashSet<&str> =
        TABLES.iter().flat_map(|t| t.foreign_keys.iter().map(|f| f.references)).collect();
    let mut parents: HashMap<&'static str, ParentKeys> = HashMap::new();
    let mut blocking = Vec::new();
    let mut tables = Vec::new();
    for table in TABLES {
        let src = inspect(conn, table)?;
        blocking.extend(shape_problems(&src, opts.extra_columns_allowed));
        let mut report =
            profile_table(conn, table, &src, opts, &mut parents, referenced.contains(table.name))?;
        report.held_out = held_out.get(table.name).copied().unwrap_or(0);
        if report.held_out > 0 {
            blocking.push(format!(
                "{}: {} row(s) were held out at adoption (_dualwrite_adoption_holdouts) and will not be copied",
                table.name, report.held_out
            ));
        }
        let wanted = opts.tables.as_ref().is_none_or(|ts| ts.iter().any(|t| t == table.name));
        if wanted {
            tables.push(report);
        }
    }
    if let Some(ts) = &opts.tables {
        blocking.retain(|b| ts.iter().any(|t| b.starts_with(t.as_str())));
    }
    let rows = tables.iter().map(|t| t.rows).sum();
    let rows_rejected = tables.iter().map(|t| t.rows_rejected).sum();
    let rows_held_out = tables.iter().map(|t| t.held_out).sum();
    Ok(PreflightReport {
        file: path.display().to_string(),
        state: if version > 0 { "migrated".into() } else { "legacy".into() },
        schema_version: version,
        clean: rows_rejected == 0 && rows_held_out == 0 && blocking.is_empty(),
        tables,
        rows,
        rows_rejected,
        rows_held_out,
        blocking,
    })
}

fn type_name(v: ValueRef<'_>) -> &'static str {
    match v {
        ValueRef::Null => "null",
        ValueRef::Integer(_) => "integer",
        ValueRef::Real(_) => "real",
        ValueRef::Text(_) => "text",
        ValueRef::Blob(_) => "blob",
    }
}

fn profile_table(
    conn: &Connection,
    table: &'static Table,
    src: &super::source::Source,
    opts: &PreflightOptions,
    parents: &mut HashMap<&'static str, ParentKeys>,
    is_parent: bool,
) -> Result<TableReport> {
    let rules = src.rules(&opts.overrides);
    let mut columns: Vec<ColumnReport> = table
        .columns
        .iter()
        .zip(&rules.columns)
        .zip(&src.columns)
        .map(|((c, r), s)| ColumnReport {
            column: c.name.into(),
            target: c.ty.pg_type().into(),
            nullable: c.nullable,
            present: s.is_some(),
            rule: r.describe(c),
            configured: r.configured,
            types: ["null", "integer", "real", "text", "blob"].iter().map(|t| (t.to_string(), 0)).collect(),
            nulls: 0,
            empty_strings: 0,
            converted: 0,
            unconvertible: 0,
            formats: BTreeMap::new(),
            examples: vec![],
        })
        .collect();
    let mut report = TableReport {
        table: table.name.into(),
        present: src.present,
        rows: 0,
        rows_clean: 0,
        rows_converted: 0,
        rows_rejected: 0,
        held_out: 0,
        missing_columns: if src.present {
            src.absent().iter().map(|s| s.to_string()).collect()
        } else {
            vec![]
        },
        extra_columns: src.extra.clone(),
        columns: vec![],
        duplicates: vec![],
        orphans: table
            .foreign_keys
            .iter()
            .map(|f| OrphanReport {
                column: f.column.into(),
                references: f.references.into(),
                rows: 0,
                parent_missing: 0,
                parent_rejected: 0,
                examples: vec![],
            })
            .collect(),
    };
    let mut duplicates: Vec<DuplicateReport> = std::iter::once(vec![table.key])
        .chain(table.unique.iter().map(|u| u.to_vec()))
        .map(|cols| DuplicateReport {
            columns: cols.iter().map(|c| c.to_string()).collect(),
            rows: 0,
            examples: vec![],
        })
        .collect();
    let mut keys = ParentKeys::default();
    if src.present && src.kind == "table" {
        let key_index = table.columns.iter().position(|c| c.name == table.key).unwrap_or(0);
        let mut dedupe = Dedupe::new(table);
        let mut stmt = conn.prepare(&src.select_sql(&src.name, false))?;
        let mut rows = stmt.query([])?;
        let n = table.columns.len();
        let mut ordinal = 0i64;
        while let Some(r) = rows.next()? {
            ordinal += 1;
            report.rows += 1;
            let rowid: Option<i64> = r.get(0)?;
            let mut raw = Vec::with_capacity(n);
            for i in 0..n {
                raw.push(r.get_ref(1 + i)?);
            }
            let key = key_text(table, &raw);
            for ((c, v), present) in columns.iter_mut().zip(&raw).zip(&src.columns) {
                if present.is_none() {
                    continue;
                }
                *c.types.entry(type_name(*v).into()).or_default() += 1;
                match v {
                    ValueRef::Null => c.nulls += 1,
                    ValueRef::Text([]) => c.empty_strings += 1,
                    _ => {}
                }
            }
            let outcomes =
                convert_columns(table, &raw, &rules).map_err(|e| Error::Internal(format!("{e:?}")))?;
            let key_value = outcomes[key_index].result.as_ref().ok().and_then(uuid_key);
            for (((c, o), v), col) in columns.iter_mut().zip(&outcomes).zip(&raw).zip(table.columns) {
                if !matches!(o.label, "null" | "empty" | "absent") {
                    *c.formats.entry(o.label.into()).or_default() += 1;
                }
                match &o.result {
                    Ok(_) if o.changed => c.converted += 1,
                    Ok(_) => {}
                    Err(reason) => {
                        c.unconvertible += 1;
                        if c.examples.len() < opts.examples {
                            c.examples.push(Example {
                                key: key.clone(),
                                value: render_value(col, *v),
                                reason: reason.clone(),
                            });
                        }
                    }
                }
            }
            let changed = outcomes.iter().any(|o| o.changed);
            let row = match assemble(table, &raw, outcomes) {
                Ok(row) => row,
                Err(_) => {
                    report.rows_rejected += 1;
                    if let Some(k) = key_value {
                        keys.rejected.insert(k);
                    }
                    continue;
                }
            };
            let here = rowid.unwrap_or(ordinal);
            if let Some((cols, earlier)) = dedupe.check(&row, here) {
                report.rows_rejected += 1;
                if let Some(k) = key_value {
                    keys.rejected.insert(k);
                }
                if let Some(d) = duplicates
                    .iter_mut()
                    .find(|d| d.columns.iter().map(String::as_str).eq(cols.iter().copied()))
                {
                    d.rows += 1;
                    if d.examples.len() < opts.examples {
                        d.examples.push(Example {
                            key: key.clone(),
                            value: String::new(),
                            reason: duplicate_reason(table, &cols, earlier, rowid.is_some()),
                        });
                    }
                }
                continue;
            }
            let mut orphan = false;
            for (fk, o) in table.foreign_keys.iter().zip(report.orphans.iter_mut()) {
                let Some(child) = row.get(fk.column).and_then(uuid_key) else { continue };
                let parent = parents.get(fk.references);
                if parent.is_some_and(|p| p.ok.contains(&child)) {
                    continue;
                }
                orphan = true;
                o.rows += 1;
                let rejected = parent.is_some_and(|p| p.rejected.contains(&child));
                if rejected {
                    o.parent_rejected += 1;
                } else {
                    o.parent_missing += 1;
                }
                if o.examples.len() < opts.examples {
                    o.examples.push(Example {
                        key: key.clone(),
                        value: row[fk.column].as_str().unwrap_or_default().to_string(),
                        reason: if rejected {
                            format!("{} {} would itself be rejected", fk.references, row[fk.column])
                        } else {
                            format!("no {} row with this key", fk.references)
                        },
                    });
                }
            }
            if orphan {
                report.rows_rejected += 1;
                if let Some(k) = key_value {
                    keys.rejected.insert(k);
                }
                continue;
            }
            report.rows_clean += 1;
            if changed {
                report.rows_converted += 1;
            }
            if is_parent {
                if let Some(k) = key_value {
                    keys.ok.insert(k);
                }
            }
        }
    }
    if is_parent {
        parents.insert(table.name, keys);
    }
    report.columns = columns;
    report.duplicates = duplicates.into_iter().filter(|d| d.rows > 0).collect();
    report.orphans.retain(|o| o.rows > 0);
    Ok(report)
}

pub(crate) fn duplicate_reason(table: &Table, cols: &[&str], earlier: i64, is_rowid: bool) -> String {
    let what = if cols == [table.key] { "key" } else { "unique value" };
    format!(
        "duplicate {what} ({}) of the row kept with {} {earlier}",
        cols.join(", "),
        if is_rowid { "rowid" } else { "row number" }
    )
}

impl PreflightReport {
    /// The CLI's exit code for this report: 0 when a backfill can run clean, 3 when it would
    /// produce rejects (or something blocks it). 1 is kept for "preflight could not run" and 2
    /// for `verify`'s "the stores differ", as in every command (the README's exit-code table).
    pub fn exit_code(&self) -> u8 {
        if self.clean {
            0
        } else {
            3
        }
    }

    fn headline(&self) -> String {
        let state = if self.state == "legacy" {
            "legacy file: the monolith's own tables, not adopted yet".to_string()
        } else {
            format!("migrated, schema version {}", self.schema_version)
        };
        format!("{} ({state})", self.file)
    }

    fn verdict(&self) -> String {
        if self.clean {
            format!("clean: all {} rows convert; a backfill can run without rejects (exit 0)", self.rows)
        } else {
            format!(
                "NOT clean: {} of {} rows would be rejected, {} held out, {} blocking problem(s) (exit 1)",
                self.rows_rejected,
                self.rows,
                self.rows_held_out,
                self.blocking.len()
            )
        }
    }

    /// The terminal report: per table a line of counts, a column table, the problems.
    pub fn render_text(&self) -> String {
        let mut out = format!("preflight {}\n", self.headline());
        let absent: Vec<&str> = self.tables.iter().filter(|t| !t.present).map(|t| t.table.as_str()).collect();
        if !absent.is_empty() {
            out.push_str(&format!("not in the file (adoption creates them empty): {}\n", absent.join(", ")));
        }
        for t in self.tables.iter().filter(|t| t.present) {
            out.push('\n');
            out.push_str(&format!(
                "{}: {} rows, {} clean ({} converted), {} would be rejected{}\n",
                t.table,
                t.rows,
                t.rows_clean,
                t.rows_converted,
                t.rows_rejected,
                if t.held_out > 0 { format!(", {} held out at adoption", t.held_out) } else { String::new() }
            ));
            if !t.missing_columns.is_empty() {
                out.push_str(&format!("  missing columns: {}\n", t.missing_columns.join(", ")));
            }
            if !t.extra_columns.is_empty() {
                out.push_str(&format!("  extra columns: {}\n", t.extra_columns.join(", ")));
            }
            out.push_str(&format!(
                "  {:<22} {:<11} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7}  formats\n",
                "column", "target", "null", "integer", "real", "text", "blob", "''", "conv", "bad"
            ));
            for c in &t.columns {
                let target = match c.target.as_str() {
                    "timestamp with time zone" => "timestamptz",
                    other => other,
                };
                let name = if c.present { c.column.clone() } else { format!("{} (absent)", c.column) };
                let formats =
                    c.formats.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ");
                out.push_str(&format!(
                    "  {:<22} {:<11} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7}  {}\n",
                    name,
                    target,
                    c.types["null"],
                    c.types["integer"],
                    c.types["real"],
                    c.types["text"],
                    c.types["blob"],
                    c.empty_strings,
                    c.converted,
                    c.unconvertible,
                    formats
                ));
            }
            out.push_str("  rules:\n");
            for c in &t.columns {
                out.push_str(&format!("    {:<20} {}\n", c.column, c.rule));
            }
            for c in t.columns.iter().filter(|c| c.unconvertible > 0) {
                out.push_str(&format!(
                    "  {}: {} value(s) will not convert, e.g.\n",
                    c.column, c.unconvertible
                ));
                for e in &c.examples {
                    out.push_str(&format!("    key {:?}: {} — {}\n", e.key, e.value, e.reason));
                }
            }
            for d in &t.duplicates {
                out.push_str(&format!(
                    "  duplicates on ({}): {} row(s) PostgreSQL would refuse, e.g.\n",
                    d.columns.join(", "),
                    d.rows
                ));
                for e in &d.examples {
                    out.push_str(&format!("    key {:?}: {}\n", e.key, e.reason));
                }
            }
            for o in &t.orphans {
                out.push_str(&format!(
                    "  orphaned {} → {}: {} row(s) ({} parent missing, {} parent rejected), e.g.\n",
                    o.column, o.references, o.rows, o.parent_missing, o.parent_rejected
                ));
                for e in &o.examples {
                    out.push_str(&format!(
                        "    key {:?}: {} = {} — {}\n",
                        e.key, o.column, e.value, e.reason
                    ));
                }
            }
        }
        if !self.blocking.is_empty() {
            out.push_str("\nblocking:\n");
            for b in &self.blocking {
                out.push_str(&format!("  - {b}\n"));
            }
        }
        out.push_str(&format!("\n{}\n", self.verdict()));
        out
    }

    /// The report as Markdown, for the migration log.
    pub fn render_markdown(&self) -> String {
        let cell = |s: &str| s.replace('|', "\\|").replace('\n', " ");
        let mut out = format!("## Preflight: {}\n\n**{}**\n", cell(&self.headline()), self.verdict());
        if !self.blocking.is_empty() {
            out.push_str("\n### Blocking\n\n");
            for b in &self.blocking {
                out.push_str(&format!("- {}\n", cell(b)));
            }
        }
        let absent: Vec<&str> = self.tables.iter().filter(|t| !t.present).map(|t| t.table.as_str()).collect();
        if !absent.is_empty() {
            out.push_str(&format!(
                "\nNot in the file (adoption creates them empty): {}.\n",
                absent.join(", ")
            ));
        }
        for t in self.tables.iter().filter(|t| t.present) {
            out.push_str(&format!("\n### {}\n\n", t.table));
            out.push_str(&format!(
                "{} rows: {} clean ({} converted), {} would be rejected, {} held out.\n",
                t.rows, t.rows_clean, t.rows_converted, t.rows_rejected, t.held_out
            ));
            if !t.missing_columns.is_empty() {
                out.push_str(&format!("Missing columns: {}.\n", t.missing_columns.join(", ")));
            }
            if !t.extra_columns.is_empty() {
                out.push_str(&format!("Extra columns: {}.\n", t.extra_columns.join(", ")));
            }
            out.push_str(
                "\n| column | target | rule | typeof | NULL | '' | converted | unconvertible | formats |\n\
                 | --- | --- | --- | --- | ---: | ---: | ---: | ---: | --- |\n",
            );
            for c in &t.columns {
                let types = c
                    .types
                    .iter()
                    .filter(|(_, n)| **n > 0)
                    .map(|(k, n)| format!("{k} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let formats =
                    c.formats.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ");
                out.push_str(&format!(
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                    c.column,
                    c.target,
                    cell(&c.rule),
                    if c.present { types } else { "absent".into() },
                    c.nulls,
                    c.empty_strings,
                    c.converted,
                    c.unconvertible,
                    formats
                ));
            }
            let mut problems = Vec::new();
            for c in t.columns.iter().filter(|c| c.unconvertible > 0) {
                for e in &c.examples {
                    problems.push(format!(
                        "`{}` key `{}`: {} — {}",
                        c.column,
                        cell(&e.key),
                        cell(&e.value),
                        cell(&e.reason)
                    ));
                }
            }
            for d in &t.duplicates {
                for e in &d.examples {
                    problems.push(format!(
                        "duplicate ({}) key `{}`: {}",
                        d.columns.join(", "),
                        cell(&e.key),
                        cell(&e.reason)
                    ));
                }
            }
            for o in &t.orphans {
                for e in &o.examples {
                    problems.push(format!(
                        "orphan `{}` → {} key `{}`: {} — {}",
                        o.column,
                        o.references,
                        cell(&e.key),
                        cell(&e.value),
                        cell(&e.reason)
                    ));
                }
            }
            if !problems.is_empty() {
                out.push_str("\nExamples:\n\n");
                for p in problems {
                    out.push_str(&format!("- {p}\n"));
                }
            }
        }
        out
    }
}
