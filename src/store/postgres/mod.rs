//! # The PostgreSQL store
//!
//! Used instead of SQLite when `database.url` is set (CONTRACT §11). [`ConnectOptions`]
//! turns the `[database]` settings into a connection configuration (the URL, the password
//! from the URL, `database.password` or `database.password_file`, and TLS per `sslmode`,
//! see [`tls`]); [`PgStore`] is a pool of connections (deadpool-postgres over
//! tokio-postgres) with the versioned schema of [`migrations`], applied under an advisory
//! lock so that several hosts can migrate at once, and the outbox of [`outbox`].
//!
//! Nothing outside `store/` names the PostgreSQL client: errors leave as [`StoreError`]
//! with the endpoint (`user@host:port/dbname`, never the password) in the text.

pub mod claim;
pub mod copy;
pub mod instances;
pub mod listen;
pub mod migrations;
pub mod outbox;
pub mod pipeline;
pub mod snapshot;
pub mod sync;
pub mod tls;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::config::Host;

use super::StoreError;
use crate::secret::Secret;
use crate::settings::DatabaseSettings;
pub use tls::SslMode;

/// How long establishing one connection may take before it counts as failed.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections in the pool (the intake, the dispatcher's claims and outcomes, the API).
pub const POOL_SIZE: usize = 16;

/// Where and how to connect, built from the `[database]` settings; the password is kept
/// as a [`Secret`].
#[derive(Clone)]
pub struct ConnectOptions {
    config: tokio_postgres::Config,
    ssl: SslMode,
    endpoint: String,
    tls: rustls::ClientConfig,
}

impl fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("endpoint", &self.endpoint)
            .field("sslmode", &self.ssl)
            .finish_non_exhaustive()
    }
}

impl ConnectOptions {
    /// The options of `db`, whose `url` must be set. Errors name the key at fault and
    /// never contain the password.
    pub fn from_settings(db: &DatabaseSettings) -> Result<ConnectOptions, (String, String)> {
        let Some(url) = &db.url else {
            return Err(("database.url".into(), "is not set".into()));
        };
        let bad = |m: String| ("database.url".to_owned(), m);
        let raw = url.expose();
        if !(raw.starts_with("postgresql://") || raw.starts_with("postgres://")) {
            return Err(bad(format!(
                "must be a URL like postgresql://user@host:5432/dbname (got {})",
                url.masked()
            )));
        }
        // `sslmode` is read here (tokio-postgres knows no `verify-full`); the rest of the
        // URL is tokio-postgres's to parse.
        let (base, query) = raw.split_once('?').unwrap_or((raw, ""));
        let mut ssl = SslMode::default();
        let mut rest = Vec::new();
        for param in query.split('&').filter(|p| !p.is_empty()) {
            match param.split_once('=') {
                Some(("sslmode", v)) => ssl = SslMode::parse(v).map_err(bad)?,
                _ => rest.push(param),
            }
        }
        let stripped =
            if rest.is_empty() { base.to_owned() } else { format!("{base}?{}", rest.join("&")) };
        let mut config: tokio_postgres::Config = stripped.parse().map_err(|e| {
            bad(format!("cannot be read ({e}); the form is postgresql://user@host:5432/dbname"))
        })?;
        if config.get_hosts().is_empty() {
            return Err(bad("names no host".into()));
        }
        if config.get_user().is_none() {
            return Err(bad("names no user (postgresql://USER@host/dbname)".into()));
        }
        let from_url = config.get_password().is_some();
        let password = match (from_url, &db.password, &db.password_file) {
            (true, None, None) => None,
            (false, Some(p), None) => Some(p.clone()),
            (false, None, Some(path)) => Some(read_password_file(path)?),
            (false, None, None) => None,
            _ => {
                return Err((
                    "database.password".into(),
                    "give the password once: in database.url, database.password or \
                     database.password_file"
                        .into(),
                ));
            }
        };
        if let Some(p) = password {
            config.password(p.expose());
        }
        config.ssl_mode(match ssl {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyFull => tokio_postgres::config::SslMode::Require,
        });
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        config.application_name("scriptd");
        let tls = tls::client_config(ssl, db.ca_file.as_deref())
            .map_err(|m| ("database.ca_file".to_owned(), m))?;
        let endpoint = endpoint_of(&config);
        Ok(ConnectOptions { config, ssl, endpoint, tls })
    }

    /// `user@host:port/dbname`, for messages.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The `sslmode`.
    pub fn ssl_mode(&self) -> SslMode {
        self.ssl
    }
}

fn read_password_file(path: &std::path::Path) -> Result<Secret, (String, String)> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ("database.password_file".to_owned(), format!("cannot read {}: {e}", path.display()))
    })?;
    let value = text.strip_suffix('\n').unwrap_or(&text);
    let value = value.strip_suffix('\r').unwrap_or(value);
    if value.is_empty() {
        return Err(("database.password_file".into(), format!("{} is empty", path.display())));
    }
    Ok(Secret::new(value))
}

fn endpoint_of(config: &tokio_postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let port = config.get_ports().get(i).or(config.get_ports().first()).unwrap_or(&5432);
            match h {
                Host::Tcp(name) => format!("{name}:{port}"),
                #[cfg(unix)]
                Host::Unix(dir) => format!("{}:{port}", dir.display()),
            }
        })
        .collect();
    format!(
        "{}@{}/{}",
        config.get_user().unwrap_or_default(),
        hosts.join(","),
        config.get_dbname().or(config.get_user()).unwrap_or_default()
    )
}

/// A pool of connections to one PostgreSQL database; cheap to clone.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    endpoint: String,
    /// For connections outside the pool ([`listen::Listener`]).
    direct: Arc<(tokio_postgres::Config, tokio_postgres_rustls::MakeRustlsConnect)>,
    /// The runtime the pool was made on, which drives [`sync`]'s blocking transactions.
    handle: tokio::runtime::Handle,
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStore").field("endpoint", &self.endpoint).finish_non_exhaustive()
    }
}

/// A connection taken from the pool (given back when dropped).
pub type PgConn = deadpool_postgres::Object;

impl PgStore {
    /// A pool for `options`, checked by opening one connection now: an unreachable server,
    /// a wrong password or a missing database fails here with a message naming the
    /// endpoint. Needs a tokio runtime.
    pub async fn connect(options: &ConnectOptions) -> Result<PgStore, StoreError> {
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new(options.tls.clone());
        let manager = Manager::from_config(
            options.config.clone(),
            tls.clone(),
            ManagerConfig { recycling_method: RecyclingMethod::Fast },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(CONNECT_TIMEOUT * 2))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| StoreError::Postgres {
                endpoint: options.endpoint.clone(),
                message: format!("cannot build the connection pool: {e}"),
            })?;
        let store = PgStore {
            pool,
            endpoint: options.endpoint.clone(),
            direct: Arc::new((options.config.clone(), tls)),
            handle: tokio::runtime::Handle::current(),
        };
        store.get().await?.simple_query("SELECT 1").await.map_err(|e| store.error(&e))?;
        Ok(store)
    }

    /// `user@host:port/dbname`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// A connection from the pool.
    pub async fn get(&self) -> Result<PgConn, StoreError> {
        self.pool.get().await.map_err(|e| {
            let message = match &e {
                deadpool_postgres::PoolError::Backend(pg) => describe(pg),
                deadpool_postgres::PoolError::Timeout(_) => {
                    "no connection within the timeout (server unreachable or overloaded)".into()
                }
                other => other.to_string(),
            };
            StoreError::Unreachable { endpoint: self.endpoint.clone(), message }
        })
    }

    /// Runs `SELECT 1` on a pooled connection (the daemon's health probe).
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.get().await?.simple_query("SELECT 1").await.map_err(|e| self.error(&e))?;
        Ok(())
    }

    /// Begins a read-only `REPEATABLE READ` transaction on `conn` (one consistent view of
    /// several queries) and reads the version counter of `counter` (`scripts_version`,
    /// `snoozes_version`; 0 when it has no row).
    pub(crate) async fn begin_view<'a>(
        &self,
        conn: &'a mut PgConn,
        counter: &str,
    ) -> Result<(deadpool_postgres::Transaction<'a>, i64), StoreError> {
        let err = |e: tokio_postgres::Error| self.error(&e);
        let tx = conn
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(err)?;
        let version: i64 = tx
            .query_opt(&format!("SELECT version FROM {counter} WHERE id = 1"), &[])
            .await
            .map_err(err)?
            .map_or(0, |r| r.get(0));
        Ok((tx, version))
    }

    /// A client error as a [`StoreError`] naming this store's endpoint.
    pub fn error(&self, e: &tokio_postgres::Error) -> StoreError {
        let (endpoint, message) = (self.endpoint.clone(), describe(e));
        if unreachable(e) {
            StoreError::Unreachable { endpoint, message }
        } else {
            StoreError::Postgres { endpoint, message }
        }
    }
}

/// True for a connection that is closed or failed in I/O (the server stopped, the
/// network), or that the server is shutting down or starting (SQLSTATE classes 08 and 57P),
/// as opposed to an error about the statement.
fn unreachable(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        return code.starts_with("08") || code.starts_with("57P");
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// The text of a client error with its causes (tokio-postgres puts the detail, e.g.
/// "password authentication failed", in the source). Passwords are never part of it.
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{}: {} (SQLSTATE {})", db.severity(), db.message(), db.code().code());
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// [`ConnectOptions::from_settings`] then [`PgStore::connect`], for the commands: a
/// problem with the settings is a [`StoreError::Postgres`] naming the key.
pub async fn connect_settings(db: &DatabaseSettings) -> Result<PgStore, StoreError> {
    let options =
        ConnectOptions::from_settings(db).map_err(|(key, message)| StoreError::Postgres {
            endpoint: db.url.as_ref().map(|u| u.masked()).unwrap_or_default(),
            message: format!("{key} {message}"),
        })?;
    PgStore::connect(&options).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::DatabaseUrl;

    fn options(url: &str) -> Result<ConnectOptions, (String, String)> {
        let db = DatabaseSettings { url: Some(DatabaseUrl::new(url)), ..Default::default() };
        ConnectOptions::from_settings(&db)
    }

    #[test]
    fn urls_give_an_endpoint_without_the_password_and_their_sslmode() {
        let o = options("postgresql://app:s3cret@db.example:5433/scriptd?sslmode=require").unwrap();
        assert_eq!(o.endpoint(), "app@db.example:5433/scriptd");
        assert_eq!(o.ssl_mode(), SslMode::Require);
        assert!(!format!("{o:?}").contains("s3cret"), "{o:?}");
        let o = options("postgres://app@db/x?connect_timeout=2").unwrap();
        assert_eq!((o.endpoint(), o.ssl_mode()), ("app@db:5432/x", SslMode::Prefer));
        assert_eq!(options("postgresql://app@h").unwrap().endpoint(), "app@h:5432/app");
    }

    #[test]
    fn bad_urls_name_the_key_and_never_the_password() {
        for (url, key, part) in [
            ("mysql://a:pw1@h/d", "database.url", "postgresql://"),
            ("postgresql://a:pw1@h/d?sslmode=verify-ca", "database.url", "not supported"),
            ("postgresql://a:pw1@h/d?sslmode=always", "database.url", "sslmode must be"),
            ("postgresql://a:pw1@h/d?sslmode=verify-full", "database.ca_file", "ca_file"),
            ("postgresql://a:pw1@h:port/d", "database.url", "cannot be read"),
            ("postgresql://h/d", "database.url", "names no user"),
        ] {
            let (k, m) = options(url).unwrap_err();
            assert_eq!(k, key, "{url}: {m}");
            assert!(m.contains(part), "{url}: {m}");
            assert!(!m.contains("pw1"), "{m}");
        }
        let db = DatabaseSettings {
            url: Some(DatabaseUrl::new("postgresql://a:pw1@h/d")),
            password: Some(Secret::new("pw2")),
            ..Default::default()
        };
        let (k, m) = ConnectOptions::from_settings(&db).unwrap_err();
        assert_eq!(k, "database.password", "{m}");
        let db = DatabaseSettings {
            url: Some(DatabaseUrl::new("postgresql://a@h/d")),
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        };
        let (k, m) = ConnectOptions::from_settings(&db).unwrap_err();
        assert_eq!(k, "database.ca_file", "{m}");
        assert!(m.contains("/nonexistent/ca.pem"), "{m}");
    }

    #[test]
    fn a_password_file_is_read_without_its_newline() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "pw3\n").unwrap();
        let db = DatabaseSettings {
            url: Some(DatabaseUrl::new("postgresql://a@h/d")),
            password_file: Some(file.clone()),
            ..Default::default()
        };
        let o = ConnectOptions::from_settings(&db).unwrap();
        assert_eq!(o.config.get_password(), Some(&b"pw3"[..]));
        std::fs::write(&file, "\n").unwrap();
        let (k, m) = ConnectOptions::from_settings(&db).unwrap_err();
        assert_eq!(k, "database.password_file");
        assert!(m.contains("is empty"), "{m}");
    }
}
