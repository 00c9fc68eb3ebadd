//! Instance weights on the simulated cloud (virtual clock): capacity counted in units
//! (`weighted_capacity`), launches that cover the units asked for, scale-in that never
//! goes below the desired capacity, a fallback type launching as many instances as cover
//! the same units, and a rolling deploy of a weighted fleet.

use coxswain::clock::{Clock, VirtualClock};
use coxswain::cloud::sim::SimCloud;
use coxswain::cloud::{Instance, Market};
use coxswain::controller::Controller;
use std::sync::Arc;
use std::time::Duration;

/// m6i.xlarge counts 2 units and is preferred; m6i.large counts 1. Each unit serves 1,000
/// requests a minute; the day goes from 1,500 to 9,000 (2 to 9 units, target 1,000 per unit).
const WEIGHTED: &str = "kind: Controller
controller_id: t
---
name: web
environment: production
region: us-east-1
launch:
  ami: ami-00000001
  instance_types:
    - { instance_type: m6i.xlarge, weighted_capacity: 2 }
    - { instance_type: m6i.large, weighted_capacity: 1 }
  subnets: [subnet-a, subnet-b]
target_group_arn: tg-web
capacity: { min: 2, max: 14 }
scaling:
  warmup: 2m
  scale_in_stabilization: 5m
  max_launch_per_cycle: 20
  max_retire_per_cycle: 20
  policies:
    - target_tracking:
        metric: { namespace: AWS/ApplicationELB, name: RequestCount, dimensions: { TargetGroup: tg-web }, stat: Sum, kind: total }
        target: 1000
simulation:
  capacity_per_instance: 1000
  boot: 2m
  traffic:
    synthetic: { base: 1500, peak: 9000, noise: 0 }
";

fn setup(text: &str) -> (Arc<VirtualClock>, Arc<SimCloud>, Controller) {
    crate::common::sim_world_of(text)
}

fn live(sim: &SimCloud) -> Vec<Instance> {
    sim.all_live()
        .into_iter()
        .filter(|i| i.fleet == "web" && i.retiring_since.is_none())
        .collect()
}

fn weight(i: &Instance) -> u32 {
    match i.instance_type.as_str() {
        "m6i.xlarge" => 2,
        _ => 1,
    }
}

fn units(v: &[Instance]) -> u32 {
    v.iter().map(weight).sum()
}

/// Through a day, after every pass: the live units cover the desired capacity the pass
/// decided and stand above it by less than the largest weight (2), in both directions of
/// the day; the fleet runs on fewer instances than units (the 2-unit type is used); and
/// the simulator's serving capacity is per unit, so the peak is served.
#[tokio::test]
async fn a_weighted_fleet_holds_its_units_through_a_day_never_below_desired() {
    let (clock, sim, mut controller) = setup(WEIGHTED);
    let (mut grew, mut shrank) = (false, false);
    let mut last = None;
    let mut fewer_instances = false;
    for minute in 0..24 * 60 {
        let found = live(&sim);
        let before = units(&found);
        let report = controller.reconcile_once().await;
        assert!(
            report.errors.is_empty(),
            "minute {minute}: {:?}",
            report.errors
        );
        let desired = report.fleets[0].decision.desired;
        let now = live(&sim);
        let have = units(&now);
        assert!(
            have >= desired && have < desired + 2,
            "minute {minute}: {have} units live for a desired {desired}: {now:?}"
        );
        // A scale-in the fleet cannot make (no whole instance fits) is a hold, not a
        // decision repeated every pass.
        if report.fleets[0].decision.change() < 0 {
            assert!(
                have < before,
                "minute {minute}: a scale-in that retired nothing: {}",
                report.fleets[0].decision.reason()
            );
        }
        assert_eq!(
            report.fleets[0].live, before,
            "minute {minute}: the report counts units (as the pass found them)"
        );
        assert_eq!(
            report.fleets[0].instances,
            found.len() as u32,
            "minute {minute}: and the instances behind them"
        );
        if let Some(before) = last {
            grew |= desired > before;
            shrank |= desired < before;
        }
        last = Some(desired);
        fewer_instances |= (now.len() as u32) < have && have >= 6;
        // At the peak (14:00, seven hours in), after the boot, the demand is served.
        if minute == 7 * 60 + 30 {
            let (demand, capacity) = sim
                .demand_and_capacity("web", clock.now())
                .expect("the fleet is simulated");
            assert!(
                capacity >= demand,
                "served per unit: {capacity} for {demand} requests a minute"
            );
        }
        clock.advance(Duration::from_secs(60));
    }
    assert!(grew && shrank, "the day should scale both ways");
    assert!(fewer_instances, "the 2-unit type should carry the fleet");
}

/// The preferred (2-unit) type has no capacity anywhere: the launch falls back to the
/// 1-unit type with twice the instances for the same units, in the same pass.
#[tokio::test]
async fn a_fallback_type_launches_as_many_instances_as_cover_the_units() {
    let (clock, sim, mut controller) = setup(WEIGHTED);
    for subnet in ["subnet-a", "subnet-b"] {
        sim.remove_capacity_in(Market::OnDemand, "m6i.xlarge", Some(subnet));
    }
    // 14:00, the peak: 9 units.
    clock.advance(Duration::from_secs(7 * 3600));
    for _ in 0..4 {
        let r = controller.reconcile_once().await;
        assert!(
            r.errors.iter().all(|e| !e.contains("capacity everywhere")),
            "{:?}",
            r.errors
        );
        clock.advance(Duration::from_secs(60));
    }
    let now = live(&sim);
    let desired = 9;
    assert!(units(&now) >= desired, "{now:?}");
    let large = now
        .iter()
        .filter(|i| i.instance_type == "m6i.large")
        .count() as u32;
    // Whatever the start left (1 xlarge), the rest is m6i.large, one per unit.
    assert!(large >= desired - 2, "{now:?}");
    assert!(units(&now) < desired + 2, "{now:?}");
}

/// With weights and an instances distribution, the On-Demand base and the percentage are
/// units too: base 2 units, 50% of the rest On-Demand.
#[tokio::test]
async fn the_on_demand_base_and_share_are_units() {
    let text = WEIGHTED
        .replace(
            "  ami: ami-00000001\n",
            "  launch_template: { name: web, version: \"1\" }\n",
        )
        .replace(
            "  subnets: [subnet-a, subnet-b]\n",
            "  subnets: [subnet-a, subnet-b]\n  instances_distribution: { on_demand_base_capacity: 2, on_demand_percentage_above_base_capacity: 50 }\n",
        );
    let (clock, sim, mut controller) = setup(&text);
    clock.advance(Duration::from_secs(7 * 3600));
    for minute in 0..30 {
        let spot_before: u32 = live(&sim)
            .iter()
            .filter(|i| i.market == Market::Spot)
            .map(weight)
            .sum();
        let r = controller.reconcile_once().await;
        assert!(r.errors.is_empty(), "minute {minute}: {:?}", r.errors);
        let now = live(&sim);
        let of = |m: Market| -> u32 { now.iter().filter(|i| i.market == m).map(weight).sum() };
        let (od, spot) = (of(Market::OnDemand), of(Market::Spot));
        // The share of what runs: 2 + half the rest, in units, each market covered
        // with less than one instance over.
        let share = coxswain::cloud::market::split(od + spot, 2, 50);
        assert!(
            od + 1 >= share.on_demand,
            "minute {minute}: {od} On-Demand units, {spot} Spot: {now:?}"
        );
        assert_eq!(
            r.fleets[0].spot, spot_before,
            "minute {minute}: the report counts Spot units (as the pass found them)"
        );
        clock.advance(Duration::from_secs(60));
    }
    let now = live(&sim);
    assert!(units(&now) >= 9, "{now:?}");
    assert!(now.iter().any(|i| i.market == Market::Spot));
}

/// A weighted fleet that starts all On-Demand (the simulator's first instances) moves its
/// surplus to Spot, an instance at a time even when a tenth of its capacity is less than
/// one instance holds, and never takes On-Demand below its share (3 units, on 2-unit
/// instances: it stops at 4).
#[tokio::test]
async fn a_weighted_fleet_moves_back_to_spot_an_instance_at_a_time() {
    let text = "kind: Controller
controller_id: t
---
name: web
environment: production
region: us-east-1
launch:
  launch_template: { name: web, version: \"1\" }
  instance_types: [{ instance_type: m6i.xlarge, weighted_capacity: 2 }]
  subnets: [subnet-a, subnet-b]
  instances_distribution: { on_demand_base_capacity: 3, on_demand_percentage_above_base_capacity: 0 }
target_group_arn: tg-web
capacity: { min: 8, max: 20 }
scaling:
  warmup: 1m
  policies:
    - target_tracking:
        metric: { namespace: AWS/ApplicationELB, name: RequestCount, dimensions: { TargetGroup: tg-web }, stat: Sum, kind: total }
        target: 1000
simulation:
  capacity_per_instance: 1000
  boot: 1m
  traffic:
    synthetic: { base: 7000, peak: 7000, noise: 0 }
";
    let (clock, sim, mut controller) = setup(text);
    let of = |m: Market, sim: &SimCloud| -> u32 {
        live(sim)
            .iter()
            .filter(|i| i.market == m && i.replacing.is_none())
            .map(weight)
            .sum()
    };
    assert_eq!(of(Market::OnDemand, &sim), 8, "starts all On-Demand");
    for minute in 0..60 {
        let r = controller.reconcile_once().await;
        assert!(r.errors.is_empty(), "minute {minute}: {:?}", r.errors);
        assert!(
            of(Market::OnDemand, &sim) >= 3,
            "minute {minute}: On-Demand below its share"
        );
        clock.advance(Duration::from_secs(60));
    }
    assert_eq!(of(Market::OnDemand, &sim), 4, "{:?}", live(&sim));
    assert!(of(Market::Spot, &sim) >= 4, "{:?}", live(&sim));
}

/// `max_total_instances` counts instances on a weighted fleet: a cap of 4 with 2-unit
/// instances holds 8 units at the peak (9 wanted), not 4, and never more than 4 instances.
#[tokio::test]
async fn the_global_cap_counts_instances_of_a_weighted_fleet() {
    let text = WEIGHTED
        .replace(
            "controller_id: t\n",
            "controller_id: t\nmax_total_instances: 4\n",
        )
        .replace(
            "    - { instance_type: m6i.large, weighted_capacity: 1 }\n",
            "",
        );
    let (clock, sim, mut controller) = setup(&text);
    clock.advance(Duration::from_secs(7 * 3600));
    let mut capped = false;
    for minute in 0..30 {
        let r = controller.reconcile_once().await;
        assert!(r.errors.is_empty(), "minute {minute}: {:?}", r.errors);
        let billed = sim.all_live().iter().filter(|i| i.fleet == "web").count();
        assert!(billed <= 4, "minute {minute}: {billed} instances");
        capped |= r.fleets[0]
            .decision
            .limits
            .contains(&coxswain::policy::Limit::GlobalCap);
        clock.advance(Duration::from_secs(60));
    }
    assert!(capped, "9 units wanted, 8 fit");
    assert_eq!(units(&live(&sim)), 8);
}

/// `RequestCountPerTarget` is per target (instance) on a weighted fleet, as ELB publishes
/// it, and target tracking scales the units in proportion, as an Auto Scaling group does:
/// 8,000 requests a minute on 2-unit instances (2,000 a minute each at 100%) with a
/// target of 1,600 per target settle at 5 instances, 10 units, each at 1,600.
#[tokio::test]
async fn per_target_metrics_are_per_instance_and_scale_units_in_proportion() {
    let text = WEIGHTED
        .replace(
            "    - { instance_type: m6i.large, weighted_capacity: 1 }\n",
            "",
        )
        .replace(
            "name: RequestCount, dimensions: { TargetGroup: tg-web }, stat: Sum, kind: total }\n        target: 1000",
            "name: RequestCountPerTarget, dimensions: { TargetGroup: tg-web }, stat: Sum }\n        target: 1600",
        )
        .replace(
            "synthetic: { base: 1500, peak: 9000, noise: 0 }",
            "synthetic: { base: 8000, peak: 8000, noise: 0 }",
        );
    assert!(text.contains("RequestCountPerTarget"), "{text}");
    let (clock, sim, mut controller) = setup(&text);
    let mut last = None;
    for minute in 0..40 {
        let r = controller.reconcile_once().await;
        assert!(r.errors.is_empty(), "minute {minute}: {:?}", r.errors);
        last = Some(r.fleets[0].decision.clone());
        clock.advance(Duration::from_secs(60));
    }
    let now = live(&sim);
    assert_eq!((now.len(), units(&now)), (5, 10), "{last:?}");
    let reason = last.map(|d| d.reason()).unwrap_or_default();
    assert!(
        reason.contains("RequestCountPerTarget 1600.0/instance"),
        "{reason}"
    );
}

/// A weighted fleet half On-Demand, half Spot: when each market is less than an instance
/// above its share but the fleet is a whole instance above its size, a Spot instance goes
/// (On-Demand stays at or above its share). Through an afternoon and evening, no
/// scale-in decision is left undone, and On-Demand never drops below its share.
#[tokio::test]
async fn a_weighted_mixed_fleet_scales_in_across_markets() {
    let text = WEIGHTED
        .replace(
            "  ami: ami-00000001\n",
            "  launch_template: { name: web, version: \"1\" }\n",
        )
        .replace(
            "    - { instance_type: m6i.large, weighted_capacity: 1 }\n",
            "",
        )
        .replace(
            "  subnets: [subnet-a, subnet-b]\n",
            "  subnets: [subnet-a, subnet-b]\n  instances_distribution: { on_demand_base_capacity: 0, on_demand_percentage_above_base_capacity: 50 }\n",
        )
        .replace("capacity: { min: 2, max: 14 }", "capacity: { min: 2, max: 40 }")
        .replace(
            "synthetic: { base: 1500, peak: 9000, noise: 0 }",
            "synthetic: { base: 1000, peak: 15000, noise: 0 }",
        );
    let (clock, sim, mut controller) = setup(&text);
    clock.advance(Duration::from_secs(7 * 3600));
    let mut scaled_in = 0;
    for minute in 0..10 * 60 {
        let before = units(&live(&sim));
        let r = controller.reconcile_once().await;
        assert!(r.errors.is_empty(), "minute {minute}: {:?}", r.errors);
        let d = &r.fleets[0].decision;
        let now = live(&sim);
        if d.change() < 0 {
            assert!(
                units(&now) < before,
                "minute {minute}: a scale-in that retired nothing: {}",
                d.reason()
            );
            scaled_in += 1;
        }
        let od: u32 = now
            .iter()
            .filter(|i| i.market == Market::OnDemand)
            .map(weight)
            .sum();
        let share = coxswain::cloud::market::split(units(&now), 0, 50).on_demand;
        assert!(
            od + 1 >= share,
            "minute {minute}: {od} On-Demand units for a share of {share}"
        );
        clock.advance(Duration::from_secs(60));
    }
    assert!(scaled_in > 3, "the evening should scale in: {scaled_in}");
}
