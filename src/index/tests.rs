use std::sync::Arc;

use serde_json::json;

use super::*;
use crate::index::rules::naive_matches;
use crate::timetable::compile::push_wrapped;
use crate::timetable::zone::WEEK;
use crate::timetable::{ParseContext, parse_timetable};

fn rule(id: i64, event: i64, cameras: Option<Vec<i64>>, tt: serde_json::Value) -> Rule {
    let ctx = ParseContext { timezone: chrono_tz::Europe::Berlin };
    Rule {
        script_id: id,
        event_id: event,
        cameras,
        enabled: true,
        timetable: Arc::new(parse_timetable(&tt, &ctx).unwrap()),
    }
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().into()
}

#[test]
fn wrapped_spans_split_at_the_week_end() {
    let mut v = Vec::new();
    push_wrapped(&mut v, WEEK - 10, WEEK + 5);
    assert_eq!(v, [((WEEK - 10) as u32, WEEK as u32), (0, 5)]);
    v.clear();
    push_wrapped(&mut v, -5, 5);
    assert_eq!(v, [((WEEK - 5) as u32, WEEK as u32), (0, 5)]);
}

#[test]
fn event_camera_and_wildcard() {
    let all_day = json!({"days": [{"type": "same_every_day", "from": "00:00Z", "to": "23:59Z"}]});
    let rules = vec![
        rule(1, 10, Some(vec![1, 2]), all_day.clone()),
        rule(2, 10, None, all_day.clone()),
        rule(3, 11, None, all_day.clone()),
        Rule { enabled: false, ..rule(4, 10, None, all_day) },
    ];
    let index = ScheduleIndex::build(rules.clone());
    let t = at("2026-11-27T12:00:00Z");
    assert_eq!(index.matches(10, 1, t), vec![1, 2]);
    assert_eq!(index.matches(10, 3, t), vec![2]);
    assert_eq!(index.matches(11, 1, t), vec![3]);
    assert_eq!(index.matches(12, 1, t), Vec::<i64>::new());
    assert_eq!(index.enabled(), 3);
    assert_eq!(naive_matches(&rules, 10, 1, t), vec![1, 2]);
}

#[test]
fn intervals_across_days_long_and_far_apart_agree_with_the_naive_scan() {
    let iv = |from: &str, to: &str| json!({"from": from, "to": to});
    let tts = [
        // Several UTC days, ending exactly at midnight.
        json!({"intervals": [iv("2026-11-27 22:00:00Z", "2026-11-30 00:00:00Z")]}),
        // Starting exactly at midnight, one second long.
        json!({"intervals": [iv("2026-11-28 00:00:00Z", "2026-11-28 00:00:01Z")]}),
        // Longer than LONG_DAYS.
        json!({"intervals": [iv("2026-10-01 00:00:00Z", "2026-12-15 12:00:00Z")]}),
        // Years apart: the table's intervals are scanned, not bucketed.
        json!({"intervals": [iv("2020-01-01 10:00:00Z", "2020-01-01 11:00:00Z"),
                             iv("2026-11-28 10:00:00+05:00", "2026-11-28 12:00:00+05:00")]}),
        // Days and an interval: found once.
        json!({"days": [{"type": "saturday", "from": "00:00Z", "to": "23:59Z"}],
               "intervals": [iv("2026-11-28 06:00:00Z", "2026-11-29 06:00:00Z")]}),
    ];
    // The far-apart pair alone on camera 2; the others on camera 1 and on every camera.
    let rules: Vec<Rule> = tts
        .iter()
        .enumerate()
        .flat_map(|(i, tt)| match i {
            3 => vec![rule(4, 1, Some(vec![2]), tt.clone())],
            _ => vec![
                rule(i as i64 + 1, 1, Some(vec![1]), tt.clone()),
                rule(i as i64 + 11, 1, None, tt.clone()),
            ],
        })
        .collect();
    let index = ScheduleIndex::build(rules.clone());
    let near = &index.by_camera[&(1, 1)].intervals;
    assert_eq!(near.day_at.len(), 4, "bucketed from 2026-11-27 to 2026-11-29");
    let far = &index.by_camera[&(1, 2)];
    assert!(far.intervals.day_at.is_empty());
    assert_eq!(far.rare.as_ref().map(|r| r.long.len()), Some(2));
    let start = at("2026-11-27T00:00:00Z").timestamp();
    for t in (start..start + 4 * DAY).step_by(1800).chain([
        at("2026-11-28T00:00:00Z").timestamp(),
        at("2026-11-28T00:00:01Z").timestamp(),
        at("2026-11-29T23:59:59Z").timestamp(),
        at("2026-11-30T00:00:00Z").timestamp(),
        at("2020-01-01T10:30:00Z").timestamp(),
        at("2026-12-15T11:59:59Z").timestamp(),
    ]) {
        let t = DateTime::<Utc>::from_timestamp(t, 0).unwrap();
        for camera in [1, 2] {
            let want = naive_matches(&rules, 1, camera, t);
            assert_eq!(index.matches(1, camera, t), want, "camera {camera} at {t}");
        }
    }
}

#[test]
fn equal_reference_timetables_are_kept_once_and_shared_with_the_previous_index() {
    // Berlin wall clock: kept for the repeated hour.
    let named = json!({"days": [{"type": "weekdays", "from": "08:00", "to": "18:00"}]});
    let fixed = json!({"days": [{"type": "weekdays", "from": "08:00Z", "to": "18:00Z"}]});
    let rules = |n: i64| -> Vec<Rule> {
        (1..=n)
            .map(|i| {
                rule(i, 1, Some(vec![i]), if i % 2 == 0 { named.clone() } else { fixed.clone() })
            })
            .collect()
    };
    let kept = |index: &ScheduleIndex| -> Vec<*const Timetable> {
        index.reference.iter().flatten().map(Arc::as_ptr).collect()
    };
    let first = ScheduleIndex::build(rules(6));
    let ptrs = kept(&first);
    assert_eq!(ptrs.len(), 3, "only the Berlin rules keep their timetable");
    assert!(ptrs.iter().all(|&p| p == ptrs[0]), "equal timetables are kept once");
    let mut builder = IndexBuilder::with_capacity(8);
    builder.share_with(&first);
    for r in rules(8) {
        builder.add(&r);
    }
    let second = builder.finish();
    assert!(kept(&second).iter().all(|&p| p == ptrs[0]), "shared with the previous index");
    let t = at("2026-11-27T10:00:00Z");
    assert_eq!(second.matches(1, 8, t), vec![8]);
    assert_eq!(second.matches(1, 7, t), vec![7]);
}

#[test]
fn large_tables_use_slots_and_agree_with_the_naive_scan() {
    let mut rules = Vec::new();
    for i in 0..300 {
        let from = format!("{:02}:{:02}", (i * 7) % 24, (i * 13) % 60);
        let to = format!("{:02}:{:02}", (i * 11 + 5) % 24, (i * 17) % 60);
        let kind = ["same_every_day", "weekdays", "weekends", "tuesday"][i % 4];
        let tt = if from == to {
            json!({"days": [{"type": "weekdays", "from": "08:00", "to": "09:00"}]})
        } else {
            json!({"days": [{"type": kind, "from": from, "to": to}],
                   "intervals": if i % 5 == 0 { json!([{"from": "2026-11-27 10:00:00Z", "to": "2026-11-28 10:00:00Z"}]) } else { json!([]) }})
        };
        rules.push(rule(i as i64, 1, None, tt));
    }
    let index = ScheduleIndex::build(rules.clone());
    assert!(index.by_event[&1].frames().any(|f| f.slots.is_some()));
    let start = at("2026-11-23T00:00:00Z").timestamp();
    for k in 0..2000 {
        let t = DateTime::<Utc>::from_timestamp(start + k * 613, 0).unwrap();
        assert_eq!(index.matches(1, 5, t), naive_matches(&rules, 1, 5, t), "at {t}");
    }
}

/// Large holiday groups: the members' day spans are masked in slot bitsets and their
/// holiday windows are read from slot bitsets of their own; the answer equals the naive
/// scan on and off the holidays, over the autumn DST change in Berlin.
#[test]
fn large_holiday_groups_agree_with_the_naive_scan() {
    let mut rules = Vec::new();
    for i in 0..400usize {
        let hour = |k: usize| format!("{:02}:{:02}", k % 24, (k * 13) % 60);
        let (from, to) = (hour(i * 7), hour(i * 11 + 5));
        let (from, to) = if from == to { ("08:00".into(), "09:00".into()) } else { (from, to) };
        // Fixed offsets and the Berlin wall clock, in days and in holiday windows.
        let zone = if i % 3 == 0 { "+02:00" } else { "" };
        let kind = ["same_every_day", "weekdays", "weekends", "sunday"][i % 4];
        let mut tt = json!({"days": [{"type": kind, "from": format!("{from}{zone}"),
                                      "to": format!("{to}{zone}")}]});
        if i % 5 == 0 {
            tt["intervals"] =
                json!([{"from": "2026-10-25 10:00:00Z", "to": "2026-10-26 03:00:00Z"}]);
        }
        if i % 4 != 3 {
            let dates = [
                json!([{"from": "2026-10-25", "to": "2026-10-26"}]),
                json!([{"from": "2026-10-27"}, {"from": "2026-10-31"}]),
            ][i % 2]
                .clone();
            let windows = match i % 3 {
                0 => json!([]),
                1 => json!([{"from": "22:00", "to": "06:00"}]),
                _ => json!([{"from": format!("09:00{zone}"), "to": format!("16:00{zone}"),
                             "breaks": [{"from": format!("12:00{zone}"), "to": format!("13:00{zone}")}]}]),
            };
            tt["holidays"] = json!({"dates": dates, "windows": windows});
        }
        rules.push(rule(i as i64, 1, None, tt));
    }
    let index = ScheduleIndex::build(rules.clone());
    let groups = index.by_event[&1].holidays.as_deref().unwrap();
    // Two sets of dates, each read in two zones (inline dates are in the script's zone).
    assert_eq!(groups.len(), 4);
    assert!(groups.iter().any(|g| g.windows.iter().any(|f| f.slots.is_some())));
    let start = at("2026-10-22T00:00:00Z").timestamp();
    let mut on_holiday = 0;
    for k in 0..3000 {
        let t = DateTime::<Utc>::from_timestamp(start + k * 331, 0).unwrap();
        on_holiday += usize::from(spans_hold(&index.holidays, t.timestamp()));
        assert_eq!(index.matches(1, 5, t), naive_matches(&rules, 1, 5, t), "at {t}");
    }
    assert!(on_holiday > 500, "{on_holiday} queries on a holiday");
}
