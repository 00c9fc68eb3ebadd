//! The failing deploy inputs operators found (`../shared/cases/`, section "Deploys"), each
//! run on the simulated cloud with a virtual clock and checked against the right value:
//! tiny fleets never lose their last healthy instance, caps hold during a rollout, a hand
//! rollback during an incident restores the last good build (never the bad one), and a
//! rollback goes only to a build that was live in the environment before.

use coxswain::clock::{Clock, VirtualClock};
use coxswain::cloud::sim::SimCloud;
use coxswain::cloud::{Cloud, TargetHealth};
use coxswain::controller::requests::{Accepted, DeployRequest, Refusal, RollbackRequest};
use coxswain::controller::Controller;
use coxswain::manifest::{self, Config};
use coxswain::store::Outcome;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

fn cases() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/cases")
}

fn case_text(rel: &str) -> String {
    let path = cases().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "case file {} is missing ({e}): the shared cases must be beside the repository",
            path.display()
        )
    })
}

/// The YAML documents of a case file: the Controller, then each fleet.
fn documents(text: &str) -> Vec<String> {
    text.split("\n---\n").map(str::to_string).collect()
}

struct World {
    clock: Arc<VirtualClock>,
    sim: Arc<SimCloud>,
    controller: Controller,
}

fn world(config: Config) -> World {
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

fn load(name: &str, text: &str) -> Config {
    manifest::load_str(name, text).unwrap_or_else(|e| panic!("{name} does not load: {e}"))
}

impl World {
    /// Instances of `fleet` that are billed: booting, serving and draining.
    fn billed(&self, fleet: &str) -> Vec<coxswain::cloud::Instance> {
        self.sim
            .all_live()
            .into_iter()
            .filter(|i| i.fleet == fleet)
            .collect()
    }

    async fn healthy(&self, tg: &str) -> usize {
        self.sim
            .target_health(tg)
            .await
            .expect("target health")
            .iter()
            .filter(|(_, h)| *h == TargetHealth::Healthy)
            .count()
    }

    fn deploy(&mut self, fleet: &str, env: &str, build: &str) -> Result<Accepted, Refusal> {
        let now = self.clock.now();
        self.controller.request_deploy(
            &DeployRequest {
                fleet: fleet.into(),
                env: env.into(),
                build: build.into(),
                label: None,
                timeout_secs: None,
                idempotency_key: None,
            },
            now,
        )
    }

    fn rollback(&mut self, fleet: &str, env: &str, to: Option<&str>) -> Result<Accepted, Refusal> {
        let now = self.clock.now();
        self.controller.request_rollback(
            &RollbackRequest {
                fleet: fleet.into(),
                env: env.into(),
                to: to.map(str::to_string),
            },
            now,
        )
    }

    /// `n` passes, `step` apart.
    async fn passes(&mut self, n: usize, step: Duration) {
        for _ in 0..n {
            self.controller.reconcile_once().await;
            self.clock.advance(step);
        }
    }

    /// Passes `step` apart until rollout `id` ends, checking `bounds` after every pass
    /// (and calling `each`, for what a test records).
    async fn run_to_end(
        &mut self,
        id: i64,
        step: Duration,
        bounds: &Bounds<'_>,
        mut each: impl FnMut(&World),
    ) -> (Outcome, Vec<String>) {
        let store = self.controller.store().clone();
        for pass in 0..600 {
            self.controller.reconcile_once().await;
            bounds.check(self, pass).await;
            each(self);
            let d = store.deployment(id).expect("ledger").expect("row");
            if d.outcome != Outcome::InProgress {
                let events = store
                    .events_after(id, 0)
                    .expect("events")
                    .into_iter()
                    .map(|e| e.message)
                    .collect();
                return (d.outcome, events);
            }
            self.clock.advance(step);
        }
        panic!("rollout #{id} did not end");
    }
}

/// What must hold after every pass of a rollout.
struct Bounds<'a> {
    fleet: &'a str,
    tg: &'a str,
    min_healthy: usize,
    max_billed: usize,
}

impl Bounds<'_> {
    async fn check(&self, w: &World, pass: usize) {
        let billed = w.billed(self.fleet).len();
        assert!(
            billed <= self.max_billed,
            "pass {pass}: {billed} billed instances of {}, cap {}",
            self.fleet,
            self.max_billed
        );
        // The first passes register the fleet's instances.
        if pass >= 2 {
            let healthy = w.healthy(self.tg).await;
            assert!(
                healthy >= self.min_healthy,
                "pass {pass}: {healthy} healthy targets in {}, minimum {}",
                self.tg,
                self.min_healthy
            );
        }
    }
}

fn target_group(config: &Config) -> String {
    config.fleets[0]
        .target_group_arn
        .clone()
        .expect("target group")
}

fn id_of(a: Accepted) -> i64 {
    match a {
        Accepted::Started { id, .. } => id,
        other => panic!("not started: {other:?}"),
    }
}

/// tiny-fleet-rounding: `solo-zero` (surge 0, unavailable 0) could never replace an
/// instance, so `validate` refuses it, saying why, instead of a rollout that sticks.
#[test]
fn a_strategy_that_can_make_no_progress_is_refused_at_validation() {
    let text = case_text("tiny-fleet-rounding/case2-smallfleet.yaml");
    let err = manifest::load_str("case2-smallfleet.yaml", &text)
        .expect_err("solo-zero cannot roll")
        .to_string();
    assert!(err.contains("1 problem"), "only solo-zero: {err}");
    assert!(
        err.contains("max_surge 0 with max_unavailable 0"),
        "solo-zero: {err}"
    );
}

/// tiny-fleet-rounding: on `solo` (1 instance) and `duo` (2), 25% unavailable rounds down
/// to 0 and 25% surge up to 1: each rollout launches the new instance first and retires
/// the old one only once it is healthy. The fleet never has fewer healthy targets than
/// its size (the 1-instance fleet is never empty), and never more than one extra instance
/// in service (plus the one draining after its replacement is healthy).
#[tokio::test]
async fn a_tiny_fleet_never_drops_below_its_minimum_healthy_count() {
    let docs = documents(&case_text("tiny-fleet-rounding/case2-smallfleet.yaml"));
    for (fleet, doc, min_healthy, most) in [("solo", &docs[1], 1, 3), ("duo", &docs[3], 2, 4)] {
        let text = format!("{}\n---\n{doc}", docs[0]);
        let config = load("tiny.yaml", &text);
        let tg = target_group(&config);
        let mut w = world(config);
        let id = id_of(w.deploy(fleet, "production", "2").expect("admitted"));
        let (outcome, events) = w
            .run_to_end(
                id,
                Duration::from_secs(5),
                &Bounds {
                    fleet,
                    tg: &tg,
                    min_healthy,
                    max_billed: most,
                },
                |_| {},
            )
            .await;
        assert_eq!(outcome, Outcome::Succeeded, "{fleet}: {events:#?}");
        w.passes(12, Duration::from_secs(5)).await;
        let live = w.billed(fleet);
        assert!(
            !live.is_empty() && live.iter().all(|i| i.build == "web-server:2"),
            "{fleet}: {live:?}"
        );
    }
}

/// caps-during-deploy: `capacity.max: 2` and `max_total_instances: 2`, surge 1 and one
/// unavailable allowed. At the cap the rollout replaces in place: never 3 billed
/// instances (draining ones count), never fewer than 1 healthy, and it ends live.
#[tokio::test]
async fn at_its_caps_a_rollout_replaces_in_place_and_never_bills_more() {
    let config = load(
        "case9-cap.yaml",
        &case_text("caps-during-deploy/case9-cap.yaml"),
    );
    let tg = target_group(&config);
    let mut w = world(config);
    let id = id_of(w.deploy("capped", "production", "2").expect("admitted"));
    let mut most = 0;
    let (outcome, events) = w
        .run_to_end(
            id,
            Duration::from_secs(5),
            &Bounds {
                fleet: "capped",
                tg: &tg,
                min_healthy: 1,
                max_billed: 2,
            },
            |w| most = most.max(w.billed("capped").len()),
        )
        .await;
    assert_eq!(outcome, Outcome::Succeeded, "{events:#?}");
    assert_eq!(most, 2);
    let live = w.billed("capped");
    assert_eq!(live.len(), 2);
    assert!(live.iter().all(|i| i.build == "web-server:2"), "{live:?}");
}

/// hand-rollback-red-gate: build 2 went live with its gates green; then an incident turns
/// the fleet-level gate red and the operator rolls back by hand. The rollback restores
/// build 1 on every instance at once, reports the red gate without acting on it, and
/// ends "succeeded" as a rollback; build 2 is no longer "passed" in production.
#[tokio::test]
async fn a_hand_rollback_during_an_incident_restores_the_last_good_build() {
    let before = load(
        "case6-hand-rollback.yaml",
        &case_text("hand-rollback-red-gate/case6-hand-rollback.yaml"),
    );
    let tg = target_group(&before);
    let fleets = coxswain::telemetry::FleetInfo::of(&before);
    let mut w = world(before);
    // The metrics count rollouts by outcome from the ledger, from the daemon's start.
    let telemetry = coxswain::telemetry::Telemetry::new(Duration::from_secs(5))
        .with_history(w.controller.store().clone(), w.clock.now());
    let empty = coxswain::controller::PassReport::default();
    telemetry.observe(&empty, &fleets, w.clock.now());
    let id = id_of(w.deploy("hr", "production", "2").expect("admitted"));
    let (outcome, events) = w
        .run_to_end(
            id,
            Duration::from_secs(5),
            &Bounds {
                fleet: "hr",
                tg: &tg,
                min_healthy: 2,
                max_billed: 3,
            },
            |_| {},
        )
        .await;
    assert_eq!(
        outcome,
        Outcome::Succeeded,
        "build 2 goes live: {events:#?}"
    );
    let store = w.controller.store().clone();
    assert!(store
        .passed("hr", "production", "web-server:2")
        .expect("ledger"));

    // The incident: the same gate, now red.
    let incident = load(
        "case6-after-incident.yaml",
        &case_text("hand-rollback-red-gate/case6-after-incident.yaml"),
    );
    w.controller.replace_config(incident).expect("reload");
    w.clock.advance(Duration::from_secs(120));
    let id = id_of(
        w.rollback("hr", "production", None)
            .expect("rollback admitted"),
    );
    // CI or a second operator pressing the button again: the same rollback.
    assert_eq!(
        id_of(w.rollback("hr", "production", None).expect("again")),
        id,
        "a repeated rollback returns the one under way"
    );
    let started = w.clock.now();
    let (outcome, events) = w
        .run_to_end(
            id,
            Duration::from_secs(5),
            &Bounds {
                fleet: "hr",
                tg: &tg,
                min_healthy: 2,
                max_billed: 4,
            },
            |_| {},
        )
        .await;
    assert_eq!(outcome, Outcome::Succeeded, "{events:#?}");
    w.passes(12, Duration::from_secs(5)).await;
    let live = w.billed("hr");
    assert_eq!(live.len(), 2, "{live:?}");
    assert!(live.iter().all(|i| i.build == "web-server:1"), "{live:?}");
    assert!(
        events
            .iter()
            .any(|e| e.contains("gate red during the rollback")),
        "the red gate is reported: {events:#?}"
    );
    assert!(
        !events
            .iter()
            .any(|e| e.contains("rolling back to web-server:2")),
        "never back to the bad build: {events:#?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("rollback of web-server:1")),
        "it says rollback: {events:#?}"
    );
    // At full capacity at once: one step, no bake; well inside the gate timeout (3m).
    assert!(
        w.clock.now() - started < chrono::Duration::minutes(3),
        "took {}",
        w.clock.now() - started
    );
    // Two rollouts ran, both ended as asked: the deploy and the rollback. The ledger's
    // note that the rollback left build 2 is not a third, rolled-back rollout.
    telemetry.observe(&empty, &fleets, w.clock.now());
    let text = telemetry.encode(false);
    for (outcome, n) in [("succeeded", 2), ("rolled_back", 0)] {
        let line =
            format!("coxswain_rollouts_finished_total{{fleet=\"hr\",outcome=\"{outcome}\"}} {n}");
        assert!(text.lines().any(|l| l == line), "no {line} in\n{text}");
    }
    assert!(
        !store
            .passed("hr", "production", "web-server:2")
            .expect("ledger"),
        "a build rolled back in production has not passed it"
    );
    // The rollback has ended. Pressed again (a CI retry, a second on-call engineer), it
    // is the same request: nothing to do, and never the build it took off.
    match w.rollback("hr", "production", None) {
        Ok(Accepted::AlreadyLive { build, .. }) => assert_eq!(build, "web-server:1"),
        other => panic!("a second rollback must not restore web-server:2: {other:?}"),
    }
    match w.rollback("hr", "production", Some("2")) {
        Err(Refusal::Refused(why)) => {
            assert!(why.contains("taken off hr by a rollback"), "{why}");
            assert!(why.contains("coxswain deploy"), "{why}");
        }
        other => panic!("--to the build a rollback took off is refused: {other:?}"),
    }
    w.passes(12, Duration::from_secs(5)).await;
    let live = w.billed("hr");
    assert!(live.iter().all(|i| i.build == "web-server:1"), "{live:?}");
}

/// The demo's `rollback web --env production --to 99`: build 99 never went to staging,
/// was never approved and was never live in production, so a rollback to it is refused
/// (exit 2) and says to deploy it instead. A build live in production before is fine.
#[tokio::test]
async fn a_rollback_goes_only_to_a_build_that_was_live_in_that_environment() {
    let config = load("demo", coxswain::demo::MANIFEST);
    let mut w = world(config);
    let refused = w
        .rollback("web", "production", Some("99"))
        .expect_err("99 was never live in production");
    match refused {
        Refusal::Refused(why) => {
            assert!(why.contains("never live in production"), "{why}");
            assert!(why.contains("coxswain deploy"), "{why}");
        }
        other => panic!("refused, not {other:?}"),
    }
    // Live in staging is not live in production.
    let tg = target_group(w.controller.config());
    let id = id_of(
        w.deploy("web-staging", "staging", "13")
            .expect("staging admits"),
    );
    let (outcome, events) = w
        .run_to_end(
            id,
            Duration::from_secs(15),
            &Bounds {
                fleet: "web-staging",
                tg: &tg,
                min_healthy: 0,
                max_billed: 60,
            },
            |_| {},
        )
        .await;
    assert_eq!(outcome, Outcome::Succeeded, "{events:#?}");
    let refused = w
        .rollback("web", "production", Some("13"))
        .expect_err("13 was live in staging only");
    assert!(
        matches!(&refused, Refusal::Refused(why) if why.contains("never live in production")),
        "{refused:?}"
    );
    // The build production runs (from its manifest) is live there: nothing to do.
    assert!(matches!(
        w.rollback("web", "production", Some("12")),
        Ok(Accepted::AlreadyLive { .. })
    ));

    // Rolled back in staging, 13 has not passed staging any more.
    let id = id_of(
        w.rollback("web-staging", "staging", Some("12"))
            .expect("12 was live in staging"),
    );
    let (outcome, events) = w
        .run_to_end(
            id,
            Duration::from_secs(15),
            &Bounds {
                fleet: "web-staging",
                tg: &tg,
                min_healthy: 0,
                max_billed: 60,
            },
            |_| {},
        )
        .await;
    assert_eq!(outcome, Outcome::Succeeded, "{events:#?}");
    let store = w.controller.store().clone();
    store
        .approve(&coxswain::store::Approval {
            app: "web".into(),
            build: "web-server:13".into(),
            by: "qa".into(),
            at: w.clock.now(),
        })
        .expect("approve");
    match w.deploy("web", "production", "13") {
        Err(Refusal::Refused(why)) => assert!(
            why.contains("rolled back in staging"),
            "the refusal says so: {why}"
        ),
        other => panic!("13 must not be promoted: {other:?}"),
    }
}

/// The gauge `name` of `fleet` in a Prometheus text exposition.
fn gauge(text: &str, name: &str, fleet: &str) -> u32 {
    let prefix = format!("{name}{{");
    text.lines()
        .find(|l| l.starts_with(&prefix) && l.contains(&format!("fleet=\"{fleet}\"")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no {name} for {fleet} in:\n{text}")) as u32
}

/// caps-during-deploy, counting: `/metrics` and `status` said 2 while 3 ran. At every
/// pass of a rolling deploy with a surge (case6's fleet before the incident), the current
/// and billed gauges equal what the simulated cloud runs and bills, and `ready` counts
/// every serving instance, old build and new: registered, running, not draining.
#[tokio::test]
async fn metrics_count_every_billed_and_serving_instance_during_a_rollout() {
    let config = load(
        "case6-hand-rollback.yaml",
        &case_text("hand-rollback-red-gate/case6-hand-rollback.yaml"),
    );
    let tg = target_group(&config);
    let fleets = coxswain::telemetry::FleetInfo::of(&config);
    let mut w = world(config);
    let telemetry = coxswain::telemetry::Telemetry::new(Duration::from_secs(5));
    for _ in 0..3 {
        let r = w.controller.reconcile_once().await;
        telemetry.observe(&r, &fleets, w.clock.now());
        w.clock.advance(Duration::from_secs(5));
    }
    let id = id_of(w.deploy("hr", "production", "2").expect("admitted"));
    let store = w.controller.store().clone();
    let mut most_current = 0;
    for pass in 0..200 {
        // What the pass will see when it lists the fleet (the gauges tell what the last
        // pass saw, not what it launched after).
        let billed = w.billed("hr");
        let draining = billed.iter().filter(|i| i.retiring_since.is_some()).count() as u32;
        let running = (billed.len() as u32) - draining;
        let serving: std::collections::HashSet<String> = w
            .sim
            .target_health(&tg)
            .await
            .expect("target health")
            .into_iter()
            .filter(|(_, h)| !matches!(h, TargetHealth::Draining | TargetHealth::Unused))
            .map(|(id, _)| id)
            .collect();
        let serving = billed
            .iter()
            .filter(|i| i.retiring_since.is_none() && serving.contains(&i.id))
            .filter(|i| i.state == coxswain::cloud::InstanceState::Running)
            .count() as u32;
        let report = w.controller.reconcile_once().await;
        telemetry.observe(&report, &fleets, w.clock.now());
        let text = telemetry.encode(false);
        assert_eq!(
            gauge(&text, "coxswain_fleet_billed_instances", "hr"),
            billed.len() as u32,
            "pass {pass}"
        );
        assert_eq!(
            gauge(&text, "coxswain_fleet_current_instances", "hr"),
            running,
            "pass {pass}"
        );
        assert_eq!(
            gauge(&text, "coxswain_fleet_ready_instances", "hr"),
            serving,
            "pass {pass}"
        );
        assert_eq!(
            gauge(&text, "coxswain_fleet_booting_instances", "hr") + serving,
            running,
            "pass {pass}: ready and booting count every live instance once"
        );
        let status = &telemetry.snapshot().fleets;
        let hr = status.iter().find(|f| f.fleet == "hr").expect("hr");
        assert_eq!((hr.current, hr.ready), (running, serving), "pass {pass}");
        most_current = most_current.max(running);
        if store.deployment(id).expect("ledger").expect("row").outcome != Outcome::InProgress {
            break;
        }
        w.clock.advance(Duration::from_secs(5));
    }
    assert_eq!(
        store.deployment(id).expect("ledger").expect("row").outcome,
        Outcome::Succeeded
    );
    assert_eq!(
        most_current, 3,
        "the surge shows: 2 of the old build and 1 new"
    );
}

/// A build that cannot launch fails fast: a template version that does not exist is
/// refused at admission (the API answers 409, the CLI exits 2), and one that disappears
/// after admission fails its rollout at the pass after EC2 refuses the launch, with
/// EC2's reason, instead of a gate timeout; the fleet keeps its build at full capacity.
#[tokio::test]
async fn a_build_that_cannot_launch_fails_fast() {
    let config = load(
        "case6-hand-rollback.yaml",
        &case_text("hand-rollback-red-gate/case6-hand-rollback.yaml"),
    );
    let mut w = world(config);
    w.passes(12, Duration::from_secs(5)).await;
    w.sim.forget_build("web-server:7");
    let req = |build: &str| DeployRequest {
        fleet: "hr".into(),
        env: "production".into(),
        build: build.into(),
        label: None,
        timeout_secs: None,
        idempotency_key: None,
    };
    let refused = w.controller.check_launchable(&req("7")).await;
    assert!(
        matches!(&refused, Err(Refusal::Refused(m)) if m.contains("web-server:7") && m.contains("does not exist")),
        "{refused:?}"
    );
    assert!(w.controller.check_launchable(&req("8")).await.is_ok());

    // Admitted, then gone (a template version deleted by mistake).
    let id = id_of(w.deploy("hr", "production", "8").expect("admitted"));
    w.sim.forget_build("web-server:8");
    let started = w.clock.now();
    let store = w.controller.store().clone();
    let mut ended = None;
    for _ in 0..40 {
        w.controller.reconcile_once().await;
        let d = store.deployment(id).expect("ledger").expect("row");
        if d.outcome != Outcome::InProgress {
            ended = Some(d);
            break;
        }
        w.clock.advance(Duration::from_secs(5));
    }
    let d = ended.expect("the rollout ended");
    assert_eq!(d.outcome, Outcome::RolledBack);
    let reason = d.reason.unwrap_or_default();
    assert!(
        reason.contains("cannot launch web-server:8")
            && reason.contains("InvalidLaunchTemplateId.VersionNotFound"),
        "{reason}"
    );
    assert!(
        w.clock.now() - started <= chrono::Duration::seconds(30),
        "failed at {:?}, not at once",
        w.clock.now() - started
    );
    w.passes(12, Duration::from_secs(5)).await;
    let live = w.billed("hr");
    assert_eq!(live.len(), 2, "{live:?}");
    assert!(live.iter().all(|i| i.build == "web-server:1"), "{live:?}");
}

/// `status` shows a rollout in every phase: the running one with its phase, and the one
/// queued behind it (a retried or second deploy) as `queued`, by the same names the API
/// and metrics use.
#[tokio::test]
async fn status_shows_the_running_rollout_and_the_one_queued_behind_it() {
    let config = load(
        "case6-hand-rollback.yaml",
        &case_text("hand-rollback-red-gate/case6-hand-rollback.yaml"),
    );
    let fleets = coxswain::telemetry::FleetInfo::of(&config);
    let mut w = world(config);
    let telemetry = Arc::new(coxswain::telemetry::Telemetry::new(Duration::from_secs(5)));
    let first = id_of(w.deploy("hr", "production", "2").expect("admitted"));
    let second = id_of(w.deploy("hr", "production", "3").expect("queued"));
    for _ in 0..3 {
        let r = w.controller.reconcile_once().await;
        telemetry.observe(&r, &fleets, w.clock.now());
        w.clock.advance(Duration::from_secs(5));
    }
    let (tx, _rx) = tokio::sync::mpsc::channel(1);
    let state = coxswain::api::ApiState {
        commands: tx,
        store: w.controller.store().clone(),
        token: Arc::new("t".into()),
        telemetry,
    };
    let status = coxswain::api::status_of(&state).expect("status");
    let hr = status.fleets.iter().find(|f| f.fleet == "hr").expect("hr");
    let rollout = hr.rollout.as_ref().expect("a running rollout");
    assert_eq!(rollout.id, first, "{hr:?}");
    assert_eq!(rollout.phase, "rolling", "{hr:?}");
    assert_eq!(hr.queued.len(), 1, "{hr:?}");
    assert_eq!(hr.queued[0].id, second);
    assert_eq!(hr.queued[0].phase, "queued");
    assert_eq!(hr.queued[0].to, "web-server:3");
}

/// A hand rollback during an incident is not followed by the next deploy in line: deploys
/// queued for the fleet are cancelled (superseded, with the reason), the rollback ends
/// with the previous build live, and nothing else starts.
#[tokio::test]
async fn a_hand_rollback_cancels_the_deploys_queued_behind_the_rollout() {
    let config = load(
        "case6-hand-rollback.yaml",
        &case_text("hand-rollback-red-gate/case6-hand-rollback.yaml"),
    );
    let mut w = world(config);
    let running = id_of(w.deploy("hr", "production", "5").expect("admitted"));
    let queued = id_of(w.deploy("hr", "production", "6").expect("queued"));
    w.passes(3, Duration::from_secs(5)).await;
    let rb = id_of(w.rollback("hr", "production", None).expect("rollback"));
    assert_eq!(rb, running, "the rollback aborts the running deploy");
    let store = w.controller.store().clone();
    let q = store.deployment(queued).expect("ledger").expect("row");
    assert_eq!(q.outcome, Outcome::Superseded, "{q:?}");
    assert!(
        q.reason
            .as_deref()
            .is_some_and(|r| r.contains("cancelled by rollback")),
        "{q:?}"
    );
    w.passes(60, Duration::from_secs(5)).await;
    assert_eq!(
        store
            .deployment(running)
            .expect("ledger")
            .expect("row")
            .outcome,
        Outcome::RolledBack
    );
    let live = w.billed("hr");
    assert!(
        live.len() == 2 && live.iter().all(|i| i.build == "web-server:1"),
        "{live:?}"
    );
}

/// Asked again while it runs, a rollback is the same rollback: it does not cancel a deploy
/// queued after it began (the fix for the incident, say).
#[tokio::test]
async fn a_repeated_rollback_leaves_deploys_queued_after_it_alone() {
    let config = load(
        "case6-hand-rollback.yaml",
        &case_text("hand-rollback-red-gate/case6-hand-rollback.yaml"),
    );
    let mut w = world(config);
    let running = id_of(w.deploy("hr", "production", "5").expect("admitted"));
    w.passes(3, Duration::from_secs(5)).await;
    let first = w.rollback("hr", "production", None).expect("rollback");
    assert!(
        matches!(first, Accepted::Started { id, existing: false, .. } if id == running),
        "{first:?}"
    );
    w.controller.reconcile_once().await;
    let fix = id_of(w.deploy("hr", "production", "7").expect("queued"));
    let again = w.rollback("hr", "production", None).expect("again");
    assert!(
        matches!(again, Accepted::Started { id, existing: true, .. } if id == running),
        "{again:?}"
    );
    let store = w.controller.store().clone();
    assert_eq!(
        store.deployment(fix).expect("ledger").expect("row").outcome,
        Outcome::InProgress,
        "the deploy queued after the rollback is still queued"
    );
}
