//! A fleet document: identity, capacity, launch, scaling limits, repair and simulation;
//! then its policies, deploy section and schedules.

use super::{deploy, policies, schedules, Doc, Report};
use crate::manifest::load::Problem;
use crate::manifest::{FleetSpec, LaunchSpec, TrafficSpec};

/// Every check of one fleet document.
pub(in crate::manifest) fn fleet(f: &FleetSpec, doc: Doc, problems: &mut Vec<Problem>) {
    let mut r = Report::new(doc, problems);
    let name_ok = !f.name.is_empty()
        && f.name.len() <= 64
        && f.name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !name_ok {
        r.at(
            &["name"],
            format!(
                "fleet name '{}' must be 1-64 characters of a-z, 0-9 and '-' (it becomes a tag value)",
                f.name
            ),
        );
    }
    if f.environment.trim().is_empty() {
        r.at(
            &["environment"],
            "environment must not be empty (e.g. staging, production)",
        );
    }
    if f.region.trim().is_empty() {
        r.at(&["region"], "region must not be empty (e.g. us-east-1)");
    }
    if f.capacity.min > f.capacity.max {
        r.at(
            &["capacity", "min"],
            format!(
                "capacity.min ({}) is above capacity.max ({}): make min <= max",
                f.capacity.min, f.capacity.max
            ),
        );
    }
    if f.capacity.max == 0 {
        r.at(&["capacity", "max"], "capacity.max must be at least 1");
    }
    launch(&f.launch, f.auto_scaling_group.is_some(), &mut r);
    if f.auto_scaling_group.is_some() && f.target_group_arn.is_some() {
        r.at(
            &["target_group_arn"],
            "target_group_arn is for fleets coxswain launches itself; an Auto Scaling group registers its own instances (attach the target group to the group)",
        );
    }
    if let Some(k) = f.launch.tags.keys().find(|k| k.starts_with("coxswain:")) {
        r.at(
            &["launch", "tags"],
            format!(
                "tag '{k}': the coxswain: prefix is reserved for the tags coxswain sets itself"
            ),
        );
    }
    let s = &f.scaling;
    if s.max_launch_per_cycle == 0 {
        r.at(
            &["scaling", "max_launch_per_cycle"],
            "max_launch_per_cycle must be at least 1, or the fleet could never grow",
        );
    }
    if s.max_retire_per_cycle == 0 {
        r.at(
            &["scaling", "max_retire_per_cycle"],
            "max_retire_per_cycle must be at least 1, or the fleet could never shrink",
        );
    }
    // scaling.repair (controller/repair.rs).
    if let Some(life) = s.repair.max_instance_lifetime {
        if f.auto_scaling_group.is_some() {
            r.at(
                &["scaling", "repair", "max_instance_lifetime"],
                "max_instance_lifetime is for fleets coxswain launches itself: set MaxInstanceLifetime on the Auto Scaling group instead",
            );
        } else if life < crate::manifest::MIN_INSTANCE_LIFETIME {
            r.at(
                &["scaling", "repair", "max_instance_lifetime"],
                format!("max_instance_lifetime {life} is below one day (1d), the least an Auto Scaling group accepts too"),
            );
        }
    }
    policies::policies(f, &mut r);
    deploy::deploy(&f.deploy, &f.capacity, &mut r);
    if let Some(sim) = &f.simulation {
        if let Some(prices) = &sim.prices {
            if prices.is_empty() {
                r.at(&["simulation", "prices"], "the price table is empty");
            }
            // Each entry is reported at its own key.
            for (ty, p) in prices {
                let one: crate::manifest::PriceTable = [(ty.clone(), p.clone())].into();
                if let Err(e) = crate::manifest::check_prices(&one) {
                    r.at(&["simulation", "prices", ty.as_str()], e);
                }
                if let Some(e) = p.spot_interruptions_per_hour.problem_for(&f.launch.subnets) {
                    r.at(
                        &[
                            "simulation",
                            "prices",
                            ty.as_str(),
                            "spot_interruptions_per_hour",
                        ],
                        format!("{ty}: {e}"),
                    );
                }
            }
        }
        if !(sim.capacity_per_instance.is_finite() && sim.capacity_per_instance > 0.0) {
            r.at(
                &["simulation", "capacity_per_instance"],
                "capacity_per_instance must be a positive number of requests per minute",
            );
        }
        match &sim.traffic {
            TrafficSpec::Synthetic(t) => {
                if !(t.base >= 0.0 && t.peak >= t.base && t.peak.is_finite()) {
                    r.at(
                        &["simulation", "traffic", "peak"],
                        "synthetic traffic needs 0 <= base <= peak",
                    );
                }
                if !(0.0..=1.0).contains(&t.noise) {
                    r.at(
                        &["simulation", "traffic", "noise"],
                        "noise is a fraction between 0 and 1",
                    );
                }
                for b in &t.bursts {
                    if !(b.factor.is_finite() && b.factor > 0.0) {
                        r.at(
                            &["simulation", "traffic", "bursts", "factor"],
                            "burst factor must be positive",
                        );
                    }
                }
            }
            TrafficSpec::Trace(t) => {
                if !(t.scale.is_finite() && t.scale > 0.0) {
                    r.at(
                        &["simulation", "traffic", "trace", "scale"],
                        "trace scale must be positive",
                    );
                }
            }
        }
    }
    schedules::schedules(f, &mut r);
}

fn launch(l: &LaunchSpec, has_group: bool, r: &mut Report) {
    weights(l, has_group, r);
    if l.instances_distribution.is_some() && has_group {
        r.at(
            &["launch", "instances_distribution"],
            "a fleet backed by an Auto Scaling group takes its On-Demand/Spot split from the group's mixed instances policy: set it there",
        );
    } else if l.instances_distribution.is_some() && l.launch_template.is_none() {
        r.at(
            &["launch", "instances_distribution"],
            "with an instances distribution coxswain launches through EC2 CreateFleet, which launches from a launch template: give launch.launch_template (the AMI goes in the template, or in builds as ami-...)",
        );
    }
    match (&l.launch_template, &l.ami) {
        (Some(_), Some(_)) => r.at(
            &["launch", "ami"],
            "give either launch.launch_template or launch.ami, not both",
        ),
        (None, None) if !has_group => r.at(
            &["launch"],
            "launch needs a launch_template (id or name, and version) or an ami with instance_types",
        ),
        (Some(lt), None) => {
            if lt.id.is_some() == lt.name.is_some() {
                r.at(
                    &["launch", "launch_template"],
                    "launch_template needs exactly one of id or name",
                );
            }
            let v = lt.version.as_str();
            if !(v == "$Latest" || v == "$Default" || v.parse::<u64>().is_ok()) {
                r.at(
                    &["launch", "launch_template", "version"],
                    format!("launch template version '{v}' must be a number, $Latest or $Default"),
                );
            }
        }
        (None, Some(ami)) => {
            if !ami.starts_with("ami-") {
                r.at(&["launch", "ami"], format!("'{ami}' is not an AMI id (ami-...)"));
            }
            if l.instance_types.is_empty() {
                r.at(
                    &["launch", "instance_types"],
                    "an ami launch needs instance_types, in order of preference",
                );
            }
        }
        (None, None) => {}
    }
}

/// `weighted_capacity` on `launch.instance_types`: 1 to 999, on every type or none (the
/// Auto Scaling group's rule for `WeightedCapacity`), each type once, and not for a fleet
/// backed by an Auto Scaling group (its weights are the group's own).
fn weights(l: &LaunchSpec, has_group: bool, r: &mut Report) {
    let path = &["launch", "instance_types"];
    let given = l
        .instance_types
        .iter()
        .filter(|t| t.weighted_capacity.is_some())
        .count();
    if given > 0 && has_group {
        r.at(
            path,
            "a fleet backed by an Auto Scaling group counts capacity in the group's own units: set weights in the group's mixed instances policy, not here",
        );
        return;
    }
    if given > 0 && given < l.instance_types.len() {
        r.at(
            path,
            "give weighted_capacity for every instance type or for none (as an Auto Scaling group requires): a type without one would count as 1 unit",
        );
    }
    for t in &l.instance_types {
        if let Some(w) = t.weighted_capacity {
            if !(1..=999).contains(&w) {
                r.at(
                    path,
                    format!(
                        "{}: weighted_capacity {w} must be a whole number of units from 1 to 999",
                        t.instance_type
                    ),
                );
            }
        }
        if t.instance_type.trim().is_empty() {
            r.at(path, "an instance type name is empty");
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for t in &l.instance_types {
        if !seen.insert(t.instance_type.as_str()) {
            r.at(
                path,
                format!(
                    "{} is listed twice; list each instance type once",
                    t.instance_type
                ),
            );
        }
    }
}
