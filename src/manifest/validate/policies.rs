//! Scaling policies, and every metric query a manifest makes (scaling policies and deploy
//! gates alike: one set of checks).

use super::Report;
use crate::manifest::{FleetSpec, MetricSpec, PolicySpec};

/// A metric query CloudWatch can answer: a known statistic, a period it accepts, a
/// namespace and a name, dimensions AWS publishes. `at` is the path of the query's block
/// (its keys are located under it).
pub(super) fn metric(m: &MetricSpec, at: &[&str], r: &mut Report) {
    let path = |key: &'static str| [at, &[key]].concat();
    if !valid_stat(&m.stat) {
        r.at(
            &path("stat"),
            format!(
                "unknown statistic '{}': use Average, Sum, Maximum, Minimum, SampleCount or a percentile like p99",
                m.stat
            ),
        );
    }
    let p_secs = m.period.as_secs();
    if !(matches!(p_secs, 1 | 5 | 10 | 30) || (p_secs >= 60 && p_secs.is_multiple_of(60))) {
        r.at(
            &path("period"),
            format!(
                "metric period {} is not one CloudWatch accepts: use 1s, 5s, 10s, 30s or a multiple of 60s",
                m.period
            ),
        );
    }
    if m.namespace.is_empty() || m.name.is_empty() {
        r.at(at, "metric needs a namespace and a name");
    }
    if let Some(why) = unpublished_dimensions(m) {
        r.at(&path("dimensions"), why);
    }
}

/// The fleet's scaling policies.
pub(super) fn policies(f: &FleetSpec, r: &mut Report) {
    let s = &f.scaling;
    if s.policies.is_empty() {
        r.at(
            &["scaling", "policies"],
            "no scaling policies: add at least one (predictive, target_tracking, step or scheduled), or the fleet stays at capacity.min",
        );
    }
    for p in &s.policies {
        if let Some(m) = p.metric() {
            metric(m, &["scaling", "policies", "metric"], r);
            if m.period.as_secs() > 3600 {
                r.at(
                    &["scaling", "policies", "period"],
                    format!(
                        "metric period {} is longer than an hour: a scaling policy cannot react to it; publish the metric more often",
                        m.period
                    ),
                );
            }
        }
        match p {
            PolicySpec::TargetTracking(t) => {
                if !(t.target.is_finite() && t.target > 0.0) {
                    r.at(
                        &["scaling", "policies", "target"],
                        format!("target {} must be a positive number", t.target),
                    );
                }
            }
            PolicySpec::Step(st) => {
                if st.scale_out.is_empty() && st.scale_in.is_empty() {
                    r.at(
                        &["scaling", "policies", "step"],
                        "a step policy needs scale_out or scale_in steps",
                    );
                }
                if st
                    .scale_out
                    .iter()
                    .any(|a| a.above.is_none() || a.below.is_some())
                {
                    r.at(
                        &["scaling", "policies", "scale_out"],
                        "each scale_out step needs `above: VALUE` (and no `below`)",
                    );
                }
                if st
                    .scale_in
                    .iter()
                    .any(|a| a.below.is_none() || a.above.is_some())
                {
                    r.at(
                        &["scaling", "policies", "scale_in"],
                        "each scale_in step needs `below: VALUE` (and no `above`)",
                    );
                }
                let lowest_out = st
                    .scale_out
                    .iter()
                    .filter_map(|a| a.above)
                    .fold(f64::INFINITY, f64::min);
                let highest_in = st
                    .scale_in
                    .iter()
                    .filter_map(|a| a.below)
                    .fold(f64::NEG_INFINITY, f64::max);
                if highest_in >= lowest_out {
                    r.at(
                        &["scaling", "policies", "scale_in"],
                        format!("scale_in threshold {highest_in} is not below scale_out threshold {lowest_out}: the fleet would flap"),
                    );
                }
            }
            PolicySpec::Predictive(pr) => {
                match pr.capacity(f) {
                    Some(c) if c.is_finite() && c > 0.0 => {}
                    Some(c) => r.at(
                        &["scaling", "policies", "capacity_per_instance"],
                        format!("capacity_per_instance {c} must be a positive number"),
                    ),
                    None => r.at(
                        &["scaling", "policies", "predictive"],
                        "a predictive policy needs capacity_per_instance: the requests per metric period one instance serves at 100%",
                    ),
                }
                if pr.metric.kind != crate::manifest::MetricKind::Total {
                    r.at(
                        &["scaling", "policies", "kind"],
                        "a predictive policy reads the fleet's total demand: use a request count with `stat: Sum` and `kind: total`",
                    );
                }
                let p_secs = pr.metric.period.as_secs();
                if p_secs < 60 || 86_400 % p_secs != 0 {
                    r.at(
                        &["scaling", "policies", "period"],
                        format!("a predictive policy needs a period of a whole number of minutes that divides a day (1m, 5m, 15m, ...), not {}", pr.metric.period),
                    );
                }
                let h = pr.history.as_secs();
                if !(86_400..=15 * 86_400).contains(&h) {
                    r.at(
                        &["scaling", "policies", "history"],
                        format!("history {} must be between 1d and 15d (CloudWatch keeps 1-minute data 15 days)", pr.history),
                    );
                }
                if !(pr.loss_budget.0 > 0.0 && pr.loss_budget.0 <= 0.1) {
                    r.at(
                        &["scaling", "policies", "loss_budget"],
                        format!(
                            "loss_budget {} must be above 0 and at most 10%",
                            pr.loss_budget.0
                        ),
                    );
                }
            }
            PolicySpec::Scheduled(sc) => {
                // The cron itself is checked in validate_schedules.
                if sc.duration.as_secs() == 0 {
                    r.at(
                        &["scaling", "policies", "duration"],
                        "a scheduled window needs a duration above 0",
                    );
                }
                if sc.min > f.capacity.max {
                    r.at(
                        &["scaling", "policies", "min"],
                        format!("scheduled min {} is above capacity.max {}: raise max or lower the floor", sc.min, f.capacity.max),
                    );
                }
            }
        }
    }
}

const STATS: &[&str] = &["Average", "Sum", "Maximum", "Minimum", "SampleCount"];

fn valid_stat(s: &str) -> bool {
    STATS.contains(&s)
        || s.strip_prefix('p')
            .and_then(|p| p.parse::<f64>().ok())
            .is_some_and(|p| (0.0..=100.0).contains(&p))
}

/// Dimensions that AWS never publishes a metric of this namespace by: such a query reads
/// nothing, forever. Only the two namespaces coxswain's policies are built on are checked;
/// `coxswain:fleet` on `AWS/EC2` is read per `InstanceId` by coxswain itself.
fn unpublished_dimensions(m: &MetricSpec) -> Option<String> {
    let allowed: &[&str] = match m.namespace.as_str() {
        "AWS/ApplicationELB" => &["TargetGroup", "LoadBalancer", "AvailabilityZone"],
        "AWS/EC2" => &[
            "InstanceId",
            "AutoScalingGroupName",
            "ImageId",
            "InstanceType",
            crate::cloud::tags::FLEET,
        ],
        _ => return None,
    };
    let bad: Vec<&str> = m
        .dimensions
        .keys()
        .map(String::as_str)
        .filter(|k| !allowed.contains(k))
        .collect();
    (!bad.is_empty()).then(|| {
        format!(
            "{} does not publish {} by {}: it reads no data, ever; use one of {}",
            m.namespace,
            m.name,
            bad.join(", "),
            allowed.join(", ")
        )
    })
}
