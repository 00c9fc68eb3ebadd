//! The level-triggered reconcile loop. Each pass observes reality (owned instances by tag,
//! groups, one batched metric read), asks the pure policy code what each fleet should
//! have, and acts on the difference. Nothing is remembered that cannot be observed again,
//! except the stabilization memory and the registration cache: a restarted controller
//! converges from what it sees, and retirements in flight are carried by a tag.
//!
//! This module must not decide capacity (that is [`crate::policy`]) nor speak any SDK
//! (that is [`crate::cloud`]).

mod act;
mod gc;
mod health_gate;
pub mod journal;
mod observe;
pub mod plan;
mod repair;
mod report;
pub mod requests;
mod rollout;
mod state;

pub use observe::{aligned_window, combine_fleet_series, fleet_metric_queries};
use observe::{group_warm, summarize};
pub use repair::RepairReport;
pub use report::{Action, FleetReport, PassReport, RolloutReport, SHORTFALL_PASSES};
use state::FleetState;

use crate::clock::Clock;
use crate::cloud::{Cloud, CloudError, Instance, InstanceState, MetricQuery};
use crate::deploy::Build;
use crate::manifest::Config;
use crate::policy::{self, Observation};
use crate::store::Store;
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use tracing::{debug, error, info, warn};

/// Re-register a fleet's running instances this often even when nothing changed, to mend
/// drift (a target removed by hand). RegisterTargets is idempotent, so this costs one call
/// per fleet per interval and never a describe. 30 minutes keeps it to about one call per
/// 30 fleets per minute; new instances are registered at once regardless.
pub(super) const REGISTRATION_REFRESH: chrono::Duration = chrono::Duration::minutes(30);

/// How long a launch whose answer was lost is sent again under its token. DescribeInstances
/// shows new instances within seconds to a minute, so after 15 minutes whatever the launch
/// made is counted by its tags, and resending it could only launch what is no longer wanted.
pub(super) const PENDING_LAUNCH_TTL: chrono::Duration = chrono::Duration::minutes(15);

/// How long a launched instance that DescribeInstances does not list yet is still counted
/// (Karpenter keeps in-flight launches the same way). EC2 lists new instances within
/// seconds, rarely a minute or two; one that is still missing after 5 minutes failed to
/// start, and the fleet is short of it.
pub(super) const INFLIGHT_TTL: chrono::Duration = chrono::Duration::minutes(5);

pub struct Controller {
    /// The cloud as given; `cloud` is it behind the action journal.
    raw_cloud: Arc<dyn Cloud>,
    cloud: Arc<dyn Cloud>,
    journal: Option<Arc<journal::Journaled>>,
    /// Replicas: the fleets this daemon holds the lease of (None: every fleet).
    owned: Option<HashSet<String>>,
    clock: Arc<dyn Clock>,
    config: Config,
    dry_run: bool,
    fleets: HashMap<String, FleetState>,
    orphans: HashMap<String, DateTime<Utc>>,
    /// Only fleets of this region are managed (the AWS side is one region per daemon).
    region: Option<String>,
    /// Ledger, rollouts and events; None only if even an in-memory database failed.
    store: Option<Arc<Store>>,
    /// Each fleet's current build (cache of the ledger).
    current: HashMap<String, Build>,
    /// Whether the last pass ran a rollout (the daemon then polls at the gate interval).
    rollout_interval: Option<std::time::Duration>,
    /// Pre-deploy hooks running, by rollout id.
    hooks: HashMap<i64, tokio::task::JoinHandle<crate::deploy::process::HookRun>>,
    /// Smoke commands running, by instance id (with its fleet): in the background, so a
    /// slow smoke test never holds up a pass or the API.
    smoke_runs: HashMap<
        String,
        (
            String,
            tokio::task::JoinHandle<crate::deploy::process::CommandRun>,
        ),
    >,
    /// Launches made by this process, mixed into each new ClientToken.
    launch_seq: u64,
    /// Instances launched by this process and not listed yet: (launched at, as launched).
    inflight: HashMap<String, (DateTime<Utc>, Instance)>,
    /// Instances that may still be launched this pass under `max_total_instances` (None:
    /// no cap). Every launch path takes from it, so the cap holds for scaling, rollouts
    /// and repairs alike.
    cap_room: Option<u32>,
    /// Which target groups read zero unhealthy hosts (repair skips their target health).
    health_gate: health_gate::HealthGate,
}

impl Controller {
    pub fn new(
        cloud: Arc<dyn Cloud>,
        clock: Arc<dyn Clock>,
        config: Config,
        dry_run: bool,
    ) -> Self {
        let store = match Store::in_memory() {
            Ok(s) => Some(Arc::new(s)),
            Err(e) => {
                error!(error = %e, "cannot open an in-memory state database; deploys are disabled");
                None
            }
        };
        let journal = store.as_ref().map(|s| {
            let j = Arc::new(journal::Journaled::new(
                cloud.clone(),
                s.clone(),
                clock.clone(),
            ));
            j.set_fleets(fleet_names(&config), fleet_resources(&config));
            j
        });
        let journaled: Arc<dyn Cloud> = match &journal {
            Some(j) => j.clone(),
            None => cloud.clone(),
        };
        Self {
            raw_cloud: cloud,
            cloud: journaled,
            journal,
            owned: None,
            clock,
            config,
            dry_run,
            fleets: HashMap::new(),
            orphans: HashMap::new(),
            region: None,
            store,
            current: HashMap::new(),
            rollout_interval: None,
            hooks: HashMap::new(),
            smoke_runs: HashMap::new(),
            launch_seq: 0,
            inflight: HashMap::new(),
            cap_room: None,
            health_gate: health_gate::HealthGate::default(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Use this state database (ledger, rollouts, action journal) instead of a throwaway
    /// one. Intents a previous run left without an outcome are reported: the pass that
    /// follows reconciles them by tags (launches carry their ownership tags from the first
    /// moment, retirements are tags, ClientTokens make a repeated launch a no-op).
    pub fn with_store(mut self, store: Arc<Store>) -> Self {
        match store.unfinished_actions() {
            Ok(open) => {
                for a in &open {
                    warn!(
                        action = %a.action,
                        fleet = %a.fleet,
                        detail = %a.detail,
                        since = %a.at,
                        "an action was in flight when the daemon last stopped; reconciling by tags"
                    );
                }
                if !open.is_empty() {
                    if let Err(e) = store.close_interrupted(self.clock.now()) {
                        error!(error = %e, "cannot close interrupted actions in the journal");
                    }
                }
            }
            Err(e) => error!(error = %e, "cannot read the action journal"),
        }
        let j = Arc::new(journal::Journaled::new(
            self.raw_cloud.clone(),
            store.clone(),
            self.clock.clone(),
        ));
        j.set_fleets(fleet_names(&self.config), fleet_resources(&self.config));
        self.cloud = j.clone();
        self.journal = Some(j);
        self.store = Some(store);
        self
    }

    /// Ask `fence` before every change to the cloud (replicas: the lease's fenced write).
    pub fn set_fence(&mut self, fence: Arc<dyn journal::Fence>) {
        if let Some(j) = &self.journal {
            j.set_fence(Some(fence));
        }
    }

    /// Act only on these fleets (replicas: those whose lease this one holds); `None`: all.
    pub fn set_owned(&mut self, owned: Option<HashSet<String>>) {
        self.owned = owned;
    }

    pub fn owns(&self, fleet: &str) -> bool {
        self.owned.as_ref().is_none_or(|o| o.contains(fleet))
    }

    /// Drop what is in memory about a fleet, so the next pass restores it from the state
    /// file (after importing the state another replica exported).
    /// Drop what this controller remembers of `fleet` (its state and current build), to be
    /// read again from the state database: after another replica had it.
    pub fn forget_fleet(&mut self, fleet: &str) {
        self.fleets.remove(fleet);
        self.current.remove(fleet);
    }

    pub fn store(&self) -> Option<&Arc<Store>> {
        self.store.as_ref()
    }

    /// While rollouts run, passes come at their gate interval instead of the poll interval.
    pub fn rollout_interval(&self) -> Option<std::time::Duration> {
        self.rollout_interval
    }

    /// Manage only the fleets of `region`, now and after every reload.
    pub fn with_region(mut self, region: &str) -> Self {
        self.region = Some(region.to_string());
        self.config.fleets.retain(|f| f.region == region);
        self
    }

    /// Swap in a new, already validated config. Memory of fleets that remain is kept.
    /// Refused when it changes the controller id: instances are owned through that tag,
    /// and the cloud connection lists by it, so it changes only with a restart.
    pub fn replace_config(&mut self, mut config: Config) -> Result<(), String> {
        if config.controller.controller_id != self.config.controller.controller_id {
            return Err(format!(
                "controller_id changed from '{}' to '{}': ownership of instances follows that tag, so it changes only with a restart",
                self.config.controller.controller_id, config.controller.controller_id
            ));
        }
        if let Some(region) = &self.region {
            config.fleets.retain(|f| &f.region == region);
        }
        self.fleets.retain(|name, _| config.fleet(name).is_some());
        if let Some(j) = &self.journal {
            j.set_fleets(fleet_names(&config), fleet_resources(&config));
        }
        self.config = config;
        Ok(())
    }

    pub fn cloud(&self) -> &Arc<dyn Cloud> {
        &self.cloud
    }

    /// One reconcile pass over every fleet.
    pub async fn reconcile_once(&mut self) -> PassReport {
        let now = self.clock.now();
        let mut report = PassReport::default();
        let mut instances = match self.cloud.list_instances().await {
            Ok(v) => v,
            Err(e) => {
                error!(error = %e, "cannot list instances; skipping this pass (nothing is changed without observing first)");
                note_error(&mut report, "list instances", &e);
                return report;
            }
        };
        // Instances this daemon launched that DescribeInstances does not list yet (it is
        // eventually consistent): counted as they were launched until they show up, so
        // the next pass does not launch them again.
        let listed: HashSet<String> = instances.iter().map(|i| i.id.clone()).collect();
        self.inflight
            .retain(|id, (at, _)| !listed.contains(id) && now - *at < INFLIGHT_TTL);
        instances.extend(self.inflight.values().map(|(_, i)| i.clone()));
        let mut by_fleet: BTreeMap<&str, Vec<&Instance>> = BTreeMap::new();
        for i in &instances {
            by_fleet.entry(i.fleet.as_str()).or_default().push(i);
        }
        let errors_before = report.errors.len();
        let groups = self.observe_groups(&mut report).await;
        let groups_unknown = report.errors.len() > errors_before;
        // Every billed instance: booting, serving and draining, of every fleet and of none
        // (orphans), plus the groups' instances.
        let billed: u32 = instances.iter().filter(|i| i.state.is_live()).count() as u32
            + groups
                .values()
                .map(|g| g.desired.max(g.instances.len() as u32))
                .sum::<u32>();
        self.cap_room = self
            .config
            .controller
            .max_total_instances
            // Without the groups' sizes the billed count is unknown: launch nothing.
            .map(|cap| {
                if groups_unknown {
                    0
                } else {
                    cap.saturating_sub(billed)
                }
            });
        let gate = self.health_gate_queries(now, &mut report).await;
        let gate_queries: Vec<MetricQuery> =
            gate.iter().flat_map(|(_, q)| q.iter().cloned()).collect();
        let metrics = self
            .observe_metrics(now, &instances, &gate_queries, &mut report)
            .await;
        self.judge_health_gate(now, &gate, &metrics);
        let rollouts = self.load_rollouts(now);
        self.rollout_interval = rollouts.values().map(|r| r.deploy.gates.interval.0).min();

        let mut config = self.config.clone();
        if let Some(owned) = &self.owned {
            config.fleets.retain(|f| owned.contains(&f.name));
        }
        for spec in &config.fleets {
            if !self.fleets.contains_key(&spec.name) {
                let restored = FleetState::restored(&spec.name, self.store.as_deref());
                self.fleets.insert(spec.name.clone(), restored);
            }
        }
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
            // Live capacity against the decision of the pass before (what it launched
            // toward). An Auto Scaling group is short when it holds fewer instances than
            // its desired capacity; a fleet in a rollout is judged by the rollout.
            let live_now = match spec.auto_scaling_group.as_ref().and_then(|g| groups.get(g)) {
                Some(gs) => gs.instances.len() as u32,
                None => current,
            };
            let in_rollout = rollouts.contains_key(&spec.name);
            let state = self.fleets.entry(spec.name.clone()).or_default();
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
            let state = self.fleets.entry(spec.name.clone()).or_default();
            // During a rollout the fleet runs extra instances (the surge, the new build
            // warming up). The policy must not take those for capacity it asked for, or
            // desired would grow with every batch: it decides from the desired capacity
            // it set last, and the rollout works in proportions of that.
            let current = match (rollouts.contains_key(&spec.name), state.base_desired) {
                (true, Some(base)) => base,
                _ => current,
            };
            // Repair (repair.rs): a condemned instance is not capacity, its replacement is.
            let direct = spec.auto_scaling_group.is_none() && !rollouts.contains_key(&spec.name);
            let (current, warm) = if direct {
                repair::counted(spec, &fleet_instances, &state.repair, current, warm, now)
            } else {
                (current, warm)
            };
            // In service: running and (with a load balancer) registered by this daemon;
            // for a group, its in-service instances.
            let serving_now = match spec.auto_scaling_group.as_ref().and_then(|g| groups.get(g)) {
                Some(gs) => gs.instances.iter().filter(|(_, s)| *s).count() as u32,
                None => fleet_instances
                    .iter()
                    .filter(|i| i.state == InstanceState::Running && i.retiring_since.is_none())
                    .filter(|i| spec.target_group_arn.is_none() || state.registered.contains(&i.id))
                    .count() as u32,
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
            let decision = policy::decide(spec, &obs, &state.memory);
            if decision.change() != 0 && !self.dry_run {
                if let Some(st) = &self.store {
                    if let Err(e) = st.record_decision(
                        now,
                        &spec.name,
                        decision.current,
                        decision.desired,
                        &decision.reason(),
                    ) {
                        error!(error = %e, fleet = %spec.name, "cannot record the decision");
                    }
                }
            }
            if state.base_desired != Some(decision.desired) && !self.dry_run {
                if let Some(st) = &self.store {
                    if let Err(e) = st.set_base_desired(&spec.name, decision.desired, now) {
                        error!(error = %e, fleet = %spec.name, "cannot save the desired capacity");
                    }
                }
            }
            state.base_desired = Some(decision.desired);
            state.memory.record(
                now,
                decision.recommended,
                spec.scaling.scale_in_stabilization.chrono(),
            );
            decisions.push(decision);
            reports.push((
                spec,
                shown,
                booting,
                retiring,
                shortfall,
                live_now,
                serving_now,
            ));
        }
        let counted: u32 = decisions.iter().map(|d| d.current).sum();
        policy::apply_global_cap(
            &mut decisions,
            billed.saturating_sub(counted),
            config.controller.max_total_instances,
        );

        for (decision, (spec, metrics, booting, retiring, shortfall, live, serving)) in
            decisions.into_iter().zip(reports)
        {
            if let Some(state) = self.fleets.get_mut(&spec.name) {
                state.last_decided = (!self.dry_run).then_some(decision.desired);
            }
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
                    Some(g) => {
                        let limits = groups.get(g).map(|gs| (gs.min, gs.max));
                        self.act_group(spec, g, limits, &decision, &mut report)
                            .await
                    }
                    None => {
                        let rollout = rollouts.get(&spec.name);
                        self.act_direct(
                            spec,
                            &fleet_instances,
                            &decision,
                            rollout,
                            now,
                            &mut report,
                        )
                        .await
                    }
                }
            }
            report.fleets.push(FleetReport {
                decision,
                metrics,
                booting,
                retiring,
                live,
                serving,
                shortfall,
            });
        }
        if !self.dry_run {
            if self.owns(crate::fence::GC_LEASE) {
                self.collect_garbage(&instances, now, &mut report).await;
            }
            self.save_rollout_memory();
        }
        report
    }

    /// Save each fleet's rollout memory when it changed, so a restart continues exactly.
    fn save_rollout_memory(&mut self) {
        let Some(store) = self.store.clone() else {
            return;
        };
        for (name, state) in self.fleets.iter_mut() {
            let body = state.rollout_memory();
            if state.saved_memory.as_deref() != Some(body.as_str()) {
                match store.set_fleet_memory(name, &body) {
                    Ok(()) => state.saved_memory = Some(body),
                    Err(e) => error!(fleet = %name, error = %e, "cannot save the rollout state"),
                }
            }
        }
    }
}

pub(super) fn note_error(report: &mut PassReport, what: &str, e: &CloudError) {
    if matches!(e, CloudError::Throttled { .. }) {
        report.throttled = true;
    }
    report.errors.push(format!("{what}: {e}"));
}

fn fleet_names(config: &Config) -> HashSet<String> {
    config.fleets.iter().map(|f| f.name.clone()).collect()
}

/// Target groups, listeners and Auto Scaling groups → the fleet they belong to.
fn fleet_resources(config: &Config) -> HashMap<String, String> {
    let mut m = HashMap::new();
    for f in &config.fleets {
        for r in [&f.target_group_arn, &f.auto_scaling_group]
            .into_iter()
            .flatten()
        {
            m.insert(r.clone(), f.name.clone());
        }
        if let crate::manifest::StrategySpec::Canary(crate::manifest::CanarySpec {
            traffic: Some(t),
            ..
        }) = &f.deploy.strategy
        {
            m.insert(t.listener_arn.clone(), f.name.clone());
            m.insert(t.canary_target_group_arn.clone(), f.name.clone());
        }
    }
    m
}
