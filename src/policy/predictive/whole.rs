//! A small fleet's headroom priced in whole instances ([`WholeInstances`]).

use crate::policy::ceil_count;
use std::collections::VecDeque;

/// Points on the grid of headroom multipliers a whole-instance band chooses from.
pub(super) const GRID: usize = 83;

/// The grid's multipliers: -1, -0.5 and 0, then from 0.1 up by 8% a step to about 44 (a
/// small band that would want more gets 44).
pub(super) static GRID_Z: std::sync::LazyLock<[f64; GRID]> = std::sync::LazyLock::new(|| {
    std::array::from_fn(|g| match g {
        0 => -1.0,
        1 => -0.5,
        2 => 0.0,
        _ => 0.1 * 1.08_f64.powi(g as i32 - 3),
    })
});

/// One scored slot: (slot, forecast, noise scale, actual demand), the last three in
/// requests per period.
type Priced = (i64, f32, f32, f32);

/// The instances the policy holds for forecast `f` (requests per period) with headroom
/// `z × s`, one instance serving `unit`: at least one while traffic is forecast, as the
/// vote does.
pub(super) fn held(f: f64, z: f64, s: f64, unit: f64) -> f64 {
    let n = if unit > 0.0 {
        ceil_count((f + z * s) / unit)
    } else {
        1
    };
    f64::from(n.max(u32::from(f > 0.0)))
}

/// A small band's headroom priced in whole instances.
///
/// A forecast for 0.4 instances with a headroom of 0.7 instances is served by 2
/// instances, not 1.1: the second instance is paid for in full, and it saves only the
/// demand above the first. Priced as continuous (as the larger bands are), the headroom
/// buys that instance whenever it crosses the line, for traffic of a fraction of one. On
/// worldcup98 a quarter of what the policy paid over the zero-loss limit was such a second
/// instance (BENCHMARKS.md). Here every scored slot is priced at each multiplier `z` of a
/// fixed grid ([`GRID_Z`]): the instances the policy would have held for it ([`held`]),
/// and the requests they would have left unserved. The sums per grid point are added to as
/// slots are scored and taken from as they leave the window (and summed afresh once more
/// than four times as many have left as are kept, so float error cannot build up), so a
/// calibration only walks the sums' lower convex hull, not the slots.
///
/// The fleet's `min` is not priced (one instance is the floor), and the vote blends the
/// multipliers of neighbouring bands between their middles, as for the continuous bands.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct WholeInstances {
    /// One instance's capacity, requests per period.
    unit: f64,
    /// The slots in the sums, oldest first.
    kept: VecDeque<Priced>,
    /// Scored slots not yet in the sums (added at the next refresh).
    pending: Vec<Priced>,
    /// Per grid point: instance-periods held over the kept slots.
    instances: Vec<f64>,
    /// Per grid point: requests left unserved over the kept slots.
    lost: Vec<f64>,
    /// Slots taken out of the sums since they were last summed from scratch.
    removed: usize,
    /// The grid points on the lower convex hull of (instance-periods, requests unserved),
    /// from the smallest multiplier: the only ones that can cost least at any price.
    hull: Vec<usize>,
}

impl WholeInstances {
    /// A slot scored at `slot`: forecast `f` with noise scale `s` and demand `actual`
    /// (requests per period), one instance serving `unit`. Counted from the next refresh.
    pub(super) fn push(&mut self, slot: i64, f: f64, s: f64, actual: f64, unit: f64) {
        self.unit = unit;
        self.pending.push((slot, f as f32, s as f32, actual as f32));
    }

    fn add(&mut self, &(_, f, s, actual): &Priced, sign: f64) {
        let (f, s, actual) = (f64::from(f), f64::from(s), f64::from(actual));
        let unit = self.unit;
        for ((z, instances), lost) in GRID_Z
            .iter()
            .zip(self.instances.iter_mut())
            .zip(self.lost.iter_mut())
        {
            let n = held(f, *z, s, unit);
            *instances += sign * n;
            *lost += sign * (actual - n * unit).max(0.0);
        }
    }

    /// Add the pending slots; drop those scored before slot `oldest`.
    pub(super) fn refresh(&mut self, oldest: i64) {
        if self.instances.len() != GRID {
            self.instances = vec![0.0; GRID];
            self.lost = vec![0.0; GRID];
        }
        for p in std::mem::take(&mut self.pending) {
            if p.0 >= oldest {
                self.add(&p, 1.0);
                self.kept.push_back(p);
            }
        }
        while let Some(p) = self.kept.front().copied().filter(|p| p.0 < oldest) {
            self.kept.pop_front();
            self.add(&p, -1.0);
            self.removed += 1;
        }
        if self.removed > 4 * self.kept.len() {
            self.instances.fill(0.0);
            self.lost.fill(0.0);
            let kept = std::mem::take(&mut self.kept);
            for p in &kept {
                self.add(p, 1.0);
            }
            self.kept = kept;
            self.removed = 0;
        }
        self.hull.clear();
        for g in 0..GRID {
            let (x, y) = (self.instances[g], self.lost[g]);
            // Instances never fall along the grid, and where they are equal every slot
            // holds the same instances, so the losses are equal too (any difference is
            // float noise): keep the smaller multiplier.
            if self
                .hull
                .last()
                .is_some_and(|&last| self.instances[last] >= x)
            {
                continue;
            }
            while let [.., a, b] = self.hull[..] {
                let (ax, ay) = (self.instances[a], self.lost[a]);
                let (bx, by) = (self.instances[b], self.lost[b]);
                // b is on or above the segment from a to this point: never the only best.
                if (bx - ax) * (y - ay) - (by - ay) * (x - ax) <= 0.0 {
                    self.hull.pop();
                } else {
                    break;
                }
            }
            self.hull.push(g);
        }
    }

    /// The multiplier whose instance-periods, plus its unserved requests each priced at
    /// `1 / e` requests' worth of capacity (`e`: the share of errors the continuous regimes
    /// leave above their headroom, the same marginal trade-off), cost least over the kept
    /// slots, the smallest on a tie; with the requests (a total over the kept slots) it
    /// would have left unserved. (0, 0) before any slot was kept.
    pub(super) fn best(&self, e: f64) -> (f64, f64) {
        let mut best: Option<(f64, usize)> = None;
        for &g in &self.hull {
            let cost = self.instances[g] * self.unit + self.lost[g] / e;
            // Float noise in the running sums must not break a tie towards more headroom.
            if best.is_none_or(|(b, _)| cost < b - 1e-9 * b.abs()) {
                best = Some((cost, g));
            }
        }
        best.map_or((0.0, 0.0), |(_, g)| (GRID_Z[g], self.lost[g].max(0.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::{held, WholeInstances, GRID, GRID_Z};
    use proptest::prelude::*;

    proptest! {
        /// The sums kept across refreshes (slots leaving the window, some still pending, a
        /// summing afresh now and then) equal sums built at once from the kept slots, and
        /// the multiplier chosen from the hull costs the least of the whole grid at every
        /// price, priced by hand, with the loss it reports. The capacity is not a round
        /// binary number, so the sums carry float noise.
        #[test]
        fn whole_instance_pricing_kept_across_refreshes_is_exact_and_picks_the_cheapest(
            batches in prop::collection::vec(
                prop::collection::vec((0u32..3_000, 1u32..400, 0u32..4_000), 0..40), 1..10),
            steps in prop::collection::vec(0i64..30, 8),
            es in prop::collection::vec(0.001f64..0.6, 1..6),
        ) {
            let unit = 833.3;
            let mut kept = WholeInstances::default();
            let (mut slot, mut oldest) = (0i64, 0i64);
            let mut all = Vec::new();
            for (batch, step) in batches.iter().zip(steps.iter().cycle()) {
                for &(f, s, a) in batch {
                    let (f, s, a) = (f64::from(f), f64::from(s) / 3.0, f64::from(a) / 7.0);
                    kept.push(slot, f, s, a, unit);
                    // As kept: f32.
                    all.push((slot, f64::from(f as f32), f64::from(s as f32), f64::from(a as f32)));
                    slot += 1;
                }
                oldest = (oldest + step).min(slot);
                kept.refresh(oldest);
            }
            let mut at_once = WholeInstances::default();
            for &(slot, f, s, a) in all.iter().filter(|p| p.0 >= oldest) {
                at_once.push(slot, f, s, a, unit);
            }
            at_once.refresh(oldest);
            for g in 0..GRID {
                prop_assert_eq!(kept.instances[g], at_once.instances[g]);
                let (x, y) = (kept.lost[g], at_once.lost[g]);
                prop_assert!((x - y).abs() <= 1e-6 * (1.0 + y.abs()), "{} vs {}", x, y);
            }
            // By hand, over the kept slots: (instance-periods × unit + lost / e, lost).
            let kept_slots: Vec<_> = all.iter().filter(|p| p.0 >= oldest).collect();
            let priced = |g: usize, e: f64| -> (f64, f64) {
                kept_slots.iter().fold((0.0, 0.0), |(cost, lost), &&(_, f, s, a)| {
                    let n = held(f, GRID_Z[g], s, unit);
                    let missed = (a - n * unit).max(0.0);
                    (cost + n * unit + missed / e, lost + missed)
                })
            };
            for e in es {
                let (z, lost) = kept.best(e);
                let g = GRID_Z.iter().position(|&x| x == z).expect("a grid point");
                let (chosen, by_hand) = priced(g, e);
                prop_assert!((lost - by_hand).abs() <= 1e-6 * (1.0 + by_hand), "{} vs {}", lost, by_hand);
                let least = (0..GRID).map(|g| priced(g, e).0).fold(f64::INFINITY, f64::min);
                prop_assert!(
                    chosen <= least + 1e-6 * least.abs(),
                    "e {}: z {} costs {} > {}", e, z, chosen, least
                );
            }
        }
    }
}
