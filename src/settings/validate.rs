//! Range and syntax checks that types alone do not express.

use super::*;

impl Settings {
    /// Range and syntax checks that types alone do not express: `(key, message)` pairs.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut p: Vec<(String, String)> = Vec::new();
        let mut bad = |key: &str, message: String| p.push((key.to_string(), message));

        if self.database.path.as_os_str().is_empty() {
            bad("database.path", "must not be empty".into());
        }
        if self.database.url.is_some() {
            if let Err((key, message)) =
                crate::store::postgres::ConnectOptions::from_settings(&self.database)
            {
                bad(&key, message);
            }
        } else {
            for (key, set) in [
                ("database.password", self.database.password.is_some()),
                ("database.password_file", self.database.password_file.is_some()),
                ("database.ca_file", self.database.ca_file.is_some()),
            ] {
                if set {
                    bad(key, "is for PostgreSQL and needs database.url".into());
                }
            }
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
        if m.password_file.is_some() {
            if m.password.is_some() {
                bad(
                    "mqtt.password_file",
                    "set mqtt.password or mqtt.password_file, not both".into(),
                );
            }
            if m.username.is_none() {
                bad("mqtt.password_file", "is set but mqtt.username is not".into());
            }
        }
        let tls = &m.tls;
        if tls.client_cert_file.is_some() != tls.client_key_file.is_some() {
            bad(
                if tls.client_cert_file.is_some() {
                    "mqtt.tls.client_key_file"
                } else {
                    "mqtt.tls.client_cert_file"
                },
                "set both mqtt.tls.client_cert_file and mqtt.tls.client_key_file, or neither"
                    .into(),
            );
        } else if tls.enabled && m.embedded_broker {
            bad(
                "mqtt.tls.enabled",
                "the embedded broker speaks plain MQTT only: use an external broker (e.g. \
                 Mosquitto) for TLS, or set mqtt.tls.enabled = false"
                    .into(),
            );
        } else if let Some(files) = m.tls_files()
            && let Err(e) = files.client_config()
        {
            let message = if e.path.as_os_str().is_empty() {
                e.message
            } else {
                format!("{}: {}", e.path.display(), e.message)
            };
            bad(e.key, message);
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
        for (key, message) in delay_bounds(
            ("mqtt.reconnect_min_ms", m.reconnect_min_ms),
            ("mqtt.reconnect_max_ms", m.reconnect_max_ms),
        ) {
            bad(key, message);
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
        for (key, message) in self.api.problems() {
            bad(key, message);
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
        for (key, message) in delay_bounds(
            ("delivery.backoff_initial_ms", d.backoff_initial_ms),
            ("delivery.backoff_max_ms", d.backoff_max_ms),
        ) {
            bad(key, message);
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
        if !(5..=3600).contains(&d.lease_seconds) {
            bad("delivery.lease_seconds", range_msg("5–3600", d.lease_seconds));
        }
        if let Err(why) = check_level(&self.log.level) {
            bad("log.level", why);
        }
        p
    }
}

pub(super) fn range_msg(range: &str, got: impl fmt::Display) -> String {
    format!("must be {range} (got {got})")
}

/// Checks an MQTT subscription filter: non-empty, `#` only as the last level, `+` only as
/// a whole level.
pub(super) fn check_topic_filter(filter: &str) -> Result<(), String> {
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
pub(super) fn check_http_url(url: &str) -> Result<(), String> {
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
pub(super) const LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error", "off"];

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

/// The problems of a backoff's bounds (milliseconds): the first delay must be at least 1,
/// the largest at least the first.
fn delay_bounds(
    (min_key, min): (&'static str, u64),
    (max_key, max): (&'static str, u64),
) -> Vec<(&'static str, String)> {
    let mut problems = Vec::new();
    if min == 0 {
        problems.push((min_key, "must be at least 1".to_owned()));
    }
    if max < min {
        problems.push((max_key, format!("must be at least {min_key} ({min}) (got {max})")));
    }
    problems
}

impl ApiSettings {
    /// The `[api]` section's problems: ranges, the stream caps against the connection cap,
    /// and the TLS files (both or neither; each readable, parsable and matching).
    pub(super) fn problems(&self) -> Vec<(&'static str, String)> {
        let mut p = Vec::new();
        if !(1..=1_000_000).contains(&self.max_connections) {
            p.push(("api.max_connections", range_msg("1–1000000", self.max_connections)));
        }
        if self.max_streams >= self.max_connections {
            p.push((
                "api.max_streams",
                format!(
                    "must be below api.max_connections ({}), so that requests always have \
                     connections left (got {})",
                    self.max_connections, self.max_streams
                ),
            ));
        }
        if self.max_streams_per_token == 0 {
            p.push(("api.max_streams_per_token", "must be at least 1".into()));
        }
        if !(1..=3600).contains(&self.header_read_timeout_seconds) {
            p.push((
                "api.header_read_timeout_seconds",
                range_msg("1–3600", self.header_read_timeout_seconds),
            ));
        }
        if !(1..=3600).contains(&self.request_timeout_seconds) {
            p.push((
                "api.request_timeout_seconds",
                range_msg("1–3600", self.request_timeout_seconds),
            ));
        }
        if !(1..=86_400).contains(&self.auth_block_seconds) {
            p.push(("api.auth_block_seconds", range_msg("1–86400", self.auth_block_seconds)));
        }
        match (&self.tls.cert_file, &self.tls.key_file) {
            (None, None) => {}
            (Some(_), None) => {
                p.push(("api.tls.key_file", "must be set with api.tls.cert_file".into()))
            }
            (None, Some(_)) => {
                p.push(("api.tls.cert_file", "must be set with api.tls.key_file".into()))
            }
            (Some(cert), Some(key)) => {
                if let Err(e) = crate::api::tls::load_certified_key(cert, key) {
                    let key_name = match e {
                        crate::api::tls::TlsFileError::Key { .. } => "api.tls.key_file",
                        _ => "api.tls.cert_file",
                    };
                    p.push((key_name, e.to_string()));
                }
            }
        }
        p
    }
}
