//! Arbitrary JSON as a script body through the validation the API uses
//! (`script::validate`). The first byte picks the configured zone, the rest is the body.
//! Validation returns `Ok` or `Err` and never panics; an error always names a key; a valid
//! body validates again to the same script when read back from its stored form (the store
//! keeps `input_to_body` as JSON text).
#![no_main]

use libfuzzer_sys::fuzz_target;

// Each target uses one of the checks.
#[allow(dead_code)]
#[path = "../checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| {
    let _ = checks::check_validate(data);
});
