//! The CHECKs of the 13 tables, described once: each column's rule (non-empty, lower-case, a
//! range), its value set (`Column::allowed`), and the CHECKs SQLite adds to hold the wire form of
//! its type. [`rule_broken`] applies a rule to a canonical value, for `schema::check_rule` (which
//! `validate_row` calls) and the legacy conversions, so every way in (the generic calls, `dw_call`
//! operations, the typed repository, the legacy conversions) refuses a value the stores would
//! refuse, as `InvalidArgument` naming `table.column` and the rule, before anything is written; a
//! CHECK failing inside a store would come back as a conflict instead.
//!
//! The SQL texts below are not executed: tests/schema.rs compares them with the CHECKs and
//! defaults of both live catalogs, so a migration that adds, drops or changes one fails the test
//! until the registry says the same.

use super::{ColType, Column, Table};
use serde_json::Value;
use std::cmp::Ordering;

/// A CHECK on one column besides its type and value set, the same in both stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// `c <> ''`: the empty string is refused (blank text is a value; the stores accept it).
    NonEmpty,
    /// `c = lower(c)`.
    LowerCase,
    /// `c >= min`, and `c <= max` when given; for integer and exact-decimal columns.
    Range { min: i64, max: Option<i64> },
}

/// What a column holds when an insert leaves it out, besides the wire value of `Column::default`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GeneratedDefault {
    /// PostgreSQL's `DEFAULT now()`; SQLite has no default (the library writes the time).
    Now,
}

impl Rule {
    /// The rule as SQL on column `c`, as PostgreSQL's migration writes it.
    pub fn postgres_sql(self, c: &str) -> String {
        match self {
            Rule::NonEmpty => format!("{c} <> ''"),
            Rule::LowerCase => format!("{c} = lower({c})"),
            Rule::Range { min, max: None } => format!("{c} >= {min}"),
            Rule::Range { min, max: Some(max) } => format!("{c} >= {min} AND {c} <= {max}"),
        }
    }

    /// The rule as SQL on `column`, as SQLite's migration writes it: a numeric column is TEXT
    /// there, so its range compares the number the text holds.
    pub fn sqlite_sql(self, column: &Column) -> String {
        let c = column.name;
        match (self, column.ty) {
            (Rule::Range { min, max: Some(max) }, ColType::Numeric) => {
                format!("CAST({c} AS REAL) BETWEEN {min} AND {max}")
            }
            _ => self.postgres_sql(c),
        }
    }
}

fn quoted(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn value_set_sql(c: &str, allowed: &[&str]) -> String {
    format!("{c} IN ({})", allowed.iter().map(|v| quoted(v)).collect::<Vec<_>>().join(", "))
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` as a GLOB pattern (SQLite's CHECK on a timestamptz column).
const TIMESTAMP_GLOB: &str =
    "[0-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-6][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z";

impl Table {
    /// The CHECK expressions PostgreSQL holds on this table: rules and value sets.
    pub fn postgres_checks(&self) -> Vec<String> {
        let mut out = Vec::new();
        for c in self.columns {
            if let Some(allowed) = c.allowed {
                out.push(value_set_sql(c.name, allowed));
            }
            if let Some(rule) = c.rule {
                out.push(rule.postgres_sql(c.name));
            }
        }
        out
    }

    /// The CHECK expressions SQLite holds on this table: per column, the check that keeps its
    /// type's wire form (SQLite's types are loose) and the column's rule or value set, as one
    /// CHECK.
    pub fn sqlite_checks(&self) -> Vec<String> {
        self.columns
            .iter()
            .filter_map(|c| {
                let parts: Vec<String> = [
                    self.sqlite_type_check(c),
                    c.allowed.map(|a| value_set_sql(c.name, a)),
                    c.rule.map(|r| r.sqlite_sql(c)),
                ]
                .into_iter()
                .flatten()
                .collect();
                (!parts.is_empty()).then(|| parts.join(" AND "))
            })
            .collect()
    }

    /// SQLite's check of a column's representation (docs/ARCHITECTURE.md, the type mapping). A
    /// uuid is checked where it is a key (length, lower case); a foreign key needs no check (it
    /// must equal a checked key); any other uuid column is checked for its length.
    fn sqlite_type_check(&self, column: &Column) -> Option<String> {
        let c = column.name;
        match column.ty {
            ColType::Uuid if c == self.key => Some(format!("length({c}) = 36 AND {c} = lower({c})")),
            ColType::Uuid if self.foreign_keys.iter().any(|f| f.column == c) => None,
            ColType::Uuid => Some(format!("{c} IS NULL OR length({c}) = 36")),
            ColType::Text => None,
            ColType::Jsonb => Some(format!("json_valid({c})")),
            ColType::Timestamptz => Some(format!("{c} GLOB '{TIMESTAMP_GLOB}'")),
            ColType::Numeric => Some(format!("typeof({c}) = 'text'")),
            ColType::Int => Some(format!("typeof({c}) = 'integer'")),
            ColType::Bytea => Some(format!("typeof({c}) = 'blob'")),
            ColType::Vector => {
                Some(format!("typeof({c}) = 'blob' AND length({c}) > 0 AND length({c}) % 4 = 0"))
            }
        }
    }
}

impl Column {
    /// The column's default as PostgreSQL's migration writes it, if it has one.
    pub fn postgres_default(&self) -> Option<String> {
        if self.generated_default == Some(GeneratedDefault::Now) {
            return Some("now()".into());
        }
        self.default.map(|d| self.default_literal(d, matches!(self.ty, ColType::Numeric | ColType::Int)))
    }

    /// The column's default as SQLite's migration writes it, if it has one (numerics are TEXT
    /// there, so their default is quoted).
    pub fn sqlite_default(&self) -> Option<String> {
        self.default.map(|d| self.default_literal(d, self.ty == ColType::Int))
    }

    /// A registry default (wire JSON) as an SQL literal: a string's text, or the JSON itself.
    fn default_literal(&self, wire: &str, bare: bool) -> String {
        let text = match serde_json::from_str::<Value>(wire) {
            Ok(Value::String(s)) => s,
            _ => wire.to_string(),
        };
        if bare {
            text
        } else {
            quoted(&text)
        }
    }
}

/// What a canonical value (see `canonical_value`) of `column` breaks of its rule, in words
/// (`must not be empty`), or `None` when it keeps it.
pub(crate) fn rule_broken(column: &Column, value: &Value) -> Option<String> {
    let rule = column.rule?;
    match (rule, value) {
        (_, Value::Null) => None,
        (Rule::NonEmpty, Value::String(s)) if s.is_empty() => Some("must not be empty".into()),
        // Rust's full Unicode lower-casing: a fixed point of it is one of SQLite's ASCII lower()
        // and of PostgreSQL's lower() too.
        (Rule::LowerCase, Value::String(s)) if *s != s.to_lowercase() => Some("must be lower-case".into()),
        (Rule::Range { min, max }, v) => {
            let below = compare(v, min).is_some_and(Ordering::is_lt);
            let above = max.is_some_and(|m| compare(v, m).is_some_and(Ordering::is_gt));
            match (below || above, max) {
                (false, _) => None,
                (true, None) => Some(format!("must be at least {min}")),
                (true, Some(max)) => Some(format!("must be between {min} and {max}")),
            }
        }
        _ => None,
    }
}

/// A canonical integer or exact decimal (`-12.50`) compared with `n`, without a float.
fn compare(v: &Value, n: i64) -> Option<Ordering> {
    match v {
        Value::Number(x) => x.as_i64().map(|i| i.cmp(&n)),
        Value::String(s) => Some(compare_decimal(s, n)),
        _ => None,
    }
}

fn compare_decimal(d: &str, n: i64) -> Ordering {
    let negative = d.starts_with('-');
    let (int, frac) =
        d.trim_start_matches(['-', '+']).split_once('.').unwrap_or((d.trim_start_matches(['-', '+']), ""));
    let fraction = frac.bytes().any(|b| b != b'0');
    // More digits than an i128 holds is far outside any rule's bounds.
    let magnitude: i128 = int.parse().unwrap_or(i128::MAX);
    let n = i128::from(n);
    if !negative || (magnitude == 0 && !fraction) {
        // d = magnitude + fraction
        return magnitude.cmp(&n).then(if fraction { Ordering::Greater } else { Ordering::Equal });
    }
    // d = -magnitude - fraction
    (-magnitude).cmp(&n).then(if fraction { Ordering::Less } else { Ordering::Equal })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_compare_with_bounds_exactly() {
        assert_eq!(compare_decimal("100", 100), Ordering::Equal);
        assert_eq!(compare_decimal("100.000", 100), Ordering::Equal);
        assert_eq!(compare_decimal("100.01", 100), Ordering::Greater);
        assert_eq!(compare_decimal("99.999", 100), Ordering::Less);
        assert_eq!(compare_decimal("0", 0), Ordering::Equal);
        assert_eq!(compare_decimal("-0.5", 0), Ordering::Less);
        assert_eq!(compare_decimal("-1", -1), Ordering::Equal);
        assert_eq!(compare_decimal("-1.5", -1), Ordering::Less);
        assert_eq!(compare_decimal(&"9".repeat(60), 100), Ordering::Greater);
        assert_eq!(compare_decimal(&format!("-{}", "9".repeat(60)), 0), Ordering::Less);
    }
}
