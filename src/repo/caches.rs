//! text_analytics_cache and wordstat_cache: one implementation, the table chosen by [`Cache`].
//!
//! An entry whose `expires_at` is at or before now is a miss; expired entries stay until
//! [`Bridge::purge_expired`] deletes them (each delete is replicated like any other change).

use super::{decode, registry_table};
use crate::bridge::Bridge;
use crate::error::{Error, Result};
use crate::schema::{validate_row, Filter, Row, RowMode, Table};
use crate::store::sqlite::Rows;
use chrono::{SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::Duration;

/// Which cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cache {
    TextAnalytics,
    Wordstat,
}

impl Cache {
    pub fn table_name(self) -> &'static str {
        match self {
            Cache::TextAnalytics => "text_analytics_cache",
            Cache::Wordstat => "wordstat_cache",
        }
    }

    fn table(self) -> Result<&'static Table> {
        registry_table(self.table_name())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CacheEntry {
    pub cache_key: String,
    pub value: Value,
    pub expires_at: String,
}

/// `now + ttl` in the canonical form; a TTL beyond the year 9999 is an invalid argument.
fn expiry(ttl: Duration) -> Result<String> {
    let too_long = || Error::invalid("ttl", "is too long (the expiry must fall before the year 10000)");
    let ttl = chrono::Duration::from_std(ttl).map_err(|_| too_long())?;
    let t = Utc::now().checked_add_signed(ttl).ok_or_else(too_long)?;
    // Micros truncates; validate_row then checks the year range.
    Ok(t.to_rfc3339_opts(SecondsFormat::Micros, true))
}

impl Bridge {
    /// The live entry under `key`; an expired entry is a miss (`None`).
    pub fn cache_get(&self, cache: Cache, key: &str) -> Result<Option<CacheEntry>> {
        let t = cache.table()?;
        let now = super::now();
        let rows = self.query_routed(t, Filter::new().eq("cache_key", key).greater("expires_at", now))?;
        rows.into_iter().next().map(|r| decode(t, r)).transpose()
    }

    /// Store `value` under `key` for `ttl`, replacing any entry (expired or not).
    pub fn cache_put(&self, cache: Cache, key: &str, value: &Value, ttl: Duration) -> Result<CacheEntry> {
        let t = cache.table()?;
        let mut row = Row::new();
        row.insert("cache_key".into(), Value::String(key.to_string()));
        row.insert("value".into(), value.clone());
        row.insert("expires_at".into(), Value::String(expiry(ttl)?));
        let row = validate_row(t, &Value::Object(row), RowMode::Insert)?;
        // The entry's key is the table's key.
        let stored = self.upsert_row(t, &["cache_key"], &row, &["value", "expires_at"], Row::new())?;
        decode(t, stored)
    }

    /// Remove the entry under `key`; `false` if there was none.
    pub fn cache_delete(&self, cache: Cache, key: &str) -> Result<bool> {
        let t = cache.table()?;
        self.write(|tx| tx.delete(t, key))
    }

    /// Delete every expired entry (one transaction); returns how many.
    pub fn purge_expired(&self, cache: Cache) -> Result<usize> {
        let t = cache.table()?;
        let now = super::now();
        self.write(|tx| {
            let expired = tx.query_rows(t, &Filter::new().at_most("expires_at", now.as_str()))?;
            let mut n = 0;
            for row in expired {
                if let Some(key) = row.get(t.key).and_then(Value::as_str) {
                    if tx.delete(t, key)? {
                        n += 1;
                    }
                }
            }
            Ok(n)
        })
    }
}
