//! Step scaling: fixed adjustments by how far a metric is past thresholds.

use super::{ceil_count, fresh_value, Memory, Observation, Vote};
use crate::cloud::MetricSeries;
use crate::manifest::{Change, StepSpec};

/// The size of a step taken from `base`, the capacity it is added to or taken from.
fn amount(change: Change, base: u32) -> u32 {
    match change {
        Change::Count(n) => n,
        // A percentage always moves at least one instance, as in AWS's MinAdjustmentMagnitude.
        Change::Percent(p) => ceil_count(f64::from(base) * p / 100.0).max(1),
    }
}

pub(super) fn vote(
    spec: &StepSpec,
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
    let out = spec
        .scale_out
        .iter()
        .filter(|s| s.above.is_some_and(|a| value > a))
        .max_by(|a, b| {
            a.above
                .partial_cmp(&b.above)
                .unwrap_or(std::cmp::Ordering::Equal)
        });
    if let Some(s) = out {
        // The step answers the datapoint, so it is added to the capacity that was serving
        // while the datapoint was measured, and a percentage is a percentage of that same
        // capacity. Instances launched for an earlier step (or warm only since) already
        // answer part of this reading, so steps do not stack while readings lag.
        let base = memory
            .serving_during(reading.start, reading.period, obs.serving.max(obs.warm))
            .round() as u32;
        let add = amount(s.change, base);
        let wanted = base.saturating_add(add).max(obs.current);
        return (
            Vote::Capacity(wanted),
            format!(
                "{name} {value:.1} > {}: +{add} on {base} serving wants {wanted}",
                s.above.unwrap_or_default(),
            ),
        );
    }
    let inn = spec
        .scale_in
        .iter()
        .filter(|s| s.below.is_some_and(|b| value < b))
        .min_by(|a, b| {
            a.below
                .partial_cmp(&b.below)
                .unwrap_or(std::cmp::Ordering::Equal)
        });
    if let Some(s) = inn {
        let remove = amount(s.change, obs.current);
        let wanted = obs.current.saturating_sub(remove);
        return (
            Vote::Capacity(wanted),
            format!(
                "{name} {value:.1} < {}: -{remove} wants {wanted}",
                s.below.unwrap_or_default()
            ),
        );
    }
    // Like an AWS step policy whose alarms are not firing: no opinion. (A step policy
    // with no scale_in steps must not block the other policies' scale-in.)
    (
        Vote::Abstain,
        format!("{name} {value:.1} between thresholds; no step applies"),
    )
}
