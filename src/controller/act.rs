//! Acting on a decision: launching (with capacity fallback and idempotent tokens),
//! retiring through the load balancer, and keeping registrations in step. Each step is
//! safe to repeat: a pass that stops half-way is finished by the next one.

use super::{
    note_error, plan, Action, Controller, PassReport, PENDING_LAUNCH_TTL, REGISTRATION_REFRESH,
};
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
        if d.desired > d.current {
            if let Some(room) = self.cap_room {
                let allowed = d.current.saturating_add(room);
                if d.desired > allowed {
                    warn!(fleet = %spec.name, group, wanted = d.desired, allowed, "max_total_instances (global cost cap) reached; the group grows only as far as the cap allows");
                    d.desired = allowed;
                }
                self.take_cap_room(d.desired - d.current);
            }
        }
        if let Some(state) = self.fleets.get_mut(&spec.name) {
            state.last_decided = Some(d.desired);
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
        // ---- Repair (repair.rs): instances it condemned earlier are not counted in `d`,
        // so scaling leaves them (and those it retires now) alone. ----
        let repairing = self.repair(spec, &current, instances, d, now, report).await;
        let live: Vec<&Instance> = live
            .into_iter()
            .filter(|i| !repairing.contains(&i.id))
            .collect();
        // ---- end of repair ----
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

    /// Launch `n` of `build`, spread over subnets; on InsufficientInstanceCapacity try the
    /// next instance type, then move the remainder to the next subnet. Launches whose
    /// answer was lost (a crash, a dropped connection) are sent again first under their own
    /// token, and what they realize counts toward `n`. Returns the instances this pass
    /// launched (never ones already observed).
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
        let observed: HashSet<&str> = observed.iter().map(|i| i.id.as_str()).collect();
        let types = plan::instance_type_choices(spec);
        let fits = n.min(self.cap_room.unwrap_or(u32::MAX));
        let Some(mut out) = self
            .resend_pending_launches(spec, build, &observed, fits, report)
            .await
        else {
            return Vec::new();
        };
        self.take_cap_room(out.len() as u32);
        let mut n = n.saturating_sub(out.len() as u32);
        if let Some(room) = self.cap_room {
            if room < n {
                warn!(fleet = %spec.name, wanted = n, room, "max_total_instances (global cost cap) reached: every booting, serving and draining instance counts; launching {room} of {n}");
                n = room;
            }
        }
        let mut pending: Vec<(Option<String>, u32)> = plan::spread(spec, live, n);
        let mut exhausted: HashSet<Option<String>> = HashSet::new();
        while let Some((subnet, count)) = pending.pop() {
            let mut placed = false;
            for ty in &types {
                self.launch_seq = self.launch_seq.wrapping_add(1);
                let token = plan::fresh_client_token(
                    &controller_id,
                    &spec.name,
                    self.clock.now(),
                    self.launch_seq,
                    rand::random(),
                );
                let req = plan::launch_request(
                    spec,
                    build,
                    &controller_id,
                    subnet.clone(),
                    ty.clone(),
                    count,
                    token,
                );
                match self.send_launch(&req).await {
                    Ok(got) => {
                        if let Some(state) = self.fleets.get_mut(&spec.name) {
                            state.launch_rejected = None;
                        }
                        let got = self.realized(&req, got, &observed, report);
                        self.take_cap_room(got.len() as u32);
                        out.extend(got);
                        placed = true;
                        break;
                    }
                    Err(e) if e.is_capacity() => {
                        warn!(fleet = %spec.name, instance_type = ty.as_deref().unwrap_or("template"), subnet = subnet.as_deref().unwrap_or("template"), error = %e, "no capacity; trying the next instance type");
                    }
                    Err(e) => {
                        error!(fleet = %spec.name, build = %build.id, error = %e, "launch failed");
                        note_error(report, &spec.name, &e);
                        if matches!(&e, CloudError::Rejected { code, .. }
                            if code.starts_with("InvalidLaunchTemplate") || code.starts_with("InvalidAMIID"))
                        {
                            // No such template version or AMI: retrying will not help. A
                            // rollout of this build fails on it at its next pass (quotas
                            // and permissions are not this: they may clear).
                            self.fleets
                                .entry(spec.name.clone())
                                .or_default()
                                .launch_rejected = Some((build.id.clone(), e.to_string()));
                        }
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
                        warn!(fleet = %spec.name, from = subnet.as_deref().unwrap_or("template"), to = %s, "no capacity in any instance type; moving {count} launch(es) to the next subnet");
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

    /// Instances launched count against what the global cap leaves this pass.
    fn take_cap_room(&mut self, n: u32) {
        if let Some(room) = self.cap_room.as_mut() {
            *room = room.saturating_sub(n);
        }
    }

    /// RunInstances with the request remembered first, so that an answer lost to a crash or
    /// a dropped connection can be asked for again under the same token. The request is
    /// forgotten once EC2's answer is known: instances, or a refusal (capacity, invalid,
    /// throttled: nothing was launched). It stays after a service error or timeout, when EC2
    /// may or may not have acted. When the state database refuses the write, nothing is
    /// launched: a launch that could not be retried safely is not made.
    async fn send_launch(&self, req: &LaunchRequest) -> Result<Vec<Instance>, CloudError> {
        let now = self.clock.now();
        if let Some(store) = &self.store {
            let body = serde_json::to_string(req).map_err(|e| CloudError::Service {
                operation: "RunInstances",
                message: format!("cannot write the launch request down: {e}"),
                source: None,
            })?;
            store
                .remember_launch(&req.client_token, &req.fleet, now, &body)
                .map_err(|e| CloudError::Service {
                    operation: "RunInstances",
                    message: format!(
                        "the state database refused the launch request, so it is not sent: {e}"
                    ),
                    source: None,
                })?;
        }
        let r = self.cloud.launch(req).await;
        let answered = !matches!(r, Err(CloudError::Service { .. }));
        if answered {
            if let Some(store) = &self.store {
                if let Err(e) = store.forget_launch(&req.client_token) {
                    error!(fleet = %req.fleet, error = %e, "cannot clear an answered launch; it will be resent once (idempotent)");
                }
            }
        }
        r
    }

    /// Launches of `spec`'s fleet of the same build whose answer is not known are sent again
    /// word for word: EC2 answers with the instances they made, or makes them now. Returns
    /// the instances that are new to this pass, or `None` when a resend failed again
    /// without an answer (then no further launch is made this pass, so nothing is launched
    /// twice). Requests older than [`PENDING_LAUNCH_TTL`] are dropped: whatever they
    /// launched is visible by its tags long before.
    async fn resend_pending_launches(
        &mut self,
        spec: &FleetSpec,
        build: &Build,
        observed: &HashSet<&str>,
        mut fits: u32,
        report: &mut PassReport,
    ) -> Option<Vec<Instance>> {
        let Some(store) = self.store.clone() else {
            return Some(Vec::new());
        };
        let now = self.clock.now();
        let pending = match store.pending_launches(&spec.name) {
            Ok(p) => p,
            Err(e) => {
                error!(fleet = %spec.name, error = %e, "cannot read launches awaiting an answer; not launching this pass");
                return None;
            }
        };
        let mut out = Vec::new();
        for (token, at, body) in pending {
            let req = match serde_json::from_str::<LaunchRequest>(&body) {
                Ok(r) if now - at <= PENDING_LAUNCH_TTL => r,
                Ok(_) | Err(_) => {
                    info!(fleet = %spec.name, client_token = %token, since = %at, "dropping a launch whose answer was lost long ago (its instances, if any, are seen by their tags)");
                    if let Err(e) = store.forget_launch(&token) {
                        error!(fleet = %spec.name, error = %e, "cannot drop an old pending launch");
                    }
                    continue;
                }
            };
            // Another build's launch, or one larger than this pass may launch (the
            // decision or the cap shrank since): not resent now, so it can never launch
            // more than is wanted; it is resent once it fits, or expires. (Had it reached
            // EC2, its instances are listed by their tags within a pass or so.)
            if req.build != build.id {
                continue;
            }
            if req.count > fits {
                info!(fleet = %spec.name, client_token = %token, count = req.count, fits, "a launch whose answer was lost is larger than this pass may launch; not resent now");
                continue;
            }
            match self.send_launch(&req).await {
                Ok(got) => {
                    let seen = got
                        .iter()
                        .filter(|i| observed.contains(i.id.as_str()))
                        .count();
                    info!(fleet = %spec.name, client_token = %token, answered = got.len(), already_seen = seen, "resent a launch whose answer was lost, under its own token");
                    if seen < got.len() {
                        out.extend(self.realized(&req, got, observed, report));
                    }
                    fits = fits.saturating_sub(req.count);
                }
                Err(e @ CloudError::Service { .. }) => {
                    warn!(fleet = %spec.name, client_token = %token, error = %e, "a launch whose answer was lost still has no answer; launching nothing more this pass");
                    note_error(report, &spec.name, &e);
                    return None;
                }
                Err(e) => {
                    warn!(fleet = %spec.name, client_token = %token, error = %e, "a resent launch was refused");
                    note_error(report, &spec.name, &e);
                }
            }
        }
        Some(out)
    }

    /// The instances a launch answer really adds: live and not already observed. Reports
    /// the action, and warns with the reason when fewer than asked were realized.
    fn realized(
        &mut self,
        req: &LaunchRequest,
        got: Vec<Instance>,
        observed: &HashSet<&str>,
        report: &mut PassReport,
    ) -> Vec<Instance> {
        let answered = got.len();
        let new: Vec<Instance> = got
            .into_iter()
            .filter(|i| i.state.is_live() && !observed.contains(i.id.as_str()))
            .collect();
        let ids: Vec<String> = new.iter().map(|i| i.id.clone()).collect();
        if new.len() as u32 >= req.count {
            info!(fleet = %req.fleet, build = %req.build, instance_type = req.instance_type.as_deref().unwrap_or("template"), subnet = req.subnet.as_deref().unwrap_or("template"), ids = ?ids, client_token = %req.client_token, "action: launched {} instance(s)", ids.len());
        } else {
            let why = if answered == 0 {
                "EC2 answered with no instances".to_string()
            } else if new.len() < answered {
                format!(
                    "EC2 answered with {answered} instance(s) of an earlier request under the same ClientToken ({} already seen or no longer running)",
                    answered - new.len()
                )
            } else {
                format!("EC2 launched {answered} of {}", req.count)
            };
            warn!(fleet = %req.fleet, build = %req.build, instance_type = req.instance_type.as_deref().unwrap_or("template"), subnet = req.subnet.as_deref().unwrap_or("template"), ids = ?ids, client_token = %req.client_token, asked = req.count, realized = new.len(), "launch realized fewer instances than asked: {why}");
            report.errors.push(format!(
                "{}: launch realized {} of {}: {why}",
                req.fleet,
                new.len(),
                req.count
            ));
        }
        let now = self.clock.now();
        for i in &new {
            self.inflight.insert(i.id.clone(), (now, i.clone()));
        }
        if !new.is_empty() {
            report.actions.push(Action::Launch {
                fleet: req.fleet.clone(),
                ids,
                instance_type: req.instance_type.clone(),
                subnet: req.subnet.clone(),
            });
        }
        new
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
        for id in &ids {
            if let Some((_, i)) = self.inflight.get_mut(id) {
                i.retiring_since = Some(now);
            }
        }
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

    pub(super) async fn terminate(
        &mut self,
        spec: &FleetSpec,
        ids: Vec<String>,
        reason: &str,
        report: &mut PassReport,
    ) {
        match self.cloud.terminate(&ids).await {
            Ok(()) => {
                for id in &ids {
                    self.inflight.remove(id);
                }
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
