//! Plain rows: the backfill's way past the conversion rules for a row whose every value is already
//! in the form the rules keep unchanged.
//!
//! The rules (`legacy::convert_sqlite_row`, then `legacy::to_sqlite_values`) build a JSON map per
//! row (a `String` per column name), parse every jsonb value into a `serde_json::Value`, check and
//! clone it, and serialise it again for COPY. On a file the bridge wrote or adopted, nearly every
//! value is already canonical and all of that changes nothing; on the v4 benchmark history (unicode
//! text, ~600-byte JSON) it was most of the backfill's client CPU (docs/BENCHMARKS.md). So a row is
//! first tried here: each value gets a cheap check that it is one the rules would keep as it is,
//! and is then written straight from SQLite's bytes into the binary COPY tuple. The first value
//! that fails its check sends the whole row down the rules, exactly as before; nothing is refused
//! here, so every reject still comes from the rules with their reasons.
//!
//! What the check accepts per type, and why the rules would send the same value:
//!
//! - uuid: 36 characters of lower-case hyphenated text that parses (`uuid_value` labels exactly
//!   that "canonical");
//! - text: UTF-8 without NUL, at most `MAX_TEXT_BYTES`, one of the allowed values of an enumerated
//!   column (`text_value` and `canonical_value` keep such text unchanged);
//! - timestamptz: the canonical `YYYY-MM-DDTHH:MM:SS.ffffffZ` of a real date, years 1..9999, no
//!   leap second (`timestamp_from_text` reads it to the same instant and labels it "canonical");
//! - int: an INTEGER within 32 bits;
//! - jsonb: an object or array (first byte `{` or `[`) of strings without `\u` escapes or control
//!   characters, integers of at most 18 digits (no fraction, exponent or `-0`), `true`, `false`,
//!   `null`, nested at most 60 deep, at most `MAX_TEXT_BYTES`. serde_json reads such text to a
//!   value `canonical_value` keeps (it changes only floats, refuses NUL and depth past 64), and
//!   PostgreSQL's jsonb reads the text and serde_json's re-serialisation of it to the same value
//!   (whitespace and key order are not kept by jsonb; the strings decode the same; a duplicate
//!   key keeps its last value in both), so the raw text is sent as it is;
//! - NULL in a nullable column.
//!
//! A table takes this path only when its rules are the built-in ones (nothing in
//! `[conversions]`), none of its columns is of another type (numeric, bytea, vector) or lower-cases
//! its text, and none has a CHECK rule in the registry (`Column::rule`: non-empty, lower-case, range).

use crate::legacy::{ColumnRules, Overrides};
use crate::pgcopy::{canonical_timestamp_micros, put};
use crate::schema::{ColType, Column, Table, MAX_TEXT_BYTES};
use rusqlite::types::ValueRef;

/// Which tables' rows may be tried as plain rows (see the module documentation).
pub(super) struct PlainRows {
    table: &'static Table,
}

impl PlainRows {
    /// `None` when `table` with `rules` must always go through the conversion rules.
    pub(super) fn new(table: &'static Table, rules: &ColumnRules) -> Option<PlainRows> {
        let built_in = ColumnRules::new(table, &Overrides::none());
        let eligible = *rules == built_in
            && table.columns.iter().zip(&rules.columns).all(|(c, r)| {
                matches!(
                    c.ty,
                    ColType::Uuid | ColType::Text | ColType::Jsonb | ColType::Timestamptz | ColType::Int
                ) && !r.lowercase
                    && c.rule.is_none()
            });
        eligible.then_some(PlainRows { table })
    }

    /// Append `row` (the table's columns in registry order) to `buf` as a binary COPY tuple and
    /// return true, or return false with `buf` as it was: the row needs the rules.
    pub(super) fn encode(&self, row: &rusqlite::Row<'_>, buf: &mut Vec<u8>) -> bool {
        let start = buf.len();
        buf.extend_from_slice(&(self.table.columns.len() as i16).to_be_bytes());
        for (i, c) in self.table.columns.iter().enumerate() {
            let ok = match row.get_ref(i) {
                Ok(v) => value(c, v, buf),
                Err(_) => false,
            };
            if !ok {
                buf.truncate(start);
                return false;
            }
        }
        true
    }
}

fn value(c: &Column, v: ValueRef<'_>, buf: &mut Vec<u8>) -> bool {
    match (c.ty, v) {
        (_, ValueRef::Null) if c.nullable => {
            buf.extend_from_slice(&(-1i32).to_be_bytes());
            true
        }
        (ColType::Uuid, ValueRef::Text(t)) => {
            if t.len() != 36 || t.iter().any(|b| b.is_ascii_uppercase()) {
                return false;
            }
            match uuid::Uuid::try_parse_ascii(t) {
                Ok(u) => {
                    put(buf, u.as_bytes());
                    true
                }
                Err(_) => false,
            }
        }
        (ColType::Text, ValueRef::Text(t)) => {
            if t.len() > MAX_TEXT_BYTES || t.contains(&0) {
                return false;
            }
            let Ok(s) = std::str::from_utf8(t) else { return false };
            if c.allowed.is_some_and(|allowed| !allowed.contains(&s)) {
                return false;
            }
            put(buf, t);
            true
        }
        (ColType::Timestamptz, ValueRef::Text(t)) => match canonical_timestamp_micros(t) {
            Some(us) => {
                put(buf, &us.to_be_bytes());
                true
            }
            None => false,
        },
        (ColType::Int, ValueRef::Integer(n)) => match i32::try_from(n) {
            Ok(n) => {
                put(buf, &n.to_be_bytes());
                true
            }
            Err(_) => false,
        },
        (ColType::Jsonb, ValueRef::Text(t)) => {
            if t.len() > MAX_TEXT_BYTES || !plain_json(t) {
                return false;
            }
            buf.extend_from_slice(&(t.len() as i32 + 1).to_be_bytes());
            buf.push(1); // jsonb binary format version
            buf.extend_from_slice(t);
            true
        }
        _ => false,
    }
}

/// Is `t` JSON text of the plain kind described in the module documentation?
fn plain_json(t: &[u8]) -> bool {
    if !matches!(t.first(), Some(b'{' | b'[')) || std::str::from_utf8(t).is_err() {
        return false;
    }
    let mut s = Scan { b: t, i: 0 };
    s.value(0) && {
        s.ws();
        s.i == t.len()
    }
}

/// Deeper than this goes through the rules (which refuse past 64).
const MAX_DEPTH: usize = 60;

struct Scan<'a> {
    b: &'a [u8],
    i: usize,
}

impl Scan<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn value(&mut self, depth: usize) -> bool {
        if depth > MAX_DEPTH {
            return false;
        }
        self.ws();
        match self.peek() {
            Some(b'{') => self.container(depth, b'}', true),
            Some(b'[') => self.container(depth, b']', false),
            Some(b'"') => self.string(),
            Some(b't') => self.lit(b"true"),
            Some(b'f') => self.lit(b"false"),
            Some(b'n') => self.lit(b"null"),
            Some(b'-' | b'0'..=b'9') => self.integer(),
            _ => false,
        }
    }

    /// An object (members `"key": value`) or an array, after its opening bracket.
    fn container(&mut self, depth: usize, close: u8, object: bool) -> bool {
        self.i += 1;
        self.ws();
        if self.peek() == Some(close) {
            self.i += 1;
            return true;
        }
        loop {
            if object {
                self.ws();
                if self.peek() != Some(b'"') || !self.string() {
                    return false;
                }
                self.ws();
                if self.peek() != Some(b':') {
                    return false;
                }
                self.i += 1;
            }
            if !self.value(depth + 1) {
                return false;
            }
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(c) if c == close => {
                    self.i += 1;
                    return true;
                }
                _ => return false,
            }
        }
    }

    /// A string without `\u` escapes or control characters (UTF-8 was checked for the whole text).
    fn string(&mut self) -> bool {
        self.i += 1;
        loop {
            match self.peek() {
                Some(b'"') => {
                    self.i += 1;
                    return true;
                }
                Some(b'\\') => match self.b.get(self.i + 1) {
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.i += 2,
                    _ => return false,
                },
                Some(c) if c >= 0x20 => self.i += 1,
                _ => return false,
            }
        }
    }

    fn lit(&mut self, word: &[u8]) -> bool {
        if self.b.get(self.i..self.i + word.len()) == Some(word) {
            self.i += word.len();
            true
        } else {
            false
        }
    }

    /// `-?(0|[1-9][0-9]*)` of at most 18 digits (inside i64), not `-0`, not followed by a fraction
    /// or an exponent.
    fn integer(&mut self) -> bool {
        let neg = self.peek() == Some(b'-');
        if neg {
            self.i += 1;
        }
        let start = self.i;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        let digits = &self.b[start..self.i];
        let ok = match digits {
            [] => false,
            [b'0'] => !neg,
            [b'0', ..] => false,
            d => d.len() <= 18,
        };
        ok && !matches!(self.peek(), Some(b'.' | b'e' | b'E'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::legacy::{convert_row, to_sqlite_values};
    use rusqlite::types::Value as V;

    /// The tuple the rules would send for `raw`, or None when they refuse the row.
    fn by_rules(table: &'static Table, raw: &[V]) -> Option<Vec<u8>> {
        let rules = ColumnRules::new(table, &Overrides::none());
        let row = convert_row(table, raw, &rules).ok()?;
        let values = to_sqlite_values(table, &row).ok()?;
        let mut buf = Vec::new();
        crate::pgcopy::encode_copy_row(table, &values, "k", &mut buf).ok()?;
        Some(buf)
    }

    /// The tuple the plain path sends for `raw`, or None when it leaves the row to the rules.
    fn plain(table: &'static Table, raw: &[V]) -> Option<Vec<u8>> {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let marks = (1..=raw.len()).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ");
        let mut stmt = conn.prepare(&format!("SELECT {marks}")).unwrap();
        let mut rows = stmt.query(rusqlite::params_from_iter(raw.iter())).unwrap();
        let r = rows.next().unwrap().unwrap();
        let p = PlainRows::new(table, &ColumnRules::new(table, &Overrides::none())).unwrap();
        let mut buf = vec![7u8];
        let ok = p.encode(r, &mut buf);
        assert!(ok || buf == [7u8], "a refused row leaves the buffer as it was");
        ok.then(|| buf[1..].to_vec())
    }

    fn job_log(id: &str, level: V, context: &str, created: &str) -> Vec<V> {
        vec![
            V::Text(id.into()),
            V::Text("018f0000-0000-7000-8000-000000000001".into()),
            level,
            V::Null,
            V::Text("получено 3 результата — 検索 🚀".into()),
            V::Text(context.into()),
            V::Text(created.into()),
        ]
    }

    #[test]
    fn a_plain_row_is_the_tuple_the_rules_send_except_for_json_text() {
        let t = crate::schema::table("job_logs").unwrap();
        let id = "018f3c1e-7a2b-7c3d-8e4f-0123456789ab";
        let ts = "2026-01-02T03:04:05.123456Z";
        // JSON without whitespace and with sorted keys: the rules re-serialise it byte for byte.
        let row = job_log(id, V::Text("info".into()), r#"{"a":[1,-2,"x\"y"],"b":{"c":null,"d":true}}"#, ts);
        assert_eq!(plain(t, &row), by_rules(t, &row));
        assert!(plain(t, &row).is_some());
    }

    #[test]
    fn json_text_is_sent_as_written_when_jsonb_reads_it_the_same() {
        let t = crate::schema::table("job_logs").unwrap();
        let ctx = r#"{ "z": [1, 2], "a": {"k": "ключ\n"}, "a2": [] }"#;
        let row = job_log(
            "018f3c1e-7a2b-7c3d-8e4f-0123456789ab",
            V::Text("info".into()),
            ctx,
            "2026-01-02T03:04:05.123456Z",
        );
        let got = plain(t, &row).expect("plain");
        let want = by_rules(t, &row).expect("converted");
        // Same tuple but for the JSON text (the rules compact and sort it; jsonb does that itself).
        assert_ne!(got, want);
        let mut expect = want.clone();
        let compact =
            serde_json::to_string(&serde_json::from_str::<serde_json::Value>(ctx).unwrap()).unwrap();
        let at = expect.windows(compact.len()).position(|w| w == compact.as_bytes()).unwrap();
        expect.splice(at - 5..at + compact.len(), {
            let mut v = (ctx.len() as i32 + 1).to_be_bytes().to_vec();
            v.push(1);
            v.extend_from_slice(ctx.as_bytes());
            v
        });
        assert_eq!(got, expect);
    }

    #[test]
    fn anything_the_rules_would_change_or_refuse_goes_to_the_rules() {
        let t = crate::schema::table("job_logs").unwrap();
        let id = "018f3c1e-7a2b-7c3d-8e4f-0123456789ab";
        let ts = "2026-01-02T03:04:05.123456Z";
        let info = || V::Text("info".into());
        let cases: Vec<Vec<V>> = vec![
            job_log(&id.to_uppercase(), info(), "{}", ts),
            job_log("{018f3c1e-7a2b-7c3d-8e4f-0123456789ab}", info(), "{}", ts),
            job_log("not-a-uuid-not-a-uuid-not-a-uuid-xxx", info(), "{}", ts),
            job_log(id, V::Text("loud".into()), "{}", ts),
            job_log(id, V::Integer(1), "{}", ts),
            job_log(id, info(), r#"{"a": 1.5}"#, ts),
            job_log(id, info(), r#"{"a": 1e3}"#, ts),
            job_log(id, info(), r#"{"a": -0}"#, ts),
            job_log(id, info(), r#"{"a": 0123}"#, ts),
            job_log(id, info(), r#"{"a": 1234567890123456789}"#, ts),
            job_log(id, info(), r#"{"a": "\u00e9"}"#, ts),
            job_log(id, info(), r#"{"a": "\u0000"}"#, ts),
            job_log(id, info(), "{\"a\": \"tab\there\"}", ts),
            job_log(id, info(), r#"{"a": 1"#, ts),
            job_log(id, info(), r#"{"a": 1} x"#, ts),
            job_log(id, info(), " {}", ts),
            job_log(id, info(), "plain text", ts),
            job_log(id, info(), "", ts),
            job_log(id, info(), &format!("{}1{}", "[".repeat(70), "]".repeat(70)), ts),
            job_log(id, info(), "{}", "2026-01-02 03:04:05"),
            job_log(id, info(), "{}", "2026-01-02T03:04:05.123Z"),
            job_log(id, info(), "{}", "2026-02-30T03:04:05.123456Z"),
            job_log(id, info(), "{}", "2016-12-31T23:59:60.000000Z"),
            job_log(id, info(), "{}", "0000-01-02T03:04:05.123456Z"),
            job_log(id, info(), "{}", "1714557600123"),
        ];
        for raw in cases {
            assert_eq!(plain(t, &raw), None, "{raw:?}");
        }
        // NUL in text, a NULL where a value is required, a BLOB.
        let mut nul = job_log(id, info(), "{}", ts);
        nul[4] = V::Text("a\0b".into());
        assert_eq!(plain(t, &nul), None);
        let mut null = job_log(id, info(), "{}", ts);
        null[4] = V::Null;
        assert_eq!(plain(t, &null), None);
        let mut blob = job_log(id, info(), "{}", ts);
        blob[4] = V::Blob(b"abc".to_vec());
        assert_eq!(plain(t, &blob), None);
    }

    #[test]
    fn tables_with_their_own_rules_never_take_the_plain_path() {
        let jobs = crate::schema::table("jobs").unwrap(); // numeric progress, CHECKed type
        assert!(PlainRows::new(jobs, &ColumnRules::new(jobs, &Overrides::none())).is_none());
        let users = crate::schema::table("users").unwrap(); // lower-cased email
        assert!(PlainRows::new(users, &ColumnRules::new(users, &Overrides::none())).is_none());
        let logs = crate::schema::table("job_logs").unwrap();
        let configured = ColumnRules::new(logs, &Overrides::none()).with_absent(&["step"]);
        assert!(PlainRows::new(logs, &configured).is_none());
    }
}
