//! Leases in memory, with the conditions the DynamoDB store enforces, for in-process tests
//! of takeover, fencing and handover on an injected clock. Every handle made by
//! [`MemoryLeases::handle`] shares one set of tables, as replicas share DynamoDB.

use super::{Lease, LeaseError, LeaseStore, StateItem};
use chrono::{DateTime, Utc};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Default)]
struct Tables {
    leases: HashMap<String, Lease>,
    /// Replica → alive until.
    heartbeats: HashMap<String, DateTime<Utc>>,
    state: HashMap<String, StateItem>,
    facts: HashMap<String, String>,
    sets: HashMap<String, BTreeSet<String>>,
    /// The next this-many calls fail (tests: the store unreachable).
    failing: u32,
}

/// One replica's view of shared in-memory lease tables.
#[derive(Clone)]
pub struct MemoryLeases {
    replica: String,
    ttl: chrono::Duration,
    tables: Arc<Mutex<Tables>>,
}

impl MemoryLeases {
    /// Empty tables, seen by `replica`, with leases lasting `ttl`.
    pub fn new(replica: &str, ttl: chrono::Duration) -> Self {
        MemoryLeases {
            replica: replica.to_string(),
            ttl,
            tables: Arc::default(),
        }
    }

    /// Another replica's view of the same tables.
    pub fn handle(&self, replica: &str) -> Self {
        MemoryLeases {
            replica: replica.to_string(),
            ..self.clone()
        }
    }

    /// The next `n` calls, from any handle, fail as an unreachable store would.
    pub fn fail_next(&self, n: u32) {
        self.lock().failing = n;
    }

    fn lock(&self) -> MutexGuard<'_, Tables> {
        // A test that panicked while holding the lock has failed already.
        self.tables.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The tables, or the injected failure.
    fn tables(&self, operation: &'static str) -> Result<MutexGuard<'_, Tables>, LeaseError> {
        let mut t = self.lock();
        if t.failing > 0 {
            t.failing -= 1;
            return Err(LeaseError::Service {
                operation,
                code: Some("InternalServerError".into()),
                message: "the in-memory lease store was told to fail".into(),
                source: None,
            });
        }
        Ok(t)
    }

    fn holds(&self, t: &Tables, lease: &Lease) -> Option<Lease> {
        t.leases
            .get(&lease.fleet)
            .filter(|l| l.owner == self.replica && l.version == lease.version)
            .cloned()
    }
}

#[async_trait::async_trait]
impl LeaseStore for MemoryLeases {
    fn replica(&self) -> &str {
        &self.replica
    }

    async fn take(&self, fleet: &str, now: DateTime<Utc>) -> Result<Option<Lease>, LeaseError> {
        let mut t = self.tables("UpdateItem")?;
        let version = match t.leases.get(fleet) {
            Some(l) if l.expires >= now => return Ok(None),
            Some(l) => l.version + 1,
            None => 1,
        };
        let lease = Lease {
            fleet: fleet.to_string(),
            owner: self.replica.clone(),
            version,
            expires: now + self.ttl,
        };
        t.leases.insert(fleet.to_string(), lease.clone());
        Ok(Some(lease))
    }

    async fn renew(&self, lease: &Lease, now: DateTime<Utc>) -> Result<Option<Lease>, LeaseError> {
        let mut t = self.tables("UpdateItem")?;
        let Some(mut held) = self.holds(&t, lease).filter(|l| l.expires >= now) else {
            return Ok(None);
        };
        held.expires = now + self.ttl;
        t.leases.insert(held.fleet.clone(), held.clone());
        Ok(Some(held))
    }

    async fn release(&self, lease: &Lease) -> Result<(), LeaseError> {
        let mut t = self.tables("UpdateItem")?;
        if let Some(mut held) = self.holds(&t, lease) {
            held.expires = DateTime::<Utc>::UNIX_EPOCH;
            t.leases.insert(held.fleet.clone(), held);
        }
        Ok(())
    }

    async fn fenced_put(
        &self,
        lease: &Lease,
        key: &str,
        body: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, LeaseError> {
        let mut t = self.tables("TransactWriteItems")?;
        if self.holds(&t, lease).is_none_or(|l| l.expires <= now) {
            return Ok(false);
        }
        t.state.insert(
            key.to_string(),
            (body.to_string(), lease.version, self.replica.clone()),
        );
        Ok(true)
    }

    async fn get_state(&self, key: &str) -> Result<Option<StateItem>, LeaseError> {
        Ok(self.tables("GetItem")?.state.get(key).cloned())
    }

    async fn put_fact(&self, key: &str, body: &str) -> Result<(), LeaseError> {
        self.tables("PutItem")?
            .facts
            .insert(key.to_string(), body.to_string());
        Ok(())
    }

    async fn get_fact(&self, key: &str) -> Result<Option<String>, LeaseError> {
        Ok(self.tables("GetItem")?.facts.get(key).cloned())
    }

    async fn add_member(&self, key: &str, member: &str) -> Result<(), LeaseError> {
        self.tables("UpdateItem")?
            .sets
            .entry(key.to_string())
            .or_default()
            .insert(member.to_string());
        Ok(())
    }

    async fn members(&self, key: &str) -> Result<Vec<String>, LeaseError> {
        Ok(self
            .tables("GetItem")?
            .sets
            .get(key)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default())
    }

    async fn current(&self, fleet: &str) -> Result<Option<Lease>, LeaseError> {
        Ok(self.tables("GetItem")?.leases.get(fleet).cloned())
    }

    async fn heartbeat(&self, now: DateTime<Utc>) -> Result<(), LeaseError> {
        self.tables("PutItem")?
            .heartbeats
            .insert(self.replica.clone(), now + self.ttl);
        Ok(())
    }

    async fn snapshot(
        &self,
        now: DateTime<Utc>,
    ) -> Result<(Vec<String>, HashMap<String, Lease>), LeaseError> {
        let t = self.tables("Scan")?;
        let mut live: Vec<String> = t
            .heartbeats
            .iter()
            .filter(|(_, until)| **until > now)
            .map(|(r, _)| r.clone())
            .collect();
        live.sort();
        Ok((live, t.leases.clone()))
    }
}
