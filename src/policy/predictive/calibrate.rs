//! Calibration of the predictive policy's headroom: the residual tails of the scored
//! forecasts ([`Tail`]), the multiplier each regime gets for the loss budget, and the
//! check that the seasonal estimate holds up (see the parent module's documentation).

use super::whole::WholeInstances;
use super::{
    DemandModel, Score, BANDS, MAX_EXCEEDANCE, MIN_REGIME, MIN_SCORES, REGIMES, SEASONAL_TOLERANCE,
};

/// The size bands whose headroom is priced in whole instances ([`WholeInstances`]): under
/// 2 instances, and 2 to 3. Chosen by leave-one-trace-out from none, the first, and the
/// first two (BENCHMARKS.md); from 4 instances up, one instance more or less is a quarter
/// of the fleet or less, and the continuous price is close.
const WHOLE_BANDS: usize = 2;

/// Whether regime `i`'s headroom is priced in whole instances.
fn whole(i: usize) -> bool {
    i % usize::from(BANDS) < WHOLE_BANDS
}

/// One residual: (residual in units of its scale, the scale, the slot it scored).
type Entry = (f32, f32, i64);

/// Residuals sorted from the largest, with running sums, to price any headroom quickly.
///
/// Kept across calibrations: new residuals wait in `pending` and are merged in (and those
/// older than the scored window dropped) by [`Tail::refresh`], a linear pass, instead of
/// sorting the whole window again every hour. With 14 days of one-minute slots that is
/// the difference between the replay of a season taking one second or five.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Tail {
    items: Vec<Entry>,
    /// `sum_s[i]`, `sum_sz[i]`: sums of `s` and `s * z` over the first `i` residuals.
    sum_s: Vec<f64>,
    sum_sz: Vec<f64>,
    pending: Vec<Entry>,
}

impl Tail {
    /// From (residual in units of `s`, `s`, slot) triples, all at once.
    #[cfg(test)]
    pub(super) fn at_once(entries: impl Iterator<Item = (f64, f64, i64)>) -> Tail {
        let mut t = Tail::default();
        for (z, s, slot) in entries {
            t.push(z, s, slot);
        }
        t.refresh(i64::MIN);
        t
    }

    /// A residual `z` (in units of `s`) scored at `slot`; counted from the next refresh.
    pub(super) fn push(&mut self, z: f64, s: f64, slot: i64) {
        self.pending.push((z as f32, s as f32, slot));
    }

    /// Merge the pending residuals in and drop those scored before slot `oldest`.
    pub(super) fn refresh(&mut self, oldest: i64) {
        let by_z = |a: &Entry, b: &Entry| b.0.total_cmp(&a.0).then(a.2.cmp(&b.2));
        let mut fresh = std::mem::take(&mut self.pending);
        fresh.retain(|e| e.2 >= oldest);
        fresh.sort_unstable_by(by_z);
        let kept = self.items.iter().filter(|e| e.2 >= oldest).copied();
        let mut merged = Vec::with_capacity(self.items.len() + fresh.len());
        let mut fresh = fresh.into_iter().peekable();
        for e in kept {
            while let Some(f) = fresh.next_if(|f| by_z(f, &e).is_le()) {
                merged.push(f);
            }
            merged.push(e);
        }
        merged.extend(fresh);
        self.items = merged;
        self.sum_s.clear();
        self.sum_sz.clear();
        let (mut ss, mut ssz) = (0.0, 0.0);
        self.sum_s.push(0.0);
        self.sum_sz.push(0.0);
        for &(z, s, _) in &self.items {
            let (z, s) = (f64::from(z), f64::from(s));
            ss += s;
            ssz += s * z;
            self.sum_s.push(ss);
            self.sum_sz.push(ssz);
        }
    }

    pub(super) fn len(&self) -> usize {
        self.items.len()
    }

    fn z(&self, i: usize) -> f64 {
        f64::from(self.items[i].0)
    }

    /// Requests that headroom `z` would have left unserved.
    pub(super) fn loss(&self, z: f64) -> f64 {
        let above = self.items.partition_point(|x| f64::from(x.0) > z);
        self.sum_sz[above] - z * self.sum_s[above]
    }

    /// The headroom that leaves share `e` of the residual weight above it.
    pub(super) fn z_at(&self, e: f64) -> f64 {
        let total = self.sum_s.last().copied().unwrap_or(0.0);
        let i = self.sum_s[1..].partition_point(|c| *c <= e * total);
        self.items
            .get(i)
            .or(self.items.last())
            .map_or(0.0, |x| f64::from(x.0))
    }

    /// The smallest headroom whose loss is within `budget` (loss falls as z grows).
    pub(super) fn z_for_budget(&self, budget: f64) -> f64 {
        // Walking down from the largest residual, loss(Z) = sum(s z) - Z sum(s) over the
        // residuals above Z; stop at the first one where the budget breaks.
        for i in 0..self.items.len() {
            let z = self.z(i);
            if self.sum_sz[i] - z * self.sum_s[i] > budget {
                return (self.sum_sz[i] - budget) / self.sum_s[i];
            }
        }
        let n = self.items.len();
        if self.sum_s[n] > 0.0 {
            (self.sum_sz[n] - budget) / self.sum_s[n]
        } else {
            0.0
        }
    }
}

/// The residual tails a model keeps, one per headroom regime plus the pooled residuals
/// (for regimes with too few of their own) and the two forecasts the seasonal check
/// compares.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Tails {
    regimes: [Tail; REGIMES],
    /// The same slots priced in whole instances, for the small bands ([`whole`]).
    whole: [WholeInstances; REGIMES],
    pooled: Tail,
    plain: Tail,
    seasonal: Tail,
}

impl Tails {
    /// Add a newly scored slot, whose forecast was `forecast` (one instance serves `unit`).
    pub(super) fn push(&mut self, slot: i64, s: &Score, forecast: f64, unit: f64) {
        let i = usize::from(s.regime);
        self.regimes[i].push(f64::from(s.z), f64::from(s.s), slot);
        if whole(i) {
            self.whole[i].push(slot, forecast, f64::from(s.s), f64::from(s.actual), unit);
        }
        self.pooled.push(f64::from(s.z), f64::from(s.s), slot);
        let actual = f64::from(s.actual);
        let (fp, sp) = (f64::from(s.f_plain), f64::from(s.s_plain));
        let (fs, ss) = (f64::from(s.f_seasonal), f64::from(s.s_seasonal));
        self.plain.push((actual - fp) / sp, sp, slot);
        self.seasonal.push((actual - fs) / ss, ss, slot);
    }

    pub(super) fn clear(&mut self) {
        *self = Tails::default();
    }

    /// Merge new residuals in; drop those scored before `oldest`, and from the seasonal
    /// check's two those scored before `oldest_seasonal`.
    fn refresh(&mut self, oldest: i64, oldest_seasonal: i64) {
        for t in self.regimes.iter_mut() {
            t.refresh(oldest);
        }
        // Only the small bands' are ever fed or read.
        for (_, w) in self.whole.iter_mut().enumerate().filter(|(i, _)| whole(*i)) {
            w.refresh(oldest);
        }
        self.pooled.refresh(oldest);
        self.plain.refresh(oldest_seasonal);
        self.seasonal.refresh(oldest_seasonal);
    }

    /// Whether regime `i`'s headroom is priced in whole instances: a small band ([`whole`])
    /// with at least [`MIN_REGIME`] scores of its own.
    fn priced_whole(&self, i: usize) -> bool {
        whole(i) && self.regimes[i].len() >= MIN_REGIME
    }

    /// Regime `i`'s headroom for exceedance share `e` and the requests it would have left
    /// unserved: from its own residuals (for the small bands, priced in whole instances at
    /// the same marginal price), or the pooled residuals' headroom when it has fewer than
    /// [`MIN_REGIME`].
    fn at(&self, i: usize, e: f64) -> (f64, f64) {
        let own = &self.regimes[i];
        if self.priced_whole(i) {
            self.whole[i].best(e)
        } else {
            let z = if own.len() >= MIN_REGIME {
                own.z_at(e)
            } else {
                self.pooled.z_at(e)
            };
            (z, own.loss(z))
        }
    }

    /// Regime `i`'s headroom for exceedance share `e` (see [`Tails::at`]).
    fn z_at(&self, i: usize, e: f64) -> f64 {
        self.at(i, e).0
    }

    /// Requests the regimes' headrooms for share `e` would have left unserved.
    fn loss_at(&self, e: f64) -> f64 {
        (0..REGIMES).map(|i| self.at(i, e).1).sum()
    }
}

impl DemandModel {
    /// The headroom multiplier `Z` of each regime for which serving `forecast + Z * scale`
    /// would have left at most `loss_budget` of the scored requests unserved.
    pub(super) fn calibrate(&mut self, check_seasonal: bool) {
        let (Some(oldest), Some(newest)) = (
            self.scores.front().map(|s| s.slot),
            self.scores.back().map(|s| s.slot),
        ) else {
            self.z = None;
            return;
        };
        self.tails
            .refresh(oldest, newest - self.seasonal_window + 1);
        if self.scores.len() < MIN_SCORES {
            self.z = None;
            return;
        }
        let total: f64 = self.scores.iter().map(|s| f64::from(s.actual)).sum();
        let budget = total * self.loss_budget;
        if check_seasonal {
            self.seasonal = self.seasonal_holds_up(newest - self.seasonal_window + 1);
        }
        self.vol_long = (self
            .scores
            .iter()
            .map(|s| f64::from(s.r) * f64::from(s.r))
            .sum::<f64>()
            / self.scores.len() as f64)
            .sqrt();
        // The same share of each regime's residual weight is left above its headroom (the
        // cheapest way to meet a budget across regimes), as large a share as the budget
        // allows, but never above the cap: past it, more headroom buys almost nothing, and
        // one rare surprise would set the headroom for days.
        let cap = MAX_EXCEEDANCE;
        let mut e = 0.5_f64;
        let step = (cap / e).powf(1.0 / 64.0);
        let mut lost = self.tails.loss_at(e);
        while lost > budget && e > cap {
            e = (e * step).max(cap);
            lost = self.tails.loss_at(e);
        }
        let z: [f64; REGIMES] = std::array::from_fn(|i| self.tails.z_at(i, e));
        // At the cap and still over budget: the budget cannot be met at a sane cost.
        self.budget_unmet = (lost > budget * (1.0 + 1e-9) && total > 0.0).then(|| lost / total);
        self.z = Some(z);
    }

    /// Does the seasonal estimate hold up on the slots scored from `from` on (the last
    /// [`super::SEASONAL_DAYS`] days)? Each forecast is priced at the same loss: the one
    /// the forecast without it reaches at the policy's operating point (the budget, or the
    /// headroom cap if the budget is out of reach). It holds up if it had history for at
    /// least [`MIN_SCORES`] slots and reaching that loss with it takes at most
    /// [`SEASONAL_TOLERANCE`] more instance-periods.
    fn seasonal_holds_up(&self, from: i64) -> bool {
        let recent = || self.scores.iter().rev().take_while(move |s| s.slot >= from);
        if recent().filter(|s| s.seasonal_known).count() < MIN_SCORES {
            return false;
        }
        let budget = recent().map(|s| f64::from(s.actual)).sum::<f64>() * self.loss_budget;
        let (plain, seasonal) = (&self.tails.plain, &self.tails.seasonal);
        let z_plain = plain.z_for_budget(budget).min(plain.z_at(MAX_EXCEEDANCE));
        let lost = plain.loss(z_plain).max(budget);
        let z_seasonal = seasonal.z_for_budget(lost);
        let cost = |forecast: &dyn Fn(&Score) -> (f32, f32), z: f64| -> f64 {
            recent()
                .map(|s| {
                    let (f, sc) = forecast(s);
                    (f64::from(f) + z * f64::from(sc)).max(0.0)
                })
                .sum()
        };
        cost(&|s| (s.f_seasonal, s.s_seasonal), z_seasonal)
            <= cost(&|s| (s.f_plain, s.s_plain), z_plain) * (1.0 + SEASONAL_TOLERANCE)
    }
}

/// What the policy tests read of a calibration.
#[cfg(test)]
impl DemandModel {
    pub(in crate::policy) fn budget(&self) -> f64 {
        self.loss_budget
    }

    /// The headroom multiplier of each regime (see [`super::regime`]).
    pub(in crate::policy) fn calibrated(&self) -> Option<[f64; REGIMES]> {
        self.z
    }

    /// The headroom multiplier the policy uses for a forecast `f` made at slot `j`.
    pub(in crate::policy) fn headroom_for(&self, j: i64, f: f64) -> Option<f64> {
        self.headroom_z(j, f)
    }

    /// Whether forecasts made at slot `j` count as climbing.
    pub(in crate::policy) fn climbing_at(&self, j: i64) -> bool {
        self.rising_at(j)
    }

    /// One instance's capacity per period: the unit of the size bands.
    pub(in crate::policy) fn instance_capacity(&self) -> f64 {
        self.floor
    }

    /// The newest slot with a datapoint.
    pub(in crate::policy) fn newest(&self) -> Option<i64> {
        self.newest_slot()
    }

    /// (requests lost, requests) had `forecast + z × scale` been served on every scored
    /// slot, with `z` per regime; in whole instances in the small bands, as calibrated.
    pub(in crate::policy) fn replay_loss(&self, z: &[f64; REGIMES]) -> (f64, f64) {
        self.scores.iter().fold((0.0, 0.0), |(lost, total), s| {
            let i = usize::from(s.regime);
            let zi = z[i];
            let (sz, ss, actual) = (f64::from(s.z), f64::from(s.s), f64::from(s.actual));
            // Whole or not as at the last calibration (its tails' counts).
            let missed = if self.tails.priced_whole(i) {
                // Held in whole instances: the forecast was actual - z × s.
                let n = super::whole::held(actual - sz * ss, zi, ss, self.floor);
                (actual - n * self.floor).max(0.0)
            } else {
                (ss * (sz - zi)).max(0.0)
            };
            (lost + missed, total + actual)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Tail;
    use proptest::prelude::*;

    proptest! {
        /// Merging residuals in over several refreshes, each dropping those older than a
        /// cutoff that only moves forward (some of them still pending), prices every
        /// headroom as a tail built from the kept residuals at once. Residuals are drawn
        /// from a few values so that ties are common.
        #[test]
        fn a_tail_kept_across_refreshes_equals_one_built_at_once(
            batches in prop::collection::vec(
                prop::collection::vec((-5i32..20, 1i32..10), 0..40), 1..8),
            steps in prop::collection::vec(0i64..30, 8),
            zs in prop::collection::vec(-3.0f64..25.0, 1..6),
        ) {
            let mut kept = Tail::default();
            let mut slot = 0i64;
            let mut oldest = 0i64;
            let mut all = Vec::new();
            for (batch, step) in batches.iter().zip(steps.iter().cycle()) {
                for &(z, s) in batch {
                    let (z, s) = (f64::from(z) / 4.0, f64::from(s) / 2.0);
                    kept.push(z, s, slot);
                    all.push((z, s, slot));
                    slot += 1;
                }
                oldest = (oldest + step).min(slot);
                kept.refresh(oldest);
            }
            let at_once = Tail::at_once(all.iter().copied().filter(|e| e.2 >= oldest));
            prop_assert_eq!(kept.len(), at_once.len());
            for z in zs {
                let (a, b) = (kept.loss(z), at_once.loss(z));
                prop_assert!((a - b).abs() <= 1e-6 * (1.0 + b.abs()), "{} vs {}", a, b);
            }
            for e in [0.002, 0.01, 0.1, 0.5] {
                prop_assert_eq!(kept.z_at(e), at_once.z_at(e));
            }
            for budget in [0.0, 1.0, 10.0] {
                prop_assert_eq!(kept.z_for_budget(budget), at_once.z_for_budget(budget));
            }
            // Sorted from the largest.
            prop_assert!(kept.items.windows(2).all(|w| w[0].0 >= w[1].0));
        }
    }
}
