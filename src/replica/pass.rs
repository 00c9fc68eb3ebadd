//! A replica's part of each pass and of each API request: take and renew leases before a
//! pass (taking in the state of fleets just taken over), export each owned fleet's state
//! after it, and bring in or share the build ledger's facts around admissions and
//! approvals. The daemon (`crate::daemon`) calls these; the leases are [`super::Replica`]'s.

use super::Replica;
use crate::clock::Clock;
use crate::controller::requests::{Accepted, DeployRequest, Refusal};
use crate::controller::Controller;
use crate::lease::LeaseError;
use crate::store::{Approval, Outcome};
use std::collections::HashSet;
use std::time::Duration;
use tracing::{error, info, warn};

/// Admit a deploy on a replica: first bring in from the shared table what admission reads
/// (the passes and approvals recorded on any replica), then admit it here; an accepted
/// rollout is exported at once, not after the next pass, so a successor sees it even if
/// this replica dies now.
pub(crate) async fn admit_deploy(
    controller: &mut Controller,
    r: &Replica,
    req: &DeployRequest,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Accepted, Refusal> {
    let pulled = tokio::time::timeout(
        SHARED_LEDGER_TIMEOUT,
        pull_shared_ledger(controller, r, req),
    )
    .await
    .unwrap_or_else(|_| {
        Err(LeaseError::SharedItem(format!(
            "no answer within {SHARED_LEDGER_TIMEOUT:?}"
        )))
    });
    if let Err(e) = pulled {
        return Err(Refusal::Internal(format!(
            "cannot read the shared ledger (DynamoDB): {e}"
        )));
    }
    let answer = controller.request_deploy(req, now);
    if let Ok(Accepted::Started { fleet, .. }) = &answer {
        match controller.store().export_fleet(fleet) {
            Ok(state) => {
                if !r.export(fleet, &state, now).await {
                    warn!(fleet = %fleet, "accepted rollout not exported yet (lease not held)");
                }
            }
            Err(e) => error!(fleet = %fleet, error = %e, "cannot read the fleet's state to export"),
        }
    }
    answer
}

/// Share an approval recorded here with every replica; a failure asks for the approval
/// again (it is idempotent).
pub(crate) async fn share_approval(r: &Replica, a: &Approval) -> Result<(), Refusal> {
    match tokio::time::timeout(SHARED_LEDGER_TIMEOUT, r.share_approval(a)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {SHARED_LEDGER_TIMEOUT:?}")),
    }
    .map_err(|e| {
        Refusal::Internal(format!(
            "approval recorded on this replica but not shared with the others (DynamoDB): {e}; approve again"
        ))
    })
}

/// Requests wait at most this long on the shared table (the control loop waits with them).
const SHARED_LEDGER_TIMEOUT: Duration = Duration::from_secs(10);

/// Replicas, before admitting a deploy: bring in from the shared table what the admission
/// check reads, the passes of the environments the build must have gone through and the
/// approvals of the build, wherever they were recorded. A pass not there yet is looked for
/// once more a moment later: the replica that ran it shares it at the end of its pass,
/// which may be just after `deploy --wait` saw the rollout succeed.
async fn pull_shared_ledger(
    controller: &mut Controller,
    r: &Replica,
    req: &DeployRequest,
) -> Result<(), LeaseError> {
    let Ok(spec) = crate::deploy::admit::find_fleet(controller.config(), &req.fleet, &req.env)
    else {
        return Ok(()); // refused by the request itself, with its own message
    };
    let Ok(build) = crate::deploy::Build::parse(spec, &req.build, None) else {
        return Ok(());
    };
    let (app, requires, approval) = (
        spec.app().to_string(),
        spec.deploy.promotion.requires.clone(),
        spec.deploy.promotion.approval,
    );
    if !controller.owns(&spec.name) {
        return Ok(()); // refused as another replica's, without reading anything
    }
    let store = controller.store().clone();
    for attempt in 0..2 {
        let mut missing = false;
        for env in &requires {
            if store.passed(&app, env, &build.id).unwrap_or(false) {
                continue;
            }
            match r.shared_pass(&app, env, &build.id).await? {
                Some(d) => {
                    if let Err(e) = store.upsert_deployment(&d) {
                        error!(error = %e, "cannot record a shared ledger row");
                    }
                }
                None => missing = true,
            }
        }
        if !missing || attempt == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    if approval {
        for a in r.shared_approvals(&app, &build.id).await? {
            if let Err(e) = store.approve(&a) {
                error!(error = %e, "cannot record a shared approval");
            }
        }
    }
    Ok(())
}

/// Replicas, before a pass: renew and take leases; import the state of fleets just taken
/// over. Returns the fleets this replica acts on in this pass.
pub(crate) async fn take_leases(
    r: &Replica,
    controller: &mut Controller,
    watch: &mut crate::notify::Watch,
    clock: &dyn Clock,
) -> Vec<String> {
    let mut names: Vec<String> = controller
        .config()
        .fleets
        .iter()
        .map(|f| f.name.clone())
        .collect();
    names.push(crate::fence::GC_LEASE.to_string());
    let (owned, taken) = r.tick(&names, clock.now()).await;
    for fleet in taken.iter().filter(|f| *f != crate::fence::GC_LEASE) {
        if let Some(state) = r.import(fleet).await {
            let store = controller.store();
            match store.import_fleet(fleet, &state, clock.now()) {
                Ok(()) => {
                    info!(fleet = %fleet, "took over the fleet's state from the previous owner");
                    // What the previous owner ran, it told about.
                    if let Ok(rows) = store.fleet_history(fleet, 100) {
                        watch.mark_told(&rows);
                    }
                }
                Err(e) => error!(fleet = %fleet, error = %e, "cannot import the fleet's state"),
            }
        }
        controller.forget_fleet(fleet);
    }
    let list: Vec<String> = owned.iter().cloned().collect();
    controller.set_owned(Some(owned));
    list
}

/// Replicas, after a pass: export each owned fleet's state (fenced) for a successor.
pub(crate) async fn export_fleets(
    r: &Replica,
    controller: &Controller,
    owned: &[String],
    shared: &mut HashSet<i64>,
    clock: &dyn Clock,
) {
    let store = controller.store();
    for fleet in owned.iter().filter(|f| *f != crate::fence::GC_LEASE) {
        match store.export_fleet(fleet) {
            Ok(state) => {
                if !r.export(fleet, &state, clock.now()).await {
                    warn!(fleet = %fleet, "state not exported (the lease is no longer held)");
                }
            }
            Err(e) => error!(fleet = %fleet, error = %e, "cannot read the fleet's state to export"),
        }
        // Builds that went live here, for promotion checks on every replica.
        let rows = match store.fleet_history(fleet, 20) {
            Ok(rows) => rows,
            Err(e) => {
                error!(fleet = %fleet, error = %e, "cannot read the ledger to share it");
                continue;
            }
        };
        for d in rows
            .iter()
            .filter(|d| d.fleet == *fleet && d.outcome == Outcome::Succeeded)
        {
            if shared.contains(&d.id) {
                continue;
            }
            match r.share_pass(d).await {
                Ok(()) => {
                    shared.insert(d.id);
                }
                Err(e) => {
                    warn!(fleet = %fleet, deployment = d.id, error = %e, "cannot share the ledger row; will retry")
                }
            }
        }
    }
}
