//! An in-process simulated region, the default cloud: instances that boot after a delay,
//! a load balancer that drains, Auto Scaling groups, and CloudWatch-like metrics computed
//! from a demand model with CloudWatch's publication lag. A working fake (it keeps state,
//! counts calls and can be told to fail), not an expectation mock.
//!
//! Metrics it can answer, for a query bound to a fleet (see [`SimCloud::bind_metric`]):
//! `RequestCount` (fleet total per period), `RequestCountPerTarget` (per ready instance)
//! and `CPUUtilization` (percent of ready capacity). Anything else has no data.

mod api;
mod controls;

use super::model::{published_as, Meaning, MinuteLoad};
use super::traffic::Demand;
use super::{tags, CallCounts, CloudError, Instance, InstanceState, MetricQuery};
use crate::clock::Clock;
use crate::manifest::{Config, FleetSpec};
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

/// CloudWatch makes a 1-minute datapoint readable about a minute after it closes.
pub const DEFAULT_METRIC_LAG: chrono::Duration = chrono::Duration::seconds(60);
/// The default deregistration delay of an ALB target group is 300 s; the simulator uses
/// 30 s so the demo shows whole drains within a minute of wall time.
pub const DEFAULT_DRAIN: chrono::Duration = chrono::Duration::seconds(30);
/// A target passes its health check this long after the instance is ready.
const HEALTH_CHECK_DELAY: chrono::Duration = chrono::Duration::seconds(10);
/// Terminated instances are kept this long so lagged metrics still see their capacity.
const KEEP_TERMINATED: chrono::Duration = chrono::Duration::minutes(30);

#[derive(Debug, Clone)]
struct SimInstance {
    inst: Instance,
    tags: BTreeMap<String, String>,
    ready_at: DateTime<Utc>,
    terminated_at: Option<DateTime<Utc>>,
}

impl SimInstance {
    fn serving_at(&self, t: DateTime<Utc>) -> bool {
        self.ready_at <= t && self.terminated_at.is_none_or(|x| x > t)
    }
}

/// An instance's life for metrics: (ready at, terminated at, capacity units).
type Lifetime = (DateTime<Utc>, Option<DateTime<Utc>>, u32);

#[derive(Debug, Clone)]
struct SimFleet {
    /// Requests per minute one capacity unit serves at 100% CPU.
    capacity_per_instance: f64,
    /// Capacity units per instance type (`weighted_capacity`); 1 for the others.
    weights: BTreeMap<String, u32>,
    boot: chrono::Duration,
    demand: Demand,
}

#[derive(Debug, Clone)]
struct Target {
    registered_at: DateTime<Utc>,
    deregistered_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
struct SimGroup {
    fleet: String,
    desired: u32,
    min: u32,
    max: u32,
    members: Vec<String>,
}

/// Faults a test can inject: the next `n` calls of an operation fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    List,
    Launch,
    Terminate,
    Metrics,
}

#[derive(Default)]
struct State {
    instances: BTreeMap<String, SimInstance>,
    next_id: u64,
    /// ClientToken → the instances its launch made, as launched.
    tokens: HashMap<String, Vec<Instance>>,
    fleets: HashMap<String, SimFleet>,
    bindings: HashMap<MetricQuery, (String, Meaning)>,
    target_groups: HashMap<String, HashMap<String, Target>>,
    groups: HashMap<String, SimGroup>,
    faults: HashMap<Op, (u32, &'static str)>,
    /// (instance type, subnet or any, market or both) without capacity.
    no_capacity: HashSet<(String, Option<String>, Option<crate::cloud::Market>)>,
    /// CreateFleet ClientToken → the errors its answer carried.
    fleet_errors: HashMap<String, Vec<crate::cloud::PoolError>>,
    /// The interruption queue: (receipt handle, body), oldest first.
    notices: Vec<(String, String)>,
    notices_sent: u64,
    /// Every CreateFleet request as sent (tests read which pools it offered).
    fleet_requests: Vec<crate::cloud::LaunchRequest>,
    /// Builds (`TEMPLATE:VERSION` or `ami-…`) that do not exist; every other one does.
    missing_builds: HashSet<String>,
    alarms: HashMap<String, super::AlarmState>,
    /// Listener ARN -> (target group, weight) of its default forward action.
    listeners: HashMap<String, Vec<(String, u32)>>,
    /// (namespace, metric name, build id) -> constant value, for deploy gates in tests.
    build_metrics: HashMap<(String, String, String), f64>,
    terminated_total: u64,
    launched_total: u64,
    /// Instances whose target-group health check fails (tests: [`SimCloud::set_unhealthy`]).
    unhealthy: HashSet<String>,
    /// When each instance's target health check started failing or passing again, for
    /// `UnHealthyHostCount` over past periods.
    health_changes: HashMap<String, Vec<(DateTime<Utc>, bool)>>,
    /// Target group ARN → the load balancers it is attached to.
    load_balancers: HashMap<String, Vec<String>>,
    /// Instances whose EC2 status checks fail (tests: [`SimCloud::set_impaired`]).
    impaired: HashSet<String>,
    /// The next this-many launches succeed but their answer is lost (a timeout after EC2
    /// acted): the caller gets a service error.
    lose_launch_answers: u32,
    /// DescribeInstances lists an instance only this long after its launch (EC2's
    /// eventual consistency; zero unless a test sets it).
    list_lag: chrono::Duration,
}

pub struct SimCloud {
    state: Mutex<State>,
    clock: Arc<dyn Clock>,
    calls: CallCounts,
    controller_id: String,
    lag: chrono::Duration,
    drain: chrono::Duration,
}

impl SimCloud {
    pub fn new(clock: Arc<dyn Clock>, controller_id: &str) -> Self {
        Self {
            state: Mutex::new(State::default()),
            clock,
            calls: CallCounts::default(),
            controller_id: controller_id.to_string(),
            lag: DEFAULT_METRIC_LAG,
            drain: DEFAULT_DRAIN,
        }
    }

    pub fn with_lag(mut self, lag: chrono::Duration) -> Self {
        self.lag = lag;
        self
    }

    pub fn with_drain(mut self, drain: chrono::Duration) -> Self {
        self.drain = drain;
        self
    }

    /// A region set up for `config`: each fleet's simulation model and metric bindings,
    /// its Auto Scaling group if it names one, and `capacity.min` instances already
    /// running (as if coxswain had been running before).
    pub fn for_config(
        clock: Arc<dyn Clock>,
        config: &Config,
    ) -> Result<Self, super::traffic::TraceError> {
        Self::for_config_from_id(clock, config, 0)
    }

    /// [`SimCloud::for_config`] with instance ids numbered from `first_id` on (see
    /// [`SimCloud::start_ids_at`]).
    pub fn for_config_from_id(
        clock: Arc<dyn Clock>,
        config: &Config,
        first_id: u64,
    ) -> Result<Self, super::traffic::TraceError> {
        let sim = Self::new(clock, &config.controller.controller_id);
        sim.start_ids_at(first_id);
        let origin = sim.clock.now();
        for f in &config.fleets {
            sim.add_fleet(f, origin)?;
        }
        Ok(sim)
    }

    /// Add (or replace) one fleet's model. Fleets without a `simulation` section get a
    /// modest default so any manifest runs on the simulator.
    pub fn add_fleet(
        &self,
        f: &FleetSpec,
        origin: DateTime<Utc>,
    ) -> Result<(), super::traffic::TraceError> {
        let model = f.simulation.clone().unwrap_or_else(|| default_model(f));
        let demand = Demand::from_spec(&model.traffic, origin)?;
        let fleet = SimFleet {
            capacity_per_instance: model.capacity_per_instance,
            weights: f
                .launch
                .instance_types
                .iter()
                .filter_map(|t| t.weighted_capacity.map(|w| (t.instance_type.clone(), w)))
                .collect(),
            boot: model.boot.chrono(),
            demand,
        };
        let now = self.clock.now();
        let mut st = self.lock();
        st.fleets.insert(f.name.clone(), fleet);
        let gates = f.deploy.gates.metrics.iter().map(|g| &g.metric);
        for m in f
            .scaling
            .policies
            .iter()
            .filter_map(|p| p.metric())
            .chain(gates)
        {
            if let Some(meaning) = published_as(f, m) {
                st.bindings.insert(m.query(), (f.name.clone(), meaning));
            }
        }
        if let Some(g) = &f.auto_scaling_group {
            st.groups.entry(g.clone()).or_insert(SimGroup {
                fleet: f.name.clone(),
                desired: 0,
                min: f.capacity.min,
                max: f.capacity.max,
                members: vec![],
            });
            let desired = f.capacity.min;
            drop(st);
            self.resize_group(g, desired, now - chrono::Duration::hours(1));
            return Ok(());
        }
        // `capacity.min` is in units: instances of the first type until it is covered.
        let existing: u32 = st
            .instances
            .values()
            .filter(|i| i.inst.fleet == f.name && i.terminated_at.is_none())
            .map(|i| Self::weight_in(&st, &i.inst))
            .sum();
        let first = f
            .launch
            .type_names()
            .first()
            .map_or(1, |t| f.launch.weight_of(t));
        let missing = f.capacity.min.saturating_sub(existing).div_ceil(first);
        for _ in 0..missing {
            let mut t = BTreeMap::new();
            t.insert(tags::CONTROLLER.to_string(), self.controller_id.clone());
            t.insert(tags::FLEET.to_string(), f.name.clone());
            t.insert(tags::BUILD.to_string(), f.build());
            let long_ago = now - chrono::Duration::hours(1);
            let subnet = f.launch.subnets.first().cloned();
            let ty = f.launch.type_names().first().cloned();
            Self::create(
                &mut st,
                &f.name,
                &f.build(),
                ty,
                subnet,
                t,
                long_ago,
                long_ago,
            );
        }
        if let Some(tg) = &f.target_group_arn {
            let region = tg.split(':').nth(3).unwrap_or("us-east-1");
            let lb = format!(
                "arn:aws:elasticloadbalancing:{region}:000000000000:loadbalancer/app/{}/5e1a5e1a5e1a5e1a",
                f.name
            );
            st.load_balancers.insert(tg.clone(), vec![lb]);
            let ids: Vec<String> = st
                .instances
                .values()
                .filter(|i| i.inst.fleet == f.name && i.terminated_at.is_none())
                .map(|i| i.inst.id.clone())
                .collect();
            let group = st.target_groups.entry(tg.clone()).or_default();
            for id in ids {
                group.entry(id).or_insert(Target {
                    registered_at: now - chrono::Duration::hours(1),
                    deregistered_at: None,
                });
            }
        }
        Ok(())
    }

    /// Whether `id` failed its target health check at any moment of `[a, b)`.
    fn unhealthy_during(st: &State, id: &str, a: DateTime<Utc>, b: DateTime<Utc>) -> bool {
        let Some(changes) = st.health_changes.get(id) else {
            return st.unhealthy.contains(id);
        };
        let at_start = changes
            .iter()
            .rev()
            .find(|(t, _)| *t <= a)
            .is_some_and(|(_, u)| *u);
        at_start || changes.iter().any(|(t, u)| *u && *t > a && *t < b)
    }

    /// `UnHealthyHostCount` (Maximum) of a target group over `[a, b)`: registered targets,
    /// past their first health check, that failed it during the period.
    fn unhealthy_hosts(st: &State, tg: &str, a: DateTime<Utc>, b: DateTime<Utc>) -> f64 {
        st.target_groups.get(tg).map_or(0.0, |targets| {
            targets
                .iter()
                .filter(|(_, t)| t.registered_at < b && t.deregistered_at.is_none_or(|d| d > a))
                .filter(|(id, _)| Self::unhealthy_during(st, id, a, b))
                .count() as f64
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    #[allow(clippy::too_many_arguments)]
    fn create(
        st: &mut State,
        fleet: &str,
        build: &str,
        instance_type: Option<String>,
        subnet: Option<String>,
        tags_: BTreeMap<String, String>,
        launched_at: DateTime<Utc>,
        ready_at: DateTime<Utc>,
    ) -> String {
        st.next_id += 1;
        st.launched_total += 1;
        let id = format!("i-{:017x}", st.next_id);
        let az = subnet.as_ref().map(|s| format!("sim-{s}"));
        st.instances.insert(
            id.clone(),
            SimInstance {
                inst: Instance {
                    id: id.clone(),
                    fleet: fleet.to_string(),
                    build: build.to_string(),
                    state: InstanceState::Pending,
                    launched_at,
                    instance_type: instance_type.unwrap_or_else(|| "m6i.large".into()),
                    subnet,
                    availability_zone: az,
                    private_ip: Some(format!("sim-{}", st.next_id)),
                    retiring_since: None,
                    replacing: None,
                    weight: 1,
                    market: tags_
                        .get(tags::MARKET)
                        .map_or(crate::cloud::Market::OnDemand, |m| {
                            crate::cloud::Market::from_aws(m)
                        }),
                },
                tags: tags_,
                ready_at,
                terminated_at: None,
            },
        );
        id
    }

    /// Whether `instance_type` in `subnet` has no capacity in `market`.
    fn lacks_capacity(
        st: &State,
        instance_type: &str,
        subnet: Option<&String>,
        market: crate::cloud::Market,
    ) -> bool {
        [None, subnet.cloned()].into_iter().any(|s| {
            [None, Some(market)].into_iter().any(|m| {
                st.no_capacity
                    .contains(&(instance_type.to_string(), s.clone(), m))
            })
        })
    }

    /// Capacity units of the instances of `fleet` serving at `t`.
    fn ready_count(st: &State, fleet: &str, t: DateTime<Utc>) -> u32 {
        st.instances
            .values()
            .filter(|i| i.inst.fleet == fleet && i.serving_at(t))
            .map(|i| Self::weight_in(st, &i.inst))
            .sum()
    }

    /// Capacity units `inst` serves with: its type's weight in its fleet's model.
    fn weight_in(st: &State, inst: &Instance) -> u32 {
        st.fleets
            .get(&inst.fleet)
            .and_then(|f| f.weights.get(&inst.instance_type))
            .copied()
            .unwrap_or(1)
            .max(1)
    }

    fn take_fault(&self, op: Op, operation: &'static str) -> Result<(), CloudError> {
        let mut st = self.lock();
        if let Some((n, code)) = st.faults.get_mut(&op) {
            if *n > 0 {
                *n -= 1;
                let code = code.to_string();
                return Err(if super::errors::is_throttling_code(&code) {
                    CloudError::Throttled { operation, code }
                } else {
                    CloudError::Service {
                        operation,
                        message: format!("injected fault {code}"),
                        source: None,
                    }
                });
            }
        }
        Ok(())
    }

    /// Like the AWS side: a mutating call naming any existing instance that is not ours
    /// fails whole; ids that do not exist (any more) are ignored.
    fn refuse_foreign(
        &self,
        st: &State,
        ids: &[String],
        operation: &'static str,
    ) -> Result<(), CloudError> {
        let foreign: Vec<String> = ids
            .iter()
            .filter(|id| st.instances.get(*id).is_some_and(|i| !self.owned(i)))
            .cloned()
            .collect();
        if foreign.is_empty() {
            Ok(())
        } else {
            Err(CloudError::NotOwned {
                operation,
                ids: foreign,
            })
        }
    }

    fn owned(&self, i: &SimInstance) -> bool {
        i.tags.get(tags::CONTROLLER) == Some(&self.controller_id)
            && i.tags.contains_key(tags::FLEET)
    }

    fn resize_group(&self, name: &str, desired: u32, at: DateTime<Utc>) {
        let mut st = self.lock();
        let Some(g) = st.groups.get(name).cloned() else {
            return;
        };
        let (boot, build) = st
            .fleets
            .get(&g.fleet)
            .map(|f| (f.boot, "asg".to_string()))
            .unwrap_or((chrono::Duration::minutes(3), "asg".into()));
        let mut members: Vec<String> = g
            .members
            .iter()
            .filter(|id| {
                st.instances
                    .get(*id)
                    .is_some_and(|i| i.terminated_at.is_none())
            })
            .cloned()
            .collect();
        while (members.len() as u32) < desired {
            let mut t = BTreeMap::new();
            t.insert("aws:autoscaling:groupName".to_string(), name.to_string());
            let id = Self::create(&mut st, &g.fleet, &build, None, None, t, at, at + boot);
            members.push(id);
        }
        while (members.len() as u32) > desired {
            if let Some(id) = members.pop() {
                if let Some(i) = st.instances.get_mut(&id) {
                    i.terminated_at = Some(at);
                    i.inst.state = InstanceState::Terminated;
                }
                st.terminated_total += 1;
            }
        }
        if let Some(g) = st.groups.get_mut(name) {
            g.members = members;
            g.desired = desired;
        }
    }

    /// Advance lazily-computed state to `now`: pending → running, drains finished.
    fn settle(st: &mut State, now: DateTime<Utc>, drain: chrono::Duration) {
        for i in st.instances.values_mut() {
            if i.inst.state == InstanceState::Pending && i.ready_at <= now {
                i.inst.state = InstanceState::Running;
            }
        }
        for g in st.target_groups.values_mut() {
            g.retain(|_, t| t.deregistered_at.is_none_or(|d| now - d < drain));
        }
        st.instances
            .retain(|_, i| i.terminated_at.is_none_or(|t| now - t < KEEP_TERMINATED));
    }

    /// The datapoint of the period `[t - period, t)` (see [`super::model`], shared with
    /// `coxswain simulate`). `lifetimes` are the fleet's instances as (ready at,
    /// terminated at), gathered once per call rather than once per datapoint; an instance
    /// serves in a minute if it serves at the minute's middle.
    fn value(
        f: &SimFleet,
        lifetimes: &[Lifetime],
        meaning: Meaning,
        t: DateTime<Utc>,
        period: i64,
    ) -> Option<f64> {
        let minutes = (period / 60).max(1);
        let loads: Vec<MinuteLoad> = (0..minutes)
            .map(|k| {
                let start = t - chrono::Duration::minutes(minutes - k);
                let mid = start + chrono::Duration::seconds(30);
                let (mut serving, mut targets) = (0, 0);
                for (_, _, w) in lifetimes
                    .iter()
                    .filter(|(r, x, _)| *r <= mid && x.is_none_or(|x| x > mid))
                {
                    serving += *w;
                    targets += 1;
                }
                MinuteLoad {
                    demand: f.demand.at(start),
                    serving,
                    targets,
                }
            })
            .collect();
        super::model::datapoint(meaning, &loads, f.capacity_per_instance)
    }
}

fn default_model(f: &FleetSpec) -> crate::manifest::SimulationSpec {
    use crate::manifest::{HumanDuration, SimulationSpec, SyntheticTraffic, TrafficSpec};
    let per = 1000.0;
    SimulationSpec {
        capacity_per_instance: per,
        boot: HumanDuration::secs(180),
        traffic: TrafficSpec::Synthetic(SyntheticTraffic {
            base: per * f64::from(f.capacity.min.max(1)) * 0.5,
            peak: per * f64::from(f.capacity.max.max(1)) * 0.5,
            peak_hour: 14.0,
            weekend_factor: 0.6,
            bursts: vec![],
            noise: 0.05,
            seed: 0,
        }),
        prices: None,
    }
}
