//! Table-driven cases for [`converge`]: each row is a fleet's counts and a rollout's
//! targets, and the moves that must come out.

use super::*;

fn targets(new: u32, old: u32, max_total: u32, min_healthy: u32) -> Targets {
    Targets {
        new,
        old,
        max_total,
        min_healthy,
        register_new: true,
        register_old: true,
        restore_first: false,
    }
}

fn rolling_back(desired: u32, new_live: u32, max_unavailable: u32) -> Targets {
    Targets {
        new: 0,
        old: desired,
        max_total: desired + new_live + desired,
        min_healthy: desired - max_unavailable,
        register_new: false,
        register_old: true,
        restore_first: true,
    }
}

/// Every instance healthy and serving, none draining.
fn counts(desired: u32, new_live: u32, old_live: u32) -> Counts {
    Counts {
        desired,
        new_live,
        new_healthy: new_live,
        new_idle: 0,
        new_in_group: new_live,
        old_live,
        old_healthy: old_live,
        retiring: 0,
    }
}

const FREE: Limits = Limits {
    max_launch: 100,
    max_retire: 100,
    cap_room: None,
};

fn capped(room: u32) -> Limits {
    Limits {
        cap_room: Some(room),
        ..FREE
    }
}

/// (launch new, launch old, retire old, retire idle new, retire new)
fn shape(m: &Moves) -> (u32, u32, u32, u32, u32) {
    (
        m.launch_new,
        m.launch_old,
        m.retire_old(),
        m.retire_new_idle,
        m.retire_new,
    )
}

#[test]
fn rolling_steps_launch_within_the_surge_and_retire_within_max_unavailable() {
    let rolling = Phase::Rolling;
    // (targets, counts, limits, expected shape)
    let cases = [
        // First batch of 2 of 4, surge 1: one new launches, nothing retires yet (the
        // healthy floor of 4 leaves no spare).
        (targets(2, 2, 5, 4), counts(4, 0, 4), FREE, (1, 0, 0, 0, 0)),
        // The new one is up and healthy: 5 healthy, floor 4, one old may go; the surge is
        // used, so nothing launches until it has.
        (targets(2, 2, 5, 4), counts(4, 1, 4), FREE, (0, 0, 1, 0, 0)),
        // max_unavailable 1 and no surge: replace in place, retire first.
        (targets(2, 2, 4, 3), counts(4, 0, 4), FREE, (0, 0, 1, 0, 0)),
        // The new ones are there but not healthy yet: no old goes below the floor.
        (
            targets(2, 2, 5, 4),
            Counts {
                new_healthy: 0,
                ..counts(4, 2, 4)
            },
            FREE,
            (0, 0, 0, 0, 0),
        ),
        // max_launch_per_cycle and max_retire_per_cycle bind.
        (
            targets(10, 0, 20, 0),
            counts(10, 0, 10),
            Limits {
                max_launch: 3,
                max_retire: 2,
                cap_room: None,
            },
            (3, 0, 2, 0, 0),
        ),
        // The global cap leaves room for 1 of the 2 the surge allows.
        (
            targets(4, 0, 8, 4),
            counts(4, 2, 4),
            capped(1),
            (1, 0, 2, 0, 0),
        ),
    ];
    for (i, (t, c, l, want)) in cases.into_iter().enumerate() {
        let m = converge(&t, &c, &l, &rolling);
        assert_eq!(shape(&m), want, "case {i}: {t:?} {c:?} {l:?}");
        assert!(!m.blocked_at_cap && !m.one_at_a_time, "case {i}");
    }
}

#[test]
fn a_fleet_that_grows_or_shrinks_mid_step_gets_both_builds_to_their_shares() {
    // Desired went 4 -> 6 mid-step (half new): 3 new, 3 old wanted; 2 + 2 live.
    let m = converge(
        &targets(3, 3, 7, 6),
        &counts(6, 2, 2),
        &FREE,
        &Phase::Rolling,
    );
    assert_eq!(shape(&m), (1, 1, 0, 0, 0));
    // The surge room is shared: the old build gets what the new one leaves.
    let m = converge(
        &targets(3, 3, 5, 6),
        &counts(6, 2, 2),
        &FREE,
        &Phase::Rolling,
    );
    assert_eq!(shape(&m), (1, 0, 0, 0, 0));
    // Desired went 6 -> 2 (half new): 1 new, 1 old; both builds shrink, down to the floor.
    let m = converge(
        &targets(1, 1, 3, 2),
        &counts(2, 3, 3),
        &FREE,
        &Phase::Rolling,
    );
    assert_eq!(shape(&m), (0, 0, 2, 0, 2));
}

#[test]
fn unhealthy_old_instances_are_retired_before_healthy_ones() {
    let c = Counts {
        old_healthy: 3,
        ..counts(4, 2, 5)
    };
    let m = converge(&targets(2, 2, 6, 3), &c, &FREE, &Phase::Rolling);
    // Healthy: 3 old + 2 new, floor 3; the 2 unhealthy old cost no healthy capacity, so
    // of the 3 old above the share all go: 2 unhealthy, then 1 healthy.
    assert_eq!((m.retire_old_unhealthy, m.retire_old_healthy), (2, 1));
    // A floor that leaves no spare still lets the unhealthy ones go.
    let m = converge(&targets(2, 2, 6, 5), &c, &FREE, &Phase::Rolling);
    assert_eq!((m.retire_old_unhealthy, m.retire_old_healthy), (2, 0));
    // max_retire_per_cycle counts both.
    let l = Limits {
        max_retire: 1,
        ..FREE
    };
    let m = converge(&targets(2, 2, 6, 3), &c, &l, &Phase::Rolling);
    assert_eq!((m.retire_old_unhealthy, m.retire_old_healthy), (1, 0));
}

#[test]
fn a_canary_shifts_the_share_its_healthy_instances_serve() {
    let t = targets(1, 9, 11, 10);
    // One healthy canary of 10: 10%.
    let m = converge(&t, &counts(10, 1, 10), &FREE, &Phase::Rolling);
    assert_eq!(m.canary_share, CanaryShare::Set(10));
    // Not healthy yet: 0%.
    let c = Counts {
        new_healthy: 0,
        ..counts(10, 1, 10)
    };
    assert_eq!(
        converge(&t, &c, &FREE, &Phase::Rolling).canary_share,
        CanaryShare::Set(0)
    );
    // More healthy than the step wants: the step's share, not more.
    assert_eq!(
        converge(&t, &counts(10, 3, 10), &FREE, &Phase::Rolling).canary_share,
        CanaryShare::Set(10)
    );
    // Promoting: everything; succeeded: back to the main group.
    let full = targets(10, 0, 10, 10);
    assert_eq!(
        converge(&full, &counts(10, 10, 0), &FREE, &Phase::Promoting).canary_share,
        CanaryShare::Set(100)
    );
    assert_eq!(
        converge(&full, &counts(10, 10, 0), &FREE, &Phase::Succeeded).canary_share,
        CanaryShare::Set(0)
    );
    // Desired 0 never divides by zero.
    assert_eq!(
        converge(
            &targets(0, 0, 0, 0),
            &counts(0, 0, 0),
            &FREE,
            &Phase::Rolling
        )
        .canary_share,
        CanaryShare::Set(0)
    );
}

#[test]
fn rolling_back_restores_the_old_build_before_the_new_one_leaves() {
    let back = Phase::RollingBack {
        reason: "gate".into(),
    };
    // Old build at 2 of 4: 2 old launch; the new ones stay until the old build is whole;
    // the canary keeps its share meanwhile.
    let m = converge(&rolling_back(4, 2, 1), &counts(4, 2, 2), &FREE, &back);
    assert_eq!(shape(&m), (0, 2, 0, 0, 0));
    assert_eq!(m.canary_share, CanaryShare::Keep);
    assert!(!m.blocked_at_cap);
    // Old build whole again: every new instance goes at once, the canary share is 0.
    let m = converge(&rolling_back(4, 2, 1), &counts(4, 2, 4), &FREE, &back);
    assert_eq!(shape(&m), (0, 0, 0, 0, 2));
    assert_eq!(m.canary_share, CanaryShare::Set(0));
    // A scale-in during the rollback (desired 4 -> 3) with an old instance still booting:
    // the booting one is retired, the old build is whole, the new ones go.
    let c = Counts {
        old_healthy: 3,
        ..counts(3, 2, 4)
    };
    let m = converge(&rolling_back(3, 2, 0), &c, &FREE, &back);
    assert_eq!(shape(&m), (0, 0, 1, 0, 2));
    assert_eq!(m.retire_old_unhealthy, 1);
    // Two old instances booting of 4, desired 3: one is retired, and with 2 healthy the
    // old build is not whole: the new ones stay.
    let c = Counts {
        old_healthy: 2,
        ..counts(3, 2, 4)
    };
    let m = converge(&rolling_back(3, 2, 0), &c, &FREE, &back);
    assert_eq!(shape(&m), (0, 0, 1, 0, 0));
    // A rollback never launches the build it leaves.
    assert_eq!(m.launch_new, 0);
}

#[test]
fn rolling_back_at_the_cap_makes_room_idle_new_instances_first_then_within_max_unavailable() {
    let back = Phase::RollingBack {
        reason: "gate".into(),
    };
    // 4 new (2 idle), 0 old, cap full: the idle ones go first, at no cost to capacity.
    let c = Counts {
        new_healthy: 2,
        new_idle: 2,
        new_in_group: 2,
        ..counts(4, 4, 0)
    };
    let m = converge(&rolling_back(4, 4, 1), &c, &capped(0), &back);
    assert!(m.blocked_at_cap);
    assert_eq!(shape(&m), (0, 0, 0, 2, 0));
    // Nothing idle, max_unavailable 1: one serving new instance makes way.
    let m = converge(&rolling_back(4, 4, 1), &counts(4, 4, 0), &capped(0), &back);
    assert_eq!(shape(&m), (0, 0, 0, 0, 1));
    assert!(m.blocked_at_cap && !m.one_at_a_time);
    // max_unavailable 0 and no drain under way: one at a time, or it never ends.
    let m = converge(&rolling_back(4, 4, 0), &counts(4, 4, 0), &capped(0), &back);
    assert_eq!(shape(&m), (0, 0, 0, 0, 1));
    assert!(m.one_at_a_time);
    // ... but not while a drain is under way: its end makes the room.
    let c = Counts {
        retiring: 1,
        ..counts(4, 4, 0)
    };
    let m = converge(&rolling_back(4, 4, 0), &c, &capped(0), &back);
    assert_eq!(shape(&m), (0, 0, 0, 0, 0));
    // Room for 1 of the 4: it launches, and the rollback is still blocked for the rest.
    let m = converge(&rolling_back(4, 4, 1), &counts(4, 4, 0), &capped(1), &back);
    assert_eq!((m.launch_old, m.blocked_at_cap), (1, true));
}

#[test]
fn a_blue_green_old_set_stands_by_once_the_green_set_covers_desired_in_the_group() {
    let t = Targets {
        register_old: false,
        ..targets(4, 4, 8, 4)
    };
    let keeping = Phase::KeepingOld {
        until: chrono::DateTime::<chrono::Utc>::MIN_UTC,
    };
    let c = Counts {
        new_in_group: 3,
        ..counts(4, 4, 4)
    };
    assert!(!converge(&t, &c, &FREE, &keeping).stand_by_old);
    let m = converge(&t, &counts(4, 4, 4), &FREE, &keeping);
    assert!(m.stand_by_old);
    // Kept running while keeping the old set: nothing retires.
    assert_eq!(shape(&m), (0, 0, 0, 0, 0));
    // Live: the old set goes at once, whatever the per-pass limit.
    let done = Targets { old: 0, ..t };
    let l = Limits {
        max_retire: 1,
        ..FREE
    };
    let m = converge(&done, &counts(4, 4, 4), &l, &Phase::Succeeded);
    assert_eq!(m.retire_old(), 4);
}
