//! Verify's canonical encoding of a column value: the same bytes for the same value whichever
//! store it is read from (SQLite's text and blobs, PostgreSQL's binary results), so a row's
//! digest is comparable across the two.

use crate::pgcopy::timestamp_micros;
use crate::schema::{ColType, Column};
use rusqlite::types::ValueRef;
use serde_json::Value;
use std::borrow::Cow;
use std::cell::Cell;
use std::io::Write;

const NULL: u8 = 0;
const VALUE: u8 = 1;
/// A value the store holds but that does not parse as its type: kept raw, so it always differs.
const UNPARSED: u8 = 2;

fn put(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
    out.push(tag);
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

pub(super) fn canon_sqlite(c: &Column, v: ValueRef<'_>, out: &mut Vec<u8>) {
    // Borrowed for text and blobs (nearly every value): no copy per value.
    fn text_of(v: ValueRef<'_>) -> Cow<'_, [u8]> {
        match v {
            ValueRef::Text(t) | ValueRef::Blob(t) => Cow::Borrowed(t),
            ValueRef::Integer(i) => Cow::Owned(i.to_string().into_bytes()),
            ValueRef::Real(f) => Cow::Owned(f.to_string().into_bytes()),
            ValueRef::Null => Cow::Borrowed(&[]),
        }
    }
    if let ValueRef::Null = v {
        out.push(NULL);
        return;
    }
    match (c.ty, v) {
        (ColType::Uuid, ValueRef::Text(t)) => match uuid::Uuid::try_parse_ascii(t) {
            Ok(u) => put(out, VALUE, u.as_bytes()),
            Err(_) => put(out, UNPARSED, t),
        },
        (ColType::Text, _) | (ColType::Bytea, _) => put(out, VALUE, &text_of(v)),
        (ColType::Jsonb, ValueRef::Text(t)) => canon_json_bytes(t, out),
        (ColType::Timestamptz, ValueRef::Text(t)) => {
            match std::str::from_utf8(t).ok().and_then(timestamp_micros) {
                Some(us) => put(out, VALUE, &us.to_le_bytes()),
                None => put(out, UNPARSED, t),
            }
        }
        (ColType::Numeric, _) => canon_decimal(&text_of(v), out),
        (ColType::Int, ValueRef::Integer(i)) => put(out, VALUE, &i.to_le_bytes()),
        (ColType::Vector, ValueRef::Blob(b)) if b.len() % 4 == 0 => canon_floats(
            b.chunks_exact(4).map(|f| f32::from_le_bytes([f[0], f[1], f[2], f[3]])),
            b.len() / 4,
            out,
        ),
        _ => put(out, UNPARSED, &text_of(v)),
    }
}

pub(super) fn canon_pg(c: &Column, raw: Option<&[u8]>, out: &mut Vec<u8>) {
    let Some(b) = raw else {
        out.push(NULL);
        return;
    };
    match c.ty {
        ColType::Uuid | ColType::Text | ColType::Bytea => put(out, VALUE, b),
        ColType::Jsonb => match b.split_first() {
            Some((1, text)) => canon_json_bytes(text, out),
            _ => put(out, UNPARSED, b),
        },
        ColType::Timestamptz => match <[u8; 8]>::try_from(b) {
            Ok(a) => put(out, VALUE, &i64::from_be_bytes(a).to_le_bytes()),
            Err(_) => put(out, UNPARSED, b),
        },
        ColType::Numeric => canon_decimal(b, out),
        ColType::Int => match <[u8; 4]>::try_from(b) {
            Ok(a) => put(out, VALUE, &(i32::from_be_bytes(a) as i64).to_le_bytes()),
            Err(_) => put(out, UNPARSED, b),
        },
        ColType::Vector => {
            if b.len() >= 4 && (b.len() - 4) % 4 == 0 {
                let dim = i16::from_be_bytes([b[0], b[1]]) as usize;
                if dim == (b.len() - 4) / 4 {
                    let floats = b[4..].chunks_exact(4).map(|f| f32::from_be_bytes([f[0], f[1], f[2], f[3]]));
                    canon_floats(floats, dim, out);
                    return;
                }
            }
            put(out, UNPARSED, b)
        }
    }
}

fn canon_floats(floats: impl Iterator<Item = f32>, dim: usize, out: &mut Vec<u8>) {
    out.push(VALUE);
    out.extend_from_slice(&((dim * 4 + 4) as u32).to_le_bytes());
    out.extend_from_slice(&(dim as u32).to_le_bytes());
    // Bit for bit: -0.0 and 0.0 differ (both stores keep the sign).
    for f in floats {
        out.extend_from_slice(&f.to_bits().to_le_bytes());
    }
}

/// An exact decimal without leading/trailing zeros (`-0012.500` → `-12.5`, `0.0` → `0`).
fn canon_decimal(t: &[u8], out: &mut Vec<u8>) {
    let Ok(s) = std::str::from_utf8(t) else { return put(out, UNPARSED, t) };
    let s = s.trim();
    let (neg, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    if int.is_empty() && frac.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        // NaN, Infinity, exponent forms: compared as written.
        return put(out, VALUE, s.as_bytes());
    }
    let int = int.trim_start_matches('0');
    let frac = frac.trim_end_matches('0');
    let mut norm = String::with_capacity(s.len());
    if neg && !(int.is_empty() && frac.is_empty()) {
        norm.push('-');
    }
    norm.push_str(if int.is_empty() { "0" } else { int });
    if !frac.is_empty() {
        norm.push('.');
        norm.push_str(frac);
    }
    put(out, VALUE, norm.as_bytes())
}

fn canon_json_bytes(t: &[u8], out: &mut Vec<u8>) {
    // The direct canonicaliser (no value tree) gives the same bytes as `canon_json` over
    // serde_json's parse, written in place after the tag and a length filled in afterwards; text
    // it cannot read goes through serde_json, then raw.
    let at = out.len();
    out.push(VALUE);
    out.extend_from_slice(&[0; 4]);
    let body = out.len();
    // The member lists and the sorting buffer are kept per thread: no allocation per value.
    let (members, scratch) = SCRATCH.take();
    let mut p = JsonCanon { b: t, i: 0, members, scratch };
    let ok = p.value(out, 0).is_some() && p.end();
    p.members.clear();
    SCRATCH.set((p.members, p.scratch));
    if ok {
        let n = (out.len() - body) as u32;
        out[at + 1..body].copy_from_slice(&n.to_le_bytes());
        return;
    }
    out.truncate(at);
    match serde_json::from_slice::<Value>(t) {
        Ok(v) => {
            let mut s = Vec::with_capacity(t.len());
            canon_json(&v, &mut s);
            put(out, VALUE, &s)
        }
        Err(_) => put(out, UNPARSED, t),
    }
}

thread_local! {
    static SCRATCH: Cell<(Vec<Member>, Vec<u8>)> = const { Cell::new((Vec::new(), Vec::new())) };
}

/// One object member written to the output: where its key (quoted) starts, where its value
/// starts, where it ends.
type Member = (usize, usize, usize);

/// A JSON reader that writes the canonical form as it goes (see `canon_json`); only objects
/// buffer their members, to sort them. `None` on anything unusual (the caller falls back).
struct JsonCanon<'a> {
    b: &'a [u8],
    i: usize,
    /// The members of the objects being read, innermost last.
    members: Vec<Member>,
    /// Where an object's members are put in key order before they replace the written ones.
    scratch: Vec<u8>,
}

impl JsonCanon<'_> {
    fn ws(&mut self) {
        while self.i < self.b.len() && matches!(self.b[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn end(&mut self) -> bool {
        self.ws();
        self.i == self.b.len()
    }

    fn lit(&mut self, word: &[u8], out: &mut Vec<u8>) -> Option<()> {
        if self.b.get(self.i..self.i + word.len())? != word {
            return None;
        }
        self.i += word.len();
        out.extend_from_slice(word);
        Some(())
    }

    /// A string, decoded, re-escaped the way serde_json writes it.
    fn string(&mut self, out: &mut Vec<u8>) -> Option<()> {
        let start = self.i;
        self.i += 1;
        let mut plain = true;
        loop {
            match *self.b.get(self.i)? {
                b'"' => break,
                b'\\' => {
                    plain = false;
                    self.i += 2;
                }
                c if c < 0x20 => return None,
                c => {
                    plain &= c != 0x7f;
                    self.i += 1;
                }
            }
        }
        self.i += 1;
        let raw = &self.b[start..self.i];
        if plain {
            std::str::from_utf8(raw).ok()?;
            out.extend_from_slice(raw);
        } else {
            let decoded: String = serde_json::from_slice(raw).ok()?;
            serde_json::to_writer(&mut *out, &decoded).ok()?;
        }
        Some(())
    }

    fn number(&mut self, out: &mut Vec<u8>) -> Option<()> {
        let start = self.i;
        while self.i < self.b.len()
            && matches!(self.b[self.i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
        {
            self.i += 1;
        }
        let tok = std::str::from_utf8(&self.b[start..self.i]).ok()?;
        let integral = !tok.contains(['.', 'e', 'E']);
        if let (true, Ok(i)) = (integral, tok.parse::<i64>()) {
            write!(out, "{i}").ok()?;
        } else if let (true, Ok(u)) = (integral, tok.parse::<u64>()) {
            write!(out, "{u}").ok()?;
        } else {
            // serde_json's own float parser, so both paths read a number to the same f64.
            let f: f64 = serde_json::from_str(tok).ok()?;
            if !f.is_finite() {
                return None;
            }
            if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 {
                write!(out, "{}", f as i64).ok()?;
            } else {
                write!(out, "{f:e}").ok()?;
            }
        }
        Some(())
    }

    fn value(&mut self, out: &mut Vec<u8>, depth: usize) -> Option<()> {
        if depth > 128 {
            return None;
        }
        self.ws();
        match *self.b.get(self.i)? {
            b'{' => {
                self.i += 1;
                self.ws();
                if self.b.get(self.i) == Some(&b'}') {
                    self.i += 1;
                    out.extend_from_slice(b"{}");
                    return Some(());
                }
                // Members are written where they are read, then put in key order in place.
                let base = out.len();
                let mark = self.members.len();
                loop {
                    self.ws();
                    if self.b.get(self.i) != Some(&b'"') {
                        return None;
                    }
                    let key = out.len();
                    self.string(out)?;
                    // Sorted by the escaped key, which orders like the decoded one only without
                    // escapes; keys with escapes go the serde_json way.
                    if out[key..].contains(&b'\\') {
                        return None;
                    }
                    self.ws();
                    if self.b.get(self.i) != Some(&b':') {
                        return None;
                    }
                    self.i += 1;
                    let value = out.len();
                    self.value(out, depth + 1)?;
                    self.members.push((key, value, out.len()));
                    self.ws();
                    match *self.b.get(self.i)? {
                        b',' => self.i += 1,
                        b'}' => {
                            self.i += 1;
                            break;
                        }
                        _ => return None,
                    }
                }
                let members = &mut self.members[mark..];
                // Without the quotes: the bytes of the decoded key, as `canon_json` sorts.
                let name = |m: &Member| &out[m.0 + 1..m.1 - 1];
                members.sort_by(|a, b| name(a).cmp(name(b)));
                // Duplicates go the serde_json way (the last one wins there).
                if members.windows(2).any(|w| name(&w[0]) == name(&w[1])) {
                    return None;
                }
                self.scratch.clear();
                self.scratch.push(b'{');
                for (n, &(k, v, end)) in members.iter().enumerate() {
                    if n > 0 {
                        self.scratch.push(b',');
                    }
                    self.scratch.extend_from_slice(&out[k..v]);
                    self.scratch.push(b':');
                    self.scratch.extend_from_slice(&out[v..end]);
                }
                self.scratch.push(b'}');
                self.members.truncate(mark);
                out.truncate(base);
                out.extend_from_slice(&self.scratch);
            }
            b'[' => {
                self.i += 1;
                out.push(b'[');
                self.ws();
                if self.b.get(self.i) == Some(&b']') {
                    self.i += 1;
                    out.push(b']');
                    return Some(());
                }
                let mut first = true;
                loop {
                    if !first {
                        out.push(b',');
                    }
                    first = false;
                    self.value(out, depth + 1)?;
                    self.ws();
                    match *self.b.get(self.i)? {
                        b',' => self.i += 1,
                        b']' => {
                            self.i += 1;
                            out.push(b']');
                            break;
                        }
                        _ => return None,
                    }
                }
            }
            b'"' => self.string(out)?,
            b't' => self.lit(b"true", out)?,
            b'f' => self.lit(b"false", out)?,
            b'n' => self.lit(b"null", out)?,
            b'-' | b'0'..=b'9' => self.number(out)?,
            _ => return None,
        }
        Some(())
    }
}

/// JSON with object keys sorted and numbers in one form: integral values below 2^53 as integers,
/// other numbers as the shortest `f64` in exponent form.
fn canon_json(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Number(n) => {
            let s = if let Some(i) = n.as_i64() {
                i.to_string()
            } else if let Some(u) = n.as_u64() {
                u.to_string()
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 {
                    (f as i64).to_string()
                } else {
                    format!("{f:e}")
                }
            };
            out.extend_from_slice(s.as_bytes());
        }
        Value::String(s) => {
            let _ = serde_json::to_writer(&mut *out, s);
        }
        Value::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canon_json(x, out);
            }
            out.push(b']');
        }
        Value::Object(m) => {
            // Sorted here, whatever order the map keeps (serde_json's preserve_order feature).
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                let _ = serde_json::to_writer(&mut *out, k);
                out.push(b':');
                canon_json(&m[k], out);
            }
            out.push(b'}');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(s: &str) -> Vec<u8> {
        let mut out = Vec::new();
        canon_json_bytes(s.as_bytes(), &mut out);
        out
    }

    #[test]
    fn json_ignores_key_order_whitespace_and_number_spelling() {
        assert_eq!(
            json(r#"{"b": [1, 2.50], "a": {"y": 1e0, "x": null}}"#),
            json(r#"{"a":{"x":null,"y":1},"b":[1,2.5]}"#)
        );
        assert_ne!(json(r#"{"a": 1}"#), json(r#"{"a": 2}"#));
        assert_ne!(json(r#"{"a": "1"}"#), json(r#"{"a": 1}"#));
        assert_ne!(json(r#"[1, 2]"#), json(r#"[2, 1]"#));
    }

    #[test]
    fn the_direct_json_canonicaliser_agrees_with_serde_json() {
        let samples = [
            r#"{"b": [1, 2.50, -0, 1e2, 12345678901234567890, 0.1, -3.5e-7], "a": {"y": true, "x": null}}"#,
            r#"[{"k": "caf\u00e9 \"q\" \n"}, "é", [], {}, "\/"]"#,
            r#"{"a\u0062": 1, "ab": 2}"#,
            r#"{"a": 1, "a b": 2, "a!": 3, "": 4}"#,
            r#"{"dup": 1, "dup": 2}"#,
            r#"  "plain"  "#,
            r#"{"n": 9007199254740993.0, "m": 1.7976931348623157e308}"#,
        ];
        for t in samples {
            let v: Value = serde_json::from_str(t).unwrap();
            let mut want = Vec::new();
            canon_json(&v, &mut want);
            let mut got = Vec::new();
            canon_json_bytes(t.as_bytes(), &mut got);
            let mut expect = Vec::new();
            put(&mut expect, VALUE, &want);
            assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(&expect), "{t}");
        }
        let mut bad = Vec::new();
        canon_json_bytes(b"{not json", &mut bad);
        assert_eq!(bad[0], UNPARSED);
    }

    #[test]
    fn decimals_compare_by_value_exactly() {
        let d = |s: &str| {
            let mut out = Vec::new();
            canon_decimal(s.as_bytes(), &mut out);
            out
        };
        assert_eq!(d("12.50"), d("12.5"));
        assert_eq!(d("007"), d("7"));
        assert_eq!(d("-0.0"), d("0"));
        assert_ne!(d("0.1"), d("0.10000000000000001"));
        assert_ne!(d("-1"), d("1"));
    }
}
