//! The parts of `scriptd run` that are SQLite's: opening (migrating) the file with the
//! first snapshot, and the store's health from a read of the file.

use std::time::Duration;

use super::Every;
use crate::live::Live;
use crate::ops::health::{self, Health};
use crate::settings::Settings;
use crate::store::{Store, StoreError};

/// Opens (migrates) the SQLite file of `database.path` and loads the first snapshot.
pub(super) async fn open_sqlite(settings: &Settings) -> Result<(Store, Live), StoreError> {
    let db = settings.database.path.clone();
    let busy = settings.database.busy_timeout();
    let sync = settings.database.synchronous;
    let timezone = settings.timezone.tz();
    tokio::task::spawn_blocking(move || {
        let store = Store::migrate(&db)?
            .with_busy_timeout(busy)
            .with_synchronous(sync)
            .with_background_checkpoints();
        let live = Live::new(store.clone(), timezone)?;
        Ok((store, live))
    })
    .await
    .map_err(|e| StoreError::TaskFailed(e.to_string()))?
}

/// Reads the database every `period` and reports the store up, or down with the error
/// (file removed, unreadable, being replaced, corrupt), until `stop`.
pub(super) async fn probe_store(
    store: Store,
    health: Health,
    period: Duration,
    stop: impl std::future::Future<Output = ()>,
) {
    let mut every = Every::new(period, stop);
    while every.next().await {
        let s = store.clone();
        let probe = tokio::task::spawn_blocking(move || {
            s.read(|tx| {
                tx.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get::<_, i64>(0))?;
                Ok(())
            })
        })
        .await;
        match probe {
            Ok(Ok(())) => health.set_up(health::STORE),
            Ok(Err(e)) => health.set_down(health::STORE, format!("database: {e}")),
            Err(e) => health.set_down(health::STORE, format!("database probe failed: {e}")),
        }
    }
}
