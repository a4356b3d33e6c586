//! Logging: `tracing` with `log.format = pretty|json` and an env-filter from `log.level`
//! that SIGHUP can replace through a [`LogHandle`].
//!
//! The embedded broker (`rumqttd`) is chatty at `info`, and its connection handler logs an
//! ERROR for every ordinary client disconnect ("router-drop", "connection closed by peer"),
//! so [`filter_for`] appends `rumqttd=warn,rumqttd::server::broker=off` unless the operator
//! wrote a `rumqttd` directive of their own. Broker start-up problems are reported by scriptd
//! itself (it checks the port before starting the broker).
//!
//! The broker's router also logs `ERROR no-connection id N is already gone` when a client
//! that sent DISCONNECT then closes its socket (the second notice finds the connection
//! removed). That is routine, not an error, so [`BrokerNoise`] drops exactly those lines
//! whatever the level; every other `rumqttd` warning and error still gets through.
//!
//! Secrets never reach a log line because every secret is a [`crate::secret::Secret`],
//! whose `Debug` and `Display` print a mask; `tests/it/ops_logging.rs` greps captured output.
//!
//! # `RUST_LOG`
//!
//! When the environment variable `RUST_LOG` is set (and not empty) it replaces `log.level`,
//! as it does for every tracing program; SIGHUP then leaves the level alone.
//!
//! # journald
//!
//! Under systemd, stderr is a stream to journald (`JOURNAL_STREAM` names it). Each line
//! then starts with its syslog priority (`<3>` error, `<4>` warn, `<6>` info, `<7>` debug
//! and trace), which journald strips and records, so `journalctl -p err -u scriptd` works,
//! and no ANSI colour codes are written. On a terminal the pretty format has colours; piped
//! elsewhere it has none.

use std::io::{IsTerminal, Write};

use tracing::Level;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

use crate::settings::{LogFormat, LogSettings, check_level};

/// Why logging could not be set up or changed.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// `log.level` is not valid env-filter syntax.
    #[error("invalid log.level {level:?}: {reason}")]
    Level {
        /// The rejected value.
        level: String,
        /// Why.
        reason: String,
    },
    /// A global subscriber is already installed.
    #[error("a global tracing subscriber is already installed")]
    AlreadyInstalled,
    /// The subscriber holding the filter is gone.
    #[error("cannot reload the log filter: {0}")]
    Reload(String),
}

/// Directives added for the embedded broker unless the operator names `rumqttd`.
const QUIET_BROKER: &str = "rumqttd=warn,rumqttd::server::broker=off";

/// Builds the filter for `level`, adding the rumqttd quieting directives unless `level` mentions `rumqttd`.
pub fn filter_for(level: &str) -> Result<EnvFilter, LoggingError> {
    let err = |reason: String| LoggingError::Level { level: level.to_string(), reason };
    check_level(level).map_err(err)?;
    let directives = if level.contains("rumqttd") {
        level.to_string()
    } else if level.trim().is_empty() {
        format!("info,{QUIET_BROKER}")
    } else {
        format!("{level},{QUIET_BROKER}")
    };
    EnvFilter::builder().parse(directives).map_err(|e| err(e.to_string()))
}

/// Changes the log filter of a running subscriber (SIGHUP). Cheap to clone.
#[derive(Clone)]
pub struct LogHandle {
    inner: reload::Handle<EnvFilter, Registry>,
    /// `RUST_LOG`, when it set the level: it keeps precedence over `log.level` on reload.
    env_level: Option<String>,
}

impl std::fmt::Debug for LogHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogHandle").finish_non_exhaustive()
    }
}

impl LogHandle {
    /// Replaces the filter with the one `level` describes (a no-op while `RUST_LOG` decides).
    pub fn set_level(&self, level: &str) -> Result<(), LoggingError> {
        if let Some(env) = &self.env_level {
            tracing::info!(rust_log = %env, ignored = level, "RUST_LOG is set; log.level not applied");
            return Ok(());
        }
        let filter = filter_for(level)?;
        self.inner.reload(filter).map_err(|e| LoggingError::Reload(e.to_string()))
    }
}

/// A subscriber built from the settings, not yet installed: tests use it with
/// `tracing::subscriber::with_default`, the daemon installs it with [`init`].
pub type BoxedSubscriber = Box<dyn tracing::Subscriber + Send + Sync>;

/// Where the log lines go, which decides their decoration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    /// A terminal: colours in the pretty format.
    Terminal,
    /// A file or pipe: plain lines.
    Plain,
    /// journald's stream: plain lines, each prefixed with its syslog priority (`<3>`...).
    Journal,
}

impl Sink {
    /// The sink stderr is: [`Sink::Journal`] when `JOURNAL_STREAM` names stderr's device and
    /// inode (as systemd sets it), else a terminal or plain.
    pub fn of_stderr() -> Sink {
        if stderr_is_journal() {
            Sink::Journal
        } else if std::io::stderr().is_terminal() {
            Sink::Terminal
        } else {
            Sink::Plain
        }
    }
}

fn stderr_is_journal() -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else { return false };
    let Some((dev, ino)) = stream.split_once(':') else { return false };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else { return false };
    let Ok(meta) = std::fs::File::from(fd).metadata() else { return false };
    dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino())
}

/// The syslog priority journald records for a tracing level.
pub fn syslog_priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// A [`MakeWriter`] that prefixes every line of an event with its syslog priority.
#[derive(Debug, Clone)]
pub struct JournalWriter<W> {
    inner: W,
}

impl<W> JournalWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        JournalWriter { inner }
    }
}

/// The writer [`JournalWriter`] hands out for one event.
pub struct PriorityLines<W> {
    inner: W,
    prefix: [u8; 3],
    at_line_start: bool,
}

impl<W: Write> Write for PriorityLines<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut out = Vec::with_capacity(buf.len() + 8);
        for &b in buf {
            if self.at_line_start {
                out.extend_from_slice(&self.prefix);
            }
            out.push(b);
            self.at_line_start = b == b'\n';
        }
        self.inner.write_all(&out)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<'a, W: MakeWriter<'a>> MakeWriter<'a> for JournalWriter<W> {
    type Writer = PriorityLines<W::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        // Only used by callers that know no level; events go through `make_writer_for`.
        PriorityLines::new(self.inner.make_writer(), &Level::INFO)
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        PriorityLines::new(self.inner.make_writer_for(meta), meta.level())
    }
}

impl<W> PriorityLines<W> {
    fn new(inner: W, level: &Level) -> Self {
        PriorityLines {
            inner,
            prefix: [b'<', b'0' + syslog_priority(level), b'>'],
            at_line_start: true,
        }
    }
}

/// Builds a subscriber writing plain lines to `writer` in the configured format, and the
/// handle that changes its level.
pub fn build<W>(
    settings: &LogSettings,
    writer: W,
) -> Result<(BoxedSubscriber, LogHandle), LoggingError>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    build_for(settings, None, writer, Sink::Plain)
}

/// [`build`] with the level from `env_level` (`RUST_LOG`) when given, decorated for `sink`.
pub fn build_for<W>(
    settings: &LogSettings,
    env_level: Option<String>,
    writer: W,
    sink: Sink,
) -> Result<(BoxedSubscriber, LogHandle), LoggingError>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = match &env_level {
        Some(env) => filter_for(env).map_err(|e| match e {
            LoggingError::Level { level, reason } => {
                LoggingError::Level { level: format!("{level} (RUST_LOG)"), reason }
            }
            other => other,
        })?,
        None => filter_for(&settings.level)?,
    };
    let (filter, handle) = reload::Layer::new(filter);
    let fmt_layer = match (settings.format, sink) {
        (LogFormat::Pretty, Sink::Journal) => tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(JournalWriter::new(writer))
            .boxed(),
        (LogFormat::Pretty, _) => tracing_subscriber::fmt::layer()
            .with_ansi(sink == Sink::Terminal)
            .with_writer(writer)
            .boxed(),
        (LogFormat::Json, Sink::Journal) => {
            json_layer().with_writer(JournalWriter::new(writer)).boxed()
        }
        (LogFormat::Json, _) => json_layer().with_writer(writer).boxed(),
    };
    let subscriber = Registry::default().with(filter).with(BrokerNoise).with(fmt_layer);
    Ok((Box::new(subscriber), LogHandle { inner: handle, env_level }))
}

/// Drops the embedded broker's routine "already gone" lines (see the module header).
#[derive(Debug, Clone, Copy, Default)]
pub struct BrokerNoise;

/// Messages of `rumqttd::router` that describe a normal disconnect, by prefix and suffix.
const ROUTINE_BROKER_MESSAGES: &[(&str, &str)] = &[("no-connection id ", " is already gone")];

impl BrokerNoise {
    /// True for an event of the broker's router whose message is a routine one.
    pub fn is_routine(target: &str, message: &str) -> bool {
        target.starts_with("rumqttd::router")
            && ROUTINE_BROKER_MESSAGES
                .iter()
                .any(|(start, end)| message.starts_with(start) && message.ends_with(end))
    }
}

/// Reads an event's `message` field.
#[derive(Default)]
struct MessageText(String);

impl tracing::field::Visit for MessageText {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.0 = value.to_string();
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for BrokerNoise {
    fn event_enabled(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        let target = event.metadata().target();
        if !target.starts_with("rumqttd::router") {
            return true;
        }
        let mut message = MessageText::default();
        event.record(&mut message);
        !BrokerNoise::is_routine(target, &message.0)
    }
}

fn json_layer<S>() -> tracing_subscriber::fmt::Layer<
    S,
    tracing_subscriber::fmt::format::JsonFields,
    tracing_subscriber::fmt::format::Format<tracing_subscriber::fmt::format::Json>,
>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_ansi(false)
}

/// `RUST_LOG`, when set and not blank.
pub fn rust_log() -> Option<String> {
    std::env::var("RUST_LOG").ok().filter(|v| !v.trim().is_empty())
}

/// Installs the global subscriber writing to stderr (journald captures it under systemd),
/// with `RUST_LOG` over `log.level`.
pub fn init(settings: &LogSettings) -> Result<LogHandle, LoggingError> {
    let (subscriber, handle) = build_for(settings, rust_log(), std::io::stderr, Sink::of_stderr())?;
    subscriber.try_init().map_err(|_| LoggingError::AlreadyInstalled)?;
    Ok(handle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Buf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn emit_all_levels(format: LogFormat, sink: Sink, env: Option<&str>) -> String {
        let buf = Buf::default();
        let out = buf.clone();
        let settings = LogSettings { format, level: "debug".into() };
        let (sub, _) =
            build_for(&settings, env.map(str::to_owned), move || out.clone(), sink).unwrap();
        tracing::subscriber::with_default(sub, || {
            tracing::error!(code = 1, "broken\nsecond line");
            tracing::warn!("careful");
            tracing::info!("hello");
            tracing::debug!("details");
            tracing::trace!("noise");
        });
        String::from_utf8(buf.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn journal_lines_carry_syslog_priorities_and_no_colours() {
        // The pretty error spans two lines, each prefixed; JSON escapes the newline.
        for (format, prefixes) in [
            (LogFormat::Pretty, &["<3>", "<3>", "<4>", "<6>", "<7>"][..]),
            (LogFormat::Json, &["<3>", "<4>", "<6>", "<7>"][..]),
        ] {
            let text = emit_all_levels(format, Sink::Journal, None);
            let lines: Vec<&str> = text.lines().collect();
            assert_eq!(lines.len(), prefixes.len(), "{format:?}: {text}");
            for (line, prefix) in lines.iter().zip(prefixes) {
                assert!(
                    line.starts_with(prefix),
                    "{format:?}: {line:?} should start with {prefix}"
                );
            }
            assert!(!text.contains('\x1b'), "{format:?}: ANSI codes in {text:?}");
        }
        // Elsewhere: no prefixes; colours only on a terminal.
        let plain = emit_all_levels(LogFormat::Pretty, Sink::Plain, None);
        assert!(!plain.contains("<6>") && !plain.contains('\x1b'), "{plain}");
        let tty = emit_all_levels(LogFormat::Pretty, Sink::Terminal, None);
        assert!(tty.contains('\x1b'), "{tty}");
    }

    #[test]
    fn rust_log_replaces_log_level() {
        let text = emit_all_levels(LogFormat::Pretty, Sink::Plain, Some("warn"));
        assert!(text.contains("careful") && !text.contains("hello"), "{text}");
        let text = emit_all_levels(LogFormat::Pretty, Sink::Plain, Some("trace"));
        assert!(text.contains("noise"), "{text}");
        let err = build_for(
            &LogSettings { format: LogFormat::Pretty, level: "info".into() },
            Some("warning".into()),
            std::io::sink,
            Sink::Plain,
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(err.contains("RUST_LOG"), "{err}");
    }

    #[test]
    fn rumqttd_is_quieted_unless_named() {
        assert!(
            filter_for("debug").map(|f| f.to_string().contains("rumqttd=warn")).unwrap_or(false)
        );
        let own = filter_for("debug,rumqttd=info").map(|f| f.to_string()).unwrap_or_default();
        assert!(own.contains("rumqttd=info") && !own.contains("rumqttd=warn"), "{own}");
    }
}
