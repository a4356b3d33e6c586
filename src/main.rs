//! The `scriptd` command line: parses arguments and calls into the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use chrono::{DateTime, FixedOffset};
use clap::{Args, Parser, Subcommand};

use scriptd::bench::matching::{MatchBenchOptions, run as run_match_bench};
use scriptd::settings::Settings;
use scriptd::timetable::ParseContext;
use scriptd::tools::cli;

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
    /// The daemon: migrate the database, load scripts, start the MQTT source, the
    /// dispatchers and the HTTP API; runs until SIGTERM or SIGINT.
    Run,
    /// Load and validate the configuration, print the effective values (secrets masked).
    CheckConfig,
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
    /// Timetable tools for operators.
    #[command(subcommand)]
    Timetable(TimetableCommand),
    /// Why an occurrence would fire each script of its event or not: one line per script
    /// (the daemon's index and rules, read from the database).
    Explain(ExplainArgs),
    /// Snoozes (made through the API).
    #[command(subcommand)]
    Snooze(SnoozeCommand),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Write the man pages and shell completions into DIR (used when building the package).
    #[command(hide = true)]
    GenerateAssets {
        /// Output folder; `man/` and `completions/` are created in it.
        dir: PathBuf,
    },
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
        /// Permission to grant, by name (repeatable); exactly these are granted. Without
        /// any: scripts.view and scripts.manage.
        #[arg(long = "permission", value_name = "NAME")]
        permissions: Vec<String>,
    },
    /// One line per user: id, parent, login, state, permissions.
    List,
    /// Disable a user: its tokens are refused and it gets no more pushes, at once (also
    /// by a running daemon).
    Disable {
        /// The user id.
        id: i64,
    },
}

#[derive(Debug, Subcommand)]
enum TokensCommand {
    /// Create an API token for a user and print it once.
    Create {
        /// The user the token authenticates as.
        #[arg(long)]
        user: i64,
        /// Lifetime, e.g. 90d, 12h, 30m (units s, m, h, d, w); default: until revoked.
        #[arg(long, value_name = "DURATION", value_parser = scriptd::store::tokens::parse_lifetime)]
        expires_in: Option<std::time::Duration>,
    },
    /// One line per token: public id, user, created, last used, expires, state (never
    /// the secret).
    List {
        /// Only the tokens of this user.
        #[arg(long)]
        user: Option<i64>,
    },
    /// Revoke a token by its public id, or every token of a user (`--user ID`); the
    /// running daemon refuses it at once.
    Revoke {
        /// The token's public id (the part before the dot).
        #[arg(required_unless_present = "user", conflicts_with = "user")]
        public_id: Option<String>,
        /// Revoke every token of this user.
        #[arg(long)]
        user: Option<i64>,
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
        /// Owner of the scripts whose object has no `owner_id`.
        #[arg(long, value_name = "ID")]
        owner: Option<i64>,
    },
}

#[derive(Args, Debug)]
struct ExplainArgs {
    /// The event: its id or its name.
    #[arg(long, value_name = "E")]
    event: String,
    /// The camera id.
    #[arg(long, value_name = "C")]
    camera: i64,
    /// The occurrence's `occurred_at`, RFC 3339 (default: now).
    #[arg(long, value_name = "T", value_parser = parse_rfc3339)]
    at: Option<DateTime<FixedOffset>>,
}

#[derive(Subcommand, Debug)]
enum SnoozeCommand {
    /// Print the snoozes that have not ended, one line each.
    List,
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
    /// End to end: the daemon between a publisher and a subscriber, against the broker's
    /// own ceiling measured in the same run.
    Pipeline(PipelineArgs),
}

#[derive(Args, Debug)]
struct PipelineArgs {
    /// `embedded` (rumqttd in this process) or HOST:PORT of a running broker.
    #[arg(long, default_value = "embedded")]
    broker: scriptd::bench::pipeline::BrokerChoice,
    /// Scripts to generate.
    #[arg(long, default_value_t = 10_000)]
    scripts: usize,
    /// Occurrences to publish.
    #[arg(long, default_value_t = 200_000)]
    events: usize,
    /// Occurrences per second (default: as fast as possible).
    #[arg(long)]
    rate: Option<f64>,
    /// Publish QoS of the occurrences.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    qos: u8,
    /// Fraction of occurrences that match a script (each matched one fires 1-3 scripts).
    #[arg(long, default_value_t = 0.1)]
    match_fraction: f64,
    /// Cameras.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(i64).range(1..))]
    cameras: i64,
    /// Generator seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// TOML written to the daemon's local.toml (overrides of its generated configuration),
    /// e.g. '[database]\nsynchronous = "full"' (a literal \n is a line break).
    #[arg(long, default_value = "")]
    daemon_config: String,
    /// Skip the broker-ceiling pass.
    #[arg(long)]
    no_ceiling: bool,
    /// `extra.cooldown_seconds` of every generated script (0 = none, at most 86400); the
    /// pushes the cooldown suppresses are reported apart and not expected.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=86_400))]
    cooldown_seconds: u32,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
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

/// Exit status of a configuration problem (`EX_CONFIG` of sysexits.h). The unit's
/// `RestartPreventExitStatus=78` keeps systemd from restarting into the same error; usage
/// errors stay 2 (clap) and every other failure 1.
const EX_CONFIG: u8 = 78;

/// A configuration problem: `main` exits with [`EX_CONFIG`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct ConfigError(String);

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("scriptd: {e:#}");
            if e.downcast_ref::<ConfigError>().is_some() {
                ExitCode::from(EX_CONFIG)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run => {
            let (settings, sources) = match Settings::load(cli.config.as_deref()) {
                Ok(loaded) => loaded,
                Err(e) => return Err(config_error(&e)),
            };
            let log = scriptd::ops::logging::init(&settings.log)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(scriptd::app::run(settings, sources.dir, Some(log)))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig => check_config(cli.config.as_deref()),
        Command::Migrate => {
            let settings = load_settings(cli.config.as_deref())?;
            let db_path = &settings.database.path;
            scriptd::store::Store::migrate(db_path)?;
            println!("database {} is up to date", db_path.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Users(UsersCommand::Add { login, name, parent, id, mut permissions }) => {
            let settings = load_settings(cli.config.as_deref())?;
            if permissions.is_empty() {
                permissions = vec!["scripts.view".to_owned(), "scripts.manage".to_owned()];
            }
            let new =
                scriptd::store::users::NewUser { id, login, name, parent_id: parent, permissions };
            let id = scriptd::store::Store::migrate(&settings.database.path)?
                .write(|tx| scriptd::store::users::add(tx, &new))?;
            println!("{id}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Users(cmd) => {
            let settings = load_settings(cli.config.as_deref())?;
            cli_accounts::users(cmd, &settings.database.path)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Tokens(TokensCommand::Create { user, expires_in }) => {
            let settings = load_settings(cli.config.as_deref())?;
            let token = scriptd::store::Store::migrate(&settings.database.path)?
                .write(|tx| scriptd::store::tokens::create_expiring(tx, user, expires_in))?;
            println!("{}", token.expose());
            Ok(ExitCode::SUCCESS)
        }
        Command::Tokens(cmd) => {
            let settings = load_settings(cli.config.as_deref())?;
            cli_accounts::tokens(cmd, &settings.database.path)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Scripts(cmd) => {
            let settings = load_settings(cli.config.as_deref())?;
            scripts_command(cmd, &settings.database.path, settings.timezone.tz())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Explain(args) => {
            let settings = load_settings(cli.config.as_deref())?;
            let store = scriptd::store::Store::migrate(&settings.database.path)?;
            let at = args.at.map_or_else(chrono::Utc::now, |t| t.with_timezone(&chrono::Utc));
            let lines = cli::explain(store, settings.timezone.tz(), &args.event, args.camera, at)?;
            for line in lines {
                println!("{line}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Snooze(SnoozeCommand::List) => {
            let settings = load_settings(cli.config.as_deref())?;
            let now = scriptd::store::now_ms();
            let list = scriptd::store::Store::migrate(&settings.database.path)?
                .read(|tx| scriptd::store::snoozes::list_active(tx, now))?;
            for s in list {
                let until = chrono::DateTime::from_timestamp_millis(s.until)
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .unwrap_or_default();
                let camera = s.camera_id.as_deref().unwrap_or("any");
                println!(
                    "snooze {}: script {} scope {} by user {} camera {camera} until {until}",
                    s.id,
                    s.script_id,
                    s.scope.as_str(),
                    s.user_id
                );
            }
            Ok(ExitCode::SUCCESS)
        }
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
        Command::Bench(BenchCommand::Pipeline(a)) => {
            let daemon_exe =
                std::env::current_exe().context("cannot find this scriptd binary to run")?;
            let report =
                scriptd::bench::pipeline::run(&scriptd::bench::pipeline::PipelineBenchOptions {
                    broker: a.broker,
                    scripts: a.scripts,
                    events: a.events,
                    rate: a.rate.filter(|r| *r > 0.0),
                    qos: a.qos,
                    match_fraction: a.match_fraction,
                    cameras: a.cameras,
                    seed: a.seed,
                    daemon_exe,
                    daemon_config: a.daemon_config.replace("\\n", "\n"),
                    skip_ceiling: a.no_ceiling,
                    cooldown_seconds: a.cooldown_seconds,
                })
                .map_err(anyhow::Error::msg)?;
            if a.json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!("{report}");
            }
            if report.lost > 0 || report.unexpected > 0 {
                anyhow::bail!("{} deliveries lost, {} unexpected", report.lost, report.unexpected);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::GenerateAssets { dir } => {
            generate_assets(&dir)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `scriptd generate-assets DIR`: `man/scriptd.1` and one page per subcommand
/// (`scriptd-run.1`, …), and `completions/` for bash, zsh and fish, all from the same clap
/// definition the binary parses with, so they cannot drift from it.
fn generate_assets(dir: &Path) -> anyhow::Result<()> {
    use clap::CommandFactory;
    let man = dir.join("man");
    let completions = dir.join("completions");
    for d in [&man, &completions] {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    // Unbuilt: generate_to leaves out the `help` subcommands and hidden ones itself.
    clap_mangen::generate_to(Cli::command(), &man)
        .with_context(|| format!("cannot write the man pages to {}", man.display()))?;
    for shell in [clap_complete::Shell::Bash, clap_complete::Shell::Zsh, clap_complete::Shell::Fish]
    {
        clap_complete::generate_to(shell, &mut Cli::command(), "scriptd", &completions)
            .with_context(|| {
                format!("cannot write the completions to {}", completions.display())
            })?;
    }
    Ok(())
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
    ConfigError(last.to_owned()).into()
}

/// `scriptd check-config`: the effective configuration as TOML on stdout, or one line per
/// problem on stderr and exit 78 (`EX_CONFIG`).
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

fn scripts_command(cmd: ScriptsCommand, db_path: &Path, tz: chrono_tz::Tz) -> anyhow::Result<()> {
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
        ScriptsCommand::Import { file, owner } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let doc: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not valid JSON", file.display()))?;
            match transfer::import(&store, tz, &doc, owner) {
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

/// `scriptd users list|disable` and `scriptd tokens list|revoke`.
mod cli_accounts {
    use std::path::Path;

    use scriptd::store::{Store, tokens, users};

    use super::{TokensCommand, UsersCommand};

    fn or_dash(v: Option<&str>) -> &str {
        v.unwrap_or("-")
    }

    pub(super) fn users(cmd: UsersCommand, db: &Path) -> anyhow::Result<()> {
        let store = Store::migrate(db)?;
        match cmd {
            // Needs the defaults applied by the caller.
            UsersCommand::Add { .. } => anyhow::bail!("users add is handled by the caller"),
            UsersCommand::List => {
                println!("id\tparent\tlogin\tstate\tpermissions");
                for u in store.read(|tx| users::list(tx))? {
                    let permissions: Vec<&str> =
                        u.permissions.iter().map(|p| p.name.as_str()).collect();
                    println!(
                        "{}\t{}\t{}\t{}\t{}",
                        u.id,
                        u.parent_id.map_or("-".to_owned(), |p| p.to_string()),
                        u.login,
                        if u.disabled { "disabled" } else { "active" },
                        if permissions.is_empty() { "-".to_owned() } else { permissions.join(",") }
                    );
                }
            }
            UsersCommand::Disable { id } => {
                store.write(|tx| users::disable(tx, id))?;
                println!("user {id} disabled");
            }
        }
        Ok(())
    }

    pub(super) fn tokens(cmd: TokensCommand, db: &Path) -> anyhow::Result<()> {
        let store = Store::migrate(db)?;
        match cmd {
            TokensCommand::Create { .. } => {
                anyhow::bail!("tokens create is handled by the caller")
            }
            TokensCommand::List { user } => {
                println!("public_id\tuser\tcreated\tlast_used\texpires\tstate");
                let now = scriptd::store::now_text();
                for t in store.read(|tx| tokens::list(tx, user))? {
                    let state = if t.revoked_at.is_some() {
                        "revoked"
                    } else if t.expires_at.as_deref().is_some_and(|e| e <= now.as_str()) {
                        "expired"
                    } else {
                        "active"
                    };
                    println!(
                        "{}\t{}\t{}\t{}\t{}\t{}",
                        t.public_id,
                        t.user_id,
                        t.created_at,
                        or_dash(t.last_used_at.as_deref()),
                        or_dash(t.expires_at.as_deref()),
                        state
                    );
                }
            }
            TokensCommand::Revoke { public_id, user } => match (public_id, user) {
                (Some(public_id), _) => {
                    store.write(|tx| tokens::revoke(tx, &public_id))?;
                    println!("token {public_id} revoked");
                }
                (None, Some(user)) => {
                    let n = store.write(|tx| tokens::revoke_user(tx, user))?;
                    println!("{n} tokens of user {user} revoked");
                }
                (None, None) => anyhow::bail!("give a token's public id or --user ID"),
            },
        }
        Ok(())
    }
}
