//! Benchmarks users run: `scriptd bench match` (the schedule index against the naive scan).

pub mod matching;
pub mod synth;
