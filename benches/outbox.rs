//! The outbox's share of one occurrence that fires: the intake's write of its delivery
//! (one transaction per occurrence, as at a paced rate where batches hold one message) and
//! the dispatcher's record of the outcome (grouped, as `dispatch::worker` does: up to 10 ms
//! of outcomes per transaction, i.e. 10 at 1,000 occurrences per second).

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

use scriptd::store::outbox::{self, Handoff, NewDelivery, OutboxWriter, Recorded, RowRef, Target};
use scriptd::store::{Store, now_ms};

fn push(n: u64) -> NewDelivery {
    let id = format!("occ-{n}:7:42");
    NewDelivery {
        payload: format!(
            r#"{{"reaction":"show-camera-sidebar","delivery_id":"{id}","occurrence_id":"occ-{n}","camera_id":17,"occurred_at":"2026-12-04T10:00:00Z"}}"#
        ),
        id,
        occurrence_id: format!("occ-{n}"),
        script_id: 7,
        reaction: "show-camera-sidebar".into(),
        recipient: "42".into(),
        lane: String::new(),
        target: Target::Push { user_id: 42 },
    }
}

fn outbox_cycle(c: &mut Criterion) {
    let mut group = c.benchmark_group("outbox");
    for per_record in [1usize, 10, 100] {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let store = Store::migrate(&dir.path().join("scriptd.db")).expect("a new database");
        let handoff = Arc::new(Handoff::default());
        let mut writer = OutboxWriter::new(&store, handoff.clone()).expect("a connection");
        let mut conn = store.connect().expect("a connection");
        let mut n = 0u64;
        group.throughput(Throughput::Elements(per_record as u64));
        group.bench_function(BenchmarkId::new("enqueue_each_then_record", per_record), |b| {
            b.iter(|| {
                for _ in 0..per_record {
                    n += 1;
                    writer.enqueue(&[push(n)], now_ms()).expect("enqueued");
                }
                let outcomes: Vec<(RowRef, Recorded)> = handoff
                    .take(usize::MAX)
                    .into_iter()
                    .map(|row| (RowRef::Rowid(row.rowid), Recorded::Sent))
                    .collect();
                outbox::record(&mut conn, &outcomes, now_ms()).expect("recorded");
                black_box(outcomes.len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, outbox_cycle);
criterion_main!(benches);
