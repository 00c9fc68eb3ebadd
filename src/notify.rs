//! Notifications: what happened, told to chat (Slack-compatible webhooks) and to on-call
//! (OpsGenie's Alert API).
//!
//! - [`Watch`] turns passes into news, edge-triggered: a rollout started, succeeded or
//!   rolled back; a decision moved a fleet by at least the threshold; a fleet hit its cost
//!   cap; a fleet's metrics went missing (and came back); a fleet's repair halted (and
//!   resumed). Pure: tested without a network.
//! - [`Notifier`] delivers. Each sink has its own queue and task; the control loop only
//!   puts a note on the queue ([`Notifier::send`] never waits). A delivery is retried with
//!   backoff and jitter on network errors, 429 and 5xx; a full queue drops the note and
//!   says so in the log rather than slow the daemon down.

use crate::controller::PassReport;
use crate::manifest::NotifyEvent;
use crate::store::{Outcome, Store};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

mod deliver;
#[cfg(test)]
use deliver::Target;
pub use deliver::{Deliveries, Notifier};

/// How urgent a note is (OpsGenie priority, the Slack emoji).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

/// One piece of news.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Note {
    pub event: NotifyEvent,
    pub severity: Severity,
    pub fleet: String,
    /// One line.
    pub title: String,
    /// More detail (the decision's reason, the gate that failed).
    pub detail: String,
    /// Same alias, same incident (OpsGenie de-duplicates on it).
    pub alias: String,
    /// The incident under `alias` is over (OpsGenie closes the alert).
    pub resolves: bool,
}

/// Remembers what was already announced, so each change is told once.
///
/// Rollouts: a start is told when a rollout first shows in a pass; an end when the ledger
/// says it finished (succeeded or rolled back) at or after `since`, the daemon's start.
/// So a pass that could not see the fleet tells nothing, a rollback in a pre-deploy hook
/// (which never shows as running) is still told, and a restart does not repeat the news
/// of rollouts that ended before it. Rows taken over from another replica are marked as
/// told ([`Watch::mark_told`]): that replica told them.
#[derive(Debug)]
pub struct Watch {
    since: chrono::DateTime<chrono::Utc>,
    /// The ledger is read from here on: an hour before the latest end told (a bounded
    /// read each pass, however long the daemon runs).
    cursor: chrono::DateTime<chrono::Utc>,
    /// Rollouts told as started: id → (fleet, from, to).
    started: BTreeMap<i64, (String, String, String)>,
    ended: BTreeSet<i64>,
    /// Fleets told to be at their cap: how many passes in a row they have been below it.
    capped: BTreeMap<String, u32>,
    missing: BTreeSet<String>,
    /// The last scale event told per fleet (from, to), so a decision that repeats (a
    /// dry run, a launch that keeps failing) is told once.
    scaled: BTreeMap<String, (u32, u32)>,
    /// Fleets told to have their repair halted (told again only once it has resumed).
    repair_halted: BTreeSet<String>,
    /// Fleets told to be short of their decided capacity (told again once caught up).
    short: BTreeSet<String>,
}

/// A fleet that hovers at its cap would be announced every other pass; it counts as off
/// the cap only after this many passes in a row below it.
const CAP_CLEARS_AFTER: u32 = 10;

impl Watch {
    pub fn new(since: chrono::DateTime<chrono::Utc>) -> Self {
        Watch {
            since,
            cursor: since,
            started: BTreeMap::new(),
            ended: BTreeSet::new(),
            capped: BTreeMap::new(),
            missing: BTreeSet::new(),
            scaled: BTreeMap::new(),
            repair_halted: BTreeSet::new(),
            short: BTreeSet::new(),
        }
    }

    /// Rows taken over with a fleet: another replica told their start, and the end of the
    /// finished ones. The end of one still running is told by whoever finishes it.
    pub fn mark_told(&mut self, rows: &[crate::store::Deployment]) {
        for d in rows {
            self.started
                .entry(d.id)
                .or_insert_with(|| (d.fleet.clone(), String::new(), d.build.clone()));
            if d.outcome != Outcome::InProgress {
                self.ended.insert(d.id);
            }
        }
    }

    /// The news in one pass. `store` is the ledger (how rollouts ended).
    pub fn news(&mut self, report: &PassReport, store: &Store, scale_threshold: u32) -> Vec<Note> {
        let mut out = Vec::new();
        for r in &report.rollouts {
            if self.started.contains_key(&r.id) {
                continue;
            }
            self.started
                .insert(r.id, (r.fleet.clone(), r.from.clone(), r.to.clone()));
            // Running since before this daemon started: told by the one before it.
            let before = store
                .deployment(r.id)
                .ok()
                .flatten()
                .is_some_and(|d| d.started_at < self.since);
            if before {
                continue;
            }
            out.push(Note {
                event: NotifyEvent::RolloutStarted,
                severity: Severity::Info,
                fleet: r.fleet.clone(),
                title: format!(
                    "rollout #{} started on {}: {} → {}",
                    r.id, r.fleet, r.from, r.to
                ),
                detail: format!("phase {}", r.phase),
                alias: format!("coxswain-rollout-{}", r.id),
                resolves: false,
            });
        }
        let finished = store.deployments_since(self.cursor).unwrap_or_default();
        if let Some(latest) = finished.iter().filter_map(|d| d.finished_at).max() {
            self.cursor = self
                .cursor
                .max(latest - chrono::Duration::hours(1))
                .max(self.since);
        }
        for d in finished {
            if self.ended.contains(&d.id)
                || !matches!(d.outcome, Outcome::Succeeded | Outcome::RolledBack)
                || d.finished_at.is_none_or(|t| t < self.since)
            {
                continue;
            }
            self.ended.insert(d.id);
            let (id, fleet, to) = (d.id, d.fleet.clone(), d.build.clone());
            let from = self
                .started
                .get(&id)
                .map(|s| s.1.clone())
                .filter(|f| !f.is_empty());
            out.push(match d.outcome {
                Outcome::Succeeded => Note {
                    event: NotifyEvent::RolloutSucceeded,
                    severity: Severity::Info,
                    fleet: fleet.clone(),
                    title: format!("rollout #{id} succeeded: {to} is live on {fleet}"),
                    detail: from.map(|f| format!("replaced {f}")).unwrap_or_default(),
                    alias: format!("coxswain-rollout-{id}"),
                    resolves: false,
                },
                _ => Note {
                    event: NotifyEvent::RolloutRolledBack,
                    severity: Severity::Critical,
                    fleet: fleet.clone(),
                    title: match from {
                        Some(f) => format!("rollout #{id} rolled back on {fleet}: {to} → {f}"),
                        None => format!("rollout #{id} of {to} rolled back on {fleet}"),
                    },
                    detail: d.reason.clone().unwrap_or_default(),
                    alias: format!("coxswain-rollout-{id}"),
                    resolves: false,
                },
            });
        }
        for f in &report.fleets {
            let d = &f.decision;
            let change = d.desired.abs_diff(d.current);
            let repeat = self.scaled.get(&d.fleet) == Some(&(d.current, d.desired));
            if scale_threshold > 0 && change >= scale_threshold && !repeat {
                self.scaled.insert(d.fleet.clone(), (d.current, d.desired));
                let verb = if d.desired > d.current { "out" } else { "in" };
                out.push(Note {
                    event: NotifyEvent::Scale,
                    severity: Severity::Info,
                    fleet: d.fleet.clone(),
                    title: format!(
                        "{} scaling {verb} by {change}: {} → {} instances",
                        d.fleet, d.current, d.desired
                    ),
                    detail: d.reason(),
                    alias: format!("coxswain-scale-{}", d.fleet),
                    resolves: false,
                });
            }
            let capped = d.capped();
            let told = self.capped.contains_key(&d.fleet);
            if capped {
                self.capped.insert(d.fleet.clone(), 0);
            } else if let Some(streak) = self.capped.get_mut(&d.fleet) {
                *streak += 1;
                if *streak >= CAP_CLEARS_AFTER {
                    self.capped.remove(&d.fleet);
                }
            }
            if capped && !told {
                out.push(Note {
                    event: NotifyEvent::CostCap,
                    severity: Severity::Warning,
                    fleet: d.fleet.clone(),
                    title: format!(
                        "{} is at its cost cap: its policies want {} instances, it is held at {}",
                        d.fleet, d.recommended, d.desired
                    ),
                    detail: d.reason(),
                    alias: format!("coxswain-cost-cap-{}", d.fleet),
                    resolves: false,
                });
            }
            if f.shortfall > 0 && self.short.insert(d.fleet.clone()) {
                out.push(Note {
                    event: NotifyEvent::Shortfall,
                    severity: Severity::Critical,
                    fleet: d.fleet.clone(),
                    title: format!(
                        "{}: {} instance(s) short of its decided capacity for more than {} passes",
                        d.fleet,
                        f.shortfall,
                        crate::controller::SHORTFALL_PASSES
                    ),
                    detail: d.reason(),
                    alias: format!("coxswain-shortfall-{}", d.fleet),
                    resolves: false,
                });
            } else if f.shortfall == 0 && self.short.remove(&d.fleet) {
                out.push(Note {
                    event: NotifyEvent::Shortfall,
                    severity: Severity::Info,
                    fleet: d.fleet.clone(),
                    title: format!("{}: capacity caught up with the decision", d.fleet),
                    detail: String::new(),
                    alias: format!("coxswain-shortfall-{}", d.fleet),
                    resolves: true,
                });
            }
            let missing = !d.warnings.is_empty();
            if missing && self.missing.insert(d.fleet.clone()) {
                out.push(Note {
                    event: NotifyEvent::MetricsMissing,
                    severity: Severity::Critical,
                    fleet: d.fleet.clone(),
                    title: format!(
                        "{}: metrics missing; scaling holds on what it last knew",
                        d.fleet
                    ),
                    detail: d.warnings.join("; "),
                    alias: format!("coxswain-metrics-{}", d.fleet),
                    resolves: false,
                });
            } else if !missing && self.missing.remove(&d.fleet) {
                out.push(Note {
                    event: NotifyEvent::MetricsMissing,
                    severity: Severity::Info,
                    fleet: d.fleet.clone(),
                    title: format!("{}: metrics are back", d.fleet),
                    detail: String::new(),
                    alias: format!("coxswain-metrics-{}", d.fleet),
                    resolves: true,
                });
            }
        }
        for r in &report.repairs {
            if r.halted && self.repair_halted.insert(r.fleet.clone()) {
                out.push(Note {
                    event: NotifyEvent::RepairHalted,
                    severity: Severity::Critical,
                    fleet: r.fleet.clone(),
                    title: format!(
                        "{}: repair halted, {} of {} instances unhealthy at once (limit {})",
                        r.fleet, r.unhealthy, r.instances, r.limit
                    ),
                    detail: "nothing is replaced while so many fail together: look for a common cause (a bad build, a dependency down)".into(),
                    alias: format!("coxswain-repair-{}", r.fleet),
                    resolves: false,
                });
            } else if !r.halted && self.repair_halted.remove(&r.fleet) {
                out.push(Note {
                    event: NotifyEvent::RepairHalted,
                    severity: Severity::Info,
                    fleet: r.fleet.clone(),
                    title: format!(
                        "{}: repair resumed, {} of {} instances unhealthy",
                        r.fleet, r.unhealthy, r.instances
                    ),
                    detail: String::new(),
                    alias: format!("coxswain-repair-{}", r.fleet),
                    resolves: true,
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
