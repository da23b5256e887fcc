//! Conversion rules: what SQLite's loose typing let into the monolith's file, turned into the wire
//! form (docs/ARCHITECTURE.md, "The wire form of a row") — or refused with a reason.
//!
//! Every rule is applied **per value** (a column may mix formats; each value is detected on its
//! own) and is **lossless or refused**: a value is converted only when the reading is unambiguous,
//! otherwise the row is rejected and names the column, the value and why.
//!
//! | target | converted | refused |
//! | --- | --- | --- |
//! | uuid | any case, `{braced}`, `urn:uuid:`, 32 hex digits, a 16-byte BLOB → lower-case hyphenated | anything else |
//! | timestamptz | see below → `YYYY-MM-DDTHH:MM:SS.ffffffZ` | ambiguous numbers, unknown formats, sub-microsecond digits, leap seconds, years outside 1..9999 |
//! | numeric | INTEGER, REAL (shortest text that reads back as the same double) or text with blanks, `+`, leading zeros → exact decimal | exponents, commas, words |
//! | int | text `" 42 "`, `"42.0"`, REAL `42.0` → 42 | fractions, outside 32 bits |
//! | jsonb | valid JSON text → the value; INTEGER/REAL → a JSON number; **plain text** (not starting with `{`, `[` or `"`) → a JSON string | broken JSON that starts like JSON (`{"a": 1`) |
//! | text | INTEGER/REAL → their text; UTF-8 BLOB → text; `users.email` trimmed and lower-cased (as the users API stores it) | text that is not UTF-8, NUL |
//! | bytea | BLOB; text `\x<hex>` → the bytes | other text (never guessed) |
//! | vector | BLOB of little-endian f32; text holding a JSON array of numbers | NaN/infinite components |
//!
//! **Timestamps**, detected by value:
//! - RFC 3339 with `Z` or an offset (`T`, `t` or a space between date and time) → UTC;
//! - naive `YYYY-MM-DD HH:MM[:SS[.f]]`, `YYYY-MM-DDTHH:MM[:SS[.f]]` and `YYYY-MM-DD` (midnight):
//!   **assumed UTC** (SQLite's own `CURRENT_TIMESTAMP` and `datetime('now')` write UTC in this
//!   form); `naive_offset=+02:00` pins another fixed offset for a column (no zone database: an
//!   offset that changed with daylight saving time cannot be expressed, pin UTC-converted data);
//! - numbers (INTEGER, REAL, or text holding only a number), by magnitude:
//!   epoch seconds 1e8 ≤ n < 1e11 (1973-03-03 … 5138), epoch milliseconds 1e11 ≤ n < 1e14,
//!   epoch microseconds 1e14 ≤ n < 1e17, epoch nanoseconds 1e17 ≤ n < 1e20 (exact to the
//!   microsecond or refused), Julian day 1721425.5 ≤ n < 5373484.5 (0001 … 9999; rounded to the
//!   millisecond exactly as SQLite's date functions read it). Integers and numeric text are
//!   converted exactly (an epoch-ms value lands on its exact microsecond, fraction digits of
//!   numeric text are kept to the microsecond); a REAL is rounded to the nearest microsecond.
//!   Anything else (0, small or negative numbers) is ambiguous and refused unless the column's
//!   unit is pinned (`epoch_s`, `epoch_ms`, `epoch_us`, `epoch_ns`, `julian_day`), which then
//!   reads every number of the column in that unit. Epoch milliseconds before 1973-03-03 fall in
//!   the seconds range: pin `epoch_ms` for such a column.
//!
//! **Empty strings and NULL**: `''` in a column of any type but text becomes NULL when the column
//! is nullable and the column's default when it is NOT NULL and has one (`''` in a text column is a
//! value and is kept; `empty_as_null` converts it for a nullable text column). NULL in a NOT NULL
//! column with a default becomes the default (what an insert leaving it out gets). Otherwise `''`
//! and NULL in a NOT NULL column are refused.
//!
//! Besides the type, a value must pass the CHECKs the registry does not describe (mirrored here and
//! tested against the migrations): non-empty `jobs.type`, `api_keys.provider`, `prompts.key`,
//! `audit_events.action`; `jobs.progress` between 0 and 100; versions ≥ 1; lower-case
//! `users.email`.
//!
//! Per-column overrides (`[conversions]` in the TOML configuration, key `"table.column"`, value a
//! comma-separated list): `auto` (the built-in rules), `strict` (canonical values only, nothing is
//! converted), `epoch_s` | `epoch_ms` | `epoch_us` | `epoch_ns` | `julian_day`, `naive_utc`,
//! `naive_offset=±HH:MM`, `empty_as_null`, `keep_empty` (`''` is never converted), `json_strict`
//! (plain text in a jsonb column is refused).

use crate::error::{Error, Result};
use crate::schema::{
    self, canonical_value, encode_for_sqlite, format_timestamp, ColType, Column, SqlValue, Table,
};
use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, NaiveDateTime, TimeZone, Timelike, Utc};
use rusqlite::types::ValueRef;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// A row in the wire form, keyed by column name (what `schema::validate_row` returns).
pub type WireRow = Map<String, Value>;

/// One problem with one row: which table, which row (its key as found), which column, the value
/// (redacted for secret columns, shortened) and why. Never carries a secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reject {
    pub table: String,
    /// The row's key as it is in SQLite (not converted: it may be what is wrong).
    pub key: String,
    /// `None` for a problem of the whole row (a duplicate key, PostgreSQL's refusal).
    pub column: Option<String>,
    /// The value as found, quoted when it is text; `<redacted>` for a secret column.
    pub value: Option<String>,
    pub reason: String,
}

/// How numbers in a timestamptz column are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EpochUnit {
    /// By magnitude (see the module documentation); ambiguous numbers are refused.
    Auto,
    Seconds,
    Millis,
    Micros,
    Nanos,
    JulianDay,
}

impl EpochUnit {
    fn label(self) -> &'static str {
        match self {
            EpochUnit::Auto => "auto",
            EpochUnit::Seconds => "epoch_s",
            EpochUnit::Millis => "epoch_ms",
            EpochUnit::Micros => "epoch_us",
            EpochUnit::Nanos => "epoch_ns",
            EpochUnit::JulianDay => "julian_day",
        }
    }
}

/// The rule of one column. Built in (per type, see the module documentation), changed by the
/// configuration's `[conversions]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ColumnRule {
    pub column: &'static str,
    /// Canonical values only: nothing is converted.
    pub strict: bool,
    /// How numbers in a timestamptz column are read.
    pub numbers: EpochUnit,
    /// The offset (seconds east of UTC) of timestamps written without one.
    pub naive_offset_seconds: i32,
    /// `''` becomes NULL (nullable) or the default (NOT NULL with a default).
    pub empty_to_null: bool,
    /// Text that is not JSON becomes a JSON string (jsonb).
    pub text_as_json: bool,
    /// Trimmed and lower-cased (`users.email`).
    pub lowercase: bool,
    /// The source table has no such column: every row gets the default, or NULL.
    pub absent: bool,
    /// Changed by `[conversions]` in the configuration.
    pub configured: bool,
}

impl ColumnRule {
    fn built_in(table: &Table, column: &'static Column) -> ColumnRule {
        ColumnRule {
            column: column.name,
            strict: false,
            numbers: EpochUnit::Auto,
            naive_offset_seconds: 0,
            empty_to_null: column.ty != ColType::Text,
            text_as_json: column.ty == ColType::Jsonb,
            lowercase: table.name == "users" && column.name == "email",
            absent: false,
            configured: false,
        }
    }

    /// What the rule does, in a few words (shown in the preflight report).
    pub fn describe(&self, column: &Column) -> String {
        let mut parts: Vec<String> = Vec::new();
        if self.absent {
            parts.push(match (column.default, column.nullable) {
                (Some(d), _) => format!("absent: filled with {d}"),
                (None, true) => "absent: filled with NULL".into(),
                (None, false) => "absent: no default, every row is refused".into(),
            });
        } else if self.strict {
            parts.push("strict: canonical values only".into());
        } else {
            parts.push(match column.ty {
                ColType::Uuid => "uuid: any case, braces, urn:, 32 hex, 16-byte blob".into(),
                ColType::Timestamptz => format!(
                    "timestamp: RFC 3339, naive as {}, {}",
                    offset_text(self.naive_offset_seconds),
                    match self.numbers {
                        EpochUnit::Auto => "epoch s/ms/µs/ns and Julian day by magnitude".to_string(),
                        u => format!("numbers as {}", u.label()),
                    }
                ),
                ColType::Numeric => "decimal: integer, real or numeric text".into(),
                ColType::Int => "integer: integral text or real".into(),
                ColType::Jsonb if self.text_as_json => "json; plain text → JSON string".into(),
                ColType::Jsonb => "json (plain text refused)".into(),
                ColType::Text if self.lowercase => "text, trimmed and lower-cased".into(),
                ColType::Text => "text; numbers → text".into(),
                ColType::Bytea => "bytes: blob or \\x-hex text".into(),
                ColType::Vector => "vector: f32 blob or JSON array".into(),
            });
            if self.empty_to_null {
                match (column.nullable, column.default) {
                    (true, _) => parts.push("'' → NULL".into()),
                    (false, Some(d)) => parts.push(format!("'' → {d}")),
                    (false, None) => {}
                }
            }
            if !column.nullable {
                if let Some(d) = column.default {
                    parts.push(format!("NULL → {d}"));
                }
            }
        }
        if self.configured {
            parts.push("(configured)".into());
        }
        parts.join("; ")
    }
}

fn offset_text(seconds: i32) -> String {
    if seconds == 0 {
        return "UTC".into();
    }
    let sign = if seconds < 0 { '-' } else { '+' };
    let s = seconds.unsigned_abs();
    format!("{sign}{:02}:{:02}", s / 3600, (s % 3600) / 60)
}

/// Per-column overrides from the configuration's `[conversions]`, validated against the registry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    columns: BTreeMap<(&'static str, &'static str), Vec<Token>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Auto,
    Strict,
    Unit(EpochUnit),
    NaiveOffset(i32),
    EmptyAsNull,
    KeepEmpty,
    JsonStrict,
}

const TOKENS: &str = "auto, strict, epoch_s, epoch_ms, epoch_us, epoch_ns, julian_day, naive_utc, \
naive_offset=+HH:MM, empty_as_null, keep_empty, json_strict";

impl Overrides {
    pub fn none() -> Overrides {
        Overrides::default()
    }

    /// Parse `"table.column" = "rule, rule"` entries. An unknown table, column or rule, or a rule
    /// that does not fit the column's type, is a configuration error naming the entry.
    pub fn parse(entries: &BTreeMap<String, String>) -> Result<Overrides> {
        let mut columns = BTreeMap::new();
        for (name, spec) in entries {
            let bad = |msg: String| Error::Config(format!("[conversions] {name:?}: {msg}"));
            let (t, c) =
                name.split_once('.').ok_or_else(|| bad("write the key as \"table.column\"".into()))?;
            let table = schema::table(t).ok_or_else(|| bad(format!("no table {t:?}")))?;
            let column = table.column(c).ok_or_else(|| {
                bad(format!(
                    "no column {c:?} in {t}; columns are {}",
                    table.column_names().collect::<Vec<_>>().join(", ")
                ))
            })?;
            let mut tokens = Vec::new();
            for raw in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let token = parse_token(raw)
                    .ok_or_else(|| bad(format!("unknown rule {raw:?}; rules are {TOKENS}")))?;
                let fits = match &token {
                    Token::Unit(_) | Token::NaiveOffset(_) => column.ty == ColType::Timestamptz,
                    Token::JsonStrict => column.ty == ColType::Jsonb,
                    Token::EmptyAsNull => column.nullable || column.default.is_some(),
                    _ => true,
                };
                if !fits {
                    return Err(bad(format!(
                        "rule {raw:?} does not apply to a {}{} column",
                        if column.nullable { "" } else { "NOT NULL " },
                        column.ty.pg_type()
                    )));
                }
                tokens.push(token);
            }
            columns.insert((table.name, column.name), tokens);
        }
        Ok(Overrides { columns })
    }

    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }
}

fn parse_token(s: &str) -> Option<Token> {
    Some(match s {
        "auto" => Token::Auto,
        "strict" => Token::Strict,
        "epoch_s" | "epoch_seconds" => Token::Unit(EpochUnit::Seconds),
        "epoch_ms" | "epoch_millis" => Token::Unit(EpochUnit::Millis),
        "epoch_us" | "epoch_micros" => Token::Unit(EpochUnit::Micros),
        "epoch_ns" | "epoch_nanos" => Token::Unit(EpochUnit::Nanos),
        "julian_day" => Token::Unit(EpochUnit::JulianDay),
        "naive_utc" => Token::NaiveOffset(0),
        "empty_as_null" => Token::EmptyAsNull,
        "keep_empty" => Token::KeepEmpty,
        "json_strict" => Token::JsonStrict,
        other => {
            let off = other.strip_prefix("naive_offset=")?;
            Token::NaiveOffset(parse_offset(off)?)
        }
    })
}

fn parse_offset(s: &str) -> Option<i32> {
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let (h, m) = rest.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
    if h > 15 || m > 59 {
        return None;
    }
    Some(sign * (h * 3600 + m * 60))
}

/// The rules of every column of one table, in registry order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ColumnRules {
    pub table: &'static str,
    pub columns: Vec<ColumnRule>,
}

impl ColumnRules {
    /// The built-in rules for `table`, changed by `overrides`.
    pub fn new(table: &'static Table, overrides: &Overrides) -> ColumnRules {
        let columns = table
            .columns
            .iter()
            .map(|c| {
                let mut rule = ColumnRule::built_in(table, c);
                if let Some(tokens) = overrides.columns.get(&(table.name, c.name)) {
                    rule.configured = true;
                    for t in tokens {
                        match t {
                            Token::Auto => {}
                            Token::Strict => rule.strict = true,
                            Token::Unit(u) => rule.numbers = *u,
                            Token::NaiveOffset(o) => rule.naive_offset_seconds = *o,
                            Token::EmptyAsNull => rule.empty_to_null = true,
                            Token::KeepEmpty => rule.empty_to_null = false,
                            Token::JsonStrict => rule.text_as_json = false,
                        }
                    }
                }
                rule
            })
            .collect();
        ColumnRules { table: table.name, columns }
    }

    /// Mark columns the source table does not have (they get their default or NULL).
    pub fn with_absent(mut self, absent: &[&str]) -> ColumnRules {
        for r in &mut self.columns {
            r.absent = absent.contains(&r.column);
        }
        self
    }

    pub fn rule(&self, column: &str) -> Option<&ColumnRule> {
        self.columns.iter().find(|r| r.column == column)
    }
}

/// What happened to one value.
#[derive(Clone, Debug)]
pub(crate) struct Outcome {
    /// The detected form (`canonical`, `epoch_ms`, `plain_text`, `not_uuid`, …); `null`, `empty`.
    pub label: &'static str,
    /// The value was converted (its stored form differs from what the bridge writes).
    pub changed: bool,
    pub result: std::result::Result<Value, String>,
}

impl Outcome {
    fn ok(label: &'static str, changed: bool, v: Value) -> Outcome {
        Outcome { label, changed, result: Ok(v) }
    }
    fn err(label: &'static str, reason: impl Into<String>) -> Outcome {
        Outcome { label, changed: false, result: Err(reason.into()) }
    }
}

/// Convert one raw row (the table's columns in registry order; NULL for absent columns) into the
/// wire form, or name every problem of the row.
pub fn convert_row(
    table: &Table,
    raw: &[rusqlite::types::Value],
    rules: &ColumnRules,
) -> std::result::Result<WireRow, Vec<Reject>> {
    let refs: Vec<ValueRef<'_>> = raw.iter().map(ValueRef::from).collect();
    convert_refs(table, &refs, rules)
}

/// [`convert_row`] for a row of a `SELECT` whose columns `first..first + n` are the table's
/// columns in registry order (`SELECT c1, c2, … FROM t`, as the backfill reads).
pub fn convert_sqlite_row(
    table: &Table,
    row: &rusqlite::Row<'_>,
    first: usize,
    rules: &ColumnRules,
) -> std::result::Result<WireRow, Vec<Reject>> {
    let mut refs = Vec::with_capacity(table.columns.len());
    for i in 0..table.columns.len() {
        match row.get_ref(first + i) {
            Ok(v) => refs.push(v),
            Err(e) => {
                return Err(vec![Reject {
                    table: table.name.into(),
                    key: String::new(),
                    column: None,
                    value: None,
                    reason: format!("cannot read column {}: {e}", first + i),
                }])
            }
        }
    }
    convert_refs(table, &refs, rules)
}

pub(crate) fn convert_refs(
    table: &Table,
    raw: &[ValueRef<'_>],
    rules: &ColumnRules,
) -> std::result::Result<WireRow, Vec<Reject>> {
    let outcomes = convert_columns(table, raw, rules)?;
    assemble(table, raw, outcomes)
}

/// The wire row, or every column's problem as a [`Reject`].
pub(crate) fn assemble(
    table: &Table,
    raw: &[ValueRef<'_>],
    outcomes: Vec<Outcome>,
) -> std::result::Result<WireRow, Vec<Reject>> {
    let mut row = Map::with_capacity(outcomes.len());
    let mut rejects = Vec::new();
    for ((column, outcome), value) in table.columns.iter().zip(outcomes).zip(raw) {
        match outcome.result {
            Ok(v) => {
                row.insert(column.name.to_string(), v);
            }
            Err(reason) => rejects.push(Reject {
                table: table.name.into(),
                key: key_text(table, raw),
                column: Some(column.name.into()),
                value: Some(render_value(column, *value)),
                reason,
            }),
        }
    }
    if rejects.is_empty() {
        Ok(row)
    } else {
        Err(rejects)
    }
}

/// Every column's outcome. Errs only when the row does not fit the rules (a caller's bug).
pub(crate) fn convert_columns(
    table: &Table,
    raw: &[ValueRef<'_>],
    rules: &ColumnRules,
) -> std::result::Result<Vec<Outcome>, Vec<Reject>> {
    if rules.table != table.name || raw.len() != table.columns.len() || rules.columns.len() != raw.len() {
        return Err(vec![Reject {
            table: table.name.into(),
            key: String::new(),
            column: None,
            value: None,
            reason: format!(
                "internal: a row of {} values converted with the rules of {} ({} columns)",
                raw.len(),
                rules.table,
                rules.columns.len()
            ),
        }]);
    }
    Ok(table
        .columns
        .iter()
        .zip(&rules.columns)
        .zip(raw)
        .map(|((c, r), v)| convert_value(table, c, r, *v))
        .collect())
}

/// The key of a raw row as text, for messages and the reject store.
pub(crate) fn key_text(table: &Table, raw: &[ValueRef<'_>]) -> String {
    let i = table.columns.iter().position(|c| c.name == table.key).unwrap_or(0);
    match raw.get(i) {
        Some(ValueRef::Text(t)) => String::from_utf8_lossy(t).into_owned(),
        Some(ValueRef::Integer(n)) => n.to_string(),
        Some(v) => render_raw(*v),
        None => String::new(),
    }
}

/// A raw value for a message: text quoted (at most 200 characters), numbers as they are, blobs
/// as hex (at most 32 bytes); `<redacted>` for a secret column.
pub(crate) fn render_value(column: &Column, v: ValueRef<'_>) -> String {
    if column.secret && !matches!(v, ValueRef::Null) {
        return "<redacted>".into();
    }
    render_raw(v)
}

pub(crate) fn render_raw(v: ValueRef<'_>) -> String {
    match v {
        ValueRef::Null => "NULL".into(),
        ValueRef::Integer(n) => n.to_string(),
        ValueRef::Real(f) => format!("{f:?}"),
        ValueRef::Text(t) => match std::str::from_utf8(t) {
            Ok(s) => format!("{:?}", schema_truncate(s, 200)),
            Err(_) => format!("text x'{}' (not UTF-8)", hex_prefix(t)),
        },
        ValueRef::Blob(b) => format!("x'{}' ({} bytes)", hex_prefix(b), b.len()),
    }
}

fn hex_prefix(b: &[u8]) -> String {
    let mut h = hex::encode(&b[..b.len().min(32)]);
    if b.len() > 32 {
        h.push('…');
    }
    h
}

fn schema_truncate(s: &str, n: usize) -> String {
    let mut out: String = s.chars().take(n).collect();
    if s.chars().count() > n {
        out.push('…');
    }
    out
}

fn default_value(column: &Column) -> Option<Value> {
    column.default.and_then(|d| serde_json::from_str(d).ok())
}

/// Convert one value of `column` by `rule`.
pub(crate) fn convert_value(table: &Table, column: &Column, rule: &ColumnRule, raw: ValueRef<'_>) -> Outcome {
    // NULL, an absent column, and '' meant as NULL.
    let empty = matches!(raw, ValueRef::Text(t) if t.is_empty());
    if matches!(raw, ValueRef::Null) || (empty && rule.empty_to_null && !rule.strict) {
        let (null_label, default_label) = match (rule.absent, empty) {
            (true, _) => ("absent", "absent"),
            (false, true) => ("empty", "empty"),
            (false, false) => ("null", "null"),
        };
        if column.nullable {
            return Outcome::ok(null_label, empty || rule.absent, Value::Null);
        }
        if !rule.strict {
            if let Some(d) = default_value(column) {
                return Outcome::ok(default_label, true, d);
            }
        }
        let why = if rule.absent {
            "the source table has no such column and it has no default"
        } else if empty {
            "empty string where a value is required (NOT NULL, no default)"
        } else {
            "NULL in a NOT NULL column without a default"
        };
        return Outcome::err(null_label, why);
    }
    let outcome = if rule.strict { strict_value(column, raw) } else { loose_value(column, rule, raw) };
    let Outcome { mut label, mut changed, result } = outcome;
    let result = result.and_then(|v| {
        let c = canonical_value(table, column, &v).map_err(|e| match e {
            Error::InvalidArgument { message, .. } => message,
            other => other.to_string(),
        })?;
        extra_check(table, column, &c)?;
        if c != v {
            if rule.strict {
                return Err("is not in canonical form (the column's rule is strict)".into());
            }
            changed = true;
            if label == "decimal" {
                label = "decimal_text";
            }
        }
        Ok(c)
    });
    let label = if result.is_err() && label == "canonical" { "invalid" } else { label };
    Outcome { label, changed, result }
}

/// The value as the bridge itself would read it (`schema::decode_sqlite_row`): no conversion.
fn strict_value(column: &Column, raw: ValueRef<'_>) -> Outcome {
    match raw {
        ValueRef::Null => Outcome::ok("null", false, Value::Null),
        ValueRef::Integer(n) => match column.ty {
            ColType::Int => Outcome::ok("canonical", false, Value::from(n)),
            _ => Outcome::err("integer", "is an INTEGER where the column's rule is strict"),
        },
        ValueRef::Real(_) => Outcome::err("real", "is a REAL where the column's rule is strict"),
        ValueRef::Text(t) => {
            let Ok(s) = std::str::from_utf8(t) else {
                return Outcome::err("not_utf8", "text that is not UTF-8");
            };
            match column.ty {
                ColType::Jsonb => match serde_json::from_str(s) {
                    Ok(v) => Outcome::ok("canonical", false, v),
                    Err(e) => Outcome::err("invalid_json", format!("is not valid JSON ({e})")),
                },
                ColType::Int | ColType::Bytea | ColType::Vector => {
                    Outcome::err("text", "is TEXT where the column's rule is strict")
                }
                _ => Outcome::ok("canonical", false, Value::String(s.to_string())),
            }
        }
        ValueRef::Blob(b) => match column.ty {
            ColType::Bytea => Outcome::ok("canonical", false, Value::String(bytea_text(b))),
            ColType::Vector => match blob_vector(b) {
                Ok(v) => Outcome::ok("canonical", false, v),
                Err(e) => Outcome::err("bad_vector", e),
            },
            _ => Outcome::err("blob", "is a BLOB where the column's rule is strict"),
        },
    }
}

fn bytea_text(b: &[u8]) -> String {
    format!("\\x{}", hex::encode(b))
}

fn blob_vector(b: &[u8]) -> std::result::Result<Value, String> {
    if b.is_empty() || !b.len().is_multiple_of(4) {
        return Err(format!("a vector BLOB must hold a multiple of 4 bytes, this one holds {}", b.len()));
    }
    let mut out = Vec::with_capacity(b.len() / 4);
    for c in b.chunks_exact(4) {
        let f = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        if !f.is_finite() {
            return Err("holds a component that is NaN or infinite".into());
        }
        out.push(Value::from(f as f64));
    }
    Ok(Value::Array(out))
}

fn text_of(raw: &[u8]) -> std::result::Result<&str, Outcome> {
    std::str::from_utf8(raw).map_err(|_| Outcome::err("not_utf8", "text that is not UTF-8"))
}

fn loose_value(column: &Column, rule: &ColumnRule, raw: ValueRef<'_>) -> Outcome {
    match column.ty {
        ColType::Uuid => uuid_value(raw),
        ColType::Timestamptz => timestamp_value(rule, raw),
        ColType::Numeric => numeric_value(raw),
        ColType::Int => int_value(raw),
        ColType::Jsonb => json_value(rule, raw),
        ColType::Text => text_value(rule, raw),
        ColType::Bytea => bytea_value(raw),
        ColType::Vector => vector_value(raw),
    }
}

fn uuid_value(raw: ValueRef<'_>) -> Outcome {
    let s = match raw {
        ValueRef::Text(t) => match text_of(t) {
            Ok(s) => s,
            Err(o) => return o,
        },
        ValueRef::Blob(b) if b.len() == 16 => {
            let u = uuid::Uuid::from_slice(b).unwrap_or_default();
            return Outcome::ok("blob16", true, Value::String(u.hyphenated().to_string()));
        }
        _ => return Outcome::err("not_uuid", "is not a uuid"),
    };
    let t = s.trim();
    match uuid::Uuid::try_parse(t) {
        Ok(u) => {
            let canonical = u.hyphenated().to_string();
            let label = if s == canonical {
                "canonical"
            } else if t.starts_with('{') {
                "braced"
            } else if t.len() >= 9 && t[..9].eq_ignore_ascii_case("urn:uuid:") {
                "urn"
            } else if t.len() == 32 {
                "simple"
            } else if t != s {
                "padded"
            } else {
                "upper_case"
            };
            Outcome::ok(label, label != "canonical", Value::String(canonical))
        }
        Err(_) => Outcome::err("not_uuid", format!("{:?} is not a uuid", schema_truncate(s, 64))),
    }
}

fn text_value(rule: &ColumnRule, raw: ValueRef<'_>) -> Outcome {
    let (s, label) = match raw {
        ValueRef::Text(t) => match text_of(t) {
            Ok(s) => (s.to_string(), "text"),
            Err(o) => return o,
        },
        ValueRef::Integer(n) => (n.to_string(), "integer_as_text"),
        ValueRef::Real(f) => (real_text(f), "real_as_text"),
        ValueRef::Blob(b) => match std::str::from_utf8(b) {
            Ok(s) => (s.to_string(), "blob_as_text"),
            Err(_) => return Outcome::err("blob", "a BLOB that is not UTF-8 text"),
        },
        ValueRef::Null => return Outcome::ok("null", false, Value::Null),
    };
    if rule.lowercase {
        let folded = s.trim().to_lowercase();
        if folded != s {
            return Outcome::ok("case_folded", true, Value::String(folded));
        }
    }
    Outcome::ok(label, label != "text", Value::String(s))
}

/// A REAL as text the way SQLite prints it for the usual values (`1.5`, `100.0`).
fn real_text(f: f64) -> String {
    let s = format!("{f}");
    if s.contains(['.', 'e', 'E', 'N', 'i']) {
        s
    } else {
        format!("{s}.0")
    }
}

fn numeric_value(raw: ValueRef<'_>) -> Outcome {
    match raw {
        ValueRef::Integer(n) => Outcome::ok("integer", true, Value::String(n.to_string())),
        ValueRef::Real(f) if f.is_finite() => {
            // Rust prints the shortest decimal that reads back as the same double, never with an
            // exponent: 0.1 → "0.1", 12.5 → "12.5", 100.0 → "100".
            Outcome::ok("real", true, Value::String(format!("{f}")))
        }
        ValueRef::Real(_) => Outcome::err("not_a_number", "is not a finite number"),
        ValueRef::Text(t) => {
            let s = match text_of(t) {
                Ok(s) => s,
                Err(o) => return o,
            };
            let trimmed = s.trim();
            if plain_number(trimmed).is_none() {
                return Outcome::err(
                    "not_a_number",
                    format!("{:?} is not a decimal number", schema_truncate(s, 64)),
                );
            }
            // canonical_value normalises ("+7" → "7", " 007.10" → "7.10") as PostgreSQL does;
            // convert_value relabels the value `decimal_text` when that changed it.
            Outcome::ok("decimal", false, Value::String(s.into()))
        }
        _ => Outcome::err("not_a_number", "is not a number"),
    }
}

fn int_value(raw: ValueRef<'_>) -> Outcome {
    match raw {
        ValueRef::Integer(n) => Outcome::ok("integer", false, Value::from(n)),
        ValueRef::Real(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => {
            Outcome::ok("real_integral", true, Value::from(f as i64))
        }
        ValueRef::Real(f) => Outcome::err("not_an_integer", format!("{f:?} is not an integer")),
        ValueRef::Text(t) => {
            let s = match text_of(t) {
                Ok(s) => s,
                Err(o) => return o,
            };
            match plain_number(s.trim()) {
                Some(d) if d.frac.bytes().all(|b| b == b'0') && d.int.len() <= 18 => {
                    let n: i64 = d.int.parse().unwrap_or(0);
                    Outcome::ok("integer_text", true, Value::from(if d.neg { -n } else { n }))
                }
                _ => {
                    Outcome::err("not_an_integer", format!("{:?} is not an integer", schema_truncate(s, 64)))
                }
            }
        }
        _ => Outcome::err("not_an_integer", "is not an integer"),
    }
}

fn json_value(rule: &ColumnRule, raw: ValueRef<'_>) -> Outcome {
    let s = match raw {
        ValueRef::Integer(n) => return Outcome::ok("number", true, Value::from(n)),
        ValueRef::Real(f) => {
            return match serde_json::Number::from_f64(f) {
                Some(n) => Outcome::ok("number", true, Value::Number(n)),
                None => Outcome::err("invalid_json", "is not a finite number"),
            }
        }
        ValueRef::Text(t) | ValueRef::Blob(t) => match std::str::from_utf8(t) {
            Ok(s) => s,
            Err(_) => return Outcome::err("not_utf8", "is neither JSON nor UTF-8 text"),
        },
        ValueRef::Null => return Outcome::ok("null", false, Value::Null),
    };
    let blob = matches!(raw, ValueRef::Blob(_));
    match serde_json::from_str::<Value>(s) {
        Ok(v) => Outcome::ok(if blob { "blob_json" } else { "json" }, blob, v),
        Err(e) => {
            let looks_like_json = s.trim_start().starts_with(['{', '[', '"']);
            if rule.text_as_json && !looks_like_json {
                Outcome::ok("plain_text", true, Value::String(s.to_string()))
            } else if looks_like_json {
                Outcome::err("invalid_json", format!("is not valid JSON ({e})"))
            } else {
                Outcome::err(
                    "plain_text",
                    "plain text where JSON is required (the column's rule is json_strict)",
                )
            }
        }
    }
}

fn bytea_value(raw: ValueRef<'_>) -> Outcome {
    match raw {
        ValueRef::Blob(b) => Outcome::ok("blob", false, Value::String(bytea_text(b))),
        ValueRef::Text(t) => match std::str::from_utf8(t).ok().and_then(|s| s.strip_prefix("\\x")) {
            Some(h) => match hex::decode(h) {
                Ok(bytes) => Outcome::ok("hex_text", true, Value::String(bytea_text(&bytes))),
                Err(_) => Outcome::err("not_bytes", "\\x text with characters that are not hex digits"),
            },
            None => Outcome::err("not_bytes", "TEXT in a bytea column (only \\x<hex> text is converted)"),
        },
        _ => Outcome::err("not_bytes", "is not bytes"),
    }
}

fn vector_value(raw: ValueRef<'_>) -> Outcome {
    match raw {
        ValueRef::Blob(b) => match blob_vector(b) {
            Ok(v) => Outcome::ok("blob", false, v),
            Err(e) => Outcome::err("bad_vector", e),
        },
        ValueRef::Text(t) => {
            match std::str::from_utf8(t).ok().and_then(|s| serde_json::from_str::<Value>(s).ok()) {
                Some(v @ Value::Array(_)) => Outcome::ok("json_array", true, v),
                _ => Outcome::err("bad_vector", "TEXT that is not a JSON array of numbers"),
            }
        }
        _ => Outcome::err("bad_vector", "is not a vector"),
    }
}

// ----- numbers written as text -----

/// `[+-]digits[.digits]`, nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PlainNumber<'a> {
    pub neg: bool,
    pub int: &'a str,
    pub frac: &'a str,
}

impl PlainNumber<'_> {
    fn as_f64(&self) -> f64 {
        let s = format!(
            "{}{}.{}",
            if self.neg { "-" } else { "" },
            self.int,
            if self.frac.is_empty() { "0" } else { self.frac }
        );
        s.parse().unwrap_or(f64::NAN)
    }
}

pub(crate) fn plain_number(s: &str) -> Option<PlainNumber<'_>> {
    let (neg, body) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let (int, frac) = match body.split_once('.') {
        Some((i, f)) if !f.is_empty() => (i, f),
        Some(_) => return None,
        None => (body, ""),
    };
    if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    Some(PlainNumber { neg, int, frac })
}

// ----- timestamps -----

const JD_MIN: f64 = 1_721_425.5; // 0001-01-01T00:00:00Z
const JD_MAX: f64 = 5_373_484.5; // 10000-01-01T00:00:00Z
/// SQLite's Julian day number of the Unix epoch, in milliseconds.
const JD_UNIX_EPOCH_MS: i64 = 210_866_760_000_000;

/// The unit a number is read in when the column's unit is `auto`.
pub(crate) fn unit_by_magnitude(v: f64) -> Option<EpochUnit> {
    if (1.0e8..1.0e11).contains(&v) {
        Some(EpochUnit::Seconds)
    } else if (1.0e11..1.0e14).contains(&v) {
        Some(EpochUnit::Millis)
    } else if (1.0e14..1.0e17).contains(&v) {
        Some(EpochUnit::Micros)
    } else if (1.0e17..1.0e20).contains(&v) {
        Some(EpochUnit::Nanos)
    } else if (JD_MIN..JD_MAX).contains(&v) {
        Some(EpochUnit::JulianDay)
    } else {
        None
    }
}

enum Num<'a> {
    Int(i64),
    Real(f64),
    Text(PlainNumber<'a>),
}

impl Num<'_> {
    fn as_f64(&self) -> f64 {
        match self {
            Num::Int(n) => *n as f64,
            Num::Real(f) => *f,
            Num::Text(d) => d.as_f64(),
        }
    }
}

fn timestamp_value(rule: &ColumnRule, raw: ValueRef<'_>) -> Outcome {
    match raw {
        ValueRef::Integer(n) => timestamp_from_number(rule, Num::Int(n)),
        ValueRef::Real(f) => timestamp_from_number(rule, Num::Real(f)),
        ValueRef::Text(t) => match text_of(t) {
            Ok(s) => timestamp_from_text(rule, s),
            Err(o) => o,
        },
        ValueRef::Blob(_) => Outcome::err("blob", "a BLOB where a timestamp is required"),
        ValueRef::Null => Outcome::ok("null", false, Value::Null),
    }
}

fn timestamp_from_number(rule: &ColumnRule, n: Num<'_>) -> Outcome {
    let v = n.as_f64();
    let unit = match rule.numbers {
        EpochUnit::Auto => match unit_by_magnitude(v) {
            Some(u) => u,
            None => {
                return Outcome::err(
                    "ambiguous_number",
                    format!(
                        "{} is not in any automatic timestamp range (epoch s 1e8..1e11, ms 1e11..1e14, µs 1e14..1e17, \
                         ns 1e17..1e20, Julian day 1721425.5..5373484.5); pin the column's unit in [conversions]",
                        match &n {
                            Num::Int(i) => i.to_string(),
                            Num::Real(f) => format!("{f:?}"),
                            Num::Text(d) => format!("{}{}{}{}", if d.neg { "-" } else { "" }, d.int, if d.frac.is_empty() { "" } else { "." }, d.frac),
                        }
                    ),
                )
            }
        },
        u => u,
    };
    let label = unit.label();
    let micros = match unit {
        EpochUnit::JulianDay => julian_day_micros(v),
        _ => match n {
            Num::Int(i) => exact_micros(i128::from(i), 1, unit),
            Num::Text(d) => {
                if d.int.len() > 19 || d.frac.len() > 12 {
                    Err("has too many digits".to_string())
                } else {
                    let scale = 10i128.pow(d.frac.len() as u32);
                    let int: i128 = d.int.parse().unwrap_or(0);
                    let frac: i128 = if d.frac.is_empty() { 0 } else { d.frac.parse().unwrap_or(0) };
                    let num = int * scale + frac;
                    exact_micros(if d.neg { -num } else { num }, scale, unit)
                }
            }
            Num::Real(f) => {
                let (mul, div) = unit_factor(unit);
                let us = (f * mul as f64 / div as f64).round();
                if us.is_finite() && us.abs() < 9.0e18 {
                    Ok(us as i64)
                } else {
                    Err("is out of range".to_string())
                }
            }
        },
    };
    match micros.and_then(micros_to_timestamp) {
        Ok(s) => Outcome::ok(label, true, Value::String(s)),
        Err(e) => Outcome::err(label, format!("as {label}: {e}")),
    }
}

/// (multiplier, divisor) from the unit to microseconds.
fn unit_factor(unit: EpochUnit) -> (i128, i128) {
    match unit {
        EpochUnit::Seconds => (1_000_000, 1),
        EpochUnit::Millis => (1_000, 1),
        EpochUnit::Nanos => (1, 1_000),
        _ => (1, 1),
    }
}

/// `num / scale` units, in microseconds, exactly (or an error when digits below a microsecond
/// are not zero).
fn exact_micros(num: i128, scale: i128, unit: EpochUnit) -> std::result::Result<i64, String> {
    let (mul, div) = unit_factor(unit);
    let total = num.checked_mul(mul).ok_or("is out of range")?;
    let denom = scale * div;
    if total % denom != 0 {
        return Err("has digits below a microsecond, which PostgreSQL would round".into());
    }
    i64::try_from(total / denom).map_err(|_| "is out of range".into())
}

/// A Julian day number to microseconds since the Unix epoch, rounded to the millisecond exactly
/// as SQLite's date functions do (`iJD = (sqlite3_int64)(r*86400000.0 + 0.5)`).
fn julian_day_micros(jd: f64) -> std::result::Result<i64, String> {
    if !(JD_MIN..JD_MAX).contains(&jd) {
        return Err(format!("{jd:?} is outside the Julian days of years 1..9999"));
    }
    let ijd = (jd * 86_400_000.0 + 0.5) as i64;
    Ok((ijd - JD_UNIX_EPOCH_MS) * 1000)
}

fn micros_to_timestamp(us: i64) -> std::result::Result<String, String> {
    let t = DateTime::<Utc>::from_timestamp_micros(us).ok_or("is out of range")?;
    if !(1..=9999).contains(&t.year()) {
        return Err(format!("is in the year {}, outside 1..9999", t.year()));
    }
    Ok(format_timestamp(t))
}

fn checked_timestamp(t: DateTime<Utc>) -> std::result::Result<String, String> {
    if t.nanosecond() >= 1_000_000_000 {
        return Err("is a leap second (:60), which PostgreSQL reads as the next minute".into());
    }
    if !t.nanosecond().is_multiple_of(1000) {
        return Err("has digits below a microsecond, which PostgreSQL would round".into());
    }
    if !(1..=9999).contains(&t.year()) {
        return Err(format!("is in the year {}, outside 1..9999", t.year()));
    }
    Ok(format_timestamp(t))
}

fn timestamp_from_text(rule: &ColumnRule, s: &str) -> Outcome {
    let t = s.trim();
    if let Some(d) = plain_number(t) {
        return timestamp_from_number(rule, Num::Text(d));
    }
    // RFC 3339 (with Z or an offset); a space or a lower-case t between date and time is accepted.
    let normalised: String = if t.len() > 10 && t.is_char_boundary(10) && t.is_char_boundary(11) {
        match &t[10..11] {
            " " | "t" => format!("{}T{}", &t[..10], &t[11..]),
            _ => t.to_string(),
        }
    } else {
        t.to_string()
    };
    if let Ok(dt) = DateTime::parse_from_rfc3339(&normalised) {
        let utc = dt.with_timezone(&Utc);
        return match checked_timestamp(utc) {
            Ok(c) => {
                let label = if c == s { "canonical" } else { "rfc3339" };
                Outcome::ok(label, label != "canonical", Value::String(c))
            }
            Err(e) => Outcome::err("rfc3339", e),
        };
    }
    if let Some((ndt, label)) = parse_naive(&normalised) {
        let label = match (label, t.as_bytes().get(10)) {
            ("naive", Some(b' ')) => "naive_space",
            ("naive", _) => "naive_t",
            (l, _) => l,
        };
        let offset = FixedOffset::east_opt(rule.naive_offset_seconds)
            .unwrap_or(FixedOffset::east_opt(0).expect("UTC"));
        return match offset.from_local_datetime(&ndt).single() {
            Some(dt) => match checked_timestamp(dt.with_timezone(&Utc)) {
                Ok(c) => Outcome::ok(label, true, Value::String(c)),
                Err(e) => Outcome::err(label, e),
            },
            None => Outcome::err(label, "is not a valid local time"),
        };
    }
    Outcome::err(
        "unrecognised",
        format!(
            "{:?} is not a timestamp in a known format (RFC 3339, YYYY-MM-DD[ HH:MM[:SS[.f]]], epoch s/ms/µs/ns, Julian day)",
            schema_truncate(s, 64)
        ),
    )
}

/// `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM`, `YYYY-MM-DDTHH:MM:SS[.f]` (the separator already a `T`).
fn parse_naive(t: &str) -> Option<(NaiveDateTime, &'static str)> {
    let b = t.as_bytes();
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    if b.len() == 10 {
        let d = NaiveDate::parse_from_str(t, "%Y-%m-%d").ok()?;
        return Some((d.and_hms_opt(0, 0, 0)?, "date_only"));
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"] {
        if let Ok(ndt) = NaiveDateTime::parse_from_str(t, fmt) {
            return Some((ndt, "naive"));
        }
    }
    None
}

// ----- CHECKs the registry does not describe -----

/// Does `extra_check` have a CHECK for this column? (The backfill's plain rows skip the rules only
/// for tables with none: src/backfill/plain.rs.)
pub(crate) fn has_extra_check(table: &str, column: &str) -> bool {
    matches!(
        (table, column),
        ("jobs", "type")
            | ("api_keys", "provider")
            | ("prompts", "key")
            | ("audit_events", "action")
            | ("users", "email")
            | ("jobs", "progress")
            | ("generated_text", "version")
            | ("prompts", "version")
    )
}

/// The CHECKs of migrations/*/…target_schema/entities that the registry has no field for.
fn extra_check(table: &Table, column: &Column, v: &Value) -> std::result::Result<(), String> {
    let bad = match (table.name, column.name) {
        ("jobs", "type") | ("api_keys", "provider") | ("prompts", "key") | ("audit_events", "action") => {
            v.as_str() == Some("")
        }
        ("users", "email") => v.as_str().is_some_and(|s| s != s.to_lowercase()),
        ("jobs", "progress") => v.as_str().and_then(plain_number).is_some_and(|d| {
            let int: u128 = d.int.parse().unwrap_or(u128::MAX);
            let zero_frac = d.frac.bytes().all(|b| b == b'0');
            (d.neg && !(int == 0 && zero_frac)) || int > 100 || (int == 100 && !zero_frac)
        }),
        ("generated_text", "version") | ("prompts", "version") => v.as_i64().is_some_and(|n| n < 1),
        _ => false,
    };
    if bad {
        return Err(match column.name {
            "email" => "must be lower-case",
            "progress" => "must be between 0 and 100",
            "version" => "must be at least 1",
            _ => "must not be empty",
        }
        .into());
    }
    Ok(())
}

/// A converted row as the values SQLite stores for it, in registry order (what an insert into our
/// schema binds; what the backfill's encoder reads from a row of an adopted file).
pub fn to_sqlite_values(table: &Table, row: &WireRow) -> Result<Vec<SqlValue>> {
    table.columns.iter().map(|c| encode_for_sqlite(c, row.get(c.name).unwrap_or(&Value::Null))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::types::Value as V;

    fn rules(t: &str) -> (&'static Table, ColumnRules) {
        let table = schema::table(t).unwrap();
        (table, ColumnRules::new(table, &Overrides::none()))
    }

    fn one(t: &str, c: &str, v: V) -> Outcome {
        let (table, rules) = rules(t);
        let col = table.column(c).unwrap();
        convert_value(table, col, rules.rule(c).unwrap(), ValueRef::from(&v))
    }

    fn ok(t: &str, c: &str, v: V) -> Value {
        let o = one(t, c, v.clone());
        o.result.unwrap_or_else(|e| panic!("{t}.{c} {v:?}: {e}"))
    }

    #[test]
    fn has_extra_check_names_every_column_extra_check_checks() {
        // Values each CHECK refuses; a column not named by has_extra_check must accept them all.
        let refused =
            [Value::from(""), Value::from("UPPER"), Value::from("101"), Value::from("-1"), Value::from(0)];
        for table in schema::TABLES {
            for c in table.columns {
                let checked = refused.iter().any(|v| extra_check(table, c, v).is_err());
                assert_eq!(checked, has_extra_check(table.name, c.name), "{}.{}", table.name, c.name);
            }
        }
    }

    #[test]
    fn timestamps_by_value() {
        let c = |v: V| ok("jobs", "queued_at", v);
        // 2024-05-01T10:00:00.123Z in every form.
        let want = "2024-05-01T10:00:00.123000Z";
        assert_eq!(c(V::Integer(1_714_557_600_123)), want);
        assert_eq!(c(V::Text("1714557600123".into())), want);
        assert_eq!(c(V::Integer(1_714_557_600_123_000)), want);
        assert_eq!(c(V::Integer(1_714_557_600_123_000_000)), want);
        assert_eq!(c(V::Text("1714557600.123".into())), want);
        assert_eq!(c(V::Real(1_714_557_600.123)), want);
        assert_eq!(c(V::Text("2024-05-01 10:00:00.123".into())), want);
        assert_eq!(c(V::Text("2024-05-01T10:00:00.123".into())), want);
        assert_eq!(c(V::Text("2024-05-01T12:00:00.123+02:00".into())), want);
        assert_eq!(c(V::Text("2024-05-01 12:00:00.123+02:00".into())), want);
        assert_eq!(c(V::Text("2024-05-01T10:00:00.123Z".into())), want);
        assert_eq!(c(V::Text("2024-05-01".into())), "2024-05-01T00:00:00.000000Z");
        assert_eq!(c(V::Text("2024-05-01 10:00".into())), "2024-05-01T10:00:00.000000Z");
        assert_eq!(c(V::Integer(1_714_557_600)), "2024-05-01T10:00:00.000000Z");
        // Julian day, as SQLite reads it.
        assert_eq!(c(V::Real(2_460_431.916_666_666_5)), "2024-05-01T10:00:00.000000Z");
        assert_eq!(c(V::Real(2_440_587.5)), "1970-01-01T00:00:00.000000Z");
        for bad in [V::Integer(0), V::Integer(86_400), V::Text("yesterday".into()), V::Integer(-5)] {
            assert!(one("jobs", "queued_at", bad.clone()).result.is_err(), "{bad:?}");
        }
        // Sub-microsecond digits are refused, never rounded.
        assert!(one("jobs", "queued_at", V::Text("1714557600.1234567".into())).result.is_err());
        assert!(one("jobs", "queued_at", V::Integer(1_714_557_600_123_000_001)).result.is_err());
        assert!(one("jobs", "queued_at", V::Text("2016-12-31 23:59:60".into())).result.is_err());
    }

    #[test]
    fn labels_name_the_detected_form() {
        let l = |v: V| one("jobs", "queued_at", v).label;
        assert_eq!(l(V::Integer(1_714_557_600)), "epoch_s");
        assert_eq!(l(V::Integer(1_714_557_600_000)), "epoch_ms");
        assert_eq!(l(V::Real(2_460_431.5)), "julian_day");
        assert_eq!(l(V::Text("2024-05-01T10:00:00.000000Z".into())), "canonical");
        assert_eq!(l(V::Text("2024-05-01T10:00:00Z".into())), "rfc3339");
        assert_eq!(l(V::Text("nope".into())), "unrecognised");
    }

    #[test]
    fn pinned_units_and_offsets() {
        let table = schema::table("jobs").unwrap();
        let mut o = BTreeMap::new();
        o.insert("jobs.queued_at".to_string(), "epoch_ms".to_string());
        o.insert("jobs.started_at".to_string(), "naive_offset=+02:00".to_string());
        let rules = ColumnRules::new(table, &Overrides::parse(&o).unwrap());
        let conv = |c: &str, v: V| {
            convert_value(table, table.column(c).unwrap(), rules.rule(c).unwrap(), ValueRef::from(&v))
                .result
                .unwrap()
        };
        // 5e10 would be seconds by magnitude (year 3554); pinned, it is milliseconds.
        assert_eq!(conv("queued_at", V::Integer(50_000_000_000)), "1971-08-02T16:53:20.000000Z");
        assert_eq!(conv("started_at", V::Text("2024-05-01 12:00:00".into())), "2024-05-01T10:00:00.000000Z");
        for bad in
            [("jobs.id", "epoch_ms"), ("jobs.nope", "auto"), ("jobs.queued_at", "epoch_days"), ("x", "auto")]
        {
            let m: BTreeMap<_, _> = [(bad.0.to_string(), bad.1.to_string())].into();
            assert!(Overrides::parse(&m).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn other_types() {
        let u = "0b0e7c5c-2d4a-4f55-9a4e-6a1f1c3e2b10";
        for v in [
            u.to_uppercase(),
            format!("{{{u}}}"),
            format!("urn:uuid:{u}"),
            u.replace('-', ""),
            format!(" {u} "),
        ] {
            assert_eq!(ok("users", "id", V::Text(v)), u);
        }
        let bytes = uuid::Uuid::parse_str(u).unwrap().as_bytes().to_vec();
        assert_eq!(ok("users", "id", V::Blob(bytes)), u);
        assert!(one("users", "id", V::Text("legacy-1".into())).result.is_err());

        assert_eq!(ok("jobs", "progress", V::Text(" 42.50 ".into())), "42.50");
        assert_eq!(ok("jobs", "progress", V::Integer(7)), "7");
        assert_eq!(ok("jobs", "progress", V::Real(12.5)), "12.5");
        assert!(one("jobs", "progress", V::Text("abc".into())).result.is_err());
        assert!(one("jobs", "progress", V::Text("100.01".into())).result.is_err());
        assert_eq!(ok("jobs", "progress", V::Text("".into())), "0");

        assert_eq!(ok("prompts", "version", V::Text("3".into())), 3);
        assert_eq!(ok("prompts", "version", V::Real(4.0)), 4);
        assert!(one("prompts", "version", V::Text("0".into())).result.is_err());
        assert!(one("prompts", "version", V::Text("2.5".into())).result.is_err());

        assert_eq!(ok("jobs", "payload", V::Text("hello world".into())), Value::String("hello world".into()));
        assert_eq!(ok("jobs", "payload", V::Text(r#"{"a":1}"#.into())), serde_json::json!({"a": 1}));
        assert_eq!(ok("jobs", "payload", V::Text("".into())), serde_json::json!({}));
        assert_eq!(ok("jobs", "payload", V::Null), serde_json::json!({}));
        assert!(one("jobs", "payload", V::Text(r#"{"a":1"#.into())).result.is_err());
        assert!(one("jobs", "payload", V::Text(r#"{"a":"\u0000"}"#.into())).result.is_err());

        assert_eq!(ok("jobs", "started_at", V::Text("".into())), Value::Null);
        assert_eq!(ok("users", "email", V::Text(" Bob@Example.COM ".into())), "bob@example.com");
        assert_eq!(ok("pages", "title", V::Text("".into())), "");
        assert_eq!(ok("pages", "title", V::Integer(42)), "42");
        assert!(one("jobs", "type", V::Text("".into())).result.is_err());
        assert!(one("jobs", "status", V::Text("done".into())).result.is_err());
    }

    #[test]
    fn secrets_are_redacted_in_rejects() {
        let (table, rules) = rules("api_keys");
        let raw = vec![
            V::Text("0b0e7c5c-2d4a-4f55-9a4e-6a1f1c3e2b10".into()),
            V::Text("0b0e7c5c-2d4a-4f55-9a4e-6a1f1c3e2b11".into()),
            V::Text("openai".into()),
            V::Text("sk-live-plaintext".into()),
            V::Text("{}".into()),
            V::Null,
            V::Text("2024-05-01 10:00:00".into()),
            V::Text("2024-05-01 10:00:00".into()),
        ];
        let rejects = convert_row(table, &raw, &rules).unwrap_err();
        assert_eq!(rejects.len(), 1);
        assert_eq!(rejects[0].column.as_deref(), Some("secret_ciphertext"));
        assert_eq!(rejects[0].value.as_deref(), Some("<redacted>"));
        assert!(!format!("{rejects:?}").contains("sk-live"));
    }
}
