//! The level-triggered reconcile loop. Each pass observes reality (owned instances by tag,
//! groups, one batched metric read), asks the pure policy code what each fleet should
//! have, and acts on the difference. Nothing is remembered that cannot be observed again,
//! except the stabilization memory and the registration cache: a restarted controller
//! converges from what it sees, and retirements in flight are carried by a tag.
//!
//! This module must not decide capacity (that is [`crate::policy`]) nor speak any SDK
//! (that is [`crate::cloud`]).

mod gc;
pub mod plan;

use crate::clock::Clock;
use crate::cloud::{
    Cloud, CloudError, GroupState, Instance, InstanceState, LaunchRequest, MetricQuery,
    TargetHealth,
};
use crate::manifest::{Config, FleetSpec};
use crate::policy::{self, Decision, Memory, Observation};
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use tracing::{debug, error, info, warn};

/// Re-register a fleet's running instances this often even when nothing changed, to mend
/// drift (a target removed by hand). RegisterTargets is idempotent, so this costs one call
/// per fleet per interval and never a describe. 30 minutes keeps it to about one call per
/// 30 fleets per minute; new instances are registered at once regardless.
const REGISTRATION_REFRESH: chrono::Duration = chrono::Duration::minutes(30);

/// Something the controller did (or, in dry-run, would have done).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    Launch {
        fleet: String,
        ids: Vec<String>,
        instance_type: Option<String>,
        subnet: Option<String>,
    },
    SetDesired {
        fleet: String,
        group: String,
        from: u32,
        to: u32,
    },
    MarkRetiring {
        fleet: String,
        ids: Vec<String>,
    },
    Deregister {
        fleet: String,
        ids: Vec<String>,
    },
    Register {
        fleet: String,
        ids: Vec<String>,
    },
    Terminate {
        fleet: String,
        ids: Vec<String>,
        reason: String,
    },
}

/// A fleet's part of a pass: the decision and the metric values it was made from.
#[derive(Debug, Clone)]
pub struct FleetReport {
    pub decision: Decision,
    /// (metric name, newest value) per metric policy.
    pub metrics: Vec<(String, Option<f64>)>,
    pub booting: u32,
    pub retiring: u32,
}

#[derive(Debug, Clone, Default)]
pub struct PassReport {
    pub fleets: Vec<FleetReport>,
    pub actions: Vec<Action>,
    pub errors: Vec<String>,
    /// AWS asked us to slow down during this pass.
    pub throttled: bool,
}

#[derive(Debug, Default)]
struct FleetState {
    memory: Memory,
    /// Auto Scaling group instances: when each was first seen in service. The group API
    /// gives no launch time, so warmup is counted from here. After a restart every
    /// instance already in service counts as warm.
    in_service_since: HashMap<String, DateTime<Utc>>,
    registered: HashSet<String>,
    registered_refreshed: Option<DateTime<Utc>>,
}

pub struct Controller {
    cloud: Arc<dyn Cloud>,
    clock: Arc<dyn Clock>,
    config: Config,
    dry_run: bool,
    fleets: HashMap<String, FleetState>,
    orphans: HashMap<String, DateTime<Utc>>,
}

impl Controller {
    pub fn new(
        cloud: Arc<dyn Cloud>,
        clock: Arc<dyn Clock>,
        config: Config,
        dry_run: bool,
    ) -> Self {
        Self {
            cloud,
            clock,
            config,
            dry_run,
            fleets: HashMap::new(),
            orphans: HashMap::new(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Swap in a new, already validated config. Memory of fleets that remain is kept.
    pub fn replace_config(&mut self, config: Config) {
        self.fleets.retain(|name, _| config.fleet(name).is_some());
        self.config = config;
    }

    pub fn cloud(&self) -> &Arc<dyn Cloud> {
        &self.cloud
    }

    /// One reconcile pass over every fleet.
    pub async fn reconcile_once(&mut self) -> PassReport {
        let now = self.clock.now();
        let mut report = PassReport::default();
        let instances = match self.cloud.list_instances().await {
            Ok(v) => v,
            Err(e) => {
                error!(error = %e, "cannot list instances; skipping this pass (nothing is changed without observing first)");
                note_error(&mut report, "list instances", &e);
                return report;
            }
        };
        let mut by_fleet: BTreeMap<&str, Vec<&Instance>> = BTreeMap::new();
        for i in &instances {
            by_fleet.entry(i.fleet.as_str()).or_default().push(i);
        }
        let groups = self.observe_groups(&mut report).await;
        let metrics = self.observe_metrics(now, &mut report).await;

        let config = self.config.clone();
        let mut decisions = Vec::with_capacity(config.fleets.len());
        let mut reports = Vec::with_capacity(config.fleets.len());
        for spec in &config.fleets {
            let fleet_instances = by_fleet
                .get(spec.name.as_str())
                .cloned()
                .unwrap_or_default();
            let (current, warm, booting, retiring) = match &spec.auto_scaling_group {
                Some(g) => match groups.get(g) {
                    Some(gs) => {
                        let state = self.fleets.entry(spec.name.clone()).or_default();
                        let warm = group_warm(state, gs, spec.scaling.warmup.chrono(), now);
                        (gs.desired, warm, gs.desired.saturating_sub(warm), 0)
                    }
                    None => {
                        warn!(fleet = %spec.name, group = %g, "Auto Scaling group not found; not acting on this fleet");
                        report
                            .errors
                            .push(format!("{}: group {g} not found", spec.name));
                        continue;
                    }
                },
                None => summarize(&fleet_instances, spec, now),
            };
            let series: Vec<_> = spec
                .scaling
                .policies
                .iter()
                .map(|p| {
                    p.metric()
                        .and_then(|m| metrics.get(&m.query()).cloned().flatten())
                })
                .collect();
            let shown: Vec<(String, Option<f64>)> = spec
                .scaling
                .policies
                .iter()
                .zip(&series)
                .filter_map(|(p, s)| {
                    p.metric().map(|m| {
                        (
                            m.name.clone(),
                            s.as_ref().and_then(|s| s.latest()).map(|(_, v)| v),
                        )
                    })
                })
                .collect();
            let obs = Observation {
                now,
                current,
                warm,
                metrics: series,
            };
            let state = self.fleets.entry(spec.name.clone()).or_default();
            let decision = policy::decide(spec, &obs, &state.memory);
            state.memory.record(
                now,
                decision.recommended,
                spec.scaling.scale_in_stabilization.chrono(),
            );
            decisions.push(decision);
            reports.push((spec, shown, booting, retiring));
        }
        policy::apply_global_cap(&mut decisions, config.controller.max_total_instances);

        for (decision, (spec, metrics, booting, retiring)) in decisions.into_iter().zip(reports) {
            for w in &decision.warnings {
                warn!(fleet = %spec.name, "metric missing or stale, holding capacity: {w}");
            }
            if decision.change() != 0 {
                info!(fleet = %spec.name, env = %spec.environment, from = decision.current, to = decision.desired, dry_run = self.dry_run, "decision: {}", decision.reason());
            } else {
                debug!(fleet = %spec.name, env = %spec.environment, from = decision.current, to = decision.desired, "decision: {}", decision.reason());
            }
            if !self.dry_run {
                let fleet_instances = by_fleet
                    .get(spec.name.as_str())
                    .cloned()
                    .unwrap_or_default();
                match &spec.auto_scaling_group {
                    Some(g) => self.act_group(spec, g, &decision, &mut report).await,
                    None => {
                        self.act_direct(spec, &fleet_instances, &decision, now, &mut report)
                            .await
                    }
                }
            }
            report.fleets.push(FleetReport {
                decision,
                metrics,
                booting,
                retiring,
            });
        }
        if !self.dry_run {
            self.collect_garbage(&instances, now, &mut report).await;
        }
        report
    }

    async fn observe_groups(&self, report: &mut PassReport) -> HashMap<String, GroupState> {
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
    async fn observe_metrics(
        &self,
        now: DateTime<Utc>,
        report: &mut PassReport,
    ) -> HashMap<MetricQuery, Option<crate::cloud::MetricSeries>> {
        let mut queries: Vec<MetricQuery> = Vec::new();
        let mut lookback = chrono::Duration::minutes(5);
        for f in &self.config.fleets {
            for p in &f.scaling.policies {
                if let Some(m) = p.metric() {
                    queries.push(m.query());
                    lookback =
                        lookback.max(f.scaling.metric_stale_after.chrono() + m.period.chrono() * 2);
                }
            }
        }
        queries.sort();
        queries.dedup();
        if queries.is_empty() {
            return HashMap::new();
        }
        match self.cloud.get_metrics(&queries, now - lookback, now).await {
            Ok(series) => queries
                .into_iter()
                .zip(series.into_iter().map(Some))
                .collect(),
            Err(e) => {
                error!(error = %e, "cannot read metrics; every metric policy holds this pass");
                note_error(report, "read metrics", &e);
                queries.into_iter().map(|q| (q, None)).collect()
            }
        }
    }

    async fn act_group(
        &mut self,
        spec: &FleetSpec,
        group: &str,
        d: &Decision,
        report: &mut PassReport,
    ) {
        if d.desired == d.current {
            return;
        }
        match self.cloud.set_desired_capacity(group, d.desired).await {
            Ok(()) => {
                info!(fleet = %spec.name, group, from = d.current, to = d.desired, "action: set desired capacity");
                report.actions.push(Action::SetDesired {
                    fleet: spec.name.clone(),
                    group: group.into(),
                    from: d.current,
                    to: d.desired,
                });
            }
            Err(e) => {
                error!(fleet = %spec.name, group, error = %e, "set desired capacity failed");
                note_error(report, &spec.name, &e);
            }
        }
    }

    async fn act_direct(
        &mut self,
        spec: &FleetSpec,
        instances: &[&Instance],
        d: &Decision,
        now: DateTime<Utc>,
        report: &mut PassReport,
    ) {
        let live: Vec<&Instance> = instances
            .iter()
            .copied()
            .filter(|i| i.state.is_live() && i.retiring_since.is_none())
            .collect();
        let retiring: Vec<&Instance> = instances
            .iter()
            .copied()
            .filter(|i| i.state.is_live() && i.retiring_since.is_some())
            .collect();
        self.finish_retirements(spec, &retiring, now, report).await;
        let mut launched = Vec::new();
        let mut retired = Vec::new();
        if d.desired > d.current {
            launched = self
                .launch(spec, &live, d.desired - d.current, now, report)
                .await;
        } else if d.desired < d.current {
            retired = self
                .retire(spec, &live, d.current - d.desired, now, report)
                .await;
        }
        // An instance retired this pass must not be registered again by the refresh.
        let staying: Vec<&Instance> = live
            .into_iter()
            .filter(|i| !retired.contains(&i.id))
            .collect();
        self.register(spec, &staying, &launched, now, report).await;
    }

    /// Launch `n`, spread over subnets; on InsufficientInstanceCapacity try the next
    /// instance type, then move the remainder to the next subnet.
    async fn launch(
        &mut self,
        spec: &FleetSpec,
        live: &[&Instance],
        n: u32,
        now: DateTime<Utc>,
        report: &mut PassReport,
    ) -> Vec<Instance> {
        let controller_id = self.config.controller.controller_id.clone();
        let live_ids: Vec<&str> = live.iter().map(|i| i.id.as_str()).collect();
        let types = plan::instance_type_choices(spec);
        let mut out = Vec::new();
        let mut pending: Vec<(Option<String>, u32)> = plan::spread(spec, live, n);
        let mut exhausted: HashSet<Option<String>> = HashSet::new();
        while let Some((subnet, count)) = pending.pop() {
            let mut placed = false;
            for ty in &types {
                let req = plan::launch_request(
                    now,
                    spec,
                    &controller_id,
                    &live_ids,
                    subnet.clone(),
                    ty.clone(),
                    count,
                );
                match self.run_idempotent(&req).await {
                    Ok(got) => {
                        let ids: Vec<String> = got.iter().map(|i| i.id.clone()).collect();
                        info!(fleet = %spec.name, build = %req.build, instance_type = ?ty, subnet = ?subnet, ids = ?ids, client_token = %req.client_token, "action: launched {} instance(s)", ids.len());
                        report.actions.push(Action::Launch {
                            fleet: spec.name.clone(),
                            ids,
                            instance_type: ty.clone(),
                            subnet: subnet.clone(),
                        });
                        out.extend(got);
                        placed = true;
                        break;
                    }
                    Err(e) if e.is_capacity() => {
                        warn!(fleet = %spec.name, instance_type = ?ty, subnet = ?subnet, error = %e, "no capacity; trying the next instance type");
                    }
                    Err(e) => {
                        error!(fleet = %spec.name, error = %e, "launch failed");
                        note_error(report, &spec.name, &e);
                        return out;
                    }
                }
            }
            if !placed {
                exhausted.insert(subnet.clone());
                let next = spec
                    .launch
                    .subnets
                    .iter()
                    .find(|s| !exhausted.contains(&Some((*s).clone())));
                match next {
                    Some(s) => {
                        warn!(fleet = %spec.name, from = ?subnet, to = %s, "no capacity in any instance type; moving {count} launch(es) to the next subnet");
                        pending.push((Some(s.clone()), count));
                    }
                    None => {
                        error!(fleet = %spec.name, "no capacity in any instance type or subnet of the launch spec; {count} launch(es) not placed");
                        report
                            .errors
                            .push(format!("{}: insufficient capacity everywhere", spec.name));
                    }
                }
            }
        }
        out
    }

    /// RunInstances under the request's ClientToken. If EC2 answers with an earlier,
    /// finished request under the same token (every instance it returns is terminated;
    /// a live one would be in the observed set and change the token), nothing new was
    /// launched, so the request is sent again under a derived token.
    async fn run_idempotent(&self, req: &LaunchRequest) -> Result<Vec<Instance>, CloudError> {
        let mut req = req.clone();
        let base = req.client_token.clone();
        for attempt in 1..=3 {
            let got = self.cloud.launch(&req).await?;
            if got.is_empty() || got.iter().any(|i| i.state.is_live()) {
                return Ok(got);
            }
            info!(fleet = %req.fleet, client_token = %req.client_token, "ClientToken answered by an earlier, finished launch; retrying under a new token");
            req.client_token = format!("{base}-{attempt}");
        }
        Err(CloudError::Rejected {
            operation: "RunInstances",
            code: "ClientTokenReused".into(),
            message: format!("every token derived from {base} was already used"),
        })
    }

    /// Start retiring `n` instances: tag them (durable intent), then deregister from the
    /// load balancer; they are terminated once drained (see `finish_retirements`).
    async fn retire(
        &mut self,
        spec: &FleetSpec,
        live: &[&Instance],
        n: u32,
        now: DateTime<Utc>,
        report: &mut PassReport,
    ) -> Vec<String> {
        let victims = plan::choose_victims(live, &spec.build(), n);
        let ids: Vec<String> = victims.iter().map(|i| i.id.clone()).collect();
        if ids.is_empty() {
            return ids;
        }
        if let Err(e) = self.cloud.mark_retiring(&ids, now).await {
            error!(fleet = %spec.name, ids = ?ids, error = %e, "cannot mark instances as retiring; not retiring them");
            note_error(report, &spec.name, &e);
            return Vec::new();
        }
        info!(fleet = %spec.name, ids = ?ids, "action: marked retiring");
        report.actions.push(Action::MarkRetiring {
            fleet: spec.name.clone(),
            ids: ids.clone(),
        });
        let state = self.fleets.entry(spec.name.clone()).or_default();
        for id in &ids {
            state.registered.remove(id);
        }
        match &spec.target_group_arn {
            Some(tg) => match self.cloud.deregister_targets(tg, &ids).await {
                Ok(()) => {
                    info!(fleet = %spec.name, ids = ?ids, target_group = %tg, "action: deregistered; draining before terminate");
                    report.actions.push(Action::Deregister {
                        fleet: spec.name.clone(),
                        ids: ids.clone(),
                    });
                }
                Err(e) => {
                    error!(fleet = %spec.name, error = %e, "deregister failed; will retry next pass");
                    note_error(report, &spec.name, &e);
                }
            },
            None => {
                let reason = "scale-in (no load balancer to drain)";
                self.terminate(spec, ids.clone(), reason, report).await
            }
        }
        ids
    }

    /// Level-triggered drain: every pass, each retiring instance is deregistered if it is
    /// still registered, terminated once the target group no longer drains it (or the
    /// drain timeout passed), and left alone while it drains.
    async fn finish_retirements(
        &mut self,
        spec: &FleetSpec,
        retiring: &[&Instance],
        now: DateTime<Utc>,
        report: &mut PassReport,
    ) {
        if retiring.is_empty() {
            return;
        }
        let Some(tg) = &spec.target_group_arn else {
            let ids = retiring.iter().map(|i| i.id.clone()).collect();
            self.terminate(spec, ids, "retiring (no load balancer)", report)
                .await;
            return;
        };
        let health: HashMap<String, TargetHealth> = match self.cloud.target_health(tg).await {
            Ok(h) => h.into_iter().collect(),
            Err(e) => {
                warn!(fleet = %spec.name, error = %e, "cannot read target health; drains wait a pass");
                note_error(report, &spec.name, &e);
                return;
            }
        };
        let timeout = spec.scaling.drain_timeout.chrono();
        let (mut done, mut timed_out, mut again) = (Vec::new(), Vec::new(), Vec::new());
        for i in retiring {
            let since = i.retiring_since.unwrap_or(now);
            match health.get(&i.id) {
                None | Some(TargetHealth::Unused) => done.push(i.id.clone()),
                Some(TargetHealth::Draining) if now - since >= timeout => {
                    timed_out.push(i.id.clone())
                }
                Some(TargetHealth::Draining) => {}
                Some(_) => again.push(i.id.clone()),
            }
        }
        if !again.is_empty() {
            if let Err(e) = self.cloud.deregister_targets(tg, &again).await {
                note_error(report, &spec.name, &e);
            } else {
                info!(fleet = %spec.name, ids = ?again, "action: deregistered (resumed retirement)");
                report.actions.push(Action::Deregister {
                    fleet: spec.name.clone(),
                    ids: again,
                });
            }
        }
        if !done.is_empty() {
            self.terminate(spec, done, "drained", report).await;
        }
        if !timed_out.is_empty() {
            warn!(fleet = %spec.name, ids = ?timed_out, "drain timeout reached; terminating anyway");
            self.terminate(spec, timed_out, "drain timeout", report)
                .await;
        }
    }

    async fn terminate(
        &mut self,
        spec: &FleetSpec,
        ids: Vec<String>,
        reason: &str,
        report: &mut PassReport,
    ) {
        match self.cloud.terminate(&ids).await {
            Ok(()) => {
                info!(fleet = %spec.name, ids = ?ids, reason, "action: terminated");
                report.actions.push(Action::Terminate {
                    fleet: spec.name.clone(),
                    ids,
                    reason: reason.into(),
                });
            }
            Err(e) => {
                error!(fleet = %spec.name, ids = ?ids, error = %e, "terminate failed");
                note_error(report, &spec.name, &e);
            }
        }
    }

    /// Register running instances that are not known to be registered. On the refresh
    /// interval every running instance is registered again (idempotent), mending drift.
    async fn register(
        &mut self,
        spec: &FleetSpec,
        live: &[&Instance],
        launched: &[Instance],
        now: DateTime<Utc>,
        report: &mut PassReport,
    ) {
        let Some(tg) = &spec.target_group_arn else {
            return;
        };
        let state = self.fleets.entry(spec.name.clone()).or_default();
        let refresh = state
            .registered_refreshed
            .is_none_or(|t| now - t >= REGISTRATION_REFRESH);
        let running = live
            .iter()
            .copied()
            .chain(launched.iter())
            .filter(|i| i.state == InstanceState::Running);
        let ids: Vec<String> = running
            .filter(|i| refresh || !state.registered.contains(&i.id))
            .map(|i| i.id.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let refreshed_at = refresh_mark(&spec.name, state.registered_refreshed, now);
        if ids.is_empty() {
            if refresh {
                state.registered_refreshed = Some(refreshed_at);
            }
            return;
        }
        match self.cloud.register_targets(tg, &ids).await {
            Ok(()) => {
                let state = self.fleets.entry(spec.name.clone()).or_default();
                let new: Vec<String> = ids
                    .iter()
                    .filter(|id| !state.registered.contains(*id))
                    .cloned()
                    .collect();
                state.registered.extend(ids.iter().cloned());
                if refresh {
                    state.registered_refreshed = Some(refreshed_at);
                }
                if !new.is_empty() {
                    info!(fleet = %spec.name, ids = ?new, target_group = %tg, "action: registered with target group");
                    report.actions.push(Action::Register {
                        fleet: spec.name.clone(),
                        ids: new,
                    });
                }
            }
            Err(e) => {
                error!(fleet = %spec.name, error = %e, "register targets failed; will retry next pass");
                note_error(report, &spec.name, &e);
            }
        }
    }
}

/// When a registration refresh counts as done. The first one (at start) is backdated by a
/// per-fleet offset, so that later refreshes of many fleets spread over the interval
/// instead of all landing on the same pass.
fn refresh_mark(fleet: &str, last: Option<DateTime<Utc>>, now: DateTime<Utc>) -> DateTime<Utc> {
    if last.is_some() {
        return now;
    }
    let h = fleet.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let span = REGISTRATION_REFRESH.num_seconds().max(1) as u64;
    now - chrono::Duration::seconds((h % span) as i64)
}

/// In-service instances of a group past their warmup, counted from when each was first
/// seen in service (on the first pass, everything in service counts as warm).
fn group_warm(
    state: &mut FleetState,
    group: &GroupState,
    warmup: chrono::Duration,
    now: DateTime<Utc>,
) -> u32 {
    let first_pass = state.in_service_since.is_empty();
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

/// (current, warm, booting, retiring) of a directly managed fleet.
fn summarize(
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
        if i.retiring_since.is_some() {
            retiring += 1;
            continue;
        }
        current += 1;
        if i.state == InstanceState::Running && now - i.launched_at >= warmup {
            warm += 1;
        }
    }
    (current, warm, current - warm, retiring)
}

fn note_error(report: &mut PassReport, what: &str, e: &CloudError) {
    if matches!(e, CloudError::Throttled { .. }) {
        report.throttled = true;
    }
    report.errors.push(format!("{what}: {e}"));
}
