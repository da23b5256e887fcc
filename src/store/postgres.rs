//! The PostgreSQL side of replication: apply a batch of outbox records in one transaction,
//! set-based per table, each change guarded by its revision.
//!
//! For every row the newest applied revision lives in `dualwrite.row_revisions` (with a tombstone
//! flag for deletes). A change is applied only if it wins the revision claim
//! (`INSERT … ON CONFLICT DO UPDATE … WHERE revision < EXCLUDED.revision RETURNING`), so replaying
//! a batch changes nothing, an older copy never replaces a newer one, and a deleted row never
//! returns — whether the older copy comes from a retry, a second process or the backfill.

use crate::error::{Error, Result};
use crate::schema::{self, ColType, Table};
use crate::store::outbox::{Op, OutboxRecord};
use std::collections::HashMap;

/// What one batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Changes that won their revision claim and were written.
    pub written: usize,
    /// Changes skipped: superseded in the same batch, or already applied / older than PostgreSQL's.
    pub skipped: usize,
}

/// Whether a PostgreSQL failure is worth retrying as it is (connection, shutdown, contention,
/// resources; also a schema not migrated yet) or is a property of one change that will fail the
/// same way every time (data exceptions, integrity violations, program limits such as an index
/// row too large: SQLSTATE classes 22, 23 and 54).
pub fn is_permanent(e: &postgres::Error) -> bool {
    match e.code() {
        Some(code) => {
            let c = code.code();
            c.starts_with("22") || c.starts_with("23") || c.starts_with("54")
        }
        None => false,
    }
}

/// Said at the start of each of the bridge's write transactions: if the bridge stops talking in
/// the middle of one (its reply deadline, `pg_deadline.rs`, gave up on a connection a middlebox
/// holds open), PostgreSQL ends the session after 10 s instead of keeping its row locks until
/// TCP notices, which could be hours, while the retry waits on those locks. These transactions
/// send their statements back to back, so 10 s idle means abandoned. `SET LOCAL`: it ends with
/// the transaction, so it is safe through a transaction-pooling connection pooler.
pub(crate) const ABANDONED_TRANSACTION_TIMEOUT: &str =
    "SET LOCAL idle_in_transaction_session_timeout = '10s'";

/// The key column's SQL type, for casting the text keys of a batch.
pub(crate) fn key_type(table: &Table) -> &'static str {
    match table.key_column().ty {
        ColType::Uuid => "uuid",
        _ => "text",
    }
}

/// The images go in as `json`, not `jsonb`: each value reaches its column's input function as the
/// text it was written as, so a vector component `-0.0` stays negative zero (jsonb's numbers are
/// `numeric`, which has no negative zero). jsonb columns parse their part as jsonb all the same.
fn upsert_sql(table: &Table) -> String {
    let cols = table.column_names().collect::<Vec<_>>().join(", ");
    let sets = table.set_all_from_excluded();
    format!(
        "INSERT INTO public.{t} ({cols}) SELECT {cols} FROM json_populate_recordset(NULL::public.{t}, $1::text::json) \
         ON CONFLICT ({key}) DO UPDATE SET {sets}",
        t = table.name,
        key = table.key
    )
}

const CLAIM_SQL: &str = "INSERT INTO dualwrite.row_revisions (table_name, row_key, revision, deleted)
     SELECT $1, k, r, d FROM unnest($2::text[], $3::int8[], $4::bool[]) AS u(k, r, d)
     ON CONFLICT (table_name, row_key) DO UPDATE SET revision = EXCLUDED.revision, deleted = EXCLUDED.deleted
     WHERE dualwrite.row_revisions.revision < EXCLUDED.revision
     RETURNING row_key";

/// The revision claim itself (`$1` table name, `$2` keys, `$3` revisions, `$4` tombstone flags;
/// returns the keys that won), for the backfill, which runs it as a CTE in front of its own
/// upsert: one guard for every writer of PostgreSQL, never a copy of it.
pub(crate) fn claim_sql() -> &'static str {
    CLAIM_SQL
}

/// The advisory lock (two-key form: this class, the table's position in the registry) that
/// orders the replicator's deletes against the backfill's unclaimed copies.
///
/// The backfill copies rows that no change ever touched straight into the target table, without a
/// revision claim of their own (`src/backfill.rs`, "the direct path"). A row's newer version from
/// the replicator meets that copy on the table's primary key (one of the two waits for the other),
/// but a delete does not: a `DELETE` cannot see a row another transaction has inserted and not
/// committed, so a tombstone committed while such a copy is in flight would leave the copied row
/// behind — a deleted row come back. So every transaction that deletes rows of a table takes this
/// lock exclusively before its `DELETE`, and the backfill takes it shared, before it looks for
/// tombstones of the keys it copied and commits: either the delete committed before the look (and
/// the backfill removes its copy), or it waits for the copy's commit (and deletes the row).
pub const DELETE_LOCK_CLASS: i32 = 0x6477_0001;

/// The table's key for [`DELETE_LOCK_CLASS`].
pub fn delete_lock_key(table: &Table) -> i32 {
    table.fk_rank() as i32
}

/// Apply `records` (in sequence order) in one transaction. With `defer_fks`, foreign keys are
/// checked at commit, so a batch may mix tables in any order; a batch of more than one record
/// needs it (the replicator's batches have it; a record applied alone has no order to keep).
///
/// Order: every table's revision claims, then every delete (children before parents), then every
/// upsert (parents before children; within a table in sequence order). Deletes go first because
/// unique constraints are checked row by row, not at commit: a row deleted and its unique key
/// (owner + provider, prompt key + version, email) re-created under a new id in the same batch
/// must be gone before the new row arrives, as it was in SQLite.
pub fn apply_batch(
    client: &mut postgres::Client,
    records: &[OutboxRecord],
    defer_fks: bool,
) -> Result<Applied, postgres::Error> {
    // Only the newest change of each row in the batch matters: it carries the highest revision.
    let mut last: HashMap<(&str, &str), &OutboxRecord> = HashMap::with_capacity(records.len());
    for r in records {
        let slot = last.entry((r.table_name.as_str(), r.row_key.as_str())).or_insert(r);
        if r.seq > slot.seq {
            *slot = r;
        }
    }
    let mut by_table: Vec<(&'static Table, Vec<&OutboxRecord>)> = Vec::new();
    for r in last.values() {
        let table = match schema::table(&r.table_name) {
            Some(t) => t,
            // Cannot happen for records this library wrote; treat as data error of this change.
            None => continue,
        };
        match by_table.iter_mut().find(|(t, _)| t.name == table.name) {
            Some((_, v)) => v.push(r),
            None => by_table.push((table, vec![r])),
        }
    }
    by_table.sort_by_key(|(t, _)| t.fk_rank());
    for (_, recs) in &mut by_table {
        recs.sort_by_key(|r| r.seq);
    }

    let mut tx = client.transaction()?;
    if defer_fks {
        tx.batch_execute(&format!("{ABANDONED_TRANSACTION_TIMEOUT}; SET CONSTRAINTS ALL DEFERRED"))?;
    } else {
        tx.batch_execute(ABANDONED_TRANSACTION_TIMEOUT)?;
    }
    let mut written = 0;
    // Per table (parents first): the images of the upserts that won, as one JSON array, and the
    // keys of the deletes that won.
    let mut upserts: Vec<(&'static Table, String)> = Vec::new();
    let mut deletes: Vec<(&'static Table, Vec<String>)> = Vec::new();
    for (table, recs) in &by_table {
        let keys: Vec<&str> = recs.iter().map(|r| r.row_key.as_str()).collect();
        let revs: Vec<i64> = recs.iter().map(|r| r.seq).collect();
        let dels: Vec<bool> = recs.iter().map(|r| r.op == Op::Delete).collect();
        let won: std::collections::HashSet<String> =
            tx.query(CLAIM_SQL, &[&table.name, &keys, &revs, &dels])?.iter().map(|row| row.get(0)).collect();
        let mut images = String::from("[");
        let mut count = 0;
        let mut gone = Vec::new();
        for r in recs.iter().filter(|r| won.contains(&r.row_key)) {
            match (r.op, &r.row_image) {
                (Op::Upsert, Some(img)) => {
                    if count > 0 {
                        images.push(',');
                    }
                    images.push_str(img);
                    count += 1;
                }
                _ => gone.push(r.row_key.clone()),
            }
        }
        images.push(']');
        written += count + gone.len();
        if count > 0 {
            upserts.push((table, images));
        }
        if !gone.is_empty() {
            deletes.push((table, gone));
        }
    }
    for (table, keys) in deletes.iter().rev() {
        // See DELETE_LOCK_CLASS: taken in the same (child-first) order by every batch, released at
        // commit; uncontended unless a backfill is finishing a chunk of this table.
        tx.execute("SELECT pg_advisory_xact_lock($1, $2)", &[&DELETE_LOCK_CLASS, &delete_lock_key(table)])?;
        let sql = format!(
            "DELETE FROM public.{} WHERE {} = ANY($1::text[]::{}[])",
            table.name,
            table.key,
            key_type(table)
        );
        tx.execute(&sql, &[keys])?;
    }
    for (table, images) in &upserts {
        tx.execute(&upsert_sql(table), &[images])?;
    }
    tx.commit()?;
    Ok(Applied { written, skipped: records.len() - written })
}

/// Read the rows of a table from PostgreSQL in the wire form (timestamps in UTC microseconds,
/// numeric as text, bytea as `\x…`, vectors as arrays; [`wire_row`] reads them), for the
/// PostgreSQL-first modes' reads, tests, shadow reads and verify.
pub fn row_to_wire_sql(table: &Table) -> String {
    format!("SELECT {} FROM public.{}", wire_columns(table), table.name)
}

/// The columns of a row of `table`, each as the text of its wire form, over its bare column names
/// (usable in a SELECT list or a RETURNING clause); [`wire_row`] makes the row of them. Each
/// column travels as text rather than the row as one `jsonb_build_object`: building and printing
/// that JSON document cost PostgreSQL ~6 µs per row, and parsing it the client as much again.
/// Made once per registry table: every read and write of the PostgreSQL-first modes names it.
pub fn wire_columns(table: &Table) -> std::borrow::Cow<'static, str> {
    static COLUMNS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    match per_registry_table(&COLUMNS, table, build_wire_columns) {
        Some(e) => std::borrow::Cow::Borrowed(e.as_str()),
        None => std::borrow::Cow::Owned(build_wire_columns(table)),
    }
}

/// `build(table)`, made once per registry table and kept in `cache`; `None` for a table that is
/// not one of the registry's (the caller builds it itself).
pub(crate) fn per_registry_table<T>(
    cache: &'static std::sync::OnceLock<Vec<T>>,
    table: &Table,
    build: fn(&Table) -> T,
) -> Option<&'static T> {
    let all = cache.get_or_init(|| schema::TABLES.iter().map(build).collect());
    schema::TABLES.iter().position(|t| std::ptr::eq(t, table)).map(|i| &all[i])
}

fn build_wire_columns(table: &Table) -> String {
    let columns: Vec<String> = table
        .columns
        .iter()
        .map(|c| match c.ty {
            ColType::Timestamptz => {
                format!("to_char({n} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')", n = c.name)
            }
            ColType::Bytea => format!("'\\x' || encode({}, 'hex')", c.name),
            // Text too: a text column a deployment changed to another type (an enum, varchar)
            // still arrives as text.
            ColType::Text
            | ColType::Uuid
            | ColType::Numeric
            | ColType::Int
            | ColType::Jsonb
            | ColType::Vector => {
                format!("{}::text", c.name)
            }
        })
        .collect();
    columns.join(", ")
}

/// A row read with [`wire_columns`], in the wire form: a JSON column parsed, an integer as a
/// number, a vector (pgvector's text) as an array of numbers bit for bit (`-0` stays negative
/// zero), every other value the text PostgreSQL printed; NULL is null.
pub fn wire_row(table: &Table, row: &postgres::Row) -> Result<serde_json::Map<String, serde_json::Value>> {
    let mut out = serde_json::Map::new();
    for (i, c) in table.columns.iter().enumerate() {
        let text: Option<&str> = row.try_get(i).map_err(|e| {
            Error::Internal(format!("PostgreSQL returned no wire text for {}.{}: {e}", table.name, c.name))
        })?;
        out.insert(c.name.to_string(), wire_value(table, c, text)?);
    }
    Ok(out)
}

fn wire_value(table: &Table, c: &schema::Column, text: Option<&str>) -> Result<serde_json::Value> {
    use serde_json::Value;
    let Some(text) = text else { return Ok(Value::Null) };
    let bad = |e: &dyn std::fmt::Display| {
        Error::Internal(format!("PostgreSQL returned {}.{} as {text:?}: {e}", table.name, c.name))
    };
    Ok(match c.ty {
        ColType::Jsonb => serde_json::from_str(text).map_err(|e| bad(&e))?,
        ColType::Int => Value::from(text.parse::<i64>().map_err(|e| bad(&e))?),
        ColType::Vector => schema::vector_from_pg_text(text)?,
        ColType::Text | ColType::Uuid | ColType::Timestamptz | ColType::Numeric | ColType::Bytea => {
            Value::String(text.to_string())
        }
    })
}

/// The wire text's size of a row read with [`wire_columns`] (what a list counts against
/// `store::MAX_LIST_BYTES`).
fn wire_len(row: &postgres::Row) -> usize {
    (0..row.len()).map(|i| row.try_get::<_, Option<&str>>(i).ok().flatten().map_or(0, str::len)).sum()
}

/// All rows of a table from PostgreSQL in the wire form, keyed by row key.
pub fn all_rows(client: &mut postgres::Client, table: &Table) -> Result<HashMap<String, serde_json::Value>> {
    let mut out = HashMap::new();
    for row in client.query(&row_to_wire_sql(table), &[])? {
        let v = wire_row(table, &row)?;
        let key = v.get(table.key).and_then(|k| k.as_str()).unwrap_or_default().to_string();
        out.insert(key, serde_json::Value::Object(v));
    }
    Ok(out)
}

/// A parameter placeholder for a wire value of `column`: every value travels as text and is cast
/// by PostgreSQL, so the comparison uses the column's own type (and its indexes).
pub(crate) fn typed_placeholder(column: &crate::schema::Column, n: usize) -> String {
    match column.ty {
        ColType::Uuid => format!("${n}::text::uuid"),
        ColType::Text => format!("${n}::text"),
        ColType::Jsonb => format!("${n}::text::jsonb"),
        ColType::Timestamptz => format!("${n}::text::timestamptz"),
        ColType::Numeric => format!("${n}::text::numeric"),
        ColType::Int => format!("${n}::text::int4"),
        ColType::Bytea => format!("decode(substr(${n}::text, 3), 'hex')"),
        ColType::Vector => format!("${n}::text::vector"),
    }
}

/// The text a wire value is sent as (see [`typed_placeholder`]).
fn wire_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `filter` as PostgreSQL's SQL after `WHERE` for `table`, with the texts it binds: each value
/// travels as text and is cast to its column's type (`typed_placeholder`).
pub(crate) fn filter_sql(table: &Table, filter: &schema::Filter) -> Result<(String, Vec<String>)> {
    filter_sql_after(table, filter, 0)
}

/// [`filter_sql`] for a statement that binds `taken` parameters of its own before the filter's
/// (its placeholders start at `$taken+1`).
pub(crate) fn filter_sql_after(
    table: &Table,
    filter: &schema::Filter,
    taken: usize,
) -> Result<(String, Vec<String>)> {
    let mut params = Vec::new();
    let sql = filter.render(table, |column, value| {
        params.push(wire_text(value));
        Ok(typed_placeholder(column, taken + params.len()))
    })?;
    Ok((sql, params))
}

/// Rows of `table` matching `filter`, in the wire form (bounded like every list, see
/// [`wire_rows_within`]), on a pooled connection, the statement prepared once per connection
/// (one round trip per read instead of two).
pub(crate) fn select_filtered_prepared(
    client: &mut crate::store::pg_pool::PgConn,
    table: &Table,
    filter: &schema::Filter,
) -> Result<Vec<serde_json::Map<String, serde_json::Value>>> {
    select_filtered_locking(client, table, filter, "", Error::from)
}

/// [`select_filtered_prepared`] with each row locked until the transaction ends (`FOR NO KEY
/// UPDATE`): the rows a write reads to decide what it changes
/// (`store::pg_primary::PgWrite::query_rows`). PostgreSQL's errors become `on_error`'s.
pub(crate) fn select_filtered_for_update(
    client: &mut crate::store::pg_pool::PgConn,
    table: &Table,
    filter: &schema::Filter,
    on_error: fn(postgres::Error) -> Error,
) -> Result<Vec<serde_json::Map<String, serde_json::Value>>> {
    select_filtered_locking(client, table, filter, " FOR NO KEY UPDATE", on_error)
}

/// The statement of both: `locking` is appended after the filter (its ORDER BY and LIMIT).
fn select_filtered_locking(
    client: &mut crate::store::pg_pool::PgConn,
    table: &Table,
    filter: &schema::Filter,
    locking: &str,
    on_error: fn(postgres::Error) -> Error,
) -> Result<Vec<serde_json::Map<String, serde_json::Value>>> {
    let (condition, params) = filter_sql(table, filter)?;
    let sql = format!("{} WHERE {condition}{locking}", row_to_wire_sql(table));
    wire_rows_prepared(client, table, &sql, &params, on_error)
}

/// [`wire_rows_within`] with `sql` prepared once per pooled connection (`PgConn::prepared`).
fn wire_rows_prepared(
    client: &mut crate::store::pg_pool::PgConn,
    table: &Table,
    sql: &str,
    params: &[String],
    on_error: fn(postgres::Error) -> Error,
) -> Result<Vec<serde_json::Map<String, serde_json::Value>>> {
    let statement = client.prepared(sql).map_err(on_error)?;
    wire_rows_within(
        &mut **client,
        table,
        &statement,
        params.iter().map(|p| p as &(dyn postgres::types::ToSql + Sync)),
        on_error,
    )
}

/// Rows of `table` in the wire form where each `(column, value)` is equal (null: IS NULL),
/// ordered by `order_by` (then the key), paged. Column names come from the registry only.
pub fn select_rows(
    client: &mut impl postgres::GenericClient,
    table: &Table,
    filters: &[(&'static str, serde_json::Value)],
    order_by: &[&'static str],
    desc: bool,
    limit: i64,
    offset: i64,
) -> Result<Vec<serde_json::Map<String, serde_json::Value>>> {
    let (sql, params) = select_rows_sql(table, filters, order_by, desc, limit, offset)?;
    wire_rows_within(
        client,
        table,
        sql.as_str(),
        params.iter().map(|p| p as &(dyn postgres::types::ToSql + Sync)),
        Error::from,
    )
}

/// [`select_rows`] on a pooled connection, its statement prepared once per connection: a read
/// is then one round trip (bind and execute) instead of two (parse, then bind and execute).
pub(crate) fn select_rows_prepared(
    client: &mut crate::store::pg_pool::PgConn,
    table: &Table,
    filters: &[(&'static str, serde_json::Value)],
    order_by: &[&'static str],
    desc: bool,
    limit: i64,
    offset: i64,
) -> Result<Vec<serde_json::Map<String, serde_json::Value>>> {
    let (sql, params) = select_rows_sql(table, filters, order_by, desc, limit, offset)?;
    wire_rows_prepared(client, table, &sql, &params, Error::from)
}

/// The statement of [`select_rows`] and its parameters (values as text, cast in the statement).
fn select_rows_sql(
    table: &Table,
    filters: &[(&'static str, serde_json::Value)],
    order_by: &[&'static str],
    desc: bool,
    limit: i64,
    offset: i64,
) -> Result<(String, Vec<String>)> {
    let mut clauses = Vec::new();
    let mut params: Vec<String> = Vec::new();
    for (name, value) in filters {
        let column = table.column(name).ok_or_else(|| Error::Internal(format!("no column {name}")))?;
        if value.is_null() {
            clauses.push(format!("{name} IS NULL"));
        } else {
            params.push(wire_text(value));
            clauses.push(format!("{name} = {}", typed_placeholder(column, params.len())));
        }
    }
    let sql = format!(
        "{} WHERE {} ORDER BY {} LIMIT {limit} OFFSET {offset}",
        row_to_wire_sql(table),
        if clauses.is_empty() { "true".to_string() } else { clauses.join(" AND ") },
        table.order_clause(order_by, desc)
    );
    Ok((sql, params))
}

/// Run `sql` (a row's [`wire_columns`]) and read its rows, streaming: reading stops with
/// `store::list_too_large` once the rows' text passes `store::MAX_LIST_BYTES` (the first row is
/// always read), so a list never holds more than that in the caller's process. PostgreSQL's
/// errors become `on_error`'s.
pub(crate) fn wire_rows_within<'p, S: postgres::ToStatement + ?Sized>(
    client: &mut impl postgres::GenericClient,
    table: &Table,
    sql: &S,
    params: impl ExactSizeIterator<Item = &'p (dyn postgres::types::ToSql + Sync)>,
    on_error: fn(postgres::Error) -> Error,
) -> Result<Vec<serde_json::Map<String, serde_json::Value>>> {
    use postgres::fallible_iterator::FallibleIterator;
    let mut rows = client.query_raw(sql, params).map_err(on_error)?;
    let mut out = Vec::new();
    let mut bytes = 0usize;
    while let Some(row) = rows.next().map_err(on_error)? {
        bytes += wire_len(&row);
        if bytes > crate::store::MAX_LIST_BYTES && !out.is_empty() {
            return Err(crate::store::list_too_large(out.len()));
        }
        out.push(wire_row(table, &row)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Filter;
    use serde_json::json;

    /// What replaced `translate_where`: each value is a text parameter cast to its column's type,
    /// a null is `IS NULL`.
    #[test]
    fn filters_render_with_typed_placeholders() {
        let t = |name| schema::table(name).unwrap();
        let f =
            Filter::new().eq("owner_id", "0190a0a0-0000-7000-8000-000000000001").eq("provider", "p").limit(1);
        assert_eq!(
            filter_sql(t("api_keys"), &f).unwrap(),
            (
                "owner_id = $1::text::uuid AND provider = $2::text LIMIT 1 OFFSET 0".to_string(),
                vec!["0190a0a0-0000-7000-8000-000000000001".to_string(), "p".to_string()]
            )
        );
        let f =
            Filter::new().eq("job_id", serde_json::Value::Null).eq("version", json!(3)).descending("version");
        assert_eq!(
            filter_sql(t("generated_text"), &f).unwrap(),
            (
                "job_id IS NULL AND version = $1::text::int4 ORDER BY version DESC".to_string(),
                vec!["3".to_string()]
            )
        );
        let f = Filter::new().at_most("expires_at", "2026-01-02T03:04:05.000000Z");
        assert_eq!(filter_sql(t("wordstat_cache"), &f).unwrap().0, "expires_at <= $1::text::timestamptz");
    }
}
