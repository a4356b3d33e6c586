#!/bin/sh
# Runs one fuzz target at the lowest CPU priority, seeded from fuzz/seeds/TARGET.
#
#   fuzz/run.sh TARGET [SECONDS]      (default 600)
#
# The corpus grows in fuzz/corpus/TARGET, crashes land in fuzz/artifacts/TARGET, the log in
# fuzz/artifacts/TARGET.log (all ignored by git). Works on stable Rust via RUSTC_BOOTSTRAP;
# no sanitizer (the code under test is safe Rust: panics, overflows with debug assertions
# on, timeouts and out-of-memory are what we look for).
set -eu
cd "$(dirname "$0")/.."
target=$1
secs=${2:-600}
mkdir -p "fuzz/corpus/$target" "fuzz/artifacts/$target"
RUSTC_BOOTSTRAP=1 nice -n 19 cargo fuzz run -O -a -s none "$target" \
    "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
    -dict=fuzz/dicts/scriptd.dict -print_final_stats=1 \
    >"fuzz/artifacts/$target.log" 2>&1
