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

/// `systemd-analyze security --offline=yes` on the unit file at `path`: its exposure level.
fn exposure(path: &Path, name: &str) -> f64 {
    let out = match Command::new(tools::require("systemd-analyze"))
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(path)
        .output()
    {
        Ok(out) => out,
        Err(e) => panic!("systemd-analyze cannot run: {e}"),
    };
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let marker = format!("Overall exposure level for {name}:");
    text.lines()
        .find_map(|l| l.split(marker.as_str()).nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok())
        .unwrap_or_else(|| {
            panic!(
                "systemd-analyze gave no exposure level (it needs systemd 250 or later for --offline):\n{text}"
            )
        })
}

#[test]
fn systemd_analyze_rates_the_unit_2_0_or_lower() {
    let level = exposure(&unit_path(), "scriptd.service");
    assert!(level <= 2.0, "exposure {level}");
}

/// The template unit for several instances (`scriptd generate-assets`) is rated like the
/// unit it is derived from, as an instance.
#[test]
fn the_template_unit_is_generated_and_rated_2_0_or_lower() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_scriptd"))
        .arg("generate-assets")
        .arg(dir.path())
        .output()
        .expect("run scriptd generate-assets");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(dir.path().join("systemd/scriptd@.service"))
        .expect("generate-assets writes systemd/scriptd@.service");
    assert!(text.contains("EnvironmentFile=/etc/scriptd/instance-%i.env"), "{text}");
    let instance = dir.path().join("scriptd@1.service");
    std::fs::write(&instance, &text).expect("write the instance's unit");
    let level = exposure(&instance, "scriptd@1.service");
    assert!(level <= 2.0, "exposure {level}");
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
