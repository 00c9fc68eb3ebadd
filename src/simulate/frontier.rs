//! Where a policy lands against the baselines' cost/loss frontier (`simulate --sweep`).
//!
//! The baselines (AWS target tracking and the Kubernetes HPA) are run at every target in
//! [`SWEEP_TARGETS`]; each run is a (cost, loss) point. For a policy that cost `c` and
//! lost a fraction `l` of the requests:
//! - `r` = `c` ÷ the cost of the cheapest baseline run that lost no more than `l`
//!   (`None` when every baseline run lost more: the policy is unbeaten on loss);
//! - the baselines' loss at its cost = the least any baseline run lost for at most `c`
//!   (`None` when every baseline run cost more).
//!
//! `r` below 1 means the policy is cheaper than anything the baselines can tune to for
//! the same or lower loss. Cost is instance-minutes, or US dollars when the runs are
//! priced (`simulate --prices`): with Spot in the mix, runs with the same instance-minutes
//! can cost different money. Pure functions over [`Summary`] rows.

use super::Summary;
use serde::Serialize;

/// The utilization targets the baselines are swept over: 0.30 to 0.90 in steps of 0.05.
pub const SWEEP_TARGETS: [f64; 13] = [
    0.30, 0.35, 0.40, 0.45, 0.50, 0.55, 0.60, 0.65, 0.70, 0.75, 0.80, 0.85, 0.90,
];

/// A baseline run, as compared.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Point {
    pub policy: String,
    /// Instance-minutes billed.
    pub instance_minutes: u64,
    /// US dollars, when priced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usd: Option<f64>,
    /// Fraction of requests not served (0..1).
    pub unserved_fraction: f64,
}

/// One policy against the frontier.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Standing {
    pub policy: String,
    pub instance_minutes: u64,
    /// US dollars, when priced; then `r` and the comparisons are in dollars.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usd: Option<f64>,
    pub unserved_fraction: f64,
    /// Cost ÷ the cheapest baseline run losing no more (None: none loses so little).
    pub r: Option<f64>,
    /// That cheapest baseline run.
    pub cheapest_no_worse: Option<Point>,
    /// The baseline run that lost least for at most this policy's cost.
    pub best_at_cost: Option<Point>,
}

/// Losses equal up to this are equal (float sums over a trace).
const SAME_LOSS: f64 = 1e-12;

fn point(s: &Summary) -> Point {
    Point {
        policy: s.policy.clone(),
        instance_minutes: s.instance_minutes,
        usd: s.usd,
        unserved_fraction: s.unserved_fraction,
    }
}

/// What a run is compared by: dollars when priced, else instance-minutes.
fn cost(s: &Summary) -> f64 {
    s.usd.unwrap_or(s.instance_minutes as f64)
}

/// Where `policy` stands against the `baselines` runs.
pub fn stand(policy: &Summary, baselines: &[Summary]) -> Standing {
    let cheapest_no_worse = baselines
        .iter()
        .filter(|b| b.unserved_fraction <= policy.unserved_fraction + SAME_LOSS)
        .min_by(|a, b| cost(a).total_cmp(&cost(b)));
    let best_at_cost = baselines
        .iter()
        .filter(|b| cost(b) <= cost(policy))
        .min_by(|a, b| a.unserved_fraction.total_cmp(&b.unserved_fraction))
        .map(point);
    let r = cheapest_no_worse
        .filter(|b| cost(b) > 0.0)
        .map(|b| cost(policy) / cost(b));
    let cheapest_no_worse = cheapest_no_worse.map(point);
    Standing {
        policy: policy.policy.clone(),
        instance_minutes: policy.instance_minutes,
        usd: policy.usd,
        unserved_fraction: policy.unserved_fraction,
        r,
        cheapest_no_worse,
        best_at_cost,
    }
}

/// "N instance-minutes", and the dollars when priced.
fn cost_text(instance_minutes: u64, usd: Option<f64>) -> String {
    match usd {
        Some(u) => format!("${u:.2}, {instance_minutes} instance-minutes"),
        None => format!("{instance_minutes} instance-minutes"),
    }
}

/// The standings as text, one block per policy.
pub fn table(standings: &[Standing]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for s in standings {
        let _ = writeln!(
            out,
            "{}: {}, {:.4}% unserved",
            s.policy,
            cost_text(s.instance_minutes, s.usd),
            s.unserved_fraction * 100.0
        );
        match (&s.r, &s.cheapest_no_worse) {
            (Some(r), Some(b)) => {
                let _ = writeln!(
                    out,
                    "  r = {r:.3}: the cheapest baseline run losing no more is {} ({}, {:.4}% unserved)",
                    b.policy,
                    cost_text(b.instance_minutes, b.usd),
                    b.unserved_fraction * 100.0
                );
            }
            _ => {
                let _ = writeln!(
                    out,
                    "  r: unbeaten; every baseline run, at any cost, loses more than {:.4}%",
                    s.unserved_fraction * 100.0
                );
            }
        }
        match &s.best_at_cost {
            Some(b) => {
                let _ = writeln!(
                    out,
                    "  at its cost the baselines lose {:.4}% at best ({})",
                    b.unserved_fraction * 100.0,
                    b.policy
                );
            }
            None => {
                let _ = writeln!(out, "  every baseline run costs more");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(policy: &str, cost: u64, loss: f64) -> Summary {
        Summary {
            policy: policy.into(),
            instance_minutes: cost,
            limit_instance_minutes: 100,
            cost_ratio: cost as f64 / 100.0,
            unserved_fraction: loss,
            overload_minutes: 0,
            launches: 0,
            retirements: 0,
            short_lived: 0,
            requests: 1.0,
            unserved_requests: loss,
            peak_instances: 0,
            spot_instance_minutes: 0,
            interruptions: 0,
            usd: None,
            spot_usd: None,
            spot_usd_hour_minutes: 0.0,
        }
    }

    #[test]
    fn r_is_cost_over_the_cheapest_baseline_losing_no_more() {
        let baselines = [
            run("tt 0.5", 200, 0.001),
            run("tt 0.7", 150, 0.004),
            run("hpa 0.6", 170, 0.002),
            run("hpa 0.9", 120, 0.02),
        ];
        let s = stand(&run("predictive", 136, 0.002), &baselines);
        // Losing no more than 0.2%: tt 0.5 (200) and hpa 0.6 (170); the cheapest is 170.
        assert_eq!(
            s.cheapest_no_worse.as_ref().map(|b| b.policy.as_str()),
            Some("hpa 0.6")
        );
        assert!((s.r.expect("r") - 136.0 / 170.0).abs() < 1e-12);
        // For at most 136: only hpa 0.9 (2%).
        assert_eq!(
            s.best_at_cost.as_ref().map(|b| b.policy.as_str()),
            Some("hpa 0.9")
        );
    }

    #[test]
    fn priced_runs_are_compared_in_dollars() {
        let priced = |name: &str, minutes: u64, loss: f64, usd: f64| Summary {
            usd: Some(usd),
            ..run(name, minutes, loss)
        };
        // The same loss for fewer instance-minutes, but on On-Demand: dearer.
        let baselines = [
            priced("tt 0.5 (mostly Spot)", 200, 0.001, 40.0),
            priced("hpa 0.6 (On-Demand)", 170, 0.001, 60.0),
        ];
        let s = stand(&priced("predictive", 150, 0.001, 30.0), &baselines);
        assert_eq!(
            s.cheapest_no_worse.as_ref().map(|b| b.policy.as_str()),
            Some("tt 0.5 (mostly Spot)")
        );
        assert!((s.r.expect("r") - 30.0 / 40.0).abs() < 1e-12);
        let s = stand(&priced("dear", 150, 0.0, 50.0), &baselines);
        // At most $50: only the Spot-heavy run, whatever its instance-minutes.
        assert_eq!(
            s.best_at_cost.as_ref().map(|b| b.policy.as_str()),
            Some("tt 0.5 (mostly Spot)")
        );
        assert!(table(&[s]).contains("$50.00, 150 instance-minutes"));
    }

    #[test]
    fn unbeaten_and_cheapest_policies_have_no_comparison() {
        let baselines = [run("tt 0.5", 200, 0.001), run("hpa 0.6", 170, 0.002)];
        let s = stand(&run("static", 300, 0.0), &baselines);
        assert_eq!(s.r, None, "no baseline loses nothing");
        assert_eq!(
            s.best_at_cost.as_ref().map(|b| b.policy.as_str()),
            Some("tt 0.5")
        );
        let s = stand(&run("tiny", 10, 0.5), &baselines);
        assert_eq!(s.best_at_cost, None, "every baseline costs more");
        assert!((s.r.expect("r") - 10.0 / 170.0).abs() < 1e-12);
        assert!(table(&[s]).contains("every baseline run costs more"));
    }
}
