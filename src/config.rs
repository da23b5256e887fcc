//! Configuration: a TOML file and/or environment variables (variables win over the file).
//!
//! | setting            | TOML                    | environment                                   |
//! |--------------------|-------------------------|-----------------------------------------------|
//! | SQLite file        | `sqlite.path`           | `DUALWRITE_SQLITE_PATH`                       |
//! | PostgreSQL         | `postgres.url`          | `DUALWRITE_PG_URL`, else `DATABASE_URL`, else `PGHOST` `PGPORT` `PGUSER` `PGPASSWORD` `PGDATABASE` |
//! | secret key file    | `secrets.key_file`      | `DUALWRITE_SECRET_KEY_FILE`                   |
//! | secret key value   | `secrets.key_env` names the variable | `DUALWRITE_SECRET_KEY` (default name) |
//!
//! The secret key never comes from either database (invariant 7).

use crate::error::{Error, Result};
use serde::Deserialize;
use std::collections::HashMap;
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

/// How to reach PostgreSQL. Debug never prints the password.
#[derive(Clone)]
pub struct PgConfig {
    inner: postgres::Config,
    /// What the user gave, with any password masked, for messages.
    pub description: String,
}

impl std::fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.description)
    }
}

impl PgConfig {
    /// Parse a `postgres://` URL or a libpq key=value string.
    pub fn from_url(url: &str) -> Result<Self> {
        let mut inner: postgres::Config =
            url.parse().map_err(|e| Error::Config(format!("PostgreSQL URL is not valid: {e}")))?;
        if inner.get_connect_timeout().is_none() {
            inner.connect_timeout(std::time::Duration::from_secs(5));
        }
        Ok(PgConfig { inner, description: mask_password(url) })
    }

    /// Build from the libpq variables that `pg_virtualenv` sets.
    pub fn from_pg_vars(vars: &HashMap<String, String>) -> Option<Self> {
        let host = vars.get("PGHOST")?;
        let mut inner = postgres::Config::new();
        inner.host(host);
        let port = vars.get("PGPORT").and_then(|p| p.parse().ok()).unwrap_or(5432);
        inner.port(port);
        let user = vars
            .get("PGUSER")
            .cloned()
            .or_else(|| vars.get("USER").cloned())
            .unwrap_or_else(|| "postgres".into());
        inner.user(&user);
        if let Some(pw) = vars.get("PGPASSWORD") {
            inner.password(pw);
        }
        let db = vars.get("PGDATABASE").cloned().unwrap_or_else(|| user.clone());
        inner.dbname(&db);
        inner.connect_timeout(std::time::Duration::from_secs(5));
        Some(PgConfig { inner, description: format!("host={host} port={port} user={user} dbname={db}") })
    }

    pub fn postgres_config(&self) -> &postgres::Config {
        &self.inner
    }

    /// The same server with another database name (tests create one database each).
    pub fn with_dbname(&self, dbname: &str) -> Self {
        let mut inner = self.inner.clone();
        inner.dbname(dbname);
        let description = match self.inner.get_dbname() {
            Some(old) => self.description.replace(&format!("dbname={old}"), &format!("dbname={dbname}")),
            None => format!("{} dbname={dbname}", self.description),
        };
        PgConfig { inner, description }
    }

    pub fn dbname(&self) -> Option<&str> {
        self.inner.get_dbname()
    }

    /// Open one connection (no TLS: loopback and Unix sockets).
    pub fn connect(&self) -> Result<postgres::Client> {
        self.inner.connect(postgres::NoTls).map_err(|e| {
            Error::Unavailable(format!(
                "cannot connect to PostgreSQL ({}): {}",
                self.description,
                pg_message(&e)
            ))
        })
    }
}

fn pg_message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.message().to_string(),
        None => {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(inner) = src {
                s.push_str(": ");
                s.push_str(&inner.to_string());
                src = inner.source();
            }
            s
        }
    }
}

fn mask_password(url: &str) -> String {
    // postgres://user:secret@host/db -> postgres://user:***@host/db
    if let Some((scheme, rest)) = url.split_once("://") {
        if let Some((auth, host)) = rest.split_once('@') {
            if let Some((user, _)) = auth.split_once(':') {
                return format!("{scheme}://{user}:***@{host}");
            }
        }
        return url.to_string();
    }
    // key=value form
    url.split_whitespace()
        .map(|kv| if kv.starts_with("password=") { "password=***" } else { kv })
        .collect::<Vec<_>>()
        .join(" ")
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

impl Config {
    /// Read the optional TOML file, then let the process environment override it.
    pub fn load(file: Option<&Path>) -> Result<Self> {
        let env: HashMap<String, String> = std::env::vars().collect();
        Self::load_with_env(file, &env)
    }

    pub fn load_with_env(file: Option<&Path>, env: &HashMap<String, String>) -> Result<Self> {
        let file = file.map(Path::to_path_buf).or_else(|| env.get("DUALWRITE_CONFIG").map(PathBuf::from));
        let fc: FileConfig = match &file {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| Error::Config(format!("cannot read {}: {e}", p.display())))?;
                toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", p.display())))?
            }
            None => FileConfig::default(),
        };
        let sqlite_path = env
            .get("DUALWRITE_SQLITE_PATH")
            .map(PathBuf::from)
            .or(fc.sqlite.path)
            .unwrap_or_else(|| PathBuf::from("dualwrite.sqlite3"));
        let postgres = match env
            .get("DUALWRITE_PG_URL")
            .or_else(|| env.get("DATABASE_URL"))
            .or(fc.postgres.url.as_ref())
        {
            Some(url) => Some(PgConfig::from_url(url)?),
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
    fn url_password_is_masked() {
        assert_eq!(mask_password("postgres://bob:hunter2@db:5432/x"), "postgres://bob:***@db:5432/x");
        assert_eq!(mask_password("host=db password=hunter2 user=bob"), "host=db password=*** user=bob");
    }

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
    fn unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("dw.toml");
        std::fs::write(&f, "[sqlite]\npaht = \"typo.db\"\n").unwrap();
        let err = Config::load_with_env(Some(&f), &HashMap::new()).unwrap_err();
        assert!(err.to_string().contains("paht"), "{err}");
    }
}
