//! The alternatives a policy is compared with, modelled as their vendors document them.

use super::{Autoscaler, View};
use crate::policy::ceil_count;
use std::collections::VecDeque;

/// EC2 Auto Scaling target tracking on `ALBRequestCountPerTarget`:
/// - the scale-out alarm fires after 3 consecutive 1-minute datapoints above the target,
///   the scale-in alarm after 15 consecutive datapoints below 90% of it;
/// - while an alarm is in ALARM the policy runs again each minute;
/// - the new capacity is proportional, `ceil(load / target)`, rounded up both ways (the
///   conservative rounding: never below what the metric asks for);
/// - instances still warming up count toward capacity when scaling out (no double
///   launch), and no scale-in happens while any instance is warming up.
pub struct AwsTargetTracking {
    /// Requests per instance per minute.
    pub target: f64,
    /// Minutes an instance counts as warming up after launch.
    pub warmup: u32,
    pub min: u32,
    pub max: u32,
    high: u32,
    low: u32,
    seen: usize,
    /// The share of an instance's capacity `target` stands for, if known (for the name).
    utilization: Option<f64>,
}

impl AwsTargetTracking {
    pub fn new(target: f64, warmup: u32, min: u32, max: u32) -> Self {
        Self {
            target,
            warmup,
            min,
            max,
            high: 0,
            low: 0,
            seen: 0,
            utilization: None,
        }
    }

    /// Target tracking at `utilization` (0..1) of `capacity` requests per minute.
    pub fn at_utilization(
        capacity: f64,
        utilization: f64,
        warmup: u32,
        min: u32,
        max: u32,
    ) -> Self {
        Self {
            utilization: Some(utilization),
            ..Self::new(capacity * utilization, warmup, min, max)
        }
    }
}

impl Autoscaler for AwsTargetTracking {
    fn name(&self) -> String {
        match self.utilization {
            Some(u) => format!(
                "aws-target-tracking (RequestCountPerTarget {:.3}, {:.0}%)",
                self.target,
                u * 100.0
            ),
            None => format!(
                "aws-target-tracking (RequestCountPerTarget {:.0})",
                self.target
            ),
        }
    }

    fn desired(&mut self, view: &View) -> u32 {
        let current = view.current();
        // One new datapoint per minute; the alarms count consecutive ones.
        let Some(last) = view.visible.checked_sub(1) else {
            return current;
        };
        let m = view.past[last];
        let per_target = if m.ready > 0 {
            m.demand / f64::from(m.ready)
        } else if m.demand > 0.0 {
            f64::INFINITY
        } else {
            0.0
        };
        if view.visible > self.seen {
            self.seen = view.visible;
            if per_target > self.target {
                self.high += 1;
            } else {
                self.high = 0;
            }
            if per_target < 0.9 * self.target {
                self.low += 1;
            } else {
                self.low = 0;
            }
        }
        let wanted = ceil_count(m.demand / self.target).clamp(self.min, self.max);
        if self.high >= 3 {
            return wanted.max(current);
        }
        let warming = current - (view.launched_minutes_ago)(self.warmup).min(current);
        if self.low >= 15 && warming == 0 {
            return wanted.min(current);
        }
        current.clamp(self.min, self.max)
    }
}

/// The Kubernetes Horizontal Pod Autoscaler on CPU utilization (saturating at 100%):
/// - desired = ceil(ready × utilization / target), skipped while the ratio is within the
///   0.1 tolerance;
/// - when scaling up, pods not yet ready count as 0% used (the HPA's own rule), so booting
///   capacity is not bought twice;
/// - scale-up at most max(4 pods, 100%) per decision (the default behavior);
/// - scale-down goes only to the highest recommendation of the last 5 minutes.
pub struct Hpa {
    /// Utilization target, 0..1.
    pub target: f64,
    pub min: u32,
    pub max: u32,
    recommendations: VecDeque<(usize, u32)>,
}

impl Hpa {
    pub fn new(target: f64, min: u32, max: u32) -> Self {
        Self {
            target,
            min,
            max,
            recommendations: VecDeque::new(),
        }
    }
}

const HPA_TOLERANCE: f64 = 0.1;
const HPA_STABILIZATION_MINUTES: usize = 5;

impl Autoscaler for Hpa {
    fn name(&self) -> String {
        format!("k8s-hpa (CPU {:.0}%)", self.target * 100.0)
    }

    fn desired(&mut self, view: &View) -> u32 {
        let current = view.current();
        let Some(last) = view.visible.checked_sub(1) else {
            return current;
        };
        let m = view.past[last];
        let utilization = if m.ready > 0 {
            (m.demand / (f64::from(m.ready) * view.world.capacity)).min(1.0)
        } else {
            1.0
        };
        let ready = f64::from(view.ready.max(1));
        let mut ratio = utilization / self.target;
        let mut base = ready;
        if ratio > 1.0 && view.booting > 0 {
            // Unready pods count as using nothing.
            base = f64::from(view.current());
            ratio = utilization * ready / (self.target * base);
        }
        let recommendation = if (ratio - 1.0).abs() <= HPA_TOLERANCE {
            current
        } else {
            ceil_count(base * ratio)
        }
        .clamp(self.min, self.max);
        self.recommendations
            .push_back((view.minute, recommendation));
        while let Some(&(t, _)) = self.recommendations.front() {
            if view.minute - t >= HPA_STABILIZATION_MINUTES {
                self.recommendations.pop_front();
            } else {
                break;
            }
        }
        if recommendation >= current {
            let limit = (current + 4).max(current * 2);
            recommendation.min(limit)
        } else {
            let highest = self
                .recommendations
                .iter()
                .map(|(_, r)| *r)
                .max()
                .unwrap_or(recommendation);
            highest.min(current)
        }
    }
}

/// A fixed fleet, sized once (for the peak).
pub struct StaticFleet {
    pub size: u32,
    pub label: String,
}

impl Autoscaler for StaticFleet {
    fn name(&self) -> String {
        self.label.clone()
    }

    fn desired(&mut self, _view: &View) -> u32 {
        self.size
    }

    fn initial(&self, _suggested: u32) -> u32 {
        self.size
    }
}
