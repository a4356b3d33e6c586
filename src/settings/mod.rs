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

//!
//! # Files
//!
//! - [`load`]: the layers, where each key came from, and the errors that name it.
//! - [`validate`]: range and syntax checks that types alone do not express.
//! - [`reload`]: what SIGHUP may change ([`LiveSettings`]) and the reload plan.
//! - `sections` and `delivery`: one type per configuration section, with its defaults.

mod database;
mod delivery;
pub mod load;
pub mod reload;
mod sections;
pub mod validate;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use config::{Config, ConfigError, Environment, File, FileFormat, Source, Value, ValueKind};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::secret::Secret;

pub use database::DatabaseUrl;
pub use delivery::{ChannelBudgets, DeliverySettings, ExpireAfter, RetryPolicy};
pub use load::{
    ConfigSources, Origin, Problem, SettingsError, process_env, resolve_config_dir,
    resolve_config_dir_with,
};
pub use reload::{LiveSettings, ReloadPlan, is_live_key};
pub use sections::{
    ApiSettings, ApiTlsSettings, DatabaseSettings, EventsSettings, LogFormat, LogSettings,
    MqttProtocol, MqttSettings, MqttTlsSettings, TelegramSettings, Timezone, WebhookSettings,
};
pub use validate::check_level;

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

impl Settings {
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
                        // A sub-table of scalars (`delivery.expire_after_seconds`,
                        // `mqtt.tls`): inline, its unset keys in a comment.
                        serde_json::Value::Object(sub) => {
                            let inner: Vec<String> = sub
                                .iter()
                                .filter(|(_, sv)| !sv.is_null())
                                .map(|(sk, sv)| format!("{sk} = {sv}"))
                                .collect();
                            out.push_str(&format!("{k} = {{ {} }}\n", inner.join(", ")));
                            let unset: Vec<&str> = sub
                                .iter()
                                .filter(|(_, sv)| sv.is_null())
                                .map(|(sk, _)| sk.as_str())
                                .collect();
                            if !unset.is_empty() {
                                out.push_str(&format!("# {k}: unset {}\n", unset.join(", ")));
                            }
                        }
                        // JSON scalars and strings are valid TOML scalars and basic strings.
                        _ => out.push_str(&format!("{k} = {v}\n")),
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
