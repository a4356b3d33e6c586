//! The live push hub: pushes the dispatcher has delivered, fanned out to the API's
//! server-sent-event streams (`GET /api/v1/reactions/stream`).
//!
//! Best effort by design: the durable path is the MQTT push through the outbox; a client on
//! the stream that falls behind by more than the hub's capacity is told how many pushes it
//! missed (it can re-read them from the API) and the daemon never waits for it.

use std::sync::Arc;

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// One delivered push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushEvent {
    /// The recipient.
    pub user_id: i64,
    /// The CONTRACT §5 push payload, JSON text.
    pub payload: Arc<str>,
}

/// Fan-out of delivered pushes; cheap to clone.
///
/// [`PushHub::close`] ends every open stream (the daemon is stopping): the API's graceful
/// shutdown waits for open responses, and a stream would otherwise never end.
#[derive(Debug, Clone)]
pub struct PushHub {
    tx: broadcast::Sender<Arc<PushEvent>>,
    closed: CancellationToken,
    /// Signalled by every new subscription (see [`PushHub::wanted`]).
    wanted: Arc<tokio::sync::Notify>,
}

impl PushHub {
    /// A hub that keeps up to `capacity` pushes for slow subscribers.
    pub fn new(capacity: usize) -> PushHub {
        let (tx, _) = broadcast::channel(capacity.max(1));
        PushHub { tx, closed: CancellationToken::new(), wanted: Arc::default() }
    }

    /// Hands a delivered push to every current subscriber; never waits.
    pub fn publish(&self, user_id: i64, payload: &str) {
        // No subscribers is not an error.
        let _ = self.tx.send(Arc::new(PushEvent { user_id, payload: Arc::from(payload) }));
    }

    /// A new subscription (sees pushes published from now on).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<PushEvent>> {
        let rx = self.tx.subscribe();
        self.wanted.notify_one();
        rx
    }

    /// Completes after a subscription was made (at once if one was made since the last
    /// call): the broker feed ([`super::push_feed`]) connects then.
    pub async fn wanted(&self) {
        self.wanted.notified().await;
    }

    /// Ends every stream, open or opened later (see [`PushHub::closed`]).
    pub fn close(&self) {
        self.closed.cancel();
    }

    /// Completes once [`PushHub::close`] was called; streams end their response then.
    pub fn closed(&self) -> tokio_util::sync::WaitForCancellationFutureOwned {
        self.closed.clone().cancelled_owned()
    }

    /// True once [`PushHub::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    /// Number of current subscribers.
    pub fn subscribers(&self) -> usize {
        self.tx.receiver_count()
    }
}

impl Default for PushHub {
    fn default() -> Self {
        PushHub::new(1024)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn subscribers_see_pushes_published_after_they_subscribe() {
        let hub = PushHub::new(8);
        hub.publish(1, "{}"); // nobody listens: dropped, no error
        let mut rx = hub.subscribe();
        hub.publish(7, r#"{"reaction":"sound"}"#);
        let e = rx.recv().await.unwrap();
        assert_eq!((e.user_id, &*e.payload), (7, r#"{"reaction":"sound"}"#));
        assert_eq!(hub.subscribers(), 1);
    }

    #[tokio::test]
    async fn close_completes_the_closed_future_of_every_clone() {
        let hub = PushHub::new(8);
        let before = hub.closed();
        let other = hub.clone();
        other.close();
        tokio::time::timeout(std::time::Duration::from_secs(1), before).await.unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(1), hub.closed()).await.unwrap();
    }
}
