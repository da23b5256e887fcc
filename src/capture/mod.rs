//! Change capture: SQLite follows every change PostgreSQL commits, whoever made it — the bridge
//! in the PostgreSQL-first write modes, the new `api`/`worker` services, psql, a data-fix script —
//! in commit order, through PostgreSQL's logical decoding (a replication slot with the built-in
//! `pgoutput` plugin, read with the SQL slot functions).
//!
//! - `slot`: the slot, the publication it decodes, the replication origins that mark the bridge's
//!   own sessions (their changes came from SQLite), and what `status`/`doctor` show of them.
//! - `pgoutput`: the message decoder; `decode`: messages → transactions of wire rows.
//! - `follow`: a pass: peek, take into SQLite (apply, or count as foreign), move the mark,
//!   confirm to PostgreSQL after SQLite's commit.
//!
//! Who runs it: the replicator thread of the process holding the replicator lease (one consumer
//! per slot), every pass; a phase switch drains it synchronously under the file's write lock.

pub mod decode;
pub mod follow;
pub mod pgoutput;
pub mod resync;
pub mod slot;
pub mod stream;

pub use follow::{CaptureState, Era, ForeignChange};
pub use slot::SlotState;

/// Whether a replication origin name marks one of the bridge's own sessions.
pub fn is_our_origin(name: &str) -> bool {
    name.starts_with(slot::ORIGIN_PREFIX)
}

/// The capture in `status`: the file's bookkeeping (shared by every process) and the slot.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CaptureStatus {
    /// `postgres_first`: SQLite applies PostgreSQL's changes; `sqlite_first`: it only watches
    /// for foreign ones.
    pub era: String,
    /// The end of the newest PostgreSQL transaction SQLite has taken into account.
    pub applied_lsn: String,
    pub applied_total: i64,
    /// Changes made in PostgreSQL by others than the bridge while SQLite was the primary.
    pub foreign_total: i64,
    /// The newest of them, newest first.
    pub recent_foreign: Vec<ForeignChange>,
    /// Commit time of the newest PostgreSQL transaction taken into account.
    pub last_commit_at: Option<String>,
    pub last_applied_at: Option<String>,
    pub dead_letters: i64,
    pub retries: i64,
    pub last_error: Option<String>,
    /// A forced rollback cut the capture here: PostgreSQL's later changes are not in SQLite.
    pub cut_at: Option<String>,
    /// PostgreSQL's `wal_level` (`None`: PostgreSQL could not be asked).
    pub wal_level: Option<String>,
    /// The slot (`None`: none, or PostgreSQL could not be asked: see `problem`).
    pub slot: Option<SlotState>,
    /// What is wrong, loudly: a lost or missing slot, an unreachable PostgreSQL.
    pub problem: Option<String>,
}

impl CaptureStatus {
    pub fn new(
        state: CaptureState,
        recent_foreign: Vec<ForeignChange>,
        probe: crate::Result<(String, Option<SlotState>)>,
    ) -> CaptureStatus {
        let (wal_level, slot, mut problem) = match probe {
            Ok((level, slot)) => (Some(level), slot, None),
            Err(e) => (None, None, Some(format!("PostgreSQL cannot be asked about the capture: {e}"))),
        };
        if let Some(s) = &slot {
            if s.wal_status == "lost" {
                problem = Some(slot::lost_error().to_string());
            }
        } else if problem.is_none() {
            problem = Some(if state.era == Era::PostgresFirst {
                format!(
                    "no capture slot ({}) although PostgreSQL is the primary: SQLite does not follow it",
                    slot::SLOT
                )
            } else if wal_level.as_deref() == Some("logical") {
                "no capture slot yet: the replicator makes it".to_string()
            } else {
                "change capture is off: PostgreSQL's wal_level is not logical (foreign writes are not seen, and the \
                 PostgreSQL-first write modes are refused)"
                    .to_string()
            });
        }
        CaptureStatus {
            era: match state.era {
                Era::SqliteFirst => "sqlite_first".into(),
                Era::PostgresFirst => "postgres_first".into(),
            },
            applied_lsn: pgoutput::lsn_text(state.applied_lsn),
            applied_total: state.applied_total,
            foreign_total: state.foreign_total,
            recent_foreign,
            last_commit_at: state.last_commit_at,
            last_applied_at: state.last_applied_at,
            dead_letters: state.dead_letters,
            retries: state.retries_total,
            last_error: state.last_error,
            cut_at: state.cut_at,
            wal_level,
            slot,
            problem,
        }
    }
}
