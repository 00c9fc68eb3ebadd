//! `coxswain simulate`: replay a traffic trace through a fleet's scaling policies, with the
//! same decision code the daemon runs, against a minute-by-minute model of a fleet, next to
//! the alternatives (AWS target tracking, the Kubernetes HPA, a static fleet for the peak).
//!
//! The model, minute by minute (see the README):
//! - an instance launched at minute m serves from minute m + boot and is billed for every
//!   minute from m until it is retired;
//! - served = min(demand, ready instances × capacity);
//! - the datapoint of a period is what [`crate::cloud::model`] says CloudWatch publishes
//!   for it — the same model the daemon's simulated cloud (`run --cloud sim`) publishes
//!   from — and it is visible to decisions from minute m + 1 + lag after its last minute
//!   m: the minute has to close, then CloudWatch publishes;
//! - each minute, one decision: launches start booting; a scale-in cancels booting
//!   instances first (newest first), then retires ready ones. What is retired in minute m
//!   still serves (drains) and is billed in minute m and is gone from minute m + 1, as on
//!   the simulated cloud, where an instance drains, then terminates at the next pass.

mod baselines;
mod fleet;
pub mod frontier;
mod report;

pub use baselines::{AwsTargetTracking, Hpa, StaticFleet};
pub use fleet::{MarketModel, SpotPool, SPOT_WARNING_MINUTES};
pub use report::{money_table, plot_svg, table, timeline_csv};

use crate::cloud::{model, MetricSeries};
use crate::manifest::FleetSpec;
use crate::policy::{self, ceil_count, Memory, Observation};
use chrono::{DateTime, Utc};
use fleet::Instances;
use serde::Serialize;

/// The simulated world every policy runs in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct World {
    /// Requests per minute one instance serves at 100%.
    pub capacity: f64,
    /// Minutes from launch to serving.
    pub boot: u32,
    /// Minutes between a metric minute closing and the datapoint being readable.
    pub lag: u32,
}

/// The demand to replay: requests per minute, and each minute's time. Gaps in the trace
/// are left out, so consecutive minutes may be far apart in time.
#[derive(Debug, Clone, PartialEq)]
pub struct Replay {
    pub demand: Vec<f64>,
    pub times: Vec<DateTime<Utc>>,
}

impl Replay {
    /// Every minute of the trace except its gaps, demand times `scale`.
    pub fn from_trace(trace: &crate::cloud::traffic::Trace, scale: f64) -> Replay {
        let mut gaps = trace.gaps.iter().peekable();
        let mut r = Replay {
            demand: Vec::with_capacity(trace.per_minute.len()),
            times: Vec::with_capacity(trace.per_minute.len()),
        };
        for (i, d) in trace.per_minute.iter().enumerate() {
            while gaps.peek().is_some_and(|g| g.1 <= i) {
                gaps.next();
            }
            if gaps.peek().is_some_and(|g| g.0 <= i) {
                continue;
            }
            r.demand.push(d * scale);
            r.times
                .push(trace.start + chrono::Duration::minutes(i as i64));
        }
        r
    }

    /// Minutes one after the other from `start`.
    pub fn contiguous(start: DateTime<Utc>, demand: Vec<f64>) -> Replay {
        let times = (0..demand.len())
            .map(|i| start + chrono::Duration::minutes(i as i64))
            .collect();
        Replay { demand, times }
    }
}

/// What happened in one minute of one policy's run.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Minute {
    pub demand: f64,
    /// Instances serving this minute.
    pub ready: u32,
    /// Instances launched but not yet serving (billed all the same).
    pub booting: u32,
    pub served: f64,
    /// Of the billed instances (ready + booting), those bought on Spot.
    pub spot: u32,
}

/// What a policy sees when it decides at the start of a minute.
pub struct View<'a> {
    pub minute: usize,
    pub now: DateTime<Utc>,
    /// Every minute so far; only `past[..visible]` has been published as metrics.
    pub past: &'a [Minute],
    /// The time of each minute of the replay.
    pub times: &'a [DateTime<Utc>],
    pub visible: usize,
    pub ready: u32,
    pub booting: u32,
    /// Instances launched at least `warmup` minutes ago, for policies that use one.
    pub launched_minutes_ago: &'a dyn Fn(u32) -> u32,
    pub world: World,
}

impl View<'_> {
    pub fn current(&self) -> u32 {
        self.ready + self.booting
    }
}

/// A scaling policy under simulation.
pub trait Autoscaler {
    fn name(&self) -> String;
    /// The instance count wanted from this minute on.
    fn desired(&mut self, view: &View) -> u32;
    /// Instances serving when the replay starts (`suggested` covers the first minute).
    fn initial(&self, suggested: u32) -> u32 {
        suggested
    }
}

/// The fleet's own policies from its manifest, through [`policy::decide`] — the function
/// the daemon calls each pass.
pub struct ManifestPolicy {
    spec: FleetSpec,
    memory: Memory,
    /// Policy indexes whose metric the model cannot produce (warned once).
    pub unmodelled: Vec<String>,
}

impl ManifestPolicy {
    pub fn new(spec: FleetSpec) -> ManifestPolicy {
        let unmodelled = spec
            .scaling
            .policies
            .iter()
            .filter_map(|p| p.metric())
            .filter(|m| model::read_as(&spec, m).is_none())
            .map(|m| m.name.clone())
            .collect();
        ManifestPolicy {
            spec,
            memory: Memory::default(),
            unmodelled,
        }
    }

    /// The closed, published datapoints of `metric`, from the same model the simulated
    /// cloud publishes from ([`crate::cloud::model`]).
    fn series(&self, metric: &crate::manifest::MetricSpec, view: &View) -> Option<MetricSeries> {
        let meaning = model::read_as(&self.spec, metric)?;
        let p = (metric.period.as_secs() / 60).max(1) as usize;
        // Closed and published slots only; a few are enough (the policies keep their own
        // history where they need one).
        let slots = view.visible / p;
        let from = slots.saturating_sub(6);
        let mut series = MetricSeries::default();
        let mut loads = Vec::with_capacity(p);
        for s in from..slots {
            loads.clear();
            loads.extend(
                view.past[s * p..(s + 1) * p]
                    .iter()
                    .map(|m| model::MinuteLoad {
                        demand: m.demand,
                        serving: m.ready,
                        // The replay counts units, not instances (see `fleet`).
                        targets: m.ready,
                    }),
            );
            if let Some(v) = model::datapoint(meaning, &loads, view.world.capacity) {
                series.points.push((view.times[s * p], v));
            }
        }
        Some(series)
    }
}

impl Autoscaler for ManifestPolicy {
    fn name(&self) -> String {
        let labels: Vec<String> = self
            .spec
            .scaling
            .policies
            .iter()
            .map(policy::policy_label)
            .collect();
        format!("{} [{}]", self.spec.name, labels.join(" + "))
    }

    fn desired(&mut self, view: &View) -> u32 {
        let metrics = self
            .spec
            .scaling
            .policies
            .iter()
            .map(|p| p.metric().and_then(|m| self.series(m, view)))
            .collect();
        let warmup = (self.spec.scaling.warmup.as_secs() / 60) as u32;
        let obs = Observation {
            now: view.now,
            current: view.current(),
            warm: (view.launched_minutes_ago)(warmup).min(view.ready),
            serving: view.ready,
            metrics,
        };
        self.memory.observe(&self.spec, &obs);
        let d = policy::decide(&self.spec, &obs, &self.memory);
        self.memory.record(
            view.now,
            d.recommended,
            self.spec.scaling.scale_in_stabilization.chrono(),
        );
        d.desired
    }
}

/// An instance retired this soon after its launch is churn: launched for a blip and
/// retired before it earned its boot (reported as `short_lived`).
pub const SHORT_LIVED_MINUTES: i64 = 15;

/// One policy's run over the whole trace.
#[derive(Debug, Clone)]
pub struct Run {
    pub policy: String,
    pub minutes: Vec<Minute>,
    /// Instances launched.
    pub launches: u64,
    /// Instances retired (booting or serving).
    pub retirements: u64,
    /// Instances retired within [`SHORT_LIVED_MINUTES`] of their launch.
    pub short_lived: u64,
    /// Spot interruption warnings received.
    pub interruptions: u64,
    /// Per minute, what the billed Spot instances cost per hour, each at its pool's price
    /// (USD). Empty for a run without Spot, where it is 0 every minute: kept apart from
    /// [`Minute`] so that runs without a market (most of a sweep) do not carry it.
    pub spot_usd_per_hour: Vec<f64>,
}

impl Run {
    /// What the billed Spot instances cost per hour in minute `i` (0 without Spot).
    pub fn spot_usd_at(&self, i: usize) -> f64 {
        self.spot_usd_per_hour.get(i).copied().unwrap_or(0.0)
    }
}

/// Replay the demand through `policy`, starting with `initial` instances serving, all
/// On-Demand.
pub fn run(policy: &mut dyn Autoscaler, replay: &Replay, world: World, initial: u32) -> Run {
    run_in_market(policy, replay, world, initial, None)
}

/// [`run`], with the fleet's capacity bought as `market` says (On-Demand and Spot, and
/// Spot interruptions); `None` is all On-Demand.
pub fn run_in_market(
    policy: &mut dyn Autoscaler,
    replay: &Replay,
    world: World,
    initial: u32,
    market: Option<MarketModel>,
) -> Run {
    let demand = &replay.demand;
    let boot = i64::from(world.boot);
    let initial = policy.initial(initial);
    // The fleet starts warm and serving.
    let has_market = market.is_some();
    let mut fleet = Instances::new(initial, boot, market);
    let mut minutes: Vec<Minute> = Vec::with_capacity(demand.len());
    let mut spot_usd: Vec<f64> = Vec::with_capacity(if has_market { demand.len() } else { 0 });
    let (mut launches, mut retirements, mut short_lived, mut interruptions) =
        (0u64, 0u64, 0u64, 0u64);
    for (m, &d) in demand.iter().enumerate() {
        let mi = m as i64;
        let (warned, warned_ready) = fleet.interruptions(m);
        interruptions += u64::from(warned);
        launches += u64::from(warned);
        let ready = fleet.ready(mi);
        let booting = fleet.live().total() - ready;
        let visible = (m + 1).saturating_sub(1 + world.lag as usize).min(m);
        let wanted = {
            let fleet_ref = &fleet;
            let ago = move |w: u32| fleet_ref.launched_before(mi, w);
            let view = View {
                minute: m,
                now: replay.times[m],
                past: &minutes,
                times: &replay.times,
                visible,
                ready,
                booting,
                launched_minutes_ago: &ago,
                world,
            };
            policy.desired(&view)
        };
        // Instances retired this minute still serve it (their drain) and are billed for
        // it, as on the simulated cloud: they are gone from the next minute. So do those
        // warned of an interruption this minute; they stay billed until they are gone.
        let step = fleet.resize(m, wanted, SHORT_LIVED_MINUTES);
        launches += u64::from(step.launched);
        retirements += u64::from(step.retired);
        short_lived += u64::from(step.short_lived);
        let live = fleet.live();
        let ready = fleet.ready(mi) + step.leaving_ready + warned_ready;
        let billed = live.total() + step.retired + fleet.doomed();
        let served = d.min(f64::from(ready) * world.capacity);
        minutes.push(Minute {
            demand: d,
            ready,
            booting: billed - ready,
            served,
            spot: live.spot + step.retired_spot + fleet.doomed(),
        });
        if has_market {
            spot_usd.push(fleet.spot_usd_per_hour() + step.retired_spot_usd_per_hour);
        }
    }
    Run {
        policy: policy.name(),
        minutes,
        launches,
        retirements,
        short_lived,
        interruptions,
        spot_usd_per_hour: spot_usd,
    }
}

/// What the issue calls the zero-loss limit: Σ ceil(demand / capacity) instance-minutes.
pub fn zero_loss_limit(demand: &[f64], capacity: f64) -> u64 {
    demand
        .iter()
        .map(|d| u64::from(ceil_count(d / capacity)))
        .sum()
}

/// The numbers a run is judged by. Everything here can be recomputed from the timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub policy: String,
    pub instance_minutes: u64,
    pub limit_instance_minutes: u64,
    pub cost_ratio: f64,
    pub unserved_fraction: f64,
    pub overload_minutes: u64,
    /// Instances launched, retired, and retired within [`SHORT_LIVED_MINUTES`] of their
    /// launch (churn).
    pub launches: u64,
    pub retirements: u64,
    pub short_lived: u64,
    pub requests: f64,
    pub unserved_requests: f64,
    pub peak_instances: u32,
    /// Of `instance_minutes`, those bought on Spot.
    pub spot_instance_minutes: u64,
    /// Spot interruption warnings.
    pub interruptions: u64,
    /// What the instance-minutes cost in US dollars, when a price is known
    /// ([`Summary::price`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usd: Option<f64>,
    /// Of `usd`, the Spot part: each Spot instance-minute at its pool's price.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spot_usd: Option<f64>,
    /// Σ over minutes of what the billed Spot instances cost per hour (the timeline's
    /// `spot_usd_per_hour`), from the run's pool prices.
    #[serde(skip)]
    spot_usd_hour_minutes: f64,
}

impl Summary {
    /// Put a price on the run: `on_demand` in USD per instance-hour (unit-hour, with
    /// instance weights); Spot at each pool's price, as the run's market model gave them.
    pub fn price(&mut self, on_demand: f64) {
        let od_minutes = self.instance_minutes - self.spot_instance_minutes;
        let spot = self.spot_usd_hour_minutes / 60.0;
        self.spot_usd = Some(spot);
        self.usd = Some(od_minutes as f64 * on_demand / 60.0 + spot);
    }
}

pub fn summarize(run: &Run, limit: u64) -> Summary {
    let mut s = Summary {
        policy: run.policy.clone(),
        instance_minutes: 0,
        limit_instance_minutes: limit,
        cost_ratio: 0.0,
        unserved_fraction: 0.0,
        overload_minutes: 0,
        launches: run.launches,
        retirements: run.retirements,
        short_lived: run.short_lived,
        requests: 0.0,
        unserved_requests: 0.0,
        peak_instances: 0,
        spot_instance_minutes: 0,
        interruptions: run.interruptions,
        usd: None,
        spot_usd: None,
        spot_usd_hour_minutes: 0.0,
    };
    s.spot_usd_hour_minutes = run.spot_usd_per_hour.iter().sum();
    for m in &run.minutes {
        let live = m.ready + m.booting;
        s.instance_minutes += u64::from(live);
        s.spot_instance_minutes += u64::from(m.spot);
        s.peak_instances = s.peak_instances.max(live);
        s.requests += m.demand;
        s.unserved_requests += m.demand - m.served;
        if m.served < m.demand {
            s.overload_minutes += 1;
        }
    }
    s.cost_ratio = if limit > 0 {
        s.instance_minutes as f64 / limit as f64
    } else {
        0.0
    };
    s.unserved_fraction = if s.requests > 0.0 {
        s.unserved_requests / s.requests
    } else {
        0.0
    };
    s
}

/// `p` (0..1) percentile of `values`, nearest rank.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

#[cfg(test)]
mod tests;
