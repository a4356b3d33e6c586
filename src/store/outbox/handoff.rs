//! Rows handed from the writer to the dispatcher in memory; see *Hand-over in memory* in
//! [`super`].

use super::*;

/// Most rows waiting in a [`Handoff`]; beyond it rows are only in the database.
pub const HANDOFF_MAX: usize = 4096;

/// Freshly committed rows handed from the writers to the dispatcher in memory: one per
/// daemon, given to its outbox writer and its dispatcher. See the module documentation.
#[derive(Debug, Default)]
pub struct Handoff {
    pub(super) queue: Mutex<Fresh>,
}

/// The rows of a [`Handoff`], and whether rows were committed that were not handed over
/// (it was full, or they have a lane).
#[derive(Debug, Default)]
pub struct Fresh {
    pub(super) rows: VecDeque<Claimed>,
    pub(super) db_only: bool,
    /// Rows with a lane were committed (Telegram: only a query keeps their order).
    pub(super) laned: bool,
    /// The dispatcher stopped taking rows: no more rows are leased to be handed over
    /// (PostgreSQL).
    pub(super) closed: bool,
}

impl Fresh {
    pub(super) fn push(&mut self, rows: impl Iterator<Item = Claimed>) {
        for row in rows {
            if self.rows.len() >= HANDOFF_MAX {
                self.db_only = true;
                return;
            }
            self.rows.push_back(row);
        }
    }
}

impl Handoff {
    pub(super) fn lock(&self) -> MutexGuard<'_, Fresh> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Up to `max` handed-over rows, oldest first.
    pub fn take(&self, max: usize) -> Vec<Claimed> {
        let mut q = self.lock();
        let n = max.min(q.rows.len());
        q.rows.drain(..n).collect()
    }

    /// Whether rows are waiting.
    pub fn is_empty(&self) -> bool {
        self.lock().rows.is_empty()
    }

    /// Whether rows were committed that were not handed over (only a query finds them).
    pub fn db_only(&self) -> bool {
        let q = self.lock();
        q.db_only || q.laned
    }

    /// Per [`Channel`] (by index): whether rows of it were committed that were not handed
    /// over. Rows with a lane are Telegram's; a full hand-over concerns every channel.
    pub fn db_only_channels(&self) -> [bool; 3] {
        let q = self.lock();
        let mut out = [q.db_only; 3];
        out[Channel::Telegram.index()] |= q.laned;
        out
    }

    /// [`Self::query`] for a query that reads only the rows of `channels`: the handed-over
    /// rows of the other channels stay for [`Self::take`].
    pub fn query_channels<T>(
        &self,
        channels: &[Channel],
        query: impl FnOnce() -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut q = self.lock();
        let out = query()?;
        if Channel::ALL.iter().all(|c| channels.contains(c)) {
            q.rows.clear();
            q.db_only = false;
        } else {
            q.rows.retain(|r| !channels.contains(&Channel::of(&r.target)));
        }
        if channels.contains(&Channel::Telegram) {
            q.laned = false;
        }
        Ok(out)
    }

    /// On PostgreSQL, before a batch of `n` rows is written: whether they may be written
    /// leased to this instance and handed over ([`Self::hand_over_leased`]): the
    /// dispatcher still takes rows and the hand-over has room for them. When not, they are
    /// written due and found by the dispatcher's claim.
    pub fn room_for_leased(&self, n: usize) -> bool {
        let q = self.lock();
        !q.closed && q.rows.len() + n <= HANDOFF_MAX
    }

    /// On PostgreSQL, after the commit: hands over rows the writer leased to this instance
    /// (no claim finds them before their lease ends, so they need no lock against one),
    /// and notes whether rows were committed that only a claim finds (`db_only`: written
    /// due, `laned`: with a lane).
    pub fn hand_over_leased(&self, rows: Vec<Claimed>, db_only: bool, laned: bool) {
        let mut q = self.lock();
        q.rows.extend(rows);
        q.db_only |= db_only;
        q.laned |= laned;
    }

    /// Puts rows taken and not started back in front, oldest first.
    pub fn put_back(&self, rows: Vec<Claimed>) {
        let mut q = self.lock();
        for row in rows.into_iter().rev() {
            q.rows.push_front(row);
        }
    }

    /// On PostgreSQL, right before a claim of `channels`: rows committed until now that
    /// were not handed over are the claim's to find (see [`Self::db_only`]). The
    /// handed-over rows stay: they are leased, no claim returns them.
    pub fn claiming(&self, channels: &[Channel]) {
        let mut q = self.lock();
        if Channel::ALL.iter().all(|c| channels.contains(c)) {
            q.db_only = false;
        }
        if channels.contains(&Channel::Telegram) {
            q.laned = false;
        }
    }

    /// The dispatcher stops: no more rows are leased for it ([`Self::room_for_leased`]);
    /// returns the rows waiting, to be given back.
    pub fn close(&self) -> Vec<Claimed> {
        let mut q = self.lock();
        q.closed = true;
        q.rows.drain(..).collect()
    }

    /// Runs `query` (a read of the outbox) with writers held back, then forgets what was
    /// handed over: every row committed before the query is the query's to find.
    pub fn query<T>(&self, query: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut q = self.lock();
        let out = query()?;
        q.rows.clear();
        q.db_only = false;
        q.laned = false;
        Ok(out)
    }
}
