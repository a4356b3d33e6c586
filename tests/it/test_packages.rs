//! `scripts/test-packages` (what `scripts/test` installs) and the tests agree: every program
//! a test starts by name is listed, and every listed program is required by some test.
//! Programs a test starts without the list: the base system's `kill` and `sh`, and scriptd.
//! Also: a listed path pattern resolves to a program that runs (PostgreSQL's `initdb`, which
//! is not on `PATH`: Debian keeps it in `/usr/lib/postgresql/<major>/bin`).

use std::collections::BTreeSet;
use std::path::Path;

use crate::support::tools;

/// Programs every Debian system has (coreutils, procps, dash): not listed.
const BASE_SYSTEM: &[&str] = &["kill", "sh"];

/// Every `.rs` file under `dir`, with its text.
fn sources(dir: &Path, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).expect("read tests/") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).expect("read a test source");
            out.push((path.display().to_string(), text));
        }
    }
}

/// The string literals passed right after `call` in `text` (`call` ends with `("`).
fn literal_args(text: &str, call: &str) -> Vec<String> {
    text.match_indices(call)
        .filter_map(|(at, _)| {
            let rest = &text[at + call.len()..];
            rest.find('"').map(|end| rest[..end].to_string())
        })
        .collect()
}

/// (programs started by a literal name, programs passed to `tools::require`) in `tests/`,
/// the helper itself excluded.
fn used() -> (BTreeSet<String>, BTreeSet<String>) {
    let mut files = Vec::new();
    sources(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests"), &mut files);
    let (mut started, mut required) = (BTreeSet::new(), BTreeSet::new());
    for (path, text) in &files {
        if path.ends_with("support/tools.rs") {
            continue;
        }
        started.extend(literal_args(text, "Command::new(\""));
        required.extend(literal_args(text, "require(\""));
    }
    (started, required)
}

#[test]
fn every_program_the_tests_start_is_listed() {
    let listed: BTreeSet<&str> = tools::listed().iter().map(|e| e.name()).collect();
    let (started, required) = used();
    for name in &started {
        assert!(
            BASE_SYSTEM.contains(&name.as_str()),
            "a test runs `Command::new(\"{name}\")`: use tools::require(\"{name}\") and list \
             it in scripts/test-packages with its Debian package"
        );
    }
    for name in &required {
        assert!(
            listed.contains(name.as_str()),
            "tools::require(\"{name}\") but scripts/test-packages does not list `{name}`"
        );
    }
}

#[test]
fn every_listed_program_is_required_by_a_test() {
    let (_, required) = used();
    for entry in tools::listed() {
        assert!(
            required.contains(entry.name()),
            "scripts/test-packages lists `{}` (Debian `{}`) but no test requires it",
            entry.probe,
            entry.package
        );
    }
}

#[test]
fn a_path_pattern_resolves_to_the_newest_install_that_runs() {
    let initdb = tools::require("initdb");
    assert!(initdb.starts_with("/usr/lib/postgresql"), "{}", initdb.display());
    let out = std::process::Command::new(&initdb).arg("--version").output().expect("run initdb");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("PostgreSQL"), "{}: {text}", initdb.display());
}

#[test]
fn an_unlisted_program_is_a_failure_that_says_so() {
    let name = ["no", "such", "tool"].join("-");
    let err = std::panic::catch_unwind(|| tools::require(&name)).expect_err("panics");
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("not in scripts/test-packages"), "{msg}");
}
