#!/usr/bin/env bash
# Builds target/debian/scriptd_<version>-1_<arch>.deb: the release binary, the man pages and
# shell completions generated from the binary's own CLI definition, then cargo-deb
# (`cargo install cargo-deb`) with the metadata in Cargo.toml. Prints the .deb's path.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo-deb >/dev/null 2>&1 || {
  echo "cargo-deb is missing: cargo install cargo-deb" >&2
  exit 1
}
target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
cargo build --release --locked >&2
rm -rf "$target_dir/release/assets"
"$target_dir/release/scriptd" generate-assets "$target_dir/release/assets" >&2
# Debian policy: man pages compressed (cargo-deb leaves files under target/release alone).
gzip -9n "$target_dir"/release/assets/man/*.1
# cargo-deb prints the path of the package it wrote as its last line. --strip: the release
# profile keeps line tables for local backtraces; the package ships without them.
cargo deb --no-build --strip | tail -n 1
