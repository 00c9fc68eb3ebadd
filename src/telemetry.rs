//! What the daemon tells operators: Prometheus metrics (`/metrics`), readiness
//! (`/readyz`) and the dashboard's data (`/dashboard/data`).
//!
//! The daemon hands every pass's report to [`Telemetry::observe`], and the cloud's AWS
//! call attempts to [`Telemetry::observe_aws_attempts`] (counted by the AWS cloud itself,
//! retries included: `cloud::aws::meter`); the HTTP side only reads.

use crate::controller::{Action, PassReport};
use crate::deploy::Gates;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

/// One point of a fleet's chart.
pub type Sample = crate::store::SamplePoint;

/// A fleet's latest state, as the dashboard shows it.
#[derive(Debug, Clone, Serialize)]
pub struct FleetNow {
    pub fleet: String,
    pub environment: String,
    pub app: String,
    /// The build the manifest names (what runs when no deploy has happened).
    pub manifest_build: String,
    pub current: u32,
    pub desired: u32,
    pub ready: u32,
    pub booting: u32,
    pub retiring: u32,
    pub reason: String,
    pub demand_metric: Option<String>,
    /// The unit of `demand_metric` (see [`crate::manifest::MetricSpec::unit`]).
    pub demand_unit: Option<String>,
    pub warnings: Vec<String>,
    pub capped: bool,
    /// Instances below the decision for more than two passes (0: none).
    pub shortfall: u32,
}

/// A rollout's state this pass, with its gate verdict.
#[derive(Debug, Clone, Serialize)]
pub struct RolloutNow {
    pub id: i64,
    pub fleet: String,
    pub from: String,
    pub to: String,
    pub phase: String,
    pub step: usize,
    pub gate: String,
    pub gate_reason: String,
}

/// What the config says of a fleet (labels and the dashboard).
#[derive(Debug, Clone, Default)]
pub struct FleetInfo {
    pub environment: String,
    pub app: String,
    pub manifest_build: String,
    /// The unit of each metric the fleet's policies read, by metric name.
    pub units: HashMap<String, &'static str>,
}

impl FleetInfo {
    pub fn of(config: &crate::manifest::Config) -> HashMap<String, FleetInfo> {
        config
            .fleets
            .iter()
            .map(|f| {
                (
                    f.name.clone(),
                    FleetInfo {
                        environment: f.environment.clone(),
                        app: f.app().to_string(),
                        manifest_build: f.build(),
                        units: f
                            .scaling
                            .policies
                            .iter()
                            .filter_map(|p| p.metric())
                            .map(|m| (m.name.clone(), m.unit()))
                            .collect(),
                    },
                )
            })
            .collect()
    }
}

/// Buckets of `coxswain_pass_duration_seconds`: 10 ms to a minute.
const PASS_BUCKETS: [f64; 12] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Content type of the Prometheus text format 0.0.4, served unless the scraper asks for
/// OpenMetrics (<https://prometheus.io/docs/instrumenting/exposition_formats/>).
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Content type of OpenMetrics 1.0 text (<https://openmetrics.io>).
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Whether an HTTP `Accept` header asks for OpenMetrics (as Prometheus does) at least as
/// much as for the text format: by their `q` values (default 1; `q=0` refuses), with
/// `text/plain` or a wildcard standing for the text format.
pub fn accepts_openmetrics(accept: &str) -> bool {
    let (mut om, mut text) = (0.0_f64, 0.0_f64);
    for part in accept.split(',') {
        let mut params = part.split(';').map(str::trim);
        let media = params.next().unwrap_or_default().to_ascii_lowercase();
        let q = params
            .find_map(|p| p.strip_prefix("q="))
            .and_then(|q| q.parse::<f64>().ok())
            .unwrap_or(1.0);
        match media.as_str() {
            "application/openmetrics-text" => om = om.max(q),
            "text/plain" | "text/*" | "*/*" => text = text.max(q),
            _ => {}
        }
    }
    om > 0.0 && om >= text
}

/// OpenMetrics text as the Prometheus text format 0.0.4: a counter family `x` has its
/// samples named `x_total` in both, but 0.0.4 types the sample name (`# TYPE x_total
/// counter`), or the scraper takes it as untyped. `# UNIT` and `# EOF` have no place in
/// 0.0.4 and are dropped.
pub fn openmetrics_to_text_004(om: &str) -> String {
    let counters: BTreeSet<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(om.len());
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# TYPE ", "# HELP "]
            .iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (*p, rest)));
        if let Some((prefix, rest)) = meta {
            let name = rest.split(' ').next().unwrap_or_default();
            if counters.contains(name) && !name.ends_with("_total") {
                out.push_str(prefix);
                out.push_str(name);
                out.push_str("_total");
                out.push_str(&rest[name.len()..]);
                out.push('\n');
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// How many points each fleet's chart keeps, and how far apart (clock time).
const SERIES_POINTS: usize = 720;
const SERIES_EVERY: chrono::Duration = chrono::Duration::seconds(30);

#[derive(Default)]
struct Live {
    series: HashMap<String, VecDeque<Sample>>,
    fleets: BTreeMap<String, FleetNow>,
    rollouts: BTreeMap<String, RolloutNow>,
    last_pass: Option<Instant>,
    /// The clock's time at the last pass.
    last_pass_at: Option<chrono::DateTime<chrono::Utc>>,
    last_pass_errors: Vec<String>,
    passes: u64,
    /// Metrics with a demand gauge, per fleet: (metric, unit), to remove them when they go.
    demand_metrics: HashMap<String, BTreeSet<(String, String)>>,
    /// Finished rollouts already counted in `rollouts_finished`, and where the next read
    /// of the ledger starts.
    counted_rollouts: BTreeSet<i64>,
    rollouts_cursor: Option<chrono::DateTime<chrono::Utc>>,
    /// The first pass observed: rollouts that ended before are not counted.
    rollouts_started: Option<chrono::DateTime<chrono::Utc>>,
    /// How long until the next pass is due (set by the daemon; `/readyz` allows three).
    next_pass_in: Option<Duration>,
}

pub struct Telemetry {
    registry: Registry,
    desired: Family<FleetLabels, Gauge>,
    current: Family<FleetLabels, Gauge>,
    billed: Family<FleetLabels, Gauge>,
    ready: Family<FleetLabels, Gauge>,
    booting: Family<FleetLabels, Gauge>,
    retiring: Family<FleetLabels, Gauge>,
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
    /// What the interceptor had counted when last copied into `aws_calls`.
    aws_seen: Mutex<HashMap<crate::cloud::Attempt, u64>>,
    live: Mutex<Live>,
    /// Where chart points are kept across restarts.
    store: Option<std::sync::Arc<crate::store::Store>>,
    /// `/readyz` fails when no pass has ended for this long.
    stale_after: Duration,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry").finish_non_exhaustive()
    }
}

impl Telemetry {
    /// `poll` is the daemon's poll interval: `/readyz` fails after three missed passes
    /// (and never sooner than a minute).
    pub fn new(poll: Duration) -> Self {
        let mut registry = Registry::with_prefix("coxswain");
        let t = Telemetry {
            desired: Family::default(),
            current: Family::default(),
            billed: Family::default(),
            ready: Family::default(),
            booting: Family::default(),
            retiring: Family::default(),
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
            live: Mutex::new(Live::default()),
            store: None,
            stale_after: (poll * 3).max(Duration::from_secs(60)),
            registry: Registry::default(),
        };
        registry.register(
            "fleet_desired_instances",
            "Capacity the controller decided on",
            t.desired.clone(),
        );
        registry.register(
            "fleet_current_instances",
            "Instances in the fleet, every build (booting included, retiring not)",
            t.current.clone(),
        );
        registry.register(
            "fleet_ready_instances",
            "Instances serving traffic, every build: running, not retiring, registered with the target group",
            t.ready.clone(),
        );
        registry.register(
            "fleet_billed_instances",
            "Instances billed: booting, serving and draining, every build (what max_total_instances counts)",
            t.billed.clone(),
        );
        registry.register(
            "fleet_booting_instances",
            "Instances live but not serving yet (booting, warming up, before their smoke test)",
            t.booting.clone(),
        );
        registry.register(
            "fleet_retiring_instances",
            "Instances draining before termination",
            t.retiring.clone(),
        );
        registry.register(
            "fleet_capped",
            "1 when capacity.max or the global cap held the fleet below what its policies asked",
            t.capped.clone(),
        );
        registry.register(
            "fleet_capacity_shortfall_instances",
            "Instances a fleet has been below its decided capacity for more than two passes in a row (0 when it has caught up)",
            t.shortfall.clone(),
        );
        registry.register(
            "fleet_metrics_missing",
            "Metrics missing or stale in the last decision",
            t.metrics_missing.clone(),
        );
        registry.register(
            "fleet_unhealthy_instances",
            "Instances failing their health checks at the last repair check (within the grace or not)",
            t.unhealthy.clone(),
        );
        registry.register(
            "fleet_repair_halted",
            "1 while repair is halted: more than the fleet's max_unhealthy_share is unhealthy at once",
            t.repair_halted.clone(),
        );
        registry.register(
            "fleet_demand",
            "Newest value of each metric a fleet's policies read, in the metric's unit (label unit: count per metric period, percent, bytes, seconds or none)",
            t.demand.clone(),
        );
        registry.register(
            "decisions",
            "Capacity changes decided, by direction",
            t.decisions.clone(),
        );
        registry.register(
            "actions",
            "Changes made to the cloud, by kind",
            t.actions.clone(),
        );
        registry.register(
            "rollout_phase",
            "1 for the phase of each fleet's running rollout (phase none: no rollout runs)",
            t.rollout_phase.clone(),
        );
        registry.register(
            "rollout_gate_results",
            "Gate verdicts of running rollouts, one per pass",
            t.gate_results.clone(),
        );
        registry.register(
            "rollouts_finished",
            "Rollouts that ended, by outcome: succeeded, rolled_back or superseded",
            t.rollouts_finished.clone(),
        );
        registry.register("passes", "Reconcile passes made", t.passes.clone());
        registry.register_with_unit(
            "pass_duration",
            "Wall time of one reconcile pass (reads, decisions, actions)",
            Unit::Seconds,
            t.pass_duration.clone(),
        );
        registry.register(
            "last_successful_pass_timestamp_seconds",
            "When the last pass without errors ended, in seconds since the Unix epoch (on the simulated cloud, its clock)",
            t.last_success.clone(),
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
            t.pass_errors.clone(),
        );
        registry.register(
            "aws_calls",
            "Calls to AWS (each attempt, retries included), by operation and outcome",
            t.aws_calls.clone(),
        );
        Telemetry { registry, ..t }
    }

    /// Keep chart points in `store`, and start from the ones it has (the last hours).
    pub fn with_history(
        mut self,
        store: std::sync::Arc<crate::store::Store>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Self {
        let since = now - SERIES_EVERY * SERIES_POINTS as i32;
        match store.samples_since(since) {
            Ok(points) => {
                if let Ok(mut live) = self.live.lock() {
                    for (fleet, p) in points {
                        let series = live.series.entry(fleet).or_default();
                        series.push_back(p);
                        if series.len() > SERIES_POINTS {
                            series.pop_front();
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the dashboard's chart history"),
        }
        self.store = Some(store);
        self
    }

    /// Take in one pass. `fleets` describes the fleets of the current config.
    pub fn observe(
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
        let Ok(mut live) = self.live.lock() else {
            return;
        };
        live.passes += 1;
        live.last_pass = Some(Instant::now());
        live.last_pass_at = Some(now);
        live.last_pass_errors = report.errors.clone();
        // Fleets no longer ours (removed from the manifests, or held by another replica):
        // their series end here, so two replicas never both report one fleet.
        // Fleets this telemetry has not reported before: their counters start at 0 below.
        let new_fleets: Vec<String> = fleets
            .keys()
            .filter(|f| !live.fleets.contains_key(*f))
            .cloned()
            .collect();
        let gone: Vec<FleetNow> = live
            .fleets
            .values()
            .filter(|f| !fleets.contains_key(&f.fleet))
            .cloned()
            .collect();
        for f in gone {
            let labels = FleetLabels {
                fleet: f.fleet.clone(),
                environment: f.environment.clone(),
            };
            for family in [
                &self.desired,
                &self.current,
                &self.billed,
                &self.ready,
                &self.booting,
                &self.retiring,
                &self.capped,
                &self.shortfall,
                &self.metrics_missing,
                &self.unhealthy,
                &self.repair_halted,
            ] {
                family.remove(&labels);
            }
            for outcome in ["succeeded", "rolled_back", "superseded"] {
                self.rollouts_finished.remove(&OutcomeLabels {
                    fleet: f.fleet.clone(),
                    outcome: outcome.into(),
                });
            }
            for result in ["pass", "waiting", "fail"] {
                self.gate_results.remove(&GateLabels {
                    fleet: f.fleet.clone(),
                    result: result.into(),
                });
            }
            for (metric, unit) in live.demand_metrics.remove(&f.fleet).unwrap_or_default() {
                self.demand.remove(&DemandLabels {
                    fleet: f.fleet.clone(),
                    metric,
                    unit,
                });
            }
            live.fleets.remove(&f.fleet);
            live.series.remove(&f.fleet);
        }
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
            // Not serving yet (booting, warming up, waiting for its smoke test): with
            // `ready`, every live instance once.
            let booting = f.live.saturating_sub(f.serving);
            self.desired
                .get_or_create(&labels)
                .set(i64::from(d.desired));
            self.current.get_or_create(&labels).set(i64::from(f.live));
            self.billed
                .get_or_create(&labels)
                .set(i64::from(f.live + f.retiring));
            self.ready.get_or_create(&labels).set(i64::from(ready));
            self.booting.get_or_create(&labels).set(i64::from(booting));
            self.retiring
                .get_or_create(&labels)
                .set(i64::from(f.retiring));
            let capped = d.capped();
            self.capped.get_or_create(&labels).set(i64::from(capped));
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
                        live.demand_metrics
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
            let sample = Sample {
                at: now,
                desired: d.desired,
                ready,
                booting,
                demand: f.metrics.first().and_then(|m| m.1),
            };
            let series = live.series.entry(d.fleet.clone()).or_default();
            // Points stay at least SERIES_EVERY apart, and the newest pass always shows:
            // the last point is provisional, replaced while it is closer than that to the
            // one before it.
            let n = series.len();
            let too_close = n >= 2 && series[n - 1].at - series[n - 2].at < SERIES_EVERY;
            if too_close {
                series[n - 1] = sample;
            } else {
                if let Some(store) = &self.store {
                    if let Err(e) = store.add_sample(&d.fleet, &sample) {
                        tracing::warn!(fleet = %d.fleet, error = %e, "cannot save a chart point");
                    }
                }
                series.push_back(sample);
                if series.len() > SERIES_POINTS {
                    series.pop_front();
                }
            }
            live.fleets.insert(
                d.fleet.clone(),
                FleetNow {
                    fleet: d.fleet.clone(),
                    environment: info.environment,
                    app: info.app,
                    manifest_build: info.manifest_build,
                    current: f.live,
                    desired: d.desired,
                    ready,
                    booting,
                    retiring: f.retiring,
                    reason: d.reason(),
                    demand_metric: f.metrics.first().map(|m| m.0.clone()),
                    demand_unit: f
                        .metrics
                        .first()
                        .and_then(|m| info.units.get(&m.0))
                        .map(|u| u.to_string()),
                    warnings: d.warnings.clone(),
                    capped,
                    shortfall: f.shortfall,
                },
            );
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
        self.count_finished_rollouts(&mut live, now);
        // Every outcome and verdict of every fleet is exported from the start (at 0), so
        // `increase()` sees a fleet's first rollback and dashboards have a series.
        for fleet in &new_fleets {
            for outcome in ["succeeded", "rolled_back", "superseded"] {
                self.rollouts_finished
                    .get_or_create(&OutcomeLabels {
                        fleet: fleet.clone(),
                        outcome: outcome.into(),
                    })
                    .inc_by(0);
            }
            for result in ["pass", "waiting", "fail"] {
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
        live.rollouts.clear();
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
            let (gate, reason) = match &r.gates {
                Gates::Pass(w) => ("pass", w.clone()),
                Gates::Waiting(w) => ("waiting", w.clone()),
                Gates::Fail(w) => ("fail", w.clone()),
            };
            self.gate_results
                .get_or_create(&GateLabels {
                    fleet: r.fleet.clone(),
                    result: gate.into(),
                })
                .inc();
            live.rollouts.insert(
                r.fleet.clone(),
                RolloutNow {
                    id: r.id,
                    fleet: r.fleet.clone(),
                    from: r.from.clone(),
                    to: r.to.clone(),
                    phase: r.phase.clone(),
                    step: r.step,
                    gate: gate.into(),
                    gate_reason: reason,
                },
            );
        }
    }

    /// Count rollouts that ended since the daemon started (from the ledger, so a deploy
    /// superseded through the API counts as well as one the pass finished).
    fn count_finished_rollouts(&self, live: &mut Live, now: chrono::DateTime<chrono::Utc>) {
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
    pub fn observe_pass_duration(&self, d: Duration) {
        self.pass_duration.observe(d.as_secs_f64());
    }

    /// The exposition: OpenMetrics 1.0 text when `openmetrics`, else the Prometheus text
    /// format 0.0.4 (see [`METRICS_CONTENT_TYPE`] and [`OPENMETRICS_CONTENT_TYPE`]).
    pub fn encode(&self, openmetrics: bool) -> String {
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
    pub fn observe_aws_attempts(&self, totals: &[(crate::cloud::Attempt, u64)]) {
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

    /// The daemon's next pass is due in `wait` (its poll interval, or a backoff while AWS
    /// throttles): `/readyz` allows three of those before it calls the loop stuck.
    pub fn next_pass_in(&self, wait: Duration) {
        if let Ok(mut live) = self.live.lock() {
            live.next_pass_in = Some(wait);
        }
    }

    /// Ready: a pass has ended, recently. Err is the reason.
    pub fn ready(&self) -> Result<u64, String> {
        let live = self.live.lock().map_err(|_| "telemetry lock poisoned")?;
        let limit = live
            .next_pass_in
            .map_or(self.stale_after, |w| (w * 3).max(Duration::from_secs(60)));
        match live.last_pass {
            None => Err("no reconcile pass has finished yet".into()),
            Some(t) if t.elapsed() > limit => Err(format!(
                "the last pass ended {}s ago (limit {}s): the control loop is stuck",
                t.elapsed().as_secs(),
                limit.as_secs()
            )),
            Some(_) => Ok(live.passes),
        }
    }

    /// Each fleet's latest state, chart and rollout.
    pub fn snapshot(&self) -> Snapshot {
        let Ok(live) = self.live.lock() else {
            return Snapshot::default();
        };
        Snapshot {
            at: live.last_pass_at,
            passes: live.passes,
            last_pass_errors: live.last_pass_errors.clone(),
            fleets: live.fleets.values().cloned().collect(),
            series: live
                .series
                .iter()
                .map(|(k, v)| (k.clone(), v.iter().cloned().collect()))
                .collect(),
            rollouts: live.rollouts.values().cloned().collect(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    /// The clock's time at the last pass (the simulated clock's on the simulator).
    pub at: Option<chrono::DateTime<chrono::Utc>>,
    pub passes: u64,
    pub last_pass_errors: Vec<String>,
    pub fleets: Vec<FleetNow>,
    pub series: BTreeMap<String, Vec<Sample>>,
    pub rollouts: Vec<RolloutNow>,
}

fn action_kind(a: &Action) -> (&str, &'static str) {
    match a {
        Action::Launch { fleet, .. } => (fleet, "launch"),
        Action::SetDesired { fleet, .. } => (fleet, "set_desired"),
        Action::MarkRetiring { fleet, .. } => (fleet, "retire"),
        Action::Deregister { fleet, .. } => (fleet, "deregister"),
        Action::Register { fleet, .. } => (fleet, "register"),
        Action::Terminate { fleet, .. } => (fleet, "terminate"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::FleetReport;
    use crate::policy::Decision;
    use chrono::TimeZone;

    #[test]
    fn openmetrics_is_served_only_to_scrapers_that_ask_for_it() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert!(accepts_openmetrics(prometheus));
        assert!(accepts_openmetrics("Application/OpenMetrics-Text"));
        assert!(!accepts_openmetrics("text/plain;version=0.0.4"));
        assert!(!accepts_openmetrics("*/*"));
        assert!(!accepts_openmetrics(
            "application/openmetrics-text;q=0, text/plain"
        ));
        assert!(!accepts_openmetrics(
            "text/plain;q=0.9, application/openmetrics-text;q=0.1"
        ));
        assert!(accepts_openmetrics(
            "application/openmetrics-text;q=0.5, */*;q=0.1"
        ));
    }

    #[test]
    fn the_004_text_types_counters_by_their_sample_names_and_drops_openmetrics_lines() {
        let t = Telemetry::new(Duration::from_secs(10));
        t.observe_pass_duration(Duration::from_millis(30));
        t.observe(&pass(3, 10.0), &HashMap::new(), chrono::Utc::now());
        let om = t.encode(true);
        assert!(om.contains("# TYPE coxswain_passes counter"), "{om}");
        assert!(om.contains("# UNIT coxswain_pass_duration_seconds seconds"));
        assert!(om.ends_with("# EOF\n"));
        let text = t.encode(false);
        assert!(text.contains("# HELP coxswain_passes_total Reconcile passes made"));
        assert!(text.contains("# TYPE coxswain_passes_total counter"));
        assert!(text.contains("coxswain_passes_total 1"));
        assert!(!text.contains("# TYPE coxswain_passes counter"));
        assert!(text.contains("# TYPE coxswain_fleet_desired_instances gauge"));
        assert!(text.contains("# TYPE coxswain_pass_duration_seconds histogram"));
        assert!(text.contains("coxswain_pass_duration_seconds_bucket{le=\"0.05\"} 1"));
        assert!(
            !text.contains("# EOF") && !text.contains("# UNIT"),
            "{text}"
        );
        // Everything else is the same, line for line.
        let kept: Vec<&str> = om.lines().filter(|l| !l.starts_with('#')).collect();
        let text_samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(kept, text_samples);
    }

    fn pass(desired: u32, demand: f64) -> PassReport {
        PassReport {
            fleets: vec![FleetReport {
                decision: Decision {
                    fleet: "web".into(),
                    current: desired,
                    desired,
                    recommended: desired,
                    votes: Vec::new(),
                    limits: Vec::new(),
                    warnings: Vec::new(),
                },
                metrics: vec![("RequestCount".into(), Some(demand))],
                booting: 1,
                retiring: 0,
                live: desired,
                serving: desired - 1,
                shortfall: 0,
            }],
            ..Default::default()
        }
    }

    #[test]
    fn chart_points_are_spaced_keep_the_newest_pass_and_survive_a_restart() {
        let store = std::sync::Arc::new(crate::store::Store::in_memory().expect("store"));
        let t0 = chrono::Utc
            .with_ymd_and_hms(2026, 1, 5, 8, 0, 0)
            .single()
            .expect("time");
        let t = Telemetry::new(Duration::from_secs(10)).with_history(store.clone(), t0);
        let fleets: HashMap<String, FleetInfo> = [("web".to_string(), FleetInfo::default())].into();
        // A pass every 10 s for 5 minutes: points 30 s apart, the last one the newest.
        for i in 0..=30 {
            t.observe(
                &pass(3 + i / 10, 100.0 * f64::from(i)),
                &fleets,
                t0 + chrono::Duration::seconds(10 * i64::from(i)),
            );
        }
        let series = &t.snapshot().series["web"];
        let last = series.last().expect("points");
        assert_eq!(last.demand, Some(3000.0), "the newest pass shows");
        assert_eq!(last.ready, 5, "ready excludes booting");
        for w in series.windows(2).take(series.len().saturating_sub(2)) {
            assert!(
                w[1].at - w[0].at >= SERIES_EVERY,
                "{:?}",
                (w[0].at, w[1].at)
            );
        }
        assert!(series.len() >= 10 && series.len() <= 12, "{}", series.len());
        // A restart: the saved points come back.
        let again = Telemetry::new(Duration::from_secs(10))
            .with_history(store, t0 + chrono::Duration::minutes(6));
        let restored = &again.snapshot().series["web"];
        assert!(restored.len() >= series.len() - 1, "{}", restored.len());
        assert_eq!(restored[0], series[0]);
        // Nothing is ready before a pass; the text exposition names each fleet.
        assert!(again.ready().is_err());
        assert!(t.ready().is_ok());
        assert!(t
            .encode(false)
            .contains("coxswain_fleet_desired_instances{fleet=\"web\",environment=\"\"} 6"));
        // The fleet goes (to another replica, or out of the manifests): so do its series.
        t.observe(&PassReport::default(), &HashMap::new(), t0);
        let text = t.encode(false);
        assert!(!text.contains("fleet=\"web\""), "{text}");
        assert!(t.snapshot().fleets.is_empty());
    }
}
