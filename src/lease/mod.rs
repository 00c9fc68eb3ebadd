//! Replicas' leases: one per fleet, with fencing, behind the [`LeaseStore`] trait. The
//! DynamoDB implementation is `cloud::aws::leases::DynamoLeases`; [`memory::MemoryLeases`]
//! is an in-memory one with the same conditions, for fast in-process tests on an injected
//! clock.
//!
//! One lease per fleet: `{fleet, owner, version, expires}`.
//! - **Taking** a lease succeeds only if the lease is free or expired; it bumps `version`,
//!   the fencing token. Two replicas racing for one lease: exactly one wins.
//! - **Renewing** succeeds only for the owner holding the current `version`, before expiry.
//! - **Fenced writes**: a state write succeeds only while the lease is this owner's, at
//!   this version, not expired. A replica that has lost its lease, or whose lease was taken
//!   over while it was paused, cannot write; the daemon writes its intent this way before
//!   every action, so such a replica never acts.
//! - **Spreading work**: replicas heartbeat; each fleet prefers the live replica with the
//!   highest rendezvous hash of (fleet, replica), so fleets spread across replicas and
//!   move only when replicas come or go.

pub mod memory;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// A lease held (or seen) on one fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub fleet: String,
    pub owner: String,
    /// The fencing token: bumped each time the lease changes hands.
    pub version: i64,
    pub expires: DateTime<Utc>,
}

impl Lease {
    /// Held and not within `margin` of expiring: safe to start an action.
    pub fn usable(&self, me: &str, now: DateTime<Utc>, margin: chrono::Duration) -> bool {
        self.owner == me && now + margin < self.expires
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The lease store refused or failed a call. `code` is the service's error code
    /// (`ProvisionedThroughputExceededException`, ...) when it gave one; the source is the
    /// SDK's error.
    #[error("DynamoDB {operation}: {message}")]
    Service {
        operation: &'static str,
        code: Option<String>,
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    #[error("the lease item for {0} is malformed")]
    Malformed(String),
    #[error("a shared ledger item is malformed: {0}")]
    SharedItem(String),
}

impl LeaseError {
    /// The service's error code, if the store gave one.
    pub fn code(&self) -> Option<&str> {
        match self {
            LeaseError::Service { code, .. } => code.as_deref(),
            _ => None,
        }
    }
}

/// One item of the state table: (body, the fence it was written under, the writer).
pub type StateItem = (String, i64, String);

/// Where leases, heartbeats and the shared state live. Every method that changes a lease
/// is conditional, as documented on it; `now` is the caller's clock (injected).
#[async_trait::async_trait]
pub trait LeaseStore: Send + Sync {
    /// This replica's id.
    fn replica(&self) -> &str;

    /// Take `fleet`'s lease if it is free or expired (version + 1, expiring at
    /// `now + ttl`). `None` if another replica holds it.
    async fn take(&self, fleet: &str, now: DateTime<Utc>) -> Result<Option<Lease>, LeaseError>;

    /// Extend a lease this replica holds, if it is still this one's, at its version, not
    /// expired. `None` if it was lost (expired, or taken over).
    async fn renew(&self, lease: &Lease, now: DateTime<Utc>) -> Result<Option<Lease>, LeaseError>;

    /// Give a lease up (on shutdown) so another replica can take it at once. Nothing if it
    /// is no longer this one's.
    async fn release(&self, lease: &Lease) -> Result<(), LeaseError>;

    /// Write `body` under `key` in the state table only while `lease` is still this
    /// replica's, unexpired, at its version. `false` if the fence stopped it.
    async fn fenced_put(
        &self,
        lease: &Lease,
        key: &str,
        body: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, LeaseError>;

    /// Read a state item written by [`LeaseStore::fenced_put`].
    async fn get_state(&self, key: &str) -> Result<Option<StateItem>, LeaseError>;

    /// Shared facts (the build ledger's passes, approvals) only ever grow and every write
    /// is idempotent, so they need no fence: any replica may add one.
    async fn put_fact(&self, key: &str, body: &str) -> Result<(), LeaseError>;

    /// The body of a fact written by [`LeaseStore::put_fact`].
    async fn get_fact(&self, key: &str) -> Result<Option<String>, LeaseError>;

    /// Add `member` to the set under `key` (created on first use), atomically: two
    /// replicas adding at once both land.
    async fn add_member(&self, key: &str, member: &str) -> Result<(), LeaseError>;

    /// The members of the set under `key` (empty if there is none).
    async fn members(&self, key: &str) -> Result<Vec<String>, LeaseError>;

    /// The lease of `fleet`, as stored.
    async fn current(&self, fleet: &str) -> Result<Option<Lease>, LeaseError>;

    /// Announce this replica as alive until `now + ttl`.
    async fn heartbeat(&self, now: DateTime<Utc>) -> Result<(), LeaseError>;

    /// The live replicas (heartbeat not expired at `now`, sorted) and every fleet's lease,
    /// read at once so a pass needs no read per fleet.
    async fn snapshot(
        &self,
        now: DateTime<Utc>,
    ) -> Result<(Vec<String>, HashMap<String, Lease>), LeaseError>;

    /// Replicas whose heartbeat has not expired, sorted.
    async fn live_replicas(&self, now: DateTime<Utc>) -> Result<Vec<String>, LeaseError> {
        Ok(self.snapshot(now).await?.0)
    }
}

/// Table names for a prefix: `<prefix>-leases` and `<prefix>-state`.
pub fn table_names(prefix: &str) -> (String, String) {
    (format!("{prefix}-leases"), format!("{prefix}-state"))
}

/// The replica that should own `fleet` among `replicas` (rendezvous hashing).
pub fn preferred<'a>(fleet: &str, replicas: &'a [String]) -> Option<&'a str> {
    replicas
        .iter()
        .max_by_key(|r| {
            let mut h = Sha256::new();
            h.update(fleet.as_bytes());
            h.update([0]);
            h.update(r.as_bytes());
            let d = h.finalize();
            u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
        })
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fleets_spread_over_replicas_and_move_only_from_a_replica_that_left() {
        let three: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let two: Vec<String> = ["a", "b"].iter().map(|s| s.to_string()).collect();
        let fleets: Vec<String> = (0..300).map(|i| format!("fleet-{i}")).collect();
        let mut count: HashMap<&str, usize> = HashMap::new();
        for f in &fleets {
            *count
                .entry(preferred(f, &three).expect("some"))
                .or_default() += 1;
        }
        for r in ["a", "b", "c"] {
            let c = count.get(r).copied().unwrap_or(0);
            assert!((60..=140).contains(&c), "{r} got {c} of 300: {count:?}");
        }
        for f in &fleets {
            let before = preferred(f, &three).expect("some");
            let after = preferred(f, &two).expect("some");
            if before != "c" {
                assert_eq!(before, after, "{f} moved although its replica stayed");
            }
        }
        assert_eq!(preferred("x", &[]), None);
    }

    #[test]
    fn a_lease_is_usable_only_by_its_owner_before_the_margin() {
        let now = Utc::now();
        let l = Lease {
            fleet: "web".into(),
            owner: "a".into(),
            version: 3,
            expires: now + chrono::Duration::seconds(10),
        };
        assert!(l.usable("a", now, chrono::Duration::seconds(3)));
        assert!(!l.usable("b", now, chrono::Duration::seconds(3)));
        assert!(!l.usable(
            "a",
            now + chrono::Duration::seconds(8),
            chrono::Duration::seconds(3)
        ));
    }
}
