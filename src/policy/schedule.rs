//! Scheduled capacity: a floor that holds for a while after each cron start
//! (course-launch mornings, exam deadlines).

use super::Vote;
use crate::manifest::{CronSchedule, ScheduledSpec};
use chrono::{DateTime, Utc};

/// The floor in force at `now`, if the window is open. The cron is read in the spec's
/// time zone; a cron that does not parse (the loader refuses it) never opens.
pub fn scheduled_floor(spec: &ScheduledSpec, now: DateTime<Utc>) -> Option<u32> {
    let schedule = CronSchedule::new(&spec.cron, spec.timezone).ok()?;
    schedule
        .window_start(now, spec.duration.chrono())
        .map(|_| spec.min)
}

pub(super) fn vote(spec: &ScheduledSpec, now: DateTime<Utc>) -> (Vote, String) {
    let window = match spec.timezone {
        Some(z) => format!("'{}' ({})", spec.cron, z.name()),
        None => format!("'{}'", spec.cron),
    };
    match scheduled_floor(spec, now) {
        Some(min) => (
            Vote::Capacity(min),
            format!("window {window} open: floor {min}"),
        ),
        None => (Vote::Abstain, format!("window {window} closed")),
    }
}
