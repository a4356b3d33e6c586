//! SIGHUP reload as a plain function: re-read, validate, then swap the live part or keep the
//! running configuration. Also the sd_notify datagrams on a real socket.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use scriptd::ops::logging;
use scriptd::ops::reload::Reloader;
use scriptd::ops::systemd::Notifier;
use scriptd::settings::{LogSettings, Settings};

use crate::support::logs::Buffer;
use crate::support::write_file;

fn no_env() -> Vec<(String, String)> {
    Vec::new()
}

fn start(dir: &Path) -> (Settings, Arc<ArcSwap<scriptd::settings::LiveSettings>>) {
    let (settings, _) = Settings::load_from(dir, no_env()).expect("initial config loads");
    let live = Arc::new(ArcSwap::from_pointee(settings.live_part()));
    (settings, live)
}

#[test]
fn live_keys_are_swapped_in_and_restart_keys_are_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_file(
        dir.path(),
        "default.toml",
        "[mqtt]\nport = 1883\n[events]\nmax_age_seconds = 300\n",
    );
    let (settings, live) = start(dir.path());
    let mut reloader =
        Reloader::new(dir.path(), settings, live.clone(), None, Notifier::disabled());

    write_file(
        dir.path(),
        "local.toml",
        "[mqtt]\nport = 1999\n[events]\nmax_age_seconds = 60\n[telegram]\nrequest_timeout_seconds = 3\n[delivery]\nbackoff_max_ms = 1000\nmax_in_flight = 7\n",
    );
    let report = reloader.reload_with_env(no_env()).expect("valid reload");
    assert_eq!(
        report.applied,
        vec![
            "delivery.backoff_max_ms".to_string(),
            "events.max_age_seconds".into(),
            "telegram.request_timeout_seconds".into()
        ]
    );
    assert_eq!(report.need_restart, vec!["delivery.max_in_flight".to_string(), "mqtt.port".into()]);
    let now = live.load();
    assert_eq!(now.events.max_age_seconds, 60);
    assert_eq!(now.telegram.request_timeout_seconds, 3);
    assert_eq!(now.retry.backoff_max.as_millis(), 1000);
    // Restart-only keys keep their start-up value in the running settings.
    assert_eq!(reloader.running().mqtt.port, 1883);
    assert_eq!(reloader.running().delivery.max_in_flight, 100);
    assert_eq!(reloader.running().events.max_age_seconds, 60);

    // A second identical reload changes nothing live, still reports the pending restart.
    let again = reloader.reload_with_env(no_env()).expect("valid reload");
    assert!(again.applied.is_empty(), "{again:?}");
    assert_eq!(again.need_restart.len(), 2);
}

#[test]
fn an_invalid_config_keeps_the_running_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_file(dir.path(), "local.toml", "[events]\nmax_age_seconds = 42\n");
    let (settings, live) = start(dir.path());
    let (notifier, sent) = Notifier::in_memory();
    let mut reloader = Reloader::new(dir.path(), settings.clone(), live.clone(), None, notifier);

    write_file(
        dir.path(),
        "local.toml",
        "[events]\nmax_age_seconds = 1\n[telegram]\napi_url = \"nope\"\n",
    );
    let err = reloader.reload_with_env(no_env()).expect_err("must be rejected");
    assert!(err.to_string().contains("telegram.api_url"), "{err}");
    assert!(err.to_string().contains("local.toml"), "{err}");
    assert_eq!(live.load().events.max_age_seconds, 42, "old value kept");
    assert_eq!(reloader.running(), &settings);

    // The SIGHUP path tells systemd RELOADING then READY either way.
    write_file(dir.path(), "local.toml", "[events]\nmax_age_seconds = 1\nbogus = 1\n");
    assert!(reloader.handle_sighup().is_err());
    let msgs = sent.all();
    assert!(msgs[0].starts_with("RELOADING=1\nMONOTONIC_USEC="), "{msgs:?}");
    assert!(msgs[1].starts_with("READY=1\nSTATUS=reload failed: `events.bogus`"), "{msgs:?}");
}

#[test]
fn a_reload_changes_the_log_level() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_file(dir.path(), "local.toml", "[log]\nlevel = \"info\"\n");
    let (settings, live) = start(dir.path());
    let buf = Buffer::default();
    let (subscriber, handle) = logging::build(&settings.log, buf.clone()).expect("subscriber");
    let mut reloader =
        Reloader::new(dir.path(), settings, live, Some(handle), Notifier::disabled());
    tracing::subscriber::with_default(subscriber, || {
        tracing::debug!("before-reload");
        write_file(dir.path(), "local.toml", "[log]\nlevel = \"debug\"\n");
        let report = reloader.reload_with_env(no_env()).expect("reload");
        assert_eq!(report.applied, vec!["log.level".to_string()]);
        tracing::debug!("after-reload");
    });
    let text = buf.text();
    assert!(!text.contains("before-reload"), "{text}");
    assert!(text.contains("after-reload"), "{text}");
}

#[test]
fn sd_notify_datagrams_reach_a_real_socket() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("notify.sock");
    let server = UnixDatagram::bind(&path).expect("bind");
    let notifier = Notifier::to_socket(&path);
    notifier.ready_with_status("store and API up; mqtt connecting");
    notifier.watchdog();
    let mut buf = [0u8; 256];
    let n = server.recv(&mut buf).expect("recv");
    assert_eq!(&buf[..n], b"READY=1\nSTATUS=store and API up; mqtt connecting\n");
    let n = server.recv(&mut buf).expect("recv");
    assert_eq!(&buf[..n], b"WATCHDOG=1\n");
}

#[test]
fn sd_notify_reaches_an_abstract_socket() {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let name = format!("scriptd-test-{}", std::process::id());
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("addr");
    let server = UnixDatagram::bind_addr(&addr).expect("bind");
    Notifier::to_socket(format!("@{name}")).stopping();
    let mut buf = [0u8; 64];
    let n = server.recv(&mut buf).expect("recv");
    assert_eq!(&buf[..n], b"STOPPING=1\n");
}

#[test]
fn log_settings_reject_a_bad_level_up_front() {
    let bad = LogSettings { level: "warning".into(), ..LogSettings::default() };
    assert!(logging::build(&bad, std::io::sink).is_err());
}
