//! Running as one of several replicas: which fleets this daemon may act on, from leases in
//! DynamoDB (see [`crate::lease`]), and the fence every action passes first.
//!
//! Each pass: heartbeat; renew the leases held; take free or expired leases of the fleets
//! this replica is preferred for (or any lease its preferred owner has left expired for a
//! whole TTL). A fleet newly taken has its state (desired capacity, rollout and rollout
//! memory) imported from the shared state table, where its previous owner exported it
//! after each pass with a fenced write. Before each change to the cloud, the action
//! journal asks [`Fence::allow`], which writes the intent with a fenced write: a replica
//! whose lease has lapsed or moved cannot, and does not act.
//!
//! The build ledger's facts that other fleets depend on are shared too: a build that went
//! live in an environment (promotion checks it) and approvals. They are written when
//! they happen and read when a deploy is admitted, so a build that passed staging on one
//! replica can be promoted on another, and an approval given to any replica counts.

pub mod pass;

use crate::clock::Clock;
use crate::fence::Fence;
pub use crate::fence::GC_LEASE;
use crate::lease::{preferred, Lease, LeaseError, LeaseStore};
use crate::store::{Approval, Deployment, Handover, Outcome};
use chrono::{DateTime, Utc};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use tracing::{info, warn};

pub struct Replica {
    leases: Arc<dyn LeaseStore>,
    clock: Arc<dyn Clock>,
    ttl: chrono::Duration,
    margin: chrono::Duration,
    held: Mutex<HashMap<String, Lease>>,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("id", &self.leases.replica())
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl Replica {
    /// A replica acting through `leases` (its id is theirs), whose leases last `ttl`, on
    /// `clock` (the daemon's).
    pub fn new(leases: Arc<dyn LeaseStore>, ttl: chrono::Duration, clock: Arc<dyn Clock>) -> Self {
        Self {
            leases,
            clock,
            ttl,
            margin: ttl / 3,
            held: Mutex::new(HashMap::new()),
        }
    }

    pub fn id(&self) -> &str {
        self.leases.replica()
    }

    /// How often leases must be renewed at least.
    pub fn renew_every(&self) -> std::time::Duration {
        (self.ttl / 3)
            .to_std()
            .unwrap_or(std::time::Duration::from_secs(1))
    }

    fn held(&self) -> HashMap<String, Lease> {
        self.held.lock().map(|h| h.clone()).unwrap_or_default()
    }

    fn set_held(&self, fleet: &str, lease: Option<Lease>) {
        if let Ok(mut h) = self.held.lock() {
            match lease {
                Some(l) => h.insert(fleet.to_string(), l),
                None => h.remove(fleet),
            };
        }
    }

    /// Renew and take leases. Returns (fleets this replica may act on now, fleets it took
    /// this time and must import the state of).
    pub async fn tick(
        &self,
        fleets: &[String],
        now: DateTime<Utc>,
    ) -> (HashSet<String>, Vec<String>) {
        if let Err(e) = self.leases.heartbeat(now).await {
            warn!(error = %e, "cannot heartbeat; acting on no fleet this pass");
            return (HashSet::new(), Vec::new());
        }
        let (live, leases) = match self.leases.snapshot(now).await {
            Ok(snap) => snap,
            Err(e) => {
                warn!(error = %e, "cannot read the lease table; acting on no fleet this pass");
                return (HashSet::new(), Vec::new());
            }
        };
        let held = self.held();
        let mut taken = Vec::new();
        for fleet in fleets {
            if let Some(lease) = held.get(fleet) {
                match self.leases.renew(lease, now).await {
                    Ok(Some(l)) => self.set_held(fleet, Some(l)),
                    Ok(None) => {
                        warn!(fleet = %fleet, "lease lost; no longer acting on this fleet");
                        self.set_held(fleet, None);
                    }
                    Err(e) => warn!(fleet = %fleet, error = %e, "cannot renew the lease"),
                }
                continue;
            }
            let current = leases.get(fleet).cloned();
            let mine = preferred(fleet, &live) == Some(self.id());
            let want = match &current {
                None => mine,
                Some(l) if l.expires >= now => false,
                Some(l) => mine || now - l.expires > self.ttl,
            };
            if !want {
                continue;
            }
            match self.leases.take(fleet, now).await {
                Ok(Some(l)) => {
                    info!(fleet = %fleet, version = l.version, previous = ?current.map(|c| c.owner), "lease taken");
                    self.set_held(fleet, Some(l));
                    taken.push(fleet.clone());
                }
                Ok(None) => {}
                Err(e) => warn!(fleet = %fleet, error = %e, "cannot take the lease"),
            }
        }
        let owned = self
            .held()
            .into_iter()
            .filter(|(_, l)| l.usable(self.id(), now, self.margin))
            .map(|(f, _)| f)
            .collect();
        (owned, taken)
    }

    /// Write a fleet's state for whoever holds its lease next (only while this one does).
    /// `false` if it was not written (the lease is not held, or the store failed).
    pub async fn export(&self, fleet: &str, state: &Handover, now: DateTime<Utc>) -> bool {
        let Some(lease) = self.held().get(fleet).cloned() else {
            return false;
        };
        let body = match serde_json::to_string(state) {
            Ok(b) => b,
            Err(e) => {
                warn!(fleet, error = %e, "cannot encode the fleet's state");
                return false;
            }
        };
        match self
            .leases
            .fenced_put(&lease, &format!("state#{fleet}"), &body, now)
            .await
        {
            Ok(ok) => ok,
            Err(e) => {
                warn!(fleet, error = %e, "cannot export the fleet's state");
                false
            }
        }
    }

    /// The state the previous owner of `fleet` exported, if any could be read.
    pub async fn import(&self, fleet: &str) -> Option<Handover> {
        let body = match self.leases.get_state(&format!("state#{fleet}")).await {
            Ok(s) => s.map(|(body, _, _)| body)?,
            Err(e) => {
                warn!(fleet, error = %e, "cannot read the fleet's exported state");
                return None;
            }
        };
        match serde_json::from_str(&body) {
            Ok(h) => Some(h),
            Err(e) => {
                warn!(fleet, error = %e, "the fleet's exported state does not parse; starting from this replica's own");
                None
            }
        }
    }

    /// Record in the shared table that `d` went live (only successes are shared: they
    /// are what promotion asks for). Idempotent.
    pub async fn share_pass(&self, d: &Deployment) -> Result<(), LeaseError> {
        if d.outcome != Outcome::Succeeded {
            return Ok(());
        }
        let body = serde_json::to_string(d).map_err(|e| LeaseError::SharedItem(e.to_string()))?;
        self.leases
            .put_fact(&pass_key(&d.app, &d.env, &d.build), &body)
            .await
    }

    /// The deployment that made `build` of `app` live in `env`, on any replica.
    pub async fn shared_pass(
        &self,
        app: &str,
        env: &str,
        build: &str,
    ) -> Result<Option<Deployment>, LeaseError> {
        match self.leases.get_fact(&pass_key(app, env, build)).await? {
            Some(body) => serde_json::from_str(&body)
                .map(Some)
                .map_err(|e| LeaseError::SharedItem(format!("ledger row: {e}"))),
            None => Ok(None),
        }
    }

    /// Add an approval to the shared set of `app`'s `build`.
    pub async fn share_approval(&self, a: &Approval) -> Result<(), LeaseError> {
        let body = serde_json::to_string(a).map_err(|e| LeaseError::SharedItem(e.to_string()))?;
        self.leases
            .add_member(&approval_key(&a.app, &a.build), &body)
            .await
    }

    /// Every approval of `app`'s `build`, given to any replica.
    pub async fn shared_approvals(
        &self,
        app: &str,
        build: &str,
    ) -> Result<Vec<Approval>, LeaseError> {
        self.leases
            .members(&approval_key(app, build))
            .await?
            .iter()
            .map(|m| {
                serde_json::from_str(m)
                    .map_err(|e| LeaseError::SharedItem(format!("approval: {e}")))
            })
            .collect()
    }

    /// Give every lease up (clean shutdown), so others take over without waiting.
    pub async fn release_all(&self) {
        for (fleet, lease) in self.held() {
            if let Err(e) = self.leases.release(&lease).await {
                warn!(fleet = %fleet, error = %e, "cannot release the lease");
            }
            self.set_held(&fleet, None);
        }
    }
}

/// Keys of shared facts. The parts are JSON-encoded, so no app, environment or build name
/// can make two keys collide.
fn pass_key(app: &str, env: &str, build: &str) -> String {
    format!("ledger#{}", serde_json::json!([app, env, build]))
}

fn approval_key(app: &str, build: &str) -> String {
    format!("approval#{}", serde_json::json!([app, build]))
}

#[async_trait::async_trait]
impl Fence for Replica {
    async fn allow(&self, fleet: &str, detail: &str) -> bool {
        let now = self.clock.now();
        let Some(lease) = self.held().get(fleet).cloned() else {
            warn!(
                fleet,
                detail, "not acting: this replica holds no lease on the fleet"
            );
            return false;
        };
        if !lease.usable(self.id(), now, chrono::Duration::zero()) {
            warn!(fleet, detail, "not acting: the lease has expired");
            return false;
        }
        match self
            .leases
            .fenced_put(&lease, &format!("intent#{fleet}"), detail, now)
            .await
        {
            Ok(true) => true,
            Ok(false) => {
                warn!(
                    fleet,
                    detail, "not acting: the lease moved to another replica"
                );
                self.set_held(fleet, None);
                false
            }
            Err(e) => {
                warn!(fleet, detail, error = %e, "not acting: cannot write the fenced intent");
                false
            }
        }
    }
}

/// Takeover, fencing and handover in process, on the in-memory lease store and a virtual
/// clock (moto covers the DynamoDB mapping: `tests/it/replicas_moto.rs`).
#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::VirtualClock;
    use crate::lease::memory::MemoryLeases;
    use chrono::TimeZone;

    const TTL: chrono::Duration = chrono::Duration::seconds(30);

    struct Two {
        clock: Arc<VirtualClock>,
        store: MemoryLeases,
        a: Replica,
        b: Replica,
    }

    fn two() -> Two {
        let t0 = Utc
            .with_ymd_and_hms(2026, 1, 5, 9, 0, 0)
            .single()
            .expect("time");
        let clock = Arc::new(VirtualClock::new(t0));
        let store = MemoryLeases::new("a", TTL);
        let a = Replica::new(Arc::new(store.clone()), TTL, clock.clone());
        let b = Replica::new(Arc::new(store.handle("b")), TTL, clock.clone());
        Two { clock, store, a, b }
    }

    fn fleets() -> Vec<String> {
        (0..8).map(|i| format!("fleet-{i}")).collect()
    }

    fn sorted(s: &HashSet<String>) -> Vec<String> {
        let mut v: Vec<String> = s.iter().cloned().collect();
        v.sort();
        v
    }

    #[tokio::test]
    async fn live_replicas_split_the_fleets_and_never_both_hold_one() {
        let w = two();
        let now = w.clock.now();
        // Both announce themselves, then each takes the fleets it is preferred for.
        w.a.tick(&[], now).await;
        w.b.tick(&[], now).await;
        let (a, _) = w.a.tick(&fleets(), now).await;
        let (b, _) = w.b.tick(&fleets(), now).await;
        assert!(a.is_disjoint(&b), "{a:?} and {b:?}");
        assert_eq!(a.len() + b.len(), fleets().len());
        assert!(!a.is_empty() && !b.is_empty(), "{a:?} {b:?}");
        // Renewing passes keep the same split.
        w.clock.advance(std::time::Duration::from_secs(10));
        let now = w.clock.now();
        assert_eq!(w.a.tick(&fleets(), now).await.0, a);
        assert_eq!(w.b.tick(&fleets(), now).await.0, b);
    }

    #[tokio::test]
    async fn a_paused_replica_is_taken_over_and_fenced_out_and_its_state_handed_over() {
        let w = two();
        let now = w.clock.now();
        // Only a is alive: it takes every fleet; b, coming later, takes none that is held.
        let (a, taken) = w.a.tick(&fleets(), now).await;
        assert_eq!(a.len(), fleets().len());
        assert_eq!(taken.len(), fleets().len());
        assert!(w.b.tick(&fleets(), now).await.0.is_empty());
        assert!(w.a.allow("fleet-0", "launch 1").await);
        let five = Handover {
            base_desired: Some(5),
            ..Handover::default()
        };
        assert!(w.a.export("fleet-0", &five, now).await);
        // a pauses (a GC stop, a network partition) past its TTL; b takes over.
        w.clock.advance(std::time::Duration::from_secs(31));
        let now = w.clock.now();
        let (b, taken) = w.b.tick(&fleets(), now).await;
        assert_eq!(sorted(&b), fleets());
        assert_eq!(taken.len(), fleets().len());
        assert_eq!(w.b.import("fleet-0").await, Some(five.clone()));
        // a wakes up still believing in its leases: it may not act, nor overwrite the
        // state b now owns.
        assert!(!w.a.allow("fleet-0", "launch 1").await);
        let nine = Handover {
            base_desired: Some(9),
            ..Handover::default()
        };
        assert!(!w.a.export("fleet-0", &nine, now).await);
        assert_eq!(w.b.import("fleet-0").await, Some(five));
        // Even a's stale lease with an expiry it thinks is ahead is fenced by version.
        let stale = Lease {
            fleet: "fleet-1".into(),
            owner: "a".into(),
            version: 1,
            expires: now + TTL,
        };
        assert!(!w
            .store
            .fenced_put(&stale, "intent#fleet-1", "launch 1", now)
            .await
            .expect("store"));
        let held = w
            .store
            .current("fleet-1")
            .await
            .expect("store")
            .expect("lease");
        assert_eq!((held.owner.as_str(), held.version), ("b", 2));
        assert!(w.b.allow("fleet-1", "launch 1").await);
        // a's next tick sees it lost them all.
        assert!(w.a.tick(&fleets(), now).await.0.is_empty());
    }

    #[tokio::test]
    async fn a_clean_shutdown_hands_every_fleet_over_at_once() {
        let w = two();
        let now = w.clock.now();
        w.a.tick(&fleets(), now).await;
        w.b.tick(&[], now).await;
        w.a.release_all().await;
        // No TTL to wait out: b takes everything on its next pass.
        let (b, _) = w.b.tick(&fleets(), now).await;
        assert_eq!(sorted(&b), fleets());
        assert!(!w.a.allow("fleet-0", "launch 1").await);
    }

    #[tokio::test]
    async fn an_unreachable_lease_store_means_acting_on_no_fleet() {
        let w = two();
        let now = w.clock.now();
        assert_eq!(w.a.tick(&fleets(), now).await.0.len(), fleets().len());
        w.store.fail_next(1);
        w.clock.advance(std::time::Duration::from_secs(5));
        let (owned, taken) = w.a.tick(&fleets(), w.clock.now()).await;
        assert!(owned.is_empty() && taken.is_empty());
        // Back: the leases it still holds are renewed, nothing is taken twice.
        let (owned, taken) = w.a.tick(&fleets(), w.clock.now()).await;
        assert_eq!(owned.len(), fleets().len());
        assert!(taken.is_empty());
    }
}
