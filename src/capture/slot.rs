//! The capture's PostgreSQL side: the logical replication slot (pgoutput), the replication
//! origins that mark the bridge's own sessions, and what `status` and `doctor` report of them.

use crate::error::{Error, Result};
use postgres::types::PgLsn;

/// The logical replication slot SQLite follows, as a SQL expression: slot names are global to
/// the PostgreSQL cluster and a slot belongs to one database, so the name is made from the
/// database's (`dw_capture_` and the md5 of the name: always a valid slot name, 43 characters).
pub const SLOT_SQL: &str = "('dw_capture_' || md5(current_database()))";
/// How the slot is named in messages.
pub const SLOT: &str = "dw_capture_<md5 of the database name>";
/// The publication the slot decodes (migration 0007: the 13 tables).
pub const PUBLICATION: &str = "dualwrite_capture";
/// Replication origins of the bridge's own sessions are named `dualwrite_<n>`: PostgreSQL 15 lets
/// one session at a time use an origin, and the replicator and each backfill worker write at once.
pub const ORIGIN_PREFIX: &str = "dualwrite_";
/// How many origins the bridge's sessions may take at once.
const ORIGIN_POOL: usize = 64;

/// Settings of the decoding session that fix how values are printed (see `decode::sqlite_value`).
pub const DECODING_SESSION: &str =
    "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET bytea_output = 'hex'; SET IntervalStyle = 'postgres'";

/// Put a connection in the decoding session's settings. Each decoding call logs its start at
/// level LOG in the server's log; a role that may (a superuser) turns that off for this session,
/// since the replicator makes dozens of calls a second.
pub fn decoding_session(client: &mut postgres::Client) -> Result<()> {
    client.batch_execute(DECODING_SESSION)?;
    let _ = client.batch_execute("SET log_min_messages = warning");
    Ok(())
}

/// The slot as `pg_replication_slots` shows it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SlotState {
    /// `reserved`, `extended`, `unreserved` or `lost` (PostgreSQL removed WAL the slot needed:
    /// `max_slot_wal_keep_size`); lost cannot be undone.
    pub wal_status: String,
    /// WAL kept for the slot, in bytes (from its restart position to the current one).
    pub retained_wal_bytes: i64,
    /// WAL written since the position SQLite confirmed, in bytes: how far the capture lags.
    pub pending_wal_bytes: i64,
    /// How much more WAL may be written before PostgreSQL invalidates the slot (`None`: no limit).
    pub safe_wal_bytes: Option<i64>,
    pub confirmed_lsn: Option<String>,
    /// A session reading the slot right now.
    pub active: bool,
    pub slot_name: String,
}

/// `wal_level` of the server.
pub fn wal_level(client: &mut postgres::Client) -> Result<String> {
    Ok(client.query_one("SHOW wal_level", &[])?.get(0))
}

/// The slot, or `None` when it does not exist.
pub fn state(client: &mut postgres::Client) -> Result<Option<SlotState>> {
    let sql = format!(
        "SELECT coalesce(wal_status, 'lost'),
                coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn), 0)::int8,
                coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn), 0)::int8,
                safe_wal_size::int8, confirmed_flush_lsn::text, active, slot_name::text
         FROM pg_replication_slots WHERE slot_name = {SLOT_SQL}"
    );
    let row = client.query_opt(&sql, &[])?;
    Ok(row.map(|r| SlotState {
        wal_status: r.get(0),
        retained_wal_bytes: r.get(1),
        pending_wal_bytes: r.get(2),
        safe_wal_bytes: r.get(3),
        confirmed_lsn: r.get(4),
        active: r.get(5),
        slot_name: r.get(6),
    }))
}

/// `wal_level` and the slot, for `status`.
pub fn probe(client: &mut postgres::Client) -> Result<(String, Option<SlotState>)> {
    Ok((wal_level(client)?, state(client)?))
}

/// Make the slot if it does not exist. `Ok(false)`: it existed. Refused with a message that says
/// what to configure when `wal_level` is not `logical`. Making a slot waits for every transaction
/// running at that moment to end (its starting snapshot): bounded by `wait`, then `Unavailable`.
pub fn ensure(client: &mut postgres::Client) -> Result<bool> {
    ensure_within(client, std::time::Duration::from_secs(30))
}

/// [`ensure`] with its own bound on the wait for running transactions.
pub fn ensure_within(client: &mut postgres::Client, wait: std::time::Duration) -> Result<bool> {
    if let Some(s) = state(client)? {
        if s.wal_status == "lost" {
            return Err(lost_error());
        }
        return Ok(false);
    }
    let level = wal_level(client)?;
    if level != "logical" {
        return Err(Error::Config(format!(
            "change capture needs wal_level = logical on PostgreSQL (it is {level}): set it (a server restart; on a \
             managed service its own switch, e.g. rds.logical_replication) and give the bridge's role REPLICATION"
        )));
    }
    let sql = format!(
        "SELECT lsn::text, slot_name::text FROM pg_create_logical_replication_slot({SLOT_SQL}, 'pgoutput')"
    );
    match client.query_one(&sql, &[]) {
        Ok(r) => {
            let (lsn, slot): (String, String) = (r.get(0), r.get(1));
            tracing::info!(%slot, %lsn, "change capture slot created");
            Ok(true)
        }
        // Another process made it at the same moment.
        Err(e) if e.code() == Some(&postgres::error::SqlState::DUPLICATE_OBJECT) => Ok(false),
        Err(e) if e.code() == Some(&postgres::error::SqlState::QUERY_CANCELED) => Err(Error::Unavailable(format!(
            "the change capture slot could not be made within {wait:?}: PostgreSQL waits for the transactions \
             running when it starts to end (a long-running one holds it up); retried later"
        ))),
        Err(e) => Err(Error::Postgres(e)),
    }
}

/// The error for a slot PostgreSQL invalidated, with the way back.
pub fn lost_error() -> Error {
    Error::Unavailable(format!(
        "the change capture slot ({SLOT}) is LOST: PostgreSQL removed WAL it still needed (max_slot_wal_keep_size), so \
         changes since SQLite's last position cannot be captured any more and SQLite is not a lossless fallback. Way \
         back: `dualwrite capture resync --why …` (a new slot, then SQLite copies every row from PostgreSQL), then \
         `dualwrite verify`; raise max_slot_wal_keep_size or keep the replicator running"
    ))
}

/// The slot's name in this database (what [`SLOT_SQL`] computes), for the replication protocol's
/// commands, which take a literal name.
pub fn name(client: &mut postgres::Client) -> Result<String> {
    Ok(client.query_one(&format!("SELECT {SLOT_SQL}"), &[])?.get(0))
}

/// The `application_name` of the follower's replication connection (`capture::stream`).
pub const STREAM_APPLICATION: &str = "dualwrite-capture";

/// End the follower's replication stream if one holds the slot, so this session can use it (a
/// phase switch's drain, a drop). Only a stream of ours is ended, never another reader; the
/// follower reconnects after its back-off and SQLite's mark skips what it is handed again.
/// `true` when one was ended.
pub fn release(client: &mut postgres::Client) -> Result<bool> {
    let sql = format!(
        "SELECT pg_terminate_backend(s.active_pid) FROM pg_replication_slots s \
         JOIN pg_stat_activity a ON a.pid = s.active_pid \
         WHERE s.slot_name = {SLOT_SQL} AND a.application_name = $1 AND a.backend_type = 'walsender'"
    );
    Ok(!client.query(&sql, &[&STREAM_APPLICATION])?.is_empty())
}

/// Drop the slot (SQLite no longer follows PostgreSQL: after the decommission, or for a resync).
pub fn drop_slot(client: &mut postgres::Client) -> Result<bool> {
    if release(client)? {
        // The walsender ends asynchronously: wait (bounded) until the slot is free.
        wait_until_inactive(client, std::time::Duration::from_secs(10))?;
    }
    let sql = format!(
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = {SLOT_SQL}"
    );
    let n = client.execute(&sql, &[])?;
    Ok(n > 0)
}

/// Mark this session as one of the bridge's own (its changes came from SQLite): take a free
/// replication origin `dualwrite_<n>`, creating it when missing. Needs the right to run
/// `pg_replication_origin_session_setup` (superuser, or granted: roles.sql.example).
pub fn tag_session(client: &mut postgres::Client) -> Result<String> {
    let mut last = None;
    for n in 0..ORIGIN_POOL {
        let name = format!("{ORIGIN_PREFIX}{n}");
        let exists: bool =
            client.query_one("SELECT pg_replication_origin_oid($1) IS NOT NULL", &[&name])?.get(0);
        if !exists {
            if let Err(e) = client.execute("SELECT pg_replication_origin_create($1)", &[&name]) {
                // Made by another session meanwhile: use it like any other.
                if e.code() != Some(&postgres::error::SqlState::UNIQUE_VIOLATION) {
                    return Err(Error::Postgres(e));
                }
            }
        }
        match client.execute("SELECT pg_replication_origin_session_setup($1)", &[&name]) {
            Ok(_) => return Ok(name),
            // In use by another session (55006 object_in_use): try the next one.
            Err(e) if e.code() == Some(&postgres::error::SqlState::OBJECT_IN_USE) => last = Some(e),
            Err(e) => return Err(Error::Postgres(e)),
        }
    }
    Err(Error::Unavailable(format!(
        "all {ORIGIN_POOL} replication origins of the bridge are in use{}",
        last.map(|e| format!(" ({e})")).unwrap_or_default()
    )))
}

/// Tag the session when the server can capture changes (`wal_level = logical`), so the capture
/// does not count this session's writes as someone else's (the slot may be made later, while the
/// session lives). A failure is logged, not fatal: replication must go on (`doctor` reports the
/// missing privilege).
pub fn tag_session_if_capturing(client: &mut postgres::Client) {
    let capturing = wal_level(client).is_ok_and(|l| l == "logical");
    if capturing {
        if let Err(e) = tag_session(client) {
            tracing::warn!(error = %e, "cannot mark this session's writes as the bridge's own (replication origin); \
                the change capture will report them as foreign writes");
        }
    }
}

/// Wait until no session holds the slot (or `wait` passes; the caller's next use then reports it).
pub fn wait_until_inactive(client: &mut postgres::Client, wait: std::time::Duration) -> Result<()> {
    let deadline = std::time::Instant::now() + wait;
    let sql = format!("SELECT active FROM pg_replication_slots WHERE slot_name = {SLOT_SQL}");
    while std::time::Instant::now() < deadline {
        let active = client.query_opt(&sql, &[])?.is_some_and(|r| r.get::<_, bool>(0));
        if !active {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    Ok(())
}

/// The current flushed WAL position: decoding up to it sees every transaction committed before.
pub fn flush_lsn(client: &mut postgres::Client) -> Result<u64> {
    let lsn: PgLsn = client.query_one("SELECT pg_current_wal_flush_lsn()", &[])?.get(0);
    Ok(u64::from(lsn))
}

/// Confirm everything up to `lsn` (never backwards): PostgreSQL may then recycle that WAL.
pub fn advance(client: &mut postgres::Client, lsn: u64) -> Result<()> {
    let sql = format!(
        "SELECT pg_replication_slot_advance(slot_name, greatest($1::pg_lsn, confirmed_flush_lsn))
         FROM pg_replication_slots WHERE slot_name = {SLOT_SQL}"
    );
    client.execute(&sql, &[&PgLsn::from(lsn)])?;
    Ok(())
}
