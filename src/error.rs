//! The one error type of the core. Callers branch on the variant (the C ABI maps each to a
//! result code in one place); the backend's own error stays reachable through `source()`.

use std::fmt;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Input that can never succeed: names the offending field. Nothing was written.
    #[error("invalid {field}: {message}")]
    InvalidArgument { field: String, message: String },

    /// The addressed row does not exist.
    #[error("{table} {key} not found")]
    NotFound { table: String, key: String },

    /// The change breaks a rule of the data: a unique key, a foreign key, a CHECK, or a state
    /// transition the entity does not allow. Nothing was written.
    #[error("conflict: {0}")]
    Conflict(String),

    /// The store is locked by another writer for longer than the busy timeout.
    #[error("busy: {0}")]
    Busy(String),

    /// A store or a resource is not reachable right now (PostgreSQL down, timeout elapsed).
    #[error("unavailable: {0}")]
    Unavailable(String),

    /// Writes are switched off (`write_mode=read_only`, the monolith's decommission). Nothing was
    /// written.
    #[error("read-only: {0}")]
    ReadOnly(String),

    /// The configuration is incomplete or contradictory.
    #[error("configuration: {0}")]
    Config(String),

    /// A migration could not be applied or the ledger disagrees with the embedded scripts.
    #[error("migration: {0}")]
    Migration(String),

    /// Encryption, decryption or the secret key itself failed. Never carries a secret.
    #[error("crypto: {0}")]
    Crypto(String),

    #[error("sqlite: {0}")]
    Sqlite(#[source] rusqlite::Error),

    #[error("postgres: {}", PgDisplay(.0))]
    Postgres(#[source] postgres::Error),

    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),

    /// A bug or an impossible state; the message says which.
    #[error("internal: {0}")]
    Internal(String),
}

/// postgres::Error's Display hides the server's message behind "db error"; show it.
struct PgDisplay<'a>(&'a postgres::Error);
impl fmt::Display for PgDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_db_error() {
            Some(db) => write!(f, "{} ({})", db.message(), db.code().code()),
            None => write!(f, "{}", self.0),
        }
    }
}

/// How a write refused because the SQLite file is read-only starts its message.
const READ_ONLY_SQLITE: &str = "the SQLite file is read-only for this process";

impl Error {
    /// A write failed because the SQLite file (or its directory) is read-only for this process;
    /// the CLI adds the file's path, which SQLite's message leaves out.
    pub fn is_sqlite_read_only(&self) -> bool {
        matches!(self, Error::Config(m) if m.starts_with(READ_ONLY_SQLITE))
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidArgument { field: field.into(), message: message.into() }
    }

    pub fn not_found(table: impl Into<String>, key: impl fmt::Display) -> Self {
        Error::NotFound { table: table.into(), key: key.to_string() }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
            || matches!(self, Error::Sqlite(rusqlite::Error::QueryReturnedNoRows))
    }

    /// The SQLSTATE of a PostgreSQL error, when the server sent one.
    pub fn pg_sqlstate(&self) -> Option<&str> {
        match self {
            Error::Postgres(e) => e.code().map(|c| c.code()),
            _ => None,
        }
    }

    /// The extended result code of a SQLite error, when SQLite reported one.
    pub fn sqlite_extended_code(&self) -> Option<i32> {
        match self {
            Error::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => Some(e.extended_code),
            _ => None,
        }
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode as C;
        match &e {
            rusqlite::Error::SqliteFailure(f, msg) => match f.code {
                C::ConstraintViolation => Error::Conflict(msg.clone().unwrap_or_else(|| f.to_string())),
                C::DatabaseBusy | C::DatabaseLocked => {
                    Error::Busy(msg.clone().unwrap_or_else(|| f.to_string()))
                }
                // Not "retry later" (Unavailable): a read-only file stays read-only until someone
                // fixes its mode, owner or mount.
                C::ReadOnly => Error::Config(format!(
                    "{READ_ONLY_SQLITE} ({}): check its owner and mode, its directory's (SQLite makes the -wal \
                     and -shm files there) and whether its file system is mounted read-only",
                    msg.clone().unwrap_or_else(|| f.to_string())
                )),
                _ => Error::Sqlite(e),
            },
            _ => Error::Sqlite(e),
        }
    }
}

impl From<postgres::Error> for Error {
    fn from(e: postgres::Error) -> Self {
        Error::Postgres(e)
    }
}
