//! Metrics: the Prometheus recorder, the name of every metric, and their descriptions.
//!
//! Components record through the `metrics` macros with the constants below, e.g.
//!
//! ```
//! use scriptd::ops::telemetry;
//! metrics::counter!(telemetry::OCCURRENCES_REJECTED, telemetry::LABEL_REASON => "unknown_event")
//!     .increment(1);
//! metrics::histogram!(telemetry::MATCH_DURATION).record(0.000_042);
//! ```
//!
//! [`install`] sets the global recorder once and returns the [`PrometheusHandle`] that
//! `GET /metrics` renders ([`crate::ops::health::routes`]). Without an installed recorder the
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
/// Counter, label [`LABEL_REASON`]: occurrences dropped as invalid, by
/// [`crate::intake::occurrence::Reason`] code (`not_json`, `missing_camera_id`, `unknown_event`, ...).
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
/// Reason of [`OCCURRENCES_SUPPRESSED`]: within the script's `extra.cooldown_seconds`.
pub const REASON_COOLDOWN: &str = "cooldown";
/// Reason of [`OCCURRENCES_SUPPRESSED`]: a snooze silenced at least one of the script's
/// deliveries for the occurrence (counted once per occurrence and script).
pub const REASON_SNOOZE: &str = "snooze";
/// Gauge: deliveries in the outbox not yet delivered or failed.
pub const OUTBOX_DEPTH: &str = "scriptd_outbox_depth";
/// Gauge: age of the oldest pending delivery, in seconds (0 when none).
pub const OUTBOX_OLDEST_PENDING: &str = "scriptd_outbox_oldest_pending_seconds";
/// Histogram: time to match one occurrence against the script index, in seconds.
pub const MATCH_DURATION: &str = "scriptd_match_duration_seconds";
/// Gauge, label [`LABEL_CONNECTION`]: 1 while that connection to the MQTT broker is up,
/// 0 otherwise. There is no unlabelled series, so `scriptd_mqtt_connected == 0` alerts only
/// on a real connection.
pub const MQTT_CONNECTED: &str = "scriptd_mqtt_connected";
/// Counter, label [`LABEL_CONNECTION`]: successful reconnections (every connection after the
/// first one of the process); failed attempts are not counted.
pub const MQTT_RECONNECTS: &str = "scriptd_mqtt_reconnects_total";
/// Label of the MQTT metrics: which connection, one of [`MQTT_CONNECTIONS`].
pub const LABEL_CONNECTION: &str = "connection";
/// The daemon's MQTT connections: `events` (the source) and `push` (the push sender).
pub const MQTT_CONNECTIONS: [&str; 2] = ["events", "push"];
/// Gauge: scripts in the index.
pub const SCRIPTS_LOADED: &str = "scriptd_scripts_loaded";
/// Gauge: scripts in the database skipped as invalid.
pub const SCRIPTS_INVALID: &str = "scriptd_scripts_invalid";
/// Histogram: time to rebuild the script index, in seconds.
pub const INDEX_REBUILD: &str = "scriptd_index_rebuild_seconds";
/// Gauge, label `version`: always 1; tells which build is running.
pub const BUILD_INFO: &str = "scriptd_build_info";
/// Gauge, label [`LABEL_CHANNEL`]: delivery attempts in flight in the channel.
pub const DELIVERIES_IN_FLIGHT: &str = "scriptd_deliveries_in_flight";
/// Gauge, label [`LABEL_CHANNEL`]: targets of the channel backed off by their circuit
/// breaker.
pub const BREAKERS_OPEN: &str = "scriptd_breakers_open";
/// Counter, label [`LABEL_CHANNEL`]: circuit breakers opened.
pub const BREAKER_OPENED: &str = "scriptd_breaker_opened_total";
/// Label of [`DELIVERIES_IN_FLIGHT`], [`BREAKERS_OPEN`], [`BREAKER_OPENED`] and
/// [`DELIVERIES_EXPIRED`]: `push`, `telegram` or `webhook`.
pub const LABEL_CHANNEL: &str = "channel";
/// Gauge: components (MQTT loop, dispatchers) that made no progress within their limit;
/// while it is above 0 the systemd watchdog gets no pings.
pub const WATCHDOG_STALLED: &str = "scriptd_watchdog_stalled_components";
/// Counter: times the watchdog started withholding pings (a stall began).
pub const WATCHDOG_STALLS: &str = "scriptd_watchdog_stalls_total";
/// Gauge: HTTP API connections open (reaction streams included).
pub const API_CONNECTIONS_OPEN: &str = "scriptd_api_connections_open";
/// Counter: API connections closed at once because `api.max_connections` were open and
/// every one was busy.
pub const API_CONNECTIONS_REFUSED: &str = "scriptd_api_connections_refused_total";
/// Counter: idle API connections closed to make room for a new one (at the cap, or when
/// the process ran out of descriptors).
pub const API_CONNECTIONS_EVICTED: &str = "scriptd_api_connections_evicted_total";
/// Counter: failed `accept` calls on the API listener (e.g. `EMFILE`).
pub const API_ACCEPT_ERRORS: &str = "scriptd_api_accept_errors_total";
/// Gauge: reaction streams open.
pub const API_STREAMS_OPEN: &str = "scriptd_api_streams_open";
/// Counter: reaction streams refused with 429 (`api.max_streams` or
/// `api.max_streams_per_token` reached).
pub const API_STREAMS_REFUSED: &str = "scriptd_api_streams_refused_total";
/// Gauge: instances sharing the database whose heartbeat is younger than 10 s (PostgreSQL
/// only; this one included).
pub const INSTANCES_LIVE: &str = "scriptd_instances_live";

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
/// the unlabelled series, and both connections' MQTT series, exist (at zero). [`install`] calls it; tests with a local recorder
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
        "Script firings suppressed, by reason (cooldown, snooze)."
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
    describe_gauge!(
        MQTT_CONNECTED,
        "1 while the connection (events, push) to the MQTT broker is up, else 0."
    );
    describe_counter!(
        MQTT_RECONNECTS,
        Unit::Count,
        "Successful MQTT reconnections (connections after the first), by connection."
    );
    describe_gauge!(SCRIPTS_LOADED, Unit::Count, "Scripts in the matching index.");
    describe_gauge!(SCRIPTS_INVALID, Unit::Count, "Scripts skipped as invalid.");
    describe_gauge!(
        INSTANCES_LIVE,
        Unit::Count,
        "Instances sharing the PostgreSQL database with a heartbeat in the last 10 s."
    );
    describe_histogram!(INDEX_REBUILD, Unit::Seconds, "Time to rebuild the script index.");
    describe_gauge!(BUILD_INFO, "Always 1; the label tells the running version.");
    describe_gauge!(DELIVERIES_IN_FLIGHT, Unit::Count, "Delivery attempts in flight by channel.");
    describe_gauge!(
        BREAKERS_OPEN,
        Unit::Count,
        "Delivery targets backed off by their circuit breaker, by channel."
    );
    describe_counter!(BREAKER_OPENED, Unit::Count, "Circuit breakers opened, by channel.");
    for channel in ["push", "telegram", "webhook"] {
        metrics::gauge!(DELIVERIES_IN_FLIGHT, LABEL_CHANNEL => channel).set(0.0);
        metrics::gauge!(BREAKERS_OPEN, LABEL_CHANNEL => channel).set(0.0);
        metrics::counter!(BREAKER_OPENED, LABEL_CHANNEL => channel).increment(0);
    }
    describe_gauge!(
        WATCHDOG_STALLED,
        Unit::Count,
        "Components without progress; while above 0 the systemd watchdog gets no pings."
    );
    describe_counter!(
        WATCHDOG_STALLS,
        Unit::Count,
        "Stalls that made the watchdog withhold pings."
    );

    for name in [OCCURRENCES_RECEIVED, OCCURRENCES_MATCHED, OCCURRENCES_STALE, WATCHDOG_STALLS] {
        metrics::counter!(name).increment(0);
    }
    for name in
        [OUTBOX_DEPTH, OUTBOX_OLDEST_PENDING, SCRIPTS_LOADED, SCRIPTS_INVALID, WATCHDOG_STALLED]
    {
        metrics::gauge!(name).set(0.0);
    }
    for connection in MQTT_CONNECTIONS {
        metrics::counter!(MQTT_RECONNECTS, LABEL_CONNECTION => connection).increment(0);
        metrics::gauge!(MQTT_CONNECTED, LABEL_CONNECTION => connection).set(0.0);
    }
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    for channel in ["push", "telegram", "webhook"] {
        metrics::counter!(DELIVERIES_EXPIRED, LABEL_CHANNEL => channel).increment(0);
    }
    metrics::counter!(OCCURRENCES_SUPPRESSED, LABEL_REASON => REASON_COOLDOWN).increment(0);
    metrics::counter!(OCCURRENCES_SUPPRESSED, LABEL_REASON => REASON_SNOOZE).increment(0);
    metrics::counter!(DELIVERIES_COALESCED).increment(0);
    describe_api();
}

/// The HTTP API's connection and stream metrics, at zero.
fn describe_api() {
    describe_gauge!(API_CONNECTIONS_OPEN, Unit::Count, "HTTP API connections open.");
    describe_counter!(
        API_CONNECTIONS_REFUSED,
        Unit::Count,
        "API connections closed at once: api.max_connections open, all busy."
    );
    describe_counter!(
        API_CONNECTIONS_EVICTED,
        Unit::Count,
        "Idle API connections closed to make room for new ones."
    );
    describe_counter!(API_ACCEPT_ERRORS, Unit::Count, "Failed accepts on the API listener.");
    describe_gauge!(API_STREAMS_OPEN, Unit::Count, "Reaction streams open.");
    describe_counter!(
        API_STREAMS_REFUSED,
        Unit::Count,
        "Reaction streams refused with 429 (api.max_streams, api.max_streams_per_token)."
    );
    for name in
        [API_CONNECTIONS_REFUSED, API_CONNECTIONS_EVICTED, API_ACCEPT_ERRORS, API_STREAMS_REFUSED]
    {
        metrics::counter!(name).increment(0);
    }
    for name in [API_CONNECTIONS_OPEN, API_STREAMS_OPEN] {
        metrics::gauge!(name).set(0.0);
    }
}

/// Counts deliveries expired per channel, as returned by [`crate::store::outbox::expire`].
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
