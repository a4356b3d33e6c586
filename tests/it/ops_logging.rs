//! Log output in both formats, and no secret in any of it.

use scriptd::ops::logging;
use scriptd::secret::Secret;
use scriptd::settings::{LogFormat, LogSettings, Settings};

use crate::support::logs::Buffer;

const TOKEN: &str = "123456789:AAH-known-bot-token-for-grep";
const PASSWORD: &str = "mqtt-pa55-for-grep";

fn capture(format: LogFormat, level: &str, f: impl FnOnce()) -> String {
    let buf = Buffer::default();
    let settings = LogSettings { format, level: level.into() };
    let (subscriber, _handle) = logging::build(&settings, buf.clone()).expect("subscriber");
    tracing::subscriber::with_default(subscriber, f);
    buf.text()
}

fn log_everything_secret() {
    let mut settings = Settings::default();
    settings.mqtt.username = Some("scriptd".into());
    settings.mqtt.password = Some(Secret::new(PASSWORD));
    let bot_token = Secret::new(TOKEN);
    tracing::info!(?settings, "effective configuration");
    tracing::info!(settings = %settings.to_masked_toml(), "as toml");
    tracing::warn!(token = %bot_token, debug_token = ?bot_token, "telegram send failed");
    tracing::error!(live = ?settings.live_part(), "live part");
    let nested = Some(vec![bot_token.clone()]);
    tracing::debug!(?nested, "nested");
}

#[test]
fn no_secret_reaches_pretty_logs() {
    let text = capture(LogFormat::Pretty, "trace", log_everything_secret);
    assert!(text.contains("effective configuration"), "{text}");
    assert!(text.contains("********"), "{text}");
    assert!(!text.contains(TOKEN) && !text.contains(PASSWORD), "{text}");
    assert!(!text.contains("AAH-known"), "{text}");
}

#[test]
fn no_secret_reaches_json_logs_and_each_line_is_json() {
    let text = capture(LogFormat::Json, "trace", log_everything_secret);
    assert!(!text.contains(TOKEN) && !text.contains(PASSWORD), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(line).expect("one JSON object per line");
        assert!(v.get("level").is_some() && v.get("message").is_some(), "{line}");
    }
}

#[test]
fn the_level_filters_and_rumqttd_is_quiet_at_info() {
    let text = capture(LogFormat::Pretty, "debug", || {
        tracing::debug!("per-occurrence line");
        tracing::info!(target: "rumqttd::router", "chatty broker");
        tracing::warn!(target: "rumqttd::router", "broker warning");
    });
    assert!(text.contains("per-occurrence line"));
    assert!(!text.contains("chatty broker"), "{text}");
    assert!(text.contains("broker warning"));

    let text = capture(LogFormat::Pretty, "info", || tracing::debug!("per-occurrence line"));
    assert!(!text.contains("per-occurrence line"), "{text}");
}

#[test]
fn the_embedded_brokers_routine_disconnect_line_is_dropped_and_its_errors_are_not() {
    for format in [LogFormat::Pretty, LogFormat::Json] {
        for level in ["info", "trace", "debug,rumqttd=trace"] {
            let text = capture(format, level, || {
                // What rumqttd's router logs when a client that sent DISCONNECT closes its socket.
                tracing::error!(target: "rumqttd::router::routing", "no-connection id {} is already gone", 3);
                tracing::error!(target: "rumqttd::router::routing", "Invalid client_id: {}", "bad/id");
                tracing::error!(target: "scriptd::intake", "no-connection id 3 is already gone");
            });
            // Only scriptd's own line with the same words remains.
            assert_eq!(text.matches("already gone").count(), 1, "{format:?} {level}: {text}");
            assert!(text.contains("scriptd::intake"), "{format:?} {level}: {text}");
            assert!(text.contains("Invalid client_id: bad/id"), "{format:?} {level}: {text}");
        }
    }
}
