//! Writes with PostgreSQL as the primary store (write modes `postgres_primary` and `postgres`).
//!
//! A repository operation runs unchanged: inside `Bridge::write` its reads and writes go to one
//! PostgreSQL transaction instead of SQLite, on a connection from the bridge's pool, and the
//! write returns after PostgreSQL's commit. No SQLite lock is held: the transaction starts at the
//! write fence (`store::fence`), which orders it against phase switches. SQLite learns of the
//! change like of any other writer's, from the change capture (`crate::capture`), in the
//! background (`postgres_primary`) or at a rollback (`postgres`).

use crate::error::{Error, Result};
use crate::flags::WriteMode;
use crate::schema::{ColType, Column, Filter, Table};
use crate::store::pg_pool::PooledClient;
use crate::store::postgres::{
    filter_sql_after, key_type, row_to_wire_sql, typed_placeholder, wire_columns, wire_row,
};
use serde_json::{Map, Value};
use std::cell::RefCell;

/// The PostgreSQL half of one write while PostgreSQL is the primary: an open transaction on a
/// pooled connection. `RefCell` because the row reads of `store::sqlite::Rows` take `&self`; a
/// write runs on one thread.
pub(crate) struct PgWrite {
    /// `None` once the transaction ended and the connection went back to the pool.
    client: RefCell<Option<PooledClient>>,
    /// No transaction: one statement in autocommit with the fence checked inside it (see
    /// [`PgWrite::one_statement_write`]).
    single: bool,
    /// The in-statement fence check refused the write: the fence's mode.
    fenced: std::cell::Cell<Option<Option<WriteMode>>>,
}

/// What the write fence said when a PostgreSQL-first write began.
pub(crate) enum Began {
    /// PostgreSQL takes the write (`postgres_primary`, `postgres`).
    Write(Box<PgWrite>),
    /// The fence holds another mode: a switch happened (or is half-way). The connection went back.
    Fenced(Option<WriteMode>),
}

impl PgWrite {
    /// Start a transaction on `client` at the write fence.
    pub(crate) fn begin(mut client: PooledClient) -> Result<Began> {
        let mode = crate::store::fence::begin_write(&mut client).map_err(write_error)?;
        let write = PgWrite { client: RefCell::new(Some(client)), single: false, fenced: Default::default() };
        match mode {
            Some(WriteMode::PostgresPrimary | WriteMode::Postgres) => Ok(Began::Write(Box::new(write))),
            other => {
                write.abort();
                Ok(Began::Fenced(other))
            }
        }
    }

    /// A write that is one statement and nothing else — an insert, [`PgWrite::update_where`] or
    /// [`PgWrite::upsert`]: nothing is sent yet; the statement runs in autocommit, its WHERE
    /// clause checking the write fence (`fence::CHECK_IN_STATEMENT`), so the write is one round
    /// trip instead of three or four (begin at the fence, read, write, commit). A second
    /// statement, or a read, on it is refused as a bug.
    pub(crate) fn one_statement_write(client: PooledClient) -> Box<PgWrite> {
        Box::new(PgWrite { client: RefCell::new(Some(client)), single: true, fenced: Default::default() })
    }

    /// The in-statement fence check refused the write (one-statement writes): the fence's mode.
    pub(crate) fn fenced(&self) -> Option<Option<WriteMode>> {
        self.fenced.get()
    }

    /// Run `f` on the open transaction's connection.
    fn with<T>(
        &self,
        f: impl FnOnce(&mut crate::store::pg_pool::PgConn) -> Result<T, postgres::Error>,
    ) -> Result<T> {
        self.in_transaction()?;
        let mut guard = self.client.borrow_mut();
        let client =
            guard.as_mut().ok_or_else(|| Error::Internal("the PostgreSQL write has ended".into()))?;
        f(client).map_err(write_error)
    }

    /// The row under `key`, locked until the transaction ends (see [`PgWrite::query_rows`]).
    pub(crate) fn get_row(&self, table: &Table, key: &str) -> Result<Option<Map<String, Value>>> {
        let sql = format!(
            "{} WHERE {} = {} FOR NO KEY UPDATE",
            row_to_wire_sql(table),
            table.key,
            typed_placeholder(table.key_column(), 1)
        );
        let rows = self.with(|c| {
            let st = c.prepared(&sql)?;
            c.query(&st, &[&key])
        })?;
        rows.first().map(|r| wire_row(table, r)).transpose()
    }

    /// Rows matching `filter`, in the open transaction, each locked until it ends.
    ///
    /// A write reads rows to decide what to change (a job's status before it moves, the next job
    /// to claim). In SQLite the write lock held the whole transaction, so what it read could not
    /// change before its commit; PostgreSQL's READ COMMITTED gives no such promise, and two
    /// writes could both see a job `queued` and both claim it. A row lock restores it per row
    /// (`FOR NO KEY UPDATE`, what an UPDATE that keeps the key takes, so it does not block the
    /// foreign-key checks of inserted children): a second write waits for the first's commit and
    /// then reads the row as committed (a row that no longer meets the filter is skipped, and a
    /// `LIMIT` takes the next one).
    pub(crate) fn query_rows(&self, table: &Table, filter: &Filter) -> Result<Vec<Map<String, Value>>> {
        self.in_transaction()?;
        let mut guard = self.client.borrow_mut();
        let client =
            guard.as_mut().ok_or_else(|| Error::Internal("the PostgreSQL write has ended".into()))?;
        crate::store::postgres::select_filtered_for_update(client, table, filter, write_error)
    }

    /// Wait until every other write holding `(scope, key)` has ended, and hold it to this
    /// transaction's end (`pg_advisory_xact_lock` on the two texts' hashes; a collision only
    /// makes unrelated writes wait for each other). See `WriteTx::serialize_on`.
    pub(crate) fn serialize_on(&self, scope: &str, key: &str) -> Result<()> {
        self.with(|c| {
            let st = c.prepared("SELECT pg_advisory_xact_lock(hashtext($1), hashtext($2))")?;
            c.execute(&st, &[&scope, &key])
        })?;
        Ok(())
    }

    /// Refuse a statement that needs the transaction on a one-statement write (a bug: only
    /// writes that are one statement are made so).
    fn in_transaction(&self) -> Result<()> {
        if self.single {
            return Err(Error::Internal(
                "a one-statement PostgreSQL write ran another statement (it has no transaction)".into(),
            ));
        }
        Ok(())
    }

    /// Insert a complete, validated row; returns it as PostgreSQL stored it.
    pub(crate) fn insert(
        &mut self,
        table: &'static Table,
        row: &Map<String, Value>,
    ) -> Result<Map<String, Value>> {
        if self.single {
            return self.insert_checked_at_fence(table, row);
        }
        let values = Values::of_row(table, row);
        let sql = insert_sql(table);
        self.returning_row(table, &sql.in_transaction, &values.params())?
            .ok_or_else(|| Error::Internal("INSERT RETURNING gave no row".into()))
    }

    /// The one-statement write's insert, the fence checked in its WHERE clause.
    fn insert_checked_at_fence(
        &mut self,
        table: &'static Table,
        row: &Map<String, Value>,
    ) -> Result<Map<String, Value>> {
        let values = Values::of_row(table, row);
        let sql = insert_sql(table);
        self.one_statement(table, &sql.at_fence, &values.params())?
            .ok_or_else(|| Error::Internal("INSERT RETURNING gave no row".into()))
    }

    /// Set `changes` (validated, not the key) on the row under `key` if it meets `condition`, in
    /// one statement; `None` when no row was changed (there is none, or it does not meet the
    /// condition: the caller's ordinary way finds out which and says so). Only on a
    /// one-statement write ([`PgWrite::one_statement_write`]): the fence is checked inside it.
    pub(crate) fn update_where(
        &mut self,
        table: &'static Table,
        key: &str,
        changes: &Map<String, Value>,
        condition: &Filter,
    ) -> Result<Option<Map<String, Value>>> {
        self.only_one_statement("a conditional update")?;
        if changes.is_empty() || changes.contains_key(table.key) {
            return Err(Error::Internal(format!(
                "a conditional update of {} sets no column or its key",
                table.name
            )));
        }
        if !condition.is_conditions_only() {
            return Err(Error::Internal("a conditional update's filter orders or limits".into()));
        }
        // $1: the key, then the changes, then the condition's values.
        let values = Values::of_changes(table, changes, 1)?;
        let (condition, params) = filter_sql_after(table, condition, 1 + values.texts.len())?;
        let sql = format!(
            "UPDATE public.{t} SET {set} WHERE {key} = {p} AND {condition} AND {check} RETURNING {w}",
            t = table.name,
            set = values.assignments(),
            key = table.key,
            p = typed_placeholder(table.key_column(), 1),
            check = crate::store::fence::CHECK_IN_STATEMENT,
            w = wire_columns(table)
        );
        let mut all: Vec<&(dyn postgres::types::ToSql + Sync)> = vec![&key];
        all.extend(values.params());
        all.extend(params.iter().map(|p| p as &(dyn postgres::types::ToSql + Sync)));
        self.one_statement(table, &sql, &all)
    }

    /// Insert `row` (complete, validated) or, when a row with the same values in the `conflict`
    /// columns exists (the key or a unique constraint of the registry), set `set` on it instead
    /// (it keeps its key and other columns), in one statement. Only on a one-statement write.
    pub(crate) fn upsert(
        &mut self,
        table: &'static Table,
        row: &Map<String, Value>,
        conflict: &[&str],
        set: &Map<String, Value>,
    ) -> Result<Map<String, Value>> {
        self.only_one_statement("an upsert")?;
        let unique = conflict == [table.key] || table.unique.contains(&conflict);
        if !unique || set.is_empty() || set.contains_key(table.key) {
            return Err(Error::Internal(format!(
                "an upsert of {} on ({}) needs a unique constraint there and columns to set",
                table.name,
                conflict.join(", ")
            )));
        }
        let values = Values::of_row(table, row);
        let set_values = Values::of_changes(table, set, values.texts.len())?;
        let sql = format!(
            "INSERT INTO public.{t} ({cols}) SELECT {values} WHERE {check} ON CONFLICT ({conflict}) DO UPDATE SET {set} \
             RETURNING {w}",
            t = table.name,
            cols = table.column_names().collect::<Vec<_>>().join(", "),
            values = row_placeholders(table),
            check = crate::store::fence::CHECK_IN_STATEMENT,
            conflict = conflict.join(", "),
            set = set_values.assignments(),
            w = wire_columns(table)
        );
        let mut all = values.params();
        all.extend(set_values.params());
        self.one_statement(table, &sql, &all)?
            .ok_or_else(|| Error::Internal("INSERT … ON CONFLICT DO UPDATE RETURNING gave no row".into()))
    }

    fn only_one_statement(&self, what: &str) -> Result<()> {
        if self.single {
            return Ok(());
        }
        Err(Error::Internal(format!("{what} is made only as a one-statement PostgreSQL write")))
    }

    /// Run the one-statement write's statement (in autocommit; usable once) and return the row
    /// it gave back, if any. A refusal by the fence is remembered ([`PgWrite::fenced`]).
    fn one_statement(
        &mut self,
        table: &Table,
        sql: &str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<Option<Map<String, Value>>> {
        let mut guard = self.client.borrow_mut();
        let client = guard.as_mut().ok_or_else(|| {
            Error::Internal("a one-statement PostgreSQL write ran a second statement".into())
        })?;
        let result = client.prepared(sql).and_then(|st| client.query(&st, params));
        // One statement: the connection goes back to the pool now, whatever happened.
        drop(guard.take());
        let rows = result.map_err(|e| {
            if let Some(mode) = crate::store::fence::refused_by_fence(&e) {
                self.fenced.set(Some(mode));
                return Error::Unavailable(format!(
                    "the write fence holds write mode {} (a phase switch): the write goes through that mode",
                    mode.map_or("unknown", |m| m.as_str())
                ));
            }
            write_error(e)
        })?;
        rows.first().map(|r| wire_row(table, r)).transpose()
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
        let values = Values::of_changes(table, changes, 1)?;
        let sql = format!(
            "UPDATE public.{t} SET {set} WHERE {key} = {p} RETURNING {w}",
            t = table.name,
            set = values.assignments(),
            key = table.key,
            p = typed_placeholder(table.key_column(), 1),
            w = wire_columns(table)
        );
        let mut all: Vec<&(dyn postgres::types::ToSql + Sync)> = vec![&key];
        all.extend(values.params());
        self.returning_row(table, &sql, &all)?.ok_or_else(|| Error::not_found(table.name, key))
    }

    /// Delete a row; `false` when there was none (nothing is recorded then).
    pub(crate) fn delete(&mut self, table: &'static Table, key: &str) -> Result<bool> {
        let sql =
            format!("DELETE FROM public.{} WHERE {} = $1::text::{}", table.name, table.key, key_type(table));
        Ok(self.with(|c| {
            let st = c.prepared(&sql)?;
            c.execute(&st, &[&key])
        })? > 0)
    }

    /// Commit. The connection goes back to the pool whatever happens (dropped if it broke).
    pub(crate) fn commit(self) -> Result<()> {
        if self.single {
            // Autocommit: the insert committed as it ran.
            return Ok(());
        }
        let result = self.with(|c| c.batch_execute("COMMIT"));
        self.hand_back(result.is_ok());
        result
    }

    /// Roll back; the connection goes back to the pool (dropped if it broke).
    pub(crate) fn abort(self) {
        self.hand_back(false)
    }

    fn hand_back(self, committed: bool) {
        let Some(mut client) = self.client.borrow_mut().take() else { return };
        if !committed && !self.single && !client.is_closed() {
            // An error inside a transaction leaves it aborted: end it before the reuse. If even
            // that fails the connection is closed and the pool drops it.
            let _ = client.batch_execute("ROLLBACK");
        }
    }

    fn returning_row(
        &mut self,
        table: &Table,
        sql: &str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<Option<Map<String, Value>>> {
        let rows = self.with(|c| {
            let st = c.prepared(sql)?;
            c.query(&st, params)
        })?;
        rows.first().map(|r| wire_row(table, r)).transpose()
    }
}

impl Drop for PgWrite {
    fn drop(&mut self) {
        // A write abandoned by a panic: end the transaction (the connection goes with it).
        if self.single {
            return;
        }
        if let Some(c) = self.client.get_mut().as_mut() {
            let _ = c.batch_execute("ROLLBACK");
        }
    }
}

/// The statements inserting a whole row of a table, made once per registry table (see
/// [`Values`]).
#[derive(Clone)]
struct InsertSql {
    /// Inside a transaction begun at the write fence.
    in_transaction: String,
    /// A one-statement write in autocommit, the fence checked in its WHERE clause.
    at_fence: String,
}

fn insert_sql(table: &Table) -> std::borrow::Cow<'static, InsertSql> {
    static SQL: std::sync::OnceLock<Vec<InsertSql>> = std::sync::OnceLock::new();
    match crate::store::postgres::per_registry_table(&SQL, table, build_insert_sql) {
        Some(sql) => std::borrow::Cow::Borrowed(sql),
        None => std::borrow::Cow::Owned(build_insert_sql(table)),
    }
}

fn build_insert_sql(table: &Table) -> InsertSql {
    let (t, cols, values, w) = (
        table.name,
        table.column_names().collect::<Vec<_>>().join(", "),
        row_placeholders(table),
        wire_columns(table),
    );
    InsertSql {
        in_transaction: format!("INSERT INTO public.{t} ({cols}) VALUES ({values}) RETURNING {w}"),
        at_fence: format!(
            "INSERT INTO public.{t} ({cols}) SELECT {values} WHERE {check} RETURNING {w}",
            check = crate::store::fence::CHECK_IN_STATEMENT
        ),
    }
}

/// `$1::text::uuid, $2::text::jsonb, …` over every column of `table`, in its order (what
/// [`Values::of_row`] binds).
fn row_placeholders(table: &Table) -> String {
    let all: Vec<String> =
        table.columns.iter().enumerate().map(|(i, c)| typed_placeholder(c, i + 1)).collect();
    all.join(", ")
}

/// Validated values of some columns of a table, as the texts [`typed_placeholder`]s bind (each
/// cast to its column's type in the statement: measured cheaper for PostgreSQL than building the
/// row from a JSON document, see docs/BENCHMARKS.md); a JSON null is SQL's NULL.
struct Values {
    columns: Vec<(&'static Column, usize)>,
    texts: Vec<Option<String>>,
}

impl Values {
    /// Every column of `table` in its order (a complete row; a missing column is NULL), from
    /// `$1` (see [`row_placeholders`]).
    fn of_row(table: &'static Table, row: &Map<String, Value>) -> Values {
        Values::build(table.columns.iter().map(|c| (c, row.get(c.name).unwrap_or(&Value::Null))), 0)
    }

    /// The columns `changes` names, each checked against the registry (they are written into the
    /// SQL), numbered after the first `after` parameters.
    fn of_changes(table: &'static Table, changes: &Map<String, Value>, after: usize) -> Result<Values> {
        let mut cols = Vec::with_capacity(changes.len());
        for (name, value) in changes {
            let c = table
                .column(name)
                .ok_or_else(|| Error::invalid(format!("{}.{name}", table.name), "no such column"))?;
            cols.push((c, value));
        }
        Ok(Values::build(cols.into_iter(), after))
    }

    fn build<'v>(cols: impl Iterator<Item = (&'static Column, &'v Value)>, after: usize) -> Values {
        let (mut columns, mut texts) = (Vec::new(), Vec::new());
        for (i, (c, v)) in cols.enumerate() {
            columns.push((c, after + i + 1));
            texts.push(match v {
                Value::Null => None,
                // A JSON column takes the JSON text itself (a string value keeps its quotes).
                v if c.ty == ColType::Jsonb => Some(v.to_string()),
                Value::String(s) => Some(s.clone()),
                other => Some(other.to_string()),
            });
        }
        Values { columns, texts }
    }

    /// `a = $1::text::uuid, b = …`: an UPDATE's SET list.
    fn assignments(&self) -> String {
        let set: Vec<String> =
            self.columns.iter().map(|(c, n)| format!("{} = {}", c.name, typed_placeholder(c, *n))).collect();
        set.join(", ")
    }

    fn params(&self) -> Vec<&(dyn postgres::types::ToSql + Sync)> {
        self.texts.iter().map(|t| t as &(dyn postgres::types::ToSql + Sync)).collect()
    }
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
        Error::conflict(format!("{} ({code})", db.message()))
    } else if code.starts_with("22") {
        Error::invalid(db.column().or(db.table()).unwrap_or("value"), format!("{} ({code})", db.message()))
    } else {
        Error::Postgres(e)
    }
}
