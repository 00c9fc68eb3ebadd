//! Deploys on the simulated cloud with a virtual clock: each strategy's steps, the
//! never-below-minimum-healthy invariant at every pass, gates, rollback, admission.

use coxswain::clock::{Clock, VirtualClock};
use coxswain::cloud::sim::SimCloud;
use coxswain::cloud::{AlarmState, InstanceState};
use coxswain::controller::requests::{Accepted, ApproveRequest, DeployRequest, Refusal};
use coxswain::controller::Controller;
use coxswain::manifest;
use coxswain::store::Outcome;
use std::sync::Arc;
use std::time::Duration;

/// A fleet with constant traffic that needs exactly `n` instances.
fn fleet(name: &str, env: &str, n: u32, deploy: &str) -> String {
    let rpm = f64::from(n) * 1000.0;
    format!(
        "name: {name}\napp: web\nenvironment: {env}\nregion: us-east-1\nlaunch:\n  ami: ami-00000001\n  instance_types: [m6i.large]\n  subnets: [subnet-a, subnet-b]\ntarget_group_arn: tg-{name}\ncapacity: {{ min: 2, max: 40 }}\nscaling:\n  warmup: 2m\n  policies:\n    - target_tracking:\n        metric: {{ namespace: AWS/ApplicationELB, name: RequestCount, dimensions: {{ TargetGroup: tg-{name} }}, stat: Sum, kind: total }}\n        target: 1000\nsimulation:\n  capacity_per_instance: 1000\n  boot: 2m\n  traffic:\n    synthetic: {{ base: {rpm}, peak: {rpm}, noise: 0 }}\ndeploy:\n{deploy}"
    )
}

const ROLLING: &str = "  strategy:\n    rolling: { batch: \"25%\", max_surge: \"25%\", max_unavailable: 0 }\n  gates:\n    interval: 15s\n    timeout: 10m\n";

struct World {
    clock: Arc<VirtualClock>,
    sim: Arc<SimCloud>,
    controller: Controller,
}

fn world(manifest_text: &str) -> World {
    let config = manifest::load_str("fleet.yaml", manifest_text).expect("valid manifest");
    let clock = Arc::new(VirtualClock::new(coxswain::demo::start()));
    let sim = Arc::new(SimCloud::for_config(clock.clone(), &config).expect("sim"));
    let controller =
        Controller::new(sim.clone(), clock.clone(), config, false).expect("in-memory store");
    World {
        clock,
        sim,
        controller,
    }
}

/// (instances on `build`, serving instances of any build) of a fleet.
fn counts(w: &World, fleet: &str, build: &str) -> (usize, usize) {
    let live: Vec<_> = w
        .sim
        .all_live()
        .into_iter()
        .filter(|i| i.fleet == fleet)
        .collect();
    let on = live
        .iter()
        .filter(|i| i.build == build && i.retiring_since.is_none())
        .count();
    let serving = live
        .iter()
        .filter(|i| i.state == InstanceState::Running && i.retiring_since.is_none())
        .count();
    (on, serving)
}

/// Passes every 15 s until the fleet is steady at `n`.
async fn settle(w: &mut World, fleet: &str, n: usize) {
    passes(w, 80).await;
    assert_eq!(
        w.sim.all_live().iter().filter(|i| i.fleet == fleet).count(),
        n,
        "fleet did not settle"
    );
}

fn deploy(w: &mut World, fleet: &str, env: &str, build: &str) -> Result<Accepted, Refusal> {
    let req = DeployRequest {
        fleet: fleet.into(),
        env: env.into(),
        build: build.into(),
        label: None,
        timeout_secs: None,
        idempotency_key: None,
    };
    let now = w.clock.now();
    w.controller.request_deploy(&req, now)
}

fn id_of(a: Accepted) -> i64 {
    match a {
        Accepted::Started { id, .. } => id,
        other => panic!("not started: {other:?}"),
    }
}

/// `n` passes, 15 s apart.
async fn passes(w: &mut World, n: usize) {
    for _ in 0..n {
        w.controller.reconcile_once().await;
        w.clock.advance(Duration::from_secs(15));
    }
}

/// A rollout's event messages.
fn events_of(w: &World, id: i64) -> Vec<String> {
    let store = w.controller.store();
    store
        .events_after(id, 0)
        .expect("events")
        .into_iter()
        .map(|e| e.message)
        .collect()
}

/// Run passes until rollout `id` ends, checking at every pass that serving capacity never
/// drops below `min_healthy`. Returns the outcome and the event messages.
async fn run_to_end(
    w: &mut World,
    fleet: &str,
    id: i64,
    min_healthy: usize,
) -> (Outcome, Vec<String>) {
    let store = w.controller.store().clone();
    for pass in 0..400 {
        w.controller.reconcile_once().await;
        let (_, serving) = counts(w, fleet, "");
        assert!(
            serving >= min_healthy,
            "pass {pass}: {serving} serving < {min_healthy}"
        );
        let d = store.deployment(id).expect("query").expect("exists");
        if d.outcome != Outcome::InProgress {
            return (d.outcome, events_of(w, id));
        }
        // Real time too, for hook processes the pass started.
        tokio::time::sleep(Duration::from_millis(2)).await;
        w.clock.advance(Duration::from_secs(15));
    }
    let events: Vec<String> = store
        .events_after(id, 0)
        .expect("events")
        .into_iter()
        .map(|e| e.message)
        .collect();
    panic!(
        "rollout {id} did not finish: {events:#?}; on new: {:?}",
        counts(w, fleet, "")
    );
}

#[tokio::test]
async fn a_rolling_deploy_moves_25_percent_at_a_time_and_never_drops_below_desired() {
    let mut w = world(&fleet("web", "production", 8, ROLLING));
    settle(&mut w, "web", 8).await;
    let id = id_of(deploy(&mut w, "web", "production", "ami-00000002").expect("accepted"));
    let (outcome, events) = run_to_end(&mut w, "web", id, 8).await;
    assert_eq!(outcome, Outcome::Succeeded, "{events:#?}");
    let steps: Vec<&String> = events.iter().filter(|e| e.starts_with("step ")).collect();
    assert_eq!(steps.len(), 4, "{events:#?}");
    for (k, e) in steps.iter().enumerate() {
        assert!(
            e.starts_with(&format!(
                "step {}/4: {} of 8 on ami-00000002",
                k + 1,
                2 * (k + 1)
            )),
            "{e}"
        );
    }
    passes(&mut w, 40).await;
    assert_eq!(counts(&w, "web", "ami-00000002"), (8, 8));
    // Scale-outs after the deploy use the new build.
    let fresh = w
        .sim
        .all_live()
        .into_iter()
        .filter(|i| i.fleet == "web")
        .all(|i| i.build == "ami-00000002");
    assert!(fresh);
}

#[tokio::test]
async fn a_canary_deploy_goes_1_then_10_50_100_percent_with_bake_times() {
    let canary = "  strategy:\n    canary: { steps: [1, \"10%\", \"50%\", \"100%\"], bake: 2m }\n  gates:\n    interval: 15s\n";
    let mut w = world(&fleet("web", "production", 20, canary));
    settle(&mut w, "web", 20).await;
    let started = w.clock.now();
    let id = id_of(deploy(&mut w, "web", "production", "ami-00000002").expect("accepted"));
    let (outcome, events) = run_to_end(&mut w, "web", id, 20).await;
    assert_eq!(outcome, Outcome::Succeeded, "{events:#?}");
    let steps: Vec<&String> = events.iter().filter(|e| e.starts_with("step ")).collect();
    let shares: Vec<&str> = steps
        .iter()
        .map(|e| e.split(": ").nth(1).unwrap_or(""))
        .collect();
    assert_eq!(
        shares,
        [
            "1 of 20 on ami-00000002; gates green (instance gates)",
            "2 of 20 on ami-00000002; gates green (instance gates)",
            "10 of 20 on ami-00000002; gates green (instance gates)",
            "20 of 20 on ami-00000002; gates green (instance gates)"
        ]
    );
    // Four bakes of 2 minutes at least.
    assert!(w.clock.now() - started >= chrono::Duration::minutes(8));
}

#[tokio::test]
async fn a_bad_build_fails_its_metric_gate_and_the_old_build_is_restored_to_full_capacity() {
    let gates = "  strategy:\n    rolling: { batch: \"25%\" }\n  gates:\n    interval: 15s\n    metrics:\n      - metric: { namespace: Web, name: 5xxRate, dimensions: { Build: \"{build}\" }, stat: Average }\n        below: 1.0\n";
    let mut w = world(&fleet("web", "production", 8, gates));
    settle(&mut w, "web", 8).await;
    w.sim
        .set_build_metric("Web", "5xxRate", "ami-00000002", 4.2);
    let id = id_of(deploy(&mut w, "web", "production", "ami-00000002").expect("accepted"));
    let (outcome, events) = run_to_end(&mut w, "web", id, 8).await;
    assert_eq!(outcome, Outcome::RolledBack, "{events:#?}");
    assert!(
        events
            .iter()
            .any(|e| e.contains("gate failed: 5xxRate = 4.200 (limit below 1)")),
        "{events:#?}"
    );
    let (on_old, serving) = counts(&w, "web", "ami-00000001");
    assert_eq!((on_old, serving), (8, 8));
    assert_eq!(counts(&w, "web", "ami-00000002").0, 0);
    let d = w
        .controller
        .store()
        .deployment(id)
        .expect("q")
        .expect("row");
    assert!(
        d.reason.as_deref().is_some_and(|r| r.contains("5xxRate")),
        "{d:?}"
    );
}

#[tokio::test]
async fn a_failing_canary_is_caught_within_one_gate_interval_of_the_bad_data() {
    let canary = "  strategy:\n    canary: { steps: [1, \"50%\", \"100%\"], bake: 10m }\n  gates:\n    interval: 15s\n    canary_analysis:\n      metric: { namespace: Web, name: Latency, dimensions: { Build: \"{build}\" }, stat: p99 }\n      min_samples: 5\n";
    let mut w = world(&fleet("web", "production", 10, canary));
    settle(&mut w, "web", 10).await;
    // Baseline and canary alike at first: the analysis passes.
    w.sim
        .set_build_metric("Web", "Latency", "ami-00000001", 120.0);
    w.sim
        .set_build_metric("Web", "Latency", "ami-00000002", 120.0);
    let id = id_of(deploy(&mut w, "web", "production", "ami-00000002").expect("accepted"));
    let store = w.controller.store().clone();
    passes(&mut w, 40).await;
    assert_eq!(
        store.deployment(id).expect("q").expect("row").outcome,
        Outcome::InProgress
    );
    // The canary turns slow.
    w.sim
        .set_build_metric("Web", "Latency", "ami-00000002", 900.0);
    let bad_at = w.clock.now();
    let mut caught = None;
    for _ in 0..40 {
        w.controller.reconcile_once().await;
        let events = store.events_after(id, 0).expect("events");
        if let Some(e) = events
            .iter()
            .find(|e| e.message.contains("canary worse than baseline"))
        {
            caught = Some((e.at, e.message.clone()));
            break;
        }
        w.clock.advance(Duration::from_secs(15));
    }
    let (at, msg) = caught.expect("the canary was caught");
    assert!(msg.contains("Mann-Whitney") && msg.contains("p="), "{msg}");
    // The simulated metric lags a minute (CloudWatch); from when the bad data is
    // readable, the next gate check (15 s) catches it.
    assert!(
        at - bad_at <= chrono::Duration::seconds(60 + 60 + 15),
        "caught {}s after",
        (at - bad_at).num_seconds()
    );
}

#[tokio::test]
async fn an_alarm_in_alarm_rolls_the_deploy_back() {
    let gates = "  gates:\n    interval: 15s\n    alarms: [web-5xx]\n";
    let mut w = world(&fleet("web", "production", 4, gates));
    settle(&mut w, "web", 4).await;
    w.sim.set_alarm("web-5xx", AlarmState::Alarm);
    let id = id_of(deploy(&mut w, "web", "production", "ami-00000002").expect("accepted"));
    let (outcome, events) = run_to_end(&mut w, "web", id, 4).await;
    assert_eq!(outcome, Outcome::RolledBack);
    assert!(
        events
            .iter()
            .any(|e| e.contains("alarm web-5xx is in ALARM")),
        "{events:#?}"
    );
}

#[tokio::test]
async fn production_refuses_builds_that_have_not_passed_staging_or_lack_approval() {
    let prod = "  promotion: { requires: [staging], approval: true }\n  gates: { interval: 15s }\n";
    let text = format!(
        "{}\n---\n{}",
        fleet("web-staging", "staging", 2, "  gates: { interval: 15s }\n"),
        fleet("web", "production", 2, prod)
    );
    let mut w = world(&text);
    let err = deploy(&mut w, "web", "production", "ami-00000002").expect_err("not validated");
    assert!(
        matches!(&err, Refusal::Refused(m) if m.contains("has not passed staging")),
        "{err:?}"
    );
    let id = id_of(deploy(&mut w, "web", "staging", "ami-00000002").expect("staging accepts"));
    let (outcome, _) = run_to_end(&mut w, "web-staging", id, 2).await;
    assert_eq!(outcome, Outcome::Succeeded);
    let err = deploy(&mut w, "web", "production", "ami-00000002").expect_err("no approval yet");
    assert!(
        matches!(&err, Refusal::Refused(m) if m.contains("needs a sign-off")),
        "{err:?}"
    );
    let now = w.clock.now();
    w.controller
        .request_approval(
            &ApproveRequest {
                fleet: "web".into(),
                build: "ami-00000002".into(),
                by: "qa-ana".into(),
            },
            now,
        )
        .expect("approved");
    let id = id_of(deploy(&mut w, "web", "production", "ami-00000002").expect("now it may go"));
    let (outcome, _) = run_to_end(&mut w, "web", id, 2).await;
    assert_eq!(outcome, Outcome::Succeeded);
    // A build that failed staging stays refused.
    w.sim.set_alarm("gone", AlarmState::Alarm);
    assert!(deploy(&mut w, "web", "production", "ami-00000003").is_err());
}

#[tokio::test]
async fn a_freeze_window_refuses_deploys() {
    // The demo clock starts Monday 07:30 UTC.
    let frozen = "  freeze: [{ cron: \"0 7 * * MON\", duration: 2h, reason: exam week }]\n";
    let mut w = world(&fleet("web", "production", 2, frozen));
    let err = deploy(&mut w, "web", "production", "ami-00000002").expect_err("frozen");
    assert!(
        matches!(&err, Refusal::Refused(m) if m.contains("frozen until 2026-01-05 09:00") && m.contains("exam week")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_second_request_queues_or_supersedes_as_the_manifest_says() {
    let mut w = world(&fleet("web", "production", 4, ROLLING));
    settle(&mut w, "web", 4).await;
    let first = id_of(deploy(&mut w, "web", "production", "ami-00000002").expect("first"));
    let second = deploy(&mut w, "web", "production", "ami-00000003").expect("second");
    assert!(
        matches!(second, Accepted::Started { queued_behind: Some(q), .. } if q == first),
        "{second:?}"
    );
    let second = id_of(second);
    let (o1, _) = run_to_end(&mut w, "web", first, 4).await;
    assert_eq!(o1, Outcome::Succeeded);
    let (o2, _) = run_to_end(&mut w, "web", second, 4).await;
    assert_eq!(o2, Outcome::Succeeded);
    assert_eq!(counts(&w, "web", "ami-00000003").0, 4);

    let supersede = format!("{ROLLING}  on_conflict: supersede\n");
    let mut w = world(&fleet("web", "production", 4, &supersede));
    settle(&mut w, "web", 4).await;
    let first = id_of(deploy(&mut w, "web", "production", "ami-00000002").expect("first"));
    passes(&mut w, 4).await;
    let second = id_of(deploy(&mut w, "web", "production", "ami-00000003").expect("second"));
    let (o1, _) = run_to_end(&mut w, "web", first, 4).await;
    assert_eq!(o1, Outcome::RolledBack);
    let (o2, _) = run_to_end(&mut w, "web", second, 4).await;
    assert_eq!(o2, Outcome::Succeeded);
    assert_eq!(counts(&w, "web", "ami-00000003").0, 4);
}

#[tokio::test]
async fn a_deploy_during_a_scale_out_ends_with_the_new_count_all_on_the_new_build() {
    // Demand doubles while the rollout runs: 6 → 12 instances.
    let text = fleet("web", "production", 6, ROLLING);
    let text = text.replace("synthetic: { base: 6000, peak: 6000, noise: 0 }", "synthetic: { base: 6000, peak: 6000, noise: 0, bursts: [{ cron: \"40 7 * * MON\", duration: 4h, factor: 2.0 }] }");
    let mut w = world(&text);
    passes(&mut w, 10).await;
    let id = id_of(deploy(&mut w, "web", "production", "ami-00000002").expect("accepted"));
    let (outcome, events) = run_to_end(&mut w, "web", id, 2).await;
    assert_eq!(outcome, Outcome::Succeeded, "{events:#?}");
    passes(&mut w, 60).await;
    assert_eq!(counts(&w, "web", "ami-00000002"), (12, 12));
}

#[tokio::test]
async fn a_blue_green_deploy_switches_then_keeps_the_old_set_for_its_window() {
    let bg = "  strategy:\n    blue_green: { keep_old: 10m }\n  gates: { interval: 15s }\n";
    let mut w = world(&fleet("web", "production", 6, bg));
    settle(&mut w, "web", 6).await;
    let id = id_of(deploy(&mut w, "web", "production", "ami-00000002").expect("accepted"));
    let store = w.controller.store().clone();
    let mut switched_at = None;
    for pass in 0..200 {
        w.controller.reconcile_once().await;
        let (_, serving) = counts(&w, "web", "");
        assert!(serving >= 6, "pass {pass}: {serving} serving");
        let registered = w.sim.registered("tg-web");
        let live = w.sim.all_live();
        let build_of = |id: &String| {
            live.iter()
                .find(|i| &i.id == id)
                .map(|i| i.build.clone())
                .unwrap_or_default()
        };
        let on_new = registered
            .iter()
            .filter(|id| build_of(id) == "ami-00000002")
            .count();
        let on_old = registered
            .iter()
            .filter(|id| build_of(id) == "ami-00000001")
            .count();
        // The target group always holds a full set of one build: green joins, and blue
        // leaves only once green is healthy in it.
        assert!(
            on_new == 6 || on_old == 6,
            "pass {pass}: {on_new} green and {on_old} blue registered"
        );
        if on_new == 6 && switched_at.is_none() {
            switched_at = Some(w.clock.now());
            assert_eq!(
                counts(&w, "web", "ami-00000001").0,
                6,
                "the blue set stays running after the switch"
            );
        }
        if store.deployment(id).expect("q").expect("row").outcome != Outcome::InProgress {
            break;
        }
        w.clock.advance(Duration::from_secs(15));
    }
    assert_eq!(
        store.deployment(id).expect("q").expect("row").outcome,
        Outcome::Succeeded
    );
    let kept = w.clock.now() - switched_at.expect("switched");
    assert!(
        kept >= chrono::Duration::minutes(10),
        "old set kept {}s",
        kept.num_seconds()
    );
    passes(&mut w, 20).await;
    assert_eq!(counts(&w, "web", "ami-00000001").0, 0);
    assert_eq!(counts(&w, "web", "ami-00000002").0, 6);
}

#[tokio::test]
async fn a_failing_pre_deploy_hook_aborts_before_any_instance_changes() {
    let hooks = "  gates: { interval: 15s }\n  hooks:\n    pre_deploy:\n      - { command: [sh, -c, \"echo migrating {build}; exit 4\"], timeout: 30s }\n";
    let mut w = world(&fleet("web", "production", 4, hooks));
    settle(&mut w, "web", 4).await;
    let launched_before = w.sim.totals().0;
    let id = id_of(deploy(&mut w, "web", "production", "ami-00000002").expect("accepted"));
    let (outcome, events) = run_to_end(&mut w, "web", id, 4).await;
    assert_eq!(outcome, Outcome::RolledBack);
    assert!(
        events.iter().any(|e| e.contains("migrating ami-00000002")),
        "{events:#?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e.contains("pre-deploy hook failed before any instance changed")),
        "{events:#?}"
    );
    assert_eq!(
        w.sim.totals().0,
        launched_before,
        "no instance was launched"
    );
    assert_eq!(counts(&w, "web", "ami-00000001").0, 4);
}

#[tokio::test]
async fn a_passing_pre_deploy_hook_runs_first_then_the_rollout() {
    let hooks = "  gates: { interval: 15s }\n  hooks:\n    pre_deploy:\n      - { command: [echo, \"migrated for {build}\"], timeout: 30s }\n";
    let mut w = world(&fleet("web", "production", 4, hooks));
    settle(&mut w, "web", 4).await;
    let id = id_of(deploy(&mut w, "web", "production", "ami-00000002").expect("accepted"));
    let (outcome, events) = run_to_end(&mut w, "web", id, 4).await;
    assert_eq!(outcome, Outcome::Succeeded);
    let hook = events
        .iter()
        .position(|e| e.contains("migrated for ami-00000002"))
        .expect("hook output");
    let first_step = events
        .iter()
        .position(|e| e.starts_with("step 1/"))
        .expect("steps");
    assert!(hook < first_step, "{events:#?}");
}

#[tokio::test]
async fn a_canary_with_a_listener_shifts_traffic_by_weight_then_hands_back_the_main_group() {
    let canary = "  strategy:\n    canary:\n      steps: [1, \"50%\", \"100%\"]\n      bake: 1m\n      traffic: { listener_arn: listener-web, canary_target_group_arn: tg-web-canary }\n  gates: { interval: 15s }\n";
    let mut w = world(&fleet("web", "production", 10, canary));
    settle(&mut w, "web", 10).await;
    let id = id_of(deploy(&mut w, "web", "production", "ami-00000002").expect("accepted"));
    let store = w.controller.store().clone();
    let mut shares = Vec::new();
    for pass in 0..300 {
        w.controller.reconcile_once().await;
        let (_, serving) = counts(&w, "web", "");
        assert!(serving >= 10, "pass {pass}: {serving} serving");
        let weights = w.sim.listener_weights("listener-web");
        if let Some((_, canary)) = weights.iter().find(|(tg, _)| tg == "tg-web-canary") {
            if shares.last() != Some(canary) {
                shares.push(*canary);
            }
            // The weights always add up to 100 and name the fleet's own group.
            assert!(weights.iter().any(|(tg, _)| tg == "tg-web"));
            assert_eq!(weights.iter().map(|(_, w)| w).sum::<u32>(), 100);
        }
        if store.deployment(id).expect("q").expect("row").outcome != Outcome::InProgress {
            break;
        }
        w.clock.advance(Duration::from_secs(15));
    }
    let events: Vec<String> = store
        .events_after(id, 0)
        .expect("events")
        .into_iter()
        .map(|e| e.message)
        .collect();
    assert_eq!(
        store.deployment(id).expect("q").expect("row").outcome,
        Outcome::Succeeded,
        "{events:#?}"
    );
    // 0% until the first new instance is healthy in the canary group.
    assert_eq!(shares, [0, 10, 50, 100, 0], "{events:#?}");
    let live = w.sim.all_live();
    let main = w.sim.registered("tg-web");
    assert_eq!(main.len(), 10);
    assert!(main.iter().all(|id| live
        .iter()
        .any(|i| &i.id == id && i.build == "ami-00000002")));
    assert!(w.sim.registered("tg-web-canary").is_empty());
}

#[tokio::test]
async fn deploying_the_build_that_is_already_live_again_changes_nothing() {
    let mut w = world(&fleet("web", "production", 6, ROLLING));
    settle(&mut w, "web", 6).await;
    let first = id_of(deploy(&mut w, "web", "production", "ami-00000002").expect("first"));
    // Revert queued behind it: by the time it starts, the live build is ami-00000002
    // again only if the first succeeded; here the first is aborted, so the revert finds
    // ami-00000001 live and must not touch a single instance.
    let revert = id_of(deploy(&mut w, "web", "production", "ami-00000001").expect("revert"));
    let now = w.clock.now();
    w.controller
        .request_abort(first, "changed our mind")
        .expect("abort");
    let _ = now;
    let (o1, _) = run_to_end(&mut w, "web", first, 6).await;
    assert_eq!(o1, Outcome::RolledBack);
    let (o2, events) = run_to_end(&mut w, "web", revert, 6).await;
    assert_eq!(o2, Outcome::Succeeded);
    assert!(
        events.iter().any(|e| e.contains("already live")),
        "{events:#?}"
    );
    assert_eq!(counts(&w, "web", "ami-00000001"), (6, 6));
}

#[tokio::test]
async fn a_queued_deploy_waits_out_a_freeze_that_began_while_it_was_queued() {
    let frozen = format!(
        "{ROLLING}  freeze: [{{ cron: \"0 8 * * MON\", duration: 30m, reason: course launch }}]\n"
    );
    let mut w = world(&fleet("web", "production", 8, &frozen));
    settle(&mut w, "web", 8).await; // 07:50
    let first = id_of(deploy(&mut w, "web", "production", "ami-00000002").expect("first"));
    let second =
        id_of(deploy(&mut w, "web", "production", "ami-00000003").expect("second, queued"));
    let (o1, _) = run_to_end(&mut w, "web", first, 8).await;
    assert_eq!(o1, Outcome::Succeeded);
    assert!(
        w.clock.now() > coxswain::demo::start() + chrono::Duration::minutes(30),
        "the first must end inside the freeze for this test"
    );
    let (o2, events) = run_to_end(&mut w, "web", second, 8).await;
    assert_eq!(o2, Outcome::Succeeded);
    let store = w.controller.store().clone();
    let started = store
        .events_after(second, 0)
        .expect("events")
        .into_iter()
        .find(|e| e.message.contains("started"))
        .expect("started");
    let freeze_end = coxswain::demo::start() + chrono::Duration::minutes(60);
    assert!(
        started.at >= freeze_end,
        "started at {} {events:#?}",
        started.at
    );
    assert!(
        events
            .iter()
            .any(|e| e.contains("waiting: deploys to web are frozen")),
        "{events:#?}"
    );
}

/// A daemon restarted (same state file) after the blue/green switch: green stays the only
/// registered set, blue stays running for its window, and the rollout ends as it would have.
#[tokio::test]
async fn a_blue_green_rollout_survives_a_restart_after_the_switch() {
    let bg = "  strategy:\n    blue_green: { keep_old: 10m }\n  gates: { interval: 15s }\n";
    let text = fleet("web", "production", 6, bg);
    let config = manifest::load_str("fleet.yaml", &text).expect("valid manifest");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.db");
    let open = || Arc::new(coxswain::store::Store::open(&path).expect("store"));
    let mut w = world(&text);
    w.controller = Controller::new(w.sim.clone(), w.clock.clone(), config.clone(), false)
        .expect("in-memory store")
        .with_store(open());
    settle(&mut w, "web", 6).await;
    let id = id_of(deploy(&mut w, "web", "production", "ami-00000002").expect("accepted"));
    let mut restarted = false;
    for pass in 0..200 {
        w.controller.reconcile_once().await;
        let registered = w.sim.registered("tg-web");
        let live = w.sim.all_live();
        let build_of = |id: &String| {
            live.iter()
                .find(|i| &i.id == id)
                .map(|i| i.build.clone())
                .unwrap_or_default()
        };
        let on_old = registered
            .iter()
            .filter(|id| build_of(id) == "ami-00000001")
            .count();
        let on_new = registered.len() - on_old;
        if restarted {
            assert_eq!(
                on_old, 0,
                "pass {pass}: blue registered again after the restart"
            );
        }
        if on_new == 6 && on_old == 0 && !restarted {
            // Kill and start again on the same state file.
            w.controller = Controller::new(w.sim.clone(), w.clock.clone(), config.clone(), false)
                .expect("in-memory store")
                .with_store(open());
            restarted = true;
            assert_eq!(counts(&w, "web", "ami-00000001").0, 6, "blue still running");
        }
        let outcome = open().deployment(id).expect("q").expect("row").outcome;
        if outcome != Outcome::InProgress {
            assert_eq!(outcome, Outcome::Succeeded);
            break;
        }
        w.clock.advance(Duration::from_secs(15));
    }
    assert!(restarted, "the switch happened");
    passes(&mut w, 20).await;
    assert_eq!(counts(&w, "web", "ami-00000001").0, 0);
    assert_eq!(counts(&w, "web", "ami-00000002").0, 6);
}

/// A pass says when it wants the next one: at the gate interval while a rollout runs (so
/// gates are read on time whatever the poll interval), and at the poll interval (None)
/// before it starts and once it has ended.
#[tokio::test]
async fn a_pass_asks_to_be_requeued_at_the_gate_interval_only_while_a_rollout_runs() {
    let gates = "  strategy:\n    rolling: { batch: \"50%\" }\n  gates:\n    interval: 20s\n";
    let mut w = world(&fleet("web", "staging", 2, gates));
    settle(&mut w, "web", 2).await;
    assert_eq!(w.controller.reconcile_once().await.requeue_after, None);
    let id = id_of(deploy(&mut w, "web", "staging", "ami-00000002").expect("admitted"));
    let during = w.controller.reconcile_once().await;
    assert_eq!(during.rollouts.len(), 1, "{:?}", during.rollouts);
    assert_eq!(during.requeue_after, Some(Duration::from_secs(20)));
    let (outcome, events) = run_to_end(&mut w, "web", id, 2).await;
    assert_eq!(outcome, Outcome::Succeeded, "{events:?}");
    w.clock.advance(Duration::from_secs(15));
    assert_eq!(w.controller.reconcile_once().await.requeue_after, None);
}

/// A rolling deploy of a fleet half on Spot, with Spot instances taken back in the middle
/// of it (two of them at once without warning, one after a two-minute warning on the
/// queue): an interrupted instance is lost capacity, replaced on its build, not a failed
/// gate. The deploy succeeds and the fleet ends all on the new build, split as before.
#[tokio::test]
async fn spot_interruptions_during_a_rolling_deploy_are_lost_capacity_not_a_failed_gate() {
    let text = fleet("web", "production", 8, ROLLING).replace(
        "launch:\n  ami: ami-00000001\n",
        "launch:\n  launch_template: { name: web, version: \"1\" }\n  instances_distribution: { on_demand_base_capacity: 2, on_demand_percentage_above_base_capacity: 0 }\n",
    );
    let mut w = world(&text);
    settle(&mut w, "web", 8).await;
    let spot = |w: &World| {
        w.sim
            .all_live()
            .into_iter()
            .filter(|i| i.fleet == "web" && i.retiring_since.is_none())
            .filter(|i| i.market == coxswain::cloud::Market::Spot)
            .count()
    };
    assert_eq!(spot(&w), 6);
    let id = id_of(deploy(&mut w, "web", "production", "web:2").expect("accepted"));
    let store = w.controller.store().clone();
    let mut interrupted = 0;
    for pass in 0..400 {
        w.controller.reconcile_once().await;
        let d = store.deployment(id).expect("query").expect("exists");
        if d.outcome != Outcome::InProgress {
            assert_eq!(d.outcome, Outcome::Succeeded, "{:#?}", events_of(&w, id));
            break;
        }
        let (on_new, _) = counts(&w, "web", "web:2");
        if interrupted == 0 && on_new >= 2 {
            // Without warning: the two newest Spot instances (the new build's).
            interrupted += w.sim.interrupt_spot("web", 2).len();
        } else if interrupted == 2 && on_new >= 4 {
            // With a warning on the queue: an old-build Spot instance.
            let old = w
                .sim
                .all_live()
                .into_iter()
                .find(|i| {
                    i.fleet == "web"
                        && i.build == "web:1"
                        && i.retiring_since.is_none()
                        && i.market == coxswain::cloud::Market::Spot
                })
                .expect("an old Spot instance");
            let body = serde_json::json!({
                "source": "aws.ec2", "detail-type": "EC2 Spot Instance Interruption Warning",
                "detail": {"instance-id": old.id, "instance-action": "terminate"}
            });
            w.sim.send_notice(&body.to_string());
            interrupted += 1;
        }
        assert!(pass < 399, "did not finish: {:#?}", events_of(&w, id));
        w.clock.advance(Duration::from_secs(15));
    }
    assert_eq!(interrupted, 3);
    passes(&mut w, 20).await;
    assert_eq!(counts(&w, "web", "web:2"), (8, 8));
    assert_eq!(spot(&w), 6, "the split holds: 2 On-Demand, 6 Spot");
}

/// A rolling deploy of a weighted fleet (m6i.xlarge counts 2 units, m6i.large 1): 8 units
/// on 4 instances. Batches, surge and the healthy floor are units: at every pass the
/// running, not-retiring instances of either build serve at least the 8 units, and the
/// deploy ends with 8 to 9 units all on the new build, still on 2-unit instances. Also
/// with batches and a surge of 1 unit, smaller than an instance: it must not stall.
#[tokio::test]
async fn a_rolling_deploy_of_a_weighted_fleet_counts_units_and_never_drops_below_desired() {
    let one_unit = "  strategy:\n    rolling: { batch: 1, max_surge: 1, max_unavailable: 0 }\n  gates:\n    interval: 15s\n    timeout: 30m\n";
    for (n, strategy, steps) in [
        (8, ROLLING, 4),
        (8, one_unit, 8),
        (7, ROLLING, 4),
        (7, one_unit, 7),
    ] {
        weighted_rollout(n, strategy, steps, false).await;
    }
    // A bad build on the odd fleet: rolled back, the old build whole again.
    let red = format!("{one_unit}    metrics:\n      - metric: {{ namespace: Web, name: 5xxRate, dimensions: {{ Build: \"{{build}}\" }}, stat: Average }}\n        below: 1.0\n");
    weighted_rollout(7, &red, 1, true).await;
}

/// `n` units wanted: 7 is odd, so the fleet stands one unit above it on 2-unit instances.
/// `bad`: the new build fails its 5xx gate.
async fn weighted_rollout(n: u32, strategy: &str, steps_wanted: usize, bad: bool) {
    let text = fleet("web", "production", n, strategy).replace(
        "  instance_types: [m6i.large]\n",
        "  instance_types:\n    - { instance_type: m6i.xlarge, weighted_capacity: 2 }\n    - { instance_type: m6i.large, weighted_capacity: 1 }\n",
    );
    let mut w = world(&text);
    let units = |w: &World, build: Option<&str>, running: bool| -> u32 {
        w.sim
            .all_live()
            .into_iter()
            .filter(|i| i.fleet == "web" && i.retiring_since.is_none())
            .filter(|i| build.is_none_or(|b| i.build == b))
            .filter(|i| !running || i.state == InstanceState::Running)
            .map(|i| {
                if i.instance_type == "m6i.xlarge" {
                    2
                } else {
                    1
                }
            })
            .sum()
    };
    settle(&mut w, "web", 4).await;
    assert_eq!(units(&w, None, false), 8, "{n} units on 2-unit instances");
    if bad {
        w.sim
            .set_build_metric("Web", "5xxRate", "ami-00000002", 4.2);
    }
    let (kept, gone) = if bad {
        ("ami-00000001", "ami-00000002")
    } else {
        ("ami-00000002", "ami-00000001")
    };
    let id = id_of(deploy(&mut w, "web", "production", "ami-00000002").expect("accepted"));
    let store = w.controller.store().clone();
    for pass in 0..600 {
        w.controller.reconcile_once().await;
        let serving = units(&w, None, true);
        assert!(
            serving >= n,
            "{n} wanted, pass {pass}: {serving} units serving"
        );
        let d = store.deployment(id).expect("query").expect("exists");
        if d.outcome != Outcome::InProgress {
            let want = if bad {
                Outcome::RolledBack
            } else {
                Outcome::Succeeded
            };
            assert_eq!(d.outcome, want, "{:#?}", events_of(&w, id));
            break;
        }
        assert!(pass < 599, "{n}: did not finish: {:#?}", events_of(&w, id));
        w.clock.advance(Duration::from_secs(15));
    }
    passes(&mut w, 20).await;
    assert_eq!(units(&w, Some(gone), false), 0);
    let on = units(&w, Some(kept), false);
    assert!((n..n + 2).contains(&on), "{on} units on {kept} for {n}");
    let steps: Vec<String> = events_of(&w, id)
        .into_iter()
        .filter(|e| e.starts_with("step "))
        .collect();
    assert_eq!(steps.len(), steps_wanted, "{n}: {steps:#?}");
}
