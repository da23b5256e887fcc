//! The `dualwrite` command for the people running the migration.

use clap::{Parser, Subcommand, ValueEnum};
use dualwrite::{doctor, Bridge, BridgeOptions, Config, FlagChange, Store};
use std::path::PathBuf;
use std::process::ExitCode;

// The commands' arguments and output, in src/bin/dualwrite/ (the library has none of it):
// backfill / verify / repair,
mod migration_cli;
// preflight and the adoption output of migrate,
mod legacy_cli;
// status --prometheus / --check and the metrics endpoint.
mod metrics_cli;

/// The exit codes of every command, in one place (the README's table is this one). A script can
/// tell "the command could not run" from "it ran and found something": a usage error is never 2
/// (clap's own default), which `verify` uses for "the stores differ".
pub mod exit {
    /// Done; nothing found that needs attention.
    pub const OK: u8 = 0;
    /// The command could not do its job: a store unreachable, bad configuration, a refusal by a
    /// guard rail, a failed `doctor` check, `flags wait` timing out.
    pub const ERROR: u8 = 1;
    /// `verify` / `repair`: the stores differ.
    pub const DIFFERENT: u8 = 2;
    /// `preflight`: a backfill would produce rejects (or something blocks it).
    pub const REJECTS: u8 = 3;
    /// `status --check`: lag over the limit, dead letters, or a last error.
    pub const UNHEALTHY: u8 = 4;
    /// The command line is wrong (an unknown option, a missing argument): sysexits' EX_USAGE.
    pub const USAGE: u8 = 64;
}

#[derive(Parser)]
#[command(
    name = "dualwrite",
    version,
    about = "Move a live SQLite application to PostgreSQL without downtime"
)]
struct Cli {
    /// TOML configuration file (also DUALWRITE_CONFIG). Environment variables override it.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Copy the rows already in SQLite into PostgreSQL while the application keeps writing (resumable).
    Backfill(migration_cli::BackfillArgs),
    /// Profile the SQLite file before a backfill (reads only): exit 0 clean, 3 rejects, 1 error.
    Preflight(legacy_cli::PreflightArgs),
    /// Compare both stores (counts, chunk checksums, located keys); exit 2 when they differ.
    Verify(migration_cli::VerifyArgs),
    /// Re-enqueue the rows the last verify found different, replicate them, and check them again.
    Repair(migration_cli::RepairArgs),
    /// Apply the embedded schema migrations (both stores unless one is named).
    Migrate {
        #[arg(long, value_enum)]
        only: Option<StoreArg>,
        /// Create the SQLite file when there is none (without it a missing file is an error: a
        /// mistyped path must not become a new, empty database).
        #[arg(long)]
        create: bool,
    },
    /// Check both stores (readable, writable, intact), the extensions, the schema versions and the secret key.
    Doctor {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show or change the migration-phase flags.
    Flags {
        #[command(subcommand)]
        action: FlagsAction,
    },
    /// Go back to SQLite-only in one step (reads and writes), losing nothing; reports what is pending.
    /// From postgres_primary/postgres SQLite first catches up from PostgreSQL; if PostgreSQL is
    /// unreachable that is refused unless --force.
    Rollback {
        /// Who rolls back (recorded in audit_events; default: $USER, $LOGNAME or the user's name).
        #[arg(long)]
        who: Option<String>,
        #[arg(long)]
        why: String,
        /// Switch even when SQLite cannot catch up (PostgreSQL unreachable): its changes are then not in SQLite.
        #[arg(long)]
        force: bool,
    },
    /// The change capture (SQLite following PostgreSQL's changes): refused changes, resync, drop.
    Capture {
        #[command(subcommand)]
        action: CaptureAction,
    },
    /// Replication health: outbox depth, lag, applied, retries, dead letters, last error.
    Status {
        /// Print JSON instead of a table.
        #[arg(long, conflicts_with_all = ["prometheus", "check"])]
        json: bool,
        /// Print the shared figures in the Prometheus text format (one scrape).
        #[arg(long, conflicts_with = "check")]
        prometheus: bool,
        /// For monitoring scripts: print "ok" and exit 0, or print each problem (lag over
        /// --max-lag, dead letters, a last error, capture stopped) and exit 4.
        #[arg(long)]
        check: bool,
        /// With --check: the replication lag allowed, in seconds.
        #[arg(long, default_value_t = 60, requires = "check")]
        max_lag: u64,
    },
    /// Serve the figures of `status --prometheus` over HTTP at /metrics until stopped.
    Metrics {
        /// IP:PORT to listen on (loopback by default; port 0 picks a free one and prints it).
        #[arg(long, default_value = metrics_cli::DEFAULT_LISTEN)]
        listen: String,
    },
    /// Replicate everything pending now, then exit (fails if it cannot finish in time).
    Drain {
        /// Seconds to wait for the outbox to empty.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Changes PostgreSQL refused: list them, retry one (re-enqueue the row's current state), or drop one.
    DeadLetters {
        #[command(subcommand)]
        action: Option<DeadLetterAction>,
        /// Print JSON instead of a table (for `list`; also `dead-letters list --json`).
        #[arg(long, global = true)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum FlagsAction {
    /// Show the flags in effect (and whether DUALWRITE_FORCE_SQLITE overrides them here).
    Get {
        #[arg(long)]
        json: bool,
    },
    /// Set a flag for every process: write_mode=sqlite|dual|postgres_primary|postgres,
    /// read_source=sqlite|postgres|shadow, read_source:<table>=sqlite|postgres|shadow|default.
    #[command(after_help = "Write modes (docs/MIGRATION.md has the order and the guard rails):
  sqlite            SQLite only; changes stay captured in the outbox (the rollback target)
  dual              SQLite, then PostgreSQL in the background
  postgres_primary  PostgreSQL first, synchronously; SQLite follows right behind it
  postgres          PostgreSQL only; SQLite frozen (a rollback catches it up)
Read sources: sqlite, postgres, shadow (serve SQLite, compare PostgreSQL); per table with
read_source:<table>=…, `default` removes the table's override.")]
    Set {
        /// NAME=VALUE
        assignment: String,
        /// Who changes it (recorded in audit_events; default: $USER, $LOGNAME or the user's name).
        #[arg(long)]
        who: Option<String>,
        /// Why (recorded in audit_events).
        #[arg(long)]
        why: String,
        /// Override the guard rails (pending changes, dead letters).
        #[arg(long)]
        force: bool,
    },
    /// Wait until this process sees NAME=VALUE (for runbooks and scripts); prints how long it took.
    Wait {
        assignment: String,
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
}

#[derive(Subcommand)]
enum DeadLetterAction {
    List,
    Retry { seq: i64 },
    Drop { seq: i64 },
}

#[derive(Subcommand)]
enum CaptureAction {
    /// Captured PostgreSQL changes SQLite refused (a constraint), oldest first.
    DeadLetters,
    /// After the capture slot was lost (or dropped) while PostgreSQL is the primary: make a new slot
    /// and copy every PostgreSQL row into SQLite, so SQLite is a lossless fallback again.
    Resync {
        #[arg(long, env = "USER")]
        who: String,
        #[arg(long)]
        why: String,
    },
    /// Drop the capture slot once the monolith is switched off (a slot nobody reads keeps WAL
    /// forever). Refused while PostgreSQL is the primary unless --force: rollbacks would lose changes.
    Drop {
        #[arg(long)]
        force: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum StoreArg {
    Sqlite,
    Postgres,
}

fn main() -> ExitCode {
    // DUALWRITE_LOG (filter, default warn) and DUALWRITE_LOG_FORMAT (text|json), on stderr.
    dualwrite::logging::install_from_env();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version are not errors; anything else is a usage error, never 2.
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { exit::USAGE } else { exit::OK });
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(exit::ERROR)
        }
    }
}

/// `--who` when it is not given: `$USER`, else `$LOGNAME` (cron and systemd set only some of
/// them), else the name the password database has for this uid, else `uid <n>`.
fn default_who() -> String {
    for var in ["USER", "LOGNAME"] {
        if let Some(v) = std::env::var(var).ok().filter(|v| !v.trim().is_empty()) {
            return v;
        }
    }
    user_name_of_this_process()
}

fn user_name_of_this_process() -> String {
    use std::os::unix::fs::MetadataExt;
    // The owner of /proc/self is this process's uid; std offers no getuid().
    let Ok(uid) = std::fs::metadata("/proc/self").map(|m| m.uid()) else {
        return "unknown".into();
    };
    let from_passwd = std::fs::read_to_string("/etc/passwd").ok().and_then(|text| {
        text.lines().find_map(|line| {
            let mut f = line.split(':');
            let name = f.next()?;
            let id = f.nth(1)?;
            (id.parse::<u32>().ok()? == uid).then(|| name.to_string())
        })
    });
    from_passwd.unwrap_or_else(|| format!("uid {uid}"))
}

/// Every command except `migrate --create` (and `preflight`, which says it itself) works on an
/// existing SQLite file: opening a missing one would silently create a new, empty database.
fn require_sqlite_file(config: &Config) -> dualwrite::Result<()> {
    let path = &config.sqlite_path;
    if path.exists() {
        return Ok(());
    }
    let default = if path == std::path::Path::new(dualwrite::DEFAULT_SQLITE_PATH) {
        " (the default: neither DUALWRITE_SQLITE_PATH nor [sqlite] path in the config file is set)"
    } else {
        ""
    };
    Err(dualwrite::Error::Config(format!(
        "no SQLite file at {}{default}; check the path, or create a new database with `dualwrite migrate --create`",
        path.display()
    )))
}

/// A bridge that does not replicate: the CLI inspects and enqueues; the monolith's processes apply.
fn inspect(config: Config) -> dualwrite::Result<Bridge> {
    Bridge::open(config, BridgeOptions { migrate_sqlite: false, replicate: false, ..Default::default() })
}

fn run(cli: Cli) -> dualwrite::Result<ExitCode> {
    // Before Config::load: preflight reports its own errors, with exit code 2.
    if let Command::Preflight(a) = &cli.command {
        return Ok(legacy_cli::preflight_command(cli.config.as_deref(), a));
    }
    let config = Config::load(cli.config.as_deref())?;
    let sqlite_path = config.sqlite_path.clone();
    run_command(cli, config).map_err(|e| {
        if e.is_sqlite_read_only() {
            dualwrite::Error::Config(format!("{e} [{}]", sqlite_path.display()))
        } else {
            e
        }
    })
}

fn run_command(cli: Cli, config: Config) -> dualwrite::Result<ExitCode> {
    let creates = matches!(cli.command, Command::Migrate { create: true, .. })
        || matches!(cli.command, Command::Migrate { only: Some(StoreArg::Postgres), .. });
    // doctor reports a missing file as one of its checks.
    if !creates && !matches!(cli.command, Command::Doctor { .. }) {
        require_sqlite_file(&config)?;
    }
    match cli.command {
        Command::Backfill(a) => migration_cli::backfill(config, cli.config.as_deref(), a),
        Command::Verify(a) => migration_cli::verify(config, a),
        Command::Repair(a) => migration_cli::repair(config, a),
        Command::Preflight(a) => Ok(legacy_cli::preflight_command(cli.config.as_deref(), &a)),
        Command::Migrate { only, create: _ } => {
            let stores = match only {
                Some(StoreArg::Sqlite) => vec![Store::Sqlite],
                Some(StoreArg::Postgres) => vec![Store::Postgres],
                None => vec![Store::Sqlite, Store::Postgres],
            };
            for store in stores {
                let report = match store {
                    Store::Sqlite => legacy_cli::migrate_sqlite(cli.config.as_deref(), &config.sqlite_path)?,
                    Store::Postgres => {
                        dualwrite::migrate_postgres(&mut config.require_postgres()?.connect()?)?
                    }
                };
                if report.applied.is_empty() {
                    println!("{store}: up to date at version {}", report.version);
                }
                for (version, name, took) in &report.applied {
                    println!("{store}: applied {version} {name} in {} ms", took.as_millis());
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { prometheus: true, .. } => metrics_cli::print_prometheus(&inspect(config)?),
        Command::Status { check: true, max_lag, .. } => {
            metrics_cli::check(&inspect(config)?, std::time::Duration::from_secs(max_lag))
        }
        Command::Metrics { listen } => metrics_cli::serve(&inspect(config)?, &listen),
        Command::Status { json, .. } => {
            let st = inspect(config)?.status()?;
            if json {
                let mut v =
                    serde_json::to_value(&st).map_err(|e| dualwrite::Error::Internal(e.to_string()))?;
                // The rest is shared by every process on the file; these describe the CLI itself.
                v["this_process_only"] = serde_json::json!(THIS_PROCESS_ONLY);
                println!(
                    "{}",
                    serde_json::to_string_pretty(&v)
                        .map_err(|e| dualwrite::Error::Internal(e.to_string()))?
                );
            } else {
                let lag = st
                    .oldest_pending_ms
                    .map(|ms| format!("{:.3} s", ms as f64 / 1000.0))
                    .unwrap_or("none".into());
                println!("write mode         {}", st.flags.effective_write_mode());
                println!("outbox depth       {}", st.outbox_depth);
                println!("replication lag    {lag}");
                println!("applied (all time) {}", st.applied_total);
                println!("last applied at    {}", st.last_applied_at.as_deref().unwrap_or("never"));
                println!("retries            {}", st.retries);
                println!("dead letters       {}", st.dead_letters);
                println!("last error         {}", st.last_error.as_deref().unwrap_or("none"));
                if let Some(c) = &st.capture {
                    print_capture(c);
                }
                if let Some(since) = &st.capture_overflow_since {
                    println!(
                        "capture stopped    since {since}: the outbox reached its limit in write_mode sqlite; \
                         after returning to dual run `dualwrite verify` and `dualwrite repair`"
                    );
                }
                println!(
                    "(shared by every process on this file; the replicator and the reads of the monolith's \
                     processes are theirs: `status` runs none)"
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Drain { timeout } => {
            config.require_postgres()?;
            let bridge = Bridge::open(config, BridgeOptions { migrate_sqlite: false, ..Default::default() })?;
            let result = bridge.flush(std::time::Duration::from_secs(timeout));
            bridge.shutdown(std::time::Duration::from_secs(1));
            result?;
            let st = bridge.status()?;
            println!("drained: outbox depth {}, dead letters {}", st.outbox_depth, st.dead_letters);
            Ok(ExitCode::SUCCESS)
        }
        Command::DeadLetters { action, json } => {
            let bridge = inspect(config)?;
            match action.unwrap_or(DeadLetterAction::List) {
                DeadLetterAction::List => {
                    let letters = bridge.dead_letters()?;
                    if json {
                        println!(
                            "{}",
                            serde_json::to_string_pretty(&letters)
                                .map_err(|e| dualwrite::Error::Internal(e.to_string()))?
                        );
                    } else if letters.is_empty() {
                        println!("no dead letters");
                    } else {
                        println!(
                            "{:>8}  {:<20}  {:<36}  {:<6}  {:<27}  error",
                            "seq", "table", "key", "op", "failed at"
                        );
                        for d in letters {
                            println!(
                                "{:>8}  {:<20}  {:<36}  {:<6}  {:<27}  {}",
                                d.seq, d.table_name, d.row_key, d.op, d.failed_at, d.error
                            );
                        }
                    }
                }
                DeadLetterAction::Retry { seq } => {
                    if !bridge.retry_dead_letter(seq)? {
                        return Err(dualwrite::Error::not_found("dead letter", seq));
                    }
                    println!("dead letter {seq}: the row's current state is queued for replication again");
                }
                DeadLetterAction::Drop { seq } => {
                    if !bridge.drop_dead_letter(seq)? {
                        return Err(dualwrite::Error::not_found("dead letter", seq));
                    }
                    println!("dead letter {seq} dropped");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Flags { action } => flags_command(inspect(config)?, action),
        Command::Capture { action } => {
            let bridge = inspect(config)?;
            match action {
                CaptureAction::DeadLetters => {
                    let letters = bridge.capture_dead_letters()?;
                    if letters.is_empty() {
                        println!("no captured change was refused");
                    }
                    for d in letters {
                        println!(
                            "{:>6}  {}  {} {} {}  {}  {}",
                            d.seq, d.lsn, d.op, d.table, d.key, d.failed_at, d.error
                        );
                    }
                }
                CaptureAction::Resync { who, why } => {
                    let done = bridge.resync_sqlite_from_postgres(&who, &why)?;
                    println!(
                        "resynced: {} row(s) copied from PostgreSQL, {} deleted from SQLite; a new capture slot follows \
                         from here (run `dualwrite verify` once it has caught up)",
                        done.rows, done.deleted
                    );
                }
                CaptureAction::Drop { force } => {
                    let dropped = bridge.drop_capture(force)?;
                    println!("{}", if dropped { "capture slot dropped" } else { "no capture slot to drop" });
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Rollback { who, why, force } => {
            let who = who.unwrap_or_else(default_who);
            let bridge = inspect(config)?;
            let flags = bridge.rollback_to_sqlite(&who, &why, force)?;
            let st = bridge.status()?;
            println!("rolled back: write_mode={} read_source={}", flags.write_mode, flags.read_source);
            println!(
                "{} change(s) stay captured in the outbox; `dualwrite flags set write_mode=dual` replays them to PostgreSQL",
                st.outbox_depth
            );
            if st.dead_letters > 0 {
                println!("{} dead letter(s) need attention: `dualwrite dead-letters`", st.dead_letters);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Doctor { json } => {
            let checks = doctor::run(&config);
            let failed = checks.iter().filter(|c| c.status == doctor::CheckStatus::Fail).count();
            if json {
                println!("{}", doctor::render_json(&checks));
            } else {
                print!("{}", doctor::render(&checks));
                if failed > 0 {
                    println!("{failed} check(s) failed");
                } else {
                    println!("all checks passed");
                }
            }
            Ok(ExitCode::from(if failed > 0 { exit::ERROR } else { exit::OK }))
        }
    }
}

/// Fields of `status --json` that describe the process answering (the CLI: it replicates
/// nothing and serves no reads), not the monolith.
const THIS_PROCESS_ONLY: &[&str] = &[
    "applied_per_sec",
    "replicator_running",
    "replicator_holds_lease",
    "postgres_connected",
    "reads",
    "flags.forced_sqlite",
];

fn split_assignment(a: &str) -> dualwrite::Result<(&str, &str)> {
    a.split_once('=')
        .ok_or_else(|| dualwrite::Error::invalid("flag", "write it as NAME=VALUE, e.g. read_source=shadow"))
}

fn flags_command(bridge: Bridge, action: FlagsAction) -> dualwrite::Result<ExitCode> {
    match action {
        FlagsAction::Get { json } => {
            let f = bridge.flags();
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&*f)
                        .map_err(|e| dualwrite::Error::Internal(e.to_string()))?
                );
            } else {
                println!("write_mode   {}", f.write_mode);
                println!("read_source  {}", f.read_source);
                for (t, r) in &f.read_source_overrides {
                    println!("read_source:{t}  {r}");
                }
                if f.forced_sqlite {
                    println!("{} is set here: this process uses SQLite only", dualwrite::FORCE_SQLITE_ENV);
                }
            }
        }
        FlagsAction::Set { assignment, who, why, force } => {
            let who = who.unwrap_or_else(default_who);
            let (name, value) = split_assignment(&assignment)?;
            let f = bridge.set_flag(FlagChange::parse(name, value)?, &who, &why, force)?;
            println!("set {name}={value}; now write_mode={} read_source={}", f.write_mode, f.read_source);
        }
        FlagsAction::Wait { assignment, timeout } => {
            let (name, value) = split_assignment(&assignment)?;
            let want = FlagChange::parse(name, value)?;
            let started = std::time::Instant::now();
            loop {
                let f = bridge.flags();
                let seen = match &want {
                    FlagChange::WriteMode(m) => f.write_mode == *m,
                    FlagChange::ReadSource(r) => f.read_source == *r,
                    FlagChange::TableReadSource(t, r) => f.read_source_overrides.get(*t) == r.as_ref(),
                };
                if seen {
                    let unix_ms = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_millis())
                        .unwrap_or_default();
                    println!(
                        "seen {name}={value} after {} ms (unix_ms {unix_ms})",
                        started.elapsed().as_millis()
                    );
                    return Ok(ExitCode::SUCCESS);
                }
                if started.elapsed().as_secs() >= timeout {
                    println!("not seen {name}={value} within {timeout} s");
                    return Ok(ExitCode::from(exit::ERROR));
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The change capture's part of `dualwrite status`.
fn print_capture(c: &dualwrite::capture::CaptureStatus) {
    let follows =
        if c.era == "postgres_first" { "applies PostgreSQL's changes" } else { "watches for foreign writes" };
    println!("capture            SQLite {follows}; position {}", c.applied_lsn);
    if let Some(s) = &c.slot {
        println!(
            "capture slot       {} ({}), {} KiB of WAL retained, {} KiB not yet taken{}",
            dualwrite::capture::slot::SLOT,
            s.wal_status,
            s.retained_wal_bytes / 1024,
            s.pending_wal_bytes / 1024,
            s.safe_wal_bytes
                .map(|b| format!(", invalidated after {} MiB more", b / (1 << 20)))
                .unwrap_or_default()
        );
    }
    println!(
        "captured applied   {} (last commit taken {})",
        c.applied_total,
        c.last_commit_at.as_deref().unwrap_or("never")
    );
    println!("foreign writes     {}", c.foreign_total);
    for f in &c.recent_foreign {
        println!("  {} {} {} (committed {}, lsn {})", f.op, f.table, f.key, f.committed_at, f.lsn);
    }
    if c.dead_letters > 0 {
        println!("capture dead letters {} (changes SQLite refused)", c.dead_letters);
    }
    if let Some(e) = &c.last_error {
        println!("capture last error {e}");
    }
    if let Some(cut) = &c.cut_at {
        println!(
            "capture CUT        at {cut} by a forced rollback: PostgreSQL's later changes are not in SQLite"
        );
    }
    if let Some(p) = &c.problem {
        println!("CAPTURE PROBLEM    {p}");
    }
}
