//! The `scriptd` command line (CONTRACT §2): parses arguments and calls into the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use scriptd::settings::Settings;

/// Rules-engine daemon for video-management systems.
#[derive(Debug, Parser)]
#[command(name = "scriptd", version, about)]
struct Cli {
    /// Configuration directory [default: $SCRIPTD_CONFIG_DIR, else ./config, else /etc/scriptd]
    #[arg(long = "config", value_name = "DIR", global = true)]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load and validate the configuration, print the effective values (secrets masked)
    CheckConfig,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::CheckConfig => check_config(cli.config.as_deref()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `scriptd check-config`: the effective configuration as TOML on stdout, or one line per
/// problem on stderr and exit 1.
fn check_config(dir: Option<&Path>) -> anyhow::Result<()> {
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
            Ok(())
        }
        Err(e) => {
            let lines = e.lines();
            let (last, rest) = lines
                .split_last()
                .map_or(("invalid configuration", &[][..]), |(l, r)| (l.as_str(), r));
            for line in rest {
                eprintln!("error: {line}");
            }
            Err(anyhow::anyhow!("{last}"))
        }
    }
}
