//! Benchmarks users run: `scriptd bench match` (the schedule index against the naive scan)
//! and `scriptd bench pipeline` (the whole daemon through a broker, against the broker's
//! own ceiling).

pub mod matching;
pub mod pipeline;
pub mod synth;
