//! A fleet's `simulation:` section: how the simulated cloud (and `simulate`) models it:
//! capacity per instance, boot time, and synthetic or replayed traffic.

use super::{cron, HumanDuration, PolicySpec, SinkSpec, StrategySpec};
use serde::{Deserialize, Serialize};

/// The simulated region's model of a fleet (used only by `--cloud sim`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SimulationSpec {
    /// Requests per minute one instance serves at 100% CPU.
    pub capacity_per_instance: f64,
    /// Time from launch to serving.
    #[serde(default = "default_boot")]
    pub boot: HumanDuration,
    pub traffic: TrafficSpec,
    /// What capacity costs, by instance type, for `simulate`'s report in dollars (a
    /// `--prices` file takes the place of this table).
    #[serde(default)]
    pub prices: Option<super::PriceTable>,
}

pub(super) fn default_boot() -> HumanDuration {
    HumanDuration::secs(180)
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TrafficSpec {
    /// A synthetic week: daily swing, quieter weekends, and bursts (course launches,
    /// exam deadlines).
    Synthetic(SyntheticTraffic),
    /// Replay a `timestamp,requests` CSV, looping.
    Trace(TraceTraffic),
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SyntheticTraffic {
    /// Requests per minute at the quietest hour.
    pub base: f64,
    /// Requests per minute at the daily peak on a weekday.
    pub peak: f64,
    /// Hour of the daily peak, UTC.
    #[serde(default = "default_peak_hour")]
    pub peak_hour: f64,
    /// Weekend demand as a fraction of weekday demand.
    #[serde(default = "default_weekend")]
    pub weekend_factor: f64,
    /// Bursts: at each cron start, demand is multiplied by `factor` for `duration`.
    #[serde(default)]
    pub bursts: Vec<BurstSpec>,
    /// Relative noise per minute (0.05 = ±5%), deterministic for a given seed.
    #[serde(default = "default_noise")]
    pub noise: f64,
    #[serde(default)]
    pub seed: u64,
}

fn default_peak_hour() -> f64 {
    14.0
}
fn default_weekend() -> f64 {
    0.6
}
fn default_noise() -> f64 {
    0.05
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BurstSpec {
    /// Start of each burst: standard 5-field cron, read in `timezone`.
    pub cron: String,
    /// IANA time zone the cron is read in; UTC when absent.
    #[serde(default, with = "cron::zone_field")]
    pub timezone: Option<chrono_tz::Tz>,
    pub duration: HumanDuration,
    pub factor: f64,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TraceTraffic {
    pub path: std::path::PathBuf,
    #[serde(default = "one")]
    pub scale: f64,
}

fn one() -> f64 {
    1.0
}

/// Deserialize an enum written as a one-key map (`step: {...}`), streaming the value so
/// that errors inside it keep their exact line and column (serde_yaml 0.9 only accepts
/// `!tag` syntax for enums, which nobody writes by hand).
macro_rules! one_key_enum {
    ($ty:ident, $what:literal, $( $key:literal => $variant:ident ),+ $(,)?) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                use serde::de::{self, MapAccess, Visitor};
                const KEYS: &[&str] = &[$($key),+];
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        write!(f, "a {} written as a one-key map: {}", $what, KEYS.join(", "))
                    }
                    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<$ty, A::Error> {
                        let key: String = map.next_key()?.ok_or_else(|| {
                            de::Error::custom(format!("empty {}: write one of {}", $what, KEYS.join(", ")))
                        })?;
                        let value = match key.as_str() {
                            $($key => $ty::$variant(map.next_value()?),)+
                            other => return Err(de::Error::unknown_variant(other, KEYS)),
                        };
                        if let Some(extra) = map.next_key::<String>()? {
                            return Err(de::Error::custom(format!(
                                "a {} has one key; `{extra}` must start its own list item (`- {extra}: ...`) or be indented under `{key}`",
                                $what
                            )));
                        }
                        Ok(value)
                    }
                }
                d.deserialize_map(V)
            }
        }
    };
}

one_key_enum!(PolicySpec, "scaling policy", "target_tracking" => TargetTracking, "step" => Step, "scheduled" => Scheduled, "predictive" => Predictive);
one_key_enum!(TrafficSpec, "traffic model", "synthetic" => Synthetic, "trace" => Trace);
one_key_enum!(StrategySpec, "deploy strategy", "rolling" => Rolling, "canary" => Canary, "blue_green" => BlueGreen);
one_key_enum!(SinkSpec, "notification sink", "slack" => Slack, "opsgenie" => Opsgenie);
