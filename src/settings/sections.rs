//! The configuration sections other than `[delivery]`, with their defaults.

use super::*;

/// `[database]`: the SQLite store (the default), or PostgreSQL when `url` is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSettings {
    /// SQLite file; created with its folder if missing. Relative paths are relative to the
    /// working directory. Not used when `url` is set.
    pub path: PathBuf,
    /// PostgreSQL instead of SQLite: a libpq-style URL,
    /// `postgresql://user@host:port/dbname?sslmode=...`; a password in it is masked in
    /// every output.
    pub url: Option<DatabaseUrl>,
    /// The PostgreSQL password, when not in `url` (env `SCRIPTD__DATABASE__PASSWORD`).
    pub password: Option<Secret>,
    /// A file holding the PostgreSQL password (e.g. a systemd credential); one trailing
    /// newline is ignored.
    pub password_file: Option<PathBuf>,
    /// PEM file of the certificate authority that signed the PostgreSQL server's
    /// certificate (`sslmode` `verify-full`, and `require`/`prefer` verify the chain with it).
    pub ca_file: Option<PathBuf>,
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
    /// File holding the login password (e.g. `$CREDENTIALS_DIRECTORY/mqtt-password`: a
    /// leading `$CREDENTIALS_DIRECTORY` is that variable's value); one trailing newline is
    /// stripped. Excludes [`Self::password`]; read at start-up, and
    /// again by `check-config` and on reload.
    pub password_file: Option<PathBuf>,
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
    /// `[mqtt.tls]`: TLS to the broker, for both connections.
    pub tls: MqttTlsSettings,
}

/// `[mqtt.tls]`: TLS (and mutual TLS) to the broker. The files are read before every
/// connection attempt, so a fixed or renewed file needs neither a reload nor a restart;
/// changing these keys needs a restart.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttTlsSettings {
    /// Connect with TLS (not with the embedded broker, which speaks plain MQTT only).
    pub enabled: bool,
    /// PEM file of the CA certificates that sign the broker's certificate; unset: the
    /// system's roots.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) for mutual TLS; needs [`Self::client_key_file`].
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key of the client certificate.
    pub client_key_file: Option<PathBuf>,
    /// The name the broker's certificate must carry (DNS name or IP address); unset:
    /// `mqtt.host`.
    pub server_name: Option<String>,
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

/// `[api]`: the HTTP API (and the status page, `/healthz`, `/metrics`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSettings {
    /// Socket address the HTTP API listens on.
    #[serde(deserialize_with = "socket_addr")]
    pub bind: SocketAddr,
    /// Most API connections open at once (reaction streams included). Past it an idle
    /// connection is closed to make room, or the new one is closed when none is idle.
    pub max_connections: u32,
    /// Most reaction streams open at once (429 past it); below `max_connections`.
    pub max_streams: u32,
    /// Most reaction streams open at once with one token (429 past it).
    pub max_streams_per_token: u32,
    /// Time a connection gets to send a complete request head, counted from its opening
    /// (and the TLS handshake) or from the end of its previous response: also the
    /// keep-alive idle timeout.
    pub header_read_timeout_seconds: u64,
    /// Deadline for a request (body read and answer; reaction streams excepted): 408.
    pub request_timeout_seconds: u64,
    /// Reverse proxies whose `X-Forwarded-For` is believed: addresses or CIDRs.
    #[serde(deserialize_with = "proxy_list", serialize_with = "proxy_list_out")]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Failed authentications per client address per minute before it is blocked
    /// (0 = no limit).
    pub auth_failures_per_minute: u32,
    /// How long a blocked client address gets 429, in seconds.
    pub auth_block_seconds: u64,
    /// `[api.tls]`: HTTPS.
    pub tls: ApiTlsSettings,
}

/// `[api.tls]`: serve the API over HTTPS. Both files or neither; SIGHUP re-reads them.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiTlsSettings {
    /// PEM certificate chain, the server's certificate first.
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the certificate.
    pub key_file: Option<PathBuf>,
}

impl ApiTlsSettings {
    /// The certificate and key files when HTTPS is on.
    pub fn files(&self) -> Option<(&Path, &Path)> {
        Some((self.cert_file.as_deref()?, self.key_file.as_deref()?))
    }
}

impl ApiSettings {
    /// [`Self::header_read_timeout_seconds`] as a duration.
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_secs(self.header_read_timeout_seconds)
    }

    /// [`Self::request_timeout_seconds`] as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_seconds)
    }

    /// [`Self::auth_block_seconds`] as a duration.
    pub fn auth_block(&self) -> Duration {
        Duration::from_secs(self.auth_block_seconds)
    }
}

/// Accepts a list of addresses or CIDRs, or one string of them separated by commas (as an
/// environment variable gives it); a bare address is a single-host network.
fn proxy_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<ipnet::IpNet>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        One(String),
        Many(Vec<String>),
    }
    let items = match Raw::deserialize(deserializer)? {
        Raw::One(s) => {
            s.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
        }
        Raw::Many(v) => v,
    };
    items
        .iter()
        .map(|item| {
            let item = item.trim();
            item.parse::<ipnet::IpNet>()
                .or_else(|_| item.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    serde::de::Error::custom(format!(
                        "{item:?} is not an IP address or CIDR (e.g. \"10.0.0.5\", \"10.0.0.0/24\")"
                    ))
                })
        })
        .collect()
}

fn proxy_list_out<S: Serializer>(nets: &[ipnet::IpNet], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(nets.iter().map(|n| n.to_string()))
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

pub(super) fn socket_addr<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<SocketAddr, D::Error> {
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

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            path: PathBuf::from("data/scriptd.db"),
            url: None,
            password: None,
            password_file: None,
            ca_file: None,
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
            password_file: None,
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
            tls: MqttTlsSettings::default(),
        }
    }
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_connections: 256,
            max_streams: 128,
            max_streams_per_token: 8,
            header_read_timeout_seconds: 10,
            request_timeout_seconds: 30,
            trusted_proxies: Vec::new(),
            auth_failures_per_minute: 20,
            auth_block_seconds: 60,
            tls: ApiTlsSettings::default(),
        }
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

    /// The TLS files and the name to verify, when `mqtt.tls.enabled`.
    pub fn tls_files(&self) -> Option<crate::mqtt::tls::TlsFiles> {
        let t = &self.tls;
        t.enabled.then(|| crate::mqtt::tls::TlsFiles {
            ca_file: t.ca_file.clone(),
            client_cert_file: t.client_cert_file.clone(),
            client_key_file: t.client_key_file.clone(),
            server_name: t.server_name.clone().unwrap_or_else(|| self.host.clone()),
        })
    }

    /// Reads [`Self::password_file`] (one trailing newline stripped); `Ok(None)` when it
    /// is unset. The error names the file, never its content.
    pub fn read_password_file(&self) -> Result<Option<Secret>, String> {
        let Some(path) = &self.password_file else { return Ok(None) };
        let path = &credentials_path(path)?;
        let bytes =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut text = String::from_utf8(bytes)
            .map_err(|_| format!("{} is not UTF-8 text", path.display()))?;
        if text.ends_with('\n') {
            text.pop();
            if text.ends_with('\r') {
                text.pop();
            }
        }
        if text.is_empty() {
            return Err(format!("{} is empty", path.display()));
        }
        Ok(Some(Secret::new(text)))
    }
}

/// `path` with a leading `$CREDENTIALS_DIRECTORY` replaced by that variable (set by
/// systemd for a unit with `LoadCredential=`).
fn credentials_path(path: &Path) -> Result<PathBuf, String> {
    const VAR: &str = "$CREDENTIALS_DIRECTORY";
    let Ok(rest) = path.strip_prefix(VAR) else { return Ok(path.to_path_buf()) };
    match std::env::var_os(&VAR[1..]) {
        Some(dir) if !dir.is_empty() => Ok(PathBuf::from(dir).join(rest)),
        _ => Err(format!(
            "{} names {VAR}, which is not set (systemd sets it for a unit with \
             LoadCredential=)",
            path.display()
        )),
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
