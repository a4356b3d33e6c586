//! Differential fuzzer for timetables. The first byte picks the configured zone, the rest is
//! JSON. When it parses, the reference evaluation (`Timetable::is_active_at`/`explain_at`)
//! must not panic and must agree with itself, and the schedule index built from it must give
//! the same answer as the naive matcher at instants around the 2026 DST changes and at an
//! instant taken from the input.
#![no_main]

use libfuzzer_sys::fuzz_target;

// Each target uses one of the checks.
#[allow(dead_code)]
#[path = "../checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| {
    checks::check_timetable(data);
});
