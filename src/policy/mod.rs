//! Scaling decisions, as pure functions: observed state + spec + memory + now → decision.
//! Nothing here talks to a cloud or reads a clock; that is what makes a policy testable in
//! microseconds and replayable over months of traffic.
//!
//! How policies combine (the same rules as AWS's multi-policy target tracking):
//! - every policy votes for a capacity; the largest vote wins, so any policy can scale out
//!   and scale-in happens only when every policy agrees;
//! - a policy whose metric is missing or stale votes to hold the current capacity: missing
//!   data never causes a scale-in;
//! - scale-in goes only to the highest recommendation of the stabilization window;
//! - the result is clamped to min/max, a per-pass launch and retire limit, and the hard
//!   cost caps (per fleet: `capacity.max`; across fleets: [`apply_global_cap`]).

mod predictive;
mod schedule;
mod step;
mod target;

pub use predictive::DemandModel;
pub use schedule::scheduled_floor;

use crate::cloud::MetricSeries;
use crate::manifest::{FleetSpec, PolicySpec};
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, VecDeque};
use std::fmt;

/// What the controller saw of one fleet, reduced to what policies need.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub now: DateTime<Utc>,
    /// Live instances that are not being retired (booting ones included).
    pub current: u32,
    /// Of those, how many are past their warmup and count toward the utilization average.
    pub warm: u32,
    /// Of those, how many are in service now (running and in the load balancer), warm or
    /// not: a per-instance metric such as `RequestCountPerTarget` is divided among these.
    /// At least `warm`. Remembered per pass to divide each datapoint by the instances that
    /// served while it was measured ([`Memory::serving_during`]).
    pub serving: u32,
    /// One entry per policy in the spec, in order: the series of its metric, or `None`
    /// when the read failed or the policy has no metric.
    pub metrics: Vec<Option<MetricSeries>>,
}

/// A single policy's opinion.
#[derive(Debug, Clone, PartialEq)]
pub enum Vote {
    /// Wants this many instances.
    Capacity(u32),
    /// Has no usable data: keep what we have (never a scale-in).
    Hold,
    /// Has no opinion now (a schedule outside its window).
    Abstain,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PolicyVote {
    pub policy: String,
    pub vote: Vote,
    pub reason: String,
}

/// Why the final number differs from the largest vote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    Min,
    Max,
    Stabilization,
    LaunchLimit,
    RetireLimit,
    GlobalCap,
    /// No scale-in while an instance is still warming up (as AWS target tracking).
    Warmup,
    /// With instance weights, a scale-in goes only as far as whole instances can be
    /// retired without going below what the policies want.
    InstanceSize,
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Limit::Min => "capacity.min",
            Limit::Max => "capacity.max (fleet cost cap)",
            Limit::Stabilization => "scale-in stabilization window",
            Limit::LaunchLimit => "max_launch_per_cycle",
            Limit::RetireLimit => "max_retire_per_cycle",
            Limit::GlobalCap => "max_total_instances (global cost cap)",
            Limit::Warmup => "instances still warming up (no scale-in until they are warm)",
            Limit::InstanceSize => {
                "instance weights (only whole instances are retired, never below the policies' number)"
            }
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub fleet: String,
    pub current: u32,
    pub desired: u32,
    /// The largest vote, clamped to min/max, before stabilization and per-pass limits.
    pub recommended: u32,
    pub votes: Vec<PolicyVote>,
    pub limits: Vec<Limit>,
    /// Missing or stale metrics, to be logged as warnings.
    pub warnings: Vec<String>,
}

impl Decision {
    /// Held below what the policies ask by a cost cap: `capacity.max` or the global
    /// `max_total_instances`.
    pub fn capped(&self) -> bool {
        self.recommended > self.desired
            && self
                .limits
                .iter()
                .any(|l| matches!(l, Limit::Max | Limit::GlobalCap))
    }

    pub fn change(&self) -> i64 {
        i64::from(self.desired) - i64::from(self.current)
    }

    /// One human sentence: "6 → 9: target_tracking(CPUUtilization): 82.0/instance ...".
    pub fn reason(&self) -> String {
        let mut parts: Vec<String> = self
            .votes
            .iter()
            .map(|v| format!("{}: {}", v.policy, v.reason))
            .collect();
        if parts.is_empty() {
            parts.push("no policies; holding capacity.min".into());
        }
        let mut s = format!("{} → {}: {}", self.current, self.desired, parts.join("; "));
        if !self.limits.is_empty() {
            let l: Vec<String> = self.limits.iter().map(|l| l.to_string()).collect();
            s.push_str(&format!(" (limited by {})", l.join(", ")));
        }
        s
    }
}

/// Per-fleet memory the pure function needs between passes: recent recommendations, for
/// the scale-in stabilization window. Owned by the caller, updated with [`Memory::record`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Memory {
    /// When the first recommendation was recorded: until a whole window has passed since,
    /// the window's history is incomplete and nothing scales in (a restarted controller
    /// does not know what the last minutes wanted).
    since: Option<DateTime<Utc>>,
    recommendations: VecDeque<(DateTime<Utc>, u32)>,
    /// Demand history and forecast errors of each predictive policy, by policy index.
    models: BTreeMap<usize, DemandModel>,
    /// (pass time, instances in service then), newest last, kept for [`SERVING_HISTORY`]:
    /// a datapoint is divided by the instances that served while it was measured, not by
    /// those warm when it is read a minute or more later.
    serving: VecDeque<(DateTime<Utc>, u32)>,
}

/// How long the per-pass serving counts are kept: longer than any period plus CloudWatch's
/// publication lag that a policy reads (periods above an hour are refused by `validate`).
const SERVING_HISTORY: chrono::Duration = chrono::Duration::minutes(90);

impl Memory {
    /// Take this pass's metrics into the history that predictive policies forecast from.
    /// Call before [`decide`]; a policy that changed on reload starts a fresh history.
    pub fn observe(&mut self, spec: &FleetSpec, obs: &Observation) {
        if self.serving.back().is_none_or(|(t, _)| *t < obs.now) {
            self.serving.push_back((obs.now, obs.serving.max(obs.warm)));
        }
        while self
            .serving
            .front()
            .is_some_and(|(t, _)| obs.now - *t > SERVING_HISTORY)
        {
            self.serving.pop_front();
        }
        let policies = &spec.scaling.policies;
        self.models
            .retain(|i, _| matches!(policies.get(*i), Some(PolicySpec::Predictive(_))));
        for (i, p) in policies.iter().enumerate() {
            let PolicySpec::Predictive(pr) = p else {
                continue;
            };
            let capacity = pr.capacity(spec).unwrap_or(0.0);
            let model = self
                .models
                .entry(i)
                .or_insert_with(|| DemandModel::new(pr, capacity));
            if !model.fits(pr, capacity) {
                *model = DemandModel::new(pr, capacity);
            }
            if let Some(Some(series)) = obs.metrics.get(i) {
                model.ingest(series);
            }
        }
    }

    /// Whether policy `index` is predictive and has no history yet: the controller then
    /// reads its whole `history` window instead of the last minutes.
    pub fn needs_history(&self, spec: &FleetSpec, index: usize) -> bool {
        matches!(
            spec.scaling.policies.get(index),
            Some(PolicySpec::Predictive(_))
        ) && self.models.get(&index).is_none_or(DemandModel::is_empty)
    }

    pub fn record(&mut self, at: DateTime<Utc>, recommended: u32, window: chrono::Duration) {
        self.since.get_or_insert(at);
        self.recommendations.push_back((at, recommended));
        while let Some(&(t, _)) = self.recommendations.front() {
            if at - t > window {
                self.recommendations.pop_front();
            } else {
                break;
            }
        }
    }

    /// How many instances served while a datapoint over `[start, start + period)` was
    /// measured: the average of the in-service counts seen by passes in that interval
    /// (half-open: a pass at its very end sees what came after); with no
    /// pass inside it, the count of the last pass before it ended; with no pass before
    /// either (a period before the first pass since a start), the first pass's count,
    /// the nearest known: the same answer on every pass that reads that datapoint, so
    /// instances launched since never multiply it again; with no pass at all, `fallback`
    /// (the count in service now).
    pub fn serving_during(
        &self,
        start: DateTime<Utc>,
        period: chrono::Duration,
        fallback: u32,
    ) -> f64 {
        let end = start + period;
        let inside: Vec<u32> = self
            .serving
            .iter()
            .filter(|(t, _)| *t >= start && *t < end)
            .map(|(_, n)| *n)
            .collect();
        if !inside.is_empty() {
            return f64::from(inside.iter().sum::<u32>()) / inside.len() as f64;
        }
        self.serving
            .iter()
            .rev()
            .find(|(t, _)| *t < start)
            .or_else(|| self.serving.front())
            .map_or(f64::from(fallback), |(_, n)| f64::from(*n))
    }

    /// Highest recommendation within `window` before `now`.
    fn highest_since(&self, now: DateTime<Utc>, window: chrono::Duration) -> Option<u32> {
        self.recommendations
            .iter()
            .filter(|(t, _)| now - *t <= window)
            .map(|(_, r)| *r)
            .max()
    }

    fn window_filled(&self, now: DateTime<Utc>, window: chrono::Duration) -> bool {
        self.since.is_some_and(|s| now - s >= window)
    }
}

/// Label for a policy in logs.
pub fn policy_label(p: &PolicySpec) -> String {
    match p {
        PolicySpec::TargetTracking(t) => format!("target_tracking({})", t.metric.name),
        PolicySpec::Step(s) => format!("step({})", s.metric.name),
        PolicySpec::Scheduled(s) => {
            format!(
                "scheduled({})",
                s.name.clone().unwrap_or_else(|| s.cron.clone())
            )
        }
        PolicySpec::Predictive(p) => format!("predictive({})", p.metric.name),
    }
}

/// Decide one fleet's capacity. Pure: the caller records `decision.recommended` into
/// `memory` afterwards (see [`Memory::record`]).
pub fn decide(spec: &FleetSpec, obs: &Observation, memory: &Memory) -> Decision {
    let scaling = &spec.scaling;
    let mut votes = Vec::with_capacity(scaling.policies.len());
    let mut warnings = Vec::new();
    for (i, p) in scaling.policies.iter().enumerate() {
        let series = obs.metrics.get(i).and_then(|m| m.as_ref());
        let (vote, reason) = match p {
            PolicySpec::TargetTracking(t) => {
                target::vote(t, obs, memory, series, scaling.metric_stale_after.chrono())
            }
            PolicySpec::Step(s) => {
                step::vote(s, obs, memory, series, scaling.metric_stale_after.chrono())
            }
            PolicySpec::Scheduled(s) => schedule::vote(s, obs.now),
            PolicySpec::Predictive(pr) => predictive::vote(
                pr,
                spec,
                obs,
                memory.models.get(&i),
                scaling.metric_stale_after.chrono(),
            ),
        };
        if vote == Vote::Hold {
            warnings.push(format!("{}: {}", policy_label(p), reason));
        }
        votes.push(PolicyVote {
            policy: policy_label(p),
            vote,
            reason,
        });
    }
    combine(spec, obs, memory, votes, warnings)
}

fn combine(
    spec: &FleetSpec,
    obs: &Observation,
    memory: &Memory,
    votes: Vec<PolicyVote>,
    warnings: Vec<String>,
) -> Decision {
    let (min, max) = (spec.capacity.min, spec.capacity.max);
    let scaling = &spec.scaling;
    let mut limits = Vec::new();
    // With no vote at all: a fleet with metric policies keeps what it has (none of them
    // asks for a change); a fleet with only schedules, all closed, goes to its minimum.
    let has_metric_policy = spec.scaling.policies.iter().any(|p| p.metric().is_some());
    let wanted = votes
        .iter()
        .filter_map(|v| match v.vote {
            Vote::Capacity(n) => Some(n),
            Vote::Hold => Some(obs.current),
            Vote::Abstain => None,
        })
        .max()
        .unwrap_or(if has_metric_policy { obs.current } else { min });
    let mut recommended = wanted;
    if recommended < min {
        recommended = min;
        limits.push(Limit::Min);
    }
    if recommended > max {
        recommended = max;
        limits.push(Limit::Max);
    }
    let mut desired = recommended;
    if desired < obs.current {
        // Scale in only as far as the highest recommendation of the window (this pass's
        // included), so a dip between two bursts does not retire what the next one needs.
        let window = scaling.scale_in_stabilization.chrono();
        let highest = memory
            .highest_since(obs.now, window)
            .unwrap_or(recommended)
            .max(recommended);
        // Before a whole window of history exists, do not scale in at all; nor while an
        // instance is warming up: its load is not in the metric yet, so the metric
        // under-states what the fleet carries (AWS target tracking does the same).
        let warming = obs.warm < obs.current;
        let floor = if memory.window_filled(obs.now, window) && !warming {
            highest
        } else {
            obs.current
        };
        if floor > desired {
            desired = floor.min(obs.current);
            limits.push(if warming {
                Limit::Warmup
            } else {
                Limit::Stabilization
            });
        }
        // Above max (e.g. max was lowered) always comes down, stabilization or not.
        if obs.current > max {
            desired = desired.min(max);
        }
        if obs.current.saturating_sub(desired) > scaling.max_retire_per_cycle {
            desired = obs.current - scaling.max_retire_per_cycle;
            limits.push(Limit::RetireLimit);
        }
    } else if desired > obs.current && desired - obs.current > scaling.max_launch_per_cycle {
        desired = obs.current + scaling.max_launch_per_cycle;
        limits.push(Limit::LaunchLimit);
    }
    Decision {
        fleet: spec.name.clone(),
        current: obs.current,
        desired,
        recommended,
        votes,
        limits,
        warnings,
    }
}

/// Enforce the global cost cap across fleets: every billed instance counts, so the
/// instances the decisions keep plus `billed_elsewhere` (instances that are billed but in
/// no decision's `current`: draining after a scale-in, a rollout's surge, orphans, fleets
/// another replica holds) never exceed `cap`. Scale-outs are trimmed (fleets in name
/// order, each to what the budget allows); scale-ins and holds are untouched, so a fleet
/// waits for another's drain to finish before it takes the freed budget. Pure.
pub fn apply_global_cap(decisions: &mut [Decision], billed_elsewhere: u32, cap: Option<u32>) {
    let shapes: Vec<CapShape> = decisions
        .iter()
        .map(|d| CapShape {
            instances: d.current,
            min_weight: 1,
        })
        .collect();
    apply_global_cap_weighted(decisions, &shapes, billed_elsewhere, cap);
}

/// How a fleet's capacity units turn into instances, for the global cap (which counts
/// instances): the instances behind its decision's `current`, and its lightest instance
/// type's weight (1 without instance weights).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapShape {
    pub instances: u32,
    pub min_weight: u32,
}

/// [`apply_global_cap`] for fleets that count capacity in units (`weighted_capacity`):
/// `shapes[i]` belongs to `decisions[i]`. The cap counts instances: what a fleet
/// bills now is its `instances`, and a scale-out of N units may take up to N divided by
/// its lightest weight instances (EC2 may choose that type), so that is what it is
/// charged; a trimmed scale-out gets the units its granted instances hold at the least.
/// `billed_elsewhere` is in instances. Pure.
pub fn apply_global_cap_weighted(
    decisions: &mut [Decision],
    shapes: &[CapShape],
    billed_elsewhere: u32,
    cap: Option<u32>,
) {
    let Some(cap) = cap else { return };
    let mut order: Vec<usize> = (0..decisions.len()).collect();
    order.sort_by(|a, b| decisions[*a].fleet.cmp(&decisions[*b].fleet));
    let shapes: Vec<CapShape> = (0..decisions.len())
        .map(|i| {
            shapes.get(i).copied().unwrap_or(CapShape {
                instances: decisions[i].current,
                min_weight: 1,
            })
        })
        .collect();
    let shape = |i: usize| shapes[i];
    // What each fleet bills this pass no matter what: its current instances (a
    // scale-in's instances stay billed while they drain; they free the budget once
    // terminated).
    let committed: u64 = (0..decisions.len())
        .map(|i| u64::from(shape(i).instances))
        .sum::<u64>()
        + u64::from(billed_elsewhere);
    let mut budget = u64::from(cap).saturating_sub(committed);
    for i in order {
        let w = u64::from(shape(i).min_weight.max(1));
        let d = &mut decisions[i];
        if d.desired <= d.current {
            continue;
        }
        let want = u64::from(d.desired - d.current);
        let want_instances = want.div_ceil(w);
        let grant = want_instances.min(budget);
        budget -= grant;
        if grant < want_instances {
            d.desired = d.current + (grant * w).min(want) as u32;
            d.limits.push(Limit::GlobalCap);
        }
    }
}

/// `ceil(x)` that tolerates float noise (11.0000000001 is 11, not 12).
pub fn ceil_count(x: f64) -> u32 {
    if !x.is_finite() || x <= 0.0 {
        return 0;
    }
    let c = (x - 1e-9).ceil();
    if c >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        c as u32
    }
}

/// A usable reading of a metric: its value and the period it was measured over.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Reading {
    pub value: f64,
    /// Start of the datapoint's period (CloudWatch stamps datapoints with it).
    pub start: DateTime<Utc>,
    pub period: chrono::Duration,
    /// No datapoint was published and the metric's missing-data treatment is `zero`.
    pub missing_as_zero: bool,
}

/// Newest datapoint if it is fresh, else the reason it is unusable.
/// A datapoint is stamped with the start of its period; its age counts from the period's
/// end, when it was complete. Staleness is judged against the metric's own period (see
/// [`crate::manifest::MetricSpec::stale_after`]). A read that succeeded with no datapoint
/// for longer than its staleness plus two periods is zero traffic for a metric whose
/// missing-data treatment is `zero` (CloudWatch publishes nothing for an idle load
/// balancer); within those two periods the last value stands (CloudWatch may be late).
pub(crate) fn fresh_value(
    series: Option<&MetricSeries>,
    now: DateTime<Utc>,
    stale_after: chrono::Duration,
    metric: &crate::manifest::MetricSpec,
) -> Result<Reading, String> {
    let metric_name = &metric.name;
    let period = metric.period.chrono();
    let stale_after = metric.stale_after(stale_after);
    let Some(series) = series else {
        return Err(format!(
            "{metric_name}: metric missing (read failed); holding"
        ));
    };
    let zero = metric.missing_data() == crate::manifest::MissingData::Zero;
    let fresh = series
        .latest()
        .filter(|(t, _)| now - (*t + period) <= stale_after);
    match (fresh, series.latest()) {
        (Some((_, v)), _) if !v.is_finite() => {
            Err(format!("{metric_name}: datapoint is not a number; holding"))
        }
        (Some((t, v)), _) => Ok(Reading {
            value: v,
            start: t,
            period,
            missing_as_zero: false,
        }),
        // A count whose newest datapoint is a little late (up to two periods past its
        // staleness): CloudWatch is late, not idle. Go on from the last value, without a
        // warning, rather than read a delay as no traffic.
        (None, Some((t, v)))
            if zero && v.is_finite() && now - (t + period) <= stale_after + period * 2 =>
        {
            Ok(Reading {
                value: v,
                start: t,
                period,
                missing_as_zero: false,
            })
        }
        (None, _) if zero => {
            // The last period that has closed and been published: no one asked then.
            let secs = period.num_seconds().max(1);
            let closed = (now.timestamp() - secs).div_euclid(secs) * secs;
            Ok(Reading {
                value: 0.0,
                start: DateTime::from_timestamp(closed, 0).unwrap_or(now),
                period,
                missing_as_zero: true,
            })
        }
        (None, None) => Err(format!("{metric_name}: no datapoints; holding")),
        (None, Some((t, _))) => Err(format!(
            "{metric_name}: newest datapoint is {}s old (stale after {}s); holding",
            (now - (t + period)).num_seconds(),
            stale_after.num_seconds()
        )),
    }
}

#[cfg(test)]
mod tests;
