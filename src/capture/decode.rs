//! From pgoutput messages to captured transactions: each change named by table and key, with
//! the row's values converted from PostgreSQL's text output straight to what SQLite stores (the
//! type mapping of docs/ARCHITECTURE.md, "The wire form of a row"): the follower binds them as
//! they are, with no JSON row in between.

use super::pgoutput::{self, Datum, Message, Relation};
use crate::schema::{self, ColType, Column, SqlValue, Table};
use serde_json::Value;
use std::collections::HashMap;

/// One committed PostgreSQL transaction, as far as the 13 tables go.
#[derive(Debug)]
pub struct CapturedTxn {
    /// The end of its commit record: the position to confirm once it is taken into account.
    pub end_lsn: u64,
    pub commit_time: String,
    /// Made by a session of the bridge's own (a replication origin named `dualwrite_…`): the
    /// replicator, the backfill, a phase switch draining the outbox. Those changes came from SQLite.
    pub ours: bool,
    pub changes: Vec<Change>,
}

#[derive(Debug)]
pub enum Change {
    /// An insert or update: the row after it, as SQLite stores it, one value per registry column
    /// in the registry's order. `partial` when PostgreSQL left unchanged TOASTed columns out
    /// (their values are `None`). `old_key` when an update changed the key.
    Upsert {
        table: &'static Table,
        key: String,
        values: Vec<Option<SqlValue>>,
        /// An update (pgoutput's Update), as opposed to an insert.
        update: bool,
        partial: bool,
        old_key: Option<String>,
    },
    Delete {
        table: &'static Table,
        key: String,
    },
    Truncate {
        tables: Vec<&'static Table>,
    },
    /// A change whose values this build cannot convert (a value outside the wire form): SQLite
    /// takes the row's current state from PostgreSQL instead.
    Refetch {
        table: &'static Table,
        key: String,
        why: String,
    },
}

impl Change {
    pub fn table_name(&self) -> &'static str {
        match self {
            Change::Upsert { table, .. } | Change::Delete { table, .. } | Change::Refetch { table, .. } => {
                table.name
            }
            Change::Truncate { tables } => tables.first().map_or("?", |t| t.name),
        }
    }
    pub fn key(&self) -> &str {
        match self {
            Change::Upsert { key, .. } | Change::Delete { key, .. } | Change::Refetch { key, .. } => key,
            Change::Truncate { .. } => "*",
        }
    }
    pub fn op(&self) -> &'static str {
        match self {
            Change::Upsert { update: false, .. } => "insert",
            Change::Upsert { .. } | Change::Refetch { .. } => "update",
            Change::Delete { .. } => "delete",
            Change::Truncate { .. } => "truncate",
        }
    }
    /// SQLite takes it in one statement, so it needs no savepoint of its own to be all or nothing.
    pub fn is_one_statement(&self) -> bool {
        match self {
            Change::Upsert { old_key, .. } => old_key.is_none(),
            Change::Delete { .. } | Change::Refetch { .. } => true,
            Change::Truncate { tables } => tables.len() == 1,
        }
    }
}

/// Where a described relation's columns go: worked out once per Relation message, not per change.
struct Layout {
    table: &'static Table,
    /// Per column of the relation, in tuple order: its position in the registry's columns
    /// (`None`: a column the registry does not know, added by a service, with no place in SQLite).
    positions: Vec<Option<usize>>,
    /// The key column's position in the tuple.
    key_at: usize,
    /// A registry column the relation lacks (dropped in PostgreSQL): its rows cannot be complete.
    lacks_a_column: bool,
}

impl Layout {
    /// `None` for a relation outside the 13 tables (not ours to follow).
    fn of(relation: &Relation) -> crate::Result<Option<Layout>> {
        // The publication lists the 13 tables only.
        let Some(table) = (relation.namespace == "public").then(|| schema::table(&relation.name)).flatten()
        else {
            return Ok(None);
        };
        let positions: Vec<Option<usize>> =
            relation.columns.iter().map(|name| table.columns.iter().position(|c| c.name == name)).collect();
        let key_at = relation.columns.iter().position(|c| c == table.key).ok_or_else(|| {
            internal(&format!("{}: the key column is not in the decoded relation", table.name))
        })?;
        let lacks_a_column = (0..table.columns.len()).any(|i| !positions.contains(&Some(i)));
        Ok(Some(Layout { table, positions, key_at, lacks_a_column }))
    }

    /// The key of a tuple (the key column's text; uuids are already canonical in PostgreSQL's output).
    fn key(&self, tuple: &[Datum]) -> crate::Result<String> {
        match tuple.get(self.key_at) {
            Some(Datum::Text(k)) => Ok(k.clone()),
            _ => Err(internal(&format!("{}: a change without its key", self.table.name))),
        }
    }
}

/// Assembles transactions from a decoding call's messages, in order.
#[derive(Default)]
pub struct Assembler {
    /// The relations described so far (pgoutput sends a Relation message before a relation's
    /// first change in each call, and again after its schema changed); `None`: not one of ours.
    layouts: HashMap<u32, Option<Layout>>,
    open: Option<CapturedTxn>,
    pub done: Vec<CapturedTxn>,
}

impl Assembler {
    pub fn push(&mut self, data: &[u8]) -> crate::Result<()> {
        let msg = pgoutput::decode(data).map_err(|e| crate::Error::Internal(e.to_string()))?;
        match msg {
            Message::Begin { commit_time_us, .. } => {
                self.open = Some(CapturedTxn {
                    end_lsn: 0,
                    commit_time: pgoutput::commit_time(commit_time_us),
                    ours: false,
                    changes: Vec::new(),
                });
            }
            Message::Origin { name } => {
                if let Some(t) = &mut self.open {
                    t.ours = super::is_our_origin(&name);
                }
            }
            Message::Commit { end_lsn, commit_time_us, .. } => {
                let mut t = self.open.take().ok_or_else(|| internal("a commit without a begin"))?;
                t.end_lsn = end_lsn;
                t.commit_time = pgoutput::commit_time(commit_time_us);
                self.done.push(t);
            }
            Message::Relation { id, relation } => {
                self.layouts.insert(id, Layout::of(&relation)?);
            }
            Message::Insert { relation, new } => self.row_change(relation, None, new, false)?,
            Message::Update { relation, old, new } => self.row_change(relation, old, new, true)?,
            Message::Delete { relation, old } => {
                if self.skips_changes() {
                    return Ok(());
                }
                if let Some(layout) = self.layout(relation)? {
                    let change = Change::Delete { table: layout.table, key: layout.key(&old)? };
                    self.add(change)?;
                }
            }
            Message::Truncate { relations } => {
                let mut tables = Vec::new();
                for id in relations {
                    if let Some(layout) = self.layout(id)? {
                        tables.push(layout.table);
                    }
                }
                if !tables.is_empty() {
                    self.add(Change::Truncate { tables })?;
                }
            }
            Message::Other(_) => {}
        }
        Ok(())
    }

    /// Inside a transaction (its begin read, its commit not yet).
    pub fn in_transaction(&self) -> bool {
        self.open.is_some()
    }

    /// A transaction left open when a call ends is a bug of the decoding call (it always ends at
    /// a commit): refuse rather than lose its start.
    pub fn finish(self) -> crate::Result<Vec<CapturedTxn>> {
        if self.open.is_some() {
            return Err(internal("the decoding call ended inside a transaction"));
        }
        Ok(self.done)
    }

    /// The open transaction is the bridge's own: its changes are not kept, so not converted.
    fn skips_changes(&self) -> bool {
        self.open.as_ref().is_some_and(|t| t.ours)
    }

    fn add(&mut self, change: Change) -> crate::Result<()> {
        let t = self.open.as_mut().ok_or_else(|| internal("a change outside a transaction"))?;
        if !t.ours {
            t.changes.push(change);
        }
        Ok(())
    }

    fn layout(&self, id: u32) -> crate::Result<Option<&Layout>> {
        match self.layouts.get(&id) {
            Some(layout) => Ok(layout.as_ref()),
            None => Err(internal("a change to a relation never described")),
        }
    }

    fn row_change(
        &mut self,
        relation: u32,
        old: Option<Vec<Datum>>,
        new: Vec<Datum>,
        update: bool,
    ) -> crate::Result<()> {
        if self.skips_changes() {
            // Still a change to a described relation, or the stream is not what it should be.
            self.layout(relation)?;
            return Ok(());
        }
        let Some(layout) = self.layout(relation)? else { return Ok(()) };
        let change = convert_row(layout, old.as_deref(), new, update)?;
        self.add(change)
    }
}

/// An insert's or update's new tuple as the row SQLite stores.
fn convert_row(
    layout: &Layout,
    old: Option<&[Datum]>,
    new: Vec<Datum>,
    update: bool,
) -> crate::Result<Change> {
    let table = layout.table;
    let key = layout.key(&new)?;
    let old_key = old.map(|o| layout.key(o)).transpose()?.filter(|k| *k != key);
    let mut values: Vec<Option<SqlValue>> = vec![None; table.columns.len()];
    let mut partial = false;
    for (position, datum) in layout.positions.iter().zip(new) {
        let Some(i) = *position else { continue };
        values[i] = match datum {
            Datum::UnchangedToast => {
                partial = true;
                None
            }
            Datum::Null => Some(SqlValue::Null),
            Datum::Text(text) => match sqlite_value(&table.columns[i], text) {
                Ok(v) => Some(v),
                Err(why) => return Ok(Change::Refetch { table, key, why }),
            },
        };
    }
    // A registry column PostgreSQL did not send at all (dropped there) cannot be filled in.
    if !partial && layout.lacks_a_column {
        let why = "PostgreSQL's row lacks a column SQLite has".to_string();
        return Ok(Change::Refetch { table, key, why });
    }
    Ok(Change::Upsert { table, key, values, update, partial, old_key })
}

fn internal(what: &str) -> crate::Error {
    crate::Error::Internal(format!("change capture: {what}"))
}

/// A value in PostgreSQL's text output (decoding session: `TimeZone=UTC`, `DateStyle=ISO`,
/// `bytea_output=hex`, see `capture::slot::DECODING_SESSION`) as SQLite stores it: what
/// `schema::encode_for_sqlite` makes of the value's wire form (tested against it below), without
/// building the wire form.
pub fn sqlite_value(column: &Column, text: String) -> Result<SqlValue, String> {
    Ok(match column.ty {
        ColType::Uuid | ColType::Text | ColType::Numeric => SqlValue::Text(text),
        // Through serde_json as every other write to SQLite: the same text for the same value.
        ColType::Jsonb => SqlValue::Text(
            serde_json::from_str::<Value>(&text)
                .map_err(|e| format!("{}: jsonb output is not JSON: {e}", column.name))?
                .to_string(),
        ),
        ColType::Int => SqlValue::Integer(text.parse::<i64>().map_err(|e| format!("{}: {e}", column.name))?),
        ColType::Timestamptz => SqlValue::Text(
            wire_timestamp(&text)
                .ok_or_else(|| format!("{}: timestamp {text:?} has no wire form", column.name))?,
        ),
        ColType::Bytea => SqlValue::Blob(
            schema::decode_bytea(&text).map_err(|e| format!("{}: bytea output {e}", column.name))?,
        ),
        ColType::Vector => {
            let inner = text
                .strip_prefix('[')
                .and_then(|t| t.strip_suffix(']'))
                .ok_or_else(|| format!("{}: {text:?} is not a vector", column.name))?;
            let mut blob = Vec::with_capacity(inner.len());
            let mut dims = 0;
            for part in inner.split(',') {
                // pgvector prints the shortest text that reads back as the same f32 (and `-0`).
                let f: f32 =
                    part.trim().parse().map_err(|_| format!("{}: {part:?} is not a float", column.name))?;
                if !f.is_finite() {
                    return Err(format!("{}: not finite", column.name));
                }
                blob.extend_from_slice(&f.to_le_bytes());
                dims += 1;
            }
            if dims > schema::MAX_VECTOR_DIM {
                return Err(format!("{}: {dims} components, more than the wire form allows", column.name));
            }
            SqlValue::Blob(blob)
        }
    })
}

/// `2026-01-02 03:04:05.12+00` (ISO, UTC) → `2026-01-02T03:04:05.120000Z`: the digits moved
/// into place; anything but that exact shape goes through chrono's parser.
fn wire_timestamp(text: &str) -> Option<String> {
    let body = text.strip_suffix("+00")?;
    let b = body.as_bytes();
    let digits = |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let two = |i: usize| u32::from(b[i] - b'0') * 10 + u32::from(b[i + 1] - b'0');
    let shaped = b.len() >= 19
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b' '
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && (b.len() == 19 || (b[19] == b'.' && (21..=26).contains(&b.len()) && digits(20..b.len())));
    if !shaped
        || !(1..=12).contains(&two(5))
        || !(1..=31).contains(&two(8))
        || two(11) > 23
        || two(14) > 59
        || two(17) > 59
    {
        return chrono_timestamp(body);
    }
    let mut out = String::with_capacity(27);
    out.push_str(&body[..10]);
    out.push('T');
    out.push_str(&body[11..19]);
    out.push('.');
    let fraction = body.get(20..).unwrap_or("");
    out.push_str(fraction);
    out.extend(std::iter::repeat_n('0', 6 - fraction.len()));
    out.push('Z');
    Some(out)
}

/// The general case of [`wire_timestamp`] (and the reference its fast path is tested against).
fn chrono_timestamp(body: &str) -> Option<String> {
    let t = chrono::NaiveDateTime::parse_from_str(body, "%Y-%m-%d %H:%M:%S%.f").ok()?;
    Some(schema::format_timestamp(t.and_utc()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::encode_for_sqlite;
    use serde_json::json;

    fn col(table: &str, name: &str) -> &'static Column {
        schema::table(table).unwrap().column(name).unwrap()
    }

    /// PostgreSQL's text output of a value, converted directly, is what SQLite stores for the
    /// value's wire form (the way every other write reaches SQLite).
    fn stores_as_its_wire_form(table: &str, column: &str, pg_text: &str, wire: Value) {
        let c = col(table, column);
        assert_eq!(
            sqlite_value(c, pg_text.to_string()).unwrap(),
            encode_for_sqlite(c, &wire).unwrap(),
            "{table}.{column} from {pg_text:?}"
        );
    }

    #[test]
    fn text_output_is_stored_as_its_wire_form_would_be() {
        stores_as_its_wire_form(
            "jobs",
            "queued_at",
            "2026-01-02 03:04:05.12+00",
            json!("2026-01-02T03:04:05.120000Z"),
        );
        stores_as_its_wire_form(
            "jobs",
            "queued_at",
            "2026-01-02 03:04:05+00",
            json!("2026-01-02T03:04:05.000000Z"),
        );
        stores_as_its_wire_form(
            "jobs",
            "queued_at",
            "0099-12-31 23:59:59.999999+00",
            json!("0099-12-31T23:59:59.999999Z"),
        );
        assert!(sqlite_value(col("jobs", "queued_at"), "infinity".into()).is_err());
        stores_as_its_wire_form(
            "jobs",
            "payload",
            r#"{"a": [1, 2.5], "b": "x\ny"}"#,
            json!({"a": [1, 2.5], "b": "x\ny"}),
        );
        stores_as_its_wire_form("jobs", "progress", "12.50", json!("12.50"));
        stores_as_its_wire_form("prompts", "version", "42", json!(42));
        stores_as_its_wire_form(
            "jobs",
            "id",
            "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
            json!("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"),
        );
        stores_as_its_wire_form(
            "embeddings",
            "vector",
            "[1,-0,0.1,3e-07]",
            json!([1.0, -0.0, 0.1f32 as f64, 3e-07f32 as f64]),
        );
        let SqlValue::Blob(blob) = sqlite_value(col("embeddings", "vector"), "[1,-0]".into()).unwrap() else {
            panic!("a vector is a BLOB")
        };
        assert_eq!(blob[4..8], (-0.0f32).to_le_bytes(), "-0 keeps its sign");
        assert!(sqlite_value(col("embeddings", "vector"), "[]".into()).is_err());
    }

    #[test]
    fn bytea_output_is_stored_as_its_wire_form_would_be() {
        let c = col("api_keys", "secret_ciphertext");
        assert_eq!(
            sqlite_value(c, "\\x00ff10".into()).unwrap(),
            encode_for_sqlite(c, &json!("\\x00ff10")).unwrap()
        );
    }

    /// The timestamp fast path gives what chrono's parser gives, for every fraction length
    /// PostgreSQL prints (trailing zeros dropped) over dates across the calendar.
    #[test]
    fn the_timestamp_fast_path_agrees_with_chrono() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..5_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let secs = (seed % 8_000_000_000) as i64 - 1_000_000_000;
            // 0 to 6 fractional digits.
            let unit = 10u64.pow((seed % 7) as u32);
            let micros = (seed >> 40) % 1_000_000 / unit * unit;
            let t = chrono::DateTime::from_timestamp(secs, micros as u32 * 1000).unwrap();
            let mut text = t.format("%Y-%m-%d %H:%M:%S").to_string();
            if micros > 0 {
                text.push_str(format!(".{micros:06}").trim_end_matches('0'));
            }
            let body = text.clone();
            text.push_str("+00");
            assert_eq!(wire_timestamp(&text), chrono_timestamp(&body), "{text}");
            assert!(wire_timestamp(&text).is_some(), "{text}");
        }
    }
}
