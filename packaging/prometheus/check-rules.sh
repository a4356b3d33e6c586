#!/usr/bin/env bash
# Checks the alerting rules with Prometheus' own tool (Debian package `prometheus`):
# syntax and PromQL (`promtool check rules`), then the unit tests that make each alert fire
# (`promtool test rules`).
set -euo pipefail
cd "$(dirname "$0")"
command -v promtool >/dev/null 2>&1 || { echo "promtool is missing: apt-get install prometheus" >&2; exit 1; }
promtool check rules scriptd.rules.yml
promtool test rules scriptd.rules.test.yml
