//! Running a parsed command line.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use chrono::{DateTime, FixedOffset};
use clap::Parser;

use super::accounts;
use super::args::*;
use super::cli;
use crate::bench::matching::{MatchBenchOptions, run as run_match_bench};
use crate::settings::Settings;
use crate::timetable::ParseContext;

/// Exit status of a configuration problem (`EX_CONFIG` of sysexits.h). The unit's
/// `RestartPreventExitStatus=78` keeps systemd from restarting into the same error; usage
/// errors stay 2 (clap) and every other failure 1.
const EX_CONFIG: u8 = 78;

/// A configuration problem: `main` exits with [`EX_CONFIG`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct ConfigError(String);

/// The `scriptd` binary: parses the command line, runs the command, and maps a failure to
/// its exit status.
pub fn main() -> ExitCode {
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
            let log = crate::ops::logging::init(&settings.log)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            let pg = match settings.database.url.is_some() {
                true => {
                    let store = runtime.block_on(connect_and_migrate(&settings))?;
                    let me = runtime.block_on(register_instance(&store, &settings))?;
                    Some(crate::app::Postgres { store, registration: me })
                }
                false => None,
            };
            runtime.block_on(crate::app::run_on(settings, sources.dir, Some(log), pg))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig => check_config(cli.config.as_deref()),
        Command::Migrate => {
            let settings = load_settings(cli.config.as_deref())?;
            if settings.database.url.is_some() {
                let (store, runtime) = postgres_store(&settings)?;
                let done = runtime.block_on(crate::store::postgres::migrations::migrate(&store))?;
                println!(
                    "PostgreSQL database {} is up to date (schema version {}, {} applied now)",
                    store.endpoint(),
                    crate::store::postgres::migrations::latest_version(),
                    done.applied.len()
                );
                return Ok(ExitCode::SUCCESS);
            }
            let db_path = &settings.database.path;
            crate::store::Store::migrate(db_path)?;
            println!("database {} is up to date", db_path.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Store(StoreCommand::Copy { from, to }) => {
            let mut settings = load_settings(cli.config.as_deref())?;
            if !from.exists() {
                anyhow::bail!("--from {}: no such file", from.display());
            }
            let source = crate::store::Store::open(&from)?;
            settings.database.url = Some(crate::settings::DatabaseUrl::new(to));
            let (target, runtime) = postgres_store(&settings)?;
            let counts = runtime.block_on(async {
                crate::store::postgres::migrations::migrate(&target).await?;
                crate::store::postgres::copy::copy(&source, &target).await
            })?;
            for (table, n) in counts {
                println!("{table}: {n}");
            }
            println!("copied {} into {}", from.display(), target.endpoint());
            Ok(ExitCode::SUCCESS)
        }
        Command::Users(UsersCommand::Add { login, name, parent, id, mut permissions }) => {
            let settings = load_settings(cli.config.as_deref())?;
            if permissions.is_empty() {
                permissions = vec!["scripts.view".to_owned(), "scripts.manage".to_owned()];
            }
            let new =
                crate::store::users::NewUser { id, login, name, parent_id: parent, permissions };
            let id = open_db(&settings)?.db.write(|tx| crate::store::users::add(tx, &new))?;
            println!("{id}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Users(cmd) => {
            accounts::users(cmd, &open_db(&load_settings(cli.config.as_deref())?)?.db)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Tokens(TokensCommand::Create { user, expires_in }) => {
            let settings = load_settings(cli.config.as_deref())?;
            let token = open_db(&settings)?
                .db
                .write(|tx| crate::store::tokens::create_expiring(tx, user, expires_in))?;
            println!("{}", token.expose());
            Ok(ExitCode::SUCCESS)
        }
        Command::Tokens(cmd) => {
            accounts::tokens(cmd, &open_db(&load_settings(cli.config.as_deref())?)?.db)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Scripts(cmd) => {
            let settings = load_settings(cli.config.as_deref())?;
            scripts_command(cmd, &open_db(&settings)?.db, settings.timezone.tz())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Calendars(cmd) => {
            let settings = load_settings(cli.config.as_deref())?;
            super::calendars::run(cmd, &open_db(&settings)?.db)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Explain(args) => {
            let settings = load_settings(cli.config.as_deref())?;
            let opened = open_db(&settings)?;
            let at = args.at.map_or_else(chrono::Utc::now, |t| t.with_timezone(&chrono::Utc));
            let lines =
                cli::explain(&opened.db, settings.timezone.tz(), &args.event, args.camera, at)?;
            for line in lines {
                println!("{line}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Snooze(SnoozeCommand::List) => {
            let settings = load_settings(cli.config.as_deref())?;
            let now = crate::store::now_ms();
            let list =
                open_db(&settings)?.db.read(|tx| crate::store::snoozes::list_active(tx, now))?;
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
                holidays: crate::bench::synth::HolidayMix {
                    fraction: a.holiday_fraction,
                    dates: a.holiday_dates,
                },
            })
            .map_err(anyhow::Error::msg)?;
            print_report(&report, a.json)?;
            if !report.identical {
                anyhow::bail!("the index and the naive scan disagree on the sample");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(BenchCommand::Pipeline(a)) => {
            let daemon_exe =
                std::env::current_exe().context("cannot find this scriptd binary to run")?;
            let report =
                crate::bench::pipeline::run(&crate::bench::pipeline::PipelineBenchOptions {
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
                    database_url: a.database_url.map(crate::settings::DatabaseUrl::new),
                    instances: usize::from(a.instances),
                })
                .map_err(anyhow::Error::msg)?;
            print_report(&report, a.json)?;
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

/// A benchmark's report on stdout: one JSON object with `--json`, else its text.
fn print_report(
    report: &(impl serde::Serialize + std::fmt::Display),
    json: bool,
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(report)?);
    } else {
        println!("{report}");
    }
    Ok(())
}

/// `scriptd generate-assets DIR`: `man/scriptd.1` and one page per subcommand
/// (`scriptd-run.1`, …), and `completions/` for bash, zsh and fish, all from the same clap
/// definition the binary parses with, so they cannot drift from it; and
/// `systemd/scriptd@.service`, the template unit for several instances, from the packaged
/// unit ([`super::unit`]).
fn generate_assets(dir: &Path) -> anyhow::Result<()> {
    use clap::CommandFactory;
    let man = dir.join("man");
    let completions = dir.join("completions");
    let systemd = dir.join("systemd");
    for d in [&man, &completions, &systemd] {
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
    let template = super::unit::template_unit().map_err(anyhow::Error::msg)?;
    let path = systemd.join("scriptd@.service");
    std::fs::write(&path, template).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Loads the configuration; on a problem, prints one line per problem and fails.
fn load_settings(dir: Option<&Path>) -> anyhow::Result<Settings> {
    match Settings::load(dir) {
        Ok((settings, _)) => Ok(settings),
        Err(e) => Err(config_error(&e)),
    }
}

/// Connects to the PostgreSQL of `database.url`; any failure (unreachable host, wrong
/// password, missing database, TLS) is a configuration error (exit 78) naming the endpoint,
/// never the password. The runtime the pool lives on is returned with it.
fn postgres_store(
    settings: &Settings,
) -> anyhow::Result<(crate::store::postgres::PgStore, tokio::runtime::Runtime)> {
    // Multi-threaded, so that blocking transactions ([`crate::store::Db`]) run from this
    // thread while the runtime drives the connections.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match runtime.block_on(crate::store::postgres::connect_settings(&settings.database)) {
        Ok(store) => Ok((store, runtime)),
        Err(e) => Err(ConfigError(format!("database.url: cannot use {e}")).into()),
    }
}

/// `scriptd run` with `database.url`: connects (any failure is a configuration error,
/// exit 78, naming the endpoint) and migrates (several hosts at once are fine), on the
/// daemon's runtime, which the pool's connections then live on.
async fn connect_and_migrate(
    settings: &Settings,
) -> anyhow::Result<crate::store::postgres::PgStore> {
    let store = crate::store::postgres::connect_settings(&settings.database)
        .await
        .map_err(|e| ConfigError(format!("database.url: cannot use {e}")))?;
    crate::store::postgres::migrations::migrate(&store).await?;
    Ok(store)
}

/// Takes `mqtt.client_id` for this process in the instance registry: another running
/// instance holding it is a configuration error (exit 78) naming that instance's host.
async fn register_instance(
    store: &crate::store::postgres::PgStore,
    settings: &Settings,
) -> anyhow::Result<crate::store::postgres::instances::Registration> {
    use crate::store::postgres::instances::{Identity, RegisterError, register};
    match register(store, Identity::of_this_process(&settings.mqtt.client_id)).await {
        Ok(registration) => Ok(registration),
        Err(e @ RegisterError::Held { .. }) => Err(ConfigError(e.to_string()).into()),
        Err(RegisterError::Store(e)) => Err(e.into()),
    }
}

/// The store a command works on, migrated: PostgreSQL with `database.url`, else the SQLite
/// file of `database.path`.
struct Opened {
    db: crate::store::Db,
    /// Drives the PostgreSQL connections while the command runs.
    _runtime: Option<tokio::runtime::Runtime>,
}

fn open_db(settings: &Settings) -> anyhow::Result<Opened> {
    if settings.database.url.is_none() {
        let store = crate::store::Store::migrate(&settings.database.path)?;
        return Ok(Opened { db: store.into(), _runtime: None });
    }
    let (store, runtime) = postgres_store(settings)?;
    runtime.block_on(crate::store::postgres::migrations::migrate(&store))?;
    Ok(Opened { db: store.into(), _runtime: Some(runtime) })
}

/// Prints all but the last problem line; the last becomes the error `main` prints.
fn config_error(e: &crate::settings::SettingsError) -> anyhow::Error {
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
            match &settings.database.url {
                Some(url) => {
                    let (store, _runtime) = postgres_store(&settings)?;
                    println!("# backend: postgresql {url} (connected to {})", store.endpoint());
                }
                None => println!("# backend: sqlite {}", settings.database.path.display()),
            }
            print!("{}", settings.to_masked_toml());
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Err(config_error(&e)),
    }
}

fn scripts_command(
    cmd: ScriptsCommand,
    store: &crate::store::Db,
    tz: chrono_tz::Tz,
) -> anyhow::Result<()> {
    use crate::store::{StoreError, transfer};
    match cmd {
        ScriptsCommand::List => {
            for line in transfer::list_lines(store, tz)? {
                println!("{line}");
            }
        }
        ScriptsCommand::Export { file } => {
            let text = serde_json::to_string_pretty(&transfer::export(store, tz)?)?;
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
            match transfer::import(store, tz, &doc, owner) {
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
