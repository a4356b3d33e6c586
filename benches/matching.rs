//! Schedule matching: the index against the naive scan on the same synthetic inputs
//! (the generator of `scriptd bench match`), for 1k, 10k and 100k scripts over 1,000 cameras.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

use scriptd::bench::synth;
use scriptd::index::rules::naive_matches;
use scriptd::index::{Matches, ScheduleIndex};

const CAMERAS: i64 = 1000;
const EVENTS: usize = 1000;

fn matching(c: &mut Criterion) {
    let mut group = c.benchmark_group("match");
    group.throughput(Throughput::Elements(EVENTS as u64));
    for n in [1_000usize, 10_000, 100_000] {
        let rules = synth::rules_streamed(n, CAMERAS, 1).expect("synthetic scripts are valid");
        let occurrences = synth::occurrences(EVENTS, CAMERAS, 1);
        let index = ScheduleIndex::build(rules.clone());
        let mut m = Matches::new();
        group.bench_with_input(BenchmarkId::new("indexed", n), &occurrences, |b, occ| {
            b.iter(|| {
                let mut found = 0;
                for o in occ {
                    index.matches_into(o.event_id, o.camera_id, o.at, &mut m);
                    found += m.positions.len();
                }
                black_box(found)
            })
        });
        // The naive scan is slow by design: sample it on 1k and 10k scripts only.
        if n <= 10_000 {
            group.bench_with_input(BenchmarkId::new("naive", n), &occurrences, |b, occ| {
                b.iter(|| {
                    let mut found = 0;
                    for o in occ {
                        let at = chrono::DateTime::from_timestamp(o.at, 0).unwrap_or_default();
                        found += naive_matches(&rules, o.event_id, o.camera_id, at).len();
                    }
                    black_box(found)
                })
            });
        }
    }
    group.finish();

    let mut build = c.benchmark_group("build");
    build.sample_size(10);
    for n in [1_000usize, 10_000, 100_000] {
        let rules = synth::rules_streamed(n, CAMERAS, 1).expect("synthetic scripts are valid");
        build.bench_with_input(BenchmarkId::from_parameter(n), &rules, |b, rules| {
            b.iter(|| black_box(ScheduleIndex::build(rules.clone())))
        });
    }
    build.finish();
}

criterion_group!(benches, matching);
criterion_main!(benches);
