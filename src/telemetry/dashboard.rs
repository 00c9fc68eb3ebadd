//! The dashboard's data (`/dashboard/data`): each fleet's latest state, its chart (kept
//! in the store across restarts) and its running rollout.

use super::FleetInfo;
use crate::controller::{PassReport, RolloutReport};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

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
    /// Of `current`, the units on Spot.
    pub spot: u32,
    /// The instances behind `current` (equal to it without instance weights).
    pub instances: u32,
    pub reason: String,
    pub demand_metric: Option<String>,
    /// The unit of `demand_metric` (see [`crate::manifest::MetricSpec::unit`]).
    pub demand_unit: Option<String>,
    pub warnings: Vec<String>,
    pub capped: bool,
    /// Instances below the decision for more than two passes (0: none).
    pub shortfall: u32,
}

/// How many points each fleet's chart keeps, and how far apart (clock time).
pub(super) const SERIES_POINTS: usize = 720;
pub(super) const SERIES_EVERY: chrono::Duration = chrono::Duration::seconds(30);

#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The clock's time at the last pass (the simulated clock's on the simulator).
    pub at: Option<chrono::DateTime<chrono::Utc>>,
    pub passes: u64,
    pub last_pass_errors: Vec<String>,
    pub fleets: Vec<FleetNow>,
    pub series: BTreeMap<String, Vec<Sample>>,
    /// The rollouts the last pass ran, with their gate verdicts.
    pub rollouts: Vec<RolloutReport>,
}

/// What the dashboard shows, pass by pass.
#[derive(Default)]
pub(super) struct Board {
    series: HashMap<String, VecDeque<Sample>>,
    fleets: BTreeMap<String, FleetNow>,
    rollouts: BTreeMap<String, RolloutReport>,
    /// The clock's time at the last pass.
    last_pass_at: Option<chrono::DateTime<chrono::Utc>>,
    last_pass_errors: Vec<String>,
    passes: u64,
    /// Where chart points are kept across restarts.
    store: Option<Arc<crate::store::Store>>,
}

impl Board {
    /// Keep chart points in `store`, and start from the ones it has (the last hours).
    pub(super) fn load(
        &mut self,
        store: Arc<crate::store::Store>,
        now: chrono::DateTime<chrono::Utc>,
    ) {
        let since = now - SERIES_EVERY * SERIES_POINTS as i32;
        match store.samples_since(since) {
            Ok(points) => {
                for (fleet, p) in points {
                    let series = self.series.entry(fleet).or_default();
                    series.push_back(p);
                    if series.len() > SERIES_POINTS {
                        series.pop_front();
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the dashboard's chart history"),
        }
        self.store = Some(store);
    }

    /// Take in one pass. `fleets` describes the fleets of the current config that this
    /// daemon reports; the others leave the dashboard.
    pub(super) fn observe(
        &mut self,
        report: &PassReport,
        fleets: &HashMap<String, FleetInfo>,
        now: chrono::DateTime<chrono::Utc>,
    ) {
        self.passes += 1;
        self.last_pass_at = Some(now);
        self.last_pass_errors = report.errors.clone();
        self.fleets.retain(|f, _| fleets.contains_key(f));
        self.series.retain(|f, _| fleets.contains_key(f));
        for f in &report.fleets {
            let d = &f.decision;
            let info = fleets.get(&d.fleet).cloned().unwrap_or_default();
            let ready = f.serving;
            let booting = f.not_serving();
            let sample = Sample {
                at: now,
                desired: d.desired,
                ready,
                booting,
                demand: f.metrics.first().and_then(|m| m.1),
            };
            let series = self.series.entry(d.fleet.clone()).or_default();
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
            self.fleets.insert(
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
                    spot: f.spot,
                    instances: f.instances,
                    reason: d.reason(),
                    demand_metric: f.metrics.first().map(|m| m.0.clone()),
                    demand_unit: f
                        .metrics
                        .first()
                        .and_then(|m| info.units.get(&m.0))
                        .map(|u| u.to_string()),
                    warnings: d.warnings.clone(),
                    capped: d.capped(),
                    shortfall: f.shortfall,
                },
            );
        }
        self.rollouts.clear();
        for r in &report.rollouts {
            self.rollouts.insert(r.fleet.clone(), r.clone());
        }
    }

    /// Each fleet's latest state, chart and rollout.
    pub(super) fn snapshot(&self) -> Snapshot {
        Snapshot {
            at: self.last_pass_at,
            passes: self.passes,
            last_pass_errors: self.last_pass_errors.clone(),
            fleets: self.fleets.values().cloned().collect(),
            series: self
                .series
                .iter()
                .map(|(k, v)| (k.clone(), v.iter().cloned().collect()))
                .collect(),
            rollouts: self.rollouts.values().cloned().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::pass;
    use super::super::Telemetry;
    use super::*;
    use chrono::TimeZone;
    use std::time::Duration;

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
