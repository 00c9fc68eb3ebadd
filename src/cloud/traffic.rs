//! Demand models for the simulated region: a synthetic week of education-platform traffic,
//! or a replayed `timestamp,requests` trace. Pure functions of time.

use crate::manifest::{CronSchedule, SyntheticTraffic, TrafficSpec};
use chrono::{DateTime, Datelike, NaiveDateTime, Timelike, Utc, Weekday};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("cannot read trace {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Bad {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// A trace: requests per minute, one value per minute from `start`.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    pub start: DateTime<Utc>,
    /// Requests per minute, per minute (coarser traces are spread evenly).
    pub per_minute: Vec<f64>,
    /// The resolution found in the file, in minutes.
    pub resolution_minutes: u32,
    /// Stretches with no rows for more than [`GAP_MINUTES`] (a logging outage, a window
    /// left out of the file), as minute ranges `[from, to)`. They read as zero in
    /// `per_minute`, but they are not traffic: `simulate` leaves them out.
    pub gaps: Vec<(usize, usize)>,
}

/// Missing rows up to this long are quiet minutes (zero requests); longer is a gap.
pub const GAP_MINUTES: i64 = 60;

impl Trace {
    /// Read `timestamp,requests` (header optional). The resolution is the smallest gap
    /// between consecutive timestamps; gaps are filled with zeros.
    pub fn load(path: &Path) -> Result<Trace, TraceError> {
        let text = std::fs::read_to_string(path).map_err(|source| TraceError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Trace, TraceError> {
        let bad = |line: usize, message: String| TraceError::Bad {
            path: path.to_path_buf(),
            line,
            message,
        };
        let mut rows: Vec<(DateTime<Utc>, f64)> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || (i == 0 && line.starts_with("timestamp")) {
                continue;
            }
            let (ts, n) = line
                .split_once(',')
                .ok_or_else(|| bad(i + 1, "expected `timestamp,requests`".into()))?;
            let t = parse_time(ts.trim())
                .ok_or_else(|| bad(i + 1, format!("'{ts}' is not an ISO 8601 timestamp")))?;
            let n: f64 = n
                .trim()
                .parse()
                .map_err(|_| bad(i + 1, format!("'{n}' is not a number of requests")))?;
            if !(n.is_finite() && n >= 0.0) {
                return Err(bad(i + 1, format!("request count {n} must be >= 0")));
            }
            if let Some((prev, _)) = rows.last() {
                if t <= *prev {
                    return Err(bad(i + 1, "timestamps must increase".into()));
                }
            }
            rows.push((t, n));
        }
        let Some(&(start, _)) = rows.first() else {
            return Err(bad(1, "the trace has no rows".into()));
        };
        let resolution_minutes = rows
            .windows(2)
            .map(|w| (w[1].0 - w[0].0).num_minutes())
            .filter(|m| *m > 0)
            .min()
            .unwrap_or(1)
            .max(1) as u32;
        let last = rows.last().map(|r| r.0).unwrap_or(start);
        let minutes = (last - start).num_minutes() as usize + resolution_minutes as usize;
        let mut per_minute = vec![0.0; minutes];
        let gaps = rows
            .windows(2)
            .filter_map(|w| {
                let from = (w[0].0 - start).num_minutes() + i64::from(resolution_minutes);
                let to = (w[1].0 - start).num_minutes();
                (to - from > GAP_MINUTES).then_some((from as usize, to as usize))
            })
            .collect();
        for (t, n) in rows {
            let at = (t - start).num_minutes() as usize;
            let share = n / f64::from(resolution_minutes);
            for slot in per_minute
                .iter_mut()
                .skip(at)
                .take(resolution_minutes as usize)
            {
                *slot = share;
            }
        }
        Ok(Trace {
            start,
            per_minute,
            resolution_minutes,
            gaps,
        })
    }
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(t.and_utc());
        }
    }
    s.parse::<i64>()
        .ok()
        .and_then(|e| DateTime::from_timestamp(e, 0))
}

/// Demand in requests per minute as a function of time.
#[derive(Debug, Clone)]
pub enum Demand {
    Synthetic {
        spec: SyntheticTraffic,
        bursts: Vec<(CronSchedule, chrono::Duration, f64)>,
    },
    /// Replayed from `origin` (the simulation's start), looping.
    Trace {
        trace: Trace,
        scale: f64,
        origin: DateTime<Utc>,
    },
}

impl Demand {
    pub fn from_spec(spec: &TrafficSpec, origin: DateTime<Utc>) -> Result<Demand, TraceError> {
        Ok(match spec {
            TrafficSpec::Synthetic(s) => Demand::Synthetic {
                bursts: s
                    .bursts
                    .iter()
                    .filter_map(|b| {
                        // The loader refuses a bad cron; one built in code is skipped.
                        CronSchedule::new(&b.cron, b.timezone)
                            .ok()
                            .map(|c| (c, b.duration.chrono(), b.factor))
                    })
                    .collect(),
                spec: s.clone(),
            },
            TrafficSpec::Trace(t) => Demand::Trace {
                trace: Trace::load(&t.path)?,
                scale: t.scale,
                origin,
            },
        })
    }

    /// Requests per minute at `t`.
    pub fn at(&self, t: DateTime<Utc>) -> f64 {
        match self {
            Demand::Synthetic { spec, bursts } => synthetic(spec, bursts, t),
            Demand::Trace {
                trace,
                scale,
                origin,
            } => {
                let n = trace.per_minute.len().max(1) as i64;
                let m = (t - *origin).num_minutes().rem_euclid(n) as usize;
                trace.per_minute.get(m).copied().unwrap_or(0.0) * scale
            }
        }
    }
}

fn synthetic(
    s: &SyntheticTraffic,
    bursts: &[(CronSchedule, chrono::Duration, f64)],
    t: DateTime<Utc>,
) -> f64 {
    let hour = f64::from(t.hour()) + f64::from(t.minute()) / 60.0;
    let phase = (hour - s.peak_hour) / 24.0 * std::f64::consts::TAU;
    // A raised cosine squared: a broad afternoon peak and a long quiet night, the shape of
    // a site whose users are mostly in a few neighbouring time zones.
    let shape = ((1.0 + phase.cos()) / 2.0).powi(2);
    let mut d = s.base + (s.peak - s.base) * shape;
    if matches!(t.weekday(), Weekday::Sat | Weekday::Sun) {
        d *= s.weekend_factor;
    }
    for (cron, dur, factor) in bursts {
        if cron.window_start(t, *dur).is_some() {
            d *= factor;
        }
    }
    if s.noise > 0.0 {
        let minute = t.timestamp().div_euclid(60) as u64;
        d *= 1.0 + s.noise * (2.0 * unit_hash(s.seed, minute) - 1.0);
    }
    d.max(0.0)
}

/// A deterministic pseudo-random number in [0, 1) from (seed, n): splitmix64.
fn unit_hash(seed: u64, n: u64) -> f64 {
    let mut z = seed
        .wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coarse_traces_are_spread_per_minute_and_gaps_are_zero() {
        let text = "timestamp,requests\n2020-01-01T00:00:00,50\n2020-01-01T00:05:00,100\n2020-01-01T00:15:00,10\n";
        let t = Trace::parse(Path::new("t.csv"), text).expect("valid trace");
        assert_eq!(t.resolution_minutes, 5);
        assert_eq!(t.per_minute.len(), 20);
        assert_eq!(t.per_minute[0], 10.0);
        assert_eq!(t.per_minute[7], 20.0);
        assert_eq!(t.per_minute[12], 0.0);
        assert_eq!(t.per_minute[17], 2.0);
        assert!(t.gaps.is_empty(), "5 missing minutes are quiet, not a gap");
        let long = "2020-01-01T00:00:00,5\n2020-01-01T00:01:00,5\n2020-01-01T03:00:00,7\n";
        let t = Trace::parse(Path::new("t.csv"), long).expect("valid trace");
        assert_eq!(t.gaps, vec![(2, 180)]);
        assert_eq!(t.per_minute.len(), 181);
    }

    #[test]
    fn bad_rows_are_reported_with_their_line() {
        let err = Trace::parse(
            Path::new("t.csv"),
            "timestamp,requests\n2020-01-01T00:00:00,x\n",
        )
        .expect_err("must fail");
        assert!(err.to_string().contains("t.csv:2"), "{err}");
    }

    #[test]
    fn synthetic_week_peaks_in_the_afternoon_and_dips_at_weekends() {
        let spec = SyntheticTraffic {
            base: 100.0,
            peak: 1000.0,
            peak_hour: 14.0,
            weekend_factor: 0.5,
            bursts: vec![],
            noise: 0.0,
            seed: 0,
        };
        let d = Demand::Synthetic {
            spec,
            bursts: vec![],
        };
        let at = |s: &str| {
            d.at(DateTime::parse_from_rfc3339(s)
                .expect("literal")
                .with_timezone(&Utc))
        };
        // 2026-01-05 is a Monday.
        assert!((at("2026-01-05T14:00:00Z") - 1000.0).abs() < 1e-6);
        assert!((at("2026-01-05T02:00:00Z") - 100.0).abs() < 1e-6);
        assert!((at("2026-01-10T14:00:00Z") - 500.0).abs() < 1e-6);
    }
}
