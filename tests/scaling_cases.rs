//! The failing inputs operators found (`../shared/cases/`, section "Scaling"), each run on
//! the simulated cloud with a virtual clock and checked against the right value, plus the
//! README demo's day. The case files are read where they are; a missing one fails the test.

use coxswain::clock::{Clock, VirtualClock};
use coxswain::cloud::sim::SimCloud;
use coxswain::controller::{Action, Controller, PassReport};
use coxswain::manifest::{self, Config, TrafficSpec};
use coxswain::store::Store;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

fn cases() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/cases")
}

/// A case manifest as `coxswain run` reads it, with trace paths taken relative to the
/// case's own folder (the README runs them from there).
fn case(rel: &str) -> Config {
    let path = cases().join(rel);
    assert!(
        path.exists(),
        "case file {} is missing: the shared cases must be beside the repository",
        path.display()
    );
    let mut config = manifest::load_paths(std::slice::from_ref(&path))
        .unwrap_or_else(|e| panic!("{rel} does not load: {e}"));
    let dir = path.parent().expect("case folder").to_path_buf();
    for f in &mut config.fleets {
        if let Some(sim) = f.simulation.as_mut() {
            if let TrafficSpec::Trace(t) = &mut sim.traffic {
                t.path = dir.join(&t.path);
            }
        }
    }
    config
}

struct World {
    clock: Arc<VirtualClock>,
    sim: Arc<SimCloud>,
    controller: Controller,
    poll: Duration,
}

fn world(config: Config) -> World {
    let clock = Arc::new(VirtualClock::new(coxswain::demo::start()));
    let sim = Arc::new(SimCloud::for_config(clock.clone(), &config).expect("sim"));
    let poll = config.controller.poll_interval.0;
    let store = Arc::new(Store::in_memory().expect("store"));
    let controller = Controller::new(sim.clone(), clock.clone(), config, false).with_store(store);
    World {
        clock,
        sim,
        controller,
        poll,
    }
}

impl World {
    async fn pass(&mut self) -> PassReport {
        let r = self.controller.reconcile_once().await;
        self.clock.advance(self.poll);
        r
    }

    fn live(&self, fleet: &str) -> usize {
        self.sim
            .all_live()
            .iter()
            .filter(|i| i.fleet == fleet)
            .count()
    }
}

fn desired(r: &PassReport, fleet: &str) -> u32 {
    r.fleets
        .iter()
        .find(|f| f.decision.fleet == fleet)
        .map(|f| f.decision.desired)
        .unwrap_or_else(|| panic!("no decision for {fleet}"))
}

/// The README's demo for a whole simulated day (`coxswain run --virtual-clock --duration
/// 24h`): every launch realizes what it asked for, and after each decision the fleet's
/// live capacity reaches it by the second pass after.
#[tokio::test]
async fn the_demo_day_launches_what_it_decides_and_catches_up_within_two_passes() {
    let config = manifest::load_str("demo", coxswain::demo::MANIFEST).expect("demo");
    let fleets: Vec<String> = config.fleets.iter().map(|f| f.name.clone()).collect();
    let mut w = world(config);
    let mut decided: Vec<Vec<u32>> = vec![Vec::new(); fleets.len()];
    let mut live: Vec<Vec<usize>> = vec![Vec::new(); fleets.len()];
    let mut launches = 0;
    let passes = 24 * 3600 / w.poll.as_secs() as usize;
    for pass in 0..passes {
        let r = w.pass().await;
        assert!(
            !r.errors.iter().any(|e| e.contains("launch realized")),
            "pass {pass}: {:?}",
            r.errors
        );
        for a in &r.actions {
            if let Action::Launch { ids, .. } = a {
                assert!(
                    !ids.is_empty(),
                    "pass {pass}: a launch that realized nothing"
                );
                launches += 1;
            }
        }
        for (k, f) in fleets.iter().enumerate() {
            let report = r
                .fleets
                .iter()
                .find(|x| &x.decision.fleet == f)
                .expect("fleet in report");
            assert_eq!(report.shortfall, 0, "pass {pass}: {f} short");
            decided[k].push(report.decision.desired);
            // Live (booting or serving, not retiring) after this pass acted.
            let now_live = w
                .sim
                .all_live()
                .iter()
                .filter(|i| &i.fleet == f && i.retiring_since.is_none())
                .count();
            live[k].push(now_live);
        }
    }
    assert!(
        launches > 20,
        "the demo scales out during the day: {launches}"
    );
    for (k, f) in fleets.iter().enumerate() {
        for p in 0..passes - 2 {
            // A scale-out decided at pass p is live by pass p + 2, unless a later decision
            // already asked for less.
            let wanted = decided[k][p].min(decided[k][p + 1]).min(decided[k][p + 2]);
            assert!(
                live[k][p + 2] as u32 >= wanted,
                "{f}: decided {} at pass {p}, live {} two passes later",
                decided[k][p],
                live[k][p + 2]
            );
        }
    }
}

/// warmup-lag, on the daemon's simulated cloud: demand doubles from 700 to 1400 req/min
/// with a target of 70 per instance, so 20 instances are right. The datapoint read after
/// the scale-out was measured while 10 served; multiplying it by the 15 warm now asked
/// for 30.
#[tokio::test]
async fn a_datapoint_is_divided_by_the_instances_that_served_while_it_was_measured() {
    let mut w = world(case("warmup-lag/warmup-default-run-sim.yaml"));
    let mut most = 0;
    let mut at_high = Vec::new();
    for minute in 0..58 {
        let r = w.pass().await;
        let d = desired(&r, "web");
        most = most.max(d);
        if (40..58).contains(&minute) {
            at_high.push(d);
        }
    }
    assert!(most <= 20, "scaled to {most} where 20 are needed");
    assert!(
        at_high.iter().all(|d| *d == 20),
        "settles at 20 while demand is 1400: {at_high:?}"
    );
}

/// percent-step: a `change: "50%"` step on 10 instances gives 15, whatever the passes
/// during warmup read (the datapoints they read were measured on the 10).
#[tokio::test]
async fn a_percentage_step_is_a_percentage_of_the_capacity_it_is_added_to() {
    let mut w = world(case("percent-step/step-percent-run-sim.yaml"));
    let mut path = vec![10u32];
    for _ in 0..40 {
        let r = w.pass().await;
        let d = desired(&r, "step");
        if path.last() != Some(&d) {
            path.push(d);
        }
    }
    assert_eq!(path, vec![10, 15], "capacity path {path:?}");
    assert_eq!(w.live("step"), 15);
}

/// global-cap: draining instances are billed too. Two fleets under a cap of 10; when
/// alpha's schedule ends and it scales in, beta takes the freed budget only as the
/// drained instances are terminated. At no moment are more than 10 billed.
#[tokio::test]
async fn the_global_cap_counts_every_billed_instance_booting_serving_and_draining() {
    let config = case("global-cap/cap.yaml");
    let cap = config.controller.max_total_instances.expect("cap") as usize;
    // Start on the Monday as the schedule opens at 10:00: alpha (first by name) takes 8.
    let mut w = world(config);
    let start = w.clock.now();
    let ten = start
        .date_naive()
        .and_hms_opt(10, 0, 0)
        .expect("time")
        .and_utc();
    w.clock.advance((ten - start).to_std().expect("forward"));
    let mut beta_most = 0;
    for _ in 0..40 {
        w.controller.reconcile_once().await;
        // Check at fine grain: launches and drains happen inside a pass.
        let billed = w.sim.all_live().len();
        assert!(
            billed <= cap,
            "{billed} instances billed under a cap of {cap}"
        );
        beta_most = beta_most.max(w.live("beta"));
        for _ in 0..6 {
            w.clock.advance(Duration::from_secs(10));
            let billed = w.sim.all_live().len();
            assert!(billed <= cap, "{billed} billed under a cap of {cap}");
        }
    }
    assert_eq!(beta_most, 8, "beta gets the budget alpha freed");
}

/// idle-lb: after a load test the target group serves nothing, and CloudWatch (like the
/// simulator now) publishes no RequestCount. No datapoint is no traffic for a count
/// metric: the fleet returns to its minimum instead of holding its load-test size.
#[tokio::test]
async fn an_idle_load_balancer_lets_the_fleet_return_to_its_minimum() {
    let mut w = world(case("idle-lb/idle.yaml"));
    let mut most = 0;
    let mut last = 0;
    for _ in 0..75 {
        let r = w.pass().await;
        let d = desired(&r, "staging");
        most = most.max(d);
        last = d;
        assert!(
            r.fleets.iter().all(|f| f.decision.warnings.is_empty()),
            "no data is not a missing metric here: {:?}",
            r.fleets[0].decision.warnings
        );
    }
    assert_eq!(most, 8, "the load test needs 8 at 1000/instance");
    assert_eq!(last, 1, "back to capacity.min once idle");
    assert_eq!(w.live("staging"), 1);
}

/// long-period: a 10-minute metric with the default 5-minute staleness is on time for as
/// long as its period says. The policy is never blind and no missing-metrics alert
/// flaps; the fleet follows the morning climb.
#[tokio::test]
async fn a_long_period_metric_is_judged_against_its_own_period() {
    let mut w = world(case("long-period/long-period.yaml"));
    let mut blind = 0;
    let mut first = None;
    let mut last = 0;
    for minute in 0..6 * 60 {
        let r = w.pass().await;
        let f = &r.fleets[0];
        // The first datapoint needs one whole period plus the lag.
        if minute > 25 && !f.decision.warnings.is_empty() {
            blind += 1;
        }
        if minute == 25 {
            first = Some(f.decision.desired);
        }
        last = f.decision.desired;
    }
    assert_eq!(blind, 0, "passes without a usable datapoint");
    let first = first.expect("minute 25");
    assert!(last > first, "follows demand up: {first} → {last}");
}
