//! Moving the write mode between the migration phases without losing a write.
//!
//! Runs inside the flag change's SQLite transaction, under the file's write lock (so no write
//! goes to SQLite in the old mode), and moves PostgreSQL's write fence (`store::fence`, so no
//! write goes to PostgreSQL first in the old mode: the fence waits for those in flight).
//!
//! - SQLite first (`sqlite`, `dual`) → PostgreSQL first (`postgres_primary`, `postgres`,
//!   `read_only`): the change capture must exist (the slot is made if missing); what is still in
//!   SQLite's outbox is applied to PostgreSQL now (reads and read-check-write operations move to
//!   PostgreSQL, so it must hold everything); the capture is drained (foreign changes counted),
//!   the fence moved, and from there on SQLite applies PostgreSQL's changes (era `postgres_first`).
//! - Between PostgreSQL-first modes: the fence moves; SQLite follows in the background
//!   (`postgres_primary`, `read_only`) or is frozen with the capture position kept (`postgres`).
//! - PostgreSQL first → SQLite first (a rollback): the fence moves (no PostgreSQL-first write
//!   commits after it), then SQLite takes every captured change committed before — the
//!   monolith's and every other writer's — in this transaction, before it takes writes again.
//!   When that cannot be done (PostgreSQL unreachable, the slot missing or lost, changes SQLite
//!   refuses) the switch is refused, unless forced: then SQLite's position is remembered as the
//!   cut, and what PostgreSQL took after it shows as foreign changes once PostgreSQL is back.

use crate::capture::{self, follow, CaptureState, Era};
use crate::error::{Error, Result};
use crate::flags::WriteMode;
use crate::pg_connect::PgConfig;
use crate::store::outbox::Outbox;
use crate::store::postgres::{apply_batch, is_permanent};
use rusqlite::Connection;

/// Do what moving from `from` to `to` needs before the flag is stored (in the same SQLite
/// transaction, `conn`). Returns notes for the audit event and the log.
pub(crate) fn prepare_write_mode(
    conn: &Connection,
    pg: Option<&PgConfig>,
    from: WriteMode,
    to: WriteMode,
    force: bool,
) -> Result<Vec<String>> {
    let mut notes = Vec::new();
    if from == WriteMode::Sqlite && to != WriteMode::Sqlite {
        if let Some(since) = crate::flags::capture_overflow(conn)? {
            if !force {
                return Err(Error::conflict(format!(
                    "refusing write_mode: in write_mode sqlite the outbox reached its capture limit at {since} and \
                     later changes were not captured, so replaying it cannot make PostgreSQL whole; switch with \
                     --force, then run `dualwrite verify` and `dualwrite repair`"
                )));
            }
            crate::flags::clear_capture_overflow(conn)?;
            notes.push(format!(
                "changes since {since} were not captured (capture limit): run `dualwrite verify` and `dualwrite repair`"
            ));
        }
    }
    notes.extend(write_mode_steps(conn, pg, from, to, force)?);
    Ok(notes)
}

fn write_mode_steps(
    conn: &Connection,
    pg: Option<&PgConfig>,
    from: WriteMode,
    to: WriteMode,
    force: bool,
) -> Result<Vec<String>> {
    match (from.postgres_first(), to.postgres_first()) {
        (false, false) => Ok(Vec::new()),
        (false, true) => {
            let pg = pg.ok_or_else(|| Error::Config("no PostgreSQL is configured".into()))?;
            let mut client = pg.connect().map_err(|e| {
                Error::Unavailable(format!("PostgreSQL cannot become the primary store: {e}"))
            })?;
            become_primary(conn, pg, &mut client, to)
        }
        (true, true) => {
            let pg = pg.ok_or_else(|| Error::Config("no PostgreSQL is configured".into()))?;
            let mut client = pg.connect().map_err(|e| {
                Error::Unavailable(format!("the write mode cannot change in PostgreSQL: {e}"))
            })?;
            crate::store::fence::set(&mut client, to)?;
            Ok(match to {
                WriteMode::Postgres => {
                    vec!["SQLite is frozen; the capture keeps its position for a rollback".into()]
                }
                _ if from == WriteMode::Postgres => {
                    vec!["SQLite follows PostgreSQL again from the capture position it kept".into()]
                }
                _ => Vec::new(),
            })
        }
        (true, false) => hand_back_to_sqlite(conn, pg, from, to, force),
    }
}

fn become_primary(
    conn: &Connection,
    pg: &PgConfig,
    client: &mut postgres::Client,
    to: WriteMode,
) -> Result<Vec<String>> {
    let mut notes = Vec::new();
    // 0. Without the capture SQLite could not follow, and a rollback would lose the changes
    //    of every writer but the bridge.
    if capture::slot::ensure(client).map_err(|e| {
        Error::conflict(format!("PostgreSQL cannot become the primary store without change capture: {e}"))
    })? {
        notes.push(format!("change capture slot {} created", capture::slot::SLOT));
    }
    // The drain below is SQLite's data: mark it as the bridge's own, not a foreign write.
    capture::slot::tag_session(client)?;
    // 1. PostgreSQL must hold every change before it serves reads and read-check-write
    //    operations. The replicator may be applying the same records: both are revision-guarded.
    let mut drained = 0;
    loop {
        let batch = Outbox::pending(conn, 2_000)?;
        let Some(last) = batch.last().map(|r| r.seq) else { break };
        apply_batch(client, &batch, true).map_err(|e| {
            if is_permanent(&e) {
                Error::conflict(format!(
                    "PostgreSQL refuses a pending change ({}); let the replicator move it to the dead letters \
                     (`dualwrite drain`) and deal with it before PostgreSQL becomes the primary",
                    crate::error::Error::Postgres(e)
                ))
            } else {
                Error::Unavailable(format!("cannot apply the pending changes to PostgreSQL: {e}"))
            }
        })?;
        Outbox::remove_applied_upto(conn, last)?;
        drained += batch.len();
    }
    if drained > 0 {
        notes.push(format!("{drained} pending change(s) applied to PostgreSQL first"));
    }
    // 2. Foreign changes up to now were made while SQLite was the primary: counted, not applied.
    let taken = follow::drain(conn, pg)?;
    if taken.foreign > 0 {
        notes.push(format!(
            "{} change(s) made in PostgreSQL by others while SQLite was the primary are not in SQLite (see \
             `dualwrite status`)",
            taken.foreign
        ));
    }
    // 3. From here on PostgreSQL takes writes first and SQLite applies what the capture brings.
    crate::store::fence::set(client, to)?;
    CaptureState::set_era(conn, Era::PostgresFirst)?;
    Ok(notes)
}

fn hand_back_to_sqlite(
    conn: &Connection,
    pg: Option<&PgConfig>,
    from: WriteMode,
    to: WriteMode,
    force: bool,
) -> Result<Vec<String>> {
    let caught_up = pg
        .ok_or_else(|| Error::Config("no PostgreSQL is configured".into()))
        .and_then(|pg| catch_up_for_rollback(conn, pg, from, to));
    match caught_up {
        Ok(notes) => Ok(notes),
        Err(e) if force => {
            CaptureState::cut(conn)?;
            let note = format!(
                "FORCED without catching up ({e}); what PostgreSQL took after SQLite's capture position is not in \
                 SQLite and shows as foreign changes in `dualwrite status` once the capture runs again: run \
                 `dualwrite verify`"
            );
            tracing::error!("{note}");
            Ok(vec![note])
        }
        Err(e) => Err(Error::conflict(format!(
            "refusing write_mode {to}: SQLite cannot take writes again without losing changes only PostgreSQL holds: \
             {e}. Retry when that is fixed, or use --force to switch anyway (then those changes are not in SQLite: \
             run `dualwrite verify`)"
        ))),
    }
}

/// Close PostgreSQL to PostgreSQL-first writes, then take every captured change into SQLite.
fn catch_up_for_rollback(
    conn: &Connection,
    pg: &PgConfig,
    from: WriteMode,
    to: WriteMode,
) -> Result<Vec<String>> {
    let mut client =
        pg.connect().map_err(|e| Error::Unavailable(format!("PostgreSQL is unreachable ({e})")))?;
    match capture::slot::state(&mut client)? {
        None => {
            return Err(Error::Unavailable(format!(
                "the change capture slot {} does not exist, so the changes PostgreSQL took cannot be found",
                capture::slot::SLOT
            )))
        }
        Some(s) if s.wal_status == "lost" => return Err(capture::slot::lost_error()),
        Some(_) => {}
    }
    // No PostgreSQL-first write commits after this (the fence waits for those in flight).
    crate::store::fence::set(&mut client, to)?;
    let dead_before = CaptureState::load(conn)?.dead_letters;
    let taken = follow::drain(conn, pg).and_then(|taken| {
        let dead = CaptureState::load(conn)?.dead_letters;
        if dead > 0 {
            return Err(Error::conflict(format!(
                "SQLite refused {dead} captured change(s) ({} in this catch-up): `dualwrite capture dead-letters`",
                dead - dead_before
            )));
        }
        Ok(taken)
    });
    let taken = match taken {
        Ok(t) => t,
        Err(e) => {
            // Nothing changed in SQLite (this transaction rolls back): PostgreSQL stays the primary.
            if let Err(undo) = crate::store::fence::set(&mut client, from) {
                tracing::error!(error = %undo, "cannot put the write fence back; the next write repairs it");
            }
            return Err(e);
        }
    };
    CaptureState::set_era(conn, Era::SqliteFirst)?;
    Ok(vec![format!(
        "SQLite caught up with {} change(s) in {} PostgreSQL transaction(s), every writer's",
        taken.applied, taken.transactions
    )])
}
