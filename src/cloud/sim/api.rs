//! The simulated region's answers to the [`Cloud`] calls, with call counting and injected
//! faults, behaving like the AWS APIs they stand for (pagination, 500 queries per metric
//! call, idempotent client tokens, ownership checks).

use super::{Op, SimCloud, Target, HEALTH_CHECK_DELAY};
use crate::cloud::model::{load_balancer_dimension, target_group_dimension};
use crate::cloud::{
    tags, AlarmState, CallCounts, Cloud, CloudError, FleetAnswer, GroupState, Instance,
    InstanceState, LaunchRequest, Market, MetricQuery, MetricSeries, PoolError, TargetHealth,
};
use chrono::{DateTime, Utc};
use std::collections::HashMap;

impl SimCloud {
    /// A launch from a template version or AMI that does not exist is refused, as EC2
    /// refuses it.
    fn refuse_missing_source(
        &self,
        req: &LaunchRequest,
        operation: &'static str,
    ) -> Result<(), CloudError> {
        match self.missing_source(req.template.as_ref(), req.image_id.as_deref()) {
            Some((message, code)) => Err(CloudError::Rejected {
                operation,
                code: code.into(),
                message,
            }),
            None => Ok(()),
        }
    }

    /// How long a new instance of `fleet` takes to boot (3 minutes for a fleet the
    /// simulation does not describe).
    fn boot_of(st: &super::State, fleet: &str) -> chrono::Duration {
        st.fleets
            .get(fleet)
            .map(|f| f.boot)
            .unwrap_or(chrono::Duration::minutes(3))
    }

    /// Like EC2: a ClientToken seen before is answered with that request's instances as
    /// they are now, terminated ones included (never a new launch).
    fn answered_before(st: &super::State, token: &str) -> Option<Vec<Instance>> {
        let first = st.tokens.get(token)?;
        Some(
            first
                .iter()
                .map(|i| match st.instances.get(&i.id) {
                    Some(now) if now.terminated_at.is_none() => now.inst.clone(),
                    _ => Instance {
                        state: InstanceState::Terminated,
                        ..i.clone()
                    },
                })
                .collect(),
        )
    }
}

#[async_trait::async_trait]
impl Cloud for SimCloud {
    async fn list_instances(&self) -> Result<Vec<Instance>, CloudError> {
        CallCounts::bump(&self.calls.describe_instances);
        self.take_fault(Op::List, "DescribeInstances")?;
        let now = self.clock.now();
        let mut st = self.lock();
        Self::settle(&mut st, now, self.drain);
        // Paginated like DescribeInstances: 1000 per page.
        let lag = st.list_lag;
        let owned: Vec<Instance> = st
            .instances
            .values()
            .filter(|i| i.terminated_at.is_none() && self.owned(i))
            .filter(|i| now - i.inst.launched_at >= lag)
            .map(|i| i.inst.clone())
            .collect();
        let pages = owned.len().div_ceil(1000).max(1) as u64;
        self.calls
            .describe_instances
            .fetch_add(pages - 1, std::sync::atomic::Ordering::Relaxed);
        Ok(owned)
    }

    async fn launch(&self, req: &LaunchRequest) -> Result<Vec<Instance>, CloudError> {
        CallCounts::bump(&self.calls.run_instances);
        self.take_fault(Op::Launch, "RunInstances")?;
        self.refuse_missing_source(req, "RunInstances")?;
        let now = self.clock.now();
        let mut st = self.lock();
        if let Some(first) = Self::answered_before(&st, &req.client_token) {
            return Ok(first);
        }
        let ty = req
            .instance_type
            .clone()
            .unwrap_or_else(|| "m6i.large".into());
        if Self::lacks_capacity(&st, &ty, req.subnet.as_ref(), req.market) {
            return Err(CloudError::InsufficientCapacity {
                operation: "RunInstances",
                code: "InsufficientInstanceCapacity".into(),
                message: format!("no {ty} capacity in {:?}", req.subnet),
            });
        }
        let boot = Self::boot_of(&st, &req.fleet);
        let mut out = Vec::new();
        for _ in 0..req.count {
            let id = Self::create(
                &mut st,
                &req.fleet,
                &req.build,
                Some(ty.clone()),
                req.subnet.clone(),
                req.tags.clone(),
                now,
                now + boot,
            );
            if let Some(i) = st.instances.get(&id) {
                out.push(i.inst.clone());
            }
        }
        st.tokens.insert(req.client_token.clone(), out.clone());
        if st.lose_launch_answers > 0 {
            st.lose_launch_answers -= 1;
            return Err(CloudError::Service {
                operation: "RunInstances",
                message: "injected: the answer was lost after the instances were launched".into(),
                source: None,
            });
        }
        Ok(out)
    }

    async fn create_fleet(&self, req: &LaunchRequest) -> Result<FleetAnswer, CloudError> {
        CallCounts::bump(&self.calls.create_fleet);
        self.take_fault(Op::Launch, "CreateFleet")?;
        if req.template.is_none() {
            return Err(CloudError::Rejected {
                operation: "CreateFleet",
                code: "MissingLaunchTemplate".into(),
                message: "CreateFleet launches from a launch template; the fleet has none".into(),
            });
        }
        self.refuse_missing_source(req, "CreateFleet")?;
        let now = self.clock.now();
        let mut st = self.lock();
        st.fleet_requests.push(req.clone());
        if let Some(instances) = Self::answered_before(&st, &req.client_token) {
            let errors = st
                .fleet_errors
                .get(&req.client_token)
                .cloned()
                .unwrap_or_default();
            return Ok(FleetAnswer { instances, errors });
        }
        let ty_of = |p: &crate::cloud::Pool| {
            p.instance_type
                .clone()
                .unwrap_or_else(|| "m6i.large".into())
        };
        let (open, shut): (Vec<_>, Vec<_>) = req
            .pools
            .iter()
            .partition(|p| !Self::lacks_capacity(&st, &ty_of(p), p.subnet.as_ref(), req.market));
        let errors: Vec<PoolError> = shut
            .into_iter()
            .map(|p| PoolError {
                pool: p.clone(),
                market: req.market,
                code: "InsufficientInstanceCapacity".into(),
                message: format!("no {} {} capacity in {:?}", req.market, ty_of(p), p.subnet),
            })
            .collect();
        let boot = Self::boot_of(&st, &req.fleet);
        let mut out = Vec::new();
        let mut tags_ = req.tags.clone();
        tags_.insert(tags::MARKET.into(), req.market.as_aws().into());
        // `count` is target capacity in units: instances are added until their weights
        // reach it, the last one overshooting if it must (as EC2 does).
        let mut filled = 0u32;
        for k in 0.. {
            if filled >= req.count {
                break;
            }
            // On-Demand `prioritized`: the first pool with capacity takes all. Spot: the
            // allocation strategy spreads over the pools with capacity.
            let pool = match req.market {
                Market::OnDemand => open.first(),
                Market::Spot => open.get(k % open.len().max(1)),
            };
            let Some(pool) = pool else { break };
            filled += pool.weight();
            let id = Self::create(
                &mut st,
                &req.fleet,
                &req.build,
                Some(ty_of(pool)),
                pool.subnet.clone(),
                tags_.clone(),
                now,
                now + boot,
            );
            if let Some(i) = st.instances.get(&id) {
                out.push(i.inst.clone());
            }
        }
        st.tokens.insert(req.client_token.clone(), out.clone());
        st.fleet_errors
            .insert(req.client_token.clone(), errors.clone());
        if st.lose_launch_answers > 0 {
            st.lose_launch_answers -= 1;
            return Err(CloudError::Service {
                operation: "CreateFleet",
                message: "injected: the answer was lost after the instances were launched".into(),
                source: None,
            });
        }
        Ok(FleetAnswer {
            instances: out,
            errors,
        })
    }

    async fn mark_retiring(&self, ids: &[String], at: DateTime<Utc>) -> Result<(), CloudError> {
        CallCounts::bump(&self.calls.create_tags);
        let mut st = self.lock();
        self.refuse_foreign(&st, ids, "CreateTags")?;
        for id in ids {
            if let Some(i) = st.instances.get_mut(id) {
                i.tags.insert(tags::RETIRING.into(), at.to_rfc3339());
                i.inst.retiring_since = Some(at);
            }
        }
        Ok(())
    }

    async fn mark_replacing(
        &self,
        ids: &[String],
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<(), CloudError> {
        CallCounts::bump(&self.calls.create_tags);
        let mut st = self.lock();
        self.refuse_foreign(&st, ids, "CreateTags")?;
        let value = format!("{reason} at {}", at.to_rfc3339());
        for id in ids {
            if let Some(i) = st.instances.get_mut(id) {
                i.tags.insert(tags::REPLACE.into(), value.clone());
                i.inst.replacing = Some(value.clone());
            }
        }
        Ok(())
    }

    async fn receive_notices(
        &self,
        max: usize,
    ) -> Result<Vec<crate::cloud::QueueMessage>, CloudError> {
        let st = self.lock();
        if !st.notices.is_empty() {
            CallCounts::bump(&self.calls.receive_message);
        }
        Ok(st
            .notices
            .iter()
            .take(max)
            .map(|(receipt, body)| crate::cloud::QueueMessage {
                receipt: receipt.clone(),
                body: body.clone(),
            })
            .collect())
    }

    async fn delete_notices(&self, receipts: &[String]) -> Result<(), CloudError> {
        let mut st = self.lock();
        for r in receipts {
            CallCounts::bump(&self.calls.delete_message);
            st.notices.retain(|(receipt, _)| receipt != r);
        }
        Ok(())
    }

    async fn terminate(&self, ids: &[String]) -> Result<(), CloudError> {
        CallCounts::bump(&self.calls.terminate_instances);
        self.take_fault(Op::Terminate, "TerminateInstances")?;
        let now = self.clock.now();
        let mut st = self.lock();
        self.refuse_foreign(&st, ids, "TerminateInstances")?;
        for id in ids {
            if let Some(i) = st.instances.get_mut(id) {
                if i.terminated_at.is_none() {
                    i.terminated_at = Some(now);
                    i.inst.state = InstanceState::Terminated;
                    st.terminated_total += 1;
                }
            }
        }
        Ok(())
    }

    async fn get_metrics(
        &self,
        queries: &[MetricQuery],
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Vec<MetricSeries>, CloudError> {
        // One GetMetricData call answers up to 500 queries.
        let batches = queries.len().div_ceil(500).max(1) as u64;
        self.calls
            .get_metric_data
            .fetch_add(batches, std::sync::atomic::Ordering::Relaxed);
        self.take_fault(Op::Metrics, "GetMetricData")?;
        let st = self.lock();
        let readable_until = self.clock.now() - self.lag;
        let mut lifetimes: HashMap<&str, Vec<super::Lifetime>> = HashMap::new();
        for i in st.instances.values() {
            let weight = Self::weight_in(&st, &i.inst);
            lifetimes.entry(i.inst.fleet.as_str()).or_default().push((
                i.ready_at,
                i.terminated_at,
                weight,
            ));
        }
        let mut out = Vec::with_capacity(queries.len());
        // (TargetGroup, LoadBalancer) dimensions → target group, built on first need.
        let mut lb_dims: Option<HashMap<(&str, &str), &str>> = None;
        for q in queries {
            let mut series = MetricSeries::default();
            let bound = st
                .bindings
                .get(q)
                .and_then(|(fleet, m)| st.fleets.get(fleet).map(|f| (fleet, f, m)));
            let per_build = q.dimensions.values().find_map(|b| {
                st.build_metrics
                    .get(&(q.namespace.clone(), q.name.clone(), b.clone()))
                    .copied()
            });
            // EC2's per-instance CPU: the instance's share of its fleet's demand, published
            // for the periods it served (a booting instance publishes nothing here).
            let per_instance = match (q.namespace.as_str(), q.name.as_str()) {
                ("AWS/EC2", "CPUUtilization") if q.dimensions.len() == 1 => q
                    .dimensions
                    .get("InstanceId")
                    .and_then(|id| st.instances.get(id))
                    .and_then(|i| st.fleets.get(&i.inst.fleet).map(|f| (i, f))),
                _ => None,
            };
            // ELB's UnHealthyHostCount, on a target group and a load balancer it is
            // attached to (both dimensions, as ELB publishes it).
            let unhealthy_of = match (q.namespace.as_str(), q.name.as_str()) {
                ("AWS/ApplicationELB", "UnHealthyHostCount") if q.dimensions.len() == 2 => {
                    let by_dims = lb_dims.get_or_insert_with(|| {
                        let mut m: HashMap<(&str, &str), &str> = HashMap::new();
                        for (tg, lbs) in &st.load_balancers {
                            for lb in lbs {
                                m.insert(
                                    (target_group_dimension(tg), load_balancer_dimension(lb)),
                                    tg.as_str(),
                                );
                            }
                        }
                        m
                    });
                    match (
                        q.dimensions.get("TargetGroup"),
                        q.dimensions.get("LoadBalancer"),
                    ) {
                        (Some(t), Some(l)) => by_dims.get(&(t.as_str(), l.as_str())).copied(),
                        _ => None,
                    }
                }
                _ => None,
            };
            // Datapoints are stamped with the start of their period, like CloudWatch.
            let periods = closed_periods(start, end, readable_until, q.period_secs);
            let period = i64::from(q.period_secs.max(60));
            if let Some(tg) = unhealthy_of {
                for (ts, close) in periods {
                    series
                        .points
                        .push((ts, Self::unhealthy_hosts(&st, tg, ts, close)));
                }
            } else if let Some((inst, model)) = per_instance {
                let lives = lifetimes
                    .get(inst.inst.fleet.as_str())
                    .map(Vec::as_slice)
                    .unwrap_or(&[]);
                for (ts, close) in periods.filter(|(_, close)| inst.serving_at(*close)) {
                    if let Some(v) = Self::value(model, lives, super::Meaning::Cpu, close, period) {
                        series.points.push((ts, v));
                    }
                }
            } else if let Some(v) = per_build {
                series.points.extend(periods.map(|(ts, _)| (ts, v)));
            } else if let Some((fleet, model, meaning)) = bound {
                let lives = lifetimes
                    .get(fleet.as_str())
                    .map(Vec::as_slice)
                    .unwrap_or(&[]);
                for (ts, close) in periods {
                    if let Some(v) = Self::value(model, lives, *meaning, close, period) {
                        series.points.push((ts, v));
                    }
                }
            }
            out.push(series);
        }
        Ok(out)
    }

    async fn describe_groups(&self, names: &[String]) -> Result<Vec<GroupState>, CloudError> {
        let batches = names.len().div_ceil(100).max(1) as u64;
        self.calls
            .describe_groups
            .fetch_add(batches, std::sync::atomic::Ordering::Relaxed);
        let now = self.clock.now();
        let mut st = self.lock();
        Self::settle(&mut st, now, self.drain);
        Ok(names
            .iter()
            .filter_map(|n| {
                st.groups.get(n).map(|g| GroupState {
                    name: n.clone(),
                    desired: g.desired,
                    min: g.min,
                    max: g.max,
                    instances: g
                        .members
                        .iter()
                        .filter_map(|id| st.instances.get(id))
                        .map(|i| (i.inst.id.clone(), i.inst.state == InstanceState::Running))
                        .collect(),
                })
            })
            .collect())
    }

    async fn set_desired_capacity(&self, group: &str, desired: u32) -> Result<(), CloudError> {
        CallCounts::bump(&self.calls.set_desired_capacity);
        let exists = self.lock().groups.contains_key(group);
        if !exists {
            return Err(CloudError::Rejected {
                operation: "SetDesiredCapacity",
                code: "ValidationError".into(),
                message: format!("AutoScalingGroup name not found - {group}"),
            });
        }
        self.resize_group(group, desired, self.clock.now());
        Ok(())
    }

    async fn register_targets(&self, target_group: &str, ids: &[String]) -> Result<(), CloudError> {
        CallCounts::bump(&self.calls.register_targets);
        let now = self.clock.now();
        let mut st = self.lock();
        let group = st
            .target_groups
            .entry(target_group.to_string())
            .or_default();
        for id in ids {
            let t = group.entry(id.clone()).or_insert(Target {
                registered_at: now,
                deregistered_at: None,
            });
            if t.deregistered_at.is_some() {
                *t = Target {
                    registered_at: now,
                    deregistered_at: None,
                };
            }
        }
        Ok(())
    }

    async fn deregister_targets(
        &self,
        target_group: &str,
        ids: &[String],
    ) -> Result<(), CloudError> {
        CallCounts::bump(&self.calls.deregister_targets);
        let now = self.clock.now();
        let mut st = self.lock();
        if let Some(group) = st.target_groups.get_mut(target_group) {
            for id in ids {
                if let Some(t) = group.get_mut(id) {
                    t.deregistered_at.get_or_insert(now);
                }
            }
        }
        Ok(())
    }

    async fn target_health(
        &self,
        target_group: &str,
    ) -> Result<Vec<(String, TargetHealth)>, CloudError> {
        CallCounts::bump(&self.calls.describe_target_health);
        let now = self.clock.now();
        let mut st = self.lock();
        Self::settle(&mut st, now, self.drain);
        let Some(group) = st.target_groups.get(target_group) else {
            return Ok(vec![]);
        };
        Ok(group
            .iter()
            .map(|(id, t)| {
                let ready_at = st.instances.get(id).map(|i| i.ready_at);
                let h = if t.deregistered_at.is_some() {
                    TargetHealth::Draining
                } else if st.unhealthy.contains(id) {
                    TargetHealth::Unhealthy
                } else {
                    match ready_at {
                        Some(r) if now >= r.max(t.registered_at) + HEALTH_CHECK_DELAY => {
                            TargetHealth::Healthy
                        }
                        Some(_) => TargetHealth::Initial,
                        None => TargetHealth::Unhealthy,
                    }
                };
                (id.clone(), h)
            })
            .collect())
    }

    async fn target_group_load_balancers(
        &self,
        target_groups: &[String],
    ) -> Result<Vec<(String, Vec<String>)>, CloudError> {
        let calls = target_groups.len().div_ceil(20).max(1) as u64;
        self.calls
            .describe_target_groups
            .fetch_add(calls, std::sync::atomic::Ordering::Relaxed);
        let st = self.lock();
        Ok(target_groups
            .iter()
            .filter_map(|tg| {
                let lbs = st.load_balancers.get(tg).cloned();
                // A target group the region knows (a fleet's, or one with targets).
                match lbs {
                    Some(l) => Some((tg.clone(), l)),
                    None => st
                        .target_groups
                        .contains_key(tg)
                        .then(|| (tg.clone(), vec![])),
                }
            })
            .collect())
    }

    async fn set_forward_weights(
        &self,
        listener_arn: &str,
        weights: &[(String, u32)],
    ) -> Result<(), CloudError> {
        CallCounts::bump(&self.calls.modify_listener);
        self.lock()
            .listeners
            .insert(listener_arn.to_string(), weights.to_vec());
        Ok(())
    }

    async fn instances_by_id(&self, ids: &[String]) -> Result<Vec<Instance>, CloudError> {
        CallCounts::bump(&self.calls.describe_instances);
        self.take_fault(Op::List, "DescribeInstances")?;
        let now = self.clock.now();
        let mut st = self.lock();
        Self::settle(&mut st, now, self.drain);
        let lag = st.list_lag;
        Ok(ids
            .iter()
            .filter_map(|id| st.instances.get(id))
            .filter(|i| now - i.inst.launched_at >= lag)
            .map(|i| match i.terminated_at {
                Some(_) => Instance {
                    state: InstanceState::Terminated,
                    ..i.inst.clone()
                },
                None => i.inst.clone(),
            })
            .collect())
    }

    async fn instance_status(&self, ids: &[String]) -> Result<Vec<(String, bool)>, CloudError> {
        let batches = ids.len().div_ceil(100).max(1) as u64;
        self.calls
            .describe_instance_status
            .fetch_add(batches, std::sync::atomic::Ordering::Relaxed);
        let now = self.clock.now();
        let st = self.lock();
        Ok(ids
            .iter()
            .filter_map(|id| st.instances.get(id))
            .filter(|i| i.terminated_at.is_none())
            // Status checks pass once the instance has booted, unless it is impaired.
            .map(|i| {
                let ok = i.ready_at <= now && !st.impaired.contains(&i.inst.id);
                (i.inst.id.clone(), ok)
            })
            .collect())
    }

    async fn alarm_states(
        &self,
        names: &[String],
    ) -> Result<Vec<(String, AlarmState)>, CloudError> {
        CallCounts::bump(&self.calls.describe_alarms);
        let st = self.lock();
        Ok(names
            .iter()
            .filter_map(|n| st.alarms.get(n).map(|s| (n.clone(), *s)))
            .collect())
    }

    async fn launch_source_missing(
        &self,
        template: Option<&crate::cloud::LaunchTemplate>,
        image_id: Option<&str>,
    ) -> Result<Option<String>, CloudError> {
        Ok(self.missing_source(template, image_id).map(|(why, _)| why))
    }

    fn calls(&self) -> &CallCounts {
        &self.calls
    }
}

/// The periods of `period_secs` (at least a minute) that start in `[start, end)` and have
/// closed by `readable_until`, aligned to the period as CloudWatch aligns them: each as
/// (start, close).
fn closed_periods(
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    readable_until: DateTime<Utc>,
    period_secs: u32,
) -> impl Iterator<Item = (DateTime<Utc>, DateTime<Utc>)> {
    let period = i64::from(period_secs.max(60));
    let first = start.timestamp().div_euclid(period) * period;
    (0..)
        .map(move |k| first + k * period)
        .take_while(move |t| *t + period <= readable_until.timestamp() && *t < end.timestamp())
        .filter_map(|t| DateTime::from_timestamp(t, 0))
        .filter(move |ts| *ts >= start)
        .map(move |ts| (ts, ts + chrono::Duration::seconds(period)))
}
