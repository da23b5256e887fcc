//! The one error type of the core, and its classification: [`Error::kind`] says what a caller
//! can do about an error, once, for every front end (the C ABI turns a kind into a `dw_result`
//! code, the C++ binding into the code's name, the CLI into its message). The backend's own
//! error stays reachable through `source()`.

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
    /// transition the entity does not allow. Nothing was written. When SQLite's constraint check
    /// refused it, `source()` is SQLite's error (its extended code says which constraint kind).
    #[error(transparent)]
    Conflict(ConflictReason),

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

/// Why a change is a conflict: the message, and SQLite's own error when SQLite's constraint
/// check is what refused it (so the extended result code is not lost on the way up).
#[derive(Debug, thiserror::Error)]
#[error("conflict: {message}")]
pub struct ConflictReason {
    message: String,
    #[source]
    sqlite: Option<rusqlite::Error>,
}

impl ConflictReason {
    /// The message, without the "conflict: " that `Display` puts in front.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl From<String> for ConflictReason {
    fn from(message: String) -> Self {
        ConflictReason { message, sqlite: None }
    }
}

impl From<&str> for ConflictReason {
    fn from(message: &str) -> Self {
        message.to_string().into()
    }
}

/// Declares [`ErrorKind`] with its list [`ErrorKind::ALL`] and the names of its result codes from
/// one list, so the three cannot disagree.
macro_rules! error_kinds {
    ($( $(#[$doc:meta])* $kind:ident => $code_name:literal, )+) => {
        /// What a caller can do about an error: the classification every front end shares (the
        /// C ABI's `dw_result` codes have the same meanings, one code per kind, see
        /// `src/ffi/error.rs`).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum ErrorKind {
            $( $(#[$doc])* $kind, )+
        }

        impl ErrorKind {
            /// Every kind.
            pub const ALL: &'static [ErrorKind] = &[$(ErrorKind::$kind),+];

            /// The name of the C ABI's result code for this kind (`"DW_NOT_FOUND"`, ...), which
            /// the C++ binding puts in front of its exception messages so that C, C++ and Python
            /// callers see the same names. The C ABI checks in its tests that its codes carry
            /// these names.
            pub fn result_code_name(self) -> &'static str {
                match self {
                    $(ErrorKind::$kind => $code_name,)+
                }
            }
        }
    };
}

error_kinds! {
    /// The addressed row does not exist.
    NotFound => "DW_NOT_FOUND",
    /// The change breaks a rule of the data; nothing was written. Retrying the same change fails
    /// again.
    Conflict => "DW_CONFLICT",
    /// The input can never succeed as given; nothing was written.
    InvalidArgument => "DW_INVALID_ARGUMENT",
    /// SQLite stayed locked by another writer; retrying later may succeed.
    Busy => "DW_BUSY",
    /// A store or resource is not reachable now; retrying later may succeed.
    Unavailable => "DW_UNAVAILABLE",
    /// A bug or an impossible state inside the library.
    Internal => "DW_INTERNAL",
    /// The configuration (or the environment it names: a key file, a read-only SQLite file, a
    /// schema this build cannot use) is wrong; retrying does not help until someone fixes it.
    Config => "DW_CONFIG",
    /// Writes are switched off (`write_mode=read_only`); reads work.
    ReadOnly => "DW_READ_ONLY",
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
    /// What a caller can do about this error. Exhaustive on purpose: a new variant must be
    /// classified here, and every front end follows.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidArgument { .. } => ErrorKind::InvalidArgument,
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::Conflict(_) => ErrorKind::Conflict,
            Error::Busy(_) => ErrorKind::Busy,
            Error::Unavailable(_) | Error::Io(_) => ErrorKind::Unavailable,
            Error::ReadOnly(_) => ErrorKind::ReadOnly,
            Error::Config(_) | Error::Migration(_) | Error::Crypto(_) => ErrorKind::Config,
            Error::Sqlite(e) => sqlite_kind(e),
            // A PostgreSQL error of a write: class 23 (integrity constraint violation) and 22
            // (data exception) are the caller's data; anything else is the server or the network.
            Error::Postgres(_) => match self.pg_sqlstate() {
                Some(s) if s.starts_with("23") => ErrorKind::Conflict,
                Some(s) if s.starts_with("22") => ErrorKind::InvalidArgument,
                _ => ErrorKind::Unavailable,
            },
            Error::Internal(_) => ErrorKind::Internal,
        }
    }

    /// A change refused because it breaks a rule of the data (see [`Error::Conflict`]).
    pub fn conflict(message: impl Into<String>) -> Self {
        Error::Conflict(ConflictReason::from(message.into()))
    }

    /// JSON given for `field` that does not parse ("is not valid JSON: ...") or does not fit
    /// (an unknown member, a value of the wrong type), as an `InvalidArgument` whose message never
    /// quotes the offending value (it may be a password or a secret).
    pub fn invalid_json(field: impl Into<String>, e: &serde_json::Error) -> Self {
        let message = match e.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                format!("is not valid JSON: {}", serde_message(e))
            }
            serde_json::error::Category::Data | serde_json::error::Category::Io => serde_message(e),
        };
        Error::invalid(field, message)
    }

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
                C::ConstraintViolation => {
                    let message = msg.clone().unwrap_or_else(|| f.to_string());
                    Error::Conflict(ConflictReason { message, sqlite: Some(e) })
                }
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

/// SQLite failures that the conversion above left as `Error::Sqlite`.
fn sqlite_kind(e: &rusqlite::Error) -> ErrorKind {
    use rusqlite::ErrorCode as C;
    match e {
        rusqlite::Error::QueryReturnedNoRows => ErrorKind::NotFound,
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            C::ConstraintViolation => ErrorKind::Conflict,
            C::DatabaseBusy | C::DatabaseLocked => ErrorKind::Busy,
            // The file or the disk under it, not the data: another moment (or an operator) may
            // fix it.
            C::CannotOpen
            | C::SystemIoFailure
            | C::DiskFull
            | C::ReadOnly
            | C::PermissionDenied
            | C::NotADatabase
            | C::DatabaseCorrupt => ErrorKind::Unavailable,
            _ => ErrorKind::Internal,
        },
        _ => ErrorKind::Internal,
    }
}

/// A serde error as a message that never echoes the offending value (it could be a secret):
/// "invalid type: string \"hunter2\", expected u32" becomes "invalid type: expected u32".
pub(crate) fn serde_message(e: &serde_json::Error) -> String {
    let full = e.to_string();
    for kind in ["invalid type:", "invalid value:", "invalid length"] {
        if full.starts_with(kind) {
            if let Some(i) = full.find(", expected") {
                return format!("{} {}", kind.trim_end_matches(':'), &full[i + 2..]);
            }
        }
    }
    full
}

impl From<postgres::Error> for Error {
    fn from(e: postgres::Error) -> Self {
        Error::Postgres(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::ffi::{
        Error as SqliteCode, SQLITE_BUSY, SQLITE_CANTOPEN, SQLITE_CONSTRAINT_UNIQUE, SQLITE_MISMATCH,
    };

    fn sqlite_failure(code: i32) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(SqliteCode::new(code), Some("from sqlite".into()))
    }

    #[test]
    fn every_variant_has_the_kind_a_caller_acts_on() {
        let cases = [
            (Error::invalid("x", "y"), ErrorKind::InvalidArgument),
            (Error::not_found("users", "k"), ErrorKind::NotFound),
            (Error::conflict("c"), ErrorKind::Conflict),
            (Error::Busy("b".into()), ErrorKind::Busy),
            (Error::Unavailable("u".into()), ErrorKind::Unavailable),
            (Error::Io(std::io::Error::other("disk")), ErrorKind::Unavailable),
            (Error::ReadOnly("r".into()), ErrorKind::ReadOnly),
            (Error::Config("c".into()), ErrorKind::Config),
            (Error::Migration("m".into()), ErrorKind::Config),
            (Error::Crypto("k".into()), ErrorKind::Config),
            (Error::Internal("i".into()), ErrorKind::Internal),
            (Error::Sqlite(rusqlite::Error::QueryReturnedNoRows), ErrorKind::NotFound),
            (Error::Sqlite(sqlite_failure(SQLITE_CANTOPEN)), ErrorKind::Unavailable),
            (Error::Sqlite(sqlite_failure(SQLITE_MISMATCH)), ErrorKind::Internal),
            (Error::Sqlite(rusqlite::Error::InvalidQuery), ErrorKind::Internal),
        ];
        for (e, kind) in cases {
            assert_eq!(e.kind(), kind, "{e:?}");
        }
    }

    #[test]
    fn sqlite_errors_are_classified_through_the_conversion() {
        assert_eq!(Error::from(sqlite_failure(SQLITE_BUSY)).kind(), ErrorKind::Busy);
        assert_eq!(Error::from(sqlite_failure(SQLITE_CONSTRAINT_UNIQUE)).kind(), ErrorKind::Conflict);
        // Left unconverted (as a caller's own rusqlite error could be), a constraint is still one.
        assert_eq!(Error::Sqlite(sqlite_failure(SQLITE_CONSTRAINT_UNIQUE)).kind(), ErrorKind::Conflict);
    }

    #[test]
    fn a_sqlite_constraint_conflict_keeps_sqlite_s_error_as_its_source() {
        let e = Error::from(sqlite_failure(SQLITE_CONSTRAINT_UNIQUE));
        assert!(matches!(e, Error::Conflict(_)));
        assert_eq!(e.to_string(), "conflict: from sqlite");
        let source = std::error::Error::source(&e).expect("SQLite's error is the source");
        let sqlite = source.downcast_ref::<rusqlite::Error>().expect("a rusqlite::Error");
        assert_eq!(sqlite.sqlite_error().map(|f| f.extended_code), Some(SQLITE_CONSTRAINT_UNIQUE));

        // A conflict the library itself found has no store error behind it.
        let own = Error::conflict("job j is succeeded and cannot become running");
        assert!(std::error::Error::source(&own).is_none());
        assert_eq!(own.to_string(), "conflict: job j is succeeded and cannot become running");
    }

    #[test]
    fn every_kind_has_its_own_result_code_name() {
        let mut names: Vec<&str> = ErrorKind::ALL.iter().map(|k| k.result_code_name()).collect();
        assert!(names.iter().all(|n| n.starts_with("DW_")), "{names:?}");
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ErrorKind::ALL.len(), "two kinds share a result code name");
    }

    #[test]
    fn serde_messages_never_quote_the_value() {
        let e = serde_json::from_str::<u32>("\"hunter2\"").unwrap_err();
        let m = Error::invalid_json("field", &e).to_string();
        assert!(!m.contains("hunter2") && m.contains("expected u32"), "{m}");
        let e = serde_json::from_str::<serde_json::Value>("{\"a\": hunter2").unwrap_err();
        let m = Error::invalid_json("field", &e).to_string();
        assert!(!m.contains("hunter2") && m.starts_with("invalid field: is not valid JSON"), "{m}");
    }
}
