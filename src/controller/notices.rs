//! EC2's notices, read from the interruption queue every pass (see
//! [`crate::cloud::interruption`]):
//!
//! - a **Spot interruption warning** (two minutes): the instance is tagged retiring at
//!   once, so this pass no longer counts it and launches its replacement (from a pool
//!   not out of capacity), and it is deregistered and drained like any retirement;
//! - a **rebalance recommendation** or an AWS Health **scheduled change**: the instance
//!   is tagged `coxswain:replace`; it stops counting as capacity, so its replacement
//!   launches first, and it is retired once the fleet has its desired capacity in service
//!   without it (launch before terminate);
//! - a **state change** to stopping, shutting-down or terminated: an instance launched
//!   and not listed yet is no longer counted as launched.
//!
//! A message is deleted once handled, or when it is about no instance of this controller
//! (or is not an EC2 notice). One about a fleet another replica holds the lease of is left
//! for that replica. The tags are the durable part: a restarted daemon needs no message
//! again.

use super::{note_error, Action, Controller, PassReport};
use crate::cloud::interruption::{self, NoticeKind};
use crate::cloud::{Instance, InstanceState};
use crate::deploy::Build;
use crate::manifest::FleetSpec;
use crate::policy::Decision;
use chrono::{DateTime, Utc};
use tracing::{info, warn};

/// Messages read per pass at most (10 per ReceiveMessage call).
const MAX_PER_PASS: usize = 100;

impl Controller {
    /// Read the interruption queue and act on what it says about `instances` (this
    /// pass's listing, updated in place so the pass counts what the notices changed).
    pub(super) async fn read_notices(
        &mut self,
        instances: &mut [Instance],
        now: DateTime<Utc>,
        report: &mut PassReport,
    ) {
        if self.dry_run {
            return;
        }
        let cloud = self.cloud.clone();
        let messages = match cloud.receive_notices(MAX_PER_PASS).await {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %e, "cannot read the interruption queue; notices wait for the next pass");
                note_error(report, "interruption queue", &e);
                return;
            }
        };
        let mut done = Vec::new();
        for m in messages {
            let notices = match interruption::parse(&m.body) {
                Ok(n) => n,
                Err(e) => {
                    warn!(error = %e, "a message on the interruption queue is not an EC2 notice coxswain reads; deleting it");
                    done.push(m.receipt);
                    continue;
                }
            };
            let mut handled = true;
            for n in notices {
                if let NoticeKind::StateChange { state } = &n.kind {
                    if !matches!(state.as_str(), "pending" | "running") {
                        self.inflight.remove(&n.instance_id);
                    }
                    continue;
                }
                let Some(i) = instances.iter_mut().find(|i| i.id == n.instance_id) else {
                    continue; // not ours, or already gone
                };
                if self.owned.as_ref().is_some_and(|o| !o.contains(&i.fleet)) {
                    handled = false; // another replica's fleet: leave it for that replica
                    continue;
                }
                if !i.state.is_live() || i.retiring_since.is_some() {
                    continue;
                }
                let ids = vec![i.id.clone()];
                let (result, what) = match &n.kind {
                    NoticeKind::SpotInterruption { action } => (
                        cloud.mark_retiring(&ids, now).await,
                        format!("Spot interruption warning ({action} in two minutes)"),
                    ),
                    kind if i.replacing.is_none() => {
                        let reason = match kind {
                            NoticeKind::Scheduled { event_type } => {
                                format!("scheduled event {event_type}")
                            }
                            _ => "rebalance recommendation".to_string(),
                        };
                        let r = cloud.mark_replacing(&ids, &reason, now).await;
                        (r, reason)
                    }
                    _ => continue,
                };
                match result {
                    Ok(()) => {
                        if n.kind.replace_early() {
                            i.replacing = Some(what.clone());
                            info!(fleet = %i.fleet, id = %i.id, notice = %what, "action: EC2 gave notice; launching a replacement first, then retiring it");
                        } else {
                            i.retiring_since = Some(now);
                            warn!(fleet = %i.fleet, id = %i.id, notice = %what, "action: EC2 gave notice; replacing it now and draining it before it goes");
                            report.actions.push(Action::MarkRetiring {
                                fleet: i.fleet.clone(),
                                ids: ids.clone(),
                            });
                        }
                        report.actions.push(Action::Notice {
                            fleet: i.fleet.clone(),
                            id: i.id.clone(),
                            notice: what,
                        });
                    }
                    Err(e) => {
                        warn!(fleet = %i.fleet, id = %i.id, error = %e, "cannot act on EC2's notice; it stays on the queue");
                        note_error(report, &i.fleet.clone(), &e);
                        handled = false;
                    }
                }
            }
            if handled {
                done.push(m.receipt);
            }
        }
        if !done.is_empty() {
            if let Err(e) = cloud.delete_notices(&done).await {
                warn!(error = %e, "cannot delete handled notices; they will be read again (handling them is idempotent)");
            }
        }
    }

    /// Retire the instances EC2 asked to have replaced once the fleet has the capacity it
    /// wants (its decision before the global cap) in service without them: running, warm,
    /// not retiring and (with a target group) registered.
    pub(super) async fn retire_replaced(
        &mut self,
        spec: &FleetSpec,
        build: &Build,
        instances: &[&Instance],
        d: &Decision,
        now: DateTime<Utc>,
        report: &mut PassReport,
    ) {
        let replaced: Vec<&Instance> = instances
            .iter()
            .copied()
            .filter(|i| i.state.is_live() && i.retiring_since.is_none() && i.replacing.is_some())
            .collect();
        if replaced.is_empty() {
            return;
        }
        let warmup = spec.scaling.warmup.chrono();
        let registered = self
            .fleets
            .get(&spec.name)
            .map(|s| s.registered.clone())
            .unwrap_or_default();
        let serving = crate::cloud::units(instances.iter().copied().filter(|i| {
            i.state == InstanceState::Running
                && i.retiring_since.is_none()
                && i.replacing.is_none()
                && now - i.launched_at >= warmup
                && (spec.target_group_arn.is_none() || registered.contains(&i.id))
        }));
        // What the fleet wants, before the global cap: a cap that holds the replacement
        // back must not let the instance go without one.
        let wanted = d.desired.max(d.recommended.min(spec.capacity.max));
        if serving < wanted {
            return;
        }
        // At most `max_retire_per_cycle` units a pass, and at least one instance.
        let most = spec.scaling.max_retire_per_cycle.max(1);
        let mut batch: Vec<&Instance> = Vec::new();
        for i in replaced {
            if !batch.is_empty()
                && crate::cloud::units(batch.iter().copied()) + i.weight.max(1) > most
            {
                break;
            }
            batch.push(i);
        }
        let n = crate::cloud::units(batch.iter().copied());
        info!(fleet = %spec.name, instances = batch.len(), units = n, serving, desired = d.desired, "the replacements are in service; retiring the instances they replace");
        self.retire(spec, &build.id, &batch, n, now, report).await;
    }
}
