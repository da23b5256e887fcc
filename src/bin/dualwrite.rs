//! The `dualwrite` command for the people running the migration.

use clap::{Parser, Subcommand, ValueEnum};
use dualwrite::{doctor, Bridge, BridgeOptions, Config, Store};
use std::path::PathBuf;
use std::process::ExitCode;

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
    /// Apply the embedded schema migrations (both stores unless one is named).
    Migrate {
        #[arg(long, value_enum)]
        only: Option<StoreArg>,
    },
    /// Check both stores, the extensions, the schema versions and the secret key.
    Doctor,
    /// Replication health: outbox depth, lag, applied, retries, dead letters, last error.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
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
        /// Print JSON instead of a table (for `list`).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum DeadLetterAction {
    List,
    Retry { seq: i64 },
    Drop { seq: i64 },
}

#[derive(Clone, Copy, ValueEnum)]
enum StoreArg {
    Sqlite,
    Postgres,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DUALWRITE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A bridge that does not replicate: the CLI inspects and enqueues; the monolith's processes apply.
fn inspect(config: Config) -> dualwrite::Result<Bridge> {
    Bridge::open(config, BridgeOptions { migrate_sqlite: false, replicate: false, ..Default::default() })
}

fn run(cli: Cli) -> dualwrite::Result<ExitCode> {
    let config = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Migrate { only } => {
            let stores = match only {
                Some(StoreArg::Sqlite) => vec![Store::Sqlite],
                Some(StoreArg::Postgres) => vec![Store::Postgres],
                None => vec![Store::Sqlite, Store::Postgres],
            };
            for store in stores {
                let report = match store {
                    Store::Sqlite => {
                        dualwrite::migrate_sqlite(&mut rusqlite::Connection::open(&config.sqlite_path)?)?
                    }
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
        Command::Status { json } => {
            let st = inspect(config)?.status()?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&st)
                        .map_err(|e| dualwrite::Error::Internal(e.to_string()))?
                );
            } else {
                let lag = st
                    .oldest_pending_ms
                    .map(|ms| format!("{:.3} s", ms as f64 / 1000.0))
                    .unwrap_or("none".into());
                println!("outbox depth       {}", st.outbox_depth);
                println!("replication lag    {lag}");
                println!("applied (all time) {}", st.applied_total);
                println!("last applied at    {}", st.last_applied_at.as_deref().unwrap_or("never"));
                println!("retries            {}", st.retries);
                println!("dead letters       {}", st.dead_letters);
                println!("last error         {}", st.last_error.as_deref().unwrap_or("none"));
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
        Command::Doctor => {
            let checks = doctor::run(&config);
            print!("{}", doctor::render(&checks));
            let failed = checks.iter().filter(|c| c.status == doctor::CheckStatus::Fail).count();
            if failed > 0 {
                println!("{failed} check(s) failed");
                Ok(ExitCode::FAILURE)
            } else {
                println!("all checks passed");
                Ok(ExitCode::SUCCESS)
            }
        }
    }
}
