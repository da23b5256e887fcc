//! How a registry table looks in a SQLite file that may not be ours yet: which of its columns the
//! file has (matched by name, case-insensitively, as SQLite does), which it lacks, which it has in
//! excess; and the duplicate check that preflight and adoption share.

use super::convert::{ColumnRules, Overrides};
use crate::error::Result;
use crate::schema::{Row, Table};
use rusqlite::Connection;
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// `"name"`, with embedded quotes doubled.
pub(crate) fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[derive(Clone, Debug)]
pub(crate) struct Source {
    pub table: &'static Table,
    /// The file has a table (or view) of this name.
    pub present: bool,
    /// `table`, `view`, `virtual`, … as `PRAGMA table_list` says.
    pub kind: String,
    /// The name as the file spells it.
    pub name: String,
    /// How to select the rowid (`rowid`, `_rowid_`, `oid`), `None` for a WITHOUT ROWID table.
    pub rowid: Option<&'static str>,
    /// Per registry column, the file's column of that name (or `None`: absent).
    pub columns: Vec<Option<String>>,
    /// The file's columns the registry does not have.
    pub extra: Vec<String>,
}

impl Source {
    pub fn absent(&self) -> Vec<&'static str> {
        self.table
            .columns
            .iter()
            .zip(&self.columns)
            .filter(|(_, s)| s.is_none())
            .map(|(c, _)| c.name)
            .collect()
    }

    /// Absent columns that nothing can fill (NOT NULL, no default): every row would be refused.
    pub fn unfillable(&self) -> Vec<&'static str> {
        self.table
            .columns
            .iter()
            .zip(&self.columns)
            .filter(|(c, s)| s.is_none() && !c.nullable && c.default.is_none())
            .map(|(c, _)| c.name)
            .collect()
    }

    pub fn rules(&self, overrides: &Overrides) -> ColumnRules {
        ColumnRules::new(self.table, overrides).with_absent(&self.absent())
    }

    /// `SELECT <rowid or NULL>, <registry columns, NULL where absent>[, <extra columns>] FROM t
    /// ORDER BY rowid`, reading from `from` (the table's name, or the name it was renamed to).
    pub fn select_sql(&self, from: &str, with_extra: bool) -> String {
        let mut cols = vec![self.rowid.unwrap_or("NULL").to_string()];
        cols.extend(self.columns.iter().map(|c| c.as_deref().map(quote).unwrap_or_else(|| "NULL".into())));
        if with_extra {
            cols.extend(self.extra.iter().map(|c| quote(c)));
        }
        let order = match self.rowid {
            Some(r) => format!(" ORDER BY {r}"),
            None => String::new(),
        };
        format!("SELECT {} FROM {}{order}", cols.join(", "), quote(from))
    }
}

/// Describe `table` as the file holds it.
pub(crate) fn inspect(conn: &Connection, table: &'static Table) -> Result<Source> {
    let found: Option<(String, String, bool)> = {
        let mut stmt = conn.prepare(
            "SELECT name, type, wr FROM pragma_table_list WHERE schema = 'main' AND lower(name) = lower(?1)",
        )?;
        let mut rows = stmt.query([table.name])?;
        match rows.next()? {
            Some(r) => Some((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? != 0)),
            None => None,
        }
    };
    let Some((name, kind, without_rowid)) = found else {
        return Ok(Source {
            table,
            present: false,
            kind: String::new(),
            name: table.name.into(),
            rowid: None,
            columns: vec![None; table.columns.len()],
            extra: vec![],
        });
    };
    let mut file_columns: Vec<String> = Vec::new();
    {
        let mut stmt = conn.prepare("SELECT name FROM pragma_table_xinfo(?1) ORDER BY cid")?;
        let mut rows = stmt.query([&name])?;
        while let Some(r) = rows.next()? {
            file_columns.push(r.get(0)?);
        }
    }
    let columns: Vec<Option<String>> = table
        .columns
        .iter()
        .map(|c| file_columns.iter().find(|f| f.eq_ignore_ascii_case(c.name)).cloned())
        .collect();
    let extra = file_columns
        .iter()
        .filter(|f| table.column(&f.to_lowercase()).is_none())
        .cloned()
        .collect::<Vec<_>>();
    let rowid = if without_rowid || kind != "table" {
        None
    } else {
        ["rowid", "_rowid_", "oid"]
            .into_iter()
            .find(|a| !file_columns.iter().any(|f| f.eq_ignore_ascii_case(a)))
    };
    Ok(Source { table, present: true, kind, name, rowid, columns, extra })
}

/// Problems with a table's shape that no row-level rule can fix (adoption refuses them; preflight
/// lists them as blocking).
pub(crate) fn shape_problems(src: &Source, extra_allowed: bool) -> Vec<String> {
    let mut out = Vec::new();
    if !src.present {
        return out;
    }
    let t = src.table.name;
    if src.kind != "table" {
        out.push(format!("{t} is a {} in the file, not a table", src.kind));
        return out;
    }
    let unfillable = src.unfillable();
    if !unfillable.is_empty() {
        out.push(format!(
            "{t} has no column {} (NOT NULL, no default): add it to the monolith's table first",
            unfillable.join(", ")
        ));
    }
    if !src.extra.is_empty() && !extra_allowed {
        out.push(format!(
            "{t} has columns the target schema does not have: {}; adoption would drop them — move them out of the \
             table first, or set [adoption] extra_columns = \"set_aside\" to keep their values in _dualwrite_adoption_extras",
            src.extra.join(", ")
        ));
    }
    out
}

/// One entry per key and unique constraint: which rows hold which values, by a 128-bit digest of
/// the canonical values. The first row (in the order read) keeps its values; a later row with the
/// same values is a duplicate PostgreSQL (and our SQLite schema) would refuse.
pub(crate) struct Dedupe {
    sets: Vec<(Vec<&'static str>, HashMap<u128, i64>)>,
}

impl Dedupe {
    pub fn new(table: &Table) -> Dedupe {
        let mut sets = vec![(vec![table.key], HashMap::new())];
        for u in table.unique {
            sets.push((u.to_vec(), HashMap::new()));
        }
        Dedupe { sets }
    }

    /// `Some((columns, earlier))` when `row` repeats the values of the row numbered `earlier`;
    /// otherwise the row's values are taken and `None` is returned.
    pub fn check(&mut self, row: &Row, ordinal: i64) -> Option<(Vec<&'static str>, i64)> {
        let found = self.find(row);
        if found.is_none() {
            self.take(row, ordinal);
        }
        found
    }

    /// The constraint and the earlier row `row` would collide with, taking nothing.
    pub fn find(&self, row: &Row) -> Option<(Vec<&'static str>, i64)> {
        self.sets.iter().find_map(|(cols, seen)| {
            digest(row, cols).and_then(|d| seen.get(&d)).map(|earlier| (cols.clone(), *earlier))
        })
    }

    /// Record `row`'s values as taken by the row numbered `ordinal`.
    pub fn take(&mut self, row: &Row, ordinal: i64) {
        for (cols, seen) in &mut self.sets {
            if let Some(d) = digest(row, cols) {
                seen.entry(d).or_insert(ordinal);
            }
        }
    }
}

fn digest(row: &Row, cols: &[&str]) -> Option<u128> {
    let mut h = Sha256::new();
    for c in cols {
        let v = row.get(*c)?;
        if v.is_null() {
            // NULLs never collide in a unique constraint.
            return None;
        }
        h.update(v.to_string().as_bytes());
        h.update([0xff]);
    }
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    Some(u128::from_le_bytes(b))
}

/// A canonical uuid string as a number (the key sets of the foreign-key check).
pub(crate) fn uuid_key(v: &serde_json::Value) -> Option<u128> {
    v.as_str().and_then(|s| uuid::Uuid::parse_str(s).ok()).map(|u| u.as_u128())
}
