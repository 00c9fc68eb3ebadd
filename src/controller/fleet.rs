//! One fleet within a pass: what the pass observed of it ([`FleetContext`]), its
//! decision (the policy asked with what is observed, and remembered), and its actions.

use super::{observe, repair, Controller, FleetReport, PassReport, SHORTFALL_PASSES};
use crate::cloud::{GroupState, Instance, InstanceState, MetricQuery, MetricSeries};
use crate::deploy::Rollout;
use crate::manifest::FleetSpec;
use crate::policy::{self, Decision, Observation};
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use tracing::{debug, error, info, warn};

/// What one pass observed of one fleet: everything its decision and actions read.
pub(super) struct FleetContext<'a> {
    pub spec: &'a FleetSpec,
    /// Its instances (listed by tag, plus those launched and not listed yet).
    pub instances: Vec<&'a Instance>,
    /// Its Auto Scaling group as described this pass; `None` for a directly launched fleet.
    pub group: Option<&'a GroupState>,
    /// The rollout it runs this pass, if any.
    pub rollout: Option<&'a Rollout>,
    pub now: DateTime<Utc>,
}

impl Controller {
    /// Ask the policy what `ctx`'s fleet should have, and remember the answer (the
    /// stabilization memory, the ledger's decision line, the desired capacity). Returns
    /// the fleet's row of the pass report, before the global cap.
    pub(super) fn decide_fleet(
        &mut self,
        ctx: &FleetContext<'_>,
        metrics: &HashMap<MetricQuery, Option<MetricSeries>>,
    ) -> FleetReport {
        let (spec, now) = (ctx.spec, ctx.now);
        let state = self.fleets.entry(spec.name.clone()).or_default();
        let (current, warm, booting, retiring) = match ctx.group {
            Some(gs) => {
                let warm = observe::group_warm(state, gs, spec.scaling.warmup.chrono(), now);
                (gs.desired, warm, gs.desired.saturating_sub(warm), 0)
            }
            None => observe::summarize(&ctx.instances, spec, now),
        };
        // Live capacity against the decision of the pass before (what it launched
        // toward). An Auto Scaling group is short when it holds fewer instances than
        // its desired capacity; a fleet in a rollout is judged by the rollout.
        let live_now = match ctx.group {
            Some(gs) => gs.instances.len() as u32,
            None => current,
        };
        let in_rollout = ctx.rollout.is_some();
        let behind = match state.last_decided {
            Some(wanted) if !in_rollout && live_now < wanted => wanted - live_now,
            _ => 0,
        };
        state.short_passes = if behind > 0 {
            state.short_passes + 1
        } else {
            0
        };
        let shortfall = if state.short_passes > SHORTFALL_PASSES {
            warn!(fleet = %spec.name, live = live_now, decided = live_now + behind, passes = state.short_passes, "capacity shortfall: the fleet has stayed {behind} instance(s) below its decision for {} passes", state.short_passes);
            behind
        } else {
            0
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
        // During a rollout the fleet runs extra instances (the surge, the new build
        // warming up). The policy must not take those for capacity it asked for, or
        // desired would grow with every batch: it decides from the desired capacity
        // it set last, and the rollout works in proportions of that.
        let current = match (in_rollout, state.base_desired) {
            (true, Some(base)) => base,
            _ => current,
        };
        // Repair (repair.rs): a condemned instance is not capacity, its replacement is.
        let direct = ctx.group.is_none() && !in_rollout;
        let (current, warm) = if direct {
            repair::counted(spec, &ctx.instances, &state.repair, current, warm, now)
        } else {
            (current, warm)
        };
        // In service: running and (with a load balancer) registered by this daemon;
        // for a group, its in-service instances.
        let serving_now = match ctx.group {
            Some(gs) => gs.instances.iter().filter(|(_, s)| *s).count() as u32,
            None => crate::cloud::units(
                ctx.instances
                    .iter()
                    .copied()
                    .filter(|i| i.state == InstanceState::Running && i.retiring_since.is_none())
                    .filter(|i| {
                        spec.target_group_arn.is_none() || state.registered.contains(&i.id)
                    }),
            ),
        };
        let serving = serving_now.max(warm);
        let obs = Observation {
            now,
            current,
            warm,
            serving,
            metrics: series,
        };
        state.memory.observe(spec, &obs);
        let mut decision = policy::decide(spec, &obs, &state.memory);
        // With instance weights a scale-in can only retire whole instances, never below
        // what the policies want: the decision says what will happen (a hold when no
        // instance fits), so it is neither logged nor recorded as a change every pass.
        if direct && spec.launch.weighted() && decision.desired < decision.current {
            let live: Vec<&Instance> = ctx
                .instances
                .iter()
                .copied()
                .filter(|i| {
                    i.state.is_live() && i.retiring_since.is_none() && i.replacing.is_none()
                })
                .collect();
            let n = decision.current - decision.desired;
            let floor = state.on_demand_floor.as_ref().map(|(_, f)| *f);
            let removable =
                crate::cloud::units(super::spot::scale_in_victims(spec, &live, "", n, floor));
            if removable < n {
                decision.desired = decision.current - removable;
                decision.limits.push(policy::Limit::InstanceSize);
            }
        }
        let dry_run = self.dry_run;
        if decision.change() != 0 && !dry_run {
            if let Err(e) = self.store.record_decision(
                now,
                &spec.name,
                decision.current,
                decision.desired,
                &decision.reason(),
            ) {
                error!(error = %e, fleet = %spec.name, "cannot record the decision");
            }
        }
        if state.base_desired != Some(decision.desired) && !dry_run {
            if let Err(e) = self
                .store
                .set_base_desired(&spec.name, decision.desired, now)
            {
                error!(error = %e, fleet = %spec.name, "cannot save the desired capacity");
            }
        }
        state.base_desired = Some(decision.desired);
        let floor = state
            .on_demand_floor
            .get_or_insert_with(|| (crate::cloud::market::Floor::new(24 * 60), decision.desired));
        floor.1 = floor.0.push(now.timestamp() / 60, decision.desired);
        state.memory.record(
            now,
            decision.recommended,
            spec.scaling.scale_in_stabilization.chrono(),
        );
        let instances = match ctx.group {
            Some(gs) => gs.instances.len() as u32,
            None => ctx
                .instances
                .iter()
                .filter(|i| {
                    i.state.is_live() && i.retiring_since.is_none() && i.replacing.is_none()
                })
                .count() as u32,
        };
        let billed = match ctx.group {
            Some(gs) => gs.desired.max(gs.instances.len() as u32),
            None => ctx.instances.iter().filter(|i| i.state.is_live()).count() as u32,
        };
        FleetReport {
            instances,
            billed,
            decision,
            metrics: shown,
            booting,
            retiring,
            live: live_now,
            serving: serving_now,
            shortfall,
            spot: crate::cloud::units(ctx.instances.iter().copied().filter(|i| {
                i.state.is_live()
                    && i.retiring_since.is_none()
                    && i.market == crate::cloud::Market::Spot
            })),
        }
    }

    /// Act on `decision` (after the global cap) for `ctx`'s fleet: set its group's desired
    /// capacity, or launch, retire and roll out directly. Nothing in a dry run.
    pub(super) async fn act_fleet(
        &mut self,
        ctx: &FleetContext<'_>,
        decision: &Decision,
        report: &mut PassReport,
    ) {
        let spec = ctx.spec;
        if let Some(state) = self.fleets.get_mut(&spec.name) {
            state.last_decided = (!self.dry_run).then_some(decision.desired);
            let held = decision.limits.contains(&policy::Limit::GlobalCap);
            if held {
                if !state.held_by_cap {
                    warn!(fleet = %spec.name, desired = decision.desired, wanted = decision.recommended, cap = self.config.controller.max_total_instances.unwrap_or_default(), "max_total_instances (global cost cap) holds the fleet below what its policies want; raise the cap or lower other fleets");
                }
                state.held_by_cap = true;
                state.unheld_passes = 0;
            } else if state.held_by_cap {
                state.unheld_passes += 1;
                if state.unheld_passes >= super::state::CAP_RELEASED_PASSES {
                    info!(fleet = %spec.name, desired = decision.desired, passes = state.unheld_passes, "max_total_instances has not held the fleet back for {} passes", state.unheld_passes);
                    state.held_by_cap = false;
                }
            }
        }
        for w in &decision.warnings {
            warn!(fleet = %spec.name, "metric missing or stale, holding capacity: {w}");
        }
        if decision.change() != 0 {
            info!(fleet = %spec.name, env = %spec.environment, from = decision.current, to = decision.desired, dry_run = self.dry_run, "decision: {}", decision.reason());
        } else {
            debug!(fleet = %spec.name, env = %spec.environment, from = decision.current, to = decision.desired, "decision: {}", decision.reason());
        }
        if self.dry_run {
            return;
        }
        match (&spec.auto_scaling_group, ctx.group) {
            (Some(g), group) => {
                let limits = group.map(|gs| (gs.min, gs.max));
                self.act_group(spec, g, limits, decision, report).await
            }
            (None, _) => {
                self.act_direct(spec, &ctx.instances, decision, ctx.rollout, ctx.now, report)
                    .await
            }
        }
    }
}
