//! The command line's definition (clap): every subcommand and option. The man pages and
//! shell completions are generated from it too (`scriptd generate-assets`).

use std::path::PathBuf;

use chrono::{DateTime, FixedOffset};
use clap::{Args, Parser, Subcommand};

/// Rules-engine daemon for video-management systems.
#[derive(Parser, Debug)]
#[command(name = "scriptd", version, about)]
pub struct Cli {
    /// Configuration folder (default: $SCRIPTD_CONFIG_DIR, else ./config, else /etc/scriptd).
    #[arg(long, global = true, value_name = "DIR")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// The daemon: migrate the database, load scripts, start the MQTT source, the
    /// dispatchers and the HTTP API; runs until SIGTERM or SIGINT.
    Run,
    /// Load and validate the configuration, print the effective values (secrets masked).
    CheckConfig,
    /// Create or upgrade the schema (SQLite, or PostgreSQL with `database.url`) and seed
    /// the event and reaction catalogs.
    Migrate,
    /// Store tools: copy a SQLite store into PostgreSQL.
    #[command(subcommand)]
    Store(StoreCommand),
    /// Manage users.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Manage API tokens.
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// List, export and import scripts.
    #[command(subcommand)]
    Scripts(ScriptsCommand),
    /// Holiday calendars: list them, import an iCalendar file into one.
    #[command(subcommand)]
    Calendars(CalendarsCommand),
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
pub enum UsersCommand {
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
pub enum TokensCommand {
    /// Create an API token for a user and print it once.
    Create {
        /// The user the token authenticates as.
        #[arg(long)]
        user: i64,
        /// Lifetime, e.g. 90d, 12h, 30m (units s, m, h, d, w); default: until revoked.
        #[arg(long, value_name = "DURATION", value_parser = crate::store::tokens::parse_lifetime)]
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
pub enum ScriptsCommand {
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

#[derive(Debug, Subcommand)]
pub enum CalendarsCommand {
    /// One line per calendar: id, owner, zone, number of dates, name.
    List,
    /// Add the all-day events of an iCalendar (RFC 5545) file to a calendar, as the API's
    /// `POST /calendars/{id}/import` does.
    Import {
        /// The calendar's id.
        #[arg(long, value_name = "ID")]
        calendar: i64,
        /// The `.ics` file.
        file: PathBuf,
    },
}

#[derive(Args, Debug)]
pub struct ExplainArgs {
    /// The event: its id or its name.
    #[arg(long, value_name = "E")]
    pub event: String,
    /// The camera id.
    #[arg(long, value_name = "C")]
    pub camera: i64,
    /// The occurrence's `occurred_at`, RFC 3339 (default: now).
    #[arg(long, value_name = "T", value_parser = parse_rfc3339)]
    pub at: Option<DateTime<FixedOffset>>,
}

#[derive(Subcommand, Debug)]
pub enum StoreCommand {
    /// Copy users, permissions, tokens, scripts, snoozes, cooldown state and pending
    /// deliveries from a SQLite file into an empty PostgreSQL database (migrated first), in
    /// one transaction, and print the counts. A non-empty target is refused.
    Copy {
        /// The SQLite file.
        #[arg(long, value_name = "PATH")]
        from: PathBuf,
        /// The PostgreSQL URL (`postgresql://user@host:port/dbname?sslmode=...`); the
        /// password may come from `database.password` or `database.password_file`.
        #[arg(long, value_name = "URL")]
        to: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum SnoozeCommand {
    /// Print the snoozes that have not ended, one line each.
    List,
}

#[derive(Subcommand, Debug)]
pub enum TimetableCommand {
    /// Validate a timetable and say whether it is active at the given instants.
    Check(TimetableCheckArgs),
}

#[derive(Args, Debug)]
pub struct TimetableCheckArgs {
    /// An instant to evaluate, RFC 3339 (repeatable).
    #[arg(long = "at", value_name = "T", value_parser = parse_rfc3339)]
    pub at: Vec<DateTime<FixedOffset>>,
    /// IANA zone for times written without an offset (default: the configured `timezone`).
    #[arg(long, value_name = "ZONE")]
    pub timezone: Option<chrono_tz::Tz>,
    /// File with the timetable JSON (default: standard input).
    pub file: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Schedule matching: the indexed evaluator against the naive scan, same inputs.
    Match(MatchArgs),
    /// End to end: the daemon between a publisher and a subscriber, against the broker's
    /// own ceiling measured in the same run.
    Pipeline(PipelineArgs),
}

#[derive(Args, Debug)]
pub struct PipelineArgs {
    /// `embedded` (rumqttd in this process) or HOST:PORT of a running broker.
    #[arg(long, default_value = "embedded")]
    pub broker: crate::bench::pipeline::BrokerChoice,
    /// Scripts to generate.
    #[arg(long, default_value_t = 10_000)]
    pub scripts: usize,
    /// Occurrences to publish.
    #[arg(long, default_value_t = 200_000)]
    pub events: usize,
    /// Occurrences per second (default: as fast as possible).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Publish QoS of the occurrences.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub qos: u8,
    /// Fraction of occurrences that match a script (each matched one fires 1-3 scripts).
    #[arg(long, default_value_t = 0.1)]
    pub match_fraction: f64,
    /// Cameras.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(i64).range(1..))]
    pub cameras: i64,
    /// Generator seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// TOML written to the daemon's local.toml (overrides of its generated configuration),
    /// e.g. '[database]\nsynchronous = "full"' (a literal \n is a line break).
    #[arg(long, default_value = "")]
    pub daemon_config: String,
    /// Skip the broker-ceiling pass.
    #[arg(long)]
    pub no_ceiling: bool,
    /// `extra.cooldown_seconds` of every generated script (0 = none, at most 86400); the
    /// pushes the cooldown suppresses are reported apart and not expected.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=86_400))]
    pub cooldown_seconds: u32,
    /// Run the daemon on this PostgreSQL database (`postgresql://user[:password]@host/db`)
    /// instead of a SQLite file: it is migrated and the scripts are copied into it, so it
    /// must be empty (no users, scripts or deliveries).
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// Run this many daemons on one shared subscription (`$share/...`) and the database of
    /// `--database-url` (needed above 1): each occurrence goes to one of them.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=8))]
    pub instances: u16,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct MatchArgs {
    /// Scripts to generate.
    #[arg(long, default_value_t = 10_000)]
    pub scripts: usize,
    /// Occurrences to match.
    #[arg(long, default_value_t = 100_000)]
    pub events: usize,
    /// Cameras.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(i64).range(1..))]
    pub cameras: i64,
    /// Generator seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Occurrences also run through the naive scan.
    #[arg(long, default_value_t = 1000)]
    pub naive_sample: usize,
    /// Timed passes (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub passes: usize,
    /// Fraction of the scripts (0 to 1) whose timetable lists a holiday calendar.
    #[arg(long, default_value_t = 0.0, value_parser = parse_fraction)]
    pub holiday_fraction: f64,
    /// Dates in that calendar (one-day holidays spread over the year).
    #[arg(long, default_value_t = 30)]
    pub holiday_dates: usize,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|f| (0.0..=1.0).contains(f))
        .ok_or_else(|| format!("{s:?} is not a fraction between 0 and 1"))
}

pub fn parse_rfc3339(s: &str) -> Result<DateTime<FixedOffset>, String> {
    DateTime::parse_from_rfc3339(s)
        .map_err(|e| format!("not an RFC 3339 instant ({e}), e.g. 2026-11-27T16:30:05+05:00"))
}
