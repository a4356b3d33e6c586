//! The dispatcher's link to the outbox database ([`super::worker`]): one connection,
//! (re)opened when needed, its blocking calls run on tokio's blocking pool one at a time,
//! failures logged once per streak with a growing pause, and a replaced database file
//! left without losing its pending rows.
//!
//! When the file is replaced (see [`Conn`]), the pending rows of the old file are read (the
//! hand-over's rows are among them, so it is emptied under the same lock) and the
//! connection is closed; once the new file can be opened they are written into it before
//! anything else, so nothing the intake accepted is lost with the old file.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::backoff::{Backoff, Jitter};
use crate::store::outbox::{self, Carried, Handoff};
use crate::store::{Conn, FILE_CHECK_EVERY, Store, StoreError};

/// The connection, shared with the blocking calls.
pub(super) type Db = Arc<Mutex<Conn>>;

/// How often the pending rows of a replaced file are tried to be read before giving up.
const CARRY_TRIES: u32 = 5;

/// See the module documentation.
pub(super) struct DbLink {
    store: Store,
    handoff: Arc<Handoff>,
    conn: Option<Db>,
    /// The file generation `conn` is on.
    epoch: u64,
    /// Pending rows of a replaced file, to be written into the new one.
    carried: Option<Carried>,
    /// Failed reads of a replaced file's pending rows so far.
    carry_failures: u32,
    /// When to look again whether the database file was replaced.
    next_file_check: Instant,
    /// The pause after a failure: 100 ms doubling up to 5 s; its failure count makes a
    /// failure logged once per streak.
    trouble: Backoff,
}

/// What [`DbLink::get`] found.
pub(super) struct Linked {
    /// The connection; `None` when the database failed (logged; pause with
    /// [`DbLink::pause`]).
    pub(super) db: Option<Db>,
    /// Rows may be due that nobody handed over (another file, carried rows, a failure):
    /// every channel needs a query.
    pub(super) requery: bool,
}

impl DbLink {
    /// A link to `store`; the connection is opened by the first [`DbLink::get`].
    pub(super) fn new(store: Store, handoff: Arc<Handoff>) -> DbLink {
        DbLink {
            store,
            handoff,
            conn: None,
            epoch: 0,
            carried: None,
            carry_failures: 0,
            next_file_check: Instant::now(),
            trouble: Backoff::new(Duration::from_millis(100), Duration::from_secs(5))
                .with_jitter(Jitter::None),
        }
    }

    /// The file generation of the current connection: rowids of rows read with another
    /// one mean nothing in it.
    pub(super) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The open connection, without any check (housekeeping skips a turn without one).
    pub(super) fn current(&self) -> Option<Db> {
        self.conn.clone()
    }

    /// The connection, (re)opened when needed; see the module documentation.
    pub(super) async fn get(&mut self) -> Linked {
        let mut requery = false;
        if let Some(db) = self.conn.clone() {
            // One `stat` per FILE_CHECK_EVERY, not one per loop turn.
            let now = Instant::now();
            if now < self.next_file_check {
                return Linked { db: Some(db), requery };
            }
            self.next_file_check = now + FILE_CHECK_EVERY;
            let stale = db.lock().unwrap_or_else(|p| p.into_inner()).is_stale();
            if !stale {
                return Linked { db: Some(db), requery };
            }
            if !self.leave_replaced_file(db).await {
                return Linked { db: None, requery: true };
            }
            requery = true;
        }
        let store = self.store.clone();
        let opened = tokio::task::spawn_blocking(move || store.connect())
            .await
            .unwrap_or_else(|e| Err(StoreError::TaskFailed(format!("connect task: {e}"))));
        let db = match opened {
            Ok(conn) => {
                self.epoch = conn.epoch();
                let db = Arc::new(Mutex::new(conn));
                self.conn = Some(db.clone());
                db
            }
            Err(e) => {
                self.failed("open", &e);
                return Linked { db: None, requery: true };
            }
        };
        if let Some(carried) = self.carried.take() {
            let (carried, result) =
                match with_db_owned(&db, carried, |c, rows| outbox::carry_over(c, rows)).await {
                    Ok(pair) => pair,
                    Err(e) => {
                        self.failed("carry pending deliveries over", &e);
                        return Linked { db: None, requery: true };
                    }
                };
            match result {
                Ok(added) => tracing::info!(
                    pending = carried.len(),
                    added,
                    "pending deliveries of the replaced database file carried over to the new one"
                ),
                Err(e) => {
                    self.carried = Some(carried);
                    self.failed("carry pending deliveries over", &e);
                    return Linked { db: None, requery: true };
                }
            }
            requery = true;
        }
        Linked { db: Some(db), requery }
    }

    /// Reads the pending rows of a replaced file (dropping what was handed over: those
    /// rows are among them) and closes the connection. False when the read failed and
    /// should be tried again.
    async fn leave_replaced_file(&mut self, db: Db) -> bool {
        let handoff = self.handoff.clone();
        match with_db(&db, move |c| handoff.query(|| outbox::pending_rows(c))).await {
            Ok(rows) => {
                self.carry_failures = 0;
                match &mut self.carried {
                    Some(earlier) => earlier.extend(rows),
                    None => self.carried = Some(rows),
                }
            }
            Err(e) if self.carry_failures + 1 < CARRY_TRIES => {
                self.carry_failures += 1;
                self.failed("read the pending deliveries of the replaced file", &e);
                self.conn = Some(db);
                return false;
            }
            Err(e) => {
                self.carry_failures = 0;
                tracing::error!(
                    error = %e,
                    "cannot read the pending deliveries of the replaced database file; \
                     they stay in the old file"
                );
            }
        }
        self.conn = None;
        true
    }

    /// A call succeeded: a failure streak ends (logged).
    pub(super) fn ok(&mut self) {
        if self.trouble.reset() {
            tracing::info!("outbox database usable again");
        }
    }

    /// A call failed: logged once per streak; a connection that may be broken (anything but
    /// "busy") is reopened next time.
    pub(super) fn failed(&mut self, what: &str, e: &StoreError) {
        if self.trouble.failures() == 0 {
            tracing::warn!(error = %e, what, "outbox database call failed; retrying with backoff");
        }
        if !matches!(e, StoreError::Busy) {
            self.conn = None;
        }
    }

    /// The pause before the next try after a failure; grows with each call until
    /// [`DbLink::ok`].
    pub(super) fn pause(&mut self) -> Duration {
        self.trouble.next_delay()
    }
}

/// [`with_db`] for a call that borrows `value`, which is given back with the result.
async fn with_db_owned<V: Send + 'static, T: Send + 'static>(
    db: &Db,
    value: V,
    f: impl FnOnce(&mut Conn, &V) -> Result<T, StoreError> + Send + 'static,
) -> Result<(V, Result<T, StoreError>), StoreError> {
    let db = db.clone();
    tokio::task::spawn_blocking(move || {
        let mut conn = db.lock().unwrap_or_else(|p| p.into_inner());
        let r = f(&mut conn, &value);
        (value, r)
    })
    .await
    .map_err(|e| StoreError::TaskFailed(format!("dispatcher task: {e}")))
}

/// Runs a blocking database call on the dispatcher's connection.
pub(super) async fn with_db<T: Send + 'static>(
    db: &Db,
    f: impl FnOnce(&mut Conn) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let db = db.clone();
    match tokio::task::spawn_blocking(move || {
        let mut conn = db.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut conn)
    })
    .await
    {
        Ok(r) => r,
        Err(e) => Err(StoreError::TaskFailed(format!("dispatcher task: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::outbox::{NewDelivery, OutboxWriter};

    fn push(id: &str) -> NewDelivery {
        NewDelivery::test_push(id)
    }

    fn pending_ids(db: &Db) -> Vec<String> {
        let conn = db.lock().unwrap();
        outbox::due(&conn, i64::MAX, 100).unwrap().into_iter().map(|r| r.id).collect()
    }

    #[tokio::test]
    async fn the_connection_is_opened_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::migrate(&dir.path().join("t.db")).unwrap();
        let mut link = DbLink::new(store, Arc::new(Handoff::default()));
        assert!(link.current().is_none());
        let first = link.get().await;
        assert!(!first.requery);
        let second = link.get().await;
        assert!(Arc::ptr_eq(&first.db.unwrap(), &second.db.unwrap()));
        assert!(link.current().is_some());
    }

    #[tokio::test]
    async fn a_failure_other_than_busy_reopens_and_the_pause_grows_until_ok() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::migrate(&dir.path().join("t.db")).unwrap();
        let mut link = DbLink::new(store, Arc::new(Handoff::default()));
        link.get().await;
        link.failed("claim", &StoreError::Busy);
        assert!(link.current().is_some(), "busy keeps the connection");
        assert_eq!(link.pause(), Duration::from_millis(100));
        link.failed("claim", &StoreError::TaskFailed("boom".into()));
        assert!(link.current().is_none(), "anything else reopens");
        assert_eq!(link.pause(), Duration::from_millis(200));
        link.ok();
        assert_eq!(link.pause(), Duration::from_millis(100));
    }

    #[tokio::test]
    async fn pending_rows_of_a_replaced_file_are_carried_into_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let store = Store::migrate(&path).unwrap();
        let handoff = Arc::new(Handoff::default());
        let mut writer = OutboxWriter::new(&store, handoff.clone()).unwrap();
        writer.enqueue(&[push("a"), push("b")], 1).unwrap();
        assert!(!handoff.is_empty(), "new push rows are handed over");
        let mut link = DbLink::new(store.clone(), handoff.clone());
        let old = link.get().await.db.unwrap();
        let old_epoch = link.epoch();
        assert_eq!(pending_ids(&old), ["a", "b"]);

        // An operator restores another file over the database.
        let other = dir.path().join("other.db");
        Store::migrate(&other).unwrap();
        std::fs::rename(&other, &path).unwrap();
        tokio::time::sleep(FILE_CHECK_EVERY + Duration::from_millis(20)).await;
        // The new file opens once every connection to the old one is closed (the link
        // closes its own).
        drop((writer, old));

        let linked = link.get().await;
        assert!(linked.requery, "rows nobody handed over are in the new file");
        let new = linked.db.unwrap();
        assert_ne!(link.epoch(), old_epoch);
        assert_eq!(pending_ids(&new), ["a", "b"]);
        assert!(handoff.is_empty(), "the old file's handed-over rows were dropped");
    }
}
