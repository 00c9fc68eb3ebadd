//! The fence every change to the cloud passes first. A leaf: the action journal asks it,
//! replicas (`crate::replica`) answer it, and neither depends on the other.

/// The pseudo-fleet whose lease lets one replica collect orphans.
pub const GC_LEASE: &str = "__gc";

/// Asked before every change to the cloud: may this daemon act on `fleet` now? With
/// replicas, the answer is a fenced write of the intent (see `crate::replica`).
#[async_trait::async_trait]
pub trait Fence: Send + Sync {
    async fn allow(&self, fleet: &str, detail: &str) -> bool;
}
