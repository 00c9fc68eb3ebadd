//! Fleets heal: outside a rollout, an instance of a directly launched fleet that fails its
//! health checks for `scaling.repair.unhealthy_grace`, or outlives `max_instance_lifetime`,
//! is replaced. The replacement launches first; the bad instance is retired (tagged,
//! deregistered, drained, terminated) only once the fleet has its desired capacity in
//! service without it. Repair halts, and says so loudly, while more than
//! `max_unhealthy_share` of the fleet is unhealthy at once: a bad build or a dependency
//! down fails new instances too, and replacing them would only churn.
//!
//! **What counts as unhealthy.** Judged only after the instance's `scaling.warmup`:
//! stopped or stopping (it serves nothing; a target group reports it `unused`), unhealthy
//! in the fleet's target group, or failing its EC2 status checks. For fleets with a target
//! group the status checks are read only for targets the group does not call healthy: the
//! group's check is the one that says whether the instance serves. A healthy fleet costs
//! no read at all: while the target group's `UnHealthyHostCount` reads zero (one batched
//! GetMetricData for every fleet, see `health_gate`) and nothing is remembered unhealthy,
//! stopped or past its lifetime, the check is skipped. A target that is `initial`, `unused` while
//! running (the group is not attached, or the zone not enabled: a setting, not the
//! instance), or missing from the group, is not held against the instance. A read that
//! fails judges nothing that pass: missing data never counts as a failure.
//!
//! **How it is counted, and why this survives a restart.** Nothing is tagged and nothing
//! new is persisted. An instance is *condemned* once it has been unhealthy for the grace
//! (or is past its lifetime). From the next pass on, a condemned instance is not counted as
//! capacity (`counted`, applied to `current` before the policy decides), so the ordinary
//! scale-out launches its replacement, with the fleet's current build, through the same
//! launch path as any other (tokens, journal, fence); and the pair of a bad instance and
//! its replacement counts as one instance, so the policy never sees the fleet as too big
//! and never scales the replacement in. A condemned instance is retired once the fleet's
//! other instances in service (healthy in the target group, or passing status checks and
//! warm without one) reach the desired capacity. Counting the other way round, a stopped
//! instance (which the scaler alone would not count) counts as capacity until repair
//! condemns it, so a halt also stops the scaler from replacing stopped instances.
//!
//! After a restart the memory (first seen unhealthy, condemned) is empty and is rebuilt
//! from what is observed, conservatively: an unhealthy instance starts its grace again.
//! Meanwhile the bad instance and a replacement already launched both count, one more
//! than the fleet wants; the policy does not scale that in, because after a restart it
//! scales in nothing until a whole `scale_in_stabilization` window of history exists
//! (10 minutes by default, longer than the 5-minute grace). Once the instance is condemned
//! again, the replacement is what makes up the desired capacity: nothing is launched twice
//! and the bad instance is still retired. (With a stabilization window shorter than the
//! grace, a restart in mid-repair can cost one extra launch, never a lost instance.)
//!
//! This module decides with a pure function ([`plan`]) and acts only through the
//! controller's own `retire` (and by terminating retiring instances that are stopped,
//! which have nothing to drain); it must not launch (the scaler does) nor run during a
//! rollout (the caller does not call it then).

use super::{note_error, Controller, PassReport};
use crate::cloud::{Instance, InstanceState, TargetHealth};
use crate::deploy::Build;
use crate::manifest::{FleetSpec, RepairSpec};
use crate::policy::Decision;
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use tracing::{debug, error, info, warn};

/// Health is read at most this often per fleet. Passes come every `poll_interval` (60 s
/// by default) and every pass at that pace checks; while a rollout runs on any fleet,
/// passes come at its gate interval (as often as every few seconds), and this keeps the
/// other fleets' health reads (one DescribeTargetHealth each) from multiplying with them.
/// 45 s rather than 60 s so that a pass arriving a little early is not skipped.
pub(super) const CHECK_EVERY: chrono::Duration = chrono::Duration::seconds(45);

/// Lifetime replacements in flight at once: this share of the desired capacity, rounded
/// up (at least one), like an Auto Scaling group's instance refresh at its default 90%
/// minimum healthy. A fleet launched in one go expires in one go; this spreads it out.
const LIFETIME_BATCH_SHARE: f64 = 0.1;

/// What was seen wrong with an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Symptom {
    /// Stopped or stopping: no longer capacity at all.
    NotRunning,
    /// EC2 status checks (system or instance) not passing.
    StatusChecks,
    /// Unhealthy in the fleet's target group.
    TargetUnhealthy,
}

impl fmt::Display for Symptom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Symptom::NotRunning => "stopped",
            Symptom::StatusChecks => "failing EC2 status checks",
            Symptom::TargetUnhealthy => "unhealthy in its target group",
        })
    }
}

/// Why an instance is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    Unhealthy(Symptom),
    /// Older than `max_instance_lifetime`.
    Lifetime,
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::Unhealthy(s) => write!(f, "{s}"),
            Cause::Lifetime => f.write_str("past max_instance_lifetime"),
        }
    }
}

/// One instance as a repair check sees it.
#[derive(Debug, Clone, Copy)]
pub struct Seen<'a> {
    pub instance: &'a Instance,
    /// Both EC2 status checks pass (`Some(true)`), do not (`Some(false)`, initializing
    /// included), or were not read or not answered (`None`).
    pub status_ok: Option<bool>,
    /// Health in the fleet's target group; `None` without a group or when the group does
    /// not list the instance.
    pub target: Option<TargetHealth>,
}

/// The settings and facts one check is judged against.
#[derive(Debug, Clone, Copy)]
pub struct Judge<'a> {
    pub spec: &'a RepairSpec,
    /// The fleet's `scaling.warmup`: younger instances are not judged.
    pub warmup: chrono::Duration,
    pub has_target_group: bool,
    /// The capacity decided this pass (with instances condemned earlier not counted).
    pub desired: u32,
    /// `scaling.max_retire_per_cycle`.
    pub max_retire: u32,
    pub now: DateTime<Utc>,
}

/// What a check decides. The memory fields replace the fleet's memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Condemned by this check: not counted as capacity from the next pass, so their
    /// replacements launch; retired once those are in service.
    pub condemn: Vec<(String, Cause)>,
    /// Condemned earlier, and the fleet has its desired capacity in service without
    /// them: retire now.
    pub retire: Vec<String>,
    /// Unhealthy but within the grace: (id, symptom, first seen so).
    pub waiting: Vec<(String, Symptom, DateTime<Utc>)>,
    /// When each unhealthy instance was first seen so, without a break.
    pub unhealthy_since: HashMap<String, DateTime<Utc>>,
    /// Every instance condemned and not yet retiring, with why.
    pub condemned: BTreeMap<String, Cause>,
    /// Instances unhealthy now (within the grace or not), of `fleet` not retiring.
    pub unhealthy: u32,
    pub fleet: u32,
    /// The most that may be unhealthy at once for repair to go on.
    pub limit: u32,
    /// More than `limit` unhealthy: nothing is condemned or retired.
    pub halted: bool,
}

/// What is wrong with `s` now, if anything, or `None` also when it is not judged yet.
fn symptom(j: &Judge, s: &Seen) -> Option<Symptom> {
    let i = s.instance;
    if j.now - i.launched_at < j.warmup {
        return None;
    }
    if matches!(i.state, InstanceState::Stopping | InstanceState::Stopped) {
        return Some(Symptom::NotRunning);
    }
    if j.has_target_group && s.target == Some(TargetHealth::Unhealthy) {
        return Some(Symptom::TargetUnhealthy);
    }
    if s.status_ok == Some(false) {
        return Some(Symptom::StatusChecks);
    }
    None
}

/// In service for the purpose of covering a condemned instance: healthy in the target
/// group, or without one, running, warm and passing its status checks.
fn in_service(j: &Judge, s: &Seen) -> bool {
    let i = s.instance;
    if i.state != InstanceState::Running {
        return false;
    }
    if j.has_target_group {
        s.target == Some(TargetHealth::Healthy)
    } else {
        s.status_ok == Some(true) && j.now - i.launched_at >= j.warmup
    }
}

/// The most instances that may be unhealthy at once: the share of the fleet rounded down
/// (float noise forgiven), but at least one, so a fleet of one or two can heal.
pub fn unhealthy_limit(share: f64, fleet: u32) -> u32 {
    let n = (share * f64::from(fleet) + 1e-9).floor();
    (n.max(0.0) as u32).max(1)
}

/// Judge one check. `seen` holds the fleet's instances that are not retiring, live or
/// stopped; `unhealthy_since` and `condemned` are the memory of earlier checks.
pub fn plan(
    j: &Judge,
    seen: &[Seen],
    unhealthy_since: &HashMap<String, DateTime<Utc>>,
    condemned: &BTreeMap<String, Cause>,
) -> Plan {
    let present: HashSet<&str> = seen.iter().map(|s| s.instance.id.as_str()).collect();
    let mut since = HashMap::new();
    let mut sick: Vec<(&Seen, Symptom, DateTime<Utc>)> = Vec::new();
    for s in seen {
        if let Some(sym) = symptom(j, s) {
            let id = &s.instance.id;
            let first = unhealthy_since.get(id).copied().unwrap_or(j.now);
            since.insert(id.clone(), first);
            sick.push((s, sym, first));
        }
    }
    let mut kept: BTreeMap<String, Cause> = condemned
        .iter()
        .filter(|(id, _)| present.contains(id.as_str()))
        .map(|(id, c)| (id.clone(), *c))
        .collect();
    let fleet = seen.len() as u32;
    let unhealthy = sick.len() as u32;
    let limit = unhealthy_limit(j.spec.max_unhealthy_share.0, fleet);
    let halted = unhealthy > limit;
    let mut out = Plan {
        condemn: Vec::new(),
        retire: Vec::new(),
        waiting: Vec::new(),
        unhealthy_since: since,
        condemned: BTreeMap::new(),
        unhealthy,
        fleet,
        limit,
        halted,
    };
    if halted {
        out.condemned = kept;
        return out;
    }
    let grace = j.spec.unhealthy_grace.chrono();
    for (s, sym, first) in &sick {
        let id = &s.instance.id;
        if kept.contains_key(id) {
            continue;
        }
        if j.now - *first >= grace {
            out.condemn.push((id.clone(), Cause::Unhealthy(*sym)));
        } else {
            out.waiting.push((id.clone(), *sym, *first));
        }
    }
    if let Some(life) = j.spec.max_instance_lifetime {
        let batch = ((f64::from(j.desired) * LIFETIME_BATCH_SHARE).ceil() as u32).max(1);
        let in_flight = kept.values().filter(|c| **c == Cause::Lifetime).count() as u32;
        let sick_ids: HashSet<&str> = sick
            .iter()
            .map(|(s, _, _)| s.instance.id.as_str())
            .collect();
        let mut old: Vec<&Instance> = seen
            .iter()
            .map(|s| s.instance)
            .filter(|i| i.state.is_live() && !kept.contains_key(&i.id))
            .filter(|i| !sick_ids.contains(i.id.as_str()))
            .filter(|i| j.now - i.launched_at >= life.chrono())
            .collect();
        old.sort_by(|a, b| (a.launched_at, &a.id).cmp(&(b.launched_at, &b.id)));
        for i in old
            .into_iter()
            .take(batch.saturating_sub(in_flight) as usize)
        {
            out.condemn.push((i.id.clone(), Cause::Lifetime));
        }
    }
    // Retire what was condemned before this check (the decision this pass already left
    // it out of `current`) once the rest of the fleet is in service at the desired size
    // (in capacity units).
    let newly: HashSet<&str> = out.condemn.iter().map(|(id, _)| id.as_str()).collect();
    let serving = seen
        .iter()
        .filter(|s| !kept.contains_key(&s.instance.id) && !newly.contains(s.instance.id.as_str()))
        .filter(|s| in_service(j, s))
        .map(|s| s.instance.weight.max(1))
        .sum::<u32>();
    if serving >= j.desired && !kept.is_empty() {
        let mut due: Vec<(&String, &Cause)> = kept.iter().collect();
        // Unhealthy ones first: they serve nothing, an expired one still does.
        due.sort_by_key(|(id, c)| (**c == Cause::Lifetime, (*id).clone()));
        out.retire = due
            .into_iter()
            .take(j.max_retire.max(1) as usize)
            .map(|(id, _)| id.clone())
            .collect();
    }
    for id in &out.retire {
        kept.remove(id);
    }
    for (id, c) in &out.condemn {
        kept.insert(id.clone(), *c);
    }
    out.condemned = kept;
    out
}

/// A fleet's repair memory, rebuilt from observation after a restart (see the module
/// documentation): nothing here is saved.
#[derive(Debug, Default)]
pub(super) struct RepairMemory {
    unhealthy_since: HashMap<String, DateTime<Utc>>,
    condemned: BTreeMap<String, Cause>,
    halted: bool,
    checked_at: Option<DateTime<Utc>>,
}

/// The `(current, warm)` the policy should see for a directly launched fleet outside a
/// rollout, from what `summarize` counted: instances condemned by earlier checks are not
/// capacity (their replacements are), and stopped instances not condemned yet still are.
pub(super) fn counted(
    spec: &FleetSpec,
    instances: &[&Instance],
    memory: &RepairMemory,
    current: u32,
    warm: u32,
    now: DateTime<Utc>,
) -> (u32, u32) {
    if !spec.scaling.repair.enabled {
        return (current, warm);
    }
    let warmup = spec.scaling.warmup.chrono();
    let (mut current, mut warm) = (current, warm);
    for i in instances.iter().filter(|i| i.retiring_since.is_none()) {
        let condemned = memory.condemned.contains_key(&i.id);
        let units = i.weight.max(1);
        if i.state.is_live() && condemned {
            current = current.saturating_sub(units);
            if i.state == InstanceState::Running && now - i.launched_at >= warmup {
                warm = warm.saturating_sub(units);
            }
        } else if matches!(i.state, InstanceState::Stopping | InstanceState::Stopped) && !condemned
        {
            current = current.saturating_add(units);
        }
    }
    (current, warm)
}

/// A fleet's repair state in one pass, for `/metrics`, notifications and tests.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RepairReport {
    pub fleet: String,
    /// Instances unhealthy now (within their grace or not).
    pub unhealthy: u32,
    /// Instances of the fleet not retiring (live or stopped).
    pub instances: u32,
    /// The most that may be unhealthy at once for repair to go on.
    pub limit: u32,
    /// Repair is halted: more than `limit` are unhealthy.
    pub halted: bool,
    /// Condemned and awaiting their replacements (ids).
    pub replacing: Vec<String>,
    /// Retired by repair in this pass (ids).
    pub retired: Vec<String>,
}

impl Controller {
    /// Repair one directly launched fleet (see the module documentation). Called by
    /// `act_direct` only outside a rollout, after the decision `d`. Returns the ids that
    /// scaling must leave alone this pass: instances condemned before this pass (the
    /// decision did not count them, so they are neither capacity to retire nor to
    /// register) and those it retires.
    pub(super) async fn repair(
        &mut self,
        spec: &FleetSpec,
        build: &Build,
        instances: &[&Instance],
        d: &Decision,
        now: DateTime<Utc>,
        report: &mut PassReport,
    ) -> HashSet<String> {
        self.terminate_stopped_retirees(spec, instances, report)
            .await;
        let rs = &spec.scaling.repair;
        let state = self.fleets.entry(spec.name.clone()).or_default();
        if !rs.enabled {
            state.repair = RepairMemory::default();
            return HashSet::new();
        }
        let before: HashSet<String> = state.repair.condemned.keys().cloned().collect();
        if state
            .repair
            .checked_at
            .is_some_and(|t| now - t < CHECK_EVERY)
        {
            return before;
        }
        let warmup = spec.scaling.warmup.chrono();
        let candidates: Vec<&Instance> = instances
            .iter()
            .copied()
            .filter(|i| i.retiring_since.is_none())
            .filter(|i| {
                i.state.is_live()
                    || matches!(i.state, InstanceState::Stopping | InstanceState::Stopped)
            })
            .collect();
        // Nothing suspect and the target group reads no unhealthy host: skip the reads.
        // Suspect: anything remembered unhealthy or condemned, a stopped instance (seen in
        // DescribeInstances), or one past its lifetime. An instance that fails its target
        // health check, or an impaired one (which fails it too), is an unhealthy host in
        // the metric once registered; one missing from the group is not held against it.
        let memory = &state.repair;
        let lifetime = rs.max_instance_lifetime.map(|d| d.chrono());
        let quiet = memory.unhealthy_since.is_empty()
            && memory.condemned.is_empty()
            && !memory.halted
            && candidates
                .iter()
                .all(|i| i.state.is_live() && lifetime.is_none_or(|l| now - i.launched_at < l));
        if let Some(tg) = &spec.target_group_arn {
            if quiet && self.health_gate.clear.contains(tg) {
                debug!(fleet = %spec.name, "no unhealthy host in the target group; target health not read");
                let state = self.fleets.entry(spec.name.clone()).or_default();
                state.repair.checked_at = Some(now);
                let fleet = candidates.len() as u32;
                report.repairs.push(RepairReport {
                    fleet: spec.name.clone(),
                    unhealthy: 0,
                    instances: fleet,
                    limit: unhealthy_limit(rs.max_unhealthy_share.0, fleet),
                    halted: false,
                    replacing: vec![],
                    retired: vec![],
                });
                return before;
            }
        }
        let health: Option<HashMap<String, TargetHealth>> = match &spec.target_group_arn {
            Some(tg) => match self.cloud.target_health(tg).await {
                Ok(h) => Some(h.into_iter().collect()),
                Err(e) => {
                    warn!(fleet = %spec.name, error = %e, "cannot read target health; repair judges nothing this pass");
                    note_error(report, &spec.name, &e);
                    return before;
                }
            },
            None => None,
        };
        let ask: Vec<String> = candidates
            .iter()
            .filter(|i| i.state.is_live() && now - i.launched_at >= warmup)
            .filter(|i| {
                health
                    .as_ref()
                    .is_none_or(|h| h.get(&i.id) != Some(&TargetHealth::Healthy))
            })
            .map(|i| i.id.clone())
            .collect();
        let status: HashMap<String, bool> = if ask.is_empty() {
            HashMap::new()
        } else {
            match self.cloud.instance_status(&ask).await {
                Ok(s) => s.into_iter().collect(),
                Err(e) => {
                    warn!(fleet = %spec.name, error = %e, "cannot read EC2 status checks; repair judges nothing this pass");
                    note_error(report, &spec.name, &e);
                    return before;
                }
            }
        };
        let seen: Vec<Seen> = candidates
            .iter()
            .map(|i| Seen {
                instance: i,
                status_ok: status.get(&i.id).copied(),
                target: health.as_ref().and_then(|h| h.get(&i.id).copied()),
            })
            .collect();
        let judge = Judge {
            spec: rs,
            warmup,
            has_target_group: spec.target_group_arn.is_some(),
            desired: d.desired,
            max_retire: spec.scaling.max_retire_per_cycle,
            now,
        };
        let state = self.fleets.entry(spec.name.clone()).or_default();
        let condemned_before = state.repair.condemned.clone();
        let p = plan(
            &judge,
            &seen,
            &state.repair.unhealthy_since,
            &condemned_before,
        );
        let was_halted = state.repair.halted;
        state.repair = RepairMemory {
            unhealthy_since: p.unhealthy_since.clone(),
            condemned: p.condemned.clone(),
            halted: p.halted,
            checked_at: Some(now),
        };
        let share = rs.max_unhealthy_share.0;
        if p.halted && !was_halted {
            error!(fleet = %spec.name, unhealthy = p.unhealthy, instances = p.fleet, limit = p.limit, max_unhealthy_share = share, "repair halted: {} of {} instances unhealthy at once, more than {}; nothing is replaced until they recover or someone looks (a bad build, a dependency down?)", p.unhealthy, p.fleet, p.limit);
        } else if p.halted {
            warn!(fleet = %spec.name, unhealthy = p.unhealthy, instances = p.fleet, limit = p.limit, "repair still halted: {} of {} instances unhealthy, more than {}", p.unhealthy, p.fleet, p.limit);
        } else if was_halted {
            info!(fleet = %spec.name, unhealthy = p.unhealthy, instances = p.fleet, limit = p.limit, "repair resumed: {} of {} instances unhealthy, within the limit of {}", p.unhealthy, p.fleet, p.limit);
        }
        for (id, sym, first) in &p.waiting {
            debug!(fleet = %spec.name, instance = %id, since = %first, "repair: {sym}; within unhealthy_grace, waiting");
        }
        for (id, cause) in &p.condemn {
            warn!(fleet = %spec.name, instance = %id, cause = %cause, "repair: {id} is {cause}; from the next pass it does not count as capacity, a replacement launches and it is retired once that is in service");
        }
        let mut retired = Vec::new();
        if !p.retire.is_empty() {
            let victims: Vec<&Instance> = candidates
                .iter()
                .copied()
                .filter(|i| p.retire.contains(&i.id))
                .collect();
            info!(fleet = %spec.name, ids = ?p.retire, desired = d.desired, "repair: replacements are in service; retiring what they replace");
            let n = crate::cloud::units(victims.iter().copied());
            retired = self.retire(spec, &build.id, &victims, n, now, report).await;
            // One whose retiring tag could not be set stays condemned (and uncounted), so
            // the next check tries again instead of the policy counting it back in.
            let state = self.fleets.entry(spec.name.clone()).or_default();
            for id in p.retire.iter().filter(|id| !retired.contains(id)) {
                if let Some(cause) = condemned_before.get(id) {
                    state.repair.condemned.insert(id.clone(), *cause);
                }
            }
        }
        let replacing = self
            .fleets
            .get(&spec.name)
            .map(|s| s.repair.condemned.keys().cloned().collect())
            .unwrap_or_default();
        report.repairs.push(RepairReport {
            fleet: spec.name.clone(),
            unhealthy: p.unhealthy,
            instances: p.fleet,
            limit: p.limit,
            halted: p.halted,
            replacing,
            retired,
        });
        before
    }

    /// A retiring instance that is stopped serves nothing and has nothing to drain, and
    /// `finish_retirements` (which follows live instances) would never end it: terminate
    /// it. Safe to repeat: terminating a terminating instance is success.
    async fn terminate_stopped_retirees(
        &mut self,
        spec: &FleetSpec,
        instances: &[&Instance],
        report: &mut PassReport,
    ) {
        let ids: Vec<String> = instances
            .iter()
            .filter(|i| i.retiring_since.is_some())
            .filter(|i| matches!(i.state, InstanceState::Stopping | InstanceState::Stopped))
            .map(|i| i.id.clone())
            .collect();
        if ids.is_empty() {
            return;
        }
        self.terminate(
            spec,
            ids,
            "retired while stopped (nothing to drain)",
            report,
        )
        .await;
    }
}

#[cfg(test)]
mod tests;
