//! The SQLite side: connections with the bridge's pragmas and registry-derived SQL for reading
//! rows. The write transaction is `store::write_tx`, the outbox's bookkeeping `store::outbox`.

use crate::error::Result;
use crate::schema::{decode_sqlite_row, encode_for_sqlite, Filter, SqlValue, Table};
use rusqlite::{Connection, ToSql};
use serde_json::{Map, Value};
use std::path::Path;
use std::time::Duration;

// The outbox's vocabulary has a file of its own (`store::outbox`); these names stay reachable here
// for the code and tests written against `store::sqlite::{Op, Outbox, OutboxRecord}`.
pub use crate::store::outbox::{Op, Outbox, OutboxRecord};

/// How long a writer waits for another process's write lock before failing with `Busy`.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Open a connection with the pragmas every bridge connection uses: WAL (readers never block the
/// writer), synchronous=FULL (a returned write survives power loss, not only a crash), foreign
/// keys on, and a busy timeout so concurrent processes queue instead of failing.
pub fn open(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.set_prepared_statement_cache_capacity(128);
    Ok(conn)
}

/// `a, b, c`: the table's columns in registry order (the order [`decode_sqlite_row`] reads).
pub(crate) fn column_list(table: &Table) -> String {
    table.column_names().collect::<Vec<_>>().join(", ")
}

fn select_sql(table: &Table) -> String {
    format!("SELECT {} FROM {}", column_list(table), table.name)
}

/// Read access to rows, for a plain connection or a transaction.
pub trait Rows {
    fn conn(&self) -> &Connection;

    fn get_row(&self, table: &Table, key: &str) -> Result<Option<Map<String, Value>>> {
        get_row(self.conn(), table, key)
    }

    /// Rows matching `filter`.
    fn query_rows(&self, table: &Table, filter: &Filter) -> Result<Vec<Map<String, Value>>> {
        filtered_rows_within(self.conn(), table, filter, usize::MAX)
    }
}

pub(crate) fn get_row(conn: &Connection, table: &Table, key: &str) -> Result<Option<Map<String, Value>>> {
    let sql = format!("{} WHERE {} = ?1", select_sql(table), table.key);
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query([key])?;
    match rows.next()? {
        Some(r) => Ok(Some(decode_sqlite_row(table, r)?)),
        None => Ok(None),
    }
}

/// `filter` as SQLite's SQL after `WHERE` for `table`, with the values it binds (as SQLite
/// stores them for their columns).
pub(crate) fn filter_sql(table: &Table, filter: &Filter) -> Result<(String, Vec<SqlValue>)> {
    let mut args = Vec::new();
    let sql = filter.render(table, |column, value| {
        args.push(encode_for_sqlite(column, value)?);
        Ok(format!("?{}", args.len()))
    })?;
    Ok((sql, args))
}

/// Rows of `table` matching `filter`, read like [`query_rows_within`].
pub(crate) fn filtered_rows_within(
    conn: &Connection,
    table: &Table,
    filter: &Filter,
    max_bytes: usize,
) -> Result<Vec<Map<String, Value>>> {
    let (sql, args) = filter_sql(table, filter)?;
    let refs: Vec<&dyn ToSql> = args.iter().map(|a| a as &dyn ToSql).collect();
    query_rows_within(conn, table, &sql, &refs, max_bytes)
}

/// Rows matching `where_sql`, SQLite SQL this crate rendered (a [`Filter`]'s, see
/// [`filter_sql`], or `reads::ListQuery`'s; never caller text) with its values in `args`.
/// For a list a caller asked for reading stops, with `store::list_too_large`, once the rows'
/// values take more than `max_bytes` (the first row is always read).
pub(crate) fn query_rows_within(
    conn: &Connection,
    table: &Table,
    where_sql: &str,
    args: &[&dyn ToSql],
    max_bytes: usize,
) -> Result<Vec<Map<String, Value>>> {
    use rusqlite::types::ValueRef;
    let sql = format!("{} WHERE {}", select_sql(table), where_sql);
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(args)?;
    let mut out = Vec::new();
    let mut bytes = 0usize;
    while let Some(r) = rows.next()? {
        for i in 0..table.columns.len() {
            bytes += match r.get_ref(i)? {
                ValueRef::Text(b) | ValueRef::Blob(b) => b.len(),
                _ => 8,
            };
        }
        if bytes > max_bytes && !out.is_empty() {
            return Err(crate::store::list_too_large(out.len()));
        }
        out.push(decode_sqlite_row(table, r)?);
    }
    Ok(out)
}

impl Rows for Connection {
    fn conn(&self) -> &Connection {
        self
    }
}

#[cfg(test)]
mod filter_tests {
    use super::*;
    use serde_json::json;

    /// Each value is bound as SQLite stores it for its column (an int as an INTEGER).
    #[test]
    fn filters_render_with_numbered_placeholders_and_stored_values() {
        let prompts = crate::schema::table("prompts").unwrap();
        let f = Filter::new().eq("key", "k").greater("version", json!(2)).eq("updated_by", Value::Null);
        assert_eq!(
            filter_sql(prompts, &f).unwrap(),
            (
                "key = ?1 AND version > ?2 AND updated_by IS NULL".to_string(),
                vec![SqlValue::Text("k".into()), SqlValue::Integer(2)]
            )
        );
    }
}
