//! Cron schedules: the one place that reads a `cron:` string and turns it into instants.
//!
//! It owns the accepted syntax, the time zone a schedule is read in, and what happens
//! across daylight-saving changes. Scheduled scaling floors, deploy freeze windows and
//! simulated traffic bursts all go through [`CronSchedule`]; nothing else parses cron.
//!
//! **Syntax.** Exactly 5 whitespace-separated fields: minute (0-59), hour (0-23),
//! day-of-month (1-31), month (1-12 or `JAN`-`DEC`) and day-of-week (0-7, 0 and 7 are
//! Sunday, or `SUN`-`SAT`), each `*`, a value, a range `a-b`, a step `*/n` or `a-b/n`, or
//! a comma-separated list of those. Names are case-insensitive and only allowed in their
//! own field. As in every cron, when both day-of-month and day-of-week are restricted
//! (not exactly `*`) a day matches if *either* matches. Refused, each with a message saying
//! what to write instead: 6 or 7 fields (Quartz seconds, EventBridge years), `@daily`-style
//! nicknames, and the Quartz extensions croner would otherwise accept: `?`, `L` (last),
//! `W` (nearest weekday), `#` (nth weekday), `+` (day-of-month AND day-of-week), a step
//! without a range (`5/15`, write `5-59/15`), backwards ranges (`22-2`) and steps larger
//! than the field. croner does the matching, configured to refuse seconds and years.
//!
//! **Never-firing expressions** (`0 0 31 2 *`, `0 0 30 2 *`) are refused: a schedule must
//! have an occurrence in the 8 years from 1 March 2096. 8 years is the longest gap
//! between two dates any 5-field expression can name: the rarest date is 29 February,
//! which 2100 skips (not a leap year), so 2096-02-29 is followed by 2104-02-29. Every other
//! day-of-month, and every month/day-of-week pair, comes back each year, and cron never
//! requires a day-of-month and a day-of-week together (restricted both, it ORs them). So
//! an expression that fires at all fires within any 8-year window, and this window is the
//! worst one: `0 0 29 2 *` passes only thanks to 2104-02-29, in its last week.
//!
//! **Time zone.** A schedule is read in its `timezone` (an IANA name, default UTC), in
//! wall-clock time: `0 8 * * MON-FRI` in `Europe/Paris` is 06:00 UTC in summer and 07:00
//! UTC in winter. Daylight-saving changes are handled the way cronie (the Vixie cron of
//! most Linux distributions) handles them, with its split between *fixed-time* schedules
//! and *wildcard* ones (minute or hour field starting with `*`):
//!
//! - a wall-clock time skipped when clocks go forward (02:30 on the last Sunday of March
//!   in Paris does not exist): a fixed-time schedule starts once at the first instant
//!   after the gap (03:00 local); a wildcard schedule has no start in the gap;
//! - a wall-clock time that happens twice when clocks go back (02:30 on the last Sunday
//!   of October in Paris): a fixed-time schedule starts once, at the first of the two; a
//!   wildcard schedule starts at both, as its minutes really happen twice.
//!
//! (cronie does the first for clock jumps of under 3 hours, which covers every
//! daylight-saving change; here it holds for any gap.) Kubernetes CronJob `timeZone`
//! (robfig/cron) differs: it skips fixed times in the gap and runs them twice in the
//! overlap.

use chrono::{
    DateTime, Datelike, LocalResult, NaiveDate, NaiveDateTime, Offset, TimeDelta, TimeZone,
    Timelike, Utc,
};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use std::fmt;
use syntax::{normalize, suggestion, DAY_OF_MONTH, FIELDS, MONTH};
pub use zone::{parse_zone, zone_field};

mod syntax;
mod zone;

/// Why a cron expression is refused. Each message names the expression, says what is
/// wrong and how to write it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    #[error("cron '{expr}' does not parse: it has {found} field(s); a schedule is exactly 5, minute hour day-of-month month day-of-week, to the minute (no seconds, no year), like \"0 7 * * MON-FRI\"{hint}")]
    FieldCount {
        expr: String,
        found: usize,
        /// A suggested rewrite, when one is evident (`; did you mean "..."?`).
        hint: String,
    },
    #[error("cron '{expr}' does not parse: the nickname {nickname} is not standard 5-field cron; {instead}")]
    Nickname {
        expr: String,
        nickname: String,
        instead: String,
    },
    #[error("cron '{expr}' does not parse: '{text}' in the {field} field is {what}, not standard 5-field cron; {instead}")]
    Extension {
        expr: String,
        field: &'static str,
        text: String,
        what: &'static str,
        instead: String,
    },
    #[error("cron '{expr}' does not parse: {field} field '{text}': {why}")]
    Field {
        expr: String,
        field: &'static str,
        text: String,
        why: String,
    },
    #[error("cron '{expr}' never fires: no date matches day-of-month '{day}' in month '{month}' (checked 8 years, which always include a 29 February); choose days that exist in those months (February has 29 at most; April, June, September and November have 30)")]
    NeverFires {
        expr: String,
        day: String,
        month: String,
    },
    /// croner refused what this module let through; not expected, kept so that nothing
    /// panics if it happens.
    #[error("cron '{expr}' does not parse: {message}; write 5 fields like \"0 7 * * MON-FRI\"")]
    Croner { expr: String, message: String },
}

/// A parsed 5-field cron schedule, read in a time zone.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    expr: String,
    cron: croner::Cron,
    /// Minute or hour field starts with `*` (cronie's "wildcard job"): see the module doc
    /// for what that changes across daylight-saving changes.
    wildcard: bool,
    zone: Tz,
}

impl fmt::Display for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.zone == Tz::UTC {
            write!(f, "{}", self.expr)
        } else {
            write!(f, "{} ({})", self.expr, self.zone.name())
        }
    }
}

impl CronSchedule {
    /// Parse a 5-field expression, read in UTC.
    pub fn parse(expr: &str) -> Result<CronSchedule, CronError> {
        let expr = expr.trim();
        let err_expr = || expr.to_string();
        if let Some(nick) = expr.strip_prefix('@') {
            let instead = match nick.to_ascii_lowercase().as_str() {
                "yearly" | "annually" => "write \"0 0 1 1 *\"",
                "monthly" => "write \"0 0 1 * *\"",
                "weekly" => "write \"0 0 * * SUN\"",
                "daily" | "midnight" => "write \"0 0 * * *\"",
                "hourly" => "write \"0 * * * *\"",
                _ => "write the 5 fields, like \"0 7 * * MON-FRI\"",
            };
            return Err(CronError::Nickname {
                expr: err_expr(),
                nickname: format!("@{nick}"),
                instead: instead.into(),
            });
        }
        let parts: Vec<&str> = expr.split_whitespace().collect();
        if parts.len() != 5 {
            return Err(CronError::FieldCount {
                expr: err_expr(),
                found: parts.len(),
                hint: suggestion(&parts)
                    .map(|s| format!("; did you mean \"{s}\"?"))
                    .unwrap_or_default(),
            });
        }
        let mut normal = Vec::with_capacity(5);
        for (i, (text, field)) in parts.iter().zip(&FIELDS).enumerate() {
            normal.push(normalize(expr, i, field, text)?);
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .dom_and_dow(false)
            .build()
            .parse(&normal.join(" "))
            .map_err(|e| CronError::Croner {
                expr: err_expr(),
                message: e.to_string(),
            })?;
        if !fires_in_probe_window(&cron) {
            return Err(CronError::NeverFires {
                expr: err_expr(),
                day: parts[DAY_OF_MONTH].into(),
                month: parts[MONTH].into(),
            });
        }
        Ok(CronSchedule {
            expr: expr.to_string(),
            cron,
            wildcard: parts[0].starts_with('*') || parts[1].starts_with('*'),
            zone: Tz::UTC,
        })
    }

    /// Parse `expr` and read it in `zone` (UTC when `None`).
    pub fn new(expr: &str, zone: Option<Tz>) -> Result<CronSchedule, CronError> {
        Ok(CronSchedule::parse(expr)?.in_zone(zone.unwrap_or(Tz::UTC)))
    }

    /// The same schedule read in `zone`.
    pub fn in_zone(mut self, zone: Tz) -> CronSchedule {
        self.zone = zone;
        self
    }

    /// The expression as written (trimmed).
    pub fn expr(&self) -> &str {
        &self.expr
    }

    pub fn zone(&self) -> Tz {
        self.zone
    }

    /// The latest start at or before `now`. `None` only at the ends of the calendar
    /// (year 1, year 5000).
    pub fn previous(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let (first, second) = self.thresholds(now)?;
        let once = self.at_or_before(first).map(|w| w.earliest());
        let again = if self.wildcard {
            self.at_or_before(second).map(|w| w.latest())
        } else {
            None
        };
        once.max(again)
    }

    /// The first start strictly after `now`.
    pub fn next(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let (first, second) = self.thresholds(now)?;
        let once = self.after(first).map(|w| w.earliest());
        let again = if self.wildcard {
            self.after(second).map(|w| w.latest())
        } else {
            None
        };
        match (once, again) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The start of the window open at `now`: the latest start, if `now` is less than
    /// `duration` after it.
    pub fn window_start(&self, now: DateTime<Utc>, duration: TimeDelta) -> Option<DateTime<Utc>> {
        let start = self.previous(now)?;
        (now.signed_duration_since(start) < duration).then_some(start)
    }

    // Starts are found on wall-clock times first (croner on naive times, carried as UTC
    // so that it sees no gap and no overlap), then each wall-clock time is mapped to
    // instants. Mapped this way, "the earliest instant of a wall-clock time" and "the
    // latest" both grow with the wall-clock time; so the starts at or before `now` are the
    // wall-clock times up to a threshold, one threshold for each of the two mappings.

    /// The largest wall-clock times whose earliest / latest instant is at or before `now`.
    fn thresholds(&self, now: DateTime<Utc>) -> Option<(NaiveDateTime, NaiveDateTime)> {
        let local = now.with_timezone(&self.zone).naive_local();
        let LocalResult::Ambiguous(x, y) = self.zone.from_local_datetime(&local) else {
            return Some((local, local));
        };
        // `now` is in an hour that happens twice.
        let (a, b) = (x.min(y).with_timezone(&Utc), x.max(y).with_timezone(&Utc));
        let change = self.offset_change(a, b)?;
        if now >= b {
            // Second pass: every wall-clock time of the repeated hour has its first
            // instant behind us, up to the last second before the change.
            let last = change.checked_sub_signed(TimeDelta::seconds(1))?;
            Some((last.with_timezone(&self.zone).naive_local(), local))
        } else {
            // First pass: no wall-clock time of the repeated hour has had its second
            // instant yet.
            let first = change.with_timezone(&self.zone).naive_local();
            Some((local, first.checked_sub_signed(TimeDelta::seconds(1))?))
        }
    }

    /// The instant the offset changes, between `a` (old offset) and `b` (new offset).
    fn offset_change(&self, a: DateTime<Utc>, b: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let offset_at = |ts: i64| {
            DateTime::from_timestamp(ts, 0)
                .map(|t| self.zone.offset_from_utc_datetime(&t.naive_utc()).fix())
        };
        let before = offset_at(a.timestamp())?;
        let (mut lo, mut hi) = (a.timestamp(), b.timestamp());
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if offset_at(mid)? == before {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        DateTime::from_timestamp(hi, 0)
    }

    /// The latest wall-clock start at or before `limit` that has an instant.
    fn at_or_before(&self, limit: NaiveDateTime) -> Option<Wall> {
        let mut limit = limit.with_nanosecond(0)?;
        // A wildcard schedule has no start in a gap: look again before it. Gaps are
        // months apart, so two tries always do; a few more cost nothing.
        for _ in 0..4 {
            let n = self
                .cron
                .find_previous_occurrence(&limit.and_utc(), true)
                .ok()?
                .naive_utc();
            match self.wall(n)? {
                Wall::Gap { before, .. } if self.wildcard => limit = before,
                w => return Some(w),
            }
        }
        None
    }

    /// The first wall-clock start after `limit` that has an instant.
    fn after(&self, limit: NaiveDateTime) -> Option<Wall> {
        let mut limit = limit.with_nanosecond(0)?;
        for _ in 0..4 {
            let n = self
                .cron
                .find_next_occurrence(&limit.and_utc(), false)
                .ok()?
                .naive_utc();
            match self.wall(n)? {
                Wall::Gap { after, .. } if self.wildcard => {
                    limit = after.checked_sub_signed(TimeDelta::seconds(1))?
                }
                w => return Some(w),
            }
        }
        None
    }

    /// The instants of wall-clock time `n` in the schedule's zone.
    fn wall(&self, n: NaiveDateTime) -> Option<Wall> {
        match self.zone.from_local_datetime(&n) {
            LocalResult::Single(t) => Some(Wall::Once(t.with_timezone(&Utc))),
            LocalResult::Ambiguous(x, y) => Some(Wall::Twice(
                x.min(y).with_timezone(&Utc),
                x.max(y).with_timezone(&Utc),
            )),
            LocalResult::None => {
                let gap = chrono_tz::GapInfo::new(&n, &self.zone)?;
                let end = gap.end?;
                let (begin, _) = gap.begin?;
                Some(Wall::Gap {
                    end: end.with_timezone(&Utc),
                    before: begin.checked_sub_signed(TimeDelta::seconds(1))?,
                    after: end.naive_local(),
                })
            }
        }
    }
}

/// Where a wall-clock time falls in a zone.
#[derive(Debug, Clone, Copy)]
enum Wall {
    Once(DateTime<Utc>),
    /// Clocks went back: the first and the second instant.
    Twice(DateTime<Utc>, DateTime<Utc>),
    /// Clocks went forward over it: the first instant after the gap, and the wall-clock
    /// times just before and just after the gap.
    Gap {
        end: DateTime<Utc>,
        before: NaiveDateTime,
        after: NaiveDateTime,
    },
}

impl Wall {
    fn earliest(self) -> DateTime<Utc> {
        match self {
            Wall::Once(t) | Wall::Twice(t, _) | Wall::Gap { end: t, .. } => t,
        }
    }

    fn latest(self) -> DateTime<Utc> {
        match self {
            Wall::Once(t) | Wall::Twice(_, t) | Wall::Gap { end: t, .. } => t,
        }
    }
}

/// Whether the schedule matches some date in the 8 years from 2096-03-01 (see the module
/// doc: that window holds an occurrence of every expression that can fire).
fn fires_in_probe_window(cron: &croner::Cron) -> bool {
    let (Some(mut day), Some(end)) = (
        NaiveDate::from_ymd_opt(2096, 3, 1),
        NaiveDate::from_ymd_opt(2104, 3, 1),
    ) else {
        return false;
    };
    while day < end {
        if !cron.pattern.month_match(day.month()).unwrap_or(false) {
            let (y, m) = if day.month() == 12 {
                (day.year() + 1, 1)
            } else {
                (day.year(), day.month() + 1)
            };
            match NaiveDate::from_ymd_opt(y, m, 1) {
                Some(d) => day = d,
                None => return false,
            }
            continue;
        }
        if cron
            .pattern
            .day_match(day.year(), day.month(), day.day())
            .unwrap_or(false)
        {
            return true;
        }
        match day.succ_opt() {
            Some(d) => day = d,
            None => return false,
        }
    }
    false
}

#[cfg(test)]
mod tests;
