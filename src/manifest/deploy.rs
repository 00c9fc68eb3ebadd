//! The `deploy:` section of a fleet manifest: how builds roll out, which gates they must
//! pass, what they need before they may start.

use super::{HumanDuration, MetricSpec};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeploySpec {
    #[serde(default)]
    pub strategy: StrategySpec,
    #[serde(default)]
    pub gates: GatesSpec,
    #[serde(default)]
    pub promotion: PromotionSpec,
    /// Cron windows in which deploys are refused (exit 2), e.g. Friday evening to Monday.
    #[serde(default)]
    pub freeze: Vec<FreezeSpec>,
    /// A second deploy request for a fleet with one in progress: wait for it, or replace it.
    #[serde(default)]
    pub on_conflict: OnConflict,
    #[serde(default)]
    pub hooks: HooksSpec,
}

impl Default for DeploySpec {
    fn default() -> Self {
        Self {
            strategy: StrategySpec::default(),
            gates: GatesSpec::default(),
            promotion: PromotionSpec::default(),
            freeze: Vec::new(),
            on_conflict: OnConflict::Queue,
            hooks: HooksSpec::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnConflict {
    #[default]
    Queue,
    Supersede,
}

/// How many instances: a count (`2`) or a share of the fleet's desired capacity (`"25%"`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Amount {
    Count(u32),
    Percent(f64),
}

impl Amount {
    /// Resolve against a desired capacity, rounding a percentage up (25% of 6 is 2): for
    /// what is added (surge, batch, canary step), as Kubernetes rounds `maxSurge`.
    pub fn of(self, desired: u32) -> u32 {
        match self {
            Amount::Count(n) => n,
            Amount::Percent(p) => crate::policy::ceil_count(f64::from(desired) * p / 100.0),
        }
    }

    /// Resolve against a desired capacity, rounding a percentage down (25% of 6 is 1, of
    /// 1 is 0): for what may be taken away (`max_unavailable`), as Kubernetes rounds
    /// `maxUnavailable`, so a small fleet never loses more than its share.
    pub fn of_down(self, desired: u32) -> u32 {
        match self {
            Amount::Count(n) => n,
            Amount::Percent(p) => {
                let x = f64::from(desired) * p / 100.0;
                // Float noise forgiven: 10% of 30 is 3, not 2.9999.
                (x + 1e-9).floor().clamp(0.0, f64::from(u32::MAX)) as u32
            }
        }
    }

    /// Zero whatever the fleet's size.
    pub fn is_zero(self) -> bool {
        match self {
            Amount::Count(n) => n == 0,
            Amount::Percent(p) => p <= 0.0,
        }
    }
}

/// As written in a manifest: `2` or `25%`.
impl std::fmt::Display for Amount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Amount::Count(n) => write!(f, "{n}"),
            Amount::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// Written back the way it is read: `2` or `"25%"`.
impl Serialize for Amount {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Amount::Count(n) => s.serialize_u32(*n),
            Amount::Percent(_) => s.serialize_str(&self.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{self, Visitor};
        struct V;
        impl Visitor<'_> for V {
            type Value = Amount;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number of instances such as 2, or a share such as \"25%\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Amount, E> {
                u32::try_from(v)
                    .map(Amount::Count)
                    .map_err(|_| E::custom("too large"))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Amount, E> {
                u32::try_from(v)
                    .map(Amount::Count)
                    .map_err(|_| E::custom("a number of instances cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Amount, E> {
                let t = v.trim();
                if let Some(p) = t.strip_suffix('%') {
                    return match p.trim().parse::<f64>() {
                        Ok(x) if x > 0.0 && x <= 100.0 => Ok(Amount::Percent(x)),
                        _ => Err(E::custom(format!(
                            "'{t}' is not a share between 0% and 100%"
                        ))),
                    };
                }
                t.parse::<u32>().map(Amount::Count).map_err(|_| {
                    E::custom(format!(
                        "'{t}' is not a count like 2 or a share like \"25%\""
                    ))
                })
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StrategySpec {
    Rolling(RollingSpec),
    Canary(CanarySpec),
    BlueGreen(BlueGreenSpec),
}

impl Default for StrategySpec {
    fn default() -> Self {
        StrategySpec::Rolling(RollingSpec::default())
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RollingSpec {
    /// New instances per step, of the desired capacity at that moment.
    #[serde(default = "quarter")]
    pub batch: Amount,
    /// Extra instances allowed above desired while a step runs.
    #[serde(default = "quarter")]
    pub max_surge: Amount,
    /// How far below desired the healthy count may go. 0: never below.
    #[serde(default = "zero")]
    pub max_unavailable: Amount,
    /// Wait this long with gates green after each step.
    #[serde(default)]
    pub bake: HumanDuration,
}

impl Default for RollingSpec {
    fn default() -> Self {
        Self {
            batch: quarter(),
            max_surge: quarter(),
            max_unavailable: zero(),
            bake: HumanDuration::secs(0),
        }
    }
}

fn quarter() -> Amount {
    Amount::Percent(25.0)
}
fn zero() -> Amount {
    Amount::Count(0)
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CanarySpec {
    /// New-build share per step; the last must be 100%.
    #[serde(default = "default_canary_steps")]
    pub steps: Vec<Amount>,
    /// Time each step runs with gates green before the next.
    #[serde(default = "default_bake")]
    pub bake: HumanDuration,
    /// Shift traffic by weight on an ALB listener: the new build serves from its own
    /// target group, and the listener forwards each step's share to it. Without this,
    /// traffic follows the instance share in the fleet's one target group.
    #[serde(default)]
    pub traffic: Option<CanaryTraffic>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryTraffic {
    /// The listener whose default action forwards to the fleet's target group.
    pub listener_arn: String,
    /// A second target group (same port and health check) for the new build.
    pub canary_target_group_arn: String,
}

impl CanarySpec {
    /// The default steps (1 instance, 10%, 50%, 100%) with no bake, for tests.
    pub fn default_steps_for_test() -> CanarySpec {
        CanarySpec {
            steps: default_canary_steps(),
            bake: HumanDuration::secs(0),
            traffic: None,
        }
    }
}

fn default_canary_steps() -> Vec<Amount> {
    vec![
        Amount::Count(1),
        Amount::Percent(10.0),
        Amount::Percent(50.0),
        Amount::Percent(100.0),
    ]
}
fn default_bake() -> HumanDuration {
    HumanDuration::secs(300)
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BlueGreenSpec {
    /// Keep the old set (deregistered, running) this long after the switch, for instant
    /// rollback, then retire it.
    #[serde(default = "default_keep_old")]
    pub keep_old: HumanDuration,
    #[serde(default)]
    pub bake: HumanDuration,
}

fn default_keep_old() -> HumanDuration {
    HumanDuration::secs(1800)
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GatesSpec {
    /// Longest a step may take to go green; past it the rollout rolls back.
    #[serde(default = "default_gate_timeout")]
    pub timeout: HumanDuration,
    /// How often gates are checked while a rollout runs.
    #[serde(default = "default_gate_interval")]
    pub interval: HumanDuration,
    #[serde(default)]
    pub instance: InstanceGates,
    /// CloudWatch alarms that must not be in ALARM.
    #[serde(default)]
    pub alarms: Vec<String>,
    /// Conditions on metrics over the bake window. `{build}` in a dimension value is
    /// replaced with the new build's id.
    #[serde(default)]
    pub metrics: Vec<MetricGate>,
    /// Canary against baseline: the new build's samples must not be significantly worse.
    #[serde(default)]
    pub canary_analysis: Option<CanaryAnalysisSpec>,
}

impl Default for GatesSpec {
    fn default() -> Self {
        Self {
            timeout: default_gate_timeout(),
            interval: default_gate_interval(),
            instance: InstanceGates::default(),
            alarms: Vec::new(),
            metrics: Vec::new(),
            canary_analysis: None,
        }
    }
}

fn default_gate_timeout() -> HumanDuration {
    HumanDuration::secs(900)
}
/// 15 s: new instances and fresh datapoints are noticed quickly without hammering AWS.
fn default_gate_interval() -> HumanDuration {
    HumanDuration::secs(15)
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceGates {
    /// EC2 system and instance status checks ok.
    #[serde(default = "yes")]
    pub status_checks: bool,
    /// Healthy in the fleet's target group (when it has one).
    #[serde(default = "yes")]
    pub target_healthy: bool,
    /// A command run on the controller host per new instance before it is registered
    /// with the target group (it serves no traffic until it passes); `{address}` and
    /// `{id}` are replaced. Exit 0 within 60 s is a pass.
    #[serde(default)]
    pub smoke_command: Option<Vec<String>>,
    /// Tries of the smoke command per instance (one per gate interval, each within 60 s)
    /// before the gate fails; every failed try is reported at once. Default 3.
    #[serde(default = "three")]
    pub smoke_attempts: u32,
}

impl Default for InstanceGates {
    fn default() -> Self {
        Self {
            status_checks: true,
            target_healthy: true,
            smoke_command: None,
            smoke_attempts: 3,
        }
    }
}

fn three() -> u32 {
    3
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricGate {
    pub metric: MetricSpec,
    /// Pass only while every datapoint of the bake window is below this.
    #[serde(default)]
    pub below: Option<f64>,
    /// Pass only while every datapoint of the bake window is above this.
    #[serde(default)]
    pub above: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryAnalysisSpec {
    /// The metric, with `{build}` in a dimension: read once for the new build (canary)
    /// and once for the old one (baseline).
    pub metric: MetricSpec,
    /// Larger values are worse (error rates, latency). False for throughput-like metrics.
    #[serde(default = "yes")]
    pub higher_is_worse: bool,
    /// Significance level of the one-sided Mann-Whitney U test.
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// Fewer samples than this on either side is missing data: not a pass.
    #[serde(default = "default_min_samples")]
    pub min_samples: usize,
}

fn default_alpha() -> f64 {
    0.05
}
fn default_min_samples() -> usize {
    5
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PromotionSpec {
    /// Environments the build must have gone live in (all gates green) first.
    #[serde(default)]
    pub requires: Vec<String>,
    /// A human sign-off is needed: `coxswain approve FLEET --build B --by NAME`.
    #[serde(default)]
    pub approval: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FreezeSpec {
    /// Start of each freeze window: standard 5-field cron, read in `timezone`.
    pub cron: String,
    /// IANA time zone the cron is read in (`Europe/Paris`); UTC when absent.
    #[serde(default, with = "crate::manifest::cron::zone_field")]
    pub timezone: Option<chrono_tz::Tz>,
    pub duration: HumanDuration,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct HooksSpec {
    /// Run before any instance changes; a failure aborts the deploy.
    #[serde(default)]
    pub pre_deploy: Vec<HookSpec>,
    /// Run once the new build is live.
    #[serde(default)]
    pub post_deploy: Vec<HookSpec>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HookSpec {
    /// Program and arguments (no shell). `{build}`, `{fleet}` and `{env}` are replaced.
    pub command: Vec<String>,
    #[serde(default = "default_hook_timeout")]
    pub timeout: HumanDuration,
}

fn default_hook_timeout() -> HumanDuration {
    HumanDuration::secs(600)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deploy_settings_survive_a_round_trip_through_json() {
        let spec = DeploySpec {
            strategy: StrategySpec::Canary(CanarySpec {
                steps: vec![
                    Amount::Count(1),
                    Amount::Percent(12.5),
                    Amount::Percent(100.0),
                ],
                bake: HumanDuration::secs(90),
                traffic: Some(CanaryTraffic {
                    listener_arn: "arn:listener".into(),
                    canary_target_group_arn: "arn:tg-canary".into(),
                }),
            }),
            ..DeploySpec::default()
        };
        let text = serde_json::to_string(&spec).expect("serializes");
        let back: DeploySpec = serde_json::from_str(&text).expect("deserializes");
        assert_eq!(back, spec);
        assert_eq!(Amount::Percent(25.0).of(6), 2);
        assert_eq!(Amount::Count(3).of(100), 3);
        assert_eq!(Amount::Percent(25.0).of(1), 1, "surge rounds up");
        assert_eq!(Amount::Percent(25.0).of_down(6), 1);
        assert_eq!(
            Amount::Percent(25.0).of_down(1),
            0,
            "unavailability rounds down"
        );
        assert_eq!(Amount::Percent(10.0).of_down(30), 3);
        assert_eq!(Amount::Count(1).of_down(1), 1);
    }
}
