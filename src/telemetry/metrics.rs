//! Prometheus metrics (`/metrics`): the registry, what each pass sets in it, and the AWS
//! call attempts the cloud counted. Every fleet's series go when the fleet does (removed
//! from the manifests, or held by another replica).

use super::exposition::openmetrics_to_text_004;
use super::FleetInfo;
use crate::controller::{Action, PassReport};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FleetLabels {
    fleet: String,
    environment: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DemandLabels {
    fleet: String,
    metric: String,
    /// What the value counts: `count` (per metric period), `percent`, `bytes`, `seconds`
    /// or `none` (see [`crate::manifest::MetricSpec::unit`]).
    unit: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    fleet: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    fleet: String,
    direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    fleet: String,
    action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AwsLabels {
    service: String,
    operation: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RolloutLabels {
    fleet: String,
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GateLabels {
    fleet: String,
    result: String,
}

/// Buckets of `coxswain_pass_duration_seconds`: 10 ms to a minute.
const PASS_BUCKETS: [f64; 12] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// What the metrics remember between passes.
#[derive(Default)]
struct MetricsState {
    /// Fleets reported, with their environment label: their series are removed when they go.
    reported: BTreeMap<String, String>,
    /// Metrics with a demand gauge, per fleet: (metric, unit), to remove them when they go.
    demand_metrics: HashMap<String, BTreeSet<(String, String)>>,
    /// Finished rollouts already counted in `rollouts_finished`, and where the next read
    /// of the ledger starts.
    counted_rollouts: BTreeSet<i64>,
    rollouts_cursor: Option<chrono::DateTime<chrono::Utc>>,
    /// The first pass observed: rollouts that ended before are not counted.
    rollouts_started: Option<chrono::DateTime<chrono::Utc>>,
}

pub(super) struct Metrics {
    registry: Registry,
    desired: Family<FleetLabels, Gauge>,
    current: Family<FleetLabels, Gauge>,
    billed: Family<FleetLabels, Gauge>,
    ready: Family<FleetLabels, Gauge>,
    booting: Family<FleetLabels, Gauge>,
    retiring: Family<FleetLabels, Gauge>,
    spot: Family<FleetLabels, Gauge>,
    capped: Family<FleetLabels, Gauge>,
    shortfall: Family<FleetLabels, Gauge>,
    metrics_missing: Family<FleetLabels, Gauge>,
    unhealthy: Family<FleetLabels, Gauge>,
    repair_halted: Family<FleetLabels, Gauge>,
    demand: Family<DemandLabels, Gauge<f64, AtomicU64>>,
    decisions: Family<DecisionLabels, Counter>,
    actions: Family<ActionLabels, Counter>,
    rollout_phase: Family<RolloutLabels, Gauge>,
    gate_results: Family<GateLabels, Counter>,
    rollouts_finished: Family<OutcomeLabels, Counter>,
    passes: Counter,
    pass_errors: Counter,
    pass_duration: Histogram,
    last_success: Gauge<f64, AtomicU64>,
    aws_calls: Family<AwsLabels, Counter>,
    /// The cloud's attempt totals when last taken in (counters only grow by what is new).
    aws_seen: Mutex<HashMap<crate::cloud::Attempt, u64>>,
    state: Mutex<MetricsState>,
    /// The ledger, for rollouts finished (by a pass or through the API).
    store: Option<Arc<crate::store::Store>>,
}

impl Metrics {
    pub(super) fn new() -> Self {
        let mut registry = Registry::with_prefix("coxswain");
        let m = Metrics {
            desired: Family::default(),
            current: Family::default(),
            billed: Family::default(),
            ready: Family::default(),
            booting: Family::default(),
            retiring: Family::default(),
            spot: Family::default(),
            capped: Family::default(),
            shortfall: Family::default(),
            metrics_missing: Family::default(),
            unhealthy: Family::default(),
            repair_halted: Family::default(),
            demand: Family::default(),
            decisions: Family::default(),
            actions: Family::default(),
            rollout_phase: Family::default(),
            gate_results: Family::default(),
            rollouts_finished: Family::default(),
            passes: Counter::default(),
            pass_errors: Counter::default(),
            pass_duration: Histogram::new(PASS_BUCKETS),
            last_success: Gauge::default(),
            aws_calls: Family::default(),
            aws_seen: Mutex::new(HashMap::new()),
            state: Mutex::new(MetricsState::default()),
            store: None,
            registry: Registry::default(),
        };
        registry.register(
            "fleet_desired_instances",
            "Capacity the controller decided on (capacity units with instance weights)",
            m.desired.clone(),
        );
        registry.register(
            "fleet_current_instances",
            "Instances in the fleet, every build (booting included, retiring not; capacity units with instance weights)",
            m.current.clone(),
        );
        registry.register(
            "fleet_ready_instances",
            "Instances serving traffic, every build: running, not retiring, registered with the target group (capacity units with instance weights)",
            m.ready.clone(),
        );
        registry.register(
            "fleet_billed_instances",
            "Instances billed: booting, serving and draining, every build (what max_total_instances counts)",
            m.billed.clone(),
        );
        registry.register(
            "fleet_booting_instances",
            "Instances live but not serving yet (booting, warming up, before their smoke test; units with instance weights)",
            m.booting.clone(),
        );
        registry.register(
            "fleet_retiring_instances",
            "Instances draining before termination (units with instance weights)",
            m.retiring.clone(),
        );
        registry.register(
            "fleet_spot_instances",
            "Of the live instances (fleet_current_instances), those bought on Spot (units with instance weights)",
            m.spot.clone(),
        );
        registry.register(
            "fleet_capped",
            "1 when capacity.max or the global cap held the fleet below what its policies asked",
            m.capped.clone(),
        );
        registry.register(
            "fleet_capacity_shortfall_instances",
            "Instances a fleet has been below its decided capacity for more than two passes in a row (0 when it has caught up)",
            m.shortfall.clone(),
        );
        registry.register(
            "fleet_metrics_missing",
            "Metrics missing or stale in the last decision",
            m.metrics_missing.clone(),
        );
        registry.register(
            "fleet_unhealthy_instances",
            "Instances failing their health checks at the last repair check (within the grace or not)",
            m.unhealthy.clone(),
        );
        registry.register(
            "fleet_repair_halted",
            "1 while repair is halted: more than the fleet's max_unhealthy_share is unhealthy at once",
            m.repair_halted.clone(),
        );
        registry.register(
            "fleet_demand",
            "Newest value of each metric a fleet's policies read, in the metric's unit (label unit: count per metric period, percent, bytes, seconds or none)",
            m.demand.clone(),
        );
        registry.register(
            "decisions",
            "Capacity changes decided, by direction",
            m.decisions.clone(),
        );
        registry.register(
            "actions",
            "Changes made to the cloud, by kind",
            m.actions.clone(),
        );
        registry.register(
            "rollout_phase",
            "1 for the phase of each fleet's running rollout (phase none: no rollout runs)",
            m.rollout_phase.clone(),
        );
        registry.register(
            "rollout_gate_results",
            "Gate verdicts of running rollouts, one per pass",
            m.gate_results.clone(),
        );
        registry.register(
            "rollouts_finished",
            "Rollouts that ended, by outcome: succeeded, rolled_back or superseded",
            m.rollouts_finished.clone(),
        );
        registry.register("passes", "Reconcile passes made", m.passes.clone());
        registry.register_with_unit(
            "pass_duration",
            "Wall time of one reconcile pass (reads, decisions, actions)",
            Unit::Seconds,
            m.pass_duration.clone(),
        );
        registry.register(
            "last_successful_pass_timestamp_seconds",
            "When the last pass without errors ended, in seconds since the Unix epoch (on the simulated cloud, its clock)",
            m.last_success.clone(),
        );
        let build_info: Family<BuildLabels, Gauge> = Family::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_string(),
            })
            .set(1);
        registry.register(
            "build_info",
            "The running coxswain's version (always 1)",
            build_info,
        );
        registry.register(
            "pass_errors",
            "Errors met during passes",
            m.pass_errors.clone(),
        );
        registry.register(
            "aws_calls",
            "Calls to AWS (each attempt, retries included), by operation and outcome",
            m.aws_calls.clone(),
        );
        Metrics { registry, ..m }
    }

    pub(super) fn set_store(&mut self, store: Arc<crate::store::Store>) {
        self.store = Some(store);
    }

    /// Set the gauges and counters from one pass. `fleets` describes the fleets of the
    /// current config that this daemon reports.
    pub(super) fn observe(
        &self,
        report: &PassReport,
        fleets: &HashMap<String, FleetInfo>,
        now: chrono::DateTime<chrono::Utc>,
    ) {
        self.passes.inc();
        self.pass_errors.inc_by(report.errors.len() as u64);
        if report.errors.is_empty() {
            self.last_success
                .set(now.timestamp_millis() as f64 / 1000.0);
        }
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        // Fleets no longer ours: their series end here, so two replicas never both report
        // one fleet. Fleets not reported before: their counters start at 0 below.
        let new_fleets: Vec<String> = fleets
            .keys()
            .filter(|f| !state.reported.contains_key(*f))
            .cloned()
            .collect();
        let gone: Vec<(String, String)> = state
            .reported
            .iter()
            .filter(|(f, _)| !fleets.contains_key(*f))
            .map(|(f, e)| (f.clone(), e.clone()))
            .collect();
        for (fleet, environment) in gone {
            self.forget(&mut state, &fleet, &environment);
        }
        state.reported = fleets
            .iter()
            .map(|(f, i)| (f.clone(), i.environment.clone()))
            .collect();
        for f in &report.fleets {
            let d = &f.decision;
            let info = fleets.get(&d.fleet).cloned().unwrap_or_default();
            let labels = FleetLabels {
                fleet: d.fleet.clone(),
                environment: info.environment.clone(),
            };
            // What runs, every build (during a rollout the decision's `current` is the
            // capacity the rollout works to, not what is running).
            let ready = f.serving;
            let booting = f.not_serving();
            self.desired
                .get_or_create(&labels)
                .set(i64::from(d.desired));
            self.current.get_or_create(&labels).set(i64::from(f.live));
            self.billed.get_or_create(&labels).set(i64::from(f.billed));
            self.ready.get_or_create(&labels).set(i64::from(ready));
            self.booting.get_or_create(&labels).set(i64::from(booting));
            self.retiring
                .get_or_create(&labels)
                .set(i64::from(f.retiring));
            self.spot.get_or_create(&labels).set(i64::from(f.spot));
            self.capped
                .get_or_create(&labels)
                .set(i64::from(d.capped()));
            self.shortfall
                .get_or_create(&labels)
                .set(i64::from(f.shortfall));
            self.metrics_missing
                .get_or_create(&labels)
                .set(d.warnings.len() as i64);
            for (metric, value) in &f.metrics {
                let labels = DemandLabels {
                    fleet: d.fleet.clone(),
                    metric: metric.clone(),
                    unit: info.units.get(metric).copied().unwrap_or("none").into(),
                };
                match value {
                    Some(v) => {
                        self.demand.get_or_create(&labels).set(*v);
                        state
                            .demand_metrics
                            .entry(d.fleet.clone())
                            .or_default()
                            .insert((metric.clone(), labels.unit.clone()));
                    }
                    // Missing: no stale value (fleet_metrics_missing says so).
                    None => {
                        self.demand.remove(&labels);
                    }
                }
            }
            if d.desired != d.current {
                let direction = if d.desired > d.current { "out" } else { "in" };
                self.decisions
                    .get_or_create(&DecisionLabels {
                        fleet: d.fleet.clone(),
                        direction: direction.into(),
                    })
                    .inc();
            }
        }
        // Repair: set when a fleet's health was checked, kept between checks.
        for r in &report.repairs {
            let labels = FleetLabels {
                fleet: r.fleet.clone(),
                environment: fleets
                    .get(&r.fleet)
                    .map(|i| i.environment.clone())
                    .unwrap_or_default(),
            };
            self.unhealthy
                .get_or_create(&labels)
                .set(i64::from(r.unhealthy));
            self.repair_halted
                .get_or_create(&labels)
                .set(i64::from(r.halted));
        }
        for a in &report.actions {
            let (fleet, kind) = action_kind(a);
            self.actions
                .get_or_create(&ActionLabels {
                    fleet: fleet.to_string(),
                    action: kind.into(),
                })
                .inc();
        }
        self.count_finished_rollouts(&mut state, now);
        // Every outcome and verdict of every fleet is exported from the start (at 0), so
        // `increase()` sees a fleet's first rollback and dashboards have a series.
        for fleet in &new_fleets {
            for outcome in OUTCOMES {
                self.rollouts_finished
                    .get_or_create(&OutcomeLabels {
                        fleet: fleet.clone(),
                        outcome: outcome.into(),
                    })
                    .inc_by(0);
            }
            for result in VERDICTS {
                self.gate_results
                    .get_or_create(&GateLabels {
                        fleet: fleet.clone(),
                        result: result.into(),
                    })
                    .inc_by(0);
            }
        }
        // Rollouts: the phase gauge is level-triggered (cleared, then set); `none` for a
        // fleet with no rollout running.
        self.rollout_phase.clear();
        for fleet in fleets.keys() {
            if !report.rollouts.iter().any(|r| &r.fleet == fleet) {
                self.rollout_phase
                    .get_or_create(&RolloutLabels {
                        fleet: fleet.clone(),
                        phase: "none".into(),
                    })
                    .set(1);
            }
        }
        for r in &report.rollouts {
            self.rollout_phase
                .get_or_create(&RolloutLabels {
                    fleet: r.fleet.clone(),
                    phase: r.phase.clone(),
                })
                .set(1);
            self.gate_results
                .get_or_create(&GateLabels {
                    fleet: r.fleet.clone(),
                    result: r.gates.name().into(),
                })
                .inc();
        }
    }

    /// Remove every series of a fleet that is no longer ours.
    fn forget(&self, state: &mut MetricsState, fleet: &str, environment: &str) {
        let labels = FleetLabels {
            fleet: fleet.to_string(),
            environment: environment.to_string(),
        };
        for family in [
            &self.desired,
            &self.current,
            &self.billed,
            &self.ready,
            &self.booting,
            &self.retiring,
            &self.spot,
            &self.capped,
            &self.shortfall,
            &self.metrics_missing,
            &self.unhealthy,
            &self.repair_halted,
        ] {
            family.remove(&labels);
        }
        for outcome in OUTCOMES {
            self.rollouts_finished.remove(&OutcomeLabels {
                fleet: fleet.to_string(),
                outcome: outcome.into(),
            });
        }
        for result in VERDICTS {
            self.gate_results.remove(&GateLabels {
                fleet: fleet.to_string(),
                result: result.into(),
            });
        }
        for (metric, unit) in state.demand_metrics.remove(fleet).unwrap_or_default() {
            self.demand.remove(&DemandLabels {
                fleet: fleet.to_string(),
                metric,
                unit,
            });
        }
    }

    /// Count rollouts that ended since the daemon started (from the ledger, so a deploy
    /// superseded through the API counts as well as one the pass finished).
    fn count_finished_rollouts(&self, live: &mut MetricsState, now: chrono::DateTime<chrono::Utc>) {
        let Some(store) = &self.store else { return };
        let started = *live.rollouts_started.get_or_insert(now);
        let cursor = live.rollouts_cursor.unwrap_or(started);
        let finished = match store.deployments_since(cursor) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read finished rollouts for the metrics");
                return;
            }
        };
        for d in finished {
            let Some(at) = d.finished_at else { continue };
            if at < started
                || d.outcome == crate::store::Outcome::InProgress
                || live.counted_rollouts.contains(&d.id)
            {
                continue;
            }
            // The ledger's record that a rollback left a build is not a rollout.
            let ledger_only = store
                .rollout_state(d.id)
                .ok()
                .flatten()
                .is_some_and(|r| r.ledger_only);
            if ledger_only {
                live.counted_rollouts.insert(d.id);
                continue;
            }
            // Read again for an hour (a slow write), counted once.
            live.rollouts_cursor = Some(cursor.max(at - chrono::Duration::hours(1)));
            live.counted_rollouts.insert(d.id);
            self.rollouts_finished
                .get_or_create(&OutcomeLabels {
                    fleet: d.fleet.clone(),
                    outcome: d.outcome.as_str().into(),
                })
                .inc();
        }
    }

    /// One reconcile pass took `d` (wall time).
    pub(super) fn observe_pass_duration(&self, d: Duration) {
        self.pass_duration.observe(d.as_secs_f64());
    }

    /// The exposition: OpenMetrics 1.0 text when `openmetrics`, else the Prometheus text
    /// format 0.0.4 (see [`METRICS_CONTENT_TYPE`] and [`OPENMETRICS_CONTENT_TYPE`]).
    pub(super) fn encode(&self, openmetrics: bool) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            return "# encoding failed\n".into();
        }
        if openmetrics {
            out
        } else {
            openmetrics_to_text_004(&out)
        }
    }

    /// Take in the cloud's AWS call attempts so far ([`crate::cloud::Cloud::attempts`],
    /// totals since it was made): `coxswain_aws_calls_total` grows by what is new.
    pub(super) fn observe_aws_attempts(&self, totals: &[(crate::cloud::Attempt, u64)]) {
        let Ok(mut seen) = self.aws_seen.lock() else {
            return;
        };
        for (key, n) in totals {
            let before = seen.insert(key.clone(), *n).unwrap_or(0);
            if *n > before {
                self.aws_calls
                    .get_or_create(&AwsLabels {
                        service: key.service.clone(),
                        operation: key.operation.clone(),
                        outcome: key.outcome.clone(),
                    })
                    .inc_by(n - before);
            }
        }
    }
}

/// Outcomes of `rollouts_finished`.
const OUTCOMES: [&str; 3] = ["succeeded", "rolled_back", "superseded"];
/// Verdicts of `rollout_gate_results`.
const VERDICTS: [&str; 3] = ["pass", "waiting", "fail"];

fn action_kind(a: &Action) -> (&str, &'static str) {
    match a {
        Action::Launch { fleet, .. } => (fleet, "launch"),
        Action::SetDesired { fleet, .. } => (fleet, "set_desired"),
        Action::MarkRetiring { fleet, .. } => (fleet, "retire"),
        Action::Deregister { fleet, .. } => (fleet, "deregister"),
        Action::Register { fleet, .. } => (fleet, "register"),
        Action::Terminate { fleet, .. } => (fleet, "terminate"),
        Action::Notice { fleet, .. } => (fleet, "notice"),
    }
}
