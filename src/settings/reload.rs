//! What SIGHUP may change while the daemon runs, and the plan a reload makes.

use super::*;

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
pub(super) const LIVE_KEYS: &[&str] = &[
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

impl Settings {
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
        if self.database.password != other.database.password {
            keys.insert("database.password".into());
        }
        if self.database.url != other.database.url {
            keys.insert("database.url".into());
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

pub(super) fn flatten_json(
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
