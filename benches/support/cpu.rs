//! Where a benchmark's CPU time goes: this process per thread (by thread name) and the
//! PostgreSQL cluster it talks to per process kind (client backend, walsender, walwriter…), read
//! from /proc. Wall times on a shared 2-core machine move with other people's load; CPU-seconds
//! per row say what each side costs whatever the load.

use std::collections::BTreeMap;

/// The name under which threads that have ended are counted.
const EXITED_THREADS: &str = "(ended threads)";

/// CPU-seconds (user + system) by name at one moment.
#[derive(Clone, Debug, Default)]
pub struct CpuSnapshot {
    /// This process in all, threads that have ended included.
    pub process: f64,
    /// This process's live threads by name (threads of one name summed).
    pub threads: BTreeMap<String, f64>,
    /// The cluster's processes by kind, and each process's own figure (by pid) so a process
    /// started between two snapshots counts from zero.
    pub cluster: BTreeMap<u32, (String, f64)>,
}

impl CpuSnapshot {
    /// Now, for this process and the cluster whose postmaster is `postmaster` (0: no cluster).
    pub fn take(postmaster: u32) -> CpuSnapshot {
        let mut threads = BTreeMap::new();
        let mut live = 0.0;
        if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
            for task in dir.flatten() {
                let path = task.path();
                let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default().trim().to_string();
                if let Some(secs) = stat_cpu_secs(&path.join("stat")) {
                    *threads.entry(name).or_insert(0.0) += secs;
                    live += secs;
                }
            }
        }
        // Threads that ended (short-lived helpers) count in the process's figure only.
        let process = stat_cpu_secs(std::path::Path::new("/proc/self/stat")).unwrap_or(live);
        let mut cluster = BTreeMap::new();
        if postmaster != 0 {
            if let Ok(dir) = std::fs::read_dir("/proc") {
                for p in dir.flatten() {
                    let Ok(pid) = p.file_name().to_string_lossy().parse::<u32>() else { continue };
                    if pid != postmaster && parent_of(pid) != Some(postmaster) {
                        continue;
                    }
                    let Some(secs) = stat_cpu_secs(&p.path().join("stat")) else { continue };
                    cluster.insert(pid, (process_kind(pid, postmaster), secs));
                }
            }
        }
        CpuSnapshot { process, threads, cluster }
    }

    /// What happened between `earlier` and `self`: threads by name, the cluster by kind.
    pub fn since(&self, earlier: &CpuSnapshot) -> CpuSplit {
        let mut threads = BTreeMap::new();
        for (name, secs) in &self.threads {
            let before = earlier.threads.get(name).copied().unwrap_or(0.0);
            threads.insert(name.clone(), (secs - before).max(0.0));
        }
        // The rest of the process's time since then: threads that ended meanwhile.
        let named: f64 = threads.values().sum();
        threads.insert(EXITED_THREADS.into(), (self.process - earlier.process - named).max(0.0));
        let mut cluster: BTreeMap<String, f64> = BTreeMap::new();
        for (pid, (kind, secs)) in &self.cluster {
            let before = earlier.cluster.get(pid).map_or(0.0, |(_, s)| *s);
            *cluster.entry(kind.clone()).or_insert(0.0) += (secs - before).max(0.0);
        }
        CpuSplit { threads, cluster }
    }
}

/// CPU-seconds spent between two snapshots.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct CpuSplit {
    pub threads: BTreeMap<String, f64>,
    pub cluster: BTreeMap<String, f64>,
}

impl CpuSplit {
    pub fn client_total(&self) -> f64 {
        self.threads.values().sum()
    }
    pub fn cluster_total(&self) -> f64 {
        self.cluster.values().sum()
    }

    /// One line: totals, then the parts of at least 1 % of the total, largest first.
    pub fn render(&self) -> String {
        let parts = |m: &BTreeMap<String, f64>, total: f64| {
            let mut v: Vec<_> = m.iter().filter(|(_, s)| **s >= 0.01 * total.max(1e-9)).collect();
            v.sort_by(|a, b| b.1.total_cmp(a.1));
            v.iter().map(|(n, s)| format!("{n} {s:.2}")).collect::<Vec<_>>().join(", ")
        };
        format!(
            "client CPU {:.2} s ({}); PostgreSQL CPU {:.2} s ({})",
            self.client_total(),
            parts(&self.threads, self.client_total()),
            self.cluster_total(),
            parts(&self.cluster, self.cluster_total())
        )
    }
}

/// The postmaster of the cluster `client` is connected to (the parent of its backend).
pub fn postmaster_of(client: &mut postgres::Client) -> u32 {
    let backend: i32 = client.query_one("SELECT pg_backend_pid()", &[]).map(|r| r.get(0)).unwrap_or(0);
    parent_of(backend as u32).unwrap_or(0)
}

/// utime + stime of a /proc stat file, in seconds.
fn stat_cpu_secs(path: &std::path::Path) -> Option<f64> {
    let s = std::fs::read_to_string(path).ok()?;
    // The command name (field 2) may hold spaces; the fields after its closing parenthesis don't.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state (3), ppid (4), … utime (14), stime (15): indexes 11 and 12 here.
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / clock_ticks_per_sec())
}

fn parent_of(pid: u32) -> Option<u32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s[s.rfind(')')? + 2..].split_whitespace().nth(1)?.parse().ok()
}

/// A cluster process's kind from its title (`postgres: walsender …`, `postgres: user db … idle`).
fn process_kind(pid: u32, postmaster: u32) -> String {
    if pid == postmaster {
        return "postmaster".into();
    }
    let title =
        std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default().replace('\0', " ");
    // `postgres: [cluster name: ]what`, e.g. `postgres: 15/regress: walsender root [local] …`.
    let title = title.trim().rsplit(": ").next().unwrap_or_default().trim();
    for kind in [
        "walsender",
        "walwriter",
        "checkpointer",
        "background writer",
        "autovacuum",
        "logical replication",
        "stats",
    ] {
        if title.starts_with(kind) {
            return kind.into();
        }
    }
    "backend".into()
}

fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}
