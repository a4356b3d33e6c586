//! The intake's task: batches from the source, one write each, then the acknowledgements.

use super::*;

/// How often an idle intake shows it is alive (the watchdog allows 30 s of silence).
const IDLE_BEAT: Duration = Duration::from_secs(10);

/// Runs the intake until the channel closes: batches, writes, then acknowledges. A database
/// error (e.g. busy past the timeout) leaves the batch unacknowledged and retries it, so
/// nothing is lost and the broker keeps the rest. `on_commit` runs after every commit that
/// added deliveries (the dispatcher's wake-up); `beat` after every loop, also when idle
/// (every [`IDLE_BEAT`]). When `replaced` is notified (the database file was replaced), an
/// idle intake lets its connections to the old file go at once instead of at its next batch.
pub async fn run(
    mut intake: Intake,
    mut rx: mpsc::Receiver<Incoming>,
    on_commit: impl Fn(),
    beat: impl Fn(),
    replaced: Arc<tokio::sync::Notify>,
) {
    let mut batch: Vec<Incoming> = Vec::with_capacity(BATCH_MAX);
    let mut tick = tokio::time::interval(IDLE_BEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            got = rx.recv() => match got {
                Some(first) => batch.push(first),
                None => return,
            },
            () = replaced.notified() => {
                intake.release_replaced_file();
                continue;
            }
            _ = tick.tick() => {
                // Idle: a replaced database file must not wait for traffic to be let go
                // (also when nobody said so).
                intake.release_replaced_file();
                beat();
                continue;
            }
        }
        while batch.len() < BATCH_MAX {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        let mut retry = Backoff::new(Duration::from_millis(50), Duration::from_secs(5))
            .with_jitter(Jitter::None);
        loop {
            let items: Vec<(&str, &[u8])> =
                batch.iter().map(|m| (m.topic.as_str(), &m.payload[..])).collect();
            match intake.write_batch(&items, Utc::now()).await {
                Ok((_, inserted)) => {
                    if inserted > 0 {
                        on_commit();
                    }
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, messages = batch.len(), "cannot write the outbox; retrying the batch");
                    beat();
                    tokio::time::sleep(retry.next_delay()).await;
                }
            }
        }
        for m in batch.drain(..) {
            // A failed ack means the connection dropped: the broker redelivers, and the
            // outbox already has these deliveries.
            let _ = m.ack.ack().await;
        }
        beat();
    }
}
