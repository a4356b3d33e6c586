//! Debian's Mosquitto broker, started by a test on a free 127.0.0.1 port.
//!
//! The broker runs in a temp dir with persistence on, so [`Mosquitto::restart`] (SIGTERM,
//! which saves the database, then start again on the same port) keeps sessions and queued
//! messages, while [`Mosquitto::kill_and_restart`] (SIGKILL) loses everything since the
//! last autosave, like a crashed production broker with the default `autosave_interval`.
//! The process is killed when the value is dropped.
//!
//! [`Mosquitto::start_tls`] starts one whose only listener speaks TLS ([`TlsListener`]).
//!
//! A missing `mosquitto` binary fails the test with the command that installs it: these
//! tests are never skipped silently.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, tools, wait_for_port};

/// A running Mosquitto.
pub struct Mosquitto {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Mosquitto {
    /// Starts a broker with anonymous access, persistence in a temp dir,
    /// `max_queued_messages 100000` and `max_inflight_messages 20` (the default).
    pub async fn start() -> Self {
        Self::start_with("").await
    }

    /// Like [`Mosquitto::start`] with extra configuration lines appended.
    pub async fn start_with(extra_config: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let conf = format!(
            "listener {port} 127.0.0.1\n\
             allow_anonymous true\n\
             user root\n\
             persistence true\n\
             persistence_location {dir}/\n\
             persistence_file mosquitto.db\n\
             autosave_interval 1800\n\
             max_queued_messages 100000\n\
             max_inflight_messages 20\n\
             log_dest file {dir}/mosquitto.log\n\
             log_type error\n\
             log_type warning\n\
             log_type notice\n\
             log_type information\n\
             {extra_config}\n",
            dir = dir.path().display()
        );
        std::fs::write(dir.path().join("mosquitto.conf"), conf).expect("write mosquitto.conf");
        let mut m = Mosquitto { port, dir, child: None };
        m.spawn().await;
        m
    }

    /// Like [`Mosquitto::start`], with a TLS listener instead of the plain one.
    pub async fn start_tls(tls: &TlsListener) -> Self {
        Self::start_with(&tls.config_lines()).await
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The broker's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    /// Graceful restart: SIGTERM (Mosquitto saves its persistence file), then start again
    /// on the same port. Sessions and queued QoS 1 messages survive.
    pub async fn restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
        self.spawn().await;
    }

    /// Crash restart: SIGKILL, then start again on the same port. With the default
    /// autosave interval the broker comes back without sessions (`session_present = false`).
    pub async fn kill_and_restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    /// SIGKILL, without restarting.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the process again after [`Mosquitto::kill`].
    pub async fn spawn(&mut self) {
        assert!(self.child.is_none(), "mosquitto is already running");
        let conf: PathBuf = self.dir.path().join("mosquitto.conf");
        let child = match Command::new(tools::require("mosquitto"))
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => panic!("cannot start mosquitto: {e}"),
        };
        self.child = Some(child);
        let port = self.port;
        let started = tokio::time::timeout(
            Duration::from_secs(10),
            wait_for_port(port, Duration::from_secs(10)),
        )
        .await;
        if started.is_err() {
            panic!("mosquitto did not open 127.0.0.1:{port}; log:\n{}", self.log());
        }
    }
}

/// The TLS settings of the listener (PEM files; Mosquitto reads them at every start, so a
/// test can replace a file and [`Mosquitto::restart`]).
#[derive(Debug, Clone)]
pub struct TlsListener {
    /// CA that signs the client certificates it accepts (`cafile`).
    pub cafile: PathBuf,
    /// The server certificate (`certfile`).
    pub certfile: PathBuf,
    /// Its key (`keyfile`).
    pub keyfile: PathBuf,
    /// `require_certificate true`: clients without a certificate from `cafile` are refused.
    pub require_certificate: bool,
}

impl TlsListener {
    /// The listener options, appended after the `listener` line.
    fn config_lines(&self) -> String {
        format!(
            "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate {}\n",
            self.cafile.display(),
            self.certfile.display(),
            self.keyfile.display(),
            self.require_certificate
        )
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}
