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
    // The member list is kept per thread: no allocation per value.
    let members = MEMBERS.take();
    // UTF-8 is checked once for the whole text, so each string inside (a slice between two ASCII
    // quotes of valid UTF-8) is valid without a check of its own; text that is not UTF-8 goes to
    // serde_json, which refuses it too: raw, different from everything but the same bytes.
    let mut p = JsonCanon { b: t, i: 0, members, key: member_key() };
    let ok = simdutf8::basic::from_utf8(t).is_ok() && p.value(out, 0).is_some() && p.end();
    p.members.clear();
    MEMBERS.set(p.members);
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
    static MEMBERS: Cell<Vec<Member>> = const { Cell::new(Vec::new()) };
}

/// One object member written to the output: where its key (quoted) starts and where its value
/// starts (it ends where the next member's key starts, or at the end of the output).
type Member = (usize, usize);

/// The key of the member hash: random per process, so no JSON can be crafted to make two
/// different objects of one run hash alike (SipHash is a keyed pseudo-random function; the
/// canonical encodings are compared within one process and never stored).
fn member_key() -> (u64, u64) {
    static KEY: std::sync::OnceLock<(u64, u64)> = std::sync::OnceLock::new();
    *KEY.get_or_init(rand::random)
}

/// The 128-bit hash of one object member: its canonical key (quoted) and value, back to back
/// (the quoted key ends at its closing quote, so key and value cannot trade bytes).
fn member_hash(key: (u64, u64), member: &[u8]) -> u128 {
    use std::hash::Hasher;
    let mut h = siphasher::sip128::SipHasher13::new_with_keys(key.0, key.1);
    h.write(member);
    siphasher::sip128::Hasher128::finish128(&h).as_u128()
}

/// An object's canonical form: `{`, the wrapping sum of its members' hashes (16 bytes,
/// little-endian), `}`. A sum is the same in any member order, so the members are neither sorted
/// nor copied; each member's hash covers its key and value together, so `{"a":1,"b":2}` and
/// `{"a":2,"b":1}` differ; a value's own objects are reduced to this form first. Fixed length,
/// so it cannot run into what follows it in an array or a member.
fn put_object(sum: u128, out: &mut Vec<u8>) {
    out.push(b'{');
    out.extend_from_slice(&sum.to_le_bytes());
    out.push(b'}');
}

/// A JSON reader that writes the canonical form as it goes (see `canon_json`); an object's
/// members are hashed as they are read. `None` on anything unusual (the caller falls back).
struct JsonCanon<'a> {
    b: &'a [u8],
    i: usize,
    /// The members of the objects being read, innermost last.
    members: Vec<Member>,
    /// The member hash's key (`member_key`).
    key: (u64, u64),
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
            // To the next quote or backslash in one search (SIMD), then one pass over the run
            // for bytes JSON forbids raw (control characters) or that are sent the decoding way
            // (DEL; serde_json writes it back unescaped, so either way gives the same bytes).
            let rest = self.b.get(self.i..)?;
            let n = memchr::memchr2(b'"', b'\\', rest)?;
            let seen =
                rest[..n].iter().fold(0u8, |m, &c| m | u8::from(c < 0x20) | (u8::from(c == 0x7f) << 1));
            if seen & 1 != 0 {
                return None;
            }
            plain &= seen == 0;
            self.i += n;
            if rest[n] == b'"' {
                break;
            }
            // A backslash and the character it escapes.
            plain = false;
            self.i += 2;
        }
        self.i += 1;
        let raw = &self.b[start..self.i];
        if plain {
            // Valid UTF-8: the caller checked the whole text.
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
        let tok = &self.b[start..self.i];
        if is_canonical_integer(tok) {
            out.extend_from_slice(tok);
            return Some(());
        }
        let tok = std::str::from_utf8(tok).ok()?;
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
                    put_object(0, out);
                    return Some(());
                }
                // Members are written where they are read (key, then value, nested objects
                // already reduced), hashed, and replaced by the sum once the object ends.
                let base = out.len();
                let mark = self.members.len();
                let mut sum = 0u128;
                loop {
                    self.ws();
                    if self.b.get(self.i) != Some(&b'"') {
                        return None;
                    }
                    let key = out.len();
                    self.string(out)?;
                    self.ws();
                    if self.b.get(self.i) != Some(&b':') {
                        return None;
                    }
                    self.i += 1;
                    let value = out.len();
                    self.value(out, depth + 1)?;
                    sum = sum.wrapping_add(member_hash(self.key, &out[key..]));
                    self.members.push((key, value));
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
                // A repeated key goes the serde_json way (the last one wins there, as in jsonb).
                // The written keys are canonical (decoded, re-escaped): equal bytes, equal keys.
                if has_duplicate(&mut self.members[mark..], out) {
                    return None;
                }
                self.members.truncate(mark);
                out.truncate(base);
                put_object(sum, out);
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

/// Whether an integer token already reads as its canonical form (what `i64` prints): an optional
/// `-`, no leading zero, at most 18 digits (so within `i64`); `0`, but not `-0` (printed `0`).
fn is_canonical_integer(tok: &[u8]) -> bool {
    let digits = tok.strip_prefix(b"-").unwrap_or(tok);
    match digits {
        [b'0'] => tok.len() == 1,
        [b'1'..=b'9', rest @ ..] => rest.len() < 18 && rest.iter().all(u8::is_ascii_digit),
        _ => false,
    }
}

/// Whether two members have the same key. Pairwise for the handful of members objects nearly
/// always have; a larger object's members are sorted by key first (their order no longer matters:
/// the sum is taken), so the check stays O(n log n).
fn has_duplicate(members: &mut [Member], out: &[u8]) -> bool {
    let key = |&(k, v): &Member| &out[k..v];
    if members.len() <= 16 {
        return members.iter().enumerate().any(|(i, a)| members[i + 1..].iter().any(|b| key(a) == key(b)));
    }
    members.sort_unstable_by(|a, b| key(a).cmp(key(b)));
    members.windows(2).any(|w| key(&w[0]) == key(&w[1]))
}

/// JSON in one form: objects as the sum of their members' hashes (`put_object`), arrays in order,
/// strings re-escaped the way serde_json writes them, numbers as integers when integral (below
/// 2^53) and otherwise as the shortest `f64` in exponent form.
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
            // The same form as the direct reader's: the sum of each member's hash over its
            // canonical key and value (so whatever order the map keeps does not matter).
            let key = member_key();
            let mut member = Vec::new();
            let mut sum = 0u128;
            for (k, v) in m {
                member.clear();
                let _ = serde_json::to_writer(&mut member, k);
                canon_json(v, &mut member);
                sum = sum.wrapping_add(member_hash(key, &member));
            }
            put_object(sum, out);
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

    /// An object of `n` members (past the pairwise duplicate check), the last one repeating the
    /// first key when `repeat`.
    fn big_object(n: usize, repeat: bool) -> String {
        let mut members: Vec<String> = (0..n).map(|i| format!("\"k{}\": {i}", (i * 7) % n)).collect();
        if repeat {
            members.push("\"k0\": \"last\"".into());
        }
        format!("{{{}}}", members.join(", "))
    }

    #[test]
    fn the_direct_json_canonicaliser_agrees_with_serde_json() {
        let (big, big_repeated) = (big_object(40, false), big_object(40, true));
        let samples = [
            r#"{"b": [1, 2.50, -0, 1e2, 12345678901234567890, 0.1, -3.5e-7], "a": {"y": true, "x": null}}"#,
            r#"[{"k": "caf\u00e9 \"q\" \n"}, "é", [], {}, "\/"]"#,
            r#"{"a\u0062": 1, "ab": 2}"#,
            r#"{"a": 1, "a b": 2, "a!": 3, "": 4}"#,
            r#"{"dup": 1, "dup": 2}"#,
            r#"  "plain"  "#,
            r#"{"n": 9007199254740993.0, "m": 1.7976931348623157e308}"#,
            // Strings longer than one SIMD block, escapes at a block's edge and at the end, DEL.
            r#"["more than thirty-two bytes of text before an escape:\n and a quote \" at the end\\"]"#,
            r#"{"кириллица и 中文 — more than sixteen bytes": "\"", "k\\": "\\\\"}"#,
            "[\"del \u{7f} raw\", \"del \\u007f escaped\"]",
            big.as_str(),
            big_repeated.as_str(),
        ];
        for t in samples {
            let v: Value = serde_json::from_str(t).unwrap();
            let mut want = Vec::new();
            canon_json(&v, &mut want);
            let mut got = Vec::new();
            canon_json_bytes(t.as_bytes(), &mut got);
            let mut expect = Vec::new();
            put(&mut expect, VALUE, &want);
            // Bytes, not text: an object's form is binary.
            assert_eq!(got, expect, "{t}");
        }
        let mut bad = Vec::new();
        canon_json_bytes(b"{not json", &mut bad);
        assert_eq!(bad[0], UNPARSED);
    }

    /// Both paths (the direct reader and serde_json's tree), so a shortcut in either that made two
    /// different values equal, or one value's two spellings different, fails here.
    fn both(s: &str) -> [Vec<u8>; 2] {
        let mut tree = Vec::new();
        canon_json(&serde_json::from_str::<Value>(s).unwrap(), &mut tree);
        let mut via_tree = Vec::new();
        put(&mut via_tree, VALUE, &tree);
        [json(s), via_tree]
    }

    #[test]
    fn one_value_in_the_two_stores_spellings_is_equal() {
        // (PostgreSQL's jsonb output: keys by length then bytes, ", " and ": ", its escapes;
        //  the text SQLite keeps: the application's order and spelling)
        let pairs = [
            (
                r#"{"a": 1, "bb": [1, 2], "ccc": {"x": "é", "yy": null}}"#,
                r#"{"ccc":{"yy":null,"x":"\u00e9"},"bb":[1,2.0],"a":1}"#,
            ),
            (
                r#"{"m": 0, "n": 100, "k": -42, "big": 12345678901234567890}"#,
                r#"{"big":12345678901234567890,"k":-42.0,"n":1e2,"m":-0}"#,
            ),
            (
                r#"{"ab": {"z": true}, "c": "tab\tq\"/"}"#,
                r#"{"c":"tab\u0009q\u0022\/","\u0061b":{"z":true}}"#,
            ),
            (r#"{"a": 2}"#, r#"{"a": 1, "a": 2}"#),
            (r#"{"a": 2}"#, r#"{"a": 1, "\u0061": 2}"#),
            (r#"[{"b": 1, "a": [{"d": 4, "c": 3}]}]"#, r#"[{"a":[{"c":3,"d":4}],"b":1}]"#),
            (r#"{}"#, r#" { } "#),
        ];
        for (jsonb, text) in pairs {
            let [a, b] = both(jsonb);
            let [c, d] = both(text);
            assert_eq!(a[0], VALUE, "{jsonb}");
            assert!(a == b && b == c && c == d, "{jsonb} vs {text}");
        }
    }

    #[test]
    fn different_json_values_stay_different() {
        let pairs = [
            (r#"{"a":1,"b":2}"#, r#"{"a":2,"b":1}"#),
            (r#"{"a":{"b":1}}"#, r#"{"b":{"a":1}}"#),
            (r#"{"x":{"a":1},"y":{"b":2}}"#, r#"{"x":{"b":2},"y":{"a":1}}"#),
            (r#"{"a":[1,2]}"#, r#"{"a":[2,1]}"#),
            (r#"[{"a":1},{"b":2}]"#, r#"[{"b":2},{"a":1}]"#),
            (r#"{"ab":"c"}"#, r#"{"a":"bc"}"#),
            (r#"{"a":1}"#, r#"{"a":1,"b":null}"#),
            (r#"{"a":1,"b":1}"#, r#"{"a":1}"#),
            (r#"{"a":{},"b":{}}"#, r#"{"a":{}}"#),
            (r#"{}"#, r#"[]"#),
            (r#"{}"#, r#"{"":null}"#),
            (r#"{"a":2,"a":1}"#, r#"{"a":2}"#),
            (r#"{"a":"1"}"#, r#"{"a":1}"#),
            (r#"10"#, r#"1"#),
            (r#"-5"#, r#"5"#),
            (r#"0"#, r#"-1"#),
            (r#"123456789012345678"#, r#"123456789012345679"#),
            (r#"9223372036854775807"#, r#"9223372036854775806"#),
            (r#"12345678901234567890"#, r#"12345678901234567891"#),
            (r#""é""#, r#""e""#),
            (r#""a\u0000""#, r#""a""#),
        ];
        for (x, y) in pairs {
            for (a, b) in both(x).iter().zip(&both(y)) {
                assert_ne!(a, b, "{x} vs {y}");
            }
        }
    }

    #[test]
    fn an_integer_is_copied_only_when_it_already_reads_as_printed() {
        for tok in ["0", "7", "-7", "10", "-120", "123456789012345678", "-999999999999999999"] {
            assert!(is_canonical_integer(tok.as_bytes()), "{tok}");
            // What the parse-and-print path gives: the token itself.
            assert_eq!(tok.parse::<i64>().unwrap().to_string(), tok);
        }
        for tok in ["-0", "00", "01", "-01", "+1", "1234567890123456789", "", "-", "1.0", "1e2", "1-"] {
            assert!(!is_canonical_integer(tok.as_bytes()), "{tok}");
        }
        // The parse-and-print path for those that are numbers.
        assert_eq!(json("-0"), json("0"));
        assert_ne!(json("1234567890123456789"), json("1234567890123456788"));
        assert_eq!(json("-120"), json("-120.0"));
    }

    #[test]
    fn text_that_is_not_utf8_is_kept_raw_and_differs() {
        let raw = |b: &[u8]| {
            let mut out = Vec::new();
            canon_json_bytes(b, &mut out);
            out
        };
        let bad = raw(b"{\"a\": \"\xff\"}");
        assert_eq!(bad[0], UNPARSED);
        assert_ne!(bad, raw(b"{\"a\": \"\xfe\"}"));
        assert_ne!(bad, raw("{\"a\": \"\u{ff}\"}".as_bytes()));
        assert_eq!(raw("{\"a\": \"ü 🚀\"}".as_bytes())[0], VALUE);
        // A control character raw in a string is not JSON (either store's text): kept raw.
        assert_eq!(raw(b"[\"a\tb\"]")[0], UNPARSED);
        assert_ne!(raw(b"[\"a\tb\"]"), raw(b"[\"a\\tb\"]"));
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
