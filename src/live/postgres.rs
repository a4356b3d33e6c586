//! The live snapshot on PostgreSQL: built from the rows of
//! [`crate::store::postgres::snapshot::read`] by the same validation and build as SQLite's,
//! and rebuilt when `scripts_version` moves. The watcher `LISTEN`s on `scriptd_scripts`
//! (the triggers that bump the counter notify it, so another instance's or a `psql`
//! session's change applies at once) and also reads the counter every poll interval, which
//! covers a notification lost with its connection. While PostgreSQL is down the snapshot
//! in use stays; the failure is logged once per streak.

use std::time::Instant;

use super::*;
use crate::store::postgres::PgStore;
use crate::store::postgres::listen::Listener;
use crate::store::postgres::snapshot as rows;

/// The channel the `scripts_version` triggers notify.
const CHANNEL: &str = "scriptd_scripts";

impl Live {
    /// Loads the first snapshot from PostgreSQL.
    pub async fn new_postgres(pg: PgStore, timezone: Tz) -> Result<Live, StoreError> {
        let live = Live {
            inner: Arc::new(Inner {
                store: None,
                pg: Some(pg.clone()),
                timezone,
                current: ArcSwap::from_pointee(Snapshot::empty()),
                watch: Mutex::new(None),
                generation: AtomicU64::new(0),
            }),
        };
        reload(&live, &pg).await?;
        Ok(live)
    }
}

/// Reads the rows, builds on the blocking pool and swaps the snapshot in, unless a snapshot
/// of a newer `scripts_version` is already in.
pub(super) async fn reload(live: &Live, pg: &PgStore) -> Result<(), StoreError> {
    let started = Instant::now();
    let rows = rows::read(pg).await?;
    let live = live.clone();
    tokio::task::spawn_blocking(move || {
        // The watcher's lock serialises rebuilds, as on SQLite.
        let _serial = live.inner.watch.lock().unwrap_or_else(|p| p.into_inner());
        let previous = live.load();
        if previous.source.is_some_and(|(_, version)| version > rows.version) {
            return Ok(());
        }
        let generation = live.inner.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let snapshot =
            build::build_from_rows(rows, live.inner.timezone, generation, &previous.index)?;
        live.install(previous, snapshot, started);
        Ok(())
    })
    .await
    .map_err(|e| StoreError::TaskFailed(format!("reload task: {e}")))?
}

/// Rebuilds when `scripts_version` differs from the snapshot's.
async fn reload_if_changed(live: &Live, pg: &PgStore) -> Result<(), StoreError> {
    let version = rows::scripts_version(pg).await?;
    if live.load().source.map(|(_, v)| v) == Some(version) {
        return Ok(());
    }
    reload(live, pg).await
}

/// The watcher; see the module documentation.
pub(super) fn spawn_watcher(
    live: Live,
    pg: PgStore,
    interval: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        tokio::pin!(shutdown);
        let mut listener: Option<Listener> = None;
        let mut last_error: Option<String> = None;
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if listener.is_none() {
                match pg.listen(&[CHANNEL]).await {
                    Ok(l) => listener = Some(l),
                    Err(e) => report(&mut last_error, &e),
                }
            }
            let notified = async {
                match listener.as_mut() {
                    Some(l) => l.recv().await.is_some(),
                    None => std::future::pending().await,
                }
            };
            let lost = tokio::select! {
                () = &mut shutdown => break,
                got = notified => !got,
                _ = ticker.tick() => false,
            };
            if lost {
                listener = None;
            }
            match reload_if_changed(&live, &pg).await {
                Ok(()) => {
                    if last_error.take().is_some() {
                        tracing::info!("watching the scripts in PostgreSQL works again");
                    }
                }
                Err(e) => report(&mut last_error, &e),
            }
        }
    })
}

/// Logs a watcher failure once per distinct message.
fn report(last_error: &mut Option<String>, e: &StoreError) {
    let msg = e.to_string();
    if last_error.as_deref() != Some(msg.as_str()) {
        tracing::warn!(error = %msg, "watching the scripts in PostgreSQL failed");
    }
    *last_error = Some(msg);
}
