//! What keeps fleet repair cheap: the target groups' `UnHealthyHostCount`, read for every
//! fleet in one batched GetMetricData per pass, decides whether a fleet's target health
//! must be read at all. A healthy fleet whose instances were all seen healthy before costs
//! no DescribeTargetHealth; one DescribeTargetHealth per fleet and check (45 s) would be
//! about 1,000 calls a pass for 1,000 fleets, beyond ELB's API rate.
//!
//! ELB publishes `UnHealthyHostCount` per target group *and* load balancer (both
//! dimensions are required; see
//! <https://docs.aws.amazon.com/elasticloadbalancing/latest/application/load-balancer-cloudwatch-metrics.html>),
//! so the load balancers of each target group are read with DescribeTargetGroups when a
//! fleet first needs them and again every hour.
//!
//! The gate is conservative: a target group is *clear* only when every load balancer it is
//! attached to has a fresh datapoint and reads zero over the last minutes. No datapoint
//! (moto publishes none, a target group not attached to any load balancer has none), a
//! stale one, a failed read, or any unhealthy host means "read the target health". What
//! the gate costs is detection time: a target that turns unhealthy is seen when its
//! minute is published, a minute or two later, well inside the default 5-minute grace.

use super::{note_error, Controller, PassReport};
use crate::cloud::model::{load_balancer_dimension, target_group_dimension};
use crate::cloud::{MetricQuery, MetricSeries};
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashMap, HashSet};
use tracing::warn;

/// How often the load balancers of each target group are read again.
pub(super) const REFRESH_EVERY: chrono::Duration = chrono::Duration::hours(1);
/// A target group missing from the last read is asked again after this long (not every pass).
pub(super) const RETRY_MISSING_AFTER: chrono::Duration = chrono::Duration::minutes(5);
/// The newest datapoint must start at most this long ago (publication lag included).
pub(super) const FRESH: chrono::Duration = chrono::Duration::minutes(4);
/// The metric is read at most this often (passes come every few seconds in a rollout).
pub(super) const READ_EVERY: chrono::Duration = chrono::Duration::seconds(30);
/// Every datapoint of this last stretch must read zero.
pub(super) const LOOKBACK: chrono::Duration = chrono::Duration::minutes(3);

/// The load balancers of each target group, and which target groups read clear this pass.
#[derive(Debug, Default)]
pub(super) struct HealthGate {
    /// Target group ARN → its load balancers' ARNs (empty: attached to none).
    pub lbs: HashMap<String, Vec<String>>,
    pub read_at: Option<DateTime<Utc>>,
    pub missing_asked_at: Option<DateTime<Utc>>,
    pub metrics_read_at: Option<DateTime<Utc>>,
    /// Target groups whose every load balancer reads zero unhealthy hosts, fresh.
    pub clear: HashSet<String>,
}

impl HealthGate {
    /// Whether the load balancers must be read now for these target groups.
    pub fn needs_read(&self, tgs: &[String], now: DateTime<Utc>) -> bool {
        if tgs.is_empty() {
            return false;
        }
        match self.read_at {
            None => true,
            Some(t) if now - t >= REFRESH_EVERY => true,
            Some(_) => {
                tgs.iter().any(|tg| !self.lbs.contains_key(tg))
                    && self
                        .missing_asked_at
                        .is_none_or(|t| now - t >= RETRY_MISSING_AFTER)
            }
        }
    }
}

/// The `UnHealthyHostCount` queries (Maximum, 1 minute) of one target group: one per load
/// balancer it is attached to.
pub(super) fn unhealthy_host_queries(tg: &str, lbs: &[String]) -> Vec<MetricQuery> {
    let tg_dim = target_group_dimension(tg).to_string();
    lbs.iter()
        .map(|lb| MetricQuery {
            namespace: "AWS/ApplicationELB".into(),
            name: "UnHealthyHostCount".into(),
            dimensions: BTreeMap::from([
                ("TargetGroup".to_string(), tg_dim.clone()),
                (
                    "LoadBalancer".to_string(),
                    load_balancer_dimension(lb).to_string(),
                ),
            ]),
            stat: "Maximum".into(),
            period_secs: 60,
        })
        .collect()
}

/// Clear: at least one series, and each has a datapoint starting within [`FRESH`] of
/// `now`, and every datapoint of the last [`LOOKBACK`] before its newest reads zero.
pub fn reads_clear(series: &[&MetricSeries], now: DateTime<Utc>) -> bool {
    !series.is_empty()
        && series
            .iter()
            .all(|s| match s.points.iter().map(|p| p.0).max() {
                Some(newest) if now - newest <= FRESH => s
                    .points
                    .iter()
                    .filter(|(t, _)| newest - *t <= LOOKBACK)
                    .all(|(_, v)| *v <= 0.0),
                _ => false,
            })
}

impl Controller {
    /// The `UnHealthyHostCount` queries of the fleets that repair (direct,
    /// `scaling.repair.enabled`, with a target group), by target group, when a read is
    /// due (see the module documentation); the load balancers they need are read first when
    /// missing and hourly. They ride in the pass's batched metric read.
    pub(super) async fn health_gate_queries(
        &mut self,
        now: DateTime<Utc>,
        report: &mut PassReport,
    ) -> Vec<(String, Vec<MetricQuery>)> {
        // Passes come every few seconds during a rollout; the metric is per minute.
        // Not due: the last judgement stands.
        if self
            .health_gate
            .metrics_read_at
            .is_some_and(|t| now - t < READ_EVERY)
        {
            return vec![];
        }
        self.health_gate.metrics_read_at = Some(now);
        self.health_gate.clear.clear();
        let mut tgs: Vec<String> = self
            .config
            .fleets
            .iter()
            .filter(|f| self.owned.as_ref().is_none_or(|o| o.contains(&f.name)))
            .filter(|f| f.auto_scaling_group.is_none() && f.scaling.repair.enabled)
            .filter_map(|f| f.target_group_arn.clone())
            .collect();
        tgs.sort();
        tgs.dedup();
        if self.health_gate.needs_read(&tgs, now) {
            let full = self
                .health_gate
                .read_at
                .is_none_or(|t| now - t >= REFRESH_EVERY);
            self.health_gate.missing_asked_at = Some(now);
            match self.cloud.target_group_load_balancers(&tgs).await {
                Ok(found) => {
                    for (tg, lbs) in found {
                        self.health_gate.lbs.insert(tg, lbs);
                    }
                    if full {
                        self.health_gate.read_at = Some(now);
                    }
                }
                Err(e) => {
                    warn!(error = %e, "cannot read the target groups' load balancers; repair reads target health directly");
                    note_error(report, "describe target groups", &e);
                }
            }
        }
        tgs.into_iter()
            .filter_map(|tg| {
                let lbs = self.health_gate.lbs.get(&tg)?;
                let qs = unhealthy_host_queries(&tg, lbs);
                (!qs.is_empty()).then_some((tg, qs))
            })
            .collect()
    }

    /// Which of the target groups `asked` (by [`Self::health_gate_queries`]) read clear,
    /// from the pass's metric read; a failed read clears nothing.
    pub(super) fn judge_health_gate(
        &mut self,
        now: DateTime<Utc>,
        asked: &[(String, Vec<MetricQuery>)],
        metrics: &HashMap<MetricQuery, Option<MetricSeries>>,
    ) {
        for (tg, qs) in asked {
            let series: Option<Vec<&MetricSeries>> = qs
                .iter()
                .map(|q| metrics.get(q).and_then(Option::as_ref))
                .collect();
            if series.is_some_and(|s| reads_clear(&s, now)) {
                self.health_gate.clear.insert(tg.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn t(m: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 2, 12, 0, 0)
            .single()
            .expect("time")
            + chrono::Duration::minutes(m)
    }

    fn series(points: &[(i64, f64)]) -> MetricSeries {
        MetricSeries {
            points: points.iter().map(|&(m, v)| (t(m), v)).collect(),
        }
    }

    #[test]
    fn dimensions_are_the_arn_tails_elb_publishes() {
        let q = unhealthy_host_queries(
            "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/web/0123456789abcdef",
            &["arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/front/50dc6c495c0c9188".to_string()],
        );
        assert_eq!(q.len(), 1);
        assert_eq!(
            q[0].dimensions["TargetGroup"],
            "targetgroup/web/0123456789abcdef"
        );
        assert_eq!(
            q[0].dimensions["LoadBalancer"],
            "app/front/50dc6c495c0c9188"
        );
        assert_eq!(q[0].stat, "Maximum");
        assert!(unhealthy_host_queries("arn:x:targetgroup/a/1", &[]).is_empty());
    }

    #[test]
    fn clear_needs_fresh_zeros_from_every_load_balancer() {
        let now = t(10);
        let zero = series(&[(6, 0.0), (7, 0.0), (8, 0.0)]);
        assert!(reads_clear(&[&zero], now));
        assert!(!reads_clear(&[], now), "no load balancer: read the targets");
        assert!(
            !reads_clear(&[&zero, &series(&[])], now),
            "one without data"
        );
        assert!(
            !reads_clear(&[&series(&[(2, 0.0), (3, 0.0)])], now),
            "stale: newest starts 7 minutes ago"
        );
        assert!(!reads_clear(
            &[&series(&[(6, 1.0), (7, 0.0), (8, 0.0)])],
            now
        ));
        // Older than the look-back: forgotten.
        assert!(reads_clear(
            &[&series(&[(2, 3.0), (6, 0.0), (8, 0.0)])],
            now
        ));
    }

    #[test]
    fn load_balancers_are_read_first_hourly_and_for_new_groups_not_every_pass() {
        let tgs = vec!["tg-a".to_string()];
        let mut g = HealthGate::default();
        assert!(g.needs_read(&tgs, t(0)));
        g.read_at = Some(t(0));
        g.lbs.insert("tg-a".into(), vec![]);
        assert!(!g.needs_read(&tgs, t(30)));
        assert!(g.needs_read(&tgs, t(60)));
        let more = vec!["tg-a".to_string(), "tg-b".to_string()];
        assert!(g.needs_read(&more, t(1)), "a new target group");
        g.missing_asked_at = Some(t(1));
        assert!(
            !g.needs_read(&more, t(3)),
            "missing: asked again after 5 min"
        );
        assert!(g.needs_read(&more, t(6)));
        assert!(!g.needs_read(&[], t(0)));
    }

    proptest! {
        /// Any nonzero reading within the look-back, or no fresh datapoint, is never clear.
        #[test]
        fn any_recent_unhealthy_host_is_never_clear(
            values in proptest::collection::vec(0u8..3, 1..8),
            newest in 0i64..10,
        ) {
            let now = t(10);
            let pts: Vec<(i64, f64)> = values
                .iter()
                .enumerate()
                .map(|(k, v)| (newest - k as i64, f64::from(*v)))
                .collect();
            let s = series(&pts);
            let fresh = 10 - newest <= 4;
            let recent_bad = pts.iter().any(|(m, v)| newest - m <= 3 && *v > 0.0);
            prop_assert_eq!(reads_clear(&[&s], now), fresh && !recent_bad);
        }
    }
}
