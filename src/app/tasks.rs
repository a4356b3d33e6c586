//! Small tasks of `scriptd run`: a connection's state mirrored into the health registry,
//! and the clock of periodic tasks.

use std::time::Duration;

use tokio::sync::watch;

use crate::ops::health::Health;
use crate::ops::systemd::Notifier;

/// Mirrors an MQTT connection's state, with the last connection error (e.g. a failed TLS
/// handshake) as the reason, into the health registry (and, for the events connection,
/// into systemd's `STATUS=`).
pub(super) fn spawn_connection_health(
    mut connected: watch::Receiver<bool>,
    mut down_reason: watch::Receiver<Option<String>>,
    component: &'static str,
    health: &Health,
    notifier: Option<Notifier>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let health = health.clone();
    tokio::spawn(async move {
        tokio::pin!(stop);
        loop {
            let up = *connected.borrow_and_update();
            let why = down_reason.borrow_and_update().clone();
            if up {
                health.set_up(component);
            } else {
                let reason = match why {
                    Some(why) => format!("not connected to the MQTT broker: {why}"),
                    None => "not connected to the MQTT broker".to_owned(),
                };
                health.set_down(component, reason);
            }
            if let Some(n) = &notifier {
                n.status(if up { "running" } else { "mqtt reconnecting" });
            }
            tokio::select! {
                () = &mut stop => return,
                changed = connected.changed() => if changed.is_err() { return },
                changed = down_reason.changed() => if changed.is_err() { return },
            }
        }
    });
}

/// The clock of a periodic task: [`Every::next`] waits for the next tick (a late tick is
/// delayed, not bunched) and is false once `stop` completed.
pub(super) struct Every<S> {
    ticker: tokio::time::Interval,
    stop: std::pin::Pin<Box<S>>,
}

impl<S: std::future::Future<Output = ()>> Every<S> {
    pub(super) fn new(period: Duration, stop: S) -> Every<S> {
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Every { ticker, stop: Box::pin(stop) }
    }

    pub(super) async fn next(&mut self) -> bool {
        tokio::select! {
            () = &mut self.stop => false,
            _ = self.ticker.tick() => true,
        }
    }
}
