//! Metrics: `dualwrite status --prometheus` and `dualwrite metrics --listen` pass `promtool check
//! metrics` and carry the shared figures (outbox, dead letters, flags, backfill, last verify);
//! `dualwrite status --check` exits 4 on lag, dead letters or a last error.

mod common;

use dualwrite::{Bridge, BridgeOptions};
use serde_json::json;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Output, Stdio};

fn cli(config: &dualwrite::Config, pg_url: &str, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dualwrite"));
    c.args(args)
        .env("DUALWRITE_SQLITE_PATH", &config.sqlite_path)
        .env("DUALWRITE_PG_URL", pg_url)
        .env_remove("DUALWRITE_CONFIG")
        .env_remove("DUALWRITE_FORCE_SQLITE");
    if let dualwrite::KeySource::File(f) = &config.key_source {
        c.env("DUALWRITE_SECRET_KEY_FILE", f);
    }
    c
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// `promtool check metrics` (Debian package `prometheus`, installed by scripts/setup) on `body`.
fn promtool_accepts(body: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("promtool is needed (scripts/setup installs the prometheus package): {e}")
        });
    child.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "promtool check metrics refused it: {}\n{body}", text(&out));
    // promtool prints lint findings (naming conventions) but exits 0 for them; keep it clean.
    assert!(text(&out).trim().is_empty(), "promtool lint: {}\n{body}", text(&out));
}

/// The value of the sample written exactly as `series` (name and labels).
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn status_prometheus_and_check_report_the_shared_state() {
    let db = common::migrated_db();
    let (dir, _) = common::temp_sqlite();
    let config = common::config(&db, dir.path());
    let url = common::url_of(&db);
    // No replicator: the writes stay in the outbox.
    let bridge =
        Bridge::open(config.clone(), BridgeOptions { replicate: false, ..Default::default() }).unwrap();
    for i in 0..3 {
        bridge.insert("users", &json!({"email": format!("u{i}@example.com"), "display_name": "U"})).unwrap();
    }
    bridge
        .set_flag(
            dualwrite::FlagChange::parse("read_source:jobs", "shadow").unwrap(),
            "test",
            "metrics",
            false,
        )
        .unwrap();

    // 3 users and the flag change's audit event.
    let depth = bridge.status().unwrap().outbox_depth;
    assert_eq!(depth, 4);
    let out = cli(&config, &url, &["status", "--prometheus"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let body = String::from_utf8(out.stdout).unwrap();
    promtool_accepts(&body);
    assert_eq!(sample(&body, "dualwrite_outbox_depth"), Some(depth as f64), "{body}");
    assert_eq!(sample(&body, "dualwrite_dead_letters"), Some(0.0));
    assert_eq!(sample(&body, "dualwrite_postgres_up"), Some(1.0));
    let mode = bridge.flags().write_mode.as_str();
    assert_eq!(sample(&body, &format!("dualwrite_write_mode{{mode=\"{mode}\"}}")), Some(1.0), "{body}");
    assert_eq!(sample(&body, "dualwrite_read_source_override{table=\"jobs\",source=\"shadow\"}"), Some(1.0));
    assert!(sample(&body, "dualwrite_replication_lag_seconds").unwrap() > 0.0);
    assert!(!body.contains("dualwrite_verify_last_ok"), "no verify ran yet: {body}");

    // Healthy under a generous lag limit; unhealthy (exit 4) when the pending changes are older
    // than the limit.
    let out = cli(&config, &url, &["status", "--check", "--max-lag", "3600"]).output().unwrap();
    assert_eq!((out.status.code(), text(&out).trim()), (Some(0), "ok"), "{}", text(&out));
    let out = cli(&config, &url, &["status", "--check", "--max-lag", "0"]).output().unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(
        text(&out).contains("replication lag") && text(&out).contains("4 change(s) pending"),
        "{}",
        text(&out)
    );

    // What PostgreSQL records: a backfill checkpoint and a failed verify run.
    let mut pg = db.connect();
    pg.batch_execute(
        "INSERT INTO dualwrite.backfill_checkpoints (table_name, rows_copied, chunks, finished) VALUES ('jobs', 1234, 2, true);
         INSERT INTO dualwrite.verify_runs (started_at, ok, tables, differences, in_flight, report)
         VALUES (now() - interval '1 minute', false, '{users}', 7, 0, '{}');",
    )
    .unwrap();
    // A dead letter, as the replicator records one.
    rusqlite::Connection::open(&config.sqlite_path)
        .unwrap()
        .execute(
            "INSERT INTO _dualwrite_dead_letters (seq, table_name, row_key, op, row_image, created_at, failed_at, error)
             VALUES (999999, 'users', 'k', 'upsert', NULL, '2026-01-01T00:00:00.000000Z', '2026-01-01T00:00:01.000000Z', 'refused')",
            [],
        )
        .unwrap();
    let out = cli(&config, &url, &["status", "--prometheus"]).output().unwrap();
    let body = String::from_utf8(out.stdout).unwrap();
    promtool_accepts(&body);
    assert_eq!(sample(&body, "dualwrite_backfill_rows_copied{table=\"jobs\"}"), Some(1234.0), "{body}");
    assert_eq!(sample(&body, "dualwrite_backfill_finished{table=\"jobs\"}"), Some(1.0));
    assert_eq!(sample(&body, "dualwrite_verify_last_ok"), Some(0.0));
    assert_eq!(sample(&body, "dualwrite_verify_last_differences"), Some(7.0));
    assert!(sample(&body, "dualwrite_verify_last_age_seconds").is_some());
    assert_eq!(sample(&body, "dualwrite_dead_letters"), Some(1.0));
    let out = cli(&config, &url, &["status", "--check", "--max-lag", "3600"]).output().unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(text(&out).contains("1 dead letter(s)"), "{}", text(&out));

    // PostgreSQL unreachable: still a valid scrape, saying so.
    let down = "host=127.0.0.1 port=1 user=nobody dbname=none connect_timeout=2";
    let out = cli(&config, down, &["status", "--prometheus"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let body = String::from_utf8(out.stdout).unwrap();
    promtool_accepts(&body);
    assert_eq!(sample(&body, "dualwrite_postgres_up"), Some(0.0));
    assert_eq!(sample(&body, "dualwrite_outbox_depth"), Some(depth as f64));

    // status --json says which fields are the CLI's own.
    let out = cli(&config, &url, &["status", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["this_process_only"].as_array().unwrap().contains(&json!("replicator_running")), "{v}");
}

fn get(addr: &str, path: &str) -> (String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: test\r\n\r\n").unwrap();
    let mut all = String::new();
    s.read_to_string(&mut all).unwrap();
    let (head, body) = all.split_once("\r\n\r\n").unwrap();
    (head.to_string(), body.to_string())
}

/// Kills the server when the test ends, passing or not.
struct Server(std::process::Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_metrics_endpoint_is_scraped_over_http() {
    let db = common::migrated_db();
    let (dir, _) = common::temp_sqlite();
    let config = common::config(&db, dir.path());
    let url = common::url_of(&db);
    let bridge =
        Bridge::open(config.clone(), BridgeOptions { replicate: false, ..Default::default() }).unwrap();
    bridge.insert("users", &json!({"email": "a@example.com", "display_name": "A"})).unwrap();

    let mut child =
        cli(&config, &url, &["metrics", "--listen", "127.0.0.1:0"]).stdout(Stdio::piped()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let _server = Server(child);
    let mut first = String::new();
    BufReader::new(stdout).read_line(&mut first).unwrap();
    let addr = first
        .trim()
        .strip_prefix("serving metrics on http://")
        .and_then(|a| a.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_string();
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");

    let (head, body) = get(&addr, "/metrics");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.contains("Content-Type: text/plain; version=0.0.4"), "{head}");
    promtool_accepts(&body);
    assert_eq!(sample(&body, "dualwrite_outbox_depth"), Some(1.0), "{body}");
    // Each scrape reads the state afresh.
    bridge.insert("users", &json!({"email": "b@example.com", "display_name": "B"})).unwrap();
    let (_, body) = get(&addr, "/metrics");
    assert_eq!(sample(&body, "dualwrite_outbox_depth"), Some(2.0), "{body}");
    let (head, _) = get(&addr, "/other");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
}
