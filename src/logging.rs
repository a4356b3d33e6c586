//! Logging: `tracing` with `log.format = pretty|json` and an env-filter from `log.level`
//! that SIGHUP can replace through a [`LogHandle`].
//!
//! The embedded broker (`rumqttd`) is chatty at `info`, and its connection handler logs an
//! ERROR for every ordinary client disconnect ("router-drop", "connection closed by peer"),
//! so [`filter_for`] appends `rumqttd=warn,rumqttd::server::broker=off` unless the operator
//! wrote a `rumqttd` directive of their own. Broker start-up problems are reported by scriptd
//! itself (it checks the port before starting the broker).
//!
//! Secrets never reach a log line because every secret is a [`crate::secret::Secret`],
//! whose `Debug` and `Display` print a mask; `tests/ops_logging.rs` greps captured output.

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

use crate::settings::{LogFormat, LogSettings};

/// Level names accepted as a directive on their own.
const LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error", "off"];

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

/// Checks `log.level`: env-filter syntax, and a directive without `=` must be a level name
/// (a bare word is a target in env-filter syntax, so `warning` would silently log nothing
/// but a target called "warning").
pub fn check_level(level: &str) -> Result<(), String> {
    for directive in level.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        if !directive.contains('=')
            && !directive.contains('[')
            && !LEVELS.contains(&directive.to_ascii_lowercase().as_str())
        {
            return Err(format!(
                "{directive:?} is not a level; use trace, debug, info, warn, error or off, \
                 or target=level"
            ));
        }
    }
    EnvFilter::builder().parse(level).map(|_| ()).map_err(|e| e.to_string())
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
}

impl std::fmt::Debug for LogHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogHandle").finish_non_exhaustive()
    }
}

impl LogHandle {
    /// Replaces the filter with the one `level` describes.
    pub fn set_level(&self, level: &str) -> Result<(), LoggingError> {
        let filter = filter_for(level)?;
        self.inner.reload(filter).map_err(|e| LoggingError::Reload(e.to_string()))
    }
}

/// A subscriber built from the settings, not yet installed: tests use it with
/// `tracing::subscriber::with_default`, the daemon installs it with [`init`].
pub type BoxedSubscriber = Box<dyn tracing::Subscriber + Send + Sync>;

/// Builds a subscriber writing to `writer` in the configured format, and the handle that
/// changes its level.
pub fn build<W>(
    settings: &LogSettings,
    writer: W,
) -> Result<(BoxedSubscriber, LogHandle), LoggingError>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let (filter, handle) = reload::Layer::new(filter_for(&settings.level)?);
    let fmt_layer = match settings.format {
        LogFormat::Pretty => tracing_subscriber::fmt::layer().with_writer(writer).boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_writer(writer)
            .boxed(),
    };
    let subscriber = Registry::default().with(filter).with(fmt_layer);
    Ok((Box::new(subscriber), LogHandle { inner: handle }))
}

/// Installs the global subscriber writing to stderr (journald captures it under systemd).
pub fn init(settings: &LogSettings) -> Result<LogHandle, LoggingError> {
    let (subscriber, handle) = build(settings, std::io::stderr)?;
    subscriber.try_init().map_err(|_| LoggingError::AlreadyInstalled)?;
    Ok(handle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels() {
        assert!(check_level("info").is_ok());
        assert!(check_level("warn,scriptd::dispatch=debug").is_ok());
        assert!(check_level("scriptd=trace").is_ok());
        assert!(check_level("warning").is_err());
        assert!(check_level("info,scriptd=loud").is_err());
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
