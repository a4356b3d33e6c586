//! The `scriptd` command line: parses arguments and calls into the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use chrono::{DateTime, FixedOffset};
use clap::{Args, Parser, Subcommand};

use scriptd::bench::matching::{MatchBenchOptions, run as run_match_bench};
use scriptd::cli;
use scriptd::settings::Settings;
use scriptd::timetable::ParseContext;

/// Rules-engine daemon for video-management systems.
#[derive(Parser, Debug)]
#[command(name = "scriptd", version, about)]
struct Cli {
    /// Configuration folder (default: $SCRIPTD_CONFIG_DIR, else ./config, else /etc/scriptd).
    #[arg(long, global = true, value_name = "DIR")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Load and validate the configuration, print the effective values (secrets masked).
    CheckConfig,
    /// Timetable tools for operators.
    #[command(subcommand)]
    Timetable(TimetableCommand),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand, Debug)]
enum TimetableCommand {
    /// Validate a timetable and say whether it is active at the given instants.
    Check(TimetableCheckArgs),
}

#[derive(Args, Debug)]
struct TimetableCheckArgs {
    /// An instant to evaluate, RFC 3339 (repeatable).
    #[arg(long = "at", value_name = "T", value_parser = parse_rfc3339)]
    at: Vec<DateTime<FixedOffset>>,
    /// IANA zone for times written without an offset (default: the configured `timezone`).
    #[arg(long, value_name = "ZONE")]
    timezone: Option<chrono_tz::Tz>,
    /// File with the timetable JSON (default: standard input).
    file: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Schedule matching: the indexed evaluator against the naive scan, same inputs.
    Match(MatchArgs),
}

#[derive(Args, Debug)]
struct MatchArgs {
    /// Scripts to generate.
    #[arg(long, default_value_t = 10_000)]
    scripts: usize,
    /// Occurrences to match.
    #[arg(long, default_value_t = 100_000)]
    events: usize,
    /// Cameras.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(i64).range(1..))]
    cameras: i64,
    /// Generator seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Occurrences also run through the naive scan.
    #[arg(long, default_value_t = 1000)]
    naive_sample: usize,
    /// Timed passes (the median is reported).
    #[arg(long, default_value_t = 5)]
    passes: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

fn parse_rfc3339(s: &str) -> Result<DateTime<FixedOffset>, String> {
    DateTime::parse_from_rfc3339(s)
        .map_err(|e| format!("not an RFC 3339 instant ({e}), e.g. 2026-11-27T16:30:05+05:00"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("scriptd: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::CheckConfig => check_config(cli.config.as_deref()),
        Command::Timetable(TimetableCommand::Check(args)) => {
            let text = cli::read_input(args.file.as_deref())
                .map_err(|e| anyhow::anyhow!("cannot read the timetable: {e}"))?;
            let timezone = match args.timezone {
                Some(tz) => tz,
                None => load_settings(cli.config.as_deref())?.timezone.tz(),
            };
            let ctx = ParseContext { timezone };
            let instants: Vec<(String, DateTime<FixedOffset>)> =
                args.at.iter().map(|t| (t.to_rfc3339(), *t)).collect();
            let out = cli::timetable_check(&text, &instants, &ctx);
            print!("{}", out.stdout);
            Ok(ExitCode::from(out.exit_code as u8))
        }
        Command::Bench(BenchCommand::Match(a)) => {
            let report = run_match_bench(&MatchBenchOptions {
                scripts: a.scripts,
                events: a.events,
                cameras: a.cameras,
                seed: a.seed,
                naive_sample: a.naive_sample,
                passes: a.passes,
            })
            .map_err(anyhow::Error::msg)?;
            if a.json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!("{report}");
            }
            if !report.identical {
                anyhow::bail!("the index and the naive scan disagree on the sample");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Loads the configuration; on a problem, prints one line per problem and fails.
fn load_settings(dir: Option<&Path>) -> anyhow::Result<Settings> {
    match Settings::load(dir) {
        Ok((settings, _)) => Ok(settings),
        Err(e) => Err(config_error(&e)),
    }
}

/// Prints all but the last problem line; the last becomes the error `main` prints.
fn config_error(e: &scriptd::settings::SettingsError) -> anyhow::Error {
    let lines = e.lines();
    let (last, rest) =
        lines.split_last().map_or(("invalid configuration", &[][..]), |(l, r)| (l.as_str(), r));
    for line in rest {
        eprintln!("scriptd: {line}");
    }
    anyhow::anyhow!("{last}")
}

/// `scriptd check-config`: the effective configuration as TOML on stdout, or one line per
/// problem on stderr and exit 1.
fn check_config(dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    match Settings::load(dir) {
        Ok((settings, sources)) => {
            println!("# configuration directory: {}", sources.dir.display());
            for f in &sources.files {
                println!("# read: {}", f.display());
            }
            if sources.files.is_empty() {
                println!("# no default.toml or local.toml found: built-in defaults");
            }
            for v in &sources.env_vars {
                println!("# environment: {v}");
            }
            print!("{}", settings.to_masked_toml());
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Err(config_error(&e)),
    }
}
