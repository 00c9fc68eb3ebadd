//! Target tracking on a per-instance value: keep `metric / instance` at `target`.

use super::{ceil_count, fresh_value, Memory, Observation, Vote};
use crate::cloud::MetricSeries;
use crate::manifest::{MetricKind, TargetTrackingSpec};

/// Scale-in only below 90% of target (AWS and the Kubernetes HPA use the same 10%
/// tolerance), so a fleet sitting at its target does not flap by one instance.
const SCALE_IN_TOLERANCE: f64 = 0.9;

/// The capacity that brings the metric to its target. The load a datapoint stands for is
/// its per-instance value times the instances that served while it was measured (see
/// [`Memory::serving_during`]), not times those warm now: a datapoint read a minute or more
/// after its period, while new instances came in, must not be multiplied by them.
pub(super) fn vote(
    spec: &TargetTrackingSpec,
    obs: &Observation,
    memory: &Memory,
    series: Option<&MetricSeries>,
    stale_after: chrono::Duration,
) -> (Vote, String) {
    let name = &spec.metric.name;
    let reading = match fresh_value(series, obs.now, stale_after, &spec.metric) {
        Ok(r) => r,
        Err(why) => return (Vote::Hold, why),
    };
    let value = reading.value;
    let served = memory.serving_during(reading.start, reading.period, obs.serving.max(obs.warm));
    // Total load the fleet is carrying, in metric units.
    let load = match spec.metric.kind {
        MetricKind::Total => value,
        MetricKind::PerInstance if reading.missing_as_zero => 0.0,
        MetricKind::PerInstance => {
            if served <= 0.0 {
                return (
                    Vote::Hold,
                    format!(
                        "{name} {value:.1} but no instance served while it was measured; holding"
                    ),
                );
            }
            value * served
        }
    };
    let wanted = ceil_count(load / spec.target);
    let shown = if reading.missing_as_zero {
        format!(
            "{name}: no datapoint (no traffic; missing_data: zero) vs target {}",
            spec.target
        )
    } else {
        let per_instance = if served > 0.0 { load / served } else { load };
        format!(
            "{name} {per_instance:.1}/instance on {served:.1} serving vs target {}",
            spec.target
        )
    };
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
