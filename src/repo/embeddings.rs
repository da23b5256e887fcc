//! embeddings: one vector per (text_hash, model).

use super::{new_row, to_wire, Entity};
use crate::bridge::Bridge;
use crate::error::Result;
use crate::schema::Row;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Embedding {
    pub id: Uuid,
    pub text_hash: String,
    pub vector: Vec<f32>,
    pub model: String,
    pub meta: Value,
    pub created_at: String,
}

impl Entity for Embedding {
    const TABLE: &'static str = "embeddings";
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NewEmbedding {
    pub text_hash: String,
    pub model: String,
    /// 1 to 16,000 finite components.
    pub vector: Vec<f32>,
    /// Default `{}` when left out; `Some(Value::Null)` is refused.
    #[serde(default, deserialize_with = "crate::repo::json_given", skip_serializing_if = "Option::is_none")]
    pub meta: Option<Value>,
    /// Generated when absent (used only when the embedding is new).
    pub id: Option<Uuid>,
}

impl Bridge {
    /// Store an embedding, deduplicated by (text_hash, model): when one exists, its vector (and
    /// meta, if given) are replaced and it keeps its id and `created_at`.
    pub fn upsert_embedding(&self, embedding: &NewEmbedding) -> Result<Embedding> {
        let new = new_row::<Embedding>(to_wire::<Embedding>(embedding)?)?;
        let replace: &[&str] = if embedding.meta.is_some() { &["vector", "meta"] } else { &["vector"] };
        self.upsert_entity(&["text_hash", "model"], &new, replace, Row::new())
    }

    pub fn get_embedding(&self, id: Uuid) -> Result<Option<Embedding>> {
        self.get_entity(id)
    }

    pub fn get_embedding_by_hash(&self, text_hash: &str, model: &str) -> Result<Option<Embedding>> {
        self.find_entity(&[("text_hash", text_hash.into()), ("model", model.into())], &[], false)
    }
}
