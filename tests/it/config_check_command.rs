//! `scriptd check-config` run as a child process: exit codes (78 for a configuration error), masked output, one-line errors.

use std::path::Path;
use std::process::{Command, Output};

fn check_config(dir: &Path, vars: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_scriptd"));
    // A clean environment: no SCRIPTD__* from the developer's shell leaks in.
    cmd.env_clear().arg("--config").arg(dir).arg("check-config");
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.output().expect("run scriptd")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn a_valid_config_prints_toml_with_the_password_masked_and_exits_0() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("default.toml"), "[mqtt]\nusername = \"cam\"\n").expect("write");
    let out = check_config(
        dir.path(),
        &[("SCRIPTD__MQTT__PASSWORD", "s3cr3t-b0t-pa55"), ("SCRIPTD__MQTT__PORT", "1884")],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert!(stdout.contains("port = 1884"), "{stdout}");
    assert!(stdout.contains("password = \"********\""), "{stdout}");
    assert!(stdout.contains("# environment: SCRIPTD__MQTT__PASSWORD"), "{stdout}");
    assert!(!stdout.contains("s3cr3t-b0t-pa55") && !text(&out.stderr).contains("s3cr3t-b0t-pa55"));
}

#[test]
fn an_unknown_key_exits_78_with_one_line_naming_key_and_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("local.toml"), "[delivery]\nmax_in_fligth = 5\n")
        .expect("write");
    let out = check_config(dir.path(), &[]);
    assert_eq!(out.status.code(), Some(78), "EX_CONFIG");
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("delivery.max_in_fligth"), "{stderr}");
    assert!(stderr.contains(&dir.path().join("local.toml").display().to_string()), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn a_bad_env_value_exits_78_naming_the_variable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = check_config(dir.path(), &[("SCRIPTD__DELIVERY__MAX_IN_FLIGHT", "0")]);
    assert_eq!(out.status.code(), Some(78), "EX_CONFIG");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("delivery.max_in_flight"), "{stderr}");
    assert!(stderr.contains("SCRIPTD__DELIVERY__MAX_IN_FLIGHT"), "{stderr}");
}

#[test]
fn a_missing_config_directory_exits_78() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = check_config(&dir.path().join("absent"), &[]);
    assert_eq!(out.status.code(), Some(78), "EX_CONFIG");
    assert!(text(&out.stderr).contains("does not exist"), "{}", text(&out.stderr));
}

#[test]
fn scriptd_config_dir_is_used_without_the_option() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("local.toml"), "[mqtt]\nport = 1999\n").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_scriptd"))
        .env_clear()
        .env("SCRIPTD_CONFIG_DIR", dir.path())
        .current_dir(dir.path())
        .arg("check-config")
        .output()
        .expect("run scriptd");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("port = 1999"));
}

#[test]
fn the_output_is_itself_a_valid_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = check_config(dir.path(), &[("SCRIPTD__LOG__FORMAT", "json")]);
    assert!(out.status.success());
    let again = tempfile::tempdir().expect("tempdir");
    std::fs::write(again.path().join("local.toml"), &out.stdout).expect("write");
    let second = check_config(again.path(), &[]);
    assert!(second.status.success(), "{}", text(&second.stderr));
    let strip = |o: &Output| {
        text(&o.stdout).lines().filter(|l| !l.starts_with("# ")).collect::<Vec<_>>().join("\n")
    };
    assert_eq!(strip(&out), strip(&second));
}

#[test]
fn run_with_a_config_error_exits_78_before_starting_anything() {
    // systemd's RestartPreventExitStatus=78 relies on this: no restart loop on a bad key.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("local.toml"), "[mqtt]\nhots = \"broker\"\n").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_scriptd"))
        .env_clear()
        .arg("--config")
        .arg(dir.path())
        .arg("run")
        .output()
        .expect("run scriptd");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("mqtt.hots"), "{stderr}");
}

#[test]
fn a_usage_error_stays_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_scriptd"))
        .env_clear()
        .arg("--config")
        .arg(dir.path())
        .args(["check-config", "--no-such-flag"])
        .output()
        .expect("run scriptd");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}
