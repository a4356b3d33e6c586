//! Arbitrary bytes as an MQTT payload: `occurrence::decode` returns `Ok` or `Err`, never
//! panics, and an `Ok` keeps the decoder's documented invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;

// Each target uses one of the checks.
#[allow(dead_code)]
#[path = "../checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| {
    checks::check_decode(data);
});
