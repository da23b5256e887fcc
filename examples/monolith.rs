//! A small "legacy monolith" that writes the application's real workflow through dualwrite with
//! dual write on, then shows what reached PostgreSQL. Configuration comes from the environment
//! (DUALWRITE_SQLITE_PATH, DUALWRITE_PG_URL or PG*, DUALWRITE_SECRET_KEY_FILE), as
//! scripts/demo-inside sets them. scripts/demo runs the same workflow from C (examples/monolith.c)
//! and Python (examples/monolith.py); this is the Rust version (`cargo run --example monolith`).
//!
//! The workflow: a user submits a SerpApi keyword job; the worker logs its steps, stores the
//! SerpApi result, fetches pages, extracts headings, embeds them, generates text from a prompt,
//! caches analytics, and every step is audited.

use dualwrite::{Bridge, BridgeOptions, Config};
use serde_json::json;
use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::load(None)?;
    let bridge = Bridge::open(config.clone(), BridgeOptions::default())?;
    let started = Instant::now();
    let writes = std::cell::Cell::new(0usize);
    let w = |table: &str, row: serde_json::Value| -> dualwrite::Result<String> {
        writes.set(writes.get() + 1);
        let stored = bridge.insert(table, &row)?;
        let key = if table.ends_with("_cache") { "cache_key" } else { "id" };
        Ok(stored[key].as_str().unwrap_or_default().to_string())
    };

    let user =
        w("users", json!({"email": "editor@example.com", "display_name": "Editor", "role": "member"}))?;
    let prompt = w(
        "prompts",
        json!({"key": "section.intro", "body": "Write an intro about {kw}", "version": 1, "updated_by": user}),
    )?;
    for n in 0..20 {
        let kw = format!("keyword {n}");
        let job = w(
            "jobs",
            json!({"type": "serp_keyword", "payload": {"keyword": kw}, "owner_id": user, "priority": "high"}),
        )?;
        w(
            "audit_events",
            json!({"actor_id": user, "action": "job.submit", "entity": "jobs", "entity_id": job}),
        )?;
        w(
            "job_logs",
            json!({"job_id": job, "level": "info", "step": "serpapi", "message": "fetching results"}),
        )?;
        let serp = w(
            "serpapi_results",
            json!({"keyword": kw, "params": {"hl": "en"}, "raw_json": {"organic": [1, 2, 3]},
            "hash": format!("{:064x}", n), "job_id": job}),
        )?;
        for p in 0..3 {
            let page = w(
                "pages",
                json!({"url": format!("https://example.com/{n}/{p}"), "title": "A page", "lang": "en",
                "source_job_id": job, "serpapi_result_id": serp}),
            )?;
            let emb = w(
                "embeddings",
                json!({"text_hash": format!("h-{n}-{p}"), "model": "minilm", "vector": [0.1, 0.2, 0.3, p as f32]}),
            )?;
            let heading = w(
                "headings",
                json!({"page_id": page, "level": "h2", "text": "Why it matters", "embeddings_ref": emb}),
            )?;
            w(
                "generated_text",
                json!({"section_type": "intro", "heading": "Why it matters", "content": "Generated text…",
                "keywords_used": [kw], "lang": "en", "source_heading_id": heading, "owner_id": user, "job_id": job}),
            )?;
        }
        w(
            "text_analytics_cache",
            json!({"cache_key": format!("ta:{n}"), "value": {"words": 512}, "expires_at": "2030-01-01T00:00:00Z"}),
        )?;
        w(
            "wordstat_cache",
            json!({"cache_key": format!("ws:{n}"), "value": {"freq": 1200}, "expires_at": "2030-01-01T00:00:00Z"}),
        )?;
        bridge.patch("jobs", &job, &json!({"status": "running", "progress": "50"}))?;
        bridge.patch("jobs", &job, &json!({"status": "succeeded", "progress": "100"}))?;
        writes.set(writes.get() + 2);
    }
    let _ = prompt;
    let writes = writes.get();
    let wrote = started.elapsed();
    println!(
        "monolith: {writes} writes committed to SQLite in {:.1} ms ({:.0} writes/s)",
        wrote.as_secs_f64() * 1e3,
        writes as f64 / wrote.as_secs_f64()
    );
    bridge.flush(Duration::from_secs(60))?;
    println!(
        "replicated to PostgreSQL {:.1} ms after the last write",
        (started.elapsed() - wrote).as_secs_f64() * 1e3
    );

    let mut pg = config.require_postgres()?.connect()?;
    println!("{:<22} {:>8} {:>10}", "table", "sqlite", "postgres");
    for t in dualwrite::schema::TABLES {
        let lite = bridge.list(t.name, &json!({"limit": 10_000}))?.len();
        let n: i64 = pg.query_one(&format!("SELECT count(*) FROM public.{}", t.name), &[])?.get(0);
        println!("{:<22} {:>8} {:>10}{}", t.name, lite, n, if lite as i64 == n { "" } else { "  MISMATCH" });
    }
    let st = bridge.status()?;
    println!(
        "status: outbox depth {}, applied {}, dead letters {}, retries {}",
        st.outbox_depth, st.applied_total, st.dead_letters, st.retries
    );
    bridge.shutdown(Duration::from_secs(5));
    Ok(())
}
