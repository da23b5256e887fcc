//! `dualwrite backfill`, `dualwrite verify` and `dualwrite repair`: argument parsing, progress
//! bars and output (the `dualwrite` binary's; the library API is `dualwrite::backfill`,
//! `dualwrite::verify` and `dualwrite::repair`).

use clap::{Args, ValueEnum};
use dualwrite::backfill::{self, ApplyMethod, BackfillOptions, BackfillProgress, LogProgress, TableSummary};
use dualwrite::verify::{self, VerifyOptions};
use dualwrite::{Bridge, BridgeOptions, Config, LegacyConfig};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// Exit code of `verify` (and `repair`) when the stores differ; 1 is an error, 0 a match.
pub const EXIT_DIFFERENT: u8 = crate::exit::DIFFERENT;

#[derive(Args)]
pub struct BackfillArgs {
    /// Tables to copy, comma-separated (default: all, always in foreign-key order).
    #[arg(long, value_delimiter = ',')]
    tables: Option<Vec<String>>,
    /// Rows per chunk (one SQLite snapshot, one PostgreSQL transaction, one checkpoint).
    #[arg(long, default_value_t = 10_000)]
    chunk_size: usize,
    /// Copy at most this many rows per second.
    #[arg(long)]
    max_rows_per_sec: Option<u64>,
    /// Pause while more than this many changes wait in the outbox (0: never pause).
    #[arg(long, default_value_t = 50_000)]
    max_outbox_depth: i64,
    /// Copy finished tables again, from the first key.
    #[arg(long, conflicts_with = "retry_rejects")]
    restart: bool,
    /// Copy only the rows still listed as rejects (after fixing their data in SQLite): read again
    /// by key, converted and loaded; those that go through are marked resolved.
    #[arg(long)]
    retry_rejects: bool,
    /// Also append every rejected row to this JSON-lines file (the reasons are always in
    /// dualwrite.backfill_rejects) [default: the SQLite file's path + ".rejects.jsonl"].
    #[arg(long)]
    reject_file: Option<PathBuf>,
    /// Write rejects to dualwrite.backfill_rejects only, no file.
    #[arg(long, conflicts_with = "reject_file")]
    no_reject_file: bool,
    /// Stop after this many chunks (a trial run; run again to resume).
    #[arg(long)]
    stop_after_chunks: Option<u64>,
    /// How rows travel: binary COPY into a staging table (default) or a JSON array parameter.
    #[arg(long, value_enum, default_value = "copy")]
    method: MethodArg,
    /// PostgreSQL connections applying chunks at once (chunks still commit in key order).
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Threads reading and encoding chunks from SQLite at once, on consecutive key ranges (each
    /// with its own connection and snapshot; chunks still commit in key order).
    #[arg(long, default_value_t = 2)]
    readers: usize,
    /// Give every row a revision claim of its own, even rows no change ever touched (the slower
    /// path the direct COPY replaced; for comparison).
    #[arg(long)]
    guarded: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum MethodArg {
    Copy,
    Json,
}

#[derive(Args)]
pub struct VerifyArgs {
    /// Tables to verify, comma-separated (default: all).
    #[arg(long, value_delimiter = ',')]
    tables: Option<Vec<String>>,
    /// Keys per checksum chunk.
    #[arg(long, default_value_t = 10_000)]
    chunk_size: usize,
    /// Print the report as JSON.
    #[arg(long, conflicts_with = "markdown")]
    json: bool,
    /// Print the report as Markdown (for the migration log, CI summaries).
    #[arg(long)]
    markdown: bool,
    /// Do not store the result in dualwrite.verify_runs.
    #[arg(long)]
    no_record: bool,
}

#[derive(Args)]
pub struct RepairArgs {
    /// Seconds to wait for the re-enqueued rows to be replicated.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// Beside the SQLite file, which is where the rows it names live.
fn default_reject_file(config: &Config) -> PathBuf {
    let mut name = config.sqlite_path.as_os_str().to_owned();
    name.push(".rejects.jsonl");
    PathBuf::from(name)
}

fn json_out<T: serde::Serialize>(v: &T) -> dualwrite::Result<()> {
    println!("{}", serde_json::to_string_pretty(v).map_err(|e| dualwrite::Error::Internal(e.to_string()))?);
    Ok(())
}

/// One bar per table on a terminal.
struct Bars {
    bar: Option<ProgressBar>,
}

impl BackfillProgress for Bars {
    fn table_started(&mut self, table: &str, total: u64, already: u64) {
        let bar = ProgressBar::new(total.max(already));
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:<22} [{bar:30}] {human_pos:>11}/{human_len:<11} {rate:>14} eta {eta:<5} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .with_key("rate", |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.0} rows/s", s.per_sec());
            })
            .progress_chars("=> "),
        );
        bar.set_prefix(table.to_string());
        bar.set_position(already);
        bar.reset_eta();
        bar.enable_steady_tick(Duration::from_millis(200));
        self.bar = Some(bar);
    }
    fn chunk_done(&mut self, _table: &str, rows_total: u64) {
        if let Some(b) = &self.bar {
            if rows_total > b.length().unwrap_or(0) {
                b.set_length(rows_total);
            }
            b.set_position(rows_total);
            b.set_message("");
        }
    }
    fn paused(&mut self, _table: &str, why: &str) {
        if let Some(b) = &self.bar {
            b.set_message(format!("paused: {why}"));
        }
    }
    fn table_done(&mut self, s: &TableSummary) {
        if let Some(b) = self.bar.take() {
            b.set_message(if s.finished { "done" } else { "stopped" });
            b.finish();
        }
    }
}

/// `backfill` (or `backfill --retry-rejects`): the configuration's `[conversions]` apply, rejects
/// go to dualwrite.backfill_rejects and the reject file. Exit 0 even when rows were rejected (the
/// summary counts them and `verify` reports them as missing); 1 on an error.
pub fn backfill(config: Config, config_file: Option<&Path>, a: BackfillArgs) -> dualwrite::Result<ExitCode> {
    let legacy = LegacyConfig::load(config_file)?;
    let options = BackfillOptions {
        tables: a.tables,
        chunk_size: a.chunk_size,
        max_rows_per_sec: a.max_rows_per_sec,
        max_outbox_depth: (a.max_outbox_depth > 0).then_some(a.max_outbox_depth),
        restart: a.restart,
        stop_after_chunks: a.stop_after_chunks,
        method: match a.method {
            MethodArg::Copy => ApplyMethod::Copy,
            MethodArg::Json => ApplyMethod::Json,
        },
        workers: a.workers,
        readers: a.readers,
        direct: !a.guarded,
        conversions: legacy.overrides,
        reject_file: (!a.no_reject_file)
            .then(|| a.reject_file.unwrap_or_else(|| default_reject_file(&config))),
        retry_rejects: a.retry_rejects,
        ..BackfillOptions::default()
    };
    let report = if std::io::stderr().is_terminal() && !a.json {
        backfill::backfill(&config, &options, &mut Bars { bar: None })?
    } else {
        backfill::backfill(&config, &options, &mut LogProgress::default())?
    };
    if a.json {
        json_out(&report)?;
    } else {
        print!("{}", report.render());
    }
    Ok(ExitCode::SUCCESS)
}

pub fn verify(config: Config, a: VerifyArgs) -> dualwrite::Result<ExitCode> {
    let options = VerifyOptions {
        tables: a.tables,
        chunk_size: a.chunk_size,
        record: !a.no_record,
        ..VerifyOptions::default()
    };
    let report = verify::verify(&config, &options)?;
    if a.json {
        json_out(&report)?;
    } else if a.markdown {
        print!("{}", report.render_markdown());
    } else {
        print!("{}", report.render_text());
    }
    Ok(if report.ok { ExitCode::SUCCESS } else { ExitCode::from(EXIT_DIFFERENT) })
}

pub fn repair(config: Config, a: RepairArgs) -> dualwrite::Result<ExitCode> {
    let pg = config.require_postgres()?;
    let last = verify::last_run(&mut pg.connect()?)?.ok_or_else(|| {
        dualwrite::Error::Config("no verify run recorded yet: run `dualwrite verify` first".into())
    })?;
    if last.ok {
        println!("the last verify run ({}) found no difference: nothing to repair", last.started_at);
        return Ok(ExitCode::SUCCESS);
    }
    // This process replicates, so the repair does not depend on another one running.
    let bridge = Bridge::open(config, BridgeOptions { migrate_sqlite: false, ..Default::default() })?;
    let result = dualwrite::repair::repair(&bridge, &last, Duration::from_secs(a.timeout));
    bridge.shutdown(Duration::from_secs(1));
    let result = result?;
    if a.json {
        json_out(&result)?;
    } else {
        println!("re-enqueued {} row(s) from verify run {}", result.requeued, last.id.unwrap_or_default());
        for t in &result.tables {
            println!(
                "{:<22} {}",
                t.table,
                if t.ok() {
                    "repaired".to_string()
                } else {
                    format!("{} still different, {} in flight", t.differences, t.in_flight_count)
                }
            );
        }
        if result.incomplete {
            println!("the verify report listed only part of the differences: run `dualwrite verify` and repair again");
        } else {
            println!("run `dualwrite verify` to record a full passing result");
        }
    }
    Ok(if result.ok { ExitCode::SUCCESS } else { ExitCode::from(EXIT_DIFFERENT) })
}
