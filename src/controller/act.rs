//! Acting on a decision: launching (with capacity fallback and idempotent tokens),
//! retiring through the load balancer, and keeping registrations in step. Each step is
//! safe to repeat: a pass that stops half-way is finished by the next one.

use super::{note_error, plan, Action, Controller, PassReport, REGISTRATION_REFRESH};
use crate::cloud::{CloudError, Instance, InstanceState, LaunchRequest, TargetHealth};
use crate::deploy::{Build, Rollout};
use crate::manifest::FleetSpec;
use crate::policy::Decision;
use chrono::{DateTime, Utc};
use std::collections::{HashMap, HashSet};
use tracing::{error, info, warn};

impl Controller {
    /// Set a group's desired capacity, within the group's own min and max (AWS refuses
    /// anything outside them).
    pub(super) async fn act_group(
        &mut self,
        spec: &FleetSpec,
        group: &str,
        group_limits: Option<(u32, u32)>,
        d: &Decision,
        report: &mut PassReport,
    ) {
        let mut d = d.clone();
        if let Some((min, max)) = group_limits {
            let clamped = d.desired.clamp(min, max.max(min));
            if clamped != d.desired {
                warn!(fleet = %spec.name, group, wanted = d.desired, group_min = min, group_max = max, "desired capacity outside the group's own min/max; clamped (widen the group to let coxswain go further)");
                d.desired = clamped;
            }
        }
        let d = &d;
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

    pub(super) async fn act_direct(
        &mut self,
        spec: &FleetSpec,
        instances: &[&Instance],
        d: &Decision,
        rollout: Option<&Rollout>,
        now: DateTime<Utc>,
        report: &mut PassReport,
    ) {
        if let Some(r) = rollout {
            self.act_rollout(spec, instances, d, r, now, report).await;
            return;
        }
        let current = self.current_build(spec);
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
                .launch(
                    spec,
                    &current,
                    &live,
                    instances,
                    d.desired - d.current,
                    report,
                )
                .await;
        } else if d.desired < d.current {
            retired = self
                .retire(spec, &current.id, &live, d.current - d.desired, now, report)
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
    pub(super) async fn launch(
        &mut self,
        spec: &FleetSpec,
        build: &Build,
        live: &[&Instance],
        observed: &[&Instance],
        n: u32,
        report: &mut PassReport,
    ) -> Vec<Instance> {
        let controller_id = self.config.controller.controller_id.clone();
        let live_ids: Vec<&str> = live.iter().map(|i| i.id.as_str()).collect();
        let observed: HashSet<&str> = observed.iter().map(|i| i.id.as_str()).collect();
        let types = plan::instance_type_choices(spec);
        let mut out = Vec::new();
        let mut pending: Vec<(Option<String>, u32)> = plan::spread(spec, live, n);
        let mut exhausted: HashSet<Option<String>> = HashSet::new();
        while let Some((subnet, count)) = pending.pop() {
            let mut placed = false;
            for ty in &types {
                let req = plan::launch_request(
                    spec,
                    build,
                    &controller_id,
                    &live_ids,
                    subnet.clone(),
                    ty.clone(),
                    count,
                );
                match self.run_idempotent(&req, &observed).await {
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
                        // One request per subnet: merged counts get their own token.
                        let target = Some(s.clone());
                        match pending.iter_mut().find(|(p, _)| *p == target) {
                            Some((_, c)) => *c += count,
                            None => pending.push((target, count)),
                        }
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

    /// RunInstances under the request's ClientToken. When EC2 answers with an earlier
    /// request's instances (the same token came round again: the fleet is back to the same
    /// instances after a scale-in), nothing new was launched: the answer holds instances
    /// already observed, or only finished ones. Then the request is sent again under a token
    /// chained from the old answer, which is as deterministic as the first.
    async fn run_idempotent(
        &self,
        req: &LaunchRequest,
        observed: &HashSet<&str>,
    ) -> Result<Vec<Instance>, CloudError> {
        let mut req = req.clone();
        for _ in 0..5 {
            let got = self.cloud.launch(&req).await?;
            let stale = !got.is_empty()
                && got
                    .iter()
                    .all(|i| !i.state.is_live() || observed.contains(i.id.as_str()));
            if !stale {
                return Ok(got);
            }
            info!(fleet = %req.fleet, client_token = %req.client_token, "ClientToken answered by an earlier launch; retrying under a chained token");
            let first = got.first().map(|i| i.id.as_str()).unwrap_or_default();
            req.client_token = plan::chained_token(&req.client_token, first);
        }
        Err(CloudError::Rejected {
            operation: "RunInstances",
            code: "ClientTokenReused".into(),
            message: format!(
                "{}: five chained tokens were all answered by earlier launches",
                req.fleet
            ),
        })
    }

    /// Start retiring `n` instances: tag them (durable intent), then deregister from the
    /// load balancer; they are terminated once drained (see `finish_retirements`).
    pub(super) async fn retire(
        &mut self,
        spec: &FleetSpec,
        keep_build: &str,
        live: &[&Instance],
        n: u32,
        now: DateTime<Utc>,
        report: &mut PassReport,
    ) -> Vec<String> {
        let victims = plan::choose_victims(live, keep_build, n);
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
    pub(super) async fn finish_retirements(
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
    pub(super) async fn register(
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
                for id in &ids {
                    state.standby.remove(id);
                }
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
