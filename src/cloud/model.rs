//! The one model of what a fleet's metrics read, shared by the simulated cloud (`run
//! --cloud sim`) and by `coxswain simulate`, so a fleet behaves the same in both.
//!
//! A period is made of whole minutes; for each minute the model knows the demand
//! (requests per minute) and how many instances served in it. From those, a datapoint is
//! what CloudWatch would publish for the period:
//! - `AWS/ApplicationELB` `RequestCount` (Sum): the requests of the period. No datapoint
//!   for a period without requests: CloudWatch publishes none for an idle load balancer.
//! - `RequestCountPerTarget` (Sum): requests ÷ the mean number of serving targets. The load
//!   balancer counts a request when it picks a target, served in time or not, so an
//!   overloaded fleet reads above its capacity (the signal target tracking needs). No
//!   datapoint without requests or without a serving target.
//! - `AWS/EC2` `CPUUtilization` (Average, percent): each minute's demand over the serving
//!   capacity, at most 100, averaged over the minutes in which something served. No
//!   datapoint when nothing served.
//!
//! Which metric names and dimensions are published at all is [`published_as`]: only what
//! AWS sets, so a manifest that reads a metric AWS never publishes has no data here either.

use crate::manifest::{FleetSpec, MetricSpec};

/// What a metric query measures about a fleet, when the model can produce it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Meaning {
    RequestCount,
    RequestCountPerTarget,
    Cpu,
}

/// One minute of a fleet: requests that arrived, instances that served.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct MinuteLoad {
    /// Requests per minute.
    pub demand: f64,
    /// Capacity units serving (instances booted and not retired, each counting its
    /// weight) during the minute.
    pub serving: u32,
    /// The instances behind `serving` (the load balancer's targets): equal to it without
    /// instance weights. `RequestCountPerTarget` divides by these, as ELB does.
    pub targets: u32,
}

/// The datapoint CloudWatch would publish for a period made of `minutes` (in order; one
/// entry per minute of the period), with `capacity` requests per minute per instance at
/// 100% CPU. `None` when CloudWatch would publish nothing (see the module docs).
pub fn datapoint(meaning: Meaning, minutes: &[MinuteLoad], capacity: f64) -> Option<f64> {
    if minutes.is_empty() {
        return None;
    }
    let requests: f64 = minutes.iter().map(|m| m.demand).sum();
    match meaning {
        Meaning::RequestCount => (requests > 0.0).then_some(requests),
        Meaning::RequestCountPerTarget => {
            let targets =
                minutes.iter().map(|m| f64::from(m.targets)).sum::<f64>() / minutes.len() as f64;
            (requests > 0.0 && targets > 0.0).then(|| requests / targets)
        }
        Meaning::Cpu => {
            let (sum, n) = minutes
                .iter()
                .filter(|m| m.serving > 0)
                .map(|m| (m.demand / (f64::from(m.serving) * capacity) * 100.0).min(100.0))
                .fold((0.0, 0u32), |(s, n), v| (s + v, n + 1));
            (n > 0).then(|| sum / f64::from(n))
        }
    }
}

/// The `TargetGroup` dimension ELB publishes for a target group ARN: the part after its
/// last `:` (`targetgroup/NAME/ID`).
pub fn target_group_dimension(arn: &str) -> &str {
    arn.rsplit(':').next().unwrap_or(arn)
}

/// The `LoadBalancer` dimension ELB publishes for a load balancer ARN: the part after
/// `:loadbalancer/` (`app/NAME/ID`); the whole text if it is not such an ARN.
pub fn load_balancer_dimension(arn: &str) -> &str {
    arn.split_once(":loadbalancer/").map_or(arn, |(_, d)| d)
}

/// What CloudWatch would publish for `m` about fleet `f`, if anything: only the metrics
/// and dimensions AWS really sets. `AWS/ApplicationELB` request counts on the fleet's own
/// `TargetGroup` (alone or with its `LoadBalancer`); `AWS/EC2` `CPUUtilization` on the
/// fleet's `AutoScalingGroupName`. Anything else (a `coxswain:fleet` dimension, a target
/// group of another fleet) has no data, as on AWS. See
/// <https://docs.aws.amazon.com/elasticloadbalancing/latest/application/load-balancer-cloudwatch-metrics.html>
/// and <https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/viewing_metrics_with_cloudwatch.html>.
pub fn published_as(f: &FleetSpec, m: &MetricSpec) -> Option<Meaning> {
    let dims = &m.dimensions;
    let only = |allowed: &[&str]| dims.keys().all(|k| allowed.contains(&k.as_str()));
    match (m.namespace.as_str(), m.name.as_str()) {
        ("AWS/ApplicationELB", name @ ("RequestCount" | "RequestCountPerTarget")) => {
            let suffix = target_group_dimension(f.target_group_arn.as_deref()?);
            let ok = dims.get("TargetGroup").is_some_and(|d| d == suffix)
                && only(&["TargetGroup", "LoadBalancer"]);
            ok.then_some(if name == "RequestCount" {
                Meaning::RequestCount
            } else {
                Meaning::RequestCountPerTarget
            })
        }
        ("AWS/EC2", "CPUUtilization") => {
            let group = f.auto_scaling_group.as_deref()?;
            let ok = dims.get("AutoScalingGroupName").is_some_and(|d| d == group)
                && only(&["AutoScalingGroupName"]);
            ok.then_some(Meaning::Cpu)
        }
        _ => None,
    }
}

/// What the controller reads for `m` about fleet `f`: [`published_as`], plus EC2
/// `CPUUtilization` on the fleet's own `coxswain:fleet` dimension, which the controller
/// reads per `InstanceId` and combines (see `controller::fleet_metric_queries`); the
/// combination of per-instance CPU is the fleet's CPU.
pub fn read_as(f: &FleetSpec, m: &MetricSpec) -> Option<Meaning> {
    published_as(f, m).or_else(|| {
        let own = m.dimensions.len() == 1
            && m.dimensions.get(super::tags::FLEET) == Some(&f.name)
            && m.namespace == "AWS/EC2"
            && m.name == "CPUUtilization";
        own.then_some(Meaning::Cpu)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mins(v: &[(f64, u32)]) -> Vec<MinuteLoad> {
        v.iter()
            .map(|&(demand, serving)| MinuteLoad {
                demand,
                serving,
                targets: serving,
            })
            .collect()
    }

    #[test]
    fn an_idle_period_publishes_no_request_count_but_cpu_reads_zero() {
        let idle = mins(&[(0.0, 3), (0.0, 3)]);
        assert_eq!(datapoint(Meaning::RequestCount, &idle, 100.0), None);
        assert_eq!(
            datapoint(Meaning::RequestCountPerTarget, &idle, 100.0),
            None
        );
        assert_eq!(datapoint(Meaning::Cpu, &idle, 100.0), Some(0.0));
    }

    #[test]
    fn per_target_divides_by_the_mean_serving_count_of_the_period() {
        // 5 minutes, 600 requests each; 2 serving for 3 minutes then 4 → mean 2.8.
        let p = mins(&[(600.0, 2), (600.0, 2), (600.0, 2), (600.0, 4), (600.0, 4)]);
        let v = datapoint(Meaning::RequestCountPerTarget, &p, 100.0).expect("datapoint");
        assert!((v - 3000.0 / 2.8).abs() < 1e-9, "{v}");
        assert_eq!(datapoint(Meaning::RequestCount, &p, 100.0), Some(3000.0));
    }

    #[test]
    fn an_overloaded_fleet_reads_its_demand_not_what_it_served() {
        // Capacity 100 per instance, 2 instances, demand 500: per target 250, CPU 100.
        let p = mins(&[(500.0, 2)]);
        assert_eq!(
            datapoint(Meaning::RequestCountPerTarget, &p, 100.0),
            Some(250.0)
        );
        assert_eq!(datapoint(Meaning::Cpu, &p, 100.0), Some(100.0));
    }

    #[test]
    fn nothing_serving_publishes_no_per_target_or_cpu() {
        let p = mins(&[(500.0, 0)]);
        assert_eq!(datapoint(Meaning::RequestCountPerTarget, &p, 100.0), None);
        assert_eq!(datapoint(Meaning::Cpu, &p, 100.0), None);
        assert_eq!(datapoint(Meaning::RequestCount, &p, 100.0), Some(500.0));
    }
}
