//! Helpers for the fault tests (tests/faults.rs, tests/faults_more.rs, tests/faults_network.rs): a
//! TCP proxy that can take PostgreSQL down, cut, delay and black-hole its connections, a private
//! PostgreSQL cluster that can be stopped and started, the seeded workload with its checks, libpq
//! connection strings for a test database (direct or through the proxy), and the short/soak
//! switch.
#![allow(dead_code)]

pub mod cluster;
pub mod proxy;
pub mod workload;

use dualwrite::PgConfig;
use std::path::Path;
use std::time::Duration;

/// `DUALWRITE_SOAK=1` (anything but empty or `0`): the long mode of the fault scenarios.
pub fn soak() -> bool {
    std::env::var("DUALWRITE_SOAK").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// `short` normally, `long` under `DUALWRITE_SOAK=1`.
pub fn short_or_soak<T>(short: T, long: T) -> T {
    if soak() {
        long
    } else {
        short
    }
}

/// `PRAGMA integrity_check` of a SQLite file, its rows joined (`ok` when sound).
pub fn integrity_check(sqlite: &Path) -> String {
    let c = rusqlite::Connection::open(sqlite).unwrap();
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    let rows: Vec<String> = c
        .prepare("PRAGMA integrity_check")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    rows.join("; ")
}

/// A libpq `key=value` value, quoted.
fn quote(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// user, password and dbname of `config` as `key=value` pairs.
fn credentials(config: &postgres::Config) -> String {
    let mut s = format!("user={}", quote(config.get_user().unwrap_or("postgres")));
    if let Some(pw) = config.get_password() {
        s.push_str(&format!(" password={}", quote(&String::from_utf8_lossy(pw))));
    }
    if let Some(db) = config.get_dbname() {
        s.push_str(&format!(" dbname={}", quote(db)));
    }
    s
}

/// A connection string for the same server and database as `pg` (TCP host or Unix socket
/// directory), e.g. to hand to a child process.
pub fn conninfo(pg: &PgConfig) -> String {
    let c = pg.postgres_config();
    let host = match c.get_hosts().first() {
        Some(postgres::config::Host::Tcp(h)) => h.clone(),
        Some(postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = c.get_ports().first().copied().unwrap_or(5432);
    format!("host={} port={port} {}", quote(&host), credentials(c))
}

/// The same database as `pg`, reached through a proxy on 127.0.0.1:`port`.
pub fn via_proxy(pg: &PgConfig, port: u16) -> PgConfig {
    let url = format!("host=127.0.0.1 port={port} {}", credentials(pg.postgres_config()));
    PgConfig::from_url(&url).expect("proxied PostgreSQL config")
}
