//! Validation of a parsed manifest set, by section, beside the schema it checks: each
//! problem is reported at the `file:line:column` of the key or value it is about, and a
//! set with any problem yields no config at all.
//!
//! - [`controller`]: the `kind: Controller` document, and the set-wide rules (one
//!   controller, unique fleet names, a global cap the minimums can keep);
//! - [`fleet`]: a fleet's identity, capacity, launch, scaling limits, repair, simulation;
//! - [`policies`]: scaling policies, and every metric query (policies and deploy gates);
//! - [`deploy`]: strategy, gates and hooks;
//! - [`schedules`]: every cron (scheduled policies, freeze windows, bursts).

mod controller;
mod deploy;
mod fleet;
mod policies;
mod schedules;

pub use controller::webhook_url_problem;
pub(super) use controller::{controller, set};
pub(super) use fleet::fleet;

use super::load::Problem;
use super::locate::{locate, locate_scalar};

/// One YAML document of a manifest file, for locating what a problem is about.
#[derive(Debug, Clone, Copy)]
pub(super) struct Doc<'a> {
    pub file: &'a str,
    /// The document's text.
    pub text: &'a str,
    /// Lines of the file before the document.
    pub offset: usize,
}

/// Collects problems located in one document.
pub(super) struct Report<'a, 'p> {
    doc: Doc<'a>,
    problems: &'p mut Vec<Problem>,
}

impl<'a, 'p> Report<'a, 'p> {
    pub(super) fn new(doc: Doc<'a>, problems: &'p mut Vec<Problem>) -> Self {
        Report { doc, problems }
    }

    /// A problem at the key `path` (or the deepest key of it that is there).
    pub(super) fn at(&mut self, path: &[&str], message: impl Into<String>) {
        let (line, column) = locate(self.doc.text, path);
        self.push(line, column, message.into());
    }

    /// A problem at the `nth` (from 0) value at `path`, where lists repeat it.
    pub(super) fn at_nth(&mut self, path: &[&str], nth: usize, message: impl Into<String>) {
        let (line, column) =
            locate_scalar(self.doc.text, path, nth).unwrap_or_else(|| locate(self.doc.text, path));
        self.push(line, column, message.into());
    }

    fn push(&mut self, line: usize, column: usize, message: String) {
        self.problems.push(Problem {
            file: self.doc.file.into(),
            line: line + self.doc.offset,
            column,
            message,
        });
    }
}

#[cfg(test)]
mod tests {
    use crate::manifest::load_str;

    const FLEET: &str = "name: web\nenvironment: production\nregion: us-east-1\nlaunch: { ami: ami-12345678, instance_types: [m6i.large] }\ncapacity: { min: 3, max: 10 }\nscaling:\n  policies:\n    - target_tracking:\n        metric: { namespace: AWS/ApplicationELB, name: RequestCountPerTarget, dimensions: { TargetGroup: targetgroup/a/1 }, stat: Sum }\n        target: 1000\n";

    fn problems(text: &str) -> String {
        load_str("m.yaml", text).expect_err("refused").to_string()
    }

    /// The instances distribution reads in the Auto Scaling group's terms; a wrong value
    /// is reported at its key with what to write.
    #[test]
    fn an_instances_distribution_reads_a_base_a_floor_and_a_percentage() {
        use crate::manifest::{OnDemandBase, SpotAllocationStrategy};
        let with = |d: &str| {
            FLEET.replace(
                "launch: { ami: ami-12345678, instance_types: [m6i.large] }",
                &format!("launch:\n  launch_template: {{ name: web, version: \"1\" }}\n  instance_types: [m6i.large]\n  instances_distribution: {d}"),
            )
        };
        let c = load_str(
            "m.yaml",
            &with(
                "{ on_demand_base_capacity: floor, on_demand_percentage_above_base_capacity: 20 }",
            ),
        )
        .expect("valid");
        let d = c.fleets[0]
            .launch
            .instances_distribution
            .clone()
            .expect("read");
        assert_eq!(d.on_demand_base_capacity, OnDemandBase::Floor);
        assert_eq!(d.on_demand_percentage_above_base_capacity, 20);
        assert_eq!(
            d.spot_allocation_strategy,
            SpotAllocationStrategy::PriceCapacityOptimized
        );
        assert!(d.uses_spot());
        let c = load_str(
            "m.yaml",
            &with("{ on_demand_base_capacity: 3, spot_allocation_strategy: capacity-optimized }"),
        )
        .expect("valid");
        let d = c.fleets[0]
            .launch
            .instances_distribution
            .clone()
            .expect("read");
        assert_eq!(d.on_demand_base_capacity, OnDemandBase::Units(3));
        assert!(
            !d.uses_spot(),
            "the percentage defaults to 100, as on an Auto Scaling group"
        );
        let err = problems(&with("{ on_demand_percentage_above_base_capacity: 120 }"));
        assert!(
            err.contains("m.yaml:7:") && err.contains("is a percent: 0 to 100"),
            "{err}"
        );
        let err = problems(&with("{ on_demand_base_capacity: lowest }"));
        assert!(
            err.contains("write a number of instances or `floor`"),
            "{err}"
        );
        let err = problems(&with(
            "{ on_demand_percentage_above_base_capacity: \"20%\" }",
        ));
        assert!(err.contains("a whole percent from 0 to 100"), "{err}");
        let err = problems(&with("{ on_demand_base_capacity: -1 }"));
        assert!(err.contains("must not be negative"), "{err}");
        let grouped = FLEET.replace(
            "launch: { ami: ami-12345678, instance_types: [m6i.large] }",
            "auto_scaling_group: web-asg\nlaunch: { instances_distribution: { on_demand_percentage_above_base_capacity: 0 } }",
        );
        let err = problems(&grouped);
        assert!(err.contains("mixed instances policy"), "{err}");
        // A price table in the manifest is checked where it is written: at its entry.
        let priced = format!("{FLEET}simulation:\n  capacity_per_instance: 100\n  traffic: {{ synthetic: {{ base: 1, peak: 2 }} }}\n  prices:\n    c6i.large: {{ on_demand: 0.1, spot: 0.03 }}\n    m6i.large: {{ on_demand: 0.1, spot: -0.03 }}\n");
        let err = problems(&priced);
        assert!(
            err.contains("m.yaml:16:5:") && err.contains("spot price -0.03"),
            "{err}"
        );
        // CreateFleet launches from a launch template: an AMI alone is refused, at its key.
        let bare = FLEET.replace(
            "launch: { ami: ami-12345678, instance_types: [m6i.large] }",
            "launch:\n  ami: ami-12345678\n  instances_distribution: { on_demand_percentage_above_base_capacity: 0 }",
        );
        let err = problems(&bare);
        assert!(
            err.contains("m.yaml:6:3:") && err.contains("give launch.launch_template"),
            "{err}"
        );
    }

    /// `instance_types` items are names or `{ instance_type, weighted_capacity }`; weights
    /// are 1 to 999, on every type or none, each type once, and not on a fleet backed by
    /// an Auto Scaling group. Problems are reported at the list, saying what to write.
    #[test]
    fn instance_weights_read_both_forms_and_follow_the_auto_scaling_group_rules() {
        let with = |types: &str| {
            FLEET.replace(
                "launch: { ami: ami-12345678, instance_types: [m6i.large] }",
                &format!("launch:\n  ami: ami-12345678\n  instance_types: {types}"),
            )
        };
        let c = load_str(
            "m.yaml",
            &with("[{ instance_type: m6i.large, weighted_capacity: 1 }, { instance_type: m6i.2xlarge, weighted_capacity: 4 }]"),
        )
        .expect("valid");
        let l = &c.fleets[0].launch;
        assert_eq!(l.type_names(), vec!["m6i.large", "m6i.2xlarge"]);
        assert_eq!(l.weight_of("m6i.2xlarge"), 4);
        assert_eq!(l.weight_of("m6i.large"), 1);
        assert_eq!(l.weight_of("c5.large"), 1, "a type not listed counts 1");
        assert_eq!((l.min_weight(), l.max_weight()), (1, 4));
        assert!(l.weighted());
        let plain = load_str("m.yaml", &with("[m6i.large, m5.large]")).expect("valid");
        let l = &plain.fleets[0].launch;
        assert!(!l.weighted());
        assert_eq!((l.min_weight(), l.max_weight()), (1, 1));
        let err = problems(&with(
            "[m6i.large, { instance_type: m6i.xlarge, weighted_capacity: 2 }]",
        ));
        assert!(
            err.contains("m.yaml:6:3:") && err.contains("every instance type or for none"),
            "{err}"
        );
        for bad in ["0", "1000"] {
            let err = problems(&with(&format!(
                "[{{ instance_type: m6i.large, weighted_capacity: {bad} }}]"
            )));
            assert!(err.contains("from 1 to 999"), "{bad}: {err}");
        }
        let err = problems(&with("[m6i.large, m6i.large]"));
        assert!(err.contains("listed twice"), "{err}");
        let err = problems(&with("[{ type: m6i.large, weight: 2 }]"));
        assert!(
            err.contains("{ instance_type: m6i.xlarge, weighted_capacity: 2 }"),
            "{err}"
        );
        let err = problems(&with(
            "[{ instance_type: m6i.large, weighted_capacity: 1.5 }]",
        ));
        assert!(err.contains("a whole number of units"), "{err}");
        let grouped = FLEET.replace(
            "launch: { ami: ami-12345678, instance_types: [m6i.large] }",
            "auto_scaling_group: web-asg\nlaunch: { instance_types: [{ instance_type: m6i.large, weighted_capacity: 2 }] }",
        );
        let err = problems(&grouped);
        assert!(err.contains("the group's own units"), "{err}");
    }

    /// Interruption rates per subnet must name exactly the fleet's subnets, checked where
    /// they are written.
    #[test]
    fn per_subnet_interruption_rates_name_the_fleets_subnets() {
        let with = |rates: &str| {
            format!(
                "{}simulation:\n  capacity_per_instance: 100\n  traffic: {{ synthetic: {{ base: 1, peak: 2 }} }}\n  prices:\n    m6i.large: {{ on_demand: 0.1, spot: 0.03, spot_interruptions_per_hour: {rates} }}\n",
                FLEET.replace(
                    "launch: { ami: ami-12345678, instance_types: [m6i.large] }",
                    "launch: { ami: ami-12345678, instance_types: [m6i.large], subnets: [subnet-a, subnet-b] }",
                )
            )
        };
        assert!(load_str("m.yaml", &with("{ subnet-a: 0.01, subnet-b: 0.02 }")).is_ok());
        assert!(load_str("m.yaml", &with("0.01")).is_ok());
        let err = problems(&with("{ subnet-a: 0.01 }"));
        assert!(
            err.contains("m.yaml:15:") && err.contains("has none for subnet-b"),
            "{err}"
        );
        let err = problems(&with("{ subnet-a: 0.01, subnet-b: 0.02, subnet-zz: 0.1 }"));
        assert!(
            err.contains("names subnet-zz, not in launch.subnets"),
            "{err}"
        );
        let err = problems(&with("{ subnet-a: 0.01, subnet-b: 2 }"));
        assert!(err.contains("must be between 0 and 1"), "{err}");
    }

    /// Valid but probably not meant: a base at the maximum (no Spot ever), a price table
    /// without the fleet's types, weights close to the maximum. Notes, not refusals.
    #[test]
    fn notes_say_what_is_valid_but_probably_not_meant() {
        let fleet = |launch: &str, extra: &str| {
            let text = FLEET.replace(
                "launch: { ami: ami-12345678, instance_types: [m6i.large] }",
                launch,
            );
            load_str("m.yaml", &format!("{text}{extra}"))
                .expect("valid")
                .fleets[0]
                .notes()
        };
        let plain = fleet(
            "launch: { ami: ami-12345678, instance_types: [m6i.large] }",
            "",
        );
        assert!(plain.is_empty(), "{plain:?}");
        let based = fleet(
            "launch:\n  launch_template: { name: web, version: \"1\" }\n  instances_distribution: { on_demand_base_capacity: 10, on_demand_percentage_above_base_capacity: 0 }",
            "",
        );
        assert!(
            based
                .iter()
                .any(|n| n.contains("every instance is On-Demand")),
            "{based:?}"
        );
        let unpriced = fleet(
            "launch: { ami: ami-12345678, instance_types: [m6i.large, m5.large] }",
            "simulation:\n  capacity_per_instance: 100\n  traffic: { synthetic: { base: 1, peak: 2 } }\n  prices:\n    m6i.large: { on_demand: 0.1, spot: 0.03 }\n",
        );
        assert!(
            unpriced
                .iter()
                .any(|n| n.contains("no price for m5.large") && !n.contains("refuses")),
            "{unpriced:?}"
        );
        let heavy = fleet(
            "launch: { ami: ami-12345678, instance_types: [{ instance_type: m6i.4xlarge, weighted_capacity: 8 }] }",
            "",
        );
        assert!(
            heavy
                .iter()
                .any(|n| n.contains("twice the largest weighted_capacity (8)")),
            "{heavy:?}"
        );
        let heavier = fleet(
            "launch: { ami: ami-12345678, instance_types: [{ instance_type: m6i.8xlarge, weighted_capacity: 16 }] }",
            "",
        );
        assert!(
            heavier
                .iter()
                .any(|n| n.contains("(16 units) is more than capacity.max 10")),
            "{heavier:?}"
        );
        let grouped = fleet(
            "auto_scaling_group: web-asg\nlaunch: { instance_types: [m6i.large] }",
            "",
        );
        assert!(
            grouped
                .iter()
                .any(|n| n.contains("not used for a fleet backed by an Auto Scaling group")),
            "{grouped:?}"
        );
        let no_spot = fleet(
            "launch:\n  launch_template: { name: web, version: \"1\" }\n  instances_distribution: { spot_allocation_strategy: lowest-price }",
            "",
        );
        assert!(
            no_spot
                .iter()
                .any(|n| n.contains("no capacity goes to Spot")),
            "{no_spot:?}"
        );
    }

    /// With instance weights the cap is compared with the instances the minimum takes on
    /// the first type (the one launched first): 8 units on 2-unit instances are 4.
    #[test]
    fn the_cap_check_counts_instances_of_the_first_type() {
        let text = |cap: u32| {
            format!(
                "kind: Controller\ncontroller_id: main\nmax_total_instances: {cap}\n---\n{}",
                FLEET
                    .replace(
                        "launch: { ami: ami-12345678, instance_types: [m6i.large] }",
                        "launch: { ami: ami-12345678, instance_types: [{ instance_type: m6i.xlarge, weighted_capacity: 2 }, { instance_type: m6i.2xlarge, weighted_capacity: 4 }] }",
                    )
                    .replace("capacity: { min: 3, max: 10 }", "capacity: { min: 8, max: 20 }")
            )
        };
        assert!(load_str("m.yaml", &text(4)).is_ok());
        let err = problems(&text(3));
        assert!(err.contains("capacity.min added up (4 instances)"), "{err}");
    }

    /// A controller setting is reported at its own key, not at the top of the file.
    #[test]
    fn controller_problems_point_at_their_key() {
        let text = format!(
            "# the platform's controller\nkind: Controller\ncontroller_id: main\nmax_total_instances: 2\n---\n{FLEET}"
        );
        let err = problems(&text);
        assert!(
            err.contains(
                "m.yaml:4:1: max_total_instances: 2 is below the fleets' capacity.min added up (3 instances)"
            ),
            "{err}"
        );
        let err = problems(&format!(
            "kind: Controller\npoll_interval: 0s\ncontroller_id: a b\n---\n{FLEET}"
        ));
        assert!(
            err.contains("m.yaml:2:1: poll_interval must be at least 1s"),
            "{err}"
        );
        assert!(err.contains("m.yaml:3:1: controller_id must be"), "{err}");
        // A second controller document is reported where it starts.
        let err = problems(&format!(
            "kind: Controller\n---\n{FLEET}---\nkind: Controller\n"
        ));
        assert!(
            err.contains(":14:1: a second `kind: Controller` document"),
            "{err}"
        );
    }

    /// A deploy gate's metric query is checked like a scaling policy's: the same statistic,
    /// period and dimension rules, at the gate's own lines.
    #[test]
    fn deploy_gate_metrics_are_checked_like_scaling_metrics() {
        let gate = |metric: &str, limit: &str| {
            format!("{FLEET}deploy:\n  gates:\n    metrics:\n      - metric: {metric}\n{limit}")
        };
        let err = problems(&gate(
            "{ namespace: App, name: ErrorRate, stat: Mean }",
            "        below: 0.01\n",
        ));
        assert!(
            err.contains("m.yaml:14:") && err.contains("unknown statistic 'Mean'"),
            "{err}"
        );
        let err = problems(&gate(
            "{ namespace: App, name: ErrorRate, period: 45s }",
            "        below: 0.01\n",
        ));
        assert!(
            err.contains("metric period 45s is not one CloudWatch accepts"),
            "{err}"
        );
        let err = problems(&gate(
            "{ namespace: AWS/ApplicationELB, name: HTTPCode_Target_5XX_Count, dimensions: { \"coxswain:fleet\": web } }",
            "        below: 5\n",
        ));
        assert!(err.contains("AWS/ApplicationELB does not publish"), "{err}");
        let err = problems(&gate("{ namespace: App, name: ErrorRate }", ""));
        assert!(err.contains("needs `below` or `above`"), "{err}");
        assert!(load_str(
            "m.yaml",
            &gate(
                "{ namespace: App, name: ErrorRate, stat: p99 }",
                "        below: 0.01\n"
            )
        )
        .is_ok());
    }
}
