//! `dw_call`: the C entry to the typed repository operations by name ([`Bridge::call`] in the
//! core, src/call.rs), so the header stays small and stable while every operation is reachable.
//! The operations' arguments and results are documented here, on `dw_call`, because this is
//! what cbindgen copies into include/dualwrite.h: the one description every caller reads.
//!
//! [`Bridge::call`]: crate::Bridge::call

use super::bridge::dw_bridge;
use super::error::dw_result;
use super::strings::string_out;
use std::ffi::c_char;

/// Run the typed repository operation `operation` with the JSON object `args_json` as its
/// arguments, e.g. `dw_call(b, "jobs.claim_next", "{}", &out)` or
/// `dw_call(b, "users.create", "{\"email\": \"a@example.com\", \"display_name\": \"A\"}", &out)`.
///
/// Parameters:
/// - `bridge`: an open handle. NULL: `DW_NULL_PARAMETER`.
/// - `operation`: an operation name from the table below. NULL: `DW_NULL_PARAMETER`.
/// - `args_json`: a JSON object of arguments (`"{}"` for none). NULL: `DW_NULL_PARAMETER`.
/// - `result_json_out`: where the result goes. NULL: `DW_NULL_PARAMETER`, and nothing is done.
///
/// On `DW_OK`, `*result_json_out` receives the result as JSON (an object, an array, or `null`),
/// owned by the caller: free it with `dw_string_free` (which wipes it: it may hold a secret, for
/// `api_keys.secret`). On failure it is unchanged.
///
/// Arguments: one JSON object. An unknown operation, an unknown argument name or a value of the
/// wrong type is `DW_INVALID_ARGUMENT` (the message names it, never quoting its value). An
/// argument marked `?` may be left out. An optional JSON argument (`payload`, `context`,
/// `metadata`, `meta`, `params`, `keywords_used`, `metrics`) left out gets its default (`{}` or
/// `[]`); `null` for it is refused (`DW_INVALID_ARGUMENT`). Ids are UUID strings, times RFC 3339
/// strings; rows come back in the wire form described at the top of this header. `limit`
/// (default 100, at most 10000) and `offset` (default 0) page the list operations. A lookup that
/// finds nothing is `DW_NOT_FOUND`, except `jobs.claim_next`, whose result is `null` when no job
/// is queued. Writes behave as `dw_insert` describes (`DW_CONFLICT`, `DW_UNAVAILABLE` in the
/// PostgreSQL-first write modes, `DW_READ_ONLY`); a state transition an entity does not allow
/// (a finished job set running again) is `DW_CONFLICT`. The api_keys operations need the secret
/// key (`DW_CONFIG` without it).
///
/// | operation | arguments | result |
/// | --- | --- | --- |
/// | `operations` | `{}` | array of every operation name |
/// | `users.create` | `email`, `display_name`, `role`?, `id`? | user |
/// | `users.get` | `id` | user |
/// | `users.get_by_email` | `email` (any case) | user |
/// | `users.update` | `id`, `email`?, `display_name`?, `role`? | user |
/// | `users.disable` | `id` | user |
/// | `users.list` | `limit`?, `offset`? | array of users |
/// | `api_keys.put` | `owner_id`, `provider`, `secret` (text) or `secret_hex`, `metadata`? | api key (no secret) |
/// | `api_keys.rotate` | `owner_id`, `provider`, `secret` or `secret_hex` | api key (no secret) |
/// | `api_keys.secret` | `owner_id`, `provider` | `{"secret": text}` (or `{"secret_hex": hex}` if not UTF-8) |
/// | `api_keys.get` | `owner_id`, `provider` | api key (no secret) |
/// | `api_keys.list` | `owner_id` | array of api keys |
/// | `api_keys.delete` | `owner_id`, `provider` | `{"deleted": bool}` |
/// | `jobs.submit` | `type`, `payload`?, `priority`?, `owner_id`?, `id`?, `queued_at`? | job |
/// | `jobs.get` | `id` | job |
/// | `jobs.list_by_owner` | `owner_id`, `limit`?, `offset`? | array of jobs |
/// | `jobs.list_by_status` | `status`, `limit`?, `offset`? | array of jobs |
/// | `jobs.claim_next` | `{}` | job now `running`, or `null` |
/// | `jobs.set_status` | `id`, `status` | job |
/// | `jobs.set_progress` | `id`, `progress` (decimal string or number, 0 to 100) | job |
/// | `jobs.append_log` | `job_id`, `level`, `message`, `step`?, `context`?, `id`?, `created_at`? | job log |
/// | `jobs.list_logs` | `job_id`, `limit`?, `offset`? | array of job logs |
/// | `jobs.list_logs_after` | `job_id`, `after`? (log id), `limit`? | array of job logs |
/// | `pages.add` | `url`, `title`?, `lang`?, `content_hash`?, `source_job_id`?, `serpapi_result_id`?, `fetched_at`?, `id`? | page |
/// | `pages.get` | `id` | page |
/// | `pages.add_headings` | `page_id`, `headings`: [{`level`, `text`, `embeddings_ref`?, `created_at`?, `id`?}] | array of headings |
/// | `pages.list_headings` | `page_id` | array of headings |
/// | `serpapi.record` | `keyword`, `raw_json`, `params`?, `job_id`?, `fetched_at`?, `id`? | serpapi result |
/// | `serpapi.get` | `id` | serpapi result |
/// | `serpapi.get_by_hash` | `hash` | serpapi result |
/// | `serpapi.hash` | `keyword`, `params`? | `{"hash": hex}` |
/// | `embeddings.upsert` | `text_hash`, `model`, `vector`, `meta`?, `id`? | embedding |
/// | `embeddings.get` | `id` | embedding |
/// | `embeddings.get_by_hash` | `text_hash`, `model` | embedding |
/// | `generated_text.create` | `section_type`, `content`, `heading`?, `keywords_used`?, `lang`?, `metrics`?, `source_heading_id`?, `owner_id`?, `job_id`?, `id`? | generated text |
/// | `generated_text.get` | `id` | generated text |
/// | `generated_text.add_version` | `of`, `content`, `heading`?, `keywords_used`?, `lang`?, `metrics`? | generated text |
/// | `generated_text.set_status` | `id`, `status` | generated text |
/// | `generated_text.list_by_heading` | `heading_id`, `limit`?, `offset`? | array of generated texts |
/// | `generated_text.list_by_owner` | `owner_id`, `limit`?, `offset`? | array of generated texts |
/// | `prompts.publish` | `key`, `body`, `updated_by`? | prompt |
/// | `prompts.latest` | `key` | prompt |
/// | `prompts.version` | `key`, `version` | prompt |
/// | `prompts.list_versions` | `key` | array of prompts |
/// | `cache.get` | `cache` (`text_analytics` or `wordstat`), `key` | cache entry (a live one) |
/// | `cache.put` | `cache`, `key`, `value`, `ttl_seconds` | cache entry |
/// | `cache.delete` | `cache`, `key` | `{"deleted": bool}` |
/// | `cache.purge_expired` | `cache` | `{"purged": n}` |
/// | `audit.record` | `action`, `entity`, `entity_id`?, `actor_id`?, `metadata`?, `created_at`?, `id`? | audit event |
/// | `audit.list_for_entity` | `entity`, `entity_id`?, `limit`?, `offset`? | array of audit events |
/// | `audit.list_by_actor` | `actor_id`, `limit`?, `offset`? | array of audit events |
/// | `flags.get` | `{}` | flags in effect in this process |
/// | `flags.set` | `name` (`write_mode`, `read_source`, `read_source:<table>`), `value`, `who`, `why`, `force`? (default false) | flags after the change |
/// | `flags.rollback` | `who`, `why`, `force`? (default false) | flags after the rollback (`write_mode` and every read source `sqlite`) |
///
/// The flags come back as `{"write_mode": ..., "read_source": ..., "read_source_overrides":
/// {table: source}, "forced_sqlite": bool}`. `flags.set` is refused with `DW_CONFLICT` while a
/// guard rail holds (changes pending, dead letters), unless `force`; `value` `default` removes a
/// per-table override. Every flag change is recorded in `audit_events` with `who` and `why`, and
/// is shared by every process on the SQLite file. Leaving `postgres_primary`/`postgres`
/// (`flags.rollback` too) first catches SQLite up from PostgreSQL and is refused with
/// `DW_CONFLICT` while PostgreSQL is unreachable, unless `force`.
///
/// # Safety
/// `bridge` is NULL or a handle from `dw_bridge_open` that was not freed; `operation` and
/// `args_json` are NULL or NUL-terminated; `result_json_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dw_call(
    bridge: *mut dw_bridge,
    operation: *const c_char,
    args_json: *const c_char,
    result_json_out: *mut *mut c_char,
) -> dw_result {
    ffi_boundary!({
        let h = try_clone_arc!(bridge);
        let operation = try_str!(operation);
        let args = try_str!(args_json);
        try_out!(result_json_out);
        let result = h.live()?.call(operation, args)?;
        string_out(result_json_out, result)
    })
}
