//! The write fence: how a write made in PostgreSQL first and a phase switch exclude each other
//! without SQLite's write lock (which such writes no longer hold across PostgreSQL's commit).
//!
//! `dualwrite.write_fence` holds the write mode as PostgreSQL knows it (migration 0007). Each
//! PostgreSQL-first write starts its transaction by taking a shared advisory lock and reading the
//! fence, in one round trip; a switch takes the lock exclusively, so it waits for the writes in
//! flight and every later write sees the new mode. The file's stored write mode stays the
//! authority: the fence is only changed under the file's write lock, by a switch, or repaired to
//! the file's mode by a write that found the two apart (a switch that died half-way).

use crate::error::{Error, Result};
use crate::flags::WriteMode;

/// The advisory lock (one 64-bit key, "dwfence\0").
const FENCE_LOCK: i64 = 0x6477_6665_6e63_6500;

/// Begin a write transaction on `client` and return the fence's write mode, read after the
/// shared lock is held (a statement of its own, so its snapshot is newer than any switch that
/// held the lock before).
pub(crate) fn begin_write(
    client: &mut postgres::Client,
) -> std::result::Result<Option<WriteMode>, postgres::Error> {
    let messages = client.simple_query(&format!(
        "BEGIN; {}; SELECT pg_advisory_xact_lock_shared({FENCE_LOCK}); \
         SELECT write_mode FROM dualwrite.write_fence WHERE id = 1",
        crate::store::postgres::ABANDONED_TRANSACTION_TIMEOUT
    ))?;
    let mode = messages
        .iter()
        .filter_map(|m| match m {
            postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .next_back();
    Ok(mode.and_then(|m| m.parse().ok()))
}

/// The fence checked inside a statement (migration 0008): a condition for the WHERE clause of a
/// one-statement write made in autocommit. It takes the same shared lock as [`begin_write`] and
/// raises [`FENCED_SQLSTATE`] when the fence holds a mode that is not PostgreSQL-first.
pub(crate) const CHECK_IN_STATEMENT: &str = "dualwrite.fence_allows_write()";

/// What `dualwrite.fence_allows_write()` raises, with the fence's mode as the message.
const FENCED_SQLSTATE: &str = "DWF01";

/// `Some(mode)` when `e` is the in-statement check's refusal: the fence holds `mode` (`None`: a
/// value this build does not know).
pub(crate) fn refused_by_fence(e: &postgres::Error) -> Option<Option<WriteMode>> {
    let db = e.as_db_error()?;
    (db.code().code() == FENCED_SQLSTATE).then(|| db.message().parse().ok())
}

/// Set the fence to `mode`, after every write holding the shared lock has ended.
pub(crate) fn set(client: &mut postgres::Client, mode: WriteMode) -> Result<()> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&FENCE_LOCK])?;
    let n = tx.execute(
        "UPDATE dualwrite.write_fence SET write_mode = $1, changed_at = now() WHERE id = 1",
        &[&mode.as_str()],
    )?;
    if n != 1 {
        return Err(Error::Migration("dualwrite.write_fence has no row: run `dualwrite migrate`".into()));
    }
    tx.commit()?;
    Ok(())
}
