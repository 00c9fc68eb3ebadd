//! Deploys: what a build is, and the rollout state machine as a pure function.
//!
//! A rollout never fixes instance counts. Each pass it answers "what share of the fleet's
//! desired capacity, as the scaling policy decides it *now*, should run the new build?",
//! so scaling and deploying never fight. The controller then reconciles instances per
//! build towards those targets, within surge and minimum-healthy limits.
//!
//! This module decides; it does not call any cloud (see `controller::rollout`).

pub mod admit;
pub mod converge;
pub mod gates;
pub mod process;
pub mod stats;

use crate::manifest::{Amount, DeploySpec, FleetSpec, StrategySpec};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

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
            } else if o.now - r.step_started > gates.timeout.chrono() && !r.overdue {
                r.overdue = true;
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
            let complete = o.new_healthy >= want && (blue_green || o.old_live <= old_want);
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
            // After a switch the targets below are recomputed next pass.
            Targets {
                new: want,
                old: old_want,
                max_total: d + surge,
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
            } else if o.now - r.step_started > gates.timeout.chrono() && !r.overdue {
                // Its deadline: reported once (CI, `status`, notifications). Restoring goes
                // on: stopping would leave the build being left serving.
                r.overdue = true;
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
        // Not started, or hooks running: the fleet keeps its current build.
        Phase::Queued | Phase::PreDeploy => Targets {
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
        Phase::RolledBack { .. } => Targets {
            new: 0,
            old: d,
            max_total: d,
            min_healthy: d,
            register_new: false,
            register_old: true,
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

#[cfg(test)]
mod tests;
