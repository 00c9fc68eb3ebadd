//! Fleets heal, on the simulated cloud with a virtual clock: an instance that fails its
//! health checks past the grace is replaced (the replacement launches first, then the bad
//! one is deregistered, drained and terminated), repair halts above the unhealthy share,
//! instances past `max_instance_lifetime` are replaced the same way, and a restart in
//! mid-repair neither launches twice nor loses the bad instance.

use coxswain::clock::{Clock, VirtualClock};
use coxswain::cloud::sim::SimCloud;
use coxswain::controller::{Action, Controller, PassReport};
use coxswain::manifest::{self, Config};
use std::sync::Arc;
use std::time::Duration;

/// Three instances held by a schedule that is always open (its window starts every midnight
/// and lasts a day), so nothing but repair changes the fleet. `{extra}` goes under `scaling`.
fn manifest_text(target_group: bool, extra: &str) -> String {
    let tg = if target_group {
        "target_group_arn: tg-web\n"
    } else {
        ""
    };
    format!(
        "kind: Controller
controller_id: t
---
name: web
environment: production
region: us-east-1
launch:
  launch_template: {{ name: web, version: \"3\" }}
  subnets: [subnet-a, subnet-b]
{tg}capacity: {{ min: 3, max: 6 }}
scaling:
  warmup: 2m
  scale_in_stabilization: 10m
{extra}  policies:
    - scheduled: {{ cron: \"0 0 * * *\", duration: 1d, min: 3 }}
simulation:
  capacity_per_instance: 1000
  boot: 2m
  traffic:
    synthetic: {{ base: 1000, peak: 1000, noise: 0 }}
"
    )
}

fn setup(text: &str) -> (Config, Arc<VirtualClock>, Arc<SimCloud>, Controller) {
    let config = manifest::load_str("repair.yaml", text).expect("valid manifest");
    let clock = Arc::new(VirtualClock::new(coxswain::demo::start()));
    let sim = Arc::new(SimCloud::for_config(clock.clone(), &config).expect("sim"));
    let controller = Controller::new(sim.clone(), clock.clone(), config.clone(), false)
        .expect("in-memory store");
    (config, clock, sim, controller)
}

/// Ids of the fleet's live instances (booting, running or retiring), sorted.
fn live(sim: &SimCloud) -> Vec<String> {
    let mut v: Vec<String> = sim
        .all_live()
        .into_iter()
        .filter(|i| i.fleet == "web")
        .map(|i| i.id)
        .collect();
    v.sort();
    v
}

/// Every action of a run, in order, with the minute (pass number) it came in.
#[derive(Default)]
struct Log {
    actions: Vec<(usize, Action)>,
    reports: Vec<PassReport>,
}

impl Log {
    fn launches(&self) -> usize {
        self.actions
            .iter()
            .filter(|(_, a)| matches!(a, Action::Launch { .. }))
            .map(|(_, a)| match a {
                Action::Launch { ids, .. } => ids.len(),
                _ => 0,
            })
            .sum()
    }

    /// Position in the log of the first action of `kind` naming `id` (any id when None).
    fn first(&self, kind: &str, id: Option<&str>) -> Option<usize> {
        self.actions.iter().position(|(_, a)| {
            let (k, ids) = match a {
                Action::Launch { ids, .. } => ("launch", ids),
                Action::MarkRetiring { ids, .. } => ("mark_retiring", ids),
                Action::Deregister { ids, .. } => ("deregister", ids),
                Action::Terminate { ids, .. } => ("terminate", ids),
                Action::Register { ids, .. } => ("register", ids),
                Action::SetDesired { .. } | Action::Notice { .. } => return false,
            };
            k == kind && id.is_none_or(|id| ids.iter().any(|i| i == id))
        })
    }

    /// Launches, retirements and terminations (registrations left out).
    fn changes(&self) -> Vec<&Action> {
        self.actions
            .iter()
            .map(|(_, a)| a)
            .filter(|a| !matches!(a, Action::Register { .. }))
            .collect()
    }

    fn minute(&self, at: usize) -> usize {
        self.actions[at].0
    }
}

/// `n` passes a minute apart, logging; `check` runs after each with the pass number.
async fn run(
    controller: &mut Controller,
    clock: &VirtualClock,
    log: &mut Log,
    n: usize,
    mut check: impl FnMut(usize, &PassReport),
) {
    for _ in 0..n {
        let minute = log.reports.len();
        let r = controller.reconcile_once().await;
        assert!(r.errors.is_empty(), "minute {minute}: {:?}", r.errors);
        check(minute, &r);
        log.actions
            .extend(r.actions.iter().cloned().map(|a| (minute, a)));
        log.reports.push(r);
        clock.advance(Duration::from_secs(60));
    }
}

#[tokio::test]
async fn an_instance_unhealthy_in_its_target_group_is_replaced_launch_first_then_drained() {
    let (_, clock, sim, mut controller) = setup(&manifest_text(true, ""));
    let mut log = Log::default();
    run(&mut controller, &clock, &mut log, 1, |_, _| {}).await;
    let before = live(&sim);
    assert_eq!(before.len(), 3);
    let bad = before[0].clone();
    sim.set_unhealthy(&bad, true);
    let mut most = 0;
    run(&mut controller, &clock, &mut log, 16, |_, _| {
        most = most.max(live(&sim).len());
    })
    .await;

    let launch = log.first("launch", None).expect("a replacement launched");
    let mark = log
        .first("mark_retiring", Some(&bad))
        .expect("marked retiring");
    let dereg = log.first("deregister", Some(&bad)).expect("deregistered");
    let term = log.first("terminate", Some(&bad)).expect("terminated");
    assert!(
        launch < mark && mark <= dereg && dereg < term,
        "launch {launch}, mark {mark}, deregister {dereg}, terminate {term}: {:?}",
        log.actions
    );
    // Seen unhealthy from minute 1; condemned after the 5-minute grace, and its
    // replacement launched in the pass after that. The replacement was in service
    // (healthy) before the bad one left the target group.
    let (first_seen, grace) = (1, 5);
    assert!(
        log.minute(launch) > first_seen + grace,
        "launched at minute {}",
        log.minute(launch)
    );
    assert!(log.minute(dereg) > log.minute(launch));
    assert!(log.minute(term) > log.minute(dereg), "drained first");
    assert_eq!(log.launches(), 1, "one replacement, once");
    assert_eq!(most, 4, "never more than one extra instance");
    // Back to the desired size, without the bad one, every one registered.
    let after = live(&sim);
    assert_eq!(after.len(), 3, "{after:?}");
    assert!(!after.contains(&bad));
    assert_eq!(sim.registered("tg-web"), after);
    let replacement = sim
        .all_live()
        .into_iter()
        .find(|i| !before.contains(&i.id))
        .expect("the replacement");
    assert_eq!(replacement.build, "web:3", "the fleet's current build");
    // The repair was reported while it ran, and is over.
    assert!(log
        .reports
        .iter()
        .any(|r| r.repairs.iter().any(|x| x.replacing == vec![bad.clone()])));
    let last = log.reports.last().and_then(|r| r.repairs.first());
    assert!(last.is_none_or(|x| x.replacing.is_empty() && x.unhealthy == 0));
}

#[tokio::test]
async fn an_instance_failing_status_checks_without_a_load_balancer_is_replaced_launch_first() {
    let (_, clock, sim, mut controller) = setup(&manifest_text(false, ""));
    let mut log = Log::default();
    run(&mut controller, &clock, &mut log, 1, |_, _| {}).await;
    let bad = live(&sim)[1].clone();
    sim.set_impaired(&bad, true);
    run(&mut controller, &clock, &mut log, 14, |_, _| {}).await;
    let launch = log.first("launch", None).expect("a replacement launched");
    let term = log.first("terminate", Some(&bad)).expect("terminated");
    // The replacement boots (2 minutes) and warms up (2 minutes) before the bad one goes.
    assert!(
        log.minute(term) >= log.minute(launch) + 2,
        "launched at {}, terminated at {}",
        log.minute(launch),
        log.minute(term)
    );
    assert_eq!(log.launches(), 1);
    let after = live(&sim);
    assert_eq!(after.len(), 3);
    assert!(!after.contains(&bad));
}

#[tokio::test]
async fn repair_halts_above_the_unhealthy_share_and_resumes_below_it() {
    let (config, clock, sim, mut controller) = setup(&manifest_text(true, ""));
    let mut log = Log::default();
    run(&mut controller, &clock, &mut log, 1, |_, _| {}).await;
    let before = live(&sim);
    // Two of three at once: above 34% (one instance). A bad build would look like this.
    sim.set_unhealthy(&before[0], true);
    sim.set_unhealthy(&before[1], true);
    // The target group's UnHealthyHostCount tells repair to read the targets: it shows
    // the failures once their minute is published (CloudWatch's lag, two passes here).
    // From the first check that sees them, repair is halted at every pass.
    let mut first_halt = None;
    run(&mut controller, &clock, &mut log, 15, |minute, r| {
        let x = r.repairs.first().expect("checked every pass");
        if x.halted {
            first_halt.get_or_insert(minute);
            assert_eq!((x.unhealthy, x.instances, x.limit), (2, 3, 1));
        } else {
            assert!(first_halt.is_none(), "minute {minute}: halt lifted: {x:?}");
            assert_eq!(x.unhealthy, 0, "minute {minute}: {x:?}");
        }
    })
    .await;
    let first_halt = first_halt.expect("halted");
    assert!(
        first_halt <= 3,
        "seen within the metric's lag, at minute {first_halt}"
    );
    assert!(
        log.changes().is_empty(),
        "nothing replaced or retired while halted: {:?}",
        log.actions
    );
    assert_eq!(live(&sim), before);
    // The halt shows on /metrics.
    let telemetry = coxswain::telemetry::Telemetry::new(Duration::from_secs(60));
    let last = log.reports.last().expect("passes ran");
    telemetry.observe(
        last,
        &coxswain::telemetry::FleetInfo::of(&config),
        clock.now(),
    );
    let text = telemetry.encode(false);
    assert!(
        text.contains("coxswain_fleet_repair_halted{fleet=\"web\",environment=\"production\"} 1"),
        "{text}"
    );
    assert!(text.contains(
        "coxswain_fleet_unhealthy_instances{fleet=\"web\",environment=\"production\"} 2"
    ));

    // One recovers: one of three is within the limit, and the other (unhealthy for far
    // longer than the grace) is replaced at once, launch first.
    sim.set_unhealthy(&before[1], false);
    let mark_before = log.actions.len();
    run(&mut controller, &clock, &mut log, 8, |_, _| {}).await;
    assert!(log
        .reports
        .last()
        .is_some_and(|r| r.repairs.first().is_none_or(|x| !x.halted)));
    let launch = log.first("launch", None).expect("replaced after the halt");
    let mark = log
        .first("mark_retiring", Some(&before[0]))
        .expect("retired after the halt");
    assert!(mark_before <= launch && launch < mark);
    assert!(
        !live(&sim).contains(&before[0]) || log.first("deregister", Some(&before[0])).is_some()
    );
}

#[tokio::test]
async fn instances_past_their_lifetime_are_replaced_a_few_at_a_time_launch_first() {
    let text = manifest_text(true, "  repair: { max_instance_lifetime: 1d }\n");
    let (_, clock, sim, mut controller) = setup(&text);
    let mut log = Log::default();
    run(&mut controller, &clock, &mut log, 1, |_, _| {}).await;
    let originals = live(&sim);
    assert!(log.changes().is_empty(), "young instances are left alone");
    clock.advance(Duration::from_secs(86_400));
    let mut most = 0;
    run(&mut controller, &clock, &mut log, 30, |_, _| {
        most = most.max(live(&sim).len());
        // Never below the desired capacity in the target group.
        assert!(sim.registered("tg-web").len() >= 3);
    })
    .await;
    let after = live(&sim);
    assert_eq!(after.len(), 3, "{after:?}");
    assert!(
        originals.iter().all(|o| !after.contains(o)),
        "all replaced: {originals:?} vs {after:?}"
    );
    assert_eq!(log.launches(), 3, "one replacement each");
    assert_eq!(most, 4, "one at a time (a tenth of 3, rounded up)");
    for o in &originals {
        let mark = log.first("mark_retiring", Some(o)).expect("retired");
        let launched_before = log.actions[..mark]
            .iter()
            .filter(|(_, a)| matches!(a, Action::Launch { .. }))
            .count();
        let retired_before = log.actions[..mark]
            .iter()
            .filter(|(_, a)| matches!(a, Action::MarkRetiring { .. }))
            .count();
        assert!(
            launched_before > retired_before,
            "{o}: its replacement launched first"
        );
    }
}

#[tokio::test]
async fn a_restart_in_mid_repair_launches_nothing_twice_and_still_retires_the_bad_instance() {
    let text = manifest_text(true, "");
    let (config, clock, sim, mut controller) = setup(&text);
    let mut log = Log::default();
    run(&mut controller, &clock, &mut log, 1, |_, _| {}).await;
    let bad = live(&sim)[2].clone();
    sim.set_unhealthy(&bad, true);
    // Until the replacement is launched, then one more pass (it boots).
    for _ in 0..12 {
        run(&mut controller, &clock, &mut log, 1, |_, _| {}).await;
        if log.launches() > 0 {
            break;
        }
    }
    assert_eq!(log.launches(), 1);
    run(&mut controller, &clock, &mut log, 1, |_, _| {}).await;
    assert_eq!(live(&sim).len(), 4);
    // The daemon restarts: all it remembered is gone.
    drop(controller);
    let mut controller =
        Controller::new(sim.clone(), clock.clone(), config, false).expect("in-memory store");
    run(&mut controller, &clock, &mut log, 20, |_, _| {
        assert!(live(&sim).len() <= 4);
    })
    .await;
    assert_eq!(
        log.launches(),
        1,
        "the replacement was recognised: {:?}",
        log.actions
    );
    let after = live(&sim);
    assert_eq!(after.len(), 3, "{after:?}");
    assert!(!after.contains(&bad), "the bad instance was still retired");
    assert!(log.first("terminate", Some(&bad)).is_some());
}

#[test]
fn the_repair_section_defaults_to_on_and_rejects_a_lifetime_under_a_day() {
    let config = manifest::load_str("t.yaml", &manifest_text(true, "")).expect("valid");
    let r = &config.fleets[0].scaling.repair;
    assert!(r.enabled);
    assert_eq!(r.unhealthy_grace.as_secs(), 300);
    assert!((r.max_unhealthy_share.0 - 0.34).abs() < 1e-9);
    assert_eq!(r.max_instance_lifetime, None);
    let written = manifest_text(
        true,
        "  repair: { unhealthy_grace: 2m, max_unhealthy_share: \"50%\", max_instance_lifetime: 7d }\n",
    );
    let config = manifest::load_str("t.yaml", &written).expect("valid");
    let r = &config.fleets[0].scaling.repair;
    assert_eq!(r.unhealthy_grace.as_secs(), 120);
    assert!((r.max_unhealthy_share.0 - 0.5).abs() < 1e-9);
    assert_eq!(
        r.max_instance_lifetime.map(|d| d.as_secs()),
        Some(7 * 86_400)
    );
    let short = manifest_text(true, "  repair: { max_instance_lifetime: 12h }\n");
    let err = manifest::load_str("t.yaml", &short)
        .expect_err("under a day")
        .to_string();
    assert!(
        err.contains("t.yaml:") && err.contains("max_instance_lifetime") && err.contains("1d"),
        "{err}"
    );
    let unknown = manifest_text(true, "  repair: { grace: 5m }\n");
    assert!(manifest::load_str("t.yaml", &unknown).is_err());
}

/// What repair costs: a healthy fleet's target health is not read at all, only while its
/// target group's `UnHealthyHostCount` says something is wrong; a target group attached
/// to no load balancer (no metric) is read at every check.
#[tokio::test]
async fn a_healthy_fleet_costs_no_target_health_reads_until_a_host_turns_unhealthy() {
    use coxswain::cloud::Cloud;
    use std::sync::atomic::Ordering::Relaxed;
    let reads = |sim: &SimCloud| sim.calls().describe_target_health.load(Relaxed);
    let (_, clock, sim, mut controller) = setup(&manifest_text(true, ""));
    let mut log = Log::default();
    run(&mut controller, &clock, &mut log, 20, |minute, r| {
        let x = r.repairs.first().expect("checked");
        assert_eq!((x.unhealthy, x.instances), (0, 3), "minute {minute}");
    })
    .await;
    let settled = reads(&sim);
    assert_eq!(settled, 0, "20 healthy minutes, no read");
    let lb_reads = sim.calls().describe_target_groups.load(Relaxed);
    assert_eq!(
        lb_reads, 1,
        "the load balancers are read once (then hourly)"
    );

    // A host fails: the metric shows it and repair reads, judges and replaces it.
    let bad = live(&sim)[0].clone();
    sim.set_unhealthy(&bad, true);
    run(&mut controller, &clock, &mut log, 14, |_, _| {}).await;
    assert!(reads(&sim) > settled, "the failure made repair look");
    assert!(
        log.first("terminate", Some(&bad)).is_some(),
        "{:?}",
        log.actions
    );
    assert!(!live(&sim).contains(&bad));

    // Without a load balancer there is no metric: every check reads.
    let (_, clock, sim, mut controller) = setup(&manifest_text(true, ""));
    sim.detach_load_balancers("tg-web");
    let mut log = Log::default();
    run(&mut controller, &clock, &mut log, 10, |_, _| {}).await;
    assert_eq!(reads(&sim), 10, "one read per check (a pass a minute)");
}
