//! What the daemon tells operators: Prometheus metrics (`/metrics`, [`metrics`]),
//! readiness (`/readyz`, [`readiness`]) and the dashboard's data (`/dashboard/data`,
//! [`dashboard`]).
//!
//! The daemon hands every pass's report to [`Telemetry::observe`], and the cloud's AWS
//! call attempts to [`Telemetry::observe_aws_attempts`] (counted by the AWS cloud itself,
//! retries included: `cloud::aws::meter`); the HTTP side only reads.

mod dashboard;
mod exposition;
mod metrics;
mod readiness;

pub use dashboard::{FleetNow, Sample, Snapshot};
pub use exposition::{
    accepts_openmetrics, openmetrics_to_text_004, METRICS_CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE,
};

use crate::controller::PassReport;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

/// The daemon's telemetry: one per daemon, shared with its HTTP server.
pub struct Telemetry {
    metrics: metrics::Metrics,
    board: Mutex<dashboard::Board>,
    readiness: Mutex<readiness::Readiness>,
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
        Telemetry {
            metrics: metrics::Metrics::new(),
            board: Mutex::new(dashboard::Board::default()),
            readiness: Mutex::new(readiness::Readiness::new(poll)),
        }
    }

    /// Keep chart points in `store`, and start from the ones it has (the last hours);
    /// count finished rollouts from its ledger.
    pub fn with_history(
        mut self,
        store: Arc<crate::store::Store>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Self {
        if let Ok(board) = self.board.get_mut() {
            board.load(store.clone(), now);
        }
        self.metrics.set_store(store);
        self
    }

    /// Take in one pass. `fleets` describes the fleets of the current config that this
    /// daemon reports (a replica: the ones it holds).
    pub fn observe(
        &self,
        report: &PassReport,
        fleets: &HashMap<String, FleetInfo>,
        now: chrono::DateTime<chrono::Utc>,
    ) {
        self.metrics.observe(report, fleets, now);
        if let Ok(mut board) = self.board.lock() {
            board.observe(report, fleets, now);
        }
        if let Ok(mut r) = self.readiness.lock() {
            r.pass_ended();
        }
    }

    /// One reconcile pass took `d` (wall time).
    pub fn observe_pass_duration(&self, d: Duration) {
        self.metrics.observe_pass_duration(d);
    }

    /// Take in the cloud's AWS call attempts so far ([`crate::cloud::Cloud::attempts`],
    /// totals since it was made): `coxswain_aws_calls_total` grows by what is new.
    pub fn observe_aws_attempts(&self, totals: &[(crate::cloud::Attempt, u64)]) {
        self.metrics.observe_aws_attempts(totals);
    }

    /// The exposition: OpenMetrics 1.0 text when `openmetrics`, else the Prometheus text
    /// format 0.0.4 (see [`METRICS_CONTENT_TYPE`] and [`OPENMETRICS_CONTENT_TYPE`]).
    pub fn encode(&self, openmetrics: bool) -> String {
        self.metrics.encode(openmetrics)
    }

    /// The daemon's next pass is due in `wait` (its poll interval, or a backoff while AWS
    /// throttles): `/readyz` allows three of those before it calls the loop stuck.
    pub fn next_pass_in(&self, wait: Duration) {
        if let Ok(mut r) = self.readiness.lock() {
            r.next_pass_in(wait);
        }
    }

    /// Ready: a pass has ended, recently. `Ok` holds the passes made, `Err` the reason.
    pub fn ready(&self) -> Result<u64, String> {
        self.readiness
            .lock()
            .map_err(|_| "telemetry lock poisoned".to_string())?
            .ready()
    }

    /// Each fleet's latest state, chart and rollout.
    pub fn snapshot(&self) -> Snapshot {
        self.board.lock().map(|b| b.snapshot()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::FleetReport;
    use crate::policy::Decision;

    /// A pass of one fleet, `web`, at `desired` with one instance not serving yet.
    pub(super) fn pass(desired: u32, demand: f64) -> PassReport {
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
                spot: 0,
                instances: desired,
                billed: desired,
            }],
            ..Default::default()
        }
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
}
