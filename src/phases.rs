//! Moving the write mode between the migration phases without losing a write.
//!
//! Runs inside the flag change's SQLite transaction, under the write lock that every write of
//! every process takes (and checks the stored write mode under), so no write happens half in the
//! old phase: writes queue behind the change and run in the new mode.
//!
//! - SQLite first (`sqlite`, `dual`) → PostgreSQL first (`postgres_primary`, `postgres`): what is
//!   still in SQLite's outbox is applied to PostgreSQL now (reads and read-check-write operations
//!   move to PostgreSQL, so it must hold everything), and `dualwrite.revision_seq` is moved past
//!   every revision SQLite handed out.
//! - `postgres` → `postgres_primary`: SQLite catches up from PostgreSQL's outbox before it follows
//!   each write again.
//! - PostgreSQL first → SQLite first (a rollback): SQLite catches up from PostgreSQL's outbox,
//!   then SQLite's outbox numbering is moved past PostgreSQL's revisions. With PostgreSQL
//!   unreachable this cannot be lossless and is refused unless forced.

use crate::config::PgConfig;
use crate::error::{Error, Result};
use crate::flags::WriteMode;
use crate::store::pg_primary::records_after;
use crate::store::postgres::{apply_batch, is_permanent};
use crate::store::sqlite::{Outbox, PgCatchUp};
use rusqlite::Connection;

/// A forced rollback with PostgreSQL unreachable cannot learn the revisions PostgreSQL handed out;
/// SQLite's outbox numbering jumps this far ahead instead, beyond any PostgreSQL-first phase.
pub const FORCED_REVISION_GAP: i64 = 1 << 40;

/// Records copied per round trip while catching SQLite up.
const CATCH_UP_BATCH: i64 = 1_000;

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
                return Err(Error::Conflict(format!(
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
            let mut client = connect(pg).map_err(|e| {
                Error::Unavailable(format!("PostgreSQL cannot become the primary store: {e}"))
            })?;
            become_primary(conn, &mut client)
        }
        (true, true) if from == WriteMode::Postgres && to == WriteMode::PostgresPrimary => {
            let mut client = connect(pg).map_err(|e| {
                Error::Unavailable(format!("SQLite cannot be caught up from PostgreSQL: {e}"))
            })?;
            Ok(vec![format!(
                "SQLite caught up with {} change(s) PostgreSQL took alone",
                catch_up(conn, &mut client)?
            )])
        }
        (true, true) => Ok(Vec::new()),
        (true, false) => hand_back_to_sqlite(conn, pg, force),
    }
}

fn connect(pg: Option<&PgConfig>) -> Result<postgres::Client> {
    pg.ok_or_else(|| Error::Config("no PostgreSQL is configured".into()))?.connect()
}

fn become_primary(conn: &Connection, client: &mut postgres::Client) -> Result<Vec<String>> {
    let mut notes = Vec::new();
    // 1. PostgreSQL must hold every change before it serves reads and read-check-write
    //    operations. The replicator may be applying the same records: both are revision-guarded.
    let mut drained = 0;
    loop {
        let batch = Outbox::pending(conn, 2_000)?;
        let Some(last) = batch.last().map(|r| r.seq) else { break };
        apply_batch(client, &batch, true).map_err(|e| {
            if is_permanent(&e) {
                Error::Conflict(format!(
                    "PostgreSQL refuses a pending change ({}); let the replicator move it to the dead letters \
                     (`dualwrite drain`) and deal with it before PostgreSQL becomes the primary",
                    crate::error::Error::Postgres(e)
                ))
            } else {
                Error::Unavailable(format!("cannot apply the pending changes to PostgreSQL: {e}"))
            }
        })?;
        conn.execute("DELETE FROM _dualwrite_outbox WHERE seq <= ?1", [last])?;
        drained += batch.len();
    }
    if drained > 0 {
        notes.push(format!("{drained} pending change(s) applied to PostgreSQL first"));
    }
    // 2. One revision space: PostgreSQL's revisions start above every number SQLite handed out.
    let sqlite_last = Outbox::last_seq(conn)?;
    client.execute(
        "SELECT setval('dualwrite.revision_seq', greatest($1::int8, (SELECT last_value FROM dualwrite.revision_seq), 1))",
        &[&sqlite_last],
    )?;
    // 3. Records left in PostgreSQL's outbox by an earlier phase are older than what SQLite has
    //    taken since (only a forced rollback leaves any): SQLite is the truth now.
    let applied = PgCatchUp::applied(conn)?;
    let row = client.query_one(
        "WITH gone AS (DELETE FROM dualwrite.outbox RETURNING seq)
         SELECT count(*) FILTER (WHERE seq > $1), coalesce(max(seq), 0) FROM gone",
        &[&applied],
    )?;
    let (stale, newest): (i64, i64) = (row.get(0), row.get(1));
    PgCatchUp::set_applied(conn, newest)?;
    if stale > 0 {
        notes.push(format!(
            "{stale} change(s) left in PostgreSQL's outbox by a forced rollback were discarded (SQLite's rows are kept)"
        ));
    }
    Ok(notes)
}

/// Apply every record of PostgreSQL's outbox that SQLite does not hold yet, oldest first, then
/// delete what SQLite holds from that outbox. Returns how many were applied.
pub(crate) fn catch_up(conn: &Connection, client: &mut postgres::Client) -> Result<usize> {
    let mut applied = PgCatchUp::applied(conn)?;
    let mut n = 0;
    loop {
        let batch = records_after(client, applied, CATCH_UP_BATCH)?;
        let Some(last) = batch.last().map(|r| r.seq) else { break };
        PgCatchUp::apply(conn, &batch)?;
        applied = last;
        n += batch.len();
    }
    client.execute("DELETE FROM dualwrite.outbox WHERE seq <= $1", &[&applied])?;
    Ok(n)
}

fn hand_back_to_sqlite(conn: &Connection, pg: Option<&PgConfig>, force: bool) -> Result<Vec<String>> {
    match connect(pg) {
        Ok(mut client) => {
            let n = catch_up(conn, &mut client)?;
            let newest: i64 = client.query_one("SELECT last_value FROM dualwrite.revision_seq", &[])?.get(0);
            PgCatchUp::move_outbox_past(conn, newest)?;
            Ok(vec![format!("SQLite caught up with {n} change(s) PostgreSQL took first")])
        }
        Err(e) if force => {
            let gap = Outbox::last_seq(conn)?.saturating_add(FORCED_REVISION_GAP);
            PgCatchUp::move_outbox_past(conn, gap)?;
            let note = format!(
                "FORCED without catching up: PostgreSQL is unreachable ({e}); changes only PostgreSQL took \
                 are not in SQLite (they stay in PostgreSQL's outbox): run `dualwrite verify`"
            );
            tracing::error!("{note}");
            Ok(vec![note])
        }
        Err(e) => Err(Error::Conflict(format!(
            "refusing write_mode: SQLite cannot take writes again without losing the changes only PostgreSQL \
             holds, because PostgreSQL is unreachable to copy them ({e}); retry when it is back, or use \
             --force to switch anyway (then those changes are not in SQLite: run `dualwrite verify`)"
        ))),
    }
}
