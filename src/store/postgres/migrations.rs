//! The versioned PostgreSQL schema (`store/postgres/migrations/NNNN_*.sql`), applied in
//! order under an advisory lock.
//!
//! The applied versions are rows of `scriptd_schema`. [`migrate`] takes the session-level
//! advisory lock [`MIGRATE_LOCK`] first (waiting for it), so when several hosts run
//! `scriptd migrate` or `scriptd run` at once one applies the pending migrations and the
//! others wait and then find nothing to do. Each migration commits in its own transaction
//! with its version row. A database whose version is higher than this binary knows is
//! refused ([`StoreError::TooNew`]). The catalogs are seeded after the migrations, keeping
//! rows that exist (operators' edits survive), as on SQLite.

use super::{PgConn, PgStore};
use crate::store::StoreError;
use crate::store::catalog::{DEFAULT_EVENTS, DEFAULT_PERMISSIONS, DEFAULT_REACTIONS};

/// Every migration, oldest first: (version, SQL). Append only; never edit a released one.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("migrations/0001_schema.sql")),
    (2, include_str!("migrations/0002_calendars.sql")),
    (3, include_str!("migrations/0003_instances.sql")),
    (4, include_str!("migrations/0004_chat_pacing.sql")),
    (5, include_str!("migrations/0005_json_text.sql")),
    (6, include_str!("migrations/0006_delivery_id_order.sql")),
];

/// The advisory lock key held while migrating: the ASCII bytes of `scriptm` and a zero
/// byte (8314615134239878400).
pub const MIGRATE_LOCK: i64 = 0x7363_7269_7074_6d00;

/// The schema version this binary writes and understands.
pub fn latest_version() -> i32 {
    MIGRATIONS.last().map_or(0, |(v, _)| *v)
}

/// What [`migrate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrated {
    /// The version found before.
    pub from: i32,
    /// The versions applied now (empty: already up to date).
    pub applied: Vec<i32>,
}

/// Applies every pending migration and seeds the catalogs, holding [`MIGRATE_LOCK`].
pub async fn migrate(store: &PgStore) -> Result<Migrated, StoreError> {
    let mut conn = store.get().await?;
    let err = |e: tokio_postgres::Error| store.error(&e);
    conn.execute("SELECT pg_advisory_lock($1)", &[&MIGRATE_LOCK]).await.map_err(err)?;
    let result = migrate_locked(store, &mut conn).await;
    let unlocked = conn.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATE_LOCK]).await;
    if unlocked.is_err() {
        // The lock goes with the session: never give this connection back to the pool.
        let _ = deadpool_postgres::Object::take(conn);
    }
    result
}

async fn migrate_locked(store: &PgStore, conn: &mut PgConn) -> Result<Migrated, StoreError> {
    let err = |e: tokio_postgres::Error| store.error(&e);
    conn.batch_execute(
        "CREATE TABLE IF NOT EXISTS scriptd_schema (
           version INTEGER PRIMARY KEY,
           applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    )
    .await
    .map_err(err)?;
    let from: i32 = conn
        .query_one("SELECT COALESCE(MAX(version), 0) FROM scriptd_schema", &[])
        .await
        .map_err(err)?
        .get(0);
    if from > latest_version() {
        return Err(StoreError::TooNew {
            found: usize::try_from(from).unwrap_or(usize::MAX),
            supported: usize::try_from(latest_version()).unwrap_or(0),
        });
    }
    let mut applied = Vec::new();
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > from) {
        let tx = conn.transaction().await.map_err(err)?;
        tx.batch_execute(sql).await.map_err(|e| {
            StoreError::Migration(format!(
                "PostgreSQL migration {version} at {}: {}",
                store.endpoint(),
                super::describe(&e)
            ))
        })?;
        tx.execute("INSERT INTO scriptd_schema (version) VALUES ($1)", &[version])
            .await
            .map_err(err)?;
        tx.commit().await.map_err(err)?;
        applied.push(*version);
    }
    seed_defaults(store, conn).await?;
    Ok(Migrated { from, applied })
}

/// The version recorded in the database (0: none).
pub async fn current_version(store: &PgStore) -> Result<i32, StoreError> {
    let conn = store.get().await?;
    let exists: bool = conn
        .query_one("SELECT to_regclass('scriptd_schema') IS NOT NULL", &[])
        .await
        .map_err(|e| store.error(&e))?
        .get(0);
    if !exists {
        return Ok(0);
    }
    Ok(conn
        .query_one("SELECT COALESCE(MAX(version), 0) FROM scriptd_schema", &[])
        .await
        .map_err(|e| store.error(&e))?
        .get(0))
}

/// Inserts the default catalog rows that are missing, in one transaction; the identity
/// sequences are moved past the seeded ids so rows added later do not collide with them.
async fn seed_defaults(store: &PgStore, conn: &mut PgConn) -> Result<(), StoreError> {
    let err = |e: tokio_postgres::Error| store.error(&e);
    let tx = conn.transaction().await.map_err(err)?;
    let ev = tx
        .prepare(
            "INSERT INTO events (id, name, description, color, analytic_type)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .await
        .map_err(err)?;
    for (id, name, description, color, analytic) in DEFAULT_EVENTS {
        tx.execute(&ev, &[id, name, description, color, analytic]).await.map_err(err)?;
    }
    let re = tx
        .prepare(
            "INSERT INTO reactions (id, name, description, is_default)
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .await
        .map_err(err)?;
    for (id, name, description, is_default) in DEFAULT_REACTIONS {
        tx.execute(&re, &[id, name, description, is_default]).await.map_err(err)?;
    }
    let pe = tx
        .prepare(
            "INSERT INTO permissions (id, name, display_name) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
        )
        .await
        .map_err(err)?;
    for (id, name, display_name) in DEFAULT_PERMISSIONS {
        tx.execute(&pe, &[id, name, display_name]).await.map_err(err)?;
    }
    tx.batch_execute(&advance_identities(&["events", "reactions", "permissions"]))
        .await
        .map_err(err)?;
    tx.commit().await.map_err(err)
}

/// SQL moving the identity sequence of `id` in each table past its largest id (after rows
/// were inserted with explicit ids).
pub(crate) fn advance_identities(tables: &[&str]) -> String {
    tables
        .iter()
        .map(|t| {
            format!(
                "SELECT setval(pg_get_serial_sequence('{t}', 'id'),
                               GREATEST((SELECT MAX(id) FROM {t}), 1));"
            )
        })
        .collect()
}
