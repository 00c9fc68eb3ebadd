//! Fleet manifests: the YAML that says what fleets exist and how they scale.
//!
//! This module owns the schema (every struct rejects unknown fields), loading from files
//! and directories, and validation that reports `file:line:column` with a sentence on how
//! to fix it. It does not decide anything: policies read the parsed spec.

mod controller;
pub mod cron;
mod deploy;
mod duration;
pub mod load;
mod locate;
mod market;
mod repair;
mod scaling;
mod simulation;
mod validate;

pub use controller::*;
pub use cron::{CronError, CronSchedule};
pub use deploy::*;
pub use duration::{parse_duration, HumanDuration};
pub use load::{load_paths, load_str, Config, ManifestError, Problem};
pub use market::*;
pub use repair::{RepairSpec, MIN_INSTANCE_LIFETIME};
pub use scaling::*;
pub use simulation::*;
pub use validate::webhook_url_problem;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One fleet: a document with `kind: Fleet` (or no `kind`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FleetSpec {
    #[serde(default)]
    pub kind: Option<String>,
    pub name: String,
    /// The application this fleet runs; builds are promoted per app across environments
    /// (a build must pass the `web` fleet in staging before the `web` one in production).
    /// Defaults to the fleet name.
    #[serde(default)]
    pub app: Option<String>,
    pub environment: String,
    pub region: String,
    /// Required unless the fleet is backed by an Auto Scaling group.
    #[serde(default)]
    pub launch: LaunchSpec,
    /// Delegate instances to this existing Auto Scaling group: coxswain sets its desired
    /// capacity instead of launching instances itself.
    #[serde(default)]
    pub auto_scaling_group: Option<String>,
    /// ALB target group that new instances are registered with and drained from.
    #[serde(default)]
    pub target_group_arn: Option<String>,
    pub capacity: CapacitySpec,
    #[serde(default)]
    pub scaling: ScalingSpec,
    /// How builds roll out to this fleet (`coxswain deploy`).
    #[serde(default)]
    pub deploy: DeploySpec,
    /// Only for `--cloud sim`: how the simulated region serves this fleet.
    #[serde(default)]
    pub simulation: Option<SimulationSpec>,
}

impl FleetSpec {
    /// Whether the fleet's `launch.instances_distribution` can put any of its capacity, up
    /// to `capacity.max`, on Spot (a base at the maximum leaves nothing for it).
    pub fn may_use_spot(&self) -> bool {
        self.launch.instances_distribution.as_ref().is_some_and(|d| {
            d.uses_spot()
                && !matches!(d.on_demand_base_capacity, OnDemandBase::Units(n) if n >= self.capacity.max)
        })
    }

    /// Things that are valid but probably not what the author meant, as sentences for
    /// `validate` to print (they refuse nothing).
    pub fn notes(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.auto_scaling_group.is_some() && !self.launch.instance_types.is_empty() {
            out.push("launch.instance_types is not used for a fleet backed by an Auto Scaling group: the group's launch template and mixed instances policy choose the types".into());
        }
        if let Some(d) = &self.launch.instances_distribution {
            if !d.uses_spot()
                && d.spot_allocation_strategy != crate::manifest::SpotAllocationStrategy::default()
            {
                out.push(format!(
                    "spot_allocation_strategy {} is set, but on_demand_percentage_above_base_capacity is 100: no capacity goes to Spot",
                    d.spot_allocation_strategy.as_aws()
                ));
            }
            if let OnDemandBase::Units(n) = d.on_demand_base_capacity {
                if d.uses_spot() && n >= self.capacity.max {
                    out.push(format!(
                        "on_demand_base_capacity {n} is at or above capacity.max {}: every instance is On-Demand and on_demand_percentage_above_base_capacity {} never applies",
                        self.capacity.max, d.on_demand_percentage_above_base_capacity
                    ));
                }
            }
        }
        if let Some(prices) = self.simulation.as_ref().and_then(|s| s.prices.as_ref()) {
            let missing: Vec<String> = self
                .launch
                .type_names()
                .into_iter()
                .filter(|t| !prices.contains_key(t))
                .collect();
            if !missing.is_empty() {
                out.push(format!(
                    "simulation.prices has no price for {}: simulate leaves its Spot pools out{}",
                    missing.join(", "),
                    if self.launch.type_names().first() == missing.first() {
                        " and refuses to price the fleet (its first type is the On-Demand one)"
                    } else {
                        ""
                    }
                ));
            }
        }
        let w = self.launch.max_weight();
        if w > 1 && self.capacity.max < w {
            out.push(format!(
                "one instance of the heaviest type ({w} units) is more than capacity.max {}: a fleet holding one stands above its maximum",
                self.capacity.max
            ));
        } else if w > 1 && self.capacity.max < 2 * w {
            out.push(format!(
                "capacity.max {} is less than twice the largest weighted_capacity ({w}): an instance of that type is most of the fleet; AWS advises a desired capacity of at least two to three times the largest weight",
                self.capacity.max
            ));
        }
        out
    }

    pub fn app(&self) -> &str {
        self.app.as_deref().unwrap_or(&self.name)
    }

    /// The build label new instances get: the launch-template version or the AMI.
    pub fn build(&self) -> String {
        match (&self.launch.launch_template, &self.launch.ami) {
            (Some(lt), _) => format!(
                "{}:{}",
                lt.id
                    .as_deref()
                    .or(lt.name.as_deref())
                    .unwrap_or("template"),
                lt.version
            ),
            (None, Some(ami)) => ami.clone(),
            (None, None) => "unknown".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LaunchSpec {
    #[serde(default)]
    pub launch_template: Option<LaunchTemplateRef>,
    #[serde(default)]
    pub ami: Option<String>,
    /// In order of preference: on InsufficientInstanceCapacity the next one is tried.
    /// Each is a type name, or `{ instance_type, weighted_capacity }` to count capacity in
    /// units (see [`InstanceTypeSpec`]).
    #[serde(default)]
    pub instance_types: Vec<InstanceTypeSpec>,
    /// On-Demand and Spot (the Auto Scaling group's instances distribution). Without it,
    /// every instance is On-Demand.
    #[serde(default)]
    pub instances_distribution: Option<InstancesDistribution>,
    /// Subnets (one per AZ), in order of preference; launches are spread across them.
    #[serde(default)]
    pub subnets: Vec<String>,
    #[serde(default)]
    pub security_groups: Vec<String>,
    #[serde(default)]
    pub key_name: Option<String>,
    /// Extra tags for instances (the coxswain:* tags are added by coxswain).
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

impl LaunchSpec {
    /// The instance type names, in order of preference.
    pub fn type_names(&self) -> Vec<String> {
        self.instance_types
            .iter()
            .map(|t| t.instance_type.clone())
            .collect()
    }

    /// Capacity units an instance of `instance_type` counts for: its `weighted_capacity`,
    /// or 1 (a type without a weight, or not in the list: the launch template's own, one
    /// removed since it was launched). Never 0, even for a manifest validation refuses.
    pub fn weight_of(&self, instance_type: &str) -> u32 {
        self.instance_types
            .iter()
            .find(|t| t.instance_type == instance_type)
            .and_then(|t| t.weighted_capacity)
            .unwrap_or(1)
            .max(1)
    }

    /// Whether capacity is counted in weighted units rather than instances.
    pub fn weighted(&self) -> bool {
        self.instance_types
            .iter()
            .any(|t| t.weighted_capacity.is_some_and(|w| w != 1))
    }

    /// The smallest weight (1 without weights): the global cap's room of N instances
    /// holds at least N times this many units, whatever type EC2 chooses.
    pub fn min_weight(&self) -> u32 {
        self.instance_types
            .iter()
            .filter_map(|t| t.weighted_capacity)
            .min()
            .unwrap_or(1)
            .max(1)
    }

    /// The largest weight: how far a launch may overshoot the capacity it fills.
    pub fn max_weight(&self) -> u32 {
        self.instance_types
            .iter()
            .filter_map(|t| t.weighted_capacity)
            .max()
            .unwrap_or(1)
            .max(1)
    }
}

/// One entry of `launch.instance_types`: an instance type and, optionally, how many
/// capacity units an instance of it counts for (`weighted_capacity`, as the Auto Scaling
/// group's `LaunchTemplateOverrides.WeightedCapacity` and EC2 Fleet's override of that
/// name: 1 to 999). With weights, a fleet's `capacity`, desired capacity, On-Demand base
/// and `simulation.capacity_per_instance` are in units, and a launch fills the capacity
/// it was asked for even if the last instance overshoots it (by less than its weight),
/// as an Auto Scaling group does
/// (<https://docs.aws.amazon.com/autoscaling/ec2/userguide/asg-instance-weighting.html>).
/// Written as a plain string (`m6i.large`) or a map
/// (`{ instance_type: m6i.xlarge, weighted_capacity: 2 }`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceTypeSpec {
    pub instance_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weighted_capacity: Option<u32>,
}

impl InstanceTypeSpec {
    /// A type without a weight.
    pub fn named(instance_type: impl Into<String>) -> Self {
        InstanceTypeSpec {
            instance_type: instance_type.into(),
            weighted_capacity: None,
        }
    }
}

impl<'de> Deserialize<'de> for InstanceTypeSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Weighted {
            instance_type: String,
            #[serde(default)]
            weighted_capacity: Option<u32>,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Name(String),
            Weighted(Weighted),
        }
        match Either::deserialize(d) {
            Ok(Either::Name(n)) => Ok(InstanceTypeSpec::named(n)),
            Ok(Either::Weighted(w)) => Ok(InstanceTypeSpec {
                instance_type: w.instance_type,
                weighted_capacity: w.weighted_capacity,
            }),
            Err(_) => Err(serde::de::Error::custom(
                "an instance type is a name (m6i.large) or { instance_type: m6i.xlarge, weighted_capacity: 2 } (a whole number of units, 1 to 999)",
            )),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LaunchTemplateRef {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    /// A version number, `$Latest` or `$Default`.
    #[serde(default = "default_lt_version")]
    pub version: String,
}

fn default_lt_version() -> String {
    "$Default".into()
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CapacitySpec {
    pub min: u32,
    pub max: u32,
}
