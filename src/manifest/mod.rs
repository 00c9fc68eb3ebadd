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
    #[serde(default)]
    pub instance_types: Vec<String>,
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
