//! Target tracking on a per-instance value: keep `metric / instance` at `target`.

use super::{ceil_count, fresh_value, Observation, Vote};
use crate::cloud::MetricSeries;
use crate::manifest::{MetricKind, TargetTrackingSpec};

/// Scale-in only below 90% of target (AWS and the Kubernetes HPA use the same 10%
/// tolerance), so a fleet sitting at its target does not flap by one instance.
const SCALE_IN_TOLERANCE: f64 = 0.9;

pub(super) fn vote(
    spec: &TargetTrackingSpec,
    obs: &Observation,
    series: Option<&MetricSeries>,
    stale_after: chrono::Duration,
) -> (Vote, String) {
    let name = &spec.metric.name;
    let value = match fresh_value(series, obs.now, stale_after, &spec.metric) {
        Ok(v) => v,
        Err(why) => return (Vote::Hold, why),
    };
    // Total load the fleet is carrying, in metric units.
    let load = match spec.metric.kind {
        MetricKind::Total => value,
        MetricKind::PerInstance => {
            if obs.warm == 0 {
                return (
                    Vote::Hold,
                    format!("{name} {value:.1} but no instance is past warmup yet; holding"),
                );
            }
            // Booting instances are not in the average: only warm ones carry this load.
            value * f64::from(obs.warm)
        }
    };
    let per_instance = if obs.warm > 0 {
        load / f64::from(obs.warm)
    } else {
        load
    };
    let wanted = ceil_count(load / spec.target);
    let shown = format!(
        "{name} {per_instance:.1}/instance on {} warm vs target {}",
        obs.warm, spec.target
    );
    if wanted >= obs.current {
        return (Vote::Capacity(wanted), format!("{shown} wants {wanted}"));
    }
    // Utilization if the load were spread over every current instance.
    let utilization = load / (f64::from(obs.current.max(1)) * spec.target);
    if spec.disable_scale_in {
        return (
            Vote::Capacity(obs.current),
            format!("{shown}; scale-in disabled"),
        );
    }
    if utilization > SCALE_IN_TOLERANCE {
        return (
            Vote::Capacity(obs.current),
            format!("{shown}; within 10% tolerance, holding"),
        );
    }
    (Vote::Capacity(wanted), format!("{shown} wants {wanted}"))
}
