//! The systemd unit: required directives, and `systemd-analyze security` rates it ≤ 2.0
//! (needs systemd-analyze: Debian's `systemd`, which `scripts/test` installs).

use crate::support::tools;
use std::path::Path;
use std::process::Command;

fn unit_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/systemd/scriptd.service")
}

#[test]
fn the_unit_has_the_required_directives() {
    let text = std::fs::read_to_string(unit_path()).expect("read unit");
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    for directive in [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "WatchdogSec=30s",
        "Restart=on-failure",
        "RestartPreventExitStatus=78",
        "ExecStart=/usr/bin/scriptd --config /etc/scriptd run",
        "StartLimitIntervalSec=600",
        "StartLimitBurst=5",
        "User=scriptd",
        "StateDirectory=scriptd",
        "ConfigurationDirectory=scriptd",
        "ReadOnlyPaths=/etc/scriptd",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter=@system-service",
        "CapabilityBoundingSet=",
    ] {
        assert!(lines.contains(&directive), "missing {directive}");
    }
}

#[test]
fn systemd_analyze_rates_the_unit_2_0_or_lower() {
    let out = match Command::new(tools::require("systemd-analyze"))
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(unit_path())
        .output()
    {
        Ok(out) => out,
        Err(e) => panic!("systemd-analyze cannot run: {e}"),
    };
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let level = text
        .lines()
        .find_map(|l| l.split("Overall exposure level for scriptd.service:").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok());
    match level {
        Some(level) => assert!(level <= 2.0, "exposure {level}:\n{text}"),
        None => panic!(
            "systemd-analyze gave no exposure level (it needs systemd 250 or later for --offline):\n{text}"
        ),
    }
}

/// The unit's `LimitNOFILE=` holds what the packaged configuration's caps need
/// (`scriptd::api::limits`), with room to raise them.
#[test]
fn the_unit_sets_a_descriptor_limit_that_fits_the_packaged_caps() {
    let text = std::fs::read_to_string(unit_path()).expect("read unit");
    let limit: u64 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("LimitNOFILE="))
        .expect("the unit sets LimitNOFILE=")
        .parse()
        .expect("LimitNOFILE= is one number");
    let packaged = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/deb");
    let (settings, _) =
        scriptd::settings::Settings::load_from(&packaged, Vec::<(String, String)>::new())
            .expect("the packaged configuration loads");
    let needed = scriptd::api::limits::descriptors_needed(&settings);
    assert!(limit >= needed, "LimitNOFILE={limit} is below the {needed} the packaged caps need");
    assert!(
        limit >= 4 * needed,
        "LimitNOFILE={limit} leaves no room to raise api.max_connections (needs {needed})"
    );
}
