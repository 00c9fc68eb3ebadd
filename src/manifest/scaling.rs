//! A fleet's `scaling:` section: limits, warmup and stabilization, and its policies
//! (predictive, target tracking, step, scheduled) with the metrics they read.

use super::simulation::default_boot;
use super::{cron, FleetSpec, HumanDuration, RepairSpec};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScalingSpec {
    #[serde(default)]
    pub policies: Vec<PolicySpec>,
    /// A new instance counts toward capacity at once but toward the utilization average
    /// only after this long. Set it to the boot time plus one metric period, so the metric
    /// already reflects the instance serving (AWS's default instance warmup is 300 s).
    #[serde(default = "default_warmup")]
    pub warmup: HumanDuration,
    /// Scale in only to the highest recommendation of this window. 10 minutes rides out
    /// the dips between bursts of web traffic without paying for a whole idle hour.
    #[serde(default = "default_stabilization")]
    pub scale_in_stabilization: HumanDuration,
    /// At most this many launches per reconcile pass, so a bad metric cannot buy a fleet
    /// in one step.
    #[serde(default = "default_launch_limit")]
    pub max_launch_per_cycle: u32,
    /// At most this many instances retired per pass.
    #[serde(default = "default_retire_limit")]
    pub max_retire_per_cycle: u32,
    /// A metric whose newest datapoint is older than this counts as missing. CloudWatch
    /// publishes 1-minute data about a minute late; 5 minutes means several misses in a row.
    #[serde(default = "default_stale")]
    pub metric_stale_after: HumanDuration,
    /// Longest wait for the load balancer to drain a deregistered instance before it is
    /// terminated anyway (keep it above the target group's deregistration delay).
    #[serde(default = "default_drain")]
    pub drain_timeout: HumanDuration,
    /// Replacing instances that fail their health checks or outlive
    /// `max_instance_lifetime` (see [`RepairSpec`]).
    #[serde(default)]
    pub repair: RepairSpec,
}

impl Default for ScalingSpec {
    fn default() -> Self {
        Self {
            policies: Vec::new(),
            warmup: default_warmup(),
            scale_in_stabilization: default_stabilization(),
            max_launch_per_cycle: default_launch_limit(),
            max_retire_per_cycle: default_retire_limit(),
            metric_stale_after: default_stale(),
            drain_timeout: default_drain(),
            repair: RepairSpec::default(),
        }
    }
}

fn default_warmup() -> HumanDuration {
    HumanDuration::secs(180)
}
fn default_stabilization() -> HumanDuration {
    HumanDuration::secs(600)
}
fn default_launch_limit() -> u32 {
    10
}
fn default_retire_limit() -> u32 {
    5
}
fn default_stale() -> HumanDuration {
    HumanDuration::secs(300)
}
fn default_drain() -> HumanDuration {
    HumanDuration::secs(330)
}

/// One scaling policy. Written as a one-key map: `- target_tracking: {...}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicySpec {
    TargetTracking(TargetTrackingSpec),
    Step(StepSpec),
    Scheduled(ScheduledSpec),
    Predictive(PredictiveSpec),
}

/// Forecast demand one boot time (plus the metric's lag) ahead from the fleet's own
/// history (daily and weekly seasonality, the recent trend, the latest value), and keep
/// enough instances for it plus a headroom sized from how wrong recent forecasts were.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PredictiveSpec {
    /// The fleet's demand: a total request count per period (e.g. the target group's
    /// RequestCount, stat Sum, kind total).
    pub metric: MetricSpec,
    /// Requests per metric period that one instance serves at 100%. May be left out on
    /// the simulated cloud, where `simulation.capacity_per_instance` is used.
    #[serde(default)]
    pub capacity_per_instance: Option<f64>,
    /// Time from launch to serving: how far ahead capacity has to be decided.
    #[serde(default = "default_boot")]
    pub boot: HumanDuration,
    /// The share of requests the headroom may fail to cover, judged on recent forecast
    /// errors: "0.05%" (or 0.0005). Smaller costs more instances.
    #[serde(default = "default_loss_budget")]
    pub loss_budget: Fraction,
    /// How much history to read at start (CloudWatch keeps 1-minute data 15 days).
    #[serde(default = "default_history")]
    pub history: HumanDuration,
}

fn default_loss_budget() -> Fraction {
    Fraction(0.0005)
}
fn default_history() -> HumanDuration {
    HumanDuration::secs(14 * 86_400)
}

impl PredictiveSpec {
    /// The capacity per instance this policy sizes with, in requests per metric period.
    pub fn capacity(&self, fleet: &FleetSpec) -> Option<f64> {
        self.capacity_per_instance.or_else(|| {
            fleet
                .simulation
                .as_ref()
                .map(|s| s.capacity_per_instance * self.metric.period.as_secs() as f64 / 60.0)
        })
    }
}

/// A share between 0 and 1, written as a number (0.0005) or a percentage ("0.05%").
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Fraction(pub f64);

impl<'de> Deserialize<'de> for Fraction {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{self, Visitor};
        struct V;
        impl Visitor<'_> for V {
            type Value = Fraction;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a share such as 0.0005 or \"0.05%\"")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Fraction, E> {
                if v.is_finite() && (0.0..1.0).contains(&v) {
                    Ok(Fraction(v))
                } else {
                    Err(E::custom(format!("{v} is not a share between 0 and 1")))
                }
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Fraction, E> {
                self.visit_f64(v as f64)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Fraction, E> {
                self.visit_f64(v as f64)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Fraction, E> {
                let t = v.trim();
                let parsed = match t.strip_suffix('%') {
                    Some(p) => p.trim().parse::<f64>().map(|x| x / 100.0),
                    None => t.parse::<f64>(),
                };
                match parsed {
                    Ok(x) => self.visit_f64(x),
                    Err(_) => Err(E::custom(format!(
                        "'{t}' is not a share: write 0.0005 or \"0.05%\""
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TargetTrackingSpec {
    pub metric: MetricSpec,
    /// Wanted value per instance (e.g. 60 for CPU %, 1000 for requests per target).
    pub target: f64,
    /// Let this policy scale out but never vote for a scale-in.
    #[serde(default)]
    pub disable_scale_in: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    pub metric: MetricSpec,
    /// Steps by lower bound; the highest one whose `above` the metric exceeds applies.
    #[serde(default)]
    pub scale_out: Vec<StepAdjustment>,
    /// Steps by upper bound; the lowest one whose `below` the metric is under applies.
    #[serde(default)]
    pub scale_in: Vec<StepAdjustment>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StepAdjustment {
    #[serde(default)]
    pub above: Option<f64>,
    #[serde(default)]
    pub below: Option<f64>,
    /// Instances to add (scale_out) or remove (scale_in): a count like 2, or a percentage
    /// of current capacity like "20%".
    pub change: Change,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Change {
    Count(u32),
    Percent(f64),
}

/// Written back the way it is read: `2` or `"20%"`.
impl Serialize for Change {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Change::Count(n) => s.serialize_u32(*n),
            Change::Percent(p) => s.serialize_str(&format!("{p}%")),
        }
    }
}

impl<'de> Deserialize<'de> for Change {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{self, Visitor};
        struct V;
        impl Visitor<'_> for V {
            type Value = Change;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number of instances such as 2, or a percentage such as \"20%\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Change, E> {
                u32::try_from(v)
                    .map(Change::Count)
                    .map_err(|_| E::custom("change is too large"))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Change, E> {
                Err(E::custom(format!(
                    "change is a size, not a direction: write {} (scale_in steps remove, scale_out steps add)",
                    v.unsigned_abs()
                )))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Change, E> {
                let t = v.trim();
                let Some(p) = t.strip_suffix('%') else {
                    return Err(E::custom(format!(
                        "'{t}' is not a change: write a count like 2 or a percentage like \"20%\""
                    )));
                };
                match p.trim().parse::<f64>() {
                    Ok(x) if x > 0.0 && x <= 1000.0 => Ok(Change::Percent(x)),
                    _ => Err(E::custom(format!(
                        "'{t}' is not a percentage between 0% and 1000%"
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduledSpec {
    #[serde(default)]
    pub name: Option<String>,
    /// Standard 5-field cron, read in `timezone`: `0 7 * * MON-FRI` is 07:00 on weekdays
    /// (see [`CronSchedule`]).
    pub cron: String,
    /// IANA time zone the cron is read in (`Europe/Paris`); UTC when absent.
    #[serde(default, with = "cron::zone_field")]
    pub timezone: Option<chrono_tz::Tz>,
    /// How long the floor holds after each cron start.
    pub duration: HumanDuration,
    /// Capacity floor while the window is open.
    pub min: u32,
}

/// How a metric relates to the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    /// Already a per-instance value (CPUUtilization of the group, RequestCountPerTarget).
    #[default]
    PerInstance,
    /// A fleet total (e.g. the target group's RequestCount): divided by warm instances.
    Total,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricSpec {
    pub namespace: String,
    pub name: String,
    #[serde(default)]
    pub dimensions: BTreeMap<String, String>,
    /// CloudWatch statistic: Average, Sum, Maximum, Minimum, SampleCount or pNN.
    #[serde(default = "default_stat")]
    pub stat: String,
    #[serde(default = "default_period")]
    pub period: HumanDuration,
    #[serde(default)]
    pub kind: MetricKind,
    /// What a read with no datapoint means, like a CloudWatch alarm's `TreatMissingData`.
    /// Default: `zero` for count statistics (`Sum`, `SampleCount`), because CloudWatch
    /// publishes no `RequestCount` datapoint for a load balancer that served nothing;
    /// `hold` for everything else (an `Average` with no data tells nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing_data: Option<MissingData>,
}

/// The treatment of a metric read that succeeded but holds no datapoint in the staleness
/// window (a failed read always holds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MissingData {
    /// No datapoint means no traffic: the metric reads 0.
    Zero,
    /// No datapoint means nothing is known: the policy holds capacity and warns.
    Hold,
}

fn default_stat() -> String {
    "Average".into()
}
fn default_period() -> HumanDuration {
    HumanDuration::secs(60)
}

impl MetricSpec {
    /// What the metric's values count, for labels and charts: `count` (per metric period:
    /// a `Sum` or `SampleCount`), `percent` (utilization), `bytes`, `seconds` (latency),
    /// or `none`. Following the units CloudWatch documents for the EC2 and ELB metrics.
    pub fn unit(&self) -> &'static str {
        let name = self.name.as_str();
        if matches!(self.stat.as_str(), "Sum" | "SampleCount") && !name.contains("Bytes") {
            "count"
        } else if name.contains("Utilization") || name.contains("Percent") {
            "percent"
        } else if name.contains("Bytes") || matches!(name, "NetworkIn" | "NetworkOut") {
            "bytes"
        } else if name.contains("Latency") || name.contains("ResponseTime") {
            "seconds"
        } else if name.contains("Count") {
            "count"
        } else {
            "none"
        }
    }

    /// The missing-data treatment in force: as written, else by the statistic (see
    /// [`MetricSpec::missing_data`]).
    pub fn missing_data(&self) -> MissingData {
        self.missing_data
            .unwrap_or(if matches!(self.stat.as_str(), "Sum" | "SampleCount") {
                MissingData::Zero
            } else {
                MissingData::Hold
            })
    }

    /// How old the newest datapoint may be, counted from the end of its period, before the
    /// metric is stale: `stale_after`, plus every period beyond the first minute, so a
    /// metric published every 10 minutes is on time for 10 minutes longer than a
    /// 1-minute one (its next datapoint cannot come sooner).
    pub fn stale_after(&self, stale_after: chrono::Duration) -> chrono::Duration {
        let extra =
            (self.period.chrono() - chrono::Duration::seconds(60)).max(chrono::Duration::zero());
        stale_after + extra
    }

    pub fn query(&self) -> crate::cloud::MetricQuery {
        crate::cloud::MetricQuery {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            dimensions: self.dimensions.clone(),
            stat: self.stat.clone(),
            period_secs: u32::try_from(self.period.as_secs()).unwrap_or(u32::MAX),
        }
    }
}

impl PolicySpec {
    pub fn metric(&self) -> Option<&MetricSpec> {
        match self {
            PolicySpec::TargetTracking(t) => Some(&t.metric),
            PolicySpec::Step(s) => Some(&s.metric),
            PolicySpec::Scheduled(_) => None,
            PolicySpec::Predictive(p) => Some(&p.metric),
        }
    }
}
