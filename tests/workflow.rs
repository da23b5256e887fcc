//! The whole api/worker workflow through the typed repository API, then both stores compared,
//! and API-key secrets read across the stores (pgcrypto ⇄ the library).
//!
//! Needs PostgreSQL: `pg_virtualenv -v 15 cargo test --test workflow` (scripts/test does that).

mod common;

use dualwrite::{
    serpapi_hash, Cache, GeneratedTextRevision, GeneratedTextStatus, HeadingLevel, JobPriority, JobStatus,
    LogLevel, NewAuditEvent, NewEmbedding, NewGeneratedText, NewHeading, NewJob, NewJobLog, NewPage,
    NewSerpApiResult, NewUser, Paging, SecretKey, SectionType, UserChanges, UserRole,
};
use serde_json::json;
use std::time::Duration;

const FLUSH: Duration = Duration::from_secs(30);

#[test]
fn the_whole_workflow_through_the_typed_api_reaches_postgres_intact() {
    let db = common::migrated_db();
    let dir = tempfile::tempdir().unwrap();
    let b = common::bridge(&db, dir.path());

    // ----- users
    let ann = b.create_user(&NewUser::new("Ann@Example.COM", "Ann")).unwrap();
    assert_eq!(ann.email, "ann@example.com");
    assert_eq!(ann.role, UserRole::Member);
    assert!(ann.disabled_at.is_none());
    let bob = b
        .create_user(&NewUser { role: Some(UserRole::Reviewer), ..NewUser::new("bob@example.com", "Bob") })
        .unwrap();
    assert_eq!(b.get_user_by_email("ANN@example.com").unwrap().unwrap().id, ann.id);
    assert_eq!(b.get_user(bob.id).unwrap().unwrap(), bob);
    let ann = b
        .update_user(
            ann.id,
            &UserChanges { display_name: Some("Ann A.".into()), role: Some(UserRole::Admin), email: None },
        )
        .unwrap();
    assert_eq!((ann.display_name.as_str(), ann.role), ("Ann A.", UserRole::Admin));
    assert!(ann.updated_at >= ann.created_at);
    let carl = b.create_user(&NewUser::new("carl@example.com", "Carl")).unwrap();
    let carl = b.disable_user(carl.id).unwrap();
    assert!(carl.disabled_at.is_some());
    assert_eq!(b.disable_user(carl.id).unwrap().disabled_at, carl.disabled_at, "disable is idempotent");
    let users = b.list_users(Paging::default()).unwrap();
    assert_eq!(users.iter().map(|u| u.id).collect::<Vec<_>>(), vec![ann.id, bob.id, carl.id]);
    assert_eq!(b.list_users(Paging::new(1, 1)).unwrap()[0].id, bob.id);

    // ----- api keys
    let first =
        b.put_api_key(ann.id, "serpapi", b"sk_first_secret_value", Some(&json!({"env": "prod"}))).unwrap();
    assert_eq!(first.metadata, json!({"env": "prod"}));
    assert_eq!(b.api_key_secret(ann.id, "serpapi").unwrap().expose(), b"sk_first_secret_value");
    // Put again: replaces the secret of the same record, keeps metadata when none is given.
    let replaced = b.put_api_key(ann.id, "serpapi", b"sk_second_secret_value", None).unwrap();
    assert_eq!((replaced.id, replaced.created_at.as_str()), (first.id, first.created_at.as_str()));
    assert_eq!(replaced.metadata, json!({"env": "prod"}));
    assert!(replaced.rotated_at.is_some());
    assert_eq!(b.api_key_secret(ann.id, "serpapi").unwrap().expose_str().unwrap(), "sk_second_secret_value");
    let rotated = b.rotate_api_key(ann.id, "serpapi", "sk_rotated_ключ_🔑".as_bytes()).unwrap();
    assert_eq!(rotated.id, first.id);
    assert!(rotated.rotated_at.as_deref() >= replaced.rotated_at.as_deref());
    assert_eq!(b.api_key_secret(ann.id, "serpapi").unwrap().expose_str().unwrap(), "sk_rotated_ключ_🔑");
    b.put_api_key(ann.id, "openai", b"sk_openai", None).unwrap();
    let keys = b.list_api_keys(ann.id).unwrap();
    assert_eq!(keys.iter().map(|k| k.provider.as_str()).collect::<Vec<_>>(), ["openai", "serpapi"]);
    assert!(b.delete_api_key(ann.id, "openai").unwrap());
    assert!(!b.delete_api_key(ann.id, "openai").unwrap());
    assert!(b.api_key_secret(ann.id, "openai").unwrap_err().is_not_found());
    assert!(b.rotate_api_key(bob.id, "serpapi", b"x").unwrap_err().is_not_found());

    // ----- jobs
    let normal = b
        .submit_job(&NewJob {
            owner_id: Some(ann.id),
            payload: Some(json!({"keyword": "coffee"})),
            ..NewJob::new("serp")
        })
        .unwrap();
    assert_eq!(
        (normal.status, normal.priority, normal.progress.as_str()),
        (JobStatus::Queued, JobPriority::Normal, "0")
    );
    let urgent = b
        .submit_job(&NewJob {
            owner_id: Some(ann.id),
            priority: Some(JobPriority::Urgent),
            ..NewJob::new("crawl")
        })
        .unwrap();
    let claimed = b.claim_next_job().unwrap().unwrap();
    assert_eq!(claimed.id, urgent.id, "urgent before an older normal job");
    assert_eq!(claimed.status, JobStatus::Running);
    assert!(claimed.started_at.is_some());
    let job = b.set_job_progress(urgent.id, "42.5").unwrap();
    assert_eq!(job.progress, "42.5");
    let job = b.set_job_progress(urgent.id, "100").unwrap();
    assert_eq!(job.progress, "100");
    let job = b.set_job_status(urgent.id, JobStatus::Succeeded).unwrap();
    assert_eq!(job.status, JobStatus::Succeeded);
    assert!(job.finished_at.is_some());
    let second = b.claim_next_job().unwrap().unwrap();
    assert_eq!(second.id, normal.id);
    assert!(b.claim_next_job().unwrap().is_none(), "nothing left to claim");
    b.set_job_status(normal.id, JobStatus::Failed).unwrap();
    assert_eq!(b.list_jobs_by_owner(ann.id, Paging::default()).unwrap().len(), 2);
    let done = b.list_jobs_by_status(JobStatus::Succeeded, Paging::default()).unwrap();
    assert_eq!(done.iter().map(|j| j.id).collect::<Vec<_>>(), [urgent.id]);
    assert_eq!(b.get_job(urgent.id).unwrap().unwrap(), job);

    // ----- job logs
    let logs: Vec<_> = (0..5)
        .map(|i| {
            let log = NewJobLog {
                step: Some(format!("step-{i}")),
                context: Some(json!({"i": i})),
                ..NewJobLog::new(
                    urgent.id,
                    if i == 4 { LogLevel::Warning } else { LogLevel::Info },
                    format!("log {i}"),
                )
            };
            b.append_job_log(&log).unwrap()
        })
        .collect();
    let all = b.list_job_logs(urgent.id, Paging::default()).unwrap();
    assert_eq!(all, logs, "logs come back in append order");
    let page = b.list_job_logs(urgent.id, Paging::new(2, 2)).unwrap();
    assert_eq!(page.iter().map(|l| l.message.as_str()).collect::<Vec<_>>(), ["log 2", "log 3"]);
    let after = b.list_job_logs_after(urgent.id, Some(logs[1].id), 2).unwrap();
    assert_eq!(after, logs[2..4].to_vec());
    assert_eq!(b.list_job_logs_after(urgent.id, None, 1).unwrap(), logs[..1].to_vec());
    assert!(b.list_job_logs_after(urgent.id, Some(logs[4].id), 10).unwrap().is_empty());

    // ----- SerpApi results: one per query, upserted by hash
    let params = json!({"hl": "en", "gl": "us", "num": 10});
    let serp = b
        .record_serpapi_result(&NewSerpApiResult {
            keyword: "coffee".into(),
            params: Some(params.clone()),
            raw_json: json!({"organic_results": [{"position": 1, "link": "https://a.example/"}]}),
            job_id: Some(normal.id),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(serp.hash, serpapi_hash("coffee", &params));
    assert_eq!(serp.hash.len(), 64);
    let refreshed = b
        .record_serpapi_result(&NewSerpApiResult {
            keyword: "coffee".into(),
            params: Some(json!({"num": 10, "gl": "us", "hl": "en"})),
            raw_json: json!({"organic_results": []}),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(refreshed.id, serp.id, "same query, same row");
    assert_eq!(refreshed.raw_json, json!({"organic_results": []}));
    assert_eq!(refreshed.job_id, Some(normal.id));
    assert!(refreshed.fetched_at >= serp.fetched_at);
    assert_eq!(b.get_serpapi_result_by_hash(&serp.hash).unwrap().unwrap(), refreshed);
    assert!(b.get_serpapi_result_by_hash("0000").unwrap().is_none());

    // ----- page, embedding, headings
    let page = b
        .add_page(&NewPage {
            title: Some("Coffee".into()),
            lang: Some("en".into()),
            source_job_id: Some(normal.id),
            serpapi_result_id: Some(serp.id),
            ..NewPage::new("https://a.example/")
        })
        .unwrap();
    assert_eq!(b.get_page(page.id).unwrap().unwrap(), page);
    let emb = b
        .upsert_embedding(&NewEmbedding {
            text_hash: "h-coffee".into(),
            model: "mini-384".into(),
            vector: vec![0.1, -0.25, 3.5e-3],
            meta: Some(json!({"dim": 3})),
            id: None,
        })
        .unwrap();
    let emb2 = b
        .upsert_embedding(&NewEmbedding {
            text_hash: "h-coffee".into(),
            model: "mini-384".into(),
            vector: vec![0.5, 0.5, 0.5],
            meta: None,
            id: None,
        })
        .unwrap();
    assert_eq!(
        (emb2.id, emb2.meta.clone()),
        (emb.id, json!({"dim": 3})),
        "deduplicated by (text_hash, model)"
    );
    assert_eq!(emb2.vector, vec![0.5, 0.5, 0.5]);
    assert_eq!(b.get_embedding_by_hash("h-coffee", "mini-384").unwrap().unwrap(), emb2);
    assert_eq!(b.get_embedding(emb.id).unwrap().unwrap(), emb2);
    assert!(b.get_embedding_by_hash("h-coffee", "other").unwrap().is_none());
    let heads = b
        .add_headings(
            page.id,
            &[
                NewHeading {
                    embeddings_ref: Some(emb.id),
                    ..NewHeading::new(HeadingLevel::H1, "All about coffee")
                },
                NewHeading::new(HeadingLevel::H2, "Beans"),
                NewHeading::new(HeadingLevel::H2, "Roasting"),
                NewHeading::new(HeadingLevel::H3, "Dark roast"),
            ],
        )
        .unwrap();
    let listed = b.list_headings(page.id).unwrap();
    assert_eq!(listed, heads);
    assert_eq!(
        listed.iter().map(|h| h.text.as_str()).collect::<Vec<_>>(),
        ["All about coffee", "Beans", "Roasting", "Dark roast"]
    );

    // ----- generated text: versions and review
    let v1 = b
        .create_generated_text(&NewGeneratedText {
            heading: Some("Beans".into()),
            keywords_used: Some(json!(["coffee", "beans"])),
            lang: Some("en".into()),
            source_heading_id: Some(heads[1].id),
            owner_id: Some(bob.id),
            job_id: Some(normal.id),
            ..NewGeneratedText::new(SectionType::Section, "Beans are seeds.")
        })
        .unwrap();
    assert_eq!((v1.version, v1.status), (1, GeneratedTextStatus::Draft));
    let v2 = b
        .add_generated_text_version(v1.id, &GeneratedTextRevision::new("Beans are the seeds of a cherry."))
        .unwrap();
    assert_eq!((v2.version, v2.status), (2, GeneratedTextStatus::Draft));
    assert_eq!(
        (
            v2.section_type,
            v2.source_heading_id,
            v2.owner_id,
            v2.job_id,
            v2.heading.clone(),
            v2.keywords_used.clone()
        ),
        (
            v1.section_type,
            v1.source_heading_id,
            v1.owner_id,
            v1.job_id,
            v1.heading.clone(),
            v1.keywords_used.clone()
        )
    );
    // Revising an older version still numbers after the newest of the lineage.
    let v3 = b
        .add_generated_text_version(
            v1.id,
            &GeneratedTextRevision {
                metrics: Some(json!({"words": 7})),
                ..GeneratedTextRevision::new("Seeds.")
            },
        )
        .unwrap();
    assert_eq!(v3.version, 3);
    assert_eq!(v3.metrics, json!({"words": 7}));
    for s in [GeneratedTextStatus::InReview, GeneratedTextStatus::Rejected, GeneratedTextStatus::Draft] {
        b.set_generated_text_status(v2.id, s).unwrap();
    }
    for s in [GeneratedTextStatus::InReview, GeneratedTextStatus::Approved, GeneratedTextStatus::Published] {
        assert_eq!(b.set_generated_text_status(v3.id, s).unwrap().status, s);
    }
    let other = b
        .create_generated_text(&NewGeneratedText {
            owner_id: Some(bob.id),
            ..NewGeneratedText::new(SectionType::Title, "Coffee")
        })
        .unwrap();
    let by_heading = b.list_generated_text_by_heading(heads[1].id, Paging::default()).unwrap();
    assert_eq!(by_heading.iter().map(|t| t.version).collect::<Vec<_>>(), [1, 2, 3]);
    let by_owner = b.list_generated_text_by_owner(bob.id, Paging::default()).unwrap();
    assert_eq!(by_owner.iter().map(|t| t.id).collect::<Vec<_>>(), [v1.id, v2.id, v3.id, other.id]);
    assert_eq!(b.get_generated_text(v3.id).unwrap().unwrap().status, GeneratedTextStatus::Published);

    // ----- prompts
    let p1 = b.publish_prompt("section.intro", "Write an intro about {topic}.", Some(ann.id)).unwrap();
    let p2 = b.publish_prompt("section.intro", "Write a short intro about {topic}.", None).unwrap();
    let q1 = b.publish_prompt("title", "A title for {topic}.", Some(bob.id)).unwrap();
    assert_eq!((p1.version, p2.version, q1.version), (1, 2, 1));
    assert_eq!(b.latest_prompt("section.intro").unwrap().unwrap(), p2);
    assert_eq!(b.prompt_version("section.intro", 1).unwrap().unwrap(), p1);
    assert!(b.prompt_version("section.intro", 3).unwrap().is_none());
    assert!(b.latest_prompt("nope").unwrap().is_none());
    assert_eq!(b.list_prompt_versions("section.intro").unwrap(), vec![p1, p2]);

    // ----- caches
    let hit = b
        .cache_put(Cache::Wordstat, "coffee|us", &json!({"shows": 12345}), Duration::from_secs(3600))
        .unwrap();
    assert_eq!(b.cache_get(Cache::Wordstat, "coffee|us").unwrap().unwrap(), hit);
    assert!(b.cache_get(Cache::TextAnalytics, "coffee|us").unwrap().is_none(), "caches are separate");
    b.cache_put(Cache::TextAnalytics, "short", &json!({"n": 1}), Duration::from_millis(1)).unwrap();
    b.cache_put(Cache::TextAnalytics, "long", &json!({"n": 2}), Duration::from_secs(3600)).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    assert!(b.cache_get(Cache::TextAnalytics, "short").unwrap().is_none(), "expired is a miss");
    assert_eq!(b.cache_get(Cache::TextAnalytics, "long").unwrap().unwrap().value, json!({"n": 2}));
    // Put over an entry replaces it.
    let again =
        b.cache_put(Cache::Wordstat, "coffee|us", &json!({"shows": 1}), Duration::from_secs(60)).unwrap();
    assert_eq!(b.cache_get(Cache::Wordstat, "coffee|us").unwrap().unwrap(), again);
    assert_eq!(b.purge_expired(Cache::TextAnalytics).unwrap(), 1);
    assert_eq!(b.purge_expired(Cache::TextAnalytics).unwrap(), 0);
    assert_eq!(b.purge_expired(Cache::Wordstat).unwrap(), 0);
    b.cache_put(Cache::Wordstat, "gone", &json!([]), Duration::from_secs(60)).unwrap();
    assert!(b.cache_delete(Cache::Wordstat, "gone").unwrap());

    // ----- audit
    let e1 = b
        .record_audit_event(&NewAuditEvent {
            actor_id: Some(ann.id),
            metadata: Some(json!({"from": "queued", "to": "succeeded"})),
            ..NewAuditEvent::new("job.finished", "jobs", Some(urgent.id))
        })
        .unwrap();
    let e2 = b
        .record_audit_event(&NewAuditEvent {
            actor_id: Some(bob.id),
            ..NewAuditEvent::new("text.published", "generated_text", Some(v3.id))
        })
        .unwrap();
    let e3 = b
        .record_audit_event(&NewAuditEvent {
            actor_id: Some(ann.id),
            ..NewAuditEvent::new("job.failed", "jobs", Some(normal.id))
        })
        .unwrap();
    assert_eq!(
        b.list_audit_events_for_entity("jobs", Some(urgent.id), Paging::default()).unwrap(),
        vec![e1.clone()]
    );
    assert_eq!(
        b.list_audit_events_for_entity("jobs", None, Paging::default()).unwrap(),
        vec![e1.clone(), e3.clone()]
    );
    assert_eq!(b.list_audit_events_by_actor(ann.id, Paging::default()).unwrap(), vec![e1, e3]);
    assert_eq!(b.list_audit_events_by_actor(bob.id, Paging::default()).unwrap(), vec![e2]);

    // ----- both stores hold the same data
    b.flush(FLUSH).unwrap();
    common::assert_stores_equal(&b, &db);
    let st = b.status().unwrap();
    assert_eq!((st.outbox_depth, st.dead_letters), (0, 0), "{st:?}");

    // ----- PostgreSQL's pgcrypto reads what the library wrote ...
    let key = SecretKey::load(&b.config().key_source).unwrap();
    let mut pg = db.connect();
    let plain: String = pg
        .query_one(
            "SELECT pgp_sym_decrypt(secret_ciphertext, $1) FROM api_keys WHERE owner_id = $2 AND provider = 'serpapi'",
            &[&key.expose_for_sql(), &ann.id],
        )
        .unwrap()
        .get(0);
    assert_eq!(plain, "sk_rotated_ключ_🔑");

    // ... and the library reads what pgcrypto writes: the same pgp_sym_encrypt output written
    // into both stores (as a backfill or a PostgreSQL-side writer would) is what api_key_secret
    // decrypts.
    let from_pg: Vec<u8> = pg
        .query_one(
            "UPDATE api_keys SET secret_ciphertext = pgp_sym_encrypt($1, $2, 'cipher-algo=aes128') \
             WHERE id = $3 RETURNING secret_ciphertext",
            &[&"sk_written_by_postgres", &key.expose_for_sql(), &rotated.id],
        )
        .unwrap()
        .get(0);
    assert_eq!(key.decrypt(&from_pg).unwrap(), b"sk_written_by_postgres");
    let lite = rusqlite::Connection::open(&b.config().sqlite_path).unwrap();
    lite.execute(
        "UPDATE api_keys SET secret_ciphertext = ?1 WHERE id = ?2",
        rusqlite::params![from_pg, rotated.id.to_string()],
    )
    .unwrap();
    assert_eq!(b.api_key_secret(ann.id, "serpapi").unwrap().expose(), b"sk_written_by_postgres");
    common::assert_stores_equal(&b, &db);
}
