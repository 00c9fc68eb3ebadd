//! The embedded default: a simulated region with the demo manifest, so that `coxswain run`
//! shows fleets scaling without an AWS account or any file.

use chrono::{DateTime, TimeZone, Utc};

/// The demo manifest (also validated by the tests, like every example).
pub const MANIFEST: &str = include_str!("../examples/sim-demo.yaml");

/// Monday 2026-01-05 07:30 UTC: the morning ramp, just before the demo's first burst.
pub fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 5, 7, 30, 0)
        .single()
        .unwrap_or_default()
}

/// One real second is a simulated minute.
pub const SPEED: f64 = 60.0;
