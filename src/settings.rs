//! Typed, validated configuration built from the `config` crate's layers.
//!
//! Layers, later wins (CONTRACT §3):
//!
//! 1. built-in defaults ([`Settings::default`]), so a missing `default.toml` still works;
//! 2. `DIR/default.toml` (optional);
//! 3. `DIR/local.toml` (optional, for operators);
//! 4. environment variables `SCRIPTD__SECTION__KEY` (double underscore between levels).
//!
//! `DIR` is resolved by [`resolve_config_dir`]: `--config DIR`, else `$SCRIPTD_CONFIG_DIR`,
//! else `./config` when it exists, else `/etc/scriptd`.
//!
//! Every problem names the key and the layer it came from: a file path, an environment
//! variable, or the built-in defaults. The `config` crate loses the origin in some errors
//! (unknown keys, out-of-range integers), so each layer is also loaded on its own and
//! [`Settings::load_from`] looks the key up in them.
//!
//! What may change on SIGHUP is gathered in [`LiveSettings`]; [`Settings::reload`] re-reads
//! the layers and says which changed keys apply live and which need a restart.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use config::{Config, ConfigError, Environment, File, FileFormat, Source, Value, ValueKind};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::secret::Secret;

/// Prefix of the environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "SCRIPTD";
/// Separator between the levels of an environment variable name (`SCRIPTD__MQTT__PORT`).
pub const ENV_SEPARATOR: &str = "__";
/// Environment variable naming the configuration directory when `--config` is absent.
pub const CONFIG_DIR_ENV: &str = "SCRIPTD_CONFIG_DIR";
/// The configuration directory used when nothing else names one and `./config` is absent.
pub const SYSTEM_CONFIG_DIR: &str = "/etc/scriptd";

/// Default of `events.max_payload_bytes`: 256 KiB.
pub const DEFAULT_MAX_PAYLOAD_BYTES: u64 = 256 * 1024;
/// Smallest accepted `events.max_payload_bytes`.
pub const MIN_MAX_PAYLOAD_BYTES: u64 = 1024;
/// The largest packet MQTT can carry (its remaining-length field's maximum).
pub const MAX_MQTT_PACKET_BYTES: u64 = 268_435_455;

/// The whole configuration of the daemon. See `config/default.toml` for every key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// IANA time zone for times written without an offset (top-level key `timezone`).
    pub timezone: Timezone,
    /// `[database]`.
    pub database: DatabaseSettings,
    /// `[mqtt]`.
    pub mqtt: MqttSettings,
    /// `[api]`.
    pub api: ApiSettings,
    /// `[telegram]`.
    pub telegram: TelegramSettings,
    /// `[webhook]`.
    pub webhook: WebhookSettings,
    /// `[events]`.
    pub events: EventsSettings,
    /// `[delivery]`.
    pub delivery: DeliverySettings,
    /// `[log]`.
    pub log: LogSettings,
}

/// `[database]`: the SQLite store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSettings {
    /// SQLite file; created with its folder if missing. Relative paths are relative to the
    /// working directory.
    pub path: PathBuf,
    /// How long a statement waits for a lock held by another connection, in milliseconds.
    pub busy_timeout_ms: u64,
    /// SQLite `synchronous` on every connection: when a commit waits for the disk.
    pub synchronous: crate::store::Synchronous,
}

/// `[mqtt]`: the analytics server's broker (or the embedded one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttSettings {
    /// Broker host name or address.
    pub host: String,
    /// Broker TCP port, 1–65535.
    pub port: u16,
    /// MQTT client id; the session is persistent (`clean_session = false`).
    pub client_id: String,
    /// Login user name; unset means no login.
    pub username: Option<String>,
    /// Login password; masked in every output.
    pub password: Option<Secret>,
    /// Topic filter the occurrences arrive on (may be a `$share/...` subscription).
    pub events_topic: String,
    /// Pushes go to `{push_topic_prefix}/{user_id}/reactions`.
    pub push_topic_prefix: String,
    /// Start an in-process broker on `host:port`.
    pub embedded_broker: bool,
    /// MQTT keep-alive interval in seconds (5–65535).
    pub keep_alive_seconds: u64,
    /// First reconnect delay after the connection drops, in milliseconds.
    pub reconnect_min_ms: u64,
    /// Longest reconnect delay (the backoff doubles up to this), in milliseconds.
    pub reconnect_max_ms: u64,
    /// Most QoS 1 publishes awaiting their PUBACK at once.
    pub inflight: u16,
    /// MQTT version of the events connection: `"5"` (the broker is told the largest packet
    /// the daemon accepts) or `"3.1.1"` (required with the embedded broker).
    pub protocol: MqttProtocol,
}

/// `mqtt.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MqttProtocol {
    /// MQTT 5.
    #[default]
    V5,
    /// MQTT 3.1.1.
    V311,
}

impl Serialize for MqttProtocol {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(match self {
            MqttProtocol::V5 => "5",
            MqttProtocol::V311 => "3.1.1",
        })
    }
}

impl<'de> Deserialize<'de> for MqttProtocol {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        match name.as_str() {
            "5" | "5.0" => Ok(MqttProtocol::V5),
            "3.1.1" => Ok(MqttProtocol::V311),
            _ => {
                Err(serde::de::Error::custom(format!("must be \"5\" or \"3.1.1\" (got {name:?})")))
            }
        }
    }
}

/// `[api]`: the HTTP API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSettings {
    /// Socket address the HTTP API listens on.
    #[serde(deserialize_with = "socket_addr")]
    pub bind: SocketAddr,
}

/// `[telegram]`: the Bot API client. Changes apply on SIGHUP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelegramSettings {
    /// Bot API base URL, `http://` or `https://`, without a trailing slash.
    pub api_url: String,
    /// Deadline for one Bot API request, in seconds.
    pub request_timeout_seconds: u64,
    /// Most messages per second to one chat.
    pub per_chat_per_second: u32,
    /// Most messages in any minute to one chat (groups: the lower of this and
    /// `per_group_per_minute`).
    pub per_chat_per_minute: u32,
    /// Most messages per second through one bot token.
    pub per_token_per_second: u32,
    /// Most messages per minute to one group chat.
    pub per_group_per_minute: u32,
}

/// `[webhook]`: HTTP POST reactions. Changes apply on SIGHUP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookSettings {
    /// Deadline for one webhook request, in seconds.
    pub timeout_seconds: u64,
}

/// `[events]`: incoming occurrences. Changes apply on SIGHUP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsSettings {
    /// Occurrences older than this when received are dropped as stale; 0 = never.
    pub max_age_seconds: u64,
    /// Larger occurrence payloads are rejected (`too_large`) and acknowledged, never
    /// matched (1 KiB – 256 MiB; default 256 KiB).
    pub max_payload_bytes: u64,
}

/// `[delivery]`: the outbox and its workers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliverySettings {
    /// Deliveries attempted at once (1–10000); also the most that can repeat after a crash.
    pub max_in_flight: u32,
    /// Attempts before a delivery with transient failures is marked failed; 0 = keep trying.
    pub max_attempts: u32,
    /// Delay before the first retry, in milliseconds; doubles per attempt.
    pub backoff_initial_ms: u64,
    /// Longest delay between two attempts, in milliseconds.
    pub backoff_max_ms: u64,
    /// How long finished (delivered or failed) deliveries stay in the database, in hours.
    pub retention_hours: u64,
    /// On SIGTERM, how long in-flight deliveries may take to finish, in seconds.
    pub shutdown_deadline_seconds: u64,
    /// MQTT push attempts at once; 0 = a share of `max_in_flight` (see [`Self::budgets`]).
    pub push_max_in_flight: u32,
    /// Telegram attempts at once; 0 = a share of `max_in_flight`.
    pub telegram_max_in_flight: u32,
    /// Webhook attempts at once; 0 = a share of `max_in_flight`.
    pub webhook_max_in_flight: u32,
    /// Attempts at once to one target (webhook URL host, Telegram bot token); 0 = half of
    /// its channel's budget (at least 1).
    pub per_target_max_in_flight: u32,
    /// Consecutive unanswered attempts (timeout, connection failure) after which a target
    /// is backed off as a whole (its circuit breaker opens); 0 = never.
    pub breaker_after_timeouts: u32,
    /// While a target is backed off, one probe attempt per this many seconds.
    pub breaker_probe_seconds: u64,
    /// `[delivery.expire_after_seconds]`: per channel, how long after its occurrence was
    /// received a delivery may still be sent.
    pub expire_after_seconds: ExpireAfter,
}

/// `[delivery.expire_after_seconds]`: per channel, the age (seconds since the occurrence was
/// received, i.e. since the delivery row was written) after which a delivery not yet done
/// ends `expired` instead of being sent late; 0 = never expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExpireAfter {
    /// MQTT pushes to the client apps (a pop-up minutes late is noise); default 300.
    pub push: u64,
    /// Telegram messages; default 900.
    pub telegram: u64,
    /// Webhooks (a peer system may want every event); default 0 = never.
    pub webhook: u64,
}

impl Default for ExpireAfter {
    fn default() -> Self {
        Self { push: 300, telegram: 900, webhook: 0 }
    }
}

/// The in-flight budgets of the three channels, derived by [`DeliverySettings::budgets`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelBudgets {
    /// MQTT pushes.
    pub push: u32,
    /// Telegram messages.
    pub telegram: u32,
    /// Webhook POSTs.
    pub webhook: u32,
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// `pretty` for terminals, `json` for journald and log shippers.
    pub format: LogFormat,
    /// `tracing` env-filter directives, e.g. `info` or `info,scriptd::dispatch=debug`.
    pub level: String,
}

/// Output format of the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable, for a terminal.
    Pretty,
    /// One JSON object per line.
    Json,
}

impl<'de> Deserialize<'de> for LogFormat {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        match name.as_str() {
            "pretty" => Ok(LogFormat::Pretty),
            "json" => Ok(LogFormat::Json),
            _ => Err(serde::de::Error::custom(format!(
                "must be \"pretty\" or \"json\" (got {name:?})"
            ))),
        }
    }
}

fn socket_addr<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(deserializer)?;
    text.parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "must be an IP address and port, e.g. \"127.0.0.1:8080\" (got {text:?})"
        ))
    })
}

/// A validated IANA time zone name, e.g. `Europe/Berlin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timezone(pub chrono_tz::Tz);

impl Timezone {
    /// The zone.
    pub fn tz(self) -> chrono_tz::Tz {
        self.0
    }
}

impl Serialize for Timezone {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0.name())
    }
}

impl<'de> Deserialize<'de> for Timezone {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        chrono_tz::Tz::from_str(&name).map(Timezone).map_err(|_| {
            serde::de::Error::custom(format!(
                "{name:?} is not an IANA time zone name (e.g. \"UTC\", \"Europe/Berlin\")"
            ))
        })
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            timezone: Timezone(chrono_tz::UTC),
            database: DatabaseSettings::default(),
            mqtt: MqttSettings::default(),
            api: ApiSettings::default(),
            telegram: TelegramSettings::default(),
            webhook: WebhookSettings::default(),
            events: EventsSettings::default(),
            delivery: DeliverySettings::default(),
            log: LogSettings::default(),
        }
    }
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            path: PathBuf::from("data/scriptd.db"),
            busy_timeout_ms: 5000,
            synchronous: crate::store::Synchronous::default(),
        }
    }
}

impl Default for MqttSettings {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 1883,
            client_id: "scriptd".into(),
            username: None,
            password: None,
            events_topic: "vms/analytics/events/#".into(),
            push_topic_prefix: "vms/users".into(),
            // Built-in default is an external broker; `config/default.toml` turns the
            // embedded one on for a fresh checkout (CONTRACT §3).
            embedded_broker: false,
            keep_alive_seconds: 30,
            reconnect_min_ms: 200,
            reconnect_max_ms: 3_000,
            inflight: 1000,
            protocol: MqttProtocol::V5,
        }
    }
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self { bind: SocketAddr::from(([127, 0, 0, 1], 8080)) }
    }
}

impl Default for TelegramSettings {
    fn default() -> Self {
        Self {
            api_url: "https://api.telegram.org".into(),
            request_timeout_seconds: 15,
            per_chat_per_second: 1,
            per_chat_per_minute: 60,
            per_token_per_second: 30,
            per_group_per_minute: 20,
        }
    }
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self { timeout_seconds: 10 }
    }
}

impl Default for EventsSettings {
    fn default() -> Self {
        Self { max_age_seconds: 300, max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES }
    }
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            max_in_flight: 100,
            max_attempts: 0,
            backoff_initial_ms: 500,
            backoff_max_ms: 300_000,
            retention_hours: 168,
            shutdown_deadline_seconds: 10,
            push_max_in_flight: 0,
            telegram_max_in_flight: 0,
            webhook_max_in_flight: 0,
            per_target_max_in_flight: 0,
            breaker_after_timeouts: 5,
            breaker_probe_seconds: 30,
            expire_after_seconds: ExpireAfter::default(),
        }
    }
}

impl Default for LogSettings {
    fn default() -> Self {
        Self { format: LogFormat::Pretty, level: "info".into() }
    }
}

impl DatabaseSettings {
    /// [`Self::busy_timeout_ms`] as a duration.
    pub fn busy_timeout(&self) -> Duration {
        Duration::from_millis(self.busy_timeout_ms)
    }
}

impl MqttSettings {
    /// [`Self::keep_alive_seconds`] as a duration.
    pub fn keep_alive(&self) -> Duration {
        Duration::from_secs(self.keep_alive_seconds)
    }

    /// The reconnect backoff: first delay and longest delay.
    pub fn reconnect_backoff(&self) -> (Duration, Duration) {
        (Duration::from_millis(self.reconnect_min_ms), Duration::from_millis(self.reconnect_max_ms))
    }
}

impl TelegramSettings {
    /// [`Self::request_timeout_seconds`] as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_seconds)
    }
}

impl WebhookSettings {
    /// [`Self::timeout_seconds`] as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_seconds)
    }
}

impl EventsSettings {
    /// The age limit, or `None` when stale occurrences are never dropped.
    pub fn max_age(&self) -> Option<Duration> {
        (self.max_age_seconds > 0).then(|| Duration::from_secs(self.max_age_seconds))
    }
}

impl DeliverySettings {
    /// The retry policy part of this section.
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.max_attempts,
            backoff_initial: Duration::from_millis(self.backoff_initial_ms),
            backoff_max: Duration::from_millis(self.backoff_max_ms),
        }
    }

    /// [`Self::retention_hours`] as a duration.
    pub fn retention(&self) -> Duration {
        Duration::from_secs(self.retention_hours.saturating_mul(3600))
    }

    /// [`Self::shutdown_deadline_seconds`] as a duration.
    pub fn shutdown_deadline(&self) -> Duration {
        Duration::from_secs(self.shutdown_deadline_seconds)
    }

    /// [`Self::breaker_probe_seconds`] as a duration.
    pub fn breaker_probe(&self) -> Duration {
        Duration::from_secs(self.breaker_probe_seconds)
    }

    /// The per-channel budgets: a channel's own key when set (≠ 0); the channels left unset
    /// split what `max_in_flight` leaves, 2 : 1 : 1 for push : Telegram : webhook, each at
    /// least 1. `Err` names the key when the set budgets do not fit in `max_in_flight`.
    /// Their sum never exceeds `max_in_flight` (the crash bound).
    pub fn budgets(&self) -> Result<ChannelBudgets, (&'static str, String)> {
        let keys = [
            ("delivery.push_max_in_flight", self.push_max_in_flight, 2u64),
            ("delivery.telegram_max_in_flight", self.telegram_max_in_flight, 1),
            ("delivery.webhook_max_in_flight", self.webhook_max_in_flight, 1),
        ];
        let total = u64::from(self.max_in_flight);
        let set: u64 = keys.iter().map(|k| u64::from(k.1)).sum();
        let unset: Vec<_> = keys.iter().filter(|k| k.1 == 0).collect();
        if set > total {
            let key = keys.iter().rev().find(|k| k.1 != 0).map_or(keys[0].0, |k| k.0);
            return Err((
                key,
                format!(
                    "the channel budgets ({set}) exceed delivery.max_in_flight ({total}), \
                     the bound on deliveries repeated after a crash"
                ),
            ));
        }
        let left = total - set;
        if left < unset.len() as u64 {
            let key = unset.first().map_or(keys[0].0, |k| k.0);
            return Err((
                key,
                format!(
                    "delivery.max_in_flight ({total}) leaves {left} for the channels without a \
                     budget of their own; each needs at least 1: set this key or raise \
                     delivery.max_in_flight"
                ),
            ));
        }
        let weights: u64 = unset.iter().map(|k| k.2).sum();
        let mut out = [0u64; 3];
        let mut given = 0;
        for (i, k) in keys.iter().enumerate() {
            if k.1 != 0 {
                out[i] = u64::from(k.1);
            } else {
                out[i] = (left * k.2 / weights.max(1)).max(1);
                given += out[i];
            }
        }
        // Rounding leftovers go to the first unset channel (push when unset); rounding up
        // to 1 is taken back from the largest.
        if let Some(first) = keys.iter().position(|k| k.1 == 0) {
            if given < left {
                out[first] += left - given;
            }
            while given > left {
                let Some(big) = (0..3).filter(|i| keys[*i].1 == 0).max_by_key(|i| out[*i]) else {
                    break;
                };
                out[big] -= 1;
                given -= 1;
            }
        }
        let to_u32 = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        Ok(ChannelBudgets {
            push: to_u32(out[0]),
            telegram: to_u32(out[1]),
            webhook: to_u32(out[2]),
        })
    }
}

/// How transient delivery failures are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RetryPolicy {
    /// Attempts before giving up; 0 = never give up.
    pub max_attempts: u32,
    /// Delay before the first retry.
    pub backoff_initial: Duration,
    /// Longest delay between attempts.
    pub backoff_max: Duration,
}

impl RetryPolicy {
    /// Delay before attempt `attempt + 1`, after `attempt` (≥ 1) failed attempts:
    /// `backoff_initial * 2^(attempt-1)`, capped at `backoff_max`. Jitter is the caller's.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(31);
        self.backoff_initial.saturating_mul(1u32 << exp).min(self.backoff_max)
    }

    /// True when a delivery that failed `attempts` times must be marked failed.
    pub fn exhausted(&self, attempts: u32) -> bool {
        self.max_attempts != 0 && attempts >= self.max_attempts
    }
}

/// The part of [`Settings`] that SIGHUP may change while the daemon runs. The daemon holds
/// it in an `ArcSwap` and components read it per operation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LiveSettings {
    /// `log.level`.
    pub log_level: String,
    /// `[telegram]`.
    pub telegram: TelegramSettings,
    /// `[webhook]`.
    pub webhook: WebhookSettings,
    /// `delivery.max_attempts`, `delivery.backoff_initial_ms`, `delivery.backoff_max_ms`.
    pub retry: RetryPolicy,
    /// `delivery.retention_hours`.
    pub retention: Duration,
    /// `[events]`.
    pub events: EventsSettings,
    /// `[delivery.expire_after_seconds]`.
    pub expire_after: ExpireAfter,
}

/// Keys (or whole sections, ending in `.`) that [`LiveSettings`] carries.
const LIVE_KEYS: &[&str] = &[
    "log.level",
    "telegram.",
    "webhook.",
    "events.",
    "delivery.max_attempts",
    "delivery.backoff_initial_ms",
    "delivery.backoff_max_ms",
    "delivery.retention_hours",
    "delivery.expire_after_seconds.",
];

/// True when a change of `key` applies on SIGHUP without a restart.
pub fn is_live_key(key: &str) -> bool {
    LIVE_KEYS.iter().any(|k| if k.ends_with('.') { key.starts_with(k) } else { key == *k })
}

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// [`Settings::default`].
    Defaults,
    /// A TOML file.
    File(PathBuf),
    /// An environment variable, by name.
    Env(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Defaults => f.write_str("built-in defaults"),
            Origin::File(p) => write!(f, "{}", p.display()),
            Origin::Env(v) => write!(f, "environment variable {v}"),
        }
    }
}

/// One thing wrong with one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key, e.g. `mqtt.port`.
    pub key: String,
    /// The layer that set it.
    pub origin: Origin,
    /// What is wrong, for an operator.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` in {}: {}", self.key, self.origin, self.message)
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// `--config` or `$SCRIPTD_CONFIG_DIR` names a directory that does not exist.
    #[error("configuration directory {} does not exist", .0.display())]
    MissingDir(PathBuf),
    /// A file is not valid TOML (or cannot be read).
    #[error("{origin}: {message}")]
    Syntax {
        /// The file.
        origin: Origin,
        /// Parser message, on one line.
        message: String,
    },
    /// Keys with unknown names, wrong types or out-of-range values.
    #[error("{}", join_problems(.0))]
    Invalid(Vec<Problem>),
}

fn join_problems(problems: &[Problem]) -> String {
    problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

impl SettingsError {
    /// One line per problem, for `check-config` and the start-up error.
    pub fn lines(&self) -> Vec<String> {
        match self {
            SettingsError::Invalid(ps) => ps.iter().map(ToString::to_string).collect(),
            other => vec![other.to_string()],
        }
    }
}

/// What [`Settings::load`] read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigSources {
    /// The resolved configuration directory.
    pub dir: PathBuf,
    /// The files that existed and were read, in layer order.
    pub files: Vec<PathBuf>,
    /// The `SCRIPTD__*` environment variables that were applied, sorted.
    pub env_vars: Vec<String>,
}

/// Resolves the configuration directory (CONTRACT §2): `cli`, else `$SCRIPTD_CONFIG_DIR`,
/// else `./config` when it is a directory, else `/etc/scriptd`. A directory named
/// explicitly (by `cli` or the variable) must exist.
pub fn resolve_config_dir(cli: Option<&Path>) -> Result<PathBuf, SettingsError> {
    let env_dir = std::env::var_os(CONFIG_DIR_ENV).filter(|v| !v.is_empty()).map(PathBuf::from);
    resolve_config_dir_with(cli, env_dir, Path::new("config"))
}

/// [`resolve_config_dir`] with the environment variable's value and `./config` passed in.
pub fn resolve_config_dir_with(
    cli: Option<&Path>,
    env_dir: Option<PathBuf>,
    local: &Path,
) -> Result<PathBuf, SettingsError> {
    if let Some(dir) = cli.map(Path::to_path_buf).or(env_dir) {
        return if dir.is_dir() { Ok(dir) } else { Err(SettingsError::MissingDir(dir)) };
    }
    if local.is_dir() {
        return Ok(local.to_path_buf());
    }
    Ok(PathBuf::from(SYSTEM_CONFIG_DIR))
}

/// The `SCRIPTD__*` variables of this process (names compared case-insensitively, as the
/// `config` crate does). Variables whose value is not Unicode are skipped.
pub fn process_env() -> Vec<(String, String)> {
    let prefix = format!("{ENV_PREFIX}{ENV_SEPARATOR}").to_lowercase();
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| k.to_lowercase().starts_with(&prefix))
        .collect()
}

/// One layer, loaded on its own so a key can be traced back to it.
struct Layer {
    origin_of: Box<dyn Fn(&str) -> Origin>,
    config: Config,
    /// Dotted key -> value, leaves and tables alike.
    keys: BTreeMap<String, ValueKind>,
}

impl Layer {
    fn new(config: Config, origin_of: Box<dyn Fn(&str) -> Origin>) -> Result<Self, ConfigError> {
        let mut keys = BTreeMap::new();
        flatten_config(&config.collect()?, "", &mut keys);
        Ok(Self { origin_of, config, keys })
    }
}

fn flatten_config(
    table: &config::Map<String, Value>,
    prefix: &str,
    out: &mut BTreeMap<String, ValueKind>,
) {
    for (k, v) in table {
        let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        if let ValueKind::Table(t) = &v.kind {
            flatten_config(t, &key, out);
        }
        out.insert(key, v.kind.clone());
    }
}

/// Turns the `config` crate's multi-line TOML error into one line.
fn one_line(message: &str) -> String {
    let lines: Vec<&str> = message.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    match (lines.first(), lines.last()) {
        (Some(first), Some(last)) if first != last => format!("{first}: {last}"),
        (Some(first), _) => (*first).to_string(),
        _ => message.to_string(),
    }
}

fn config_error_message(e: &ConfigError) -> String {
    match e {
        ConfigError::Type { unexpected, expected, .. } => {
            let expected = match *expected {
                "an unsigned 16 bit integer" => "an integer 0–65535",
                "an unsigned 32 bit integer" => "an integer 0–4294967295",
                "an unsigned 64 bit or less integer" => "an integer ≥ 0",
                other => other,
            };
            format!("expected {expected}, found {unexpected}")
        }
        ConfigError::At { error, .. } => config_error_message(error),
        ConfigError::FileParse { cause, .. } => one_line(&cause.to_string()),
        other => one_line(&other.to_string()),
    }
}

fn config_error_key(e: &ConfigError) -> Option<String> {
    match e {
        ConfigError::Type { key, .. } | ConfigError::At { key, .. } => key.clone(),
        ConfigError::NotFound(key) => Some(key.clone()),
        _ => None,
    }
}

/// The known keys: dotted path -> true for a section, false for a value.
fn schema() -> BTreeMap<String, bool> {
    fn walk(v: &serde_json::Value, prefix: &str, out: &mut BTreeMap<String, bool>) {
        if let serde_json::Value::Object(map) = v {
            for (k, child) in map {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                out.insert(key.clone(), child.is_object());
                walk(child, &key, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    if let Ok(v) = serde_json::to_value(Settings::default()) {
        walk(&v, "", &mut out);
    }
    out
}

fn parent_of(key: &str) -> &str {
    key.rsplit_once('.').map_or("", |(p, _)| p)
}

/// Unknown keys and tables where values belong (or the reverse), in one layer.
fn shape_problems(layer: &Layer, schema: &BTreeMap<String, bool>) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (key, kind) in &layer.keys {
        let parent = parent_of(key);
        // Report only the outermost unknown or misshapen key.
        if !parent.is_empty() && schema.get(parent) != Some(&true) {
            continue;
        }
        let is_table = matches!(kind, ValueKind::Table(_));
        let message = match schema.get(key) {
            None => {
                let siblings: Vec<&str> = schema
                    .keys()
                    .filter(|k| parent_of(k) == parent)
                    .map(|k| k.rsplit('.').next().unwrap_or(k))
                    .collect();
                let section =
                    if parent.is_empty() { "top level".to_string() } else { format!("[{parent}]") };
                format!("unknown key (known keys at {section}: {})", siblings.join(", "))
            }
            Some(true) if !is_table => format!("expected a table [{key}], found a value"),
            Some(false) if is_table => "expected a value, found a table".to_string(),
            _ => continue,
        };
        problems.push(Problem { key: key.clone(), origin: (layer.origin_of)(key), message });
    }
    problems
}

/// The layer that set `key` last (or, for a section, any key below it).
fn origin_of(layers: &[Layer], key: &str) -> Origin {
    let below = format!("{key}.");
    layers
        .iter()
        .rev()
        .find(|l| l.keys.contains_key(key) || l.keys.keys().any(|k| k.starts_with(&below)))
        .map_or(Origin::Defaults, |l| (l.origin_of)(key))
}

impl Settings {
    /// Resolves the directory ([`resolve_config_dir`]) and loads the layers with this
    /// process's environment.
    pub fn load(cli_dir: Option<&Path>) -> Result<(Settings, ConfigSources), SettingsError> {
        let dir = resolve_config_dir(cli_dir)?;
        Self::load_from(&dir, process_env())
    }

    /// Loads `dir/default.toml`, `dir/local.toml` and the given `SCRIPTD__*` variables over
    /// the built-in defaults, then validates. Tests pass their own `env`.
    pub fn load_from(
        dir: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(Settings, ConfigSources), SettingsError> {
        let schema = schema();
        let mut layers = Vec::new();
        let defaults = Config::try_from(&Settings::default())
            .and_then(|c| Layer::new(c, Box::new(|_| Origin::Defaults)))
            .map_err(|e| SettingsError::Syntax {
                origin: Origin::Defaults,
                message: config_error_message(&e),
            })?;
        layers.push(defaults);

        let mut files = Vec::new();
        for name in ["default.toml", "local.toml"] {
            let path = dir.join(name);
            if !path.exists() {
                continue;
            }
            let syntax = |message: String| SettingsError::Syntax {
                origin: Origin::File(path.clone()),
                message,
            };
            let text = std::fs::read_to_string(&path).map_err(|e| syntax(e.to_string()))?;
            let built = Config::builder()
                .add_source(File::from_str(&text, FileFormat::Toml))
                .build()
                .map_err(|e| syntax(config_error_message(&e)))?;
            let origin_path = path.clone();
            let layer = Layer::new(built, Box::new(move |_| Origin::File(origin_path.clone())))
                .map_err(|e| syntax(config_error_message(&e)))?;
            layers.push(layer);
            files.push(path);
        }

        let env: HashMap<String, String> = env.into_iter().collect();
        let mut env_vars: Vec<String> = env.keys().cloned().collect();
        env_vars.sort();
        if !env.is_empty() {
            // Key (`mqtt.port`) -> the variable's real name, for messages.
            let prefix_len = ENV_PREFIX.len() + ENV_SEPARATOR.len();
            let names: HashMap<String, String> = env
                .keys()
                .filter(|k| k.len() > prefix_len)
                .map(|k| (k[prefix_len..].to_lowercase().replace(ENV_SEPARATOR, "."), k.clone()))
                .collect();
            let built = Config::builder()
                .add_source(environment(env))
                .build()
                .and_then(|c| {
                    Layer::new(
                        c,
                        Box::new(move |key| {
                            Origin::Env(names.get(key).cloned().unwrap_or_else(|| {
                                format!(
                                    "{ENV_PREFIX}{ENV_SEPARATOR}{}",
                                    key.to_uppercase().replace('.', ENV_SEPARATOR)
                                )
                            }))
                        }),
                    )
                })
                .map_err(|e| SettingsError::Syntax {
                    origin: Origin::Env(format!("{ENV_PREFIX}{ENV_SEPARATOR}*")),
                    message: config_error_message(&e),
                })?;
            layers.push(built);
        }

        let problems: Vec<Problem> =
            layers.iter().flat_map(|l| shape_problems(l, &schema)).collect();
        if !problems.is_empty() {
            return Err(SettingsError::Invalid(problems));
        }

        let mut builder = Config::builder();
        for layer in &layers {
            builder = builder.add_source(layer.config.clone());
        }
        let merged = builder.build().map_err(|e| SettingsError::Syntax {
            origin: Origin::Defaults,
            message: config_error_message(&e),
        })?;
        let settings: Settings = merged.try_deserialize().map_err(|e| {
            let key = config_error_key(&e).unwrap_or_default();
            let origin = origin_of(&layers, &key);
            SettingsError::Invalid(vec![Problem { key, origin, message: config_error_message(&e) }])
        })?;

        let problems: Vec<Problem> = settings
            .validate()
            .into_iter()
            .map(|(key, message)| Problem { origin: origin_of(&layers, &key), key, message })
            .collect();
        if !problems.is_empty() {
            return Err(SettingsError::Invalid(problems));
        }
        Ok((settings, ConfigSources { dir: dir.to_path_buf(), files, env_vars }))
    }

    /// Range and syntax checks that types alone do not express: `(key, message)` pairs.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut p: Vec<(String, String)> = Vec::new();
        let mut bad = |key: &str, message: String| p.push((key.to_string(), message));

        if self.database.path.as_os_str().is_empty() {
            bad("database.path", "must not be empty".into());
        }
        let m = &self.mqtt;
        if m.host.trim().is_empty() {
            bad("mqtt.host", "must not be empty".into());
        }
        if m.port == 0 {
            bad("mqtt.port", "must be 1–65535 (got 0)".into());
        }
        if m.client_id.is_empty() {
            bad("mqtt.client_id", "must not be empty".into());
        }
        if m.password.is_some() && m.username.is_none() {
            bad("mqtt.password", "is set but mqtt.username is not".into());
        }
        if let Err(why) = check_topic_filter(&m.events_topic) {
            bad("mqtt.events_topic", why);
        }
        if m.push_topic_prefix.is_empty()
            || m.push_topic_prefix.contains(['#', '+'])
            || m.push_topic_prefix.ends_with('/')
        {
            bad(
                "mqtt.push_topic_prefix",
                format!(
                    "must be a topic without wildcards and without a trailing '/' (got {:?})",
                    m.push_topic_prefix
                ),
            );
        }
        if !(5..=65535).contains(&m.keep_alive_seconds) {
            bad("mqtt.keep_alive_seconds", range_msg("5–65535", m.keep_alive_seconds));
        }
        if m.reconnect_min_ms == 0 {
            bad("mqtt.reconnect_min_ms", "must be at least 1".into());
        }
        if m.reconnect_max_ms < m.reconnect_min_ms {
            bad(
                "mqtt.reconnect_max_ms",
                format!(
                    "must be at least mqtt.reconnect_min_ms ({}) (got {})",
                    m.reconnect_min_ms, m.reconnect_max_ms
                ),
            );
        }
        if m.embedded_broker && m.protocol == MqttProtocol::V5 {
            bad(
                "mqtt.protocol",
                "the embedded broker speaks MQTT 3.1.1: set mqtt.protocol = \"3.1.1\" with \
                 mqtt.embedded_broker = true"
                    .into(),
            );
        }
        if m.inflight == 0 {
            bad("mqtt.inflight", "must be 1–65535 (got 0)".into());
        }
        let e = &self.events;
        if !(MIN_MAX_PAYLOAD_BYTES..=MAX_MQTT_PACKET_BYTES).contains(&e.max_payload_bytes) {
            bad("events.max_payload_bytes", range_msg("1024–268435455", e.max_payload_bytes));
        }
        if self.api.bind.port() == 0 {
            bad("api.bind", format!("needs a port 1–65535 (got {})", self.api.bind));
        }

        let t = &self.telegram;
        if let Err(why) = check_http_url(&t.api_url) {
            bad("telegram.api_url", why);
        }
        if !(1..=600).contains(&t.request_timeout_seconds) {
            bad("telegram.request_timeout_seconds", range_msg("1–600", t.request_timeout_seconds));
        }
        for (key, v) in [
            ("telegram.per_chat_per_second", t.per_chat_per_second),
            ("telegram.per_chat_per_minute", t.per_chat_per_minute),
            ("telegram.per_token_per_second", t.per_token_per_second),
            ("telegram.per_group_per_minute", t.per_group_per_minute),
        ] {
            if v == 0 {
                bad(key, "must be at least 1".into());
            }
        }
        if !(1..=600).contains(&self.webhook.timeout_seconds) {
            bad("webhook.timeout_seconds", range_msg("1–600", self.webhook.timeout_seconds));
        }

        let d = &self.delivery;
        if !(1..=10_000).contains(&d.max_in_flight) {
            bad("delivery.max_in_flight", range_msg("1–10000", d.max_in_flight));
        }
        if d.backoff_initial_ms == 0 {
            bad("delivery.backoff_initial_ms", "must be at least 1".into());
        }
        if d.backoff_max_ms < d.backoff_initial_ms {
            bad(
                "delivery.backoff_max_ms",
                format!(
                    "must be at least delivery.backoff_initial_ms ({}) (got {})",
                    d.backoff_initial_ms, d.backoff_max_ms
                ),
            );
        }
        for (key, v) in [
            ("delivery.expire_after_seconds.push", d.expire_after_seconds.push),
            ("delivery.expire_after_seconds.telegram", d.expire_after_seconds.telegram),
            ("delivery.expire_after_seconds.webhook", d.expire_after_seconds.webhook),
        ] {
            if v > 30 * 86_400 {
                bad(key, range_msg("0–2592000", v));
            }
        }
        if d.retention_hours == 0 {
            bad("delivery.retention_hours", "must be at least 1".into());
        }
        if d.shutdown_deadline_seconds > 3600 {
            bad(
                "delivery.shutdown_deadline_seconds",
                range_msg("0–3600", d.shutdown_deadline_seconds),
            );
        }
        for (key, v) in [
            ("delivery.push_max_in_flight", d.push_max_in_flight),
            ("delivery.telegram_max_in_flight", d.telegram_max_in_flight),
            ("delivery.webhook_max_in_flight", d.webhook_max_in_flight),
            ("delivery.per_target_max_in_flight", d.per_target_max_in_flight),
        ] {
            if v > 10_000 {
                bad(key, range_msg("0–10000", v));
            }
        }
        if (1..=10_000).contains(&d.max_in_flight)
            && let Err((key, why)) = d.budgets()
        {
            bad(key, why);
        }
        if d.breaker_after_timeouts > 1000 {
            bad("delivery.breaker_after_timeouts", range_msg("0–1000", d.breaker_after_timeouts));
        }
        if !(1..=3600).contains(&d.breaker_probe_seconds) {
            bad("delivery.breaker_probe_seconds", range_msg("1–3600", d.breaker_probe_seconds));
        }
        if let Err(why) = check_level(&self.log.level) {
            bad("log.level", why);
        }
        p
    }

    /// What SIGHUP may change, as the daemon holds it.
    pub fn live_part(&self) -> LiveSettings {
        LiveSettings {
            log_level: self.log.level.clone(),
            telegram: self.telegram.clone(),
            webhook: self.webhook.clone(),
            retry: self.delivery.retry_policy(),
            retention: self.delivery.retention(),
            expire_after: self.delivery.expire_after_seconds,
            events: self.events.clone(),
        }
    }

    /// `self` with the live keys ([`is_live_key`]) taken from `newer`: what runs after a
    /// reload.
    pub fn with_live_from(&self, newer: &Settings) -> Settings {
        let mut s = self.clone();
        s.log.level = newer.log.level.clone();
        s.telegram = newer.telegram.clone();
        s.webhook = newer.webhook.clone();
        s.events = newer.events.clone();
        s.delivery.max_attempts = newer.delivery.max_attempts;
        s.delivery.backoff_initial_ms = newer.delivery.backoff_initial_ms;
        s.delivery.backoff_max_ms = newer.delivery.backoff_max_ms;
        s.delivery.retention_hours = newer.delivery.retention_hours;
        s.delivery.expire_after_seconds = newer.delivery.expire_after_seconds;
        s
    }

    /// The effective values as TOML, secrets masked and unset keys as comments: the
    /// output of `scriptd check-config`, itself a valid `local.toml`.
    pub fn to_masked_toml(&self) -> String {
        let value = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        let mut out = String::new();
        let serde_json::Value::Object(top) = value else { return out };
        let mut sections = Vec::new();
        for (k, v) in &top {
            match v {
                serde_json::Value::Object(_) => sections.push((k, v)),
                serde_json::Value::Null => out.push_str(&format!("# {k} is unset\n")),
                _ => out.push_str(&format!("{k} = {v}\n")),
            }
        }
        for (name, section) in sections {
            out.push_str(&format!("\n[{name}]\n"));
            if let serde_json::Value::Object(fields) = section {
                for (k, v) in fields {
                    match v {
                        serde_json::Value::Null => out.push_str(&format!("# {k} is unset\n")),
                        // A sub-table of scalars (`delivery.expire_after_seconds`): inline.
                        serde_json::Value::Object(sub) => {
                            let inner: Vec<String> =
                                sub.iter().map(|(sk, sv)| format!("{sk} = {sv}")).collect();
                            out.push_str(&format!("{k} = {{ {} }}\n", inner.join(", ")));
                        }
                        // JSON scalars and strings are valid TOML scalars and basic strings.
                        _ => out.push_str(&format!("{k} = {v}\n")),
                    }
                }
            }
        }
        out
    }

    /// Every dotted key whose value differs between `self` and `other` (secrets compared by
    /// their real value, reported by key only), sorted.
    pub fn changed_keys(&self, other: &Settings) -> Vec<String> {
        let mut a = BTreeMap::new();
        let mut b = BTreeMap::new();
        flatten_json(&serde_json::to_value(self).unwrap_or_default(), "", &mut a);
        flatten_json(&serde_json::to_value(other).unwrap_or_default(), "", &mut b);
        let mut keys: BTreeSet<String> =
            a.keys().chain(b.keys()).filter(|k| a.get(*k) != b.get(*k)).cloned().collect();
        if self.mqtt.password != other.mqtt.password {
            keys.insert("mqtt.password".into());
        }
        keys.into_iter().collect()
    }

    /// Re-reads `dir` (with this process's environment) for SIGHUP and compares with
    /// `running`. An error leaves the caller's configuration in place.
    pub fn reload(dir: &Path, running: &Settings) -> Result<ReloadPlan, SettingsError> {
        Self::reload_with_env(dir, process_env(), running)
    }

    /// [`Settings::reload`] with the `SCRIPTD__*` variables passed in.
    pub fn reload_with_env(
        dir: &Path,
        env: impl IntoIterator<Item = (String, String)>,
        running: &Settings,
    ) -> Result<ReloadPlan, SettingsError> {
        let (new, _) = Self::load_from(dir, env)?;
        let (live, restart): (Vec<String>, Vec<String>) =
            running.changed_keys(&new).into_iter().partition(|k| is_live_key(k));
        Ok(ReloadPlan { settings: new, live, restart })
    }
}

/// The outcome of re-reading the configuration on SIGHUP.
#[derive(Debug, Clone)]
pub struct ReloadPlan {
    /// The configuration as read now (apply only its [`Settings::live_part`]).
    pub settings: Settings,
    /// Changed keys that apply now.
    pub live: Vec<String>,
    /// Changed keys that keep their old value until the next restart.
    pub restart: Vec<String>,
}

fn flatten_json(
    v: &serde_json::Value,
    prefix: &str,
    out: &mut BTreeMap<String, serde_json::Value>,
) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, child) in map {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten_json(child, &key, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.clone());
        }
    }
}

fn environment(env: HashMap<String, String>) -> Environment {
    // Values stay strings (`try_parsing(false)`): serde converts them to the field's type,
    // and a password like `007` keeps its leading zeros.
    Environment::with_prefix(ENV_PREFIX)
        .separator(ENV_SEPARATOR)
        .source(Some(env.into_iter().collect()))
}

fn range_msg(range: &str, got: impl fmt::Display) -> String {
    format!("must be {range} (got {got})")
}

/// Checks an MQTT subscription filter: non-empty, `#` only as the last level, `+` only as
/// a whole level.
fn check_topic_filter(filter: &str) -> Result<(), String> {
    if filter.is_empty() {
        return Err("must not be empty".into());
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i + 1 != levels.len()) {
            return Err(format!("'#' must be the whole last level (got {filter:?})"));
        }
        if level.contains('+') && *level != "+" {
            return Err(format!("'+' must be a whole level (got {filter:?})"));
        }
    }
    Ok(())
}

/// Checks an `http://` or `https://` URL with a host and no trailing slash.
fn check_http_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("must start with http:// or https:// (got {url:?})"))?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(format!("has no host (got {url:?})"));
    }
    if rest.contains(char::is_whitespace) {
        return Err(format!("must not contain spaces (got {url:?})"));
    }
    if url.ends_with('/') {
        return Err(format!("must not end with '/' (got {url:?})"));
    }
    Ok(())
}

/// Level names accepted as a directive on their own.
const LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error", "off"];

/// Checks `log.level`: env-filter syntax, and a directive without `=` must be a level name
/// (a bare word is a target in env-filter syntax, so `warning` would silently log nothing
/// but a target called "warning").
pub fn check_level(level: &str) -> Result<(), String> {
    for directive in level.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        if !directive.contains('=')
            && !directive.contains('[')
            && !LEVELS.contains(&directive.to_ascii_lowercase().as_str())
        {
            return Err(format!(
                "{directive:?} is not a level; use trace, debug, info, warn, error or off, \
                 or target=level"
            ));
        }
    }
    tracing_subscriber::EnvFilter::builder().parse(level).map(|_| ()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels() {
        assert!(check_level("info").is_ok());
        assert!(check_level("warn,scriptd::dispatch=debug").is_ok());
        assert!(check_level("scriptd=trace").is_ok());
        assert!(check_level("warning").is_err());
        assert!(check_level("info,scriptd=loud").is_err());
    }

    #[test]
    fn defaults_validate() {
        assert_eq!(Settings::default().validate(), Vec::<(String, String)>::new());
    }

    #[test]
    fn channel_budgets_split_max_in_flight_unless_set() {
        let d = |m, p, t, w| DeliverySettings {
            max_in_flight: m,
            push_max_in_flight: p,
            telegram_max_in_flight: t,
            webhook_max_in_flight: w,
            ..DeliverySettings::default()
        };
        let b = |push, telegram, webhook| Ok(ChannelBudgets { push, telegram, webhook });
        assert_eq!(d(100, 0, 0, 0).budgets(), b(50, 25, 25));
        assert_eq!(d(3, 0, 0, 0).budgets(), b(1, 1, 1));
        let seven = d(7, 0, 0, 0).budgets().unwrap();
        assert_eq!(seven.push + seven.telegram + seven.webhook, 7);
        assert_eq!(d(100, 0, 0, 10).budgets(), b(60, 30, 10));
        assert_eq!(d(100, 10, 20, 30).budgets(), b(10, 20, 30), "all set: the rest stays unused");
        let (key, why) = d(50, 40, 0, 20).budgets().unwrap_err();
        assert_eq!(key, "delivery.webhook_max_in_flight");
        assert!(why.contains("exceed delivery.max_in_flight (50)"), "{why}");
        let (key, _) = d(2, 0, 0, 0).budgets().unwrap_err();
        assert_eq!(key, "delivery.push_max_in_flight");
        let mut s = Settings::default();
        s.delivery.breaker_probe_seconds = 0;
        s.delivery.webhook_max_in_flight = 200;
        let keys: Vec<String> = s.validate().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["delivery.webhook_max_in_flight", "delivery.breaker_probe_seconds"]);
    }

    #[test]
    fn synchronous_is_normal_or_full() {
        let parse = |text: &str| {
            Config::builder()
                .add_source(File::from_str(text, FileFormat::Toml))
                .build()
                .and_then(Config::try_deserialize::<Settings>)
        };
        let s = parse("[database]\nsynchronous = \"full\"").unwrap();
        assert_eq!(s.database.synchronous, crate::store::Synchronous::Full);
        assert_eq!(parse("").unwrap().database.synchronous, crate::store::Synchronous::Normal);
        let e = parse("[database]\nsynchronous = \"off\"").unwrap_err().to_string();
        assert!(e.contains("off") && e.contains("database.synchronous"), "{e}");
    }

    #[test]
    fn retry_policy_doubles_and_caps() {
        let p = DeliverySettings::default().retry_policy();
        assert_eq!(p.delay(1), Duration::from_millis(500));
        assert_eq!(p.delay(2), Duration::from_millis(1000));
        assert_eq!(p.delay(40), Duration::from_millis(300_000));
        assert!(!p.exhausted(1_000_000));
        let capped = RetryPolicy { max_attempts: 3, ..p };
        assert!(!capped.exhausted(2));
        assert!(capped.exhausted(3));
    }

    #[test]
    fn topic_filters() {
        assert!(check_topic_filter("vms/analytics/events/#").is_ok());
        assert!(check_topic_filter("$share/scriptd/vms/+/events/#").is_ok());
        assert!(check_topic_filter("a/#/b").is_err());
        assert!(check_topic_filter("a/b+").is_err());
        assert!(check_topic_filter("").is_err());
    }

    #[test]
    fn urls() {
        assert!(check_http_url("https://api.telegram.org").is_ok());
        assert!(check_http_url("http://127.0.0.1:8081").is_ok());
        assert!(check_http_url("ftp://x").is_err());
        assert!(check_http_url("https://").is_err());
        assert!(check_http_url("https://api.telegram.org/").is_err());
    }

    #[test]
    fn live_keys() {
        assert!(is_live_key("log.level"));
        assert!(is_live_key("telegram.api_url"));
        assert!(is_live_key("delivery.backoff_max_ms"));
        assert!(!is_live_key("delivery.max_in_flight"));
        assert!(!is_live_key("log.format"));
        assert!(!is_live_key("mqtt.port"));
    }

    /// Settings where every key differs from the defaults.
    fn all_changed() -> Settings {
        Settings {
            timezone: Timezone(chrono_tz::Europe::Berlin),
            database: DatabaseSettings {
                path: "x.db".into(),
                busy_timeout_ms: 1,
                synchronous: crate::store::Synchronous::Full,
            },
            mqtt: MqttSettings {
                host: "h".into(),
                port: 2,
                client_id: "c".into(),
                username: Some("u".into()),
                password: Some(Secret::new("p")),
                events_topic: "e/#".into(),
                push_topic_prefix: "p".into(),
                embedded_broker: true,
                keep_alive_seconds: 6,
                reconnect_min_ms: 1,
                reconnect_max_ms: 2,
                inflight: 3,
                protocol: MqttProtocol::V311,
            },
            api: ApiSettings { bind: SocketAddr::from(([127, 0, 0, 1], 9)) },
            telegram: TelegramSettings {
                api_url: "http://t".into(),
                request_timeout_seconds: 1,
                per_chat_per_second: 2,
                per_chat_per_minute: 3,
                per_token_per_second: 4,
                per_group_per_minute: 5,
            },
            webhook: WebhookSettings { timeout_seconds: 1 },
            events: EventsSettings { max_age_seconds: 1, max_payload_bytes: 2048 },
            delivery: DeliverySettings {
                max_in_flight: 1,
                max_attempts: 2,
                backoff_initial_ms: 3,
                backoff_max_ms: 4,
                retention_hours: 5,
                shutdown_deadline_seconds: 6,
                push_max_in_flight: 7,
                telegram_max_in_flight: 8,
                webhook_max_in_flight: 9,
                per_target_max_in_flight: 10,
                breaker_after_timeouts: 11,
                breaker_probe_seconds: 12,
                expire_after_seconds: ExpireAfter { push: 7, telegram: 8, webhook: 9 },
            },
            log: LogSettings { format: LogFormat::Json, level: "debug".into() },
        }
    }

    #[test]
    fn with_live_from_copies_exactly_the_live_keys() {
        let old = Settings::default();
        let new = all_changed();
        let all = old.changed_keys(&new);
        assert_eq!(all.len(), 1 + 3 + 13 + 1 + 6 + 1 + 2 + 12 + 3 + 2, "{all:?}");
        let running = old.with_live_from(&new);
        let applied = old.changed_keys(&running);
        let pending = running.changed_keys(&new);
        assert!(applied.iter().all(|k| is_live_key(k)), "{applied:?}");
        assert!(pending.iter().all(|k| !is_live_key(k)), "{pending:?}");
        assert_eq!(applied.len() + pending.len(), all.len());
        assert_eq!(running.live_part(), new.live_part());
    }

    #[test]
    fn masked_toml_reparses_to_the_same_settings() {
        let mut s = Settings::default();
        s.mqtt.username = Some("user \"quoted\"".into());
        s.mqtt.password = Some(Secret::new("hunter2"));
        let text = s.to_masked_toml();
        assert!(!text.contains("hunter2"), "{text}");
        let back: Settings = Config::builder()
            .add_source(File::from_str(&text, FileFormat::Toml))
            .build()
            .and_then(Config::try_deserialize)
            .map_err(|e| e.to_string())
            .unwrap();
        assert_eq!(back.mqtt.username, s.mqtt.username);
        assert_eq!(back.mqtt.password, Some(Secret::new(crate::secret::MASK)));
        assert_eq!(back.delivery, s.delivery);
        assert_eq!(back.timezone, s.timezone);
    }
}
