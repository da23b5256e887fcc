//! Metrics of the migration in the Prometheus text exposition format (version 0.0.4), and the
//! health verdict of `dualwrite status --check`.
//!
//! What is exposed is the state every process on the SQLite file shares (the outbox, the
//! replication counters, dead letters, flags) and what PostgreSQL records (backfill checkpoints,
//! the last verify run), so any process, the CLI included, reports the same figures. The
//! per-process figures of `Status` (whether this process replicates, its reads) are left out:
//! scraped from the CLI they would describe the CLI, not the monolith.

use crate::bridge::{Bridge, Status};
use crate::flags::{ReadSource, WriteMode};
use std::fmt::Write as _;
use std::time::Duration;

/// What one scrape reads.
#[derive(Debug)]
pub struct Snapshot {
    pub status: Status,
    /// `None` when no PostgreSQL is configured.
    pub postgres: Option<PostgresFigures>,
}

/// What PostgreSQL knows about the migration; `error` when it could not be asked.
#[derive(Debug, Default)]
pub struct PostgresFigures {
    pub error: Option<String>,
    /// Per table: rows copied by the backfill, and whether its copy finished.
    pub backfill: Vec<(String, i64, bool)>,
    pub last_verify: Option<VerifyFigures>,
}

#[derive(Debug)]
pub struct VerifyFigures {
    pub ok: bool,
    pub differences: i64,
    /// Unix time the run finished.
    pub finished_at: f64,
}

/// Read the shared status, and ask PostgreSQL (once, bounded by its connect timeout) for the
/// backfill and verify figures. A PostgreSQL that cannot be asked is a figure too (`up 0`).
pub fn collect(bridge: &Bridge) -> crate::Result<Snapshot> {
    let status = bridge.status()?;
    let postgres = bridge.config().postgres.as_ref().map(|pg| {
        let ask = || -> crate::Result<PostgresFigures> {
            let mut c = pg.connect()?;
            let backfill = if exists(&mut c, "dualwrite.backfill_checkpoints")? {
                c.query(
                    "SELECT table_name, rows_copied, finished FROM dualwrite.backfill_checkpoints ORDER BY 1",
                    &[],
                )?
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect()
            } else {
                Vec::new()
            };
            let last_verify = if exists(&mut c, "dualwrite.verify_runs")? {
                c.query_opt(
                    "SELECT ok, differences, extract(epoch FROM finished_at)::float8
                     FROM dualwrite.verify_runs ORDER BY finished_at DESC, id DESC LIMIT 1",
                    &[],
                )?
                .map(|r| VerifyFigures {
                    ok: r.get(0),
                    differences: r.get(1),
                    finished_at: r.get(2),
                })
            } else {
                None
            };
            Ok(PostgresFigures { error: None, backfill, last_verify })
        };
        ask().unwrap_or_else(|e| PostgresFigures { error: Some(e.to_string()), ..Default::default() })
    });
    Ok(Snapshot { status, postgres })
}

fn exists(c: &mut postgres::Client, relation: &str) -> crate::Result<bool> {
    Ok(c.query_one("SELECT to_regclass($1) IS NOT NULL", &[&relation])?.get(0))
}

/// Every write mode, for the one-hot `dualwrite_write_mode` family. The match makes a new
/// mode a compile error here until it is listed.
const WRITE_MODES: [WriteMode; 5] = [
    WriteMode::Sqlite,
    WriteMode::Dual,
    WriteMode::PostgresPrimary,
    WriteMode::Postgres,
    WriteMode::ReadOnly,
];
const _: fn(WriteMode) = |m| match m {
    WriteMode::Sqlite
    | WriteMode::Dual
    | WriteMode::PostgresPrimary
    | WriteMode::Postgres
    | WriteMode::ReadOnly => {}
};
const READ_SOURCES: [ReadSource; 3] = [ReadSource::Sqlite, ReadSource::Postgres, ReadSource::Shadow];

/// A label value as the exposition format wants it: backslash, quote and newline escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

struct Out(String);
impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let labels = if labels.is_empty() {
            String::new()
        } else {
            let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", label(v))).collect();
            format!("{{{}}}", l.join(","))
        };
        let _ = writeln!(self.0, "{name}{labels} {value}");
    }
    fn one(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

/// The snapshot in the Prometheus text format. `now` is Unix time (the verify run's age).
pub fn render_prometheus(s: &Snapshot, now: f64) -> String {
    let st = &s.status;
    let mut o = Out(String::new());
    o.one(
        "dualwrite_outbox_depth",
        "gauge",
        "Changes committed to SQLite and not yet applied to PostgreSQL.",
        st.outbox_depth as f64,
    );
    o.one(
        "dualwrite_replication_lag_seconds",
        "gauge",
        "Age of the oldest change not yet applied to PostgreSQL (0 when none is pending).",
        st.oldest_pending_ms.unwrap_or(0) as f64 / 1000.0,
    );
    o.one(
        "dualwrite_applied_total",
        "counter",
        "Changes applied to PostgreSQL by every process on this SQLite file.",
        st.applied_total as f64,
    );
    o.one(
        "dualwrite_retries_total",
        "counter",
        "Failed replication attempts (retried) by every process on this SQLite file.",
        st.retries as f64,
    );
    o.one(
        "dualwrite_dead_letters",
        "gauge",
        "Changes PostgreSQL refused for good, waiting for an operator (dualwrite dead-letters).",
        st.dead_letters as f64,
    );
    o.one(
        "dualwrite_last_error",
        "gauge",
        "1 while the replicator's most recent attempt failed (cleared by the next applied batch).",
        if st.last_error.is_some() { 1.0 } else { 0.0 },
    );
    o.one(
        "dualwrite_capture_stopped",
        "gauge",
        "1 when the outbox reached its limit in write_mode sqlite and changes are no longer captured.",
        if st.capture_overflow_since.is_some() { 1.0 } else { 0.0 },
    );
    if let Some(c) = &st.capture {
        o.one(
            "dualwrite_capture_applied_total",
            "counter",
            "PostgreSQL changes the change capture applied to SQLite (while PostgreSQL is the primary).",
            c.applied_total as f64,
        );
        o.one(
            "dualwrite_capture_foreign_writes_total",
            "counter",
            "Changes made in PostgreSQL by others than the bridge while SQLite was the primary.",
            c.foreign_total as f64,
        );
        o.one(
            "dualwrite_capture_dead_letters",
            "gauge",
            "Captured PostgreSQL changes SQLite refused (dualwrite capture dead-letters).",
            c.dead_letters as f64,
        );
        o.one(
            "dualwrite_capture_problem",
            "gauge",
            "1 while the capture has a problem (slot lost or missing, PostgreSQL unreachable): see dualwrite status.",
            if c.problem.is_some() { 1.0 } else { 0.0 },
        );
        if let Some(slot) = &c.slot {
            o.one(
                "dualwrite_capture_retained_wal_bytes",
                "gauge",
                "WAL PostgreSQL keeps for the capture slot.",
                slot.retained_wal_bytes as f64,
            );
            o.one(
                "dualwrite_capture_pending_wal_bytes",
                "gauge",
                "WAL written since the position SQLite confirmed: how far the capture lags.",
                slot.pending_wal_bytes as f64,
            );
        }
    }
    o.family(
        "dualwrite_write_mode",
        "gauge",
        "The write mode in the shared flags (1 for the mode in effect).",
    );
    for m in WRITE_MODES {
        o.sample(
            "dualwrite_write_mode",
            &[("mode", m.as_str())],
            if st.flags.write_mode == m { 1.0 } else { 0.0 },
        );
    }
    o.family(
        "dualwrite_read_source",
        "gauge",
        "The read source in the shared flags (1 for the source in effect).",
    );
    for r in READ_SOURCES {
        o.sample(
            "dualwrite_read_source",
            &[("source", r.as_str())],
            if st.flags.read_source == r { 1.0 } else { 0.0 },
        );
    }
    if !st.flags.read_source_overrides.is_empty() {
        o.family(
            "dualwrite_read_source_override",
            "gauge",
            "Per-table read-source overrides in the shared flags.",
        );
        for (table, r) in &st.flags.read_source_overrides {
            o.sample("dualwrite_read_source_override", &[("table", table), ("source", r.as_str())], 1.0);
        }
    }
    if let Some(pg) = &s.postgres {
        o.one(
            "dualwrite_postgres_up",
            "gauge",
            "1 when PostgreSQL answered this scrape's questions (backfill, verify).",
            if pg.error.is_none() { 1.0 } else { 0.0 },
        );
        if !pg.backfill.is_empty() {
            o.family("dualwrite_backfill_rows_copied", "gauge", "Rows the backfill copied, per table.");
            for (t, rows, _) in &pg.backfill {
                o.sample("dualwrite_backfill_rows_copied", &[("table", t)], *rows as f64);
            }
            o.family("dualwrite_backfill_finished", "gauge", "1 when the backfill of the table finished.");
            for (t, _, done) in &pg.backfill {
                o.sample("dualwrite_backfill_finished", &[("table", t)], if *done { 1.0 } else { 0.0 });
            }
        }
        if let Some(v) = &pg.last_verify {
            o.one(
                "dualwrite_verify_last_ok",
                "gauge",
                "1 when the last verify run found both stores equal.",
                if v.ok { 1.0 } else { 0.0 },
            );
            o.one(
                "dualwrite_verify_last_differences",
                "gauge",
                "Differences the last verify run found.",
                v.differences as f64,
            );
            o.one(
                "dualwrite_verify_last_finished_timestamp_seconds",
                "gauge",
                "Unix time the last verify run finished.",
                v.finished_at,
            );
            o.one(
                "dualwrite_verify_last_age_seconds",
                "gauge",
                "Seconds since the last verify run finished.",
                (now - v.finished_at).max(0.0),
            );
        }
    }
    o.0
}

/// What `status --check` finds wrong: replication lag over `max_lag`, dead letters, a last
/// error, capture stopped. Empty when healthy.
pub fn problems(st: &Status, max_lag: Duration) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(ms) = st.oldest_pending_ms {
        if ms as u128 > max_lag.as_millis() {
            out.push(format!(
                "replication lag {:.3} s is over {} s ({} change(s) pending)",
                ms as f64 / 1000.0,
                max_lag.as_secs_f64(),
                st.outbox_depth
            ));
        }
    }
    if st.dead_letters > 0 {
        out.push(format!("{} dead letter(s): `dualwrite dead-letters`", st.dead_letters));
    }
    if let Some(e) = &st.last_error {
        out.push(format!("last replication error: {e}"));
    }
    if let Some(since) = &st.capture_overflow_since {
        out.push(format!(
            "changes are not captured since {since} (outbox limit reached in write_mode sqlite)"
        ));
    }
    out
}
