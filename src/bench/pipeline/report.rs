//! What `scriptd bench pipeline` reports, and how it prints it.

use super::*;

/// Latency percentiles, milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Maximum.
    pub max: f64,
}

impl Latency {
    pub(super) fn of(mut ns: Vec<u64>) -> Latency {
        if ns.is_empty() {
            return Latency::default();
        }
        ns.sort_unstable();
        let at = |q: f64| {
            let i = ((ns.len() as f64 * q).ceil() as usize).clamp(1, ns.len()) - 1;
            ns[i] as f64 / 1e6
        };
        Latency { p50: at(0.50), p90: at(0.90), p99: at(0.99), max: at(1.0) }
    }
}

/// The result; `--json` prints it as one object (CONTRACT §2).
#[derive(Debug, Clone, Serialize)]
pub struct PipelineBenchReport {
    /// The daemon's store: `sqlite`, or `postgresql user@host:port/name`.
    pub store: String,
    /// Daemons on one shared subscription (their CPU is summed, their peak memory the
    /// largest).
    pub instances: usize,
    /// `embedded` or `HOST:PORT`.
    pub broker: String,
    /// Scripts in the database.
    pub scripts: usize,
    /// Occurrences published.
    pub events: usize,
    /// Of which matched.
    pub matched_events: usize,
    /// Requested rate (0 = as fast as possible).
    pub rate: f64,
    /// Publish QoS.
    pub qos: u8,
    /// Requested match fraction.
    pub match_fraction: f64,
    /// Occurrences per second sustained: `events` / (first publish → last push).
    pub occurrences_per_s: f64,
    /// Pushes received per second over the same span.
    pub pushes_per_s: f64,
    /// Publish → push latency.
    pub latency_ms: Latency,
    /// `extra.cooldown_seconds` of every script (0 = none).
    pub cooldown_seconds: u32,
    /// Pushes expected: those of the matched scripts that the cooldown rule lets through
    /// (known up front from the index and the stream).
    pub expected_pushes: u64,
    /// Pushes the cooldown suppresses (expected not to be sent; 0 without a cooldown).
    pub suppressed: u64,
    /// Pushes received, repeats included.
    pub received_pushes: u64,
    /// Expected deliveries not received (must be 0).
    pub lost: u64,
    /// Distinct deliveries received that were not expected, e.g. one the cooldown should
    /// have suppressed (must be 0).
    pub unexpected: u64,
    /// Received − distinct received.
    pub duplicates: u64,
    /// Seconds from the first publish to the last push.
    pub duration_s: f64,
    /// Seconds the publisher took to hand over all occurrences.
    pub publish_s: f64,
    /// Broker ceiling: messages/s publish → receive, no daemon, as fast as possible.
    pub ceiling_per_s: f64,
    /// Messages the ceiling pass lost (QoS 0 may).
    pub ceiling_lost: u64,
    /// Publish → receive latency through the broker alone, at `rate` (or at full speed).
    pub ceiling_latency_ms: Latency,
    /// `occurrences_per_s / ceiling_per_s`.
    pub ratio_to_ceiling: f64,
    /// CPU seconds (user + system) of the daemon process during the measured phase.
    pub daemon_cpu_s: f64,
    /// Daemon CPU per occurrence, microseconds.
    pub daemon_cpu_us_per_event: f64,
    /// Peak resident memory of the daemon process (`VmHWM`), MiB.
    pub daemon_rss_mb: f64,
    /// Resident memory of the daemon at the end of the run (`VmRSS`), MiB.
    pub daemon_rss_end_mb: f64,
    /// Seconds to generate and store the scripts.
    pub setup_s: f64,
    /// Seconds from starting the daemon to its first push.
    pub startup_s: f64,
}

impl std::fmt::Display for PipelineBenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rate = if self.rate > 0.0 { format!("{}/s", self.rate) } else { "max".into() };
        let instances = if self.instances > 1 {
            format!(" · {} instances", self.instances)
        } else {
            String::new()
        };
        writeln!(
            f,
            "store {}{instances} · broker {} · {} scripts · {} occurrences ({} matched) · QoS {} · rate {rate}",
            self.store, self.broker, self.scripts, self.events, self.matched_events, self.qos
        )?;
        writeln!(
            f,
            "daemon:   {:>9.0} occurrences/s  {:>8.0} pushes/s  ({:.2} s)",
            self.occurrences_per_s, self.pushes_per_s, self.duration_s
        )?;
        let l = &self.latency_ms;
        writeln!(
            f,
            "latency:  p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms (publish → push)",
            l.p50, l.p90, l.p99, l.max
        )?;
        writeln!(
            f,
            "pushes:   {} expected, {} received, {} lost, {} unexpected, {} duplicates",
            self.expected_pushes, self.received_pushes, self.lost, self.unexpected, self.duplicates
        )?;
        if self.cooldown_seconds > 0 {
            let all = self.expected_pushes + self.suppressed;
            writeln!(
                f,
                "cooldown: {} s on every script: {} of {all} pushes suppressed ({:.1} %)",
                self.cooldown_seconds,
                self.suppressed,
                self.suppressed as f64 * 100.0 / all.max(1) as f64
            )?;
        }
        let c = &self.ceiling_latency_ms;
        writeln!(
            f,
            "ceiling:  {:>9.0} messages/s through the broker alone (p50 {:.2} ms, p99 {:.2} ms); daemon at {:.0} % of it",
            self.ceiling_per_s,
            c.p50,
            c.p99,
            self.ratio_to_ceiling * 100.0
        )?;
        write!(
            f,
            "daemon:   {:.2} CPU s ({:.1} µs/occurrence), RSS peak {:.1} MiB, at the end {:.1} MiB; startup {:.1} s",
            self.daemon_cpu_s,
            self.daemon_cpu_us_per_event,
            self.daemon_rss_mb,
            self.daemon_rss_end_mb,
            self.startup_s
        )
    }
}
