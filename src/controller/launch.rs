//! Launching: capacity fallback across instance types and subnets, the global cap's
//! room, and idempotent tokens with the request written down first, so that a launch whose
//! answer was lost is sent again word for word rather than made twice.

use super::{note_error, plan, Action, Controller, PassReport, PENDING_LAUNCH_TTL};
use crate::cloud::{CloudError, FleetAnswer, Instance, LaunchRequest};
use crate::deploy::Build;
use crate::manifest::FleetSpec;
use std::collections::HashSet;
use tracing::{error, info, warn};

impl Controller {
    /// Launch `n` capacity units (instances without weights) of `build`, spread over
    /// subnets; on InsufficientInstanceCapacity try the next instance type, then move the
    /// remainder to the next subnet. Each type launches enough instances to cover the
    /// units (the last may overshoot by less than its weight). Launches whose answer was
    /// lost (a crash, a dropped connection) are sent again first under their own token, and
    /// what they realize counts toward `n`. The global cap counts instances: at most what
    /// it leaves is launched. Returns the instances this pass launched (never ones already
    /// observed).
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
        // The cap's room in units: that many instances of the lightest type.
        let min_weight = spec.launch.min_weight();
        let unit_room = |room: Option<u32>| room.map(|r| r.saturating_mul(min_weight));
        let fits = n.min(unit_room(self.cap_room).unwrap_or(u32::MAX));
        let Some(mut out) = self
            .resend_pending_launches(spec, build, &observed, fits, report)
            .await
        else {
            return Vec::new();
        };
        self.take_cap_room(out.len() as u32);
        let mut n = n.saturating_sub(crate::cloud::units(&out));
        if let Some(room) = unit_room(self.cap_room) {
            if room < n {
                warn!(fleet = %spec.name, wanted = n, room, "max_total_instances (global cost cap) reached: every booting, serving and draining instance counts; launching {room} of {n} unit(s)");
                n = room;
            }
        }
        if spec.launch.instances_distribution.is_some() {
            let more = self
                .launch_by_market(spec, build, live, &observed, n, report)
                .await;
            out.extend(more);
            return out;
        }
        let weight_of = |ty: &Option<String>| ty.as_deref().map_or(1, |t| spec.launch.weight_of(t));
        let step = types.first().map_or(1, weight_of);
        // (subnet, units) still to place.
        let mut pending: Vec<(Option<String>, u32)> = plan::spread(spec, live, n, step);
        let mut exhausted: HashSet<Option<String>> = HashSet::new();
        while let Some((subnet, units)) = pending.pop() {
            let mut placed = false;
            for ty in &types {
                let count = units
                    .div_ceil(weight_of(ty))
                    .min(self.cap_room.unwrap_or(u32::MAX));
                if count == 0 {
                    placed = true;
                    break;
                }
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
                match self.send_launch(&req).await.map(|a| a.instances) {
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
                        self.launch_failed(spec, build, &e, report);
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
                        warn!(fleet = %spec.name, from = subnet.as_deref().unwrap_or("template"), to = %s, "no capacity in any instance type; moving {units} unit(s) of launches to the next subnet");
                        // One request per subnet: merged counts get their own token.
                        let target = Some(s.clone());
                        match pending.iter_mut().find(|(p, _)| *p == target) {
                            Some((_, c)) => *c += units,
                            None => pending.push((target, units)),
                        }
                    }
                    None => {
                        error!(fleet = %spec.name, "no capacity in any instance type or subnet of the launch spec; {units} unit(s) of launches not placed");
                        report
                            .errors
                            .push(format!("{}: insufficient capacity everywhere", spec.name));
                    }
                }
            }
        }
        out
    }

    /// A launch refused or failed: reported, and remembered when it names a template
    /// version or AMI that does not exist (retrying will not help; a rollout of this build
    /// fails on it at its next pass; quotas and permissions are not this: they may clear).
    pub(super) fn launch_failed(
        &mut self,
        spec: &FleetSpec,
        build: &Build,
        e: &CloudError,
        report: &mut PassReport,
    ) {
        error!(fleet = %spec.name, build = %build.id, error = %e, "launch failed");
        note_error(report, &spec.name, e);
        if matches!(e, CloudError::Rejected { code, .. }
            if code.starts_with("InvalidLaunchTemplate") || code.starts_with("InvalidAMIID"))
        {
            self.fleets
                .entry(spec.name.clone())
                .or_default()
                .launch_rejected = Some((build.id.clone(), e.to_string()));
        }
    }

    /// Instances launched count against what the global cap leaves this pass.
    pub(super) fn take_cap_room(&mut self, n: u32) {
        if let Some(room) = self.cap_room.as_mut() {
            *room = room.saturating_sub(n);
        }
    }

    /// RunInstances (or CreateFleet, for a request with pools) with the request remembered
    /// first, so that an answer lost to a crash or
    /// a dropped connection can be asked for again under the same token. The request is
    /// forgotten once EC2's answer is known: instances, or a refusal (capacity, invalid,
    /// throttled: nothing was launched). It stays after a service error or timeout, when EC2
    /// may or may not have acted. When the state database refuses the write, nothing is
    /// launched: a launch that could not be retried safely is not made.
    pub(super) async fn send_launch(&self, req: &LaunchRequest) -> Result<FleetAnswer, CloudError> {
        let now = self.clock.now();
        let operation = if req.pools.is_empty() {
            "RunInstances"
        } else {
            "CreateFleet"
        };
        let body = serde_json::to_string(req).map_err(|e| CloudError::Service {
            operation,
            message: format!("cannot write the launch request down: {e}"),
            source: None,
        })?;
        self.store
            .remember_launch(&req.client_token, &req.fleet, now, &body)
            .map_err(|e| CloudError::Service {
                operation,
                message: format!(
                    "the state database refused the launch request, so it is not sent: {e}"
                ),
                source: None,
            })?;
        let r = if req.pools.is_empty() {
            self.cloud.launch(req).await.map(|instances| FleetAnswer {
                instances,
                errors: Vec::new(),
            })
        } else {
            self.cloud.create_fleet(req).await
        };
        let answered = !matches!(r, Err(CloudError::Service { .. }));
        if answered {
            if let Err(e) = self.store.forget_launch(&req.client_token) {
                error!(fleet = %req.fleet, error = %e, "cannot clear an answered launch; it will be resent once (idempotent)");
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
        let store = self.store.clone();
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
            if req.units() > fits {
                info!(fleet = %spec.name, client_token = %token, units = req.units(), fits, "a launch whose answer was lost is larger than this pass may launch; not resent now");
                continue;
            }
            match self.send_launch(&req).await.map(|a| a.instances) {
                Ok(got) => {
                    let seen = got
                        .iter()
                        .filter(|i| observed.contains(i.id.as_str()))
                        .count();
                    info!(fleet = %spec.name, client_token = %token, answered = got.len(), already_seen = seen, "resent a launch whose answer was lost, under its own token");
                    if seen < got.len() {
                        out.extend(self.realized(&req, got, observed, report));
                    }
                    fits = fits.saturating_sub(req.units());
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
    pub(super) fn realized(
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
            .map(|mut i| {
                i.weight = self.config.weight_of(&i);
                i
            })
            .collect();
        let ids: Vec<String> = new.iter().map(|i| i.id.clone()).collect();
        // CreateFleet places what it can and says where it could not; the caller moves
        // the rest (Spot to On-Demand) or reports it, so a short answer is not an error.
        let partial_fleet = !req.pools.is_empty() && new.len() == answered;
        if new.len() as u32 >= req.count || partial_fleet {
            if req.pools.is_empty() {
                info!(fleet = %req.fleet, build = %req.build, market = %req.market, instance_type = req.instance_type.as_deref().unwrap_or("template"), subnet = req.subnet.as_deref().unwrap_or("template"), ids = ?ids, client_token = %req.client_token, "action: launched {} instance(s)", ids.len());
            } else {
                // CreateFleet chose the pools: say which.
                let placed: Vec<String> = new
                    .iter()
                    .map(|i| {
                        format!(
                            "{} {} in {}",
                            i.id,
                            i.instance_type,
                            i.subnet.as_deref().unwrap_or("?")
                        )
                    })
                    .collect();
                info!(fleet = %req.fleet, build = %req.build, market = %req.market, placed = ?placed, client_token = %req.client_token, "action: launched {} instance(s) through CreateFleet", ids.len());
            }
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
        if !new.is_empty() && req.pools.is_empty() {
            report.actions.push(Action::Launch {
                fleet: req.fleet.clone(),
                ids,
                instance_type: req.instance_type.clone(),
                subnet: req.subnet.clone(),
            });
        } else if !new.is_empty() {
            // CreateFleet: one action per pool EC2 chose.
            let mut by_pool: std::collections::BTreeMap<(String, Option<String>), Vec<String>> =
                Default::default();
            for i in &new {
                by_pool
                    .entry((i.instance_type.clone(), i.subnet.clone()))
                    .or_default()
                    .push(i.id.clone());
            }
            for ((ty, subnet), ids) in by_pool {
                report.actions.push(Action::Launch {
                    fleet: req.fleet.clone(),
                    ids,
                    instance_type: Some(ty),
                    subnet,
                });
            }
        }
        new
    }
}
