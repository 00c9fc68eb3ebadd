//! A fleet with an instances distribution on the simulated cloud (virtual clock): the
//! On-Demand base and share through a day and through interruption storms, Spot pools
//! without capacity remembered and avoided, a Spot shortfall filled On-Demand, and scale-in
//! taking Spot first.

use coxswain::clock::VirtualClock;
use coxswain::cloud::market::{split, Split};
use coxswain::cloud::sim::SimCloud;
use coxswain::cloud::{Instance, Market, Pool};
use coxswain::controller::{Action, Controller};
use coxswain::manifest;
use std::sync::Arc;
use std::time::Duration;

/// Base 2 On-Demand, 25% of the rest On-Demand, the rest Spot; two types × two subnets.
const MIXED: &str = "kind: Controller
controller_id: t
---
name: web
environment: production
region: us-east-1
launch:
  launch_template: { name: web, version: \"3\" }
  instance_types: [m6i.large, m5.large]
  subnets: [subnet-a, subnet-b]
  instances_distribution:
    on_demand_base_capacity: 2
    on_demand_percentage_above_base_capacity: 25
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

fn by_market(v: &[Instance]) -> Split {
    let spot = v.iter().filter(|i| i.market == Market::Spot).count() as u32;
    Split {
        on_demand: v.len() as u32 - spot,
        spot,
    }
}

/// Through a day of traffic and two interruption storms (every Spot instance taken at
/// once), after every pass: On-Demand never below its share of what is live (base 2, then
/// 25%), the maximum held, and within 3 minutes of a storm the fleet back to its size.
#[tokio::test]
async fn a_mixed_fleet_keeps_its_on_demand_share_through_a_day_and_interruption_storms() {
    let (clock, sim, mut controller) = setup(MIXED);
    let mut storms = 0;
    let mut most_spot = 0;
    for minute in 0..24 * 60 {
        let report = controller.reconcile_once().await;
        assert!(
            report.errors.is_empty(),
            "minute {minute}: {:?}",
            report.errors
        );
        let now = live(&sim);
        let have = by_market(&now);
        let share = split(have.total(), 2, 25);
        assert!(
            have.on_demand >= share.on_demand,
            "minute {minute}: {have:?} has less On-Demand than {share:?}"
        );
        assert!(have.total() <= 14, "minute {minute}: above max");
        most_spot = most_spot.max(have.spot);
        // Storms at 10:00 and 15:00 (the day starts at 07:00 in the demo clock).
        if minute == 180 || minute == 480 {
            let before = have.total();
            let taken = sim.interrupt_spot("web", usize::MAX);
            assert!(!taken.is_empty(), "minute {minute}: no Spot to interrupt");
            assert_eq!(by_market(&live(&sim)).spot, 0);
            assert_eq!(
                by_market(&live(&sim)).on_demand,
                have.on_demand,
                "a storm takes Spot only"
            );
            storms += 1;
            // Relaunched on the next passes (it reads the loss at once: level-triggered).
            for _ in 0..3 {
                clock.advance(Duration::from_secs(60));
                let r = controller.reconcile_once().await;
                assert!(r.errors.is_empty(), "{:?}", r.errors);
            }
            let after = by_market(&live(&sim));
            assert!(
                after.total() + 1 >= before,
                "minute {minute}: {before} before the storm, {after:?} three minutes after"
            );
            assert!(after.spot > 0, "replacements go back to Spot: {after:?}");
        }
        clock.advance(Duration::from_secs(60));
    }
    assert_eq!(storms, 2);
    assert!(
        most_spot >= 5,
        "the peak should be mostly Spot: {most_spot}"
    );
}

/// A Spot pool without capacity: CreateFleet places the Spot launch in the other pools in
/// the same call, the pool is left out of the next Spot requests for 3 minutes, then
/// offered again. With every Spot pool out, the whole launch goes On-Demand at once.
#[tokio::test]
async fn spot_pools_without_capacity_are_avoided_for_a_while_and_the_rest_goes_on_demand() {
    let (clock, sim, mut controller) = setup(MIXED);
    let out = Pool {
        instance_type: Some("m6i.large".into()),
        subnet: Some("subnet-a".into()),
        weighted_capacity: None,
    };
    sim.remove_capacity_in(Market::Spot, "m6i.large", Some("subnet-a"));
    // 14:00, the peak: 9 needed.
    clock.advance(Duration::from_secs(7 * 3600));
    let r = controller.reconcile_once().await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let first: Vec<_> = sim
        .fleet_requests()
        .into_iter()
        .filter(|q| q.market == Market::Spot)
        .collect();
    assert_eq!(first.len(), 1, "one Spot CreateFleet: {first:?}");
    assert_eq!(first[0].pools.len(), 4, "every type × subnet offered");
    let now = live(&sim);
    let have = by_market(&now);
    assert_eq!(have.total(), 9, "{have:?}");
    assert_eq!(
        have,
        split(9, 2, 25),
        "Spot placed elsewhere, nothing moved to On-Demand"
    );
    assert!(
        now.iter().all(|i| !(i.market == Market::Spot
            && i.instance_type == "m6i.large"
            && i.subnet.as_deref() == Some("subnet-a"))),
        "nothing launched in the pool without capacity"
    );
    // The next Spot launch (to replace two interrupted instances) leaves the pool out.
    // They are taken before the controller ever listed them: it asks about them by id
    // and replaces them at once, rather than counting them for minutes.
    sim.interrupt_spot("web", 2);
    clock.advance(Duration::from_secs(60));
    controller.reconcile_once().await;
    let spot_reqs: Vec<_> = sim
        .fleet_requests()
        .into_iter()
        .filter(|q| q.market == Market::Spot)
        .collect();
    assert_eq!(spot_reqs.len(), 2, "{spot_reqs:?}");
    assert!(
        !spot_reqs[1].pools.contains(&out),
        "{:?}",
        spot_reqs[1].pools
    );
    assert_eq!(spot_reqs[1].pools.len(), 3);
    // After the TTL it is offered again.
    clock.advance(Duration::from_secs(2 * 60));
    controller.reconcile_once().await;
    sim.interrupt_spot("web", 1);
    clock.advance(Duration::from_secs(60));
    controller.reconcile_once().await;
    let last = sim
        .fleet_requests()
        .into_iter()
        .rfind(|q| q.market == Market::Spot)
        .expect("a Spot request");
    assert!(last.pools.contains(&out), "{:?}", last.pools);

    // Every Spot pool out: Spot asked once, then the shortfall is On-Demand in the same
    // pass, and the next passes do not ask for Spot again while the outage is remembered.
    for t in ["m6i.large", "m5.large"] {
        sim.remove_capacity_in(Market::Spot, t, None);
    }
    let before = by_market(&live(&sim));
    let taken = sim.interrupt_spot("web", usize::MAX).len() as u32;
    assert!(taken > 0);
    let asked_before = sim.fleet_requests().len();
    clock.advance(Duration::from_secs(60));
    let r = controller.reconcile_once().await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let after = by_market(&live(&sim));
    let desired = r.fleets[0].decision.desired;
    assert!(
        before.total().abs_diff(desired) <= 1,
        "{before:?} {desired}"
    );
    assert_eq!(
        after.total(),
        desired,
        "refilled at once, On-Demand: {after:?}"
    );
    assert_eq!(after.spot, 0);
    let spot_asks = |from: usize| {
        sim.fleet_requests()[from..]
            .iter()
            .filter(|q| q.market == Market::Spot)
            .count()
    };
    assert_eq!(spot_asks(asked_before), 1);
    let asked = sim.fleet_requests().len();
    sim.interrupt_spot("web", usize::MAX); // nothing Spot left; demand the same
    for _ in 0..2 {
        clock.advance(Duration::from_secs(60));
        controller.reconcile_once().await;
    }
    assert_eq!(spot_asks(asked), 0, "Spot pools all remembered out");
}

/// Scale-in gives up Spot first and keeps the On-Demand base; a fleet at its minimum is
/// all On-Demand (the base is 2).
#[tokio::test]
async fn scale_in_retires_spot_first_and_keeps_the_on_demand_base() {
    let (clock, sim, mut controller) =
        setup(&MIXED.replace("max_retire_per_cycle: 20", "max_retire_per_cycle: 2"));
    clock.advance(Duration::from_secs(7 * 3600));
    for _ in 0..10 {
        controller.reconcile_once().await;
        clock.advance(Duration::from_secs(60));
    }
    let peak = by_market(&live(&sim));
    assert!(peak.spot >= 5, "{peak:?}");
    // Night: demand falls to the base; the fleet shrinks.
    clock.advance(Duration::from_secs(10 * 3600));
    assert_eq!(peak, split(peak.total(), 2, 25));
    let mut sizes = vec![peak.total()];
    for _ in 0..60 {
        controller.reconcile_once().await;
        let h = by_market(&live(&sim));
        // Each step down keeps the distribution exactly: the surplus market gives up
        // instances (Spot first), never the base. Chosen without regard to market, the
        // newest (often On-Demand) would go first and the split would drift.
        assert_eq!(h, split(h.total(), 2, 25), "after {sizes:?}");
        if sizes.last() != Some(&h.total()) {
            sizes.push(h.total());
        }
        clock.advance(Duration::from_secs(60));
    }
    assert!(sizes.len() > 2, "it scaled in, in steps: {sizes:?}");
    assert_eq!(
        by_market(&live(&sim)),
        Split {
            on_demand: 2,
            spot: 0
        },
        "{sizes:?}"
    );
}

fn notice(detail_type: &str, id: &str) -> String {
    serde_json::json!({
        "version": "0", "source": "aws.ec2", "detail-type": detail_type,
        "time": "2026-12-02T14:00:00Z",
        "detail": {"instance-id": id, "instance-action": "terminate"}
    })
    .to_string()
}

/// Settle the mixed fleet at the afternoon peak, every instance registered.
async fn at_peak() -> (Arc<VirtualClock>, Arc<SimCloud>, Controller) {
    let (clock, sim, mut controller) = setup(MIXED);
    clock.advance(Duration::from_secs(7 * 3600));
    for _ in 0..6 {
        controller.reconcile_once().await;
        clock.advance(Duration::from_secs(60));
    }
    (clock, sim, controller)
}

fn spot_id(sim: &SimCloud) -> String {
    live(sim)
        .into_iter()
        .find(|i| i.market == Market::Spot)
        .map(|i| i.id)
        .expect("a Spot instance")
}

/// The two-minute warning: in the same pass the instance is tagged retiring and
/// deregistered (draining), its replacement is launched on Spot, and the message is
/// deleted. Not-a-notice messages and notices about unknown instances are deleted too.
#[tokio::test]
async fn a_spot_interruption_warning_replaces_the_instance_in_the_same_pass_and_drains_it() {
    let (_clock, sim, mut controller) = at_peak().await;
    let size = live(&sim).len();
    let id = spot_id(&sim);
    assert!(sim.registered("tg-web").contains(&id));
    sim.send_notice(&notice("EC2 Spot Instance Interruption Warning", &id));
    sim.send_notice("not json");
    sim.send_notice(&notice(
        "EC2 Spot Instance Interruption Warning",
        "i-0000000000000dead",
    ));
    let r = controller.reconcile_once().await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let noticed = r
        .actions
        .iter()
        .any(|a| matches!(a, Action::Notice { id: n, .. } if *n == id));
    assert!(noticed, "{:?}", r.actions);
    let retiring = sim
        .all_live()
        .into_iter()
        .find(|i| i.id == id)
        .is_some_and(|i| i.retiring_since.is_some());
    assert!(retiring, "tagged retiring at once");
    assert!(
        !sim.registered("tg-web").contains(&id),
        "deregistered: draining"
    );
    let launched: Vec<&Action> = r
        .actions
        .iter()
        .filter(|a| matches!(a, Action::Launch { .. }))
        .collect();
    assert_eq!(launched.len(), 1, "{:?}", r.actions);
    assert_eq!(live(&sim).len(), size, "the replacement makes the size up");
    assert_eq!(by_market(&live(&sim)), split(size as u32, 2, 25));
    assert_eq!(sim.notices_left(), 0, "every message deleted");
}

/// A rebalance recommendation: the replacement launches first; the instance keeps
/// serving until the replacement is in service, then is retired. A daemon restarted in
/// between (memory lost, the tag kept) finishes the job without a second replacement.
#[tokio::test]
async fn a_rebalance_recommendation_launches_the_replacement_first_and_survives_a_restart() {
    let (clock, sim, mut controller) = at_peak().await;
    let size = live(&sim).len();
    let id = spot_id(&sim);
    sim.send_notice(&notice("EC2 Instance Rebalance Recommendation", &id));
    let r = controller.reconcile_once().await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let launched: usize = r
        .actions
        .iter()
        .map(|a| match a {
            Action::Launch { ids, .. } => ids.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(launched, 1, "{:?}", r.actions);
    assert!(sim.registered("tg-web").contains(&id), "still serving");
    assert_eq!(sim.notices_left(), 0);
    // Restart: a new controller on the same cloud.
    let config = manifest::load_str("t", MIXED).expect("valid");
    let mut controller = Controller::new(sim.clone(), clock.clone(), config, false).expect("store");
    let (launched_before, _) = sim.totals();
    let mut retired_at = None;
    for pass in 0..8 {
        clock.advance(Duration::from_secs(60));
        let r = controller.reconcile_once().await;
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        let serving_others = sim
            .registered("tg-web")
            .into_iter()
            .filter(|x| *x != id)
            .count();
        let gone = sim
            .all_live()
            .into_iter()
            .find(|i| i.id == id)
            .is_none_or(|i| i.retiring_since.is_some());
        if gone && retired_at.is_none() {
            retired_at = Some(pass);
            assert!(
                serving_others >= size,
                "retired only once the rest serves the fleet's size: {serving_others} of {size}"
            );
        }
    }
    assert!(retired_at.is_some(), "the instance was retired");
    assert_eq!(
        sim.totals().0,
        launched_before,
        "no second replacement after the restart"
    );
    assert_eq!(live(&sim).len(), size);
}

/// Spot out everywhere: the fleet is bought On-Demand. Once Spot has had capacity again
/// for 10 minutes, the On-Demand surplus goes back to Spot a batch at a time (a tenth of
/// the fleet, at least one), each replacement launched and in service before the
/// instance it replaces is retired, until the split is back.
#[tokio::test]
async fn on_demand_bought_for_missing_spot_goes_back_to_spot_a_batch_at_a_time() {
    let flat = MIXED.replace("base: 1500, peak: 9000", "base: 9000, peak: 9000");
    let (clock, sim, mut controller) = setup(&flat);
    for t in ["m6i.large", "m5.large"] {
        sim.remove_capacity_in(Market::Spot, t, None);
    }
    for _ in 0..6 {
        controller.reconcile_once().await;
        clock.advance(Duration::from_secs(60));
    }
    assert_eq!(
        by_market(&live(&sim)),
        Split {
            on_demand: 9,
            spot: 0
        }
    );
    sim.restore_capacity();
    let mut history = Vec::new();
    for pass in 0..90 {
        let r = controller.reconcile_once().await;
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        let now = live(&sim);
        let h = by_market(&now);
        // Never below the fleet's size in instances not retiring (one being replaced
        // serves until its replacement does), never more than one batch (1) above it.
        assert!(h.total() >= 9, "pass {pass}: {h:?}");
        assert!(h.total() <= 10, "pass {pass}: {h:?}");
        let replacing = now.iter().filter(|i| i.replacing.is_some()).count();
        assert!(replacing <= 1, "pass {pass}: one batch at a time");
        if pass < 3 {
            assert_eq!(replacing, 0, "quiet for 10 minutes after the outage");
        }
        if history.last() != Some(&h) {
            history.push(h);
        }
        clock.advance(Duration::from_secs(60));
    }
    assert_eq!(history.last(), Some(&split(9, 2, 25)), "{history:?}");
    assert!(history.len() > 5, "a batch at a time: {history:?}");
}
