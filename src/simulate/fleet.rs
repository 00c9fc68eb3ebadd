//! The simulated fleet's instances, by market, and how Spot capacity is lost.
//!
//! An instance is its launch minute (a capacity unit, with instance weights). On-Demand
//! and Spot instances are kept apart, oldest first; a Spot instance also remembers its
//! pool (instance type × subnet), which sets its interruption rate and its price. Spot
//! launches go to pools as the fleet's allocation strategy chooses them
//! ([`MarketModel::choose`]). A Spot instance that gets its two-minute interruption
//! warning stops serving after that minute (coxswain deregisters and drains it at once)
//! and is billed until it is gone, [`SPOT_WARNING_MINUTES`] later. Its replacement is
//! launched in the minute of the warning, on Spot in the pool the strategy chooses (as
//! coxswain's CreateFleet does: a warning does not close a pool, only a capacity error
//! does), before any policy decides: the fleet manager replaces lost capacity (as coxswain does on the warning, and an Auto
//! Scaling group does to keep its desired capacity), so every policy, the baselines too,
//! is one instance short only for the replacement's boot.
//!
//! With instance weights the replay counts units, and each unit is drawn for interruption
//! on its own: the same expected loss as whole instances, with less variance.

use crate::cloud::market::{self, Floor, Market, Split};
use crate::manifest::{OnDemandBase, SpotAllocationStrategy};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::collections::VecDeque;

/// From the interruption warning to the instance being gone (EC2's two-minute notice).
pub const SPOT_WARNING_MINUTES: i64 = 2;
/// The window an On-Demand base of `floor` is the least wanted capacity over.
const FLOOR_MINUTES: i64 = 24 * 60;

/// How a simulated fleet buys capacity: the instances distribution and the Spot pools'
/// reliability.
#[derive(Debug, Clone, PartialEq)]
pub struct MarketModel {
    pub on_demand_base: OnDemandBase,
    /// Percent of the capacity above the base that is On-Demand (0..=100).
    pub on_demand_percent: u8,
    /// The Spot pools (at least one; see [`MarketModel::pools_or_one`]).
    pub pools: Vec<SpotPool>,
    /// How Spot launches choose among `pools`.
    pub allocation: SpotAllocationStrategy,
    /// Interruption storms: at replay minute `.0`, share `.1` (0..1) of the Spot
    /// instances get the warning at once (a pool taken back).
    pub storms: Vec<(usize, f64)>,
    /// Seed of the interruption draws: the same seed, the same run.
    pub seed: u64,
}

/// One Spot capacity pool: an instance type in one subnet (zone).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SpotPool {
    /// `TYPE in SUBNET`, for reports.
    pub name: String,
    /// Chance per Spot unit and minute of an interruption warning.
    pub interruptions_per_minute: f64,
    /// USD per unit-hour on Spot (the type's Spot price over its weight).
    pub usd_per_hour: f64,
}

impl MarketModel {
    /// The pools, or one pool that is never interrupted and costs nothing when none are
    /// given (no price table).
    fn pools_or_one(&self) -> Vec<SpotPool> {
        if self.pools.is_empty() {
            vec![SpotPool {
                name: "spot".into(),
                interruptions_per_minute: 0.0,
                usd_per_hour: 0.0,
            }]
        } else {
            self.pools.clone()
        }
    }

    /// The pool the next Spot unit goes to, given how many live Spot units each pool
    /// holds (`held`, by pool index). The model of EC2 Fleet's allocation strategies:
    /// - `lowest-price`: the cheapest pool;
    /// - `capacity-optimized`: the pool least often interrupted;
    /// - `price-capacity-optimized`: the cheapest of the pools interrupted at most twice
    ///   as often as the least interrupted one (AWS: the lowest price among the pools
    ///   with the most capacity available; interruptions stand for capacity here);
    /// - `diversified`: the pool holding the fewest Spot units (an even spread).
    ///
    /// Ties go to the pool holding the fewest Spot units (equally good pools are spread
    /// over), then to the pool listed first.
    pub fn choose(&self, held: &[u32]) -> usize {
        let pools = self.pools_or_one();
        let candidates: Vec<usize> = (0..pools.len()).collect();
        let count = |i: usize| held.get(i).copied().unwrap_or(0);
        let by = |key: &dyn Fn(usize) -> f64, among: &[usize]| -> usize {
            among
                .iter()
                .copied()
                .min_by(|a, b| {
                    key(*a)
                        .total_cmp(&key(*b))
                        .then(count(*a).cmp(&count(*b)))
                        .then(a.cmp(b))
                })
                .unwrap_or(0)
        };
        let rate = |i: usize| pools[i].interruptions_per_minute;
        let price = |i: usize| pools[i].usd_per_hour;
        match self.allocation {
            SpotAllocationStrategy::LowestPrice => by(&price, &candidates),
            SpotAllocationStrategy::CapacityOptimized => by(&rate, &candidates),
            SpotAllocationStrategy::PriceCapacityOptimized => {
                let least = candidates
                    .iter()
                    .map(|&i| rate(i))
                    .fold(f64::INFINITY, f64::min);
                let steady: Vec<usize> = candidates
                    .iter()
                    .copied()
                    .filter(|&i| rate(i) <= least * 2.0 + 1e-12)
                    .collect();
                by(&price, &steady)
            }
            SpotAllocationStrategy::Diversified => by(&|_| 0.0, &candidates),
        }
    }
}

/// What one minute did to the fleet.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Step {
    /// Instances retired or interrupted this minute that still served it.
    pub leaving_ready: u32,
    /// Instances retired this minute (billed for it, gone from the next).
    pub retired: u32,
    pub retired_spot: u32,
    /// What the Spot units retired this minute cost per hour (they are billed for it).
    pub retired_spot_usd_per_hour: f64,
    pub short_lived: u32,
    pub launched: u32,
}

pub(super) struct Instances {
    boot: i64,
    on_demand: VecDeque<i64>,
    /// (launch minute, pool), oldest first.
    spot: VecDeque<(i64, usize)>,
    /// Warned Spot instances: the first minute each is gone (billed until then), and its
    /// pool.
    doomed: VecDeque<(i64, usize)>,
    market: Option<MarketModel>,
    pools: Vec<SpotPool>,
    /// Live Spot units per pool.
    held: Vec<u32>,
    floor: Floor,
    rng: StdRng,
}

impl Instances {
    /// `initial` instances serving from before the replay (On-Demand and Spot as the
    /// market splits them).
    pub fn new(initial: u32, boot: i64, market: Option<MarketModel>) -> Instances {
        let pools = market
            .as_ref()
            .map(MarketModel::pools_or_one)
            .unwrap_or_default();
        let mut me = Instances {
            boot,
            on_demand: VecDeque::new(),
            spot: VecDeque::new(),
            doomed: VecDeque::new(),
            rng: StdRng::seed_from_u64(market.as_ref().map(|m| m.seed).unwrap_or(0)),
            held: vec![0; pools.len()],
            pools,
            market,
            floor: Floor::new(FLOOR_MINUTES),
        };
        let s = me.target(-1, initial);
        me.on_demand = std::iter::repeat_n(-boot - 60, s.on_demand as usize).collect();
        for _ in 0..s.spot {
            me.launch_spot(-boot - 60);
        }
        me
    }

    /// One Spot unit launched at minute `m`, in the pool the allocation strategy chooses.
    fn launch_spot(&mut self, m: i64) {
        let pool = self.market.as_ref().map_or(0, |mm| mm.choose(&self.held));
        if let Some(h) = self.held.get_mut(pool) {
            *h += 1;
        }
        self.spot.push_back((m, pool));
    }

    fn price_of(&self, pool: usize) -> f64 {
        self.pools.get(pool).map_or(0.0, |p| p.usd_per_hour)
    }

    /// What the live and warned Spot units cost per hour now.
    pub fn spot_usd_per_hour(&self) -> f64 {
        let live: f64 = self
            .held
            .iter()
            .enumerate()
            .map(|(i, n)| f64::from(*n) * self.price_of(i))
            .sum();
        live + self
            .doomed
            .iter()
            .map(|(_, p)| self.price_of(*p))
            .sum::<f64>()
    }

    /// Live instances (not warned) by market.
    pub fn live(&self) -> Split {
        Split {
            on_demand: self.on_demand.len() as u32,
            spot: self.spot.len() as u32,
        }
    }

    /// Live instances serving at minute `m`.
    pub fn ready(&self, m: i64) -> u32 {
        let boot = self.boot;
        (self.on_demand.partition_point(|&l| l + boot <= m)
            + self.spot.partition_point(|&(l, _)| l + boot <= m)) as u32
    }

    /// Live instances launched at least `w` minutes before minute `m`.
    pub fn launched_before(&self, m: i64, w: u32) -> u32 {
        let w = i64::from(w);
        (self.on_demand.partition_point(|&l| l + w <= m)
            + self.spot.partition_point(|&(l, _)| l + w <= m)) as u32
    }

    /// Warned instances still billed at minute `m`.
    pub fn doomed(&self) -> u32 {
        self.doomed.len() as u32
    }

    /// The split `wanted` should have at minute `m`.
    fn target(&mut self, m: i64, wanted: u32) -> Split {
        match &self.market {
            None => Split {
                on_demand: wanted,
                spot: 0,
            },
            Some(mm) => {
                let base = match mm.on_demand_base {
                    OnDemandBase::Units(n) => n,
                    OnDemandBase::Floor => self.floor.push(m, wanted),
                };
                market::split(wanted, base, mm.on_demand_percent)
            }
        }
    }

    /// Start of minute `m`: the warned instances whose time is up are gone, Spot
    /// instances get their warnings, and each warned one is replaced at once (a Spot
    /// launch in minute `m`). Returns (warned, of them serving until now).
    pub fn interruptions(&mut self, m: usize) -> (u32, u32) {
        let mi = m as i64;
        while self.doomed.front().is_some_and(|&(gone, _)| gone <= mi) {
            self.doomed.pop_front();
        }
        let Some(mm) = &self.market else {
            return (0, 0);
        };
        let storm: f64 = mm
            .storms
            .iter()
            .filter(|s| s.0 == m)
            .map(|s| s.1)
            .sum::<f64>()
            .min(1.0);
        let any_rate = self.pools.iter().any(|p| p.interruptions_per_minute > 0.0);
        if self.spot.is_empty() || (!any_rate && storm <= 0.0) {
            return (0, 0);
        }
        let mut warned = 0u32;
        let mut ready = 0u32;
        let mut from = 0u32;
        let mut i = 0;
        while i < self.spot.len() {
            let p = self.spot[i].1;
            let rate = self
                .pools
                .get(p)
                .map_or(0.0, |p| p.interruptions_per_minute);
            let hit = (storm > 0.0 && self.rng.gen_bool(storm))
                || (rate > 0.0 && self.rng.gen_bool(rate.min(1.0)));
            if hit {
                if let Some((l, pool)) = self.spot.remove(i) {
                    warned += 1;
                    if l + self.boot <= mi {
                        ready += 1;
                    }
                    if let Some(h) = self.held.get_mut(pool) {
                        *h = h.saturating_sub(1);
                    }
                    self.doomed.push_back((mi + SPOT_WARNING_MINUTES, pool));
                    from += 1;
                }
            } else {
                i += 1;
            }
        }
        // The replacements, where the strategy puts them: the newest instances, so they
        // go at the end.
        for _ in 0..from {
            self.launch_spot(mi);
        }
        (warned, ready)
    }

    /// The decision of minute `m`: launch or retire to `wanted`, each market toward its
    /// share. Retirements take the newest first (booting before serving).
    pub fn resize(&mut self, m: usize, wanted: u32, short_lived_minutes: i64) -> Step {
        let mi = m as i64;
        let target = self.target(mi, wanted);
        let have = self.live();
        let mut step = Step::default();
        let up = market::launches(have, target);
        self.on_demand
            .extend(std::iter::repeat_n(mi, up.on_demand as usize));
        for _ in 0..up.spot {
            self.launch_spot(mi);
        }
        step.launched += up.total();
        let down = market::retirements(have, target);
        for (kind, n) in [
            (Market::Spot, down.spot),
            (Market::OnDemand, down.on_demand),
        ] {
            for _ in 0..n {
                let launched = match kind {
                    Market::Spot => self.spot.pop_back().map(|(l, pool)| {
                        if let Some(h) = self.held.get_mut(pool) {
                            *h = h.saturating_sub(1);
                        }
                        step.retired_spot += 1;
                        step.retired_spot_usd_per_hour += self.price_of(pool);
                        l
                    }),
                    Market::OnDemand => self.on_demand.pop_back(),
                };
                if let Some(l) = launched {
                    step.retired += 1;
                    if mi - l < short_lived_minutes {
                        step.short_lived += 1;
                    }
                    if l + self.boot <= mi {
                        step.leaving_ready += 1;
                    }
                }
            }
        }
        step
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn market(base: OnDemandBase, pct: u8, storms: Vec<(usize, f64)>) -> MarketModel {
        MarketModel {
            on_demand_base: base,
            on_demand_percent: pct,
            pools: Vec::new(),
            allocation: SpotAllocationStrategy::default(),
            storms,
            seed: 7,
        }
    }

    #[test]
    fn without_a_market_every_instance_is_on_demand_and_never_interrupted() {
        let mut f = Instances::new(3, 3, None);
        for m in 0..50 {
            assert_eq!(f.interruptions(m), (0, 0));
            f.resize(m, (m as u32 % 7) + 1, 15);
            assert_eq!(f.live().spot, 0);
        }
    }

    /// The strategies' choice among pools: price, interruptions, both, or spread.
    #[test]
    fn each_allocation_strategy_chooses_its_pool() {
        let pool = |name: &str, rate: f64, usd: f64| SpotPool {
            name: name.into(),
            interruptions_per_minute: rate,
            usd_per_hour: usd,
        };
        let mut m = market(OnDemandBase::Units(0), 0, vec![]);
        m.pools = vec![
            pool("cheap, often taken", 0.010, 0.03),
            pool("dear, steady", 0.001, 0.05),
            pool("middle, steady", 0.0015, 0.04),
        ];
        let with = |s: SpotAllocationStrategy| MarketModel {
            allocation: s,
            ..m.clone()
        };
        use SpotAllocationStrategy as S;
        assert_eq!(with(S::LowestPrice).choose(&[0, 0, 0]), 0);
        assert_eq!(with(S::LowestPrice).choose(&[9, 0, 0]), 0, "price first");
        assert_eq!(with(S::CapacityOptimized).choose(&[0, 0, 0]), 1);
        // Within twice the least interrupted pool's rate: 1 and 2; the cheaper is 2.
        assert_eq!(with(S::PriceCapacityOptimized).choose(&[0, 0, 0]), 2);
        assert_eq!(with(S::Diversified).choose(&[3, 2, 1]), 2);
        assert_eq!(with(S::Diversified).choose(&[1, 2, 3]), 0);
        // No pools (no price table): one free pool that is never interrupted.
        let same = MarketModel {
            pools: vec![pool("a", 0.001, 0.03), pool("b", 0.001, 0.03)],
            ..m.clone()
        };
        assert_eq!(same.choose(&[2, 1]), 1, "equal pools are spread over");
        let none = market(OnDemandBase::Units(0), 0, vec![]);
        assert_eq!(none.choose(&[]), 0);
        assert_eq!(none.pools_or_one()[0].interruptions_per_minute, 0.0);
    }

    #[test]
    fn a_storm_takes_spot_only_and_the_warned_are_billed_for_the_notice() {
        let mut f = Instances::new(
            10,
            3,
            Some(market(OnDemandBase::Units(4), 0, vec![(5, 1.0)])),
        );
        assert_eq!(
            f.live(),
            Split {
                on_demand: 4,
                spot: 6
            }
        );
        for m in 0..5 {
            assert_eq!(f.interruptions(m), (0, 0));
        }
        assert_eq!(f.interruptions(5), (6, 6));
        // Replaced at once on Spot, booting; On-Demand untouched.
        assert_eq!(f.ready(5), 4);
        assert_eq!(f.doomed(), 6);
        let step = f.resize(5, 10, 15);
        assert_eq!(step.launched, 0, "nothing left for the decision to replace");
        assert_eq!(
            f.live(),
            Split {
                on_demand: 4,
                spot: 6
            }
        );
        assert_eq!(f.interruptions(6), (0, 0));
        assert_eq!(f.doomed(), 6, "billed through the two-minute notice");
        f.interruptions(7);
        assert_eq!(
            f.doomed(),
            0,
            "gone {SPOT_WARNING_MINUTES} minutes after the warning"
        );
    }

    proptest! {
        #[test]
        fn on_demand_never_drops_below_its_share_and_the_size_is_what_was_asked(
            steps in proptest::collection::vec((0u32..60, 0.0f64..1.0, any::<bool>()), 1..200),
            base in 0u32..20, pct in 0u8..=100, floor in any::<bool>(),
        ) {
            let storms: Vec<(usize, f64)> = steps.iter().enumerate().filter(|(_, s)| s.2).map(|(m, s)| (m, s.1)).collect();
            let base = if floor { OnDemandBase::Floor } else { OnDemandBase::Units(base) };
            let mut f = Instances::new(5, 3, Some(market(base, pct, storms)));
            let mut shadow = Floor::new(FLOOR_MINUTES);
            shadow.push(-1, 5);
            for (m, &(wanted, _, _)) in steps.iter().enumerate() {
                let before = f.live();
                let (warned, _) = f.interruptions(m);
                let after_storm = f.live();
                // Interruptions take Spot capacity only, and it is replaced on Spot.
                prop_assert_eq!(after_storm, before);
                prop_assert!(warned <= before.spot);
                let b = match base {
                    OnDemandBase::Units(n) => n,
                    OnDemandBase::Floor => shadow.push(m as i64, wanted),
                };
                let target = market::split(wanted, b, pct);
                f.resize(m, wanted, 15);
                let now = f.live();
                prop_assert_eq!(now.total(), wanted);
                // On-Demand moves toward its share and never below it by a retirement.
                prop_assert!(now.on_demand >= target.on_demand.min(after_storm.on_demand));
                prop_assert!(now.on_demand.abs_diff(target.on_demand) <= after_storm.on_demand.abs_diff(target.on_demand));
            }
        }
    }
}
