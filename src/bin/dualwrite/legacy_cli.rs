//! `dualwrite preflight` and the adoption output of `dualwrite migrate` (the `dualwrite` binary's;
//! the library API is `dualwrite::legacy`).

use clap::Args;
use dualwrite::legacy::{preflight, PreflightOptions};
use dualwrite::{Config, LegacyConfig, MigrationReport};
use std::path::Path;
use std::process::ExitCode;

#[derive(Args)]
pub struct PreflightArgs {
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Print the report as Markdown (for the migration log).
    #[arg(long, conflicts_with = "json")]
    markdown: bool,
    /// Example keys shown per problem.
    #[arg(long, default_value_t = 5)]
    examples: usize,
    /// Report only these tables, comma-separated (all are read: orphans need their parents).
    #[arg(long, value_delimiter = ',')]
    tables: Option<Vec<String>>,
}

/// Profile the SQLite file; exit 0 clean, 3 rejects (or blocking problems), 1 error (`crate::exit`).
pub fn preflight_command(config_file: Option<&Path>, a: &PreflightArgs) -> ExitCode {
    let run = || -> dualwrite::Result<(String, u8)> {
        let config = Config::load(config_file)?;
        let legacy = LegacyConfig::load(config_file)?;
        let opts = PreflightOptions {
            overrides: legacy.overrides.clone(),
            examples: a.examples,
            tables: a.tables.clone(),
            extra_columns_allowed: legacy.extra_columns == dualwrite::legacy::ExtraColumns::SetAside,
        };
        let report = preflight(&config.sqlite_path, &opts)?;
        let text = if a.json {
            serde_json::to_string_pretty(&report).map_err(|e| dualwrite::Error::Internal(e.to_string()))?
                + "\n"
        } else if a.markdown {
            report.render_markdown()
        } else {
            report.render_text()
        };
        Ok((text, report.exit_code()))
    };
    match run() {
        Ok((text, code)) => {
            print!("{text}");
            ExitCode::from(code)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(crate::exit::ERROR)
        }
    }
}

/// `migrate` for SQLite: adopts the monolith's tables (with the configuration's `[conversions]`
/// and `[adoption]`) when the file holds them, and prints what adoption did.
pub fn migrate_sqlite(config_file: Option<&Path>, path: &Path) -> dualwrite::Result<MigrationReport> {
    let legacy = LegacyConfig::load(config_file)?;
    let mut conn = rusqlite::Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    let report = dualwrite::migrate_sqlite_with(&mut conn, &legacy.adopt_options())?;
    if let Some(a) = &report.adoption {
        print!("{}", a.render());
    }
    Ok(report)
}
