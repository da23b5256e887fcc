//! Configuration: a TOML file and/or environment variables (variables win over the file).
//!
//! | setting            | TOML                    | environment                                   |
//! |--------------------|-------------------------|-----------------------------------------------|
//! | SQLite file        | `sqlite.path`           | `DUALWRITE_SQLITE_PATH`                       |
//! | PostgreSQL         | `postgres.url`          | `DUALWRITE_PG_URL`, else `DATABASE_URL`, else `PGHOST` `PGPORT` `PGUSER` `PGPASSWORD` `PGDATABASE` |
//! | secret key file    | `secrets.key_file`      | `DUALWRITE_SECRET_KEY_FILE`                   |
//! | secret key value   | `secrets.key_env` names the variable | `DUALWRITE_SECRET_KEY` (default name) |
//! | legacy conversions | `[conversions]` `"table.column" = "rule, …"` ([`LegacyConfig`]) | — |
//! | adoption           | `adoption.unconvertible`, `adoption.extra_columns` ([`LegacyConfig`]) | — |
//!
//! The secret key never comes from either database (invariant 7). How a PostgreSQL setting becomes a
//! connection (URL forms, TLS, keepalives, the deadline) is `pg_connect`.

use crate::error::{Error, Result};
use crate::pg_connect::PgConfig;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Where the key that encrypts API-key secrets comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A file whose content (trailing newline trimmed) is the key.
    File(PathBuf),
    /// An environment variable holding the key.
    Env(String),
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::File(p) => write!(f, "file {}", p.display()),
            KeySource::Env(v) => write!(f, "environment variable {v}"),
        }
    }
}

/// Everything a bridge, the CLI and `doctor` need.
#[derive(Clone, Debug)]
pub struct Config {
    pub sqlite_path: PathBuf,
    pub postgres: Option<PgConfig>,
    pub key_source: KeySource,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    sqlite: FileSqlite,
    #[serde(default)]
    postgres: FilePostgres,
    #[serde(default)]
    secrets: FileSecrets,
    /// Per-column conversion rules for legacy data: `"table.column" = "rule, rule"`.
    #[serde(default)]
    conversions: BTreeMap<String, String>,
    #[serde(default)]
    adoption: FileAdoption,
}
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileAdoption {
    #[serde(default)]
    unconvertible: crate::legacy::Unconvertible,
    #[serde(default)]
    extra_columns: crate::legacy::ExtraColumns,
}
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileSqlite {
    path: Option<PathBuf>,
}
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FilePostgres {
    url: Option<String>,
}
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileSecrets {
    key_file: Option<PathBuf>,
    key_env: Option<String>,
}

pub const DEFAULT_KEY_ENV: &str = "DUALWRITE_SECRET_KEY";

/// The SQLite file when neither `DUALWRITE_SQLITE_PATH` nor `[sqlite] path` names one (relative to
/// the working directory). The CLI names it in its "no SQLite file" error so a forgotten setting
/// is not mistaken for a typo.
pub const DEFAULT_SQLITE_PATH: &str = "dualwrite.sqlite3";

/// The configuration file (given, or `DUALWRITE_CONFIG`), or the defaults without one.
fn read_file_config(file: Option<&Path>, env: &HashMap<String, String>) -> Result<FileConfig> {
    let file = file.map(Path::to_path_buf).or_else(|| env.get("DUALWRITE_CONFIG").map(PathBuf::from));
    Ok(match &file {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| Error::Config(format!("cannot read {}: {e}", p.display())))?;
            toml::from_str(&text).map_err(|e| toml_error(p, &text, &e))?
        }
        None => FileConfig::default(),
    })
}

/// A configuration file that does not parse, said without quoting the file: toml's own message
/// shows the offending line, which may hold the password of `postgres.url`, or the key itself when
/// `--config`/`config_file` names the key file by mistake. The position and toml's reason stay;
/// a string value the reason quotes is left out too (`invalid type: string "…"`).
fn toml_error(path: &Path, text: &str, e: &toml::de::Error) -> Error {
    let at = e
        .span()
        .and_then(|span| text.get(..span.start))
        .map(|before| {
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!(" at line {line}, column {column}")
        })
        .unwrap_or_default();
    Error::Config(format!("{}{at}: {}", path.display(), without_quoted_strings(e.message().trim())))
}

/// `text` with what stands between double quotes replaced by `…` (backslash escapes honoured).
fn without_quoted_strings(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        out.push(c);
        if c != '"' {
            continue;
        }
        out.push('…');
        while let Some(q) = chars.next() {
            match q {
                '\\' => {
                    chars.next();
                }
                '"' => {
                    out.push('"');
                    break;
                }
                _ => {}
            }
        }
    }
    out
}

/// The legacy-data settings of the configuration file (read beside [`Config`], from the same
/// file): per-column conversion overrides and what adoption does with what it cannot convert.
///
/// ```toml
/// [conversions]
/// "jobs.queued_at" = "epoch_ms"            # numbers in this column are epoch milliseconds
/// "users.created_at" = "naive_offset=+02:00"
/// "pages.title" = "empty_as_null"
///
/// [adoption]
/// unconvertible = "refuse"                 # or "hold_out": keep them in _dualwrite_adoption_holdouts
/// extra_columns = "refuse"                 # or "set_aside": keep them in _dualwrite_adoption_extras
/// ```
///
/// The rules are listed in `legacy::convert` and docs/MIGRATION.md.
#[derive(Clone, Debug, Default)]
pub struct LegacyConfig {
    pub overrides: crate::legacy::Overrides,
    pub unconvertible: crate::legacy::Unconvertible,
    pub extra_columns: crate::legacy::ExtraColumns,
}

impl LegacyConfig {
    pub fn load(file: Option<&Path>) -> Result<Self> {
        let env: HashMap<String, String> = std::env::vars().collect();
        Self::load_with_env(file, &env)
    }

    pub fn load_with_env(file: Option<&Path>, env: &HashMap<String, String>) -> Result<Self> {
        let fc = read_file_config(file, env)?;
        Ok(LegacyConfig {
            overrides: crate::legacy::Overrides::parse(&fc.conversions)?,
            unconvertible: fc.adoption.unconvertible,
            extra_columns: fc.adoption.extra_columns,
        })
    }

    /// The options `migrate_sqlite_with` adopts a file with.
    pub fn adopt_options(&self) -> crate::legacy::AdoptOptions {
        crate::legacy::AdoptOptions {
            overrides: self.overrides.clone(),
            unconvertible: self.unconvertible,
            extra_columns: self.extra_columns,
        }
    }
}

impl Config {
    /// Read the optional TOML file, then let the process environment override it.
    pub fn load(file: Option<&Path>) -> Result<Self> {
        let env: HashMap<String, String> = std::env::vars().collect();
        Self::load_with_env(file, &env)
    }

    pub fn load_with_env(file: Option<&Path>, env: &HashMap<String, String>) -> Result<Self> {
        let fc = read_file_config(file, env)?;
        // A mistake in [conversions] is reported by every command, not only the ones using it.
        crate::legacy::Overrides::parse(&fc.conversions)?;
        let sqlite_path = env
            .get("DUALWRITE_SQLITE_PATH")
            .map(PathBuf::from)
            .or(fc.sqlite.path)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SQLITE_PATH));
        let postgres = match env
            .get("DUALWRITE_PG_URL")
            .or_else(|| env.get("DATABASE_URL"))
            .or(fc.postgres.url.as_ref())
        {
            Some(url) => Some(PgConfig::from_url_with_env(url, env)?),
            None => PgConfig::from_pg_vars(env),
        };
        let key_source = if let Some(f) = env.get("DUALWRITE_SECRET_KEY_FILE") {
            KeySource::File(PathBuf::from(f))
        } else if let Some(f) = fc.secrets.key_file {
            KeySource::File(f)
        } else {
            KeySource::Env(fc.secrets.key_env.unwrap_or_else(|| DEFAULT_KEY_ENV.to_string()))
        };
        Ok(Config { sqlite_path, postgres, key_source })
    }

    pub fn require_postgres(&self) -> Result<&PgConfig> {
        self.postgres.as_ref().ok_or_else(|| {
            Error::Config(
                "no PostgreSQL configured: set DUALWRITE_PG_URL (or DATABASE_URL), the PG* variables, or postgres.url in the config file".into(),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_overrides_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("dw.toml");
        std::fs::write(&f, "[sqlite]\npath = \"from-file.db\"\n[secrets]\nkey_file = \"/k\"\n").unwrap();
        let mut env = HashMap::new();
        let c = Config::load_with_env(Some(&f), &env).unwrap();
        assert_eq!(c.sqlite_path, PathBuf::from("from-file.db"));
        assert_eq!(c.key_source, KeySource::File("/k".into()));
        env.insert("DUALWRITE_SQLITE_PATH".into(), "from-env.db".into());
        env.insert("PGHOST".into(), "localhost".into());
        env.insert("PGPORT".into(), "5433".into());
        let c = Config::load_with_env(Some(&f), &env).unwrap();
        assert_eq!(c.sqlite_path, PathBuf::from("from-env.db"));
        assert!(c.postgres.unwrap().description.contains("port=5433"));
    }

    #[test]
    fn legacy_settings_are_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("dw.toml");
        std::fs::write(
            &f,
            "[conversions]\n\"jobs.queued_at\" = \"epoch_ms\"\n[adoption]\nunconvertible = \"hold_out\"\n",
        )
        .unwrap();
        let env = HashMap::new();
        Config::load_with_env(Some(&f), &env).unwrap();
        let l = LegacyConfig::load_with_env(Some(&f), &env).unwrap();
        assert_eq!(l.unconvertible, crate::legacy::Unconvertible::HoldOut);
        assert_eq!(l.extra_columns, crate::legacy::ExtraColumns::Refuse);
        assert!(!l.overrides.is_empty());
        std::fs::write(&f, "[conversions]\n\"jobs.queued_at\" = \"epoch_days\"\n").unwrap();
        let err = Config::load_with_env(Some(&f), &env).unwrap_err().to_string();
        assert!(err.contains("jobs.queued_at") && err.contains("epoch_days"), "{err}");
        std::fs::write(&f, "[adoption]\nunconvertible = \"drop\"\n").unwrap();
        assert!(LegacyConfig::load_with_env(Some(&f), &env).is_err());
    }

    /// Regression (issue 14, item 2): a file that failed to parse was quoted line by line in the
    /// error, with the password of its PostgreSQL URL, or the key itself when the key file was
    /// given as the configuration file.
    #[test]
    fn a_file_that_does_not_parse_is_never_quoted() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("dw.toml");
        let env = HashMap::new();
        for (text, secret) in [
            ("[postgres]\nurl = \"postgres://app:hunter2-pw@db/app\" sslmode=require\n", "hunter2-pw"),
            ("[postgres]\nurl = \"postgres://app:hunter2-pw@db/app\n", "hunter2-pw"),
            ("sqlite = \"postgres://app:hunter2-pw@db/app\"\n", "hunter2-pw"),
            ("[postgres]\nurl = [\"postgres://app:hunter2-pw@db/app\"]\n", "hunter2-pw"),
            // A key file named as the configuration file.
            ("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\n", "9f86d081884c7d659a2f"),
            ("dGhpcyBpcyBhIHNlY3JldCBrZXkgZm9yIHRlc3Rz==\n", "dGhpcyBpcyBhIHNlY3JldCBr"),
        ] {
            std::fs::write(&f, text).unwrap();
            for err in [
                Config::load_with_env(Some(&f), &env).unwrap_err().to_string(),
                LegacyConfig::load_with_env(Some(&f), &env).unwrap_err().to_string(),
            ] {
                assert!(!err.contains(secret), "{text:?} shows its secret: {err}");
                assert!(err.contains("dw.toml") && err.contains(" at line "), "{err}");
            }
        }
        // What is not secret is still said: where, and why.
        std::fs::write(&f, "[sqlite]\npath = \"a.db\"\n[postgres]\nurl = \"x\" y\n").unwrap();
        let err = Config::load_with_env(Some(&f), &env).unwrap_err().to_string();
        assert!(err.contains("at line 4, column"), "{err}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("dw.toml");
        std::fs::write(&f, "[sqlite]\npaht = \"typo.db\"\n").unwrap();
        let err = Config::load_with_env(Some(&f), &HashMap::new()).unwrap_err();
        assert!(err.to_string().contains("paht"), "{err}");
    }
}
