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
//!    subscriber collects the pushes. With `--database-url` the daemon runs on that
//!    PostgreSQL database instead, into which the prepared file is copied first (`scriptd
//!    store copy`; the database must be empty). The daemon's CPU seconds then do not
//!    include PostgreSQL's own.
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

mod collect;
mod plan;
mod procs;
mod report;

pub use report::{Latency, PipelineBenchReport};

use collect::*;
use plan::*;
use procs::*;

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
    /// The daemon runs on this PostgreSQL database instead of a SQLite file: it is
    /// migrated and the generated scripts are copied into it (`scriptd store copy`), so it
    /// must hold no users, scripts or deliveries; the run leaves its rows there.
    pub database_url: Option<crate::settings::DatabaseUrl>,
    /// Daemons on one shared subscription (1: one daemon on the plain topic); above 1 they
    /// share the database of `database_url`, which is then required.
    pub instances: usize,
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
    if opts.instances == 0 {
        return Err("--instances must be at least 1".into());
    }
    if opts.instances > 1 && opts.database_url.is_none() {
        return Err("--instances above 1 needs --database-url: the instances share one \
                    PostgreSQL database"
            .into());
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
    let store = match &opts.database_url {
        None => "sqlite".to_owned(),
        Some(url) => {
            let endpoint = copy_to_postgres(&dir.path().join("bench.db"), url).await?;
            format!("postgresql {endpoint}")
        }
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

    // The daemons.
    // rumqttd (the bench's embedded broker) speaks 3.1.1; an external broker gets MQTT 5,
    // the daemon's default.
    let protocol = if opts.broker == BrokerChoice::Embedded { "3.1.1" } else { "5" };
    let started = Instant::now();
    let mut daemons = Vec::with_capacity(opts.instances);
    let mut api_ports = Vec::with_capacity(opts.instances);
    let mut client_ids = Vec::with_capacity(opts.instances);
    for i in 0..opts.instances {
        let own = dir.path().join(format!("instance-{i}"));
        let instance = Instance::new(&run_id, i, opts.instances);
        let api_port = write_daemon_config(
            &own.join("config"),
            dir.path(),
            (&host, port, protocol),
            &prefix,
            &instance,
            &opts.daemon_config,
            opts.database_url.as_ref(),
        )?;
        daemons.push(Daemon::spawn(&opts.daemon_exe, &own.join("config"), &own)?);
        api_ports.push(api_port);
        client_ids.push(instance.client_id);
    }
    let events_topic = |camera: i64| format!("{prefix}/events/{camera}");
    let mut k = 0u64;
    loop {
        if collector.lock().warm > 0 {
            break;
        }
        for d in &mut daemons {
            d.check_alive()?;
        }
        if started.elapsed() > Duration::from_secs(120) {
            return Err(format!(
                "the daemon sent no push within 120 s; its log: {}",
                daemons[0].log_tail()
            ));
        }
        let payload = occurrence_json(&format!("warm-{run_id}-{k}"), &warm, collector.now_ns());
        publisher.publish(events_topic(warm.camera_id), payload).await?;
        k += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Every instance takes part before the measured run (one push says only that one did).
    wait_connected(&api_ports, Duration::from_secs(60)).await?;
    let startup_s = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu_before: f64 = daemons.iter().map(Daemon::cpu_seconds).sum();

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
    wait_for(&collector, |c| c.hits >= expected, |c| c.last_ns, &mut daemons).await;
    let cpu_after: f64 = daemons.iter().map(Daemon::cpu_seconds).sum();
    let rss = daemons.iter().map(|d| d.rss_mb("VmHWM:")).fold(0.0, f64::max);
    let rss_end = daemons.iter().map(|d| d.rss_mb("VmRSS:")).fold(0.0, f64::max);
    for d in &mut daemons {
        d.stop();
    }
    sub_task.abort();
    publisher.task.abort();
    for id in &client_ids {
        cleanup_session(&host, port, id).await;
    }

    let c = collector.lock();
    let distinct = c.seen.len() as u64;
    let end = c.last_ns.max(t0 + 1);
    let duration_s = (end - t0) as f64 / 1e9;
    let occurrences_per_s = opts.events as f64 / duration_s;
    let daemon_cpu_s = (cpu_after - cpu_before).max(0.0);
    Ok(PipelineBenchReport {
        store,
        instances: opts.instances,
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
    daemons: &mut [Daemon],
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
        if last_seen.1.elapsed() > IDLE_TIMEOUT
            || daemons.iter_mut().any(|d| d.check_alive().is_err())
        {
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

#[cfg(test)]
mod tests;
