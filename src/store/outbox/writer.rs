//! The intake's side of the outbox: new deliveries and the cooldown state of their
//! firings, written in one transaction.

use std::time::{Duration, Instant};

use super::*;
use crate::store::{FILE_CHECK_EVERY, Synchronous};

/// A script's firing on a camera, kept as its cooldown state (table `cooldowns`): written
/// by [`OutboxWriter::enqueue_with_cooldowns`] in the same transaction as the deliveries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fired {
    /// The script.
    pub script_id: i64,
    /// The camera.
    pub camera_id: i64,
    /// The firing occurrence's `occurred_at`, unix ms.
    pub occurred_at_ms: i64,
    /// The firing occurrence's id (its redelivery is a duplicate, not a suppressed one).
    pub occurrence_id: String,
    /// The script's cooldown at the firing, ms (0 in a stored state). On PostgreSQL the
    /// firing is checked against the stored state with it, in the transaction, so that two
    /// instances firing one script on one camera at once make one firing.
    pub cooldown_ms: i64,
}

/// Every stored cooldown state, for the intake's cache at start.
pub fn load_cooldowns(conn: &Connection) -> Result<Vec<Fired>, StoreError> {
    let mut stmt =
        conn.prepare("SELECT script_id, camera, fired_at, occurrence_id FROM cooldowns")?;
    let rows = stmt.query_map([], |r| {
        Ok(Fired {
            script_id: r.get(0)?,
            camera_id: lossy_text(r.get(1)?).parse().unwrap_or(0),
            occurred_at_ms: r.get(2)?,
            occurrence_id: lossy_text(r.get(3)?),
            cooldown_ms: 0,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Writes deliveries into the outbox over its own connection.
///
/// ```
/// use std::sync::Arc;
/// use scriptd::store::outbox::{Handoff, NewDelivery, OutboxWriter, Target};
/// use scriptd::store::{Store, now_ms};
///
/// let dir = tempfile::tempdir().unwrap();
/// let store = Store::migrate(&dir.path().join("scriptd.db")).unwrap();
/// let handoff = Arc::new(Handoff::default());
/// let mut writer = OutboxWriter::new(&store, handoff.clone()).unwrap();
/// let push = NewDelivery {
///     id: "occ-1:1:42".into(),
///     occurrence_id: "occ-1".into(),
///     script_id: 1,
///     reaction: "sound".into(),
///     recipient: "42".into(),
///     lane: String::new(),
///     payload: r#"{"reaction":"sound","delivery_id":"occ-1:1:42"}"#.into(),
///     target: Target::Push { user_id: 42 },
/// };
/// assert_eq!(writer.enqueue(&[push.clone()], now_ms()).unwrap(), 1);
/// // The same occurrence redelivered: nothing new.
/// assert_eq!(writer.enqueue(&[push], now_ms()).unwrap(), 0);
/// ```
pub struct OutboxWriter {
    conn: HeldConn,
    handoff: Arc<Handoff>,
    /// When [`Self::try_enqueue_without_waiting`] next looks at the file itself (a `stat`,
    /// every [`FILE_CHECK_EVERY`]) for a replacement.
    next_file_check: Instant,
}

/// How a write looks for a replaced database file before its commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Look {
    /// A `stat` of the path ([`Staleness::is_stale`]).
    AtTheFile,
    /// What any holder already found ([`Staleness::is_known_stale`]).
    AtWhatIsKnown,
}

impl std::fmt::Debug for OutboxWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxWriter").finish_non_exhaustive()
    }
}

pub(super) const INSERT: &str = "INSERT OR IGNORE INTO deliveries
    (id, occurrence_id, script_id, reaction, recipient, lane, payload, state, attempts,
     next_attempt_at, created_at, updated_at, target)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', 0, ?8, ?8, ?8, ?9)";

impl OutboxWriter {
    /// A writer with a dedicated connection to `store`, handing new rows over through
    /// `handoff` (the dispatcher's).
    pub fn new(store: &Store, handoff: Arc<Handoff>) -> Result<OutboxWriter, StoreError> {
        Ok(OutboxWriter {
            conn: HeldConn::open(store.clone())?,
            handoff,
            next_file_check: Instant::now(),
        })
    }

    /// Writes `deliveries` in one transaction begun IMMEDIATE; an id already in the outbox
    /// is ignored (a redelivered occurrence adds nothing). Returns the number of new rows.
    /// On error nothing is written. New rows without a lane are also handed over in memory
    /// (see the module documentation).
    ///
    /// When the database file was replaced (see [`Conn`]) the writer closes its connection
    /// and fails with [`StoreError::Replaced`] until the new file can be opened; it never
    /// commits to the old file after the replacement was noticed, so the caller retries the
    /// batch and it lands in the new file.
    pub fn enqueue(
        &mut self,
        deliveries: &[NewDelivery],
        now_ms: i64,
    ) -> Result<usize, StoreError> {
        self.enqueue_with_cooldowns(deliveries, &[], now_ms)
    }

    /// [`Self::enqueue`], also storing the cooldown states in `fired` (one row per script
    /// and camera, replaced) in the same transaction.
    pub fn enqueue_with_cooldowns(
        &mut self,
        deliveries: &[NewDelivery],
        fired: &[Fired],
        now_ms: i64,
    ) -> Result<usize, StoreError> {
        if deliveries.is_empty() && fired.is_empty() {
            return Ok(0);
        }
        let conn = self.conn.get()?;
        let result = Self::write(conn, &self.handoff, deliveries, fired, now_ms, Look::AtTheFile);
        if matches!(result, Err(StoreError::Replaced)) {
            self.conn.close();
        }
        result
    }

    /// [`Self::enqueue_with_cooldowns`] for a caller that must not wait: it is made only
    /// when it cannot wait for the disk or another writer. That is, only over a connection
    /// that is already open, with `synchronous = normal` (a commit writes the log and does
    /// not fsync), and without waiting for the write lock. `None` when it was not made:
    /// nothing was written, and the caller writes the batch with
    /// [`Self::enqueue_with_cooldowns`] off its thread.
    ///
    /// The one wait left is the hand-over's lock at the commit, which a dispatcher's claim
    /// holds only while it reads due rows (a read never waits for a writer in WAL mode, see
    /// [`claim_rows`]): under a millisecond even with a large backlog.
    pub fn try_enqueue_without_waiting(
        &mut self,
        deliveries: &[NewDelivery],
        fired: &[Fired],
        now_ms: i64,
    ) -> Option<Result<usize, StoreError>> {
        if self.conn.store().synchronous() != Synchronous::Normal {
            return None;
        }
        let wait = self.conn.store().busy_timeout();
        // A replaced file is seen before the commit (in `write`): at the file itself once
        // per FILE_CHECK_EVERY, from what the other holders found in between. At 1,000
        // batches a second a `stat` each was 2 % of the daemon's CPU. The dispatcher's
        // link looks as often and carries the old file's pending rows over, so what is
        // committed to the old file before anyone noticed is not lost.
        let now = Instant::now();
        let look = if now >= self.next_file_check {
            self.next_file_check = now + FILE_CHECK_EVERY;
            Look::AtTheFile
        } else {
            Look::AtWhatIsKnown
        };
        let conn = self.conn.get_open_unchecked()?;
        if conn.busy_timeout(Duration::ZERO).is_err() {
            return None;
        }
        let result = Self::write(conn, &self.handoff, deliveries, fired, now_ms, look);
        if conn.busy_timeout(wait).is_err() {
            // Never keep a connection that would not wait for the lock any more.
            self.conn.close();
        }
        match result {
            // The lock was taken: nothing was written (the transaction rolled back).
            Err(StoreError::Busy) => None,
            Err(StoreError::Replaced) => {
                self.conn.close();
                Some(result)
            }
            _ => Some(result),
        }
    }

    /// Closes the connection if the database file was replaced (see [`Conn`]).
    pub fn release_replaced_file(&mut self) {
        self.conn.release_replaced_file();
    }

    fn write(
        conn: &mut Conn,
        handoff: &Handoff,
        deliveries: &[NewDelivery],
        fired: &[Fired],
        now_ms: i64,
        look: Look,
    ) -> Result<usize, StoreError> {
        let epoch = conn.epoch();
        let staleness = conn.staleness();
        let tx = ImmediateTx::begin(conn)?;
        if !fired.is_empty() {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO cooldowns (script_id, camera, fired_at, occurrence_id)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (script_id, camera) DO UPDATE
                 SET fired_at = excluded.fired_at, occurrence_id = excluded.occurrence_id",
            )?;
            for f in fired {
                stmt.execute(params![
                    f.script_id,
                    f.camera_id.to_string(),
                    f.occurred_at_ms,
                    f.occurrence_id
                ])?;
            }
        }
        let mut added = 0;
        let mut fresh = Vec::new();
        let mut laned = false;
        {
            let mut stmt = tx.prepare_cached(INSERT)?;
            for (i, d) in deliveries.iter().enumerate() {
                let n = stmt.execute(params![
                    d.id,
                    d.occurrence_id,
                    d.script_id,
                    d.reaction,
                    d.recipient,
                    d.lane,
                    d.payload,
                    now_ms,
                    d.target.to_json(),
                ])?;
                added += n;
                if n == 1 {
                    if d.lane.is_empty() {
                        fresh.push((tx.last_insert_rowid(), i));
                    } else {
                        // Lanes keep their order through the query only.
                        laned = true;
                    }
                }
            }
        }
        // Commit and hand over under the hand-over's lock (see the module documentation).
        // A dispatcher carrying the pending rows of a replaced file over to the new one
        // reads them under this lock too, and only once the replacement is known: either
        // this commit is before that read (and carried) or it sees the replacement here and
        // is rolled back.
        let mut queue = handoff.lock();
        let replaced = match look {
            Look::AtTheFile => staleness.is_stale(),
            Look::AtWhatIsKnown => staleness.is_known_stale(),
        };
        if replaced {
            return Err(StoreError::Replaced);
        }
        tx.commit()?;
        queue.laned |= laned;
        queue.push(fresh.into_iter().map(|(rowid, i)| deliveries[i].handed_over(rowid, epoch)));
        Ok(added)
    }
}

/// An `IMMEDIATE` transaction begun and committed through cached statements, rolled back
/// when dropped uncommitted. rusqlite's `Transaction` runs `BEGIN` and `COMMIT` through
/// `execute_batch`, which parses them again for every batch: 1.5 % of the daemon's CPU at
/// 1,000 occurrences per second, where every batch is one occurrence.
struct ImmediateTx<'c> {
    conn: &'c Connection,
    open: bool,
}

impl<'c> ImmediateTx<'c> {
    fn begin(conn: &'c Connection) -> rusqlite::Result<ImmediateTx<'c>> {
        conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        Ok(ImmediateTx { conn, open: true })
    }

    fn commit(mut self) -> rusqlite::Result<()> {
        self.conn.prepare_cached("COMMIT")?.execute([])?;
        self.open = false;
        Ok(())
    }
}

impl std::ops::Deref for ImmediateTx<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.conn
    }
}

impl Drop for ImmediateTx<'_> {
    fn drop(&mut self) {
        // A failed COMMIT (e.g. busy) leaves the transaction open, as does any error
        // before it.
        if self.open
            && !self.conn.is_autocommit()
            && let Ok(mut rollback) = self.conn.prepare_cached("ROLLBACK")
        {
            let _ = rollback.execute([]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(conn: &Connection) -> i64 {
        conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap()
    }

    #[test]
    fn an_immediate_transaction_commits_or_rolls_back_and_leaves_the_connection_usable() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (x INTEGER PRIMARY KEY)").unwrap();

        let tx = ImmediateTx::begin(&conn).unwrap();
        tx.execute("INSERT INTO t VALUES (1)", []).unwrap();
        tx.commit().unwrap();
        assert_eq!(count(&conn), 1);

        // An error half-way: what the transaction wrote goes with it.
        let failed = (|| -> rusqlite::Result<()> {
            let tx = ImmediateTx::begin(&conn)?;
            tx.execute("INSERT INTO t VALUES (2)", [])?;
            tx.execute("INSERT INTO t VALUES (1)", [])?;
            tx.commit()
        })();
        assert!(failed.is_err());
        assert!(conn.is_autocommit(), "the transaction was left open");
        assert_eq!(count(&conn), 1);

        // The cached statements work again after both.
        let tx = ImmediateTx::begin(&conn).unwrap();
        tx.execute("INSERT INTO t VALUES (3)", []).unwrap();
        tx.commit().unwrap();
        assert_eq!(count(&conn), 2);
    }
}
