//! The typed API refuses what it must: a workflow step the entity does not allow is a Conflict,
//! a bad input is an InvalidArgument naming the field; neither writes anything (the outbox depth
//! and the rows stay as they were).
//!
//! Needs PostgreSQL (for the test set-up only): `pg_virtualenv -v 15 cargo test --test repo_validation`.

mod common;

use dualwrite::{
    Bridge, BridgeOptions, Cache, Error, GeneratedTextRevision, GeneratedTextStatus as G, HeadingLevel,
    JobStatus as J, LogLevel, NewAuditEvent, NewEmbedding, NewGeneratedText, NewHeading, NewJob, NewJobLog,
    NewPage, NewSerpApiResult, NewUser, Paging, SectionType, UserChanges,
};
use serde_json::json;
use std::time::Duration;
use uuid::Uuid;

/// A bridge that does not replicate, so the outbox depth counts every committed change.
fn quiet_bridge(db: &common::TestDb, dir: &std::path::Path) -> Bridge {
    common::bridge_with(db, dir, BridgeOptions { replicate: false, ..Default::default() })
}

fn depth(b: &Bridge) -> i64 {
    b.status().unwrap().outbox_depth
}

#[track_caller]
fn assert_invalid<T: std::fmt::Debug>(r: dualwrite::Result<T>, field: &str) {
    match r {
        Err(Error::InvalidArgument { field: f, message }) => {
            assert_eq!(f, field, "wrong field named ({message})")
        }
        other => panic!("expected InvalidArgument naming {field}, got {other:?}"),
    }
}

#[track_caller]
fn assert_conflict<T: std::fmt::Debug>(r: dualwrite::Result<T>, mentions: &[&str]) {
    match r {
        Err(e @ Error::Conflict(_)) => {
            for m in mentions {
                assert!(e.to_string().contains(m), "{e} should mention {m}");
            }
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
}

#[test]
fn wrong_transitions_are_conflicts_and_change_nothing() {
    let db = common::migrated_db();
    let dir = tempfile::tempdir().unwrap();
    let b = quiet_bridge(&db, dir.path());

    let queued = b.submit_job(&NewJob::new("t")).unwrap();
    let before = depth(&b);
    assert_conflict(
        b.set_job_status(queued.id, J::Succeeded),
        &["queued", "succeeded", "running, cancelled"],
    );
    assert_conflict(b.set_job_status(queued.id, J::Failed), &["queued", "failed"]);
    assert_conflict(b.set_job_status(queued.id, J::Queued), &["queued"]);
    assert_eq!(depth(&b), before);
    assert_eq!(b.get_job(queued.id).unwrap().unwrap(), queued);

    let running = b.set_job_status(queued.id, J::Running).unwrap();
    assert!(running.started_at.is_some() && running.finished_at.is_none());
    assert_conflict(b.set_job_status(queued.id, J::Queued), &["running", "queued"]);
    assert_conflict(b.set_job_status(queued.id, J::Running), &["running"]);
    let done = b.set_job_status(queued.id, J::Cancelled).unwrap();
    assert!(done.finished_at.is_some());
    let before = depth(&b);
    for to in [J::Queued, J::Running, J::Succeeded, J::Failed, J::Cancelled] {
        assert_conflict(b.set_job_status(queued.id, to), &["cancelled", "final"]);
    }
    assert_conflict(b.set_job_progress(queued.id, "50"), &["cancelled"]);
    assert_eq!(depth(&b), before);
    assert_eq!(b.get_job(queued.id).unwrap().unwrap(), done);

    // queued → cancelled directly: finished, never started.
    let other = b.submit_job(&NewJob::new("t")).unwrap();
    let cancelled = b.set_job_status(other.id, J::Cancelled).unwrap();
    assert!(cancelled.started_at.is_none() && cancelled.finished_at.is_some());
    assert!(b.set_job_status(Uuid::new_v4(), J::Running).unwrap_err().is_not_found());

    // The review workflow of generated text.
    let t = b.create_generated_text(&NewGeneratedText::new(SectionType::Intro, "Hello")).unwrap();
    let before = depth(&b);
    for to in [G::Draft, G::Approved, G::Rejected, G::Published] {
        assert_conflict(b.set_generated_text_status(t.id, to), &["draft", to.as_str(), "in_review"]);
    }
    assert_eq!(depth(&b), before);
    b.set_generated_text_status(t.id, G::InReview).unwrap();
    for to in [G::Draft, G::InReview, G::Published] {
        assert_conflict(b.set_generated_text_status(t.id, to), &["in_review", to.as_str()]);
    }
    b.set_generated_text_status(t.id, G::Rejected).unwrap();
    assert_conflict(b.set_generated_text_status(t.id, G::Approved), &["rejected", "approved"]);
    assert_conflict(b.set_generated_text_status(t.id, G::Published), &["rejected"]);
    b.set_generated_text_status(t.id, G::Draft).unwrap();
    b.set_generated_text_status(t.id, G::InReview).unwrap();
    b.set_generated_text_status(t.id, G::Approved).unwrap();
    assert_conflict(b.set_generated_text_status(t.id, G::Draft), &["approved"]);
    b.set_generated_text_status(t.id, G::Published).unwrap();
    let before = depth(&b);
    for to in [G::Draft, G::InReview, G::Approved, G::Rejected, G::Published] {
        assert_conflict(b.set_generated_text_status(t.id, to), &["published", "final"]);
    }
    assert_eq!(depth(&b), before);

    // Unique and foreign keys: conflicts too.
    b.create_user(&NewUser::new("ann@example.com", "Ann")).unwrap();
    let before = depth(&b);
    assert_conflict(b.create_user(&NewUser::new("ANN@example.com", "Other Ann")), &["UNIQUE"]);
    assert_conflict(b.append_job_log(&NewJobLog::new(Uuid::new_v4(), LogLevel::Info, "m")), &["FOREIGN KEY"]);
    assert_conflict(b.put_api_key(Uuid::new_v4(), "serpapi", b"sk_x", None), &["FOREIGN KEY"]);
    assert_eq!(depth(&b), before);
}

#[test]
fn bad_inputs_are_invalid_arguments_naming_the_field_and_write_nothing() {
    let db = common::migrated_db();
    let dir = tempfile::tempdir().unwrap();
    let b = quiet_bridge(&db, dir.path());
    let user = b.create_user(&NewUser::new("ann@example.com", "Ann")).unwrap();
    let job = b.submit_job(&NewJob::new("t")).unwrap();
    let b_job = b.set_job_status(job.id, J::Running).unwrap();
    let page = b.add_page(&NewPage::new("https://a.example/")).unwrap();
    let text = b.create_generated_text(&NewGeneratedText::new(SectionType::Faq, "Q?")).unwrap();
    let before = depth(&b);

    // users
    assert_invalid(b.create_user(&NewUser::new("not an email", "X")), "users.email");
    assert_invalid(b.create_user(&NewUser::new("x@example.com", "nul\0byte")), "users.display_name");
    assert_invalid(
        b.update_user(user.id, &UserChanges { email: Some("nope".into()), ..Default::default() }),
        "users.email",
    );
    // jobs
    assert_invalid(b.submit_job(&NewJob::new("")), "jobs.type");
    assert_invalid(
        b.submit_job(&NewJob { queued_at: Some("yesterday".into()), ..NewJob::new("t") }),
        "jobs.queued_at",
    );
    assert_invalid(
        b.submit_job(&NewJob { queued_at: Some("2026-01-02T03:04:05.1234567Z".into()), ..NewJob::new("t") }),
        "jobs.queued_at",
    );
    for bad in ["100.5", "101", "-1", "12,5", "1e2", ""] {
        assert_invalid(b.set_job_progress(job.id, bad), "jobs.progress");
    }
    // job logs
    assert_invalid(b.append_job_log(&NewJobLog::new(job.id, LogLevel::Info, "a\0b")), "job_logs.message");
    let mut deep = json!(1);
    for _ in 0..100 {
        deep = json!([deep]);
    }
    assert_invalid(
        b.append_job_log(&NewJobLog {
            context: Some(deep.clone()),
            ..NewJobLog::new(job.id, LogLevel::Info, "m")
        }),
        "job_logs.context",
    );
    assert_invalid(b.list_job_logs(job.id, Paging::first(1_000_000)), "limit");
    // serpapi
    assert_invalid(
        b.record_serpapi_result(&NewSerpApiResult {
            keyword: "k".into(),
            raw_json: deep.clone(),
            ..Default::default()
        }),
        "serpapi_results.raw_json",
    );
    // pages and headings: one bad heading refuses the whole batch
    assert_invalid(
        b.add_headings(
            page.id,
            &[
                NewHeading::new(HeadingLevel::H1, "fine"),
                NewHeading::new(HeadingLevel::H2, "bad\0"),
                NewHeading::new(HeadingLevel::H2, "fine too"),
            ],
        ),
        "headings.text",
    );
    assert_invalid(
        b.add_headings(
            page.id,
            &[NewHeading {
                created_at: Some("2026-13-01T00:00:00Z".into()),
                ..NewHeading::new(HeadingLevel::H1, "x")
            }],
        ),
        "headings.created_at",
    );
    assert!(b.list_headings(page.id).unwrap().is_empty());
    // embeddings
    let emb = |vector: Vec<f32>| NewEmbedding {
        text_hash: "h".into(),
        model: "m".into(),
        vector,
        ..Default::default()
    };
    assert_invalid(b.upsert_embedding(&emb(vec![])), "embeddings.vector");
    assert_invalid(b.upsert_embedding(&emb(vec![1.0, f32::NAN])), "embeddings.vector");
    assert_invalid(b.upsert_embedding(&emb(vec![f32::INFINITY])), "embeddings.vector");
    // generated text
    assert_invalid(
        b.create_generated_text(&NewGeneratedText::new(SectionType::Intro, "x\0")),
        "generated_text.content",
    );
    assert_invalid(
        b.add_generated_text_version(text.id, &GeneratedTextRevision::new("nul\0")),
        "generated_text.content",
    );
    // prompts
    assert_invalid(b.publish_prompt("", "body", None), "prompts.key");
    assert_invalid(b.publish_prompt("k", "body\0", None), "prompts.body");
    // api keys
    assert_invalid(b.put_api_key(user.id, "", b"sk", None), "api_keys.provider");
    assert_invalid(b.put_api_key(user.id, "serpapi", b"", None), "api_keys.secret");
    assert_invalid(b.put_api_key(user.id, "serpapi", b"sk", Some(&deep)), "api_keys.metadata");
    // caches
    assert_invalid(b.cache_put(Cache::Wordstat, "k", &json!(1), Duration::from_secs(u64::MAX)), "ttl");
    assert_invalid(
        b.cache_put(Cache::Wordstat, "k\0", &json!(1), Duration::from_secs(1)),
        "wordstat_cache.cache_key",
    );
    assert_invalid(
        b.cache_put(Cache::TextAnalytics, "k", &deep, Duration::from_secs(1)),
        "text_analytics_cache.value",
    );
    // audit
    assert_invalid(b.record_audit_event(&NewAuditEvent::new("", "jobs", None)), "audit_events.action");
    assert_invalid(
        b.record_audit_event(&NewAuditEvent {
            created_at: Some("soon".into()),
            ..NewAuditEvent::new("a", "jobs", None)
        }),
        "audit_events.created_at",
    );

    assert_eq!(depth(&b), before, "no bad input reached the outbox");
    assert_eq!(b.get_job(job.id).unwrap().unwrap(), b_job);
    assert_eq!(b.get_user(user.id).unwrap().unwrap(), user);
    for (table, n) in [("users", 1), ("jobs", 1), ("job_logs", 0), ("headings", 0), ("embeddings", 0)] {
        assert_eq!(b.list(table, &json!({})).unwrap().len(), n, "{table}");
    }
    for table in
        ["prompts", "api_keys", "wordstat_cache", "text_analytics_cache", "audit_events", "serpapi_results"]
    {
        assert!(b.list(table, &json!({})).unwrap().is_empty(), "{table}");
    }
    assert_eq!(b.list("generated_text", &json!({})).unwrap().len(), 1);
}

/// `n` bytes of text no compressor shrinks much (random hex), as a URL or key would be.
fn incompressible(n: usize) -> String {
    let mut s = String::with_capacity(n + 32);
    while s.len() < n {
        s.push_str(&Uuid::new_v4().simple().to_string());
    }
    s.truncate(n);
    s
}

/// An email address `n` bytes long.
fn email(n: usize) -> String {
    format!("{}@example.com", incompressible(n - "@example.com".len()))
}

/// Regression (issue 14, item 5): a value longer than a PostgreSQL btree index takes (a cache
/// key, an email, a URL) committed to SQLite and became a permanent dead letter ("index row
/// requires 9032 bytes"). Now every indexed free-text column (the key, the unique constraints and
/// the registry's other indexes) refuses it at write time, naming the column and the limit,
/// through the generic and the typed API, for inserts and patches; and a value at the limit
/// replicates.
#[test]
fn indexed_text_past_the_btree_limit_is_refused_at_write_time() {
    const MAX: usize = dualwrite::schema::MAX_INDEXED_TEXT_BYTES;
    let db = common::migrated_db();
    let dir = tempfile::tempdir().unwrap();
    let b = common::bridge(&db, dir.path());
    let owner = b.create_user(&NewUser::new("owner@example.com", "O")).unwrap();
    let day = Duration::from_secs(86_400);
    // One row per index, its text exactly `len` bytes long (two-column indexes split it).
    let rows = |len: usize| -> Vec<(&'static str, &'static str, serde_json::Value)> {
        let (half, rest) = (len / 2, len - len / 2);
        vec![
            ("users", "email", json!({"email": email(len), "display_name": "u"})),
            ("serpapi_results", "hash", json!({"keyword": "k", "raw_json": {}, "hash": incompressible(len)})),
            ("pages", "url", json!({"url": incompressible(len)})),
            (
                "embeddings",
                "model",
                json!({"text_hash": incompressible(half), "model": incompressible(rest), "vector": [1.0]}),
            ),
            ("prompts", "key", json!({"key": incompressible(len), "body": "b", "version": 1})),
            (
                "text_analytics_cache",
                "cache_key",
                json!({"cache_key": incompressible(len), "value": 1, "expires_at": "2030-01-01T00:00:00Z"}),
            ),
            (
                "wordstat_cache",
                "cache_key",
                json!({"cache_key": incompressible(len), "value": 1, "expires_at": "2030-01-01T00:00:00Z"}),
            ),
            ("audit_events", "entity", json!({"action": "a", "entity": incompressible(len)})),
        ]
    };
    // Nothing in flight, so the depth cannot change under the check but for a refused write.
    b.flush(Duration::from_secs(60)).unwrap();
    let before = b.status().unwrap().outbox_depth;
    for (table, column, row) in rows(MAX + 1) {
        match b.insert(table, &row) {
            Err(Error::InvalidArgument { field, message }) => {
                assert_eq!(field, format!("{table}.{column}"));
                assert!(message.contains(&MAX.to_string()), "{message}");
            }
            other => panic!("{table}.{column}: {MAX} + 1 bytes accepted: {other:?}"),
        }
    }
    // The typed API and the api_keys operations (the generic API cannot write a secret).
    assert_invalid(
        b.cache_put(Cache::Wordstat, &incompressible(MAX + 1), &json!(1), day),
        "wordstat_cache.cache_key",
    );
    assert_invalid(b.create_user(&NewUser::new(email(MAX + 1), "u")), "users.email");
    assert_invalid(b.put_api_key(owner.id, &incompressible(MAX + 1), b"s", None), "api_keys.provider");
    assert_eq!(b.status().unwrap().outbox_depth, before, "a refused value reached the outbox");

    // At the limit every index takes it, and it replicates.
    for (table, _, row) in rows(MAX) {
        b.insert(table, &row).unwrap_or_else(|e| panic!("{table}: {e}"));
    }
    b.put_api_key(owner.id, &incompressible(MAX), b"s", None).unwrap();
    let page = b.insert("pages", &json!({"url": "https://example.com/short"})).unwrap();
    // A patch is held to it too, and leaves the row as it was.
    let id = page["id"].as_str().unwrap();
    assert_invalid(b.patch("pages", id, &json!({"url": incompressible(MAX + 1)})), "pages.url");
    assert_eq!(b.get("pages", id).unwrap().unwrap(), page);
    b.flush(Duration::from_secs(60)).unwrap();
    assert_eq!(b.dead_letters().unwrap(), vec![], "a value at the limit did not replicate");
    common::assert_stores_equal(&b, &db);
}

mod c_abi {
    use std::ffi::{c_char, c_int, c_void, CStr, CString};
    extern "C" {
        pub fn dw_bridge_open(config_json: *const c_char, bridge_out: *mut *mut c_void) -> c_int;
        pub fn dw_call(
            b: *mut c_void,
            op: *const c_char,
            args: *const c_char,
            out: *mut *mut c_char,
        ) -> c_int;
        pub fn dw_insert(
            b: *mut c_void,
            table: *const c_char,
            row: *const c_char,
            out: *mut *mut c_char,
        ) -> c_int;
        pub fn dw_patch(
            b: *mut c_void,
            table: *const c_char,
            key: *const c_char,
            changes: *const c_char,
            out: *mut *mut c_char,
        ) -> c_int;
        pub fn dw_string_free(s: *mut c_char);
        pub fn dw_last_error_message() -> *const c_char;
        pub fn dw_bridge_close(b: *mut c_void, timeout_ms: u32) -> c_int;
        pub fn dw_bridge_free(b: *mut c_void);
    }

    /// `dw_call(op, args)` on a bridge opened from `config`: the result code and the error
    /// message (or the reply).
    pub fn call(config: &serde_json::Value, op: &str, args: &serde_json::Value) -> (c_int, String) {
        let (op, args) = (CString::new(op).unwrap(), CString::new(args.to_string()).unwrap());
        // SAFETY: valid NUL-terminated strings and out pointer, alive for the call.
        on_bridge(config, |b, out| unsafe { dw_call(b, op.as_ptr(), args.as_ptr(), out) })
    }

    /// `dw_insert(table, row)`, like [`call`].
    pub fn insert(config: &serde_json::Value, table: &str, row: &serde_json::Value) -> (c_int, String) {
        let (table, row) = (CString::new(table).unwrap(), CString::new(row.to_string()).unwrap());
        // SAFETY: valid NUL-terminated strings and out pointer, alive for the call.
        on_bridge(config, |b, out| unsafe { dw_insert(b, table.as_ptr(), row.as_ptr(), out) })
    }

    /// `dw_patch(table, key, changes)`, like [`call`].
    pub fn patch(
        config: &serde_json::Value,
        table: &str,
        key: &str,
        changes: &serde_json::Value,
    ) -> (c_int, String) {
        let (table, key) = (CString::new(table).unwrap(), CString::new(key).unwrap());
        let changes = CString::new(changes.to_string()).unwrap();
        // SAFETY: valid NUL-terminated strings and out pointer, alive for the call.
        on_bridge(config, |b, out| unsafe {
            dw_patch(b, table.as_ptr(), key.as_ptr(), changes.as_ptr(), out)
        })
    }

    /// Run one call on a bridge opened from `config`: its code and the error message (or the
    /// reply it wrote to `out`).
    fn on_bridge(
        config: &serde_json::Value,
        f: impl FnOnce(*mut c_void, *mut *mut c_char) -> c_int,
    ) -> (c_int, String) {
        let config = CString::new(config.to_string()).unwrap();
        // SAFETY: valid NUL-terminated strings and out pointers; the handle is closed and freed once.
        unsafe {
            let mut b = std::ptr::null_mut();
            assert_eq!(dw_bridge_open(config.as_ptr(), &mut b), 0);
            let mut out = std::ptr::null_mut();
            let rc = f(b, &mut out);
            let text = if rc == 0 {
                let t = CStr::from_ptr(out).to_string_lossy().into_owned();
                dw_string_free(out);
                t
            } else {
                CStr::from_ptr(dw_last_error_message()).to_string_lossy().into_owned()
            };
            dw_bridge_close(b, 1000);
            dw_bridge_free(b);
            (rc, text)
        }
    }
}

/// Regression (issue 14, item 8): `null` for a required jsonb column (payload, context, metadata,
/// meta, ...) was refused by the generic API but silently became `{}` through the typed API and
/// the C ABI's operations. Now all three refuse it the same way; a field left out still gets the
/// column's documented default.
#[test]
fn null_for_a_required_jsonb_column_is_refused_by_every_api() {
    let db = common::migrated_db();
    let dir = tempfile::tempdir().unwrap();
    let b = quiet_bridge(&db, dir.path());
    let user = b.create_user(&NewUser::new("jsonb@example.com", "J")).unwrap();
    let job = b.submit_job(&NewJob::new("t")).unwrap();
    let null = Some(serde_json::Value::Null);
    let before = depth(&b);

    // Generic API (as before).
    assert_invalid(b.insert("jobs", &json!({"type": "t", "payload": null})), "jobs.payload");
    // Typed API.
    assert_invalid(b.submit_job(&NewJob { payload: null.clone(), ..NewJob::new("t") }), "jobs.payload");
    assert_invalid(
        b.append_job_log(&NewJobLog { context: null.clone(), ..NewJobLog::new(job.id, LogLevel::Info, "m") }),
        "job_logs.context",
    );
    assert_invalid(
        b.record_audit_event(&NewAuditEvent {
            metadata: null.clone(),
            ..NewAuditEvent::new("a", "jobs", None)
        }),
        "audit_events.metadata",
    );
    assert_invalid(
        b.upsert_embedding(&NewEmbedding {
            text_hash: "h".into(),
            model: "m".into(),
            vector: vec![1.0],
            meta: null.clone(),
            id: None,
        }),
        "embeddings.meta",
    );
    assert_invalid(
        b.create_generated_text(&NewGeneratedText {
            metrics: null.clone(),
            ..NewGeneratedText::new(SectionType::Intro, "c")
        }),
        "generated_text.metrics",
    );
    assert_invalid(
        b.record_serpapi_result(&NewSerpApiResult {
            keyword: "kw".into(),
            params: null.clone(),
            raw_json: json!({}),
            ..NewSerpApiResult::default()
        }),
        "serpapi_results.params",
    );
    assert_invalid(b.put_api_key(user.id, "p", b"s", Some(&serde_json::Value::Null)), "api_keys.metadata");

    // The C ABI's operations.
    let config = json!({
        "sqlite_path": b.config().sqlite_path,
        "postgres_url": null,
        "key_file": common::key_file(dir.path()),
        "migrate_sqlite": false,
    });
    for (op, args, field) in [
        ("jobs.submit", json!({"type": "t", "payload": null}), "jobs.payload"),
        (
            "jobs.append_log",
            json!({"job_id": job.id, "level": "info", "message": "m", "context": null}),
            "job_logs.context",
        ),
        ("audit.record", json!({"action": "a", "entity": "jobs", "metadata": null}), "audit_events.metadata"),
        (
            "api_keys.put",
            json!({"owner_id": user.id, "provider": "p", "secret": "s", "metadata": null}),
            "api_keys.metadata",
        ),
    ] {
        let (rc, message) = c_abi::call(&config, op, &args);
        assert_eq!(rc, 3, "{op}: DW_INVALID_ARGUMENT expected, got {rc}: {message}");
        assert!(message.contains(field) && message.contains("null"), "{op}: {message}");
    }
    assert_eq!(depth(&b), before, "a refused null reached the outbox");

    // Left out, the documented default applies, through every API.
    assert_eq!(b.submit_job(&NewJob::new("t")).unwrap().payload, json!({}));
    assert_eq!(b.insert("jobs", &json!({"type": "t"})).unwrap()["payload"], json!({}));
    let (rc, reply) = c_abi::call(&config, "jobs.submit", &json!({"type": "t"}));
    assert_eq!(rc, 0, "{reply}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&reply).unwrap()["payload"], json!({}));
}

/// Issue 17, item 5: a value a CHECK of the stores refuses was refused by the typed API and
/// `dw_call` (InvalidArgument) but reached SQLite's CHECK through `dw_insert`/`dw_patch` and came
/// back as `DW_CONFLICT`. The registry now holds every CHECK and `validate_row` applies it, so
/// each kind of rule gets `DW_INVALID_ARGUMENT` naming the column and the rule through every entry
/// point, and nothing is written.
#[test]
fn a_broken_check_is_the_same_invalid_argument_through_every_entry_point() {
    let db = common::migrated_db();
    let dir = tempfile::tempdir().unwrap();
    let b = quiet_bridge(&db, dir.path());
    let user = b.create_user(&NewUser::new("rules@example.com", "R")).unwrap();
    let job = b.submit_job(&NewJob::new("t")).unwrap();
    let config = json!({
        "sqlite_path": b.config().sqlite_path,
        "postgres_url": null,
        "key_file": common::key_file(dir.path()),
        "migrate_sqlite": false,
    });
    let before = depth(&b);
    let rows_before: Vec<usize> = ["jobs", "users", "prompts", "audit_events"]
        .iter()
        .map(|t| b.list(t, &json!({})).unwrap().len())
        .collect();
    let job_id = job.id.to_string();
    let user_id = user.id.to_string();

    // (what, result code and message, the field and the rule text the message must name)
    let refused: Vec<(&str, (i32, String), &str, &str)> = vec![
        // Non-empty text.
        ("dw_insert jobs", c_abi::insert(&config, "jobs", &json!({"type": ""})), "jobs.type", "type <> ''"),
        (
            "dw_call jobs.submit",
            c_abi::call(&config, "jobs.submit", &json!({"type": ""})),
            "jobs.type",
            "type <> ''",
        ),
        (
            "dw_patch jobs",
            c_abi::patch(&config, "jobs", &job_id, &json!({"type": ""})),
            "jobs.type",
            "type <> ''",
        ),
        (
            "dw_insert prompts",
            c_abi::insert(&config, "prompts", &json!({"key": "", "body": "b", "version": 1})),
            "prompts.key",
            "key <> ''",
        ),
        (
            "dw_call prompts.publish",
            c_abi::call(&config, "prompts.publish", &json!({"key": "", "body": "b"})),
            "prompts.key",
            "key <> ''",
        ),
        (
            "dw_insert audit_events",
            c_abi::insert(&config, "audit_events", &json!({"action": "", "entity": "jobs"})),
            "audit_events.action",
            "action <> ''",
        ),
        (
            "dw_call audit.record",
            c_abi::call(&config, "audit.record", &json!({"action": "", "entity": "jobs"})),
            "audit_events.action",
            "action <> ''",
        ),
        (
            "dw_call api_keys.put",
            c_abi::call(
                &config,
                "api_keys.put",
                &json!({"owner_id": user_id, "provider": "", "secret": "s"}),
            ),
            "api_keys.provider",
            "provider <> ''",
        ),
        // A range of an exact decimal and of an integer.
        (
            "dw_insert jobs progress",
            c_abi::insert(&config, "jobs", &json!({"type": "t", "progress": "101"})),
            "jobs.progress",
            "progress >= 0 AND progress <= 100",
        ),
        (
            "dw_patch jobs progress",
            c_abi::patch(&config, "jobs", &job_id, &json!({"progress": "100.5"})),
            "jobs.progress",
            "progress >= 0 AND progress <= 100",
        ),
        (
            "dw_call jobs.set_progress",
            c_abi::call(&config, "jobs.set_progress", &json!({"id": job_id, "progress": "-0.5"})),
            "jobs.progress",
            "progress >= 0 AND progress <= 100",
        ),
        (
            "dw_insert prompts version",
            c_abi::insert(&config, "prompts", &json!({"key": "k", "body": "b", "version": 0})),
            "prompts.version",
            "version >= 1",
        ),
        // Lower-case text (the users API lower-cases an address itself; the generic calls take
        // the row as given, so they must refuse it).
        (
            "dw_insert users",
            c_abi::insert(&config, "users", &json!({"email": "Mixed@Example.com", "display_name": "M"})),
            "users.email",
            "email = lower(email)",
        ),
        (
            "dw_patch users",
            c_abi::patch(&config, "users", &user_id, &json!({"email": "Mixed@Example.com"})),
            "users.email",
            "email = lower(email)",
        ),
        // A value set.
        (
            "dw_insert jobs priority",
            c_abi::insert(&config, "jobs", &json!({"type": "t", "priority": "whenever"})),
            "jobs.priority",
            "not one of",
        ),
        (
            "dw_call jobs.submit priority",
            c_abi::call(&config, "jobs.submit", &json!({"type": "t", "priority": "whenever"})),
            "jobs.priority",
            "not one of",
        ),
    ];
    for (what, (rc, message), field, rule) in &refused {
        assert_eq!(*rc, 3, "{what}: DW_INVALID_ARGUMENT expected, got {rc}: {message}");
        assert!(message.contains(field) && message.contains(rule), "{what}: {message}");
    }
    // The typed API gives the same error.
    assert_invalid(b.submit_job(&NewJob::new("")), "jobs.type");
    assert_invalid(b.set_job_progress(job.id, "101"), "jobs.progress");
    assert_invalid(b.record_audit_event(&NewAuditEvent::new("", "jobs", None)), "audit_events.action");
    assert_invalid(b.publish_prompt("", "b", None), "prompts.key");
    assert_invalid(b.put_api_key(user.id, "", b"s", None), "api_keys.provider");

    assert_eq!(depth(&b), before, "a refused value reached the outbox");
    let rows_after: Vec<usize> = ["jobs", "users", "prompts", "audit_events"]
        .iter()
        .map(|t| b.list(t, &json!({})).unwrap().len())
        .collect();
    assert_eq!(rows_after, rows_before);
    assert_eq!(b.get_job(job.id).unwrap().unwrap(), job, "a refused patch changed the row");

    // The users API lower-cases an address before it is checked: accepted, stored lower-case.
    let (rc, reply) =
        c_abi::call(&config, "users.create", &json!({"email": "Mixed@Example.com", "display_name": "M"}));
    assert_eq!(rc, 0, "{reply}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&reply).unwrap()["email"], "mixed@example.com");
}
