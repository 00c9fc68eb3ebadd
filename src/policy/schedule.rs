//! Scheduled capacity: a floor that holds for a while after each cron start
//! (course-launch mornings, exam deadlines).

use super::Vote;
use crate::manifest::ScheduledSpec;
use chrono::{DateTime, Utc};
use std::str::FromStr;

/// The floor in force at `now`, if the window is open.
pub fn scheduled_floor(spec: &ScheduledSpec, now: DateTime<Utc>) -> Option<u32> {
    let cron = croner::Cron::from_str(&spec.cron).ok()?;
    let start = cron.find_previous_occurrence(&now, true).ok()?;
    (now - start < spec.duration.chrono()).then_some(spec.min)
}

pub(super) fn vote(spec: &ScheduledSpec, now: DateTime<Utc>) -> (Vote, String) {
    match scheduled_floor(spec, now) {
        Some(min) => (
            Vote::Capacity(min),
            format!("window '{}' open: floor {min}", spec.cron),
        ),
        None => (Vote::Abstain, format!("window '{}' closed", spec.cron)),
    }
}
