//! PostgreSQL's binary COPY format, encoded from the values SQLite stores: what the backfill
//! sends (and what verify borrows `timestamp_micros` from, so both read a timestamp the same way).

use crate::error::{Error, Result};
use crate::schema::{ColType, SqlValue, Table};
use rusqlite::types::ValueRef;

pub(crate) fn put(buf: &mut Vec<u8>, bytes: &[u8]) {
    buf.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
    buf.extend_from_slice(bytes);
}

/// One converted row (the values SQLite stores for it, in registry order) as a binary COPY tuple.
pub(crate) fn encode_copy_row(
    table: &Table,
    values: &[SqlValue],
    key: &str,
    buf: &mut Vec<u8>,
) -> Result<()> {
    if values.len() != table.columns.len() {
        return Err(Error::Internal(format!(
            "{}: {} values for {} columns",
            table.name,
            values.len(),
            table.columns.len()
        )));
    }
    buf.extend_from_slice(&(table.columns.len() as i16).to_be_bytes());
    for (c, value) in table.columns.iter().zip(values) {
        let v = match value {
            SqlValue::Null => ValueRef::Null,
            SqlValue::Integer(n) => ValueRef::Integer(*n),
            SqlValue::Text(t) => ValueRef::Text(t.as_bytes()),
            SqlValue::Blob(b) => ValueRef::Blob(b),
        };
        let bad = |what: &str| {
            Error::Internal(format!(
                "{}.{} of row {key}: {what} (SQLite holds {:?})",
                table.name,
                c.name,
                v.data_type()
            ))
        };
        if let ValueRef::Null = v {
            buf.extend_from_slice(&(-1i32).to_be_bytes());
            continue;
        }
        match c.ty {
            ColType::Uuid => {
                let ValueRef::Text(t) = v else { return Err(bad("not a uuid")) };
                let u = uuid::Uuid::try_parse_ascii(t).map_err(|_| bad("not a uuid"))?;
                put(buf, u.as_bytes());
            }
            ColType::Text | ColType::Numeric => match v {
                ValueRef::Text(t) => put(buf, t),
                ValueRef::Integer(n) => put(buf, n.to_string().as_bytes()),
                ValueRef::Real(f) => put(buf, f.to_string().as_bytes()),
                _ => return Err(bad("not text")),
            },
            ColType::Jsonb => {
                let ValueRef::Text(t) = v else { return Err(bad("not JSON text")) };
                buf.extend_from_slice(&(t.len() as i32 + 1).to_be_bytes());
                buf.push(1); // jsonb binary format version
                buf.extend_from_slice(t);
            }
            ColType::Timestamptz => {
                let ValueRef::Text(t) = v else { return Err(bad("not a timestamp")) };
                let s = std::str::from_utf8(t).map_err(|_| bad("not UTF-8"))?;
                let us = timestamp_micros(s).ok_or_else(|| bad("not a timestamp"))?;
                put(buf, &us.to_be_bytes());
            }
            ColType::Int => {
                let ValueRef::Integer(n) = v else { return Err(bad("not an integer")) };
                let n = i32::try_from(n).map_err(|_| bad("outside the 32-bit range"))?;
                put(buf, &n.to_be_bytes());
            }
            ColType::Bytea => match v {
                ValueRef::Blob(b) | ValueRef::Text(b) => put(buf, b),
                _ => return Err(bad("not bytes")),
            },
            ColType::Vector => {
                let ValueRef::Blob(b) = v else { return Err(bad("not a vector BLOB")) };
                if b.is_empty() || b.len() % 4 != 0 || b.len() / 4 > MAX_VECTOR_DIM {
                    return Err(bad("not a vector BLOB"));
                }
                // pgvector's binary form: int16 dimension, int16 unused, float4 big-endian each.
                buf.extend_from_slice(&(4 + b.len() as i32).to_be_bytes());
                buf.extend_from_slice(&((b.len() / 4) as i16).to_be_bytes());
                buf.extend_from_slice(&0i16.to_be_bytes());
                for f in b.chunks_exact(4) {
                    buf.extend_from_slice(&[f[3], f[2], f[1], f[0]]);
                }
            }
        }
    }
    Ok(())
}

/// pgvector's limit on a vector's dimension (as `schema` checks on input).
const MAX_VECTOR_DIM: usize = 16_000;

/// Days from 0001-01-01 (CE day 1) to 2000-01-01, PostgreSQL's epoch.
const PG_EPOCH_DAYS_FROM_CE: i64 = 730_120;

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` as microseconds since 2000-01-01 UTC (PostgreSQL's binary
/// timestamptz). Other RFC 3339 forms are accepted through chrono; sub-microsecond digits are not.
pub(crate) fn timestamp_micros(s: &str) -> Option<i64> {
    if let Some(us) = canonical_timestamp_micros(s.as_bytes()) {
        return Some(us);
    }
    let t = chrono::DateTime::parse_from_rfc3339(s).ok()?.with_timezone(&chrono::Utc);
    if chrono::Timelike::nanosecond(&t) % 1000 != 0 {
        return None;
    }
    let epoch = chrono::NaiveDate::from_ymd_opt(2000, 1, 1)?.and_hms_opt(0, 0, 0)?.and_utc();
    (t - epoch).num_microseconds()
}

/// Only the canonical form (`YYYY-MM-DDTHH:MM:SS.ffffffZ`, what `schema::format_timestamp` writes,
/// years 1..9999, no leap second) as microseconds since 2000-01-01 UTC; `None` for anything else.
/// A value this accepts is one the conversion rules keep unchanged (the backfill's plain rows).
pub(crate) fn canonical_timestamp_micros(b: &[u8]) -> Option<i64> {
    use chrono::Datelike;
    let fixed = b.len() == 27
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'.'
        && b[26] == b'Z';
    if !fixed {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<i64> {
        b[from..to].iter().try_fold(0i64, |acc, &c| c.is_ascii_digit().then(|| acc * 10 + (c - b'0') as i64))
    };
    let (y, mo, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (h, mi, se, us) = (num(11, 13)?, num(14, 16)?, num(17, 19)?, num(20, 26)?);
    if y < 1 || h >= 24 || mi >= 60 || se >= 60 {
        return None;
    }
    let date = chrono::NaiveDate::from_ymd_opt(y as i32, mo as u32, d as u32)?;
    let days = date.num_days_from_ce() as i64 - PG_EPOCH_DAYS_FROM_CE;
    Some(((days * 86_400 + h * 3_600 + mi * 60 + se) * 1_000_000) + us)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_to_postgres_micros() {
        assert_eq!(timestamp_micros("2000-01-01T00:00:00.000000Z"), Some(0));
        assert_eq!(timestamp_micros("2000-01-01T00:00:01.000001Z"), Some(1_000_001));
        assert_eq!(timestamp_micros("1999-12-31T23:59:59.999999Z"), Some(-1));
        assert_eq!(
            timestamp_micros("2026-01-02T03:04:05.123456Z"),
            timestamp_micros("2026-01-02T05:04:05.123456+02:00")
        );
        assert_eq!(timestamp_micros("2026-02-30T00:00:00.000000Z"), None);
        assert_eq!(timestamp_micros("2026-01-02T03:04:05.1234567Z"), None);
        assert_eq!(timestamp_micros("yesterday"), None);
    }
}
