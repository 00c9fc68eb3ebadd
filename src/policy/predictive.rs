//! Predictive scaling: forecast the fleet's demand for the time an instance launched now
//! would start serving, and hold enough instances for it plus a headroom sized from how
//! wrong the recent forecasts were.
//!
//! The forecast for slot `k` from data through slot `j` (slots are metric periods) is the
//! largest of three estimates, each cheap and each covering a different failure:
//! - **seasonal**: the current level (mean of the last 5 slots) times how demand changed
//!   between the same two times of day on the last 3 days and a week ago (median of the
//!   ratios). It sees the morning ramp before it starts.
//! - **trend**: the level plus the recent slope carried forward. It catches a rise the
//!   seasons do not know (a launch, a flash crowd).
//! - **latest**: the newest value, so a step up is followed on the next pass.
//!
//! The headroom is calibrated, not guessed: every closed slot is scored against the
//! forecast that would have been made for it one lead time earlier, and the residuals
//! `z = (actual - forecast) / forecast^0.75` of the last 3 days are kept. The headroom
//! multiplier `Z` is the smallest one for which those residuals would have left at most
//! `loss_budget` of the requests unserved. The exponent sits between Poisson noise (0.5)
//! and purely proportional noise (1): busy minutes are relatively calmer than quiet ones.
//!
//! Because the scores come from history alone, a restarted daemon that reads 14 days of
//! history back is calibrated on its first pass.

use super::{ceil_count, Observation, Vote};
use crate::cloud::MetricSeries;
use crate::manifest::{FleetSpec, PredictiveSpec};
use chrono::{DateTime, Utc};
use std::collections::VecDeque;

/// Slots averaged for the current level.
const LEVEL: i64 = 5;
/// Daily cycles looked back for the seasonal ratio (plus one weekly).
const DAYS_BACK: i64 = 3;
/// Residuals kept for calibration, in days.
const SCORE_DAYS: i64 = 3;
/// Below this many scored slots the calibration is not trusted and a fixed headroom is used.
const MIN_SCORES: usize = 360;
/// Headroom before calibration: 50% over the forecast.
const COLD_HEADROOM: f64 = 0.5;
/// The calibration is redone every this many newly scored slots.
const RECALIBRATE_EVERY: i64 = 30;

fn noise_exponent() -> f64 {
    std::env::var("COXSWAIN_ALPHA")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.75)
}

/// Noise scale of a forecast `f`: residuals are measured in these units.
fn scale(f: f64, alpha: f64) -> f64 {
    f.max(1.0).powf(alpha)
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Score {
    z: f64,
    s: f64,
    actual: f64,
}

/// One demand series and what the forecasts made from it got wrong. Fed by
/// [`DemandModel::ingest`]; read by the policy.
#[derive(Debug, Clone, PartialEq)]
pub struct DemandModel {
    /// Metric period, seconds.
    period: i64,
    /// Slots from launch to serving, plus one for the period still open and one for the
    /// metric's publication lag: how far ahead of the newest datapoint a forecast looks.
    lead: i64,
    alpha: f64,
    loss_budget: f64,
    /// Slot number (unix time / period) of `values[0]`.
    base: i64,
    /// Demand per slot; NaN where nothing was read.
    values: VecDeque<f64>,
    keep: usize,
    /// Newest slot scored against its forecast.
    scored: Option<i64>,
    scores: VecDeque<Score>,
    score_window: usize,
    /// The calibrated headroom multiplier, once enough slots are scored.
    z: Option<f64>,
}

impl DemandModel {
    pub fn new(spec: &PredictiveSpec) -> DemandModel {
        let period = spec.metric.period.as_secs().max(60) as i64;
        let per_day = 86_400 / period;
        let keep = (spec.history.as_secs() as i64 / period).max(8 * per_day) as usize;
        DemandModel {
            period,
            lead: (spec.boot.as_secs() as i64 + period - 1) / period + 2,
            alpha: noise_exponent(),
            loss_budget: spec.loss_budget.0,
            base: 0,
            values: VecDeque::new(),
            keep,
            scored: None,
            scores: VecDeque::new(),
            score_window: (SCORE_DAYS * per_day) as usize,
            z: None,
        }
    }

    /// Whether this model was built for `spec` (a reload may change the policy).
    pub fn fits(&self, spec: &PredictiveSpec) -> bool {
        let fresh = DemandModel::new(spec);
        fresh.period == self.period
            && fresh.lead == self.lead
            && fresh.loss_budget == self.loss_budget
            && fresh.keep == self.keep
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    fn slot_of(&self, t: DateTime<Utc>) -> i64 {
        t.timestamp().div_euclid(self.period)
    }

    fn newest_slot(&self) -> Option<i64> {
        if self.values.is_empty() {
            None
        } else {
            Some(self.base + self.values.len() as i64 - 1)
        }
    }

    fn at(&self, slot: i64) -> Option<f64> {
        let i = slot - self.base;
        if i < 0 {
            return None;
        }
        self.values
            .get(i as usize)
            .copied()
            .filter(|v| v.is_finite())
    }

    /// Mean of the known values in `from..=to`; None if fewer than half are known.
    fn mean(&self, from: i64, to: i64) -> Option<f64> {
        let (mut sum, mut n) = (0.0, 0);
        for s in from..=to {
            if let Some(v) = self.at(s) {
                sum += v;
                n += 1;
            }
        }
        (n * 2 > to - from + 1).then(|| sum / n as f64)
    }

    /// Take in datapoints (stamped with their period's start). Newer values overwrite
    /// older reads of the same slot; slots older than the kept history are dropped.
    pub fn ingest(&mut self, series: &MetricSeries) {
        for &(t, v) in &series.points {
            if !v.is_finite() {
                continue;
            }
            let slot = self.slot_of(t);
            if self.values.is_empty() {
                self.base = slot;
            }
            if slot < self.base {
                continue;
            }
            let i = (slot - self.base) as usize;
            if i >= self.values.len() {
                // Gaps (no datapoint at all) stay unknown, not zero.
                self.values.resize(i + 1, f64::NAN);
            }
            self.values[i] = v.max(0.0);
        }
        while self.values.len() > self.keep {
            self.values.pop_front();
            self.base += 1;
        }
        self.score_new();
    }

    /// Score every slot that closed since the last call against the forecast made for it
    /// one lead time earlier.
    fn score_new(&mut self) {
        let Some(newest) = self.newest_slot() else {
            return;
        };
        let first = match self.scored {
            Some(s) => s + 1,
            None => self.base + self.lead + LEVEL,
        }
        .max(newest.saturating_sub(self.score_window as i64));
        for k in first..=newest {
            self.scored = Some(k);
            let (Some(actual), Some(f)) = (self.at(k), self.forecast(k - self.lead, k)) else {
                continue;
            };
            let s = scale(f, self.alpha);
            self.scores.push_back(Score {
                z: (actual - f) / s,
                s,
                actual,
            });
            if self.scores.len() > self.score_window {
                self.scores.pop_front();
            }
            // On fixed slot numbers, so a restarted daemon recalibrates on the same slots.
            if k.rem_euclid(RECALIBRATE_EVERY) == 0 || self.z.is_none() {
                self.calibrate();
            }
        }
    }

    /// The smallest multiplier `Z` for which serving `forecast + Z * scale` would have left
    /// at most `loss_budget` of the scored requests unserved.
    fn calibrate(&mut self) {
        if self.scores.len() < MIN_SCORES {
            self.z = None;
            return;
        }
        let total: f64 = self.scores.iter().map(|s| s.actual).sum();
        let budget = total * self.loss_budget;
        let mut sorted: Vec<Score> = self.scores.iter().copied().collect();
        sorted.sort_by(|a, b| b.z.total_cmp(&a.z));
        // Walking down from the largest residual: with the residuals above Z active,
        // loss(Z) = sum(s * z) - Z * sum(s), which grows as Z falls. Stop at the first
        // residual whose own value would already exceed the budget: the crossing lies
        // between it and the one before.
        let (mut sum_s, mut sum_sz) = (0.0, 0.0);
        for sc in &sorted {
            if sum_sz - sc.z * sum_s > budget {
                break;
            }
            sum_s += sc.s;
            sum_sz += sc.s * sc.z;
        }
        let z = if sum_s > 0.0 {
            (sum_sz - budget) / sum_s
        } else {
            0.0
        };
        self.z = Some(z.max(-2.0));
    }

    /// Demand forecast for slot `k` from data through slot `j`.
    fn forecast(&self, j: i64, k: i64) -> Option<f64> {
        let level = self.mean(j - LEVEL + 1, j)?;
        let latest = self.at(j).unwrap_or(level);
        let h = (k - j) as f64;
        // Trend: slope between the last two level windows, carried from their centre.
        let trend = self
            .mean(j - 2 * LEVEL + 1, j - LEVEL)
            .map(|prev| level + (level - prev) / LEVEL as f64 * (h + (LEVEL - 1) as f64 / 2.0))
            .unwrap_or(level);
        // Seasonal: how the same stretch of time went on earlier days and a week ago.
        let per_day = 86_400 / self.period;
        let mut ratios: [f64; DAYS_BACK as usize + 1] = [0.0; DAYS_BACK as usize + 1];
        let mut n = 0;
        let backs = (1..=DAYS_BACK)
            .map(|d| d * per_day)
            .chain(std::iter::once(7 * per_day));
        for back in backs {
            let then = self.mean(j - back - LEVEL + 1, j - back);
            let later = self.mean(k - back - 2, k - back + 2);
            if let (Some(then), Some(later)) = (then, later) {
                if then > 0.0 {
                    ratios[n] = (later / then).clamp(0.25, 4.0);
                    n += 1;
                }
            }
        }
        let seasonal = if n > 0 {
            let r = &mut ratios[..n];
            r.sort_by(f64::total_cmp);
            let med = if n % 2 == 1 {
                r[n / 2]
            } else {
                (r[n / 2 - 1] + r[n / 2]) / 2.0
            };
            level * med
        } else {
            level
        };
        Some(seasonal.max(trend).max(latest).max(0.0))
    }
}

pub(super) fn vote(
    spec: &PredictiveSpec,
    fleet: &FleetSpec,
    obs: &Observation,
    model: Option<&DemandModel>,
    stale_after: chrono::Duration,
) -> (Vote, String) {
    let name = &spec.metric.name;
    let Some(capacity) = spec.capacity(fleet).filter(|c| *c > 0.0) else {
        return (
            Vote::Hold,
            "no capacity_per_instance to size with; holding".into(),
        );
    };
    let Some(model) = model.filter(|m| !m.is_empty()) else {
        return (Vote::Hold, format!("{name}: no history yet; holding"));
    };
    let Some(j) = model.newest_slot() else {
        return (Vote::Hold, format!("{name}: no history yet; holding"));
    };
    let newest_end = (j + 1) * model.period;
    let age = obs.now.timestamp() - newest_end;
    if age > stale_after.num_seconds() {
        return (
            Vote::Hold,
            format!(
                "{name}: newest datapoint is {age}s old (stale after {}s); holding",
                stale_after.num_seconds()
            ),
        );
    }
    // Cover every slot from now until an instance launched now is serving: a retired
    // instance cannot be back sooner than that.
    let now_slot = obs.now.timestamp().div_euclid(model.period);
    let until = now_slot + (spec.boot.as_secs() as i64 + model.period - 1) / model.period;
    let mut need: f64 = 0.0;
    let mut peak_forecast: f64 = 0.0;
    for k in (j + 1).max(now_slot)..=until {
        let Some(f) = model.forecast(j, k) else {
            return (
                Vote::Hold,
                format!("{name}: too few recent datapoints to forecast; holding"),
            );
        };
        let with_headroom = match model.z {
            Some(z) => f + z * scale(f, model.alpha),
            None => f * (1.0 + COLD_HEADROOM),
        };
        need = need.max(with_headroom);
        peak_forecast = peak_forecast.max(f);
    }
    let wanted = ceil_count(need / capacity);
    let headroom = match model.z {
        Some(z) => format!("headroom z={z:.2} from recent errors"),
        None => format!("{:.0}% headroom until calibrated", COLD_HEADROOM * 100.0),
    };
    (
        Vote::Capacity(wanted),
        format!(
            "{name} forecast {peak_forecast:.0}/period by {}, {headroom} → {need:.0} at {capacity:.0}/instance wants {wanted}",
            DateTime::from_timestamp((until + 1) * model.period, 0)
                .map(|t| t.format("%H:%M").to_string())
                .unwrap_or_default()
        ),
    )
}

#[cfg(test)]
impl DemandModel {
    pub(super) fn budget(&self) -> f64 {
        self.loss_budget
    }

    pub(super) fn calibrated(&self) -> Option<f64> {
        self.z
    }

    /// (requests lost, requests) had `forecast + z × scale` been served on every scored slot.
    pub(super) fn replay_loss(&self, z: f64) -> (f64, f64) {
        self.scores.iter().fold((0.0, 0.0), |(lost, total), s| {
            (lost + (s.s * (s.z - z)).max(0.0), total + s.actual)
        })
    }
}
