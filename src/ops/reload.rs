//! Configuration reloads on SIGHUP: [`Reloader`] re-reads the configuration
//! ([`Settings::reload_with_env`] decides which changed keys apply live), swaps the
//! [`LiveSettings`] (and the log level) when it validates, keeps the running configuration
//! when it does not, and tells systemd `RELOADING=1` then `READY=1` either way.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::ops::logging::LogHandle;
use crate::ops::systemd::Notifier;
use crate::settings::{LiveSettings, Settings, SettingsError};

/// What a successful reload changed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReloadReport {
    /// Changed keys now in effect.
    pub applied: Vec<String>,
    /// Changed keys that keep their old value until a restart.
    pub need_restart: Vec<String>,
}

/// Applies configuration reloads on SIGHUP: see the module documentation.
#[derive(Debug)]
pub struct Reloader {
    dir: PathBuf,
    running: Settings,
    live: Arc<ArcSwap<LiveSettings>>,
    log: Option<LogHandle>,
    notifier: Notifier,
}

impl Reloader {
    /// `dir` is the configuration directory resolved at start-up, `running` the settings the
    /// daemon started with, `live` what components read per operation (store
    /// `running.live_part()` in it first), `log` the handle from [`crate::ops::logging::init`].
    pub fn new(
        dir: impl Into<PathBuf>,
        running: Settings,
        live: Arc<ArcSwap<LiveSettings>>,
        log: Option<LogHandle>,
        notifier: Notifier,
    ) -> Self {
        Self { dir: dir.into(), running, live, log, notifier }
    }

    /// The settings in effect: start-up values for restart-only keys, the latest reloaded
    /// values for live keys.
    pub fn running(&self) -> &Settings {
        &self.running
    }

    /// Re-reads the configuration with this process's environment; see
    /// [`Reloader::reload_with_env`].
    pub fn reload(&mut self) -> Result<ReloadReport, SettingsError> {
        self.reload_with_env(crate::settings::process_env())
    }

    /// Re-reads and validates the configuration. When it validates, swaps the live part and
    /// the log level in and reports the changed keys; when it does not, nothing changes and
    /// the error says why.
    pub fn reload_with_env(
        &mut self,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<ReloadReport, SettingsError> {
        let plan = Settings::reload_with_env(&self.dir, env, &self.running)?;
        if let Some(log) = &self.log
            && plan.live.iter().any(|k| k == "log.level")
            && let Err(e) = log.set_level(&plan.settings.log.level)
        {
            tracing::warn!(error = %e, "cannot change the log level");
        }
        self.live.store(Arc::new(plan.settings.live_part()));
        self.running = self.running.with_live_from(&plan.settings);
        Ok(ReloadReport { applied: plan.live, need_restart: plan.restart })
    }

    /// One SIGHUP: `RELOADING=1`, reload, log the outcome, `READY=1` with a status line.
    pub fn handle_sighup(&mut self) -> Result<ReloadReport, SettingsError> {
        self.notifier.reloading();
        let outcome = self.reload();
        match &outcome {
            Ok(report) => {
                if report.applied.is_empty() && report.need_restart.is_empty() {
                    tracing::info!("configuration reloaded: nothing changed");
                } else {
                    tracing::info!(applied = ?report.applied, "configuration reloaded");
                }
                if !report.need_restart.is_empty() {
                    tracing::warn!(
                        keys = ?report.need_restart,
                        "changed keys take effect only after a restart"
                    );
                }
                self.notifier.ready_with_status("running");
            }
            Err(e) => {
                for line in e.lines() {
                    tracing::error!(problem = %line, "configuration reload rejected; keeping the running configuration");
                }
                self.notifier.ready_with_status(&format!("reload failed: {e}"));
            }
        }
        outcome
    }

    /// Handles SIGHUP until `shutdown` completes. Fails only when the signal handler cannot
    /// be installed.
    pub async fn run_on_sighup(mut self, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = signal(SignalKind::hangup())?;
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                got = hangups.recv() => {
                    if got.is_none() {
                        return Ok(());
                    }
                    // The outcome is logged and reported to systemd inside.
                    let _ = self.handle_sighup();
                }
            }
        }
    }
}
