//! From pgoutput messages to captured transactions: each change named by table and key, with
//! the row in the wire form (docs/ARCHITECTURE.md, "The wire form of a row") converted from
//! PostgreSQL's text output, so SQLite takes it through the same encoder as every other write.

use super::pgoutput::{self, Datum, Message, Relations};
use crate::schema::{self, ColType, Column, Table};
use serde_json::{Map, Value};

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
    /// An insert or update: the row after it. `partial` when PostgreSQL left unchanged TOASTed
    /// columns out (the row holds only the columns it sent). `old_key` when an update changed the key.
    Upsert {
        table: &'static Table,
        key: String,
        row: Map<String, Value>,
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
}

/// Assembles transactions from a decoding call's messages, in order.
#[derive(Default)]
pub struct Assembler {
    relations: Relations,
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
            Message::Relation { id, relation } => self.relations.learn(id, relation),
            Message::Insert { relation, new } => {
                if let Some(change) = self.row_change(relation, None, &new, false)? {
                    self.add(change)?;
                }
            }
            Message::Update { relation, old, new } => {
                if let Some(change) = self.row_change(relation, old.as_deref(), &new, true)? {
                    self.add(change)?;
                }
            }
            Message::Delete { relation, old } => {
                if let Some((table, rel)) = self.table_of(relation)? {
                    let key = key_of(table, &rel.columns, &old)?;
                    self.add(Change::Delete { table, key })?;
                }
            }
            Message::Truncate { relations } => {
                let mut tables = Vec::new();
                for id in relations {
                    if let Some((table, _)) = self.table_of(id)? {
                        tables.push(table);
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

    fn add(&mut self, change: Change) -> crate::Result<()> {
        let t = self.open.as_mut().ok_or_else(|| internal("a change outside a transaction"))?;
        if !t.ours {
            t.changes.push(change);
        }
        Ok(())
    }

    fn table_of(&self, id: u32) -> crate::Result<Option<(&'static Table, pgoutput::Relation)>> {
        let rel = self.relations.get(id).ok_or_else(|| internal("a change to a relation never described"))?;
        // The publication lists the 13 tables only; anything else is not ours to follow.
        Ok((rel.namespace == "public").then(|| schema::table(&rel.name)).flatten().map(|t| (t, rel.clone())))
    }

    fn row_change(
        &self,
        relation: u32,
        old: Option<&[Datum]>,
        new: &[Datum],
        update: bool,
    ) -> crate::Result<Option<Change>> {
        let Some((table, rel)) = self.table_of(relation)? else { return Ok(None) };
        let key = key_of(table, &rel.columns, new)?;
        let old_key = old.map(|o| key_of(table, &rel.columns, o)).transpose()?.filter(|k| *k != key);
        let mut row = Map::new();
        let mut partial = false;
        for (name, datum) in rel.columns.iter().zip(new) {
            // A column the registry does not know (added by a service) has no place in SQLite.
            let Some(column) = table.column(name) else { continue };
            match datum {
                Datum::UnchangedToast => partial = true,
                Datum::Null => {
                    row.insert(column.name.to_string(), Value::Null);
                }
                Datum::Text(text) => match wire_value(column, text) {
                    Ok(v) => {
                        row.insert(column.name.to_string(), v);
                    }
                    Err(why) => return Ok(Some(Change::Refetch { table, key, why })),
                },
            }
        }
        // A registry column PostgreSQL did not send at all (dropped there) cannot be filled in.
        if !partial && table.columns.iter().any(|c| !row.contains_key(c.name)) {
            let why = "PostgreSQL's row lacks a column SQLite has".to_string();
            return Ok(Some(Change::Refetch { table, key, why }));
        }
        Ok(Some(Change::Upsert { table, key, row, update, partial, old_key }))
    }
}

fn internal(what: &str) -> crate::Error {
    crate::Error::Internal(format!("change capture: {what}"))
}

/// The key of a tuple (the key column's text; uuids are already canonical in PostgreSQL's output).
fn key_of(table: &Table, columns: &[String], tuple: &[Datum]) -> crate::Result<String> {
    let i = columns
        .iter()
        .position(|c| c == table.key)
        .ok_or_else(|| internal(&format!("{}: the key column is not in the decoded relation", table.name)))?;
    match tuple.get(i) {
        Some(Datum::Text(k)) => Ok(k.clone()),
        _ => Err(internal(&format!("{}: a change without its key", table.name))),
    }
}

/// A value in PostgreSQL's text output (decoding session: `TimeZone=UTC`, `DateStyle=ISO`,
/// `bytea_output=hex`, see `capture::slot::DECODING_SESSION`) as its wire value.
pub fn wire_value(column: &Column, text: &str) -> Result<Value, String> {
    Ok(match column.ty {
        ColType::Uuid | ColType::Text | ColType::Numeric | ColType::Bytea => Value::String(text.to_string()),
        ColType::Jsonb => serde_json::from_str(text)
            .map_err(|e| format!("{}: jsonb output is not JSON: {e}", column.name))?,
        ColType::Int => Value::from(text.parse::<i64>().map_err(|e| format!("{}: {e}", column.name))?),
        ColType::Timestamptz => Value::String(
            wire_timestamp(text)
                .ok_or_else(|| format!("{}: timestamp {text:?} has no wire form", column.name))?,
        ),
        ColType::Vector => {
            let inner = text
                .strip_prefix('[')
                .and_then(|t| t.strip_suffix(']'))
                .ok_or_else(|| format!("{}: {text:?} is not a vector", column.name))?;
            let mut out = Vec::new();
            for part in inner.split(',') {
                // pgvector prints the shortest text that reads back as the same f32 (and `-0`).
                let f: f32 =
                    part.trim().parse().map_err(|_| format!("{}: {part:?} is not a float", column.name))?;
                out.push(
                    serde_json::Number::from_f64(f64::from(f))
                        .map(Value::Number)
                        .ok_or_else(|| format!("{}: not finite", column.name))?,
                );
            }
            Value::Array(out)
        }
    })
}

/// `2026-01-02 03:04:05.12+00` (ISO, UTC) → `2026-01-02T03:04:05.120000Z`.
fn wire_timestamp(text: &str) -> Option<String> {
    let body = text.strip_suffix("+00")?;
    let t = chrono::NaiveDateTime::parse_from_str(body, "%Y-%m-%d %H:%M:%S%.f").ok()?;
    Some(schema::format_timestamp(t.and_utc()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(table: &str, name: &str) -> &'static Column {
        schema::table(table).unwrap().column(name).unwrap()
    }

    #[test]
    fn text_output_becomes_the_wire_form() {
        assert_eq!(
            wire_value(col("jobs", "queued_at"), "2026-01-02 03:04:05.12+00").unwrap(),
            "2026-01-02T03:04:05.120000Z"
        );
        assert_eq!(
            wire_value(col("jobs", "queued_at"), "2026-01-02 03:04:05+00").unwrap(),
            "2026-01-02T03:04:05.000000Z"
        );
        assert!(wire_value(col("jobs", "queued_at"), "infinity").is_err());
        assert_eq!(
            wire_value(col("jobs", "payload"), r#"{"a": [1, 2.5]}"#).unwrap(),
            serde_json::json!({"a": [1, 2.5]})
        );
        assert_eq!(wire_value(col("jobs", "progress"), "12.50").unwrap(), "12.50");
        let v = wire_value(col("embeddings", "vector"), "[1,-0,0.1]").unwrap();
        let parts: Vec<f64> = v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        assert_eq!(parts[0], 1.0);
        assert!(parts[1] == 0.0 && parts[1].is_sign_negative(), "-0 keeps its sign");
        assert_eq!(parts[2] as f32, 0.1f32);
    }
}
