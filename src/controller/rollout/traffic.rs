//! Where a rollout's traffic goes: a canary's listener weights, the canary target group,
//! and a blue/green old set standing by out of the target group.

use super::super::{note_error, Controller, PassReport};
use crate::cloud::TargetHealth;
use crate::manifest::FleetSpec;
use std::collections::HashSet;
use tracing::info;

impl Controller {
    /// Set the listener's weights: `canary_share` percent to the canary target group, the
    /// rest to the fleet's own. Only when it changes.
    pub(super) async fn shift_traffic(
        &mut self,
        spec: &FleetSpec,
        t: &crate::manifest::CanaryTraffic,
        canary_share: u32,
        report: &mut PassReport,
    ) {
        let Some(main) = &spec.target_group_arn else {
            return;
        };
        let state = self.fleets.entry(spec.name.clone()).or_default();
        if state.canary_share == Some(canary_share) {
            return;
        }
        let weights = [
            (main.clone(), 100 - canary_share),
            (t.canary_target_group_arn.clone(), canary_share),
        ];
        match self
            .cloud
            .set_forward_weights(&t.listener_arn, &weights)
            .await
        {
            Ok(()) => {
                info!(fleet = %spec.name, canary_share, listener = %t.listener_arn, "action: listener weights set");
                self.fleets
                    .entry(spec.name.clone())
                    .or_default()
                    .canary_share = Some(canary_share);
            }
            Err(e) => note_error(report, &spec.name, &e),
        }
    }

    /// Deregister the new instances from the canary target group (no traffic goes there).
    pub(super) async fn leave_canary_group(
        &mut self,
        canary: &FleetSpec,
        ids: &[String],
        report: &mut PassReport,
    ) {
        let Some(tg) = &canary.target_group_arn else {
            return;
        };
        let state = self.fleets.entry(canary.name.clone()).or_default();
        let todo: Vec<String> = ids
            .iter()
            .filter(|id| state.registered.contains(*id))
            .cloned()
            .collect();
        if todo.is_empty() {
            return;
        }
        match self.cloud.deregister_targets(tg, &todo).await {
            Ok(()) => {
                let state = self.fleets.entry(canary.name.clone()).or_default();
                for id in &todo {
                    state.registered.remove(id);
                }
            }
            Err(e) => note_error(report, &canary.name, &e),
        }
    }

    /// Deregister instances kept as a standby (not retired), once each.
    pub(super) async fn stand_by(
        &mut self,
        spec: &FleetSpec,
        ids: &[String],
        report: &mut PassReport,
    ) {
        let Some(tg) = &spec.target_group_arn else {
            return;
        };
        let state = self.fleets.entry(spec.name.clone()).or_default();
        let mut todo: Vec<String> = ids
            .iter()
            .filter(|id| !state.standby.contains(*id))
            .cloned()
            .collect();
        if todo.is_empty() {
            return;
        }
        // Only what the target group holds (an instance launched just before the switch
        // was never registered, and deregistering it is an error).
        match self.cloud.target_health(tg).await {
            Ok(h) => {
                let held: HashSet<String> = h
                    .into_iter()
                    .filter(|(_, s)| !matches!(s, TargetHealth::Draining | TargetHealth::Unused))
                    .map(|(id, _)| id)
                    .collect();
                let state = self.fleets.entry(spec.name.clone()).or_default();
                for id in todo.iter().filter(|id| !held.contains(*id)) {
                    state.registered.remove(id);
                    state.standby.insert(id.clone());
                }
                todo.retain(|id| held.contains(id));
            }
            Err(e) => {
                note_error(report, &spec.name, &e);
                return;
            }
        }
        if todo.is_empty() {
            return;
        }
        match self.cloud.deregister_targets(tg, &todo).await {
            Ok(()) => {
                info!(fleet = %spec.name, ids = ?todo, "action: deregistered the old set; it stays running for instant rollback");
                let state = self.fleets.entry(spec.name.clone()).or_default();
                for id in &todo {
                    state.registered.remove(id);
                    state.standby.insert(id.clone());
                }
                report.actions.push(super::super::Action::Deregister {
                    fleet: spec.name.clone(),
                    ids: todo,
                });
            }
            Err(e) => note_error(report, &spec.name, &e),
        }
    }
}
