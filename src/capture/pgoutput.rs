//! A decoder for PostgreSQL's built-in logical decoding output plugin, `pgoutput`, protocol
//! version 1, as `pg_logical_slot_peek_binary_changes` hands it out: one message per row.
//!
//! The formats are PostgreSQL's "Logical Replication Message Formats" (protocol chapter): Begin,
//! Commit, Origin, Relation, Type, Insert, Update, Delete, Truncate (and Message, which is not
//! asked for). Values come in their text form (the output functions of the decoding session, so
//! its `TimeZone`, `DateStyle` and `bytea_output` decide how they look: see `capture::slot`).
//! Pure: no I/O, unit-tested on hand-built messages.

/// A column's value in a tuple.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Datum {
    Null,
    /// A TOASTed value the change did not touch: PostgreSQL does not send it, the subscriber
    /// keeps what it has.
    UnchangedToast,
    Text(String),
}

/// A relation as described by a Relation message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Relation {
    pub namespace: String,
    pub name: String,
    /// Column names in the tuple order.
    pub columns: Vec<String>,
}

/// One decoded message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Begin {
        final_lsn: u64,
        commit_time_us: i64,
        xid: u32,
    },
    Commit {
        commit_lsn: u64,
        end_lsn: u64,
        commit_time_us: i64,
    },
    Origin {
        name: String,
    },
    Relation {
        id: u32,
        relation: Relation,
    },
    Insert {
        relation: u32,
        new: Vec<Datum>,
    },
    Update {
        relation: u32,
        old: Option<Vec<Datum>>,
        new: Vec<Datum>,
    },
    Delete {
        relation: u32,
        old: Vec<Datum>,
    },
    Truncate {
        relations: Vec<u32>,
    },
    /// Type, Message and anything a later protocol adds that this consumer does not need.
    Other(u8),
}

/// A malformed message: a bug or a protocol change, never a data problem.
#[derive(Debug, thiserror::Error)]
#[error("pgoutput message {kind:?} is malformed: {what}")]
pub struct DecodeError {
    kind: char,
    what: String,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    kind: char,
}

impl<'a> Reader<'a> {
    fn err(&self, what: impl Into<String>) -> DecodeError {
        DecodeError { kind: self.kind, what: what.into() }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end =
            self.pos.checked_add(n).filter(|e| *e <= self.buf.len()).ok_or_else(|| self.err("truncated"))?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn i16(&mut self) -> Result<i16, DecodeError> {
        Ok(i16::from_be_bytes(self.take(2)?.try_into().map_err(|_| self.err("i16"))?))
    }
    fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.take(4)?.try_into().map_err(|_| self.err("i32"))?))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().map_err(|_| self.err("u32"))?))
    }
    fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.take(8)?.try_into().map_err(|_| self.err("i64"))?))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().map_err(|_| self.err("u64"))?))
    }
    /// A NUL-terminated string.
    fn cstr(&mut self) -> Result<String, DecodeError> {
        let rest = &self.buf[self.pos..];
        let len = rest.iter().position(|b| *b == 0).ok_or_else(|| self.err("unterminated string"))?;
        let s = String::from_utf8(rest[..len].to_vec()).map_err(|_| self.err("string is not UTF-8"))?;
        self.pos += len + 1;
        Ok(s)
    }
    fn tuple(&mut self) -> Result<Vec<Datum>, DecodeError> {
        let n = self.i16()?;
        let n = usize::try_from(n).map_err(|_| self.err("negative column count"))?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(match self.u8()? {
                b'n' => Datum::Null,
                b'u' => Datum::UnchangedToast,
                b't' => {
                    let len = usize::try_from(self.i32()?).map_err(|_| self.err("negative length"))?;
                    let bytes = self.take(len)?;
                    Datum::Text(
                        String::from_utf8(bytes.to_vec()).map_err(|_| self.err("value is not UTF-8"))?,
                    )
                }
                other => return Err(self.err(format!("unknown tuple value kind {:?}", other as char))),
            });
        }
        Ok(out)
    }
}

/// Decode one message.
pub fn decode(buf: &[u8]) -> Result<Message, DecodeError> {
    let Some(&first) = buf.first() else {
        return Err(DecodeError { kind: '?', what: "empty".into() });
    };
    let mut r = Reader { buf, pos: 1, kind: first as char };
    let msg = match first {
        b'B' => Message::Begin { final_lsn: r.u64()?, commit_time_us: r.i64()?, xid: r.u32()? },
        b'C' => {
            let _flags = r.u8()?;
            Message::Commit { commit_lsn: r.u64()?, end_lsn: r.u64()?, commit_time_us: r.i64()? }
        }
        b'O' => {
            let _origin_lsn = r.u64()?;
            Message::Origin { name: r.cstr()? }
        }
        b'R' => {
            let id = r.u32()?;
            let namespace = r.cstr()?;
            let name = r.cstr()?;
            let _replica_identity = r.u8()?;
            let n = usize::try_from(r.i16()?).map_err(|_| r.err("negative column count"))?;
            let mut columns = Vec::with_capacity(n);
            for _ in 0..n {
                let _flags = r.u8()?;
                columns.push(r.cstr()?);
                let _type_oid = r.u32()?;
                let _typmod = r.i32()?;
            }
            Message::Relation { id, relation: Relation { namespace, name, columns } }
        }
        b'I' => {
            let relation = r.u32()?;
            if r.u8()? != b'N' {
                return Err(r.err("insert without a new tuple"));
            }
            Message::Insert { relation, new: r.tuple()? }
        }
        b'U' => {
            let relation = r.u32()?;
            let mut old = None;
            let mut marker = r.u8()?;
            if marker == b'K' || marker == b'O' {
                old = Some(r.tuple()?);
                marker = r.u8()?;
            }
            if marker != b'N' {
                return Err(r.err("update without a new tuple"));
            }
            Message::Update { relation, old, new: r.tuple()? }
        }
        b'D' => {
            let relation = r.u32()?;
            let marker = r.u8()?;
            if marker != b'K' && marker != b'O' {
                return Err(r.err("delete without an old key"));
            }
            Message::Delete { relation, old: r.tuple()? }
        }
        b'T' => {
            let n = usize::try_from(r.i32()?).map_err(|_| r.err("negative relation count"))?;
            let _options = r.u8()?;
            let mut relations = Vec::with_capacity(n);
            for _ in 0..n {
                relations.push(r.u32()?);
            }
            Message::Truncate { relations }
        }
        other => Message::Other(other),
    };
    Ok(msg)
}

/// PostgreSQL's epoch (2000-01-01) in Unix microseconds.
const PG_EPOCH_UNIX_US: i64 = 946_684_800_000_000;

/// A commit timestamp (microseconds since 2000-01-01) as the wire form of a timestamp.
pub fn commit_time(us: i64) -> String {
    let unix = us.saturating_add(PG_EPOCH_UNIX_US);
    chrono::DateTime::from_timestamp_micros(unix)
        .map(crate::schema::format_timestamp)
        .unwrap_or_else(|| "?".to_string())
}

/// An LSN in PostgreSQL's text form (`16/B374D848`).
pub fn lsn_text(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// Parse PostgreSQL's text form of an LSN.
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple(values: &[Option<&str>]) -> Vec<u8> {
        let mut b = (values.len() as i16).to_be_bytes().to_vec();
        for v in values {
            match v {
                None => b.push(b'n'),
                Some("\u{0}toast") => b.push(b'u'),
                Some(s) => {
                    b.push(b't');
                    b.extend((s.len() as i32).to_be_bytes());
                    b.extend(s.as_bytes());
                }
            }
        }
        b
    }

    #[test]
    fn begin_commit_origin() {
        let mut b = vec![b'B'];
        b.extend(0x1_0000_0010u64.to_be_bytes());
        b.extend(5i64.to_be_bytes());
        b.extend(77u32.to_be_bytes());
        assert_eq!(
            decode(&b).unwrap(),
            Message::Begin { final_lsn: 0x1_0000_0010, commit_time_us: 5, xid: 77 }
        );
        let mut c = vec![b'C', 0];
        c.extend(10u64.to_be_bytes());
        c.extend(20u64.to_be_bytes());
        c.extend(30i64.to_be_bytes());
        assert_eq!(decode(&c).unwrap(), Message::Commit { commit_lsn: 10, end_lsn: 20, commit_time_us: 30 });
        let mut o = vec![b'O'];
        o.extend(1u64.to_be_bytes());
        o.extend(b"dualwrite_3\0");
        assert_eq!(decode(&o).unwrap(), Message::Origin { name: "dualwrite_3".into() });
    }

    #[test]
    fn relation_and_changes() {
        let mut r = vec![b'R'];
        r.extend(16384u32.to_be_bytes());
        r.extend(b"public\0jobs\0");
        r.push(b'd');
        r.extend(2i16.to_be_bytes());
        for (flags, name) in [(1u8, "id"), (0, "payload")] {
            r.push(flags);
            r.extend(name.as_bytes());
            r.push(0);
            r.extend(25u32.to_be_bytes());
            r.extend((-1i32).to_be_bytes());
        }
        let Message::Relation { id, relation } = decode(&r).unwrap() else { panic!() };
        assert_eq!(id, 16384);
        assert_eq!(relation.name, "jobs");
        assert_eq!(relation.columns, vec!["id", "payload"]);

        let mut i = vec![b'I'];
        i.extend(16384u32.to_be_bytes());
        i.push(b'N');
        i.extend(tuple(&[Some("k1"), None]));
        assert_eq!(
            decode(&i).unwrap(),
            Message::Insert { relation: 16384, new: vec![Datum::Text("k1".into()), Datum::Null] }
        );

        let mut u = vec![b'U'];
        u.extend(16384u32.to_be_bytes());
        u.push(b'K');
        u.extend(tuple(&[Some("old"), None]));
        u.push(b'N');
        u.extend(tuple(&[Some("k1"), Some("\u{0}toast")]));
        assert_eq!(
            decode(&u).unwrap(),
            Message::Update {
                relation: 16384,
                old: Some(vec![Datum::Text("old".into()), Datum::Null]),
                new: vec![Datum::Text("k1".into()), Datum::UnchangedToast]
            }
        );

        let mut d = vec![b'D'];
        d.extend(16384u32.to_be_bytes());
        d.push(b'K');
        d.extend(tuple(&[Some("k1"), None]));
        assert_eq!(
            decode(&d).unwrap(),
            Message::Delete { relation: 16384, old: vec![Datum::Text("k1".into()), Datum::Null] }
        );

        let mut t = vec![b'T'];
        t.extend(2i32.to_be_bytes());
        t.push(1);
        t.extend(1u32.to_be_bytes());
        t.extend(2u32.to_be_bytes());
        assert_eq!(decode(&t).unwrap(), Message::Truncate { relations: vec![1, 2] });
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        for bad in [
            &b""[..],
            b"B\x00",
            b"I\x00\x00\x00\x01X",
            b"U\x00\x00\x00\x01N\x00\x01t\x00\x00\x00\x09ab",
            b"R\x00",
        ] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn lsn_round_trip() {
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(lsn_text(0x16_B374_D848), "16/B374D848");
        assert_eq!(parse_lsn("nope"), None);
        assert_eq!(commit_time(0), "2000-01-01T00:00:00.000000Z");
    }
}
