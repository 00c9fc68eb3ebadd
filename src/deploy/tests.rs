//! The rollout state machine as a pure function.

use super::*;
use crate::manifest::{CanarySpec, DeploySpec, HumanDuration, RollingSpec};
use chrono::TimeZone;

fn t(s: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 5, 9, 0, 0)
        .single()
        .expect("valid")
        + chrono::Duration::seconds(s)
}

fn build(id: &str) -> Build {
    Build {
        id: id.into(),
        image: Some(id.into()),
        template_version: None,
        label: None,
    }
}

fn rollout(strategy: StrategySpec) -> Rollout {
    Rollout {
        id: 1,
        fleet: "web".into(),
        app: "web".into(),
        env: "production".into(),
        from: build("ami-old"),
        to: build("ami-new"),
        deploy: DeploySpec {
            strategy,
            ..DeploySpec::default()
        },
        phase: Phase::Rolling,
        step: 0,
        step_started: t(0),
        green_since: None,
        started: t(0),
        deadline: None,
        abort: None,
        timed_out: false,
        kind: Kind::Deploy,
        note: None,
        overdue: false,
        ledger_only: false,
    }
}

fn obs(now: i64, desired: u32, new: (u32, u32), old: (u32, u32), gates: Gates) -> Observed {
    Observed {
        now: t(now),
        desired,
        new_live: new.0,
        new_healthy: new.1,
        old_live: old.0,
        old_healthy: old.1,
        gates,
        unit_slack: 0,
    }
}

fn pass() -> Gates {
    Gates::Pass("ok".into())
}

#[test]
fn rolling_steps_follow_the_current_desired_capacity() {
    let s = StrategySpec::Rolling(RollingSpec::default());
    assert_eq!(step_target(&s, 0, 8), (2, 4));
    assert_eq!(step_target(&s, 3, 8), (8, 4));
    // The fleet grew from 8 to 12 mid-rollout: step 2 is now 6 of 12, not 4 of 8.
    assert_eq!(step_target(&s, 1, 12), (6, 4));
    let c = StrategySpec::Canary(CanarySpec::default_steps_for_test());
    assert_eq!(step_target(&c, 0, 20).0, 1);
    assert_eq!(step_target(&c, 1, 20).0, 2);
    assert_eq!(step_target(&c, 2, 20).0, 10);
    assert_eq!(step_target(&c, 3, 20).0, 20);
}

#[test]
fn a_step_completes_only_with_new_instances_healthy_old_ones_gone_and_gates_green() {
    let r = rollout(StrategySpec::Rolling(RollingSpec::default()));
    // New ones still booting: waiting.
    let (r1, ev, tg) = advance(
        &r,
        &obs(10, 8, (2, 0), (8, 8), Gates::Waiting("booting".into())),
    );
    assert_eq!((r1.step, ev.len()), (0, 0));
    assert_eq!(
        (tg.new, tg.old, tg.min_healthy, tg.max_total),
        (2, 6, 8, 10)
    );
    // Healthy, but two old ones still there: not complete.
    let (r2, _, _) = advance(&r1, &obs(20, 8, (2, 2), (8, 8), pass()));
    assert_eq!(r2.step, 0);
    // Complete and green, no bake: next step.
    let (r3, ev, _) = advance(&r2, &obs(30, 8, (2, 2), (6, 6), pass()));
    assert_eq!(r3.step, 1);
    assert!(ev[0].starts_with("step 1/4: 2 of 8"), "{ev:?}");
}

#[test]
fn the_last_step_green_makes_the_build_live() {
    let mut r = rollout(StrategySpec::Rolling(RollingSpec::default()));
    r.step = 3;
    let (r, ev, tg) = advance(&r, &obs(30, 8, (8, 8), (0, 0), pass()));
    assert_eq!(r.phase, Phase::Succeeded);
    assert_eq!((tg.new, tg.old), (8, 0));
    assert!(ev.iter().any(|e| e.starts_with("live: 8 of 8")));
}

#[test]
fn bake_time_needs_gates_green_throughout() {
    let s = StrategySpec::Canary(CanarySpec {
        steps: CanarySpec::default_steps_for_test().steps,
        bake: HumanDuration::secs(300),
        traffic: None,
    });
    let r = rollout(s);
    let (r, _, _) = advance(&r, &obs(0, 10, (1, 1), (9, 9), pass()));
    assert_eq!(r.green_since, Some(t(0)));
    let (r, _, _) = advance(
        &r,
        &obs(200, 10, (1, 1), (9, 9), Gates::Waiting("no data".into())),
    );
    assert_eq!(r.green_since, None, "waiting resets the bake");
    let (r, _, _) = advance(&r, &obs(250, 10, (1, 1), (9, 9), pass()));
    let (r, _, _) = advance(&r, &obs(500, 10, (1, 1), (9, 9), pass()));
    assert_eq!(r.step, 0, "only 250 s green so far");
    let (r, _, _) = advance(&r, &obs(560, 10, (1, 1), (9, 9), pass()));
    assert_eq!(r.step, 1);
}

#[test]
fn a_failed_gate_rolls_back_restoring_the_old_build_first() {
    let r = rollout(StrategySpec::Rolling(RollingSpec::default()));
    let (r, ev, tg) = advance(
        &r,
        &obs(10, 8, (2, 2), (6, 6), Gates::Fail("5xx 4% > 1%".into())),
    );
    assert!(matches!(r.phase, Phase::RollingBack { .. }));
    assert!(ev[0].contains("gate failed: 5xx 4% > 1%"), "{ev:?}");
    assert_eq!((tg.new, tg.old, tg.restore_first), (0, 8, true));
    // Still rolling back while the new ones run.
    let (r, _, _) = advance(&r, &obs(20, 8, (2, 2), (8, 8), pass()));
    assert!(matches!(r.phase, Phase::RollingBack { .. }));
    let (r, ev, _) = advance(&r, &obs(30, 8, (0, 0), (8, 8), pass()));
    assert!(matches!(r.phase, Phase::RolledBack { .. }));
    assert!(
        ev[0].starts_with("rolled back: 8 of 8 on ami-old"),
        "{ev:?}"
    );
}

#[test]
fn a_step_that_never_goes_green_times_out_and_rolls_back() {
    let r = rollout(StrategySpec::Rolling(RollingSpec::default()));
    let timeout = r.deploy.gates.timeout.as_secs() as i64;
    let (r, _, _) = advance(
        &r,
        &obs(
            timeout - 1,
            8,
            (2, 0),
            (8, 8),
            Gates::Waiting("no data yet for 5xx".into()),
        ),
    );
    assert_eq!(r.phase, Phase::Rolling);
    let (r, ev, _) = advance(
        &r,
        &obs(
            timeout + 1,
            8,
            (2, 0),
            (8, 8),
            Gates::Waiting("no data yet for 5xx".into()),
        ),
    );
    match &r.phase {
        Phase::RollingBack { reason } => assert!(
            reason.contains("timed out") && reason.contains("no data yet"),
            "{reason}"
        ),
        p => panic!("{p:?} {ev:?}"),
    }
}

#[test]
fn a_deadline_or_an_abort_rolls_back_and_the_deadline_says_so() {
    let mut r = rollout(StrategySpec::Rolling(RollingSpec::default()));
    r.deadline = Some(t(60));
    let (r2, _, _) = advance(&r, &obs(61, 8, (2, 2), (6, 6), pass()));
    assert!(matches!(r2.phase, Phase::RollingBack { .. }) && r2.timed_out);
    r.deadline = None;
    r.abort = Some("superseded".into());
    let (r3, _, _) = advance(&r, &obs(10, 8, (2, 2), (6, 6), pass()));
    assert!(matches!(r3.phase, Phase::RollingBack { .. }) && !r3.timed_out);
}

#[test]
fn blue_green_switches_keeps_the_old_set_and_retires_it_only_with_gates_green() {
    use crate::manifest::BlueGreenSpec;
    let s = StrategySpec::BlueGreen(BlueGreenSpec {
        keep_old: HumanDuration::secs(600),
        bake: HumanDuration::secs(0),
    });
    let r = rollout(s);
    // The full green set first, unregistered, old set untouched.
    let (r, _, tg) = advance(
        &r,
        &obs(0, 6, (0, 0), (6, 6), Gates::Waiting("booting".into())),
    );
    assert_eq!(
        (
            tg.new,
            tg.old,
            tg.register_new,
            tg.register_old,
            tg.max_total
        ),
        (6, 6, false, true, 12)
    );
    let (r, ev, _) = advance(&r, &obs(60, 6, (6, 6), (6, 6), pass()));
    assert!(matches!(r.phase, Phase::KeepingOld { .. }), "{:?}", r.phase);
    assert!(
        ev.iter()
            .any(|e| e.starts_with("switched traffic to ami-new")),
        "{ev:?}"
    );
    let (_, _, tg) = advance(&r, &obs(70, 6, (6, 6), (6, 6), pass()));
    assert_eq!((tg.register_new, tg.register_old, tg.old), (true, false, 6));
    // Missing data at the end of the window does not make it live.
    let (r2, _, _) = advance(
        &r,
        &obs(700, 6, (6, 6), (6, 6), Gates::Waiting("no data".into())),
    );
    assert!(
        matches!(r2.phase, Phase::KeepingOld { .. }),
        "{:?}",
        r2.phase
    );
    let (r3, _, tg) = advance(&r2, &obs(710, 6, (6, 6), (6, 6), pass()));
    assert_eq!(r3.phase, Phase::Succeeded);
    assert_eq!(tg.old, 0);
    // A failed gate in the window switches back: old registered, new retired.
    let (r4, _, tg) = advance(&r, &obs(300, 6, (6, 6), (6, 6), Gates::Fail("5xx".into())));
    assert!(matches!(r4.phase, Phase::RollingBack { .. }));
    assert_eq!((tg.new, tg.old, tg.register_old), (0, 6, true));
}

#[test]
fn rolling_back_has_a_deadline_reported_once_and_restoring_goes_on() {
    let r = rollout(StrategySpec::Rolling(RollingSpec::default()));
    // A gate fails at t=100: rolling back starts then, whatever the step's age.
    let (r, _, _) = advance(&r, &obs(100, 4, (2, 2), (2, 2), Gates::Fail("5xx".into())));
    assert!(matches!(r.phase, Phase::RollingBack { .. }), "{r:?}");
    assert_eq!(
        r.step_started,
        t(100),
        "the deadline counts from the rollback"
    );
    let limit = r.deploy.gates.timeout.chrono().num_seconds();
    // The old build cannot come back (no capacity, say): within the timeout, quiet.
    let (r1, ev, _) = advance(&r, &obs(100 + limit, 4, (2, 2), (2, 2), pass()));
    assert!(!r1.overdue && ev.is_empty(), "{ev:?}");
    // Past it: said once, and it goes on restoring (targets unchanged).
    let (r2, ev, targets) = advance(&r1, &obs(101 + limit, 4, (2, 2), (2, 2), pass()));
    assert!(r2.overdue, "{r2:?}");
    assert!(
        ev.len() == 1 && ev[0].contains("rolling back overdue"),
        "{ev:?}"
    );
    assert!(matches!(r2.phase, Phase::RollingBack { .. }));
    assert_eq!((targets.new, targets.old), (0, 4));
    let (r3, ev, _) = advance(&r2, &obs(200 + limit, 4, (2, 2), (2, 2), pass()));
    assert!(ev.is_empty(), "reported once: {ev:?}");
    // Once the old build is whole and the new one gone, it ends rolled back.
    let (r4, _, _) = advance(&r3, &obs(300 + limit, 4, (0, 0), (4, 4), pass()));
    assert!(matches!(r4.phase, Phase::RolledBack { .. }), "{r4:?}");
}

#[test]
fn phase_names_are_one_stable_vocabulary() {
    let names: Vec<&str> = [
        Phase::Queued,
        Phase::PreDeploy,
        Phase::Rolling,
        Phase::KeepingOld { until: t(0) },
        Phase::Promoting,
        Phase::RollingBack {
            reason: "gate failed: alarm x".into(),
        },
        Phase::Succeeded,
        Phase::RolledBack {
            reason: "why".into(),
        },
    ]
    .iter()
    .map(Phase::name)
    .collect();
    assert_eq!(
        names,
        [
            "queued",
            "pre_deploy",
            "rolling",
            "keeping_old",
            "promoting",
            "rolling_back",
            "succeeded",
            "rolled_back"
        ]
    );
    // No reason text, no Debug formatting, in any name.
    assert!(names
        .iter()
        .all(|n| n.chars().all(|c| c.is_ascii_lowercase() || c == '_')));
}
