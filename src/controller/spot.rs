//! Launching and retiring a fleet with an instances distribution: On-Demand and Spot
//! through EC2 CreateFleet (`instant`), every instance type × subnet as a pool, pools EC2
//! has no capacity in kept out for a while ([`super::unavailable`]), and a Spot shortfall
//! filled On-Demand at once.

use super::unavailable::UNAVAILABLE_TTL;
use super::{note_error, plan, Controller, PassReport};
use crate::cloud::market::{self, Split};
use crate::cloud::{tags, Instance, Market, Pool};
use crate::deploy::Build;
use crate::manifest::FleetSpec;
use crate::manifest::{InstancesDistribution, OnDemandBase};
use std::collections::HashSet;
use tracing::{error, info, warn};

/// Spot is asked to take capacity back from On-Demand only when no Spot pool has been
/// out of capacity for this long.
pub const MOVE_BACK_QUIET: chrono::Duration = chrono::Duration::minutes(10);

/// A distribution's On-Demand base: its number, or for `floor` the fleet's 24-hour floor
/// (`floor`; 0 before it has one).
fn base_of(d: &InstancesDistribution, floor: Option<u32>) -> u32 {
    match d.on_demand_base_capacity {
        OnDemandBase::Units(n) => n,
        OnDemandBase::Floor => floor.unwrap_or(0),
    }
}

/// The split a fleet of `total` units should have, given its 24-hour floor; all
/// On-Demand without a distribution.
pub(super) fn split_for(spec: &FleetSpec, total: u32, floor: Option<u32>) -> Split {
    match &spec.launch.instances_distribution {
        Some(d) => market::split(
            total,
            base_of(d, floor),
            d.on_demand_percentage_above_base_capacity,
        ),
        None => Split {
            on_demand: total,
            spot: 0,
        },
    }
}

/// The instances a scale-in of `n` units retires from `live`: with a distribution, the
/// market above its share first and On-Demand never below it
/// ([`plan::choose_victims_by_market`]); otherwise [`plan::choose_victims`]. With instance
/// weights they may hold fewer than `n` units. The decision and the action both ask this.
pub(super) fn scale_in_victims<'a>(
    spec: &FleetSpec,
    live: &[&'a Instance],
    build: &str,
    n: u32,
    floor: Option<u32>,
) -> Vec<&'a Instance> {
    if spec.launch.instances_distribution.is_none() {
        return plan::choose_victims(live, build, n);
    }
    let have = have(live);
    let want = split_for(spec, have.total().saturating_sub(n), floor);
    plan::choose_victims_by_market(live, build, market::retirements(have, want), want.on_demand)
}

/// Live capacity by market, in units (instances without weights).
pub fn have(live: &[&Instance]) -> Split {
    let of = |m: Market| crate::cloud::units(live.iter().copied().filter(|i| i.market == m));
    Split {
        on_demand: of(Market::OnDemand),
        spot: of(Market::Spot),
    }
}

impl Controller {
    /// The fleet's 24-hour floor, once it has one.
    pub(super) fn floor_of(&self, spec: &FleetSpec) -> Option<u32> {
        self.fleets
            .get(&spec.name)
            .and_then(|s| s.on_demand_floor.as_ref())
            .map(|(_, floor)| *floor)
    }

    /// The split a fleet of `total` should have.
    pub(super) fn wanted_split(&self, spec: &FleetSpec, total: u32) -> Split {
        split_for(spec, total, self.floor_of(spec))
    }

    /// The up to `n` instances of `pool` (instances of one build, a part of the fleet's
    /// `live` ones) to retire so that that build keeps its split: from the market above
    /// its share first (Spot before the On-Demand base), then from the other if `pool`
    /// holds too few. Without a distribution, `pool` itself.
    pub(super) fn market_victims<'a>(
        &self,
        spec: &FleetSpec,
        live: &[&Instance],
        pool: &[&'a Instance],
        n: u32,
    ) -> Vec<&'a Instance> {
        if spec.launch.instances_distribution.is_none() || pool.is_empty() {
            return pool.to_vec();
        }
        let build = pool[0].build.clone();
        let same: Vec<&Instance> = live.iter().copied().filter(|i| i.build == build).collect();
        let have = have(&same);
        let r = market::retirements(
            have,
            self.wanted_split(spec, have.total().saturating_sub(n)),
        );
        let of = |m: Market| -> Vec<&'a Instance> {
            pool.iter().copied().filter(|i| i.market == m).collect()
        };
        let (spot, od) = (of(Market::Spot), of(Market::OnDemand));
        let (spot_units, od_units) = (
            crate::cloud::units(spot.clone()),
            crate::cloud::units(od.clone()),
        );
        let take_spot = r.spot.min(spot_units);
        let take_od = n.saturating_sub(take_spot).min(od_units);
        let take_spot = n.saturating_sub(take_od).min(spot_units);
        let mut out = plan::choose_victims(&spot, &build, take_spot);
        out.extend(plan::choose_victims(&od, &build, take_od));
        out
    }

    /// Give Spot back what was bought On-Demand while Spot had no capacity, a batch at a
    /// time: when the fleet is at its size, more On-Demand than its share and less Spot,
    /// no rollout runs, nothing is being replaced, and no Spot pool has been out for
    /// [`MOVE_BACK_QUIET`]: up to the disruption budget (a tenth of the desired capacity,
    /// at least one instance) of the On-Demand surplus is tagged `coxswain:replace`. Their
    /// replacements launch on Spot first (the split says Spot is short), and they are
    /// retired once the fleet is in service without them (`retire_replaced`).
    pub(super) async fn move_back_to_spot(
        &mut self,
        spec: &FleetSpec,
        build: &Build,
        instances: &[&Instance],
        desired: u32,
        now: chrono::DateTime<chrono::Utc>,
        report: &mut PassReport,
    ) {
        if spec.launch.instances_distribution.is_none() || self.dry_run {
            return;
        }
        if instances
            .iter()
            .any(|i| i.state.is_live() && i.retiring_since.is_none() && i.replacing.is_some())
        {
            return;
        }
        if self
            .unavailable
            .last_outage(Market::Spot)
            .is_some_and(|t| now - t < MOVE_BACK_QUIET)
        {
            return;
        }
        let live: Vec<&Instance> = instances
            .iter()
            .copied()
            .filter(|i| i.state.is_live() && i.retiring_since.is_none() && i.build == build.id)
            .collect();
        let have = have(&live);
        if have.total() < desired {
            return;
        }
        let want = self.wanted_split(spec, have.total());
        let surplus = have
            .on_demand
            .saturating_sub(want.on_demand)
            .min(want.spot.saturating_sub(have.spot));
        if surplus == 0 {
            return;
        }
        let od: Vec<&Instance> = live
            .iter()
            .copied()
            .filter(|i| i.market == Market::OnDemand)
            .collect();
        // The disruption budget, in units: a tenth of the desired capacity, and at least
        // one instance (with weights, a tenth may be less than any instance holds). The
        // surplus is a hard limit: On-Demand never goes below its share.
        let lightest = od.iter().map(|i| i.weight.max(1)).min().unwrap_or(1);
        let budget = desired.div_ceil(10).max(lightest);
        let ids: Vec<String> = plan::choose_victims(&od, &build.id, surplus.min(budget))
            .iter()
            .map(|i| i.id.clone())
            .collect();
        if ids.is_empty() {
            return;
        }
        let reason = "back to Spot";
        match self.cloud.mark_replacing(&ids, reason, now).await {
            Ok(()) => {
                info!(fleet = %spec.name, ids = ?ids, on_demand = have.on_demand, share = want.on_demand, "action: Spot has capacity again; replacing On-Demand bought in its place, a batch at a time");
                for id in &ids {
                    report.actions.push(crate::controller::Action::Notice {
                        fleet: spec.name.clone(),
                        id: id.clone(),
                        notice: reason.into(),
                    });
                }
            }
            Err(e) => {
                warn!(fleet = %spec.name, error = %e, "cannot tag On-Demand instances to move back to Spot; next pass");
                note_error(report, &spec.name, &e);
            }
        }
    }

    /// Launch `n` more units for a fleet with an instances distribution: the markets below their
    /// share get them (On-Demand first); Spot in one CreateFleet over every open pool, and
    /// what Spot could not place goes On-Demand in the same pass; On-Demand per subnet (so
    /// Availability Zones stay balanced), that subnet's pools first and the others after
    /// them. Pools answered "no capacity" are kept out for [`UNAVAILABLE_TTL`].
    pub(super) async fn launch_by_market(
        &mut self,
        spec: &FleetSpec,
        build: &Build,
        live: &[&Instance],
        observed: &HashSet<&str>,
        n: u32,
        report: &mut PassReport,
    ) -> Vec<Instance> {
        let now = self.clock.now();
        self.unavailable.prune(now);
        // The split is kept per build: in a rollout the new build builds up its own
        // On-Demand base while the old one gives up its own, so neither ends short.
        let same: Vec<&Instance> = live
            .iter()
            .copied()
            .filter(|i| i.build == build.id)
            .collect();
        let have = have(&same);
        let want = self.wanted_split(spec, have.total() + n);
        let mut go = market::launches(have, want);
        let mut out: Vec<Instance> = Vec::new();
        if go.spot > 0 {
            let open = self
                .unavailable
                .open(&plan::pools(spec, None), Market::Spot, now);
            if open.is_empty() {
                warn!(fleet = %spec.name, spot = go.spot, "no Spot pool has capacity (EC2 said so within the last {} minutes); launching On-Demand instead", UNAVAILABLE_TTL.num_minutes());
                go.on_demand += go.spot;
            } else {
                let Some(got) = self
                    .send_fleet(spec, build, Market::Spot, open, go.spot, observed, report)
                    .await
                else {
                    return out;
                };
                let placed = crate::cloud::units(&got);
                let short = go.spot.saturating_sub(placed);
                if short > 0 {
                    warn!(fleet = %spec.name, asked = go.spot, launched = placed, "Spot launched {placed} of {} unit(s); the other {short} go On-Demand", go.spot);
                    go.on_demand += short;
                }
                out.extend(got);
            }
        }
        if go.on_demand > 0 {
            // Zones balanced over what runs and the Spot just launched.
            let placed: Vec<&Instance> = live.iter().copied().chain(out.iter()).collect();
            let spread_over = plan::spread(spec, &placed, go.on_demand, 1);
            let mut short = 0;
            let mut launched: Vec<Instance> = Vec::new();
            for (subnet, count) in spread_over {
                let open = self.unavailable.open(
                    &plan::pools(spec, subnet.as_deref()),
                    Market::OnDemand,
                    now,
                );
                if open.is_empty() {
                    short += count;
                    continue;
                }
                let Some(got) = self
                    .send_fleet(spec, build, Market::OnDemand, open, count, observed, report)
                    .await
                else {
                    out.extend(launched);
                    return out;
                };
                short += count.saturating_sub(crate::cloud::units(&got));
                launched.extend(got);
            }
            if short > 0 {
                error!(fleet = %spec.name, short, "no capacity in any pool of the launch spec, On-Demand or Spot; {short} unit(s) of launches not placed");
                report
                    .errors
                    .push(format!("{}: insufficient capacity everywhere", spec.name));
            }
            out.extend(launched);
        }
        out
    }

    /// One CreateFleet for `count` units in `market` over `pools`, remembered first like every
    /// launch. Capacity errors mark their pools unavailable. `None` when the request
    /// failed as a whole (then nothing more is launched this pass).
    #[allow(clippy::too_many_arguments)]
    async fn send_fleet(
        &mut self,
        spec: &FleetSpec,
        build: &Build,
        market: Market,
        pools: Vec<Pool>,
        count: u32,
        observed: &HashSet<&str>,
        report: &mut PassReport,
    ) -> Option<Vec<Instance>> {
        let controller_id = self.config.controller.controller_id.clone();
        self.launch_seq = self.launch_seq.wrapping_add(1);
        let token = plan::fresh_client_token(
            &controller_id,
            &spec.name,
            self.clock.now(),
            self.launch_seq,
            rand::random(),
        );
        let mut req = plan::launch_request(spec, build, &controller_id, None, None, count, token);
        req.tags.insert(tags::MARKET.into(), market.as_aws().into());
        req.market = market;
        req.pools = pools;
        req.spot_allocation_strategy = spec
            .launch
            .instances_distribution
            .as_ref()
            .map(|d| d.spot_allocation_strategy.as_aws().to_string());
        match self.send_launch(&req).await {
            Ok(answer) => {
                let now = self.clock.now();
                for e in &answer.errors {
                    if crate::cloud::errors::is_capacity_code(&e.code)
                        || is_spot_capacity_code(&e.code)
                    {
                        warn!(fleet = %spec.name, market = %e.market, pool = %e.pool, code = %e.code, message = %e.message, "no capacity in this pool; kept out of launches for {} minutes", UNAVAILABLE_TTL.num_minutes());
                        self.unavailable.mark(
                            &e.pool,
                            e.market,
                            format!("{}: {}", e.code, e.message),
                            now,
                            UNAVAILABLE_TTL,
                        );
                    } else {
                        warn!(fleet = %spec.name, market = %e.market, pool = %e.pool, code = %e.code, message = %e.message, "CreateFleet could not launch in this pool");
                        report.errors.push(format!(
                            "{}: CreateFleet {} {}: {} {}",
                            spec.name, e.market, e.pool, e.code, e.message
                        ));
                    }
                }
                if let Some(state) = self.fleets.get_mut(&spec.name) {
                    state.launch_rejected = None;
                }
                let got = self.realized(&req, answer.instances, observed, report);
                self.take_cap_room(got.len() as u32);
                info!(fleet = %spec.name, market = %market, instances = got.len(), units = crate::cloud::units(&got), asked_units = count, "action: CreateFleet");
                Some(got)
            }
            Err(e) => {
                self.launch_failed(spec, build, &e, report);
                None
            }
        }
    }
}

/// CreateFleet error codes that mean a Spot pool cannot be used now (beyond the
/// insufficient-capacity codes every launch shares): the Spot price is above what was
/// offered, or the account's Spot quota is used up. See "CreateFleet errors" in the EC2
/// Fleet documentation.
fn is_spot_capacity_code(code: &str) -> bool {
    matches!(
        code,
        "UnfulfillableCapacity"
            | "SpotMaxPriceTooLow"
            | "MaxSpotInstanceCountExceeded"
            | "InsufficientFreeAddressesInSubnet"
    )
}
