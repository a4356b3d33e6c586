//! The file-descriptor budget: what the `[api]` caps need next to the rest of the daemon,
//! against the process's `RLIMIT_NOFILE`.
//!
//! ```text
//! needed = 3 × api.max_connections    one socket per connection, and a SQLite connection
//!                                      (database file and WAL) per request in progress
//!        + delivery.max_in_flight      webhook and Telegram sockets
//!        + RESERVE                     listener, MQTT links, embedded broker, the intake's
//!                                      and dispatchers' store connections, logs, runtime
//! ```
//!
//! Reaction streams are connections (`api.max_streams` is below `api.max_connections`), so
//! they are inside the first term. The daemon logs the limit and the budget at start and
//! warns when the budget does not fit; `docs/operations.md` explains the numbers.

use crate::settings::Settings;

/// Descriptors kept for everything but API connections and delivery sockets.
pub const RESERVE: u64 = 128;

/// Descriptors per API connection: its socket and a request's SQLite connection (2).
pub const PER_CONNECTION: u64 = 3;

/// The descriptors the configuration needs (see the module documentation).
pub fn descriptors_needed(settings: &Settings) -> u64 {
    PER_CONNECTION * u64::from(settings.api.max_connections)
        + u64::from(settings.delivery.max_in_flight)
        + RESERVE
}

/// The process's soft and hard `RLIMIT_NOFILE`, when it can be read.
pub fn nofile_limit() -> Option<(u64, u64)> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own; no other memory is touched.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    (rc == 0).then_some((limit.rlim_cur, limit.rlim_max))
}

/// Logs the effective descriptor limit and the budget; warns when the budget exceeds it.
pub fn log_descriptor_budget(settings: &Settings) {
    let needed = descriptors_needed(settings);
    match nofile_limit() {
        Some((soft, hard)) if needed > soft => tracing::warn!(
            limit = soft,
            hard_limit = hard,
            needed,
            max_connections = settings.api.max_connections,
            "the descriptor limit (RLIMIT_NOFILE, systemd LimitNOFILE=) is below what \
             api.max_connections and delivery.max_in_flight need; lower them or raise the limit"
        ),
        Some((soft, hard)) => tracing::info!(
            limit = soft,
            hard_limit = hard,
            needed,
            max_connections = settings.api.max_connections,
            max_streams = settings.api.max_streams,
            "file descriptor budget fits"
        ),
        None => tracing::warn!(needed, "cannot read RLIMIT_NOFILE"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_fit_the_usual_soft_limit_of_1024() {
        let s = Settings::default();
        assert_eq!(descriptors_needed(&s), 3 * 256 + 100 + 128);
        assert!(descriptors_needed(&s) <= 1024);
    }
}
