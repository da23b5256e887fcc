//! serpapi_results: one stored result per query, keyed by the query's hash.

use super::{new_row, to_wire, Entity};
use crate::bridge::Bridge;
use crate::error::Result;
use crate::schema::Row;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SerpApiResult {
    pub id: Uuid,
    pub keyword: String,
    pub params: Value,
    pub raw_json: Value,
    /// [`serpapi_hash`] of `keyword` and `params`.
    pub hash: String,
    pub fetched_at: String,
    pub job_id: Option<Uuid>,
}

impl Entity for SerpApiResult {
    const TABLE: &'static str = "serpapi_results";
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NewSerpApiResult {
    pub keyword: String,
    /// The query parameters (default `{}` when left out; `Some(Value::Null)` is refused); part of the hash.
    #[serde(default, deserialize_with = "crate::repo::json_given", skip_serializing_if = "Option::is_none")]
    pub params: Option<Value>,
    pub raw_json: Value,
    pub job_id: Option<Uuid>,
    /// Now when absent.
    pub fetched_at: Option<String>,
    /// Generated when absent (used only when the result is new).
    pub id: Option<Uuid>,
}

/// The identity of a SerpApi query: SHA-256 (lower-case hex) of the keyword, a NUL byte, and the
/// parameters as canonical JSON (object keys sorted at every level, no whitespace). Sorting is
/// done here, not left to serde_json's map order, so the hash cannot change if a dependency
/// turns on serde_json's `preserve_order` feature.
pub fn serpapi_hash(keyword: &str, params: &Value) -> String {
    let mut h = Sha256::new();
    h.update(keyword.as_bytes());
    // A keyword cannot hold NUL (PostgreSQL text refuses it), so this separator makes the
    // boundary between keyword and params unambiguous.
    h.update([0u8]);
    h.update(canonical_json(params).as_bytes());
    hex::encode(h.finalize())
}

fn canonical_json(v: &Value) -> String {
    match v {
        Value::Object(o) => {
            let mut entries: Vec<(&String, &Value)> = o.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            let body: Vec<String> = entries
                .into_iter()
                .map(|(k, v)| format!("{}:{}", Value::String(k.clone()), canonical_json(v)))
                .collect();
            format!("{{{}}}", body.join(","))
        }
        Value::Array(a) => format!("[{}]", a.iter().map(canonical_json).collect::<Vec<_>>().join(",")),
        other => other.to_string(),
    }
}

impl Bridge {
    /// Store a result under its hash; if that query is stored already, refresh its `raw_json`
    /// and `fetched_at` instead (one row per query).
    pub fn record_serpapi_result(&self, result: &NewSerpApiResult) -> Result<SerpApiResult> {
        let params = result.params.clone().unwrap_or_else(|| Value::Object(Default::default()));
        let hash = serpapi_hash(&result.keyword, &params);
        let mut row = to_wire::<SerpApiResult>(result)?;
        row.insert("hash".into(), Value::String(hash.clone()));
        let new = new_row::<SerpApiResult>(row)?;
        // `new` holds fetched_at = now when the caller gave none.
        let replace = ["raw_json", "fetched_at"];
        self.upsert_entity(&["hash"], &new, &replace, Row::new())
    }

    pub fn get_serpapi_result_by_hash(&self, hash: &str) -> Result<Option<SerpApiResult>> {
        self.find_entity(&[("hash", hash.into())], &[], false)
    }

    pub fn get_serpapi_result(&self, id: Uuid) -> Result<Option<SerpApiResult>> {
        self.get_entity(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hash_ignores_key_order_and_matches_the_formula() {
        let a = json!({"gl": "us", "hl": "en", "nested": {"z": 1, "a": [ {"y": 2, "b": 3} ]}});
        let b = json!({"nested": {"a": [ {"b": 3, "y": 2} ], "z": 1}, "hl": "en", "gl": "us"});
        assert_eq!(serpapi_hash("coffee", &a), serpapi_hash("coffee", &b));
        assert_ne!(serpapi_hash("coffee", &a), serpapi_hash("tea", &a));
        let expected = hex::encode(Sha256::digest(
            b"coffee\0{\"gl\":\"us\",\"hl\":\"en\",\"nested\":{\"a\":[{\"b\":3,\"y\":2}],\"z\":1}}",
        ));
        assert_eq!(serpapi_hash("coffee", &a), expected);
        assert_eq!(canonical_json(&json!({"q": "a\"b"})), r#"{"q":"a\"b"}"#);
    }
}
