//! One delivery attempt of the dispatcher ([`super::worker`]) and what to record after it.

use std::sync::Arc;
use std::time::Duration;

use super::SendError;
use super::bulkhead::Verdict;
use super::in_flight::Slot;
use super::telegram::TelegramSender;
use super::worker::Senders;
use crate::backoff::Jitter;
use crate::delivery::ReactionKind;
use crate::settings::RetryPolicy;
use crate::store::now_ms;
use crate::store::outbox::{Claimed, Recorded, Target};

/// Jitter applied to retry delays: ±20 %.
const JITTER: f64 = 0.2;

/// The delivery id for a log line; a webhook's id holds its URL (credentials may be in its
/// query), so webhooks show the row number instead.
pub(super) fn shown_id(row: &Claimed) -> String {
    match &row.target {
        Ok(Target::Webhook { .. }) => format!("rowid {}", row.rowid),
        _ if ReactionKind::of(&row.reaction) == ReactionKind::Webhook => {
            format!("rowid {}", row.rowid)
        }
        _ => row.id.clone(),
    }
}

/// One finished attempt (or a deferral without attempt), waiting to be recorded.
pub(super) struct Finished {
    pub(super) slot: Slot,
    pub(super) recorded: Recorded,
    /// What the breaker learns from it.
    pub(super) verdict: Verdict,
    /// It held a slot of the bulkheads (false: deferred by an open breaker).
    pub(super) attempted: bool,
}

/// The task of one attempt: [`attempt`] within `deadline`, then what to record and what
/// the target's circuit breaker learns. A delivery that failed for good is logged here.
pub(super) async fn run(
    row: Claimed,
    senders: &Senders,
    telegram: Option<Result<Arc<TelegramSender>, SendError>>,
    webhook_timeout: Duration,
    policy: &RetryPolicy,
    deadline: Duration,
) -> Finished {
    let result =
        match tokio::time::timeout(deadline, attempt(&row, senders, telegram, webhook_timeout))
            .await
        {
            Ok(r) => r,
            Err(_) => {
                Err(SendError::no_answer(format!("the attempt took longer than {deadline:?}")))
            }
        };
    let verdict = match &result {
        Ok(()) | Err(SendError::Permanent { .. }) => Verdict::Answered,
        Err(SendError::Retryable { no_answer: true, .. }) => Verdict::NoAnswer,
        Err(SendError::Retryable { .. }) => Verdict::Answered,
        Err(SendError::NotYet { .. }) => Verdict::NotAttempted,
    };
    let recorded = outcome(result, row.attempts, policy, now_ms());
    if let Recorded::Failed { reason } = &recorded {
        tracing::warn!(delivery = %shown_id(&row), reaction = %row.reaction, reason = %reason, "delivery failed");
    }
    Finished { slot: Slot::of(&row), recorded, verdict, attempted: true }
}

/// One attempt of one claimed row.
pub(super) async fn attempt(
    row: &Claimed,
    senders: &Senders,
    telegram: Option<Result<Arc<TelegramSender>, SendError>>,
    webhook_timeout: Duration,
) -> Result<(), SendError> {
    let target = row.target.as_ref().map_err(|e| SendError::permanent(e.clone()))?;
    match target {
        Target::Push { user_id } => {
            if serde_json::from_str::<serde::de::IgnoredAny>(&row.payload).is_err() {
                return Err(SendError::permanent("the delivery's payload is not JSON"));
            }
            let Some(pusher) = &senders.push else {
                return Err(SendError::retryable("no MQTT connection"));
            };
            pusher.publish(pusher.topic(*user_id), row.payload.as_bytes().to_vec()).await?;
            senders.hub.publish(*user_id, &row.payload);
            Ok(())
        }
        Target::Telegram { bot_token, chat_id, text, photo_url } => {
            let sender = telegram.unwrap_or_else(|| Err(SendError::retryable("no Telegram")))?;
            sender.send(bot_token, chat_id, text, photo_url.as_deref()).await
        }
        Target::Webhook { url, secret } => {
            let payload: serde_json::Value = serde_json::from_str(&row.payload)
                .map_err(|_| SendError::permanent("the delivery's payload is not JSON"))?;
            senders.webhook.send(url, secret.as_ref(), &payload, webhook_timeout).await
        }
    }
}

/// What to record after an attempt: see the module documentation.
pub(super) fn outcome(
    result: Result<(), SendError>,
    attempts_before: u32,
    policy: &RetryPolicy,
    now_ms: i64,
) -> Recorded {
    match result {
        Ok(()) => Recorded::Sent,
        Err(SendError::Permanent { reason }) => Recorded::Failed { reason },
        Err(SendError::NotYet { after, .. }) => {
            Recorded::Deferred { next_attempt_at: now_ms + millis(after) }
        }
        Err(SendError::Retryable { reason, after, .. }) => {
            let attempts = attempts_before.saturating_add(1);
            if policy.exhausted(attempts) {
                return Recorded::Failed {
                    reason: format!("gave up after {attempts} attempts: {reason}"),
                };
            }
            let mut delay = Jitter::Spread(JITTER).apply(policy.delay(attempts));
            if let Some(after) = after {
                delay = delay.max(after);
            }
            Recorded::Retry { reason, next_attempt_at: now_ms + millis(delay) }
        }
    }
}

pub(super) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            backoff_initial: Duration::from_millis(1000),
            backoff_max: Duration::from_secs(60),
        }
    }

    #[test]
    fn ok_is_sent_and_permanent_is_failed() {
        assert_eq!(outcome(Ok(()), 0, &policy(0), 0), Recorded::Sent);
        assert_eq!(
            outcome(Err(SendError::permanent("chat not found")), 0, &policy(0), 0),
            Recorded::Failed { reason: "chat not found".into() }
        );
    }

    #[test]
    fn retries_back_off_with_jitter_and_honour_after() {
        for _ in 0..100 {
            match outcome(Err(SendError::retryable("down")), 2, &policy(0), 0) {
                // Third attempt failed: 1 s * 2^2 = 4 s ± 20 %.
                Recorded::Retry { next_attempt_at, .. } => {
                    assert!((3200..=4800).contains(&next_attempt_at), "{next_attempt_at}")
                }
                other => panic!("{other:?}"),
            }
        }
        let r =
            outcome(Err(SendError::retry_after("429", Duration::from_secs(30))), 0, &policy(0), 5);
        assert_eq!(r, Recorded::Retry { reason: "429".into(), next_attempt_at: 30_005 });
    }

    #[test]
    fn exhausted_retries_fail_with_the_count() {
        assert_eq!(
            outcome(Err(SendError::retryable("down")), 2, &policy(3), 0),
            Recorded::Failed { reason: "gave up after 3 attempts: down".into() }
        );
    }

    #[test]
    fn the_telegram_limiter_defers_without_an_attempt() {
        let e = SendError::not_yet("rate limit", Duration::from_secs(7));
        assert_eq!(outcome(Err(e), 5, &policy(1), 1), Recorded::Deferred { next_attempt_at: 7001 });
    }
}
