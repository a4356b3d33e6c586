//! `scriptd bench pipeline`: the whole daemon, end to end, against the broker's own ceiling.
//!
//! One run:
//!
//! 1. **Scripts.** A temporary database gets `N` synthetic scripts from [`super::synth`]
//!    (same timetables, events and cameras as `bench match`), all with the reaction
//!    `show-camera-sidebar` to one of [`USERS`] users, written through the store in one
//!    transaction. The generator's wildcard scripts (`cameras: null`, 10 %) are kept and
//!    indexed, but listen to one extra event kind the occurrence stream never carries:
//!    at 100k scripts every occurrence would otherwise match ~80 of them and the run
//!    would measure push fan-out, not the daemon.
//! 2. **Occurrences.** `M` occurrences whose `occurred_at` never decreases in publish
//!    order (the two-week window divided evenly); a fraction `F` are *matched*: an (event,
//!    camera) for which the daemon's own schedule index (built here from the same database)
//!    finds 1 to 3 active scripts at that instant, hence 1 to 3 pushes; the others are
//!    *unmatched*: an (event, camera) no script covers then. Matched occurrences come in
//!    pairs (the same event and camera again at the next matched instant). Every
//!    occurrence has its own `id`, and the bench knows which scripts each one fires, so
//!    the expected deliveries are known up front; with `--cooldown-seconds` (on every
//!    script) they are those the intake's cooldown rule ([`crate::intake::in_cooldown`],
//!    applied in publish order per script and camera) lets through, and the rest are
//!    reported as suppressed. The last occurrence is a matched one whose scripts did not
//!    match on its camera during the day before (where one exists), so no cooldown
//!    silences it and the run's end is observable.
//! 3. **Broker ceiling.** The same publisher and subscriber through the same broker, with
//!    no daemon in between: `M` occurrence-sized messages published as fast as possible,
//!    received by the subscriber (publish→receive). With `--rate` the same is repeated at
//!    that rate for the latency baseline.
//! 4. **Daemon.** `scriptd run` as a child process (this binary) on the temporary database
//!    and a generated configuration (`events.max_age_seconds = 0`, since the synthetic
//!    instants are in the past). Warm-up occurrences are published until one push arrives,
//!    then the `M` occurrences (as fast as possible, or `R` per second) while the
//!    subscriber collects the pushes.
//!
//! Measured: occurrences/s sustained (`M` / first publish → last push), pushes/s,
//! publish→push latency (the publish instant travels in the occurrence's `data.t_ns`,
//! which the push payload passes through, and is compared on receipt with the same
//! monotonic clock), lost (expected `delivery_id`s not received), unexpected (distinct
//! `delivery_id`s received that were not expected), duplicates (received − distinct),
//! and the child's CPU seconds during the measured phase and peak RSS
//! (`/proc/<pid>/stat`, `VmHWM`) — exact, since the daemon is its own process.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::synth;
use crate::live::Live;
use crate::script::ScriptInput;
use crate::store::Store;

/// Users the synthetic scripts push to (`1..=USERS`, no sub-users).
pub const USERS: i64 = 100;
/// The extra event kind the wildcard scripts listen to (never published).
pub const WILDCARD_EVENT: i64 = synth::EVENT_KINDS + 1;
/// The reaction of every synthetic script (`show-camera-sidebar`).
pub const PUSH_REACTION_ID: i64 = 2;
/// Scripts a matched occurrence fires at most.
pub const MAX_MATCHES: usize = 3;
/// With no new push for this long, the run ends and the rest counts as lost.
const IDLE_TIMEOUT: Duration = Duration::from_secs(15);

/// Where the broker is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerChoice {
    /// rumqttd, started inside this (the benchmark's) process; the daemon connects to it.
    Embedded,
    /// A broker the user started, e.g. `mosquitto -c packaging/mosquitto/bench.conf`.
    External {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
    },
}

impl std::str::FromStr for BrokerChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "embedded" {
            return Ok(BrokerChoice::Embedded);
        }
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("expected embedded or HOST:PORT, got {s:?}"))?;
        let port = port.parse::<u16>().map_err(|_| format!("not a port: {port:?}"))?;
        if host.is_empty() || port == 0 {
            return Err(format!("expected embedded or HOST:PORT, got {s:?}"));
        }
        Ok(BrokerChoice::External { host: host.to_owned(), port })
    }
}

/// Parameters of one run.
#[derive(Debug, Clone)]
pub struct PipelineBenchOptions {
    /// The broker.
    pub broker: BrokerChoice,
    /// Scripts (`N`).
    pub scripts: usize,
    /// Occurrences (`M`).
    pub events: usize,
    /// Occurrences per second; `None` = as fast as possible.
    pub rate: Option<f64>,
    /// Publish QoS of the occurrences (0 or 1).
    pub qos: u8,
    /// Fraction of occurrences that match (`F`, 0–1).
    pub match_fraction: f64,
    /// Cameras.
    pub cameras: i64,
    /// Generator seed.
    pub seed: u64,
    /// The `scriptd` binary to run as the daemon.
    pub daemon_exe: PathBuf,
    /// The daemon's `local.toml` (overrides of the generated `default.toml`, e.g.
    /// `[database]` `synchronous = "full"`); empty for none.
    pub daemon_config: String,
    /// Skip the broker-ceiling pass (tests).
    pub skip_ceiling: bool,
    /// `extra.cooldown_seconds` of every script (0 = none, at most one day).
    pub cooldown_seconds: u32,
}

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
    fn of(mut ns: Vec<u64>) -> Latency {
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
        writeln!(
            f,
            "broker {} · {} scripts · {} occurrences ({} matched) · QoS {} · rate {rate}",
            self.broker, self.scripts, self.events, self.matched_events, self.qos
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

/// One pre-checked (event, camera, instant) and the scripts the daemon's index finds for it.
#[derive(Debug, Clone, Copy)]
struct Combo {
    event_id: i64,
    camera_id: i64,
    /// `occurred_at`, unix seconds.
    at: i64,
    /// The matching scripts' ids (the first `n`).
    scripts: [i64; MAX_MATCHES],
    n: u8,
}

impl Combo {
    /// `ids` holds at most [`MAX_MATCHES`] script ids (the rest are dropped).
    fn new(event_id: i64, camera_id: i64, at: i64, ids: &[i64]) -> Combo {
        let mut scripts = [0; MAX_MATCHES];
        let n = ids.len().min(MAX_MATCHES);
        scripts[..n].copy_from_slice(&ids[..n]);
        Combo { event_id, camera_id, at, scripts, n: n as u8 }
    }

    fn scripts(&self) -> &[i64] {
        &self.scripts[..usize::from(self.n)]
    }
}

/// What the daemon must send for a stream.
#[derive(Debug, Default, PartialEq, Eq)]
struct Expectation {
    /// The `delivery_id`s of the pushes it must send.
    deliveries: Vec<String>,
    /// Pushes the cooldown suppresses.
    suppressed: u64,
}

/// The pushes for `stream` (occurrence id and combo, in publish order = arrival order),
/// deciding each matched script's firing as the intake does: with the same
/// [`crate::intake::in_cooldown`] per (script, camera), starting from and updating
/// `state` (the last firing's `occurred_at` in ms and occurrence id). `recipients` gives
/// each script's users (one push each).
fn expect<'a>(
    stream: impl IntoIterator<Item = (String, &'a Combo)>,
    cooldown_seconds: u32,
    recipients: &HashMap<i64, Vec<i64>>,
    state: &mut HashMap<(i64, i64), (i64, String)>,
) -> Expectation {
    let mut out = Expectation::default();
    for (id, combo) in stream {
        for &script in combo.scripts() {
            let users = recipients.get(&script).map_or(&[][..], Vec::as_slice);
            if cooldown_seconds > 0 {
                let at_ms = combo.at * 1000;
                let key = (script, combo.camera_id);
                let last = state.get(&key);
                if crate::intake::in_cooldown(last, at_ms, &id, cooldown_seconds) {
                    out.suppressed += users.len() as u64;
                    continue;
                }
                if last.is_none_or(|(_, fired)| *fired != id) {
                    state.insert(key, (at_ms, id.clone()));
                }
            }
            for user in users {
                out.deliveries.push(crate::delivery::delivery_id(&id, script, user));
            }
        }
    }
    out
}

/// What the subscriber saw.
#[derive(Default)]
struct Collected {
    seen: HashSet<Box<str>>,
    /// The deliveries expected from the measured run, and how many of them were seen.
    expected: HashSet<Box<str>>,
    hits: u64,
    received: u64,
    latencies_ns: Vec<u64>,
    last_ns: u64,
    warm: u64,
    ceiling_seen: HashSet<u64>,
    ceiling_latencies_ns: Vec<u64>,
    ceiling_last_ns: u64,
}

#[derive(Clone)]
struct Collector {
    inner: Arc<Mutex<Collected>>,
    clock: Instant,
    run: String,
}

impl Collector {
    fn lock(&self) -> MutexGuard<'_, Collected> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.clock.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn on_message(&self, topic: &str, payload: &[u8]) {
        #[derive(Deserialize)]
        struct Data {
            t_ns: u64,
        }
        #[derive(Deserialize)]
        struct Push<'a> {
            #[serde(borrow, default)]
            delivery_id: Option<&'a str>,
            #[serde(borrow, default)]
            occurrence_id: Option<&'a str>,
            #[serde(borrow, default)]
            id: Option<&'a str>,
            data: Option<Data>,
        }
        let now = self.now_ns();
        let Ok(p) = serde_json::from_slice::<Push<'_>>(payload) else { return };
        let Some(t) = p.data.map(|d| d.t_ns) else { return };
        let latency = now.saturating_sub(t);
        let mut c = self.lock();
        if topic.contains("/ceiling/") {
            if let Some(seq) = p.id.and_then(|id| id.rsplit('-').next()?.parse::<u64>().ok())
                && c.ceiling_seen.insert(seq)
            {
                c.ceiling_latencies_ns.push(latency);
                c.ceiling_last_ns = now;
            }
            return;
        }
        let occurrence = p.occurrence_id.unwrap_or_default();
        if occurrence.starts_with("warm-") {
            c.warm += 1;
            return;
        }
        let Some(id) = p.delivery_id else { return };
        c.received += 1;
        if c.seen.insert(id.into()) {
            c.latencies_ns.push(latency);
            if c.expected.contains(id) {
                c.hits += 1;
            }
        }
        c.last_ns = now;
    }
}

/// Runs the benchmark (blocking; starts its own runtime).
pub fn run(opts: &PipelineBenchOptions) -> Result<PipelineBenchReport, String> {
    if opts.qos > 1 {
        return Err("--qos must be 0 or 1".into());
    }
    if !(0.0..=1.0).contains(&opts.match_fraction) {
        return Err("--match-fraction must be between 0 and 1".into());
    }
    if opts.events == 0 || opts.scripts == 0 {
        return Err("--scripts and --events must be at least 1".into());
    }
    if u64::from(opts.cooldown_seconds) > crate::script::COOLDOWN_MAX {
        return Err(format!(
            "--cooldown-seconds must be at most {} (a script's limit)",
            crate::script::COOLDOWN_MAX
        ));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bench-load")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(run_async(opts))
}

fn qos_of(q: u8) -> QoS {
    if q == 0 { QoS::AtMostOnce } else { QoS::AtLeastOnce }
}

async fn run_async(opts: &PipelineBenchOptions) -> Result<PipelineBenchReport, String> {
    let dir = TempDir::new()?;
    let setup_started = Instant::now();
    let Prepared { warm, plan, recipients } = {
        let db = dir.path().join("bench.db");
        let opts = opts.clone();
        tokio::task::spawn_blocking(move || prepare_database(&db, &opts))
            .await
            .map_err(|e| format!("setup task failed: {e}"))??
    };
    let setup_s = setup_started.elapsed().as_secs_f64();

    #[cfg(feature = "embedded-broker")]
    let mut _embedded = None;
    let (host, port) = match &opts.broker {
        BrokerChoice::External { host, port } => (host.clone(), *port),
        #[cfg(feature = "embedded-broker")]
        BrokerChoice::Embedded => {
            let port = free_port()?;
            let b = crate::mqtt::broker::start_embedded("127.0.0.1", port)
                .map_err(|e| e.to_string())?;
            _embedded = Some(b);
            ("127.0.0.1".to_owned(), port)
        }
        #[cfg(not(feature = "embedded-broker"))]
        BrokerChoice::Embedded => {
            return Err(
                "this scriptd was built without the embedded broker; use --broker HOST:PORT".into(),
            );
        }
    };
    let run_id = format!("{}-{}", std::process::id(), Utc::now().timestamp_millis() % 1_000_000);
    let collector = Collector {
        inner: Arc::new(Mutex::new(Collected::default())),
        clock: Instant::now(),
        run: run_id.clone(),
    };
    let prefix = format!("scriptd-bench/{run_id}");

    // Subscriber: pushes and the ceiling topic, QoS 1.
    let sub = connect(&host, port, &format!("bench-sub-{run_id}"), 0).await?;
    for filter in [format!("{prefix}/users/+/reactions"), format!("{prefix}/ceiling/#")] {
        sub.client.subscribe(filter, QoS::AtLeastOnce).await.map_err(|e| e.to_string())?;
    }
    let sub_task = {
        let collector = collector.clone();
        let mut eventloop = sub.eventloop;
        let mut suback = 0;
        // Wait for both SubAcks before going on.
        while suback < 2 {
            match tokio::time::timeout(Duration::from_secs(10), eventloop.poll()).await {
                Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => suback += 1,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(format!("subscriber: {e}")),
                Err(_) => return Err("subscriber: no SUBACK within 10 s".into()),
            }
        }
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        collector.on_message(&p.topic, &p.payload)
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        })
    };
    let publisher =
        Publisher::connect(&host, port, &format!("bench-pub-{run_id}"), opts.qos).await?;

    // Broker ceiling.
    let (ceiling_per_s, ceiling_lost, mut ceiling_latency) = if opts.skip_ceiling {
        (0.0, 0, Latency::default())
    } else {
        ceiling_pass(&publisher, &collector, &prefix, opts.events, None).await?
    };
    if let (Some(rate), false) = (opts.rate, opts.skip_ceiling) {
        let n = opts.events.min((rate * 10.0) as usize).max(1);
        let (_, _, paced) = ceiling_pass(&publisher, &collector, &prefix, n, Some(rate)).await?;
        ceiling_latency = paced;
    }

    // The daemon.
    let config_dir = dir.path().join("config");
    // rumqttd (the bench's embedded broker) speaks 3.1.1; an external broker gets MQTT 5,
    // the daemon's default.
    let protocol = if opts.broker == BrokerChoice::Embedded { "3.1.1" } else { "5" };
    write_daemon_config(
        &config_dir,
        dir.path(),
        (&host, port, protocol),
        &prefix,
        &run_id,
        &opts.daemon_config,
    )?;
    let started = Instant::now();
    let mut daemon = Daemon::spawn(&opts.daemon_exe, &config_dir, dir.path())?;
    let events_topic = |camera: i64| format!("{prefix}/events/{camera}");
    let mut k = 0u64;
    loop {
        if collector.lock().warm > 0 {
            break;
        }
        daemon.check_alive()?;
        if started.elapsed() > Duration::from_secs(120) {
            return Err(format!(
                "the daemon sent no push within 120 s; its log: {}",
                daemon.log_tail()
            ));
        }
        let payload = occurrence_json(&format!("warm-{run_id}-{k}"), &warm, collector.now_ns());
        publisher.publish(events_topic(warm.camera_id), payload).await?;
        k += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let startup_s = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu_before = daemon.cpu_seconds();

    // The measured run. The warm-up fired the warm-up scripts on its camera (at an instant
    // at least a day before the stream, so it silences nothing; kept for exactness).
    let mut state = HashMap::new();
    if opts.cooldown_seconds > 0 {
        for &s in warm.scripts() {
            state.insert((s, warm.camera_id), (warm.at * 1000, format!("warm-{run_id}")));
        }
    }
    let expectation = expect(
        plan.iter().enumerate().map(|(i, c)| (format!("b-{run_id}-{i}"), c)),
        opts.cooldown_seconds,
        &recipients,
        &mut state,
    );
    let expected = expectation.deliveries.len() as u64;
    collector.lock().expected = expectation.deliveries.into_iter().map(Into::into).collect();
    let matched_events = plan.iter().filter(|c| c.n > 0).count();
    let t0 = collector.now_ns();
    let pace_start = Instant::now();
    for (i, combo) in plan.iter().enumerate() {
        if let Some(rate) = opts.rate {
            let due = pace_start + Duration::from_secs_f64(i as f64 / rate);
            if due > Instant::now() {
                tokio::time::sleep_until(due.into()).await;
            }
        }
        let payload = occurrence_json(&format!("b-{run_id}-{i}"), combo, collector.now_ns());
        publisher.publish(events_topic(combo.camera_id), payload).await?;
    }
    let publish_s = pace_start.elapsed().as_secs_f64();
    wait_for(&collector, |c| c.hits >= expected, |c| c.last_ns, &mut daemon).await;
    let cpu_after = daemon.cpu_seconds();
    let rss = daemon.rss_mb("VmHWM:");
    let rss_end = daemon.rss_mb("VmRSS:");
    daemon.stop();
    sub_task.abort();
    publisher.task.abort();
    cleanup_session(&host, port, &format!("scriptd-bench-{run_id}")).await;

    let c = collector.lock();
    let distinct = c.seen.len() as u64;
    let end = c.last_ns.max(t0 + 1);
    let duration_s = (end - t0) as f64 / 1e9;
    let occurrences_per_s = opts.events as f64 / duration_s;
    let daemon_cpu_s = (cpu_after - cpu_before).max(0.0);
    Ok(PipelineBenchReport {
        broker: match &opts.broker {
            BrokerChoice::Embedded => "embedded".into(),
            BrokerChoice::External { host, port } => format!("{host}:{port}"),
        },
        scripts: opts.scripts,
        events: opts.events,
        matched_events,
        rate: opts.rate.unwrap_or(0.0),
        qos: opts.qos,
        match_fraction: opts.match_fraction,
        occurrences_per_s,
        pushes_per_s: c.received as f64 / duration_s,
        latency_ms: Latency::of(c.latencies_ns.clone()),
        cooldown_seconds: opts.cooldown_seconds,
        expected_pushes: expected,
        suppressed: expectation.suppressed,
        received_pushes: c.received,
        lost: expected.saturating_sub(c.hits),
        unexpected: distinct.saturating_sub(c.hits),
        duplicates: c.received - distinct,
        duration_s,
        publish_s,
        ceiling_per_s,
        ceiling_lost,
        ceiling_latency_ms: ceiling_latency,
        ratio_to_ceiling: if ceiling_per_s > 0.0 { occurrences_per_s / ceiling_per_s } else { 0.0 },
        daemon_cpu_s,
        daemon_cpu_us_per_event: daemon_cpu_s * 1e6 / opts.events as f64,
        daemon_rss_mb: rss,
        daemon_rss_end_mb: rss_end,
        setup_s,
        startup_s,
    })
}

/// Waits until `done`, or until nothing new arrived for [`IDLE_TIMEOUT`].
async fn wait_for(
    collector: &Collector,
    done: impl Fn(&Collected) -> bool,
    last: impl Fn(&Collected) -> u64,
    daemon: &mut Daemon,
) {
    let mut last_seen = (0, Instant::now());
    loop {
        {
            let c = collector.lock();
            if done(&c) {
                return;
            }
            let l = last(&c);
            if l != last_seen.0 {
                last_seen = (l, Instant::now());
            }
        }
        if last_seen.1.elapsed() > IDLE_TIMEOUT || daemon.check_alive().is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Publishes `n` occurrence-sized messages to the ceiling topic and waits for them.
/// Returns (messages/s first publish → last receipt, lost, latency).
async fn ceiling_pass(
    publisher: &Publisher,
    collector: &Collector,
    prefix: &str,
    n: usize,
    rate: Option<f64>,
) -> Result<(f64, u64, Latency), String> {
    {
        let mut c = collector.lock();
        c.ceiling_seen.clear();
        c.ceiling_latencies_ns.clear();
    }
    let combo = Combo::new(1, 1, 0, &[]);
    let t0 = collector.now_ns();
    let start = Instant::now();
    for i in 0..n {
        if let Some(rate) = rate {
            let due = start + Duration::from_secs_f64(i as f64 / rate);
            if due > Instant::now() {
                tokio::time::sleep_until(due.into()).await;
            }
        }
        let payload =
            occurrence_json(&format!("c-{}-{i}", collector.run), &combo, collector.now_ns());
        publisher.publish(format!("{prefix}/ceiling/{}", i % 1000), payload).await?;
    }
    let mut idle = (0usize, Instant::now());
    loop {
        let got = collector.lock().ceiling_seen.len();
        if got >= n {
            break;
        }
        if got != idle.0 {
            idle = (got, Instant::now());
        }
        if idle.1.elapsed() > Duration::from_secs(5) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let c = collector.lock();
    let got = c.ceiling_seen.len();
    let secs = (c.ceiling_last_ns.max(t0 + 1) - t0) as f64 / 1e9;
    Ok((got as f64 / secs, (n - got.min(n)) as u64, Latency::of(c.ceiling_latencies_ns.clone())))
}

/// The occurrence payload of CONTRACT §4, with the publish instant in `data.t_ns`.
fn occurrence_json(id: &str, c: &Combo, t_ns: u64) -> Vec<u8> {
    let at = DateTime::<Utc>::from_timestamp(c.at, 0).unwrap_or_default();
    format!(
        r#"{{"id":"{id}","event_id":{},"camera_id":{},"occurred_at":"{}","data":{{"t_ns":{t_ns}}}}}"#,
        c.event_id,
        c.camera_id,
        at.format("%Y-%m-%dT%H:%M:%SZ")
    )
    .into_bytes()
}

/// Draws per matched slot before giving up.
const DRAWS: usize = 1000;
/// Draws per unmatched slot among the generated cameras before using a camera no script
/// watches.
const UNMATCHED_DRAWS: usize = 50;

/// What the measured run publishes, and what the daemon must send for it.
struct Prepared {
    /// The warm-up occurrence (at least a day before the stream).
    warm: Combo,
    /// The `M` occurrences in publish order, `occurred_at` non-decreasing.
    plan: Vec<Combo>,
    /// The users of every script in `warm` and `plan` (one push each).
    recipients: HashMap<i64, Vec<i64>>,
}

/// Instant of occurrence `i` of `m`: the two-week window divided evenly, so `occurred_at`
/// never decreases in publish order (strictly increases when `m` ≤ the window's seconds).
fn slot_instant(i: usize, m: usize) -> i64 {
    let offset = (i as i128 * i128::from(synth::STREAM_SECONDS)) / m.max(1) as i128;
    synth::stream_start() + offset as i64
}

/// The `M` occurrences, in publish order. Occurrence `i` lies at [`slot_instant`]; it is
/// matched when `floor((i+1)·F) > floor(i·F)` (the last one always): an (event, camera)
/// for which `matches` (the daemon's index) finds 1 to [`MAX_MATCHES`] scripts *at that
/// instant*, drawn from a random active script. Matched occurrences come in pairs: the
/// second repeats the first's event and camera at its own, later instant (when that still
/// matches 1–3 scripts), as a camera that keeps seeing the same thing does; a cooldown
/// longer than the gap (`W / (M·F)`, 60 s at 200,000 occurrences and F = 0.1) suppresses
/// it. The last occurrence is a fresh draw none of whose (script, camera) pairs matched
/// within the longest cooldown (one day) before it, so it fires under any cooldown and the
/// run's end is observable. Unmatched occurrences: an (event, camera) the index finds
/// nothing for at that instant (at worst a camera no script watches). `candidates` are the
/// active scripts' (event, cameras).
fn plan_occurrences(
    opts: &PipelineBenchOptions,
    candidates: &[(i64, &[i64])],
    matches: impl Fn(i64, i64, i64) -> Vec<i64>,
) -> Result<(Combo, Vec<Combo>), String> {
    let mut rng = StdRng::seed_from_u64(opts.seed ^ 0x5eed);
    if candidates.is_empty() {
        return Err("no active script watches a camera; use more scripts".into());
    }
    let draw = |rng: &mut StdRng, at: i64, fits: &dyn Fn(&[i64], i64) -> bool| {
        (0..DRAWS).find_map(|_| {
            let (event_id, cams) = candidates[rng.random_range(0..candidates.len())];
            let camera_id = cams[rng.random_range(0..cams.len())];
            let ids = matches(event_id, camera_id, at);
            ((1..=MAX_MATCHES).contains(&ids.len()) && fits(&ids, camera_id))
                .then(|| Combo::new(event_id, camera_id, at, &ids))
        })
    };
    let none_found = |at: i64| {
        let at = DateTime::<Utc>::from_timestamp(at, 0).unwrap_or_default();
        format!(
            "found no occurrence at {at} that matches 1-3 scripts in {DRAWS} draws; use more scripts"
        )
    };
    let any = |_: &[i64], _: i64| true;
    // The warm-up: one to seven days before the stream.
    let start = synth::stream_start();
    let warm = (0..10)
        .find_map(|_| {
            let at = rng.random_range(start - 7 * 86_400..=start - 86_400);
            draw(&mut rng, at, &any)
        })
        .ok_or_else(|| none_found(start - 86_400))?;
    let f = opts.match_fraction;
    let m = opts.events;
    let mut plan = Vec::with_capacity(m);
    // When each (script, camera) last matched in the plan.
    let mut last_match: HashMap<(i64, i64), i64> = HashMap::new();
    let mut repeat: Option<(i64, i64)> = None;
    for i in 0..m {
        let at = slot_instant(i, m);
        let is_last = i + 1 == m;
        let combo = if ((i + 1) as f64 * f).floor() > (i as f64 * f).floor() || is_last {
            let again = repeat.take().filter(|_| !is_last).and_then(|(e, c)| {
                let ids = matches(e, c, at);
                (1..=MAX_MATCHES).contains(&ids.len()).then(|| Combo::new(e, c, at, &ids))
            });
            let combo = match again {
                Some(c) => c,
                None if is_last => {
                    let quiet = |ids: &[i64], camera: i64| {
                        ids.iter().all(|s| {
                            last_match
                                .get(&(*s, camera))
                                .is_none_or(|t| at - t >= crate::script::COOLDOWN_MAX as i64)
                        })
                    };
                    draw(&mut rng, at, &quiet)
                        .or_else(|| draw(&mut rng, at, &any))
                        .ok_or_else(|| none_found(at))?
                }
                None => {
                    let c = draw(&mut rng, at, &any).ok_or_else(|| none_found(at))?;
                    repeat = Some((c.event_id, c.camera_id));
                    c
                }
            };
            for &s in combo.scripts() {
                last_match.insert((s, combo.camera_id), at);
            }
            combo
        } else {
            let mut found = None;
            for tries in 0..DRAWS {
                let event_id = rng.random_range(1..=synth::EVENT_KINDS);
                // After many misses (dense script sets), a camera no script watches.
                let camera_id = if tries < UNMATCHED_DRAWS {
                    rng.random_range(1..=opts.cameras)
                } else {
                    opts.cameras + rng.random_range(1..=1000)
                };
                if matches(event_id, camera_id, at).is_empty() {
                    found = Some(Combo::new(event_id, camera_id, at, &[]));
                    break;
                }
            }
            found.ok_or("found no unmatched occurrence; the script set covers everything")?
        };
        plan.push(combo);
    }
    Ok((warm, plan))
}

/// Creates the database with the scripts (each with `extra.cooldown_seconds` when asked)
/// and plans the occurrences with the daemon's own index over it.
fn prepare_database(db: &Path, opts: &PipelineBenchOptions) -> Result<Prepared, String> {
    let err = |e: crate::store::StoreError| format!("bench database: {e}");
    let store = Store::migrate(db).map_err(err)?;
    let scripts = synth::scripts(opts.scripts, opts.cameras, opts.seed);
    let mut extra = Map::new();
    if opts.cooldown_seconds > 0 {
        extra.insert("cooldown_seconds".into(), opts.cooldown_seconds.into());
    }
    store
        .write(|tx| {
            for id in (crate::store::catalog::DEFAULT_EVENTS.len() as i64 + 1)..=WILDCARD_EVENT {
                tx.execute(
                    "INSERT OR IGNORE INTO events (id, name, description, color, analytic_type)
                     VALUES (?1, ?2, ?3, '#888888', 'bench')",
                    rusqlite::params![id, format!("bench_event_{id}"), format!("Bench event {id}")],
                )?;
            }
            for u in 1..=USERS {
                tx.execute(
                    "INSERT INTO users (id, login, name, created_at, updated_at)
                     VALUES (?1, ?2, ?3, '2026-01-01 00:00:00', '2026-01-01 00:00:00')",
                    rusqlite::params![u, format!("bench-{u}"), format!("Bench user {u}")],
                )?;
            }
            for s in &scripts {
                let Value::Object(timetable) = &s.timetable else { continue };
                let input = ScriptInput {
                    title: format!("bench script {}", s.id),
                    event_id: if s.cameras.is_some() { s.event_id } else { WILDCARD_EVENT },
                    reaction_id: PUSH_REACTION_ID,
                    enabled: s.active,
                    cameras: s.cameras.clone(),
                    users: vec![(s.id - 1) % USERS + 1],
                    timetable: Value::Object(timetable.clone()),
                    extra: extra.clone(),
                };
                crate::store::scripts::insert(tx, Some(s.id), &input)?;
            }
            Ok(())
        })
        .map_err(err)?;
    // The daemon's own view of these scripts: the same snapshot code it will run.
    let live = Live::new(store, synth::ZONE).map_err(err)?;
    let snap = live.load();
    if !snap.invalid.is_empty() {
        return Err(format!("{} synthetic scripts are invalid", snap.invalid.len()));
    }
    if let Some(s) = snap.scripts.iter().find(|s| s.extra.cooldown_seconds != opts.cooldown_seconds)
    {
        return Err(format!(
            "script {} has cooldown_seconds {} instead of {}",
            s.id, s.extra.cooldown_seconds, opts.cooldown_seconds
        ));
    }
    let candidates: Vec<(i64, &[i64])> = scripts
        .iter()
        .filter(|s| s.active)
        .filter_map(|s| Some((s.event_id, s.cameras.as_deref().filter(|c| !c.is_empty())?)))
        .collect();
    let matches = |e: i64, c: i64, t: i64| {
        snap.index.matches(e, c, DateTime::<Utc>::from_timestamp(t, 0).unwrap_or_default())
    };
    let (warm, plan) = plan_occurrences(opts, &candidates, matches)?;
    let mut recipients = HashMap::new();
    for combo in plan.iter().chain([&warm]) {
        for id in combo.scripts() {
            if !recipients.contains_key(id) {
                let users = snap.scripts.get(id).map(|s| snap.recipients(s)).unwrap_or_default();
                recipients.insert(*id, users);
            }
        }
    }
    Ok(Prepared { warm, plan, recipients })
}

fn write_daemon_config(
    config_dir: &Path,
    data_dir: &Path,
    (host, port, protocol): (&str, u16, &str),
    prefix: &str,
    run_id: &str,
    extra: &str,
) -> Result<(), String> {
    std::fs::create_dir_all(config_dir)
        .map_err(|e| format!("cannot create {}: {e}", config_dir.display()))?;
    let db = data_dir.join("bench.db");
    let text = format!(
        r#"# Generated by `scriptd bench pipeline`.
timezone = "{zone}"

[database]
path = {db:?}

[mqtt]
host = "{host}"
port = {port}
client_id = "scriptd-bench-{run_id}"
events_topic = "{prefix}/events/#"
push_topic_prefix = "{prefix}/users"
embedded_broker = false
protocol = "{protocol}"

[api]
bind = "127.0.0.1:{api_port}"

[events]
max_age_seconds = 0

[log]
level = "warn"
"#,
        zone = synth::ZONE.name(),
        api_port = free_port()?,
        db = db.display().to_string(),
    );
    let path = config_dir.join("default.toml");
    std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    // Overrides go to local.toml, the layer above default.toml.
    let path = config_dir.join("local.toml");
    std::fs::write(&path, extra).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// A private folder under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<TempDir, String> {
        let base = std::env::temp_dir();
        for n in 0..100u32 {
            let p = base.join(format!("scriptd-bench-{}-{n}", std::process::id()));
            match std::fs::create_dir(&p) {
                Ok(()) => return Ok(TempDir(p)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(format!("cannot create {}: {e}", p.display())),
            }
        }
        Err("cannot create a temp dir".into())
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A port that was free a moment ago on 127.0.0.1.
fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free port: {e}"))
}

struct Connected {
    client: AsyncClient,
    eventloop: EventLoop,
}

async fn connect(host: &str, port: u16, id: &str, inflight: u16) -> Result<Connected, String> {
    let mut o = MqttOptions::new(id, host, port);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_clean_session(true);
    o.set_max_packet_size(1 << 20, 1 << 20);
    if inflight > 0 {
        o.set_inflight(inflight);
    }
    let (client, mut eventloop) = AsyncClient::new(o, 10_000);
    loop {
        match tokio::time::timeout(Duration::from_secs(10), eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                return Ok(Connected { client, eventloop });
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                return Err(format!("cannot connect to the broker at {host}:{port}: {e}"));
            }
            Err(_) => return Err(format!("no CONNACK from {host}:{port} within 10 s")),
        }
    }
}

/// The load generator's publishing connection.
struct Publisher {
    client: AsyncClient,
    qos: QoS,
    task: tokio::task::JoinHandle<()>,
}

impl Publisher {
    async fn connect(host: &str, port: u16, id: &str, qos: u8) -> Result<Publisher, String> {
        let c = connect(host, port, id, 1000).await?;
        let mut eventloop = c.eventloop;
        let task = tokio::spawn(async move {
            loop {
                if eventloop.poll().await.is_err() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        });
        Ok(Publisher { client: c.client, qos: qos_of(qos), task })
    }

    async fn publish(&self, topic: String, payload: Vec<u8>) -> Result<(), String> {
        self.client
            .publish(topic, self.qos, false, payload)
            .await
            .map_err(|e| format!("publish: {e}"))
    }
}

/// Removes the daemon's persistent session from the broker (a clean-session connect).
async fn cleanup_session(host: &str, port: u16, client_id: &str) {
    if let Ok(c) = connect(host, port, client_id, 0).await {
        let _ = c.client.disconnect().await;
        let mut eventloop = c.eventloop;
        let _ = tokio::time::timeout(Duration::from_millis(500), eventloop.poll()).await;
    }
}

/// `scriptd run` as a child process.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn spawn(exe: &Path, config_dir: &Path, dir: &Path) -> Result<Daemon, String> {
        let log = dir.join("daemon.log");
        let file = std::fs::File::create(&log)
            .map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let child = Command::new(exe)
            .arg("--config")
            .arg(config_dir)
            .arg("run")
            .env_remove("SCRIPTD_CONFIG_DIR")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .map_err(|e| format!("cannot start the daemon {}: {e}", exe.display()))?;
        Ok(Daemon { child, log })
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().rev().take(10).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    fn check_alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!("the daemon exited ({status}): {}", self.log_tail())),
            Err(e) => Err(format!("cannot watch the daemon: {e}")),
        }
    }

    /// User + system CPU seconds so far (`/proc/<pid>/stat`, USER_HZ = 100 on Linux).
    fn cpu_seconds(&self) -> f64 {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())) else {
            return 0.0;
        };
        // Fields after the parenthesised command name; utime and stime are fields 14, 15.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { return 0.0 };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        (ticks(11) + ticks(12)) / 100.0
    }

    /// A memory line of `/proc/<pid>/status` (`VmHWM:` peak, `VmRSS:` now), MiB.
    fn rss_mb(&self, field: &str) -> f64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with(field))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            })
            .map_or(0.0, |kb| kb / 1024.0)
    }

    /// SIGTERM, then SIGKILL after 15 s.
    fn stop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(events: usize, match_fraction: f64, cooldown_seconds: u32) -> PipelineBenchOptions {
        PipelineBenchOptions {
            broker: BrokerChoice::Embedded,
            scripts: 300,
            events,
            rate: None,
            qos: 1,
            match_fraction,
            cameras: 50,
            seed: 3,
            daemon_exe: PathBuf::from("scriptd"),
            daemon_config: String::new(),
            skip_ceiling: true,
            cooldown_seconds,
        }
    }

    #[test]
    fn bench_expectation_applies_the_cooldown_per_script_and_camera() {
        let recipients: HashMap<i64, Vec<i64>> =
            [(1, vec![11]), (2, vec![12]), (3, vec![13, 14])].into();
        let stream: Vec<(&str, Combo)> = vec![
            ("o0", Combo::new(1, 5, 1000, &[1, 2])), // both fire
            ("o1", Combo::new(1, 5, 1030, &[1])),    // 30 s later: silenced
            ("o2", Combo::new(1, 6, 1030, &[1])),    // another camera: fires
            ("o3", Combo::new(1, 5, 1059, &[1, 2])), // 59 s: both silenced
            ("o4", Combo::new(1, 5, 1060, &[1, 2])), // 60 s: both fire again
            ("o5", Combo::new(2, 5, 1061, &[3])),    // script 3: fires, two users
            ("o6", Combo::new(2, 5, 1090, &[3])),    // silenced: two pushes
            ("o7", Combo::new(9, 7, 1100, &[])),     // unmatched
            ("o8", Combo::new(1, 5, 1000, &[2])), // before the last firing: fires (as the intake)
            ("o9", Combo::new(1, 5, 1059, &[2])), // 59 s after o8: silenced
        ];
        let run = |cooldown: u32, state: &mut HashMap<(i64, i64), (i64, String)>| {
            expect(stream.iter().map(|(id, c)| ((*id).to_owned(), c)), cooldown, &recipients, state)
        };
        let mut state = HashMap::new();
        let got = run(60, &mut state);
        assert_eq!(
            got.deliveries,
            [
                "o0:1:11", "o0:2:12", "o2:1:11", "o4:1:11", "o4:2:12", "o5:3:13", "o5:3:14",
                "o8:2:12"
            ]
        );
        assert_eq!(got.suppressed, 6);
        assert_eq!(state[&(1, 5)], (1_060_000, "o4".to_owned()));
        assert_eq!(state[&(2, 5)], (1_000_000, "o8".to_owned()));
        // Without a cooldown every matched script pushes and no state is kept.
        let mut state = HashMap::new();
        let all = run(0, &mut state);
        assert_eq!((all.deliveries.len(), all.suppressed), (14, 0));
        assert!(state.is_empty());
        // A firing before the stream (the warm-up, 50 s before o0) silences script 1 on
        // camera 5 in o0; o1 then fires it, which silences it in o3 and o4.
        let mut state = HashMap::from([((1, 5), (950_000, "warm".to_owned()))]);
        let got = run(60, &mut state);
        assert_eq!(
            got.deliveries,
            ["o0:2:12", "o1:1:11", "o2:1:11", "o4:2:12", "o5:3:13", "o5:3:14", "o8:2:12"]
        );
        assert_eq!(got.suppressed, 7);
    }

    #[test]
    fn bench_plan_is_in_time_order_and_repeats_matched_pairs() {
        // Event 1 on cameras 1-2 always matches script 10; event 2 on camera 3 matches
        // scripts 20 and 21 in even hours only; nothing else matches.
        let matches = |e: i64, c: i64, t: i64| match (e, c) {
            (1, 1 | 2) => vec![10],
            (2, 3) if (t / 3600) % 2 == 0 => vec![20, 21],
            _ => vec![],
        };
        let candidates: [(i64, &[i64]); 2] = [(1, &[1, 2]), (2, &[3])];
        let o = opts(1000, 0.2, 0);
        let (warm, plan) = plan_occurrences(&o, &candidates, matches).unwrap();
        assert!(warm.at <= synth::stream_start() - 86_400, "{warm:?}");
        assert_eq!(warm.scripts(), &matches(warm.event_id, warm.camera_id, warm.at)[..]);
        assert_eq!(plan.len(), 1000);
        assert!(plan.windows(2).all(|w| w[0].at < w[1].at), "occurred_at must increase");
        assert!(plan[0].at >= synth::stream_start());
        assert!(plan[999].at < synth::stream_start() + synth::STREAM_SECONDS);
        for c in &plan {
            assert_eq!(c.scripts(), &matches(c.event_id, c.camera_id, c.at)[..], "{c:?}");
        }
        let matched: Vec<&Combo> = plan.iter().filter(|c| c.n > 0).collect();
        assert_eq!(matched.len(), 200);
        assert!(plan[999].n > 0, "the last occurrence is matched");
        let repeats = matched
            .windows(2)
            .filter(|w| (w[0].event_id, w[0].camera_id) == (w[1].event_id, w[1].camera_id))
            .count();
        assert!(repeats >= 80, "{repeats} of 200 matched occurrences repeat the previous one");
    }

    #[test]
    fn bench_cooldown_suppresses_the_repeats_of_the_same_stream() {
        // 4,000 occurrences, F = 0.5: matched ones 605 s apart; a 1,200 s cooldown silences
        // the second of most pairs. The stream is the same with and without the cooldown.
        let run = |cooldown: u32| {
            let dir = TempDir::new().unwrap();
            let p = prepare_database(&dir.path().join("bench.db"), &opts(4000, 0.5, cooldown));
            let p = p.unwrap();
            let e = expect(
                p.plan.iter().enumerate().map(|(i, c)| (format!("b-{i}"), c)),
                cooldown,
                &p.recipients,
                &mut HashMap::new(),
            );
            (p.plan.iter().map(|c| (c.event_id, c.camera_id, c.at)).collect::<Vec<_>>(), e)
        };
        let (plan, without) = run(0);
        let (plan_cd, with) = run(1200);
        assert_eq!(plan, plan_cd);
        assert_eq!(without.suppressed, 0);
        let all = without.deliveries.len() as u64;
        assert_eq!(with.deliveries.len() as u64 + with.suppressed, all);
        let share = with.suppressed as f64 / all as f64;
        assert!((0.3..0.6).contains(&share), "{} of {all} suppressed", with.suppressed);
        // Under a cooldown, the pushes sent are a subset of those without one.
        let sent: HashSet<&String> = without.deliveries.iter().collect();
        assert!(with.deliveries.iter().all(|d| sent.contains(d)));
    }
}
