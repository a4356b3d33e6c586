use super::*;

fn d(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

fn crlf(s: &str) -> String {
    s.lines().map(|l| format!("{l}\r\n")).collect()
}

/// The shape public-holiday feeds publish (calendar apps' exports): CRLF, `X-` properties,
/// a `VTIMEZONE`, folded lines, `VALUE=DATE`, two events on one day, a yearly rule.
fn feed() -> String {
    crlf(
        "BEGIN:VCALENDAR
PRODID:-//Example//Public Holidays//EN
VERSION:2.0
CALSCALE:GREGORIAN
METHOD:PUBLISH
X-WR-CALNAME:Holidays in Russia
X-WR-TIMEZONE:Asia/Yekaterinburg
BEGIN:VTIMEZONE
TZID:Asia/Yekaterinburg
BEGIN:STANDARD
TZOFFSETFROM:+0500
TZOFFSETTO:+0500
TZNAME:+05
DTSTART:19700101T000000
END:STANDARD
END:VTIMEZONE
BEGIN:VEVENT
DTSTART;VALUE=DATE:20261231
DTEND;VALUE=DATE:20270109
DTSTAMP:20261101T000000Z
UID:20261231_newyear@example.org
CLASS:PUBLIC
CREATED:20250101T000000Z
DESCRIPTION:Public holiday. To hide observances\\, go to the calendar's sett
 ings.
SUMMARY:New Year
 Holidays
TRANSP:TRANSPARENT
X-MICROSOFT-CDO-ALLDAYEVENT:TRUE
END:VEVENT
BEGIN:VEVENT
DTSTART;VALUE=DATE:20270223
DTEND;VALUE=DATE:20270224
UID:20270223_a@example.org
SUMMARY:Defender of the Fatherland Day
END:VEVENT
BEGIN:VEVENT
DTSTART;VALUE=DATE:20270223
UID:20270223_b@example.org
SUMMARY:Another observance\\, same day
END:VEVENT
BEGIN:VEVENT
DTSTART;VALUE=DATE:20200501
DTEND;VALUE=DATE:20200502
RRULE:FREQ=YEARLY;BYMONTH=5;BYMONTHDAY=1
EXDATE;VALUE=DATE:20280501
UID:mayday@example.org
SUMMARY:Spring and Labour Day
END:VEVENT
BEGIN:VEVENT
DTSTART;VALUE=DATE:20270612
DTEND;VALUE=DATE:20270613
STATUS:CANCELLED
UID:cancelled@example.org
SUMMARY:Moved
END:VEVENT
END:VCALENDAR",
    )
}

#[test]
fn a_public_holiday_feed() {
    let dates = import_dates(&feed(), d("2026-12-07")).unwrap();
    let ny = &dates[0];
    assert_eq!((ny.from, ny.to), (d("2026-12-31"), d("2027-01-08")), "DTEND is exclusive");
    assert_eq!(ny.title.as_deref(), Some("New YearHolidays"), "a folded line is unfolded");
    assert_eq!(dates[1].from, d("2027-02-23"));
    assert_eq!(dates[2].from, d("2027-02-23"), "two events on one day are both kept");
    assert_eq!(dates[2].to, d("2027-02-23"), "no DTEND: one day");
    assert_eq!(dates[2].title.as_deref(), Some("Another observance, same day"));
    let may: Vec<NaiveDate> = dates
        .iter()
        .filter(|r| r.title.as_deref() == Some("Spring and Labour Day"))
        .map(|r| r.from)
        .collect();
    // From the year before the import (2025) to five years after (2031), without the EXDATE.
    let want: Vec<NaiveDate> =
        [2025, 2026, 2027, 2029, 2030, 2031].iter().map(|y| d(&format!("{y}-05-01"))).collect();
    assert_eq!(may, want);
    assert!(
        dates.iter().all(|r| r.title.as_deref() != Some("Moved")),
        "cancelled events are skipped"
    );
    assert_eq!(dates.len(), 3 + want.len());
}

#[test]
fn lf_only_files_and_a_leap_day_rule() {
    let text = "BEGIN:VCALENDAR\nVERSION:2.0\nBEGIN:VEVENT\nUID:leap\nDTSTART;VALUE=DATE:20240229\nRRULE:FREQ=YEARLY;COUNT=3\nSUMMARY:Leap\nEND:VEVENT\nEND:VCALENDAR\n";
    let dates = import_dates(text, d("2026-01-01")).unwrap();
    // Occurrences: 2024, 2028, 2032 (COUNT=3); 2032 is past 2031 and 2024 before 2025.
    assert_eq!(dates.iter().map(|r| r.from).collect::<Vec<_>>(), vec![d("2028-02-29")]);
}

#[test]
fn timed_events_and_other_rules_name_the_uid() {
    let text = crlf(
        "BEGIN:VCALENDAR
VERSION:2.0
BEGIN:VEVENT
UID:ok@x
DTSTART;VALUE=DATE:20270101
END:VEVENT
BEGIN:VEVENT
UID:meeting@x
DTSTART;TZID=Europe/Berlin:20270104T090000
DTEND;TZID=Europe/Berlin:20270104T100000
SUMMARY:Standup
END:VEVENT
BEGIN:VEVENT
UID:weekly@x
DTSTART;VALUE=DATE:20270105
RRULE:FREQ=WEEKLY;BYDAY=TU
END:VEVENT
BEGIN:VEVENT
UID:thanksgiving@x
DTSTART;VALUE=DATE:20261126
RRULE:FREQ=YEARLY;BYMONTH=11;BYDAY=4TH
END:VEVENT
END:VCALENDAR",
    );
    let e = import_dates(&text, d("2026-12-07")).unwrap_err();
    let one = |k: &str| e.get(k).unwrap_or_default().join(" ");
    assert!(!e.contains("events.0"));
    assert!(
        one("events.1").contains("UID meeting@x") && one("events.1").contains("timed event"),
        "{}",
        one("events.1")
    );
    assert!(
        one("events.2").contains("UID weekly@x") && one("events.2").contains("FREQ=WEEKLY"),
        "{}",
        one("events.2")
    );
    assert!(one("events.3").contains("UID thanksgiving@x"), "{}", one("events.3"));
}

#[test]
fn too_many_events_are_refused_before_parsing() {
    let mut text = String::from("BEGIN:VCALENDAR\r\nVERSION:2.0\r\n");
    for i in 0..100_000 {
        text.push_str(&format!(
            "BEGIN:VEVENT\r\nUID:{i}\r\nDTSTART;VALUE=DATE:20270101\r\nEND:VEVENT\r\n"
        ));
    }
    text.push_str("END:VCALENDAR\r\n");
    let e = import_dates(&text, d("2026-12-07")).unwrap_err();
    assert!(e.get("file").unwrap()[0].contains("100000 events"), "{}", e.message());
}

#[test]
fn not_a_calendar() {
    for bad in ["", "hello", "{\"name\": 1}", "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\n"] {
        let e = import_dates(bad, d("2026-12-07")).unwrap_err();
        assert!(e.contains("file"), "{bad:?}: {}", e.message());
    }
    let e = import_dates(
        "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:u\r\nDTSTART;VALUE=DATE:20271301\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
        d("2026-12-07"),
    )
    .unwrap_err();
    assert!(e.get("events.0").unwrap()[0].contains("UID u"), "{}", e.message());
}
