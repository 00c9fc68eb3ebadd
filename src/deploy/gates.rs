//! Gate verdicts as pure functions. The controller observes (instance health, smoke runs,
//! alarm states, metric datapoints) and these functions judge:
//! - [`instance_verdict`]: what the new instances alone decide (a build EC2 cannot launch,
//!   a failed smoke test, nothing healthy yet, promotion, a green set before its switch);
//!   `None` hands the verdict to the fleet gates;
//! - [`fleet_verdict`]: alarms, metric conditions and canary analysis over the readings.
//!
//! Missing data is never a pass: it is [`Gates::Waiting`], and the rollout's gate timeout
//! turns a wait that never ends into a rollback.

use super::{stats, Gates, Phase};
use crate::cloud::AlarmState;
use crate::manifest::{CanaryAnalysisSpec, GatesSpec, MetricGate};
use std::collections::HashMap;

/// What the new instances showed this pass, for [`instance_verdict`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InstanceGateInputs<'a> {
    /// The rollout's phase before this pass.
    pub phase: &'a Phase,
    /// The build being rolled out.
    pub build: &'a str,
    /// The fleet's desired capacity this pass.
    pub desired: u32,
    /// Live instances of the new build.
    pub new_live: u32,
    /// Of those, healthy by the instance gates (in the fleet's own target group while
    /// promoting).
    pub new_healthy: u32,
    /// EC2 refused to launch this build (a missing AMI or template version): its error.
    pub launch_rejected: Option<&'a str>,
    /// A smoke command failed its last try on a new instance: what it said.
    pub smoke_failed: Option<&'a str>,
    /// Blue/green before the switch: the green set serves no traffic yet.
    pub green_unswitched: bool,
}

/// The verdict the new instances decide on their own, or `None` when the fleet gates
/// ([`fleet_verdict`]) must decide.
pub fn instance_verdict(i: &InstanceGateInputs) -> Option<Gates> {
    let rolling = *i.phase == Phase::Rolling;
    if *i.phase == Phase::Promoting {
        let n = i.new_healthy;
        return Some(if n >= i.new_live && n >= i.desired {
            Gates::Pass(format!(
                "{n} new instances healthy in the fleet's target group"
            ))
        } else {
            Gates::Waiting(format!(
                "{n} of {} new instances healthy in the fleet's target group",
                i.new_live
            ))
        });
    }
    if let (Some(why), true) = (i.launch_rejected, rolling) {
        // A build EC2 does not have: said now, not at the gate timeout.
        return Some(Gates::Fail(format!("cannot launch {}: {why}", i.build)));
    }
    if let (Some(why), true) = (i.smoke_failed, rolling) {
        // Reaches CI now, with the command's status and output, not at the gate timeout.
        return Some(Gates::Fail(why.to_string()));
    }
    if i.new_healthy == 0 && rolling {
        return Some(Gates::Waiting(format!(
            "no instance of {} healthy yet",
            i.build
        )));
    }
    if i.green_unswitched {
        // The green set serves no traffic before the switch: only its instance gates
        // count; the fleet gates judge it after the switch.
        return Some(Gates::Pass(
            "green set healthy; fleet gates run after the switch".into(),
        ));
    }
    None
}

/// How far back a metric gate reads: the bake window, at least two periods, plus one
/// period so the window holds whole closed periods.
pub fn metric_window(bake: chrono::Duration, m: &MetricGate) -> chrono::Duration {
    let period = m.metric.period.chrono();
    bake.max(period * 2) + period
}

/// How far back canary analysis reads: the bake window, at least `min_samples + 1`
/// periods.
pub fn canary_window(bake: chrono::Duration, c: &CanaryAnalysisSpec) -> chrono::Duration {
    let samples = i32::try_from(c.min_samples).unwrap_or(i32::MAX - 1);
    bake.max(c.metric.period.chrono() * samples.saturating_add(1))
}

/// What the controller read for the fleet gates this pass; each `Err` says why a reading
/// is missing (it makes the verdict [`Gates::Waiting`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FleetReadings {
    /// The state of each alarm named by `gates.alarms` (alarms missing from the map were
    /// not found); `None` when no alarm is configured.
    pub alarms: Option<Result<HashMap<String, AlarmState>, String>>,
    /// One per `gates.metrics`, in order: the new build's datapoints over
    /// [`metric_window`].
    pub metrics: Vec<Result<Vec<f64>, String>>,
    /// Canary analysis over [`canary_window`]; `None` when not configured.
    pub canary: Option<Result<CanarySamples, String>>,
}

/// Canary analysis's two sides, datapoints of the same metric over the same window.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CanarySamples {
    /// The new build's.
    pub canary: Vec<f64>,
    /// The old build's.
    pub baseline: Vec<f64>,
}

/// The fleet gates' verdict: the first alarm in ALARM, metric condition broken or canary
/// judged worse fails; missing data waits; otherwise a pass that says what passed.
pub fn fleet_verdict(g: &GatesSpec, build: &str, r: &FleetReadings) -> Gates {
    let mut passed = Vec::new();
    if let Some(alarms) = &r.alarms {
        let states = match alarms {
            Ok(s) => s,
            Err(e) => return Gates::Waiting(format!("cannot read alarms: {e}")),
        };
        for name in &g.alarms {
            match states.get(name) {
                Some(AlarmState::Alarm) => return Gates::Fail(format!("alarm {name} is in ALARM")),
                Some(AlarmState::Ok) => {}
                Some(AlarmState::InsufficientData) => {
                    return Gates::Waiting(format!("alarm {name} has insufficient data"))
                }
                None => return Gates::Waiting(format!("alarm {name} not found")),
            }
        }
        passed.push(format!("{} alarm(s) OK", g.alarms.len()));
    }
    for (i, m) in g.metrics.iter().enumerate() {
        let points = match r.metrics.get(i) {
            Some(Ok(p)) => p,
            Some(Err(w)) => return Gates::Waiting(w.clone()),
            None => return Gates::Waiting(format!("{} was not read", m.metric.name)),
        };
        if points.is_empty() {
            return Gates::Waiting(format!("no data yet for {} of {build}", m.metric.name));
        }
        for v in points {
            if let Some(b) = m.below.filter(|b| *v >= *b) {
                return Gates::Fail(format!("{} = {v:.3} (limit below {b})", m.metric.name));
            }
            if let Some(a) = m.above.filter(|a| *v <= *a) {
                return Gates::Fail(format!("{} = {v:.3} (limit above {a})", m.metric.name));
            }
        }
        let worst = points.iter().copied().fold(f64::NAN, f64::max);
        passed.push(format!(
            "{} max {worst:.3} over {} point(s)",
            m.metric.name,
            points.len()
        ));
    }
    if let Some(c) = &g.canary_analysis {
        let CanarySamples { canary, baseline } = match &r.canary {
            Some(Ok(sides)) => sides,
            Some(Err(w)) => return Gates::Waiting(w.clone()),
            None => return Gates::Waiting("canary analysis was not read".into()),
        };
        if canary.len() < c.min_samples || baseline.len() < c.min_samples {
            return Gates::Waiting(format!(
                "canary analysis needs {} samples a side (have {} canary, {} baseline)",
                c.min_samples,
                canary.len(),
                baseline.len()
            ));
        }
        let Some(t) = stats::mann_whitney(canary, baseline, c.higher_is_worse) else {
            return Gates::Waiting("canary analysis: samples are not numbers".into());
        };
        let verdict = format!(
            "Mann-Whitney on {}: canary median {:.3} (n={}) vs baseline {:.3} (n={}), U={:.1}, z={:.2}, p={:.4}, alpha {}",
            c.metric.name, t.canary_median, t.n_canary, t.baseline_median, t.n_baseline, t.u, t.z, t.p, c.alpha
        );
        if t.p < c.alpha {
            return Gates::Fail(format!("canary worse than baseline: {verdict}"));
        }
        passed.push(verdict);
    }
    Gates::Pass(if passed.is_empty() {
        "instance gates".into()
    } else {
        passed.join("; ")
    })
}

#[cfg(test)]
mod tests;
