//! How a fleet's capacity divides between On-Demand and Spot: the instances-distribution
//! semantics of an EC2 Auto Scaling group's mixed instances policy, as pure functions.
//!
//! - `on_demand_base_capacity` is filled by On-Demand first;
//! - above it, `on_demand_percentage_above_base_capacity` percent is On-Demand and the rest
//!   Spot. A fraction is rounded in favour of On-Demand (the safe side: Spot can be taken
//!   back).
//!
//! AWS: "InstancesDistribution", Amazon EC2 Auto Scaling API Reference; the same split is
//! what EC2 CreateFleet's `TargetCapacitySpecification` (`OnDemandTargetCapacity`,
//! `SpotTargetCapacity`) is given.
//!
//! The base can also be the fleet's **floor**: the least capacity it wanted over the last
//! 24 hours ([`Floor`]). The capacity a fleet never goes below stays On-Demand, and only
//! what comes and goes with the day is offered to Spot.

use std::collections::VecDeque;

/// Where an instance's capacity is bought. Serialized as EC2 names it (`on-demand`,
/// `spot`: the `Lifecycle` of a CreateFleet answer, the `coxswain:market` tag).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Market {
    #[default]
    OnDemand,
    Spot,
}

impl Market {
    /// EC2's name: `on-demand` or `spot`.
    pub fn as_aws(self) -> &'static str {
        match self {
            Market::OnDemand => "on-demand",
            Market::Spot => "spot",
        }
    }

    /// Reads EC2's name; anything but `spot` is On-Demand (an instance without a
    /// lifecycle is On-Demand in EC2's answers).
    pub fn from_aws(s: &str) -> Market {
        if s == "spot" {
            Market::Spot
        } else {
            Market::OnDemand
        }
    }
}

impl std::fmt::Display for Market {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_aws())
    }
}

/// A capacity divided by market. Units are whatever the fleet counts capacity in
/// (instances today).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Split {
    pub on_demand: u32,
    pub spot: u32,
}

impl Split {
    pub fn total(self) -> u32 {
        self.on_demand + self.spot
    }
}

/// Divide `total` units: the first `base` On-Demand, then `on_demand_percent` (0..=100;
/// larger values count as 100) of the rest On-Demand, rounded up, and the remainder Spot.
pub fn split(total: u32, base: u32, on_demand_percent: u8) -> Split {
    let base = base.min(total);
    let above = u64::from(total - base);
    let pct = u64::from(on_demand_percent.min(100));
    // Round the On-Demand share up: ceil(above * pct / 100).
    let od_above = (above * pct).div_ceil(100) as u32;
    Split {
        on_demand: base + od_above,
        spot: total - base - od_above,
    }
}

/// Which market the next `n` launches go to, and the next `n` retirements come from, so
/// that a fleet of `have` moves toward the split of `want` units. Launches fill the market
/// furthest below its share first (On-Demand before Spot); retirements take from the one
/// furthest above it (Spot before On-Demand). A fleet is not rebalanced when its size does
/// not change: moving capacity between markets costs launches, and the next scale event
/// corrects it.
pub fn launches(have: Split, want: Split) -> Split {
    let n = want.total().saturating_sub(have.total());
    let on_demand = want.on_demand.saturating_sub(have.on_demand).min(n);
    Split {
        on_demand,
        spot: n - on_demand,
    }
}

/// See [`launches`]: how many of each market to retire to go from `have` to `want`.
pub fn retirements(have: Split, want: Split) -> Split {
    let n = have.total().saturating_sub(want.total());
    let spot = have.spot.saturating_sub(want.spot).min(n);
    Split {
        on_demand: n - spot,
        spot,
    }
}

/// The least value seen over a trailing window: the fleet's floor for an On-Demand base of
/// `floor`. Amortised O(1) per sample (a monotone queue).
#[derive(Debug, Clone)]
pub struct Floor {
    window: i64,
    /// (time, value), values increasing from the front.
    queue: VecDeque<(i64, u32)>,
}

impl Floor {
    /// A floor over the last `window` time units (minutes, seconds: the caller's choice,
    /// used consistently).
    pub fn new(window: i64) -> Floor {
        Floor {
            window,
            queue: VecDeque::new(),
        }
    }

    /// Record `value` at `time` (times must not go backwards) and return the least value
    /// in `(time - window, time]`.
    pub fn push(&mut self, time: i64, value: u32) -> u32 {
        while self.queue.back().is_some_and(|&(_, v)| v >= value) {
            self.queue.pop_back();
        }
        self.queue.push_back((time, value));
        while self
            .queue
            .front()
            .is_some_and(|&(t, _)| t <= time - self.window)
        {
            self.queue.pop_front();
        }
        self.queue.front().map(|&(_, v)| v).unwrap_or(value)
    }
}

/// One point of EC2's Spot price history: a price that holds from `at` until the next
/// point of the same instance type and Availability Zone.
#[derive(Debug, Clone, PartialEq)]
pub struct SpotPricePoint {
    pub instance_type: String,
    pub zone: String,
    pub at: i64,
    /// USD per instance-hour.
    pub price: f64,
}

/// The time-weighted mean Spot price of each instance type over `[start, end)` (epoch
/// seconds), with how many points it is made of. DescribeSpotPriceHistory lists price
/// *changes*: each price holds until the next change in its zone, so a plain mean of the
/// points would give a price that held for a minute the weight of one that held for a
/// week. Each zone's price is weighted by how long it held within the window (a point
/// before `start` holds from `start`); a type's mean is the mean of its zones' (each zone
/// is a pool). Non-finite or negative prices are left out.
pub fn time_weighted_means(
    points: &[SpotPricePoint],
    start: i64,
    end: i64,
) -> std::collections::BTreeMap<String, (f64, usize)> {
    use std::collections::BTreeMap;
    let mut by_pool: BTreeMap<(&str, &str), Vec<(i64, f64)>> = BTreeMap::new();
    for p in points
        .iter()
        .filter(|p| p.price.is_finite() && p.price >= 0.0 && p.at < end)
    {
        by_pool
            .entry((p.instance_type.as_str(), p.zone.as_str()))
            .or_default()
            .push((p.at, p.price));
    }
    let mut zones: BTreeMap<&str, (f64, usize, usize)> = BTreeMap::new();
    for ((ty, _), mut v) in by_pool {
        v.sort_by_key(|(at, _)| *at);
        // Only the newest point at or before `start` matters for the window's opening.
        let first = v.iter().rposition(|(at, _)| *at <= start).unwrap_or(0);
        let v = &v[first..];
        let (mut weighted, mut span) = (0.0, 0i64);
        for (k, (at, price)) in v.iter().enumerate() {
            let from = (*at).max(start);
            let to = v.get(k + 1).map_or(end, |(next, _)| (*next).min(end));
            if to > from {
                weighted += price * (to - from) as f64;
                span += to - from;
            }
        }
        let mean = if span > 0 {
            weighted / span as f64
        } else {
            v.last().map_or(0.0, |(_, p)| *p)
        };
        let e = zones.entry(ty).or_default();
        e.0 += mean;
        e.1 += 1;
        e.2 += v.len();
    }
    zones
        .into_iter()
        .map(|(t, (sum, n, points))| (t.to_string(), (sum / n as f64, points)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A price is weighted by how long it held: $0.03 for the first hour of a day and
    /// $0.05 for the other 23 is $0.04917, not the $0.04 of the two points; a point
    /// before the window holds from its start; zones are averaged as pools; bad points
    /// are left out.
    #[test]
    fn spot_prices_are_time_weighted_per_zone_then_averaged() {
        let h = 3600;
        let p = |t: &str, z: &str, at: i64, v: f64| SpotPricePoint {
            instance_type: t.into(),
            zone: z.into(),
            at,
            price: v,
        };
        let m = time_weighted_means(
            &[
                p("m6i.large", "a", -5 * h, 0.03),
                p("m6i.large", "a", h, 0.05),
                p("c6i.large", "a", 0, 0.02),
                p("c6i.large", "b", 12 * h, 0.04),
                p("c6i.large", "a", 2 * h, f64::NAN),
                p("c6i.large", "a", 3 * h, -1.0),
                p("m6i.large", "a", 30 * h, 9.0),
            ],
            0,
            24 * h,
        );
        assert_eq!(m.len(), 2);
        let want = (0.03 + 0.05 * 23.0) / 24.0;
        assert!((m["m6i.large"].0 - want).abs() < 1e-12, "{m:?}");
        assert_eq!(m["m6i.large"].1, 2);
        // Zone a $0.02 all day, zone b $0.04 from noon (its only price): 0.03.
        assert!((m["c6i.large"].0 - 0.03).abs() < 1e-12, "{m:?}");
    }
    use proptest::prelude::*;

    #[test]
    fn the_base_is_on_demand_and_the_rest_divides_by_the_percentage_rounding_up() {
        assert_eq!(
            split(10, 2, 20),
            Split {
                on_demand: 4,
                spot: 6
            }
        ); // 2 + ceil(1.6)
        assert_eq!(
            split(10, 0, 0),
            Split {
                on_demand: 0,
                spot: 10
            }
        );
        assert_eq!(
            split(10, 0, 100),
            Split {
                on_demand: 10,
                spot: 0
            }
        );
        assert_eq!(
            split(3, 5, 0),
            Split {
                on_demand: 3,
                spot: 0
            }
        );
        assert_eq!(split(0, 5, 50), Split::default());
        assert_eq!(
            split(7, 1, 50),
            Split {
                on_demand: 4,
                spot: 3
            }
        ); // 1 + ceil(3)
        assert_eq!(
            split(8, 1, 50),
            Split {
                on_demand: 5,
                spot: 3
            }
        ); // 1 + ceil(3.5)
    }

    proptest! {
        #[test]
        fn a_split_keeps_the_total_the_base_and_the_share(total in 0u32..100_000, base in 0u32..100_000, pct in 0u8..=255) {
            let s = split(total, base, pct);
            prop_assert_eq!(s.total(), total);
            prop_assert!(s.on_demand >= base.min(total));
            let pct = u64::from(pct.min(100));
            let above = u64::from(total - base.min(total));
            let od_above = u64::from(s.on_demand - base.min(total));
            // At least the share, and less than one unit over it.
            prop_assert!(od_above * 100 >= above * pct);
            prop_assert!(od_above * 100 < above * pct + 100);
        }

        #[test]
        fn launches_and_retirements_reach_the_size_and_move_toward_the_split(
            have_od in 0u32..200, have_spot in 0u32..200, want in 0u32..400, base in 0u32..50, pct in 0u8..=100,
        ) {
            let have = Split { on_demand: have_od, spot: have_spot };
            let target = split(want, base, pct);
            let up = launches(have, target);
            let down = retirements(have, target);
            let after = Split {
                on_demand: have.on_demand + up.on_demand - down.on_demand.min(have.on_demand + up.on_demand),
                spot: have.spot + up.spot - down.spot.min(have.spot + up.spot),
            };
            prop_assert_eq!(after.total(), want);
            // Never retire more of a market than it has.
            prop_assert!(down.on_demand <= have.on_demand && down.spot <= have.spot);
            // Each market ends no further from its share than it started.
            let gap = |a: u32, b: u32| a.abs_diff(b);
            prop_assert!(gap(after.on_demand, target.on_demand) <= gap(have.on_demand, target.on_demand));
            prop_assert!(gap(after.spot, target.spot) <= gap(have.spot, target.spot));
        }

        #[test]
        fn the_floor_is_the_least_value_of_the_window(values in proptest::collection::vec(0u32..50, 1..300), window in 1i64..40) {
            let mut f = Floor::new(window);
            for (t, &v) in values.iter().enumerate() {
                let got = f.push(t as i64, v);
                let from = (t as i64 - window + 1).max(0) as usize;
                let want = values[from..=t].iter().copied().min().unwrap_or(v);
                prop_assert_eq!(got, want);
            }
        }
    }
}
