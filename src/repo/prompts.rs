//! prompts: versioned by key; publishing appends version max + 1.

use super::{new_row, Entity, TypedRows, TypedWrite};
use crate::bridge::Bridge;
use crate::error::{Error, Result};
use crate::schema::{Filter, Row};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Prompt {
    pub id: Uuid,
    pub key: String,
    pub body: String,
    pub version: i32,
    pub updated_by: Option<Uuid>,
    pub updated_at: String,
}

impl Entity for Prompt {
    const TABLE: &'static str = "prompts";
}

/// The newest version of prompt `key`.
fn latest(key: &str) -> Filter {
    Filter::new().eq("key", key).descending("version").limit(1)
}

impl Bridge {
    /// Publish `body` as the next version of prompt `key` (1 for a new key). The version is
    /// read and the row written in one transaction, so concurrent publishers get distinct
    /// versions.
    pub fn publish_prompt(&self, key: &str, body: &str, updated_by: Option<Uuid>) -> Result<Prompt> {
        let mut row = Row::new();
        row.insert("key".into(), Value::String(key.to_string()));
        row.insert("body".into(), Value::String(body.to_string()));
        row.insert("updated_by".into(), updated_by.map_or(Value::Null, |u| Value::String(u.to_string())));
        row.insert("version".into(), Value::from(1));
        let mut row = new_row::<Prompt>(row)?;
        self.write(|tx| {
            tx.serialize_on("prompts.key", key)?;
            let latest: Option<Prompt> = tx.first_as(&latest(key))?;
            if let Some(l) = latest {
                let next = l.version.checked_add(1).ok_or_else(|| {
                    Error::conflict(format!("prompt {key:?} has reached the highest version number"))
                })?;
                row.insert("version".into(), Value::from(next));
            }
            tx.insert_as(&row)
        })
    }

    pub fn latest_prompt(&self, key: &str) -> Result<Option<Prompt>> {
        self.find_entity(&[("key", key.into())], &["version"], true)
    }

    pub fn prompt_version(&self, key: &str, version: i32) -> Result<Option<Prompt>> {
        self.find_entity(&[("key", key.into()), ("version", version.into())], &[], false)
    }

    /// Every version of a prompt, oldest first.
    pub fn list_prompt_versions(&self, key: &str) -> Result<Vec<Prompt>> {
        let all = super::Paging::first(crate::reads::MAX_LIST_LIMIT as u32);
        self.find_entities(&[("key", key.into())], &["version"], false, all)
    }
}
