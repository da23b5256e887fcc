//! api_keys: one encrypted secret per (owner, provider).
//!
//! The plaintext enters as `&[u8]` and leaves as a [`Secret`]; in between it exists only inside
//! `SecretKey::encrypt`/`decrypt`. What is stored (and what the outbox and PostgreSQL receive) is
//! the OpenPGP ciphertext that pgcrypto's `pgp_sym_decrypt` reads. No function here logs, and no
//! error built here carries the plaintext or the ciphertext.

use super::{changes, new_row, now, registry_table, Entity, TypedRows, TypedWrite};
use crate::bridge::Bridge;
use crate::error::{Error, Result};
use crate::schema::{Filter, Row};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;
use uuid::Uuid;
use zeroize::Zeroizing;

/// An API key's record without its secret: what lists and writes return.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApiKey {
    pub id: Uuid,
    pub owner_id: Uuid,
    pub provider: String,
    pub metadata: Value,
    /// When the secret was last replaced; `None` if never.
    pub rotated_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl Entity for ApiKey {
    const TABLE: &'static str = "api_keys";
}

/// A decrypted secret. Zeroized on drop; its `Debug` shows no content; no `Serialize`.
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    /// The plaintext bytes. Do not log them.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The plaintext as text, when it is UTF-8.
    pub fn expose_str(&self) -> Result<&str> {
        std::str::from_utf8(&self.0).map_err(|_| Error::Crypto("the secret is not UTF-8 text".into()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The key of (`owner_id`, `provider`), the table's unique pair.
fn by_owner_provider(owner_id: Uuid, provider: &str) -> Filter {
    Filter::new().eq("owner_id", owner_id.to_string()).eq("provider", provider).limit(1)
}

fn describe(owner_id: Uuid, provider: &str) -> String {
    format!("for owner {owner_id} and provider {:?}", crate::schema::truncate_for_message(provider))
}

impl Bridge {
    /// Encrypt `secret` and store it as the key of (`owner_id`, `provider`), replacing the
    /// existing one if any (same id and `created_at`; `rotated_at` and `updated_at` become now).
    /// `metadata` `None` keeps an existing key's metadata (`{}` for a new key).
    pub fn put_api_key(
        &self,
        owner_id: Uuid,
        provider: &str,
        secret: &[u8],
        metadata: Option<&Value>,
    ) -> Result<ApiKey> {
        let mut row = Row::new();
        row.insert("owner_id".into(), Value::String(owner_id.to_string()));
        row.insert("provider".into(), Value::String(provider.to_string()));
        if let Some(m) = metadata {
            row.insert("metadata".into(), m.clone());
        }
        // Validate the plain columns before spending time on encryption.
        changes::<ApiKey>(row.clone())?;
        row.insert("secret_ciphertext".into(), Value::String(self.encrypt_secret(secret)?));
        let new = new_row::<ApiKey>(row)?;
        let replace: &[&str] =
            if metadata.is_some() { &["secret_ciphertext", "metadata"] } else { &["secret_ciphertext"] };
        let t = now();
        let mut extra = Row::new();
        extra.insert("rotated_at".into(), Value::String(t.clone()));
        extra.insert("updated_at".into(), Value::String(t));
        self.upsert_entity(&["owner_id", "provider"], &new, replace, extra)
    }

    /// Replace the secret of an existing key (`Error::NotFound` if there is none);
    /// `rotated_at` and `updated_at` become now.
    pub fn rotate_api_key(&self, owner_id: Uuid, provider: &str, new_secret: &[u8]) -> Result<ApiKey> {
        let ciphertext = self.encrypt_secret(new_secret)?;
        let t = now();
        let mut set = Row::new();
        set.insert("secret_ciphertext".into(), Value::String(ciphertext));
        set.insert("rotated_at".into(), Value::String(t.clone()));
        set.insert("updated_at".into(), Value::String(t));
        let set = changes::<ApiKey>(set)?;
        self.write(|tx| {
            let old: ApiKey = tx
                .first_as(&by_owner_provider(owner_id, provider))?
                .ok_or_else(|| Error::not_found("api_keys", describe(owner_id, provider)))?;
            tx.update_as(&old.id.to_string(), &set)
        })
    }

    /// The decrypted secret of (`owner_id`, `provider`); `Error::NotFound` if there is no key,
    /// `Error::Crypto` if it cannot be decrypted with this bridge's key.
    pub fn api_key_secret(&self, owner_id: Uuid, provider: &str) -> Result<Secret> {
        let key = self.key()?;
        let t = registry_table("api_keys")?;
        let row = self.query_routed(t, by_owner_provider(owner_id, provider))?.into_iter().next();
        let row = row.ok_or_else(|| Error::not_found("api_keys", describe(owner_id, provider)))?;
        // The wire form of bytea: `\x` and hex.
        let ciphertext = row
            .get("secret_ciphertext")
            .and_then(Value::as_str)
            .and_then(|s| s.strip_prefix("\\x"))
            .and_then(|h| hex::decode(h).ok())
            .ok_or_else(|| Error::Internal("an api key row without a readable secret_ciphertext".into()))?;
        Ok(Secret(Zeroizing::new(key.decrypt(&ciphertext)?)))
    }

    /// The key record of (`owner_id`, `provider`), without the secret.
    pub fn get_api_key(&self, owner_id: Uuid, provider: &str) -> Result<Option<ApiKey>> {
        Ok(self.query_entities(by_owner_provider(owner_id, provider))?.into_iter().next())
    }

    /// An owner's keys, by provider, without their secrets.
    pub fn list_api_keys(&self, owner_id: Uuid) -> Result<Vec<ApiKey>> {
        self.query_entities(
            Filter::new().eq("owner_id", owner_id.to_string()).ascending("provider").ascending("id"),
        )
    }

    /// Delete the key of (`owner_id`, `provider`); `false` if there was none.
    pub fn delete_api_key(&self, owner_id: Uuid, provider: &str) -> Result<bool> {
        let t = ApiKey::table()?;
        self.write(|tx| {
            let existing: Option<ApiKey> = tx.first_as(&by_owner_provider(owner_id, provider))?;
            match existing {
                Some(k) => tx.delete(t, &k.id.to_string()),
                None => Ok(false),
            }
        })
    }

    /// The ciphertext of `secret` in the bytea wire form (`\x<hex>`).
    fn encrypt_secret(&self, secret: &[u8]) -> Result<String> {
        if secret.is_empty() {
            return Err(Error::invalid("api_keys.secret", "must not be empty"));
        }
        let ciphertext = self.key()?.encrypt(secret)?;
        Ok(format!("\\x{}", hex::encode(ciphertext)))
    }
}
