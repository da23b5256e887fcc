//! The typed repository operations by name (`"jobs.submit"`, `"users.get"`, ...), with a JSON
//! object of arguments and a JSON result: [`Bridge::call`]. Every front end that speaks JSON
//! runs them through here (the C ABI's `dw_call`, the C++ binding's `call`, the Python binding
//! through `dw_call`), so an operation behaves the same in each.
//!
//! Each operation's arguments and result are described once, for callers: in the documentation
//! of `dw_call` (src/ffi/call.rs, and so include/dualwrite.h, which ships with the library). A
//! test below checks that the header's table lists every operation here, and a public `Bridge`
//! method added to src/repo/ gets an operation.
//!
//! Secrets: `api_keys.put`/`rotate` read the secret straight from the argument text into memory
//! that is wiped when dropped, and no error message quotes an argument's value.

use crate::bridge::Bridge;
use crate::error::{serde_message, Error, Result};
use crate::flags::FlagChange;
use crate::repo::{
    Cache, GeneratedTextRevision, GeneratedTextStatus, JobStatus, NewAuditEvent, NewEmbedding,
    NewGeneratedText, NewHeading, NewJob, NewJobLog, NewPage, NewSerpApiResult, NewUser, Paging, UserChanges,
};
use crate::schema::truncate_for_message;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{json, Value};
use std::time::Duration;
use uuid::Uuid;
use zeroize::Zeroizing;

impl Bridge {
    /// Run the typed repository operation `operation` with the JSON object `args_json` and
    /// return the result as JSON text (the operations and their arguments: `dw_call` in
    /// include/dualwrite.h). For front ends that speak JSON (the C ABI's `dw_call`, the C++
    /// binding); Rust code calls the typed methods instead. An unknown operation or argument is
    /// `Error::InvalidArgument`; a lookup that finds nothing is `Error::NotFound`.
    pub fn call(&self, operation: &str, args_json: &str) -> Result<String> {
        match OPERATIONS.iter().find(|(name, _)| *name == operation) {
            Some((_, handler)) => handler(self, args_json),
            None => Err(Error::invalid(
                "operation",
                format!(
                    "unknown operation {:?}; call \"operations\" for the list",
                    truncate_for_message(operation)
                ),
            )),
        }
    }
}

type Handler = fn(&Bridge, &str) -> Result<String>;

/// Every operation: its name and how it runs. Keep in step with the table in `dw_call`'s
/// documentation (src/ffi/call.rs); a test checks the header lists every name.
static OPERATIONS: &[(&str, Handler)] = &[
    ("operations", |_, a| {
        args::<NoArgs>(a)?;
        reply(OPERATIONS.iter().map(|(name, _)| *name).collect::<Vec<_>>())
    }),
    // users
    ("users.create", |b, a| reply(b.create_user(&args::<NewUser>(a)?)?)),
    ("users.get", |b, a| found(b.get_user(args::<Id>(a)?.id)?, "user", a)),
    ("users.get_by_email", |b, a| found(b.get_user_by_email(&args::<Email>(a)?.email)?, "user", a)),
    ("users.update", |b, a| {
        let x = args::<WithId<UserChanges>>(a)?;
        reply(b.update_user(x.id, &x.rest)?)
    }),
    ("users.disable", |b, a| reply(b.disable_user(args::<Id>(a)?.id)?)),
    ("users.list", |b, a| reply(b.list_users(args::<PageArgs>(a)?.paging())?)),
    // api_keys
    ("api_keys.put", |b, a| {
        let x: SecretArgs = secret_args(a)?;
        reply(b.put_api_key(x.owner_id, &x.provider, x.secret()?, x.metadata.as_ref())?)
    }),
    ("api_keys.rotate", |b, a| {
        let x: SecretArgs = secret_args(a)?;
        if x.metadata.is_some() {
            return Err(Error::invalid("args_json.metadata", "rotate keeps the metadata; use api_keys.put"));
        }
        reply(b.rotate_api_key(x.owner_id, &x.provider, x.secret()?)?)
    }),
    ("api_keys.secret", |b, a| {
        let x = args::<OwnerProvider>(a)?;
        let secret = b.api_key_secret(x.owner_id, &x.provider)?;
        Ok(secret_reply(secret.expose()))
    }),
    ("api_keys.get", |b, a| {
        let x = args::<OwnerProvider>(a)?;
        found(b.get_api_key(x.owner_id, &x.provider)?, "api key", a)
    }),
    ("api_keys.list", |b, a| reply(b.list_api_keys(args::<Owner>(a)?.owner_id)?)),
    ("api_keys.delete", |b, a| {
        let x = args::<OwnerProvider>(a)?;
        reply(json!({"deleted": b.delete_api_key(x.owner_id, &x.provider)?}))
    }),
    // jobs and job_logs
    ("jobs.submit", |b, a| reply(b.submit_job(&args::<NewJob>(a)?)?)),
    ("jobs.get", |b, a| found(b.get_job(args::<Id>(a)?.id)?, "job", a)),
    ("jobs.list_by_owner", |b, a| {
        let x = args::<WithPage<Owner>>(a)?;
        reply(b.list_jobs_by_owner(x.rest.owner_id, x.page.paging())?)
    }),
    ("jobs.list_by_status", |b, a| {
        let x = args::<WithPage<Status<JobStatus>>>(a)?;
        reply(b.list_jobs_by_status(x.rest.status, x.page.paging())?)
    }),
    ("jobs.claim_next", |b, a| {
        args::<NoArgs>(a)?;
        reply(b.claim_next_job()?)
    }),
    ("jobs.set_status", |b, a| {
        let x = args::<WithId<Status<JobStatus>>>(a)?;
        reply(b.set_job_status(x.id, x.rest.status)?)
    }),
    ("jobs.set_progress", |b, a| {
        let x = args::<Progress>(a)?;
        let progress = match &x.progress {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return Err(Error::invalid("jobs.progress", "must be a decimal string or a number")),
        };
        reply(b.set_job_progress(x.id, &progress)?)
    }),
    ("jobs.append_log", |b, a| reply(b.append_job_log(&args::<NewJobLog>(a)?)?)),
    ("jobs.list_logs", |b, a| {
        let x = args::<WithPage<JobRef>>(a)?;
        reply(b.list_job_logs(x.rest.job_id, x.page.paging())?)
    }),
    ("jobs.list_logs_after", |b, a| {
        let x = args::<LogsAfter>(a)?;
        reply(b.list_job_logs_after(x.job_id, x.after, x.limit.unwrap_or(DEFAULT_LIMIT))?)
    }),
    // pages and headings
    ("pages.add", |b, a| reply(b.add_page(&args::<NewPage>(a)?)?)),
    ("pages.get", |b, a| found(b.get_page(args::<Id>(a)?.id)?, "page", a)),
    ("pages.add_headings", |b, a| {
        let x = args::<Headings>(a)?;
        reply(b.add_headings(x.page_id, &x.headings)?)
    }),
    ("pages.list_headings", |b, a| reply(b.list_headings(args::<PageRef>(a)?.page_id)?)),
    // serpapi_results
    ("serpapi.record", |b, a| reply(b.record_serpapi_result(&args::<NewSerpApiResult>(a)?)?)),
    ("serpapi.get", |b, a| found(b.get_serpapi_result(args::<Id>(a)?.id)?, "serpapi result", a)),
    ("serpapi.get_by_hash", |b, a| {
        found(b.get_serpapi_result_by_hash(&args::<Hash>(a)?.hash)?, "serpapi result", a)
    }),
    ("serpapi.hash", |_, a| {
        let x = args::<Query>(a)?;
        let params = x.params.unwrap_or_else(|| json!({}));
        reply(json!({"hash": crate::repo::serpapi_hash(&x.keyword, &params)}))
    }),
    // embeddings
    ("embeddings.upsert", |b, a| reply(b.upsert_embedding(&args::<NewEmbedding>(a)?)?)),
    ("embeddings.get", |b, a| found(b.get_embedding(args::<Id>(a)?.id)?, "embedding", a)),
    ("embeddings.get_by_hash", |b, a| {
        let x = args::<TextHash>(a)?;
        found(b.get_embedding_by_hash(&x.text_hash, &x.model)?, "embedding", a)
    }),
    // generated_text
    ("generated_text.create", |b, a| reply(b.create_generated_text(&args::<NewGeneratedText>(a)?)?)),
    ("generated_text.get", |b, a| found(b.get_generated_text(args::<Id>(a)?.id)?, "generated text", a)),
    ("generated_text.add_version", |b, a| {
        let x = args::<Revision>(a)?;
        reply(b.add_generated_text_version(x.of, &x.rest)?)
    }),
    ("generated_text.set_status", |b, a| {
        let x = args::<WithId<Status<GeneratedTextStatus>>>(a)?;
        reply(b.set_generated_text_status(x.id, x.rest.status)?)
    }),
    ("generated_text.list_by_heading", |b, a| {
        let x = args::<WithPage<HeadingRef>>(a)?;
        reply(b.list_generated_text_by_heading(x.rest.heading_id, x.page.paging())?)
    }),
    ("generated_text.list_by_owner", |b, a| {
        let x = args::<WithPage<Owner>>(a)?;
        reply(b.list_generated_text_by_owner(x.rest.owner_id, x.page.paging())?)
    }),
    // prompts
    ("prompts.publish", |b, a| {
        let x = args::<Publish>(a)?;
        reply(b.publish_prompt(&x.key, &x.body, x.updated_by)?)
    }),
    ("prompts.latest", |b, a| found(b.latest_prompt(&args::<Key>(a)?.key)?, "prompt", a)),
    ("prompts.version", |b, a| {
        let x = args::<PromptVersion>(a)?;
        found(b.prompt_version(&x.key, x.version)?, "prompt version", a)
    }),
    ("prompts.list_versions", |b, a| reply(b.list_prompt_versions(&args::<Key>(a)?.key)?)),
    // text_analytics_cache and wordstat_cache
    ("cache.get", |b, a| {
        let x = args::<CacheKey>(a)?;
        found(b.cache_get(x.cache, &x.key)?, "cache entry", a)
    }),
    ("cache.put", |b, a| {
        let x = args::<CachePut>(a)?;
        reply(b.cache_put(x.cache, &x.key, &x.value, Duration::from_secs(x.ttl_seconds))?)
    }),
    ("cache.delete", |b, a| {
        let x = args::<CacheKey>(a)?;
        reply(json!({"deleted": b.cache_delete(x.cache, &x.key)?}))
    }),
    ("cache.purge_expired", |b, a| reply(json!({"purged": b.purge_expired(args::<CacheName>(a)?.cache)?}))),
    // audit_events
    ("audit.record", |b, a| reply(b.record_audit_event(&args::<NewAuditEvent>(a)?)?)),
    ("audit.list_for_entity", |b, a| {
        let x = args::<WithPage<EntityRef>>(a)?;
        reply(b.list_audit_events_for_entity(&x.rest.entity, x.rest.entity_id, x.page.paging())?)
    }),
    ("audit.list_by_actor", |b, a| {
        let x = args::<WithPage<Actor>>(a)?;
        reply(b.list_audit_events_by_actor(x.rest.actor_id, x.page.paging())?)
    }),
    // flags (the migration phase)
    ("flags.get", |b, a| {
        args::<NoArgs>(a)?;
        reply(&*b.flags())
    }),
    ("flags.set", |b, a| {
        let x = args::<SetFlag>(a)?;
        let change = FlagChange::parse(&x.name, &x.value)?;
        reply(b.set_flag(change, &x.who, &x.why, x.force)?)
    }),
    ("flags.rollback", |b, a| {
        let x = args::<Rollback>(a)?;
        reply(b.rollback_to_sqlite(&x.who, &x.why, x.force)?)
    }),
];

// ----- arguments -----

/// Parse `text` as the arguments `T`, refusing names `T` does not have. `T` is checked by
/// serializing it back: an argument it does not know is missing from that output. (serde's
/// `deny_unknown_fields` cannot be used: the repo's input types are shared with Rust callers,
/// and it does not work through `flatten`.)
fn args<T: DeserializeOwned + Serialize>(text: &str) -> Result<T> {
    let given: Value = serde_json::from_str(text)
        .map_err(|e| Error::invalid("args_json", format!("is not valid JSON: {e}")))?;
    let Value::Object(given_fields) = &given else {
        return Err(Error::invalid("args_json", "must be a JSON object"));
    };
    let parsed: T = T::deserialize(&given).map_err(|e| Error::invalid("args_json", serde_message(&e)))?;
    let known = serde_json::to_value(&parsed)
        .map_err(|e| Error::Internal(format!("cannot serialize parsed arguments: {e}")))?;
    let known = known.as_object().cloned().unwrap_or_default();
    if let Some(unknown) = given_fields.keys().find(|k| !known.contains_key(*k)) {
        let mut names: Vec<&str> = known.keys().map(String::as_str).collect();
        names.sort_unstable();
        return Err(Error::invalid(
            format!("args_json.{}", truncate_for_message(unknown)),
            format!(
                "unknown argument; expected {}",
                if names.is_empty() { "none".to_string() } else { names.join(", ") }
            ),
        ));
    }
    Ok(parsed)
}

const DEFAULT_LIMIT: u32 = 100;

#[derive(Serialize, Deserialize)]
struct NoArgs {}

#[derive(Serialize, Deserialize)]
struct PageArgs {
    #[serde(default = "default_limit")]
    limit: u32,
    #[serde(default)]
    offset: u64,
}

fn default_limit() -> u32 {
    DEFAULT_LIMIT
}

impl PageArgs {
    fn paging(&self) -> Paging {
        Paging::new(self.limit, self.offset)
    }
}

/// `T`'s arguments plus `limit` and `offset`.
#[derive(Serialize, Deserialize)]
struct WithPage<T> {
    #[serde(flatten)]
    rest: T,
    #[serde(flatten)]
    page: PageArgs,
}

/// `T`'s arguments plus the `id` of the row they apply to.
#[derive(Serialize, Deserialize)]
struct WithId<T> {
    id: Uuid,
    #[serde(flatten)]
    rest: T,
}

#[derive(Serialize, Deserialize)]
struct Id {
    id: Uuid,
}

#[derive(Serialize, Deserialize)]
struct Email {
    email: String,
}

#[derive(Serialize, Deserialize)]
struct Owner {
    owner_id: Uuid,
}

#[derive(Serialize, Deserialize)]
struct Actor {
    actor_id: Uuid,
}

#[derive(Serialize, Deserialize)]
struct OwnerProvider {
    owner_id: Uuid,
    provider: String,
}

#[derive(Serialize, Deserialize)]
struct Status<S> {
    status: S,
}

#[derive(Serialize, Deserialize)]
struct Progress {
    id: Uuid,
    progress: Value,
}

#[derive(Serialize, Deserialize)]
struct JobRef {
    job_id: Uuid,
}

#[derive(Serialize, Deserialize)]
struct LogsAfter {
    job_id: Uuid,
    after: Option<Uuid>,
    limit: Option<u32>,
}

#[derive(Serialize, Deserialize)]
struct PageRef {
    page_id: Uuid,
}

#[derive(Serialize, Deserialize)]
struct Headings {
    page_id: Uuid,
    headings: Vec<NewHeading>,
}

#[derive(Serialize, Deserialize)]
struct HeadingRef {
    heading_id: Uuid,
}

#[derive(Serialize, Deserialize)]
struct Hash {
    hash: String,
}

#[derive(Serialize, Deserialize)]
struct Query {
    keyword: String,
    params: Option<Value>,
}

#[derive(Serialize, Deserialize)]
struct TextHash {
    text_hash: String,
    model: String,
}

#[derive(Serialize, Deserialize)]
struct Revision {
    of: Uuid,
    #[serde(flatten)]
    rest: GeneratedTextRevision,
}

#[derive(Serialize, Deserialize)]
struct Publish {
    key: String,
    body: String,
    updated_by: Option<Uuid>,
}

#[derive(Serialize, Deserialize)]
struct Key {
    key: String,
}

#[derive(Serialize, Deserialize)]
struct PromptVersion {
    key: String,
    version: i32,
}

#[derive(Serialize, Deserialize)]
struct CacheName {
    cache: Cache,
}

#[derive(Serialize, Deserialize)]
struct CacheKey {
    cache: Cache,
    key: String,
}

#[derive(Serialize, Deserialize)]
struct CachePut {
    cache: Cache,
    key: String,
    value: Value,
    ttl_seconds: u64,
}

#[derive(Serialize, Deserialize)]
struct SetFlag {
    name: String,
    value: String,
    who: String,
    why: String,
    #[serde(default)]
    force: bool,
}

#[derive(Serialize, Deserialize)]
struct Rollback {
    who: String,
    why: String,
    /// Roll back even when SQLite cannot catch up from PostgreSQL (it is unreachable).
    #[serde(default)]
    force: bool,
}

#[derive(Serialize, Deserialize)]
struct EntityRef {
    entity: String,
    entity_id: Option<Uuid>,
}

/// The arguments of `api_keys.put` and `api_keys.rotate`. Parsed straight from the argument
/// text (not through a `Value`, and never serialized back), so the plaintext is held only in
/// memory that is wiped on drop.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretArgs {
    owner_id: Uuid,
    provider: String,
    secret: Option<SecretText>,
    secret_hex: Option<SecretHex>,
    #[serde(default, deserialize_with = "crate::repo::json_given", skip_serializing_if = "Option::is_none")]
    metadata: Option<Value>,
}

impl SecretArgs {
    fn secret(&self) -> Result<&[u8]> {
        match (&self.secret, &self.secret_hex) {
            (Some(s), None) => Ok(&s.0),
            (None, Some(h)) => Ok(&h.0),
            _ => Err(Error::invalid(
                "args_json",
                "give the secret as `secret` (text) or `secret_hex`, exactly one",
            )),
        }
    }
}

struct SecretText(Zeroizing<Vec<u8>>);

impl<'de> Deserialize<'de> for SecretText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(SecretText(Zeroizing::new(String::deserialize(d)?.into_bytes())))
    }
}

struct SecretHex(Zeroizing<Vec<u8>>);

impl<'de> Deserialize<'de> for SecretHex {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = Zeroizing::new(String::deserialize(d)?);
        let bytes = hex::decode(text.as_bytes())
            .map_err(|_| serde::de::Error::custom("secret_hex must be hexadecimal digits, two per byte"))?;
        Ok(SecretHex(Zeroizing::new(bytes)))
    }
}

fn secret_args(text: &str) -> Result<SecretArgs> {
    serde_json::from_str(text).map_err(|e| Error::invalid("args_json", serde_message(&e)))
}

// ----- results -----

fn reply(value: impl Serialize) -> Result<String> {
    serde_json::to_string(&value)
        .map_err(|e| Error::Internal(format!("cannot serialize the result as JSON: {e}")))
}

/// A lookup's result, or `DW_NOT_FOUND` naming what was looked for (the arguments of a lookup
/// hold no secret).
fn found(value: Option<impl Serialize>, what: &str, args: &str) -> Result<String> {
    match value {
        Some(v) => reply(v),
        None => Err(Error::not_found(what, truncate_for_message(args))),
    }
}

/// `{"secret": text}` (or `{"secret_hex": hex}`), built without intermediate copies that would
/// outlive this call unwiped; the caller's copy is wiped by `dw_string_free`.
fn secret_reply(plaintext: &[u8]) -> String {
    let mut out = Zeroizing::new(String::with_capacity(plaintext.len() * 2 + 32));
    match std::str::from_utf8(plaintext) {
        Ok(text) => {
            out.push_str("{\"secret\":");
            let quoted = Zeroizing::new(Value::String(text.to_string()).to_string());
            out.push_str(&quoted);
        }
        Err(_) => {
            out.push_str("{\"secret_hex\":\"");
            out.push_str(&Zeroizing::new(hex::encode(plaintext)));
            out.push('"');
        }
    }
    out.push('}');
    // Exactly the room CString needs (the text and its NUL), so it is not reallocated on its way
    // to C, which would leave an unwiped copy behind; `out` itself is wiped when dropped.
    let mut exact = String::with_capacity(out.len() + 1);
    exact.push_str(&out);
    exact
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_names_are_unique_and_dotted() {
        let mut names: Vec<&str> = OPERATIONS.iter().map(|(n, _)| *n).collect();
        for n in &names[1..] {
            assert!(n.split_once('.').is_some_and(|(a, b)| !a.is_empty() && !b.is_empty()), "{n}");
        }
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len(), "an operation name is listed twice");
    }

    /// The header is where a caller reads what each operation takes: it must list them all, and
    /// nothing else.
    #[test]
    fn the_header_documents_every_operation_and_no_other() {
        let header = include_str!("../include/dualwrite.h");
        for (name, _) in OPERATIONS {
            assert!(
                header.contains(&format!("// | `{name}` |")),
                "{name} is missing from dw_call's table in src/ffi/call.rs (then regenerate the header)"
            );
        }
        for row in header.lines().filter_map(|l| l.strip_prefix("// | `")) {
            let name = row.split('`').next().unwrap_or_default();
            let is_operation = OPERATIONS.iter().any(|(n, _)| *n == name);
            // The other tables in the header (dw_bridge_open's fields) name no dotted operation.
            assert!(is_operation || !name.contains('.'), "the header documents an unknown operation {name}");
        }
    }

    /// A public `Bridge` method added to src/repo/ must get an operation here too.
    #[test]
    fn every_repository_method_has_an_operation() {
        let source = include_str!("call.rs");
        let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/repo");
        let mut missing = Vec::new();
        for entry in std::fs::read_dir(&repo).expect("read src/repo") {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            for rest in text.split("pub fn ").skip(1) {
                let Some((name, after)) = rest.split_once('(') else { continue };
                // `&self` methods of the repo are Bridge's, except the secret's own accessors.
                let bridge_method = after.starts_with("&self") && !["expose", "expose_str"].contains(&name);
                if bridge_method && !source.contains(&format!(".{name}(")) {
                    missing.push(name.to_string());
                }
            }
        }
        assert!(missing.is_empty(), "repository methods without a dw_call operation: {missing:?}");
    }

    #[test]
    fn unknown_and_mistyped_arguments_are_refused() {
        let e =
            args::<Id>(r#"{"id": "3f1c1d1e-0000-4000-8000-000000000000", "idd": 1}"#).err().expect("refused");
        assert_eq!(e.kind(), crate::ErrorKind::InvalidArgument);
        let message = e.to_string();
        assert!(message.contains("idd") && message.contains("expected id"), "{message}");

        let e = args::<WithPage<Owner>>(r#"{"owner_id": "3f1c1d1e-0000-4000-8000-000000000000", "limt": 5}"#)
            .err()
            .expect("refused");
        assert!(e.to_string().contains("limt"), "{e}");
        let ok =
            args::<WithPage<Owner>>(r#"{"owner_id": "3f1c1d1e-0000-4000-8000-000000000000", "limit": 5}"#)
                .unwrap();
        assert_eq!((ok.page.limit, ok.page.offset), (5, 0));

        assert!(args::<NoArgs>("[]").is_err());
        assert!(args::<NoArgs>("{}").is_ok());
        assert!(args::<NewUser>(r#"{"email": "a@b.c", "display_name": "A", "role": "owner"}"#).is_err());
    }

    #[test]
    fn messages_never_quote_a_secret() {
        let e = secret_args(r#"{"owner_id": "hunter2-not-a-uuid", "provider": "p", "secret": "s"}"#)
            .err()
            .expect("refused");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let e = secret_args(
            r#"{"owner_id": "3f1c1d1e-0000-4000-8000-000000000000", "provider": "p", "secret": ["hunter2"]}"#,
        )
        .err()
        .expect("refused");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let e = secret_args(r#"{"owner_id": "3f1c1d1e-0000-4000-8000-000000000000", "provider": "p", "secret_hex": "hunter2"}"#)
            .err().expect("refused");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let x =
            secret_args(r#"{"owner_id": "3f1c1d1e-0000-4000-8000-000000000000", "provider": "p"}"#).unwrap();
        assert!(x.secret().is_err());
    }

    #[test]
    fn secrets_come_back_as_text_or_hex() {
        assert_eq!(secret_reply(b"s3cr\"t"), r#"{"secret":"s3cr\"t"}"#);
        assert_eq!(secret_reply(&[0xff, 0x00]), r#"{"secret_hex":"ff00"}"#);
    }
}
