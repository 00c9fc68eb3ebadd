//! Injected time. Everything that reads the time or waits goes through a [`Clock`], so the
//! same controller runs on the wall clock, on a sped-up clock (the demo), or on a virtual
//! clock that tests and the simulator advance by hand.
//!
//! This module owns no policy: it only answers "what time is it" and "wait this long".

use chrono::{DateTime, Utc};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A source of time. `sleep` on a virtual clock returns at once after moving time forward,
/// which is what makes 24 simulated hours run in milliseconds.
#[async_trait::async_trait]
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
    async fn sleep(&self, d: Duration);
}

/// The wall clock, optionally sped up: with `speed = 60`, one real second is one minute of
/// clock time (the demo daemon uses this so a newcomer sees a day of traffic in 24 minutes).
#[derive(Debug, Clone)]
pub struct RealClock {
    origin_wall: DateTime<Utc>,
    origin_instant: std::time::Instant,
    /// The clock time at origin; differs from the wall time for a sped-up demo.
    origin_clock: DateTime<Utc>,
    speed: f64,
}

impl RealClock {
    pub fn new() -> Self {
        Self::starting_at(Utc::now(), 1.0)
    }

    /// A clock that starts at `start` and runs `speed` times faster than the wall clock.
    pub fn starting_at(start: DateTime<Utc>, speed: f64) -> Self {
        let speed = if speed.is_finite() && speed > 0.0 {
            speed
        } else {
            1.0
        };
        Self {
            origin_wall: Utc::now(),
            origin_instant: std::time::Instant::now(),
            origin_clock: start,
            speed,
        }
    }

    pub fn speed(&self) -> f64 {
        self.speed
    }

    /// The wall time at which this clock was created.
    pub fn origin_wall(&self) -> DateTime<Utc> {
        self.origin_wall
    }
}

impl Default for RealClock {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait::async_trait]
impl Clock for RealClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = self.origin_instant.elapsed().as_secs_f64() * self.speed;
        self.origin_clock + chrono::Duration::milliseconds((elapsed * 1000.0) as i64)
    }

    async fn sleep(&self, d: Duration) {
        tokio::time::sleep(d.div_f64(self.speed)).await;
    }
}

/// A clock that moves only when told to. Cloning shares the same time.
#[derive(Debug, Clone)]
pub struct VirtualClock {
    now: Arc<Mutex<DateTime<Utc>>>,
}

impl VirtualClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        Self {
            now: Arc::new(Mutex::new(start)),
        }
    }

    pub fn advance(&self, d: Duration) {
        let mut now = self.now.lock().unwrap_or_else(|p| p.into_inner());
        *now += chrono::Duration::from_std(d).unwrap_or(chrono::Duration::zero());
    }

    pub fn set(&self, t: DateTime<Utc>) {
        *self.now.lock().unwrap_or_else(|p| p.into_inner()) = t;
    }
}

#[async_trait::async_trait]
impl Clock for VirtualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn sleep(&self, d: Duration) {
        self.advance(d);
        // Let other tasks run, as a real sleep would.
        tokio::task::yield_now().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn virtual_clock_moves_only_when_slept_or_advanced() {
        let start = DateTime::parse_from_rfc3339("2026-01-05T07:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .expect("valid literal");
        let clock = VirtualClock::new(start);
        assert_eq!(clock.now(), start);
        clock.sleep(Duration::from_secs(90)).await;
        assert_eq!(clock.now(), start + chrono::Duration::seconds(90));
        let shared = clock.clone();
        shared.advance(Duration::from_secs(30));
        assert_eq!(clock.now(), start + chrono::Duration::seconds(120));
    }

    #[test]
    fn sped_up_clock_runs_faster_than_the_wall() {
        let start = Utc::now();
        let clock = RealClock::starting_at(start, 600.0);
        std::thread::sleep(Duration::from_millis(50));
        // 50 ms of wall time at 600x is 30 s of clock time.
        assert!(clock.now() - start >= chrono::Duration::seconds(25));
    }
}
