//! Metrics: the Prometheus recorder, the name of every metric, and their descriptions.
//!
//! Components record through the `metrics` macros with the constants below, e.g.
//!
//! ```
//! use scriptd::telemetry;
//! metrics::counter!(telemetry::OCCURRENCES_REJECTED, telemetry::LABEL_REASON => "unknown_event")
//!     .increment(1);
//! metrics::histogram!(telemetry::MATCH_DURATION).record(0.000_042);
//! ```
//!
//! [`install`] sets the global recorder once and returns the [`PrometheusHandle`] that
//! `GET /metrics` renders ([`crate::health::routes`]). Without an installed recorder the
//! macros are no-ops, so library code and tests need no set-up.

use std::future::Future;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

/// Counter: occurrences received over MQTT (valid or not).
pub const OCCURRENCES_RECEIVED: &str = "scriptd_occurrences_received_total";
/// Counter: occurrences that matched at least one active script.
pub const OCCURRENCES_MATCHED: &str = "scriptd_occurrences_matched_total";
/// Counter, label [`LABEL_REASON`]: occurrences dropped as invalid (`invalid_json`,
/// `missing_field`, `unknown_event`, ...).
pub const OCCURRENCES_REJECTED: &str = "scriptd_occurrences_rejected_total";
/// Counter: occurrences dropped because they were older than `events.max_age_seconds`.
pub const OCCURRENCES_STALE: &str = "scriptd_occurrences_stale_total";
/// Counter, labels [`LABEL_REACTION`] and [`LABEL_OUTCOME`]: delivery attempts.
pub const DELIVERIES: &str = "scriptd_deliveries_total";
/// Counter: deliveries that ended `expired` (not done within
/// `delivery.expire_after_seconds`), by [`LABEL_CHANNEL`].
pub const DELIVERIES_EXPIRED: &str = "scriptd_deliveries_expired_total";
/// Counter: Telegram deliveries that ended `coalesced` (replaced by a summary).
pub const DELIVERIES_COALESCED: &str = "scriptd_deliveries_coalesced_total";
/// Counter: occurrences of a script on a camera that produced no delivery, by
/// [`LABEL_REASON`] (`cooldown`).
pub const OCCURRENCES_SUPPRESSED: &str = "scriptd_occurrences_suppressed_total";
/// Label of [`DELIVERIES_EXPIRED`]: `push`, `telegram` or `webhook`.
pub const LABEL_CHANNEL: &str = "channel";
/// Reason of [`OCCURRENCES_SUPPRESSED`]: within the script's `extra.cooldown_seconds`.
pub const REASON_COOLDOWN: &str = "cooldown";
/// Gauge: deliveries in the outbox not yet delivered or failed.
pub const OUTBOX_DEPTH: &str = "scriptd_outbox_depth";
/// Gauge: age of the oldest pending delivery, in seconds (0 when none).
pub const OUTBOX_OLDEST_PENDING: &str = "scriptd_outbox_oldest_pending_seconds";
/// Histogram: time to match one occurrence against the script index, in seconds.
pub const MATCH_DURATION: &str = "scriptd_match_duration_seconds";
/// Gauge: 1 while connected to the MQTT broker, 0 otherwise.
pub const MQTT_CONNECTED: &str = "scriptd_mqtt_connected";
/// Counter: MQTT reconnect attempts.
pub const MQTT_RECONNECTS: &str = "scriptd_mqtt_reconnects_total";
/// Gauge: scripts in the index.
pub const SCRIPTS_LOADED: &str = "scriptd_scripts_loaded";
/// Gauge: scripts in the database skipped as invalid.
pub const SCRIPTS_INVALID: &str = "scriptd_scripts_invalid";
/// Histogram: time to rebuild the script index, in seconds.
pub const INDEX_REBUILD: &str = "scriptd_index_rebuild_seconds";
/// Gauge, label `version`: always 1; tells which build is running.
pub const BUILD_INFO: &str = "scriptd_build_info";

/// Label of [`OCCURRENCES_REJECTED`]: why the payload was dropped.
pub const LABEL_REASON: &str = "reason";
/// Label of [`DELIVERIES`]: the reaction's catalog name, e.g. `telegram-message`.
pub const LABEL_REACTION: &str = "reaction";
/// Label of [`DELIVERIES`]: one of [`OUTCOME_DELIVERED`], [`OUTCOME_RETRY`], [`OUTCOME_FAILED`].
pub const LABEL_OUTCOME: &str = "outcome";
/// [`LABEL_OUTCOME`]: delivered.
pub const OUTCOME_DELIVERED: &str = "delivered";
/// [`LABEL_OUTCOME`]: transient failure, will be retried.
pub const OUTCOME_RETRY: &str = "retry";
/// [`LABEL_OUTCOME`]: permanent failure (or attempts exhausted), marked failed.
pub const OUTCOME_FAILED: &str = "failed";

/// Buckets of [`MATCH_DURATION`]: 1 µs to 100 ms (the index answers in microseconds).
pub const MATCH_BUCKETS: &[f64] = &[
    0.000_001,
    0.000_002_5,
    0.000_005,
    0.000_01,
    0.000_025,
    0.000_05,
    0.000_1,
    0.000_25,
    0.000_5,
    0.001,
    0.002_5,
    0.005,
    0.01,
    0.025,
    0.1,
];
/// Buckets of [`INDEX_REBUILD`]: 1 ms to 30 s.
pub const REBUILD_BUCKETS: &[f64] =
    &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Why the recorder could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The exporter rejected its configuration, or another global recorder is installed.
    #[error("cannot set up the metrics recorder: {0}")]
    Build(#[from] BuildError),
}

/// A Prometheus builder with this crate's histogram buckets (no HTTP listener of its own:
/// `/metrics` is served by the API).
pub fn builder() -> Result<PrometheusBuilder, TelemetryError> {
    Ok(PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(MATCH_DURATION.into()), MATCH_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(INDEX_REBUILD.into()), REBUILD_BUCKETS)?)
}

static INSTALLED: Mutex<Option<PrometheusHandle>> = Mutex::new(None);

/// Installs the global recorder, describes every metric and sets the unlabelled ones to
/// zero so they appear from the first scrape. Idempotent: later calls return the same
/// handle.
pub fn install() -> Result<PrometheusHandle, TelemetryError> {
    let mut slot = INSTALLED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(handle) = slot.as_ref() {
        return Ok(handle.clone());
    }
    let handle = builder()?.install_recorder()?;
    describe();
    *slot = Some(handle.clone());
    Ok(handle)
}

/// Registers the HELP text and unit of every metric with the current recorder and makes
/// the unlabelled series exist (at zero). [`install`] calls it; tests with a local recorder
/// call it inside `metrics::with_local_recorder`.
pub fn describe() {
    describe_counter!(OCCURRENCES_RECEIVED, Unit::Count, "Occurrences received over MQTT.");
    describe_counter!(
        OCCURRENCES_MATCHED,
        Unit::Count,
        "Occurrences that matched at least one active script."
    );
    describe_counter!(
        OCCURRENCES_REJECTED,
        Unit::Count,
        "Occurrences dropped as invalid, by reason."
    );
    describe_counter!(
        OCCURRENCES_STALE,
        Unit::Count,
        "Occurrences dropped as older than events.max_age_seconds."
    );
    describe_counter!(DELIVERIES, Unit::Count, "Delivery attempts by reaction and outcome.");
    describe_counter!(
        DELIVERIES_EXPIRED,
        Unit::Count,
        "Deliveries expired unsent (delivery.expire_after_seconds), by channel."
    );
    describe_counter!(
        DELIVERIES_COALESCED,
        Unit::Count,
        "Telegram deliveries replaced by a summary message."
    );
    describe_counter!(
        OCCURRENCES_SUPPRESSED,
        Unit::Count,
        "Script firings suppressed, by reason (cooldown)."
    );
    describe_gauge!(OUTBOX_DEPTH, Unit::Count, "Deliveries pending in the outbox.");
    describe_gauge!(
        OUTBOX_OLDEST_PENDING,
        Unit::Seconds,
        "Age of the oldest pending delivery (0 when none)."
    );
    describe_histogram!(
        MATCH_DURATION,
        Unit::Seconds,
        "Time to match one occurrence against the script index."
    );
    describe_gauge!(MQTT_CONNECTED, "1 while connected to the MQTT broker, else 0.");
    describe_counter!(MQTT_RECONNECTS, Unit::Count, "MQTT reconnect attempts.");
    describe_gauge!(SCRIPTS_LOADED, Unit::Count, "Scripts in the matching index.");
    describe_gauge!(SCRIPTS_INVALID, Unit::Count, "Scripts skipped as invalid.");
    describe_histogram!(INDEX_REBUILD, Unit::Seconds, "Time to rebuild the script index.");
    describe_gauge!(BUILD_INFO, "Always 1; the label tells the running version.");

    for name in [OCCURRENCES_RECEIVED, OCCURRENCES_MATCHED, OCCURRENCES_STALE, MQTT_RECONNECTS] {
        metrics::counter!(name).increment(0);
    }
    for name in
        [OUTBOX_DEPTH, OUTBOX_OLDEST_PENDING, MQTT_CONNECTED, SCRIPTS_LOADED, SCRIPTS_INVALID]
    {
        metrics::gauge!(name).set(0.0);
    }
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    for channel in ["push", "telegram", "webhook"] {
        metrics::counter!(DELIVERIES_EXPIRED, LABEL_CHANNEL => channel).increment(0);
    }
    metrics::counter!(OCCURRENCES_SUPPRESSED, LABEL_REASON => REASON_COOLDOWN).increment(0);
    metrics::counter!(DELIVERIES_COALESCED).increment(0);
}

/// Counts deliveries expired per channel, as returned by [`crate::outbox::expire`].
pub fn count_expired(expired: &[(&'static str, usize)]) {
    for &(channel, n) in expired {
        metrics::counter!(DELIVERIES_EXPIRED, LABEL_CHANNEL => channel).increment(n as u64);
    }
}

/// Runs the recorder's upkeep (drains histogram buffers) every `period` until `shutdown`.
/// Without a listener of its own the exporter relies on the caller for this; scrapes also
/// drain, so this only bounds memory between scrapes.
pub async fn run_upkeep(
    handle: PrometheusHandle,
    period: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let mut ticker = tokio::time::interval(period.max(Duration::from_millis(10)));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = ticker.tick() => handle.run_upkeep(),
        }
    }
}
