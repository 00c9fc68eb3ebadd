//! The one boundary between the controller and a cloud.
//!
//! The controller sees only [`Cloud`] and the plain types in this module; no SDK type
//! crosses it. Two implementations: [`aws`] (the real SDK) and [`sim`] (an in-process
//! region with boot delays, traffic and CloudWatch-like metric lag).
//!
//! Contract shared by both implementations:
//! - `list_instances` returns every non-terminated instance carrying the ownership tags of
//!   this controller, and nothing else. It pages internally.
//! - `launch` is idempotent for a given `client_token`: repeating a call returns the same
//!   instances instead of launching new ones. Ownership tags are applied atomically at launch.
//! - `terminate` refuses ids that are not owned (and says so); terminating an instance that
//!   is already shutting down or gone is success.
//! - `get_metrics` answers every query, batching internally (500 queries per request on AWS).

pub mod aws;
pub mod errors;
pub mod interruption;
pub mod market;
pub mod model;
pub mod sim;
pub mod traffic;

use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

pub use errors::CloudError;
pub use market::Market;

/// Tag keys that mark an instance as coxswain's. They are set in the same RunInstances
/// call that creates the instance (TagSpecifications), so no instance exists untagged.
pub mod tags {
    /// Which controller installation owns the instance (the `controller_id` setting).
    pub const CONTROLLER: &str = "coxswain:controller";
    /// The fleet the instance belongs to.
    pub const FLEET: &str = "coxswain:fleet";
    /// The build (AMI or launch-template version) the instance runs.
    pub const BUILD: &str = "coxswain:build";
    /// Set when the controller has decided to retire the instance: value is RFC 3339 time.
    /// Durable intent, so a restarted controller finishes the drain instead of forgetting it.
    pub const RETIRING: &str = "coxswain:retiring";
    /// `on-demand` or `spot`, set at launch on fleets with an instances distribution
    /// (EC2's own `InstanceLifecycle` is read first; the tag is for answers without it).
    pub const MARKET: &str = "coxswain:market";
    /// Set when EC2 gave notice (a rebalance recommendation, a scheduled event) that the
    /// instance should be replaced: `REASON at RFC3339`. Durable like `RETIRING`: the
    /// instance stops counting as capacity, its replacement launches, and it is retired
    /// once the fleet is in service without it, across restarts too.
    pub const REPLACE: &str = "coxswain:replace";
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceState {
    Pending,
    Running,
    ShuttingDown,
    Stopping,
    Stopped,
    Terminated,
}

impl InstanceState {
    /// Whether the instance is (or will soon be) capacity.
    pub fn is_live(self) -> bool {
        matches!(self, InstanceState::Pending | InstanceState::Running)
    }
}

/// An instance as the controller sees it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Instance {
    pub id: String,
    pub fleet: String,
    pub build: String,
    pub state: InstanceState,
    pub launched_at: DateTime<Utc>,
    pub instance_type: String,
    pub subnet: Option<String>,
    pub availability_zone: Option<String>,
    /// Private IP address, for smoke commands (never connected to by coxswain itself).
    pub private_ip: Option<String>,
    /// When the controller marked it for retirement (from the `coxswain:retiring` tag).
    pub retiring_since: Option<DateTime<Utc>>,
    /// On-Demand or Spot (EC2's `InstanceLifecycle`, else the `coxswain:market` tag).
    pub market: Market,
    /// Why EC2 asked for it to be replaced (the `coxswain:replace` tag), if it did.
    pub replacing: Option<String>,
    /// Capacity units it counts for: the `weighted_capacity` of its type in its fleet's
    /// launch spec, 1 without weights. Clouds answer 1; the controller sets it from the
    /// manifest when it sorts instances into fleets (`LaunchSpec::weight_of`).
    pub weight: u32,
}

/// Capacity units of `instances`: the sum of their weights.
pub fn units<'a>(instances: impl IntoIterator<Item = &'a Instance>) -> u32 {
    instances.into_iter().map(|i| i.weight.max(1)).sum()
}

/// One message of the interruption queue: the handle to delete it by, and its body (an
/// EventBridge event, read by [`interruption::parse`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueMessage {
    pub receipt: String,
    pub body: String,
}

/// What to launch. Built by the controller from a fleet's launch spec. Serializable, so a
/// request whose answer was lost can be sent again word for word (see `Store::remember_launch`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LaunchRequest {
    pub fleet: String,
    pub build: String,
    /// RunInstances: the number of instances. CreateFleet (`pools` not empty): the target
    /// capacity in units (`TotalTargetCapacity`; each pool's `weighted_capacity`, 1 without
    /// one), which EC2 fills even if the last instance overshoots it.
    pub count: u32,
    pub template: Option<LaunchTemplate>,
    pub image_id: Option<String>,
    pub instance_type: Option<String>,
    pub subnet: Option<String>,
    pub security_groups: Vec<String>,
    pub key_name: Option<String>,
    /// All tags, ownership tags included.
    pub tags: BTreeMap<String, String>,
    /// Idempotency token (at most 64 ASCII characters), new for every launch the controller
    /// decides and reused only to resend that same launch. EC2 answers a repeated token
    /// with the original request's instances, even terminated ones.
    pub client_token: String,
    /// The market to buy in. Spot is bought only through CreateFleet (`pools` not empty).
    #[serde(default)]
    pub market: Market,
    /// When not empty, the launch is one EC2 CreateFleet call of type `instant`
    /// (<https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CreateFleet.html>)
    /// with the launch template (required) and one override per pool; `instance_type`
    /// and `subnet` are then unused. EC2 chooses among the pools: Spot by
    /// `spot_allocation_strategy`, On-Demand in the order given (`prioritized`).
    #[serde(default)]
    pub pools: Vec<Pool>,
    /// CreateFleet's `SpotOptions.AllocationStrategy` (`price-capacity-optimized`, ...).
    #[serde(default)]
    pub spot_allocation_strategy: Option<String>,
    /// RunInstances: capacity units one instance of `instance_type` counts for.
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

impl LaunchRequest {
    /// The capacity units this request asks for: `count` for CreateFleet, `count` times
    /// the weight for RunInstances.
    pub fn units(&self) -> u32 {
        if self.pools.is_empty() {
            self.count.saturating_mul(self.weight.max(1))
        } else {
            self.count
        }
    }
}

/// A capacity pool: one instance type in one subnet (so one Availability Zone). `None`
/// leaves it to the launch template.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Pool {
    pub instance_type: Option<String>,
    pub subnet: Option<String>,
    /// Capacity units an instance from this pool counts for (CreateFleet's override
    /// `WeightedCapacity`); `None` without weights (1 each).
    #[serde(default)]
    pub weighted_capacity: Option<u32>,
}

impl Pool {
    /// Units one instance of this pool counts for.
    pub fn weight(&self) -> u32 {
        self.weighted_capacity.unwrap_or(1).max(1)
    }
}

impl std::fmt::Display for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} in {}",
            self.instance_type
                .as_deref()
                .unwrap_or("the template's type"),
            self.subnet.as_deref().unwrap_or("the template's subnet")
        )
    }
}

/// What a CreateFleet `instant` call answered: the instances it launched, and one error
/// per pool (and market) it could not launch in. EC2 answers a partly fulfilled request
/// with both; the caller decides what to do about the rest.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FleetAnswer {
    pub instances: Vec<Instance>,
    pub errors: Vec<PoolError>,
}

/// One pool CreateFleet could not launch in, with EC2's error code
/// (`InsufficientInstanceCapacity`, `UnfulfillableCapacity`, ...) and message.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolError {
    pub pool: Pool,
    pub market: Market,
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LaunchTemplate {
    pub id: Option<String>,
    pub name: Option<String>,
    pub version: String,
}

/// A CloudWatch metric identity plus the statistic wanted.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MetricQuery {
    pub namespace: String,
    pub name: String,
    pub dimensions: BTreeMap<String, String>,
    pub stat: String,
    pub period_secs: u32,
}

/// Datapoints of one query, oldest first.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MetricSeries {
    pub points: Vec<(DateTime<Utc>, f64)>,
}

impl MetricSeries {
    pub fn latest(&self) -> Option<(DateTime<Utc>, f64)> {
        self.points.last().copied()
    }
}

/// An Auto Scaling group's state, for fleets that delegate instances to one.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupState {
    pub name: String,
    pub desired: u32,
    pub min: u32,
    pub max: u32,
    /// (instance id, in service) for each instance the group holds.
    pub instances: Vec<(String, bool)>,
}

/// Health of a target as the load balancer reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetHealth {
    Initial,
    Healthy,
    Unhealthy,
    Draining,
    Unused,
    Other,
}

/// A CloudWatch alarm's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlarmState {
    Ok,
    Alarm,
    InsufficientData,
}

/// Per-operation call counters, shared by both implementations: the benchmark and the
/// metrics endpoint read them ("AWS-equivalent calls per pass").
#[derive(Debug, Default)]
pub struct CallCounts {
    pub describe_instances: AtomicU64,
    pub run_instances: AtomicU64,
    pub create_fleet: AtomicU64,
    pub terminate_instances: AtomicU64,
    pub create_tags: AtomicU64,
    pub receive_message: AtomicU64,
    pub delete_message: AtomicU64,
    pub get_metric_data: AtomicU64,
    pub describe_groups: AtomicU64,
    pub set_desired_capacity: AtomicU64,
    pub register_targets: AtomicU64,
    pub deregister_targets: AtomicU64,
    pub describe_target_health: AtomicU64,
    pub describe_target_groups: AtomicU64,
    pub describe_instance_status: AtomicU64,
    pub describe_alarms: AtomicU64,
    pub modify_listener: AtomicU64,
}

impl CallCounts {
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// (operation, count) pairs, for reports.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            ("DescribeInstances", get(&self.describe_instances)),
            ("RunInstances", get(&self.run_instances)),
            ("CreateFleet", get(&self.create_fleet)),
            ("TerminateInstances", get(&self.terminate_instances)),
            ("CreateTags", get(&self.create_tags)),
            ("ReceiveMessage", get(&self.receive_message)),
            ("DeleteMessage", get(&self.delete_message)),
            ("GetMetricData", get(&self.get_metric_data)),
            ("DescribeAutoScalingGroups", get(&self.describe_groups)),
            ("SetDesiredCapacity", get(&self.set_desired_capacity)),
            ("RegisterTargets", get(&self.register_targets)),
            ("DeregisterTargets", get(&self.deregister_targets)),
            ("DescribeTargetHealth", get(&self.describe_target_health)),
            ("DescribeTargetGroups", get(&self.describe_target_groups)),
            (
                "DescribeInstanceStatus",
                get(&self.describe_instance_status),
            ),
            ("DescribeAlarms", get(&self.describe_alarms)),
            ("ModifyListener", get(&self.modify_listener)),
        ]
    }

    pub fn total(&self) -> u64 {
        self.snapshot().iter().map(|(_, n)| n).sum()
    }
}

/// The operations the controller needs from a cloud, and nothing more.
#[async_trait::async_trait]
pub trait Cloud: Send + Sync {
    /// Every live instance owned by this controller (all fleets), paginated internally.
    async fn list_instances(&self) -> Result<Vec<Instance>, CloudError>;

    /// Launch `req.count` instances with `req.tags` applied at creation. Idempotent per
    /// `req.client_token`. Capacity errors come back as [`CloudError::InsufficientCapacity`]
    /// so the caller can fall back to another instance type or subnet.
    async fn launch(&self, req: &LaunchRequest) -> Result<Vec<Instance>, CloudError>;

    /// Launch through EC2 CreateFleet, type `instant`: `req.count` instances in
    /// `req.market`, from the launch template with one override per `req.pools` entry,
    /// the tags applied at creation. Idempotent per `req.client_token`. Pools EC2 could
    /// not launch in come back in [`FleetAnswer::errors`] beside what it did launch; a
    /// request refused as a whole (no launch template, invalid template, throttled) is
    /// `Err`.
    async fn create_fleet(&self, req: &LaunchRequest) -> Result<FleetAnswer, CloudError>;

    /// Tag owned instances as retiring (durable intent before draining).
    async fn mark_retiring(&self, ids: &[String], at: DateTime<Utc>) -> Result<(), CloudError>;

    /// Tag owned instances for replacement (`coxswain:replace` = `reason at RFC3339`):
    /// durable intent, like [`Cloud::mark_retiring`].
    async fn mark_replacing(
        &self,
        ids: &[String],
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<(), CloudError>;

    /// Up to `max` messages of the controller's interruption queue (the manifest's
    /// `interruption_queue`), oldest first as SQS gives them. Empty without a queue.
    /// SQS ReceiveMessage, short polling, at most 10 per call; a message not deleted comes
    /// back after the visibility timeout (30 s).
    async fn receive_notices(&self, max: usize) -> Result<Vec<QueueMessage>, CloudError>;

    /// Delete handled messages (SQS DeleteMessage, one per receipt handle).
    async fn delete_notices(&self, receipts: &[String]) -> Result<(), CloudError>;

    /// Terminate owned instances. Already-terminating or gone instances are success.
    async fn terminate(&self, ids: &[String]) -> Result<(), CloudError>;

    /// Answer all queries over [start, end). Batched internally; one result per query, in order.
    async fn get_metrics(
        &self,
        queries: &[MetricQuery],
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Vec<MetricSeries>, CloudError>;

    /// Describe the named Auto Scaling groups (batched internally). Missing groups are absent.
    async fn describe_groups(&self, names: &[String]) -> Result<Vec<GroupState>, CloudError>;

    async fn set_desired_capacity(&self, group: &str, desired: u32) -> Result<(), CloudError>;

    /// Register instances with a target group. Registering a registered target is a no-op.
    async fn register_targets(&self, target_group: &str, ids: &[String]) -> Result<(), CloudError>;

    /// Start deregistration (the load balancer drains in-flight requests).
    async fn deregister_targets(
        &self,
        target_group: &str,
        ids: &[String],
    ) -> Result<(), CloudError>;

    /// Health of every target currently known to the target group.
    async fn target_health(
        &self,
        target_group: &str,
    ) -> Result<Vec<(String, TargetHealth)>, CloudError>;

    /// The load balancers each target group is attached to, as (target group ARN, load
    /// balancer ARNs), from DescribeTargetGroups
    /// (<https://docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/API_DescribeTargetGroups.html>).
    /// A target group that does not exist is absent. Used to name the `LoadBalancer`
    /// dimension that ELB's per-target-group metrics (`UnHealthyHostCount`) carry.
    async fn target_group_load_balancers(
        &self,
        target_groups: &[String],
    ) -> Result<Vec<(String, Vec<String>)>, CloudError>;

    /// Make a listener's default action forward to these target groups with these
    /// weights (canary traffic shifting). Setting the same weights again is a no-op.
    async fn set_forward_weights(
        &self,
        listener_arn: &str,
        weights: &[(String, u32)],
    ) -> Result<(), CloudError>;

    /// These instances as EC2 describes them now, in any state: terminated and
    /// shutting-down ones too, while EC2 still lists them (about an hour). Ids EC2 does
    /// not know (yet: DescribeInstances is eventually consistent) are absent. Read-only,
    /// ownership not checked (DescribeInstances with an `instance-id` filter, paginated).
    async fn instances_by_id(&self, ids: &[String]) -> Result<Vec<Instance>, CloudError>;

    /// EC2 status checks of these instances: (id, both system and instance checks ok).
    /// Instances not found are absent.
    async fn instance_status(&self, ids: &[String]) -> Result<Vec<(String, bool)>, CloudError>;

    /// States of the named alarms; alarms that do not exist are absent.
    async fn alarm_states(&self, names: &[String])
        -> Result<Vec<(String, AlarmState)>, CloudError>;

    /// Whether a launch from `template` (at its version) and/or `image_id` can start:
    /// `Ok(None)` if EC2 has them, `Ok(Some(why))` if it says they do not exist (or the
    /// AMI is not `available`). Read-only: DescribeLaunchTemplateVersions
    /// (<https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DescribeLaunchTemplateVersions.html>)
    /// and DescribeImages. `Err` only when the question could not be asked (throttled,
    /// no permission): callers then go on without the answer.
    async fn launch_source_missing(
        &self,
        template: Option<&LaunchTemplate>,
        image_id: Option<&str>,
    ) -> Result<Option<String>, CloudError>;

    /// Call counters, for the benchmark and tests.
    fn calls(&self) -> &CallCounts;

    /// Every attempt of every call this cloud made to AWS since it was made, by service,
    /// operation and outcome, retries included (`coxswain_aws_calls_total`). Empty for a
    /// cloud that calls no AWS API (the simulator).
    fn attempts(&self) -> Vec<(Attempt, u64)> {
        Vec::new()
    }
}

/// One kind of AWS call attempt, as `/metrics` labels it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Attempt {
    /// The SDK's service name (`EC2`, `CloudWatch`, ...).
    pub service: String,
    /// The API operation (`DescribeInstances`, ...).
    pub operation: String,
    /// `ok`, `throttled`, `client_error`, `server_error` or `network`.
    pub outcome: String,
}

impl LaunchTemplate {
    /// `NAME:VERSION` (or `ID:VERSION`), as builds name it.
    pub fn build_id(&self) -> String {
        let name = self
            .id
            .as_deref()
            .or(self.name.as_deref())
            .unwrap_or("template");
        format!("{name}:{}", self.version)
    }
}
