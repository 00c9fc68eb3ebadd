//! The rollout state machine: one pass of a rollout, as a pure function of its state and
//! what the controller observed ([`advance`]).

use super::{
    bake, max_unavailable, shifts_traffic, step_target, Gates, Kind, Observed, Phase, Rollout,
    Targets,
};
use crate::manifest::StrategySpec;

/// Whether restoring (a rollback, or a deploy rolling back) has just run past its deadline,
/// `timeout` after `step_started`: true once, and `overdue` remembers it. The deadline is
/// reported (CI, `status`, notifications), not acted on: restoring goes on, since stopping
/// would leave the build being left serving.
fn newly_overdue(
    overdue: &mut bool,
    step_started: chrono::DateTime<chrono::Utc>,
    o: &Observed,
    timeout: chrono::Duration,
) -> bool {
    let late = !*overdue && o.now - step_started > timeout;
    *overdue |= late;
    late
}

/// Advance a rollout by one pass. Returns the new state, progress lines for the log and
/// the CLI, and the targets to converge to.
pub fn advance(r: &Rollout, o: &Observed) -> (Rollout, Vec<String>, Targets) {
    let mut r = r.clone();
    let mut events = Vec::new();
    let d = o.desired;
    let strategy = r.deploy.strategy.clone();
    let gates = &r.deploy.gates;

    let phase_before = r.phase.clone();
    // Requests from outside come first (a rollback takes none: see below).
    if r.kind == Kind::Deploy
        && matches!(
            r.phase,
            Phase::Rolling | Phase::KeepingOld { .. } | Phase::Promoting
        )
    {
        if let Some(why) = r.abort.take() {
            events.push(format!(
                "aborting: {why}; restoring {} to full capacity",
                r.from.id
            ));
            r.phase = Phase::RollingBack { reason: why };
        } else if r.deadline.is_some_and(|t| o.now >= t) {
            let why = "deploy --timeout reached".to_string();
            events.push(format!("{why}; rolling back to {}", r.from.id));
            r.timed_out = true;
            r.phase = Phase::RollingBack { reason: why };
        }
    }

    let targets = match r.phase.clone() {
        Phase::Rolling if r.kind == Kind::Rollback => {
            // Never turned back: an abort, a deadline or a red gate is reported only.
            if let Some(why) = r.abort.take() {
                events.push(format!(
                    "{why}: ignored, a rollback is not rolled back (deploy another build instead)"
                ));
            }
            if let Gates::Fail(why) = &o.gates {
                if r.note.as_deref() != Some(why.as_str()) {
                    events.push(format!(
                        "gate red during the rollback (reported, not acted on: a rollback never returns to {}): {why}",
                        r.from.id
                    ));
                    r.note = Some(why.clone());
                }
            }
            let complete = o.new_healthy >= d && o.old_live == 0;
            if complete {
                events.push(format!("rolled back: {d} of {d} on {}", r.to.id));
                r.phase = Phase::Succeeded;
            } else if newly_overdue(&mut r.overdue, r.step_started, o, gates.timeout.chrono()) {
                events.push(format!(
                    "rollback still restoring after {}: {} of {d} on {} healthy, {} of {} left; it goes on",
                    gates.timeout, o.new_healthy, r.to.id, o.old_live, r.from.id
                ));
            }
            Targets {
                new: d,
                // Each healthy instance of the build restored replaces one of the other.
                old: d.saturating_sub(o.new_healthy),
                max_total: 2 * d,
                min_healthy: d.saturating_sub(max_unavailable(&strategy, d)),
                register_new: true,
                register_old: true,
                restore_first: false,
            }
        }
        Phase::Rolling => {
            let (want, steps) = step_target(&strategy, r.step, d);
            let blue_green = matches!(strategy, StrategySpec::BlueGreen(_));
            let old_want = if blue_green { d } else { d - want.min(d) };
            // With instance weights the old build's units go down an instance at a time:
            // a step before the last is done within one instance of its share.
            let slack = if old_want > 0 { o.unit_slack } else { 0 };
            let complete = o.new_healthy >= want && (blue_green || o.old_live <= old_want + slack);
            let mut next_phase = None;
            match &o.gates {
                Gates::Fail(why) => {
                    let why = format!("step {}/{steps}: gate failed: {why}", r.step + 1);
                    events.push(format!("{why}; rolling back to {}", r.from.id));
                    next_phase = Some(Phase::RollingBack { reason: why });
                }
                Gates::Pass(detail) if complete => {
                    let since = *r.green_since.get_or_insert_with(|| {
                        events.push(format!(
                            "step {}/{steps}: {want} of {d} on {}; gates green ({detail})",
                            r.step + 1,
                            r.to.id
                        ));
                        o.now
                    });
                    if o.now - since >= bake(&strategy) {
                        if blue_green {
                            let keep = match &strategy {
                                StrategySpec::BlueGreen(b) => b.keep_old.chrono(),
                                _ => chrono::Duration::zero(),
                            };
                            events.push(format!(
                                "switched traffic to {} ({d} instances); keeping {} until {}",
                                r.to.id,
                                r.from.id,
                                (o.now + keep).format("%H:%M:%S")
                            ));
                            next_phase = Some(Phase::KeepingOld {
                                until: o.now + keep,
                            });
                        } else if r.step + 1 >= steps && shifts_traffic(&strategy) {
                            events.push(format!(
                                "all traffic on {}; moving it back to the fleet's target group",
                                r.to.id
                            ));
                            r.step_started = o.now;
                            next_phase = Some(Phase::Promoting);
                        } else if r.step + 1 >= steps {
                            events.push(format!("live: {d} of {d} on {}", r.to.id));
                            next_phase = Some(Phase::Succeeded);
                        } else {
                            r.step += 1;
                            r.step_started = o.now;
                            r.green_since = None;
                        }
                    }
                }
                other => {
                    r.green_since = None;
                    if o.now - r.step_started > gates.timeout.chrono() {
                        let waiting = match other {
                            Gates::Waiting(w) => w.clone(),
                            _ => format!(
                                "{} of {want} new instances healthy, {} old left",
                                o.new_healthy, o.old_live
                            ),
                        };
                        let why = format!(
                            "step {}/{steps} timed out after {}: {waiting}",
                            r.step + 1,
                            gates.timeout
                        );
                        events.push(format!("{why}; rolling back to {}", r.from.id));
                        next_phase = Some(Phase::RollingBack { reason: why });
                    }
                }
            }
            if let Some(p) = next_phase {
                r.phase = p;
            }
            let surge = match &strategy {
                StrategySpec::Rolling(x) => x.max_surge.of(d),
                StrategySpec::Canary(_) => want,
                StrategySpec::BlueGreen(_) => d,
            };
            // After a switch the targets below are recomputed next pass. With instance
            // weights the fleet may already stand above `d` by less than an instance
            // (`unit_slack`): that is not surge, or a fleet at such a size with a surge
            // smaller than an instance could never launch its first new one.
            Targets {
                new: want,
                old: old_want,
                max_total: d + surge + o.unit_slack,
                min_healthy: d.saturating_sub(max_unavailable(&strategy, d)),
                register_new: !blue_green,
                register_old: true,
                restore_first: false,
            }
        }
        Phase::KeepingOld { until } => {
            // Traffic is on the new set now: its fleet gates decide. It goes live at the
            // end of the window only with them green; missing data is not a pass.
            match &o.gates {
                Gates::Fail(why) => {
                    let why = format!("after the switch: gate failed: {why}");
                    events.push(format!("{why}; switching back to {}", r.from.id));
                    r.phase = Phase::RollingBack { reason: why };
                }
                Gates::Pass(detail) if o.now >= until && o.new_healthy >= d => {
                    events.push(format!(
                        "live: {d} of {d} on {} ({detail}); retiring {}",
                        r.to.id, r.from.id
                    ));
                    r.phase = Phase::Succeeded;
                }
                // Not live within the timeout after the window: gates still waiting, or
                // green but the new set short of the fleet (it grew after the switch and
                // the caps leave no room beside the old set). A rollout must end.
                _ if o.now >= until + gates.timeout.chrono() => {
                    let w = match &o.gates {
                        Gates::Waiting(w) => w.clone(),
                        _ => format!(
                            "{} of {d} new instances healthy (the fleet grew after the switch)",
                            o.new_healthy
                        ),
                    };
                    let why = format!("after the switch: not live within {}: {w}", gates.timeout);
                    events.push(format!("{why}; switching back to {}", r.from.id));
                    r.phase = Phase::RollingBack { reason: why };
                }
                _ => {}
            }
            Targets {
                new: d,
                old: if r.phase == Phase::Succeeded { 0 } else { d },
                max_total: 2 * d,
                min_healthy: d,
                register_new: true,
                register_old: false,
                restore_first: false,
            }
        }
        Phase::Promoting => {
            match &o.gates {
                Gates::Pass(_) => {
                    events.push(format!("live: {d} of {d} on {}", r.to.id));
                    r.phase = Phase::Succeeded;
                }
                Gates::Fail(why) => {
                    let why = format!("moving traffic back: {why}");
                    events.push(format!("{why}; rolling back to {}", r.from.id));
                    r.phase = Phase::RollingBack { reason: why };
                }
                Gates::Waiting(w) if o.now - r.step_started > gates.timeout.chrono() => {
                    let why = format!("moving traffic back timed out: {w}");
                    events.push(format!("{why}; rolling back to {}", r.from.id));
                    r.phase = Phase::RollingBack { reason: why };
                }
                Gates::Waiting(_) => {}
            }
            Targets {
                new: d,
                old: 0,
                max_total: d,
                min_healthy: d,
                register_new: true,
                register_old: true,
                restore_first: false,
            }
        }
        Phase::RollingBack { reason } => {
            if o.new_live == 0 && o.old_healthy >= d {
                events.push(format!(
                    "rolled back: {d} of {d} on {} ({reason})",
                    r.from.id
                ));
                r.phase = Phase::RolledBack { reason };
            } else if newly_overdue(&mut r.overdue, r.step_started, o, gates.timeout.chrono()) {
                events.push(format!(
                    "rolling back overdue: still restoring after {}: {} of {d} on {} healthy, {} of {} left; it goes on",
                    gates.timeout, o.old_healthy, r.from.id, o.new_live, r.to.id
                ));
            }
            Targets {
                new: 0,
                old: d,
                max_total: d + o.new_live + d,
                // At a cap, new instances make way for old ones within max_unavailable.
                min_healthy: d.saturating_sub(max_unavailable(&strategy, d)),
                register_new: false,
                register_old: true,
                restore_first: true,
            }
        }
        // Not started, hooks running, or rolled back: the fleet is all on the build it had.
        Phase::Queued | Phase::PreDeploy | Phase::RolledBack { .. } => Targets {
            new: 0,
            old: d,
            max_total: d,
            min_healthy: d,
            register_new: false,
            register_old: true,
            restore_first: false,
        },
        Phase::Succeeded => Targets {
            new: d,
            old: 0,
            max_total: d,
            min_healthy: d,
            register_new: true,
            register_old: false,
            restore_first: false,
        },
    };
    if matches!(r.phase, Phase::RollingBack { .. })
        && !matches!(phase_before, Phase::RollingBack { .. })
    {
        // The rolling-back phase's deadline counts from here.
        r.step_started = o.now;
        r.overdue = false;
    }
    // A phase that changed this pass acts at once: a failed gate must not launch the
    // next batch first.
    let targets = if r.phase != phase_before && !matches!(r.phase, Phase::Rolling) {
        // Targets only: a further transition (straight to rolled back, say) waits for
        // the next pass, which observes again.
        let (_, _, t) = advance(
            &r,
            &Observed {
                gates: Gates::Waiting(String::new()),
                ..o.clone()
            },
        );
        t
    } else {
        targets
    };
    (r, events, targets)
}
