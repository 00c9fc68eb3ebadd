//! Calibration of the predictive policy's headroom: the residual tails of the scored
//! forecasts ([`Tail`]), the multiplier each regime gets for the loss budget, and the
//! check that the seasonal estimate holds up (see the parent module's documentation).

use super::{DemandModel, Score, MAX_EXCEEDANCE, MIN_REGIME, MIN_SCORES, SEASONAL_TOLERANCE};

/// Residuals sorted from the largest, with running sums, to price any headroom quickly.
pub(super) struct Tail {
    z: Vec<f64>,
    /// `sum_s[i]`, `sum_sz[i]`: sums of `s` and `s * z` over the first `i` residuals.
    sum_s: Vec<f64>,
    sum_sz: Vec<f64>,
}

impl Tail {
    pub(super) fn new<'a>(scores: impl Iterator<Item = &'a Score>) -> Tail {
        Tail::from_pairs(scores.map(|s| (s.z, s.s)))
    }

    /// From (residual in units of `s`, `s`) pairs.
    pub(super) fn from_pairs(pairs: impl Iterator<Item = (f64, f64)>) -> Tail {
        let mut v: Vec<(f64, f64)> = pairs.collect();
        v.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
        let mut t = Tail {
            z: Vec::with_capacity(v.len()),
            sum_s: Vec::with_capacity(v.len() + 1),
            sum_sz: Vec::with_capacity(v.len() + 1),
        };
        let (mut ss, mut ssz) = (0.0, 0.0);
        t.sum_s.push(0.0);
        t.sum_sz.push(0.0);
        for (z, s) in v {
            ss += s;
            ssz += s * z;
            t.z.push(z);
            t.sum_s.push(ss);
            t.sum_sz.push(ssz);
        }
        t
    }

    pub(super) fn len(&self) -> usize {
        self.z.len()
    }

    /// Requests that headroom `z` would have left unserved.
    pub(super) fn loss(&self, z: f64) -> f64 {
        let above = self.z.partition_point(|x| *x > z);
        self.sum_sz[above] - z * self.sum_s[above]
    }

    /// The headroom that leaves share `e` of the residual weight above it.
    pub(super) fn z_at(&self, e: f64) -> f64 {
        let total = self.sum_s.last().copied().unwrap_or(0.0);
        let i = self.sum_s[1..].partition_point(|c| *c <= e * total);
        self.z.get(i).or(self.z.last()).copied().unwrap_or(0.0)
    }

    /// The smallest headroom whose loss is within `budget` (loss falls as z grows).
    pub(super) fn z_for_budget(&self, budget: f64) -> f64 {
        // Walking down from the largest residual, loss(Z) = sum(s z) - Z sum(s) over the
        // residuals above Z; stop at the first one where the budget breaks.
        for (i, z) in self.z.iter().enumerate() {
            if self.sum_sz[i] - z * self.sum_s[i] > budget {
                return (self.sum_sz[i] - budget) / self.sum_s[i];
            }
        }
        let n = self.z.len();
        if self.sum_s[n] > 0.0 {
            (self.sum_sz[n] - budget) / self.sum_s[n]
        } else {
            0.0
        }
    }
}

impl DemandModel {
    /// The smallest multiplier `Z` for which serving `forecast + Z * scale` would have left
    /// at most `loss_budget` of the scored requests unserved.
    pub(super) fn calibrate(&mut self, check_seasonal: bool) {
        if self.scores.len() < MIN_SCORES {
            self.z = None;
            return;
        }
        let total: f64 = self.scores.iter().map(|s| s.actual).sum();
        let budget = total * self.loss_budget;
        if check_seasonal {
            self.seasonal = self.seasonal_holds_up(budget);
        }
        self.vol_long =
            (self.scores.iter().map(|s| s.r * s.r).sum::<f64>() / self.scores.len() as f64).sqrt();
        let calm = Tail::new(self.scores.iter().filter(|s| !s.rising));
        let rising = Tail::new(self.scores.iter().filter(|s| s.rising));
        let cap = MAX_EXCEEDANCE;
        if calm.len() < MIN_REGIME || rising.len() < MIN_REGIME {
            let all = Tail::new(self.scores.iter());
            let capped = all.z_at(cap);
            let z = all.z_for_budget(budget).min(capped).max(-2.0);
            let lost = all.loss(z);
            self.budget_unmet = (lost > budget * (1.0 + 1e-9) && total > 0.0).then(|| lost / total);
            self.z = Some((z, z));
            return;
        }
        // The same share of each regime's residual weight is left above its headroom (the
        // cheapest way to meet a budget across regimes), as large a share as the budget
        // allows, but never above the cap: past it, more headroom buys almost nothing, and
        // one rare surprise would set the headroom for days.
        let mut e = 0.5_f64;
        let step = (cap / e).powf(1.0 / 64.0);
        while e > cap {
            if calm.loss(calm.z_at(e)) + rising.loss(rising.z_at(e)) <= budget {
                break;
            }
            e = (e * step).max(cap);
        }
        let (zc, zr) = (calm.z_at(e).max(-2.0), rising.z_at(e).max(-2.0));
        let lost = calm.loss(zc) + rising.loss(zr);
        // At the cap and still over budget: the budget cannot be met at a sane cost.
        self.budget_unmet = (lost > budget * (1.0 + 1e-9) && total > 0.0).then(|| lost / total);
        self.z = Some((zc, zr));
    }

    /// Does the seasonal estimate hold up on the scored window? Each forecast is priced
    /// at the same loss: the one the forecast without it reaches at the policy's operating
    /// point (the budget, or the headroom cap if the budget is out of reach). It holds up
    /// if it had history for at least [`MIN_SCORES`] slots and reaching that loss with it
    /// takes at most [`SEASONAL_TOLERANCE`] more instance-periods.
    fn seasonal_holds_up(&self, budget: f64) -> bool {
        if self.scores.iter().filter(|s| s.seasonal_known).count() < MIN_SCORES {
            return false;
        }
        let plain = self.priced(|s| (s.f_plain, s.s_plain));
        let seasonal = self.priced(|s| (s.f_seasonal, s.s_seasonal));
        let (plain_tail, seasonal_tail) = (
            Tail::from_pairs(plain.iter().map(|p| (p.1, p.2))),
            Tail::from_pairs(seasonal.iter().map(|p| (p.1, p.2))),
        );
        let z_plain = plain_tail
            .z_for_budget(budget)
            .min(plain_tail.z_at(MAX_EXCEEDANCE));
        let lost = plain_tail.loss(z_plain).max(budget);
        let z_seasonal = seasonal_tail.z_for_budget(lost);
        let cost = |v: &[(f64, f64, f64)], z: f64| -> f64 {
            v.iter().map(|(f, _, sc)| (f + z * sc).max(0.0)).sum()
        };
        cost(&seasonal, z_seasonal) <= cost(&plain, z_plain) * (1.0 + SEASONAL_TOLERANCE)
    }

    /// (forecast, residual in units of its scale, scale) for each scored slot.
    fn priced(&self, forecast: impl Fn(&Score) -> (f32, f32)) -> Vec<(f64, f64, f64)> {
        self.scores
            .iter()
            .map(|s| {
                let (f, sc) = forecast(s);
                let (f, sc) = (f64::from(f), f64::from(sc));
                (f, (s.actual - f) / sc, sc)
            })
            .collect()
    }
}

/// What the policy tests read of a calibration.
#[cfg(test)]
impl DemandModel {
    pub(in crate::policy) fn budget(&self) -> f64 {
        self.loss_budget
    }

    /// (steady, climbing) headroom multipliers.
    pub(in crate::policy) fn calibrated(&self) -> Option<(f64, f64)> {
        self.z
    }

    /// (requests lost, requests) had `forecast + z × scale` been served on every scored
    /// slot, with `z` per regime.
    pub(in crate::policy) fn replay_loss(&self, (calm, rising): (f64, f64)) -> (f64, f64) {
        self.scores.iter().fold((0.0, 0.0), |(lost, total), s| {
            let z = if s.rising { rising } else { calm };
            (lost + (s.s * (s.z - z)).max(0.0), total + s.actual)
        })
    }
}
