//! The controller on the simulated cloud with a virtual clock: whole days in milliseconds,
//! deterministic, checking behaviour and invariants at every step.

use coxswain::clock::{Clock, VirtualClock};
use coxswain::cloud::sim::{Op, SimCloud};
use coxswain::cloud::{tags, Cloud};
use coxswain::controller::{Action, Controller};
use coxswain::daemon::{self, ConfigSource, Reload, Signal};
use coxswain::manifest::{self, Config};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn demo() -> Config {
    manifest::load_str("demo", coxswain::demo::MANIFEST).expect("demo manifest")
}

fn setup(config: Config) -> (Arc<VirtualClock>, Arc<SimCloud>, Controller) {
    crate::common::sim_world(config)
}

const SMALL: &str = "kind: Controller
controller_id: t
gc: { grace: 10m }
---
name: web
environment: production
region: us-east-1
launch:
  launch_template: { name: web, version: \"3\" }
  instance_types: [m6i.large, m5.large]
  subnets: [subnet-a, subnet-b]
target_group_arn: tg-web
capacity: { min: 2, max: 12 }
scaling:
  warmup: 2m
  scale_in_stabilization: 5m
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

fn live(sim: &SimCloud, fleet: &str) -> usize {
    sim.all_live().iter().filter(|i| i.fleet == fleet).count()
}

#[tokio::test]
async fn a_day_of_synthetic_traffic_follows_demand_within_caps() {
    let config = demo();
    let cap = config
        .controller
        .max_total_instances
        .expect("demo has a cap");
    let (clock, sim, mut controller) = setup(config.clone());
    let started = Instant::now();
    let (mut demand_total, mut unserved_total) = (0.0, 0.0);
    let mut per_hour: BTreeMap<u32, usize> = BTreeMap::new();
    for minute in 0..24 * 60 {
        let report = controller.reconcile_once().await;
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        let mut total = 0;
        for f in &config.fleets {
            let n = live(&sim, &f.name);
            total += n;
            assert!(
                n as u32 <= f.capacity.max,
                "{} above max at minute {minute}",
                f.name
            );
            if minute > 0 {
                assert!(
                    n as u32 >= f.capacity.min,
                    "{} below min at minute {minute}",
                    f.name
                );
            }
            let (demand, capacity) = sim
                .demand_and_capacity(&f.name, clock.now())
                .expect("fleet");
            demand_total += demand;
            unserved_total += (demand - capacity).max(0.0);
        }
        assert!(
            total as u32 <= cap,
            "global cap exceeded at minute {minute}"
        );
        *per_hour.entry(minute / 60).or_default() = total;
        clock.advance(Duration::from_secs(60));
    }
    let elapsed = started.elapsed();
    let (launched, terminated) = sim.totals();
    let unserved = unserved_total / demand_total;
    println!("24 h replayed in {elapsed:?}: {launched} launched, {terminated} terminated, unserved {:.3}%", unserved * 100.0);
    // Follows the day: more instances in the afternoon than in the small hours.
    let afternoon = per_hour[&7];
    let night = per_hour[&20];
    assert!(
        afternoon > night * 2,
        "afternoon {afternoon} vs night {night}: {per_hour:?}"
    );
    assert!(
        launched > 20 && terminated > 20,
        "{launched} / {terminated}"
    );
    // Bursts arrive faster than instances boot, so a little is dropped, but not much.
    assert!(unserved < 0.02, "unserved {unserved}");
    // Virtual time: a day of passes is a matter of milliseconds, not a day.
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
}

#[tokio::test]
async fn the_daemon_loop_on_a_virtual_clock_stops_after_its_duration() {
    let config = demo();
    let (clock, sim, controller) = setup(config);
    let (_tx, rx) = tokio::sync::watch::channel(None);
    let opts = daemon::Options {
        poll_interval: None,
        max_passes: None,
        duration: Some(Duration::from_secs(24 * 3600)),
        replica: None,
        telemetry: None,
    };
    let passes = daemon::run(controller, clock.clone(), ConfigSource::Embedded, opts, rx).await;
    assert_eq!(passes, 24 * 60);
    assert_eq!(
        clock.now() - coxswain::demo::start(),
        chrono::Duration::hours(24)
    );
    assert!(sim.totals().0 > 0);
}

#[tokio::test]
async fn insufficient_capacity_falls_back_to_the_next_type_then_the_next_subnet() {
    let config = manifest::load_str("t", SMALL).expect("valid");
    let (clock, sim, mut controller) = setup(config);
    sim.remove_capacity("m6i.large", None);
    sim.remove_capacity("m5.large", Some("subnet-b"));
    clock.advance(Duration::from_secs(6 * 3600 + 1800)); // 14:00, the peak: 9 needed
    let mut launched = Vec::new();
    for _ in 0..3 {
        let r = controller.reconcile_once().await;
        for a in r.actions {
            if let Action::Launch {
                instance_type,
                subnet,
                ids,
                ..
            } = a
            {
                launched.push((instance_type, subnet, ids.len()));
            }
        }
        clock.advance(Duration::from_secs(60));
    }
    assert!(!launched.is_empty());
    for (ty, subnet, _) in &launched {
        assert_eq!(ty.as_deref(), Some("m5.large"));
        assert_eq!(subnet.as_deref(), Some("subnet-a"));
    }
    assert!(live(&sim, "web") >= 9);
}

#[tokio::test]
async fn instances_it_does_not_own_are_never_touched() {
    let config = manifest::load_str("t", SMALL).expect("valid");
    let (clock, sim, mut controller) = setup(config);
    let mut other = BTreeMap::new();
    other.insert(tags::FLEET.to_string(), "web".to_string());
    other.insert(tags::CONTROLLER.to_string(), "someone-else".to_string());
    let a = sim.add_foreign_instance(other);
    let b = sim.add_foreign_instance(BTreeMap::new());
    clock.advance(Duration::from_secs(6 * 3600 + 1800)); // 14:00, the peak
    for _ in 0..30 {
        controller.reconcile_once().await;
        clock.advance(Duration::from_secs(60));
    }
    clock.advance(Duration::from_secs(10 * 3600)); // night: scale in
    for _ in 0..60 {
        controller.reconcile_once().await;
        clock.advance(Duration::from_secs(60));
    }
    let ids: Vec<String> = sim.all_live().into_iter().map(|i| i.id).collect();
    assert!(ids.contains(&a) && ids.contains(&b));
    assert!(
        sim.terminate(&[a]).await.is_err(),
        "the cloud layer refuses foreign ids"
    );
}

#[tokio::test]
async fn retired_instances_are_deregistered_then_terminated_once_drained() {
    let config = manifest::load_str("t", SMALL).expect("valid");
    let (clock, sim, mut controller) = setup(config);
    clock.advance(Duration::from_secs(6 * 3600 + 1800)); // 14:00, the peak
    for _ in 0..15 {
        controller.reconcile_once().await;
        clock.advance(Duration::from_secs(60));
    }
    let peak = live(&sim, "web");
    assert!(peak >= 9);
    assert_eq!(
        sim.registered("tg-web").len(),
        peak,
        "every running instance is registered"
    );
    clock.advance(Duration::from_secs(11 * 3600));
    let mut deregistered_at: BTreeMap<String, usize> = BTreeMap::new();
    let mut terminated_at: BTreeMap<String, usize> = BTreeMap::new();
    for pass in 0..40 {
        let r = controller.reconcile_once().await;
        for a in r.actions {
            match a {
                Action::Deregister { ids, .. } => ids.into_iter().for_each(|i| {
                    deregistered_at.entry(i).or_insert(pass);
                }),
                Action::Terminate { ids, .. } => ids.into_iter().for_each(|i| {
                    terminated_at.insert(i, pass);
                }),
                _ => {}
            }
        }
        clock.advance(Duration::from_secs(60));
    }
    assert!(!terminated_at.is_empty());
    for (id, t) in &terminated_at {
        let d = deregistered_at
            .get(id)
            .unwrap_or_else(|| panic!("{id} terminated without deregistering"));
        assert!(
            d < t,
            "{id}: terminated in the pass it was deregistered (no drain)"
        );
    }
    assert_eq!(live(&sim, "web"), 2, "back to min at night");
    assert_eq!(sim.registered("tg-web").len(), 2);
}

#[tokio::test]
async fn throttled_passes_change_nothing_and_the_fleet_converges_after() {
    let config = manifest::load_str("t", SMALL).expect("valid");
    let (clock, sim, mut controller) = setup(config);
    clock.advance(Duration::from_secs(6 * 3600 + 1800)); // 14:00, the peak
    sim.fail_next(Op::List, 3, "RequestLimitExceeded");
    for _ in 0..3 {
        let r = controller.reconcile_once().await;
        assert!(r.throttled);
        assert!(r.actions.is_empty());
        clock.advance(Duration::from_secs(60));
    }
    assert_eq!(live(&sim, "web"), 2);
    sim.fail_next(Op::Metrics, 2, "Throttling");
    for _ in 0..2 {
        let r = controller.reconcile_once().await;
        // Without metrics nothing scales; with instances listed nothing is lost either.
        assert!(
            r.actions
                .iter()
                .all(|a| matches!(a, Action::Register { .. })),
            "{:?}",
            r.actions
        );
        clock.advance(Duration::from_secs(60));
    }
    for _ in 0..5 {
        controller.reconcile_once().await;
        clock.advance(Duration::from_secs(60));
    }
    assert!(live(&sim, "web") >= 9);
}

#[tokio::test]
async fn dry_run_decides_but_does_not_act() {
    let config = manifest::load_str("t", SMALL).expect("valid");
    let clock = Arc::new(VirtualClock::new(
        coxswain::demo::start() + chrono::Duration::minutes(6 * 60 + 30),
    ));
    let sim = Arc::new(SimCloud::for_config(clock.clone(), &config).expect("sim"));
    let before = sim.calls().total();
    let mut controller =
        Controller::new(sim.clone(), clock.clone(), config, true).expect("in-memory store");
    clock.advance(Duration::from_secs(120));
    let r = controller.reconcile_once().await;
    assert!(
        r.fleets[0].decision.desired > 2,
        "{}",
        r.fleets[0].decision.reason()
    );
    assert!(r.actions.is_empty());
    assert_eq!(live(&sim, "web"), 2);
    let calls = sim.calls().snapshot();
    let mutating: u64 = calls
        .iter()
        .filter(|(n, _)| {
            matches!(
                *n,
                "RunInstances"
                    | "TerminateInstances"
                    | "CreateTags"
                    | "RegisterTargets"
                    | "DeregisterTargets"
                    | "SetDesiredCapacity"
            )
        })
        .map(|(_, c)| c)
        .sum();
    assert_eq!(mutating, 0);
    assert!(sim.calls().total() > before);
}

#[tokio::test]
async fn orphans_are_terminated_after_the_grace_period_and_not_before() {
    let config = manifest::load_str("t", SMALL).expect("valid");
    let (clock, sim, mut controller) = setup(config.clone());
    // The manifest for "api" was removed: its instances are orphans.
    let mut t = BTreeMap::new();
    t.insert(tags::FLEET.to_string(), "api".to_string());
    t.insert(tags::CONTROLLER.to_string(), "t".to_string());
    let orphan = sim.add_foreign_instance(t);
    for minute in 0..12 {
        controller.reconcile_once().await;
        let alive = sim.all_live().iter().any(|i| i.id == orphan);
        assert_eq!(alive, minute < 10, "minute {minute}");
        clock.advance(Duration::from_secs(60));
    }
}

#[tokio::test]
async fn an_auto_scaling_group_fleet_gets_its_desired_capacity_set() {
    let text = "name: api\nenvironment: production\nregion: us-east-1\nauto_scaling_group: api-asg\ncapacity: { min: 2, max: 20 }\nscaling:\n  warmup: 4m\n  policies:\n    - target_tracking:\n        metric: { namespace: AWS/EC2, name: CPUUtilization, dimensions: { AutoScalingGroupName: api-asg } }\n        target: 50\nsimulation:\n  capacity_per_instance: 1000\n  traffic:\n    synthetic: { base: 500, peak: 8000, noise: 0 }\n";
    let config = manifest::load_str("t", text).expect("valid");
    let (clock, sim, mut controller) = setup(config);
    clock.advance(Duration::from_secs(6 * 3600 + 1800)); // 14:00, the peak
    let mut set = Vec::new();
    for _ in 0..20 {
        let r = controller.reconcile_once().await;
        for a in r.actions {
            if let Action::SetDesired { to, .. } = a {
                set.push(to);
            }
        }
        clock.advance(Duration::from_secs(60));
    }
    assert!(!set.is_empty());
    let groups = sim
        .describe_groups(&["api-asg".into()])
        .await
        .expect("describe");
    // 8000 rpm at 1000 per instance and 50% CPU target: 16.
    assert_eq!(groups[0].desired, 16, "{set:?}");
}

#[tokio::test]
async fn an_invalid_manifest_on_reload_keeps_the_last_good_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("web.yaml");
    std::fs::write(&path, SMALL).expect("write");
    let source = ConfigSource::Files(vec![dir.path().to_path_buf()]);
    let config = source.load().expect("valid").expect("files");
    let (_clock, _sim, mut controller) = setup(config);
    std::fs::write(&path, SMALL.replace("max: 12", "max: 1")).expect("write");
    match daemon::reload_config(&mut controller, &source, true) {
        Reload::Refused(why) => assert!(
            why.contains("capacity.min (2) is above capacity.max (1)"),
            "{why}"
        ),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(controller.config().fleets[0].capacity.max, 12);
    std::fs::write(&path, SMALL.replace("max: 12", "max: 15")).expect("write");
    assert_eq!(
        daemon::reload_config(&mut controller, &source, false),
        Reload::Applied
    );
    assert_eq!(controller.config().fleets[0].capacity.max, 15);
    // Ownership follows controller_id: changing it needs a restart.
    std::fs::write(
        &path,
        SMALL.replace("controller_id: t", "controller_id: other"),
    )
    .expect("write");
    match daemon::reload_config(&mut controller, &source, false) {
        Reload::Refused(why) => assert!(why.contains("controller_id changed"), "{why}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(controller.config().controller.controller_id, "t");
}

#[tokio::test]
async fn a_stop_signal_ends_the_daemon_after_the_pass_in_flight() {
    let config = manifest::load_str("t", SMALL).expect("valid");
    let (clock, sim, controller) = setup(config);
    clock.advance(Duration::from_secs(6 * 3600 + 1800)); // 14:00, the peak
    let (tx, rx) = tokio::sync::watch::channel(None);
    let opts = daemon::Options {
        poll_interval: Some(Duration::from_secs(60)),
        max_passes: None,
        duration: None,
        replica: None,
        telemetry: None,
    };
    let clock2: Arc<dyn Clock> = clock.clone();
    let handle = tokio::spawn(daemon::run(
        controller,
        clock2,
        ConfigSource::Embedded,
        opts,
        rx,
    ));
    while sim.totals().0 <= 2 {
        tokio::task::yield_now().await;
    }
    tx.send(Some(Signal::Stop)).expect("daemon listening");
    let passes = tokio::time::timeout(Duration::from_secs(10), handle)
        .await
        .expect("stops promptly")
        .expect("no panic");
    assert!(passes >= 1);
    // Nothing half-done: every live owned instance carries the full set of ownership tags
    // (they are set in the launch call itself).
    let owned = sim.list_instances().await.expect("list");
    assert_eq!(owned.len(), live(&sim, "web"));
}

#[tokio::test]
async fn an_instance_being_retired_is_never_registered_again() {
    let config = manifest::load_str("t", SMALL).expect("valid");
    let (clock, _sim, mut controller) = setup(config);
    clock.advance(Duration::from_secs(6 * 3600 + 1800));
    for _ in 0..15 {
        controller.reconcile_once().await;
        clock.advance(Duration::from_secs(60));
    }
    clock.advance(Duration::from_secs(11 * 3600));
    let mut retiring = std::collections::BTreeSet::new();
    for _ in 0..40 {
        let r = controller.reconcile_once().await;
        for a in &r.actions {
            match a {
                Action::MarkRetiring { ids, .. } => retiring.extend(ids.iter().cloned()),
                Action::Register { ids, .. } => {
                    for id in ids {
                        assert!(
                            !retiring.contains(id),
                            "{id} registered again while retiring"
                        );
                    }
                }
                _ => {}
            }
        }
        clock.advance(Duration::from_secs(60));
    }
    assert!(retiring.len() >= 5);
}

const PREDICTIVE: &str = "kind: Controller
controller_id: t
---
name: web
environment: production
region: us-east-1
launch:
  launch_template: { name: web, version: \"3\" }
  subnets: [subnet-a, subnet-b]
target_group_arn: tg-web
capacity: { min: 2, max: 40 }
scaling:
  scale_in_stabilization: 2m
  max_launch_per_cycle: 40
  max_retire_per_cycle: 40
  policies:
    - predictive:
        metric: { namespace: AWS/ApplicationELB, name: RequestCount, dimensions: { TargetGroup: tg-web }, stat: Sum, kind: total }
        boot: 3m
simulation:
  capacity_per_instance: 1000
  boot: 3m
  traffic:
    synthetic: { base: 2000, peak: 20000, peak_hour: 14, noise: 0.04, seed: 5 }
";

#[tokio::test]
async fn a_predictive_fleet_reads_its_history_once_and_stays_ahead_of_the_day() {
    let config = manifest::load_str("predictive.yaml", PREDICTIVE).expect("valid");
    let (clock, sim, mut controller) = setup(config);
    // The demo's clock starts Monday 07:30, on the morning ramp.
    let before = sim
        .calls()
        .get_metric_data
        .load(std::sync::atomic::Ordering::Relaxed);
    let first = controller.reconcile_once().await;
    assert!(first.errors.is_empty(), "{:?}", first.errors);
    // One read for the last minutes, one for 14 days of history.
    assert_eq!(
        sim.calls()
            .get_metric_data
            .load(std::sync::atomic::Ordering::Relaxed)
            - before,
        2
    );
    let reason = first.fleets[0].decision.reason();
    assert!(
        reason.contains("headroom z="),
        "calibrated from the history on the first pass: {reason}"
    );
    clock.advance(Duration::from_secs(60));
    let before = sim
        .calls()
        .get_metric_data
        .load(std::sync::atomic::Ordering::Relaxed);
    controller.reconcile_once().await;
    assert_eq!(
        sim.calls()
            .get_metric_data
            .load(std::sync::atomic::Ordering::Relaxed)
            - before,
        1,
        "history is kept, not read again"
    );
    let (mut demand_total, mut unserved_total, mut billed, mut limit) = (0.0, 0.0, 0u64, 0u64);
    for _ in 0..12 * 60 {
        clock.advance(Duration::from_secs(60));
        let report = controller.reconcile_once().await;
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        let (demand, capacity) = sim.demand_and_capacity("web", clock.now()).expect("fleet");
        demand_total += demand;
        unserved_total += (demand - capacity).max(0.0);
        billed += live(&sim, "web") as u64;
        limit += (demand / 1000.0).ceil().max(2.0) as u64;
    }
    let unserved = unserved_total / demand_total;
    let cost = billed as f64 / limit as f64;
    println!(
        "12 h predictive: unserved {:.4}%, cost {cost:.3}× the limit",
        unserved * 100.0
    );
    assert!(unserved < 0.001, "unserved {unserved}");
    assert!(cost < 1.5, "cost {cost}");
}

#[tokio::test]
async fn every_change_is_journaled_as_an_intent_then_its_outcome_and_open_intents_are_closed_on_restart(
) {
    let config = manifest::load_str("small.yaml", SMALL).expect("valid");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.db");
    let store = Arc::new(coxswain::store::Store::open(&path).expect("store"));
    let clock = Arc::new(VirtualClock::new(coxswain::demo::start()));
    let sim = Arc::new(SimCloud::for_config(clock.clone(), &config).expect("sim"));
    let mut controller = Controller::new(sim.clone(), clock.clone(), config.clone(), false)
        .expect("in-memory store")
        .with_store(store.clone());
    let r = controller.reconcile_once().await;
    let launched: usize = r
        .actions
        .iter()
        .filter(|a| matches!(a, Action::Launch { .. }))
        .count();
    assert!(launched > 0, "{:?}", r.actions);
    let journal = store.recent_actions(100).expect("journal");
    let runs: Vec<_> = journal
        .iter()
        .filter(|a| a.action == "RunInstances")
        .collect();
    assert_eq!(runs.len(), launched, "{journal:?}");
    for a in &runs {
        assert_eq!(a.fleet, "web");
        let outcome = a.outcome.as_deref().expect("an outcome after the call");
        assert!(outcome.starts_with("ok: i-"), "{outcome}");
    }
    assert!(
        journal.iter().any(|a| a.action == "RegisterTargets"),
        "{journal:?}"
    );
    assert!(store.unfinished_actions().expect("read").is_empty());
    // A crash between intent and outcome leaves an open intent; the next start closes it.
    store
        .action_intent(clock.now(), "web", "TerminateInstances", "i-crashed")
        .expect("intent");
    drop(controller);
    let store2 = Arc::new(coxswain::store::Store::open(&path).expect("reopen"));
    assert_eq!(store2.unfinished_actions().expect("read").len(), 1);
    let _restarted = Controller::new(sim.clone(), clock.clone(), config, false)
        .expect("in-memory store")
        .with_store(store2.clone());
    assert!(store2.unfinished_actions().expect("read").is_empty());
    let closed = store2.recent_actions(1).expect("journal");
    assert!(
        closed[0]
            .outcome
            .as_deref()
            .is_some_and(|o| o.starts_with("interrupted")),
        "{closed:?}"
    );
}

/// A fence that says no stops every kind of change before it reaches the cloud.
#[tokio::test]
async fn with_the_fence_closed_no_change_reaches_the_cloud() {
    use coxswain::cloud::{Cloud, LaunchRequest};
    use coxswain::controller::journal::{Fence, Journaled};
    struct Closed(std::sync::atomic::AtomicU32);
    #[async_trait::async_trait]
    impl Fence for Closed {
        async fn allow(&self, _fleet: &str, _detail: &str) -> bool {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            false
        }
    }
    let config = manifest::load_str("small.yaml", SMALL).expect("valid");
    let (clock, sim, mut controller) = setup(config.clone());
    controller.reconcile_once().await;
    let live = sim.all_live();
    assert!(!live.is_empty());
    let store = Arc::new(coxswain::store::Store::in_memory().expect("store"));
    let j = Journaled::new(sim.clone(), store.clone(), clock.clone());
    let closed = Arc::new(Closed(Default::default()));
    j.set_fence(Some(closed.clone()));
    let ids: Vec<String> = live.iter().map(|i| i.id.clone()).collect();
    let req = LaunchRequest {
        fleet: "web".into(),
        build: "web:3".into(),
        count: 1,
        template: None,
        image_id: Some("ami-1".into()),
        instance_type: Some("m6i.large".into()),
        subnet: Some("subnet-a".into()),
        security_groups: vec![],
        key_name: None,
        tags: Default::default(),
        client_token: "t".into(),
        market: Default::default(),
        pools: vec![],
        spot_allocation_strategy: None,
        weight: 1,
    };
    let before = sim.totals();
    assert!(j.launch(&req).await.is_err());
    let by_fleet = LaunchRequest {
        template: Some(coxswain::cloud::LaunchTemplate {
            id: None,
            name: Some("web".into()),
            version: "3".into(),
        }),
        pools: vec![coxswain::cloud::Pool {
            instance_type: Some("m6i.large".into()),
            subnet: Some("subnet-a".into()),
            weighted_capacity: None,
        }],
        market: coxswain::cloud::Market::Spot,
        ..req.clone()
    };
    assert!(j.create_fleet(&by_fleet).await.is_err());
    assert!(j.mark_retiring(&ids, clock.now()).await.is_err());
    assert!(j.terminate(&ids).await.is_err());
    assert!(j.register_targets("tg-web", &ids).await.is_err());
    assert!(j.deregister_targets("tg-web", &ids).await.is_err());
    assert!(j.set_desired_capacity("grp", 3).await.is_err());
    assert!(j
        .set_forward_weights("listener", &[("tg-web".into(), 100)])
        .await
        .is_err());
    assert_eq!(
        closed.0.load(std::sync::atomic::Ordering::SeqCst),
        8,
        "every change asked"
    );
    assert_eq!(sim.totals(), before, "nothing launched or terminated");
    assert!(sim.all_live().iter().all(|i| i.retiring_since.is_none()));
    assert!(
        store.recent_actions(10).expect("journal").is_empty(),
        "no intent written"
    );
}
