use super::*;

fn opts(events: usize, match_fraction: f64, cooldown_seconds: u32) -> PipelineBenchOptions {
    PipelineBenchOptions {
        broker: BrokerChoice::Embedded,
        scripts: 300,
        events,
        rate: None,
        qos: 1,
        match_fraction,
        cameras: 50,
        seed: 3,
        daemon_exe: PathBuf::from("scriptd"),
        daemon_config: String::new(),
        skip_ceiling: true,
        cooldown_seconds,
        database_url: None,
        instances: 1,
    }
}

#[test]
fn bench_expectation_applies_the_cooldown_per_script_and_camera() {
    let recipients: HashMap<i64, Vec<i64>> =
        [(1, vec![11]), (2, vec![12]), (3, vec![13, 14])].into();
    let stream: Vec<(&str, Combo)> = vec![
        ("o0", Combo::new(1, 5, 1000, &[1, 2])), // both fire
        ("o1", Combo::new(1, 5, 1030, &[1])),    // 30 s later: silenced
        ("o2", Combo::new(1, 6, 1030, &[1])),    // another camera: fires
        ("o3", Combo::new(1, 5, 1059, &[1, 2])), // 59 s: both silenced
        ("o4", Combo::new(1, 5, 1060, &[1, 2])), // 60 s: both fire again
        ("o5", Combo::new(2, 5, 1061, &[3])),    // script 3: fires, two users
        ("o6", Combo::new(2, 5, 1090, &[3])),    // silenced: two pushes
        ("o7", Combo::new(9, 7, 1100, &[])),     // unmatched
        ("o8", Combo::new(1, 5, 1000, &[2])),    // before the last firing: fires (as the intake)
        ("o9", Combo::new(1, 5, 1059, &[2])),    // 59 s after o8: silenced
    ];
    let run = |cooldown: u32, state: &mut HashMap<(i64, i64), (i64, String)>| {
        expect(stream.iter().map(|(id, c)| ((*id).to_owned(), c)), cooldown, &recipients, state)
    };
    let mut state = HashMap::new();
    let got = run(60, &mut state);
    assert_eq!(
        got.deliveries,
        ["o0:1:11", "o0:2:12", "o2:1:11", "o4:1:11", "o4:2:12", "o5:3:13", "o5:3:14", "o8:2:12"]
    );
    assert_eq!(got.suppressed, 6);
    assert_eq!(state[&(1, 5)], (1_060_000, "o4".to_owned()));
    assert_eq!(state[&(2, 5)], (1_000_000, "o8".to_owned()));
    // Without a cooldown every matched script pushes and no state is kept.
    let mut state = HashMap::new();
    let all = run(0, &mut state);
    assert_eq!((all.deliveries.len(), all.suppressed), (14, 0));
    assert!(state.is_empty());
    // A firing before the stream (the warm-up, 50 s before o0) silences script 1 on
    // camera 5 in o0; o1 then fires it, which silences it in o3 and o4.
    let mut state = HashMap::from([((1, 5), (950_000, "warm".to_owned()))]);
    let got = run(60, &mut state);
    assert_eq!(
        got.deliveries,
        ["o0:2:12", "o1:1:11", "o2:1:11", "o4:2:12", "o5:3:13", "o5:3:14", "o8:2:12"]
    );
    assert_eq!(got.suppressed, 7);
}

#[test]
fn bench_plan_is_in_time_order_and_repeats_matched_pairs() {
    // Event 1 on cameras 1-2 always matches script 10; event 2 on camera 3 matches
    // scripts 20 and 21 in even hours only; nothing else matches.
    let matches = |e: i64, c: i64, t: i64| match (e, c) {
        (1, 1 | 2) => vec![10],
        (2, 3) if (t / 3600) % 2 == 0 => vec![20, 21],
        _ => vec![],
    };
    let candidates: [(i64, &[i64]); 2] = [(1, &[1, 2]), (2, &[3])];
    let o = opts(1000, 0.2, 0);
    let (warm, plan) = plan_occurrences(&o, &candidates, matches).unwrap();
    assert!(warm.at <= synth::stream_start() - 86_400, "{warm:?}");
    assert_eq!(warm.scripts(), &matches(warm.event_id, warm.camera_id, warm.at)[..]);
    assert_eq!(plan.len(), 1000);
    assert!(plan.windows(2).all(|w| w[0].at < w[1].at), "occurred_at must increase");
    assert!(plan[0].at >= synth::stream_start());
    assert!(plan[999].at < synth::stream_start() + synth::STREAM_SECONDS);
    for c in &plan {
        assert_eq!(c.scripts(), &matches(c.event_id, c.camera_id, c.at)[..], "{c:?}");
    }
    let matched: Vec<&Combo> = plan.iter().filter(|c| c.n > 0).collect();
    assert_eq!(matched.len(), 200);
    assert!(plan[999].n > 0, "the last occurrence is matched");
    let repeats = matched
        .windows(2)
        .filter(|w| (w[0].event_id, w[0].camera_id) == (w[1].event_id, w[1].camera_id))
        .count();
    assert!(repeats >= 80, "{repeats} of 200 matched occurrences repeat the previous one");
}

#[test]
fn bench_cooldown_suppresses_the_repeats_of_the_same_stream() {
    // 4,000 occurrences, F = 0.5: matched ones 605 s apart; a 1,200 s cooldown silences
    // the second of most pairs. The stream is the same with and without the cooldown.
    let run = |cooldown: u32| {
        let dir = TempDir::new().unwrap();
        let p = prepare_database(&dir.path().join("bench.db"), &opts(4000, 0.5, cooldown));
        let p = p.unwrap();
        let e = expect(
            p.plan.iter().enumerate().map(|(i, c)| (format!("b-{i}"), c)),
            cooldown,
            &p.recipients,
            &mut HashMap::new(),
        );
        (p.plan.iter().map(|c| (c.event_id, c.camera_id, c.at)).collect::<Vec<_>>(), e)
    };
    let (plan, without) = run(0);
    let (plan_cd, with) = run(1200);
    assert_eq!(plan, plan_cd);
    assert_eq!(without.suppressed, 0);
    let all = without.deliveries.len() as u64;
    assert_eq!(with.deliveries.len() as u64 + with.suppressed, all);
    let share = with.suppressed as f64 / all as f64;
    assert!((0.3..0.6).contains(&share), "{} of {all} suppressed", with.suppressed);
    // Under a cooldown, the pushes sent are a subset of those without one.
    let sent: HashSet<&String> = without.deliveries.iter().collect();
    assert!(with.deliveries.iter().all(|d| sent.contains(d)));
}
