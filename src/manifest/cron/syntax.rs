//! The accepted 5-field syntax: each field's range and names, and the normalization that
//! refuses everything else with a sentence saying what to write instead.

use super::{CronError, CronSchedule};

/// One of the 5 fields: its name, its range, and the names it accepts.
pub(super) struct Field {
    pub(super) name: &'static str,
    pub(super) min: u16,
    pub(super) max: u16,
    /// Three-letter names, the first standing for `min` (months) or 0 (days).
    pub(super) names: &'static [&'static str],
}

pub(super) const MONTHS: &[&str] = &[
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
pub(super) const DAYS: &[&str] = &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

pub(super) const FIELDS: [Field; 5] = [
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

pub(super) const DAY_OF_MONTH: usize = 2;
pub(super) const MONTH: usize = 3;
pub(super) const DAY_OF_WEEK: usize = 4;

/// For 6 or 7 fields, the 5-field expression the author most likely meant: a Quartz
/// pattern loses its seconds (first field), an EventBridge one its year (last field).
pub(super) fn suggestion(parts: &[&str]) -> Option<String> {
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
pub(super) fn normalize(
    expr: &str,
    index: usize,
    field: &Field,
    text: &str,
) -> Result<String, CronError> {
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
