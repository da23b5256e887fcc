//! A private PostgreSQL cluster for one test: made with `initdb` in a temp dir, listening on
//! 127.0.0.1 on a free port, so the test can stop it with `pg_ctl -m immediate` (the postmaster
//! and every backend die without a checkpoint, as in a crash) and start it again (crash recovery)
//! without disturbing the shared cluster the other tests of the binary use.
//!
//! The binaries come from `$PG_CONFIG --bindir` (set by `pg_virtualenv`), else the newest
//! /usr/lib/postgresql/*/bin. `initdb` refuses to run as root: as root, every server command runs
//! as the `postgres` user, which then owns the temp dir. The extensions the migrations create
//! (`vector`, `pgcrypto`) are installed for the server version, so the cluster sees them.

use dualwrite::PgConfig;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct PrivateCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// uid and gid the server commands run as (we are root), or `None` (run as ourselves).
    owner: Option<(u32, u32)>,
}

fn id_of(args: &[&str]) -> u32 {
    let out = Command::new("id").args(args).output().expect("run id");
    assert!(out.status.success(), "id {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().parse().expect("a numeric id")
}

fn bindir() -> PathBuf {
    if let Ok(pg_config) = std::env::var("PG_CONFIG") {
        if let Ok(out) = Command::new(&pg_config).arg("--bindir").output() {
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if dir.join("initdb").exists() {
                return dir;
            }
        }
    }
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, d)| d.join("initdb").exists())
        .collect();
    dirs.sort();
    dirs.pop().map(|(_, d)| d).expect(
        "no initdb found (PG_CONFIG unset and no /usr/lib/postgresql/*/bin/initdb): run `scripts/setup`",
    )
}

/// A port nothing listens on now (the kernel's choice; a race with another process binding it
/// before the server does is possible but shows up as a clear start failure).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port").local_addr().unwrap().port()
}

impl PrivateCluster {
    /// initdb, configure and start a new cluster.
    pub fn start() -> PrivateCluster {
        let bin = bindir();
        let dir = tempfile::Builder::new().prefix("dw_private_pg").tempdir().expect("tempdir");
        let owner = (id_of(&["-u"]) == 0).then(|| (id_of(&["-u", "postgres"]), id_of(&["-g", "postgres"])));
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown the cluster dir");
        }
        let cluster = PrivateCluster { dir, bin, port: free_port(), owner };
        let data = cluster.data();
        cluster.run_ok(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                // Loopback only and thrown away with the test: no password to hand around.
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        // fsync off as in pg_virtualenv: an immediate stop kills the server, not the kernel, so
        // what the server wrote is still in the page cache and crash recovery finds it.
        let conf = format!(
            "\nport = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nfsync = off\n\
             max_connections = 50\nwal_level = logical\n",
            cluster.port,
            cluster.dir.path().display()
        );
        let mut f = std::fs::OpenOptions::new().append(true).open(data.join("postgresql.conf")).unwrap();
        std::io::Write::write_all(&mut f, conf.as_bytes()).unwrap();
        cluster.start_again();
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    fn run(&self, tool: &str, args: &[&str]) -> Output {
        let mut cmd = Command::new(self.bin.join(tool));
        cmd.args(args).current_dir(self.dir.path());
        if let Some((uid, gid)) = self.owner {
            cmd.uid(uid).gid(gid);
        }
        cmd.output().unwrap_or_else(|e| panic!("run {tool}: {e}"))
    }

    fn run_ok(&self, tool: &str, args: &[&str]) {
        let out = self.run(tool, args);
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}{}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log_tail()
        );
    }

    /// Start the (stopped) server and wait until it accepts connections (after crash recovery).
    pub fn start_again(&self) {
        let (data, log) = (self.data(), self.log());
        self.run_ok(
            "pg_ctl",
            &["-D", data.to_str().unwrap(), "-l", log.to_str().unwrap(), "-w", "-t", "120", "start"],
        );
    }

    /// `pg_ctl stop -m immediate`: every server process quits at once, no shutdown checkpoint.
    pub fn stop_immediate(&self) {
        self.run_ok("pg_ctl", &["-D", self.data().to_str().unwrap(), "-m", "immediate", "-w", "stop"]);
    }

    /// The `postgres` database as the superuser.
    pub fn admin(&self) -> PgConfig {
        PgConfig::from_url(&format!("host=127.0.0.1 port={} user=postgres dbname=postgres", self.port))
            .expect("private cluster config")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last lines of the server log (for failure messages and the test's output).
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Lines of the server log that contain `needle`.
    pub fn log_lines_with(&self, needle: &str) -> Vec<String> {
        let log = std::fs::read_to_string(self.log()).unwrap_or_default();
        log.lines().filter(|l| l.contains(needle)).map(str::to_string).collect()
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        // Fails harmlessly when already stopped (a test failed between a stop and a start).
        let _ = self.run("pg_ctl", &["-D", self.data().to_str().unwrap(), "-m", "immediate", "-w", "stop"]);
    }
}
