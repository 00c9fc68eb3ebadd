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

/// One of the 5 fields: its name, its range, and the names it accepts.
struct Field {
    name: &'static str,
    min: u16,
    max: u16,
    /// Three-letter names, the first standing for `min` (months) or 0 (days).
    names: &'static [&'static str],
}

const MONTHS: &[&str] = &[
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAYS: &[&str] = &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

const FIELDS: [Field; 5] = [
    Field {
        name: "minute",
        min: 0,
        max: 59,
        names: &[],
    },
    Field {
        name: "hour",
        min: 0,
        max: 23,
        names: &[],
    },
    Field {
        name: "day-of-month",
        min: 1,
        max: 31,
        names: &[],
    },
    Field {
        name: "month",
        min: 1,
        max: 12,
        names: MONTHS,
    },
    Field {
        name: "day-of-week",
        min: 0,
        max: 7,
        names: DAYS,
    },
];

const DAY_OF_MONTH: usize = 2;
const MONTH: usize = 3;
const DAY_OF_WEEK: usize = 4;

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

/// For 6 or 7 fields, the 5-field expression the author most likely meant: a Quartz
/// pattern loses its seconds (first field), an EventBridge one its year (last field).
fn suggestion(parts: &[&str]) -> Option<String> {
    let valid = |fields: &[&str]| {
        let s = fields.join(" ");
        CronSchedule::parse(&s).ok().map(|_| s)
    };
    let years = |f: &str| {
        f.split([',', '-', '/'])
            .all(|p| p.len() == 4 && p.bytes().all(|b| b.is_ascii_digit()))
    };
    match parts.len() {
        7 => valid(&parts[1..6]),
        6 => {
            let (drop_year, drop_seconds) = (&parts[..5], &parts[1..]);
            if years(parts[5]) {
                valid(drop_year).or_else(|| valid(drop_seconds))
            } else if parts[5] == "*" || parts[5] == "?" {
                // A year of `*` or a day-of-week of `*`: whichever reading parses.
                valid(drop_seconds).or_else(|| valid(drop_year))
            } else {
                valid(drop_seconds)
            }
        }
        _ => None,
    }
}

/// Check one field against the standard syntax and return it with names turned into
/// numbers, ready for croner.
fn normalize(expr: &str, index: usize, field: &Field, text: &str) -> Result<String, CronError> {
    let extension = |what: &'static str, instead: &str| CronError::Extension {
        expr: expr.into(),
        field: field.name,
        text: text.into(),
        what,
        instead: instead.into(),
    };
    let bad = |why: String| CronError::Field {
        expr: expr.into(),
        field: field.name,
        text: text.into(),
        why,
    };
    if text.contains('?') {
        return Err(extension(
            "a Quartz/EventBridge placeholder ('no specific value')",
            "write * instead",
        ));
    }
    if text.contains('#') {
        return Err(extension(
            "Quartz's nth weekday of the month",
            "cron cannot say \"the second Friday\": write the day of week (FRI) and check the date in the job, or list the days of month",
        ));
    }
    if index == DAY_OF_WEEK && text.starts_with('+') {
        return Err(extension(
            "croner's day-of-month AND day-of-week modifier",
            "drop the +: when both days are restricted, cron fires on either",
        ));
    }
    let mut out = Vec::new();
    let mut every = false;
    for item in text.split(',') {
        if item.is_empty() {
            return Err(bad(
                "a list has an empty item (two commas, or a comma at an end)".into(),
            ));
        }
        let (base, step) = match item.split_once('/') {
            Some((b, s)) => (b, Some(s)),
            None => (item, None),
        };
        let base_out = if base == "*" {
            every |= step.is_none();
            "*".to_string()
        } else if let Some((a, b)) = base.split_once('-') {
            let lo = value(field, index, a, false).map_err(|e| e.into_error(&extension, &bad))?;
            let hi = value(field, index, b, true).map_err(|e| e.into_error(&extension, &bad))?;
            if lo > hi {
                return Err(bad(format!(
                    "the range {base} runs backwards; cron ranges do not wrap around: write {lo}-{},{}-{hi}",
                    field.max, field.min
                )));
            }
            format!("{lo}-{hi}")
        } else {
            let v = value(field, index, base, false).map_err(|e| e.into_error(&extension, &bad))?;
            if let Some(s) = step {
                return Err(extension(
                    "a step from a single value (Quartz's start/step)",
                    &format!("write the range: {v}-{}/{s}", field.max),
                ));
            }
            v.to_string()
        };
        match step {
            None => out.push(base_out),
            Some(s) => {
                let n = number(s).filter(|n| (1..=u32::from(field.max)).contains(n));
                let Some(n) = n else {
                    return Err(bad(format!(
                        "the step '{s}' must be a number from 1 to {}",
                        field.max
                    )));
                };
                out.push(format!("{base_out}/{n}"));
            }
        }
    }
    // A bare `*` in a list takes in every value: the field is `*` (croner reads `*` only
    // as a whole field, and cron's "restricted day" rule then reads it as unrestricted).
    Ok(if every { "*".into() } else { out.join(",") })
}

/// A value that is not a plain value of its field.
enum BadValue {
    Extension(&'static str, &'static str),
    Invalid(String),
}

impl BadValue {
    fn into_error(
        self,
        extension: &dyn Fn(&'static str, &str) -> CronError,
        bad: &dyn Fn(String) -> CronError,
    ) -> CronError {
        match self {
            BadValue::Extension(what, instead) => extension(what, instead),
            BadValue::Invalid(why) => bad(why),
        }
    }
}

fn number(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 4 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// One value of a field: a number in range, or a name of that field. `range_end` lets
/// `SUN` close a day-of-week range as 7 (`FRI-SUN`).
fn value(field: &Field, index: usize, tok: &str, range_end: bool) -> Result<u16, BadValue> {
    let range = || {
        let names = match (field.names.first(), field.names.last()) {
            (Some(a), Some(b)) => format!(" or {a}-{b}"),
            _ => String::new(),
        };
        format!("{}-{}{names}", field.min, field.max)
    };
    if let Some(n) = number(tok) {
        return match u16::try_from(n) {
            Ok(v) if (field.min..=field.max).contains(&v) => Ok(v),
            _ => Err(BadValue::Invalid(format!(
                "{n} is out of range: {} values are {}",
                field.name,
                range()
            ))),
        };
    }
    let upper = tok.to_ascii_uppercase();
    if let Some(i) = field.names.iter().position(|n| *n == upper) {
        let base = if index == MONTH { 1 } else { 0 };
        let v = u16::try_from(i).unwrap_or(0) + base;
        return Ok(if index == DAY_OF_WEEK && v == 0 && range_end {
            7
        } else {
            v
        });
    }
    if index == DAY_OF_MONTH || index == DAY_OF_WEEK {
        if upper == "L" || upper == "LW" {
            return Err(BadValue::Extension(
                "Quartz's last day (L)",
                "cron has no \"last day\": list the days you mean (28-31 with a check in the job), or use day-of-week",
            ));
        }
        if let Some(rest) = upper.strip_suffix('L') {
            if number(rest).is_some() || DAYS.contains(&rest) {
                return Err(BadValue::Extension(
                    "Quartz's last weekday of the month (nL)",
                    "cron cannot say \"the last Friday\": write the day of week and check the date in the job",
                ));
            }
        }
    }
    if index == DAY_OF_MONTH {
        if let Some(rest) = upper.strip_suffix('W') {
            if number(rest).is_some() {
                return Err(BadValue::Extension(
                    "Quartz's nearest weekday (nW)",
                    "write the days of month and days of week you mean",
                ));
            }
        }
    }
    Err(BadValue::Invalid(format!(
        "'{tok}' is not a {}: write {}",
        field.name,
        range()
    )))
}

/// The IANA zone named `name`, or a sentence saying how to write one.
pub fn parse_zone(name: &str) -> Result<Tz, String> {
    name.parse::<Tz>().map_err(|_| {
        match chrono_tz::TZ_VARIANTS
            .iter()
            .find(|z| z.name().eq_ignore_ascii_case(name.trim()))
        {
            Some(z) => format!(
                "unknown time zone '{name}': did you mean {}? (zone names are case-sensitive)",
                z.name()
            ),
            None => format!(
                "unknown time zone '{name}': use an IANA name such as Europe/Paris, America/New_York or UTC"
            ),
        }
    })
}

/// Serde for an optional `timezone:` field. A bad name is refused in the scalar's visitor,
/// so that it is reported at the value's own line and column.
pub mod zone_field {
    use chrono_tz::Tz;
    use serde::de::{self, Deserializer, Visitor};
    use serde::Serializer;
    use std::fmt;

    pub fn serialize<S: Serializer>(zone: &Option<Tz>, s: S) -> Result<S::Ok, S::Error> {
        match zone {
            Some(z) => s.serialize_some(z.name()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Tz>, D::Error> {
        struct Name;
        impl Visitor<'_> for Name {
            type Value = Tz;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an IANA time zone name such as Europe/Paris")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Tz, E> {
                super::parse_zone(v).map_err(E::custom)
            }
        }
        struct Maybe;
        impl<'de> Visitor<'de> for Maybe {
            type Value = Option<Tz>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an IANA time zone name such as Europe/Paris")
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
                d.deserialize_str(Name).map(Some)
            }
        }
        d.deserialize_option(Maybe)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{load_paths, ManifestError};
    use proptest::prelude::*;
    use std::path::PathBuf;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0)
            .single()
            .expect("a valid UTC time")
    }

    fn paris(expr: &str) -> CronSchedule {
        CronSchedule::new(expr, Some(chrono_tz::Europe::Paris)).expect("parses")
    }

    /// The starts of `s` in [from, to), in order.
    fn starts(s: &CronSchedule, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        let mut t = from - TimeDelta::seconds(1);
        while let Some(n) = s.next(t) {
            if n >= to {
                break;
            }
            out.push(n);
            t = n;
        }
        out
    }

    fn case_problems(name: &str) -> (String, Vec<String>) {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/cases/cron-fields")
            .join(name);
        assert!(
            path.is_file(),
            "{} is missing: this test needs the shared cron cases",
            path.display()
        );
        match load_paths(std::slice::from_ref(&path)) {
            Err(ManifestError::Invalid(p)) => (
                path.display().to_string(),
                p.iter().map(|p| p.to_string()).collect(),
            ),
            Ok(_) => panic!("{} loaded, but it must be refused", path.display()),
            Err(e) => panic!("{}: unexpected error {e}", path.display()),
        }
    }

    #[test]
    fn a_quartz_pattern_with_seconds_is_refused_at_its_cron_value() {
        let (file, p) = case_problems("sched-6-fields.yaml");
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with(&format!(
                "{file}:9:35: cron '0 0 8 * * MON' does not parse: it has 6 field(s)"
            )),
            "{p:?}"
        );
        assert!(p[0].contains("did you mean \"0 8 * * MON\"?"), "{p:?}");
    }

    #[test]
    fn a_pattern_with_seconds_and_a_year_is_refused_at_its_cron_value() {
        let (file, p) = case_problems("sched-7-fields.yaml");
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with(&format!(
                "{file}:10:35: cron '0 0 8 * * MON 2026' does not parse: it has 7 field(s)"
            )),
            "{p:?}"
        );
        assert!(p[0].contains("did you mean \"0 8 * * MON\"?"), "{p:?}");
    }

    #[test]
    fn an_eventbridge_pattern_with_a_trailing_year_is_refused_at_its_cron_value() {
        let (file, p) = case_problems("sched-eventbridge-style.yaml");
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with(&format!(
                "{file}:10:35: cron '0 8 * * MON-FRI *' does not parse: it has 6 field(s)"
            )),
            "{p:?}"
        );
        assert!(p[0].contains("did you mean \"0 8 * * MON-FRI\"?"), "{p:?}");
    }

    const ZONED: &str = "name: web
environment: production
region: us-east-1
launch: { ami: ami-12345678, instance_types: [m6i.large] }
capacity: { min: 1, max: 10 }
scaling:
  policies:
    - scheduled: { cron: \"0 8 * * *\", timezone: Europe/Paris, duration: 1h, min: 6 }
";

    fn load_problems(text: &str) -> Vec<String> {
        match crate::manifest::load_str("bad.yaml", text) {
            Err(ManifestError::Invalid(p)) => p.iter().map(|p| p.to_string()).collect(),
            Ok(_) => panic!("loaded, but it must be refused:\n{text}"),
            Err(e) => panic!("unexpected error {e}"),
        }
    }

    #[test]
    fn every_bad_cron_of_a_fleet_is_reported_at_its_own_value() {
        let text = format!(
            "{ZONED}    - scheduled:
        cron: \"0 25 * * *\"
        duration: 1h
        min: 3
deploy:
  freeze:
    - {{ cron: \"0 17 * * FRI\", duration: 1h }}
    - {{ cron: \"0 0 31 2 *\", duration: 1h }}
simulation:
  capacity_per_instance: 100
  traffic:
    synthetic: {{ base: 1, peak: 2, bursts: [{{ cron: \"@daily\", duration: 1h, factor: 2 }}] }}
"
        );
        let p = load_problems(&text);
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(
            p[0].starts_with("bad.yaml:10:15: cron '0 25 * * *' does not parse: hour field"),
            "{p:?}"
        );
        assert!(
            p[1].starts_with("bad.yaml:16:15: freeze cron '0 0 31 2 *' never fires"),
            "{p:?}"
        );
        assert!(
            p[2].starts_with("bad.yaml:20:53: burst cron '@daily' does not parse"),
            "{p:?}"
        );
    }

    #[test]
    fn an_unknown_time_zone_is_refused_at_its_value() {
        let p = load_problems(&ZONED.replace("Europe/Paris", "Europe/Pariss"));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].starts_with("bad.yaml:8:49: "), "{p:?}");
        assert!(
            p[0].contains("unknown time zone 'Europe/Pariss': use an IANA name"),
            "{p:?}"
        );
    }

    #[test]
    fn a_scheduled_floor_with_a_time_zone_opens_at_local_time() {
        let config = crate::manifest::load_str("zoned.yaml", ZONED).expect("loads");
        let Some(crate::manifest::PolicySpec::Scheduled(spec)) =
            config.fleets[0].scaling.policies.first()
        else {
            panic!("a scheduled policy");
        };
        assert_eq!(spec.timezone, Some(chrono_tz::Europe::Paris));
        let floor = |t| crate::policy::scheduled_floor(spec, t);
        // 08:00 in Paris is 06:00 UTC in July, 07:00 UTC in January.
        assert_eq!(floor(utc(2026, 7, 1, 5, 59)), None);
        assert_eq!(floor(utc(2026, 7, 1, 6, 0)), Some(6));
        assert_eq!(floor(utc(2026, 7, 1, 6, 59)), Some(6));
        assert_eq!(floor(utc(2026, 7, 1, 7, 0)), None);
        assert_eq!(floor(utc(2026, 1, 7, 6, 30)), None);
        assert_eq!(floor(utc(2026, 1, 7, 7, 30)), Some(6));
    }

    #[test]
    fn standard_five_field_expressions_are_accepted() {
        for e in [
            "0 7 * * MON-FRI",
            "*/15 * * * *",
            "0 0 1 1 *",
            "30 18 * * TUE,THU",
            "0 9-17/2 * * 1-5",
            "0 0 * jan,Jul sun",
            "0 0 * * FRI-SUN",
            "0 0 * * 7",
            "0 0 29 2 *",
            "0 0 31 * *",
            "0 0 31 2 MON",
            "*,5 * *,1 * *",
            " 5  4 * * *  ",
        ] {
            assert!(
                CronSchedule::parse(e).is_ok(),
                "{e}: {:?}",
                CronSchedule::parse(e)
            );
        }
    }

    #[test]
    fn expressions_that_can_never_fire_are_refused() {
        for e in [
            "0 0 31 2 *",
            "0 0 30 2 *",
            "0 0 31 4,6,9,11 *",
            "0 0 30-31 FEB *",
        ] {
            match CronSchedule::parse(e) {
                Err(CronError::NeverFires { expr, .. }) => assert_eq!(expr, e),
                other => panic!("{e}: {other:?}"),
            }
        }
        let msg = CronSchedule::parse("0 0 31 2 *")
            .expect_err("never fires")
            .to_string();
        assert!(
            msg.starts_with(
                "cron '0 0 31 2 *' never fires: no date matches day-of-month '31' in month '2'"
            ),
            "{msg}"
        );
    }

    #[test]
    fn the_29th_of_february_fires_across_the_skipped_leap_day_of_2100() {
        let s = CronSchedule::parse("0 0 29 2 *").expect("fires every 4 to 8 years");
        assert_eq!(s.next(utc(2096, 3, 1, 0, 0)), Some(utc(2104, 2, 29, 0, 0)));
        assert_eq!(
            s.previous(utc(2104, 2, 28, 0, 0)),
            Some(utc(2096, 2, 29, 0, 0))
        );
    }

    #[test]
    fn extensions_and_other_field_counts_are_refused_with_a_rewrite() {
        let cases: &[(&str, &str)] = &[
            (
                "0 8 * * ? ",
                "'?' in the day-of-week field is a Quartz/EventBridge placeholder",
            ),
            (
                "0 8 L * *",
                "'L' in the day-of-month field is Quartz's last day (L)",
            ),
            ("0 8 * * 5L", "Quartz's last weekday of the month"),
            ("0 8 15W * *", "Quartz's nearest weekday"),
            ("0 8 * * FRI#2", "Quartz's nth weekday"),
            (
                "0 8 * * +MON",
                "croner's day-of-month AND day-of-week modifier",
            ),
            ("5/15 * * * *", "write the range: 5-59/15"),
            (
                "@daily",
                "the nickname @daily is not standard 5-field cron; write \"0 0 * * *\"",
            ),
            (
                "0 25 * * *",
                "hour field '25': 25 is out of range: hour values are 0-23",
            ),
            ("0 8 * MON *", "'MON' is not a month: write 1-12 or JAN-DEC"),
            (
                "0 22-2 * * *",
                "the range 22-2 runs backwards; cron ranges do not wrap around: write 22-23,0-2",
            ),
            ("*/0 * * * *", "the step '0' must be a number from 1 to 59"),
            ("1,,2 * * * *", "empty item"),
            ("not a cron", "it has 3 field(s)"),
            ("", "it has 0 field(s)"),
            ("0 0 8 * * *", "did you mean \"0 8 * * *\"?"),
        ];
        for (e, want) in cases {
            let msg = CronSchedule::parse(e).expect_err(e).to_string();
            assert!(msg.contains(want), "{e}: {msg}");
            assert!(
                msg.starts_with(&format!("cron '{}' ", e.trim())),
                "{e}: {msg}"
            );
        }
    }

    #[test]
    fn a_schedule_without_a_zone_is_read_in_utc() {
        let s = CronSchedule::new("0 8 * * MON-FRI", None).expect("parses");
        // Friday 2026-07-03 10:00 UTC: the last start was 08:00 UTC that day, the next
        // is Monday 08:00 UTC.
        assert_eq!(
            s.previous(utc(2026, 7, 3, 10, 0)),
            Some(utc(2026, 7, 3, 8, 0))
        );
        assert_eq!(s.next(utc(2026, 7, 3, 10, 0)), Some(utc(2026, 7, 6, 8, 0)));
    }

    #[test]
    fn weekday_mornings_in_paris_are_0600_utc_in_summer_and_0700_utc_in_winter() {
        let s = paris("0 8 * * MON-FRI");
        assert_eq!(s.next(utc(2026, 7, 1, 0, 0)), Some(utc(2026, 7, 1, 6, 0)));
        assert_eq!(s.next(utc(2026, 1, 7, 0, 0)), Some(utc(2026, 1, 7, 7, 0)));
    }

    #[test]
    fn eight_oclock_in_paris_stays_eight_oclock_local_across_both_changes_of_2026() {
        let s = paris("0 8 * * *");
        // Spring forward on Sunday 29 March: CET (+1) before, CEST (+2) from that day.
        assert_eq!(
            starts(&s, utc(2026, 3, 28, 0, 0), utc(2026, 3, 31, 0, 0)),
            vec![
                utc(2026, 3, 28, 7, 0),
                utc(2026, 3, 29, 6, 0),
                utc(2026, 3, 30, 6, 0)
            ]
        );
        // Fall back on Sunday 25 October: CEST before, CET from that day.
        assert_eq!(
            starts(&s, utc(2026, 10, 24, 0, 0), utc(2026, 10, 27, 0, 0)),
            vec![
                utc(2026, 10, 24, 6, 0),
                utc(2026, 10, 25, 7, 0),
                utc(2026, 10, 26, 7, 0)
            ]
        );
        // The window open at 08:30 local on the change days started at 08:00 local.
        let hour = TimeDelta::hours(1);
        assert_eq!(
            s.window_start(utc(2026, 3, 29, 6, 30), hour),
            Some(utc(2026, 3, 29, 6, 0))
        );
        assert_eq!(
            s.window_start(utc(2026, 10, 25, 7, 30), hour),
            Some(utc(2026, 10, 25, 7, 0))
        );
        assert_eq!(s.window_start(utc(2026, 10, 25, 6, 30), hour), None);
    }

    #[test]
    fn a_fixed_start_in_the_spring_forward_gap_starts_when_the_gap_ends() {
        // 02:30 does not exist in Paris on 29 March 2026 (02:00 CET -> 03:00 CEST, at
        // 01:00 UTC): that day's start is 03:00 CEST, 01:00 UTC; the days around it are
        // 02:30 local.
        let s = paris("30 2 * * *");
        assert_eq!(
            starts(&s, utc(2026, 3, 28, 0, 0), utc(2026, 3, 31, 0, 0)),
            vec![
                utc(2026, 3, 28, 1, 30),
                utc(2026, 3, 29, 1, 0),
                utc(2026, 3, 30, 0, 30)
            ]
        );
        assert_eq!(
            s.previous(utc(2026, 3, 29, 1, 0)),
            Some(utc(2026, 3, 29, 1, 0))
        );
        assert_eq!(
            s.previous(utc(2026, 3, 29, 0, 59)),
            Some(utc(2026, 3, 28, 1, 30))
        );
    }

    #[test]
    fn a_wildcard_schedule_has_no_starts_in_the_spring_forward_gap() {
        // Every half hour of 02:xx local: on 29 March 2026 that hour never happens.
        let s = paris("*/30 2 * * *");
        assert_eq!(
            starts(&s, utc(2026, 3, 28, 0, 0), utc(2026, 3, 31, 0, 0)),
            vec![
                utc(2026, 3, 28, 1, 0),  // 02:00 CET
                utc(2026, 3, 28, 1, 30), // 02:30 CET
                utc(2026, 3, 30, 0, 0),  // 02:00 CEST
                utc(2026, 3, 30, 0, 30), // 02:30 CEST
            ]
        );
        assert_eq!(
            s.previous(utc(2026, 3, 29, 12, 0)),
            Some(utc(2026, 3, 28, 1, 30))
        );
    }

    #[test]
    fn a_fixed_start_in_the_repeated_autumn_hour_fires_once() {
        // 02:30 happens twice in Paris on 25 October 2026: 00:30 UTC (CEST) and 01:30 UTC
        // (CET). It starts at the first only.
        let s = paris("30 2 * * *");
        assert_eq!(
            starts(&s, utc(2026, 10, 24, 0, 0), utc(2026, 10, 27, 0, 0)),
            vec![
                utc(2026, 10, 24, 0, 30),
                utc(2026, 10, 25, 0, 30),
                utc(2026, 10, 26, 1, 30)
            ]
        );
        // During the second 02:30, the last start is still the first one.
        assert_eq!(
            s.previous(utc(2026, 10, 25, 1, 45)),
            Some(utc(2026, 10, 25, 0, 30))
        );
        assert_eq!(
            s.next(utc(2026, 10, 25, 1, 0)),
            Some(utc(2026, 10, 26, 1, 30))
        );
    }

    #[test]
    fn a_wildcard_schedule_starts_in_both_passes_of_the_repeated_hour() {
        let s = paris("*/30 2 * * *");
        assert_eq!(
            starts(&s, utc(2026, 10, 24, 12, 0), utc(2026, 10, 27, 0, 0)),
            vec![
                utc(2026, 10, 25, 0, 0),  // 02:00 CEST
                utc(2026, 10, 25, 0, 30), // 02:30 CEST
                utc(2026, 10, 25, 1, 0),  // 02:00 CET
                utc(2026, 10, 25, 1, 30), // 02:30 CET
                utc(2026, 10, 26, 1, 0),  // 02:00 CET
                utc(2026, 10, 26, 1, 30), // 02:30 CET
            ]
        );
        assert_eq!(
            s.previous(utc(2026, 10, 25, 1, 20)),
            Some(utc(2026, 10, 25, 1, 0))
        );
        assert_eq!(
            s.previous(utc(2026, 10, 25, 0, 50)),
            Some(utc(2026, 10, 25, 0, 30))
        );
    }

    #[test]
    fn an_unknown_zone_is_refused_with_a_suggestion() {
        assert_eq!(parse_zone("Europe/Paris"), Ok(chrono_tz::Europe::Paris));
        let e = parse_zone("europe/paris").expect_err("case matters");
        assert!(e.contains("did you mean Europe/Paris?"), "{e}");
        let e = parse_zone("Mars/Olympus").expect_err("not a zone");
        assert!(e.contains("use an IANA name such as Europe/Paris"), "{e}");
    }

    /// One field of a random expression: values, ranges, steps and lists, in range.
    fn field(min: u16, max: u16) -> impl Strategy<Value = String> {
        let item = prop_oneof![
            Just("*".to_string()),
            (min..=max).prop_map(|v| v.to_string()),
            (min..=max, min..=max).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
            (1..=max).prop_map(|s| format!("*/{s}")),
            (min..=max, min..=max, 1..=max).prop_map(|(a, b, s)| format!(
                "{}-{}/{s}",
                a.min(b),
                a.max(b)
            )),
        ];
        proptest::collection::vec(item, 1..4).prop_map(|v| v.join(","))
    }

    fn expression() -> impl Strategy<Value = String> {
        (
            field(0, 59),
            field(0, 23),
            field(1, 31),
            field(1, 12),
            field(0, 7),
        )
            .prop_map(|(a, b, c, d, e)| format!("{a} {b} {c} {d} {e}"))
    }

    fn zone() -> impl Strategy<Value = Tz> {
        prop_oneof![
            Just(Tz::UTC),
            Just(chrono_tz::Europe::Paris),
            Just(chrono_tz::America::New_York),
            Just(chrono_tz::Australia::Lord_Howe),
            Just(chrono_tz::Pacific::Apia),
        ]
    }

    /// A moment from 2000 to 2100, or within a day and a half of a clock change of the
    /// zones above (Paris and New York in 2026, Lord Howe's half-hour changes, Apia's
    /// skipped day in 2011), where the interesting cases are.
    fn moment() -> impl Strategy<Value = DateTime<Utc>> {
        let changes = vec![
            1_774_746_000i64,
            1_792_890_000,
            1_772_953_200,
            1_793_512_800,
            1_775_314_800,
            1_791_041_400,
            1_325_239_200,
        ];
        prop_oneof![
            946_684_800i64..4_102_444_800i64,
            prop::sample::select(changes).prop_flat_map(|t| t - 129_600..t + 129_600),
        ]
        .prop_map(|secs| DateTime::from_timestamp(secs, 0).expect("in range"))
    }

    /// Sparse schedules around the small hours, where clocks change.
    fn small_hours_expression() -> impl Strategy<Value = String> {
        let minute = prop_oneof![
            (0u16..60).prop_map(|m| m.to_string()),
            Just("*/15".to_string()),
            Just("0,30".to_string()),
        ];
        let hour = prop_oneof![
            (0u16..5).prop_map(|h| h.to_string()),
            Just("1-3".to_string()),
            Just("*".to_string()),
            Just("*/2".to_string()),
        ];
        let dow = prop_oneof![Just("*".to_string()), (0u16..8).prop_map(|d| d.to_string())];
        (minute, hour, dow).prop_map(|(m, h, d)| format!("{m} {h} * * {d}"))
    }

    /// Whether `t` (a whole minute) is a start of `s`, decided minute by minute from the
    /// rules in the module doc, without the search the schedule does.
    fn is_start_by_the_rules(s: &CronSchedule, t: DateTime<Utc>) -> bool {
        let wall = |t: DateTime<Utc>| t.with_timezone(&s.zone).naive_local();
        let matches = |n: NaiveDateTime| s.cron.is_time_matching(&n.and_utc()).unwrap_or(false);
        let here = wall(t);
        if matches(here) {
            let first_pass = match s.zone.from_local_datetime(&here) {
                LocalResult::Ambiguous(a, b) => t == a.min(b).with_timezone(&Utc),
                _ => true,
            };
            return s.wildcard || first_pass;
        }
        // A fixed-time start skipped by a gap that ends at `t`.
        let mut n = wall(t - TimeDelta::minutes(1)) + TimeDelta::minutes(1);
        while !s.wildcard && n < here {
            if matches(n) {
                return true;
            }
            n += TimeDelta::minutes(1);
        }
        false
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn a_random_expression_parses_with_previous_at_or_before_now_before_next_or_is_refused(
            expr in expression(),
            zone in zone(),
            now in moment(),
        ) {
            match CronSchedule::new(&expr, Some(zone)) {
                Ok(s) => {
                    let prev = s.previous(now).expect("a previous start");
                    let next = s.next(now).expect("a next start");
                    prop_assert!(prev <= now && now < next, "{expr} in {zone}: {prev} {now} {next}");
                    // No start between the two: each finds the other.
                    prop_assert_eq!(s.next(prev), Some(next), "{} in {}", expr, zone);
                    prop_assert_eq!(s.previous(next - TimeDelta::seconds(1)), Some(prev), "{} in {}", expr, zone);
                    prop_assert_eq!(s.previous(next), Some(next), "{} in {}", expr, zone);
                }
                Err(CronError::NeverFires { .. }) => {}
                Err(e) => prop_assert!(false, "{expr}: unexpected refusal {e}"),
            }
        }

        #[test]
        fn random_text_never_panics(text in "\\PC{0,40}", fields in "[0-9*/,LW#?A-Za-z@+-]{0,6}( [0-9*/,LW#?A-Za-z@+-]{0,6}){0,7}") {
            let now = DateTime::from_timestamp(1_780_000_000, 0).expect("in range");
            for t in [text, fields] {
                if let Ok(s) = CronSchedule::parse(&t) {
                    let _ = (s.previous(now), s.next(now));
                }
            }
        }
    }

    proptest! {
        // Each case walks three days minute by minute: fewer cases.
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn around_clock_changes_previous_and_next_are_the_starts_the_rules_give(
            expr in small_hours_expression(),
            zone in zone(),
            now in moment(),
        ) {
            let s = CronSchedule::new(&expr, Some(zone)).expect("a valid expression");
            let now = now.with_second(0).expect("whole minute");
            let span = 36 * 60;
            let starts: Vec<DateTime<Utc>> = (-span..=span)
                .map(|m| now + TimeDelta::minutes(m))
                .filter(|t| is_start_by_the_rules(&s, *t))
                .collect();
            if let Some(want) = starts.iter().rev().find(|t| **t <= now) {
                prop_assert_eq!(s.previous(now), Some(*want), "{} in {}", expr, zone);
            }
            if let Some(want) = starts.iter().find(|t| **t > now) {
                prop_assert_eq!(s.next(now), Some(*want), "{} in {}", expr, zone);
            }
        }
    }
}
