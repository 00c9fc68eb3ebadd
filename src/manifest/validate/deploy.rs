//! A fleet's deploy section: strategy, gates (their metric queries checked like the
//! scaling policies'), hooks.

use super::{policies, Report};
use crate::manifest::{CapacitySpec, DeploySpec, StrategySpec};

pub(super) fn deploy(d: &DeploySpec, capacity: &CapacitySpec, r: &mut Report) {
    if let StrategySpec::Rolling(rolling) = &d.strategy {
        // Unavailability rounds down: the smallest fleet decides whether a rollout can
        // take anything out of service.
        let out_at_min = rolling.max_unavailable.of_down(capacity.min.max(1));
        if rolling.max_surge.is_zero() && out_at_min == 0 {
            r.at(
                &["deploy", "strategy", "rolling"],
                format!(
                    "max_surge 0 with max_unavailable {} ({out_at_min} of capacity.min {}) can never replace an instance: allow a surge (e.g. max_surge: 1) or an unavailable instance",
                    rolling.max_unavailable,
                    capacity.min
                ),
            );
        }
    }
    if d.gates.instance.smoke_command.is_some() && d.gates.instance.smoke_attempts == 0 {
        r.at(
            &["deploy", "gates", "instance", "smoke_attempts"],
            "smoke_attempts 0 would fail every instance before its smoke command runs: use 1 or more",
        );
    }
    if let StrategySpec::Canary(c) = &d.strategy {
        if c.steps.is_empty() {
            r.at(
                &["deploy", "strategy", "steps"],
                "a canary needs at least one step, e.g. [1, \"10%\", \"100%\"]",
            );
        }
    }
    if d.gates.timeout.as_secs() == 0 || d.gates.interval.as_secs() == 0 {
        r.at(
            &["deploy", "gates"],
            "gates.timeout and gates.interval must be above 0",
        );
    }
    if let Some(c) = &d.gates.canary_analysis {
        if !(c.alpha > 0.0 && c.alpha < 1.0) || c.min_samples < 2 {
            r.at(
                &["deploy", "gates", "canary_analysis"],
                "canary_analysis needs 0 < alpha < 1 and min_samples of at least 2",
            );
        }
    }
    for h in d.hooks.pre_deploy.iter().chain(&d.hooks.post_deploy) {
        if h.command.is_empty() {
            r.at(
                &["deploy", "hooks"],
                "a hook needs a command: [program, args...]",
            );
        }
    }
    for g in &d.gates.metrics {
        policies::metric(&g.metric, &["deploy", "gates", "metrics", "metric"], r);
        if g.below.is_none() && g.above.is_none() {
            r.at(
                &["deploy", "gates", "metrics"],
                format!(
                    "the gate on {} needs `below` or `above`: a limit it must stay under or over",
                    g.metric.name
                ),
            );
        }
    }
    if let Some(c) = &d.gates.canary_analysis {
        policies::metric(
            &c.metric,
            &["deploy", "gates", "canary_analysis", "metric"],
            r,
        );
    }
}
