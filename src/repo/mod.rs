//! The typed repository API: one `impl Bridge` block per entity group, over the registry-driven
//! row operations of `store::sqlite`.
//!
//! Conventions shared by every entity file (and implemented here once):
//!
//! - Rows cross the API as typed structs (serde Serialize + Deserialize). Ids are `uuid::Uuid`;
//!   timestamps are `String`s in the canonical wire form `YYYY-MM-DDTHH:MM:SS.ffffffZ` (inputs may
//!   use any RFC 3339 offset and are normalised); numerics are decimal `String`s; jsonb is
//!   `serde_json::Value`; vectors are `Vec<f32>`; value sets are enums (see [`value_set!`]).
//! - Every input goes typed struct → wire object ([`to_wire`]) → `schema::validate_row`, so it is
//!   checked by the same code as the generic API; a bad input is `Error::InvalidArgument` naming
//!   `table.column`, and it is refused before the write transaction starts.
//! - Ids and timestamps left out (`None`) are generated; `None` in an input struct means "absent",
//!   never "set to NULL".
//! - Every write runs in one `Bridge::write` transaction, so a read-check-write sequence (a state
//!   transition, a version number, a claim) is atomic across threads and processes: in SQLite the
//!   transaction starts with `BEGIN IMMEDIATE`, holding SQLite's single write lock; while
//!   PostgreSQL is the primary, what the transaction reads is row-locked (`FOR NO KEY UPDATE`),
//!   and the state checks and upserts PostgreSQL can make in one statement are made so
//!   (`Bridge::write_one_statement`).

mod api_keys;
mod audit;
mod caches;
mod embeddings;
mod generated_text;
mod jobs;
mod pages;
mod prompts;
mod serpapi;
mod users;

pub use api_keys::{ApiKey, Secret};
pub use audit::{AuditEvent, NewAuditEvent};
pub use caches::{Cache, CacheEntry};
pub use embeddings::{Embedding, NewEmbedding};
pub use generated_text::{
    GeneratedText, GeneratedTextRevision, GeneratedTextStatus, NewGeneratedText, SectionType,
};
pub use jobs::{Job, JobLog, JobPriority, JobStatus, LogLevel, NewJob, NewJobLog};
pub use pages::{Heading, HeadingLevel, NewHeading, NewPage, Page};
pub use prompts::Prompt;
pub use serpapi::{serpapi_hash, NewSerpApiResult, SerpApiResult};
pub use users::{NewUser, User, UserChanges, UserRole};

use crate::bridge::Bridge;
use crate::error::{Error, Result};
use crate::reads::ReadSpec;
use crate::reads::MAX_LIST_LIMIT;
use crate::schema::{self, validate_row, ColType, Filter, Row, RowMode, Table};
use crate::store::sqlite::Rows;
use crate::store::write_tx::WriteTx;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;

/// A typed row of one registry table.
pub(crate) trait Entity: DeserializeOwned {
    const TABLE: &'static str;

    fn table() -> Result<&'static Table> {
        registry_table(Self::TABLE)
    }
}

pub(crate) fn registry_table(name: &str) -> Result<&'static Table> {
    schema::table(name).ok_or_else(|| Error::Internal(format!("the registry has no table {name}")))
}

/// A typed input of `E`'s table as a wire object, without its absent (null) fields, so that an
/// insert fills them with defaults, new ids and timestamps. A null for a NOT NULL jsonb column is
/// kept, so validation refuses it as the generic API does: the input's optional jsonb fields
/// leave out what the caller left out ([`json_given`]), and a JSON `null` was given.
pub(crate) fn to_wire<E: Entity>(input: &impl Serialize) -> Result<Row> {
    let table = E::table()?;
    let given_null = |name: &str| table.column(name).is_some_and(|c| c.ty == ColType::Jsonb && !c.nullable);
    match serde_json::to_value(input) {
        Ok(Value::Object(m)) => Ok(m.into_iter().filter(|(k, v)| !v.is_null() || given_null(k)).collect()),
        Ok(_) => Err(Error::Internal("a typed input did not serialize to a JSON object".into())),
        Err(e) => Err(Error::Internal(format!("cannot serialize a typed input: {e}"))),
    }
}

/// The deserializer of a typed input's optional jsonb field (with `#[serde(default)]` and
/// `skip_serializing_if = "Option::is_none"`): a field left out is `None` (the column's default
/// applies), a JSON `null` is `Some(Value::Null)`, which the NOT NULL column refuses. serde's own
/// `Option` reads `null` as `None`, which silently became the default (`{}`).
pub(crate) fn json_given<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// Validate a whole new row of `E`'s table (defaults, id and timestamps filled in).
pub(crate) fn new_row<E: Entity>(row: Row) -> Result<Row> {
    validate_row(E::table()?, &Value::Object(row), RowMode::Insert)
}

/// Validate some columns of an existing row of `E`'s table.
pub(crate) fn changes<E: Entity>(row: Row) -> Result<Row> {
    validate_row(E::table()?, &Value::Object(row), RowMode::Patch)
}

/// A stored row as its typed struct (a struct may leave columns out: api keys leave the secret).
pub(crate) fn decode<E: DeserializeOwned>(table: &Table, row: Row) -> Result<E> {
    serde_json::from_value(Value::Object(row))
        .map_err(|e| Error::Internal(format!("a stored {} row does not fit its type: {e}", table.name)))
}

/// The current time in the canonical form.
pub(crate) fn now() -> String {
    schema::now_timestamp()
}

/// A state change that the entity's workflow does not allow, as a conflict that says what is.
pub(crate) fn transition<S: Copy + PartialEq + fmt::Display>(
    entity: &str,
    id: uuid::Uuid,
    from: S,
    to: S,
    allowed: &[S],
) -> Result<()> {
    if allowed.contains(&to) {
        return Ok(());
    }
    let next = if allowed.is_empty() {
        "none: it is final".to_string()
    } else {
        allowed.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    };
    Err(Error::conflict(format!("{entity} {id} is {from} and cannot become {to} (allowed next: {next})")))
}

/// Typed reads for a plain connection or a write transaction.
pub(crate) trait TypedRows: Rows {
    fn get_as<E: Entity>(&self, key: &str) -> Result<Option<E>> {
        let t = E::table()?;
        self.get_row(t, key)?.map(|r| decode(t, r)).transpose()
    }

    /// Like [`TypedRows::get_as`]; a missing row is `Error::NotFound`.
    fn require<E: Entity>(&self, key: &str) -> Result<E> {
        self.get_as(key)?.ok_or_else(|| Error::not_found(E::TABLE, key))
    }

    /// Rows of `E`'s table matching `filter`.
    fn query_as<E: Entity>(&self, filter: &Filter) -> Result<Vec<E>> {
        let t = E::table()?;
        self.query_rows(t, filter)?.into_iter().map(|r| decode(t, r)).collect()
    }

    /// The first row matching `filter` (which should order and limit to 1).
    fn first_as<E: Entity>(&self, filter: &Filter) -> Result<Option<E>> {
        Ok(self.query_as(filter)?.into_iter().next())
    }
}

impl<R: Rows + ?Sized> TypedRows for R {}

impl Bridge {
    /// Insert `new` (validated) unless a row with the same values in the `conflict` columns (the
    /// key or a unique constraint of the registry) exists; if one does, set its `replace`
    /// columns to `new`'s values plus the `extra` changes instead, keeping its key and other
    /// columns. Returns the row as stored. One write: the lookup and the write are atomic.
    ///
    /// While PostgreSQL is the primary this is one `INSERT … ON CONFLICT DO UPDATE`
    /// ([`Bridge::write_one_statement`]), so two writers of the same new key do not both insert
    /// (the second would fail on the unique constraint after a lookup that found nothing).
    pub(crate) fn upsert_row(
        &self,
        table: &'static Table,
        conflict: &'static [&'static str],
        new: &Row,
        replace: &[&str],
        extra: Row,
    ) -> Result<Row> {
        let mut set: Row =
            replace.iter().filter_map(|c| Some((c.to_string(), new.get(*c)?.clone()))).collect();
        set.extend(extra);
        let set = validate_row(table, &Value::Object(set), RowMode::Patch)?;
        // A NULL never conflicts in PostgreSQL's unique index, while the ordinary way's lookup
        // matches it (`IS NULL`): such a row keeps the ordinary way's meaning.
        let one_statement = conflict.iter().all(|c| new.get(*c).is_some_and(|v| !v.is_null()));
        self.write_one_statement(
            |tx| if one_statement { tx.upsert(table, new, conflict, &set).map(Some) } else { Ok(None) },
            |tx| {
                let existing = conflict
                    .iter()
                    .fold(Filter::new(), |f, c| f.eq(c, new.get(*c).cloned().unwrap_or(Value::Null)))
                    .limit(1);
                match tx.query_rows(table, &existing)?.into_iter().next() {
                    None => tx.insert(table, new),
                    Some(old) => tx.update(table, table.key_of(&old)?, &set),
                }
            },
        )
    }

    /// [`Bridge::upsert_row`] for `E`'s table.
    pub(crate) fn upsert_entity<E: Entity>(
        &self,
        conflict: &'static [&'static str],
        new: &Row,
        replace: &[&str],
        extra: Row,
    ) -> Result<E> {
        let t = E::table()?;
        decode(t, self.upsert_row(t, conflict, new, replace, extra)?)
    }

    /// Set `changes` (validated) on `E`'s row under `key` if it meets `condition`, else run
    /// `ordinary` (which finds out why not and says so, or makes the change if the row meets the
    /// condition by then): [`Bridge::write_one_statement`] for a state check and its update.
    pub(crate) fn update_entity_where<E: Entity>(
        &self,
        key: &str,
        changes: &Row,
        condition: &Filter,
        ordinary: impl FnOnce(&mut WriteTx<'_>) -> Result<E>,
    ) -> Result<E> {
        let t = E::table()?;
        self.write_one_statement(
            |tx| tx.update_where(t, key, changes, condition)?.map(|row| decode(t, row)).transpose(),
            ordinary,
        )
    }
}

/// Typed writes (outbox recorded by `WriteTx`); rows must be validated already.
pub(crate) trait TypedWrite {
    fn insert_as<E: Entity>(&mut self, row: &Row) -> Result<E>;
    fn update_as<E: Entity>(&mut self, key: &str, changes: &Row) -> Result<E>;
}

impl TypedWrite for WriteTx<'_> {
    fn insert_as<E: Entity>(&mut self, row: &Row) -> Result<E> {
        let t = E::table()?;
        let stored = self.insert(t, row)?;
        decode(t, stored)
    }

    fn update_as<E: Entity>(&mut self, key: &str, changes: &Row) -> Result<E> {
        let t = E::table()?;
        let stored = self.update(t, key, changes)?;
        decode(t, stored)
    }
}

impl Bridge {
    /// One row by id.
    pub(crate) fn get_entity<E: Entity>(&self, id: uuid::Uuid) -> Result<Option<E>> {
        let t = E::table()?;
        self.routed_read(t, ReadSpec::Key(id.to_string()))?
            .into_iter()
            .next()
            .map(|r| decode(t, r))
            .transpose()
    }

    /// Rows of `E`'s table where every `(column, wire value)` is equal, ordered by `order` then
    /// the key, paged: served from the source the read flags name (with read-your-writes).
    pub(crate) fn find_entities<E: Entity>(
        &self,
        filters: &[(&'static str, Value)],
        order: &[&'static str],
        desc: bool,
        page: Paging,
    ) -> Result<Vec<E>> {
        let t = E::table()?;
        page.sql()?; // the same bounds as every list
        let spec = ReadSpec::List {
            filters: filters.to_vec(),
            order_by: order.to_vec(),
            desc,
            limit: i64::from(page.limit),
            offset: page.offset as i64,
        };
        self.routed_read(t, spec)?.into_iter().map(|r| decode(t, r)).collect()
    }

    /// The first row [`Bridge::find_entities`] would return.
    pub(crate) fn find_entity<E: Entity>(
        &self,
        filters: &[(&'static str, Value)],
        order: &[&'static str],
        desc: bool,
    ) -> Result<Option<E>> {
        Ok(self.find_entities(filters, order, desc, Paging::first(1))?.into_iter().next())
    }

    /// Rows of `E`'s table matching `filter`, served from the source the read flags name, like
    /// [`Bridge::find_entities`].
    pub(crate) fn query_entities<E: Entity>(&self, filter: Filter) -> Result<Vec<E>> {
        let t = E::table()?;
        self.query_routed(t, filter)?.into_iter().map(|r| decode(t, r)).collect()
    }

    /// [`Bridge::query_entities`] as wire rows.
    pub(crate) fn query_routed(&self, t: &'static Table, filter: Filter) -> Result<Vec<Row>> {
        self.routed_read(t, ReadSpec::Filter(filter))
    }

    /// Validate a typed input as a new row and insert it in its own transaction.
    pub(crate) fn create_entity<E: Entity>(&self, input: &impl Serialize) -> Result<E> {
        let row = new_row::<E>(to_wire::<E>(input)?)?;
        self.write_insert(|tx| tx.insert_as(&row))
    }
}

/// A page of a list: at most `limit` rows after skipping `offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Paging {
    pub limit: u32,
    pub offset: u64,
}

impl Default for Paging {
    fn default() -> Self {
        Paging { limit: 100, offset: 0 }
    }
}

impl Paging {
    pub fn new(limit: u32, offset: u64) -> Paging {
        Paging { limit, offset }
    }

    /// The first `limit` rows.
    pub fn first(limit: u32) -> Paging {
        Paging { limit, offset: 0 }
    }

    /// ` LIMIT n OFFSET m` (checked integers, never caller text).
    pub(crate) fn sql(&self) -> Result<String> {
        if i64::from(self.limit) > MAX_LIST_LIMIT {
            return Err(Error::invalid("limit", format!("must be at most {MAX_LIST_LIMIT}")));
        }
        let offset = i64::try_from(self.offset)
            .map_err(|_| Error::invalid("offset", format!("must be at most {}", i64::MAX)))?;
        Ok(format!(" LIMIT {} OFFSET {offset}", self.limit))
    }
}

/// An enum over a column's value set (the registry's `allowed` list), serialized as its text.
macro_rules! value_set {
    (
        $(#[$meta:meta])*
        $name:ident for $table:literal . $column:literal { $($variant:ident = $text:literal),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
        pub enum $name {
            $(#[serde(rename = $text)] $variant),+
        }

        /// Read through `FromStr`, so a value outside the set is refused as `validate_row` refuses
        /// it, naming `table.column` (serde's own message names neither).
        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let text = <String as serde::Deserialize>::deserialize(d)?;
                text.parse().map_err(|e: $crate::Error| <D::Error as serde::de::Error>::custom(e))
            }
        }

        impl $name {
            /// Every value, in the registry's order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// The `table.column` this value set belongs to.
            pub const FIELD: &'static str = concat!($table, ".", $column);

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::Error;

            fn from_str(s: &str) -> $crate::Result<Self> {
                $name::ALL.iter().copied().find(|v| v.as_str() == s).ok_or_else(|| {
                    $crate::Error::invalid(
                        $name::FIELD,
                        format!(
                            "{:?} is not one of {}",
                            $crate::schema::truncate_for_message(s),
                            $name::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", ")
                        ),
                    )
                })
            }
        }
    };
}
pub(crate) use value_set;

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_matches_registry(field: &str, values: &[&str]) {
        let (t, c) = field.split_once('.').unwrap();
        let allowed = schema::table(t).unwrap().column(c).unwrap().allowed.unwrap();
        assert_eq!(allowed, values, "{field}: enum and registry differ");
    }

    fn names<T: Copy>(all: &[T], f: impl Fn(T) -> &'static str) -> Vec<&'static str> {
        all.iter().map(|v| f(*v)).collect()
    }

    #[test]
    fn value_sets_match_the_registry() {
        assert_matches_registry(UserRole::FIELD, &names(UserRole::ALL, UserRole::as_str));
        assert_matches_registry(JobStatus::FIELD, &names(JobStatus::ALL, JobStatus::as_str));
        assert_matches_registry(JobPriority::FIELD, &names(JobPriority::ALL, JobPriority::as_str));
        assert_matches_registry(LogLevel::FIELD, &names(LogLevel::ALL, LogLevel::as_str));
        assert_matches_registry(HeadingLevel::FIELD, &names(HeadingLevel::ALL, HeadingLevel::as_str));
        assert_matches_registry(SectionType::FIELD, &names(SectionType::ALL, SectionType::as_str));
        assert_matches_registry(
            GeneratedTextStatus::FIELD,
            &names(GeneratedTextStatus::ALL, GeneratedTextStatus::as_str),
        );
    }

    #[test]
    fn value_sets_parse_and_serialize_as_text() {
        assert_eq!("urgent".parse::<JobPriority>().unwrap(), JobPriority::Urgent);
        let err = "done".parse::<JobStatus>().unwrap_err();
        assert!(err.to_string().contains("jobs.status"), "{err}");
        assert_eq!(serde_json::to_value(SectionType::MetaDescription).unwrap(), "meta_description");
        assert_eq!(serde_json::from_value::<SectionType>("faq".into()).unwrap(), SectionType::Faq);
        let err = serde_json::from_value::<JobPriority>("soon".into()).unwrap_err();
        assert!(err.to_string().contains("jobs.priority"), "{err}");
    }

    #[test]
    fn paging_is_bounded() {
        assert_eq!(Paging::new(10, 20).sql().unwrap(), " LIMIT 10 OFFSET 20");
        assert!(Paging::first(u32::MAX).sql().is_err());
        assert!(Paging::new(1, u64::MAX).sql().is_err());
    }

    #[test]
    fn transitions_name_both_states() {
        let id = uuid::Uuid::nil();
        let e = transition("jobs", id, JobStatus::Succeeded, JobStatus::Running, &[]).unwrap_err();
        assert!(matches!(e, Error::Conflict(_)));
        assert!(e.to_string().contains("succeeded") && e.to_string().contains("running"), "{e}");
    }
}
