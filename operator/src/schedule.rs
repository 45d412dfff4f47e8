//! Deployment windows (`spec.schedule`): whether a rollout may make progress now, and when it
//! next may. Pure: no I/O and no clock; the caller passes `now`.
//!
//! Each window opens at every time its five-field cron expression matches, read on the wall
//! clock of its time zone, and stays open for `duration` of elapsed time. Windows that overlap or
//! touch (of one entry or of several) merge into one open period.
//!
//! # Daylight-saving changes
//!
//! The cron expression is read on the local wall clock; the duration is elapsed time.
//!
//! - **Spring forward** (a wall-clock hour is skipped): a window whose start falls in the gap,
//!   e.g. `30 2 * * *` in `Europe/Berlin` on the last Sunday of March, opens once, at the first
//!   instant after the gap (03:00 local), and lasts its full duration from there.
//! - **Fall back** (a wall-clock hour happens twice): a window at a fixed time inside the
//!   repeated hour, e.g. `30 2 * * *`, opens once, at the first of the two 02:30s. Expressions
//!   that repeat within the hour (`*/15 2 * * *`) match on both passes, like every other time
//!   they match.
//! - A window that spans a change lasts its duration in real time: `0 22 * * *` for `8h` on the
//!   night clocks go forward closes at 07:00 local time, not 06:00.
//!
//! # Time zones
//!
//! Names are looked up in the system's IANA database (`/usr/share/zoneinfo`, kept current by the
//! OS) and, when a container image has none or lacks the zone, in the copy built into Serin
//! (jiff's bundled tzdb).

use std::time::Duration;

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use k8s_openapi::jiff::tz::{TimeZone, TimeZoneDatabase};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::api::{Schedule, Window};
use crate::duration::parse_duration;

/// The shortest window the API accepts.
pub const MIN_DURATION: Duration = Duration::from_secs(60);
/// The longest window the API accepts (a week).
pub const MAX_DURATION: Duration = Duration::from_secs(168 * 3600);

/// How far ahead [`window_state`] follows merged windows to find when an open period ends. A
/// schedule that is open without a break for longer (or that chains more than 2000 openings,
/// like `* * * * *` for `1m`) reports where the search stopped as its `closes_at`: it is open at
/// least until then, and the evaluation at that time looks further.
pub const LOOKAHEAD: SignedDuration = SignedDuration::from_hours(8 * 24);

/// At most this many openings are merged into one open period, so one evaluation stays cheap.
const MAX_MERGES: usize = 2000;

/// Whether the schedule admits progress at a given moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowState {
    /// Inside a window, which closes at `closes_at` (merged with every window that overlaps or
    /// follows it without a break; at most [`LOOKAHEAD`] ahead).
    Open { closes_at: Timestamp },
    /// Outside every window; the next one opens at `opens_at`.
    Closed { opens_at: Timestamp },
}

impl WindowState {
    /// True inside a window.
    pub fn is_open(&self) -> bool {
        matches!(self, WindowState::Open { .. })
    }
}

/// A schedule Serin cannot evaluate. `field` is the Rollout field at fault, e.g.
/// `spec.schedule.windows[1].cron`; `message` says what is wrong and how to fix it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ScheduleError {
    pub field: String,
    pub message: String,
}

impl ScheduleError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ScheduleError { field: field.into(), message: message.into() }
    }
}

/// Checks every window: five-field cron that matches some time, a duration between 1m and
/// 168h, a time zone from the IANA database. The first error names its field and the fix.
pub fn validate(schedule: &Schedule) -> Result<(), ScheduleError> {
    let windows = compile(schedule)?;
    // A pattern that parses may still never match (`0 0 30 2 *`). Look for one opening after a
    // fixed reference, so the answer does not depend on the clock.
    let reference = Timestamp::from_second(1_767_225_600).unwrap_or(Timestamp::UNIX_EPOCH); // 2026-01-01
    for window in &windows {
        window.next_after(reference)?;
    }
    Ok(())
}

/// Whether `now` is inside any window, and when it closes; or when the next window opens.
/// Errors name the field and the fix.
pub fn window_state(schedule: &Schedule, now: Timestamp) -> Result<WindowState, ScheduleError> {
    let windows = compile(schedule)?;

    // The period that contains `now`, if any: the latest opening at or before `now` of each
    // window is the one that reaches furthest, since all its openings last equally long.
    let mut closes_at: Option<Timestamp> = None;
    for window in &windows {
        if let Some(opened) = window.latest_at_or_before(now)? {
            let closes = window.close(opened)?;
            if closes > now {
                closes_at = Some(closes_at.map_or(closes, |c| c.max(closes)));
            }
        }
    }

    let Some(mut end) = closes_at else {
        let mut opens_at: Option<Timestamp> = None;
        for window in &windows {
            let next = window.next_after(now)?;
            opens_at = Some(opens_at.map_or(next, |o| o.min(next)));
        }
        return match opens_at {
            Some(opens_at) => Ok(WindowState::Closed { opens_at }),
            None => Err(ScheduleError::new(
                "spec.schedule.windows",
                "needs at least one window, e.g. {cron: '0 9 * * MON-FRI', duration: 8h}",
            )),
        };
    };

    // Merge: any window that opens at or before the current end and closes after it extends the
    // period (a window that opens exactly as another closes continues it).
    let horizon = now.checked_add(LOOKAHEAD).unwrap_or(now);
    for _ in 0..MAX_MERGES {
        let mut extended = false;
        for window in &windows {
            if let Some(opened) = window.latest_at_or_before(end)? {
                let closes = window.close(opened)?;
                if closes > end {
                    end = closes;
                    extended = true;
                }
            }
        }
        if !extended || end >= horizon {
            break;
        }
    }
    Ok(WindowState::Open { closes_at: end })
}

/// Looks up an IANA time zone: the system database first, then the copy built into Serin.
pub fn time_zone(name: &str) -> Option<TimeZone> {
    if let Ok(zone) = k8s_openapi::jiff::tz::db().get(name) {
        return Some(zone);
    }
    if let Ok(zone) = TimeZoneDatabase::bundled().get(name) {
        return Some(zone);
    }
    (name == "UTC").then_some(TimeZone::UTC)
}

/// One window, parsed.
struct CompiledWindow {
    cron: Cron,
    length: SignedDuration,
    zone: TimeZone,
    /// `spec.schedule.windows[i]`, for errors.
    field: String,
}

impl CompiledWindow {
    /// The latest opening at or before `at`, if there is one.
    fn latest_at_or_before(&self, at: Timestamp) -> Result<Option<Timestamp>, ScheduleError> {
        let zoned = at.to_zoned(self.zone.clone());
        match self.cron.find_previous_occurrence(&zoned, true) {
            Ok(opened) => Ok(Some(opened.timestamp())),
            // Nothing before: only at the lower end of the calendar, or for a pattern that never
            // matches, which `next_after` reports.
            Err(_) => self.next_after(at).map(|_| None),
        }
    }

    /// The first opening after `at`.
    fn next_after(&self, at: Timestamp) -> Result<Timestamp, ScheduleError> {
        let zoned = at.to_zoned(self.zone.clone());
        self.cron
            .find_next_occurrence(&zoned, false)
            .map(|z| z.timestamp())
            .map_err(|err| self.never_matches(&err))
    }

    fn close(&self, opened: Timestamp) -> Result<Timestamp, ScheduleError> {
        opened.checked_add(self.length).map_err(|_| {
            ScheduleError::new(
                format!("{}.duration", self.field),
                "the window ends beyond the supported calendar",
            )
        })
    }

    fn never_matches(&self, err: &croner::errors::CronError) -> ScheduleError {
        ScheduleError::new(
            format!("{}.cron", self.field),
            format!(
                "{:?} never matches a real date ({err}); check the day of month against the month, e.g. '0 9 28 2 *'",
                self.cron.pattern.to_string()
            ),
        )
    }
}

fn compile(schedule: &Schedule) -> Result<Vec<CompiledWindow>, ScheduleError> {
    if schedule.windows.is_empty() {
        return Err(ScheduleError::new(
            "spec.schedule.windows",
            "needs at least one window, e.g. {cron: '0 9 * * MON-FRI', duration: 8h}",
        ));
    }
    schedule.windows.iter().enumerate().map(|(i, w)| compile_window(i, w)).collect()
}

fn compile_window(index: usize, window: &Window) -> Result<CompiledWindow, ScheduleError> {
    let field = format!("spec.schedule.windows[{index}]");
    let cron = parse_cron(&format!("{field}.cron"), &window.cron)?;
    let length = parse_length(&format!("{field}.duration"), &window.duration)?;
    let zone = time_zone(&window.time_zone).ok_or_else(|| {
        ScheduleError::new(
            format!("{field}.timeZone"),
            format!(
                "{:?} is not a time zone of the IANA database; use a name like Europe/Berlin, \
                 America/New_York or UTC",
                window.time_zone
            ),
        )
    })?;
    Ok(CompiledWindow { cron, length, zone, field })
}

const FIVE_FIELDS: &str = "five fields: minute hour day-of-month month day-of-week, e.g. '0 9 * * MON-FRI'";

/// Parses a five-field cron expression. Seconds, years and `@` nicknames are refused with a
/// message that says what to write instead.
pub fn parse_cron(field: &str, expression: &str) -> Result<Cron, ScheduleError> {
    let trimmed = expression.trim();
    if trimmed.starts_with('@') {
        return Err(ScheduleError::new(
            field,
            format!("{expression:?}: nicknames like @daily are not supported; write {FIVE_FIELDS}"),
        ));
    }
    let count = trimmed.split_whitespace().count();
    if count != 5 {
        let why = match count {
            6 => "a sixth field (seconds) is not supported; drop the first field",
            7 => "seconds and years are not supported; drop the first and the last field",
            _ => "the wrong number of fields",
        };
        return Err(ScheduleError::new(
            field,
            format!("{expression:?} has {count} fields: {why}. Write {FIVE_FIELDS}"),
        ));
    }
    CronParser::builder().seconds(Seconds::Disallowed).year(Year::Disallowed).build().parse(trimmed).map_err(
        |err| {
            ScheduleError::new(
                field,
                format!("{expression:?} is not a valid cron expression ({err}); write {FIVE_FIELDS}"),
            )
        },
    )
}

/// Parses a window's duration, between [`MIN_DURATION`] and [`MAX_DURATION`].
fn parse_length(field: &str, text: &str) -> Result<SignedDuration, ScheduleError> {
    let length = parse_duration(text).map_err(|err| ScheduleError::new(field, format!("{err}, e.g. 8h")))?;
    if !(MIN_DURATION..=MAX_DURATION).contains(&length) {
        return Err(ScheduleError::new(field, format!("{text:?} must be between 1m and 168h, e.g. 8h")));
    }
    SignedDuration::try_from(length)
        .map_err(|_| ScheduleError::new(field, format!("{text:?} must be between 1m and 168h, e.g. 8h")))
}

#[cfg(test)]
#[path = "schedule_tests.rs"]
mod tests;
