//! The `scriptd` command line: parses arguments and calls into the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// Rules-engine daemon for video-management systems.
#[derive(Debug, Parser)]
#[command(name = "scriptd", version, about)]
struct Cli {
    /// Configuration folder (default: $SCRIPTD_CONFIG_DIR, else ./config, else /etc/scriptd).
    #[arg(long, global = true, env = "SCRIPTD_CONFIG_DIR", value_name = "DIR")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create or upgrade the SQLite schema and seed the event and reaction catalogs.
    Migrate,
    /// Manage users.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Manage API tokens.
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// List, export and import scripts.
    #[command(subcommand)]
    Scripts(ScriptsCommand),
}

#[derive(Debug, Subcommand)]
enum UsersCommand {
    /// Add a user and print its id.
    Add {
        /// Login (unique).
        #[arg(long)]
        login: String,
        /// Display name.
        #[arg(long)]
        name: String,
        /// Parent user id (for sub-users).
        #[arg(long)]
        parent: Option<i64>,
        /// Explicit id (default: the next free one).
        #[arg(long)]
        id: Option<i64>,
        /// Permission to grant, by name (repeatable).
        #[arg(long = "permission", value_name = "NAME")]
        permissions: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum TokensCommand {
    /// Create an API token for a user and print it once.
    Create {
        /// The user the token authenticates as.
        #[arg(long)]
        user: i64,
    },
}

#[derive(Debug, Subcommand)]
enum ScriptsCommand {
    /// One line per script: id, status, event, reaction, title.
    List,
    /// Write every script as a JSON array (API shape) to FILE or stdout.
    Export {
        /// Output file (default: stdout).
        file: Option<PathBuf>,
    },
    /// Validate and write the scripts of FILE, all or none.
    Import {
        /// A JSON array of scripts in the API shape.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("scriptd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    // Until the settings are wired in: the contract's defaults.
    let db_path = PathBuf::from("data/scriptd.db");
    let timezone = chrono_tz::UTC;
    let _ = &cli.config;
    match cli.command {
        Command::Migrate => {
            scriptd::store::Store::migrate(&db_path)?;
            println!("database {} is up to date", db_path.display());
        }
        Command::Users(UsersCommand::Add { login, name, parent, id, permissions }) => {
            let new =
                scriptd::store::users::NewUser { id, login, name, parent_id: parent, permissions };
            let id = scriptd::store::Store::migrate(&db_path)?
                .write(|tx| scriptd::store::users::add(tx, &new))?;
            println!("{id}");
        }
        Command::Tokens(TokensCommand::Create { user }) => {
            let token = scriptd::store::Store::migrate(&db_path)?
                .write(|tx| scriptd::store::tokens::create(tx, user))?;
            println!("{}", token.expose());
        }
        Command::Scripts(cmd) => scripts_command(cmd, &db_path, timezone)?,
    }
    Ok(())
}

fn scripts_command(
    cmd: ScriptsCommand,
    db_path: &std::path::Path,
    tz: chrono_tz::Tz,
) -> anyhow::Result<()> {
    use scriptd::store::{Store, StoreError, transfer};
    let store = Store::open(db_path)?;
    match cmd {
        ScriptsCommand::List => {
            for line in transfer::list_lines(&store, tz)? {
                println!("{line}");
            }
        }
        ScriptsCommand::Export { file } => {
            let text = serde_json::to_string_pretty(&transfer::export(&store, tz)?)?;
            match file {
                Some(f) => std::fs::write(&f, text + "\n")
                    .with_context(|| format!("cannot write {}", f.display()))?,
                None => println!("{text}"),
            }
        }
        ScriptsCommand::Import { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let doc: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not valid JSON", file.display()))?;
            match transfer::import(&store, tz, &doc) {
                Ok(ids) => println!("imported {} scripts", ids.len()),
                Err(StoreError::Invalid(errors)) => {
                    println!("{}", errors.to_body());
                    anyhow::bail!("nothing imported: {}", errors.message());
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}
