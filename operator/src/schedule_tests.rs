use super::*;
use crate::api::ScheduleScope;
use k8s_openapi::jiff::Zoned;
use proptest::prelude::*;

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// A wall-clock time with its offset and zone, e.g. `2026-10-25T02:30+01:00[Europe/Berlin]`.
fn zoned(s: &str) -> Timestamp {
    s.parse::<Zoned>().unwrap().timestamp()
}

fn window(cron: &str, duration: &str, tz: &str) -> Window {
    Window { cron: cron.into(), duration: duration.into(), time_zone: tz.into() }
}

fn schedule(windows: Vec<Window>) -> Schedule {
    Schedule { windows, scope: ScheduleScope::All }
}

fn state(s: &Schedule, now: &str) -> WindowState {
    window_state(s, ts(now)).unwrap()
}

fn open(closes_at: &str) -> WindowState {
    WindowState::Open { closes_at: ts(closes_at) }
}

fn closed(opens_at: &str) -> WindowState {
    WindowState::Closed { opens_at: ts(opens_at) }
}

#[test]
fn office_hours_open_and_close() {
    // 2026-11-25 is a Wednesday, 2026-11-27 a Friday.
    let s = schedule(vec![window("0 9 * * MON-FRI", "8h", "UTC")]);
    assert_eq!(state(&s, "2026-11-25T10:00:00Z"), open("2026-11-25T17:00:00Z"));
    assert_eq!(state(&s, "2026-11-25T09:00:00Z"), open("2026-11-25T17:00:00Z"), "opening is inclusive");
    assert_eq!(state(&s, "2026-11-25T17:00:00Z"), closed("2026-11-26T09:00:00Z"), "closing is exclusive");
    assert_eq!(state(&s, "2026-11-25T08:59:59Z"), closed("2026-11-25T09:00:00Z"));
    assert_eq!(
        state(&s, "2026-11-27T18:00:00Z"),
        closed("2026-11-30T09:00:00Z"),
        "Friday evening waits for Monday"
    );
    assert!(state(&s, "2026-11-25T10:00:00Z").is_open());
}

#[test]
fn weekday_ranges_lists_and_numbers() {
    let numeric = schedule(vec![window("0 9 * * 1-5", "8h", "UTC")]);
    let named = schedule(vec![window("0 9 * * mon-fri", "8h", "UTC")]);
    for now in ["2026-11-27T18:00:00Z", "2026-11-28T12:00:00Z", "2026-11-25T12:00:00Z"] {
        assert_eq!(state(&numeric, now), state(&named, now), "{now}");
    }
    let weekend = schedule(vec![window("0 10 * * SAT,SUN", "6h", "UTC")]);
    assert_eq!(state(&weekend, "2026-11-25T12:00:00Z"), closed("2026-11-28T10:00:00Z"));
    assert_eq!(state(&weekend, "2026-11-29T12:00:00Z"), open("2026-11-29T16:00:00Z"));
    // Sunday as 7, as in Vixie cron.
    let sunday = schedule(vec![window("0 10 * * 7", "1h", "UTC")]);
    assert_eq!(state(&sunday, "2026-11-25T12:00:00Z"), closed("2026-11-29T10:00:00Z"));
}

#[test]
fn a_window_that_opened_days_ago_is_still_open() {
    // Opens on the 1st of each month for a week.
    let s = schedule(vec![window("0 0 1 * *", "168h", "UTC")]);
    assert_eq!(state(&s, "2026-11-05T12:00:00Z"), open("2026-11-08T00:00:00Z"));
    assert_eq!(state(&s, "2026-11-08T00:00:00Z"), closed("2026-12-01T00:00:00Z"));
}

#[test]
fn overlapping_and_touching_windows_merge() {
    let overlapping = schedule(vec![window("0 9 * * *", "4h", "UTC"), window("0 12 * * *", "4h", "UTC")]);
    assert_eq!(state(&overlapping, "2026-11-25T10:00:00Z"), open("2026-11-25T16:00:00Z"));
    assert_eq!(state(&overlapping, "2026-11-25T14:00:00Z"), open("2026-11-25T16:00:00Z"));

    let touching = schedule(vec![window("0 12 * * *", "3h", "UTC"), window("0 9 * * *", "3h", "UTC")]);
    assert_eq!(state(&touching, "2026-11-25T10:00:00Z"), open("2026-11-25T15:00:00Z"));

    let apart = schedule(vec![window("0 9 * * *", "2h", "UTC"), window("0 12 * * *", "2h", "UTC")]);
    assert_eq!(state(&apart, "2026-11-25T10:00:00Z"), open("2026-11-25T11:00:00Z"));
    assert_eq!(state(&apart, "2026-11-25T11:30:00Z"), closed("2026-11-25T12:00:00Z"));

    // One entry whose openings overlap each other: a chain of three hours.
    let chained = schedule(vec![window("0 9-11 * * *", "90m", "UTC")]);
    assert_eq!(state(&chained, "2026-11-25T09:10:00Z"), open("2026-11-25T12:30:00Z"));

    // Windows in different zones merge on the absolute time line: 09:00 Berlin (CET) is 08:00 UTC.
    let zones = schedule(vec![window("0 9 * * *", "2h", "Europe/Berlin"), window("0 10 * * *", "2h", "UTC")]);
    assert_eq!(state(&zones, "2026-11-25T08:30:00Z"), open("2026-11-25T12:00:00Z"));
}

#[test]
fn a_schedule_that_never_closes_reports_the_lookahead() {
    let always = schedule(vec![window("0 * * * *", "90m", "UTC")]);
    let now = ts("2026-11-25T10:00:00Z");
    let WindowState::Open { closes_at } = window_state(&always, now).unwrap() else {
        panic!("an hourly window of 90 minutes is always open");
    };
    assert!(closes_at >= now.checked_add(LOOKAHEAD).unwrap(), "{closes_at}");
    assert!(closes_at <= now.checked_add(LOOKAHEAD + SignedDuration::from_hours(2)).unwrap(), "{closes_at}");
}

// Daylight-saving changes in 2026: Europe on 29 March (02:00 CET → 03:00 CEST) and 25 October
// (03:00 CEST → 02:00 CET); the United States on 8 March (02:00 EST → 03:00 EDT) and 1 November
// (02:00 EDT → 01:00 EST).

#[test]
fn berlin_spring_forward_a_window_in_the_gap_opens_once_when_the_gap_ends() {
    let s = schedule(vec![window("30 2 * * *", "1h", "Europe/Berlin")]);
    // The day before, 02:30 CET exists.
    assert_eq!(state(&s, "2026-03-28T01:45:00Z"), open("2026-03-28T02:30:00Z"));
    // 02:30 does not exist on the 29th: the window opens at 03:00 CEST (01:00 UTC) for a full hour.
    let before = zoned("2026-03-29T01:59:59+01:00[Europe/Berlin]");
    assert_eq!(window_state(&s, before).unwrap(), closed("2026-03-29T01:00:00Z"));
    assert_eq!(state(&s, "2026-03-29T01:00:00Z"), open("2026-03-29T02:00:00Z"));
    assert_eq!(state(&s, "2026-03-29T01:59:00Z"), open("2026-03-29T02:00:00Z"));
    // And once only: after it closes, the next opening is the 30th at 02:30 CEST.
    assert_eq!(state(&s, "2026-03-29T02:00:00Z"), closed("2026-03-30T00:30:00Z"));
}

#[test]
fn berlin_fall_back_a_window_in_the_repeated_hour_opens_once() {
    let s = schedule(vec![window("30 2 * * *", "30m", "Europe/Berlin")]);
    let first = zoned("2026-10-25T02:30:00+02:00[Europe/Berlin]");
    let second = zoned("2026-10-25T02:30:00+01:00[Europe/Berlin]");
    assert_eq!((first, second), (ts("2026-10-25T00:30:00Z"), ts("2026-10-25T01:30:00Z")));
    assert_eq!(state(&s, "2026-10-25T00:00:00Z"), closed("2026-10-25T00:30:00Z"));
    assert_eq!(window_state(&s, first).unwrap(), open("2026-10-25T01:00:00Z"));
    // The second 02:30 is not a second opening: next is the 26th at 02:30 CET.
    assert_eq!(state(&s, "2026-10-25T01:00:00Z"), closed("2026-10-26T01:30:00Z"));
    assert_eq!(window_state(&s, second).unwrap(), closed("2026-10-26T01:30:00Z"));
    assert_eq!(state(&s, "2026-10-25T01:45:00Z"), closed("2026-10-26T01:30:00Z"));
}

#[test]
fn berlin_a_window_that_spans_a_change_lasts_its_duration_in_real_time() {
    let s = schedule(vec![window("0 22 * * *", "8h", "Europe/Berlin")]);
    // 22:00 CET on the 28th is 21:00 UTC; eight hours later is 05:00 UTC, 07:00 CEST.
    let WindowState::Open { closes_at } = state(&s, "2026-03-29T04:00:00Z") else { panic!("open at night") };
    assert_eq!(closes_at, ts("2026-03-29T05:00:00Z"));
    assert_eq!(closes_at.to_zoned(time_zone("Europe/Berlin").unwrap()).hour(), 7);
    // 22:00 CEST on 24 October is 20:00 UTC; eight hours later is 04:00 UTC, 05:00 CET.
    let WindowState::Open { closes_at } = state(&s, "2026-10-25T03:00:00Z") else { panic!("open at night") };
    assert_eq!(closes_at, ts("2026-10-25T04:00:00Z"));
    assert_eq!(closes_at.to_zoned(time_zone("Europe/Berlin").unwrap()).hour(), 5);
}

#[test]
fn new_york_spring_forward_and_fall_back() {
    let gap = schedule(vec![window("30 2 * * *", "1h", "America/New_York")]);
    // 02:30 does not exist on 8 March: opens at 03:00 EDT (07:00 UTC).
    assert_eq!(state(&gap, "2026-03-08T06:00:00Z"), closed("2026-03-08T07:00:00Z"));
    assert_eq!(state(&gap, "2026-03-08T07:30:00Z"), open("2026-03-08T08:00:00Z"));

    let overlap = schedule(vec![window("30 1 * * *", "20m", "America/New_York")]);
    // 01:30 happens twice on 1 November: 05:30 UTC (EDT) and 06:30 UTC (EST). Only the first opens.
    assert_eq!(state(&overlap, "2026-11-01T05:00:00Z"), closed("2026-11-01T05:30:00Z"));
    assert_eq!(state(&overlap, "2026-11-01T05:40:00Z"), open("2026-11-01T05:50:00Z"));
    assert_eq!(state(&overlap, "2026-11-01T06:00:00Z"), closed("2026-11-02T06:30:00Z"));
    assert_eq!(state(&overlap, "2026-11-01T06:35:00Z"), closed("2026-11-02T06:30:00Z"));

    // Saturday 31 October 20:00 EDT (00:00 UTC) for 12h closes at 12:00 UTC, 07:00 EST.
    let span = schedule(vec![window("0 20 * * SAT", "12h", "America/New_York")]);
    assert_eq!(state(&span, "2026-11-01T11:00:00Z"), open("2026-11-01T12:00:00Z"));
}

#[test]
fn an_unknown_time_zone_names_the_field() {
    let s = schedule(vec![window("0 9 * * *", "1h", "UTC"), window("0 9 * * *", "1h", "Mars/Olympus")]);
    let err = validate(&s).unwrap_err();
    assert_eq!(err.field, "spec.schedule.windows[1].timeZone");
    assert!(err.message.contains("\"Mars/Olympus\"") && err.message.contains("Europe/Berlin"), "{err}");
    assert_eq!(window_state(&s, ts("2026-11-25T10:00:00Z")).unwrap_err(), err);
    assert!(err.to_string().starts_with("spec.schedule.windows[1].timeZone: "), "{err}");
}

#[test]
fn bad_cron_expressions_name_the_field_and_the_fix() {
    let cases = [
        ("0 9 * *", "4 fields"),
        ("0 0 9 * * *", "seconds"),
        ("0 0 9 * * * 2026", "years"),
        ("@daily", "nicknames"),
        ("61 9 * * *", "not a valid cron expression"),
        ("0 25 * * *", "not a valid cron expression"),
        ("0 9 * * FUNDAY", "not a valid cron expression"),
        ("0 9 32 * *", "not a valid cron expression"),
        ("0 0 30 2 *", "never matches"),
    ];
    for (cron, why) in cases {
        let s = schedule(vec![window("0 9 * * *", "1h", "UTC"), window(cron, "1h", "UTC")]);
        let err = validate(&s).unwrap_err();
        assert_eq!(err.field, "spec.schedule.windows[1].cron", "{cron}: {err}");
        assert!(err.message.contains(why), "{cron}: {err}");
        assert!(err.message.contains("e.g. '0 9"), "{cron}: the message shows an example: {err}");
    }
}

#[test]
fn bad_durations_name_the_field() {
    for duration in ["0s", "30s", "169h", "8 hours", ""] {
        let s = schedule(vec![window("0 9 * * *", duration, "UTC")]);
        let err = validate(&s).unwrap_err();
        assert_eq!(err.field, "spec.schedule.windows[0].duration", "{duration}: {err}");
        assert!(err.message.contains("e.g. 8h"), "{err}");
    }
}

#[test]
fn an_empty_schedule_is_refused() {
    let err = validate(&schedule(vec![])).unwrap_err();
    assert_eq!(err.field, "spec.schedule.windows");
}

#[test]
fn good_schedules_validate() {
    let s = schedule(vec![
        window("0 9 * * MON-FRI", "8h", "Europe/Berlin"),
        window("*/30 22-23 * * *", "15m", "America/New_York"),
        window("0 0 29 2 *", "1h", "UTC"),
        window("  0 9 * * 1  ", "1m", "Asia/Kolkata"),
    ]);
    assert_eq!(validate(&s), Ok(()));
}

#[test]
fn zones_resolve_from_the_system_or_the_bundled_database() {
    for name in ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kathmandu"] {
        assert!(time_zone(name).is_some(), "{name}");
    }
    // The bundled copy alone knows the zones the tests use, so a container without
    // /usr/share/zoneinfo gets the same answers.
    assert!(TimeZoneDatabase::bundled().get("Europe/Berlin").is_ok());
    assert!(TimeZoneDatabase::bundled().get("America/New_York").is_ok());
    assert!(time_zone("Not/AZone").is_none());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Whatever the moment: an open state stays open until it closes, and a closed state stays
    /// closed until the next window opens, which it then is.
    #[test]
    fn states_agree_with_their_boundaries(offset in 0i64..(366 * 24 * 3600), tz in 0usize..3) {
        let zone = ["Europe/Berlin", "America/New_York", "UTC"][tz];
        let s = schedule(vec![
            window("30 2 * * MON-FRI", "3h", zone),
            window("0 4 * * SAT", "90m", zone),
        ]);
        let now = ts("2026-01-01T00:00:00Z").checked_add(SignedDuration::from_secs(offset)).unwrap();
        let second = SignedDuration::from_secs(1);
        match window_state(&s, now).unwrap() {
            WindowState::Open { closes_at } => {
                prop_assert!(closes_at > now);
                prop_assert!(window_state(&s, closes_at.checked_sub(second).unwrap()).unwrap().is_open());
                prop_assert!(!window_state(&s, closes_at).unwrap().is_open());
            }
            WindowState::Closed { opens_at } => {
                prop_assert!(opens_at > now);
                prop_assert!(opens_at <= now.checked_add(SignedDuration::from_hours(72)).unwrap());
                prop_assert!(!window_state(&s, opens_at.checked_sub(second).unwrap()).unwrap().is_open());
                prop_assert!(window_state(&s, opens_at).unwrap().is_open());
            }
        }
    }
}

#[test]
fn day_of_month_and_day_of_week_match_either_as_in_vixie_cron() {
    // 2026-12-01 is a Tuesday; 2026-11-30 a Monday.
    let s = schedule(vec![window("0 9 1 * MON", "1h", "UTC")]);
    assert_eq!(state(&s, "2026-11-27T12:00:00Z"), closed("2026-11-30T09:00:00Z"), "a Monday");
    assert_eq!(state(&s, "2026-11-30T12:00:00Z"), closed("2026-12-01T09:00:00Z"), "the 1st, a Tuesday");
}

#[test]
fn last_day_and_nth_weekday_extensions() {
    // L: the last day of the month; FRI#1: the first Friday (2026-12-04).
    let last = schedule(vec![window("0 18 L * *", "2h", "UTC")]);
    assert_eq!(state(&last, "2026-11-02T00:00:00Z"), closed("2026-11-30T18:00:00Z"));
    let first_friday = schedule(vec![window("0 9 * * FRI#1", "8h", "UTC")]);
    assert_eq!(state(&first_friday, "2026-11-28T00:00:00Z"), closed("2026-12-04T09:00:00Z"));
    // 15W: the weekday nearest the 15th (Sunday 2026-11-15 → Monday the 16th).
    let nearest = schedule(vec![window("0 9 15W * *", "1h", "UTC")]);
    assert_eq!(state(&nearest, "2026-11-02T00:00:00Z"), closed("2026-11-16T09:00:00Z"));
    // 5L: the last Friday (2026-11-27).
    let last_friday = schedule(vec![window("0 9 * * 5L", "1h", "UTC")]);
    assert_eq!(state(&last_friday, "2026-11-02T00:00:00Z"), closed("2026-11-27T09:00:00Z"));
    // Steps over a range: 09:00, 11:00, ..., 17:00.
    let every_other = schedule(vec![window("0 9-17/2 * * *", "30m", "UTC")]);
    assert_eq!(state(&every_other, "2026-11-02T09:45:00Z"), closed("2026-11-02T11:00:00Z"));
}
