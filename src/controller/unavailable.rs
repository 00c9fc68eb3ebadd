//! Capacity pools EC2 said it has no capacity in, remembered for a while so the next
//! launch goes elsewhere at once instead of asking again (Karpenter's "unavailable
//! offerings" cache; its default TTL is 3 minutes). Pure: time is passed in.

use crate::cloud::{Market, Pool};
use chrono::{DateTime, Duration, Utc};
use std::collections::BTreeMap;

/// How long an insufficient-capacity answer keeps a pool out of launches.
pub const UNAVAILABLE_TTL: Duration = Duration::minutes(3);

/// A pool out of capacity in one market: until when, and EC2's reason.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Outage {
    pub pool: Pool,
    pub market: Market,
    pub until: DateTime<Utc>,
    /// EC2's error code and message, as answered.
    pub reason: String,
}

/// The pools out of capacity, by (pool, market).
#[derive(Debug, Default, Clone)]
pub struct Unavailable {
    entries: BTreeMap<(Pool, String), (DateTime<Utc>, String)>,
    /// When a pool of each market was last marked out (kept after the entry expires).
    last: BTreeMap<String, DateTime<Utc>>,
}

/// A pool is its instance type and subnet: its weight does not make it another pool (an
/// error answer may not carry it).
fn key(pool: &Pool, market: Market) -> (Pool, String) {
    let pool = Pool {
        weighted_capacity: None,
        ..pool.clone()
    };
    (pool, market.as_aws().to_string())
}

impl Unavailable {
    /// Keep `pool` out of `market` launches until `now + ttl`. A newer answer extends it.
    pub fn mark(
        &mut self,
        pool: &Pool,
        market: Market,
        reason: String,
        now: DateTime<Utc>,
        ttl: Duration,
    ) {
        self.entries.insert(key(pool, market), (now + ttl, reason));
        self.last.insert(market.as_aws().to_string(), now);
    }

    /// When a pool of `market` was last answered "no capacity", if ever.
    pub fn last_outage(&self, market: Market) -> Option<DateTime<Utc>> {
        self.last.get(market.as_aws()).copied()
    }

    /// Whether `pool` is out of `market` at `now`.
    pub fn is_out(&self, pool: &Pool, market: Market, now: DateTime<Utc>) -> bool {
        self.entries
            .get(&key(pool, market))
            .is_some_and(|(until, _)| *until > now)
    }

    /// The pools of `pools` (in their order) not out of `market` at `now`.
    pub fn open(&self, pools: &[Pool], market: Market, now: DateTime<Utc>) -> Vec<Pool> {
        pools
            .iter()
            .filter(|p| !self.is_out(p, market, now))
            .cloned()
            .collect()
    }

    /// Forget what expired by `now`.
    pub fn prune(&mut self, now: DateTime<Utc>) {
        self.entries.retain(|_, (until, _)| *until > now);
    }

    /// What is out at `now`, for status and logs.
    pub fn outages(&self, now: DateTime<Utc>) -> Vec<Outage> {
        self.entries
            .iter()
            .filter(|(_, (until, _))| *until > now)
            .map(|((pool, market), (until, reason))| Outage {
                pool: pool.clone(),
                market: Market::from_aws(market),
                until: *until,
                reason: reason.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pool(t: &str, s: &str) -> Pool {
        Pool {
            instance_type: Some(t.into()),
            subnet: Some(s.into()),
            weighted_capacity: None,
        }
    }

    #[test]
    fn a_pool_out_of_spot_still_launches_on_demand_and_comes_back_after_the_ttl() {
        let t0 = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).expect("time");
        let mut u = Unavailable::default();
        let p = pool("m6i.large", "subnet-a");
        u.mark(
            &p,
            Market::Spot,
            "InsufficientInstanceCapacity".into(),
            t0,
            UNAVAILABLE_TTL,
        );
        assert!(u.is_out(&p, Market::Spot, t0));
        assert!(!u.is_out(&p, Market::OnDemand, t0));
        assert!(u.is_out(&p, Market::Spot, t0 + Duration::seconds(179)));
        assert!(!u.is_out(&p, Market::Spot, t0 + UNAVAILABLE_TTL));
        let both = [p.clone(), pool("c6i.large", "subnet-a")];
        assert_eq!(u.open(&both, Market::Spot, t0), vec![both[1].clone()]);
        assert_eq!(u.outages(t0).len(), 1);
        u.prune(t0 + UNAVAILABLE_TTL);
        assert!(u.outages(t0).is_empty());
    }

    proptest! {
        /// Whatever is marked when: `open` keeps the pools' order and drops exactly those
        /// marked out in that market less than the TTL ago.
        #[test]
        fn open_is_the_pools_not_marked_within_the_ttl(
            marks in proptest::collection::vec((0usize..4, any::<bool>(), 0i64..600), 0..12),
            at in 600i64..900,
        ) {
            let t0 = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).expect("time");
            let pools: Vec<Pool> = (0..4).map(|i| pool(&format!("t{i}"), "s")).collect();
            let mut u = Unavailable::default();
            let mut sorted = marks.clone();
            sorted.sort_by_key(|m| m.2);
            for (i, spot, s) in &sorted {
                let m = if *spot { Market::Spot } else { Market::OnDemand };
                u.mark(&pools[*i], m, "x".into(), t0 + Duration::seconds(*s), UNAVAILABLE_TTL);
            }
            let now = t0 + Duration::seconds(at);
            let open = u.open(&pools, Market::Spot, now);
            let expect: Vec<Pool> = pools
                .iter()
                .enumerate()
                .filter(|(i, _)| {
                    !sorted.iter().any(|(j, spot, s)| {
                        j == i && *spot && *s <= at && at < s + UNAVAILABLE_TTL.num_seconds()
                    })
                })
                .map(|(_, p)| p.clone())
                .collect();
            prop_assert_eq!(open, expect);
        }
    }
}
