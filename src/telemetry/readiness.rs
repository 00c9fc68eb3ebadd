//! Readiness (`/readyz`): ready once a pass has ended, and while passes keep ending.

use std::time::{Duration, Instant};

/// When passes end, and how long one may take before the loop counts as stuck.
pub(super) struct Readiness {
    last_pass: Option<Instant>,
    passes: u64,
    /// How long until the next pass is due (set by the daemon; `/readyz` allows three).
    next_pass_in: Option<Duration>,
    /// Without `next_pass_in`: three poll intervals, at least a minute.
    stale_after: Duration,
}

impl Readiness {
    /// `poll` is the daemon's poll interval.
    pub(super) fn new(poll: Duration) -> Self {
        Readiness {
            last_pass: None,
            passes: 0,
            next_pass_in: None,
            stale_after: (poll * 3).max(Duration::from_secs(60)),
        }
    }

    pub(super) fn pass_ended(&mut self) {
        self.passes += 1;
        self.last_pass = Some(Instant::now());
    }

    pub(super) fn next_pass_in(&mut self, wait: Duration) {
        self.next_pass_in = Some(wait);
    }

    /// Ready: a pass has ended, recently; `Ok` holds the passes made, `Err` the reason.
    pub(super) fn ready(&self) -> Result<u64, String> {
        let limit = self
            .next_pass_in
            .map_or(self.stale_after, |w| (w * 3).max(Duration::from_secs(60)));
        match self.last_pass {
            None => Err("no reconcile pass has finished yet".into()),
            Some(t) if t.elapsed() > limit => Err(format!(
                "the last pass ended {}s ago (limit {}s): the control loop is stuck",
                t.elapsed().as_secs(),
                limit.as_secs()
            )),
            Some(_) => Ok(self.passes),
        }
    }
}
