//! Deploys: what a build is, and the rollout state machine as a pure function.
//!
//! A rollout never fixes instance counts. Each pass it answers "what share of the fleet's
//! desired capacity, as the scaling policy decides it *now*, should run the new build?",
//! so scaling and deploying never fight. The controller then reconciles instances per
//! build towards those targets, within surge and minimum-healthy limits.
//!
//! This module decides; it does not call any cloud (see `controller::rollout`).

pub mod admit;
mod advance;
pub mod converge;
pub mod gates;
pub mod process;
pub mod stats;

use crate::manifest::{Amount, DeploySpec, FleetSpec, StrategySpec};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use advance::advance;

/// A build: an AMI, or a launch-template version, with an optional human label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Build {
    /// The value of the `coxswain:build` tag: `ami-…` or `TEMPLATE:VERSION`.
    pub id: String,
    pub image: Option<String>,
    pub template_version: Option<String>,
    pub label: Option<String>,
}

impl Build {
    /// The build a fleet's manifest names.
    pub fn from_manifest(spec: &FleetSpec) -> Build {
        Build {
            id: spec.build(),
            image: spec.launch.ami.clone(),
            template_version: spec
                .launch
                .launch_template
                .as_ref()
                .map(|l| l.version.clone()),
            label: None,
        }
    }

    /// The build of an instance tag or a ledger entry, for a fleet.
    pub fn from_id(spec: &FleetSpec, id: &str) -> Build {
        let mut b = Build {
            id: id.to_string(),
            image: None,
            template_version: None,
            label: None,
        };
        if spec.launch.launch_template.is_some() {
            b.template_version = id.rsplit_once(':').map(|(_, v)| v.to_string());
        } else {
            b.image = Some(id.to_string());
        }
        b
    }

    /// Parse `--build` for a fleet: an AMI id for AMI fleets; a version number (or
    /// `TEMPLATE:VERSION`) for launch-template fleets.
    pub fn parse(spec: &FleetSpec, arg: &str, label: Option<String>) -> Result<Build, String> {
        let arg = arg.trim();
        if spec.auto_scaling_group.is_some() {
            return Err(format!(
                "fleet {} is backed by an Auto Scaling group; deploy by changing the group's launch template (instance refresh) — coxswain deploys only to fleets it launches",
                spec.name
            ));
        }
        if let Some(lt) = &spec.launch.launch_template {
            let name = lt
                .id
                .as_deref()
                .or(lt.name.as_deref())
                .unwrap_or("template");
            let version = arg.strip_prefix(&format!("{name}:")).unwrap_or(arg);
            if version.parse::<u64>().is_err() {
                return Err(format!(
                    "fleet {} launches from launch template {name}: --build is a template version number (e.g. 13), not '{arg}'",
                    spec.name
                ));
            }
            return Ok(Build {
                id: format!("{name}:{version}"),
                image: None,
                template_version: Some(version.to_string()),
                label,
            });
        }
        if !arg.starts_with("ami-") || arg.len() < 8 {
            return Err(format!(
                "fleet {} launches from an AMI: --build is an AMI id (ami-…), not '{arg}'",
                spec.name
            ));
        }
        Ok(Build {
            id: arg.to_string(),
            image: Some(arg.to_string()),
            template_version: None,
            label,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    /// Waiting for another rollout of the fleet to finish (or to be superseded).
    Queued,
    /// Running the pre-deploy hooks; no instance has changed yet.
    PreDeploy,
    /// Moving instances to the new build, step by step.
    Rolling,
    /// Blue/green: traffic is on the new set; the old one waits, deregistered, until `until`.
    KeepingOld {
        until: DateTime<Utc>,
    },
    /// Canary with traffic shifting, every step done: the new instances join the fleet's
    /// own target group; once healthy there, the listener forwards everything to it.
    Promoting,
    /// Restoring the previous build to full capacity, then retiring the new instances.
    RollingBack {
        reason: String,
    },
    Succeeded,
    RolledBack {
        reason: String,
    },
}

impl Phase {
    /// The phase's one stable name, as the API, `status`, the dashboard, metrics labels
    /// and notifications show it (no reason text: that is a separate field).
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Queued => "queued",
            Phase::PreDeploy => "pre_deploy",
            Phase::Rolling => "rolling",
            Phase::KeepingOld { .. } => "keeping_old",
            Phase::Promoting => "promoting",
            Phase::RollingBack { .. } => "rolling_back",
            Phase::Succeeded => "succeeded",
            Phase::RolledBack { .. } => "rolled_back",
        }
    }

    pub fn is_finished(&self) -> bool {
        matches!(self, Phase::Succeeded | Phase::RolledBack { .. })
    }
}

/// What a rollout is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A build going out, step by step, behind its gates.
    #[default]
    Deploy,
    /// The emergency path back to a build that was live in the environment before: the
    /// whole fleet at once (no steps, no bake), within the caps; gates are reported but
    /// never turn it back to the build it leaves. Its strategy is a single rolling step
    /// (see [`rollback_strategy`]).
    Rollback,
}

/// The strategy of a rollback of a fleet whose deploy strategy is `s`: one step of the
/// whole fleet, surge 100% (the caps still bound it), the fleet's own `max_unavailable`
/// (so at a cap it replaces in place as a deploy would), no bake.
pub fn rollback_strategy(s: &StrategySpec) -> StrategySpec {
    let max_unavailable = match s {
        StrategySpec::Rolling(r) => r.max_unavailable,
        _ => Amount::Count(0),
    };
    StrategySpec::Rolling(crate::manifest::RollingSpec {
        batch: Amount::Percent(100.0),
        max_surge: Amount::Percent(100.0),
        max_unavailable,
        bake: crate::manifest::HumanDuration::secs(0),
    })
}

/// A rollout, as stored (JSON) and advanced each pass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    pub id: i64,
    pub fleet: String,
    pub app: String,
    pub env: String,
    pub from: Build,
    pub to: Build,
    /// The fleet's deploy settings when the rollout was requested.
    pub deploy: DeploySpec,
    pub phase: Phase,
    /// 0-based step of the strategy.
    pub step: usize,
    pub step_started: DateTime<Utc>,
    /// Since when this step has been complete with every gate green (for the bake time).
    pub green_since: Option<DateTime<Utc>>,
    pub started: DateTime<Utc>,
    /// Abort and roll back if still running then (`deploy --timeout`).
    pub deadline: Option<DateTime<Utc>>,
    /// A rollback asked for by hand or by a superseding request.
    pub abort: Option<String>,
    /// Whether the rollout was aborted because its deadline passed (exit code 3).
    #[serde(default)]
    pub timed_out: bool,
    #[serde(default)]
    pub kind: Kind,
    /// A rollback: the last red gate reported (each new verdict is reported once).
    #[serde(default)]
    pub note: Option<String>,
    /// A rollback: still restoring after `gates.timeout` (reported once; it goes on).
    #[serde(default)]
    pub overdue: bool,
    /// Not a rollout that ran: the ledger's record that a rollback left this build (so it
    /// no longer counts as passed in the environment). Not counted as a rollout.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ledger_only: bool,
}

/// What the controller should converge to this pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Targets {
    pub new: u32,
    pub old: u32,
    /// Most live instances (both builds) while the step runs.
    pub max_total: u32,
    /// Fewest healthy instances (both builds) at any moment.
    pub min_healthy: u32,
    /// New instances get registered with the target group (blue/green waits for the switch).
    pub register_new: bool,
    /// Old instances stay registered (blue/green deregisters them at the switch).
    pub register_old: bool,
    /// Rolling back: new instances may only go once the old build is healthy at `old`.
    pub restore_first: bool,
}

/// What the controller saw this pass, for one rollout.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub now: DateTime<Utc>,
    /// The fleet's desired capacity from its scaling policy this pass.
    pub desired: u32,
    pub new_live: u32,
    pub new_healthy: u32,
    pub old_live: u32,
    pub old_healthy: u32,
    pub gates: Gates,
    /// The largest instance weight less one (0 without instance weights): how far the
    /// old build may stand above its share at a step before the last, since an instance
    /// cannot be retired in part, and how far the fleet may stand above its desired
    /// capacity without it counting as surge. Counts above are capacity units.
    pub unit_slack: u32,
}

/// The fleet-level gates' verdict this pass.
#[derive(Debug, Clone, PartialEq)]
pub enum Gates {
    Pass(String),
    /// Not enough to decide yet (no data, instances still booting): not a pass.
    Waiting(String),
    Fail(String),
}

impl Gates {
    /// The verdict's name, as status, metrics labels and the dashboard show it: `pass`,
    /// `waiting` or `fail`.
    pub fn name(&self) -> &'static str {
        match self {
            Gates::Pass(_) => "pass",
            Gates::Waiting(_) => "waiting",
            Gates::Fail(_) => "fail",
        }
    }

    /// What the verdict says: what passed, what is awaited, or what failed.
    pub fn reason(&self) -> &str {
        match self {
            Gates::Pass(w) | Gates::Waiting(w) | Gates::Fail(w) => w,
        }
    }
}

/// The share of `desired` on the new build at `step`, and how many steps there are.
pub fn step_target(strategy: &StrategySpec, step: usize, desired: u32) -> (u32, usize) {
    match strategy {
        StrategySpec::Rolling(r) => {
            let batch = r.batch.of(desired).max(1);
            let steps = desired.div_ceil(batch).max(1) as usize;
            let n = (step as u32 + 1).saturating_mul(batch).min(desired);
            (n, steps)
        }
        StrategySpec::Canary(c) => {
            let steps = c.steps.len().max(1);
            let amount = c.steps.get(step).copied().unwrap_or(Amount::Percent(100.0));
            let n = if step + 1 >= steps {
                desired
            } else {
                amount.of(desired).min(desired)
            };
            (n.max(1).min(desired.max(1)), steps)
        }
        StrategySpec::BlueGreen(_) => (desired, 1),
    }
}

/// Instances that may be out of service at once, of `desired`: a rolling strategy's
/// `max_unavailable`, rounded down; none for canary and blue/green.
pub fn max_unavailable(strategy: &StrategySpec, desired: u32) -> u32 {
    match strategy {
        StrategySpec::Rolling(x) => x.max_unavailable.of_down(desired).min(desired),
        _ => 0,
    }
}

/// Whether a canary shifts traffic by listener weights (a target group per build).
pub fn shifts_traffic(strategy: &StrategySpec) -> bool {
    matches!(strategy, StrategySpec::Canary(c) if c.traffic.is_some())
}

/// The strategy's bake time: how long a step stays green before the next.
pub fn bake(strategy: &StrategySpec) -> chrono::Duration {
    match strategy {
        StrategySpec::Rolling(r) => r.bake.chrono(),
        StrategySpec::Canary(c) => c.bake.chrono(),
        StrategySpec::BlueGreen(b) => b.bake.chrono(),
    }
}

#[cfg(test)]
mod tests;
