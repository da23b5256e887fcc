//! Writes with PostgreSQL as the primary store (write modes `postgres_primary` and `postgres`).
//!
//! A repository operation runs unchanged: inside `Bridge::write` its reads and writes go to one
//! PostgreSQL transaction instead of SQLite, while the SQLite `BEGIN IMMEDIATE` transaction stays
//! open around it. That SQLite write lock is what orders the writes of every process, as in the
//! other modes, so revisions and PostgreSQL's outbox advance one write at a time and the outbox
//! order is PostgreSQL's commit order; it also orders writes against phase changes.
//!
//! Each change takes a revision from `dualwrite.revision_seq`, claims it in
//! `dualwrite.row_revisions` (the guard the replicator and the backfill use) and is recorded in
//! `dualwrite.outbox`, all in the operation's PostgreSQL transaction. SQLite catches up from that
//! outbox (`store::sqlite::PgCatchUp`): right behind each write in `postgres_primary`, and before
//! it takes writes again after `postgres`.

use crate::error::{Error, Result};
use crate::schema::Table;
use crate::store::postgres::{key_type, parse_wire_row, row_to_wire_sql, typed_placeholder, wire_expr};
use crate::store::sqlite::Op;
use rusqlite::types::{ToSqlOutput, ValueRef};
use serde_json::{Map, Value};
use std::cell::RefCell;

/// One record of PostgreSQL's outbox: a change PostgreSQL took first.
#[derive(Clone, Debug)]
pub struct PrimaryRecord {
    pub seq: i64,
    pub table_name: String,
    pub row_key: String,
    pub op: Op,
    /// The wire JSON of the row after the change (`None` for a delete).
    pub row_image: Option<String>,
}

/// Claim the next revision for a row and record the change in the outbox, in one statement.
/// The outbox row is written only if the claim won, so a lost claim shows as no row returned.
const RECORD_SQL: &str = "WITH rev AS (SELECT nextval('dualwrite.revision_seq') AS r),
     claim AS (
         INSERT INTO dualwrite.row_revisions (table_name, row_key, revision, deleted)
         SELECT $1, $2, r, $3 FROM rev
         ON CONFLICT (table_name, row_key) DO UPDATE SET revision = EXCLUDED.revision, deleted = EXCLUDED.deleted
         WHERE dualwrite.row_revisions.revision < EXCLUDED.revision
         RETURNING revision)
     INSERT INTO dualwrite.outbox (revision, table_name, row_key, op, row_image)
     SELECT r, $1, $2, $4, $5 FROM rev WHERE EXISTS (SELECT 1 FROM claim)
     RETURNING seq";

/// Records after a given seq, oldest first.
const AFTER_SQL: &str = "SELECT seq, table_name, row_key, op, row_image FROM dualwrite.outbox
     WHERE seq > $1 ORDER BY seq LIMIT $2";

/// The PostgreSQL half of one write while PostgreSQL is the primary: an open transaction on the
/// bridge's writer connection. `RefCell` because the row reads of `store::sqlite::Rows` take
/// `&self`; the bridge's writer lock keeps it on one thread.
pub(crate) struct PgWrite {
    /// `None` once the transaction ended and the connection was handed back.
    client: RefCell<Option<postgres::Client>>,
}

impl PgWrite {
    /// Start a transaction on `client`.
    pub(crate) fn begin(mut client: postgres::Client) -> Result<PgWrite> {
        client
            .batch_execute(&format!("BEGIN; {}", crate::store::postgres::ABANDONED_TRANSACTION_TIMEOUT))
            .map_err(write_error)?;
        Ok(PgWrite { client: RefCell::new(Some(client)) })
    }

    /// Run `f` on the open transaction's connection.
    fn with<T>(&self, f: impl FnOnce(&mut postgres::Client) -> Result<T, postgres::Error>) -> Result<T> {
        let mut guard = self.client.borrow_mut();
        let client =
            guard.as_mut().ok_or_else(|| Error::Internal("the PostgreSQL write has ended".into()))?;
        f(client).map_err(write_error)
    }

    pub(crate) fn get_row(&self, table: &Table, key: &str) -> Result<Option<Map<String, Value>>> {
        let sql = format!(
            "{} WHERE {} = {}",
            row_to_wire_sql(table),
            table.key,
            typed_placeholder(table.key_column(), 1)
        );
        let rows = self.with(|c| c.query(&sql, &[&key]))?;
        rows.first().map(|r| parse_wire_row(table, r.get(0))).transpose()
    }

    /// Rows matching `where_sql`, a condition written for SQLite in this crate (see
    /// [`translate_where`]), with its SQLite arguments.
    pub(crate) fn query_rows(
        &self,
        table: &Table,
        where_sql: &str,
        args: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<Map<String, Value>>> {
        let mut guard = self.client.borrow_mut();
        let client =
            guard.as_mut().ok_or_else(|| Error::Internal("the PostgreSQL write has ended".into()))?;
        select_where(client, table, where_sql, args)
    }

    /// Insert a complete, validated row; returns it as PostgreSQL stored it.
    pub(crate) fn insert(
        &mut self,
        table: &'static Table,
        row: &Map<String, Value>,
    ) -> Result<Map<String, Value>> {
        let cols = table.column_names().collect::<Vec<_>>().join(", ");
        let sql = format!(
            "INSERT INTO public.{t} ({cols}) SELECT {cols} FROM json_populate_record(NULL::public.{t}, $1::text::json) \
             RETURNING {w}::text",
            t = table.name,
            w = wire_expr(table)
        );
        let image = Value::Object(row.clone()).to_string();
        let stored = self
            .returning_row(table, &sql, &[&image])?
            .ok_or_else(|| Error::Internal("INSERT RETURNING gave no row".into()))?;
        self.record(table, &stored, Op::Upsert)?;
        Ok(stored)
    }

    /// Set some validated columns of an existing row; returns the whole row after the change.
    pub(crate) fn update(
        &mut self,
        table: &'static Table,
        key: &str,
        changes: &Map<String, Value>,
    ) -> Result<Map<String, Value>> {
        if changes.is_empty() {
            return self.get_row(table, key)?.ok_or_else(|| Error::not_found(table.name, key));
        }
        for name in changes.keys() {
            if table.column(name).is_none() {
                return Err(Error::invalid(format!("{}.{name}", table.name), "no such column"));
            }
        }
        let cols = changes.keys().map(String::as_str).collect::<Vec<_>>().join(", ");
        let sql = format!(
            "UPDATE public.{t} SET ({cols}) = (SELECT {cols} FROM json_populate_record(NULL::public.{t}, $1::text::json)) \
             WHERE {key} = {p} RETURNING {w}::text",
            t = table.name,
            key = table.key,
            p = typed_placeholder(table.key_column(), 2),
            w = wire_expr(table)
        );
        let image = Value::Object(changes.clone()).to_string();
        let stored = self
            .returning_row(table, &sql, &[&image, &key])?
            .ok_or_else(|| Error::not_found(table.name, key))?;
        self.record(table, &stored, Op::Upsert)?;
        Ok(stored)
    }

    /// Delete a row; `false` when there was none (nothing is recorded then).
    pub(crate) fn delete(&mut self, table: &'static Table, key: &str) -> Result<bool> {
        let sql =
            format!("DELETE FROM public.{} WHERE {} = $1::text::{}", table.name, table.key, key_type(table));
        let n = self.with(|c| c.execute(&sql, &[&key]))?;
        if n == 0 {
            return Ok(false);
        }
        let no_image: Option<String> = None;
        self.claim_and_record(table, key, Op::Delete, no_image)?;
        Ok(true)
    }

    /// Commit; first, when SQLite follows right behind (`postgres_primary`), read every outbox
    /// record after `sqlite_holds` — this write's and any a crashed process left — for SQLite to
    /// apply in order. The connection is handed back whatever happens (`None` if it broke).
    pub(crate) fn commit(
        self,
        sqlite_holds: Option<i64>,
    ) -> (Option<postgres::Client>, Result<Vec<PrimaryRecord>>) {
        let result = (|| {
            let records = match sqlite_holds {
                Some(after) => self.with(|c| records_after(c, after, i64::MAX))?,
                None => Vec::new(),
            };
            self.with(|c| c.batch_execute("COMMIT"))?;
            Ok(records)
        })();
        (self.hand_back(result.is_ok()), result)
    }

    /// Roll back and hand the connection back (`None` if it broke).
    pub(crate) fn abort(self) -> Option<postgres::Client> {
        self.hand_back(false)
    }

    fn hand_back(self, committed: bool) -> Option<postgres::Client> {
        let mut client = self.client.borrow_mut().take()?;
        if !committed && !client.is_closed() {
            // An error inside a transaction leaves it aborted: end it before the reuse.
            client.batch_execute("ROLLBACK").ok()?;
        }
        (!client.is_closed()).then_some(client)
    }

    fn returning_row(
        &mut self,
        table: &Table,
        sql: &str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<Option<Map<String, Value>>> {
        let rows = self.with(|c| c.query(sql, params))?;
        rows.first().map(|r| parse_wire_row(table, r.get(0))).transpose()
    }

    fn record(&mut self, table: &'static Table, row: &Map<String, Value>, op: Op) -> Result<()> {
        let key = table.key_of(row)?;
        self.claim_and_record(table, key, op, Some(Value::Object(row.clone()).to_string()))
    }

    fn claim_and_record(
        &mut self,
        table: &'static Table,
        key: &str,
        op: Op,
        image: Option<String>,
    ) -> Result<()> {
        let deleted = op == Op::Delete;
        let rows =
            self.with(|c| c.query(RECORD_SQL, &[&table.name, &key, &deleted, &op.as_str(), &image]))?;
        if rows.is_empty() {
            // The sequence is moved past every revision before PostgreSQL becomes the primary,
            // so this means someone reset it: refuse rather than write a change that could lose.
            return Err(Error::Internal(format!(
                "{} {key}: PostgreSQL already holds a newer revision than dualwrite.revision_seq gave; \
                 the revision sequence was reset",
                table.name
            )));
        }
        Ok(())
    }
}

impl Drop for PgWrite {
    fn drop(&mut self) {
        // A write abandoned by a panic: end the transaction (the connection goes with it).
        if let Some(c) = self.client.get_mut().as_mut() {
            let _ = c.batch_execute("ROLLBACK");
        }
    }
}

/// Up to `limit` outbox records after `after`, oldest first.
pub(crate) fn records_after(
    client: &mut impl postgres::GenericClient,
    after: i64,
    limit: i64,
) -> Result<Vec<PrimaryRecord>, postgres::Error> {
    let rows = client.query(AFTER_SQL, &[&after, &limit])?;
    Ok(rows
        .iter()
        .map(|r| {
            let op: String = r.get(3);
            PrimaryRecord {
                seq: r.get(0),
                table_name: r.get(1),
                row_key: r.get(2),
                op: if op == "delete" { Op::Delete } else { Op::Upsert },
                row_image: r.get(4),
            }
        })
        .collect())
}

/// Rows of `table` matching `where_sql`, a condition written for SQLite in this crate (see
/// [`translate_where`]), with its SQLite arguments; in the wire form.
pub(crate) fn select_where(
    client: &mut impl postgres::GenericClient,
    table: &Table,
    where_sql: &str,
    args: &[&dyn rusqlite::ToSql],
) -> Result<Vec<Map<String, Value>>> {
    let sql = format!("{} WHERE {}", row_to_wire_sql(table), translate_where(table, where_sql)?);
    let texts = args.iter().map(|a| arg_text(*a)).collect::<Result<Vec<Option<String>>>>()?;
    let params = texts.iter().map(|t| t as &(dyn postgres::types::ToSql + Sync));
    crate::store::postgres::wire_rows_within(client, table, &sql, params, write_error)
}

/// Translate a condition written for SQLite in this crate (`col = ?1 AND other IS ?2 ORDER BY
/// ... LIMIT 1`) to PostgreSQL: each `column op ?N` becomes `column op $N` cast to the column's
/// type (values travel as text, as everywhere in `store::postgres`), and SQLite's null-safe `IS`
/// becomes `IS NOT DISTINCT FROM`. Every other token (constants, ORDER BY, CASE, LIMIT) is the
/// same in both dialects (so conditions are written with spaces around parentheses). A placeholder
/// in any other position is refused, not guessed at.
pub(crate) fn translate_where(table: &Table, where_sql: &str) -> Result<String> {
    let tokens: Vec<&str> = where_sql.split_whitespace().collect();
    let mut out: Vec<String> = Vec::with_capacity(tokens.len());
    for (i, tok) in tokens.iter().enumerate() {
        let Some(n) = tok.strip_prefix('?') else {
            out.push((*tok).to_string());
            continue;
        };
        let untranslatable = || Error::Internal(format!("cannot translate {where_sql:?} for PostgreSQL"));
        let n: usize = n.parse().map_err(|_| untranslatable())?;
        let (Some(column), Some(op)) = (
            i.checked_sub(2).and_then(|j| table.column(tokens[j])),
            i.checked_sub(1).and_then(|j| tokens.get(j)),
        ) else {
            return Err(untranslatable());
        };
        let op = match *op {
            "=" | "<" | "<=" | ">" | ">=" => (*op).to_string(),
            "IS" => "IS NOT DISTINCT FROM".to_string(),
            _ => return Err(untranslatable()),
        };
        *out.last_mut().ok_or_else(untranslatable)? = op;
        out.push(typed_placeholder(column, n));
    }
    Ok(out.join(" "))
}

/// A SQLite argument as the text PostgreSQL casts (NULL stays NULL).
fn arg_text(arg: &dyn rusqlite::ToSql) -> Result<Option<String>> {
    let out = arg.to_sql()?;
    let value = match &out {
        ToSqlOutput::Borrowed(v) => *v,
        ToSqlOutput::Owned(v) => ValueRef::from(v),
        _ => return Err(Error::Internal("an argument type PostgreSQL writes cannot take".into())),
    };
    Ok(match value {
        ValueRef::Null => None,
        ValueRef::Integer(i) => Some(i.to_string()),
        ValueRef::Real(f) => Some(f.to_string()),
        ValueRef::Text(t) => Some(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(_) => return Err(Error::Internal("a blob argument in a PostgreSQL write".into())),
    })
}

/// A PostgreSQL error of a write as the error the same write gets from SQLite: broken rules of
/// the data are conflicts, bad values invalid arguments, a lost connection unavailable.
pub(crate) fn write_error(e: postgres::Error) -> Error {
    let Some(db) = e.as_db_error() else {
        // No server error: the connection is gone or timed out (an i/o error), or the client
        // itself failed (conversions: a bug, kept as the driver's error).
        let io = std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>());
        return if e.is_closed() || io {
            Error::Unavailable(format!("PostgreSQL (the primary store) is unreachable: {e}"))
        } else {
            Error::Postgres(e)
        };
    };
    let code = db.code().code();
    if code.starts_with("23") {
        Error::Conflict(format!("{} ({code})", db.message()))
    } else if code.starts_with("22") {
        Error::invalid(db.column().or(db.table()).unwrap_or("value"), format!("{} ({code})", db.message()))
    } else {
        Error::Postgres(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str) -> &'static Table {
        crate::schema::table(name).unwrap()
    }

    #[test]
    fn conditions_translate_with_typed_placeholders() {
        assert_eq!(
            translate_where(t("api_keys"), "owner_id = ?1 AND provider = ?2 LIMIT 1").unwrap(),
            "owner_id = $1::text::uuid AND provider = $2::text LIMIT 1"
        );
        assert_eq!(
            translate_where(t("generated_text"), "section_type = ?1 AND job_id IS ?2 ORDER BY version DESC LIMIT 1")
                .unwrap(),
            "section_type = $1::text AND job_id IS NOT DISTINCT FROM $2::text::uuid ORDER BY version DESC LIMIT 1"
        );
        assert_eq!(
            translate_where(t("wordstat_cache"), "expires_at <= ?1").unwrap(),
            "expires_at <= $1::text::timestamptz"
        );
    }

    #[test]
    fn a_placeholder_it_cannot_place_is_refused() {
        assert!(translate_where(t("jobs"), "status = 'queued' LIMIT ?1").is_err());
        assert!(translate_where(t("jobs"), "?1 = status").is_err());
        assert!(translate_where(t("jobs"), "nosuch = ?1").is_err());
    }
}
