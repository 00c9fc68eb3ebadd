//! Running rollouts inside the reconcile pass: load them from the store, observe instance
//! health and the fleet gates, let the pure state machine (`crate::deploy::advance`)
//! decide, persist its new state and events, then converge instances per build.

mod lifecycle;
mod observe;
mod traffic;

use super::{note_error, Controller, PassReport};
use crate::cloud::{Instance, InstanceState, TargetHealth};
use crate::deploy::converge::{converge, CanaryShare, Counts, Limits};
use crate::deploy::gates::{self, InstanceGateInputs};
use crate::deploy::{self, Build, Observed, Phase, Rollout};
use crate::manifest::FleetSpec;
use crate::policy::Decision;
use crate::store::Outcome;
use chrono::{DateTime, Utc};
use std::collections::{HashMap, HashSet};
use tracing::{error, info, warn};

impl Controller {
    /// The build new instances of `spec` get outside a rollout: the last one made live
    /// by a deploy, else the manifest's.
    pub(super) fn current_build(&mut self, spec: &FleetSpec) -> Build {
        if let Some(b) = self.current.get(&spec.name) {
            return b.clone();
        }
        let live = self.store.live_build(&spec.name).ok().flatten();
        let b = match live {
            Some(id) => Build::from_id(spec, &id),
            None => Build::from_manifest(spec),
        };
        self.current.insert(spec.name.clone(), b.clone());
        b
    }

    /// The rollout each fleet is running this pass. A queued one starts when its fleet
    /// has none running; it rolls from whatever build is current at that moment.
    pub(super) fn load_rollouts(&mut self, now: DateTime<Utc>) -> HashMap<String, Rollout> {
        let store = self.store.clone();
        let rows = match store.running_rollouts() {
            Ok(r) => r,
            Err(e) => {
                error!(error = %e, "cannot read rollouts from the state database");
                return HashMap::new();
            }
        };
        let mut running: HashMap<String, Rollout> = HashMap::new();
        let mut queued: Vec<Rollout> = Vec::new();
        for r in rows {
            if r.phase == Phase::Queued {
                queued.push(r);
            } else {
                running.insert(r.fleet.clone(), r);
            }
        }
        for mut r in queued {
            if r.deadline.is_some_and(|t| now >= t) || r.abort.is_some() {
                // Its deadline passed (or it was aborted) while it waited: it never starts.
                let why = match r.abort.take() {
                    Some(a) => a,
                    None => {
                        r.timed_out = true;
                        "deploy --timeout reached while queued; nothing was changed".to_string()
                    }
                };
                self.record(&r, now, &why);
                r.phase = Phase::RolledBack { reason: why };
                self.save(&r, now);
                continue;
            }
            if running.contains_key(&r.fleet) {
                continue;
            }
            let Some(spec) = self.config.fleet(&r.fleet).cloned() else {
                continue;
            };
            if let Some(why) = deploy::admit::frozen(&spec, now) {
                // A freeze began while it waited: it waits on, visibly.
                let state = self.fleets.entry(spec.name.clone()).or_default();
                if state.frozen_note.as_deref() != Some(why.as_str()) {
                    state.frozen_note = Some(why.clone());
                    self.record(&r, now, &format!("waiting: {why}"));
                }
                continue;
            }
            r.from = self.current_build(&spec);
            r.phase = if r.deploy.hooks.pre_deploy.is_empty() {
                Phase::Rolling
            } else {
                Phase::PreDeploy
            };
            r.step = 0;
            r.step_started = now;
            r.green_since = None;
            let msg = format!(
                "rollout #{} started: {} → {} on {} ({}), {}",
                r.id,
                r.from.id,
                r.to.id,
                r.fleet,
                r.env,
                strategy_name(&r)
            );
            self.record(&r, now, &msg);
            if r.from.id == r.to.id {
                // Deploying what is live (say, a revert that another rollout already
                // restored): nothing to move, and every instance would count as new.
                r.phase = Phase::Succeeded;
                self.record(
                    &r,
                    now,
                    &format!("{} is already live on {}: nothing to do", r.to.id, r.fleet),
                );
                self.save(&r, now);
                continue;
            }
            self.save(&r, now);
            running.insert(r.fleet.clone(), r);
        }
        running
    }

    /// Log a progress line and append it to the rollout's events.
    fn record(&self, r: &Rollout, now: DateTime<Utc>, message: &str) {
        info!(fleet = %r.fleet, rollout = r.id, build = %r.to.id, "rollout: {message}");
        if let Err(e) = self.store.add_event(r.id, now, message) {
            error!(rollout = r.id, error = %e, "cannot record rollout event");
        }
    }

    fn save(&self, r: &Rollout, now: DateTime<Utc>) {
        let store = &self.store;
        let body = match serde_json::to_string(r) {
            Ok(b) => b,
            Err(e) => {
                error!(rollout = r.id, error = %e, "cannot serialize rollout");
                return;
            }
        };
        let result = match &r.phase {
            Phase::Succeeded => store.finish(r.id, Outcome::Succeeded, None, now, &body),
            Phase::RolledBack { reason } => {
                store.finish(r.id, Outcome::RolledBack, Some(reason), now, &body)
            }
            _ => store.save_rollout(r.id, true, &body),
        };
        if let Err(e) = result {
            error!(rollout = r.id, error = %e, "cannot save rollout state");
        }
    }

    /// The phase a rollout ended this pass in, for the report `status` reads.
    fn reported_phase(report: &mut PassReport, r: &Rollout) {
        if let Some(x) = report.rollouts.iter_mut().rev().find(|x| x.id == r.id) {
            x.phase = r.phase.name().to_string();
        }
    }

    /// One pass of a rollout on a directly managed fleet.
    pub(super) async fn act_rollout(
        &mut self,
        spec: &FleetSpec,
        instances: &[&Instance],
        d: &Decision,
        rollout: &Rollout,
        now: DateTime<Utc>,
        report: &mut PassReport,
    ) {
        let retiring: Vec<&Instance> = instances
            .iter()
            .copied()
            .filter(|i| i.state.is_live() && i.retiring_since.is_some())
            .collect();
        self.finish_retirements(spec, &retiring, now, report).await;
        if !self.pre_deploy(rollout, now, report).await {
            // Hooks running (or just failed): the fleet scales on its current build.
            return Box::pin(self.act_direct(spec, instances, d, None, now, report)).await;
        }
        let live: Vec<&Instance> = instances
            .iter()
            .copied()
            .filter(|i| i.state.is_live() && i.retiring_since.is_none())
            .collect();
        let (new, old): (Vec<&Instance>, Vec<&Instance>) =
            live.iter().copied().partition(|i| i.build == rollout.to.id);
        let green_unswitched = matches!(
            rollout.deploy.strategy,
            crate::manifest::StrategySpec::BlueGreen(_)
        ) && rollout.phase == Phase::Rolling;
        // Canary with traffic shifting: the new build serves from its own target group.
        let traffic = match &rollout.deploy.strategy {
            crate::manifest::StrategySpec::Canary(c) => c.traffic.clone(),
            _ => None,
        };
        let canary_spec = traffic.as_ref().map(|t| {
            let mut c = spec.clone();
            c.name = format!("{}#canary", spec.name);
            c.target_group_arn = Some(t.canary_target_group_arn.clone());
            c
        });
        let health_spec = match (&canary_spec, &rollout.phase) {
            (Some(c), Phase::Rolling) => c,
            _ => spec,
        };
        // A rollback restores a build that was live: its smoke is retried until it passes
        // (a rollback has no gate to fail), not given up after `smoke_attempts`.
        let attempts = match rollout.kind {
            deploy::Kind::Rollback => u32::MAX,
            deploy::Kind::Deploy => spec.deploy.gates.instance.smoke_attempts,
        };
        let health = self
            .healthy_new(
                health_spec,
                &spec.name,
                attempts,
                &new,
                !green_unswitched,
                report,
            )
            .await;
        for line in &health.smoke_news {
            self.record(rollout, now, line);
        }
        let healthy_new = health.healthy;
        // Registered only once their smoke passed: until then they serve no traffic.
        let smoke_ok: Option<HashSet<String>> = health_spec
            .deploy
            .gates
            .instance
            .smoke_command
            .as_ref()
            .map(|_| {
                self.fleets
                    .get(&spec.name)
                    .map(|s| s.smoke_passed.clone())
                    .unwrap_or_default()
            });
        // Old instances count as healthy when running and, where the fleet has a target
        // group, healthy in it: a rollback is done only once the old build serves again.
        let main_health: Option<HashSet<String>> = match (
            &spec.target_group_arn,
            spec.deploy.gates.instance.target_healthy,
        ) {
            (Some(tg), true) => match self.cloud.target_health(tg).await {
                Ok(h) => Some(
                    h.into_iter()
                        .filter(|(_, s)| *s == TargetHealth::Healthy)
                        .map(|(id, _)| id)
                        .collect(),
                ),
                Err(e) => {
                    note_error(report, &spec.name, &e);
                    Some(HashSet::new())
                }
            },
            _ => None,
        };
        let old_healthy_ids: HashSet<&str> = old
            .iter()
            .filter(|i| i.state == InstanceState::Running)
            .filter(|i| main_health.as_ref().is_none_or(|h| h.contains(&i.id)))
            .map(|i| i.id.as_str())
            .collect();
        // Counts are capacity units (instances without weights).
        use crate::cloud::units;
        let old_healthy = units(
            old.iter()
                .copied()
                .filter(|i| old_healthy_ids.contains(i.id.as_str())),
        );
        let new_live = units(new.iter().copied());
        let new_healthy = units(new.iter().copied().filter(|i| healthy_new.contains(&i.id)));
        let launch_rejected = self
            .fleets
            .get(&spec.name)
            .and_then(|s| s.launch_rejected.clone())
            .filter(|(b, _)| *b == rollout.to.id)
            .map(|(_, why)| why);
        let verdict = gates::instance_verdict(&InstanceGateInputs {
            phase: &rollout.phase,
            build: &rollout.to.id,
            desired: d.desired,
            new_live,
            new_healthy,
            launch_rejected: launch_rejected.as_deref(),
            smoke_failed: health.smoke_failed.as_deref(),
            green_unswitched,
        });
        let gates = match verdict {
            Some(v) => v,
            None => self.fleet_gates(rollout, now).await,
        };
        let observed = Observed {
            now,
            desired: d.desired,
            new_live,
            new_healthy,
            old_live: units(old.iter().copied()),
            old_healthy,
            gates,
            unit_slack: spec.launch.max_weight() - 1,
        };
        let gates = observed.gates.clone();
        let (next, events, targets) = deploy::advance(rollout, &observed);
        // The phase it ends this pass in (a rollout that finished shows finished).
        report.rollouts.push(super::RolloutReport {
            id: rollout.id,
            fleet: rollout.fleet.clone(),
            from: rollout.from.id.clone(),
            to: rollout.to.id.clone(),
            phase: next.phase.name().to_string(),
            step: next.step,
            gates,
        });
        for e in &events {
            self.record(&next, now, e);
        }
        if next != *rollout {
            self.save(&next, now);
        }
        if self.dry_run {
            return;
        }
        // How many of each build to launch and retire: a pure function of the counts
        // (`deploy::converge`); here the instances are picked and the cloud is called.
        // Its limits: the step's surge over the instances in service, the global cap over
        // every billed instance (`cap_room`, which every launch takes from; at the cap
        // the rollout replaces in place), the per-pass launch and retire limits, and the
        // healthy floor. (`capacity.max` bounds what scaling decides; a rollout's surge
        // may go above it, as Kubernetes' maxSurge goes above replicas: otherwise a fleet
        // at its maximum with nothing unavailable could never deploy.)
        // New instances that serve nothing (never registered, like a blue/green set before
        // its switch, or not healthy) are the first to make room at a cap.
        let serving: HashSet<&str> = match &main_health {
            Some(h) => h.iter().map(String::as_str).collect(),
            None => healthy_new.iter().map(String::as_str).collect(),
        };
        let idle_new: Vec<&Instance> = new
            .iter()
            .copied()
            .filter(|i| !serving.contains(i.id.as_str()))
            .collect();
        let counts = Counts {
            desired: d.desired,
            new_live,
            new_healthy,
            new_idle: units(idle_new.iter().copied()),
            new_in_group: main_health.as_ref().map_or(new_live, |h| {
                units(new.iter().copied().filter(|i| h.contains(&i.id)))
            }),
            old_live: units(old.iter().copied()),
            old_healthy,
            retiring: units(retiring.iter().copied()),
        };
        let limits = Limits {
            max_launch: spec.scaling.max_launch_per_cycle,
            max_retire: spec.scaling.max_retire_per_cycle,
            // The cap counts instances: its room holds that many of the lightest type.
            cap_room: self
                .cap_room
                .map(|r| r.saturating_mul(spec.launch.min_weight())),
        };
        let moves = converge(&targets, &counts, &limits, &next.phase);
        let mut launched = Vec::new();
        if moves.launch_new > 0 {
            launched.extend(
                self.launch(
                    spec,
                    &rollout.to,
                    &live,
                    instances,
                    moves.launch_new,
                    report,
                )
                .await,
            );
        }
        if moves.launch_old > 0 {
            launched.extend(
                self.launch(
                    spec,
                    &rollout.from,
                    &live,
                    instances,
                    moves.launch_old,
                    report,
                )
                .await,
            );
        }
        if moves.blocked_at_cap {
            info!(fleet = %spec.name, launching = moves.launch_old, "rolling back at the cap: new-build instances leave first to make room, within max_unavailable");
        }
        let mut retired = Vec::new();
        // Old-build instances above their share: the unhealthy ones first.
        let (old_unhealthy, old_fine): (Vec<&Instance>, Vec<&Instance>) = old
            .iter()
            .copied()
            .partition(|i| !old_healthy_ids.contains(i.id.as_str()));
        for (pool, n) in [
            (&old_unhealthy, moves.retire_old_unhealthy),
            (&old_fine, moves.retire_old_healthy),
        ] {
            if n > 0 {
                let pool = self.market_victims(spec, &live, pool, n);
                retired.extend(
                    self.retire(spec, &rollout.to.id, &pool, n, now, report)
                        .await,
                );
            }
        }
        if moves.retire_new_idle > 0 {
            let pool = self.market_victims(spec, &live, &idle_new, moves.retire_new_idle);
            retired.extend(
                self.retire(
                    spec,
                    &rollout.from.id,
                    &pool,
                    moves.retire_new_idle,
                    now,
                    report,
                )
                .await,
            );
        }
        if moves.retire_new > 0 {
            if moves.one_at_a_time {
                warn!(fleet = %spec.name, "rolling back at max_total_instances with max_unavailable 0: one instance of {} leaves before its replacement is up", rollout.to.id);
            }
            let left: Vec<&Instance> = new
                .iter()
                .copied()
                .filter(|i| !retired.contains(&i.id))
                .collect();
            let left = self.market_victims(spec, &live, &left, moves.retire_new);
            retired.extend(
                self.retire(spec, &rollout.from.id, &left, moves.retire_new, now, report)
                    .await,
            );
        }
        let serves = |i: &Instance| {
            if i.build == rollout.to.id {
                targets.register_new && smoke_ok.as_ref().is_none_or(|ok| ok.contains(&i.id))
            } else {
                targets.register_old
            }
        };
        let staying: Vec<&Instance> = live
            .iter()
            .copied()
            .filter(|i| !retired.contains(&i.id))
            .filter(|i| serves(i))
            .collect();
        let launched: Vec<Instance> = launched.into_iter().filter(|i| serves(i)).collect();
        match (&canary_spec, &next.phase) {
            (Some(c), Phase::Rolling) => {
                // New instances go to the canary target group, old ones stay in the main.
                let (to_canary, to_main): (Vec<&Instance>, Vec<&Instance>) = staying
                    .iter()
                    .copied()
                    .partition(|i| i.build == rollout.to.id);
                let (l_canary, l_main): (Vec<Instance>, Vec<Instance>) =
                    launched.into_iter().partition(|i| i.build == rollout.to.id);
                self.register(c, &to_canary, &l_canary, now, report).await;
                self.register(spec, &to_main, &l_main, now, report).await;
            }
            _ => self.register(spec, &staying, &launched, now, report).await,
        }
        if let (Some(t), Some(c)) = (&traffic, &canary_spec) {
            let share = match moves.canary_share {
                CanaryShare::Set(share) => share,
                CanaryShare::Keep => self
                    .fleets
                    .get(&spec.name)
                    .and_then(|s| s.canary_share)
                    .unwrap_or(0),
            };
            self.shift_traffic(spec, t, share, report).await;
            self.save_rollout_memory();
            if share == 0 && !matches!(next.phase, Phase::Rolling) {
                // Done with the canary group: take the new instances out of it.
                let ids: Vec<String> = new.iter().map(|i| i.id.clone()).collect();
                self.leave_canary_group(c, &ids, report).await;
            }
        }
        // Blue/green after the switch: the old set stays running, out of the target group.
        // The old set leaves the target group only once the green set is healthy in it,
        // so traffic always has healthy targets.
        if moves.stand_by_old {
            let standby: Vec<String> = old
                .iter()
                .filter(|i| !retired.contains(&i.id))
                .map(|i| i.id.clone())
                .collect();
            self.stand_by(spec, &standby, report).await;
            self.save_rollout_memory();
        }
        if next.phase.is_finished() {
            self.rollout_finished(spec, &next, now);
        }
    }
}

fn strategy_name(r: &Rollout) -> &'static str {
    match r.deploy.strategy {
        crate::manifest::StrategySpec::Rolling(_) => "rolling",
        crate::manifest::StrategySpec::Canary(_) => "canary",
        crate::manifest::StrategySpec::BlueGreen(_) => "blue/green",
    }
}
