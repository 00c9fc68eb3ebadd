//! How a fleet converges to a rollout's [`Targets`] this pass: how many instances of each
//! build to launch and to retire, what share of traffic a canary target group gets, and
//! whether a blue/green old set stands by. A pure function of counts; the executor
//! (`controller::rollout`) picks the instances, calls the cloud, and registers what serves.
//!
//! The limits, in the order they bind:
//! - `Targets::max_total`: the step's surge, over the live (not retiring) instances;
//! - the global cost cap (`max_total_instances`), over every billed instance: the pass's
//!   [`Limits::cap_room`], which every launch takes from;
//! - `max_launch_per_cycle` and `max_retire_per_cycle`, per kind of move;
//! - `Targets::min_healthy`: retirements never take the healthy count below it, except
//!   the one documented exit for a rollback at the cap with nothing allowed out of service
//!   ([`Moves::one_at_a_time`]).

use super::{Phase, Targets};

/// What the controller counted for one rollout this pass. Instances are counted once:
/// live means running or booting and not retiring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// The fleet's desired capacity from its scaling policy this pass.
    pub desired: u32,
    /// Live instances of the new build.
    pub new_live: u32,
    /// Of those, healthy by the instance gates (status checks, target health, smoke).
    pub new_healthy: u32,
    /// Of those, serving no traffic: not healthy in the fleet's target group (not healthy
    /// at all where the fleet has none). Such instances make room first at a cap.
    pub new_idle: u32,
    /// New instances healthy in the fleet's target group (every new one where the fleet
    /// has none): a blue/green old set stands by only once these cover `desired`.
    pub new_in_group: u32,
    /// Live instances of the old build.
    pub old_live: u32,
    /// Of those, running and healthy in the fleet's target group where it has one.
    pub old_healthy: u32,
    /// Instances retired earlier and still draining (billed, serving nothing new).
    pub retiring: u32,
}

/// Per-pass limits from the fleet's manifest and the controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `scaling.max_launch_per_cycle`: most instances of one build launched in a pass.
    pub max_launch: u32,
    /// `scaling.max_retire_per_cycle`: most instances retired in a pass, per kind of move.
    pub max_retire: u32,
    /// Instances that may still be launched under `max_total_instances` this pass (every
    /// booting, serving and draining instance counted); `None` without a global cap.
    pub cap_room: Option<u32>,
}

/// The canary target group's share of traffic (percent), for canaries that shift it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CanaryShare {
    /// Set the listener's weights to this percentage for the canary group.
    Set(u32),
    /// Leave the weights as they are (rolling back, until the old build is whole again).
    Keep,
}

/// The moves for one pass, as counts. Retirements of a kind are picked by the executor
/// (availability-zone balance, then age), old-build unhealthy ones before healthy ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moves {
    /// New-build instances to launch.
    pub launch_new: u32,
    /// Old-build instances to launch (rolling back, or the fleet grew mid-step).
    pub launch_old: u32,
    /// Old-build instances to retire that are not healthy (they serve nothing).
    pub retire_old_unhealthy: u32,
    /// Old-build instances to retire that are healthy, after the unhealthy ones.
    pub retire_old_healthy: u32,
    /// New-build instances that serve nothing, retired to make room for the old build
    /// when a rollback is blocked at the cap.
    pub retire_new_idle: u32,
    /// Further new-build instances to retire, after the idle ones.
    pub retire_new: u32,
    /// Rolling back, the old build cannot come back beside the new one within the caps:
    /// new instances make way, within `max_unavailable`.
    pub blocked_at_cap: bool,
    /// Rolling back at the cap with nothing allowed out of service and no drain under way:
    /// one new-build instance leaves before its replacement is up, or the rollback would
    /// never end. The fleet is one short while the replacement boots.
    pub one_at_a_time: bool,
    /// Blue/green after the switch, with the green set healthy in the target group for
    /// the whole desired capacity: the old set leaves the target group and stays running.
    pub stand_by_old: bool,
    /// The canary group's share of traffic.
    pub canary_share: CanaryShare,
}

impl Moves {
    /// Old-build instances to retire, of either health.
    pub fn retire_old(&self) -> u32 {
        self.retire_old_unhealthy + self.retire_old_healthy
    }
}

/// The moves that take the fleet towards `t` this pass, from counts `c`, within limits
/// `l`, with the rollout in `phase` after this pass's [`super::advance`].
pub fn converge(t: &Targets, c: &Counts, l: &Limits, phase: &Phase) -> Moves {
    let cap_room = l.cap_room.unwrap_or(u32::MAX);
    // Room to launch: the step's surge over the instances in service, and the global cap.
    let room = t.max_total.saturating_sub(c.new_live + c.old_live);
    let launch_new = if t.restore_first {
        0
    } else {
        t.new
            .saturating_sub(c.new_live)
            .min(room)
            .min(l.max_launch)
            .min(cap_room)
    };
    // Restore the previous build (rolling back, or the fleet grew mid-step).
    let wanted_old = t.old.saturating_sub(c.old_live).min(l.max_launch);
    let launch_old = wanted_old.min(room - launch_new).min(cap_room - launch_new);
    let blocked_at_cap = t.restore_first && launch_old < wanted_old;

    // Retire old-build instances above their share, never below min healthy; once live,
    // whatever is left of the old build (a blue/green standby set) goes at once: it serves
    // nothing, and must not be registered again.
    // Unhealthy old instances go first: they serve nothing, so they cost no healthy
    // capacity; healthy ones only down to the floor.
    let healthy_total = c.old_healthy + c.new_healthy;
    let spare = healthy_total.saturating_sub(t.min_healthy);
    let excess_old = c.old_live.saturating_sub(t.old);
    let old_unhealthy = c.old_live.saturating_sub(c.old_healthy);
    let (retire_old_unhealthy, retire_old_healthy) = if *phase == Phase::Succeeded {
        let unhealthy = excess_old.min(old_unhealthy);
        (unhealthy, excess_old - unhealthy)
    } else {
        let unhealthy = excess_old.min(old_unhealthy).min(l.max_retire);
        let healthy = (excess_old - unhealthy)
            .min(spare)
            .min(l.max_retire - unhealthy);
        (unhealthy, healthy)
    };
    let retire_old = retire_old_unhealthy + retire_old_healthy;

    // Retire new-build instances above theirs; rolling back, only once the old build is
    // whole again, after this pass's own retirements (a scale-in may take healthy old
    // instances away).
    let mut excess_new = c.new_live.saturating_sub(t.new);
    let retire_new_idle = if blocked_at_cap {
        excess_new.min(c.new_idle).min(l.max_retire)
    } else {
        0
    };
    excess_new -= retire_new_idle;
    let restored = c.old_healthy.saturating_sub(retire_old_healthy) >= t.old;
    let may_retire_new = !t.restore_first || restored || blocked_at_cap;
    let mut one_at_a_time = false;
    let retire_new = if excess_new > 0 && may_retire_new {
        let spare_left = if t.restore_first && restored {
            u32::MAX
        } else if blocked_at_cap
            && launch_old == 0
            && t.min_healthy >= c.desired
            && healthy_total >= t.min_healthy
            && retire_old == 0
            && retire_new_idle == 0
            && c.retiring == 0
        {
            one_at_a_time = true;
            1
        } else {
            spare.saturating_sub(retire_old_healthy)
        };
        excess_new.min(l.max_retire).min(spare_left)
    } else {
        0
    };

    let canary_share = match phase {
        Phase::Rolling => {
            let serving = c.new_healthy.min(t.new);
            CanaryShare::Set((serving * 100).checked_div(c.desired).unwrap_or(0).min(100))
        }
        Phase::Promoting => CanaryShare::Set(100),
        // Rolling back: the new build keeps its share until the old one is whole again
        // in the main group.
        Phase::RollingBack { .. } if c.old_healthy < c.desired => CanaryShare::Keep,
        _ => CanaryShare::Set(0),
    };

    Moves {
        launch_new,
        launch_old,
        retire_old_unhealthy,
        retire_old_healthy,
        retire_new_idle,
        retire_new,
        blocked_at_cap,
        one_at_a_time: one_at_a_time && retire_new > 0,
        stand_by_old: !t.register_old && c.new_in_group >= c.desired,
        canary_share,
    }
}

#[cfg(test)]
mod tests;
