//! Repair: send again, through the outbox, the rows a verify run found different, then verify
//! those keys again. It writes through the bridge, so it sits above both the bridge and verify
//! (verify itself only reads the stores).

use crate::bridge::Bridge;
use crate::error::Result;
use crate::verify::{verify_keys, TableResult, VerifyOptions, VerifyReport};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What a repair did.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RepairReport {
    /// Rows re-enqueued through the outbox (their current SQLite state, or their deletion).
    pub requeued: u64,
    /// The same keys verified again after the outbox was flushed.
    pub tables: Vec<TableResult>,
    pub ok: bool,
    /// The verify report listed fewer keys than it counted: run verify (and repair) again.
    pub incomplete: bool,
}

impl Bridge {
    /// Re-enqueue SQLite's current state of each row (or its deletion, when SQLite no longer has
    /// it) through the normal outbox path, with new revisions, 500 rows per transaction.
    pub fn requeue_rows(&self, table: &str, keys: &[String]) -> Result<u64> {
        let t = crate::schema::require_table(table)?;
        let mut n = 0;
        for batch in keys.chunks(500) {
            self.write(|tx| {
                for k in batch {
                    tx.requeue(t, k)?;
                }
                Ok(())
            })?;
            n += batch.len() as u64;
        }
        Ok(n)
    }
}

/// Repair what `report` found different: re-enqueue those rows, wait for the outbox to be
/// applied (`flush_timeout`; the bridge must replicate, or another process must), then verify
/// those keys again.
pub fn repair(bridge: &Bridge, report: &VerifyReport, flush_timeout: Duration) -> Result<RepairReport> {
    let mut requeued = 0;
    let mut incomplete = false;
    for t in &report.tables {
        let keys: Vec<String> = t.keys_to_repair().map(str::to_string).collect();
        incomplete |= t.truncated;
        if !keys.is_empty() {
            requeued += bridge.requeue_rows(&t.table, &keys)?;
        }
    }
    bridge.flush(flush_timeout)?;
    let options = VerifyOptions { record: false, ..VerifyOptions::default() };
    let mut tables = Vec::new();
    for t in &report.tables {
        let keys: Vec<String> = t.keys_to_repair().map(str::to_string).collect();
        if !keys.is_empty() {
            tables.push(verify_keys(bridge.config(), &t.table, &keys, &options)?);
        }
    }
    let ok = tables.iter().all(TableResult::ok);
    Ok(RepairReport { requeued, tables, ok, incomplete })
}
