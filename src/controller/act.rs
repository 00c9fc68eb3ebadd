//! Acting on a decision: setting a group's desired capacity, launching (in `launch.rs`),
//! retiring through the load balancer, and keeping registrations in step. Each step is
//! safe to repeat: a pass that stops half-way is finished by the next one.

use super::{note_error, plan, Action, Controller, PassReport, REGISTRATION_REFRESH};
use crate::cloud::{Instance, InstanceState, TargetHealth};
use crate::deploy::Rollout;
use crate::manifest::FleetSpec;
use crate::policy::Decision;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
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
        // Live and counted: an instance EC2 asked to replace is neither (retire_replaced).
        let live: Vec<&Instance> = instances
            .iter()
            .copied()
            .filter(|i| i.state.is_live() && i.retiring_since.is_none() && i.replacing.is_none())
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
            let n = d.current - d.desired;
            // With an instances distribution, the market above its share gives them up
            // (Spot first), so the On-Demand base stays.
            let floor = self.floor_of(spec);
            let pool = super::spot::scale_in_victims(spec, &live, &current.id, n, floor);
            retired = self.retire(spec, &current.id, &pool, n, now, report).await;
        }
        // An instance retired this pass must not be registered again by the refresh.
        let staying: Vec<&Instance> = live
            .into_iter()
            .filter(|i| !retired.contains(&i.id))
            .collect();
        self.register(spec, &staying, &launched, now, report).await;
        self.retire_replaced(spec, &current, instances, d, now, report)
            .await;
        if launched.is_empty() && retired.is_empty() {
            self.move_back_to_spot(spec, &current, instances, d.desired, now, report)
                .await;
        }
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
