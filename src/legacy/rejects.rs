//! Rejects, not aborts: where the backfill puts a row it cannot copy, so the rest of the table
//! goes on and `backfill --retry-rejects` can take exactly those rows again after the data is
//! fixed.
//!
//! Two places, written together:
//! - **`dualwrite.backfill_rejects`** in PostgreSQL (beside `backfill_checkpoints`): one row per
//!   (table, key) — the stage (`convert`: [`super::convert_row`] refused it; `postgres`: PostgreSQL
//!   refused it), the problems (column, value with secrets redacted, reason), attempts, first and
//!   last seen, and `resolved_at` once a retry copied it (or found it gone). This is the state the
//!   retry reads. It is written in the caller's transaction, so a chunk, its checkpoint and its
//!   rejects commit together. The backfill only ever reads SQLite; so does this.
//! - **a reject file** (JSON lines, appended): one line per rejected row and attempt, for people
//!   and tools (`jq`), written after the commit so it never names a row the table does not have.
//!
//! Two ways to call it: from any connection, [`RejectStore::insert`] in the chunk's transaction and
//! [`RejectStore::log`] once it committed (the backfill's workers); or, on one connection,
//! [`RejectStore::record`] then [`RejectStore::flush`] after the commit ([`RejectStore::discard`]
//! after a rollback).
//!
//! The table comes with PostgreSQL migration 6 (`migrations/postgres/0006_backfill_rejects.sql`);
//! [`RejectStore::open`] says to run `dualwrite migrate` when it is missing.

use super::convert::Reject;
use crate::error::{Error, Result};
use crate::schema::Table;
use postgres::GenericClient;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Why the row was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectStage {
    /// A value could not be converted to the target type ([`super::convert_row`]).
    Convert,
    /// PostgreSQL refused the row (a foreign key, a unique value, a CHECK).
    Postgres,
}

impl RejectStage {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectStage::Convert => "convert",
            RejectStage::Postgres => "postgres",
        }
    }
}

/// One rejected row and all its problems.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedRow {
    pub table: String,
    pub key: String,
    pub stage: RejectStage,
    pub problems: Vec<Reject>,
}

impl RejectedRow {
    /// The problems [`super::convert_row`] returned for one row.
    pub fn conversion(table: &Table, problems: Vec<Reject>) -> RejectedRow {
        let key = problems.first().map(|r| r.key.clone()).unwrap_or_default();
        RejectedRow { table: table.name.into(), key, stage: RejectStage::Convert, problems }
    }

    /// PostgreSQL refused the row with `key` (applied on its own, so the error is this row's).
    /// The error's detail is kept unless the table has a secret column: a CHECK's detail
    /// ("Failing row contains …") would print every value of the row.
    pub fn postgres(table: &Table, key: &str, err: &postgres::Error) -> RejectedRow {
        let reason = match err.as_db_error() {
            Some(db) => {
                let mut r = format!("PostgreSQL refused it: {} ({})", db.message(), db.code().code());
                if let Some(c) = db.constraint() {
                    r.push_str(&format!("; constraint {c}"));
                }
                if let Some(d) = db.detail() {
                    if table.columns.iter().any(|c| c.secret) {
                        r.push_str("; detail withheld (the table holds a secret column)");
                    } else {
                        r.push_str(&format!("; {d}"));
                    }
                }
                r
            }
            None => format!("PostgreSQL refused it: {err}"),
        };
        let column = err.as_db_error().and_then(|d| d.column()).map(str::to_string);
        RejectedRow {
            table: table.name.into(),
            key: key.into(),
            stage: RejectStage::Postgres,
            problems: vec![Reject { table: table.name.into(), key: key.into(), column, value: None, reason }],
        }
    }
}

/// A pending reject as stored.
#[derive(Clone, Debug, Serialize)]
pub struct StoredReject {
    pub table: String,
    pub key: String,
    pub stage: String,
    pub problems: Vec<Reject>,
    pub attempts: i32,
    pub resolved: bool,
}

/// The reject table and file of one backfill run.
pub struct RejectStore {
    file: Option<PathBuf>,
    /// Rows recorded in the caller's open transaction.
    buffered: Vec<RejectedRow>,
    counts: BTreeMap<String, u64>,
}

impl RejectStore {
    /// Check the reject table exists (migration 6) and the reject file can be appended to.
    pub fn open(client: &mut impl GenericClient, file: Option<&Path>) -> Result<RejectStore> {
        if !table_exists(client)? {
            return Err(Error::Migration(
                "dualwrite.backfill_rejects does not exist: the PostgreSQL schema needs migration 6 \
                 (backfill_rejects); run `dualwrite migrate`"
                    .into(),
            ));
        }
        if let Some(p) = file {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| Error::Config(format!("reject file {}: {e}", p.display())))?;
        }
        Ok(RejectStore { file: file.map(Path::to_path_buf), buffered: Vec::new(), counts: BTreeMap::new() })
    }

    /// Insert (or, for a row rejected before, update: attempts + 1, resolved no more) one rejected
    /// row in the caller's transaction. No `self`: any worker connection can call it.
    pub fn insert(client: &mut impl GenericClient, row: &RejectedRow) -> Result<()> {
        let problems = serde_json::to_value(&row.problems).map_err(|e| Error::Internal(e.to_string()))?;
        client.execute(
            "INSERT INTO dualwrite.backfill_rejects (table_name, row_key, stage, problems) VALUES ($1, $2, $3, $4)
             ON CONFLICT (table_name, row_key) DO UPDATE SET stage = EXCLUDED.stage, problems = EXCLUDED.problems,
                 attempts = backfill_rejects.attempts + 1, last_seen_at = now(), resolved_at = NULL",
            &[&row.table, &row.key, &row.stage.as_str(), &problems],
        )?;
        Ok(())
    }

    /// After the transaction that [`RejectStore::insert`]ed `rows` committed: append them to the
    /// reject file (one JSON line each) and count them.
    pub fn log(&mut self, rows: &[RejectedRow]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        if let Some(p) = &self.file {
            let at = crate::schema::now_timestamp();
            let mut text = String::new();
            for row in rows {
                let line = serde_json::json!({
                    "at": at,
                    "table": row.table,
                    "key": row.key,
                    "stage": row.stage,
                    "problems": row.problems,
                });
                text.push_str(&line.to_string());
                text.push('\n');
            }
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(p)?;
            f.write_all(text.as_bytes())?;
            f.sync_data()?;
        }
        for row in rows {
            *self.counts.entry(row.table.clone()).or_default() += 1;
        }
        Ok(())
    }

    /// [`RejectStore::insert`] in the caller's transaction, the row kept for [`RejectStore::flush`].
    pub fn record(&mut self, client: &mut impl GenericClient, row: &RejectedRow) -> Result<()> {
        Self::insert(client, row)?;
        self.buffered.push(row.clone());
        Ok(())
    }

    /// After the caller's commit: [`RejectStore::log`] the recorded rows.
    pub fn flush(&mut self) -> Result<()> {
        let rows = std::mem::take(&mut self.buffered);
        self.log(&rows)
    }

    /// After the caller's rollback: forget the recorded rows.
    pub fn discard(&mut self) {
        self.buffered.clear();
    }

    /// Rows recorded (and flushed) by this store, per table: the backfill summary's reject counts.
    pub fn counts(&self) -> &BTreeMap<String, u64> {
        &self.counts
    }

    /// Mark rows as resolved (a retry copied them, or they are no longer in SQLite).
    pub fn resolve(client: &mut impl GenericClient, table: &str, keys: &[String]) -> Result<u64> {
        Ok(client.execute(
            "UPDATE dualwrite.backfill_rejects SET resolved_at = now()
             WHERE table_name = $1 AND row_key = ANY($2) AND resolved_at IS NULL",
            &[&table, &keys],
        )?)
    }

    /// The keys of `table` still rejected, in key order: what `--retry-rejects` reads again.
    pub fn pending_keys(client: &mut impl GenericClient, table: &str) -> Result<Vec<String>> {
        if !table_exists(client)? {
            return Ok(vec![]);
        }
        Ok(client
            .query(
                "SELECT row_key FROM dualwrite.backfill_rejects WHERE table_name = $1 AND resolved_at IS NULL
                 ORDER BY row_key COLLATE \"C\"",
                &[&table],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    /// Every stored reject (pending first), for reports.
    pub fn list(client: &mut impl GenericClient) -> Result<Vec<StoredReject>> {
        if !table_exists(client)? {
            return Ok(vec![]);
        }
        let rows = client.query(
            "SELECT table_name, row_key, stage, problems, attempts, resolved_at IS NOT NULL
             FROM dualwrite.backfill_rejects ORDER BY resolved_at IS NOT NULL, table_name, row_key COLLATE \"C\"",
            &[],
        )?;
        rows.iter()
            .map(|r| {
                Ok(StoredReject {
                    table: r.get(0),
                    key: r.get(1),
                    stage: r.get(2),
                    problems: serde_json::from_value(r.get(3)).map_err(|e| Error::Internal(e.to_string()))?,
                    attempts: r.get(4),
                    resolved: r.get(5),
                })
            })
            .collect()
    }

    /// Pending rejects per table (all runs).
    pub fn pending_counts(client: &mut impl GenericClient) -> Result<BTreeMap<String, u64>> {
        if !table_exists(client)? {
            return Ok(BTreeMap::new());
        }
        Ok(client
            .query(
                "SELECT table_name, count(*) FROM dualwrite.backfill_rejects WHERE resolved_at IS NULL GROUP BY 1",
                &[],
            )?
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1) as u64))
            .collect())
    }
}

fn table_exists(client: &mut impl GenericClient) -> Result<bool> {
    Ok(client.query_one("SELECT to_regclass('dualwrite.backfill_rejects') IS NOT NULL", &[])?.get(0))
}
