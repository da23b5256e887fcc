//! Many processes on one SQLite file: all write, exactly one replicates (the lease), and when it
//! is killed another takes over within the lease; PostgreSQL converges exactly.
//!
//! The writers are this test binary re-run as `--ignored --exact writer_child` with DW_CHILD_*
//! variables set; nothing else is built for them.

mod common;

use dualwrite::{Bridge, BridgeOptions, Config, KeySource, PgConfig};
use serde_json::json;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn seconds() -> u64 {
    std::env::var("DUALWRITE_PROCESS_TEST_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(30)
}

fn spawn_writer(n: usize, config: &Config, pg_url: &str) -> Child {
    let KeySource::File(key) = &config.key_source else { panic!("tests use a key file") };
    Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "writer_child", "--nocapture", "--test-threads", "1"])
        .env("DW_CHILD_N", n.to_string())
        .env("DW_CHILD_SQLITE", &config.sqlite_path)
        .env("DW_CHILD_KEY", key)
        .env("DW_CHILD_PG", pg_url)
        .stdout(Stdio::null())
        .spawn()
        .expect("start a writer process")
}

fn lease_holder(path: &std::path::Path) -> Option<String> {
    let c = rusqlite::Connection::open(path).unwrap();
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    let (holder, expires): (Option<String>, Option<String>) = c
        .query_row("SELECT holder, expires_at FROM _dualwrite_replicator_lease", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    let now = dualwrite::schema::now_timestamp();
    holder.filter(|_| expires.is_some_and(|e| e > now))
}

fn pid_of(holder: &str) -> u32 {
    holder.split_whitespace().nth(1).and_then(|p| p.parse().ok()).expect("holder names its pid")
}

#[test]
fn four_writing_processes_one_replicator_at_a_time_takeover_after_kill_and_exact_convergence() {
    let db = common::migrated_db();
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(&db, dir.path());
    let url = common::url_of(&db);
    drop(Bridge::open(config.clone(), BridgeOptions { replicate: false, ..Default::default() }).unwrap());
    let mut children: Vec<Child> = (0..4).map(|n| spawn_writer(n, &config, &url)).collect();
    let started = Instant::now();
    let run_for = Duration::from_secs(seconds());

    // Wait for a replicator, then kill it mid-stream and watch another take over.
    let deadline = Instant::now() + Duration::from_secs(20);
    let first = loop {
        if let Some(h) = lease_holder(&config.sqlite_path) {
            break h;
        }
        assert!(Instant::now() < deadline, "no process took the replicator lease");
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(run_for / 3);
    let victim = pid_of(&first);
    let idx = children.iter().position(|c| c.id() == victim).expect("the holder is one of the writers");
    children[idx].kill().unwrap(); // SIGKILL
    children[idx].wait().unwrap();
    let killed_at = Instant::now();
    let second = loop {
        match lease_holder(&config.sqlite_path) {
            Some(h) if pid_of(&h) != victim => break h,
            _ => {}
        }
        let waited = killed_at.elapsed();
        assert!(waited < dualwrite::LEASE_DURATION + Duration::from_secs(3), "no takeover after {waited:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    println!("replicator {first} killed; {second} took over after {:?}", killed_at.elapsed());
    children[idx] = spawn_writer(idx, &config, &url);

    while started.elapsed() < run_for {
        let holders: Vec<String> = (0..5).filter_map(|_| lease_holder(&config.sqlite_path)).collect();
        assert!(
            holders.windows(2).all(|w| w[0] == w[1]) || holders.len() < 2,
            "the lease changed hands without a death"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for c in &mut children {
        c.kill().ok();
        c.wait().ok();
    }
    let b = common::bridge(&db, dir.path());
    b.flush(Duration::from_secs(120)).unwrap();
    common::assert_stores_equal(&b, &db);
    let st = b.status().unwrap();
    println!(
        "PROCESS SUMMARY: 4 writers for {:?}, applied {}, dead letters {}",
        run_for, st.applied_total, st.dead_letters
    );
    assert_eq!(st.dead_letters, 0);
}

/// Not a test on its own: the writer process of the test above (run only with DW_CHILD_N set).
#[test]
#[ignore = "child process of four_writing_processes_...; runs only when spawned by it"]
fn writer_child() {
    let Ok(n) = std::env::var("DW_CHILD_N") else { return };
    let config = Config {
        sqlite_path: std::env::var("DW_CHILD_SQLITE").unwrap().into(),
        postgres: Some(PgConfig::from_url(&std::env::var("DW_CHILD_PG").unwrap()).unwrap()),
        key_source: KeySource::File(std::env::var("DW_CHILD_KEY").unwrap().into()),
    };
    let b = Bridge::open(config, BridgeOptions::default()).unwrap();
    let job = b.insert("jobs", &json!({"type": format!("writer {n}")})).unwrap();
    let job_id = job["id"].as_str().unwrap().to_string();
    for i in 0u64.. {
        let key = format!("w{n}-{}", i % 300);
        let value = json!({"cache_key": key, "value": {"i": i}, "expires_at": "2030-01-01T00:00:00Z"});
        match i % 10 {
            9 => {
                b.delete("wordstat_cache", &key).unwrap();
            }
            _ => {
                if b.get("wordstat_cache", &key).unwrap().is_some() {
                    b.patch("wordstat_cache", &key, &json!({"value": {"i": i}})).unwrap();
                } else {
                    b.insert("wordstat_cache", &value).unwrap();
                }
            }
        }
        if i % 50 == 0 {
            b.patch("jobs", &job_id, &json!({"progress": format!("{}", (i / 50) % 101)})).unwrap();
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}
