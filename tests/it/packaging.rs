//! What the Debian package ships, checked without building it: the generated man pages and
//! completions, and the packaged configuration files accepted by `check-config`. The package
//! itself is installed and run under systemd by `packaging/test-deb.sh` (root).

use std::path::Path;
use std::process::Command;

fn scriptd() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_scriptd"));
    cmd.env_clear();
    cmd
}

#[test]
fn generate_assets_writes_man_pages_and_completions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = scriptd().arg("generate-assets").arg(dir.path()).output().expect("run scriptd");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let man = dir.path().join("man");
    let mut pages: Vec<String> = std::fs::read_dir(&man)
        .expect("man folder")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    pages.sort();
    for page in ["scriptd.1", "scriptd-run.1", "scriptd-check-config.1", "scriptd-users-add.1"] {
        assert!(pages.iter().any(|p| p == page), "{page} missing from {pages:?}");
    }
    assert!(
        !pages.iter().any(|p| p.contains("help") || p.contains("generate-assets")),
        "help and hidden commands get no page: {pages:?}"
    );
    let top = std::fs::read_to_string(man.join("scriptd.1")).expect("scriptd.1");
    assert!(top.starts_with(".ie") || top.contains(".TH scriptd 1"), "roff: {top:.200}");
    assert!(top.contains("check\\-config"), "lists the subcommands");
    let completions = dir.path().join("completions");
    for (file, needle) in [
        ("scriptd.bash", "check-config"),
        ("_scriptd", "check-config"),
        ("scriptd.fish", "check-config"),
    ] {
        let text = std::fs::read_to_string(completions.join(file)).expect(file);
        // (clap_complete also completes the hidden generate-assets; harmless.)
        assert!(text.contains(needle), "{file} lacks {needle}");
    }
}

#[test]
fn the_packaged_configuration_is_valid_with_the_embedded_broker_off() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().expect("tempdir");
    for file in ["default.toml", "local.toml"] {
        std::fs::copy(root.join("packaging/deb").join(file), dir.path().join(file)).expect(file);
    }
    let out = scriptd().arg("--config").arg(dir.path()).arg("check-config").output().expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("embedded_broker = false"), "{stdout}");
    assert!(stdout.contains("path = \"/var/lib/scriptd/scriptd.db\""), "{stdout}");
    assert!(stdout.contains("format = \"json\""), "{stdout}");
}
