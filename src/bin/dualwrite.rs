//! The `dualwrite` command for the people running the migration.

use clap::{Parser, Subcommand, ValueEnum};
use dualwrite::{doctor, Config, Store};
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
