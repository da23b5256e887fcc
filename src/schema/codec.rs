//! Conversions between the wire form of a row and the stores.
//!
//! The wire form is a JSON object keyed by column name, the same everywhere a row travels (the
//! API, the outbox image, the C ABI): uuid as a lower-case hyphenated string, text as a string,
//! jsonb as the JSON value itself, timestamptz as `YYYY-MM-DDTHH:MM:SS.ffffffZ`, numeric as a
//! string holding an exact decimal, int as a number, bytea as `"\\x<hex>"` (PostgreSQL's own
//! text form), vector as an array of numbers. PostgreSQL reads this form directly with
//! `jsonb_populate_recordset`, so the replicator needs no per-type code.

use super::{ColType, Column, Table};
use crate::error::{Error, Result};
use chrono::{DateTime, SecondsFormat, Timelike, Utc};
use serde_json::{Map, Value};

/// Longest text value accepted in one column (PostgreSQL allows 1 GB; the monolith never needs it).
pub const MAX_TEXT_BYTES: usize = 8 * 1024 * 1024;
/// The most bytes of free text one row may put into one of PostgreSQL's btree indexes (the key,
/// a unique constraint, `Table::indexes`; summed over the index's text columns). PostgreSQL's
/// btree (version 4, 8 kB pages) refuses an index entry over 2,704 bytes; the rest is left for the
/// entry's header and the index's fixed-width columns. PostgreSQL compresses large entries, so
/// some longer values would fit, but whether one does depends on its content: refusing by length
/// gives the same answer for every value of that length, before SQLite commits anything.
pub const MAX_INDEXED_TEXT_BYTES: usize = 2_600;
/// pgvector's own limit on a vector's dimension.
pub const MAX_VECTOR_DIM: usize = 16_000;

/// A value ready to bind to a SQLite statement.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    Null,
    Integer(i64),
    Text(String),
    Blob(Vec<u8>),
}

impl rusqlite::ToSql for SqlValue {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(match self {
            SqlValue::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            SqlValue::Integer(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
            SqlValue::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            SqlValue::Blob(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
        })
    }
}

/// The current time in the canonical timestamp form, truncated to microseconds.
pub fn now_timestamp() -> String {
    format_timestamp(Utc::now())
}

pub fn format_timestamp(t: DateTime<Utc>) -> String {
    let t = t.with_nanosecond(t.nanosecond() / 1000 * 1000).unwrap_or(t);
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Which check [`validate_row`] makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowMode {
    /// A whole new row: defaults, a new id and timestamps fill what is missing.
    Insert,
    /// Some columns of an existing row; the key may not change.
    Patch,
}

/// Check every field of a caller's row against the registry and return it in canonical wire
/// form. An unknown column, a wrong type, a value outside an enum, a broken CHECK rule, a bad
/// uuid or timestamp: an error naming `table.column` (and the rule).
pub fn validate_row(table: &Table, input: &Value, mode: RowMode) -> Result<Map<String, Value>> {
    let obj = input.as_object().ok_or_else(|| Error::invalid(table.name, "a row must be a JSON object"))?;
    let mut out = Map::with_capacity(table.columns.len());
    for (name, value) in obj {
        let column = table.column(name).ok_or_else(|| {
            Error::invalid(
                format!("{}.{}", table.name, super::truncate_for_message(name)),
                format!(
                    "no such column; columns are: {}",
                    table.column_names().collect::<Vec<_>>().join(", ")
                ),
            )
        })?;
        if mode == RowMode::Patch && column.name == table.key {
            return Err(Error::invalid(field(table, column), "the key cannot be changed"));
        }
        let value = canonical_value(table, column, value)?;
        check_rule(table, column, &value)?;
        out.insert(column.name.to_string(), value);
    }
    if mode == RowMode::Insert {
        for column in table.columns {
            if out.contains_key(column.name) {
                continue;
            }
            let value = if let Some(d) = column.default {
                serde_json::from_str(d)
                    .map_err(|e| Error::Internal(format!("registry default of {}: {e}", column.name)))?
            } else if column.name == table.key && column.ty == ColType::Uuid {
                Value::String(uuid::Uuid::now_v7().to_string())
            } else if column.generated_default == Some(super::GeneratedDefault::Now)
                // The caches' expires_at has no default in either store; an insert leaving it out
                // has always got the current time (an entry expired at once), and still does.
                || (column.ty == ColType::Timestamptz && !column.nullable)
            {
                Value::String(now_timestamp())
            } else if column.nullable {
                Value::Null
            } else {
                return Err(Error::invalid(field(table, column), "is required"));
            };
            out.insert(column.name.to_string(), value);
        }
    }
    Ok(out)
}

/// A canonical value of `column` against the column's CHECK rule (`Column::rule`), as the error
/// `validate_row` gives: the stores would refuse it, and their refusal would be a conflict.
pub fn check_rule(table: &Table, column: &Column, value: &Value) -> Result<()> {
    match (super::rules::rule_broken(column, value), column.rule) {
        (Some(words), Some(rule)) => Err(Error::invalid(
            field(table, column),
            format!("{words} (the CHECK {} of both stores)", rule.postgres_sql(column.name)),
        )),
        _ => Ok(()),
    }
}

/// Refuse a row (whole, or the columns a patch sets) whose text in one of PostgreSQL's btree
/// indexes exceeds [`MAX_INDEXED_TEXT_BYTES`]: SQLite has no such limit, so it would commit and
/// then never replicate (a dead letter: "index row requires … bytes").
pub fn check_indexed_text(table: &Table, row: &Map<String, Value>) -> Result<()> {
    let len = |c: &Column| row.get(c.name).and_then(Value::as_str).map_or(0, str::len);
    for columns in table.indexed_text() {
        let total: usize = columns.iter().map(|c| len(c)).sum();
        if total <= MAX_INDEXED_TEXT_BYTES {
            continue;
        }
        let longest = columns.iter().copied().max_by_key(|c| len(c)).unwrap_or(columns[0]);
        let names = columns.iter().map(|c| c.name).collect::<Vec<_>>().join(", ");
        let size = if columns.len() == 1 {
            format!("is {total} bytes")
        } else {
            format!("is {} bytes ({total} with the other text of the index on {names})", len(longest))
        };
        return Err(Error::invalid(
            field(table, longest),
            format!(
                "{size}; PostgreSQL's btree index on {}({names}) holds at most {MAX_INDEXED_TEXT_BYTES} bytes of text \
                 per row: shorten it, or index a hash of it",
                table.name
            ),
        ));
    }
    Ok(())
}

fn field(table: &Table, column: &Column) -> String {
    format!("{}.{}", table.name, column.name)
}

/// The canonical wire form of one value, or an error naming the column.
pub fn canonical_value(table: &Table, column: &Column, value: &Value) -> Result<Value> {
    let bad = |msg: String| Error::invalid(field(table, column), msg);
    if value.is_null() {
        return if column.nullable { Ok(Value::Null) } else { Err(bad("must not be null".into())) };
    }
    match column.ty {
        ColType::Uuid => {
            let s = value.as_str().ok_or_else(|| bad("must be a uuid string".into()))?;
            let u = uuid::Uuid::try_parse(s)
                .map_err(|_| bad(format!("{:?} is not a uuid", super::truncate_for_message(s))))?;
            Ok(Value::String(u.hyphenated().to_string()))
        }
        ColType::Text => {
            let s = value.as_str().ok_or_else(|| bad("must be a string".into()))?;
            check_text(s).map_err(bad)?;
            if let Some(allowed) = column.allowed {
                if !allowed.contains(&s) {
                    return Err(bad(format!(
                        "{:?} is not one of {}",
                        super::truncate_for_message(s),
                        allowed.join(", ")
                    )));
                }
            }
            Ok(value.clone())
        }
        ColType::Jsonb => {
            check_json(value, 0).map_err(bad)?;
            check_json_size(value).map_err(bad)?;
            Ok(json_as_postgres_keeps_it(value))
        }
        ColType::Timestamptz => {
            let s = value.as_str().ok_or_else(|| bad("must be an RFC 3339 timestamp string".into()))?;
            Ok(Value::String(canonical_timestamp(s).map_err(bad)?))
        }
        ColType::Numeric => {
            let text = match value {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => return Err(bad("must be a decimal number or a string holding one".into())),
            };
            Ok(Value::String(canonical_decimal(&text).map_err(bad)?))
        }
        ColType::Int => {
            let i = value.as_i64().ok_or_else(|| bad("must be an integer".into()))?;
            i32::try_from(i).map_err(|_| bad(format!("{i} is outside the 32-bit integer range")))?;
            Ok(Value::from(i))
        }
        ColType::Bytea => {
            let s = value.as_str().ok_or_else(|| bad("must be a \"\\\\x<hex>\" string".into()))?;
            let bytes = decode_bytea(s).map_err(bad)?;
            Ok(Value::String(encode_bytea(&bytes)))
        }
        ColType::Vector => {
            let floats = vector_from_json(value).map_err(bad)?;
            Ok(vector_to_json(&floats))
        }
    }
}

fn check_text(s: &str) -> Result<(), String> {
    if s.len() > MAX_TEXT_BYTES {
        return Err(format!("is {} bytes; at most {MAX_TEXT_BYTES} are accepted", s.len()));
    }
    // PostgreSQL text cannot hold NUL; refusing it here keeps the two stores equal.
    if s.contains('\0') {
        return Err("contains a NUL character, which PostgreSQL cannot store".into());
    }
    Ok(())
}

/// PostgreSQL's jsonb refuses NUL in strings and very deep nesting; refuse both up front.
fn check_json(v: &Value, depth: usize) -> Result<(), String> {
    if depth > 64 {
        return Err("JSON is nested deeper than 64 levels".into());
    }
    match v {
        Value::String(s) => check_text(s),
        Value::Array(a) => a.iter().try_for_each(|x| check_json(x, depth + 1)),
        Value::Object(o) => o.iter().try_for_each(|(k, x)| {
            check_text(k)?;
            check_json(x, depth + 1)
        }),
        Value::Number(n) => {
            if n.as_f64().is_some_and(|f| f.is_finite()) {
                Ok(())
            } else {
                Err("holds a number out of range".into())
            }
        }
        _ => Ok(()),
    }
}

/// The JSON value with every number as PostgreSQL's jsonb gives it back, so both stores hold the
/// same JSON. jsonb keeps numbers as `numeric`: a float serde_json writes in exponent form without
/// a fraction (`1e+16`, `2.5e+18`: integral, |x| ≥ 1e16) comes back as an integer
/// (`10000000000000000`), which serde_json reads as an integer, not equal to the float. Such
/// floats are stored as the integer they are (while it fits in i64/u64; past that PostgreSQL's
/// digits read back as the same float).
fn json_as_postgres_keeps_it(v: &Value) -> Value {
    match v {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(0.0);
            if f.fract() == 0.0 && f.abs() >= 1e16 {
                // 2^64 and -2^63 as f64: the casts below are exact inside these bounds.
                if (0.0..18_446_744_073_709_551_616.0).contains(&f) {
                    return Value::from(f as u64);
                }
                if (-9_223_372_036_854_775_808.0..0.0).contains(&f) {
                    return Value::from(f as i64);
                }
            }
            v.clone()
        }
        Value::Array(a) => Value::Array(a.iter().map(json_as_postgres_keeps_it).collect()),
        Value::Object(o) => {
            Value::Object(o.iter().map(|(k, x)| (k.clone(), json_as_postgres_keeps_it(x))).collect())
        }
        _ => v.clone(),
    }
}

/// A jsonb value is held to the same size as a text value. Without a bound, a value past
/// PostgreSQL's 256 MB jsonb limit would commit to SQLite and never replicate.
fn check_json_size(v: &Value) -> Result<(), String> {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            if self.0 > MAX_TEXT_BYTES {
                // Stop serializing: the answer is known.
                return Err(std::io::Error::other("too large"));
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut n = Count(0);
    match serde_json::to_writer(&mut n, v) {
        Ok(()) => Ok(()),
        Err(_) => Err(format!(
            "is more than {MAX_TEXT_BYTES} bytes as JSON text; at most {MAX_TEXT_BYTES} are accepted"
        )),
    }
}

/// Accept RFC 3339 with any offset; store UTC with exactly six fraction digits. A value with
/// sub-microsecond digits is refused: PostgreSQL would round it and the stores would differ.
pub(crate) fn canonical_timestamp(s: &str) -> Result<String, String> {
    let t = DateTime::parse_from_rfc3339(s)
        .map_err(|_| {
            format!(
                "{:?} is not an RFC 3339 timestamp (e.g. 2026-01-02T03:04:05.123456Z)",
                super::truncate_for_message(s)
            )
        })?
        .with_timezone(&Utc);
    // chrono keeps a leap second (:60) as nanoseconds past 1e9; PostgreSQL reads 23:59:60 as
    // the next minute's :00, so the two stores would hold different instants.
    if t.nanosecond() >= 1_000_000_000 {
        return Err(
            "is a leap second (:60), which PostgreSQL reads as the next minute; give :59 or the next :00"
                .into(),
        );
    }
    if t.nanosecond() % 1000 != 0 {
        return Err("has more than microsecond precision".into());
    }
    if !(1..=9999).contains(&chrono::Datelike::year(&t)) {
        return Err("year must be between 1 and 9999".into());
    }
    Ok(format_timestamp(t))
}

/// An exact decimal: optional sign, digits, optional fraction. Kept as text so no float touches it.
pub(crate) fn canonical_decimal(s: &str) -> Result<String, String> {
    let t = s.trim();
    let body = t.strip_prefix(['-', '+']).unwrap_or(t);
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    let digits_ok = !int.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit())
        && (!body.contains('.') || !frac.is_empty());
    if !digits_ok || t.len() > 100 {
        return Err(format!("{:?} is not a decimal number", super::truncate_for_message(s)));
    }
    // PostgreSQL's numeric keeps the scale ("12.50" stays "12.50") but drops leading zeros and
    // the sign of zero; normalise the same way so both stores hold the same text.
    let negative = t.starts_with('-');
    let int = int.trim_start_matches('0');
    let int = if int.is_empty() { "0" } else { int };
    let zero = int == "0" && frac.bytes().all(|b| b == b'0');
    let mut out = String::with_capacity(t.len());
    if negative && !zero {
        out.push('-');
    }
    out.push_str(int);
    if !frac.is_empty() {
        out.push('.');
        out.push_str(frac);
    }
    Ok(out)
}

pub(crate) fn encode_bytea(bytes: &[u8]) -> String {
    format!("\\x{}", hex::encode(bytes))
}

pub(crate) fn decode_bytea(s: &str) -> Result<Vec<u8>, String> {
    let h = s.strip_prefix("\\x").ok_or("must start with \\x followed by hex digits")?;
    hex::decode(h).map_err(|_| "holds characters that are not hex digits".to_string())
}

fn vector_from_json(v: &Value) -> Result<Vec<f32>, String> {
    let a = v.as_array().ok_or("must be an array of numbers")?;
    if a.is_empty() || a.len() > MAX_VECTOR_DIM {
        return Err(format!("must have 1 to {MAX_VECTOR_DIM} components, has {}", a.len()));
    }
    a.iter()
        .map(|x| {
            let f = x.as_f64().ok_or("must hold only numbers")? as f32;
            if f.is_finite() {
                Ok(f)
            } else {
                Err("holds a component that is not a finite 32-bit float".to_string())
            }
        })
        .collect()
}

/// A vector in pgvector's text form (`[-0,1.5,3e-07]`, each component written so that it reads
/// back as the same float4) as wire JSON, bit for bit: `-0` stays negative zero.
pub(crate) fn vector_from_pg_text(s: &str) -> Result<Value> {
    let bad = || Error::Internal("PostgreSQL returned a vector that is not pgvector's text form".into());
    let inner = s.trim().strip_prefix('[').and_then(|r| r.strip_suffix(']')).ok_or_else(bad)?;
    let floats =
        inner.split(',').map(|x| x.trim().parse::<f32>().map_err(|_| bad())).collect::<Result<Vec<f32>>>()?;
    Ok(vector_to_json(&floats))
}

fn vector_to_json(v: &[f32]) -> Value {
    Value::Array(v.iter().map(|f| Value::from(*f as f64)).collect())
}

pub(crate) fn vector_to_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|f| f.to_le_bytes()).collect()
}

pub(crate) fn vector_from_blob(b: &[u8]) -> Result<Vec<f32>> {
    if !b.len().is_multiple_of(4) {
        return Err(Error::Internal("a vector BLOB's length is not a multiple of 4".into()));
    }
    Ok(b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

/// A canonical wire value to what SQLite stores for the column.
pub fn encode_for_sqlite(column: &Column, value: &Value) -> Result<SqlValue> {
    if value.is_null() {
        return Ok(SqlValue::Null);
    }
    let wrong = || Error::Internal(format!("{} holds a value that was not validated", column.name));
    Ok(match column.ty {
        ColType::Uuid | ColType::Text | ColType::Timestamptz | ColType::Numeric => {
            SqlValue::Text(value.as_str().ok_or_else(wrong)?.to_string())
        }
        ColType::Jsonb => SqlValue::Text(value.to_string()),
        ColType::Int => SqlValue::Integer(value.as_i64().ok_or_else(wrong)?),
        ColType::Bytea => {
            SqlValue::Blob(decode_bytea(value.as_str().ok_or_else(wrong)?).map_err(|_| wrong())?)
        }
        ColType::Vector => SqlValue::Blob(vector_to_blob(&vector_from_json(value).map_err(|_| wrong())?)),
    })
}

/// Read a row selected as the table's columns in registry order into the wire form.
pub fn decode_sqlite_row(table: &Table, row: &rusqlite::Row<'_>) -> Result<Map<String, Value>> {
    use rusqlite::types::ValueRef;
    let mut out = Map::with_capacity(table.columns.len());
    for (i, column) in table.columns.iter().enumerate() {
        let v = match row.get_ref(i)? {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(n) => match column.ty {
                ColType::Int => Value::from(n),
                _ => Value::String(n.to_string()),
            },
            ValueRef::Real(f) => match column.ty {
                ColType::Numeric => Value::String(f.to_string()),
                _ => Value::from(f),
            },
            ValueRef::Text(t) => {
                let s = std::str::from_utf8(t).map_err(|_| {
                    Error::Internal(format!("{}.{} holds text that is not UTF-8", table.name, column.name))
                })?;
                match column.ty {
                    ColType::Jsonb => serde_json::from_str(s).map_err(|e| {
                        Error::Internal(format!("{}.{} holds invalid JSON: {e}", table.name, column.name))
                    })?,
                    _ => Value::String(s.to_string()),
                }
            }
            ValueRef::Blob(b) => match column.ty {
                ColType::Vector => vector_to_json(&vector_from_blob(b)?),
                _ => Value::String(encode_bytea(b)),
            },
        };
        out.insert(column.name.to_string(), v);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::table;
    use serde_json::json;

    #[test]
    fn timestamps_become_utc_microseconds() {
        assert_eq!(
            canonical_timestamp("2026-01-02T05:04:05.5+02:00").unwrap(),
            "2026-01-02T03:04:05.500000Z"
        );
        assert!(canonical_timestamp("2026-01-02T03:04:05.1234567Z").is_err());
        assert!(canonical_timestamp("yesterday").is_err());
    }

    /// Regression (tests/hostile.rs): a float like 2.5e18 was stored as `2.5e18` in SQLite and
    /// came back from PostgreSQL's jsonb as the integer `2500000000000000000`: the stores differed.
    #[test]
    fn integral_floats_past_1e16_are_stored_as_postgres_returns_them() {
        let logs = table("job_logs").unwrap();
        let job = uuid::Uuid::new_v4().to_string();
        let given: Value = serde_json::from_str(
            "[1e16, 2.5e18, -1e16, -9.2e18, 1e19, 1.5, 1e15, 1e20, -1e19, 9007199254740993, {\"k\": [3e17]}]",
        )
        .unwrap();
        let row = validate_row(
            logs,
            &json!({"job_id": job, "level": "info", "message": "m", "context": given}),
            RowMode::Insert,
        )
        .unwrap();
        assert_eq!(
            row["context"].to_string(),
            "[10000000000000000,2500000000000000000,-10000000000000000,-9200000000000000000,10000000000000000000,\
             1.5,1000000000000000.0,1e+20,-1e+19,9007199254740993,{\"k\":[300000000000000000]}]"
        );
    }

    /// Regression (tests/hostile.rs): jsonb had no size bound, so a value past PostgreSQL's 256 MB
    /// jsonb limit committed to SQLite and could never replicate.
    #[test]
    fn jsonb_is_held_to_the_text_limit() {
        let logs = table("job_logs").unwrap();
        let job = uuid::Uuid::new_v4().to_string();
        let piece = "z".repeat(MAX_TEXT_BYTES / 4);
        let row =
            |context: Value| json!({"job_id": job, "level": "info", "message": "m", "context": context});
        assert!(validate_row(logs, &row(json!([piece, piece, piece])), RowMode::Insert).is_ok());
        let e = validate_row(logs, &row(json!([piece, piece, piece, piece, piece])), RowMode::Insert)
            .unwrap_err();
        assert!(e.to_string().contains("job_logs.context") && e.to_string().contains("as JSON text"), "{e}");
    }

    /// Regression (tests/hostile.rs): a leap second was accepted and stored as `23:59:60` in
    /// SQLite while PostgreSQL stored the next day's `00:00:00`.
    #[test]
    fn leap_seconds_are_refused() {
        for s in ["2016-12-31T23:59:60Z", "2016-12-31T23:59:60.5Z", "2026-01-02T05:04:60+02:00"] {
            let e = canonical_timestamp(s).unwrap_err();
            assert!(e.contains("leap second"), "{s}: {e}");
        }
        assert_eq!(
            canonical_timestamp("2016-12-31T23:59:59.999999Z").unwrap(),
            "2016-12-31T23:59:59.999999Z"
        );
    }

    /// Regression (issue 14, item 5): see tests/repo_validation.rs for the stores' side.
    #[test]
    fn indexed_text_is_held_to_the_btree_limit() {
        let pages = table("pages").unwrap();
        let page = |url: String, title: String| {
            validate_row(pages, &json!({"url": url, "title": title}), RowMode::Insert).unwrap()
        };
        let max = MAX_INDEXED_TEXT_BYTES;
        assert!(check_indexed_text(pages, &page("u".repeat(max), "t".repeat(3 * max))).is_ok());
        let e = check_indexed_text(pages, &page("u".repeat(max + 1), "t".into())).unwrap_err();
        assert!(matches!(&e, Error::InvalidArgument { field, .. } if field == "pages.url"), "{e}");
        assert!(e.to_string().contains(&format!("at most {max} bytes")), "{e}");
        // The text columns of one index count together, and the longer one is named.
        let embeddings = table("embeddings").unwrap();
        let row = |h: usize, m: usize| {
            let mut r = Map::new();
            r.insert("text_hash".into(), Value::String("h".repeat(h)));
            r.insert("model".into(), Value::String("m".repeat(m)));
            r
        };
        assert!(check_indexed_text(embeddings, &row(max / 2, max / 2)).is_ok());
        let e = check_indexed_text(embeddings, &row(max / 2 + 1, max / 2)).unwrap_err();
        assert!(matches!(&e, Error::InvalidArgument { field, .. } if field == "embeddings.text_hash"), "{e}");
    }

    #[test]
    fn decimals_stay_exact() {
        assert_eq!(canonical_decimal("42.50").unwrap(), "42.50");
        assert_eq!(canonical_decimal("+7").unwrap(), "7");
        assert_eq!(canonical_decimal("007.10").unwrap(), "7.10");
        assert_eq!(canonical_decimal("-0.00").unwrap(), "0.00");
        assert_eq!(canonical_decimal("-00").unwrap(), "0");
        assert_eq!(canonical_decimal("-0.5").unwrap(), "-0.5");
        for bad in ["", "1e3", "NaN", "1.", ".5", "1.2.3", "0x10"] {
            assert!(canonical_decimal(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn insert_fills_defaults_and_names_bad_fields() {
        let jobs = table("jobs").unwrap();
        let row = validate_row(jobs, &json!({"type": "serp"}), RowMode::Insert).unwrap();
        assert_eq!(row["status"], "queued");
        assert_eq!(row["priority"], "normal");
        assert_eq!(row["progress"], "0");
        assert!(uuid::Uuid::parse_str(row["id"].as_str().unwrap()).is_ok());
        let err =
            validate_row(jobs, &json!({"type": "serp", "status": "done"}), RowMode::Insert).unwrap_err();
        assert!(err.to_string().contains("jobs.status"), "{err}");
        let err = validate_row(jobs, &json!({"type": "serp", "bogus": 1}), RowMode::Insert).unwrap_err();
        assert!(err.to_string().contains("jobs.bogus"), "{err}");
        let err = validate_row(jobs, &json!({"id": "x"}), RowMode::Patch).unwrap_err();
        assert!(err.to_string().contains("key cannot be changed"), "{err}");
    }

    /// Issue 17, item 5: each kind of CHECK is refused by `validate_row`, naming the column and
    /// the rule, on an insert and on a patch; the edges of a range are accepted.
    #[test]
    fn check_rules_are_refused_naming_the_column_and_the_rule() {
        let cases = [
            ("jobs", json!({"type": ""}), "jobs.type", "type <> ''"),
            (
                "users",
                json!({"email": "Ab@example.com", "display_name": "d"}),
                "users.email",
                "email = lower(email)",
            ),
            ("jobs", json!({"type": "t", "progress": "100.01"}), "jobs.progress", "progress <= 100"),
            ("jobs", json!({"type": "t", "progress": -1}), "jobs.progress", "progress >= 0"),
            ("prompts", json!({"key": "k", "body": "b", "version": 0}), "prompts.version", "version >= 1"),
            ("jobs", json!({"type": "t", "priority": "soon"}), "jobs.priority", "not one of"),
        ];
        for (t, row, field, rule) in cases {
            let t = table(t).unwrap();
            for mode in [RowMode::Insert, RowMode::Patch] {
                let e = validate_row(t, &row, mode).unwrap_err();
                assert!(matches!(&e, Error::InvalidArgument { field: f, .. } if f == field), "{e}");
                assert!(e.to_string().contains(rule), "{e}");
            }
        }
        let jobs = table("jobs").unwrap();
        for progress in ["0", "100", "100.000", "-0.0"] {
            assert!(validate_row(jobs, &json!({"type": " ", "progress": progress}), RowMode::Insert).is_ok());
        }
    }

    #[test]
    fn vectors_round_trip_through_blobs() {
        let v = vec![0.1f32, -2.5, 3.0e-7];
        assert_eq!(vector_from_blob(&vector_to_blob(&v)).unwrap(), v);
        assert_eq!(vector_from_json(&vector_to_json(&v)).unwrap(), v);
    }

    #[test]
    fn nul_and_deep_json_are_refused() {
        let logs = table("job_logs").unwrap();
        let job = uuid::Uuid::new_v4().to_string();
        let r = validate_row(
            logs,
            &json!({"job_id": job, "level": "info", "message": "a\u{0}b"}),
            RowMode::Insert,
        );
        assert!(r.is_err());
        let mut deep = json!(1);
        for _ in 0..100 {
            deep = json!([deep]);
        }
        let r = validate_row(
            logs,
            &json!({"job_id": job, "level": "info", "message": "m", "context": deep}),
            RowMode::Insert,
        );
        assert!(r.is_err());
    }
}
