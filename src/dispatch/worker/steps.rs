//! The dispatcher loop's database steps: recording a group of outcomes, claiming due rows
//! per channel and starting them, housekeeping, and the drain at shutdown (see the parent
//! module for the loop itself).

use super::*;

impl Loop {
    /// Records finished attempts; frees their slots only after the commit. False when the
    /// database failed (the outcomes stay for the next try).
    /// While the commit is on its way, handed-over rows start in free slots.
    pub(super) async fn commit(&mut self) -> bool {
        match self.outcomes().await {
            Ok((db, outcomes)) => {
                let done = self.meanwhile(db.record(outcomes), false).await;
                self.recorded(done)
            }
            Err(done) => done,
        }
    }

    /// The queued outcomes and the handle to record them with; `Err(true)` when there are
    /// none, `Err(false)` when the database cannot be used.
    pub(super) async fn outcomes(&mut self) -> Result<(Handle, Vec<(RowRef, Recorded)>), bool> {
        if self.group.is_empty() {
            return Err(true);
        }
        let Some(db) = self.db().await else { return Err(false) };
        let epoch = self.link.epoch();
        let outcomes: Vec<(RowRef, Recorded)> = self
            .group
            .iter()
            .map(|f| {
                let row = if f.slot.epoch == epoch {
                    RowRef::Rowid(f.slot.rowid)
                } else {
                    RowRef::Id(f.slot.id.clone())
                };
                (row, f.recorded.clone())
            })
            .collect();
        Ok((db, outcomes))
    }

    /// After the queued outcomes were recorded (or not): frees their slots and counts them;
    /// false when the database failed (they stay for the next try).
    pub(super) fn recorded(&mut self, done: Result<(), StoreError>) -> bool {
        match done {
            Ok(()) => {
                self.db_ok();
                for f in self.group.take() {
                    self.in_flight.remove(&f.slot);
                    if f.attempted {
                        self.bulk.release(f.slot.channel, f.slot.target.as_ref());
                    }
                    if matches!(f.recorded, Recorded::Retry { .. } | Recorded::Deferred { .. }) {
                        // Its next attempt is only in the database.
                        self.backlog[f.slot.channel.index()] = true;
                    }
                    let (outcome, counter) = match f.recorded {
                        Recorded::Sent => (telemetry::OUTCOME_DELIVERED, &self.stats.sent),
                        Recorded::Failed { .. } => (telemetry::OUTCOME_FAILED, &self.stats.failed),
                        Recorded::Retry { .. } => (telemetry::OUTCOME_RETRY, &self.stats.retried),
                        Recorded::Deferred { .. } => continue,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!(telemetry::DELIVERIES,
                        telemetry::LABEL_REACTION => f.slot.reaction,
                        telemetry::LABEL_OUTCOME => outcome)
                    .increment(1);
                }
                self.publish_in_flight();
                true
            }
            Err(e) => {
                self.db_failed("record outcomes", &e);
                false
            }
        }
    }

    /// Claims due rows of every channel with a free slot and spawns their attempts (see
    /// [`super::bulkhead`]). Returns when to look again (`None`: the database failed).
    pub(super) async fn claim(&mut self) -> Option<Instant> {
        let far = Instant::now() + Duration::from_secs(3600);
        // Leased rows (PostgreSQL) are claimed only for the free slots: rows in flight are
        // not due while leased, and a row claimed beyond them would wait for its lease.
        let leases = self.link.leases();
        let asks: Vec<(Channel, usize)> = Channel::ALL
            .into_iter()
            .filter(|c| self.backlog[c.index()] && self.bulk.free(*c) > 0)
            .map(|c| match leases {
                false => (c, self.bulk.free(c) + self.bulk.in_flight(c) + scan_extra(c)),
                true => (c, self.bulk.free(c)),
            })
            .collect();
        if asks.is_empty() {
            return Some(far); // an attempt finishing wakes the loop
        }
        let db = self.db().await?;
        let now = now_ms();
        let expire_after = self.live.load().expire_after;
        // A lane's head in flight is not rewritten under its attempt.
        let busy = self.in_flight.busy_lanes();
        let handoff = self.handoff.clone();
        let lease = self.config.lease;
        let found = self
            .meanwhile(db.claim(&handoff, asks.clone(), now, expire_after, busy, lease), true)
            .await;
        let found = match found {
            Ok((expired, coalesced, found)) => {
                telemetry::count_expired(&expired);
                metrics::counter!(telemetry::DELIVERIES_COALESCED).increment(coalesced as u64);
                found
            }
            Err(e) => {
                self.db_failed("claim", &e);
                return None;
            }
        };
        // Handed-over rows of the channels asked were dropped: the query has them.
        let mut deferred = false;
        let at = Instant::now();
        for ((channel, limit), rows) in asks.into_iter().zip(found) {
            let full = rows.len() >= limit;
            let mut waiting = false;
            for row in rows {
                if self.in_flight.blocks(&row) {
                    continue;
                }
                let target = TargetKey::of(&row);
                match self.bulk.admit(channel, target.as_ref(), at) {
                    Admit::Start => self.start(row),
                    Admit::Wait if leases => {
                        self.defer(row, GIVE_BACK);
                        deferred = true;
                    }
                    Admit::Wait => waiting = true,
                    Admit::Defer(wait) => {
                        self.defer(row, wait);
                        deferred = true;
                    }
                }
            }
            // Caught up: rows committed from now on are handed over.
            self.backlog[channel.index()] = full || waiting;
        }
        self.publish_in_flight();
        if deferred {
            // Record the deferrals (with the group), then look again.
            return Some(self.record_at().unwrap_or_else(Instant::now));
        }
        if !self.backlog.iter().any(|b| *b) {
            self.last_query = Instant::now();
        }
        // Sleep until the next retry is due (or an attempt finishes).
        let next = match self.meanwhile(db.next_due_after(now), true).await {
            Ok(next) => next,
            Err(e) => {
                self.db_failed("next due", &e);
                return None;
            }
        };
        self.db_ok();
        Some(next.map_or(far, |at| {
            let wait = u64::try_from(at.saturating_sub(now_ms())).unwrap_or(0);
            Instant::now() + Duration::from_millis(wait)
        }))
    }

    /// A row of a target whose breaker is open: its next attempt moves `wait` ahead
    /// without an attempt (recorded with the next outcomes).
    pub(super) fn defer(&mut self, row: Claimed, wait: Duration) {
        self.in_flight.insert(&row);
        self.finish(Finished {
            slot: Slot::of(&row),
            recorded: Recorded::Deferred { next_attempt_at: now_ms() + millis(wait) },
            verdict: Verdict::NotAttempted,
            attempted: false,
        });
    }

    pub(super) fn telegram(&mut self) -> Result<Arc<TelegramSender>, SendError> {
        self.telegram.get(&self.live.load().telegram)
    }

    pub(super) fn start(&mut self, row: Claimed) {
        if !self.held.is_empty() {
            self.held.remove(&row.rowid);
        }
        let task_row = Slot::of(&row);
        self.bulk.start(task_row.channel, task_row.target.as_ref());
        self.in_flight.insert(&row);
        let telegram = match &row.target {
            Ok(Target::Telegram { .. }) => Some(self.telegram()),
            _ => None,
        };
        let senders = self.senders.clone();
        let (policy, webhook_timeout) = {
            let live = self.live.load();
            (live.retry, live.webhook.timeout())
        };
        let handle = self.tasks.spawn(async move {
            run(row, &senders, telegram, webhook_timeout, &policy, ATTEMPT_DEADLINE).await
        });
        self.task_rows.insert(handle.id(), task_row);
    }

    pub(super) async fn housekeeping(&mut self) {
        let Some(db) = self.link.current() else { return };
        let retention = self.live.load().retention;
        let (mut upkeep, stats) = (self.upkeep, self.stats.clone());
        let done = self.meanwhile(upkeep.run(&db, &stats, retention), true).await;
        self.upkeep = upkeep;
        if let Err((what, e)) = done {
            self.db_failed(what, &e);
        }
    }

    /// After shutdown: let attempts finish within the deadline, record them, abandon the
    /// rest (their rows stay pending).
    pub(super) async fn drain(&mut self) {
        let deadline = Instant::now() + self.config.shutdown_deadline;
        if self.link.leases() {
            // Handed-over rows not started are leased to this instance: given back, due now,
            // rather than left to their lease's end.
            for row in self.handoff.close() {
                self.defer(row, Duration::ZERO);
            }
            self.held.clear();
        }
        while !self.tasks.is_empty() {
            self.beat();
            match tokio::time::timeout_at(deadline, self.tasks.join_next_with_id()).await {
                Ok(Some(joined)) => self.take(joined),
                Ok(None) => break,
                Err(_) => {
                    tracing::warn!(
                        abandoned = self.tasks.len(),
                        "shutdown deadline passed; unfinished deliveries stay pending"
                    );
                    self.tasks.abort_all();
                    // Attempts that finished meanwhile are still recorded below.
                    while let Some(joined) = self.tasks.join_next_with_id().await {
                        self.take(joined);
                    }
                    break;
                }
            }
        }
        // Record what finished; a busy database gets a few tries within the deadline.
        loop {
            if self.commit().await || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(self.trouble_pause().min(Duration::from_millis(500))).await;
        }
        if !self.group.is_empty() {
            tracing::warn!(
                unrecorded = self.group.len(),
                "could not record some outcomes before the deadline; they stay pending"
            );
        }
    }
}
