//! The `scaling.repair` section: when an instance of a fleet coxswain launches itself is
//! replaced for failing its health checks or for its age, and when replacing stops. The
//! behaviour lives in `controller/repair.rs`; this file holds only the schema and its
//! defaults.

use super::{Fraction, HumanDuration};
use serde::{Deserialize, Serialize};

/// Replacing bad and expired instances outside rollouts (fleets coxswain launches itself;
/// an Auto Scaling group does its own health checks and ignores this section).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RepairSpec {
    /// On by default: every directly launched fleet is checked (EC2 status checks, and
    /// target-group health when the fleet has a target group).
    #[serde(default = "on")]
    pub enabled: bool,
    /// How long an instance must be seen unhealthy without a break before it is replaced,
    /// counted from the first pass that saw it so (never before its `scaling.warmup` has
    /// passed). 300 s, like an Auto Scaling group's default health check grace period:
    /// long enough for a target group to mark a restarting process healthy again.
    #[serde(default = "default_unhealthy_grace")]
    pub unhealthy_grace: HumanDuration,
    /// Repair halts (and alerts) while more than this share of the fleet is unhealthy at
    /// once, rounded down but never below one instance: so many failing together point at
    /// a common cause (a bad build, a dependency down) that new instances would share.
    #[serde(default = "default_max_unhealthy_share")]
    pub max_unhealthy_share: Fraction,
    /// Replace instances older than this (launch first), a tenth of the fleet at a time.
    /// Off by default. At least one day, as for an Auto Scaling group's
    /// MaxInstanceLifetime (86,400 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_instance_lifetime: Option<HumanDuration>,
}

impl Default for RepairSpec {
    fn default() -> Self {
        RepairSpec {
            enabled: on(),
            unhealthy_grace: default_unhealthy_grace(),
            max_unhealthy_share: default_max_unhealthy_share(),
            max_instance_lifetime: None,
        }
    }
}

/// The shortest `max_instance_lifetime`: an Auto Scaling group accepts no less than a day.
pub const MIN_INSTANCE_LIFETIME: HumanDuration = HumanDuration::secs(86_400);

fn on() -> bool {
    true
}

fn default_unhealthy_grace() -> HumanDuration {
    HumanDuration::secs(300)
}

/// A third, and a little: in a fleet of three one bad instance is replaced, two are not.
fn default_max_unhealthy_share() -> Fraction {
    Fraction(0.34)
}
