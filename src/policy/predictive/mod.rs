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
//! The seasonal estimate joins only once it has held up on the fleet's own data: every
//! scored slot is scored against the forecast with it and without it, and the seasonal
//! part is used once [`MIN_SCORES`] slots had it, and while, over the last
//! [`SEASONAL_DAYS`] days, reaching the same loss with it would not have taken more than a
//! share [`SEASONAL_TOLERANCE`] more instance-periods than without it. A new fleet, one
//! with less than a day of history, and traffic whose daily shape misleads (it moved, or
//! there is none to follow) are forecast from level, trend and latest alone.
//!
//! Why "not worse" rather than "strictly better": scored in hindsight, a daily shape
//! learned from one to three days looks like a wash, yet it is what catches the next
//! morning's ramp; requiring a clear in-sample gain kept it out for a whole first week
//! and lost more for more cost (BENCHMARKS.md).
//!
//! The headroom is calibrated, not guessed. Every closed slot is scored against the
//! forecast that would have been made for it one lead time earlier. Its error is measured
//! in units of `forecast^0.5 × turbulence` ([`ALPHA`]), where turbulence is the recent
//! (half-life 30 slots) root mean square of the relative errors: a match kicking off or a
//! morning ramp widens the headroom, a calm night narrows it. The last [`SCORE_DAYS`] (14)
//! days of scores are kept, split into regimes: the forecast's size band (under 2
//! instances, 2-3, 4-7, 8-15, 16-31, 32 and up: a few instances' worth of traffic misses by
//! more, relative to its size, than a large fleet's) and whether demand was climbing when
//! the forecast was made. The headroom multiplier of each regime leaves the same share of
//! that regime's errors above it (a regime with under [`MIN_REGIME`] scores takes the
//! pooled errors'; a forecast between two bands' middles gets a blend of the two, so the
//! headroom does not jump at a band's edge), and that share is the largest for which the
//! scored requests would have lost at most `loss_budget`, but never more headroom than
//! leaves 0.2% above it: past that, instances buy almost nothing, and one flash crowd
//! would otherwise set the headroom for days. Under 4 instances a fleet's headroom is
//! priced in whole instances instead (`whole::WholeInstances`): a second instance for a
//! third of one instance's traffic costs a whole one, so it is bought only where the
//! requests it would have saved are worth it at the same marginal share. The tails are
//! rare events, so the window is long (chosen by leave-one-trace-out from 3, 7 and 14
//! days); the sorted errors are kept between calibrations and merged, so a long window
//! costs a linear pass an hour, not a sort.
//!
//! Because the scores come from history alone, a restarted daemon that reads 14 days of
//! history back is calibrated on its first pass.

use super::{ceil_count, Observation, Vote};
use crate::cloud::MetricSeries;
use crate::manifest::{FleetSpec, PredictiveSpec};
use chrono::{DateTime, Utc};
use std::collections::VecDeque;

mod calibrate;
mod whole;

/// Slots averaged for the current level.
const LEVEL: i64 = 5;
/// Daily cycles looked back for the seasonal ratio (plus one weekly).
const DAYS_BACK: i64 = 3;
/// Residuals kept for calibration, in days: the history the daemon reads back at start.
/// Chosen by leave-one-trace-out from 3, 7 and 14 (BENCHMARKS.md): the tails that set the
/// headroom are rare events, and three days hold too few of them.
const SCORE_DAYS: i64 = 14;
/// Days of scores the seasonal check looks at: whether earlier days still say something
/// about today changes with the traffic (a term ends, a launch moves the peak), so it is
/// judged on the recent days only.
const SEASONAL_DAYS: i64 = 3;
/// Below this many scored slots the calibration is not trusted and a fixed headroom is used.
const MIN_SCORES: usize = 360;
/// Headroom before calibration: 50% over the forecast.
const COLD_HEADROOM: f64 = 0.5;
/// The calibration is redone every this many newly scored slots.
const RECALIBRATE_EVERY: i64 = 60;
/// Whether the seasonal estimate holds up is asked every this many newly scored slots
/// (and at the first calibration): it changes with days, not minutes.
const SEASONAL_CHECK_EVERY: i64 = 6 * RECALIBRATE_EVERY;
/// Turbulence is weighted with a half-life of 30 slots.
const VOL_DECAY: f64 = 0.977_160_4;
/// Slots scored before the window only to warm the turbulence estimate up.
const VOL_WARMUP: i64 = 300;
const VOL_FLOOR: f64 = 0.25;
/// Growth over 5 slots that counts as climbing.
const RISE: f64 = 0.03;
/// Fewer scores than this in a regime: it gets the headroom of all regimes pooled.
const MIN_REGIME: usize = 60;
/// Fleet-size bands: below 2 instances' worth of forecast, 2 to 3, 4 to 7, 8 to 15, 16 to
/// 31, and 32 and up. Forecasts for a few instances miss by more, relative to their size,
/// than forecasts for many; each band gets its own headroom, so a small fleet's misses do
/// not set a large fleet's headroom, nor the other way round.
pub(super) const BANDS: u8 = 6;
/// Headroom regimes: each size band, steady or climbing.
pub(super) const REGIMES: usize = 2 * BANDS as usize;
/// The bound: the policy never asks for more than the peak demand of the last
/// [`PEAK_DAYS`] days (the newest value included) plus this share. A static fleet sized
/// for that peak (plus the margin) is the most it can cost. Chosen by leave-one-trace-out
/// with the 10-minute scale-in window (BENCHMARKS.md).
pub const PEAK_MARGIN: f64 = 0.35;
/// Days of history the bound's peak is taken over.
const PEAK_DAYS: i64 = 7;
/// The seasonal estimate is used only while it reaches the loss of the forecast without
/// it, on the last [`SEASONAL_DAYS`] days of scores, for at most this share more capacity. Chosen by
/// leave-one-trace-out (BENCHMARKS.md).
pub const SEASONAL_TOLERANCE: f64 = 0.01;

/// Headroom never goes past the point where this share of the residual weight lies above
/// it: beyond, more instances buy almost nothing back.
const MAX_EXCEEDANCE: f64 = 0.002;
/// Residuals are measured in units of forecast^ALPHA: 0.5 is Poisson-like noise, 1 purely
/// proportional; request counts sit near the first once the turbulence term is divided out.
/// Chosen by leave-one-trace-out together with the fleet-size bands and [`SCORE_DAYS`]
/// (BENCHMARKS.md): 0.5 in two folds of four, 0.4 and 0.1 in the others.
const ALPHA: f64 = 0.5;

/// The size band of a forecast `f` (in requests per period; `floor` is one instance's
/// capacity): 0 below two instances, then one band per doubling, the last open-ended.
fn band_of(f: f64, floor: f64) -> u8 {
    let instances = if floor > 0.0 { f / floor } else { 0.0 };
    let mut band = 0;
    let mut upper = 2.0;
    while band + 1 < BANDS && instances >= upper {
        band += 1;
        upper *= 2.0;
    }
    band
}

/// Where a forecast `f` sits on the band scale: band `b` spans `b..b + 1` (the first
/// linearly up to 2 instances, the others one doubling each).
fn band_position(f: f64, floor: f64) -> f64 {
    let instances = if floor > 0.0 {
        (f / floor).max(0.0)
    } else {
        0.0
    };
    if instances < 2.0 {
        instances / 2.0
    } else {
        instances.log2()
    }
}

/// The headroom regime of a forecast: its size band, steady or climbing.
fn regime(rising: bool, band: u8) -> u8 {
    band + if rising { BANDS } else { 0 }
}

/// Noise scale of a forecast `f`: residuals are measured in these units. Below one
/// instance's capacity the scale stays at that of one instance: a fleet is sized in whole
/// instances, and a near-zero forecast must not turn every small surprise into a huge one.
fn scale(f: f64, floor: f64, alpha: f64) -> f64 {
    f.max(floor).max(1.0).powf(alpha)
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Score {
    /// The slot scored.
    slot: i64,
    /// The headroom regime of the forecast ([`regime`]).
    regime: u8,
    /// The seasonal estimate had history to go on for this slot.
    seasonal_known: bool,
    /// Error relative to the forecast's base scale (before turbulence).
    r: f32,
    /// The forecasts with the seasonal estimate and without it (one of them was used),
    /// each with its noise scale (turbulence included): which of the two helps, measured
    /// on the data at hand.
    f_seasonal: f32,
    s_seasonal: f32,
    f_plain: f32,
    s_plain: f32,
    /// Error in units of `s`, the noise scale with turbulence.
    z: f32,
    s: f32,
    actual: f32,
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
    /// One instance's capacity, per period: the smallest noise scale.
    floor: f64,
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
    /// Slots the seasonal check looks back over.
    seasonal_window: i64,
    /// The calibrated headroom multiplier of each regime, once enough slots are scored.
    z: Option<[f64; REGIMES]>,
    /// The scored residuals, sorted, per regime and for the seasonal check.
    tails: calibrate::Tails,
    /// Recent squared relative error (exponentially weighted): how turbulent demand is now.
    vol2: f64,
    /// The weight the average in `vol2` has had so far (1 - decay^updates): dividing by it
    /// makes the first scores' turbulence the mean of what was seen, not a near-zero start
    /// that would blow their residuals up several times.
    vol_weight: f64,
    /// Root mean square relative error over the scored window: the long-run turbulence.
    vol_long: f64,
    /// Slots the bound's peak is taken over.
    peak_window: i64,
    /// Sliding maximum of demand over `peak_window` slots: (slot, value), values falling.
    peaks: VecDeque<(i64, f64)>,
    /// The calibration could not meet `loss_budget` within the headroom cap: the loss
    /// share its best trade-off would have had on the scored slots.
    budget_unmet: Option<f64>,
    /// The seasonal estimate has held up on the last [`SEASONAL_DAYS`] days of scores (see
    /// the module docs); off until it is.
    seasonal: bool,
}

impl DemandModel {
    pub fn new(spec: &PredictiveSpec, capacity: f64) -> DemandModel {
        let period = spec.metric.period.as_secs().max(60) as i64;
        let per_day = 86_400 / period;
        let keep = (spec.history.as_secs() as i64 / period).max(8 * per_day) as usize;
        DemandModel {
            period,
            lead: (spec.boot.as_secs() as i64 + period - 1) / period + 2,
            alpha: ALPHA,
            floor: capacity,
            loss_budget: spec.loss_budget.0,
            base: 0,
            values: VecDeque::new(),
            keep,
            scored: None,
            scores: VecDeque::new(),
            score_window: (SCORE_DAYS * per_day) as usize,
            seasonal_window: SEASONAL_DAYS * per_day,
            z: None,
            tails: calibrate::Tails::default(),
            vol2: 0.0,
            vol_weight: 0.0,
            vol_long: 0.0,
            peak_window: PEAK_DAYS * per_day,
            peaks: VecDeque::new(),
            budget_unmet: None,
            seasonal: false,
        }
    }

    /// Whether the seasonal estimate is in use: it has held up on this fleet's data.
    pub fn seasonal_in_use(&self) -> bool {
        self.seasonal
    }

    /// The peak demand per period over the last [`PEAK_DAYS`] days of history.
    pub fn recent_peak(&self) -> Option<f64> {
        self.peaks.front().map(|&(_, v)| v)
    }

    /// The margin over the recent peak the policy may ask for: [`PEAK_MARGIN`] once
    /// calibrated; before, the cold start's own headroom ([`COLD_HEADROOM`]), so that a
    /// new fleet gets at least what target tracking at 2/3 would give it on its newest
    /// minute.
    fn peak_margin(&self) -> f64 {
        match self.z {
            Some(_) => PEAK_MARGIN,
            None => PEAK_MARGIN.max(COLD_HEADROOM),
        }
    }

    /// The most the policy asks for: the recent peak plus [`DemandModel::peak_margin`].
    fn bound(&self) -> Option<f64> {
        self.recent_peak().map(|p| p * (1.0 + self.peak_margin()))
    }

    /// The loss share the best trade-off had, when `loss_budget` cannot be met at a sane
    /// cost (the headroom cap); None when it can, or before calibration.
    pub fn budget_unmet(&self) -> Option<f64> {
        self.budget_unmet
    }

    /// The sliding peak after `slot` got `v` (in slot order; an earlier slot rebuilds).
    fn note_peak(&mut self, slot: i64, v: f64) {
        if self.peaks.back().is_some_and(|&(s, _)| s >= slot) {
            self.rebuild_peaks();
            return;
        }
        while self.peaks.back().is_some_and(|&(_, x)| x <= v) {
            self.peaks.pop_back();
        }
        self.peaks.push_back((slot, v));
        self.trim_peaks();
    }

    fn trim_peaks(&mut self) {
        let Some(newest) = self.newest_slot() else {
            self.peaks.clear();
            return;
        };
        while self
            .peaks
            .front()
            .is_some_and(|&(s, _)| s <= newest - self.peak_window)
        {
            self.peaks.pop_front();
        }
    }

    fn rebuild_peaks(&mut self) {
        self.peaks.clear();
        let Some(newest) = self.newest_slot() else {
            return;
        };
        for slot in (newest - self.peak_window + 1).max(self.base)..=newest {
            if let Some(v) = self.at(slot) {
                while self.peaks.back().is_some_and(|&(_, x)| x <= v) {
                    self.peaks.pop_back();
                }
                self.peaks.push_back((slot, v));
            }
        }
    }

    /// Current turbulence in relative-error units, never below a quarter of the long run
    /// (a calm hour must not shrink the headroom to nothing).
    fn volatility(&self) -> f64 {
        let recent = if self.vol_weight > 0.0 {
            (self.vol2 / self.vol_weight).sqrt()
        } else {
            0.0
        };
        let v = recent.max(VOL_FLOOR * self.vol_long);
        if v > 0.0 && v.is_finite() {
            v
        } else {
            1.0
        }
    }

    /// Whether this model was built for `spec` (a reload may change the policy).
    pub fn fits(&self, spec: &PredictiveSpec, capacity: f64) -> bool {
        let fresh = DemandModel::new(spec, capacity);
        fresh.period == self.period
            && fresh.lead == self.lead
            && fresh.loss_budget == self.loss_budget
            && fresh.keep == self.keep
            && fresh.floor == self.floor
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
            // A datapoint further ahead than the whole kept history (a clock jump) starts
            // the history over instead of filling the distance with unknowns.
            let too_far = self
                .newest_slot()
                .is_some_and(|n| slot - n > self.keep as i64);
            if self.values.is_empty() || too_far {
                self.values.clear();
                self.scores.clear();
                self.tails.clear();
                self.vol2 = 0.0;
                self.vol_weight = 0.0;
                self.peaks.clear();
                self.scored = None;
                self.z = None;
                self.budget_unmet = None;
                self.seasonal = false;
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
            let v = v.max(0.0);
            let before = self.values[i];
            self.values[i] = v;
            // Re-reads of a slot (every pass reads an overlapping window) change nothing.
            if before.is_nan() || before != v {
                self.note_peak(slot, v);
            }
        }
        while self.values.len() > self.keep {
            self.values.pop_front();
            self.base += 1;
        }
        self.trim_peaks();
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
        .max(newest.saturating_sub(self.score_window as i64 + VOL_WARMUP));
        // The last `score_window` slots by time (gaps included), not by count.
        let keep_from = newest - self.score_window as i64 + 1;
        for k in first..=newest {
            self.scored = Some(k);
            let (Some(actual), Some((with, without, seasonal_known))) =
                (self.at(k), self.forecasts(k - self.lead, k))
            else {
                continue;
            };
            let f = if self.seasonal { with } else { without };
            let base = scale(f, self.floor, self.alpha);
            let r = (actual - f) / base;
            let vol = self.volatility();
            self.vol2 = VOL_DECAY * self.vol2 + (1.0 - VOL_DECAY) * r * r;
            self.vol_weight = VOL_DECAY * self.vol_weight + (1.0 - VOL_DECAY);
            if k < keep_from {
                continue;
            }
            let s = base * vol;
            let rising = self.rising_at(k - self.lead);
            let score = Score {
                slot: k,
                regime: regime(rising, band_of(f, self.floor)),
                seasonal_known,
                r: r as f32,
                f_seasonal: with as f32,
                s_seasonal: (scale(with, self.floor, self.alpha) * vol) as f32,
                f_plain: without as f32,
                s_plain: (scale(without, self.floor, self.alpha) * vol) as f32,
                z: ((actual - f) / s) as f32,
                s: s as f32,
                actual: actual as f32,
            };
            self.tails.push(k, &score, f, self.floor);
            self.scores.push_back(score);
            while self
                .scores
                .front()
                .is_some_and(|s| s.slot <= k - self.score_window as i64)
            {
                self.scores.pop_front();
            }
            // On fixed slot numbers, so a restarted daemon recalibrates on the same slots.
            if k.rem_euclid(RECALIBRATE_EVERY) == 0 || self.z.is_none() {
                let check_seasonal = k.rem_euclid(SEASONAL_CHECK_EVERY) == 0 || self.z.is_none();
                self.calibrate(check_seasonal);
            }
        }
    }

    /// Whether demand at slot `j` is climbing: the last 3 slots above the 5 before the
    /// last 5 by more than 3%. Forecasts made on a climb miss more, and get more headroom.
    fn rising_at(&self, j: i64) -> bool {
        match (self.mean(j - 2, j), self.mean(j - 9, j - 5)) {
            (Some(now), Some(before)) => now > before * (1.0 + RISE),
            _ => false,
        }
    }

    /// The headroom multiplier for a forecast `f` made at slot `j`: its regime's,
    /// blended with the neighbouring size band's by where `f` sits between the two bands'
    /// middles (on [`band_position`]'s scale: linear below 2 instances, doublings above),
    /// so the headroom does not jump where one band ends.
    fn headroom_z(&self, j: i64, f: f64) -> Option<f64> {
        let z = self.z?;
        let first = usize::from(regime(self.rising_at(j), 0));
        let last = f64::from(BANDS - 1);
        let t = (band_position(f, self.floor) - 0.5).clamp(0.0, last);
        let lo = t.floor();
        let w = t - lo;
        let lo = lo as usize;
        let hi = (lo + 1).min(BANDS as usize - 1);
        Some(z[first + lo] * (1.0 - w) + z[first + hi] * w)
    }

    /// Demand forecast for slot `k` from data through slot `j`, with the seasonal
    /// estimate if it is in use.
    fn forecast(&self, j: i64, k: i64) -> Option<f64> {
        self.forecasts(j, k)
            .map(|(with, without, _)| if self.seasonal { with } else { without })
    }

    /// Demand forecast for slot `k` from data through slot `j`: (with the seasonal
    /// estimate, without it, whether the seasonal estimate had history to go on).
    fn forecasts(&self, j: i64, k: i64) -> Option<(f64, f64, bool)> {
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
        let plain = trend.max(latest).max(level).max(0.0);
        if n == 0 {
            return Some((plain, plain, false));
        }
        let seasonal = {
            let r = &mut ratios[..n];
            r.sort_by(f64::total_cmp);
            let med = if n % 2 == 1 {
                r[n / 2]
            } else {
                (r[n / 2 - 1] + r[n / 2]) / 2.0
            };
            level * med
        };
        Some((seasonal.max(trend).max(latest).max(0.0), plain, true))
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
        let with_headroom = match model.headroom_z(j, f) {
            Some(z) => f + z * scale(f, model.floor, model.alpha) * model.volatility(),
            None => f * (1.0 + COLD_HEADROOM),
        };
        need = need.max(with_headroom);
        peak_forecast = peak_forecast.max(f);
    }
    // Bounded: never more than the recent peak plus the margin (a static fleet for that
    // peak is the most this policy can cost).
    let bounded = match model.bound() {
        Some(b) if need > b => {
            need = b;
            true
        }
        _ => false,
    };
    // Traffic is served by at least one instance (as the calibration prices it).
    let wanted = ceil_count(need / capacity).max(u32::from(peak_forecast > 0.0));
    let headroom = match model.headroom_z(j, peak_forecast) {
        Some(z) => format!(
            "headroom z={z:.2} from recent errors{}",
            if model.rising_at(j) {
                " (climbing)"
            } else {
                ""
            }
        ),
        None => format!("{:.0}% headroom until calibrated", COLD_HEADROOM * 100.0),
    };
    let mut headroom = headroom;
    if bounded {
        headroom.push_str(&format!(
            ", bounded by the {PEAK_DAYS}-day peak + {:.0}%",
            model.peak_margin() * 100.0
        ));
    }
    if let Some(lost) = model.budget_unmet() {
        headroom.push_str(&format!(
            "; loss_budget {:.3}% cannot be met at a sane cost: the best trade-off lost {:.3}% of recent requests",
            model.loss_budget * 100.0,
            lost * 100.0
        ));
    }
    (
        Vote::Capacity(wanted),
        format!(
            "{name} forecast {peak_forecast:.0}/period by {}{}, {headroom} → {need:.0} at {capacity:.0}/instance wants {wanted}",
            {
                // HH:MM (UTC) by hand: chrono's formatter is most of a vote's cost.
                let minute_of_day = ((until + 1) * model.period).rem_euclid(86_400) / 60;
                format!("{:02}:{:02}", minute_of_day / 60, minute_of_day % 60)
            },
            if model.seasonal_in_use() {
                " (with the daily pattern)"
            } else {
                ""
            }
        ),
    )
}
