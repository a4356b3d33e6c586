//! # The instance registry (CONTRACT §11, "Instances")
//!
//! Several instances share one database; each has its own MQTT client id, and two
//! instances with one client id would knock each other off the broker in a loop. So an
//! instance [`register`]s its client id at start:
//!
//! - **Who holds a client id** is decided by a session advisory lock, taken with
//!   `pg_try_advisory_lock` on a connection of the instance's own, outside the pool
//!   ([`Registration`]). PostgreSQL releases it when that connection ends, so it dies with
//!   the process: an instance killed with SIGKILL gives its client id up at once (its
//!   socket is closed by the kernel), and the restart systemd makes right after is not
//!   refused. While another live connection holds the lock, registering fails with
//!   [`RegisterError::Held`], naming the holder's host from its row.
//! - **Which instances are live** is the heartbeat row in `scriptd_instances`
//!   (client id, host, pid, version, started, last heartbeat), written with the database's
//!   clock every [`HEARTBEAT_EVERY`], so the hosts' clocks do not matter. [`live`] lists the
//!   rows whose heartbeat is younger than [`LIVE_WITHIN`] (10 s). A graceful stop deletes the
//!   row ([`Registration::release`]); a crashed instance's row ages out.
//!
//! The lock's key is the first 8 bytes of the SHA-256 of `scriptd instance ` and the client
//! id: distinct client ids never meet in practice, and the key space is apart from the
//! migrations' lock (`scriptm\0`).
//!
//! A host that vanishes without closing its sockets (power loss, a network partition) keeps
//! its lock until PostgreSQL notices the dead connection: TCP keepalive on the server
//! (`tcp_keepalives_idle`, `tcp_keepalives_interval`, `tcp_keepalives_count`; two hours by
//! the kernel's default). `docs/postgresql.md` says how to shorten it.

use std::time::Duration;

use sha2::{Digest, Sha256};

use super::PgStore;
use crate::store::StoreError;

/// How often a registered instance writes its heartbeat.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(3);

/// An instance is live while its last heartbeat is younger than this.
pub const LIVE_WITHIN: Duration = Duration::from_secs(10);

/// One row of the registry (as `/healthz` lists it).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Instance {
    /// Its MQTT client id.
    pub client_id: String,
    /// The host it runs on.
    pub host: String,
    /// Its process id on that host.
    pub pid: i64,
    /// Its version.
    pub version: String,
    /// When it started (RFC 3339, UTC).
    pub started_at: String,
    /// Its last heartbeat (RFC 3339, UTC).
    pub heartbeat_at: String,
}

/// Why [`register`] failed.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// Another running instance holds the client id.
    #[error(
        "mqtt.client_id {client_id:?} is held by another running instance{}; give each \
         instance its own mqtt.client_id",
        holder.as_ref().map(|h| format!(" on host {} (pid {}, started {})", h.host, h.pid, h.started_at))
            .unwrap_or_default()
    )]
    Held {
        /// The client id asked for.
        client_id: String,
        /// The holder's row, when it has written one.
        holder: Option<Instance>,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What this instance says about itself.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Its MQTT client id (`mqtt.client_id`).
    pub client_id: String,
    /// Its host name.
    pub host: String,
    /// Its process id.
    pub pid: i64,
    /// Its version.
    pub version: String,
}

impl Identity {
    /// This process: `client_id`, the host's name, the process id and the crate version.
    pub fn of_this_process(client_id: &str) -> Identity {
        Identity {
            client_id: client_id.to_owned(),
            host: host_name(),
            pid: i64::from(std::process::id()),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }
}

/// The lock key of a client id (see the module documentation).
pub fn lock_key(client_id: &str) -> i64 {
    let digest =
        Sha256::new().chain_update(b"scriptd instance ").chain_update(client_id).finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

/// A registered instance: the connection that holds its client id's lock. Dropping it
/// closes the connection (the lock goes with it; the row ages out); [`Self::release`] also
/// deletes the row.
pub struct Registration {
    store: PgStore,
    client: deadpool_postgres::ClientWrapper,
    identity: Identity,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("client_id", &self.identity.client_id)
            .field("host", &self.identity.host)
            .finish_non_exhaustive()
    }
}

/// Takes `identity`'s client id for this process and writes its first heartbeat; fails
/// with [`RegisterError::Held`] while another live connection holds it.
pub async fn register(store: &PgStore, identity: Identity) -> Result<Registration, RegisterError> {
    let client = deadpool_postgres::Object::take(store.get().await?);
    let key = lock_key(&identity.client_id);
    let got: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
        .await
        .map_err(|e| store.error(&e))?
        .get(0);
    if !got {
        let holder = row_of(store, &identity.client_id).await?;
        return Err(RegisterError::Held { client_id: identity.client_id, holder });
    }
    let registration = Registration { store: store.clone(), client, identity };
    registration.beat(true).await?;
    Ok(registration)
}

impl Registration {
    /// Who this is.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Writes the heartbeat. Fails when the lock's connection is gone (the database
    /// restarted or dropped it): the caller registers again.
    pub async fn heartbeat(&self) -> Result<(), StoreError> {
        self.beat(false).await
    }

    async fn beat(&self, start: bool) -> Result<(), StoreError> {
        let i = &self.identity;
        let sql = if start {
            "INSERT INTO scriptd_instances
               (client_id, host, pid, version, started_at, heartbeat_at)
             VALUES ($1, $2, $3, $4, now(), now())
             ON CONFLICT (client_id) DO UPDATE SET host = excluded.host, pid = excluded.pid,
               version = excluded.version, started_at = now(), heartbeat_at = now()"
        } else {
            "INSERT INTO scriptd_instances
               (client_id, host, pid, version, started_at, heartbeat_at)
             VALUES ($1, $2, $3, $4, now(), now())
             ON CONFLICT (client_id) DO UPDATE SET heartbeat_at = now()"
        };
        self.client
            .execute(sql, &[&i.client_id, &i.host, &i.pid, &i.version])
            .await
            .map_err(|e| self.store.error(&e))?;
        Ok(())
    }

    /// Whether the lock's connection is closed (then the client id is no longer held).
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// A graceful stop: deletes the row and gives the client id up.
    pub async fn release(self) -> Result<(), StoreError> {
        let key = lock_key(&self.identity.client_id);
        self.client
            .execute(
                "DELETE FROM scriptd_instances WHERE client_id = $1",
                &[&self.identity.client_id],
            )
            .await
            .map_err(|e| self.store.error(&e))?;
        self.client
            .execute("SELECT pg_advisory_unlock($1)", &[&key])
            .await
            .map_err(|e| self.store.error(&e))?;
        Ok(())
    }
}

const COLUMNS: &str = "client_id, host, pid, version,
    to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
    to_char(heartbeat_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')";

fn instance(r: &tokio_postgres::Row) -> Instance {
    Instance {
        client_id: r.get(0),
        host: r.get(1),
        pid: r.get(2),
        version: r.get(3),
        started_at: r.get(4),
        heartbeat_at: r.get(5),
    }
}

async fn row_of(store: &PgStore, client_id: &str) -> Result<Option<Instance>, StoreError> {
    let conn = store.get().await?;
    let sql = format!("SELECT {COLUMNS} FROM scriptd_instances WHERE client_id = $1");
    let row = conn.query_opt(&sql, &[&client_id]).await.map_err(|e| store.error(&e))?;
    Ok(row.as_ref().map(instance))
}

/// The live instances (heartbeat younger than [`LIVE_WITHIN`]), by client id.
pub async fn live(store: &PgStore) -> Result<Vec<Instance>, StoreError> {
    let conn = store.get().await?;
    let sql = format!(
        "SELECT {COLUMNS} FROM scriptd_instances
         WHERE heartbeat_at > now() - make_interval(secs => $1) ORDER BY client_id"
    );
    let within = LIVE_WITHIN.as_secs_f64();
    let rows = conn.query(&sql, &[&within]).await.map_err(|e| store.error(&e))?;
    Ok(rows.iter().map(instance).collect())
}

/// Rows whose heartbeat is older than a day: instances that crashed and never came back.
/// Deleted so the table holds only recent instances.
pub async fn forget_stale(store: &PgStore) -> Result<u64, StoreError> {
    let conn = store.get().await?;
    conn.execute("DELETE FROM scriptd_instances WHERE heartbeat_at < now() - interval '1 day'", &[])
        .await
        .map_err(|e| store.error(&e))
}

/// This host's name (`gethostname`), or `unknown` when it cannot be read.
pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that many
    // bytes and the result is cut at the first NUL below (or at the end).
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_differ_per_client_id_and_from_the_migrations_lock() {
        assert_eq!(lock_key("scriptd-a"), lock_key("scriptd-a"));
        assert_ne!(lock_key("scriptd-a"), lock_key("scriptd-b"));
        assert_ne!(lock_key("scriptd-a"), super::super::migrations::MIGRATE_LOCK);
    }

    #[test]
    fn the_held_error_names_the_client_id_and_the_holders_host() {
        let e = RegisterError::Held {
            client_id: "scriptd-1".into(),
            holder: Some(Instance {
                client_id: "scriptd-1".into(),
                host: "vms-a".into(),
                pid: 42,
                version: "0.2.0".into(),
                started_at: "2026-12-07T06:00:00Z".into(),
                heartbeat_at: "2026-12-07T06:00:03Z".into(),
            }),
        };
        let text = e.to_string();
        assert!(text.contains("\"scriptd-1\"") && text.contains("on host vms-a (pid 42"), "{text}");
        assert!(!host_name().is_empty());
    }
}
