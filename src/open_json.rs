//! The JSON object a binding opens a bridge with (`dw_bridge_open`'s `config_json`, the C++
//! `Bridge::open`), read in one place so every front end accepts the same fields with the same
//! meaning. The fields are documented for callers on `dw_bridge_open` (src/ffi/bridge.rs, and so
//! include/dualwrite.h).

use crate::bridge::BridgeOptions;
use crate::config::{Config, KeySource};
use crate::error::{Error, Result};
use crate::pg_connect::PgConfig;
use serde::{Deserialize, Deserializer};
use std::path::PathBuf;

/// The configuration object. Fields left out come from the environment (and the TOML file),
/// exactly as [`Config::load`] and the CLI read them.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OpenConfig {
    /// A TOML configuration file, read first (the environment and the fields here win over it).
    config_file: Option<PathBuf>,
    sqlite_path: Option<PathBuf>,
    /// Absent: from the environment. `null`: no PostgreSQL (SQLite only, nothing replicates).
    #[serde(default, deserialize_with = "present")]
    postgres_url: Option<Option<String>>,
    key_file: Option<PathBuf>,
    key_env: Option<String>,
    #[serde(default = "yes")]
    replicate: bool,
    #[serde(default = "yes")]
    migrate_sqlite: bool,
    /// Create the SQLite file when there is none (default: a missing file is an error, so a
    /// mistyped path never becomes a new, empty database).
    #[serde(default)]
    create: bool,
}

/// Tells a field given as `null` (`Some(None)`) from one left out (`None`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

fn yes() -> bool {
    true
}

/// The configuration and options a bridge opens with, from the JSON object `text` (see
/// `dw_bridge_open` in include/dualwrite.h for its fields). Unknown fields, a value of the wrong
/// type and text that is not JSON are `Error::InvalidArgument` naming `config_json`, never quoting
/// a value (the object can hold a password); a bad URL or TOML file is `Error::Config`.
pub fn open_config_from_json(text: &str) -> Result<(Config, BridgeOptions)> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| Error::invalid_json("config_json", &e))?;
    let oc: OpenConfig = serde_json::from_value(value).map_err(|e| Error::invalid_json("config_json", &e))?;
    let mut config = Config::load(oc.config_file.as_deref())?;
    if let Some(p) = oc.sqlite_path {
        config.sqlite_path = p;
    }
    match oc.postgres_url {
        None => {}
        Some(None) => config.postgres = None,
        Some(Some(url)) => config.postgres = Some(PgConfig::from_url(&url)?),
    }
    config.key_source = match (oc.key_file, oc.key_env) {
        (Some(_), Some(_)) => {
            return Err(Error::invalid("config_json", "give key_file or key_env, not both"))
        }
        (Some(f), None) => KeySource::File(f),
        (None, Some(v)) => KeySource::Env(v),
        (None, None) => config.key_source,
    };
    let options = BridgeOptions {
        migrate_sqlite: oc.migrate_sqlite,
        replicate: oc.replicate,
        create_sqlite: oc.create,
        ..Default::default()
    };
    Ok((config, options))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_win_and_null_means_no_postgres() {
        let (c, o) = open_config_from_json(
            r#"{"sqlite_path": "/tmp/x.sqlite3", "postgres_url": null, "key_env": "MY_KEY", "replicate": false}"#,
        )
        .unwrap();
        assert_eq!(c.sqlite_path, PathBuf::from("/tmp/x.sqlite3"));
        assert!(c.postgres.is_none());
        assert_eq!(c.key_source, KeySource::Env("MY_KEY".into()));
        assert!(!o.replicate && o.migrate_sqlite && !o.create_sqlite);
        let (_, o) = open_config_from_json(r#"{"create": true, "migrate_sqlite": false}"#).unwrap();
        assert!(o.create_sqlite && !o.migrate_sqlite && o.replicate);
    }

    #[test]
    fn bad_objects_are_refused_without_quoting_values() {
        let e = open_config_from_json(r#"{"replicate": "hunter2"}"#).unwrap_err();
        assert!(matches!(&e, Error::InvalidArgument { field, .. } if field == "config_json"), "{e:?}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let e = open_config_from_json(r#"{"sqlite_paht": "x"}"#).unwrap_err();
        assert!(e.to_string().contains("sqlite_paht"), "{e}");
        let e = open_config_from_json("{not json").unwrap_err();
        assert!(e.to_string().contains("is not valid JSON"), "{e}");
    }
}
