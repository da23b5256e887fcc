//! The table registry: each of the 13 target tables described once (columns, target type, SQLite
//! type, key, foreign keys, value sets). The SQLite store, the PostgreSQL apply, the generic JSON
//! API, the backfill and the verifier all derive their SQL and conversions from it; a test
//! compares it with both live catalogs so it cannot drift from the migrations.

mod codec;
mod filter;
mod rules;
mod tables;

pub use codec::{
    canonical_value, check_indexed_text, check_rule, decode_sqlite_row, encode_for_sqlite, format_timestamp,
    now_timestamp, validate_row, RowMode, SqlValue, MAX_INDEXED_TEXT_BYTES,
};
pub(crate) use codec::{decode_bytea, vector_from_pg_text, MAX_TEXT_BYTES, MAX_VECTOR_DIM};
pub use filter::Filter;
pub(crate) use rules::rule_broken;
pub use rules::{GeneratedDefault, Rule};
pub use tables::TABLES;

/// A row in the wire form (see docs/ARCHITECTURE.md), keyed by column name: what
/// [`validate_row`] returns, what the stores read and write, what the APIs hand out.
pub type Row = serde_json::Map<String, serde_json::Value>;

/// A column's type in the target schema; the SQLite representation follows from it
/// (the type mapping in docs/ARCHITECTURE.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColType {
    Uuid,
    Text,
    Jsonb,
    Timestamptz,
    Numeric,
    Int,
    Bytea,
    Vector,
}

impl ColType {
    /// The type as PostgreSQL's catalog names it (`pg_catalog.format_type`).
    pub fn pg_type(self) -> &'static str {
        match self {
            ColType::Uuid => "uuid",
            ColType::Text => "text",
            ColType::Jsonb => "jsonb",
            ColType::Timestamptz => "timestamp with time zone",
            ColType::Numeric => "numeric",
            ColType::Int => "integer",
            ColType::Bytea => "bytea",
            ColType::Vector => "vector",
        }
    }

    /// The declared type of the SQLite column.
    pub fn sqlite_type(self) -> &'static str {
        match self {
            ColType::Int => "INTEGER",
            ColType::Bytea | ColType::Vector => "BLOB",
            _ => "TEXT",
        }
    }
}

#[derive(Debug)]
pub struct Column {
    pub name: &'static str,
    pub ty: ColType,
    pub nullable: bool,
    /// The allowed values of an enumerated text column (the CHECK `c IN (...)` in both stores).
    pub allowed: Option<&'static [&'static str]>,
    /// The column's other CHECK in both stores (see `rules`), applied by `validate_row`.
    pub rule: Option<Rule>,
    /// Holds ciphertext of a secret: never logged, compared only as bytes.
    pub secret: bool,
    /// The value (as wire JSON text) an insert gets when the caller leaves the column out.
    /// Key uuids and NOT NULL timestamps without a default are generated (new id, now).
    pub default: Option<&'static str>,
    /// A default the store computes (PostgreSQL's `now()`); inserts get the same from the library.
    pub generated_default: Option<GeneratedDefault>,
}

#[derive(Debug)]
pub struct ForeignKey {
    pub column: &'static str,
    /// The referenced table; the reference is always to its key column.
    pub references: &'static str,
}

#[derive(Debug)]
pub struct Table {
    pub name: &'static str,
    /// The single-column primary key (uuid `id`, or `cache_key` for the caches).
    pub key: &'static str,
    pub columns: &'static [Column],
    pub foreign_keys: &'static [ForeignKey],
    /// Unique constraints besides the key.
    pub unique: &'static [&'static [&'static str]],
    /// PostgreSQL's other btree indexes that hold a free-text column (one whose values are not an
    /// enumerated set), with all their plain columns: with the key and `unique`, what bounds the
    /// size of an indexed text value ([`MAX_INDEXED_TEXT_BYTES`]). A test compares them with the
    /// catalog.
    pub indexes: &'static [&'static [&'static str]],
}

impl Table {
    /// The key of a stored wire row of this table (always text on the wire).
    pub fn key_of<'r>(&self, row: &'r serde_json::Map<String, serde_json::Value>) -> crate::Result<&'r str> {
        row.get(self.key)
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| crate::Error::Internal(format!("{} row without its key", self.name)))
    }

    pub fn column(&self, name: &str) -> Option<&'static Column> {
        // Tables are 'static, so the column is too.
        let cols: &'static [Column] = self.columns;
        cols.iter().find(|c| c.name == name)
    }

    pub fn key_column(&self) -> &'static Column {
        self.column(self.key).expect("registry: key column is declared")
    }

    /// Position in [`TABLES`], which lists parents before children.
    pub fn fk_rank(&self) -> usize {
        TABLES.iter().position(|t| t.name == self.name).unwrap_or(usize::MAX)
    }

    /// The free-text columns of each btree index PostgreSQL keeps on this table (the key, the
    /// unique constraints, [`Table::indexes`]); indexes without one are left out.
    pub fn indexed_text(&self) -> impl Iterator<Item = Vec<&'static Column>> + '_ {
        let key: &[&'static str] = std::slice::from_ref(&self.key);
        std::iter::once(key)
            .chain(self.unique.iter().copied())
            .chain(self.indexes.iter().copied())
            .filter_map(|names| {
                let text: Vec<&'static Column> = names
                    .iter()
                    .filter_map(|n| self.column(n))
                    .filter(|c| c.ty == ColType::Text && c.allowed.is_none())
                    .collect();
                (!text.is_empty()).then_some(text)
            })
    }

    pub fn column_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.columns.iter().map(|c| c.name)
    }

    /// `a = EXCLUDED.a, b = EXCLUDED.b, …` over every column but the key: the SET list of an
    /// upsert that replaces the whole row (SQLite and PostgreSQL both read `EXCLUDED`).
    pub fn set_all_from_excluded(&self) -> String {
        self.column_names()
            .filter(|c| *c != self.key)
            .map(|c| format!("{c} = EXCLUDED.{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `a DESC, b DESC, key DESC`: the given columns, then the key so the order is total. Both
    /// stores use this clause, so a page holds the same rows in each.
    pub fn order_clause(&self, order_by: &[&str], desc: bool) -> String {
        let dir = if desc { "DESC" } else { "ASC" };
        order_by
            .iter()
            .filter(|c| **c != self.key)
            .chain(std::iter::once(&self.key))
            .map(|c| format!("{c} {dir}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Look a table up by name. Only the registry's names are accepted anywhere a table is named,
/// so no identifier from input ever reaches SQL text.
pub fn table(name: &str) -> Option<&'static Table> {
    TABLES.iter().find(|t| t.name == name)
}

/// The tables named (all when `None`), validated, once each, in foreign-key order: what the
/// backfill copies and verify compares.
pub fn select_tables(names: Option<&[String]>) -> crate::Result<Vec<&'static Table>> {
    let Some(names) = names else { return Ok(TABLES.iter().collect()) };
    let mut out: Vec<&'static Table> = Vec::new();
    for n in names {
        let t = require_table(n.trim())?;
        if !out.iter().any(|x| x.name == t.name) {
            out.push(t);
        }
    }
    out.sort_by_key(|t| t.fk_rank());
    Ok(out)
}

/// Like [`table`], as an error that names the field for a caller's input.
pub fn require_table(name: &str) -> crate::Result<&'static Table> {
    table(name).ok_or_else(|| {
        crate::Error::invalid(
            "table",
            format!(
                "unknown table {:?}; known tables: {}",
                truncate_for_message(name),
                TABLES.iter().map(|t| t.name).collect::<Vec<_>>().join(", ")
            ),
        )
    })
}

/// Echo at most 64 characters of caller input in a message.
pub(crate) fn truncate_for_message(s: &str) -> String {
    let mut out: String = s.chars().take(64).collect();
    if s.chars().count() > 64 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thirteen_tables_parents_first() {
        assert_eq!(TABLES.len(), 13);
        for t in TABLES {
            assert!(t.column(t.key).is_some(), "{}: key column missing", t.name);
            for fk in t.foreign_keys {
                let parent = table(fk.references).expect("referenced table exists");
                assert!(
                    parent.fk_rank() < t.fk_rank(),
                    "{} listed before its parent {}",
                    t.name,
                    parent.name
                );
                assert!(t.column(fk.column).is_some(), "{}.{} missing", t.name, fk.column);
            }
        }
    }

    #[test]
    fn unknown_table_is_an_invalid_argument() {
        let err = require_table("users; DROP TABLE users").unwrap_err();
        assert!(matches!(err, crate::Error::InvalidArgument { .. }));
    }
}
