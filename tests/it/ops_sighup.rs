//! A real SIGHUP to this test process reloads the configuration. The process runs the whole
//! suite: the handler is installed before any signal is sent, so the default action
//! (terminate) can never hit it, and no other test listens for SIGHUP in-process.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use scriptd::ops::reload::Reloader;
use scriptd::ops::systemd::Notifier;
use scriptd::settings::Settings;
use tokio::signal::unix::{SignalKind, signal};

#[tokio::test]
async fn sighup_swaps_the_live_settings() {
    // Installs tokio's SIGHUP handler for the whole process before anything else.
    let _hold = signal(SignalKind::hangup()).expect("install SIGHUP handler");

    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("local.toml"), "[events]\nmax_age_seconds = 300\n")
        .expect("write");
    let (settings, _) = Settings::load_from(dir.path(), Vec::new()).expect("loads");
    let live = Arc::new(ArcSwap::from_pointee(settings.live_part()));
    let (notifier, sent) = Notifier::in_memory();
    let reloader = Reloader::new(dir.path(), settings, live.clone(), None, notifier);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(reloader.run_on_sighup(async move {
        let _ = stop_rx.await;
    }));

    std::fs::write(dir.path().join("local.toml"), "[events]\nmax_age_seconds = 5\n")
        .expect("write");
    let pid = std::process::id().to_string();
    let mut swapped = false;
    for _ in 0..100 {
        let status = std::process::Command::new("kill").args(["-HUP", &pid]).status();
        assert!(status.map(|s| s.success()).unwrap_or(false), "kill -HUP");
        tokio::time::sleep(Duration::from_millis(50)).await;
        if live.load().events.max_age_seconds == 5 {
            swapped = true;
            break;
        }
    }
    assert!(swapped, "SIGHUP did not reload");
    let msgs = sent.all();
    assert!(msgs.iter().any(|m| m.starts_with("RELOADING=1\nMONOTONIC_USEC=")), "{msgs:?}");
    assert!(msgs.iter().any(|m| m == "READY=1\nSTATUS=running\n"), "{msgs:?}");

    let _ = stop_tx.send(());
    let joined = task.await.expect("task");
    assert!(joined.is_ok());
}
