//! Service-manager integration: `sd_notify` messages, a progress-based watchdog, and
//! configuration reload on SIGHUP.
//!
//! * [`Notifier`] sends `READY=1`, `STATUS=...`, `RELOADING=1` + `MONOTONIC_USEC=...`,
//!   `STOPPING=1` and `WATCHDOG=1` to `$NOTIFY_SOCKET`; without that variable (not under
//!   systemd, or `Type=simple`) every call is a no-op.
//! * [`Watchdog`] pings `WATCHDOG=1` only while every registered component has reported
//!   progress recently. Each long-running loop (the MQTT source, each dispatcher) holds a
//!   [`Progress`] and calls [`Progress::beat`] whenever it makes progress *or* is idle but
//!   healthy (an idle loop beats on its own timeout tick). A loop that hangs stops beating,
//!   the pings stop, and systemd restarts the service after `WatchdogSec=`. A broker that
//!   is down is not a hang: the MQTT loop beats on every reconnect attempt.
//!
//! Configuration reloads on SIGHUP (which also speak to systemd) are
//! [`crate::ops::reload`].
//!
//! # Wiring in `scriptd run`
//!
//! ```no_run
//! # async fn wiring() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use arc_swap::ArcSwap;
//! use scriptd::ops::{health, logging, reload, systemd, telemetry};
//! use scriptd::settings::Settings;
//!
//! let (settings, sources) = Settings::load(None)?; // print e.lines() and exit 78 on error
//! let log = logging::init(&settings.log)?;
//! let metrics = telemetry::install()?;
//! let live = Arc::new(ArcSwap::from_pointee(settings.live_part()));
//! let notifier = systemd::Notifier::from_env();
//! let health = health::Health::with_standard_components();
//! let watchdog = systemd::Watchdog::new();
//! // Each loop registers before it starts and beats at least every max_silence:
//! let mqtt_progress = watchdog.register("mqtt", Duration::from_secs(20));
//! // ... open the store (health.set_up(health::STORE)), serve the API with
//! // health::routes(health.clone(), metrics) merged in, then:
//! notifier.ready_with_status("running; mqtt connecting");
//! if let Some(interval) = systemd::watchdog_enabled() {
//!     tokio::spawn(watchdog.clone().run(notifier.clone(), interval, std::future::pending()));
//! }
//! let reloader =
//!     reload::Reloader::new(&sources.dir, settings.clone(), live.clone(), Some(log), notifier);
//! tokio::spawn(reloader.run_on_sighup(std::future::pending()));
//! # let _ = mqtt_progress;
//! # Ok(()) }
//! ```

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::time::Instant;

/// Where `sd_notify` messages go.
#[derive(Debug, Clone)]
enum Target {
    /// Not under systemd: drop them.
    Disabled,
    /// The datagram socket from `$NOTIFY_SOCKET` (a path, or `@name` for the abstract
    /// namespace).
    Socket(PathBuf),
    /// Kept in memory, for tests.
    Memory(Arc<Mutex<Vec<String>>>),
}

/// Sends state changes to the service manager. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Notifier {
    target: Target,
}

/// The messages an in-memory [`Notifier`] has sent, for tests.
#[derive(Debug, Clone)]
pub struct SentMessages(Arc<Mutex<Vec<String>>>);

impl SentMessages {
    /// Every message so far (each a newline-separated list of `KEY=value` lines).
    pub fn all(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl Notifier {
    /// Uses `$NOTIFY_SOCKET` when set (and leaves it set); a no-op notifier otherwise.
    pub fn from_env() -> Self {
        match std::env::var_os("NOTIFY_SOCKET").filter(|s| !s.is_empty()) {
            Some(path) => Self { target: Target::Socket(PathBuf::from(path)) },
            None => Self::disabled(),
        }
    }

    /// Sends to the datagram socket at `path`.
    pub fn to_socket(path: impl Into<PathBuf>) -> Self {
        Self { target: Target::Socket(path.into()) }
    }

    /// Drops every message.
    pub fn disabled() -> Self {
        Self { target: Target::Disabled }
    }

    /// Records messages in memory; for tests.
    pub fn in_memory() -> (Self, SentMessages) {
        let log = Arc::new(Mutex::new(Vec::new()));
        (Self { target: Target::Memory(log.clone()) }, SentMessages(log))
    }

    /// True when messages go somewhere.
    pub fn is_enabled(&self) -> bool {
        !matches!(self.target, Target::Disabled)
    }

    /// `READY=1`: start-up (or a reload) is complete.
    pub fn ready(&self) {
        self.send(&[NotifyState::Ready]);
    }

    /// `READY=1` with a status line.
    pub fn ready_with_status(&self, status: &str) {
        let status = one_line(status);
        self.send(&[NotifyState::Ready, NotifyState::Status(&status)]);
    }

    /// `STATUS=...`, shown by `systemctl status` (e.g. "mqtt reconnecting").
    pub fn status(&self, status: &str) {
        let status = one_line(status);
        self.send(&[NotifyState::Status(&status)]);
    }

    /// `RELOADING=1` with `MONOTONIC_USEC=` (systemd ≥ 253 requires the timestamp).
    pub fn reloading(&self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[NotifyState::Reloading, now]),
            Err(_) => self.send(&[NotifyState::Reloading]),
        }
    }

    /// `STOPPING=1`: shutdown has begun.
    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping]);
    }

    /// `WATCHDOG=1`: keep-alive ping. Prefer [`Watchdog::run`], which pings only while
    /// every component makes progress.
    pub fn watchdog(&self) {
        self.send(&[NotifyState::Watchdog]);
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        let msg: String = states.iter().map(|s| format!("{s}\n")).collect();
        match &self.target {
            Target::Disabled => {}
            Target::Memory(log) => log.lock().unwrap_or_else(PoisonError::into_inner).push(msg),
            Target::Socket(path) => {
                if let Err(e) = send_datagram(path, msg.as_bytes()) {
                    tracing::warn!(socket = %path.display(), error = %e, "sd_notify failed");
                }
            }
        }
    }
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

fn send_datagram(path: &Path, msg: &[u8]) -> io::Result<()> {
    use std::os::unix::net::UnixDatagram;
    let sock = UnixDatagram::unbound()?;
    #[cfg(target_os = "linux")]
    {
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::ffi::OsStrExt;
        let bytes = path.as_os_str().as_bytes();
        if let Some(name) = bytes.strip_prefix(b"@") {
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.connect_addr(&addr)?;
        } else {
            sock.connect(path)?;
        }
    }
    #[cfg(not(target_os = "linux"))]
    sock.connect(path)?;
    let sent = sock.send(msg)?;
    if sent == msg.len() {
        Ok(())
    } else {
        Err(io::Error::new(io::ErrorKind::WriteZero, "incomplete sd_notify datagram"))
    }
}

/// The watchdog interval systemd expects pings within (`WatchdogSec=`), when it is enabled
/// for this process (`$WATCHDOG_USEC`, and `$WATCHDOG_PID` is unset or this process).
pub fn watchdog_enabled() -> Option<Duration> {
    let mut usec = 0u64;
    if sd_notify::watchdog_enabled(false, &mut usec) && usec > 0 {
        return Some(Duration::from_micros(usec));
    }
    // sd-notify 0.4 requires WATCHDOG_PID; systemd may leave it out.
    if std::env::var_os("WATCHDOG_PID").is_none() {
        let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
        return (usec > 0).then(|| Duration::from_micros(usec));
    }
    None
}

/// One component's heartbeat.
#[derive(Debug)]
struct Beat {
    name: String,
    /// Milliseconds since the watchdog's start at the last beat.
    last_ms: AtomicU64,
    max_silence: Duration,
    retired: AtomicBool,
}

#[derive(Debug)]
struct WatchdogInner {
    start: Instant,
    components: Mutex<Vec<Arc<Beat>>>,
}

impl WatchdogInner {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// Registry of component heartbeats; see the module documentation. Cheap to clone.
///
/// Time is [`tokio::time::Instant`], so tests can drive it with `tokio::time::pause()`.
#[derive(Debug, Clone)]
pub struct Watchdog {
    inner: Arc<WatchdogInner>,
}

/// A component's handle for reporting progress. Cheap to clone (clones share the beat).
#[derive(Debug, Clone)]
pub struct Progress {
    beat: Arc<Beat>,
    watchdog: Arc<WatchdogInner>,
}

impl Progress {
    /// Records "made progress, or idle and healthy" now.
    pub fn beat(&self) {
        self.beat.last_ms.store(self.watchdog.now_ms(), Ordering::Relaxed);
    }

    /// The component has ended on purpose (shutdown): it no longer holds the pings back.
    pub fn retire(&self) {
        self.beat.retired.store(true, Ordering::Relaxed);
    }
}

impl Default for Watchdog {
    fn default() -> Self {
        Self::new()
    }
}

impl Watchdog {
    /// An empty registry; its clock starts now.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(WatchdogInner {
                start: Instant::now(),
                components: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Registers a component that counts as stalled when it has not beaten for longer than
    /// `max_silence`. It counts as having beaten at registration.
    pub fn register(&self, name: impl Into<String>, max_silence: Duration) -> Progress {
        let beat = Arc::new(Beat {
            name: name.into(),
            last_ms: AtomicU64::new(self.inner.now_ms()),
            max_silence,
            retired: AtomicBool::new(false),
        });
        self.inner.components.lock().unwrap_or_else(PoisonError::into_inner).push(beat.clone());
        Progress { beat, watchdog: self.inner.clone() }
    }

    /// Names of the components that have not beaten within their `max_silence`.
    pub fn stalled(&self) -> Vec<String> {
        self.stalled_for().into_iter().map(|(name, _)| name).collect()
    }

    /// The components that have not beaten within their `max_silence`, with how long they
    /// have been silent.
    pub fn stalled_for(&self) -> Vec<(String, Duration)> {
        let now = self.inner.now_ms();
        self.inner
            .components
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|b| !b.retired.load(Ordering::Relaxed))
            .filter_map(|b| {
                let silent = now.saturating_sub(b.last_ms.load(Ordering::Relaxed));
                (u128::from(silent) > b.max_silence.as_millis())
                    .then(|| (b.name.clone(), Duration::from_millis(silent)))
            })
            .collect()
    }

    /// Pings `WATCHDOG=1` every `interval / 2` while no component is stalled, until
    /// `shutdown` completes. Stalls and recoveries are logged and shown as `STATUS=`, and
    /// counted in `scriptd_watchdog_stalled_components` and `scriptd_watchdog_stalls_total`.
    pub async fn run(
        self,
        notifier: Notifier,
        interval: Duration,
        shutdown: impl Future<Output = ()>,
    ) {
        let period = (interval / 2).max(Duration::from_millis(1));
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        let mut was_stalled = false;
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                _ = ticker.tick() => {}
            }
            let stalled = self.stalled();
            metrics::gauge!(crate::ops::telemetry::WATCHDOG_STALLED).set(stalled.len() as f64);
            if stalled.is_empty() {
                notifier.watchdog();
                if was_stalled {
                    tracing::info!("watchdog: all components make progress again");
                    notifier.status("running");
                    was_stalled = false;
                }
            } else if !was_stalled {
                let names = stalled.join(", ");
                tracing::error!(components = %names, "watchdog: no progress, withholding pings");
                metrics::counter!(crate::ops::telemetry::WATCHDOG_STALLS).increment(1);
                notifier.status(&format!("stalled: {names}"));
                was_stalled = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_component_that_stops_beating_is_stalled_until_it_beats_again() {
        let dog = Watchdog::new();
        let mqtt = dog.register("mqtt", Duration::from_secs(10));
        let dispatch = dog.register("dispatch", Duration::from_secs(10));
        assert!(dog.stalled().is_empty());
        tokio::time::advance(Duration::from_secs(8)).await;
        mqtt.beat();
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(dog.stalled(), vec!["dispatch".to_string()]);
        dispatch.beat();
        assert!(dog.stalled().is_empty());
        tokio::time::advance(Duration::from_secs(20)).await;
        assert_eq!(dog.stalled().len(), 2);
        mqtt.retire();
        assert_eq!(dog.stalled(), vec!["dispatch".to_string()]);
    }

    #[tokio::test(start_paused = true)]
    async fn pings_go_out_only_while_every_component_makes_progress() {
        // A thread-local recorder: the current-thread runtime runs the task on this thread.
        let recorder = crate::ops::telemetry::builder().expect("builder").build_recorder();
        let metrics = recorder.handle();
        let _recorder = metrics::set_default_local_recorder(&recorder);
        let dog = Watchdog::new();
        let worker = dog.register("dispatcher-0", Duration::from_secs(3));
        let (notifier, sent) = Notifier::in_memory();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(dog.clone().run(notifier, Duration::from_secs(2), async move {
            let _ = stop_rx.await;
        }));
        let pings =
            |sent: &SentMessages| sent.all().iter().filter(|m| *m == "WATCHDOG=1\n").count();

        // Healthy for 5 s: a ping every second.
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            worker.beat();
        }
        let healthy = pings(&sent);
        assert!(healthy >= 4, "{:?}", sent.all());

        // The worker hangs: after its 3 s of grace no more pings.
        tokio::time::sleep(Duration::from_secs(4)).await;
        let at_stall = pings(&sent);
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(pings(&sent), at_stall, "no pings while stalled");
        assert!(sent.all().iter().any(|m| m.contains("STATUS=stalled: dispatcher-0")));
        let text = metrics.render();
        assert!(text.contains("scriptd_watchdog_stalled_components 1\n"), "{text}");
        assert!(text.contains("scriptd_watchdog_stalls_total 1\n"), "{text}");

        // It recovers: pings resume.
        worker.beat();
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(pings(&sent) > at_stall);
        let text = metrics.render();
        assert!(text.contains("scriptd_watchdog_stalled_components 0\n"), "{text}");
        assert!(text.contains("scriptd_watchdog_stalls_total 1\n"), "{text}");

        let _ = stop_tx.send(());
        assert!(task.await.is_ok());
    }

    #[test]
    fn in_memory_messages_have_the_sd_notify_shape() {
        let (n, sent) = Notifier::in_memory();
        n.ready();
        n.status("mqtt reconnecting\n(attempt 3)");
        n.reloading();
        let all = sent.all();
        assert_eq!(all[0], "READY=1\n");
        assert_eq!(all[1], "STATUS=mqtt reconnecting (attempt 3)\n");
        assert!(all[2].starts_with("RELOADING=1\nMONOTONIC_USEC="), "{}", all[2]);
    }

    /// What is observable of a disabled notifier from here: it says it is disabled, and
    /// every call returns (it has nowhere to send, so "sends nothing" is not checkable).
    #[test]
    fn a_disabled_notifier_reports_disabled_and_accepts_every_call() {
        let n = Notifier::disabled();
        assert!(!n.is_enabled());
        assert!(Notifier::in_memory().0.is_enabled());
        n.ready();
        n.ready_with_status("up");
        n.status("s");
        n.reloading();
        n.stopping();
        n.watchdog();
    }
}
