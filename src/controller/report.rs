//! What a pass did, as the daemon, the API, telemetry and notifications read it.

use super::RepairReport;
use crate::policy::Decision;

/// Something the controller did (or, in dry-run, would have done).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    Launch {
        fleet: String,
        ids: Vec<String>,
        instance_type: Option<String>,
        subnet: Option<String>,
    },
    SetDesired {
        fleet: String,
        group: String,
        from: u32,
        to: u32,
    },
    MarkRetiring {
        fleet: String,
        ids: Vec<String>,
    },
    Deregister {
        fleet: String,
        ids: Vec<String>,
    },
    Register {
        fleet: String,
        ids: Vec<String>,
    },
    Terminate {
        fleet: String,
        ids: Vec<String>,
        reason: String,
    },
    /// EC2 gave notice about an instance (the interruption queue): a Spot interruption
    /// warning (it is retired at once), or a rebalance recommendation or scheduled event
    /// (its replacement launches first).
    Notice {
        fleet: String,
        id: String,
        notice: String,
    },
}

/// A fleet's part of a pass: the decision and the metric values it was made from. Counts
/// are capacity units: instances, or with `weighted_capacity` in the launch spec, the sum
/// of their weights.
#[derive(Debug, Clone)]
pub struct FleetReport {
    pub decision: Decision,
    /// (metric name, newest value) per metric policy.
    pub metrics: Vec<(String, Option<f64>)>,
    /// Instances not warm yet (booting or within `warmup`), as `plan` shows them; see
    /// also [`FleetReport::not_serving`].
    pub booting: u32,
    pub retiring: u32,
    /// Live instances of every build, not retiring (the policy's `current` is the
    /// desired capacity it set last while a rollout runs; this is what runs).
    pub live: u32,
    /// Instances serving traffic, old build and new: running, not retiring, and (with a
    /// target group) registered; for a group, its in-service instances.
    pub serving: u32,
    /// Instances the fleet has been short of its decision for more than
    /// [`SHORTFALL_PASSES`] passes in a row (0: none, or not for long).
    pub shortfall: u32,
    /// Of `live`, the units bought on Spot (the rest are On-Demand).
    pub spot: u32,
    /// The instances behind `live` (equal to it without instance weights).
    pub instances: u32,
    /// Instances billed: booting, serving, draining and being replaced, every build (what
    /// `max_total_instances` counts); for a group, its desired capacity or its instances,
    /// whichever is more.
    pub billed: u32,
}

impl FleetReport {
    /// Live instances not serving yet (booting, warming up, before their smoke test):
    /// with [`FleetReport::serving`], every live instance once.
    pub fn not_serving(&self) -> u32 {
        self.live.saturating_sub(self.serving)
    }
}

/// Passes a fleet may stay below its decision before it counts as short: the pass that
/// decides launches, the next may still not list the new instances (DescribeInstances is
/// eventually consistent), and one more for luck.
pub const SHORTFALL_PASSES: u32 = 2;

/// A running rollout's state and gate verdict in a pass.
#[derive(Debug, Clone)]
pub struct RolloutReport {
    pub id: i64,
    pub fleet: String,
    pub from: String,
    pub to: String,
    pub phase: String,
    pub step: usize,
    pub gates: crate::deploy::Gates,
}

#[derive(Debug, Clone, Default)]
pub struct PassReport {
    pub fleets: Vec<FleetReport>,
    pub actions: Vec<Action>,
    pub rollouts: Vec<RolloutReport>,
    pub errors: Vec<String>,
    /// AWS asked us to slow down during this pass.
    pub throttled: bool,
    /// Each directly launched fleet whose health repair checked this pass (repair.rs).
    pub repairs: Vec<RepairReport>,
    /// When the pass wants the next one, if sooner than the poll interval (like
    /// kube-runtime's `Action::requeue`): the shortest gate interval of the rollouts it
    /// runs. `None`: at the poll interval.
    pub requeue_after: Option<std::time::Duration>,
}
