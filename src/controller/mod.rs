//! The level-triggered reconcile loop. Each pass observes reality (owned instances by tag,
//! groups, one batched metric read), asks the pure policy code what each fleet should
//! have, and acts on the difference. Nothing is remembered that cannot be observed again,
//! except the stabilization memory and the registration cache: a restarted controller
//! converges from what it sees, and retirements in flight are carried by a tag.
//!
//! This module must not decide capacity (that is [`crate::policy`]) nor speak any SDK
//! (that is [`crate::cloud`]).

mod act;
mod fleet;
mod gc;
mod health_gate;
pub mod journal;
mod launch;
mod notices;
mod observe;
pub mod plan;
mod repair;
mod report;
pub mod requests;
mod rollout;
mod spot;
mod state;
pub mod unavailable;

use fleet::FleetContext;
pub use observe::{aligned_window, combine_fleet_series, fleet_metric_queries};
pub use repair::RepairReport;
pub use report::{Action, FleetReport, PassReport, RolloutReport, SHORTFALL_PASSES};
use state::FleetState;

use crate::clock::Clock;
use crate::cloud::{Cloud, CloudError, Instance, MetricQuery};
use crate::deploy::Build;
use crate::manifest::{Config, FleetSpec};
use crate::policy;
use crate::store::{Store, StoreError};
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use tracing::{error, info, warn};

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
    journal: Arc<journal::Journaled>,
    /// Replicas: the fleets this daemon holds the lease of (None: every fleet).
    owned: Option<HashSet<String>>,
    clock: Arc<dyn Clock>,
    /// Shared so a pass borrows it without copying every fleet's spec.
    config: Arc<Config>,
    dry_run: bool,
    fleets: HashMap<String, FleetState>,
    orphans: HashMap<String, DateTime<Utc>>,
    /// Only fleets of this region are managed (the AWS side is one region per daemon).
    region: Option<String>,
    /// Ledger, rollouts, events and the action journal: a file, or in memory.
    store: Arc<Store>,
    /// Each fleet's current build (cache of the ledger).
    current: HashMap<String, Build>,
    /// The gate interval of the rollouts the last pass ran: a pass that cannot read
    /// them (the listing failed) still asks to be requeued at it.
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
    /// Pools EC2 answered "no capacity" for, kept out of launches for a while.
    unavailable: unavailable::Unavailable,
}

impl Controller {
    /// A controller on a throwaway in-memory state database; [`Controller::with_store`]
    /// puts a file in its place. Errors only if SQLite cannot open even that.
    pub fn new(
        cloud: Arc<dyn Cloud>,
        clock: Arc<dyn Clock>,
        config: Config,
        dry_run: bool,
    ) -> Result<Self, StoreError> {
        let store = Arc::new(Store::in_memory()?);
        let journal = Arc::new(journal::Journaled::new(
            cloud.clone(),
            store.clone(),
            clock.clone(),
        ));
        journal.set_fleets(fleet_names(&config), fleet_resources(&config));
        let journaled: Arc<dyn Cloud> = journal.clone();
        Ok(Self {
            raw_cloud: cloud,
            cloud: journaled,
            journal,
            owned: None,
            clock,
            config: Arc::new(config),
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
            unavailable: unavailable::Unavailable::default(),
        })
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
        self.journal = j;
        self.store = store;
        self
    }

    /// Ask `fence` before every change to the cloud (replicas: the lease's fenced write).
    pub fn set_fence(&mut self, fence: Arc<dyn journal::Fence>) {
        self.journal.set_fence(Some(fence));
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

    /// The state database: ledger, rollouts, events, the action journal.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Manage only the fleets of `region`, now and after every reload.
    pub fn with_region(mut self, region: &str) -> Self {
        self.region = Some(region.to_string());
        Arc::make_mut(&mut self.config)
            .fleets
            .retain(|f| f.region == region);
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
        self.journal
            .set_fleets(fleet_names(&config), fleet_resources(&config));
        self.config = Arc::new(config);
        Ok(())
    }

    pub fn cloud(&self) -> &Arc<dyn Cloud> {
        &self.cloud
    }

    /// One reconcile pass over every fleet.
    pub async fn reconcile_once(&mut self) -> PassReport {
        let now = self.clock.now();
        let mut report = PassReport {
            requeue_after: self.rollout_interval,
            ..PassReport::default()
        };
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
        // One that ended before it was ever listed (a Spot instance taken back at once, a
        // launch that failed at boot) must not be counted for minutes: ask about those by
        // id, and forget the ones EC2 says are gone. Unknown ones stay (not visible yet).
        let unlisted: Vec<String> = self.inflight.keys().cloned().collect();
        if !unlisted.is_empty() {
            match self.cloud.instances_by_id(&unlisted).await {
                Ok(found) => {
                    for i in found.iter().filter(|i| !i.state.is_live()) {
                        info!(fleet = %i.fleet, id = %i.id, state = ?i.state, "an instance launched earlier ended before it was listed; not counted any more");
                        self.inflight.remove(&i.id);
                    }
                }
                Err(e) => {
                    warn!(error = %e, "cannot ask about launched instances not listed yet; counting them as launched");
                }
            }
        }
        instances.extend(self.inflight.values().map(|(_, i)| i.clone()));
        let config = Arc::clone(&self.config);
        // Fleets by name: looked up once per instance, so not a scan of the list.
        let specs: HashMap<&str, &FleetSpec> =
            config.fleets.iter().map(|f| (f.name.as_str(), f)).collect();
        // Capacity units: each instance counts its type's weight in its fleet's manifest
        // (1 for a fleet not in the manifests).
        for i in instances.iter_mut() {
            i.weight = specs
                .get(i.fleet.as_str())
                .map_or(1, |f| f.launch.weight_of(&i.instance_type));
        }
        self.read_notices(&mut instances, now, &mut report).await;
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
        report.requeue_after = self.rollout_interval;

        let fleets: Vec<&FleetSpec> = config
            .fleets
            .iter()
            .filter(|f| self.owns(&f.name))
            .collect();
        for spec in &fleets {
            if !self.fleets.contains_key(&spec.name) {
                let restored = FleetState::restored(&spec.name, &self.store);
                self.fleets.insert(spec.name.clone(), restored);
            }
        }
        // Each fleet decides through its own context; the global cap then trims the
        // decisions together, and each fleet acts on what is left.
        let mut decided: Vec<(FleetContext, FleetReport)> = Vec::with_capacity(fleets.len());
        for &spec in &fleets {
            let group = match &spec.auto_scaling_group {
                Some(g) => match groups.get(g) {
                    Some(gs) => Some(gs),
                    None => {
                        warn!(fleet = %spec.name, group = %g, "Auto Scaling group not found; not acting on this fleet");
                        report
                            .errors
                            .push(format!("{}: group {g} not found", spec.name));
                        continue;
                    }
                },
                None => None,
            };
            let ctx = FleetContext {
                spec,
                instances: by_fleet
                    .get(spec.name.as_str())
                    .cloned()
                    .unwrap_or_default(),
                group,
                rollout: rollouts.get(&spec.name),
                now,
            };
            let row = self.decide_fleet(&ctx, &metrics);
            decided.push((ctx, row));
        }
        let mut decisions: Vec<_> = decided.iter().map(|(_, r)| r.decision.clone()).collect();
        // The cap counts instances; decisions are in units (instances without weights).
        let shapes: Vec<policy::CapShape> = decided
            .iter()
            .map(|(ctx, r)| match (ctx.group, ctx.spec.launch.weighted()) {
                (None, true) => policy::CapShape {
                    instances: r.instances,
                    min_weight: ctx.spec.launch.min_weight(),
                },
                _ => policy::CapShape {
                    instances: r.decision.current,
                    min_weight: 1,
                },
            })
            .collect();
        let counted: u32 = shapes.iter().map(|s| s.instances).sum();
        policy::apply_global_cap_weighted(
            &mut decisions,
            &shapes,
            billed.saturating_sub(counted),
            config.controller.max_total_instances,
        );
        for ((ctx, mut row), decision) in decided.into_iter().zip(decisions) {
            row.decision = decision;
            self.act_fleet(&ctx, &row.decision, &mut report).await;
            report.fleets.push(row);
        }
        if !self.dry_run {
            if self.owns(crate::fence::GC_LEASE) {
                self.collect_garbage(&instances, &specs, now, &mut report)
                    .await;
            }
            self.save_rollout_memory();
        }
        report
    }

    /// Save each fleet's rollout memory when it changed, so a restart continues exactly.
    fn save_rollout_memory(&mut self) {
        let store = self.store.clone();
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
