//! The programs the tests run besides Rust, from one list: `scripts/test-packages` (program,
//! Debian package), the same list `scripts/test` installs from.
//!
//! [`require`] finds a listed program or fails the test with a message naming the Debian
//! package, never a skip. A program the tests need that is not in the list is a failure too:
//! add a line to `scripts/test-packages`.

use std::path::{Path, PathBuf};

/// `scripts/test-packages`, compiled in.
pub const LIST: &str = include_str!("../../scripts/test-packages");

/// One line of [`LIST`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listed {
    /// A command name, or an absolute path where `*` matches within one component.
    pub probe: &'static str,
    /// The Debian package that installs it.
    pub package: &'static str,
}

impl Listed {
    /// The name tests pass to [`require`]: the probe's last path component.
    pub fn name(&self) -> &'static str {
        self.probe.rsplit('/').next().unwrap_or(self.probe)
    }
}

/// Every program of [`LIST`] (comments and blank lines skipped).
pub fn listed() -> Vec<Listed> {
    LIST.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let mut cols = l.split_whitespace();
            let probe = cols.next().unwrap_or_default();
            let package = cols
                .next()
                .unwrap_or_else(|| panic!("scripts/test-packages: `{l}` names no Debian package"));
            Listed { probe, package }
        })
        .collect()
}

/// The path of `tool`, a program listed in `scripts/test-packages` by name (`"mosquitto"`,
/// `"chromedriver"`, `"initdb"` for `/usr/lib/postgresql/*/bin/initdb`). A command is looked
/// up on `PATH`, then `/usr/sbin` and `/sbin`; a path pattern takes its highest match (the newest
/// PostgreSQL major). Panics when `tool` is not listed, or with
/// "`tool` is not installed; Debian package `pkg` (scripts/test installs it)" when missing.
pub fn require(tool: &str) -> PathBuf {
    let entry = listed().into_iter().find(|e| e.name() == tool).unwrap_or_else(|| {
        panic!("`{tool}` is not in scripts/test-packages: add it with its Debian package")
    });
    find(entry.probe).unwrap_or_else(|| {
        panic!(
            "`{tool}` is not installed; Debian package `{}` (scripts/test installs it)",
            entry.package
        )
    })
}

/// Where `probe` is on this machine, if anywhere.
fn find(probe: &str) -> Option<PathBuf> {
    if probe.starts_with('/') {
        return expand(Path::new("/"), probe.trim_start_matches('/').split('/'));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(probe))
        .find(|p| is_executable(p))
}

/// The last existing match of the components under `base` (`*` within a component).
fn expand<'a>(base: &Path, mut rest: impl Iterator<Item = &'a str> + Clone) -> Option<PathBuf> {
    let Some(part) = rest.next() else {
        return base.exists().then(|| base.to_path_buf());
    };
    let Some((prefix, suffix)) = part.split_once('*') else {
        return expand(&base.join(part), rest);
    };
    let mut names: Vec<String> = std::fs::read_dir(base)
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.len() >= prefix.len() + suffix.len())
        .filter(|n| n.starts_with(prefix) && n.ends_with(suffix))
        .collect();
    // Numbers sort by length first: PostgreSQL 15 after 9.
    names.sort_by(|a, b| (a.len(), a).cmp(&(b.len(), b)));
    names.iter().rev().find_map(|n| expand(&base.join(n), rest.clone()))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
