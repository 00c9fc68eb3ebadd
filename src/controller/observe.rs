//! What a pass observes besides instances: Auto Scaling groups, and every fleet's metrics
//! in one batched read over closed periods.

use super::health_gate;
use super::state::FleetState;
use super::{note_error, Controller, PassReport};
use crate::cloud::{GroupState, Instance, InstanceState, MetricQuery};
use crate::manifest::FleetSpec;
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashMap, HashSet};
use tracing::{error, info, warn};

impl Controller {
    pub(super) async fn observe_groups(
        &self,
        report: &mut PassReport,
    ) -> HashMap<String, GroupState> {
        let names: Vec<String> = self
            .config
            .fleets
            .iter()
            .filter_map(|f| f.auto_scaling_group.clone())
            .collect();
        if names.is_empty() {
            return HashMap::new();
        }
        match self.cloud.describe_groups(&names).await {
            Ok(gs) => gs.into_iter().map(|g| (g.name.clone(), g)).collect(),
            Err(e) => {
                error!(error = %e, "cannot describe Auto Scaling groups");
                note_error(report, "describe groups", &e);
                HashMap::new()
            }
        }
    }

    /// One batched read for every fleet's metrics (the cloud splits it into requests of
    /// 500 queries). A failed read leaves every series missing: policies then hold.
    ///
    /// Windows are aligned to each metric's period and end at the start of the period
    /// still running, as AWS recommends for GetMetricData: the open period is never
    /// requested (it would under-count a Sum and look like a drop in load). A query on the
    /// `coxswain:fleet` dimension, which CloudWatch does not have, is read per instance
    /// (`InstanceId`, the dimension EC2 publishes) over the fleet's instances and combined
    /// with the query's statistic (see [`fleet_metric_queries`]).
    pub(super) async fn observe_metrics(
        &self,
        now: DateTime<Utc>,
        instances: &[Instance],
        extra: &[MetricQuery],
        report: &mut PassReport,
    ) -> HashMap<MetricQuery, Option<crate::cloud::MetricSeries>> {
        let mut queries: Vec<MetricQuery> = extra.to_vec();
        let mut lookback = chrono::Duration::minutes(5);
        if !extra.is_empty() {
            lookback = lookback.max(health_gate::FRESH + health_gate::LOOKBACK);
        }
        for f in &self.config.fleets {
            for p in &f.scaling.policies {
                if let Some(m) = p.metric() {
                    queries.push(m.query());
                    lookback = lookback.max(
                        m.stale_after(f.scaling.metric_stale_after.chrono())
                            + m.period.chrono() * 2,
                    );
                }
            }
        }
        queries.sort();
        queries.dedup();
        if queries.is_empty() {
            return HashMap::new();
        }
        let closed = |q: &MetricQuery, mut s: crate::cloud::MetricSeries| {
            // Only closed periods, whatever the cloud answered.
            let period = chrono::Duration::seconds(i64::from(q.period_secs.max(1)));
            s.points.retain(|(t, _)| *t + period <= now);
            s
        };
        let mut out: HashMap<MetricQuery, Option<crate::cloud::MetricSeries>> = HashMap::new();
        let mut periods: Vec<u32> = queries.iter().map(|q| q.period_secs.max(1)).collect();
        periods.sort_unstable();
        periods.dedup();
        for period in periods {
            let wanted: Vec<&MetricQuery> = queries
                .iter()
                .filter(|q| q.period_secs.max(1) == period)
                .collect();
            let (asked, parts) = fleet_metric_queries(&wanted, instances);
            let (start, end) = aligned_window(now, lookback, period);
            match self.cloud.get_metrics(&asked, start, end).await {
                Ok(series) => {
                    for (q, s) in wanted
                        .iter()
                        .zip(combine_fleet_series(&wanted, &parts, series))
                    {
                        out.insert((*q).clone(), Some(closed(q, s)));
                    }
                }
                Err(e) => {
                    error!(error = %e, "cannot read metrics; every metric policy holds this pass");
                    note_error(report, "read metrics", &e);
                    for q in wanted {
                        out.insert(q.clone(), None);
                    }
                }
            }
        }
        // Predictive policies without history (first pass, new fleet, changed policy)
        // read their whole history window once; later passes extend it.
        let mut backfill: Vec<MetricQuery> = Vec::new();
        let mut history = chrono::Duration::zero();
        for f in &self.config.fleets {
            let memory = self.fleets.get(&f.name).map(|s| &s.memory);
            for (i, p) in f.scaling.policies.iter().enumerate() {
                if let crate::manifest::PolicySpec::Predictive(pr) = p {
                    if memory.is_none_or(|m| m.needs_history(f, i)) {
                        backfill.push(pr.metric.query());
                        history = history.max(pr.history.chrono());
                    }
                }
            }
        }
        backfill.sort();
        backfill.dedup();
        if !backfill.is_empty() {
            let period = backfill
                .iter()
                .map(|q| q.period_secs.max(1))
                .max()
                .unwrap_or(60);
            let (start, end) = aligned_window(now, history, period);
            let wanted: Vec<&MetricQuery> = backfill.iter().collect();
            let (asked, parts) = fleet_metric_queries(&wanted, instances);
            match self.cloud.get_metrics(&asked, start, end).await {
                Ok(series) => {
                    let series = combine_fleet_series(&wanted, &parts, series);
                    for (q, s) in backfill.iter().cloned().zip(series) {
                        info!(metric = %q.name, datapoints = s.points.len(), "read demand history for predictive scaling");
                        let s = closed(&q, s);
                        out.insert(q, Some(s));
                    }
                }
                Err(e) => {
                    warn!(error = %e, "cannot read demand history; predictive policies use what the next passes read");
                    note_error(report, "read demand history", &e);
                }
            }
        }
        out
    }
}

/// In-service instances of a group past their warmup, counted from when each was first
/// seen in service (on the first pass, everything in service counts as warm).
pub(super) fn group_warm(
    state: &mut FleetState,
    group: &GroupState,
    warmup: chrono::Duration,
    now: DateTime<Utc>,
) -> u32 {
    let first_pass = !state.group_seen;
    state.group_seen = true;
    let in_service: HashSet<&str> = group
        .instances
        .iter()
        .filter(|(_, s)| *s)
        .map(|(id, _)| id.as_str())
        .collect();
    state
        .in_service_since
        .retain(|id, _| in_service.contains(id.as_str()));
    let mut warm = 0;
    for id in in_service {
        let since = *state
            .in_service_since
            .entry(id.to_string())
            .or_insert(if first_pass { now - warmup } else { now });
        if now - since >= warmup {
            warm += 1;
        }
    }
    warm
}

/// (current, warm, booting, retiring) of a directly managed fleet, in capacity units
/// (each instance counts its weight).
pub(super) fn summarize(
    instances: &[&Instance],
    spec: &FleetSpec,
    now: DateTime<Utc>,
) -> (u32, u32, u32, u32) {
    let warmup = spec.scaling.warmup.chrono();
    let mut current = 0;
    let mut warm = 0;
    let mut retiring = 0;
    for i in instances {
        if !i.state.is_live() {
            continue;
        }
        let units = i.weight.max(1);
        if i.retiring_since.is_some() {
            retiring += units;
            continue;
        }
        // EC2 asked for it to be replaced: its replacement is the capacity.
        if i.replacing.is_some() {
            continue;
        }
        current += units;
        if i.state == InstanceState::Running && now - i.launched_at >= warmup {
            warm += units;
        }
    }
    (current, warm, current - warm, retiring)
}

/// `[start, end)` for a read of `lookback` of a metric with this period: both ends on
/// period boundaries (whole hours for periods that divide one), `end` the start of the
/// period still running. Pure.
pub fn aligned_window(
    now: DateTime<Utc>,
    lookback: chrono::Duration,
    period_secs: u32,
) -> (DateTime<Utc>, DateTime<Utc>) {
    let p = i64::from(period_secs.max(1));
    let end = now.timestamp().div_euclid(p) * p;
    let span = lookback.num_seconds().max(p);
    let start = end - span.div_euclid(p) * p - if span % p == 0 { 0 } else { p };
    let at = |s: i64| DateTime::from_timestamp(s, 0).unwrap_or(now);
    (at(start), at(end))
}

/// Where a fleet-level query was split into per-instance ones: (index of the query among
/// those asked, range of its parts in the request).
type FleetParts = Vec<Option<std::ops::Range<usize>>>;

/// The queries to send for `wanted`: each as it is, except those on the `coxswain:fleet`
/// dimension of the `AWS/EC2` namespace, which EC2 does not publish: each becomes one
/// query per live instance of that fleet on `InstanceId`. Pure.
pub fn fleet_metric_queries(
    wanted: &[&MetricQuery],
    instances: &[Instance],
) -> (Vec<MetricQuery>, FleetParts) {
    let mut asked = Vec::new();
    let mut parts = Vec::with_capacity(wanted.len());
    for q in wanted {
        match q.dimensions.get(crate::cloud::tags::FLEET) {
            Some(fleet) if q.namespace == "AWS/EC2" => {
                let from = asked.len();
                let mut ids: Vec<&str> = instances
                    .iter()
                    .filter(|i| &i.fleet == fleet && i.state.is_live())
                    .filter(|i| i.retiring_since.is_none())
                    .map(|i| i.id.as_str())
                    .collect();
                ids.sort_unstable();
                for id in ids {
                    let mut one = (*q).clone();
                    one.dimensions = BTreeMap::from([("InstanceId".to_string(), id.to_string())]);
                    asked.push(one);
                }
                parts.push(Some(from..asked.len()));
            }
            _ => {
                parts.push(None);
                asked.push((*q).clone());
            }
        }
    }
    (asked, parts)
}

/// Put the answers of [`fleet_metric_queries`] back together: a per-instance split is
/// combined per timestamp with its statistic (Sum and SampleCount add up, Maximum and
/// Minimum take the extreme, Average and percentiles take the mean of the instances that
/// published in that period). Pure.
pub fn combine_fleet_series(
    wanted: &[&MetricQuery],
    parts: &FleetParts,
    mut answered: Vec<crate::cloud::MetricSeries>,
) -> Vec<crate::cloud::MetricSeries> {
    let mut out = Vec::with_capacity(wanted.len());
    let mut next = 0usize;
    for (q, part) in wanted.iter().zip(parts) {
        match part {
            None => {
                let s = answered
                    .get_mut(next)
                    .map(std::mem::take)
                    .unwrap_or_default();
                next += 1;
                out.push(s);
            }
            Some(range) => {
                let mut at: BTreeMap<DateTime<Utc>, Vec<f64>> = BTreeMap::new();
                for i in range.clone() {
                    if let Some(s) = answered.get(i) {
                        for (t, v) in &s.points {
                            at.entry(*t).or_default().push(*v);
                        }
                    }
                }
                next = range.end;
                // Instances publish the newest period at slightly different moments: a
                // newest timestamp that fewer instances answered than the one before is
                // incomplete (a Sum would read low), and is left for the next pass.
                let counts: Vec<usize> = at.values().rev().take(2).map(Vec::len).collect();
                if let [newest, before] = counts[..] {
                    if newest < before {
                        at.pop_last();
                    }
                }
                let points = at
                    .into_iter()
                    .filter(|(_, vs)| !vs.is_empty())
                    .map(|(t, vs)| {
                        let v = match q.stat.as_str() {
                            "Sum" | "SampleCount" => vs.iter().sum(),
                            "Maximum" => vs.iter().copied().fold(f64::MIN, f64::max),
                            "Minimum" => vs.iter().copied().fold(f64::MAX, f64::min),
                            _ => vs.iter().sum::<f64>() / vs.len() as f64,
                        };
                        (t, v)
                    })
                    .collect();
                out.push(crate::cloud::MetricSeries { points });
            }
        }
    }
    out
}
