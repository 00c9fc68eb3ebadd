//! Garbage collection: owned instances whose fleet is no longer in the manifests.
//! They are reported at once and terminated after a grace period (an operator who
//! deleted a manifest by mistake has time to restore it). With no fleets configured at
//! all, nothing is collected: an empty manifest directory must not wipe a region.

use super::{Action, Controller, PassReport};
use crate::cloud::Instance;
use crate::manifest::FleetSpec;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use tracing::{error, info, warn};

impl Controller {
    /// `known`: every fleet in the manifests, by name (the pass's index of them).
    pub(super) async fn collect_garbage(
        &mut self,
        instances: &[Instance],
        known: &HashMap<&str, &FleetSpec>,
        now: DateTime<Utc>,
        report: &mut PassReport,
    ) {
        let gc = self.config.controller.gc.clone();
        let orphans: Vec<&Instance> = instances
            .iter()
            .filter(|i| i.state.is_live() && !known.contains_key(i.fleet.as_str()))
            .collect();
        let live: std::collections::HashSet<&str> = orphans.iter().map(|i| i.id.as_str()).collect();
        self.orphans.retain(|id, _| live.contains(id.as_str()));
        if orphans.is_empty() || self.config.fleets.is_empty() {
            return;
        }
        let mut due = Vec::new();
        for i in orphans {
            let first = *self.orphans.entry(i.id.clone()).or_insert(now);
            if first == now {
                warn!(instance = %i.id, fleet = %i.fleet, "orphan: owned instance of a fleet that is not in the manifests");
            }
            if gc.terminate_orphans && now - first >= gc.grace.chrono() {
                due.push(i.id.clone());
            }
        }
        if due.is_empty() {
            return;
        }
        match self.cloud.terminate(&due).await {
            Ok(()) => {
                info!(ids = ?due, "action: terminated orphans after grace period");
                for id in &due {
                    self.orphans.remove(id);
                }
                report.actions.push(Action::Terminate {
                    fleet: "(orphans)".into(),
                    ids: due,
                    reason: "orphan".into(),
                });
            }
            Err(e) => {
                error!(error = %e, "terminating orphans failed");
                report.errors.push(format!("gc: {e}"));
            }
        }
    }
}
