//! A fleet's `launch.instances_distribution` (On-Demand and Spot, in the Auto Scaling
//! group's terms) and the price table `simulate` prices capacity with.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How the fleet's capacity divides between On-Demand and Spot. Field names and defaults
/// are the Auto Scaling group's `InstancesDistribution` (Amazon EC2 Auto Scaling API
/// Reference): without this section, or with the defaults, every instance is On-Demand.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InstancesDistribution {
    /// Capacity filled by On-Demand first: a number of units, or `floor`, the least
    /// capacity the fleet wanted over the last 24 hours (what it never goes below stays
    /// On-Demand; what comes and goes with the day may be Spot). Default 0.
    #[serde(default)]
    pub on_demand_base_capacity: OnDemandBase,
    /// Percent of the capacity above the base that is On-Demand (0 to 100); the rest is
    /// Spot. A fraction is rounded in favour of On-Demand. Default 100 (no Spot).
    #[serde(default = "hundred", deserialize_with = "percent")]
    pub on_demand_percentage_above_base_capacity: u8,
    /// How Spot capacity is spread over the pools (instance type × Availability Zone), as
    /// EC2 Fleet's `SpotOptions.AllocationStrategy`. Default `price-capacity-optimized`.
    #[serde(default)]
    pub spot_allocation_strategy: SpotAllocationStrategy,
}

fn hundred() -> u8 {
    100
}

/// A whole percent, 0 to 100, with an error that says so (not "expected u8").
fn percent<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    struct V;
    impl serde::de::Visitor<'_> for V {
        type Value = u8;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a whole percent from 0 to 100 (20, not \"20%\" or 0.2)")
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<u8, E> {
            u8::try_from(v)
                .ok()
                .filter(|p| *p <= 100)
                .ok_or_else(|| E::custom(format!("{v} is a percent: 0 to 100")))
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<u8, E> {
            u64::try_from(v)
                .map_err(|_| E::custom(format!("{v} is a percent: 0 to 100")))
                .and_then(|v| self.visit_u64(v))
        }
    }
    d.deserialize_any(V)
}

impl Default for InstancesDistribution {
    fn default() -> Self {
        InstancesDistribution {
            on_demand_base_capacity: OnDemandBase::default(),
            on_demand_percentage_above_base_capacity: 100,
            spot_allocation_strategy: SpotAllocationStrategy::default(),
        }
    }
}

impl InstancesDistribution {
    /// Whether any capacity can be Spot.
    pub fn uses_spot(&self) -> bool {
        self.on_demand_percentage_above_base_capacity < 100
    }
}

/// `on_demand_base_capacity`: a fixed number of units, or the fleet's 24-hour floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDemandBase {
    Units(u32),
    /// The least capacity the fleet wanted over the last 24 hours.
    Floor,
}

impl Default for OnDemandBase {
    fn default() -> Self {
        OnDemandBase::Units(0)
    }
}

impl Serialize for OnDemandBase {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            OnDemandBase::Units(n) => s.serialize_u32(*n),
            OnDemandBase::Floor => s.serialize_str("floor"),
        }
    }
}

impl<'de> Deserialize<'de> for OnDemandBase {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = OnDemandBase;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number of capacity units, or `floor`")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<OnDemandBase, E> {
                u32::try_from(v)
                    .map(OnDemandBase::Units)
                    .map_err(|_| E::custom(format!("{v} is too large a base capacity")))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<OnDemandBase, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom(format!(
                        "on_demand_base_capacity {v} must not be negative"
                    ))),
                }
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<OnDemandBase, E> {
                match v {
                    "floor" => Ok(OnDemandBase::Floor),
                    other => Err(E::custom(format!(
                        "on_demand_base_capacity `{other}`: write a number of instances or `floor`"
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// EC2 Fleet's Spot allocation strategies (`SpotOptions.AllocationStrategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SpotAllocationStrategy {
    /// Pools with the lowest interruption risk among the cheapest (AWS's recommendation).
    #[default]
    PriceCapacityOptimized,
    CapacityOptimized,
    LowestPrice,
    Diversified,
}

impl SpotAllocationStrategy {
    /// The value EC2 CreateFleet takes.
    pub fn as_aws(self) -> &'static str {
        match self {
            SpotAllocationStrategy::PriceCapacityOptimized => "price-capacity-optimized",
            SpotAllocationStrategy::CapacityOptimized => "capacity-optimized",
            SpotAllocationStrategy::LowestPrice => "lowest-price",
            SpotAllocationStrategy::Diversified => "diversified",
        }
    }
}

/// What an instance type costs, per instance-hour in US dollars, and how often its Spot
/// capacity is taken back.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InstancePrice {
    /// USD per On-Demand instance-hour.
    pub on_demand: f64,
    /// USD per Spot instance-hour (the recent Spot price; on AWS,
    /// DescribeSpotPriceHistory).
    pub spot: f64,
    /// Chance per Spot instance and hour of an interruption (a two-minute warning, then
    /// the instance is gone): one number for every pool of this type, or a map from
    /// subnet to the rate of the pool (this type in that subnet's zone). The Spot Instance
    /// Advisor's "<5%" bucket (under 5% of instances interrupted in a month) is about
    /// 0.00007. Default 0.
    #[serde(default)]
    pub spot_interruptions_per_hour: InterruptionRate,
}

/// A Spot interruption rate (chance per instance and hour): the same in every pool of an
/// instance type, or per subnet (`{ subnet-a: 0.0001, subnet-b: 0.002 }`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum InterruptionRate {
    Every(f64),
    BySubnet(BTreeMap<String, f64>),
}

impl Default for InterruptionRate {
    fn default() -> Self {
        InterruptionRate::Every(0.0)
    }
}

impl InterruptionRate {
    /// The rate of the pool in `subnet` (`None`: the launch template's); `None` when the
    /// rates are per subnet and this one has none.
    pub fn of(&self, subnet: Option<&str>) -> Option<f64> {
        match self {
            InterruptionRate::Every(r) => Some(*r),
            InterruptionRate::BySubnet(m) => subnet.and_then(|s| m.get(s).copied()),
        }
    }

    /// What is wrong with per-subnet rates for a fleet in `subnets`: a subnet of the
    /// fleet without a rate, or a rate for a subnet the fleet does not have. `None` when
    /// they fit (or the rate is one number).
    pub fn problem_for(&self, subnets: &[String]) -> Option<String> {
        let InterruptionRate::BySubnet(m) = self else {
            return None;
        };
        if subnets.is_empty() {
            return Some(
                "spot_interruptions_per_hour is given per subnet, and the fleet lists no launch.subnets: give one number".into(),
            );
        }
        let missing: Vec<&str> = subnets
            .iter()
            .filter(|s| !m.contains_key(*s))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Some(format!(
                "spot_interruptions_per_hour is given per subnet and has none for {}: give every subnet of launch.subnets a rate",
                missing.join(", ")
            ));
        }
        let unknown: Vec<&str> = m
            .keys()
            .filter(|k| !subnets.contains(k))
            .map(String::as_str)
            .collect();
        if !unknown.is_empty() {
            return Some(format!(
                "spot_interruptions_per_hour names {}, not in launch.subnets ({})",
                unknown.join(", "),
                subnets.join(", ")
            ));
        }
        None
    }

    /// Every rate written.
    pub fn values(&self) -> Vec<f64> {
        match self {
            InterruptionRate::Every(r) => vec![*r],
            InterruptionRate::BySubnet(m) => m.values().copied().collect(),
        }
    }
}

impl std::fmt::Display for InterruptionRate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InterruptionRate::Every(r) => write!(f, "{r}"),
            InterruptionRate::BySubnet(m) => {
                let parts: Vec<String> = m.iter().map(|(s, r)| format!("{s} {r}")).collect();
                write!(f, "{}", parts.join(", "))
            }
        }
    }
}

/// Prices by instance type (`m6i.large: { on_demand: 0.096, spot: 0.035 }`).
pub type PriceTable = BTreeMap<String, InstancePrice>;

/// Read a price table file (YAML, a map from instance type to [`InstancePrice`]) and
/// check every number. Errors name the file and the entry.
pub fn load_prices(path: &std::path::Path) -> Result<PriceTable, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the price table {}: {e}", path.display()))?;
    let table: PriceTable = serde_yaml::from_str(&text).map_err(|e| {
        format!(
            "{}: not a price table: {e} (the file holds the map alone, `m6i.large: {{ on_demand: 0.096, spot: 0.0384 }}`, without a `prices:` key)",
            path.display()
        )
    })?;
    check_prices(&table).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(table)
}

/// Every price finite and not negative, every interruption rate a probability.
pub fn check_prices(table: &PriceTable) -> Result<(), String> {
    if table.is_empty() {
        return Err("the price table is empty".into());
    }
    for (ty, p) in table {
        for (what, v) in [("on_demand", p.on_demand), ("spot", p.spot)] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(format!(
                    "{ty}: {what} price {v} must be a number of dollars, at least 0"
                ));
            }
        }
        if p.spot > p.on_demand {
            return Err(format!(
                "{ty}: spot price {} is above the On-Demand price {}: EC2 never charges Spot more than On-Demand (its default maximum price), so one of them is wrong",
                p.spot, p.on_demand
            ));
        }
        for r in p.spot_interruptions_per_hour.values() {
            if !(r.is_finite() && (0.0..=1.0).contains(&r)) {
                return Err(format!(
                    "{ty}: spot_interruptions_per_hour {r} must be between 0 and 1"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_price_table_is_read_and_every_number_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("prices.yaml");
        let write = |text: &str| std::fs::write(&path, text).expect("write");
        write("m6i.large: { on_demand: 0.096, spot: 0.0384, spot_interruptions_per_hour: 0.0003 }\nc6i.large: { on_demand: 0.085, spot: 0.034 }\n");
        let t = load_prices(&path).expect("valid");
        assert_eq!(t["m6i.large"].spot, 0.0384);
        assert_eq!(
            t["c6i.large"].spot_interruptions_per_hour,
            InterruptionRate::Every(0.0)
        );
        write("m6i.large: { on_demand: -1, spot: 0.03 }\n");
        let err = load_prices(&path).expect_err("negative");
        assert!(err.contains("m6i.large: on_demand price -1"), "{err}");
        write("m6i.large: { on_demand: 0.1, spot: 0.03, spot_interruptions_per_hour: 2 }\n");
        assert!(load_prices(&path)
            .expect_err("rate")
            .contains("between 0 and 1"));
        write("m6i.large: { on_demand: 0.1, spot: 0.03, spot_price: 1 }\n");
        assert!(load_prices(&path)
            .expect_err("unknown")
            .contains("not a price table"));
        write("m6i.large: { on_demand: 0.1, spot: 0.2 }\n");
        assert!(load_prices(&path)
            .expect_err("spot above")
            .contains("above the On-Demand price"));
        write("{}\n");
        assert!(load_prices(&path).expect_err("empty").contains("empty"));
        let err = load_prices(&dir.path().join("missing.yaml")).expect_err("missing");
        assert!(err.contains("cannot read the price table"), "{err}");
    }
}
