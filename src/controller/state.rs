//! What the controller remembers of each fleet between passes (and, for rollouts, across
//! restarts through the store).

use crate::policy::Memory;
use crate::store::Store;
use chrono::{DateTime, Utc};
use std::collections::{HashMap, HashSet};
use tracing::warn;

#[derive(Debug, Default)]
pub(super) struct FleetState {
    pub(super) memory: Memory,
    /// Auto Scaling group instances: when each was first seen in service. The group API
    /// gives no launch time, so warmup is counted from here. After a restart every
    /// instance already in service counts as warm.
    pub(super) in_service_since: HashMap<String, DateTime<Utc>>,
    /// Whether `in_service_since` has been filled once (see `group_warm`).
    pub(super) group_seen: bool,
    pub(super) registered: HashSet<String>,
    pub(super) registered_refreshed: Option<DateTime<Utc>>,
    /// New-build instances whose smoke command passed.
    pub(super) smoke_passed: HashSet<String>,
    /// New-build instances' failed smoke attempts so far.
    pub(super) smoke_failures: HashMap<String, u32>,
    /// The last launch EC2 refused as invalid: (build, error). Cleared by a launch that
    /// works.
    pub(super) launch_rejected: Option<(String, String)>,
    /// Blue/green: old instances deregistered but kept running after the switch.
    pub(super) standby: HashSet<String>,
    /// Canary traffic shifting: the share last set on the listener.
    pub(super) canary_share: Option<u32>,
    /// The freeze a queued rollout was last reported waiting for.
    pub(super) frozen_note: Option<String>,
    /// The desired capacity decided last pass (rollouts scale against it, not the
    /// live count, which includes the surge).
    pub(super) base_desired: Option<u32>,
    /// The rollout memory (standby, canary share, smoke passes) as last saved.
    pub(super) saved_memory: Option<String>,
    /// Passes in a row that found the fleet below the capacity decided the pass before.
    pub(super) short_passes: u32,
    /// The capacity decided last pass, to compare with what the next pass finds live.
    pub(super) last_decided: Option<u32>,
    /// Repair: when instances were first seen unhealthy, which are condemned (repair.rs).
    pub(super) repair: super::repair::RepairMemory,
    /// The least capacity decided over the last 24 hours, for an On-Demand base of
    /// `floor` (in memory: a restarted daemon starts it at the capacity it decides first,
    /// the safe side, more On-Demand, until a day has passed).
    pub(super) on_demand_floor: Option<(crate::cloud::market::Floor, u32)>,
    /// The global cap (`max_total_instances`) held the last decision below what the
    /// policies wanted: said once when it starts and once when it ends.
    pub(super) held_by_cap: bool,
    /// Passes in a row the cap has not held the fleet (it is said to be released after
    /// [`CAP_RELEASED_PASSES`], so a fleet hovering at the cap is not reported every pass).
    pub(super) unheld_passes: u32,
}

/// Passes without the global cap holding a fleet before that is reported.
pub(super) const CAP_RELEASED_PASSES: u32 = 10;

/// The part of a fleet's in-memory state a restarted daemon needs back to continue a
/// rollout exactly: which old instances were put on standby (so they are not registered
/// again), the canary traffic share, and which instances passed their smoke test.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct RolloutMemory {
    pub(super) standby: std::collections::BTreeSet<String>,
    pub(super) canary_share: Option<u32>,
    pub(super) smoke_passed: std::collections::BTreeSet<String>,
}

impl FleetState {
    pub(super) fn rollout_memory(&self) -> String {
        let m = RolloutMemory {
            standby: self.standby.iter().cloned().collect(),
            canary_share: self.canary_share,
            smoke_passed: self.smoke_passed.iter().cloned().collect(),
        };
        serde_json::to_string(&m).unwrap_or_default()
    }

    /// A fleet's state as a restarted daemon finds it in the state file.
    pub(super) fn restored(fleet: &str, store: &Store) -> FleetState {
        let mut s = FleetState {
            base_desired: store.base_desired(fleet).ok().flatten(),
            ..FleetState::default()
        };
        if let Some(body) = store.fleet_memory(fleet).ok().flatten() {
            match serde_json::from_str::<RolloutMemory>(&body) {
                Ok(m) => {
                    s.standby = m.standby.into_iter().collect();
                    s.canary_share = m.canary_share;
                    s.smoke_passed = m.smoke_passed.into_iter().collect();
                    s.saved_memory = Some(body);
                }
                Err(e) => {
                    warn!(fleet, error = %e, "the saved rollout state does not parse; starting without it")
                }
            }
        }
        s
    }
}
